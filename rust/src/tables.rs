//! Non-uniform value grids of the IQK types (data from ik_llama.cpp's `ggml-common.h`, MIT).
//! Each table has a base half and a shifted half; the shifted half is the base plus a constant
//! (+5, +4, +4), which the SIMD kernels rely on.

/// IQ2_K / IQ2_KS: 4 levels, shifted half = base + 5.
pub const IQ2NL: [i8; 8] = [-31, -13, 1, 17, -26, -8, 6, 22];
/// IQ3_K / IQ3_KS: 8 levels, shifted half = base + 4.
pub const IQ3NL: [i8; 16] = [
    -63, -40, -23, -10, 1, 13, 28, 47, -59, -36, -19, -6, 5, 17, 32, 51,
];
/// IQ4_K / IQ4_KS: 16 levels (base half = IQ4_NL's grid), shifted half = base + 4.
pub const IQ4K: [i8; 32] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113, //
    -123, -100, -79, -61, -45, -31, -18, -6, 5, 17, 29, 42, 57, 73, 93, 117,
];

/// One half (base or shifted) of a value grid.
#[inline(always)]
pub fn half(table: &[i8], shifted: bool) -> &[i8] {
    let n = table.len() / 2;
    if shifted {
        &table[n..]
    } else {
        &table[..n]
    }
}

/// Index of the grid value nearest to `x`, ties to the higher index, with exactly the f32
/// comparison ik's lookup-table versions make: `(x - v[lo]) < (v[hi] - x)`.
#[inline(always)]
pub fn nearest_index(values: &[i8], x: f32) -> usize {
    // `lo` = last value <= x, clamped to [0, n-2]: the interval whose two ends are compared.
    let mut lo = 0;
    while lo + 2 < values.len() && x >= values[lo + 1] as f32 {
        lo += 1;
    }
    if x - (values[lo] as f32) < values[lo + 1] as f32 - x {
        lo
    } else {
        lo + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_halves_are_base_plus_constant() {
        for (table, shift) in [(&IQ2NL[..], 5), (&IQ3NL[..], 4), (&IQ4K[..], 4)] {
            let (b, s) = (half(table, false), half(table, true));
            assert!(b.iter().zip(s).all(|(&b, &s)| s as i32 - b as i32 == shift));
        }
    }

    #[test]
    fn nearest_index_breaks_ties_upwards_and_maps_zero_to_the_middle() {
        let b = half(&IQ2NL, false);
        assert_eq!(nearest_index(b, -22.0), 1); // halfway between -31 and -13
        assert_eq!(nearest_index(b, -22.01), 0);
        assert_eq!(nearest_index(b, 0.0), 2);
        assert_eq!(nearest_index(b, 1e9), 3);
        assert_eq!(nearest_index(b, -1e9), 0);
        assert_eq!(nearest_index(half(&IQ3NL, false), 0.0), 4);
        assert_eq!(nearest_index(half(&IQ3NL, true), 0.0), 4);
        assert_eq!(nearest_index(half(&IQ4K, false), 0.0), 8);
        assert_eq!(nearest_index(half(&IQ4K, true), 0.0), 8);
    }
}
