//! Q8_K activations, ik_llama.cpp's 296-byte variant: f32 d, f32 sum (= d·Σq), 256 int8
//! quants, 16 int16 sums of 16 quants. Quantized the way ik does on x86 (AVX2): d = amax/127,
//! q = round-half-even(x·127/amax). The dot products of all six IQK types take this type.

use crate::simd::QK as QK_K;

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

/// Dequantize Q8_K bytes (d·q per value); the tests build exact reference dots from it.
pub fn dequantize_row(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for (o, &q) in o.iter_mut().zip(&b[QS..QS + QK_K]) {
            *o = d * q as i8 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::ActRows;

    /// Quantized activations never hold -128 (|x|·127/amax rounds to at most 127), so the
    /// tile kernels' cheaper 4-bit sign trick applies to everything `matmul` quantizes.
    #[test]
    fn quantized_activations_never_hold_min8() {
        let mut seed = 0x9e37_79b9u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for scale in [1e-30f32, 1e-3, 1.0, 3e4, 3e38] {
            let mut x: Vec<f32> = (0..4 * QK_K)
                .map(|_| scale * ((next() >> 8) as f32 / (1u32 << 24) as f32 - 0.5))
                .collect();
            // The block maxima, negative and positive, and their neighbours.
            x[0] = -scale;
            x[1] = -scale * 0.999_999_9;
            x[QK_K] = scale;
            x[QK_K + 1] = -scale;
            let mut q = vec![0u8; row_size(x.len())];
            quantize_row(&x, &mut q);
            assert!(!ActRows::new(&q, 1).has_min8(), "scale {scale}");
            assert!(q
                .chunks_exact(BLOCK_BYTES)
                .any(|b| b[QS..BSUMS].contains(&0x81)));
        }
    }
}
