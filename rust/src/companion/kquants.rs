//! The K-quants Q2_K, Q4_K, Q5_K and Q6_K (256-element super-blocks), as ik_llama.cpp's
//! `ggml-quants.c` produces them: the `*_ref` path without an imatrix, the `*_impl` path
//! with one (raw imatrix, no sanitising).
//!
//! | type | bytes | layout                                                               |
//! |------|-------|----------------------------------------------------------------------|
//! | Q2_K | 84    | scales[16] (low nibble scale, high nibble min), qs[64], fp16 d, dmin |
//! | Q4_K | 144   | fp16 d, dmin, scales[12] (6-bit scale/min pairs), qs[128]            |
//! | Q5_K | 176   | fp16 d, dmin, scales[12], qh[32], qs[128]                            |
//! | Q6_K | 210   | ql[128], qh[64], int8 scales[16], fp16 d                             |

use super::search::{
    make_qkx2_quants, make_qkx3_quants, make_qp_quants, make_qx_quants_ggml, GROUP_MAX_EPS,
};
use super::util::{f16_to_f32, f32_to_f16, nearest_int, read_f16, write_f16};
use crate::cpu::compiled_for_avx2;

use crate::simd::QK as QK_K;

/// Pack 2-bit values the Q2_K way: in each 128-half, byte l holds elements l, l+32, l+64,
/// l+96 at bit offsets 0, 2, 4, 6.
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for h in 0..2 {
        let j = 128 * h;
        for i in 0..32 {
            qs[32 * h + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

// ---------------------------------------------------------------- Q2_K

/// Q2_K without imatrix (`quantize_row_q2_K_ref`). ik first checks the whole input for a
/// ternary ("TriNet") model: with `max = max|x|`, if Σ(x − max·t(x))² < 0.1·Σx², where
/// t(x) ∈ {-1, 0, 1} by ±max/2 thresholds, every block is written as exact ternary.
/// That test spans everything passed in one `ggml_quantize_chunk` call, so `x` may hold
/// several rows.
pub(crate) fn quantize_q2_k_ref(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut max = 0f32;
    for &v in x {
        let a = v.abs();
        max = if max > a { max } else { a };
    }
    let (mut mse0, mut mse) = (0f32, 0f32);
    for &v in x {
        let t: i32 = if v < -0.5 * max {
            -1
        } else if v < 0.5 * max {
            0
        } else {
            1
        };
        mse0 += v * v;
        let diff = v - max * t as f32;
        mse += diff * diff;
    }
    if mse < 0.1 * mse0 {
        for (xb, y) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(84)) {
            write_f16(y, 80, max);
            write_f16(y, 82, max);
            y[..16].fill(0x11);
            for (lj, &v) in l.iter_mut().zip(xb) {
                *lj = if v < -0.5 * max {
                    0
                } else if v < 0.5 * max {
                    1
                } else {
                    2
                };
            }
            pack_2bit(&l, &mut y[16..80]);
        }
        return;
    }

    let mut weights = [0f32; 16];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    for (xb, y) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(84)) {
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for j in 0..16 {
            let xs = &xb[16 * j..16 * j + 16];
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (s, m) = make_qkx2_quants(
                3,
                xs,
                &weights,
                &mut l[16 * j..16 * j + 16],
                -0.5,
                0.1,
                15,
                true,
            );
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for j in 0..16 {
                y[j] = nearest_int(iscale * scales[j]) as u8;
            }
            write_f16(y, 80, max_scale / 15.0);
        } else {
            y[..16].fill(0);
            write_f16(y, 80, 0.0);
        }
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for j in 0..16 {
                let lm = nearest_int(iscale * mins[j]);
                y[j] |= (lm << 4) as u8;
            }
            write_f16(y, 82, max_min / 15.0);
        } else {
            write_f16(y, 82, 0.0);
        }
        let dd = read_f16(y, 80);
        let dmin = read_f16(y, 82);
        for j in 0..16 {
            let d = dd * (y[j] & 0x0f) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin * (y[j] >> 4) as f32;
            for i in 0..16 {
                l[16 * j + i] = nearest_int((xb[16 * j + i] + dm) / d).clamp(0, 3) as u8;
            }
        }
        pack_2bit(&l, &mut y[16..80]);
    }
}

/// Q2_K with imatrix (`quantize_row_q2_K_impl`): weights `qw·sqrt(σ² + x²)` with
/// σ² = 0.75·Σx²/256, `make_qkx3_quants` per 16-block, `make_qp_quants` for the 4-bit
/// scales and mins (weighted by the blocks' weight sums).
pub(crate) fn quantize_q2_k_impl(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut weight = [0f32; 16];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut sw = [0f32; 16];
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];
    for (ibl, (xb, y)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(84))
        .enumerate()
    {
        sw.fill(0.0);
        let mut sumx2 = 0f32;
        for &v in xb {
            sumx2 += v * v;
        }
        let sigma2 = 0.75 * sumx2 / QK_K as f32;
        for j in 0..16 {
            let xs = &xb[16 * j..16 * j + 16];
            let qs = &qw[QK_K * ibl + 16 * j..QK_K * ibl + 16 * j + 16];
            for i in 0..16 {
                weight[i] = qs[i] * (sigma2 + xs[i] * xs[i]).sqrt();
            }
            for &w in &weight {
                sw[j] += w;
            }
            let (s, m) =
                make_qkx3_quants(3, xs, &weight, &mut l[16 * j..16 * j + 16], -0.9, 0.05, 36);
            scales[j] = s;
            mins[j] = m;
        }
        let dm = make_qp_quants(15, &scales, &mut ls, &sw);
        let mm = make_qp_quants(15, &mins, &mut lm, &sw);
        write_f16(y, 80, dm);
        write_f16(y, 82, mm);
        for j in 0..16 {
            let d = dm * ls[j] as f32;
            let m = mm * lm[j] as f32;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for i in 0..16 {
                l[16 * j + i] = nearest_int((xb[16 * j + i] + m) * id).clamp(0, 3) as u8;
            }
        }
        for j in 0..16 {
            y[j] = ls[j] | (lm[j] << 4);
        }
        pack_2bit(&l, &mut y[16..80]);
    }
}

pub(crate) fn dequantize_q2_k(b: &[u8], out: &mut [f32]) {
    for (y, ob) in b.chunks_exact(84).zip(out.chunks_exact_mut(QK_K)) {
        let d = read_f16(y, 80);
        let min = read_f16(y, 82);
        let mut k = 0;
        for h in 0..2 {
            let q = &y[16 + 32 * h..48 + 32 * h];
            for shift in [0, 2, 4, 6] {
                for half in 0..2 {
                    let sc = y[k / 16];
                    let dl = d * (sc & 0x0f) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for i in 0..16 {
                        ob[k] = dl * ((q[16 * half + i] >> shift) & 3) as f32 - ml;
                        k += 1;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- Q4_K / Q5_K

/// The 12-byte 6-bit scale/min packing of Q4_K/Q5_K, done with the C's `uint8_t`
/// truncations (values above 63 never occur for sane data, but are packed the same way).
fn pack_scales_k4(ls: &[u8; 8], lm: &[u8; 8], sc: &mut [u8]) {
    for j in 0..8 {
        let (s, m) = (ls[j] as u32, lm[j] as u32);
        if j < 4 {
            sc[j] = s as u8;
            sc[j + 4] = m as u8;
        } else {
            sc[j + 4] = ((s & 0x0f) | ((m & 0x0f) << 4)) as u8;
            sc[j - 4] |= ((s >> 4) << 6) as u8;
            sc[j] |= ((m >> 4) << 6) as u8;
        }
    }
}

/// `get_scale_min_k4`: the 6-bit scale and min of 32-block `j`.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Shared body of Q4_K (`nmax = 15`) and Q5_K (`nmax = 31`): fills the 256 levels in
/// `l` and writes d, dmin and scales at the start of `y`.
#[inline(always)]
fn quantize_k4_block(nmax: i32, xb: &[f32], qw: Option<&[f32]>, y: &mut [u8], l: &mut [u8; QK_K]) {
    let mut weights = [0f32; 32];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    match qw {
        None => {
            // quantize_row_q{4,5}_K_ref
            let (rmin, nstep) = if nmax == 15 { (-1.0, 20) } else { (-0.5, 15) };
            let (mut max_scale, mut max_min) = (0f32, 0f32);
            for j in 0..8 {
                let xs = &xb[32 * j..32 * j + 32];
                let mut sum_x2 = 0f32;
                for &v in xs {
                    sum_x2 += v * v;
                }
                let av_x = (sum_x2 / 32.0).sqrt();
                for (w, &v) in weights.iter_mut().zip(xs) {
                    *w = av_x + v.abs();
                }
                let (s, m) = make_qkx2_quants(
                    nmax,
                    xs,
                    &weights,
                    &mut l[32 * j..32 * j + 32],
                    rmin,
                    0.1,
                    nstep,
                    false,
                );
                scales[j] = s;
                mins[j] = m;
                if s > max_scale {
                    max_scale = s;
                }
                if m > max_min {
                    max_min = m;
                }
            }
            let inv_scale = if max_scale > 0.0 {
                63.0 / max_scale
            } else {
                0.0
            };
            let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
            for j in 0..8 {
                ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
                lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
            }
            pack_scales_k4(&ls, &lm, &mut y[4..16]);
            write_f16(y, 0, max_scale / 63.0);
            write_f16(y, 2, max_min / 63.0);
        }
        Some(qw) => {
            // quantize_row_q{4,5}_K_impl
            let mut sw = [0f32; 8];
            let mut sum_x2 = 0f32;
            for &v in xb {
                sum_x2 += v * v;
            }
            let sigma2 = 2.0 * sum_x2 / QK_K as f32;
            for j in 0..8 {
                let xs = &xb[32 * j..32 * j + 32];
                let qs = &qw[32 * j..32 * j + 32];
                for i in 0..32 {
                    weights[i] = qs[i] * (sigma2 + xs[i] * xs[i]).sqrt();
                }
                let mut sumw = 0f32;
                for &w in &weights {
                    sumw += w;
                }
                sw[j] = sumw;
                let (s, m) = make_qkx3_quants(
                    nmax,
                    xs,
                    &weights,
                    &mut l[32 * j..32 * j + 32],
                    -0.9,
                    0.05,
                    36,
                );
                scales[j] = s;
                mins[j] = m;
            }
            let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
            let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
            if nmax == 31 {
                // only the Q5_K version clamps again
                for j in 0..8 {
                    ls[j] = ls[j].min(63);
                    lm[j] = lm[j].min(63);
                }
            }
            pack_scales_k4(&ls, &lm, &mut y[4..16]);
            write_f16(y, 0, d_block);
            write_f16(y, 2, m_block);
        }
    }
    let dd = read_f16(y, 0);
    let dmin = read_f16(y, 2);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &y[4..16]);
        let d = dd * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for i in 0..32 {
            l[32 * j + i] = nearest_int((xb[32 * j + i] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

compiled_for_avx2! {
    /// Q4_K: without imatrix `quantize_row_q4_K_ref` (`make_qkx2_quants(32, 15, .., -1, 0.1, 20)`
    /// with weights `sqrt(Σx²/32) + |x|`, scales by max/63); with one `quantize_row_q4_K_impl`
    /// (weights `qw·sqrt(σ² + x²)`, σ² = 2Σx²/256, `make_qkx3_quants` + `make_qp_quants`).
    pub(crate) fn quantize_q4_k => quantize_q4_k_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8])
}

#[inline(always)]
fn quantize_q4_k_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    let mut l = [0u8; QK_K];
    for (ibl, (xb, y)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(144))
        .enumerate()
    {
        let qw = imatrix.map(|q| &q[QK_K * ibl..QK_K * (ibl + 1)]);
        quantize_k4_block(15, xb, qw, y, &mut l);
        let qs = &mut y[16..144];
        for c in 0..4 {
            for i in 0..32 {
                qs[32 * c + i] = l[64 * c + i] | (l[64 * c + i + 32] << 4);
            }
        }
    }
}

compiled_for_avx2! {
    /// Q5_K: as Q4_K with `nmax = 31` (ref path: `rmin = -0.5`, 16 steps); the 5th bit of
    /// element `64c + i` (+32) goes to bit `2c` (`2c+1`) of `qh[i]`.
    pub(crate) fn quantize_q5_k => quantize_q5_k_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8])
}

#[inline(always)]
fn quantize_q5_k_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    let mut l = [0u8; QK_K];
    for (ibl, (xb, y)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(176))
        .enumerate()
    {
        let qw = imatrix.map(|q| &q[QK_K * ibl..QK_K * (ibl + 1)]);
        quantize_k4_block(31, xb, qw, y, &mut l);
        let (qh, ql) = y[16..176].split_at_mut(32);
        qh.fill(0);
        // Levels are at most 31: bit 4 is the high bit, the low nibble the rest (no
        // branches, so the loop vectorises).
        for c in 0..4 {
            for i in 0..32 {
                let (l1, l2) = (l[64 * c + i], l[64 * c + i + 32]);
                qh[i] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1));
                ql[32 * c + i] = (l1 & 0x0f) | ((l2 & 0x0f) << 4);
            }
        }
    }
}

pub(crate) fn dequantize_q4_k(b: &[u8], out: &mut [f32]) {
    for (y, ob) in b.chunks_exact(144).zip(out.chunks_exact_mut(QK_K)) {
        let d = read_f16(y, 0);
        let min = read_f16(y, 2);
        for c in 0..4 {
            let (s1, m1) = scale_min_k4(2 * c, &y[4..16]);
            let (s2, m2) = scale_min_k4(2 * c + 1, &y[4..16]);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            let q = &y[16 + 32 * c..48 + 32 * c];
            for i in 0..32 {
                ob[64 * c + i] = d1 * (q[i] & 0x0f) as f32 - m1;
                ob[64 * c + 32 + i] = d2 * (q[i] >> 4) as f32 - m2;
            }
        }
    }
}

pub(crate) fn dequantize_q5_k(b: &[u8], out: &mut [f32]) {
    for (y, ob) in b.chunks_exact(176).zip(out.chunks_exact_mut(QK_K)) {
        let d = read_f16(y, 0);
        let min = read_f16(y, 2);
        let qh = &y[16..48];
        for c in 0..4 {
            let (s1, m1) = scale_min_k4(2 * c, &y[4..16]);
            let (s2, m2) = scale_min_k4(2 * c + 1, &y[4..16]);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            let ql = &y[48 + 32 * c..80 + 32 * c];
            for i in 0..32 {
                let h1 = if qh[i] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[i] & u2 != 0 { 16 } else { 0 };
                ob[64 * c + i] = d1 * ((ql[i] & 0x0f) + h1) as f32 - m1;
                ob[64 * c + 32 + i] = d2 * ((ql[i] >> 4) + h2) as f32 - m2;
            }
        }
    }
}

// ---------------------------------------------------------------- Q6_K

compiled_for_avx2! {
    /// Q6_K (`quantize_row_q6_K_ref` / `_impl`): `make_qx_quants(16, 32, .., rmse_type 1)` per
    /// 16-block, weighted by the raw imatrix or by x²; int8 block scales = nearest(−128/max_scale·s).
    pub(crate) fn quantize_q6_k => quantize_q6_k_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8])
}

#[inline(always)]
fn quantize_q6_k_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    for (ibl, (xb, y)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(210))
        .enumerate()
    {
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..16 {
            let qw = imatrix.map(|q| &q[QK_K * ibl + 16 * ib..QK_K * ibl + 16 * ib + 16]);
            let s = make_qx_quants_ggml(
                32,
                &xb[16 * ib..16 * ib + 16],
                &mut l[16 * ib..16 * ib + 16],
                qw,
            );
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        y.fill(0);
        if max_abs_scale < GROUP_MAX_EPS {
            continue;
        }
        let iscale = -128.0 / max_scale;
        let dh = f32_to_f16(1.0 / iscale);
        y[208..210].copy_from_slice(&dh.to_le_bytes());
        for ib in 0..16 {
            y[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as u8;
        }
        let dd = f16_to_f32(dh);
        for j in 0..16 {
            let d = dd * (y[192 + j] as i8) as f32;
            if d == 0.0 {
                continue;
            }
            for i in 0..16 {
                let q = nearest_int(xb[16 * j + i] / d).clamp(-32, 31);
                l[16 * j + i] = (q + 32) as i8;
            }
        }
        let (ql, qh) = y[..192].split_at_mut(128);
        for h in 0..2 {
            let j = 128 * h;
            for i in 0..32 {
                let q = |k: usize| l[j + i + 32 * k] as u8;
                ql[64 * h + i] = (q(0) & 0x0f) | ((q(2) & 0x0f) << 4);
                ql[64 * h + i + 32] = (q(1) & 0x0f) | ((q(3) & 0x0f) << 4);
                qh[32 * h + i] =
                    (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
            }
        }
    }
}

pub(crate) fn dequantize_q6_k(b: &[u8], out: &mut [f32]) {
    for (y, ob) in b.chunks_exact(210).zip(out.chunks_exact_mut(QK_K)) {
        let d = read_f16(y, 208);
        for h in 0..2 {
            let ql = &y[64 * h..64 * h + 64];
            let qh = &y[128 + 32 * h..160 + 32 * h];
            let sc = &y[192 + 8 * h..200 + 8 * h];
            let o = &mut ob[128 * h..128 * h + 128];
            for i in 0..32 {
                let is = i / 16;
                let q1 = ((ql[i] & 0x0f) | ((qh[i] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[i + 32] & 0x0f) | (((qh[i] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) as i32 - 32;
                let s = |k: usize| (sc[is + k] as i8) as f32;
                o[i] = d * s(0) * q1 as f32;
                o[i + 32] = d * s(2) * q2 as f32;
                o[i + 64] = d * s(4) * q3 as f32;
                o[i + 96] = d * s(6) * q4 as f32;
            }
        }
    }
}
