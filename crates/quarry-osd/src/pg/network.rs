//! Raft between OSDs: openraft's `RaftNetworkFactory` over `quarry_wire` `Request::Raft`.
//!
//! The sending OSD connects to its peer as `osd.N` with a monitor ticket for the OSD service
//! (the same authentication every client goes through), keeps one pipelined connection per
//! peer, and sends bincode-encoded [`RaftRpc`]s; the peer decodes, calls its group's `Raft`,
//! and answers a [`RaftRpcReply`]. Peer addresses come from the newest cluster map (an OSD's
//! port may change across restarts), falling back to the address in the Raft membership.
//!
//! An AppendEntries call outlives openraft's timeout for it: openraft 0.9 gives each call
//! `heartbeat_interval` and then drops it and resends, but a follower that is slow to persist
//! (its WAL's fsync under load, several MiB of entries) keeps working on the dropped call, so
//! the resends of the same megabytes never fit either and the PG stops replicating. The call
//! therefore runs in its own task ([`Inflight`]); openraft's next call for the same entries,
//! made while that one still runs, waits for it instead of sending them again, and gets its
//! answer (a partial success up to what it carried). An answer is given once, and never
//! across a snapshot sent to the peer meanwhile (openraft sends snapshots through a second
//! client of the same peer: they share a generation counter): a stale "conflict" would make
//! openraft believe the follower's log went backwards. Only a call that does not answer in
//! [`APPEND_CALL_MAX`] fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bincode::Options;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, EntryPayload, LogId, RaftNetwork, RaftNetworkFactory, Vote};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use quarry_types::{EntityName, OsdId};
use quarry_wire::codec::FRAME_PAYLOAD_MAX;
use quarry_wire::{ClientSecret, ClusterMap, Reply, Request, RpcClient, Service};

use super::{PgCommand, PgRaftConfig};

/// How long connecting to a peer may take.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A Raft request from one OSD to another.
#[derive(Serialize, Deserialize)]
pub(crate) enum RaftRpc {
    /// Log replication / heartbeat.
    Append(AppendEntriesRequest<PgRaftConfig>),
    /// Election.
    Vote(VoteRequest<OsdId>),
    /// One chunk of a snapshot.
    Snapshot(InstallSnapshotRequest<PgRaftConfig>),
    /// Stage an export of the PG for a replica that rebuilds itself (`pg::repair`).
    Export,
    /// Up to `repair::EXPORT_CHUNK` bytes of staged export `id` from `offset`.
    ExportRead {
        /// The staged export.
        id: u64,
        /// Where to read from.
        offset: u64,
    },
    /// The group's committed configuration (asked by an OSD that holds a copy of the PG the
    /// map no longer gives it, before deleting it: `Router::apply_map`).
    Committed,
    /// The PG's durable seal (asked by its merge target's primary of every voter before it
    /// proposes the merge: `pg::merge`).
    Sealed,
}

/// The answer to a [`RaftRpc`].
#[derive(Serialize, Deserialize)]
pub(crate) enum RaftRpcReply {
    /// To `Append`.
    Append(Result<AppendEntriesResponse<OsdId>, RaftError<OsdId>>),
    /// To `Vote`.
    Vote(Result<VoteResponse<OsdId>, RaftError<OsdId>>),
    /// To `Snapshot`.
    Snapshot(Result<InstallSnapshotResponse<OsdId>, RaftError<OsdId, InstallSnapshotError>>),
    /// To `Export`: the staged export, or why not.
    Export(Result<super::repair::ExportInfo, String>),
    /// To `ExportRead`: the bytes, or why not.
    ExportRead(Result<Vec<u8>, String>),
    /// To `Committed`: the log id of the committed configuration and its voter sets (two
    /// while joint), as the answering OSD's group knows them, or why not.
    Committed(Result<CommittedConfig, String>),
    /// To `Sealed`: the log id of the seal the answering OSD's copy applied and made
    /// durable (None: not sealed).
    Sealed(Option<LogId<OsdId>>),
}

/// A group's committed Raft configuration, as one member knows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct CommittedConfig {
    /// Where the configuration is in the log (`None`: never initialised).
    pub(crate) log_id: Option<LogId<OsdId>>,
    /// Its voter sets (one, or two while joint).
    pub(crate) voters: Vec<std::collections::BTreeSet<OsdId>>,
    /// Whether the answering OSD is the group's leader now.
    pub(crate) leader: bool,
}

/// bincode with a size limit, so a hostile length prefix cannot allocate.
fn codec() -> impl Options {
    bincode::DefaultOptions::new().with_limit(u64::from(FRAME_PAYLOAD_MAX))
}

/// Encodes a Raft message body.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    codec().serialize(value)
}

/// Decodes a Raft message body (bounded; never panics on garbage).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    codec().deserialize(bytes)
}

/// The ticket this OSD presents to its peers, renewed by the monitor worker.
#[derive(Clone)]
pub(crate) struct PeerTicket {
    /// Sealed ticket bytes.
    pub(crate) ticket: Vec<u8>,
    /// Its session key.
    pub(crate) session_key: [u8; 32],
}

/// Connections to peer OSDs, shared by every PG group.
pub(crate) struct Peers {
    me: EntityName,
    map: watch::Receiver<Arc<ClusterMap>>,
    ticket: watch::Receiver<Option<PeerTicket>>,
    conns: Mutex<HashMap<OsdId, PeerConn>>,
}

/// A cached connection: reused while the peer's address and our ticket are unchanged.
struct PeerConn {
    addr: SocketAddr,
    ticket: Vec<u8>,
    client: RpcClient,
}

/// Why a peer call failed before reaching the peer's Raft.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    /// No address for the peer.
    #[error("no address known for osd.{0}")]
    NoAddress(OsdId),
    /// No ticket yet (monitor not reached).
    #[error("no ticket for peer connections yet")]
    NoTicket,
    /// Connecting or the call failed.
    #[error("osd.{peer}: {source}")]
    Wire {
        /// The peer.
        peer: OsdId,
        /// The error.
        #[source]
        source: quarry_wire::WireError,
    },
    /// The peer answered something else than a Raft reply.
    #[error("osd.{peer} answered {detail}")]
    Refused {
        /// The peer.
        peer: OsdId,
        /// What it said.
        detail: String,
    },
    /// A body did not encode or decode.
    #[error("raft message codec: {0}")]
    Codec(#[from] bincode::Error),
    /// No answer in time.
    #[error("osd.{0} did not answer in time")]
    Timeout(OsdId),
    /// The peer does not run the group now (starting, or rebuilding a damaged replica).
    #[error("osd.{0} does not run this pg group now")]
    NotHosted(OsdId),
}

impl Peers {
    pub(crate) fn new(
        me: OsdId,
        map: watch::Receiver<Arc<ClusterMap>>,
        ticket: watch::Receiver<Option<PeerTicket>>,
    ) -> Peers {
        Peers { me: EntityName::osd(me), map, ticket, conns: Mutex::new(HashMap::new()) }
    }

    fn address(&self, peer: OsdId, fallback: Option<SocketAddr>) -> Option<SocketAddr> {
        let map = self.map.borrow();
        map.osds.get(&peer).and_then(|o| o.addr).or(fallback)
    }

    /// A live connection to `peer`, reusing the cached one if its address still holds.
    async fn client(
        &self,
        peer: OsdId,
        fallback: Option<SocketAddr>,
    ) -> Result<RpcClient, PeerError> {
        let addr = self.address(peer, fallback).ok_or(PeerError::NoAddress(peer))?;
        let ticket = self.ticket.borrow().clone().ok_or(PeerError::NoTicket)?;
        if let Some(cached) = self.conns.lock().await.get(&peer) {
            // A renewed ticket means a new session: the old one expires with its ticket.
            if cached.addr == addr && cached.ticket == ticket.ticket && !cached.client.is_closed() {
                return Ok(cached.client.clone());
            }
        }
        // Connect without holding the table: one slow peer must not stall the others.
        let secret =
            ClientSecret::Ticket { ticket: ticket.ticket.clone(), session_key: ticket.session_key };
        let connected =
            quarry_wire::connect(addr, &self.me, Service::Osd, &secret, PEER_CONNECT_TIMEOUT)
                .await
                .map_err(|source| PeerError::Wire { peer, source })?;
        tracing::debug!(peer, %addr, "connected to peer osd");
        let conn = PeerConn { addr, ticket: ticket.ticket, client: connected.client.clone() };
        self.conns.lock().await.insert(peer, conn);
        Ok(connected.client)
    }

    /// Sends one Raft message to `peer` for `group` and decodes the answer.
    pub(crate) async fn call(
        &self,
        peer: OsdId,
        fallback: Option<SocketAddr>,
        group: u64,
        rpc: &RaftRpc,
        timeout: Duration,
    ) -> Result<RaftRpcReply, PeerError> {
        let body = encode(rpc)?;
        let client = self.client(peer, fallback).await?;
        let call = client.call(Request::Raft { group, body });
        let reply =
            tokio::time::timeout(timeout, call).await.map_err(|_| PeerError::Timeout(peer))?;
        match reply.map_err(|source| PeerError::Wire { peer, source })? {
            Reply::Raft(bytes) => Ok(decode(&bytes)?),
            Reply::Failed { code, .. } if code == quarry_types::ErrorCode::EAGAIN => {
                Err(PeerError::NotHosted(peer))
            }
            other => Err(PeerError::Refused { peer, detail: format!("{other:?}") }),
        }
    }
}

/// Bytes of entries one AppendEntries call carries at most (one larger entry goes alone).
/// openraft gives each call `heartbeat_interval` to be sent, persisted by the follower
/// (its WAL's fsync) and answered, and batches up to `max_payload_entries` entries: 64 of
/// 4 MiB in one call never made it, and a PG with large writes stopped replicating (a 4 MiB
/// `rados put` to a size-2 pool hung).
const APPEND_BYTES_MAX: u64 = 4 << 20;

/// How many of `entries` go in one call (see [`APPEND_BYTES_MAX`]).
fn append_prefix(entries: &[openraft::Entry<PgRaftConfig>]) -> usize {
    if entries.len() <= 1 {
        // One entry always goes: no size to compute on the common path.
        return entries.len();
    }
    let mut bytes = 0u64;
    for (i, entry) in entries.iter().enumerate() {
        bytes += bincode::serialized_size(entry).unwrap_or(u64::MAX / 2);
        if i > 0 && bytes > APPEND_BYTES_MAX {
            return i;
        }
    }
    entries.len()
}

/// How long one AppendEntries call may take before it fails (it is waited for across
/// openraft's shorter timeouts, see the module docs).
const APPEND_CALL_MAX: Duration = Duration::from_secs(30);

/// The peer's answer to an AppendEntries call, shared by every caller that waits for it (an
/// error the peer's Raft returned is kept as its text: openraft treats it as any other
/// failed call).
type AppendOutcome = Result<AppendEntriesResponse<OsdId>, Arc<PeerError>>;

/// The AppendEntries call in flight to one peer (or its answer, until a call for other
/// entries replaces it): what it carried and where its answer will be.
struct Inflight {
    /// The peer called.
    peer: OsdId,
    /// The leader's vote the call was made with.
    vote: Vote<OsdId>,
    /// Its `prev_log_id`.
    prev: Option<LogId<OsdId>>,
    /// The last entry it carried.
    last: LogId<OsdId>,
    /// The peer's snapshot generation when the call started.
    generation: u64,
    /// `None` until the peer answered (or the call failed).
    outcome: watch::Receiver<Option<AppendOutcome>>,
    /// The task making the call (aborted when the replication stream ends).
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Inflight {
    /// Whether a call for `prev` then entries up to `last` (same leader) can be answered by
    /// this one: it started at the same place and carried no more than the new call has.
    fn answers(
        &self,
        vote: &Vote<OsdId>,
        prev: &Option<LogId<OsdId>>,
        last: &LogId<OsdId>,
    ) -> bool {
        self.vote == *vote && self.prev == *prev && self.last.index <= last.index
    }

    /// Waits for the answer (the caller's own timeout, openraft's, bounds the wait).
    async fn outcome(&mut self) -> AppendOutcome {
        let ended = |peer| {
            Arc::new(PeerError::Refused {
                peer,
                detail: "the call's task ended without an answer".into(),
            })
        };
        match self.outcome.wait_for(Option::is_some).await {
            Ok(answer) => match answer.as_ref() {
                Some(Ok(r)) => Ok(copy_response(r)),
                Some(Err(e)) => Err(e.clone()),
                None => Err(ended(self.peer)),
            },
            // The task ended without answering: it was aborted or panicked.
            Err(_) => Err(ended(self.peer)),
        }
    }

    /// Whether the answer is in.
    fn finished(&self) -> bool {
        self.outcome.borrow().is_some()
    }
}

/// A copy of `r` (openraft's type is not `Clone`).
fn copy_response(r: &AppendEntriesResponse<OsdId>) -> AppendEntriesResponse<OsdId> {
    match r {
        AppendEntriesResponse::Success => AppendEntriesResponse::Success,
        AppendEntriesResponse::PartialSuccess(id) => AppendEntriesResponse::PartialSuccess(*id),
        AppendEntriesResponse::Conflict => AppendEntriesResponse::Conflict,
        AppendEntriesResponse::HigherVote(v) => AppendEntriesResponse::HigherVote(*v),
    }
}

/// Makes [`PeerClient`]s for one PG group.
pub(crate) struct PgNetworkFactory {
    pub(crate) group: u64,
    pub(crate) peers: Arc<Peers>,
    /// Where placed payloads are read back from before entries are sent (`super::placer`).
    pub(crate) store: Arc<quarry_store::Store>,
    /// Per peer: bumped by every snapshot sent to it (shared by the clients of that peer).
    pub(crate) snapshots: HashMap<OsdId, Arc<AtomicU64>>,
    /// What this OSD's vote requests met (read by `membership::tend_leadership`).
    pub(crate) votes: Arc<VoteFeedback>,
}

impl RaftNetworkFactory<PgRaftConfig> for PgNetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: OsdId, node: &BasicNode) -> PeerClient {
        PeerClient {
            group: self.group,
            target,
            fallback: node.addr.parse().ok(),
            peers: self.peers.clone(),
            store: self.store.clone(),
            inflight: None,
            snapshots: self.snapshots.entry(target).or_default().clone(),
            votes: self.votes.clone(),
        }
    }
}

/// openraft's view of one peer of one group.
pub(crate) struct PeerClient {
    group: u64,
    target: OsdId,
    fallback: Option<SocketAddr>,
    peers: Arc<Peers>,
    store: Arc<quarry_store::Store>,
    /// The last AppendEntries call with entries (see the module docs).
    inflight: Option<Inflight>,
    /// Snapshots sent to this peer (by any client of it), see the module docs.
    snapshots: Arc<AtomicU64>,
    /// What the group's vote requests met ([`PgNetworkFactory`]).
    votes: Arc<VoteFeedback>,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<OsdId, BasicNode, RaftError<OsdId, E>>>;

fn rpc_error<E: std::error::Error>(e: &PeerError) -> RPCError<OsdId, BasicNode, E> {
    match e {
        // Unreachable makes openraft back off (instead of retrying at once, in a loop, while
        // a peer rebuilds its replica).
        PeerError::Wire { .. }
        | PeerError::NoAddress(_)
        | PeerError::NoTicket
        | PeerError::NotHosted(_) => RPCError::Unreachable(Unreachable::new(e)),
        _ => RPCError::Network(NetworkError::new(e)),
    }
}

impl PeerClient {
    async fn send(&self, rpc: RaftRpc, option: &RPCOption) -> Result<RaftRpcReply, PeerError> {
        let timeout = option.hard_ttl();
        let result = self.peers.call(self.target, self.fallback, self.group, &rpc, timeout).await;
        if let Err(e) = &result {
            tracing::debug!(group = self.group, peer = self.target, error = %e, "raft rpc failed");
        }
        result
    }

    /// Starts an AppendEntries call of at most [`APPEND_BYTES_MAX`] of `rpc`'s entries (at
    /// least one) in its own task.
    fn start_append(&self, rpc: &mut AppendEntriesRequest<PgRaftConfig>) -> Inflight {
        let sent = append_prefix(&rpc.entries);
        rpc.entries.truncate(sent);
        let last = rpc.entries.last().map(|e| e.log_id).unwrap_or_default();
        let (vote, prev) = (rpc.vote, rpc.prev_log_id);
        let request = RaftRpc::Append(std::mem::replace(
            rpc,
            AppendEntriesRequest { vote, prev_log_id: prev, leader_commit: None, entries: vec![] },
        ));
        let (tx, outcome) = watch::channel(None);
        let (peers, target, fallback, group) =
            (self.peers.clone(), self.target, self.fallback, self.group);
        let task = tokio::spawn(async move {
            let result = peers.call(target, fallback, group, &request, APPEND_CALL_MAX).await;
            let answer = match result {
                Ok(RaftRpcReply::Append(Ok(r))) => Ok(r),
                Ok(RaftRpcReply::Append(Err(e))) => {
                    Err(Arc::new(PeerError::Refused { peer: target, detail: e.to_string() }))
                }
                Ok(_) => Err(Arc::new(PeerError::Refused {
                    peer: target,
                    detail: "a mismatched raft reply".into(),
                })),
                Err(e) => {
                    tracing::debug!(group, peer = target, error = %e, "append entries failed");
                    Err(Arc::new(e))
                }
            };
            let _ = tx.send(Some(answer));
        });
        let generation = self.snapshots.load(Ordering::Acquire);
        Inflight { peer: target, vote, prev, last, generation, outcome, task }
    }

    fn wrong_reply<E: std::error::Error>(&self) -> RPCError<OsdId, BasicNode, E> {
        let e = PeerError::Refused { peer: self.target, detail: "a mismatched raft reply".into() };
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<PgRaftConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<PgRaftConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<OsdId>> {
        // Placed payloads are read back: a peer gets whole entries (`super::placer`).
        for entry in rpc.entries.iter_mut() {
            if let EntryPayload::Normal(PgCommand::ClientPlaced { .. }) = &entry.payload {
                let EntryPayload::Normal(data) =
                    std::mem::replace(&mut entry.payload, EntryPayload::Blank)
                else {
                    unreachable!("matched above")
                };
                match super::placer::rehydrate(&self.store, data) {
                    Ok(whole) => entry.payload = EntryPayload::Normal(whole),
                    Err(detail) => {
                        tracing::warn!(group = self.group, peer = self.target,
                            index = entry.log_id.index, %detail,
                            "a placed write cannot be read back for a peer");
                        let e = PeerError::Refused { peer: self.target, detail };
                        return Err(RPCError::Unreachable(Unreachable::new(&e)));
                    }
                }
            }
        }
        let Some(last) = rpc.entries.last().map(|e| e.log_id) else {
            // A heartbeat: after a call with entries still in flight (the peer answers in
            // order), then on its own.
            if let Some(inflight) = self.inflight.as_mut().filter(|f| !f.finished()) {
                let _ = inflight.outcome().await;
            }
            return match self.send(RaftRpc::Append(rpc), &option).await {
                Ok(RaftRpcReply::Append(Ok(r))) => Ok(r),
                Ok(RaftRpcReply::Append(Err(e))) => {
                    Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
                }
                Ok(_) => Err(self.wrong_reply()),
                Err(e) => Err(rpc_error(&e)),
            };
        };
        let generation = self.snapshots.load(Ordering::Acquire);
        let joinable = self.inflight.as_ref().is_some_and(|f| {
            !f.finished()
                && f.generation == generation
                && f.answers(&rpc.vote, &rpc.prev_log_id, &last)
        });
        if !joinable {
            // Another call's entries: let a running one finish first (the peer would only
            // queue this one behind it), then send these.
            if let Some(inflight) = self.inflight.as_mut().filter(|f| !f.finished()) {
                let _ = inflight.outcome().await;
            }
            self.inflight = Some(self.start_append(&mut rpc));
        }
        let Some(inflight) = self.inflight.as_mut() else {
            return Err(self.wrong_reply());
        };
        let (carried, started) = (inflight.last, inflight.generation);
        let outcome = inflight.outcome().await;
        // Given once; and not at all if a snapshot went to the peer since the call started.
        self.inflight = None;
        if self.snapshots.load(Ordering::Acquire) != started {
            let e = PeerError::Refused {
                peer: self.target,
                detail: "a snapshot was sent meanwhile".into(),
            };
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        match outcome {
            // Everything up to what the call carried is on the peer.
            Ok(AppendEntriesResponse::Success) if carried.index < last.index => {
                Ok(AppendEntriesResponse::PartialSuccess(Some(carried)))
            }
            Ok(r) => Ok(r),
            Err(e) => Err(rpc_error(&e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<PgRaftConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<OsdId>, InstallSnapshotError> {
        // Answers of AppendEntries calls started before are stale from now on.
        self.snapshots.fetch_add(1, Ordering::AcqRel);
        let sent = self.send(RaftRpc::Snapshot(rpc), &option).await;
        self.snapshots.fetch_add(1, Ordering::AcqRel);
        match sent {
            Ok(RaftRpcReply::Snapshot(Ok(r))) => Ok(r),
            Ok(RaftRpcReply::Snapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.wrong_reply()),
            Err(e) => Err(rpc_error(&e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<OsdId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<OsdId>> {
        let mine = rpc.last_log_id;
        match self.send(RaftRpc::Vote(rpc), &option).await {
            Ok(RaftRpcReply::Vote(Ok(r))) => {
                if refused_by_log(&r, mine) {
                    self.votes.refused_by_log.store(true, Ordering::Release);
                }
                Ok(r)
            }
            Ok(RaftRpcReply::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.wrong_reply()),
            Err(e) => {
                if matches!(e, PeerError::NotHosted(_)) {
                    self.votes.peer_not_ready.store(true, Ordering::Release);
                }
                Err(rpc_error(&e))
            }
        }
    }
}

/// What one group's vote requests met, kept for `membership::tend_leadership` (which decides
/// when the map's primary campaigns again by itself).
#[derive(Debug, Default)]
pub(crate) struct VoteFeedback {
    /// A voter refused a vote request because its own log is longer (only that voter can win
    /// the election). Cleared once the PG has a live leader.
    refused_by_log: AtomicBool,
    /// A voter did not run the group yet (`PeerError::NotHosted`: a PG just created or
    /// starting): the campaign could not win through it, and another one soon may. Cleared
    /// once the PG has a live leader, or when the primary campaigns again.
    peer_not_ready: AtomicBool,
}

impl VoteFeedback {
    /// True if a voter refused a vote request by log since the PG last had a live leader.
    pub(crate) fn refused_by_log(&self) -> bool {
        self.refused_by_log.load(Ordering::Acquire)
    }

    /// Forgets what past vote requests met (the PG has a live leader again).
    pub(crate) fn clear(&self) {
        self.refused_by_log.store(false, Ordering::Release);
        self.peer_not_ready.store(false, Ordering::Release);
    }

    /// True (once) if a vote request met a voter not running the group since the PG last had
    /// a live leader or the last call.
    pub(crate) fn take_peer_not_ready(&self) -> bool {
        self.peer_not_ready.swap(false, Ordering::AcqRel)
    }
}

/// True if `reply` refuses a vote request whose candidate's last log id was `mine` because
/// the voter's log is longer (then only a voter with the longer log can win the election).
fn refused_by_log(reply: &VoteResponse<OsdId>, mine: Option<LogId<OsdId>>) -> bool {
    !reply.vote_granted && reply.last_log_id > mine
}

/// Serves one incoming Raft message on this OSD's group. `member` says whether the sender is
/// in the PG's acting set (only members may fetch exports).
pub(crate) async fn serve_rpc(
    group: &super::PgGroup,
    exports: &super::repair::Exports,
    member: bool,
    body: &[u8],
) -> Result<Vec<u8>, bincode::Error> {
    let raft = &group.raft;
    let not_member = || format!("not a replica of pg {}", group.pg);
    let reply = match decode::<RaftRpc>(body)? {
        RaftRpc::Append(rpc) => {
            let placed = |e: &openraft::Entry<PgRaftConfig>| {
                matches!(e.payload, EntryPayload::Normal(PgCommand::ClientPlaced { .. }))
            };
            if rpc.entries.iter().any(placed) {
                // It names blocks of the sender's store: never taken for data here.
                return Err(Box::new(bincode::ErrorKind::Custom(format!(
                    "pg {}: a placed (write-once) entry from a peer: refused",
                    group.pg
                ))));
            }
            RaftRpcReply::Append(raft.append_entries(rpc).await)
        }
        RaftRpc::Vote(rpc) => RaftRpcReply::Vote(raft.vote(rpc).await),
        RaftRpc::Snapshot(rpc) => RaftRpcReply::Snapshot(raft.install_snapshot(rpc).await),
        RaftRpc::Export if !member => RaftRpcReply::Export(Err(not_member())),
        RaftRpc::Export => {
            RaftRpcReply::Export(super::repair::serve_export(exports, group.pg).await)
        }
        RaftRpc::ExportRead { .. } if !member => RaftRpcReply::ExportRead(Err(not_member())),
        RaftRpc::ExportRead { id, offset } => {
            RaftRpcReply::ExportRead(super::repair::serve_read(exports, group.pg, id, offset).await)
        }
        RaftRpc::Committed => {
            let state = raft
                .with_raft_state(|state| {
                    let committed = state.membership_state.committed();
                    CommittedConfig {
                        log_id: committed.log_id().as_ref().copied(),
                        voters: committed.membership().get_joint_config().clone(),
                        leader: state.server_state == openraft::ServerState::Leader,
                    }
                })
                .await;
            RaftRpcReply::Committed(state.map_err(|e| format!("the group is stopping: {e}")))
        }
        RaftRpc::Sealed => RaftRpcReply::Sealed(group.sealed()),
    };
    encode(&reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, Vote};

    /// Only a refusal by a voter whose log is longer counts: not a granted vote, not a
    /// refusal by vote (same or shorter log).
    #[test]
    fn refusals_by_log_are_told_apart() {
        let log = |term, index| Some(LogId::new(CommittedLeaderId::new(term, 1), index));
        let reply = |granted, last_log_id| VoteResponse {
            vote: Vote::new(3, 1),
            vote_granted: granted,
            last_log_id,
        };
        assert!(refused_by_log(&reply(false, log(2, 12)), log(2, 11)));
        assert!(refused_by_log(&reply(false, log(3, 5)), log(2, 11)));
        assert!(refused_by_log(&reply(false, log(1, 1)), None));
        assert!(!refused_by_log(&reply(false, log(2, 11)), log(2, 11)), "refused by vote");
        assert!(!refused_by_log(&reply(false, log(2, 10)), log(2, 11)));
        assert!(!refused_by_log(&reply(true, log(2, 12)), log(2, 11)));
        assert!(!refused_by_log(&reply(false, None), None));
    }

    #[test]
    fn raft_messages_round_trip() {
        let vote =
            VoteRequest::new(Vote::new(3, 1), Some(LogId::new(CommittedLeaderId::new(2, 1), 9)));
        let bytes = encode(&RaftRpc::Vote(vote.clone())).unwrap();
        match decode::<RaftRpc>(&bytes).unwrap() {
            RaftRpc::Vote(got) => assert_eq!(got, vote),
            _ => panic!("decoded another message"),
        }
        let reply = RaftRpcReply::Vote(Ok(VoteResponse::new(Vote::new(3, 1), None, true)));
        let bytes = encode(&reply).unwrap();
        assert!(
            matches!(decode::<RaftRpcReply>(&bytes).unwrap(), RaftRpcReply::Vote(Ok(r)) if r.vote_granted)
        );
    }

    #[test]
    fn garbage_does_not_decode_or_allocate() {
        for bytes in [
            &[][..],
            &[0xff; 7][..],
            &[2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
        ] {
            assert!(decode::<RaftRpc>(bytes).is_err());
        }
        // A length prefix far beyond the frame limit is refused before allocating.
        let mut huge = vec![0u8];
        huge.extend_from_slice(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode::<RaftRpc>(&huge).is_err());
    }
}
