//! The scale searches of ik_llama.cpp's ggml-quants.c (MIT) that the companion types use:
//! `make_qx_quants` (symmetric, Q5_0/Q6_0/Q6_K), `make_qkx2_quants` (scale + min, f32,
//! the K-quants without imatrix), `make_qkx3_quants` (scale + min, f64 sums, with imatrix)
//! and `make_qp_quants` (positive super-block scales). Plain f32/f64 arithmetic in the
//! association order of the C, which was built without FMA contraction (the AVX2 kernels
//! fuse only products that are exact, which rounds the same).

use super::util::nearest_int;
use crate::cpu::compiled_for_avx2;
use crate::numeric::FitPick;

/// ggml-quants.c `GROUP_MAX_EPS`.
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// Candidate inverse scales of `make_qx_quants`: two families of 19.
const N_ISCALES: usize = 38;

/// `(Σ (w·x)·l, Σ (w·l)·l)` for every inverse scale, `l = clamp(nearest_int(iscale·x))`.
fn level_sums(
    nmax: i32,
    iscales: &[f32; N_ISCALES],
    x: &[f32],
    w: &[f32],
    wx: &[f32],
) -> ([f32; N_ISCALES], [f32; N_ISCALES]) {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: the Avx2 path is only chosen on CPUs with AVX2.
        return unsafe { level_sums_avx2(nmax, iscales, x, w, wx) };
    }
    let (mut sumlx, mut suml2) = ([0f32; N_ISCALES], [0f32; N_ISCALES]);
    for (c, &iscale) in iscales.iter().enumerate() {
        for i in 0..x.len() {
            let lf = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1) as f32;
            sumlx[c] += wx[i] * lf;
            suml2[c] += w[i] * lf * lf;
        }
    }
    (sumlx, suml2)
}

/// [`level_sums`] with 8 candidates per vector, all five vectors advancing together so that
/// their ten sums are independent chains. `nearest_int` is a round-to-nearest-even, which is
/// what the float-add trick computes (|iscale·x| <= nmax + 1, far below 2^22), and clamping
/// it as a float is exact.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn level_sums_avx2(
    nmax: i32,
    iscales: &[f32; N_ISCALES],
    x: &[f32],
    w: &[f32],
    wx: &[f32],
) -> ([f32; N_ISCALES], [f32; N_ISCALES]) {
    use std::arch::x86_64::*;
    const GROUPS: usize = N_ISCALES.div_ceil(8);
    let mut padded = [0f32; 8 * GROUPS];
    padded[..N_ISCALES].copy_from_slice(iscales);
    let (lo, hi) = (
        _mm256_set1_ps(-nmax as f32),
        _mm256_set1_ps((nmax - 1) as f32),
    );
    let is: [__m256; GROUPS] = std::array::from_fn(|g| _mm256_loadu_ps(padded[8 * g..].as_ptr()));
    let mut slx = [_mm256_setzero_ps(); GROUPS];
    let mut sl2 = [_mm256_setzero_ps(); GROUPS];
    for ((&xi, &wi), &wxi) in x.iter().zip(w).zip(wx) {
        let (xv, wv, wxv) = (_mm256_set1_ps(xi), _mm256_set1_ps(wi), _mm256_set1_ps(wxi));
        for g in 0..GROUPS {
            let rounded = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(is[g], xv),
            );
            let lf = _mm256_min_ps(_mm256_max_ps(rounded, lo), hi);
            slx[g] = _mm256_add_ps(slx[g], _mm256_mul_ps(wxv, lf));
            sl2[g] = _mm256_add_ps(sl2[g], _mm256_mul_ps(_mm256_mul_ps(wv, lf), lf));
        }
    }
    let mut out = ([0f32; 8 * GROUPS], [0f32; 8 * GROUPS]);
    for g in 0..GROUPS {
        _mm256_storeu_ps(out.0[8 * g..].as_mut_ptr(), slx[g]);
        _mm256_storeu_ps(out.1[8 * g..].as_mut_ptr(), sl2[g]);
    }
    let mut res = ([0f32; N_ISCALES], [0f32; N_ISCALES]);
    res.0.copy_from_slice(&out.0[..N_ISCALES]);
    res.1.copy_from_slice(&out.1[..N_ISCALES]);
    res
}

compiled_for_avx2! {
    /// Weighted least-squares fit of `x ≈ scale·l`, `l ∈ [-nmax, nmax-1]`, with `rmse_type = 1`
    /// (weights `qw`, or `x²` when absent). Stores `l + nmax` in `out` and returns the scale.
    /// This is ggml-quants.c's version (the IQK types use iqk's,
    /// `numeric::make_qx_quants_iqk`): it also tries the `(nmax-1)/max` family of scales and
    /// ends with a greedy one-step coordinate descent.
    pub(super) fn make_qx_quants_ggml => make_qx_quants_ggml_body(
        nmax: i32,
        x: &[f32],
        out: &mut [i8],
        qw: Option<&[f32]>,
    ) -> f32
}

#[inline(always)]
fn make_qx_quants_ggml_body(nmax: i32, x: &[f32], out: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        out[..n].fill(0);
        return 0.0;
    }
    let w = |i: usize| match qw {
        Some(q) => q[i],
        None => x[i] * x[i],
    };
    let q = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let nmaxf = nmax as f32;

    // Every candidate fit is independent of the accept decisions: compute them all first
    // (SIMD lanes across candidates, each lane summing in element order), then replay ik's
    // order. Candidate `FIRST` (is = 0 of the -nmax family) is bit for bit ik's starting
    // scale -nmax/max, so its sums are the starting point.
    const FIRST: usize = 18;
    let mut iscales = [0f32; N_ISCALES];
    for (k, is) in (-9..=9).enumerate() {
        let fis = 0.1f32 * is as f32;
        iscales[2 * k] = -(nmaxf + fis);
        iscales[2 * k + 1] = (nmax - 1) as f32 + fis;
    }
    for is in &mut iscales {
        *is /= max;
    }
    debug_assert_eq!(iscales[FIRST].to_bits(), (-nmaxf / max).to_bits());
    let mut wts = [0f32; 32];
    let mut wx = [0f32; 32];
    for i in 0..n {
        wts[i] = w(i);
        wx[i] = w(i) * x[i];
    }
    let (all_sumlx, all_suml2) = level_sums(nmax, &iscales, x, &wts[..n], &wx[..n]);
    let (sumlx, suml2) = (all_sumlx[FIRST], all_suml2[FIRST]);
    let mut pick = FitPick::first(if suml2 != 0.0 { sumlx / suml2 } else { 0.0 }, sumlx);
    let mut best_sumlx = sumlx;
    let mut best_suml2 = suml2;
    let mut best_iscale = None;
    for (c, &iscale) in iscales.iter().enumerate() {
        let (sumlx, suml2) = (all_sumlx[c], all_suml2[c]);
        if pick.offer(sumlx, suml2) {
            best_iscale = Some(iscale);
            best_sumlx = sumlx;
            best_suml2 = suml2;
        }
    }
    // Only the last accepted scale's levels survive, so they are written once.
    let iscale = best_iscale.unwrap_or(iscales[FIRST]);
    for i in 0..n {
        out[i] = (q(iscale, x[i]) + nmax) as i8;
    }

    let mut sumlx = best_sumlx;
    let mut suml2 = best_suml2;
    for _ in 0..n * (2 * nmax as usize - 1) {
        let Some((j, gmax)) = steepest_level(nmax, pick.scale, x, &wts[..n], &out[..n]) else {
            break;
        };
        let wj = w(j);
        let mut l = out[j] as i32 - nmax;
        let (mut new_sumlx, mut new_suml2) = (sumlx, suml2);
        if gmax > 0.0 {
            new_sumlx += wj * x[j];
            new_suml2 += wj * (2 * l + 1) as f32;
            l += 1;
        } else {
            new_sumlx -= wj * x[j];
            new_suml2 -= wj * (2 * l - 1) as f32;
            l -= 1;
        }
        if pick.offer(new_sumlx, new_suml2) {
            sumlx = new_sumlx;
            suml2 = new_suml2;
            out[j] = (l + nmax) as i8;
        } else {
            break;
        }
    }
    pick.scale
}

/// The coordinate descent step of `make_qx_quants`: the first level (of `levels`, stored as
/// `l + nmax`) with the largest gradient magnitude `|scale·w·(x − scale·l)|` among those that
/// can still move in the gradient's direction, with that gradient.
fn steepest_level(
    nmax: i32,
    scale: f32,
    x: &[f32],
    w: &[f32],
    levels: &[i8],
) -> Option<(usize, f32)> {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() && x.len().is_multiple_of(8) {
        // SAFETY: the Avx2 path is only chosen on CPUs with AVX2.
        return unsafe { steepest_level_avx2(nmax, scale, x, w, levels) };
    }
    steepest_level_scalar(nmax, scale, x, w, levels)
}

fn steepest_level_scalar(
    nmax: i32,
    scale: f32,
    x: &[f32],
    w: &[f32],
    levels: &[i8],
) -> Option<(usize, f32)> {
    steepest_pick_scalar(x.len(), -nmax, nmax - 1, |j| {
        let l = levels[j] as i32 - nmax;
        (scale * w[j] * (x[j] - scale * l as f32), l)
    })
}

/// The scalar core of the steepest picks (the twin of `steepest_pick_avx2`): `grad(j)` gives
/// element j's gradient and level. A level may move up while below `top` and down while above
/// `bottom`; among the movable ones, the first with the largest gradient magnitude wins.
/// Returns it and its gradient.
fn steepest_pick_scalar(
    n: usize,
    bottom: i32,
    top: i32,
    grad: impl Fn(usize) -> (f32, i32),
) -> Option<(usize, f32)> {
    let mut abs_gmax = 0f32;
    let mut best = None;
    for j in 0..n {
        let (g, l) = grad(j);
        if (g > 0.0 && l < top) || (g < 0.0 && l > bottom) {
            let ag = g.abs();
            if ag > abs_gmax {
                abs_gmax = ag;
                best = Some((j, g));
            }
        }
    }
    best
}

/// [`steepest_level_scalar`] eight levels per vector: the same gradients, ineligible ones
/// zeroed (a zero never beats the strict `>`), then the first lane holding the maximum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn steepest_level_avx2(
    nmax: i32,
    scale: f32,
    x: &[f32],
    w: &[f32],
    levels: &[i8],
) -> Option<(usize, f32)> {
    use std::arch::x86_64::*;
    let scale_v = _mm256_set1_ps(scale);
    let offset = _mm256_set1_epi32(nmax);
    steepest_pick_avx2(x.len(), -nmax, nmax - 1, |k| {
        let stored = _mm_loadl_epi64(levels[k..k + 8].as_ptr() as *const __m128i);
        let l = _mm256_sub_epi32(_mm256_cvtepi8_epi32(stored), offset);
        let diff = _mm256_sub_ps(
            _mm256_loadu_ps(x[k..k + 8].as_ptr()),
            _mm256_mul_ps(scale_v, _mm256_cvtepi32_ps(l)),
        );
        let sw = _mm256_mul_ps(scale_v, _mm256_loadu_ps(w[k..k + 8].as_ptr()));
        (_mm256_mul_ps(sw, diff), l)
    })
}

/// The shared core of the vectorised steepest picks: `chunk(k)` gives the gradients and levels
/// of elements k..k+8. A level may move up while below `top` and down while above `bottom`;
/// among the movable ones, the first with the largest gradient magnitude wins (ineligible ones
/// are zeroed, and a zero never beats the scalar twins' strict `>`). Returns it and its
/// gradient.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn steepest_pick_avx2(
    n: usize,
    bottom: i32,
    top: i32,
    chunk: impl Fn(usize) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256i),
) -> Option<(usize, f32)> {
    use std::arch::x86_64::*;
    let (bottom, top) = (_mm256_set1_epi32(bottom), _mm256_set1_epi32(top));
    let (zero, sign) = (_mm256_setzero_ps(), _mm256_set1_ps(-0.0));
    let mut grads = [0f32; 32];
    let mut mags = [0f32; 32];
    let mut max = zero;
    for k in (0..n).step_by(8) {
        let (g, l) = chunk(k);
        let up = _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(g, zero),
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(top, l)),
        );
        let down = _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_LT_OQ>(g, zero),
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(l, bottom)),
        );
        let mag = _mm256_and_ps(_mm256_andnot_ps(sign, g), _mm256_or_ps(up, down));
        max = _mm256_max_ps(max, mag);
        _mm256_storeu_ps(grads[k..].as_mut_ptr(), g);
        _mm256_storeu_ps(mags[k..].as_mut_ptr(), mag);
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), max);
    let top_mag = lanes.iter().fold(0f32, |a, &b| a.max(b));
    if top_mag <= 0.0 {
        return None;
    }
    let j = mags[..n].iter().position(|&m| m == top_mag)?;
    Some((j, grads[j]))
}

/// Affine fit `x ≈ scale·l − min`, `l ∈ [0, nmax]`, scanning `nstep+1` inverse scales
/// (`make_qkx2_quants`, all f32). Returns `(scale, the_min)` where `the_min ≥ 0` is the
/// value subtracted.
#[allow(clippy::too_many_arguments)]
pub(super) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let avx2 = use_avx2();
    make_qkx2_quants_on(avx2, nmax, x, weights, out, rmin, rdelta, nstep, use_mad)
}

/// [`make_qkx2_quants`] with its AVX2 scan (`avx2`, which needs AVX2) or without.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn make_qkx2_quants_on(
    avx2: bool,
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut laux = [0u8; 32];
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max - min < 1e-10 {
        out[..n].fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    // note: `min` changes inside the scan below and later steps see the new value
    let q = |iscale: f32, v: f32, min: f32| offset_level(nmax, iscale, min, v) as u8;
    let iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_mad = 0f32;
    for i in 0..n {
        out[i] = q(iscale, x[i], min);
        let diff = scale * out[i] as f32 + min - x[i];
        best_mad += weights[i] * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    #[cfg(target_arch = "x86_64")]
    if avx2 && n <= MAX_N {
        // Each candidate's levels depend on `min`, which an accept changes: batches of eight
        // formed with the current `min`, the next batch starting after an accepted candidate
        // (the scalar loop's order, unchanged). Only the last accept's levels survive.
        let mut accepted: Option<(f32, f32)> = None;
        let mut next = 0usize;
        while next <= nstep as usize {
            let count = (nstep as usize + 1 - next).min(QKX2_LANES);
            let iscales: [f32; QKX2_LANES] = std::array::from_fn(|k| {
                (rmin + rdelta * (next + k) as f32 + nmax as f32) / (max - min)
            });
            // SAFETY: the Avx2 path is only chosen on CPUs with AVX2.
            let fits =
                unsafe { qkx2_fits_avx2(nmax, &iscales, min, x, weights, sum_w, sum_x, use_mad) };
            let mut k = 0;
            while k < count {
                // NaN marks a candidate without a fit (`d <= 0`): never below.
                if fits.mad[k] < best_mad {
                    best_mad = fits.mad[k];
                    accepted = Some((iscales[k], min));
                    scale = fits.scale[k];
                    min = fits.min[k];
                    break;
                }
                k += 1;
            }
            next += (k + 1).min(count);
        }
        if let Some((iscale, level_min)) = accepted {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = q(iscale, v, level_min);
            }
        }
        return (scale, -min);
    }
    for is in 0..=nstep {
        let iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = q(iscale, x[i], min);
            laux[i] = l;
            let lf = l as f32;
            let w = weights[i];
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut mad = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                mad += weights[i] * err(diff);
            }
            if mad < best_mad {
                out[..n].copy_from_slice(&laux[..n]);
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Candidates per batch of [`make_qkx2_quants`]'s AVX2 scan.
const QKX2_LANES: usize = 8;

/// The fits of eight inverse scales of [`make_qkx2_quants`], one per lane, in f32 as its scalar
/// loop computes them (each lane's sums in element order, products and additions apart).
struct Qkx2Fits {
    /// The weighted error (`|·|` or `(·)²` per element); NaN where the fit has no solution.
    mad: [f32; QKX2_LANES],
    scale: [f32; QKX2_LANES],
    min: [f32; QKX2_LANES],
}

/// [`Qkx2Fits`] of the inverse scales `iscales` at `min`: levels `l = clamp(nearest_int(iscale·
/// (x − min)), 0, nmax)` (`nearest_int` as a round to nearest even: |iscale·(x − min)| stays
/// far below 2^22, and clamping as a float is exact), the sums `Σ w·l`, `Σ (w·l)·l`,
/// `Σ (w·l)·x`, the closed-form fit and its error.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn qkx2_fits_avx2(
    nmax: i32,
    iscales: &[f32; QKX2_LANES],
    min: f32,
    x: &[f32],
    w: &[f32],
    sum_w: f32,
    sum_x: f32,
    use_mad: bool,
) -> Qkx2Fits {
    use std::arch::x86_64::*;
    debug_assert!(x.len() <= MAX_N);
    let (is, min_v) = (_mm256_loadu_ps(iscales.as_ptr()), _mm256_set1_ps(min));
    let (zero, top) = (_mm256_setzero_ps(), _mm256_set1_ps(nmax as f32));
    let (mut sl, mut sl2, mut sxl) = (zero, zero, zero);
    let mut levels = [zero; MAX_N];
    for (i, (&xi, &wi)) in x.iter().zip(w).enumerate() {
        let (xv, wv) = (_mm256_set1_ps(xi), _mm256_set1_ps(wi));
        let rounded = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(is, _mm256_sub_ps(xv, min_v)),
        );
        let lf = _mm256_min_ps(_mm256_max_ps(rounded, zero), top);
        levels[i] = lf;
        let wl = _mm256_mul_ps(wv, lf);
        sl = _mm256_add_ps(sl, wl);
        sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(wl, lf));
        sxl = _mm256_add_ps(sxl, _mm256_mul_ps(wl, xv));
    }
    let (sw, sx) = (_mm256_set1_ps(sum_w), _mm256_set1_ps(sum_x));
    let d = _mm256_sub_ps(_mm256_mul_ps(sw, sl2), _mm256_mul_ps(sl, sl));
    let scale = _mm256_div_ps(
        _mm256_sub_ps(_mm256_mul_ps(sw, sxl), _mm256_mul_ps(sx, sl)),
        d,
    );
    let fitted_min = _mm256_div_ps(
        _mm256_sub_ps(_mm256_mul_ps(sl2, sx), _mm256_mul_ps(sl, sxl)),
        d,
    );
    // A positive min is replaced by 0 and the scale refitted alone.
    let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(fitted_min, zero);
    let scale = _mm256_blendv_ps(scale, _mm256_div_ps(sxl, sl2), positive);
    let fitted_min = _mm256_blendv_ps(fitted_min, zero, positive);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let mut mad = zero;
    for (i, (&xi, &wi)) in x.iter().zip(w).enumerate() {
        let fitted = _mm256_add_ps(_mm256_mul_ps(scale, levels[i]), fitted_min);
        let diff = _mm256_sub_ps(fitted, _mm256_set1_ps(xi));
        let err = if use_mad {
            _mm256_and_ps(diff, abs_mask)
        } else {
            _mm256_mul_ps(diff, diff)
        };
        mad = _mm256_add_ps(mad, _mm256_mul_ps(_mm256_set1_ps(wi), err));
    }
    let solvable = _mm256_cmp_ps::<_CMP_GT_OQ>(d, zero);
    let mad = _mm256_blendv_ps(_mm256_set1_ps(f32::NAN), mad, solvable);
    let mut f = Qkx2Fits {
        mad: [0.0; QKX2_LANES],
        scale: [0.0; QKX2_LANES],
        min: [0.0; QKX2_LANES],
    };
    _mm256_storeu_ps(f.mad.as_mut_ptr(), mad);
    _mm256_storeu_ps(f.scale.as_mut_ptr(), scale);
    _mm256_storeu_ps(f.min.as_mut_ptr(), fitted_min);
    f
}

/// The level of `v` at inverse scale `iscale` above `min`, in [0, nmax] (the K-quants' searches).
#[inline(always)]
fn offset_level(nmax: i32, iscale: f32, min: f32, v: f32) -> i32 {
    nearest_int(iscale * (v - min)).clamp(0, nmax)
}

/// Candidates per batch of [`make_qkx3_quants`]: one vector of f32 levels.
const QKX3_LANES: usize = 8;

/// The longest block the K-quant searches see (Q4_K/Q5_K: 32, Q2_K: 16).
const MAX_N: usize = 32;

/// Whether the searches take their AVX2 kernels (the process's path; the AVX2 path implies
/// FMA too).
#[inline]
fn use_avx2() -> bool {
    crate::cpu::quantize_path().has_avx2()
}

/// The block's own weighted sums `(Σ w, Σ w·x, Σ w·x²)`, in f64.
struct Qkx3Totals {
    w: f64,
    x: f64,
    x2: f64,
}

/// Each candidate's fitted scale and min and its error, as the C computes them in f64
/// (`mad` is NaN where the fit has no solution, `D <= 0`).
struct Qkx3Fits {
    mad: [f64; QKX3_LANES],
    scale: [f64; QKX3_LANES],
    min: [f64; QKX3_LANES],
}

/// The fits of a batch of inverse scales: levels `l = clamp(nearest_int(iscale·(x − min)),
/// 0, nmax)`, then `(Σ w·l, Σ (w·l)·l, Σ (w·l)·x)` in f64 and the closed-form fit. Each
/// product in the sums is exact in f64 (24-bit w and x, levels of at most 5 bits), so only the
/// order of the additions matters: element order in every lane, as in the C.
fn qkx3_fits(
    cols: Option<&mut Qkx3Columns>,
    nmax: i32,
    iscales: &[f32; QKX3_LANES],
    min: f32,
    x: &[f32],
    w: &[f32],
    totals: &Qkx3Totals,
) -> Qkx3Fits {
    #[cfg(target_arch = "x86_64")]
    if let Some(cols) = cols {
        // SAFETY: the columns are only built on the Avx2 path, on CPUs with AVX2 and FMA.
        return unsafe { qkx3_fits_avx2(nmax, iscales, min, x, cols, totals) };
    }
    let _ = cols;
    qkx3_fits_scalar(nmax, iscales, min, x, w, totals)
}

fn qkx3_fits_scalar(
    nmax: i32,
    iscales: &[f32; QKX3_LANES],
    min: f32,
    x: &[f32],
    w: &[f32],
    totals: &Qkx3Totals,
) -> Qkx3Fits {
    let (mut l, mut l2, mut xl) = ([0f64; QKX3_LANES], [0f64; QKX3_LANES], [0f64; QKX3_LANES]);
    for (&xi, &wi) in x.iter().zip(w) {
        let (xd, wd) = (xi as f64, wi as f64);
        for (k, &iscale) in iscales.iter().enumerate() {
            let lf = offset_level(nmax, iscale, min, xi) as f64;
            let wl = wd * lf;
            l[k] += wl;
            l2[k] += wl * lf;
            xl[k] += wl * xd;
        }
    }
    closed_form_fits(&l, &l2, &xl, totals)
}

/// The C's per-candidate fit, lane by lane (the same f64 operations; the branches become
/// selects, so the loop vectorises).
#[inline(always)]
fn closed_form_fits(
    sum_l: &[f64; QKX3_LANES],
    sum_l2: &[f64; QKX3_LANES],
    sum_xl: &[f64; QKX3_LANES],
    t: &Qkx3Totals,
) -> Qkx3Fits {
    let mut f = Qkx3Fits {
        mad: [0.0; QKX3_LANES],
        scale: [0.0; QKX3_LANES],
        min: [0.0; QKX3_LANES],
    };
    for k in 0..QKX3_LANES {
        let (l, l2, xl) = (sum_l[k], sum_l2[k], sum_xl[k]);
        let d = t.w * l2 - l * l;
        let scale = (t.w * xl - t.x * l) / d;
        let min = (l2 * t.x - l * xl) / d;
        let (scale, min) = if min > 0.0 {
            (xl / l2, 0.0)
        } else {
            (scale, min)
        };
        let mad = t.x2 - 2.0 * scale * xl - 2.0 * min * t.x
            + 2.0 * scale * min * l
            + scale * scale * l2
            + min * min * t.w;
        f.mad[k] = if d > 0.0 { mad } else { f64::NAN };
        f.scale[k] = scale;
        f.min[k] = min;
    }
    f
}

/// The block's weights and weighted values as f64 columns for [`qkx3_fits_avx2`]:
/// `w[i]`, and `wx[i] = w[i]·x[i]` (exact: 24-bit by 24-bit significands).
struct Qkx3Columns {
    w: [f64; MAX_N],
    wx: [f64; MAX_N],
    /// The last batch's levels, per element, one lane per candidate.
    levels: [[f32; QKX3_LANES]; MAX_N],
}

impl Qkx3Columns {
    fn new(x: &[f32], w: &[f32]) -> Self {
        let mut cols = Qkx3Columns {
            w: [0.0; MAX_N],
            wx: [0.0; MAX_N],
            levels: [[0.0; QKX3_LANES]; MAX_N],
        };
        for (i, (&xi, &wi)) in x.iter().zip(w).enumerate() {
            cols.w[i] = wi as f64;
            cols.wx[i] = wi as f64 * xi as f64;
        }
        cols
    }
}

/// [`qkx3_fits`] with the eight levels in one f32 vector (`nearest_int` as the float-add
/// trick: |iscale·(x − min)| stays far below 2^22, and clamping as a float is exact) and the
/// sums in two f64 vectors. Every product is exact in f64 (`w·l`: 29 bits, `w·l·l`: 34,
/// `w·l·x` = `(w·x)·l`: at most 24 + 24 + 5 = 53 bits for levels up to 31), so computing
/// `Σ (w·l)·x` as `Σ wx·l` and adding a product in a fused multiply-add round exactly as
/// the C's multiply-then-add does: only the additions round, in the C's order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn qkx3_fits_avx2(
    nmax: i32,
    iscales: &[f32; QKX3_LANES],
    min: f32,
    x: &[f32],
    cols: &mut Qkx3Columns,
    totals: &Qkx3Totals,
) -> Qkx3Fits {
    use std::arch::x86_64::*;
    debug_assert!((0..32).contains(&nmax) && x.len() <= MAX_N);
    let (is, min_v) = (_mm256_loadu_ps(iscales.as_ptr()), _mm256_set1_ps(min));
    let zero = _mm256_setzero_pd();
    let (mut l, mut l2, mut xl) = ([zero; 2], [zero; 2], [zero; 2]);
    // x − min for the whole block first, so that the loop only broadcasts it from memory.
    let mut xm = [0f32; MAX_N];
    for k in (0..x.len()).step_by(8) {
        let v = _mm256_sub_ps(_mm256_loadu_ps(x[k..k + 8].as_ptr()), min_v);
        _mm256_storeu_ps(xm[k..k + 8].as_mut_ptr(), v);
    }
    for (i, xmi) in xm.iter().enumerate().take(x.len()) {
        let lf = lane_levels_avx2(nmax, is, _mm256_broadcast_ss(xmi));
        _mm256_storeu_ps(cols.levels[i].as_mut_ptr(), lf);
        let halves = [
            _mm256_cvtps_pd(_mm256_castps256_ps128(lf)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(lf)),
        ];
        let (wd, wxd) = (
            _mm256_broadcast_sd(&cols.w[i]),
            _mm256_broadcast_sd(&cols.wx[i]),
        );
        for (h, &lf) in halves.iter().enumerate() {
            let wl = _mm256_mul_pd(wd, lf);
            l[h] = _mm256_add_pd(l[h], wl);
            l2[h] = _mm256_fmadd_pd(wl, lf, l2[h]);
            xl[h] = _mm256_fmadd_pd(wxd, lf, xl[h]);
        }
    }
    let store = |v: [__m256d; 2]| {
        let mut out = [0f64; QKX3_LANES];
        _mm256_storeu_pd(out.as_mut_ptr(), v[0]);
        _mm256_storeu_pd(out.as_mut_ptr().add(4), v[1]);
        out
    };
    closed_form_fits(&store(l), &store(l2), &store(xl), totals)
}

/// The levels of one value `xm = x − min` at eight inverse scales: `nearest_int` as a
/// round-to-nearest-even (what the float-add trick computes for |iscale·xm| < 2^22; beyond,
/// both clamp alike), then clamped to [0, nmax] (exact as floats).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn lane_levels_avx2(
    nmax: i32,
    iscales: std::arch::x86_64::__m256,
    xm: std::arch::x86_64::__m256,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let rounded = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm256_mul_ps(iscales, xm),
    );
    _mm256_min_ps(
        _mm256_max_ps(rounded, _mm256_setzero_ps()),
        _mm256_set1_ps(nmax as f32),
    )
}

/// After an accept moved `min`, which lanes of the last batch ([`Qkx3Columns::levels`]) still
/// hold the levels their candidates have now: bit k set when candidate k's levels at inverse
/// scale `iscales[k]` above `min` equal those it was fitted with. Its fit then stands.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn qkx3_lanes_unchanged_avx2(
    nmax: i32,
    iscales: &[f32; QKX3_LANES],
    min: f32,
    from: usize,
    x: &[f32],
    cols: &Qkx3Columns,
) -> u32 {
    use std::arch::x86_64::*;
    let (is, min_v) = (_mm256_loadu_ps(iscales.as_ptr()), _mm256_set1_ps(min));
    // Only lanes `from..` matter; stop once none of them is left unchanged.
    let wanted = 0xffu32 << from & 0xff;
    let mut same = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for k in (0..x.len()).step_by(8) {
        let mut xm = [0f32; 8];
        let v = _mm256_sub_ps(_mm256_loadu_ps(x[k..k + 8].as_ptr()), min_v);
        _mm256_storeu_ps(xm.as_mut_ptr(), v);
        for (xmi, stored) in xm.iter().zip(&cols.levels[k..k + 8]) {
            let lf = lane_levels_avx2(nmax, is, _mm256_broadcast_ss(xmi));
            let stored = _mm256_loadu_ps(stored.as_ptr());
            same = _mm256_and_ps(same, _mm256_cmp_ps::<_CMP_EQ_OQ>(lf, stored));
        }
        if _mm256_movemask_ps(same) as u32 & wanted == 0 {
            return 0;
        }
    }
    _mm256_movemask_ps(same) as u32
}

compiled_for_avx2! {
    /// `make_qkx3_quants` with explicit weights and `use_mad = false`: like
    /// [`make_qkx2_quants`] but with f64 sums, a closed-form error, and a final greedy
    /// refinement of single quants. Returns `(scale, the_min)`.
    pub(super) fn make_qkx3_quants => make_qkx3_quants_body(
        nmax: i32,
        x: &[f32],
        weights: &[f32],
        out: &mut [u8],
        rmin: f32,
        rdelta: f32,
        nstep: i32,
    ) -> (f32, f32)
}

#[inline(always)]
fn make_qkx3_quants_body(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    make_qkx3_quants_on(use_avx2(), nmax, x, weights, out, rmin, rdelta, nstep)
}

/// [`make_qkx3_quants`] with its AVX2 kernels (`avx2`, which needs AVX2 and FMA) or without.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn make_qkx3_quants_on(
    avx2: bool,
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    // The C's one loop, split: min and max first, so that the weighted sums and the error of
    // the first levels, four independent f64 chains, run in one loop (each in its order).
    let mut min = x[0];
    let mut max = x[0];
    for &v in &x[1..n] {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max - min < 1e-10 {
        out[..n].fill(0);
        return (0.0, -min);
    }
    let iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mad_term = |i: usize, l: i32| {
        let diff = scale as f64 * l as f64 + min as f64 - x[i] as f64;
        weights[i] as f64 * (diff * diff)
    };
    let l0 = offset_level(nmax, iscale, min, x[0]);
    out[0] = l0 as u8;
    let mut best_mad = 0f64 + mad_term(0, l0);
    let mut sum_w = weights[0] as f64;
    let mut sum_x = sum_w * x[0] as f64;
    let mut sum_x2 = sum_w * x[0] as f64 * x[0] as f64;
    for i in 1..n {
        let w = weights[i] as f64;
        let xi = x[i] as f64;
        sum_w += w;
        sum_x += w * xi;
        sum_x2 += w * xi * xi;
        let l = offset_level(nmax, iscale, min, x[i]);
        out[i] = l as u8;
        best_mad += mad_term(i, l);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let totals = Qkx3Totals {
        w: sum_w,
        x: sum_x,
        x2: sum_x2,
    };
    // Each candidate's levels depend on `min`, which an accepted candidate changes. So the
    // candidates go in batches of one vector, each batch formed with the current `min`; an
    // accept ends the batch at the candidate after it (the C's order, unchanged), except that
    // on the AVX2 path a later candidate whose levels the new `min` leaves as they were has
    // its fit already (a fit depends on the levels alone): the batch goes on up to the first
    // candidate whose levels moved.
    // The kernels take whole vectors of values (Q4_K/Q5_K: 32, Q2_K: 16), and levels of at
    // most 5 bits (their products are exact only then).
    let mut cols = (avx2 && n.is_multiple_of(8) && n <= MAX_N && nmax <= 31)
        .then(|| Qkx3Columns::new(x, weights));
    // The last accept's levels, as the inverse scale and min that give them: written once,
    // after the scan.
    let mut accepted: Option<(f32, f32)> = None;
    let mut next = 0usize;
    while next <= nstep as usize {
        let count = (nstep as usize + 1 - next).min(QKX3_LANES);
        // All lanes, past `count` too, so that the divisions vectorise (extras go unused).
        let numerators: [f32; QKX3_LANES] =
            std::array::from_fn(|k| rmin + rdelta * (next + k) as f32 + nmax as f32);
        let iscales_at = |min: f32| numerators.map(|v| v / (max - min));
        let (batch_min, batch_iscales) = (min, iscales_at(min));
        let fits = qkx3_fits(
            cols.as_mut(),
            nmax,
            &batch_iscales,
            min,
            x,
            weights,
            &totals,
        );
        let mut unchanged = u32::MAX;
        let mut k = 0;
        while k < count && unchanged & (1 << k) != 0 {
            // NaN marks a candidate without a fit (the C's `D <= 0`): never below.
            if fits.mad[k] < best_mad {
                best_mad = fits.mad[k];
                scale = fits.scale[k] as f32;
                min = fits.min[k] as f32;
                // The levels it was fitted with, which are also those at the current `min`.
                accepted = Some((batch_iscales[k], batch_min));
                unchanged = 0;
                #[cfg(target_arch = "x86_64")]
                if let Some(cols) = cols.as_ref() {
                    if k + 1 < count {
                        let now = iscales_at(min);
                        // SAFETY: the columns are only built on the Avx2 path.
                        unchanged =
                            unsafe { qkx3_lanes_unchanged_avx2(nmax, &now, min, k + 1, x, cols) };
                    }
                }
            }
            k += 1;
        }
        next += k;
    }
    if let Some((iscale, level_min)) = accepted {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = offset_level(nmax, iscale, level_min, v) as u8;
        }
    }

    let (mut sum_l, mut sum_l2, mut sum_xl) = (0f64, 0f64, 0f64);
    for i in 0..n {
        let w = weights[i] as f64;
        let lf = out[i] as f64;
        sum_l += w * lf;
        sum_l2 += w * lf * lf;
        sum_xl += w * lf * x[i] as f64;
    }
    let (s, m) = (scale as f64, min as f64);
    let mut best =
        2.0 * s * sum_xl + 2.0 * m * sum_x - 2.0 * s * m * sum_l - s * s * sum_l2 - m * m * sum_w;
    let mut last: Option<(usize, i32)> = None;
    for _ in 0..nmax as usize * n {
        let Some((j, dir)) = steepest_offset_level(avx2, nmax, scale, min, x, &out[..n]) else {
            break;
        };
        if let Some((lj, ldir)) = last {
            if lj == j && dir == -ldir {
                break;
            }
        }
        let w = weights[j] as f64;
        sum_l += w * dir as f64;
        sum_l2 += w * (2 * out[j] as i32 * dir + 1) as f64;
        sum_xl += w * x[j] as f64 * dir as f64;
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d <= 0.0 {
            break;
        }
        let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
        let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
        if this_min > 0.0 {
            this_min = 0.0;
            this_scale = sum_xl / sum_l2;
        }
        if this_scale < 0.0 {
            break;
        }
        let score = 2.0 * this_scale * sum_xl + 2.0 * this_min * sum_x
            - 2.0 * this_scale * this_min * sum_l
            - this_scale * this_scale * sum_l2
            - this_min * this_min * sum_w;
        if score <= best {
            break;
        }
        best = score;
        scale = this_scale as f32;
        min = this_min as f32;
        out[j] = (out[j] as i32 + dir) as u8;
        last = Some((j, dir));
    }
    (scale, -min)
}

/// The refinement step of `make_qkx3_quants`: the first level `l ∈ [0, nmax]` with the largest
/// residual magnitude `|x − scale·l − min|` among those that can still move towards it, and
/// the direction (±1).
fn steepest_offset_level(
    avx2: bool,
    nmax: i32,
    scale: f32,
    min: f32,
    x: &[f32],
    levels: &[u8],
) -> Option<(usize, i32)> {
    #[cfg(target_arch = "x86_64")]
    if avx2 && x.len().is_multiple_of(8) {
        // SAFETY: the Avx2 path is only chosen on CPUs with AVX2.
        return unsafe { steepest_offset_level_avx2(nmax, scale, min, x, levels) };
    }
    steepest_offset_level_scalar(nmax, scale, min, x, levels)
}

fn steepest_offset_level_scalar(
    nmax: i32,
    scale: f32,
    min: f32,
    x: &[f32],
    levels: &[u8],
) -> Option<(usize, i32)> {
    let pick = steepest_pick_scalar(x.len(), 0, nmax, |j| {
        let l = levels[j] as i32;
        (x[j] - scale * l as f32 - min, l)
    });
    pick.map(|(j, g)| (j, if g > 0.0 { 1 } else { -1 }))
}

/// [`steepest_offset_level_scalar`] eight levels per vector: the same residuals, ineligible
/// ones zeroed (a zero never beats the strict `>`), then the first lane holding the maximum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn steepest_offset_level_avx2(
    nmax: i32,
    scale: f32,
    min: f32,
    x: &[f32],
    levels: &[u8],
) -> Option<(usize, i32)> {
    use std::arch::x86_64::*;
    let (scale_v, min_v) = (_mm256_set1_ps(scale), _mm256_set1_ps(min));
    let (j, g) = steepest_pick_avx2(x.len(), 0, nmax, |k| {
        let stored = _mm_loadl_epi64(levels[k..k + 8].as_ptr() as *const __m128i);
        let l = _mm256_cvtepu8_epi32(stored);
        let scaled = _mm256_mul_ps(scale_v, _mm256_cvtepi32_ps(l));
        let g = _mm256_sub_ps(
            _mm256_sub_ps(_mm256_loadu_ps(x[k..k + 8].as_ptr()), scaled),
            min_v,
        );
        (g, l)
    })?;
    Some((j, if g > 0.0 { 1 } else { -1 }))
}

/// Quantize non-negative super-block scales/mins `x` to `l ∈ [0, nmax]` with weights
/// `qw` (`make_qp_quants`). Stores `l` (as the C's `uint8_t`) and returns the scale.
pub(super) fn make_qp_quants(nmax: i32, x: &[f32], out: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < 1e-16 {
        out[..n].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / max;
    for i in 0..n {
        out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..n {
        let diff = x[i] - scale * out[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        out[i] = l as u8;
        let lf = l as f32;
        sumlx += qw[i] * x[i] * lf;
        suml2 += qw[i] * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let li = out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != out[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    sumlx / suml2
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::rng;

    /// The batched `make_qkx3_quants` fits equal the scalar ones bit for bit (sums, scale, min
    /// and error; NaN where there is no fit), on blocks with zeros, zero weights, all-positive
    /// blocks (min 0) and levels clamped at both ends.
    #[test]
    fn qkx3_fits_simd_equal_scalar() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            let mut seed = 777u32;
            for trial in 0..3000usize {
                let (nmax, n) = [(3, 16), (15, 32), (31, 32), (3, 16)][trial % 4];
                let amp = 10f32.powi(trial as i32 % 7 - 4);
                let x: Vec<f32> = (0..n)
                    .map(|j| match (j + trial) % 9 {
                        0 => 0.0,
                        _ if trial % 5 == 0 => amp * rng(&mut seed).abs(),
                        _ => amp * rng(&mut seed),
                    })
                    .collect();
                let w: Vec<f32> = (0..n)
                    .map(|j| {
                        if (j + trial) % 7 == 0 {
                            0.0
                        } else {
                            rng(&mut seed).abs()
                        }
                    })
                    .collect();
                let min = x.iter().fold(0f32, |m, &v| m.min(v));
                let max = x.iter().fold(min, |m, &v| m.max(v));
                if max - min < 1e-10 {
                    continue;
                }
                // Inverse scales around nmax/(max - min), some pushing levels past the ends.
                let iscales: [f32; QKX3_LANES] = std::array::from_fn(|k| {
                    (nmax as f32 + 0.4 * (k as f32 - 3.0) * (1 + trial % 3) as f32) / (max - min)
                });
                let (mut tw, mut tx, mut tx2) = (0f64, 0f64, 0f64);
                for (&v, &wj) in x.iter().zip(&w) {
                    tw += wj as f64;
                    tx += wj as f64 * v as f64;
                    tx2 += wj as f64 * v as f64 * v as f64;
                }
                let totals = Qkx3Totals {
                    w: tw,
                    x: tx,
                    x2: tx2,
                };
                // SAFETY: AVX2 and FMA are present (checked above).
                let mut cols = Qkx3Columns::new(&x, &w);
                let simd = unsafe { qkx3_fits_avx2(nmax, &iscales, min, &x, &mut cols, &totals) };
                let scalar = qkx3_fits_scalar(nmax, &iscales, min, &x, &w, &totals);
                let bits = |f: &Qkx3Fits| {
                    (
                        f.mad.map(f64::to_bits),
                        f.scale.map(f64::to_bits),
                        f.min.map(f64::to_bits),
                    )
                };
                assert_eq!(bits(&simd), bits(&scalar), "trial {trial}");
            }
        }
    }

    /// `make_qkx3_quants` gives the same levels, scale and min with its AVX2 kernels as without
    /// (the batched fits, and the fits kept across an accept when the levels stand), on
    /// normal-like blocks with widely spread weights, zeros and all-positive blocks.
    #[test]
    fn make_qkx3_quants_avx2_equals_scalar() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            let mut seed = 2718u32;
            for trial in 0..4000usize {
                let (nmax, n) = [(31, 32), (15, 32), (3, 16)][trial % 3];
                let amp = 10f32.powi(trial as i32 % 5 - 3);
                let x: Vec<f32> = (0..n)
                    .map(|j| match (j + trial) % 11 {
                        0 if trial % 4 == 0 => 0.0,
                        _ if trial % 7 == 0 => amp * rng(&mut seed).abs(),
                        _ => amp * (rng(&mut seed) + rng(&mut seed) + rng(&mut seed)),
                    })
                    .collect();
                let w: Vec<f32> = (0..n)
                    .map(|j| {
                        let u = rng(&mut seed).abs().max(1e-6);
                        let q = -2.0 * u.ln() * if (j + trial) % 13 == 0 { 0.0 } else { 1.0 };
                        q * (0.5 * amp * amp + x[j] * x[j]).sqrt()
                    })
                    .collect();
                let (mut la, mut ls) = (vec![0u8; n], vec![0u8; n]);
                let a = make_qkx3_quants_on(true, nmax, &x, &w, &mut la, -0.9, 0.05, 36);
                let s = make_qkx3_quants_on(false, nmax, &x, &w, &mut ls, -0.9, 0.05, 36);
                let bits = |(d, m): (f32, f32)| (d.to_bits(), m.to_bits());
                assert_eq!((bits(a), &la), (bits(s), &ls), "trial {trial}");
            }
        }
    }

    /// `make_qkx2_quants` gives the same levels, scale and min with its AVX2 scan as without,
    /// with either error (squared, absolute), on the blocks of the `make_qkx3_quants` test.
    #[test]
    fn make_qkx2_quants_avx2_equals_scalar() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            let mut seed = 1618u32;
            for trial in 0..4000usize {
                let (nmax, n, rmin, nstep) =
                    [(31, 32, -0.5, 15), (15, 32, -1.0, 20), (3, 16, -0.5, 15)][trial % 3];
                let use_mad = trial % 5 == 0;
                let amp = 10f32.powi(trial as i32 % 5 - 3);
                let x: Vec<f32> = (0..n)
                    .map(|j| match (j + trial) % 11 {
                        0 if trial % 4 == 0 => 0.0,
                        _ if trial % 7 == 0 => amp * rng(&mut seed).abs(),
                        _ => amp * (rng(&mut seed) + rng(&mut seed) + rng(&mut seed)),
                    })
                    .collect();
                let sum_x2: f32 = x.iter().map(|v| v * v).sum();
                let av_x = (sum_x2 / n as f32).sqrt();
                let w: Vec<f32> = x.iter().map(|v| av_x + v.abs()).collect();
                let (mut la, mut ls) = (vec![0u8; n], vec![0u8; n]);
                let args = (nmax, rmin, nstep, use_mad);
                let a = make_qkx2_quants_on(true, nmax, &x, &w, &mut la, rmin, 0.1, nstep, use_mad);
                let s =
                    make_qkx2_quants_on(false, nmax, &x, &w, &mut ls, rmin, 0.1, nstep, use_mad);
                let bits = |(d, m): (f32, f32)| (d.to_bits(), m.to_bits());
                assert_eq!((bits(a), &la), (bits(s), &ls), "trial {trial} {args:?}");
            }
        }
    }

    /// The vectorised `make_qkx3_quants` refinement pick equals the scalar one, including
    /// levels at both ends, exact ties and zero residuals.
    #[test]
    fn steepest_offset_level_simd_equals_scalar() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            let mut seed = 31337u32;
            for trial in 0..3000usize {
                let (nmax, n) = [(3, 16), (15, 32), (31, 32)][trial % 3];
                let scale = rng(&mut seed).abs() * 10f32.powi(trial as i32 % 5 - 3);
                let min = -rng(&mut seed).abs() * scale * 2.0;
                let levels: Vec<u8> = (0..n)
                    .map(|j| match (j + trial) % 5 {
                        0 => 0,
                        1 => nmax as u8,
                        _ => ((rng(&mut seed).abs() * (nmax + 1) as f32) as i32).min(nmax) as u8,
                    })
                    .collect();
                let x: Vec<f32> = (0..n)
                    .map(|j| match (j + trial) % 6 {
                        // Every fourth trial: the largest residuals push past the ends.
                        _ if trial % 4 == 0 => {
                            let push = match levels[j] as i32 {
                                0 => -0.5,
                                l if l == nmax => 0.5,
                                _ => 0.1 * rng(&mut seed),
                            };
                            scale * (levels[j] as f32 + push) + min
                        }
                        // On a level (zero residual) or half a step off it (ties).
                        0 => scale * levels[j] as f32 + min,
                        1 => scale * (levels[j] as f32 + 0.5) + min,
                        // Beyond either end of the level range.
                        2 => scale * (nmax as f32 + 1.0 + rng(&mut seed).abs()) + min,
                        3 => min - scale * (1.0 + rng(&mut seed).abs()),
                        _ => scale * rng(&mut seed).abs() * nmax as f32 + min,
                    })
                    .collect();
                let scalar = steepest_offset_level_scalar(nmax, scale, min, &x, &levels);
                // SAFETY: AVX2 is present (checked above).
                let simd = unsafe { steepest_offset_level_avx2(nmax, scale, min, &x, &levels) };
                assert_eq!(simd, scalar, "trial {trial}");
            }
        }
    }

    /// The vectorised coordinate-descent pick equals the scalar one: same level, same gradient
    /// bits, including levels at both ends, zero weights and exact ties.
    #[test]
    fn steepest_level_simd_equals_scalar() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            let mut seed = 4242u32;
            for trial in 0..2000usize {
                let (nmax, n) = [(16, 32), (32, 32), (32, 16), (4, 16)][trial % 4];
                let scale = rng(&mut seed) * 10f32.powi(trial as i32 % 5 - 3);
                let x: Vec<f32> = (0..n)
                    .map(|j| match (j + trial) % 6 {
                        0 => 0.0,
                        1 => scale * ((j % 5) as f32 - 2.0), // exact multiples: gradient ties
                        _ => rng(&mut seed) * scale.abs() * nmax as f32,
                    })
                    .collect();
                let w: Vec<f32> = (0..n)
                    .map(|j| {
                        if (j + trial) % 7 == 0 {
                            0.0
                        } else {
                            rng(&mut seed).abs()
                        }
                    })
                    .collect();
                let levels: Vec<i8> = (0..n)
                    .map(|j| match (j + trial) % 5 {
                        0 => 0,
                        1 => (2 * nmax - 1) as i8,
                        _ => ((rng(&mut seed).abs() * (2 * nmax) as f32) as i32).min(2 * nmax - 1)
                            as i8,
                    })
                    .collect();
                let scalar = steepest_level_scalar(nmax, scale, &x, &w, &levels);
                // SAFETY: AVX2 is present (checked above).
                let simd = unsafe { steepest_level_avx2(nmax, scale, &x, &w, &levels) };
                let bits = |r: Option<(usize, f32)>| r.map(|(j, g)| (j, g.to_bits()));
                assert_eq!(bits(scalar), bits(simd), "trial {trial}");
            }
        }
    }
}
