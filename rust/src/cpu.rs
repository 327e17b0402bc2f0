//! Which instruction set the quantizers use. It follows [`crate::simd::active_path`], the
//! widest path in use (CPU detection, or `IQK_RS_SIMD`), so one variable pins every kernel of
//! the process: the quantization searches have AVX2 versions and a scalar twin, and some an
//! AVX-512 one as well (the grid fits in `iqk::fit`, the IQ2 partition search). (Under `auto`
//! the dot products and those searches may run narrower, where that measured faster; see
//! `simd::choice` and [`faster_wide_path`].)

use std::sync::OnceLock;

use crate::simd::{active_path, SimdPath};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Scalar,
    Avx2,
    /// The dot products' AVX-512 set (F/BW/VL/VNNI, with AVX2 + FMA): the searches without an
    /// AVX-512 version run their AVX2 one.
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

    /// The search path of a dot-product path's instruction set.
    fn of_simd(path: SimdPath) -> Path {
        match path {
            SimdPath::Avx512 => Path::Avx512,
            SimdPath::Avx2 => Path::Avx2,
            SimdPath::Scalar | SimdPath::Neon => Path::Scalar,
        }
    }
}

/// The vector search paths this CPU can run (AVX2, AVX-512), narrowest first: what tests pin
/// to the scalar searches.
pub fn vector_paths() -> Vec<Path> {
    [Path::Avx2, Path::Avx512]
        .into_iter()
        .filter(|p| p.is_available())
        .collect()
}

/// The path the quantization searches use: fixed for the process, so found once (the
/// searches ask for it per block, and finding it lists the CPU's paths).
#[inline]
pub fn quantize_path() -> Path {
    static PATH: OnceLock<Path> = OnceLock::new();
    *PATH.get_or_init(|| Path::of_simd(active_path()))
}

/// For a search that has both an AVX2 and an AVX-512 version: [`quantize_path`], except that
/// on an AVX-512 CPU under `auto` both are timed once by `time` (nanoseconds of a few warm
/// calls; see `simd::decide`) and the faster is returned. The caller keeps the answer for the
/// process. The wider version need not win (Zen 4 runs most 512-bit instructions as two
/// 256-bit halves; a half-filled register gains nothing); both give the same bits, so the
/// choice never changes a result.
pub fn faster_wide_path(mut time: impl FnMut(Path) -> f64) -> Path {
    let path = quantize_path();
    if path != Path::Avx512 || crate::simd::forced().is_some() {
        return path;
    }
    let candidates = [SimdPath::Avx2, SimdPath::Avx512];
    let choice = crate::simd::decide(None, &candidates, |p| time(Path::of_simd(p)));
    Path::of_simd(choice.path)
}

/// Defines `fn $name` that runs `$body` (an `#[inline(always)]` function of the same
/// arguments) compiled for AVX2 + FMA when the quantize path has them, else as it is. The
/// operations stay the same (Rust never contracts a multiply and an add into an FMA), so the
/// bytes do too; the scalar steps of a quantizer just vectorise wider.
macro_rules! compiled_for_avx2 {
    ($(#[$meta:meta])* $vis:vis fn $name:ident => $body:ident ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if $crate::cpu::quantize_path().has_avx2() {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                // SAFETY: the quantize path has AVX2 only on CPUs with AVX2 and FMA.
                return unsafe { avx2($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use compiled_for_avx2;
