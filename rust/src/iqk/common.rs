//! Building blocks shared by the six IQK quantizers: importance weights, the two scale
//! searches (non-linear grid search and the IQ2 partition search), and bit packing.
//! Arithmetic mirrors ik_llama.cpp's reference build operation for operation (plain f32, same
//! association order), because the output bytes must be identical.

use super::fit::{fit_pair, nearest_indices, MAX_CANDIDATES};
#[cfg(target_arch = "x86_64")]
use super::lanes::F32Lanes;
use crate::cpu::Path;
use crate::numeric::{nearest_int, FitPick};
use crate::simd::QK as QK_K;
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
        let d = -max / base.values[0] as f32;
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
        let [fits_base, fits_shifted] = &mut fits;
        fit_pair(
            [base, shifted],
            [&ids[0][..ntry + 1], &ids[1][..ntry]],
            x,
            w,
            [fits_base, fits_shifted],
        );

        let [sp, qp, sm, qm] = fits[0][0];
        let mut pick = FitPick {
            scale: d,
            best: 0.0,
        };
        if !self.guard_first || qp > 0.0 {
            pick = FitPick::first(sp / qp, sp);
        }
        pick.offer(sm, qm);
        let mut is_shifted = false;
        for k in 0..ntry {
            for (fit, this_shifted) in [(fits[0][k + 1], false), (fits[1][k], true)] {
                let [sp, qp, sm, qm] = fit;
                // Both signs are offered (`|`, not `||`).
                if pick.offer(sp, qp) | pick.offer(sm, qm) {
                    is_shifted = this_shifted;
                }
            }
        }
        (pick.scale, is_shifted)
    }
}

/// Exhaustive search of the IQ2 types: sort the block, split it into four runs (one per grid
/// level) at every allowed (i1, i2, i3), and score each split against the base and shifted
/// grids in both orders. Returns the best scale and whether the shifted half won.
pub struct PartitionSearch {
    /// i1 ranges over [0, max_i1).
    max_i1: usize,
    /// i3 starts at max(i2, min_i3).
    min_i3: usize,
    pairs: &'static SplitPairs,
    /// SIMD scratch: per (i2, i3) pair, the partial sums that do not depend on i1 (see
    /// `fill_tails`), `TAIL_ROWS` rows of `ROW_STRIDE`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    tails: Vec<f32>,
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
    /// `Σ w·x²` over the block (for the bound that lets the vector searches pre-test
    /// approximately; see `approximate_pretest`).
    sumwx2: f64,
}

impl Prefix {
    /// `sumqx` and `sumq2` of the split (i1, i2, i3) with levels `v`, in ik's operation order
    /// (every SIMD path forms the same products and adds them in this order).
    #[inline(always)]
    fn split_sums(&self, i1: usize, i2: usize, i3: usize, v: &[f32; 4]) -> (f32, f32) {
        let (n, sumx, sumw) = (self.n, &self.sumx, &self.sumw);
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
        let sumqx = gx[0] * v[0] + gx[1] * v[1] + gx[2] * v[2] + gx[3] * v[3];
        let sumq2 =
            gw[0] * v[0] * v[0] + gw[1] * v[1] * v[1] + gw[2] * v[2] * v[2] + gw[3] * v[3] * v[3];
        (sumqx, sumq2)
    }
}

/// The four level orders tried per split (base, shifted, base reversed, shifted reversed, each
/// with whether it is the shifted half), and the smallest and largest level magnitude.
struct Candidates {
    orders: [([f32; 4], bool); 4],
    min_magnitude: f64,
    max_magnitude: f64,
}

fn candidates(grid: &[i8; 8]) -> Candidates {
    let f = |i: usize| grid[i] as f32;
    let magnitudes = grid.map(|v| (v as i32).unsigned_abs());
    Candidates {
        orders: [
            ([f(0), f(1), f(2), f(3)], false),
            ([f(4), f(5), f(6), f(7)], true),
            ([f(3), f(2), f(1), f(0)], false),
            ([f(7), f(6), f(5), f(4)], true),
        ],
        min_magnitude: magnitudes.into_iter().min().unwrap_or(0) as f64,
        max_magnitude: magnitudes.into_iter().max().unwrap_or(0) as f64,
    }
}

/// Rows of `PartitionSearch::tails`, one value per (i2, i3) pair: the prefix sums at i2 (x, w),
/// then, for the exact pre-test, from `PRODUCT_ROWS` on, per candidate, the products of runs 2
/// and 3 with its levels (x2·v2, x3·v3, w2·v2·v2, w3·v3·v3, from the runs' sums x2, w2, x3,
/// w3); for the approximate one instead the prefix sums at i3 (x, w) and from `TAIL_SUM_ROWS`
/// on, per candidate, approximations of x2·v2 + x3·v3 and w2·v2·v2 + w3·v3·v3.
const PRODUCT_ROWS: usize = 2;
const I3_ROWS: usize = 2;
const TAIL_SUM_ROWS: usize = I3_ROWS + 2;
const TAIL_ROWS: usize = PRODUCT_ROWS + 4 * 4;
/// Row length: room for every pair plus a vector of padding, and an odd number of cache lines
/// so that the rows, read side by side, do not all map to the same L1 sets.
const ROW_STRIDE: usize = MAX_PAIRS + 16;

/// Where pair k's value of row r lives in `PartitionSearch::tails`.
#[inline(always)]
const fn tail_index(row: usize, k: usize) -> usize {
    row * ROW_STRIDE + k
}

impl PartitionSearch {
    /// The search over blocks of `block_len` with i1 < max_i1 and i3 >= min_i3.
    pub fn new(block_len: usize, max_i1: usize, min_i3: usize) -> Self {
        PartitionSearch {
            max_i1,
            min_i3,
            pairs: SplitPairs::get(block_len, min_i3),
            tails: vec![0.0; TAIL_ROWS * ROW_STRIDE],
        }
    }

    pub fn run(&mut self, x: &[f32], w: &[f32], grid: &[i8; 8]) -> (f32, bool) {
        self.run_on(partition_path(), x, w, grid)
    }

    /// [`PartitionSearch::run`] on a given path (which must be available on this CPU).
    pub fn run_on(&mut self, path: Path, x: &[f32], w: &[f32], grid: &[i8; 8]) -> (f32, bool) {
        let p = self.prefix_on(path, x, w);
        self.search_on(path, &p, &candidates(grid), Pretest::Fastest)
    }

    /// The prefix sums of the block sorted by value ([`sorted_prefix`]), compiled for `path`
    /// (which must be available on this CPU): the same integer and f32 operations, which the
    /// wider instruction sets let the compiler vectorise (the rank counting).
    fn prefix_on(&self, path: Path, x: &[f32], w: &[f32]) -> Prefix {
        assert_eq!(
            x.len(),
            self.pairs.n,
            "partition search built for another block length"
        );
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            unsafe fn avx2(x: &[f32], w: &[f32]) -> Prefix {
                sorted_prefix(x, w)
            }
            #[target_feature(enable = "avx512f,avx512vl,avx2")]
            unsafe fn avx512(x: &[f32], w: &[f32]) -> Prefix {
                sorted_prefix(x, w)
            }
            match path {
                // SAFETY (both): the caller checked that the CPU has the path.
                Path::Avx512 => return unsafe { avx512(x, w) },
                Path::Avx2 => return unsafe { avx2(x, w) },
                Path::Scalar => {}
            }
        }
        let _ = path;
        sorted_prefix(x, w)
    }
}

/// `Σ w·x²` in f64 (in any order: it feeds a bound with a wide margin), or infinity when a
/// weight is negative (the bound then does not hold).
#[inline(always)]
fn weighted_energy(x: &[f32], w: &[f32]) -> f64 {
    // Four partial sums: independent chains, vectorised.
    let mut parts = [0f64; 4];
    let mut negative = false;
    for (xs, ws) in x.chunks(4).zip(w.chunks(4)) {
        for ((part, &v), &wt) in parts.iter_mut().zip(xs).zip(ws) {
            *part += wt as f64 * v as f64 * v as f64;
            negative |= wt < 0.0;
        }
    }
    if negative {
        f64::INFINITY
    } else {
        parts.iter().sum()
    }
}

/// The prefix sums of the block sorted by value.
#[inline(always)]
fn sorted_prefix(x: &[f32], w: &[f32]) -> Prefix {
    let n = x.len();
    // Ascending by value, ties by position (-0 equals +0), as std::sort on (x, j) pairs:
    // one u64 key per element, the value's order-preserving bits above the position.
    let mut keys = [0u64; 32];
    let keys = &mut keys[..n];
    for (j, (key, &v)) in keys.iter_mut().zip(x).enumerate() {
        *key = (ordered_bits(v + 0.0) as u64) << 32 | j as u64;
    }
    // The keys are distinct, so each one's rank is the number of smaller keys: counting
    // them is branch-free, where a comparison sort of 16 or 32 keys mispredicts often.
    let mut order = [0usize; 32];
    for (j, &key) in keys.iter().enumerate() {
        let rank = keys
            .iter()
            .map(|&other| (other < key) as usize)
            .sum::<usize>();
        order[rank] = j;
    }
    let mut p = Prefix {
        n,
        sumx: [0.0; 48],
        sumw: [0.0; 48],
        sumwx2: 0.0,
    };
    for (k, &j) in order[..n].iter().enumerate() {
        p.sumw[k + 1] = p.sumw[k] + w[j];
        p.sumx[k + 1] = p.sumx[k] + w[j] * x[j];
    }
    p.sumwx2 = weighted_energy(x, w);
    p
}

impl PartitionSearch {
    /// The search on `path` (which must be available on this CPU).
    fn search_on(
        &mut self,
        path: Path,
        p: &Prefix,
        cands: &Candidates,
        pretest: Pretest,
    ) -> (f32, bool) {
        assert!(
            path.is_available(),
            "quantize path {path:?} is not available on this CPU"
        );
        #[cfg(target_arch = "x86_64")]
        match path {
            // SAFETY (both): the CPU has the path's instruction sets (asserted above).
            Path::Avx512 => return unsafe { self.search_avx512(p, cands, pretest) },
            Path::Avx2 => return unsafe { self.search_avx2(p, cands, pretest) },
            Path::Scalar => {}
        }
        self.search_scalar(p, cands)
    }

    /// Where the search's best score may start instead of 0: the best score over a few
    /// evenly spaced splits (all among those searched), less a margin far above rounding.
    /// The search's winner scores at least as high (up to rounding), so it is still
    /// accepted, and every candidate a start at 0 would accept below this bound is replaced
    /// later anyway: the result is the same, but the vector pre-test now rejects nearly
    /// every split from the start instead of sending the early ones to the exact replay.
    fn starting_score(&self, p: &Prefix, cands: &Candidates) -> f32 {
        let n = p.n;
        let mut top = 0.0f32;
        for (a, b, c) in [(n / 4, n / 2, 3 * n / 4), (n / 8, n / 2, n - n / 8)] {
            let i1 = a.min(self.max_i1.saturating_sub(1));
            let i2 = b.max(i1);
            let i3 = c.max(i2).max(self.min_i3);
            if self.max_i1 == 0 || i3 >= n {
                continue;
            }
            for (v, _) in &cands.orders {
                let (sumqx, sumq2) = p.split_sums(i1, i2, i3, v);
                if sumq2 > 0.0 {
                    let score = sumqx / sumq2 * sumqx;
                    if score > top {
                        top = score;
                    }
                }
            }
        }
        top * (1.0 - 1e-4)
    }

    fn search_scalar(&self, p: &Prefix, cands: &Candidates) -> (f32, bool) {
        let n = p.n;
        let mut best = Best {
            score: self.starting_score(p, cands),
            d: 0.0,
            shifted: false,
        };
        for i1 in 0..self.max_i1 {
            for i2 in i1..n {
                for i3 in i2.max(self.min_i3)..n {
                    for (v, shifted) in &cands.orders {
                        let (sumqx, sumq2) = p.split_sums(i1, i2, i3, v);
                        best.offer(sumqx, sumq2, *shifted);
                    }
                }
            }
        }
        (best.d, best.shifted)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn search_avx2(
        &mut self,
        p: &Prefix,
        cands: &Candidates,
        pretest: Pretest,
    ) -> (f32, bool) {
        self.search_width::<std::arch::x86_64::__m256>(p, cands, pretest)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn search_avx512(
        &mut self,
        p: &Prefix,
        cands: &Candidates,
        pretest: Pretest,
    ) -> (f32, bool) {
        self.search_width::<std::arch::x86_64::__m512>(p, cands, pretest)
    }

    /// The vector search of width `V` with the pre-test `pretest` asks for, where allowed.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn search_width<V: F32Lanes>(
        &mut self,
        p: &Prefix,
        cands: &Candidates,
        pretest: Pretest,
    ) -> (f32, bool) {
        let start = self.starting_score(p, cands);
        if pretest == Pretest::Fastest && approximate_pretest(p, cands, start) {
            self.search_lanes::<V, true>(p, cands, start)
        } else {
            self.search_lanes::<V, false>(p, cands, start)
        }
    }

    /// `V::LANES` splits per vector, the same f32 operations per lane as `search_scalar`. For
    /// each i1 the splits are the (i2, i3) pairs with i2 >= i1: a suffix of one lexicographic
    /// pair list, so vectors stay full and consecutive lanes are consecutive in ik's order. The
    /// products of runs 2 and 3 do not depend on i1, so they are formed once per pair up
    /// front; per i1 only run 1's product and the additions remain. A vector none of whose
    /// candidates passes the accept test against the current best changes nothing and is
    /// skipped; otherwise its candidates are recomputed and replayed in order. With `APPROX`
    /// that pre-test is a cheaper one (runs 2 and 3 summed up front, fused multiply-adds)
    /// against a slightly lower score, which passes every candidate the exact test passes
    /// whenever `approximate_pretest` says so.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn search_lanes<V: F32Lanes, const APPROX: bool>(
        &mut self,
        p: &Prefix,
        cands: &Candidates,
        start_score: f32,
    ) -> (f32, bool) {
        let (sumx, sumw) = (&p.sumx, &p.sumw);
        let pairs = self.pairs;
        let count = pairs.count;
        let v = cands.orders.map(|(v, _)| v.map(|level| V::splat(level)));
        self.fill_tails::<V, APPROX>(p, cands);
        let (xn, wn) = (V::splat(sumx[p.n]), V::splat(sumw[p.n]));
        // Unchecked loads in the hot loop: k + LANES <= count + 16 <= MAX_PAIRS + 8 < ROW_STRIDE
        // (SplitPairs::build asserts count + 8 <= MAX_PAIRS) and every row index is below
        // TAIL_ROWS.
        let base = self.tails.as_ptr();
        let row = |r: usize, k: usize| V::load(base.add(tail_index(r, k)));
        let mut best = Best {
            score: start_score,
            d: 0.0,
            shifted: false,
        };
        let v1_squared = cands.orders.map(|(v, _)| V::splat(v[1] * v[1]));
        let valid_lanes = |left: usize| {
            if left >= V::LANES {
                (1u32 << V::LANES) - 1
            } else {
                (1u32 << left) - 1
            }
        };
        for i1 in 0..self.max_i1 {
            let (x1, w1) = (V::splat(sumx[i1]), V::splat(sumw[i1]));
            let (g0x, g0w) = (sumx[i1] - sumx[0], sumw[i1] - sumw[0]);
            let head_x = cands.orders.map(|(v, _)| V::splat(g0x * v[0]));
            let head_w = cands.orders.map(|(v, _)| V::splat(g0w * v[0] * v[0]));
            let mut k = pairs.start[i1];
            while k < count {
                let g1x = row(0, k).sub(x1);
                let g1w = row(1, k).sub(w1);
                // Candidate c's sums on lanes k..k+LANES, added in split_sums' order.
                let sums = |c: usize| {
                    let [p2x, p3x, p2w, p3w] = if APPROX {
                        let (x2, w2) = (row(0, k), row(1, k));
                        let (x3, w3) = (row(I3_ROWS, k), row(I3_ROWS + 1, k));
                        run_products(&v[c], x2, w2, x3, w3, xn, wn)
                    } else {
                        std::array::from_fn(|r| row(PRODUCT_ROWS + 4 * c + r, k))
                    };
                    let v1 = v[c][1];
                    let sumqx = head_x[c].add(g1x.mul(v1)).add(p2x).add(p3x);
                    let sumq2 = head_w[c].add(g1w.mul(v1).mul(v1)).add(p2w).add(p3w);
                    (sumqx, sumq2)
                };
                let passed: [u32; 4] = if APPROX {
                    // Candidate c passes where its margin sumqx² − score·sumq2 is positive;
                    // the bound of `approximate_pretest` keeps every value finite.
                    let score = V::splat(best.score * (1.0 - PRETEST_SLACK));
                    let margin = |c: usize| {
                        let r = TAIL_SUM_ROWS + 2 * c;
                        let sumqx = g1x.mul_add(v[c][1], row(r, k).add(head_x[c]));
                        let sumq2 = g1w.mul_add(v1_squared[c], row(r + 1, k).add(head_w[c]));
                        sumqx.mul_sub(sumqx, score.mul(sumq2))
                    };
                    let any = margin(0).max(margin(1)).max(margin(2).max(margin(3)));
                    if any.gt_mask(V::splat(0.0)) & valid_lanes(count - k) == 0 {
                        k += V::LANES;
                        continue;
                    }
                    std::array::from_fn(|c| margin(c).gt_mask(V::splat(0.0)))
                } else {
                    let score = V::splat(best.score);
                    std::array::from_fn(|c| {
                        let (sumqx, sumq2) = sums(c);
                        // A superset of the accept test (`sumq2 > 0` is left to the replay).
                        sumqx.mul(sumqx).gt_mask(score.mul(sumq2))
                    })
                };
                // Only candidates that pass against the score at the start of the vector can
                // be accepted: the score only grows, and a larger score is a harder test for
                // every candidate with sumq2 > 0 (the others are never accepted). Vectors
                // with a pass are rare, so their sums are recomputed rather than kept.
                let mut lanes =
                    (passed[0] | passed[1] | passed[2] | passed[3]) & valid_lanes(count - k);
                if lanes != 0 {
                    let (mut qx, mut q2) = ([[0.0f32; 16]; 4], [[0.0f32; 16]; 4]);
                    for c in 0..4 {
                        let (sumqx, sumq2) = sums(c);
                        sumqx.store(qx[c].as_mut_ptr());
                        sumq2.store(q2[c].as_mut_ptr());
                    }
                    while lanes != 0 {
                        let l = lanes.trailing_zeros() as usize;
                        lanes &= lanes - 1;
                        for (c, (_, shifted)) in cands.orders.iter().enumerate() {
                            if passed[c] >> l & 1 == 1 {
                                best.offer(qx[c][l], q2[c][l], *shifted);
                            }
                        }
                    }
                }
                k += V::LANES;
            }
        }
        (best.d, best.shifted)
    }

    /// Fill `tails` (see `TAIL_ROWS`) for the prefix sums `p` and the candidates' levels, for
    /// the exact or the approximate pre-test, `V::LANES` pairs at a time: the exact products
    /// are `run_products`'.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn fill_tails<V: F32Lanes, const APPROX: bool>(
        &mut self,
        p: &Prefix,
        cands: &Candidates,
    ) {
        let v = cands.orders.map(|(v, _)| v.map(|level| V::splat(level)));
        let (sumx, sumw) = (p.sumx.as_ptr(), p.sumw.as_ptr());
        let (xn, wn) = (V::splat(p.sumx[p.n]), V::splat(p.sumw[p.n]));
        let pairs = self.pairs;
        // In bounds: k + LANES <= count + 16 <= MAX_PAIRS + 8 < ROW_STRIDE, and the pair
        // lists are padded to count + 16 (see SplitPairs).
        let tails = self.tails.as_mut_ptr();
        for k in (0..pairs.count).step_by(V::LANES) {
            let (i2, i3) = (pairs.i2.as_ptr().add(k), pairs.i3.as_ptr().add(k));
            let (x2, w2) = (V::lookup32(sumx, i2), V::lookup32(sumw, i2));
            let (x3, w3) = (V::lookup32(sumx, i3), V::lookup32(sumw, i3));
            x2.store(tails.add(tail_index(0, k)));
            w2.store(tails.add(tail_index(1, k)));
            if APPROX {
                x3.store(tails.add(tail_index(I3_ROWS, k)));
                w3.store(tails.add(tail_index(I3_ROWS + 1, k)));
                let (g2x, g2w, g3x, g3w) = (x3.sub(x2), w3.sub(w2), xn.sub(x3), wn.sub(w3));
                for (c, vc) in v.iter().enumerate() {
                    let (v2, v3) = (vc[2], vc[3]);
                    let sumx = g2x.mul_add(v2, g3x.mul(v3));
                    let sumw = g2w.mul_add(v2.mul(v2), g3w.mul(v3.mul(v3)));
                    sumx.store(tails.add(tail_index(TAIL_SUM_ROWS + 2 * c, k)));
                    sumw.store(tails.add(tail_index(TAIL_SUM_ROWS + 2 * c + 1, k)));
                }
            } else {
                for (c, vc) in v.iter().enumerate() {
                    let products = run_products(vc, x2, w2, x3, w3, xn, wn);
                    for (r, value) in products.into_iter().enumerate() {
                        value.store(tails.add(tail_index(PRODUCT_ROWS + 4 * c + r, k)));
                    }
                }
            }
        }
    }
}

/// The products of runs 2 and 3 with a candidate's levels `v` (x2·v2, x3·v3, w2·v2·v2,
/// w3·v3·v3), from the prefix sums at i2, i3 and n, as `Prefix::split_sums` forms them.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn run_products<V: F32Lanes>(
    v: &[V; 4],
    x2: V,
    w2: V,
    x3: V,
    w3: V,
    xn: V,
    wn: V,
) -> [V; 4] {
    let (g2x, g2w, g3x, g3w) = (x3.sub(x2), w3.sub(w2), xn.sub(x3), wn.sub(w3));
    [
        g2x.mul(v[2]),
        g3x.mul(v[3]),
        g2w.mul(v[2]).mul(v[2]),
        g3w.mul(v[3]).mul(v[3]),
    ]
}

/// Which pre-test the vector partition searches use; the result is the same either way.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pretest {
    /// The approximate one where `approximate_pretest` allows it, else the exact one.
    Fastest,
    /// Always the exact one (tests pin both to the scalar search).
    #[cfg_attr(not(test), allow(dead_code))]
    Exact,
}

/// How far below the best score the approximate pre-test of the vector partition searches
/// accepts (relative).
const PRETEST_SLACK: f32 = 1.0 / 512.0;

/// Whether the approximate pre-test passes every candidate the exact one does, for the block
/// `p` with best score at least `score`. Both compute `sumqx` from the same run sums g and
/// levels v, in different orders: with 6 and 4 roundings of partial sums bounded by Σ|g·v|,
/// they differ by at most 10u·Σ|g·v| (u = 2^-24, plus second-order terms). By Cauchy–Schwarz
/// (w >= 0), Σ|g·v| <= vmax·Σ|w·x| <= vmax·sqrt(Σw·Σw·x²) <= (vmax/vmin)·sqrt(sumq2·Σw·x²), as
/// sumq2 >= vmin²·Σw; so |Δsumqx| <= γ·sqrt(sumq2·Σw·x²) with γ = 12u·vmax/vmin, while a candidate
/// that passes the exact test has |sumqx| >= sqrt(score·sumq2)·(1 − 2u). `sumq2`'s terms are
/// all non-negative (a few u relative). So the cheaper test against score·(1 − slack) misses
/// none once 2γ·sqrt(Σw·x²/score) <= slack/2: the score (2-bit fits explain most of Σw·x²)
/// is far above that bound on any real block; where not, the exact pre-test runs.
fn approximate_pretest(p: &Prefix, cands: &Candidates, score: f32) -> bool {
    let (vmin, vmax) = (cands.min_magnitude, cands.max_magnitude);
    let sumw = p.sumw[p.n] as f64;
    // sumqx² and score·sumq2 stay below vmax²·Σw·Σw·x²: finite in f32 far beyond that.
    let finite = vmax * vmax * sumw * p.sumwx2 < 1e36;
    if vmin == 0.0 || score <= 0.0 || !finite {
        return false;
    }
    // 2γ·sqrt(Σw·x²/score) <= slack/2, squared.
    let gamma = 12.0 * f64::from(f32::EPSILON) / 2.0 * vmax / vmin;
    let slack = PRETEST_SLACK as f64;
    16.0 * gamma * gamma * p.sumwx2 <= slack * slack * score as f64
}

/// The bits of a non-NaN f32 as a u32 that orders like the value (+0 above -0; callers
/// normalise -0 to +0 first).
#[inline(always)]
fn ordered_bits(v: f32) -> u32 {
    let bits = v.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    }
}

/// The path the partition search takes, chosen once per process (see
/// [`crate::cpu::faster_wide_path`]; timed on an IQ2_K block).
fn partition_path() -> Path {
    static PATH: std::sync::OnceLock<Path> = std::sync::OnceLock::new();
    *PATH.get_or_init(|| {
        let x: [f32; 16] = std::array::from_fn(|j| ((j * 7 % 16) as f32 - 7.5) * 0.01);
        let w: [f32; 16] = std::array::from_fn(|j| 0.5 + (j % 5) as f32 * 0.2);
        let mut search = PartitionSearch::new(16, 16, 0);
        crate::cpu::faster_wide_path(|path| {
            let start = std::time::Instant::now();
            for _ in 0..4 {
                let p = search.prefix_on(path, std::hint::black_box(&x), &w);
                let cands = candidates(&crate::tables::IQ2NL);
                std::hint::black_box(search.search_on(path, &p, &cands, Pretest::Fastest));
            }
            start.elapsed().as_nanos() as f64
        })
    })
}

/// Upper bound on (i2, i3) split pairs (n = 32: 492), plus a vector of padding.
const MAX_PAIRS: usize = 512;

/// The (i2, i3) pairs of a partition search in ik's loop order (i2 ascending, then i3 from
/// max(i2, min_i3)), and for each i1 the index of the first pair with i2 >= i1.
struct SplitPairs {
    n: usize,
    /// Number of pairs.
    count: usize,
    /// The pairs' i2 and i3, padded with 16 zeros (whole vectors read past the end).
    i2: Vec<i32>,
    i3: Vec<i32>,
    start: [usize; 33],
}

impl SplitPairs {
    fn build(n: usize, min_i3: usize) -> Self {
        let (mut i2s, mut i3s, mut start) = (Vec::new(), Vec::new(), [0usize; 33]);
        for (i2, first) in start.iter_mut().enumerate().take(n) {
            *first = i2s.len();
            for i3 in i2.max(min_i3)..n {
                i2s.push(i2 as i32);
                i3s.push(i3 as i32);
            }
        }
        let count = i2s.len();
        start[n] = count;
        assert!(count + 8 <= MAX_PAIRS);
        i2s.resize(count + 16, 0);
        i3s.resize(count + 16, 0);
        SplitPairs {
            n,
            count,
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

/// The shape ik's `quantize_row_iq4_ks_impl` and `quantize_row_iq5_ks_impl` share (32-weight
/// blocks, narrow weighting, an f32 row scale in front): a first pass finds each block's scale
/// (`block_scale(xb, weights, max)` gives it and its shifted-table flag), the row scale is the
/// largest over 127, and a second pass codes each block's scale as `(byte & 0xfe) - 127` and
/// lets `pack(block, ib, xb, weights, l, 1/(d·l), sumqx, sumq2)` store its indices and add its
/// weighted sums (in the type's own order); the row scale is then refit to `sumqx / sumq2`.
pub fn quantize_ks_row_f32_scale(
    x: &[f32],
    qw: Option<&[f32]>,
    out: &mut [u8],
    block_bytes: usize,
    block_scale: impl Fn(&[f32], &[f32; 32], f32) -> (f32, bool),
    mut pack: impl FnMut(&mut [u8], usize, &[f32], &[f32], i32, f32, &mut f32, &mut f32),
) {
    const SUB: usize = 32;
    const NSUB: usize = QK_K / SUB;
    const WEIGHTING: Weighting = Weighting::Narrow;
    out.fill(0);
    let (meta, blocks) = out.split_at_mut(4);
    let mut scales = vec![0.0f32; x.len() / SUB];
    let mut weight = [0.0f32; SUB];
    let mut amax_scale = 0.0f32;
    for (ibl, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(blocks.chunks_exact_mut(block_bytes))
        .enumerate()
    {
        let sigma2 = WEIGHTING.sigma2(xbl);
        for ib in 0..NSUB {
            let range = SUB * ib..SUB * (ib + 1);
            let xb = &xbl[range.clone()];
            WEIGHTING.fill(sigma2, xb, qw.map(|w| &w[ibl * QK_K..][range]), &mut weight);
            let (max, amax) = signed_max(xb);
            if amax < 1e-16 {
                continue;
            }
            let (d, shifted) = block_scale(xb, &weight, max);
            y[ib] = shifted as u8;
            scales[ibl * NSUB + ib] = d;
            if amax_scale < d.abs() {
                amax_scale = d.abs();
            }
        }
    }
    let d = amax_scale / 127.0;
    meta.copy_from_slice(&d.to_le_bytes());
    if d == 0.0 {
        return;
    }
    let id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (ibl, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(blocks.chunks_exact_mut(block_bytes))
        .enumerate()
    {
        let sigma2 = WEIGHTING.sigma2(xbl);
        for ib in 0..NSUB {
            let code = nearest_int(0.5 * (id * scales[ibl * NSUB + ib] + 127.0)).clamp(0, 127) << 1;
            y[ib] |= code as u8;
            let l = code - 127;
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let range = SUB * ib..SUB * (ib + 1);
            let xb = &xbl[range.clone()];
            WEIGHTING.fill(sigma2, xb, qw.map(|w| &w[ibl * QK_K..][range]), &mut weight);
            pack(y, ib, xb, &weight, l, idl, &mut sumqx, &mut sumq2);
        }
    }
    if sumq2 > 0.0 {
        meta.copy_from_slice(&(sumqx / sumq2).to_le_bytes());
    }
}

/// Little-endian field access on block bytes (the readers are the layout module's).
pub use crate::simd::{rd_f32, rd_u16};

#[inline(always)]
pub fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// The 2-bit plane packing of IQ2_K/IQ2_KS/IQ3_K/IQ3_KS (Q2_K style): element i of a
/// super-block lives in byte `32·(i/128) + i%32`, bits `2·((i/32)%4)`.
#[inline(always)]
pub fn low2_position(i: usize) -> (usize, u32) {
    (32 * (i / 128) + i % 32, 2 * ((i / 32) % 4) as u32)
}

/// The last step of the IQ2 types' quantizers for one sub-block whose elements start at
/// `first` in its super-block: the grid indices nearest to `x/dl`, packed into the 2-bit plane
/// `qs`, and `Σw·q·x`, `Σw·q²` with q = value·`ls` added to `sums` in element order.
pub fn pack_iq2_block(
    grid: &Grid,
    (dl, ls): (f32, i32),
    x: &[f32],
    w: &[f32],
    (qs, first): (&mut [u8], usize),
    sums: &mut (f32, f32),
) {
    let idl = 1.0 / dl;
    let mut indices = [0u8; 32];
    let indices = &mut indices[..x.len()];
    nearest_indices(grid, idl, x, indices);
    for (j, ((&v, &w), &idx)) in x.iter().zip(w).zip(indices.iter()).enumerate() {
        let (byte, shift) = low2_position(first + j);
        qs[byte] |= idx << shift;
        let q = (grid.values[idx as usize] as i32 * ls) as f32;
        sums.0 += w * q * v;
        sums.1 += w * q * q;
    }
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

    use crate::testing::rng;

    /// The u64 sort keys order elements as std::sort on (x, j) pairs: by value, -0 equal to
    /// +0, ties by position.
    #[test]
    fn sort_keys_order_like_value_then_position() {
        let mut seed = 7u32;
        for trial in 0..200usize {
            let x: Vec<f32> = (0..32usize)
                .map(|j| match (j + trial) % 5 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => (rng(&mut seed) * 4.0).round(),
                    _ => rng(&mut seed) * 10f32.powi(trial as i32 % 7 - 3),
                })
                .collect();
            let mut keys: Vec<u64> = x
                .iter()
                .enumerate()
                .map(|(j, &v)| (ordered_bits(v + 0.0) as u64) << 32 | j as u64)
                .collect();
            keys.sort_unstable();
            let by_keys: Vec<usize> = keys.iter().map(|&k| k as u32 as usize).collect();
            let mut expected: Vec<usize> = (0..x.len()).collect();
            expected.sort_by(|&a, &b| x[a].partial_cmp(&x[b]).unwrap().then(a.cmp(&b)));
            assert_eq!(by_keys, expected, "trial {trial}");
        }
    }

    /// The vectorised partition searches (AVX2, AVX-512 where the CPU has it) pick exactly
    /// the scalar search's scale and grid half.
    #[test]
    fn partition_search_simd_equals_scalar() {
        let paths = crate::cpu::vector_paths();
        let mut seed = 99u32;
        let mut approximated = 0;
        for trial in 0..400 {
            let (n, mut search) = if trial % 2 == 0 {
                (16usize, PartitionSearch::new(16, 16, 0))
            } else {
                (32, PartitionSearch::new(32, 24, 8))
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
            let p = search.prefix_on(Path::Scalar, &x, &w);
            let cands = candidates(&IQ2NL);
            approximated +=
                approximate_pretest(&p, &cands, search.starting_score(&p, &cands)) as usize;
            let scalar = search.search_scalar(&p, &cands);
            for &path in &paths {
                let q = search.prefix_on(path, &x, &w);
                assert_eq!(
                    (q.sumx, q.sumw),
                    (p.sumx, p.sumw),
                    "trial {trial} on {path:?}"
                );
                for pretest in [Pretest::Fastest, Pretest::Exact] {
                    let simd = search.search_on(path, &p, &cands, pretest);
                    assert_eq!(
                        (scalar.0.to_bits(), scalar.1),
                        (simd.0.to_bits(), simd.1),
                        "trial {trial} on {path:?}"
                    );
                }
            }
        }
        // Both pre-tests were exercised: the approximate one on most blocks.
        assert!(
            approximated > 300,
            "approximate pre-test on {approximated} of 400"
        );
    }
}
