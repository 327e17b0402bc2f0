//! Dot-product kernel benchmarks: every type × every SIMD path this CPU has, as a
//! matrix-vector product (one Q8_K activation row against every weight row), then batched
//! (the tile kernels: the cache-resident matrix against 8 and 32 activation rows).
//!
//! `cargo bench --bench kernels` runs the criterion benchmarks (throughput in weights/s) and
//! then prints a summary table: per type and path, Gweights/s and GB/s for a cache-resident
//! 256 × 4096 matrix and a memory-resident 4096 × 16384 matrix, single thread and all
//! threads, with the ratio to the scalar path and to a memory-bandwidth baseline measured in
//! the same run (streaming reads of the same bytes).
//!
//! Env: `IQK_BENCH=table` (only the table), `IQK_BENCH=criterion` (only criterion).
//! `IQK_BENCH_TYPES=iq2_k,iq4_ks` limits the table to those types.
//! `IQK_BENCH_IK_GGML=/path/to/libggml.so` adds ik_llama.cpp's own kernels (its exported
//! `iqk_mul_mat`, as built for this CPU) as an `ik` row on the same bytes, with the largest
//! relative difference of its results from ours.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use std::ffi::{c_int, c_long, c_void};

use iqk_rs::simd::{self, ActRows, DotType, RowsFn, SimdPath, TileFn, Q8K_BLOCK_BYTES};
use iqk_rs::QuantType;
use rayon::prelude::*;

struct Mat {
    nrows: usize,
    ncols: usize,
    row_bytes: usize,
    data: Vec<u8>,
    q8: Vec<u8>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Random block bytes with sane scales (fp16 1/16 per block, row scale 1/16).
fn make(kind: DotType, nrows: usize, ncols: usize) -> Mat {
    let nb = ncols / 256;
    let (meta, bb) = (kind.row_meta(), kind.block_bytes());
    let row_bytes = meta + nb * bb;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (kind as u64 + 1));
    let mut data = vec![0u8; nrows * row_bytes];
    for w in data.chunks_mut(8) {
        let r = rng.next().to_le_bytes();
        w.copy_from_slice(&r[..w.len()]);
    }
    for row in data.chunks_exact_mut(row_bytes) {
        match meta {
            2 => row[0..2].copy_from_slice(&0x2c00u16.to_le_bytes()),
            4 => row[0..4].copy_from_slice(&0.0625f32.to_le_bytes()),
            _ => {
                for b in row.chunks_exact_mut(bb) {
                    b[0..2].copy_from_slice(&0x2c00u16.to_le_bytes());
                }
            }
        }
    }
    let q8 = make_q8(&mut rng, nb);
    Mat {
        nrows,
        ncols,
        row_bytes,
        data,
        q8,
    }
}

/// `nb` Q8_K blocks of random quants in [-127, 127] (as quantization gives) and scale 0.01.
fn make_q8(rng: &mut Rng, nb: usize) -> Vec<u8> {
    let mut q8 = vec![0u8; nb * Q8K_BLOCK_BYTES];
    for y in q8.chunks_exact_mut(Q8K_BLOCK_BYTES) {
        y[0..4].copy_from_slice(&0.01f32.to_le_bytes());
        for k in 0..16 {
            let mut s = 0i32;
            for j in 0..16 {
                let q = (rng.next() % 255) as i32 - 127;
                y[8 + 16 * k + j] = q as i8 as u8;
                s += q;
            }
            y[264 + 2 * k..266 + 2 * k].copy_from_slice(&(s as i16).to_le_bytes());
        }
    }
    q8
}

fn matvec(f: RowsFn, m: &Mat, out: &mut [f32]) {
    f(&m.data, &m.q8, out);
}

fn matvec_par(f: RowsFn, m: &Mat, out: &mut [f32]) {
    out.par_chunks_mut(16)
        .zip(m.data.par_chunks(16 * m.row_bytes))
        .for_each(|(o, rows)| f(rows, &m.q8, o));
}

/// Every weight row against every activation row (`out[r * acts.len() + j]`), in blocks
/// of 16 weight rows as `ops::matmul` hands them out.
fn matmul(f: TileFn, m: &Mat, acts: &ActRows, out: &mut [f32]) {
    for (o, rows) in out
        .chunks_mut(16 * acts.len())
        .zip(m.data.chunks(16 * m.row_bytes))
    {
        f(rows, acts, o);
    }
}

fn matmul_par(f: TileFn, m: &Mat, acts: &ActRows, out: &mut [f32]) {
    out.par_chunks_mut(16 * acts.len())
        .zip(m.data.par_chunks(16 * m.row_bytes))
        .for_each(|(o, rows)| f(rows, acts, o));
}

/// The same products without tiles: the multi-row kernel once per activation row.
fn matmul_by_act(f: RowsFn, m: &Mat, acts: &ActRows, out: &mut [f32]) {
    let mut column = [0f32; 16];
    for (o, rows) in out
        .chunks_mut(16 * acts.len())
        .zip(m.data.chunks(16 * m.row_bytes))
    {
        let col = &mut column[..o.len() / acts.len()];
        for j in 0..acts.len() {
            f(rows, acts.row(j), col);
            for (r, &v) in col.iter().enumerate() {
                o[r * acts.len() + j] = v;
            }
        }
    }
}

/// Bandwidth baseline: read every byte once (sum of u64 lanes, vectorized by the compiler).
fn stream(buf: &[u8]) -> u64 {
    let mut acc = [0u64; 8];
    let mut chunks = buf.chunks_exact(64);
    for c in &mut chunks {
        for (k, a) in acc.iter_mut().enumerate() {
            let w = u64::from_le_bytes(c[8 * k..8 * k + 8].try_into().unwrap());
            *a = a.wrapping_add(w);
        }
    }
    acc.iter()
        .fold(chunks.remainder().len() as u64, |x, y| x.wrapping_add(*y))
}

fn stream_par(buf: &[u8]) -> u64 {
    buf.par_chunks(1 << 16)
        .map(stream)
        .reduce(|| 0, u64::wrapping_add)
}

/// Best time of `f` over ~`budget` (at least 3 runs).
fn best_of(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut runs = 0;
    while runs < 3 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    best
}

/// ik_llama.cpp's `iqk_mul_mat(Nx, Ny, ne00, typeA, A, strideA, typeB, B, strideB, C,
/// stride_C, ith, nth)`.
type IkMulMat = unsafe extern "C" fn(
    c_long,
    c_long,
    c_long,
    c_int,
    *const c_void,
    c_long,
    c_int,
    *const c_void,
    c_long,
    *mut f32,
    c_long,
    c_int,
    c_int,
) -> bool;

const GGML_TYPE_Q8_K: c_int = 15;

struct IkBaseline {
    _lib: libloading::Library,
    mul_mat: IkMulMat,
}

impl IkBaseline {
    fn load() -> Option<IkBaseline> {
        let path = std::env::var("IQK_BENCH_IK_GGML").ok()?;
        // SAFETY: loading a library the user named runs its initializers; that is the point.
        unsafe {
            let lib = libloading::Library::new(&path)
                .unwrap_or_else(|e| panic!("IQK_BENCH_IK_GGML={path}: {e}"));
            let mul_mat = *lib
                .get::<IkMulMat>(b"iqk_mul_mat\0")
                .unwrap_or_else(|e| panic!("{path} has no iqk_mul_mat: {e}"));
            // ggml_init fills the global tables some of ik's kernels read.
            #[repr(C)]
            struct InitParams {
                mem_size: usize,
                mem_buffer: *mut c_void,
                no_alloc: bool,
            }
            let init = *lib
                .get::<unsafe extern "C" fn(InitParams) -> *mut c_void>(b"ggml_init\0")
                .unwrap_or_else(|e| panic!("{path} has no ggml_init: {e}"));
            let ctx = init(InitParams {
                mem_size: 1 << 16,
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            });
            assert!(!ctx.is_null(), "ggml_init failed");
            Some(IkBaseline { _lib: lib, mul_mat })
        }
    }

    /// Thread `ith` of `nth`'s share (ik splits the weight rows) of every row of `m` against
    /// the `ny` Q8_K rows `b`, `b_stride` bytes apart: `out[j * nrows + r]` (activation-major).
    #[allow(clippy::too_many_arguments)]
    fn mul_mat(
        &self,
        kind: DotType,
        m: &Mat,
        b: &[u8],
        ny: usize,
        b_stride: usize,
        out: *mut f32,
        ith: usize,
        nth: usize,
    ) {
        assert!(b.len() >= ny * b_stride && b_stride >= m.q8.len());
        let type_a = QuantType::from_name(kind.name()).unwrap().info().ggml_id as c_int;
        // SAFETY: `m` holds nrows rows of `row_bytes`, `b` ny Q8_K rows of `ncols` (checked
        // above); `out` has nrows × ny floats, and ik writes only its own share of them.
        let ok = unsafe {
            (self.mul_mat)(
                m.nrows as c_long,
                ny as c_long,
                m.ncols as c_long,
                type_a,
                m.data.as_ptr().cast(),
                m.row_bytes as c_long,
                GGML_TYPE_Q8_K,
                b.as_ptr().cast(),
                b_stride as c_long,
                out,
                m.nrows as c_long,
                ith as c_int,
                nth as c_int,
            )
        };
        assert!(ok, "iqk_mul_mat refused {}", kind.name());
    }

    /// The matrix-vector product: `m`'s own activation row.
    fn matvec_part(&self, kind: DotType, m: &Mat, out: *mut f32, ith: usize, nth: usize) {
        self.mul_mat(kind, m, &m.q8, 1, m.q8.len(), out, ith, nth);
    }

    fn matvec(&self, kind: DotType, m: &Mat, out: &mut [f32]) {
        self.matvec_part(kind, m, out.as_mut_ptr(), 0, 1);
    }

    /// Every row against the activation rows `acts` (ik's layout, activation-major).
    fn matmul_part(
        &self,
        kind: DotType,
        m: &Mat,
        acts: &ActRows,
        out: *mut f32,
        ith: usize,
        nth: usize,
    ) {
        let (b, ny) = (acts.bytes(), acts.len());
        self.mul_mat(kind, m, b, ny, acts.row_bytes(), out, ith, nth);
    }

    fn matmul(&self, kind: DotType, m: &Mat, acts: &ActRows, out: &mut [f32]) {
        self.matmul_part(kind, m, acts, out.as_mut_ptr(), 0, 1);
    }

    fn matmul_par(&self, kind: DotType, m: &Mat, acts: &ActRows, out: &mut [f32]) {
        let ptr = out.as_mut_ptr() as usize;
        rayon::broadcast(|ctx| {
            self.matmul_part(
                kind,
                m,
                acts,
                ptr as *mut f32,
                ctx.index(),
                ctx.num_threads(),
            )
        });
    }

    fn matvec_par(&self, kind: DotType, m: &Mat, out: &mut [f32]) {
        let ptr = out.as_mut_ptr() as usize;
        rayon::broadcast(|ctx| {
            self.matvec_part(kind, m, ptr as *mut f32, ctx.index(), ctx.num_threads())
        });
    }
}

/// Largest relative difference, scaled by the largest magnitude (single results may cancel).
fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = a.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

/// One type's matrices and bandwidth baselines, for timing and printing a table row.
struct RowContext<'a> {
    kind: DotType,
    mc: &'a Mat,
    mm: &'a Mat,
    bw1: f64,
    bwn: f64,
}

impl RowContext<'_> {
    /// Best seconds of: the cache-resident matrix on one thread, the memory-resident one on
    /// one thread, and on all threads.
    fn time(
        &self,
        out_c: &mut [f32],
        out_m: &mut [f32],
        mut one: impl FnMut(&Mat, &mut [f32]),
        mut all: impl FnMut(&Mat, &mut [f32]),
    ) -> [f64; 3] {
        [
            best_of(Duration::from_millis(300), || one(self.mc, out_c)),
            best_of(Duration::from_millis(600), || one(self.mm, out_m)),
            best_of(Duration::from_millis(600), || all(self.mm, out_m)),
        ]
    }

    fn print(&self, label: &str, [tc, tm, tp]: [f64; 3], scalar_c: f64, note: &str) {
        let (mc, mm) = (self.mc, self.mm);
        let nc = (mc.nrows * mc.ncols) as f64;
        let nm = (mm.nrows * mm.ncols) as f64;
        let bytes_m = mm.data.len() as f64;
        println!(
            "{:<7} {:<7} | {:>7.2} {:>6.2} {:>7.2} | {:>7.2} {:>6.2} {:>7.2} | {:>7.2} {:>6.2} {:>6.2} {note}",
            self.kind.name(),
            label,
            nc / tc / 1e9,
            mc.data.len() as f64 / tc / 1e9,
            scalar_c / tc,
            nm / tm / 1e9,
            bytes_m / tm / 1e9,
            bytes_m / tm / self.bw1,
            nm / tp / 1e9,
            bytes_m / tp / 1e9,
            bytes_m / tp / self.bwn,
        );
    }
}

/// The types `IQK_BENCH_TYPES` names (comma-separated), or all.
fn wanted_kinds() -> Vec<DotType> {
    let wanted = std::env::var("IQK_BENCH_TYPES").unwrap_or_default();
    DotType::ALL
        .into_iter()
        .filter(|k| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == k.name()))
        .collect()
}

const CACHE: (usize, usize) = (256, 4096);
const MEMORY: (usize, usize) = (4096, 16384);

fn criterion_benches(c: &mut Criterion) {
    let paths = simd::available_paths();
    for (label, (nrows, ncols)) in [("cache_256x4096", CACHE), ("memory_4096x16384", MEMORY)] {
        let mut g = c.benchmark_group(format!("matvec_{label}"));
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_secs(if nrows == 256 { 1 } else { 3 }));
        g.sample_size(10);
        g.throughput(Throughput::Elements((nrows * ncols) as u64));
        for kind in DotType::ALL {
            let m = make(kind, nrows, ncols);
            let mut out = vec![0f32; nrows];
            for &p in &paths {
                let f = simd::rows_fn(kind, p);
                g.bench_function(BenchmarkId::new(kind.name(), p.name()), |b| {
                    b.iter(|| matvec(f, black_box(&m), &mut out))
                });
            }
            g.bench_function(BenchmarkId::new(kind.name(), "stream_baseline"), |b| {
                b.iter(|| stream(black_box(&m.data)))
            });
        }
        g.finish();
    }
}

fn table(ik: Option<&IkBaseline>) {
    let paths = simd::available_paths();
    let threads = rayon::current_num_threads();
    println!();
    println!(
        "Summary (best of repeated runs; Gw/s = 1e9 weights/s, GB/s of weight bytes; x-scalar and \
         x-bw = ratio to the scalar path and to streaming the same bytes in the same run; \
         all-threads = {threads} rayon threads)"
    );
    println!(
        "{:<7} {:<7} | {:>22} | {:>22} | {:>26}",
        "type", "path", "cache 256x4096 1T", "memory 4096x16384 1T", "memory 4096x16384 all-T"
    );
    println!(
        "{:<7} {:<7} | {:>7} {:>6} {:>7} | {:>7} {:>6} {:>7} | {:>7} {:>6} {:>6} {:>4}",
        "", "", "Gw/s", "GB/s", "x-scal", "Gw/s", "GB/s", "x-bw", "Gw/s", "GB/s", "x-bw", ""
    );
    for kind in wanted_kinds() {
        let mc = make(kind, CACHE.0, CACHE.1);
        let mm = make(kind, MEMORY.0, MEMORY.1);
        let mut out_c = vec![0f32; mc.nrows];
        let mut out_m = vec![0f32; mm.nrows];
        let bw1 = mm.data.len() as f64
            / best_of(Duration::from_millis(400), || {
                black_box(stream(black_box(&mm.data)));
            });
        let bwn = mm.data.len() as f64
            / best_of(Duration::from_millis(400), || {
                black_box(stream_par(black_box(&mm.data)));
            });
        let ctx = RowContext {
            kind,
            mc: &mc,
            mm: &mm,
            bw1,
            bwn,
        };
        let mut scalar_c = 0.0;
        for &p in &paths {
            let f = simd::rows_fn(kind, p);
            let t = ctx.time(
                &mut out_c,
                &mut out_m,
                |m, out| matvec(f, m, out),
                |m, out| matvec_par(f, m, out),
            );
            if p == SimdPath::Scalar {
                scalar_c = t[0];
            }
            ctx.print(p.name(), t, scalar_c, "");
        }
        if let Some(ik) = ik {
            // Every path gives bit-identical results, so the last one stands for ours.
            let ours = out_c.clone();
            let t = ctx.time(
                &mut out_c,
                &mut out_m,
                |m, out| ik.matvec(kind, m, out),
                |m, out| ik.matvec_par(kind, m, out),
            );
            let diff = max_rel_diff(&ours, &out_c);
            ctx.print("ik", t, scalar_c, &format!("diff {diff:.1e}"));
        }
        println!(
            "{:<7} {:<7} | {:>22} | {:>7} {:>6.2} {:>7} | {:>7} {:>6.2} {:>6} {:>4}",
            kind.name(),
            "stream",
            "",
            "",
            bw1 / 1e9,
            "",
            "",
            bwn / 1e9,
            "",
            ""
        );
    }
}

/// Activation rows per batch in the batched table.
const BATCHES: [usize; 2] = [8, 32];

/// Batched products (`matmul`): the cache-resident matrix against B activation rows, on one
/// thread and on all. Gw/s counts weight × activation-row products; `x-by-act` is the ratio
/// to the multi-row kernel run once per activation row (as before tiles) in the same run.
fn batched_table(ik: Option<&IkBaseline>) {
    let paths = simd::available_paths();
    println!();
    println!(
        "Batched: {} x {} weights against B activation rows (Gw/s = 1e9 weight x activation-row \
         products/s; x-by-act = ratio to one multi-row pass per activation row, same run)",
        CACHE.0, CACHE.1
    );
    println!(
        "{:<7} {:<7} {:>3} | {:>7} {:>8} | {:>7}",
        "type", "path", "B", "1T Gw/s", "x-by-act", "all-T"
    );
    for kind in wanted_kinds() {
        let m = make(kind, CACHE.0, CACHE.1);
        for batch in BATCHES {
            let mut rng = Rng(0x0123_4567_89ab_cdef ^ batch as u64);
            let bytes: Vec<u8> = (0..batch)
                .flat_map(|_| make_q8(&mut rng, CACHE.1 / 256))
                .collect();
            let acts = ActRows::new(&bytes, batch);
            let products = (m.nrows * m.ncols * batch) as f64;
            let mut out = vec![0f32; m.nrows * batch];
            let budget = Duration::from_millis(300);
            for &p in &paths {
                let (tile, rows) = (simd::tile_fn(kind, p), simd::rows_fn(kind, p));
                let t1 = best_of(budget, || matmul(tile, &m, &acts, &mut out));
                let tn = best_of(budget, || matmul_par(tile, &m, &acts, &mut out));
                let tb = best_of(budget, || matmul_by_act(rows, &m, &acts, &mut out));
                println!(
                    "{:<7} {:<7} {:>3} | {:>7.2} {:>8.2} | {:>7.2}",
                    kind.name(),
                    p.name(),
                    batch,
                    products / t1 / 1e9,
                    tb / t1,
                    products / tn / 1e9
                );
            }
            if let Some(ik) = ik {
                // ik's layout is activation-major; ours, transposed, for the difference.
                let ours: Vec<f32> = (0..batch * m.nrows)
                    .map(|k| out[(k % m.nrows) * batch + k / m.nrows])
                    .collect();
                let mut theirs = vec![0f32; m.nrows * batch];
                let t1 = best_of(budget, || ik.matmul(kind, &m, &acts, &mut theirs));
                let tn = best_of(budget, || ik.matmul_par(kind, &m, &acts, &mut theirs));
                println!(
                    "{:<7} {:<7} {:>3} | {:>7.2} {:>8} | {:>7.2} diff {:.1e}",
                    kind.name(),
                    "ik",
                    batch,
                    products / t1 / 1e9,
                    "",
                    products / tn / 1e9,
                    max_rel_diff(&ours, &theirs)
                );
            }
        }
    }
}

fn main() {
    let mode = std::env::var("IQK_BENCH").unwrap_or_default();
    // `cargo test --benches` / `--list` only smoke-test the harness.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench") {
        for kind in DotType::ALL {
            let m = make(kind, 4, 1024);
            let mut out = vec![0f32; 4];
            let acts = ActRows::new(&m.q8, 1);
            for p in simd::available_paths() {
                matvec(simd::rows_fn(kind, p), &m, &mut out);
                matmul(simd::tile_fn(kind, p), &m, &acts, &mut out);
            }
        }
        println!("kernels bench: smoke test ok (run with `cargo bench --bench kernels`)");
        return;
    }
    eprintln!(
        "SIMD paths: {:?}, active {}",
        simd::available_paths()
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>(),
        simd::active_path()
    );
    if mode != "table" {
        let mut c = Criterion::default().configure_from_args();
        criterion_benches(&mut c);
        c.final_summary();
    }
    if mode != "criterion" {
        let ik = IkBaseline::load();
        table(ik.as_ref());
        batched_table(ik.as_ref());
    }
}
