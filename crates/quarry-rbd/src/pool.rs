//! Pool-level image operations (librbd's `RBD` class): create, list, rename, remove, clone.
//! Each is a short sequence of object-method calls in a fixed order, chosen so that a crash
//! between two steps leaves something `rbd rm` or a retry can finish, never a name pointing
//! at a half-made image that looks whole:
//!
//! - create: `rbd_id.<name>` (set once: the name is taken) → directory entry → header →
//!   object map. A failure undoes the earlier steps in reverse.
//! - remove: refuse with watchers (EBUSY) or snapshots (ENOTEMPTY) → data objects → object
//!   maps → detach from the parent → header → directory entry → id object.

use bytes::Bytes;
use quarry_client::{ClientError, IoCtx};
use quarry_cls::rbd::directory::{
    ChildRegistryRequest, DirEntryRequest, DirList, DirRenameRequest, ListRequest, LookupRequest,
    SetIdRequest, TrashAddRequest, TrashList, LIST_MAX,
};
use quarry_cls::rbd::header::{
    ChildRequest, ChildSpec, CreateRequest, ImageHeader, RemoveParentRequest,
};
use quarry_cls::rbd::object_map::{ResizeRequest, NONEXISTENT};
use quarry_cls::rbd::{
    self as cls, features, ParentInfo, ParentSpec, Protection, SnapNamespace, TrashEntry,
    TrashSource,
};
use quarry_types::{ErrorCode, SnapId};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{is, RbdError, RbdResult};
use crate::image::{self, Image, OpenOptions};
use crate::layout::{data_object, Layout};
use crate::names;

/// How to create an image (librbd's image options).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// Size in bytes.
    pub size: u64,
    /// Object order (object size 2^order); default 22.
    pub order: u8,
    /// Feature bits; default [`features::DEFAULT`].
    pub features: u64,
    /// Stripe unit (0: the object size).
    pub stripe_unit: u64,
    /// Stripe count (0: 1).
    pub stripe_count: u64,
}

impl CreateOptions {
    /// Defaults for an image of `size` bytes.
    pub fn new(size: u64) -> CreateOptions {
        CreateOptions {
            size,
            order: 22,
            features: features::DEFAULT,
            stripe_unit: 0,
            stripe_count: 0,
        }
    }
}

/// Which clone format to use (`rbd_default_clone_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloneFormat {
    /// The parent snapshot must be protected; the child is registered in `rbd_children`.
    V1,
    /// No protection needed: the child is attached to the parent snapshot in its header,
    /// and removing the snapshot is deferred until its last child is gone.
    V2,
}

/// One entry of `rbd ls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageEntry {
    /// Image name.
    pub name: String,
    /// Image id.
    pub id: String,
}

/// A new image id: the client instance and a random number in hex, as librbd makes them
/// (`25dbd6b8b4567`).
fn new_image_id(io: &IoCtx) -> String {
    let extra: u32 = rand::random();
    let mut id = format!("{:x}{:08x}", io.rados().global_id(), extra);
    id.truncate(16);
    id
}

/// Creates image `name` (EEXIST if the name is taken; EINVAL/EDOM/ENOSYS for bad options,
/// as `rbd create` reports them).
pub async fn create(io: &IoCtx, name: &str, options: &CreateOptions) -> RbdResult<String> {
    names::check_image_name(name)?;
    let id = new_image_id(io);
    let request = CreateRequest {
        size: options.size,
        order: options.order,
        features: options.features,
        object_prefix: format!("rbd_data.{id}"),
        stripe_unit: options.stripe_unit,
        stripe_count: options.stripe_count,
    };
    // Validate before taking the name, so bad options leave nothing behind.
    check_create(&request)?;
    crate::namespace::require(io).await?;
    let id_object = names::id_object(name);
    call(io, &id_object, "set_id", &SetIdRequest { id: id.clone() }).await.map_err(|e| {
        if e.errno() == ErrorCode::EEXIST {
            RbdError::code(ErrorCode::EEXIST)
        } else {
            e
        }
    })?;
    let dir_entry = DirEntryRequest { name: name.into(), id: id.clone() };
    if let Err(e) = call(io, names::DIRECTORY, "dir_add_image", &dir_entry).await {
        let _ = io.remove(&id_object).await;
        return Err(e);
    }
    let header = names::header_object(&id);
    let made = async {
        call(io, &header, "create", &request).await?;
        if options.features & features::OBJECT_MAP != 0 {
            let layout = layout_of(&request);
            let resize = ResizeRequest {
                object_count: layout.object_count(options.size),
                default_state: NONEXISTENT,
            };
            call(io, &names::object_map(&id, None), "object_map_resize", &resize).await?;
        }
        Ok::<(), RbdError>(())
    };
    if let Err(e) = made.await {
        let _ = io.remove(&names::object_map(&id, None)).await;
        let _ = io.remove(&header).await;
        let _ = call(io, names::DIRECTORY, "dir_remove_image", &dir_entry).await;
        let _ = io.remove(&id_object).await;
        return Err(e);
    }
    tracing::debug!(name, id, size = options.size, "image created");
    Ok(id)
}

fn check_create(req: &CreateRequest) -> RbdResult<()> {
    if !(cls::ORDER_MIN..=cls::ORDER_MAX).contains(&req.order) {
        return Err(RbdError::refused(ErrorCode::EDOM, "order must be in the range [12, 25]"));
    }
    if req.features & !features::SUPPORTED != 0 {
        return Err(RbdError::refused(ErrorCode::ENOSYS, "image features not supported"));
    }
    if req.features & features::FAST_DIFF != 0 && req.features & features::OBJECT_MAP == 0 {
        return Err(RbdError::refused(ErrorCode::EINVAL, "fast-diff requires object-map"));
    }
    if req.features & features::OBJECT_MAP != 0 && req.features & features::EXCLUSIVE_LOCK == 0 {
        return Err(RbdError::refused(ErrorCode::EINVAL, "object-map requires exclusive-lock"));
    }
    let object_size = 1u64 << req.order;
    if req.stripe_unit != 0 || req.stripe_count > 1 {
        let unit = if req.stripe_unit == 0 { object_size } else { req.stripe_unit };
        if unit > object_size || !object_size.is_multiple_of(unit) || !unit.is_power_of_two() {
            return Err(RbdError::refused(
                ErrorCode::EINVAL,
                "stripe unit must be a power of two dividing the object size",
            ));
        }
    }
    Ok(())
}

fn layout_of(req: &CreateRequest) -> Layout {
    let object_size = 1u64 << req.order;
    Layout {
        order: req.order,
        stripe_unit: if req.stripe_unit == 0 { object_size } else { req.stripe_unit },
        stripe_count: req.stripe_count.max(1),
    }
}

/// Every image in the pool's directory, by name.
pub async fn list(io: &IoCtx) -> RbdResult<Vec<ImageEntry>> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let req = ListRequest { start_after: after.clone(), max: LIST_MAX };
        let page: DirList = call_read(io, names::DIRECTORY, "dir_list", &req).await?;
        after = page.images.keys().next_back().cloned().unwrap_or_default();
        out.extend(page.images.into_iter().map(|(name, id)| ImageEntry { name, id }));
        if !page.more {
            return Ok(out);
        }
    }
}

/// The id of image `name` (ENOENT if there is none).
pub async fn image_id(io: &IoCtx, name: &str) -> RbdResult<String> {
    call_read(io, &names::id_object(name), "get_id", &()).await
}

/// The name of image id `id` in the pool directory (ENOENT if there is none).
pub async fn image_name(io: &IoCtx, id: &str) -> RbdResult<String> {
    call_read(io, names::DIRECTORY, "dir_get_name", &LookupRequest { key: id.into() }).await
}

/// Renames an image (ENOENT if `src` does not exist, EEXIST if `dst` does).
pub async fn rename(io: &IoCtx, src: &str, dst: &str) -> RbdResult<()> {
    names::check_image_name(dst)?;
    let id = image_id(io, src).await?;
    let new_id_object = names::id_object(dst);
    call(io, &new_id_object, "set_id", &SetIdRequest { id: id.clone() }).await?;
    let req = DirRenameRequest { src: src.into(), dst: dst.into(), id };
    if let Err(e) = call(io, names::DIRECTORY, "dir_rename_image", &req).await {
        let _ = io.remove(&new_id_object).await;
        return Err(e);
    }
    ignore_enoent(io.remove(&names::id_object(src)).await)?;
    Ok(())
}

/// Removes image `name`: EBUSY while it has watchers (someone has it open), ENOTEMPTY
/// while it has snapshots ("image has snapshots - not removing").
pub async fn remove(io: &IoCtx, name: &str) -> RbdResult<()> {
    let id = image_id(io, name).await?;
    remove_image(io, name, &id, |_, _| {}).await
}

/// [`remove`] by id and name, reporting progress (objects done, objects in all).
pub async fn remove_image(
    io: &IoCtx,
    name: &str,
    id: &str,
    mut progress: impl FnMut(u64, u64),
) -> RbdResult<()> {
    let header_object = names::header_object(id);
    let header: Option<ImageHeader> = match call_read(io, &header_object, "get_image", &()).await {
        Ok(h) => Some(h),
        Err(e) if e.errno() == ErrorCode::ENOENT => None,
        Err(e) => return Err(e),
    };
    if let Some(header) = &header {
        let watchers = match io.list_watchers(&header_object).await {
            Ok(w) => w,
            Err(e) if is(&e, ErrorCode::ENOENT) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        if !watchers.is_empty() {
            return Err(RbdError::refused(
                ErrorCode::EBUSY,
                "image still has watchers; wait 30 seconds for them to time out, then try again",
            ));
        }
        if header.snapshots.iter().any(|s| s.namespace == SnapNamespace::User) {
            return Err(RbdError::refused(
                ErrorCode::ENOTEMPTY,
                "image has snapshots - not removing",
            ));
        }
        if header.snapshots.iter().any(|s| s.child_count > 0) {
            return Err(RbdError::refused(
                ErrorCode::EBUSY,
                "image has snapshots with linked clones - not removing",
            ));
        }
        let layout = Layout {
            order: header.order,
            stripe_unit: header.stripe_unit,
            stripe_count: header.stripe_count,
        };
        let count = layout.object_count(header.size);
        let existing: Option<Vec<u64>> = if header.features & features::OBJECT_MAP != 0
            && header.flags & cls::flags::OBJECT_MAP_INVALID == 0
        {
            image::load_object_map(io, id, None)
                .await
                .ok()
                .map(|map| (0..count).filter(|&k| map.get(k) != NONEXISTENT).collect())
        } else {
            None
        };
        let objects: Vec<u64> = existing.unwrap_or_else(|| (0..count).collect());
        let total = objects.len() as u64;
        let prefix = header.object_prefix.clone();
        let mut done = 0;
        for chunk in objects.chunks(64) {
            let mut set = tokio::task::JoinSet::new();
            for &k in chunk {
                let io = io.clone();
                let object = data_object(&prefix, k);
                set.spawn(async move { ignore_enoent(io.remove(&object).await) });
            }
            while let Some(joined) = set.join_next().await {
                joined.map_err(|e| RbdError::refused(ErrorCode::EIO, e.to_string()))??;
                done += 1;
            }
            progress(done, total);
        }
        for snap in &header.snapshots {
            ignore_enoent(io.remove(&names::object_map(id, Some(snap.id))).await)?;
        }
        ignore_enoent(io.remove(&names::object_map(id, None)).await)?;
        if let Some(parent) = &header.parent {
            detach_from_parent(io, id, &parent.spec).await?;
        }
        ignore_enoent(io.remove(&header_object).await)?;
    }
    let entry = DirEntryRequest { name: name.into(), id: id.into() };
    match call(io, names::DIRECTORY, "dir_remove_image", &entry).await {
        Err(e) if e.errno() != ErrorCode::ENOENT => return Err(e),
        _ => {}
    }
    // Only remove the id object if it still names this image.
    if image_id(io, name).await.ok().as_deref() == Some(id) {
        ignore_enoent(io.remove(&names::id_object(name)).await)?;
    }
    tracing::debug!(name, id, "image removed");
    Ok(())
}

/// Forgets child `child_id` (in `io`'s pool) at its parent: the clone v2 attachment in the
/// parent's header (removing a trashed parent snapshot whose last child this was), or the
/// clone v1 registry entry.
pub(crate) async fn detach_from_parent(
    io: &IoCtx,
    child_id: &str,
    parent: &ParentSpec,
) -> RbdResult<()> {
    let parent_io = io.rados().ioctx_by_id(parent.pool)?;
    let child = ChildSpec {
        pool: io.pool_id(),
        namespace: io.namespace().to_string(),
        image_id: child_id.into(),
    };
    let parent_header = names::header_object(&parent.image_id);
    let req = ChildRequest { snap_id: parent.snap_id, child };
    match call_read::<u64>(&parent_io, &parent_header, "child_detach", &req).await {
        Ok(0) => {
            // The last v2 child of a snapshot the user removed: remove it now.
            let header: ImageHeader =
                call_read(&parent_io, &parent_header, "get_image", &()).await?;
            if let Some(snap) = header.snapshot(parent.snap_id) {
                if matches!(snap.namespace, SnapNamespace::Trash { .. }) {
                    image::remove_snapshot_records(&parent_io, &parent.image_id, snap.id).await?;
                }
            }
        }
        Ok(_) => {}
        Err(e) if e.errno() == ErrorCode::ENOENT => {
            let req = ChildRegistryRequest { parent: parent.clone(), child_id: child_id.into() };
            match call(io, names::CHILDREN, "remove_child", &req).await {
                Err(e) if e.errno() != ErrorCode::ENOENT => return Err(e),
                _ => {}
            }
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Clones `parent@snap` (opened by the caller) into image `name` of `io`'s pool.
pub async fn clone(
    parent: &Image,
    io: &IoCtx,
    name: &str,
    options: &CreateOptions,
    format: CloneFormat,
) -> RbdResult<String> {
    let (spec, snap) = parent.clone_source().await?;
    let parent_features = parent.features().await;
    if parent_features & features::LAYERING == 0 {
        return Err(RbdError::refused(ErrorCode::ENOSYS, "parent image must support layering"));
    }
    if options.features & features::LAYERING == 0 {
        return Err(RbdError::refused(ErrorCode::ENOSYS, "clone image must support layering"));
    }
    if format == CloneFormat::V1 && snap.protection != Protection::Protected {
        return Err(RbdError::refused(ErrorCode::EINVAL, "parent snapshot must be protected"));
    }
    let options = CreateOptions { size: snap.size, ..options.clone() };
    let id = create(io, name, &options).await?;
    let linked = async {
        let header = names::header_object(&id);
        call(io, &header, "set_parent", &ParentInfo { spec: spec.clone(), overlap: snap.size })
            .await?;
        let parent_io = io.rados().ioctx_by_id(spec.pool)?;
        match format {
            CloneFormat::V2 => {
                let child = ChildSpec {
                    pool: io.pool_id(),
                    namespace: io.namespace().to_string(),
                    image_id: id.clone(),
                };
                let req = ChildRequest { snap_id: spec.snap_id, child };
                call(&parent_io, &names::header_object(&spec.image_id), "child_attach", &req)
                    .await?;
            }
            CloneFormat::V1 => {
                let req = ChildRegistryRequest { parent: spec.clone(), child_id: id.clone() };
                call(io, names::CHILDREN, "add_child", &req).await?;
                // The snapshot may have been unprotected meanwhile: check again.
                let header: ImageHeader =
                    call_read(&parent_io, &names::header_object(&spec.image_id), "get_image", &())
                        .await?;
                let still = header.snapshot(spec.snap_id).map(|s| s.protection);
                if still != Some(Protection::Protected) {
                    let _ = call(io, names::CHILDREN, "remove_child", &req).await;
                    return Err(RbdError::refused(
                        ErrorCode::EINVAL,
                        "parent snapshot must be protected",
                    ));
                }
            }
        }
        Ok::<(), RbdError>(())
    };
    if let Err(e) = linked.await {
        // Undo: remove the half-made child (no parent link, or not registered).
        let _ =
            call(io, &names::header_object(&id), "remove_parent", &RemoveParentRequest::default())
                .await;
        let _ = remove_image(io, name, &id, |_, _| {}).await;
        return Err(e);
    }
    Ok(id)
}

/// Children of `spec` (a parent snapshot) in pool `io`: clone v1 registry entries and
/// clone v2 attachments, as (pool id, namespace, image id).
pub async fn children(io: &IoCtx, spec: &ParentSpec) -> RbdResult<Vec<ChildSpec>> {
    let mut out: Vec<ChildSpec> = Vec::new();
    let parent_io = io.rados().ioctx_by_id(spec.pool)?;
    let v2: Vec<ChildSpec> = call_read(
        &parent_io,
        &names::header_object(&spec.image_id),
        "children_list",
        &quarry_cls::rbd::header::SnapRequest { snap_id: spec.snap_id },
    )
    .await?;
    out.extend(v2);
    for pool in io.rados().map().pools.keys() {
        let pool_io = io.rados().ioctx_by_id(*pool)?;
        let ids: Vec<String> =
            match call_read(&pool_io, names::CHILDREN, "get_children", spec).await {
                Ok(ids) => ids,
                Err(e)
                    if matches!(
                        e.errno(),
                        ErrorCode::ENOENT | ErrorCode::EACCES | ErrorCode::EPERM
                    ) =>
                {
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
        out.extend(ids.into_iter().map(|image_id| ChildSpec {
            pool: *pool,
            namespace: String::new(),
            image_id,
        }));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Calls `rbd.<method>` with a codec-encoded input and ignores its output.
pub(crate) async fn call<T: Serialize>(
    io: &IoCtx,
    object: &str,
    method: &str,
    input: &T,
) -> RbdResult<()> {
    let input = quarry_cls::codec::encode(input);
    io.call(object, "rbd", method, input).await.map(drop).map_err(RbdError::from)
}

/// Calls `rbd.<method>` and decodes its output.
pub(crate) async fn call_read<R: DeserializeOwned>(
    io: &IoCtx,
    object: &str,
    method: &str,
    input: &impl Serialize,
) -> RbdResult<R> {
    let input = quarry_cls::codec::encode(input);
    let bytes: Bytes = io.call(object, "rbd", method, input).await?;
    cls::decode(&bytes).map_err(RbdError::code)
}

/// ENOENT is success (the thing is already gone).
pub(crate) fn ignore_enoent(result: Result<(), ClientError>) -> RbdResult<()> {
    match result {
        Err(e) if is(&e, ErrorCode::ENOENT) => Ok(()),
        other => other.map_err(RbdError::from),
    }
}

/// Opens `name` read-only at `snap` in `io`'s pool (a helper for callers of [`clone`]).
pub async fn open_snapshot(io: &IoCtx, name: &str, snap: &str) -> RbdResult<Image> {
    Image::open(
        io,
        name,
        OpenOptions { snapshot: Some(snap.into()), read_only: true, ..Default::default() },
    )
    .await
}

/// An image in the trash, as `rbd trash ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrashItem {
    /// The image id.
    pub id: String,
    /// What it says about the image (name, times, source).
    pub entry: TrashEntry,
}

fn now() -> (u64, u32) {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.as_secs(), t.subsec_nanos())
}

/// Moves image `name` to the trash (`rbd trash mv`): it leaves the directory (its name is
/// free again) and keeps its data until removed; `defer_secs` protects it from `trash rm`
/// without `--force` for that long. EBUSY while it has watchers.
pub async fn trash_move(io: &IoCtx, name: &str, defer_secs: u64) -> RbdResult<String> {
    let id = image_id(io, name).await?;
    let watchers = match io.list_watchers(&names::header_object(&id)).await {
        Ok(w) => w,
        Err(e) if is(&e, ErrorCode::ENOENT) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    if !watchers.is_empty() {
        return Err(RbdError::refused(ErrorCode::EBUSY, "image still has watchers"));
    }
    let deleted = now();
    let entry = TrashEntry {
        source: TrashSource::User,
        name: name.into(),
        deletion_time: deleted,
        deferment_end_time: (deleted.0 + defer_secs, deleted.1),
    };
    call(io, names::TRASH, "trash_add", &TrashAddRequest { id: id.clone(), entry }).await?;
    let dir = DirEntryRequest { name: name.into(), id: id.clone() };
    if let Err(e) = call(io, names::DIRECTORY, "dir_remove_image", &dir).await {
        let _ = call(io, names::TRASH, "trash_remove", &LookupRequest { key: id.clone() }).await;
        return Err(e);
    }
    ignore_enoent(io.remove(&names::id_object(name)).await)?;
    Ok(id)
}

/// Every image in the trash.
pub async fn trash_list(io: &IoCtx) -> RbdResult<Vec<TrashItem>> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let req = ListRequest { start_after: after.clone(), max: LIST_MAX };
        let page: TrashList = call_read(io, names::TRASH, "trash_list", &req).await?;
        after = page.entries.keys().next_back().cloned().unwrap_or_default();
        out.extend(page.entries.into_iter().map(|(id, entry)| TrashItem { id, entry }));
        if !page.more {
            return Ok(out);
        }
    }
}

/// Brings image `id` back from the trash under `name` (its old name when None). EEXIST if
/// the name is taken, ENOENT if the id is not in the trash.
pub async fn trash_restore(io: &IoCtx, id: &str, name: Option<&str>) -> RbdResult<String> {
    let entry: TrashEntry =
        call_read(io, names::TRASH, "trash_get", &LookupRequest { key: id.into() }).await?;
    let name = name.map(str::to_string).unwrap_or(entry.name);
    names::check_image_name(&name)?;
    let id_object = names::id_object(&name);
    call(io, &id_object, "set_id", &SetIdRequest { id: id.into() }).await?;
    let dir = DirEntryRequest { name: name.clone(), id: id.into() };
    if let Err(e) = call(io, names::DIRECTORY, "dir_add_image", &dir).await {
        let _ = io.remove(&id_object).await;
        return Err(e);
    }
    call(io, names::TRASH, "trash_remove", &LookupRequest { key: id.into() }).await?;
    Ok(name)
}

/// Removes image `id` from the trash for good. EPERM before its deferment ends unless
/// `force` ("deferment time has not expired").
pub async fn trash_remove(
    io: &IoCtx,
    id: &str,
    force: bool,
    progress: impl FnMut(u64, u64),
) -> RbdResult<()> {
    let entry: TrashEntry =
        call_read(io, names::TRASH, "trash_get", &LookupRequest { key: id.into() }).await?;
    if !force && now() < entry.deferment_end_time {
        return Err(RbdError::refused(
            ErrorCode::EPERM,
            "deferment time has not expired, please use --force if you really want to remove the image",
        ));
    }
    remove_image(io, &entry.name, id, progress).await?;
    call(io, names::TRASH, "trash_remove", &LookupRequest { key: id.into() }).await
}

/// Copies the data of `source` (open at the head or a snapshot; a clone's parent data
/// included) into a new image `name` of `io`'s pool (`rbd cp`): same size, and order and
/// features from `options`. Only extents with data are read and written (sparse).
pub async fn copy(
    source: &Image,
    io: &IoCtx,
    name: &str,
    options: &CreateOptions,
    mut progress: impl FnMut(u64, u64),
) -> RbdResult<()> {
    let size = source.size().await;
    let options = CreateOptions { size, ..options.clone() };
    create(io, name, &options).await?;
    let copied = async {
        let target = Image::open(io, name, OpenOptions::default()).await?;
        let mut extents = Vec::new();
        source
            .diff_iterate(None, 0, size, true, |off, len, exists| {
                if exists {
                    extents.push((off, len));
                }
                0
            })
            .await?;
        let total: u64 = extents.iter().map(|e| e.1).sum();
        let mut done = 0;
        for (off, len) in extents {
            let mut at = off;
            while at < off + len {
                let chunk = (off + len - at).min(4 << 20);
                let data = source.read(at, chunk).await?;
                if data.iter().any(|&b| b != 0) {
                    target.write(at, data).await?;
                }
                at += chunk;
                done += chunk;
                progress(done, total);
            }
        }
        target.close().await
    };
    if let Err(e) = copied.await {
        let _ = remove(io, name).await;
        return Err(e);
    }
    Ok(())
}

/// Copies image `source_name` of `source_io` with its snapshots into a new image `name` of
/// `io`'s pool (`rbd deep cp`): for each snapshot, oldest first, the target gets the
/// snapshot's size and the extents that changed since the previous one (written, or zeroed
/// where they went), then a snapshot of the same name; then the head the same way. A
/// clone's parent data is copied in (the copy is flat: it has no parent). Protection is not
/// copied. On failure the partial copy is removed.
pub async fn deep_copy(
    source_io: &IoCtx,
    source_name: &str,
    io: &IoCtx,
    name: &str,
    options: &CreateOptions,
    mut progress: impl FnMut(u64, u64),
) -> RbdResult<()> {
    let head = Image::open(source_io, source_name, OpenOptions::default()).await?;
    let snapshots = head.snapshots().await;
    let first_size = snapshots.first().map_or(head.size().await, |s| s.size);
    create(io, name, &CreateOptions { size: first_size, ..options.clone() }).await?;
    let copied = async {
        let target = Image::open(io, name, OpenOptions::default()).await?;
        let steps = snapshots.len() as u64 + 1;
        let mut previous: Option<SnapId> = None;
        for (step, snap) in snapshots.iter().enumerate() {
            let source = open_snapshot(source_io, source_name, &snap.name).await?;
            copy_changes(&source, &target, previous).await?;
            source.close().await?;
            target.snap_create(&snap.name).await?;
            previous = Some(snap.id);
            progress(step as u64 + 1, steps);
        }
        copy_changes(&head, &target, previous).await?;
        progress(steps, steps);
        target.close().await
    };
    let result = copied.await;
    let _ = head.close().await;
    if let Err(e) = result {
        let _ = remove_copy(io, name).await;
        return Err(e);
    }
    Ok(())
}

/// Brings `target` (its head) to what `source` (open at a snapshot or the head) holds,
/// given that the target already holds `source`'s state at snapshot `from`: same size, the
/// changed extents written (zeros where `source` reads zeros) and the removed ones zeroed.
async fn copy_changes(source: &Image, target: &Image, from: Option<SnapId>) -> RbdResult<()> {
    let size = source.size().await;
    if target.size().await != size {
        target.resize(size, |_, _| {}).await?;
    }
    let mut extents = Vec::new();
    source
        .diff_iterate(from, 0, size, from.is_none(), |off, len, exists| {
            extents.push((off, len, exists));
            0
        })
        .await?;
    for (off, len, exists) in extents {
        if !exists {
            target.write_zeroes(off, len).await?;
            continue;
        }
        let mut at = off;
        while at < off + len {
            let chunk = (off + len - at).min(4 << 20);
            let data = source.read(at, chunk).await?;
            if data.iter().all(|&b| b == 0) {
                if from.is_some() {
                    target.write_zeroes(at, chunk).await?;
                }
            } else {
                target.write(at, data).await?;
            }
            at += chunk;
        }
    }
    Ok(())
}

/// Removes a partial deep copy (its snapshots first).
async fn remove_copy(io: &IoCtx, name: &str) -> RbdResult<()> {
    let image = Image::open(io, name, OpenOptions::default()).await?;
    for snap in image.snapshots().await {
        image.snap_remove(&snap.name).await?;
    }
    image.close().await?;
    remove(io, name).await
}
