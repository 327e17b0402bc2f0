//! Standalone test harness for the NEON kernels: built by `scripts/neon_test.sh` with
//! Debian's rustc 1.63 for aarch64 (`rustc --test`) and run under `qemu-aarch64`. Not part
//! of the crate; it includes the dependency-free kernel files directly.
//!
//! Checks, for every type: both NEON variants (plain, and `dotprod` when the CPU has it)
//! bit-identical to the scalar twins on randomized blocks (every header byte value, special
//! fp16/f32 scales, extreme activations) and on the golden vectors (`GOLDEN_DIR`, default
//! `tests/data/golden`), and the scalar twins against the exact float64 dots.

#![allow(dead_code)]

#[path = "neon.rs"]
mod neon;
#[path = "scalar.rs"]
mod scalar;
#[path = "testgen.rs"]
mod testgen;

#[cfg(all(test, target_arch = "aarch64"))]
mod tests {
    use super::neon;
    use super::scalar::{self, DotType};
    use super::testgen::{
        make_q8k, make_row, random_case, read_f64s, same, Act, Fill, Rng, GOLDEN_CASES,
    };
    use std::arch::is_aarch64_feature_detected;

    type Kernel = unsafe fn(&[u8], &[u8]) -> f32;

    fn kernels(kind: DotType) -> Vec<(&'static str, Kernel)> {
        let plain: Kernel = match kind {
            DotType::Iq2K => neon::vec_dot_iq2k,
            DotType::Iq3K => neon::vec_dot_iq3k,
            DotType::Iq4K => neon::vec_dot_iq4k,
            DotType::Iq2Ks => neon::vec_dot_iq2ks,
            DotType::Iq3Ks => neon::vec_dot_iq3ks,
            DotType::Iq4Ks => neon::vec_dot_iq4ks,
            DotType::Iq5Ks => neon::vec_dot_iq5ks,
        };
        let dot: Kernel = match kind {
            DotType::Iq2K => neon::vec_dot_iq2k_dotprod,
            DotType::Iq3K => neon::vec_dot_iq3k_dotprod,
            DotType::Iq4K => neon::vec_dot_iq4k_dotprod,
            DotType::Iq2Ks => neon::vec_dot_iq2ks_dotprod,
            DotType::Iq3Ks => neon::vec_dot_iq3ks_dotprod,
            DotType::Iq4Ks => neon::vec_dot_iq4ks_dotprod,
            DotType::Iq5Ks => neon::vec_dot_iq5ks_dotprod,
        };
        let mut v = vec![("neon", plain)];
        if is_aarch64_feature_detected!("dotprod") {
            v.push(("neon+dotprod", dot));
        }
        v
    }

    type Tile = unsafe fn(&[u8], &scalar::ActRows, &mut [f32]);

    fn tiles(kind: DotType) -> Vec<(&'static str, Tile)> {
        let plain: Tile = match kind {
            DotType::Iq2K => neon::tile_iq2k,
            DotType::Iq3K => neon::tile_iq3k,
            DotType::Iq4K => neon::tile_iq4k,
            DotType::Iq2Ks => neon::tile_iq2ks,
            DotType::Iq3Ks => neon::tile_iq3ks,
            DotType::Iq4Ks => neon::tile_iq4ks,
            DotType::Iq5Ks => neon::tile_iq5ks,
        };
        let dot: Tile = match kind {
            DotType::Iq2K => neon::tile_iq2k_dotprod,
            DotType::Iq3K => neon::tile_iq3k_dotprod,
            DotType::Iq4K => neon::tile_iq4k_dotprod,
            DotType::Iq2Ks => neon::tile_iq2ks_dotprod,
            DotType::Iq3Ks => neon::tile_iq3ks_dotprod,
            DotType::Iq4Ks => neon::tile_iq4ks_dotprod,
            DotType::Iq5Ks => neon::tile_iq5ks_dotprod,
        };
        let mut v = vec![("neon tile", plain)];
        if is_aarch64_feature_detected!("dotprod") {
            v.push(("neon+dotprod tile", dot));
        }
        v
    }

    /// Every (weight row, activation row) pair of `tile`'s output against the scalar twin.
    fn check_tile(kind: DotType, rows: &[u8], nrows: usize, acts: &[u8], nacts: usize, what: &str) {
        let (rb, ab) = (rows.len() / nrows, acts.len() / nacts);
        let act_rows = scalar::ActRows::new(acts, nacts);
        for &(name, f) in &tiles(kind) {
            let mut out = vec![0.0f32; nrows * nacts];
            unsafe { f(rows, &act_rows, &mut out) };
            for r in 0..nrows {
                for j in 0..nacts {
                    let want = scalar::vec_dot(
                        kind,
                        &rows[r * rb..(r + 1) * rb],
                        &acts[j * ab..(j + 1) * ab],
                    );
                    let got = out[r * nacts + j];
                    assert!(
                        same(got, want),
                        "{:?} {} {} ({}, {}): {:e} != {:e}",
                        kind,
                        name,
                        what,
                        r,
                        j,
                        got,
                        want
                    );
                }
            }
        }
    }

    /// Tiles of 1-4 random weight rows by 1-11 activation rows (more than a tile's 8, so
    /// the activation chunks are exercised too), some activations extreme.
    #[test]
    fn tiles_equal_scalar() {
        for kind in DotType::ALL {
            let mut rng = Rng::new(0x7117_0000 ^ kind as u64);
            for case in 0..60 {
                let nb = 1 + case % 3;
                let (nrows, nacts) = (1 + case % 4, 1 + (case / 4) % 11);
                let mut rows = Vec::new();
                for _ in 0..nrows {
                    rows.extend(make_row(kind, &mut rng, nb, &|_| Fill::Random));
                }
                let mut acts = Vec::new();
                for j in 0..nacts {
                    let act = if j % 3 == 0 {
                        Act::Extreme
                    } else {
                        Act::Random
                    };
                    acts.extend(make_q8k(&mut rng, nb, &|_| act));
                }
                check_tile(kind, &rows, nrows, &acts, nacts, &format!("case {}", case));
            }
        }
        eprintln!("tiles: 60 random tiles per type bit-identical");
    }

    #[test]
    fn reports_features() {
        assert!(is_aarch64_feature_detected!("neon"));
        eprintln!("dotprod: {}", is_aarch64_feature_detected!("dotprod"));
    }

    fn check_random(kind: DotType) {
        let ks = kernels(kind);
        let mut rng = Rng::new(0x1234_5678 ^ kind as u64);
        for case in 0..3000 {
            let (row, q8) = random_case(kind, &mut rng, case);
            let want = scalar::vec_dot(kind, &row, &q8);
            for &(name, f) in &ks {
                let got = unsafe { f(&row, &q8) };
                assert!(
                    same(got, want),
                    "{:?} {} case {}: {:e} != {:e}",
                    kind,
                    name,
                    case,
                    got,
                    want
                );
            }
        }
        eprintln!(
            "{:?}: 3000 random cases x {} NEON variants bit-identical",
            kind,
            ks.len()
        );
    }

    #[test]
    fn random_iq2k() {
        check_random(DotType::Iq2K)
    }
    #[test]
    fn random_iq3k() {
        check_random(DotType::Iq3K)
    }
    #[test]
    fn random_iq4k() {
        check_random(DotType::Iq4K)
    }
    #[test]
    fn random_iq2ks() {
        check_random(DotType::Iq2Ks)
    }
    #[test]
    fn random_iq3ks() {
        check_random(DotType::Iq3Ks)
    }
    #[test]
    fn random_iq4ks() {
        check_random(DotType::Iq4Ks)
    }
    #[test]
    fn random_iq5ks() {
        check_random(DotType::Iq5Ks)
    }

    #[test]
    fn golden() {
        let dir = std::env::var("GOLDEN_DIR").unwrap_or_else(|_| "tests/data/golden".to_string());
        let dir = std::path::Path::new(&dir);
        let mut rows = 0;
        for &(case, nrows, ncols) in GOLDEN_CASES.iter() {
            let q8 = std::fs::read(dir.join(case).join("act.q8k.bin")).expect("golden act.q8k.bin");
            for kind in DotType::ALL {
                let t = kind.name();
                let data = std::fs::read(dir.join(case).join(format!("{}.im.bin", t))).unwrap();
                let exact = read_f64s(
                    &std::fs::read(dir.join(case).join(format!("{}.im.dot.f64", t))).unwrap(),
                );
                let rb = kind.row_bytes(ncols);
                assert_eq!(data.len(), nrows * rb);
                for r in 0..nrows {
                    let row = &data[r * rb..(r + 1) * rb];
                    let want = scalar::vec_dot(kind, row, &q8);
                    // ik's f32 weight rounding (IQ4_KS) bounds the distance to the file.
                    let e = exact[r];
                    assert!(
                        (want as f64 - e).abs() <= 2e-5 * e.abs() + 1e-30,
                        "{} {} row {}: {:e} vs {:e}",
                        case,
                        t,
                        r,
                        want,
                        e
                    );
                    for &(name, f) in &kernels(kind) {
                        let got = unsafe { f(row, &q8) };
                        assert!(
                            same(got, want),
                            "{} {} row {} {}: {:e} != {:e}",
                            case,
                            t,
                            r,
                            name,
                            got,
                            want
                        );
                    }
                    rows += 1;
                }
                let acts: Vec<u8> = q8.iter().chain(&q8).chain(&q8).copied().collect();
                check_tile(kind, &data, nrows, &acts, 3, case);
            }
        }
        eprintln!("golden: {} rows (row and tile kernels)", rows);
    }
}

#[cfg(not(test))]
fn main() {}
