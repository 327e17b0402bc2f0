//! Batched least-squares fits for the non-linear grid search: one block against many candidate
//! inverse scales at once. Each candidate keeps its own four sums, accumulated in element order
//! with the same f32 operations as the scalar code, so every SIMD lane produces exactly the
//! scalar result: the lanes run across candidates, never across elements.

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use super::lanes::F32Lanes;
use crate::cpu::Path;
use crate::tables::Grid;

/// At most this many candidates are fitted in one call.
pub const MAX_CANDIDATES: usize = 32;

/// Which fits to form: both signs (the IQK types), or only the `+` fit (IQ4_NL, whose search
/// never uses the `-` one; its two sums are then left at zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signs {
    Both,
    PlusOnly,
}

/// `(Σ w·q·x, Σ w·q², Σ w·q'·x, Σ w·q'²)` of one block, q = grid value nearest to `id·x`,
/// q' = grid value nearest to `-id·x`. Products associate as in ik: `(w·q)·x`, `(w·q)·q`.
#[inline(always)]
pub fn fit_one(grid: &Grid, signs: Signs, id: f32, x: &[f32], w: &[f32]) -> [f32; 4] {
    let (mut sp, mut qp, mut sm, mut qm) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    for (&v, &wj) in x.iter().zip(w) {
        let al = id * v;
        let q = grid.values[grid.nearest(al)] as f32;
        sp += wj * q * v;
        qp += wj * q * q;
        if signs == Signs::Both {
            let q = grid.values[grid.nearest(-al)] as f32;
            sm += wj * q * v;
            qm += wj * q * q;
        }
    }
    [sp, qp, sm, qm]
}

/// `fit_one` (both signs) for every id in `ids` (at most [`MAX_CANDIDATES`]), into `out`.
pub fn fit_many(grid: &Grid, ids: &[f32], x: &[f32], w: &[f32], out: &mut [[f32; 4]]) {
    let path = fit_path(grid, ids.len());
    fit_many_on(path, Signs::Both, grid, ids, x, w, out)
}

/// [`fit_many`] with the `+` fits only.
pub fn fit_many_plus(grid: &Grid, ids: &[f32], x: &[f32], w: &[f32], out: &mut [[f32; 4]]) {
    let path = fit_path(grid, ids.len());
    fit_many_on(path, Signs::PlusOnly, grid, ids, x, w, out)
}

/// [`fit_many`] on two grids at once: `ids[0]` on `grids[0]` into `out[0]`, `ids[1]` on
/// `grids[1]` into `out[1]` (the IQK searches fit the base and the shifted grid half of a
/// block). Where both grids have 8 values and both lists at most 8 candidates (IQ3_K), the
/// AVX-512 path fits them in one pass, one grid per half of each register, if that measured
/// faster than two passes.
pub fn fit_pair(
    grids: [&Grid; 2],
    ids: [&[f32]; 2],
    x: &[f32],
    w: &[f32],
    [out_a, out_b]: [&mut [[f32; 4]]; 2],
) {
    if one_pass(grids, ids) && pair_path() == Path::Avx512 {
        fit_pair_on(Path::Avx512, grids, ids, x, w, [out_a, out_b]);
    } else {
        fit_many(grids[0], ids[0], x, w, out_a);
        fit_many(grids[1], ids[1], x, w, out_b);
    }
}

/// Whether [`fit_pair`]'s AVX-512 one-pass fit applies: two 8-value grids, at most 8
/// candidates each.
fn one_pass(grids: [&Grid; 2], ids: [&[f32]; 2]) -> bool {
    grids.iter().all(|g| g.values.len() == 8) && ids.iter().all(|i| i.len() <= 8)
}

/// [`fit_pair`] on a given path (which must be available on this CPU): on AVX-512, where
/// [`one_pass`] allows, the one-pass fit; else two [`fit_many_on`] calls.
pub fn fit_pair_on(
    path: Path,
    grids: [&Grid; 2],
    ids: [&[f32]; 2],
    x: &[f32],
    w: &[f32],
    [out_a, out_b]: [&mut [[f32; 4]]; 2],
) {
    assert!(
        path.is_available(),
        "quantize path {path:?} is not available on this CPU"
    );
    #[cfg(target_arch = "x86_64")]
    if path == Path::Avx512 && one_pass(grids, ids) {
        // SAFETY: the CPU has AVX-512 F, AVX2 and FMA (asserted above).
        unsafe { avx512::fit_pair8(grids, ids, x, w, [out_a, out_b]) };
        return;
    }
    fit_many_on(path, Signs::Both, grids[0], ids[0], x, w, out_a);
    fit_many_on(path, Signs::Both, grids[1], ids[1], x, w, out_b);
}

/// The path of [`fit_pair`]'s one-pass case: AVX-512 (one pass) or the AVX2 path's two, timed
/// once per process on IQ3_K's grids and candidate counts (see
/// [`crate::cpu::faster_wide_path`]).
fn pair_path() -> Path {
    static PATH: OnceLock<Path> = OnceLock::new();
    *PATH.get_or_init(|| {
        let grids = &crate::tables::IQ3_GRIDS;
        let (a, b) = (FitSample::new(&grids[0], 8), FitSample::new(&grids[1], 7));
        crate::cpu::faster_wide_path(|path| {
            let (mut out_a, mut out_b) = ([[0.0f32; 4]; 8], [[0.0f32; 4]; 8]);
            let start = std::time::Instant::now();
            for _ in 0..16 {
                let x = std::hint::black_box(&a.x);
                let out = [&mut out_a[..], &mut out_b[..]];
                fit_pair_on(path, [a.grid, b.grid], [&a.ids, &b.ids], x, &a.w, out);
                std::hint::black_box((&out_a, &out_b));
            }
            start.elapsed().as_nanos() as f64
        })
    })
}

/// The path the batched fits of `candidates` scales on `grid` take:
/// [`crate::cpu::quantize_path`], except that on an AVX-512 CPU under `auto` the AVX2 and
/// AVX-512 fits are timed once per grid size and candidate count class (up to 8, more) and the
/// faster is kept for the process. The wider fit need not win: IQ3_K fits 7 and 8 candidates,
/// which fill one AVX2 register and half an AVX-512 one (measured on Sapphire Rapids: its
/// search 10 % slower with the AVX-512 fits, IQ4_K's 1.45x faster), and Zen 4 runs most
/// 512-bit instructions as two 256-bit halves. Both give the same bits, so the choice never
/// changes a result.
pub fn fit_path(grid: &Grid, candidates: usize) -> Path {
    static PATHS: [OnceLock<Path>; 6] = [const { OnceLock::new() }; 6];
    let many = usize::from(candidates > 8);
    let slot = &PATHS[2 * grid_class(grid) + many];
    *slot.get_or_init(|| {
        let sample = FitSample::new(grid, 8 << many);
        crate::cpu::faster_wide_path(|path| sample.time_fits(path))
    })
}

/// The path [`nearest_indices`] takes on `grid`, chosen as [`fit_path`] chooses.
fn nearest_path(grid: &Grid) -> Path {
    static PATHS: [OnceLock<Path>; 3] = [const { OnceLock::new() }; 3];
    *PATHS[grid_class(grid)].get_or_init(|| {
        let sample = FitSample::new(grid, 1);
        crate::cpu::faster_wide_path(|path| sample.time_nearest(path))
    })
}

/// 0, 1, 2 for the 4-, 8- and 16-value grids.
fn grid_class(grid: &Grid) -> usize {
    match grid.values.len() {
        4 => 0,
        8 => 1,
        16 => 2,
        n => unreachable!("grids have 4, 8 or 16 values, not {n}"),
    }
}

/// A fixed 32-value block and a few candidate scales on a grid, for timing a path.
struct FitSample<'g> {
    grid: &'g Grid,
    x: [f32; 32],
    w: [f32; 32],
    ids: Vec<f32>,
}

impl<'g> FitSample<'g> {
    fn new(grid: &'g Grid, candidates: usize) -> Self {
        let x = std::array::from_fn(|j| ((j * 37 % 29) as f32 - 14.0) * 0.01);
        let w = std::array::from_fn(|j| 0.5 + (j * 11 % 7) as f32 * 0.1);
        let top = grid.values[grid.values.len() - 1] as f32;
        let ids = (0..candidates).map(|k| (top + k as f32) / 0.14).collect();
        FitSample { grid, x, w, ids }
    }

    /// Nanoseconds for a few batches of fits on `path`.
    fn time_fits(&self, path: Path) -> f64 {
        let mut out = [[0.0f32; 4]; MAX_CANDIDATES];
        let start = std::time::Instant::now();
        for _ in 0..16 {
            let (ids, x) = (
                std::hint::black_box(&self.ids),
                std::hint::black_box(&self.x),
            );
            fit_many_on(path, Signs::Both, self.grid, ids, x, &self.w, &mut out);
            std::hint::black_box(&out);
        }
        start.elapsed().as_nanos() as f64
    }

    /// Nanoseconds for a few blocks' nearest indices on `path`.
    fn time_nearest(&self, path: Path) -> f64 {
        let mut out = [0u8; 32];
        let start = std::time::Instant::now();
        for k in 0..64 {
            let x = std::hint::black_box(&self.x);
            nearest_indices_on(path, self.grid, self.ids[0] + k as f32, x, &mut out);
            std::hint::black_box(&out);
        }
        start.elapsed().as_nanos() as f64
    }
}

/// The batched fits on a given path (which must be available on this CPU).
pub fn fit_many_on(
    path: Path,
    signs: Signs,
    grid: &Grid,
    ids: &[f32],
    x: &[f32],
    w: &[f32],
    out: &mut [[f32; 4]],
) {
    assert!(ids.len() <= MAX_CANDIDATES && out.len() >= ids.len());
    assert!(
        path.is_available(),
        "quantize path {path:?} is not available on this CPU"
    );
    #[cfg(target_arch = "x86_64")]
    match path {
        // SAFETY (both): the CPU has the path's instruction sets (asserted above; AVX-512 is
        // only reported with AVX2 + FMA).
        Path::Avx512 => {
            unsafe {
                match signs {
                    Signs::Both => avx512::fit_many::<true>(grid, ids, x, w, out),
                    Signs::PlusOnly => avx512::fit_many::<false>(grid, ids, x, w, out),
                }
            }
            return;
        }
        Path::Avx2 => {
            unsafe {
                match signs {
                    Signs::Both => avx2::fit_many::<true>(grid, ids, x, w, out),
                    Signs::PlusOnly => avx2::fit_many::<false>(grid, ids, x, w, out),
                }
            }
            return;
        }
        Path::Scalar => {}
    }
    for (o, &id) in out.iter_mut().zip(ids) {
        *o = fit_one(grid, signs, id, x, w);
    }
}

/// `out[j] = grid.nearest(id·x[j])` for every element of a block, on a given path (which must
/// be available on this CPU).
pub fn nearest_indices_on(path: Path, grid: &Grid, id: f32, x: &[f32], out: &mut [u8]) {
    assert!(out.len() >= x.len());
    assert!(
        path.is_available(),
        "quantize path {path:?} is not available on this CPU"
    );
    #[cfg(target_arch = "x86_64")]
    match path {
        // SAFETY (both): the CPU has the path's instruction sets (asserted above).
        Path::Avx512 => {
            unsafe { avx512::nearest_indices(grid, id, x, out) };
            return;
        }
        Path::Avx2 => {
            unsafe { avx2::nearest_indices(grid, id, x, out) };
            return;
        }
        Path::Scalar => {}
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = grid.nearest(id * v) as u8;
    }
}

/// [`nearest_indices_on`] on the path calibrated for it.
pub fn nearest_indices(grid: &Grid, id: f32, x: &[f32], out: &mut [u8]) {
    nearest_indices_on(nearest_path(grid), grid, id, x, out)
}

/// One element's products added to a group of candidates' four sums, on either x86 width:
/// `al` = id·x per lane, `nearest` the lane's nearest grid value; the same f32 operations, in
/// the same order, as [`fit_one`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn add_element<V: F32Lanes, const BOTH_SIGNS: bool>(
    s: &mut [V; 4],
    al: V,
    (xv, wv): (V, V),
    nearest: impl Fn(V) -> V,
) {
    let q = nearest(al);
    let wq = wv.mul(q);
    s[0] = s[0].add(wq.mul(xv));
    s[1] = s[1].add(wq.mul(q));
    if BOTH_SIGNS {
        let q = nearest(al.flip_sign());
        let wq = wv.mul(q);
        s[2] = s[2].add(wq.mul(xv));
        s[3] = s[3].add(wq.mul(q));
    }
}

/// A group's four sums as per-lane fits: `fits(&s)[l]` is lane l's `[Σ+x, Σ+q, Σ-x, Σ-q]`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn lane_fits<V: F32Lanes>(s: &[V; 4]) -> [[f32; 4]; 16] {
    let mut sums = [[0.0f32; 16]; 4];
    for (v, lane) in s.iter().zip(sums.iter_mut()) {
        v.store(lane.as_mut_ptr());
    }
    std::array::from_fn(|l| [sums[0][l], sums[1][l], sums[2][l], sums[3][l]])
}

/// Groups of `V::LANES` candidates' sums into `out`, `count` candidates in all.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_fits<V: F32Lanes>(groups: &[[V; 4]], count: usize, out: &mut [[f32; 4]]) {
    for (group, out) in groups.iter().zip(out[..count].chunks_mut(V::LANES)) {
        out.copy_from_slice(&lane_fits(group)[..out.len()]);
    }
}

/// The AVX2 grid search, also used by the IQ4_NL refinement (`companion::legacy`).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{add_element, store_fits, MAX_CANDIDATES};
    use crate::tables::Grid;

    /// A grid half held in registers: values as f32 in two 8-lane halves, and the pivots of a
    /// branch-free binary search over the grid's thresholds (`Grid::thresholds`: the nearest
    /// index is the number of thresholds `<= x`). `N` is the number of grid values (4, 8 or
    /// 16), a constant.
    pub(crate) struct GridRegs<const N: usize> {
        /// Pivots m_1..m_{N-1} (m_i = threshold between v_{i-1} and v_i): the broadcasts of
        /// the first two steps and the permute tables of the last two.
        pivot_half: __m256,
        pivot_quarter: [__m256; 2],
        pivots_eighth: __m256,
        pivots_odd: __m256,
        low: __m256,
        high: __m256,
        /// For N = 4: the three thresholds, counted directly.
        thresholds4: [__m256; 3],
    }

    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn load<const N: usize>(grid: &Grid) -> GridRegs<N> {
        let n = N;
        debug_assert_eq!(grid.values.len(), N);
        let mut vals = [0.0f32; 16];
        for (v, &g) in vals.iter_mut().zip(grid.values) {
            *v = g as f32;
        }
        let m = |i: usize| grid.thresholds[i - 1];
        let thresholds4 = if n == 4 {
            [
                _mm256_set1_ps(m(1)),
                _mm256_set1_ps(m(2)),
                _mm256_set1_ps(m(3)),
            ]
        } else {
            [_mm256_setzero_ps(); 3]
        };
        let (pivot_half, pivot_quarter, pivots_eighth, pivots_odd) = if n == 16 {
            (
                _mm256_set1_ps(m(8)),
                [_mm256_set1_ps(m(4)), _mm256_set1_ps(m(12))],
                _mm256_setr_ps(m(2), m(6), m(10), m(14), 0.0, 0.0, 0.0, 0.0),
                _mm256_setr_ps(m(1), m(3), m(5), m(7), m(9), m(11), m(13), m(15)),
            )
        } else if n == 8 {
            (
                _mm256_set1_ps(m(4)),
                [_mm256_set1_ps(m(2)), _mm256_set1_ps(m(6))],
                _mm256_setzero_ps(),
                _mm256_setr_ps(m(1), m(3), m(5), m(7), 0.0, 0.0, 0.0, 0.0),
            )
        } else {
            let z = _mm256_setzero_ps();
            (z, [z, z], z, z)
        };
        GridRegs {
            pivot_half,
            pivot_quarter,
            pivots_eighth,
            pivots_odd,
            low: _mm256_loadu_ps(vals.as_ptr()),
            high: _mm256_loadu_ps(vals.as_ptr().add(8)),
            thresholds4,
        }
    }

    /// v[idx] per lane for idx in 0..16.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn select<const N: usize>(g: &GridRegs<N>, idx: __m256i) -> __m256 {
        let from_low = _mm256_permutevar8x32_ps(g.low, idx);
        if N <= 8 {
            return from_low;
        }
        let from_high = _mm256_permutevar8x32_ps(g.high, idx);
        let use_high = _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7)));
        _mm256_blendv_ps(from_low, from_high, use_high)
    }

    /// The index of the grid value nearest to each lane of `x`, exactly as `Grid::nearest`
    /// picks it (NaN and |x| >= 2^31 give 0).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn nearest_index<const N: usize>(g: &GridRegs<N>, x: __m256) -> __m256i {
        let le = |pivot: __m256| _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(pivot, x));
        let step = |mask: __m256i, size: i32| _mm256_and_si256(mask, _mm256_set1_epi32(size));
        let count = if N == 16 {
            let m8 = le(g.pivot_half);
            let mut pos = step(m8, 8);
            let q = _mm256_blendv_ps(
                g.pivot_quarter[0],
                g.pivot_quarter[1],
                _mm256_castsi256_ps(m8),
            );
            pos = _mm256_add_epi32(pos, step(le(q), 4));
            let e = _mm256_permutevar8x32_ps(g.pivots_eighth, _mm256_srli_epi32::<2>(pos));
            pos = _mm256_add_epi32(pos, step(le(e), 2));
            let o = _mm256_permutevar8x32_ps(g.pivots_odd, _mm256_srli_epi32::<1>(pos));
            _mm256_sub_epi32(pos, le(o)) // a true mask is -1
        } else if N == 8 {
            let m4 = le(g.pivot_half);
            let mut pos = step(m4, 4);
            let q = _mm256_blendv_ps(
                g.pivot_quarter[0],
                g.pivot_quarter[1],
                _mm256_castsi256_ps(m4),
            );
            pos = _mm256_add_epi32(pos, step(le(q), 2));
            let o = _mm256_permutevar8x32_ps(g.pivots_odd, _mm256_srli_epi32::<1>(pos));
            _mm256_sub_epi32(pos, le(o)) // a true mask is -1
        } else {
            let mut count = _mm256_setzero_si256();
            for m in &g.thresholds4 {
                count = _mm256_sub_epi32(count, le(*m));
            }
            count
        };
        // NaN and x <= -2^31 already count 0; x >= 2^31 must too (ik's (int) conversion
        // sends all of them there).
        let below = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(2_147_483_648.0));
        _mm256_and_si256(count, _mm256_castps_si256(below))
    }

    /// The grid value nearest to each lane of `x`, exactly as `Grid::nearest` picks it.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn nearest_value<const N: usize>(g: &GridRegs<N>, x: __m256) -> __m256 {
        select(g, nearest_index(g, x))
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn nearest_indices(grid: &Grid, id: f32, x: &[f32], out: &mut [u8]) {
        match grid.values.len() {
            4 => nearest_indices_n::<4>(grid, id, x, out),
            8 => nearest_indices_n::<8>(grid, id, x, out),
            16 => nearest_indices_n::<16>(grid, id, x, out),
            n => unreachable!("grids have 4, 8 or 16 values, not {n}"),
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn nearest_indices_n<const N: usize>(grid: &Grid, id: f32, x: &[f32], out: &mut [u8]) {
        let g = load::<N>(grid);
        let idv = _mm256_set1_ps(id);
        let mut lanes = [0f32; 8];
        let mut idx = [0i32; 8];
        for (xs, os) in x.chunks(8).zip(out.chunks_mut(8)) {
            lanes[..xs.len()].copy_from_slice(xs);
            let al = _mm256_mul_ps(idv, _mm256_loadu_ps(lanes.as_ptr()));
            _mm256_storeu_si256(idx.as_mut_ptr() as *mut __m256i, nearest_index(&g, al));
            for (o, &i) in os.iter_mut().zip(&idx) {
                *o = i as u8;
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn fit_many<const BOTH_SIGNS: bool>(
        grid: &Grid,
        ids: &[f32],
        x: &[f32],
        w: &[f32],
        out: &mut [[f32; 4]],
    ) {
        match grid.values.len() {
            4 => by_groups::<4, BOTH_SIGNS>(grid, ids, x, w, out),
            8 => by_groups::<8, BOTH_SIGNS>(grid, ids, x, w, out),
            16 => by_groups::<16, BOTH_SIGNS>(grid, ids, x, w, out),
            n => unreachable!("grids have 4, 8 or 16 values, not {n}"),
        }
    }

    /// The number of 8-candidate groups as a constant, so that every group's sums stay in
    /// registers and the groups interleave (independent dependency chains per element).
    #[target_feature(enable = "avx2")]
    unsafe fn by_groups<const N: usize, const BOTH_SIGNS: bool>(
        grid: &Grid,
        ids: &[f32],
        x: &[f32],
        w: &[f32],
        out: &mut [[f32; 4]],
    ) {
        match ids.len().div_ceil(8) {
            0 => {}
            1 => fit_many_n::<N, BOTH_SIGNS, 1>(grid, ids, x, w, out),
            2 => fit_many_n::<N, BOTH_SIGNS, 2>(grid, ids, x, w, out),
            3 => fit_many_n::<N, BOTH_SIGNS, 3>(grid, ids, x, w, out),
            _ => fit_many_n::<N, BOTH_SIGNS, 4>(grid, ids, x, w, out),
        }
    }

    // Out of line (one call per batch of fits), so benches/mca_fits.py finds its loop by name.
    #[inline(never)]
    #[target_feature(enable = "avx2")]
    unsafe fn fit_many_n<const N: usize, const BOTH_SIGNS: bool, const GROUPS: usize>(
        grid: &Grid,
        ids: &[f32],
        x: &[f32],
        w: &[f32],
        out: &mut [[f32; 4]],
    ) {
        let g = load::<N>(grid);
        let mut padded = [0.0f32; MAX_CANDIDATES];
        padded[..ids.len()].copy_from_slice(ids);
        let id: [__m256; GROUPS] =
            std::array::from_fn(|k| _mm256_loadu_ps(padded.as_ptr().add(8 * k)));
        let mut sums = [[_mm256_setzero_ps(); 4]; GROUPS];
        for (&xj, &wj) in x.iter().zip(w) {
            let (xv, wv) = (_mm256_set1_ps(xj), _mm256_set1_ps(wj));
            for (s, &id) in sums.iter_mut().zip(&id) {
                let al = _mm256_mul_ps(id, xv);
                add_element::<_, BOTH_SIGNS>(s, al, (xv, wv), |v| nearest_value(&g, v));
            }
        }
        store_fits(&sums, ids.len(), out);
    }
}

/// The AVX-512 batched fits: 16 candidates per register. A lane's nearest index is a binary
/// search over the grid's thresholds (as in the AVX2 fit: the number of thresholds `<= x`),
/// each step one 16-entry `vpermps` look-up and a masked add; the value is one more look-up.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{add_element, store_fits, MAX_CANDIDATES};
    use crate::tables::Grid;

    /// A grid half in registers: its thresholds (+inf past the last one) and its values.
    pub(crate) struct GridRegs {
        thresholds: __m512,
        values: __m512,
    }

    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn load(grid: &Grid) -> GridRegs {
        let mut values = [0.0f32; 16];
        for (v, &g) in values.iter_mut().zip(grid.values) {
            *v = g as f32;
        }
        let mut thresholds = [f32::INFINITY; 16];
        thresholds[..15].copy_from_slice(&grid.thresholds);
        GridRegs {
            thresholds: _mm512_loadu_ps(thresholds.as_ptr()),
            values: _mm512_loadu_ps(values.as_ptr()),
        }
    }

    /// The index of the grid value nearest to each lane of `x`, exactly as `Grid::nearest`
    /// picks it (NaN and |x| >= 2^31 give 0). `N` is the number of grid values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn nearest_index<const N: usize>(g: &GridRegs, x: __m512) -> __m512i {
        nearest_index_from::<N>(g, x, _mm512_setzero_si512())
    }

    /// [`nearest_index`] on registers holding several grids of `N` values side by side: lane
    /// l searches the grid starting at entry `first[l]` and returns its entry (NaN and
    /// |x| >= 2^31 give `first[l]`, that grid's index 0).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn nearest_index_from<const N: usize>(
        g: &GridRegs,
        x: __m512,
        first: __m512i,
    ) -> __m512i {
        // Steps N/2, N/4, ..., 1: move up by the step where the threshold just below the new
        // position is <= x. NaN compares false everywhere and stays at the start.
        let mut pos = first;
        let mut step = N as i32 / 2;
        while step >= 1 {
            let probe = _mm512_add_epi32(pos, _mm512_set1_epi32(step - 1));
            let pivot = _mm512_permutexvar_ps(probe, g.thresholds);
            let le = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(pivot, x);
            pos = _mm512_mask_add_epi32(pos, le, pos, _mm512_set1_epi32(step));
            step /= 2;
        }
        // x >= 2^31 must count 0, as ik's (int) conversion sends it there.
        let sane = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(2_147_483_648.0));
        _mm512_mask_mov_epi32(first, sane, pos)
    }

    /// Two 8-value grids in one pair of registers: entries 0..8 hold `a`, 8..16 hold `b`.
    #[target_feature(enable = "avx512f")]
    unsafe fn load_pair8(a: &Grid, b: &Grid) -> GridRegs {
        let (mut values, mut thresholds) = ([0.0f32; 16], [f32::INFINITY; 16]);
        for (half, grid) in [a, b].into_iter().enumerate() {
            for (v, &g) in values[8 * half..].iter_mut().zip(grid.values) {
                *v = g as f32;
            }
            thresholds[8 * half..8 * half + 7].copy_from_slice(&grid.thresholds[..7]);
        }
        GridRegs {
            thresholds: _mm512_loadu_ps(thresholds.as_ptr()),
            values: _mm512_loadu_ps(values.as_ptr()),
        }
    }

    /// Both-sign fits of up to 8 candidates on each of two 8-value grids in one pass: lanes
    /// 0..8 fit `ids[0]` on `grids[0]`, lanes 8..16 `ids[1]` on `grids[1]`, each lane with the
    /// scalar fit's f32 operations in element order.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(crate) unsafe fn fit_pair8(
        grids: [&Grid; 2],
        ids: [&[f32]; 2],
        x: &[f32],
        w: &[f32],
        out: [&mut [[f32; 4]]; 2],
    ) {
        debug_assert!(grids.iter().all(|g| g.values.len() == 8));
        assert!(ids[0].len() <= 8 && ids[1].len() <= 8);
        let g = load_pair8(grids[0], grids[1]);
        let first = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 8, 8, 8, 8, 8, 8, 8, 8);
        let mut padded = [0.0f32; 16];
        padded[..ids[0].len()].copy_from_slice(ids[0]);
        padded[8..8 + ids[1].len()].copy_from_slice(ids[1]);
        let id = _mm512_loadu_ps(padded.as_ptr());
        let mut s = [_mm512_setzero_ps(); 4];
        let nearest = |v| _mm512_permutexvar_ps(nearest_index_from::<8>(&g, v, first), g.values);
        for (&xj, &wj) in x.iter().zip(w) {
            let (xv, wv) = (_mm512_set1_ps(xj), _mm512_set1_ps(wj));
            add_element::<_, true>(&mut s, _mm512_mul_ps(id, xv), (xv, wv), nearest);
        }
        let fits = super::lane_fits(&s);
        for (half, (out, ids)) in out.into_iter().zip(ids).enumerate() {
            out[..ids.len()].copy_from_slice(&fits[8 * half..8 * half + ids.len()]);
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn nearest_indices(grid: &Grid, id: f32, x: &[f32], out: &mut [u8]) {
        match grid.values.len() {
            4 => nearest_indices_n::<4>(grid, id, x, out),
            8 => nearest_indices_n::<8>(grid, id, x, out),
            16 => nearest_indices_n::<16>(grid, id, x, out),
            n => unreachable!("grids have 4, 8 or 16 values, not {n}"),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn nearest_indices_n<const N: usize>(grid: &Grid, id: f32, x: &[f32], out: &mut [u8]) {
        let g = load(grid);
        let idv = _mm512_set1_ps(id);
        let mut lanes = [0f32; 16];
        let mut idx = [0u8; 16];
        for (xs, os) in x.chunks(16).zip(out[..x.len()].chunks_mut(16)) {
            lanes[..xs.len()].copy_from_slice(xs);
            let al = _mm512_mul_ps(idv, _mm512_loadu_ps(lanes.as_ptr()));
            let i = _mm512_cvtepi32_epi8(nearest_index::<N>(&g, al));
            _mm_storeu_si128(idx.as_mut_ptr() as *mut __m128i, i);
            os.copy_from_slice(&idx[..os.len()]);
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn fit_many<const BOTH_SIGNS: bool>(
        grid: &Grid,
        ids: &[f32],
        x: &[f32],
        w: &[f32],
        out: &mut [[f32; 4]],
    ) {
        match (grid.values.len(), ids.len() > 16) {
            (4, false) => fit_many_n::<4, BOTH_SIGNS, 1>(grid, ids, x, w, out),
            (4, true) => fit_many_n::<4, BOTH_SIGNS, 2>(grid, ids, x, w, out),
            (8, false) => fit_many_n::<8, BOTH_SIGNS, 1>(grid, ids, x, w, out),
            (8, true) => fit_many_n::<8, BOTH_SIGNS, 2>(grid, ids, x, w, out),
            (16, false) => fit_many_n::<16, BOTH_SIGNS, 1>(grid, ids, x, w, out),
            (16, true) => fit_many_n::<16, BOTH_SIGNS, 2>(grid, ids, x, w, out),
            (n, _) => unreachable!("grids have 4, 8 or 16 values, not {n}"),
        }
    }

    /// As the AVX2 `fit_many_n`, 16 candidates per group: each lane adds its element's
    /// products in element order with the scalar fit's f32 operations.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn fit_many_n<const N: usize, const BOTH_SIGNS: bool, const GROUPS: usize>(
        grid: &Grid,
        ids: &[f32],
        x: &[f32],
        w: &[f32],
        out: &mut [[f32; 4]],
    ) {
        let g = load(grid);
        let mut padded = [0.0f32; MAX_CANDIDATES];
        padded[..ids.len()].copy_from_slice(ids);
        let id: [__m512; GROUPS] =
            std::array::from_fn(|k| _mm512_loadu_ps(padded.as_ptr().add(16 * k)));
        let mut sums = [[_mm512_setzero_ps(); 4]; GROUPS];
        let nearest = |v| _mm512_permutexvar_ps(nearest_index::<N>(&g, v), g.values);
        for (&xj, &wj) in x.iter().zip(w) {
            let (xv, wv) = (_mm512_set1_ps(xj), _mm512_set1_ps(wj));
            for (s, &id) in sums.iter_mut().zip(&id) {
                add_element::<_, BOTH_SIGNS>(s, _mm512_mul_ps(id, xv), (xv, wv), nearest);
            }
        }
        store_fits(&sums, ids.len(), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Path;
    use crate::tables::{IQ2_GRIDS, IQ3_GRIDS, IQ4_GRIDS};

    use crate::testing::rng;

    // The SIMD paths below are this CPU's; the AVX-512 fits are also tested in Bochs, by
    // tests/simd_kernels.rs.

    /// Every SIMD lane reproduces the scalar fit bit for bit, on random blocks, scales and
    /// weights, including blocks with zeros and extreme inverse scales.
    #[test]
    fn simd_fits_equal_scalar_fits() {
        let mut seed = 12345u32;
        for trial in 0..300 {
            let n = if trial % 2 == 0 { 16 } else { 32 };
            let amp = 10f32.powi(trial % 7 - 3);
            let x: Vec<f32> = (0..n)
                .map(|j| {
                    if (trial + j) % 9 == 0 {
                        0.0
                    } else {
                        amp * rng(&mut seed)
                    }
                })
                .collect();
            let w: Vec<f32> = (0..n).map(|_| rng(&mut seed).abs()).collect();
            let max = x
                .iter()
                .fold(0f32, |m, v| if v.abs() > m.abs() { *v } else { m });
            let ncand = 1 + trial as usize % MAX_CANDIDATES;
            // Every tenth trial scales some candidates far past the grid, so that id·x
            // reaches 2^31 and beyond (where ik's conversion sends x to index 0), and
            // 1e9..2^31 (still the top index).
            let reach = match trial % 10 {
                3 => 3e9,
                7 => 1.5e9,
                _ => 120.0,
            };
            let ids: Vec<f32> = (0..ncand)
                .map(|k| (k as f32 - 7.0 - reach * rng(&mut seed)) / max.max(1e-30))
                .collect();
            let grids = IQ2_GRIDS.iter().chain(&IQ3_GRIDS).chain(&IQ4_GRIDS);
            for (grid, signs) in grids.flat_map(|g| [(g, Signs::Both), (g, Signs::PlusOnly)]) {
                let mut scalar = [[0f32; 4]; MAX_CANDIDATES];
                fit_many_on(Path::Scalar, signs, grid, &ids, &x, &w, &mut scalar);
                for path in crate::cpu::vector_paths() {
                    let mut simd = [[0f32; 4]; MAX_CANDIDATES];
                    fit_many_on(path, signs, grid, &ids, &x, &w, &mut simd);
                    for c in 0..ncand {
                        let bits = |f: [f32; 4]| f.map(f32::to_bits);
                        assert_eq!(
                            bits(scalar[c]),
                            bits(simd[c]),
                            "{path:?}: trial {trial}, candidate {c}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn simd_nearest_indices_equal_scalar() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            let mut seed = 99u32;
            for trial in 0..200 {
                let n = 1 + trial % 40;
                let x: Vec<f32> = (0..n).map(|_| 3.0 * rng(&mut seed)).collect();
                let id = 60.0 * rng(&mut seed);
                for grid in IQ2_GRIDS.iter().chain(&IQ3_GRIDS).chain(&IQ4_GRIDS) {
                    let (mut scalar, mut simd) = (vec![0u8; n], vec![0u8; n]);
                    nearest_indices_on(Path::Scalar, grid, id, &x, &mut scalar);
                    for path in crate::cpu::vector_paths() {
                        nearest_indices_on(path, grid, id, &x, &mut simd);
                        assert_eq!(scalar, simd, "{path:?}: trial {trial}");
                    }
                }
            }
        }
    }

    /// The AVX2 threshold count equals `Grid::nearest` for every f32 within 2^-6 of every
    /// midpoint of every grid (where rounding moves the decision off the midpoint), and for
    /// random and extreme values elsewhere.
    #[test]
    fn threshold_count_equals_nearest() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            use std::arch::x86_64::*;
            fn check<const N: usize>(grid: &Grid, xs: &[f32]) {
                // SAFETY: AVX2 was detected by the caller.
                unsafe {
                    let g = avx2::load::<N>(grid);
                    for chunk in xs.chunks(8) {
                        let mut lanes = [0f32; 8];
                        lanes[..chunk.len()].copy_from_slice(chunk);
                        let idx = avx2::nearest_index(&g, _mm256_loadu_ps(lanes.as_ptr()));
                        let mut got = [0i32; 8];
                        _mm256_storeu_si256(got.as_mut_ptr() as *mut __m256i, idx);
                        for (&x, &i) in chunk.iter().zip(&got) {
                            assert_eq!(
                                i as usize,
                                grid.nearest(x),
                                "x = {x:e} ({:#x})",
                                x.to_bits()
                            );
                        }
                    }
                }
            }
            let mut seed = 777u32;
            let mut extremes = vec![
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                2_147_483_648.0,
                -2_147_483_648.0,
                2_147_483_520.0,
                -2_147_483_520.0,
                1e-30,
                -0.0,
                0.0,
                f32::MAX,
                f32::MIN_POSITIVE,
            ];
            extremes.extend((0..4000).map(|_| 300.0 * rng(&mut seed)));
            let grids = IQ2_GRIDS.iter().chain(&IQ3_GRIDS).chain(&IQ4_GRIDS);
            for grid in grids {
                let mut xs = extremes.clone();
                xs.extend(crate::tables::around_midpoints(grid.values, 1.0 / 64.0));
                match grid.values.len() {
                    4 => check::<4>(grid, &xs),
                    8 => check::<8>(grid, &xs),
                    _ => check::<16>(grid, &xs),
                }
            }
        }
    }
}
