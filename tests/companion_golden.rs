//! Companion types (Q8_0 … IQ6_K) against ik_llama.cpp's golden outputs in
//! `tests/data/companion/` (see `tests/data/README.md` for their provenance).

use std::path::PathBuf;

use iqk_rs::{QuantType, QuantizeOptions};

/// The companion types, in the registry's order.
fn companions() -> impl Iterator<Item = QuantType> {
    iqk_rs::TYPES.iter().filter(|t| !t.is_iqk).map(|t| t.qtype)
}

fn row_size(kind: QuantType, ncols: usize) -> usize {
    kind.row_size(ncols).unwrap()
}

/// One `ggml_quantize_chunk` call over `x`, through the type's descriptor.
fn quantize_chunk(kind: QuantType, x: &[f32], ncols: usize, im: Option<&[f32]>, out: &mut [u8]) {
    let opts = QuantizeOptions::default();
    kind.info().quantize_chunk_as_ik(x, ncols, im, out, &opts);
}

fn dequantize_row(kind: QuantType, q: &[u8], out: &mut [f32]) {
    (kind.info().dequantize_row)(q, out)
}

/// (case, rows, columns), as in `tests/data/companion/manifest.json`.
const CASES: [(&str, usize, usize); 3] =
    [("gauss", 32, 4096), ("heavy", 16, 2048), ("edge", 12, 512)];

/// Golden outputs live in `tests/data/companion/<case>/`, their inputs (`x.f32`,
/// `imatrix.f32`) in `tests/data/golden/<case>/`.
fn data_file(case: &str, file: &str) -> PathBuf {
    let set = if file == "x.f32" || file == "imatrix.f32" {
        "golden"
    } else {
        "companion"
    };
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(set)
        .join(case)
        .join(file)
}

fn read_bytes(case: &str, file: &str) -> Vec<u8> {
    let p = data_file(case, file);
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn read_f32(case: &str, file: &str) -> Vec<f32> {
    read_bytes(case, file)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// First (row, block) where `got` and `want` differ, if any.
fn first_diff(kind: QuantType, ncols: usize, got: &[u8], want: &[u8]) -> Option<(usize, usize)> {
    let rs = row_size(kind, ncols);
    let ts = kind.info().type_size;
    (0..got.len())
        .find(|&i| got[i] != want[i])
        .map(|i| (i / rs, i % rs / ts))
}

fn check_type(kind: QuantType) {
    let mut failures = Vec::new();
    for (case, nrows, ncols) in CASES {
        let x = read_f32(case, "x.f32");
        let imatrix = read_f32(case, "imatrix.f32");
        assert_eq!(x.len(), nrows * ncols, "{case}: x.f32 size");
        assert_eq!(imatrix.len(), ncols, "{case}: imatrix.f32 size");
        let rs = row_size(kind, ncols);
        for (variant, im) in [("im", Some(imatrix.as_slice())), ("noim", None)] {
            let want = read_bytes(case, &format!("{}.{variant}.bin", kind.name()));
            assert_eq!(
                want.len(),
                nrows * rs,
                "{case}/{}.{variant}: golden size",
                kind.name()
            );

            // one ggml_quantize_chunk call over the whole matrix, as the golden files were made
            let mut got = vec![0u8; nrows * rs];
            quantize_chunk(kind, &x, ncols, im, &mut got);
            if let Some((row, block)) = first_diff(kind, ncols, &got, &want) {
                let n_bad = (0..nrows)
                    .filter(|r| got[r * rs..(r + 1) * rs] != want[r * rs..(r + 1) * rs])
                    .count();
                failures.push(format!(
                    "{case}/{}.{variant}: {n_bad}/{nrows} rows differ, first at row {row}, block {block}",
                    kind.name()
                ));
                continue;
            }
            // row by row gives the same bytes, except for Q2_K without imatrix, whose
            // ternary-model test then looks at each row alone: the edge rows "one non-zero",
            // "constant 0.5" and "alternating ±1" are ternary by themselves
            let expect_alone: &[usize] = match (kind, im.is_none(), case) {
                (QuantType::Q2K, true, "edge") => &[1, 4, 5],
                _ => &[],
            };
            let mut row_out = vec![0u8; rs];
            let mut alone = Vec::new();
            for r in 0..nrows {
                quantize_chunk(
                    kind,
                    &x[r * ncols..(r + 1) * ncols],
                    ncols,
                    im,
                    &mut row_out,
                );
                if let Some((_, block)) =
                    first_diff(kind, ncols, &row_out, &want[r * rs..(r + 1) * rs])
                {
                    if !expect_alone.contains(&r) {
                        failures.push(format!(
                            "{case}/{}.{variant}: quantize_row differs at row {r}, block {block}",
                            kind.name()
                        ));
                    }
                    alone.push(r);
                }
            }
            if alone != expect_alone && alone.iter().all(|r| expect_alone.contains(r)) {
                failures.push(format!(
                    "{case}/{}.{variant}: rows {alone:?} differ when quantized alone, expected {expect_alone:?}",
                    kind.name()
                ));
            }
        }
    }

    // dequantization of the edge case's imatrix output, bit for bit
    let (case, nrows, ncols) = CASES[2];
    let q = read_bytes(case, &format!("{}.im.bin", kind.name()));
    let want = read_f32(case, &format!("{}.im.deq.f32", kind.name()));
    let rs = row_size(kind, ncols);
    let mut got = vec![0f32; ncols];
    for r in 0..nrows {
        dequantize_row(kind, &q[r * rs..(r + 1) * rs], &mut got);
        let w = &want[r * ncols..(r + 1) * ncols];
        if let Some(i) = (0..ncols).find(|&i| got[i].to_bits() != w[i].to_bits()) {
            failures.push(format!(
                "{case}/{}.im.deq: row {r}, element {i} (block {}): got {:e} want {:e}",
                kind.name(),
                i / kind.info().block_size,
                got[i],
                w[i]
            ));
            break;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn q8_0() {
    check_type(QuantType::Q8_0);
}

#[test]
fn q5_0() {
    check_type(QuantType::Q5_0);
}

#[test]
fn q6_0() {
    check_type(QuantType::Q6_0);
}

#[test]
fn iq4_nl() {
    check_type(QuantType::Iq4Nl);
}

#[test]
fn q2_k() {
    check_type(QuantType::Q2K);
}

#[test]
fn q4_k() {
    check_type(QuantType::Q4K);
}

#[test]
fn q5_k() {
    check_type(QuantType::Q5K);
}

#[test]
fn q6_k() {
    check_type(QuantType::Q6K);
}

#[test]
fn iq5_k() {
    check_type(QuantType::Iq5K);
}

#[test]
fn iq6_k() {
    check_type(QuantType::Iq6K);
}

#[test]
fn sizes_and_ids() {
    for k in companions() {
        let t = k.info();
        assert_eq!(row_size(k, 512), 512 / t.block_size * t.type_size);
    }
    assert_eq!(companions().count(), 10);
    assert_eq!(QuantType::Iq6K.info().type_size, 212);
    assert_eq!(QuantType::Q6_0.info().ggml_id, 133);
    assert_eq!(QuantType::Iq5K.info().llama_ftype, 141);
}

/// Q2_K without imatrix: a ternary matrix is written as exact ternary blocks (d = dmin =
/// max, all scales 1/1), which dequantize back to {-max, 0, max}.
#[test]
fn q2_k_trinet() {
    let n = 512;
    let x: Vec<f32> = (0..2 * n)
        .map(|i| [0.0f32, 0.5, -0.5][(i * 7 + i / 3) % 3])
        .collect();
    let kind = QuantType::Q2K;
    let mut q = vec![0u8; 2 * row_size(kind, n)];
    quantize_chunk(kind, &x, n, None, &mut q);
    let mut y = vec![0f32; 2 * n];
    for r in 0..2 {
        let rs = row_size(kind, n);
        dequantize_row(kind, &q[r * rs..(r + 1) * rs], &mut y[r * n..(r + 1) * n]);
    }
    assert_eq!(x, y);
}
