//! IQ4_K: 4.5 bpw. 144-byte super-blocks of 256: fp16 d, u16 shifted-grid flags, 6-bit
//! sub-block scales (offset 32) split into 2 high bits and 4 low bits, 4-bit grid indices.
//! Sub-blocks of 16.

use super::common::{signed_max, write_u16, NlSearch, Weighting};
use super::fit::nearest_indices;
use crate::cpu::compiled_for_avx2;
use crate::numeric::{f32_to_f16, nearest_int};
use crate::simd::QK as QK_K;
use crate::tables::IQ4_GRIDS;

/// Bytes of one block (the layout module's).
pub const BLOCK_BYTES: usize = crate::simd::DotType::Iq4K.block_bytes();
const SUB: usize = 16;
const NSUB: usize = QK_K / SUB;
const SCALES_H: usize = 4;
const SCALES_L: usize = 8;
const QS: usize = 16;
const WEIGHTING: Weighting = Weighting::Narrow;
const SEARCH: NlSearch = NlSearch {
    grids: &IQ4_GRIDS,
    ntry: 7,
    step: 1,
    guard_first: false,
};

/// Element i's index nibble: byte `16·(i/32) + i%16`, low nibble for the first 16 of each 32.
#[inline(always)]
fn nibble_position(i: usize) -> (usize, u32) {
    (16 * (i / 32) + i % 16, if i % 32 < 16 { 0 } else { 4 })
}

compiled_for_avx2! {
    pub fn quantize_row => quantize_row_body(x: &[f32], qw: Option<&[f32]>, out: &mut [u8])
}

#[inline(always)]
fn quantize_row_body(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    for (ibl, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        y.fill(0);
        let qwbl = qw.map(|w| &w[ibl * QK_K..(ibl + 1) * QK_K]);
        let sigma2 = WEIGHTING.sigma2(xbl);
        let mut weight = [0.0f32; SUB];
        let mut scales = [0.0f32; NSUB];
        let mut extra = 0u16;
        let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
        for ib in 0..NSUB {
            let xb = &xbl[SUB * ib..SUB * (ib + 1)];
            WEIGHTING.fill(
                sigma2,
                xb,
                qwbl.map(|w| &w[SUB * ib..SUB * (ib + 1)]),
                &mut weight,
            );
            let (max, amax) = signed_max(xb);
            if amax < 1e-16 {
                continue;
            }
            let (d, shifted) = SEARCH.run(xb, &weight, max);
            extra |= (shifted as u16) << ib;
            scales[ib] = d;
            if d.abs() > amax_scale {
                amax_scale = d.abs();
                max_scale = d;
            }
        }
        // Negative so that the largest sub-block scale maps to code -32, using the full range.
        let d = -max_scale / 32.0;
        write_u16(y, 0, f32_to_f16(d));
        write_u16(y, 2, extra);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        for ib in 0..NSUB {
            let grid = &IQ4_GRIDS[(extra >> ib & 1 == 1) as usize];
            let values = grid.values;
            let l = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let xb = &xbl[SUB * ib..SUB * (ib + 1)];
            WEIGHTING.fill(
                sigma2,
                xb,
                qwbl.map(|w| &w[SUB * ib..SUB * (ib + 1)]),
                &mut weight,
            );
            let mut indices = [0u8; SUB];
            nearest_indices(grid, idl, xb, &mut indices);
            for (j, ((&v, &w), &idx)) in xb.iter().zip(&weight).zip(&indices).enumerate() {
                let idx = idx as usize;
                let (byte, shift) = nibble_position(SUB * ib + j);
                y[QS + byte] |= (idx as u8) << shift;
                let q = (values[idx] as i32 * l) as f32;
                sumqx += w * q * v;
                sumq2 += w * q * q;
            }
            let code = (l + 32) as u8;
            y[SCALES_L + ib / 2] |= (code & 0xf) << (4 * (ib % 2));
            y[SCALES_H + ib / 4] |= (code >> 4) << (2 * (ib % 4));
        }
        if sumq2 > 0.0 {
            write_u16(y, 0, f32_to_f16(sumqx / sumq2));
        }
    }
}
