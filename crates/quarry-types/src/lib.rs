//! Vocabulary shared by every Quarry layer: identifiers (pools, placement groups, OSDs,
//! entities), the object operations a request carries, snapshot contexts, and the errno-style
//! error codes that cross the wire and reach the C ABI and the CLI.
//!
//! This crate does no I/O and has no runtime: it is plain data with serde derives, so the wire
//! codec, the store, the OSD and the client agree on one definition.
//!
//! Invariants:
//! - `ErrorCode` values are positive Linux errno numbers; the C ABI negates them.
//! - Data payloads carry a crc32c computed by whoever produced the bytes (`Payload::new`); every
//!   layer that receives a payload verifies it (`Payload::verify`) before trusting it.

#![warn(missing_docs)]

mod error;
mod ids;
mod methods;
mod ops;

pub use error::ErrorCode;
pub use ids::{EntityName, EntityType, OsdId, PgId, PoolId, SnapId, SNAP_HEAD};
pub use methods::{CallOrigin, MethodCtx, MethodFlags, ObjectMethods};
pub use ops::{CmpOp, ObjectOp, OpOutput, OpReply, Payload, SnapContext};

/// The largest object a client may address (offset + length), in bytes. Ceph's default
/// `osd_max_object_size` is 128 MiB; images use 4 MiB objects.
pub const OBJECT_SIZE_MAX: u64 = 128 << 20;

/// The longest object name accepted (Ceph: `osd_max_object_name_len` = 2048).
pub const OBJECT_NAME_LEN_MAX: usize = 2048;
