//! The fast search's kernels in AVX2+FMA. ik's code is AVX2 with 8-lane sums, so the natural
//! vector form is also the bit-exact one: lane l accumulates elements l, l+8, l+16, l+24.

use std::arch::x86_64::*;

use super::bands::{value_in_band, BUCKETS, MARKED, MIDPOINTS, RUNS, RUN_LENGTH};
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

#[inline(always)]
unsafe fn store_lanes(acc: [__m256; 4], out: &mut [[f32; 8]; 4]) {
    for (v, o) in acc.iter().zip(out) {
        _mm256_storeu_ps(o.as_mut_ptr(), *v);
    }
}

/// Sum `s` of the eight slots from `first` on.
#[inline(always)]
unsafe fn reduce_group(lane_sums: &LaneSums, first: usize, s: usize) -> __m256 {
    let at = |i: usize| _mm256_loadu_ps(lane_sums[first + i][s].as_ptr());
    hsum8_x8([at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7)])
}

/// `sqx²/sq2` where `sq2 > 0`, else 0, lane by lane, as the scalar `approx_score`.
#[inline(always)]
unsafe fn approx_score(sqx: __m256, sq2: __m256) -> __m256 {
    let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(sq2, _mm256_setzero_ps());
    _mm256_and_ps(positive, _mm256_div_ps(_mm256_mul_ps(sqx, sqx), sq2))
}

/// For a block clear of the bands: bit c is set for the threshold candidates whose nearest
/// values may differ from candidate c - 1's, the first of each run and those where some
/// value crosses a midpoint (see `bands::RUNS`). The other candidates' fits repeat their
/// predecessor's, operation for operation; about half are such repeats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn distinct_candidates(x: &[f32], a: f32) -> u64 {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let av = _mm256_set1_ps(a);
    // a/|x|: inf for x = 0, which crosses nothing.
    let inv: [__m256; 4] = std::array::from_fn(|k| {
        let v = _mm256_loadu_ps(x[8 * k..8 * k + 8].as_ptr());
        _mm256_div_ps(av, _mm256_and_ps(v, abs_mask))
    });
    let (mut low, mut high) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let one = _mm256_set1_epi32(1);
    let run_length = _mm256_set1_epi32(RUN_LENGTH as i32);
    let mut distinct = 0u64;
    for (g, &(first, den)) in RUNS.iter().enumerate() {
        distinct |= 1 << first;
        let twice_den = _mm256_set1_ps(2.0 * den);
        let first = _mm256_set1_epi32(first as i32);
        for mid in MIDPOINTS[g] {
            let twice_mid = _mm256_set1_ps(2.0 * mid.abs());
            for &inv in &inv {
                let t = _mm256_sub_ps(twice_den, _mm256_mul_ps(twice_mid, inv));
                let i = _mm256_cvttps_epi32(_mm256_ceil_ps(t));
                // 1 <= i < RUN_LENGTH, else no crossing in the run (cvtt gives i32::MIN for
                // -inf and NaN).
                let inside = _mm256_andnot_si256(
                    _mm256_cmpgt_epi32(one, i),
                    _mm256_cmpgt_epi32(run_length, i),
                );
                let c = _mm256_add_epi32(first, i);
                // Shift counts of 32 and more give 0, so each lane lands in one half.
                let bit_low = _mm256_sllv_epi32(one, c);
                let bit_high = _mm256_sllv_epi32(one, _mm256_sub_epi32(c, _mm256_set1_epi32(32)));
                low = _mm256_or_si256(low, _mm256_and_si256(inside, bit_low));
                high = _mm256_or_si256(high, _mm256_and_si256(inside, bit_high));
            }
        }
    }
    let (mut lo, mut hi) = ([0u32; 8], [0u32; 8]);
    _mm256_storeu_si256(lo.as_mut_ptr() as *mut __m256i, low);
    _mm256_storeu_si256(hi.as_mut_ptr() as *mut __m256i, high);
    let fold = |v: [u32; 8]| v.iter().fold(0u64, |m, &b| m | b as u64);
    distinct | fold(lo) | fold(hi) << 32
}

/// Fit the candidate scales of one block into `fits` (see [`Fits`]): every candidate, or for
/// a block clear of the bands, candidate 0 and the threshold candidates that do not repeat
/// their predecessor. `lane_sums` is scratch, one entry per slot.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn candidate_fits(
    x: &[f32],
    w: &[f32],
    max: f32,
    fits: &mut Fits,
    lane_sums: &mut LaneSums,
) {
    let mut scale = [0.0f32; N_PADDED];
    let mut thresholds = [[0i32; N_PADDED]; 3];
    let maxv = _mm256_set1_ps(max);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    for k in 0..N_PADDED / 8 {
        let den = _mm256_loadu_ps(DENOMINATORS[8 * k..].as_ptr());
        let d = _mm256_div_ps(maxv, den);
        _mm256_storeu_ps(scale[8 * k..].as_mut_ptr(), d);
        let magnitude = _mm256_and_ps(d, abs_mask);
        for (row, mid) in thresholds.iter_mut().zip(&MIDPOINT_ROWS) {
            let th = _mm256_mul_ps(magnitude, _mm256_loadu_ps(mid[8 * k..].as_ptr()));
            _mm256_storeu_si256(row[8 * k..].as_mut_ptr() as *mut __m256i, ordered_bits(th));
        }
    }
    fits.first_scale = scale[0];
    let load = |s: &[f32], k: usize| _mm256_loadu_ps(s[8 * k..8 * k + 8].as_ptr());
    let xv = [load(x, 0), load(x, 1), load(x, 2), load(x, 3)];
    let wv = [load(w, 0), load(w, 1), load(w, 2), load(w, 3)];
    let values = |c: usize| IQ2_GRIDS[candidate_is_shifted(c) as usize].values;
    let count = if clear_of_bands(x, max.abs()) {
        store_lanes(
            distance_lanes(scale[0], &xv, &wv, values(0)),
            &mut lane_sums[0],
        );
        fits.candidate[0] = 0;
        let mut count = 1;
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
        let mut distinct = distinct_candidates(x, max.abs());
        while distinct != 0 {
            let c = distinct.trailing_zeros() as usize;
            distinct &= distinct - 1;
            let lookup = lookups[candidate_is_shifted(c) as usize];
            let th = [thresholds[0][c], thresholds[1][c], thresholds[2][c]];
            store_lanes(
                threshold_lanes(th, above, &xv, &wv, lookup),
                &mut lane_sums[count],
            );
            fits.candidate[count] = c as u8;
            count += 1;
        }
        count
    } else {
        let slots = lane_sums.iter_mut().zip(&mut fits.candidate);
        for (c, (out, slot)) in slots.enumerate().take(N_CANDIDATES) {
            store_lanes(distance_lanes(scale[c], &xv, &wv, values(c)), out);
            *slot = c as u8;
        }
        N_CANDIDATES
    };
    fits.count = count;
    // Reduce eight slots at a time (the padding ones zeroed), then their approximate scores as
    // `Fits::rank`.
    let groups = count.div_ceil(8);
    for padding in &mut lane_sums[count..8 * groups] {
        *padding = [[0.0; 8]; 4];
    }
    let mut top = _mm256_setzero_ps();
    for g in 0..groups {
        let sums = [
            reduce_group(lane_sums, 8 * g, 0),
            reduce_group(lane_sums, 8 * g, 1),
            reduce_group(lane_sums, 8 * g, 2),
            reduce_group(lane_sums, 8 * g, 3),
        ];
        for (column, v) in fits.sums.iter_mut().zip(sums) {
            _mm256_storeu_ps(column[8 * g..].as_mut_ptr(), v);
        }
        let (p, m) = (
            approx_score(sums[0], sums[1]),
            approx_score(sums[2], sums[3]),
        );
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
