//! Non-uniform value grids of the IQK types (data from ik_llama.cpp's `ggml-common.h`, MIT).
//! Each table has a base half and a shifted half; the shifted half is the base plus a constant
//! (+5, +4, +4), which the SIMD kernels rely on.

// The value tables are written once, in the dependency-free layout module the kernels (and
// the NEON harness) share: IQ2NL (shifted half = base + 5), IQ3NL (+4), IQ4K (+4; base half =
// IQ4_NL's grid).
pub use crate::simd::{IQ2NL, IQ3NL, IQ4K};

/// One half (base or shifted) of a value grid with its look-up table for nearest-value search.
pub struct Grid {
    pub values: &'static [i8],
    /// For integer k = floor(x) - values[0]: the last index i <= n-2 with values[i] <= floor(x).
    lo: &'static [u8],
    /// `thresholds[i]`: the least f32 that [`Grid::nearest`] sends past value i (to i + 1 or
    /// beyond); +inf past the last pair. The nearest index of a sane x is the number of
    /// thresholds `<= x`, which the SIMD searches count. These sit within a few ulps of the
    /// midpoints, not on them: near a midpoint close to zero the f32 differences round.
    pub thresholds: [f32; 15],
}

impl Grid {
    /// Index of the grid value nearest to `x`, ties to the higher index, with exactly the f32
    /// comparison ik's look-up versions make: `(x - v[lo]) < (v[hi] - x)`, `lo` being the last
    /// value <= x clamped to [0, n-2]. Like ik's code on x86, NaN and |x| >= 2^31 give 0.
    #[inline(always)]
    pub fn nearest(&self, x: f32) -> usize {
        if x.is_nan() || x.abs() >= 2_147_483_648.0 {
            return 0;
        }
        // Grid values are integers, so `v <= x` iff `v <= floor(x)`: one look-up by floor(x).
        // Branch-free on purpose: these comparisons are data-dependent coin flips.
        let t = x as i32;
        let floor = t - (t as f32 > x) as i32;
        let k = (floor - self.values[0] as i32).clamp(0, self.lo.len() as i32 - 1);
        let lo = self.lo[k as usize] as usize;
        let below = x - (self.values[lo] as f32) < self.values[lo + 1] as f32 - x;
        lo + (!below) as usize
    }
}

/// See [`Grid::thresholds`]. `nearest`'s test `(x - a) < (b - x)` is monotone in x, so walk
/// from the midpoint to the first f32 that fails it.
const fn build_thresholds(values: &[i8]) -> [f32; 15] {
    const fn goes_up(a: f32, b: f32, x: f32) -> bool {
        (x - a) >= (b - x) // no NaN here: the negation of `nearest`'s "below"
    }
    // Next f32 toward +inf / -inf, for the finite, nonzero midpoint neighbourhoods walked here.
    const fn step(x: f32, up: bool) -> f32 {
        let bits = x.to_bits();
        let away_from_zero = up == (x > 0.0);
        f32::from_bits(if away_from_zero { bits + 1 } else { bits - 1 })
    }
    let mut t = [f32::INFINITY; 15];
    let mut i = 0;
    while i + 1 < values.len() {
        let (a, b) = (values[i] as f32, values[i + 1] as f32);
        let mut x = 0.5 * (a + b);
        if goes_up(a, b, x) {
            while goes_up(a, b, step(x, false)) {
                x = step(x, false);
            }
        } else {
            while !goes_up(a, b, x) {
                x = step(x, true);
            }
        }
        t[i] = x;
        i += 1;
    }
    t
}

const fn build_lo<const SPAN: usize>(values: &[i8]) -> [u8; SPAN] {
    let mut lut = [0u8; SPAN];
    let mut k = 0;
    while k < SPAN {
        let x = values[0] as i32 + k as i32;
        let mut lo = 0;
        while lo + 2 < values.len() && values[lo + 1] as i32 <= x {
            lo += 1;
        }
        lut[k] = lo as u8;
        k += 1;
    }
    lut
}

const fn span(values: &[i8]) -> usize {
    (values[values.len() - 1] as i32 - values[0] as i32 + 1) as usize
}

macro_rules! grids {
    ($name:ident, $table:expr, $n:expr) => {
        pub static $name: [Grid; 2] = {
            const BASE: &[i8] = $table.split_at($n).0;
            const SHIFTED: &[i8] = $table.split_at($n).1;
            static LO_BASE: [u8; span(BASE)] = build_lo(BASE);
            static LO_SHIFTED: [u8; span(SHIFTED)] = build_lo(SHIFTED);
            [
                Grid {
                    values: BASE,
                    lo: &LO_BASE,
                    thresholds: build_thresholds(BASE),
                },
                Grid {
                    values: SHIFTED,
                    lo: &LO_SHIFTED,
                    thresholds: build_thresholds(SHIFTED),
                },
            ]
        };
    };
}

grids!(IQ2_GRIDS, IQ2NL, 4);
grids!(IQ3_GRIDS, IQ3NL, 8);
grids!(IQ4_GRIDS, IQ4K, 16);

/// Every f32 within `half_width` of the midpoint of each pair of neighbouring `values`: where
/// a nearest-value search's rounding can put its decision off the midpoint.
#[cfg(test)]
pub(crate) fn around_midpoints(values: &[i8], half_width: f32) -> Vec<f32> {
    let mut xs = Vec::new();
    for pair in values.windows(2) {
        let mid = 0.5 * (pair[0] as f32 + pair[1] as f32);
        let (lo, hi) = (mid - half_width, mid + half_width);
        assert!(
            lo * hi > 0.0,
            "the walk below assumes a window without zero"
        );
        let mut x = lo;
        while x <= hi {
            xs.push(x);
            let bits = x.to_bits();
            x = f32::from_bits(if x > 0.0 { bits + 1 } else { bits - 1 }); // the next f32 up
        }
    }
    xs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_halves_are_base_plus_constant() {
        for (grids, shift) in [(&IQ2_GRIDS, 5), (&IQ3_GRIDS, 4), (&IQ4_GRIDS, 4)] {
            let (b, s) = (grids[0].values, grids[1].values);
            assert!(b.iter().zip(s).all(|(&b, &s)| s as i32 - b as i32 == shift));
        }
    }

    #[test]
    fn nearest_index_breaks_ties_upwards_and_maps_zero_to_the_middle() {
        let b = &IQ2_GRIDS[0];
        assert_eq!(b.nearest(-22.0), 1); // halfway between -31 and -13
        assert_eq!(b.nearest(-22.01), 0);
        assert_eq!(b.nearest(0.0), 2);
        assert_eq!(b.nearest(1e9), 3);
        assert_eq!(b.nearest(-1e9), 0);
        for grid in [&IQ3_GRIDS[0], &IQ3_GRIDS[1]] {
            assert_eq!(grid.nearest(0.0), 4);
        }
        for grid in [&IQ4_GRIDS[0], &IQ4_GRIDS[1]] {
            assert_eq!(grid.nearest(0.0), 8);
        }
        assert_eq!(b.nearest(f32::NAN), 0);
        assert_eq!(b.nearest(3e9), 0); // as ik's (int) conversion on x86
    }

    /// The table look-up equals a plain nearest search (ties up, ik's f32 comparison).
    #[test]
    fn lookup_equals_linear_search_everywhere() {
        let linear = |values: &[i8], x: f32| {
            let mut lo = 0;
            while lo + 2 < values.len() && x >= values[lo + 1] as f32 {
                lo += 1;
            }
            if x - (values[lo] as f32) < values[lo + 1] as f32 - x {
                lo
            } else {
                lo + 1
            }
        };
        for grids in [&IQ2_GRIDS, &IQ3_GRIDS, &IQ4_GRIDS] {
            for grid in grids {
                let v = grid.values;
                let mut x = -300.0f32;
                while x < 300.0 {
                    for probe in [
                        x,
                        f32::from_bits(x.to_bits() + 1),
                        f32::from_bits(x.to_bits().wrapping_sub(1)),
                    ] {
                        if probe.is_finite() {
                            assert_eq!(grid.nearest(probe), linear(v, probe), "x = {probe}");
                        }
                    }
                    x += 0.125;
                }
            }
        }
    }
}
