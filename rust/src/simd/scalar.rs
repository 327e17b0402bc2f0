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

/// The activation format a weight type's dot product runs against: how the other operand
/// is quantized. Every type here uses Q8_K; a type whose kernels take another format (ik's
/// IQ*_KT types use Q8_0_X4/Q8_2_X4) adds a variant, its block size here and its quantizer
/// in `ops::quantize_activation_row`; the kernels' length checks and the calibration's test
/// block (`calibrate.rs`) still build Q8_K activations and would need the new format too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActFormat {
    /// ik_llama.cpp's Q8_K: per 256 values an f32 scale, an f32 sum, int8 quants and int16
    /// sums of 16.
    Q8K,
}

impl ActFormat {
    pub const fn name(self) -> &'static str {
        match self {
            ActFormat::Q8K => "Q8_K",
        }
    }

    /// Values per block.
    pub const fn block_values(self) -> usize {
        match self {
            ActFormat::Q8K => QK,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            ActFormat::Q8K => Q8K_BYTES,
        }
    }

    /// Fill `block` with a valid block of this format from the byte source `next`, as a
    /// quantizer would write it (normal scales; Q8_K: no -128, true sums): sample input for
    /// timing the kernels.
    pub fn sample_block(self, block: &mut [u8], mut next: impl FnMut() -> u8) {
        match self {
            ActFormat::Q8K => {
                block[..4].copy_from_slice(&0.01f32.to_le_bytes());
                block[4..Q8K_QS].fill(0);
                let mut sums = [0i16; QK / 16];
                for (i, q) in block[Q8K_QS..Q8K_QS + QK].iter_mut().enumerate() {
                    let v = (next() % 255) as i16 - 127;
                    *q = v as i8 as u8;
                    sums[i / 16] += v;
                }
                for (k, s) in sums.iter().enumerate() {
                    let at = Q8K_QS + QK + 2 * k;
                    block[at..at + 2].copy_from_slice(&s.to_le_bytes());
                }
            }
        }
    }
}

/// How a row of a type begins: with nothing (K types) or the KS types' row scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowScale {
    None,
    /// An fp16 scale (2 bytes).
    F16,
    /// An f32 scale (4 bytes).
    F32,
}

impl RowScale {
    /// Bytes of the row prefix.
    pub const fn bytes(self) -> usize {
        match self {
            RowScale::None => 0,
            RowScale::F16 => 2,
            RowScale::F32 => 4,
        }
    }
}

/// One weight format's layout: the facts the kernels, the dequantizer, the test generators
/// and the crate's type registry take from here (`LAYOUTS` holds one per [`DotType`]).
#[derive(Clone, Copy)]
pub struct Layout {
    /// ggml's type name.
    pub name: &'static str,
    /// Bytes of one 256-weight block.
    pub block_bytes: usize,
    /// The row prefix.
    pub row_scale: RowScale,
    /// Whether each block begins with its own fp16 scale `d` (the K types).
    pub block_scale: bool,
    /// Bytes of the block's header: `d` (if any), then the scales, shift and sign bits; the
    /// quants follow (the test generators sweep the header).
    pub header_bytes: usize,
    /// The activation format of its dot products.
    pub activations: ActFormat,
    /// Decodes one block (the row prefix excluded).
    pub decode: fn(&[u8], &mut Decoded),
}

/// The weight formats the kernels handle; each indexes its [`Layout`] in `LAYOUTS`.
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

/// One row per [`DotType`], in its order. (Struct literals: Rust 1.63 cannot pass a
/// `fn(.., &mut _)` through a `const fn`.)
const LAYOUTS: [Layout; 7] = [
    // iq2_k: fp16 `d` in each block, no row prefix
    Layout {
        name: "iq2_k",
        block_bytes: IQ2K_BYTES,
        row_scale: RowScale::None,
        block_scale: true,
        header_bytes: 12,
        activations: ActFormat::Q8K,
        decode: decode_iq2k,
    },
    // iq3_k: fp16 `d` in each block, no row prefix
    Layout {
        name: "iq3_k",
        block_bytes: IQ3K_BYTES,
        row_scale: RowScale::None,
        block_scale: true,
        header_bytes: 14,
        activations: ActFormat::Q8K,
        decode: decode_iq3k,
    },
    // iq4_k: fp16 `d` in each block, no row prefix
    Layout {
        name: "iq4_k",
        block_bytes: IQ4K_BYTES,
        row_scale: RowScale::None,
        block_scale: true,
        header_bytes: 16,
        activations: ActFormat::Q8K,
        decode: decode_iq4k,
    },
    // iq2_ks: one scale per row, none per block
    Layout {
        name: "iq2_ks",
        block_bytes: IQ2KS_BYTES,
        row_scale: RowScale::F16,
        block_scale: false,
        header_bytes: 6,
        activations: ActFormat::Q8K,
        decode: decode_iq2ks,
    },
    // iq3_ks: one scale per row, none per block
    Layout {
        name: "iq3_ks",
        block_bytes: IQ3KS_BYTES,
        row_scale: RowScale::F16,
        block_scale: false,
        header_bytes: 6,
        activations: ActFormat::Q8K,
        decode: decode_iq3ks,
    },
    // iq4_ks: one scale per row, none per block
    Layout {
        name: "iq4_ks",
        block_bytes: IQ4KS_BYTES,
        row_scale: RowScale::F32,
        block_scale: false,
        header_bytes: 8,
        activations: ActFormat::Q8K,
        decode: decode_iq4ks,
    },
    // iq5_ks: one scale per row, none per block
    Layout {
        name: "iq5_ks",
        block_bytes: IQ5KS_BYTES,
        row_scale: RowScale::F32,
        block_scale: false,
        header_bytes: 8,
        activations: ActFormat::Q8K,
        decode: decode_iq5ks,
    },
];

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

    /// This format's layout.
    #[inline]
    pub const fn layout(self) -> Layout {
        LAYOUTS[self as usize]
    }

    /// Bytes of one 256-weight block.
    #[inline]
    pub const fn block_bytes(self) -> usize {
        self.layout().block_bytes
    }

    /// Bytes at the start of every row (the KS row scale).
    #[inline]
    pub const fn row_meta(self) -> usize {
        self.layout().row_scale.bytes()
    }

    /// Bytes of a row of `n_per_row` weights (a multiple of 256).
    pub const fn row_bytes(self, n_per_row: usize) -> usize {
        self.row_meta() + n_per_row / QK * self.block_bytes()
    }

    pub const fn name(self) -> &'static str {
        self.layout().name
    }

    /// The activation format of this type's dot products.
    #[inline]
    pub const fn activations(self) -> ActFormat {
        self.layout().activations
    }
}

/// Checks that `row` and the activations `act` (in `kind`'s activation format) hold
/// matching numbers of blocks and returns that number. Panics otherwise: the SIMD kernels
/// read through raw pointers and rely on this check.
#[inline]
pub fn check_lens(kind: DotType, row: &[u8], act: &[u8]) -> usize {
    let act_bytes = kind.activations().block_bytes();
    let nb = act.len() / act_bytes;
    assert!(
        act.len() == nb * act_bytes && row.len() == kind.row_meta() + nb * kind.block_bytes(),
        "{}: row of {} bytes does not match {} bytes of {} activations",
        kind.name(),
        row.len(),
        act.len(),
        kind.activations().name()
    );
    nb
}

/// Activation rows for the tile kernels: `len()` rows of equal length, one after the
/// other, in one activation format. For Q8_K, whether any quant is -128 is noted once,
/// here: the AVX2 4-bit kernels take a cheaper sign trick when none is (Q8_K from
/// `quantize_row` never holds -128).
#[derive(Clone, Copy, Debug)]
pub struct ActRows<'a> {
    bytes: &'a [u8],
    n: usize,
    format: ActFormat,
    has_min8: bool,
}

impl<'a> ActRows<'a> {
    /// `n` rows of Q8_K in `bytes` (see [`ActRows::with_format`]).
    pub fn new(bytes: &'a [u8], n: usize) -> ActRows<'a> {
        ActRows::with_format(ActFormat::Q8K, bytes, n)
    }

    /// `n` rows of `format` in `bytes`. Panics unless `bytes` splits into `n` rows of whole
    /// blocks (no bytes for no rows).
    pub fn with_format(format: ActFormat, bytes: &'a [u8], n: usize) -> ActRows<'a> {
        let row_bytes = bytes.len().checked_div(n).unwrap_or(0);
        let block = format.block_bytes();
        assert!(
            row_bytes * n == bytes.len() && row_bytes / block * block == row_bytes,
            "{} bytes are not {} rows of whole {}-byte {} blocks",
            bytes.len(),
            n,
            block,
            format.name()
        );
        let has_min8 = match format {
            ActFormat::Q8K => bytes
                .chunks_exact(Q8K_BYTES)
                .any(|b| b[Q8K_QS..Q8K_BSUMS].contains(&0x80)),
        };
        ActRows {
            bytes,
            n,
            format,
            has_min8,
        }
    }

    /// The activation format of the rows.
    pub fn format(&self) -> ActFormat {
        self.format
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
    assert!(
        acts.format() == kind.activations(),
        "{}: dots against {}, not {}",
        kind.name(),
        kind.activations().name(),
        acts.format().name()
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

/// Checks `rows` holds `nrows` rows that match `act` (whole blocks of `kind`'s activation
/// format); returns the number of 256-weight blocks per row and the bytes of a row. Panics
/// otherwise.
pub fn check_rows(kind: DotType, rows: &[u8], act: &[u8], nrows: usize) -> (usize, usize) {
    let act_bytes = kind.activations().block_bytes();
    let nb = act.len() / act_bytes;
    let row_bytes = kind.row_meta() + nb * kind.block_bytes();
    assert!(
        act.len() == nb * act_bytes && rows.len() == nrows * row_bytes,
        "{}: {} bytes are not {} rows matching {} bytes of {} activations",
        kind.name(),
        rows.len(),
        nrows,
        act.len(),
        kind.activations().name()
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

/// [`rd_u16`] at a raw pointer (the SIMD kernels read checked rows through pointers).
///
/// # Safety
/// `p` must point at 2 readable bytes.
#[inline]
pub unsafe fn rd_u16_at(p: *const u8) -> u16 {
    u16::from_le_bytes([*p, *p.add(1)])
}

/// A little-endian u32 at a raw pointer.
///
/// # Safety
/// `p` must point at 4 readable bytes.
#[inline]
pub unsafe fn rd_u32_at(p: *const u8) -> u32 {
    u32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

/// [`rd_f32`] at a raw pointer.
///
/// # Safety
/// `p` must point at 4 readable bytes.
#[inline]
pub unsafe fn rd_f32_at(p: *const u8) -> f32 {
    f32::from_bits(rd_u32_at(p))
}

/// The row scale of a KS row (fp16 for IQ2_KS/IQ3_KS, f32 for IQ4_KS/IQ5_KS), as f32.
#[inline]
pub fn row_scale(kind: DotType, row: &[u8]) -> f32 {
    match kind.layout().row_scale {
        RowScale::F32 => rd_f32(row, 0),
        RowScale::F16 => f16_to_f32(rd_u16(row, 0)),
        RowScale::None => 1.0,
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
    (kind.layout().decode)(x, out)
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
    if kind.layout().block_scale {
        f16_to_f32(rd_u16(x, 0))
    } else {
        1.0
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
        acc = if kind.layout().block_scale {
            acc_k(acc, block_scale(kind, x), rd_f32(y, 0), s)
        } else {
            acc_ks(acc, rd_f32(y, 0), s)
        };
    }
    if kind.layout().block_scale {
        finish_k(acc)
    } else {
        finish_ks(acc, row_scale(kind, row))
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
