//! The six IQK types: scalar reference quantizers, dequantizers and dot products.

pub mod common;
pub mod fit;
pub mod iq2_k;
pub mod iq2_ks;
pub mod iq3_k;
pub mod iq3_ks;
pub mod iq4_k;
pub mod iq4_ks;

/// Σ w_i·q8_i over one super-block in f64, where w_i is the weight exactly as the f32
/// dequantizer produces it (`(d·s)·v`). With fp16 scales that product is exact, so this is the
/// integer dot scaled; with IQ4_KS's f32 row scale it carries the dequantizer's rounding, so the
/// result is the exact dot of what `dequantize` returns, for every type alike.
#[inline(always)]
pub(crate) fn dot_block(
    d: f32,
    q8: &[i8],
    decode: impl FnOnce(&mut dyn FnMut(usize, i32, &[i8], usize)),
) -> f64 {
    let mut sum = 0.0f64;
    decode(&mut |i, s, values, idx| {
        sum += (d * s as f32 * values[idx] as f32) as f64 * q8[i] as f64;
    });
    sum
}
