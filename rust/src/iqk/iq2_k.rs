//! IQ2_K: 2.375 bpw. 76-byte super-blocks of 256: fp16 d, u16 shifted-grid flags, 16 4-bit
//! sub-block scales (offset 8), 64 bytes of 2-bit grid indices. Sub-blocks of 16.

use super::common::{pack_iq2_block, signed_max, write_u16, PartitionSearch, Weighting};
use crate::cpu::compiled_for_avx2;
use crate::numeric::{f32_to_f16, make_qx_quants_iqk, nearest_int};
use crate::simd::QK as QK_K;
use crate::tables::{IQ2NL, IQ2_GRIDS};

/// Bytes of one block (the layout module's).
pub const BLOCK_BYTES: usize = crate::simd::DotType::Iq2K.block_bytes();
/// ik's factor on the stored d (ik_llama.cpp PR #81: it lowered perplexity).
pub const SCALE_FACTOR: f32 = 1.030;
const SUB: usize = 16;
const NSUB: usize = QK_K / SUB;
const SCALES: usize = 4;
const QS: usize = 12;
const WEIGHTING: Weighting = Weighting::Broad;

compiled_for_avx2! {
    pub fn quantize_row => quantize_row_body(x: &[f32], qw: Option<&[f32]>, out: &mut [u8])
}

#[inline(always)]
fn quantize_row_body(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let mut search = PartitionSearch::new(SUB, SUB, 0);
    for (ibl, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        y.fill(0);
        let qwbl = qw.map(|w| &w[ibl * QK_K..(ibl + 1) * QK_K]);
        let sigma2 = WEIGHTING.sigma2(xbl);
        let mut weight = [0.0f32; SUB];
        let (mut scales, mut sw) = ([0.0f32; NSUB], [0.0f32; NSUB]);
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
            for &w in &weight {
                sw[ib] += w;
            }
            if signed_max(xb).1 < 1e-16 {
                continue;
            }
            let (d, shifted) = search.run(xb, &weight, &IQ2NL);
            scales[ib] = d;
            extra |= (shifted as u16) << ib;
            if max_abs_scale < d.abs() {
                max_abs_scale = d.abs();
            }
        }
        if max_abs_scale == 0.0 {
            continue;
        }
        let mut levels = [0i8; NSUB];
        let d = make_qx_quants_iqk(8, &scales, &sw, &mut levels);
        if d == 0.0 {
            continue;
        }
        write_u16(y, 2, extra);
        let id = 1.0 / d;
        let mut sums = (0.0f32, 0.0f32);
        for ib in 0..NSUB {
            let ls = nearest_int(id * scales[ib]).clamp(-8, 7);
            y[SCALES + ib / 2] |= ((ls + 8) as u8) << (4 * (ib % 2));
            let dl = d * ls as f32;
            if dl == 0.0 {
                continue;
            }
            let grid = &IQ2_GRIDS[(extra >> ib & 1 == 1) as usize];
            let xb = &xbl[SUB * ib..SUB * (ib + 1)];
            WEIGHTING.fill(
                sigma2,
                xb,
                qwbl.map(|w| &w[SUB * ib..SUB * (ib + 1)]),
                &mut weight,
            );
            let qs = (&mut y[QS..], SUB * ib);
            pack_iq2_block(grid, (dl, ls), xb, &weight, qs, &mut sums);
        }
        let (sumqx, sumq2) = sums;
        let d_final = if sumq2 > 0.0 { sumqx / sumq2 } else { d };
        write_u16(y, 0, f32_to_f16(SCALE_FACTOR * d_final));
    }
}
