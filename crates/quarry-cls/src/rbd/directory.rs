//! Pool-level image bookkeeping: the id object of a name (`rbd_id.<name>`), the pool
//! directory (`rbd_directory`: name ↔ id), the clone v1 children registry (`rbd_children`),
//! the trash (`rbd_trash`) and the pool's image namespaces (`rbd_namespace`). Each change is one method on one object, so two clients
//! creating the same name cannot both succeed (EEXIST) and a rename is atomic.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use quarry_types::{ErrorCode, MethodCtx, ObjectOp, OpOutput};

use super::{
    exists, nothing, omap_get, omap_rm, omap_scan, omap_set, omap_value, reply, require_exists,
    ParentSpec, TrashEntry,
};
use crate::codec::{decode_input, decode_stored, encode};

/// Most entries one listing call returns.
pub const LIST_MAX: u32 = 1024;

/// Input of `rbd.set_id` (on `rbd_id.<name>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetIdRequest {
    /// The image id.
    pub id: String,
}

/// Input of `rbd.dir_add_image` and `rbd.dir_remove_image`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntryRequest {
    /// Image name.
    pub name: String,
    /// Image id.
    pub id: String,
}

/// Input of `rbd.dir_rename_image`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirRenameRequest {
    /// Current name.
    pub src: String,
    /// New name.
    pub dst: String,
    /// The image id.
    pub id: String,
}

/// Input of `rbd.dir_get_id` (a name) and `rbd.dir_get_name` (an id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRequest {
    /// Name or id.
    pub key: String,
}

/// Input of paged listings (`dir_list`, `trash_list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    /// Entries after this name or id ("" = from the start).
    pub start_after: String,
    /// Most entries (bounded by [`LIST_MAX`]).
    pub max: u32,
}

/// Reply of `rbd.dir_list`: name → id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirList {
    /// Images by name.
    pub images: BTreeMap<String, String>,
    /// More follow.
    pub more: bool,
}

/// Input of `rbd.add_child` / `rbd.remove_child` (clone v1, on `rbd_children`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRegistryRequest {
    /// The parent snapshot.
    pub parent: ParentSpec,
    /// The child image id (in the pool of `rbd_children`).
    pub child_id: String,
}

/// Input of `rbd.trash_add`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashAddRequest {
    /// The image id.
    pub id: String,
    /// What is recorded.
    pub entry: TrashEntry,
}

/// Reply of `rbd.trash_list`: id → entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashList {
    /// Entries by image id.
    pub entries: BTreeMap<String, TrashEntry>,
    /// More follow.
    pub more: bool,
}

const NAME_PREFIX: &str = "name_";
const ID_PREFIX: &str = "id_";

fn checked_name(name: &str) -> Result<(), ErrorCode> {
    if name.is_empty() || name.contains('/') || name.contains('@') {
        return Err(ErrorCode::EINVAL);
    }
    Ok(())
}

/// `rbd.set_id`: writes the image id into `rbd_id.<name>`; EEXIST if it already has data.
pub fn set_id(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: SetIdRequest = decode_input(input)?;
    if req.id.is_empty() || !req.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ErrorCode::EINVAL);
    }
    if exists(ctx)? {
        if let OpOutput::Stat { size, .. } = ctx.op(&ObjectOp::Stat)? {
            if size > 0 {
                return Err(ErrorCode::EEXIST);
            }
        }
    }
    let data = quarry_types::Payload::new(Bytes::from(req.id.into_bytes()));
    ctx.op(&ObjectOp::WriteFull { data })?;
    Ok(nothing())
}

/// `rbd.get_id` (read-only): the id in `rbd_id.<name>`.
pub fn get_id(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let () = decode_input(input)?;
    match ctx.op(&ObjectOp::Read { off: 0, len: 0 })? {
        OpOutput::Data(payload) => {
            let id = String::from_utf8(payload.data.to_vec()).map_err(|_| ErrorCode::EBADMSG)?;
            if id.is_empty() {
                return Err(ErrorCode::ENOENT);
            }
            reply(&id)
        }
        _ => Err(ErrorCode::EIO),
    }
}

/// `rbd.dir_add_image`: EEXIST if the name or the id is already in the directory.
pub fn dir_add_image(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: DirEntryRequest = decode_input(input)?;
    checked_name(&req.name)?;
    if req.id.is_empty() {
        return Err(ErrorCode::EINVAL);
    }
    let name_key = format!("{NAME_PREFIX}{}", req.name);
    let id_key = format!("{ID_PREFIX}{}", req.id);
    if !omap_get(ctx, vec![name_key.clone(), id_key.clone()])?.is_empty() {
        return Err(ErrorCode::EEXIST);
    }
    omap_set(ctx, vec![(name_key, encode(&req.id)), (id_key, encode(&req.name))])?;
    Ok(nothing())
}

/// `rbd.dir_remove_image`: ENOENT unless the directory maps this name to this id.
pub fn dir_remove_image(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: DirEntryRequest = decode_input(input)?;
    require_exists(ctx)?;
    let name_key = format!("{NAME_PREFIX}{}", req.name);
    let stored: Option<String> = omap_value(ctx, &name_key)?;
    if stored.as_deref() != Some(req.id.as_str()) {
        return Err(ErrorCode::ENOENT);
    }
    omap_rm(ctx, vec![name_key, format!("{ID_PREFIX}{}", req.id)])?;
    Ok(nothing())
}

/// `rbd.dir_rename_image`: ENOENT unless `src` maps to the id, EEXIST if `dst` is taken.
pub fn dir_rename_image(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: DirRenameRequest = decode_input(input)?;
    checked_name(&req.dst)?;
    require_exists(ctx)?;
    let src_key = format!("{NAME_PREFIX}{}", req.src);
    let dst_key = format!("{NAME_PREFIX}{}", req.dst);
    let stored: Option<String> = omap_value(ctx, &src_key)?;
    if stored.as_deref() != Some(req.id.as_str()) {
        return Err(ErrorCode::ENOENT);
    }
    if omap_value::<String>(ctx, &dst_key)?.is_some() {
        return Err(ErrorCode::EEXIST);
    }
    omap_rm(ctx, vec![src_key])?;
    omap_set(
        ctx,
        vec![(dst_key, encode(&req.id)), (format!("{ID_PREFIX}{}", req.id), encode(&req.dst))],
    )?;
    Ok(nothing())
}

/// `rbd.dir_get_id` (read-only): the id of a name; ENOENT if absent.
pub fn dir_get_id(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: LookupRequest = decode_input(input)?;
    require_exists(ctx)?;
    let id: String =
        omap_value(ctx, &format!("{NAME_PREFIX}{}", req.key))?.ok_or(ErrorCode::ENOENT)?;
    reply(&id)
}

/// `rbd.dir_get_name` (read-only): the name of an id; ENOENT if absent.
pub fn dir_get_name(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: LookupRequest = decode_input(input)?;
    require_exists(ctx)?;
    let name: String =
        omap_value(ctx, &format!("{ID_PREFIX}{}", req.key))?.ok_or(ErrorCode::ENOENT)?;
    reply(&name)
}

/// `rbd.dir_list` (read-only): a page of name → id (an absent directory is empty).
pub fn dir_list(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: ListRequest = decode_input(input)?;
    if !exists(ctx)? {
        return reply(&DirList { images: BTreeMap::new(), more: false });
    }
    let max = req.max.clamp(1, LIST_MAX) as usize;
    let start = if req.start_after.is_empty() {
        String::new()
    } else {
        format!("{NAME_PREFIX}{}", req.start_after)
    };
    let (entries, more) = omap_scan(ctx, NAME_PREFIX, &start, max)?;
    let mut images = BTreeMap::new();
    for (key, value) in entries {
        images.insert(key[NAME_PREFIX.len()..].to_string(), decode_stored::<String>(&value)?);
    }
    reply(&DirList { images, more })
}

fn parent_key(parent: &ParentSpec) -> String {
    format!(
        "parent_{:016x}_{:016x}_{}/{}",
        parent.pool, parent.snap_id, parent.namespace, parent.image_id
    )
}

/// `rbd.add_child` (clone v1): EEXIST if already registered.
pub fn add_child(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: ChildRegistryRequest = decode_input(input)?;
    let key = parent_key(&req.parent);
    let mut children: Vec<String> = omap_value(ctx, &key)?.unwrap_or_default();
    if children.contains(&req.child_id) {
        return Err(ErrorCode::EEXIST);
    }
    children.push(req.child_id);
    children.sort();
    omap_set(ctx, vec![(key, encode(&children))])?;
    Ok(nothing())
}

/// `rbd.remove_child` (clone v1): ENOENT if not registered.
pub fn remove_child(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: ChildRegistryRequest = decode_input(input)?;
    require_exists(ctx)?;
    let key = parent_key(&req.parent);
    let mut children: Vec<String> = omap_value(ctx, &key)?.unwrap_or_default();
    let before = children.len();
    children.retain(|c| *c != req.child_id);
    if children.len() == before {
        return Err(ErrorCode::ENOENT);
    }
    if children.is_empty() {
        omap_rm(ctx, vec![key])?;
    } else {
        omap_set(ctx, vec![(key, encode(&children))])?;
    }
    Ok(nothing())
}

/// `rbd.get_children` (read-only, clone v1): child ids of a parent snapshot (empty if none).
pub fn get_children(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let parent: ParentSpec = decode_input(input)?;
    if !exists(ctx)? {
        return reply(&Vec::<String>::new());
    }
    let children: Vec<String> = omap_value(ctx, &parent_key(&parent))?.unwrap_or_default();
    reply(&children)
}

/// `rbd.trash_add`: EEXIST if the id is already in the trash.
pub fn trash_add(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: TrashAddRequest = decode_input(input)?;
    if req.id.is_empty() {
        return Err(ErrorCode::EINVAL);
    }
    let key = format!("{ID_PREFIX}{}", req.id);
    if omap_value::<TrashEntry>(ctx, &key)?.is_some() {
        return Err(ErrorCode::EEXIST);
    }
    omap_set(ctx, vec![(key, encode(&req.entry))])?;
    Ok(nothing())
}

/// `rbd.trash_remove`: ENOENT if the id is not in the trash.
pub fn trash_remove(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: LookupRequest = decode_input(input)?;
    require_exists(ctx)?;
    let key = format!("{ID_PREFIX}{}", req.key);
    if omap_value::<TrashEntry>(ctx, &key)?.is_none() {
        return Err(ErrorCode::ENOENT);
    }
    omap_rm(ctx, vec![key])?;
    Ok(nothing())
}

/// `rbd.trash_get` (read-only): one entry; ENOENT if absent.
pub fn trash_get(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: LookupRequest = decode_input(input)?;
    require_exists(ctx)?;
    let entry: TrashEntry =
        omap_value(ctx, &format!("{ID_PREFIX}{}", req.key))?.ok_or(ErrorCode::ENOENT)?;
    reply(&entry)
}

/// `rbd.trash_list` (read-only): a page of id → entry (an absent trash is empty).
pub fn trash_list(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: ListRequest = decode_input(input)?;
    if !exists(ctx)? {
        return reply(&TrashList { entries: BTreeMap::new(), more: false });
    }
    let max = req.max.clamp(1, LIST_MAX) as usize;
    let start = if req.start_after.is_empty() {
        String::new()
    } else {
        format!("{ID_PREFIX}{}", req.start_after)
    };
    let (found, more) = omap_scan(ctx, ID_PREFIX, &start, max)?;
    let mut entries = BTreeMap::new();
    for (key, value) in found {
        entries.insert(key[ID_PREFIX.len()..].to_string(), decode_stored::<TrashEntry>(&value)?);
    }
    reply(&TrashList { entries, more })
}

/// Prefix of the `rbd_namespace` omap keys (Ceph's `name_<ns>`).
const NAMESPACE_PREFIX: &str = "name_";

/// Input of `rbd.namespace_add` and `rbd.namespace_remove` (on `rbd_namespace` of the
/// default namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRequest {
    /// The namespace.
    pub name: String,
}

/// Reply of `rbd.namespace_list`: a page of namespace names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceList {
    /// Names, in order.
    pub names: Vec<String>,
    /// Whether more follow the last one.
    pub more: bool,
}

/// `rbd.namespace_add`: registers a namespace (EEXIST if it is; EINVAL for an empty name).
pub fn namespace_add(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: NamespaceRequest = decode_input(input)?;
    if req.name.is_empty() {
        return Err(ErrorCode::EINVAL);
    }
    let key = format!("{NAMESPACE_PREFIX}{}", req.name);
    if omap_value::<()>(ctx, &key)?.is_some() {
        return Err(ErrorCode::EEXIST);
    }
    omap_set(ctx, vec![(key, encode(&()))])?;
    Ok(nothing())
}

/// `rbd.namespace_remove`: ENOENT if the namespace is not registered.
pub fn namespace_remove(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: NamespaceRequest = decode_input(input)?;
    require_exists(ctx)?;
    let key = format!("{NAMESPACE_PREFIX}{}", req.name);
    if omap_value::<()>(ctx, &key)?.is_none() {
        return Err(ErrorCode::ENOENT);
    }
    omap_rm(ctx, vec![key])?;
    Ok(nothing())
}

/// `rbd.namespace_list` (read-only): a page of namespaces (none registered: empty).
pub fn namespace_list(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: ListRequest = decode_input(input)?;
    if !exists(ctx)? {
        return reply(&NamespaceList { names: Vec::new(), more: false });
    }
    let max = req.max.clamp(1, LIST_MAX) as usize;
    let start = if req.start_after.is_empty() {
        String::new()
    } else {
        format!("{NAMESPACE_PREFIX}{}", req.start_after)
    };
    let (found, more) = omap_scan(ctx, NAMESPACE_PREFIX, &start, max)?;
    let names =
        found.into_iter().map(|(key, _)| key[NAMESPACE_PREFIX.len()..].to_string()).collect();
    reply(&NamespaceList { names, more })
}
