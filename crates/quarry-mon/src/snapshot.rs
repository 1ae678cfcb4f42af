//! The state machine snapshot file `DATA_DIR/snapshot`: byte layout, atomic replacement and
//! loading.
//!
//! Layout (little endian): `magic "QMONSNAP" | version u32 | body_len u64 | body_crc32c u32 |
//! body`, where body is bincode of [`SnapshotFile`] (openraft's snapshot meta: last applied
//! log id and membership; and the whole [`MonState`]). The same bytes are what openraft ships
//! to a follower that needs a snapshot.
//!
//! The version is read right after the magic: a file with a newer version is
//! [`MonError::FormatTooNew`] (this build is too old; the file is not damaged), never
//! "corrupt". The body's bytes are pinned by golden tests (`tests/golden/mon_v1.hex`,
//! `mon_v2.hex`, `mon_v3.hex`, `mon_v4.hex`, `mon_v5.hex`): any change to `MonState` or a type in it (even a field added at the end:
//! bincode 1 writes no names or lengths) needs `VERSION + 1` and a decoder that still reads
//! the older versions (the upgrade rule is in `quarry_persist`). Version 2 added pool
//! snapshots to the map's pools; version 3 pool flags and quotas, OSD reweights, blocklist
//! adders and the central config; version 4 the PGs' up sets and the OSDs' down stamps
//! (rebalancing); version 5 the pools' `pg_num_target` and `pg_num_pending` (PG merge).
//! Version 4 is read through `snapshot_v4`, version 3 through `snapshot_v3`, version 2 through `snapshot_v2`,
//! version 1 through `snapshot_v1` and then `snapshot_v2`.
//!
//! Replacement is crash-safe ([`quarry_persist::write_atomic`]): write `snapshot.partial`,
//! fsync it, rename over `snapshot`, fsync the directory. A torn `.partial` is ignored (and
//! overwritten) on the next write. The file holds secret keys: it is created mode 0600.

use std::fs;
use std::path::Path;

use quarry_persist::version;

use openraft::{BasicNode, SnapshotMeta};
use serde::{Deserialize, Serialize};

use crate::error::MonError;
use crate::state::MonState;

/// File name of the snapshot inside the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot";
const MAGIC: &[u8; 8] = b"QMONSNAP";
/// The snapshot format version this build writes and the newest it reads.
pub const VERSION: u32 = 5;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;
/// Snapshots larger than this are refused as corrupt (the map and auth db are small).
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;

/// What a snapshot holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Last applied log id and membership as of the snapshot.
    pub meta: SnapshotMeta<u64, BasicNode>,
    /// The state machine.
    pub state: MonState,
}

/// Encodes a snapshot into its file bytes.
pub fn encode(file: &SnapshotFile) -> Result<Vec<u8>, MonError> {
    let mut body = Vec::new();
    version::encode_body_into(&mut body, file);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes file bytes; a newer version is [`MonError::FormatTooNew`], any damage
/// [`MonError::SnapshotCorrupt`].
pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, MonError> {
    let corrupt = |detail: &str| MonError::SnapshotCorrupt { detail: detail.to_string() };
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(corrupt("bad magic or short header"));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    // Checked before anything else: a newer version may lay out the rest differently.
    let found_version = match word(8) {
        found @ 1..=VERSION => found,
        found if found > VERSION => {
            return Err(MonError::FormatTooNew {
                what: "monitor snapshot",
                found,
                supported: VERSION,
            })
        }
        _ => return Err(corrupt("unknown version")),
    };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt("short header"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let body = &bytes[HEADER_LEN..];
    if u64::from_le_bytes(len) != body.len() as u64 {
        return Err(corrupt("length mismatch (torn write?)"));
    }
    if crc32c::crc32c(body) != word(20) {
        return Err(corrupt("checksum mismatch"));
    }
    let corrupt_body =
        |e: quarry_persist::DecodeError| MonError::SnapshotCorrupt { detail: e.to_string() };
    if found_version == 1 {
        let v1: crate::snapshot_v1::SnapshotFileV1 =
            version::decode_body("monitor snapshot", body).map_err(corrupt_body)?;
        return Ok(crate::snapshot_v2::SnapshotFileV2::from(v1).into());
    }
    if found_version == 2 {
        let v2: crate::snapshot_v2::SnapshotFileV2 =
            version::decode_body("monitor snapshot", body).map_err(corrupt_body)?;
        return Ok(v2.into());
    }
    if found_version == 4 {
        let v4: crate::snapshot_v4::SnapshotFileV4 =
            version::decode_body("monitor snapshot", body).map_err(corrupt_body)?;
        return Ok(v4.into());
    }
    if found_version == 3 {
        let v3: crate::snapshot_v3::SnapshotFileV3 =
            version::decode_body("monitor snapshot", body).map_err(corrupt_body)?;
        return Ok(v3.into());
    }
    version::decode_body("monitor snapshot", body).map_err(corrupt_body)
}

/// Replaces `dir/snapshot` with `bytes` atomically and durably.
pub fn write_atomic(dir: &Path, bytes: &[u8]) -> Result<(), MonError> {
    quarry_persist::write_atomic(&dir.join(SNAPSHOT_FILE), bytes, 0o600)
        .map_err(|e| MonError::Io { path: e.path, source: e.source })
}

/// Reads `dir/snapshot`, or None if there is none yet.
pub fn load(dir: &Path) -> Result<Option<SnapshotFile>, MonError> {
    let path = dir.join(SNAPSHOT_FILE);
    let size = match fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(MonError::Io { path, source }),
    };
    if size > SNAPSHOT_BYTES_MAX {
        return Err(MonError::SnapshotCorrupt {
            detail: format!("{} is {size} bytes", path.display()),
        });
    }
    let bytes = fs::read(&path).map_err(|source| MonError::Io { path: path.clone(), source })?;
    decode(&bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotFile {
        let mut state = MonState::default();
        state.map.fsid = "f".into();
        state.map.epoch = 7;
        SnapshotFile { meta: SnapshotMeta::default(), state }
    }

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        write_atomic(dir.path(), &encode(&sample()).unwrap()).unwrap();
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back.state, sample().state);
        assert!(!dir.path().join("snapshot.partial").exists());
    }

    #[test]
    fn damage_is_detected() {
        let bytes = encode(&sample()).unwrap();
        for cut in [0, 5, HEADER_LEN, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(decode(&flipped), Err(MonError::SnapshotCorrupt { .. })));
    }
}
