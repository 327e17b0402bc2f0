//! Block layouts, value tables and the scalar twins of the SIMD kernels.
//!
//! This file is dependency-free and compiles with Rust 1.63 (Debian's rustc, used to build
//! the NEON tests for aarch64 under qemu), so it must not use anything from the crate or any
//! language/library feature newer than 1.63.
//!
//! Every kernel (scalar, AVX2, AVX-512, NEON) computes, per 256-weight superblock, the exact
//! integer `sumi = Σ_sub s_sub · Σ_j q8_j · v_j` and then folds it into an `f64` accumulator
//! with [`acc_k`] / [`acc_ks`] in superblock order and finishes with [`finish_k`] /
//! [`finish_ks`]. Because the integer part is exact and the float part is this one shared
//! sequence of operations, every path returns bit-identical results.
//!
//! Q8_K invariants the kernels rely on: `bsums[k]` is the sum of `qs[16k..16k+16]` (SIMD
//! paths use it to remove table offsets and shifted-table constants).

/// Weights per superblock.
pub const QK: usize = 256;
/// Bytes of one ik_llama.cpp Q8_K block: f32 d, f32 sum, 256 × i8, 16 × i16 block sums.
pub const Q8K_BYTES: usize = 296;
/// Offset of the int8 quants inside a Q8_K block.
pub const Q8K_QS: usize = 8;
/// Offset of the int16 block sums inside a Q8_K block.
pub const Q8K_BSUMS: usize = 264;

pub const IQ2K_BYTES: usize = 76;
pub const IQ3K_BYTES: usize = 110;
pub const IQ4K_BYTES: usize = 144;
pub const IQ2KS_BYTES: usize = 70;
pub const IQ3KS_BYTES: usize = 102;
pub const IQ4KS_BYTES: usize = 136;
pub const IQ5KS_BYTES: usize = 168;

// Each block size is the sum of its fields (see the decoders below).
const _: () = assert!(IQ2K_BYTES == 2 + 2 + 8 + 64); // d, extra, scales, qs
const _: () = assert!(IQ3K_BYTES == 2 + 2 + 2 + 8 + 64 + 32); // d, extra, scales_h, scales_l, qs, qh
const _: () = assert!(IQ4K_BYTES == 2 + 2 + 4 + 8 + 128); // d, extra, scales_h, scales_l, qs
const _: () = assert!(IQ2KS_BYTES == 2 + 4 + 64); // extra, scales, qs
const _: () = assert!(IQ3KS_BYTES == 2 + 4 + 64 + 32); // extra, scales, qs, qh
const _: () = assert!(IQ4KS_BYTES == 8 + 128); // scales, qs
const _: () = assert!(IQ5KS_BYTES == 8 + 128 + 32); // scales, qs, qh
const _: () = assert!(Q8K_BYTES == 4 + 4 + QK + 2 * 16); // d, sum, qs, bsums

/// `iq2nl_values`: base half then the shifted half (base + 5).
pub const IQ2NL: [i8; 8] = [-31, -13, 1, 17, -26, -8, 6, 22];
/// `iq3nl_values`: base half then the shifted half (base + 4).
pub const IQ3NL: [i8; 16] = [
    -63, -40, -23, -10, 1, 13, 28, 47, -59, -36, -19, -6, 5, 17, 32, 51,
];
/// `iq4k_values`: base half then the shifted half (base + 4).
pub const IQ4K: [i8; 32] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113, -123, -100, -79, -61,
    -45, -31, -18, -6, 5, 17, 29, 42, 57, 73, 93, 117,
];

/// `iq5nl_values`: base half then the shifted half (base + 2).
pub const IQ5NL: [i8; 64] = [
    -126, -114, -103, -92, -83, -74, -65, -57, -50, -43, -36, -30, -24, -18, -12, -6, -1, 5, 11,
    17, 23, 29, 36, 43, 51, 59, 68, 77, 87, 97, 109, 121, //
    -124, -112, -101, -90, -81, -72, -63, -55, -48, -41, -34, -28, -22, -16, -10, -4, 1, 7, 13, 19,
    25, 31, 38, 45, 53, 61, 70, 79, 89, 99, 111, 123,
];

/// The weight formats the kernels handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DotType {
    Iq2K,
    Iq3K,
    Iq4K,
    Iq2Ks,
    Iq3Ks,
    Iq4Ks,
    Iq5Ks,
}

impl DotType {
    pub const ALL: [DotType; 7] = [
        DotType::Iq2K,
        DotType::Iq3K,
        DotType::Iq4K,
        DotType::Iq2Ks,
        DotType::Iq3Ks,
        DotType::Iq4Ks,
        DotType::Iq5Ks,
    ];

    /// Bytes of one 256-weight block.
    pub fn block_bytes(self) -> usize {
        match self {
            DotType::Iq2K => IQ2K_BYTES,
            DotType::Iq3K => IQ3K_BYTES,
            DotType::Iq4K => IQ4K_BYTES,
            DotType::Iq2Ks => IQ2KS_BYTES,
            DotType::Iq3Ks => IQ3KS_BYTES,
            DotType::Iq4Ks => IQ4KS_BYTES,
            DotType::Iq5Ks => IQ5KS_BYTES,
        }
    }

    /// Bytes at the start of every row (the KS row scale).
    pub fn row_meta(self) -> usize {
        match self {
            DotType::Iq2Ks | DotType::Iq3Ks => 2,
            DotType::Iq4Ks | DotType::Iq5Ks => 4,
            _ => 0,
        }
    }

    /// Bytes of a row of `n_per_row` weights (a multiple of 256).
    pub fn row_bytes(self, n_per_row: usize) -> usize {
        self.row_meta() + n_per_row / QK * self.block_bytes()
    }

    pub fn name(self) -> &'static str {
        match self {
            DotType::Iq2K => "iq2_k",
            DotType::Iq3K => "iq3_k",
            DotType::Iq4K => "iq4_k",
            DotType::Iq2Ks => "iq2_ks",
            DotType::Iq3Ks => "iq3_ks",
            DotType::Iq4Ks => "iq4_ks",
            DotType::Iq5Ks => "iq5_ks",
        }
    }
}

/// Checks that `row` and `q8k` hold matching numbers of blocks and returns that number.
/// Panics otherwise: the SIMD kernels read through raw pointers and rely on this check.
#[inline]
pub fn check_lens(kind: DotType, row: &[u8], q8k: &[u8]) -> usize {
    let nb = q8k.len() / Q8K_BYTES;
    assert!(
        q8k.len() == nb * Q8K_BYTES && row.len() == kind.row_meta() + nb * kind.block_bytes(),
        "{}: row of {} bytes does not match {} bytes of Q8_K activations",
        kind.name(),
        row.len(),
        q8k.len()
    );
    nb
}

/// Q8_K activation rows for the tile kernels: `len()` rows of equal length, one after the
/// other. Whether any quant is -128 is noted once, here: the AVX2 4-bit kernels take a
/// cheaper sign trick when none is (Q8_K from `quantize_row` never holds -128).
#[derive(Clone, Copy, Debug)]
pub struct ActRows<'a> {
    bytes: &'a [u8],
    n: usize,
    has_min8: bool,
}

impl<'a> ActRows<'a> {
    /// `n` rows in `bytes`. Panics unless `bytes` splits into `n` rows of whole Q8_K blocks
    /// (no bytes for no rows).
    pub fn new(bytes: &'a [u8], n: usize) -> ActRows<'a> {
        let row_bytes = bytes.len().checked_div(n).unwrap_or(0);
        assert!(
            row_bytes * n == bytes.len() && row_bytes / Q8K_BYTES * Q8K_BYTES == row_bytes,
            "{} bytes are not {} rows of whole {}-byte Q8_K blocks",
            bytes.len(),
            n,
            Q8K_BYTES
        );
        let has_min8 = bytes
            .chunks_exact(Q8K_BYTES)
            .any(|b| b[Q8K_QS..Q8K_BSUMS].contains(&0x80));
        ActRows { bytes, n, has_min8 }
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.bytes.len().checked_div(self.n).unwrap_or(0)
    }

    /// Row `j`.
    pub fn row(&self, j: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.bytes[j * rb..(j + 1) * rb]
    }

    /// Whether any quant is -128.
    pub fn has_min8(&self) -> bool {
        self.has_min8
    }
}

/// Checks a tile: `out` holds one value per (weight row, activation row) pair and `rows`
/// whole weight rows matching `acts` (at least one row). Returns the blocks per row, the
/// bytes of a weight row and the number of weight rows. Panics otherwise.
pub fn check_tile(
    kind: DotType,
    rows: &[u8],
    acts: &ActRows,
    out_len: usize,
) -> (usize, usize, usize) {
    assert!(
        !acts.is_empty(),
        "{}: a tile needs activation rows",
        kind.name()
    );
    let nrows = out_len / acts.len();
    assert!(
        nrows * acts.len() == out_len,
        "{}: {} outputs are not whole rows of {}",
        kind.name(),
        out_len,
        acts.len()
    );
    let (nb, row_bytes) = check_rows(kind, rows, acts.row(0), nrows);
    (nb, row_bytes, nrows)
}

/// Checks `rows` holds `nrows` rows that match `q8k` (whole Q8_K blocks); returns the
/// number of 256-weight blocks per row and the bytes of a row. Panics otherwise.
pub fn check_rows(kind: DotType, rows: &[u8], q8k: &[u8], nrows: usize) -> (usize, usize) {
    let nb = q8k.len() / Q8K_BYTES;
    let row_bytes = kind.row_meta() + nb * kind.block_bytes();
    assert!(
        q8k.len() == nb * Q8K_BYTES && rows.len() == nrows * row_bytes,
        "{}: {} bytes are not {} rows matching {} bytes of Q8_K activations",
        kind.name(),
        rows.len(),
        nrows,
        q8k.len()
    );
    (nb, row_bytes)
}

/// Exact IEEE binary16 → binary32 conversion (subnormals, ±0, ±inf and NaN included).
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0x1f {
        sign | 0x7f80_0000 | (man << 13)
    } else if exp != 0 {
        sign | ((exp + 112) << 23) | (man << 13)
    } else {
        // ±0 and subnormals: man · 2^-24 is exact in f32.
        let mag = (man as f32) * (1.0 / 16_777_216.0);
        return f32::from_bits(sign | mag.to_bits());
    };
    f32::from_bits(bits)
}

#[inline]
pub fn rd_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

#[inline]
pub fn rd_f32(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// The row scale of a KS row (fp16 for IQ2_KS/IQ3_KS, f32 for IQ4_KS/IQ5_KS), as f32.
#[inline]
pub fn row_scale(kind: DotType, row: &[u8]) -> f32 {
    match kind {
        DotType::Iq4Ks | DotType::Iq5Ks => rd_f32(row, 0),
        DotType::Iq2Ks | DotType::Iq3Ks => f16_to_f32(rd_u16(row, 0)),
        _ => 1.0,
    }
}

/// [`row_scale`] of the row starting at `row` (its bytes checked by the caller).
///
/// # Safety
/// `row` must point at a whole row of `kind`.
#[inline]
pub unsafe fn row_scale_at(kind: DotType, row: *const u8) -> f32 {
    row_scale(kind, std::slice::from_raw_parts(row, kind.row_meta()))
}

/// Folds one superblock of a K type (fp16 scale `dw`) into the accumulator.
#[inline]
pub fn acc_k(acc: f64, dw: f32, d8: f32, sumi: i32) -> f64 {
    acc + (dw as f64 * d8 as f64) * sumi as f64
}

/// Folds one superblock of a KS type into the accumulator (the row scale comes at the end).
#[inline]
pub fn acc_ks(acc: f64, d8: f32, sumi: i32) -> f64 {
    acc + d8 as f64 * sumi as f64
}

#[inline]
pub fn finish_k(acc: f64) -> f32 {
    acc as f32
}

#[inline]
pub fn finish_ks(acc: f64, d_row: f32) -> f32 {
    (acc * d_row as f64) as f32
}

/// One decoded superblock: the signed scale of each 16-weight group (the KS types' 32-weight
/// blocks appear twice) and the 256 table values (shifted halves applied).
#[derive(Clone)]
pub struct Decoded {
    pub scales: [i32; 16],
    pub values: [i8; 256],
}

impl Decoded {
    pub fn new() -> Decoded {
        Decoded {
            scales: [0; 16],
            values: [0; 256],
        }
    }
}

impl Default for Decoded {
    fn default() -> Self {
        Decoded::new()
    }
}

/// Decodes one block of `kind` (the KS row scale is not part of a block).
pub fn decode(kind: DotType, x: &[u8], out: &mut Decoded) {
    match kind {
        DotType::Iq2K => decode_iq2k(x, out),
        DotType::Iq3K => decode_iq3k(x, out),
        DotType::Iq4K => decode_iq4k(x, out),
        DotType::Iq2Ks => decode_iq2ks(x, out),
        DotType::Iq3Ks => decode_iq3ks(x, out),
        DotType::Iq4Ks => decode_iq4ks(x, out),
        DotType::Iq5Ks => decode_iq5ks(x, out),
    }
}

/// The exact integer `Σ_g s_g · Σ_{j∈g} q8_j · v_j` of one superblock (fits i32 for every
/// input: |s·v·q8| <= 127·127·128 per weight).
#[inline]
pub fn sumi(dec: &Decoded, q8: &[u8]) -> i32 {
    let mut total = 0i32;
    for ((q, v), s) in q8
        .chunks_exact(16)
        .zip(dec.values.chunks_exact(16))
        .zip(dec.scales.iter())
    {
        let sum: i32 = q
            .iter()
            .zip(v)
            .map(|(&a, &b)| a as i8 as i32 * b as i32)
            .sum();
        total += s * sum;
    }
    total
}

/// The block's own fp16 scale for the K types, 1 for the KS types (whose scale is per row).
#[inline]
pub fn block_scale(kind: DotType, x: &[u8]) -> f32 {
    match kind {
        DotType::Iq2K | DotType::Iq3K | DotType::Iq4K => f16_to_f32(rd_u16(x, 0)),
        _ => 1.0,
    }
}

/// Scalar dot product of one row with Q8_K activations (the reference every SIMD path equals).
pub fn vec_dot(kind: DotType, row: &[u8], q8k: &[u8]) -> f32 {
    let nb = check_lens(kind, row, q8k);
    let meta = kind.row_meta();
    let bb = kind.block_bytes();
    let mut dec = Decoded::new();
    let mut acc = 0.0f64;
    for i in 0..nb {
        let x = &row[meta + i * bb..meta + (i + 1) * bb];
        let y = &q8k[i * Q8K_BYTES..(i + 1) * Q8K_BYTES];
        decode(kind, x, &mut dec);
        let s = sumi(&dec, &y[Q8K_QS..Q8K_QS + QK]);
        acc = match kind {
            DotType::Iq2K | DotType::Iq3K | DotType::Iq4K => {
                acc_k(acc, block_scale(kind, x), rd_f32(y, 0), s)
            }
            _ => acc_ks(acc, rd_f32(y, 0), s),
        };
    }
    match kind {
        DotType::Iq2K | DotType::Iq3K | DotType::Iq4K => finish_k(acc),
        _ => finish_ks(acc, row_scale(kind, row)),
    }
}

/// Dequantizes one row of `kind` as ik's `dequantize_row_*` do: each weight is
/// `(d · scale) · value` in f32, d the block's fp16 scale (K types) or the row scale (KS
/// types). The one decoder the kernels' scalar twins use, so the layout is written once.
pub fn dequantize_row(kind: DotType, row: &[u8], out: &mut [f32]) {
    let meta = kind.row_meta();
    // One of the two is 1.0 (exact), whatever the kind.
    let d_row = row_scale(kind, row);
    let mut dec = Decoded::new();
    for (x, o) in row[meta..]
        .chunks_exact(kind.block_bytes())
        .zip(out.chunks_exact_mut(QK))
    {
        decode(kind, x, &mut dec);
        let d = d_row * block_scale(kind, x);
        for (i, o) in o.iter_mut().enumerate() {
            *o = d * dec.scales[i / 16] as f32 * dec.values[i] as f32;
        }
    }
}

/// 2-bit index of element `i` in the Q2_K-style packing shared by IQ2_K/IQ3_K/IQ2_KS/IQ3_KS.
#[inline]
fn idx2(qs: &[u8], i: usize) -> usize {
    ((qs[32 * (i / 128) + i % 32] >> (2 * ((i / 32) % 4))) & 3) as usize
}

/// High (third) index bit of element `i` for IQ3_K/IQ3_KS.
#[inline]
fn hbit(qh: &[u8], i: usize) -> usize {
    (((qh[i % 32] >> (i / 32)) & 1) as usize) << 2
}

/// 4-bit index of element `i` for IQ4_K/IQ4_KS (16 bytes per 32 weights).
#[inline]
fn idx4(qs: &[u8], i: usize) -> usize {
    let b = qs[16 * (i / 32) + i % 16];
    (if i % 32 < 16 { b & 15 } else { b >> 4 }) as usize
}

/// IQ2_K block: `d`@0, `extra`@2, `scales[8]`@4, `qs[64]`@12.
pub fn decode_iq2k(x: &[u8], out: &mut Decoded) {
    let extra = rd_u16(x, 2);
    let (scales, qs) = (&x[4..12], &x[12..76]);
    for ib in 0..16 {
        out.scales[ib] = ((scales[ib / 2] >> (4 * (ib % 2))) & 15) as i32 - 8;
        let tab = &IQ2NL[4 * ((extra >> ib) & 1) as usize..];
        for i in 16 * ib..16 * ib + 16 {
            out.values[i] = tab[idx2(qs, i)];
        }
    }
}

/// IQ3_K block: `d`@0, `extra`@2, `scales_h`@4 (sign bits), `scales_l[8]`@6, `qs[64]`@14,
/// `qh[32]`@78.
pub fn decode_iq3k(x: &[u8], out: &mut Decoded) {
    let extra = rd_u16(x, 2);
    let signs = rd_u16(x, 4);
    let (scales, qs, qh) = (&x[6..14], &x[14..78], &x[78..110]);
    for ib in 0..16 {
        let m = 2 * ((scales[ib / 2] >> (4 * (ib % 2))) & 15) as i32 + 1;
        out.scales[ib] = if (signs >> ib) & 1 != 0 { -m } else { m };
        let tab = &IQ3NL[8 * ((extra >> ib) & 1) as usize..];
        for i in 16 * ib..16 * ib + 16 {
            out.values[i] = tab[idx2(qs, i) | hbit(qh, i)];
        }
    }
}

/// IQ4_K block: `d`@0, `extra`@2, `scales_h[4]`@4, `scales_l[8]`@8, `qs[128]`@16.
pub fn decode_iq4k(x: &[u8], out: &mut Decoded) {
    let extra = rd_u16(x, 2);
    let (sh, sl, qs) = (&x[4..8], &x[8..16], &x[16..144]);
    for ib in 0..16 {
        let lo = (sl[ib / 2] >> (4 * (ib % 2))) & 15;
        let hi = (sh[ib / 4] >> (2 * (ib % 4))) & 3;
        out.scales[ib] = (lo | (hi << 4)) as i32 - 32;
        let tab = &IQ4K[16 * ((extra >> ib) & 1) as usize..];
        for i in 16 * ib..16 * ib + 16 {
            out.values[i] = tab[idx4(qs, i)];
        }
    }
}

/// IQ2_KS block: `extra`@0 (bits 0..7 shift, 8..15 scale bit 4), `scales[4]`@2, `qs[64]`@6.
pub fn decode_iq2ks(x: &[u8], out: &mut Decoded) {
    let extra = rd_u16(x, 0);
    let (scales, qs) = (&x[2..6], &x[6..70]);
    for ib in 0..8 {
        let lo = (scales[ib / 2] >> (4 * (ib % 2))) & 15;
        let s = (lo as i32 | ((((extra >> (8 + ib)) & 1) as i32) << 4)) - 16;
        out.scales[2 * ib] = s;
        out.scales[2 * ib + 1] = s;
        let tab = &IQ2NL[4 * ((extra >> ib) & 1) as usize..];
        for i in 32 * ib..32 * ib + 32 {
            out.values[i] = tab[idx2(qs, i)];
        }
    }
}

/// IQ3_KS block: `extra`@0 (bits 0..7 scale bit 4, 8..15 shift), `scales[4]`@2 (block ib:
/// byte ib%4, nibble ib/4), `qs[64]`@6, `qh[32]`@70.
pub fn decode_iq3ks(x: &[u8], out: &mut Decoded) {
    let extra = rd_u16(x, 0);
    let (scales, qs, qh) = (&x[2..6], &x[6..70], &x[70..102]);
    for ib in 0..8 {
        let lo = (scales[ib % 4] >> (4 * (ib / 4))) & 15;
        let s = (lo as i32 | ((((extra >> ib) & 1) as i32) << 4)) - 16;
        out.scales[2 * ib] = s;
        out.scales[2 * ib + 1] = s;
        let tab = &IQ3NL[8 * ((extra >> (8 + ib)) & 1) as usize..];
        for i in 32 * ib..32 * ib + 32 {
            out.values[i] = tab[idx2(qs, i) | hbit(qh, i)];
        }
    }
}

/// IQ4_KS block: `scales[8]`@0 (bit 0 shift, `s = (b & 0xfe) - 127`), `qs[128]`@8.
pub fn decode_iq4ks(x: &[u8], out: &mut Decoded) {
    let (scales, qs) = (&x[0..8], &x[8..136]);
    for ib in 0..8 {
        let s = (scales[ib] & 0xfe) as i32 - 127;
        out.scales[2 * ib] = s;
        out.scales[2 * ib + 1] = s;
        let tab = &IQ4K[16 * (scales[ib] & 1) as usize..];
        for i in 32 * ib..32 * ib + 32 {
            out.values[i] = tab[idx4(qs, i)];
        }
    }
}

/// IQ5_KS block: `scales[8]`@0 (as IQ4_KS: bit 0 shift, `s = (b & 0xfe) - 127`), `qs[128]`@8
/// (sub-block ib: the ib%2 nibble of `qs[32(ib/2) + j]`), `qh[32]`@136 (bit ib of `qh[j]`: the
/// fifth index bit).
pub fn decode_iq5ks(x: &[u8], out: &mut Decoded) {
    let (scales, qs, qh) = (&x[0..8], &x[8..136], &x[136..168]);
    for ib in 0..8 {
        let s = (scales[ib] & 0xfe) as i32 - 127;
        out.scales[2 * ib] = s;
        out.scales[2 * ib + 1] = s;
        let tab = &IQ5NL[32 * (scales[ib] & 1) as usize..];
        for j in 0..32 {
            let lo = (qs[32 * (ib / 2) + j] >> (4 * (ib % 2))) & 15;
            let hi = ((qh[j] >> ib) & 1) << 4;
            out.values[32 * ib + j] = tab[(lo | hi) as usize];
        }
    }
}
