//! The type registry: one descriptor ([`TypeInfo`]) per quantization type, the single source
//! of truth for its ids, names, sizes, quantizer, dequantizer, imatrix handling and dot-product
//! kernel, in the spirit of ggml's `type_traits` rows. `ops` reads everything per type from
//! here; Python's `iqk_rs.QuantType` and the GGUF size arithmetic are generated from this table.
//! The IQK types' block layouts (sizes, row prefix, decoder, activation format) are the
//! dependency-free layout module's (`simd::DotType::layout`); their rows here take them from it.

use crate::companion;
use crate::error::{IqkError, Result};
use crate::iqk::best;
use crate::iqk::iq2_ks::Iq2KsSearch;
use crate::iqk::{iq2_k, iq2_ks, iq3_k, iq3_ks, iq4_k, iq4_ks, iq5_ks};
use crate::numeric::sanitized_row_weights;
use crate::simd::{self, ActFormat, DotType};

/// Elements per super-block of the K-family types (the layout module's).
pub const QK_K: usize = crate::simd::QK;

/// A quantization type this crate reads or writes. Discriminants are ggml type ids as
/// ik_llama.cpp numbers them (which differ from mainline ggml for the ik-only types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum QuantType {
    Iq2K = 137,
    Iq3K = 138,
    Iq4K = 139,
    Iq4Ks = 144,
    Iq2Ks = 145,
    Iq3Ks = 156,
    Iq5Ks = 152,
    // Companion types that ik_llama.cpp's quantization mixes use.
    Q5_0 = 6,
    Q8_0 = 8,
    Q2K = 10,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    Iq4Nl = 20,
    Q6_0 = 133,
    Iq5K = 140,
    Iq6K = 141,
}

/// Options of quantization (see `ops::quantize`); each type's quantizer reads what concerns it.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuantizeOptions {
    /// Which IQ2_KS search to reproduce (ignored by the other types).
    pub iq2ks_search: Iq2KsSearch,
    /// `Some`: the lower-error search of `iqk::best` under this objective instead of ik's bytes.
    pub best: Option<best::Objective>,
    /// Worker threads; `None` uses every core.
    pub threads: Option<usize>,
}

/// How a type's quantizer uses an importance matrix, as ik_llama.cpp's does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Importance {
    /// Not at all (Q8_0).
    Ignored,
    /// As given (the legacy and k-quant types). A block whose importances are all zero, or
    /// whose fit still yields a non-finite scale, is quantized as without an imatrix.
    Raw,
    /// Sanitised per this many columns first (ik's `QHelper::row_weights`): a block whose
    /// importances or values all but vanish gets a tiny uniform weight.
    Sanitized(usize),
}

/// Quantizes one row (`x`, importances `weights` as [`Importance`] prepared them) into `out`
/// (the row's bytes, its prefix included).
pub type QuantizeRowFn = fn(x: &[f32], weights: Option<&[f32]>, out: &mut [u8], &QuantizeOptions);

/// Quantizes a whole chunk of rows at once, without an imatrix.
pub type QuantizeChunkFn = fn(x: &[f32], out: &mut [u8]);

/// Dequantizes one row's bytes (its prefix included) into `out`.
pub type DequantizeRowFn = fn(row: &[u8], out: &mut [f32]);

/// Everything the crate knows about one type: its descriptor.
#[derive(Debug, Clone, Copy)]
pub struct TypeInfo {
    pub qtype: QuantType,
    /// Lower-case name as ggml prints it (`"iq4_k"`, `"q6_K"`).
    pub name: &'static str,
    /// ggml type id (GGUF tensor type).
    pub ggml_id: u32,
    /// `LLAMA_FTYPE_MOSTLY_*` number written to GGUF `general.file_type` for a model "mostly" of
    /// this type (ik_llama.cpp's numbering; for Q4_K/Q5_K the `_M` mix).
    pub llama_ftype: u32,
    /// Elements per block.
    pub block_size: usize,
    /// Bytes per block.
    pub type_size: usize,
    /// Bytes at the start of every row before its blocks (KS types' row scale).
    pub row_meta_size: usize,
    /// One of the IQK types this crate was built for (the rest are companions).
    pub is_iqk: bool,
    /// Byte offsets, within each block, of its fp16 scales (d, dmin): with the row prefix
    /// (an fp16 scale when it has 2 bytes, an f32 one when 4), the only bytes that can make
    /// a block decode to NaN or infinity; everything else is a bounded integer.
    pub block_f16_scales: &'static [usize],
    /// How the quantizer uses an importance matrix.
    pub importance: Importance,
    /// ik's quantizer of one row.
    pub quantize_row: QuantizeRowFn,
    /// `Some` when, without an imatrix, ik's quantizer looks at a whole chunk of rows at once
    /// (Q2_K's ternary-model test), so the rows cannot be quantized independently.
    pub quantize_chunk: Option<QuantizeChunkFn>,
    /// ik's `dequantize_row_*` (the CPU `to_float`).
    pub dequantize_row: DequantizeRowFn,
    /// The layout module's kind, whose dot-product kernels (every SIMD path) this type uses;
    /// `None`: no dot product.
    pub kernel: Option<DotType>,
}

/// Two descriptors are equal when they describe the same type (the table has one per type).
impl PartialEq for TypeInfo {
    fn eq(&self, other: &Self) -> bool {
        self.qtype == other.qtype
    }
}

impl TypeInfo {
    /// Bits per weight of the blocks alone (the per-row prefix excluded).
    pub fn bits_per_weight(&self) -> f64 {
        (self.type_size * 8) as f64 / self.block_size as f64
    }

    /// The activation format of the dot product, if the type has one.
    pub fn activations(&self) -> Option<ActFormat> {
        self.kernel.map(DotType::activations)
    }

    /// The importances the quantizer sees for row `x` (see [`Importance`]), sanitised into
    /// `scratch` when the type wants that.
    pub fn importances<'a>(
        &self,
        imatrix: Option<&'a [f32]>,
        x: &[f32],
        scratch: &'a mut Vec<f32>,
    ) -> Option<&'a [f32]> {
        let im = imatrix?;
        match self.importance {
            Importance::Ignored => None,
            Importance::Raw => Some(im),
            Importance::Sanitized(block) => {
                scratch.resize(x.len(), 0.0);
                sanitized_row_weights(im, x, block, scratch);
                Some(&scratch[..])
            }
        }
    }

    /// Quantize rows of `n_per_row` exactly as one ik_llama.cpp `ggml_quantize_chunk` call
    /// over them does: no input checks, no repair of blocks whose fit fails (`ops::quantize`
    /// adds those). `out` holds the rows' bytes.
    pub fn quantize_chunk_as_ik(
        &self,
        x: &[f32],
        n_per_row: usize,
        imatrix: Option<&[f32]>,
        out: &mut [u8],
        opts: &QuantizeOptions,
    ) {
        if let (Some(chunk), None) = (self.quantize_chunk, imatrix) {
            return chunk(x, out);
        }
        let row_size = out.len() / (x.len() / n_per_row).max(1);
        let mut scratch = Vec::new();
        for (xr, yr) in x
            .chunks_exact(n_per_row)
            .zip(out.chunks_exact_mut(row_size))
        {
            let w = self.importances(imatrix, xr, &mut scratch);
            (self.quantize_row)(xr, w, yr, opts);
        }
    }
}

/// The row of an IQK type: names and sizes from the layout module's `kind`.
const fn iqk(
    qtype: QuantType,
    llama_ftype: u32,
    kind: DotType,
    sanitize_block: usize,
    quantize_row: QuantizeRowFn,
    dequantize_row: DequantizeRowFn,
) -> TypeInfo {
    let layout = kind.layout();
    TypeInfo {
        qtype,
        name: layout.name,
        ggml_id: qtype as u32,
        llama_ftype,
        block_size: QK_K,
        type_size: layout.block_bytes,
        row_meta_size: layout.row_scale.bytes(),
        is_iqk: true,
        block_f16_scales: if layout.block_scale { &[0] } else { &[] },
        importance: Importance::Sanitized(sanitize_block),
        quantize_row,
        quantize_chunk: None,
        dequantize_row,
        kernel: Some(kind),
    }
}

/// The row of a companion type (no row prefix, no kernel here).
#[allow(clippy::too_many_arguments)]
const fn companion(
    qtype: QuantType,
    name: &'static str,
    llama_ftype: u32,
    (block_size, type_size): (usize, usize),
    block_f16_scales: &'static [usize],
    importance: Importance,
    quantize_row: QuantizeRowFn,
    dequantize_row: DequantizeRowFn,
) -> TypeInfo {
    TypeInfo {
        qtype,
        name,
        ggml_id: qtype as u32,
        llama_ftype,
        block_size,
        type_size,
        row_meta_size: 0,
        is_iqk: false,
        block_f16_scales,
        importance,
        quantize_row,
        quantize_chunk: None,
        dequantize_row,
        kernel: None,
    }
}

// ik's `QHelper` sanitising block: 16 columns for the K types, 32 for the KS types.
const K_BLOCK: usize = 16;
const KS_BLOCK: usize = 32;

/// Every registered type, the IQK types first.
pub const TYPES: [TypeInfo; 17] = [
    iqk(
        QuantType::Iq2K,
        138,
        DotType::Iq2K,
        K_BLOCK,
        |x, w, out, _| iq2_k::quantize_row(x, w, out),
        |row, out| simd::dequantize_row(DotType::Iq2K, row, out),
    ),
    iqk(
        QuantType::Iq3K,
        139,
        DotType::Iq3K,
        K_BLOCK,
        |x, w, out, _| iq3_k::quantize_row(x, w, out),
        |row, out| simd::dequantize_row(DotType::Iq3K, row, out),
    ),
    iqk(
        QuantType::Iq4K,
        140,
        DotType::Iq4K,
        K_BLOCK,
        |x, w, out, _| iq4_k::quantize_row(x, w, out),
        |row, out| simd::dequantize_row(DotType::Iq4K, row, out),
    ),
    iqk(
        QuantType::Iq2Ks,
        147,
        DotType::Iq2Ks,
        KS_BLOCK,
        |x, w, out, opts| iq2_ks::quantize_row(x, w, out, opts.iq2ks_search),
        |row, out| simd::dequantize_row(DotType::Iq2Ks, row, out),
    ),
    iqk(
        QuantType::Iq3Ks,
        154,
        DotType::Iq3Ks,
        KS_BLOCK,
        |x, w, out, _| iq3_ks::quantize_row(x, w, out),
        |row, out| simd::dequantize_row(DotType::Iq3Ks, row, out),
    ),
    iqk(
        QuantType::Iq4Ks,
        145,
        DotType::Iq4Ks,
        KS_BLOCK,
        |x, w, out, _| iq4_ks::quantize_row(x, w, out),
        |row, out| simd::dequantize_row(DotType::Iq4Ks, row, out),
    ),
    iqk(
        QuantType::Iq5Ks,
        150,
        DotType::Iq5Ks,
        KS_BLOCK,
        |x, w, out, _| iq5_ks::quantize_row(x, w, out),
        |row, out| simd::dequantize_row(DotType::Iq5Ks, row, out),
    ),
    companion(
        QuantType::Q8_0,
        "q8_0",
        7,
        (32, 34),
        &[0],
        Importance::Ignored,
        |x, _, out, _| companion::quantize_q8_0(x, out),
        companion::dequantize_q8_0,
    ),
    companion(
        QuantType::Q5_0,
        "q5_0",
        8,
        (32, 22),
        &[0],
        Importance::Raw,
        |x, w, out, _| companion::quantize_q5_0(x, w, out),
        companion::dequantize_q5_0,
    ),
    companion(
        QuantType::Q6_0,
        "q6_0",
        135,
        (32, 26),
        &[0],
        Importance::Raw,
        |x, w, out, _| companion::quantize_q6_0(x, w, out),
        companion::dequantize_q6_0,
    ),
    companion(
        QuantType::Iq4Nl,
        "iq4_nl",
        25,
        (32, 18),
        &[0],
        Importance::Raw,
        |x, w, out, _| companion::quantize_iq4_nl(x, w, out),
        companion::dequantize_iq4_nl,
    ),
    TypeInfo {
        quantize_chunk: Some(companion::quantize_q2_k_ref),
        ..companion(
            QuantType::Q2K,
            "q2_K",
            10,
            (QK_K, 84),
            &[80, 82],
            Importance::Raw,
            |x, w, out, _| match w {
                None => companion::quantize_q2_k_ref(x, out),
                Some(w) => companion::quantize_q2_k_impl(x, w, out),
            },
            companion::dequantize_q2_k,
        )
    },
    companion(
        QuantType::Q4K,
        "q4_K",
        15,
        (QK_K, 144),
        &[0, 2],
        Importance::Raw,
        |x, w, out, _| companion::quantize_q4_k(x, w, out),
        companion::dequantize_q4_k,
    ),
    companion(
        QuantType::Q5K,
        "q5_K",
        17,
        (QK_K, 176),
        &[0, 2],
        Importance::Raw,
        |x, w, out, _| companion::quantize_q5_k(x, w, out),
        companion::dequantize_q5_k,
    ),
    companion(
        QuantType::Q6K,
        "q6_K",
        18,
        (QK_K, 210),
        &[208],
        Importance::Raw,
        |x, w, out, _| companion::quantize_q6_k(x, w, out),
        companion::dequantize_q6_k,
    ),
    companion(
        QuantType::Iq5K,
        "iq5_k",
        141,
        (QK_K, companion::IQ5K_BLOCK_BYTES),
        &[0],
        Importance::Sanitized(K_BLOCK),
        |x, w, out, _| companion::quantize_iq5_k(x, w, out),
        companion::dequantize_iq5_k,
    ),
    companion(
        QuantType::Iq6K,
        "iq6_k",
        142,
        (QK_K, companion::IQ6K_BLOCK_BYTES),
        &[0],
        Importance::Sanitized(K_BLOCK),
        |x, w, out, _| companion::quantize_iq6_k(x, w, out),
        companion::dequantize_iq6_k,
    ),
];

impl QuantType {
    pub fn info(self) -> &'static TypeInfo {
        TYPES
            .iter()
            .find(|t| t.qtype == self)
            .expect("every QuantType has a TYPES entry")
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Look a type up by name, case-insensitively (`"IQ4_K"`, `"iq4_k"`, `"Q6_K"`).
    pub fn from_name(name: &str) -> Result<Self> {
        let wanted = name.trim();
        TYPES
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(wanted))
            .map(|t| t.qtype)
            .ok_or_else(|| IqkError::UnknownType(name.to_string(), known_names()))
    }

    pub fn from_ggml_id(id: u32) -> Result<Self> {
        TYPES
            .iter()
            .find(|t| t.ggml_id == id)
            .map(|t| t.qtype)
            .ok_or_else(|| IqkError::UnknownType(format!("ggml id {id}"), known_names()))
    }

    /// Bytes of one row of `n_per_row` elements, the per-row prefix included.
    pub fn row_size(self, n_per_row: usize) -> Result<usize> {
        let t = self.info();
        if !n_per_row.is_multiple_of(t.block_size) {
            return Err(IqkError::Shape(format!(
                "row length {n_per_row} is not a multiple of {}'s block size {}",
                t.name, t.block_size
            )));
        }
        (n_per_row / t.block_size)
            .checked_mul(t.type_size)
            .and_then(|body| body.checked_add(t.row_meta_size))
            .ok_or_else(|| {
                IqkError::Shape(format!(
                    "row length {n_per_row} is too large: a {} row of it overflows the address space",
                    t.name
                ))
            })
    }

    /// The row length whose row takes exactly `row_bytes` bytes, if there is one.
    pub fn n_per_row_for_bytes(self, row_bytes: usize) -> Result<usize> {
        let t = self.info();
        let body = row_bytes.checked_sub(t.row_meta_size).unwrap_or(usize::MAX);
        if row_bytes <= t.row_meta_size || !body.is_multiple_of(t.type_size) {
            return Err(IqkError::Shape(format!(
                "{row_bytes} bytes is not a valid {} row size ({} + a multiple of {})",
                t.name, t.row_meta_size, t.type_size
            )));
        }
        (body / t.type_size)
            .checked_mul(t.block_size)
            .ok_or_else(|| IqkError::Shape(format!("{row_bytes} bytes is too large a row size")))
    }
}

fn known_names() -> String {
    TYPES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, t) in TYPES.iter().enumerate() {
            // The row a type finds is its own (TypeInfo's == compares the type only).
            let found = t.qtype.info();
            assert_eq!(
                (found.ggml_id, found.name, found.type_size, found.block_size),
                (t.ggml_id, t.name, t.type_size, t.block_size),
                "{}",
                t.name
            );
            for u in &TYPES[..i] {
                assert!(u.qtype != t.qtype && u.ggml_id != t.ggml_id && u.name != t.name);
            }
            assert_eq!(
                QuantType::from_name(&t.name.to_uppercase()).unwrap(),
                t.qtype
            );
            assert_eq!(QuantType::from_ggml_id(t.ggml_id).unwrap(), t.qtype);
            let n = 4 * QK_K;
            assert_eq!(
                t.qtype
                    .n_per_row_for_bytes(t.qtype.row_size(n).unwrap())
                    .unwrap(),
                n
            );
        }
    }

    #[test]
    fn ks_rows_carry_their_scale() {
        assert_eq!(QuantType::Iq2Ks.row_size(4096).unwrap(), 2 + 16 * 70);
        assert_eq!(QuantType::Iq4Ks.row_size(256).unwrap(), 4 + 136);
        assert!(QuantType::Iq4K.row_size(100).is_err());
        assert!(QuantType::Iq4Ks.n_per_row_for_bytes(136).is_err());
        assert!(QuantType::from_name("iq9_k").is_err());
    }

    #[test]
    fn sizes_near_the_address_space_limit_are_errors_not_wrapped() {
        for t in &TYPES {
            for n in [usize::MAX / t.block_size * t.block_size, 1 << 60, 1 << 40] {
                let exact =
                    (n / t.block_size) as u128 * t.type_size as u128 + t.row_meta_size as u128;
                match t.qtype.row_size(n) {
                    Ok(bytes) => assert_eq!(bytes as u128, exact, "{}", t.name),
                    Err(_) => assert!(exact > usize::MAX as u128, "{}", t.name),
                }
            }
            let bytes = (usize::MAX - 8) / t.type_size * t.type_size + t.row_meta_size;
            let exact = ((bytes - t.row_meta_size) / t.type_size) as u128 * t.block_size as u128;
            match t.qtype.n_per_row_for_bytes(bytes) {
                Ok(n) => assert_eq!(n as u128, exact, "{}", t.name),
                Err(_) => assert!(exact > usize::MAX as u128, "{}", t.name),
            }
        }
        assert!(QuantType::Q8_0.row_size(usize::MAX - 255).is_err());
    }
}
