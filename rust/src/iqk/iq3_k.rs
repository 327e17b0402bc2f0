//! IQ3_K: 3.4375 bpw. 110-byte super-blocks of 256: fp16 d, u16 shifted-grid flags, u16 scale
//! signs, 16 4-bit scale magnitudes (odd scales ±1..±31), 2-bit low index planes, 1-bit high
//! plane. Sub-blocks of 16.

use super::common::{high1_position, low2_position, signed_max, write_u16, NlSearch, Weighting};
use super::fit::nearest_indices;
use crate::cpu::compiled_for_avx2;
use crate::numeric::{f32_to_f16, nearest_int};
use crate::simd::QK as QK_K;
use crate::tables::IQ3_GRIDS;

/// Bytes of one block (the layout module's).
pub const BLOCK_BYTES: usize = crate::simd::DotType::Iq3K.block_bytes();
/// ik's factor on the stored d (as IQ2_K's, smaller).
pub const SCALE_FACTOR: f32 = 1.01;
const SUB: usize = 16;
const NSUB: usize = QK_K / SUB;
const SCALES_L: usize = 6;
const QS: usize = 14;
const QH: usize = 78;
const WEIGHTING: Weighting = Weighting::Broad;
const SEARCH: NlSearch = NlSearch {
    grids: &IQ3_GRIDS,
    ntry: 3,
    step: 2,
    guard_first: true,
};

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
        let mut max_abs_scale = 0.0f32;
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
            let (mut d, shifted) = SEARCH.run(xb, &weight, max);
            if d == 0.0 {
                continue;
            }
            // Refit the scale to the indices it selects on the chosen grid half.
            let grid = &IQ3_GRIDS[(shifted) as usize];
            let values = grid.values;
            let id = 1.0 / d;
            let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
            let mut indices = [0u8; SUB];
            nearest_indices(grid, id, xb, &mut indices);
            for ((&v, &w), &idx) in xb.iter().zip(&weight).zip(&indices) {
                let q = values[idx as usize] as f32;
                sumqx += w * q * v;
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 {
                d = sumqx / sumq2;
            }
            scales[ib] = d;
            extra |= (shifted as u16) << ib;
            if max_abs_scale < d.abs() {
                max_abs_scale = d.abs();
            }
        }
        if max_abs_scale == 0.0 {
            continue;
        }
        let d = max_abs_scale / 31.0;
        write_u16(y, 2, extra);
        let id = 1.0 / d;
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        let mut signs = 0u16;
        for ib in 0..NSUB {
            let magnitude = nearest_int(0.5 * (id * scales[ib].abs() - 1.0)).clamp(0, 15);
            y[SCALES_L + ib / 2] |= (magnitude as u8) << (4 * (ib % 2));
            let negative = scales[ib] < 0.0;
            signs |= (negative as u16) << ib;
            let ls = (2 * magnitude + 1) * if negative { -1 } else { 1 };
            let dl = d * ls as f32;
            if dl == 0.0 {
                continue;
            }
            let grid = &IQ3_GRIDS[(extra >> ib & 1 == 1) as usize];
            let values = grid.values;
            let xb = &xbl[SUB * ib..SUB * (ib + 1)];
            WEIGHTING.fill(
                sigma2,
                xb,
                qwbl.map(|w| &w[SUB * ib..SUB * (ib + 1)]),
                &mut weight,
            );
            let idl = 1.0 / dl;
            let mut indices = [0u8; SUB];
            nearest_indices(grid, idl, xb, &mut indices);
            for (j, ((&v, &w), &idx)) in xb.iter().zip(&weight).zip(&indices).enumerate() {
                let idx = idx as usize;
                let i = SUB * ib + j;
                let (byte, shift) = low2_position(i);
                y[QS + byte] |= ((idx & 3) as u8) << shift;
                let (byte, shift) = high1_position(i);
                y[QH + byte] |= ((idx >> 2) as u8) << shift;
                let q = (values[idx] as i32 * ls) as f32;
                sumqx += w * q * v;
                sumq2 += w * q * q;
            }
        }
        write_u16(y, 4, signs);
        let d_final = if sumq2 > 0.0 { sumqx / sumq2 } else { d };
        write_u16(y, 0, f32_to_f16(SCALE_FACTOR * d_final));
    }
}
