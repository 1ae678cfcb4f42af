//! Damaged PG replicas: the persistent damage marks, the staging of PG exports for peers, and
//! the rebuild of a damaged replica's state machine from a healthy peer's export.
//!
//! # Why a replica stops instead of failing one command
//! Every replica applies every committed entry, and apply is deterministic: that is what
//! keeps replicas equal. A chunk whose crc does not match (bit rot, a bad sector) makes a
//! read-modify-write on that replica impossible; failing only that command (EIO) there while
//! the others apply it would make the replicas differ forever (and a leader with the bad
//! chunk would answer EIO for a write its followers applied). So, with more than one voter,
//! a replica that meets `StoreError::Corrupt` while applying (or trimming, or exporting) does
//! not apply a different result: nothing of the batch is committed, the PG is marked damaged
//! on disk ([`DamageMarks`], `DATA/damaged/<pg>`), the error is logged, and the state machine
//! returns a storage error, which stops the PG's Raft group on this OSD (openraft treats it as
//! fatal). The other replicas go on; the PG keeps its majority while one replica is damaged.
//! With one voter there is nobody to diverge from and no copy to repair from: the command
//! fails alone with EIO (deterministically, again on replay) and the object stays damaged
//! (`state_machine`).
//!
//! A read that meets damaged data on the primary of a replicated PG (`op`) marks the PG the
//! same way while its group still runs; the rebuild below then fetches the export first and
//! stops the group only to install it.
//!
//! # How the replica is rebuilt (Raft's install-snapshot, done locally)
//! The repair worker (`worker::repair`) asks the PG's other replicas (the primary first) for
//! an export of the PG ([`fetch`]: the PG export format 3 of the Raft snapshots, which
//! carries the peer's `pg_state`, i.e. its last applied log id `L` and membership; staged in
//! [`Exports`] and read in chunks).
//! The router then takes the group out (stopping it if it still runs) and [`install`] does
//! what openraft's install-snapshot does, with the group stopped:
//! - Its vote and log are kept: never wipe a voter's log (it may be part of the majority that
//!   committed an entry nobody else has applied yet).
//! - Log Matching: if the local log holds an entry at `L.index`, it is kept with everything
//!   after it when its log id equals `L` (then every local entry up to `L` equals the
//!   leader's). If it differs, that local entry is not committed (`L` is, since a replica
//!   applied it), and neither is any local entry after it (a committed entry after `L` would
//!   have the committed `L` before it, and by Log Matching the local log would hold `L`): they
//!   are truncated, durably (a re-saved vote is the barrier, the WAL commits in order).
//! - The snapshot must not be behind the local purge point (`L >= last_purged`): the entries
//!   between them would be gone from both the store and the log. Such a peer is skipped (the
//!   repair retries later, when peers have applied more).
//! - `Store::import_pg` replaces the PG (durably, all or nothing), the `pg_state` becomes
//!   (`L`, membership), the store is checkpointed, and only then the mark is removed.
//! - The store may go back: a replica that had applied past `L` (a primary rebuilt from a
//!   lagging follower) returns to `L` while its group is stopped (nobody reads it), and its
//!   log still holds every entry after `L` (its purge point is `<= L`), so it re-applies the
//!   committed ones. Nothing acknowledged can be lost: an acknowledged write is on a
//!   majority's logs, and the repair removes only uncommitted entries from a log; the export
//!   is the deterministic result of the committed prefix up to `L`, what every replica's
//!   store holds once it applied `L`.
//!
//! The group is then started again from the store and the WAL, as after a restart: openraft
//! re-applies the committed local entries after `L` (possibly the very entry that met the
//! damage: now over the peer's good chunks, with the same result the peers got), purges the
//! log up to `L` if it ends before it, and catches up from the leader. A crash anywhere in
//! between leaves the mark, so the next start repairs again (every step is idempotent).
//!
//! If the damaged replica is the primary, its group stops and, leadership being pinned to the
//! primary (`PgGroup::pin_leadership`), nobody else campaigns: the PG is unavailable (clients
//! get `Retry` and resend; the duplicate table answers a resend of a write that did apply)
//! until the primary has rebuilt itself from a follower's export, which takes seconds. A
//! follower that has not applied up to the primary's purge point cannot serve it; the repair
//! retries until one can (a stuck repair keeps the PG unavailable: see the health report).
//!
//! The export served to a peer is a consistent snapshot of the peer's store (one read
//! transaction, holding the `pg_state` it is at, i.e. exactly the entries up to `L` applied);
//! serving it neither changes nor stalls the peer.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::{BasicNode, SnapshotMeta};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use quarry_raftlog::WalLogStore;
use quarry_types::{OsdId, PgId};

use super::durability::Durability;
use super::network::{Peers, RaftRpc, RaftRpcReply};
use super::state_machine::blocking;
use super::{PgRaftConfig, PgState};

/// Bytes of a staged export sent per request.
pub(crate) const EXPORT_CHUNK: u64 = 4 << 20;
/// A staged export not read for this long is dropped.
const EXPORT_IDLE: Duration = Duration::from_secs(120);
/// Exports staged at once on one OSD (each is a temp file of a whole PG).
const EXPORTS_MAX: usize = 8;
/// How long a peer may take to export a PG.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one chunk read may take.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// The persistent damage marks: one file per damaged PG in `DATA/damaged/`, named like the
/// PG (`1.1f`), holding the reason. Written (atomically, synced) before the state machine
/// reports the failure; removed once the PG was rebuilt and checkpointed.
pub(crate) struct DamageMarks {
    dir: PathBuf,
}

impl DamageMarks {
    pub(crate) fn new(dir: PathBuf) -> DamageMarks {
        DamageMarks { dir }
    }

    fn path(&self, pg: PgId) -> PathBuf {
        self.dir.join(pg.to_string())
    }

    /// Marks `pg` damaged, durably.
    pub(crate) fn mark(&self, pg: PgId, detail: &str) -> Result<(), quarry_persist::FsError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| quarry_persist::FsError {
            action: "creating",
            path: self.dir.clone(),
            source,
        })?;
        quarry_persist::write_atomic(&self.path(pg), format!("{detail}\n").as_bytes(), 0o644)
    }

    /// Removes the mark of `pg`, durably (no mark: nothing to do).
    pub(crate) fn clear(&self, pg: PgId) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(pg)) {
            Ok(()) => quarry_persist::sync_dir(&self.dir).map_err(|e| e.source),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// True if `pg` is marked damaged.
    pub(crate) fn contains(&self, pg: PgId) -> bool {
        self.path(pg).exists()
    }

    /// Every PG marked damaged, in order (unreadable names are skipped).
    pub(crate) fn list(&self) -> Vec<PgId> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<PgId> =
            dir.flatten().filter_map(|e| parse_pg(&e.file_name().to_string_lossy())).collect();
        out.sort();
        out
    }
}

/// `1.1f` (pool decimal, seed hex) to a PG id.
fn parse_pg(name: &str) -> Option<PgId> {
    let (pool, seed) = name.split_once('.')?;
    Some(PgId { pool: pool.parse().ok()?, seed: u32::from_str_radix(seed, 16).ok()? })
}

/// What a PG's state machine uses to report damage: marks it and asks the repair worker to
/// rebuild it.
pub(crate) struct Damage {
    pub(crate) marks: DamageMarks,
    requests: mpsc::UnboundedSender<PgId>,
}

impl Damage {
    pub(crate) fn new(marks: DamageMarks, requests: mpsc::UnboundedSender<PgId>) -> Damage {
        Damage { marks, requests }
    }

    /// Marks `pg` damaged (logged if that fails: the repair still runs in this process) and
    /// requests its repair.
    pub(crate) fn report(&self, pg: PgId, detail: &str) {
        if let Err(e) = self.marks.mark(pg, detail) {
            tracing::error!(%pg, error = %e, "cannot record the pg as damaged");
        }
        self.request(pg);
    }

    /// Asks the repair worker to rebuild `pg` (it ignores a PG already being repaired).
    pub(crate) fn request(&self, pg: PgId) {
        let _ = self.requests.send(pg);
    }
}

/// What a peer answers to [`RaftRpc::Export`]: the staged export's id, its Raft meta (last
/// applied log id and membership of the exporting replica) and its length.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ExportInfo {
    pub(crate) id: u64,
    pub(crate) meta: SnapshotMeta<OsdId, BasicNode>,
    pub(crate) len: u64,
}

/// PG exports staged for peers that rebuild a damaged replica, read in chunks.
pub(crate) struct Exports {
    store: Arc<quarry_store::Store>,
    /// Where the unlinked temp files go.
    dir: PathBuf,
    inner: Mutex<StagedExports>,
}

#[derive(Default)]
struct StagedExports {
    next: u64,
    files: HashMap<u64, Staged>,
}

struct Staged {
    pg: PgId,
    file: std::fs::File,
    len: u64,
    touched: Instant,
}

impl Exports {
    pub(crate) fn new(store: Arc<quarry_store::Store>, dir: PathBuf) -> Exports {
        Exports { store, dir, inner: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StagedExports> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stages `file` (an export of `pg`); its id, or why not.
    fn stage(&self, pg: PgId, file: std::fs::File, len: u64) -> Result<u64, String> {
        let mut staged = self.lock();
        staged.files.retain(|_, s| s.touched.elapsed() < EXPORT_IDLE);
        if staged.files.len() >= EXPORTS_MAX {
            return Err(format!("{EXPORTS_MAX} exports are staged already: try later"));
        }
        staged.next += 1;
        let id = staged.next;
        staged.files.insert(id, Staged { pg, file, len, touched: Instant::now() });
        Ok(id)
    }

    /// Where the chunk of export `id` of `pg` at `offset` is: a handle of the export's file
    /// and the chunk's length (up to [`EXPORT_CHUNK`] bytes); the export is dropped once its
    /// last chunk was asked for (the handle keeps the unlinked file).
    fn chunk(&self, pg: PgId, id: u64, offset: u64) -> Result<(std::fs::File, usize), String> {
        let mut staged = self.lock();
        let Some(s) = staged.files.get_mut(&id).filter(|s| s.pg == pg) else {
            return Err(format!("no staged export {id} of pg {pg}"));
        };
        s.touched = Instant::now();
        let n = s.len.saturating_sub(offset).min(EXPORT_CHUNK) as usize;
        let file = s.file.try_clone().map_err(|e| format!("reading export: {e}"))?;
        if offset + n as u64 >= s.len {
            staged.files.remove(&id);
        }
        Ok((file, n))
    }
}

/// Serves [`RaftRpc::Export`] for this OSD's running group of `pg`: exports the PG from one
/// store read transaction (applies go on meanwhile; the state machine is not involved) and
/// names the state the export holds by its own `pg_state`. Damaged data here fails the
/// request only (logged by the store): this replica goes on serving the PG, and is rebuilt
/// once it meets the damage itself; stopping it here could stop every replica of a PG in
/// which two have some damage.
pub(crate) async fn serve_export(exports: &Exports, pg: PgId) -> Result<ExportInfo, String> {
    let (store, dir) = (exports.store.clone(), exports.dir.clone());
    let exported = blocking(move || {
        let mut file = tempfile::tempfile_in(&dir)?;
        let state = {
            let mut out = std::io::BufWriter::new(&mut file);
            let state = store.export_pg_with_state(pg, &mut out)?;
            out.flush()?;
            state
        };
        let len = file.seek(SeekFrom::End(0))?;
        Ok((file, state, len))
    })
    .await;
    let (file, state, len) = exported.map_err(|e| format!("exporting pg {pg}: {e}"))?;
    let Some(state) = state else {
        return Err(format!("pg {pg} has applied nothing here"));
    };
    let state = PgState::decode(&state).map_err(|e| format!("pg {pg}: {e}"))?;
    if state.applied.is_none() {
        return Err(format!("pg {pg} has applied nothing here"));
    }
    let id = exports.stage(pg, file, len)?;
    let index = state.applied.map(|l| l.index).unwrap_or(0);
    let meta = SnapshotMeta {
        last_log_id: state.applied,
        last_membership: state.membership,
        snapshot_id: format!("{pg}-repair-{index}-{id}"),
    };
    tracing::info!(%pg, snapshot = %meta, len, "pg export staged for a peer's repair");
    Ok(ExportInfo { id, meta, len })
}

/// Serves [`RaftRpc::ExportRead`].
/// The chunk is read on a blocking thread: the request may be running on its connection's
/// reader (`quarry_wire::conn::serve`), which also carries the peer's appends and heartbeats.
pub(crate) async fn serve_read(
    exports: &Exports,
    pg: PgId,
    id: u64,
    offset: u64,
) -> Result<Vec<u8>, String> {
    let (file, n) = exports.chunk(pg, id, offset)?;
    blocking(move || {
        let mut buf = vec![0u8; n];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    })
    .await
    .map_err(|e| format!("reading export: {e}"))
}

/// Fetches an export of `pg` (Raft group `group`) from `peer` into an unlinked temp file in
/// `dir`; returns its meta and the file, positioned at its start.
pub(crate) async fn fetch(
    peers: &Peers,
    peer: OsdId,
    group: u64,
    dir: &Path,
) -> Result<(SnapshotMeta<OsdId, BasicNode>, std::fs::File), String> {
    let info = match peers.call(peer, None, group, &RaftRpc::Export, EXPORT_TIMEOUT).await {
        Ok(RaftRpcReply::Export(Ok(info))) => info,
        Ok(RaftRpcReply::Export(Err(why))) => return Err(format!("osd.{peer}: {why}")),
        Ok(_) => return Err(format!("osd.{peer} answered another raft reply")),
        Err(e) => return Err(e.to_string()),
    };
    let mut file = tempfile::tempfile_in(dir).map_err(|e| format!("temp file: {e}"))?;
    let mut offset = 0u64;
    while offset < info.len {
        let rpc = RaftRpc::ExportRead { id: info.id, offset };
        let bytes = match peers.call(peer, None, group, &rpc, CHUNK_TIMEOUT).await {
            Ok(RaftRpcReply::ExportRead(Ok(bytes))) => bytes,
            Ok(RaftRpcReply::ExportRead(Err(why))) => return Err(format!("osd.{peer}: {why}")),
            Ok(_) => return Err(format!("osd.{peer} answered another raft reply")),
            Err(e) => return Err(e.to_string()),
        };
        if bytes.is_empty() {
            return Err(format!("osd.{peer}: export ended at {offset} of {}", info.len));
        }
        file.write_all(&bytes).map_err(|e| format!("temp file: {e}"))?;
        offset += bytes.len() as u64;
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| format!("temp file: {e}"))?;
    Ok((info.meta, file))
}

/// Why an export cannot be installed now.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InstallError {
    /// The export is behind the local purge point (module docs).
    #[error("the export ends at {export:?}, behind the log purged up to {purged:?}")]
    Behind {
        /// The export's last applied log id.
        export: Option<openraft::LogId<OsdId>>,
        /// The local purge point.
        purged: Option<openraft::LogId<OsdId>>,
    },
    /// The log or the store failed.
    #[error("{0}")]
    Storage(String),
}

/// Installs an export of `pg` (meta + file) over the stopped group's state machine, keeping
/// its vote and the log entries Log Matching allows (module docs).
pub(crate) async fn install(
    pg: PgId,
    log: &mut WalLogStore<PgRaftConfig>,
    store: &Arc<quarry_store::Store>,
    durability: &Durability,
    meta: SnapshotMeta<OsdId, BasicNode>,
    file: std::fs::File,
) -> Result<(), InstallError> {
    let storage = |e: &dyn std::fmt::Display| InstallError::Storage(e.to_string());
    let state = log.get_log_state().await.map_err(|e| storage(&e))?;
    if meta.last_log_id < state.last_purged_log_id {
        return Err(InstallError::Behind {
            export: meta.last_log_id,
            purged: state.last_purged_log_id,
        });
    }
    if let Some(at) = meta.last_log_id {
        let purged_before = state.last_purged_log_id.is_none_or(|p| p.index < at.index);
        let holds = state.last_log_id.is_some_and(|l| l.index >= at.index) && purged_before;
        if holds {
            let entries =
                log.try_get_log_entries(at.index..=at.index).await.map_err(|e| storage(&e))?;
            match entries.first() {
                Some(entry) if entry.log_id == at => {}
                Some(entry) => {
                    tracing::warn!(%pg, local = %entry.log_id, export = %at,
                        "local log diverges at the export's last entry: truncating the uncommitted tail");
                    log.truncate(entry.log_id).await.map_err(|e| storage(&e))?;
                    // The WAL commits records in order: a durable vote makes the truncation
                    // durable too.
                    if let Some(vote) = log.read_vote().await.map_err(|e| storage(&e))? {
                        log.save_vote(&vote).await.map_err(|e| storage(&e))?;
                    }
                }
                None => {
                    return Err(InstallError::Storage(format!("log entry {} missing", at.index)))
                }
            }
        }
    }
    let store = store.clone();
    blocking(move || {
        let mut input = std::io::BufReader::new(file);
        store.import_pg(pg, &mut input)?;
        // The stream's own pg_state is the exporter's, equal to the meta; written again so
        // the state is exactly what the meta says (with the exporter's recorded pg_num).
        let blob = PgState::installed(&meta, store.pg_state(pg)?.as_deref()).encode();
        store.apply(pg, &[], &blob).map(|_| ())
    })
    .await
    .map_err(|e| storage(&e))?;
    durability.note_apply();
    durability.checkpoint_now().await.map_err(|e| storage(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let marks = DamageMarks::new(dir.path().join("damaged"));
        assert!(marks.list().is_empty());
        let pg = PgId { pool: 3, seed: 0x1f };
        marks.mark(pg, "chunk crc mismatch").unwrap();
        assert!(marks.contains(pg));
        let again = DamageMarks::new(dir.path().join("damaged"));
        assert_eq!(again.list(), vec![pg]);
        again.clear(pg).unwrap();
        again.clear(pg).unwrap();
        assert!(!marks.contains(pg));
        assert_eq!(parse_pg("1.1f"), Some(PgId { pool: 1, seed: 31 }));
        assert_eq!(parse_pg("x"), None);
    }

    #[tokio::test]
    async fn staged_exports_are_read_in_chunks_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(quarry_store::Store::open(&dir.path().join("store.redb")).unwrap());
        let exports = Exports::new(store, dir.path().to_path_buf());
        let pg = PgId { pool: 1, seed: 2 };
        let mut file = tempfile::tempfile().unwrap();
        let len = EXPORT_CHUNK + 10;
        file.write_all(&vec![7u8; len as usize]).unwrap();
        let id = exports.stage(pg, file, len).unwrap();
        let other = PgId { pool: 1, seed: 3 };
        assert!(serve_read(&exports, other, id, 0).await.is_err(), "another pg");
        let first = serve_read(&exports, pg, id, 0).await.unwrap();
        assert_eq!(first.len() as u64, EXPORT_CHUNK);
        let last = serve_read(&exports, pg, id, EXPORT_CHUNK).await.unwrap();
        assert_eq!(last, vec![7u8; 10]);
        assert!(first.iter().all(|&b| b == 7));
        assert!(serve_read(&exports, pg, id, 0).await.is_err(), "dropped after the last chunk");
    }

    mod install {
        use super::super::*;
        use openraft::storage::RaftLogStorageExt;
        use openraft::{
            CommittedLeaderId, Entry, EntryPayload, LogId, Membership, StoredMembership,
        };
        use quarry_raftlog::{Wal, WalOptions};
        use quarry_store::{ObjectCommand, Store};
        use quarry_types::{ObjectOp, Payload, SnapContext};
        use std::collections::{BTreeMap, BTreeSet};

        const PG: PgId = PgId { pool: 1, seed: 0 };

        fn id(term: u64, index: u64) -> LogId<OsdId> {
            LogId::new(CommittedLeaderId::new(term, 0), index)
        }

        fn membership() -> StoredMembership<OsdId, BasicNode> {
            let nodes: BTreeMap<OsdId, BasicNode> =
                (0..3).map(|n| (n, BasicNode::new(format!("127.0.0.1:{}", 7000 + n)))).collect();
            StoredMembership::new(
                Some(id(0, 0)),
                Membership::new(vec![BTreeSet::from([0, 1, 2])], nodes),
            )
        }

        /// An export of a PG holding object `o` = `byte`, at `applied`.
        fn export(
            dir: &Path,
            applied: LogId<OsdId>,
            byte: u8,
        ) -> (SnapshotMeta<OsdId, BasicNode>, std::fs::File) {
            let store =
                Store::open(&dir.join(format!("src-{}-{}.redb", applied.index, byte))).unwrap();
            let state = PgState {
                applied: Some(applied),
                membership: membership(),
                pg_num: 0,
                sealed: None,
            };
            let write = ObjectCommand {
                name: "o".into(),
                snapc: SnapContext::default(),
                ops: vec![ObjectOp::WriteFull { data: Payload::new(vec![byte; 100]) }],
                mtime: (1, 0),
                reqid: None,
            };
            store.apply(PG, &[write], &state.encode()).unwrap();
            let mut file = tempfile::tempfile().unwrap();
            store.export_pg(PG, &mut file).unwrap();
            file.seek(SeekFrom::Start(0)).unwrap();
            let meta = SnapshotMeta {
                last_log_id: Some(applied),
                last_membership: membership(),
                snapshot_id: "t".into(),
            };
            (meta, file)
        }

        fn blank(term: u64, index: u64) -> Entry<PgRaftConfig> {
            Entry { log_id: id(term, index), payload: EntryPayload::<PgRaftConfig>::Blank }
        }

        async fn log_ids(log: &mut WalLogStore<PgRaftConfig>) -> Vec<LogId<OsdId>> {
            log.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id).collect()
        }

        fn data(store: &Store) -> Vec<u8> {
            let ops = [ObjectOp::Read { off: 0, len: 100 }];
            match store.read(PG, "o", quarry_types::SNAP_HEAD, &ops).unwrap() {
                quarry_types::OpReply::Ok(out) => match out.first() {
                    Some(quarry_types::OpOutput::Data(p)) => p.data.to_vec(),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
        }

        /// Goal: the install keeps the local log when its entry at the export's index is the
        /// export's (Log Matching), truncates it from there when it differs (an uncommitted
        /// tail), refuses an export behind the local purge point, keeps the vote, and leaves
        /// the store at the export's state. Method: a real WAL and store; 5 local entries of
        /// term 1; exports at (1,3), then (2,4), then one behind a purge.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn install_follows_log_matching() {
            let dir = tempfile::tempdir().unwrap();
            let wal = Wal::open(&dir.path().join("wal"), WalOptions::default()).unwrap();
            let store = Arc::new(Store::open(&dir.path().join("store.redb")).unwrap());
            let durability = Durability::new(store.clone());
            let mut log = wal.log_store::<PgRaftConfig>(crate::pg::group_id(PG));
            let vote = openraft::Vote::new_committed(1, 0);
            log.save_vote(&vote).await.unwrap();
            log.blocking_append((1..=5).map(|i| blank(1, i))).await.unwrap();

            let (meta, file) = export(dir.path(), id(1, 3), 7);
            install(PG, &mut log, &store, &durability, meta, file).await.unwrap();
            assert_eq!(log_ids(&mut log).await, (1..=5).map(|i| id(1, i)).collect::<Vec<_>>());
            let state = PgState::decode(&store.pg_state(PG).unwrap().unwrap()).unwrap();
            assert_eq!(state.applied, Some(id(1, 3)));
            assert_eq!(data(&store), vec![7u8; 100]);

            // The local entry 4 is of term 1, the export's of term 2: 4 and 5 are uncommitted.
            let (meta, file) = export(dir.path(), id(2, 4), 8);
            install(PG, &mut log, &store, &durability, meta, file).await.unwrap();
            assert_eq!(log_ids(&mut log).await, (1..=3).map(|i| id(1, i)).collect::<Vec<_>>());
            assert_eq!(log.read_vote().await.unwrap(), Some(vote), "the vote is kept");
            let state = PgState::decode(&store.pg_state(PG).unwrap().unwrap()).unwrap();
            assert_eq!(state.applied, Some(id(2, 4)));
            assert_eq!(data(&store), vec![8u8; 100]);

            // Behind the purge point: refused, nothing changes.
            log.purge(id(1, 3)).await.unwrap();
            let (meta, file) = export(dir.path(), id(1, 2), 9);
            let refused = install(PG, &mut log, &store, &durability, meta, file).await;
            assert!(matches!(refused, Err(InstallError::Behind { .. })), "{refused:?}");
            let state = PgState::decode(&store.pg_state(PG).unwrap().unwrap()).unwrap();
            assert_eq!(state.applied, Some(id(2, 4)));
            assert_eq!(data(&store), vec![8u8; 100]);
        }
    }
}
