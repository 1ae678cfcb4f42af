//! The duplicate table (Ceph's PG log "dups"): per PG, the request ids of the most recent
//! mutating commands with the reply each got. A command whose request id is already there is
//! not applied again: it gets the recorded reply. Every replica applies the same log, so every
//! replica answers a resend the same way, including a resend proposed while the first copy
//! was still in flight (the first copy's apply records it before the second is applied).
//! Bounded per PG: the oldest entries go first, in steps (below).
//!
//! # In memory, written as one packed row per PG and commit (format 6)
//! Each entry has a sequence number, consecutive per PG: an apply records the next one. The
//! store keeps, per PG it has used since it opened, the hash of each entry's request id and
//! the entries recorded since the last commit of the store's write transaction ([`PgDups`]).
//! A lookup is a hash lookup (a hit is confirmed against the entry itself, in memory or in its
//! row), a record a hash insert and an append to the PG's pending buffer. When the store
//! commits its open transaction (`writer.rs`), each PG's pending entries become ONE row of the
//! `dup_log` table, in that transaction: `pool BE ++ seed BE ++ first seq BE -> sealed
//! (version u8 (=1) ++ floor u64 LE ++ count u32 LE ++ count entries, each reqid part length
//! u16 LE ++ reqid part ++ value length u32 LE ++ value)`, the value as [`encode_value`] makes
//! it (`version u8 (=1) ++ seq u64 LE ++ bincode(OpReply)`), the reqid part as
//! [`reqid_part`]. Until format 5 each entry was a row of its own (`dups`, keyed `pg ++
//! reqid`): one B-tree insert per write, ~10 µs of server CPU per 4 KiB write and ~18% of the
//! rate at queue depth 32 (docs/benchmarks.md, "Fourteenth round"); a row per PG and commit
//! carries the entries of up to 64 applies.
//!
//! Why the entries may wait for the commit: a row is written only by the commit of the
//! transaction that recorded its entries (or by a writer that commits its own, with nothing
//! pending), and memory answers for everything after the last commit. A crash loses the open transaction with everything else it carried
//! (the store reopens at its last checkpoint and the Raft log replays: every entry after it is
//! recorded again, in the same order, with the same numbers); a dropped transaction (a failed
//! apply, `writer.rs`) forgets every PG's memory, which is found again from the committed
//! rows when next used (and the replayed applies record their entries again); every other
//! writer (split, merge, import, purge, exports' readers) takes the writer, which commits the
//! open transaction and so writes the pending rows first.
//!
//! Trimming: once a PG holds more than `max + max / 4` entries its floor rises so that it
//! holds the newest `max` (Ceph trims its dups in batches too). Entries below the floor are
//! gone at once (from the hash index: a resend of one is applied again, on every replica
//! alike, since the floor is a function of the log); a row is deleted, at a commit, once all
//! its entries are below the floor. Each row carries the floor of the commit that wrote it, so
//! the newest row holds the PG's floor (the floor only rises when an entry is recorded, which
//! writes a row in the same commit): an index rebuilt from the rows after a restart is the one
//! the replicas that did not restart hold.
//!
//! A row that does not decode (its crc, its layout, a reply, a gap between rows) makes the
//! PG's table *damaged*: it held request ids nobody can read, so no lookup of the PG can be
//! answered and every command of the PG with a request id fails with `Corrupt` (damage met
//! later, by a lookup reading a row, fails that lookup; a replicated PG is then
//! rebuilt from a healthy replica; with one voter the OSD drops the PG's table,
//! [`crate::Store::drop_damaged_dups`], and goes on: see `quarry-osd`'s state machine).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use quarry_types::{EntityReqId, OpOutput, OpReply, PgId};
use redb::{ReadableTable, Table, WriteTransaction};

use crate::format::{pg_key, seal, unseal, DUP_LOG};
use crate::StoreError;

/// Version byte in front of a dup value.
pub(crate) const DUP_VALUE_VERSION: u8 = 1;
/// Version byte in front of a `dup_log` row.
pub(crate) const DUP_ROW_VERSION: u8 = 1;
/// Default bound of the table per PG (Ceph's `osd_pg_log_dups_tracked`).
pub const DUPS_PER_PG_DEFAULT: usize = 3000;
/// A reply whose outputs encode to more than this is recorded without its outputs' content
/// (each output becomes `OpOutput::None`): Ceph keeps only small op return data in dups too.
/// A resend then gets the original outcome (success, or the failing op and its code) but not
/// the data a read op of the vector returned.
pub const DUP_REPLY_MAX: usize = 4096;
/// Entries per row when a whole table is written at once (split, merge, import, migration).
pub(crate) const ROW_ENTRIES_MAX: usize = 512;
/// The longest request id part (a row stores its length as a u16).
pub(crate) const PART_MAX: usize = u16::MAX as usize;
/// A PG's pending buffer keeps its capacity across commits up to this many bytes.
const PENDING_KEEP: usize = 64 << 10;
/// Bytes of a row's header: version, floor, count.
const ROW_HEADER: usize = 1 + 8 + 4;

/// The largest sequence number a row may hold (as the export stream's): a PG never gets
/// near it, so numbering never overflows.
pub(crate) const SEQ_MAX: u64 = 1 << 62;

/// Key of a `dup_log` row: pool BE ++ seed BE ++ first seq BE.
pub(crate) type RowKey = [u8; 20];

/// The reqid part of a dup entry: `entity len u16 BE ++ entity ("client.admin") ++ client
/// u64 BE ++ tid u64 BE`.
pub(crate) fn reqid_part(reqid: &EntityReqId, out: &mut Vec<u8>) {
    out.clear();
    let entity = reqid.entity.to_string();
    // Cut (a name of nearly 64 KiB or more) on a character boundary: a part is UTF-8 and
    // at most 64 KiB long (a row stores its length as a u16).
    let mut len = entity.len().min(PART_MAX - 18);
    while !entity.is_char_boundary(len) {
        len -= 1;
    }
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&entity.as_bytes()[..len]);
    out.extend_from_slice(&reqid.reqid.client.to_be_bytes());
    out.extend_from_slice(&reqid.reqid.tid.to_be_bytes());
}

/// The key of `pg`'s row whose first entry is `first`.
pub(crate) fn row_key(pg: PgId, first: u64) -> RowKey {
    let mut key = [0u8; 20];
    key[..12].copy_from_slice(&pg_key(pg));
    key[12..].copy_from_slice(&first.to_be_bytes());
    key
}

/// Appends the value of an entry (small outputs kept, large ones emptied: see
/// [`DUP_REPLY_MAX`]) to `out`.
pub(crate) fn encode_value_into(seq: u64, reply: &OpReply, out: &mut Vec<u8>) {
    out.push(DUP_VALUE_VERSION);
    out.extend_from_slice(&seq.to_le_bytes());
    let small = bincode::serialized_size(reply).is_ok_and(|n| n <= DUP_REPLY_MAX as u64);
    if small {
        bincode::serialize_into(&mut *out, reply).expect("an OpReply always encodes");
    } else {
        let small = match reply {
            OpReply::Ok(outputs) => OpReply::Ok(vec![OpOutput::None; outputs.len()]),
            failed => failed.clone(),
        };
        bincode::serialize_into(&mut *out, &small).expect("an OpReply always encodes");
    }
}

/// The value of an entry, as [`encode_value_into`] makes it.
pub(crate) fn encode_value(seq: u64, reply: &OpReply) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value_into(seq, reply, &mut out);
    out
}

/// The sequence number of a value (the reply not decoded), or why it is malformed.
fn value_seq(value: &[u8]) -> Result<u64, &'static str> {
    if value.len() < 9 {
        return Err("dup entry too short");
    }
    if value[0] != DUP_VALUE_VERSION {
        return Err("dup entry of an unknown version");
    }
    Ok(u64::from_le_bytes(value[1..9].try_into().expect("8 bytes")))
}

/// `(seq, reply)` of a value, or why it is malformed.
pub(crate) fn decode_value(value: &[u8]) -> Result<(u64, OpReply), &'static str> {
    let seq = value_seq(value)?;
    let reply = bincode::deserialize(&value[9..]).map_err(|_| "dup entry reply undecodable")?;
    Ok((seq, reply))
}

/// `(seq, reply)` of a value as format 5's `dups` table stored it (sealed), or why it is
/// damaged (the migration to format 6 reads them).
pub(crate) fn decode_stored(value: &[u8]) -> Result<(u64, OpReply), String> {
    decode_value(unseal(value)?).map_err(str::to_string)
}

pub(crate) fn corrupt(pg: PgId, detail: &str) -> StoreError {
    tracing::error!(%pg, detail, "corrupt duplicate table");
    StoreError::Corrupt { pg, object: String::new(), detail: format!("dup table: {detail}") }
}

/// Whether `error` is a damaged duplicate table (rather than a damaged object).
pub fn is_damaged_dup_table(error: &StoreError) -> bool {
    matches!(error, StoreError::Corrupt { object, detail, .. }
        if object.is_empty() && detail.starts_with("dup table: "))
}

/// Entries a PG may hold beyond its bound before a trim step removes them.
pub(crate) fn trim_slack(max: usize) -> u64 {
    (max as u64 / 4).max(1)
}

/// Appends one entry as a row holds it (`part` is valid: [`valid_reqid_part`]), its value
/// written by `value` in place.
fn put_entry_with(part: &[u8], out: &mut Vec<u8>, value: impl FnOnce(&mut Vec<u8>)) {
    debug_assert!(part.len() <= PART_MAX);
    out.extend_from_slice(&(part.len() as u16).to_le_bytes());
    out.extend_from_slice(part);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    value(out);
    let len = u32::try_from(out.len() - len_at - 4).expect("a dup value is far below 4 GiB");
    out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
}

/// A sealed row: `floor`, then `count` entries already laid out in `body`.
fn seal_row(floor: u64, count: usize, body: &[u8]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(ROW_HEADER + body.len());
    plain.push(DUP_ROW_VERSION);
    plain.extend_from_slice(&floor.to_le_bytes());
    plain.extend_from_slice(&(count as u32).to_le_bytes());
    plain.extend_from_slice(body);
    seal(&plain)
}

/// One entry: `(seq, reqid part, value)`.
pub(crate) type DupRow = (u64, Vec<u8>, Vec<u8>);

/// A sealed row of `entries` (consecutive, the first `entries[0].0`) with `floor`.
pub(crate) fn encode_row(floor: u64, entries: &[DupRow]) -> Vec<u8> {
    let mut body = Vec::new();
    for (_, part, value) in entries {
        put_entry_with(part, &mut body, |out| out.extend_from_slice(value));
    }
    seal_row(floor, entries.len(), &body)
}

/// Takes `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    if rest.len() < n {
        return Err("dup row truncated");
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

/// `(floor, entries)` of the stored row whose first entry is `first`: each entry's reqid part
/// well formed and its value numbered `first + i`. Or why it is damaged.
pub(crate) fn decode_row(first: u64, stored: &[u8]) -> Result<(u64, Vec<DupRow>), String> {
    let plain = unseal(stored)?;
    let mut rest = plain;
    let header = take(&mut rest, ROW_HEADER)?;
    if header[0] != DUP_ROW_VERSION {
        return Err("dup row of an unknown version".into());
    }
    let floor = u64::from_le_bytes(header[1..9].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(header[9..13].try_into().expect("4 bytes")) as usize;
    if count == 0 {
        return Err("dup row without entries".into());
    }
    let mut entries = Vec::with_capacity(count.min(ROW_ENTRIES_MAX * 8));
    for i in 0..count as u64 {
        let len = u16::from_le_bytes(take(&mut rest, 2)?.try_into().expect("2 bytes"));
        let part = take(&mut rest, len as usize)?;
        let len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().expect("4 bytes"));
        let value = take(&mut rest, len as usize)?;
        if !valid_reqid_part(part) {
            return Err("malformed request id in a dup row".into());
        }
        let seq = first.checked_add(i).ok_or("dup row numbers overflow")?;
        if decode_value(value)?.0 != seq {
            return Err(format!("dup entry numbered out of order (expected {seq})"));
        }
        entries.push((seq, part.to_vec(), value.to_vec()));
    }
    if !rest.is_empty() {
        return Err("bytes after a dup row's entries".into());
    }
    Ok((floor, entries))
}

/// `(first seq, row)` of every stored row of `pg`, oldest first.
fn stored_rows<T>(log: &T, pg: PgId) -> Result<Vec<(u64, Vec<u8>)>, StoreError>
where
    T: ReadableTable<&'static RowKey, &'static [u8]>,
{
    let (lo, hi) = (row_key(pg, 0), row_key(pg, u64::MAX));
    let mut out = Vec::new();
    for item in log.range::<&RowKey>(&lo..=&hi)? {
        let (key, value) = item?;
        let first = u64::from_be_bytes(key.value()[12..].try_into().expect("8 bytes"));
        out.push((first, value.value().to_vec()));
    }
    Ok(out)
}

/// Number of `pg`'s stored rows.
pub(crate) fn row_count<T>(log: &T, pg: PgId) -> Result<usize, StoreError>
where
    T: ReadableTable<&'static RowKey, &'static [u8]>,
{
    Ok(stored_rows(log, pg)?.len())
}

/// What `pg`'s rows hold: `(floor, next, rows as (first, count), entries at or above the
/// floor)`, or why they are damaged (a row that does not decode, a gap, a floor outside them).
type Decoded = (u64, u64, VecDeque<(u64, u64)>, Vec<DupRow>);

fn decode_rows(rows: Vec<(u64, Vec<u8>)>) -> Result<Decoded, String> {
    let mut spans = VecDeque::with_capacity(rows.len());
    let mut entries = Vec::new();
    let (mut floor, mut next) = (0, 0);
    for (first, stored) in rows {
        let (row_floor, row) = decode_row(first, &stored)?;
        if !spans.is_empty() && first != next {
            return Err(format!("dup rows not consecutive: {first} after {next}"));
        }
        next = first
            .checked_add(row.len() as u64)
            .filter(|&next| next <= SEQ_MAX)
            .ok_or("dup row numbered beyond the largest sequence number")?;
        spans.push_back((first, row.len() as u64));
        floor = row_floor;
        entries.extend(row);
    }
    if let Some(&(first, _)) = spans.front() {
        // The newest row holds an entry at or above the floor (written with it).
        if floor < first || floor >= next {
            return Err(format!("dup floor {floor} outside the rows ({first}..{next})"));
        }
    }
    entries.retain(|e| e.0 >= floor);
    Ok((floor, next, spans, entries))
}

/// Every entry of `pg` at or above its floor, oldest first; `Corrupt` if its rows are
/// damaged.
pub(crate) fn entries<T>(log: &T, pg: PgId) -> Result<Vec<DupRow>, StoreError>
where
    T: ReadableTable<&'static RowKey, &'static [u8]>,
{
    table(log, pg).map(|t| t.2)
}

/// `(floor, next, entries)` of `pg` (see [`entries`]): the next entry is numbered `next`.
pub(crate) fn table<T>(log: &T, pg: PgId) -> Result<(u64, u64, Vec<DupRow>), StoreError>
where
    T: ReadableTable<&'static RowKey, &'static [u8]>,
{
    decode_rows(stored_rows(log, pg)?).map(|d| (d.0, d.1, d.3)).map_err(|why| corrupt(pg, &why))
}

/// Writes `entries` (consecutive) as `pg`'s rows after its existing ones, with `floor`, in
/// rows of at most [`ROW_ENTRIES_MAX`]. The caller forgets the PG's memory.
pub(crate) fn write_entries(
    log: &mut Table<'_, &'static RowKey, &'static [u8]>,
    pg: PgId,
    floor: u64,
    entries: &[DupRow],
) -> Result<(), StoreError> {
    for rows in entries.chunks(ROW_ENTRIES_MAX) {
        log.insert(&row_key(pg, rows[0].0), encode_row(floor, rows).as_slice())?;
    }
    Ok(())
}

/// Deletes every row of `pg`. The caller forgets the PG's memory.
pub(crate) fn purge(
    log: &mut Table<'_, &'static RowKey, &'static [u8]>,
    pg: PgId,
) -> Result<(), StoreError> {
    let (lo, hi) = (row_key(pg, 0), row_key(pg, u64::MAX));
    log.retain_in::<&RowKey, _>(&lo..=&hi, |_, _| false)?;
    Ok(())
}

/// Checks a reqid part from an export stream or a row: `len u16 ++ entity ++ 16 bytes`, at
/// most [`PART_MAX`] bytes.
pub(crate) fn valid_reqid_part(part: &[u8]) -> bool {
    (2..=PART_MAX).contains(&part.len()) && {
        let len = u16::from_be_bytes([part[0], part[1]]) as usize;
        part.len() == 2 + len + 16 && std::str::from_utf8(&part[2..2 + len]).is_ok()
    }
}

/// The request ids' hashes are already hashes: the index does not hash them again.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One PG's table as the store keeps it in memory (see the module docs): the index, 18 to
/// 36 bytes per entry as the hash table fills (~200 KiB for a PG at its bound of 3000 plus
/// a quarter), and the entries not written yet.
struct PgDups {
    /// Every entry the PG holds is numbered in `floor..next`.
    floor: u64,
    next: u64,
    /// Request id hash -> sequence number; `extra` holds the numbers of further entries
    /// whose ids hash alike (almost never any).
    index: HashMap<u64, u64, BuildHasherDefault<Identity>>,
    extra: HashMap<u64, Vec<u64>>,
    /// Entries not written yet (numbered `next - pending_offsets.len()..next`), laid out as
    /// a row's body holds them; the offset of each in it.
    pending: Vec<u8>,
    pending_offsets: Vec<u32>,
    /// The stored rows: `(first seq, count)`, oldest first.
    rows: VecDeque<(u64, u64)>,
    /// Why the stored rows cannot be trusted (every lookup fails).
    damaged: Option<String>,
}

impl PgDups {
    fn empty() -> PgDups {
        PgDups {
            floor: 0,
            next: 0,
            index: HashMap::default(),
            extra: HashMap::new(),
            pending: Vec::new(),
            pending_offsets: Vec::new(),
            rows: VecDeque::new(),
            damaged: None,
        }
    }

    fn pending_first(&self) -> u64 {
        self.next - self.pending_offsets.len() as u64
    }

    fn index_insert(&mut self, hash: u64, seq: u64) {
        if let Some(first) = self.index.insert(hash, seq) {
            self.extra.entry(hash).or_default().push(first);
        }
    }

    /// The numbers of the entries whose request ids hash to `hash`.
    fn candidates(&self, hash: u64) -> Vec<u64> {
        let extra = self.extra.get(&hash).into_iter().flatten();
        self.index.get(&hash).into_iter().chain(extra).copied().collect()
    }

    /// Raises the floor to `floor`: the entries below it leave the index (one pass over it
    /// per trim step, every `max / 4` records).
    fn raise_floor(&mut self, floor: u64) {
        self.floor = floor;
        self.index.retain(|_, seq| *seq >= floor);
        self.extra.retain(|_, seqs| {
            seqs.retain(|seq| *seq >= floor);
            !seqs.is_empty()
        });
    }

    /// `(part, value)` of pending entry `seq`.
    fn pending_entry(&self, seq: u64) -> (&[u8], &[u8]) {
        let at = self.pending_offsets[(seq - self.pending_first()) as usize] as usize;
        let mut rest = &self.pending[at..];
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let part = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        (part, &rest[4..4 + len])
    }
}

/// The duplicate table's memory: every PG the store used since it opened (or since it last
/// forgot them), shared by the store's writers under its writer lock.
#[derive(Default)]
pub(crate) struct DupMemory {
    pgs: Mutex<HashMap<PgId, PgDups>>,
    hasher: RandomState,
    /// Tests: every request id hashes alike (the collision path).
    #[cfg(test)]
    collide: std::sync::atomic::AtomicBool,
}

impl DupMemory {
    fn map(&self) -> MutexGuard<'_, HashMap<PgId, PgDups>> {
        self.pgs.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn hash(&self, part: &[u8]) -> u64 {
        #[cfg(test)]
        if self.collide.load(std::sync::atomic::Ordering::Relaxed) {
            return 42;
        }
        self.hasher.hash_one(part)
    }

    /// Forgets every PG (the open transaction, whose entries they may hold, was dropped).
    pub(crate) fn forget_all(&self) {
        self.map().clear();
    }

    /// Forgets `pg` (a writer other than an apply rewrote its rows). Called with no
    /// transaction open: the PG has nothing pending.
    pub(crate) fn forget(&self, pg: PgId) {
        if let Some(gone) = self.map().remove(&pg) {
            debug_assert!(gone.pending_offsets.is_empty(), "{pg} forgotten with pending entries");
        }
    }

    /// Writes each PG's pending entries as one row in `txn` (the open transaction, about to
    /// be committed) and deletes the rows wholly below each PG's floor.
    pub(crate) fn flush(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut map = self.map();
        if map.values().all(|d| d.pending_offsets.is_empty()) {
            return Ok(());
        }
        let mut log = txn.open_table(DUP_LOG)?;
        for (&pg, dups) in map.iter_mut() {
            if dups.pending_offsets.is_empty() {
                continue;
            }
            // Entries recorded and trimmed since the last commit are not written.
            let first = dups.pending_first().max(dups.floor);
            let skip = (first - dups.pending_first()) as usize;
            if skip < dups.pending_offsets.len() {
                let at = dups.pending_offsets[skip] as usize;
                let count = dups.pending_offsets.len() - skip;
                let row = seal_row(dups.floor, count, &dups.pending[at..]);
                log.insert(&row_key(pg, first), row.as_slice())?;
                dups.rows.push_back((first, count as u64));
            }
            dups.pending.clear();
            dups.pending_offsets.clear();
            if dups.pending.capacity() > PENDING_KEEP {
                dups.pending = Vec::new();
                dups.pending_offsets = Vec::new();
            }
            while let Some(&(first, count)) = dups.rows.front() {
                if first + count > dups.floor {
                    break;
                }
                log.remove(&row_key(pg, first))?;
                dups.rows.pop_front();
            }
        }
        Ok(())
    }
}

/// The duplicate table of a write transaction.
pub(crate) struct DupTables<'txn> {
    log: Table<'txn, &'static RowKey, &'static [u8]>,
    memory: &'txn DupMemory,
}

impl<'txn> DupTables<'txn> {
    pub(crate) fn open(
        txn: &'txn WriteTransaction,
        memory: &'txn DupMemory,
    ) -> Result<Self, StoreError> {
        Ok(DupTables { log: txn.open_table(DUP_LOG)?, memory })
    }

    /// `pg`'s memory, built from its rows if the store does not hold it.
    fn load<'m>(
        &self,
        map: &'m mut HashMap<PgId, PgDups>,
        pg: PgId,
    ) -> Result<&'m mut PgDups, StoreError> {
        match map.entry(pg) {
            std::collections::hash_map::Entry::Occupied(known) => Ok(known.into_mut()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let mut dups = PgDups::empty();
                match decode_rows(stored_rows(&self.log, pg)?) {
                    Ok((floor, next, rows, entries)) => {
                        dups.floor = floor;
                        dups.next = next;
                        dups.rows = rows;
                        for (seq, part, _) in &entries {
                            dups.index_insert(self.memory.hash(part), *seq);
                        }
                    }
                    Err(why) => {
                        tracing::error!(%pg, why, "damaged duplicate table: the pg's requests fail");
                        dups.damaged = Some(why);
                    }
                }
                Ok(slot.insert(dups))
            }
        }
    }

    /// The recorded reply of request id `part` (a [`reqid_part`]) in `pg`, if any.
    pub(crate) fn lookup(&self, pg: PgId, part: &[u8]) -> Result<Option<OpReply>, StoreError> {
        let hash = self.memory.hash(part);
        let mut map = self.memory.map();
        let dups = self.load(&mut map, pg)?;
        if let Some(why) = &dups.damaged {
            return Err(corrupt(pg, why));
        }
        if !dups.index.contains_key(&hash) && dups.extra.is_empty() {
            return Ok(None);
        }
        for seq in dups.candidates(hash) {
            let value = if seq >= dups.pending_first() {
                let (stored, value) = dups.pending_entry(seq);
                if stored != part {
                    continue;
                }
                value.to_vec()
            } else {
                let Some(&(first, _)) = dups.rows.iter().rev().find(|(first, _)| *first <= seq)
                else {
                    return Err(corrupt(pg, &format!("entry {seq} in no row")));
                };
                let row = match self.log.get(&row_key(pg, first))? {
                    Some(row) => row.value().to_vec(),
                    None => return Err(corrupt(pg, &format!("row {first} missing"))),
                };
                let (_, entries) = decode_row(first, &row).map_err(|why| corrupt(pg, &why))?;
                match entries.into_iter().nth((seq - first) as usize) {
                    Some((_, stored, value)) if stored == part => value,
                    Some(_) => continue,
                    None => return Err(corrupt(pg, &format!("entry {seq} not in row {first}"))),
                }
            };
            let (_, reply) = decode_value(&value).map_err(|why| corrupt(pg, why))?;
            return Ok(Some(reply));
        }
        Ok(None)
    }

    /// Records `reply` for request id `part` of `pg` as the newest entry; once the PG holds
    /// more than `max` plus [`trim_slack`] entries, its floor rises to keep the newest `max`.
    pub(crate) fn record(
        &mut self,
        pg: PgId,
        part: &[u8],
        reply: &OpReply,
        max: usize,
    ) -> Result<(), StoreError> {
        // At least one entry is kept: the newest row then always carries the floor.
        let max = max.max(1);
        let hash = self.memory.hash(part);
        let mut map = self.memory.map();
        let dups = self.load(&mut map, pg)?;
        if let Some(why) = &dups.damaged {
            return Err(corrupt(pg, why));
        }
        let seq = dups.next;
        dups.pending_offsets.push(dups.pending.len() as u32);
        put_entry_with(part, &mut dups.pending, |out| encode_value_into(seq, reply, out));
        dups.index_insert(hash, seq);
        dups.next = seq + 1;
        if dups.next - dups.floor > max as u64 + trim_slack(max) {
            dups.raise_floor(dups.next - max as u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, tid: u64) -> DupRow {
        let mut part = Vec::new();
        part.extend_from_slice(&12u16.to_be_bytes());
        part.extend_from_slice(b"client.admin");
        part.extend_from_slice(&7u64.to_be_bytes());
        part.extend_from_slice(&tid.to_be_bytes());
        (seq, part, encode_value(seq, &OpReply::Ok(vec![OpOutput::None])))
    }

    /// Goal: a row decodes to what was encoded, and each way it can be damaged is refused.
    #[test]
    fn rows_round_trip_and_damage_is_refused() {
        let entries: Vec<DupRow> = (5..9).map(|s| entry(s, s * 10)).collect();
        let row = encode_row(6, &entries);
        assert_eq!(decode_row(5, &row), Ok((6, entries.clone())));
        // Numbered from another first entry.
        assert!(decode_row(4, &row).is_err());
        // Any flipped byte (the crc).
        for at in 0..row.len() {
            let mut bad = row.clone();
            bad[at] ^= 0x10;
            assert!(decode_row(5, &bad).is_err(), "byte {at}");
        }
        // Well sealed but malformed: truncated, trailing bytes, no entries, unknown version.
        let plain = unseal(&row).unwrap().to_vec();
        for bad in [
            plain[..plain.len() - 1].to_vec(),
            [plain.as_slice(), b"x"].concat(),
            [&[DUP_ROW_VERSION][..], &6u64.to_le_bytes(), &0u32.to_le_bytes()].concat(),
            [&[9u8][..], &plain[1..]].concat(),
        ] {
            assert!(decode_row(5, &seal(&bad)).is_err());
        }
        // Well formed but for a reply that does not decode.
        let mut bad = entries.clone();
        bad[1].2.truncate(9);
        bad[1].2.extend_from_slice(&[0xff; 3]);
        assert!(decode_row(5, &encode_row(6, &bad)).is_err());
    }

    /// Goal: a request id of an entity whose name exceeds 64 KiB is cut on a character
    /// boundary, so its rows decode.
    #[test]
    fn long_entity_names_are_cut_on_a_character_boundary() {
        use quarry_types::{EntityName, ReqId};
        let name = "é".repeat(40_000);
        let reqid =
            EntityReqId { entity: EntityName::client(&name), reqid: ReqId { client: 1, tid: 2 } };
        let mut part = Vec::new();
        reqid_part(&reqid, &mut part);
        assert!(valid_reqid_part(&part));
        assert!(part.len() <= PART_MAX, "{}", part.len());
        let value = encode_value(0, &OpReply::Ok(Vec::new()));
        let row = encode_row(0, &[(0, part.clone(), value.clone())]);
        assert_eq!(decode_row(0, &row), Ok((0, vec![(0, part, value)])));
    }

    /// Goal: request ids whose hashes collide are told apart by the entries themselves, in
    /// memory and in their rows, before and after a trim and a reload. Method: a store whose
    /// ids all hash alike; resends of exclusive creates (a second apply would fail EEXIST).
    #[test]
    fn colliding_hashes_are_told_apart() {
        use quarry_types::{EntityName, ErrorCode, ObjectOp, ReqId, SnapContext};
        let dir = tempfile::tempdir().unwrap();
        let options = crate::StoreOptions { dups_per_pg: 8, ..Default::default() };
        let store = crate::Store::open_with(dir.path(), &options).unwrap();
        store.dup_memory.collide.store(true, std::sync::atomic::Ordering::Relaxed);
        let pg = PgId { pool: 1, seed: 0 };
        let create = |tid: u64| crate::ObjectCommand {
            name: format!("o{tid}"),
            snapc: SnapContext::default(),
            ops: vec![ObjectOp::Create { exclusive: true }],
            mtime: (0, 0),
            reqid: Some(EntityReqId {
                entity: EntityName::client("a"),
                reqid: ReqId { client: 1, tid },
            }),
        };
        let ok = OpReply::Ok(vec![OpOutput::None]);
        let eexist = OpReply::Failed { index: 0, code: ErrorCode::EEXIST };
        let apply = |tid: u64| store.apply(pg, &[create(tid)], b"s").unwrap().remove(0);
        for tid in 1..=6 {
            assert_eq!(apply(tid), ok);
            if tid % 2 == 0 {
                store.settle().unwrap();
            }
        }
        // Pending and written entries, all under one hash.
        for tid in 1..=6 {
            assert_eq!(apply(tid), ok, "resend {tid}");
        }
        for tid in 7..=12 {
            assert_eq!(apply(tid), ok);
        }
        // 11 > 8 + 2: the floor rose at the 11th to keep tids 4..=11, then the 12th.
        for tid in 4..=12 {
            assert_eq!(apply(tid), ok, "resend {tid} after the trim");
        }
        assert_eq!(apply(3), eexist, "a trimmed id runs again");
        // Reloaded from the rows.
        store.settle().unwrap();
        store.dup_memory.forget_all();
        for tid in 4..=12 {
            assert_eq!(apply(tid), ok, "resend {tid} after a reload");
        }
    }

    /// Goal: rows with a gap between them, or a floor outside them, are damaged.
    #[test]
    fn gaps_and_floors_outside_the_rows_are_damage() {
        let a: Vec<DupRow> = (0..3).map(|s| entry(s, s)).collect();
        let b: Vec<DupRow> = (3..5).map(|s| entry(s, s)).collect();
        let c: Vec<DupRow> = (6..7).map(|s| entry(s, s)).collect();
        let ok = decode_rows(vec![(0, encode_row(0, &a)), (3, encode_row(2, &b))]).unwrap();
        assert_eq!((ok.0, ok.1, ok.3.len()), (2, 5, 3));
        assert!(decode_rows(vec![(0, encode_row(0, &a)), (6, encode_row(0, &c))]).is_err());
        assert!(decode_rows(vec![(3, encode_row(1, &b))]).is_err());
        assert!(decode_rows(vec![(3, encode_row(6, &b))]).is_err());
    }
}
