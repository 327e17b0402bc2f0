//! A block's weighted squared error as a function of its effective scale, for one grid half and
//! one sign: E(a) = Σw·(y - a·v[k(y/a)])², with k the nearest grid index and y = ±x.
//!
//! As u = 1/a grows from 0, each y·u moves away from 0 and its nearest index changes only when
//! y·u crosses a midpoint of neighbouring grid values, at u = midpoint / y. Between those
//! breakpoints the indices are fixed, so E(a) = C - 2a·A + a²·B with A = Σw·y·v, B = Σw·v².
//! The breakpoints are sorted once per block; a scale is then one look-up (or one step of a
//! monotone walk, when the scales come in order).
//!
//! A curve may be built over a window of scales only (the scales a block can sensibly use):
//! breakpoints below the window are applied up front and those above it dropped, so the curve
//! is exact inside the window and knows nothing outside it ([`Curve::holds`]).

/// The sorted breakpoints of one curve and the (A, B) that hold after each.
pub struct Curve<'a> {
    /// Breakpoints in u = 1/a, ascending.
    pub u: &'a [f32],
    /// `a_sum[p]`, `b_sum[p]`: A and B once the first p breakpoints are passed.
    pub a_sum: &'a [f64],
    pub b_sum: &'a [f64],
    /// The local minima of E(a) inside the window: (a, index of the segment holding it),
    /// and the window's two ends, where E may still fall beyond the window.
    pub minima: &'a [(f32, u32)],
    /// The window in u = 1/a: exact for every a with `u_lo·a <= 1 < u_hi·a`.
    pub u_lo: f32,
    pub u_hi: f32,
}

impl Curve<'_> {
    /// Whether the curve is exact at scale `a`.
    #[inline(always)]
    pub fn holds(&self, a: f32) -> bool {
        self.u_lo * a <= 1.0 && 1.0 < self.u_hi * a
    }

    /// E(a) - C for a > 0: the part that depends on the scale.
    #[inline]
    pub fn at(&self, a: f32) -> f64 {
        let p = self.u.partition_point(|&u| u * a <= 1.0);
        self.value(p, a)
    }

    /// E(a) - C, walking from segment `p` (a segment near a, for speed).
    #[inline]
    pub fn at_from(&self, mut p: usize, a: f32) -> f64 {
        while p < self.u.len() && self.u[p] * a <= 1.0 {
            p += 1;
        }
        while p > 0 && self.u[p - 1] * a > 1.0 {
            p -= 1;
        }
        self.value(p, a)
    }

    #[inline(always)]
    pub fn value(&self, p: usize, a: f32) -> f64 {
        let a = a as f64;
        a * (a * self.b_sum[p] - 2.0 * self.a_sum[p])
    }
}

/// Index of the grid value nearest to 0 (grids are ascending with no value at 0).
pub fn zero_index(values: &[i8]) -> usize {
    let mut best = 0;
    for (k, &v) in values.iter().enumerate() {
        if v.unsigned_abs() < values[best].unsigned_abs() {
            best = k;
        }
    }
    best
}

/// Reusable storage for the curves of many blocks.
#[derive(Default)]
pub struct CurveStore {
    pub u: Vec<f32>,
    pub a_sum: Vec<f64>,
    pub b_sum: Vec<f64>,
    /// Start of each curve's breakpoints; curve c spans `u[start[c]..start[c+1]]` and
    /// `a_sum`/`b_sum[start[c] + c..start[c+1] + c + 1]` (one more prefix entry than points).
    pub start: Vec<usize>,
    pub minima: Vec<(f32, u32)>,
    /// Start of each curve's minima in `minima`.
    pub minima_start: Vec<usize>,
    /// Each curve's window in u.
    pub window: Vec<(f32, f32)>,
    /// Scratch: the breakpoints of the curve being built, as sort keys.
    events: Vec<u64>,
}

impl CurveStore {
    pub fn clear(&mut self) {
        self.u.clear();
        self.a_sum.clear();
        self.b_sum.clear();
        self.start.clear();
        self.start.push(0);
        self.minima.clear();
        self.minima_start.clear();
        self.minima_start.push(0);
        self.window.clear();
    }

    pub fn curve(&self, c: usize) -> Curve<'_> {
        let (s, e) = (self.start[c], self.start[c + 1]);
        Curve {
            u: &self.u[s..e],
            a_sum: &self.a_sum[s + c..e + c + 1],
            b_sum: &self.b_sum[s + c..e + c + 1],
            minima: &self.minima[self.minima_start[c]..self.minima_start[c + 1]],
            u_lo: self.window[c].0,
            u_hi: self.window[c].1,
        }
    }

    /// Append the curve of values `sign·x`, weights `w`, on the grid `values`, exact for the
    /// scales a in `window` = (a_lo, a_hi) (every a > 0 with `None`).
    pub fn push(
        &mut self,
        values: &[i8],
        x: &[f32],
        w: &[f32],
        sign: f32,
        window: Option<(f32, f32)>,
    ) {
        let (u_lo, u_hi) = match window {
            Some((a_lo, a_hi)) => (1.0 / a_hi, 1.0 / a_lo),
            None => (0.0, f32::INFINITY),
        };
        let n0 = zero_index(values);
        let (mut a0, mut b0) = (0.0f64, 0.0f64);
        self.events.clear();
        for (i, (&xi, &wi)) in x.iter().zip(w).enumerate() {
            let y = sign * xi;
            if wi == 0.0 || y == 0.0 {
                let v0 = values[n0] as f32;
                a0 += (wi * y * v0) as f64;
                b0 += (wi * v0 * v0) as f64;
                continue;
            }
            let iy = 1.0 / y;
            // The element's index at the window's top scale: breakpoints below u_lo are
            // passed before the window starts.
            let mid = |from: usize, to: usize| 0.5 * (values[from] as f32 + values[to] as f32) * iy;
            let mut k = n0;
            if y > 0.0 {
                while k + 1 < values.len() && mid(k, k + 1) < u_lo {
                    k += 1;
                }
            } else {
                while k > 0 && mid(k, k - 1) < u_lo {
                    k -= 1;
                }
            }
            let vk = values[k] as f32;
            a0 += (wi * y * vk) as f64;
            b0 += (wi * vk * vk) as f64;
            // Key: u (positive, so its bits sort as integers), then which element moves
            // from which grid index to which: a plain integer sort, the same everywhere.
            let mut event = |from: usize, to: usize| {
                let u = mid(from, to);
                if u > u_hi {
                    return false;
                }
                let what = (i << 10 | from << 5 | to) as u64;
                self.events.push((u.to_bits() as u64) << 32 | what);
                true
            };
            if y > 0.0 {
                while k + 1 < values.len() && event(k, k + 1) {
                    k += 1;
                }
            } else {
                while k > 0 && event(k, k - 1) {
                    k -= 1;
                }
            }
        }
        self.events.sort_unstable();
        self.a_sum.push(a0);
        self.b_sum.push(b0);
        for &key in &self.events {
            let (i, from, to) = (
                (key >> 10 & 0x3ff) as usize,
                (key >> 5 & 31) as usize,
                (key & 31) as usize,
            );
            let (wi, y) = (w[i], sign * x[i]);
            let (vf, vt) = (values[from] as f32, values[to] as f32);
            self.u.push(f32::from_bits((key >> 32) as u32));
            a0 += (wi * y * (vt - vf)) as f64;
            b0 += (wi * (vt * vt - vf * vf)) as f64;
            self.a_sum.push(a0);
            self.b_sum.push(b0);
        }
        self.start.push(self.u.len());
        self.window.push((u_lo, u_hi));
        // Each term of E is a minimum of quadratics in a, so E only has concave kinks and its
        // local minima are the stationary points a = A/B that fall inside their own segment
        // (segment p: u[p-1] <= 1/a < u[p]) and inside the window.
        let first = self.start[self.start.len() - 2];
        let c = self.start.len() - 2;
        let (u, a_sum, b_sum) = (
            &self.u[first..],
            &self.a_sum[first + c..],
            &self.b_sum[first + c..],
        );
        for p in 0..=u.len() {
            let (a, b) = (a_sum[p], b_sum[p]);
            if a <= 0.0 || b <= 0.0 {
                continue;
            }
            // u[p-1]·(A/B) <= 1 < u[p]·(A/B), without dividing for every segment.
            let after_prev = if p == 0 {
                u_lo as f64 * a <= b
            } else {
                u[p - 1] as f64 * a <= b
            };
            let before_next = if p == u.len() {
                u_hi as f64 * a > b
            } else {
                u[p] as f64 * a > b
            };
            if after_prev && before_next {
                self.minima.push(((a / b) as f32, p as u32));
            }
        }
        // E may still fall past either end of a window: the ends stand for what lies beyond.
        if let Some((a_lo, a_hi)) = window {
            self.minima.push((a_hi, 0));
            self.minima.push((a_lo, u.len() as u32));
        }
        self.minima_start.push(self.minima.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{IQ2_GRIDS, IQ3_GRIDS, IQ4_GRIDS};

    /// E(a) - C by brute force: every element's nearest grid value at scale a.
    fn brute(values: &[i8], x: &[f32], w: &[f32], sign: f32, a: f32) -> f64 {
        let mut e = 0.0f64;
        for (&xi, &wi) in x.iter().zip(w) {
            let y = (sign * xi) as f64;
            let best = values
                .iter()
                .map(|&v| (y - a as f64 * v as f64).powi(2))
                .fold(f64::INFINITY, f64::min);
            e += wi as f64 * (best - y * y);
        }
        e
    }

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn lookup_matches_brute_force() {
        let mut seed = 7u64;
        for grids in [&IQ2_GRIDS, &IQ3_GRIDS, &IQ4_GRIDS] {
            for grid in grids.iter() {
                for n in [16usize, 32] {
                    for _ in 0..40 {
                        let x: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 3.0).collect();
                        let w: Vec<f32> = (0..n).map(|_| lcg(&mut seed).abs() + 0.01).collect();
                        let mut store = CurveStore::default();
                        store.clear();
                        store.push(grid.values, &x, &w, 1.0, None);
                        store.push(grid.values, &x, &w, -1.0, None);
                        for (c, sign) in [(0, 1.0f32), (1, -1.0)] {
                            let curve = store.curve(c);
                            for _ in 0..50 {
                                let a = (lcg(&mut seed).abs() + 1e-3) * 0.5;
                                let got = curve.at(a);
                                let want = brute(grid.values, &x, &w, sign, a);
                                let scale: f64 = w.iter().map(|&w| w as f64 * 10.0).sum();
                                assert!(
                                    (got - want).abs() <= 1e-5 * scale,
                                    "a={a} got {got} want {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn windowed_lookup_matches_brute_force_inside_the_window() {
        let mut seed = 9u64;
        for grids in [&IQ3_GRIDS, &IQ4_GRIDS] {
            for grid in grids.iter() {
                for _ in 0..40 {
                    let x: Vec<f32> = (0..32).map(|_| lcg(&mut seed) * 3.0).collect();
                    let w: Vec<f32> = (0..32).map(|_| lcg(&mut seed).abs() + 0.01).collect();
                    let (a_lo, a_hi) = (0.01 + lcg(&mut seed).abs() * 0.02, 0.05);
                    let mut store = CurveStore::default();
                    store.clear();
                    store.push(grid.values, &x, &w, 1.0, Some((a_lo, a_hi)));
                    store.push(grid.values, &x, &w, -1.0, Some((a_lo, a_hi)));
                    let full = {
                        let mut full = CurveStore::default();
                        full.clear();
                        full.push(grid.values, &x, &w, 1.0, None);
                        full.u.len()
                    };
                    assert!(
                        store.curve(0).u.len() < full,
                        "the window drops breakpoints"
                    );
                    for (c, sign) in [(0, 1.0f32), (1, -1.0)] {
                        let curve = store.curve(c);
                        let mut inside = 0;
                        for _ in 0..50 {
                            let a = 0.005 + lcg(&mut seed).abs() * 0.05;
                            if !curve.holds(a) {
                                assert!(a <= a_lo * 1.0001 || a >= a_hi * 0.9999, "a={a}");
                                continue;
                            }
                            inside += 1;
                            let (got, want) = (curve.at(a), brute(grid.values, &x, &w, sign, a));
                            let scale: f64 = w.iter().map(|&w| w as f64 * 10.0).sum();
                            assert!((got - want).abs() <= 1e-5 * scale, "a={a}: {got} vs {want}");
                        }
                        assert!(inside > 10);
                        // Every interior minimum lies in the window; the last two entries are
                        // the window's ends.
                        let n = curve.minima.len();
                        assert_eq!(
                            &curve.minima[n - 2..],
                            &[(a_hi, 0), (a_lo, curve.u.len() as u32)]
                        );
                        for &(a, _) in &curve.minima[..n - 2] {
                            assert!(curve.holds(a), "minimum at {a} outside the window");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn zero_index_is_the_smallest_magnitude() {
        assert_eq!(zero_index(IQ4_GRIDS[0].values), 8);
        assert_eq!(zero_index(IQ3_GRIDS[1].values), 4);
        assert_eq!(zero_index(IQ2_GRIDS[1].values), 2);
    }
}
