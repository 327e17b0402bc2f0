//! IQ2_KS: 2.1875 bpw plus an fp16 scale per row. 70-byte super-blocks of 256: u16 `extra`
//! (bits 0-7 shifted-grid flags, bits 8-15 bit 4 of the scale codes), 4 bytes of low scale
//! nibbles, 64 bytes of 2-bit indices. Sub-blocks of 32, 5-bit scales (offset 16).
//!
//! ik_llama.cpp has two searches that give different bytes: the exhaustive partition search
//! (every non-AVX2 build, `--slow-iq2ks`) and the fast candidate-scale search (llama-quantize's
//! default on x86). Both are reproduced here; the fast one uses fused multiply-adds exactly
//! where ik's AVX2 code does, so its bytes do not depend on the CPU we run on.

use super::common::{low2_position, read_u16, signed_max, write_u16, PartitionSearch, Weighting};
use super::fit::nearest_indices;
use crate::numeric::{f16_to_f32, f32_to_f16, make_qx_quants};
use crate::registry::QK_K;
use crate::tables::{IQ2NL, IQ2_GRIDS};

pub const BLOCK_BYTES: usize = 70;
pub const ROW_META: usize = 2;
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

/// Scratch for one row: per-sub-block scales, weight sums and 5-bit scale codes.
struct RowScales {
    scales: Vec<f32>,
    sw: Vec<f32>,
    levels: Vec<i8>,
}

impl RowScales {
    fn new(n_per_row: usize) -> Self {
        let n = n_per_row / SUB;
        RowScales {
            scales: vec![0.0; n],
            sw: vec![0.0; n],
            levels: vec![0; n],
        }
    }
}

pub fn quantize_row(x: &[f32], qw: Option<&[f32]>, out: &mut [u8], search: Iq2KsSearch) {
    out.fill(0);
    let mut rs = RowScales::new(x.len());
    match search {
        Iq2KsSearch::Exhaustive => exhaustive(x, qw, out, &mut rs),
        Iq2KsSearch::Fast => fast(x, qw, out, &mut rs),
    }
}

fn block_slices<'a>(
    x: &'a [f32],
    qw: Option<&'a [f32]>,
    ibl: usize,
    ib: usize,
) -> (&'a [f32], Option<&'a [f32]>) {
    let range = ibl * QK_K + SUB * ib..ibl * QK_K + SUB * (ib + 1);
    (&x[range.clone()], qw.map(|w| &w[range]))
}

fn exhaustive(x: &[f32], qw: Option<&[f32]>, out: &mut [u8], rs: &mut RowScales) {
    let mut search = PartitionSearch::new(SUB, 3 * SUB / 4, SUB / 4);
    let mut weight = [0.0f32; SUB];
    let (_, blocks) = out.split_at_mut(ROW_META);
    for (ibl, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(blocks.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let sigma2 = WEIGHTING.sigma2(xbl);
        let mut extra = 0u16;
        for ib in 0..NSUB {
            let (xb, qwb) = block_slices(x, qw, ibl, ib);
            WEIGHTING.fill(sigma2, xb, qwb, &mut weight);
            let k = ibl * NSUB + ib;
            rs.sw[k] = 0.0;
            for &w in &weight {
                rs.sw[k] += w;
            }
            rs.scales[k] = 0.0;
            if signed_max(xb).1 < 1e-16 {
                continue;
            }
            let (d, shifted) = search.run(xb, &weight, &IQ2NL);
            rs.scales[k] = d;
            extra |= (shifted as u16) << ib;
        }
        write_u16(y, 0, extra);
    }
    let d = make_qx_quants(16, &rs.scales, &rs.sw, &mut rs.levels);
    if d == 0.0 {
        return;
    }
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (ibl, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(blocks.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let sigma2 = WEIGHTING.sigma2(xbl);
        for ib in 0..NSUB {
            let code = rs.levels[ibl * NSUB + ib] as i32;
            store_scale_code(y, ib, code);
            let ls = code - 16;
            let dl = d * ls as f32;
            if dl == 0.0 {
                continue;
            }
            let grid = &IQ2_GRIDS[(read_u16(y, 0) >> ib & 1 == 1) as usize];
            let values = grid.values;
            let (xb, qwb) = block_slices(x, qw, ibl, ib);
            WEIGHTING.fill(sigma2, xb, qwb, &mut weight);
            let idl = 1.0 / dl;
            let mut indices = [0u8; SUB];
            nearest_indices(grid, idl, xb, &mut indices);
            for (j, ((&v, &w), &idx)) in xb.iter().zip(&weight).zip(&indices).enumerate() {
                let idx = idx as usize;
                store_index(y, SUB * ib + j, idx);
                let q = (values[idx] as i32 * ls) as f32;
                sumqx += w * q * v;
                sumq2 += w * q * q;
            }
        }
    }
    let d_row = if sumq2 > 0.0 { sumqx / sumq2 } else { d };
    write_u16(out, 0, f32_to_f16(1.030 * d_row));
}

#[inline(always)]
fn store_scale_code(y: &mut [u8], ib: usize, code: i32) {
    y[SCALES + ib / 2] |= ((code & 0xf) as u8) << (4 * (ib % 2));
    let extra = read_u16(y, 0) | (((code >> 4) as u16) << (8 + ib));
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
    if crate::cpu::quantize_path() == crate::cpu::Path::Avx2 {
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
fn candidate_is_shifted(c: usize) -> bool {
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

/// The fits of all candidates of one block (structure of arrays, padded).
struct Fits {
    scale: [f32; N_PADDED],
    sums: [[f32; 4]; N_PADDED],
}

/// The fast search's scale for one block: fit every candidate scale (the heavy, branch-free
/// part, batched so SIMD paths can overlap candidates), then replay ik's accept rule over the
/// fits. `max` is the block's signed largest value.
fn search_block(x: &[f32], w: &[f32], max: f32) -> (f32, bool) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::quantize_path() == crate::cpu::Path::Avx2 {
        // SAFETY: the Avx2 path is only chosen on CPUs with AVX2 and FMA.
        return replay(unsafe { &avx2::candidate_fits(x, w, max) });
    }
    let mut fits = Fits {
        scale: [0.0; N_PADDED],
        sums: [[0.0; 4]; N_PADDED],
    };
    for c in 0..N_CANDIDATES {
        let d = max / DENOMINATORS[c];
        let values = IQ2_GRIDS[candidate_is_shifted(c) as usize].values;
        fits.scale[c] = d;
        fits.sums[c] = candidate_sums_scalar(d, x, w, values);
    }
    replay(&fits)
}

/// ik's accept rule over the fits: keep the first candidate's fit, then any later one scoring
/// strictly higher, so the winner is the first candidate with the highest score. A candidate
/// whose approximate score is below the top one by more than 1e-5 (far more than the few ulps
/// by which the rounded score sqx·(sqx/sq2) can differ from sqx²/sq2) can never win, so only
/// the rest are replayed exactly. NaNs never satisfy the skip test, so they are replayed too.
fn replay(fits: &Fits) -> (f32, bool) {
    // max over the two signs of sqx²/sq2 (0 where sq2 <= 0): each fit's score up to rounding.
    let approx = fits.sums.map(|[sqx_p, sq2_p, sqx_m, sq2_m]| {
        let p = if sq2_p > 0.0 {
            sqx_p * sqx_p / sq2_p
        } else {
            0.0
        };
        let m = if sq2_m > 0.0 {
            sqx_m * sqx_m / sq2_m
        } else {
            0.0
        };
        if p > m {
            p
        } else {
            m
        }
    });
    let top = approx[..N_CANDIDATES]
        .iter()
        .fold(0.0f32, |a, &b| if b > a { b } else { a });
    let threshold = top * (1.0 - 1e-5);
    let mut d = fits.scale[0];
    let mut best = 0.0f32;
    let mut is_shifted = false;
    for (c, (&[sqx_p, sq2_p, sqx_m, sq2_m], &approx)) in
        fits.sums.iter().zip(&approx).enumerate().take(N_CANDIDATES)
    {
        if c > 0 && approx < threshold {
            continue;
        }
        if let Some((this_d, score)) = best_of_signs(sqx_p, sq2_p, sqx_m, sq2_m) {
            if c == 0 || score > best {
                best = score;
                d = this_d;
                is_shifted = candidate_is_shifted(c);
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
    if crate::cpu::quantize_path() == crate::cpu::Path::Avx2 {
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
    let mut weight = [0.0f32; SUB];
    let (_, blocks) = out.split_at_mut(ROW_META);
    for (ibl, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(blocks.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let sigma2 = WEIGHTING.sigma2(xbl);
        let mut extra = 0u16;
        for ib in 0..NSUB {
            let (xb, qwb) = block_slices(x, qw, ibl, ib);
            WEIGHTING.fill(sigma2, xb, qwb, &mut weight);
            let k = ibl * NSUB + ib;
            let (max, amax) = signed_max(xb);
            let mut sumw = 0.0f32;
            for &w in &weight {
                sumw += w;
            }
            rs.sw[k] = sumw;
            rs.scales[k] = 0.0;
            if amax < 1e-14 {
                continue;
            }
            let (d, is_shifted) = search_block(xb, &weight, max);
            rs.scales[k] = d;
            extra |= (is_shifted as u16) << ib;
        }
        write_u16(y, 0, extra);
    }
    let d = make_qx_quants(16, &rs.scales, &rs.sw, &mut rs.levels);
    if d == 0.0 {
        return;
    }
    let (mut sumqx, mut sumq2) = ([0.0f32; 8], [0.0f32; 8]);
    let mut idx = [0u8; SUB];
    let mut idx_alt = [0u8; SUB];
    for (ibl, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(blocks.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let sigma2 = WEIGHTING.sigma2(xbl);
        for ib in 0..NSUB {
            let k = ibl * NSUB + ib;
            let grid = &IQ2_GRIDS[(read_u16(y, 0) >> ib & 1 == 1) as usize];
            let values = grid.values;
            let (xb, qwb) = block_slices(x, qw, ibl, ib);
            WEIGHTING.fill(sigma2, xb, qwb, &mut weight);
            // Nudge the 5-bit code by one towards the block's own best scale if that lowers
            // the error. The upward bound of 15 (not 31) is ik's, kept for identical bytes.
            let code = rs.levels[k] as i32;
            let dl = d * (code - 16) as f32;
            let err = block_error(dl, xb, &weight, values, &mut idx);
            if code > 0 && dl > rs.scales[k] {
                if block_error(d * (code - 17) as f32, xb, &weight, values, &mut idx_alt) < err {
                    rs.levels[k] -= 1;
                    idx = idx_alt;
                }
            } else if code < 15
                && dl < rs.scales[k]
                && block_error(d * (code - 15) as f32, xb, &weight, values, &mut idx_alt) < err
            {
                rs.levels[k] += 1;
                idx = idx_alt;
            }
            let code = rs.levels[k] as i32;
            let ls = (code - 16) as f32;
            accumulate_fit(ls, values, &idx, xb, &weight, &mut sumqx, &mut sumq2);
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

/// The fast search's two kernels in AVX2+FMA. ik's code is AVX2 with 8-lane sums, so the
/// natural vector form is also the bit-exact one: lane l accumulates elements l, l+8, l+16, l+24.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{candidate_is_shifted, hsum8, Fits, DENOMINATORS, N_CANDIDATES, N_PADDED, SUB};
    use crate::tables::IQ2_GRIDS;

    #[inline]
    unsafe fn lanes(v: __m256) -> [f32; 8] {
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), v);
        out
    }

    /// ik's `hsum_float_8` of four vectors at once: lane s of the result is
    /// `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))` of `v[s]`, the same additions in the same order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum8_x4(v: [__m256; 4]) -> [f32; 4] {
        let b = v.map(|a| _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a)));
        // Transpose so that c[k] holds element k of every b[s].
        let t0 = _mm_unpacklo_ps(b[0], b[1]);
        let t1 = _mm_unpacklo_ps(b[2], b[3]);
        let t2 = _mm_unpackhi_ps(b[0], b[1]);
        let t3 = _mm_unpackhi_ps(b[2], b[3]);
        let c0 = _mm_movelh_ps(t0, t1);
        let c1 = _mm_movehl_ps(t1, t0);
        let c2 = _mm_movelh_ps(t2, t3);
        let c3 = _mm_movehl_ps(t3, t2);
        let r = _mm_add_ps(_mm_add_ps(c0, c2), _mm_add_ps(c1, c3));
        let mut out = [0.0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), r);
        out
    }

    /// `[Σwq·x, Σwq·q]` for the `+` and the `-` sign fits at scale `d`, lane sums reduced.
    ///
    /// The nearest value is found by counting descents instead of ik's running minimum. Along
    /// the sorted grid the rounded squared distances fl(fl(y - fl(d·t_k))²) fall strictly
    /// while y - fl(d·t_k) keeps its sign and rise strictly after it flips: neighbouring
    /// values lie at least 14|d| apart while |y - d·t_k| <= 68.5|d| (|y| <= |max| <= 37.5|d|),
    /// so two same-sign distances differ by over 20 % and cannot round to one square. The
    /// first minimum, which ik's strict `<` keeps, is then the number of strict descents.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn candidate_sums(
        d: f32,
        xv: &[__m256; 4],
        wv: &[__m256; 4],
        values: &[i8],
    ) -> [f32; 4] {
        let t = [
            values[0] as f32,
            values[1] as f32,
            values[2] as f32,
            values[3] as f32,
        ];
        let scaled = t.map(|v| _mm256_set1_ps(d * v));
        // Indexed by minus the descent count, modulo 8 (`vpermps` reads three bits).
        let by_neg_count = _mm256_setr_ps(t[0], 0.0, 0.0, 0.0, 0.0, t[3], t[2], t[1]);
        let zero = _mm256_setzero_ps();
        let (mut sqx_p, mut sq2_p, mut sqx_m, mut sq2_m) = (zero, zero, zero, zero);
        for k in 0..SUB / 8 {
            let (xv, wv) = (xv[k], wv[k]);
            let sq = |v: __m256| _mm256_mul_ps(v, v);
            let dp = scaled.map(|s| sq(_mm256_sub_ps(xv, s)));
            let dm = scaled.map(|s| sq(_mm256_add_ps(xv, s)));
            let qp = _mm256_permutevar8x32_ps(by_neg_count, descents(dp));
            let qm = _mm256_permutevar8x32_ps(by_neg_count, descents(dm));
            let wq = _mm256_mul_ps(wv, qp);
            sqx_p = _mm256_fmadd_ps(wq, xv, sqx_p);
            sq2_p = _mm256_fmadd_ps(wq, qp, sq2_p);
            let wq = _mm256_mul_ps(wv, qm);
            sqx_m = _mm256_fmadd_ps(wq, xv, sqx_m);
            sq2_m = _mm256_fmadd_ps(wq, qm, sq2_m);
        }
        hsum8_x4([sqx_p, sq2_p, sqx_m, sq2_m])
    }

    /// Minus the number of k in 1..4 with `dist[k] < dist[k - 1]`, per lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn descents(dist: [__m256; 4]) -> __m256i {
        let step =
            |k: usize| _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(dist[k], dist[k - 1]));
        _mm256_add_epi32(_mm256_add_epi32(step(1), step(2)), step(3))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn candidate_fits(x: &[f32], w: &[f32], max: f32) -> Fits {
        let mut fits = Fits {
            scale: [0.0; N_PADDED],
            sums: [[0.0; 4]; N_PADDED],
        };
        let maxv = _mm256_set1_ps(max);
        for k in 0..N_PADDED / 8 {
            let den = _mm256_loadu_ps(DENOMINATORS[8 * k..].as_ptr());
            _mm256_storeu_ps(fits.scale[8 * k..].as_mut_ptr(), _mm256_div_ps(maxv, den));
        }
        let load = |s: &[f32], k: usize| _mm256_loadu_ps(s[8 * k..8 * k + 8].as_ptr());
        let xv = [load(x, 0), load(x, 1), load(x, 2), load(x, 3)];
        let wv = [load(w, 0), load(w, 1), load(w, 2), load(w, 3)];
        for c in 0..N_CANDIDATES {
            let values = IQ2_GRIDS[candidate_is_shifted(c) as usize].values;
            fits.sums[c] = candidate_sums(fits.scale[c], &xv, &wv, values);
        }
        fits
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn accumulate_fit(
        ls: f32,
        values: &[i8],
        idx: &[u8; SUB],
        x: &[f32],
        w: &[f32],
        sumqx: &mut [f32; 8],
        sumq2: &mut [f32; 8],
    ) {
        let table = _mm256_setr_ps(
            values[0] as f32,
            values[1] as f32,
            values[2] as f32,
            values[3] as f32,
            0.0,
            0.0,
            0.0,
            0.0,
        );
        let lsv = _mm256_set1_ps(ls);
        let mut acc_qx = _mm256_loadu_ps(sumqx.as_ptr());
        let mut acc_q2 = _mm256_loadu_ps(sumq2.as_ptr());
        for k in 0..SUB / 8 {
            let ix = _mm256_cvtepu8_epi32(_mm_loadl_epi64(idx[8 * k..].as_ptr() as *const __m128i));
            let vq = _mm256_mul_ps(lsv, _mm256_permutevar8x32_ps(table, ix));
            let xv = _mm256_loadu_ps(x[8 * k..8 * k + 8].as_ptr());
            let wvq = _mm256_mul_ps(_mm256_loadu_ps(w[8 * k..8 * k + 8].as_ptr()), vq);
            acc_qx = _mm256_fmadd_ps(wvq, xv, acc_qx);
            acc_q2 = _mm256_fmadd_ps(wvq, vq, acc_q2);
        }
        _mm256_storeu_ps(sumqx.as_mut_ptr(), acc_qx);
        _mm256_storeu_ps(sumq2.as_mut_ptr(), acc_q2);
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block_error(
        dl: f32,
        x: &[f32],
        w: &[f32],
        values: &[i8],
        idx: &mut [u8; SUB],
    ) -> f32 {
        let t = [
            values[0] as f32,
            values[1] as f32,
            values[2] as f32,
            values[3] as f32,
        ];
        let scaled = t.map(|v| _mm256_set1_ps(dl * v));
        let q = t.map(|v| _mm256_set1_ps(v));
        let neg_dl = _mm256_set1_ps(-dl);
        let mut acc = _mm256_setzero_ps();
        for k in 0..SUB / 8 {
            let xv = _mm256_loadu_ps(x.as_ptr().add(8 * k));
            let wv = _mm256_loadu_ps(w.as_ptr().add(8 * k));
            let d0 = _mm256_sub_ps(xv, scaled[0]);
            let mut best = _mm256_mul_ps(d0, d0);
            let mut qv = q[0];
            let mut iv = _mm256_setzero_si256();
            for j in 1..4 {
                let dj = _mm256_sub_ps(xv, scaled[j]);
                let dj = _mm256_mul_ps(dj, dj);
                let closer = _mm256_cmp_ps::<_CMP_LT_OQ>(dj, best);
                best = _mm256_blendv_ps(best, dj, closer);
                qv = _mm256_blendv_ps(qv, q[j], closer);
                let ij = _mm256_set1_epi32(j as i32);
                iv = _mm256_blendv_epi8(iv, ij, _mm256_castps_si256(closer));
            }
            let mut ix = [0i32; 8];
            _mm256_storeu_si256(ix.as_mut_ptr() as *mut __m256i, iv);
            for (o, &i) in idx[8 * k..8 * k + 8].iter_mut().zip(&ix) {
                *o = i as u8;
            }
            let diff = _mm256_fmadd_ps(neg_dl, qv, xv);
            acc = _mm256_fmadd_ps(_mm256_mul_ps(wv, diff), diff, acc);
        }
        hsum8(&lanes(acc))
    }
}

#[inline(always)]
fn decode(y: &[u8], mut f: impl FnMut(usize, i32, &[i8], usize)) {
    let extra = read_u16(y, 0);
    for i in 0..QK_K {
        let ib = i / SUB;
        let low = (y[SCALES + ib / 2] >> (4 * (ib % 2))) & 0xf;
        let s = (low as u16 | ((extra >> (8 + ib)) & 1) << 4) as i32 - 16;
        let grid = &IQ2_GRIDS[(extra >> ib & 1 == 1) as usize];
        let values = grid.values;
        let (byte, shift) = low2_position(i);
        f(i, s, values, ((y[QS + byte] >> shift) & 3) as usize);
    }
}

pub fn dequantize_row(row: &[u8], out: &mut [f32]) {
    let d = f16_to_f32(read_u16(row, 0));
    for (y, o) in row[ROW_META..]
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        decode(y, |i, s, values, idx| {
            o[i] = d * s as f32 * values[idx] as f32
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rng;

    /// The AVX2 candidate fits equal the scalar ones bit for bit, including blocks whose
    /// values sit on (or a few ulps beside) the midpoint of two scaled grid values, where the
    /// rounded distances tie or nearly tie.
    #[test]
    fn avx2_candidate_fits_equal_scalar() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            let mut seed = 2024u32;
            let below = |n: u32, seed: &mut u32| ((rng(seed) + 1.0) * 0.5 * n as f32) as u32;
            for trial in 0..3000i32 {
                let amp = 10f32.powi(trial % 9 - 4);
                let mut x: Vec<f32> = (0..SUB).map(|_| amp * rng(&mut seed)).collect();
                if trial % 5 == 0 {
                    x[below(SUB as u32, &mut seed) as usize] = 0.0;
                }
                let (max, _) = signed_max(&x);
                for _ in 0..8 {
                    let j = below(SUB as u32, &mut seed) as usize;
                    let c = below(N_CANDIDATES as u32, &mut seed) as usize;
                    let values = IQ2_GRIDS[candidate_is_shifted(c) as usize].values;
                    let k = below(3, &mut seed) as usize;
                    let d = max / DENOMINATORS[c];
                    let mid = d * 0.5 * (values[k] as f32 + values[k + 1] as f32);
                    let mid = if trial % 2 == 0 { mid } else { -mid };
                    let ulps = below(5, &mut seed) as i32 - 2;
                    let v = f32::from_bits((mid.to_bits() as i32 + ulps) as u32);
                    if v.abs() < max.abs() {
                        x[j] = v;
                    }
                }
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
                let simd = unsafe { avx2::candidate_fits(&x, &w, max) };
                for c in 0..N_CANDIDATES {
                    let d = max / DENOMINATORS[c];
                    let values = IQ2_GRIDS[candidate_is_shifted(c) as usize].values;
                    let want = candidate_sums_scalar(d, &x, &w, values);
                    assert_eq!(simd.scale[c].to_bits(), d.to_bits(), "trial {trial} c {c}");
                    assert_eq!(
                        simd.sums[c].map(f32::to_bits),
                        want.map(f32::to_bits),
                        "trial {trial} candidate {c}: {:?} vs {:?}",
                        simd.sums[c],
                        want
                    );
                }
            }
        }
    }
}
