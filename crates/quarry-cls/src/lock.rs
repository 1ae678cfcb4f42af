//! The `lock` class: named advisory locks on an object, Ceph's `cls_lock` semantics. What
//! `rbd lock add|ls|rm` and the image exclusive lock stand on.
//!
//! A lock `NAME` lives in the object's xattr `lock.NAME` (a [`StoredLock`]): its type
//! (exclusive or shared), a tag every shared holder must agree on, and its lockers, each
//! identified by the caller instance (`client.4123`, from the authenticated origin) and a
//! cookie the caller chose, with the caller's address, a description and an optional expiry.
//!
//! - `lock`: takes the lock. EBUSY if another locker holds it exclusively, or it is held at
//!   all and an exclusive lock is asked, or the tags differ; EEXIST if this locker already
//!   holds it (unless `may_renew`: then the expiry is renewed); with `must_renew`, ENOENT if
//!   it does not hold it. Creates the object if needed. EINVAL for an empty name; an empty
//!   cookie is a cookie like any other (Ceph's `rados lock get` takes one by default).
//! - `unlock`: releases the caller's own (instance, cookie); ENOENT if it does not hold it.
//! - `break_lock`: releases another locker's hold (what a client does after blocklisting a
//!   dead holder); ENOENT if that locker does not hold it.
//! - `get_info` (read-only): type, tag and lockers; `list_locks`: lock names on the object.
//! - `assert_locked` (read-only): EBUSY unless the caller holds it with this cookie, type and
//!   tag (guards a write in the same vector).
//! - `set_cookie`: the caller's hold moves to a new cookie (EBUSY if that one is taken).
//!
//! Expired lockers (expiry at or before the command's clock) are dropped whenever a lock is
//! read. A lock with no lockers left is removed. Every method but `lock` needs the object to
//! exist (ENOENT).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use quarry_types::{ErrorCode, MethodCtx, ObjectOp, OpOutput};

use crate::codec::{decode_input, decode_stored, encode};

/// Prefix of the xattr holding a lock.
pub const XATTR_PREFIX: &str = "lock.";

/// Exclusive or shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockType {
    /// One locker at a time.
    Exclusive,
    /// Any number of lockers with the same tag.
    Shared,
}

/// Input of `lock.lock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    /// Lock name (`rbd_lock`).
    pub name: String,
    /// Exclusive or shared.
    pub lock_type: LockType,
    /// The caller's cookie: one instance may hold a lock under several cookies.
    pub cookie: String,
    /// Shared holders must use the same tag.
    pub tag: String,
    /// Free text shown by `get_info`.
    pub description: String,
    /// Seconds until the hold expires (0: never).
    pub duration_secs: u64,
    /// Renew the expiry if this locker already holds the lock (else EEXIST).
    pub may_renew: bool,
    /// Only renew: ENOENT if this locker does not hold the lock.
    pub must_renew: bool,
}

/// Input of `lock.unlock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockRequest {
    /// Lock name.
    pub name: String,
    /// The caller's cookie.
    pub cookie: String,
}

/// Input of `lock.break_lock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakLockRequest {
    /// Lock name.
    pub name: String,
    /// The locker to evict (`client.4123`).
    pub locker: String,
    /// Its cookie.
    pub cookie: String,
}

/// Input of `lock.get_info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetInfoRequest {
    /// Lock name.
    pub name: String,
}

/// Input of `lock.assert_locked`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertLockedRequest {
    /// Lock name.
    pub name: String,
    /// Expected type.
    pub lock_type: LockType,
    /// The caller's cookie.
    pub cookie: String,
    /// Expected tag.
    pub tag: String,
}

/// Input of `lock.set_cookie`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetCookieRequest {
    /// Lock name.
    pub name: String,
    /// Expected type.
    pub lock_type: LockType,
    /// The caller's current cookie.
    pub cookie: String,
    /// Expected tag.
    pub tag: String,
    /// The new cookie.
    pub new_cookie: String,
}

/// One holder of a lock, as `get_info` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locker {
    /// The caller instance (`client.4123`).
    pub locker: String,
    /// Its cookie.
    pub cookie: String,
    /// Its address when it locked (`127.0.0.1:0/4123`).
    pub addr: String,
    /// Free text.
    pub description: String,
    /// When the hold expires (seconds, nanoseconds since the epoch), if it does.
    pub expiration: Option<(u64, u32)>,
}

/// Reply of `lock.get_info`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The type, None when nobody holds the lock.
    pub lock_type: Option<LockType>,
    /// The tag (empty when nobody holds the lock).
    pub tag: String,
    /// Current holders, ordered by (locker, cookie).
    pub lockers: Vec<Locker>,
}

/// What a lock's xattr holds: `codec` version 1 of this struct (golden bytes in
/// `tests/golden/cls_v1.hex`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLock {
    /// Exclusive or shared.
    pub lock_type: Option<LockType>,
    /// The holders' tag.
    pub tag: String,
    /// Holders by (locker, cookie).
    pub lockers: BTreeMap<(String, String), StoredLocker>,
}

/// A holder as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLocker {
    /// Address when it locked.
    pub addr: String,
    /// Free text.
    pub description: String,
    /// Expiry, if any.
    pub expiration: Option<(u64, u32)>,
}

fn xattr_name(name: &str) -> String {
    format!("{XATTR_PREFIX}{name}")
}

/// Reads lock `name` with its expired holders dropped. An absent lock is an empty one; a
/// missing object is ENOENT.
fn read_lock(ctx: &mut dyn MethodCtx, name: &str) -> Result<StoredLock, ErrorCode> {
    let mut lock = match ctx.op(&ObjectOp::GetXattr { name: xattr_name(name) }) {
        Ok(OpOutput::Xattr(value)) => decode_stored::<StoredLock>(&value)?,
        Ok(_) => return Err(ErrorCode::EIO),
        Err(code) if code == ErrorCode::ENODATA => StoredLock::default(),
        Err(code) => return Err(code),
    };
    let now = ctx.mtime();
    lock.lockers.retain(|_, l| l.expiration.is_none_or(|until| until > now));
    if lock.lockers.is_empty() {
        lock.lock_type = None;
        lock.tag.clear();
    }
    Ok(lock)
}

/// Writes lock `name` back (removes its xattr when nobody holds it).
fn write_lock(ctx: &mut dyn MethodCtx, name: &str, lock: &StoredLock) -> Result<(), ErrorCode> {
    let xattr = xattr_name(name);
    if lock.lockers.is_empty() {
        match ctx.op(&ObjectOp::RmXattr { name: xattr }) {
            Ok(_) => Ok(()),
            Err(code) if code == ErrorCode::ENODATA => Ok(()),
            Err(code) => Err(code),
        }
    } else {
        ctx.op(&ObjectOp::SetXattr { name: xattr, value: encode(lock) }).map(|_| ())
    }
}

fn require_exists(ctx: &mut dyn MethodCtx) -> Result<(), ErrorCode> {
    ctx.op(&ObjectOp::AssertExists).map(|_| ())
}

fn nothing() -> Bytes {
    Bytes::new()
}

/// `lock.lock`.
pub fn lock(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: LockRequest = decode_input(input)?;
    if req.name.is_empty() {
        return Err(ErrorCode::EINVAL);
    }
    let exists = match ctx.op(&ObjectOp::AssertExists) {
        Ok(_) => true,
        Err(code) if code == ErrorCode::ENOENT => false,
        Err(code) => return Err(code),
    };
    let mut lock = if exists { read_lock(ctx, &req.name)? } else { StoredLock::default() };
    let me = (ctx.origin().instance_name(), req.cookie.clone());
    let (sec, nsec) = ctx.mtime();
    let expiration = (req.duration_secs > 0).then(|| (sec.saturating_add(req.duration_secs), nsec));
    if let Some(held) = lock.lockers.get_mut(&me) {
        if !(req.may_renew || req.must_renew) {
            return Err(ErrorCode::EEXIST);
        }
        if lock.lock_type != Some(req.lock_type) || lock.tag != req.tag {
            return Err(ErrorCode::EBUSY);
        }
        held.expiration = expiration;
        held.description = req.description;
        write_lock(ctx, &req.name, &lock)?;
        return Ok(nothing());
    }
    if req.must_renew {
        return Err(ErrorCode::ENOENT);
    }
    if !lock.lockers.is_empty() {
        let exclusive =
            lock.lock_type == Some(LockType::Exclusive) || req.lock_type == LockType::Exclusive;
        if exclusive || lock.tag != req.tag {
            return Err(ErrorCode::EBUSY);
        }
    }
    lock.lock_type = Some(req.lock_type);
    lock.tag = req.tag;
    let addr = ctx.origin().addr.clone();
    lock.lockers.insert(me, StoredLocker { addr, description: req.description, expiration });
    write_lock(ctx, &req.name, &lock)?;
    Ok(nothing())
}

/// Removes `(locker, cookie)` from lock `name`: ENOENT if it does not hold it.
fn release(
    ctx: &mut dyn MethodCtx,
    name: &str,
    locker: String,
    cookie: String,
) -> Result<Bytes, ErrorCode> {
    require_exists(ctx)?;
    let mut lock = read_lock(ctx, name)?;
    if lock.lockers.remove(&(locker, cookie)).is_none() {
        return Err(ErrorCode::ENOENT);
    }
    write_lock(ctx, name, &lock)?;
    Ok(nothing())
}

/// `lock.unlock`.
pub fn unlock(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: UnlockRequest = decode_input(input)?;
    let me = ctx.origin().instance_name();
    release(ctx, &req.name, me, req.cookie)
}

/// `lock.break_lock`.
pub fn break_lock(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: BreakLockRequest = decode_input(input)?;
    release(ctx, &req.name, req.locker, req.cookie)
}

/// `lock.get_info`.
pub fn get_info(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: GetInfoRequest = decode_input(input)?;
    require_exists(ctx)?;
    let lock = read_lock(ctx, &req.name)?;
    let lockers = lock
        .lockers
        .into_iter()
        .map(|((locker, cookie), l)| Locker {
            locker,
            cookie,
            addr: l.addr,
            description: l.description,
            expiration: l.expiration,
        })
        .collect();
    Ok(encode(&LockInfo { lock_type: lock.lock_type, tag: lock.tag, lockers }))
}

/// `lock.list_locks`: names of the locks on the object (reply: `Vec<String>`).
pub fn list_locks(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let () = decode_input(input)?;
    let OpOutput::Xattrs(xattrs) = ctx.op(&ObjectOp::GetXattrs)? else {
        return Err(ErrorCode::EIO);
    };
    let mut names = Vec::new();
    for name in xattrs.keys().filter_map(|k| k.strip_prefix(XATTR_PREFIX)) {
        if !read_lock(ctx, name)?.lockers.is_empty() {
            names.push(name.to_string());
        }
    }
    Ok(encode(&names))
}

/// `lock.assert_locked`.
pub fn assert_locked(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: AssertLockedRequest = decode_input(input)?;
    require_exists(ctx)?;
    let lock = read_lock(ctx, &req.name)?;
    let me = (ctx.origin().instance_name(), req.cookie);
    if lock.lock_type != Some(req.lock_type)
        || lock.tag != req.tag
        || !lock.lockers.contains_key(&me)
    {
        return Err(ErrorCode::EBUSY);
    }
    Ok(nothing())
}

/// `lock.set_cookie`.
pub fn set_cookie(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: SetCookieRequest = decode_input(input)?;
    if req.new_cookie.is_empty() {
        return Err(ErrorCode::EINVAL);
    }
    require_exists(ctx)?;
    let mut lock = read_lock(ctx, &req.name)?;
    let instance = ctx.origin().instance_name();
    if lock.lock_type != Some(req.lock_type) || lock.tag != req.tag {
        return Err(ErrorCode::EBUSY);
    }
    if lock.lockers.contains_key(&(instance.clone(), req.new_cookie.clone())) {
        return Err(ErrorCode::EBUSY);
    }
    let Some(held) = lock.lockers.remove(&(instance.clone(), req.cookie)) else {
        return Err(ErrorCode::ENOENT);
    };
    lock.lockers.insert((instance, req.new_cookie), held);
    write_lock(ctx, &req.name, &lock)?;
    Ok(nothing())
}

/// A `lock.lock` call op.
pub fn lock_op(req: &LockRequest) -> ObjectOp {
    crate::call_op("lock", "lock", encode(req))
}

/// A `lock.unlock` call op.
pub fn unlock_op(req: &UnlockRequest) -> ObjectOp {
    crate::call_op("lock", "unlock", encode(req))
}

/// A `lock.break_lock` call op.
pub fn break_lock_op(req: &BreakLockRequest) -> ObjectOp {
    crate::call_op("lock", "break_lock", encode(req))
}

/// A `lock.get_info` call op; decode its reply with [`decode_info`].
pub fn get_info_op(name: &str) -> ObjectOp {
    crate::call_op("lock", "get_info", encode(&GetInfoRequest { name: name.into() }))
}

/// A `lock.assert_locked` call op (a guard for the ops after it).
pub fn assert_locked_op(req: &AssertLockedRequest) -> ObjectOp {
    crate::call_op("lock", "assert_locked", encode(req))
}

/// A `lock.list_locks` call op; decode its reply with [`decode_names`].
pub fn list_locks_op() -> ObjectOp {
    crate::call_op("lock", "list_locks", encode(&()))
}

/// Decodes `get_info`'s reply.
pub fn decode_info(bytes: &[u8]) -> Result<LockInfo, ErrorCode> {
    crate::codec::decode_reply(bytes)
}

/// Decodes `list_locks`'s reply.
pub fn decode_names(bytes: &[u8]) -> Result<Vec<String>, ErrorCode> {
    crate::codec::decode_reply(bytes)
}
