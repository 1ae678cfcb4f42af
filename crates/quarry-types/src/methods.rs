//! Server-side object methods (Ceph's object classes): the interface between the OSD's store,
//! which runs a method inside the atomic apply of one object, and the crate that implements
//! the methods (`quarry-cls`). Defined here so neither depends on the other.
//!
//! A method sees one object through [`MethodCtx::op`], which runs any plain [`ObjectOp`]
//! (reads see the command's earlier writes; writes are undone if the method or a later op of
//! the vector fails), and returns bytes or an errno. It must be deterministic: every replica
//! runs it on its own copy, so it may use only its input, the object, [`MethodCtx::mtime`] and
//! [`MethodCtx::origin`] (no clock, no randomness, no I/O of its own).

use std::fmt::Debug;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{ErrorCode, ObjectOp, OpOutput};

/// Who called a method: the authenticated caller, as the OSD saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallOrigin {
    /// The authenticated entity (`client.admin`).
    pub entity: String,
    /// The caller's instance id (the monitor's global id): Ceph names a locker by it
    /// (`client.4123`).
    pub global_id: u64,
    /// The caller's address as Ceph shows it (`127.0.0.1:0/4123`).
    pub addr: String,
}

impl CallOrigin {
    /// Ceph's entity name of the caller instance: `TYPE.GLOBAL_ID` (`client.4123`).
    pub fn instance_name(&self) -> String {
        let kind = self.entity.split('.').next().unwrap_or("client");
        format!("{kind}.{}", self.global_id)
    }
}

/// What a method does to its object: decides the OSD path (a `write` method goes through the
/// PG log, a read-only one is served by the primary's store) and the caps it needs (`read`:
/// the `r`/`class-read` cap; `write`: the `x`/`class-write` cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodFlags {
    /// Reads the object.
    pub read: bool,
    /// Changes the object.
    pub write: bool,
}

impl MethodFlags {
    /// A read-only method.
    pub const RD: MethodFlags = MethodFlags { read: true, write: false };
    /// A method that reads and writes.
    pub const RDWR: MethodFlags = MethodFlags { read: true, write: true };
}

/// The object a running method works on.
pub trait MethodCtx {
    /// Runs one plain op on the object (not another [`ObjectOp::Call`]: EINVAL). In a
    /// read-only context mutations fail with EROFS.
    fn op(&mut self, op: &ObjectOp) -> Result<OpOutput, ErrorCode>;
    /// The command's clock (the proposer's, identical on every replica): use it for expiries.
    fn mtime(&self) -> (u64, u32);
    /// Who called.
    fn origin(&self) -> &CallOrigin;
}

/// A registry of methods the OSD's store runs.
pub trait ObjectMethods: Send + Sync + Debug {
    /// The flags of `class.method`, or None if there is no such method (EOPNOTSUPP).
    fn flags(&self, class: &str, method: &str) -> Option<MethodFlags>;
    /// Runs `class.method` on the object behind `ctx` with `input`.
    fn call(
        &self,
        class: &str,
        method: &str,
        ctx: &mut dyn MethodCtx,
        input: &[u8],
    ) -> Result<Bytes, ErrorCode>;
}
