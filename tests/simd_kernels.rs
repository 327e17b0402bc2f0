//! Every SIMD path this CPU supports against the scalar twins (bit-identical), and the scalar
//! twins against the exact float64 dot products of the golden vectors.
//!
//! NEON is exercised on x86-64 machines by `scripts/neon_test.sh` (qemu), which runs the same
//! generators through `rust/src/simd/neon_harness.rs`.

use iqk_rs::simd::{self, DotType, SimdPath};

#[allow(dead_code, unused_imports)]
#[path = "../rust/src/simd/scalar.rs"]
mod scalar;
#[path = "../rust/src/simd/testgen.rs"]
mod testgen;

use testgen::{
    f16_moderate, layout, make_q8k, make_row, random_case, read_f64s, same, Act, Fill, Rng,
    GOLDEN_CASES,
};

fn golden_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden")
}

fn to_scalar_kind(kind: DotType) -> scalar::DotType {
    // The crate's DotType is this file's, compiled twice: same variants in the same order.
    let at = DotType::ALL.iter().position(|&k| k == kind).unwrap();
    scalar::DotType::ALL[at]
}

fn simd_paths() -> Vec<SimdPath> {
    simd::available_paths()
        .into_iter()
        .filter(|p| *p != SimdPath::Scalar)
        .collect()
}

#[test]
fn reports_paths() {
    let paths = simd::available_paths();
    assert_eq!(paths[0], SimdPath::Scalar);
    eprintln!(
        "available SIMD paths: {:?}; active: {}",
        paths.iter().map(|p| p.name()).collect::<Vec<_>>(),
        simd::active_path()
    );
    assert!(simd::active_path().is_available());
    // The widest path the CPU has (ALL is ordered narrowest first); `auto` times the
    // candidates per kernel (see the calibration tests below).
    assert_eq!(simd::best_path(), *paths.last().unwrap());
    #[cfg(target_arch = "x86_64")]
    assert!(
        paths.contains(&SimdPath::Avx2) || !std::is_x86_feature_detected!("avx2"),
        "AVX2 CPU without the AVX2 path"
    );
}

#[test]
fn env_override_and_fallback() {
    let best = simd::best_path();
    assert_eq!(simd::choose_path(None), best);
    assert_eq!(simd::choose_path(Some("auto")), best);
    assert_eq!(simd::choose_path(Some("")), best);
    assert_eq!(simd::choose_path(Some("scalar")), SimdPath::Scalar);
    assert_eq!(simd::choose_path(Some(" SCALAR ")), SimdPath::Scalar);
    assert_eq!(simd::choose_path(Some("bogus")), best);
    for p in SimdPath::ALL {
        let got = simd::choose_path(Some(p.name()));
        if p.is_available() {
            assert_eq!(got, p);
        } else {
            assert_eq!(got, best, "{p} unavailable must fall back");
        }
        assert_eq!(SimdPath::from_name(p.name()), Some(p));
    }
}

/// `IQK_RS_SIMD` forces a path the CPU has; `auto`, unset, empty, unknown names and paths the
/// CPU lacks force nothing (the last two with a warning), so `auto` calibrates.
#[test]
fn forced_path_from_env() {
    for env in [None, Some(""), Some("auto"), Some(" AUTO "), Some("bogus")] {
        assert_eq!(simd::forced_path(env), None, "{env:?}");
    }
    for p in SimdPath::ALL {
        let want = p.is_available().then_some(p);
        assert_eq!(simd::forced_path(Some(p.name())), want, "{p}");
    }
    assert_eq!(simd::forced_path(Some(" SCALAR ")), Some(SimdPath::Scalar));
}

/// A fake clock: each path's successive samples, repeated from the start when used up; counts
/// the calls per path.
struct FakeClock {
    samples: Vec<(SimdPath, Vec<f64>)>,
    calls: std::collections::HashMap<SimdPath, usize>,
}

impl FakeClock {
    fn new(samples: &[(SimdPath, &[f64])]) -> FakeClock {
        FakeClock {
            samples: samples.iter().map(|(p, t)| (*p, t.to_vec())).collect(),
            calls: Default::default(),
        }
    }

    fn time(&mut self, path: SimdPath) -> f64 {
        let n = self.calls.entry(path).or_default();
        let (_, seq) = self.samples.iter().find(|(p, _)| *p == path).unwrap();
        let t = seq[*n % seq.len()];
        *n += 1;
        t
    }
}

const ALL3: [SimdPath; 3] = [SimdPath::Scalar, SimdPath::Avx2, SimdPath::Avx512];

/// The calibration keeps the path with the smallest time, even the narrowest one.
#[test]
fn calibration_picks_the_fastest_even_scalar() {
    let mut clock = FakeClock::new(&[
        (SimdPath::Scalar, &[1.0]),
        (SimdPath::Avx2, &[1.5]),
        (SimdPath::Avx512, &[1.8]),
    ]);
    let (path, timings) = simd::pick_fastest(&ALL3, 5, |p| clock.time(p));
    assert_eq!(path, SimdPath::Scalar);
    assert_eq!(
        timings,
        vec![
            (SimdPath::Scalar, 1.0),
            (SimdPath::Avx2, 1.5),
            (SimdPath::Avx512, 1.8)
        ]
    );
    let mut clock = FakeClock::new(&[
        (SimdPath::Scalar, &[30.0]),
        (SimdPath::Avx2, &[2.0]),
        (SimdPath::Avx512, &[3.0]),
    ]);
    assert_eq!(
        simd::pick_fastest(&ALL3, 5, |p| clock.time(p)).0,
        SimdPath::Avx2
    );
}

/// Equal times give the wider path, whatever the candidates' values, so the same timings
/// always give the same choice.
#[test]
fn calibration_ties_go_to_the_wider_path() {
    for t in [1.0, 7.0, 0.0] {
        let mut clock = FakeClock::new(&[
            (SimdPath::Scalar, &[t]),
            (SimdPath::Avx2, &[t]),
            (SimdPath::Avx512, &[t]),
        ]);
        assert_eq!(
            simd::pick_fastest(&ALL3, 3, |p| clock.time(p)).0,
            SimdPath::Avx512
        );
        let mut clock = FakeClock::new(&[(SimdPath::Scalar, &[t]), (SimdPath::Avx2, &[t])]);
        let two = [SimdPath::Scalar, SimdPath::Avx2];
        assert_eq!(
            simd::pick_fastest(&two, 3, |p| clock.time(p)).0,
            SimdPath::Avx2
        );
    }
}

/// The best of several samples counts: a slow outlier (an interrupt) does not lose a path its
/// place, and one warm-up call per path is not counted.
#[test]
fn calibration_takes_the_best_sample() {
    // AVX-512: warm-up 100, then 50 (interrupted), then 2.0 steadily; AVX2 3.0 steadily.
    let mut clock = FakeClock::new(&[
        (SimdPath::Avx2, &[3.0]),
        (SimdPath::Avx512, &[100.0, 50.0, 2.0, 2.0, 2.0, 2.0]),
    ]);
    let two = [SimdPath::Avx2, SimdPath::Avx512];
    let (path, timings) = simd::pick_fastest(&two, 5, |p| clock.time(p));
    assert_eq!(path, SimdPath::Avx512);
    assert_eq!(timings[1], (SimdPath::Avx512, 2.0));
    assert_eq!(clock.calls[&SimdPath::Avx512], 1 + 5);
    // A warm-up that looks fastest is not a sample.
    let mut clock = FakeClock::new(&[
        (SimdPath::Avx2, &[0.1, 3.0, 3.0, 3.0, 3.0, 3.0]),
        (SimdPath::Avx512, &[2.0]),
    ]);
    assert_eq!(
        simd::pick_fastest(&two, 5, |p| clock.time(p)).0,
        SimdPath::Avx512
    );
}

/// A path more than twice as slow as the best so far gets one sample after its warm-up, and
/// one whose warm-up is more than 8 times the best none: that keeps the scalar path from
/// dominating the calibration's cost.
#[test]
fn calibration_stops_timing_a_hopeless_path() {
    for (scalar, calls) in [(40.0, 1), (5.0, 1 + 1), (3.0, 1 + 7)] {
        let mut clock = FakeClock::new(&[
            (SimdPath::Scalar, &[scalar]),
            (SimdPath::Avx2, &[2.0]),
            (SimdPath::Avx512, &[3.0]),
        ]);
        let (path, timings) = simd::pick_fastest(&ALL3, 7, |p| clock.time(p));
        assert_eq!(path, SimdPath::Avx2);
        assert_eq!(timings[0], (SimdPath::Scalar, scalar));
        assert_eq!(clock.calls[&SimdPath::Avx512], 1 + 7);
        assert_eq!(clock.calls[&SimdPath::Avx2], 1 + 7);
        assert_eq!(clock.calls[&SimdPath::Scalar], calls, "scalar at {scalar}");
    }
}

/// A forced path wins without timing anything; a single candidate needs no timing either.
#[test]
fn decide_respects_the_forced_path() {
    let never = |p: SimdPath| -> f64 { panic!("{p} timed although the choice was fixed") };
    let c = simd::decide(Some(SimdPath::Scalar), &ALL3, never);
    assert_eq!(
        (c.path, c.how, c.candidates.clone()),
        (
            SimdPath::Scalar,
            simd::Picked::Forced,
            vec![SimdPath::Scalar]
        )
    );
    assert!(c.timings_ns.is_empty());
    let c = simd::decide(None, &[SimdPath::Scalar], never);
    assert_eq!((c.path, c.how), (SimdPath::Scalar, simd::Picked::Only));
    let mut clock = FakeClock::new(&[
        (SimdPath::Scalar, &[1.0]),
        (SimdPath::Avx2, &[4.0]),
        (SimdPath::Avx512, &[4.0]),
    ]);
    let c = simd::decide(None, &ALL3, |p| clock.time(p));
    assert_eq!(
        (c.path, c.how),
        (SimdPath::Scalar, simd::Picked::Calibrated)
    );
    assert_eq!(c.timings_ns.len(), 3);
}

/// On this machine: every (type, shape) gets a path the CPU has (the forced one when
/// `IQK_RS_SIMD` forces one), calibrated with real timings of every candidate, at a small
/// total cost; the kernels `auto` hands out give the same results as the scalar twin.
#[test]
fn calibration_on_this_machine() {
    let mut total_ns = 0u64;
    for kind in DotType::ALL {
        for shape in simd::Shape::ALL {
            let c = simd::choice(kind, shape);
            assert!(c.path.is_available());
            assert!(c.candidates.contains(&c.path));
            match simd::forced() {
                Some(p) => assert_eq!((c.path, c.how), (p, simd::Picked::Forced)),
                None if simd::available_paths().len() == 1 => {
                    assert_eq!(c.how, simd::Picked::Only)
                }
                None => {
                    assert_eq!(c.how, simd::Picked::Calibrated);
                    assert_eq!(c.candidates, simd::available_paths());
                    let best = c
                        .timings_ns
                        .iter()
                        .map(|t| t.1)
                        .fold(f64::INFINITY, f64::min);
                    let own = c.timings_ns.iter().find(|t| t.0 == c.path).unwrap().1;
                    assert_eq!(own, best);
                }
            }
            eprintln!(
                "{:7} {:5} -> {:7} ({}; {:?}; {} us)",
                kind.name(),
                shape.name(),
                c.path.name(),
                c.how.name(),
                c.timings_ns,
                c.cost_ns / 1000
            );
            total_ns += c.cost_ns;
        }
    }
    eprintln!("calibration in total: {} us", total_ns / 1000);
    // A real machine takes about 1.5 ms. The bound only catches a calibration gone wrong (say,
    // blocks far out of cache or samples without end): these tests also run in Bochs
    // (scripts/avx512_test.sh), at 25 M instructions per second of guest time.
    assert!(total_ns < 20_000_000_000, "calibration took {total_ns} ns");

    let mut rng = Rng::new(99);
    for kind in DotType::ALL {
        let (row, q8) = random_case(to_scalar_kind(kind), &mut rng, 5);
        let want = simd::vec_dot(kind, SimdPath::Scalar, &row, &q8);
        assert!(same(simd::auto_dot_fn(kind)(&row, &q8), want));
        let mut got = [0.0f32];
        simd::auto_rows_fn(kind)(&row, &q8, &mut got);
        assert!(same(got[0], want));
        simd::auto_tile_fn(kind)(&row, &simd::ActRows::new(&q8, 1), &mut got);
        assert!(same(got[0], want));
    }
}

#[test]
#[should_panic(expected = "does not match")]
fn length_mismatch_panics() {
    let row = vec![0u8; 76];
    let q8 = vec![0u8; 2 * simd::Q8K_BLOCK_BYTES];
    simd::vec_dot(DotType::Iq2K, SimdPath::Scalar, &row, &q8);
}

#[test]
fn unavailable_path_panics() {
    for p in SimdPath::ALL {
        if !p.is_available() {
            let r = std::panic::catch_unwind(|| simd::dot_fn(DotType::Iq4K, p));
            assert!(
                r.is_err(),
                "{p} is unavailable but dot_fn returned a kernel"
            );
        }
    }
}

/// Randomized block bytes: sweeps of every header byte value (all scale codes, shift bits,
/// sign bits), random bytes, special fp16 / f32 scales (±0, subnormals, ±65504, ±inf, NaN),
/// extreme activations (-128 / 127 only, all -128, all 127).
#[test]
fn random_blocks_every_path_equals_scalar() {
    let paths = simd_paths();
    eprintln!("checking paths {:?}", paths);
    for kind in DotType::ALL {
        let mut rng = Rng::new(0x1234_5678 ^ kind as u64);
        let mut checked = 0usize;
        for case in 0..3000 {
            let (row, q8) = random_case(to_scalar_kind(kind), &mut rng, case);
            let want = simd::vec_dot(kind, SimdPath::Scalar, &row, &q8);
            let twin = scalar::vec_dot(to_scalar_kind(kind), &row, &q8);
            assert!(same(want, twin));
            for &p in &paths {
                let got = simd::vec_dot(kind, p, &row, &q8);
                assert!(
                    same(got, want),
                    "{kind:?} {p} case {case}: {got:e} != scalar {want:e} (row {} bytes)",
                    row.len()
                );
                checked += 1;
            }
        }
        eprintln!("{kind:?}: {checked} randomized kernel results bit-identical to scalar");
    }
}

/// Exact integer arithmetic: the scalar twin equals an independent i64/f64 evaluation of the
/// decoded weights (`scalar::sumi_*` are the decoders) with no overflow for maximal inputs.
#[test]
fn extreme_inputs_do_not_overflow() {
    // All-zero quant bytes select each table's most negative value; header bytes 0x00 / 0xff
    // give the largest |scale| of both signs; activations all -128 or all 127.
    for kind in DotType::ALL {
        let sk = to_scalar_kind(kind);
        for header in [0x00u8, 0xff, 0xfe, 0x55, 0xaa] {
            for act in [testgen::Act::AllMin, testgen::Act::AllMax] {
                let mut rng = Rng::new(header as u64);
                let mut row = testgen::make_row(sk, &mut rng, 2, &|_| testgen::Fill::Sweep(header));
                // Sane scales so the result is finite and comparable.
                let (dend, _, _) = testgen::layout(sk);
                let meta = kind_meta(kind);
                if dend == 2 {
                    for b in 0..2 {
                        let off = meta + b * sk.block_bytes();
                        row[off..off + 2].copy_from_slice(&0x3c00u16.to_le_bytes());
                    }
                }
                match sk.layout().row_scale {
                    scalar::RowScale::F16 => row[0..2].copy_from_slice(&0x3c00u16.to_le_bytes()),
                    scalar::RowScale::F32 => row[0..4].copy_from_slice(&1.0f32.to_le_bytes()),
                    scalar::RowScale::None => {}
                }
                let mut q8 = testgen::make_q8k(&mut rng, 2, &|_| act);
                for y in q8.chunks_exact_mut(simd::Q8K_BLOCK_BYTES) {
                    y[0..4].copy_from_slice(&1.0f32.to_le_bytes());
                }
                let want = simd::vec_dot(kind, SimdPath::Scalar, &row, &q8);
                assert!(want.is_finite());
                for p in simd_paths() {
                    let got = simd::vec_dot(kind, p, &row, &q8);
                    assert!(
                        same(got, want),
                        "{kind:?} {p} header {header:#x} {act:?}: {got} != {want}"
                    );
                }
            }
        }
    }
}

fn kind_meta(kind: DotType) -> usize {
    to_scalar_kind(kind).row_meta()
}

fn type_file(kind: DotType) -> &'static str {
    to_scalar_kind(kind).name()
}

/// ik_llama.cpp's dequantized dot, emulated: weights `fl32(fl32(d·s)·v)` as ik's
/// dequantizers compute them, activations `d8·q` and products in f64 (how `*.im.dot.f64`
/// was made). Returns (that dot, the exact mathematical dot with unrounded weights, Σ|terms|).
fn emulate_ik_dot(kind: DotType, row: &[u8], q8: &[u8]) -> (f64, f64, f64) {
    let sk = to_scalar_kind(kind);
    let meta = sk.row_meta();
    let bb = sk.block_bytes();
    let d_row = scalar::row_scale(sk, row);
    let mut dec = scalar::Decoded::new();
    let (mut dot, mut math, mut mag) = (0.0f64, 0.0f64, 0.0f64);
    for (i, y) in q8.chunks_exact(simd::Q8K_BLOCK_BYTES).enumerate() {
        let x = &row[meta + i * bb..meta + (i + 1) * bb];
        scalar::decode(sk, x, &mut dec);
        let dw = if meta == 0 {
            scalar::block_scale(sk, x)
        } else {
            d_row
        };
        let d8 = scalar::rd_f32(y, 0);
        let mut sumi = 0i64;
        for j in 0..256 {
            let w = (dw * dec.scales[j / 16] as f32) * dec.values[j] as f32;
            let q = (y[8 + j] as i8) as i64;
            let t = w as f64 * (d8 as f64 * q as f64);
            dot += t;
            mag += t.abs();
            sumi += dec.scales[j / 16] as i64 * dec.values[j] as i64 * q;
        }
        // dw·d8 is exact in f64 (11 + 24 bits, or 24 + 24); one rounding for ·sumi.
        math += dw as f64 * d8 as f64 * sumi as f64;
    }
    (dot, math, mag)
}

/// The golden vectors. (1) The decoders reproduce ik's dequantization: the emulated dot
/// equals `*.im.dot.f64` to 1e-12 of the row's Σ|terms|. (2) The scalar kernel is within
/// 1e-6 relative of the exact mathematical dot; that differs from `*.im.dot.f64` only by the
/// f32 rounding ik's dequantizer applies to each weight (IQ4_KS: f32 row scale × 7-bit
/// scale × value), <= 1.5·2^-23 of Σ|terms|. (3) Every SIMD path is bit-identical to scalar.
#[test]
fn golden_cases() {
    let dir = golden_dir();
    let paths = simd_paths();
    let (mut worst_emu, mut worst_rel, mut worst_vs_file, mut rows) =
        (0.0f64, 0.0f64, 0.0f64, 0usize);
    for (case, nrows, ncols) in GOLDEN_CASES {
        let q8 = std::fs::read(dir.join(case).join("act.q8k.bin")).unwrap();
        assert_eq!(q8.len(), ncols / 256 * simd::Q8K_BLOCK_BYTES);
        for kind in DotType::ALL {
            let t = type_file(kind);
            let data = std::fs::read(dir.join(case).join(format!("{t}.im.bin"))).unwrap();
            let exact =
                read_f64s(&std::fs::read(dir.join(case).join(format!("{t}.im.dot.f64"))).unwrap());
            let rb = to_scalar_kind(kind).row_bytes(ncols);
            assert_eq!(data.len(), nrows * rb, "{case} {t}");
            assert_eq!(exact.len(), nrows);
            for r in 0..nrows {
                let row = &data[r * rb..(r + 1) * rb];
                let e = exact[r];
                let (emu, math, mag) = emulate_ik_dot(kind, row, &q8);
                worst_emu = worst_emu.max((emu - e).abs() / mag.max(f64::MIN_POSITIVE));
                assert!(
                    (emu - e).abs() <= 1e-12 * mag,
                    "{case} {t} row {r}: decoded dot {emu:e} != ik's {e:e}"
                );
                // ik's per-weight f32 rounding is the only difference between math and e.
                assert!((math - e).abs() <= 1.5 * f32::EPSILON as f64 * mag);
                let got = simd::vec_dot(kind, SimdPath::Scalar, row, &q8);
                let err = (got as f64 - math).abs();
                assert!(
                    err <= 1e-6 * math.abs(),
                    "{case} {t} row {r}: scalar {got:e} vs exact {math:e}"
                );
                if math != 0.0 {
                    worst_rel = worst_rel.max(err / math.abs());
                    worst_vs_file = worst_vs_file.max((got as f64 - e).abs() / e.abs());
                }
                rows += 1;
                for &p in &paths {
                    let g = simd::vec_dot(kind, p, row, &q8);
                    assert!(
                        same(g, got),
                        "{case} {t} row {r} {p}: {g:e} != scalar {got:e}"
                    );
                }
            }
        }
    }
    eprintln!(
        "golden: {rows} rows; decoded-vs-ik worst {worst_emu:e} of Σ|terms|; \
         scalar vs exact math worst relative {worst_rel:e}; vs *.im.dot.f64 {worst_vs_file:e}"
    );
}

/// Kernels handed out by `dot_fn` are the same as `vec_dot`.
#[test]
fn dot_fn_matches_vec_dot() {
    let mut rng = Rng::new(99);
    for kind in DotType::ALL {
        let (row, q8) = random_case(to_scalar_kind(kind), &mut rng, 2);
        for p in simd::available_paths() {
            let f = simd::dot_fn(kind, p);
            assert!(same(f(&row, &q8), simd::vec_dot(kind, p, &row, &q8)));
        }
    }
}

/// The multi-row kernels (`rows_fn`, used by the matrix products) give, row by row, exactly
/// the single-row scalar results: every path, 0 to 5 and 17 rows, 1 to 9 superblocks per row
/// (every remainder of the groups of four) and 133 (a long row).
#[test]
fn rows_fn_equals_row_by_row_scalar() {
    let mut rng = Rng::new(0x5eed_0005);
    for kind in DotType::ALL {
        let sk = to_scalar_kind(kind);
        for nb in (1..=9).chain([133]) {
            let mut q8 = make_q8k(&mut rng, nb, &|_| Act::Random);
            // Moderate activation scales (the other tests cover the extreme ones).
            for y in q8.chunks_exact_mut(simd::Q8K_BLOCK_BYTES) {
                y[0..4].copy_from_slice(&(0.01 + 0.01 * rng.unit()).to_le_bytes());
            }
            for nrows in [0, 1, 2, 3, 4, 5, 17] {
                let rows: Vec<Vec<u8>> = (0..nrows)
                    .map(|r| {
                        let mut row = make_row(sk, &mut rng, nb, &|i| {
                            if r % 2 == 0 {
                                Fill::Random
                            } else {
                                Fill::Sweep((31 * i + r) as u8)
                            }
                        });
                        // Every third row keeps the special scales (±inf, NaN, subnormals);
                        // the others get moderate ones, so that long rows stay finite.
                        if r % 3 != 2 {
                            moderate_scales(sk, &mut row, &mut rng);
                        }
                        row
                    })
                    .collect();
                let want: Vec<f32> = rows.iter().map(|r| scalar::vec_dot(sk, r, &q8)).collect();
                assert!(
                    nrows < 2 || want.iter().any(|w| w.is_finite() && *w != 0.0),
                    "{kind:?} {nb} blocks: {want:?}"
                );
                let all = rows.concat();
                for p in simd::available_paths() {
                    let mut got = vec![f32::NAN; nrows];
                    simd::rows_fn(kind, p)(&all, &q8, &mut got);
                    for (r, (&g, &w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            same(g, w),
                            "{kind:?} {p}: row {r} of {nrows} ({nb} blocks): {g:e} != {w:e}"
                        );
                    }
                }
            }
        }
    }
}

/// The tile kernels (`tile_fn`, used by batched matrix products) give, pair by pair, exactly
/// the single-row scalar results: every path; 1 to 9 and 17 activation rows (on AVX2: one row
/// alone, groups of eight and every remainder); 0, 1, 3 and 17 weight rows; 1, 2 and 5
/// superblocks; activations with and without -128 (without, the AVX2 4-bit kernels take a
/// cheaper sign trick).
#[test]
fn tile_fn_equals_pairwise_scalar() {
    let mut rng = Rng::new(0x5eed_0007);
    for kind in DotType::ALL {
        let sk = to_scalar_kind(kind);
        for nb in [1, 2, 5] {
            for with_min8 in [false, true] {
                for n_acts in (1..=9).chain([17]) {
                    let acts: Vec<Vec<u8>> = (0..n_acts)
                        .map(|j| {
                            let mut q8 = make_q8k(&mut rng, nb, &|_| Act::NoMin);
                            for y in q8.chunks_exact_mut(simd::Q8K_BLOCK_BYTES) {
                                y[0..4].copy_from_slice(&(0.01 + 0.01 * rng.unit()).to_le_bytes());
                            }
                            if with_min8 && j == n_acts / 2 {
                                put_min8(&mut q8, nb - 1, 77);
                            }
                            q8
                        })
                        .collect();
                    let bytes = acts.concat();
                    let act_rows = simd::ActRows::new(&bytes, n_acts);
                    assert_eq!(act_rows.has_min8(), with_min8);
                    for nrows in [0, 1, 3, 17] {
                        let rows: Vec<Vec<u8>> = (0..nrows)
                            .map(|r| {
                                let mut row = make_row(sk, &mut rng, nb, &|_| Fill::Random);
                                if r % 3 != 2 {
                                    moderate_scales(sk, &mut row, &mut rng);
                                }
                                row
                            })
                            .collect();
                        let all = rows.concat();
                        for p in simd::available_paths() {
                            let mut got = vec![f32::NAN; nrows * n_acts];
                            simd::tile_fn(kind, p)(&all, &act_rows, &mut got);
                            for (r, row) in rows.iter().enumerate() {
                                for (j, act) in acts.iter().enumerate() {
                                    let want = scalar::vec_dot(sk, row, act);
                                    let g = got[r * n_acts + j];
                                    assert!(
                                        same(g, want),
                                        "{kind:?} {p}: row {r} of {nrows} x act {j} of \
                                         {n_acts} ({nb} blocks, -128: {with_min8}): \
                                         {g:e} != {want:e}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Sets quant `k` of Q8_K block `block` to -128, keeping its block sum consistent.
fn put_min8(q8: &mut [u8], block: usize, k: usize) {
    let y = &mut q8[block * simd::Q8K_BLOCK_BYTES..(block + 1) * simd::Q8K_BLOCK_BYTES];
    let old = y[scalar::Q8K_QS + k] as i8 as i16;
    y[scalar::Q8K_QS + k] = 0x80;
    let at = scalar::Q8K_BSUMS + 2 * (k / 16);
    let bsum = i16::from_le_bytes([y[at], y[at + 1]]) - old - 128;
    y[at..at + 2].copy_from_slice(&bsum.to_le_bytes());
}

/// No activation rows: nothing to compute; outputs for them, or a length that is not whole
/// rows, are refused on every path.
#[test]
fn tile_fn_checks_its_shapes() {
    let q8 = vec![0u8; 2 * simd::Q8K_BLOCK_BYTES];
    let rows = vec![0u8; 3 * 76];
    for p in simd::available_paths() {
        let f = simd::tile_fn(DotType::Iq2K, p);
        f(&rows, &simd::ActRows::new(&[], 0), &mut []);
        let acts = simd::ActRows::new(&q8, 2);
        for (rows, out_len) in [(&rows[..], 5), (&rows[..3 * 76 - 1], 6)] {
            let r = std::panic::catch_unwind(|| f(rows, &acts, &mut vec![0.0f32; out_len]));
            assert!(
                r.is_err(),
                "{p} accepted {} bytes, {out_len} outputs",
                rows.len()
            );
        }
    }
    assert!(std::panic::catch_unwind(|| simd::ActRows::new(&q8[1..], 1)).is_err());
}

/// Replaces a row's fp16 block scales (K types) or row scale (KS types) by moderate values.
fn moderate_scales(kind: scalar::DotType, row: &mut [u8], rng: &mut Rng) {
    let (dend, _, bb) = layout(kind);
    let meta = kind.row_meta();
    if dend == 2 {
        for blk in row[meta..].chunks_exact_mut(bb) {
            blk[0..2].copy_from_slice(&f16_moderate(rng).to_le_bytes());
        }
    } else if meta == 2 {
        row[0..2].copy_from_slice(&f16_moderate(rng).to_le_bytes());
    } else {
        row[0..4].copy_from_slice(&(1.0f32 + rng.unit()).to_le_bytes());
    }
}

/// Rows without blocks (no activations) give 0 on every path, as the single-row kernels do.
#[test]
fn rows_fn_accepts_empty_rows() {
    for p in simd::available_paths() {
        for kind in DotType::ALL {
            let meta = kind_meta(kind);
            let mut out = [f32::NAN; 3];
            simd::rows_fn(kind, p)(&vec![0u8; 3 * meta], &[], &mut out);
            assert_eq!(out, [0.0; 3], "{kind:?} {p}");
        }
    }
}

/// A byte count that is not a whole number of rows is refused on every path.
#[test]
fn rows_fn_refuses_partial_rows() {
    let q8 = vec![0u8; simd::Q8K_BLOCK_BYTES];
    for p in simd::available_paths() {
        let rows = vec![0u8; 2 * 76 + 1];
        let r = std::panic::catch_unwind(|| {
            let mut out = [0.0f32; 2];
            simd::rows_fn(DotType::Iq2K, p)(&rows, &q8, &mut out)
        });
        assert!(r.is_err(), "{p} accepted {} bytes as 2 rows", rows.len());
    }
}

// ------------------------------------------------------------------ the quantizers' grid fits
// The batched fits of the IQK searches (`iqk::fit`) have an AVX-512 version too; the Bochs run
// (scripts/avx512_test.sh) runs this binary, so they are pinned to the scalar fit here.

use iqk_rs::cpu::Path as QuantizePath;
use iqk_rs::iqk::fit::{fit_many_on, fit_pair_on, Signs, MAX_CANDIDATES};
use iqk_rs::tables::{Grid, IQ2_GRIDS, IQ3_GRIDS, IQ4_GRIDS};

fn all_grids() -> impl Iterator<Item = &'static Grid> {
    IQ2_GRIDS.iter().chain(&IQ3_GRIDS).chain(&IQ4_GRIDS)
}

/// Each path's fits of `x`, `w` at `ids`, both signs and `+` only, against the scalar fits.
fn check_fits(label: &str, grid: &Grid, ids: &[f32], x: &[f32], w: &[f32]) {
    for signs in [Signs::Both, Signs::PlusOnly] {
        let mut want = [[0f32; 4]; MAX_CANDIDATES];
        fit_many_on(QuantizePath::Scalar, signs, grid, ids, x, w, &mut want);
        for path in iqk_rs::cpu::vector_paths() {
            let mut got = [[f32::NAN; 4]; MAX_CANDIDATES];
            fit_many_on(path, signs, grid, ids, x, w, &mut got);
            for c in 0..ids.len() {
                let bits = |f: [f32; 4]| f.map(f32::to_bits);
                assert_eq!(
                    bits(got[c]),
                    bits(want[c]),
                    "{path:?} {signs:?} {label}: candidate {c} of {}",
                    ids.len()
                );
            }
        }
    }
}

/// The paired fits on IQ3's two grid halves (one pass on AVX-512 for up to 8 candidates
/// each), every path against two scalar `fit_many_on` calls: `ids` split into the two lists.
fn check_pair_fits(label: &str, ids: &[f32], x: &[f32], w: &[f32]) {
    let split = ids.len().div_ceil(2);
    let lists = [&ids[..split], &ids[split..]];
    let mut want = [[[0f32; 4]; MAX_CANDIDATES]; 2];
    for ((grid, list), want) in IQ3_GRIDS.iter().zip(lists).zip(&mut want) {
        fit_many_on(QuantizePath::Scalar, Signs::Both, grid, list, x, w, want);
    }
    for path in iqk_rs::cpu::vector_paths() {
        let mut got = [[[f32::NAN; 4]; MAX_CANDIDATES]; 2];
        let [a, b] = &mut got;
        let grids = [&IQ3_GRIDS[0], &IQ3_GRIDS[1]];
        fit_pair_on(path, grids, lists, x, w, [&mut a[..], &mut b[..]]);
        for (half, list) in lists.iter().enumerate() {
            for c in 0..list.len() {
                let bits = |f: [f32; 4]| f.map(f32::to_bits);
                assert_eq!(
                    bits(got[half][c]),
                    bits(want[half][c]),
                    "{path:?} {label}: grid half {half}, candidate {c} of {}",
                    list.len()
                );
            }
        }
    }
}

/// Random blocks of 16 and 32 values at magnitudes 1e-3..1e3 with zeros among them, 1 to 32
/// candidate scales, some of them so large that id·x passes 2^31 (where ik's conversion sends
/// a value to index 0).
#[test]
fn grid_fits_every_path_equal_scalar() {
    let mut rng = Rng::new(0x5eed_f175);
    let mut sym = || rng.unit();
    for trial in 0..200 {
        let n = if trial % 2 == 0 { 16 } else { 32 };
        let amp = 10f32.powi(trial % 7 - 3);
        let x: Vec<f32> = (0..n)
            .map(|j| {
                if (trial + j) % 9 == 0 {
                    0.0
                } else {
                    amp * sym()
                }
            })
            .collect();
        let w: Vec<f32> = (0..n).map(|_| sym().abs()).collect();
        let max = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
        let reach = match trial % 10 {
            3 => 3e9,
            7 => 1.5e9,
            _ => 120.0,
        };
        let ncand = 1 + trial as usize % MAX_CANDIDATES;
        let ids: Vec<f32> = (0..ncand)
            .map(|k| (k as f32 - 7.0 - reach * sym()) / max)
            .collect();
        for grid in all_grids() {
            check_fits(&format!("trial {trial}"), grid, &ids, &x, &w);
        }
        // Up to 8 candidates per half takes the one-pass fit, more the two-pass one.
        check_pair_fits(&format!("trial {trial}"), &ids[..ids.len().min(16)], &x, &w);
    }
}

/// One-value blocks at every f32 within 64 ulps of each midpoint of each grid (where rounding
/// decides the nearest value), and at the extremes, scaled by 1: the sums then hold the
/// nearest value itself.
#[test]
fn grid_fits_at_midpoints_and_extremes_equal_scalar() {
    let extremes = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        2_147_483_648.0,
        -2_147_483_648.0,
        2_147_483_520.0,
        -2_147_483_520.0,
        f32::MAX,
        f32::MIN_POSITIVE,
        0.0,
        -0.0,
    ];
    for grid in all_grids() {
        let mut xs: Vec<f32> = extremes.to_vec();
        for pair in grid.values.windows(2) {
            let mid = 0.5 * (pair[0] as f32 + pair[1] as f32);
            for k in 0..64u32 {
                let up = mid.to_bits() + k;
                let down = mid.to_bits().saturating_sub(k);
                xs.extend([f32::from_bits(up), f32::from_bits(down)]);
            }
        }
        for chunk in xs.chunks(MAX_CANDIDATES) {
            // Candidate c scales the value 1 by chunk[c]: id·x is exactly the value.
            check_fits("near midpoints", grid, chunk, &[1.0], &[1.0]);
        }
        if grid.values.len() == 8 {
            for chunk in xs.chunks(16) {
                check_pair_fits("near midpoints", chunk, &[1.0], &[1.0]);
            }
        }
    }
}

/// The nearest indices of a block at one scale (IQ3_K's and IQ4_K's final assignment), every
/// path against the scalar one, blocks of 1 to 40 values.
#[test]
fn grid_nearest_indices_every_path_equal_scalar() {
    use iqk_rs::iqk::fit::nearest_indices_on;
    let mut rng = Rng::new(0x0001_d0f5_ca1e);
    for trial in 0..200 {
        let n = 1 + trial % 40;
        let x: Vec<f32> = (0..n).map(|_| 3.0 * rng.unit()).collect();
        let id = 60.0 * rng.unit();
        for grid in all_grids() {
            let mut want = vec![0u8; n];
            nearest_indices_on(QuantizePath::Scalar, grid, id, &x, &mut want);
            for path in iqk_rs::cpu::vector_paths() {
                let mut got = vec![0xffu8; n];
                nearest_indices_on(path, grid, id, &x, &mut got);
                assert_eq!(got, want, "{path:?}: trial {trial}");
            }
        }
    }
}

/// The IQ2 partition search (IQ2_K's blocks of 16, IQ2_KS's of 32), every path against the
/// scalar one: random blocks at magnitudes 1e-4..1e4 with zeros and ties among them.
#[test]
fn partition_search_every_path_equals_scalar() {
    use iqk_rs::iqk::common::PartitionSearch;
    use iqk_rs::tables::IQ2NL;
    let mut rng = Rng::new(0x9a27_1710);
    for trial in 0..300 {
        let (n, max_i1, min_i3) = if trial % 2 == 0 {
            (16, 16, 0)
        } else {
            (32, 24, 8)
        };
        let amp = 10f32.powi(trial % 9 - 4);
        let x: Vec<f32> = (0..n)
            .map(|j| match (j + trial as usize) % 7 {
                0 => 0.0,
                1 => amp * 0.5,
                _ => amp * rng.unit(),
            })
            .collect();
        let w: Vec<f32> = (0..n).map(|_| rng.unit().abs() + 1e-3).collect();
        let mut search = PartitionSearch::new(n, max_i1, min_i3);
        let want = search.run_on(QuantizePath::Scalar, &x, &w, &IQ2NL);
        for path in iqk_rs::cpu::vector_paths() {
            let got = search.run_on(path, &x, &w, &IQ2NL);
            assert_eq!(
                (got.0.to_bits(), got.1),
                (want.0.to_bits(), want.1),
                "{path:?}: trial {trial}"
            );
        }
    }
}
