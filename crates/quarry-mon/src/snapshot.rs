//! The state machine snapshot file `DATA_DIR/snapshot`: byte layout, atomic replacement and
//! loading.
//!
//! Layout (little endian): `magic "QMONSNAP" | version u32 | body_len u64 | body_crc32c u32 |
//! body`, where body is bincode of [`SnapshotFile`] (openraft's snapshot meta: last applied
//! log id and membership; and the whole [`MonState`]). The same bytes are what openraft ships
//! to a follower that needs a snapshot.
//!
//! Replacement is crash-safe: write `snapshot.partial`, fsync it, rename over `snapshot`,
//! fsync the directory. A torn `.partial` is ignored (and overwritten) on the next write.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use openraft::{BasicNode, SnapshotMeta};
use serde::{Deserialize, Serialize};

use crate::error::MonError;
use crate::state::MonState;

/// File name of the snapshot inside the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot";
const PARTIAL_FILE: &str = "snapshot.partial";
const MAGIC: &[u8; 8] = b"QMONSNAP";
const VERSION: u32 = 1;
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
    let body =
        bincode::serialize(file).map_err(|e| MonError::SnapshotEncode { detail: e.to_string() })?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes file bytes; any damage is [`MonError::SnapshotCorrupt`].
pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, MonError> {
    let corrupt = |detail: &str| MonError::SnapshotCorrupt { detail: detail.to_string() };
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(corrupt("bad magic or short header"));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if word(8) != VERSION {
        return Err(corrupt("unsupported version"));
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
    bincode::deserialize(body).map_err(|e| MonError::SnapshotCorrupt { detail: e.to_string() })
}

/// Replaces `dir/snapshot` with `bytes` atomically and durably.
pub fn write_atomic(dir: &Path, bytes: &[u8]) -> Result<(), MonError> {
    let partial = dir.join(PARTIAL_FILE);
    let io = |path: &Path| {
        let path: PathBuf = path.to_path_buf();
        move |source| MonError::Io { path, source }
    };
    let mut file = File::create(&partial).map_err(io(&partial))?;
    file.write_all(bytes).map_err(io(&partial))?;
    file.sync_all().map_err(io(&partial))?;
    drop(file);
    let target = dir.join(SNAPSHOT_FILE);
    fs::rename(&partial, &target).map_err(io(&target))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
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
        assert!(!dir.path().join(PARTIAL_FILE).exists());
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
