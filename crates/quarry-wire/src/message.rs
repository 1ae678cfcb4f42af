//! Every message Quarry's daemons and clients exchange: the handshake, requests, replies and
//! pushed events. Encoded with bincode inside a frame (see `codec`).
//!
//! Compatibility rule: bincode 1 writes no field names or lengths, so adding a field to a
//! message (at the end too), or removing, reordering or retyping one, changes bytes an old peer
//! cannot decode: such a change needs a new frame header version. A new enum variant appended
//! at the end leaves the existing variants' bytes unchanged; an old peer fails only on the new
//! variant itself (a decode error: it closes that connection). Nothing here is persisted; the
//! persisted encodings follow `quarry_persist`'s versioning rule.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use quarry_types::{
    EntityName, ErrorCode, ObjectOp, OpReply, OsdId, Payload, PgId, PoolId, ReqId, SnapContext,
    SnapId,
};

use crate::map::{ClusterMap, PoolInfo};

/// The top-level message carried by one frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Handshake step 1, client to server: who I am.
    Hello(Hello),
    /// Handshake step 2, server to client: prove you hold the key for this nonce.
    Challenge(Challenge),
    /// Handshake step 3, client to server: the proof.
    Proof(Proof),
    /// Handshake step 4, server to client: accepted, and the server's own proof.
    Welcome(Welcome),
    /// The server refuses the handshake (bad key, unknown entity, expired ticket...). The
    /// connection closes after it.
    Refused(Refused),
    /// A request (the frame's request id pairs it with its reply).
    Request(Request),
    /// The reply to the request with the same request id.
    Reply(Reply),
    /// A message the server pushes without a request (request id 0).
    Event(Event),
}

/// Which service a connection is for: decides which secret the handshake uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Service {
    /// The monitor: the handshake proves knowledge of the entity's own key.
    Mon,
    /// An OSD: the handshake proves knowledge of the session key inside a monitor ticket.
    Osd,
}

/// Handshake step 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the client speaks.
    pub protocol: u32,
    /// The service the client wants.
    pub service: Service,
    /// The entity authenticating (`client.qemu`).
    pub entity: EntityName,
    /// Fresh random nonce chosen by the client.
    pub client_nonce: [u8; 16],
    /// For `Service::Osd`: the sealed ticket obtained from the monitor (opaque to the wire).
    pub ticket: Option<Vec<u8>>,
}

/// Handshake step 2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Fresh random nonce chosen by the server.
    pub server_nonce: [u8; 16],
}

/// Handshake step 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// `client_proof(secret, entity, client_nonce, server_nonce)`.
    pub proof: [u8; 32],
}

/// Handshake step 4.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// `server_proof(secret, entity, client_nonce, server_nonce)`: the server knows the key too.
    pub proof: [u8; 32],
    /// The id of this client instance (unique per monitor session; used for blocklisting).
    pub global_id: u64,
}

/// Handshake refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// EPERM for authentication failures, EACCES for capability failures.
    pub code: ErrorCode,
    /// One line for the log and the user.
    pub reason: String,
}

/// An operation on one object, sent to the primary OSD of its PG.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsdOp {
    /// The PG the client computed from the object name.
    pub pg: PgId,
    /// The map epoch the client routed with.
    pub epoch: u64,
    /// Object name.
    pub name: String,
    /// Snapshot context for mutations.
    pub snapc: SnapContext,
    /// Snapshot to read (`SNAP_HEAD` for the head); mutations require `SNAP_HEAD`.
    pub snap: SnapId,
    /// The op vector, applied atomically.
    pub ops: Vec<ObjectOp>,
    /// The request id of a mutating vector, the same on every resend (the OSD answers a
    /// resend of an applied request from the PG's duplicate table); None for reads.
    pub reqid: Option<ReqId>,
}

/// Objects and bytes a PG or pool holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Number of head objects.
    pub objects: u64,
    /// Sum of head object sizes.
    pub bytes: u64,
}

/// A request. Which service accepts which request is noted per variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Mon: the current map. Reply: `Map`.
    GetMap,
    /// Mon: the current map now and `Event::Map` on every later change. Reply: `Map`.
    Subscribe,
    /// Mon: a ticket for OSD sessions. Reply: `Ticket`.
    GetTicket,
    /// Mon: the central config that applies to the caller (`ceph config set`): the sections
    /// `global`, its type (`osd`, `client`) and itself (`osd.3`), as stored. With
    /// `subscribe`, `Event::Config` follows on every later change (as Ceph's daemons
    /// subscribe to `config`). Any authenticated entity may ask for its own. Reply:
    /// `Command(MonReply::Config)`.
    GetConfig {
        /// Push later changes.
        subscribe: bool,
    },
    /// Mon: an admin or pool command. Reply: `Command` or `Failed`.
    Command(MonCommand),
    /// Mon, from `osd.N` only: the OSD started and listens at `addr`. Reply: `Booted`.
    OsdBoot {
        /// The OSD's id (must match the authenticated entity).
        id: OsdId,
        /// Listening address.
        addr: SocketAddr,
        /// Host name.
        host: String,
    },
    /// Mon, from `osd.N` only: liveness lease renewal with usage figures. Reply: `Ack`.
    OsdBeacon {
        /// The OSD's id.
        id: OsdId,
        /// The incarnation (`up_from`) the OSD booted as.
        up_from: u64,
        /// Usage per pool on this OSD.
        usage: BTreeMap<PoolId, Usage>,
        /// Bytes the OSD uses on its disk (everything in its data directory: object data,
        /// the metadata database, the WAL), or the file system's used bytes while that is
        /// past the nearfull ratio (the OSD's `space` module).
        disk_used: u64,
        /// Bytes available to the OSD on its disk.
        disk_avail: u64,
        /// Of `disk_used`, bytes of object data (the store's data file): Ceph's `USED`.
        data_used: u64,
        /// The PGs (seeds by pool) whose state this OSD's store holds: created here (a
        /// split's children once the split is applied; a merge's source no longer once the
        /// merge is). None: not reported. The monitor shows a PG whose primary's store lacks
        /// it `creating` (`PoolInfo::creating`).
        pgs: Option<BTreeMap<PoolId, BTreeSet<u32>>>,
    },
    /// Mon, from OSDs only: the current service keys, sealed under the session key.
    /// Reply: `ServiceKeys`.
    GetServiceKeys,
    /// OSD: an object operation. Reply: `Op`, `Retry` or `Failed`.
    Op(OsdOp),
    /// OSD: list head objects of a PG. Reply: `List`.
    List {
        /// The PG.
        pg: PgId,
        /// The map epoch the client routed with.
        epoch: u64,
        /// Exclusive lower bound.
        start_after: Option<String>,
        /// At most this many names.
        max: u32,
    },
    /// OSD to OSD: a Raft message for `group` (opaque, encoded by the OSD). Reply: `Raft`.
    Raft {
        /// Raft group (PG) id.
        group: u64,
        /// Encoded openraft request.
        body: Vec<u8>,
    },
    /// OSD: watch `name` (must exist; needs read caps) with `cookie` (chosen by the client,
    /// unique per client instance), kept while pinged within `timeout_secs` (0: the OSD's
    /// `osd_client_watch_timeout`) and while this connection lasts. Notifies arrive as
    /// `Event::Notify` on this connection. Reply: `Watching` (a repeat refreshes the watch).
    Watch {
        /// The PG of `name`.
        pg: PgId,
        /// The map epoch the client routed with.
        epoch: u64,
        /// Object name.
        name: String,
        /// The watch's cookie.
        cookie: u64,
        /// Seconds without a ping after which the OSD drops the watch (0: OSD default).
        timeout_secs: u32,
    },
    /// OSD: the watch `cookie` on `name` is alive. Reply: `Ack`, or `Failed` ENOTCONN when
    /// the OSD holds no such watch (timed out, primary changed): the client re-watches.
    WatchPing {
        /// The PG of `name`.
        pg: PgId,
        /// The map epoch the client routed with.
        epoch: u64,
        /// Object name.
        name: String,
        /// The watch's cookie.
        cookie: u64,
    },
    /// OSD: remove the watch `cookie` on `name` (absent is fine). Reply: `Ack`.
    Unwatch {
        /// The PG of `name`.
        pg: PgId,
        /// The map epoch the client routed with.
        epoch: u64,
        /// Object name.
        name: String,
        /// The watch's cookie.
        cookie: u64,
    },
    /// OSD: deliver `payload` to every watcher of `name` and collect their acks until all
    /// acked or `timeout_ms` (0: 30 s) passed. Needs read caps. Reply: `Notified`.
    Notify {
        /// The PG of `name`.
        pg: PgId,
        /// The map epoch the client routed with.
        epoch: u64,
        /// Object name.
        name: String,
        /// Delivered to every watcher.
        payload: Vec<u8>,
        /// How long to wait for acks, in milliseconds (0: 30 s).
        timeout_ms: u64,
    },
    /// OSD: a watcher acknowledges notify `notify_id` for its watch `cookie`, with a reply
    /// payload for the notifier. Sent on the connection the notify arrived on. Reply: `Ack`
    /// (also when the notify already completed).
    NotifyAck {
        /// The notify being acknowledged.
        notify_id: u64,
        /// The watch it was delivered to.
        cookie: u64,
        /// Reply payload for the notifier (may be empty).
        payload: Vec<u8>,
    },
    /// OSD: the watchers of `name`. Needs read caps. Reply: `Watchers`.
    ListWatchers {
        /// The PG of `name`.
        pg: PgId,
        /// The map epoch the client routed with.
        epoch: u64,
        /// Object name.
        name: String,
    },
    /// Mon, from `osd.N` only: the PGs this OSD has marked damaged (it met damaged data in
    /// them and rebuilds them from a replica; see `quarry_osd`'s "Damaged replicas"), sent
    /// with every beacon while some are, and once empty when the last is repaired. The
    /// monitor reports them as `PG_DAMAGED`. Reply: `Ack`.
    OsdDamaged {
        /// The OSD's id.
        id: OsdId,
        /// The incarnation (`up_from`) the OSD booted as.
        up_from: u64,
        /// The damaged PGs, in order.
        pgs: Vec<PgId>,
    },
    /// Mon, from `osd.N` only, the acting primary of `pg`: it committed a Raft membership
    /// change of the PG from the voters `from` (the acting set it acted on) to `to` (the up
    /// set). The monitor makes `to` the acting set in a new map epoch (then the OSDs that left
    /// stop the PG and delete its data). Reply: `Ack`, or `Failed` (ESTALE: the acting set is
    /// no longer `from`).
    PgRemapped {
        /// The reporting OSD's id.
        id: OsdId,
        /// The incarnation (`up_from`) it booted as.
        up_from: u64,
        /// The PG.
        pg: PgId,
        /// The voters before.
        from: Vec<OsdId>,
        /// The voters now.
        to: Vec<OsdId>,
    },
    /// Mon or OSD (`ceph tell`): an admin command for this daemon itself, in Ceph's words
    /// (`["config", "get", "debug_osd"]`, `["version"]`). Needs every right on the daemon's
    /// service (`allow *`), as Ceph's daemons ask. Reply: `Told` or `Failed`.
    Tell {
        /// The command's words.
        words: Vec<String>,
    },
    /// Mon, from `osd.N` only, the acting primary of `target`: the merge of PG `source` of
    /// the same pool into `target` (the one the map marks, `PoolInfo::merging`) is applied
    /// in `target`'s log. The monitor lowers the pool's `pg_num` by one in a new map epoch
    /// (then `source`'s OSDs stop its group). Reply: `Ack`, or `Failed` (ESTALE: the map
    /// marks no such merge).
    PgMerged {
        /// The reporting OSD's id.
        id: OsdId,
        /// The incarnation (`up_from`) it booted as.
        up_from: u64,
        /// The target PG.
        target: PgId,
        /// The source PG's seed.
        source: u32,
    },
}

/// A reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The current cluster map.
    Map(Box<ClusterMap>),
    /// A ticket for OSD sessions.
    Ticket {
        /// Sealed ticket, to present in `Hello::ticket` (opaque to the client).
        ticket: Vec<u8>,
        /// The ticket's session key, sealed under this connection's session key.
        session_key: Vec<u8>,
        /// When the ticket expires (unix seconds); renew before.
        expires_unix: u64,
    },
    /// Result of a monitor command.
    Command(MonReply),
    /// The OSD is registered and up as of `epoch`, incarnation `up_from`.
    Booted {
        /// Map epoch that marks it up.
        epoch: u64,
        /// This incarnation.
        up_from: u64,
    },
    /// Acknowledged.
    Ack,
    /// Service keys sealed under the session key (encoding owned by quarry-auth).
    ServiceKeys(Vec<u8>),
    /// Result of an op vector.
    Op(OpReply),
    /// Object names in a PG.
    List {
        /// Names in order.
        names: Vec<String>,
        /// More follow.
        more: bool,
    },
    /// Encoded openraft reply.
    Raft(Vec<u8>),
    /// Refresh the map to at least `epoch` and resend (not the primary, PG not ready, ...).
    Retry {
        /// The epoch the server has.
        epoch: u64,
    },
    /// The request failed.
    Failed {
        /// errno.
        code: ErrorCode,
        /// One line a person understands.
        message: String,
    },
    /// The watch is registered; ping it at least every `timeout_secs` (the OSD's effective
    /// timeout).
    Watching {
        /// The timeout the OSD applies.
        timeout_secs: u32,
    },
    /// The outcome of a notify.
    Notified(NotifyOutcome),
    /// The watchers of an object.
    Watchers(Vec<WatcherInfo>),
    /// The answer to a `Tell`: what Ceph's daemon prints on stdout (JSON) and on stderr.
    Told {
        /// The output (JSON text).
        output: String,
        /// Status lines (e.g. the options `injectargs` changed).
        status: String,
    },
    /// The data of a request's one read op, sent while it was still being read from the
    /// device (a part, not the answer: `crate::conn`'s streamed replies). The request's answer
    /// follows on the connection: [`Reply::ReadDone`] makes this data the op's output; any
    /// other answer stands alone and the part is dropped (its bytes mean nothing then: a read
    /// that failed half way sends zeros for the rest). An `RpcClient` merges the two; callers
    /// never see either.
    ReadPart(Payload),
    /// The answer to a request whose data came ahead as a [`Reply::ReadPart`]: the read
    /// succeeded and that part is its one output.
    ReadDone,
}

/// A pushed message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A newer cluster map.
    Map(Box<ClusterMap>),
    /// The central config that applies to this subscriber changed (after
    /// `Request::GetConfig { subscribe: true }`): its sections, section -> option -> value.
    Config(BTreeMap<String, BTreeMap<String, String>>),
    /// A notify for the watch `cookie` of this connection: handle `payload`, then send
    /// `Request::NotifyAck` with `notify_id` and `cookie`.
    Notify {
        /// The watch it is for.
        cookie: u64,
        /// Id to acknowledge.
        notify_id: u64,
        /// The notifier's global id.
        notifier: u64,
        /// The notifier's payload.
        payload: Vec<u8>,
    },
    /// The OSD dropped the watch `cookie` (ENOTCONN: its PG moved to another primary;
    /// ESHUTDOWN: the client is blocklisted; ETIMEDOUT: not pinged in time).
    WatchError {
        /// The watch.
        cookie: u64,
        /// Why.
        code: ErrorCode,
    },
}

/// Admin and pool commands the monitor executes (the `ceph` CLI's verbs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonCommand {
    /// `ceph -s`. Reply: `Status`.
    Status,
    /// `ceph osd pool create NAME [PG_NUM]`. Reply: `Done`.
    PoolCreate {
        /// Pool name.
        name: String,
        /// PGs (default `osd_pool_default_pg_num`).
        pg_num: Option<u32>,
        /// Replicas (default `osd_pool_default_size`).
        size: Option<u32>,
    },
    /// `ceph osd pool rm NAME NAME --yes-i-really-really-mean-it`. Reply: `Done`.
    PoolRm {
        /// Pool name.
        name: String,
    },
    /// `ceph osd pool application enable POOL APP` / `rbd pool init`. Reply: `Done`.
    PoolApplicationEnable {
        /// Pool name.
        pool: String,
        /// Application name (`rbd`).
        app: String,
    },
    /// Allocate a self-managed snapshot id in a pool. Reply: `SnapId`.
    SnapCreate {
        /// Pool id.
        pool: PoolId,
    },
    /// Release a self-managed snapshot id. Reply: `Done`.
    SnapRemove {
        /// Pool id.
        pool: PoolId,
        /// Snapshot id.
        snap: SnapId,
    },
    /// `ceph auth get-or-create ENTITY CAPS...`. Reply: `Keyring`.
    AuthGetOrCreate {
        /// Entity name (`client.qemu`).
        entity: String,
        /// Caps by service (`mon` -> `profile rbd`).
        caps: BTreeMap<String, String>,
    },
    /// `ceph auth get ENTITY`. Reply: `Keyring`.
    AuthGet {
        /// Entity name.
        entity: String,
    },
    /// `ceph auth get-key ENTITY` / `auth print-key`. Reply: `Key`.
    AuthGetKey {
        /// Entity name.
        entity: String,
    },
    /// `ceph auth ls`. Reply: `AuthList`.
    AuthLs,
    /// `ceph auth del ENTITY`. Reply: `Done`.
    AuthDel {
        /// Entity name.
        entity: String,
    },
    /// `ceph auth caps ENTITY CAPS...` (replaces all caps). Reply: `Done`.
    AuthCaps {
        /// Entity name.
        entity: String,
        /// New caps.
        caps: BTreeMap<String, String>,
    },
    /// `ceph auth import -i FILE`: keyring text. Reply: `Done`.
    AuthImport {
        /// Keyring text in Ceph's format.
        keyring: String,
    },
    /// `ceph osd blocklist add ENTITY@GLOBAL_ID|IP:PORT/NONCE [SECONDS]`. Reply: `Done`.
    BlocklistAdd {
        /// Client instance (`client.qemu@4123`) or address (`127.0.0.1:0/4123`; port 0 and
        /// nonce 0 cover every client from that IP): see `crate::blocklist`.
        instance: String,
        /// Expiry in seconds from now (Ceph's default: 3600).
        expire_secs: u64,
    },
    /// `ceph osd blocklist rm ENTITY@GLOBAL_ID|IP:PORT/NONCE`. Reply: `Done`.
    BlocklistRm {
        /// Instance or address, as added.
        entry: String,
    },
    /// Create a pool snapshot: `ceph osd pool mksnap POOL SNAP` (`strict: false`: an existing
    /// name is a success with Ceph's "already exists" line) or librados `snap_create`
    /// (`strict: true`: EEXIST). EINVAL on a pool in self-managed snapshot mode. Reply: `Done`.
    PoolSnapCreate {
        /// Pool name.
        pool: String,
        /// Snapshot name.
        snap: String,
        /// librados semantics (EEXIST) rather than the CLI's.
        strict: bool,
    },
    /// Remove a pool snapshot: `ceph osd pool rmsnap POOL SNAP` (`strict: false`: a missing
    /// name is a success with Ceph's "does not exist" line) or librados `snap_remove`
    /// (`strict: true`: ENOENT). Its data is then trimmed by the OSDs. Reply: `Done`.
    PoolSnapRemove {
        /// Pool name.
        pool: String,
        /// Snapshot name.
        snap: String,
        /// librados semantics (ENOENT) rather than the CLI's.
        strict: bool,
    },
    /// `ceph osd blocklist clear`: removes every entry. Reply: `Done`.
    BlocklistClear,
    /// `ceph osd pool set POOL VAR VAL`; `ceph osd pool set-quota POOL max_bytes|max_objects N`
    /// is VAR `quota_max_bytes|quota_max_objects` with N in bytes or objects. Reply: `Done`.
    PoolSet {
        /// Pool name.
        pool: String,
        /// `min_size`, `nodelete`, `nopgchange`, `nosizechange`, `noscrub`, `nodeep-scrub`,
        /// `size`, `pg_num`, `pgp_num`, `quota_max_bytes`, `quota_max_objects`.
        var: String,
        /// The value as typed.
        val: String,
    },
    /// `ceph osd pool rename OLD NEW`. Reply: `Done`.
    PoolRename {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// `ceph osd out|in|down ID...`. Reply: `Done` (Ceph's lines, `marked out osd.0. `).
    OsdMark {
        /// OSD ids.
        ids: Vec<u64>,
        /// `out`, `in` or `down`.
        mark: String,
    },
    /// `ceph osd reweight ID WEIGHT`. Reply: `Done`.
    OsdReweight {
        /// OSD id.
        id: u64,
        /// The weight in Ceph's fixed point (0x10000 = 1.0).
        weight_fixed: u32,
    },
    /// `ceph config set WHO KEY VALUE` / `ceph config rm WHO KEY` (`value: None`): the key
    /// and value are checked against the options Quarry knows. Reply: `Done`.
    ConfigSet {
        /// `global`, `mon`, `osd`, `client`, `osd.3`, `client.admin`, ...
        who: String,
        /// Option name (dashes or underscores).
        key: String,
        /// New value, or None to remove.
        value: Option<String>,
    },
    /// The central config (`ceph config dump|get`). Reply: `Config`.
    ConfigDump,
}

/// One entity as `ceph auth ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthEntry {
    /// `client.qemu`.
    pub entity: String,
    /// Base64 key.
    pub key: String,
    /// Caps by service.
    pub caps: BTreeMap<String, String>,
}

/// What `ceph -s` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Cluster id.
    pub fsid: String,
    /// `HEALTH_OK`, `HEALTH_WARN` or `HEALTH_ERR`.
    pub health: String,
    /// One line per health check that is not OK.
    pub health_details: Vec<String>,
    /// Monitor names, and those in quorum.
    pub mons: Vec<String>,
    /// Monitors in quorum.
    pub quorum: Vec<String>,
    /// Map epoch.
    pub epoch: u64,
    /// OSDs: total, up, in.
    pub osds: (u32, u32, u32),
    /// Pools.
    pub pools: Vec<PoolInfo>,
    /// PGs in all pools, and how many are active (primary up).
    pub pgs: (u64, u64),
    /// Objects stored.
    pub objects: u64,
    /// Logical bytes stored.
    pub stored_bytes: u64,
    /// Raw bytes used on OSD disks (data, metadata and logs: Ceph's `RAW USED`).
    pub used_bytes: u64,
    /// Raw bytes available.
    pub avail_bytes: u64,
    /// Of `used_bytes`, object data (Ceph's `USED`).
    pub data_bytes: u64,
}

/// Result of a monitor command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MonReply {
    /// Done; the line Ceph prints (may be empty).
    Done(String),
    /// `ceph -s`.
    Status(Box<StatusReport>),
    /// A new snapshot id.
    SnapId(SnapId),
    /// Keyring text in Ceph's format.
    Keyring(String),
    /// A base64 key.
    Key(String),
    /// `ceph auth ls`.
    AuthList(Vec<AuthEntry>),
    /// The central config: section -> option -> value.
    Config(BTreeMap<String, BTreeMap<String, String>>),
}

/// One watch as `list_watchers` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherInfo {
    /// The watcher's address as the OSD sees it: `IP:0/GLOBAL_ID` (see `crate::blocklist`).
    pub addr: String,
    /// The watcher's entity (`client.admin`).
    pub entity: String,
    /// The watcher's instance id.
    pub global_id: u64,
    /// The watch's cookie.
    pub cookie: u64,
    /// The watch's timeout in seconds.
    pub timeout_secs: u32,
}

/// One watcher's answer to a notify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyAckInfo {
    /// The watcher's instance id.
    pub global_id: u64,
    /// The watch's cookie.
    pub cookie: u64,
    /// The watcher's reply payload.
    pub payload: Vec<u8>,
}

/// What a notify came to: the acks received, and the watchers that did not ack before the
/// timeout (or whose watch went away meanwhile). Missed watchers mean ETIMEDOUT for the
/// notifier, with this outcome as rados_notify2's reply buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyOutcome {
    /// The notify's id.
    pub notify_id: u64,
    /// Acks, in arrival order.
    pub acks: Vec<NotifyAckInfo>,
    /// `(global_id, cookie)` of watchers that did not ack.
    pub missed: Vec<(u64, u64)>,
}
