//! How Quarry persists bytes: the few rules every crate that writes files must share.
//!
//! - [`file`](mod@file): crash-safe replacement of a whole file (temporary file in the same directory,
//!   fsync, rename, fsync of the directory) and directory fsync.
//! - [`lock`]: an exclusive `flock(2)` on a lock file, held while a process owns a directory;
//!   the file records the holder's pid so the next comer's error names it.
//! - [`golden`]: the checked-in golden-byte files that pin every persisted encoding.
//! - [`durable`]: the file-I/O seam under the WAL segments and the store's database file
//!   ([`DurableFile`]: pread/pwrite/set_len/fdatasync, [`remove_file`]), plain system calls in
//!   production.
//! - [`powerloss`]: the test-only power-loss simulator behind that seam (a user-space
//!   write-back cache whose unsynced pages a simulated power cut drops).
//! - [`version`]: the envelope in front of every persisted payload (one version byte, then
//!   the body) and [`FormatTooNew`], the distinct error for a payload written by a newer build.
//!
//! # The upgrade rule for persisted payloads
//! Every payload Quarry writes to a file or a log record starts with a version byte (the
//! monitor snapshot and the store carry a `u32` version in their headers instead). bincode 1
//! writes fields back to back with no names or lengths, so *any* change to a persisted type
//! (adding, removing, reordering or retyping a field or enum variant, in it or in any type it
//! contains) changes its bytes, and data written before the change no longer decodes. Such a
//! change must therefore:
//! 1. give the payload a new version number (the old number is never reused);
//! 2. keep decoding every older version: keep the old type (renamed, e.g. `PgCommandV1`) and
//!    convert it to the new one in the decoder;
//! 3. keep the golden-byte test of the old version and add one for the new version (the
//!    golden tests fail on any change of bytes: a failing golden test means "new version",
//!    never "update the hex").
//!
//! A build that meets a version newer than it knows reports [`FormatTooNew`] (never
//! "corrupt"): the data is fine, the binary is too old.
//!
//! This crate sits at the bottom of the layering (next to `quarry-types`): any crate may
//! depend on it, and it depends on no Quarry crate.
//!
//! # Dependencies
//! rustix (`flock` without `unsafe`; already used by the workspace), bincode + serde (the
//! payload encoding Quarry already uses on the wire and in its logs), thiserror, bytemuck
//! (4 KiB-aligned buffers for direct I/O, [`AlignedBuf`], without `unsafe`).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod aligned;
pub mod durable;
pub mod file;
pub mod golden;
pub mod lock;
pub mod powerloss;
pub mod version;

pub use aligned::{AlignedBuf, DIRECT_IO_ALIGN};
pub use durable::{remove_file, rename, DurableFile};
pub use file::{sync_dir, write_atomic, FsError};
pub use lock::{LockError, LockFile};
pub use version::{DecodeError, FormatTooNew};
