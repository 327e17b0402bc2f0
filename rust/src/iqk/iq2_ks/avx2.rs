//! The fast search's kernels in AVX2+FMA. ik's code is AVX2 with 8-lane sums, so the natural
//! vector form is also the bit-exact one: lane l accumulates elements l, l+8, l+16, l+24.

use std::arch::x86_64::*;

use super::bands::{value_in_band, BUCKETS, FIRST_BY_THRESHOLD, MARKED, MIDPOINTS};
use super::{
    candidate_is_shifted, fold_top, hsum8, Fits, LaneSums, DENOMINATORS, N_CANDIDATES, N_PADDED,
    SUB,
};
use crate::tables::IQ2_GRIDS;

#[inline]
unsafe fn lanes(v: __m256) -> [f32; 8] {
    let mut out = [0.0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), v);
    out
}

/// ik's `hsum_float_8` of eight vectors at once: lane c of the result is
/// `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))` of `v[c]`, the same additions in the same order.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum8_x8(v: [__m256; 8]) -> __m256 {
    // b_k = a_k + a_(k+4): the low and the high half of two vectors at a time.
    let halves = |a: __m256, b: __m256| {
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    };
    let b01 = halves(v[0], v[1]);
    let b23 = halves(v[2], v[3]);
    let b45 = halves(v[4], v[5]);
    let b67 = halves(v[6], v[7]);
    // Per 128-bit half: [v0 b0+b2, v2 b0+b2, v0 b1+b3, v2 b1+b3] (v1, v3 in the high half).
    let p = _mm256_add_ps(_mm256_unpacklo_ps(b01, b23), _mm256_unpackhi_ps(b01, b23));
    let q = _mm256_add_ps(_mm256_unpacklo_ps(b45, b67), _mm256_unpackhi_ps(b45, b67));
    let even = _mm256_shuffle_ps::<0x44>(p, q);
    let odd = _mm256_shuffle_ps::<0xee>(p, q);
    // [v0, v2, v4, v6, v1, v3, v5, v7] back into order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    _mm256_permutevar8x32_ps(_mm256_add_ps(even, odd), order)
}

/// Grid values as f32 and the lookup from minus a count (0..=3, modulo 8 as `vpermps` reads
/// three bits) to the value.
#[inline(always)]
unsafe fn value_lookup(values: &[i8]) -> ([f32; 4], __m256) {
    let t = [
        values[0] as f32,
        values[1] as f32,
        values[2] as f32,
        values[3] as f32,
    ];
    (
        t,
        _mm256_setr_ps(t[0], 0.0, 0.0, 0.0, 0.0, t[3], t[2], t[1]),
    )
}

/// Add one chunk of the `+` fit (nearest values `qp`) and the `-` fit (`qm`) to the lane sums
/// `[Σwq·x, Σwq·q]` of each, fused as ik's code does.
#[inline(always)]
unsafe fn accumulate(acc: &mut [__m256; 4], xv: __m256, wv: __m256, qp: __m256, qm: __m256) {
    let wq = _mm256_mul_ps(wv, qp);
    acc[0] = _mm256_fmadd_ps(wq, xv, acc[0]);
    acc[1] = _mm256_fmadd_ps(wq, qp, acc[1]);
    let wq = _mm256_mul_ps(wv, qm);
    acc[2] = _mm256_fmadd_ps(wq, xv, acc[2]);
    acc[3] = _mm256_fmadd_ps(wq, qm, acc[3]);
}

/// Lane sums `[Σwq·x, Σwq·q]` of the `+` and the `-` sign fits at scale `d`.
///
/// The nearest value is found by counting descents instead of ik's running minimum. Along
/// the sorted grid the rounded squared distances fl(fl(y - fl(d·t_k))²) fall strictly
/// while y - fl(d·t_k) keeps its sign and rise strictly after it flips: neighbouring
/// values lie at least 14|d| apart while |y - d·t_k| <= 68.5|d| (|y| <= |max| <= 37.5|d|),
/// so two same-sign distances differ by over 20 % and cannot round to one square. The
/// first minimum, which ik's strict `<` keeps, is then the number of strict descents.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn distance_lanes(d: f32, xv: &[__m256; 4], wv: &[__m256; 4], values: &[i8]) -> [__m256; 4] {
    let (t, by_neg_count) = value_lookup(values);
    let scaled = t.map(|v| _mm256_set1_ps(d * v));
    let mut acc = [_mm256_setzero_ps(); 4];
    for k in 0..SUB / 8 {
        let sq = |v: __m256| _mm256_mul_ps(v, v);
        let dp = scaled.map(|s| sq(_mm256_sub_ps(xv[k], s)));
        let dm = scaled.map(|s| sq(_mm256_add_ps(xv[k], s)));
        let qp = _mm256_permutevar8x32_ps(by_neg_count, descents(dp));
        let qm = _mm256_permutevar8x32_ps(by_neg_count, descents(dm));
        accumulate(&mut acc, xv[k], wv[k], qp, qm);
    }
    acc
}

/// Minus the number of k in 1..4 with `dist[k] < dist[k - 1]`, per lane.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn descents(dist: [__m256; 4]) -> __m256i {
    let step = |k: usize| _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(dist[k], dist[k - 1]));
    _mm256_add_epi32(_mm256_add_epi32(step(1), step(2)), step(3))
}

/// f32 bits as an i32 that orders as the floats do (apart from -0 < +0), so that the
/// threshold comparisons run on the integer ports, beside the multiplies and FMAs.
#[inline(always)]
unsafe fn ordered_bits(v: __m256) -> __m256i {
    let bits = _mm256_castps_si256(v);
    _mm256_xor_si256(bits, _mm256_srli_epi32::<1>(_mm256_srai_epi32::<31>(bits)))
}

/// The same lane sums as [`distance_lanes`] for a block clear of the bands (see `bands`),
/// where the nearest index is the number of midpoints below the value. `above` holds (as
/// [`ordered_bits`]) the values whose counts give the `+` fit's and the `-` fit's indices,
/// oriented by the sign of the scale; `thresholds` are the midpoints at the scale's
/// magnitude, as ordered bits. No value or threshold is ±0, so -0 < +0 does not matter.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn threshold_lanes(
    thresholds: [i32; 3],
    above: [&[__m256i; 4]; 2],
    xv: &[__m256; 4],
    wv: &[__m256; 4],
    by_neg_count: __m256,
) -> [__m256; 4] {
    let th = thresholds.map(|v| _mm256_set1_epi32(v));
    // Minus the number of thresholds below each lane.
    let neg_count = |y: __m256i| {
        let above = |k: usize| _mm256_cmpgt_epi32(y, th[k]);
        _mm256_add_epi32(_mm256_add_epi32(above(0), above(1)), above(2))
    };
    let mut acc = [_mm256_setzero_ps(); 4];
    for k in 0..SUB / 8 {
        let qp = _mm256_permutevar8x32_ps(by_neg_count, neg_count(above[0][k]));
        let qm = _mm256_permutevar8x32_ps(by_neg_count, neg_count(above[1][k]));
        accumulate(&mut acc, xv[k], wv[k], qp, qm);
    }
    acc
}

/// Each candidate's grid midpoints, one row per midpoint.
const MIDPOINT_ROWS: [[f32; N_PADDED]; 3] = {
    let mut rows = [[0.0f32; N_PADDED]; 3];
    let mut c = 0;
    while c < N_PADDED {
        let mut k = 0;
        while k < 3 {
            rows[k][c] = MIDPOINTS[candidate_is_shifted(c) as usize][k];
            k += 1;
        }
        c += 1;
    }
    rows
};

/// `bands::clear_of_bands` with the bucket lookups of all 32 values done in vectors; only the
/// values in marked buckets (about 1.5 %) are checked against the bands one by one. The f32
/// bucket index is within one bucket of the exact one, which the marks allow for.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn clear_of_bands(x: &[f32], a: f32) -> bool {
    let scale = _mm256_set1_ps(BUCKETS as f32 / a);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let mut flagged = 0u32;
    for k in 0..SUB / 8 {
        let v = _mm256_and_ps(_mm256_loadu_ps(x[8 * k..8 * k + 8].as_ptr()), abs_mask);
        // |x| <= a, so the bucket is at most BUCKETS and its word within MARKED.
        let bucket = _mm256_cvttps_epi32(_mm256_mul_ps(v, scale));
        let word = _mm256_srli_epi32::<5>(bucket);
        let words = _mm256_i32gather_epi32::<4>(MARKED.as_ptr() as *const i32, word);
        let bit = _mm256_srlv_epi32(words, _mm256_and_si256(bucket, _mm256_set1_epi32(31)));
        let hit = _mm256_castsi256_ps(_mm256_slli_epi32::<31>(bit));
        flagged |= (_mm256_movemask_ps(hit) as u32) << (8 * k);
    }
    while flagged != 0 {
        if value_in_band(x[flagged.trailing_zeros() as usize], a) {
            return false;
        }
        flagged &= flagged - 1;
    }
    true
}

/// Fit every candidate scale of one block: fill `fits` (scales, sums, approximate scores and
/// their top) as the scalar path does. `lane_sums` is scratch whose padding entries are 0.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn candidate_fits(
    x: &[f32],
    w: &[f32],
    max: f32,
    fits: &mut Fits,
    lane_sums: &mut LaneSums,
) {
    let mut thresholds = [[0i32; N_PADDED]; 3];
    let maxv = _mm256_set1_ps(max);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    for k in 0..N_PADDED / 8 {
        let den = _mm256_loadu_ps(DENOMINATORS[8 * k..].as_ptr());
        let scale = _mm256_div_ps(maxv, den);
        _mm256_storeu_ps(fits.scale[8 * k..].as_mut_ptr(), scale);
        let magnitude = _mm256_and_ps(scale, abs_mask);
        for (row, mid) in thresholds.iter_mut().zip(&MIDPOINT_ROWS) {
            let th = _mm256_mul_ps(magnitude, _mm256_loadu_ps(mid[8 * k..].as_ptr()));
            _mm256_storeu_si256(row[8 * k..].as_mut_ptr() as *mut __m256i, ordered_bits(th));
        }
    }
    let load = |s: &[f32], k: usize| _mm256_loadu_ps(s[8 * k..8 * k + 8].as_ptr());
    let xv = [load(x, 0), load(x, 1), load(x, 2), load(x, 3)];
    let wv = [load(w, 0), load(w, 1), load(w, 2), load(w, 3)];
    let store = |acc: [__m256; 4], out: &mut [[f32; 8]; 4]| {
        for (v, o) in acc.iter().zip(out) {
            _mm256_storeu_ps(o.as_mut_ptr(), *v);
        }
    };
    let mut by_distance = 0..N_CANDIDATES;
    if clear_of_bands(x, max.abs()) {
        by_distance = 0..FIRST_BY_THRESHOLD;
        // At a negative scale -D the `+` fit's nearest values are the `-` fit's at D, and the
        // other way round. The candidates fitted by thresholds all have negative denominators,
        // so their scales have the opposite sign of `max`. Negating flips the ordered bits.
        let pos = xv.map(|v| ordered_bits(v));
        let neg = pos.map(|v| _mm256_xor_si256(v, _mm256_set1_epi32(-1)));
        let above = if max > 0.0 {
            [&neg, &pos]
        } else {
            [&pos, &neg]
        };
        let lookups = IQ2_GRIDS.each_ref().map(|grid| value_lookup(grid.values).1);
        for c in FIRST_BY_THRESHOLD..N_CANDIDATES {
            let lookup = lookups[candidate_is_shifted(c) as usize];
            let th = [thresholds[0][c], thresholds[1][c], thresholds[2][c]];
            store(
                threshold_lanes(th, above, &xv, &wv, lookup),
                &mut lane_sums[c],
            );
        }
    }
    for c in by_distance {
        let values = IQ2_GRIDS[candidate_is_shifted(c) as usize].values;
        store(
            distance_lanes(fits.scale[c], &xv, &wv, values),
            &mut lane_sums[c],
        );
    }
    // Reduce eight candidates at a time, then their approximate scores as `Fits::rank`.
    let zero = _mm256_setzero_ps();
    let score = |sqx: __m256, sq2: __m256| {
        let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(sq2, zero);
        _mm256_and_ps(positive, _mm256_div_ps(_mm256_mul_ps(sqx, sqx), sq2))
    };
    let mut top = zero;
    for (g, group) in lane_sums.chunks_exact(8).enumerate() {
        let sums: [__m256; 4] = std::array::from_fn(|s| {
            hsum8_x8(std::array::from_fn(|i| {
                _mm256_loadu_ps(group[i][s].as_ptr())
            }))
        });
        for (column, v) in fits.sums.iter_mut().zip(sums) {
            _mm256_storeu_ps(column[8 * g..].as_mut_ptr(), v);
        }
        let (p, m) = (score(sums[0], sums[1]), score(sums[2], sums[3]));
        let approx = _mm256_blendv_ps(m, p, _mm256_cmp_ps::<_CMP_GT_OQ>(p, m));
        _mm256_storeu_ps(fits.approx[8 * g..].as_mut_ptr(), approx);
        top = _mm256_blendv_ps(top, approx, _mm256_cmp_ps::<_CMP_GT_OQ>(approx, top));
    }
    fits.top = fold_top(lanes(top));
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
