//! Images on a Quarry cluster: Ceph's RBD format 2, the library the `rbd` command, the C ABI
//! (`librbd.so.1`) and the NBD server share, so no frontend holds image logic of its own.
//!
//! # What it owns
//! - Pool-level operations ([`pool`]): create, list, rename, remove, clone (v1 and v2),
//!   children.
//! - An open [`Image`]: header (refreshed from `rbd_header.<id>`), the read/write/discard
//!   path over the data objects ([`layout`]: Ceph's striping rule), copy-on-write through a
//!   clone's parent, the object map, resize, snapshots (ids from the monitor, so the OSDs
//!   trim them), rollback, flatten, image-meta.
//! - The header watch and the exclusive lock ([`lock`]): cooperative hand-off between
//!   writers, and a dead or unresponsive owner blocklisted before its lock is broken.
//! - Ceph's "rbd diff v1" stream ([`diff`]): export-diff, import-diff, merge-diff.
//! - Image namespaces of a pool ([`namespace`]): `pool/ns/image`.
//! - The client cache ([`cache`]): writeback / writethrough / none and read-ahead, under
//!   an open image's read, write, discard and flush; settings from ceph.conf, `CEPH_ARGS`
//!   or per open ([`CacheConfig`]).
//! - Object names ([`names`]) and the image error type ([`RbdError`]).
//!
//! Shared state lives only in the cluster, changed through the server-side `rbd` class
//! (`quarry_cls::rbd`): a header change is one atomic method call, never a client's
//! read-modify-write.
//!
//! Dependencies: `quarry-client` (the cluster), `quarry-conf` (the cache's settings), `quarry-cls` (the `rbd` class's request and
//! reply types), `tokio` (the client is async; object requests of one image operation run
//! concurrently in a `JoinSet`), `bytes`, `serde`, `rand` (image ids), `thiserror`,
//! `tracing`.

#![warn(missing_docs)]

pub mod cache;
pub mod diff;
pub mod error;
pub mod image;
pub mod layout;
pub mod lock;
pub mod names;
pub mod namespace;
pub mod pool;

pub use cache::{CacheConfig, CacheMode, CACHE_OPTIONS};
pub use error::{RbdError, RbdResult};
pub use image::{Image, ImageInfo, OpenOptions};
pub use layout::Layout;
pub use lock::LockMode;
pub use pool::{CloneFormat, CreateOptions, ImageEntry, TrashItem};
pub use quarry_cls::lock::{LockInfo, LockType};
pub use quarry_cls::rbd::{
    features, flags, object_map, ParentInfo, ParentSpec, Protection, SnapshotInfo, TrashEntry,
    TrashSource,
};
