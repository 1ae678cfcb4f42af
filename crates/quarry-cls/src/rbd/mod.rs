//! The `rbd` class: the server side of images (Ceph's `cls_rbd`). Every change to an image's
//! shared state is one method call, atomic on one object, so two clients (or a client and
//! the CLI) can never interleave half-done header updates.
//!
//! # Objects of a pool (Ceph's format-2 layout)
//! | object | what it holds |
//! |---|---|
//! | `rbd_id.<name>` | data: the image id (UTF-8), set once ([`set_id`](directory::set_id)) |
//! | `rbd_header.<id>` | omap: the image header ([`header`]) |
//! | `rbd_directory` | omap `name_<name>` → id, `id_<id>` → name ([`directory`]) |
//! | `rbd_children` | omap: clone v1 registry, parent snapshot → child image ids |
//! | `rbd_trash` | omap `id_<id>` → [`TrashEntry`] |
//! | `rbd_namespace` (default namespace only) | omap `name_<ns>` → `()`: the image namespaces |
//! | `rbd_object_map.<id>[.<snap 016x>]` | data: 2 bits per data object ([`object_map`]) |
//! | `rbd_data.<id>.<object 016x>` | image data, 2^order bytes each (plain writes, no method) |
//!
//! # Header keys (omap of `rbd_header.<id>`)
//! Each value is `codec` (version byte ++ bincode) of the named type; Ceph's key names, so
//! `rados listomapkeys rbd_header.<id>` reads as it does on Ceph.
//!
//! | key | value |
//! |---|---|
//! | `size` | u64 bytes |
//! | `order` | u8 (object size 2^order, 12..=25) |
//! | `features` | u64 feature bits ([`features`]) |
//! | `object_prefix` | String (`rbd_data.<id>`) |
//! | `flags` | u64 ([`flags`]) |
//! | `snap_seq` | u64: newest snapshot id this image has used |
//! | `create_timestamp`, `modify_timestamp`, `access_timestamp` | (u64 s, u32 ns) |
//! | `stripe_unit`, `stripe_count` | u64 (only with STRIPINGV2) |
//! | `snap_limit` | u64 (absent: no limit) |
//! | `parent` | [`ParentInfo`] (clones only) |
//! | `snapshot_<id 016x>` | [`SnapshotInfo`] |
//! | `child_<snap 016x>_<pool 016x>_<ns>/<id>` | `()`: a clone v2 child of that snapshot |
//! | `metadata_<key>` | raw bytes (`rbd image-meta`) |
//!
//! Golden bytes of every stored type: `tests/golden/rbd_v1.hex` (the `codec` rule: a
//! changed type needs a new version and a decoder for the old one).

pub mod directory;
pub mod header;
pub mod object_map;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use quarry_types::{ErrorCode, MethodCtx, ObjectOp, OpOutput, SnapId};

use crate::codec::{decode_stored, encode};

/// Image feature bits (Ceph's `RBD_FEATURE_*`, same values: they are part of the C ABI).
pub mod features {
    /// Copy-on-write clones.
    pub const LAYERING: u64 = 1 << 0;
    /// Striping with a stripe unit smaller than the object.
    pub const STRIPINGV2: u64 = 1 << 1;
    /// One writer at a time.
    pub const EXCLUSIVE_LOCK: u64 = 1 << 2;
    /// Which objects exist.
    pub const OBJECT_MAP: u64 = 1 << 3;
    /// Which objects changed since a snapshot.
    pub const FAST_DIFF: u64 = 1 << 4;
    /// Snapshots of clones are independent of the parent after flatten.
    pub const DEEP_FLATTEN: u64 = 1 << 5;
    /// Journaling (not supported).
    pub const JOURNALING: u64 = 1 << 6;
    /// Data objects in another pool.
    pub const DATA_POOL: u64 = 1 << 7;
    /// Operations clients must know (clone v2).
    pub const OPERATIONS: u64 = 1 << 8;
    /// Every feature this build implements.
    pub const SUPPORTED: u64 =
        LAYERING | STRIPINGV2 | EXCLUSIVE_LOCK | OBJECT_MAP | FAST_DIFF | DEEP_FLATTEN | OPERATIONS;
    /// The default set (`rbd_default_features = 61`, as in the seed's `rbd info`).
    pub const DEFAULT: u64 = LAYERING | EXCLUSIVE_LOCK | OBJECT_MAP | FAST_DIFF | DEEP_FLATTEN;
    /// Features `rbd feature enable|disable` may change after creation.
    pub const MUTABLE: u64 = EXCLUSIVE_LOCK | OBJECT_MAP | FAST_DIFF;
    /// Features that may be disabled (but never enabled again) after creation.
    pub const DISABLE_ONLY: u64 = DEEP_FLATTEN;

    /// Ceph's names, in bit order (what `rbd info` prints).
    pub const NAMES: &[(u64, &str)] = &[
        (LAYERING, "layering"),
        (STRIPINGV2, "striping"),
        (EXCLUSIVE_LOCK, "exclusive-lock"),
        (OBJECT_MAP, "object-map"),
        (FAST_DIFF, "fast-diff"),
        (DEEP_FLATTEN, "deep-flatten"),
        (JOURNALING, "journaling"),
        (DATA_POOL, "data-pool"),
        (OPERATIONS, "operations"),
    ];

    /// The names of the bits set in `bits`, in bit order.
    pub fn names(bits: u64) -> Vec<&'static str> {
        NAMES.iter().filter(|(bit, _)| bits & bit != 0).map(|(_, name)| *name).collect()
    }

    /// The bit of a feature name (`layering`), or None.
    pub fn by_name(name: &str) -> Option<u64> {
        NAMES.iter().find(|(_, n)| *n == name).map(|(bit, _)| *bit)
    }
}

/// Image flags (Ceph's `RBD_FLAG_*`).
pub mod flags {
    /// The object map cannot be trusted (rebuild it).
    pub const OBJECT_MAP_INVALID: u64 = 1 << 0;
    /// The fast-diff data cannot be trusted.
    pub const FAST_DIFF_INVALID: u64 = 1 << 1;
}

/// Smallest object order (4 KiB objects).
pub const ORDER_MIN: u8 = 12;
/// Largest object order (32 MiB objects).
pub const ORDER_MAX: u8 = 25;

/// Whether a snapshot may be cloned and removed (Ceph's `RBD_PROTECTION_STATUS_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protection {
    /// Removable, not cloneable with clone v1.
    Unprotected,
    /// Being unprotected (children are being checked).
    Unprotecting,
    /// Cloneable, not removable.
    Protected,
}

/// Which namespace a snapshot lives in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapNamespace {
    /// A user's snapshot (`rbd snap create`).
    User,
    /// A removed snapshot that clone v2 children still read: kept until the last child goes.
    Trash {
        /// The name it had.
        original_name: String,
    },
}

/// A clone's parent: an image snapshot, possibly in another pool or namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ParentSpec {
    /// Pool id of the parent image.
    pub pool: u64,
    /// Namespace of the parent image ("" = default).
    pub namespace: String,
    /// The parent image's id.
    pub image_id: String,
    /// The parent snapshot.
    pub snap_id: SnapId,
}

/// A clone's link to its parent and how many bytes of the parent it still sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentInfo {
    /// The parent snapshot.
    pub spec: ParentSpec,
    /// Bytes of the clone that read through to the parent (shrinks with the clone).
    pub overlap: u64,
}

/// One snapshot of an image, as stored under `snapshot_<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The cluster-allocated snapshot id.
    pub id: SnapId,
    /// Its name (unique among the image's user snapshots).
    pub name: String,
    /// User or trash.
    pub namespace: SnapNamespace,
    /// Image size when it was taken.
    pub size: u64,
    /// Features when it was taken.
    pub features: u64,
    /// Flags of the snapshot (its own object map validity).
    pub flags: u64,
    /// The head's parent when it was taken (a snapshot of a clone reads through too).
    pub parent: Option<ParentInfo>,
    /// Protection status.
    pub protection: Protection,
    /// Clone v2 children attached to it.
    pub child_count: u64,
    /// When it was taken (seconds, nanoseconds).
    pub timestamp: (u64, u32),
}

/// Why and since when an image is in the trash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrashSource {
    /// `rbd trash mv`.
    User,
    /// `rbd rm` of an image that goes through the trash (being removed).
    Removing,
}

/// An image in the trash (`rbd_trash` omap `id_<id>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    /// Why it is there.
    pub source: TrashSource,
    /// The name it had.
    pub name: String,
    /// When it was moved (seconds, nanoseconds).
    pub deletion_time: (u64, u32),
    /// Not removable before this time without `--force` (seconds, nanoseconds).
    pub deferment_end_time: (u64, u32),
}

/// Runs `op` and expects an output of the given shape.
fn op(ctx: &mut dyn MethodCtx, op: ObjectOp) -> Result<OpOutput, ErrorCode> {
    ctx.op(&op)
}

/// Omap values of `keys` (absent keys left out; an absent object has none: methods that
/// need the object check that first).
fn omap_get(
    ctx: &mut dyn MethodCtx,
    keys: Vec<String>,
) -> Result<std::collections::BTreeMap<String, Bytes>, ErrorCode> {
    match op(ctx, ObjectOp::OmapGetValsByKeys { keys }) {
        Ok(OpOutput::OmapVals { vals, .. }) => Ok(vals),
        Ok(_) => Err(ErrorCode::EIO),
        Err(code) if code == ErrorCode::ENOENT => Ok(Default::default()),
        Err(code) => Err(code),
    }
}

/// One omap value decoded as `T`, None if absent; EBADMSG if it does not decode.
fn omap_value<T: serde::de::DeserializeOwned>(
    ctx: &mut dyn MethodCtx,
    key: &str,
) -> Result<Option<T>, ErrorCode> {
    match omap_get(ctx, vec![key.to_string()])?.remove(key) {
        None => Ok(None),
        Some(bytes) => decode_stored(&bytes).map(Some),
    }
}

/// Every omap entry with `prefix` after `start_after`, at most `max` (all pages).
fn omap_scan(
    ctx: &mut dyn MethodCtx,
    prefix: &str,
    start_after: &str,
    max: usize,
) -> Result<(Vec<(String, Bytes)>, bool), ErrorCode> {
    let mut out = Vec::new();
    let mut after = if start_after.is_empty() { String::new() } else { start_after.to_string() };
    loop {
        let want = (max - out.len()).min(1024) as u32;
        let OpOutput::OmapVals { vals, more } = op(
            ctx,
            ObjectOp::OmapGetVals { start_after: after.clone(), prefix: prefix.into(), max: want },
        )?
        else {
            return Err(ErrorCode::EIO);
        };
        let got = vals.len();
        if let Some(last) = vals.keys().next_back() {
            after = last.clone();
        }
        out.extend(vals);
        if !more || got == 0 {
            return Ok((out, false));
        }
        if out.len() >= max {
            return Ok((out, true));
        }
    }
}

/// Sets omap entries.
fn omap_set(ctx: &mut dyn MethodCtx, vals: Vec<(String, Bytes)>) -> Result<(), ErrorCode> {
    op(ctx, ObjectOp::OmapSetVals { vals: vals.into_iter().collect() }).map(|_| ())
}

/// Removes omap keys.
fn omap_rm(ctx: &mut dyn MethodCtx, keys: Vec<String>) -> Result<(), ErrorCode> {
    op(ctx, ObjectOp::OmapRmKeys { keys }).map(|_| ())
}

/// ENOENT unless the object exists.
fn require_exists(ctx: &mut dyn MethodCtx) -> Result<(), ErrorCode> {
    op(ctx, ObjectOp::AssertExists).map(|_| ())
}

/// Whether the object exists.
fn exists(ctx: &mut dyn MethodCtx) -> Result<bool, ErrorCode> {
    match op(ctx, ObjectOp::AssertExists) {
        Ok(_) => Ok(true),
        Err(code) if code == ErrorCode::ENOENT => Ok(false),
        Err(code) => Err(code),
    }
}

fn nothing() -> Bytes {
    Bytes::new()
}

/// Encodes `value` as a method reply or stored value.
fn reply<T: Serialize>(value: &T) -> Result<Bytes, ErrorCode> {
    Ok(encode(value))
}

/// A `rbd.<method>` call op with `input` encoded (client side).
pub fn call<T: Serialize>(method: &str, input: &T) -> ObjectOp {
    crate::call_op("rbd", method, encode(input))
}

/// Decodes what a `rbd.<method>` call returned (client side): EBADMSG if it does not decode.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ErrorCode> {
    crate::codec::decode_reply(bytes)
}
