//! IQ5_K and IQ6_K (ik_llama.cpp `iqk_quantize.cpp`): 16 blocks of 16 with non-linear
//! 5-/6-bit value tables, a per-block "shifted table" bit in `extra`, and the imatrix
//! sanitised per 16 columns as for the other IQK types.
//!
//! | type  | bytes | layout                                                                  |
//! |-------|-------|-------------------------------------------------------------------------|
//! | IQ5_K | 176   | fp16 d, u16 extra, scales_h[4], scales_l[8] (6-bit, −32), qs[128], qh[32] |
//! | IQ6_K | 212   | fp16 d, u16 extra, int8 scales[16], qs[128], qh[64]                       |
//!
//! Element `64c + 32h + 16s + j` (c: 64-chunk, h: nibble half, s: 16-block within the 32)
//! takes its low nibble from `qs[32c + 16s + j]` (low nibble for h = 0) and its high bits
//! from `qh[16s + j]` (IQ5_K: bit 2c+h; IQ6_K: `qh[32(c/2) + 16s + j]`, bits 4(c%2)+2h).

use super::util::{
    build_nl_index, c_trunc_i32, f32_to_f16, nearest_int, read_f16, resolve_nl, sanitize_imatrix,
};

const QK_K: usize = 256;

/// `iq5nl_values`: base row, then the shifted row (= base + 2).
pub(super) const IQ5NL_VALUES: [i8; 64] = [
    -126, -114, -103, -92, -83, -74, -65, -57, -50, -43, -36, -30, -24, -18, -12, -6, -1, 5, 11,
    17, 23, 29, 36, 43, 51, 59, 68, 77, 87, 97, 109, 121, //
    -124, -112, -101, -90, -81, -72, -63, -55, -48, -41, -34, -28, -22, -16, -10, -4, 1, 7, 13, 19,
    25, 31, 38, 45, 53, 61, 70, 79, 89, 99, 111, 123,
];
/// `iq6nl_values`, base row (the quantizer's shifted row is base + 1).
pub(super) const IQ6NL_VALUES: [i8; 64] = [
    -127, -121, -115, -109, -104, -98, -93, -88, -84, -79, -74, -70, -66, -62, -58, -54, -51, -47,
    -44, -40, -37, -34, -31, -28, -25, -22, -19, -16, -13, -11, -8, -5, -2, 0, 3, 6, 9, 12, 14, 17,
    20, 23, 27, 30, 33, 36, 40, 44, 47, 51, 55, 59, 63, 68, 72, 77, 82, 87, 92, 98, 103, 109, 115,
    121,
];

const fn first_half<const N: usize>(v: &[i8]) -> [i8; N] {
    let mut o = [0i8; N];
    let mut i = 0;
    while i < N {
        o[i] = v[i];
        i += 1;
    }
    o
}
pub(super) const IQ5NL_BASE: [i8; 32] = first_half::<32>(&IQ5NL_VALUES);
static IQ5NL_INDEX: [u8; 248] = build_nl_index::<32, 248>(&IQ5NL_BASE);
static IQ6NL_INDEX: [u8; 249] = build_nl_index::<64, 249>(&IQ6NL_VALUES);

/// f32 copies: IQ5 (64 = base | shifted) and IQ6 (128 = base | base + 1).
static IQ5NL_F: [f32; 64] = {
    let mut v = [0f32; 64];
    let mut i = 0;
    while i < 64 {
        v[i] = IQ5NL_VALUES[i] as f32;
        i += 1;
    }
    v
};
static IQ6NL_F: [f32; 128] = {
    let mut v = [0f32; 128];
    let mut i = 0;
    while i < 64 {
        v[i] = IQ6NL_VALUES[i] as f32;
        v[i + 64] = v[i] + 1.0;
        i += 1;
    }
    v
};

/// The part of the IQ5_K and IQ6_K quantizers that differs between the two.
trait NlTable {
    /// number of values per row (32 or 64)
    const N: usize;
    /// the base row followed by the shifted row
    fn values() -> &'static [f32];
    /// ik's `best_index_iq{5,6}nl` on one row (`vals` has `N` entries)
    fn best_index(vals: &[f32], x: f32) -> usize;
    /// block-scale range: d = −max_scale/`SCALE_DIV`, codes clamped to [−`SCALE_LO`, `SCALE_HI`]
    const SCALE_DIV: f32;
    const SCALE_LO: i32;
    const SCALE_HI: i32;
}

struct Iq5;
struct Iq6;

impl NlTable for Iq5 {
    const N: usize = 32;
    fn values() -> &'static [f32] {
        &IQ5NL_F
    }
    #[inline]
    fn best_index(vals: &[f32], x: f32) -> usize {
        // `(int)x - values[0]`, values[0] an int8
        let ix = c_trunc_i32(x).wrapping_sub(vals[0] as i32);
        resolve_nl(&IQ5NL_INDEX, vals, 32, 247, ix, x)
    }
    const SCALE_DIV: f32 = 32.0;
    const SCALE_LO: i32 = -32;
    const SCALE_HI: i32 = 31;
}

impl NlTable for Iq6 {
    const N: usize = 64;
    fn values() -> &'static [f32] {
        &IQ6NL_F
    }
    #[inline]
    fn best_index(vals: &[f32], x: f32) -> usize {
        // `(int)(x - values[0])`, float values
        let ix = c_trunc_i32(x - vals[0]);
        resolve_nl(&IQ6NL_INDEX, vals, 64, 249, ix, x)
    }
    const SCALE_DIV: f32 = 127.0;
    const SCALE_LO: i32 = -127;
    const SCALE_HI: i32 = 127;
}

/// Per-16-block search of `quantize_row_iq{5,6}_k_impl`: the best scale over 11 inverse
/// scales for each table half and each sign, then one refit. Returns `(d, shifted)`.
fn block_search<T: NlTable>(xb: &[f32], weight: &[f32; 16], max: f32) -> (f32, bool) {
    const NTRY: i32 = 5;
    let n = T::N;
    let all = T::values();
    let (base, shifted) = (&all[..n], &all[n..2 * n]);
    // (Σ w·q·x, Σ w·q²) for +id·x and −id·x
    let eval = |vals: &[f32], id: f32| {
        let (mut sp, mut qp, mut sm, mut qm) = (0f32, 0f32, 0f32, 0f32);
        for j in 0..16 {
            let w = weight[j];
            let al = id * xb[j];
            let q = vals[T::best_index(vals, al)];
            sp += w * q * xb[j];
            qp += w * q * q;
            let q = vals[T::best_index(vals, -al)];
            sm += w * q * xb[j];
            qm += w * q * q;
        }
        (sp, qp, sm, qm)
    };
    let d0 = -max / base[0];
    let (sp, qp, sm, qm) = eval(base, 1.0 / d0);
    let mut d = sp / qp;
    let mut best = d * sp;
    if qm > 0.0 && sm * sm > best * qm {
        d = sm / qm;
        best = d * sm;
    }
    let mut is_shifted = false;
    for itry in -NTRY..=NTRY {
        for (vals, sh) in [(base, false), (shifted, true)] {
            let id = (itry as f32 * 1.0 + vals[0]) / max;
            let (sp, qp, sm, qm) = eval(vals, id);
            if qp > 0.0 && sp * sp > best * qp {
                d = sp / qp;
                best = d * sp;
                is_shifted = sh;
            }
            if qm > 0.0 && sm * sm > best * qm {
                d = sm / qm;
                best = d * sm;
                is_shifted = sh;
            }
        }
    }
    if d != 0.0 {
        let vals = if is_shifted { shifted } else { base };
        let id = 1.0 / d;
        let (mut sqx, mut sq2) = (0f32, 0f32);
        for j in 0..16 {
            let w = weight[j];
            let q = vals[T::best_index(vals, id * xb[j])];
            sqx += w * q * xb[j];
            sq2 += w * q * q;
        }
        if sq2 > 0.0 {
            d = sqx / sq2;
        }
    }
    (d, is_shifted)
}

/// One 256-superblock. Returns the final d, the 16 scale codes and the 256 value indices
/// (into the block's row), or `None` for an all-zero superblock (left zeroed, d = +0).
#[allow(clippy::type_complexity)]
fn superblock<T: NlTable>(
    xbl: &[f32],
    qw: Option<&[f32]>,
) -> Option<(u16, u16, [i32; 16], [u8; QK_K])> {
    let n = T::N;
    let all = T::values();
    let mut sumx2 = 0f32;
    for &v in xbl {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / QK_K as f32;
    let weights = |ib: usize, w: &mut [f32; 16]| {
        let xb = &xbl[16 * ib..16 * ib + 16];
        match qw {
            Some(q) => {
                let qb = &q[16 * ib..16 * ib + 16];
                for j in 0..16 {
                    w[j] = qb[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
            }
            None => {
                for j in 0..16 {
                    w[j] = 0.25 * sigma2 + xb[j] * xb[j];
                }
            }
        }
    };
    let mut weight = [0f32; 16];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    let mut extra = 0u16;
    for ib in 0..16 {
        let xb = &xbl[16 * ib..16 * ib + 16];
        weights(ib, &mut weight);
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax < 1e-16 {
            scales[ib] = 0.0;
            continue;
        }
        let (d, sh) = block_search::<T>(xb, &weight, max);
        scales[ib] = d;
        if sh {
            extra |= 1 << ib;
        }
        if d.abs() > max_abs_scale {
            max_abs_scale = d.abs();
            max_scale = d;
        }
    }
    if max_abs_scale == 0.0 {
        return None;
    }
    let d = -max_scale / T::SCALE_DIV;
    let id = 1.0 / d;
    let mut codes = [0i32; 16];
    let mut idx = [0u8; QK_K];
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for ib in 0..16 {
        let ls = nearest_int(id * scales[ib]).clamp(T::SCALE_LO, T::SCALE_HI);
        codes[ib] = ls;
        let dl = d * ls as f32;
        if dl == 0.0 {
            continue;
        }
        let vals = if extra & (1 << ib) != 0 {
            &all[n..2 * n]
        } else {
            &all[..n]
        };
        let xb = &xbl[16 * ib..16 * ib + 16];
        weights(ib, &mut weight);
        let idl = 1.0 / dl;
        for j in 0..16 {
            let k = T::best_index(vals, idl * xb[j]);
            idx[16 * ib + j] = k as u8;
            let q = vals[k] * ls as f32;
            sumqx += weight[j] * q * xb[j];
            sumq2 += weight[j] * q * q;
        }
    }
    let dfinal = if sumq2 > 0.0 { sumqx / sumq2 } else { d };
    Some((f32_to_f16(dfinal), extra, codes, idx))
}

fn quantize_rows<T: NlTable>(
    x: &[f32],
    imatrix: Option<&[f32]>,
    out: &mut [u8],
    bs: usize,
    pack: impl Fn(&mut [u8], u16, u16, &[i32; 16], &[u8; QK_K]),
) {
    let qw = imatrix.map(|q| sanitize_imatrix(x, q, 16));
    for (ibl, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(bs))
        .enumerate()
    {
        y.fill(0);
        let q = qw.as_deref().map(|q| &q[QK_K * ibl..QK_K * (ibl + 1)]);
        if let Some((d, extra, codes, idx)) = superblock::<T>(xbl, q) {
            pack(y, d, extra, &codes, &idx);
        }
    }
}

/// IQ5_K (`quantize_iq5_k`): d = −max_scale/32 (then refit), 6-bit block codes.
pub(super) fn quantize_iq5_k(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    quantize_rows::<Iq5>(x, imatrix, out, 176, |y, d, extra, codes, idx| {
        y[0..2].copy_from_slice(&d.to_le_bytes());
        y[2..4].copy_from_slice(&extra.to_le_bytes());
        for ib in 0..16 {
            let u = (codes[ib] + 32) as u8;
            y[8 + ib / 2] |= (u & 0x0f) << (4 * (ib % 2));
            y[4 + ib / 4] |= (u >> 4) << (2 * (ib % 4));
            if codes[ib] == 0 {
                continue;
            }
            let ib32 = ib / 2;
            let off = 16 * (ib % 2);
            for j in 0..16 {
                let k = idx[16 * ib + j];
                y[16 + 32 * (ib32 / 2) + off + j] |= (k & 0x0f) << (4 * (ib32 % 2));
                y[144 + off + j] |= (k >> 4) << ib32;
            }
        }
    });
}

/// IQ6_K (`quantize_iq6_k`): d = −max_scale/127 (then refit), int8 block codes.
pub(super) fn quantize_iq6_k(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    quantize_rows::<Iq6>(x, imatrix, out, 212, |y, d, extra, codes, idx| {
        y[0..2].copy_from_slice(&d.to_le_bytes());
        y[2..4].copy_from_slice(&extra.to_le_bytes());
        for ib in 0..16 {
            y[4 + ib] = codes[ib] as i8 as u8;
            if codes[ib] == 0 {
                continue;
            }
            let ib32 = ib / 2;
            let off = 16 * (ib % 2);
            for j in 0..16 {
                let k = idx[16 * ib + j];
                y[20 + 32 * (ib32 / 2) + off + j] |= (k & 0x0f) << (4 * (ib32 % 2));
                y[148 + 32 * (ib32 / 4) + off + j] |= (k >> 4) << (2 * (ib32 % 4));
            }
        }
    });
}

pub(super) fn dequantize_iq5_k(b: &[u8], out: &mut [f32]) {
    for (y, ob) in b.chunks_exact(176).zip(out.chunks_exact_mut(QK_K)) {
        let d = read_f16(y, 0);
        let extra = u16::from_le_bytes([y[2], y[3]]);
        let (sh, sl) = (&y[4..8], &y[8..16]);
        let (qs, qh) = (&y[16..144], &y[144..176]);
        for c in 0..4 {
            let code = |k: usize| -> f32 {
                let lo = (sl[2 * c + k / 2] >> (4 * (k % 2))) & 0x0f;
                let hi = (sh[c] >> (2 * k)) & 3;
                d * ((lo | (hi << 4)) as i32 - 32) as f32
            };
            let q = &qs[32 * c..32 * c + 32];
            for k in 0..4 {
                // k: 16-block within the 64-chunk (k%2: which 16 of the 32; k/2: nibble half)
                let dl = code(k);
                let row = &IQ5NL_F[32 * ((extra >> (4 * c + k)) & 1) as usize..][..32];
                let (s, h) = (k % 2, k / 2);
                for j in 0..16 {
                    let lo = (q[16 * s + j] >> (4 * h)) & 0x0f;
                    let hi = (qh[16 * s + j] >> (2 * c + h)) & 1;
                    ob[64 * c + 16 * k + j] = dl * row[(lo | (hi << 4)) as usize];
                }
            }
        }
    }
}

/// IQ6_K on the CPU evaluates a cubic instead of looking up `iq6nl_values`:
/// v(q) = −127 + q·(6.2568 + q·(−0.11218 + q·0.0011972)) + (shifted ? 1 : 0).
pub(super) fn dequantize_iq6_k(b: &[u8], out: &mut [f32]) {
    const A: f32 = -127.0;
    const B: f32 = 6.2568;
    const C: f32 = 0.11218;
    const D: f32 = 0.0011972;
    for (y, ob) in b.chunks_exact(212).zip(out.chunks_exact_mut(QK_K)) {
        let d = read_f16(y, 0);
        let extra = u16::from_le_bytes([y[2], y[3]]);
        let (qs, qh) = (&y[20..148], &y[148..212]);
        for c in 0..4 {
            let q = &qs[32 * c..32 * c + 32];
            let h64 = &qh[32 * (c / 2)..32 * (c / 2) + 32];
            let shift = 4 * (c % 2);
            for k in 0..4 {
                let dl = d * (y[4 + 4 * c + k] as i8) as f32;
                let m = if (extra >> (4 * c + k)) & 1 != 0 {
                    1.0f32
                } else {
                    0.0
                };
                let (s, h) = (k % 2, k / 2);
                for j in 0..16 {
                    let lo = (q[16 * s + j] >> (4 * h)) & 0x0f;
                    let hi = (h64[16 * s + j] >> (shift + 2 * h)) & 3;
                    let qf = (lo | (hi << 4)) as f32;
                    ob[64 * c + 16 * k + j] = dl * (A + qf * (B + qf * (-C + qf * D)) + m);
                }
            }
        }
    }
}
