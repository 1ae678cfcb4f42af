//! The image watch and the exclusive lock (librbd's `ImageWatcher` and `ExclusiveLock`).
//!
//! Every handle open for writing at the head watches the header object (`rbd status` lists
//! these watchers). Handles tell each other through notifies on the header: the header
//! changed (resize, snapshots: everyone refreshes), a handle wants the lock, a handle
//! released it.
//!
//! With the exclusive-lock feature, a handle writes only while it owns the lock `rbd_lock`
//! (an exclusive `lock` class lock on the header, tag `internal`, cookie `auto <watch
//! cookie>`). The first write takes it:
//! - free: taken;
//! - owned by a live handle: that handle is asked (notify) to release it; in cooperative mode
//!   it waits for its writes in flight, unlocks and answers `released`, and the asker takes
//!   the lock (the two hand it back and forth, as librbd does); in exclusive mode it answers
//!   `refused` and the asker fails with EBUSY;
//! - owned by a handle that is gone (no watch on the header any more) or does not answer the
//!   notify in time (SIGKILLed, hung, cut off): the asker **blocklists the owner's address
//!   first**, then breaks its lock and takes it. Blocklisting comes first so that nothing the
//!   old owner still has in flight can land after the new owner's writes (the OSDs refuse a
//!   blocklisted client's ops with ESHUTDOWN right before proposing them). No operator step.

use std::sync::{Arc, Weak};
use std::time::Duration;

use quarry_client::{IoCtx, MonCommand, WatchEvent};
use quarry_cls::lock::{self, BreakLockRequest, LockRequest, LockType, UnlockRequest};
use quarry_types::{ErrorCode, OpOutput};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedRwLockReadGuard, RwLock, RwLockReadGuard};

use crate::error::{RbdError, RbdResult};

/// The lock's name on the header (Ceph's).
pub const LOCK_NAME: &str = "rbd_lock";
/// The tag of the internal exclusive lock (Ceph's).
pub const LOCK_TAG: &str = "internal";
/// How long a lock owner has to answer a request to release it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a writer tries to get the lock before ETIMEDOUT.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fenced owner stays blocklisted (Ceph's `osd_blocklist_expire` default...
/// librbd asks for `rbd_blocklist_expire_seconds`, 0 = the OSD default of an hour).
const BLOCKLIST_SECS: u64 = 3600;

/// What handles of one image tell each other (notify payloads on the header).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageNotify {
    /// The header changed: refresh. `from` is the sender's watch cookie (with the
    /// notifier's global id, it names the sending handle, which skips its own message).
    HeaderUpdate {
        /// Sender's watch cookie.
        from: u64,
    },
    /// Please release the exclusive lock.
    RequestLock {
        /// Sender's watch cookie.
        from: u64,
    },
    /// The sender took the lock.
    AcquiredLock {
        /// Sender's watch cookie.
        from: u64,
    },
    /// The sender released the lock.
    ReleasedLock {
        /// Sender's watch cookie.
        from: u64,
    },
}

impl ImageNotify {
    /// Decodes a notify payload sent on an image header (None if it is not one of ours).
    pub fn decode(payload: &[u8]) -> Option<ImageNotify> {
        quarry_cls::codec::decode_reply(payload).ok()
    }

    /// Ceph's name of the notification (`rbd watch` prints it).
    pub fn op_name(&self) -> &'static str {
        match self {
            ImageNotify::HeaderUpdate { .. } => "HeaderUpdate",
            ImageNotify::RequestLock { .. } => "RequestLock",
            ImageNotify::AcquiredLock { .. } => "AcquiredLock",
            ImageNotify::ReleasedLock { .. } => "ReleasedLock",
        }
    }
}

/// A lock owner's answer to [`ImageNotify::RequestLock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockAnswer {
    /// Released: take it.
    Released,
    /// The owner keeps it (exclusive mode).
    Refused,
    /// The answering handle does not own the lock.
    NotOwner,
}

/// Whether a lock owner gives the lock up when asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Hand it over when another handle asks (librbd's default).
    Cooperative,
    /// Keep it: others fail with EBUSY (`rbd_lock_acquire(RBD_LOCK_MODE_EXCLUSIVE)`).
    Exclusive,
}

/// This handle's side of the exclusive lock.
pub(crate) struct ExclusiveLock {
    io: IoCtx,
    header: String,
    watch_cookie: u64,
    /// True while this handle owns the lock. Writes hold it shared; releasing takes it
    /// exclusively, so a release waits for the writes in flight.
    owned: Arc<RwLock<bool>>,
    mode: std::sync::Mutex<LockMode>,
    /// Runs before the lock is given up, with it held exclusively (the image's cache writes
    /// its dirty data back and drops the rest: the next owner may change the image).
    before_release: std::sync::OnceLock<BeforeRelease>,
}

/// What [`ExclusiveLock::release`] runs first (set once by the image).
pub(crate) type BeforeRelease = Box<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = RbdResult<()>> + Send>>
        + Send
        + Sync,
>;

fn cookie_of(watch_cookie: u64) -> String {
    format!("auto {watch_cookie}")
}

fn code_of(e: &RbdError) -> ErrorCode {
    e.errno()
}

impl ExclusiveLock {
    pub(crate) fn new(io: IoCtx, header: String, watch_cookie: u64) -> ExclusiveLock {
        ExclusiveLock {
            io,
            header,
            watch_cookie,
            owned: Arc::new(RwLock::new(false)),
            mode: std::sync::Mutex::new(LockMode::Cooperative),
            before_release: std::sync::OnceLock::new(),
        }
    }

    /// Sets what a release runs first (once; later calls are ignored).
    pub(crate) fn set_before_release(&self, hook: BeforeRelease) {
        let _ = self.before_release.set(hook);
    }

    /// [`ExclusiveLock::hold`] as an owned guard (kept across tasks by the image's cache).
    pub(crate) async fn hold_owned(&self) -> RbdResult<OwnedRwLockReadGuard<bool>> {
        loop {
            {
                let guard = self.owned.clone().read_owned().await;
                if *guard {
                    return Ok(guard);
                }
            }
            self.acquire(false).await?;
        }
    }

    pub(crate) fn set_mode(&self, mode: LockMode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    fn mode(&self) -> LockMode {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this handle owns the lock now.
    pub(crate) async fn is_owner(&self) -> bool {
        *self.owned.read().await
    }

    /// [`ExclusiveLock::is_owner`] without waiting: false while the lock changes hands.
    pub(crate) fn owns_now(&self) -> bool {
        self.owned.try_read().is_ok_and(|owned| *owned)
    }

    /// A guard under which this handle owns the lock (taking it first if needed).
    pub(crate) async fn hold(&self) -> RbdResult<RwLockReadGuard<'_, bool>> {
        loop {
            {
                let guard = self.owned.read().await;
                if *guard {
                    return Ok(guard);
                }
            }
            self.acquire(false).await?;
        }
    }

    /// Takes the lock. With `no_wait`, a live owner is not asked: EBUSY at once.
    pub(crate) async fn acquire(&self, no_wait: bool) -> RbdResult<()> {
        let mut owned = self.owned.write().await;
        if *owned {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + ACQUIRE_TIMEOUT;
        loop {
            match self.try_lock().await {
                Ok(()) => {
                    *owned = true;
                    tracing::debug!(header = %self.header, "exclusive lock acquired");
                    self.notify(ImageNotify::AcquiredLock { from: self.watch_cookie }).await;
                    return Ok(());
                }
                Err(e) if code_of(&e) == ErrorCode::EBUSY => {}
                Err(e) => return Err(e),
            }
            let Some((locker, cookie, addr)) = self.owner().await? else {
                continue; // released meanwhile
            };
            if no_wait {
                return Err(RbdError::refused(
                    ErrorCode::EBUSY,
                    "image is locked by another client",
                ));
            }
            match self.ask_owner(&locker, &cookie).await? {
                Asked::Released | Asked::Retry => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Asked::Refused => {
                    return Err(RbdError::refused(
                        ErrorCode::EBUSY,
                        "the lock owner refused to release the exclusive lock",
                    ))
                }
                Asked::Dead => self.fence(&locker, &cookie, &addr).await?,
            }
            if tokio::time::Instant::now() > deadline {
                return Err(RbdError::refused(
                    ErrorCode::ETIMEDOUT,
                    "timed out acquiring the exclusive lock",
                ));
            }
        }
    }

    async fn try_lock(&self) -> RbdResult<()> {
        let req = LockRequest {
            name: LOCK_NAME.into(),
            lock_type: LockType::Exclusive,
            cookie: cookie_of(self.watch_cookie),
            tag: LOCK_TAG.into(),
            description: String::new(),
            duration_secs: 0,
            may_renew: false,
            must_renew: false,
        };
        match self.io.exec(&self.header, vec![lock::lock_op(&req)]).await {
            Ok(_) => Ok(()),
            // Held by this very handle already (a retry after a lost reply).
            Err(e) if e.errno() == ErrorCode::EEXIST => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The current owner: (locker `client.GID`, cookie, address), None if unlocked.
    async fn owner(&self) -> RbdResult<Option<(String, String, String)>> {
        let out = self.io.exec(&self.header, vec![lock::get_info_op(LOCK_NAME)]).await?;
        let Some(OpOutput::Returned(bytes)) = out.last() else {
            return Err(RbdError::refused(ErrorCode::EIO, "odd reply to lock get_info"));
        };
        let info = lock::decode_info(bytes).map_err(RbdError::code)?;
        Ok(info.lockers.into_iter().next().map(|l| (l.locker, l.cookie, l.addr)))
    }

    async fn ask_owner(&self, locker: &str, cookie: &str) -> RbdResult<Asked> {
        let gid: Option<u64> = locker.rsplit_once('.').and_then(|(_, g)| g.parse().ok());
        let owner_cookie: Option<u64> = cookie.strip_prefix("auto ").and_then(|c| c.parse().ok());
        let (Some(gid), Some(owner_cookie)) = (gid, owner_cookie) else {
            // Not a handle's lock (taken by hand with `rbd lock add`?): never break it.
            return Ok(Asked::Refused);
        };
        let watching = self
            .io
            .list_watchers(&self.header)
            .await?
            .iter()
            .any(|w| w.global_id == gid && w.cookie == owner_cookie);
        if !watching {
            tracing::debug!(header = %self.header, gid, owner_cookie, "lock owner does not watch");
            return Ok(Asked::Dead);
        }
        let payload =
            quarry_cls::codec::encode(&ImageNotify::RequestLock { from: self.watch_cookie });
        let outcome = self.io.notify(&self.header, &payload, Some(REQUEST_TIMEOUT)).await?;
        if let Some(ack) =
            outcome.acks.iter().find(|a| a.global_id == gid && a.cookie == owner_cookie)
        {
            return Ok(match quarry_cls::codec::decode_reply::<LockAnswer>(&ack.payload) {
                Ok(LockAnswer::Refused) => Asked::Refused,
                Ok(LockAnswer::Released) => Asked::Released,
                _ => Asked::Retry,
            });
        }
        if outcome.missed.contains(&(gid, owner_cookie)) {
            return Ok(Asked::Dead);
        }
        tracing::debug!(header = %self.header, ?outcome, gid, owner_cookie, "lock owner did not answer");
        Ok(Asked::Retry)
    }

    /// Blocklists a dead owner's address, then breaks its lock.
    async fn fence(&self, locker: &str, cookie: &str, addr: &str) -> RbdResult<()> {
        tracing::warn!(header = %self.header, locker, addr, "lock owner is gone or unresponsive: blocklisting it and breaking its lock");
        let cmd =
            MonCommand::BlocklistAdd { instance: addr.to_string(), expire_secs: BLOCKLIST_SECS };
        self.io.rados().command(cmd).await.map_err(|e| {
            RbdError::refused(e.errno(), format!("failed to blocklist the lock owner {addr}"))
        })?;
        let req = BreakLockRequest {
            name: LOCK_NAME.into(),
            locker: locker.into(),
            cookie: cookie.into(),
        };
        match self.io.exec(&self.header, vec![lock::break_lock_op(&req)]).await {
            Ok(_) => Ok(()),
            Err(e) if e.errno() == ErrorCode::ENOENT => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lock up (after the writes in flight). Returns whether it was owned.
    pub(crate) async fn release(&self) -> RbdResult<bool> {
        let mut owned = self.owned.write().await;
        if !*owned {
            return Ok(false);
        }
        if let Some(hook) = self.before_release.get() {
            hook().await?;
        }
        let req = UnlockRequest { name: LOCK_NAME.into(), cookie: cookie_of(self.watch_cookie) };
        match self.io.exec(&self.header, vec![lock::unlock_op(&req)]).await {
            Ok(_) => {}
            Err(e) if e.errno() == ErrorCode::ENOENT => {} // broken by someone: not ours
            Err(e) => return Err(e.into()),
        }
        *owned = false;
        drop(owned);
        tracing::debug!(header = %self.header, "exclusive lock released");
        self.notify(ImageNotify::ReleasedLock { from: self.watch_cookie }).await;
        Ok(true)
    }

    /// What this handle answers to a request for the lock.
    pub(crate) async fn on_request(&self) -> LockAnswer {
        if !*self.owned.read().await {
            return LockAnswer::NotOwner;
        }
        if self.mode() == LockMode::Exclusive {
            return LockAnswer::Refused;
        }
        match self.release().await {
            Ok(true) => LockAnswer::Released,
            Ok(false) => LockAnswer::NotOwner,
            Err(e) => {
                tracing::warn!(header = %self.header, error = %e, "releasing the exclusive lock failed");
                LockAnswer::Refused
            }
        }
    }

    /// Tells the other handles (in the background: this may run inside the watch task,
    /// which must stay free to ack the notify itself).
    async fn notify(&self, message: ImageNotify) {
        let payload = quarry_cls::codec::encode(&message);
        let (io, header) = (self.io.clone(), self.header.clone());
        tokio::spawn(async move {
            if let Err(e) = io.notify(&header, &payload, Some(REQUEST_TIMEOUT)).await {
                tracing::debug!(header, error = %e, "notify failed");
            }
        });
    }
}

enum Asked {
    Released,
    Refused,
    Retry,
    Dead,
}

/// Sends a header-update notify (best effort: a handle that misses it refreshes on its
/// next failure or open).
pub(crate) async fn notify_header_update(io: &IoCtx, header: &str, from: u64) {
    let payload = quarry_cls::codec::encode(&ImageNotify::HeaderUpdate { from });
    if let Err(e) = io.notify(header, &payload, Some(REQUEST_TIMEOUT)).await {
        tracing::debug!(header, error = %e, "header update notify failed");
    }
}

/// What the watch task calls back into.
pub(crate) trait WatchTarget: Send + Sync + 'static {
    /// Another handle changed the header.
    fn header_updated(
        self: Arc<Self>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    /// The exclusive lock, if the image has one.
    fn exclusive_lock(&self) -> Option<Arc<ExclusiveLock>>;
}

/// Runs the watch of one handle: answers notifies until the watch ends or the handle is
/// dropped; a broken watch is re-established.
pub(crate) async fn run_watch<T: WatchTarget>(
    io: IoCtx,
    header: String,
    mut watch: quarry_client::Watch,
    target: Weak<T>,
) {
    let cookie = watch.cookie();
    let me = io.rados().global_id();
    loop {
        let Some(event) = watch.next().await else { return };
        let Some(target) = target.upgrade() else { return };
        match event {
            WatchEvent::Notify { notify_id, notifier_id, payload } => {
                let message = quarry_cls::codec::decode_reply::<ImageNotify>(&payload);
                tracing::debug!(header, cookie, notifier_id, ?message, "image notify");
                // Cookies count per client: a handle is (client global id, cookie).
                let mine = |from: u64| notifier_id == me && from == cookie;
                let answer = match message {
                    Ok(ImageNotify::HeaderUpdate { from }) if !mine(from) => {
                        target.clone().header_updated().await;
                        Vec::new()
                    }
                    Ok(ImageNotify::RequestLock { from }) if !mine(from) => {
                        let answer = match target.exclusive_lock() {
                            Some(lock) => lock.on_request().await,
                            None => LockAnswer::NotOwner,
                        };
                        quarry_cls::codec::encode(&answer).to_vec()
                    }
                    _ => Vec::new(),
                };
                if let Err(e) = io.notify_ack(cookie, notify_id, &answer).await {
                    tracing::debug!(header, error = %e, "notify ack failed");
                }
            }
            WatchEvent::Error(code) => {
                tracing::debug!(header, %code, "image watch broken");
                if code == ErrorCode::ESHUTDOWN {
                    return; // blocklisted: this handle is done
                }
                // The lock (if owned) may have been broken meanwhile; the next write finds out.
                return;
            }
        }
    }
}
