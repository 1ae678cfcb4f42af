//! The on-disk format: redb table definitions, key encodings, the object record and chunk value
//! layouts, and the format marker. Everything that decides how bytes sit in `store.redb` lives
//! here; the layout itself is documented in the crate doc (`lib.rs`).

use quarry_types::{PgId, OBJECT_SIZE_MAX};
use redb::TableDefinition;

/// Bytes of object data per chunk row.
pub(crate) const CHUNK_SIZE: usize = 4096;
/// `CHUNK_SIZE` as a u64, for offset arithmetic.
pub(crate) const CHUNK: u64 = CHUNK_SIZE as u64;
/// Bytes in front of a chunk's data: its crc32c, little-endian.
pub(crate) const CHUNK_HEADER: usize = 4;
/// Data bytes stored in the chunk row itself. redb pages are 4 KiB and a leaf that outgrows
/// one page takes a power-of-two multiple, so a row of key + crc + 4096 bytes would occupy an
/// 8 KiB page. Keeping the row at 24 + 4 + 4060 bytes fills exactly one page (4-byte leaf
/// header, 4-byte value offset); the last 36 bytes of a full chunk go to `chunk_tails`,
/// where ~60 share a page.
pub(crate) const CHUNK_INLINE: usize = 4060;
// A chunk row (key, crc, inline data) plus redb's leaf header (4) and value offset (4) fills
// one 4 KiB page exactly.
const _: () = assert!(24 + CHUNK_HEADER + CHUNK_INLINE + 4 + 4 == 4096);

/// First 8 bytes of the `format` meta value.
pub(crate) const FORMAT_MAGIC: &[u8; 8] = b"QRYSTORE";
/// The format version this build writes and the newest it can read.
pub(crate) const FORMAT_VERSION: u32 = 6;
/// The last format with one `dups` row per duplicate table entry (packed into `dup_log`
/// rows at open).
pub(crate) const FORMAT_VERSION_DUP_ROWS: u32 = 5;
/// The last format with the `dup_seq` table (deleted at open).
pub(crate) const FORMAT_VERSION_DUP_SEQ: u32 = 4;
/// The last format with one row per chunk (`chunks`, migrated to extent rows at open).
pub(crate) const FORMAT_VERSION_CHUNK_ROWS: u32 = 3;
/// The last format that kept chunk data in redb rows (migrated to the data file at open).
pub(crate) const FORMAT_VERSION_INLINE: u32 = 2;
/// The oldest format version this build opens (format 1 is migrated to 2 at open).
pub(crate) const FORMAT_VERSION_MIN: u32 = 1;
/// Meta key of the format marker: `FORMAT_MAGIC ++ u32 LE version`.
pub(crate) const META_FORMAT: &str = "format";
/// Meta key of the next internal object id (u64 LE).
pub(crate) const META_NEXT_ID: &str = "next_object_id";

/// Key of a chunk row: object id, chunk index, version tag, each u64 big-endian.
pub(crate) type ChunkKey = [u8; 24];
/// Key of a per-PG row: pool u64 BE ++ seed u32 BE.
pub(crate) type PgKey = [u8; 12];

/// Key of an extent row: object id, version tag, first chunk index, each u64 big-endian.
pub(crate) type ExtentKey = [u8; 24];

/// `name -> value`: format marker and counters.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `pool BE ++ seed BE ++ object name -> object record`.
pub(crate) const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
/// `(object id, chunk index, version tag) -> chunk row`: format 3's [`ChunkRef`] (a hole, or
/// crc32c LE ++ data length u16 LE ++ block u64 LE in the data file); formats 1 and 2 kept
/// `crc32c LE ++ data[..4060]` here.
pub(crate) const CHUNKS: TableDefinition<&ChunkKey, &[u8]> = TableDefinition::new("chunks");
/// Format 4: `(object id, version tag, first chunk) -> extent row` ([`Extent`]): a run of
/// chunks of one version, their data in consecutive blocks of the data file (or a run of
/// holes). Rows of one object and tag never overlap.
pub(crate) const EXTENTS: TableDefinition<&ExtentKey, &[u8]> = TableDefinition::new("extents");
/// Formats 1 and 2: same key `-> data[4060..]`, present only for chunks longer than
/// `CHUNK_INLINE`. Format 3 has no such table (the format-2 migration deletes it).
pub(crate) const CHUNK_TAILS: TableDefinition<&ChunkKey, &[u8]> =
    TableDefinition::new("chunk_tails");
/// `object id BE ++ xattr name -> value` (head only).
pub(crate) const XATTRS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("xattrs");
/// `object id BE ++ omap key -> value` (head only).
pub(crate) const OMAP: TableDefinition<&[u8], &[u8]> = TableDefinition::new("omap");
/// `object id BE -> omap header` (head only).
pub(crate) const OMAP_HEADER: TableDefinition<&[u8; 8], &[u8]> =
    TableDefinition::new("omap_header");
/// `pool BE ++ seed BE -> opaque pg_state blob`.
pub(crate) const PG_STATE: TableDefinition<&PgKey, &[u8]> = TableDefinition::new("pg_state");
/// `pool BE ++ seed BE -> crc32c LE ++ objects u64 LE ++ bytes u64 LE` (head objects, sum of
/// head sizes; the crc covers the 16 bytes after it).
pub(crate) const PG_USAGE: TableDefinition<&PgKey, &[u8; 20]> = TableDefinition::new("pg_usage");
/// [`PG_USAGE`] as format 1 stored it (no crc); only the format-1 migration opens it.
pub(crate) const PG_USAGE_V1: TableDefinition<&PgKey, &[u8; 16]> = TableDefinition::new("pg_usage");

/// Bytes in front of a sealed metadata value: the crc32c (LE) of the rest.
pub(crate) const SEAL: usize = 4;

/// Appends `crc32c(payload) LE ++ payload` to a cleared `out` (format 2's sealed value: xattr,
/// omap and omap header values, `pg_state`, dup table rows).
pub(crate) fn seal_into(payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(SEAL + payload.len());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// A sealed value of `payload`.
pub(crate) fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    seal_into(payload, &mut out);
    out
}

/// The payload of a sealed value, or a reason it is damaged.
pub(crate) fn unseal(value: &[u8]) -> Result<&[u8], String> {
    if value.len() < SEAL {
        return Err(format!("sealed value of {} bytes is shorter than its crc", value.len()));
    }
    let (head, payload) = value.split_at(SEAL);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(head);
    let stored = u32::from_le_bytes(crc);
    let actual = crc32c::crc32c(payload);
    if stored != actual {
        return Err(format!("value crc mismatch: stored {stored:#010x}, computed {actual:#010x}"));
    }
    Ok(payload)
}

/// Formats 1 to 5: `pool BE ++ seed BE ++ reqid (entity len u16 BE ++ entity ++ client BE ++
/// tid BE) -> version u8 ++ seq u64 LE ++ bincode(OpReply)`, the duplicate table, a row per
/// entry. Only the migrations open it.
pub(crate) const DUPS_V5: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dups");
/// `pool BE ++ seed BE ++ first seq BE -> sealed row of consecutive entries`: the duplicate
/// table from format 6 (`dups.rs`).
pub(crate) const DUP_LOG: TableDefinition<&[u8; 20], &[u8]> = TableDefinition::new("dup_log");
/// Formats 1 to 4: `pool BE ++ seed BE ++ seq BE -> reqid part of the DUPS key`, the
/// duplicate table in insertion order (format 5 keeps the bounds in memory: `dups.rs`).
/// Only the migrations open it.
pub(crate) const DUP_SEQ_V4: TableDefinition<&[u8; 20], &[u8]> = TableDefinition::new("dup_seq");
/// Snapshot index, by snapshot: `pool BE ++ seed BE ++ snap BE ++ object name -> ()`. A row
/// says the object keeps a version that snapshot `snap` reads (written when a write preserves
/// the head for the snapshots of its context). The PG's trimmer walks the rows of one snap.
pub(crate) const SNAP_OBJECTS: TableDefinition<&[u8], ()> = TableDefinition::new("snap_objects");
/// Snapshot index, by object: `object id BE ++ snap BE -> ()` (the same rows as
/// [`SNAP_OBJECTS`], keyed for "which snapshots still need versions of this object").
pub(crate) const OBJECT_SNAPS: TableDefinition<&[u8; 16], ()> =
    TableDefinition::new("object_snaps");
/// Snapshots a PG has finished trimming: `pool BE ++ seed BE ++ snap BE -> ()`. A write's
/// snap context never records a version for them again.
pub(crate) const PURGED_SNAPS: TableDefinition<&[u8; 20], ()> =
    TableDefinition::new("purged_snaps");

/// Key of a [`SNAP_OBJECTS`] row.
pub(crate) fn snap_object_key(pg: PgId, snap: u64, name: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&pg_key(pg));
    buf.extend_from_slice(&snap.to_be_bytes());
    buf.extend_from_slice(name);
}

/// First key after every [`SNAP_OBJECTS`] row of `(pg, snap)` (None: no bound, the very end).
pub(crate) fn snap_objects_end(pg: PgId, snap: u64) -> Option<Vec<u8>> {
    let mut end = Vec::with_capacity(20);
    match snap.checked_add(1) {
        Some(next) => {
            end.extend_from_slice(&pg_key(pg));
            end.extend_from_slice(&next.to_be_bytes());
        }
        None => end.extend_from_slice(&pg_key_end(pg)?),
    }
    Some(end)
}

/// Key of an [`OBJECT_SNAPS`] row.
pub(crate) fn object_snap_key(id: u64, snap: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&id.to_be_bytes());
    key[8..].copy_from_slice(&snap.to_be_bytes());
    key
}

/// The snap of an [`OBJECT_SNAPS`] key.
pub(crate) fn object_snap_of(key: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[8..]);
    u64::from_be_bytes(b)
}

/// Key of a [`PURGED_SNAPS`] row.
pub(crate) fn purged_key(pg: PgId, snap: u64) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..12].copy_from_slice(&pg_key(pg));
    key[12..].copy_from_slice(&snap.to_be_bytes());
    key
}

/// The per-PG key.
pub(crate) fn pg_key(pg: PgId) -> PgKey {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&pg.pool.to_be_bytes());
    key[8..].copy_from_slice(&pg.seed.to_be_bytes());
    key
}

/// Decodes a per-PG key.
pub(crate) fn decode_pg_key(key: &PgKey) -> PgId {
    let mut pool = [0u8; 8];
    pool.copy_from_slice(&key[..8]);
    let mut seed = [0u8; 4];
    seed.copy_from_slice(&key[8..]);
    PgId { pool: u64::from_be_bytes(pool), seed: u32::from_be_bytes(seed) }
}

/// The smallest 12-byte key greater than every object key of `pg`, or None if there is none
/// (the last possible PG).
pub(crate) fn pg_key_end(pg: PgId) -> Option<PgKey> {
    match pg.seed.checked_add(1) {
        Some(seed) => Some(pg_key(PgId { pool: pg.pool, seed })),
        None => pg.pool.checked_add(1).map(|pool| pg_key(PgId { pool, seed: 0 })),
    }
}

/// Fills `buf` with the objects-table key of `name` in `pg`.
pub(crate) fn object_key(pg: PgId, name: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&pg_key(pg));
    buf.extend_from_slice(name);
}

/// A chunk row key.
pub(crate) fn chunk_key(id: u64, index: u64, tag: u64) -> ChunkKey {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&id.to_be_bytes());
    key[8..16].copy_from_slice(&index.to_be_bytes());
    key[16..].copy_from_slice(&tag.to_be_bytes());
    key
}

/// `(object id, chunk index, version tag)` of a chunk row key.
pub(crate) fn decode_chunk_key(key: &ChunkKey) -> (u64, u64, u64) {
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&key[i * 8..i * 8 + 8]);
        u64::from_be_bytes(b)
    };
    (word(0), word(1), word(2))
}

/// An extent row key.
pub(crate) fn extent_key(id: u64, tag: u64, first: u64) -> ExtentKey {
    chunk_key(id, tag, first)
}

/// `(object id, version tag, first chunk)` of an extent row key.
pub(crate) fn decode_extent_key(key: &ExtentKey) -> (u64, u64, u64) {
    decode_chunk_key(key)
}

/// Fills `buf` with an xattr/omap key: object id BE ++ `name`.
pub(crate) fn sub_key(id: u64, name: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(name);
}

/// True if a chunk row value (crc ++ inline data) may have a tail row: its inline part is
/// full.
pub(crate) fn row_has_tail(value_len: usize) -> bool {
    value_len == CHUNK_HEADER + CHUNK_INLINE
}

/// True if a chunk row value is a hole (no data).
pub(crate) fn row_is_hole(value_len: usize) -> bool {
    value_len <= CHUNK_HEADER
}

/// Fills `row` with the format-2 chunk row value for `data` (crc ++ inline part) and returns
/// the tail (empty if the chunk fits inline). Pinned by the format-1/2 golden tests.
#[cfg(test)]
pub(crate) fn encode_chunk<'d>(crc: u32, data: &'d [u8], row: &mut Vec<u8>) -> &'d [u8] {
    assert!(data.len() <= CHUNK_SIZE, "chunk data longer than a chunk");
    let inline = data.len().min(CHUNK_INLINE);
    row.clear();
    row.extend_from_slice(&crc.to_le_bytes());
    row.extend_from_slice(&data[..inline]);
    &data[inline..]
}

/// A format-3 chunk row: a hole (4 zero bytes: the crc of no data), or where the chunk's data
/// lies in the data file, with its crc32c.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChunkRef {
    /// No data: reads as zeros and hides older versions.
    Hole,
    /// `len` (1..=4096) bytes at block `block` of the data file, with crc32c `crc`.
    Data { crc: u32, len: u32, block: u64 },
}

/// The value of a hole row.
pub(crate) const HOLE_ROW: [u8; CHUNK_HEADER] = [0; CHUNK_HEADER];
/// Bytes of a format-3 data row: crc u32, length u16, block u64.
pub(crate) const CHUNK_REF_BYTES: usize = 4 + 2 + 8;
/// Blocks beyond this are refused when decoding (a data file of 2^52 bytes).
const BLOCK_MAX: u64 = 1 << 40;

/// The row value of `len` bytes of data with crc `crc` at block `block`.
pub(crate) fn encode_chunk_ref(crc: u32, len: usize, block: u64) -> [u8; CHUNK_REF_BYTES] {
    assert!((1..=CHUNK_SIZE).contains(&len), "chunk data length {len} out of range");
    let mut out = [0u8; CHUNK_REF_BYTES];
    out[..4].copy_from_slice(&crc.to_le_bytes());
    out[4..6].copy_from_slice(&(len as u16).to_le_bytes());
    out[6..].copy_from_slice(&block.to_le_bytes());
    out
}

/// Decodes a format-3 chunk row, or a reason it is malformed.
pub(crate) fn decode_chunk_ref(value: &[u8]) -> Result<ChunkRef, &'static str> {
    match value.len() {
        CHUNK_HEADER if value == HOLE_ROW => Ok(ChunkRef::Hole),
        CHUNK_HEADER => Err("hole row with a non-zero crc"),
        CHUNK_REF_BYTES => {
            let mut crc = [0u8; 4];
            crc.copy_from_slice(&value[..4]);
            let mut len = [0u8; 2];
            len.copy_from_slice(&value[4..6]);
            let mut block = [0u8; 8];
            block.copy_from_slice(&value[6..]);
            let len = u32::from(u16::from_le_bytes(len));
            let block = u64::from_le_bytes(block);
            if len == 0 || len as usize > CHUNK_SIZE {
                return Err("chunk row data length out of range");
            }
            if block >= BLOCK_MAX {
                return Err("chunk row block out of range");
            }
            Ok(ChunkRef::Data { crc: u32::from_le_bytes(crc), len, block })
        }
        _ => Err("chunk row of an unknown length"),
    }
}

/// Most chunks one extent row covers (4 MiB: a 4 MiB write is one row, and a row's value,
/// 13 + 4 bytes per chunk, stays within two redb pages).
pub(crate) const EXTENT_CHUNKS_MAX: u64 = 1024;
/// Chunks an object can have (`OBJECT_SIZE_MAX / CHUNK`): no row reaches past them.
pub(crate) const CHUNKS_PER_OBJECT_MAX: u64 = OBJECT_SIZE_MAX / CHUNK;
const EXTENT_HOLE: u8 = 0;
const EXTENT_DATA: u8 = 1;
/// First byte of a row the format-4 migration could not decode (the format-3 bytes follow):
/// reads of it stay `Corrupt`, as they were.
const EXTENT_DAMAGED: u8 = 0xff;
/// Bytes of a data extent row before its crc array.
pub(crate) const EXTENT_DATA_HEAD: usize = 1 + 2 + 2 + 8;

/// A format-4 extent row: chunks `first..first + count` of one version (`tag`) of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    /// The version tag of every chunk of the row.
    pub tag: u64,
    /// The first chunk index.
    pub first: u64,
    /// Chunks covered (1..=[`EXTENT_CHUNKS_MAX`]).
    pub count: u64,
    /// Holes or data.
    pub body: ExtentBody,
}

/// What an extent's chunks hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ExtentBody {
    /// Every chunk is a hole (reads as zeros, hides older versions).
    Hole,
    /// Chunk `first + k` is block `block + k` of the data file, with crc32c `crcs[k]`; every
    /// chunk holds 4096 bytes but the last, which holds `last_len` (1..=4096).
    Data { block: u64, last_len: u32, crcs: Vec<u32> },
}

impl Extent {
    /// The one-chunk row of chunk `index` of version `tag`.
    pub fn single(tag: u64, index: u64, chunk: ChunkRef) -> Extent {
        let body = match chunk {
            ChunkRef::Hole => ExtentBody::Hole,
            ChunkRef::Data { crc, len, block } => {
                ExtentBody::Data { block, last_len: len, crcs: vec![crc] }
            }
        };
        Extent { tag, first: index, count: 1, body }
    }

    /// Appends chunk `index` of version `tag` if it continues the row (same tag, next index,
    /// room left, a hole after holes or the next block after full data chunks); false if not.
    pub fn try_append(&mut self, tag: u64, index: u64, chunk: ChunkRef) -> bool {
        if self.tag != tag || self.end() != index || self.count >= EXTENT_CHUNKS_MAX {
            return false;
        }
        let appended = match (&mut self.body, chunk) {
            (ExtentBody::Hole, ChunkRef::Hole) => true,
            (
                ExtentBody::Data { block, last_len, crcs },
                ChunkRef::Data { crc, len, block: next },
            ) if *last_len as usize == CHUNK_SIZE && *block + self.count == next => {
                crcs.push(crc);
                *last_len = len;
                true
            }
            _ => false,
        };
        if appended {
            self.count += 1;
        }
        appended
    }

    /// The chunk index after the last one.
    pub fn end(&self) -> u64 {
        self.first + self.count
    }

    /// Whether chunk `index` is in the row.
    pub fn covers(&self, index: u64) -> bool {
        self.first <= index && index < self.end()
    }

    /// The row's key for object `id`.
    pub fn key(&self, id: u64) -> ExtentKey {
        extent_key(id, self.tag, self.first)
    }

    /// The blocks the row's data occupies (empty for holes).
    pub fn blocks(&self) -> std::ops::Range<u64> {
        match &self.body {
            ExtentBody::Hole => 0..0,
            ExtentBody::Data { block, .. } => *block..*block + self.count,
        }
    }

    /// Chunk `index` (inside the row) as a [`ChunkRef`].
    pub fn chunk(&self, index: u64) -> ChunkRef {
        assert!(self.covers(index), "chunk {index} outside its extent");
        let k = index - self.first;
        match &self.body {
            ExtentBody::Hole => ChunkRef::Hole,
            ExtentBody::Data { block, last_len, crcs } => ChunkRef::Data {
                crc: crcs[k as usize],
                len: if k + 1 == self.count { *last_len } else { CHUNK_SIZE as u32 },
                block: block + k,
            },
        }
    }

    /// The part of the row covering chunks `a..b` (inside it, not empty).
    pub fn piece(&self, a: u64, b: u64) -> Extent {
        assert!(self.first <= a && a < b && b <= self.end(), "extent piece out of range");
        let body = match &self.body {
            ExtentBody::Hole => ExtentBody::Hole,
            ExtentBody::Data { block, last_len, crcs } => ExtentBody::Data {
                block: block + (a - self.first),
                last_len: if b == self.end() { *last_len } else { CHUNK_SIZE as u32 },
                crcs: crcs[(a - self.first) as usize..(b - self.first) as usize].to_vec(),
            },
        };
        Extent { tag: self.tag, first: a, count: b - a, body }
    }

    /// The length of the row value [`Extent::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        match &self.body {
            ExtentBody::Hole => 3,
            ExtentBody::Data { crcs, .. } => EXTENT_DATA_HEAD + 4 * crcs.len(),
        }
    }

    /// The row value: a hole run `0 u8 ++ count u16 LE`, or a data run `1 u8 ++ count u16 LE
    /// ++ last chunk's length u16 LE ++ first block u64 LE ++ crc32c u32 LE per chunk`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!((1..=EXTENT_CHUNKS_MAX).contains(&self.count), "extent of {} chunks", self.count);
        out.clear();
        match &self.body {
            ExtentBody::Hole => {
                out.push(EXTENT_HOLE);
                out.extend_from_slice(&(self.count as u16).to_le_bytes());
            }
            ExtentBody::Data { block, last_len, crcs } => {
                assert_eq!(crcs.len() as u64, self.count, "one crc per chunk");
                assert!((1..=CHUNK_SIZE as u32).contains(last_len), "last chunk length");
                out.reserve(EXTENT_DATA_HEAD + 4 * crcs.len());
                out.push(EXTENT_DATA);
                out.extend_from_slice(&(self.count as u16).to_le_bytes());
                out.extend_from_slice(&(*last_len as u16).to_le_bytes());
                out.extend_from_slice(&block.to_le_bytes());
                for crc in crcs {
                    out.extend_from_slice(&crc.to_le_bytes());
                }
            }
        }
    }

    /// Decodes a row (its key and value), or a reason it is malformed.
    pub fn decode(key: &ExtentKey, value: &[u8]) -> Result<Extent, &'static str> {
        let (_, tag, first) = decode_extent_key(key);
        let kind = *value.first().ok_or("empty extent row")?;
        if kind == EXTENT_DAMAGED {
            return Err("chunk row damaged before the format-4 migration");
        }
        let count = match value.get(1..3) {
            Some(c) => u64::from(u16::from_le_bytes([c[0], c[1]])),
            None => return Err("extent row too short"),
        };
        if count == 0 || count > EXTENT_CHUNKS_MAX {
            return Err("extent row chunk count out of range");
        }
        if first.checked_add(count).is_none_or(|end| end > CHUNKS_PER_OBJECT_MAX) {
            return Err("extent row reaches past the object size limit");
        }
        let body = match kind {
            EXTENT_HOLE if value.len() == 3 => ExtentBody::Hole,
            EXTENT_HOLE => return Err("hole extent row of a wrong length"),
            EXTENT_DATA => {
                if value.len() != EXTENT_DATA_HEAD + 4 * count as usize {
                    return Err("extent row length does not match its chunk count");
                }
                let last_len = u32::from(u16::from_le_bytes([value[3], value[4]]));
                if last_len == 0 || last_len as usize > CHUNK_SIZE {
                    return Err("extent row last chunk length out of range");
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&value[5..13]);
                let block = u64::from_le_bytes(b);
                if block.checked_add(count).is_none_or(|end| end > BLOCK_MAX) {
                    return Err("extent row block out of range");
                }
                let crcs = value[EXTENT_DATA_HEAD..]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                ExtentBody::Data { block, last_len, crcs }
            }
            _ => return Err("extent row of an unknown kind"),
        };
        Ok(Extent { tag, first, count, body })
    }
}

/// The format-4 value of a format-3 chunk row the migration could not decode.
pub(crate) fn damaged_extent_row(v3: &[u8]) -> Vec<u8> {
    let mut out = vec![EXTENT_DAMAGED];
    out.extend_from_slice(v3);
    out
}

/// One version of an object: what a snapshot (or the head) sees of its existence, size and
/// mtime, and which chunk versions it reads (tags in `floor..=tag`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    /// The snapshot seq of the writes that made this version.
    pub tag: u64,
    /// Chunk versions older than this are invisible to this version (set when the object is
    /// (re)created or fully rewritten).
    pub floor: u64,
    /// Whether the object exists in this version.
    pub exists: bool,
    /// Size in bytes (0 when it does not exist).
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (u64, u32),
}

/// The object record: the internal id that keys its chunks, xattrs and omap, and its version
/// history, oldest first; the last version is the head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ObjectRecord {
    /// Internal id (per store, never reused).
    pub id: u64,
    /// Versions ordered by strictly increasing tag; never empty.
    pub versions: Vec<Version>,
}

const RECORD_FORMAT: u8 = 1;
const VERSION_BYTES: usize = 8 + 8 + 1 + 8 + 8 + 4;
const RECORD_FIXED: usize = 4 + 1 + 8 + 4;
/// A version history longer than this is refused when decoding (it would mean millions of
/// live snapshots of one object).
pub(crate) const VERSIONS_MAX: usize = 1 << 20;

impl ObjectRecord {
    /// The head version.
    pub fn head(&self) -> &Version {
        assert!(!self.versions.is_empty());
        &self.versions[self.versions.len() - 1]
    }

    /// The head version, mutable.
    pub fn head_mut(&mut self) -> &mut Version {
        assert!(!self.versions.is_empty());
        let last = self.versions.len() - 1;
        &mut self.versions[last]
    }

    /// The version a read at snapshot `snap` sees: the newest with `tag < snap`.
    pub fn version_at(&self, snap: u64) -> Option<&Version> {
        self.versions.iter().rev().find(|v| v.tag < snap)
    }

    /// Encodes as `crc32c LE ++ format u8 ++ id u64 LE ++ count u32 LE ++ versions`, each
    /// version `tag u64, floor u64, exists u8, size u64, mtime_sec u64, mtime_nsec u32` (LE).
    pub fn encode(&self, buf: &mut Vec<u8>) {
        assert!(!self.versions.is_empty());
        buf.clear();
        buf.extend_from_slice(&[0u8; 4]);
        buf.push(RECORD_FORMAT);
        buf.extend_from_slice(&self.id.to_le_bytes());
        buf.extend_from_slice(&(self.versions.len() as u32).to_le_bytes());
        for v in &self.versions {
            buf.extend_from_slice(&v.tag.to_le_bytes());
            buf.extend_from_slice(&v.floor.to_le_bytes());
            buf.push(u8::from(v.exists));
            buf.extend_from_slice(&v.size.to_le_bytes());
            buf.extend_from_slice(&v.mtime.0.to_le_bytes());
            buf.extend_from_slice(&v.mtime.1.to_le_bytes());
        }
        let crc = crc32c::crc32c(&buf[4..]);
        buf[..4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes and checks a stored record (crc and invariants).
    pub fn decode(bytes: &[u8]) -> Result<ObjectRecord, &'static str> {
        if bytes.len() < RECORD_FIXED {
            return Err("object record too short");
        }
        let mut r = Reader { bytes, pos: 0 };
        let crc = r.u32()?;
        if crc != crc32c::crc32c(&bytes[4..]) {
            return Err("object record crc mismatch");
        }
        if r.u8()? != RECORD_FORMAT {
            return Err("unknown object record format");
        }
        let id = r.u64()?;
        let count = r.u32()? as usize;
        if count == 0 || count > VERSIONS_MAX || bytes.len() != RECORD_FIXED + count * VERSION_BYTES
        {
            return Err("object record length does not match its version count");
        }
        let mut versions = Vec::with_capacity(count);
        for _ in 0..count {
            let tag = r.u64()?;
            let floor = r.u64()?;
            let exists = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err("object record exists flag is not 0 or 1"),
            };
            let size = r.u64()?;
            let mtime = (r.u64()?, r.u32()?);
            versions.push(Version { tag, floor, exists, size, mtime });
        }
        let record = ObjectRecord { id, versions };
        record.check()?;
        Ok(record)
    }

    /// The record invariants: tags strictly increasing, floors not above tags, sizes within
    /// the object limit, non-existent versions of size 0.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.versions.is_empty() || self.versions.len() > VERSIONS_MAX {
            return Err("object record has no versions or too many");
        }
        if !self.versions.windows(2).all(|w| w[0].tag < w[1].tag) {
            return Err("object record versions not in increasing tag order");
        }
        for v in &self.versions {
            if v.floor > v.tag || v.size > OBJECT_SIZE_MAX || (!v.exists && v.size != 0) {
                return Err("object record version out of range");
            }
        }
        Ok(())
    }
}

/// Little-endian field reader over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let end = self.pos.checked_add(N).ok_or("record field out of range")?;
        let slice = self.bytes.get(self.pos..end).ok_or("record truncated")?;
        self.pos = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take()?))
    }
}

/// Encodes the per-PG usage row.
pub(crate) fn encode_usage(objects: u64, bytes: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&objects.to_le_bytes());
    out[8..].copy_from_slice(&bytes.to_le_bytes());
    out
}

/// Decodes a format-1 per-PG usage row into `(objects, bytes)`.
pub(crate) fn decode_usage(value: &[u8; 16]) -> (u64, u64) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&value[..8]);
    b.copy_from_slice(&value[8..]);
    (u64::from_le_bytes(a), u64::from_le_bytes(b))
}

/// The format-2 usage row: crc32c of the format-1 row, then that row.
pub(crate) fn seal_usage(objects: u64, bytes: u64) -> [u8; 20] {
    let plain = encode_usage(objects, bytes);
    let mut out = [0u8; 20];
    out[..4].copy_from_slice(&crc32c::crc32c(&plain).to_le_bytes());
    out[4..].copy_from_slice(&plain);
    out
}

/// Decodes a format-2 usage row into `(objects, bytes)`, or a reason it is damaged.
pub(crate) fn unseal_usage(value: &[u8; 20]) -> Result<(u64, u64), String> {
    let plain: &[u8; 16] = unseal(value)?.try_into().map_err(|_| "usage row length".to_string())?;
    Ok(decode_usage(plain))
}

/// The format marker value (of [`FORMAT_VERSION`]).
pub(crate) fn format_marker() -> [u8; 12] {
    format_marker_of(FORMAT_VERSION)
}

/// The format marker value of `version`.
pub(crate) fn format_marker_of(version: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(FORMAT_MAGIC);
    out[8..].copy_from_slice(&version.to_le_bytes());
    out
}

/// Parses a format marker: Ok(version) or Err if it is not ours.
pub(crate) fn parse_format_marker(value: &[u8]) -> Option<u32> {
    if value.len() != 12 || &value[..8] != FORMAT_MAGIC {
        return None;
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&value[8..]);
    Some(u32::from_le_bytes(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_detects_damage() {
        let record = ObjectRecord {
            id: 42,
            versions: vec![
                Version { tag: 0, floor: 0, exists: true, size: 5000, mtime: (1, 2) },
                Version { tag: 7, floor: 7, exists: false, size: 0, mtime: (3, 4) },
            ],
        };
        let mut buf = Vec::new();
        record.encode(&mut buf);
        assert_eq!(ObjectRecord::decode(&buf), Ok(record));
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(ObjectRecord::decode(&bad).is_err(), "flip at {i} not detected");
        }
        assert!(ObjectRecord::decode(&buf[..buf.len() - 1]).is_err());
    }

    #[test]
    fn chunk_keys_sort_numerically() {
        let a = chunk_key(1, 2, 3);
        let b = chunk_key(1, 2, 256);
        let c = chunk_key(1, 3, 0);
        let d = chunk_key(2, 0, 0);
        assert!(a < b && b < c && c < d);
        assert_eq!(decode_chunk_key(&b), (1, 2, 256));
    }

    #[test]
    fn pg_key_end_is_the_next_pg() {
        let pg = PgId { pool: 3, seed: 9 };
        assert_eq!(pg_key_end(pg), Some(pg_key(PgId { pool: 3, seed: 10 })));
        let last_seed = PgId { pool: 3, seed: u32::MAX };
        assert_eq!(pg_key_end(last_seed), Some(pg_key(PgId { pool: 4, seed: 0 })));
        assert_eq!(pg_key_end(PgId { pool: u64::MAX, seed: u32::MAX }), None);
        assert_eq!(decode_pg_key(&pg_key(pg)), pg);
    }

    /// Golden bytes of every hand-encoded value format 1 kept (`tests/golden/store_v1.hex`):
    /// keys, the object record, chunk rows, the (unsealed) usage row and the format marker.
    /// Format 2 keeps all of them but the usage row and the marker; the format-1 migration
    /// still decodes the format-1 usage row. Never edit the golden file.
    #[test]
    fn store_bytes_are_pinned() {
        let (values, record) = v1_values();
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/store_v1.hex");
        let header = "store.redb format 1 (quarry-store): keys, object record, chunk rows, usage, \
                      marker.\nGenerated once; never edit: a change of bytes needs a new version.";
        quarry_persist::golden::check(&path, header, &values);
        let golden = quarry_persist::golden::parse(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(ObjectRecord::decode(&golden[4].1), Ok(record));
        assert_eq!(decode_usage(golden[10].1.as_slice().try_into().unwrap()), (0x31, 0x4142));
    }

    /// Golden bytes of format 2 (`tests/golden/store_v2.hex`): format 1's keys, record and
    /// chunk rows unchanged, the sealed usage row, sealed metadata values (xattr, omap,
    /// header, pg_state, dup rows: crc32c LE ++ value) and the version-2 marker. A failure
    /// means `store.redb`'s format changed: bump `FORMAT_VERSION` (with a migration or a
    /// clear refusal of older stores); never edit the golden file.
    #[test]
    fn store_v2_bytes_are_pinned() {
        let (v1, _) = v1_values();
        let mut values: Vec<(&str, Vec<u8>)> =
            v1.into_iter().filter(|(n, _)| *n != "usage" && *n != "format_marker").collect();
        values.push(("usage_sealed", seal_usage(0x31, 0x4142).to_vec()));
        values.push(("sealed_value", seal(b"value")));
        values.push(("sealed_empty", seal(b"")));
        values.push(("format_marker", format_marker_of(2).to_vec()));
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/store_v2.hex");
        let header = "store.redb format 2 (quarry-store): keys, object record, chunk rows, sealed \
                      usage row and metadata values, marker.\nGenerated once; never edit: a \
                      change of bytes needs a new version.";
        quarry_persist::golden::check(&path, header, &values);
        let golden = quarry_persist::golden::parse(&std::fs::read_to_string(&path).unwrap());
        let find = |name: &str| golden.iter().find(|(n, _)| n == name).unwrap().1.clone();
        let usage: [u8; 20] = find("usage_sealed").as_slice().try_into().unwrap();
        assert_eq!(unseal_usage(&usage), Ok((0x31, 0x4142)));
        assert_eq!(unseal(&find("sealed_value")), Ok(b"value".as_slice()));
        assert_eq!(parse_format_marker(&find("format_marker")), Some(2));
    }

    /// Golden bytes of format 3 (`tests/golden/store_v3.hex`): format 2's keys, record,
    /// sealed values and usage row unchanged; chunk rows now point into the data file (a data
    /// row: crc32c LE ++ length u16 LE ++ block u64 LE; a hole: 4 zero bytes); the version-3
    /// marker. Never edit the golden file.
    #[test]
    fn store_v3_bytes_are_pinned() {
        let (v1, _) = v1_values();
        let mut values: Vec<(&str, Vec<u8>)> = v1
            .into_iter()
            .filter(|(n, _)| !n.starts_with("chunk_row") && *n != "chunk_tail")
            .filter(|(n, _)| *n != "usage" && *n != "format_marker")
            .collect();
        values.push(("usage_sealed", seal_usage(0x31, 0x4142).to_vec()));
        values.push(("sealed_value", seal(b"value")));
        values.push(("chunk_ref_full", encode_chunk_ref(0xdead_beef, 4096, 0x0102_0304).to_vec()));
        values.push(("chunk_ref_short", encode_chunk_ref(0x0bad_cafe, 5, 7).to_vec()));
        values.push(("chunk_ref_hole", HOLE_ROW.to_vec()));
        values.push(("format_marker", format_marker_of(3).to_vec()));
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/store_v3.hex");
        let header = "store.redb format 3 (quarry-store): keys, object record, sealed values, \
                      chunk rows pointing into store.data, marker.\nGenerated once; never edit: \
                      a change of bytes needs a new version.";
        quarry_persist::golden::check(&path, header, &values);
        let golden = quarry_persist::golden::parse(&std::fs::read_to_string(&path).unwrap());
        let find = |name: &str| golden.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(
            decode_chunk_ref(&find("chunk_ref_full")),
            Ok(ChunkRef::Data { crc: 0xdead_beef, len: 4096, block: 0x0102_0304 })
        );
        assert_eq!(
            decode_chunk_ref(&find("chunk_ref_short")),
            Ok(ChunkRef::Data { crc: 0x0bad_cafe, len: 5, block: 7 })
        );
        assert_eq!(decode_chunk_ref(&find("chunk_ref_hole")), Ok(ChunkRef::Hole));
        assert_eq!(parse_format_marker(&find("format_marker")), Some(3));
    }

    /// Golden bytes of format 4 (`tests/golden/store_v4.hex`): format 3's keys, record,
    /// sealed values and usage row unchanged; the per-chunk rows replaced by extent rows,
    /// keyed `object id ++ version tag ++ first chunk` (each u64 BE), valued a hole run
    /// (`0 u8 ++ count u16 LE`) or a data run (`1 u8 ++ count u16 LE ++ last chunk's length
    /// u16 LE ++ first block u64 LE ++ crc32c u32 LE per chunk`); the version-4 marker. Never
    /// edit the golden file.
    #[test]
    fn store_v4_bytes_are_pinned() {
        let (v1, _) = v1_values();
        let mut values: Vec<(&str, Vec<u8>)> = v1
            .into_iter()
            .filter(|(n, _)| !n.starts_with("chunk_") && *n != "usage" && *n != "format_marker")
            .collect();
        values.push(("usage_sealed", seal_usage(0x31, 0x4142).to_vec()));
        values.push(("sealed_value", seal(b"value")));
        let data = Extent {
            tag: 9,
            first: 2,
            count: 3,
            body: ExtentBody::Data {
                block: 0x0102_0304,
                last_len: 5,
                crcs: vec![0xdead_beef, 0x0bad_cafe, 0x1234_5678],
            },
        };
        let hole = Extent { tag: 9, first: 7, count: 300, body: ExtentBody::Hole };
        let (mut data_row, mut hole_row) = (Vec::new(), Vec::new());
        data.encode(&mut data_row);
        hole.encode(&mut hole_row);
        values.push(("extent_key", extent_key(0x1112_1314_1516_1718, 9, 2).to_vec()));
        values.push(("extent_data", data_row));
        values.push(("extent_hole", hole_row));
        values.push(("extent_damaged", damaged_extent_row(&[1, 2, 3])));
        values.push(("format_marker", format_marker_of(4).to_vec()));
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/store_v4.hex");
        let header = "store.redb format 4 (quarry-store): keys, object record, sealed values, \
                      extent rows pointing into store.data, marker.\nGenerated once; never \
                      edit: a change of bytes needs a new version.";
        quarry_persist::golden::check(&path, header, &values);
        let golden = quarry_persist::golden::parse(&std::fs::read_to_string(&path).unwrap());
        let find = |name: &str| golden.iter().find(|(n, _)| n == name).unwrap().1.clone();
        let key: ExtentKey = find("extent_key").as_slice().try_into().unwrap();
        assert_eq!(decode_extent_key(&key), (0x1112_1314_1516_1718, 9, 2));
        assert_eq!(Extent::decode(&key, &find("extent_data")), Ok(data));
        let hole_key = extent_key(1, 9, 7);
        assert_eq!(Extent::decode(&hole_key, &find("extent_hole")), Ok(hole));
        assert!(Extent::decode(&key, &find("extent_damaged")).is_err());
        assert_eq!(parse_format_marker(&find("format_marker")), Some(4));
    }

    /// The values of an earlier version's golden file that `keep` keeps (a later version's
    /// start).
    fn golden_values(file: &str, keep: impl Fn(&str) -> bool) -> Vec<(String, Vec<u8>)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(file);
        let golden = quarry_persist::golden::parse(&std::fs::read_to_string(path).unwrap());
        golden.into_iter().filter(|(n, _)| keep(n)).collect()
    }

    /// Golden bytes of format 5 (`tests/golden/store_v5.hex`): format 4's rows unchanged
    /// (the `dup_seq` table is gone: `dups.rs` keeps a PG's bounds in memory and finds them
    /// by a scan, which reads each entry's sequence number from its sealed value), a
    /// duplicate table key and value (`crc32c LE ++ 1 u8 ++ seq u64 LE ++ bincode(reply)`)
    /// and the version-5 marker. Never edit the golden file.
    #[test]
    fn store_v5_bytes_are_pinned() {
        let mut values = golden_values("store_v4.hex", |n| n != "format_marker");
        let pg = PgId { pool: 0x0102, seed: 0x0304 };
        let reqid = quarry_types::EntityReqId {
            entity: quarry_types::EntityName::client("admin"),
            reqid: quarry_types::ReqId { client: 7, tid: 0x2a },
        };
        let mut part = Vec::new();
        crate::dups::reqid_part(&reqid, &mut part);
        let key = [pg_key(pg).as_slice(), &part].concat();
        let reply =
            quarry_types::OpReply::Failed { index: 1, code: quarry_types::ErrorCode::EEXIST };
        values.push(("dup_key".into(), key));
        values.push(("dup_value".into(), seal(&crate::dups::encode_value(0x0a0b, &reply))));
        values.push(("format_marker".into(), format_marker_of(5).to_vec()));
        let values: Vec<(&str, Vec<u8>)> =
            values.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/store_v5.hex");
        let header = "store.redb format 5 (quarry-store): format 4's rows, no dup_seq table, a \
                      sealed duplicate table entry, marker.\nGenerated once; never edit: a \
                      change of bytes needs a new version.";
        quarry_persist::golden::check(&path, header, &values);
        let golden = quarry_persist::golden::parse(&std::fs::read_to_string(&path).unwrap());
        let find = |name: &str| golden.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(crate::dups::decode_stored(&find("dup_value")), Ok((0x0a0b, reply)));
        assert_eq!(parse_format_marker(&find("format_marker")), Some(5));
    }

    /// Golden bytes of format 6 (`tests/golden/store_v6.hex`): format 5's rows unchanged but
    /// the duplicate table, whose entries are packed into `dup_log` rows keyed `pg ++ first
    /// seq BE` (`dups.rs`): a row of two entries with its floor; the version-6 marker. Never
    /// edit the golden file.
    #[test]
    fn store_v6_bytes_are_pinned() {
        let mut values =
            golden_values("store_v5.hex", |n| !n.starts_with("dup_") && n != "format_marker");
        let pg = PgId { pool: 0x0102, seed: 0x0304 };
        let entry = |tid: u64, seq: u64, reply: &quarry_types::OpReply| {
            let reqid = quarry_types::EntityReqId {
                entity: quarry_types::EntityName::client("admin"),
                reqid: quarry_types::ReqId { client: 7, tid },
            };
            let mut part = Vec::new();
            crate::dups::reqid_part(&reqid, &mut part);
            (seq, part, crate::dups::encode_value(seq, reply))
        };
        let failed =
            quarry_types::OpReply::Failed { index: 1, code: quarry_types::ErrorCode::EEXIST };
        let ok = quarry_types::OpReply::Ok(vec![quarry_types::OpOutput::None]);
        let entries = vec![entry(0x2a, 0x0a0b, &failed), entry(0x2b, 0x0a0c, &ok)];
        values.push(("dup_log_key".into(), crate::dups::row_key(pg, 0x0a0b).to_vec()));
        values.push(("dup_log_row".into(), crate::dups::encode_row(0x0a0a, &entries)));
        values.push(("format_marker".into(), format_marker_of(6).to_vec()));
        let values: Vec<(&str, Vec<u8>)> =
            values.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/store_v6.hex");
        let header = "store.redb format 6 (quarry-store): format 5's rows, the duplicate table \
                      as packed dup_log rows, marker.\nGenerated once; never edit: a change \
                      of bytes needs a new version.";
        quarry_persist::golden::check(&path, header, &values);
        let golden = quarry_persist::golden::parse(&std::fs::read_to_string(&path).unwrap());
        let find = |name: &str| golden.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(crate::dups::decode_row(0x0a0b, &find("dup_log_row")), Ok((0x0a0a, entries)));
        assert_eq!(parse_format_marker(&find("format_marker")), Some(6));
    }

    #[test]
    fn malformed_extent_rows_are_refused() {
        let row = Extent {
            tag: 1,
            first: 0,
            count: 2,
            body: ExtentBody::Data { block: 5, last_len: 4096, crcs: vec![1, 2] },
        };
        let key = row.key(3);
        let mut good = Vec::new();
        row.encode(&mut good);
        assert_eq!(Extent::decode(&key, &good), Ok(row.clone()));
        let mut bad = good.clone();
        bad[1] = 3; // count 3 with two crcs
        assert!(Extent::decode(&key, &bad).is_err());
        let mut bad = good.clone();
        bad[1] = 0; // count 0
        bad[2] = 0;
        assert!(Extent::decode(&key, &bad).is_err());
        let mut bad = good.clone();
        bad[3..5].copy_from_slice(&0u16.to_le_bytes()); // empty last chunk
        assert!(Extent::decode(&key, &bad).is_err());
        let mut bad = good.clone();
        bad[5..13].copy_from_slice(&((1u64 << 40) - 1).to_le_bytes()); // blocks past the limit
        assert!(Extent::decode(&key, &bad).is_err());
        assert!(Extent::decode(&key, &good[..good.len() - 1]).is_err());
        assert!(Extent::decode(&key, &[7, 1, 0]).is_err());
        assert!(Extent::decode(&key, &[0, 1, 0, 0]).is_err());
        // A row reaching past the object size limit.
        let far = extent_key(3, 1, CHUNKS_PER_OBJECT_MAX - 1);
        assert!(Extent::decode(&far, &good).is_err());
        // Pieces keep the crcs and blocks of their chunks.
        let piece = row.piece(1, 2);
        assert_eq!(piece.chunk(1), ChunkRef::Data { crc: 2, len: 4096, block: 6 });
    }

    #[test]
    fn malformed_chunk_rows_are_refused() {
        assert!(decode_chunk_ref(&[1, 0, 0, 0]).is_err());
        assert!(decode_chunk_ref(&[0; 5]).is_err());
        let mut zero_len = encode_chunk_ref(1, 1, 1);
        zero_len[4] = 0;
        assert!(decode_chunk_ref(&zero_len).is_err());
        let mut too_long = encode_chunk_ref(1, 1, 1);
        too_long[4..6].copy_from_slice(&4097u16.to_le_bytes());
        assert!(decode_chunk_ref(&too_long).is_err());
        let mut far = encode_chunk_ref(1, 1, 1);
        far[6..].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode_chunk_ref(&far).is_err());
    }

    #[test]
    fn sealed_values_detect_every_bit_flip() {
        let sealed = seal(b"some metadata");
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(unseal(&bad).is_err(), "flip of bit {i} not detected");
        }
        assert!(unseal(&sealed[..3]).is_err());
        let mut usage = seal_usage(1, 2);
        usage[19] ^= 1;
        assert!(unseal_usage(&usage).is_err());
    }

    /// The values `store_v1.hex` pins, and the object record among them.
    fn v1_values() -> (Vec<(&'static str, Vec<u8>)>, ObjectRecord) {
        let pg = PgId { pool: 0x0102_0304_0506_0708, seed: 0x090a_0b0c };
        let record = ObjectRecord {
            id: 0x1112_1314_1516_1718,
            versions: vec![
                Version { tag: 1, floor: 0, exists: true, size: 5000, mtime: (7, 8) },
                Version { tag: 9, floor: 9, exists: false, size: 0, mtime: (10, 11) },
            ],
        };
        let mut record_bytes = Vec::new();
        record.encode(&mut record_bytes);
        let mut object = Vec::new();
        object_key(pg, b"obj", &mut object);
        let mut sub = Vec::new();
        sub_key(0x2122_2324_2526_2728, b"key", &mut sub);
        let full: Vec<u8> = (0..CHUNK_SIZE).map(|i| (i % 251) as u8).collect();
        let mut row = Vec::new();
        let tail = encode_chunk(0xdead_beef, &full, &mut row).to_vec();
        let mut short_row = Vec::new();
        encode_chunk(0x0bad_cafe, b"short", &mut short_row);
        let values = vec![
            ("pg_key", pg_key(pg).to_vec()),
            ("object_key", object),
            ("sub_key", sub),
            ("chunk_key", chunk_key(1, 2, 3).to_vec()),
            ("object_record", record_bytes),
            // Only the row's first and last 16 bytes: the middle is the input pattern.
            ("chunk_row_head", row[..16].to_vec()),
            ("chunk_row_end", row[row.len() - 16..].to_vec()),
            ("chunk_row_len", (row.len() as u32).to_le_bytes().to_vec()),
            ("chunk_tail", tail),
            ("chunk_row_short", short_row),
            ("usage", encode_usage(0x31, 0x4142).to_vec()),
            ("format_marker", format_marker_of(1).to_vec()),
        ];
        (values, record)
    }
}
