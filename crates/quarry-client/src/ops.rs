//! Convenience calls over [`Rados::exec`]: one op (or a small fixed vector) per call, with
//! typed results. They add no logic of their own beyond building the op and unpacking its
//! output, so the CLI, the C ABI and the NBD server share one behaviour.
//!
//! Metadata calls (xattrs, omap) send an empty snapshot context: xattrs and omap belong to
//! the head object only.

use std::collections::BTreeMap;

use bytes::Bytes;

use quarry_types::{ObjectOp, OpOutput, Payload, PoolId, SnapContext, SnapId, SNAP_HEAD};

use crate::{ClientError, ObjectStat, Rados};

/// The single output of a one-op vector, or a protocol error naming the call.
fn single(mut outputs: Vec<OpOutput>, call: &'static str) -> Result<OpOutput, ClientError> {
    match (outputs.pop(), outputs.is_empty()) {
        (Some(out), true) => Ok(out),
        _ => Err(ClientError::Protocol { request: call }),
    }
}

impl Rados {
    /// Reads `len` bytes at `off` (`len` 0: to the end) of the head or of snapshot `snap`.
    /// Short (or empty) past the end of the object; ENOENT if it does not exist.
    pub async fn read(
        &self,
        pool: PoolId,
        object: &str,
        off: u64,
        len: u64,
        snap: SnapId,
    ) -> Result<Bytes, ClientError> {
        let ops = vec![ObjectOp::Read { off, len }];
        let outputs = self.exec(pool, object, &SnapContext::default(), snap, ops).await?;
        match single(outputs, "read")? {
            OpOutput::Data(payload) => Ok(payload.data),
            _ => Err(ClientError::Protocol { request: "read" }),
        }
    }

    /// Writes `data` at `off`, creating the object if needed.
    pub async fn write(
        &self,
        pool: PoolId,
        object: &str,
        off: u64,
        data: Bytes,
        snapc: &SnapContext,
    ) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::Write { off, data: Payload::new(data) }];
        self.exec(pool, object, snapc, SNAP_HEAD, ops).await.map(drop)
    }

    /// Replaces the object's data with `data`, creating it if needed.
    pub async fn write_full(
        &self,
        pool: PoolId,
        object: &str,
        data: Bytes,
        snapc: &SnapContext,
    ) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::WriteFull { data: Payload::new(data) }];
        self.exec(pool, object, snapc, SNAP_HEAD, ops).await.map(drop)
    }

    /// Creates the object; with `exclusive`, EEXIST if it exists.
    pub async fn create(
        &self,
        pool: PoolId,
        object: &str,
        exclusive: bool,
        snapc: &SnapContext,
    ) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::Create { exclusive }];
        self.exec(pool, object, snapc, SNAP_HEAD, ops).await.map(drop)
    }

    /// Sets the object's size (shrinking drops data, growing adds zeros).
    pub async fn truncate(
        &self,
        pool: PoolId,
        object: &str,
        size: u64,
        snapc: &SnapContext,
    ) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::Truncate { size }];
        self.exec(pool, object, snapc, SNAP_HEAD, ops).await.map(drop)
    }

    /// Zeroes `len` bytes at `off`.
    pub async fn zero(
        &self,
        pool: PoolId,
        object: &str,
        off: u64,
        len: u64,
        snapc: &SnapContext,
    ) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::Zero { off, len }];
        self.exec(pool, object, snapc, SNAP_HEAD, ops).await.map(drop)
    }

    /// Removes the object (ENOENT if absent). Snapshots keep their data.
    pub async fn remove(
        &self,
        pool: PoolId,
        object: &str,
        snapc: &SnapContext,
    ) -> Result<(), ClientError> {
        self.exec(pool, object, snapc, SNAP_HEAD, vec![ObjectOp::Remove]).await.map(drop)
    }

    /// Size and modification time of the head or of snapshot `snap` (ENOENT if absent).
    pub async fn stat(
        &self,
        pool: PoolId,
        object: &str,
        snap: SnapId,
    ) -> Result<ObjectStat, ClientError> {
        let outputs =
            self.exec(pool, object, &SnapContext::default(), snap, vec![ObjectOp::Stat]).await?;
        match single(outputs, "stat")? {
            OpOutput::Stat { size, mtime_sec, mtime_nsec } => {
                Ok(ObjectStat { size, mtime_sec, mtime_nsec })
            }
            _ => Err(ClientError::Protocol { request: "stat" }),
        }
    }

    /// One xattr's value (ENODATA if absent).
    pub async fn getxattr(
        &self,
        pool: PoolId,
        object: &str,
        name: &str,
        snap: SnapId,
    ) -> Result<Bytes, ClientError> {
        let ops = vec![ObjectOp::GetXattr { name: name.to_string() }];
        let outputs = self.exec(pool, object, &SnapContext::default(), snap, ops).await?;
        match single(outputs, "getxattr")? {
            OpOutput::Xattr(value) => Ok(value),
            _ => Err(ClientError::Protocol { request: "getxattr" }),
        }
    }

    /// Every xattr of the object.
    pub async fn getxattrs(
        &self,
        pool: PoolId,
        object: &str,
        snap: SnapId,
    ) -> Result<BTreeMap<String, Bytes>, ClientError> {
        let outputs = self
            .exec(pool, object, &SnapContext::default(), snap, vec![ObjectOp::GetXattrs])
            .await?;
        match single(outputs, "getxattrs")? {
            OpOutput::Xattrs(all) => Ok(all),
            _ => Err(ClientError::Protocol { request: "getxattrs" }),
        }
    }

    /// Sets an xattr (creates the object).
    pub async fn setxattr(
        &self,
        pool: PoolId,
        object: &str,
        name: &str,
        value: Bytes,
    ) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::SetXattr { name: name.to_string(), value }];
        self.exec(pool, object, &SnapContext::default(), SNAP_HEAD, ops).await.map(drop)
    }

    /// Removes an xattr (ENODATA if absent).
    pub async fn rmxattr(&self, pool: PoolId, object: &str, name: &str) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::RmXattr { name: name.to_string() }];
        self.exec(pool, object, &SnapContext::default(), SNAP_HEAD, ops).await.map(drop)
    }

    /// Omap entries with keys after `start_after` and starting with `prefix`, at most `max`,
    /// and whether more follow.
    pub async fn omap_get_vals(
        &self,
        pool: PoolId,
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
        let outputs = self.exec(pool, object, &SnapContext::default(), SNAP_HEAD, ops).await?;
        match single(outputs, "omap_get_vals")? {
            OpOutput::OmapVals { vals, more } => Ok((vals, more)),
            _ => Err(ClientError::Protocol { request: "omap_get_vals" }),
        }
    }

    /// Sets omap entries (creates the object).
    pub async fn omap_set(
        &self,
        pool: PoolId,
        object: &str,
        vals: BTreeMap<String, Bytes>,
    ) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::OmapSetVals { vals }];
        self.exec(pool, object, &SnapContext::default(), SNAP_HEAD, ops).await.map(drop)
    }

    /// Removes omap keys (absent keys are ignored).
    pub async fn omap_rm(
        &self,
        pool: PoolId,
        object: &str,
        keys: Vec<String>,
    ) -> Result<(), ClientError> {
        let ops = vec![ObjectOp::OmapRmKeys { keys }];
        self.exec(pool, object, &SnapContext::default(), SNAP_HEAD, ops).await.map(drop)
    }
}
