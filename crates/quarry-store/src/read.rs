//! The read side: resolving which chunk versions a version of an object sees, reading their
//! blocks from the data file, verifying their crcs, assembling data with its payload crc, and executing the read-only ops (shared by
//! `Store::read` and by reads/guards inside `Store::apply`).

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use quarry_persist::AlignedBuf;
use quarry_types::{ErrorCode, ObjectOp, OpOutput, Payload, PgId};
use redb::{ReadOnlyTable, ReadableTable, Table, WriteTransaction};

use crate::crc::{append_zeros, combine_chunk};
use crate::datafile::{is_cached_only, DataFile, DIRECT_READ_MIN};
use crate::extent;
use crate::format::{
    sub_key, unseal, ChunkRef, Extent, ExtentKey, Version, CHUNK, CHUNK_SIZE, EXTENTS, OMAP,
    OMAP_HEADER, XATTRS,
};
use crate::view::ReadView;
use crate::StoreError;

/// Most omap entries one OmapGetVals/OmapGetKeys returns, whatever the caller asks.
pub(crate) const OMAP_PAGE_MAX: usize = 1024;

/// Most bytes of output (data, xattrs, omap) one op vector may produce, through
/// [`crate::Store::read`] or inside a command: as much as one reply frame carries. Without a
/// bound, a short vector repeating a large read materialises gigabytes on the OSD.
pub(crate) const OUTPUT_BYTES_MAX: u64 = quarry_types::OBJECT_SIZE_MAX;

/// Output bytes of one op: payloads, names and values, plus the two length prefixes each
/// xattr/omap entry takes on the wire (a page of 1024 tiny entries is not free); fixed-size
/// results count 0.
pub(crate) fn output_bytes(out: &OpOutput) -> u64 {
    let kv = |vals: &BTreeMap<String, Bytes>| -> u64 {
        vals.iter().map(|(k, v)| (k.len() + v.len() + 16) as u64).fold(0, u64::saturating_add)
    };
    match out {
        OpOutput::None | OpOutput::Stat { .. } => 0,
        OpOutput::Data(payload) => payload.len() as u64,
        OpOutput::Xattr(value) | OpOutput::OmapHeader(value) | OpOutput::Returned(value) => {
            value.len() as u64
        }
        OpOutput::Xattrs(vals) | OpOutput::OmapVals { vals, .. } => kv(vals),
        OpOutput::OmapKeys { keys, .. } => {
            keys.iter().map(|k| k.len() as u64 + 8).fold(0, u64::saturating_add)
        }
    }
}

/// Adds one op's output to a vector's running total: EMSGSIZE once it passes
/// [`OUTPUT_BYTES_MAX`].
pub(crate) fn add_output(total: &mut u64, out: &OpOutput) -> Result<(), Failure> {
    *total = total.saturating_add(output_bytes(out));
    if *total > OUTPUT_BYTES_MAX {
        return Err(Failure::Op(ErrorCode::EMSGSIZE));
    }
    Ok(())
}

/// Why an op (or a whole call) did not succeed: an errno for the op, or a store error that
/// aborts the call.
pub(crate) enum Failure {
    /// The op failed with this code; the command has no effect.
    Op(ErrorCode),
    /// The store failed; the call returns this error.
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<redb::StorageError> for Failure {
    fn from(e: redb::StorageError) -> Self {
        Failure::Store(e.into())
    }
}

/// Which object an error is about, for `StoreError::Corrupt`.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// The PG.
    pub pg: PgId,
    /// The object name.
    pub name: &'a str,
}

impl Ctx<'_> {
    /// Logs and builds a corruption error.
    pub fn corrupt(&self, detail: String) -> StoreError {
        tracing::error!(pg = %self.pg, object = self.name, "store corruption: {detail}");
        StoreError::Corrupt { pg: self.pg, object: self.name.to_string(), detail }
    }

    /// The payload of a sealed `what` value (xattr, omap value, omap header), checked against
    /// its crc; a mismatch is logged and [`StoreError::Corrupt`].
    pub fn unseal<'v>(&self, what: &str, value: &'v [u8]) -> Result<&'v [u8], StoreError> {
        unseal(value).map_err(|detail| self.corrupt(format!("{what}: {detail}")))
    }
}

/// The tables read ops need; implemented over a read transaction and over a write
/// transaction, so the same code serves `Store::read` and guards inside `Store::apply`.
pub(crate) trait Tables {
    /// Chunk table type.
    type Chunks: ReadableTable<&'static ExtentKey, &'static [u8]>;
    /// xattr / omap table type.
    type Kv: ReadableTable<&'static [u8], &'static [u8]>;
    /// omap header table type.
    type Header: ReadableTable<&'static [u8; 8], &'static [u8]>;
    /// The chunk table.
    fn chunks(&self) -> &Self::Chunks;
    /// The data file the chunk rows point into.
    fn data(&self) -> &DataFile;
    /// The xattr table.
    fn xattrs(&self) -> &Self::Kv;
    /// The omap table.
    fn omap(&self) -> &Self::Kv;
    /// The omap header table.
    fn omap_header(&self) -> &Self::Header;
    /// The rows of one object's head the metadata cache gave the read, if any.
    fn head_rows(&self) -> Option<HeadRows<'_>> {
        None
    }
    /// Where a large read op's data may go while it is read ([`ReadSink`]), if anywhere.
    fn sink(&self) -> Option<&dyn ReadSink> {
        None
    }
}

/// Where a large read's data may go while it is still being read from the device (the OSD
/// sends it to the client ahead of the answer: `quarry-wire`'s streamed replies), instead of
/// into the payload the read returns. Used by a read op of at least [`PIECED_READ_MIN`] bytes
/// that [`read_pieced`] serves, at most once per [`crate::Store::read_to`]: [`ReadSink::start`]
/// with the length, then the pieces in order, each checked against its chunks' crcs before it
/// is given, then [`ReadSink::end`] with the payload's crc; the op's output is then an empty
/// payload with that crc. A read that stops half way does not call `end`: on a damaged chunk
/// the op fails; on a failed device read (or a piece refused) [`ReadSink::abort`] is called
/// before the object is read again the plain way, its output then holding the data. The
/// sink's receiver must drop what it was given.
pub trait ReadSink: Sync {
    /// A read of `len` bytes is about to begin: false to have it read the plain way.
    fn start(&self, len: usize) -> bool;
    /// The next checked piece; false if the receiver is gone (the read stops and is read
    /// again the plain way). Must not wait (the read holds its view meanwhile).
    fn piece(&self, piece: Bytes) -> bool;
    /// Every piece was given; `crc` is the crc32c of all of them.
    fn end(&self, crc: u32);
    /// The started read stopped and will be read again the plain way (which may take long
    /// on a failing device): give up what was started now.
    fn abort(&self);
}

/// [`extent::visible`] for object `id` at chunk range `floor..=tag`, chunks `a..=b`: from the
/// rows the metadata cache gave `t` when they are that version's, else from the table.
fn visible<T: Tables>(t: &T, ctx: &Ctx, id: u64, range: (u64, u64), a: u64, b: u64) -> Visible {
    if let Some(h) = t.head_rows().filter(|h| (h.id, h.floor, h.tag) == (id, range.0, range.1)) {
        // The entry's rows were asked for the chunks the command reads (`span_of`): a range
        // outside them would be read from this view, which may be older than the entry.
        let inside = h.span.0 <= a && b <= h.span.1;
        debug_assert!(inside, "chunks {a}..={b} outside the cached span {:?}", h.span);
        if inside {
            return Ok(extent::visible_in(h.rows, a, b));
        }
    }
    extent::visible(t.chunks(), ctx, id, range, a, b)
}

/// What [`visible`] returns: `(index, tag of the row, the chunk)` for each chunk with a row.
type Visible = Result<Vec<(u64, u64, ChunkRef)>, StoreError>;

/// The rows the head of object `id` sees, from the metadata cache (`metacache.rs`): what a
/// read of that head takes instead of looking in the table.
/// `rows` are those overlapping chunks `span.0..=span.1` (those the read asked for): a read of
/// chunks outside them looks in the table.
#[derive(Clone, Copy)]
pub(crate) struct HeadRows<'d> {
    pub id: u64,
    pub floor: u64,
    pub tag: u64,
    pub span: (u64, u64),
    pub rows: &'d [Extent],
}

/// Tables of a read: those of the shared read view (`view.rs`), and the rows of the object's
/// head when the metadata cache had them.
pub(crate) struct ReadTables<'d> {
    pub view: &'d ReadView,
    pub data: &'d DataFile,
    pub head_rows: Option<HeadRows<'d>>,
    pub sink: Option<&'d dyn ReadSink>,
}

impl Tables for ReadTables<'_> {
    type Chunks = ReadOnlyTable<&'static ExtentKey, &'static [u8]>;
    type Kv = ReadOnlyTable<&'static [u8], &'static [u8]>;
    type Header = ReadOnlyTable<&'static [u8; 8], &'static [u8]>;
    fn chunks(&self) -> &Self::Chunks {
        &self.view.chunks
    }
    fn data(&self) -> &DataFile {
        self.data
    }
    fn xattrs(&self) -> &Self::Kv {
        &self.view.xattrs
    }
    fn omap(&self) -> &Self::Kv {
        &self.view.omap
    }
    fn omap_header(&self) -> &Self::Header {
        &self.view.omap_header
    }
    fn head_rows(&self) -> Option<HeadRows<'_>> {
        self.head_rows
    }
    fn sink(&self) -> Option<&dyn ReadSink> {
        self.sink
    }
}

/// Tables of a write transaction. The xattr/omap tables are opened on first use: most data
/// writes never touch them, and every table a redb transaction opens costs at commit.
pub(crate) struct WriteTables<'txn> {
    txn: &'txn WriteTransaction,
    pub chunks: Table<'txn, &'static ExtentKey, &'static [u8]>,
    pub data: &'txn DataFile,
    kv: Option<KvTables<'txn>>,
}

/// The xattr, omap and omap header tables of a write transaction.
pub(crate) struct KvTables<'txn> {
    pub xattrs: Table<'txn, &'static [u8], &'static [u8]>,
    pub omap: Table<'txn, &'static [u8], &'static [u8]>,
    pub omap_header: Table<'txn, &'static [u8; 8], &'static [u8]>,
}

impl<'txn> WriteTables<'txn> {
    /// Opens the chunk table of `txn`.
    pub fn open(txn: &'txn WriteTransaction, data: &'txn DataFile) -> Result<Self, StoreError> {
        Ok(WriteTables { txn, chunks: txn.open_table(EXTENTS)?, data, kv: None })
    }

    /// The xattr/omap tables, opening them if needed.
    pub fn kv(&mut self) -> Result<&mut KvTables<'txn>, StoreError> {
        if self.kv.is_none() {
            self.kv = Some(KvTables {
                xattrs: self.txn.open_table(XATTRS)?,
                omap: self.txn.open_table(OMAP)?,
                omap_header: self.txn.open_table(OMAP_HEADER)?,
            });
        }
        Ok(self.kv.as_mut().expect("opened above"))
    }

    fn kv_opened(&self) -> &KvTables<'txn> {
        self.kv.as_ref().expect("xattr/omap tables read before WriteTables::kv opened them")
    }
}

impl<'txn> Tables for WriteTables<'txn> {
    type Chunks = Table<'txn, &'static ExtentKey, &'static [u8]>;
    type Kv = Table<'txn, &'static [u8], &'static [u8]>;
    type Header = Table<'txn, &'static [u8; 8], &'static [u8]>;
    fn chunks(&self) -> &Self::Chunks {
        &self.chunks
    }
    fn data(&self) -> &DataFile {
        self.data
    }
    fn xattrs(&self) -> &Self::Kv {
        &self.kv_opened().xattrs
    }
    fn omap(&self) -> &Self::Kv {
        &self.kv_opened().omap
    }
    fn omap_header(&self) -> &Self::Header {
        &self.kv_opened().omap_header
    }
}

/// Reads `buf.len()` bytes of chunk `index` (version `tag`) from block `block`: a block past
/// the data file's end is `Corrupt` (a row pointing at data that never reached the disk).
pub(crate) fn read_block(
    data: &DataFile,
    ctx: &Ctx,
    index: u64,
    tag: u64,
    block: u64,
    buf: &mut [u8],
) -> Result<(), StoreError> {
    data.read(block, buf).map_err(|error| match error.kind() {
        std::io::ErrorKind::UnexpectedEof => ctx.corrupt(format!(
            "chunk {index} version {tag}: block {block} lies past the end of the data file"
        )),
        _ => StoreError::Io(error),
    })
}

/// Checks chunk data against the crc its row stores.
pub(crate) fn verify_data(
    ctx: &Ctx,
    index: u64,
    tag: u64,
    stored: u32,
    data: &[u8],
) -> Result<u32, StoreError> {
    let computed = crc32c::crc32c(data);
    if computed != stored {
        return Err(ctx.corrupt(format!(
            "chunk {index} version {tag}: stored crc {stored:#010x}, data crc {computed:#010x}"
        )));
    }
    Ok(computed)
}

/// Loads into `buf` the verified data of the chunk a row describes (empty for a hole).
/// Returns its crc.
pub(crate) fn load_ref(
    data: &DataFile,
    ctx: &Ctx,
    index: u64,
    tag: u64,
    r: ChunkRef,
    buf: &mut Vec<u8>,
) -> Result<u32, StoreError> {
    buf.clear();
    let ChunkRef::Data { crc, len, block } = r else {
        return Ok(0);
    };
    buf.resize(len as usize, 0);
    read_block(data, ctx, index, tag, block, buf)?;
    verify_data(ctx, index, tag, crc, buf)
}

/// Loads into `buf` the verified data of chunk `index` as a version with chunk range
/// `floor..=tag` sees it (empty if it has none: zeros). Returns the tag of the chunk version
/// found.
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_chunk<T: Tables>(
    t: &T,
    ctx: &Ctx,
    id: u64,
    index: u64,
    floor: u64,
    tag: u64,
    buf: &mut Vec<u8>,
) -> Result<Option<u64>, StoreError> {
    buf.clear();
    let found = visible(t, ctx, id, (floor, tag), index, index)?;
    let Some(&(_, found, r)) = found.first() else {
        return Ok(None);
    };
    load_ref(t.data(), ctx, index, found, r, buf)?;
    Ok(Some(found))
}

/// Reads `len` bytes at `off` (0: to the end) of the object content version `v` sees. Every
/// chunk's crc is checked; the payload's crc is assembled from the verified chunk crcs.
/// Whole chunks inside the range are read straight into the output, a run of consecutive
/// blocks in one read.
pub(crate) fn read_data<T: Tables>(
    t: &T,
    ctx: &Ctx,
    id: u64,
    v: &Version,
    (off, len): (u64, u64),
    sink: Option<&dyn ReadSink>,
) -> Result<Payload, StoreError> {
    if off >= v.size {
        return Ok(Payload::with_crc(Bytes::new(), 0));
    }
    let want = if len == 0 { v.size - off } else { len.min(v.size - off) };
    let end = off + want;
    let refs = visible(t, ctx, id, (v.floor, v.tag), off / CHUNK, (end - 1) / CHUNK)?;
    // Chunks whose data lies inside the output are read in place.
    let inside =
        |index: u64, len: u32| index * CHUNK >= off && index * CHUNK + u64::from(len) <= end;
    let all_inside = || {
        refs.iter().all(|&(i, _, r)| !matches!(r, ChunkRef::Data { len, .. } if !inside(i, len)))
    };
    if want as usize >= PIECED_READ_MIN && off % CHUNK == 0 && !is_cached_only() && all_inside() {
        let total = want as usize;
        if let Some(sink) = sink.filter(|sink| sink.start(total)) {
            // Each piece in a buffer of its own, handed on once checked (not hashed here: the
            // frame that carries them is signed as it is written).
            let pieces = piece_lens(total).map(PooledBuf::piece).collect();
            let given = |piece: PooledBuf| sink.piece(Bytes::from_owner(piece));
            if let Some((crc, _)) =
                read_pieced(t.data(), ctx, &refs, (off, total), pieces, false, given)?
            {
                sink.end(crc);
                return Ok(Payload::with_crc(Bytes::new(), crc));
            }
            sink.abort();
        } else {
            let mut buf = PooledBuf::whole(total);
            let pieces = buf.as_mut_slice().chunks_mut(READ_PIECE).collect();
            if let Some((crc, digest)) =
                read_pieced(t.data(), ctx, &refs, (off, total), pieces, true, |_| true)?
            {
                let digest = digest.expect("hashed");
                return Ok(Payload::with_digest(Bytes::from_owner(buf), crc, digest));
            }
        }
        // A piece failed to read: the plain path below reads again and names the chunk.
    }
    // A large read goes into aligned memory, so its runs of whole blocks are read into it
    // directly (DataFile::read); a small one into a plain buffer (no padding to a block).
    let large = want as usize >= DIRECT_READ_MIN;
    let mut aligned = if large { AlignedBuf::zeroed(want as usize) } else { AlignedBuf::new() };
    let mut small = if large { Vec::new() } else { vec![0u8; want as usize] };
    let out: &mut [u8] = if large { aligned.as_mut_slice() } else { &mut small };
    let data = t.data();
    for run in block_runs(&refs, off, inside) {
        if data.read(run.block, &mut out[run.pos..run.pos + run.bytes]).is_ok() {
            continue;
        }
        // Attribute the failure to its chunk.
        for (k, tag) in run.tags.iter().enumerate() {
            let a = run.pos + k * CHUNK_SIZE;
            let b = (a + CHUNK_SIZE).min(run.pos + run.bytes);
            let (index, block) = (run.first + k as u64, run.block + k as u64);
            read_block(data, ctx, index, *tag, block, &mut out[a..b])?;
        }
    }
    let mut crc = 0u32;
    let mut done = 0usize;
    let mut scratch = Vec::new();
    for &(index, tag, r) in &refs {
        let ChunkRef::Data { crc: stored, len, block } = r else { continue };
        let chunk_start = index * CHUNK;
        let a = chunk_start.max(off);
        let b = (chunk_start + CHUNK).min(end);
        let (oa, ob) = ((a - off) as usize, (b - off) as usize);
        crc = append_zeros(crc, oa - done);
        if inside(index, len) {
            crc = append_checked(ctx, crc, (index, tag, stored), &out[oa..ob], len as usize)?;
        } else {
            scratch.clear();
            scratch.resize(len as usize, 0);
            read_block(data, ctx, index, tag, block, &mut scratch)?;
            verify_data(ctx, index, tag, stored, &scratch)?;
            let da = (a - chunk_start) as usize;
            let db = ((b - chunk_start) as usize).min(scratch.len());
            if da < db {
                out[oa..oa + (db - da)].copy_from_slice(&scratch[da..db]);
            }
            crc = crc32c::crc32c_append(crc, &out[oa..ob]);
        }
        done = ob;
    }
    crc = append_zeros(crc, out.len() - done);
    let data = if large { Bytes::from_owner(aligned) } else { Bytes::from(small) };
    Ok(Payload::with_crc(data, crc))
}

/// Consecutive blocks holding consecutive chunks, read with one call.
struct Run {
    /// Where the first chunk's bytes go in the output.
    pos: usize,
    /// The first block.
    block: u64,
    bytes: usize,
    /// The first chunk's index.
    first: u64,
    /// Each chunk's version tag (to name a chunk whose block fails to read).
    tags: Vec<u64>,
}

/// The runs of the data chunks among `refs` that lie `inside` a read starting at `off`: a
/// run grows while the next chunk's block follows its last and its data follows in the
/// output (a short chunk ends a run).
fn block_runs(
    refs: &[(u64, u64, ChunkRef)],
    off: u64,
    inside: impl Fn(u64, u32) -> bool,
) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for &(index, tag, r) in refs {
        let ChunkRef::Data { len, block, .. } = r else { continue };
        if !inside(index, len) {
            continue;
        }
        let pos = (index * CHUNK - off) as usize;
        match runs.last_mut() {
            Some(run)
                if run.bytes % CHUNK_SIZE == 0
                    && run.block + (run.bytes / CHUNK_SIZE) as u64 == block
                    && run.pos + run.bytes == pos =>
            {
                run.bytes += len as usize;
                run.tags.push(tag);
            }
            _ => runs.push(Run { pos, block, bytes: len as usize, first: index, tags: vec![tag] }),
        }
    }
    runs
}

/// `crc` followed by a chunk read into the output: `chunk` is its place there (up to the
/// next chunk or the output's end), its first `len` bytes its data, checked against the
/// `stored` crc of chunk `index` version `tag`; the rest of `chunk` counts as zeros.
fn append_checked(
    ctx: &Ctx,
    crc: u32,
    (index, tag, stored): (u64, u64, u32),
    chunk: &[u8],
    len: usize,
) -> Result<u32, StoreError> {
    let actual = verify_data(ctx, index, tag, stored, &chunk[..len])?;
    Ok(if len == CHUNK_SIZE {
        combine_chunk(crc, actual)
    } else {
        append_zeros(crc32c::crc32c_append(crc, &chunk[..len]), chunk.len() - len)
    })
}

/// Reads of at least this many bytes go through [`read_pieced`].
pub(crate) const PIECED_READ_MIN: usize = 1 << 20;

/// Buffers of large reads kept for the next ones (a fresh 4 MiB buffer cost a 4 MiB memset
/// and its page faults before the device read could start: ~7% of the OSD's CPU under
/// 4 MiB reads at QD32, issue 14), per process (the OSDs of one `quarry up` share them):
/// whole reads' buffers, and the pieces of reads given to a [`ReadSink`] (one 4 MiB read's:
/// only a read alone in flight is given to one).
static WHOLE_BUFS: BufPool = BufPool::new(4 << 20, 4);
static PIECE_BUFS: BufPool = BufPool::new(READ_PIECE, 8);

/// Aligned buffers of one size, at most `kept` of them kept for reuse.
struct BufPool {
    bufs: std::sync::Mutex<Vec<AlignedBuf>>,
    size: usize,
    kept: usize,
}

impl BufPool {
    const fn new(size: usize, kept: usize) -> BufPool {
        BufPool { bufs: std::sync::Mutex::new(Vec::new()), size, kept }
    }

    fn bufs(&self) -> std::sync::MutexGuard<'_, Vec<AlignedBuf>> {
        self.bufs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A large read's buffer (or one piece's), owned by the payload's `Bytes` until the reply is
/// sent; then back to its pool. Its bytes are whatever the last read left: [`read_pieced`]
/// overwrites or zeroes every one.
struct PooledBuf {
    buf: AlignedBuf,
    pool: &'static BufPool,
}

impl PooledBuf {
    fn take(pool: &'static BufPool, len: usize) -> PooledBuf {
        let kept = if len <= pool.size { pool.bufs().pop() } else { None };
        // A fresh one has a kept buffer's size (at least), so it is kept afterwards.
        let mut buf = kept.unwrap_or_else(|| AlignedBuf::zeroed(len.max(pool.size)));
        buf.reuse_as(len);
        PooledBuf { buf, pool }
    }

    /// A buffer for a whole read of `len` bytes.
    fn whole(len: usize) -> PooledBuf {
        PooledBuf::take(&WHOLE_BUFS, len)
    }

    /// A buffer for one piece (at most [`READ_PIECE`] bytes).
    fn piece(len: usize) -> PooledBuf {
        PooledBuf::take(&PIECE_BUFS, len)
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.buf.as_mut_slice()
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_slice()
    }
}

impl AsMut<[u8]> for PooledBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut_slice()
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if self.buf.capacity() != self.pool.size {
            return;
        }
        let mut kept = self.pool.bufs();
        if kept.len() < self.pool.kept {
            kept.push(std::mem::take(&mut self.buf));
        }
    }
}

/// The lengths of the pieces of a read of `total` bytes.
fn piece_lens(total: usize) -> impl Iterator<Item = usize> {
    (0..total).step_by(READ_PIECE).map(move |start| READ_PIECE.min(total - start))
}

/// Threads [`read_pieced`] reads pieces with, each taking every other piece.
const READERS: usize = 2;

/// The pieces [`read_pieced`] reads one after the other (the device reads 512 KiB pieces
/// back to back as fast as one 4 MiB read here: 1.3 GB/s either way, issue 14).
const READ_PIECE: usize = 512 << 10;

/// What [`read_pieced`] read: the payload's crc and, if it hashed them, the bytes' digest.
type Pieced = (u32, Option<[u8; 32]>);

/// A large read whose chunks all lie inside the output (`off` a chunk boundary), of `total`
/// bytes in all, into `pieces` (in order, [`READ_PIECE`] bytes each but the last): two helper
/// threads read the blocks into them, each every other piece, in order (and zero the bytes no
/// block covers: a piece may hold an earlier read's bytes), and as each piece arrives this
/// thread, in the pieces' order, checks its chunks' crcs, hashes it (BLAKE3) if `hash`, and
/// gives it to `given`, so the checks overlap the device instead of following it. Returns the payload's crc (assembled from the verified
/// chunk crcs, as [`read_data`] does) and, if `hash`, the digest of all the bytes, which the
/// reply's frame signs in place of the bytes (`quarry-wire`'s codec: the writer does not hash
/// them again). None if a piece failed to read, `given` refused one (its receiver is gone) or
/// no thread could be started: the caller reads again the plain way, which names the failing
/// chunk.
#[allow(clippy::too_many_arguments)]
fn read_pieced<P: AsMut<[u8]> + Send>(
    data: &DataFile,
    ctx: &Ctx,
    refs: &[(u64, u64, ChunkRef)],
    (off, total): (u64, usize),
    pieces: Vec<P>,
    hash: bool,
    mut given: impl FnMut(P) -> bool,
) -> Result<Option<Pieced>, StoreError> {
    let runs = block_runs(refs, off, |_, _| true);
    let count = pieces.len();
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, P, bool)>(count);
    // Two readers take alternate pieces, so the device always has the next piece asked for
    // while this thread (or the client's, when the pieces are streamed) holds the CPU: one
    // reader, scheduled late on two busy vCPUs, left the device idle between pieces.
    let mut lanes: [Vec<(usize, P)>; READERS] = Default::default();
    for (i, piece) in pieces.into_iter().enumerate() {
        lanes[i % READERS].push((i, piece));
    }
    std::thread::scope(|scope| {
        let runs = &runs;
        for lane in lanes {
            let tx = tx.clone();
            let reader = std::thread::Builder::new()
                .name("quarry-read".into())
                .stack_size(256 << 10)
                .spawn_scoped(scope, move || {
                    for (i, mut held) in lane {
                        let piece = held.as_mut();
                        // Every piece but the last is READ_PIECE long.
                        let start = i * READ_PIECE;
                        let end = start + piece.len();
                        let mut zero_from = start;
                        let ok = runs
                            .iter()
                            .filter(|r| r.pos < end && r.pos + r.bytes > start)
                            .all(|run| {
                                // Positions and piece bounds are multiples of a block.
                                let (a, b) = (run.pos.max(start), (run.pos + run.bytes).min(end));
                                piece[zero_from - start..a - start].fill(0);
                                zero_from = b;
                                let first = run.block + ((a - run.pos) / CHUNK_SIZE) as u64;
                                data.read(first, &mut piece[a - start..b - start]).is_ok()
                            });
                        piece[zero_from - start..].fill(0);
                        if tx.send((i, held, ok)).is_err() {
                            return;
                        }
                    }
                });
            if reader.is_err() {
                return Ok(None);
            }
        }
        drop(tx);
        // Dropped on return (an error too): the reader then stops at its next piece.
        let rx = rx;
        let mut hasher = hash.then(blake3::Hasher::new);
        let (mut crc, mut done, mut next, mut start) = (0u32, 0usize, 0usize, 0usize);
        // Pieces come in any order: each is taken in its turn.
        let mut arrived: Vec<Option<P>> = (0..count).map(|_| None).collect();
        for turn in 0..count {
            let mut held = loop {
                if let Some(held) = arrived[turn].take() {
                    break held;
                }
                let Ok((i, held, true)) = rx.recv() else { return Ok(None) };
                arrived[i] = Some(held);
            };
            let piece: &[u8] = held.as_mut();
            let end = start + piece.len();
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(piece);
            }
            while let Some(&(index, tag, r)) = refs.get(next) {
                let ChunkRef::Data { crc: stored, len, .. } = r else {
                    next += 1;
                    continue;
                };
                let (oa, len) = ((index * CHUNK - off) as usize, len as usize);
                let ob = (oa + CHUNK_SIZE).min(total);
                if ob > end {
                    break;
                }
                crc = append_zeros(crc, oa - done);
                // A short chunk's tail counts as zeros whatever the buffer holds there (the
                // zeroing above makes them agree).
                let chunk = &piece[oa - start..ob - start];
                crc = append_checked(ctx, crc, (index, tag, stored), chunk, len)?;
                done = ob;
                next += 1;
            }
            start = end;
            if !given(held) {
                return Ok(None);
            }
        }
        crc = append_zeros(crc, total - done);
        Ok(Some((crc, hasher.map(|h| *h.finalize().as_bytes()))))
    })
}

/// The object a read op addresses: its internal id and the version the reader sees (None if
/// the object does not exist in that version).
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    pub id: u64,
    pub version: &'a Version,
    /// True when reading the head (xattrs and omap exist only there).
    pub at_head: bool,
}

fn bytes_to_string(ctx: &Ctx, what: &str, raw: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(raw.to_vec())
        .map_err(|_| ctx.corrupt(format!("{what} key is not valid UTF-8")))
}

/// Executes one read-only op. `target` is None when the object does not exist (every read op
/// then fails with ENOENT).
pub(crate) fn read_op<T: Tables>(
    t: &T,
    ctx: &Ctx,
    target: Option<Target<'_>>,
    op: &ObjectOp,
    key_buf: &mut Vec<u8>,
) -> Result<OpOutput, Failure> {
    if op.is_mutation() {
        return Err(Failure::Op(ErrorCode::EROFS));
    }
    if let ObjectOp::CmpExt { off, data } = op {
        return cmp_ext(t, ctx, target, *off, data);
    }
    let Some(target) = target.filter(|t| t.version.exists) else {
        return Err(Failure::Op(ErrorCode::ENOENT));
    };
    let id = target.id;
    let v = target.version;
    let head_only = || {
        if target.at_head {
            Ok(())
        } else {
            Err(Failure::Op(ErrorCode::EOPNOTSUPP))
        }
    };
    match op {
        ObjectOp::Read { off, len } => {
            Ok(OpOutput::Data(read_data(t, ctx, id, v, (*off, *len), t.sink())?))
        }
        ObjectOp::Stat => {
            Ok(OpOutput::Stat { size: v.size, mtime_sec: v.mtime.0, mtime_nsec: v.mtime.1 })
        }
        ObjectOp::AssertExists => Ok(OpOutput::None),
        ObjectOp::GetXattr { name } => {
            head_only()?;
            sub_key(id, name.as_bytes(), key_buf);
            match t.xattrs().get(key_buf.as_slice())? {
                Some(value) => {
                    Ok(OpOutput::Xattr(Bytes::copy_from_slice(ctx.unseal("xattr", value.value())?)))
                }
                None => Err(Failure::Op(ErrorCode::ENODATA)),
            }
        }
        ObjectOp::GetXattrs => {
            head_only()?;
            let mut out = BTreeMap::new();
            let lo = id.to_be_bytes();
            let hi = (id + 1).to_be_bytes();
            for item in t.xattrs().range(lo.as_slice()..hi.as_slice())? {
                let (key, value) = item?;
                let name = bytes_to_string(ctx, "xattr", &key.value()[8..])?;
                out.insert(name, Bytes::copy_from_slice(ctx.unseal("xattr", value.value())?));
            }
            Ok(OpOutput::Xattrs(out))
        }
        ObjectOp::CmpXattr { name, op, value } => {
            head_only()?;
            sub_key(id, name.as_bytes(), key_buf);
            let stored = t.xattrs().get(key_buf.as_slice())?;
            let stored = match stored.as_ref() {
                Some(g) => ctx.unseal("xattr", g.value())?,
                None => &[],
            };
            if op.holds(stored, value) {
                Ok(OpOutput::None)
            } else {
                Err(Failure::Op(ErrorCode::ECANCELED))
            }
        }
        ObjectOp::OmapGetVals { start_after, prefix, max } => {
            head_only()?;
            let (entries, more) = omap_page(t, ctx, id, start_after, prefix, *max, true)?;
            let vals = entries.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
            Ok(OpOutput::OmapVals { vals, more })
        }
        ObjectOp::OmapGetKeys { start_after, max } => {
            head_only()?;
            let (entries, more) = omap_page(t, ctx, id, start_after, "", *max, false)?;
            Ok(OpOutput::OmapKeys { keys: entries.into_iter().map(|(k, _)| k).collect(), more })
        }
        ObjectOp::OmapGetValsByKeys { keys } => {
            head_only()?;
            let mut vals = BTreeMap::new();
            for key in keys {
                sub_key(id, key.as_bytes(), key_buf);
                if let Some(value) = t.omap().get(key_buf.as_slice())? {
                    vals.insert(
                        key.clone(),
                        Bytes::copy_from_slice(ctx.unseal("omap", value.value())?),
                    );
                }
            }
            Ok(OpOutput::OmapVals { vals, more: false })
        }
        ObjectOp::OmapGetHeader => {
            head_only()?;
            let header = t.omap_header().get(&id.to_be_bytes())?;
            let header = match header {
                Some(g) => Bytes::copy_from_slice(ctx.unseal("omap header", g.value())?),
                None => Bytes::new(),
            };
            Ok(OpOutput::OmapHeader(header))
        }
        ObjectOp::OmapCmp { key, op, value } => {
            head_only()?;
            sub_key(id, key.as_bytes(), key_buf);
            match t.omap().get(key_buf.as_slice())? {
                Some(stored) if op.holds(ctx.unseal("omap", stored.value())?, value) => {
                    Ok(OpOutput::None)
                }
                _ => Err(Failure::Op(ErrorCode::ECANCELED)),
            }
        }
        // Mutations were refused above.
        _ => Err(Failure::Op(ErrorCode::EROFS)),
    }
}

/// [`ObjectOp::CmpExt`]: the object's bytes at `off` (zeros past its end or when it is
/// absent) against `expected`; the first difference at index `i` fails with
/// `ErrorCode::cmpext_mismatch(i)`.
fn cmp_ext<T: Tables>(
    t: &T,
    ctx: &Ctx,
    target: Option<Target<'_>>,
    off: u64,
    expected: &[u8],
) -> Result<OpOutput, Failure> {
    if off.checked_add(expected.len() as u64).is_none_or(|end| end > quarry_types::OBJECT_SIZE_MAX)
    {
        return Err(Failure::Op(ErrorCode::EFBIG));
    }
    let stored = match target.filter(|t| t.version.exists) {
        Some(target) if !expected.is_empty() => {
            read_data(t, ctx, target.id, target.version, (off, expected.len() as u64), None)?.data
        }
        _ => Bytes::new(),
    };
    let at = |i: usize| stored.get(i).copied().unwrap_or(0);
    match (0..expected.len()).find(|&i| at(i) != expected[i]) {
        Some(i) => Err(Failure::Op(ErrorCode::cmpext_mismatch(i as u64))),
        None => Ok(OpOutput::None),
    }
}

type OmapPage = (Vec<(String, Option<Bytes>)>, bool);

/// One page of omap entries with key > `start_after` and starting with `prefix`, at most
/// `max` (bounded to `1..=OMAP_PAGE_MAX`), and whether more follow.
fn omap_page<T: Tables>(
    t: &T,
    ctx: &Ctx,
    id: u64,
    start_after: &str,
    prefix: &str,
    max: u32,
    with_values: bool,
) -> Result<OmapPage, StoreError> {
    let limit = (max as usize).clamp(1, OMAP_PAGE_MAX);
    let mut prefix_key = Vec::with_capacity(8 + prefix.len());
    sub_key(id, prefix.as_bytes(), &mut prefix_key);
    let mut after_key = Vec::with_capacity(8 + start_after.len());
    sub_key(id, start_after.as_bytes(), &mut after_key);
    let lower = if prefix.as_bytes() > start_after.as_bytes() {
        Bound::Included(prefix_key.as_slice())
    } else {
        Bound::Excluded(after_key.as_slice())
    };
    let end = (id + 1).to_be_bytes();
    let upper = Bound::Excluded(end.as_slice());
    let mut entries = Vec::new();
    let mut more = false;
    for item in t.omap().range::<&[u8]>((lower, upper))? {
        let (key, value) = item?;
        let key = key.value();
        if !key.starts_with(&prefix_key) {
            break;
        }
        if entries.len() == limit {
            more = true;
            break;
        }
        let name = bytes_to_string(ctx, "omap", &key[8..])?;
        let value = match with_values {
            true => Some(Bytes::copy_from_slice(ctx.unseal("omap", value.value())?)),
            false => None,
        };
        entries.push((name, value));
    }
    Ok((entries, more))
}
