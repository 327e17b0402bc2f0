//! Batched least-squares fits for the non-linear grid search: one block against many candidate
//! inverse scales at once. Each candidate keeps its own four sums, accumulated in element order
//! with the same f32 operations as the scalar code, so every SIMD lane produces exactly the
//! scalar result: the lanes run across candidates, never across elements.

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
    fit_many_on(
        crate::cpu::quantize_path(),
        Signs::Both,
        grid,
        ids,
        x,
        w,
        out,
    )
}

/// [`fit_many`] with the `+` fits only.
pub fn fit_many_plus(grid: &Grid, ids: &[f32], x: &[f32], w: &[f32], out: &mut [[f32; 4]]) {
    fit_many_on(
        crate::cpu::quantize_path(),
        Signs::PlusOnly,
        grid,
        ids,
        x,
        w,
        out,
    )
}

/// The batched fits on a given path (which must be available on this CPU).
pub fn fit_many_on(
    path: crate::cpu::Path,
    signs: Signs,
    grid: &Grid,
    ids: &[f32],
    x: &[f32],
    w: &[f32],
    out: &mut [[f32; 4]],
) {
    assert!(ids.len() <= MAX_CANDIDATES && out.len() >= ids.len());
    #[cfg(target_arch = "x86_64")]
    if path == crate::cpu::Path::Avx2 {
        assert!(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"));
        // SAFETY: the CPU has AVX2 (asserted above).
        unsafe {
            match signs {
                Signs::Both => avx2::fit_many::<true>(grid, ids, x, w, out),
                Signs::PlusOnly => avx2::fit_many::<false>(grid, ids, x, w, out),
            }
        }
        return;
    }
    for (o, &id) in out.iter_mut().zip(ids) {
        *o = fit_one(grid, signs, id, x, w);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::MAX_CANDIDATES;
    use crate::tables::Grid;

    /// A grid half held in registers: values as f32 in two 8-lane halves, and what the
    /// nearest-interval search needs (binary-search pivots; for 4 values, the two interior
    /// values to count against). `N` is the number of grid values (4, 8 or 16), a constant.
    struct GridRegs<const N: usize> {
        /// Branch-free lower bound over u_1..u_{N-1} (u_i = v_i for i <= N-2, u_{N-1} = +inf):
        /// the broadcast pivots of the first two steps and the permute tables of the last two.
        pivot_half: __m256,
        pivot_quarter: [__m256; 2],
        pivots_eighth: __m256,
        pivots_odd: __m256,
        low: __m256,
        high: __m256,
        interior: [__m256; 2],
    }

    #[target_feature(enable = "avx2")]
    unsafe fn load<const N: usize>(grid: &Grid) -> GridRegs<N> {
        let n = N;
        debug_assert_eq!(grid.values.len(), N);
        let mut vals = [0.0f32; 16];
        for (v, &g) in vals.iter_mut().zip(grid.values) {
            *v = g as f32;
        }
        let interior = [_mm256_set1_ps(vals[1]), _mm256_set1_ps(vals[2])];
        let u = |i: usize| if i <= n - 2 { vals[i] } else { f32::INFINITY };
        let (pivot_half, pivot_quarter, pivots_eighth, pivots_odd) = if n == 16 {
            (
                _mm256_set1_ps(u(8)),
                [_mm256_set1_ps(u(4)), _mm256_set1_ps(u(12))],
                _mm256_setr_ps(u(2), u(6), u(10), u(14), 0.0, 0.0, 0.0, 0.0),
                _mm256_setr_ps(u(1), u(3), u(5), u(7), u(9), u(11), u(13), u(15)),
            )
        } else {
            // n == 8: steps 4, 2, 1 (n == 4 counts directly and uses none of these).
            let z = _mm256_setzero_ps();
            let odd = if n == 8 {
                _mm256_setr_ps(u(1), u(3), u(5), u(7), 0.0, 0.0, 0.0, 0.0)
            } else {
                z
            };
            let quarter = if n == 8 {
                [_mm256_set1_ps(u(2)), _mm256_set1_ps(u(6))]
            } else {
                [z, z]
            };
            (_mm256_set1_ps(u(n.min(8) / 2)), quarter, z, odd)
        };
        GridRegs {
            pivot_half,
            pivot_quarter,
            pivots_eighth,
            pivots_odd,
            low: _mm256_loadu_ps(vals.as_ptr()),
            high: _mm256_loadu_ps(vals.as_ptr().add(8)),
            interior,
        }
    }

    /// v[idx] per lane for idx in 0..16.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn select<const N: usize>(g: &GridRegs<N>, idx: __m256i) -> __m256 {
        let from_low = _mm256_permutevar8x32_ps(g.low, idx);
        if N <= 8 {
            return from_low;
        }
        let from_high = _mm256_permutevar8x32_ps(g.high, idx);
        let use_high = _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7)));
        _mm256_blendv_ps(from_low, from_high, use_high)
    }

    /// The grid value nearest to each lane of `x`, exactly as `Grid::nearest` picks it.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn nearest_value<const N: usize>(g: &GridRegs<N>, x: __m256) -> __m256 {
        // lo = the last value <= x, clamped to [0, n-2] = the number of v_1..v_{n-2} <= x:
        // a branch-free binary search (pivots compared as floats: exact, values are integers).
        let le = |pivot: __m256| _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(pivot, x));
        let step = |mask: __m256i, size: i32| _mm256_and_si256(mask, _mm256_set1_epi32(size));
        let lo = if N == 16 {
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
            _mm256_add_epi32(pos, step(le(o), 1))
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
            _mm256_add_epi32(pos, step(le(o), 1))
        } else {
            let mut lo = _mm256_setzero_si256();
            for b in &g.interior {
                lo = _mm256_sub_epi32(lo, le(*b));
            }
            lo
        };
        let v_lo = select(g, lo);
        let v_hi = select(g, _mm256_add_epi32(lo, _mm256_set1_epi32(1)));
        // Take v_hi unless (x - v_lo) < (v_hi - x): ties go up, as in ik's code.
        let below = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_sub_ps(x, v_lo), _mm256_sub_ps(v_hi, x));
        let q = _mm256_blendv_ps(v_hi, v_lo, below);
        // NaN or |x| >= 2^31: ik's (int) conversion sends these to index 0.
        let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), x);
        let sane = _mm256_cmp_ps::<_CMP_LT_OQ>(abs, _mm256_set1_ps(2_147_483_648.0));
        _mm256_blendv_ps(select(g, _mm256_setzero_si256()), q, sane)
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
        let sign = _mm256_set1_ps(-0.0);
        let id: [__m256; GROUPS] =
            std::array::from_fn(|k| _mm256_loadu_ps(padded.as_ptr().add(8 * k)));
        let mut sums = [[_mm256_setzero_ps(); 4]; GROUPS];
        for (&xj, &wj) in x.iter().zip(w) {
            let (xv, wv) = (_mm256_set1_ps(xj), _mm256_set1_ps(wj));
            for k in 0..GROUPS {
                let al = _mm256_mul_ps(id[k], xv);
                let s = &mut sums[k];
                let q = nearest_value(&g, al);
                let wq = _mm256_mul_ps(wv, q);
                s[0] = _mm256_add_ps(s[0], _mm256_mul_ps(wq, xv));
                s[1] = _mm256_add_ps(s[1], _mm256_mul_ps(wq, q));
                if BOTH_SIGNS {
                    let q = nearest_value(&g, _mm256_xor_ps(al, sign));
                    let wq = _mm256_mul_ps(wv, q);
                    s[2] = _mm256_add_ps(s[2], _mm256_mul_ps(wq, xv));
                    s[3] = _mm256_add_ps(s[3], _mm256_mul_ps(wq, q));
                }
            }
        }
        let mut lanes = [[0.0f32; 8]; 4];
        for (k, group) in sums.iter().enumerate() {
            for (s, lane) in group.iter().zip(lanes.iter_mut()) {
                _mm256_storeu_ps(lane.as_mut_ptr(), *s);
            }
            for (l, o) in out
                .iter_mut()
                .skip(8 * k)
                .take(ids.len().saturating_sub(8 * k).min(8))
                .enumerate()
            {
                *o = [lanes[0][l], lanes[1][l], lanes[2][l], lanes[3][l]];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Path;
    use crate::tables::{IQ2_GRIDS, IQ3_GRIDS, IQ4_GRIDS};

    /// xorshift32: reproducible inputs without a dependency.
    fn rng(seed: &mut u32) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 17;
        *seed ^= *seed << 5;
        (*seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }

    /// Every SIMD lane reproduces the scalar fit bit for bit, on random blocks, scales and
    /// weights, including blocks with zeros and extreme inverse scales.
    #[test]
    fn simd_fits_equal_scalar_fits() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
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
                let ids: Vec<f32> = (0..ncand)
                    .map(|k| (k as f32 - 7.0 - 120.0 * rng(&mut seed)) / max.max(1e-30))
                    .collect();
                let grids = IQ2_GRIDS.iter().chain(&IQ3_GRIDS).chain(&IQ4_GRIDS);
                for (grid, signs) in grids.flat_map(|g| [(g, Signs::Both), (g, Signs::PlusOnly)]) {
                    let mut scalar = [[0f32; 4]; MAX_CANDIDATES];
                    let mut simd = [[0f32; 4]; MAX_CANDIDATES];
                    fit_many_on(Path::Scalar, signs, grid, &ids, &x, &w, &mut scalar);
                    fit_many_on(Path::Avx2, signs, grid, &ids, &x, &w, &mut simd);
                    for c in 0..ncand {
                        let bits = |f: [f32; 4]| f.map(f32::to_bits);
                        assert_eq!(
                            bits(scalar[c]),
                            bits(simd[c]),
                            "trial {trial}, candidate {c}"
                        );
                    }
                }
            }
        }
    }
}
