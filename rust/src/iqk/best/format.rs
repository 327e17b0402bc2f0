//! What the search needs to know about each of the six formats: block size, grid, the block
//! scale codes a block may store, where the shared scale d lives, and how a block's choice is
//! packed. The packing must agree with the type's own dequantizer; the tests decode what is
//! packed here with it.

use super::super::common::{high1_position, low2_position, rd_u16, write_u16, Weighting};
use super::super::{iq2_k, iq3_k};
use crate::numeric::{f16_to_f32, f32_to_f16};
use crate::registry::{QuantType, QK_K};
use crate::simd::{Layout, RowScale};
use crate::tables::{Grid, IQ2_GRIDS, IQ3_GRIDS, IQ4_GRIDS};

use super::Objective;

pub struct Format {
    pub qtype: QuantType,
    /// Elements per block (one scale code and one shifted-grid flag each).
    pub sub: usize,
    pub grids: &'static [Grid; 2],
    /// Block scale codes: every l in `lo..=hi` with `(l - lo) % step == 0`.
    pub lo: i32,
    pub hi: i32,
    pub step: usize,
    /// ik's importance weighting for this type.
    pub weighting: Weighting,
    /// What `search="best"` minimises for this type: the weighting whose files had the lower
    /// KL divergence from the unquantized model (benches/bench_kld.py; README table).
    pub objective: Objective,
    /// Whether each block's curves are built over a window of scales only (mod.rs, `window`):
    /// for the _K types, whose d is per super-block. The _KS types search one d for the whole
    /// row, and windows raised their files' KL divergence (SmolLM2 IQ4_KS 0.0644 -> 0.0652,
    /// IQ3_KS 0.1552 -> 0.1590), so they build whole curves.
    pub windowed: bool,
    /// What the stored d is multiplied by once the codes are chosen: ik's own factor for the
    /// type (IQ2_K 1.03, IQ3_K 1.01; ik_llama.cpp PR #81), which trades weighted error for
    /// perplexity by undoing part of the shrinkage of a least-squares fit.
    pub scale_factor: f32,
}

impl Format {
    /// The format of a type the best search knows; other types keep ik's bytes.
    pub fn of(qtype: QuantType) -> Option<&'static Format> {
        Some(match qtype {
            QuantType::Iq2K => &IQ2K,
            QuantType::Iq3K => &IQ3K,
            QuantType::Iq4K => &IQ4K,
            QuantType::Iq2Ks => &IQ2KS,
            QuantType::Iq3Ks => &IQ3KS,
            QuantType::Iq4Ks => &IQ4KS,
            _ => return None,
        })
    }

    /// The type's block layout: sizes and where d lives come from there.
    fn layout(&self) -> Layout {
        self.qtype
            .info()
            .kernel
            .expect("the best search's types have kernels")
            .layout()
    }

    /// d is shared by a row (the _KS types) rather than by a super-block.
    pub fn per_row(&self) -> bool {
        self.layout().row_scale != RowScale::None
    }

    /// d is stored as f32 (IQ4_KS), otherwise as fp16.
    fn f32_scale(&self) -> bool {
        self.layout().row_scale == RowScale::F32
    }

    /// Bytes of a 256-weight super-block.
    pub fn block_bytes(&self) -> usize {
        self.layout().block_bytes
    }

    /// Bytes before the first super-block of a row (the _KS types' d).
    pub fn row_meta(&self) -> usize {
        self.layout().row_scale.bytes()
    }

    /// Decode a row (or, for the _K types, any run of whole super-blocks).
    pub fn dequantize(&self, row: &[u8], out: &mut [f32]) {
        crate::ops::dequantize_row(self.qtype, row, out)
    }

    pub fn codes(&self) -> impl Iterator<Item = i32> + '_ {
        (self.lo..=self.hi).step_by(self.step)
    }

    /// Whether negating d reaches scale codes it could not reach otherwise.
    pub fn asymmetric(&self) -> bool {
        self.lo != -self.hi
    }

    /// d as it will be stored and read back.
    pub fn stored(&self, d: f32) -> f32 {
        if self.f32_scale() {
            d
        } else {
            f16_to_f32(f32_to_f16(d))
        }
    }

    /// The stored d of super-block `ibl` of a row in this format.
    pub fn read_d(&self, row: &[u8], ibl: usize) -> f32 {
        if self.per_row() {
            if self.f32_scale() {
                f32::from_le_bytes(row[0..4].try_into().unwrap())
            } else {
                f16_to_f32(rd_u16(row, 0))
            }
        } else {
            f16_to_f32(rd_u16(row, ibl * self.block_bytes()))
        }
    }

    /// Store d for super-block `ibl` (or the row).
    pub fn write_d(&self, row: &mut [u8], ibl: usize, d: f32) {
        if self.per_row() {
            if self.f32_scale() {
                row[0..4].copy_from_slice(&d.to_le_bytes());
            } else {
                write_u16(row, 0, f32_to_f16(d));
            }
        } else {
            write_u16(row, ibl * self.block_bytes(), f32_to_f16(d));
        }
    }

    /// Byte range of super-block `ibl` within a row.
    pub fn superblock(&self, ibl: usize) -> std::ops::Range<usize> {
        let s = self.row_meta() + ibl * self.block_bytes();
        s..s + self.block_bytes()
    }

    /// Pack block `ib` of super-block `y` (zeroed beforehand, d excepted): scale code `l`,
    /// grid half `shifted`, grid indices `idx`.
    pub fn put_block(&self, y: &mut [u8], ib: usize, l: i32, shifted: bool, idx: &[u8]) {
        let base = self.sub * ib;
        match self.qtype {
            QuantType::Iq2K => {
                let extra = rd_u16(y, 2) | (shifted as u16) << ib;
                write_u16(y, 2, extra);
                y[4 + ib / 2] |= ((l + 8) as u8) << (4 * (ib % 2));
                put_low2(y, 12, base, idx);
            }
            QuantType::Iq3K => {
                write_u16(y, 2, rd_u16(y, 2) | (shifted as u16) << ib);
                write_u16(y, 4, rd_u16(y, 4) | ((l < 0) as u16) << ib);
                let magnitude = ((l.abs() - 1) / 2) as u8;
                y[6 + ib / 2] |= magnitude << (4 * (ib % 2));
                put_low2(y, 14, base, idx);
                put_high1(y, 78, base, idx);
            }
            QuantType::Iq4K => {
                write_u16(y, 2, rd_u16(y, 2) | (shifted as u16) << ib);
                let code = (l + 32) as u8;
                y[8 + ib / 2] |= (code & 0xf) << (4 * (ib % 2));
                y[4 + ib / 4] |= (code >> 4) << (2 * (ib % 4));
                for (j, &k) in idx.iter().enumerate() {
                    let i = base + j;
                    y[16 + 16 * (i / 32) + i % 16] |= k << if i % 32 < 16 { 0 } else { 4 };
                }
            }
            QuantType::Iq2Ks => {
                let code = (l + 16) as u16;
                let extra = rd_u16(y, 0) | (shifted as u16) << ib | (code >> 4) << (8 + ib);
                write_u16(y, 0, extra);
                y[2 + ib / 2] |= ((code & 0xf) as u8) << (4 * (ib % 2));
                put_low2(y, 6, base, idx);
            }
            QuantType::Iq3Ks => {
                let code = (l + 16) as u16;
                let extra = rd_u16(y, 0) | (code >> 4) << ib | (shifted as u16) << (8 + ib);
                write_u16(y, 0, extra);
                y[2 + ib % 4] |= ((code & 0xf) as u8) << (4 * (ib / 4));
                put_low2(y, 6, base, idx);
                put_high1(y, 70, base, idx);
            }
            QuantType::Iq4Ks => {
                y[ib] = shifted as u8 | (((l + 127) / 2) as u8) << 1;
                let qs = &mut y[8 + 16 * ib..8 + 16 * (ib + 1)];
                for (j, &k) in idx.iter().enumerate() {
                    qs[j % 16] |= k << if j < 16 { 0 } else { 4 };
                }
            }
            _ => unreachable!("not an IQK type"),
        }
    }
}

fn put_low2(y: &mut [u8], at: usize, base: usize, idx: &[u8]) {
    for (j, &k) in idx.iter().enumerate() {
        let (byte, shift) = low2_position(base + j);
        y[at + byte] |= (k & 3) << shift;
    }
}

fn put_high1(y: &mut [u8], at: usize, base: usize, idx: &[u8]) {
    for (j, &k) in idx.iter().enumerate() {
        let (byte, shift) = high1_position(base + j);
        y[at + byte] |= (k >> 2) << shift;
    }
}

const _: () = assert!(QK_K == 256);

static IQ2K: Format = Format {
    qtype: QuantType::Iq2K,
    sub: 16,
    grids: &IQ2_GRIDS,
    lo: -8,
    hi: 7,
    step: 1,
    weighting: Weighting::Broad,
    objective: Objective::GeometricMean,
    windowed: true,
    scale_factor: iq2_k::SCALE_FACTOR,
};

static IQ3K: Format = Format {
    qtype: QuantType::Iq3K,
    sub: 16,
    grids: &IQ3_GRIDS,
    lo: -31,
    hi: 31,
    step: 2,
    weighting: Weighting::Broad,
    objective: Objective::IkWeights,
    windowed: true,
    scale_factor: iq3_k::SCALE_FACTOR,
};

static IQ4K: Format = Format {
    qtype: QuantType::Iq4K,
    sub: 16,
    grids: &IQ4_GRIDS,
    lo: -32,
    hi: 31,
    step: 1,
    weighting: Weighting::Narrow,
    objective: Objective::IkWeights,
    windowed: true,
    scale_factor: 1.0,
};

static IQ2KS: Format = Format {
    qtype: QuantType::Iq2Ks,
    sub: 32,
    grids: &IQ2_GRIDS,
    lo: -16,
    hi: 15,
    step: 1,
    weighting: Weighting::Broad,
    objective: Objective::GeometricMean,
    windowed: false,
    scale_factor: 1.0,
};

static IQ3KS: Format = Format {
    qtype: QuantType::Iq3Ks,
    sub: 32,
    grids: &IQ3_GRIDS,
    lo: -16,
    hi: 15,
    step: 1,
    weighting: Weighting::Narrow,
    objective: Objective::IkWeights,
    windowed: false,
    scale_factor: 1.0,
};

static IQ4KS: Format = Format {
    qtype: QuantType::Iq4Ks,
    sub: 32,
    grids: &IQ4_GRIDS,
    lo: -127,
    hi: 127,
    step: 2,
    weighting: Weighting::Narrow,
    objective: Objective::IkWeights,
    windowed: false,
    scale_factor: 1.0,
};
