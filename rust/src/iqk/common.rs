//! Building blocks shared by the six IQK quantizers: importance weights, the two scale
//! searches (non-linear grid search and the IQ2 partition search), and bit packing.
//! Arithmetic mirrors ik_llama.cpp's reference build operation for operation (plain f32, same
//! association order), because the output bytes must be identical.

use super::fit::{fit_many, MAX_CANDIDATES};
use crate::registry::QK_K;
use crate::tables::Grid;

/// How a type turns values and the imatrix into per-element importance weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    /// IQ2_K, IQ2_KS, IQ3_K: σ² = 1.5·Σx²/256; without an imatrix w = σ²/4 + x².
    Broad,
    /// IQ3_KS, IQ4_K, IQ4_KS: σ² = Σx²·(2/256); without an imatrix w = x².
    Narrow,
}

impl Weighting {
    /// σ² of one 256-element super-block.
    pub fn sigma2(self, superblock: &[f32]) -> f32 {
        let mut sumx2 = 0.0f32;
        for &v in superblock {
            sumx2 += v * v;
        }
        match self {
            Weighting::Broad => 1.5 * sumx2 / QK_K as f32,
            Weighting::Narrow => sumx2 * (2.0 / QK_K as f32),
        }
    }

    /// Weights of the elements `x` (imatrix slice `qw`, if any, aligned with `x`).
    pub fn fill(self, sigma2: f32, x: &[f32], qw: Option<&[f32]>, out: &mut [f32]) {
        match qw {
            Some(qw) => {
                for ((o, &v), &q) in out.iter_mut().zip(x).zip(qw) {
                    *o = q * (sigma2 + v * v).sqrt();
                }
            }
            None => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = match self {
                        Weighting::Broad => 0.25 * sigma2 + v * v,
                        Weighting::Narrow => v * v,
                    };
                }
            }
        }
    }
}

/// The value with the largest magnitude (first one on ties) and that magnitude.
#[inline]
pub fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Parameters of the non-linear grid scale search shared by IQ3_K, IQ3_KS, IQ4_K, IQ4_KS.
pub struct NlSearch {
    /// The grid: base half, shifted half.
    pub grids: &'static [Grid; 2],
    /// Candidate inverse scales are `(step·itry + T[0]) / max` for itry in -ntry..=ntry.
    pub ntry: i32,
    pub step: i32,
    /// IQ3 types only take the first fit when it is valid; IQ4 types take it unconditionally.
    pub guard_first: bool,
}

impl NlSearch {
    /// Best block scale and whether the shifted half wins. `max` is the block's signed
    /// largest-magnitude value (non-zero).
    pub fn run(&self, x: &[f32], w: &[f32], max: f32) -> (f32, bool) {
        let [base, shifted] = self.grids;
        let mut d = -max / base.values[0] as f32;
        // All candidate fits are independent of the decisions below, so fit them in batches
        // first (base grid: the initial scale, then one per itry; shifted grid: one per itry),
        // then replay ik's sequential acceptance over the results in its order.
        let ntry = (2 * self.ntry + 1) as usize;
        let mut ids = [[0.0f32; MAX_CANDIDATES]; 2];
        ids[0][0] = 1.0 / d;
        for (k, itry) in (-self.ntry..=self.ntry).enumerate() {
            for (g, grid) in self.grids.iter().enumerate() {
                ids[g][k + 1 - g] = (self.step * itry + grid.values[0] as i32) as f32 / max;
            }
        }
        let mut fits = [[[0.0f32; 4]; MAX_CANDIDATES]; 2];
        fit_many(base, &ids[0][..ntry + 1], x, w, &mut fits[0]);
        fit_many(shifted, &ids[1][..ntry], x, w, &mut fits[1]);

        let [sp, qp, sm, qm] = fits[0][0];
        let mut best = 0.0f32;
        if !self.guard_first || qp > 0.0 {
            d = sp / qp;
            best = d * sp;
        }
        if qm > 0.0 && sm * sm > best * qm {
            d = sm / qm;
            best = d * sm;
        }
        let mut is_shifted = false;
        for k in 0..ntry {
            for (fit, this_shifted) in [(fits[0][k + 1], false), (fits[1][k], true)] {
                let [sp, qp, sm, qm] = fit;
                if qp > 0.0 && sp * sp > best * qp {
                    d = sp / qp;
                    best = d * sp;
                    is_shifted = this_shifted;
                }
                if qm > 0.0 && sm * sm > best * qm {
                    d = sm / qm;
                    best = d * sm;
                    is_shifted = this_shifted;
                }
            }
        }
        (d, is_shifted)
    }
}

/// Exhaustive search of the IQ2 types: sort the block, split it into four runs (one per grid
/// level) at every allowed (i1, i2, i3), and score each split against the base and shifted
/// grids in both orders. Returns the best scale and whether the shifted half won.
/// `order` and the prefix-sum buffers are scratch of length n, n+1, n+1.
pub struct PartitionSearch {
    /// i1 ranges over [0, max_i1).
    pub max_i1: usize,
    /// i3 starts at max(i2, min_i3).
    pub min_i3: usize,
}

/// Running best of the IQ2 partition search: ik's accept rule, in ik's candidate order.
#[derive(Clone, Copy)]
struct Best {
    score: f32,
    d: f32,
    shifted: bool,
}

impl Best {
    #[inline(always)]
    fn offer(&mut self, sumqx: f32, sumq2: f32, shifted: bool) {
        if sumq2 > 0.0 && sumqx * sumqx > self.score * sumq2 {
            self.d = sumqx / sumq2;
            self.score = self.d * sumqx;
            self.shifted = shifted;
        }
    }
}

/// Prefix sums over the sorted block (padded so SIMD loads past the end stay in bounds).
struct Prefix {
    n: usize,
    sumx: [f32; 48],
    sumw: [f32; 48],
}

/// The four level orders tried per split: base, shifted, base reversed, shifted reversed.
fn candidates(grid: &[i8; 8]) -> [([f32; 4], bool); 4] {
    let f = |i: usize| grid[i] as f32;
    [
        ([f(0), f(1), f(2), f(3)], false),
        ([f(4), f(5), f(6), f(7)], true),
        ([f(3), f(2), f(1), f(0)], false),
        ([f(7), f(6), f(5), f(4)], true),
    ]
}

impl PartitionSearch {
    pub fn run(&self, x: &[f32], w: &[f32], grid: &[i8; 8]) -> (f32, bool) {
        let n = x.len();
        let mut order = [0usize; 32];
        let order = &mut order[..n];
        for (i, o) in order.iter_mut().enumerate() {
            *o = i;
        }
        // Ascending by value, ties by position (-0 equals +0), as std::sort on (x, j) pairs.
        order.sort_unstable_by(|&a, &b| x[a].partial_cmp(&x[b]).unwrap().then(a.cmp(&b)));
        let mut p = Prefix {
            n,
            sumx: [0.0; 48],
            sumw: [0.0; 48],
        };
        for (k, &j) in order.iter().enumerate() {
            p.sumw[k + 1] = p.sumw[k] + w[j];
            p.sumx[k + 1] = p.sumx[k] + w[j] * x[j];
        }
        let cands = candidates(grid);
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::quantize_path() == crate::cpu::Path::Avx2 {
            // SAFETY: the Avx2 path is only chosen on CPUs with AVX2.
            return unsafe { self.search_avx2(&p, &cands) };
        }
        self.search_scalar(&p, &cands)
    }

    fn search_scalar(&self, p: &Prefix, cands: &[([f32; 4], bool); 4]) -> (f32, bool) {
        let (n, sumx, sumw) = (p.n, &p.sumx, &p.sumw);
        let mut best = Best {
            score: 0.0,
            d: 0.0,
            shifted: false,
        };
        for i1 in 0..self.max_i1 {
            for i2 in i1..n {
                for i3 in i2.max(self.min_i3)..n {
                    let gx = [
                        sumx[i1] - sumx[0],
                        sumx[i2] - sumx[i1],
                        sumx[i3] - sumx[i2],
                        sumx[n] - sumx[i3],
                    ];
                    let gw = [
                        sumw[i1] - sumw[0],
                        sumw[i2] - sumw[i1],
                        sumw[i3] - sumw[i2],
                        sumw[n] - sumw[i3],
                    ];
                    for (v, shifted) in cands {
                        let sumqx = gx[0] * v[0] + gx[1] * v[1] + gx[2] * v[2] + gx[3] * v[3];
                        let sumq2 = gw[0] * v[0] * v[0]
                            + gw[1] * v[1] * v[1]
                            + gw[2] * v[2] * v[2]
                            + gw[3] * v[3] * v[3];
                        best.offer(sumqx, sumq2, *shifted);
                    }
                }
            }
        }
        (best.d, best.shifted)
    }

    /// Eight splits per vector, the same f32 operations per lane as `search_scalar`. For each
    /// i1 the splits are the (i2, i3) pairs with i2 >= i1: a suffix of one lexicographic pair
    /// list, so vectors stay full and consecutive lanes are consecutive in ik's order. A vector
    /// none of whose 32 candidates passes the accept test against the current best changes
    /// nothing and is skipped; otherwise its candidates are replayed in order.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn search_avx2(&self, p: &Prefix, cands: &[([f32; 4], bool); 4]) -> (f32, bool) {
        use std::arch::x86_64::*;
        let (n, sumx, sumw) = (p.n, &p.sumx, &p.sumw);
        let pairs = SplitPairs::get(n, self.min_i3);
        let count = pairs.i2.len();
        // Per pair, the partial sums that do not depend on i1, as search_scalar forms them.
        let mut s2x = [0.0f32; MAX_PAIRS];
        let mut s2w = [0.0f32; MAX_PAIRS];
        let mut g2x = [0.0f32; MAX_PAIRS];
        let mut g2w = [0.0f32; MAX_PAIRS];
        let mut g3x = [0.0f32; MAX_PAIRS];
        let mut g3w = [0.0f32; MAX_PAIRS];
        for (k, (&i2, &i3)) in pairs.i2.iter().zip(&pairs.i3).enumerate() {
            let (i2, i3) = (i2 as usize, i3 as usize);
            s2x[k] = sumx[i2];
            s2w[k] = sumw[i2];
            g2x[k] = sumx[i3] - sumx[i2];
            g2w[k] = sumw[i3] - sumw[i2];
            g3x[k] = sumx[n] - sumx[i3];
            g3w[k] = sumw[n] - sumw[i3];
        }
        let mut best = Best {
            score: 0.0,
            d: 0.0,
            shifted: false,
        };
        let lane_ids = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let v = cands.map(|(v, _)| v.map(|c| _mm256_set1_ps(c)));
        let mut qx = [[0.0f32; 8]; 4];
        let mut q2 = [[0.0f32; 8]; 4];
        let load = |a: &[f32; MAX_PAIRS], k: usize| _mm256_loadu_ps(a[k..k + 8].as_ptr());
        for i1 in 0..self.max_i1 {
            let g0x = _mm256_set1_ps(sumx[i1] - sumx[0]);
            let g0w = _mm256_set1_ps(sumw[i1] - sumw[0]);
            let (x1, w1) = (_mm256_set1_ps(sumx[i1]), _mm256_set1_ps(sumw[i1]));
            let mut k = pairs.start[i1];
            while k < count {
                let valid = _mm256_cmpgt_epi32(_mm256_set1_epi32((count - k) as i32), lane_ids);
                let g1x = _mm256_sub_ps(load(&s2x, k), x1);
                let g1w = _mm256_sub_ps(load(&s2w, k), w1);
                let (g2x, g3x) = (load(&g2x, k), load(&g3x, k));
                let (g2w, g3w) = (load(&g2w, k), load(&g3w, k));
                let score = _mm256_set1_ps(best.score);
                let mut any = _mm256_setzero_si256();
                for (c, vc) in v.iter().enumerate() {
                    let sumqx = _mm256_add_ps(
                        _mm256_add_ps(
                            _mm256_add_ps(_mm256_mul_ps(g0x, vc[0]), _mm256_mul_ps(g1x, vc[1])),
                            _mm256_mul_ps(g2x, vc[2]),
                        ),
                        _mm256_mul_ps(g3x, vc[3]),
                    );
                    let term = |g: __m256, v: __m256| _mm256_mul_ps(_mm256_mul_ps(g, v), v);
                    let sumq2 = _mm256_add_ps(
                        _mm256_add_ps(
                            _mm256_add_ps(term(g0w, vc[0]), term(g1w, vc[1])),
                            term(g2w, vc[2]),
                        ),
                        term(g3w, vc[3]),
                    );
                    // A superset of the accept test (`sumq2 > 0` is left to the replay).
                    let pass = _mm256_cmp_ps::<_CMP_GT_OQ>(
                        _mm256_mul_ps(sumqx, sumqx),
                        _mm256_mul_ps(score, sumq2),
                    );
                    any = _mm256_or_si256(any, _mm256_castps_si256(pass));
                    _mm256_storeu_ps(qx[c].as_mut_ptr(), sumqx);
                    _mm256_storeu_ps(q2[c].as_mut_ptr(), sumq2);
                }
                if _mm256_testz_si256(any, valid) == 0 {
                    for l in 0..8.min(count - k) {
                        for (c, (_, shifted)) in cands.iter().enumerate() {
                            best.offer(qx[c][l], q2[c][l], *shifted);
                        }
                    }
                }
                k += 8;
            }
        }
        (best.d, best.shifted)
    }
}

/// Upper bound on (i2, i3) split pairs (n = 32: 492), plus a vector of padding.
const MAX_PAIRS: usize = 512;

/// The (i2, i3) pairs of a partition search in ik's loop order (i2 ascending, then i3 from
/// max(i2, min_i3)), and for each i1 the index of the first pair with i2 >= i1.
struct SplitPairs {
    i2: Vec<u8>,
    i3: Vec<u8>,
    start: [usize; 33],
}

impl SplitPairs {
    fn build(n: usize, min_i3: usize) -> Self {
        let (mut i2s, mut i3s, mut start) = (Vec::new(), Vec::new(), [0usize; 33]);
        for (i2, first) in start.iter_mut().enumerate().take(n) {
            *first = i2s.len();
            for i3 in i2.max(min_i3)..n {
                i2s.push(i2 as u8);
                i3s.push(i3 as u8);
            }
        }
        start[n] = i2s.len();
        assert!(i2s.len() + 8 <= MAX_PAIRS);
        SplitPairs {
            i2: i2s,
            i3: i3s,
            start,
        }
    }

    /// The two configurations in use: IQ2_K (16, 0) and IQ2_KS (32, 8).
    fn get(n: usize, min_i3: usize) -> &'static SplitPairs {
        use std::sync::OnceLock;
        static IQ2_K: OnceLock<SplitPairs> = OnceLock::new();
        static IQ2_KS: OnceLock<SplitPairs> = OnceLock::new();
        match (n, min_i3) {
            (16, 0) => IQ2_K.get_or_init(|| SplitPairs::build(16, 0)),
            (32, 8) => IQ2_KS.get_or_init(|| SplitPairs::build(32, 8)),
            _ => unreachable!("no IQ2 type splits blocks of {n} with i3 >= {min_i3}"),
        }
    }
}

/// Little-endian field access on block bytes.
#[inline(always)]
pub fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

#[inline(always)]
pub fn read_f32(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The 2-bit plane packing of IQ2_K/IQ2_KS/IQ3_K/IQ3_KS (Q2_K style): element i of a
/// super-block lives in byte `32·(i/128) + i%32`, bits `2·((i/32)%4)`.
#[inline(always)]
pub fn low2_position(i: usize) -> (usize, u32) {
    (32 * (i / 128) + i % 32, 2 * ((i / 32) % 4) as u32)
}

/// The high-bit plane of the 3-bit types: element i is bit `i/32` of byte `i%32`.
#[inline(always)]
pub fn high1_position(i: usize) -> (usize, u32) {
    (i % 32, (i / 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::IQ2NL;

    fn rng(seed: &mut u32) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 17;
        *seed ^= *seed << 5;
        (*seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }

    /// The vectorised partition search picks exactly the scalar search's scale and grid half.
    #[test]
    fn partition_search_simd_equals_scalar() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            let mut seed = 99u32;
            for trial in 0..400 {
                let (n, search) = if trial % 2 == 0 {
                    (
                        16usize,
                        PartitionSearch {
                            max_i1: 16,
                            min_i3: 0,
                        },
                    )
                } else {
                    (
                        32,
                        PartitionSearch {
                            max_i1: 24,
                            min_i3: 8,
                        },
                    )
                };
                let amp = 10f32.powi(trial % 9 - 4);
                let x: Vec<f32> = (0..n)
                    .map(|j| {
                        if (j + trial as usize).is_multiple_of(7) {
                            0.0
                        } else {
                            amp * rng(&mut seed)
                        }
                    })
                    .collect();
                let w: Vec<f32> = (0..n).map(|_| rng(&mut seed).abs() + 1e-3).collect();
                let mut p = Prefix {
                    n,
                    sumx: [0.0; 48],
                    sumw: [0.0; 48],
                };
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| x[a].partial_cmp(&x[b]).unwrap().then(a.cmp(&b)));
                for (k, &j) in order.iter().enumerate() {
                    p.sumw[k + 1] = p.sumw[k] + w[j];
                    p.sumx[k + 1] = p.sumx[k] + w[j] * x[j];
                }
                let cands = candidates(&IQ2NL);
                let scalar = search.search_scalar(&p, &cands);
                // SAFETY: AVX2 is present (checked above).
                let simd = unsafe { search.search_avx2(&p, &cands) };
                assert_eq!(
                    (scalar.0.to_bits(), scalar.1),
                    (simd.0.to_bits(), simd.1),
                    "trial {trial}"
                );
            }
        }
    }
}
