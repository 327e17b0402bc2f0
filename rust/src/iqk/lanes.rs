//! f32 vectors of either x86 width behind one interface, so that a search written once runs
//! with 8 lanes (AVX2) or 16 (AVX-512). Every method is `#[inline(always)]` and must only be
//! called from a function compiled with the width's target features (the intrinsics then
//! inline into it).

use std::arch::x86_64::*;

pub(crate) trait F32Lanes: Copy {
    const LANES: usize;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn add(self, other: Self) -> Self;
    unsafe fn sub(self, other: Self) -> Self;
    unsafe fn mul(self, other: Self) -> Self;
    /// `self·b + c` rounded once (callers need the `fma` target feature).
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// `self·b − c` rounded once (callers need the `fma` target feature).
    unsafe fn mul_sub(self, b: Self, c: Self) -> Self;
    /// Lane-wise maximum (of finite values).
    unsafe fn max(self, other: Self) -> Self;
    /// Bit l set where lane l of `self` > `other` (ordered: false with a NaN).
    unsafe fn gt_mask(self, other: Self) -> u32;
    /// `self` with every sign bit flipped (negation, NaN payloads kept).
    unsafe fn flip_sign(self) -> Self;
    /// `table[idx[l]]` in lane l; `table` holds at least 32 values and every index is below 32.
    unsafe fn lookup32(table: *const f32, idx: *const i32) -> Self;
}

impl F32Lanes for __m256 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        _mm256_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self)
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        _mm256_add_ps(self, other)
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        _mm256_sub_ps(self, other)
    }
    #[inline(always)]
    unsafe fn mul(self, other: Self) -> Self {
        _mm256_mul_ps(self, other)
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        _mm256_fmadd_ps(self, b, c)
    }
    #[inline(always)]
    unsafe fn mul_sub(self, b: Self, c: Self) -> Self {
        _mm256_fmsub_ps(self, b, c)
    }
    #[inline(always)]
    unsafe fn max(self, other: Self) -> Self {
        _mm256_max_ps(self, other)
    }
    #[inline(always)]
    unsafe fn gt_mask(self, other: Self) -> u32 {
        _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(self, other)) as u32
    }
    #[inline(always)]
    unsafe fn flip_sign(self) -> Self {
        _mm256_xor_ps(self, _mm256_set1_ps(-0.0))
    }
    #[inline(always)]
    unsafe fn lookup32(table: *const f32, idx: *const i32) -> Self {
        _mm256_i32gather_ps::<4>(table, _mm256_loadu_si256(idx as *const __m256i))
    }
}

impl F32Lanes for __m512 {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        _mm512_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self)
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        _mm512_add_ps(self, other)
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        _mm512_sub_ps(self, other)
    }
    #[inline(always)]
    unsafe fn mul(self, other: Self) -> Self {
        _mm512_mul_ps(self, other)
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        _mm512_fmadd_ps(self, b, c)
    }
    #[inline(always)]
    unsafe fn mul_sub(self, b: Self, c: Self) -> Self {
        _mm512_fmsub_ps(self, b, c)
    }
    #[inline(always)]
    unsafe fn max(self, other: Self) -> Self {
        _mm512_max_ps(self, other)
    }
    #[inline(always)]
    unsafe fn gt_mask(self, other: Self) -> u32 {
        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self, other) as u32
    }
    #[inline(always)]
    unsafe fn flip_sign(self) -> Self {
        _mm512_castsi512_ps(_mm512_xor_si512(
            _mm512_castps_si512(self),
            _mm512_set1_epi32(i32::MIN),
        ))
    }
    #[inline(always)]
    unsafe fn lookup32(table: *const f32, idx: *const i32) -> Self {
        let (lo, hi) = (_mm512_loadu_ps(table), _mm512_loadu_ps(table.add(16)));
        _mm512_permutex2var_ps(lo, _mm512_loadu_si512(idx as *const _), hi)
    }
}
