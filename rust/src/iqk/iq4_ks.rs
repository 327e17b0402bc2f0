//! IQ4_KS: 4.25 bpw plus an f32 scale per row. 136-byte super-blocks of 256: 8 scale bytes
//! (bit 0 shifted-grid flag, `(byte & 0xfe) - 127` the odd 7-bit scale), then 16 bytes of
//! index nibbles per 32-block (low nibbles first 16 elements, high nibbles the next 16).

use super::common::{signed_max, NlSearch, Weighting};
use super::fit::nearest_indices;
use crate::numeric::nearest_int;
use crate::simd::QK as QK_K;
use crate::tables::IQ4_GRIDS;

/// Bytes of one block (the layout module's).
pub const BLOCK_BYTES: usize = crate::simd::DotType::Iq4Ks.block_bytes();
/// Bytes of the row scale in front of the blocks (the layout module's).
pub const ROW_META: usize = crate::simd::DotType::Iq4Ks.row_meta();
const SUB: usize = 32;
const NSUB: usize = QK_K / SUB;
const QS: usize = 8;
const WEIGHTING: Weighting = Weighting::Narrow;
const SEARCH: NlSearch = NlSearch {
    grids: &IQ4_GRIDS,
    ntry: 7,
    step: 1,
    guard_first: false,
};

pub fn quantize_row(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    out.fill(0);
    let (meta, blocks) = out.split_at_mut(ROW_META);
    let mut scales = vec![0.0f32; x.len() / SUB];
    let mut weight = [0.0f32; SUB];
    let mut amax_scale = 0.0f32;
    for (ibl, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(blocks.chunks_exact_mut(BLOCK_BYTES))
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
            let (d, shifted) = SEARCH.run(xb, &weight, max);
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
        .zip(blocks.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let sigma2 = WEIGHTING.sigma2(xbl);
        for ib in 0..NSUB {
            let grid = &IQ4_GRIDS[(y[ib] & 1 == 1) as usize];
            let values = grid.values;
            let code = nearest_int(0.5 * (id * scales[ibl * NSUB + ib] + 127.0)).clamp(0, 127) << 1;
            y[ib] |= code as u8;
            let l = code - 127;
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let range = SUB * ib..SUB * (ib + 1);
            let xb = &xbl[range.clone()];
            WEIGHTING.fill(sigma2, xb, qw.map(|w| &w[ibl * QK_K..][range]), &mut weight);
            let qs = &mut y[QS + 16 * ib..QS + 16 * (ib + 1)];
            let mut indices = [0u8; SUB];
            nearest_indices(grid, idl, xb, &mut indices);
            for j in 0..SUB / 2 {
                let (x1, x2) = (xb[j], xb[j + SUB / 2]);
                let (i1, i2) = (indices[j] as usize, indices[j + SUB / 2] as usize);
                qs[j] = i1 as u8 | (i2 as u8) << 4;
                let (w1, w2) = (weight[j], weight[j + SUB / 2]);
                let q1 = (values[i1] as i32 * l) as f32;
                let q2 = (values[i2] as i32 * l) as f32;
                sumqx += w1 * q1 * x1 + w2 * q2 * x2;
                sumq2 += w1 * q1 * q1 + w2 * q2 * q2;
            }
        }
    }
    if sumq2 > 0.0 {
        meta.copy_from_slice(&(sumqx / sumq2).to_le_bytes());
    }
}
