//! PG export and import: a self-checking byte stream holding a whole PG (every object with all
//! its versions, chunks, xattrs, omap and header, plus `pg_state`). Used for Raft snapshots
//! and for moving a PG to a new OSD. Object ids are internal and not exported.
//!
//! Stream layout (integers little-endian, `blob` = u32 length ++ bytes):
//! ```text
//! header  "QRYPGEX1" (8) | version u32 (=3) | pool u64 | seed u32
//! record  tag u8 ++ body, one of:
//!   'S' pg_state: blob
//!   'D' duplicate table entry (version 2), oldest first, after 'S': seq u64 | reqid blob
//!       (`dups::reqid_part`: entity length u16 BE ++ entity ++ client u64 BE ++ tid u64 BE)
//!       | value blob (`dups::encode_value`: version u8 ++ seq u64 ++ bincode(reply), at most
//!       [`DUP_VALUE_MAX`] bytes)
//!   'O' object:   name blob | count u32 | count x (tag u64, floor u64, exists u8, size u64,
//!                 mtime_sec u64, mtime_nsec u32)
//!   'C' chunk of the last object: index u64 | version u64 | crc32c u32 | data blob (<= 4096)
//!   'X' xattr of the last object: name blob | value blob
//!   'M' omap entry of the last object: key blob | value blob
//!   'H' omap header of the last object: blob
//!   'N' snapshot index row of the last object: snap u64 (version 3)
//!   'P' snapshot the PG has purged: snap u64 (version 3)
//!   'E' end: record count u64 (records before it) | crc32c u32 of every byte before the crc
//! ```
//! Version 2 added the 'D' records (the duplicate table travels with the PG, so a follower
//! that installs a snapshot answers resends as the leader would); version 1 streams (no 'D'
//! records) are still imported, with an empty duplicate table.
//! Version 3 added the snapshot index ('N', 'P'); a version 1 or 2 stream imports with an
//! empty index (versions it kept for snapshots are then never trimmed: space, never data).
//! The stream's bytes are pinned by golden tests (`tests/golden/export_v1.hex` and
//! `export_v2.hex`, still imported, and `export_v3.hex`); a change needs a new version that
//! importers of this version refuse with [`StoreError::ExportFormatTooNew`], and import must
//! keep reading the older ones.

use std::io::{BufWriter, Read, Write};

use quarry_types::{PgId, OBJECT_NAME_LEN_MAX, OBJECT_SIZE_MAX};
use redb::{Database, Durability, ReadableTable, WriteTransaction};

use crate::datafile::DataFile;
use crate::dups::{self, DupMemory, DupRow};
use crate::extent;
use crate::format::{
    object_key, object_snap_key, object_snap_of, pg_key, pg_key_end, purged_key, seal,
    snap_object_key, sub_key, unseal, ChunkRef, Extent, ObjectRecord, Version, CHUNK, CHUNK_SIZE,
    DUP_LOG, EXTENTS, META, META_NEXT_ID, OBJECTS, OBJECT_SNAPS, OMAP, OMAP_HEADER, PG_STATE,
    PG_USAGE, PURGED_SNAPS, SNAP_OBJECTS, VERSIONS_MAX, XATTRS,
};
use crate::read::{load_ref, Ctx, WriteTables};
use crate::view::ReadViews;
use crate::{apply, StoreError};

const EXPORT_MAGIC: &[u8; 8] = b"QRYPGEX1";
const EXPORT_VERSION: u32 = 3;
/// The first version with duplicate table records.
const EXPORT_VERSION_DUPS: u32 = 2;
/// The first version with snapshot index records ('N', 'P').
const EXPORT_VERSION_INDEX: u32 = 3;
const TAG_STATE: u8 = b'S';
const TAG_DUP: u8 = b'D';
const TAG_OBJECT: u8 = b'O';
const TAG_CHUNK: u8 = b'C';
const TAG_XATTR: u8 = b'X';
const TAG_OMAP: u8 = b'M';
const TAG_HEADER: u8 = b'H';
const TAG_SNAP_ROW: u8 = b'N';
const TAG_PURGED: u8 = b'P';
const TAG_END: u8 = b'E';
/// Largest xattr/omap/pg_state value accepted from a stream (a bound against garbage lengths).
const VALUE_MAX: usize = 64 << 20;
/// Longest duplicate table value an import accepts: a recorded reply is at most
/// `DUP_REPLY_MAX` (4 KiB) or a list of empty outputs, one per op of a command.
pub(crate) const DUP_VALUE_MAX: usize = 1 << 20;
/// Largest duplicate table request id accepted from a stream (sequence numbers are bounded
/// by `dups::SEQ_MAX`).
const DUP_PART_MAX: usize = 2 + u16::MAX as usize + 16;

/// A writer that keeps the crc32c of everything written.
struct CrcWriter<'a> {
    inner: BufWriter<&'a mut dyn Write>,
    crc: u32,
    records: u64,
}

impl CrcWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.inner.write_all(bytes)?;
        Ok(())
    }

    fn u8(&mut self, v: u8) -> Result<(), StoreError> {
        self.put(&[v])
    }

    fn u32(&mut self, v: u32) -> Result<(), StoreError> {
        self.put(&v.to_le_bytes())
    }

    fn u64(&mut self, v: u64) -> Result<(), StoreError> {
        self.put(&v.to_le_bytes())
    }

    fn blob(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let len = u32::try_from(bytes.len()).map_err(|_| StoreError::BadExport {
            reason: "value longer than 4 GiB cannot be exported",
        })?;
        self.u32(len)?;
        self.put(bytes)
    }

    fn record(&mut self, tag: u8) -> Result<(), StoreError> {
        self.records += 1;
        self.u8(tag)
    }
}

/// Writes the export stream of `pg` from one read transaction (a consistent snapshot);
/// returns the `pg_state` it holds (the opaque blob, if the PG has one).
pub(crate) fn export_pg(
    db: &Database,
    data: &DataFile,
    pg: PgId,
    out: &mut dyn Write,
) -> Result<Option<Vec<u8>>, StoreError> {
    // Blocks the snapshot uses are not reused while the export runs.
    let _reader = data.register_reader();
    let txn = db.begin_read()?;
    let objects = txn.open_table(OBJECTS)?;
    let chunks = txn.open_table(EXTENTS)?;
    let xattrs = txn.open_table(XATTRS)?;
    let omap = txn.open_table(OMAP)?;
    let omap_header = txn.open_table(OMAP_HEADER)?;
    let pg_state = txn.open_table(PG_STATE)?;
    let object_snaps = txn.open_table(OBJECT_SNAPS)?;
    let purged = txn.open_table(PURGED_SNAPS)?;
    let mut w = CrcWriter { inner: BufWriter::with_capacity(256 << 10, out), crc: 0, records: 0 };
    w.put(EXPORT_MAGIC)?;
    w.u32(EXPORT_VERSION)?;
    w.u64(pg.pool)?;
    w.u32(pg.seed)?;
    let mut exported_state = None;
    let mut chunk_buf = Vec::with_capacity(CHUNK_SIZE);
    if let Some(state) = pg_state.get(&pg_key(pg))? {
        let blob = unseal(state.value()).map_err(|d| crate::pg_corrupt(pg, "pg_state", d))?;
        w.record(TAG_STATE)?;
        w.blob(blob)?;
        exported_state = Some(blob.to_vec());
    }
    let dup_rows = dups::entries(&txn.open_table(DUP_LOG)?, pg)?;
    for (seq, part, value) in dup_rows {
        w.record(TAG_DUP)?;
        w.u64(seq)?;
        w.blob(&part)?;
        w.blob(&value)?;
    }
    let start = pg_key(pg);
    let end = pg_key_end(pg);
    let range = match &end {
        Some(end) => objects.range(start.as_slice()..end.as_slice())?,
        None => objects.range(start.as_slice()..)?,
    };
    for item in range {
        let (key, raw) = item?;
        let name_bytes = &key.value()[12..];
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        let ctx = Ctx { pg, name: &name };
        let record = ObjectRecord::decode(raw.value())
            .map_err(|why| ctx.corrupt(format!("object record: {why}")))?;
        w.record(TAG_OBJECT)?;
        w.blob(name_bytes)?;
        w.u32(record.versions.len() as u32)?;
        for v in &record.versions {
            w.u64(v.tag)?;
            w.u64(v.floor)?;
            w.u8(u8::from(v.exists))?;
            w.u64(v.size)?;
            w.u64(v.mtime.0)?;
            w.u32(v.mtime.1)?;
        }
        let id = record.id;
        // Chunks go in (index, version) order, as format 3 kept them.
        let mut refs = Vec::new();
        for row in extent::all_rows(&chunks, &ctx, id)? {
            refs.extend((row.first..row.end()).map(|index| (index, row.tag, row.chunk(index))));
        }
        refs.sort_unstable_by_key(|&(index, tag, _)| (index, tag));
        for (index, tag, r) in refs {
            let crc = load_ref(data, &ctx, index, tag, r, &mut chunk_buf)?;
            w.record(TAG_CHUNK)?;
            w.u64(index)?;
            w.u64(tag)?;
            w.u32(crc)?;
            w.blob(&chunk_buf)?;
        }
        let lo = id.to_be_bytes();
        let hi = (id + 1).to_be_bytes();
        for (tag, table) in [(TAG_XATTR, &xattrs), (TAG_OMAP, &omap)] {
            for item in table.range(lo.as_slice()..hi.as_slice())? {
                let (key, value) = item?;
                w.record(tag)?;
                w.blob(&key.value()[8..])?;
                let what = if tag == TAG_XATTR { "xattr" } else { "omap" };
                w.blob(ctx.unseal(what, value.value())?)?;
            }
        }
        if let Some(header) = omap_header.get(&lo)? {
            w.record(TAG_HEADER)?;
            w.blob(ctx.unseal("omap header", header.value())?)?;
        }
        let lo = object_snap_key(id, 0);
        let hi = object_snap_key(id, u64::MAX);
        for item in object_snaps.range::<&[u8; 16]>(&lo..=&hi)? {
            let (key, _) = item?;
            w.record(TAG_SNAP_ROW)?;
            w.u64(object_snap_of(key.value()))?;
        }
    }
    let lo = purged_key(pg, 0);
    let hi = purged_key(pg, u64::MAX);
    for item in purged.range::<&[u8; 20]>(&lo..=&hi)? {
        let (key, _) = item?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&key.value()[12..]);
        w.record(TAG_PURGED)?;
        w.u64(u64::from_be_bytes(b))?;
    }
    let records = w.records;
    w.u8(TAG_END)?;
    w.u64(records)?;
    let crc = w.crc;
    w.inner.write_all(&crc.to_le_bytes())?;
    w.inner.flush()?;
    Ok(exported_state)
}

/// A reader that keeps the crc32c of everything read. Reads exactly what it needs (no
/// read-ahead), so the caller's stream is left just past the export.
struct CrcReader<'a> {
    inner: &'a mut dyn Read,
    crc: u32,
}

impl CrcReader<'_> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                StoreError::BadExport { reason: "stream ends before its end record" }
            }
            _ => StoreError::Io(e),
        })?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn blob(&mut self, max: usize, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(StoreError::BadExport { reason: "length field over its limit" });
        }
        buf.clear();
        buf.resize(len, 0);
        self.exact(buf)
    }
}

/// Reads and checks the stream header; returns the stream's version.
fn read_header(r: &mut CrcReader, pg: PgId) -> Result<u32, StoreError> {
    let mut magic = [0u8; 8];
    r.exact(&mut magic)?;
    if &magic != EXPORT_MAGIC {
        return Err(StoreError::BadExport { reason: "not a Quarry PG export (bad magic)" });
    }
    let version = match r.u32()? {
        found @ 1..=EXPORT_VERSION => found,
        found if found > EXPORT_VERSION => {
            return Err(StoreError::ExportFormatTooNew { found, supported: EXPORT_VERSION })
        }
        _ => return Err(StoreError::BadExport { reason: "unsupported PG export version" }),
    };
    let found = PgId { pool: r.u64()?, seed: r.u32()? };
    if found != pg {
        return Err(StoreError::ExportPgMismatch { expected: pg, found });
    }
    Ok(version)
}

/// Deletes every object of `pg` (all versions, chunks, xattrs, omap), its `pg_state` and its
/// usage counters, inside `txn`.
pub(crate) fn purge_pg(
    txn: &WriteTransaction,
    data: &DataFile,
    memory: &DupMemory,
    pg: PgId,
) -> Result<(), StoreError> {
    let mut objects = txn.open_table(OBJECTS)?;
    let mut t = WriteTables::open(txn, data)?;
    let start = pg_key(pg);
    let end = pg_key_end(pg);
    let mut ids = Vec::new();
    {
        let range = match &end {
            Some(end) => objects.range(start.as_slice()..end.as_slice())?,
            None => objects.range(start.as_slice()..)?,
        };
        for item in range {
            let (key, raw) = item?;
            let name = String::from_utf8_lossy(&key.value()[12..]).into_owned();
            let record = ObjectRecord::decode(raw.value())
                .map_err(|why| Ctx { pg, name: &name }.corrupt(format!("object record: {why}")))?;
            ids.push(record.id);
        }
    }
    let mut object_snaps = txn.open_table(OBJECT_SNAPS)?;
    for id in ids {
        apply::purge_object_rows(&mut t, id)?;
        let (lo, hi) = (object_snap_key(id, 0), object_snap_key(id, u64::MAX));
        object_snaps.retain_in::<&[u8; 16], _>(&lo..=&hi, |_, _| false)?;
    }
    let (lo, hi) = (purged_key(pg, 0), purged_key(pg, u64::MAX));
    txn.open_table(PURGED_SNAPS)?.retain_in::<&[u8; 20], _>(&lo..=&hi, |_, _| false)?;
    let mut snap_objects = txn.open_table(SNAP_OBJECTS)?;
    match &end {
        Some(end) => snap_objects.retain_in(start.as_slice()..end.as_slice(), |_, _| false)?,
        None => snap_objects.retain_in(start.as_slice().., |_, _| false)?,
    }
    match &end {
        Some(end) => objects.retain_in(start.as_slice()..end.as_slice(), |_, _| false)?,
        None => objects.retain_in(start.as_slice().., |_, _| false)?,
    }
    txn.open_table(PG_STATE)?.remove(&pg_key(pg))?;
    txn.open_table(PG_USAGE)?.remove(&pg_key(pg))?;
    dups::purge(&mut txn.open_table(DUP_LOG)?, pg)?;
    memory.forget(pg);
    Ok(())
}

/// Replaces `pg` with the content of an export stream, in one durable transaction (the data
/// file synced before it): on any error nothing changes. Returns the commit's sequence
/// number for [`DataFile::release`].
pub(crate) fn import_pg(
    db: &Database,
    data: &DataFile,
    views: &ReadViews,
    memory: &DupMemory,
    pg: PgId,
    input: &mut dyn Read,
) -> Result<u64, StoreError> {
    let mut r = CrcReader { inner: input, crc: 0 };
    let version = read_header(&mut r, pg)?;
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    let batch = data.begin_batch();
    purge_pg(&txn, data, memory, pg)?;
    {
        let mut meta = txn.open_table(META)?;
        let mut objects = txn.open_table(OBJECTS)?;
        let mut chunks = txn.open_table(EXTENTS)?;
        let mut xattrs = txn.open_table(XATTRS)?;
        let mut omap = txn.open_table(OMAP)?;
        let mut omap_header = txn.open_table(OMAP_HEADER)?;
        let mut pg_state = txn.open_table(PG_STATE)?;
        let mut pg_usage = txn.open_table(PG_USAGE)?;
        // Duplicate table entries, written a row at a time: (floor, last seq) and the row.
        let mut dup_log = txn.open_table(DUP_LOG)?;
        let mut dup_seqs: Option<(u64, u64)> = None;
        let mut dup_row: Vec<DupRow> = Vec::new();
        let mut dup_parts: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
        let mut object_snaps = txn.open_table(OBJECT_SNAPS)?;
        let mut snap_objects = txn.open_table(SNAP_OBJECTS)?;
        let mut purged = txn.open_table(PURGED_SNAPS)?;
        let mut current_name: Vec<u8> = Vec::new();
        let mut next_id = apply::read_next_id(&meta, pg)?;
        let bad = |reason: &'static str| StoreError::BadExport { reason };
        let mut current: Option<u64> = None;
        let (mut records, mut usage_objects, mut usage_bytes) = (0u64, 0u64, 0u64);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut key = Vec::new();
        // Chunks of one version at consecutive indices and blocks, not yet stored: one row.
        let mut pending: Option<(u64, Extent)> = None;
        let mut value = Vec::new();
        loop {
            let tag = r.u8()?;
            if tag != TAG_CHUNK {
                if let Some((id, row)) = pending.take() {
                    row.encode(&mut value);
                    chunks.insert(&row.key(id), value.as_slice())?;
                }
            }
            if tag == TAG_END {
                let count = r.u64()?;
                let expected = r.crc;
                let mut stored = [0u8; 4];
                r.inner.read_exact(&mut stored).map_err(|_| bad("stream ends inside its crc"))?;
                if u32::from_le_bytes(stored) != expected {
                    return Err(bad("stream crc mismatch"));
                }
                if count != records {
                    return Err(bad("record count mismatch"));
                }
                break;
            }
            records += 1;
            match tag {
                TAG_STATE => {
                    r.blob(VALUE_MAX, &mut a)?;
                    pg_state.insert(&pg_key(pg), seal(&a).as_slice())?;
                }
                TAG_DUP if version >= EXPORT_VERSION_DUPS => {
                    if current.is_some() {
                        return Err(bad("duplicate table entry after an object"));
                    }
                    let seq = r.u64()?;
                    if seq >= dups::SEQ_MAX {
                        return Err(bad("duplicate table sequence number out of range"));
                    }
                    r.blob(DUP_PART_MAX, &mut a)?;
                    r.blob(DUP_VALUE_MAX, &mut b)?;
                    if !dups::valid_reqid_part(&a) {
                        return Err(bad("malformed duplicate table request id"));
                    }
                    match dups::decode_value(&b) {
                        Ok((stored, _)) if stored == seq => {}
                        _ => return Err(bad("malformed duplicate table entry")),
                    }
                    dup_seqs = match dup_seqs {
                        None => Some((seq, seq)),
                        Some((floor, last)) if seq == last + 1 => Some((floor, seq)),
                        Some(_) => return Err(bad("duplicate table entries out of order")),
                    };
                    if !dup_parts.insert(a.clone()) {
                        return Err(bad("duplicate table entry appears twice"));
                    }
                    dup_row.push((seq, a.clone(), b.clone()));
                    if dup_row.len() == dups::ROW_ENTRIES_MAX {
                        let floor = dup_seqs.map_or(seq, |s| s.0);
                        dups::write_entries(&mut dup_log, pg, floor, &dup_row)?;
                        dup_row.clear();
                    }
                }
                TAG_OBJECT => {
                    r.blob(OBJECT_NAME_LEN_MAX, &mut a)?;
                    if a.is_empty() || std::str::from_utf8(&a).is_err() {
                        return Err(bad("object name empty or not UTF-8"));
                    }
                    let count = r.u32()? as usize;
                    if count == 0 || count > VERSIONS_MAX {
                        return Err(bad("object version count out of range"));
                    }
                    let mut versions = Vec::with_capacity(count.min(1024));
                    for _ in 0..count {
                        let tag = r.u64()?;
                        let floor = r.u64()?;
                        let exists = match r.u8()? {
                            0 => false,
                            1 => true,
                            _ => return Err(bad("exists flag is not 0 or 1")),
                        };
                        let size = r.u64()?;
                        let mtime = (r.u64()?, r.u32()?);
                        versions.push(Version { tag, floor, exists, size, mtime });
                    }
                    let record = ObjectRecord { id: next_id, versions };
                    record.check().map_err(|_| bad("invalid object version history"))?;
                    let head = record.head();
                    if !head.exists && record.versions.len() == 1 {
                        return Err(bad("object with no visible version"));
                    }
                    if head.exists {
                        usage_objects += 1;
                        usage_bytes += head.size;
                    }
                    object_key(pg, &a, &mut key);
                    if objects.get(key.as_slice())?.is_some() {
                        return Err(bad("object appears twice"));
                    }
                    record.encode(&mut b);
                    objects.insert(key.as_slice(), b.as_slice())?;
                    current = Some(next_id);
                    current_name.clone_from(&a);
                    next_id += 1;
                }
                TAG_CHUNK => {
                    let id = current.ok_or(bad("chunk before any object"))?;
                    let index = r.u64()?;
                    let version = r.u64()?;
                    let crc = r.u32()?;
                    r.blob(CHUNK_SIZE, &mut a)?;
                    if index >= OBJECT_SIZE_MAX / CHUNK {
                        return Err(bad("chunk index beyond the object size limit"));
                    }
                    if crc32c::crc32c(&a) != crc {
                        return Err(bad("chunk crc mismatch"));
                    }
                    let name = String::from_utf8_lossy(&current_name).into_owned();
                    let ctx = Ctx { pg, name: &name };
                    let in_pending = pending.as_ref().is_some_and(|(p, row)| {
                        *p == id && row.tag == version && row.covers(index)
                    });
                    if in_pending
                        || !extent::overlapping(&chunks, &ctx, id, version, index, index)?
                            .is_empty()
                    {
                        return Err(bad("chunk appears twice"));
                    }
                    let block = if a.is_empty() {
                        None
                    } else {
                        let block = data.allocate(1);
                        data.write(block, &a)?;
                        Some(block)
                    };
                    let chunk = match block {
                        None => ChunkRef::Hole,
                        Some(block) => ChunkRef::Data { crc, len: a.len() as u32, block },
                    };
                    let extended = match &mut pending {
                        Some((p, row)) if *p == id => row.try_append(version, index, chunk),
                        _ => false,
                    };
                    if !extended {
                        if let Some((p, row)) = pending.take() {
                            row.encode(&mut value);
                            chunks.insert(&row.key(p), value.as_slice())?;
                        }
                        pending = Some((id, Extent::single(version, index, chunk)));
                    }
                }
                TAG_XATTR | TAG_OMAP => {
                    let id = current.ok_or(bad("xattr or omap entry before any object"))?;
                    r.blob(VALUE_MAX, &mut a)?;
                    r.blob(VALUE_MAX, &mut b)?;
                    if std::str::from_utf8(&a).is_err() {
                        return Err(bad("xattr or omap key not UTF-8"));
                    }
                    sub_key(id, &a, &mut key);
                    let table = if tag == TAG_XATTR { &mut xattrs } else { &mut omap };
                    table.insert(key.as_slice(), seal(&b).as_slice())?;
                }
                TAG_HEADER => {
                    let id = current.ok_or(bad("omap header before any object"))?;
                    r.blob(VALUE_MAX, &mut a)?;
                    omap_header.insert(&id.to_be_bytes(), seal(&a).as_slice())?;
                }
                TAG_SNAP_ROW if version >= EXPORT_VERSION_INDEX => {
                    let id = current.ok_or(bad("snapshot index row before any object"))?;
                    let snap = r.u64()?;
                    object_snaps.insert(&object_snap_key(id, snap), ())?;
                    snap_object_key(pg, snap, &current_name, &mut key);
                    snap_objects.insert(key.as_slice(), ())?;
                }
                TAG_PURGED if version >= EXPORT_VERSION_INDEX => {
                    purged.insert(&purged_key(pg, r.u64()?), ())?;
                }
                _ => return Err(bad("unknown record tag")),
            }
        }
        meta.insert(META_NEXT_ID, next_id.to_le_bytes().as_slice())?;
        if let Some((floor, _)) = dup_seqs {
            dups::write_entries(&mut dup_log, pg, floor, &dup_row)?;
        }
        memory.forget(pg);
        if usage_objects > 0 || usage_bytes > 0 {
            pg_usage.insert(&pg_key(pg), &crate::format::seal_usage(usage_objects, usage_bytes))?;
        }
    }
    // The rows become durable with this commit: their data first.
    data.sync()?;
    views.commit(txn)?;
    Ok(batch.committed())
}
