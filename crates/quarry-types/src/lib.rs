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
mod full;
mod ids;
mod limits;
mod methods;
mod ops;
pub mod perf;
pub mod zerocopy;

pub use error::ErrorCode;
pub use full::{full_health, usage_ratio, FullRatios, FullState};
pub use ids::{EntityName, EntityReqId, EntityType, OsdId, PgId, PoolId, ReqId, SnapId, SNAP_HEAD};
pub use limits::{DaemonKind, ServerLimits};
pub use methods::{CallOrigin, MethodCtx, MethodFlags, ObjectMethods};
pub use ops::{CmpOp, ObjectOp, OpOutput, OpReply, Payload, SnapContext};

/// The largest object a client may address (offset + length), in bytes. Ceph's default
/// `osd_max_object_size` is 128 MiB; images use 4 MiB objects.
pub const OBJECT_SIZE_MAX: u64 = 128 << 20;

/// The largest Raft log entry an OSD proposes, encoded: what one WAL record holds
/// (`quarry_raftlog::format::RECORD_PAYLOAD_MAX`; the OSD asserts the two are equal at
/// compile time). A larger entry would be refused by the log, which openraft treats as fatal
/// for the PG, so nothing a client sends may ever produce one.
pub const LOG_ENTRY_BYTES_MAX: u64 = 64 << 20;

/// The most data one op vector may carry (the sum of its write payloads, xattr values, omap
/// keys/values and method inputs): 60 MiB, leaving 4 MiB of the log entry for the rest (name,
/// op headers, snap context). A larger vector is refused with EMSGSIZE (90, "Message too
/// long"), by the client before sending and by the OSD before proposing, as Ceph refuses a
/// write above `osd_max_write_size` (90 MiB) with EMSGSIZE. Objects up to
/// [`OBJECT_SIZE_MAX`] are written with several ops.
pub const OP_DATA_BYTES_MAX: u64 = 60 << 20;

const _: () = assert!(OP_DATA_BYTES_MAX + (4 << 20) <= LOG_ENTRY_BYTES_MAX);

/// The longest object name accepted (Ceph: `osd_max_object_name_len` = 2048).
pub const OBJECT_NAME_LEN_MAX: usize = 2048;

/// Separates a RADOS namespace from an object's name in the key an object is stored,
/// placed and addressed by (`NS` + `\x1f` + `NAME`; the default namespace adds nothing), as
/// Ceph hashes `nspace + '\037' + key` for placement. Neither a namespace nor an object name
/// may contain it (the client refuses them with EINVAL), so a key splits one way only.
pub const NAMESPACE_SEPARATOR: char = '\u{1f}';

/// The key of object `name` in namespace `namespace` (see [`NAMESPACE_SEPARATOR`]).
pub fn namespaced_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}{NAMESPACE_SEPARATOR}{name}")
    }
}

/// Splits an object key into its namespace ("" for the default one) and name.
pub fn split_namespace(key: &str) -> (&str, &str) {
    key.split_once(NAMESPACE_SEPARATOR).unwrap_or(("", key))
}

#[cfg(test)]
mod namespace_tests {
    use super::*;

    #[test]
    fn keys_split_back_into_namespace_and_name() {
        assert_eq!(namespaced_name("", "rbd_directory"), "rbd_directory");
        assert_eq!(namespaced_name("ns1", "rbd_directory"), "ns1\u{1f}rbd_directory");
        assert_eq!(split_namespace("ns1\u{1f}rbd_directory"), ("ns1", "rbd_directory"));
        assert_eq!(split_namespace("rbd_directory"), ("", "rbd_directory"));
    }
}
