//! IQ5_KS: 5.25 bpw plus an f32 scale per row. 168-byte super-blocks of 256: 8 scale bytes (as
//! IQ4_KS: bit 0 shifted-table flag, `(byte & 0xfe) - 127` the odd 7-bit scale), 128 bytes of
//! low index nibbles (32-block ib: nibble ib%2 of `qs[32(ib/2) + j]`), 32 bytes of fifth bits
//! (bit ib of `qh[j]`). Values from `iq5nl_values` (base row, shifted row = base + 2).
//!
//! Re-implemented from ik_llama.cpp's `quantize_row_iq5_ks_impl` (`iqk_quantize.cpp`,
//! <https://github.com/ikawrakow/ik_llama.cpp>, MIT License, (c) 2024-2025 Iwan Kawrakow),
//! operation for operation: the bytes must be identical.

use super::common::quantize_ks_row_f32_scale;
use crate::companion::{iq5nl_block_scale, iq5nl_f32, iq5nl_indices};
use crate::cpu::compiled_for_avx2;

/// Bytes of one block (the layout module's).
pub const BLOCK_BYTES: usize = crate::simd::DotType::Iq5Ks.block_bytes();
/// Bytes of the row scale in front of the blocks (the layout module's).
pub const ROW_META: usize = crate::simd::DotType::Iq5Ks.row_meta();
const SUB: usize = 32;
const QS: usize = 8;
const QH: usize = 136;

compiled_for_avx2! {
    pub fn quantize_row => quantize_row_body(x: &[f32], qw: Option<&[f32]>, out: &mut [u8])
}

#[inline(always)]
fn quantize_row_body(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    // Read once per row, not per block.
    let path = crate::cpu::quantize_path();
    quantize_ks_row_f32_scale(
        x,
        qw,
        out,
        BLOCK_BYTES,
        // IQ5_K's candidate search (ntry 5, both rows, both signs), on 32 values.
        |xb, weight, max| iq5nl_block_scale(path, xb, weight, max),
        |y, ib, xb, weight, l, idl, sumqx, sumq2| {
            let shifted = y[ib] & 1 != 0;
            let values = &iq5nl_f32()[32 * shifted as usize..][..32];
            let mut indices = [0u8; SUB];
            iq5nl_indices(path, shifted, idl, xb, &mut indices);
            for j in 0..SUB {
                let idx = indices[j] as usize;
                y[QS + SUB * (ib / 2) + j] |= ((idx & 0xf) << (4 * (ib % 2))) as u8;
                y[QH + j] |= ((idx >> 4) << ib) as u8;
                let w = weight[j];
                let q = (values[idx] as i32 * l) as f32;
                *sumqx += w * q * xb[j];
                *sumq2 += w * q * q;
            }
        },
    )
}
