//! Which instruction set the quantizers use. It follows [`crate::simd::active_path`], the
//! widest path in use (CPU detection, or `IQK_RS_SIMD`), so one variable pins every kernel of
//! the process: the quantization searches have AVX2 versions and a scalar twin. (Under `auto`
//! the dot products may run narrower, where that measured faster; see `simd::choice`.)

use std::sync::OnceLock;

use crate::simd::{active_path, SimdPath};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Scalar,
    Avx2,
}

/// The path the quantization searches use: fixed for the process, so found once (the
/// searches ask for it per block, and finding it lists the CPU's paths).
#[inline]
pub fn quantize_path() -> Path {
    static PATH: OnceLock<Path> = OnceLock::new();
    *PATH.get_or_init(|| match active_path() {
        // The AVX2 and AVX-512 dot paths both imply AVX2 + FMA.
        SimdPath::Avx2 | SimdPath::Avx512 => Path::Avx2,
        SimdPath::Scalar | SimdPath::Neon => Path::Scalar,
    })
}
