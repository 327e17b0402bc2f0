//! Companion types: the non-IQK formats that ik_llama.cpp's quantization mixes put next to
//! the IQK types (Q8_0, Q5_0, Q6_0, IQ4_NL, Q2_K, Q4_K, Q5_K, Q6_K, IQ5_K, IQ6_K).
//!
//! Each quantizer reproduces, byte for byte, what ik_llama.cpp's `ggml_quantize_chunk`
//! writes for that type (ggml built without FMA contraction), with and without an imatrix:
//!
//! | type   | no imatrix                         | with imatrix                                   |
//! |--------|------------------------------------|------------------------------------------------|
//! | Q8_0   | `quantize_row_q8_0_ref`            | same (the imatrix is ignored)                  |
//! | Q5_0   | `quantize_row_q5_0_ref`            | `quantize_row_q5_0_impl` (`make_qx_quants`)    |
//! | Q6_0   | `quantize_row_q6_0_impl`, w = x²   | same, w = qw·sqrt(σ² + x²)                     |
//! | IQ4_NL | `quantize_row_iq4_nl_impl`, w = x² | same, w = qw·sqrt(σ² + x²)                     |
//! | Q2_K   | `quantize_row_q2_K_ref` (TriNet)   | `quantize_row_q2_K_impl`                       |
//! | Q4_K   | `quantize_row_q4_K_ref`            | `quantize_row_q4_K_impl`                       |
//! | Q5_K   | `quantize_row_q5_K_ref`            | `quantize_row_q5_K_impl`                       |
//! | Q6_K   | `quantize_row_q6_K_ref`            | `quantize_row_q6_K_impl` (raw imatrix weights) |
//! | IQ5_K  | `quantize_iq5_k`                   | same, imatrix sanitised per 16 columns         |
//! | IQ6_K  | `quantize_iq6_k`                   | same, imatrix sanitised per 16 columns         |
//!
//! Dequantization follows the CPU `to_float` of each type; IQ6_K's evaluates a cubic
//! polynomial rather than its value table.
//!
//! Q2_K without an imatrix is the one type whose output depends on more than the row: ik
//! tests the whole `ggml_quantize_chunk` input for ternary weights. [`quantize_row`]
//! applies that test to the single row; [`quantize_chunk`] to all rows it is given, as
//! one `ggml_quantize_chunk` call does.
//!
//! Zero imatrix weights can make the Q2_K/Q4_K/Q5_K super-block fit (`make_qp_quants`)
//! divide 0 by 0: when every sub-block with a non-zero scale (or min) has all-zero
//! weights, e.g. an imatrix that is zero over a whole 256-column super-block. ik then
//! stores a NaN d or dmin (fp16 0xFE00) for Q2_K and Q5_K, and aborts for Q4_K; this
//! module stores the NaN for all three, as ik's bytes. `ops::quantize` never hands such
//! a block out: it quantizes it again without the imatrix.
//!
//! Re-implemented from ik_llama.cpp (<https://github.com/ikawrakow/ik_llama.cpp>), MIT
//! License, Copyright (c) 2023-2024 The ggml authors, (c) 2024-2025 The ik_llama.cpp
//! authors / Iwan Kawrakow. The value tables are ggml-common.h's.

// The searches index several parallel arrays by position, as the C they reproduce does;
// iterator chains would obscure the correspondence.
#![allow(clippy::needless_range_loop)]

use crate::registry::{TypeInfo, TYPES};

mod iqk;
pub(crate) use iqk::{best_index_iq5nl, iq5nl_block_scale, iq5nl_f32};
mod kquants;
mod legacy;
mod search;
mod util;

/// One of the companion quant types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Companion {
    /// 8.5 bpw: fp16 scale + 32 int8.
    Q8_0,
    /// 5.5 bpw: fp16 scale + 32 5-bit values.
    Q5_0,
    /// 6.5 bpw: fp16 scale + 32 6-bit values (ik only).
    Q6_0,
    /// 4.5 bpw: fp16 scale + 32 4-bit indices into a non-linear table.
    Iq4Nl,
    /// 2.625 bpw: 16 × 16 2-bit values with 4-bit scales and mins.
    Q2K,
    /// 4.5 bpw: 8 × 32 4-bit values with 6-bit scales and mins.
    Q4K,
    /// 5.5 bpw: 8 × 32 5-bit values with 6-bit scales and mins.
    Q5K,
    /// 6.5625 bpw: 16 × 16 6-bit values with int8 scales.
    Q6K,
    /// 5.5 bpw: 16 × 16 5-bit non-linear indices, 6-bit scales, shifted-table bits.
    Iq5K,
    /// 6.625 bpw: 16 × 16 6-bit non-linear indices, int8 scales, shifted-table bits.
    Iq6K,
}

impl Companion {
    /// All companion types, in a fixed order.
    pub const ALL: [Companion; 10] = [
        Companion::Q8_0,
        Companion::Q5_0,
        Companion::Q6_0,
        Companion::Iq4Nl,
        Companion::Q2K,
        Companion::Q4K,
        Companion::Q5K,
        Companion::Q6K,
        Companion::Iq5K,
        Companion::Iq6K,
    ];

    /// The registry's facts about this type (ids, sizes): written there only, found by name.
    pub fn info(self) -> &'static TypeInfo {
        let name = self.name();
        TYPES
            .iter()
            .find(|t| t.name == name)
            .expect("every companion type is registered")
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        self.info().block_size
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.info().type_size
    }

    /// Bytes of a row of `n` elements (`n` a multiple of [`Self::block_size`]); no row prefix.
    pub fn row_size(self, n: usize) -> usize {
        n / self.block_size() * self.type_size()
    }

    /// ggml's type name (`"q8_0"`, `"q6_K"`, `"iq5_k"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Companion::Q8_0 => "q8_0",
            Companion::Q5_0 => "q5_0",
            Companion::Q6_0 => "q6_0",
            Companion::Iq4Nl => "iq4_nl",
            Companion::Q2K => "q2_K",
            Companion::Q4K => "q4_K",
            Companion::Q5K => "q5_K",
            Companion::Q6K => "q6_K",
            Companion::Iq5K => "iq5_k",
            Companion::Iq6K => "iq6_k",
        }
    }
}

/// Quantize one row. `x.len()` is a multiple of the block size, `out.len()` is the row
/// size, `imatrix` (if any) has `x.len()` entries. Inputs are assumed finite.
pub fn quantize_row(kind: Companion, x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    debug_assert_eq!(x.len() % kind.block_size(), 0);
    debug_assert_eq!(out.len(), kind.row_size(x.len()));
    debug_assert!(imatrix.is_none_or(|q| q.len() == x.len()));
    match kind {
        Companion::Q8_0 => legacy::quantize_q8_0(x, out),
        Companion::Q5_0 => legacy::quantize_q5_0(x, imatrix, out),
        Companion::Q6_0 => legacy::quantize_q6_0(x, imatrix, out),
        Companion::Iq4Nl => legacy::quantize_iq4_nl(x, imatrix, out),
        Companion::Q2K => match imatrix {
            None => kquants::quantize_q2_k_ref(x, out),
            Some(q) => kquants::quantize_q2_k_impl(x, q, out),
        },
        Companion::Q4K => kquants::quantize_q4_k(x, imatrix, out),
        Companion::Q5K => kquants::quantize_q5_k(x, imatrix, out),
        Companion::Q6K => kquants::quantize_q6_k(x, imatrix, out),
        Companion::Iq5K => iqk::quantize_iq5_k(x, imatrix, out),
        Companion::Iq6K => iqk::quantize_iq6_k(x, imatrix, out),
    }
}

/// Quantize `x.len() / n_per_row` rows the way one `ggml_quantize_chunk` call over them
/// does. Identical to calling [`quantize_row`] per row except for Q2_K without imatrix,
/// whose ternary-model test then spans all the rows (ik's `llama-quantize` calls it on
/// chunks of `ceil(16384 / n_per_row)` rows when it runs on two or more threads, on the
/// whole matrix when single-threaded).
pub fn quantize_chunk(
    kind: Companion,
    x: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    out: &mut [u8],
) {
    let row_size = kind.row_size(n_per_row);
    debug_assert_eq!(x.len() % n_per_row, 0);
    debug_assert_eq!(out.len(), x.len() / n_per_row * row_size);
    if kind == Companion::Q2K && imatrix.is_none() {
        kquants::quantize_q2_k_ref(x, out);
        return;
    }
    for (xr, yr) in x
        .chunks_exact(n_per_row)
        .zip(out.chunks_exact_mut(row_size))
    {
        quantize_row(kind, xr, imatrix, yr);
    }
}

/// Dequantize one row: `bytes.len()` is a multiple of the type size and
/// `out.len() == bytes.len() / type_size * block_size`.
pub fn dequantize_row(kind: Companion, bytes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(bytes.len() % kind.type_size(), 0);
    debug_assert_eq!(
        out.len(),
        bytes.len() / kind.type_size() * kind.block_size()
    );
    match kind {
        Companion::Q8_0 => legacy::dequantize_q8_0(bytes, out),
        Companion::Q5_0 => legacy::dequantize_q5_0(bytes, out),
        Companion::Q6_0 => legacy::dequantize_q6_0(bytes, out),
        Companion::Iq4Nl => legacy::dequantize_iq4_nl(bytes, out),
        Companion::Q2K => kquants::dequantize_q2_k(bytes, out),
        Companion::Q4K => kquants::dequantize_q4_k(bytes, out),
        Companion::Q5K => kquants::dequantize_q5_k(bytes, out),
        Companion::Q6K => kquants::dequantize_q6_k(bytes, out),
        Companion::Iq5K => iqk::dequantize_iq5_k(bytes, out),
        Companion::Iq6K => iqk::dequantize_iq6_k(bytes, out),
    }
}
