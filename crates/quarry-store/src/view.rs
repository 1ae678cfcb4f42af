//! The read view: one redb read transaction, with the tables a read uses already open, shared
//! by every read until the next commit.
//!
//! A small read used to begin its own read transaction and open five tables (each open is a
//! lookup in redb's table tree, by name): a tenth of the OSD's CPU per 4 KiB read
//! (docs/benchmarks.md, "Twelfth round"). Between two commits every read transaction sees
//! the same state, so reads now share one: [`ReadViews::get`] hands out the current view
//! while no commit happened since it was made, and a new one otherwise.
//!
//! The rules that keep a shared view as good as a read transaction of the reader's own:
//! - Every commit calls [`ReadViews::invalidate`] after redb's commit returns and *before*
//!   the data file files the commit's freed blocks under a new sequence number
//!   (`DataFile::commit_done`). A reader registers with the data file first and then asks
//!   for a view; so a reader that still gets a view made before a commit registered before
//!   that commit's sequence number, and the blocks the commit freed stay pending while it
//!   reads (`DataFile::register_reader`).
//! - A view is tagged with the generation read *before* its transaction began, and stored
//!   only if the generation is still that one (checked under the lock
//!   [`ReadViews::invalidate`] takes after bumping it): a view never outlives a commit it
//!   does not see, and a reader never gets a view older than the commits that finished before
//!   it asked.
//! - Invalidating drops the current view, so an old snapshot is not kept alive (redb cannot
//!   reuse pages a live read transaction may see) once its last reader is done.
//! - Whatever needs no read transaction open (`Database::compact`, closing the store) calls
//!   [`ReadViews::invalidate`] first.
//!
//! The views also own the object metadata cache (`metacache.rs`), whose coherence rests on
//! the same generation: a commit drops the entries of what it wrote
//! ([`ReadViews::commit_written`]) or all of them ([`ReadViews::invalidate`]) after the bump.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use quarry_types::PgId;
use redb::{Database, ReadOnlyTable, ReadTransaction, WriteTransaction};

use crate::format::{ExtentKey, EXTENTS, OBJECTS, OMAP, OMAP_HEADER, XATTRS};
use crate::metacache::{CachedObject, Lookup, MetaCache};
use crate::StoreError;

/// The objects a transaction wrote, per PG (the store's dirty set, `writer.rs`).
pub(crate) type Dirty = HashMap<PgId, HashSet<String>>;

/// A read transaction and the tables reads use, opened once.
pub(crate) struct ReadView {
    /// The generation of [`ReadViews`] read before the transaction began.
    pub generation: u64,
    pub objects: ReadOnlyTable<&'static [u8], &'static [u8]>,
    pub chunks: ReadOnlyTable<&'static ExtentKey, &'static [u8]>,
    pub xattrs: ReadOnlyTable<&'static [u8], &'static [u8]>,
    pub omap: ReadOnlyTable<&'static [u8], &'static [u8]>,
    pub omap_header: ReadOnlyTable<&'static [u8; 8], &'static [u8]>,
    /// Kept for the life of the view (the tables hold the snapshot too).
    _txn: ReadTransaction,
}

impl ReadView {
    fn open(txn: ReadTransaction, generation: u64) -> Result<ReadView, StoreError> {
        Ok(ReadView {
            generation,
            objects: txn.open_table(OBJECTS)?,
            chunks: txn.open_table(EXTENTS)?,
            xattrs: txn.open_table(XATTRS)?,
            omap: txn.open_table(OMAP)?,
            omap_header: txn.open_table(OMAP_HEADER)?,
            _txn: txn,
        })
    }
}

/// The current view and the commit generation (see the module docs).
pub(crate) struct ReadViews {
    generation: AtomicU64,
    current: Mutex<Option<Arc<ReadView>>>,
    meta: MetaCache,
}

impl ReadViews {
    /// Views with an object metadata cache of about `meta_bytes` (0: none).
    pub fn new(meta_bytes: usize) -> ReadViews {
        ReadViews {
            generation: AtomicU64::new(0),
            current: Mutex::new(None),
            meta: MetaCache::new(meta_bytes),
        }
    }

    /// The cached entry of object `name` of `pg`, or whether to make one (`metacache.rs`).
    /// A hit's rows are those overlapping `span`.
    pub fn cached(&self, pg: PgId, name: &str, span: &crate::metacache::Span) -> Lookup {
        self.meta.get(pg, name, span)
    }

    /// The metadata cache's counters and usage.
    pub fn cache_stats(&self) -> crate::metacache::MetaCacheStats {
        self.meta.stats()
    }

    /// Caches `entry`, read from `view`, unless a commit invalidated `view` meanwhile.
    pub fn cache(&self, view: &ReadView, pg: PgId, name: &str, entry: &CachedObject) {
        self.meta.insert_if_current(pg, name, entry, view.generation, || {
            self.generation.load(Ordering::SeqCst)
        });
    }

    /// A view that sees every commit that called [`ReadViews::invalidate`] before this call:
    /// the current one, or a new one made from `db`.
    pub fn get(&self, db: &Database) -> Result<Arc<ReadView>, StoreError> {
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some(view) = self.lock().as_ref() {
            if view.generation == generation {
                return Ok(Arc::clone(view));
            }
        }
        let view = Arc::new(ReadView::open(db.begin_read()?, generation)?);
        let mut current = self.lock();
        if self.generation.load(Ordering::SeqCst) == generation {
            *current = Some(Arc::clone(&view));
        }
        Ok(view)
    }

    /// A commit returned (or failed: its effect is unknown), or something needs every read
    /// transaction closed: no later [`ReadViews::get`] hands out a view made before, and the
    /// current one is dropped (its snapshot lives on only while readers hold it).
    /// The metadata cache is cleared.
    pub fn invalidate(&self) {
        self.bump();
        self.meta.clear();
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let old = self.lock().take();
        drop(old);
    }

    /// Commits `txn`, then [`ReadViews::invalidate`] (whatever the outcome).
    pub fn commit(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        let committed = txn.commit();
        self.invalidate();
        Ok(committed?)
    }

    /// Commits `txn`, which wrote no object but those the store's dirty set names (what
    /// `dirty` locks): as [`ReadViews::commit`], but the metadata cache drops only their
    /// entries (all of them if the commit failed). The set is locked after the commit (readers
    /// look at it) and handed back: the caller clears it.
    pub fn commit_written<'d>(
        &self,
        txn: WriteTransaction,
        dirty: impl FnOnce() -> MutexGuard<'d, Dirty>,
    ) -> Result<MutexGuard<'d, Dirty>, StoreError> {
        self.commit_no_objects(txn)?;
        let written = dirty();
        self.meta.remove_written(&written);
        Ok(written)
    }

    /// Commits `txn`, which wrote no object (a checkpoint's durable commit): as
    /// [`ReadViews::commit`], but the metadata cache stays (cleared if the commit failed).
    pub fn commit_no_objects(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        match txn.commit() {
            Ok(()) => {
                self.bump();
                Ok(())
            }
            Err(error) => {
                self.invalidate();
                Err(error.into())
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<ReadView>>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableDefinition;

    const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");

    fn db(dir: &std::path::Path) -> Database {
        let db = Database::create(dir.join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        for def in [T, XATTRS, OMAP] {
            txn.open_table(def).unwrap();
        }
        txn.open_table(EXTENTS).unwrap();
        txn.open_table(OMAP_HEADER).unwrap();
        txn.commit().unwrap();
        db
    }

    fn put(db: &Database, value: &[u8]) {
        let txn = db.begin_write().unwrap();
        txn.open_table(T).unwrap().insert(b"k".as_slice(), value).unwrap();
        txn.commit().unwrap();
    }

    fn value(view: &ReadView) -> Option<Vec<u8>> {
        view.objects.get(b"k".as_slice()).unwrap().map(|v| v.value().to_vec())
    }

    #[test]
    fn a_view_is_shared_until_a_commit_invalidates_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let views = ReadViews::new(0);
        put(&db, b"1");
        let a = views.get(&db).unwrap();
        let b = views.get(&db).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "no commit between: one view");
        put(&db, b"2");
        // Not invalidated: the old view is still handed out (what the commit sites prevent).
        assert_eq!(value(&views.get(&db).unwrap()).as_deref(), Some(b"1".as_slice()));
        views.invalidate();
        let c = views.get(&db).unwrap();
        assert_eq!(value(&c).as_deref(), Some(b"2".as_slice()));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(value(&a).as_deref(), Some(b"1".as_slice()), "a held view keeps its snapshot");
    }

    #[test]
    fn a_view_older_than_the_generation_is_not_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let views = ReadViews::new(0);
        // A view made before a commit that was not seen by it (stored as if a reader had
        // raced the invalidation): the next reader must not get it.
        let generation = views.generation.load(Ordering::SeqCst);
        let early = Arc::new(ReadView::open(db.begin_read().unwrap(), generation).unwrap());
        put(&db, b"new");
        views.invalidate();
        *views.lock() = Some(early);
        let next = views.get(&db).unwrap();
        assert_eq!(value(&next).as_deref(), Some(b"new".as_slice()), "a stale view was handed out");
    }

    #[test]
    fn invalidating_closes_the_last_read_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = db(dir.path());
        let views = ReadViews::new(0);
        views.get(&db).unwrap();
        views.invalidate();
        // Compaction refuses to run while any read transaction is open.
        db.compact().unwrap();
    }
}
