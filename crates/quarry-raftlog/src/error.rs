//! The crate's error type, [`WalError`], and [`Corruption`], the structured reason a segment or a
//! record was rejected.

use std::io;
use std::path::PathBuf;

use quarry_persist::{DecodeError, FormatTooNew};

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Another process (or another [`crate::Wal`] in this process) has the directory open.
    #[error("WAL directory is locked by another process{}: {}", holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default(), path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The pid the holder wrote into the lock file, if readable.
        holder: Option<u32>,
    },
    /// An I/O error on a file of the log.
    #[error("WAL I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A segment or record failed its checks where a torn write is not a possible explanation.
    #[error("corrupt WAL segment {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the bad record (or 0 for a bad segment header).
        offset: u64,
        /// What was wrong.
        reason: Corruption,
    },
    /// An entry serialises to more than a record can hold.
    #[error("entry {index} of group {group} is {bytes} bytes, over the record limit of {max}")]
    EntryTooLarge {
        /// The Raft group.
        group: u64,
        /// The entry's log index.
        index: u64,
        /// Serialised size.
        bytes: u64,
        /// [`crate::format::RECORD_PAYLOAD_MAX`].
        max: u64,
    },
    /// A segment or record was written by a newer build (its format version is above the one
    /// this build reads). The data is not damaged: run a newer Quarry.
    #[error("WAL segment {path} at offset {offset}: {source}")]
    FormatTooNew {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the record (or 0 for the segment header).
        offset: u64,
        /// Versions found and supported.
        #[source]
        source: FormatTooNew,
    },
    /// An entry's application data was written by a newer build.
    #[error("entry {index} of group {group}: {source}")]
    EntryFormatTooNew {
        /// The Raft group.
        group: u64,
        /// The entry's log index.
        index: u64,
        /// Versions found and supported.
        #[source]
        source: FormatTooNew,
    },
    /// An entry could not be decoded (its bytes passed the crc).
    #[error("cannot decode entry {index} of group {group}: {source}")]
    Codec {
        /// The Raft group.
        group: u64,
        /// The entry's log index.
        index: u64,
        /// What was wrong.
        #[source]
        source: DecodeError,
    },
    /// An append that does not follow the group's last entry (a caller bug: openraft never
    /// leaves a hole). Nothing of the append is kept.
    #[error("group {group}: append of entry {index} does not follow the last entry {expected}")]
    NonContiguous {
        /// The Raft group.
        group: u64,
        /// First index appended.
        index: u64,
        /// Index expected.
        expected: u64,
    },
    /// Options out of range.
    #[error("invalid WAL options: {reason}")]
    InvalidOptions {
        /// Which rule was broken.
        reason: &'static str,
    },
    /// The writer thread is gone (the log is shutting down).
    #[error("the WAL writer has stopped")]
    Closed,
    /// A write of this group's records was refused by the file system (e.g. `ENOSPC`): those
    /// records are not on disk and the group takes no more requests until it is reloaded
    /// ([`crate::Wal::reload_group`]) or the log is reopened.
    #[error("group {group}: a WAL write was refused ({source}); reload the group or reopen the log to use it")]
    WriteRefused {
        /// The Raft group.
        group: u64,
        /// The write's error.
        #[source]
        source: io::Error,
    },
}

/// A copy of an I/O error (`io::Error` is not `Clone`): same errno or kind, same message.
pub(crate) fn clone_io_error(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

/// Why a segment header or a record was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The file is shorter than a segment header.
    #[error("segment header is short ({len} bytes)")]
    ShortSegmentHeader {
        /// File length.
        len: u64,
    },
    /// The segment does not start with the magic bytes.
    #[error("bad segment magic")]
    BadMagic,
    /// The segment header's crc32c does not match.
    #[error("segment header checksum mismatch")]
    BadSegmentHeaderCrc,
    /// A format version this code does not read.
    #[error("unsupported segment format version {found}")]
    UnsupportedVersion {
        /// Version found.
        found: u32,
    },
    /// The header length field is not the one this version writes.
    #[error("unexpected segment header length {found}")]
    BadSegmentHeaderLength {
        /// Length found.
        found: u32,
    },
    /// The sequence number in the header differs from the file name.
    #[error("segment header sequence {found} does not match the file name")]
    SequenceMismatch {
        /// Sequence found in the header.
        found: u64,
    },
    /// Fewer bytes than a record header remain in the file.
    #[error("record header cut short")]
    ShortRecordHeader,
    /// The record's length exceeds the format's limit.
    #[error("record length {len} over the limit")]
    RecordTooLong {
        /// Length field.
        len: u32,
    },
    /// The record extends past the end of the file.
    #[error("record of {len} payload bytes extends past the end of the file")]
    RecordPastEnd {
        /// Length field.
        len: u32,
    },
    /// The record's crc32c does not match.
    #[error("record checksum mismatch")]
    BadRecordCrc,
    /// A kind byte this version does not know.
    #[error("unknown record kind {kind}")]
    UnknownKind {
        /// Kind byte.
        kind: u8,
    },
    /// A crc-valid payload that does not decode.
    #[error("record of kind {kind} does not decode")]
    Undecodable {
        /// Kind byte.
        kind: u8,
    },
    /// An entry whose index does not follow the group's last entry.
    #[error("group {group}: entry {index} does not follow the last entry (expected {expected})")]
    NonContiguous {
        /// The Raft group.
        group: u64,
        /// Index found.
        index: u64,
        /// Index expected.
        expected: u64,
    },
    /// Intact records after the last round end of a format 3 segment: the round was never
    /// completely written.
    #[error("records after the last round end (an incomplete round)")]
    IncompleteRound,
    /// A record read back by position is not the entry the index says is there.
    #[error("group {group}: record at this position is not entry {index}")]
    WrongEntry {
        /// The Raft group.
        group: u64,
        /// Index looked for.
        index: u64,
    },
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io { path: path.into(), source }
    }
}
