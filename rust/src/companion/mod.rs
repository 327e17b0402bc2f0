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
//! The registry's descriptors (`registry::TYPES`) point at these functions and say how each
//! uses an imatrix; the sanitising of IQ5_K/IQ6_K's is done there, as for the IQK types.
//!
//! Dequantization follows the CPU `to_float` of each type; IQ6_K's evaluates a cubic
//! polynomial rather than its value table.
//!
//! Q2_K without an imatrix is the one type whose output depends on more than the row: ik
//! tests the whole `ggml_quantize_chunk` input for ternary weights. `quantize_q2_k_ref`
//! applies that test to all the rows it is given, as one `ggml_quantize_chunk` call does.
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

mod iq5_iq6_k;
pub(crate) use iq5_iq6_k::{dequantize_iq5_k, dequantize_iq6_k, quantize_iq5_k, quantize_iq6_k};
pub(crate) use iq5_iq6_k::{iq5nl_block_scale, iq5nl_f32, iq5nl_indices};
pub(crate) use iq5_iq6_k::{IQ5K_BLOCK_BYTES, IQ6K_BLOCK_BYTES};
mod kquants;
pub(crate) use kquants::{dequantize_q2_k, dequantize_q4_k, dequantize_q5_k, dequantize_q6_k};
pub(crate) use kquants::{quantize_q2_k_impl, quantize_q2_k_ref};
pub(crate) use kquants::{quantize_q4_k, quantize_q5_k, quantize_q6_k};
mod legacy;
pub(crate) use legacy::{dequantize_iq4_nl, dequantize_q5_0, dequantize_q6_0, dequantize_q8_0};
pub(crate) use legacy::{quantize_iq4_nl, quantize_q5_0, quantize_q6_0, quantize_q8_0};
mod search;
mod util;
