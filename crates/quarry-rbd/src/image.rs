//! An open image (librbd's `Image`): its header, read and write paths over the data
//! objects, copy-on-write through the parent of a clone, the object map, resize,
//! snapshots, flatten and image-meta.
//!
//! # Invariants
//! - **Object map**: state NONEXISTENT implies the data object does not exist. Writes mark
//!   the object EXISTS *before* writing it; removals mark it NONEXISTENT *after* removing it.
//!   A crash in between leaves the map claiming an object that is not there (space counted,
//!   never data lost); `du`, `diff` and export may skip NONEXISTENT objects.
//! - **Copy-up** (clones): a write to an object of a clone within the parent overlap is
//!   guarded by `AssertExists`; on ENOENT the client reads the object's parent data and
//!   sends `rbd.copyup` (writes only if the object is still absent) before the write. With
//!   deep-flatten the copy-up carries an empty snapshot context so the clone's snapshots
//!   see the parent data too (they may lose their parent link on flatten); without it the
//!   clone's context, so its snapshots keep reading through the parent.
//! - **Snapshots quiesce this handle's writes**: the state lock is held shared by every
//!   write and exclusively by snapshot create, rollback, resize and flatten, so no write
//!   of this handle is sent with a stale snapshot context. (Other clients are kept out by
//!   the exclusive lock.)
//! - **The cache** ([`crate::cache`]) sits between the public data path and the uncached
//!   one (`*_uncached`, what its writeback calls). Snapshot create, resize, rollback, diff,
//!   the head's object map and close flush it first (not counting as the caller's flush for
//!   writethrough-until-flush); releasing the exclusive lock writes it back and empties it
//!   (run by the lock itself, with the lock held exclusively, so no write of this handle
//!   can pass it); discard, write-zeroes, compare-and-write and writes larger than the dirty
//!   limit go around it after writing back the dirty bytes they overlap. A handle dropped
//!   without `close` loses what was not written back (as librbd's without `rbd_close`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use quarry_client::{ClientError, IoCtx};
use quarry_cls::rbd::header::{
    ImageHeader, MetadataKeyRequest, MetadataList, MetadataListRequest, MetadataSetRequest,
    RemoveParentRequest, SetProtectionRequest, SetSizeRequest, SnapLimitRequest, SnapRequest,
    SnapshotAddRequest, SnapshotRenameRequest,
};
use quarry_cls::rbd::object_map::{self as om, ObjectMap, ResizeRequest, UpdateRequest};
use quarry_cls::rbd::{
    features, flags, ParentInfo, ParentSpec, Protection, SnapNamespace, SnapshotInfo,
};
use quarry_types::{ErrorCode, ObjectOp, OpOutput, Payload, SnapContext, SnapId, SNAP_HEAD};
use tokio::sync::{Mutex, RwLock};

use crate::cache::{self, Cache, CacheConfig};
use crate::error::{is, RbdError, RbdResult};
use crate::layout::{data_object, Layout, ObjectExtent};
use crate::lock::{run_watch, ExclusiveLock, LockMode, WatchTarget};
use crate::names;
use crate::pool::{self, call, call_read, ignore_enoent};

/// How many object requests one image operation keeps in flight.
const PARALLEL_OBJECTS: usize = 32;

/// How to open an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Open this snapshot (read-only) instead of the head.
    pub snapshot: Option<String>,
    /// Refuse writes (EROFS).
    pub read_only: bool,
    /// The client cache of a handle open for writing (Ceph's defaults: writeback,
    /// writethrough until the first flush); read-only and snapshot opens have none. See
    /// [`CacheConfig::from_conf`] for ceph.conf and `CEPH_ARGS`.
    pub cache: CacheConfig,
}

/// What `rbd info` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// Image name.
    pub name: String,
    /// Image id.
    pub id: String,
    /// Size of the head or of the open snapshot.
    pub size: u64,
    /// Object order.
    pub order: u8,
    /// Objects the size spans.
    pub object_count: u64,
    /// `rbd_data.<id>`.
    pub block_name_prefix: String,
    /// Feature bits.
    pub features: u64,
    /// Flag bits (of the head or the snapshot).
    pub flags: u64,
    /// User snapshots.
    pub snapshot_count: u64,
    /// Stripe unit.
    pub stripe_unit: u64,
    /// Stripe count.
    pub stripe_count: u64,
    /// Creation time (seconds, nanoseconds).
    pub create_timestamp: (u64, u32),
    /// Last recorded access.
    pub access_timestamp: (u64, u32),
    /// Last recorded modification.
    pub modify_timestamp: (u64, u32),
    /// The parent link of the head or of the open snapshot.
    pub parent: Option<ParentInfo>,
    /// The open snapshot, if any.
    pub snap_id: Option<SnapId>,
}

/// An open image. Cheap to clone (handles share state).
#[derive(Clone)]
pub struct Image {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("name", &self.inner.name)
            .field("id", &self.inner.id)
            .field("snap", &self.inner.snap)
            .finish()
    }
}

struct Inner {
    /// The pool, at the head, no snapshot context (header and object map calls).
    io: IoCtx,
    name: String,
    id: String,
    /// The open snapshot (id, name).
    snap: Option<(SnapId, String)>,
    read_only: bool,
    state: RwLock<State>,
    /// The head's object map, loaded when the image has one (writes keep it current).
    object_map: Mutex<Option<Vec<u8>>>,
    /// The header watch of a handle open for writing: its cookie and task.
    watch: std::sync::Mutex<Option<(u64, tokio::task::JoinHandle<()>)>>,
    /// The exclusive lock (images with the feature, open for writing).
    exclusive: std::sync::OnceLock<Arc<ExclusiveLock>>,
    /// The client cache (handles open for writing, unless `rbd_cache` is off).
    cache: Option<Arc<Cache>>,
    /// The cache's background writeback.
    flusher: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The cache's way to the cluster: this handle's uncached data path.
struct Uncached(std::sync::Weak<Inner>);

impl Uncached {
    fn image(&self) -> RbdResult<Image> {
        let inner = self
            .0
            .upgrade()
            .ok_or_else(|| RbdError::refused(ErrorCode::ESHUTDOWN, "the image handle is closed"))?;
        Ok(Image { inner })
    }
}

impl cache::Backend for Uncached {
    fn hold(&self) -> cache::BoxFut<'_, RbdResult<cache::WriteRight>> {
        Box::pin(async move {
            let lock = self.image()?.inner.exclusive.get().cloned();
            match lock {
                Some(lock) => lock.hold_owned().await.map(Some),
                None => Ok(None),
            }
        })
    }

    fn write(&self, writes: Vec<(u64, Bytes)>) -> cache::BoxFut<'_, RbdResult<()>> {
        Box::pin(async move { self.image()?.write_many_uncached(writes).await })
    }

    fn read(&self, off: u64, len: u64) -> cache::BoxFut<'_, RbdResult<Bytes>> {
        Box::pin(async move {
            let image = self.image()?;
            let len = {
                let state = image.inner.state.read().await;
                clip(off, len, state.size(image.snap_id()))?
            };
            image.read_uncached(off, len).await
        })
    }

    fn may_fill(&self) -> bool {
        let Some(inner) = self.0.upgrade() else { return false };
        match inner.exclusive.get() {
            Some(lock) => lock.owns_now(),
            None => true,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let watch = self.watch.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((_, task)) = watch {
            task.abort();
        }
        // Writes still dirty in the cache are lost: close() flushes them.
        if let Some(task) = self.flusher.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        // Best effort when a handle is dropped without close(): give the lock back, so the
        // next writer need not fence this client.
        if let (Some(lock), Ok(rt)) =
            (self.exclusive.get().cloned(), tokio::runtime::Handle::try_current())
        {
            rt.spawn(async move {
                let _ = lock.release().await;
            });
        }
    }
}

impl WatchTarget for Inner {
    fn header_updated(
        self: Arc<Self>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            let image = Image { inner: self };
            // Another handle changed the image (resize, rollback): cached clean data may be
            // stale.
            if let Some(cache) = &image.inner.cache {
                cache.invalidate();
            }
            if let Err(e) = image.refresh().await {
                tracing::debug!(image = %image.inner.name, error = %e, "refresh after a header update failed");
            }
            let _ = image.load_head_object_map().await;
        })
    }

    fn exclusive_lock(&self) -> Option<Arc<ExclusiveLock>> {
        self.exclusive.get().cloned()
    }

    fn watch_renewed(&self, cookie: u64) {
        if let Some(watch) = self.watch.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            watch.0 = cookie;
        }
    }
}

/// What a refresh reads.
struct State {
    header: ImageHeader,
    layout: Layout,
    /// Data objects: the header's snapshot context for writes, the open snapshot for reads.
    data: IoCtx,
    /// The parent of the head (or of the open snapshot), opened at its snapshot.
    parent: Option<(ParentInfo, Image)>,
}

impl State {
    fn size(&self, snap: Option<SnapId>) -> u64 {
        match snap {
            None => self.header.size,
            Some(id) => self.header.snapshot(id).map_or(0, |s| s.size),
        }
    }

    fn has(&self, feature: u64) -> bool {
        self.header.features & feature != 0
    }
}

impl Image {
    /// Opens image `name` of `io`'s pool (ENOENT if it does not exist, or has no such
    /// snapshot).
    pub async fn open(io: &IoCtx, name: &str, options: OpenOptions) -> RbdResult<Image> {
        let id = pool::image_id(io, name).await?;
        Image::open_by_id(io, &id, name, options).await
    }

    /// Opens the image with id `id` (its name is only for display).
    pub async fn open_by_id(
        io: &IoCtx,
        id: &str,
        name: &str,
        options: OpenOptions,
    ) -> RbdResult<Image> {
        let header: ImageHeader =
            call_read(io, &names::header_object(id), "get_image", &()).await?;
        let snap = match &options.snapshot {
            None => None,
            Some(snap_name) => {
                let snap =
                    header.user_snapshot(snap_name).ok_or(RbdError::code(ErrorCode::ENOENT))?;
                Some((snap.id, snap_name.clone()))
            }
        };
        Image::open_at(io, id, name, header, snap, options.read_only, options.cache).await
    }

    /// Opens with a header already read, at snapshot `snap` (by id: trash snapshots too).
    async fn open_at(
        io: &IoCtx,
        id: &str,
        name: &str,
        header: ImageHeader,
        snap: Option<(SnapId, String)>,
        read_only: bool,
        cache: CacheConfig,
    ) -> RbdResult<Image> {
        let with_lock = header.features & features::EXCLUSIVE_LOCK != 0;
        let state = build_state(io, header, snap.as_ref().map(|s| s.0)).await?;
        let read_only = read_only || snap.is_some();
        let mut cache = cache;
        if !read_only {
            apply_image_conf(io, id, &mut cache).await?;
        }
        let unit = state.layout.stripe_unit;
        let image = Image {
            inner: Arc::new_cyclic(|me| Inner {
                io: io.clone(),
                name: name.into(),
                id: id.into(),
                read_only,
                snap,
                state: RwLock::new(state),
                object_map: Mutex::new(None),
                watch: std::sync::Mutex::new(None),
                exclusive: std::sync::OnceLock::new(),
                cache: if read_only {
                    None
                } else {
                    Cache::new(cache, Arc::new(Uncached(me.clone())), unit)
                },
                flusher: std::sync::Mutex::new(None),
            }),
        };
        if let Some(cache) = &image.inner.cache {
            *image.inner.flusher.lock().unwrap_or_else(|p| p.into_inner()) = cache.start_flusher();
        }
        if !image.inner.read_only {
            // A handle open for writing watches the header (`rbd status` shows it) and, with
            // the exclusive-lock feature, takes the lock on its first write.
            let header_object = names::header_object(id);
            let watch = io.watch(&header_object, None).await?;
            let cookie = watch.cookie();
            if with_lock {
                let lock = ExclusiveLock::new(io.clone(), header_object.clone(), cookie);
                if let Some(cache) = &image.inner.cache {
                    // Before the lock goes to another client: write back, drop the rest.
                    let cache = Arc::downgrade(cache);
                    lock.set_before_release(Box::new(move || {
                        let cache = cache.clone();
                        Box::pin(async move {
                            let Some(cache) = cache.upgrade() else { return Ok(()) };
                            cache.flush(false, false).await?;
                            cache.invalidate();
                            Ok(())
                        })
                    }));
                }
                let _ = image.inner.exclusive.set(Arc::new(lock));
            }
            let target = Arc::downgrade(&image.inner);
            let task = tokio::spawn(run_watch(io.clone(), header_object, watch, target));
            *image.inner.watch.lock().unwrap_or_else(|p| p.into_inner()) = Some((cookie, task));
        }
        image.load_head_object_map().await?;
        Ok(image)
    }

    /// Closes the handle: writes the cache back, releases the exclusive lock if it holds it
    /// and ends its watch.
    pub async fn close(self) -> RbdResult<()> {
        let flushed = self.flush_internal().await;
        if let Some(task) = self.inner.flusher.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        let released = match self.inner.exclusive.get() {
            Some(lock) => lock.release().await.map(drop),
            None => Ok(()),
        };
        let watch = self.inner.watch.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut unwatched = Ok(());
        if let Some((cookie, task)) = watch {
            // Unwatch before stopping the task: the task owns the `Watch`, whose drop would
            // otherwise send the unwatch from a background task the caller does not wait
            // for (a tool exiting right after close() could leave a stale watcher).
            unwatched = match self.inner.io.unwatch(cookie).await {
                Err(e) if e.errno() != ErrorCode::ENOENT && e.errno() != ErrorCode::ENOTCONN => {
                    Err(e.into())
                }
                _ => Ok(()),
            };
            task.abort();
        }
        flushed.and(released).and(unwatched)
    }

    /// Takes the exclusive lock now (librbd's `rbd_lock_acquire`): in `Exclusive` mode the
    /// handle keeps it when others ask. With `no_wait`, EBUSY at once if a live handle
    /// owns it. EINVAL without the exclusive-lock feature, EROFS when read-only.
    pub async fn lock_acquire(&self, mode: LockMode, no_wait: bool) -> RbdResult<()> {
        self.check_writable()?;
        let lock = self.inner.exclusive.get().ok_or_else(|| {
            RbdError::refused(ErrorCode::EINVAL, "the image has no exclusive-lock feature")
        })?;
        lock.set_mode(mode);
        lock.acquire(no_wait).await
    }

    /// Releases the exclusive lock (librbd's `rbd_lock_release`); back to cooperative mode.
    pub async fn lock_release(&self) -> RbdResult<()> {
        if let Some(lock) = self.inner.exclusive.get() {
            lock.set_mode(LockMode::Cooperative);
            lock.release().await?;
        }
        Ok(())
    }

    /// Whether this handle owns the exclusive lock now (`rbd_is_exclusive_lock_owner`).
    pub async fn is_lock_owner(&self) -> bool {
        match self.inner.exclusive.get() {
            Some(lock) => lock.is_owner().await,
            None => false,
        }
    }

    /// A guard under which this handle may write: it owns the exclusive lock (taken first
    /// if needed), or the image has no such lock.
    async fn write_guard(&self) -> RbdResult<Option<tokio::sync::RwLockReadGuard<'_, bool>>> {
        match self.inner.exclusive.get() {
            Some(lock) => lock.hold().await.map(Some),
            None => Ok(None),
        }
    }

    /// Calls `rbd.<method>` on this image's header.
    async fn header_call<T: serde::Serialize>(&self, method: &str, input: &T) -> RbdResult<()> {
        call(&self.inner.io, &names::header_object(&self.inner.id), method, input).await
    }

    /// Tells the other handles the header changed (they refresh).
    async fn header_changed(&self) {
        let from =
            self.inner.watch.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, |w| w.0);
        crate::lock::notify_header_update(
            &self.inner.io,
            &names::header_object(&self.inner.id),
            from,
        )
        .await;
    }

    /// Reads the header again (after another client changed it).
    pub async fn refresh(&self) -> RbdResult<()> {
        let mut state = self.inner.state.write().await;
        self.refresh_locked(&mut state).await
    }

    async fn refresh_locked(&self, state: &mut State) -> RbdResult<()> {
        let header: ImageHeader =
            call_read(&self.inner.io, &names::header_object(&self.inner.id), "get_image", &())
                .await?;
        if let Some((id, _)) = &self.inner.snap {
            if header.snapshot(*id).is_none() {
                return Err(RbdError::refused(ErrorCode::ENOENT, "snapshot was removed"));
            }
        }
        *state = build_state(&self.inner.io, header, self.snap_id()).await?;
        Ok(())
    }

    async fn load_head_object_map(&self) -> RbdResult<()> {
        if self.inner.read_only {
            return Ok(());
        }
        let usable = {
            let state = self.inner.state.read().await;
            state.has(features::OBJECT_MAP) && state.header.flags & flags::OBJECT_MAP_INVALID == 0
        };
        let map = if usable {
            Some(load_object_map(&self.inner.io, &self.inner.id, None).await?.packed.to_vec())
        } else {
            None
        };
        *self.inner.object_map.lock().await = map;
        Ok(())
    }

    /// The image name given at open.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The image id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The pool's I/O context.
    pub fn ioctx(&self) -> &IoCtx {
        &self.inner.io
    }

    /// The open snapshot's id, if a snapshot is open.
    pub fn snap_id(&self) -> Option<SnapId> {
        self.inner.snap.as_ref().map(|s| s.0)
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Size of the head or the open snapshot.
    pub async fn size(&self) -> u64 {
        self.inner.state.read().await.size(self.snap_id())
    }

    /// Feature bits.
    pub async fn features(&self) -> u64 {
        self.inner.state.read().await.header.features
    }

    /// Flag bits of the head or the open snapshot.
    pub async fn flags(&self) -> u64 {
        let state = self.inner.state.read().await;
        match self.snap_id() {
            None => state.header.flags,
            Some(id) => state.header.snapshot(id).map_or(0, |s| s.flags),
        }
    }

    /// The header as last read.
    pub async fn header(&self) -> ImageHeader {
        self.inner.state.read().await.header.clone()
    }

    /// The layout.
    pub async fn layout(&self) -> Layout {
        self.inner.state.read().await.layout
    }

    /// What `rbd info` shows.
    pub async fn info(&self) -> ImageInfo {
        let state = self.inner.state.read().await;
        let h = &state.header;
        let snap = self.snap_id().and_then(|id| h.snapshot(id));
        let size = state.size(self.snap_id());
        ImageInfo {
            name: self.inner.name.clone(),
            id: self.inner.id.clone(),
            size,
            order: h.order,
            object_count: state.layout.object_count(size),
            block_name_prefix: h.object_prefix.clone(),
            features: h.features,
            flags: snap.map_or(h.flags, |s| s.flags),
            snapshot_count: h
                .snapshots
                .iter()
                .filter(|s| s.namespace == SnapNamespace::User)
                .count() as u64,
            stripe_unit: h.stripe_unit,
            stripe_count: h.stripe_count,
            create_timestamp: h.create_timestamp,
            access_timestamp: h.access_timestamp,
            modify_timestamp: h.modify_timestamp,
            parent: state.parent.as_ref().map(|(info, _)| info.clone()),
            snap_id: self.snap_id(),
        }
    }

    /// User snapshots, by ascending id.
    pub async fn snapshots(&self) -> Vec<SnapshotInfo> {
        let state = self.inner.state.read().await;
        state
            .header
            .snapshots
            .iter()
            .filter(|s| s.namespace == SnapNamespace::User)
            .cloned()
            .collect()
    }

    /// The parent link (ENOENT-like None when the image is not a clone).
    pub async fn parent(&self) -> Option<ParentInfo> {
        self.inner.state.read().await.parent.as_ref().map(|(info, _)| info.clone())
    }

    /// The parent spec and snapshot a clone of this open snapshot links to (EINVAL when
    /// no snapshot is open).
    pub async fn clone_source(&self) -> RbdResult<(ParentSpec, SnapshotInfo)> {
        let Some((snap_id, _)) = self.inner.snap.clone() else {
            return Err(RbdError::refused(ErrorCode::EINVAL, "a clone needs a parent snapshot"));
        };
        self.refresh().await?;
        let state = self.inner.state.read().await;
        let snap =
            state.header.snapshot(snap_id).cloned().ok_or(RbdError::code(ErrorCode::ENOENT))?;
        let spec = ParentSpec {
            pool: self.inner.io.pool_id(),
            namespace: self.inner.io.namespace().to_string(),
            image_id: self.inner.id.clone(),
            snap_id,
        };
        Ok((spec, snap))
    }

    // ---- data path ----

    /// Reads `len` bytes at `off`; a range past the end is cut at the end (librbd's rule:
    /// an offset beyond the size is EINVAL).
    pub async fn read(&self, off: u64, len: u64) -> RbdResult<Bytes> {
        let len = {
            let state = self.inner.state.read().await;
            clip(off, len, state.size(self.snap_id()))?
        };
        if len == 0 {
            return Ok(Bytes::new());
        }
        match &self.inner.cache {
            Some(cache) => cache.read(off, len).await,
            None => self.read_uncached(off, len).await,
        }
    }

    /// Reads from the cluster (`len` already cut at the end).
    async fn read_uncached(&self, off: u64, len: u64) -> RbdResult<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let state = self.inner.state.read().await;
        let len = clip(off, len, state.size(self.snap_id()))?;
        let extents = state.layout.map(off, len);
        // One object (a VM's reads but for those crossing one): read on this task. A task of
        // its own cost a spawn (its future copied in) and, on the multi-thread runtime, the
        // wake of an idle worker to take it (docs/benchmarks.md, "Eighteenth round").
        if let [ext] = extents[..] {
            let part = ReadJob::new(&state, ext, off + ext.buffer_offset).run().await?;
            return Ok(cache::assemble(len, vec![part]));
        }
        let mut parts = Vec::with_capacity(extents.len());
        let mut set = tokio::task::JoinSet::new();
        let mut pending = extents.into_iter();
        loop {
            while set.len() < PARALLEL_OBJECTS {
                let Some(ext) = pending.next() else { break };
                let job = ReadJob::new(&state, ext, off + ext.buffer_offset);
                set.spawn(job.run());
            }
            let Some(joined) = set.join_next().await else { break };
            parts.push(joined.map_err(join_error)??);
        }
        // Within one object (a VM's reads but for those crossing one) the object's bytes are
        // the answer as they came when they cover the range (docs/benchmarks.md, seventeenth
        // round: a zeroed buffer and a copy per 1 MiB read were a third of the client's CPU).
        Ok(cache::assemble(len, parts))
    }

    /// [`Image::read`] as a boxed `Send` future: a clone's read calls its parent's, and the
    /// recursion needs a named future type.
    fn read_boxed(
        &self,
        off: u64,
        len: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = RbdResult<Bytes>> + Send + '_>> {
        Box::pin(self.read(off, len))
    }

    /// Writes `data` at `off` (EROFS on a snapshot or read-only open; EINVAL past the end;
    /// a write crossing the end is cut there, as librbd does).
    pub async fn write(&self, off: u64, data: Bytes) -> RbdResult<()> {
        self.check_writable()?;
        let Some(cache) = &self.inner.cache else {
            let _lock = self.write_guard().await?;
            return self.write_uncached(off, data).await;
        };
        let len = {
            let state = self.inner.state.read().await;
            clip(off, data.len() as u64, state.size(None))?
        };
        let data = data.slice(..len as usize);
        if cache.buffers(len) {
            // The lock is taken on the first write, as without a cache (EBUSY now, not at
            // writeback), but not held while the write waits for room.
            drop(self.write_guard().await?);
            cache.buffer(off, data).await;
            return Ok(());
        }
        let _right = self.write_right().await?;
        let direct = cache.begin_direct(off, len).await?;
        let result = self.write_uncached(off, data.clone()).await;
        direct.finish(result.is_ok().then_some(&data));
        result
    }

    /// The right to write as an owned guard (the exclusive lock held shared).
    async fn write_right(&self) -> RbdResult<cache::WriteRight> {
        match self.inner.exclusive.get() {
            Some(lock) => lock.hold_owned().await.map(Some),
            None => Ok(None),
        }
    }

    /// Writes non-overlapping pieces to the cluster, the pieces of one object in one op
    /// vector (the cache's writeback; the caller holds the right to write).
    async fn write_many_uncached(&self, writes: Vec<(u64, Bytes)>) -> RbdResult<()> {
        let state = self.inner.state.read().await;
        let size = state.size(None);
        let mut objects: std::collections::BTreeMap<u64, Vec<(u64, Bytes)>> =
            std::collections::BTreeMap::new();
        for (off, data) in writes {
            // Bytes past the end (the image shrank meanwhile) are gone with it.
            let len = if off > size { 0 } else { clip(off, data.len() as u64, size)? };
            for ext in state.layout.map(off, len) {
                let at = ext.buffer_offset as usize;
                let piece = data.slice(at..at + ext.length as usize);
                objects.entry(ext.object_no).or_default().push((ext.offset, piece));
            }
        }
        let extents: Vec<ObjectExtent> = objects
            .keys()
            .map(|&k| ObjectExtent { object_no: k, offset: 0, length: 0, buffer_offset: 0 })
            .collect();
        self.run_object_jobs(&state, extents, |ext| {
            Mutation::WriteMany(objects.get(&ext.object_no).cloned().unwrap_or_default())
        })
        .await
    }

    /// Writes to the cluster (the caller holds the right to write).
    async fn write_uncached(&self, off: u64, data: Bytes) -> RbdResult<()> {
        let state = self.inner.state.read().await;
        let len = clip(off, data.len() as u64, state.size(None))?;
        let data = data.slice(..len as usize);
        let extents = state.layout.map(off, len);
        self.run_object_jobs(&state, extents, |ext| {
            let piece =
                data.slice(ext.buffer_offset as usize..(ext.buffer_offset + ext.length) as usize);
            Mutation::Write(piece)
        })
        .await
    }

    /// Discards `[off, off + len)`: whole objects are removed, parts zeroed (punched), and
    /// in a clone the parent's data there is hidden. Reads of the range return zeros.
    pub async fn discard(&self, off: u64, len: u64) -> RbdResult<()> {
        self.check_writable()?;
        let _right = self.write_right().await?;
        let direct = match &self.inner.cache {
            Some(cache) => {
                let len = clip(off, len, self.inner.state.read().await.size(None))?;
                Some(cache.begin_direct(off, len).await?)
            }
            None => None,
        };
        let state = self.inner.state.read().await;
        let len = clip(off, len, state.size(None))?;
        let extents = state.layout.map(off, len);
        let result = self
            .run_object_jobs(&state, extents, |_| Mutation::Discard { hide_parent: true })
            .await;
        drop(direct);
        result
    }

    /// Writes zeros to `[off, off + len)` (the same as a discard here: both read back zeros
    /// and free space).
    pub async fn write_zeroes(&self, off: u64, len: u64) -> RbdResult<()> {
        self.discard(off, len).await
    }

    /// Writes zero *bytes* to `[off, off + len)`, 4 MiB at a time, so the range stays
    /// allocated (thick provisioning, NBD's `NO_HOLE`, librbd's `THICK_PROVISION` flag), where
    /// [`Image::write_zeroes`] frees it; `progress(done, len)` after each piece.
    pub async fn write_zero_bytes(
        &self,
        off: u64,
        len: u64,
        mut progress: impl FnMut(u64, u64),
    ) -> RbdResult<()> {
        const PIECE: u64 = 4 << 20;
        let end = off
            .checked_add(len)
            .ok_or_else(|| RbdError::refused(ErrorCode::EINVAL, "range overflows"))?;
        let zeros = Bytes::from(vec![0u8; PIECE.min(len) as usize]);
        let mut at = off;
        while at < end {
            let piece = PIECE.min(end - at);
            self.write(at, zeros.slice(..piece as usize)).await?;
            at += piece;
            progress(at - off, len);
        }
        Ok(())
    }

    /// Makes every write acknowledged before the call durable in the cluster (writes back
    /// the cache; the first flush also ends writethrough-until-flush).
    pub async fn flush(&self) -> RbdResult<()> {
        match &self.inner.cache {
            Some(cache) => cache.flush(true, true).await,
            None => Ok(()),
        }
    }

    /// The image's own flush (before a snapshot, a diff, a resize, a close): writes back
    /// like [`Image::flush`] without ending writethrough-until-flush.
    async fn flush_internal(&self) -> RbdResult<()> {
        match &self.inner.cache {
            Some(cache) => cache.flush(true, false).await,
            None => Ok(()),
        }
    }

    /// Writes the cache back and drops what it holds (librbd's `rbd_invalidate_cache`).
    pub async fn invalidate_cache(&self) -> RbdResult<()> {
        self.flush_internal().await?;
        self.drop_clean_cache();
        Ok(())
    }

    /// Drops the cache's clean data (the image changed under it).
    fn drop_clean_cache(&self) {
        if let Some(cache) = &self.inner.cache {
            cache.invalidate();
        }
    }

    /// librbd's compare-and-write: if the image's bytes at `off` equal `cmp`, writes `data`
    /// there, atomically on the OSD (one op vector: an extent compare and the write). On a
    /// mismatch nothing is written and the error is EILSEQ with
    /// [`RbdError::mismatch_offset`] the image offset of the first differing byte.
    /// `cmp` and `data` must have the same length and the range must lie within one object
    /// (one stripe unit with striping) and within the image: EINVAL otherwise, as librbd.
    /// In a clone the parent's data is copied up first, so the compare sees it. Goes around
    /// the cache: the dirty bytes it overlaps are written back first.
    pub async fn compare_and_write(&self, off: u64, cmp: Bytes, data: Bytes) -> RbdResult<()> {
        self.check_writable()?;
        if cmp.len() != data.len() {
            return Err(RbdError::refused(
                ErrorCode::EINVAL,
                "compare and write buffers differ in length",
            ));
        }
        let len = data.len() as u64;
        if len == 0 {
            return Ok(());
        }
        let _right = self.write_right().await?;
        let direct = match &self.inner.cache {
            Some(cache) => Some(cache.begin_direct(off, len).await?),
            None => None,
        };
        let state = self.inner.state.read().await;
        if clip(off, len, state.size(None))? != len {
            return Err(RbdError::refused(ErrorCode::EINVAL, "compare and write past the end"));
        }
        let extents = state.layout.map(off, len);
        let [ext] = extents.as_slice() else {
            return Err(RbdError::refused(
                ErrorCode::EINVAL,
                "compare and write across an object boundary",
            ));
        };
        let ext = *ext;
        let mutation = Mutation::CompareWrite { cmp, data: data.clone() };
        match self.run_object_jobs(&state, vec![ext], move |_| mutation.clone()).await {
            Ok(()) => {
                if let Some(direct) = direct {
                    direct.finish(Some(&data));
                }
                Ok(())
            }
            Err(RbdError::Client(ClientError::Op { code, .. }))
                if code.mismatch_offset().is_some() =>
            {
                let at = code.mismatch_offset().unwrap_or(0);
                Err(RbdError::Mismatch { offset: off + at })
            }
            Err(e) => Err(e),
        }
    }

    fn check_writable(&self) -> RbdResult<()> {
        if self.inner.read_only {
            return Err(RbdError::code(ErrorCode::EROFS));
        }
        Ok(())
    }

    async fn run_object_jobs(
        &self,
        state: &State,
        extents: Vec<ObjectExtent>,
        make: impl Fn(&ObjectExtent) -> Mutation,
    ) -> RbdResult<()> {
        // One object: its job runs on this task (as a read of one object does).
        let single = extents.len() == 1;
        let mut set = tokio::task::JoinSet::new();
        let mut pending = extents.into_iter();
        loop {
            let mut done = None;
            while set.len() < PARALLEL_OBJECTS {
                let Some(ext) = pending.next() else { break };
                let before = self.object_state(ext.object_no).await;
                let mutation = make(&ext);
                if matches!(
                    mutation,
                    Mutation::Write(_) | Mutation::CompareWrite { .. } | Mutation::WriteMany(_)
                ) {
                    self.mark(ext.object_no, om::EXISTS).await?;
                }
                let job = WriteJob::new(state, ext, mutation, before);
                if single {
                    done = Some(job.run().await?);
                } else {
                    set.spawn(job.run());
                }
            }
            let (object_no, result) = match done {
                Some(done) => done,
                None => match set.join_next().await {
                    Some(joined) => joined.map_err(join_error)??,
                    None => break,
                },
            };
            match result {
                Outcome::Exists => self.mark(object_no, om::EXISTS).await?,
                Outcome::Removed => self.mark(object_no, om::NONEXISTENT).await?,
                Outcome::Unchanged => {}
            }
        }
        Ok(())
    }

    /// The head object map's state of object `k` (None without an object map).
    async fn object_state(&self, k: u64) -> Option<u8> {
        let map = self.inner.object_map.lock().await;
        map.as_ref().map(|packed| om::state_in(packed, k))
    }

    /// Sets object `k` to `state` in the head object map (a method call only if it changes;
    /// EXISTS_CLEAN counts as EXISTS for writes).
    async fn mark(&self, k: u64, state: u8) -> RbdResult<()> {
        let mut map = self.inner.object_map.lock().await;
        let Some(packed) = map.as_mut() else { return Ok(()) };
        let current = om::state_in(packed, k);
        // EXISTS_CLEAN becomes EXISTS on a write: the object changed since the snapshot.
        if current == state || k >= (packed.len() as u64) * 4 {
            return Ok(());
        }
        let req = UpdateRequest { start: k, end: k + 1, new_state: state, current_state: None };
        match call(
            &self.inner.io,
            &names::object_map(&self.inner.id, None),
            "object_map_update",
            &req,
        )
        .await
        {
            Ok(()) => {
                om::set_in(packed, k, state);
                Ok(())
            }
            // The map is shorter than the image (resized by another handle): reload later.
            Err(e) if e.errno() == ErrorCode::ERANGE => Ok(()),
            Err(e) => Err(e),
        }
    }

    // ---- resize ----

    /// Changes the size. Shrinking removes the data past the new end first (this is what
    /// `rbd resize --allow-shrink` asks for; the CLI refuses a shrink without it).
    pub async fn resize(&self, new_size: u64, mut progress: impl FnMut(u64, u64)) -> RbdResult<()> {
        self.check_writable()?;
        self.flush_internal().await?;
        let _lock = self.write_guard().await?;
        let _invalidate = InvalidateOnDrop(self);
        let mut state = self.inner.state.write().await;
        self.refresh_locked(&mut state).await?;
        let old_size = state.header.size;
        let layout = state.layout;
        let new_count = layout.object_count(new_size);
        let has_map = self.inner.object_map.lock().await.is_some();
        let map_object = names::object_map(&self.inner.id, None);
        if new_size > old_size {
            if has_map {
                let req = ResizeRequest { object_count: new_count, default_state: om::NONEXISTENT };
                call(&self.inner.io, &map_object, "object_map_resize", &req).await?;
            }
            self.header_call("set_size", &SetSizeRequest { size: new_size }).await?;
        } else if new_size < old_size {
            // Trim: the tail of objects that stay, then every object wholly past the end
            // (with striping an object's pieces are spread out: remove it whole).
            let old_count = layout.object_count(old_size);
            let mut extents: Vec<ObjectExtent> = layout
                .map(new_size, old_size - new_size)
                .into_iter()
                .filter(|e| e.object_no < new_count)
                .collect();
            extents.extend((new_count..old_count).map(|k| ObjectExtent {
                object_no: k,
                offset: 0,
                length: layout.object_size(),
                buffer_offset: 0,
            }));
            let total = extents.len() as u64;
            let mut done = 0;
            for chunk in extents.chunks(PARALLEL_OBJECTS * 4) {
                self.run_object_jobs(&state, chunk.to_vec(), |_| Mutation::Discard {
                    hide_parent: false,
                })
                .await?;
                done += chunk.len() as u64;
                progress(done, total);
            }
            self.header_call("set_size", &SetSizeRequest { size: new_size }).await?;
            if has_map {
                let req = ResizeRequest { object_count: new_count, default_state: om::NONEXISTENT };
                call(&self.inner.io, &map_object, "object_map_resize", &req).await?;
            }
        }
        self.refresh_locked(&mut state).await?;
        drop(state);
        self.load_head_object_map().await?;
        self.header_changed().await;
        Ok(())
    }

    // ---- snapshots ----

    /// Creates snapshot `name` of the head (EEXIST if the name is taken; EDQUOT at the
    /// snapshot limit).
    pub async fn snap_create(&self, name: &str) -> RbdResult<SnapId> {
        names::check_snap_name(name)?;
        self.check_head()?;
        self.check_writable()?;
        // The snapshot holds every write acknowledged before it.
        self.flush_internal().await?;
        let _lock = self.write_guard().await?;
        let mut state = self.inner.state.write().await;
        // The header as last read (the watch refreshes it when another handle changes it):
        // a name taken since is refused by `snapshot_add` itself, at the cost of a snapshot
        // id. Not read again here: a snapshot costs three dependent writes (the monitor's
        // snapshot id, the snapshot's object map with its header record, the head's map
        // marked clean) and this read would add a round trip.
        if state.header.user_snapshot(name).is_some() {
            return Err(RbdError::code(ErrorCode::EEXIST));
        }
        let io = &self.inner.io;
        let snap_id = io.selfmanaged_snap_create().await?;
        let with_map = state.has(features::OBJECT_MAP);
        let snap_map = names::object_map(&self.inner.id, Some(snap_id));
        // The snapshot's object map (a copy of the head's, taken under the lock, so no write
        // changes it meanwhile) and the header's snapshot record are written side by side:
        // they are different objects and neither needs the other. A crash between the two
        // can leave a snapshot without its map, which readers treat as an invalid map (the
        // slower path without it, as librbd does), never as wrong data. The head's map is
        // marked clean only once the snapshot exists: marked earlier, a failed or lost
        // snapshot would leave objects changed since the previous snapshot marked unchanged.
        let add = SnapshotAddRequest { snap_id, name: name.into() };
        let header_object = names::header_object(&self.inner.id);
        let save_map = async {
            if with_map {
                let map = load_object_map(io, &self.inner.id, None).await?;
                call(io, &snap_map, "object_map_save", &map).await?;
            }
            Ok::<(), RbdError>(())
        };
        let add_record = call(io, &header_object, "snapshot_add", &add);
        if let Err(e) = tokio::try_join!(save_map, add_record) {
            // Whichever succeeded is undone (the record first: no snapshot is left without
            // its map by the undo itself).
            let _ = call(io, &header_object, "snapshot_remove", &SnapRequest { snap_id }).await;
            let _ = io.remove(&snap_map).await;
            let _ = io.selfmanaged_snap_remove(snap_id).await;
            return Err(e);
        }
        if with_map {
            let head = names::object_map(&self.inner.id, None);
            if let Err(e) = call(io, &head, "object_map_snap_add", &()).await {
                tracing::warn!(image = %self.inner.name, error = %e, "object map not marked clean after a snapshot");
            }
        }
        self.refresh_locked(&mut state).await?;
        drop(state);
        self.load_head_object_map().await?;
        self.header_changed().await;
        Ok(snap_id)
    }

    fn check_head(&self) -> RbdResult<()> {
        if self.inner.snap.is_some() {
            return Err(RbdError::code(ErrorCode::EROFS));
        }
        Ok(())
    }

    async fn user_snapshot(&self, name: &str) -> RbdResult<SnapshotInfo> {
        self.refresh().await?;
        let state = self.inner.state.read().await;
        state.header.user_snapshot(name).cloned().ok_or(RbdError::code(ErrorCode::ENOENT))
    }

    /// Removes snapshot `name`: EBUSY if protected; a snapshot clone v2 children still read
    /// moves to the trash namespace and goes with its last child.
    pub async fn snap_remove(&self, name: &str) -> RbdResult<()> {
        let _lock = if self.inner.read_only { None } else { self.write_guard().await? };
        self.check_head()?;
        let snap = self.user_snapshot(name).await?;
        if snap.protection != Protection::Unprotected {
            return Err(RbdError::refused(ErrorCode::EBUSY, "snapshot is protected"));
        }
        let header_object = names::header_object(&self.inner.id);
        if snap.child_count > 0 {
            call(
                &self.inner.io,
                &header_object,
                "snapshot_trash_add",
                &SnapRequest { snap_id: snap.id },
            )
            .await?;
        } else {
            remove_snapshot_records(&self.inner.io, &self.inner.id, snap.id).await?;
        }
        self.refresh().await?;
        if let Some(parent) = &snap.parent {
            self.detach_if_unreferenced(&parent.spec).await?;
        }
        self.header_changed().await;
        Ok(())
    }

    /// Detaches from parent snapshot `spec` once neither the head nor any snapshot reads
    /// through it (a flatten without deep-flatten keeps the snapshots' links, and with them
    /// the registration that keeps the parent snapshot alive).
    async fn detach_if_unreferenced(&self, spec: &ParentSpec) -> RbdResult<()> {
        let referenced = {
            let state = self.inner.state.read().await;
            let h = &state.header;
            h.parent.as_ref().is_some_and(|p| p.spec == *spec)
                || h.snapshots.iter().any(|s| s.parent.as_ref().is_some_and(|p| p.spec == *spec))
        };
        if !referenced {
            pool::detach_from_parent(&self.inner.io, &self.inner.id, spec).await?;
        }
        Ok(())
    }

    /// Renames snapshot `old` to `new`.
    pub async fn snap_rename(&self, old: &str, new: &str) -> RbdResult<()> {
        let _lock = if self.inner.read_only { None } else { self.write_guard().await? };
        names::check_snap_name(new)?;
        let snap = self.user_snapshot(old).await?;
        let req = SnapshotRenameRequest { snap_id: snap.id, name: new.into() };
        self.header_call("snapshot_rename", &req).await?;
        self.refresh().await?;
        self.header_changed().await;
        Ok(())
    }

    /// Protects snapshot `name` (EBUSY if already protected, as `rbd snap protect` says).
    pub async fn snap_protect(&self, name: &str) -> RbdResult<()> {
        let snap = self.user_snapshot(name).await?;
        if snap.protection == Protection::Protected {
            return Err(RbdError::refused(ErrorCode::EBUSY, "snapshot is already protected"));
        }
        self.set_protection(snap.id, Protection::Protected).await
    }

    /// Unprotects snapshot `name`: EINVAL if not protected, EBUSY while it has children.
    pub async fn snap_unprotect(&self, name: &str) -> RbdResult<()> {
        let snap = self.user_snapshot(name).await?;
        if snap.protection == Protection::Unprotected {
            return Err(RbdError::refused(ErrorCode::EINVAL, "snap is already unprotected"));
        }
        let spec = ParentSpec {
            pool: self.inner.io.pool_id(),
            namespace: self.inner.io.namespace().to_string(),
            image_id: self.inner.id.clone(),
            snap_id: snap.id,
        };
        if snap.child_count > 0 || !pool::children(&self.inner.io, &spec).await?.is_empty() {
            return Err(RbdError::refused(
                ErrorCode::EBUSY,
                "cannot unprotect: at least 1 child(ren) in pool",
            ));
        }
        self.set_protection(snap.id, Protection::Unprotected).await
    }

    async fn set_protection(&self, snap_id: SnapId, protection: Protection) -> RbdResult<()> {
        let _lock = if self.inner.read_only { None } else { self.write_guard().await? };
        let req = SetProtectionRequest { snap_id, protection };
        self.header_call("set_protection", &req).await?;
        self.refresh().await?;
        self.header_changed().await;
        Ok(())
    }

    /// Sets (Some) or clears (None) the snapshot limit.
    pub async fn snap_set_limit(&self, limit: Option<u64>) -> RbdResult<()> {
        let _lock = if self.inner.read_only { None } else { self.write_guard().await? };
        let req = SnapLimitRequest { limit };
        self.header_call("set_snap_limit", &req).await?;
        self.refresh().await?;
        self.header_changed().await;
        Ok(())
    }

    /// Rolls the head back to snapshot `name` (data, size and object map).
    pub async fn snap_rollback(
        &self,
        name: &str,
        mut progress: impl FnMut(u64, u64),
    ) -> RbdResult<()> {
        self.check_writable()?;
        self.flush_internal().await?;
        let _lock = self.write_guard().await?;
        let _invalidate = InvalidateOnDrop(self);
        self.check_head()?;
        let snap = self.user_snapshot(name).await?;
        let mut state = self.inner.state.write().await;
        self.refresh_locked(&mut state).await?;
        let layout = state.layout;
        let count = layout.object_count(state.header.size.max(snap.size));
        let has_map = self.inner.object_map.lock().await.is_some();
        let snap_map = if has_map {
            load_object_map(&self.inner.io, &self.inner.id, Some(snap.id)).await.ok()
        } else {
            None
        };
        let head_map = self.inner.object_map.lock().await.clone();
        // The snapshot's own view: where it has no version of an object, it reads through
        // its parent (with its own overlap, which the head may have lost since).
        let view = Image::open_by_id(
            &self.inner.io,
            &self.inner.id,
            &self.inner.name,
            OpenOptions { snapshot: Some(name.into()), read_only: true, ..Default::default() },
        )
        .await?;
        let (snap_data, snap_parent) = {
            let v = view.inner.state.read().await;
            (v.data.clone(), v.parent.as_ref().map(|(info, image)| (info.overlap, image.clone())))
        };
        let objects: Vec<u64> = (0..count)
            .filter(|&k| {
                let in_snap = snap_map.as_ref().is_none_or(|m| m.get(k) != om::NONEXISTENT);
                let in_head =
                    head_map.as_ref().is_none_or(|m| om::state_in(m, k) != om::NONEXISTENT);
                in_snap || in_head || snap_parent.is_some()
            })
            .collect();
        let total = objects.len() as u64;
        let mut done = 0;
        let mut copied = Vec::new();
        for chunk in objects.chunks(PARALLEL_OBJECTS) {
            let mut set = tokio::task::JoinSet::new();
            for &k in chunk {
                let data = state.data.clone();
                let snap_data = snap_data.clone();
                let snap_parent = snap_parent.clone();
                let object = data_object(&state.header.object_prefix, k);
                let to_snapshots = snap_parent
                    .as_ref()
                    .is_some_and(|(o, _)| copyup_to_snapshots(&state, layout, k, Some(*o)));
                let snap_maps = snapshot_maps(&state);
                set.spawn(async move {
                    let rollback = vec![ObjectOp::Rollback { snap: snap.id }];
                    ignore_enoent(data.exec(&object, rollback).await.map(drop))?;
                    let Some((overlap, parent)) = snap_parent else { return Ok(None) };
                    if layout.object_to_image(k).iter().all(|r| r.0 >= overlap) {
                        return Ok(None);
                    }
                    match snap_data.exec(&object, vec![ObjectOp::Stat]).await {
                        Ok(_) => return Ok(None),
                        Err(e) if is(&e, ErrorCode::ENOENT) => {}
                        Err(e) => return Err(RbdError::from(e)),
                    }
                    match parent_object_data(layout, k, overlap, &parent).await? {
                        None => Ok(None),
                        Some(bytes) => {
                            let maps: &[String] = if to_snapshots { &snap_maps } else { &[] };
                            copy_up_object(&data, &object, k, bytes, to_snapshots, maps).await?;
                            Ok(Some(k))
                        }
                    }
                });
            }
            while let Some(joined) = set.join_next().await {
                copied.extend(joined.map_err(join_error)??);
                done += 1;
            }
            progress(done, total);
        }
        let header_object = names::header_object(&self.inner.id);
        if state.header.size != snap.size {
            call(&self.inner.io, &header_object, "set_size", &SetSizeRequest { size: snap.size })
                .await?;
        }
        if let Some(map) = snap_map {
            call(&self.inner.io, &names::object_map(&self.inner.id, None), "object_map_save", &map)
                .await?;
        }
        self.refresh_locked(&mut state).await?;
        drop(state);
        self.load_head_object_map().await?;
        for k in copied {
            self.mark(k, om::EXISTS).await?;
        }
        self.header_changed().await;
        Ok(())
    }

    // ---- clones ----

    /// Copies every object the clone still reads from its parent into the clone, then
    /// unlinks it from the parent (EINVAL if the image is not a clone).
    pub async fn flatten(&self, mut progress: impl FnMut(u64, u64)) -> RbdResult<()> {
        self.check_writable()?;
        let _lock = self.write_guard().await?;
        self.check_head()?;
        let state = self.inner.state.write().await;
        let Some((parent_info, _)) = state.parent.clone() else {
            return Err(RbdError::refused(ErrorCode::EINVAL, "image has no parent"));
        };
        let count = state.layout.object_count(parent_info.overlap.min(state.header.size));
        let mut done = 0;
        let objects: Vec<u64> = (0..count).collect();
        for chunk in objects.chunks(PARALLEL_OBJECTS) {
            let mut set = tokio::task::JoinSet::new();
            for &k in chunk {
                let job = WriteJob::new(
                    &state,
                    ObjectExtent { object_no: k, offset: 0, length: 0, buffer_offset: 0 },
                    Mutation::CopyUp,
                    None,
                );
                set.spawn(job.run());
            }
            while let Some(joined) = set.join_next().await {
                let (k, outcome) = joined.map_err(join_error)??;
                if outcome == Outcome::Exists {
                    self.mark(k, om::EXISTS).await?;
                }
                done += 1;
            }
            progress(done, count);
        }
        // With deep-flatten the snapshots are unlinked too, except those that still read
        // parent data they have no copy of (copy-ups that could not go to them).
        let mut keep = Vec::new();
        if state.has(features::DEEP_FLATTEN) {
            for snap in state.header.snapshots.iter().filter(|s| s.parent.is_some()) {
                if self.snapshot_needs_parent(&state.header, snap).await? {
                    keep.push(snap.id);
                }
            }
        }
        let req = RemoveParentRequest { keep };
        self.header_call("remove_parent", &req).await?;
        let mut state = state;
        self.refresh_locked(&mut state).await?;
        drop(state);
        self.detach_if_unreferenced(&parent_info.spec).await?;
        self.header_changed().await;
        Ok(())
    }

    /// Whether snapshot `snap` of this clone reads non-zero parent data for some object it
    /// has no version of.
    async fn snapshot_needs_parent(
        &self,
        header: &ImageHeader,
        snap: &SnapshotInfo,
    ) -> RbdResult<bool> {
        let view = Image::open_at(
            &self.inner.io,
            &self.inner.id,
            &self.inner.name,
            header.clone(),
            Some((snap.id, snap.name.clone())),
            true,
            CacheConfig::default(),
        )
        .await?;
        let v = view.inner.state.read().await;
        let Some((info, parent)) = v.parent.clone() else { return Ok(false) };
        let overlap = info.overlap.min(snap.size);
        let snap_map = if v.has(features::OBJECT_MAP) && snap.flags & flags::OBJECT_MAP_INVALID == 0
        {
            load_object_map(&self.inner.io, &self.inner.id, Some(snap.id)).await.ok()
        } else {
            None
        };
        for k in 0..v.layout.object_count(overlap) {
            if snap_map.as_ref().is_some_and(|m| m.get(k) != om::NONEXISTENT) {
                continue;
            }
            let object = data_object(&v.header.object_prefix, k);
            match v.data.exec(&object, vec![ObjectOp::Stat]).await {
                Ok(_) => continue,
                Err(e) if is(&e, ErrorCode::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
            if parent_object_data(v.layout, k, overlap, &parent).await?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    // ---- diff ----

    /// Which extents of `[off, off + len)` of the open head or snapshot hold data
    /// (`from` None) or changed since snapshot `from` (librbd's `diff_iterate2`): calls
    /// `report(offset, length, exists)` in offset order, one call per object piece (whole
    /// objects clipped to the range: what `whole_object` asks for, and all this reports).
    /// `exists` false means the extent was removed since `from`. With `include_parent`, a
    /// clone's extents that read through to the parent count as data when the parent has
    /// data there (only without `from`). A non-zero return of `report` stops the walk and is
    /// returned (QEMU stops with -9000).
    ///
    /// With the object map (not flagged invalid) nothing but the maps is read; without it
    /// every object in the range is asked for (and, with `from`, every existing object
    /// counts as changed and every one that existed at `from` but not now as removed: more
    /// than needed, never less).
    pub async fn diff_iterate(
        &self,
        from: Option<SnapId>,
        off: u64,
        len: u64,
        include_parent: bool,
        mut report: impl FnMut(u64, u64, bool) -> i32 + Send,
    ) -> RbdResult<i32> {
        // What the cache holds must be in the objects and the object map first (librbd
        // flushes here too).
        self.flush_internal().await?;
        let (layout, size, prefix, snapshots, parent) = {
            let state = self.inner.state.read().await;
            (
                state.layout,
                state.size(self.snap_id()),
                state.header.object_prefix.clone(),
                state.header.snapshots.clone(),
                state.parent.clone(),
            )
        };
        let len = clip(off, len, size)?;
        if len == 0 {
            return Ok(0);
        }
        let end = off + len;
        let to = self.snap_id();
        let first = layout.map(off, 1).first().map_or(0, |e| e.object_no);
        let last_object = layout.object_count(end);
        let objects: Vec<u64> = if layout.is_simple() {
            (first..last_object).collect()
        } else {
            (0..last_object).collect()
        };
        // The maps: `to` (open snapshot or head), `from`, and every snapshot in between.
        let to_map = self.object_map(to).await?;
        let from_map = match from {
            Some(id) => self.object_map(Some(id)).await?,
            None => None,
        };
        let between: Option<Vec<ObjectMap>> = match from {
            None => Some(Vec::new()),
            Some(from_id) => {
                let mut maps = Vec::new();
                let mut ok = true;
                for snap in
                    snapshots.iter().filter(|s| s.id > from_id && to.is_none_or(|t| s.id <= t))
                {
                    match self.object_map(Some(snap.id)).await? {
                        Some(m) => maps.push(m),
                        None => ok = false,
                    }
                }
                ok.then_some(maps)
            }
        };
        let mut data = self.inner.io.clone();
        data.set_read_snap(to.unwrap_or(SNAP_HEAD));
        let mut pieces: Vec<(u64, u64, bool)> = Vec::new();
        for k in objects {
            let exists_now = match &to_map {
                Some(m) => m.get(k) != om::NONEXISTENT,
                None => match data.exec(&data_object(&prefix, k), vec![ObjectOp::Stat]).await {
                    Ok(_) => true,
                    Err(e) if is(&e, ErrorCode::ENOENT) => false,
                    Err(e) => return Err(e.into()),
                },
            };
            let (changed, exists) = match from {
                None => {
                    let mut exists = exists_now;
                    if !exists && include_parent {
                        if let Some((info, parent)) = &parent {
                            exists = parent_has_data(layout, k, info.overlap, parent).await?;
                        }
                    }
                    (exists, exists)
                }
                Some(_) => match (&to_map, &from_map, &between) {
                    (Some(to_m), Some(from_m), Some(maps)) => {
                        let before = from_m.get(k) != om::NONEXISTENT;
                        let dirty = to_m.get(k) == om::EXISTS
                            || maps.iter().any(|m| m.get(k) == om::EXISTS);
                        (before != exists_now || (exists_now && dirty), exists_now)
                    }
                    _ => {
                        // No maps: an object that exists counts as changed; one that existed
                        // at `from` and is gone now as removed.
                        let existed = match from {
                            Some(from_id) if !exists_now => {
                                let mut then = data.clone();
                                then.set_read_snap(from_id);
                                match then
                                    .exec(&data_object(&prefix, k), vec![ObjectOp::Stat])
                                    .await
                                {
                                    Ok(_) => true,
                                    Err(e) if is(&e, ErrorCode::ENOENT) => false,
                                    Err(e) => return Err(e.into()),
                                }
                            }
                            _ => false,
                        };
                        (exists_now || existed, exists_now)
                    }
                },
            };
            if !changed {
                continue;
            }
            for (image_off, _, piece_len) in layout.object_to_image(k) {
                let lo = image_off.max(off);
                let hi = (image_off + piece_len).min(end);
                if lo < hi {
                    pieces.push((lo, hi - lo, exists));
                }
            }
        }
        pieces.sort_unstable();
        for (at, length, exists) in pieces {
            let code = report(at, length, exists);
            if code != 0 {
                return Ok(code);
            }
        }
        Ok(0)
    }

    // ---- advisory locks (rbd lock ls|add|rm) ----

    /// The lock on the header (`rbd lock ls`): the advisory locks `rbd lock add` takes and
    /// the exclusive lock of writers (cookie `auto N`) share Ceph's lock name `rbd_lock`.
    pub async fn lockers(&self) -> RbdResult<quarry_cls::lock::LockInfo> {
        let header = names::header_object(&self.inner.id);
        let out = self
            .inner
            .io
            .exec(&header, vec![quarry_cls::lock::get_info_op(crate::lock::LOCK_NAME)])
            .await?;
        match out.last() {
            Some(OpOutput::Returned(bytes)) => {
                quarry_cls::lock::decode_info(bytes).map_err(RbdError::code)
            }
            _ => Err(RbdError::refused(ErrorCode::EIO, "odd reply to lock get_info")),
        }
    }

    /// Takes an advisory lock with id `cookie` (`rbd lock add`): exclusive, or shared with
    /// `tag`. EBUSY if incompatible with the current holders, EEXIST if this client holds it.
    pub async fn lock_add(&self, cookie: &str, shared_tag: Option<&str>) -> RbdResult<()> {
        let req = quarry_cls::lock::LockRequest {
            name: crate::lock::LOCK_NAME.into(),
            lock_type: if shared_tag.is_some() {
                quarry_cls::lock::LockType::Shared
            } else {
                quarry_cls::lock::LockType::Exclusive
            },
            cookie: cookie.into(),
            tag: shared_tag.unwrap_or("").into(),
            description: String::new(),
            duration_secs: 0,
            may_renew: false,
            must_renew: false,
        };
        let header = names::header_object(&self.inner.id);
        self.inner.io.exec(&header, vec![quarry_cls::lock::lock_op(&req)]).await?;
        Ok(())
    }

    /// Breaks holder `locker` (`client.4123`)'s lock `cookie` (`rbd lock rm`): ENOENT if it
    /// does not hold it.
    pub async fn lock_break(&self, locker: &str, cookie: &str) -> RbdResult<()> {
        let req = quarry_cls::lock::BreakLockRequest {
            name: crate::lock::LOCK_NAME.into(),
            locker: locker.into(),
            cookie: cookie.into(),
        };
        let header = names::header_object(&self.inner.id);
        self.inner.io.exec(&header, vec![quarry_cls::lock::break_lock_op(&req)]).await?;
        Ok(())
    }

    // ---- features ----

    /// Enables or disables `features` (`rbd feature enable|disable`): exclusive-lock,
    /// object-map, fast-diff (deep-flatten can only be disabled). Dependencies as Ceph's:
    /// fast-diff needs object-map, object-map needs exclusive-lock (EINVAL otherwise).
    /// Enabling object-map builds the head's map from the objects that exist (and flags the
    /// snapshots' maps invalid); disabling it removes the maps.
    pub async fn update_features(&self, features_bits: u64, enable: bool) -> RbdResult<()> {
        self.check_writable()?;
        self.check_head()?;
        let _lock = self.write_guard().await?;
        let mut state = self.inner.state.write().await;
        self.refresh_locked(&mut state).await?;
        let before = state.header.features;
        let req = quarry_cls::rbd::header::SetFeaturesRequest {
            features: if enable { features_bits } else { 0 },
            mask: features_bits,
        };
        self.header_call("set_features", &req).await?;
        let adds_map = enable
            && features_bits & features::OBJECT_MAP != 0
            && before & features::OBJECT_MAP == 0;
        let drops_map = !enable
            && features_bits & features::OBJECT_MAP != 0
            && before & features::OBJECT_MAP != 0;
        if adds_map {
            // Build the head's map from what exists; snapshots' maps are not known.
            let count = state.layout.object_count(state.header.size);
            let mut map = ObjectMap::filled(count, om::NONEXISTENT).packed.to_vec();
            for k in 0..count {
                let object = data_object(&state.header.object_prefix, k);
                match state.data.exec(&object, vec![ObjectOp::Stat]).await {
                    Ok(_) => om::set_in(&mut map, k, om::EXISTS),
                    Err(e) if is(&e, ErrorCode::ENOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let map = ObjectMap { object_count: count, packed: Bytes::from(map) };
            call(&self.inner.io, &names::object_map(&self.inner.id, None), "object_map_save", &map)
                .await?;
            for snap in state.header.snapshots.clone() {
                let req = quarry_cls::rbd::header::SetFlagsRequest {
                    snap_id: Some(snap.id),
                    flags: flags::OBJECT_MAP_INVALID,
                    mask: flags::OBJECT_MAP_INVALID,
                };
                self.header_call("set_flags", &req).await?;
            }
        }
        if drops_map {
            ignore_enoent(self.inner.io.remove(&names::object_map(&self.inner.id, None)).await)?;
            for snap in &state.header.snapshots {
                let map = names::object_map(&self.inner.id, Some(snap.id));
                ignore_enoent(self.inner.io.remove(&map).await)?;
            }
        }
        self.refresh_locked(&mut state).await?;
        drop(state);
        self.load_head_object_map().await?;
        self.header_changed().await;
        Ok(())
    }

    // ---- image-meta ----

    /// Sets image-meta `key`.
    pub async fn metadata_set(&self, key: &str, value: &str) -> RbdResult<()> {
        let entries = [(key.to_string(), Bytes::copy_from_slice(value.as_bytes()))].into();
        self.header_call("metadata_set", &MetadataSetRequest { entries }).await
    }

    /// Image-meta `key` (ENOENT if absent).
    pub async fn metadata_get(&self, key: &str) -> RbdResult<String> {
        let req = MetadataKeyRequest { key: key.into() };
        let bytes = self
            .inner
            .io
            .call(
                &names::header_object(&self.inner.id),
                "rbd",
                "metadata_get",
                quarry_cls::codec::encode(&req),
            )
            .await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Removes image-meta `key` (ENOENT if absent).
    pub async fn metadata_remove(&self, key: &str) -> RbdResult<()> {
        let req = MetadataKeyRequest { key: key.into() };
        self.header_call("metadata_remove", &req).await
    }

    /// Every image-meta entry.
    pub async fn metadata_list(&self) -> RbdResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let req = MetadataListRequest { start_after: after.clone(), max: 1024 };
            let page: MetadataList = call_read(
                &self.inner.io,
                &names::header_object(&self.inner.id),
                "metadata_list",
                &req,
            )
            .await?;
            after = page.entries.keys().next_back().cloned().unwrap_or_default();
            out.extend(
                page.entries
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())),
            );
            if !page.more {
                return Ok(out);
            }
        }
    }

    /// The object map of the head or of snapshot `snap` (None when the image has none or
    /// it is flagged invalid). The head's is read after a flush of the cache.
    pub async fn object_map(&self, snap: Option<SnapId>) -> RbdResult<Option<ObjectMap>> {
        if snap.is_none() {
            self.flush_internal().await?; // cached writes mark the map when written back
        }
        let (usable, _) = {
            let state = self.inner.state.read().await;
            let flags = match snap {
                None => state.header.flags,
                Some(id) => {
                    state.header.snapshot(id).map_or(flags::OBJECT_MAP_INVALID, |s| s.flags)
                }
            };
            (state.has(features::OBJECT_MAP) && flags & flags::OBJECT_MAP_INVALID == 0, ())
        };
        if !usable {
            return Ok(None);
        }
        match load_object_map(&self.inner.io, &self.inner.id, snap).await {
            Ok(map) => Ok(Some(map)),
            // A snapshot whose map was never written (a crash while it was created): an
            // invalid map, as librbd treats one it cannot load.
            Err(e) if snap.is_some() && e.errno() == ErrorCode::ENOENT => {
                tracing::warn!(image = %self.inner.name, ?snap, "snapshot object map missing: not used");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// The image's own cache settings: image-meta keys `conf_rbd_cache*` / `conf_rbd_readahead*`
/// (librbd's per-image overrides, `rbd image-meta set IMG conf_rbd_cache false`) win over
/// the open's. A value that does not parse is logged and ignored, as librbd does.
async fn apply_image_conf(io: &IoCtx, id: &str, cache: &mut CacheConfig) -> RbdResult<()> {
    let req = MetadataListRequest { start_after: "conf_rbd_".into(), max: 64 };
    let page: MetadataList =
        call_read(io, &names::header_object(id), "metadata_list", &req).await?;
    for (key, value) in &page.entries {
        let Some(option) = key.strip_prefix("conf_") else { break };
        if !cache::CACHE_OPTIONS.contains(&option) {
            continue;
        }
        let value = String::from_utf8_lossy(value);
        if let Err(e) = cache.set(option, &value) {
            tracing::warn!(image_id = id, key, error = %e, "ignoring an image's cache setting");
        }
    }
    Ok(())
}

/// Forgets snapshot `snap` of image `id` for good: its header entry, its id at the monitor
/// (the OSDs then trim its data) and its object map.
pub(crate) async fn remove_snapshot_records(io: &IoCtx, id: &str, snap: SnapId) -> RbdResult<()> {
    call(io, &names::header_object(id), "snapshot_remove", &SnapRequest { snap_id: snap }).await?;
    // Nobody finds the snapshot any more: its id goes back to the monitor (which has the
    // OSDs trim its data) and its object map goes, side by side.
    let release = async { io.selfmanaged_snap_remove(snap).await.map_err(RbdError::from) };
    let map = async { ignore_enoent(io.remove(&names::object_map(id, Some(snap))).await) };
    tokio::try_join!(release, map).map(drop)
}

/// Loads the object map of image `id` (head or snapshot).
pub(crate) async fn load_object_map(
    io: &IoCtx,
    id: &str,
    snap: Option<SnapId>,
) -> RbdResult<ObjectMap> {
    call_read(io, &names::object_map(id, snap), "object_map_load", &()).await
}

async fn build_state(io: &IoCtx, header: ImageHeader, snap: Option<SnapId>) -> RbdResult<State> {
    let layout = Layout {
        order: header.order,
        stripe_unit: header.stripe_unit,
        stripe_count: header.stripe_count.max(1),
    };
    let mut data = io.clone();
    data.set_snap_context(header.snap_context())?;
    data.set_read_snap(snap.unwrap_or(SNAP_HEAD));
    let link = match snap {
        None => header.parent.clone(),
        Some(id) => header.snapshot(id).and_then(|s| s.parent.clone()),
    };
    let parent = match link {
        None => None,
        Some(info) => Some((info.clone(), open_parent(io, &info.spec).await?)),
    };
    Ok(State { header, layout, data, parent })
}

/// Opens a clone's parent read-only at its snapshot (the snapshot may be in the trash
/// namespace: it is opened by id).
fn open_parent<'a>(
    io: &'a IoCtx,
    spec: &'a ParentSpec,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = RbdResult<Image>> + Send + 'a>> {
    Box::pin(async move {
        let parent_io = io.rados().ioctx_by_id(spec.pool)?;
        let header: ImageHeader =
            call_read(&parent_io, &names::header_object(&spec.image_id), "get_image", &()).await?;
        let snap = header
            .snapshot(spec.snap_id)
            .ok_or(RbdError::refused(ErrorCode::ENOENT, "parent snapshot does not exist"))?;
        let snap_name = snap.name.clone();
        let state = build_state(&parent_io, header, Some(spec.snap_id)).await?;
        Ok(Image {
            inner: Arc::new(Inner {
                io: parent_io,
                name: String::new(),
                id: spec.image_id.clone(),
                snap: Some((spec.snap_id, snap_name)),
                read_only: true,
                state: RwLock::new(state),
                object_map: Mutex::new(None),
                watch: std::sync::Mutex::new(None),
                exclusive: std::sync::OnceLock::new(),
                cache: None,
                flusher: std::sync::Mutex::new(None),
            }),
        })
    })
}

/// Drops the cache's clean data when an operation that changes the image under it ends
/// (even on an error: part of it may have happened).
struct InvalidateOnDrop<'a>(&'a Image);

impl Drop for InvalidateOnDrop<'_> {
    fn drop(&mut self) {
        self.0.drop_clean_cache();
    }
}

/// librbd's `clip_io`: EINVAL if `off` is past the end, else the length cut at the end.
fn clip(off: u64, len: u64, size: u64) -> RbdResult<u64> {
    if off > size {
        return Err(RbdError::refused(ErrorCode::EINVAL, "offset beyond the end of the image"));
    }
    Ok(len.min(size - off))
}

fn join_error(e: tokio::task::JoinError) -> RbdError {
    RbdError::refused(ErrorCode::EIO, format!("image task failed: {e}"))
}

/// One object's part of a read.
struct ReadJob {
    data: IoCtx,
    object: String,
    ext: ObjectExtent,
    /// Image offset of the extent.
    image_off: u64,
    parent: Option<(u64, Image)>,
}

impl ReadJob {
    fn new(state: &State, ext: ObjectExtent, image_off: u64) -> ReadJob {
        ReadJob {
            data: state.data.clone(),
            object: data_object(&state.header.object_prefix, ext.object_no),
            ext,
            image_off,
            parent: state.parent.as_ref().map(|(info, image)| (info.overlap, image.clone())),
        }
    }

    /// (buffer offset, bytes): short data is zero-filled by the caller's zeroed buffer.
    async fn run(self) -> RbdResult<(u64, Bytes)> {
        let ops = vec![ObjectOp::Read { off: self.ext.offset, len: self.ext.length }];
        match self.data.exec(&self.object, ops).await {
            Ok(mut out) => match out.pop() {
                Some(OpOutput::Data(payload)) => Ok((self.ext.buffer_offset, payload.data)),
                _ => Err(RbdError::refused(ErrorCode::EIO, "odd reply to a read")),
            },
            Err(e) if is(&e, ErrorCode::ENOENT) => match self.parent {
                Some((overlap, parent)) if self.image_off < overlap => {
                    let len = self.ext.length.min(overlap - self.image_off);
                    let data = parent.read_boxed(self.image_off, len).await?;
                    Ok((self.ext.buffer_offset, data))
                }
                _ => Ok((self.ext.buffer_offset, Bytes::new())),
            },
            Err(e) => Err(e.into()),
        }
    }
}

/// What a write job does to its object.
#[derive(Clone)]
enum Mutation {
    Write(Bytes),
    /// Several writes to one object, in one op vector: (object offset, bytes).
    WriteMany(Vec<(u64, Bytes)>),
    /// Compare-and-write: the object's bytes at the extent must equal `cmp`.
    CompareWrite {
        cmp: Bytes,
        data: Bytes,
    },
    Discard {
        hide_parent: bool,
    },
    /// Flatten: copy the parent's data in if the object is absent.
    CopyUp,
}

/// What a job did to its object, for the object map.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Exists,
    Removed,
    Unchanged,
}

/// One object's part of a mutation.
struct WriteJob {
    data: IoCtx,
    object: String,
    ext: ObjectExtent,
    mutation: Mutation,
    layout: Layout,
    object_size: u64,
    /// A copy-up goes to the clone's snapshots too (under an empty snapshot context):
    /// [`copyup_to_snapshots`].
    to_snapshots: bool,
    /// Object maps of the snapshots a copy-up to snapshots must mark (object-map only).
    snap_maps: Vec<String>,
    /// The parent and the overlap, when this object has parent data.
    parent: Option<(u64, Image)>,
    /// The object map's state before this job (None: no map).
    before: Option<u8>,
}

impl WriteJob {
    fn new(state: &State, ext: ObjectExtent, mutation: Mutation, before: Option<u8>) -> WriteJob {
        let layout = state.layout;
        let parent = state.parent.as_ref().and_then(|(info, image)| {
            let first = layout.object_to_image(ext.object_no).iter().map(|r| r.0).min()?;
            (first < info.overlap).then(|| (info.overlap, image.clone()))
        });
        WriteJob {
            data: state.data.clone(),
            object: data_object(&state.header.object_prefix, ext.object_no),
            ext,
            mutation,
            layout,
            object_size: layout.object_size(),
            to_snapshots: copyup_to_snapshots(state, layout, ext.object_no, None),
            snap_maps: snapshot_maps(state),
            parent,
            before,
        }
    }

    async fn run(self) -> RbdResult<(u64, Outcome)> {
        let k = self.ext.object_no;
        let outcome = match &self.mutation {
            Mutation::Write(data) => {
                let op = ObjectOp::Write { off: self.ext.offset, data: Payload::new(data.clone()) };
                self.guarded(op).await?;
                Outcome::Exists
            }
            Mutation::Discard { hide_parent } => {
                let whole = self.ext.offset == 0 && self.ext.length == self.object_size;
                let parent = self.parent.is_some() && *hide_parent;
                if self.before == Some(om::NONEXISTENT) && !parent {
                    Outcome::Unchanged
                } else if whole && !parent {
                    ignore_enoent(
                        self.data.exec(&self.object, vec![ObjectOp::Remove]).await.map(drop),
                    )?;
                    Outcome::Removed
                } else if whole {
                    // An empty object hides the parent's data.
                    self.data.exec(&self.object, vec![ObjectOp::Truncate { size: 0 }]).await?;
                    Outcome::Exists
                } else {
                    let end = self.ext.offset + self.ext.length;
                    let op = if end == self.object_size {
                        ObjectOp::Truncate { size: self.ext.offset }
                    } else {
                        ObjectOp::Zero { off: self.ext.offset, len: self.ext.length }
                    };
                    if parent {
                        self.guarded(op).await?;
                        Outcome::Exists
                    } else {
                        let ops = vec![ObjectOp::AssertExists, op];
                        ignore_enoent(self.data.exec(&self.object, ops).await.map(drop))?;
                        Outcome::Unchanged
                    }
                }
            }
            Mutation::WriteMany(writes) => {
                let ops = writes
                    .iter()
                    .map(|(off, data)| ObjectOp::Write {
                        off: *off,
                        data: Payload::new(data.clone()),
                    })
                    .collect();
                self.guarded_ops(ops).await?;
                Outcome::Exists
            }
            Mutation::CompareWrite { cmp, data } => {
                let off = self.ext.offset;
                let ops = vec![
                    ObjectOp::CmpExt { off, data: cmp.clone() },
                    ObjectOp::Write { off, data: Payload::new(data.clone()) },
                ];
                self.guarded_ops(ops).await?;
                Outcome::Exists
            }
            Mutation::CopyUp => {
                if self.copy_up().await? {
                    Outcome::Exists
                } else {
                    Outcome::Unchanged
                }
            }
        };
        Ok((k, outcome))
    }

    /// Runs `op` on the object; in a clone, copies the parent's data in first if the object
    /// does not exist yet.
    async fn guarded(&self, op: ObjectOp) -> RbdResult<()> {
        self.guarded_ops(vec![op]).await
    }

    /// [`WriteJob::guarded`] for an op vector (applied atomically).
    async fn guarded_ops(&self, ops: Vec<ObjectOp>) -> RbdResult<()> {
        if self.parent.is_none() {
            self.data.exec(&self.object, ops).await?;
            return Ok(());
        }
        let mut asserted = vec![ObjectOp::AssertExists];
        asserted.extend(ops.iter().cloned());
        match self.data.exec(&self.object, asserted).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Op { index: 0, code }) if code == ErrorCode::ENOENT => {}
            Err(ClientError::Op { index, code }) => {
                // The index within `ops`, as if sent alone.
                return Err(ClientError::Op { index: index.saturating_sub(1), code }.into());
            }
            Err(e) => return Err(e.into()),
        }
        let parent_data = self.parent_data().await?;
        if self.to_snapshots || parent_data.is_none() {
            if let Some(data) = parent_data {
                self.copy_up_with(data, true).await?;
            }
            self.data.exec(&self.object, ops).await?;
        } else {
            let copyup = quarry_cls::call_op("rbd", "copyup", parent_data.unwrap_or_default());
            let mut with_copyup = vec![copyup];
            with_copyup.extend(ops);
            match self.data.exec(&self.object, with_copyup).await {
                Ok(_) => {}
                Err(ClientError::Op { index, code }) if index > 0 => {
                    return Err(ClientError::Op { index: index - 1, code }.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Flatten's step: copies the parent's data in if the object is absent. True if the
    /// object exists afterwards.
    async fn copy_up(&self) -> RbdResult<bool> {
        if self.parent.is_none() {
            return Ok(false);
        }
        match self.data.exec(&self.object, vec![ObjectOp::AssertExists]).await {
            Ok(_) => return Ok(true),
            Err(e) if is(&e, ErrorCode::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        match self.parent_data().await? {
            None => Ok(false),
            Some(data) => {
                self.copy_up_with(data, self.to_snapshots).await?;
                Ok(true)
            }
        }
    }

    /// Sends `rbd.copyup`; with `all_snapshots` under an empty snapshot context, so the
    /// clone's snapshots see the data too.
    async fn copy_up_with(&self, data: Bytes, all_snapshots: bool) -> RbdResult<()> {
        let maps: &[String] = if all_snapshots { &self.snap_maps } else { &[] };
        copy_up_object(&self.data, &self.object, self.ext.object_no, data, all_snapshots, maps)
            .await
    }

    /// The object's bytes as the parent has them (within the overlap), None if all zero.
    async fn parent_data(&self) -> RbdResult<Option<Bytes>> {
        let Some((overlap, parent)) = &self.parent else { return Ok(None) };
        parent_object_data(self.layout, self.ext.object_no, *overlap, parent).await
    }
}

/// Sends `rbd.copyup` of `bytes` to data object `k`. With `to_snapshots` under an empty
/// snapshot context (one version every snapshot without its own reads), and then the
/// snapshots' object maps (`snap_maps`) mark the object as existing, so that a NONEXISTENT
/// state still means the snapshot sees no object (rollback and diff rely on it).
async fn copy_up_object(
    data: &IoCtx,
    object: &str,
    k: u64,
    bytes: Bytes,
    to_snapshots: bool,
    snap_maps: &[String],
) -> RbdResult<()> {
    let op = quarry_cls::call_op("rbd", "copyup", bytes);
    if !to_snapshots {
        data.exec(object, vec![op]).await?;
        return Ok(());
    }
    let mut io = data.clone();
    io.set_snap_context(SnapContext::default())?;
    io.exec(object, vec![op]).await?;
    let req = UpdateRequest {
        start: k,
        end: k + 1,
        new_state: om::EXISTS,
        current_state: Some(om::NONEXISTENT),
    };
    for map in snap_maps {
        match call(&io, map, "object_map_update", &req).await {
            // A snapshot smaller than the object's offset never reads it.
            Err(e) if matches!(e.errno(), ErrorCode::ERANGE | ErrorCode::ENOENT) => {}
            other => other?,
        }
    }
    Ok(())
}

/// The object maps of every snapshot of the image (none without the object-map feature).
fn snapshot_maps(state: &State) -> Vec<String> {
    if !state.has(features::OBJECT_MAP) {
        return Vec::new();
    }
    let Some(id) = state.header.object_prefix.strip_prefix("rbd_data.") else {
        return Vec::new();
    };
    state.header.snapshots.iter().map(|s| names::object_map(id, Some(s.id))).collect()
}

/// Whether a copy-up of object `k` may go to the clone's snapshots as well as the head (one
/// version under an empty snapshot context, which every snapshot without its own version
/// reads). Only with deep-flatten (so that flatten can unlink the snapshots), only if every
/// snapshot still reads through the parent, and only if every such reader sees the same
/// parent bytes for this object: the object ends below every overlap, or all overlaps are
/// equal (a shrink lowers the head's overlap below older snapshots'). `viewer` is the
/// overlap of what is being copied (the head's when None). Otherwise the copy-up goes to the
/// head only and the snapshots keep reading through the parent.
fn copyup_to_snapshots(state: &State, layout: Layout, k: u64, viewer: Option<u64>) -> bool {
    if !state.has(features::DEEP_FLATTEN) {
        return false;
    }
    let h = &state.header;
    let mut overlaps: Vec<u64> = Vec::new();
    match viewer.or(h.parent.as_ref().map(|p| p.overlap)) {
        Some(o) => overlaps.push(o),
        None => return false,
    }
    for snap in &h.snapshots {
        match &snap.parent {
            Some(p) => overlaps.push(p.overlap.min(snap.size)),
            None => return false,
        }
    }
    let min = overlaps.iter().copied().min().unwrap_or(0);
    let max = overlaps.iter().copied().max().unwrap_or(0);
    let end = layout.object_to_image(k).iter().map(|(off, _, len)| off + len).max().unwrap_or(0);
    end <= min || min == max
}

/// Whether `parent` has data for any image byte object `k` of a clone covers within
/// `overlap` (its object map if it has one, else a read).
async fn parent_has_data(layout: Layout, k: u64, overlap: u64, parent: &Image) -> RbdResult<bool> {
    for (image_off, _, len) in layout.object_to_image(k) {
        if image_off >= overlap {
            continue;
        }
        let len = len.min(overlap - image_off);
        let found = std::sync::atomic::AtomicBool::new(false);
        Box::pin(parent.diff_iterate(None, image_off, len, true, |_, _, exists| {
            if exists {
                found.store(true, std::sync::atomic::Ordering::Relaxed);
                1
            } else {
                0
            }
        }))
        .await?;
        if found.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Object `k`'s bytes as `parent` has them within `overlap` (image offsets), trailing zeros
/// cut; None if all zero.
async fn parent_object_data(
    layout: Layout,
    k: u64,
    overlap: u64,
    parent: &Image,
) -> RbdResult<Option<Bytes>> {
    let mut object = BytesMut::zeroed(layout.object_size() as usize);
    let mut end = 0usize;
    for (image_off, obj_off, len) in layout.object_to_image(k) {
        if image_off >= overlap {
            continue;
        }
        let len = len.min(overlap - image_off);
        let data = parent.read_boxed(image_off, len).await?;
        let at = obj_off as usize;
        object[at..at + data.len()].copy_from_slice(&data);
        if data.iter().any(|&b| b != 0) {
            end = end.max(at + data.len());
        }
    }
    if end == 0 {
        return Ok(None);
    }
    object.truncate(end);
    Ok(Some(object.freeze()))
}
