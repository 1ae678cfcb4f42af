//! The duplicate table (Ceph's PG log "dups"): per PG, the request ids of the most recent
//! mutating commands with the reply each got, written in the same transaction as the apply.
//! A command whose request id is already there is not applied again: it gets the recorded
//! reply. Every replica applies the same log, so every replica answers a resend the same way,
//! including a resend proposed while the first copy was still in flight (the first copy's
//! apply records it before the second is applied). Bounded per PG: the oldest entries go
//! first, in steps (below).
//!
//! Rows (see the crate docs' table): `dups` maps `pg ++ reqid` to `version u8 (=1) ++ seq u64
//! LE ++ bincode(OpReply)`. Sequence numbers of a PG are consecutive: entries are appended
//! with the next number and only the oldest are removed.
//!
//! # Trimming in steps, bounds kept in memory (format 5)
//! Until format 4 a second table (`dup_seq`, `pg ++ seq -> reqid`) kept the entries in
//! order, so each apply could drop exactly the oldest one: a lookup, a range query for the
//! bounds, two inserts and two removes per write — a tenth of the OSD's CPU per 4 KiB write
//! at queue depth 32 (docs/benchmarks.md, "Eleventh round"). Now an apply does the lookup
//! and one insert: the PG's bounds (`floor..next`, [`DupBounds`]) are kept by the store
//! between applies (found by one scan of the PG's rows when unknown), and once the PG holds
//! more than `max + max / 4` entries one scan removes every entry older than the newest
//! `max` (Ceph trims its dups in batches too). So a PG holds between `max` and
//! `max + max / 4` entries once it has seen `max`. Every writer of the table other than an
//! apply (split, merge, import, purge) forgets the bounds of the PGs it writes, and a
//! dropped transaction forgets them all (`writer.rs`): the next apply scans again.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use quarry_types::{EntityReqId, OpOutput, OpReply, PgId};
use redb::{ReadableTable, Table, WriteTransaction};

use crate::format::{pg_key, pg_key_end, seal, unseal, PgKey, DUPS};
use crate::StoreError;

/// Version byte in front of a dup table value.
pub(crate) const DUP_VALUE_VERSION: u8 = 1;
/// Default bound of the table per PG (Ceph's `osd_pg_log_dups_tracked`).
pub const DUPS_PER_PG_DEFAULT: usize = 3000;
/// A reply whose outputs encode to more than this is recorded without its outputs' content
/// (each output becomes `OpOutput::None`): Ceph keeps only small op return data in dups too.
/// A resend then gets the original outcome (success, or the failing op and its code) but not
/// the data a read op of the vector returned.
pub const DUP_REPLY_MAX: usize = 4096;

/// The reqid part of a dup key: `entity len u16 BE ++ entity ("client.admin") ++ client u64
/// BE ++ tid u64 BE`.
pub(crate) fn reqid_part(reqid: &EntityReqId, out: &mut Vec<u8>) {
    let entity = reqid.entity.to_string();
    let entity = &entity.as_bytes()[..entity.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(entity.len() as u16).to_be_bytes());
    out.extend_from_slice(entity);
    out.extend_from_slice(&reqid.reqid.client.to_be_bytes());
    out.extend_from_slice(&reqid.reqid.tid.to_be_bytes());
}

/// The `dups` key of `reqid` in `pg`.
pub(crate) fn dup_key(pg: PgId, reqid: &EntityReqId, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&pg_key(pg));
    reqid_part(reqid, out);
}

/// The reply as recorded: small outputs kept, large ones emptied (see [`DUP_REPLY_MAX`]).
pub(crate) fn encode_value(seq: u64, reply: &OpReply) -> Vec<u8> {
    let mut out = vec![DUP_VALUE_VERSION];
    out.extend_from_slice(&seq.to_le_bytes());
    let body = bincode::serialize(reply).expect("an OpReply always encodes");
    if body.len() <= DUP_REPLY_MAX {
        out.extend_from_slice(&body);
    } else {
        let small = match reply {
            OpReply::Ok(outputs) => OpReply::Ok(vec![OpOutput::None; outputs.len()]),
            failed => failed.clone(),
        };
        out.extend_from_slice(&bincode::serialize(&small).expect("an OpReply always encodes"));
    }
    out
}

/// The sequence number of a plain value (the reply not decoded), or why it is malformed.
fn value_seq(value: &[u8]) -> Result<u64, &'static str> {
    if value.len() < 9 {
        return Err("dup entry too short");
    }
    if value[0] != DUP_VALUE_VERSION {
        return Err("dup entry of an unknown version");
    }
    Ok(u64::from_le_bytes(value[1..9].try_into().expect("8 bytes")))
}

/// `(seq, reply)` of a stored value, or why it is malformed.
pub(crate) fn decode_value(value: &[u8]) -> Result<(u64, OpReply), &'static str> {
    let seq = value_seq(value)?;
    let reply = bincode::deserialize(&value[9..]).map_err(|_| "dup entry reply undecodable")?;
    Ok((seq, reply))
}

/// The sequence number of a value as the `dups` table stores it (its crc checked, the reply
/// not decoded), or why it is damaged.
fn stored_seq(value: &[u8]) -> Result<u64, &'static str> {
    value_seq(unseal(value).map_err(|_| "dup entry crc mismatch")?)
}

/// `(seq, reply)` of a value as the `dups` table stores it (sealed: crc32c ++ the value
/// [`encode_value`] makes), or why it is damaged.
pub(crate) fn decode_stored(value: &[u8]) -> Result<(u64, OpReply), String> {
    decode_value(unseal(value)?).map_err(str::to_string)
}

pub(crate) fn corrupt(pg: PgId, detail: &str) -> StoreError {
    tracing::error!(%pg, detail, "corrupt duplicate table entry");
    StoreError::Corrupt { pg, object: String::new(), detail: format!("dup table: {detail}") }
}

/// Entries a PG may hold beyond its bound before a trim step removes them.
pub(crate) fn trim_slack(max: usize) -> u64 {
    (max as u64 / 4).max(1)
}

/// A PG's sequence numbers: every entry it holds has one in `floor..next`, and the next
/// entry gets `next`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bounds {
    floor: u64,
    next: u64,
}

/// The bounds of the PGs applies wrote lately (see the module docs), shared by the store's
/// writers under its writer lock.
#[derive(Default)]
pub(crate) struct DupBounds(Mutex<HashMap<PgId, Bounds>>);

impl DupBounds {
    fn map(&self) -> MutexGuard<'_, HashMap<PgId, Bounds>> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Forgets every PG's bounds (a transaction that wrote some was dropped).
    pub(crate) fn forget_all(&self) {
        self.map().clear();
    }

    fn forget(&self, pg: PgId) {
        self.map().remove(&pg);
    }
}

/// The open duplicate table of a write transaction.
pub(crate) struct DupTables<'txn> {
    dups: Table<'txn, &'static [u8], &'static [u8]>,
    bounds: &'txn DupBounds,
}

impl<'txn> DupTables<'txn> {
    pub(crate) fn open(
        txn: &'txn WriteTransaction,
        bounds: &'txn DupBounds,
    ) -> Result<Self, StoreError> {
        Ok(DupTables { dups: txn.open_table(DUPS)?, bounds })
    }

    /// The recorded reply of `key` (a [`dup_key`]), if any.
    pub(crate) fn lookup(&self, pg: PgId, key: &[u8]) -> Result<Option<OpReply>, StoreError> {
        match self.dups.get(key)? {
            Some(value) => {
                let (_, reply) = decode_stored(value.value()).map_err(|why| corrupt(pg, &why))?;
                Ok(Some(reply))
            }
            None => Ok(None),
        }
    }

    /// `(key, seq)` of every entry of `pg` whose value can be read; a damaged one is
    /// logged and skipped (a lookup of its key reports it).
    fn scan(&self, pg: PgId) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        let start = pg_key(pg);
        let end = pg_key_end(pg);
        let range = match &end {
            Some(end) => self.dups.range(start.as_slice()..end.as_slice())?,
            None => self.dups.range(start.as_slice()..)?,
        };
        let mut out = Vec::new();
        for item in range {
            let (key, value) = item?;
            match stored_seq(value.value()) {
                Ok(seq) => out.push((key.value().to_vec(), seq)),
                Err(why) => {
                    tracing::error!(%pg, why, "damaged duplicate table entry left in place")
                }
            }
        }
        Ok(out)
    }

    /// `pg`'s bounds: as kept, or found by a scan.
    fn bounds(&self, pg: PgId) -> Result<Bounds, StoreError> {
        if let Some(bounds) = self.bounds.map().get(&pg) {
            return Ok(*bounds);
        }
        let rows = self.scan(pg)?;
        let floor = rows.iter().map(|r| r.1).min().unwrap_or(0);
        let next = rows.iter().map(|r| r.1 + 1).max().unwrap_or(0);
        Ok(Bounds { floor, next })
    }

    /// Records `reply` for `key` (a [`dup_key`] of `pg`) as the newest entry; once the PG
    /// holds more than `max` plus [`trim_slack`] entries, drops all but the newest `max`.
    pub(crate) fn record(
        &mut self,
        pg: PgId,
        key: &[u8],
        reply: &OpReply,
        max: usize,
    ) -> Result<(), StoreError> {
        let Bounds { mut floor, next } = self.bounds(pg)?;
        let seq = next;
        self.dups.insert(key, seal(&encode_value(seq, reply)).as_slice())?;
        let next = seq + 1;
        if next - floor > max as u64 + trim_slack(max) {
            floor = next - max as u64;
            self.trim_below(pg, floor)?;
        }
        self.bounds.map().insert(pg, Bounds { floor, next });
        Ok(())
    }

    /// Removes the entries of `pg` numbered below `floor`.
    fn trim_below(&mut self, pg: PgId, floor: u64) -> Result<(), StoreError> {
        for (key, seq) in self.scan(pg)? {
            if seq < floor {
                self.dups.remove(key.as_slice())?;
            }
        }
        Ok(())
    }

    /// Inserts an entry as split, merge and import copy it, sealing the plain `value` (as
    /// [`encode_value`] makes it; import passes the stream's). The PG's bounds are forgotten.
    pub(crate) fn insert(&mut self, pg: PgId, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.bounds.forget(pg);
        self.dups.insert(key, seal(value).as_slice())?;
        Ok(())
    }

    /// Deletes every entry of `pg`.
    pub(crate) fn purge(&mut self, pg: PgId) -> Result<(), StoreError> {
        self.bounds.forget(pg);
        let start = pg_key(pg);
        let end = pg_key_end(pg);
        match &end {
            Some(end) => self.dups.retain_in(start.as_slice()..end.as_slice(), |_, _| false)?,
            None => self.dups.retain_in(start.as_slice().., |_, _| false)?,
        }
        Ok(())
    }
}

/// One stored entry: `(seq, reqid part of the key, value)`.
pub(crate) type DupRow = (u64, Vec<u8>, Vec<u8>);

/// Every entry of `pg`, oldest first.
pub(crate) fn entries<T>(dups: &T, pg: PgId) -> Result<Vec<DupRow>, StoreError>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let start = pg_key(pg);
    let end = pg_key_end(pg);
    let range = match &end {
        Some(end) => dups.range(start.as_slice()..end.as_slice())?,
        None => dups.range(start.as_slice()..)?,
    };
    let mut out = Vec::new();
    for item in range {
        let (key, value) = item?;
        let plain = unseal(value.value()).map_err(|why| corrupt(pg, &why))?;
        let (seq, _) = decode_value(plain).map_err(|why| corrupt(pg, why))?;
        out.push((seq, key.value()[start.len()..].to_vec(), plain.to_vec()));
    }
    out.sort_unstable_by_key(|row| row.0);
    Ok(out)
}

/// Checks a reqid key part from an export stream: `len u16 ++ entity ++ 16 bytes`.
pub(crate) fn valid_reqid_part(part: &[u8]) -> bool {
    part.len() >= 2 && {
        let len = u16::from_be_bytes([part[0], part[1]]) as usize;
        part.len() == 2 + len + 16 && std::str::from_utf8(&part[2..2 + len]).is_ok()
    }
}

/// A `PgKey`-prefixed key from a key part.
pub(crate) fn full_key(pg: PgId, part: &[u8]) -> Vec<u8> {
    let key: PgKey = pg_key(pg);
    let mut out = key.to_vec();
    out.extend_from_slice(part);
    out
}
