//! IQ3_KS: 3.1875 bpw plus an fp16 scale per row. 102-byte super-blocks of 256: u16 `extra`
//! (bits 0-7 bit 4 of the scale codes, bits 8-15 shifted-grid flags: the reverse of IQ2_KS),
//! 4 bytes of scale nibbles (block ib in byte ib%4, nibble ib/4), 2-bit low index planes,
//! 1-bit high plane. Sub-blocks of 32, 5-bit scales (offset 16).

use super::common::{
    high1_position, low2_position, rd_u16, signed_max, write_u16, NlSearch, Weighting,
};
use super::fit::nearest_indices;
use crate::cpu::compiled_for_avx2;
use crate::numeric::{f32_to_f16, nearest_int};
use crate::simd::QK as QK_K;
use crate::tables::IQ3_GRIDS;

/// Bytes of one block (the layout module's).
pub const BLOCK_BYTES: usize = crate::simd::DotType::Iq3Ks.block_bytes();
/// Bytes of the row scale in front of the blocks (the layout module's).
pub const ROW_META: usize = crate::simd::DotType::Iq3Ks.row_meta();
const SUB: usize = 32;
const NSUB: usize = QK_K / SUB;
const SCALES: usize = 2;
const QS: usize = 6;
const QH: usize = 70;
const WEIGHTING: Weighting = Weighting::Narrow;
const SEARCH: NlSearch = NlSearch {
    grids: &IQ3_GRIDS,
    ntry: 5,
    step: 1,
    guard_first: true,
};

compiled_for_avx2! {
    pub fn quantize_row => quantize_row_body(x: &[f32], qw: Option<&[f32]>, out: &mut [u8])
}

#[inline(always)]
fn quantize_row_body(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    out.fill(0);
    let (meta, blocks) = out.split_at_mut(ROW_META);
    let mut scales = vec![0.0f32; x.len() / SUB];
    let mut weight = [0.0f32; SUB];
    let (mut amax_scale, mut max_scale) = (0.0f32, 0.0f32);
    for (ibl, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(blocks.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let sigma2 = WEIGHTING.sigma2(xbl);
        let mut extra = 0u16;
        for ib in 0..NSUB {
            let range = SUB * ib..SUB * (ib + 1);
            let xb = &xbl[range.clone()];
            let qwb = qw.map(|w| &w[ibl * QK_K..][range]);
            WEIGHTING.fill(sigma2, xb, qwb, &mut weight);
            let (max, amax) = signed_max(xb);
            if amax < 1e-16 {
                continue;
            }
            let (d, shifted) = SEARCH.run(xb, &weight, max);
            extra |= (shifted as u16) << (8 + ib);
            scales[ibl * NSUB + ib] = d;
            if d.abs() > amax_scale {
                amax_scale = d.abs();
                max_scale = d;
            }
        }
        write_u16(y, 0, extra);
    }
    // Negative so that the largest scale maps to code -16; an all-zero row stores -0 (0x8000).
    let d = -max_scale / 16.0;
    write_u16(meta, 0, f32_to_f16(d));
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
            let mut extra = rd_u16(y, 0);
            let grid = &IQ3_GRIDS[(extra >> (8 + ib) & 1 == 1) as usize];
            let values = grid.values;
            let l = nearest_int(id * scales[ibl * NSUB + ib]).clamp(-16, 15);
            let code = (l + 16) as u8;
            y[SCALES + ib % 4] |= (code & 0xf) << (4 * (ib / 4));
            extra |= ((code >> 4) as u16) << ib;
            write_u16(y, 0, extra);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let range = SUB * ib..SUB * (ib + 1);
            let xb = &xbl[range.clone()];
            WEIGHTING.fill(sigma2, xb, qw.map(|w| &w[ibl * QK_K..][range]), &mut weight);
            let mut indices = [0u8; SUB];
            nearest_indices(grid, idl, xb, &mut indices);
            for (j, ((&v, &w), &idx)) in xb.iter().zip(&weight).zip(&indices).enumerate() {
                let idx = idx as usize;
                let i = SUB * ib + j;
                let (byte, shift) = low2_position(i);
                y[QS + byte] |= ((idx & 3) as u8) << shift;
                let (byte, shift) = high1_position(i);
                y[QH + byte] |= ((idx >> 2) as u8) << shift;
                let q = (values[idx] as i32 * l) as f32;
                sumqx += w * q * v;
                sumq2 += w * q * q;
            }
        }
    }
    if sumq2 > 0.0 {
        write_u16(meta, 0, f32_to_f16(sumqx / sumq2));
    }
}
