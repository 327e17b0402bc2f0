//! Helpers shared by the companion quantizers: the crate's `nearest_int` and fp16
//! conversions, x86 float→int truncation and the non-linear index lookups.

pub(super) use crate::numeric::{f16_to_f32, f32_to_f16, nearest_int};

/// C `(int)f` as compiled for x86-64 (`cvttss2si`): truncation toward zero, and
/// `INT_MIN` for NaN and out-of-range inputs (Rust's `as` saturates instead).
#[inline(always)]
pub(super) fn c_trunc_i32(f: f32) -> i32 {
    if f.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&f) {
        i32::MIN
    } else {
        f as i32
    }
}

#[inline(always)]
pub(super) fn read_f16(b: &[u8], off: usize) -> f32 {
    f16_to_f32(crate::simd::rd_u16(b, off))
}

#[inline(always)]
pub(super) fn write_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f32_to_f16(v).to_le_bytes());
}

/// Bucket tables of ik's `best_index_iq{4,5,6}nl`. Bucket `ix` stands for the integer
/// `k = ix + v[0]`; it names a value directly when no midpoint of two neighbouring values
/// lies in the open interval (k-1, k+1), otherwise it holds `n + i`, meaning "decide
/// between v[i] and v[i+1] by comparison". This rule reproduces ik's hand-written tables
/// `iq4nl_index[241]`, `iq5nl_index[248]` and `iq6nl_index[249]` entry for entry.
pub(super) const fn build_nl_index<const N: usize, const M: usize>(v: &[i8; N]) -> [u8; M] {
    let mut out = [0u8; M];
    let v0 = v[0] as i32;
    let mut ix = 0;
    while ix < M {
        let k = ix as i32 + v0;
        let mut amb: i32 = -1;
        let mut i = 0;
        while i + 1 < N {
            let s = v[i] as i32 + v[i + 1] as i32; // twice the midpoint
            if 2 * k - 2 < s && s < 2 * k + 2 {
                amb = i as i32;
            }
            i += 1;
        }
        if amb >= 0 {
            out[ix] = (N as i32 + amb) as u8;
        } else {
            // nearest value to k + 1/2 (no midpoint nearby, so no tie)
            let target = 2 * k + 1;
            let mut best = 0;
            let mut best_dist = i32::MAX;
            let mut i = 0;
            while i < N {
                let d = (target - 2 * v[i] as i32).abs();
                if d <= best_dist {
                    best_dist = d;
                    best = i;
                }
                i += 1;
            }
            out[ix] = best as u8;
        }
        ix += 1;
    }
    out
}

/// Resolve a bucket `ix` from one of the tables above against the (possibly shifted)
/// value row `vals` (length `n`), as ik's lookups do.
#[inline(always)]
pub(super) fn resolve_nl(lut: &[u8], vals: &[f32], n: usize, limit: i32, ix: i32, x: f32) -> usize {
    if ix < 0 || ix >= limit {
        return if ix < 0 { 0 } else { n - 1 };
    }
    let e = lut[ix as usize] as usize;
    if e < n {
        e
    } else if x - vals[e - n] < vals[e - n + 1] - x {
        e - n
    } else {
        e - n + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_round_trip_and_rounding() {
        for h in 0u16..=0xffff {
            let f = f16_to_f32(h);
            if f.is_nan() {
                continue;
            }
            assert_eq!(f32_to_f16(f), h, "h={h:#x}");
        }
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
        assert_eq!(f32_to_f16(1e-30), 0);
        // halfway between 1 and 1+2^-10 rounds to even
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00);
        assert_eq!(f32_to_f16(f32::from_bits(0x3f80_1001)), 0x3c01);
        // smallest subnormal halfway point
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0);
        assert_eq!(f32_to_f16(f32::from_bits(2f32.powi(-25).to_bits() + 1)), 1);
    }

    #[test]
    fn nl_index_tables_match_ik_spot_checks() {
        // leading entries of ik's iq4nl_index, iq5nl_index and iq6nl_index
        let t4 = build_nl_index::<16, 241>(&crate::companion::legacy::IQ4NL_VALUES);
        assert_eq!(
            &t4[..16],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 16, 1, 1, 1]
        );
        assert_eq!(
            &t4[228..],
            &[30, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15]
        );
        let t5 = build_nl_index::<32, 248>(&crate::companion::iq5_iq6_k::IQ5NL_BASE);
        assert_eq!(
            &t5[..20],
            &[0, 0, 0, 0, 0, 0, 32, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 33, 33, 2]
        );
        let t6 = build_nl_index::<64, 249>(&crate::companion::iq5_iq6_k::IQ6NL_VALUES);
        assert_eq!(&t6[..12], &[0, 0, 0, 64, 1, 1, 1, 1, 1, 65, 2, 2]);
        assert_eq!(&t6[240..], &[62, 62, 62, 62, 62, 126, 63, 63, 63]);
    }

    #[test]
    fn nearest_int_matches_round_ties_even() {
        for &f in &[0.5f32, 1.5, 2.5, -0.5, -1.5, 3.49, -7.51, 100.0] {
            assert_eq!(nearest_int(f), f.round_ties_even() as i32);
        }
    }
}
