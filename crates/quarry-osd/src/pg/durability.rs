//! Store checkpoints, coalesced. Applies commit to the store without fsync (the WAL is the
//! durability point); a checkpoint makes everything applied so far durable, after which Raft
//! may purge the log behind it. Many PGs ask for checkpoints (their snapshot builds, the
//! periodic worker): one fsync serves every request whose applies it covers.
//!
//! # Fail-stop
//! A failed checkpoint (the store's `fdatasync` or its durable commit) is never retried and
//! never returned to a caller: after a failed fsync the kernel may already have dropped the
//! dirty pages it could not write (and cleared the error), so a retry could "succeed" over
//! lost data, and Raft would then purge a WAL that is the only copy. Like the WAL's writer,
//! the OSD logs the error and aborts the process (`std::process::abort`); on restart the
//! store shows its last good checkpoint and the WAL replays the rest. Tests observe this with
//! a child process and the test-only switch `Durability::fail_next_checkpoint`.

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
    /// Test-only fault: the next checkpoint fails as if the store's fsync had.
    #[cfg(test)]
    fail_next: std::sync::atomic::AtomicBool,
}

impl Durability {
    pub(crate) fn new(store: Arc<Store>) -> Durability {
        Durability {
            store,
            applied_seq: AtomicU64::new(0),
            durable_seq: tokio::sync::Mutex::new(0),
            checkpoints: AtomicU64::new(0),
            #[cfg(test)]
            fail_next: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Test-only fault hook: makes the next checkpoint fail as a failed fsync would.
    #[cfg(test)]
    pub(crate) fn fail_next_checkpoint(&self) {
        self.fail_next.store(true, Ordering::SeqCst);
    }

    /// Runs one store checkpoint (fsync + durable commit) on a blocking thread; a failure
    /// does not return (see "Fail-stop").
    async fn run_checkpoint(&self) {
        let store = self.store.clone();
        #[allow(unused_mut)]
        let mut result = match tokio::task::spawn_blocking(move || store.checkpoint()).await {
            Ok(result) => result,
            Err(join) => Err(StoreError::Io(std::io::Error::other(join.to_string()))),
        };
        #[cfg(test)]
        if self.fail_next.swap(false, Ordering::SeqCst) {
            result = Err(StoreError::Io(std::io::Error::other("injected fsync failure (test)")));
        }
        if let Err(e) = result {
            fatal(&e);
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
    /// A failed checkpoint aborts the process (see "Fail-stop"); the `Result` is kept for
    /// callers' signatures and is always `Ok` when this returns.
    pub(crate) async fn ensure(&self, seq: u64) -> Result<(), StoreError> {
        assert!(seq <= self.applied_seq(), "asked for a checkpoint of applies not made yet");
        let mut durable = self.durable_seq.lock().await;
        if *durable >= seq {
            return Ok(());
        }
        // Every apply counted up to here has returned, so the checkpoint below covers it.
        let covered = self.applied_seq();
        self.run_checkpoint().await;
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
            self.run_checkpoint().await;
            return Ok(());
        }
        self.ensure(seq).await
    }
}

/// Logs a failed checkpoint and aborts the process (see "Fail-stop").
fn fatal(error: &StoreError) -> ! {
    tracing::error!(%error, "store checkpoint (fsync/durable commit) failed: aborting");
    eprintln!("quarry-osd: store checkpoint failed: {error}; aborting");
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    /// Set in the child process this test starts; names the fault to run.
    const CHILD_ENV: &str = "QUARRY_DURABILITY_CHILD";
    /// The directory the child keeps its store in: the parent's (an aborted child cleans
    /// nothing up; the parent's temporary directory goes when the test ends).
    const CHILD_DIR_ENV: &str = "QUARRY_DURABILITY_CHILD_DIR";
    const TEST_NAME: &str = "pg::durability::tests::failed_checkpoint_aborts_the_process";

    /// The child's side: a real store, one apply counted, then a checkpoint, failing when
    /// `inject` says so. Prints a marker if the checkpoint returned.
    fn child(inject: bool) {
        let dir = std::path::PathBuf::from(std::env::var_os(CHILD_DIR_ENV).unwrap());
        let store = Arc::new(Store::open(&dir.join("store.redb")).unwrap());
        let durability = Durability::new(store);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let seq = durability.note_apply();
            if inject {
                durability.fail_next_checkpoint();
            }
            let result = durability.ensure(seq).await;
            println!("CHECKPOINT RETURNED {result:?}");
        });
    }

    /// Runs this test's binary again as the child, with `fault` in its environment.
    fn run_child(fault: &str, dir: &std::path::Path) -> std::process::Output {
        Command::new(std::env::current_exe().unwrap())
            .env(CHILD_DIR_ENV, dir)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, fault)
            .output()
            .unwrap()
    }

    /// Goal: a failed store checkpoint (fsync / durable commit) stops the OSD process instead
    /// of being returned and retried. Method: a child process checkpoints a real store with
    /// the fault switch on; it must die of SIGABRT with the log line, never print the
    /// "returned" marker. Control: the same child without the fault returns normally, so the
    /// harness can tell the two apart.
    #[test]
    fn failed_checkpoint_aborts_the_process() {
        if let Ok(fault) = std::env::var(CHILD_ENV) {
            child(fault == "inject");
            return;
        }
        let control_dir = tempfile::tempdir().unwrap();
        let control = run_child("none", control_dir.path());
        let stdout = String::from_utf8_lossy(&control.stdout);
        assert!(control.status.success(), "control child failed: {control:?}");
        assert!(stdout.contains("CHECKPOINT RETURNED Ok(())"), "control stdout: {stdout}");

        let faulty_dir = tempfile::tempdir().unwrap();
        let faulty = run_child("inject", faulty_dir.path());
        let stdout = String::from_utf8_lossy(&faulty.stdout);
        let stderr = String::from_utf8_lossy(&faulty.stderr);
        assert!(!stdout.contains("CHECKPOINT RETURNED"), "checkpoint failure returned: {stdout}");
        assert_eq!(faulty.status.signal(), Some(SIGABRT), "status {:?}", faulty.status);
        assert!(
            stderr.contains("store checkpoint failed") && stderr.contains("injected fsync failure"),
            "stderr: {stderr}"
        );
    }

    /// SIGABRT's number on Linux.
    const SIGABRT: i32 = 6;
}
