//! The monitor's replicated log operations: what a proposer puts in a Raft log entry
//! ([`Proposal`] = clock + [`Op`]) and what applying it returns ([`Outcome`] or [`OpError`]).
//! Everything random or time-dependent (keys, the clock) is chosen by the proposer and carried
//! in the op, so every monitor applying the same log reaches the same state. (The admin
//! commands clients send, which become these ops, are handled in `admin.rs`.)
//!
//! # Persisted encoding
//! A [`Proposal`] is stored in the WAL as `PROPOSAL_VERSION ++ bincode(Proposal)` (through
//! [`quarry_raftlog::EntryCodec`]), and its bytes are pinned by golden tests
//! (`tests/golden/mon_proposal_v1.hex`). bincode 1 writes no field names or lengths, so any
//! change to these types, or to a type inside them (`ServiceKey`, `EntityName`, ...), even a
//! field added at the end, makes old entries undecodable: it needs a new `PROPOSAL_VERSION`
//! and a decoder that still reads the old one (the rule is in `quarry_persist`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use quarry_persist::version::{self, DecodeError};
use serde::{Deserialize, Serialize};

use quarry_auth::{CryptoKey, ServiceKey};
use quarry_types::{EntityName, ErrorCode, OsdId, PgId, PoolId, SnapId};

/// Version byte in front of a [`Proposal`] in the WAL.
pub const PROPOSAL_VERSION: u8 = 5;

/// What errors call a [`Proposal`] payload.
const PROPOSAL_WHAT: &str = "monitor log entry (Proposal)";

impl Proposal {
    /// Appends `PROPOSAL_VERSION ++ bincode(self)` to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        version::encode_into(out, PROPOSAL_VERSION, self);
    }

    /// Decodes what [`Proposal::encode_into`] wrote; a newer version is
    /// [`DecodeError::TooNew`].
    pub fn decode(bytes: &[u8]) -> Result<Proposal, DecodeError> {
        // Versions 2 (pool snapshots), 3 (blocklist adders, pool settings, rename, quotas,
        // OSD marks, central config), 4 (PG remaps, automatic out) and 5 (PG merges) only
        // appended `Op` variants: an older body decodes as the same type.
        let (_, body) = version::split(PROPOSAL_WHAT, PROPOSAL_VERSION, bytes)?;
        version::decode_body(PROPOSAL_WHAT, body)
    }
}

/// One log entry's payload: an operation and the proposer's clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The proposer's wall clock (unix seconds) when it proposed: the only clock apply sees.
    pub now_unix: u64,
    /// What to do.
    pub op: Op,
}

/// A key in the log and in snapshots: Ceph's 28-byte record (type, created, secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<u8>", try_from = "Vec<u8>")]
pub struct StoredKey(pub CryptoKey);

impl From<StoredKey> for Vec<u8> {
    fn from(k: StoredKey) -> Vec<u8> {
        k.0.to_bytes().to_vec()
    }
}

impl TryFrom<Vec<u8>> for StoredKey {
    type Error = String;
    fn try_from(bytes: Vec<u8>) -> Result<StoredKey, String> {
        CryptoKey::from_bytes(&bytes).map(StoredKey).map_err(|e| e.to_string())
    }
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredKey(..)")
    }
}

/// An entity with its key and caps, as carried by bootstrap and import commands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityRecord {
    /// `client.admin`.
    pub entity: EntityName,
    /// Its key.
    pub key: StoredKey,
    /// Caps by service.
    pub caps: BTreeMap<String, String>,
}

/// The operations the monitor's state machine applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// First command of a new cluster (ignored if the state is already bootstrapped).
    Bootstrap {
        /// Cluster id.
        fsid: String,
        /// Initial entities.
        entities: Vec<EntityRecord>,
        /// Registered OSDs and their hosts (`in`, not up).
        osds: Vec<(OsdId, String)>,
        /// Pools: name, pg_num, size (application `rbd` enabled).
        pools: Vec<(String, u32, u32)>,
        /// The first service key.
        service_key: ServiceKey,
        /// Lifetime of service keys in seconds (a new one every half of it).
        service_key_ttl: u64,
        /// The proposing monitor's name and address.
        mon: (String, SocketAddr),
    },
    /// A monitor listens at a new address.
    SetMonAddr {
        /// Monitor name.
        name: String,
        /// Address.
        addr: SocketAddr,
    },
    /// Create a pool.
    PoolCreate {
        /// Name.
        name: String,
        /// PGs.
        pg_num: u32,
        /// Replicas.
        size: u32,
    },
    /// Delete a pool.
    PoolRm {
        /// Name.
        name: String,
    },
    /// Enable an application on a pool.
    PoolApplicationEnable {
        /// Pool name.
        pool: String,
        /// Application.
        app: String,
    },
    /// Allocate a self-managed snapshot id.
    SnapCreate {
        /// Pool.
        pool: PoolId,
    },
    /// Release a self-managed snapshot id.
    SnapRemove {
        /// Pool.
        pool: PoolId,
        /// Snapshot id.
        snap: SnapId,
    },
    /// An OSD booted.
    OsdBoot {
        /// Id.
        id: OsdId,
        /// Listening address.
        addr: SocketAddr,
        /// Host.
        host: String,
    },
    /// The leader saw no beacon from incarnation `up_from` of an OSD for `osd_grace`.
    OsdDown {
        /// Id.
        id: OsdId,
        /// The incarnation that went silent (a newer boot is left alone).
        up_from: u64,
    },
    /// `auth get-or-create`: `key` is used only if the entity does not exist.
    AuthGetOrCreate {
        /// Entity.
        entity: EntityName,
        /// Wanted caps.
        caps: BTreeMap<String, String>,
        /// A fresh key chosen by the proposer.
        key: StoredKey,
    },
    /// `auth caps`: replace an entity's caps.
    AuthCaps {
        /// Entity.
        entity: EntityName,
        /// New caps.
        caps: BTreeMap<String, String>,
    },
    /// `auth del`.
    AuthDel {
        /// Entity.
        entity: EntityName,
    },
    /// `auth import`: add or replace entities.
    AuthImport {
        /// Entities.
        entries: Vec<EntityRecord>,
    },
    /// `osd blocklist add`.
    BlocklistAdd {
        /// `client.x@global_id`, or an address `IP:PORT/NONCE` (canonical form).
        instance: String,
        /// Seconds from `now_unix`.
        expire_secs: u64,
    },
    /// A new current service key (the current one becomes the previous one).
    RotateServiceKey {
        /// The new key.
        key: ServiceKey,
    },
    /// Reserve `count` global ids for client sessions.
    AllocGlobalIds {
        /// How many.
        count: u64,
    },
    /// `osd blocklist rm`: remove an entry (absent: no change).
    BlocklistRm {
        /// The entry's key (`client.x@global_id` or `IP:PORT/NONCE`, canonical).
        entry: String,
    },
    /// Create a pool snapshot (`ceph osd pool mksnap`, librados `snap_create`).
    PoolSnapCreate {
        /// Pool name.
        pool: String,
        /// Snapshot name.
        snap: String,
        /// An existing name is EEXIST (librados) rather than a success (the CLI).
        strict: bool,
    },
    /// Remove a pool snapshot (`ceph osd pool rmsnap`, librados `snap_remove`).
    PoolSnapRemove {
        /// Pool name.
        pool: String,
        /// Snapshot name.
        snap: String,
        /// A missing name is ENOENT (librados) rather than a success (the CLI).
        strict: bool,
    },
    /// `osd blocklist add` (version 3): as `BlocklistAdd`, recording the adding entity; a new
    /// entry is refused (ENOSPC) when `by` already has `max` live entries (the proposer
    /// picks `max` from `mon_blocklist_max` or the admins' hard bound).
    BlocklistAddBy {
        /// `client.x@global_id`, or an address `IP:PORT/NONCE` (canonical form).
        instance: String,
        /// Seconds from `now_unix`.
        expire_secs: u64,
        /// The entity that adds it (`client.locker`).
        by: String,
        /// Most live entries `by` may have added.
        max: u32,
    },
    /// `ceph osd pool set POOL VAR VAL`, and `set-quota` (VAR `quota_max_bytes` or
    /// `quota_max_objects`, VAL in bytes or objects).
    PoolSet {
        /// Pool name.
        pool: String,
        /// Setting (`min_size`, `nodelete`, ...).
        var: String,
        /// Value as typed (`true`, `1`, `2`).
        val: String,
    },
    /// `ceph osd pool rename OLD NEW` (pools are addressed by id: nothing else changes).
    PoolRename {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// The leader saw a pool's stored figures reach (`full`) or leave its quota.
    PoolQuotaFull {
        /// Pool id.
        pool: PoolId,
        /// Reached.
        full: bool,
    },
    /// `ceph osd out|in|down|reweight`.
    OsdMark {
        /// The OSDs named, in order (an unknown one is reported, not an error).
        ids: Vec<OsdId>,
        /// What to do.
        mark: OsdMark,
    },
    /// `ceph config set WHO KEY VALUE` (`value: None`: `ceph config rm WHO KEY`).
    ConfigSet {
        /// Section: `global`, `mon`, `osd`, `client`, or `TYPE.ID`.
        who: String,
        /// Option name (underscores).
        key: String,
        /// New value.
        value: Option<String>,
    },
    /// Version 4: the primary of `pg` committed a Raft membership change from the voters
    /// `from` (the acting set of the map it acted on) to `to` (the PG's up set then). Applied
    /// only if the acting set is still `from` (as a set): acting becomes `to`, in the up set's
    /// order when it is the up set. Otherwise refused (ESTALE), nothing changes.
    PgRemapped {
        /// The PG.
        pg: PgId,
        /// The voters before.
        from: Vec<OsdId>,
        /// The voters now.
        to: Vec<OsdId>,
    },
    /// Version 4: the leader saw OSD `id` down since `down_since` (unix seconds) for
    /// `mon_osd_down_out_interval` and marks it out, as Ceph does; ignored if it booted or
    /// went out meanwhile.
    OsdAutoOut {
        /// The OSD.
        id: OsdId,
        /// The down stamp the leader saw (a newer down is another outage).
        down_since: u64,
    },
    /// Version 5: the primary of `target` applied the merge of PG `source` of the same pool
    /// into it (`quarry_wire::PoolInfo::merging`). Applied only while the pool's map says
    /// that merge is under way: the pool's `pg_num` drops by one (the source was its last
    /// PG) and the next step of the shrink starts. A report of a merge already counted is a
    /// success that changes nothing; any other is refused (ESTALE), nothing changes.
    PgMerged {
        /// The target PG (pool and seed).
        target: PgId,
        /// The source PG's seed.
        source: u32,
    },
}

/// What `ceph osd out|in|down|reweight` does to each OSD named.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum OsdMark {
    /// `ceph osd out`: reweight 0, not `in`.
    Out,
    /// `ceph osd in`: reweight 1, `in`.
    In,
    /// `ceph osd down`: down until the OSD boots again (it does at its next beacon).
    Down,
    /// `ceph osd reweight N W`: the override weight, 0.0..=1.0 (0 is out).
    Reweight(f64),
}

/// What a successful apply returns to the proposer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Done, with the line Ceph prints.
    Done(String),
    /// A new snapshot id.
    SnapId(SnapId),
    /// An entity's key and caps (get-or-create).
    Entity {
        /// Entity.
        entity: EntityName,
        /// Key.
        key: StoredKey,
        /// Caps.
        caps: BTreeMap<String, String>,
    },
    /// An OSD is up as of `epoch`.
    Booted {
        /// Epoch.
        epoch: u64,
        /// Incarnation.
        up_from: u64,
    },
    /// First of the reserved global ids.
    GlobalIds {
        /// First id; the range is `start..start + count`.
        start: u64,
    },
}

/// A refused command: deterministic, so every monitor refuses it the same way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpError {
    /// errno.
    pub code: ErrorCode,
    /// One line a person understands.
    pub message: String,
}

impl OpError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> OpError {
        OpError { code, message: message.into() }
    }

    /// EINVAL.
    pub fn inval(message: impl Into<String>) -> OpError {
        OpError::new(ErrorCode::EINVAL, message)
    }

    /// ENOENT.
    pub fn noent(message: impl Into<String>) -> OpError {
        OpError::new(ErrorCode::ENOENT, message)
    }
}

/// The response type of the Raft state machine.
pub type Applied = Result<Outcome, OpError>;
