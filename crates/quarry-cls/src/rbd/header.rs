//! Methods on an image header (`rbd_header.<id>`): creation, the whole header in one read,
//! size, features, flags, snapshots (add, remove, rename, move to the trash namespace,
//! protection, limit), the parent link of a clone, clone v2 children of a snapshot,
//! image-meta and timestamps. Every method but `create` needs the header to exist (ENOENT).
//!
//! Errors follow `cls_rbd`: an existing header or snapshot name EEXIST, a snapshot id not
//! newer than `snap_seq` ESTALE, a missing snapshot or parent ENOENT, a protected snapshot
//! or one with children EBUSY, the snapshot limit EDQUOT (ERANGE when set below the current
//! count), unsupported features ENOSYS, an order outside 12..=25 EDOM, other bad input
//! EINVAL.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use quarry_types::{ErrorCode, MethodCtx, ObjectOp, SnapId};

use super::{
    exists, features, nothing, omap_get, omap_rm, omap_scan, omap_set, omap_value, reply,
    require_exists, ParentInfo, Protection, SnapNamespace, SnapshotInfo, ORDER_MAX, ORDER_MIN,
};
use crate::codec::{decode_input, decode_stored, encode};

const SNAPSHOT_PREFIX: &str = "snapshot_";
const CHILD_PREFIX: &str = "child_";
const METADATA_PREFIX: &str = "metadata_";
/// Most image-meta entries one `metadata_list` returns.
pub const METADATA_LIST_MAX: u32 = 1024;

fn snapshot_key(id: SnapId) -> String {
    format!("{SNAPSHOT_PREFIX}{id:016x}")
}

fn child_key(snap: SnapId, child: &ChildSpec) -> String {
    format!("{CHILD_PREFIX}{snap:016x}_{:016x}_{}/{}", child.pool, child.namespace, child.image_id)
}

/// Input of `rbd.create`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    /// Size in bytes.
    pub size: u64,
    /// Object order.
    pub order: u8,
    /// Feature bits.
    pub features: u64,
    /// `rbd_data.<id>`.
    pub object_prefix: String,
    /// Stripe unit in bytes (0: the object size).
    pub stripe_unit: u64,
    /// Stripe count (0: 1).
    pub stripe_count: u64,
}

/// Everything a client needs to open an image or a snapshot of it, in one read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageHeader {
    /// Head size.
    pub size: u64,
    /// Object order.
    pub order: u8,
    /// Feature bits.
    pub features: u64,
    /// Head flags.
    pub flags: u64,
    /// Data object prefix.
    pub object_prefix: String,
    /// Newest snapshot id used.
    pub snap_seq: SnapId,
    /// Every snapshot (user and trash), by ascending id.
    pub snapshots: Vec<SnapshotInfo>,
    /// The head's parent (clones).
    pub parent: Option<ParentInfo>,
    /// Stripe unit in bytes.
    pub stripe_unit: u64,
    /// Stripe count.
    pub stripe_count: u64,
    /// Most user snapshots (None: no limit).
    pub snap_limit: Option<u64>,
    /// When it was created.
    pub create_timestamp: (u64, u32),
    /// Last modification recorded.
    pub modify_timestamp: (u64, u32),
    /// Last access recorded.
    pub access_timestamp: (u64, u32),
}

impl ImageHeader {
    /// The snapshot with id `id`.
    pub fn snapshot(&self, id: SnapId) -> Option<&SnapshotInfo> {
        self.snapshots.iter().find(|s| s.id == id)
    }

    /// The user snapshot named `name`.
    pub fn user_snapshot(&self, name: &str) -> Option<&SnapshotInfo> {
        self.snapshots.iter().find(|s| s.namespace == SnapNamespace::User && s.name == name)
    }

    /// The snapshot context writes of the head carry: `snap_seq` and every snapshot id,
    /// newest first.
    pub fn snap_context(&self) -> quarry_types::SnapContext {
        let mut snaps: Vec<SnapId> = self.snapshots.iter().map(|s| s.id).collect();
        snaps.sort_unstable_by(|a, b| b.cmp(a));
        quarry_types::SnapContext { seq: self.snap_seq, snaps }
    }
}

/// Input of `rbd.set_size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetSizeRequest {
    /// New size in bytes.
    pub size: u64,
}

/// Input of `rbd.set_features`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetFeaturesRequest {
    /// New values of the bits in `mask`.
    pub features: u64,
    /// Which bits change.
    pub mask: u64,
}

/// Input of `rbd.set_flags`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetFlagsRequest {
    /// The snapshot whose flags change (None: the head).
    pub snap_id: Option<SnapId>,
    /// New values of the bits in `mask`.
    pub flags: u64,
    /// Which bits change.
    pub mask: u64,
}

/// Input of `rbd.snapshot_add`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotAddRequest {
    /// The id the monitor allocated.
    pub snap_id: SnapId,
    /// The name.
    pub name: String,
}

/// Input of methods naming one snapshot (`snapshot_remove`, `snapshot_trash_add`,
/// `children_list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapRequest {
    /// The snapshot.
    pub snap_id: SnapId,
}

/// Input of `rbd.snapshot_rename`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRenameRequest {
    /// The snapshot.
    pub snap_id: SnapId,
    /// Its new name.
    pub name: String,
}

/// Input of `rbd.set_protection`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetProtectionRequest {
    /// The snapshot.
    pub snap_id: SnapId,
    /// The new status.
    pub protection: Protection,
}

/// Input of `rbd.set_snap_limit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapLimitRequest {
    /// Most user snapshots (None: no limit).
    pub limit: Option<u64>,
}

/// A clone v2 child image.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChildSpec {
    /// Pool of the child.
    pub pool: u64,
    /// Namespace of the child.
    pub namespace: String,
    /// The child's image id.
    pub image_id: String,
}

/// Input of `rbd.child_attach` and `rbd.child_detach`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRequest {
    /// The parent snapshot.
    pub snap_id: SnapId,
    /// The child.
    pub child: ChildSpec,
}

/// Input of `rbd.metadata_set`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataSetRequest {
    /// Keys and values.
    pub entries: BTreeMap<String, Bytes>,
}

/// Input of `rbd.metadata_get` and `rbd.metadata_remove`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataKeyRequest {
    /// The key.
    pub key: String,
}

/// Input of `rbd.metadata_list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataListRequest {
    /// Keys after this one ("" = from the start).
    pub start_after: String,
    /// Most entries (bounded by [`METADATA_LIST_MAX`]).
    pub max: u32,
}

/// Reply of `rbd.metadata_list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataList {
    /// Entries.
    pub entries: BTreeMap<String, Bytes>,
    /// More entries follow.
    pub more: bool,
}

/// Which timestamp `rbd.set_timestamp` sets to the command's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timestamp {
    /// `modify_timestamp`.
    Modify,
    /// `access_timestamp`.
    Access,
}

fn put<T: Serialize>(key: &str, value: &T) -> (String, Bytes) {
    (key.to_string(), encode(value))
}

fn required<T: serde::de::DeserializeOwned>(
    ctx: &mut dyn MethodCtx,
    key: &str,
) -> Result<T, ErrorCode> {
    omap_value(ctx, key)?.ok_or(ErrorCode::EBADMSG)
}

fn load_snapshot(ctx: &mut dyn MethodCtx, id: SnapId) -> Result<SnapshotInfo, ErrorCode> {
    omap_value(ctx, &snapshot_key(id))?.ok_or(ErrorCode::ENOENT)
}

fn store_snapshot(ctx: &mut dyn MethodCtx, snap: &SnapshotInfo) -> Result<(), ErrorCode> {
    omap_set(ctx, vec![put(&snapshot_key(snap.id), snap)])
}

fn all_snapshots(ctx: &mut dyn MethodCtx) -> Result<Vec<SnapshotInfo>, ErrorCode> {
    let (entries, _) = omap_scan(ctx, SNAPSHOT_PREFIX, "", usize::MAX)?;
    entries.iter().map(|(_, v)| decode_stored(v)).collect()
}

/// `rbd.create`: writes a new header. EEXIST if the header exists.
pub fn create(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: CreateRequest = decode_input(input)?;
    if req.object_prefix.is_empty() {
        return Err(ErrorCode::EINVAL);
    }
    if !(ORDER_MIN..=ORDER_MAX).contains(&req.order) {
        return Err(ErrorCode::EDOM);
    }
    if req.features & !features::SUPPORTED != 0 {
        return Err(ErrorCode::ENOSYS);
    }
    check_feature_dependencies(req.features)?;
    let object_size = 1u64 << req.order;
    let (stripe_unit, stripe_count) = match (req.stripe_unit, req.stripe_count) {
        (0, 0) => (object_size, 1),
        (unit, count) => {
            let unit = if unit == 0 { object_size } else { unit };
            let count = count.max(1);
            if unit > object_size || !object_size.is_multiple_of(unit) || !unit.is_power_of_two() {
                return Err(ErrorCode::EINVAL);
            }
            let default = unit == object_size && count == 1;
            if !default && req.features & features::STRIPINGV2 == 0 {
                return Err(ErrorCode::EINVAL);
            }
            (unit, count)
        }
    };
    if exists(ctx)? {
        return Err(ErrorCode::EEXIST);
    }
    let now = ctx.mtime();
    ctx.op(&ObjectOp::Create { exclusive: true })?;
    let mut vals = vec![
        put("size", &req.size),
        put("order", &req.order),
        put("features", &req.features),
        put("object_prefix", &req.object_prefix),
        put("flags", &0u64),
        put("snap_seq", &0u64),
        put("create_timestamp", &now),
        put("modify_timestamp", &now),
        put("access_timestamp", &now),
    ];
    if req.features & features::STRIPINGV2 != 0 {
        vals.push(put("stripe_unit", &stripe_unit));
        vals.push(put("stripe_count", &stripe_count));
    }
    omap_set(ctx, vals)?;
    Ok(nothing())
}

fn check_feature_dependencies(bits: u64) -> Result<(), ErrorCode> {
    if bits & features::FAST_DIFF != 0 && bits & features::OBJECT_MAP == 0 {
        return Err(ErrorCode::EINVAL);
    }
    if bits & features::OBJECT_MAP != 0 && bits & features::EXCLUSIVE_LOCK == 0 {
        return Err(ErrorCode::EINVAL);
    }
    Ok(())
}

/// Reads the whole header (every snapshot included).
pub fn read_header(ctx: &mut dyn MethodCtx) -> Result<ImageHeader, ErrorCode> {
    require_exists(ctx)?;
    let keys = [
        "size",
        "order",
        "features",
        "object_prefix",
        "flags",
        "snap_seq",
        "parent",
        "stripe_unit",
        "stripe_count",
        "snap_limit",
        "create_timestamp",
        "modify_timestamp",
        "access_timestamp",
    ];
    let mut vals = omap_get(ctx, keys.iter().map(|k| k.to_string()).collect())?;
    fn take<T: serde::de::DeserializeOwned>(
        vals: &mut BTreeMap<String, Bytes>,
        key: &str,
    ) -> Result<Option<T>, ErrorCode> {
        vals.remove(key).map(|b| decode_stored(&b)).transpose()
    }
    let order: u8 = take(&mut vals, "order")?.ok_or(ErrorCode::EBADMSG)?;
    let object_size = 1u64 << order.min(63);
    Ok(ImageHeader {
        size: take(&mut vals, "size")?.ok_or(ErrorCode::EBADMSG)?,
        order,
        features: take(&mut vals, "features")?.ok_or(ErrorCode::EBADMSG)?,
        flags: take(&mut vals, "flags")?.unwrap_or(0),
        object_prefix: take(&mut vals, "object_prefix")?.ok_or(ErrorCode::EBADMSG)?,
        snap_seq: take(&mut vals, "snap_seq")?.unwrap_or(0),
        parent: take(&mut vals, "parent")?,
        stripe_unit: take(&mut vals, "stripe_unit")?.unwrap_or(object_size),
        stripe_count: take(&mut vals, "stripe_count")?.unwrap_or(1),
        snap_limit: take(&mut vals, "snap_limit")?,
        create_timestamp: take(&mut vals, "create_timestamp")?.unwrap_or((0, 0)),
        modify_timestamp: take(&mut vals, "modify_timestamp")?.unwrap_or((0, 0)),
        access_timestamp: take(&mut vals, "access_timestamp")?.unwrap_or((0, 0)),
        snapshots: all_snapshots(ctx)?,
    })
}

/// `rbd.get_image` (read-only): the [`ImageHeader`].
pub fn get_image(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let () = decode_input(input)?;
    reply(&read_header(ctx)?)
}

/// `rbd.set_size`: the head's new size; a clone's overlap shrinks with it.
pub fn set_size(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: SetSizeRequest = decode_input(input)?;
    require_exists(ctx)?;
    let mut vals = vec![put("size", &req.size)];
    if let Some(mut parent) = omap_value::<ParentInfo>(ctx, "parent")? {
        if parent.overlap > req.size {
            parent.overlap = req.size;
            vals.push(put("parent", &parent));
        }
    }
    omap_set(ctx, vals)?;
    Ok(nothing())
}

/// `rbd.set_features`: changes mutable features (EINVAL for others or a broken
/// dependency; deep-flatten can only be disabled).
pub fn set_features(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: SetFeaturesRequest = decode_input(input)?;
    require_exists(ctx)?;
    if req.mask & !(features::MUTABLE | features::DISABLE_ONLY) != 0 {
        return Err(ErrorCode::EINVAL);
    }
    if req.features & req.mask & features::DISABLE_ONLY != 0 {
        return Err(ErrorCode::EINVAL);
    }
    let current: u64 = required(ctx, "features")?;
    let new = (current & !req.mask) | (req.features & req.mask);
    check_feature_dependencies(new)?;
    omap_set(ctx, vec![put("features", &new)])?;
    Ok(nothing())
}

/// `rbd.set_flags`: flags of the head or of a snapshot.
pub fn set_flags(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: SetFlagsRequest = decode_input(input)?;
    require_exists(ctx)?;
    match req.snap_id {
        None => {
            let current: u64 = omap_value(ctx, "flags")?.unwrap_or(0);
            let new = (current & !req.mask) | (req.flags & req.mask);
            omap_set(ctx, vec![put("flags", &new)])?;
        }
        Some(id) => {
            let mut snap = load_snapshot(ctx, id)?;
            snap.flags = (snap.flags & !req.mask) | (req.flags & req.mask);
            store_snapshot(ctx, &snap)?;
        }
    }
    Ok(nothing())
}

/// `rbd.snapshot_add`: records a user snapshot of the head taken now.
pub fn snapshot_add(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: SnapshotAddRequest = decode_input(input)?;
    if req.name.is_empty() {
        return Err(ErrorCode::EINVAL);
    }
    let header = read_header(ctx)?;
    if header.user_snapshot(&req.name).is_some() || header.snapshot(req.snap_id).is_some() {
        return Err(ErrorCode::EEXIST);
    }
    if req.snap_id <= header.snap_seq {
        return Err(ErrorCode::ESTALE);
    }
    let users =
        header.snapshots.iter().filter(|s| s.namespace == SnapNamespace::User).count() as u64;
    if header.snap_limit.is_some_and(|limit| users >= limit) {
        return Err(ErrorCode::EDQUOT);
    }
    let snap = SnapshotInfo {
        id: req.snap_id,
        name: req.name,
        namespace: SnapNamespace::User,
        size: header.size,
        features: header.features,
        flags: header.flags,
        parent: header.parent.clone(),
        protection: Protection::Unprotected,
        child_count: 0,
        timestamp: ctx.mtime(),
    };
    store_snapshot(ctx, &snap)?;
    omap_set(ctx, vec![put("snap_seq", &req.snap_id)])?;
    Ok(nothing())
}

/// `rbd.snapshot_remove`: forgets a snapshot. EBUSY if it is protected or has clone v2
/// children (move it to the trash namespace instead).
pub fn snapshot_remove(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: SnapRequest = decode_input(input)?;
    require_exists(ctx)?;
    let snap = load_snapshot(ctx, req.snap_id)?;
    if snap.protection != Protection::Unprotected || snap.child_count > 0 {
        return Err(ErrorCode::EBUSY);
    }
    omap_rm(ctx, vec![snapshot_key(req.snap_id)])?;
    Ok(nothing())
}

/// `rbd.snapshot_trash_add`: moves a user snapshot that clone v2 children still read to the
/// trash namespace (its name is free again); it goes when its last child detaches.
pub fn snapshot_trash_add(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: SnapRequest = decode_input(input)?;
    require_exists(ctx)?;
    let mut snap = load_snapshot(ctx, req.snap_id)?;
    if snap.namespace != SnapNamespace::User {
        return Err(ErrorCode::EEXIST);
    }
    if snap.protection == Protection::Protected {
        return Err(ErrorCode::EBUSY);
    }
    snap.namespace = SnapNamespace::Trash { original_name: snap.name.clone() };
    snap.name = format!("trash.{:016x}", snap.id);
    store_snapshot(ctx, &snap)?;
    Ok(nothing())
}

/// `rbd.snapshot_rename`: EEXIST if another user snapshot has the name.
pub fn snapshot_rename(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: SnapshotRenameRequest = decode_input(input)?;
    if req.name.is_empty() {
        return Err(ErrorCode::EINVAL);
    }
    let header = read_header(ctx)?;
    let mut snap = header.snapshot(req.snap_id).cloned().ok_or(ErrorCode::ENOENT)?;
    if snap.namespace != SnapNamespace::User {
        return Err(ErrorCode::ENOENT);
    }
    if header.user_snapshot(&req.name).is_some_and(|other| other.id != req.snap_id) {
        return Err(ErrorCode::EEXIST);
    }
    snap.name = req.name;
    store_snapshot(ctx, &snap)?;
    Ok(nothing())
}

/// `rbd.set_protection`: needs the layering feature (EINVAL); a snapshot with clone v2
/// children stays protected (EBUSY).
pub fn set_protection(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: SetProtectionRequest = decode_input(input)?;
    require_exists(ctx)?;
    let bits: u64 = required(ctx, "features")?;
    if bits & features::LAYERING == 0 {
        return Err(ErrorCode::EINVAL);
    }
    let mut snap = load_snapshot(ctx, req.snap_id)?;
    if snap.namespace != SnapNamespace::User {
        return Err(ErrorCode::ENOENT);
    }
    if req.protection != Protection::Protected && snap.child_count > 0 {
        return Err(ErrorCode::EBUSY);
    }
    snap.protection = req.protection;
    store_snapshot(ctx, &snap)?;
    Ok(nothing())
}

/// `rbd.set_snap_limit`: ERANGE below the current number of user snapshots.
pub fn set_snap_limit(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: SnapLimitRequest = decode_input(input)?;
    let header = read_header(ctx)?;
    match req.limit {
        None => omap_rm(ctx, vec!["snap_limit".into()])?,
        Some(limit) => {
            let users =
                header.snapshots.iter().filter(|s| s.namespace == SnapNamespace::User).count()
                    as u64;
            if limit < users {
                return Err(ErrorCode::ERANGE);
            }
            omap_set(ctx, vec![put("snap_limit", &limit)])?;
        }
    }
    Ok(nothing())
}

/// `rbd.set_parent`: links a clone to its parent. EEXIST if it has one; needs layering.
pub fn set_parent(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: ParentInfo = decode_input(input)?;
    require_exists(ctx)?;
    let bits: u64 = required(ctx, "features")?;
    if bits & features::LAYERING == 0 || req.spec.image_id.is_empty() {
        return Err(ErrorCode::EINVAL);
    }
    if omap_value::<ParentInfo>(ctx, "parent")?.is_some() {
        return Err(ErrorCode::EEXIST);
    }
    omap_set(ctx, vec![put("parent", &req)])?;
    Ok(nothing())
}

/// Input of `rbd.remove_parent`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveParentRequest {
    /// Snapshots whose parent link stays although the image has deep-flatten: they still
    /// read data through the parent (the client checked).
    pub keep: Vec<SnapId>,
}

/// `rbd.remove_parent`: the clone no longer reads through (flatten done). With deep-flatten
/// its snapshots stop reading through too, except those in `keep`; without it they all keep
/// their parent.
pub fn remove_parent(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: RemoveParentRequest = decode_input(input)?;
    let header = read_header(ctx)?;
    if header.parent.is_none() {
        return Err(ErrorCode::ENOENT);
    }
    omap_rm(ctx, vec!["parent".into()])?;
    if header.features & features::DEEP_FLATTEN != 0 {
        let unlinked = header
            .snapshots
            .into_iter()
            .filter(|s| s.parent.is_some() && !req.keep.contains(&s.id));
        for mut snap in unlinked {
            snap.parent = None;
            store_snapshot(ctx, &snap)?;
        }
    }
    Ok(nothing())
}

/// `rbd.child_attach`: records a clone v2 child of a snapshot (EEXIST if already there).
pub fn child_attach(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: ChildRequest = decode_input(input)?;
    require_exists(ctx)?;
    let mut snap = load_snapshot(ctx, req.snap_id)?;
    if snap.namespace != SnapNamespace::User {
        return Err(ErrorCode::ENOENT);
    }
    let key = child_key(req.snap_id, &req.child);
    if omap_get(ctx, vec![key.clone()])?.contains_key(&key) {
        return Err(ErrorCode::EEXIST);
    }
    snap.child_count += 1;
    store_snapshot(ctx, &snap)?;
    omap_set(ctx, vec![put(&key, &req.child)])?;
    Ok(nothing())
}

/// `rbd.child_detach`: forgets a clone v2 child; replies the snapshot's remaining count (the
/// caller removes a trashed snapshot that reaches 0).
pub fn child_detach(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: ChildRequest = decode_input(input)?;
    require_exists(ctx)?;
    let mut snap = load_snapshot(ctx, req.snap_id)?;
    let key = child_key(req.snap_id, &req.child);
    if !omap_get(ctx, vec![key.clone()])?.contains_key(&key) {
        return Err(ErrorCode::ENOENT);
    }
    snap.child_count = snap.child_count.saturating_sub(1);
    store_snapshot(ctx, &snap)?;
    omap_rm(ctx, vec![key])?;
    reply(&snap.child_count)
}

/// `rbd.children_list` (read-only): clone v2 children of a snapshot.
pub fn children_list(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: SnapRequest = decode_input(input)?;
    require_exists(ctx)?;
    load_snapshot(ctx, req.snap_id)?;
    let prefix = format!("{CHILD_PREFIX}{:016x}_", req.snap_id);
    let (entries, _) = omap_scan(ctx, &prefix, "", usize::MAX)?;
    let children: Result<Vec<ChildSpec>, _> =
        entries.iter().map(|(_, v)| decode_stored(v)).collect();
    reply(&children?)
}

/// `rbd.metadata_set`: sets image-meta entries (EINVAL for an empty key).
pub fn metadata_set(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: MetadataSetRequest = decode_input(input)?;
    require_exists(ctx)?;
    if req.entries.keys().any(|k| k.is_empty()) {
        return Err(ErrorCode::EINVAL);
    }
    let vals = req.entries.into_iter().map(|(k, v)| (format!("{METADATA_PREFIX}{k}"), v));
    omap_set(ctx, vals.collect())?;
    Ok(nothing())
}

/// `rbd.metadata_remove`: ENOENT if the key is absent.
pub fn metadata_remove(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: MetadataKeyRequest = decode_input(input)?;
    require_exists(ctx)?;
    let key = format!("{METADATA_PREFIX}{}", req.key);
    if !omap_get(ctx, vec![key.clone()])?.contains_key(&key) {
        return Err(ErrorCode::ENOENT);
    }
    omap_rm(ctx, vec![key])?;
    Ok(nothing())
}

/// `rbd.metadata_get` (read-only): the raw value; ENOENT if absent.
pub fn metadata_get(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: MetadataKeyRequest = decode_input(input)?;
    require_exists(ctx)?;
    let key = format!("{METADATA_PREFIX}{}", req.key);
    omap_get(ctx, vec![key.clone()])?.remove(&key).ok_or(ErrorCode::ENOENT)
}

/// `rbd.metadata_list` (read-only): a page of image-meta entries.
pub fn metadata_list(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: MetadataListRequest = decode_input(input)?;
    require_exists(ctx)?;
    let max = req.max.clamp(1, METADATA_LIST_MAX) as usize;
    let start = if req.start_after.is_empty() {
        String::new()
    } else {
        format!("{METADATA_PREFIX}{}", req.start_after)
    };
    let (entries, more) = omap_scan(ctx, METADATA_PREFIX, &start, max)?;
    let entries =
        entries.into_iter().map(|(k, v)| (k[METADATA_PREFIX.len()..].to_string(), v)).collect();
    reply(&MetadataList { entries, more })
}

/// `rbd.set_timestamp`: sets the modify or access timestamp to the command's clock.
pub fn set_timestamp(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let which: Timestamp = decode_input(input)?;
    require_exists(ctx)?;
    let key = match which {
        Timestamp::Modify => "modify_timestamp",
        Timestamp::Access => "access_timestamp",
    };
    let now = ctx.mtime();
    omap_set(ctx, vec![put(key, &now)])?;
    Ok(nothing())
}

/// `rbd.copyup` (on a data object): writes a clone's copy of its parent's data (the raw
/// input bytes) only if the object does not exist yet, so a copy-up racing another write
/// of the same object never overwrites newer data. Empty input creates an empty object.
pub fn copyup(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    if exists(ctx)? {
        return Ok(nothing());
    }
    if input.is_empty() {
        ctx.op(&ObjectOp::Create { exclusive: false })?;
    } else {
        let data = quarry_types::Payload::new(Bytes::copy_from_slice(input));
        ctx.op(&ObjectOp::WriteFull { data })?;
    }
    Ok(nothing())
}
