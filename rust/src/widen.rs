//! Widening f16 and bf16 weights to f32: model files usually store them that way, and every
//! quantizer works on f32. Both conversions are exact; the F16C path gives the same bits as the
//! scalar one (NaN payloads included, see [`widen_f16_f16c`]).

use crate::cpu::{quantize_path, Path};
use crate::numeric::f16_to_f32;

/// A 16-bit float format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfFormat {
    F16,
    Bf16,
}

impl HalfFormat {
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "f16" => Some(HalfFormat::F16),
            "bf16" => Some(HalfFormat::Bf16),
            _ => None,
        }
    }
}

/// bfloat16 bits to f32: the upper half of the f32 bits.
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Widen `src` into `dst` (equal lengths) with the fastest path of this process.
pub fn widen(format: HalfFormat, src: &[u16], dst: &mut [f32]) {
    widen_on(quantize_path(), format, src, dst)
}

/// [`widen`] on a given path (which must be available on this CPU).
pub fn widen_on(path: Path, format: HalfFormat, src: &[u16], dst: &mut [f32]) {
    assert_eq!(
        src.len(),
        dst.len(),
        "widen: source and destination lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    if path.has_avx2() {
        match format {
            HalfFormat::F16 if std::is_x86_feature_detected!("f16c") => {
                // SAFETY: the Avx2 path implies AVX2; F16C is checked above.
                return unsafe { widen_f16_f16c(src, dst) };
            }
            // SAFETY: the Avx2 path is only chosen on CPUs with AVX2.
            HalfFormat::Bf16 => return unsafe { widen_bf16_avx2(src, dst) },
            HalfFormat::F16 => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = path; // only x86-64 has a vector path
    match format {
        HalfFormat::F16 => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = f16_to_f32(s);
            }
        }
        HalfFormat::Bf16 => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = bf16_to_f32(s);
            }
        }
    }
}

/// `vcvtph2ps` eight at a time. It quiets signalling NaNs, which the scalar conversion keeps
/// bit for bit, so a group holding any NaN is converted by the scalar code instead.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn widen_f16_f16c(src: &[u16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let (magnitude, inf) = (_mm_set1_epi16(0x7fff), _mm_set1_epi16(0x7c00));
    let groups = src.len() / 8;
    for g in 0..groups {
        let (s, d) = (&src[8 * g..8 * g + 8], &mut dst[8 * g..8 * g + 8]);
        let h = _mm_loadu_si128(s.as_ptr() as *const __m128i);
        let nan = _mm_cmpgt_epi16(_mm_and_si128(h, magnitude), inf);
        if _mm_testz_si128(nan, nan) == 0 {
            for (d, &s) in d.iter_mut().zip(s) {
                *d = f16_to_f32(s);
            }
        } else {
            _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    for (d, &s) in dst[8 * groups..].iter_mut().zip(&src[8 * groups..]) {
        *d = f16_to_f32(s);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn widen_bf16_avx2(src: &[u16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let groups = src.len() / 8;
    for g in 0..groups {
        let h = _mm_loadu_si128(src[8 * g..8 * g + 8].as_ptr() as *const __m128i);
        let bits = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
        _mm256_storeu_si256(dst[8 * g..8 * g + 8].as_mut_ptr() as *mut __m256i, bits);
    }
    for (d, &s) in dst[8 * groups..].iter_mut().zip(&src[8 * groups..]) {
        *d = bf16_to_f32(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every one of the 65536 bit patterns, at every offset of a group of eight (so NaN groups
    /// and tails are covered), widens to the same bits on every path.
    #[test]
    fn simd_widening_equals_scalar_for_every_bit_pattern() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        for format in [HalfFormat::F16, HalfFormat::Bf16] {
            for offset in [0usize, 3] {
                let src = &all[offset..];
                let mut scalar = vec![0f32; src.len()];
                let mut fast = vec![0f32; src.len()];
                widen_on(Path::Scalar, format, src, &mut scalar);
                #[cfg(target_arch = "x86_64")]
                if std::is_x86_feature_detected!("avx2") {
                    widen_on(Path::Avx2, format, src, &mut fast);
                } else {
                    widen(format, src, &mut fast);
                }
                #[cfg(not(target_arch = "x86_64"))]
                widen(format, src, &mut fast);
                for (i, (a, b)) in scalar.iter().zip(&fast).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{format:?} bits {:#06x}", src[i]);
                }
            }
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc000), -2.0);
    }
}
