//! Q8_K activations, ik_llama.cpp's 296-byte variant: f32 d, f32 sum (= d·Σq), 256 int8
//! quants, 16 int16 sums of 16 quants. Quantized the way ik does on x86 (AVX2): d = amax/127,
//! q = round-half-even(x·127/amax). The dot products of all six IQK types take this type.

use crate::registry::QK_K;

pub const BLOCK_BYTES: usize = 296;
const QS: usize = 8;
const BSUMS: usize = 264;

/// Bytes of `n` activations in Q8_K.
pub fn row_size(n: usize) -> usize {
    n / QK_K * BLOCK_BYTES
}

/// Quantize `x` (length a multiple of 256) into `out` (`row_size(x.len())` bytes).
pub fn quantize_row(x: &[f32], out: &mut [u8]) {
    for (xb, y) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let mut amax = 0.0f32;
        for &v in xb {
            // Matches _mm256_max_ps(acc, |v|): a NaN input never replaces the running max.
            amax = if amax > v.abs() || v.is_nan() {
                amax
            } else {
                v.abs()
            };
        }
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut total = 0i32;
        for (k, chunk) in xb.chunks_exact(16).enumerate() {
            let mut bsum = 0i32;
            for (j, &v) in chunk.iter().enumerate() {
                // Round to nearest even, then saturate as the int32 → int8 packs do.
                let q = (id * v).round_ties_even().clamp(-128.0, 127.0) as i32;
                y[QS + 16 * k + j] = q as i8 as u8;
                bsum += q;
            }
            y[BSUMS + 2 * k..BSUMS + 2 * k + 2].copy_from_slice(&(bsum as i16).to_le_bytes());
            total += bsum;
        }
        y[0..4].copy_from_slice(&d.to_le_bytes());
        y[4..8].copy_from_slice(&(d * total as f32).to_le_bytes());
    }
}

/// A borrowed view of one Q8_K block.
pub struct Q8kBlock<'a> {
    pub d: f32,
    pub qs: &'a [i8],
}

impl<'a> Q8kBlock<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        let d = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let qs = &bytes[QS..QS + QK_K];
        // SAFETY: i8 and u8 have the same size and alignment; every bit pattern is valid.
        let qs = unsafe { std::slice::from_raw_parts(qs.as_ptr() as *const i8, QK_K) };
        Q8kBlock { d, qs }
    }

    pub fn iter(bytes: &'a [u8]) -> impl Iterator<Item = Q8kBlock<'a>> {
        bytes.chunks_exact(BLOCK_BYTES).map(Q8kBlock::new)
    }
}

/// Dequantize Q8_K bytes (used by tests to build the exact float64 reference dot).
pub fn dequantize_row(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in Q8kBlock::iter(bytes).zip(out.chunks_exact_mut(QK_K)) {
        for (o, &q) in o.iter_mut().zip(b.qs) {
            *o = b.d * q as f32;
        }
    }
}
