//! NEON kernels (aarch64), in two variants: plain NEON (`smull`/`smlal` + pairwise widening
//! adds) and `dotprod` (`sdot`, emitted with inline assembly because the intrinsic is not
//! stable in every supported Rust). Dependency-free and Rust 1.63-compatible (the NEON tests
//! build this file standalone with Debian's rustc for aarch64 and run it under qemu).
//!
//! Values come from signed tables via `tbl` (the *base* half only); the shifted-table
//! constant (+5 for iq2nl, +4 for iq3nl/iq4k) is added through the Q8_K block sums, like the
//! x86 kernels. Each 16-weight group's products are summed in int32, four groups at a time
//! are reduced pairwise and multiplied by their scales. The per-superblock integer result is
//! exact and folded in with the shared f64 accumulator, so results are bit-identical to the
//! scalar twins.

#![allow(clippy::missing_safety_doc)]

#[cfg(target_arch = "aarch64")]
use core::arch::aarch64::*;

use super::scalar::{
    acc_k, acc_ks, check_lens, check_tile, f16_to_f32, finish_k, finish_ks, rd_f32_at, rd_u16_at,
    rd_u32_at, row_scale, ActRows, DotType, IQ4K, IQ5NL, Q8K_BSUMS, Q8K_BYTES, Q8K_QS,
};

const TAB2: [i8; 16] = [-31, -13, 1, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const TAB3: [i8; 16] = [-63, -40, -23, -10, 1, 13, 28, 47, 0, 0, 0, 0, 0, 0, 0, 0];
const BITS: u64 = 0x8040_2010_0804_0201;

/// Decoded per-superblock scales: `s` = signed scale of each 16-weight group, `m` = the
/// shifted-table constant of each group (0, or 4 / 5).
struct Scales {
    s: int8x16_t,
    m: int8x16_t,
}

/// Lane k = 0xff if bit k of `b` is set.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn bits16(b: u16) -> uint8x16_t {
    let e = vcombine_u8(vdup_n_u8(b as u8), vdup_n_u8((b >> 8) as u8));
    vtstq_u8(e, vreinterpretq_u8_u64(vdupq_n_u64(BITS)))
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn bits8(b: u8) -> uint8x8_t {
    vtst_u8(vdup_n_u8(b), vreinterpret_u8_u64(vdup_n_u64(BITS)))
}

/// 16 nibbles of 8 bytes in natural order (lo0, hi0, lo1, hi1, ...).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nib16(p: *const u8) -> uint8x16_t {
    let b = vld1_u8(p);
    let z = vzip_u8(vand_u8(b, vdup_n_u8(15)), vshr_n_u8::<4>(b));
    vcombine_u8(z.0, z.1)
}

/// Each of 8 lanes twice: 16 groups of 16 from 8 blocks of 32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dup8(v: int8x8_t) -> int8x16_t {
    let z = vzip_s8(v, v);
    vcombine_s8(z.0, z.1)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn scales_iq2k(x: *const u8) -> Scales {
    Scales {
        s: vsubq_s8(vreinterpretq_s8_u8(nib16(x.add(4))), vdupq_n_s8(8)),
        m: vreinterpretq_s8_u8(vandq_u8(bits16(rd_u16_at(x.add(2))), vdupq_n_u8(5))),
    }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn scales_iq3k(x: *const u8) -> Scales {
    let n = nib16(x.add(6));
    let mag = vreinterpretq_s8_u8(vaddq_u8(vaddq_u8(n, n), vdupq_n_u8(1)));
    let neg = bits16(rd_u16_at(x.add(4)));
    Scales {
        s: vbslq_s8(neg, vnegq_s8(mag), mag),
        m: vreinterpretq_s8_u8(vandq_u8(bits16(rd_u16_at(x.add(2))), vdupq_n_u8(4))),
    }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn scales_iq4k(x: *const u8) -> Scales {
    let lo = nib16(x.add(8));
    const REP: [u8; 16] = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3];
    const SHR: [i8; 16] = [0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6];
    let h = vreinterpretq_u8_u32(vdupq_n_u32(rd_u32_at(x.add(4))));
    let h = vqtbl1q_u8(h, vld1q_u8(REP.as_ptr()));
    let h = vandq_u8(vshlq_u8(h, vld1q_s8(SHR.as_ptr())), vdupq_n_u8(3));
    let code = vorrq_u8(lo, vshlq_n_u8::<4>(h));
    Scales {
        s: vsubq_s8(vreinterpretq_s8_u8(code), vdupq_n_s8(32)),
        m: vreinterpretq_s8_u8(vandq_u8(bits16(rd_u16_at(x.add(2))), vdupq_n_u8(4))),
    }
}

/// The 4 low-nibble / 4 high-nibble halves of 4 bytes, as 8 lanes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nib4(p: *const u8) -> (uint8x8_t, uint8x8_t) {
    let b = vcreate_u8(rd_u32_at(p) as u64);
    (vand_u8(b, vdup_n_u8(15)), vshr_n_u8::<4>(b))
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn scales_iq2ks(x: *const u8) -> Scales {
    let extra = rd_u16_at(x);
    let (lo, hi) = nib4(x.add(2));
    let nib = vzip_u8(lo, hi).0; // blocks 0..8: byte ib/2, nibble ib%2
    let b4 = vand_u8(bits8((extra >> 8) as u8), vdup_n_u8(16));
    let s = vsub_s8(vreinterpret_s8_u8(vorr_u8(nib, b4)), vdup_n_s8(16));
    let m = vreinterpret_s8_u8(vand_u8(bits8(extra as u8), vdup_n_u8(5)));
    Scales {
        s: dup8(s),
        m: dup8(m),
    }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn scales_iq3ks(x: *const u8) -> Scales {
    let extra = rd_u16_at(x);
    let (lo, hi) = nib4(x.add(2));
    // blocks 0..4: low nibbles of bytes 0..4; blocks 4..8: high nibbles.
    let nib = vreinterpret_u8_u32(vzip1_u32(vreinterpret_u32_u8(lo), vreinterpret_u32_u8(hi)));
    let b4 = vand_u8(bits8(extra as u8), vdup_n_u8(16));
    let s = vsub_s8(vreinterpret_s8_u8(vorr_u8(nib, b4)), vdup_n_s8(16));
    let m = vreinterpret_s8_u8(vand_u8(bits8((extra >> 8) as u8), vdup_n_u8(4)));
    Scales {
        s: dup8(s),
        m: dup8(m),
    }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn scales_iq4ks(x: *const u8) -> Scales {
    let b = vld1_u8(x);
    let s = vsub_s8(
        vreinterpret_s8_u8(vand_u8(b, vdup_n_u8(0xfe))),
        vdup_n_s8(127),
    );
    let m = vreinterpret_s8_u8(vshl_n_u8::<2>(vand_u8(b, vdup_n_u8(1))));
    Scales {
        s: dup8(s),
        m: dup8(m),
    }
}

/// IQ5_KS: IQ4_KS's scale bytes; the shifted row of iq5nl is the base + 2.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn scales_iq5ks(x: *const u8) -> Scales {
    let b = vld1_u8(x);
    let s = vsub_s8(
        vreinterpret_s8_u8(vand_u8(b, vdup_n_u8(0xfe))),
        vdup_n_s8(127),
    );
    let m = vreinterpret_s8_u8(vshl_n_u8::<1>(vand_u8(b, vdup_n_u8(1))));
    Scales {
        s: dup8(s),
        m: dup8(m),
    }
}

/// Σ_g s_g · m_g · bsum_g, in 4 × i32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mins(sc: &Scales, y: *const u8) -> int32x4_t {
    let p0 = vmulq_s16(vmovl_s8(vget_low_s8(sc.s)), vmovl_s8(vget_low_s8(sc.m)));
    let p1 = vmulq_s16(vmovl_high_s8(sc.s), vmovl_high_s8(sc.m));
    let b0 = vreinterpretq_s16_u8(vld1q_u8(y.add(Q8K_BSUMS)));
    let b1 = vreinterpretq_s16_u8(vld1q_u8(y.add(Q8K_BSUMS + 16)));
    let a = vmull_s16(vget_low_s16(p0), vget_low_s16(b0));
    let a = vmlal_high_s16(a, p0, b0);
    let a = vmlal_s16(a, vget_low_s16(p1), vget_low_s16(b1));
    vmlal_high_s16(a, p1, b1)
}

/// Lane k of the result = Σ lanes of g[k].
#[inline]
#[target_feature(enable = "neon")]
unsafe fn quad(g0: int32x4_t, g1: int32x4_t, g2: int32x4_t, g3: int32x4_t) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(g0, g1), vpaddq_s32(g2, g3))
}

/// Groups 4k..4k+4 of the scales as i32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn scales32(s: int8x16_t) -> [int32x4_t; 4] {
    let lo = vmovl_s8(vget_low_s8(s));
    let hi = vmovl_high_s8(s);
    [
        vmovl_s16(vget_low_s16(lo)),
        vmovl_high_s16(lo),
        vmovl_s16(vget_low_s16(hi)),
        vmovl_high_s16(hi),
    ]
}

/// Table indices of the 16 groups of a 2-bit (optionally + high bit) superblock.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn idx_2bit(qs: *const u8, qh: Option<*const u8>) -> [uint8x16_t; 16] {
    let m3 = vdupq_n_u8(3);
    let m4 = vdupq_n_u8(4);
    let mut out = [vdupq_n_u8(0); 16];
    let (mut h0, mut h1) = match qh {
        Some(p) => (vld1q_u8(p), vld1q_u8(p.add(16))),
        None => (vdupq_n_u8(0), vdupq_n_u8(0)),
    };
    for half in 0..2 {
        let mut b0 = vld1q_u8(qs.add(32 * half));
        let mut b1 = vld1q_u8(qs.add(32 * half + 16));
        for p in 0..4 {
            let g = 8 * half + 2 * p;
            let mut i0 = vandq_u8(b0, m3);
            let mut i1 = vandq_u8(b1, m3);
            if qh.is_some() {
                i0 = vorrq_u8(i0, vandq_u8(vshlq_n_u8::<2>(h0), m4));
                i1 = vorrq_u8(i1, vandq_u8(vshlq_n_u8::<2>(h1), m4));
                h0 = vshrq_n_u8::<1>(h0);
                h1 = vshrq_n_u8::<1>(h1);
            }
            out[g] = i0;
            out[g + 1] = i1;
            b0 = vshrq_n_u8::<2>(b0);
            b1 = vshrq_n_u8::<2>(b1);
        }
    }
    out
}

/// Table indices of the 16 groups of a 4-bit superblock (16 bytes per 32 weights).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn idx_4bit(qs: *const u8) -> [uint8x16_t; 16] {
    let m = vdupq_n_u8(15);
    let mut out = [vdupq_n_u8(0); 16];
    for c in 0..8 {
        let b = vld1q_u8(qs.add(16 * c));
        out[2 * c] = vandq_u8(b, m);
        out[2 * c + 1] = vshrq_n_u8::<4>(b);
    }
    out
}

/// Table indices (0..32) of the 16 groups of an IQ5_KS superblock: group k (sub-block k/2)
/// takes nibble (k/2)%2 of `qs[32(k/4) + 16(k%2)..]` and bit k/2 of `qh[16(k%2)..]` as bit 4.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn idx_5bit(qs: *const u8, qh: *const u8) -> [uint8x16_t; 16] {
    let m = vdupq_n_u8(15);
    let b4 = vdupq_n_u8(16);
    let h = [vld1q_u8(qh), vld1q_u8(qh.add(16))];
    let mut out = [vdupq_n_u8(0); 16];
    for k in 0..16 {
        let ib = k / 2;
        let b = vld1q_u8(qs.add(32 * (ib / 2) + 16 * (k % 2)));
        let nib = if ib % 2 == 0 {
            vandq_u8(b, m)
        } else {
            vshrq_n_u8::<4>(b)
        };
        let high = vandq_u8(vtstq_u8(h[k % 2], vdupq_n_u8(1 << ib)), b4);
        out[k] = vorrq_u8(nib, high);
    }
    out
}

/// The row loop shared by all kernels (`k`: fp16 scale per block; `ks`: row scale first).
macro_rules! row_body {
    ($row:ident, $q8k:ident, $kind:expr, $tab:expr, $scales:ident, |$x:ident| $idx:expr, $sb:ident, $flavour:ident) => {{
        let nb = check_lens($kind, $row, $q8k);
        let tab = $tab;
        let (meta, bytes) = ($kind.row_meta(), $kind.block_bytes());
        let mut acc = 0.0f64;
        for i in 0..nb {
            let $x = $row.as_ptr().add(meta + i * bytes);
            let y = $q8k.as_ptr().add(i * Q8K_BYTES);
            let sc = $scales($x);
            let idx = $idx;
            let sumi = $sb(tab, &idx, &sc, y);
            acc = fold!($flavour, acc, $x, y, sumi);
        }
        finish!($flavour, acc, $kind, $row)
    }};
}

/// Activation rows a tile kernel takes at a time (each keeps its own f64 accumulator).
const TILE_ACTS: usize = 8;

/// The tile loop: each weight block is decoded once and dotted with every activation row's
/// block, each pair accumulated in the row kernel's order (so bit-identical to it).
macro_rules! tile_body {
    ($rows:ident, $acts:ident, $out:ident, $kind:expr, $tab:expr, $scales:ident, |$x:ident| $idx:expr, $sb:ident, $flavour:ident) => {{
        let (nb, row_bytes, nrows) = check_tile($kind, $rows, $acts, $out.len());
        let tab = $tab;
        let (meta, bytes) = ($kind.row_meta(), $kind.block_bytes());
        let (nacts, act_bytes) = ($acts.len(), $acts.row_bytes());
        let acts = $acts.bytes().as_ptr();
        for r in 0..nrows {
            let row = &$rows[r * row_bytes..(r + 1) * row_bytes];
            let mut j0 = 0;
            while j0 < nacts {
                let n = core::cmp::min(TILE_ACTS, nacts - j0);
                let mut acc = [0.0f64; TILE_ACTS];
                for i in 0..nb {
                    let $x = row.as_ptr().add(meta + i * bytes);
                    let sc = $scales($x);
                    let idx = $idx;
                    for (j, acc) in acc.iter_mut().enumerate().take(n) {
                        let y = acts.add((j0 + j) * act_bytes + i * Q8K_BYTES);
                        let sumi = $sb(tab, &idx, &sc, y);
                        *acc = fold!($flavour, *acc, $x, y, sumi);
                    }
                }
                for (j, &acc) in acc.iter().enumerate().take(n) {
                    $out[r * nacts + j0 + j] = finish!($flavour, acc, $kind, row);
                }
                j0 += n;
            }
        }
    }};
}

/// One block's exact integer sum folded into the f64 accumulator.
macro_rules! fold {
    (k, $acc:expr, $x:ident, $y:ident, $sumi:ident) => {
        acc_k($acc, f16_to_f32(rd_u16_at($x)), rd_f32_at($y), $sumi)
    };
    (ks, $acc:expr, $x:ident, $y:ident, $sumi:ident) => {
        acc_ks($acc, rd_f32_at($y), $sumi)
    };
}

macro_rules! finish {
    (k, $acc:expr, $kind:expr, $row:ident) => {
        finish_k($acc)
    };
    (ks, $acc:expr, $kind:expr, $row:ident) => {
        finish_ks($acc, row_scale($kind, $row))
    };
}

/// A type's row kernel (`row · q8k`) and tile kernel (every weight row · every activation row,
/// `out[r · acts + j]`), from one description: kind (its layout gives the block and row-prefix
/// bytes), value table (loaded), scale decoder, index decoder, superblock sum, scale flavour.
macro_rules! type_kernels {
    ($feat:literal, $dot:ident, $tile:ident, $doc:literal, $kind:expr, $tab:expr, $scales:ident, |$x:ident| $idx:expr, $sb:ident, $flavour:ident) => {
        #[doc = $doc]
        /// # Safety: the CPU must support the enabled features.
        #[target_feature(enable = $feat)]
        pub unsafe fn $dot(row: &[u8], q8k: &[u8]) -> f32 {
            row_body!(row, q8k, $kind, $tab, $scales, |$x| $idx, $sb, $flavour)
        }

        #[doc = $doc]
        /// Tile kernel. # Safety: the CPU must support the enabled features.
        #[target_feature(enable = $feat)]
        pub unsafe fn $tile(rows: &[u8], acts: &ActRows, out: &mut [f32]) {
            tile_body!(
                rows,
                acts,
                out,
                $kind,
                $tab,
                $scales,
                |$x| $idx,
                $sb,
                $flavour
            )
        }
    };
}

macro_rules! kernels {
    ($feat:literal, $group:ident) => {
        use super::*;

        /// Σ_g s_g Σ_{j∈g} q8_j · tab[idx_j] + mins, exact.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn superblock(
            tab: int8x16_t,
            idx: &[uint8x16_t; 16],
            sc: &Scales,
            y: *const u8,
        ) -> i32 {
            let mut g = [vdupq_n_s32(0); 16];
            for k in 0..16 {
                let v = vqtbl1q_s8(tab, idx[k]);
                let q = vld1q_s8(y.add(Q8K_QS + 16 * k) as *const i8);
                g[k] = $group(v, q);
            }
            let s32 = scales32(sc.s);
            let mut acc = mins(sc, y);
            for k in 0..4 {
                let t = quad(g[4 * k], g[4 * k + 1], g[4 * k + 2], g[4 * k + 3]);
                acc = vmlaq_s32(acc, t, s32[k]);
            }
            vaddvq_s32(acc)
        }

        /// `superblock` with a 32-entry table (`tbl` on two registers).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn superblock32(
            tab: int8x16x2_t,
            idx: &[uint8x16_t; 16],
            sc: &Scales,
            y: *const u8,
        ) -> i32 {
            let mut g = [vdupq_n_s32(0); 16];
            for k in 0..16 {
                let v = vqtbl2q_s8(tab, idx[k]);
                let q = vld1q_s8(y.add(Q8K_QS + 16 * k) as *const i8);
                g[k] = $group(v, q);
            }
            let s32 = scales32(sc.s);
            let mut acc = mins(sc, y);
            for k in 0..4 {
                let t = quad(g[4 * k], g[4 * k + 1], g[4 * k + 2], g[4 * k + 3]);
                acc = vmlaq_s32(acc, t, s32[k]);
            }
            vaddvq_s32(acc)
        }

        type_kernels!(
            $feat,
            vec_dot_iq2k,
            tile_iq2k,
            "IQ2_K · Q8_K.",
            DotType::Iq2K,
            vld1q_s8(TAB2.as_ptr()),
            scales_iq2k,
            |x| idx_2bit(x.add(12), None),
            superblock,
            k
        );
        type_kernels!(
            $feat,
            vec_dot_iq3k,
            tile_iq3k,
            "IQ3_K · Q8_K.",
            DotType::Iq3K,
            vld1q_s8(TAB3.as_ptr()),
            scales_iq3k,
            |x| idx_2bit(x.add(14), Some(x.add(78))),
            superblock,
            k
        );
        type_kernels!(
            $feat,
            vec_dot_iq4k,
            tile_iq4k,
            "IQ4_K · Q8_K.",
            DotType::Iq4K,
            vld1q_s8(IQ4K.as_ptr()),
            scales_iq4k,
            |x| idx_4bit(x.add(16)),
            superblock,
            k
        );
        type_kernels!(
            $feat,
            vec_dot_iq2ks,
            tile_iq2ks,
            "IQ2_KS (fp16 row scale first) · Q8_K.",
            DotType::Iq2Ks,
            vld1q_s8(TAB2.as_ptr()),
            scales_iq2ks,
            |x| idx_2bit(x.add(6), None),
            superblock,
            ks
        );
        type_kernels!(
            $feat,
            vec_dot_iq3ks,
            tile_iq3ks,
            "IQ3_KS (fp16 row scale first) · Q8_K.",
            DotType::Iq3Ks,
            vld1q_s8(TAB3.as_ptr()),
            scales_iq3ks,
            |x| idx_2bit(x.add(6), Some(x.add(70))),
            superblock,
            ks
        );
        type_kernels!(
            $feat,
            vec_dot_iq4ks,
            tile_iq4ks,
            "IQ4_KS (f32 row scale first) · Q8_K.",
            DotType::Iq4Ks,
            vld1q_s8(IQ4K.as_ptr()),
            scales_iq4ks,
            |x| idx_4bit(x.add(8)),
            superblock,
            ks
        );
        // The base half of iq5nl through `tbl` on two registers, the shifted half's +2 through
        // the block sums.
        type_kernels!(
            $feat,
            vec_dot_iq5ks,
            tile_iq5ks,
            "IQ5_KS (f32 row scale first) · Q8_K.",
            DotType::Iq5Ks,
            int8x16x2_t(vld1q_s8(IQ5NL.as_ptr()), vld1q_s8(IQ5NL.as_ptr().add(16))),
            scales_iq5ks,
            |x| idx_5bit(x.add(8), x.add(136)),
            superblock32,
            ks
        );
    };
}

/// Plain NEON: 16 products → 8 × i16 (pairs, |sum| <= 32512) → 4 × i32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn group_neon(v: int8x16_t, q: int8x16_t) -> int32x4_t {
    let p = vmull_s8(vget_low_s8(v), vget_low_s8(q));
    vpaddlq_s16(vmlal_high_s8(p, v, q))
}

/// `sdot`: 16 products → 4 × i32.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn group_sdot(v: int8x16_t, q: int8x16_t) -> int32x4_t {
    let mut acc = vdupq_n_s32(0);
    core::arch::asm!(
        "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) v,
        b = in(vreg) q,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

mod plain {
    kernels!("neon", group_neon);
}

mod dotprod {
    kernels!("neon,dotprod", group_sdot);
}

pub use self::dotprod::{
    tile_iq2k as tile_iq2k_dotprod, tile_iq2ks as tile_iq2ks_dotprod,
    tile_iq3k as tile_iq3k_dotprod, tile_iq3ks as tile_iq3ks_dotprod,
    tile_iq4k as tile_iq4k_dotprod, tile_iq4ks as tile_iq4ks_dotprod,
    tile_iq5ks as tile_iq5ks_dotprod, vec_dot_iq2k as vec_dot_iq2k_dotprod,
    vec_dot_iq2ks as vec_dot_iq2ks_dotprod, vec_dot_iq3k as vec_dot_iq3k_dotprod,
    vec_dot_iq3ks as vec_dot_iq3ks_dotprod, vec_dot_iq4k as vec_dot_iq4k_dotprod,
    vec_dot_iq4ks as vec_dot_iq4ks_dotprod, vec_dot_iq5ks as vec_dot_iq5ks_dotprod,
};
pub use self::plain::{
    tile_iq2k, tile_iq2ks, tile_iq3k, tile_iq3ks, tile_iq4k, tile_iq4ks, tile_iq5ks, vec_dot_iq2k,
    vec_dot_iq2ks, vec_dot_iq3k, vec_dot_iq3ks, vec_dot_iq4k, vec_dot_iq4ks, vec_dot_iq5ks,
};
