//! AVX-512 kernels (F + BW + VL + VNNI): the AVX2 algorithm on 64 weights per instruction,
//! with `vpdpwssd` fusing the scale multiply and the accumulation. Scale and block-sum
//! decoding is shared with `avx2.rs` (256-bit). Requires Rust >= 1.89 (AVX-512 intrinsics).
//!
//! The sign trick for the 4-bit tables uses a mask-subtract (AVX-512 has no `vpsignb`):
//! `maddubs(|q8|, q8 < 0 ? -v : v)`, exact for every int8 activation including -128.
//! No int32 → int16 packing anywhere (ik_llama.cpp's single-row AVX-512 IQ4 kernels saturate
//! there, which is why they drift from the exact value).

#![allow(clippy::missing_safety_doc)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::avx2::{
    hsum_i32, prep_iq2k, prep_iq2ks, prep_iq3k, prep_iq3ks, prep_iq4k, prep_iq4ks, tab_iq2,
    tab_iq3, tab_iq4, tab_iq5,
};
use super::scalar::{
    acc_k, acc_ks, check_lens, f16_to_f32, finish_k, finish_ks, row_scale, DotType, IQ2KS_BYTES,
    IQ2K_BYTES, IQ3KS_BYTES, IQ3K_BYTES, IQ4KS_BYTES, IQ4K_BYTES, IQ5KS_BYTES, Q8K_BYTES, Q8K_QS,
};

#[inline]
unsafe fn rd16(p: *const u8) -> u16 {
    u16::from_le_bytes([*p, *p.add(1)])
}

#[inline]
unsafe fn rdf32(p: *const u8) -> f32 {
    f32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn loadu512(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p as *const _)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn widen(a: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), _mm256_setzero_si256())
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// i16 permutation indices: 128-bit lane k holds `v[k]` in all 8 positions.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn lanes16(v: [i16; 4]) -> __m512i {
    join(
        _mm256_set_m128i(_mm_set1_epi16(v[1]), _mm_set1_epi16(v[0])),
        _mm256_set_m128i(_mm_set1_epi16(v[3]), _mm_set1_epi16(v[2])),
    )
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn bcast_tab(t: __m256i) -> __m512i {
    join(t, t)
}

/// Adds the 16 lanes of `acc` to the 8 of `mins` and reduces (exact integers).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn reduce(acc: __m512i, mins: __m256i) -> i32 {
    let s = _mm256_add_epi32(
        _mm512_castsi512_si256(acc),
        _mm512_extracti64x4_epi64::<1>(acc),
    );
    hsum_i32(_mm256_add_epi32(s, mins))
}

/// One 64-weight step of the 2-bit family. `idx` holds 2/3-bit indices for chunks p (low
/// half) and 4 + p (high half); `sc` the matching i16 scales.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn step_unsigned(
    acc: __m512i,
    tab: __m512i,
    idx: __m512i,
    y: *const u8,
    p: usize,
    sc: __m512i,
) -> __m512i {
    let q = join(
        _mm256_loadu_si256(y.add(Q8K_QS + 32 * p) as *const __m256i),
        _mm256_loadu_si256(y.add(Q8K_QS + 128 + 32 * p) as *const __m256i),
    );
    let prod = _mm512_maddubs_epi16(_mm512_shuffle_epi8(tab, idx), q);
    _mm512_dpwssd_epi32(acc, prod, sc)
}

/// One 64-weight step of the 4-bit family: weights 64t..64t+64 contiguous.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn step_signed(
    acc: __m512i,
    tab: __m512i,
    idx: __m512i,
    y: *const u8,
    t: usize,
    sc: __m512i,
) -> __m512i {
    step_values(acc, _mm512_shuffle_epi8(tab, idx), y, t, sc)
}

/// [`step_signed`] on signed values `v` already looked up.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn step_values(acc: __m512i, v: __m512i, y: *const u8, t: usize, sc: __m512i) -> __m512i {
    let q = loadu512(y.add(Q8K_QS + 64 * t));
    let neg = _mm512_movepi8_mask(q);
    let vs = _mm512_mask_sub_epi8(v, neg, _mm512_setzero_si512(), v);
    let prod = _mm512_maddubs_epi16(_mm512_abs_epi8(q), vs);
    _mm512_dpwssd_epi32(acc, prod, sc)
}

/// Drives the 2-bit family: `scale_idx(p)` gives the i16 permutation of `sc16` for step p.
macro_rules! body_2bit {
    ($acc:ident, $tab:expr, $qs:expr, $qh:expr, $y:expr, $sc16:expr, |$p:ident| $sidx:expr) => {{
        let m3 = _mm512_set1_epi8(3);
        let m4 = _mm512_set1_epi8(4);
        let mut bits = loadu512($qs);
        let mut h = match $qh {
            Some(qh) => {
                let h256 = _mm256_loadu_si256(qh as *const __m256i);
                join(h256, _mm256_srli_epi16::<4>(h256))
            }
            None => _mm512_setzero_si512(),
        };
        for $p in 0..4usize {
            let mut idx = _mm512_and_si512(bits, m3);
            if $qh.is_some() {
                idx = _mm512_or_si512(idx, _mm512_and_si512(_mm512_slli_epi16::<2>(h), m4));
                h = _mm512_srli_epi16::<1>(h);
            }
            bits = _mm512_srli_epi16::<2>(bits);
            let sc = _mm512_permutexvar_epi16($sidx, $sc16);
            $acc = step_unsigned($acc, $tab, idx, $y, $p, sc);
        }
    }};
}

/// Drives the 4-bit family (16 bytes per 32 weights).
macro_rules! body_4bit {
    ($acc:ident, $tab:expr, $qs:expr, $y:expr, $sc16:expr, |$t:ident| $sidx:expr) => {{
        let m = _mm512_set1_epi8(0x0f);
        let pa = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
        let pb = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
        for k in 0..2usize {
            let b = loadu512($qs.add(64 * k));
            let lo = _mm512_and_si512(b, m);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(b), m);
            for (j, pm) in [pa, pb].into_iter().enumerate() {
                let $t = 2 * k + j;
                let idx = _mm512_permutex2var_epi64(lo, pm, hi);
                let sc = _mm512_permutexvar_epi16($sidx, $sc16);
                $acc = step_signed($acc, $tab, idx, $y, $t, sc);
            }
        }
    }};
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn sb_iq2k(x: *const u8, y: *const u8, tab: __m512i) -> i32 {
    let st = prep_iq2k(x);
    let eo = widen(st.eo);
    let mut acc = _mm512_setzero_si512();
    body_2bit!(acc, tab, x.add(12), None::<*const u8>, y, eo, |p| {
        let p = p as i16;
        lanes16([p, 8 + p, 4 + p, 12 + p])
    });
    reduce(acc, st.mins(y))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn sb_iq3k(x: *const u8, y: *const u8, tab: __m512i) -> i32 {
    let st = prep_iq3k(x);
    let eo = widen(st.eo);
    let mut acc = _mm512_setzero_si512();
    body_2bit!(acc, tab, x.add(14), Some(x.add(78)), y, eo, |p| {
        let p = p as i16;
        lanes16([p, 8 + p, 4 + p, 12 + p])
    });
    reduce(acc, st.mins(y))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn sb_iq4k(x: *const u8, y: *const u8, tab: __m512i) -> i32 {
    let st = prep_iq4k(x);
    let eo = widen(st.eo);
    let mut acc = _mm512_setzero_si512();
    body_4bit!(acc, tab, x.add(16), y, eo, |t| {
        let t2 = 2 * t as i16;
        lanes16([t2, 8 + t2, t2 + 1, 9 + t2])
    });
    reduce(acc, st.mins(y))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn sb_iq2ks(x: *const u8, y: *const u8, tab: __m512i) -> i32 {
    let st = prep_iq2ks(x);
    let sc = widen(st.sc);
    let mut acc = _mm512_setzero_si512();
    body_2bit!(acc, tab, x.add(6), None::<*const u8>, y, sc, |p| {
        let p = p as i16;
        lanes16([p, p, 4 + p, 4 + p])
    });
    reduce(acc, st.mins(y))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn sb_iq3ks(x: *const u8, y: *const u8, tab: __m512i) -> i32 {
    let st = prep_iq3ks(x);
    let sc = widen(st.sc);
    let mut acc = _mm512_setzero_si512();
    body_2bit!(acc, tab, x.add(6), Some(x.add(70)), y, sc, |p| {
        let p = p as i16;
        lanes16([p, p, 4 + p, 4 + p])
    });
    reduce(acc, st.mins(y))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn sb_iq4ks(x: *const u8, y: *const u8, tab: __m512i) -> i32 {
    let st = prep_iq4ks(x);
    let sc = widen(st.sc);
    let mut acc = _mm512_setzero_si512();
    body_4bit!(acc, tab, x.add(8), y, sc, |t| {
        let t2 = 2 * t as i16;
        lanes16([t2, t2, t2 + 1, t2 + 1])
    });
    reduce(acc, st.mins(y))
}

/// IQ5_KS: step t covers sub-blocks 2t (low nibbles of `qs[32t..32t+32]`, fifth bit 2t of
/// `qh`) and 2t + 1 (high nibbles, bit 2t + 1), each half with the table row its shift bit
/// picks; the fifth bit chooses the table's low or high 16 entries by a mask blend. No
/// block-sum correction: the shifted row is looked up directly.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn sb_iq5ks(x: *const u8, y: *const u8, _tab: __m512i) -> i32 {
    let sc = widen(prep_iq4ks(x).sc);
    let qh256 = _mm256_loadu_si256(x.add(136) as *const __m256i);
    let qh = join(qh256, qh256);
    let m = _mm256_set1_epi8(0x0f);
    let mut acc = _mm512_setzero_si512();
    for t in 0..4usize {
        let b = _mm256_loadu_si256(x.add(8 + 32 * t) as *const __m256i);
        let idx = join(
            _mm256_and_si256(b, m),
            _mm256_and_si256(_mm256_srli_epi16::<4>(b), m),
        );
        let (sel_a, sel_b) = (
            2 * (*x.add(2 * t) & 1) as usize,
            2 * (*x.add(2 * t + 1) & 1) as usize,
        );
        let lo = join(tab_iq5(sel_a), tab_iq5(sel_b));
        let hi = join(tab_iq5(sel_a + 1), tab_iq5(sel_b + 1));
        let bit = join(
            _mm256_set1_epi8(1 << (2 * t)),
            _mm256_set1_epi8((1u8 << (2 * t + 1)) as i8),
        );
        let high = _mm512_test_epi8_mask(qh, bit);
        let v = _mm512_mask_blend_epi8(
            high,
            _mm512_shuffle_epi8(lo, idx),
            _mm512_shuffle_epi8(hi, idx),
        );
        let t2 = 2 * t as i16;
        let s = _mm512_permutexvar_epi16(lanes16([t2, t2, t2 + 1, t2 + 1]), sc);
        acc = step_values(acc, v, y, t, s);
    }
    reduce(acc, _mm256_setzero_si256())
}

macro_rules! row_k {
    ($name:ident, $kind:expr, $bytes:expr, $sb:ident, $tab:ident) => {
        /// One row (K type) against Q8_K activations.
        ///
        /// # Safety
        /// The CPU must support AVX-512 F, BW, VL and VNNI.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
        pub unsafe fn $name(row: &[u8], q8k: &[u8]) -> f32 {
            let nb = check_lens($kind, row, q8k);
            let tab = bcast_tab($tab());
            let mut acc = 0.0f64;
            for i in 0..nb {
                let x = row.as_ptr().add(i * $bytes);
                let y = q8k.as_ptr().add(i * Q8K_BYTES);
                let sumi = $sb(x, y, tab);
                acc = acc_k(acc, f16_to_f32(rd16(x)), rdf32(y), sumi);
            }
            finish_k(acc)
        }
    };
}

macro_rules! row_ks {
    ($name:ident, $kind:expr, $bytes:expr, $sb:ident, $tab:ident) => {
        /// One row (KS type, row scale first) against Q8_K activations.
        ///
        /// # Safety
        /// The CPU must support AVX-512 F, BW, VL and VNNI.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
        pub unsafe fn $name(row: &[u8], q8k: &[u8]) -> f32 {
            let nb = check_lens($kind, row, q8k);
            let tab = bcast_tab($tab());
            let meta = $kind.row_meta();
            let mut acc = 0.0f64;
            for i in 0..nb {
                let x = row.as_ptr().add(meta + i * $bytes);
                let y = q8k.as_ptr().add(i * Q8K_BYTES);
                let sumi = $sb(x, y, tab);
                acc = acc_ks(acc, rdf32(y), sumi);
            }
            finish_ks(acc, row_scale($kind, row))
        }
    };
}

row_k!(vec_dot_iq2k, DotType::Iq2K, IQ2K_BYTES, sb_iq2k, tab_iq2);
row_k!(vec_dot_iq3k, DotType::Iq3K, IQ3K_BYTES, sb_iq3k, tab_iq3);
row_k!(vec_dot_iq4k, DotType::Iq4K, IQ4K_BYTES, sb_iq4k, tab_iq4);
row_ks!(
    vec_dot_iq2ks,
    DotType::Iq2Ks,
    IQ2KS_BYTES,
    sb_iq2ks,
    tab_iq2
);
row_ks!(
    vec_dot_iq3ks,
    DotType::Iq3Ks,
    IQ3KS_BYTES,
    sb_iq3ks,
    tab_iq3
);
row_ks!(
    vec_dot_iq4ks,
    DotType::Iq4Ks,
    IQ4KS_BYTES,
    sb_iq4ks,
    tab_iq4
);
row_ks!(
    vec_dot_iq5ks,
    DotType::Iq5Ks,
    IQ5KS_BYTES,
    sb_iq5ks,
    tab_iq4
);
