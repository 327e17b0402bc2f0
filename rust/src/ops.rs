//! Whole-tensor operations: validate the input once, then process rows in parallel. Rows are
//! independent, so results never depend on the thread count.

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::error::{IqkError, Result};
use crate::iqk::best;
use crate::q8k;
pub use crate::registry::QuantizeOptions;
use crate::registry::{Importance, QuantType, TypeInfo};
use crate::simd::{self, ActFormat, DotType};
use crate::widen::{widen, HalfFormat};

/// The weights to quantize: f32 values, or the f16/bf16 bits a model file stores, which each
/// worker widens one row at a time (exact), so no f32 copy of the tensor is made.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    F32(&'a [f32]),
    Half(HalfFormat, &'a [u16]),
}

impl<'a> From<&'a [f32]> for Weights<'a> {
    fn from(x: &'a [f32]) -> Self {
        Weights::F32(x)
    }
}

impl<'a> From<&'a Vec<f32>> for Weights<'a> {
    fn from(x: &'a Vec<f32>) -> Self {
        Weights::F32(x)
    }
}

impl<'a> Weights<'a> {
    /// The number of weights.
    pub fn len(&self) -> usize {
        match self {
            Weights::F32(x) => x.len(),
            Weights::Half(_, bits) => bits.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `rows` of rows of `n_per_row` weights.
    pub fn rows(&self, rows: std::ops::Range<usize>, n_per_row: usize) -> Weights<'a> {
        let values = rows.start * n_per_row..rows.end * n_per_row;
        match *self {
            Weights::F32(x) => Weights::F32(&x[values]),
            Weights::Half(format, bits) => Weights::Half(format, &bits[values]),
        }
    }

    fn check_finite(&self, n_per_row: usize) -> Result<()> {
        match *self {
            Weights::F32(x) => check_finite("weights", x, n_per_row),
            Weights::Half(format, bits) => check_finite_half(format, bits, n_per_row),
        }
    }

    /// `f(scratch, out_row, row)` for every row, in parallel (see [`zip_rows`]); half-precision
    /// rows are widened into a per-worker buffer first.
    fn for_each_row<S>(
        self,
        threads: Option<usize>,
        (out, row_size): (&mut [u8], usize),
        n_per_row: usize,
        init: impl Fn() -> S + Sync + Send,
        f: impl Fn(&mut S, &mut [u8], &[f32]) + Sync + Send,
    ) -> Result<()> {
        match self {
            Weights::F32(x) => zip_rows(threads, (out, row_size), (x, n_per_row), init, f),
            Weights::Half(format, bits) => zip_rows(
                threads,
                (out, row_size),
                (bits, n_per_row),
                || (init(), vec![0f32; n_per_row]),
                |(scratch, row), o, r| {
                    widen(format, r, row);
                    f(scratch, o, row)
                },
            ),
        }
    }
}

/// The most worker threads a call may ask for: far more than the machine's cores, far fewer
/// than the thousands an OS refuses (`threads=10**9` would otherwise spawn threads until the
/// OS says no).
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (8 * cores).max(256)
}

/// Run `work` on a pool of `threads` workers (the global pool when `None`). The pool of the
/// last size asked for is kept, so repeated calls pay no thread start-up; asking for another
/// size replaces it, so calls with many different sizes do not keep a pool each.
pub fn with_threads<T: Send>(threads: Option<usize>, work: impl FnOnce() -> T + Send) -> Result<T> {
    let Some(n) = threads else {
        return Ok(work());
    };
    if n == 0 || n > max_threads() {
        return Err(IqkError::InvalidArgument(format!(
            "threads must be between 1 and {} (8 per CPU, at least 256), not {n}",
            max_threads()
        )));
    }
    static LAST_POOL: Mutex<Option<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    let pool = {
        let mut last = LAST_POOL.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((size, pool)) if *size == n => pool.clone(),
            _ => {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map_err(|e| {
                        IqkError::InvalidArgument(format!("cannot start {n} threads: {e}"))
                    })?;
                // The replaced pool's threads end once no call is using it.
                last.insert((n, Arc::new(pool))).1.clone()
            }
        }
    };
    Ok(pool.install(work))
}

/// `f(scratch, out_chunk, in_chunk)` over paired chunks of `out` and `input`, in parallel on
/// `threads` workers. One thread runs on the calling thread: handing a small matrix to a
/// pool worker (and waking it) can cost more than the work itself.
fn zip_rows<O: Send, I: Sync, S>(
    threads: Option<usize>,
    (out, out_len): (&mut [O], usize),
    (input, in_len): (&[I], usize),
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, &mut [O], &[I]) + Sync + Send,
) -> Result<()> {
    if threads == Some(1) {
        let mut scratch = init();
        for (o, i) in out.chunks_mut(out_len).zip(input.chunks(in_len)) {
            f(&mut scratch, o, i);
        }
        return Ok(());
    }
    with_threads(threads, || {
        out.par_chunks_mut(out_len)
            .zip(input.par_chunks(in_len))
            .for_each_init(&init, |s, (o, i)| f(s, o, i))
    })
}

/// The position of the first element for which `bad` holds. Whole chunks are tested without
/// an early exit, a loop that vectorises; only a chunk holding one is searched.
fn first_bad<T: Copy>(data: &[T], bad: impl Fn(T) -> bool) -> Option<usize> {
    const CHUNK: usize = 1024;
    let k = data
        .chunks(CHUNK)
        .position(|c| c.iter().fold(false, |any, &v| any | bad(v)))?;
    let i = data[k * CHUNK..].iter().position(|&v| bad(v))?;
    Some(k * CHUNK + i)
}

fn non_finite(what: &'static str, pos: usize, n_per_row: usize, value: f32) -> IqkError {
    IqkError::NonFinite {
        what,
        row: pos / n_per_row.max(1),
        col: pos % n_per_row.max(1),
        value,
    }
}

fn check_finite(what: &'static str, data: &[f32], n_per_row: usize) -> Result<()> {
    match first_bad(data, |v: f32| !v.is_finite()) {
        Some(pos) => Err(non_finite(what, pos, n_per_row, data[pos])),
        None => Ok(()),
    }
}

/// [`check_finite`] on f16/bf16 bits: a value is infinite or NaN when its exponent bits are
/// all ones.
fn check_finite_half(format: HalfFormat, bits: &[u16], n_per_row: usize) -> Result<()> {
    let exponent: u16 = match format {
        HalfFormat::F16 => 0x7c00,
        HalfFormat::Bf16 => 0x7f80,
    };
    let Some(pos) = first_bad(bits, |h: u16| h & exponent == exponent) else {
        return Ok(());
    };
    let mut value = [0f32];
    widen(format, &bits[pos..pos + 1], &mut value);
    Err(non_finite("weights", pos, n_per_row, value[0]))
}

/// Check that rows of `n_per_row` weights can be quantized to `qtype`; returns their size in bytes.
pub fn check_row_length(qtype: QuantType, n_per_row: usize) -> Result<usize> {
    let t = qtype.info();
    if n_per_row == 0 || !n_per_row.is_multiple_of(t.block_size) {
        return Err(IqkError::Shape(format!(
            "row length {n_per_row} is not a positive multiple of {}'s block size {}",
            t.name, t.block_size
        )));
    }
    qtype.row_size(n_per_row)
}

fn check_rows(qtype: QuantType, len: usize, n_per_row: usize) -> Result<usize> {
    check_row_length(qtype, n_per_row)?;
    if !len.is_multiple_of(n_per_row) {
        return Err(IqkError::Shape(format!(
            "{len} values do not make whole rows of {n_per_row}"
        )));
    }
    Ok(len / n_per_row)
}

/// Validate an importance matrix for rows of `n_per_row`.
pub fn check_imatrix(imatrix: &[f32], n_per_row: usize) -> Result<()> {
    if imatrix.len() != n_per_row {
        return Err(IqkError::Imatrix(format!(
            "has {} entries but rows have {n_per_row} columns",
            imatrix.len()
        )));
    }
    if let Some(col) = imatrix.iter().position(|v| !v.is_finite() || *v < 0.0) {
        return Err(IqkError::Imatrix(format!(
            "entry {col} is {}; importances must be finite and non-negative",
            imatrix[col]
        )));
    }
    Ok(())
}

/// Quantize one row of `qtype`, the imatrix already prepared into `weights` (see
/// `TypeInfo::importances`). For the search's tests.
#[cfg(test)]
pub(crate) fn quantize_iqk_row(
    qtype: QuantType,
    x: &[f32],
    weights: Option<&[f32]>,
    out: &mut [u8],
    search: crate::iqk::iq2_ks::Iq2KsSearch,
) {
    let opts = QuantizeOptions {
        iq2ks_search: search,
        ..QuantizeOptions::default()
    };
    (qtype.info().quantize_row)(x, weights, out, &opts)
}

/// Quantize `x` (rows of `n_per_row`) into `out` (`nrows · row_size` bytes).
pub fn quantize_into<'a>(
    qtype: QuantType,
    x: impl Into<Weights<'a>>,
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    opts: &QuantizeOptions,
    out: &mut [u8],
) -> Result<()> {
    let x = x.into();
    if x.is_empty() {
        return Ok(());
    }
    let nrows = check_rows(qtype, x.len(), n_per_row)?;
    let row_size = qtype.row_size(n_per_row)?;
    if out.len() != nrows * row_size {
        return Err(IqkError::Shape(format!(
            "output has {} bytes, {nrows} rows of {} need {}",
            out.len(),
            qtype.name(),
            nrows * row_size
        )));
    }
    x.check_finite(n_per_row)?;
    if let Some(im) = imatrix {
        check_imatrix(im, n_per_row)?;
    }
    let imatrix = imatrix.map(tame_importances);
    quantize_rows(qtype.info(), x, n_per_row, imatrix.as_deref(), opts, out)?;
    check_output_finite(qtype, out, row_size, n_per_row)
}

/// Quantize every row as the descriptor `t` says (see `registry::TypeInfo`).
fn quantize_rows(
    t: &TypeInfo,
    x: Weights<'_>,
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    opts: &QuantizeOptions,
    out: &mut [u8],
) -> Result<()> {
    // Q2_K without an imatrix tests its whole input for a ternary model (as one
    // ggml_quantize_chunk call does), so it cannot be split into independent rows.
    if let (Some(chunk), None) = (t.quantize_chunk, imatrix) {
        let widened;
        let x = match x {
            Weights::F32(x) => x,
            Weights::Half(format, bits) => {
                widened = widen_to_f32(format, bits, opts.threads)?;
                &widened[..]
            }
        };
        chunk(x, out);
        return Ok(());
    }
    let row_size = t.qtype.row_size(n_per_row)?;
    let uninformed = imatrix.map(|im| uninformed_blocks(t, im));
    let best_format = opts.best.and(best::format::Format::of(t.qtype));
    x.for_each_row(
        opts.threads,
        (out, row_size),
        n_per_row,
        Vec::new,
        |scratch, out_row, x_row| {
            let w = t.importances(imatrix, x_row, scratch);
            // ik's bytes first: the floor the best search never falls below
            (t.quantize_row)(x_row, w, out_row, opts);
            if let Some(uninformed) = &uninformed {
                requantize_failed_blocks(t, x_row, out_row, uninformed, opts);
            }
            if let (Some(objective), Some(format)) = (opts.best, best_format) {
                best::improve_row(format, x_row, w, out_row, objective);
            }
        },
    )
}

/// Companion types, quantized with an imatrix: a block whose importances carry no
/// information (`uninformed`) or whose fit still gave a non-finite scale is quantized again
/// as without an imatrix. (The IQK types' sanitised importances cannot make their fits fail.)
fn requantize_failed_blocks(
    t: &TypeInfo,
    x_row: &[f32],
    out_row: &mut [u8],
    uninformed: &[bool],
    opts: &QuantizeOptions,
) {
    // Q8_0 ignores the imatrix: quantizing again without one gives the same bytes.
    if t.is_iqk || t.importance == Importance::Ignored {
        return;
    }
    let blocks = out_row
        .chunks_exact_mut(t.type_size)
        .zip(x_row.chunks_exact(t.block_size));
    for ((ob, xb), &no_info) in blocks.zip(uninformed) {
        // Importances that are zero over every sub-block that matters make ik's
        // Q2_K/Q4_K/Q5_K super-block fit divide 0 by 0: a NaN scale.
        if no_info || !scales_finite(t, ob) {
            (t.quantize_row)(xb, None, ob, opts);
        }
    }
}

/// Importances above this are scaled down, all by the same factor, until the largest is this:
/// their weighted sums (squares of sums of importance × weight × quant) could overflow f32 and
/// give non-finite output. Real importances (mean squared activations) stay far below it and
/// keep ik's bytes; scaled ones keep their ratios (the fit's optimum) except where a block's
/// importances fall below the sanitising floor and count as uniform.
const MAX_IMPORTANCE: f32 = 1e10;

fn tame_importances(imatrix: &[f32]) -> std::borrow::Cow<'_, [f32]> {
    let max = imatrix.iter().fold(0f32, |m, &v| m.max(v));
    if max <= MAX_IMPORTANCE {
        return imatrix.into();
    }
    let scale = MAX_IMPORTANCE / max;
    imatrix.iter().map(|&v| v * scale).collect()
}

/// An f32 row scale above this could overflow once multiplied by a block's integer scale and
/// value (both below 2^8): far beyond any real weight.
const MAX_ROW_SCALE: f32 = 1.2e30; // about 2^100

/// Whether a row's float scales (see `TypeInfo::block_f16_scales`) are finite and small enough
/// for every value of the row to decode finite. A scan of a few bytes per block.
fn scales_finite(t: &TypeInfo, row: &[u8]) -> bool {
    const F16_EXPONENT: u16 = 0x7c00;
    let f16_finite =
        |at: usize| u16::from_le_bytes([row[at], row[at + 1]]) & F16_EXPONENT != F16_EXPONENT;
    let prefix_ok = match t.row_meta_size {
        0 => true,
        2 => f16_finite(0),
        _ => f32::from_le_bytes([row[0], row[1], row[2], row[3]]).abs() <= MAX_ROW_SCALE,
    };
    prefix_ok
        && (t.row_meta_size..row.len())
            .step_by(t.type_size)
            .all(|block| t.block_f16_scales.iter().all(|&at| f16_finite(block + at)))
}

/// The last line of defence: whatever the input, never hand out bytes that decode to NaN or
/// infinity (e.g. weights changed by another thread while they were quantized).
fn check_output_finite(
    qtype: QuantType,
    out: &[u8],
    row_size: usize,
    n_per_row: usize,
) -> Result<()> {
    let t = qtype.info();
    let mut values = vec![0f32; n_per_row];
    // The scan flags rows that may decode non-finite; decoding them decides.
    for (row, bytes) in out.chunks_exact(row_size).enumerate() {
        if scales_finite(t, bytes) {
            continue;
        }
        dequantize_row(qtype, bytes, &mut values);
        if let Some(col) = values.iter().position(|v| !v.is_finite()) {
            return Err(IqkError::NonFinite {
                what: "quantized output",
                row,
                col,
                value: values[col],
            });
        }
    }
    Ok(())
}

/// Per block of `t`, whether its importances carry no information: all zero, as legacy
/// imatrix files hold for MoE experts that saw no tokens. ik quantizes such blocks to zeros
/// or NaN scales (0/0) for the types that use raw importances; they are quantized as without
/// an imatrix instead. Sanitised importances need no such care, ignored ones none at all.
fn uninformed_blocks(t: &TypeInfo, imatrix: &[f32]) -> Vec<bool> {
    imatrix
        .chunks_exact(t.block_size)
        .map(|b| t.importance == Importance::Raw && b.iter().all(|&w| w == 0.0))
        .collect()
}

/// Widen f16 or bf16 values to f32, in parallel (exact, so independent of the thread count).
pub fn widen_to_f32(format: HalfFormat, src: &[u16], threads: Option<usize>) -> Result<Vec<f32>> {
    // Chunks large enough to amortise scheduling, small enough to share out.
    const CHUNK: usize = 1 << 16;
    let mut out = vec![0f32; src.len()];
    zip_rows(
        threads,
        (&mut out, CHUNK),
        (src, CHUNK),
        || (),
        |_, o, i| widen(format, i, o),
    )?;
    Ok(out)
}

/// Rows per call when a caller quantizes a large input in pieces (to notice an interrupt
/// between them): about 4 M weights, a fraction of a second on any machine. `None` means the
/// input must be quantized in one call: Q2_K without an imatrix tests its whole input for a
/// ternary model, so splitting it would change the bytes.
pub fn rows_per_piece(qtype: QuantType, n_per_row: usize, has_imatrix: bool) -> Option<usize> {
    if qtype.info().quantize_chunk.is_some() && !has_imatrix {
        return None;
    }
    Some(((1usize << 22) / n_per_row.max(1)).max(1))
}

/// Quantize `x` (rows of `n_per_row`); returns `nrows · row_size` bytes.
pub fn quantize<'a>(
    qtype: QuantType,
    x: impl Into<Weights<'a>>,
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    opts: &QuantizeOptions,
) -> Result<Vec<u8>> {
    let x = x.into();
    let nrows = if x.is_empty() {
        0
    } else {
        check_rows(qtype, x.len(), n_per_row)?
    };
    let mut out = vec![
        0u8;
        nrows
            * if nrows > 0 {
                qtype.row_size(n_per_row)?
            } else {
                0
            }
    ];
    quantize_into(qtype, x, n_per_row, imatrix, opts, &mut out)?;
    Ok(out)
}

pub(crate) fn dequantize_row(qtype: QuantType, row: &[u8], out: &mut [f32]) {
    (qtype.info().dequantize_row)(row, out)
}

/// Row length of `row_bytes`-byte rows, checking that `len` bytes are whole rows.
pub fn rows_of_bytes(qtype: QuantType, len: usize, row_bytes: usize) -> Result<(usize, usize)> {
    let n_per_row = qtype.n_per_row_for_bytes(row_bytes)?;
    if !len.is_multiple_of(row_bytes) {
        return Err(IqkError::Shape(format!(
            "{len} bytes are not whole {} rows of {row_bytes} bytes",
            qtype.name()
        )));
    }
    Ok((len / row_bytes, n_per_row))
}

/// Dequantize rows of `row_bytes` bytes into `out` (`nrows · n_per_row` floats).
pub fn dequantize_into(
    qtype: QuantType,
    q: &[u8],
    row_bytes: usize,
    threads: Option<usize>,
    out: &mut [f32],
) -> Result<()> {
    if q.is_empty() {
        return Ok(());
    }
    let (nrows, n_per_row) = rows_of_bytes(qtype, q.len(), row_bytes)?;
    if out.len() != nrows * n_per_row {
        return Err(IqkError::Shape(format!(
            "output has {} values, {nrows} rows of {n_per_row} need {}",
            out.len(),
            nrows * n_per_row
        )));
    }
    zip_rows(
        threads,
        (out, n_per_row),
        (q, row_bytes),
        || (),
        |_, o, r| dequantize_row(qtype, r, o),
    )
}

pub fn dequantize(
    qtype: QuantType,
    q: &[u8],
    row_bytes: usize,
    threads: Option<usize>,
) -> Result<Vec<f32>> {
    let n = if q.is_empty() {
        0
    } else {
        let (nrows, n_per_row) = rows_of_bytes(qtype, q.len(), row_bytes)?;
        nrows * n_per_row
    };
    let mut out = vec![0.0f32; n];
    dequantize_into(qtype, q, row_bytes, threads, &mut out)?;
    Ok(out)
}

/// Quantize activations to Q8_K (length a multiple of 256).
pub fn quantize_q8_k(x: &[f32]) -> Result<Vec<u8>> {
    quantize_activations_to(ActFormat::Q8K, x)
}

/// Weight rows per task of the matrix products (see [`simd::TASK_ROWS`]).
const ROWS_PER_TASK: usize = simd::TASK_ROWS;

/// The multi-row dot-product kernel of `qtype` on the path `auto` (or `IQK_RS_SIMD`) picks.
pub fn rows_kernel(qtype: QuantType) -> Result<simd::RowsFn> {
    Ok(simd::auto_rows_fn(dot_type(qtype)?))
}

/// The tile kernel (weight rows × activation rows) of `qtype` on the path `auto` picks.
pub fn tile_kernel(qtype: QuantType) -> Result<simd::TileFn> {
    Ok(simd::auto_tile_fn(dot_type(qtype)?))
}

/// The dot-product kernel of `qtype` on the path `auto` picks.
pub fn dot_kernel(qtype: QuantType) -> Result<simd::DotFn> {
    Ok(simd::auto_dot_fn(dot_type(qtype)?))
}

/// The kernel kind of `qtype` (its descriptor's).
fn dot_type(qtype: QuantType) -> Result<DotType> {
    qtype.info().kernel.ok_or(IqkError::Unsupported {
        qtype: qtype.name(),
        op: "the dot product",
    })
}

/// Bytes of `n` values quantized to `format`.
fn activation_row_size(format: ActFormat, n: usize) -> usize {
    n / format.block_values() * format.block_bytes()
}

/// Quantize one row of activations to `format`: the one place an activation format's
/// quantizer is chosen (a new format adds its arm here and its block size in `simd`).
fn quantize_activation_row(format: ActFormat, x: &[f32], out: &mut [u8]) {
    match format {
        ActFormat::Q8K => q8k::quantize_row(x, out),
    }
}

/// Quantize activations to the format `qtype`'s dot product takes, checked.
fn quantize_activations(qtype: QuantType, x: &[f32]) -> Result<Vec<u8>> {
    quantize_activations_to(dot_type(qtype)?.activations(), x)
}

/// Quantize activations to `format`, checked.
fn quantize_activations_to(format: ActFormat, x: &[f32]) -> Result<Vec<u8>> {
    if !x.len().is_multiple_of(format.block_values()) {
        return Err(IqkError::Shape(format!(
            "{} needs a multiple of {} values, got {}",
            format.name(),
            format.block_values(),
            x.len()
        )));
    }
    check_finite("activations", x, x.len())?;
    let mut out = vec![0u8; activation_row_size(format, x.len())];
    quantize_activation_row(format, x, &mut out);
    Ok(out)
}

/// Dot every row of `q` (rows of `row_bytes`) with the activations `a8`, quantized to the
/// format of `qtype`'s dot product (Q8_K for every type today).
pub fn vec_dot(
    qtype: QuantType,
    q: &[u8],
    row_bytes: usize,
    a8: &[u8],
    threads: Option<usize>,
) -> Result<Vec<f32>> {
    let dot_rows = rows_kernel(qtype)?;
    if q.is_empty() {
        return Ok(Vec::new());
    }
    let format = dot_type(qtype)?.activations();
    let (nrows, n_per_row) = rows_of_bytes(qtype, q.len(), row_bytes)?;
    if a8.len() != activation_row_size(format, n_per_row) {
        return Err(IqkError::Shape(format!(
            "activations have {} bytes of {}; rows of {n_per_row} need {}",
            a8.len(),
            format.name(),
            activation_row_size(format, n_per_row)
        )));
    }
    let mut out = vec![0.0f32; nrows];
    zip_rows(
        threads,
        (&mut out, ROWS_PER_TASK),
        (q, ROWS_PER_TASK * row_bytes),
        || (),
        |_, o, rows| dot_rows(rows, a8, o),
    )?;
    Ok(out)
}

/// `X · Wᵀ` for a batch: quantize each of the `batch` rows of `x` (each `n_per_row` long) to
/// the activation format of `qtype` (Q8_K), then dot every weight row with every activation row. Returns `batch × nrows` values,
/// row-major. Parallel over weight rows; every dot is deterministic, so the result does not
/// depend on the thread count.
pub fn matmul(
    qtype: QuantType,
    q: &[u8],
    row_bytes: usize,
    x: &[f32],
    threads: Option<usize>,
) -> Result<Vec<f32>> {
    let tile = tile_kernel(qtype)?;
    let format = dot_type(qtype)?.activations();
    let (nrows, n_per_row) = if q.is_empty() {
        (0, qtype.n_per_row_for_bytes(row_bytes)?)
    } else {
        rows_of_bytes(qtype, q.len(), row_bytes)?
    };
    if !x.len().is_multiple_of(n_per_row) {
        return Err(IqkError::Shape(format!(
            "activations have {} values, not whole rows of {n_per_row}",
            x.len()
        )));
    }
    let batch = x.len() / n_per_row;
    check_finite("activations", x, n_per_row)?;
    let a8_size = activation_row_size(format, n_per_row);
    let mut a8 = vec![0u8; batch * a8_size];
    let mut out = vec![0.0f32; batch * nrows];
    if batch == 0 || nrows == 0 {
        return Ok(out);
    }
    zip_rows(
        threads,
        (&mut a8, a8_size),
        (x, n_per_row),
        || (),
        |_, a, xr| quantize_activation_row(format, xr, a),
    )?;
    let acts = simd::ActRows::with_format(format, &a8, batch);
    // Transposed (nrows × batch): each task owns a block of weight rows, all activations.
    let mut by_row = vec![0.0f32; nrows * batch];
    zip_rows(
        threads,
        (&mut by_row, ROWS_PER_TASK * batch),
        (q, ROWS_PER_TASK * row_bytes),
        || (),
        |_, o, w| tile(w, &acts, o),
    )?;
    for (r, col) in by_row.chunks_exact(batch).enumerate() {
        for (b, &v) in col.iter().enumerate() {
            out[b * nrows + r] = v;
        }
    }
    Ok(out)
}

/// Quantize `x` to the activation format of `qtype` (Q8_K), then dot every row of `q` with it.
pub fn matvec(
    qtype: QuantType,
    q: &[u8],
    row_bytes: usize,
    x: &[f32],
    threads: Option<usize>,
) -> Result<Vec<f32>> {
    if !q.is_empty() {
        let (_, n_per_row) = rows_of_bytes(qtype, q.len(), row_bytes)?;
        if x.len() != n_per_row {
            return Err(IqkError::Shape(format!(
                "activation vector has {} values but rows have {n_per_row}",
                x.len()
            )));
        }
    }
    let a8 = quantize_activations(qtype, x)?;
    vec_dot(qtype, q, row_bytes, &a8, threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numeric::f32_to_f16;
    use crate::registry::TYPES;
    use crate::testing::rng;

    /// The last check before bytes are handed out: a row whose float scale is NaN or infinite
    /// is an error naming that row; a large f32 row scale whose row still decodes finite is not.
    #[test]
    fn output_with_a_bad_scale_is_refused_with_its_row() {
        let x: Vec<f32> = (0..4 * 256).map(|i| (i as f32 * 0.37).sin()).collect();
        for t in &TYPES {
            let q = quantize(t.qtype, &x, 256, None, &QuantizeOptions::default()).unwrap();
            let row_size = t.qtype.row_size(256).unwrap();
            check_output_finite(t.qtype, &q, row_size, 256).unwrap();
            let mut fields: Vec<(usize, &[u8])> = t
                .block_f16_scales
                .iter()
                .map(|&at| (t.row_meta_size + at, &[0x00u8, 0x7c][..]))
                .collect();
            match t.row_meta_size {
                2 => fields.push((0, &[0x00, 0x7e])),
                4 => {
                    fields.push((0, &[0x00, 0x00, 0x80, 0x7f])); // +inf
                    let mut large = q.clone();
                    large[2 * row_size..][..4].copy_from_slice(&5.1e30f32.to_le_bytes());
                    assert!(!scales_finite(t, &large[2 * row_size..3 * row_size]));
                    check_output_finite(t.qtype, &large, row_size, 256).unwrap();
                }
                _ => {}
            }
            assert!(!fields.is_empty(), "{}", t.name);
            for (at, bytes) in fields {
                let mut bad = q.clone();
                bad[2 * row_size + at..][..bytes.len()].copy_from_slice(bytes);
                let err = check_output_finite(t.qtype, &bad, row_size, 256).unwrap_err();
                assert!(
                    matches!(err, IqkError::NonFinite { row: 2, .. }),
                    "{}: {err}",
                    t.name
                );
            }
        }
    }

    /// `block_f16_scales` lists every byte that can make a block decode non-finite: with those
    /// scales finite (1.0) and any other bytes, every type decodes finite; with one of them
    /// infinite, it does not.
    #[test]
    fn block_f16_scales_are_where_the_registry_says() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for t in &TYPES {
            let row_size = t.qtype.row_size(256).unwrap();
            let mut values = vec![0f32; 256];
            for _ in 0..200 {
                let mut row: Vec<u8> = (0..row_size)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                match t.row_meta_size {
                    2 => row[..2].copy_from_slice(&0x3c00u16.to_le_bytes()),
                    4 => row[..4].copy_from_slice(&1f32.to_le_bytes()),
                    _ => {}
                }
                for block in (t.row_meta_size..row_size).step_by(t.type_size) {
                    for &at in t.block_f16_scales {
                        row[block + at..][..2].copy_from_slice(&0x3c00u16.to_le_bytes());
                    }
                }
                assert!(scales_finite(t, &row), "{}", t.name);
                dequantize_row(t.qtype, &row, &mut values);
                assert!(values.iter().all(|v| v.is_finite()), "{}", t.name);
                for &at in t.block_f16_scales {
                    let mut inf = row.clone();
                    inf[t.row_meta_size + at..][..2].copy_from_slice(&0x7c00u16.to_le_bytes());
                    dequantize_row(t.qtype, &inf, &mut values);
                    assert!(values.iter().any(|v| !v.is_finite()), "{} @{at}", t.name);
                }
            }
        }
    }

    fn half_bits(format: HalfFormat, x: &[f32]) -> Vec<u16> {
        x.iter()
            .map(|&v| match format {
                HalfFormat::F16 => f32_to_f16(v),
                HalfFormat::Bf16 => (v.to_bits() >> 16) as u16,
            })
            .collect()
    }

    /// Quantizing f16/bf16 bits (widened a row at a time inside the workers) gives the bytes
    /// of quantizing their f32 widening: every type, with and without an imatrix, on one and
    /// on two threads.
    #[test]
    fn half_weights_quantize_as_their_widening() {
        let (nrows, n) = (6, 512);
        let mut seed = 4242u32;
        let x: Vec<f32> = (0..nrows * n)
            .map(|i| rng(&mut seed) * if i % 97 == 0 { 3.0 } else { 0.05 })
            .collect();
        let im: Vec<f32> = (0..n).map(|_| rng(&mut seed).abs() + 0.05).collect();
        for format in [HalfFormat::F16, HalfFormat::Bf16] {
            let bits = half_bits(format, &x);
            let widened = widen_to_f32(format, &bits, None).unwrap();
            for t in TYPES.iter() {
                for imatrix in [None, Some(&im[..])] {
                    for threads in [Some(1), Some(2)] {
                        let opts = QuantizeOptions {
                            threads,
                            ..Default::default()
                        };
                        let half = Weights::Half(format, &bits);
                        let got = quantize(t.qtype, half, n, imatrix, &opts).unwrap();
                        let want = quantize(t.qtype, &widened, n, imatrix, &opts).unwrap();
                        assert!(
                            got == want,
                            "{} {format:?} imatrix {} threads {threads:?}",
                            t.name,
                            imatrix.is_some()
                        );
                    }
                }
            }
        }
    }

    /// An infinite or NaN half-precision weight is reported at its row and column.
    #[test]
    fn non_finite_half_weights_are_located() {
        let n = 256;
        for (format, bad) in [
            (HalfFormat::F16, 0x7e00u16),
            (HalfFormat::F16, 0xfc00),
            (HalfFormat::Bf16, 0x7f80),
            (HalfFormat::Bf16, 0x7fc1),
        ] {
            let mut bits = half_bits(format, &vec![0.5f32; 3 * n]);
            bits[2 * n + 17] = bad;
            let err = quantize(
                QuantType::Iq4K,
                Weights::Half(format, &bits),
                n,
                None,
                &QuantizeOptions::default(),
            )
            .unwrap_err();
            match err {
                IqkError::NonFinite { row, col, .. } => {
                    assert_eq!((row, col), (2, 17), "{format:?} {bad:#x}")
                }
                other => panic!("{format:?} {bad:#x}: {other}"),
            }
        }
        // The largest finite values pass: f16 65504, bf16 ±2^121 and ±3.39e38.
        assert!(check_finite_half(HalfFormat::F16, &[0x7bff, 0xfbff], 2).is_ok());
        assert!(check_finite_half(HalfFormat::Bf16, &[0x7c00, 0xfc00, 0x7f7f], 3).is_ok());
    }

    /// Every kind of the layout module is the kernel of exactly one registered type, and every
    /// IQK type has a kernel (so a dot product), with the layout's name and sizes.
    #[test]
    fn every_kernel_kind_belongs_to_one_type() {
        for kind in DotType::ALL {
            let owners: Vec<_> = TYPES.iter().filter(|t| t.kernel == Some(kind)).collect();
            assert_eq!(owners.len(), 1, "{}", kind.name());
            let t = owners[0];
            assert_eq!(t.name, kind.name());
        }
        // The sizes the layout module gives, against ik_llama.cpp's block structs (an
        // independent record: the registry reads its sizes from the layout).
        let sizes = [
            ("iq2_k", 76, 0),
            ("iq3_k", 110, 0),
            ("iq4_k", 144, 0),
            ("iq2_ks", 70, 2),
            ("iq3_ks", 102, 2),
            ("iq4_ks", 136, 4),
            ("iq5_ks", 168, 4),
        ];
        for (name, bytes, row_meta) in sizes {
            let t = QuantType::from_name(name).unwrap().info();
            assert_eq!((t.type_size, t.row_meta_size), (bytes, row_meta), "{name}");
        }
        for t in TYPES.iter().filter(|t| t.is_iqk) {
            assert!(dot_type(t.qtype).is_ok(), "{}", t.name);
            assert_eq!(t.activations(), Some(ActFormat::Q8K), "{}", t.name);
        }
    }

    /// The descriptor's one-call path (`TypeInfo::quantize_chunk_as_ik`) and `quantize`
    /// agree on ordinary input for every type, with and without an imatrix: the importances
    /// are prepared in one place for both.
    #[test]
    fn chunk_as_ik_equals_quantize() {
        let (nrows, n) = (3, 512);
        let mut seed = 99u32;
        let x: Vec<f32> = (0..nrows * n).map(|_| rng(&mut seed)).collect();
        let im: Vec<f32> = (0..n).map(|_| rng(&mut seed).abs() + 0.01).collect();
        let opts = QuantizeOptions::default();
        for t in &TYPES {
            for imatrix in [None, Some(&im[..])] {
                let want = quantize(t.qtype, &x, n, imatrix, &opts).unwrap();
                let mut got = vec![0u8; want.len()];
                t.quantize_chunk_as_ik(&x, n, imatrix, &mut got, &opts);
                assert!(got == want, "{} imatrix {}", t.name, imatrix.is_some());
            }
        }
    }

    /// The matrix products hand weight rows to the multi-row and tile kernels in blocks;
    /// every result still equals the single-row kernel's on its own row, for any thread
    /// count, with a partial last block (37 rows) and a batch of activations (11: a group of
    /// eight and a remainder on AVX2).
    #[test]
    fn matrix_products_equal_single_row_dots() {
        let (nrows, n, batch) = (37, 512, 11);
        let mut seed = 777u32;
        let w: Vec<f32> = (0..nrows * n).map(|_| rng(&mut seed)).collect();
        let x: Vec<f32> = (0..batch * n).map(|_| rng(&mut seed)).collect();
        for t in TYPES.iter().filter(|t| t.is_iqk) {
            let q = quantize(t.qtype, &w, n, None, &QuantizeOptions::default()).unwrap();
            let row_bytes = q.len() / nrows;
            let dot = dot_kernel(t.qtype).unwrap();
            let a8: Vec<Vec<u8>> = x.chunks(n).map(|xr| quantize_q8_k(xr).unwrap()).collect();
            for threads in [Some(1), Some(2), Some(3)] {
                let mm = matmul(t.qtype, &q, row_bytes, &x, threads).unwrap();
                for (b, a) in a8.iter().enumerate() {
                    let mv = vec_dot(t.qtype, &q, row_bytes, a, threads).unwrap();
                    for (r, row) in q.chunks_exact(row_bytes).enumerate() {
                        let want = dot(row, a);
                        let (got_mv, got_mm) = (mv[r], mm[b * nrows + r]);
                        assert_eq!(
                            want.to_bits(),
                            got_mv.to_bits(),
                            "{} vec_dot row {r}",
                            t.name
                        );
                        assert_eq!(
                            want.to_bits(),
                            got_mm.to_bits(),
                            "{} matmul {b},{r}",
                            t.name
                        );
                    }
                }
            }
        }
    }
}
