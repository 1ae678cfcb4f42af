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
//! The thread stops once the batcher is dropped and its queue is drained; it then releases the
//! store (the daemon's shutdown waits for that).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use quarry_store::{ObjectCommand, PgApply, Placed, PlacedOp, Store, StoreError};
use quarry_types::{ObjectOp, OpReply, PgId};

/// The store's open transaction is committed when no job came for this long after a round
/// (`quarry_store`'s lazy commits: reads then find the work committed, and an idle store
/// holds no uncommitted pages; an apply made outside this thread is committed after its next
/// round, or by the next read or checkpoint).
pub(crate) const IDLE_COMMIT: Duration = Duration::from_millis(5);

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
}

struct Inner {
    store: Arc<Store>,
    queue: Mutex<Queue>,
    /// Signalled when a job is queued or on shutdown.
    wake: Condvar,
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
            queue: Mutex::new(Queue { jobs: VecDeque::new(), shutdown: false }),
            wake: Condvar::new(),
        });
        let worker = inner.clone();
        std::thread::Builder::new().name("quarry-apply".into()).spawn(move || run(worker))?;
        Ok(ApplyBatcher { inner })
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
        let (reply, outcome) = oneshot::channel();
        let bytes = data_bytes(&commands);
        {
            let mut queue = lock(&self.inner.queue);
            assert!(!queue.shutdown, "apply submitted after the batcher was dropped");
            queue.jobs.push_back(Job { pg, commands, placed, pg_state, bytes, reply });
        }
        self.inner.wake.notify_one();
        outcome.await.map_err(|_| {
            StoreError::Io(std::io::Error::other("the apply thread stopped (it panicked)"))
        })
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
    let mut uncommitted = false;
    loop {
        // Applies made outside this thread (a PG's command-by-command retry, a snapshot's
        // installation) leave the transaction open too.
        uncommitted = uncommitted || inner.store.has_open_transaction();
        match next_round(&inner, uncommitted) {
            Next::Round(jobs) => {
                apply_round(&inner.store, jobs);
                uncommitted = true;
            }
            Next::Idle => {
                if let Err(error) = inner.store.commit_idle(Duration::ZERO) {
                    tracing::error!(%error, "apply thread: committing applied work failed");
                }
                uncommitted = false;
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
fn next_round(inner: &Inner, uncommitted: bool) -> Next {
    let mut queue = lock(&inner.queue);
    while queue.jobs.is_empty() {
        if queue.shutdown {
            return Next::Stop;
        }
        if uncommitted {
            let (next, waited) = inner
                .wake
                .wait_timeout(queue, IDLE_COMMIT)
                .unwrap_or_else(|poison| poison.into_inner());
            queue = next;
            if waited.timed_out() && queue.jobs.is_empty() && !queue.shutdown {
                return Next::Idle;
            }
        } else {
            queue = inner.wake.wait(queue).unwrap_or_else(|poison| poison.into_inner());
        }
    }
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
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store.redb")).unwrap());
        let batcher = Arc::new(ApplyBatcher::start(store.clone()).unwrap());
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

    /// Goal: a command failing inside a shared round fails alone; the other PGs apply.
    /// Method: one PG's batch carries a payload with a wrong crc (EINVAL for that command
    /// only) beside good batches of other PGs.
    #[test]
    fn a_failing_command_does_not_fail_other_pgs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store.redb")).unwrap());
        let batcher = Arc::new(ApplyBatcher::start(store.clone()).unwrap());
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
