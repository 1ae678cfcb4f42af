//! crc32c helpers. Owns the fast "append one whole chunk" combine used to assemble a payload's
//! crc from per-chunk crcs, so neither writes nor reads pass over the data twice.

use std::sync::OnceLock;

use crate::format::CHUNK_SIZE;

/// Per-byte lookup tables of the linear map `v -> M·v`, where `M` shifts a crc over
/// `CHUNK_SIZE` zero bytes (the map `crc32c_combine(v, 0, CHUNK_SIZE)`).
type ShiftTables = [[u32; 256]; 4];

fn shift_tables() -> &'static ShiftTables {
    static TABLES: OnceLock<Box<ShiftTables>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut tables = Box::new([[0u32; 256]; 4]);
        for (byte_index, table) in tables.iter_mut().enumerate() {
            for (value, slot) in table.iter_mut().enumerate() {
                let v = (value as u32) << (8 * byte_index);
                *slot = crc32c::crc32c_combine(v, 0, CHUNK_SIZE);
            }
        }
        tables
    })
}

/// `crc32c(A ++ B)` from `crc32c(A)` and `crc32c(B)` when `B` is exactly one chunk
/// (`CHUNK_SIZE` bytes) long. Four table lookups instead of the generic combine's matrix
/// squarings.
pub(crate) fn combine_chunk(crc_a: u32, crc_b: u32) -> u32 {
    let t = shift_tables();
    let [b0, b1, b2, b3] = crc_a.to_le_bytes();
    t[0][b0 as usize] ^ t[1][b1 as usize] ^ t[2][b2 as usize] ^ t[3][b3 as usize] ^ crc_b
}

/// `crc32c(A ++ zeros(n))` from `crc32c(A)`.
pub(crate) fn append_zeros(mut crc: u32, mut n: usize) -> u32 {
    static ZEROS: [u8; CHUNK_SIZE] = [0; CHUNK_SIZE];
    while n > 0 {
        let step = n.min(CHUNK_SIZE);
        crc = crc32c::crc32c_append(crc, &ZEROS[..step]);
        n -= step;
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_chunk_matches_crc_of_concatenation() {
        let mut seed = 0x1234_5678u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for len_a in [0usize, 1, 7, 4096, 5000] {
            let a: Vec<u8> = (0..len_a).map(|_| next() as u8).collect();
            let b: Vec<u8> = (0..CHUNK_SIZE).map(|_| next() as u8).collect();
            let whole = [a.clone(), b.clone()].concat();
            let combined = combine_chunk(crc32c::crc32c(&a), crc32c::crc32c(&b));
            assert_eq!(combined, crc32c::crc32c(&whole), "len_a {len_a}");
        }
    }

    #[test]
    fn append_zeros_matches_explicit_zeros() {
        for n in [0usize, 1, 4095, 4096, 9000] {
            let data = [b"abc".as_slice(), &vec![0u8; n]].concat();
            assert_eq!(append_zeros(crc32c::crc32c(b"abc"), n), crc32c::crc32c(&data));
        }
    }
}
