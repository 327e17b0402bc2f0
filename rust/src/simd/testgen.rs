//! Test-input generators for the kernel tests. Not part of the library: included with
//! `#[path]` by `tests/simd_kernels.rs` and by the standalone NEON harness
//! (`neon_harness.rs`). Dependency-free and Rust 1.63-compatible; expects a sibling module
//! `scalar` (the caller declares both).

#![allow(dead_code)]

use super::scalar::{DotType, RowScale, Q8K_BSUMS, Q8K_BYTES, Q8K_QS, QK};

/// splitmix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// fp16 bit patterns that stress the scale handling: ±0, smallest/largest subnormal,
/// smallest normal, 1, ±65504, ±inf, NaN.
pub const F16_SPECIAL: [u16; 11] = [
    0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x3c00, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00,
];

/// f32 row scales for IQ4_KS that stress the finish step.
pub const F32_SPECIAL: [f32; 9] = [
    0.0,
    -0.0,
    1e-38,
    1.0e-30,
    3.0e38,
    -2.5e37,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
];

/// A random finite fp16 of moderate magnitude (2^-14 .. 2^3), random sign.
pub fn f16_moderate(rng: &mut Rng) -> u16 {
    let exp = 1 + rng.below(17) as u16; // biased exponent 1..=17 -> 2^-14 .. 2^2
    let man = rng.below(1024) as u16;
    let sign = (rng.below(2) as u16) << 15;
    sign | (exp << 10) | man
}

fn f16_scale(rng: &mut Rng, special: bool) -> u16 {
    if special {
        F16_SPECIAL[rng.below(F16_SPECIAL.len() as u64) as usize]
    } else {
        f16_moderate(rng)
    }
}

/// Byte ranges of one block, from the layout module: (end of the fp16 d, 0 when the block
/// has none; end of the header; end of the block). d starts at 0, the header after d, the
/// quants after the header.
pub fn layout(kind: DotType) -> (usize, usize, usize) {
    let l = kind.layout();
    (
        if l.block_scale { 2 } else { 0 },
        l.header_bytes,
        l.block_bytes,
    )
}

/// How a block's bytes are chosen.
#[derive(Clone, Copy, Debug)]
pub enum Fill {
    /// Every byte random (fp16 d: moderate, or one of the special values 1 in 8).
    Random,
    /// Every header byte (scales, extra/shift bits, sign bits) equal to `t` (0..=255), so a
    /// sweep over t visits every scale code and every shift bit in every position; quants
    /// random, except all-zero indices when `t % 4 == 0` (the most negative table value).
    Sweep(u8),
}

pub fn fill_block(kind: DotType, rng: &mut Rng, blk: &mut [u8], fill: Fill) {
    let (dend, hend, end) = layout(kind);
    assert_eq!(blk.len(), end);
    if dend == 2 {
        let special = rng.below(8) == 0;
        let d = f16_scale(rng, special);
        blk[0..2].copy_from_slice(&d.to_le_bytes());
    }
    match fill {
        Fill::Random => {
            for b in blk[dend..end].iter_mut() {
                *b = rng.byte();
            }
        }
        Fill::Sweep(t) => {
            for b in blk[dend..hend].iter_mut() {
                *b = t;
            }
            let zero = t % 4 == 0;
            for b in blk[hend..end].iter_mut() {
                *b = if zero { 0 } else { rng.byte() };
            }
        }
    }
}

/// A row of `nb` blocks, with the KS row scale in front. `fill(i)` chooses each block's fill.
pub fn make_row(kind: DotType, rng: &mut Rng, nb: usize, fill: &dyn Fn(usize) -> Fill) -> Vec<u8> {
    let meta = kind.row_meta();
    let bb = kind.block_bytes();
    let mut row = vec![0u8; meta + nb * bb];
    match kind.layout().row_scale {
        RowScale::F16 => {
            let special = rng.below(6) == 0;
            let d = f16_scale(rng, special);
            row[0..2].copy_from_slice(&d.to_le_bytes());
        }
        RowScale::F32 => {
            let d = if rng.below(6) == 0 {
                F32_SPECIAL[rng.below(F32_SPECIAL.len() as u64) as usize]
            } else {
                rng.unit() * 10f32.powi(rng.below(7) as i32 - 3)
            };
            row[0..4].copy_from_slice(&d.to_le_bytes());
        }
        RowScale::None => {}
    }
    for i in 0..nb {
        let f = fill(i);
        fill_block(kind, rng, &mut row[meta + i * bb..meta + (i + 1) * bb], f);
    }
    row
}

/// How activations are chosen.
#[derive(Clone, Copy, Debug)]
pub enum Act {
    /// Uniform int8 in [-128, 127].
    Random,
    /// Uniform int8 in [-127, 127], as Q8_K quantization gives (never -128).
    NoMin,
    /// Only -128 and 127 (maximal products, overflow stress).
    Extreme,
    /// All -128.
    AllMin,
    /// All +127.
    AllMax,
}

/// `nb` Q8_K blocks with consistent block sums (the kernels' invariant) and `sum = d·Σq`.
pub fn make_q8k(rng: &mut Rng, nb: usize, act: &dyn Fn(usize) -> Act) -> Vec<u8> {
    let mut out = vec![0u8; nb * Q8K_BYTES];
    for i in 0..nb {
        let y = &mut out[i * Q8K_BYTES..(i + 1) * Q8K_BYTES];
        let d: f32 = match rng.below(10) {
            0 => 1e-38,
            1 => 3.0e38,
            _ => (rng.unit().abs() + 1e-3) * 0.05,
        };
        let mode = act(i);
        let mut total = 0i32;
        for k in 0..16 {
            let mut bsum = 0i32;
            for j in 0..16 {
                let q: i8 = match mode {
                    Act::Random => rng.byte() as i8,
                    Act::NoMin => (rng.below(255) as i32 - 127) as i8,
                    Act::Extreme => {
                        if rng.below(2) == 0 {
                            -128
                        } else {
                            127
                        }
                    }
                    Act::AllMin => -128,
                    Act::AllMax => 127,
                };
                y[Q8K_QS + 16 * k + j] = q as u8;
                bsum += q as i32;
            }
            y[Q8K_BSUMS + 2 * k..Q8K_BSUMS + 2 * k + 2]
                .copy_from_slice(&(bsum as i16).to_le_bytes());
            total += bsum;
        }
        y[0..4].copy_from_slice(&d.to_le_bytes());
        y[4..8].copy_from_slice(&(d * total as f32).to_le_bytes());
    }
    let _ = QK;
    out
}

/// Bit-identical, with every NaN equal to every NaN.
pub fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// One randomized case: (row, activations). `case` selects the flavour deterministically so
/// a loop over `case` visits sweeps, extreme activations and plain random data.
pub fn random_case(kind: DotType, rng: &mut Rng, case: usize) -> (Vec<u8>, Vec<u8>) {
    let nb = 1 + rng.below(6) as usize;
    let base = (case * 7) % 256;
    let flavour = case % 4;
    let row = match flavour {
        0 | 1 => make_row(kind, rng, nb, &|i| {
            Fill::Sweep(((base + 97 * i) % 256) as u8)
        }),
        _ => make_row(kind, rng, nb, &|_| Fill::Random),
    };
    let q8 = match flavour {
        0 => make_q8k(rng, nb, &|i| {
            if i % 2 == 0 {
                Act::AllMin
            } else {
                Act::AllMax
            }
        }),
        1 | 3 => make_q8k(rng, nb, &|_| Act::Extreme),
        _ => make_q8k(rng, nb, &|_| Act::Random),
    };
    (row, q8)
}

/// Reads a whole file of little-endian f64.
pub fn read_f64s(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            f64::from_le_bytes(a)
        })
        .collect()
}

/// The golden cases: (name, nrows, ncols), as in `shared/golden/manifest.json`.
pub const GOLDEN_CASES: [(&str, usize, usize); 4] = [
    ("gauss", 32, 4096),
    ("heavy", 16, 2048),
    ("edge", 12, 512),
    ("synthetic", 16, 1024),
];
