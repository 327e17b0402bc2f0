//! SIMD dot products of IQK weight rows with Q8_K activations, chosen at run time.
//!
//! Paths: [`SimdPath::Scalar`] (portable, everywhere), [`SimdPath::Avx2`] (x86-64 with
//! AVX2 + FMA + F16C), [`SimdPath::Avx512`] (x86-64 with AVX-512 F/BW/VL/VNNI), [`SimdPath::Neon`]
//! (aarch64; uses the `dotprod` instructions when the CPU has them). No `target-cpu=native` is
//! needed: kernels are `#[target_feature]` functions that are only ever called after detection.
//!
//! Which path runs: the environment variable `IQK_RS_SIMD` (`scalar|avx2|avx512|neon`) forces
//! one for every kernel (a path the CPU lacks falls back to `auto` with a warning on stderr).
//! Under `auto` (unset, empty or `auto`), each type and kernel shape runs on the path measured
//! fastest on this machine at its first use ([`choice`], `calibrate.rs`): a wider instruction
//! set is not always faster. [`auto_dot_fn`], [`auto_rows_fn`] and [`auto_tile_fn`] hand out
//! those kernels; [`active_path`] is the widest path in use (the forced one, else the CPU's
//! widest), which the quantizers' searches follow.
//!
//! Every path computes each superblock's integer sum exactly and folds it into an `f64`
//! accumulator in the same order (see `scalar.rs`), so all paths return bit-identical
//! results: the mathematical dot product rounded once per superblock in f64, then to f32.
//! That is what lets a timing decide the path: it can change the speed, never a result.
//!
//! Three kernel shapes: one row ([`dot_fn`]), consecutive rows against one activation row
//! ([`rows_fn`], matrix-vector products) and rows against several activation rows
//! ([`tile_fn`], batched products, which decode each weight superblock once per group).
//!
//! The kernel files (`scalar.rs`, `avx2.rs`, `avx512.rs`, `neon.rs`) use nothing from the
//! crate; `scalar.rs` and `neon.rs` also build with Rust 1.63 so the NEON tests can be
//! compiled standalone for aarch64 (`scripts/neon_test.sh`, harness in `neon_harness.rs`).

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod calibrate;
#[cfg(target_arch = "aarch64")]
mod neon;
mod scalar;

pub use calibrate::{decide, pick_fastest, Choice, Picked, Shape, SAMPLES};
pub use scalar::{
    dequantize_row, f16_to_f32, rd_f32, rd_u16, ActFormat, ActRows, DotType, Layout, RowScale,
    IQ2NL, IQ3NL, IQ4K, IQ5NL, QK,
};

/// Weight rows per task of the matrix products (`ops`): the multi-row and tile kernels share
/// their set-up across a task's rows, and 16 rows of 4096 are still small enough to balance
/// threads. The calibration times the tile kernels on as many rows.
pub const TASK_ROWS: usize = 16;

/// Bytes of one Q8_K block (ik_llama.cpp's layout: f32 d, f32 sum, 256 × i8, 16 × i16).
pub const Q8K_BLOCK_BYTES: usize = scalar::Q8K_BYTES;

/// One family of kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimdPath {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl SimdPath {
    pub const ALL: [SimdPath; 4] = [
        SimdPath::Scalar,
        SimdPath::Avx2,
        SimdPath::Avx512,
        SimdPath::Neon,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            SimdPath::Scalar => "scalar",
            SimdPath::Avx2 => "avx2",
            SimdPath::Avx512 => "avx512",
            SimdPath::Neon => "neon",
        }
    }

    /// Parses `scalar|avx2|avx512|neon` (case-insensitive).
    pub fn from_name(name: &str) -> Option<SimdPath> {
        let n = name.trim().to_ascii_lowercase();
        SimdPath::ALL.into_iter().find(|p| p.name() == n)
    }

    /// Whether this CPU can run the path (detected once).
    pub fn is_available(&self) -> bool {
        let caps = caps();
        match self {
            SimdPath::Scalar => true,
            SimdPath::Avx2 => caps.avx2,
            SimdPath::Avx512 => caps.avx512,
            SimdPath::Neon => caps.neon,
        }
    }
}

impl std::fmt::Display for SimdPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Caps {
    avx2: bool,
    avx512: bool,
    neon: bool,
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    dotprod: bool,
}

fn caps() -> Caps {
    static CAPS: OnceLock<Caps> = OnceLock::new();
    *CAPS.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Caps {
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    Caps {
        avx2,
        avx512: avx2
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni"),
        ..Caps::default()
    }
}

#[cfg(target_arch = "aarch64")]
fn detect() -> Caps {
    Caps {
        neon: std::arch::is_aarch64_feature_detected!("neon"),
        dotprod: std::arch::is_aarch64_feature_detected!("dotprod"),
        ..Caps::default()
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> Caps {
    Caps::default()
}

/// Paths this CPU supports, slowest first (always starts with `Scalar`).
pub fn available_paths() -> Vec<SimdPath> {
    SimdPath::ALL
        .into_iter()
        .filter(|p| p.is_available())
        .collect()
}

/// The widest path this CPU has (AVX-512 over AVX2 over scalar; NEON on aarch64). Not
/// necessarily the fastest: `auto` times the candidates per kernel ([`choice`]).
pub fn best_path() -> SimdPath {
    *available_paths()
        .last()
        .expect("the scalar path is always available")
}

/// The widest path in use, fixed for the process: the one `IQK_RS_SIMD` forces, else
/// [`best_path`]. The quantizers' searches follow it (`crate::cpu`); the dot products run on
/// [`choice`]'s path, which is this one or a narrower one.
pub fn active_path() -> SimdPath {
    forced().unwrap_or_else(best_path)
}

/// The path `IQK_RS_SIMD` forces for this process, if any (read once).
pub fn forced() -> Option<SimdPath> {
    static FORCED: OnceLock<Option<SimdPath>> = OnceLock::new();
    *FORCED.get_or_init(|| forced_path(std::env::var("IQK_RS_SIMD").ok().as_deref()))
}

/// The path a value of `IQK_RS_SIMD` forces: `None` for `auto`, unset or empty, and (with a
/// warning on stderr) for a name that is not a path or a path the CPU lacks.
pub fn forced_path(env: Option<&str>) -> Option<SimdPath> {
    let want = match env.map(str::trim) {
        None | Some("") => return None,
        Some(v) if v.eq_ignore_ascii_case("auto") => return None,
        Some(v) => v,
    };
    match SimdPath::from_name(want) {
        Some(p) if p.is_available() => Some(p),
        Some(p) => {
            eprintln!("iqk_rs: IQK_RS_SIMD={want}: this CPU lacks the {p} path; using auto");
            None
        }
        None => {
            eprintln!(
                "iqk_rs: IQK_RS_SIMD={want} is not one of scalar|avx2|avx512|neon|auto; using auto"
            );
            None
        }
    }
}

/// The [`active_path`] a given value of `IQK_RS_SIMD` gives.
pub fn choose_path(env: Option<&str>) -> SimdPath {
    forced_path(env).unwrap_or_else(best_path)
}

/// The path `kind`'s kernel of `shape` runs on in this process, decided at the first call and
/// kept: the forced path, or the fastest of the CPU's paths timed on a small cache-resident
/// block (calibrated once per type and shape; well under a millisecond each).
pub fn choice(kind: DotType, shape: Shape) -> &'static Choice {
    static CHOICES: [[OnceLock<Choice>; Shape::ALL.len()]; DotType::ALL.len()] =
        [const { [const { OnceLock::new() }; Shape::ALL.len()] }; DotType::ALL.len()];
    let at = DotType::ALL
        .iter()
        .position(|&k| k == kind)
        .expect("every kind is in ALL");
    CHOICES[at][shape.index()].get_or_init(|| {
        let block = calibrate::Block::new(kind);
        decide(forced(), &available_paths(), |path| {
            calibrate::time_sample(&block, shape, path)
        })
    })
}

/// [`dot_fn`] on the path [`choice`] picks for `kind`'s single-row kernel.
pub fn auto_dot_fn(kind: DotType) -> DotFn {
    dot_fn(kind, choice(kind, Shape::Row).path)
}

/// [`rows_fn`] on the path [`choice`] picks for `kind`'s multi-row kernel.
pub fn auto_rows_fn(kind: DotType) -> RowsFn {
    rows_fn(kind, choice(kind, Shape::Rows).path)
}

/// [`tile_fn`] on the path [`choice`] picks for `kind`'s tile kernel.
pub fn auto_tile_fn(kind: DotType) -> TileFn {
    tile_fn(kind, choice(kind, Shape::Tile).path)
}

/// Kernels that take their kind as an argument, made one fn pointer per kind:
/// `P::at::<I>()` builds the pointer for `DotType::ALL[I]` (a closure that captured the kind
/// could not be a fn pointer).
trait PerKind {
    type Out;
    fn at<const I: usize>() -> Self::Out;
}

/// `P::at::<I>()` for `kind`'s index `I` in [`DotType::ALL`].
fn per_kind<P: PerKind>(kind: DotType) -> P::Out {
    match kind as usize {
        0 => P::at::<0>(),
        1 => P::at::<1>(),
        2 => P::at::<2>(),
        3 => P::at::<3>(),
        4 => P::at::<4>(),
        5 => P::at::<5>(),
        6 => P::at::<6>(),
        i => unreachable!("DotType {i} is missing from simd::per_kind"),
    }
}

// `per_kind` relies on `kind as usize` being the kind's index in `DotType::ALL` (and on
// covering every index), `ByRow` and `ByAct` on the same for `SimdPath`.
const _: () = {
    assert!(DotType::ALL.len() == 7, "simd::per_kind lists 7 kinds");
    let mut i = 0;
    while i < DotType::ALL.len() {
        assert!(DotType::ALL[i] as usize == i);
        i += 1;
    }
    let mut i = 0;
    while i < SimdPath::ALL.len() {
        assert!(SimdPath::ALL[i] as usize == i);
        i += 1;
    }
};

/// The scalar kernel of the kind `DotType::ALL[I]`.
struct ScalarDot;

impl PerKind for ScalarDot {
    type Out = DotFn;
    fn at<const I: usize>() -> DotFn {
        |r, q| scalar::vec_dot(DotType::ALL[I], r, q)
    }
}

/// Path `SimdPath::ALL[P]`'s single-row kernel run row by row (a [`RowsFn`]).
struct ByRow<const P: usize>;

impl<const P: usize> PerKind for ByRow<P> {
    type Out = RowsFn;
    fn at<const I: usize>() -> RowsFn {
        |r, q, o| by_row(DotType::ALL[I], SimdPath::ALL[P], r, q, o)
    }
}

/// Path `SimdPath::ALL[P]`'s multi-row kernel run per activation row (a [`TileFn`]).
struct ByAct<const P: usize>;

impl<const P: usize> PerKind for ByAct<P> {
    type Out = TileFn;
    fn at<const I: usize>() -> TileFn {
        |r, a, o| by_act(DotType::ALL[I], SimdPath::ALL[P], r, a, o)
    }
}

/// A dot-product kernel: one row's bytes (KS types start with the row scale) and that many
/// Q8_K blocks.
pub type DotFn = fn(&[u8], &[u8]) -> f32;

/// The kernel for `kind` on `path`. Panics if the CPU lacks `path` (check
/// [`SimdPath::is_available`] or use [`active_path`]).
pub fn dot_fn(kind: DotType, path: SimdPath) -> DotFn {
    assert!(
        path.is_available(),
        "SIMD path {path} is not available on this CPU"
    );
    match path {
        SimdPath::Scalar => scalar_fn(kind),
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx2 => x86::avx2(kind).dot,
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx512 => per_kind::<x86::Avx512Fn>(kind),
        #[cfg(target_arch = "aarch64")]
        SimdPath::Neon => arm::neon_fn(kind, caps().dotprod),
        #[allow(unreachable_patterns)]
        _ => unreachable!("{path} reported available on an architecture without it"),
    }
}

/// Dot product of one row with Q8_K activations on `path`: `row` is one row's bytes exactly
/// as stored (KS types begin with their row scale), `q8k` as many 296-byte Q8_K blocks as
/// the row has 256-weight blocks. Panics on mismatched lengths or a path the CPU lacks.
/// All paths return bit-identical results.
pub fn vec_dot(kind: DotType, path: SimdPath, row: &[u8], q8k: &[u8]) -> f32 {
    dot_fn(kind, path)(row, q8k)
}

/// A kernel over consecutive rows: `rows` holds `out.len()` rows (each as [`DotFn`] takes
/// one), all dotted with the same Q8_K activations. Results equal [`DotFn`]'s row by row.
pub type RowsFn = fn(&[u8], &[u8], &mut [f32]);

/// The multi-row kernel for `kind` on `path` (see [`RowsFn`]); matrix products use it, since
/// the rows share one set-up. Panics if the CPU lacks `path`.
pub fn rows_fn(kind: DotType, path: SimdPath) -> RowsFn {
    assert!(
        path.is_available(),
        "SIMD path {path} is not available on this CPU"
    );
    // Paths without a multi-row kernel run their single-row one row by row.
    match path {
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx2 => x86::avx2(kind).rows,
        SimdPath::Scalar => per_kind::<ByRow<{ SimdPath::Scalar as usize }>>(kind),
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx512 => per_kind::<x86::Avx512RowsFn>(kind),
        SimdPath::Neon => per_kind::<ByRow<{ SimdPath::Neon as usize }>>(kind),
        #[allow(unreachable_patterns)]
        _ => unreachable!("{path} reported available on an architecture without it"),
    }
}

/// A kernel over a tile: `rows` holds weight rows (as [`DotFn`] takes one), and
/// `out[r * acts.len() + j]` receives row r dotted with activation row j. Results equal
/// [`DotFn`]'s pair by pair.
pub type TileFn = fn(&[u8], &ActRows, &mut [f32]);

/// The tile kernel for `kind` on `path` (see [`TileFn`]); batched matrix products use it,
/// since the activation rows of a tile share the decoding of each weight superblock. Panics
/// if the CPU lacks `path`.
pub fn tile_fn(kind: DotType, path: SimdPath) -> TileFn {
    assert!(
        path.is_available(),
        "SIMD path {path} is not available on this CPU"
    );
    // The scalar path runs its multi-row kernel per activation row.
    match path {
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx2 => x86::avx2(kind).tile,
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx512 => per_kind::<x86::Avx512TileFn>(kind),
        SimdPath::Scalar => per_kind::<ByAct<{ SimdPath::Scalar as usize }>>(kind),
        #[cfg(target_arch = "aarch64")]
        SimdPath::Neon => arm::neon_tile_fn(kind, caps().dotprod),
        #[allow(unreachable_patterns)]
        _ => unreachable!("{path} reported available on an architecture without it"),
    }
}

fn by_act(kind: DotType, path: SimdPath, rows: &[u8], acts: &ActRows, out: &mut [f32]) {
    if acts.is_empty() {
        assert!(
            out.is_empty(),
            "{}: outputs without activation rows",
            kind.name()
        );
        return;
    }
    let (_, _, nrows) = scalar::check_tile(kind, rows, acts, out.len());
    let dot_rows = rows_fn(kind, path);
    let mut column = vec![0.0f32; nrows];
    for j in 0..acts.len() {
        dot_rows(rows, acts.row(j), &mut column);
        for (r, &v) in column.iter().enumerate() {
            out[r * acts.len() + j] = v;
        }
    }
}

fn by_row(kind: DotType, path: SimdPath, rows: &[u8], q8k: &[u8], out: &mut [f32]) {
    let (_, row_bytes) = scalar::check_rows(kind, rows, q8k, out.len());
    let dot = dot_fn(kind, path);
    // Indexed, not `chunks_exact`: rows of zero bytes (no blocks, K types) are valid.
    for (r, o) in out.iter_mut().enumerate() {
        *o = dot(&rows[r * row_bytes..(r + 1) * row_bytes], q8k);
    }
}

fn scalar_fn(kind: DotType) -> DotFn {
    per_kind::<ScalarDot>(kind)
}

/// Safe wrappers around the `#[target_feature]` kernels. They are private and only handed
/// out by [`dot_fn`], [`rows_fn`] and [`tile_fn`] after the CPU check, which is what makes
/// the `unsafe` calls sound.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{avx2, avx512, ActRows, DotFn, DotType, PerKind, RowsFn, TileFn};

    /// One kind's AVX2 kernels.
    pub(super) struct Avx2 {
        pub dot: DotFn,
        pub rows: RowsFn,
        pub tile: TileFn,
    }

    impl avx2::ForKind for Avx2 {
        type Out = Avx2;
        fn of<K: avx2::Avx2Kind>() -> Avx2 {
            // SAFETY (each): only reachable through `dot_fn`, `rows_fn` or `tile_fn`, which
            // checked the CPU features.
            Avx2 {
                dot: |r, q| unsafe { avx2::single::<K>(r, q) },
                rows: |r, q, o| unsafe { avx2::rows::<K>(r, q, o) },
                tile: |r, a, o| unsafe { avx2::tile::<K>(r, a, o) },
            }
        }
    }

    pub(super) fn avx2(kind: DotType) -> Avx2 {
        avx2::for_kind::<Avx2>(kind)
    }

    /// The AVX-512 kernels, in `DotType::ALL` order.
    const AVX512: [(DotType, Avx512Dot, Avx512Rows, Avx512Tile); 7] = [
        (
            DotType::Iq2K,
            avx512::vec_dot_iq2k,
            avx512::rows_iq2k,
            avx512::tile_iq2k,
        ),
        (
            DotType::Iq3K,
            avx512::vec_dot_iq3k,
            avx512::rows_iq3k,
            avx512::tile_iq3k,
        ),
        (
            DotType::Iq4K,
            avx512::vec_dot_iq4k,
            avx512::rows_iq4k,
            avx512::tile_iq4k,
        ),
        (
            DotType::Iq2Ks,
            avx512::vec_dot_iq2ks,
            avx512::rows_iq2ks,
            avx512::tile_iq2ks,
        ),
        (
            DotType::Iq3Ks,
            avx512::vec_dot_iq3ks,
            avx512::rows_iq3ks,
            avx512::tile_iq3ks,
        ),
        (
            DotType::Iq4Ks,
            avx512::vec_dot_iq4ks,
            avx512::rows_iq4ks,
            avx512::tile_iq4ks,
        ),
        (
            DotType::Iq5Ks,
            avx512::vec_dot_iq5ks,
            avx512::rows_iq5ks,
            avx512::tile_iq5ks,
        ),
    ];
    type Avx512Dot = unsafe fn(&[u8], &[u8]) -> f32;
    type Avx512Rows = unsafe fn(&[u8], &[u8], &mut [f32]);
    type Avx512Tile = unsafe fn(&[u8], &ActRows, &mut [f32]);

    const _: () = {
        let mut i = 0;
        while i < AVX512.len() {
            assert!(AVX512[i].0 as usize == i, "AVX512 is in DotType::ALL order");
            i += 1;
        }
    };

    /// One kind's AVX-512 single-row kernel.
    pub(super) struct Avx512Fn;

    impl PerKind for Avx512Fn {
        type Out = DotFn;
        fn at<const I: usize>() -> DotFn {
            // SAFETY: only reachable through `dot_fn`, which checked the CPU features.
            |r, q| unsafe { (AVX512[I].1)(r, q) }
        }
    }

    /// One kind's AVX-512 multi-row kernel.
    pub(super) struct Avx512RowsFn;

    impl PerKind for Avx512RowsFn {
        type Out = RowsFn;
        fn at<const I: usize>() -> RowsFn {
            // SAFETY: only reachable through `rows_fn`, which checked the CPU features.
            |r, q, o| unsafe { (AVX512[I].2)(r, q, o) }
        }
    }

    /// One kind's AVX-512 tile kernel.
    pub(super) struct Avx512TileFn;

    impl PerKind for Avx512TileFn {
        type Out = TileFn;
        fn at<const I: usize>() -> TileFn {
            // SAFETY: only reachable through `tile_fn`, which checked the CPU features.
            |r, a, o| unsafe { (AVX512[I].3)(r, a, o) }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{neon, per_kind, ActRows, DotFn, DotType, PerKind, TileFn};

    type NeonDot = unsafe fn(&[u8], &[u8]) -> f32;
    type NeonTile = unsafe fn(&[u8], &ActRows, &mut [f32]);

    /// The NEON kernels in `DotType::ALL` order: row kernel plain and with `dotprod`, tile
    /// kernel plain and with `dotprod`.
    const NEON: [(DotType, NeonDot, NeonDot, NeonTile, NeonTile); 7] = [
        (
            DotType::Iq2K,
            neon::vec_dot_iq2k,
            neon::vec_dot_iq2k_dotprod,
            neon::tile_iq2k,
            neon::tile_iq2k_dotprod,
        ),
        (
            DotType::Iq3K,
            neon::vec_dot_iq3k,
            neon::vec_dot_iq3k_dotprod,
            neon::tile_iq3k,
            neon::tile_iq3k_dotprod,
        ),
        (
            DotType::Iq4K,
            neon::vec_dot_iq4k,
            neon::vec_dot_iq4k_dotprod,
            neon::tile_iq4k,
            neon::tile_iq4k_dotprod,
        ),
        (
            DotType::Iq2Ks,
            neon::vec_dot_iq2ks,
            neon::vec_dot_iq2ks_dotprod,
            neon::tile_iq2ks,
            neon::tile_iq2ks_dotprod,
        ),
        (
            DotType::Iq3Ks,
            neon::vec_dot_iq3ks,
            neon::vec_dot_iq3ks_dotprod,
            neon::tile_iq3ks,
            neon::tile_iq3ks_dotprod,
        ),
        (
            DotType::Iq4Ks,
            neon::vec_dot_iq4ks,
            neon::vec_dot_iq4ks_dotprod,
            neon::tile_iq4ks,
            neon::tile_iq4ks_dotprod,
        ),
        (
            DotType::Iq5Ks,
            neon::vec_dot_iq5ks,
            neon::vec_dot_iq5ks_dotprod,
            neon::tile_iq5ks,
            neon::tile_iq5ks_dotprod,
        ),
    ];

    const _: () = {
        let mut i = 0;
        while i < NEON.len() {
            assert!(NEON[i].0 as usize == i, "NEON is in DotType::ALL order");
            i += 1;
        }
    };

    /// One kind's NEON row kernel (`DOTPROD`: the `sdot` variant).
    struct NeonDotFn<const DOTPROD: bool>;

    impl<const DOTPROD: bool> PerKind for NeonDotFn<DOTPROD> {
        type Out = DotFn;
        fn at<const I: usize>() -> DotFn {
            // SAFETY (both): only reachable through `dot_fn`, which checked the CPU features.
            let plain: DotFn = |r, q| unsafe { (NEON[I].1)(r, q) };
            let dotprod: DotFn = |r, q| unsafe { (NEON[I].2)(r, q) };
            if DOTPROD {
                dotprod
            } else {
                plain
            }
        }
    }

    /// One kind's NEON tile kernel (`DOTPROD`: the `sdot` variant).
    struct NeonTileFn<const DOTPROD: bool>;

    impl<const DOTPROD: bool> PerKind for NeonTileFn<DOTPROD> {
        type Out = TileFn;
        fn at<const I: usize>() -> TileFn {
            // SAFETY (both): only reachable through `tile_fn`, which checked the CPU features.
            let plain: TileFn = |r, a, o| unsafe { (NEON[I].3)(r, a, o) };
            let dotprod: TileFn = |r, a, o| unsafe { (NEON[I].4)(r, a, o) };
            if DOTPROD {
                dotprod
            } else {
                plain
            }
        }
    }

    pub(super) fn neon_fn(kind: DotType, dotprod: bool) -> DotFn {
        if dotprod {
            per_kind::<NeonDotFn<true>>(kind)
        } else {
            per_kind::<NeonDotFn<false>>(kind)
        }
    }

    pub(super) fn neon_tile_fn(kind: DotType, dotprod: bool) -> TileFn {
        if dotprod {
            per_kind::<NeonTileFn<true>>(kind)
        } else {
            per_kind::<NeonTileFn<false>>(kind)
        }
    }
}
