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
//!
//! A handle that handed the lock over on request leaves the free lock to the asker for up
//! to `HANDOFF_GRACE` (1 s) before taking it back itself (its own queued writes would otherwise
//! win every race and starve the asker); once the asker owns it (seen as the lock's owner, or
//! told by its `AcquiredLock` / `ReleasedLock` notify), it asks back as usual.
//!
//! **Re-watch**: a broken watch (OSD restart, lost connection, watch timeout while the
//! client lives) is watched again with a new cookie; a lock this handle owns moves to it
//! (`lock.set_cookie`, so others keep asking instead of fencing a live owner) and the
//! header is refreshed (notifies may have been missed). A hold the move could not carry is
//! this client's own and is broken by its next acquire, never fenced. A watch broken
//! because this client is blocklisted (ESHUTDOWN) is not renewed: the lock is lost and every
//! later write fails with ESHUTDOWN (the OSDs refuse it anyway, so nothing lands).

use std::sync::{Arc, Weak};
use std::time::Duration;

use quarry_client::{IoCtx, MonCommand, WatchEvent};
use quarry_cls::lock::{
    self, BreakLockRequest, LockRequest, LockType, SetCookieRequest, UnlockRequest,
};
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
/// After handing the lock over on request, how long a handle leaves a free lock to the
/// asker before taking it back itself (else its own queued writes win the race every time
/// and the asker starves).
const HANDOFF_GRACE: Duration = Duration::from_secs(1);
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
    /// The handle's current watch cookie (a re-watch changes it; the lock follows).
    watch_cookie: std::sync::atomic::AtomicU64,
    /// Set once this client is known to be blocklisted: writes fail with ESHUTDOWN.
    blocklisted: std::sync::atomic::AtomicBool,
    /// True while this handle owns the lock. Writes hold it shared; releasing takes it
    /// exclusively, so a release waits for the writes in flight.
    owned: Arc<RwLock<bool>>,
    mode: std::sync::Mutex<LockMode>,
    /// Cookies of this handle's earlier watches (before re-watches).
    previous: std::sync::Mutex<Vec<u64>>,
    /// When this handle last released the lock because another asked for it.
    handed_off: std::sync::Mutex<Option<tokio::time::Instant>>,
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
            watch_cookie: std::sync::atomic::AtomicU64::new(watch_cookie),
            blocklisted: std::sync::atomic::AtomicBool::new(false),
            owned: Arc::new(RwLock::new(false)),
            mode: std::sync::Mutex::new(LockMode::Cooperative),
            previous: std::sync::Mutex::new(Vec::new()),
            handed_off: std::sync::Mutex::new(None),
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
            if self.blocklisted.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(RbdError::refused(
                    ErrorCode::ESHUTDOWN,
                    "this client is blocklisted: the image can no longer be written",
                ));
            }
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

    fn cookie(&self) -> u64 {
        self.watch_cookie.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_handed_off(&self, at: Option<tokio::time::Instant>) {
        *self.handed_off.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    fn recently_handed_off(&self) -> bool {
        let at = *self.handed_off.lock().unwrap_or_else(|p| p.into_inner());
        at.is_some_and(|t| t.elapsed() < HANDOFF_GRACE)
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
            if self.blocklisted.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(RbdError::refused(
                    ErrorCode::ESHUTDOWN,
                    "this client is blocklisted: the image can no longer be written",
                ));
            }
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
            if self.recently_handed_off() {
                // Leave a lock just handed over to the asker; ask it back once it has it.
                match self.owner().await? {
                    None => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    Some(_) => self.set_handed_off(None),
                }
            }
            match self.try_lock().await {
                Ok(()) => {
                    *owned = true;
                    tracing::debug!(header = %self.header, "exclusive lock acquired");
                    self.notify(ImageNotify::AcquiredLock { from: self.cookie() }).await;
                    return Ok(());
                }
                Err(e) if code_of(&e) == ErrorCode::EBUSY => {}
                Err(e) => return Err(e),
            }
            let Some((locker, cookie, addr)) = self.owner().await? else {
                continue; // released meanwhile
            };
            if locker == format!("client.{}", self.io.rados().global_id()) {
                // This client's own hold under a cookie of an older watch of this handle (a
                // re-watch could not move it): not another owner, so no fence.
                if self.stale_own_cookie(&cookie) {
                    self.break_lock(&locker, &cookie).await?;
                    continue;
                }
            }
            if no_wait {
                return Err(RbdError::refused(
                    ErrorCode::EBUSY,
                    "image is locked by another client",
                ));
            }
            match self.ask_owner(&locker, &cookie).await? {
                Asked::Released => {} // take it at once
                Asked::Retry => {
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
            cookie: cookie_of(self.cookie()),
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
        let payload = quarry_cls::codec::encode(&ImageNotify::RequestLock { from: self.cookie() });
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
        self.break_lock(locker, cookie).await
    }

    /// Whether `cookie` is an `auto N` cookie of this handle other than its current one.
    fn stale_own_cookie(&self, cookie: &str) -> bool {
        let mine = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        cookie
            .strip_prefix("auto ")
            .and_then(|c| c.parse::<u64>().ok())
            .is_some_and(|c| c != self.cookie() && mine.contains(&c))
    }

    /// Breaks the lock held by `locker` with `cookie` (already gone: done).
    async fn break_lock(&self, locker: &str, cookie: &str) -> RbdResult<()> {
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

    /// The watch was re-established with cookie `new`: a lock this handle owns moves to the
    /// new cookie (`lock.set_cookie`), so the other handles see a watching owner and ask it
    /// (instead of fencing it). If the hold is gone (broken meanwhile), the lock is lost and
    /// the next write takes it again.
    pub(crate) async fn renew(&self, new: u64) {
        let mut owned = self.owned.write().await;
        let old = self.cookie();
        self.previous.lock().unwrap_or_else(|p| p.into_inner()).push(old);
        if *owned {
            let req = SetCookieRequest {
                name: LOCK_NAME.into(),
                lock_type: LockType::Exclusive,
                cookie: cookie_of(old),
                tag: LOCK_TAG.into(),
                new_cookie: cookie_of(new),
            };
            let op = quarry_cls::call_op("lock", "set_cookie", quarry_cls::codec::encode(&req));
            match self.io.exec(&self.header, vec![op]).await {
                Ok(_) => tracing::debug!(header = %self.header, old, new, "lock cookie updated"),
                Err(e) => {
                    // Not ours any more (broken, or this client was fenced): lost. A hold
                    // left under the old cookie is this client's own and is broken by its
                    // next acquire (`stale_own_cookie`).
                    tracing::info!(header = %self.header, error = %e, "exclusive lock lost while the watch was broken");
                    *owned = false;
                    if e.errno() == ErrorCode::ESHUTDOWN {
                        self.blocklisted.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
        self.watch_cookie.store(new, std::sync::atomic::Ordering::Relaxed);
    }

    /// This client is blocklisted: the lock is lost and every later write fails with
    /// ESHUTDOWN (nothing it sends can land anyway: the OSDs refuse it).
    pub(crate) async fn fenced(&self) {
        self.blocklisted.store(true, std::sync::atomic::Ordering::Relaxed);
        *self.owned.write().await = false;
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
        let req = UnlockRequest { name: LOCK_NAME.into(), cookie: cookie_of(self.cookie()) };
        match self.io.exec(&self.header, vec![lock::unlock_op(&req)]).await {
            Ok(_) => {}
            Err(e) if e.errno() == ErrorCode::ENOENT => {} // broken by someone: not ours
            Err(e) => return Err(e.into()),
        }
        *owned = false;
        drop(owned);
        tracing::debug!(header = %self.header, "exclusive lock released");
        self.notify(ImageNotify::ReleasedLock { from: self.cookie() }).await;
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
            Ok(true) => {
                self.set_handed_off(Some(tokio::time::Instant::now()));
                LockAnswer::Released
            }
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
    /// The watch was re-established under a new cookie.
    fn watch_renewed(&self, cookie: u64);
}

/// First and longest pause between two attempts to re-establish a broken watch.
const REWATCH_DELAY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// Runs the watch of one handle: answers notifies until the handle is dropped. A broken
/// watch (OSD restart, connection lost, timed out) is re-established (librbd's re-watch):
/// the lock this handle owns moves to the new cookie ([`ExclusiveLock::renew`]) and the
/// header is read again (notifies may have been missed). A watch broken because this
/// client is blocklisted (ESHUTDOWN) is not: the lock is lost and writes fail with
/// ESHUTDOWN ([`ExclusiveLock::fenced`]).
pub(crate) async fn run_watch<T: WatchTarget>(
    io: IoCtx,
    header: String,
    mut watch: quarry_client::Watch,
    target: Weak<T>,
) {
    let me = io.rados().global_id();
    loop {
        let cookie = watch.cookie();
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
                    Ok(ImageNotify::AcquiredLock { from } | ImageNotify::ReleasedLock { from })
                        if !mine(from) =>
                    {
                        // The asker took the lock (or is done with it): no need to leave it
                        // alone any longer.
                        if let Some(lock) = target.exclusive_lock() {
                            lock.set_handed_off(None);
                        }
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
                let weak = Arc::downgrade(&target);
                drop(target);
                match rewatch(&io, &header, code, &weak).await {
                    Some(renewed) => {
                        // The old watch may still be listed (disconnected): end it.
                        let _ = io.unwatch(cookie).await;
                        watch = renewed;
                    }
                    None => return,
                }
            }
        }
    }
}

/// Watches the header again after the watch broke with `code`; None when the handle is
/// gone, the image was removed, or this client is blocklisted.
async fn rewatch<T: WatchTarget>(
    io: &IoCtx,
    header: &str,
    mut code: ErrorCode,
    target: &Weak<T>,
) -> Option<quarry_client::Watch> {
    let mut delay = REWATCH_DELAY.0;
    loop {
        if code == ErrorCode::ESHUTDOWN {
            tracing::info!(header, "this client is blocklisted: the image watch ends");
            if let Some(lock) = target.upgrade().and_then(|t| t.exclusive_lock()) {
                lock.fenced().await;
            }
            return None;
        }
        if code == ErrorCode::ENOENT {
            return None; // the image is gone
        }
        target.upgrade()?;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(REWATCH_DELAY.1);
        match io.watch(header, None).await {
            Ok(watch) => {
                let target = target.upgrade()?;
                let cookie = watch.cookie();
                tracing::debug!(header, cookie, "image watch re-established");
                if let Some(lock) = target.exclusive_lock() {
                    lock.renew(cookie).await;
                }
                target.watch_renewed(cookie);
                // Header updates may have been missed meanwhile.
                target.header_updated().await;
                return Some(watch);
            }
            Err(e) => {
                tracing::debug!(header, error = %e, "re-watch failed");
                code = e.errno();
            }
        }
    }
}
