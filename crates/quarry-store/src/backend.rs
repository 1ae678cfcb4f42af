//! redb's storage backend for the store file: positioned reads and writes on a
//! [`DurableFile`] (the file-I/O seam of `quarry_persist`, so the power-loss simulator of
//! the tests can sit under it), with one difference from redb's own `FileBackend`: **growing
//! the file is made durable at once** (`set_len` + `fsync`).
//!
//! Why: redb writes its header (page 0) with the database layout, i.e. the file length it
//! expects, and asserts at open that the file is at least that long. A power cut can persist
//! the header page (an overwrite of an existing block, written back any time) without the
//! size change of an earlier `set_len` (metadata, journaled separately), leaving a file
//! shorter than its header says: redb then panics at every open, and the OSD crash-loops.
//! The power-loss harness (`tests/powerloss.rs`) found this. With growth durable before
//! any page that relies on it, the file is never shorter than a header written later.
//! redb grows the file geometrically up to a region, then by regions, so this costs a rare
//! extra fsync. Shrinking stays lazy: a file longer than its header is repaired by redb.
//!
//! Like redb's backend, it takes an exclusive non-blocking `flock` on the file: a second
//! open of the same store fails with `DatabaseAlreadyOpen`.

use quarry_persist::DurableFile;

/// redb's storage on the store file.
#[derive(Debug)]
pub(crate) struct StoreBackend(pub DurableFile);

impl redb::StorageBackend for StoreBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        let mut buffer = vec![0; len];
        self.0.read_exact_at(&mut buffer, offset)?;
        Ok(buffer)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let grows = len > self.0.len()?;
        self.0.set_len(len)?;
        if grows {
            // See the module docs: the new length must be on disk before any header that
            // names it.
            self.0.sync_all()?;
        }
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write_all_at(data, offset)
    }
}
