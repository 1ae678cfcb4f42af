//! The file-I/O seam under Quarry's durable files (the WAL segments and the store's database
//! file): [`DurableFile`] (positioned reads and writes, `set_len`, `fdatasync`/`fsync`) and the
//! directory operations that go with it ([`remove_file`]; directory fsync is
//! [`crate::sync_dir`]).
//!
//! In production every call is the plain system call on a `std::fs::File` (the only cost of
//! the seam is one enum match per call and, when a file is opened, one check whether a
//! power-loss simulation is active). Under a test, a directory can be put under the
//! power-loss simulator of [`crate::powerloss`]: files opened below it then keep their
//! unsynced writes in memory, as a kernel's page cache does, and a simulated power cut drops
//! them (see that module).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::powerloss::{self, SimFile};

/// A file whose durability matters: a plain file, or one under the power-loss simulator.
#[derive(Debug)]
pub enum DurableFile {
    /// The real file (production).
    Real(File),
    /// A file under a [`crate::powerloss::World`] (tests only).
    Sim(SimFile),
}

impl DurableFile {
    /// Opens an existing file for reading and writing.
    pub fn open(path: &Path) -> std::io::Result<DurableFile> {
        if let Some(world) = powerloss::world_for(path) {
            return world.open(path).map(DurableFile::Sim);
        }
        OpenOptions::new().read(true).write(true).open(path).map(DurableFile::Real)
    }

    /// Creates a new file (it must not exist) for reading and writing. Its directory entry
    /// is durable only after [`crate::sync_dir`] of its directory.
    pub fn create_new(path: &Path) -> std::io::Result<DurableFile> {
        if let Some(world) = powerloss::world_for(path) {
            return world.create_new(path).map(DurableFile::Sim);
        }
        OpenOptions::new().read(true).write(true).create_new(true).open(path).map(DurableFile::Real)
    }

    /// A second handle on an existing file, for reading and writing with direct I/O
    /// (`O_DIRECT`: data goes between the caller's memory and the device, bypassing the page
    /// cache, which on a VM cost ~12 ms of CPU per 4 MiB written and synced, against ~0.4 ms
    /// direct, and most of a 4 MiB read's CPU; see docs/benchmarks.md). Reads and writes
    /// through it must be 4 KiB-aligned in offset, length and memory ([`crate::AlignedBuf`]);
    /// Linux keeps it coherent with the buffered handle (a direct read first writes back
    /// dirty cached pages of its range). Writes are durable only after a sync (of either handle:
    /// the device's cache is flushed by `fdatasync`). `None` when the file system does not
    /// do direct I/O (tmpfs): the caller writes through its buffered handle instead. Under
    /// the power-loss simulator it is another handle on the same simulated file, with the
    /// simulator's (page-cache) semantics.
    pub fn open_direct(path: &Path) -> std::io::Result<Option<DurableFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(world) = powerloss::world_for(path) {
            return world.open(path).map(|file| Some(DurableFile::Sim(file)));
        }
        let direct = rustix::fs::OFlags::DIRECT.bits() as i32;
        match OpenOptions::new().read(true).write(true).custom_flags(direct).open(path) {
            Ok(file) => Ok(Some(DurableFile::Real(file))),
            Err(error) if error.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Opens the file, creating it (empty) if it does not exist.
    pub fn open_or_create(path: &Path) -> std::io::Result<DurableFile> {
        if let Some(world) = powerloss::world_for(path) {
            return match world.open(path) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    world.create_new(path).map(DurableFile::Sim)
                }
                other => other.map(DurableFile::Sim),
            };
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(DurableFile::Real)
    }

    /// Whether this file is under the power-loss simulator.
    pub fn is_simulated(&self) -> bool {
        matches!(self, DurableFile::Sim(_))
    }

    /// Length of the file.
    pub fn len(&self) -> std::io::Result<u64> {
        match self {
            DurableFile::Real(file) => Ok(file.metadata()?.len()),
            DurableFile::Sim(file) => Ok(file.len()),
        }
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// `pread`: reads up to `buf.len()` bytes at `offset`; 0 at or past the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        match self {
            DurableFile::Real(file) => file.read_at(buf, offset),
            DurableFile::Sim(file) => file.read_at(buf, offset),
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset` if they are all in the page cache
    /// (`preadv2` with `RWF_NOWAIT`): `WouldBlock` when reading them would wait for the device
    /// (or the file system cannot tell), `UnexpectedEof` past the end. For a caller on a
    /// thread that must not wait for a disk (an async runtime's worker), which then hands the
    /// read to a thread that may. Under the simulator it is [`DurableFile::read_exact_at`].
    pub fn read_exact_at_cached(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let file = match self {
            DurableFile::Real(file) => file,
            DurableFile::Sim(_) => return self.read_exact_at(buf, offset),
        };
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let slices = &mut [std::io::IoSliceMut::new(&mut buf[done..])];
            match rustix::io::preadv2(file, slices, at, rustix::io::ReadWriteFlags::NOWAIT) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "failed to fill whole buffer",
                    ))
                }
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::OPNOTSUPP) => {
                    return Err(std::io::ErrorKind::WouldBlock.into())
                }
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `offset` (`UnexpectedEof` past the end).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self {
            DurableFile::Real(file) => file.read_exact_at(buf, offset),
            DurableFile::Sim(file) => {
                if file.read_at(buf, offset)? < buf.len() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "failed to fill whole buffer",
                    ));
                }
                Ok(())
            }
        }
    }

    /// `pwrite` of all of `data` at `offset` (not durable until a sync).
    pub fn write_all_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        match self {
            DurableFile::Real(file) => file.write_all_at(data, offset),
            DurableFile::Sim(file) => file.write_all_at(data, offset),
        }
    }

    /// Truncates or extends (with zeros) the file (not durable until a sync).
    pub fn set_len(&self, len: u64) -> std::io::Result<()> {
        match self {
            DurableFile::Real(file) => file.set_len(len),
            DurableFile::Sim(file) => file.set_len(len),
        }
    }

    /// Gives the blocks of `len` bytes at `offset` back to the file system
    /// (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): they read as zeros, the length is unchanged.
    /// Like a write, not durable until a sync. A file system that cannot punch holes
    /// answers `EOPNOTSUPP`. Under the simulator, a write of zeros (within the length).
    pub fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        match self {
            DurableFile::Real(file) => {
                use rustix::fs::FallocateFlags;
                let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
                rustix::fs::fallocate(file, flags, offset, len).map_err(Into::into)
            }
            DurableFile::Sim(file) => {
                static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
                let end = offset.saturating_add(len).min(file.len());
                let mut at = offset;
                while at < end {
                    let n = (end - at).min(ZEROS.len() as u64);
                    file.write_all_at(&ZEROS[..n as usize], at)?;
                    at += n;
                }
                Ok(())
            }
        }
    }

    /// `fdatasync`: the file's data (and its size) are durable when this returns.
    pub fn sync_data(&self) -> std::io::Result<()> {
        match self {
            DurableFile::Real(file) => file.sync_data(),
            DurableFile::Sim(file) => file.sync(),
        }
    }

    /// `fsync`: data and metadata are durable when this returns.
    pub fn sync_all(&self) -> std::io::Result<()> {
        match self {
            DurableFile::Real(file) => file.sync_all(),
            DurableFile::Sim(file) => file.sync(),
        }
    }

    /// Takes an exclusive, non-blocking `flock` on the file (released when every handle of
    /// it is closed); false if another open file description holds it. Always true under
    /// the simulator.
    pub fn try_lock_exclusive(&self) -> std::io::Result<bool> {
        match self {
            DurableFile::Real(file) => {
                match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                {
                    Ok(()) => Ok(true),
                    Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
                    Err(errno) => Err(errno.into()),
                }
            }
            DurableFile::Sim(_) => Ok(true),
        }
    }

    /// A second handle on the same file (same lock, same simulated state).
    pub fn try_clone(&self) -> std::io::Result<DurableFile> {
        match self {
            DurableFile::Real(file) => file.try_clone().map(DurableFile::Real),
            DurableFile::Sim(file) => Ok(DurableFile::Sim(file.clone_handle())),
        }
    }

    /// A reader (with `Seek`) starting at `offset`, for sequential scans.
    pub fn reader_at(&self, offset: u64) -> FileReader<'_> {
        FileReader { file: self, position: offset }
    }
}

/// Removes a file. Like the file system, the removal is durable only after
/// [`crate::sync_dir`] of its directory (the simulator may bring it back at a power cut).
pub fn remove_file(path: &Path) -> std::io::Result<()> {
    if let Some(world) = powerloss::world_for(path) {
        return world.remove_file(path);
    }
    std::fs::remove_file(path)
}

/// Renames a file (replacing `to`). Durable only after [`crate::sync_dir`] of the directory
/// (the simulator may undo it at a power cut).
pub fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(world) = powerloss::world_for(to) {
        return world.rename(from, to);
    }
    std::fs::rename(from, to)
}

/// A sequential reader over a [`DurableFile`] (positioned reads, so it shares the file).
#[derive(Debug)]
pub struct FileReader<'a> {
    file: &'a DurableFile,
    position: u64,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.file.read_at(buf, self.position)?;
        self.position += read as u64;
        Ok(read)
    }
}

impl Seek for FileReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let position = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
            SeekFrom::End(delta) => self.file.len()?.checked_add_signed(delta),
        };
        match position {
            Some(at) => {
                self.position = at;
                Ok(at)
            }
            None => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before 0")),
        }
    }
}

/// A shared [`DurableFile`] (the WAL keeps one handle per segment for writer and readers).
pub type SharedFile = Arc<DurableFile>;
