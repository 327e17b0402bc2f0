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

use super::search::{make_qx_quants, GROUP_MAX_EPS};
use super::util::{build_nl_index, c_trunc_i32, read_f16, resolve_nl, write_f16};
use crate::iqk::common::Weighting;
use crate::iqk::fit::fit_many_plus;

const QK: usize = 32;

// ---------------------------------------------------------------- Q8_0

/// `quantize_row_q8_0_ref` (ik ignores the imatrix for Q8_0): d = amax/127,
/// q = roundf(x/d) (half away from zero).
pub(super) fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
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
            *q = c_trunc_i32((v * id).round()) as u8;
        }
    }
}

pub(super) fn dequantize_q8_0(b: &[u8], out: &mut [f32]) {
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
        qh |= (((a & 0x10) >> 4) as u32) << j;
        qh |= (((b & 0x10) >> 4) as u32) << (j + 16);
    }
    y[2..6].copy_from_slice(&qh.to_le_bytes());
}

/// Without imatrix `quantize_row_q5_0_ref` (d = max/-16, truncating `(int8_t)(x/d + 16.5)`);
/// with one `quantize_row_q5_0_impl`: weights `qw·sqrt(σ² + x²)`, σ² = Σx²/n over the row,
/// and `make_qx_quants(32, 16, ..)`.
pub(super) fn quantize_q5_0(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    let mut l = [0i8; QK];
    match imatrix {
        None => {
            for (xb, y) in x.chunks_exact(QK).zip(out.chunks_exact_mut(22)) {
                let (mut amax, mut max) = (0f32, 0f32);
                for &v in xb {
                    if amax < v.abs() {
                        amax = v.abs();
                        max = v;
                    }
                }
                let d = max / -16.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                write_f16(y, 0, d);
                for (lj, &v) in l.iter_mut().zip(xb) {
                    let t = c_trunc_i32(v * id + 16.5) as i8;
                    *lj = t.min(31);
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
                let d = make_qx_quants(16, xb, &mut l, Some(&weight));
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

pub(super) fn dequantize_q5_0(b: &[u8], out: &mut [f32]) {
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

/// `quantize_row_q6_0_impl` (ik's `quantize_q6_0` uses it with and without imatrix):
/// weights `qw·sqrt(σ² + x²)` or `x²`, then `make_qx_quants(32, 32, ..)`.
pub(super) fn quantize_q6_0(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
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
        let d = make_qx_quants(32, xb, &mut l, Some(&weight));
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

pub(super) fn dequantize_q6_0(b: &[u8], out: &mut [f32]) {
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
static IQ4NL_INDEX: [u8; 241] = build_nl_index::<16, 241>(&IQ4NL_VALUES);

/// ik's `best_index_iq4nl`: bucket by `(int)x`, ties resolved by f32 comparison.
#[inline]
fn best_index_iq4nl(x: f32) -> usize {
    let ix = c_trunc_i32(x).wrapping_sub(IQ4NL_VALUES[0] as i32);
    resolve_nl(&IQ4NL_INDEX, &IQ4NL_F, 16, 241, ix, x)
}

/// `quantize_iq4_nl` → `quantize_row_iq4_nl_impl(32, 32, .., ntry = 7)` per block:
/// weights `qw·sqrt(σ² + x²)` (σ² = 2Σx²/32 over the block) or `x²`, a scan of 15 + 15
/// inverse scales around ±127/max and ±113/max, then greedy single-index moves.
pub(super) fn quantize_iq4_nl(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    let v = &IQ4NL_F;
    let vi = |k: usize| IQ4NL_VALUES[k] as i32;
    let mut weight = [0f32; QK];
    let mut lb = [0u8; QK];
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
            let grid = &crate::tables::IQ4_GRIDS[0];
            fit_many_plus(grid, &ids, xb, &weight, &mut fits);
            let (sqx, sq2) = (fits[0][0], fits[0][1]);
            let mut d = sqx / sq2;
            let mut best = d * sqx;
            let (mut best_sqx, mut best_sq2, mut best_id) = (sqx, sq2, ids[0]);
            for (c, &id) in ids.iter().enumerate().skip(1) {
                let (sqx, sq2) = (fits[c][0], fits[c][1]);
                if sq2 > 0.0 && sqx * sqx > best * sq2 {
                    d = sqx / sq2;
                    best = d * sqx;
                    best_sqx = sqx;
                    best_sq2 = sq2;
                    best_id = id;
                }
            }
            for j in 0..QK {
                lb[j] = best_index_iq4nl(best_id * xb[j]) as u8;
            }
            let (mut sqx, mut sq2) = (best_sqx, best_sq2);
            for _ in 0..32 * QK {
                let mut min_step = f32::INFINITY;
                let mut pick: Option<(usize, i32)> = None;
                for j in 0..QK {
                    let w = weight[j];
                    let k = lb[j] as usize;
                    let g = d * w * (xb[j] - d * v[k]);
                    if g > 0.0 && k < 15 {
                        let step = (vi(k + 1) - vi(k)) as f32 / g;
                        if step < min_step {
                            min_step = step;
                            pick = Some((j, 1));
                        }
                    } else if g < 0.0 && k > 0 {
                        let step = (vi(k - 1) - vi(k)) as f32 / g;
                        if step < min_step {
                            min_step = step;
                            pick = Some((j, -1));
                        }
                    }
                }
                let Some((j, dir)) = pick else { break };
                let w = weight[j];
                let k = lb[j] as usize;
                let kn = (k as i32 + dir) as usize;
                let new_sqx = sqx + w * xb[j] * (vi(kn) - vi(k)) as f32;
                let new_sq2 = sq2 + w * (vi(kn) * vi(kn) - vi(k) * vi(k)) as f32;
                if new_sq2 > 0.0 && new_sqx * new_sqx > best * new_sq2 {
                    sqx = new_sqx;
                    sq2 = new_sq2;
                    d = sqx / sq2;
                    best = d * sqx;
                    lb[j] = kn as u8;
                } else {
                    break;
                }
            }
            d
        };
        write_f16(y, 0, scale);
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        for j in 0..QK {
            lb[j] = best_index_iq4nl(id * xb[j]) as u8;
        }
        for j in 0..16 {
            y[2 + j] = lb[j] | (lb[j + 16] << 4);
        }
    }
}

pub(super) fn dequantize_iq4_nl(b: &[u8], out: &mut [f32]) {
    for (y, ob) in b.chunks_exact(18).zip(out.chunks_exact_mut(QK)) {
        let d = read_f16(y, 0);
        for j in 0..16 {
            ob[j] = d * IQ4NL_F[(y[2 + j] & 0x0f) as usize];
            ob[j + 16] = d * IQ4NL_F[(y[2 + j] >> 4) as usize];
        }
    }
}
