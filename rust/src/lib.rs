//! iqk-rs: ik_llama.cpp's IQK low-bit weight formats (IQ2_K, IQ3_K, IQ4_K, IQ2_KS, IQ3_KS,
//! IQ4_KS), quantized bit-exactly as ik_llama.cpp does, with dequantization and dot products
//! against Q8_K activations.
//!
//! Layers, bottom up: [`simd`] (the dependency-free layout module with every IQK block
//! layout, and the dot products against Q8_K on every instruction set, chosen at run time),
//! [`numeric`] and [`tables`] (shared arithmetic and value grids), [`iqk`] (the IQK types'
//! quantizers), [`companion`] (the other types of ik's mixes), [`q8k`] (activations),
//! [`registry`] (one descriptor per type: ids, sizes, quantizer, dequantizer, imatrix
//! handling, kernel), [`widen`] (f16/bf16 inputs to f32), [`ops`] (validated, parallel
//! whole-tensor operations, reading every per-type fact from the registry). The Python
//! binding lives in `py` behind the `python` feature.

pub mod companion;
pub mod cpu;
pub mod error;
pub mod iqk;
pub mod numeric;
pub mod ops;
pub mod q8k;
pub mod registry;
pub mod simd;
pub mod tables;
pub mod widen;

#[cfg(test)]
mod testing;

#[cfg(feature = "python")]
mod py;

pub use error::{IqkError, Result};
pub use iqk::iq2_ks::Iq2KsSearch;
pub use ops::{
    dequantize, matmul, matvec, quantize, quantize_q8_k, vec_dot, QuantizeOptions, Weights,
};
pub use registry::{QuantType, TypeInfo, QK_K, TYPES};
