//! A PG's Raft state machine over the OSD's object store.
//!
//! - `apply` hands the whole batch of committed entries to the OSD's apply batcher
//!   ([`super::apply`]), with the new [`PgState`] (last applied log id + membership), so effects
//!   and the applied index land in the same store transaction (shared with other PGs' batches):
//!   after a crash the store says exactly where to resume and Raft re-applies the WAL from
//!   there.
//! - `build_snapshot` is a store checkpoint (fsync) plus the meta captured when the builder
//!   was made: the snapshot *is* the durable store, so openraft may purge the log behind it.
//! - `get_current_snapshot` exports the PG into an unlinked temp file (sent to followers that
//!   fell behind the purged log); `install_snapshot` imports such a file.
//!
//! - Damaged data (`StoreError::Corrupt`, a chunk or value whose crc does not match) met while
//!   applying a committed entry: with more than one voter the replica must not apply a
//!   different result than its peers, so nothing of the batch is applied, the PG is marked
//!   damaged and its repair requested ([`super::repair`], which explains the Raft side), and
//!   apply returns a storage error, which stops the group on this OSD. The same holds for a
//!   snapshot trim step and for an export (a snapshot for a peer). With one voter the batch
//!   is applied command by command and only the command that met the damage fails (EIO):
//!   there is no other replica to differ from or to repair from, and replaying the entry
//!   meets the same damage, so the result is deterministic; the object stays damaged (logged)
//!   until it is rewritten or removed. A damaged duplicate table (which fails every request
//!   of the PG: `quarry_store::is_damaged_dup_table`) is dropped instead, logged, and the
//!   command applied again: a resend of an earlier request is then applied twice, as after a
//!   trim, where the alternative would be a PG that refuses every write.
//!
//! Invariants: `applied` only grows, except when a snapshot is installed; the `pg_state` the
//! store holds always equals (`applied`, `membership`) after apply returns; a replicated PG
//! never commits a batch in which a command met damaged data.

use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::{oneshot, Notify};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};

use quarry_persist::DecodeError;
use quarry_store::{ObjectCommand, PgApply, Placed, PlacedOp, Store, StoreError};
use quarry_types::{ErrorCode, OpReply, OsdId, PgId, SnapId};

use super::apply::{ApplyBatcher, DROPPED};
use super::durability::Durability;
use super::repair::Damage;
use super::{PgCommand, PgRaftConfig, PgState};

type SmResult<T> = Result<T, StorageError<OsdId>>;
type Entry = openraft::Entry<PgRaftConfig>;

/// What a state machine tells the router.
pub(crate) struct Signals {
    /// Woken when a split is applied (the router starts the children).
    pub(crate) split_applied: Arc<Notify>,
    /// Dropped with the state machine: the worker has exited.
    pub(crate) done: oneshot::Sender<()>,
}

/// The state machine of one PG.
pub(crate) struct PgStateMachine {
    pg: PgId,
    store: Arc<Store>,
    applier: Arc<ApplyBatcher>,
    durability: Arc<Durability>,
    /// Marks the PG damaged and requests its repair.
    damage: Arc<Damage>,
    /// Where snapshot temp files are created (unlinked at once).
    snapshot_dir: PathBuf,
    state: PgState,
    /// The first `get_current_snapshot` call comes from openraft's start-up, which keeps only
    /// the meta: answered from the (checkpointed) store without exporting the PG.
    startup_probe_done: bool,
    /// Builds handed out (names snapshot ids uniquely).
    builds: u64,
    /// The recorded `pg_num`, shared with the op path (`PgGroup::pg_num`).
    pg_num: Arc<AtomicU32>,
    /// The recorded seal, shared with the group (`PgGroup::sealed`), set once it is durable.
    sealed: Arc<std::sync::Mutex<Option<LogId<OsdId>>>>,
    /// Woken when a split is applied (the router starts the children).
    split_applied: Arc<Notify>,
    /// The applied membership is one voter and no learner: the PG's log places large writes
    /// ([`super::placer`]).
    solo: Arc<AtomicBool>,
    /// Dropped with the state machine: tells the router the worker has exited.
    _done: oneshot::Sender<()>,
}

impl PgStateMachine {
    /// Opens the state machine of `pg`, reading its `pg_state` from the store. The store must
    /// have been checkpointed since it was opened (so what it shows is durable).
    pub(crate) async fn open(
        pg: PgId,
        store: Arc<Store>,
        applier: Arc<ApplyBatcher>,
        durability: Arc<Durability>,
        damage: Arc<Damage>,
        snapshot_dir: PathBuf,
        signals: Signals,
    ) -> Result<PgStateMachine, StoreError> {
        let Signals { split_applied, done } = signals;
        let reader = store.clone();
        let blob = blocking(move || reader.pg_state(pg)).await?;
        let state = match blob {
            None => PgState::default(),
            Some(bytes) => PgState::decode(&bytes).map_err(|error| match error {
                DecodeError::TooNew(too_new) => StoreError::FormatTooNew {
                    path: store.path().to_path_buf(),
                    found: too_new.found,
                    supported: too_new.supported,
                },
                DecodeError::Invalid { detail, .. } => StoreError::Corrupt {
                    pg,
                    object: String::new(),
                    detail: format!("pg_state blob does not decode: {detail}"),
                },
            })?,
        };
        tracing::debug!(%pg, applied = ?state.applied, "pg state machine opened");
        Ok(PgStateMachine {
            pg,
            store,
            applier,
            durability,
            damage,
            snapshot_dir,
            startup_probe_done: false,
            builds: 0,
            pg_num: Arc::new(AtomicU32::new(state.pg_num)),
            sealed: Arc::new(std::sync::Mutex::new(state.sealed)),
            split_applied,
            solo: Arc::new(AtomicBool::new(is_solo(&state.membership))),
            _done: done,
            state,
        })
    }

    /// Whether the PG's log places large writes (see `solo`).
    pub(crate) fn solo_handle(&self) -> Arc<AtomicBool> {
        self.solo.clone()
    }

    /// The recorded `pg_num`, as the op path sees it.
    pub(crate) fn pg_num_handle(&self) -> Arc<AtomicU32> {
        self.pg_num.clone()
    }

    /// The recorded seal, as the group answers it (`super::merge`).
    pub(crate) fn sealed_handle(&self) -> Arc<std::sync::Mutex<Option<LogId<OsdId>>>> {
        self.sealed.clone()
    }

    /// More than one voter: damaged data stops the PG here instead of failing one command.
    fn replicated(&self) -> bool {
        self.state.membership.membership().voter_ids().count() > 1
    }

    /// If `error` is damaged data in a replicated PG: logs it, marks the PG damaged and
    /// requests its repair; true if so (the caller then fails the whole apply).
    async fn stop_if_damaged(&self, error: &StoreError, during: &str) -> bool {
        if !matches!(error, StoreError::Corrupt { .. }) || !self.replicated() {
            return false;
        }
        let pg = self.pg;
        tracing::error!(%pg, %error, during,
            "damaged data on this replica: the pg stops here, applies nothing more, and is rebuilt from a healthy replica");
        let (damage, detail) = (self.damage.clone(), format!("{during}: {error}"));
        // A synchronous fsync'd write: off the async workers.
        let _ = tokio::task::spawn_blocking(move || damage.report(pg, &detail)).await;
        true
    }

    fn meta(&self, snapshot_id: String) -> SnapshotMeta<OsdId, BasicNode> {
        SnapshotMeta {
            last_log_id: self.state.applied,
            last_membership: self.state.membership.clone(),
            snapshot_id,
        }
    }

    fn snapshot_id(&mut self, kind: &str) -> String {
        self.builds += 1;
        let index = self.state.applied.map(|l| l.index).unwrap_or(0);
        format!("{}-{}-{}-{}", self.pg, kind, index, self.builds)
    }

    /// Applies a batch: one store transaction for the client entries, plus the new pg_state.
    /// A `TrimSnap` entry is applied on its own (its own transaction, with the pg_state naming
    /// it), after the entries before it and before those after it: log order is kept.
    async fn apply_batch(&mut self, entries: Vec<Entry>) -> SmResult<Vec<OpReply>> {
        let count = entries.len();
        let previous = self.state.clone();
        let mut out: Vec<OpReply> = Vec::with_capacity(count);
        let mut segment = Segment::new(&self.state);
        for entry in entries {
            assert!(Some(entry.log_id) > self.state.applied, "entries applied out of order");
            if let EntryPayload::Normal(PgCommand::TrimSnap { snap, max_objects }) = entry.payload {
                let flushed = self.flush(&mut segment, &mut out).await;
                let trimmed = match flushed {
                    Ok(()) => {
                        self.state.applied = Some(entry.log_id);
                        self.trim(snap, max_objects).await
                    }
                    Err(e) => Err(e),
                };
                match trimmed {
                    Ok(reply) => out.push(reply),
                    Err(e) => {
                        self.state = previous;
                        return Err(e);
                    }
                }
                continue;
            }
            if let EntryPayload::Normal(command @ (PgCommand::Seal | PgCommand::Merge { .. })) =
                &entry.payload
            {
                let flushed = self.flush(&mut segment, &mut out).await;
                let applied = match (flushed, command) {
                    (Err(e), _) => Err(e),
                    (Ok(()), PgCommand::Merge { source, sealed }) => {
                        self.merge(*source, *sealed, entry.log_id).await
                    }
                    (Ok(()), _) => self.seal(entry.log_id).await,
                };
                match applied {
                    Ok(reply) => out.push(reply),
                    Err(e) => {
                        self.state = previous;
                        self.pg_num.store(self.state.pg_num, Ordering::Release);
                        return Err(e);
                    }
                }
                continue;
            }
            if let EntryPayload::Normal(PgCommand::Split { pg_num }) = entry.payload {
                let flushed = self.flush(&mut segment, &mut out).await;
                let split = match flushed {
                    Ok(()) => self.split(pg_num, entry.log_id).await,
                    Err(e) => Err(e),
                };
                match split {
                    Ok(reply) => out.push(reply),
                    Err(e) => {
                        self.state = previous;
                        self.pg_num.store(self.state.pg_num, Ordering::Release);
                        return Err(e);
                    }
                }
                continue;
            }
            self.state.applied = Some(entry.log_id);
            segment.pending = true;
            match entry.payload {
                EntryPayload::Blank => out.push(OpReply::Ok(Vec::new())),
                EntryPayload::Normal(
                    PgCommand::Client(ref command) | PgCommand::ClientPlaced { ref command, .. },
                ) if self.state.sealed.is_some()
                    || super::split::moved_out(self.pg, self.state.pg_num, &command.name) =>
                {
                    // Sealed (a merge source): the client resends to the merge target.
                    // The object left this PG in a split: the client resends to its child.
                    // A placed write's blocks are freed with this apply's batch (pending
                    // until it is durable: a replay names them again, reserved at open).
                    if let EntryPayload::Normal(PgCommand::ClientPlaced { placed, .. }) =
                        &entry.payload
                    {
                        let dropped = placed.iter().map(|p| (DROPPED, 0, p.placed()));
                        segment.placed.extend(dropped);
                    }
                    out.push(super::split::misplaced());
                }
                EntryPayload::Normal(PgCommand::Client(command)) => {
                    segment.slots.push(out.len());
                    out.push(OpReply::Ok(Vec::new()));
                    segment.commands.push(command.into());
                    segment.states.ids.push(entry.log_id);
                }
                EntryPayload::Normal(PgCommand::ClientPlaced { command, placed }) => {
                    segment.slots.push(out.len());
                    out.push(OpReply::Ok(Vec::new()));
                    let at = segment.commands.len();
                    segment.placed.extend(placed.iter().map(|p| (at, p.op as usize, p.placed())));
                    segment.commands.push(command.into());
                    segment.states.ids.push(entry.log_id);
                }
                EntryPayload::Normal(
                    PgCommand::TrimSnap { .. }
                    | PgCommand::Split { .. }
                    | PgCommand::Seal
                    | PgCommand::Merge { .. },
                ) => {
                    unreachable!("handled above")
                }
                EntryPayload::Membership(m) => {
                    self.state.membership = StoredMembership::new(Some(entry.log_id), m);
                    self.solo.store(is_solo(&self.state.membership), Ordering::Release);
                    segment.states.changes.push(self.state.membership.clone());
                    out.push(OpReply::Ok(Vec::new()));
                }
            }
        }
        if let Err(e) = self.flush(&mut segment, &mut out).await {
            self.state = previous;
            return Err(e);
        }
        assert_eq!(out.len(), count, "one reply per entry");
        Ok(out)
    }

    /// Applies the entries gathered since the last flush (if any) with the current state.
    async fn flush(&mut self, segment: &mut Segment, out: &mut [OpReply]) -> SmResult<()> {
        if !segment.pending {
            return Ok(());
        }
        let done = std::mem::replace(segment, Segment::new(&self.state));
        let replies = self.store_apply(done.commands, done.placed, done.states).await?;
        for (slot, reply) in done.slots.into_iter().zip(replies) {
            out[slot] = reply;
        }
        Ok(())
    }

    /// Applies a `Split` entry (module `super::split`): records `to` and, from a recorded
    /// `pg_num` below it, moves the objects of the children and creates their states, in one
    /// store transaction with the new pg_state naming the entry. A stale entry (`to` not above
    /// the recorded pg_num) only advances the applied id.
    async fn split(&mut self, to: u32, log_id: LogId<OsdId>) -> SmResult<OpReply> {
        self.state.applied = Some(log_id);
        let (pg, from) = (self.pg, self.state.pg_num);
        let store = self.store.clone();
        if self.state.sealed.is_some() {
            // A sealed PG's data is final (`super::merge`): only the applied id moves.
            return self.record_state().await;
        }
        if from == 0 || to <= from {
            if from == 0 {
                // Not recorded yet (a new PG, or state from before splitting existed): this
                // is the PG's pg_num; nothing moves.
                self.state.pg_num = to;
            }
            let state = self.state.encode();
            let applied = blocking(move || store.apply(pg, &[], &state)).await;
            applied.map_err(|e| sm_write_error(&e))?;
            self.pg_num.store(self.state.pg_num, Ordering::Release);
            self.durability.note_apply();
            return Ok(OpReply::Ok(Vec::new()));
        }
        let children = quarry_placement::split_children(pg.seed, from, to);
        self.state.pg_num = to;
        let child = super::split::child_state(&self.state, to).encode();
        let children: Vec<(u32, Vec<u8>)> =
            children.into_iter().map(|c| (c, child.clone())).collect();
        let parent_state = self.state.encode();
        let seeds: Vec<u32> = children.iter().map(|c| c.0).collect();
        let target = move |name: &str| quarry_placement::pg_of(name, to);
        let split = move || store.split_pg(pg, &target, &parent_state, &children);
        let stats = self.restructure("split", to, split).await?;
        tracing::info!(%pg, from, to, children = ?seeds, objects = stats.objects,
            bytes = stats.bytes, "pg split: objects moved to the children");
        Ok(OpReply::Ok(Vec::new()))
    }

    /// Runs a store change of this PG's layout that records `pg_num` (`what`: a split or a
    /// merge). A failure stops the PG (damaged data is reported for repair first); success
    /// publishes the count and wakes the router (it starts split children and removes a
    /// merged source).
    async fn restructure<T: Send + 'static>(
        &mut self,
        what: &'static str,
        pg_num: u32,
        job: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> SmResult<T> {
        match blocking(job).await {
            Ok(stats) => {
                self.pg_num.store(pg_num, Ordering::Release);
                self.durability.note_apply();
                self.split_applied.notify_one();
                Ok(stats)
            }
            Err(e) => {
                if !self.stop_if_damaged(&e, what).await {
                    tracing::error!(pg = %self.pg, error = %e, "pg {what} failed: stopping the pg");
                }
                Err(sm_write_error(&e))
            }
        }
    }

    /// Applies one `TrimSnap` step with the current state (which names its entry).
    async fn trim(&mut self, snap: SnapId, max_objects: u32) -> SmResult<OpReply> {
        if self.state.sealed.is_some() {
            // A sealed PG's data is final (`super::merge`): only the applied id moves.
            return self.record_state().await;
        }
        let (pg, state, store) = (self.pg, self.state.encode(), self.store.clone());
        let step = match blocking(move || store.apply_trim(pg, snap, max_objects, &state)).await {
            Ok(step) => step,
            Err(e) => {
                if !self.stop_if_damaged(&e, "snapshot trim").await {
                    tracing::error!(%pg, snap, error = %e, "snapshot trim failed: stopping the pg");
                }
                return Err(sm_write_error(&e));
            }
        };
        tracing::debug!(%pg, snap, visited = step.visited, purged = step.purged, "trimmed");
        self.durability.note_apply();
        Ok(OpReply::Ok(Vec::new()))
    }

    /// Writes the current state alone (an entry that changes no object).
    async fn record_state(&mut self) -> SmResult<OpReply> {
        let (pg, state, store) = (self.pg, self.state.encode(), self.store.clone());
        blocking(move || store.apply(pg, &[], &state)).await.map_err(|e| sm_write_error(&e))?;
        self.durability.note_apply();
        Ok(OpReply::Ok(Vec::new()))
    }

    /// Applies a `Seal` entry (module `super::merge`): records its log id (a second seal
    /// keeps the first's) with the new applied id.
    async fn seal(&mut self, log_id: LogId<OsdId>) -> SmResult<OpReply> {
        self.state.applied = Some(log_id);
        let first = self.state.sealed.is_none();
        if first {
            self.state.sealed = Some(log_id);
        }
        let reply = self.record_state().await?;
        if first {
            // Durable before any voter answers it: a target replica that restarts replays its
            // `Merge` and must find this seal in the store, not the last checkpoint's state.
            let store = self.store.clone();
            blocking(move || store.checkpoint()).await.map_err(|e| sm_write_error(&e))?;
            tracing::info!(pg = %self.pg, index = log_id.index, "pg sealed for a merge");
            super::merge::crash_point("seal");
        }
        *self.sealed.lock().unwrap_or_else(|p| p.into_inner()) = self.state.sealed;
        Ok(reply)
    }

    /// Applies a `Merge` entry (module `super::merge`): checks this replica's copy of
    /// `source` is sealed at `sealed` (anything else stops the PG, as damaged data does:
    /// never merge other data), then folds it into this PG in one store transaction with
    /// the new state (`pg_num` = `source`). A stale entry (the recorded `pg_num` at or below
    /// `source`, or this PG not `source`'s target) only advances the applied id. The
    /// recorded `pg_num` may be above `source + 1`: only merges into this PG change it.
    async fn merge(
        &mut self,
        source: u32,
        sealed: LogId<OsdId>,
        log_id: LogId<OsdId>,
    ) -> SmResult<OpReply> {
        self.state.applied = Some(log_id);
        let pg = self.pg;
        let recorded = self.state.pg_num;
        let ours = source >= 1 && quarry_placement::split_parent(source, source) == pg.seed;
        // A target may record more than `source + 1` (see `super::merge::tend`); at or
        // below `source` it merged already (a replay).
        if recorded <= source || !ours || self.state.sealed.is_some() {
            tracing::debug!(%pg, source, recorded, "stale merge entry: nothing to merge");
            return self.record_state().await;
        }
        let source_pg = PgId { pool: pg.pool, seed: source };
        let reader = self.store.clone();
        let found = match blocking(move || reader.pg_state(source_pg)).await {
            Ok(blob) => blob.map(|b| PgState::decode(&b)),
            Err(e) => return Err(sm_write_error(&e)),
        };
        let source_sealed = match &found {
            Some(Ok(state)) => state.sealed,
            _ => None,
        };
        if source_sealed != Some(sealed) {
            let detail = format!(
                "merge of pg {source_pg} sealed at {sealed}: this replica's copy is {}",
                match (&found, source_sealed) {
                    (None, _) => "missing".to_string(),
                    (Some(Err(e)), _) => format!("unreadable ({e})"),
                    (Some(Ok(_)), None) => "not sealed".to_string(),
                    (Some(Ok(_)), Some(other)) => format!("sealed at {other}"),
                }
            );
            tracing::error!(%pg, detail,
                "merge source not as every voter reported it: the pg stops here rather than merge other data");
            if self.replicated() {
                let damage = self.damage.clone();
                let _ = tokio::task::spawn_blocking(move || damage.report(pg, &detail)).await;
            }
            return Err(sm_write_error(&StoreError::Corrupt {
                pg,
                object: String::new(),
                detail: "merge source not sealed as agreed".into(),
            }));
        }
        self.state.pg_num = source;
        let state = self.state.encode();
        let store = self.store.clone();
        // Then the router stops the source's group and the primary reports (`super::merge`).
        let stats = self
            .restructure("merge", source, move || store.merge_pg(source_pg, pg, &state))
            .await?;
        tracing::info!(%pg, source = %source_pg, objects = stats.objects,
            bytes = stats.bytes, "pg merge: objects moved from the source");
        Ok(OpReply::Ok(Vec::new()))
    }

    /// Applies through the batcher with the current state. Damaged data stops a replicated PG
    /// (nothing of the batch is applied); with one voter it fails only its own command.
    async fn store_apply(
        &self,
        commands: Vec<ObjectCommand>,
        placed: Vec<(usize, usize, Placed)>,
        batch: BatchStates,
    ) -> SmResult<Vec<OpReply>> {
        let (pg, state) = (self.pg, self.state.encode());
        let count = commands.len();
        let applied = match self.applier.apply(pg, commands, placed, state.clone()).await {
            Ok((_, _, Err(e))) if self.stop_if_damaged(&e, "apply").await => {
                return Err(sm_write_error(&e));
            }
            Ok((commands, placed, Err(StoreError::Corrupt { object, detail, .. }))) => {
                let what = if object.is_empty() { "damaged pg rows" } else { "corrupt object" };
                tracing::error!(%pg, object, detail, "{what} met while applying");
                let store = self.store.clone();
                blocking(move || apply_one_by_one(&store, pg, &commands, &placed, &batch, &state))
                    .await
            }
            Ok((_, _, result)) => result,
            Err(e) => Err(e),
        };
        let replies = applied.map_err(|e| {
            tracing::error!(pg = %self.pg, error = %e, "store apply failed: stopping the pg");
            sm_write_error(&e)
        })?;
        self.durability.note_apply();
        assert_eq!(replies.len(), count, "the store returns one reply per command");
        Ok(replies)
    }
}

/// Client entries gathered for one store transaction.
struct Segment {
    /// Some entry (client, blank or membership) waits to be applied.
    pending: bool,
    commands: Vec<ObjectCommand>,
    /// Placed writes of the commands: (command, op, where).
    placed: Vec<(usize, usize, Placed)>,
    /// Where each command's reply goes in the batch's reply list.
    slots: Vec<usize>,
    states: BatchStates,
}

impl Segment {
    fn new(state: &PgState) -> Segment {
        let (initial, pg_num, sealed) = (state.membership.clone(), state.pg_num, state.sealed);
        Segment {
            pending: false,
            commands: Vec::new(),
            placed: Vec::new(),
            slots: Vec::new(),
            states: BatchStates { initial, changes: Vec::new(), ids: Vec::new(), pg_num, sealed },
        }
    }
}

/// What the pg_state is after each command of a batch (used only when a batch must be
/// applied command by command, so every intermediate commit names exactly what it holds).
struct BatchStates {
    /// Membership before the batch.
    initial: StoredMembership<OsdId, BasicNode>,
    /// Membership entries of the batch, in order.
    changes: Vec<StoredMembership<OsdId, BasicNode>>,
    /// Log id of each command.
    ids: Vec<LogId<OsdId>>,
    /// The PG's recorded pg_num (unchanged within a batch: a split is applied on its own).
    pg_num: u32,
    /// The PG's seal (unchanged within a batch: a seal is applied on its own).
    sealed: Option<LogId<OsdId>>,
}

impl BatchStates {
    fn after_command(&self, i: usize) -> Vec<u8> {
        let id = self.ids[i];
        let membership = self
            .changes
            .iter()
            .rev()
            .find(|m| m.log_id().as_ref().is_some_and(|l| *l < id))
            .unwrap_or(&self.initial)
            .clone();
        PgState { applied: Some(id), membership, pg_num: self.pg_num, sealed: self.sealed }.encode()
    }
}

/// Applies commands one per transaction after a batch met corrupt data: the damaged object's
/// command fails with EIO, the others apply; each commit carries the pg_state naming its last
/// command, so a crash in between resumes at the right entry.
fn apply_one_by_one(
    store: &Store,
    pg: PgId,
    commands: &[ObjectCommand],
    placed: &[(usize, usize, Placed)],
    batch: &BatchStates,
    final_state: &[u8],
) -> Result<Vec<OpReply>, StoreError> {
    assert_eq!(commands.len(), batch.ids.len(), "one log id per command");
    let mut replies = Vec::with_capacity(commands.len());
    for (i, command) in commands.iter().enumerate() {
        let state = batch.after_command(i);
        let ops: Vec<PlacedOp<'_>> = placed
            .iter()
            .filter(|p| p.0 == i)
            .map(|p| PlacedOp { cmd: 0, op: p.1, placed: &p.2 })
            .collect();
        let cmds = std::slice::from_ref(command);
        let work = PgApply { pg, cmds, pg_state: &state, placed: &ops, dropped: &[] };
        let mut result = store.apply_many(&[work]).map(|mut all| all.pop().unwrap_or_default());
        if matches!(&result, Err(e) if quarry_store::is_damaged_dup_table(e))
            && store.drop_damaged_dups(pg)?
        {
            // The PG's duplicate table is damaged: it held request ids nobody can read, so
            // every request of the PG would fail from now on. With one voter there is no
            // copy to rebuild it from: it is dropped (logged), as a trim would drop it, and
            // the command applied again (a replay from before the drop was durable meets the
            // same damage and does the same; one after it meets the empty table).
            result = store.apply_many(&[work]).map(|mut all| all.pop().unwrap_or_default());
        }
        match result {
            Ok(mut one) => replies.push(one.pop().unwrap_or(OpReply::Ok(Vec::new()))),
            Err(StoreError::Corrupt { .. }) => {
                store.apply(pg, &[], &state)?;
                replies.push(OpReply::Failed { index: 0, code: ErrorCode::EIO })
            }
            Err(e) => return Err(e),
        }
    }
    // The dropped placements (`super::apply::DROPPED`) go with the last commit: its pg_state
    // names every entry of the batch.
    let dropped: Vec<&Placed> = placed.iter().filter(|p| p.0 == DROPPED).map(|p| &p.2).collect();
    let last = PgApply { pg, cmds: &[], pg_state: final_state, placed: &[], dropped: &dropped };
    store.apply_many(&[last])?;
    Ok(replies)
}

/// One voter and no learner (a membership not known yet is not).
fn is_solo(membership: &StoredMembership<OsdId, BasicNode>) -> bool {
    let m = membership.membership();
    m.voter_ids().count() == 1 && m.learner_ids().count() == 0
}

/// Runs a synchronous store call off the async worker threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(StoreError::Io(std::io::Error::other(join.to_string()))),
    }
}

fn sm_write_error(e: &StoreError) -> StorageError<OsdId> {
    StorageError::IO { source: StorageIOError::write_state_machine(e) }
}

fn snapshot_error<E: std::error::Error + 'static>(e: &E, write: bool) -> StorageError<OsdId> {
    let any = openraft::AnyError::new(e);
    let source = if write {
        StorageIOError::write_snapshot(None, any)
    } else {
        StorageIOError::read_snapshot(None, any)
    };
    StorageError::IO { source }
}

/// An unlinked temp file for snapshot data.
fn snapshot_file(dir: &PathBuf) -> SmResult<tokio::fs::File> {
    let file = tempfile::tempfile_in(dir).map_err(|e| snapshot_error(&e, true))?;
    Ok(tokio::fs::File::from_std(file))
}

impl RaftStateMachine<PgRaftConfig> for PgStateMachine {
    type SnapshotBuilder = PgSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> SmResult<(Option<LogId<OsdId>>, StoredMembership<OsdId, BasicNode>)> {
        Ok((self.state.applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> SmResult<Vec<OpReply>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.apply_batch(entries).await
    }

    async fn get_snapshot_builder(&mut self) -> PgSnapshotBuilder {
        let id = self.snapshot_id("ckpt");
        PgSnapshotBuilder {
            pg: self.pg,
            meta: self.meta(id),
            durability: self.durability.clone(),
            // Every apply of this PG so far has returned: a checkpoint covering this sequence
            // covers the meta captured above.
            seq: self.durability.applied_seq(),
            snapshot_dir: self.snapshot_dir.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> SmResult<Box<tokio::fs::File>> {
        Ok(Box::new(snapshot_file(&self.snapshot_dir)?))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<OsdId, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> SmResult<()> {
        let mut file = snapshot.into_std().await;
        let (pg, store) = (self.pg, self.store.clone());
        let raft_meta = meta.clone();
        let imported = blocking(move || {
            file.seek(SeekFrom::Start(0))?;
            store.import_pg(pg, &mut std::io::BufReader::new(file))?;
            // The stream's own pg_state is the exporter's; the meta is what Raft agreed on
            // (the exporter's recorded pg_num is kept: export and meta were taken together).
            let state = PgState::installed(&raft_meta, store.pg_state(pg)?.as_deref());
            store.apply(pg, &[], &state.encode()).map(|_| state)
        })
        .await;
        let state = imported.map_err(|e| {
            tracing::error!(%pg, error = %e, "installing a snapshot failed");
            snapshot_error(&e, true)
        })?;
        self.durability.note_apply();
        // Raft purges the log behind the snapshot once this returns: make it durable first.
        self.durability.checkpoint_now().await.map_err(|e| snapshot_error(&e, true))?;
        tracing::info!(%pg, snapshot = %meta, pg_num = state.pg_num, "snapshot installed");
        self.pg_num.store(state.pg_num, Ordering::Release);
        self.state = state;
        self.solo.store(is_solo(&self.state.membership), Ordering::Release);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SmResult<Option<Snapshot<PgRaftConfig>>> {
        if self.state.applied.is_none() {
            self.startup_probe_done = true;
            return Ok(None);
        }
        let file = if self.startup_probe_done {
            self.export().await?
        } else {
            // openraft's start-up keeps only the meta; the store was checkpointed at open, so
            // the applied state it reports is durable and may stand as the snapshot.
            self.startup_probe_done = true;
            snapshot_file(&self.snapshot_dir)?
        };
        let id = self.snapshot_id("export");
        Ok(Some(Snapshot { meta: self.meta(id), snapshot: Box::new(file) }))
    }
}

impl PgStateMachine {
    /// Exports the PG (consistent with `state`: apply does not run concurrently) into a file.
    async fn export(&self) -> SmResult<tokio::fs::File> {
        let dir = self.snapshot_dir.clone();
        let (pg, store) = (self.pg, self.store.clone());
        let exported = blocking(move || {
            let mut file = tempfile::tempfile_in(&dir)?;
            {
                let mut out = std::io::BufWriter::new(&mut file);
                store.export_pg(pg, &mut out)?;
                std::io::Write::flush(&mut out)?;
            }
            file.seek(SeekFrom::Start(0))?;
            Ok(file)
        })
        .await;
        let file = match exported {
            Ok(file) => file,
            Err(e) => {
                self.stop_if_damaged(&e, "export").await;
                return Err(snapshot_error(&e, false));
            }
        };
        tracing::info!(pg = %self.pg, applied = ?self.state.applied, "pg exported for a follower");
        Ok(tokio::fs::File::from_std(file))
    }
}

/// Builds a snapshot by checkpointing the store: the meta was captured when openraft asked for
/// the builder, in order with the applies it covers.
pub(crate) struct PgSnapshotBuilder {
    pg: PgId,
    meta: SnapshotMeta<OsdId, BasicNode>,
    durability: Arc<Durability>,
    seq: u64,
    snapshot_dir: PathBuf,
}

impl RaftSnapshotBuilder<PgRaftConfig> for PgSnapshotBuilder {
    async fn build_snapshot(&mut self) -> SmResult<Snapshot<PgRaftConfig>> {
        self.durability.ensure(self.seq).await.map_err(|e| {
            tracing::error!(pg = %self.pg, error = %e, "checkpoint failed");
            snapshot_error(&e, true)
        })?;
        tracing::debug!(pg = %self.pg, snapshot = %self.meta, "checkpoint snapshot built");
        // openraft keeps only the meta of a built snapshot; the data is the store itself.
        let file = snapshot_file(&self.snapshot_dir)?;
        Ok(Snapshot { meta: self.meta.clone(), snapshot: Box::new(file) })
    }
}
