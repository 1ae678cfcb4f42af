//! Placement-group state: the openraft type configuration every PG group uses, the command a
//! log entry carries, the Raft group id of a PG, the `pg_state` blob persisted with every
//! apply, and [`PgGroup`], one running Raft group. No sockets here: the network side of Raft
//! is in [`network`], the state machine over the store in [`state_machine`].
//!
//! Two encodings here are persisted and pinned by golden-byte tests (`tests/golden/`):
//! [`PgCommand`] in the WAL (`PG_COMMAND_VERSION ++ bincode`, through
//! [`quarry_raftlog::EntryCodec`]) and [`PgState`] in the store (`PG_STATE_VERSION ++
//! bincode`). Changing either, or any type inside them (`ObjectOp`, `SnapContext`, openraft's
//! `LogId` and `Membership`), needs a new version number and a decoder that still reads the
//! old one: see the upgrade rule in `quarry_persist`.

pub(crate) mod apply;
pub(crate) mod durability;
#[cfg(test)]
mod golden_tests;
pub(crate) mod membership;
pub(crate) mod merge;
pub(crate) mod network;
pub(crate) mod placer;
pub(crate) mod preplace;
pub(crate) mod repair;
pub(crate) mod split;
pub(crate) mod state_machine;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, LogId, StoredMembership};
use serde::{Deserialize, Serialize};

use quarry_persist::version::{self, DecodeError};
use quarry_raftlog::EntryCodec;
use quarry_store::ObjectCommand;
use quarry_types::{EntityReqId, ObjectOp, OpReply, OsdId, PgId, SnapContext, SnapId};

openraft::declare_raft_types!(
    /// The openraft types of a PG group: nodes are OSDs, entries carry one client request,
    /// replies are the store's `OpReply`, snapshots are exported PGs in unlinked temp files.
    pub PgRaftConfig:
        D = PgCommand,
        R = OpReply,
        NodeId = OsdId,
        Node = BasicNode,
        Entry = openraft::Entry<PgRaftConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running PG Raft group.
pub type PgRaft = openraft::Raft<PgRaftConfig>;

/// The payload of one normal log entry, applied by every replica. The WAL stores it as
/// `PG_COMMAND_VERSION ++ bincode(PgCommand)`. bincode 1 has no field names or lengths: any
/// change to this type or a type inside it (adding a field too) makes old entries undecodable,
/// so it needs a new version and a decoder for the old one (module docs).
///
/// Version 2 (this layout) made the command an enum and added the request id; version 1
/// entries (a bare [`PgCommandV1`]) decode as `Client` commands without one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PgCommand {
    /// One client request, applied atomically.
    Client(ClientCommand),
    /// One step of trimming removed snapshot `snap`, proposed by the PG's primary in the
    /// background: at most `max_objects` of the objects the store's snapshot index lists for
    /// it ([`quarry_store::Store::apply_trim`]); the step that finds no object left records
    /// the snapshot as purged by the PG.
    TrimSnap {
        /// The removed snapshot.
        snap: SnapId,
        /// Most objects this step visits.
        max_objects: u32,
    },
    /// The pool now has `pg_num` PGs: proposed by the PG's primary when the map's `pg_num`
    /// is above the one the PG recorded ([`split`]). Applying it moves every object that
    /// `pg_of(name, pg_num)` places in a child PG to that child, in one store transaction
    /// ([`quarry_store::Store::split_pg`]), records `pg_num` in the PG's state and creates
    /// each child's Raft state as if restored from a snapshot at log index 0 with the
    /// parent's membership; the router then starts the children. The same log index on every
    /// replica, so every replica splits at the same point of the PG's history. A stale one
    /// (`pg_num` not above the recorded one) changes nothing. Appended to version 2 (old
    /// entries decode unchanged; pinned in `tests/golden/pg_v2_split.hex`).
    Split {
        /// The pool's new PG count.
        pg_num: u32,
    },
    /// A client request whose large write payloads were placed in the store's data file
    /// when the entry was appended (write-once, [`placer`]): `placed` says where each is.
    /// In the WAL the command's placed payloads are empty (their crc kept); decoded, they
    /// are zeros of their length ([`placer::stand_in`], never read: the apply takes the
    /// placed blocks). Only a PG's own WAL holds this variant: replication reads the payloads
    /// back and sends `Client`. Appended to version 2 (old entries decode unchanged; pinned
    /// in `tests/golden/pg_v2_placed.hex`).
    ClientPlaced {
        /// The request, its placed payloads standing in.
        command: ClientCommand,
        /// Where each placed payload is, by op.
        placed: Vec<PlacedWrite>,
    },
    /// PG merge, source side: this PG (the map's merge source, `PoolInfo::merging`) is
    /// sealed, proposed by its primary when the map marks the merge ([`merge`]). From its
    /// index on, applying it records the seal's log id in the PG's state and every later
    /// client command is answered [`split::misplaced`] (the client retries; at the smaller
    /// `pg_num` it sends to the target), snapshot trims and splits change nothing: the PG's
    /// data is final at the seal and the same on every replica. A second seal keeps the
    /// first's id. Appended to version 2 (old entries decode unchanged; pinned in
    /// `tests/golden/pg_v3_merge.hex`).
    Seal,
    /// PG merge, target side: fold PG `source` of the same pool into this PG, proposed by
    /// this PG's primary once every voter has `source` sealed at exactly `sealed`
    /// ([`merge`]). Applying it checks this replica's copy of `source` is sealed at `sealed`
    /// (anything else stops the PG as damaged data does: it never merges other data), then
    /// moves `source`'s objects in one store transaction
    /// ([`quarry_store::Store::merge_pg`]) and records `pg_num` = `source` (the source was
    /// the last PG). A stale one (the recorded `pg_num` is already at or below `source`)
    /// changes nothing. Appended to version 2 (pinned in `tests/golden/pg_v3_merge.hex`).
    Merge {
        /// The source PG's seed (the pool's last PG).
        source: u32,
        /// The log id of the source's `Seal`, as every voter of this PG reported it.
        sealed: LogId<OsdId>,
    },
}

/// One placed write payload of a [`PgCommand::ClientPlaced`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedWrite {
    /// Index of the op (a `Write` or `WriteFull`) in the command.
    pub op: u32,
    /// First block of the data file.
    pub block: u64,
    /// crc32c of each 4 KiB chunk (the payload is `4096 * crcs.len()` bytes).
    pub crcs: Vec<u32>,
}

impl PlacedWrite {
    /// The store's view of it.
    pub fn placed(&self) -> quarry_store::Placed {
        quarry_store::Placed { block: self.block, crcs: self.crcs.clone() }
    }
}

/// One client request: object, snapshot context, op vector, the proposer's clock, and the
/// request id qualified by the authenticated sender (the PG's duplicate table key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCommand {
    /// The sender's request id (None: never deduplicated).
    pub reqid: Option<EntityReqId>,
    /// Object name.
    pub name: String,
    /// Snapshot context of the writer.
    pub snapc: SnapContext,
    /// Ops, applied atomically.
    pub ops: Vec<ObjectOp>,
    /// The leader's clock at proposal (seconds, nanoseconds): apply is deterministic.
    pub mtime: (u64, u32),
}

/// A version 1 log entry: a client request without a request id. Only decoded (and encoded by
/// the golden tests that pin it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgCommandV1 {
    /// Object name.
    pub name: String,
    /// Snapshot context of the writer.
    pub snapc: SnapContext,
    /// Ops, applied atomically.
    pub ops: Vec<ObjectOp>,
    /// The leader's clock at proposal.
    pub mtime: (u64, u32),
}

impl From<PgCommandV1> for PgCommand {
    fn from(c: PgCommandV1) -> PgCommand {
        PgCommand::Client(ClientCommand {
            reqid: None,
            name: c.name,
            snapc: c.snapc,
            ops: c.ops,
            mtime: c.mtime,
        })
    }
}

impl From<ClientCommand> for ObjectCommand {
    fn from(c: ClientCommand) -> ObjectCommand {
        ObjectCommand { name: c.name, snapc: c.snapc, ops: c.ops, mtime: c.mtime, reqid: c.reqid }
    }
}

/// Version byte in front of a [`PgCommand`] in the WAL.
pub const PG_COMMAND_VERSION: u8 = 2;

/// What errors call a [`PgCommand`] payload.
const PG_COMMAND_WHAT: &str = "PG log entry (PgCommand)";

impl EntryCodec for PgRaftConfig {
    fn encode_data(data: &PgCommand, out: &mut Vec<u8>) {
        if let PgCommand::ClientPlaced { command, placed } = data {
            // The placed payloads are not in the record: emptied, their crc kept.
            let mut command = command.clone();
            for p in placed {
                if let Some(ObjectOp::Write { data, .. } | ObjectOp::WriteFull { data }) =
                    command.ops.get_mut(p.op as usize)
                {
                    data.data = bytes::Bytes::new();
                }
            }
            let stripped = PgCommand::ClientPlaced { command, placed: placed.clone() };
            version::encode_into(out, PG_COMMAND_VERSION, &stripped);
            return;
        }
        version::encode_into(out, PG_COMMAND_VERSION, data);
    }

    fn decode_data(bytes: &[u8]) -> Result<PgCommand, DecodeError> {
        let mut command = match version::split(PG_COMMAND_WHAT, PG_COMMAND_VERSION, bytes)? {
            (1, body) => {
                return version::decode_body::<PgCommandV1>(PG_COMMAND_WHAT, body).map(Into::into)
            }
            (_, body) => version::decode_body(PG_COMMAND_WHAT, body)?,
        };
        if let PgCommand::ClientPlaced { command, placed } = &mut command {
            for p in placed.iter() {
                let len = p.crcs.len() * 4096;
                let op = command.ops.get_mut(p.op as usize);
                let Some(ObjectOp::Write { data, .. } | ObjectOp::WriteFull { data }) = op else {
                    return Err(DecodeError::invalid(PG_COMMAND_WHAT, "placed op is not a write"));
                };
                if !data.data.is_empty() || len > placer::PLACE_MAX {
                    return Err(DecodeError::invalid(PG_COMMAND_WHAT, "bad placed payload"));
                }
                *data = placer::stand_in(len, data.crc);
            }
        }
        Ok(command)
    }
}

/// The Raft group id of a PG in the OSD's shared WAL: `(pool << 32) | seed`.
pub fn group_id(pg: PgId) -> u64 {
    assert!(pg.pool < (1 << 32), "pool id {} does not fit a group id", pg.pool);
    (pg.pool << 32) | u64::from(pg.seed)
}

/// The PG of a Raft group id (inverse of [`group_id`]).
pub fn pg_of_group(group: u64) -> PgId {
    PgId { pool: group >> 32, seed: (group & 0xffff_ffff) as u32 }
}

/// Version byte in front of an encoded [`PgState`]. Version 2 added `pg_num`; version 1
/// blobs decode with `pg_num` 0 (not recorded). Version 3 added `sealed`; older blobs decode
/// unsealed.
const PG_STATE_VERSION: u8 = 3;

/// What the store keeps per PG beside the objects, written in the same transaction as every
/// apply: the last applied log id and the membership, so a restart resumes exactly there, and
/// the pool's PG count as this PG last split to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PgState {
    /// The last log entry whose effects are in the store.
    pub(crate) applied: Option<LogId<OsdId>>,
    /// The last membership applied.
    pub(crate) membership: StoredMembership<OsdId, BasicNode>,
    /// The pool's `pg_num` this PG holds the objects of (set by [`PgCommand::Split`]); 0: not
    /// recorded yet (a new PG, or a version 1 blob), recorded by the primary's first `Split`.
    pub(crate) pg_num: u32,
    /// The log id of the [`PgCommand::Seal`] this PG applied (a merge source): its data is
    /// final from there on ([`merge`]). None: not sealed.
    pub(crate) sealed: Option<LogId<OsdId>>,
}

/// A version 2 [`PgState`] (no `sealed`): only decoded (and encoded by the golden tests).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PgStateV2 {
    /// The last log entry whose effects are in the store.
    pub(crate) applied: Option<LogId<OsdId>>,
    /// The last membership applied.
    pub(crate) membership: StoredMembership<OsdId, BasicNode>,
    /// The recorded `pg_num`.
    pub(crate) pg_num: u32,
}

/// A version 1 [`PgState`] (no `pg_num`): only decoded (and encoded by the golden tests).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PgStateV1 {
    /// The last log entry whose effects are in the store.
    pub(crate) applied: Option<LogId<OsdId>>,
    /// The last membership applied.
    pub(crate) membership: StoredMembership<OsdId, BasicNode>,
}

impl PgState {
    /// `PG_STATE_VERSION ++ bincode(PgState)`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        version::encode(PG_STATE_VERSION, self)
    }

    /// Decodes a blob written by [`PgState::encode`] or a version 1 one (a newer version is
    /// [`DecodeError::TooNew`]).
    pub(crate) fn decode(bytes: &[u8]) -> Result<PgState, DecodeError> {
        match version::split("pg_state", PG_STATE_VERSION, bytes)? {
            (1, body) => version::decode_body::<PgStateV1>("pg_state", body).map(|v1| PgState {
                applied: v1.applied,
                membership: v1.membership,
                pg_num: 0,
                sealed: None,
            }),
            (2, body) => version::decode_body::<PgStateV2>("pg_state", body).map(|v2| PgState {
                applied: v2.applied,
                membership: v2.membership,
                pg_num: v2.pg_num,
                sealed: None,
            }),
            (_, body) => version::decode_body("pg_state", body),
        }
    }

    /// The state a snapshot installs: the meta Raft agreed on, and the `pg_num` of the
    /// exporter's state the imported stream carried (`imported`, the store's pg_state after
    /// the import; the export and its meta were taken together).
    pub(crate) fn installed(
        meta: &openraft::SnapshotMeta<OsdId, BasicNode>,
        imported: Option<&[u8]>,
    ) -> PgState {
        let exported = imported.and_then(|b| PgState::decode(b).ok());
        let (pg_num, sealed) = exported.map_or((0, None), |s| (s.pg_num, s.sealed));
        PgState {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            pg_num,
            sealed,
        }
    }
}

/// One running PG group and what the op path needs to know about it.
pub(crate) struct PgGroup {
    /// The PG.
    pub(crate) pg: PgId,
    /// The Raft handle.
    pub(crate) raft: PgRaft,
    /// `term + 1` of the leadership for which a read barrier passed (0: none yet). Reads are
    /// served from the store only once every entry committed before this leadership began is
    /// applied (after a restart the WAL tail is re-applied first).
    read_ready_term: AtomicU64,
    /// The `pg_num` the PG's applied state records (0: not recorded), kept by its state
    /// machine ([`split`]).
    pg_num: Arc<AtomicU32>,
    /// The seal the PG's applied state records, once durable ([`merge`]).
    sealed: Arc<std::sync::Mutex<Option<LogId<OsdId>>>>,
    /// What this OSD's vote requests met, told by the group's network (read and cleared by
    /// `membership::tend_leadership`).
    pub(crate) votes: Arc<network::VoteFeedback>,
    /// The PG's applied membership is one voter and no learner: its log places large writes
    /// (kept by its state machine).
    solo: Arc<AtomicBool>,
}

/// How long an op waits for its PG's leader to become readable before asking for a retry.
const READ_BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

impl PgGroup {
    pub(crate) fn new(
        pg: PgId,
        raft: PgRaft,
        pg_num: Arc<AtomicU32>,
        sealed: Arc<std::sync::Mutex<Option<LogId<OsdId>>>>,
        votes: Arc<network::VoteFeedback>,
        solo: Arc<AtomicBool>,
    ) -> PgGroup {
        PgGroup { pg, raft, read_ready_term: AtomicU64::new(0), pg_num, sealed, votes, solo }
    }

    /// Whether the PG's log places large writes now (one voter, no learner).
    pub(crate) fn is_solo(&self) -> bool {
        self.solo.load(Ordering::Acquire)
    }

    /// The log id of the seal the PG applied, once durable (None: not sealed).
    pub(crate) fn sealed(&self) -> Option<LogId<OsdId>> {
        *self.sealed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `pg_num` the PG's applied state records (0: not recorded yet).
    pub(crate) fn pg_num(&self) -> u32 {
        self.pg_num.load(Ordering::Acquire)
    }

    /// Leadership is pinned to the PG's primary (`acting[0]`): only it campaigns. Clients
    /// send every op to the primary, so a leader elsewhere could serve nobody; and a PG whose
    /// primary is down is unavailable until it returns (or, later, until the monitor changes
    /// the acting set, which makes another OSD the primary and lets it campaign).
    pub(crate) fn pin_leadership(&self, primary: bool) {
        self.raft.runtime_config().elect(primary);
    }

    /// True once the group's Raft core has stopped on an error (e.g. its state machine met
    /// damaged data): it serves nothing until it is rebuilt and started again.
    pub(crate) fn is_stopped(&self) -> bool {
        self.raft.metrics().borrow().running_state.is_err()
    }

    /// Where the group stands (from openraft's metrics).
    pub(crate) fn status(&self) -> crate::PgStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        crate::PgStatus {
            pg: self.pg,
            leader: m.current_leader,
            applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
        }
    }

    /// True if this OSD leads the group now, and the term it leads in.
    pub(crate) fn leader_term(&self, me: OsdId) -> Option<u64> {
        let metrics = self.raft.server_metrics();
        let m = metrics.borrow();
        let leads = m.current_leader == Some(me) && m.state == openraft::ServerState::Leader;
        leads.then(|| m.vote.leader_id().term)
    }

    /// Waits (bounded) until this OSD leads the group. False: another OSD leads or no
    /// leader emerged in time.
    pub(crate) async fn wait_leader(&self, me: OsdId) -> bool {
        if self.leader_term(me).is_some() {
            return true;
        }
        let wait = self.raft.wait(Some(READ_BARRIER_TIMEOUT));
        let _ = wait.current_leader(me, "pg leader").await;
        self.leader_term(me).is_some()
    }

    /// Waits until this OSD leads the group and every entry committed before the leadership
    /// began is applied, so store reads see every acknowledged write. False: not the leader
    /// (or not in time); the client retries.
    pub(crate) async fn read_barrier(&self, me: OsdId) -> bool {
        if !self.wait_leader(me).await {
            return false;
        }
        let Some(term) = self.leader_term(me) else {
            return false;
        };
        if self.read_ready_term.load(Ordering::Acquire) == term + 1 {
            return true;
        }
        let barrier = tokio::time::timeout(READ_BARRIER_TIMEOUT, self.raft.ensure_linearizable());
        match barrier.await {
            Ok(Ok(_)) => {
                self.read_ready_term.store(term + 1, Ordering::Release);
                tracing::debug!(pg = %self.pg, term, "pg readable");
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(pg = %self.pg, error = %e, "read barrier refused");
                false
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn group_ids_round_trip() {
        for pg in [
            PgId { pool: 0, seed: 0 },
            PgId { pool: 7, seed: 31 },
            PgId { pool: u32::MAX as u64, seed: u32::MAX },
        ] {
            assert_eq!(pg_of_group(group_id(pg)), pg);
        }
        assert_ne!(group_id(PgId { pool: 1, seed: 0 }), group_id(PgId { pool: 0, seed: 1 }));
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn group_id_refuses_huge_pools() {
        group_id(PgId { pool: 1 << 32, seed: 0 });
    }

    #[test]
    fn pg_state_round_trips_and_rejects_garbage() {
        let empty = PgState::default();
        assert_eq!(PgState::decode(&empty.encode()), Ok(empty));
        let nodes = BTreeMap::from([(3u64, BasicNode::new("127.0.0.1:1"))]);
        let membership = openraft::Membership::new(vec![BTreeSet::from([3u64])], nodes);
        let log_id = LogId::new(openraft::CommittedLeaderId::new(2, 3), 17);
        let state = PgState {
            applied: Some(log_id),
            membership: StoredMembership::new(Some(log_id), membership),
            pg_num: 12,
            sealed: Some(log_id),
        };
        let bytes = state.encode();
        assert_eq!(PgState::decode(&bytes), Ok(state.clone()));
        assert!(matches!(PgState::decode(&[]), Err(DecodeError::Invalid { .. })));
        assert!(matches!(PgState::decode(&[0, 1, 2]), Err(DecodeError::Invalid { .. })));
        assert!(matches!(PgState::decode(&[9, 1, 2]), Err(DecodeError::TooNew(_))));
        let v1 = PgStateV1 { applied: state.applied, membership: state.membership.clone() };
        let old = PgState::decode(&version::encode(1, &v1)).unwrap();
        assert_eq!(old, PgState { pg_num: 0, sealed: None, ..state.clone() });
        let v2 =
            PgStateV2 { applied: state.applied, membership: state.membership.clone(), pg_num: 12 };
        let old = PgState::decode(&version::encode(2, &v2)).unwrap();
        assert_eq!(old, PgState { sealed: None, ..state.clone() });
        assert!(PgState::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
