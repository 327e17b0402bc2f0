//! The IQK types' quantizers (bit-exact with ik_llama.cpp). Their bit layouts are decoded in
//! one place, the dependency-free layout module `simd/scalar.rs`, which the dot-product
//! kernels' scalar twins and dequantization (`simd::dequantize_row`) share.

pub mod best;
pub mod common;
pub mod fit;
pub mod iq2_k;
pub mod iq2_ks;
pub mod iq3_k;
pub mod iq3_ks;
pub mod iq4_k;
pub mod iq4_ks;
pub mod iq5_ks;
#[cfg(target_arch = "x86_64")]
mod lanes;
