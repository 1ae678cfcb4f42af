//! Write-once for large client writes ([`quarry_raftlog::Placer`] over the OSD's store): when
//! a PG's entry is appended to the WAL (the leader at proposal, a follower when it receives
//! it, each in the PG's log order), the payload of each large write op (at least
//! [`PLACE_MIN`] bytes, whole 4 KiB chunks at a chunk boundary, at most [`PLACE_MAX`]) is
//! placed in the store's data file ([`quarry_store::Store::place`]) and the entry's record
//! carries [`PgCommand::ClientPlaced`]: the command without those payloads plus where they
//! are. The WAL's sync hook ([`quarry_store::Store::sync_placed`], installed at start)
//! makes the data durable before the record is written; the apply claims the blocks (the
//! rows take them: the data is written once, not into the log and again at apply). The
//! store's allocator is rebuilt at open with the placements of the entries above each PG's
//! applied index ([`placements_in_log`]).
//!
//! Only PGs whose applied membership is one voter and no learner place (size-1 pools):
//! replicated PGs keep whole entries in the log. Replication still works for entries placed
//! while a PG was alone (a learner added later): the Raft network client reads the payloads
//! back before sending ([`rehydrate`]), each 4 KiB chunk checked against the crc the entry
//! carries, so a peer never receives other data; an entry whose blocks were reused since it
//! was applied (its object overwritten, a checkpoint passed) fails that read instead, and the
//! call is reported unreachable (openraft retries; the learner then needs a snapshot). A
//! peer refuses a `ClientPlaced` entry that reaches it anyway.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use openraft::EntryPayload;
use quarry_raftlog::{EntryCodec, Placer, Wal};
use quarry_store::{Placed, Store};
use quarry_types::{ObjectOp, Payload, PgId};

use super::{group_id, pg_of_group, ClientCommand, PgCommand, PgRaftConfig, PgState, PlacedWrite};

/// Write ops of at least this many bytes are placed.
pub(crate) const PLACE_MIN: usize = 64 << 10;

/// Write ops of more than this many bytes stay in the log (the stand-in payload of a placed
/// op is a slice of a static zero buffer of this size).
pub(crate) const PLACE_MAX: usize = 16 << 20;

/// What a placed op's payload is in memory after decoding: zeros of its length, never read
/// (the apply takes the placed blocks). In `.bss`: no memory is spent on it.
static ZEROS: [u8; PLACE_MAX] = [0; PLACE_MAX];

/// The stand-in payload of a placed op of `len` bytes with the client's `crc`.
pub(crate) fn stand_in(len: usize, crc: u32) -> Payload {
    Payload { data: Bytes::from_static(&ZEROS[..len.min(PLACE_MAX)]), crc }
}

/// Whether op `op` is placed (see the module docs).
fn placeable(op: &ObjectOp) -> Option<&Payload> {
    let (off, data) = match op {
        ObjectOp::Write { off, data } => (*off, data),
        ObjectOp::WriteFull { data } => (0, data),
        _ => return None,
    };
    let len = data.len();
    let whole = off % 4096 == 0 && len % 4096 == 0;
    (whole && (PLACE_MIN..=PLACE_MAX).contains(&len)).then_some(data)
}

/// The store side of one PG's write-once path.
pub(crate) struct PgPlacer {
    store: Arc<Store>,
    /// The PG's applied membership is one voter and no learner (kept by its state machine).
    solo: Arc<AtomicBool>,
}

impl PgPlacer {
    pub(crate) fn new(store: Arc<Store>, solo: Arc<AtomicBool>) -> PgPlacer {
        PgPlacer { store, solo }
    }

    /// Places the large payloads of `command`; None if it has none (or placing failed: the
    /// entry then carries them, as before).
    fn place(&self, command: &ClientCommand) -> Option<PgCommand> {
        let mut placed: Vec<PlacedWrite> = Vec::new();
        for (i, op) in command.ops.iter().enumerate() {
            let Some(data) = placeable(op) else { continue };
            match self.store.place(&data.data) {
                Ok(Placed { block, crcs }) => placed.push(PlacedWrite { op: i as u32, block, crcs }),
                Err(error) => {
                    tracing::warn!(%error, "placing a large write failed: it goes into the log");
                    for p in &placed {
                        self.store.release_placed(&p.placed());
                    }
                    return None;
                }
            }
        }
        if placed.is_empty() {
            return None;
        }
        Some(PgCommand::ClientPlaced { command: command.clone(), placed })
    }
}

impl Placer<PgRaftConfig> for PgPlacer {
    fn encode(&self, data: &PgCommand, out: &mut Vec<u8>) {
        if let PgCommand::Client(command) = data {
            if self.solo.load(Ordering::Acquire) {
                if let Some(placed) = self.place(command) {
                    PgRaftConfig::encode_data(&placed, out);
                    return;
                }
            }
        }
        PgRaftConfig::encode_data(data, out);
    }

    fn release(&self, data: &PgCommand) {
        if let PgCommand::ClientPlaced { placed, .. } = data {
            for p in placed {
                self.store.release_placed(&p.placed());
            }
        }
    }
}

/// `command` with its placed payloads read back from `store` (each chunk checked against
/// its crc): what a peer is sent ([`PgCommand::ClientPlaced`] never leaves the OSD).
pub(crate) fn rehydrate(store: &Store, data: PgCommand) -> Result<PgCommand, String> {
    let PgCommand::ClientPlaced { mut command, placed } = data else {
        return Ok(data);
    };
    for p in &placed {
        let mut buf = vec![0u8; p.crcs.len() * 4096];
        store.read_placed(&p.placed(), &mut buf).map_err(|e| e.to_string())?;
        let Some(op) = command.ops.get_mut(p.op as usize) else {
            return Err(format!("placed op {} out of range", p.op));
        };
        match op {
            ObjectOp::Write { data, .. } | ObjectOp::WriteFull { data } => {
                data.data = Bytes::from(buf);
            }
            _ => return Err(format!("placed op {} is not a write", p.op)),
        }
    }
    Ok(PgCommand::Client(command))
}

/// The placements `(block, blocks)` of the entries in `wal` above each PG's applied index
/// (`states`: the store's `pg_state` blobs): what the store's allocator must keep reserved
/// at open ([`quarry_store::StoreOptions::placements_at_open`]). A group whose entries do not
/// read or decode is logged and skipped (it cannot start either).
pub(crate) fn placements_in_log(wal: &Arc<Wal>, states: &BTreeMap<PgId, Vec<u8>>) -> Vec<(u64, u64)> {
    let mut found = Vec::new();
    for group in wal.groups() {
        let pg = pg_of_group(group);
        if group_id(pg) != group {
            continue;
        }
        let applied = match states.get(&pg).map(|b| PgState::decode(b)) {
            Some(Ok(state)) => state.applied.map_or(0, |id| id.index),
            Some(Err(error)) => {
                tracing::error!(%pg, %error, "pg_state does not decode: its placed writes are not reserved");
                continue;
            }
            None => 0,
        };
        let log = wal.log_store::<PgRaftConfig>(group);
        let Some(last) = log.last_index() else { continue };
        if last <= applied {
            continue;
        }
        let entries = match log.read_blocking(applied + 1, last + 1) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::error!(%pg, %error, "reading the log for placed writes failed");
                continue;
            }
        };
        for entry in entries {
            if let EntryPayload::Normal(PgCommand::ClientPlaced { placed, .. }) = &entry.payload {
                found.extend(placed.iter().map(|p| (p.block, p.crcs.len() as u64)));
            }
        }
    }
    found
}
