//! Helpers shared by the unit tests.

/// xorshift32 in [-1, 1): reproducible inputs without a dependency.
pub(crate) fn rng(seed: &mut u32) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 17;
    *seed ^= *seed << 5;
    (*seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0
}
