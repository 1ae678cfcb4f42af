//! The monitor's Raft group (openraft 0.9, storage v2): the type configuration, the state
//! machine over [`MonState`] with its snapshot file, and the peer network.
//!
//! The log lives in a `quarry_raftlog::Wal` (group 0). The state machine is in memory and
//! shared with the request handlers through [`Core`]; durability comes from the log plus
//! the snapshot file, and a restart loads the snapshot then replays the rest of the log.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftNetwork, RaftNetworkFactory,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::watch;

use quarry_raftlog::{DecodeError, EntryCodec};
use quarry_wire::ClusterMap;

use crate::error::MonError;
use crate::log_op::{Applied, Outcome, Proposal};
use crate::snapshot::{self, SnapshotFile};
use crate::state::MonState;

openraft::declare_raft_types!(
    /// The monitor group's openraft types.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

impl EntryCodec for TypeConfig {
    fn encode_data(data: &Proposal, out: &mut Vec<u8>) {
        data.encode_into(out);
    }

    fn decode_data(bytes: &[u8]) -> Result<Proposal, DecodeError> {
        Proposal::decode(bytes)
    }
}

/// The Raft group id of the monitor in its WAL.
pub const MON_GROUP: u64 = 0;

/// The running Raft node.
pub type MonRaft = openraft::Raft<TypeConfig>;

/// State shared by the state machine (writer) and the request handlers (readers).
pub struct Core {
    state: RwLock<MonState>,
    map_tx: watch::Sender<Arc<ClusterMap>>,
    /// The central config (`MonState::config`), published on every change.
    config_tx: watch::Sender<Arc<CentralConfig>>,
}

/// The central config: section -> option -> value.
pub type CentralConfig =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

impl Core {
    /// A core over `state`, publishing its map.
    pub fn new(state: MonState) -> Arc<Core> {
        let (map_tx, _) = watch::channel(Arc::new(state.map.clone()));
        let (config_tx, _) = watch::channel(Arc::new(state.config.clone()));
        Arc::new(Core { state: RwLock::new(state), map_tx, config_tx })
    }

    /// Reads the state (never held across an await).
    pub fn read(&self) -> RwLockReadGuard<'_, MonState> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, MonState> {
        self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The newest map.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.map_tx.borrow().clone()
    }

    /// Notified on every new map epoch.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMap>> {
        self.map_tx.subscribe()
    }

    /// Notified on every change of the central config.
    pub fn subscribe_config(&self) -> watch::Receiver<Arc<CentralConfig>> {
        self.config_tx.subscribe()
    }

    fn publish_if_changed(&self, state: &MonState) {
        if self.map_tx.borrow().as_ref() != &state.map {
            self.map_tx.send_replace(Arc::new(state.map.clone()));
        }
        if self.config_tx.borrow().as_ref() != &state.config {
            self.config_tx.send_replace(Arc::new(state.config.clone()));
        }
    }

    fn replace(&self, state: MonState) {
        let mut guard = self.write();
        *guard = state;
        self.publish_if_changed(&guard);
    }
}

/// The state machine openraft drives.
pub struct StateMachine {
    core: Arc<Core>,
    dir: PathBuf,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
}

impl StateMachine {
    /// Opens the state machine of `dir`, loading `dir/snapshot` if there is one.
    pub fn open(dir: PathBuf) -> Result<(StateMachine, Arc<Core>), MonError> {
        let loaded = snapshot::load(&dir)?;
        let (state, meta) = match loaded {
            Some(file) => (file.state, file.meta),
            None => (MonState::default(), SnapshotMeta::default()),
        };
        if let Some(id) = meta.last_log_id {
            tracing::info!(index = id.index, epoch = state.map.epoch, "monitor snapshot loaded");
        }
        let core = Core::new(state);
        let sm = StateMachine {
            core: core.clone(),
            dir,
            last_applied: meta.last_log_id,
            membership: meta.last_membership,
        };
        Ok((sm, core))
    }

    fn meta(&self) -> SnapshotMeta<u64, BasicNode> {
        let snapshot_id = match self.last_applied {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "empty".to_string(),
        };
        SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        }
    }

    fn apply_one(&mut self, state: &mut MonState, entry: Entry<TypeConfig>) -> Applied {
        self.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => Ok(Outcome::Done(String::new())),
            EntryPayload::Normal(proposal) => state.apply(&proposal),
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(entry.log_id), m);
                Ok(Outcome::Done(String::new()))
            }
        }
    }
}

fn snapshot_error(meta: Option<&SnapshotMeta<u64, BasicNode>>, e: &MonError) -> StorageError<u64> {
    let signature = meta.map(|m| m.signature());
    StorageIOError::write_snapshot(signature, AnyError::new(e)).into()
}

/// Writes the snapshot file off the async runtime.
async fn persist(dir: PathBuf, bytes: Vec<u8>) -> Result<(), MonError> {
    let joined = tokio::task::spawn_blocking(move || snapshot::write_atomic(&dir, &bytes)).await;
    joined.unwrap_or_else(|e| Err(MonError::SnapshotEncode { detail: format!("writer task: {e}") }))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let core = self.core.clone();
        let mut state = core.write();
        let replies = entries.into_iter().map(|e| self.apply_one(&mut state, e)).collect();
        core.publish_if_changed(&state);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let file = SnapshotFile { meta: self.meta(), state: self.core.read().clone() };
        SnapshotBuilder { dir: self.dir.clone(), file: Some(file) }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let received =
            snapshot::decode(snapshot.get_ref()).map_err(|e| snapshot_error(Some(meta), &e))?;
        let file = SnapshotFile { meta: meta.clone(), state: received.state };
        let bytes = snapshot::encode(&file).map_err(|e| snapshot_error(Some(meta), &e))?;
        persist(self.dir.clone(), bytes).await.map_err(|e| snapshot_error(Some(meta), &e))?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.core.replace(file.state);
        tracing::info!(snapshot = %meta.snapshot_id, "installed monitor snapshot");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let dir = self.dir.clone();
        let loaded = tokio::task::spawn_blocking(move || snapshot::load(&dir)).await;
        let loaded =
            loaded.unwrap_or_else(|e| Err(MonError::SnapshotCorrupt { detail: e.to_string() }));
        let file = match loaded {
            Ok(Some(file)) => file,
            Ok(None) => return Ok(None),
            Err(e) => return Err(StorageIOError::read_snapshot(None, AnyError::new(&e)).into()),
        };
        let bytes = snapshot::encode(&file).map_err(|e| snapshot_error(Some(&file.meta), &e))?;
        Ok(Some(Snapshot { meta: file.meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}

/// Builds a snapshot from a copy of the state taken when openraft asked for the builder.
pub struct SnapshotBuilder {
    dir: PathBuf,
    file: Option<SnapshotFile>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let Some(file) = self.file.take() else {
            let e = MonError::SnapshotEncode { detail: "snapshot builder used twice".into() };
            return Err(snapshot_error(None, &e));
        };
        let bytes = snapshot::encode(&file).map_err(|e| snapshot_error(Some(&file.meta), &e))?;
        persist(self.dir.clone(), bytes.clone())
            .await
            .map_err(|e| snapshot_error(Some(&file.meta), &e))?;
        tracing::debug!(snapshot = %file.meta.snapshot_id, bytes = bytes.len(), "monitor snapshot written");
        Ok(Snapshot { meta: file.meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

/// Connections to other monitors. Only single-monitor groups exist so far: every peer is
/// reported unreachable (multi-monitor membership is a later step; the rest of the monitor
/// does not assume a single node).
#[derive(Clone, Default)]
pub struct Network;

/// Why a peer cannot be reached.
#[derive(Debug, thiserror::Error)]
#[error("monitor-to-monitor transport is not implemented (peer mon {peer})")]
pub struct NoPeerTransport {
    peer: u64,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> PeerLink {
        PeerLink { peer: target }
    }
}

/// The (absent) link to one peer monitor.
pub struct PeerLink {
    peer: u64,
}

impl PeerLink {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, E> {
        RPCError::Unreachable(Unreachable::new(&NoPeerTransport { peer: self.peer }))
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.unreachable())
    }
}

/// openraft settings of the monitor group.
pub fn raft_config() -> Result<openraft::Config, MonError> {
    let config = openraft::Config {
        cluster_name: "quarry-mon".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    };
    config.validate().map_err(|e| MonError::Raft { detail: e.to_string() })
}
