//! The store's error type: what can go wrong below the op level (disk, database, damaged data,
//! format). Op-level failures (ENOENT, EEXIST, ...) are not errors here: they are
//! `OpReply::Failed` values.

use std::path::PathBuf;

use quarry_types::PgId;

/// Why a store call failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error outside redb (export/import streams, creating the store directory).
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// redb reported an error (I/O, a corrupted database file, a lock held by another process).
    /// Boxed: redb's error is large and every store call returns this type.
    #[error("store database error: {0}")]
    Db(Box<redb::Error>),
    /// Stored data failed its checksum or is malformed. Logged with `tracing::error!` where it
    /// is detected; the OSD answers EIO and repairs the object from a peer.
    #[error("corrupt data in pg {pg} object {object:?}: {detail}")]
    Corrupt {
        /// The PG of the damaged object.
        pg: PgId,
        /// The object's name.
        object: String,
        /// What was wrong (which chunk, which crc).
        detail: String,
    },
    /// The file is a redb database but not a Quarry store.
    #[error("{path}: not a Quarry object store (no or unknown format marker)")]
    NotAStore {
        /// The database file.
        path: PathBuf,
    },
    /// The store was written by a newer Quarry whose format this build cannot read.
    #[error("{path}: store format version {found} is newer than this build supports ({supported}); upgrade quarry")]
    FormatTooNew {
        /// The database file.
        path: PathBuf,
        /// The version found on disk.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A PG export stream given to `import_pg` is malformed, truncated or fails its checksum.
    #[error("bad PG export stream: {reason}")]
    BadExport {
        /// What was wrong.
        reason: &'static str,
    },
    /// A PG export stream was written by a newer Quarry (its format version is above the one
    /// this build reads): the stream is not damaged; the importing OSD is too old.
    #[error("PG export stream format version {found} is newer than this build reads ({supported}); upgrade quarry")]
    ExportFormatTooNew {
        /// The version in the stream.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A PG export stream is of another PG than the one being imported.
    #[error("PG export is of pg {found}, not {expected}")]
    ExportPgMismatch {
        /// The PG `import_pg` was asked to replace.
        expected: PgId,
        /// The PG named in the stream.
        found: PgId,
    },
    /// [`crate::Store::place`] was given data that is not a non-empty run of whole 4 KiB
    /// chunks within the object size limit.
    #[error("cannot place {bytes} bytes: a placed write is whole 4 KiB chunks, at most the object size limit")]
    BadPlacement {
        /// The length given.
        bytes: u64,
    },
    /// A PG split found a child that already holds objects or a `pg_state` (`split_pg`).
    #[error("splitting pg {parent}: child pg {child} already exists on this store")]
    SplitChildExists {
        /// The PG being split.
        parent: PgId,
        /// The child found.
        child: PgId,
    },
    /// A PG split was asked to move an object to a PG that is not one of the children.
    #[error(
        "splitting pg {parent}: object {object:?} maps to seed {target}, which is not a child"
    )]
    SplitTarget {
        /// The PG being split.
        parent: PgId,
        /// The object.
        object: String,
        /// The seed its target function returned.
        target: u32,
    },
    /// A PG merge found an object of the source that the target holds too (`merge_pg`):
    /// two PGs never hold the same name, so the store is damaged; nothing changed.
    #[error("merging pg {merged} into {into}: both hold object {object:?}")]
    MergeCollision {
        /// The PG merged (the source).
        merged: PgId,
        /// The PG merged into (the target).
        into: PgId,
        /// The object.
        object: String,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {
        $(impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(redb::Error::from(e)))
            }
        })*
    };
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError
);
