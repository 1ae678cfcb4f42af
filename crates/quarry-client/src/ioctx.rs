//! [`IoCtx`]: the I/O context every frontend does object I/O through, what librados'
//! `rados_ioctx_t` is: a pool, a namespace, the snapshot context writes carry, the snapshot
//! reads see, and a locator. Its one-op calls build the op, run it with [`Rados::exec`] and
//! unpack the output; they add no logic of their own, so the CLI, the C ABI and the NBD
//! server share one behaviour.
//!
//! Snapshots: pool snapshots (`snap_create|remove|list|lookup|rollback`, through the
//! monitor) and self-managed ones (`selfmanaged_snap_create|remove|rollback`); reading at a
//! snapshot is `set_read_snap`.
//!
//! Data mutations carry the context's snapshot context; metadata calls (xattrs, omap) send an
//! empty one, as xattrs and omap belong to the head object only. Reads of data, size and
//! xattrs see the read snapshot; omap is read at the head.
//!
//! Namespaces: an object of namespace `NS` is stored, placed and addressed under the key
//! `NS\x1fNAME` (`quarry_types::namespaced_name`; the default namespace adds nothing), so the
//! OSDs, the store and placement need nothing of their own; the OSD reads the namespace back
//! out of the key for `namespace=` caps. A namespace or an object name containing `\x1f` is
//! refused with EINVAL. Listing shows the context's namespace only. Locator keys are not
//! supported: setting a non-empty one is refused with EOPNOTSUPP.

use std::collections::BTreeMap;

use bytes::Bytes;

use quarry_types::{
    namespaced_name, split_namespace, ErrorCode, ObjectOp, OpOutput, Payload, PoolId, SnapContext,
    SnapId, NAMESPACE_SEPARATOR, SNAP_HEAD,
};

use quarry_wire::{MonCommand, MonReply};

use crate::{ClientError, ObjectStat, Rados};

/// The single output of a one-op vector, or a protocol error naming the call.
fn single(mut outputs: Vec<OpOutput>, call: &'static str) -> Result<OpOutput, ClientError> {
    match (outputs.pop(), outputs.is_empty()) {
        (Some(out), true) => Ok(out),
        _ => Err(ClientError::Protocol { request: call }),
    }
}

/// An I/O context on one pool. Cheap to clone (the client is shared); each clone has its own
/// settings, so a task may change its snapshot or snap context without touching others.
#[derive(Clone)]
pub struct IoCtx {
    rados: Rados,
    pool: PoolId,
    pool_name: String,
    namespace: String,
    locator: String,
    snapc: SnapContext,
    read_snap: SnapId,
}

impl std::fmt::Debug for IoCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoCtx")
            .field("pool", &self.pool)
            .field("pool_name", &self.pool_name)
            .field("namespace", &self.namespace)
            .field("snapc", &self.snapc)
            .field("read_snap", &self.read_snap)
            .finish()
    }
}

impl Rados {
    /// An I/O context on the pool named `name` (asking the monitor for the newest map before
    /// reporting ENOENT, so a pool created a moment ago is found).
    pub async fn ioctx(&self, name: &str) -> Result<IoCtx, ClientError> {
        let pool = self.lookup_pool(name).await?;
        Ok(IoCtx::new(self.clone(), pool, name.to_string()))
    }

    /// An I/O context on pool `pool` by id (ENOENT if the map has no such pool).
    pub fn ioctx_by_id(&self, pool: PoolId) -> Result<IoCtx, ClientError> {
        let name = self
            .map()
            .pools
            .get(&pool)
            .map(|p| p.name.clone())
            .ok_or_else(|| ClientError::PoolNotFound { pool: pool.to_string() })?;
        Ok(IoCtx::new(self.clone(), pool, name))
    }
}

impl IoCtx {
    fn new(rados: Rados, pool: PoolId, pool_name: String) -> IoCtx {
        IoCtx {
            rados,
            pool,
            pool_name,
            namespace: String::new(),
            locator: String::new(),
            snapc: SnapContext::default(),
            read_snap: SNAP_HEAD,
        }
    }

    /// The client this context uses.
    pub fn rados(&self) -> &Rados {
        &self.rados
    }

    /// The pool's id.
    pub fn pool_id(&self) -> PoolId {
        self.pool
    }

    /// The pool's name.
    pub fn pool_name(&self) -> &str {
        &self.pool_name
    }

    /// The namespace (empty: the default one).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Selects the namespace objects are named in (`""`: the default one). A namespace
    /// containing `\x1f` is EINVAL and leaves the context unchanged.
    pub fn set_namespace(&mut self, namespace: &str) -> Result<(), ClientError> {
        if namespace.contains(NAMESPACE_SEPARATOR) {
            return Err(ClientError::invalid(
                ErrorCode::EINVAL,
                "a namespace may not contain the character \\x1f",
            ));
        }
        self.namespace = namespace.to_string();
        Ok(())
    }

    /// The key `object` is addressed by in this context's namespace (the name itself, not a
    /// copy, in the default namespace: this is on every op's path).
    fn key<'a>(&self, object: &'a str) -> Result<std::borrow::Cow<'a, str>, ClientError> {
        if object.contains(NAMESPACE_SEPARATOR) {
            return Err(ClientError::invalid(
                ErrorCode::EINVAL,
                "an object name may not contain the character \\x1f",
            ));
        }
        Ok(if self.namespace.is_empty() {
            std::borrow::Cow::Borrowed(object)
        } else {
            std::borrow::Cow::Owned(namespaced_name(&self.namespace, object))
        })
    }

    /// The locator key (empty: objects are placed by their name).
    pub fn locator(&self) -> &str {
        &self.locator
    }

    /// Sets the key objects are placed by instead of their name. Only the empty key is
    /// supported yet: any other is EOPNOTSUPP and leaves the context unchanged.
    pub fn set_locator(&mut self, key: &str) -> Result<(), ClientError> {
        if !key.is_empty() {
            return Err(ClientError::invalid(
                ErrorCode::EOPNOTSUPP,
                "object locator keys are not supported yet",
            ));
        }
        self.locator = key.to_string();
        Ok(())
    }

    /// The snapshot context data mutations carry.
    pub fn snap_context(&self) -> &SnapContext {
        &self.snapc
    }

    /// Sets the snapshot context of later data mutations (self-managed snapshots: librados'
    /// `selfmanaged_snap_set_write_ctx`). EINVAL, and no change, if it is not valid (snapshot
    /// ids must be descending and not above `seq`).
    pub fn set_snap_context(&mut self, snapc: SnapContext) -> Result<(), ClientError> {
        if !snapc.is_valid() {
            return Err(ClientError::invalid(ErrorCode::EINVAL, "invalid snapshot context"));
        }
        self.snapc = snapc;
        Ok(())
    }

    /// The snapshot reads see (`SNAP_HEAD`: the head).
    pub fn read_snap(&self) -> SnapId {
        self.read_snap
    }

    /// Sets the snapshot later reads see (librados' `snap_set_read`); `SNAP_HEAD` for the
    /// head. While it is not the head, mutations fail with EROFS.
    pub fn set_read_snap(&mut self, snap: SnapId) {
        self.read_snap = snap;
    }

    /// Creates pool snapshot `name` (librados `snap_create`): EEXIST if it exists, EINVAL if
    /// the pool uses self-managed snapshots. Writes to the pool then keep what it sees (the
    /// OSDs apply the pool's snap context to every write in pool-snapshot mode).
    pub async fn snap_create(&self, name: &str) -> Result<(), ClientError> {
        let cmd = MonCommand::PoolSnapCreate {
            pool: self.pool_name.clone(),
            snap: name.to_string(),
            strict: true,
        };
        self.rados.command(cmd).await.map(drop)
    }

    /// Removes pool snapshot `name` (librados `snap_remove`): ENOENT if there is none. The
    /// OSDs trim its data in the background.
    pub async fn snap_remove(&self, name: &str) -> Result<(), ClientError> {
        let cmd = MonCommand::PoolSnapRemove {
            pool: self.pool_name.clone(),
            snap: name.to_string(),
            strict: true,
        };
        self.rados.command(cmd).await.map(drop)
    }

    fn pool_info(&self) -> Result<quarry_wire::PoolInfo, ClientError> {
        self.rados
            .map()
            .pools
            .get(&self.pool)
            .cloned()
            .ok_or_else(|| ClientError::PoolNotFound { pool: self.pool_name.clone() })
    }

    /// The pool's snapshot ids, ascending (librados `snap_list`), from the client's map.
    pub fn snap_list(&self) -> Result<Vec<SnapId>, ClientError> {
        Ok(self.pool_info()?.pool_snaps.keys().copied().collect())
    }

    /// The id of pool snapshot `name` (librados `snap_lookup`; ENOENT if none).
    pub fn snap_lookup(&self, name: &str) -> Result<SnapId, ClientError> {
        self.pool_info()?.pool_snap_by_name(name).ok_or_else(|| ClientError::Failed {
            code: ErrorCode::ENOENT,
            message: format!("pool {} has no snapshot '{name}'", self.pool_name),
        })
    }

    /// Name and creation time (unix seconds) of pool snapshot `snap` (ENOENT if none).
    pub fn snap_info(&self, snap: SnapId) -> Result<(String, u64), ClientError> {
        let info = self.pool_info()?;
        let found = info.pool_snaps.get(&snap).map(|s| (s.name.clone(), s.stamp));
        found.ok_or_else(|| ClientError::Failed {
            code: ErrorCode::ENOENT,
            message: format!("pool {} has no snapshot {snap}", self.pool_name),
        })
    }

    /// Rolls `object` back to pool snapshot `name` (librados `snap_rollback`): its data
    /// becomes what the snapshot sees; if the snapshot does not see the object, the object is
    /// removed (ENOENT if neither has it).
    pub async fn snap_rollback(&self, object: &str, name: &str) -> Result<(), ClientError> {
        let snap = self.snap_lookup(name)?;
        self.exec(object, vec![ObjectOp::Rollback { snap }]).await.map(drop)
    }

    /// Allocates a self-managed snapshot id from the monitor (librados
    /// `selfmanaged_snap_create`, what librbd uses for image snapshots). EINVAL if the pool
    /// uses pool snapshots.
    pub async fn selfmanaged_snap_create(&self) -> Result<SnapId, ClientError> {
        match self.rados.command(MonCommand::SnapCreate { pool: self.pool }).await? {
            MonReply::SnapId(snap) => Ok(snap),
            _ => Err(ClientError::Protocol { request: "selfmanaged_snap_create" }),
        }
    }

    /// Releases self-managed snapshot `snap` (librados `selfmanaged_snap_remove`): the map
    /// lists it as removed and the OSDs trim its data in the background.
    pub async fn selfmanaged_snap_remove(&self, snap: SnapId) -> Result<(), ClientError> {
        self.rados.command(MonCommand::SnapRemove { pool: self.pool, snap }).await.map(drop)
    }

    /// Rolls `object` back to self-managed snapshot `snap` with this context's snap context
    /// (librados `selfmanaged_snap_rollback`).
    pub async fn selfmanaged_snap_rollback(
        &self,
        object: &str,
        snap: SnapId,
    ) -> Result<(), ClientError> {
        self.exec(object, vec![ObjectOp::Rollback { snap }]).await.map(drop)
    }

    /// Runs an op vector on `object` with this context: the snapshot context for mutations,
    /// the read snapshot for reads (a vector with a mutation must be run at the head).
    pub async fn exec(
        &self,
        object: &str,
        ops: Vec<ObjectOp>,
    ) -> Result<Vec<OpOutput>, ClientError> {
        self.rados.exec(self.pool, &self.key(object)?, &self.snapc, self.read_snap, ops).await
    }

    /// Calls the server-side method `class.method` on `object` with `input` (librados'
    /// `rados_exec`) and returns what it returned. The method runs atomically inside the OSD;
    /// whether it may change the object is the method's own property (a writing method needs
    /// the `x` cap and fails with EROFS at a snapshot). Unknown class or method: EOPNOTSUPP.
    /// The input and output encodings are the class's (`quarry_cls` has typed helpers).
    pub async fn call(
        &self,
        object: &str,
        class: &str,
        method: &str,
        input: Bytes,
    ) -> Result<Bytes, ClientError> {
        let op = ObjectOp::Call { class: class.into(), method: method.into(), input, origin: None };
        match single(self.exec(object, vec![op]).await?, "call")? {
            OpOutput::Returned(bytes) => Ok(bytes),
            _ => Err(ClientError::Protocol { request: "call" }),
        }
    }

    /// A read at the context's read snapshot.
    async fn read_op(
        &self,
        object: &str,
        ops: Vec<ObjectOp>,
    ) -> Result<Vec<OpOutput>, ClientError> {
        let key = self.key(object)?;
        self.rados.exec(self.pool, &key, &SnapContext::default(), self.read_snap, ops).await
    }

    /// An op on the head's metadata (xattrs, omap): no snapshot context.
    async fn head_op(
        &self,
        object: &str,
        ops: Vec<ObjectOp>,
    ) -> Result<Vec<OpOutput>, ClientError> {
        self.rados
            .exec(self.pool, &self.key(object)?, &SnapContext::default(), SNAP_HEAD, ops)
            .await
    }

    /// Every head object name in the context's namespace, PG by PG (names are sorted within
    /// a PG).
    pub async fn list_objects(&self) -> Result<Vec<String>, ClientError> {
        let keys = self.rados.list_objects(self.pool).await?;
        Ok(keys
            .iter()
            .map(|key| split_namespace(key))
            .filter(|(namespace, _)| *namespace == self.namespace)
            .map(|(_, name)| name.to_string())
            .collect())
    }

    /// Every head object in the pool, of every namespace, as (namespace, name)
    /// (`rados ls --all`).
    pub async fn list_objects_all(&self) -> Result<Vec<(String, String)>, ClientError> {
        let keys = self.rados.list_objects(self.pool).await?;
        Ok(keys
            .iter()
            .map(|key| {
                let (namespace, name) = split_namespace(key);
                (namespace.to_string(), name.to_string())
            })
            .collect())
    }

    /// Reads `len` bytes at `off` (`len` 0: to the end) of the head, or of the snapshot
    /// set with [`IoCtx::set_read_snap`].
    /// Short (or empty) past the end of the object; ENOENT if it does not exist.
    pub async fn read(&self, object: &str, off: u64, len: u64) -> Result<Bytes, ClientError> {
        let ops = vec![ObjectOp::Read { off, len }];
        let outputs = self.read_op(object, ops).await?;
        match single(outputs, "read")? {
            OpOutput::Data(payload) => Ok(payload.data),
            _ => Err(ClientError::Protocol { request: "read" }),
        }
    }

    /// Writes `data` at `off`, creating the object if needed.
    pub async fn write(&self, object: &str, off: u64, data: Bytes) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::Write { off, data: Payload::new(data) }];
        self.exec(object, ops).await.map(drop)
    }

    /// Replaces the object's data with `data`, creating it if needed.
    pub async fn write_full(&self, object: &str, data: Bytes) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::WriteFull { data: Payload::new(data) }];
        self.exec(object, ops).await.map(drop)
    }

    /// Creates the object; with `exclusive`, EEXIST if it exists.
    pub async fn create(&self, object: &str, exclusive: bool) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::Create { exclusive }];
        self.exec(object, ops).await.map(drop)
    }

    /// Sets the object's size (shrinking drops data, growing adds zeros).
    pub async fn truncate(&self, object: &str, size: u64) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::Truncate { size }];
        self.exec(object, ops).await.map(drop)
    }

    /// Zeroes `len` bytes at `off`.
    pub async fn zero(&self, object: &str, off: u64, len: u64) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::Zero { off, len }];
        self.exec(object, ops).await.map(drop)
    }

    /// Removes the object (ENOENT if absent). Snapshots keep their data.
    pub async fn remove(&self, object: &str) -> Result<(), ClientError> {
        self.exec(object, vec![ObjectOp::Remove]).await.map(drop)
    }

    /// Size and modification time of the object at the read snapshot (ENOENT if absent).
    pub async fn stat(&self, object: &str) -> Result<ObjectStat, ClientError> {
        let outputs = self.read_op(object, vec![ObjectOp::Stat]).await?;
        match single(outputs, "stat")? {
            OpOutput::Stat { size, mtime_sec, mtime_nsec } => {
                Ok(ObjectStat { size, mtime_sec, mtime_nsec })
            }
            _ => Err(ClientError::Protocol { request: "stat" }),
        }
    }

    /// One xattr's value (ENODATA if absent).
    pub async fn getxattr(&self, object: &str, name: &str) -> Result<Bytes, ClientError> {
        let ops = vec![ObjectOp::GetXattr { name: name.to_string() }];
        let outputs = self.read_op(object, ops).await?;
        match single(outputs, "getxattr")? {
            OpOutput::Xattr(value) => Ok(value),
            _ => Err(ClientError::Protocol { request: "getxattr" }),
        }
    }

    /// Every xattr of the object.
    pub async fn getxattrs(&self, object: &str) -> Result<BTreeMap<String, Bytes>, ClientError> {
        let outputs = self.read_op(object, vec![ObjectOp::GetXattrs]).await?;
        match single(outputs, "getxattrs")? {
            OpOutput::Xattrs(all) => Ok(all),
            _ => Err(ClientError::Protocol { request: "getxattrs" }),
        }
    }

    /// Sets an xattr (creates the object).
    pub async fn setxattr(
        &self,
        object: &str,
        name: &str,
        value: Bytes,
    ) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::SetXattr { name: name.to_string(), value }];
        self.head_op(object, ops).await.map(drop)
    }

    /// Removes an xattr (ENODATA if absent).
    pub async fn rmxattr(&self, object: &str, name: &str) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::RmXattr { name: name.to_string() }];
        self.head_op(object, ops).await.map(drop)
    }

    /// Omap entries with keys after `start_after` and starting with `prefix`, at most `max`,
    /// and whether more follow.
    pub async fn omap_get_vals(
        &self,
        object: &str,
        start_after: &str,
        prefix: &str,
        max: u32,
    ) -> Result<(BTreeMap<String, Bytes>, bool), ClientError> {
        let ops = vec![ObjectOp::OmapGetVals {
            start_after: start_after.to_string(),
            prefix: prefix.to_string(),
            max,
        }];
        let outputs = self.head_op(object, ops).await?;
        match single(outputs, "omap_get_vals")? {
            OpOutput::OmapVals { vals, more } => Ok((vals, more)),
            _ => Err(ClientError::Protocol { request: "omap_get_vals" }),
        }
    }

    /// Sets omap entries (creates the object).
    pub async fn omap_set(
        &self,
        object: &str,
        vals: BTreeMap<String, Bytes>,
    ) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::OmapSetVals { vals }];
        self.head_op(object, ops).await.map(drop)
    }

    /// Removes omap keys (absent keys are ignored).
    pub async fn omap_rm(&self, object: &str, keys: Vec<String>) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::OmapRmKeys { keys }];
        self.head_op(object, ops).await.map(drop)
    }
}

/// Watch / notify on this context's pool (see [`crate::Watch`]).
impl IoCtx {
    /// See [`Rados::watch`].
    pub async fn watch(
        &self,
        object: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<crate::Watch, ClientError> {
        self.rados.watch(self.pool, &self.key(object)?, timeout).await
    }

    /// See [`Rados::unwatch`].
    pub async fn unwatch(&self, cookie: u64) -> Result<(), ClientError> {
        self.rados.unwatch(cookie).await
    }

    /// See [`Rados::watch_check`].
    pub fn watch_check(&self, cookie: u64) -> Result<std::time::Duration, ClientError> {
        self.rados.watch_check(cookie)
    }

    /// See [`Rados::notify`].
    pub async fn notify(
        &self,
        object: &str,
        payload: &[u8],
        timeout: Option<std::time::Duration>,
    ) -> Result<crate::NotifyOutcome, ClientError> {
        self.rados.notify(self.pool, &self.key(object)?, payload, timeout).await
    }

    /// See [`Rados::notify_ack`].
    pub async fn notify_ack(
        &self,
        cookie: u64,
        notify_id: u64,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        self.rados.notify_ack(cookie, notify_id, payload).await
    }

    /// See [`Rados::list_watchers`].
    pub async fn list_watchers(
        &self,
        object: &str,
    ) -> Result<Vec<crate::WatcherInfo>, ClientError> {
        self.rados.list_watchers(self.pool, &self.key(object)?).await
    }
}
