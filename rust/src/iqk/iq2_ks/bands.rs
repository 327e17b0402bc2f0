//! Where a threshold comparison may stand in for the fast search's distance comparisons.
//!
//! At a positive scale D the nearest of the sorted grid values t0..t3 is the number of k with
//! `x > D·(t[k-1] + t[k])/2`, except within a few ulps of those midpoints, where ik's rounded
//! squared distances decide. Relative to the block's largest magnitude `a`, candidate c's
//! midpoints sit at fixed places, |μ|/|den_c|, whatever the block. A block with no |x|/a in a
//! narrow band around any of them can therefore be fitted by comparisons alone, for every
//! candidate but the first (whose outer midpoint, 22/22 on the base grid, is where the block's
//! largest value itself sits).
//!
//! The band half-width is 2^-20 of `a`. The comparison is decided outside ±2.7·2^-24·a of the
//! real midpoint D·μ: D, each D·t and each difference and square round by at most 2^-24
//! relative, and the largest (|μ| + (|t_lo| + |t_hi|)/2 + gap)/|den| over the grids is
//! 52/19.5. The f32 threshold fl(D·μ) is within 1.8·2^-24·a of it. 2^-20 leaves a margin of six.

use super::{candidate_is_shifted, DENOMINATORS, N_CANDIDATES};
use crate::tables::IQ2NL;

/// Midpoints of neighbouring grid values (base grid, shifted grid), exact: they are integers.
pub const MIDPOINTS: [[f32; 3]; 2] = {
    let mut m = [[0.0f32; 3]; 2];
    let mut g = 0;
    while g < 2 {
        let mut k = 0;
        while k < 3 {
            m[g][k] = (IQ2NL[4 * g + k] as f32 + IQ2NL[4 * g + k + 1] as f32) * 0.5;
            k += 1;
        }
        g += 1;
    }
    m
};

/// Half-width of the untrusted band around each threshold, in units of the block's `a`.
pub const TOLERANCE: f64 = 1.0 / (1u64 << 20) as f64;

/// Candidates fitted by comparisons: all but the first.
pub const FIRST_BY_THRESHOLD: usize = 1;
const N_THRESHOLDS: usize = 3 * (N_CANDIDATES - FIRST_BY_THRESHOLD);

// The orientation in `avx2::candidate_fits` relies on these scales having the opposite sign
// of the block's largest value.
const _: () = {
    let mut c = FIRST_BY_THRESHOLD;
    while c < N_CANDIDATES {
        assert!(DENOMINATORS[c] < 0.0);
        c += 1;
    }
};

/// The threshold candidates form two runs, one per grid: run g starts at candidate
/// `RUNS[g].0` with |den| = `RUNS[g].1`, and each next candidate's |den| is 0.5 smaller.
/// Within a run the places |μ_k|/|den_c| grow with c, so a value at |x|/a = ρ changes its
/// comparison with midpoint k between candidates c - 1 and c exactly when ρ lies between
/// their places: when 2·(|den_first| - |μ_k|/ρ) lies in (i - 1, i), i = c - first. Outside
/// the bands that is never within 4e-5 of an integer (|Δu| >= |den|²·2^-20/|μ| >= 2.1e-5 for
/// u = |μ_k|/ρ), while computing it in f32 errs by at most 1.4e-5.
pub const RUNS: [(usize, f32); 2] = [(FIRST_BY_THRESHOLD, 37.5), (28, 32.5)];
pub const RUN_LENGTH: usize = 27;
const _: () = {
    let mut g = 0;
    while g < 2 {
        let (first, den) = RUNS[g];
        let mut i = 0;
        while i < RUN_LENGTH {
            assert!(-DENOMINATORS[first + i] == den - 0.5 * i as f32);
            assert!(candidate_is_shifted(first + i) == (g == 1));
            i += 1;
        }
        g += 1;
    }
    assert!(RUNS[1].0 + RUN_LENGTH == N_CANDIDATES);
};

/// |μ_k| / |den_c| for every candidate from `FIRST_BY_THRESHOLD` on, sorted.
const RELATIVE: [f64; N_THRESHOLDS] = {
    let mut nu = [0.0f64; N_THRESHOLDS];
    let mut c = FIRST_BY_THRESHOLD;
    while c < N_CANDIDATES {
        let grid = candidate_is_shifted(c) as usize;
        let mut k = 0;
        while k < 3 {
            let mu = MIDPOINTS[grid][k] as f64;
            let den = DENOMINATORS[c] as f64;
            nu[3 * (c - FIRST_BY_THRESHOLD) + k] = mu.abs() / den.abs();
            k += 1;
        }
        c += 1;
    }
    // Insertion sort (const context).
    let mut i = 1;
    while i < N_THRESHOLDS {
        let mut j = i;
        while j > 0 && nu[j - 1] > nu[j] {
            let t = nu[j];
            nu[j] = nu[j - 1];
            nu[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    nu
};

/// |x|/a in [0, 1] is looked up in `BUCKETS` equal buckets; a bucket is marked when a band
/// reaches into it or into a neighbouring bucket (so that a bucket index computed in f32,
/// off by one at a bucket edge, still finds the mark), and only elements in marked buckets
/// are checked against the bands themselves.
pub const BUCKETS: usize = 1 << 15;
pub const MARKED: [u32; BUCKETS / 32 + 1] = {
    let mut bits = [0u32; BUCKETS / 32 + 1];
    let mut i = 0;
    while i < N_THRESHOLDS {
        let lo = ((RELATIVE[i] - TOLERANCE) * BUCKETS as f64) as usize - 1;
        let hi = ((RELATIVE[i] + TOLERANCE) * BUCKETS as f64) as usize + 1;
        let mut b = lo;
        while b <= hi && b <= BUCKETS {
            bits[b / 32] |= 1 << (b % 32);
            b += 1;
        }
        i += 1;
    }
    bits
};

/// Whether bucket `b` is marked.
#[inline(always)]
pub fn marked(b: usize) -> bool {
    MARKED[b / 32] >> (b % 32) & 1 == 1
}

/// Whether `relative` (|x|/a, in [0, 1]) lies within the band of some threshold.
#[inline]
fn in_band(relative: f64) -> bool {
    marked((relative * BUCKETS as f64) as usize) && {
        let i = RELATIVE.partition_point(|&nu| nu < relative);
        let near = |j: usize| {
            RELATIVE
                .get(j)
                .is_some_and(|&nu| (relative - nu).abs() <= TOLERANCE)
        };
        near(i) || (i > 0 && near(i - 1))
    }
}

/// Whether `v` lies within a band of a block whose largest magnitude is `a` (positive).
#[inline]
pub fn value_in_band(v: f32, a: f32) -> bool {
    in_band(v.abs() as f64 / a as f64)
}

/// Whether every element of the block lies clear of every band, so that the candidates from
/// `FIRST_BY_THRESHOLD` on may be fitted by threshold comparisons. `a` is the block's largest
/// magnitude (positive). The twin of `avx2::clear_of_bands`, which the kernel uses.
#[cfg(test)]
pub fn clear_of_bands(x: &[f32], a: f32) -> bool {
    !x.iter().any(|&v| value_in_band(v, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket marks cover every band: a point anywhere in a band is found, a point just
    /// outside every band is not.
    #[test]
    fn marks_cover_the_bands() {
        for &nu in &RELATIVE {
            for f in [-1.0, -0.999, -0.5, 0.0, 0.5, 0.999, 1.0] {
                assert!(in_band(nu + f * TOLERANCE), "nu {nu} f {f}");
            }
            for f in [-1.01, 1.01] {
                let r = nu + f * TOLERANCE;
                let near_other = RELATIVE.iter().any(|&o| (r - o).abs() <= TOLERANCE);
                assert_eq!(in_band(r), near_other, "nu {nu} f {f}");
            }
        }
        assert!(!in_band(0.0) && !in_band(1.0));
        // Each band marks its own buckets and one more on either side, and no others.
        let count: u32 = MARKED.iter().map(|b| b.count_ones()).sum();
        assert!(count as usize <= 4 * N_THRESHOLDS, "{count} buckets marked");
        for &nu in &RELATIVE {
            let b = (nu * BUCKETS as f64) as usize;
            assert!(marked(b - 1) && marked(b) && marked(b + 1), "nu {nu}");
        }
    }

    #[test]
    fn midpoints_are_between_the_values() {
        assert_eq!(MIDPOINTS, [[-22.0, -6.0, 9.0], [-17.0, -1.0, 14.0]]);
    }
}
