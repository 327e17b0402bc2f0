//! IQ5_K and IQ6_K (ik_llama.cpp `iqk_quantize.cpp`): 16 blocks of 16 with non-linear
//! 5-/6-bit value tables and a per-block "shifted table" bit in `extra`. The quantizers take
//! importances already sanitised per 16 columns (the registry's `Importance::Sanitized`), as
//! the other IQK types do.
//!
//! | type  | bytes | layout                                                                  |
//! |-------|-------|-------------------------------------------------------------------------|
//! | IQ5_K | 176   | fp16 d, u16 extra, scales_h[4], scales_l[8] (6-bit, −32), qs[128], qh[32] |
//! | IQ6_K | 212   | fp16 d, u16 extra, int8 scales[16], qs[128], qh[64]                       |
//!
//! Element `64c + 32h + 16s + j` (c: 64-chunk, h: nibble half, s: 16-block within the 32)
//! takes its low nibble from `qs[32c + 16s + j]` (low nibble for h = 0) and its high bits
//! from `qh[16s + j]` (IQ5_K: bit 2c+h; IQ6_K: `qh[32(c/2) + 16s + j]`, bits 4(c%2)+2h).

use super::util::{build_nl_index, c_trunc_i32, f32_to_f16, nearest_int, read_f16, resolve_nl};
use crate::cpu::compiled_for_avx2;
use crate::cpu::Path;
use crate::numeric::FitPick;

use crate::simd::QK as QK_K;

/// Where the parts of a 256-value block begin (after fp16 d at 0 and u16 extra at 2), and
/// its size.
struct Layout {
    qs: usize,
    qh: usize,
    bytes: usize,
}

/// IQ5_K: scales_h[4]@4, scales_l[8]@8, qs[128]@16, qh[32]@144.
const IQ5K: Layout = Layout {
    qs: 16,
    qh: 144,
    bytes: 176,
};
/// IQ6_K: int8 scales[16]@4, qs[128]@20, qh[64]@148.
const IQ6K: Layout = Layout {
    qs: 20,
    qh: 148,
    bytes: 212,
};
const _: () = assert!(IQ5K.qs == 4 + 4 + 8 && IQ5K.qh == IQ5K.qs + QK_K / 2);
const _: () = assert!(IQ5K.bytes == IQ5K.qh + QK_K / 8);
const _: () = assert!(IQ6K.qs == 4 + 16 && IQ6K.qh == IQ6K.qs + QK_K / 2);
const _: () = assert!(IQ6K.bytes == IQ6K.qh + QK_K / 4);
pub(crate) const IQ5K_BLOCK_BYTES: usize = IQ5K.bytes;
pub(crate) const IQ6K_BLOCK_BYTES: usize = IQ6K.bytes;

/// `iq5nl_values`: base row, then the shifted row (= base + 2); shared with IQ5_KS.
pub(super) const IQ5NL_VALUES: [i8; 64] = crate::simd::IQ5NL;
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

/// Rows per pair table, each `PAIR_STRIDE` entries apart: base, shifted.
#[cfg(target_arch = "x86_64")]
const PAIR_STRIDE: usize = 256;

/// `resolve_nl` as one table per row for vector gathers: the entry at `1 + ix` (ix clamped to
/// −1..=`limit`, the two ends standing for ik's clamps) packs the two candidate values and
/// their indices as bytes, `lo | hi << 8 | ilo << 16 | ihi << 24`; where ik's bucket is unambiguous (or clamped) lo = hi, so the
/// comparison `x − lo < hi − x` that picks between them cannot change the value. One gather
/// then yields the value, where the bucket table needs one gather for the bucket and two or
/// three for the values.
#[cfg(target_arch = "x86_64")]
const fn pack(v: &[i8], lo: usize, hi: usize) -> i32 {
    (v[lo] as u8 as i32) | ((v[hi] as u8 as i32) << 8) | ((lo as i32) << 16) | ((hi as i32) << 24)
}
#[cfg(target_arch = "x86_64")]
const fn pair_table<const N: usize>(lut: &[u8], limit: usize, rows: [[i8; N]; 2]) -> [i32; 512] {
    assert!(limit + 2 <= PAIR_STRIDE && limit <= lut.len());
    let mut out = [0i32; 512];
    let mut r = 0;
    while r < 2 {
        let v = &rows[r];
        let t = r * PAIR_STRIDE;
        out[t] = pack(v, 0, 0);
        out[t + limit + 1] = pack(v, N - 1, N - 1);
        let mut ix = 0;
        while ix < limit {
            let e = lut[ix] as usize;
            out[t + 1 + ix] = if e < N {
                pack(v, e, e)
            } else {
                pack(v, e - N, e - N + 1)
            };
            ix += 1;
        }
        r += 1;
    }
    out
}

/// The rows of a value table, the second `shift` above the first.
#[cfg(target_arch = "x86_64")]
const fn rows_of<const N: usize>(base: &[i8], shifted: Option<&[i8]>, shift: i8) -> [[i8; N]; 2] {
    let mut out = [[0i8; N]; 2];
    let mut i = 0;
    while i < N {
        out[0][i] = base[i];
        out[1][i] = match shifted {
            Some(s) => s[i],
            None => base[i] + shift,
        };
        i += 1;
    }
    out
}
#[cfg(target_arch = "x86_64")]
static IQ5NL_PAIRS: [i32; 512] = pair_table::<32>(
    &IQ5NL_INDEX,
    Iq5::LIMIT as usize,
    rows_of::<32>(&IQ5NL_BASE, Some(IQ5NL_VALUES.split_at(32).1), 0),
);
#[cfg(target_arch = "x86_64")]
static IQ6NL_PAIRS: [i32; 512] = pair_table::<64>(
    &IQ6NL_INDEX,
    Iq6::LIMIT as usize,
    rows_of::<64>(&IQ6NL_VALUES, None, 1),
);

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

/// `iq5nl_values` as f32: the base row, then the shifted row.
pub(crate) fn iq5nl_f32() -> &'static [f32; 64] {
    &IQ5NL_F
}

/// The part of the IQ5_K and IQ6_K quantizers that differs between the two.
trait NlTable {
    /// number of values per row (32 or 64)
    const N: usize;
    /// the base row followed by the shifted row
    fn values() -> &'static [f32];
    /// ik's `best_index_iq{5,6}nl` on one row (`vals` has `N` entries)
    fn best_index(vals: &[f32], x: f32) -> usize;
    /// `best_index` as pair tables (see [`pair_table`]), and the bucket table's length limit
    #[cfg(target_arch = "x86_64")]
    fn pairs() -> &'static [i32; 512];
    const LIMIT: i32;
    /// IQ5: `(int)x - values[0]`; IQ6: `(int)(x - values[0])`
    const TRUNCATE_FIRST: bool;
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
        resolve_nl(&IQ5NL_INDEX, vals, 32, Self::LIMIT, ix, x)
    }
    #[cfg(target_arch = "x86_64")]
    fn pairs() -> &'static [i32; 512] {
        &IQ5NL_PAIRS
    }
    const LIMIT: i32 = 247;
    const TRUNCATE_FIRST: bool = true;
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
        resolve_nl(&IQ6NL_INDEX, vals, 64, Self::LIMIT, ix, x)
    }
    #[cfg(target_arch = "x86_64")]
    fn pairs() -> &'static [i32; 512] {
        &IQ6NL_PAIRS
    }
    const LIMIT: i32 = 249;
    const TRUNCATE_FIRST: bool = false;
    const SCALE_DIV: f32 = 127.0;
    const SCALE_LO: i32 = -127;
    const SCALE_HI: i32 = 127;
}

/// Candidates of the per-block search: a first guess on the base row, then for itry = −5..=5
/// the base row and the shifted row. Padded to whole vectors.
const N_TRIES: usize = 1 + 2 * 11;
const N_PADDED: usize = 24;

/// Each candidate's inverse scale and whether it uses the shifted row, in search order.
fn candidates<T: NlTable>(max: f32) -> ([f32; N_PADDED], [bool; N_PADDED]) {
    const NTRY: i32 = 5;
    let n = T::N;
    let all = T::values();
    let (mut ids, mut shifted) = ([0f32; N_PADDED], [false; N_PADDED]);
    let d0 = -max / all[0];
    ids[0] = 1.0 / d0;
    let mut c = 1;
    for itry in -NTRY..=NTRY {
        for sh in [false, true] {
            let v0 = all[if sh { n } else { 0 }];
            ids[c] = (itry as f32 * 1.0 + v0) / max;
            shifted[c] = sh;
            c += 1;
        }
    }
    (ids, shifted)
}

/// `(Σ w·q·x, Σ w·q², Σ w·q'·x, Σ w·q'²)` of one candidate: q nearest to id·x, q' to −id·x,
/// summed in element order as ik does.
fn candidate_sums<T: NlTable, const B: usize>(
    vals: &[f32],
    id: f32,
    xb: &[f32],
    weight: &[f32; B],
) -> [f32; 4] {
    let (mut sp, mut qp, mut sm, mut qm) = (0f32, 0f32, 0f32, 0f32);
    for j in 0..B {
        let w = weight[j];
        let al = id * xb[j];
        let q = vals[T::best_index(vals, al)];
        sp += w * q * xb[j];
        qp += w * q * q;
        let q = vals[T::best_index(vals, -al)];
        sm += w * q * xb[j];
        qm += w * q * q;
    }
    [sp, qp, sm, qm]
}

/// Per-16-block search of `quantize_row_iq{5,6}_k_impl`: the best scale over 11 inverse
/// scales for each table half and each sign, then one refit. Returns `(d, shifted)`. The
/// candidates' sums are formed first (8 candidates per vector on AVX2, each lane in element
/// order, so bit for bit the scalar sums), then ik's accept rule runs over them in order.
fn block_search<T: NlTable>(path: Path, xb: &[f32], weight: &[f32; 16], max: f32) -> (f32, bool) {
    let n = T::N;
    let all = T::values();
    let (base, shifted) = (&all[..n], &all[n..2 * n]);
    let (mut d, is_shifted) = pick_scale::<T, 16>(path, xb, weight, max);
    if d != 0.0 {
        let vals = if is_shifted { shifted } else { base };
        let id = 1.0 / d;
        let mut idx = [0u8; 16];
        nearest_indices::<T>(path, is_shifted, id, xb, &mut idx);
        let (mut sqx, mut sq2) = (0f32, 0f32);
        for j in 0..16 {
            let w = weight[j];
            let q = vals[idx[j] as usize];
            sqx += w * q * xb[j];
            sq2 += w * q * q;
        }
        if sq2 > 0.0 {
            d = sqx / sq2;
        }
    }
    (d, is_shifted)
}

/// `T::best_index` of `id·x[j]` on the base or shifted row, into `out[j]`, for every j.
fn nearest_indices<T: NlTable>(path: Path, shifted: bool, id: f32, x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if path.has_avx2() && x.len().is_multiple_of(8) {
        assert!(std::is_x86_feature_detected!("avx2"));
        // SAFETY: the CPU has AVX2 (asserted above).
        return unsafe { avx2::nearest_indices::<T>(shifted, id, x, out) };
    }
    let _ = path;
    nearest_indices_scalar::<T>(shifted, id, x, out)
}

fn nearest_indices_scalar<T: NlTable>(shifted: bool, id: f32, x: &[f32], out: &mut [u8]) {
    let row = &T::values()[shifted as usize * T::N..][..T::N];
    for (o, &v) in out.iter_mut().zip(x) {
        *o = T::best_index(row, id * v) as u8;
    }
}

/// IQ5_KS's `best_index_iq5nl` on `scale·x[j]` for every j, into `out` (row: base or shifted),
/// on `path` (`crate::cpu::quantize_path()`, which the caller reads once per row: it is not
/// free).
pub(crate) fn iq5nl_indices(path: Path, shifted: bool, scale: f32, x: &[f32], out: &mut [u8]) {
    nearest_indices::<Iq5>(path, shifted, scale, x, out)
}

/// IQ5_KS's per-32-block scale search (`quantize_row_iq5_ks_impl`, ntry 5): the candidate
/// search of IQ5_K on a block of `B` values, without IQ5_K's refit. Returns `(d, shifted)`.
pub(crate) fn iq5nl_block_scale<const B: usize>(
    path: Path,
    xb: &[f32],
    weight: &[f32; B],
    max: f32,
) -> (f32, bool) {
    pick_scale::<Iq5, B>(path, xb, weight, max)
}

/// The best scale over the candidates of [`candidates`] and whether the shifted row won:
/// ik's accept rule run over the candidates' sums in order (the first fit taken whatever its
/// denominator, then each later fit of either sign when it scores higher).
fn pick_scale<T: NlTable, const B: usize>(
    path: Path,
    xb: &[f32],
    weight: &[f32; B],
    max: f32,
) -> (f32, bool) {
    let (ids, is_shifted_row) = candidates::<T>(max);
    let mut sums = [[0f32; 4]; N_PADDED];
    fill_sums::<T, B>(path, xb, weight, &ids, &is_shifted_row, &mut sums);
    let [sp, qp, sm, qm] = sums[0];
    let mut pick = FitPick::first(sp / qp, sp);
    pick.offer(sm, qm);
    let mut is_shifted = false;
    for (&[sp, qp, sm, qm], &sh) in sums.iter().zip(&is_shifted_row).take(N_TRIES).skip(1) {
        // Both signs are offered (`|`, not `||`).
        if pick.offer(sp, qp) | pick.offer(sm, qm) {
            is_shifted = sh;
        }
    }
    (pick.scale, is_shifted)
}

/// The sums of candidates 0..N_TRIES on `path` (which must be available on this CPU).
fn fill_sums<T: NlTable, const B: usize>(
    path: Path,
    xb: &[f32],
    weight: &[f32; B],
    ids: &[f32; N_PADDED],
    shifted: &[bool; N_PADDED],
    sums: &mut [[f32; 4]; N_PADDED],
) {
    #[cfg(target_arch = "x86_64")]
    if path.has_avx2() {
        assert!(std::is_x86_feature_detected!("avx2"));
        // SAFETY: the CPU has AVX2 (asserted above).
        return unsafe { avx2::fill_sums::<T, B>(xb, weight, ids, shifted, sums) };
    }
    let _ = path;
    let n = T::N;
    let all = T::values();
    for c in 0..N_TRIES {
        let off = if shifted[c] { n } else { 0 };
        sums[c] = candidate_sums::<T, B>(&all[off..off + n], ids[c], xb, weight);
    }
}

/// The candidates' sums with eight candidates per vector: each lane runs the scalar
/// `candidate_sums` for its candidate, element by element, with `best_index` as one gather
/// from the pair table.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{NlTable, N_PADDED, PAIR_STRIDE};

    /// Per lane, which row of `T`'s table it looks values up in.
    #[derive(Clone, Copy)]
    pub(super) struct Rows {
        /// the row's first value (f32 and i32)
        v0: __m256,
        v0i: __m256i,
        /// where the row's pair table starts, plus one (ik's clamp below sits at index 0)
        start: __m256i,
    }

    impl Rows {
        #[inline]
        #[target_feature(enable = "avx2")]
        pub(super) fn new<T: NlTable>(shifted: [bool; 8]) -> Self {
            let values = T::values();
            let v0: [f32; 8] = std::array::from_fn(|i| values[shifted[i] as usize * T::N]);
            let start: [i32; 8] =
                std::array::from_fn(|i| (shifted[i] as usize * PAIR_STRIDE + 1) as i32);
            // SAFETY: reads of 8-element arrays.
            unsafe {
                let v0 = _mm256_loadu_ps(v0.as_ptr());
                Rows {
                    v0,
                    v0i: _mm256_cvttps_epi32(v0),
                    start: _mm256_loadu_si256(start.as_ptr() as *const __m256i),
                }
            }
        }
    }

    /// `T::values()[T::best_index(row, x)]` lane by lane: ik's bucket (the same truncation and
    /// wrapping arithmetic as the scalar, cvttps giving i32::MIN where `c_trunc_i32` does),
    /// clamped, then the pair's comparison.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn nearest_value<T: NlTable>(x: __m256, rows: &Rows) -> __m256 {
        nearest::<T>(x, rows).2
    }

    /// `T::best_index(row, x)` lane by lane (see [`nearest_value`]).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn nearest_index<T: NlTable>(x: __m256, rows: &Rows) -> __m256i {
        let (e, nearer_lo, _) = nearest::<T>(x, rows);
        let lo = _mm256_srli_epi32::<24>(_mm256_slli_epi32::<8>(e));
        let hi = _mm256_srli_epi32::<24>(e);
        _mm256_blendv_epi8(hi, lo, _mm256_castps_si256(nearer_lo))
    }

    /// The pair-table entry, whether the lower of its pair is nearer, and the picked value.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn nearest<T: NlTable>(x: __m256, rows: &Rows) -> (__m256i, __m256, __m256) {
        let ix = if T::TRUNCATE_FIRST {
            _mm256_sub_epi32(_mm256_cvttps_epi32(x), rows.v0i)
        } else {
            _mm256_cvttps_epi32(_mm256_sub_ps(x, rows.v0))
        };
        let ix = _mm256_min_epi32(
            _mm256_max_epi32(ix, _mm256_set1_epi32(-1)),
            _mm256_set1_epi32(T::LIMIT),
        );
        // SAFETY: the index is in 0..=LIMIT+1 plus a row start, inside the 512 entries.
        let e = unsafe {
            _mm256_i32gather_epi32::<4>(T::pairs().as_ptr(), _mm256_add_epi32(rows.start, ix))
        };
        let lo = _mm256_cvtepi32_ps(_mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(e)));
        let hi = _mm256_cvtepi32_ps(_mm256_srai_epi32::<24>(_mm256_slli_epi32::<16>(e)));
        let nearer_lo = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_sub_ps(x, lo), _mm256_sub_ps(hi, x));
        (e, nearer_lo, _mm256_blendv_ps(hi, lo, nearer_lo))
    }

    /// [`super::nearest_indices_scalar`] eight elements at a time (`x.len()` a multiple of 8).
    #[target_feature(enable = "avx2")]
    pub(super) fn nearest_indices<T: NlTable>(shifted: bool, id: f32, x: &[f32], out: &mut [u8]) {
        let rows = Rows::new::<T>([shifted; 8]);
        let id = _mm256_set1_ps(id);
        for (xc, oc) in x.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
            // SAFETY: `xc` holds 8 f32.
            let al = _mm256_mul_ps(id, unsafe { _mm256_loadu_ps(xc.as_ptr()) });
            let k = nearest_index::<T>(al, &rows);
            // indices < 64: the low byte of each lane, gathered into the low 8 bytes
            let bytes = _mm256_shuffle_epi8(
                k,
                _mm256_setr_epi8(
                    0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1,
                    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                ),
            );
            let lo = _mm_cvtsi128_si32(_mm256_castsi256_si128(bytes)) as u32;
            let hi = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(bytes)) as u32;
            oc.copy_from_slice(&(lo as u64 | (hi as u64) << 32).to_le_bytes());
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn fill_sums<T: NlTable, const B: usize>(
        xb: &[f32],
        weight: &[f32; B],
        ids: &[f32; N_PADDED],
        shifted: &[bool; N_PADDED],
        sums: &mut [[f32; 4]; N_PADDED],
    ) {
        let xb = &xb[..B];
        for g in 0..N_PADDED / 8 {
            let lane = |i: usize| 8 * g + i;
            let rows = Rows::new::<T>(std::array::from_fn(|i| shifted[lane(i)]));
            let id = _mm256_loadu_ps(ids[8 * g..].as_ptr());
            let zero = _mm256_setzero_ps();
            let (mut sp, mut qp, mut sm, mut qm) = (zero, zero, zero, zero);
            for j in 0..B {
                let x = _mm256_set1_ps(xb[j]);
                let w = _mm256_set1_ps(weight[j]);
                let al = _mm256_mul_ps(id, x);
                let q = nearest_value::<T>(al, &rows);
                let wq = _mm256_mul_ps(w, q);
                sp = _mm256_add_ps(sp, _mm256_mul_ps(wq, x));
                qp = _mm256_add_ps(qp, _mm256_mul_ps(wq, q));
                let neg = _mm256_xor_ps(al, _mm256_set1_ps(-0.0));
                let q = nearest_value::<T>(neg, &rows);
                let wq = _mm256_mul_ps(w, q);
                sm = _mm256_add_ps(sm, _mm256_mul_ps(wq, x));
                qm = _mm256_add_ps(qm, _mm256_mul_ps(wq, q));
            }
            let mut lanes = [[0f32; 8]; 4];
            for (out, v) in lanes.iter_mut().zip([sp, qp, sm, qm]) {
                _mm256_storeu_ps(out.as_mut_ptr(), v);
            }
            for i in 0..8 {
                sums[lane(i)] = [lanes[0][i], lanes[1][i], lanes[2][i], lanes[3][i]];
            }
        }
    }
}

/// One 256-superblock. Returns the final d, the 16 scale codes and the 256 value indices
/// (into the block's row), or `None` for an all-zero superblock (left zeroed, d = +0).
#[allow(clippy::type_complexity)]
fn superblock<T: NlTable>(
    path: Path,
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
    // The weights of all 16 blocks, kept for the second pass.
    let mut weights = [[0f32; 16]; 16];
    for (ib, w) in weights.iter_mut().enumerate() {
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
    }
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    let mut extra = 0u16;
    for ib in 0..16 {
        let xb = &xbl[16 * ib..16 * ib + 16];
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
        let (d, sh) = block_search::<T>(path, xb, &weights[ib], max);
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
        let shifted = extra & (1 << ib) != 0;
        let vals = &all[shifted as usize * n..][..n];
        let xb = &xbl[16 * ib..16 * ib + 16];
        let weight = &weights[ib];
        let idl = 1.0 / dl;
        let block_idx = &mut idx[16 * ib..16 * ib + 16];
        nearest_indices::<T>(path, shifted, idl, xb, block_idx);
        for j in 0..16 {
            let q = vals[block_idx[j] as usize] * ls as f32;
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
    // Read once per row: the searches below ask for it per block.
    let path = crate::cpu::quantize_path();
    for (ibl, (xbl, y)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(bs))
        .enumerate()
    {
        y.fill(0);
        let q = imatrix.map(|q| &q[QK_K * ibl..QK_K * (ibl + 1)]);
        if let Some((d, extra, codes, idx)) = superblock::<T>(path, xbl, q) {
            pack(y, d, extra, &codes, &idx);
        }
    }
}

compiled_for_avx2! {
    /// IQ5_K (`quantize_iq5_k`): d = −max_scale/32 (then refit), 6-bit block codes.
    pub(crate) fn quantize_iq5_k => quantize_iq5_k_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8])
}

#[inline(always)]
fn quantize_iq5_k_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    quantize_rows::<Iq5>(x, imatrix, out, IQ5K.bytes, |y, d, extra, codes, idx| {
        put_header(y, d, extra);
        for ib in 0..16 {
            let u = (codes[ib] + 32) as u8;
            y[8 + ib / 2] |= (u & 0x0f) << (4 * (ib % 2));
            y[4 + ib / 4] |= (u >> 4) << (2 * (ib % 4));
            if codes[ib] != 0 {
                put_values(y, &IQ5K, ib, idx, |ib32| (IQ5K.qh, ib32));
            }
        }
    });
}

compiled_for_avx2! {
    /// IQ6_K (`quantize_iq6_k`): d = −max_scale/127 (then refit), int8 block codes.
    pub(crate) fn quantize_iq6_k => quantize_iq6_k_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8])
}

#[inline(always)]
fn quantize_iq6_k_body(x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    quantize_rows::<Iq6>(x, imatrix, out, IQ6K.bytes, |y, d, extra, codes, idx| {
        put_header(y, d, extra);
        for ib in 0..16 {
            y[4 + ib] = codes[ib] as i8 as u8;
            if codes[ib] != 0 {
                put_values(y, &IQ6K, ib, idx, |ib32| {
                    (IQ6K.qh + 32 * (ib32 / 4), 2 * (ib32 % 4))
                });
            }
        }
    });
}

fn put_header(y: &mut [u8], d: u16, extra: u16) {
    y[0..2].copy_from_slice(&d.to_le_bytes());
    y[2..4].copy_from_slice(&extra.to_le_bytes());
}

/// Block `ib`'s value indices: low nibbles into `qs` (as the module header says), high bits
/// at `high(ib32) = (byte offset of the 32 qh bytes, bit)`.
fn put_values(
    y: &mut [u8],
    layout: &Layout,
    ib: usize,
    idx: &[u8; QK_K],
    high: impl Fn(usize) -> (usize, usize),
) {
    let ib32 = ib / 2;
    let off = 16 * (ib % 2);
    let (qh, bit) = high(ib32);
    for j in 0..16 {
        let k = idx[16 * ib + j];
        y[layout.qs + 32 * (ib32 / 2) + off + j] |= (k & 0x0f) << (4 * (ib32 % 2));
        y[qh + off + j] |= (k >> 4) << bit;
    }
}

pub(crate) fn dequantize_iq5_k(b: &[u8], out: &mut [f32]) {
    for (y, ob) in b.chunks_exact(IQ5K.bytes).zip(out.chunks_exact_mut(QK_K)) {
        let d = read_f16(y, 0);
        let extra = u16::from_le_bytes([y[2], y[3]]);
        let (sh, sl) = (&y[4..8], &y[8..16]);
        let (qs, qh) = (&y[IQ5K.qs..IQ5K.qh], &y[IQ5K.qh..IQ5K.bytes]);
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
pub(crate) fn dequantize_iq6_k(b: &[u8], out: &mut [f32]) {
    const A: f32 = -127.0;
    const B: f32 = 6.2568;
    const C: f32 = 0.11218;
    const D: f32 = 0.0011972;
    for (y, ob) in b.chunks_exact(IQ6K.bytes).zip(out.chunks_exact_mut(QK_K)) {
        let d = read_f16(y, 0);
        let extra = u16::from_le_bytes([y[2], y[3]]);
        let (qs, qh) = (&y[IQ6K.qs..IQ6K.qh], &y[IQ6K.qh..IQ6K.bytes]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rng;

    /// The AVX2 pair-table lookup gives `best_index`'s value on both rows of both tables for
    /// a dense sweep, every f32 within a few ulps of each midpoint and integer, and values
    /// far outside the tables (including i32 overflow of the truncation).
    #[test]
    fn avx2_nearest_value_equals_best_index() {
        #[cfg(target_arch = "x86_64")]
        fn check<T: NlTable>() {
            let mut xs: Vec<f32> = (-300_000..300_000)
                .map(|i| i as f32 / 1024.0 + 1e-4)
                .collect();
            for k in -260..260 {
                let c = k as f32 * 0.5;
                let mut up = c;
                let mut down = c;
                for _ in 0..8 {
                    xs.extend([up, down]);
                    up = f32::from_bits(up.to_bits().wrapping_add(if up >= 0.0 {
                        1
                    } else {
                        u32::MAX
                    }));
                    down = f32::from_bits(down.to_bits().wrapping_add(if down > 0.0 {
                        u32::MAX
                    } else {
                        1
                    }));
                }
            }
            xs.extend([
                0.0,
                -0.0,
                1e-30,
                -1e-30,
                2.1e9,
                -2.1e9,
                2_147_483_520.0,
                3e9,
                -3e9,
                1e30,
                -1e30,
            ]);
            xs.resize(xs.len().next_multiple_of(8), 0.0);
            let all = T::values();
            for shifted in [false, true] {
                let off = shifted as usize * T::N;
                let row = &all[off..off + T::N];
                // SAFETY: AVX2 was detected by the caller.
                unsafe {
                    use std::arch::x86_64::*;
                    let rows = avx2::Rows::new::<T>([shifted; 8]);
                    for c in xs.chunks_exact(8) {
                        let mut got = [0f32; 8];
                        let v = avx2::nearest_value::<T>(_mm256_loadu_ps(c.as_ptr()), &rows);
                        _mm256_storeu_ps(got.as_mut_ptr(), v);
                        for (&x, &g) in c.iter().zip(&got) {
                            let want = row[T::best_index(row, x)];
                            assert_eq!(g, want, "N {} shifted {shifted} x {x:e}", T::N);
                        }
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            check::<Iq5>();
            check::<Iq6>();
        }
    }

    /// The AVX2 indices equal the scalar ones, scale by scale, on random blocks with values on
    /// midpoints and beyond the tables.
    #[test]
    fn avx2_nearest_indices_equal_scalar() {
        #[cfg(target_arch = "x86_64")]
        fn check<T: NlTable>() {
            let mut seed = 7u32;
            for trial in 0..4000usize {
                let mut x: [f32; 32] = std::array::from_fn(|_| rng(&mut seed));
                let id = 10f32.powi(trial as i32 % 5) * rng(&mut seed);
                let shifted = trial % 2 == 1;
                let row = &T::values()[shifted as usize * T::N..][..T::N];
                for k in 0..4 {
                    let i = (trial + 5 * k) % (T::N - 1);
                    x[(trial + 7 * k) % 32] = 0.5 * (row[i] + row[i + 1]) / id;
                }
                x[trial % 32] *= 1e6;
                let (mut simd, mut scalar) = ([0u8; 32], [0u8; 32]);
                // SAFETY: AVX2 was detected by the caller.
                unsafe { avx2::nearest_indices::<T>(shifted, id, &x, &mut simd) };
                nearest_indices_scalar::<T>(shifted, id, &x, &mut scalar);
                assert_eq!(simd, scalar, "N {} trial {trial}", T::N);
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            check::<Iq5>();
            check::<Iq6>();
        }
    }

    /// The AVX2 candidate sums equal the scalar ones bit for bit, for both tables, on random
    /// blocks of many amplitudes with zeros, exact ties between neighbouring values, and
    /// values far outside the table (clamped to its ends).
    #[test]
    fn avx2_sums_equal_scalar() {
        fn check<T: NlTable>() {
            let mut seed = 99u32;
            for trial in 0..4000i32 {
                let amp = 10f32.powi(((rng(&mut seed) + 1.0) * 4.5) as i32 - 4);
                let mut x: [f32; 16] = std::array::from_fn(|_| amp * rng(&mut seed));
                let weight: [f32; 16] = std::array::from_fn(|j| {
                    if (trial as usize + j).is_multiple_of(7) {
                        0.0
                    } else {
                        rng(&mut seed).abs()
                    }
                });
                let (mut amax, mut max) = (0f32, 0f32);
                for &v in &x {
                    if v.abs() > amax {
                        amax = v.abs();
                        max = v;
                    }
                }
                let (ids, shifted) = candidates::<T>(max);
                // Put some values where id·x lands on a midpoint of two table values, and one
                // where it lands far beyond the table.
                if trial % 2 == 0 && max != 0.0 {
                    let all = T::values();
                    for k in 0..4 {
                        let c = ((rng(&mut seed) + 1.0) * 11.5) as usize % N_TRIES;
                        let off = if shifted[c] { T::N } else { 0 };
                        let i = ((rng(&mut seed) + 1.0) * 0.5 * (T::N - 1) as f32) as usize;
                        let i = i.min(T::N - 2);
                        let mid = 0.5 * (all[off + i] + all[off + i + 1]);
                        let j = (3 * k + trial as usize) % 16;
                        x[j] = mid / ids[c] * if k % 2 == 0 { 1.0 } else { -1.0 };
                    }
                    if trial % 10 == 0 {
                        x[15] = 1e30 * max.signum();
                    }
                }
                let (mut amax, mut max) = (0f32, 0f32);
                for &v in &x {
                    if v.abs() > amax {
                        amax = v.abs();
                        max = v;
                    }
                }
                if amax == 0.0 {
                    continue;
                }
                let (ids, shifted) = candidates::<T>(max);
                let mut scalar = [[0f32; 4]; N_PADDED];
                let mut simd = [[0f32; 4]; N_PADDED];
                fill_sums::<T, 16>(Path::Scalar, &x, &weight, &ids, &shifted, &mut scalar);
                fill_sums::<T, 16>(Path::Avx2, &x, &weight, &ids, &shifted, &mut simd);
                for c in 0..N_TRIES {
                    assert_eq!(
                        simd[c].map(f32::to_bits),
                        scalar[c].map(f32::to_bits),
                        "N {} trial {trial} candidate {c}: {:?} vs {:?}",
                        T::N,
                        simd[c],
                        scalar[c]
                    );
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            check::<Iq5>();
            check::<Iq6>();
        }
    }
}
