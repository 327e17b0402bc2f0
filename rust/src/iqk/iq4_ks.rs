//! IQ4_KS: 4.25 bpw plus an f32 scale per row. 136-byte super-blocks of 256: 8 scale bytes
//! (bit 0 shifted-grid flag, `(byte & 0xfe) - 127` the odd 7-bit scale), then 16 bytes of
//! index nibbles per 32-block (low nibbles first 16 elements, high nibbles the next 16).

use super::common::{quantize_ks_row_f32_scale, NlSearch};
use super::fit::nearest_indices;
use crate::cpu::compiled_for_avx2;
use crate::tables::IQ4_GRIDS;

/// Bytes of one block (the layout module's).
pub const BLOCK_BYTES: usize = crate::simd::DotType::Iq4Ks.block_bytes();
/// Bytes of the row scale in front of the blocks (the layout module's).
pub const ROW_META: usize = crate::simd::DotType::Iq4Ks.row_meta();
const SUB: usize = 32;
const QS: usize = 8;
const SEARCH: NlSearch = NlSearch {
    grids: &IQ4_GRIDS,
    ntry: 7,
    step: 1,
    guard_first: false,
};

compiled_for_avx2! {
    pub fn quantize_row => quantize_row_body(x: &[f32], qw: Option<&[f32]>, out: &mut [u8])
}

#[inline(always)]
fn quantize_row_body(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    quantize_ks_row_f32_scale(
        x,
        qw,
        out,
        BLOCK_BYTES,
        |xb, weight, max| SEARCH.run(xb, weight, max),
        |y, ib, xb, weight, l, idl, sumqx, sumq2| {
            let grid = &IQ4_GRIDS[(y[ib] & 1 == 1) as usize];
            let values = grid.values;
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
                *sumqx += w1 * q1 * x1 + w2 * q2 * x2;
                *sumq2 += w1 * q1 * q1 + w2 * q2 * q2;
            }
        },
    )
}
