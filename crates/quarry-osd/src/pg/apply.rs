//! The apply batcher: one thread applies the committed entries of many PGs in one store
//! transaction.
//!
//! With many PGs each PG's openraft apply usually carries a single entry. Instead of one store
//! call per entry, each PG's state machine hands its batch to [`ApplyBatcher::apply`] and
//! waits; the batcher thread takes everything queued (bounded by [`BATCH_JOBS_MAX`] and
//! [`BATCH_BYTES_MAX`]), applies it with one `Store::apply_many` and answers each PG with its
//! own replies. While it applies, the next PGs' batches queue up for the next round. The store
//! keeps its write transaction open across rounds and commits it every few rounds or
//! milliseconds (its "lazy commits"); when no job comes for [`IDLE_COMMIT`], this thread
//! commits it (`Store::commit_idle`).
//!
//! Guarantees kept from one-PG applies:
//! - Per-PG order: a PG's state machine waits for its apply before it submits the next, and the
//!   queue is FIFO, so a PG's entries reach the store in log order.
//! - `pg_state` atomicity: each PG's commands and its new `pg_state` are in the same
//!   transaction (`apply_many` writes them per PG).
//! - Isolation of failures: `apply_many` commits nothing when it fails, so a failed round of
//!   several PGs is retried PG by PG (`Store::apply`): one PG's corrupt object fails only that
//!   PG's apply (which then stops a replicated PG for repair or, with one voter, falls back
//!   to command-by-command: see `state_machine`).
//!
//! Inline applies: when the inline gate is open (the daemon's: a client op is alone,
//! `OpTracker::alone`, i.e. queue depth 1), nothing is queued and no apply runs, a small batch
//! (at most [`INLINE_BYTES_MAX`] of data) is applied by the calling task itself, blocking its
//! runtime worker for the apply (~50 µs for a 4 KiB write), instead of waking this thread and
//! being woken by it: there is nobody to share the transaction with, and on this kind of VM
//! each wake-up of an idle core costs ~20 µs. The `busy` flag keeps one apply at a time,
//! inline or threaded, so a batch queued meanwhile waits for the inline apply and takes the
//! next round: per-PG order and one transaction at a time stay as they were. Under load the
//! gate is shut and every batch goes through the thread's shared rounds (an idle-time rule
//! instead of the gate let the first batch after each WAL round go inline and cost 4 KiB
//! writes at queue depth 32 ~10% of their rate; so did a gate on "one op in flight now",
//! which a client at queue depth 32 answered in bursts passes now and then). An inline apply
//! leaves the transaction open like a round does; the thread commits it [`IDLE_COMMIT`] after
//! the last apply.
//!
//! The thread stops once the batcher is dropped and its queue is drained; it then releases the
//! store (the daemon's shutdown waits for that).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use quarry_store::{ObjectCommand, PgApply, Placed, PlacedOp, Store, StoreError};
use quarry_types::perf::TimeAvg;
use quarry_types::{ObjectOp, OpReply, PgId};

/// The store's open transaction is committed when no job came for this long after a round
/// (`quarry_store`'s lazy commits: reads then find the work committed, and an idle store
/// holds no uncommitted pages; an apply made outside this thread is committed after its next
/// round, or by the next read or checkpoint).
pub(crate) const IDLE_COMMIT: Duration = Duration::from_millis(5);

/// A batch with at most this many bytes of written data may be applied inline (module docs):
/// a larger one, which writes data file blocks too, would hold a runtime worker too long.
pub(crate) const INLINE_BYTES_MAX: u64 = 64 << 10;

/// Says whether a batch may be applied inline (module docs): the OSD's "a client op is
/// alone" (`OpTracker::alone`).
pub(crate) type InlineGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// A round applies at most this many PG batches.
pub(crate) const BATCH_JOBS_MAX: usize = 256;
/// A round applies at most this many bytes of written data (plus one PG batch).
pub(crate) const BATCH_BYTES_MAX: u64 = 32 << 20;

/// Placed writes of a batch's commands: (command, op, where) (`super::placer`); command
/// [`DROPPED`]: the placement of an entry applied without its command, freed with the batch
/// (`PgApply::dropped`).
pub(crate) type PlacedOps = Vec<(usize, usize, Placed)>;

/// The command index of a dropped placement in [`PlacedOps`].
pub(crate) const DROPPED: usize = usize::MAX;

/// What a PG gets back: its commands and their placed writes (for a command-by-command
/// retry) and the outcome.
pub(crate) type Outcome = (Vec<ObjectCommand>, PlacedOps, Result<Vec<OpReply>, StoreError>);

/// One PG's batch of commands.
struct Job {
    pg: PgId,
    commands: Vec<ObjectCommand>,
    placed: PlacedOps,
    pg_state: Vec<u8>,
    bytes: u64,
    reply: oneshot::Sender<Outcome>,
}

struct Queue {
    jobs: VecDeque<Job>,
    shutdown: bool,
    /// An apply (a thread round, an inline apply or the thread's idle commit) is running.
    busy: bool,
    /// When the last apply ended.
    idle_since: Instant,
    /// Applied work may be uncommitted: the thread's wait is timed (its idle commit).
    uncommitted: bool,
    /// The thread waits without a timeout (nothing was uncommitted when it went to sleep).
    asleep: bool,
}

struct Inner {
    store: Arc<Store>,
    queue: Mutex<Queue>,
    /// Signalled when a job is queued, an inline apply ends with jobs queued or the thread
    /// asleep, or on shutdown.
    wake: Condvar,
    /// Batches applied inline, and the thread's rounds (with their durations).
    inline_applies: AtomicU64,
    rounds: TimeAvg,
    /// PG batches the thread's rounds applied.
    round_jobs: AtomicU64,
    /// Commits of work left open that the thread made once no job came ([`IDLE_COMMIT`]).
    idle_commits: AtomicU64,
    /// Every [`ApplyBatcher::apply`], from the call to the answer (the wait for a round
    /// included): `perf dump`'s `quarry_apply.apply_latency`.
    applies: TimeAvg,
    /// Set once by the daemon ([`ApplyBatcher::set_inline_gate`]); none: no inline applies.
    inline_gate: std::sync::OnceLock<InlineGate>,
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A panic while holding the lock cannot leave the queue half-updated (push/pop only).
    queue.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Applies many PGs' committed entries in shared store transactions (see the module docs).
pub(crate) struct ApplyBatcher {
    inner: Arc<Inner>,
}

impl ApplyBatcher {
    /// Starts the batcher thread over `store`.
    pub(crate) fn start(store: Arc<Store>) -> std::io::Result<ApplyBatcher> {
        let inner = Arc::new(Inner {
            store,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                shutdown: false,
                busy: false,
                idle_since: Instant::now(),
                uncommitted: false,
                asleep: false,
            }),
            wake: Condvar::new(),
            inline_applies: AtomicU64::new(0),
            rounds: TimeAvg::new(),
            round_jobs: AtomicU64::new(0),
            idle_commits: AtomicU64::new(0),
            applies: TimeAvg::new(),
            inline_gate: std::sync::OnceLock::new(),
        });
        let worker = inner.clone();
        std::thread::Builder::new().name("quarry-apply".into()).spawn(move || run(worker))?;
        Ok(ApplyBatcher { inner })
    }

    /// Installs the inline gate (module docs); once (later calls are ignored).
    pub(crate) fn set_inline_gate(&self, gate: InlineGate) {
        let _ = self.inner.inline_gate.set(gate);
    }

    /// Batches applied inline and batches the thread took so far. The thread counts a
    /// round's batches before it applies them (and so before their callers are answered);
    /// its round count is recorded after the replies and would race a caller reading it.
    #[cfg(test)]
    pub(crate) fn applies_inline_and_threaded(&self) -> (u64, u64) {
        let inner = &self.inner;
        (inner.inline_applies.load(Ordering::Relaxed), inner.round_jobs.load(Ordering::Relaxed))
    }

    /// Idle commits so far, and whether the thread has nothing to do (no apply or commit
    /// running, nothing queued, nothing left uncommitted): it then sleeps until a job comes.
    #[cfg(test)]
    pub(crate) fn idle_commits_and_settled(&self) -> (u64, bool) {
        let queue = lock(&self.inner.queue);
        let settled = !queue.busy && !queue.uncommitted && queue.jobs.is_empty();
        (self.inner.idle_commits.load(Ordering::Relaxed), settled)
    }

    /// The `quarry_apply` section of `perf dump`: applies (one PG's committed entries each)
    /// and their latency from the call to the answer, the thread's rounds and their
    /// duration, the PG batches they took, the batches applied inline, and the commits the
    /// thread made once idle.
    pub(crate) fn perf_json(&self) -> serde_json::Value {
        let inner = &self.inner;
        serde_json::json!({
            "apply_latency": crate::optracker::time_avg(&inner.applies),
            "round_latency": crate::optracker::time_avg(&inner.rounds),
            "round_batches": inner.round_jobs.load(Ordering::Relaxed),
            "inline_batches": inner.inline_applies.load(Ordering::Relaxed),
            "idle_commits": inner.idle_commits.load(Ordering::Relaxed),
        })
    }

    /// Applies `commands` of `pg` (in log order) with its new `pg_state`, in a transaction
    /// shared with other PGs' batches; returns the commands and one reply per command.
    pub(crate) async fn apply(
        &self,
        pg: PgId,
        commands: Vec<ObjectCommand>,
        placed: PlacedOps,
        pg_state: Vec<u8>,
    ) -> Result<Outcome, StoreError> {
        let started = Instant::now();
        let outcome = self.apply_timed(pg, commands, placed, pg_state).await;
        self.inner.applies.record_since(started);
        outcome
    }

    /// [`ApplyBatcher::apply`] without its timing.
    async fn apply_timed(
        &self,
        pg: PgId,
        commands: Vec<ObjectCommand>,
        placed: PlacedOps,
        pg_state: Vec<u8>,
    ) -> Result<Outcome, StoreError> {
        let (reply, mut outcome) = oneshot::channel();
        let bytes = data_bytes(&commands);
        let job = Job { pg, commands, placed, pg_state, bytes, reply };
        let inline = {
            let mut queue = lock(&self.inner.queue);
            assert!(!queue.shutdown, "apply submitted after the batcher was dropped");
            let free = !queue.busy && queue.jobs.is_empty() && bytes <= INLINE_BYTES_MAX;
            if free && self.inner.inline_gate.get().is_some_and(|open| open()) {
                queue.busy = true;
                Some(job)
            } else {
                queue.jobs.push_back(job);
                None
            }
        };
        match inline {
            Some(job) => {
                let end = EndApply { inner: &self.inner, left_open: true };
                apply_round(&self.inner.store, vec![job]);
                drop(end);
                self.inner.inline_applies.fetch_add(1, Ordering::Relaxed);
                if self.inner.store.is_failed() {
                    stop_failed_store();
                }
                if let Ok(answer) = outcome.try_recv() {
                    return Ok(answer);
                }
            }
            None => self.inner.wake.notify_one(),
        }
        outcome.await.map_err(|_| {
            StoreError::Io(std::io::Error::other("the apply thread stopped (it panicked)"))
        })
    }
}

/// Ends an apply (a thread round, an inline apply or an idle commit) when dropped, also while
/// unwinding from a panic in it: clears `busy`, notes the time and whether the store's
/// transaction is left open (an apply leaves it open, an idle commit closes it; the store is
/// not asked here, under the queue's lock, where its writer lock could be held by a
/// checkpoint), and wakes the thread if jobs were queued meanwhile, it must stop, or it sleeps
/// with work now uncommitted.
struct EndApply<'a> {
    inner: &'a Inner,
    left_open: bool,
}

impl Drop for EndApply<'_> {
    fn drop(&mut self) {
        let mut queue = lock(&self.inner.queue);
        queue.busy = false;
        queue.idle_since = Instant::now();
        queue.uncommitted = self.left_open;
        if !queue.jobs.is_empty() || queue.shutdown || (queue.asleep && queue.uncommitted) {
            self.inner.wake.notify_one();
        }
    }
}

impl Drop for ApplyBatcher {
    fn drop(&mut self) {
        lock(&self.inner.queue).shutdown = true;
        self.inner.wake.notify_all();
    }
}

/// Bytes of object data the commands write (for the round bound).
fn data_bytes(commands: &[ObjectCommand]) -> u64 {
    commands
        .iter()
        .flat_map(|c| &c.ops)
        .map(|op| match op {
            ObjectOp::Write { data, .. } | ObjectOp::WriteFull { data } => data.len() as u64,
            _ => 0,
        })
        .sum()
}

/// The store's view of a job's placed writes: those of its commands, and the dropped ones.
fn placed_ops(placed: &PlacedOps) -> (Vec<PlacedOp<'_>>, Vec<&Placed>) {
    let (dropped, ops): (Vec<_>, Vec<_>) = placed.iter().partition(|p| p.0 == DROPPED);
    let ops = ops.into_iter().map(|(cmd, op, placed)| PlacedOp { cmd: *cmd, op: *op, placed });
    (ops.collect(), dropped.into_iter().map(|p| &p.2).collect())
}

/// The batcher thread: rounds until shut down and drained; when no job came for
/// [`IDLE_COMMIT`] after a round, it commits the store's open transaction.
fn run(inner: Arc<Inner>) {
    loop {
        match next_round(&inner) {
            Next::Round(jobs) => {
                let end = EndApply { inner: &inner, left_open: true };
                let started = Instant::now();
                inner.round_jobs.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                apply_round(&inner.store, jobs);
                inner.rounds.record_since(started);
                drop(end);
            }
            Next::Idle => {
                let end = EndApply { inner: &inner, left_open: false };
                if let Err(error) = inner.store.commit_idle(Duration::ZERO) {
                    tracing::error!(%error, "apply thread: committing applied work failed");
                }
                inner.idle_commits.fetch_add(1, Ordering::Relaxed);
                drop(end);
            }
            Next::Stop => break,
        }
        if inner.store.is_failed() {
            stop_failed_store();
        }
    }
    tracing::debug!("apply batcher stopped");
}

/// The store lost applies it had answered (a commit or the replay after a failed apply
/// failed: `quarry_store`'s `writer.rs`): the OSD stops at once, as on a failed checkpoint
/// (`durability.rs`, "Fail-stop"), instead of serving errors; its restart replays the log
/// from the last checkpoint.
fn stop_failed_store() -> ! {
    tracing::error!("the store lost answered applies (see the errors above): aborting");
    eprintln!("quarry-osd: the store lost answered applies; aborting");
    std::process::abort()
}

/// What the batcher thread does next.
enum Next {
    Round(Vec<Job>),
    /// Nothing came for [`IDLE_COMMIT`] since the last round.
    Idle,
    Stop,
}

/// Waits for jobs and takes them, up to the round bounds; `Idle` if `uncommitted` and none
/// came for [`IDLE_COMMIT`]; `Stop` once shut down and drained.
fn next_round(inner: &Inner) -> Next {
    // Applies made outside the batcher (a PG's command-by-command retry, a snapshot's
    // installation) leave the transaction open too. Asked before the queue's lock is taken.
    let open = inner.store.has_open_transaction();
    let mut queue = lock(&inner.queue);
    if open {
        queue.uncommitted = true;
    }
    while queue.jobs.is_empty() || queue.busy {
        if queue.shutdown && queue.jobs.is_empty() && !queue.busy {
            return Next::Stop;
        }
        if queue.uncommitted && !queue.busy {
            let quiet = queue.idle_since.elapsed();
            if quiet >= IDLE_COMMIT {
                queue.busy = true;
                return Next::Idle;
            }
            queue = inner
                .wake
                .wait_timeout(queue, IDLE_COMMIT - quiet)
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        } else {
            queue.asleep = true;
            queue = inner.wake.wait(queue).unwrap_or_else(|poison| poison.into_inner());
            queue.asleep = false;
        }
    }
    queue.busy = true;
    let mut jobs = Vec::new();
    let mut bytes = 0u64;
    while let Some(job) = queue.jobs.pop_front() {
        if !jobs.is_empty() && (jobs.len() >= BATCH_JOBS_MAX || bytes + job.bytes > BATCH_BYTES_MAX)
        {
            queue.jobs.push_front(job);
            break;
        }
        bytes += job.bytes;
        jobs.push(job);
    }
    Next::Round(jobs)
}

/// One transaction for every job; if it fails, each job alone (so a failure stays with its PG).
fn apply_round(store: &Store, jobs: Vec<Job>) {
    let ops: Vec<_> = jobs.iter().map(|job| placed_ops(&job.placed)).collect();
    let work: Vec<PgApply<'_>> = jobs
        .iter()
        .zip(&ops)
        .map(|(job, (ops, dropped))| PgApply {
            pg: job.pg,
            cmds: &job.commands,
            pg_state: &job.pg_state,
            placed: ops,
            dropped,
        })
        .collect();
    let result = store.apply_many(&work);
    drop(work);
    drop(ops);
    match result {
        Ok(replies) => {
            assert_eq!(replies.len(), jobs.len(), "the store returns one reply list per PG");
            for (job, replies) in jobs.into_iter().zip(replies) {
                let _ = job.reply.send((job.commands, job.placed, Ok(replies)));
            }
        }
        Err(error) if jobs.len() == 1 => {
            let job = jobs.into_iter().next().expect("one job");
            let _ = job.reply.send((job.commands, job.placed, Err(error)));
        }
        Err(error) => {
            tracing::debug!(pgs = jobs.len(), %error, "shared apply failed: applying PG by PG");
            for job in jobs {
                let (ops, dropped) = placed_ops(&job.placed);
                let work = PgApply {
                    pg: job.pg,
                    cmds: &job.commands,
                    pg_state: &job.pg_state,
                    placed: &ops,
                    dropped: &dropped,
                };
                let result = store.apply_many(&[work]).map(|mut all| all.pop().unwrap_or_default());
                drop((ops, dropped));
                let _ = job.reply.send((job.commands, job.placed, result));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use quarry_types::{OpOutput, Payload, SnapContext, SNAP_HEAD};

    fn write(name: &str, byte: u8) -> ObjectCommand {
        ObjectCommand {
            name: name.into(),
            snapc: SnapContext::default(),
            ops: vec![ObjectOp::WriteFull { data: Payload::new(Bytes::from(vec![byte; 4096])) }],
            mtime: (1, 0),
            reqid: None,
        }
    }

    /// A store in a temporary directory (kept while the first value lives) and a batcher.
    fn started() -> (tempfile::TempDir, Arc<Store>, Arc<ApplyBatcher>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store.redb")).unwrap());
        let batcher = Arc::new(ApplyBatcher::start(store.clone()).unwrap());
        (dir, store, batcher)
    }

    fn read(store: &Store, pg: PgId, name: &str) -> OpReply {
        let ops = [ObjectOp::Read { off: 0, len: 4096 }];
        store.read(pg, name, SNAP_HEAD, &ops).unwrap()
    }

    /// Goal: concurrent PGs' applies share transactions, and each PG gets its own replies,
    /// its own pg_state and its writes in order. Method: 32 PGs submit 20 batches each at
    /// once (each waits for the previous, as openraft does); count store commits; check every
    /// object holds the PG's last write and every pg_state the PG's last blob.
    #[test]
    fn concurrent_pgs_share_commits_and_keep_their_order() {
        const PGS: u32 = 32;
        const ROUNDS: u8 = 20;
        let (_dir, store, batcher) = started();
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        let commits_before = store.commits_since_checkpoint();
        runtime.block_on(async {
            let tasks: Vec<_> = (0..PGS)
                .map(|seed| {
                    let batcher = batcher.clone();
                    tokio::spawn(async move {
                        let pg = PgId { pool: 1, seed };
                        for round in 0..ROUNDS {
                            let commands = vec![write("a", round), write("b", round)];
                            let (back, _, result) =
                                batcher.apply(pg, commands, Vec::new(), vec![round]).await.unwrap();
                            assert_eq!(back.len(), 2);
                            let replies = result.unwrap();
                            assert_eq!(replies.len(), 2);
                            assert!(replies.iter().all(|r| matches!(r, OpReply::Ok(_))));
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
        let commits = store.commits_since_checkpoint() - commits_before;
        let applies = u64::from(PGS) * u64::from(ROUNDS);
        eprintln!("{applies} PG applies in {commits} commits");
        assert!(commits < applies / 2, "{commits} commits for {applies} applies");
        for seed in 0..PGS {
            let pg = PgId { pool: 1, seed };
            assert_eq!(store.pg_state(pg).unwrap(), Some(vec![ROUNDS - 1]));
            for name in ["a", "b"] {
                let OpReply::Ok(outputs) = read(&store, pg, name) else { panic!("read failed") };
                let Some(OpOutput::Data(payload)) = outputs.first() else { panic!("no data") };
                assert!(payload.data.iter().all(|&b| b == ROUNDS - 1), "pg {pg} {name}");
            }
        }
        drop(batcher);
        // The thread drops its store handle once the batcher is gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while Arc::strong_count(&store) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(Arc::strong_count(&store), 1, "the apply thread still holds the store");
    }

    /// Goal: with the gate open, a lone small batch is applied inline by the caller (not
    /// handed to the thread) with the same replies and effects, and the thread still commits
    /// the transaction the inline applies left open, [`IDLE_COMMIT`] later; a closed gate, or
    /// a batch above [`INLINE_BYTES_MAX`], goes to the thread. Method: sequential applies on a
    /// multi-thread runtime, each once the thread has settled, the counters, the object's
    /// data, the thread's idle commits and the open transaction.
    #[test]
    fn a_lone_small_batch_is_applied_inline() {
        let (_dir, store, batcher) = started();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let gate = open.clone();
        batcher.set_inline_gate(Arc::new(move || gate.load(Ordering::Relaxed)));
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        let pg = PgId { pool: 4, seed: 0 };
        let apply = |command: ObjectCommand, state: u8| {
            let (_, _, result) = runtime
                .block_on(batcher.apply(pg, vec![command], Vec::new(), vec![state]))
                .unwrap();
            assert!(matches!(result.unwrap()[0], OpReply::Ok(_)));
        };
        // Waits until the thread has committed what is open and sleeps: a lone apply then
        // finds nothing running (on a loaded machine an apply may otherwise meet the thread's
        // idle commit, which rightly sends it to the thread). Returns the idle commits.
        let settle = || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let (commits, settled) = batcher.idle_commits_and_settled();
                if settled {
                    return commits;
                }
                assert!(std::time::Instant::now() < deadline, "the apply thread never settled");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        for round in 0..10u8 {
            settle();
            apply(write("a", round), round);
        }
        assert_eq!(batcher.applies_inline_and_threaded(), (10, 0), "every lone apply inline");
        assert_eq!(store.pg_state(pg).unwrap(), Some(vec![9]));
        let OpReply::Ok(outputs) = read(&store, pg, "a") else { panic!("read failed") };
        let Some(OpOutput::Data(payload)) = outputs.first() else { panic!("no data") };
        assert!(payload.data.iter().all(|&b| b == 9));
        // An inline apply leaves its transaction open; the thread commits it once applies
        // stop (one more idle commit, nothing open after it).
        let commits = settle();
        apply(write("b", 1), 10);
        assert_eq!(batcher.applies_inline_and_threaded(), (11, 0));
        assert_eq!(settle(), commits + 1, "the thread did not commit the inline apply");
        assert!(!store.has_open_transaction(), "the inline apply was never committed");
        // Too large for inline, then a closed gate: the thread.
        let big = ObjectCommand {
            ops: vec![ObjectOp::WriteFull {
                data: Payload::new(Bytes::from(vec![7u8; INLINE_BYTES_MAX as usize + 4096])),
            }],
            ..write("big", 0)
        };
        settle();
        apply(big, 11);
        assert_eq!(batcher.applies_inline_and_threaded(), (11, 1));
        open.store(false, Ordering::Relaxed);
        settle();
        apply(write("a", 12), 12);
        assert_eq!(batcher.applies_inline_and_threaded(), (11, 2));
    }

    /// Goal: inline applies and the thread's rounds hand over without losing a batch (one
    /// queued while an inline apply runs is applied right after it) and keep each PG's order.
    /// Method: 16 PGs apply 200 batches each with pauses while the gate flips, so both paths
    /// run and meet; every task must finish within a bound (a lost wake-up hangs it), both
    /// paths must have been taken, and each object must hold its PG's last write.
    #[test]
    fn inline_and_threaded_applies_hand_over() {
        const PGS: u32 = 16;
        const ROUNDS: u32 = 200;
        let (_dir, store, batcher) = started();
        let flips = Arc::new(AtomicU64::new(0));
        let gate = flips.clone();
        // Open for every other call: both paths meet all the time.
        batcher.set_inline_gate(Arc::new(move || {
            gate.fetch_add(1, Ordering::Relaxed).is_multiple_of(2)
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let tasks: Vec<_> = (0..PGS)
                .map(|seed| {
                    let batcher = batcher.clone();
                    tokio::spawn(async move {
                        let pg = PgId { pool: 5, seed };
                        for round in 0..ROUNDS {
                            let pause = (round * 7919 + seed * 104_729) % 400;
                            tokio::time::sleep(Duration::from_micros(u64::from(pause))).await;
                            let command = write("o", (round % 251) as u8);
                            let state = round.to_le_bytes().to_vec();
                            let (_, _, result) =
                                batcher.apply(pg, vec![command], Vec::new(), state).await.unwrap();
                            assert!(matches!(result.unwrap()[0], OpReply::Ok(_)));
                        }
                    })
                })
                .collect();
            let all = async {
                for task in tasks {
                    task.await.unwrap();
                }
            };
            tokio::time::timeout(Duration::from_secs(60), all)
                .await
                .expect("an apply was never answered (lost wake-up)");
        });
        let (inline, rounds) = batcher.applies_inline_and_threaded();
        eprintln!("{} applies: {inline} inline, {rounds} on the thread", PGS * ROUNDS);
        assert!(inline > 0, "no apply ran inline");
        assert!(rounds > 0, "no apply ran on the thread");
        for seed in 0..PGS {
            let pg = PgId { pool: 5, seed };
            assert_eq!(store.pg_state(pg).unwrap(), Some((ROUNDS - 1).to_le_bytes().to_vec()));
            let OpReply::Ok(outputs) = read(&store, pg, "o") else { panic!("read failed") };
            let Some(OpOutput::Data(payload)) = outputs.first() else { panic!("no data") };
            assert!(payload.data.iter().all(|&b| b == ((ROUNDS - 1) % 251) as u8), "pg {pg}");
        }
    }

    /// Goal: a command failing inside a shared round fails alone; the other PGs apply.
    /// Method: one PG's batch carries a payload with a wrong crc (EINVAL for that command
    /// only) beside good batches of other PGs.
    #[test]
    fn a_failing_command_does_not_fail_other_pgs() {
        let (_dir, store, batcher) = started();
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        runtime.block_on(async {
            let mut bad = write("x", 1);
            bad.ops = vec![ObjectOp::WriteFull {
                data: Payload::with_crc(Bytes::from(vec![1u8; 4096]), 0),
            }];
            let tasks: Vec<_> = (0..8u32)
                .map(|seed| {
                    let batcher = batcher.clone();
                    let command = if seed == 3 { bad.clone() } else { write("x", 1) };
                    tokio::spawn(async move {
                        let pg = PgId { pool: 2, seed };
                        let (_, _, result) =
                            batcher.apply(pg, vec![command], Vec::new(), vec![9]).await.unwrap();
                        (seed, result.unwrap())
                    })
                })
                .collect();
            for task in tasks {
                let (seed, replies) = task.await.unwrap();
                let failed = matches!(replies[0], OpReply::Failed { .. });
                assert_eq!(failed, seed == 3, "pg seed {seed}: {replies:?}");
            }
        });
        for seed in 0..8u32 {
            assert_eq!(store.pg_state(PgId { pool: 2, seed }).unwrap(), Some(vec![9]));
        }
    }

    /// Goal: when a shared round fails (a corrupt chunk met by a read-modify-write), only the
    /// PG that met it gets the error (with its commands back, for the command-by-command
    /// fallback); the other PGs of the round apply. Method: damage a stored chunk behind the
    /// store's back (raw redb write), then run one round of three PGs, the middle one writing
    /// a partial chunk over the damaged one.
    #[test]
    fn a_failed_round_is_retried_pg_by_pg() {
        use redb::ReadableTable;
        const RAW_EXTENTS: redb::TableDefinition<&[u8; 24], &[u8]> =
            redb::TableDefinition::new("extents");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("store.redb");
        let damaged = PgId { pool: 3, seed: 1 };
        {
            let store = Store::open(&file).unwrap();
            store.apply(damaged, &[write("o", 5)], b"before").unwrap();
            store.checkpoint().unwrap();
        }
        {
            let db = redb::Database::create(&file).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(RAW_EXTENTS).unwrap();
                let (key, mut value) = {
                    let (k, v) = table.iter().unwrap().next().unwrap().unwrap();
                    (*k.value(), v.value().to_vec())
                };
                // A bit of chunk 0's stored crc32c (store format 4's extent row: kind u8,
                // count u16, last length u16, block u64, then a crc32c per chunk).
                value[14] ^= 0x08;
                table.insert(&key, value.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open(&file).unwrap();
        let partial = ObjectCommand {
            ops: vec![ObjectOp::Write { off: 10, data: Payload::new(Bytes::from_static(b"xy")) }],
            ..write("o", 0)
        };
        let mut receivers = Vec::new();
        let mut jobs = Vec::new();
        for (seed, command) in [(0, write("p", 1)), (1, partial), (2, write("q", 2))] {
            let (reply, receiver) = oneshot::channel();
            let pg = PgId { pool: 3, seed };
            jobs.push(Job {
                pg,
                commands: vec![command],
                placed: Vec::new(),
                pg_state: vec![7],
                bytes: 0,
                reply,
            });
            receivers.push(receiver);
        }
        apply_round(&store, jobs);
        for (seed, mut receiver) in receivers.into_iter().enumerate() {
            let (commands, _, result) = receiver.try_recv().expect("answered");
            assert_eq!(commands.len(), 1);
            let pg = PgId { pool: 3, seed: seed as u32 };
            if pg == damaged {
                assert!(matches!(result, Err(StoreError::Corrupt { .. })), "{result:?}");
                assert_eq!(store.pg_state(pg).unwrap(), Some(b"before".to_vec()));
            } else {
                assert!(matches!(result.unwrap()[0], OpReply::Ok(_)));
                assert_eq!(store.pg_state(pg).unwrap(), Some(vec![7]));
            }
        }
    }
}
