//! The object-layer client every Quarry frontend uses (the CLI; later the librados/librbd C
//! ABI and the NBD server): connect to the monitors, authenticate, follow the cluster map,
//! and route op vectors on named objects to the OSDs that hold them. What librados is to
//! Ceph.
//!
//! # Key types
//! - [`ClientConfig`]: monitors, entity, key, timeouts; [`ClientConfig::from_conf`] reads them
//!   from ceph.conf and the common arguments as librados does (`-m`/`mon_host`,
//!   `--id`/`--name`, `key`/`keyfile`/keyring search, `client_mount_timeout`,
//!   `rados_osd_op_timeout`).
//! - [`Rados`]: the async handle: [`Rados::exec`] (one atomic op vector on one object),
//!   [`Rados::list_objects`], [`Rados::command`] (monitor commands), and one-op helpers
//!   (`read`, `write`, `write_full`, `stat`, xattrs, omap...).
//! - [`Watch`], [`WatchEvent`]: watch / notify ([`Rados::watch`], [`Rados::notify`],
//!   [`Rados::notify_ack`], [`Rados::watch_check`], [`Rados::list_watchers`]; the same on
//!   [`IoCtx`] and [`BlockingRados`]); semantics in the `watch` module.
//! - [`BlockingRados`]: the same with its own runtime, for blocking callers (the C ABI).
//! - [`ClientStats`]: counters (map epoch, monitor sessions, tickets, OSD connections).
//! - [`admin`]: Ceph's monitor commands as one call, [`Rados::mon_command`] (what
//!   `rados_mon_command` is), with the parser of the `ceph` tool's words and the plain and
//!   JSON renderers, so every frontend prints the same bytes.
//! - [`ClientError`]: structured errors with [`ClientError::errno`] and a Display Ceph users
//!   recognise (`(2) No such file or directory`).
//!
//! # Connection model
//! One monitor session per client: [`Rados::connect`] tries the monitors in random order
//! (rounds with backoff) until one authenticates us with the entity's key, subscribes to the
//! map (the monitor pushes every newer map; the client keeps the newest), and fetches a
//! ticket for OSD sessions (its session key arrives sealed under the monitor session's key).
//! A background task consumes map pushes, renews the ticket at half its lifetime, and when
//! the monitor session drops (or stops answering: a renewal unanswered for 10 s), hunts again
//! with backoff (configured monitors plus those in the map) until shutdown. A monitor that
//! authenticates us but has no ticket to give yet (fresh cluster) is retried like an
//! unreachable one. A monitor that refuses our key ends `connect` at once with
//! [`ClientError::Auth`] (no retry loop); if it happens later, the refusal is remembered and
//! reported to commands waiting for a session.
//!
//! One pipelined connection per OSD, opened lazily on first use with the current ticket and
//! shared by every task: many requests are in flight on it at once, matched by request id.
//! It is replaced when it closes, when the OSD's address changes, or when the ticket is
//! renewed (calls in flight on the old one finish first).
//!
//! # Routing
//! `pg = pg_of(object, pool.pg_num)`; the request goes to the first OSD of the PG's acting set
//! in the newest map, stamped with that map's epoch. Requests are checked before sending
//! (name length, snapshot context, no mutation of a snapshot, sizes within
//! `OBJECT_SIZE_MAX` and one frame, at most `OP_DATA_BYTES_MAX` of data per vector, else
//! EMSGSIZE); an unknown pool is ENOENT after one map refresh. Every
//! data payload an OSD returns has its crc32c verified; a mismatch is logged and reported as
//! EIO ([`ClientError::Corrupt`]).
//!
//! # Retry rules
//! - `Reply::Retry{epoch}`: wait for a map at least that new (asking the monitor with
//!   `GetMap` if the push is late) and resend; if the OSD is not ahead of us (PG electing a
//!   leader, OSD behind), resend after a backoff or as soon as the map changes.
//! - Connection lost, OSD unreachable, primary down or absent in the map, `EAGAIN`: wait for
//!   the map to change or a backoff (50 ms doubling to 2 s), whichever comes first, and
//!   resend. So an op to a restarting OSD blocks, then succeeds. Every 4th resend also asks
//!   the monitor for the map (a push may have been dropped); an op blocked for 10 s is logged
//!   once as a warning and keeps waiting.
//! - The OSD refuses our ticket (expired, revoked by an auth change): fetch a new ticket once
//!   and retry; a second refusal is [`ClientError::Auth`]. An EPERM reply while our ticket
//!   is within 2 s of expiry, or while the map's `auth_floor` for our entity is about as new
//!   as our ticket or newer, is handled the same way (once per request).
//! - Blocklisting fences the client for good (as librados): once the map lists any
//!   instance it has had (`entity@global_id`; a new monitor session brings a new global id)
//!   or its address (`IP:0/GLOBAL_ID` from the IPs its OSD connections come from, or the
//!   whole IP `IP:0/0`) as blocklisted, every later object op and listing fails with
//!   ESHUTDOWN (Ceph's EBLOCKLISTED) before it is sent. A new [`Rados`] handle is a new
//!   instance. OSDs enforce the same entries on every op (ESHUTDOWN) right before it takes
//!   effect.
//! - Everything else is an answer: `OpReply::Failed{index, code}` is [`ClientError::Op`],
//!   `Reply::Failed{code, message}` is [`ClientError::Failed`]. Not retried.
//! - Monitor commands are resent on the next monitor session if the session drops.
//!
//!
//! # Exactly once, in order
//! Every mutating op vector (and every one with a method call, which may write) carries a
//! request id ([`quarry_types::ReqId`]): a random `client` number this [`Rados`] instance
//! picks once (not the monitor's global id, which changes on a monitor reconnect) and a `tid`
//! from the instance's counter, taken when [`Rados::exec`] is first polled and the same on
//! every resend. The OSD records the reply of each request
//! id (qualified by our entity) in the PG's duplicate table, replicated with the PG and kept
//! across restarts (the last 3000 per PG), so an op resent after its reply was lost gets the
//! first answer instead of running again: an exclusive create reports success, a remove
//! success, a guarded op or a method call its first outcome. A reply with large outputs (over 4 KiB, e.g. a
//! read in a mutating vector) is recorded without their content: a resend gets the outcome
//! with empty outputs. Reads carry no id. Monitor commands are not deduplicated: a resent
//! `PoolCreate` may report EEXIST.
//!
//! Mutations to one object apply in the order they were started (tid order), even pipelined
//! and across `Retry` replies, lost connections and resends: an op to an object is sent
//! (first send or resend) only once every earlier unanswered mutation to that object was sent
//! on the same connection; the OSD proposes the mutations to one object in arrival order and
//! answers `Retry` to a later op of ours while an earlier one it could not propose has not
//! come back (`quarry_osd`'s `op::order`). Ops to different objects do not wait for each
//! other.
//!
//! # Timeouts
//! - `connect_timeout` (`client_mount_timeout`, default 30 s): finding and authenticating to
//!   a monitor in [`Rados::connect`] (which gives up sooner, after 3 s, when every monitor
//!   refuses the connection: nothing listens, the cluster is stopped); the handshake with an
//!   OSD; how long a monitor command waits for a lost monitor session to come back.
//! - `op_timeout` (`rados_osd_op_timeout`, `None` by default): the whole of one object
//!   operation or listing page or monitor command, including every retry; then
//!   [`ClientError::Timeout`] (ETIMEDOUT). `None` waits forever, as librados does, so a VM
//!   disk survives an OSD restart.
//!
//! # Threads and runtimes
//! [`Rados`] is `Clone + Send + Sync`; clones share all state. Its background task and
//! connection tasks run on the tokio runtime that called [`Rados::connect`], which must
//! outlive the handle (use [`BlockingRados`] when there is no runtime). Dropping the last
//! clone stops the background task; [`Rados::shutdown`] also fails pending calls with
//! [`ClientError::Shutdown`]. Shared state lives in `tokio::sync::watch` channels (newest map,
//! monitor session, ticket) read without blocking writers, so the op path takes no lock held
//! across an await except the per-OSD connection slot while a connection is being opened.
//!
//! # Dependencies
//! tokio (the runtime of the wire layer: its `watch` channels carry the shared state),
//! bytes (zero-copy data buffers, as in `Payload`), rand (shuffling the monitors),
//! thiserror (the error enum), tracing (logs where errors are handled), serde_json (monitor
//! command requests and `-f json` replies are JSON, as in Ceph).
//! Never depends on quarry-mon, quarry-osd or quarry-store (only its tests start daemons).

#![warn(missing_docs)]

pub mod admin;
mod blocking;
mod config;
mod error;
mod ioctx;
mod monc;
mod order;
mod osdc;
mod rados;
mod routing;
mod session;
mod shared;
mod watch;

pub use blocking::BlockingRados;
pub use config::{ClientConfig, CONNECT_TIMEOUT_DEFAULT};
pub use error::ClientError;
pub use ioctx::IoCtx;
/// For a process whose runtime has one worker: see the function's doc.
pub use quarry_wire::conn::hash_large_replies_aside;
pub use rados::{ClientStats, ObjectStat, Rados, WaitNotice, WAIT_NOTICE_AFTER};
pub use watch::{Watch, WatchEvent};

pub use quarry_types::{
    CallOrigin, ErrorCode, ObjectOp, OpOutput, PgId, PoolId, SnapContext, SnapId, SNAP_HEAD,
};
pub use quarry_wire::{
    AuthEntry, ClusterMap, MonCommand, MonReply, NotifyAckInfo, NotifyOutcome, OsdInfo, PoolInfo,
    StatusReport, WatcherInfo,
};
