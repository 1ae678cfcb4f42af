//! The write side: applying a batch of `ObjectCommand`s of one PG inside one redb write
//! transaction. Owns the version rule (which tag a mutation writes at), the chunk-level
//! mutations (write, zero, truncate, remove, rollback), the snapshot index (which objects keep
//! versions for which snapshot) and trimming a removed snapshot from it, per-command atomicity
//! (undo log) and the per-PG usage counters.

use std::collections::BTreeMap;

use quarry_types::{
    ErrorCode, ObjectMethods, ObjectOp, OpOutput, OpReply, PgId, SnapId, OBJECT_NAME_LEN_MAX,
    OBJECT_SIZE_MAX, SNAP_HEAD,
};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::crc::combine_chunk;
use crate::datafile::DataFile;
use crate::dups::{DupMemory, DupTables};
use crate::extent;
use crate::format::{
    extent_key, object_key, object_snap_key, object_snap_of, pg_key, purged_key, seal, seal_usage,
    snap_object_key, snap_objects_end, sub_key, unseal_usage, Extent, ExtentBody, ExtentKey,
    ObjectRecord, Version, CHUNK, CHUNK_SIZE, EXTENT_CHUNKS_MAX, META, META_NEXT_ID, OBJECTS,
    OBJECT_SNAPS, PG_STATE, PG_USAGE, PURGED_SNAPS, SNAP_OBJECTS,
};
use crate::methods;
use crate::read::{add_output, load_chunk, read_op, Ctx, Failure, Target, WriteTables};
use crate::{ObjectCommand, StoreError};

/// Which table an undo entry restores.
#[derive(Clone, Copy)]
enum UndoTable {
    Chunks,
    Xattrs,
    Omap,
    OmapHeader,
}

/// The value a key had before a write of the current command (None: absent).
struct Undo {
    table: UndoTable,
    key: Vec<u8>,
    old: Option<Vec<u8>>,
}

/// The xattr or the omap table.
#[derive(Clone, Copy)]
enum Kv {
    Xattrs,
    Omap,
}

/// State of the command being applied.
struct Cmd<'c> {
    ctx: Ctx<'c>,
    mtime: (u64, u32),
    /// The object's record as the command has changed it so far (None: no object).
    record: Option<ObjectRecord>,
    /// A record for this name is stored in the objects table.
    stored: bool,
    /// Head existence and size before the command, for the usage counters.
    before: Option<u64>,
    /// The version tag this command's mutations write at.
    w: u64,
    /// The record must be written back.
    dirty: bool,
    /// Writes of the current op must be undoable (a later op of the command may fail).
    undoable: bool,
    /// Writes made while not undoable: must stay 0 if the command fails.
    unrecorded_writes: u64,
    /// Next per-chunk crc (computed by the pre-check) for whole-chunk write pieces.
    crc_cursor: usize,
    /// The id counter before the command, restored if it fails.
    saved_next_id: Option<(u64, u64)>,
    /// The command's snapshots (its snap context without the PG's purged snapshots), newest
    /// first.
    snaps: Vec<SnapId>,
    /// Snapshots the command preserved the previous head for: index rows written when the
    /// command succeeds.
    preserved_for: Vec<SnapId>,
    /// The object's id was allocated by this command and no extent row of it has been
    /// written since: a cut has nothing to find (ids come from one counter per store, never
    /// reused: a failed command's rows are undone with its counter). Saves the two range
    /// queries a new object's write would make for nothing (~10% of the apply thread's CPU
    /// per fresh 4 KiB object).
    rowless: bool,
}

impl Cmd<'_> {
    fn exists(&self) -> bool {
        self.record.as_ref().is_some_and(|r| r.head().exists)
    }

    fn record(&self) -> &ObjectRecord {
        self.record.as_ref().expect("command state without a record after ensure_head")
    }

    fn head_mut(&mut self) -> &mut Version {
        self.record.as_mut().expect("command state without a record after ensure_head").head_mut()
    }

    /// `(object id, head floor, head size)`.
    fn head_layout(&self) -> (u64, u64, u64) {
        let record = self.record();
        let head = record.head();
        assert_eq!(head.tag, self.w, "head not at the command's write tag");
        (record.id, head.floor, head.size)
    }
}

/// Ops whose outcome depends on the object's state (they can fail after earlier ops of the
/// same command wrote something). Mutations that can fail check before they write.
fn fallible(op: &ObjectOp) -> bool {
    matches!(
        op,
        ObjectOp::Read { .. }
            | ObjectOp::Stat
            | ObjectOp::AssertExists
            | ObjectOp::GetXattr { .. }
            | ObjectOp::GetXattrs
            | ObjectOp::CmpXattr { .. }
            | ObjectOp::OmapGetVals { .. }
            | ObjectOp::OmapGetKeys { .. }
            | ObjectOp::OmapGetValsByKeys { .. }
            | ObjectOp::OmapGetHeader
            | ObjectOp::OmapCmp { .. }
            | ObjectOp::Create { exclusive: true }
            | ObjectOp::Remove
            | ObjectOp::RmXattr { .. }
            | ObjectOp::OmapRmKeys { .. }
            | ObjectOp::OmapClear
            | ObjectOp::Call { .. }
            | ObjectOp::Rollback { .. }
            | ObjectOp::CmpExt { .. }
    )
}

/// Number of chunks covering `size` bytes.
fn chunks_for(size: u64) -> u64 {
    size.div_ceil(CHUNK)
}

/// Checks a payload against its crc while computing the crc of each whole-chunk piece (pushed
/// to `crcs` in order), so the write does not pass over the data again.
fn payload_crcs(off: u64, data: &[u8], crcs: &mut Vec<u32>) -> u32 {
    let mut total = 0u32;
    let mut pos = 0usize;
    while pos < data.len() {
        let in_chunk = ((off + pos as u64) % CHUNK) as usize;
        let n = (CHUNK_SIZE - in_chunk).min(data.len() - pos);
        let piece = &data[pos..pos + n];
        if in_chunk == 0 && n == CHUNK_SIZE {
            let crc = crc32c::crc32c(piece);
            crcs.push(crc);
            total = combine_chunk(total, crc);
        } else {
            total = crc32c::crc32c_append(total, piece);
        }
        pos += n;
    }
    total
}

/// Drops trailing zero bytes (short chunk data reads as zero-filled).
fn trim_zeros(buf: &mut Vec<u8>) {
    let keep = buf.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    buf.truncate(keep);
}

/// A table of a batch's transaction, opened on first use.
struct Lazy<'txn, K: redb::Key + 'static, V: redb::Value + 'static> {
    def: TableDefinition<'static, K, V>,
    table: Option<Table<'txn, K, V>>,
}

impl<'txn, K: redb::Key + 'static, V: redb::Value + 'static> Lazy<'txn, K, V> {
    fn new(def: TableDefinition<'static, K, V>) -> Self {
        Lazy { def, table: None }
    }

    fn get(&mut self, txn: &'txn WriteTransaction) -> Result<&mut Table<'txn, K, V>, StoreError> {
        if self.table.is_none() {
            self.table = Some(txn.open_table(self.def)?);
        }
        Ok(self.table.as_mut().expect("opened above"))
    }
}

/// The per-PG rows a write transaction's applies change: each PG's latest `pg_state` and its
/// usage counters, kept in memory and written once when the transaction commits
/// ([`PgRows::write`]). Consecutive applies of a PG rewrote both rows each time (~9% of the
/// apply thread's time at 4 KiB writes, QD32: docs/benchmarks.md, "Twenty-second round").
/// Readers of those rows commit the open transaction first (`writer.rs`).
#[derive(Default)]
pub(crate) struct PgRows {
    rows: BTreeMap<PgId, PgRow>,
}

#[derive(Default)]
struct PgRow {
    /// The PG's `pg_state` as its last apply left it.
    state: Vec<u8>,
    /// `(objects, bytes)` once an apply of the transaction changed them.
    usage: Option<(u64, u64)>,
}

impl PgRows {
    /// Writes the rows into `txn` (its last step before the commit) and forgets them.
    pub(crate) fn write(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut states = txn.open_table(PG_STATE)?;
        let mut usage = Lazy::new(PG_USAGE);
        for (pg, row) in std::mem::take(&mut self.rows) {
            let key = pg_key(pg);
            match row.usage {
                Some((0, 0)) => {
                    usage.get(txn)?.remove(&key)?;
                }
                Some((objects, bytes)) => {
                    usage.get(txn)?.insert(&key, &seal_usage(objects, bytes))?;
                }
                None => {}
            }
            states.insert(&key, seal(&row.state).as_slice())?;
        }
        Ok(())
    }
}

/// One apply call: the open tables of its write transaction and per-batch scratch state.
pub(crate) struct Batch<'txn> {
    pg: PgId,
    /// What `ObjectOp::Call` runs.
    methods: Option<&'txn dyn ObjectMethods>,
    txn: &'txn WriteTransaction,
    objects: Table<'txn, &'static [u8], &'static [u8]>,
    t: WriteTables<'txn>,
    // Opened on first use: most applies never touch them, and opening a table costs about
    // as much as an insert (7% of the apply thread's time at 4 KiB writes, QD32).
    snap_objects: Lazy<'txn, &'static [u8], ()>,
    object_snaps: Lazy<'txn, &'static [u8; 16], ()>,
    purged: Lazy<'txn, &'static [u8; 20], ()>,
    pg_usage: Lazy<'txn, &'static [u8; 12], &'static [u8; 20]>,
    /// The per-PG rows of the transaction, written at its commit.
    rows: &'txn mut PgRows,
    meta: Lazy<'txn, &'static str, &'static [u8]>,
    /// `(value at the start of the batch, next id)`, loaded on the first object creation.
    next_id: Option<(u64, u64)>,
    delta_objects: i64,
    delta_bytes: i64,
    undo: Vec<Undo>,
    key_buf: Vec<u8>,
    obj_key: Vec<u8>,
    chunk_buf: Vec<u8>,
    record_buf: Vec<u8>,
    crcs: Vec<u32>,
    /// The placed writes of the next command: `(op index, first block, crcs, taken by a
    /// row)` ([`crate::PlacedOp`]).
    placed: Vec<(usize, u64, Vec<u32>, bool)>,
    /// The placement of the op being executed (index into `placed`): its whole-chunk run
    /// takes its blocks.
    placed_now: Option<usize>,
    /// The duplicate table, opened on the first command with a request id.
    dups: Option<DupTables<'txn>>,
    /// The store's memory of it.
    dup_memory: &'txn DupMemory,
    /// Its bound per PG.
    dups_max: usize,
    dup_key: Vec<u8>,
}

impl<'txn> Batch<'txn> {
    /// Opens the tables of `txn` for applying commands. Tables most commands do not need
    /// (meta, usage, xattrs, omap) are opened on first use.
    pub fn open(
        txn: &'txn WriteTransaction,
        data: &'txn DataFile,
        dup_memory: &'txn DupMemory,
        methods: Option<&'txn dyn ObjectMethods>,
        dups_max: usize,
        rows: &'txn mut PgRows,
    ) -> Result<Self, StoreError> {
        Ok(Batch {
            pg: PgId { pool: 0, seed: 0 },
            methods,
            txn,
            objects: txn.open_table(OBJECTS)?,
            t: WriteTables::open(txn, data)?,
            snap_objects: Lazy::new(SNAP_OBJECTS),
            object_snaps: Lazy::new(OBJECT_SNAPS),
            purged: Lazy::new(PURGED_SNAPS),
            pg_usage: Lazy::new(PG_USAGE),
            rows,
            meta: Lazy::new(META),
            next_id: None,
            delta_objects: 0,
            delta_bytes: 0,
            undo: Vec::new(),
            key_buf: Vec::new(),
            obj_key: Vec::new(),
            chunk_buf: Vec::with_capacity(CHUNK_SIZE),
            record_buf: Vec::new(),
            crcs: Vec::new(),
            placed: Vec::new(),
            placed_now: None,
            dups: None,
            dup_memory,
            dups_max,
            dup_key: Vec::new(),
        })
    }

    /// A new internal object id.
    fn allocate_id(&mut self) -> Result<u64, StoreError> {
        let (first, next) = match self.next_id {
            Some(ids) => ids,
            None => {
                let stored = read_next_id(self.meta.get(self.txn)?, self.pg)?;
                (stored, stored)
            }
        };
        self.next_id = Some((first, next + 1));
        Ok(next)
    }

    /// Starts applying commands of `pg`.
    pub fn begin_pg(&mut self, pg: PgId) {
        assert_eq!((self.delta_objects, self.delta_bytes), (0, 0), "previous PG not ended");
        self.pg = pg;
    }

    /// Ends the current PG's commands: its usage counters and its `pg_state` are kept in the
    /// transaction's [`PgRows`], written once when the transaction commits. The usage row is
    /// read (and checked) at the PG's first change in the transaction, so a damaged or
    /// exhausted row fails this apply, as when the row was rewritten here.
    pub fn end_pg(&mut self, pg_state: &[u8]) -> Result<(), StoreError> {
        let pg = self.pg;
        let (delta_objects, delta_bytes) = (self.delta_objects, self.delta_bytes);
        self.delta_objects = 0;
        self.delta_bytes = 0;
        let corrupt = |detail: String| {
            tracing::error!(pg = %pg, "store corruption: pg_usage: {detail}");
            StoreError::Corrupt { pg, object: String::new(), detail: format!("pg_usage: {detail}") }
        };
        let kept = self.rows.rows.get(&pg).and_then(|row| row.usage);
        let usage = if delta_objects == 0 && delta_bytes == 0 {
            kept
        } else {
            let (objects, bytes) = match kept {
                Some(usage) => usage,
                // Stored counters are data, not an invariant: a damaged row is a corruption
                // error, never a panic.
                None => match self.pg_usage.get(self.txn)?.get(&pg_key(pg))? {
                    Some(v) => unseal_usage(v.value()).map_err(corrupt)?,
                    None => (0, 0),
                },
            };
            let objects = (objects as i128) + i128::from(delta_objects);
            let bytes = (bytes as i128) + i128::from(delta_bytes);
            // One that would go negative (a stale row) is a corruption error too.
            let (Ok(objects), Ok(bytes)) = (u64::try_from(objects), u64::try_from(bytes)) else {
                return Err(corrupt(format!(
                    "counters would become objects {objects}, bytes {bytes}"
                )));
            };
            Some((objects, bytes))
        };
        let row = self.rows.rows.entry(pg).or_default();
        row.usage = usage;
        row.state.clear();
        row.state.extend_from_slice(pg_state);
        Ok(())
    }

    /// Writes the id counter.
    pub fn finish(mut self) -> Result<(), StoreError> {
        assert_eq!((self.delta_objects, self.delta_bytes), (0, 0), "last PG not ended");
        if let Some((first, next)) = self.next_id {
            if first != next {
                let meta = self.meta.get(self.txn)?;
                meta.insert(META_NEXT_ID, next.to_le_bytes().as_slice())?;
            }
        }
        Ok(())
    }

    /// Applies one command atomically: every op succeeds and all effects stay, or the first
    /// failing op's code is returned and the command leaves no trace. A command with a request
    /// id already in the PG's duplicate table is not applied: it gets the recorded reply.
    /// Otherwise its reply (success or failure) is recorded there.
    pub fn apply_command(&mut self, cmd: &ObjectCommand) -> Result<OpReply, StoreError> {
        self.claim_placed(cmd)?;
        let reply = self.apply_deduplicated(cmd)?;
        // Placed blocks no row took (a failed command, a duplicate) go with the batch.
        for (_, block, crcs, taken) in self.placed.drain(..) {
            if !taken {
                (block..block + crcs.len() as u64).for_each(|b| self.t.data.free(b));
            }
        }
        Ok(reply)
    }

    /// [`Batch::apply_command`] but for the placed writes' blocks.
    fn apply_deduplicated(&mut self, cmd: &ObjectCommand) -> Result<OpReply, StoreError> {
        let Some(reqid) = &cmd.reqid else {
            return self.apply_ops(cmd);
        };
        crate::dups::reqid_part(reqid, &mut self.dup_key);
        if self.dups.is_none() {
            self.dups = Some(DupTables::open(self.txn, self.dup_memory)?);
        }
        let dups = self.dups.as_ref().expect("opened above");
        if let Some(reply) = dups.lookup(self.pg, &self.dup_key)? {
            tracing::debug!(pg = %self.pg, %reqid, "duplicate request: answering from the table");
            return Ok(reply);
        }
        let reply = self.apply_ops(cmd)?;
        let dups = self.dups.as_mut().expect("opened above");
        dups.record(self.pg, &self.dup_key, &reply, self.dups_max)?;
        Ok(reply)
    }

    /// The placed writes of the next command given to [`Batch::apply_command`].
    pub fn set_placed<'p>(&mut self, placed: impl Iterator<Item = &'p crate::PlacedOp<'p>>) {
        self.placed.clear();
        for p in placed {
            self.placed.push((p.op, p.placed.block, p.placed.crcs.clone(), false));
        }
    }

    /// Frees the placements of entries applied without their command ([`crate::PgApply`]'s
    /// `dropped`) with the batch.
    pub fn drop_placed(&mut self, dropped: &[&crate::Placed]) {
        for placed in dropped {
            let (block, n) = (placed.block, placed.blocks());
            if self.t.data.claim_reserved(block, n).is_some() {
                (block..block + n).for_each(|b| self.t.data.free(b));
            } else {
                tracing::warn!(pg = %self.pg, block, blocks = n,
                    "a dropped placement is not reserved: left alone");
            }
        }
    }

    /// Claims the blocks of the command's placed writes from the reserved set (freed with the
    /// batch unless a row takes them); those an earlier run wrote are checked against their
    /// crcs first.
    fn claim_placed(&mut self, cmd: &ObjectCommand) -> Result<(), StoreError> {
        let ctx = Ctx { pg: self.pg, name: &cmd.name };
        for (op, block, crcs, _) in &self.placed {
            let n = crcs.len() as u64;
            let Some(earlier) = self.t.data.claim_reserved(*block, n) else {
                return Err(ctx.corrupt(format!(
                    "op {op}: placed blocks {block}..{} are not reserved",
                    block + n
                )));
            };
            if earlier {
                let mut buf = vec![0u8; crcs.len() * CHUNK_SIZE];
                match self.t.data.read(*block, &mut buf) {
                    Ok(()) => {}
                    // Blocks past the file's end: the data never reached the disk.
                    Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return Err(ctx.corrupt(format!(
                            "op {op}: placed blocks {block}..{} are past the data file's end",
                            block + n
                        )));
                    }
                    Err(error) => return Err(error.into()),
                }
                for (k, (chunk, &crc)) in buf.chunks(CHUNK_SIZE).zip(crcs).enumerate() {
                    let found = crc32c::crc32c(chunk);
                    if found != crc {
                        return Err(ctx.corrupt(format!(
                            "op {op}: placed block {}: crc {found:#010x}, the log entry says \
                             {crc:#010x}",
                            block + k as u64
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// [`Batch::apply_command`] without the duplicate table.
    fn apply_ops(&mut self, cmd: &ObjectCommand) -> Result<OpReply, StoreError> {
        let fail = |index: usize, code: ErrorCode| OpReply::Failed { index: index as u32, code };
        if cmd.name.is_empty() {
            return Ok(fail(0, ErrorCode::EINVAL));
        }
        if cmd.name.len() > OBJECT_NAME_LEN_MAX {
            return Ok(fail(0, ErrorCode::ENAMETOOLONG));
        }
        if !cmd.snapc.is_valid() || cmd.snapc.seq >= SNAP_HEAD {
            return Ok(fail(0, ErrorCode::EINVAL));
        }
        self.crcs.clear();
        let mut static_failure = None;
        for (i, op) in cmd.ops.iter().enumerate() {
            let checked = match self.placed.iter().position(|p| p.0 == i) {
                Some(k) => self.precheck_placed(op, k),
                None => self.precheck(op),
            };
            if let Err(code) = checked {
                static_failure = Some((i, code));
                break;
            }
        }
        let last_fallible = cmd
            .ops
            .iter()
            .enumerate()
            .filter(|(i, op)| fallible(op) || static_failure.is_some_and(|(s, _)| s == *i))
            .map(|(i, _)| i)
            .max();

        // Filter the context against the snapshots this PG already trimmed: a version kept for
        // one of them would never be trimmed again (the primary filters against the map's
        // removed snapshots before proposing; this catches a proposal that raced the trim).
        let mut snaps = Vec::with_capacity(cmd.snapc.snaps.len());
        for &snap in &cmd.snapc.snaps {
            if self.purged.get(self.txn)?.get(&purged_key(self.pg, snap))?.is_none() {
                snaps.push(snap);
            }
        }
        let ctx = Ctx { pg: self.pg, name: &cmd.name };
        object_key(self.pg, cmd.name.as_bytes(), &mut self.obj_key);
        let record = match self.objects.get(self.obj_key.as_slice())? {
            Some(raw) => Some(
                ObjectRecord::decode(raw.value())
                    .map_err(|why| ctx.corrupt(format!("object record: {why}")))?,
            ),
            None => None,
        };
        let w = match &record {
            None => cmd.snapc.seq,
            Some(r) => {
                // A snapshot newer than the last write exists: preserve what it sees by
                // writing new versions. Otherwise overwrite the newest version in place.
                let last = r.head().tag;
                if snaps.first().is_some_and(|&s| s > last) {
                    cmd.snapc.seq
                } else {
                    last
                }
            }
        };
        let mut st = Cmd {
            ctx,
            mtime: cmd.mtime,
            stored: record.is_some(),
            before: record.as_ref().map(|r| r.head()).filter(|h| h.exists).map(|h| h.size),
            record,
            w,
            dirty: false,
            undoable: false,
            unrecorded_writes: 0,
            crc_cursor: 0,
            saved_next_id: self.next_id,
            snaps,
            preserved_for: Vec::new(),
            rowless: false,
        };
        assert!(st.record.as_ref().is_none_or(|r| r.head().tag <= w));
        self.undo.clear();
        let mut outputs = Vec::with_capacity(cmd.ops.len());
        let mut output_bytes = 0u64;
        for (i, op) in cmd.ops.iter().enumerate() {
            if let Some((s, code)) = static_failure {
                if s == i {
                    self.rollback(&mut st)?;
                    return Ok(fail(i, code));
                }
            }
            st.undoable = last_fallible.is_some_and(|last| i < last);
            self.placed_now = self.placed.iter().position(|p| p.0 == i);
            // Only read ops have output, and they are fallible: earlier writes are undoable.
            let result = self
                .exec(&mut st, op)
                .and_then(|out| add_output(&mut output_bytes, &out).map(|()| out));
            self.placed_now = None;
            match result {
                Ok(out) => outputs.push(out),
                Err(Failure::Op(code)) => {
                    self.rollback(&mut st)?;
                    return Ok(fail(i, code));
                }
                Err(Failure::Store(e)) => return Err(e),
            }
        }
        self.finish_command(&mut st)?;
        Ok(OpReply::Ok(outputs))
    }

    /// [`Batch::precheck`] of a placed write (`self.placed[k]`): a `Write` at a chunk
    /// boundary or a `WriteFull` of the placement's length; its whole-chunk crcs are the
    /// placement's (the payload is not read), and combined they must be the client's crc
    /// of the payload (the end-to-end check; the OSD leaves large payloads to it).
    fn precheck_placed(&mut self, op: &ObjectOp, k: usize) -> Result<(), ErrorCode> {
        let (off, len, client_crc) = match op {
            ObjectOp::Write { off, data } => (*off, data.len() as u64, data.crc),
            ObjectOp::WriteFull { data } => (0, data.len() as u64, data.crc),
            _ => return Err(ErrorCode::EINVAL),
        };
        let crcs = &self.placed[k].2;
        if off % CHUNK != 0 || len != crcs.len() as u64 * CHUNK {
            return Err(ErrorCode::EINVAL);
        }
        if crcs.iter().fold(0, |total, &crc| combine_chunk(total, crc)) != client_crc {
            return Err(ErrorCode::EINVAL);
        }
        if off.checked_add(len).is_none_or(|e| e > OBJECT_SIZE_MAX) {
            return Err(ErrorCode::EFBIG);
        }
        self.crcs.extend_from_slice(crcs);
        Ok(())
    }

    /// Checks what can be checked without the object: limits and payload crcs.
    fn precheck(&mut self, op: &ObjectOp) -> Result<(), ErrorCode> {
        let in_limit =
            |off: u64, len: u64| off.checked_add(len).is_some_and(|e| e <= OBJECT_SIZE_MAX);
        match op {
            ObjectOp::Write { off, data } => {
                if !in_limit(*off, data.len() as u64) {
                    return Err(ErrorCode::EFBIG);
                }
                if payload_crcs(*off, &data.data, &mut self.crcs) != data.crc {
                    return Err(ErrorCode::EINVAL);
                }
            }
            ObjectOp::WriteFull { data } => {
                if !in_limit(0, data.len() as u64) {
                    return Err(ErrorCode::EFBIG);
                }
                if payload_crcs(0, &data.data, &mut self.crcs) != data.crc {
                    return Err(ErrorCode::EINVAL);
                }
            }
            ObjectOp::Zero { off, len } if !in_limit(*off, *len) => return Err(ErrorCode::EFBIG),
            ObjectOp::Truncate { size } if *size > OBJECT_SIZE_MAX => return Err(ErrorCode::EFBIG),
            _ => {}
        }
        Ok(())
    }

    /// Undoes the writes of a failed command.
    fn rollback(&mut self, st: &mut Cmd) -> Result<(), StoreError> {
        assert_eq!(st.unrecorded_writes, 0, "command failed after a write that cannot be undone");
        while let Some(u) = self.undo.pop() {
            match u.table {
                UndoTable::Chunks => {
                    let key: ExtentKey =
                        u.key.as_slice().try_into().expect("undo extent key length");
                    let table = &mut self.t.chunks;
                    // The row being undone loses its blocks (pending like any freed block:
                    // it was never committed, but waiting costs nothing); the restored row
                    // keeps its own (a cut row's blocks were freed once each: by the cut, or
                    // by undoing the pieces it left).
                    let replaced = match &u.old {
                        Some(old) => table.insert(&key, old.as_slice())?,
                        None => table.remove(&key)?,
                    };
                    if let Some(row) = replaced.and_then(|g| Extent::decode(&key, g.value()).ok()) {
                        row.blocks().for_each(|b| self.t.data.free(b));
                    }
                    if let Some(row) =
                        u.old.as_deref().and_then(|old| Extent::decode(&key, old).ok())
                    {
                        row.blocks().for_each(|b| self.t.data.unfree(b));
                    }
                }
                UndoTable::Xattrs | UndoTable::Omap => {
                    let kv = self.t.kv()?;
                    let table = match u.table {
                        UndoTable::Xattrs => &mut kv.xattrs,
                        _ => &mut kv.omap,
                    };
                    match &u.old {
                        Some(old) => drop(table.insert(u.key.as_slice(), old.as_slice())?),
                        None => drop(table.remove(u.key.as_slice())?),
                    }
                }
                UndoTable::OmapHeader => {
                    let key: [u8; 8] = u.key.as_slice().try_into().expect("undo header key length");
                    let header = &mut self.t.kv()?.omap_header;
                    match &u.old {
                        Some(old) => drop(header.insert(&key, old.as_slice())?),
                        None => drop(header.remove(&key)?),
                    }
                }
            }
        }
        self.next_id = st.saved_next_id;
        st.record = None;
        st.rowless = false;
        Ok(())
    }

    /// Writes back the record (or removes an object nothing can see any more) and accounts
    /// usage.
    fn finish_command(&mut self, st: &mut Cmd) -> Result<(), StoreError> {
        assert_eq!(st.crc_cursor, self.crcs.len(), "write pieces and pre-checked crcs disagree");
        if !st.dirty {
            return Ok(());
        }
        let Some(record) = st.record.as_mut() else {
            return Ok(());
        };
        let head = record.head();
        let after = head.exists.then_some(head.size);
        if !head.exists && record.versions.len() == 1 {
            let id = record.id;
            self.purge_object(id)?;
            self.drop_index_rows(id, st.ctx.name)?;
            if st.stored {
                self.objects.remove(self.obj_key.as_slice())?;
            }
        } else {
            if let Err(why) = record.check() {
                panic!("object record invariant broken by apply: {why}: {record:?}");
            }
            record.encode(&mut self.record_buf);
            self.objects.insert(self.obj_key.as_slice(), self.record_buf.as_slice())?;
            let id = record.id;
            for &snap in &st.preserved_for {
                self.object_snaps.get(self.txn)?.insert(&object_snap_key(id, snap), ())?;
                snap_object_key(self.pg, snap, st.ctx.name.as_bytes(), &mut self.key_buf);
                self.snap_objects.get(self.txn)?.insert(self.key_buf.as_slice(), ())?;
            }
        }
        self.delta_objects += i64::from(after.is_some()) - i64::from(st.before.is_some());
        self.delta_bytes += after.unwrap_or(0) as i64 - st.before.unwrap_or(0) as i64;
        Ok(())
    }

    /// Deletes every chunk, xattr, omap entry and the omap header of object `id`.
    pub(crate) fn purge_object(&mut self, id: u64) -> Result<(), StoreError> {
        purge_object_rows(&mut self.t, id)
    }

    /// The snapshots the index says still need versions of object `id`, ascending.
    fn indexed_snaps(&mut self, id: u64) -> Result<Vec<SnapId>, StoreError> {
        let lo = object_snap_key(id, 0);
        let hi = object_snap_key(id, u64::MAX);
        let mut out = Vec::new();
        for item in self.object_snaps.get(self.txn)?.range::<&[u8; 16]>(&lo..=&hi)? {
            out.push(object_snap_of(item?.0.value()));
        }
        Ok(out)
    }

    /// Deletes the index rows of an object that is gone.
    fn drop_index_rows(&mut self, id: u64, name: &str) -> Result<(), StoreError> {
        for snap in self.indexed_snaps(id)? {
            self.object_snaps.get(self.txn)?.remove(&object_snap_key(id, snap))?;
            snap_object_key(self.pg, snap, name.as_bytes(), &mut self.key_buf);
            self.snap_objects.get(self.txn)?.remove(self.key_buf.as_slice())?;
        }
        Ok(())
    }

    /// One step of trimming removed snapshot `snap` from the current PG: visits at most
    /// `max_objects` objects the index lists for `snap`, drops each one's row for it and the
    /// versions no snapshot still indexed for the object (nor the head) sees. When no row for
    /// `snap` remains, records it as purged. Returns `(objects visited, purged)`.
    pub fn trim_snap(&mut self, snap: SnapId, max_objects: u32) -> Result<(u64, bool), StoreError> {
        let pg = self.pg;
        let mut start = Vec::new();
        snap_object_key(pg, snap, b"", &mut start);
        let end = snap_objects_end(pg, snap);
        let mut names: Vec<Vec<u8>> = Vec::new();
        {
            let snap_objects = self.snap_objects.get(self.txn)?;
            let range = match &end {
                Some(end) => snap_objects.range::<&[u8]>(start.as_slice()..end.as_slice())?,
                None => snap_objects.range::<&[u8]>(start.as_slice()..)?,
            };
            for item in range.take(max_objects.max(1) as usize) {
                names.push(item?.0.value()[20..].to_vec());
            }
        }
        for name_bytes in &names {
            snap_object_key(pg, snap, name_bytes, &mut self.key_buf);
            self.snap_objects.get(self.txn)?.remove(self.key_buf.as_slice())?;
            let name = String::from_utf8_lossy(name_bytes).into_owned();
            let ctx = Ctx { pg, name: &name };
            object_key(pg, name_bytes, &mut self.obj_key);
            let record = match self.objects.get(self.obj_key.as_slice())? {
                Some(raw) => ObjectRecord::decode(raw.value())
                    .map_err(|why| ctx.corrupt(format!("object record: {why}")))?,
                None => continue,
            };
            self.object_snaps.get(self.txn)?.remove(&object_snap_key(record.id, snap))?;
            let live = self.indexed_snaps(record.id)?;
            let head = record.head();
            let mut st = Cmd {
                ctx,
                mtime: head.mtime,
                stored: true,
                before: head.exists.then_some(head.size),
                w: head.tag,
                record: Some(record),
                dirty: false,
                undoable: false,
                unrecorded_writes: 0,
                crc_cursor: 0,
                saved_next_id: self.next_id,
                snaps: Vec::new(),
                preserved_for: Vec::new(),
                rowless: false,
            };
            self.crcs.clear();
            self.snap_trim(&mut st, &live)?;
            self.finish_command(&mut st)?;
        }
        let done = {
            let snap_objects = self.snap_objects.get(self.txn)?;
            let mut rest = match &end {
                Some(end) => snap_objects.range::<&[u8]>(start.as_slice()..end.as_slice())?,
                None => snap_objects.range::<&[u8]>(start.as_slice()..)?,
            };
            rest.next().is_none()
        };
        if done {
            self.purged.get(self.txn)?.insert(&purged_key(pg, snap), ())?;
        }
        Ok((names.len() as u64, done))
    }

    /// Executes one op of the command.
    fn exec(&mut self, st: &mut Cmd, op: &ObjectOp) -> Result<OpOutput, Failure> {
        match op {
            ObjectOp::Write { off, data } => {
                self.ensure_head(st, true)?;
                self.write_range(st, *off, &data.data)?;
                let head = st.head_mut();
                head.size = head.size.max(off + data.len() as u64);
            }
            ObjectOp::WriteFull { data } => {
                self.ensure_head(st, true)?;
                self.reset_head(st, chunks_for(data.len() as u64))?;
                st.head_mut().size = 0;
                self.write_range(st, 0, &data.data)?;
                st.head_mut().size = data.len() as u64;
            }
            ObjectOp::Zero { off, len } => {
                if st.exists() {
                    self.ensure_head(st, false)?;
                    self.zero_range(st, *off, *len)?;
                }
            }
            ObjectOp::Truncate { size } => {
                self.ensure_head(st, true)?;
                self.truncate_head(st, *size)?;
            }
            ObjectOp::Create { exclusive } => {
                if *exclusive && st.exists() {
                    return Err(Failure::Op(ErrorCode::EEXIST));
                }
                self.ensure_head(st, true)?;
            }
            ObjectOp::Remove => {
                if !st.exists() {
                    return Err(Failure::Op(ErrorCode::ENOENT));
                }
                self.remove_head(st)?;
            }
            ObjectOp::Rollback { snap } => self.rollback_to(st, *snap)?,
            ObjectOp::SetXattr { name, value } => {
                self.ensure_head(st, true)?;
                let id = st.record().id;
                self.put_kv(st, Kv::Xattrs, id, name.as_bytes(), Some(value))?;
            }
            ObjectOp::RmXattr { name } => {
                if !st.exists() {
                    return Err(Failure::Op(ErrorCode::ENOENT));
                }
                let id = st.record().id;
                sub_key(id, name.as_bytes(), &mut self.key_buf);
                if self.t.kv()?.xattrs.get(self.key_buf.as_slice())?.is_none() {
                    return Err(Failure::Op(ErrorCode::ENODATA));
                }
                self.ensure_head(st, false)?;
                self.put_kv(st, Kv::Xattrs, id, name.as_bytes(), None)?;
            }
            ObjectOp::OmapSetVals { vals } => {
                self.ensure_head(st, true)?;
                let id = st.record().id;
                for (key, value) in vals {
                    self.put_kv(st, Kv::Omap, id, key.as_bytes(), Some(value))?;
                }
            }
            ObjectOp::OmapRmKeys { keys } => {
                if !st.exists() {
                    return Err(Failure::Op(ErrorCode::ENOENT));
                }
                self.ensure_head(st, false)?;
                let id = st.record().id;
                for key in keys {
                    self.put_kv(st, Kv::Omap, id, key.as_bytes(), None)?;
                }
            }
            ObjectOp::OmapClear => {
                if !st.exists() {
                    return Err(Failure::Op(ErrorCode::ENOENT));
                }
                self.ensure_head(st, false)?;
                let id = st.record().id;
                self.clear_kv(st, Kv::Omap, id)?;
                self.set_header(st, id, None)?;
            }
            ObjectOp::OmapSetHeader { header } => {
                self.ensure_head(st, true)?;
                let id = st.record().id;
                self.set_header(st, id, Some(header))?;
            }
            ObjectOp::Call { class, method, input, origin } => {
                let methods = self.methods;
                let call = methods::Call { class, method, input, origin: origin.as_ref() };
                let mtime = st.mtime;
                // The method may fail after writing: everything it writes is undoable.
                let undoable = std::mem::replace(&mut st.undoable, true);
                let result =
                    methods::invoke(methods, &call, mtime, &mut |op| self.exec_nested(st, op));
                st.undoable = undoable;
                return result;
            }
            // Retired: trimming is the PG's own job (`Store::apply_trim`); a client can no
            // longer ask for it. Kept in the enum only so old log entries decode.
            ObjectOp::SnapTrimRetired { .. } => return Err(Failure::Op(ErrorCode::EOPNOTSUPP)),
            _ => {
                if !matches!(op, ObjectOp::Read { .. } | ObjectOp::Stat | ObjectOp::AssertExists) {
                    self.t.kv()?;
                }
                let target = st.record.as_ref().map(|r| Target {
                    id: r.id,
                    version: r.head(),
                    at_head: true,
                });
                return read_op(&self.t, &st.ctx, target, op, &mut self.key_buf);
            }
        }
        Ok(OpOutput::None)
    }

    /// Runs one op a method issued: checked like a command's op (limits, payload crc), with
    /// its own whole-chunk crcs (the command's are consumed in op order).
    fn exec_nested(&mut self, st: &mut Cmd, op: &ObjectOp) -> Result<OpOutput, Failure> {
        if op.is_call() {
            return Err(Failure::Op(ErrorCode::EINVAL));
        }
        let crcs = std::mem::take(&mut self.crcs);
        let cursor = std::mem::replace(&mut st.crc_cursor, 0);
        let result = match self.precheck(op) {
            Err(code) => Err(Failure::Op(code)),
            Ok(()) => self.exec(st, op),
        };
        if result.is_ok() {
            assert_eq!(st.crc_cursor, self.crcs.len(), "method write pieces and crcs disagree");
        }
        self.crcs = crcs;
        st.crc_cursor = cursor;
        result
    }

    /// Removes the (existing) head: a non-existent head version, xattrs and omap gone.
    fn remove_head(&mut self, st: &mut Cmd) -> Result<(), StoreError> {
        self.ensure_head(st, false)?;
        self.reset_head(st, 0)?;
        let id = st.record().id;
        self.clear_kv(st, Kv::Xattrs, id)?;
        self.clear_kv(st, Kv::Omap, id)?;
        self.set_header(st, id, None)?;
        let head = st.head_mut();
        head.exists = false;
        head.size = 0;
        Ok(())
    }

    /// Rollback: the head's data becomes what snapshot `snap` sees (written like any write,
    /// so the current head is preserved for newer snapshots of the command's context). The
    /// snapshot does not see the object: the head is removed (ENOENT if there is none
    /// either). xattrs and omap are head-only and stay as they are.
    fn rollback_to(&mut self, st: &mut Cmd, snap: SnapId) -> Result<(), Failure> {
        if snap >= SNAP_HEAD {
            return Err(Failure::Op(ErrorCode::EINVAL));
        }
        let Some(record) = st.record.as_ref() else {
            return Err(Failure::Op(ErrorCode::ENOENT));
        };
        let position = record.versions.iter().rposition(|v| v.tag < snap);
        let is_head = position == Some(record.versions.len() - 1);
        let target = position.map(|i| record.versions[i].clone()).filter(|v| v.exists);
        let Some(target) = target else {
            if !st.exists() {
                return Err(Failure::Op(ErrorCode::ENOENT));
            }
            self.remove_head(st)?;
            return Ok(());
        };
        if is_head {
            // The snapshot sees the head: nothing to copy, but the command still writes (the
            // head is preserved for the snapshots of its context, as Ceph's rollback does).
            self.ensure_head(st, true)?;
            return Ok(());
        }
        let id = record.id;
        self.ensure_head(st, true)?;
        self.reset_head(st, 0)?;
        let mut buf = std::mem::take(&mut self.chunk_buf);
        for index in 0..chunks_for(target.size) {
            let found =
                load_chunk(&self.t, &st.ctx, id, index, target.floor, target.tag, &mut buf)?;
            if found.is_some() && !buf.is_empty() {
                self.put_chunk(st, id, index, crc32c::crc32c(&buf), &buf)?;
            }
        }
        self.chunk_buf = buf;
        st.head_mut().size = target.size;
        Ok(())
    }

    /// Makes the head the version at the command's write tag (adding a version when a
    /// snapshot must keep the previous one) and, for creating ops, makes it exist.
    fn ensure_head(&mut self, st: &mut Cmd, creates: bool) -> Result<(), StoreError> {
        let w = st.w;
        match &mut st.record {
            None => {
                assert!(creates, "non-creating op on a missing object");
                let id = self.allocate_id()?;
                let head = Version { tag: w, floor: w, exists: true, size: 0, mtime: st.mtime };
                st.record = Some(ObjectRecord { id, versions: vec![head] });
                st.rowless = true;
            }
            Some(record) => {
                if record.head().tag < w {
                    let old = record.head().tag;
                    st.preserved_for = st.snaps.iter().copied().filter(|&s| s > old).collect();
                    let mut next = record.head().clone();
                    next.tag = w;
                    record.versions.push(next);
                }
                let head = record.head_mut();
                if creates && !head.exists {
                    head.exists = true;
                    head.size = 0;
                    head.floor = w;
                }
                head.mtime = st.mtime;
            }
        }
        st.dirty = true;
        Ok(())
    }

    fn note_write(&mut self, st: &mut Cmd, table: UndoTable, key: &[u8], old: Option<Vec<u8>>) {
        if st.undoable {
            self.undo.push(Undo { table, key: key.to_vec(), old });
        } else {
            st.unrecorded_writes += 1;
        }
    }

    /// Stores chunk `index` at the head's tag: its data in a new block of the data file and
    /// a one-chunk row pointing there (empty data: a hole row).
    fn put_chunk(
        &mut self,
        st: &mut Cmd,
        id: u64,
        index: u64,
        crc: u32,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let body = if data.is_empty() {
            ExtentBody::Hole
        } else {
            let block = self.t.data.allocate(1);
            self.t.data.write(block, data)?;
            ExtentBody::Data { block, last_len: data.len() as u32, crcs: vec![crc] }
        };
        self.put_extent(st, id, Extent { tag: st.w, first: index, count: 1, body })?;
        if self.only_head_below(st) {
            self.drop_older_rows(st, id, index, index)?;
        }
        Ok(())
    }

    /// Stores `bytes` (whole chunks `first..`, their crcs next in the pre-checked list) at
    /// the head's tag: one extent of the data file, written with one positional write, and
    /// one row per [`EXTENT_CHUNKS_MAX`] chunks of it.
    fn put_run(
        &mut self,
        st: &mut Cmd,
        id: u64,
        first: u64,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let n = (bytes.len() / CHUNK_SIZE) as u64;
        let block = match self.placed_now.take() {
            // A placed write: its blocks hold the data already (claimed by the command).
            Some(k) => {
                let placed = &mut self.placed[k];
                assert_eq!(placed.2.len() as u64, n, "a placed write is one run of its length");
                placed.3 = true;
                placed.1
            }
            None => {
                let block = self.t.data.allocate(n);
                self.t.data.write(block, bytes)?;
                block
            }
        };
        let mut k = 0;
        while k < n {
            let count = (n - k).min(EXTENT_CHUNKS_MAX);
            let crcs = self.crcs[st.crc_cursor..st.crc_cursor + count as usize].to_vec();
            st.crc_cursor += count as usize;
            let body = ExtentBody::Data { block: block + k, last_len: CHUNK_SIZE as u32, crcs };
            self.put_extent(st, id, Extent { tag: st.w, first: first + k, count, body })?;
            k += count;
        }
        if self.only_head_below(st) {
            self.drop_older_rows(st, id, first, first + n - 1)?;
        }
        Ok(())
    }

    /// Inserts a row (at the head's tag), after cutting what rows of that tag it overlaps
    /// (the blocks of the chunks it replaces are freed).
    fn put_extent(&mut self, st: &mut Cmd, id: u64, row: Extent) -> Result<(), StoreError> {
        self.cut(st, id, row.tag, row.first, row.end() - 1)?;
        st.rowless = false;
        let mut value = Vec::new();
        row.encode(&mut value);
        let key = row.key(id);
        let replaced = self.t.chunks.insert(&key, value.as_slice())?.is_some();
        assert!(!replaced, "a row was left under a cut");
        self.note_write(st, UndoTable::Chunks, &key, None);
        Ok(())
    }

    /// Removes chunks `a..=b` of version `tag` of object `id`: rows inside the range go, a
    /// row across one of its ends keeps its part outside (rewritten as a row of its own), and
    /// the blocks of the chunks removed are freed.
    fn cut(&mut self, st: &mut Cmd, id: u64, tag: u64, a: u64, b: u64) -> Result<(), StoreError> {
        if st.rowless {
            // What the skip rests on, checked where tests run (debug builds): any code that
            // ever writes rows under an id not taken from the counter fails here.
            #[cfg(debug_assertions)]
            {
                let found = extent::overlapping(&self.t.chunks, &st.ctx, id, tag, a, b)?;
                assert!(found.is_empty(), "object id {id}, new in this command, has extent rows");
            }
            return Ok(());
        }
        let rows = extent::overlapping(&self.t.chunks, &st.ctx, id, tag, a, b)?;
        let mut value = Vec::new();
        for row in rows {
            let key = row.key(id);
            let lo = row.first.max(a);
            let hi = if b >= row.end() { row.end() } else { b + 1 };
            if let ExtentBody::Data { block, .. } = &row.body {
                (lo..hi).for_each(|k| self.t.data.free(block + (k - row.first)));
            }
            // The part before the range keeps the row's key: it replaces the row in place.
            // The old row is copied only for an undo (up to 4 KiB of crcs per overwrite).
            let undoable = st.undoable;
            let old = if row.first < lo {
                row.piece(row.first, lo).encode(&mut value);
                self.t.chunks.insert(&key, value.as_slice())?
            } else {
                self.t.chunks.remove(&key)?
            }
            .and_then(|g| undoable.then(|| g.value().to_vec()));
            self.note_write(st, UndoTable::Chunks, &key, old);
            if hi < row.end() {
                let piece = row.piece(hi, row.end());
                piece.encode(&mut value);
                let piece_key = piece.key(id);
                self.t.chunks.insert(&piece_key, value.as_slice())?;
                self.note_write(st, UndoTable::Chunks, &piece_key, None);
            }
        }
        Ok(())
    }

    /// True if the object has no version but the head and the head may see chunk rows of
    /// older tags (its floor is below its tag): rows the head shadows or hides are then
    /// garbage no snapshot needs, and are dropped as the head is written (trimming visits
    /// only objects the snapshot index lists, so nothing else would ever drop them).
    fn only_head_below(&self, st: &Cmd) -> bool {
        let record = st.record();
        record.versions.len() == 1 && record.head().floor < st.w
    }

    /// Deletes chunks `from..=to` of object `id` from every version below the head's tag.
    fn drop_older_rows(
        &mut self,
        st: &mut Cmd,
        id: u64,
        from: u64,
        to: u64,
    ) -> Result<(), StoreError> {
        let Some(mut cursor) = st.w.checked_sub(1) else {
            return Ok(());
        };
        while let Some(tag) = extent::tag_at_or_below(&self.t.chunks, id, 0, cursor)? {
            self.cut(st, id, tag, from, to)?;
            match tag.checked_sub(1) {
                Some(next) => cursor = next,
                None => break,
            }
        }
        Ok(())
    }

    /// Writes `data` at `off` into the head (the run of whole chunks as one extent, partial
    /// chunks merged with what the head sees).
    fn write_range(&mut self, st: &mut Cmd, off: u64, data: &[u8]) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        let (id, floor, old_size) = st.head_layout();
        let end = off + data.len() as u64;
        let mut buf = std::mem::take(&mut self.chunk_buf);
        let last = (end - 1) / CHUNK;
        let mut index = off / CHUNK;
        while index <= last {
            let chunk_start = index * CHUNK;
            let a = off.max(chunk_start);
            let b = end.min(chunk_start + CHUNK);
            let piece = &data[(a - off) as usize..(b - off) as usize];
            let in_chunk = (a - chunk_start) as usize;
            let old_visible = old_size.saturating_sub(chunk_start).min(CHUNK) as usize;
            if in_chunk == 0 && piece.len() == CHUNK_SIZE {
                // Whole chunks from here on: one extent (they end where the data's last
                // whole chunk does).
                let n = (end - chunk_start) / CHUNK;
                let run =
                    &data[(chunk_start - off) as usize..(chunk_start + n * CHUNK - off) as usize];
                self.put_run(st, id, index, run)?;
                index += n;
                continue;
            } else if in_chunk == 0 && piece.len() >= old_visible {
                self.put_chunk(st, id, index, crc32c::crc32c(piece), piece)?;
            } else {
                load_chunk(&self.t, &st.ctx, id, index, floor, st.w, &mut buf)?;
                buf.truncate(old_visible);
                if buf.len() < in_chunk + piece.len() {
                    buf.resize(in_chunk + piece.len(), 0);
                }
                buf[in_chunk..in_chunk + piece.len()].copy_from_slice(piece);
                self.put_chunk(st, id, index, crc32c::crc32c(&buf), &buf)?;
            }
            index += 1;
        }
        self.chunk_buf = buf;
        Ok(())
    }

    /// Drops the head's chunk versions at its tag from chunk `from` on, and hides every older
    /// chunk version from the head (floor = tag): the head's content is being replaced.
    fn reset_head(&mut self, st: &mut Cmd, from: u64) -> Result<(), StoreError> {
        let (id, _, _) = st.head_layout();
        let w = st.w;
        self.cut(st, id, w, from, u64::MAX)?;
        if self.only_head_below(st) {
            self.drop_older_rows(st, id, 0, u64::MAX)?;
        }
        st.head_mut().floor = w;
        Ok(())
    }

    /// Makes chunks `from..to` of the head read as zeros (`to` = `u64::MAX`: to the end): a
    /// hole version where an older version would otherwise show through, else nothing.
    fn punch(&mut self, st: &mut Cmd, from: u64, to: u64) -> Result<(), StoreError> {
        let (id, floor, _) = st.head_layout();
        let w = st.w;
        let last = if to == u64::MAX { u64::MAX } else { to - 1 };
        if self.only_head_below(st) {
            // Nothing older needs these rows: drop them instead of writing holes.
            self.drop_older_rows(st, id, from, last)?;
            return self.cut(st, id, w, from, last);
        }
        // Per chunk: newest visible tag, whether it is a hole, whether an older visible
        // version exists below it (rows come newest tag first).
        let rows = extent::rows_in(&self.t.chunks, &st.ctx, id, (floor, w), from, last)?;
        let mut plan: std::collections::BTreeMap<u64, (u64, bool, bool)> = Default::default();
        for row in &rows {
            let hole = row.body == ExtentBody::Hole;
            let end = if last >= row.end() { row.end() } else { last + 1 };
            for index in row.first.max(from)..end {
                plan.entry(index).and_modify(|p| p.2 = true).or_insert((row.tag, hole, false));
            }
        }
        let (mut drop, mut holes) = (Vec::new(), Vec::new());
        for (index, (tag, hole, has_older)) in plan {
            // A hole at the head's tag hiding nothing is dropped too.
            if hole && (tag != w || has_older) {
                continue;
            }
            if tag == w && !has_older {
                drop.push(index);
            } else {
                holes.push(index);
            }
        }
        for (a, b) in runs(&drop) {
            self.cut(st, id, w, a, b - 1)?;
        }
        for (a, b) in runs(&holes) {
            let row = Extent { tag: w, first: a, count: b - a, body: ExtentBody::Hole };
            self.put_extent(st, id, row)?;
        }
        Ok(())
    }

    /// Zeroes bytes `[a, b)` of chunk `index` (object offsets) by read-modify-write.
    fn zero_in_chunk(
        &mut self,
        st: &mut Cmd,
        index: u64,
        a: u64,
        b: u64,
    ) -> Result<(), StoreError> {
        let (id, floor, _) = st.head_layout();
        let mut buf = std::mem::take(&mut self.chunk_buf);
        let found = load_chunk(&self.t, &st.ctx, id, index, floor, st.w, &mut buf)?;
        let chunk_start = index * CHUNK;
        let (za, zb) = ((a - chunk_start) as usize, (b - chunk_start) as usize);
        if found.is_some() && za < buf.len() {
            let zb = zb.min(buf.len());
            buf[za..zb].fill(0);
            trim_zeros(&mut buf);
            self.put_chunk(st, id, index, crc32c::crc32c(&buf), &buf)?;
        }
        self.chunk_buf = buf;
        Ok(())
    }

    /// Zero op on an existing head: zeroes `[off, off+len)` clipped to the size.
    fn zero_range(&mut self, st: &mut Cmd, off: u64, len: u64) -> Result<(), StoreError> {
        let (_, _, size) = st.head_layout();
        let end = (off + len).min(size);
        if off >= end {
            return Ok(());
        }
        if off == 0 && end == size {
            return self.reset_head(st, 0);
        }
        let first = off / CHUNK;
        let last = (end - 1) / CHUNK;
        let covered = |index: u64| {
            let start = index * CHUNK;
            off <= start && end >= (start + CHUNK).min(size)
        };
        if !covered(first) {
            self.zero_in_chunk(st, first, off, end.min((first + 1) * CHUNK))?;
        }
        if last != first && !covered(last) {
            self.zero_in_chunk(st, last, last * CHUNK, end)?;
        }
        let full_from = if covered(first) { first } else { first + 1 };
        let full_to = if covered(last) { last + 1 } else { last };
        if full_from < full_to {
            self.punch(st, full_from, full_to)?;
        }
        Ok(())
    }

    /// Sets the head's size; shrinking drops the data past it.
    fn truncate_head(&mut self, st: &mut Cmd, size: u64) -> Result<(), StoreError> {
        let (id, floor, old) = st.head_layout();
        if size < old {
            if size == 0 {
                self.reset_head(st, 0)?;
            } else {
                let keep = (size % CHUNK) as usize;
                if keep != 0 {
                    let index = size / CHUNK;
                    let mut buf = std::mem::take(&mut self.chunk_buf);
                    load_chunk(&self.t, &st.ctx, id, index, floor, st.w, &mut buf)?;
                    if buf.len() > keep {
                        buf.truncate(keep);
                        trim_zeros(&mut buf);
                        self.put_chunk(st, id, index, crc32c::crc32c(&buf), &buf)?;
                    }
                    self.chunk_buf = buf;
                }
                self.punch(st, chunks_for(size), u64::MAX)?;
            }
        }
        st.head_mut().size = size;
        Ok(())
    }

    fn kv_table(
        &mut self,
        which: Kv,
    ) -> Result<&mut Table<'txn, &'static [u8], &'static [u8]>, StoreError> {
        let kv = self.t.kv()?;
        Ok(match which {
            Kv::Xattrs => &mut kv.xattrs,
            Kv::Omap => &mut kv.omap,
        })
    }

    /// Sets (Some) or removes (None) one xattr or omap entry.
    fn put_kv(
        &mut self,
        st: &mut Cmd,
        which: Kv,
        id: u64,
        name: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut key = std::mem::take(&mut self.key_buf);
        sub_key(id, name, &mut key);
        let old = match value {
            Some(v) => self.kv_table(which)?.insert(key.as_slice(), seal(v).as_slice())?,
            None => self.kv_table(which)?.remove(key.as_slice())?,
        }
        .map(|g| g.value().to_vec());
        if value.is_some() || old.is_some() {
            let table = match which {
                Kv::Xattrs => UndoTable::Xattrs,
                Kv::Omap => UndoTable::Omap,
            };
            let old = if st.undoable { old } else { None };
            self.note_write(st, table, &key, old);
        }
        self.key_buf = key;
        Ok(())
    }

    /// Removes every xattr or omap entry of object `id`.
    fn clear_kv(&mut self, st: &mut Cmd, which: Kv, id: u64) -> Result<(), StoreError> {
        let lo = id.to_be_bytes();
        let hi = (id + 1).to_be_bytes();
        let mut doomed = Vec::new();
        for item in self.kv_table(which)?.range(lo.as_slice()..hi.as_slice())? {
            let (key, _) = item?;
            doomed.push(key.value().to_vec());
        }
        for key in doomed {
            self.put_kv(st, which, id, &key[8..], None)?;
        }
        Ok(())
    }

    /// Sets (Some) or removes (None) the omap header of object `id`.
    fn set_header(
        &mut self,
        st: &mut Cmd,
        id: u64,
        header: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let key = id.to_be_bytes();
        let table = &mut self.t.kv()?.omap_header;
        let old = match header {
            Some(h) => table.insert(&key, seal(h).as_slice())?,
            None => table.remove(&key)?,
        }
        .map(|g| g.value().to_vec());
        if header.is_some() || old.is_some() {
            let old = if st.undoable { old } else { None };
            self.note_write(st, UndoTable::OmapHeader, &key, old);
        }
        Ok(())
    }

    /// Drops the versions of the object that neither the head nor a snapshot in `live` sees,
    /// and the chunk versions only they used.
    fn snap_trim(&mut self, st: &mut Cmd, live: &[SnapId]) -> Result<(), StoreError> {
        let record = st.record.as_mut().expect("snap trim without a record");
        let count = record.versions.len();
        let mut keep = vec![false; count];
        keep[count - 1] = true;
        for &snap in live {
            if let Some(i) = record.versions.iter().rposition(|v| v.tag < snap) {
                keep[i] = true;
            }
        }
        let mut kept: Vec<Version> =
            record.versions.iter().zip(&keep).filter(|(_, &k)| k).map(|(v, _)| v.clone()).collect();
        // A snapshot that sees a non-existent oldest version sees the same with no version.
        while kept.len() > 1 && !kept[0].exists {
            kept.remove(0);
        }
        if kept != record.versions {
            record.versions = kept;
            st.dirty = true;
        }
        if !record.head().exists && record.versions.len() == 1 {
            // Nothing visible remains; finish_command purges the object.
            st.dirty = true;
            return Ok(());
        }
        let id = record.id;
        let versions = record.versions.clone();
        let mut all: Vec<(u64, u64, bool)> = Vec::new();
        for row in extent::all_rows(&self.t.chunks, &st.ctx, id)? {
            let hole = row.body == ExtentBody::Hole;
            all.extend((row.first..row.end()).map(|index| (index, row.tag, hole)));
        }
        all.sort_unstable();
        let mut doomed: Vec<(u64, u64)> = Vec::new();
        for group in all.chunk_by(|a, b| a.0 == b.0) {
            let index = group[0].0;
            let mut needed = vec![false; group.len()];
            for (vi, v) in versions.iter().enumerate() {
                let is_head = vi == versions.len() - 1;
                if !v.exists || (!is_head && index >= chunks_for(v.size)) {
                    continue;
                }
                if let Some(j) = group.iter().rposition(|c| c.1 >= v.floor && c.1 <= v.tag) {
                    needed[j] = true;
                }
            }
            // The oldest remaining versions, when holes, hide nothing: drop them.
            for (j, c) in group.iter().enumerate() {
                if needed[j] {
                    if c.2 {
                        needed[j] = false;
                    } else {
                        break;
                    }
                }
            }
            for (j, c) in group.iter().enumerate() {
                if !needed[j] {
                    doomed.push((c.1, index));
                }
            }
        }
        doomed.sort_unstable();
        for group in doomed.chunk_by(|a, b| a.0 == b.0) {
            let tag = group[0].0;
            let indices: Vec<u64> = group.iter().map(|d| d.1).collect();
            for (a, b) in runs(&indices) {
                self.cut(st, id, tag, a, b - 1)?;
            }
        }
        Ok(())
    }
}

/// Runs of consecutive values in a sorted list, as `[a, b)` ranges.
fn runs(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &x in sorted {
        match out.last_mut() {
            Some(run) if run.1 == x => run.1 = x + 1,
            _ => out.push((x, x + 1)),
        }
    }
    out
}

/// Deletes every chunk row (freeing its blocks), xattr, omap entry and the omap header of
/// object `id`.
pub(crate) fn purge_object_rows(t: &mut WriteTables, id: u64) -> Result<(), StoreError> {
    let lo = extent_key(id, 0, 0);
    let hi = extent_key(id, u64::MAX, u64::MAX);
    let data = t.data;
    t.chunks.retain_in::<&ExtentKey, _>(&lo..=&hi, |key, value| {
        if let Ok(row) = Extent::decode(key, value) {
            row.blocks().for_each(|b| data.free(b));
        }
        false
    })?;
    let lo = id.to_be_bytes();
    let hi = (id + 1).to_be_bytes();
    let kv = t.kv()?;
    kv.xattrs.retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)?;
    kv.omap.retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)?;
    kv.omap_header.remove(&lo)?;
    Ok(())
}

/// The stored next-object-id counter (1 on a fresh store).
pub(crate) fn read_next_id<T: ReadableTable<&'static str, &'static [u8]>>(
    meta: &T,
    pg: PgId,
) -> Result<u64, StoreError> {
    match meta.get(META_NEXT_ID)? {
        Some(v) => {
            let raw: [u8; 8] = v.value().try_into().map_err(|_| StoreError::Corrupt {
                pg,
                object: String::new(),
                detail: "next object id counter is not 8 bytes".into(),
            })?;
            Ok(u64::from_le_bytes(raw))
        }
        None => Ok(1),
    }
}
