//! AVX-512 kernels (F + BW + VL + VNNI): the AVX2 algorithm on 64 weights per instruction,
//! with `vpdpwssd` fusing the scale multiply and the accumulation. Scale and block-sum
//! decoding is shared with `avx2.rs` (256-bit). Requires Rust >= 1.89 (AVX-512 intrinsics).
//!
//! A superblock is decoded ([`Decoded`]: four 64-value steps in weight order and their
//! scales) apart from its products with the activations. The multi-row kernels (one
//! activation row, several weight rows) multiply it step by step (`maddubs`, then `vpdpwssd`
//! with the scales; the sign trick for the 4-bit tables uses a mask-subtract, as AVX-512 has no
//! `vpsignb`: `maddubs(|q8|, q8 < 0 ? -v : v)`, exact for every int8 activation including
//! -128, with `|q8|` and the mask readied once per call in [`ReadyActs`]), reduce four
//! superblocks' sums together and fold them as the AVX2 kernel does. On Sapphire Rapids the
//! 512-bit shuffles have one port (p5) where 256-bit in-lane shuffles have two, so these
//! kernels are bound by their shuffles: every one saved counts. The tile kernels decode a
//! superblock once for up to 8 activation rows, reorder it and the activations into
//! [`lane_major`] order for `vpdpbusd` chains, reduce the rows' sums together ([`reduce8`]) and
//! fold them in one f64 vector. Whether these or the AVX2 kernels run is measured per machine
//! (`calibrate.rs`).
//!
//! No int32 → int16 packing anywhere (ik_llama.cpp's AVX-512 IQ4 kernels saturate there, which
//! is why they drift from the exact value).

#![allow(clippy::missing_safety_doc)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::avx2::{
    fold1_k, fold1_ks, fold4, hsum4_i32, hsum_i32, prep_iq2k, prep_iq2ks, prep_iq3k, prep_iq3ks,
    prep_iq4k, prep_iq4ks, tab_iq2, tab_iq3, tab_iq4, tab_iq5, K16, K32,
};
use super::scalar::{
    check_rows, check_tile, f16_to_f32, finish_k, finish_ks, rd_f32_at, rd_u16_at, row_scale,
    row_scale_at, ActRows, DotType, IQ2KS_BYTES, IQ2K_BYTES, IQ3KS_BYTES, IQ3K_BYTES, IQ4KS_BYTES,
    IQ4K_BYTES, IQ5KS_BYTES, Q8K_BYTES, Q8K_QS,
};

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn loadu512(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p as *const _)
}

/// `acc + Σ a·b` over i16 pairs, as one `vpdpwssd`. Written in assembly because LLVM's machine
/// combiner splits a chain of these into `vpmaddwd` + `vpaddd` to shorten its latency, which
/// adds a vector uop per step to kernels that are bound by the two 512-bit ports, not by
/// latency (iq2_k's row kernel: 5 of 20 left whole).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dpwssd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    let mut acc = acc;
    std::arch::asm!(
        "vpdpwssd {acc}, {a}, {b}",
        acc = inout(zmm_reg) acc,
        a = in(zmm_reg) a,
        b = in(zmm_reg) b,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
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

/// The 16 lanes of `acc` folded onto the 8 of `mins` (exact integers; the caller reduces
/// four superblocks' vectors together).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn narrow(acc: __m512i, mins: __m256i) -> __m256i {
    let s = _mm256_add_epi32(
        _mm512_castsi512_si256(acc),
        _mm512_extracti64x4_epi64::<1>(acc),
    );
    _mm256_add_epi32(s, mins)
}

/// The sums of the 16 lanes of each of `s[0..8]`, in order (exact integers): a transposing
/// tree, a third of the instructions of eight separate reductions.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn reduce8(s: &[__m512i; 8]) -> __m256i {
    let pair = |a, b| _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    let quad = |a, b| _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    // Each 128-bit lane of `lo` holds lane partials of rows 0..4, of `hi` of rows 4..8.
    let lo = quad(pair(s[0], s[1]), pair(s[2], s[3]));
    let hi = quad(pair(s[4], s[5]), pair(s[6], s[7]));
    // Lanes (lo0 + lo1, lo2 + lo3, hi0 + hi1, hi2 + hi3).
    let z = _mm512_add_epi32(
        _mm512_shuffle_i64x2::<0x88>(lo, hi),
        _mm512_shuffle_i64x2::<0xdd>(lo, hi),
    );
    let (a, b) = (_mm512_castsi512_si256(z), _mm512_extracti64x4_epi64::<1>(z));
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(a, b),
        _mm256_permute2x128_si256::<0x31>(a, b),
    )
}

/// One superblock decoded from its weights alone, so that the activation rows of a tile share
/// the decoding: the 64 values of each of the four steps (unsigned table values for the 2-bit
/// family, signed ones for the 4-bit family and IQ5_KS) and the i16 scales of each step.
struct Decoded {
    v: [__m512i; 4],
    sc: [__m512i; 4],
}

/// Σ scale · value · q of a 2-bit-family superblock against activations `y`: step t holds
/// weights 64t..64t+64, so one load per step.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn sum_unsigned(d: &Decoded, y: *const u8, _a: *const [SignedStep; 4]) -> __m512i {
    let mut acc = _mm512_setzero_si512();
    for t in 0..4usize {
        let q = loadu512(y.add(Q8K_QS + 64 * t));
        acc = dpwssd(acc, _mm512_maddubs_epi16(d.v[t], q), d.sc[t]);
    }
    acc
}

/// One 64-weight step of a Q8_K superblock readied for signed values: `|q|` and the mask of the
/// negative `q`, so that `maddubs(|q|, q < 0 ? -v : v)` is exact for every int8 activation
/// including -128 (AVX-512 has no `vpsignb`).
#[derive(Clone, Copy)]
struct SignedStep {
    abs: __m512i,
    neg: __mmask64,
}

/// One activation row readied once per multi-row call and shared by its rows: the superblock
/// scales in f64 (the fold's factors for KS types, half of them for K types) and, for the
/// signed kinds, four [`SignedStep`]s per superblock (which takes two of the five uops per
/// step off every row).
#[derive(Default)]
struct ReadyActs {
    d8: Vec<f64>,
    signed: Vec<[SignedStep; 4]>,
}

thread_local! {
    /// Each thread's [`ReadyActs`], kept between calls (a call is a task of a few rows).
    static READY_ACTS: std::cell::Cell<ReadyActs> = Default::default();
}

/// `q8k` readied as [`ReadyActs`] says (the steps only if `signed`), in this thread's buffers
/// (hand them back with [`return_ready_acts`]).
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn ready_acts(q8k: &[u8], nb: usize, signed: bool) -> ReadyActs {
    let ReadyActs {
        mut d8,
        signed: mut steps,
    } = READY_ACTS.with(|c| c.take());
    d8.clear();
    steps.clear();
    for i in 0..nb {
        let y = q8k.as_ptr().add(i * Q8K_BYTES);
        d8.push(rd_f32_at(y) as f64);
        if signed {
            steps.push(std::array::from_fn(|t| {
                let q = loadu512(y.add(Q8K_QS + 64 * t));
                SignedStep {
                    abs: _mm512_abs_epi8(q),
                    neg: _mm512_movepi8_mask(q),
                }
            }));
        }
    }
    ReadyActs { d8, signed: steps }
}

/// Keeps `acts`' buffers for this thread's next call.
fn return_ready_acts(acts: ReadyActs) {
    READY_ACTS.with(|c| c.set(acts));
}

/// Four superblocks' fold factors from their weights `x` and activation scales `d8` (f64):
/// K types multiply in the blocks' fp16 scales, as `acc_k` forms them.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn fold_factors<const K: bool>(x: [*const u8; 4], d8: *const f64) -> __m256d {
    let d8 = _mm256_loadu_pd(d8);
    if !K {
        return d8;
    }
    // Gathered in a general register: four `vpinsrw` would cost four shuffles.
    let h = x.map(|x| rd_u16_at(x) as u64);
    let dw = h[0] | h[1] << 16 | h[2] << 32 | h[3] << 48;
    let dw = _mm_cvtph_ps(_mm_cvtsi64_si128(dw as i64));
    _mm256_mul_pd(_mm256_cvtps_pd(dw), d8)
}

/// The same for signed values (4-bit family, IQ5_KS) against the superblock's readied
/// activations `a` (the quants at `y` are read from there): step t holds weights
/// 64t..64t+64.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn sum_signed(d: &Decoded, _y: *const u8, a: *const [SignedStep; 4]) -> __m512i {
    let mut acc = _mm512_setzero_si512();
    for (t, a) in (*a).iter().enumerate() {
        let vs = _mm512_mask_sub_epi8(d.v[t], a.neg, _mm512_setzero_si512(), d.v[t]);
        acc = dpwssd(acc, _mm512_maddubs_epi16(a.abs, vs), d.sc[t]);
    }
    acc
}

/// Decodes the 2-bit family. Shift p of packed byte j (j < 32) holds weight 32p + j, of byte
/// 32 + j weight 128 + 32p + j. Pairing the low 32 bytes with themselves shifted right by two
/// (one two-source permute) puts weights 0..64 in shift-0 position and 64..128 in shift-2
/// position, in weight order (likewise the high 32 bytes for 128..256), so that the
/// activations load in one piece per step: two permutes instead of four regrouping
/// shuffles (ik_llama.cpp's `Q2Bits` does the same). The third index bit of weight
/// 128h + 32p + j is bit 4h + p of `qh[j]`. `$sidx` gives the i16 permutation of `sc16` for
/// step t.
macro_rules! decode_2bit {
    ($tab:expr, $qs:expr, $qh:expr, $sc16:expr, |$t:ident| $sidx:expr) => {{
        let m3 = _mm512_set1_epi8(3);
        let m4 = _mm512_set1_epi8(4);
        let bits = loadu512($qs);
        let bits2 = _mm512_srli_epi16::<2>(bits);
        let lo =
            _mm512_permutex2var_epi64(bits, _mm512_setr_epi64(0, 1, 2, 3, 8, 9, 10, 11), bits2);
        let hi =
            _mm512_permutex2var_epi64(bits, _mm512_setr_epi64(4, 5, 6, 7, 12, 13, 14, 15), bits2);
        let mut idx = [
            _mm512_and_si512(lo, m3),
            _mm512_and_si512(_mm512_srli_epi16::<4>(lo), m3),
            _mm512_and_si512(hi, m3),
            _mm512_and_si512(_mm512_srli_epi16::<4>(hi), m3),
        ];
        if let Some(qh) = $qh {
            let h256 = _mm256_loadu_si256(qh as *const __m256i);
            // Low half: bits p of qh, high half: bits p + 1 (the step's second 32 weights).
            let h = join(h256, _mm256_srli_epi16::<1>(h256));
            idx[0] = _mm512_or_si512(idx[0], _mm512_and_si512(_mm512_slli_epi16::<2>(h), m4));
            idx[1] = _mm512_or_si512(idx[1], _mm512_and_si512(h, m4));
            idx[2] = _mm512_or_si512(idx[2], _mm512_and_si512(_mm512_srli_epi16::<2>(h), m4));
            idx[3] = _mm512_or_si512(idx[3], _mm512_and_si512(_mm512_srli_epi16::<4>(h), m4));
        }
        let v = idx.map(|i| _mm512_shuffle_epi8($tab, i));
        let mut sc = [_mm512_setzero_si512(); 4];
        for ($t, sc) in sc.iter_mut().enumerate() {
            *sc = _mm512_permutexvar_epi16($sidx, $sc16);
        }
        Decoded { v, sc }
    }};
}

/// Decodes the 4-bit family (16 bytes per 32 weights).
macro_rules! decode_4bit {
    ($tab:expr, $qs:expr, $sc16:expr, |$t:ident| $sidx:expr) => {{
        let m = _mm512_set1_epi8(0x0f);
        let pa = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
        let pb = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
        let mut d = Decoded {
            v: [_mm512_setzero_si512(); 4],
            sc: [_mm512_setzero_si512(); 4],
        };
        for k in 0..2usize {
            let b = loadu512($qs.add(64 * k));
            let lo = _mm512_and_si512(b, m);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(b), m);
            for (j, pm) in [pa, pb].into_iter().enumerate() {
                let $t = 2 * k + j;
                let idx = _mm512_permutex2var_epi64(lo, pm, hi);
                d.v[$t] = _mm512_shuffle_epi8($tab, idx);
                d.sc[$t] = _mm512_permutexvar_epi16($sidx, $sc16);
            }
        }
        d
    }};
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dec_iq2k(x: *const u8, tab: __m512i) -> (Decoded, K16) {
    let st = prep_iq2k(x);
    let eo = widen(st.eo);
    let d = decode_2bit!(tab, x.add(12), None::<*const u8>, eo, |t| {
        let t2 = 2 * t as i16;
        lanes16([t2, 8 + t2, t2 + 1, 9 + t2])
    });
    (d, st)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dec_iq3k(x: *const u8, tab: __m512i) -> (Decoded, K16) {
    let st = prep_iq3k(x);
    let eo = widen(st.eo);
    let d = decode_2bit!(tab, x.add(14), Some(x.add(78)), eo, |t| {
        let t2 = 2 * t as i16;
        lanes16([t2, 8 + t2, t2 + 1, 9 + t2])
    });
    (d, st)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dec_iq4k(x: *const u8, tab: __m512i) -> (Decoded, K16) {
    let st = prep_iq4k(x);
    let eo = widen(st.eo);
    let d = decode_4bit!(tab, x.add(16), eo, |t| {
        let t2 = 2 * t as i16;
        lanes16([t2, 8 + t2, t2 + 1, 9 + t2])
    });
    (d, st)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dec_iq2ks(x: *const u8, tab: __m512i) -> (Decoded, K32) {
    let st = prep_iq2ks(x);
    let sc = widen(st.sc);
    let d = decode_2bit!(tab, x.add(6), None::<*const u8>, sc, |t| {
        let t2 = 2 * t as i16;
        lanes16([t2, t2, t2 + 1, t2 + 1])
    });
    (d, st)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dec_iq3ks(x: *const u8, tab: __m512i) -> (Decoded, K32) {
    let st = prep_iq3ks(x);
    let sc = widen(st.sc);
    let d = decode_2bit!(tab, x.add(6), Some(x.add(70)), sc, |t| {
        let t2 = 2 * t as i16;
        lanes16([t2, t2, t2 + 1, t2 + 1])
    });
    (d, st)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dec_iq4ks(x: *const u8, tab: __m512i) -> (Decoded, K32) {
    let st = prep_iq4ks(x);
    let sc = widen(st.sc);
    let d = decode_4bit!(tab, x.add(8), sc, |t| {
        let t2 = 2 * t as i16;
        lanes16([t2, t2, t2 + 1, t2 + 1])
    });
    (d, st)
}

/// IQ5_KS: step t covers sub-blocks 2t (low nibbles of `qs[32t..32t+32]`, fifth bit 2t of
/// `qh`) and 2t + 1 (high nibbles, bit 2t + 1), each half with the table row its shift bit
/// picks; the fifth bit chooses the table's low or high 16 entries by a mask blend.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dec_iq5ks(x: *const u8, _tab: __m512i) -> (Decoded, K32) {
    // No block-sum term: the shifted table is looked up directly.
    let st = prep_iq4ks(x).without_mins();
    let sc = widen(st.sc);
    let qh256 = _mm256_loadu_si256(x.add(136) as *const __m256i);
    let qh = join(qh256, qh256);
    let m = _mm256_set1_epi8(0x0f);
    let mut d = Decoded {
        v: [_mm512_setzero_si512(); 4],
        sc: [_mm512_setzero_si512(); 4],
    };
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
        d.v[t] = _mm512_mask_blend_epi8(
            high,
            _mm512_shuffle_epi8(lo, idx),
            _mm512_shuffle_epi8(hi, idx),
        );
        let t2 = 2 * t as i16;
        d.sc[t] = _mm512_permutexvar_epi16(lanes16([t2, t2, t2 + 1, t2 + 1]), sc);
    }
    (d, st)
}

/// One superblock against one activation row: eight i32 lanes whose sum is the exact
/// integer sum. `a` is the superblock's [`SignedStep`]s (read by the signed kinds only).
macro_rules! sb {
    ($name:ident, $dec:ident, $sum:ident) => {
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn $name(
            x: *const u8,
            y: *const u8,
            tab: __m512i,
            a: *const [SignedStep; 4],
        ) -> __m256i {
            let (d, st) = $dec(x, tab);
            narrow($sum(&d, y, a), st.mins(y))
        }
    };
}

sb!(sb_iq2k, dec_iq2k, sum_unsigned);
sb!(sb_iq3k, dec_iq3k, sum_unsigned);
sb!(sb_iq4k, dec_iq4k, sum_signed);
sb!(sb_iq2ks, dec_iq2ks, sum_unsigned);
sb!(sb_iq3ks, dec_iq3ks, sum_unsigned);
sb!(sb_iq4ks, dec_iq4ks, sum_signed);
sb!(sb_iq5ks, dec_iq5ks, sum_signed);

macro_rules! row_kernels {
    (
        $rows:ident, $single:ident, $kind:expr, $bytes:expr, $sb:ident, $tab:ident,
        k_type: $k:literal, signed: $signed:literal
    ) => {
        /// `out.len()` consecutive rows against the same Q8_K activations, as the AVX2
        /// multi-row kernel does it: superblocks in groups of four, whose sums are reduced
        /// together and whose f64 products are formed together, folded into the row's
        /// accumulator one at a time in superblock order (the scalar twin's
        /// `acc + scale · sumi`) at the top of the next group, when they are long ready.
        ///
        /// # Safety
        /// The CPU must support AVX-512 F, BW, VL and VNNI.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn $rows(rows: &[u8], q8k: &[u8], out: &mut [f32]) {
            let (nb, row_bytes) = check_rows($kind, rows, q8k, out.len());
            let tab = bcast_tab($tab());
            let ys = q8k.as_ptr();
            let zero = _mm256_setzero_si256();
            let acts = ready_acts(q8k, nb, $signed);
            let signed = acts.signed.as_ptr();
            for (r, o) in out.iter_mut().enumerate() {
                let row = rows.as_ptr().add(r * row_bytes);
                let xs = row.add($kind.row_meta());
                let mut acc = 0.0f64;
                let mut i = 0;
                // The first fold adds four zeros to +0.0: a no-op.
                let mut pending = ([zero; 4], _mm256_setzero_pd());
                while i + 4 <= nb {
                    let ([a, b, c, d], scales) = pending;
                    let sums = _mm256_cvtepi32_pd(hsum4_i32(a, b, c, d));
                    acc = fold4(acc, _mm256_mul_pd(scales, sums));
                    let x0 = xs.add(i * $bytes);
                    let y0 = ys.add(i * Q8K_BYTES);
                    let x = [x0, x0.add($bytes), x0.add(2 * $bytes), x0.add(3 * $bytes)];
                    let y = [
                        y0,
                        y0.add(Q8K_BYTES),
                        y0.add(2 * Q8K_BYTES),
                        y0.add(3 * Q8K_BYTES),
                    ];
                    // Written out: as a `map` over the four, LLVM kept a loop with the
                    // pointers and sums on the stack and a bounds check per superblock.
                    pending = (
                        [
                            $sb(x[0], y[0], tab, signed.wrapping_add(i)),
                            $sb(x[1], y[1], tab, signed.wrapping_add(i + 1)),
                            $sb(x[2], y[2], tab, signed.wrapping_add(i + 2)),
                            $sb(x[3], y[3], tab, signed.wrapping_add(i + 3)),
                        ],
                        fold_factors::<$k>(x, acts.d8.as_ptr().add(i)),
                    );
                    i += 4;
                }
                let ([a, b, c, d], scales) = pending;
                let sums = _mm256_cvtepi32_pd(hsum4_i32(a, b, c, d));
                acc = fold4(acc, _mm256_mul_pd(scales, sums));
                for i in i..nb {
                    let x = xs.add(i * $bytes);
                    let y = ys.add(i * Q8K_BYTES);
                    let sumi = hsum_i32($sb(x, y, tab, signed.wrapping_add(i)));
                    acc = if $k {
                        fold1_k(acc, x, y, sumi)
                    } else {
                        fold1_ks(acc, x, y, sumi)
                    };
                }
                *o = finish_ks(acc, row_scale_at($kind, row));
            }
            return_ready_acts(acts);
        }

        /// One row against Q8_K activations.
        ///
        /// # Safety
        /// The CPU must support AVX-512 F, BW, VL and VNNI.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn $single(row: &[u8], q8k: &[u8]) -> f32 {
            let mut out = [0.0f32];
            $rows(row, q8k, &mut out);
            out[0]
        }
    };
}

/// Activation rows per group of the tile kernels: the decoded superblock (eight registers)
/// is shared by this many rows.
const TILE_ACTS: usize = 8;

/// Reorders a superblock's 256 bytes (`v[s]`: weights 64s..64s+64) so that dword lane l of
/// step t holds weights 16l + 4t .. 16l + 4t + 4. A `vpdpbusd` chain over the four steps then
/// leaves in lane l the whole sum of 16-weight sub-block l, which one multiply scales: per
/// superblock and activation row four `vpdpbusd` and one `vpmulld` instead of the single-row
/// kernels' eight multiplies.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn lane_major(v: &[__m512i; 4]) -> [__m512i; 4] {
    // Lane l comes from register l/4, dword 4(l%4) + t: lanes 0..8 from the pair (0, 1),
    // lanes 8..16 from (2, 3), with the same two-source indices.
    let base = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    std::array::from_fn(|t| {
        let idx = _mm512_add_epi32(base, _mm512_set1_epi32(t as i32));
        let lo = _mm512_permutex2var_epi32(v[0], idx, v[1]);
        let hi = _mm512_permutex2var_epi32(v[2], idx, v[3]);
        _mm512_mask_blend_epi32(0xff00, lo, hi)
    })
}

/// The activation rows of a tile call, readied once and shared by all its weight rows: the
/// quants of every superblock in [`lane_major`] order (rows one after the other), and the
/// superblock scales of each group of [`TILE_ACTS`] rows side by side (zero past the last
/// row), so that the rows' f64 accumulators fold in one vector.
#[derive(Default)]
struct LaneMajorActs {
    quants: Vec<__m512i>,
    scales: Vec<[f32; TILE_ACTS]>,
}

thread_local! {
    /// Each thread's [`LaneMajorActs`], kept between calls: a tile call is a task of a few
    /// weight rows, where two allocations per call cost several percent.
    static LANE_MAJOR_ACTS: std::cell::Cell<LaneMajorActs> = Default::default();
}

/// `acts` readied as [`LaneMajorActs`] says, in this thread's buffers (hand them back with
/// [`return_lane_major_acts`]).
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn lane_major_acts(acts: &ActRows, nb: usize) -> LaneMajorActs {
    let LaneMajorActs {
        mut quants,
        mut scales,
    } = LANE_MAJOR_ACTS.with(|c| c.take());
    quants.clear();
    scales.clear();
    scales.resize(acts.len().div_ceil(TILE_ACTS) * nb, [0.0; TILE_ACTS]);
    let ys = acts.bytes().as_ptr();
    for j in 0..acts.len() {
        for i in 0..nb {
            let y = ys.add(j * acts.row_bytes() + i * Q8K_BYTES);
            let q: [__m512i; 4] = std::array::from_fn(|t| loadu512(y.add(Q8K_QS + 64 * t)));
            quants.extend_from_slice(&lane_major(&q));
            scales[j / TILE_ACTS * nb + i][j % TILE_ACTS] = rd_f32_at(y);
        }
    }
    LaneMajorActs { quants, scales }
}

/// Keeps `lm`'s buffers for this thread's next tile call.
fn return_lane_major_acts(lm: LaneMajorActs) {
    LANE_MAJOR_ACTS.with(|c| c.set(lm));
}

macro_rules! tile_lane_major {
    (
        $name:ident, $kind:expr, $bytes:expr, $dec:ident, $tab:ident,
        k_type: $k:literal, signed: $signed:literal
    ) => {
        /// Weight rows × the activation rows of `acts`: `out[r * acts.len() + j]` is row r
        /// dotted with activation row j. The activations are put in [`lane_major`] order
        /// once; each superblock is decoded once per group of up to [`TILE_ACTS`] activation
        /// rows, as unsigned bytes (signed values biased by 128, which the block sums take
        /// back), for `vpdpbusd`. Every pair has its own f64 accumulator, which takes the
        /// superblocks' exact integer sums in order as the single-row kernel's does, so every
        /// dot equals it bit for bit.
        ///
        /// # Safety
        /// The CPU must support AVX-512 F, BW, VL and VNNI.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
        pub unsafe fn $name(rows: &[u8], acts: &ActRows, out: &mut [f32]) {
            if acts.is_empty() {
                assert!(
                    out.is_empty(),
                    "{}: outputs without activation rows",
                    $kind.name()
                );
                return;
            }
            let (nb, row_bytes, nrows) = check_tile($kind, rows, acts, out.len());
            let (n_acts, act_bytes) = (acts.len(), acts.row_bytes());
            let ys = acts.bytes().as_ptr();
            let lm = lane_major_acts(acts, nb);
            let tab = bcast_tab($tab());
            let meta = $kind.row_meta();
            for r in 0..nrows {
                let row = &rows[r * row_bytes..(r + 1) * row_bytes];
                let mut j0 = 0;
                while j0 < n_acts {
                    let n = (n_acts - j0).min(TILE_ACTS);
                    // Lane j: activation row j0 + j's f64 accumulator, folded as `acc_k` /
                    // `acc_ks` do (a multiply and an add, each rounded as in the scalar code).
                    let mut acc = _mm512_setzero_pd();
                    for i in 0..nb {
                        let x = row.as_ptr().add(meta + i * $bytes);
                        let (d, mut st) = $dec(x, tab);
                        let scales = st.natural_scales();
                        if $signed {
                            // Σ s·(v + 128)·q counts 128·s·bsum too much per sub-block.
                            let bias = _mm256_slli_epi16::<7>(scales);
                            st.add_mins(_mm256_sub_epi16(_mm256_setzero_si256(), bias));
                        }
                        let scales = _mm512_cvtepi16_epi32(scales);
                        // Signed values v become v + 128, so that the bytes are unsigned.
                        let v = lane_major(&d.v.map(|v| {
                            if $signed {
                                _mm512_xor_si512(v, _mm512_set1_epi8(-128))
                            } else {
                                v
                            }
                        }));
                        let y = |j: usize| ys.add((j0 + j) * act_bytes + i * Q8K_BYTES);
                        let mut sums = [_mm512_setzero_si512(); TILE_ACTS];
                        for (j, s) in sums.iter_mut().enumerate().take(n) {
                            let q = lm.quants.as_ptr().add(((j0 + j) * nb + i) * 4);
                            let mut dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[0], *q);
                            dot = _mm512_dpbusd_epi32(dot, v[1], *q.add(1));
                            dot = _mm512_dpbusd_epi32(dot, v[2], *q.add(2));
                            dot = _mm512_dpbusd_epi32(dot, v[3], *q.add(3));
                            let scaled = _mm512_mullo_epi32(dot, scales);
                            *s = _mm512_add_epi32(scaled, widen(st.mins(y(j))));
                        }
                        let sumi = _mm512_cvtepi32_pd(reduce8(&sums));
                        let d8 = lm.scales[j0 / TILE_ACTS * nb + i].as_ptr();
                        let mut d8 = _mm512_cvtps_pd(_mm256_loadu_ps(d8));
                        if $k {
                            let dw = _mm512_set1_pd(f16_to_f32(rd_u16_at(x)) as f64);
                            d8 = _mm512_mul_pd(dw, d8);
                        }
                        acc = _mm512_add_pd(acc, _mm512_mul_pd(d8, sumi));
                    }
                    let mut accs = [0.0f64; TILE_ACTS];
                    _mm512_storeu_pd(accs.as_mut_ptr(), acc);
                    for (j, &acc) in accs.iter().enumerate().take(n) {
                        out[r * n_acts + j0 + j] = if $k {
                            finish_k(acc)
                        } else {
                            finish_ks(acc, row_scale($kind, row))
                        };
                    }
                    j0 += n;
                }
            }
            return_lane_major_acts(lm);
        }
    };
}

row_kernels!(rows_iq2k, vec_dot_iq2k, DotType::Iq2K, IQ2K_BYTES, sb_iq2k, tab_iq2, k_type: true, signed: false);
row_kernels!(rows_iq3k, vec_dot_iq3k, DotType::Iq3K, IQ3K_BYTES, sb_iq3k, tab_iq3, k_type: true, signed: false);
row_kernels!(rows_iq4k, vec_dot_iq4k, DotType::Iq4K, IQ4K_BYTES, sb_iq4k, tab_iq4, k_type: true, signed: true);
row_kernels!(rows_iq2ks, vec_dot_iq2ks, DotType::Iq2Ks, IQ2KS_BYTES, sb_iq2ks, tab_iq2, k_type: false, signed: false);
row_kernels!(rows_iq3ks, vec_dot_iq3ks, DotType::Iq3Ks, IQ3KS_BYTES, sb_iq3ks, tab_iq3, k_type: false, signed: false);
row_kernels!(rows_iq4ks, vec_dot_iq4ks, DotType::Iq4Ks, IQ4KS_BYTES, sb_iq4ks, tab_iq4, k_type: false, signed: true);
row_kernels!(rows_iq5ks, vec_dot_iq5ks, DotType::Iq5Ks, IQ5KS_BYTES, sb_iq5ks, tab_iq4, k_type: false, signed: true);

tile_lane_major!(tile_iq2k, DotType::Iq2K, IQ2K_BYTES, dec_iq2k, tab_iq2, k_type: true, signed: false);
tile_lane_major!(tile_iq3k, DotType::Iq3K, IQ3K_BYTES, dec_iq3k, tab_iq3, k_type: true, signed: false);
tile_lane_major!(tile_iq4k, DotType::Iq4K, IQ4K_BYTES, dec_iq4k, tab_iq4, k_type: true, signed: true);
tile_lane_major!(tile_iq2ks, DotType::Iq2Ks, IQ2KS_BYTES, dec_iq2ks, tab_iq2, k_type: false, signed: false);
tile_lane_major!(tile_iq3ks, DotType::Iq3Ks, IQ3KS_BYTES, dec_iq3ks, tab_iq3, k_type: false, signed: false);
tile_lane_major!(tile_iq4ks, DotType::Iq4Ks, IQ4KS_BYTES, dec_iq4ks, tab_iq4, k_type: false, signed: true);
tile_lane_major!(tile_iq5ks, DotType::Iq5Ks, IQ5KS_BYTES, dec_iq5ks, tab_iq4, k_type: false, signed: true);
