//! The type registry: the single source of truth for every quantization type's ids and sizes.
//! Python's `iqk_rs.QuantType` and the GGUF size arithmetic are generated from this table.

use crate::error::{IqkError, Result};

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

/// Static facts about one type.
#[derive(Debug, Clone, Copy, PartialEq)]
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
}

impl TypeInfo {
    /// Bits per weight of the blocks alone (the per-row prefix excluded).
    pub fn bits_per_weight(&self) -> f64 {
        (self.type_size * 8) as f64 / self.block_size as f64
    }
}

// One row of the table below, positional as ggml's `type_traits` rows are.
#[allow(clippy::too_many_arguments)]
const fn info(
    qtype: QuantType,
    name: &'static str,
    llama_ftype: u32,
    block_size: usize,
    type_size: usize,
    row_meta_size: usize,
    is_iqk: bool,
    block_f16_scales: &'static [usize],
) -> TypeInfo {
    TypeInfo {
        qtype,
        name,
        ggml_id: qtype as u32,
        llama_ftype,
        block_size,
        type_size,
        row_meta_size,
        is_iqk,
        block_f16_scales,
    }
}

/// Every registered type, the IQK types first.
pub const TYPES: [TypeInfo; 17] = [
    info(QuantType::Iq2K, "iq2_k", 138, QK_K, 76, 0, true, &[0]),
    info(QuantType::Iq3K, "iq3_k", 139, QK_K, 110, 0, true, &[0]),
    info(QuantType::Iq4K, "iq4_k", 140, QK_K, 144, 0, true, &[0]),
    info(QuantType::Iq2Ks, "iq2_ks", 147, QK_K, 70, 2, true, &[]),
    info(QuantType::Iq3Ks, "iq3_ks", 154, QK_K, 102, 2, true, &[]),
    info(QuantType::Iq4Ks, "iq4_ks", 145, QK_K, 136, 4, true, &[]),
    info(QuantType::Iq5Ks, "iq5_ks", 150, QK_K, 168, 4, true, &[]),
    info(QuantType::Q8_0, "q8_0", 7, 32, 34, 0, false, &[0]),
    info(QuantType::Q5_0, "q5_0", 8, 32, 22, 0, false, &[0]),
    info(QuantType::Q6_0, "q6_0", 135, 32, 26, 0, false, &[0]),
    info(QuantType::Iq4Nl, "iq4_nl", 25, 32, 18, 0, false, &[0]),
    info(QuantType::Q2K, "q2_K", 10, QK_K, 84, 0, false, &[80, 82]),
    info(QuantType::Q4K, "q4_K", 15, QK_K, 144, 0, false, &[0, 2]),
    info(QuantType::Q5K, "q5_K", 17, QK_K, 176, 0, false, &[0, 2]),
    info(QuantType::Q6K, "q6_K", 18, QK_K, 210, 0, false, &[208]),
    info(QuantType::Iq5K, "iq5_k", 141, QK_K, 176, 0, false, &[0]),
    info(QuantType::Iq6K, "iq6_k", 142, QK_K, 212, 0, false, &[0]),
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
        for t in &TYPES {
            assert_eq!(t.qtype.info(), t);
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
