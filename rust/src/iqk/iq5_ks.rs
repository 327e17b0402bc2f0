//! IQ5_KS: 5.25 bpw plus an f32 scale per row. 168-byte super-blocks of 256: 8 scale bytes (as
//! IQ4_KS: bit 0 shifted-table flag, `(byte & 0xfe) - 127` the odd 7-bit scale), 128 bytes of
//! low index nibbles (32-block ib: nibble ib%2 of `qs[32(ib/2) + j]`), 32 bytes of fifth bits
//! (bit ib of `qh[j]`). Values from `iq5nl_values` (base row, shifted row = base + 2).
//!
//! Re-implemented from ik_llama.cpp's `quantize_row_iq5_ks_impl` (`iqk_quantize.cpp`,
//! <https://github.com/ikawrakow/ik_llama.cpp>, MIT License, (c) 2024-2025 Iwan Kawrakow),
//! operation for operation: the bytes must be identical.

use super::common::{signed_max, Weighting};
use crate::companion::{best_index_iq5nl, iq5nl_block_scale, iq5nl_f32};
use crate::numeric::nearest_int;
use crate::simd::QK as QK_K;

/// Bytes of one block (the layout module's).
pub const BLOCK_BYTES: usize = crate::simd::DotType::Iq5Ks.block_bytes();
/// Bytes of the row scale in front of the blocks (the layout module's).
pub const ROW_META: usize = crate::simd::DotType::Iq5Ks.row_meta();
const SUB: usize = 32;
const NSUB: usize = QK_K / SUB;
const QS: usize = 8;
const QH: usize = 136;
const WEIGHTING: Weighting = Weighting::Narrow;

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
            // IQ5_K's candidate search (ntry 5, both rows, both signs), on 32 values.
            let (d, shifted) = iq5nl_block_scale(xb, &weight, max);
            y[ib] = shifted as u8;
            scales[ibl * NSUB + ib] = d;
            amax_scale = amax_scale.max(d.abs());
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
            let values = &iq5nl_f32()[32 * (y[ib] & 1) as usize..][..32];
            let code = nearest_int(0.5 * (id * scales[ibl * NSUB + ib] + 127.0)).clamp(0, 127) << 1;
            y[ib] |= code as u8;
            let l = code - 127;
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let range = SUB * ib..SUB * (ib + 1);
            let xb = &xbl[range.clone()];
            WEIGHTING.fill(sigma2, xb, qw.map(|w| &w[ibl * QK_K..][range]), &mut weight);
            for j in 0..SUB {
                let idx = best_index_iq5nl(values, idl * xb[j]);
                y[QS + SUB * (ib / 2) + j] |= ((idx & 0xf) << (4 * (ib % 2))) as u8;
                y[QH + j] |= ((idx >> 4) << ib) as u8;
                let w = weight[j];
                let q = (values[idx] as i32 * l) as f32;
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
        }
    }
    if sumq2 > 0.0 {
        meta.copy_from_slice(&(sumqx / sumq2).to_le_bytes());
    }
}
