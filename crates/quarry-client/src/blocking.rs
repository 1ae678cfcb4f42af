//! [`BlockingRados`]: a [`Rados`] with its own multi-thread tokio runtime, for callers that
//! are not async (the librados/librbd C ABI, threads of QEMU or fio). Every method is
//! `block_on` of the async method of the same name: no logic lives here.
//!
//! The methods may be called from many threads at once. They must not be called from inside
//! an async task (tokio refuses to block a runtime thread); async code uses [`Self::rados`]
//! instead, and asynchronous completions (librados aio) are spawned on [`Self::handle`].

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::{Handle, Runtime};

use quarry_types::{ObjectOp, OpOutput, PgId, PoolId, SnapContext, SnapId};
use quarry_wire::{ClusterMap, MonCommand, MonReply};

use crate::admin::CommandReply;
use crate::{ClientConfig, ClientError, IoCtx, Rados};

/// A connected client for blocking callers. Dropping it shuts the client down and stops the
/// runtime's threads.
pub struct BlockingRados {
    rados: Rados,
    /// Always `Some` until drop.
    runtime: Option<Runtime>,
}

impl BlockingRados {
    /// Starts a runtime (`worker_threads` threads; 0 = tokio's default, one per core) and
    /// connects on it.
    pub fn connect(cfg: ClientConfig, worker_threads: usize) -> Result<BlockingRados, ClientError> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all().thread_name("quarry-client");
        if worker_threads > 0 {
            builder.worker_threads(worker_threads);
        }
        let runtime = builder.build().map_err(|source| ClientError::Runtime { source })?;
        let rados = runtime.block_on(Rados::connect(cfg))?;
        Ok(BlockingRados { rados, runtime: Some(runtime) })
    }

    /// The async handle (shares everything with this one).
    pub fn rados(&self) -> &Rados {
        &self.rados
    }

    /// The runtime, to spawn asynchronous work on.
    pub fn handle(&self) -> &Handle {
        self.runtime().handle()
    }

    fn runtime(&self) -> &Runtime {
        match &self.runtime {
            Some(runtime) => runtime,
            None => unreachable!("the runtime is taken only by drop"),
        }
    }

    /// Runs any future on the client's runtime and waits for it (for layers built on
    /// [`Rados`], such as the image layer).
    pub fn block_on<F: Future>(&self, work: F) -> F::Output {
        self.runtime().block_on(work)
    }

    /// See [`Rados::map`].
    pub fn map(&self) -> Arc<ClusterMap> {
        self.rados.map()
    }

    /// See [`Rados::global_id`].
    pub fn global_id(&self) -> u64 {
        self.rados.global_id()
    }

    /// See [`Rados::pool_id`].
    pub fn pool_id(&self, name: &str) -> Result<PoolId, ClientError> {
        self.rados.pool_id(name)
    }

    /// See [`Rados::lookup_pool`].
    pub fn lookup_pool(&self, name: &str) -> Result<PoolId, ClientError> {
        self.block_on(self.rados.lookup_pool(name))
    }

    /// See [`Rados::command`].
    pub fn command(&self, cmd: MonCommand) -> Result<MonReply, ClientError> {
        self.block_on(self.rados.command(cmd))
    }

    /// See [`Rados::exec`].
    pub fn exec(
        &self,
        pool: PoolId,
        object: &str,
        snapc: &SnapContext,
        snap: SnapId,
        ops: Vec<ObjectOp>,
    ) -> Result<Vec<OpOutput>, ClientError> {
        self.block_on(self.rados.exec(pool, object, snapc, snap, ops))
    }

    /// See [`Rados::list_objects`].
    pub fn list_objects(&self, pool: PoolId) -> Result<Vec<String>, ClientError> {
        self.block_on(self.rados.list_objects(pool))
    }

    /// See [`Rados::list_pg`].
    pub fn list_pg(
        &self,
        pg: PgId,
        start_after: Option<String>,
        max: u32,
    ) -> Result<(Vec<String>, bool), ClientError> {
        self.block_on(self.rados.list_pg(pg, start_after, max))
    }

    /// See [`Rados::ioctx`]. Its calls are async: run them with [`Self::block_on`].
    pub fn ioctx(&self, pool: &str) -> Result<IoCtx, ClientError> {
        self.block_on(self.rados.ioctx(pool))
    }

    /// See [`Rados::mon_command`].
    pub fn mon_command(&self, cmd: &str, inbuf: &[u8]) -> CommandReply {
        self.block_on(self.rados.mon_command(cmd, inbuf))
    }

    /// See [`Rados::watch`]. Read its events with [`crate::Watch::blocking_next`].
    pub fn watch(
        &self,
        pool: PoolId,
        object: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<crate::Watch, ClientError> {
        self.block_on(self.rados.watch(pool, object, timeout))
    }

    /// See [`Rados::unwatch`].
    pub fn unwatch(&self, cookie: u64) -> Result<(), ClientError> {
        self.block_on(self.rados.unwatch(cookie))
    }

    /// See [`Rados::watch_check`].
    pub fn watch_check(&self, cookie: u64) -> Result<std::time::Duration, ClientError> {
        self.rados.watch_check(cookie)
    }

    /// See [`Rados::notify`].
    pub fn notify(
        &self,
        pool: PoolId,
        object: &str,
        payload: &[u8],
        timeout: Option<std::time::Duration>,
    ) -> Result<crate::NotifyOutcome, ClientError> {
        self.block_on(self.rados.notify(pool, object, payload, timeout))
    }

    /// See [`Rados::notify_ack`].
    pub fn notify_ack(
        &self,
        cookie: u64,
        notify_id: u64,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        self.block_on(self.rados.notify_ack(cookie, notify_id, payload))
    }

    /// See [`Rados::list_watchers`].
    pub fn list_watchers(
        &self,
        pool: PoolId,
        object: &str,
    ) -> Result<Vec<crate::WatcherInfo>, ClientError> {
        self.block_on(self.rados.list_watchers(pool, object))
    }

    /// See [`Rados::shutdown`].
    pub fn shutdown(&self) {
        self.block_on(self.rados.shutdown())
    }
}

impl Drop for BlockingRados {
    fn drop(&mut self) {
        // Without blocking (drop may run anywhere, even in an async context): flag shutdown,
        // abort the background task, then let the runtime's threads wind down on their own.
        self.rados.begin_shutdown();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
