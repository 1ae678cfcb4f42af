//! Store checkpoints, coalesced. Applies commit to the store without fsync (the WAL is the
//! durability point); a checkpoint makes everything applied so far durable, after which Raft
//! may purge the log behind it. Many PGs ask for checkpoints (their snapshot builds, the
//! periodic worker): one fsync serves every request whose applies it covers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quarry_store::{Store, StoreError};

/// Counts applies and checkpoints so a checkpoint is skipped when a later one already covers
/// the caller's applies.
pub(crate) struct Durability {
    store: Arc<Store>,
    /// Number of `Store::apply` calls that have returned (any PG).
    applied_seq: AtomicU64,
    /// The `applied_seq` value the last finished checkpoint covers. The mutex also keeps two
    /// checkpoints from running at once.
    durable_seq: tokio::sync::Mutex<u64>,
    /// Checkpoints actually run (for tests and logs).
    checkpoints: AtomicU64,
}

impl Durability {
    pub(crate) fn new(store: Arc<Store>) -> Durability {
        Durability {
            store,
            applied_seq: AtomicU64::new(0),
            durable_seq: tokio::sync::Mutex::new(0),
            checkpoints: AtomicU64::new(0),
        }
    }

    /// Records that a `Store::apply` call returned; returns the new sequence number.
    pub(crate) fn note_apply(&self) -> u64 {
        self.applied_seq.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The number of applies so far: a checkpoint covering it covers every apply that returned.
    pub(crate) fn applied_seq(&self) -> u64 {
        self.applied_seq.load(Ordering::Acquire)
    }

    /// True when applies happened since the last checkpoint.
    pub(crate) async fn dirty(&self) -> bool {
        *self.durable_seq.lock().await < self.applied_seq()
    }

    /// Number of checkpoints run.
    pub(crate) fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    /// Makes every apply up to `seq` durable, running a checkpoint unless one already did.
    pub(crate) async fn ensure(&self, seq: u64) -> Result<(), StoreError> {
        assert!(seq <= self.applied_seq(), "asked for a checkpoint of applies not made yet");
        let mut durable = self.durable_seq.lock().await;
        if *durable >= seq {
            return Ok(());
        }
        // Every apply counted up to here has returned, so the checkpoint below covers it.
        let covered = self.applied_seq();
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || store.checkpoint()).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(join) => return Err(StoreError::Io(std::io::Error::other(join.to_string()))),
        }
        assert!(covered >= *durable, "durable sequence goes backwards");
        *durable = covered;
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Checkpoints everything applied so far.
    pub(crate) async fn checkpoint_now(&self) -> Result<(), StoreError> {
        let seq = self.applied_seq();
        if seq == 0 {
            // Nothing applied by this process: still make what is on disk durable (start-up).
            let store = self.store.clone();
            return match tokio::task::spawn_blocking(move || store.checkpoint()).await {
                Ok(result) => result,
                Err(join) => Err(StoreError::Io(std::io::Error::other(join.to_string()))),
            };
        }
        self.ensure(seq).await
    }
}
