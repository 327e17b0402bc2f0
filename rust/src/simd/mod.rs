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

/// One closure per kind calling `f(kind, extra.., args..)`, coerced to a fn pointer (a closure
/// that captured `kind` could not be): `per_kind!(kind, |r, q| f(EXTRA))`. The extra
/// arguments must be constants for the same reason.
macro_rules! per_kind {
    ($kind:expr, |$($arg:ident),*| $($f:ident)::+($($extra:expr),*)) => {
        match $kind {
            DotType::Iq2K => |$($arg),*| $($f)::+(DotType::Iq2K, $($extra,)* $($arg),*),
            DotType::Iq3K => |$($arg),*| $($f)::+(DotType::Iq3K, $($extra,)* $($arg),*),
            DotType::Iq4K => |$($arg),*| $($f)::+(DotType::Iq4K, $($extra,)* $($arg),*),
            DotType::Iq2Ks => |$($arg),*| $($f)::+(DotType::Iq2Ks, $($extra,)* $($arg),*),
            DotType::Iq3Ks => |$($arg),*| $($f)::+(DotType::Iq3Ks, $($extra,)* $($arg),*),
            DotType::Iq4Ks => |$($arg),*| $($f)::+(DotType::Iq4Ks, $($extra,)* $($arg),*),
            DotType::Iq5Ks => |$($arg),*| $($f)::+(DotType::Iq5Ks, $($extra,)* $($arg),*),
        }
    };
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
        SimdPath::Avx512 => x86::avx512_fn(kind),
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
        SimdPath::Scalar => per_kind!(kind, |r, q, o| by_row(SimdPath::Scalar)),
        SimdPath::Avx512 => per_kind!(kind, |r, q, o| by_row(SimdPath::Avx512)),
        SimdPath::Neon => per_kind!(kind, |r, q, o| by_row(SimdPath::Neon)),
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
    // Paths without a tile kernel run their multi-row one per activation row.
    match path {
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx2 => x86::avx2(kind).tile,
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx512 => x86::avx512_tile_fn(kind),
        SimdPath::Scalar => per_kind!(kind, |r, a, o| by_act(SimdPath::Scalar)),
        SimdPath::Neon => per_kind!(kind, |r, a, o| by_act(SimdPath::Neon)),
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
    per_kind!(kind, |r, q| scalar::vec_dot())
}

/// Safe wrappers around the `#[target_feature]` kernels. They are private and only handed
/// out by [`dot_fn`], [`rows_fn`] and [`tile_fn`] after the CPU check, which is what makes
/// the `unsafe` calls sound.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{avx2, avx512, ActRows, DotFn, DotType, RowsFn, TileFn};

    macro_rules! wrap {
        ($m:ident, $f:ident) => {
            |r: &[u8], q: &[u8]| -> f32 {
                // SAFETY: only reachable through `dot_fn`, which checked the CPU features.
                unsafe { $m::$f(r, q) }
            }
        };
    }

    macro_rules! wrap_tile {
        ($m:ident, $f:ident) => {
            |r: &[u8], a: &ActRows, o: &mut [f32]| {
                // SAFETY: only reachable through `tile_fn`, which checked the CPU features.
                unsafe { $m::$f(r, a, o) }
            }
        };
    }

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

    pub(super) fn avx512_tile_fn(kind: DotType) -> TileFn {
        match kind {
            DotType::Iq2K => wrap_tile!(avx512, tile_iq2k),
            DotType::Iq3K => wrap_tile!(avx512, tile_iq3k),
            DotType::Iq4K => wrap_tile!(avx512, tile_iq4k),
            DotType::Iq2Ks => wrap_tile!(avx512, tile_iq2ks),
            DotType::Iq3Ks => wrap_tile!(avx512, tile_iq3ks),
            DotType::Iq4Ks => wrap_tile!(avx512, tile_iq4ks),
            DotType::Iq5Ks => wrap_tile!(avx512, tile_iq5ks),
        }
    }

    pub(super) fn avx512_fn(kind: DotType) -> DotFn {
        match kind {
            DotType::Iq2K => wrap!(avx512, vec_dot_iq2k),
            DotType::Iq3K => wrap!(avx512, vec_dot_iq3k),
            DotType::Iq4K => wrap!(avx512, vec_dot_iq4k),
            DotType::Iq2Ks => wrap!(avx512, vec_dot_iq2ks),
            DotType::Iq3Ks => wrap!(avx512, vec_dot_iq3ks),
            DotType::Iq4Ks => wrap!(avx512, vec_dot_iq4ks),
            DotType::Iq5Ks => wrap!(avx512, vec_dot_iq5ks),
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{neon, DotFn, DotType};

    macro_rules! wrap {
        ($f:ident) => {
            |r: &[u8], q: &[u8]| -> f32 {
                // SAFETY: only reachable through `dot_fn`, which checked the CPU features.
                unsafe { neon::$f(r, q) }
            }
        };
    }

    pub(super) fn neon_fn(kind: DotType, dotprod: bool) -> DotFn {
        match (kind, dotprod) {
            (DotType::Iq2K, false) => wrap!(vec_dot_iq2k),
            (DotType::Iq3K, false) => wrap!(vec_dot_iq3k),
            (DotType::Iq4K, false) => wrap!(vec_dot_iq4k),
            (DotType::Iq2Ks, false) => wrap!(vec_dot_iq2ks),
            (DotType::Iq3Ks, false) => wrap!(vec_dot_iq3ks),
            (DotType::Iq4Ks, false) => wrap!(vec_dot_iq4ks),
            (DotType::Iq5Ks, false) => wrap!(vec_dot_iq5ks),
            (DotType::Iq2K, true) => wrap!(vec_dot_iq2k_dotprod),
            (DotType::Iq3K, true) => wrap!(vec_dot_iq3k_dotprod),
            (DotType::Iq4K, true) => wrap!(vec_dot_iq4k_dotprod),
            (DotType::Iq2Ks, true) => wrap!(vec_dot_iq2ks_dotprod),
            (DotType::Iq3Ks, true) => wrap!(vec_dot_iq3ks_dotprod),
            (DotType::Iq4Ks, true) => wrap!(vec_dot_iq4ks_dotprod),
            (DotType::Iq5Ks, true) => wrap!(vec_dot_iq5ks_dotprod),
        }
    }
}
