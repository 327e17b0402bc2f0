//! AVX2 kernels (x86-64). Each superblock's exact integer sum is formed in 8 × i32 lanes,
//! reduced horizontally (exact, four superblocks per reduction), and folded into the f64
//! accumulator in superblock order with the scalar twins' operations, so results are
//! bit-identical to `scalar.rs`.
//!
//! Techniques (after ik_llama.cpp's AVX2 kernels, re-derived here):
//! * 2/3-bit types look values up with `pshufb` in the *base* table offset to unsigned
//!   (`iq2nl + 32`, `iq3nl + 64`), multiply with `maddubs` (pair sums stay below 2^15), and
//!   remove the offset and the shifted-table constant (+5 / +4) through the Q8_K block sums.
//! * 4-bit types use the signed table with the sign moved onto the *weights*:
//!   `maddubs(|q8|, sign(v, q8))`, which stays exact for every int8 activation, -128 included
//!   (`|v| <= 127`, `|q8| <= 128`, pair sums <= 32512). Each chunk loads the table whose
//!   lanes hold the base or shifted half its two sub-blocks use, so no block-sum correction
//!   is needed.
//! * Sub-block scales multiply the int16 pair sums with `madd` (int32 results); each chunk's
//!   scales come from one `vpshufb`.

#![allow(clippy::missing_safety_doc)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::scalar::{
    acc_k, acc_ks, check_rows, check_tile, finish_ks, rd_f32_at, rd_u16_at, rd_u32_at,
    row_scale_at, ActRows, DotType, IQ4K, IQ5NL, Q8K_BSUMS, Q8K_BYTES, Q8K_QS,
};

/// Even sub-blocks first, then odd ones.
const EO_SHUFFLE: [i8; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15];

#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// The horizontal sums of four vectors, in order: [Σa, Σb, Σc, Σd] (exact, wrapping i32).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn hsum4_i32(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m128i {
    let ab = _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(a, b),
        _mm256_permute2x128_si256::<0x31>(a, b),
    );
    let cd = _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(c, d),
        _mm256_permute2x128_si256::<0x31>(c, d),
    );
    // Low lane: [a01, a23, c01, c23], high lane: [b01, b23, d01, d23].
    let h = _mm256_hadd_epi32(ab, cd);
    // Low lane: [a, c, a, c], high lane: [b, d, b, d].
    let h = _mm256_hadd_epi32(h, h);
    _mm_unpacklo_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// The horizontal sums of eight vectors, in order (exact, wrapping i32). Pairwise
/// interleave-and-add steps: single-uop shuffles, where `hadd` costs three.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum8_i32(v: [__m256i; 8]) -> __m256i {
    // Per lane: [a0+a2, b0+b2, a1+a3, b1+b3].
    let pair = |a: __m256i, b: __m256i| {
        _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
    };
    // Per lane: [Σa, Σb, Σc, Σd] of that lane's half.
    let quad = |ab: __m256i, cd: __m256i| {
        _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd))
    };
    let abcd = quad(pair(v[0], v[1]), pair(v[2], v[3]));
    let efgh = quad(pair(v[4], v[5]), pair(v[6], v[7]));
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(abcd, efgh),
        _mm256_permute2x128_si256::<0x31>(abcd, efgh),
    )
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn loadu256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// 16 bytes, byte k = -1 if bit k of `bits` is set, else 0. (Byte-broadcast in the vector
/// unit: the multiply-by-0x0101... form costs twice the instructions and GPR round trips.)
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn bits16(bits: u16) -> __m128i {
    let spread = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let e = _mm_shuffle_epi8(_mm_cvtsi32_si128(bits as i32), spread);
    let m = _mm_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm_cmpeq_epi8(_mm_and_si128(e, m), m)
}

/// Bytes 0..8: -1 if bit k of `bits` is set, else 0 (bytes 8..16 repeat them).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn bits8(bits: u8) -> __m128i {
    let e = _mm_shuffle_epi8(_mm_cvtsi32_si128(bits as i32), _mm_setzero_si128());
    let m = _mm_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm_cmpeq_epi8(_mm_and_si128(e, m), m)
}

/// Low and high nibbles of 8 bytes interleaved: (lo0, hi0, lo1, hi1, ...).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles8(p: *const u8) -> __m128i {
    let b = _mm_loadl_epi64(p as *const __m128i);
    let m = _mm_set1_epi8(0x0f);
    _mm_unpacklo_epi8(
        _mm_and_si128(b, m),
        _mm_and_si128(_mm_srli_epi16::<4>(b), m),
    )
}

/// Per-superblock state of a type with 16 sub-blocks of 16 (decoded from the weights alone,
/// so several activation rows can share it).
pub(crate) struct K16 {
    /// Low lane: i16 scales of the even sub-blocks; high lane: of the odd ones.
    pub eo: __m256i,
    /// s_sub · c_sub (i16, natural order): paired with the block sums by [`K16::mins`].
    mins16: __m256i,
}

impl K16 {
    /// Σ_sub s_sub · c_sub · bsum_sub of activations `y` in 8 × i32 (the offset /
    /// shifted-table part).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn mins(&self, y: *const u8) -> __m256i {
        _mm256_madd_epi16(self.mins16, loadu256(y.add(Q8K_BSUMS)))
    }

    /// The 16 sub-block scales, i16, natural order.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn natural_scales(&self) -> __m256i {
        let (even, odd) = (
            _mm256_castsi256_si128(self.eo),
            _mm256_extracti128_si256::<1>(self.eo),
        );
        _mm256_set_m128i(_mm_unpackhi_epi16(even, odd), _mm_unpacklo_epi16(even, odd))
    }

    /// Adds `Σ_sub delta_sub · bsum_sub` to [`K16::mins`] (`delta`: i16, natural order; every
    /// `s·c + delta` must fit in i16).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn add_mins(&mut self, delta: __m256i) {
        self.mins16 = _mm256_add_epi16(self.mins16, delta);
    }
}

/// The 16 i8 sub-block scales `nat` (natural order) as `K16::eo` lays them out: i16, even
/// sub-blocks in the low lane, odd ones in the high lane.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn even_odd(nat: __m128i) -> __m256i {
    let eo_ctl = _mm_loadu_si128(EO_SHUFFLE.as_ptr() as *const __m128i);
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(nat, eo_ctl))
}

/// `nat`: the 16 signed sub-block scales (i8, natural order); `m8`: the per-sub-block
/// constant (i8) to multiply with scale and block sum.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn k16(nat: __m128i, m8: __m128i) -> K16 {
    K16 {
        eo: even_odd(nat),
        mins16: _mm256_mullo_epi16(_mm256_cvtepi8_epi16(nat), _mm256_cvtepi8_epi16(m8)),
    }
}

/// Per-superblock state of a type with 8 sub-blocks of 32 (from the weights alone).
pub(crate) struct K32 {
    /// The 8 i16 scales, in both lanes.
    pub sc: __m256i,
    /// s_block · c_block (i16), each twice: the layout of the 16 block sums.
    mins16: __m256i,
}

impl K32 {
    /// Σ_block s_block · c_block · bsum_block of activations `y` in 8 × i32.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn mins(&self, y: *const u8) -> __m256i {
        _mm256_madd_epi16(self.mins16, loadu256(y.add(Q8K_BSUMS)))
    }

    /// The scale of each 16-weight half-block (each block's twice), i16, natural order.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn natural_scales(&self) -> __m256i {
        let s = _mm256_castsi256_si128(self.sc);
        _mm256_set_m128i(_mm_unpackhi_epi16(s, s), _mm_unpacklo_epi16(s, s))
    }

    /// The same scales without a block-sum term (for IQ5_KS, whose shifted table is looked
    /// up directly).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn without_mins(self) -> K32 {
        K32 {
            sc: self.sc,
            mins16: _mm256_setzero_si256(),
        }
    }

    /// As [`K16::add_mins`], per 16-weight half-block.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn add_mins(&mut self, delta: __m256i) {
        self.mins16 = _mm256_add_epi16(self.mins16, delta);
    }
}

/// `s16`: 8 × i16 scales; `m16`: 8 × i16 per-block constants.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn k32(s16: __m128i, m16: __m128i) -> K32 {
    let mins16 = _mm_mullo_epi16(s16, m16);
    K32 {
        sc: _mm256_broadcastsi128_si256(s16),
        mins16: _mm256_set_m128i(
            _mm_unpackhi_epi16(mins16, mins16),
            _mm_unpacklo_epi16(mins16, mins16),
        ),
    }
}

/// `vpshufb` controls that broadcast i16 element c within each 128-bit lane.
///
/// The tables here are `const`s read through a promoted `&'static` (a private constant of
/// this crate), not `static`s: rustc exports a `static` that generic code reads (another
/// crate could instantiate it), and the kernels then reached it through the GOT, one more
/// load and register in the hot loops (iq3_ks's multi-row kernel was 3 % slower).
#[repr(align(32))]
struct ChunkShuffles([[u8; 32]; 8]);

const CHUNK_SHUFFLES: ChunkShuffles = {
    let mut t = [[0u8; 32]; 8];
    let mut c = 0;
    while c < 8 {
        let mut k = 0;
        while k < 16 {
            t[c][2 * k] = 2 * c as u8;
            t[c][2 * k + 1] = 2 * c as u8 + 1;
            k += 1;
        }
        c += 1;
    }
    ChunkShuffles(t)
};

/// Chunk c's scales from `K16::eo` / `K32::sc`: i16 element c of each lane, broadcast in its
/// lane. One `vpshufb` with a constant control (a pair of word shuffles would cost two).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn chunk_scale(scales: __m256i, c: usize) -> __m256i {
    // A volatile read keeps the control opaque: LLVM would otherwise rewrite this shuffle
    // of a widened vector into two word shuffles.
    let t: &'static ChunkShuffles = &CHUNK_SHUFFLES;
    let ctl = std::ptr::read_volatile(t.0[c].as_ptr() as *const __m256i);
    _mm256_shuffle_epi8(scales, ctl)
}

/// `acc + p[0] + p[1] + p[2] + p[3]`, added left to right (the scalar twin's order).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn fold4(acc: f64, p: __m256d) -> f64 {
    let lo = _mm256_castpd256_pd128(p);
    let hi = _mm256_extractf128_pd::<1>(p);
    let acc = acc + _mm_cvtsd_f64(lo);
    let acc = acc + _mm_cvtsd_f64(_mm_unpackhi_pd(lo, lo));
    let acc = acc + _mm_cvtsd_f64(hi);
    acc + _mm_cvtsd_f64(_mm_unpackhi_pd(hi, hi))
}

/// fp16 → f32 with F16C (exact, like `f16_to_f32`).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16c(h: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

// ---------------------------------------------------------------- per-type scale decoding

#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn prep_iq2k(x: *const u8) -> K16 {
    let nat = _mm_sub_epi8(nibbles8(x.add(4)), _mm_set1_epi8(8));
    let sh = bits16(rd_u16_at(x.add(2)));
    let m8 = _mm_add_epi8(_mm_and_si128(sh, _mm_set1_epi8(5)), _mm_set1_epi8(-32));
    k16(nat, m8)
}

#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn prep_iq3k(x: *const u8) -> K16 {
    let m = _mm_add_epi8(
        _mm_add_epi8(nibbles8(x.add(6)), nibbles8(x.add(6))),
        _mm_set1_epi8(1),
    );
    let neg = bits16(rd_u16_at(x.add(4)));
    let nat = _mm_sub_epi8(_mm_xor_si128(m, neg), neg);
    let sh = bits16(rd_u16_at(x.add(2)));
    let m8 = _mm_add_epi8(_mm_and_si128(sh, _mm_set1_epi8(4)), _mm_set1_epi8(-64));
    k16(nat, m8)
}

#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn prep_iq4k(x: *const u8) -> K16 {
    let m8 = _mm_and_si128(bits16(rd_u16_at(x.add(2))), _mm_set1_epi8(4));
    k16(natural_scales_iq4k(x), m8)
}

/// IQ4_K's 16 signed sub-block scales (i8, natural order): low nibbles plus two high bits.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn natural_scales_iq4k(x: *const u8) -> __m128i {
    let lo = nibbles8(x.add(8));
    let rep = _mm_shuffle_epi8(
        _mm_cvtsi32_si128(rd_u32_at(x.add(4)) as i32),
        _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
    );
    let ma = _mm_set1_epi32(0x4010_0401);
    let mb = _mm_set1_epi32(0x8020_0802u32 as i32);
    let b4 = _mm_and_si128(
        _mm_cmpeq_epi8(_mm_and_si128(rep, ma), ma),
        _mm_set1_epi8(16),
    );
    let b5 = _mm_and_si128(
        _mm_cmpeq_epi8(_mm_and_si128(rep, mb), mb),
        _mm_set1_epi8(32),
    );
    _mm_sub_epi8(_mm_or_si128(lo, _mm_or_si128(b4, b5)), _mm_set1_epi8(32))
}

/// IQ4_K's sub-block scales alone: the AVX2 kernel applies the shifted table directly (see
/// `IQ4_TABLES`), so nothing goes through the block sums.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scales_iq4k(x: *const u8) -> __m256i {
    even_odd(natural_scales_iq4k(x))
}

/// IQ4_KS's eight scales (i16, in both lanes), without the shift bits.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scales_iq4ks(x: *const u8) -> __m256i {
    let b = _mm_cvtepu8_epi16(_mm_loadl_epi64(x as *const __m128i));
    let s16 = _mm_sub_epi16(_mm_and_si128(b, _mm_set1_epi16(0xfe)), _mm_set1_epi16(127));
    _mm256_broadcastsi128_si256(s16)
}

#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn prep_iq2ks(x: *const u8) -> K32 {
    let extra = rd_u16_at(x);
    let b = _mm_cvtsi32_si128(rd_u32_at(x.add(2)) as i32);
    let m = _mm_set1_epi8(0x0f);
    let nib = _mm_unpacklo_epi8(
        _mm_and_si128(b, m),
        _mm_and_si128(_mm_srli_epi16::<4>(b), m),
    );
    let b4 = _mm_and_si128(bits8((extra >> 8) as u8), _mm_set1_epi8(16));
    let s16 = _mm_cvtepi8_epi16(_mm_sub_epi8(_mm_or_si128(nib, b4), _mm_set1_epi8(16)));
    let sh = bits8(extra as u8);
    let m8 = _mm_add_epi8(_mm_and_si128(sh, _mm_set1_epi8(5)), _mm_set1_epi8(-32));
    k32(s16, _mm_cvtepi8_epi16(m8))
}

#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn prep_iq3ks(x: *const u8) -> K32 {
    let extra = rd_u16_at(x);
    let b = _mm_cvtsi32_si128(rd_u32_at(x.add(2)) as i32);
    let m = _mm_set1_epi8(0x0f);
    let nib = _mm_unpacklo_epi32(
        _mm_and_si128(b, m),
        _mm_and_si128(_mm_srli_epi16::<4>(b), m),
    );
    let b4 = _mm_and_si128(bits8(extra as u8), _mm_set1_epi8(16));
    let s16 = _mm_cvtepi8_epi16(_mm_sub_epi8(_mm_or_si128(nib, b4), _mm_set1_epi8(16)));
    let sh = bits8((extra >> 8) as u8);
    let m8 = _mm_add_epi8(_mm_and_si128(sh, _mm_set1_epi8(4)), _mm_set1_epi8(-64));
    k32(s16, _mm_cvtepi8_epi16(m8))
}

#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn prep_iq4ks(x: *const u8) -> K32 {
    let b = _mm_cvtepu8_epi16(_mm_loadl_epi64(x as *const __m128i));
    let s16 = _mm_sub_epi16(_mm_and_si128(b, _mm_set1_epi16(0xfe)), _mm_set1_epi16(127));
    let m16 = _mm_slli_epi16::<2>(_mm_and_si128(b, _mm_set1_epi16(1)));
    k32(s16, m16)
}

// ---------------------------------------------------------------- value tables

#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn tab_iq2() -> __m256i {
    _mm256_broadcastsi128_si256(_mm_setr_epi8(
        1, 19, 33, 49, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ))
}

#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn tab_iq3() -> __m256i {
    _mm256_broadcastsi128_si256(_mm_setr_epi8(
        1, 24, 41, 54, 65, 77, 92, 111, 0, 0, 0, 0, 0, 0, 0, 0,
    ))
}

#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn tab_iq4() -> __m256i {
    _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4K.as_ptr() as *const __m128i))
}

/// The IQ4 value tables per lane pair, indexed by two shift bits (bit 0: low lane shifted,
/// bit 1: high lane shifted). Picking the table per chunk costs one L1 load and spares the
/// block-sum correction of the shifted half.
#[repr(align(32))]
struct Iq4Tables([[i8; 32]; 4]);

const IQ4_TABLES: Iq4Tables = {
    let mut t = [[0i8; 32]; 4];
    let mut sel = 0;
    while sel < 4 {
        let mut k = 0;
        while k < 16 {
            t[sel][k] = IQ4K[k + 16 * (sel & 1)];
            t[sel][16 + k] = IQ4K[k + 16 * (sel >> 1)];
            k += 1;
        }
        sel += 1;
    }
    Iq4Tables(t)
};

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tab_iq4_pair(sel: usize) -> __m256i {
    let t: &'static Iq4Tables = &IQ4_TABLES;
    _mm256_load_si256(t.0[sel].as_ptr() as *const __m256i)
}

/// The IQ5 value table in 16-entry halves, each in both lanes: entry `2·shifted + high`
/// holds `iq5nl_values[32·shifted + 16·high..][..16]`.
#[repr(align(32))]
struct Iq5Tables([[i8; 32]; 4]);

const IQ5_TABLES: Iq5Tables = {
    let mut t = [[0i8; 32]; 4];
    let mut sel = 0;
    while sel < 4 {
        let mut k = 0;
        while k < 16 {
            t[sel][k] = IQ5NL[16 * sel + k];
            t[sel][16 + k] = IQ5NL[16 * sel + k];
            k += 1;
        }
        sel += 1;
    }
    Iq5Tables(t)
};

#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn tab_iq5(sel: usize) -> __m256i {
    let t: &'static Iq5Tables = &IQ5_TABLES;
    _mm256_load_si256(t.0[sel].as_ptr() as *const __m256i)
}

// ---------------------------------------------------------------- superblock bodies

/// The values of chunk c = 0..8 (32 weights each) of a 2-bit type, or of a 3-bit one when
/// `$qh` holds the high bits: `f(c, values)`. Chunk c takes bits 2p..2p+2 (p = c mod 4) of the
/// 32 index bytes of its half and bit c of each `qh` byte.
///
/// Odd chunks leave their two bits in place (bits 2-3) and put the high bit at bit 0, so they
/// look up a second table with stride 4 (`stride4`): that spares their shifts. Even chunks
/// use bits 0-1 and bit 2 with the plain table.
///
/// The `qh` shifts need constants. For one activation row (`$n` = 1) LLVM unrolls both
/// loops and shifts by c; in wider tiles it leaves the halves a loop, so there each half's
/// bits are shifted down once and the shifts depend on p alone (one more shift per half,
/// which made the single-row kernels 5 % slower).
macro_rules! for_values_2bit {
    ($n:expr, $qs:expr, $qh:expr, $tab:expr, |$c:ident, $v:ident| $body:block) => {{
        let m_even = _mm256_set1_epi8(0x03);
        let m_odd = _mm256_set1_epi8(0x0c);
        let hb_even = _mm256_set1_epi8(0x04);
        let hb_odd = _mm256_set1_epi8(0x01);
        let tab_odd = stride4($tab);
        let qh: Option<__m256i> = $qh.map(|p: *const u8| loadu256(p));
        for half in 0..2usize {
            let bits = loadu256($qs.add(32 * half));
            let upper = _mm256_srli_epi16::<4>(bits);
            for p in 0..4usize {
                let $c = 4 * half + p;
                let src = if p < 2 { bits } else { upper };
                let odd = p % 2 == 1;
                let mut idx = _mm256_and_si256(src, if odd { m_odd } else { m_even });
                if let Some(h) = qh {
                    // Bit c of each byte, moved to bit 2 (even chunks) or bit 0 (odd ones).
                    let h = if $n == 1 {
                        match $c {
                            0 => _mm256_slli_epi16::<2>(h),
                            1 => _mm256_srli_epi16::<1>(h),
                            2 => h,
                            3 => _mm256_srli_epi16::<3>(h),
                            4 => _mm256_srli_epi16::<2>(h),
                            5 => _mm256_srli_epi16::<5>(h),
                            6 => _mm256_srli_epi16::<4>(h),
                            _ => _mm256_srli_epi16::<7>(h),
                        }
                    } else {
                        // The half's bits shifted down (hoisted out of the p loop), then p.
                        let h = _mm256_srl_epi16(h, _mm_cvtsi32_si128(4 * half as i32));
                        match p {
                            0 => _mm256_slli_epi16::<2>(h),
                            1 => _mm256_srli_epi16::<1>(h),
                            2 => h,
                            _ => _mm256_srli_epi16::<3>(h),
                        }
                    };
                    idx = _mm256_or_si256(
                        idx,
                        _mm256_and_si256(h, if odd { hb_odd } else { hb_even }),
                    );
                }
                let $v = _mm256_shuffle_epi8(if odd { tab_odd } else { $tab }, idx);
                $body
            }
        }
    }};
}

/// An 8-entry table (entries 4..8 chosen by the high bit) re-laid for indices 4·j + h:
/// entry 4j holds value j and entry 4j + 1 holds value j + 4.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn stride4(tab: __m256i) -> __m256i {
    let spread = _mm256_setr_epi8(
        0, 4, -1, -1, 1, 5, -1, -1, 2, 6, -1, -1, 3, 7, -1, -1, 0, 4, -1, -1, 1, 5, -1, -1, 2, 6,
        -1, -1, 3, 7, -1, -1,
    );
    _mm256_shuffle_epi8(tab, spread)
}

/// 4-bit indices, 16 bytes per 32 weights: `f(c, idx)` for chunk c = 0..8.
macro_rules! for_chunks_4bit {
    ($qs:expr, |$c:ident, $idx:ident| $body:block) => {{
        let m = _mm256_set1_epi8(0x0f);
        for k in 0..4usize {
            let b = loadu256($qs.add(32 * k));
            let lo = _mm256_and_si256(b, m);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(b), m);
            {
                let $c = 2 * k;
                let $idx = _mm256_permute2x128_si256::<0x20>(lo, hi);
                $body
            }
            {
                let $c = 2 * k + 1;
                let $idx = _mm256_permute2x128_si256::<0x31>(lo, hi);
                $body
            }
        }
    }};
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_unsigned(u: __m256i, y: *const u8, c: usize) -> __m256i {
    _mm256_maddubs_epi16(u, loadu256(y.add(Q8K_QS + 32 * c)))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_signed(v: __m256i, y: *const u8, c: usize) -> __m256i {
    let q = loadu256(y.add(Q8K_QS + 32 * c));
    _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(v, q))
}

/// `|v| · q` summed in pairs with the sign moved onto the activations: `|v|` is shared by
/// every activation row of a tile. Exact unless `q` holds -128 (whose sign flip wraps), so
/// only for activations free of it (`ActRows::has_min8`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_abs_shared(abs_v: __m256i, v: __m256i, y: *const u8, c: usize) -> __m256i {
    let q = loadu256(y.add(Q8K_QS + 32 * c));
    _mm256_maddubs_epi16(abs_v, _mm256_sign_epi8(q, v))
}

/// Adds chunk c of signed 4-bit values `v` (i16 scales `s`) to the sums of the `N`
/// activation rows, with the sign trick `ABS_SHARED` selects (`|v|` formed once here).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn add_signed_chunk<const N: usize, const ABS_SHARED: bool>(
    acc: &mut [__m256i; N],
    v: __m256i,
    s: __m256i,
    y: &[*const u8; N],
    c: usize,
) {
    let abs_v = _mm256_abs_epi8(v);
    for j in 0..N {
        let p = if ABS_SHARED {
            dot_abs_shared(abs_v, v, y[j], c)
        } else {
            dot_signed(v, y[j], c)
        };
        acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(p, s));
    }
}

// ---------------------------------------------------------------- the kinds

/// One weight format's AVX2 pieces: the exact integer sums of one superblock against `N`
/// activation rows, and the value table they look up. The kernels over rows and tiles
/// ([`rows`], [`tile`], [`single`]) are generic over it; the block size, the row prefix and
/// the fold factors (an fp16 scale per block or one per row) come from `KIND`'s layout.
/// The methods carry their own `#[target_feature]` and inline into the generic kernels.
pub(super) trait Avx2Kind {
    const KIND: DotType;
    /// Bytes of one block.
    const BYTES: usize = Self::KIND.block_bytes();
    /// Whether blocks carry their own fp16 scale (K types) rather than one per row.
    const BLOCK_SCALE: bool = Self::KIND.layout().block_scale;

    /// The value table [`Avx2Kind::sb`] takes (a zero vector for types that pick their
    /// tables per chunk).
    unsafe fn tab() -> __m256i;

    /// The integer sums of the superblock at `x` against the activation blocks `y`, each in
    /// 8 × i32 lanes. The weights are decoded once and shared by the `N` rows: that is what
    /// makes a batch of activations cheaper per row than one. `NO_MIN8`: the activations
    /// hold no -128, which lets the signed types share `|v|` between rows
    /// ([`dot_abs_shared`]); the others ignore it.
    unsafe fn sb<const N: usize, const NO_MIN8: bool>(
        x: *const u8,
        y: [*const u8; N],
        tab: __m256i,
    ) -> [__m256i; N];
}

pub(super) struct Iq2k;

impl Avx2Kind for Iq2k {
    const KIND: DotType = DotType::Iq2K;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tab() -> __m256i {
        tab_iq2()
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sb<const N: usize, const NO_MIN8: bool>(
        x: *const u8,
        y: [*const u8; N],
        tab: __m256i,
    ) -> [__m256i; N] {
        let st = prep_iq2k(x);
        let mut acc = [_mm256_setzero_si256(); N];
        for j in 0..N {
            acc[j] = st.mins(y[j]);
        }
        for_values_2bit!(N, x.add(12), None::<*const u8>, tab, |c, v| {
            let s = chunk_scale(st.eo, c);
            for j in 0..N {
                let p = dot_unsigned(v, y[j], c);
                acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(p, s));
            }
        });
        acc
    }
}

pub(super) struct Iq3k;

impl Avx2Kind for Iq3k {
    const KIND: DotType = DotType::Iq3K;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tab() -> __m256i {
        tab_iq3()
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sb<const N: usize, const NO_MIN8: bool>(
        x: *const u8,
        y: [*const u8; N],
        tab: __m256i,
    ) -> [__m256i; N] {
        let st = prep_iq3k(x);
        let mut acc = [_mm256_setzero_si256(); N];
        for j in 0..N {
            acc[j] = st.mins(y[j]);
        }
        for_values_2bit!(N, x.add(14), Some(x.add(78)), tab, |c, v| {
            let s = chunk_scale(st.eo, c);
            for j in 0..N {
                let p = dot_unsigned(v, y[j], c);
                acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(p, s));
            }
        });
        acc
    }
}

pub(super) struct Iq4k;

impl Avx2Kind for Iq4k {
    const KIND: DotType = DotType::Iq4K;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tab() -> __m256i {
        _mm256_setzero_si256()
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sb<const N: usize, const NO_MIN8: bool>(
        x: *const u8,
        y: [*const u8; N],
        _tab: __m256i,
    ) -> [__m256i; N] {
        let eo = scales_iq4k(x);
        let extra = rd_u16_at(x.add(2)) as usize;
        let mut acc = [_mm256_setzero_si256(); N];
        for_chunks_4bit!(x.add(16), |c, idx| {
            let v = _mm256_shuffle_epi8(tab_iq4_pair((extra >> (2 * c)) & 3), idx);
            add_signed_chunk::<N, NO_MIN8>(&mut acc, v, chunk_scale(eo, c), &y, c);
        });
        acc
    }
}

pub(super) struct Iq2ks;

impl Avx2Kind for Iq2ks {
    const KIND: DotType = DotType::Iq2Ks;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tab() -> __m256i {
        tab_iq2()
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sb<const N: usize, const NO_MIN8: bool>(
        x: *const u8,
        y: [*const u8; N],
        tab: __m256i,
    ) -> [__m256i; N] {
        let st = prep_iq2ks(x);
        let mut acc = [_mm256_setzero_si256(); N];
        for j in 0..N {
            acc[j] = st.mins(y[j]);
        }
        for_values_2bit!(N, x.add(6), None::<*const u8>, tab, |c, v| {
            let s = chunk_scale(st.sc, c);
            for j in 0..N {
                let p = dot_unsigned(v, y[j], c);
                acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(p, s));
            }
        });
        acc
    }
}

pub(super) struct Iq3ks;

impl Avx2Kind for Iq3ks {
    const KIND: DotType = DotType::Iq3Ks;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tab() -> __m256i {
        tab_iq3()
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sb<const N: usize, const NO_MIN8: bool>(
        x: *const u8,
        y: [*const u8; N],
        tab: __m256i,
    ) -> [__m256i; N] {
        let st = prep_iq3ks(x);
        let mut acc = [_mm256_setzero_si256(); N];
        for j in 0..N {
            acc[j] = st.mins(y[j]);
        }
        for_values_2bit!(N, x.add(6), Some(x.add(70)), tab, |c, v| {
            let s = chunk_scale(st.sc, c);
            for j in 0..N {
                let p = dot_unsigned(v, y[j], c);
                acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(p, s));
            }
        });
        acc
    }
}

pub(super) struct Iq4ks;

impl Avx2Kind for Iq4ks {
    const KIND: DotType = DotType::Iq4Ks;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tab() -> __m256i {
        _mm256_setzero_si256()
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sb<const N: usize, const NO_MIN8: bool>(
        x: *const u8,
        y: [*const u8; N],
        _tab: __m256i,
    ) -> [__m256i; N] {
        let sc = scales_iq4ks(x);
        let mut acc = [_mm256_setzero_si256(); N];
        for_chunks_4bit!(x.add(8), |c, idx| {
            // Bit 0 of the scale byte: this 32-weight sub-block uses the shifted table (both
            // lanes).
            let v = _mm256_shuffle_epi8(tab_iq4_pair(3 * (*x.add(c) & 1) as usize), idx);
            add_signed_chunk::<N, NO_MIN8>(&mut acc, v, chunk_scale(sc, c), &y, c);
        });
        acc
    }
}

/// IQ5_KS: 32-weight sub-block c takes its low index bits from nibble c%2 of the 32 bytes at
/// `qs + 32(c/2)` and its fifth bit from bit c of the 32 `qh` bytes; the value is a `vpshufb`
/// in the low or the high 16 entries of its (base or shifted) row, the fifth bit choosing
/// between the two by `vpblendvb`. The values are signed (|v| <= 126), so the 4-bit types'
/// sign trick multiplies them exactly.
pub(super) struct Iq5ks;

impl Avx2Kind for Iq5ks {
    const KIND: DotType = DotType::Iq5Ks;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tab() -> __m256i {
        _mm256_setzero_si256()
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sb<const N: usize, const NO_MIN8: bool>(
        x: *const u8,
        y: [*const u8; N],
        _tab: __m256i,
    ) -> [__m256i; N] {
        let sc = scales_iq4ks(x);
        let qh = loadu256(x.add(136));
        let m = _mm256_set1_epi8(0x0f);
        let mut acc = [_mm256_setzero_si256(); N];
        for k in 0..4usize {
            let b = loadu256(x.add(8 + 32 * k));
            for (h, idx) in [
                _mm256_and_si256(b, m),
                _mm256_and_si256(_mm256_srli_epi16::<4>(b), m),
            ]
            .into_iter()
            .enumerate()
            {
                let c = 2 * k + h;
                let sel = 2 * (*x.add(c) & 1) as usize;
                // Bit c of each qh byte moved to bit 7, the bit `vpblendvb` reads.
                let high = _mm256_sll_epi16(qh, _mm_cvtsi32_si128(7 - c as i32));
                let v = _mm256_blendv_epi8(
                    _mm256_shuffle_epi8(tab_iq5(sel), idx),
                    _mm256_shuffle_epi8(tab_iq5(sel + 1), idx),
                    high,
                );
                add_signed_chunk::<N, NO_MIN8>(&mut acc, v, chunk_scale(sc, c), &y, c);
            }
        }
        acc
    }
}

// ---------------------------------------------------------------- row entry points

/// Four superblocks' fold factors in f64 (K types: block fp16 scale × activation scale, as
/// `acc_k` forms them).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn scales4_k(x: [*const u8; 4], y: [*const u8; 4]) -> __m256d {
    let dw = _mm_cvtph_ps(_mm_setr_epi16(
        rd_u16_at(x[0]) as i16,
        rd_u16_at(x[1]) as i16,
        rd_u16_at(x[2]) as i16,
        rd_u16_at(x[3]) as i16,
        0,
        0,
        0,
        0,
    ));
    _mm256_mul_pd(_mm256_cvtps_pd(dw), _mm256_cvtps_pd(d8_4(y)))
}

/// KS types: the activation scale alone (`acc_ks`; the row scale comes at the end).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scales4_ks(_x: [*const u8; 4], y: [*const u8; 4]) -> __m256d {
    _mm256_cvtps_pd(d8_4(y))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn d8_4(y: [*const u8; 4]) -> __m128 {
    _mm_setr_ps(
        rd_f32_at(y[0]),
        rd_f32_at(y[1]),
        rd_f32_at(y[2]),
        rd_f32_at(y[3]),
    )
}

/// One superblock folded in by the scalar twin's own rule (the tail of a row).
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn fold1_k(acc: f64, x: *const u8, y: *const u8, sumi: i32) -> f64 {
    acc_k(acc, f16c(rd_u16_at(x)), rd_f32_at(y), sumi)
}

#[inline]
pub(crate) unsafe fn fold1_ks(acc: f64, _x: *const u8, y: *const u8, sumi: i32) -> f64 {
    acc_ks(acc, rd_f32_at(y), sumi)
}

/// One superblock's fold factors for up to four activation rows whose scales are `d8`, K
/// types: the block's fp16 scale times each activation scale (as `acc_k` forms them).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn act_scales_k(x: *const u8, d8: __m256d) -> __m256d {
    _mm256_mul_pd(_mm256_set1_pd(f16c(rd_u16_at(x)) as f64), d8)
}

/// KS types: the activation scales alone (`acc_ks`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn act_scales_ks(_x: *const u8, d8: __m256d) -> __m256d {
    d8
}

/// Activation rows per group of a tile: 8 ran faster than 4 on every type (batches of 8,
/// 256 x 4096), although 8 rows' integer sums no longer all stay in registers.
const TILE_ACTS: usize = 8;

/// The weight rows of a tile and where one group of activation rows' results go:
/// `out[r * stride + j]` for weight row r and the group's activation row j.
#[derive(Clone, Copy)]
struct TilePart {
    rows: *const u8,
    row_bytes: usize,
    nrows: usize,
    /// Superblocks per row.
    nb: usize,
    out: *mut f32,
    stride: usize,
}

/// `N` pointers `stride` bytes apart from `base`.
#[inline]
unsafe fn strided<const N: usize>(base: *const u8, stride: usize) -> [*const u8; N] {
    let mut p = [base; N];
    for (j, p) in p.iter_mut().enumerate() {
        *p = base.add(j * stride);
    }
    p
}

/// Runs `group::<K, N, NO_MIN8>` with N = `n` (1..=8) on the activation rows `stride` bytes
/// apart from `base`. No target features and always inlined, so that the groups inline into
/// [`tile`] as they would from its own body: a `#[target_feature]` dispatcher of its own was
/// not inlined, and in it LLVM scheduled the 8-row loop worse (iq4_k's tile 10 % slower:
/// each chunk's 8 products waited in registers for the next chunk's, and 7 of the 8
/// accumulators went to the stack on every iteration).
#[inline(always)]
unsafe fn group_of<K: Avx2Kind, const NO_MIN8: bool>(
    n: usize,
    base: *const u8,
    stride: usize,
    d8: &[f64],
    part: TilePart,
) {
    match n {
        1 => group::<K, 1, NO_MIN8>(strided(base, stride), d8, part),
        2 => group::<K, 2, NO_MIN8>(strided(base, stride), d8, part),
        3 => group::<K, 3, NO_MIN8>(strided(base, stride), d8, part),
        4 => group::<K, 4, NO_MIN8>(strided(base, stride), d8, part),
        5 => group::<K, 5, NO_MIN8>(strided(base, stride), d8, part),
        6 => group::<K, 6, NO_MIN8>(strided(base, stride), d8, part),
        7 => group::<K, 7, NO_MIN8>(strided(base, stride), d8, part),
        8 => group::<K, 8, NO_MIN8>(strided(base, stride), d8, part),
        n => unreachable!("{n} activation rows in one tile call"),
    }
}

/// Four superblocks' fold factors (`scales4_k` or `scales4_ks`).
#[inline(always)]
unsafe fn scales4<K: Avx2Kind>(x: [*const u8; 4], y: [*const u8; 4]) -> __m256d {
    if K::BLOCK_SCALE {
        scales4_k(x, y)
    } else {
        scales4_ks(x, y)
    }
}

/// One superblock folded in (`fold1_k` or `fold1_ks`).
#[inline(always)]
unsafe fn fold1<K: Avx2Kind>(acc: f64, x: *const u8, y: *const u8, sumi: i32) -> f64 {
    if K::BLOCK_SCALE {
        fold1_k(acc, x, y, sumi)
    } else {
        fold1_ks(acc, x, y, sumi)
    }
}

/// One superblock's fold factors for up to four activation rows (`act_scales_k` or `_ks`).
#[inline(always)]
unsafe fn act_scales<K: Avx2Kind>(x: *const u8, d8: __m256d) -> __m256d {
    if K::BLOCK_SCALE {
        act_scales_k(x, d8)
    } else {
        act_scales_ks(x, d8)
    }
}

/// One row against Q8_K activations.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn single<K: Avx2Kind>(row: &[u8], q8k: &[u8]) -> f32 {
    let mut out = [0.0f32];
    rows::<K>(row, q8k, &mut out);
    out[0]
}

/// `out.len()` consecutive rows against the same Q8_K activations. Superblocks go in groups
/// of four: one horizontal reduction gives the four exact integer sums, and their f64
/// products are formed together; the products are then added to the accumulator one at a
/// time, in superblock order, exactly as the scalar twin does (`acc + scale · sumi`). The row
/// scale (1 for K types, where `finish_ks` equals `finish_k`) is applied last. The rows of one
/// call share the set-up (tables, constants, length check): on rows of 4096 that made iq3_k
/// 6 % faster, iq3_ks and iq4_k 3-4 %.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn rows<K: Avx2Kind>(rows: &[u8], q8k: &[u8], out: &mut [f32]) {
    let (nb, row_bytes) = check_rows(K::KIND, rows, q8k, out.len());
    let tab = K::tab();
    let ys = q8k.as_ptr();
    let zero = _mm256_setzero_si256();
    for (r, o) in out.iter_mut().enumerate() {
        let row = rows.as_ptr().add(r * row_bytes);
        let xs = row.add(K::KIND.row_meta());
        let mut acc = 0.0f64;
        let mut i = 0;
        // The previous group's sums are reduced and folded at the top of the next
        // iteration, when they are long ready: reducing right behind the group's own
        // last superblock left a chain of dependent steps that stalled retirement (28 %
        // of the samples for iq2_k). The first fold adds four zeros to +0.0: a no-op.
        let mut pending = ([zero; 4], _mm256_setzero_pd());
        while i + 4 <= nb {
            let ([a, b, c, d], scales) = pending;
            let sums = hsum4_i32(a, b, c, d);
            acc = fold4(acc, _mm256_mul_pd(scales, _mm256_cvtepi32_pd(sums)));
            let x = [0, 1, 2, 3].map(|k| xs.add((i + k) * K::BYTES));
            let y = [0, 1, 2, 3].map(|k| ys.add((i + k) * Q8K_BYTES));
            pending = (
                [
                    K::sb::<1, false>(x[0], [y[0]], tab)[0],
                    K::sb::<1, false>(x[1], [y[1]], tab)[0],
                    K::sb::<1, false>(x[2], [y[2]], tab)[0],
                    K::sb::<1, false>(x[3], [y[3]], tab)[0],
                ],
                scales4::<K>(x, y),
            );
            i += 4;
        }
        let ([a, b, c, d], scales) = pending;
        let sums = hsum4_i32(a, b, c, d);
        acc = fold4(acc, _mm256_mul_pd(scales, _mm256_cvtepi32_pd(sums)));
        for i in i..nb {
            let x = xs.add(i * K::BYTES);
            let y = ys.add(i * Q8K_BYTES);
            acc = fold1::<K>(acc, x, y, hsum_i32(K::sb::<1, false>(x, [y], tab)[0]));
        }
        *o = finish_ks(acc, row_scale_at(K::KIND, row));
    }
}

/// Weight rows × the activation rows of `acts`: `out[r * acts.len() + j]` is row r dotted
/// with activation row j. The activation rows go in groups of up to [`TILE_ACTS`], and each
/// superblock's weights are decoded once per group. Every dot equals the single-row kernel's
/// bit for bit: each activation row has its own f64 lane, where its products and sums are
/// formed in superblock order exactly as `acc_k` / `acc_ks` form them.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile<K: Avx2Kind>(rows: &[u8], acts: &ActRows, out: &mut [f32]) {
    if acts.is_empty() {
        assert!(
            out.is_empty(),
            "{}: outputs without activation rows",
            K::KIND.name()
        );
        return;
    }
    if acts.len() == 1 {
        // One activation row: the multi-row kernel, faster than a tile of one.
        return self::rows::<K>(rows, acts.bytes(), out);
    }
    let (nb, row_bytes, nrows) = check_tile(K::KIND, rows, acts, out.len());
    let (n_acts, act_bytes, no_min8) = (acts.len(), acts.row_bytes(), !acts.has_min8());
    // The group's activation scales in f64, 8 per superblock (zero past the group).
    let mut d8 = vec![0.0f64; 8 * nb];
    let mut j0 = 0;
    while j0 < n_acts {
        let n = (n_acts - j0).min(TILE_ACTS);
        let base = acts.bytes().as_ptr().add(j0 * act_bytes);
        for (i, d8) in d8.chunks_exact_mut(8).enumerate() {
            for (j, d8) in d8.iter_mut().enumerate() {
                *d8 = if j < n {
                    rd_f32_at(base.add(j * act_bytes + i * Q8K_BYTES)) as f64
                } else {
                    0.0
                };
            }
        }
        let part = TilePart {
            rows: rows.as_ptr(),
            row_bytes,
            nrows,
            nb,
            out: out.as_mut_ptr().add(j0),
            stride: n_acts,
        };
        if no_min8 {
            group_of::<K, true>(n, base, act_bytes, &d8, part);
        } else {
            group_of::<K, false>(n, base, act_bytes, &d8, part);
        }
        j0 += n;
    }
}

/// One group of `N` activation rows of a tile (see [`tile`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group<K: Avx2Kind, const N: usize, const NO_MIN8: bool>(
    ys: [*const u8; N],
    d8: &[f64],
    t: TilePart,
) {
    let TilePart {
        rows,
        row_bytes,
        nrows,
        nb,
        out,
        stride,
    } = t;
    let tab = K::tab();
    for r in 0..nrows {
        let row = rows.add(r * row_bytes);
        let xs = row.add(K::KIND.row_meta());
        // Lane k of acc[g]: activation row 4g + k.
        let mut acc = [_mm256_setzero_pd(); 2];
        for i in 0..nb {
            let x = xs.add(i * K::BYTES);
            let mut y = ys;
            for y in y.iter_mut() {
                *y = y.add(i * Q8K_BYTES);
            }
            let mut sums = [_mm256_setzero_si256(); 8];
            sums[..N].copy_from_slice(&K::sb::<N, NO_MIN8>(x, y, tab));
            let d8 = d8.as_ptr().add(8 * i);
            if N <= 4 {
                let s = hsum4_i32(sums[0], sums[1], sums[2], sums[3]);
                let f = act_scales::<K>(x, _mm256_loadu_pd(d8));
                acc[0] = _mm256_add_pd(acc[0], _mm256_mul_pd(f, _mm256_cvtepi32_pd(s)));
            } else {
                let s = hsum8_i32(sums);
                let lo = _mm256_castsi256_si128(s);
                let hi = _mm256_extracti128_si256::<1>(s);
                let f = act_scales::<K>(x, _mm256_loadu_pd(d8));
                acc[0] = _mm256_add_pd(acc[0], _mm256_mul_pd(f, _mm256_cvtepi32_pd(lo)));
                let f = act_scales::<K>(x, _mm256_loadu_pd(d8.add(4)));
                acc[1] = _mm256_add_pd(acc[1], _mm256_mul_pd(f, _mm256_cvtepi32_pd(hi)));
            }
        }
        let d_row = row_scale_at(K::KIND, row);
        let mut lanes = [0.0f64; 8];
        _mm256_storeu_pd(lanes.as_mut_ptr(), acc[0]);
        _mm256_storeu_pd(lanes.as_mut_ptr().add(4), acc[1]);
        for (j, &v) in lanes.iter().enumerate().take(N) {
            *out.add(r * stride + j) = finish_ks(v, d_row);
        }
    }
}

/// What `simd` builds from one kind's generic kernels (the safe fn pointers it hands out
/// after the CPU check); [`for_kind`] calls it with the kind's marker type.
pub(super) trait ForKind {
    type Out;
    fn of<K: Avx2Kind>() -> Self::Out;
}

/// `F::of::<K>()` with `K` the marker type of `kind`: the list of the kinds this path has.
pub(super) fn for_kind<F: ForKind>(kind: DotType) -> F::Out {
    match kind {
        DotType::Iq2K => F::of::<Iq2k>(),
        DotType::Iq3K => F::of::<Iq3k>(),
        DotType::Iq4K => F::of::<Iq4k>(),
        DotType::Iq2Ks => F::of::<Iq2ks>(),
        DotType::Iq3Ks => F::of::<Iq3ks>(),
        DotType::Iq4Ks => F::of::<Iq4ks>(),
        DotType::Iq5Ks => F::of::<Iq5ks>(),
    }
}
