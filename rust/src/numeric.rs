//! Scalar numeric helpers shared by the quantizers. Every function reproduces the float
//! arithmetic of ik_llama.cpp's reference build (`-ffp-contract=off`) exactly: plain f32,
//! same association order, no fused multiply-add.

/// Round to nearest, ties to even, via the float-add bit trick ggml uses. Exact for
/// |f| <= 4194303; beyond that it wraps the same way the C code does.
#[inline(always)]
pub fn nearest_int(f: f32) -> i32 {
    let biased = f + 12_582_912.0;
    (biased.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// IEEE binary16 (bits) to f32, exact: the layout module's, written once.
pub use crate::simd::f16_to_f32;

/// f32 to IEEE binary16 bits, round to nearest even (what F16C `_cvtss_sh(x, 0)` does).
/// The sign of zero is kept: -0.0 becomes 0x8000.
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x007f_ffff;
    if exp == 0xff {
        // Inf stays Inf; NaN stays a quiet NaN.
        return sign
            | 0x7c00
            | if mant != 0 {
                0x0200 | (mant >> 13) as u16
            } else {
                0
            };
    }
    let unbiased = exp - 127;
    if unbiased > 15 {
        return sign | 0x7c00; // overflow to infinity
    }
    if unbiased >= -14 {
        // Normal half: keep 10 mantissa bits, round the dropped 13 to nearest even.
        let half_exp = (unbiased + 15) as u32;
        let mut out = (half_exp << 10) | (mant >> 13);
        let rest = mant & 0x1fff;
        if rest > 0x1000 || (rest == 0x1000 && (out & 1) == 1) {
            out += 1; // may carry into the exponent, up to infinity: that is correct rounding
        }
        return sign | out as u16;
    }
    // Subnormal half (or zero): the value in units of 2^-24, rounded to nearest even.
    if unbiased < -25 {
        return sign;
    }
    let full_mant = mant | 0x0080_0000; // implicit bit
    let shift = (-unbiased - 14 + 13) as u32; // 14..=24
    let mut out = full_mant >> shift;
    let rest = full_mant & ((1 << shift) - 1);
    let halfway = 1 << (shift - 1);
    if rest > halfway || (rest == halfway && (out & 1) == 1) {
        out += 1;
    }
    sign | out as u16
}

/// ik's running pick among least-squares fits `(Σw·q·x, Σw·q²)` tried one after another, the
/// same rule in every search: a fit with a positive denominator replaces the best when it
/// scores higher, compared as sumqx² > best·sumq2 (no division); the new scale is
/// sumqx/sumq2 and the new score scale·sumqx.
#[derive(Debug, Clone, Copy)]
pub struct FitPick {
    pub scale: f32,
    pub best: f32,
}

impl FitPick {
    /// Start from `scale`, taken whatever its denominator, with the score `scale·sumqx`.
    #[inline(always)]
    pub fn first(scale: f32, sumqx: f32) -> Self {
        FitPick {
            scale,
            best: scale * sumqx,
        }
    }

    /// Offer one fit; whether it replaced the best.
    #[inline(always)]
    pub fn offer(&mut self, sumqx: f32, sumq2: f32) -> bool {
        let better = sumq2 > 0.0 && sumqx * sumqx > self.best * sumq2;
        if better {
            self.scale = sumqx / sumq2;
            self.best = self.scale * sumqx;
        }
        better
    }
}

/// ik_llama.cpp's iqk `make_qx_quants` (not ggml's, `companion`'s `make_qx_quants_ggml`): fit one scale to `x` with integer levels in
/// `[-nmax, nmax-1]`, weighted by `weights`, trying 19 candidate inverse scales. Only the scale
/// is returned; the levels are recomputed by the callers that need them (`levels` gets them).
pub fn make_qx_quants_iqk(nmax: i32, x: &[f32], weights: &[f32], levels: &mut [i8]) -> f32 {
    debug_assert!(x.len() == weights.len() && x.len() == levels.len());
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        levels.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for (&v, &w) in x.iter().zip(weights) {
            let l = level(iscale, v) as f32;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let store = |iscale: f32, levels: &mut [i8]| {
        for (out, &v) in levels.iter_mut().zip(x) {
            *out = (level(iscale, v) + nmax) as i8;
        }
    };
    let iscale = -(nmax as f32) / max;
    store(iscale, levels);
    let (sumlx, suml2) = sums(iscale);
    let mut pick = FitPick::first(if suml2 != 0.0 { sumlx / suml2 } else { 0.0 }, sumlx);
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if pick.offer(sumlx, suml2) {
            store(iscale, levels);
        }
    }
    pick.scale
}

/// Per-row importance weights from an imatrix, sanitised per column block the way ik's
/// `QHelper::row_weights` does (PR #735): a block whose weights, values, or their product all
/// but vanish gets a tiny uniform weight instead, so the searches never divide by zero.
pub fn sanitized_row_weights(imatrix: &[f32], x: &[f32], block: usize, out: &mut [f32]) {
    const EPS: f32 = 1e-9;
    let floor = block as f32 * (EPS * EPS);
    for ((w_in, xb), w_out) in imatrix
        .chunks_exact(block)
        .zip(x.chunks_exact(block))
        .zip(out.chunks_exact_mut(block))
    {
        let (mut sumw2, mut sumx2, mut sumwx) = (0.0f32, 0.0f32, 0.0f32);
        for (&w, &v) in w_in.iter().zip(xb) {
            sumw2 += w * w;
            sumx2 += v * v;
            sumwx += w * v.abs();
        }
        if sumw2 > floor && sumx2 > floor && sumwx > floor {
            w_out.copy_from_slice(w_in);
        } else {
            w_out.fill(EPS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(7.49), 7);
    }

    #[test]
    fn f16_round_trip_is_exact_for_every_half() {
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if f.is_nan() {
                assert!(f16_to_f32(f32_to_f16(f)).is_nan());
            } else {
                assert_eq!(f32_to_f16(f), h, "half {h:#06x}");
            }
        }
    }

    #[test]
    fn f32_to_f16_rounds_to_nearest_even() {
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        // 1 + 3*2^-11 is halfway between 1+2^-10 and 1+2^-9: ties to even (1+2^-9).
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // rounds up to infinity
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0x0000); // tie to even at the smallest subnormal
        assert_eq!(f32_to_f16(2f32.powi(-25) * 1.5), 0x0001);
        assert_eq!(f32_to_f16(2f32.powi(-24) * 1.5), 0x0002); // tie between 1 and 2 units → 2
    }
}
