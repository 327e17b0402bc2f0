//! The six IQK types: quantizers (bit-exact with ik_llama.cpp) and dequantizers. Their dot
//! products against Q8_K live in `crate::simd`.

pub mod common;
pub mod fit;
pub mod iq2_k;
pub mod iq2_ks;
pub mod iq3_k;
pub mod iq3_ks;
pub mod iq4_k;
pub mod iq4_ks;
