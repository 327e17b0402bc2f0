//! The 32-element block types: Q8_0, Q5_0, Q6_0 (ik only) and IQ4_NL.
//!
//! | type   | bytes | layout                                                        |
//! |--------|-------|---------------------------------------------------------------|
//! | Q8_0   | 34    | fp16 d, int8 qs[32]                                           |
//! | Q5_0   | 22    | fp16 d, u32 qh (5th bit of element j is bit j), qs[16] nibbles |
//! | Q6_0   | 26    | fp16 d, qh[8] (2 high bits), qs[16] nibbles                    |
//! | IQ4_NL | 18    | fp16 d, qs[16] nibbles indexing `IQ4NL_VALUES`                 |
//!
//! Nibble packing (all four): byte j holds element j (low) and element j+16 (high).

use super::search::{make_qx_quants_ggml, GROUP_MAX_EPS};
use super::util::{read_f16, write_f16};
use crate::cpu::compiled_for_avx2;
use crate::iqk::common::{signed_max, Weighting};
use crate::iqk::fit::{fit_many_plus, nearest_indices};
use crate::numeric::FitPick;

const QK: usize = 32;

// ---------------------------------------------------------------- Q8_0

compiled_for_avx2! {
    /// `quantize_row_q8_0_ref` (ik ignores the imatrix for Q8_0): d = amax/127,
    /// q = roundf(x/d) (half away from zero).
    pub(crate) fn quantize_q8_0 => quantize_q8_0_body(x: &[f32], out: &mut [u8])
}

#[inline(always)]
fn quantize_q8_0_body(x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::quantize_path().has_avx2() {
        // SAFETY: the Avx2 path is only chosen on CPUs with AVX2.
        return unsafe { quantize_q8_0_avx2(x, out) };
    }
    quantize_q8_0_scalar(x, out)
}

fn quantize_q8_0_scalar(x: &[f32], out: &mut [u8]) {
    for (xb, y) in x.chunks_exact(QK).zip(out.chunks_exact_mut(34)) {
        let mut amax = 0f32;
        for &v in xb {
            let a = v.abs();
            amax = if amax > a { amax } else { a };
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(y, 0, d);
        for (q, &v) in y[2..].iter_mut().zip(xb) {
            *q = round_half_away(v * id) as u8;
        }
    }
}

/// C's `roundf` for |p| < 2^23 (here |p| <= 127): truncate, then step away from zero when
/// the (exact) remainder is at least one half. Unlike `f32::round` without SSE4.1, this
/// vectorises.
#[inline]
fn round_half_away(p: f32) -> i32 {
    let t = p as i32;
    let rest = p - t as f32;
    // Wrapping: an infinite p (a subnormal block maximum) saturates t, and the release
    // build's bytes for it are the wrapped ones.
    t.wrapping_add((rest >= 0.5) as i32)
        .wrapping_sub((rest <= -0.5) as i32)
}

/// [`quantize_q8_0_scalar`] eight values per vector: the maximum is order-free, the products
/// are the same, and [`round_half_away`]'s steps are exact in any lane. A block whose inverse
/// scale overflows (a subnormal maximum) goes to the scalar code, whose saturating casts the
/// vector conversion does not share.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_q8_0_avx2(x: &[f32], out: &mut [u8]) {
    use std::arch::x86_64::*;
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let (half, minus_half) = (_mm256_set1_ps(0.5), _mm256_set1_ps(-0.5));
    // packs interleave the 128-bit lanes: dwords 0,4,1,5,.. hold bytes 0..4, 4..8, ..
    let unshuffle = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (xb, y) in x.chunks_exact(QK).zip(out.chunks_exact_mut(34)) {
        // SAFETY: `xb` holds 32 f32.
        let v: [__m256; 4] =
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(xb[8 * k..].as_ptr()) });
        let a = v.map(|v| _mm256_and_ps(v, abs_mask));
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let m = _mm256_max_ps(m, _mm256_permute2f128_ps::<1>(m, m));
        let m = _mm256_max_ps(m, _mm256_permute_ps::<0b0100_1110>(m));
        let m = _mm256_max_ps(m, _mm256_permute_ps::<0b1011_0001>(m));
        let amax = _mm256_cvtss_f32(m);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        if !id.is_finite() {
            quantize_q8_0_scalar(xb, y);
            continue;
        }
        write_f16(y, 0, d);
        let idv = _mm256_set1_ps(id);
        let q = v.map(|v| {
            let p = _mm256_mul_ps(v, idv);
            let t = _mm256_cvttps_epi32(p);
            let rest = _mm256_sub_ps(p, _mm256_cvtepi32_ps(t));
            // the masks are -1 where true
            let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(rest, half));
            let down = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(rest, minus_half));
            _mm256_add_epi32(_mm256_sub_epi32(t, up), down)
        });
        let q = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let q = _mm256_permutevar8x32_epi32(q, unshuffle);
        // SAFETY: `y` holds 34 bytes.
        unsafe { _mm256_storeu_si256(y[2..34].as_mut_ptr() as *mut __m256i, q) };
    }
}

pub(crate) fn dequantize_q8_0(b: &[u8], out: &mut [f32]) {
    for (y, ob) in b.chunks_exact(34).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(y, 0);
        for (o, &q) in ob.iter_mut().zip(&y[2..]) {
            *o = (q as i8) as f32 * d;
        }
    }
}

// ---------------------------------------------------------------- Q5_0

fn pack_q5_0(l: &[i8], y: &mut [u8]) {
    let mut qh = 0u32;
    for j in 0..16 {
        let (a, b) = (l[j] as u8, l[j + 16] as u8);
        y[6 + j] = (a & 0x0f) | ((b & 0x0f) << 4);
    }
    for (j, &v) in l[..QK].iter().enumerate() {
        qh |= ((v as u32 >> 4) & 1) << j;
    }
    y[2..6].copy_from_slice(&qh.to_le_bytes());
}

compiled_for_avx2! {
    /// Without imatrix `quantize_row_q5_0_ref` (d = max/-16, truncating `(int8_t)(x/d + 16.5)`);
    /// with one `quantize_row_q5_0_impl`: weights `qw·sqrt(σ² + x²)`, σ² = Σx²/n over the row,
    /// and `make_qx_quants(32, 16, ..)`.
    pub(crate) fn quantize_q5_0 => quantize_q5_0_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8])
}

#[inline(always)]
fn quantize_q5_0_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    let mut l = [0i8; QK];
    match imatrix {
        None => {
            for (xb, y) in x.chunks_exact(QK).zip(out.chunks_exact_mut(22)) {
                let (max, _) = signed_max(xb);
                let d = max / -16.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                write_f16(y, 0, d);
                // |v·id| <= 16, so the C cast's truncation is Rust's (in range, vectorises).
                for (lj, &v) in l.iter_mut().zip(xb) {
                    *lj = ((v * id + 16.5) as i32).min(31) as i8;
                }
                pack_q5_0(&l, y);
            }
        }
        Some(qw) => {
            let sigma2 = row_sigma2(x);
            let mut weight = [0f32; QK];
            for ((xb, qb), y) in x
                .chunks_exact(QK)
                .zip(qw.chunks_exact(QK))
                .zip(out.chunks_exact_mut(22))
            {
                Weighting::Narrow.fill(sigma2, xb, Some(qb), &mut weight);
                let d = make_qx_quants_ggml(16, xb, &mut l, Some(&weight));
                write_f16(y, 0, d);
                pack_q5_0(&l, y);
            }
        }
    }
}

/// σ² = Σx²/n over the whole row, as Q5_0/Q6_0 use with an imatrix.
fn row_sigma2(x: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    s / x.len() as f32
}

pub(crate) fn dequantize_q5_0(b: &[u8], out: &mut [f32]) {
    for (y, ob) in b.chunks_exact(22).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(y, 0);
        let qh = u32::from_le_bytes([y[2], y[3], y[4], y[5]]);
        for j in 0..16 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            let x0 = ((y[6 + j] & 0x0f) as u32 | h0) as i32 - 16;
            let x1 = ((y[6 + j] >> 4) as u32 | h1) as i32 - 16;
            ob[j] = x0 as f32 * d;
            ob[j + 16] = x1 as f32 * d;
        }
    }
}

// ---------------------------------------------------------------- Q6_0

compiled_for_avx2! {
    /// `quantize_row_q6_0_impl` (ik's `quantize_q6_0` uses it with and without imatrix):
    /// weights `qw·sqrt(σ² + x²)` or `x²`, then `make_qx_quants(32, 32, ..)`.
    pub(crate) fn quantize_q6_0 => quantize_q6_0_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8])
}

#[inline(always)]
fn quantize_q6_0_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    let sigma2 = if imatrix.is_some() {
        row_sigma2(x)
    } else {
        0.0
    };
    let mut weight = [0f32; QK];
    let mut l = [0i8; QK];
    for (ib, (xb, y)) in x.chunks_exact(QK).zip(out.chunks_exact_mut(26)).enumerate() {
        // qw·sqrt(σ² + x²), or x² without an imatrix: the IQ4 types' weighting.
        let qb = imatrix.map(|qw| &qw[ib * QK..(ib + 1) * QK]);
        Weighting::Narrow.fill(sigma2, xb, qb, &mut weight);
        let d = make_qx_quants_ggml(32, xb, &mut l, Some(&weight));
        write_f16(y, 0, d);
        y[2..10].fill(0);
        for j in 0..16 {
            let (a, b) = (l[j] as u8, l[j + 16] as u8);
            y[10 + j] = (a & 0x0f) | ((b & 0x0f) << 4);
            let h = (a >> 4) | ((b >> 4) << 2);
            y[2 + j % 8] |= h << (4 * (j / 8));
        }
    }
}

pub(crate) fn dequantize_q6_0(b: &[u8], out: &mut [f32]) {
    for (y, ob) in b.chunks_exact(26).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(y, 0);
        for j in 0..16 {
            let h = y[2 + j % 8] >> (4 * (j / 8));
            let q = y[10 + j];
            let x0 = ((q & 0x0f) | ((h << 4) & 0x30)) as i32 - 32;
            let x1 = ((q >> 4) | ((h << 2) & 0x30)) as i32 - 32;
            ob[j] = x0 as f32 * d;
            ob[j + 16] = x1 as f32 * d;
        }
    }
}

// ---------------------------------------------------------------- IQ4_NL

pub(super) const IQ4NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];
const IQ4NL_F: [f32; 16] = {
    let mut v = [0f32; 16];
    let mut i = 0;
    while i < 16 {
        v[i] = IQ4NL_VALUES[i] as f32;
        i += 1;
    }
    v
};

compiled_for_avx2! {
    /// `quantize_iq4_nl` → `quantize_row_iq4_nl_impl(32, 32, .., ntry = 7)` per block:
    /// weights `qw·sqrt(σ² + x²)` (σ² = 2Σx²/32 over the block) or `x²`, a scan of 15 + 15
    /// inverse scales around ±127/max and ±113/max, then greedy single-index moves.
    pub(crate) fn quantize_iq4_nl => quantize_iq4_nl_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8])
}

#[inline(always)]
fn quantize_iq4_nl_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    let grid = &crate::tables::IQ4_GRIDS[0];
    let v = &IQ4NL_F;
    let vi = |k: usize| IQ4NL_VALUES[k] as i32;
    let mut weight = [0f32; QK];
    let mut lb = [0u8; QK];
    // Read once per row: the refinement asks for it per move.
    let path = crate::cpu::quantize_path();
    for (ib, (xb, y)) in x.chunks_exact(QK).zip(out.chunks_exact_mut(18)).enumerate() {
        let mut sigma2 = 0f32;
        for &t in xb {
            sigma2 += t * t;
        }
        sigma2 *= 2.0 / QK as f32;
        y.fill(0);
        // qw·sqrt(σ² + x²), or x² without an imatrix: the IQ4 types' weighting.
        let qb = imatrix.map(|qw| &qw[ib * QK..(ib + 1) * QK]);
        Weighting::Narrow.fill(sigma2, xb, qb, &mut weight);
        let (mut amax, mut max) = (0f32, 0f32);
        for &t in xb {
            if t.abs() > amax {
                amax = t.abs();
                max = t;
            }
        }
        let scale = if amax < GROUP_MAX_EPS {
            0.0
        } else {
            // The 31 candidate fits are independent of the accept decisions: fit them in
            // batches (SIMD lanes across candidates, see iqk::fit), then replay ik's order.
            let d0 = -max / v[0];
            let mut ids = [0f32; 31];
            ids[0] = 1.0 / d0;
            for (k, itry) in (-7..=7).enumerate() {
                ids[1 + 2 * k] = (itry + vi(0)) as f32 / max;
                ids[2 + 2 * k] = (itry + vi(15)) as f32 / max;
            }
            let mut fits = [[0f32; 4]; 32];
            fit_many_plus(grid, &ids, xb, &weight, &mut fits);
            let (sqx, sq2) = (fits[0][0], fits[0][1]);
            let mut pick = FitPick::first(sqx / sq2, sqx);
            let (mut best_sqx, mut best_sq2, mut best_id) = (sqx, sq2, ids[0]);
            for (c, &id) in ids.iter().enumerate().skip(1) {
                let (sqx, sq2) = (fits[c][0], fits[c][1]);
                if pick.offer(sqx, sq2) {
                    best_sqx = sqx;
                    best_sq2 = sq2;
                    best_id = id;
                }
            }
            nearest_indices(grid, best_id, xb, &mut lb);
            let (mut sqx, mut sq2) = (best_sqx, best_sq2);
            for _ in 0..32 * QK {
                let Some((j, dir)) = cheapest_move(path, pick.scale, xb, &weight, &lb) else {
                    break;
                };
                let w = weight[j];
                let k = lb[j] as usize;
                let kn = (k as i32 + dir) as usize;
                let new_sqx = sqx + w * xb[j] * (vi(kn) - vi(k)) as f32;
                let new_sq2 = sq2 + w * (vi(kn) * vi(kn) - vi(k) * vi(k)) as f32;
                if pick.offer(new_sqx, new_sq2) {
                    sqx = new_sqx;
                    sq2 = new_sq2;
                    lb[j] = kn as u8;
                } else {
                    break;
                }
            }
            pick.scale
        };
        write_f16(y, 0, scale);
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        nearest_indices(grid, id, xb, &mut lb);
        for j in 0..16 {
            y[2 + j] = lb[j] | (lb[j + 16] << 4);
        }
    }
}

/// One greedy move of the IQ4_NL refinement: the element whose step to the neighbouring
/// value in its gradient's direction needs the smallest scale change
/// `Δv / (d·w·(x − d·v))`, the first such element on ties, and the direction (±1).
fn cheapest_move(
    path: crate::cpu::Path,
    d: f32,
    x: &[f32],
    w: &[f32],
    lb: &[u8; QK],
) -> Option<(usize, i32)> {
    #[cfg(target_arch = "x86_64")]
    if path.has_avx2() {
        // SAFETY: the Avx2 path is only chosen on CPUs with AVX2.
        return unsafe { cheapest_move_avx2(d, x, w, lb) };
    }
    let _ = path;
    cheapest_move_scalar(d, x, w, lb)
}

fn cheapest_move_scalar(d: f32, x: &[f32], w: &[f32], lb: &[u8; QK]) -> Option<(usize, i32)> {
    let vi = |k: usize| IQ4NL_VALUES[k] as i32;
    let mut min_step = f32::INFINITY;
    let mut pick = None;
    for j in 0..QK {
        let k = lb[j] as usize;
        let g = d * w[j] * (x[j] - d * IQ4NL_F[k]);
        let (dir, ok) = if g > 0.0 {
            (1, k < 15)
        } else {
            (-1, g < 0.0 && k > 0)
        };
        if ok {
            let step = (vi((k as i32 + dir) as usize) - vi(k)) as f32 / g;
            if step < min_step {
                min_step = step;
                pick = Some((j, dir));
            }
        }
    }
    pick
}

/// [`cheapest_move_scalar`] eight elements per vector: the same quotients (the value
/// differences are small integers, exact in f32), ineligible ones set to +inf (never below
/// the scalar's starting minimum), then the first lane holding the minimum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn cheapest_move_avx2(d: f32, x: &[f32], w: &[f32], lb: &[u8; QK]) -> Option<(usize, i32)> {
    use crate::iqk::fit::avx2::{load, select};
    use std::arch::x86_64::*;
    let (x, w) = (&x[..QK], &w[..QK]);
    // IQ4_NL's values are the IQ4 grid's base half.
    let grid = load::<16>(&crate::tables::IQ4_GRIDS[0]);
    let value = |k: __m256i| select(&grid, k);
    let dv = _mm256_set1_ps(d);
    let (zero, one, inf) = (
        _mm256_setzero_ps(),
        _mm256_set1_epi32(1),
        _mm256_set1_ps(f32::INFINITY),
    );
    let mut steps = [0f32; QK];
    let mut ups = [0i32; QK];
    let mut min = inf;
    for c in (0..QK).step_by(8) {
        let k = _mm256_cvtepu8_epi32(_mm_loadl_epi64(lb[c..].as_ptr() as *const __m128i));
        let vk = value(k);
        let xv = _mm256_loadu_ps(x[c..].as_ptr());
        let dw = _mm256_mul_ps(dv, _mm256_loadu_ps(w[c..].as_ptr()));
        let g = _mm256_mul_ps(dw, _mm256_sub_ps(xv, _mm256_mul_ps(dv, vk)));
        let up = _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(g, zero),
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(15), k)),
        );
        let down = _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_LT_OQ>(g, zero),
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(k, _mm256_setzero_si256())),
        );
        let next = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(_mm256_sub_epi32(k, one)),
            _mm256_castsi256_ps(_mm256_add_epi32(k, one)),
            up,
        ));
        let step = _mm256_div_ps(_mm256_sub_ps(value(next), vk), g);
        let step = _mm256_blendv_ps(inf, step, _mm256_or_ps(up, down));
        min = _mm256_min_ps(min, step);
        _mm256_storeu_ps(steps[c..].as_mut_ptr(), step);
        _mm256_storeu_si256(
            ups[c..].as_mut_ptr() as *mut __m256i,
            _mm256_castps_si256(up),
        );
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), min);
    let least = lanes.iter().fold(f32::INFINITY, |a, &b| a.min(b));
    if least == f32::INFINITY {
        return None;
    }
    let j = steps.iter().position(|&s| s == least)?;
    Some((j, if ups[j] != 0 { 1 } else { -1 }))
}

pub(crate) fn dequantize_iq4_nl(b: &[u8], out: &mut [f32]) {
    for (y, ob) in b.chunks_exact(18).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(y, 0);
        for j in 0..16 {
            ob[j] = d * IQ4NL_F[(y[2 + j] & 0x0f) as usize];
            ob[j + 16] = d * IQ4NL_F[(y[2 + j] >> 4) as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::util::{build_nl_index, c_trunc_i32, resolve_nl};
    use super::*;

    /// ik's `best_index_iq4nl`: bucket by `(int)x`, ties resolved by f32 comparison.
    fn best_index_iq4nl(x: f32) -> usize {
        static IQ4NL_INDEX: [u8; 241] = build_nl_index::<16, 241>(&IQ4NL_VALUES);
        let ix = c_trunc_i32(x).wrapping_sub(IQ4NL_VALUES[0] as i32);
        resolve_nl(&IQ4NL_INDEX, &IQ4NL_F, 16, 241, ix, x)
    }

    use crate::testing::rng;

    #[test]
    fn round_half_away_is_roundf() {
        let mut seed = 5u32;
        let mut ps: Vec<f32> = (0..100_000).map(|_| 130.0 * rng(&mut seed)).collect();
        ps.extend((-260..=260).map(|k| k as f32 * 0.5));
        ps.extend([
            0.49999997,
            -0.49999997,
            0.5,
            -0.5,
            126.5,
            -127.49999,
            0.0,
            -0.0,
        ]);
        for p in ps {
            assert_eq!(round_half_away(p), p.round() as i32, "p = {p:e}");
        }
    }

    /// The AVX2 Q8_0 quantizer writes the scalar one's bytes on random blocks of many
    /// amplitudes, with exact half-steps, zero blocks and subnormal maxima.
    #[test]
    fn q8_0_simd_equals_scalar() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            let mut seed = 77u32;
            for trial in 0..4000usize {
                let amp = 10f32.powi(trial as i32 % 84 - 45);
                let mut x: Vec<f32> = (0..QK).map(|_| amp * rng(&mut seed)).collect();
                match trial % 5 {
                    0 => x.fill(0.0),
                    1 => {
                        // values landing on k + 1/2 steps of the scale
                        x[0] = 127.0;
                        for (j, v) in x.iter_mut().enumerate().skip(1) {
                            *v = (j as f32 - 16.0) * 2.5 + if j % 2 == 0 { 0.5 } else { -0.5 };
                        }
                    }
                    2 => x[trial % QK] = f32::from_bits(1 + (trial as u32 % 5000)),
                    _ => {}
                }
                let (mut simd, mut scalar) = ([0u8; 34], [0u8; 34]);
                // SAFETY: AVX2 detected above.
                unsafe { quantize_q8_0_avx2(&x, &mut simd) };
                quantize_q8_0_scalar(&x, &mut scalar);
                assert_eq!(simd, scalar, "trial {trial}: {x:?}");
            }
        }
    }

    /// The AVX2 move pick equals the scalar one on random blocks, levels (including the
    /// end levels, which can only move inward) and scales, with ties and zero weights.
    #[test]
    fn cheapest_move_simd_equals_scalar() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            let mut seed = 4242u32;
            for trial in 0..3000usize {
                let amp = 10f32.powi(trial as i32 % 5 - 2);
                let x: Vec<f32> = (0..QK).map(|_| amp * rng(&mut seed)).collect();
                let w: Vec<f32> = (0..QK)
                    .map(|j| {
                        if (trial + j) % 11 == 0 {
                            0.0
                        } else {
                            rng(&mut seed).abs()
                        }
                    })
                    .collect();
                let mut lb = [0u8; QK];
                for (j, l) in lb.iter_mut().enumerate() {
                    *l = match (trial + j) % 7 {
                        0 => 0,
                        1 => 15,
                        _ => (16.0 * (0.5 + 0.5 * rng(&mut seed))) as u8 % 16,
                    };
                }
                if trial % 3 == 0 {
                    // Equal steps in several lanes: the first must win.
                    for j in (0..QK).step_by(5) {
                        lb[j] = lb[0];
                    }
                    let (x0, w0) = (x[0], w[0]);
                    let (mut x, mut w) = (x, w);
                    for j in (0..QK).step_by(5) {
                        x[j] = x0;
                        w[j] = w0;
                    }
                    let d = amp * rng(&mut seed) / 64.0;
                    // SAFETY: AVX2 detected above.
                    let simd = unsafe { cheapest_move_avx2(d, &x, &w, &lb) };
                    assert_eq!(simd, cheapest_move_scalar(d, &x, &w, &lb), "trial {trial}");
                    continue;
                }
                let d = amp * rng(&mut seed) / 64.0;
                // SAFETY: AVX2 detected above.
                let simd = unsafe { cheapest_move_avx2(d, &x, &w, &lb) };
                assert_eq!(simd, cheapest_move_scalar(d, &x, &w, &lb), "trial {trial}");
            }
        }
    }

    /// ik's IQ4_NL look-up (bucket by trunc) and the IQ4 base grid's `nearest` (bucket by
    /// floor) agree on every f32 near each midpoint, on a sweep and on extremes; the
    /// quantizer uses the grid's (SIMD) search.
    #[test]
    fn iq4nl_lookup_equals_grid_nearest() {
        let grid = &crate::tables::IQ4_GRIDS[0];
        assert_eq!(grid.values, &IQ4NL_VALUES);
        let mut xs = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            2_147_483_648.0,
            -2_147_483_648.0,
            1e20,
            -1e20,
            0.0,
            -0.0,
        ];
        xs.extend((-40_000..40_000).map(|i| i as f32 / 128.0 + 0.001));
        xs.extend(crate::tables::around_midpoints(&IQ4NL_VALUES, 1.0 / 64.0));
        for x in xs {
            assert_eq!(best_index_iq4nl(x), grid.nearest(x), "x = {x:e}");
        }
    }
}
