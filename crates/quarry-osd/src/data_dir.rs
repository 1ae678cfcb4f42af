//! [`DataDir`]: the OSD's data directory and its layout, owned here and nowhere else.
//!
//! ```text
//! DATA/wal/          the write-ahead log of every PG (quarry-raftlog; its lock file keeps a
//!                    second process off the directory)
//! DATA/store.redb    the object store (redb locks the file too)
//! DATA/snapshots/    temporary files of PG exports (unlinked, never read back)
//! DATA/damaged/      one file per PG that met damaged data and awaits its rebuild from a
//!                    replica (`pg::repair`), named like the PG (`1.1f`), holding the reason
//! DATA/addr          the address this OSD listened on last: a restart listens there again
//!                    if it is free, so peers and clients holding it reconnect at once
//! DATA/keyring       osd.N's key, the last place `OsdConfig::from_conf` looks
//! ```
//! The address file is written after each start (`quarry_persist::write_atomic`: temporary
//! file, fsync, rename, directory fsync) and read by
//! [`DataDir::stable_addr`]; a missing or unreadable one means "any free port".

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::OsdError;

/// The file that keeps the listening address across restarts.
const ADDR_FILE: &str = "addr";

/// An OSD data directory (the path only; nothing is opened until the OSD starts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The write-ahead log's directory.
    pub fn wal(&self) -> PathBuf {
        self.root.join("wal")
    }

    /// The object store file.
    pub fn store(&self) -> PathBuf {
        self.root.join("store.redb")
    }

    /// Where PG exports are staged.
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Where damaged PGs are marked (`pg::repair`).
    pub fn damaged(&self) -> PathBuf {
        self.root.join("damaged")
    }

    /// The keyring tried last for the OSD's key.
    pub fn keyring(&self) -> PathBuf {
        self.root.join("keyring")
    }

    /// The file holding the address of the previous start.
    pub fn addr_file(&self) -> PathBuf {
        self.root.join(ADDR_FILE)
    }

    /// The address recorded by the previous start, if any (and readable).
    pub fn previous_addr(&self) -> Option<SocketAddr> {
        let text = std::fs::read_to_string(self.addr_file()).ok()?;
        text.trim().parse().ok()
    }

    /// Where to listen when no address is configured: the previous start's address if that
    /// port is free, else 127.0.0.1 and any free port.
    pub fn stable_addr(&self) -> SocketAddr {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let Some(previous) = self.previous_addr() else {
            return any;
        };
        match std::net::TcpListener::bind(previous) {
            Ok(_) => previous,
            Err(e) => {
                tracing::warn!(%previous, error = %e, "previous address unavailable; listening on a new port");
                any
            }
        }
    }

    /// Records the address the OSD listens on, for its next start (atomically: a crash
    /// leaves the old file or the new one).
    pub fn record_addr(&self, addr: SocketAddr) -> Result<(), OsdError> {
        let path = self.addr_file();
        quarry_persist::write_atomic(&path, format!("{addr}\n").as_bytes(), 0o644)
            .map_err(|e| OsdError::io(e.path, e.source))
    }

    /// Creates the directory and its `snapshots/` if missing.
    pub(crate) fn create(&self) -> Result<(), OsdError> {
        for dir in [self.root.clone(), self.snapshots()] {
            std::fs::create_dir_all(&dir).map_err(|e| OsdError::io(&dir, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_is_kept_unless_taken() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        assert_eq!(data.stable_addr().port(), 0, "first start: any port");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        data.record_addr(addr).unwrap();
        assert_eq!(data.previous_addr(), Some(addr));
        assert_eq!(data.stable_addr().port(), 0, "taken by someone else: a new port");
        drop(taken);
        assert_eq!(data.stable_addr(), addr);
        std::fs::write(data.addr_file(), "garbage").unwrap();
        assert_eq!(data.stable_addr().port(), 0, "unreadable: a new port");
        assert!(!data.root().join("addr.partial").exists());
    }
}
