//! The duplicate table (Ceph's PG log "dups"): per PG, the request ids of the most recent
//! mutating commands with the reply each got, written in the same transaction as the apply.
//! A command whose request id is already there is not applied again: it gets the recorded
//! reply. Every replica applies the same log, so every replica answers a resend the same way,
//! including a resend proposed while the first copy was still in flight (the first copy's
//! apply records it before the second is applied). Bounded per PG: the oldest entries go
//! first.
//!
//! Rows (see the crate docs' table): `dups` maps `pg ++ reqid` to `version u8 (=1) ++ seq u64
//! LE ++ bincode(OpReply)`; `dup_seq` maps `pg ++ seq u64 BE` to the reqid part of the key,
//! so the oldest entry is the first row of the PG's range. Sequence numbers of a PG are
//! consecutive (entries are only appended and only the oldest are removed), so the count is
//! `last - first + 1`.

use quarry_types::{EntityReqId, OpOutput, OpReply, PgId};
use redb::{ReadableTable, Table, WriteTransaction};

use crate::format::{pg_key, pg_key_end, seal, unseal, PgKey, DUPS, DUP_SEQ};
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

/// The `dup_seq` key.
pub(crate) fn seq_key(pg: PgId, seq: u64) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..12].copy_from_slice(&pg_key(pg));
    key[12..].copy_from_slice(&seq.to_be_bytes());
    key
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

/// `(seq, reply)` of a stored value, or why it is malformed.
pub(crate) fn decode_value(value: &[u8]) -> Result<(u64, OpReply), &'static str> {
    if value.len() < 9 {
        return Err("dup entry too short");
    }
    if value[0] != DUP_VALUE_VERSION {
        return Err("dup entry of an unknown version");
    }
    let seq = u64::from_le_bytes(value[1..9].try_into().expect("8 bytes"));
    let reply = bincode::deserialize(&value[9..]).map_err(|_| "dup entry reply undecodable")?;
    Ok((seq, reply))
}

/// `(seq, reply)` of a value as the `dups` table stores it (sealed: crc32c ++ the value
/// [`encode_value`] makes), or why it is damaged.
pub(crate) fn decode_stored(value: &[u8]) -> Result<(u64, OpReply), String> {
    decode_value(unseal(value)?).map_err(str::to_string)
}

/// The reqid key part a `dup_seq` row stores (sealed), or why it is damaged.
fn stored_part(value: &[u8]) -> Result<&[u8], String> {
    unseal(value).map_err(|why| format!("dup_seq row: {why}"))
}

pub(crate) fn corrupt(pg: PgId, detail: &str) -> StoreError {
    tracing::error!(%pg, detail, "corrupt duplicate table entry");
    StoreError::Corrupt { pg, object: String::new(), detail: format!("dup table: {detail}") }
}

/// The open dup tables of a write transaction.
pub(crate) struct DupTables<'txn> {
    dups: Table<'txn, &'static [u8], &'static [u8]>,
    seqs: Table<'txn, &'static [u8; 20], &'static [u8]>,
}

impl<'txn> DupTables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(DupTables { dups: txn.open_table(DUPS)?, seqs: txn.open_table(DUP_SEQ)? })
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

    /// `(first, last)` sequence numbers of the PG's entries, or None if it has none.
    fn bounds(&self, pg: PgId) -> Result<Option<(u64, u64)>, StoreError> {
        let lo = seq_key(pg, 0);
        let hi = seq_key(pg, u64::MAX);
        let mut range = self.seqs.range::<&[u8; 20]>(&lo..=&hi)?;
        let seq_of = |k: &[u8; 20]| u64::from_be_bytes(k[12..].try_into().expect("8 bytes"));
        let Some(first) = range.next() else {
            return Ok(None);
        };
        let first = seq_of(first?.0.value());
        let last = match range.next_back() {
            Some(last) => seq_of(last?.0.value()),
            None => first,
        };
        Ok(Some((first, last)))
    }

    /// Records `reply` for `key` (a [`dup_key`] of `pg`) as the newest entry, then drops the
    /// oldest entries beyond `max`.
    pub(crate) fn record(
        &mut self,
        pg: PgId,
        key: &[u8],
        reply: &OpReply,
        max: usize,
    ) -> Result<(), StoreError> {
        let bounds = self.bounds(pg)?;
        let seq = bounds.map_or(0, |(_, last)| last + 1);
        self.insert(pg, key, seq, &encode_value(seq, reply))?;
        let first = bounds.map_or(seq, |(first, _)| first);
        self.trim(pg, first, seq, max)
    }

    /// Inserts a row pair, sealing the plain `value` (as [`encode_value`] makes it; import
    /// passes the stream's).
    pub(crate) fn insert(
        &mut self,
        pg: PgId,
        key: &[u8],
        seq: u64,
        value: &[u8],
    ) -> Result<(), StoreError> {
        if let Some(old) = self.dups.insert(key, seal(value).as_slice())? {
            // The same reqid recorded again (apply never does this: it answers from the
            // table instead). Keep the index consistent.
            if let Ok((old_seq, _)) = decode_stored(old.value()) {
                drop(old);
                self.seqs.remove(&seq_key(pg, old_seq))?;
            }
        }
        self.seqs.insert(&seq_key(pg, seq), seal(&key[12..]).as_slice())?;
        Ok(())
    }

    /// Drops the oldest entries of `pg` (sequence numbers `first..=last`) beyond `max`.
    pub(crate) fn trim(
        &mut self,
        pg: PgId,
        first: u64,
        last: u64,
        max: usize,
    ) -> Result<(), StoreError> {
        let count = last - first + 1;
        let excess = count.saturating_sub(max as u64);
        let mut key = Vec::new();
        for seq in first..first + excess {
            if let Some(part) = self.seqs.remove(&seq_key(pg, seq))? {
                key.clear();
                key.extend_from_slice(&pg_key(pg));
                key.extend_from_slice(stored_part(part.value()).map_err(|why| corrupt(pg, &why))?);
                drop(part);
                self.dups.remove(key.as_slice())?;
            }
        }
        Ok(())
    }

    /// Deletes every entry of `pg`.
    pub(crate) fn purge(&mut self, pg: PgId) -> Result<(), StoreError> {
        let start = pg_key(pg);
        let end = pg_key_end(pg);
        match &end {
            Some(end) => self.dups.retain_in(start.as_slice()..end.as_slice(), |_, _| false)?,
            None => self.dups.retain_in(start.as_slice().., |_, _| false)?,
        }
        let lo = seq_key(pg, 0);
        let hi = seq_key(pg, u64::MAX);
        self.seqs.retain_in::<&[u8; 20], _>(&lo..=&hi, |_, _| false)?;
        Ok(())
    }
}

/// One stored entry: `(seq, reqid part of the key, value)`.
pub(crate) type DupRow = (u64, Vec<u8>, Vec<u8>);

/// Every entry of `pg`, oldest first.
pub(crate) fn entries<T1, T2>(dups: &T1, seqs: &T2, pg: PgId) -> Result<Vec<DupRow>, StoreError>
where
    T1: ReadableTable<&'static [u8], &'static [u8]>,
    T2: ReadableTable<&'static [u8; 20], &'static [u8]>,
{
    let lo = seq_key(pg, 0);
    let hi = seq_key(pg, u64::MAX);
    let mut out = Vec::new();
    let mut key = Vec::new();
    for item in seqs.range::<&[u8; 20]>(&lo..=&hi)? {
        let (seq_k, part) = item?;
        let seq = u64::from_be_bytes(seq_k.value()[12..].try_into().expect("8 bytes"));
        key.clear();
        key.extend_from_slice(&pg_key(pg));
        let part = stored_part(part.value()).map_err(|why| corrupt(pg, &why))?;
        key.extend_from_slice(part);
        let value = dups.get(key.as_slice())?.ok_or_else(|| corrupt(pg, "index without entry"))?;
        let plain = unseal(value.value()).map_err(|why| corrupt(pg, &why))?;
        out.push((seq, part.to_vec(), plain.to_vec()));
    }
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
