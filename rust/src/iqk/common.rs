//! Building blocks shared by the six IQK quantizers: importance weights, the two scale
//! searches (non-linear grid search and the IQ2 partition search), and bit packing.
//! Arithmetic mirrors ik_llama.cpp's reference build operation for operation (plain f32, same
//! association order), because the output bytes must be identical.

use super::fit::{fit_many, MAX_CANDIDATES};
use crate::registry::QK_K;
use crate::tables::Grid;

/// How a type turns values and the imatrix into per-element importance weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    /// IQ2_K, IQ2_KS, IQ3_K: σ² = 1.5·Σx²/256; without an imatrix w = σ²/4 + x².
    Broad,
    /// IQ3_KS, IQ4_K, IQ4_KS: σ² = Σx²·(2/256); without an imatrix w = x².
    Narrow,
}

impl Weighting {
    /// σ² of one 256-element super-block.
    pub fn sigma2(self, superblock: &[f32]) -> f32 {
        let mut sumx2 = 0.0f32;
        for &v in superblock {
            sumx2 += v * v;
        }
        match self {
            Weighting::Broad => 1.5 * sumx2 / QK_K as f32,
            Weighting::Narrow => sumx2 * (2.0 / QK_K as f32),
        }
    }

    /// Weights of the elements `x` (imatrix slice `qw`, if any, aligned with `x`).
    pub fn fill(self, sigma2: f32, x: &[f32], qw: Option<&[f32]>, out: &mut [f32]) {
        match qw {
            Some(qw) => {
                for ((o, &v), &q) in out.iter_mut().zip(x).zip(qw) {
                    *o = q * (sigma2 + v * v).sqrt();
                }
            }
            None => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = match self {
                        Weighting::Broad => 0.25 * sigma2 + v * v,
                        Weighting::Narrow => v * v,
                    };
                }
            }
        }
    }
}

/// The value with the largest magnitude (first one on ties) and that magnitude.
#[inline]
pub fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Parameters of the non-linear grid scale search shared by IQ3_K, IQ3_KS, IQ4_K, IQ4_KS.
pub struct NlSearch {
    /// The grid: base half, shifted half.
    pub grids: &'static [Grid; 2],
    /// Candidate inverse scales are `(step·itry + T[0]) / max` for itry in -ntry..=ntry.
    pub ntry: i32,
    pub step: i32,
    /// IQ3 types only take the first fit when it is valid; IQ4 types take it unconditionally.
    pub guard_first: bool,
}

impl NlSearch {
    /// Best block scale and whether the shifted half wins. `max` is the block's signed
    /// largest-magnitude value (non-zero).
    pub fn run(&self, x: &[f32], w: &[f32], max: f32) -> (f32, bool) {
        let [base, shifted] = self.grids;
        let mut d = -max / base.values[0] as f32;
        // All candidate fits are independent of the decisions below, so fit them in batches
        // first (base grid: the initial scale, then one per itry; shifted grid: one per itry),
        // then replay ik's sequential acceptance over the results in its order.
        let ntry = (2 * self.ntry + 1) as usize;
        let mut ids = [[0.0f32; MAX_CANDIDATES]; 2];
        ids[0][0] = 1.0 / d;
        for (k, itry) in (-self.ntry..=self.ntry).enumerate() {
            for (g, grid) in self.grids.iter().enumerate() {
                ids[g][k + 1 - g] = (self.step * itry + grid.values[0] as i32) as f32 / max;
            }
        }
        let mut fits = [[[0.0f32; 4]; MAX_CANDIDATES]; 2];
        fit_many(base, &ids[0][..ntry + 1], x, w, &mut fits[0]);
        fit_many(shifted, &ids[1][..ntry], x, w, &mut fits[1]);

        let [sp, qp, sm, qm] = fits[0][0];
        let mut best = 0.0f32;
        if !self.guard_first || qp > 0.0 {
            d = sp / qp;
            best = d * sp;
        }
        if qm > 0.0 && sm * sm > best * qm {
            d = sm / qm;
            best = d * sm;
        }
        let mut is_shifted = false;
        for k in 0..ntry {
            for (fit, this_shifted) in [(fits[0][k + 1], false), (fits[1][k], true)] {
                let [sp, qp, sm, qm] = fit;
                if qp > 0.0 && sp * sp > best * qp {
                    d = sp / qp;
                    best = d * sp;
                    is_shifted = this_shifted;
                }
                if qm > 0.0 && sm * sm > best * qm {
                    d = sm / qm;
                    best = d * sm;
                    is_shifted = this_shifted;
                }
            }
        }
        (d, is_shifted)
    }
}

/// Exhaustive search of the IQ2 types: sort the block, split it into four runs (one per grid
/// level) at every allowed (i1, i2, i3), and score each split against the base and shifted
/// grids in both orders. Returns the best scale and whether the shifted half won.
/// `order` and the prefix-sum buffers are scratch of length n, n+1, n+1.
pub struct PartitionSearch {
    /// i1 ranges over [0, max_i1).
    pub max_i1: usize,
    /// i3 starts at max(i2, min_i3).
    pub min_i3: usize,
}

impl PartitionSearch {
    pub fn run(&self, x: &[f32], w: &[f32], grid: &[i8; 8]) -> (f32, bool) {
        let n = x.len();
        let mut order = [0usize; 32];
        let order = &mut order[..n];
        for (i, o) in order.iter_mut().enumerate() {
            *o = i;
        }
        // Ascending by value, ties by position (-0 equals +0), as std::sort on (x, j) pairs.
        order.sort_unstable_by(|&a, &b| x[a].partial_cmp(&x[b]).unwrap().then(a.cmp(&b)));
        let (mut sumx, mut sumw) = ([0.0f32; 33], [0.0f32; 33]);
        for (k, &j) in order.iter().enumerate() {
            sumw[k + 1] = sumw[k] + w[j];
            sumx[k + 1] = sumx[k] + w[j] * x[j];
        }
        let f = |v: i8| v as f32;
        let candidates: [([f32; 4], bool); 4] = [
            ([f(grid[0]), f(grid[1]), f(grid[2]), f(grid[3])], false),
            ([f(grid[4]), f(grid[5]), f(grid[6]), f(grid[7])], true),
            ([f(grid[3]), f(grid[2]), f(grid[1]), f(grid[0])], false),
            ([f(grid[7]), f(grid[6]), f(grid[5]), f(grid[4])], true),
        ];
        let (mut best, mut d, mut is_shifted) = (0.0f32, 0.0f32, false);
        for i1 in 0..self.max_i1 {
            for i2 in i1..n {
                for i3 in i2.max(self.min_i3)..n {
                    let gx = [
                        sumx[i1] - sumx[0],
                        sumx[i2] - sumx[i1],
                        sumx[i3] - sumx[i2],
                        sumx[n] - sumx[i3],
                    ];
                    let gw = [
                        sumw[i1] - sumw[0],
                        sumw[i2] - sumw[i1],
                        sumw[i3] - sumw[i2],
                        sumw[n] - sumw[i3],
                    ];
                    for (v, shifted) in &candidates {
                        let sumqx = gx[0] * v[0] + gx[1] * v[1] + gx[2] * v[2] + gx[3] * v[3];
                        let sumq2 = gw[0] * v[0] * v[0]
                            + gw[1] * v[1] * v[1]
                            + gw[2] * v[2] * v[2]
                            + gw[3] * v[3] * v[3];
                        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                            d = sumqx / sumq2;
                            best = d * sumqx;
                            is_shifted = *shifted;
                        }
                    }
                }
            }
        }
        (d, is_shifted)
    }
}

/// Little-endian field access on block bytes.
#[inline(always)]
pub fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

#[inline(always)]
pub fn read_f32(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The 2-bit plane packing of IQ2_K/IQ2_KS/IQ3_K/IQ3_KS (Q2_K style): element i of a
/// super-block lives in byte `32·(i/128) + i%32`, bits `2·((i/32)%4)`.
#[inline(always)]
pub fn low2_position(i: usize) -> (usize, u32) {
    (32 * (i / 128) + i % 32, 2 * ((i / 32) % 4) as u32)
}

/// The high-bit plane of the 3-bit types: element i is bit `i/32` of byte `i%32`.
#[inline(always)]
pub fn high1_position(i: usize) -> (usize, u32) {
    (i % 32, (i / 32) as u32)
}
