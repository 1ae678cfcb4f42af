//! [`AlignedBuf`]: a growable byte buffer whose memory starts on a 4 KiB boundary and whose
//! writes can be padded to whole 4 KiB blocks, as direct I/O (`O_DIRECT`) needs.
//!
//! Built on `bytemuck` (a `#[repr(align(4096))]` block type cast to bytes), so no `unsafe`.

use bytemuck::{Pod, Zeroable};

/// The alignment (and granularity) of direct I/O: 4 KiB, which every Linux block device's
/// logical block size divides.
pub const DIRECT_IO_ALIGN: usize = 4096;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(4096))]
struct Block([u8; DIRECT_IO_ALIGN]);

/// A byte buffer in 4 KiB-aligned memory.
#[derive(Default)]
pub struct AlignedBuf {
    blocks: Vec<Block>,
    len: usize,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl AlignedBuf {
    /// An empty buffer.
    pub fn new() -> AlignedBuf {
        AlignedBuf::default()
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the buffer (keeps its memory).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Bytes of memory held (what a caller may want to give back after a large round).
    pub fn capacity(&self) -> usize {
        self.blocks.capacity() * DIRECT_IO_ALIGN
    }

    /// Gives the memory back.
    pub fn release(&mut self) {
        *self = AlignedBuf::default();
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.blocks)
    }

    /// Appends `data`.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let end = self.len + data.len();
        let blocks = end.div_ceil(DIRECT_IO_ALIGN);
        if blocks > self.blocks.len() {
            self.blocks.resize(blocks, Block([0; DIRECT_IO_ALIGN]));
        }
        let start = self.len;
        self.bytes_mut()[start..end].copy_from_slice(data);
        self.len = end;
    }

    /// A buffer of `len` zero bytes (its memory padded to whole blocks, zeros too).
    pub fn zeroed(len: usize) -> AlignedBuf {
        AlignedBuf { blocks: vec![Block([0; DIRECT_IO_ALIGN]); len.div_ceil(DIRECT_IO_ALIGN)], len }
    }

    /// Makes the buffer hold `len` bytes, keeping its memory: the bytes it held stay (a
    /// caller that reuses a buffer overwrites or zeroes them), blocks it had to add are zeros.
    pub fn reuse_as(&mut self, len: usize) {
        let blocks = len.div_ceil(DIRECT_IO_ALIGN);
        if blocks > self.blocks.len() {
            self.blocks.resize(blocks, Block([0; DIRECT_IO_ALIGN]));
        }
        self.len = len;
    }

    /// The bytes held, to fill in place (a direct read's destination).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.bytes_mut()[..len]
    }

    /// Appends zeros up to the next multiple of 4 KiB (nothing if already there).
    pub fn pad_to_block(&mut self) {
        let end = self.len.next_multiple_of(DIRECT_IO_ALIGN);
        let start = self.len;
        self.bytes_mut()[start..end].fill(0);
        self.len = end;
    }

    /// The bytes held; they start at a 4 KiB-aligned address.
    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.blocks)[..self.len]
    }
}

/// The bytes held: lets a `bytes::Bytes` own the buffer without a copy (`Bytes::from_owner`).
impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_aligned_kept_and_padded_with_zeros() {
        let mut buf = AlignedBuf::new();
        buf.extend_from_slice(&[7u8; 5000]);
        buf.extend_from_slice(&[9u8; 10]);
        assert_eq!(buf.len(), 5010);
        assert_eq!(buf.as_slice().as_ptr() as usize % DIRECT_IO_ALIGN, 0);
        assert!(buf.as_slice()[..5000].iter().all(|&b| b == 7));
        assert!(buf.as_slice()[5000..].iter().all(|&b| b == 9));
        buf.pad_to_block();
        assert_eq!(buf.len(), 8192);
        assert!(buf.as_slice()[5010..].iter().all(|&b| b == 0));
        // reused memory is padded with zeros, not with what it held before
        buf.clear();
        buf.extend_from_slice(&[1u8; 3]);
        buf.pad_to_block();
        assert_eq!(buf.as_slice(), &[&[1u8; 3][..], &[0u8; 4093][..]].concat()[..]);
        buf.pad_to_block();
        assert_eq!(buf.len(), 4096, "already aligned: nothing added");
        let mut z = AlignedBuf::zeroed(5000);
        assert_eq!((z.len(), z.capacity()), (5000, 8192));
        assert!(z.as_slice().iter().all(|&b| b == 0));
        z.as_mut_slice()[4999] = 3;
        assert_eq!(z.as_ref()[4999], 3);
        assert_eq!(z.as_ref().as_ptr() as usize % DIRECT_IO_ALIGN, 0);
        // reuse_as keeps the memory and its bytes; blocks it adds are zeros
        let at = z.as_slice().as_ptr();
        z.reuse_as(8000);
        assert_eq!((z.len(), z.as_slice()[4999], z.as_slice().as_ptr()), (8000, 3, at));
        z.reuse_as(10_000);
        assert_eq!(z.len(), 10_000);
        assert!(z.as_slice()[8192..].iter().all(|&b| b == 0));
    }
}
