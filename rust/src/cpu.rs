//! Which instruction set the quantizers use. It follows [`crate::simd::active_path`], the
//! widest path in use (CPU detection, or `IQK_RS_SIMD`), so one variable pins every kernel of
//! the process: the quantization searches have AVX2 versions and a scalar twin, and the
//! batched grid fits (`iqk::fit`) an AVX-512 one as well. (Under `auto` the dot products and
//! the fits may run narrower, where that measured faster; see `simd::choice`, `fit::fit_path`.)

use std::sync::OnceLock;

use crate::simd::{active_path, SimdPath};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Scalar,
    Avx2,
    /// AVX-512 F/BW/VL (with AVX2 + FMA): the searches without an AVX-512 version run their
    /// AVX2 one.
    Avx512,
}

impl Path {
    /// Whether the path may run the searches' AVX2 + FMA code (every AVX-512 CPU we select
    /// has both).
    #[inline]
    pub fn has_avx2(self) -> bool {
        matches!(self, Path::Avx2 | Path::Avx512)
    }

    /// The dot-product path of the same instruction set.
    pub fn simd(self) -> SimdPath {
        match self {
            Path::Scalar => SimdPath::Scalar,
            Path::Avx2 => SimdPath::Avx2,
            Path::Avx512 => SimdPath::Avx512,
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        self.simd().is_available()
    }
}

/// The path the quantization searches use: fixed for the process, so found once (the
/// searches ask for it per block, and finding it lists the CPU's paths).
#[inline]
pub fn quantize_path() -> Path {
    static PATH: OnceLock<Path> = OnceLock::new();
    *PATH.get_or_init(|| match active_path() {
        SimdPath::Avx512 => Path::Avx512,
        SimdPath::Avx2 => Path::Avx2,
        SimdPath::Scalar | SimdPath::Neon => Path::Scalar,
    })
}
