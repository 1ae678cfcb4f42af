//! The store's one writer: the write transaction applies share until it is committed.
//!
//! # Lazy commits
//! An apply ([`Store::apply_many`]) does not commit its redb transaction: the transaction
//! stays open and the next applies add to it, and it is committed (non-durably, as before)
//! only when it has carried [`COMMIT_ROUNDS`] applies or [`COMMIT_BYTES`] of command data,
//! when it is `StoreOptions::commit_age` old (default [`COMMIT_AGE`]) at the end of an
//! apply, when the apply thread finds nothing to do ([`Store::commit_idle`]), or when
//! something must see it:
//! - a read of an object the open transaction wrote ([`Store::read`] and the per-object
//!   queries: the transaction keeps the names it wrote, and a read of another object reads
//!   the last commit, which holds that object's latest state);
//! - every other read (listings, usage, `pg_state`, the duplicate table, exports);
//! - every other writer (checkpoints, snapshot trims, splits, merges, PG removal and import,
//!   space figures): each takes the writer and commits the open transaction first.
//!
//! The cost moves to the readers that need a commit: a read of an object written in the last
//! few milliseconds (or a listing, a usage query) waits for the apply in progress (the
//! writer's lock) and then pays the commit the applies no longer pay each.
//!
//! Why: a redb commit costs ~100 µs of CPU whatever it carries and writes every page the
//! transaction dirtied; consecutive applies dirty the same pages (the PG's `pg_state` and
//! usage rows, the duplicate table's leaves, the branches above them), so one commit for
//! many applies writes each such page once (docs/benchmarks.md, "Seventh round").
//!
//! Durability is unchanged: a non-durable commit was never durable (the Raft log is the
//! durability point, a checkpoint makes applies durable), and a checkpoint commits the open
//! transaction before its durable commit. A crash loses the open transaction as it lost the
//! non-durable commits: the store reopens at its last checkpoint and the log replays.
//!
//! # A failed apply
//! An apply that fails ([`StoreError`]: a corrupt chunk met by a read-modify-write, an I/O
//! error) leaves its partial effects in the transaction, so the transaction is dropped,
//! with the earlier applies it carried, which were answered already. Their inputs are kept
//! (owned copies, [`KeptApply`]) for that case: they are applied again, in order, in a new
//! transaction, which is committed at once; apply is deterministic, so they reach the state
//! (and the replies) they had. Then the failed apply returns its error, as before (the OSD
//! retries a failed round PG by PG). If that replay or any commit of answered applies fails,
//! or a panic interrupts an apply (where panics unwind: tests), the store is *failed*: every
//! later call returns an error ([`Store::is_failed`]; the OSD's apply thread then stops the
//! process, and its restart replays the log from the last checkpoint).
//!
//! A read that runs on an async runtime's thread ([`Store::try_read_cached`]) never commits:
//! it declines when the object has uncommitted work.

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use quarry_types::{ObjectOp, OpReply, PgId};
use redb::{Durability, ReadTransaction, WriteTransaction};

use crate::{apply, datafile, ObjectCommand, PgApply, Placed, PlacedOp, Store, StoreError};

/// An open transaction is committed once it carried this many applies...
pub(crate) const COMMIT_ROUNDS: usize = 64;
/// ...or this many bytes of command data (payloads, xattrs, omap: the kept copies hold
/// them)...
pub(crate) const COMMIT_BYTES: u64 = 16 << 20;
/// ...or, at the end of an apply, once it is this old (the default of
/// `StoreOptions::commit_age`).
pub(crate) const COMMIT_AGE: Duration = Duration::from_millis(20);

/// One PG's part of an apply, owned: kept while its transaction is open, for a replay.
struct KeptApply {
    pg: PgId,
    cmds: Vec<ObjectCommand>,
    pg_state: Vec<u8>,
    placed: Vec<(usize, usize, Placed)>,
    dropped: Vec<Placed>,
}

impl KeptApply {
    fn keep(work: &PgApply<'_>) -> KeptApply {
        KeptApply {
            pg: work.pg,
            cmds: work.cmds.to_vec(),
            pg_state: work.pg_state.to_vec(),
            placed: work.placed.iter().map(|p| (p.cmd, p.op, p.placed.clone())).collect(),
            dropped: work.dropped.iter().map(|&p| p.clone()).collect(),
        }
    }
}

/// The open write transaction and what it carries.
struct Open {
    txn: WriteTransaction,
    /// The applies it carries, in order, for a replay.
    kept: Vec<Vec<KeptApply>>,
    since: Instant,
    bytes: u64,
    /// The per-PG rows its applies changed, written when it commits.
    rows: apply::PgRows,
}

/// The writer's state, under [`Store`]'s `writer` lock.
#[derive(Default)]
pub(crate) struct Writer {
    open: Option<Open>,
    /// Answered applies were lost (see the module docs): every call fails from now on.
    failed: Option<String>,
}

/// Held while a transaction of the store is being written: by an apply, or by another writer
/// after it committed the open transaction ([`Store::exclusive`]).
pub(crate) struct WriterGuard<'a> {
    _held: MutexGuard<'a, Writer>,
}

fn failed_error(why: &str) -> StoreError {
    StoreError::Io(std::io::Error::other(format!(
        "the store failed earlier and must be reopened: {why}"
    )))
}

/// Bytes of data the commands write (`bytes_since_checkpoint`).
fn written_bytes(work: &[PgApply<'_>]) -> u64 {
    work.iter()
        .flat_map(|w| w.cmds)
        .flat_map(|c| &c.ops)
        .map(|op| match op {
            ObjectOp::Write { data, .. } | ObjectOp::WriteFull { data } => data.len() as u64,
            _ => 0,
        })
        .sum()
}

/// Bytes the kept copies of the commands hold or share (payloads, xattrs, omap, method
/// inputs, names), for [`COMMIT_BYTES`].
fn kept_bytes(work: &[PgApply<'_>]) -> u64 {
    work.iter()
        .flat_map(|w| w.cmds)
        .map(|c| c.name.len() as u64 + c.ops.iter().map(ObjectOp::data_bytes).sum::<u64>())
        .sum()
}

impl Store {
    fn writer(&self) -> MutexGuard<'_, Writer> {
        match self.writer.lock() {
            Ok(writer) => writer,
            Err(poison) => {
                // A panic while the lock was held (an apply, only where panics unwind: the
                // daemon's builds abort) may have left part of a command in the open
                // transaction: it is dropped, never committed, and the answered applies in
                // it are lost, so the store is failed.
                self.writer.clear_poison();
                let mut writer = poison.into_inner();
                if let Some(open) = writer.open.take() {
                    drop(open.txn);
                    self.data.abort();
                    self.dup_memory.forget_all();
                    self.fail(&mut writer, "a panic interrupted an apply".to_string());
                }
                writer
            }
        }
    }

    fn dirty(&self) -> MutexGuard<'_, crate::view::Dirty> {
        self.dirty.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Marks the store failed: answered applies were lost (see the module docs).
    fn fail(&self, writer: &mut Writer, why: String) {
        tracing::error!(path = %self.path.display(), "store failed, it must be reopened: {why}");
        writer.failed = Some(why);
        self.failed.store(true, Ordering::Release);
    }

    /// Commits the open transaction, if any (non-durably). A failure loses answered applies:
    /// the store is failed from then on.
    fn commit_open(&self, writer: &mut Writer) -> Result<(), StoreError> {
        if let Some(why) = &writer.failed {
            return Err(failed_error(why));
        }
        let Some(Open { txn, mut rows, .. }) = writer.open.take() else {
            return Ok(());
        };
        // The duplicate table's pending entries go into the transaction as one row per PG
        // (`dups.rs`). The read views are invalidated before the data file files the frees
        // under a new sequence number (`view.rs`).
        // The objects it wrote stay in the dirty set until the metadata cache dropped their
        // entries (`metacache.rs`).
        let committed = rows
            .write(&txn)
            .and_then(|()| self.dup_memory.flush(&txn))
            .and_then(|()| self.views.commit_written(txn, || self.dirty()));
        match committed {
            Ok(mut dirty) => {
                self.data.commit_done();
                dirty.clear();
                Ok(())
            }
            Err(error) => {
                self.data.abort();
                self.dup_memory.forget_all();
                self.fail(writer, format!("committing applied work failed: {error}"));
                Err(error)
            }
        }
    }

    /// Takes the writer with no transaction open: the caller may begin its own write
    /// transaction while it holds the guard.
    pub(crate) fn exclusive(&self) -> Result<WriterGuard<'_>, StoreError> {
        let mut writer = self.writer();
        self.commit_open(&mut writer)?;
        Ok(WriterGuard { _held: writer })
    }

    /// [`Store::exclusive`], then a new write transaction (the guard first: it must outlive
    /// the transaction).
    pub(crate) fn begin_write(&self) -> Result<(WriterGuard<'_>, WriteTransaction), StoreError> {
        let guard = self.exclusive()?;
        let txn = self.db().begin_write()?;
        Ok((guard, txn))
    }

    /// Commits the open transaction, if any: what a reader calls before it reads anything
    /// the open transaction may have written.
    pub fn settle(&self) -> Result<(), StoreError> {
        let mut writer = self.writer();
        self.commit_open(&mut writer)
    }

    /// A read transaction that sees every apply that returned.
    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.settle()?;
        Ok(self.db().begin_read()?)
    }

    /// A read transaction that sees every apply that returned, as far as object `name` of
    /// `pg` is concerned: the open transaction is committed only if it wrote that object.
    pub(crate) fn begin_read_object(
        &self,
        pg: PgId,
        name: &str,
    ) -> Result<ReadTransaction, StoreError> {
        self.ready_to_read(pg, name)?;
        Ok(self.db().begin_read()?)
    }

    /// [`Store::begin_read_object`], but the shared read view (`view.rs`) instead of a read
    /// transaction of the caller's own.
    pub(crate) fn read_view(
        &self,
        pg: PgId,
        name: &str,
    ) -> Result<std::sync::Arc<crate::view::ReadView>, StoreError> {
        self.ready_to_read(pg, name)?;
        self.views.get(self.db())
    }

    /// Commits the open transaction if it wrote object `name` of `pg`; refuses if the store
    /// failed.
    fn ready_to_read(&self, pg: PgId, name: &str) -> Result<(), StoreError> {
        if self.has_uncommitted(pg, name) {
            if datafile::is_cached_only() {
                // A read that must not wait (`Store::try_read_cached`) does not commit.
                return Err(StoreError::Io(std::io::ErrorKind::WouldBlock.into()));
            }
            self.settle()
        } else if self.is_failed() {
            // Without the writer's lock (an apply may hold it): the reason is logged.
            Err(failed_error("an earlier commit or replay failed (see the log)"))
        } else {
            Ok(())
        }
    }

    /// Whether the open transaction wrote object `name` of `pg` (a read of it would commit).
    pub fn has_uncommitted(&self, pg: PgId, name: &str) -> bool {
        self.dirty().get(&pg).is_some_and(|names| names.contains(name))
    }

    /// Commits the open transaction if it is at least `age` old: the apply thread calls this
    /// when it has nothing else to do, so that an idle store does not keep applied work (and
    /// its memory) uncommitted. Returns whether it committed.
    pub fn commit_idle(&self, age: Duration) -> Result<bool, StoreError> {
        let mut writer = self.writer();
        match &writer.open {
            Some(open) if open.since.elapsed() >= age => {
                self.commit_open(&mut writer)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Whether a transaction is open (applied work not committed yet).
    pub fn has_open_transaction(&self) -> bool {
        self.writer().open.is_some()
    }

    /// Whether the store failed (answered applies were lost: see `writer.rs`): every call
    /// fails from now on, and the daemon must stop (its restart replays the log).
    pub fn is_failed(&self) -> bool {
        if self.writer.is_poisoned() {
            // Its clean-up (in `writer`) decides.
            drop(self.writer());
        }
        self.failed.load(Ordering::Acquire)
    }

    /// [`Store::apply`] for several PGs in one transaction, which is where small-write
    /// throughput comes from. The transaction stays open for the next applies (see the module
    /// docs of `writer`): what this apply wrote is visible to every read that starts after it
    /// returns, durable after the next checkpoint. Returns the replies per PG, in order. An
    /// `Err` leaves nothing of this call's commands (earlier applies stay).
    pub fn apply_many(&self, work: &[PgApply<'_>]) -> Result<Vec<Vec<OpReply>>, StoreError> {
        let mut writer = self.writer();
        if let Some(why) = &writer.failed {
            return Err(failed_error(why));
        }
        if writer.open.is_none() {
            let mut txn = self.db().begin_write()?;
            txn.set_durability(Durability::None);
            let rows = apply::PgRows::default();
            writer.open =
                Some(Open { txn, kept: Vec::new(), since: Instant::now(), bytes: 0, rows });
        }
        {
            let mut dirty = self.dirty();
            for item in work {
                let names = dirty.entry(item.pg).or_default();
                for cmd in item.cmds {
                    if !names.contains(&cmd.name) {
                        names.insert(cmd.name.clone());
                    }
                }
            }
        }
        let open = writer.open.as_mut().expect("opened above");
        match self.apply_in(&open.txn, work, &mut open.rows) {
            Ok(replies) => {
                let bytes = written_bytes(work);
                open.bytes += kept_bytes(work);
                open.kept.push(work.iter().map(KeptApply::keep).collect());
                self.commits_since_checkpoint.fetch_add(1, Ordering::Relaxed);
                self.bytes_since_checkpoint.fetch_add(bytes, Ordering::Relaxed);
                if open.kept.len() >= COMMIT_ROUNDS
                    || open.bytes >= COMMIT_BYTES
                    || open.since.elapsed() >= self.commit_age
                {
                    self.commit_open(&mut writer)?;
                }
                Ok(replies)
            }
            Err(error) => {
                let open = writer.open.take().expect("open");
                drop(open.txn);
                self.data.abort();
                // The duplicate table's memory holds the dropped transaction's entries.
                self.dup_memory.forget_all();
                if !open.kept.is_empty() {
                    if let Err(lost) = self.replay(&mut writer, open.kept) {
                        // Not this apply's error: its caller must not take it for its own
                        // (a corrupt object of another PG).
                        tracing::error!(%error, "store: the apply that failed first");
                        return Err(StoreError::Io(std::io::Error::other(format!(
                            "the store failed: an apply failed ({error}) and applying the \
                             answered applies before it again failed too ({lost})"
                        ))));
                    }
                } else {
                    self.dirty().clear();
                }
                Err(error)
            }
        }
    }

    /// Applies `kept` (the answered applies of a dropped transaction) again in a new
    /// transaction and commits it; a failure fails the store (see the module docs).
    fn replay(&self, writer: &mut Writer, kept: Vec<Vec<KeptApply>>) -> Result<(), StoreError> {
        let replayed = (|| {
            let mut txn = self.db().begin_write()?;
            txn.set_durability(Durability::None);
            let mut rows = apply::PgRows::default();
            for round in &kept {
                let ops: Vec<(Vec<PlacedOp<'_>>, Vec<&Placed>)> = round
                    .iter()
                    .map(|k| {
                        let ops = k.placed.iter().map(|(cmd, op, placed)| PlacedOp {
                            cmd: *cmd,
                            op: *op,
                            placed,
                        });
                        (ops.collect(), k.dropped.iter().collect())
                    })
                    .collect();
                let work: Vec<PgApply<'_>> = round
                    .iter()
                    .zip(&ops)
                    .map(|(k, (placed, dropped))| PgApply {
                        pg: k.pg,
                        cmds: &k.cmds,
                        pg_state: &k.pg_state,
                        placed,
                        dropped,
                    })
                    .collect();
                self.apply_in(&txn, &work, &mut rows)?;
            }
            Ok::<_, StoreError>((txn, rows))
        })();
        let (txn, rows) = match replayed {
            Ok(replayed) => replayed,
            Err(error) => {
                self.data.abort();
                self.dup_memory.forget_all();
                self.fail(writer, format!("applying answered work again failed: {error}"));
                return Err(error);
            }
        };
        writer.open = Some(Open { txn, kept, since: Instant::now(), bytes: 0, rows });
        tracing::warn!(path = %self.path.display(),
            "store: an apply failed; the applies before it in its transaction were applied again");
        self.commit_open(writer)
    }

    /// Applies `work` in `txn` (one batch of the data file's allocator: the caller commits
    /// or aborts it with the transaction), its per-PG rows kept in `rows`.
    fn apply_in(
        &self,
        txn: &WriteTransaction,
        work: &[PgApply<'_>],
        rows: &mut apply::PgRows,
    ) -> Result<Vec<Vec<OpReply>>, StoreError> {
        let mut all = Vec::with_capacity(work.len());
        let mut batch = apply::Batch::open(
            txn,
            &self.data,
            &self.dup_memory,
            self.methods.as_deref(),
            self.dups_per_pg,
            rows,
        )?;
        for item in work {
            batch.begin_pg(item.pg);
            let mut replies = Vec::with_capacity(item.cmds.len());
            for (i, cmd) in item.cmds.iter().enumerate() {
                batch.set_placed(item.placed.iter().filter(|p| p.cmd == i));
                replies.push(batch.apply_command(cmd)?);
            }
            batch.drop_placed(item.dropped);
            batch.end_pg(item.pg_state)?;
            all.push(replies);
        }
        batch.finish()?;
        Ok(all)
    }
}
