//! Object operations: what one request asks of one object, applied atomically, and what it
//! returns. Mirrors the RADOS op vector (read, write, omap, xattr, guards).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{CallOrigin, ErrorCode, SnapId};

/// Bytes with the crc32c their producer computed. The crc travels with the data from the
/// client to the disk and back; every receiver checks it.
///
/// A producer that hashed the bytes anyway (the store, while a large read arrives from the
/// device) may attach their BLAKE3 digest ([`Payload::with_digest`]): a frame that carries the
/// payload as its bulk signs the digest instead of hashing the bytes again (`quarry-wire`'s
/// codec). The digest is not encoded (the bytes on the wire and in logs are the same with or
/// without it), not compared, and only used while `data` is the very buffer it was computed
/// over.
#[derive(Clone, Deserialize)]
pub struct Payload {
    /// The bytes (decoded without a copy under [`crate::zerocopy::decode_from`]).
    #[serde(deserialize_with = "crate::zerocopy::deserialize_bytes")]
    pub data: Bytes,
    /// crc32c (Castagnoli) of `data`.
    pub crc: u32,
    /// The BLAKE3 digest of the bytes it was computed over, and those bytes (a second handle
    /// on the same buffer: while it is held, no other buffer can take its address).
    #[serde(skip)]
    digest: Option<(Bytes, [u8; 32])>,
}

/// `data` and `crc`, and whether a digest came with them (not the digest's own handle on the
/// bytes: a 4 MiB read would print twice).
impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("data", &self.data)
            .field("crc", &self.crc)
            .field("digest", &self.digest().is_some())
            .finish()
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.data == other.data && self.crc == other.crc
    }
}

impl Eq for Payload {}

/// The encoding of a derived `Serialize` of `{ data, crc }` (the digest is not encoded; a
/// large `data` may be left out of a frame, `crate::zerocopy::encode_spliced`).
impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Data<'a>(&'a Payload);
        impl Serialize for Data<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                crate::zerocopy::serialize_bytes(&self.0.data, self.0.digest(), s)
            }
        }
        let mut st = s.serialize_struct("Payload", 2)?;
        st.serialize_field("data", &Data(self))?;
        st.serialize_field("crc", &self.crc)?;
        st.end()
    }
}

impl Payload {
    /// Wraps `data`, computing its checksum.
    pub fn new(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        let crc = crc32c::crc32c(&data);
        Payload { data, crc, digest: None }
    }

    /// Wraps `data` with the checksum its producer computed (checked by [`Payload::verify`]).
    pub fn with_crc(data: Bytes, crc: u32) -> Self {
        Payload { data, crc, digest: None }
    }

    /// [`Payload::with_crc`] plus `digest`, the BLAKE3 hash (`blake3::hash`) of `data`.
    pub fn with_digest(data: Bytes, crc: u32, digest: [u8; 32]) -> Self {
        Payload { digest: Some((data.clone(), digest)), data, crc }
    }

    /// The BLAKE3 digest of `data` given by its producer, if any and if `data` is still the
    /// buffer it was computed over.
    pub fn digest(&self) -> Option<&[u8; 32]> {
        let (over, digest) = self.digest.as_ref()?;
        (over.as_ptr() == self.data.as_ptr() && over.len() == self.data.len()).then_some(digest)
    }

    /// True when the checksum matches the bytes.
    pub fn verify(&self) -> bool {
        crc32c::crc32c(&self.data) == self.crc
    }

    /// Number of bytes carried.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The snapshot context of a mutation (Ceph's SnapContext): `seq` is the newest snapshot id
/// the writer knows of, `snaps` the existing snapshot ids, newest first. A write whose `seq`
/// is newer than the object's last write preserves the data those snapshots see.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapContext {
    /// Newest snapshot id known to the writer (0: no snapshots ever).
    pub seq: SnapId,
    /// Existing snapshot ids, descending, all `<= seq`.
    pub snaps: Vec<SnapId>,
}

impl SnapContext {
    /// A context is valid when `snaps` is strictly descending and bounded by `seq`.
    pub fn is_valid(&self) -> bool {
        self.snaps.first().is_none_or(|&s| s <= self.seq)
            && self.snaps.windows(2).all(|w| w[0] > w[1])
    }
}

/// Comparison used by xattr/omap guards: `stored OP given`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// Stored value equals the given one.
    Eq,
    /// Stored value differs.
    Ne,
    /// Stored value is lexicographically greater.
    Gt,
    /// Stored value is greater or equal.
    Gte,
    /// Stored value is less.
    Lt,
    /// Stored value is less or equal.
    Lte,
}

impl CmpOp {
    /// Evaluates `stored OP given` on byte strings (lexicographic order).
    pub fn holds(self, stored: &[u8], given: &[u8]) -> bool {
        use std::cmp::Ordering::*;
        let ord = stored.cmp(given);
        match self {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Gt => ord == Greater,
            CmpOp::Gte => ord != Less,
            CmpOp::Lt => ord == Less,
            CmpOp::Lte => ord != Greater,
        }
    }
}

/// One operation on one object. A request carries a vector of them; the vector is applied
/// atomically: either every op succeeds and all effects are applied, or the first failing op's
/// error is returned and nothing changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectOp {
    // ---- reads (allowed on snapshots) ----
    /// Read `len` bytes at `off` (len 0: to the end). Short or empty past the end.
    Read {
        /// Offset in bytes.
        off: u64,
        /// Length in bytes; 0 reads to the end of the object.
        len: u64,
    },
    /// Size and modification time.
    Stat,
    /// Fails with ENOENT unless the object exists.
    AssertExists,
    /// One xattr's value (ENODATA if absent).
    GetXattr {
        /// Attribute name.
        name: String,
    },
    /// All xattrs.
    GetXattrs,
    /// Guard: fails with ECANCELED unless `xattr OP value` holds (absent xattr compares as
    /// empty).
    CmpXattr {
        /// Attribute name.
        name: String,
        /// Comparison.
        op: CmpOp,
        /// Value to compare with.
        value: Bytes,
    },
    /// Omap entries with key > `start_after`, starting with `prefix`, at most `max`.
    OmapGetVals {
        /// Exclusive lower bound ("" = from the start).
        start_after: String,
        /// Only keys with this prefix.
        prefix: String,
        /// Most entries to return (bounded by the OSD too).
        max: u32,
    },
    /// Omap keys only, same paging as `OmapGetVals`.
    OmapGetKeys {
        /// Exclusive lower bound.
        start_after: String,
        /// Most keys to return.
        max: u32,
    },
    /// Values of the given keys (absent keys are left out).
    OmapGetValsByKeys {
        /// Keys to look up.
        keys: Vec<String>,
    },
    /// The omap header blob.
    OmapGetHeader,
    /// Guard: fails with ECANCELED unless `omap[key] OP value` holds (absent: ECANCELED).
    OmapCmp {
        /// Key.
        key: String,
        /// Comparison.
        op: CmpOp,
        /// Value.
        value: Bytes,
    },
    // ---- mutations (refused with EROFS on snapshot reads) ----
    /// Write bytes at `off`, extending the object as needed (creates it).
    Write {
        /// Offset.
        off: u64,
        /// Data and crc.
        data: Payload,
    },
    /// Replace the object's data with these bytes (creates it).
    WriteFull {
        /// Data and crc.
        data: Payload,
    },
    /// Zero a range (a hole; no size change beyond the current size).
    Zero {
        /// Offset.
        off: u64,
        /// Length.
        len: u64,
    },
    /// Set the size (shrink drops data, grow adds zeros). Creates the object.
    Truncate {
        /// New size.
        size: u64,
    },
    /// Create the object; with `exclusive`, fail with EEXIST if it exists.
    Create {
        /// Fail if it exists.
        exclusive: bool,
    },
    /// Delete the object (ENOENT if absent). Snapshots keep seeing their data.
    Remove,
    /// Set an xattr (creates the object).
    SetXattr {
        /// Name.
        name: String,
        /// Value.
        value: Bytes,
    },
    /// Remove an xattr (ENODATA if absent).
    RmXattr {
        /// Name.
        name: String,
    },
    /// Set omap entries (creates the object).
    OmapSetVals {
        /// Entries to set.
        vals: BTreeMap<String, Bytes>,
    },
    /// Remove omap keys (absent keys are ignored).
    OmapRmKeys {
        /// Keys to remove.
        keys: Vec<String>,
    },
    /// Remove every omap entry.
    OmapClear,
    /// Set the omap header (creates the object).
    OmapSetHeader {
        /// Header bytes.
        header: Bytes,
    },
    /// Retired: the client-sent snapshot trim of earlier versions (any writer could destroy
    /// data other snapshots need). OSDs now trim removed snapshots themselves; this op is
    /// refused with EOPNOTSUPP everywhere and stays in the enum only so that log entries
    /// written before it was retired still decode (variant order is the encoding).
    SnapTrimRetired {
        /// Snapshot ids the sender claimed were live (ignored).
        live_snaps: Vec<SnapId>,
    },
    /// Run the server-side method `class.method` on the object with `input` (Ceph's
    /// `exec`): it reads and changes the object's data, xattrs and omap atomically with the
    /// rest of the vector and returns bytes ([`OpOutput::Returned`]). Whether it mutates is
    /// the method's own flag (see [`crate::ObjectMethods`]), not this op's: the OSD decides
    /// the path (log or read) and the caps it needs. `origin` is who called: clients send
    /// `None` and the OSD always overwrites it with the authenticated caller before the op
    /// runs, so a method can trust it.
    Call {
        /// Class name (`lock`, `numops`, `rbd`).
        class: String,
        /// Method name within the class.
        method: String,
        /// The method's input, in the class's own encoding.
        input: Bytes,
        /// The caller, filled in by the OSD (never trusted from a client).
        origin: Option<CallOrigin>,
    },
    /// Roll the object's data back to what snapshot `snap` sees (Ceph's rollback). Written
    /// like any write: the current head is preserved for the snapshots of the context. If the
    /// snapshot does not see the object, the head is removed; ENOENT if neither exists.
    Rollback {
        /// The snapshot to roll back to.
        snap: SnapId,
    },
    /// Guard (Ceph's CMPEXT): compares the object's bytes `[off, off + data.len())` with
    /// `data`; bytes past the object's end, and every byte of an absent object, compare as
    /// zeros (what an image read returns there). On the first differing byte, at index `i`
    /// of `data`, the op fails with [`ErrorCode::cmpext_mismatch`]`(i)` (Ceph's
    /// `-MAX_ERRNO - i` convention: the positive code is `MAX_ERRNO + i`, read back with
    /// [`ErrorCode::mismatch_offset`]) and, like every failing op, the whole vector takes no
    /// effect. Allowed on snapshots (a read); placed before a write it makes the write
    /// conditional and atomic on the OSD (librbd's compare-and-write).
    CmpExt {
        /// Object offset of the first byte compared.
        off: u64,
        /// The expected bytes.
        data: Bytes,
    },
}

impl ObjectOp {
    /// Bytes of data the op carries into the log (write payloads, xattr names and values,
    /// omap keys/values/header, method input); what [`crate::OP_DATA_BYTES_MAX`] bounds per
    /// vector. Other ops count 0.
    pub fn data_bytes(&self) -> u64 {
        let len = |n: usize| n as u64;
        match self {
            ObjectOp::Write { data, .. } | ObjectOp::WriteFull { data } => len(data.len()),
            ObjectOp::SetXattr { name, value } => len(name.len() + value.len()),
            ObjectOp::OmapSetVals { vals } => {
                vals.iter().map(|(k, v)| len(k.len() + v.len())).sum()
            }
            ObjectOp::OmapRmKeys { keys } => keys.iter().map(|k| len(k.len())).sum(),
            ObjectOp::OmapSetHeader { header } => len(header.len()),
            ObjectOp::Call { input, .. } => len(input.len()),
            ObjectOp::CmpExt { data, .. } => len(data.len()),
            _ => 0,
        }
    }

    /// True if the vector may change the object: a mutation, or a method call (which writes or
    /// not depending on the method). Such vectors carry a request id (exactly once) and keep
    /// their order per object, on the client and on the OSD.
    pub fn vector_may_write(ops: &[ObjectOp]) -> bool {
        ops.iter().any(|op| op.is_mutation() || op.is_call())
    }

    /// The index of the first op at which the vector's running [`ObjectOp::data_bytes`] total
    /// passes [`crate::OP_DATA_BYTES_MAX`], if it does (answered EMSGSIZE).
    pub fn vector_too_big(ops: &[ObjectOp]) -> Option<usize> {
        let mut total = 0u64;
        for (index, op) in ops.iter().enumerate() {
            total = total.saturating_add(op.data_bytes());
            if total > crate::OP_DATA_BYTES_MAX {
                return Some(index);
            }
        }
        None
    }

    /// True if the op changes state (and so must go through the PG log).
    pub fn is_mutation(&self) -> bool {
        matches!(
            self,
            ObjectOp::Write { .. }
                | ObjectOp::WriteFull { .. }
                | ObjectOp::Zero { .. }
                | ObjectOp::Truncate { .. }
                | ObjectOp::Create { .. }
                | ObjectOp::Remove
                | ObjectOp::SetXattr { .. }
                | ObjectOp::RmXattr { .. }
                | ObjectOp::OmapSetVals { .. }
                | ObjectOp::OmapRmKeys { .. }
                | ObjectOp::OmapClear
                | ObjectOp::OmapSetHeader { .. }
                | ObjectOp::SnapTrimRetired { .. }
                | ObjectOp::Rollback { .. }
        )
    }

    /// True for [`ObjectOp::Call`]: whether it mutates depends on the method (see
    /// [`crate::ObjectMethods::flags`]); [`ObjectOp::is_mutation`] is false for it.
    pub fn is_call(&self) -> bool {
        matches!(self, ObjectOp::Call { .. })
    }

    /// True if the op deletes data (capability class "delete" is the same as "write" in Ceph,
    /// kept distinct for logging).
    pub fn is_removal(&self) -> bool {
        matches!(self, ObjectOp::Remove)
    }
}

/// What one successful op returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpOutput {
    /// Nothing (mutations, guards).
    None,
    /// Data read (possibly shorter than asked).
    Data(Payload),
    /// Object size and modification time (seconds, nanoseconds since the epoch).
    Stat {
        /// Size in bytes.
        size: u64,
        /// Modification time, seconds.
        mtime_sec: u64,
        /// Modification time, nanoseconds part.
        mtime_nsec: u32,
    },
    /// One xattr value.
    Xattr(Bytes),
    /// All xattrs.
    Xattrs(BTreeMap<String, Bytes>),
    /// Omap entries and whether more follow.
    OmapVals {
        /// Entries.
        vals: BTreeMap<String, Bytes>,
        /// More entries exist past the last one returned.
        more: bool,
    },
    /// Omap keys and whether more follow.
    OmapKeys {
        /// Keys.
        keys: Vec<String>,
        /// More keys exist.
        more: bool,
    },
    /// Omap header.
    OmapHeader(Bytes),
    /// What a server-side method ([`ObjectOp::Call`]) returned.
    Returned(Bytes),
}

/// The reply to a whole op vector: every op's output, or the index and code of the first
/// op that failed (in which case nothing was applied).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpReply {
    /// All ops succeeded; one output per op, in order.
    Ok(Vec<OpOutput>),
    /// Op `index` failed with `code`; no effect was applied.
    Failed {
        /// Index of the failing op.
        index: u32,
        /// Why.
        code: ErrorCode,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_detects_corruption() {
        let mut p = Payload::new(Bytes::from_static(b"hello"));
        assert!(p.verify());
        p.data = Bytes::from_static(b"hellp");
        assert!(!p.verify());
    }

    #[test]
    fn snap_context_validity() {
        assert!(SnapContext::default().is_valid());
        assert!(SnapContext { seq: 5, snaps: vec![5, 3, 1] }.is_valid());
        assert!(!SnapContext { seq: 4, snaps: vec![5] }.is_valid());
        assert!(!SnapContext { seq: 5, snaps: vec![3, 3] }.is_valid());
    }

    #[test]
    fn cmp_ops() {
        assert!(CmpOp::Eq.holds(b"a", b"a"));
        assert!(CmpOp::Lt.holds(b"a", b"b"));
        assert!(!CmpOp::Gt.holds(b"a", b"b"));
        assert!(CmpOp::Gte.holds(b"b", b"b"));
    }
}
