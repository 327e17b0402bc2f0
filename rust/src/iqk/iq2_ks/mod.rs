//! IQ2_KS: 2.1875 bpw plus an fp16 scale per row. 70-byte super-blocks of 256: u16 `extra`
//! (bits 0-7 shifted-grid flags, bits 8-15 bit 4 of the scale codes), 4 bytes of low scale
//! nibbles, 64 bytes of 2-bit indices. Sub-blocks of 32, 5-bit scales (offset 16).
//!
//! ik_llama.cpp has two searches that give different bytes: the exhaustive partition search
//! (every non-AVX2 build, `--slow-iq2ks`) and the fast candidate-scale search (llama-quantize's
//! default on x86). Both are reproduced here; the fast one uses fused multiply-adds exactly
//! where ik's AVX2 code does, so its bytes do not depend on the CPU we run on.
//!
//! The fast search fits 55 candidate scales per sub-block. On AVX2 (`avx2.rs`), wherever
//! `bands.rs` proves it exact, a value's nearest grid value comes from comparisons with the
//! midpoints instead of distances, and candidates whose nearest values repeat the previous
//! candidate's are not fitted again; the scalar path fits every candidate.

use super::common::{
    low2_position, pack_iq2_block, rd_u16, signed_max, write_u16, PartitionSearch, Weighting,
};
use crate::cpu::compiled_for_avx2;
use crate::numeric::{f32_to_f16, make_qx_quants_iqk};
use crate::simd::QK as QK_K;
use crate::tables::{IQ2NL, IQ2_GRIDS};

/// Bytes of one block (the layout module's).
pub const BLOCK_BYTES: usize = crate::simd::DotType::Iq2Ks.block_bytes();
/// Bytes of the row scale in front of the blocks (the layout module's).
pub const ROW_META: usize = crate::simd::DotType::Iq2Ks.row_meta();
const SUB: usize = 32;
const NSUB: usize = QK_K / SUB;
const SCALES: usize = 2;
const QS: usize = 6;
const WEIGHTING: Weighting = Weighting::Broad;

/// Which of ik's two IQ2_KS searches to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Iq2KsSearch {
    /// The AVX2 candidate-scale search, llama-quantize's default on x86.
    #[default]
    Fast,
    /// The exhaustive partition search (ik on other platforms, or `--slow-iq2ks`).
    Exhaustive,
}

/// Scratch for one row: importance weights, per-sub-block scales, weight sums and 5-bit
/// scale codes. The weights are computed once, in the first pass, for both passes.
struct RowScales {
    weights: Vec<f32>,
    scales: Vec<f32>,
    sw: Vec<f32>,
    levels: Vec<i8>,
}

impl RowScales {
    fn new(n_per_row: usize) -> Self {
        let n = n_per_row / SUB;
        RowScales {
            weights: vec![0.0; n_per_row],
            scales: vec![0.0; n],
            sw: vec![0.0; n],
            levels: vec![0; n],
        }
    }

    /// Fill the weights of super-block `ibl`.
    fn fill_weights(&mut self, x: &[f32], qw: Option<&[f32]>, ibl: usize) {
        let range = ibl * QK_K..(ibl + 1) * QK_K;
        let sigma2 = WEIGHTING.sigma2(&x[range.clone()]);
        let qw = qw.map(|w| &w[range.clone()]);
        WEIGHTING.fill(sigma2, &x[range.clone()], qw, &mut self.weights[range]);
    }
}

/// The values and weights of sub-block `k` of a row.
fn sub_block<'a>(x: &'a [f32], weights: &'a [f32], k: usize) -> (&'a [f32], &'a [f32]) {
    let range = SUB * k..SUB * (k + 1);
    (&x[range.clone()], &weights[range])
}

compiled_for_avx2! {
    pub fn quantize_row => quantize_row_body(x: &[f32], qw: Option<&[f32]>, out: &mut [u8], search: Iq2KsSearch)
}

#[inline(always)]
fn quantize_row_body(x: &[f32], qw: Option<&[f32]>, out: &mut [u8], search: Iq2KsSearch) {
    out.fill(0);
    let mut rs = RowScales::new(x.len());
    match search {
        Iq2KsSearch::Exhaustive => exhaustive(x, qw, out, &mut rs),
        Iq2KsSearch::Fast => fast(x, qw, out, &mut rs),
    }
}

/// The first pass of both searches: each sub-block's weight sum and scale (0 where `search`
/// returns None), the shifted-grid flags written to each super-block's `extra`; then the
/// row's 5-bit scale codes. Returns `make_qx_quants`' scale of the codes.
fn block_scales(
    x: &[f32],
    qw: Option<&[f32]>,
    blocks: &mut [u8],
    rs: &mut RowScales,
    mut search: impl FnMut(&[f32], &[f32]) -> Option<(f32, bool)>,
) -> f32 {
    for (ibl, y) in blocks.chunks_exact_mut(BLOCK_BYTES).enumerate() {
        rs.fill_weights(x, qw, ibl);
        let mut extra = 0u16;
        for ib in 0..NSUB {
            let k = ibl * NSUB + ib;
            let (xb, weight) = sub_block(x, &rs.weights, k);
            let mut sw = 0.0f32;
            for &w in weight {
                sw += w;
            }
            let mut scale = 0.0;
            if let Some((d, shifted)) = search(xb, weight) {
                scale = d;
                extra |= (shifted as u16) << ib;
            }
            rs.sw[k] = sw;
            rs.scales[k] = scale;
        }
        write_u16(y, 0, extra);
    }
    make_qx_quants_iqk(16, &rs.scales, &rs.sw, &mut rs.levels)
}

fn exhaustive(x: &[f32], qw: Option<&[f32]>, out: &mut [u8], rs: &mut RowScales) {
    let mut search = PartitionSearch::new(SUB, 3 * SUB / 4, SUB / 4);
    let (_, blocks) = out.split_at_mut(ROW_META);
    let d = block_scales(x, qw, blocks, rs, |xb, weight| {
        (signed_max(xb).1 >= 1e-16).then(|| search.run(xb, weight, &IQ2NL))
    });
    if d == 0.0 {
        return;
    }
    let mut sums = (0.0f32, 0.0f32);
    for (ibl, y) in blocks.chunks_exact_mut(BLOCK_BYTES).enumerate() {
        for ib in 0..NSUB {
            let k = ibl * NSUB + ib;
            let code = rs.levels[k] as i32;
            store_scale_code(y, ib, code);
            let ls = code - 16;
            let dl = d * ls as f32;
            if dl == 0.0 {
                continue;
            }
            let grid = &IQ2_GRIDS[(rd_u16(y, 0) >> ib & 1 == 1) as usize];
            let (xb, weight) = sub_block(x, &rs.weights, k);
            pack_iq2_block(
                grid,
                (dl, ls),
                xb,
                weight,
                (&mut y[QS..], SUB * ib),
                &mut sums,
            );
        }
    }
    let (sumqx, sumq2) = sums;
    let d_row = if sumq2 > 0.0 { sumqx / sumq2 } else { d };
    write_u16(out, 0, f32_to_f16(1.030 * d_row));
}

#[inline(always)]
fn store_scale_code(y: &mut [u8], ib: usize, code: i32) {
    y[SCALES + ib / 2] |= ((code & 0xf) as u8) << (4 * (ib % 2));
    let extra = rd_u16(y, 0) | (((code >> 4) as u16) << (8 + ib));
    write_u16(y, 0, extra);
}

#[inline(always)]
fn store_index(y: &mut [u8], i: usize, idx: usize) {
    let (byte, shift) = low2_position(i);
    y[QS + byte] |= (idx as u8) << shift;
}

/// Horizontal sum of 8 lanes in the order of ik's `hsum_float_8`.
#[inline(always)]
fn hsum8(a: &[f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// Index of the grid value whose product with `d` is nearest to `x` (squared distance, ties to
/// the lower index), for `+x` and for `-x`: ik's vectorised compare-and-select.
#[inline(always)]
fn nearest_scaled(values: &[i8], d: f32, x: f32) -> (usize, usize) {
    let (mut ip, mut im) = (0usize, 0usize);
    let val = d * values[0] as f32;
    let (mut bp, mut bm) = ((x - val) * (x - val), (x + val) * (x + val));
    for (k, &v) in values.iter().enumerate().skip(1) {
        let val = d * v as f32;
        let dp = (x - val) * (x - val);
        if dp < bp {
            bp = dp;
            ip = k;
        }
        let dm = (x + val) * (x + val);
        if dm < bm {
            bm = dm;
            im = k;
        }
    }
    (ip, im)
}

/// ik's `compute_1block_iq2ks`: fit the block at scale `d` with both signs; returns the better
/// fit's (scale, score), or None when neither has a positive denominator.
/// ik's `compute_1block_iq2ks` sums: `[Σwq·x, Σwq·q]` for the `+` and the `-` sign fits at
/// scale `d`, in 8 fused lanes (lane l takes elements l, l+8, ...) reduced as `hsum_float_8`.
fn candidate_sums_scalar(d: f32, x: &[f32], w: &[f32], values: &[i8]) -> [f32; 4] {
    let (mut sqx_p, mut sq2_p, mut sqx_m, mut sq2_m) =
        ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    for (j, (&v, &wj)) in x.iter().zip(w).enumerate() {
        let (ip, im) = nearest_scaled(values, d, v);
        let lane = j % 8;
        let q = values[ip] as f32;
        let wq = wj * q;
        sqx_p[lane] = wq.mul_add(v, sqx_p[lane]);
        sq2_p[lane] = wq.mul_add(q, sq2_p[lane]);
        let q = values[im] as f32;
        let wq = wj * q;
        sqx_m[lane] = wq.mul_add(v, sqx_m[lane]);
        sq2_m[lane] = wq.mul_add(q, sq2_m[lane]);
    }
    [hsum8(&sqx_p), hsum8(&sq2_p), hsum8(&sqx_m), hsum8(&sq2_m)]
}

/// The better of the positive- and negative-scale fits, as ik's `compute_1block_iq2ks` picks.
fn best_of_signs(sqx_p: f32, sq2_p: f32, sqx_m: f32, sq2_m: f32) -> Option<(f32, f32)> {
    let mut result = None;
    if sq2_p > 0.0 {
        let d = sqx_p / sq2_p;
        result = Some((d, sqx_p * d));
    }
    if sq2_m > 0.0 && result.is_none_or(|(_, score)| sqx_m * sqx_m > score * sq2_m) {
        let d = sqx_m / sq2_m;
        result = Some((d, sqx_m * d));
    }
    result
}

/// ik's `compute_1block_iq2ks_rmse`: weighted squared error of the block at scale `dl`, with the
/// chosen indices written to `idx`.
fn block_error(dl: f32, x: &[f32], w: &[f32], values: &[i8], idx: &mut [u8; SUB]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::quantize_path().has_avx2() {
        // SAFETY: the Avx2 path is only chosen on CPUs with AVX2 and FMA.
        return unsafe { avx2::block_error(dl, x, w, values, idx) };
    }
    block_error_scalar(dl, x, w, values, idx)
}

fn block_error_scalar(dl: f32, x: &[f32], w: &[f32], values: &[i8], idx: &mut [u8; SUB]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (j, (&v, &wj)) in x.iter().zip(w).enumerate() {
        let k = nearest_scaled(values, dl, v).0;
        idx[j] = k as u8;
        let diff = (-dl).mul_add(values[k] as f32, v);
        acc[j % 8] = (wj * diff).mul_add(diff, acc[j % 8]);
    }
    hsum8(&acc)
}

/// Number of candidate scales the fast search fits per block: a first guess on the base grid,
/// then 27 per grid half (base first).
const N_CANDIDATES: usize = 1 + 2 * 27;
/// Candidates padded to whole 8-lane vectors.
const N_PADDED: usize = 56;

#[inline(always)]
const fn candidate_is_shifted(c: usize) -> bool {
    c > 27
}

/// Denominators of the candidate scales `max / den[c]`, in ik's order.
const fn candidate_denominators() -> [f32; N_PADDED] {
    let mut den = [1.0f32; N_PADDED];
    den[0] = IQ2NL[7] as f32;
    let mut k = 0;
    while k < 27 {
        let half_steps = (k as i32 - 13) as f32 * 0.5;
        den[1 + k] = IQ2NL[0] as f32 + half_steps;
        den[28 + k] = IQ2NL[4] as f32 + half_steps;
        k += 1;
    }
    den
}
const DENOMINATORS: [f32; N_PADDED] = candidate_denominators();

/// The fits of one block, in slots: slot i holds candidate `candidate[i]`'s fit, in increasing
/// candidate order, structure of arrays, padded to whole vectors with zero sums. Slot 0 is
/// candidate 0. The scalar path keeps every candidate; the AVX2 path leaves out candidates
/// whose fit repeats the previous candidate's, which [`replay`] could never pick.
struct Fits {
    /// Candidate 0's scale, ik's result when no fit has a positive denominator.
    first_scale: f32,
    count: usize,
    candidate: [u8; N_PADDED],
    /// Σwq·x and Σwq·q of the `+` fit, then of the `-` fit, per slot.
    sums: [[f32; N_PADDED]; 4],
    /// Each fit's score up to rounding: the larger over the two signs of sqx²/sq2 (0 where
    /// sq2 <= 0).
    approx: [f32; N_PADDED],
    /// The largest approximate score.
    top: f32,
}

impl Fits {
    fn new() -> Self {
        Fits {
            first_scale: 0.0,
            count: 0,
            candidate: [0; N_PADDED],
            sums: [[0.0; N_PADDED]; 4],
            approx: [0.0; N_PADDED],
            top: 0.0,
        }
    }

    #[inline(always)]
    fn set(&mut self, slot: usize, sums: [f32; 4]) {
        for (column, s) in self.sums.iter_mut().zip(sums) {
            column[slot] = s;
        }
    }

    #[cfg(test)]
    fn get(&self, slot: usize) -> [f32; 4] {
        self.sums.map(|column| column[slot])
    }

    /// Fill `approx` and `top` from the sums; the AVX2 path computes the same, lane by lane.
    /// The padding slots' sums must be 0.
    fn rank(&mut self) {
        let [sqx_p, sq2_p, sqx_m, sq2_m] = &self.sums;
        let mut lane_top = [0.0f32; 8];
        for (slot, a) in self.approx.iter_mut().enumerate() {
            let (p, m) = (
                approx_score(sqx_p[slot], sq2_p[slot]),
                approx_score(sqx_m[slot], sq2_m[slot]),
            );
            *a = if p > m { p } else { m };
            let top = &mut lane_top[slot % 8];
            *top = if *a > *top { *a } else { *top };
        }
        self.top = fold_top(lane_top);
    }
}

#[inline(always)]
fn approx_score(sqx: f32, sq2: f32) -> f32 {
    if sq2 > 0.0 {
        sqx * sqx / sq2
    } else {
        0.0
    }
}

/// The largest of eight per-lane maxima, NaNs ignored.
#[inline(always)]
fn fold_top(lane_top: [f32; 8]) -> f32 {
    lane_top
        .iter()
        .fold(0.0f32, |a, &b| if b > a { b } else { a })
}

/// Per-slot lane sums of the AVX2 path (arch-neutral storage so it can live in
/// [`FitScratch`]).
type LaneSums = [[[f32; 8]; 4]; N_PADDED];

/// Scratch of the fast search, reused from block to block of a row: zeroing it per block
/// cost 7 % of the search.
struct FitScratch {
    fits: Fits,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    lane_sums: LaneSums,
}

impl FitScratch {
    fn new() -> Self {
        FitScratch {
            fits: Fits::new(),
            lane_sums: [[[0.0; 8]; 4]; N_PADDED],
        }
    }
}

/// The fast search's scale for one block: fit the candidate scales (the heavy, branch-free
/// part, batched so SIMD paths can overlap candidates), then replay ik's accept rule over the
/// fits. `max` is the block's signed largest value.
fn search_block(x: &[f32], w: &[f32], max: f32, scratch: &mut FitScratch) -> (f32, bool) {
    let fits = &mut scratch.fits;
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::quantize_path().has_avx2() {
        // SAFETY: the Avx2 path is only chosen on CPUs with AVX2 and FMA.
        unsafe { avx2::candidate_fits(x, w, max, fits, &mut scratch.lane_sums) };
        return replay(fits);
    }
    scalar_fits(x, w, max, fits);
    replay(fits)
}

/// Every candidate's fit, in its own slot.
fn scalar_fits(x: &[f32], w: &[f32], max: f32, fits: &mut Fits) {
    for c in 0..N_CANDIDATES {
        let d = max / DENOMINATORS[c];
        let values = IQ2_GRIDS[candidate_is_shifted(c) as usize].values;
        fits.candidate[c] = c as u8;
        fits.set(c, candidate_sums_scalar(d, x, w, values));
    }
    fits.first_scale = max / DENOMINATORS[0];
    fits.count = N_CANDIDATES;
    fits.rank();
}

/// ik's accept rule over the fits: keep the first candidate's fit, then any later one scoring
/// strictly higher, so the winner is the first candidate with the highest score. A candidate
/// whose approximate score is below the top one by more than 1e-5 (far more than the few ulps
/// by which the rounded score sqx·(sqx/sq2) can differ from sqx²/sq2) can never win, so only
/// the rest are replayed exactly. NaNs never satisfy the skip test, so they are replayed too.
/// Candidates left out of the fits repeat an earlier fit exactly, so they score no higher than
/// the best so far and are never picked (or are skipped with it).
fn replay(fits: &Fits) -> (f32, bool) {
    let [sqx_p, sq2_p, sqx_m, sq2_m] = &fits.sums;
    let threshold = fits.top * (1.0 - 1e-5);
    let mut d = fits.first_scale;
    let mut best = 0.0f32;
    let mut is_shifted = false;
    for slot in 0..fits.count {
        if slot > 0 && fits.approx[slot] < threshold {
            continue;
        }
        let (p, m) = ((sqx_p[slot], sq2_p[slot]), (sqx_m[slot], sq2_m[slot]));
        if let Some((this_d, score)) = best_of_signs(p.0, p.1, m.0, m.1) {
            if slot == 0 || score > best {
                best = score;
                d = this_d;
                is_shifted = candidate_is_shifted(fits.candidate[slot] as usize);
            }
        }
    }
    (d, is_shifted)
}

/// Add one block's final fit to the row's 8-lane sums (fused, lane l = elements l, l+8, ...).
fn accumulate_fit(
    ls: f32,
    values: &[i8],
    idx: &[u8; SUB],
    x: &[f32],
    w: &[f32],
    sumqx: &mut [f32; 8],
    sumq2: &mut [f32; 8],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::quantize_path().has_avx2() {
        // SAFETY: the Avx2 path is only chosen on CPUs with AVX2 and FMA.
        return unsafe { avx2::accumulate_fit(ls, values, idx, x, w, sumqx, sumq2) };
    }
    for (j, ((&v, &w), &ix)) in x.iter().zip(w).zip(idx).enumerate() {
        let vq = ls * values[ix as usize] as f32;
        let wvq = w * vq;
        sumqx[j % 8] = wvq.mul_add(v, sumqx[j % 8]);
        sumq2[j % 8] = wvq.mul_add(vq, sumq2[j % 8]);
    }
}

fn fast(x: &[f32], qw: Option<&[f32]>, out: &mut [u8], rs: &mut RowScales) {
    let mut scratch = FitScratch::new();
    let (_, blocks) = out.split_at_mut(ROW_META);
    let d = block_scales(x, qw, blocks, rs, |xb, weight| {
        let (max, amax) = signed_max(xb);
        (amax >= 1e-14).then(|| search_block(xb, weight, max, &mut scratch))
    });
    if d == 0.0 {
        return;
    }
    let (mut sumqx, mut sumq2) = ([0.0f32; 8], [0.0f32; 8]);
    let mut idx = [0u8; SUB];
    let mut idx_alt = [0u8; SUB];
    for (ibl, y) in blocks.chunks_exact_mut(BLOCK_BYTES).enumerate() {
        for ib in 0..NSUB {
            let k = ibl * NSUB + ib;
            let grid = &IQ2_GRIDS[(rd_u16(y, 0) >> ib & 1 == 1) as usize];
            let values = grid.values;
            let (xb, weight) = sub_block(x, &rs.weights, k);
            // Nudge the 5-bit code by one towards the block's own best scale if that lowers
            // the error. The upward bound of 15 (not 31) is ik's, kept for identical bytes.
            let code = rs.levels[k] as i32;
            let dl = d * (code - 16) as f32;
            let err = block_error(dl, xb, weight, values, &mut idx);
            let mut level = rs.levels[k];
            if code > 0 && dl > rs.scales[k] {
                if block_error(d * (code - 17) as f32, xb, weight, values, &mut idx_alt) < err {
                    level -= 1;
                    idx = idx_alt;
                }
            } else if code < 15
                && dl < rs.scales[k]
                && block_error(d * (code - 15) as f32, xb, weight, values, &mut idx_alt) < err
            {
                level += 1;
                idx = idx_alt;
            }
            rs.levels[k] = level;
            let code = level as i32;
            let ls = (code - 16) as f32;
            accumulate_fit(ls, values, &idx, xb, weight, &mut sumqx, &mut sumq2);
            for (j, &ix) in idx.iter().enumerate() {
                store_index(y, SUB * ib + j, ix as usize);
            }
            store_scale_code(y, ib, code);
        }
    }
    let (sumqx, sumq2) = (hsum8(&sumqx), hsum8(&sumq2));
    let d_row = if sumq2 > 0.0 { sumqx / sumq2 } else { d };
    write_u16(out, 0, f32_to_f16(d_row));
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod bands;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rng;

    /// The AVX2 candidate fits equal the scalar ones bit for bit: on blocks with values on (or
    /// a few ulps beside) the midpoint of two scaled grid values, where the rounded distances
    /// tie or nearly tie (these take the distance path), on blocks with values just outside
    /// the bands of the threshold path, and on plain random blocks.
    #[test]
    fn avx2_candidate_fits_equal_scalar() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            use bands::{clear_of_bands, MIDPOINTS, TOLERANCE};
            let mut seed = 2024u32;
            let below = |n: u32, seed: &mut u32| ((rng(seed) + 1.0) * 0.5 * n as f32) as u32;
            let mut by_threshold = [0; 3];
            let mut kept = 0;
            // Reused from trial to trial, as from block to block of a row.
            let (mut simd, mut scalar) = (Fits::new(), Fits::new());
            let mut lane_sums = [[[0.0; 8]; 4]; N_PADDED];
            for trial in 0..3000i32 {
                // Random amplitudes, so that a block often follows a larger one in the reused
                // scratch.
                let amp = 10f32.powi(below(9, &mut seed) as i32 - 4);
                let mut x: Vec<f32> = (0..SUB).map(|_| amp * rng(&mut seed)).collect();
                if trial % 5 == 0 {
                    x[below(SUB as u32, &mut seed) as usize] = 0.0;
                }
                let (max, _) = signed_max(&x);
                let kind = (trial % 3) as usize;
                for _ in 0..8 {
                    let j = below(SUB as u32, &mut seed) as usize;
                    let c = below(N_CANDIDATES as u32, &mut seed) as usize;
                    let grid = candidate_is_shifted(c) as usize;
                    let k = below(3, &mut seed) as usize;
                    let sign: f32 = if rng(&mut seed) < 0.0 { -1.0 } else { 1.0 };
                    let v = match kind {
                        0 => {
                            let values = IQ2_GRIDS[grid].values;
                            let d = max / DENOMINATORS[c];
                            let mid = d * 0.5 * (values[k] as f32 + values[k + 1] as f32);
                            let ulps = below(5, &mut seed) as i32 - 2;
                            f32::from_bits(((sign * mid).to_bits() as i32 + ulps) as u32)
                        }
                        1 => {
                            let nu = (MIDPOINTS[grid][k] / DENOMINATORS[c]).abs() as f64;
                            let out = 1.0 + (1 + below(4, &mut seed)) as f64 / 8.0;
                            let side = if rng(&mut seed) < 0.0 { -1.0 } else { 1.0 };
                            let r = nu + side * out * TOLERANCE;
                            sign * (r * max.abs() as f64) as f32
                        }
                        _ => break,
                    };
                    if v.abs() < max.abs() {
                        x[j] = v;
                    }
                }
                let clear = clear_of_bands(&x, max.abs());
                // SAFETY: AVX2 and FMA were detected above.
                assert_eq!(unsafe { avx2::clear_of_bands(&x, max.abs()) }, clear);
                by_threshold[kind] += clear as usize;
                let w: Vec<f32> = (0..SUB)
                    .map(|j| {
                        if (trial as usize + j).is_multiple_of(11) {
                            0.0
                        } else {
                            rng(&mut seed).abs()
                        }
                    })
                    .collect();
                // SAFETY: AVX2 and FMA were detected above.
                unsafe { avx2::candidate_fits(&x, &w, max, &mut simd, &mut lane_sums) };
                scalar_fits(&x, &w, max, &mut scalar);
                assert_eq!(simd.first_scale.to_bits(), scalar.first_scale.to_bits());
                // Each slot holds its candidate's fit, bit for bit; a candidate left out
                // repeats the fit of the last slot before it.
                let mut next_slot = 0;
                for c in 0..N_CANDIDATES {
                    if next_slot < simd.count && simd.candidate[next_slot] as usize == c {
                        let slot = next_slot;
                        next_slot += 1;
                        assert_eq!(simd.approx[slot].to_bits(), scalar.approx[c].to_bits());
                    }
                    let slot = next_slot - 1;
                    assert_eq!(
                        simd.get(slot).map(f32::to_bits),
                        scalar.get(c).map(f32::to_bits),
                        "trial {trial} candidate {c} (slot {slot}): {:?} vs {:?}",
                        simd.get(slot),
                        scalar.get(c)
                    );
                }
                assert_eq!(next_slot, simd.count, "trial {trial}: slots out of order");
                assert_eq!(simd.top.to_bits(), scalar.top.to_bits(), "trial {trial}");
                let (d_simd, shifted_simd) = replay(&simd);
                let (d_scalar, shifted_scalar) = replay(&scalar);
                assert_eq!(
                    (d_simd.to_bits(), shifted_simd),
                    (d_scalar.to_bits(), shifted_scalar)
                );
                kept += simd.count;
            }
            // The midpoint blocks take the distance path, the others mostly the thresholds.
            assert_eq!(by_threshold[0], 0, "{by_threshold:?}");
            // Repeats are left out: fewer slots than candidates on the threshold path.
            assert!(kept < 3000 * N_CANDIDATES - 2000 * 15, "{kept} slots");
            assert!(
                by_threshold[1] > 900 && by_threshold[2] > 900,
                "{by_threshold:?}"
            );
        }
    }
}
