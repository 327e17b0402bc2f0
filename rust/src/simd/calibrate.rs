//! Which path `auto` runs, per type and kernel shape: the fastest measured on this machine.
//!
//! A wider instruction set is not always faster (the AVX-512 single-row kernels were slower
//! than the AVX2 ones on Zen 4), so at the first use of a
//! (type, shape) every path the CPU has is timed on a small cache-resident block and the fastest
//! is kept for the process. All paths return bit-identical results, so the choice changes the
//! speed only, never a result.
//!
//! The decision ([`pick_fastest`]) takes the timing function as an argument, so tests drive it
//! with a fake clock; [`time_sample`] is the real one.

use std::hint::black_box;
use std::time::Instant;

use super::scalar::{ActRows, DotType, QK};
use super::SimdPath;

/// The three kernel shapes (see [`super::dot_fn`], [`super::rows_fn`], [`super::tile_fn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// One row against one activation row.
    Row,
    /// Consecutive rows against one activation row (matrix-vector products).
    Rows,
    /// Rows against several activation rows (batched products).
    Tile,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Row, Shape::Rows, Shape::Tile];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Row => "row",
            Shape::Rows => "rows",
            Shape::Tile => "tile",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// How a [`Choice`] was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Picked {
    /// `IQK_RS_SIMD` named the path.
    Forced,
    /// The CPU has one path only; nothing to time.
    Only,
    /// The fastest of the timed candidates.
    Calibrated,
}

impl Picked {
    pub fn name(self) -> &'static str {
        match self {
            Picked::Forced => "forced",
            Picked::Only => "only",
            Picked::Calibrated => "calibrated",
        }
    }
}

/// The path one (type, shape) runs on, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub path: SimdPath,
    pub how: Picked,
    /// The paths that could have been chosen (slowest-declared first, as [`SimdPath::ALL`]).
    pub candidates: Vec<SimdPath>,
    /// Each timed candidate's best sample, in nanoseconds (empty unless `how` is
    /// [`Picked::Calibrated`]).
    pub timings_ns: Vec<(SimdPath, f64)>,
    /// Wall time the calibration took, in nanoseconds (0 unless calibrated).
    pub cost_ns: u64,
}

/// Timed samples per candidate; the best (smallest) one counts, which discards samples that
/// an interrupt or another thread slowed down.
pub const SAMPLES: usize = 7;

/// A candidate whose sample is this many times the best one so far cannot win: it gets no
/// further samples (the scalar path would otherwise dominate the calibration's cost).
const HOPELESS: f64 = 2.0;
/// The same for the warm-up call, which can be slow for reasons that pass (cold caches, page
/// faults), hence the wider margin: beyond it the warm-up is the candidate's only sample.
const HOPELESS_COLD: f64 = 8.0;

/// Decides among `candidates` (at least one): `forced` wins outright; with one candidate there
/// is nothing to time; otherwise [`pick_fastest`] with `time`.
pub fn decide(
    forced: Option<SimdPath>,
    candidates: &[SimdPath],
    time: impl FnMut(SimdPath) -> f64,
) -> Choice {
    assert!(!candidates.is_empty(), "no SIMD path to choose from");
    let candidates = candidates.to_vec();
    if let Some(path) = forced {
        return Choice {
            path,
            how: Picked::Forced,
            candidates: vec![path],
            timings_ns: Vec::new(),
            cost_ns: 0,
        };
    }
    if let [only] = candidates[..] {
        return Choice {
            path: only,
            how: Picked::Only,
            candidates,
            timings_ns: Vec::new(),
            cost_ns: 0,
        };
    }
    let start = Instant::now();
    let (path, timings_ns) = pick_fastest(&candidates, SAMPLES, time);
    Choice {
        path,
        how: Picked::Calibrated,
        candidates,
        timings_ns,
        cost_ns: start.elapsed().as_nanos() as u64,
    }
}

/// The candidate with the smallest best-of-`samples` time, where `time(path)` runs one warm
/// sample and returns its duration (any unit). Candidates are timed widest first (the reverse
/// of `candidates`' order), after one warm-up call each that does not count; a candidate more
/// than twice as slow as the best so far stops after one sample, and one whose warm-up takes
/// more than 8 times the best stops there (its warm-up then stands as its time). Ties go to
/// the wider path, so the same timings always give the same choice. Returns the choice and
/// each candidate's best time, in `candidates`' order.
pub fn pick_fastest(
    candidates: &[SimdPath],
    samples: usize,
    mut time: impl FnMut(SimdPath) -> f64,
) -> (SimdPath, Vec<(SimdPath, f64)>) {
    assert!(samples > 0, "at least one sample");
    let mut best: Option<(SimdPath, f64)> = None;
    let mut timings = Vec::with_capacity(candidates.len());
    for &path in candidates.iter().rev() {
        // Warm-up: code, tables and data into the caches.
        let cold = time(path);
        let mut own = f64::INFINITY;
        if best.is_some_and(|(_, b)| cold > HOPELESS_COLD * b) {
            own = cold;
        }
        for _ in 0..if own.is_finite() { 0 } else { samples } {
            own = own.min(time(path));
            if best.is_some_and(|(_, b)| own > HOPELESS * b) {
                break;
            }
        }
        // Strictly faster only: on a tie the wider path, timed earlier, stays.
        if best.is_none_or(|(_, b)| own < b) {
            best = Some((path, own));
        }
        timings.push((path, own));
    }
    timings.reverse();
    (best.expect("at least one candidate").0, timings)
}

/// Weights per row of the calibration block: 4 superblocks, so a row's loop runs long enough
/// to show its steady state, and the whole block (at most 16 × 4 × 168 weight bytes and
/// 8 × 4 × 296 activation bytes) stays in L1.
const CAL_N_PER_ROW: usize = 4 * QK;
/// Weight rows of the single-row and multi-row samples.
const CAL_ROWS: usize = 4;
/// Weight rows of the tile sample: as many as the matrix products hand a tile kernel per task,
/// so that a kernel's set-up per call (AVX-512 readies the activation rows once per call)
/// weighs as much as in use.
const CAL_TILE_ROWS: usize = super::TASK_ROWS;
/// Activation rows of the tile sample (the matrix products' tile height).
const CAL_ACTS: usize = 8;

/// Synthetic bytes for calibration: deterministic, with normal scales (no NaN, inf or
/// subnormals, whose arithmetic can be slower) and activations as their format's quantizer
/// writes them ([`ActFormat::sample_block`](super::scalar::ActFormat::sample_block)).
pub struct Block {
    kind: DotType,
    rows: Vec<u8>,
    acts: Vec<u8>,
}

impl Block {
    pub fn new(kind: DotType) -> Block {
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ kind as u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        };
        let row_bytes = kind.row_bytes(CAL_N_PER_ROW);
        let mut rows: Vec<u8> = (0..CAL_TILE_ROWS * row_bytes).map(|_| next()).collect();
        for row in rows.chunks_exact_mut(row_bytes) {
            let (meta, blocks) = row.split_at_mut(kind.row_meta());
            match meta.len() {
                2 => meta.copy_from_slice(&0x3c00u16.to_le_bytes()), // f16 1.0
                4 => meta.copy_from_slice(&1.0f32.to_le_bytes()),
                _ => {}
            }
            if kind.row_meta() == 0 {
                // K types: each block starts with its f16 scale.
                for b in blocks.chunks_exact_mut(kind.block_bytes()) {
                    b[..2].copy_from_slice(&0x3c00u16.to_le_bytes());
                }
            }
        }
        let format = kind.activations();
        let mut acts =
            vec![0u8; CAL_ACTS * CAL_N_PER_ROW / format.block_values() * format.block_bytes()];
        for b in acts.chunks_exact_mut(format.block_bytes()) {
            format.sample_block(b, &mut next);
        }
        Block { kind, rows, acts }
    }

    fn row_bytes(&self) -> usize {
        self.rows.len() / CAL_TILE_ROWS
    }

    fn act_bytes(&self) -> usize {
        self.acts.len() / CAL_ACTS
    }
}

/// One sample of `path`'s kernel of `shape` on `block`, in nanoseconds (the real clock).
pub fn time_sample(block: &Block, shape: Shape, path: SimdPath) -> f64 {
    let kind = block.kind;
    let (rb, ab) = (block.row_bytes(), block.act_bytes());
    // The single-row and multi-row shapes compute CAL_ROWS × CAL_ACTS dots (32 Ki weight
    // products, about a microsecond on AVX2), the single-row kernel one by one, the multi-row
    // one per activation row; the tile kernel CAL_TILE_ROWS × CAL_ACTS at once.
    let mut out = [0.0f32; CAL_TILE_ROWS * CAL_ACTS];
    let rows = &block.rows[..CAL_ROWS * rb];
    let acts = ActRows::new(&block.acts, CAL_ACTS);
    let start = Instant::now();
    match shape {
        Shape::Row => {
            let dot = super::dot_fn(kind, path);
            for (c, o) in out[..CAL_ROWS * CAL_ACTS].iter_mut().enumerate() {
                let (r, a) = (c % CAL_ROWS, c / CAL_ROWS);
                let row = &rows[r * rb..(r + 1) * rb];
                *o = dot(black_box(row), black_box(&block.acts[a * ab..(a + 1) * ab]));
            }
        }
        Shape::Rows => {
            let dot_rows = super::rows_fn(kind, path);
            let out = &mut out[..CAL_ROWS * CAL_ACTS];
            for (a, o) in out.chunks_exact_mut(CAL_ROWS).enumerate() {
                dot_rows(black_box(rows), &block.acts[a * ab..(a + 1) * ab], o);
            }
        }
        Shape::Tile => {
            let tile = super::tile_fn(kind, path);
            tile(black_box(&block.rows), black_box(&acts), &mut out);
        }
    }
    black_box(&out);
    start.elapsed().as_nanos() as f64
}
