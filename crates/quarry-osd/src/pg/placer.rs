//! Write-once for large client writes ([`quarry_raftlog::Placer`] over the OSD's store): when
//! a one-voter PG's entry is appended to the WAL (at proposal, in the PG's log order), the
//! payload of each large write op (at least `osd_write_once_min_bytes`, default 64 KiB, whole
//! 4 KiB chunks at a chunk boundary, at most [`PLACE_MAX`]) is placed in the store's data
//! file ([`quarry_store::Store::place`]) and the entry's record carries
//! [`PgCommand::ClientPlaced`]: the command without those payloads plus where they
//! are. The WAL's sync hook ([`quarry_store::Store::sync_placed`], installed at start)
//! makes the data durable before the record is written; the apply claims the blocks (the
//! rows take them: the data is written once, not into the log and again at apply). The
//! store's allocator is rebuilt at open with the placements of the entries above each PG's
//! applied index ([`placements_in_log`]).
//!
//! Only PGs whose applied membership is one voter and no learner place (size-1 pools):
//! replicated PGs keep whole entries in the log. Replication still works for entries placed
//! while a PG was alone (a learner added later): the Raft network client reads the payloads
//! back before sending ([`rehydrate`]), each 4 KiB chunk checked against the crc the entry
//! carries, so a peer never receives other data; an entry whose blocks were reused since it
//! was applied (its object overwritten, a checkpoint passed) fails that read instead, and the
//! call is reported unreachable (openraft retries; the learner then needs a snapshot: blocks
//! are reused only after a checkpoint, and the checkpoint worker then has a one-voter PG
//! snapshot and purge its log behind it, so the retry should find a snapshot to send; not
//! covered by a test). A peer refuses a `ClientPlaced` entry that reaches it anyway.
//!
//! A payload of at least 1 MiB that a client sends at queue depth 1 is usually placed before
//! its entry exists, while it arrives ([`super::preplace`]): the placer then takes that
//! placement instead of writing the payload ([`super::preplace::Preplaced::take`]); the
//! arguments below hold for it as written (its data is written before the entry is queued).
//!
//! `osd_write_once_min_bytes` (default [`crate::DEFAULT_WRITE_ONCE_MIN_BYTES`], 0 = off)
//! sets the smallest op placed; it changes at runtime (`ceph tell osd.N config set`): each
//! append reads it, and an entry is whole or placed on its own, so a change mid-stream mixes
//! both kinds in a log, which every reader handles.
//!
//! # Why it is safe
//! The failures that matter are losing an acknowledged write and returning wrong data. The
//! arguments, property by property (the tests that show each one fail when it is broken are
//! named):
//!
//! **(a) An acknowledged placed write survives power loss.** A write is acknowledged after
//! its entry is applied, which (one voter) follows the WAL's fdatasync of the round holding
//! the entry. The data is written to the data file in [`Placer::encode`], before `append`
//! queues the entry's record; the writer runs the sync hook ([`Store::sync_placed`]:
//! fdatasync of the data file when anything was placed since it last began) after it took
//! the round and *before* it writes the round's records: an unsynced round can reach the
//! disk in a power cut, and then its entries must not name data that is lost. The flag the
//! hook tests is set after the placed write returns, before the entry is queued, so either
//! the hook sees it, or an fdatasync that began after the write (a checkpoint's, or an
//! earlier hook's: `DataFile::sync` serialises them and tests its own flag under its lock)
//! covers it. A failing hook is fatal, as a failing WAL fdatasync is. After a crash the
//! entry is applied again from the log (see (d)); its blocks are checked against the crcs
//! the entry carries, so lost data is a refused apply (`StoreError::Corrupt`: the PG stops
//! and is repaired), never other data under the object. Tests:
//! `quarry-store/tests/powerloss_placed.rs` (240 cut points; without the hook 69/120 fail,
//! with it only before the fdatasync 2/40), `quarry-osd/tests/crash.rs` (process kills with
//! placed versions; without the hook an acknowledged version is lost).
//!
//! **(b) A truncated or never-applied entry's blocks are freed only when nothing can name
//! them, and are not leaked for good.** A placement is in the allocator's reserved set: not
//! free, not a row's. It leaves it (1) when the apply claims it (the rows take the blocks;
//! a failed or duplicate command frees them *with its batch*, i.e. pending until a
//! checkpoint makes that commit durable, like any freed block), or (2) through
//! [`Placer::release`], which the log store calls for the entries a truncation removes only
//! once the truncation record is durable (before that a crash brings the entry back, naming
//! its blocks). The reserved set is memory only: at open it is rebuilt from the log (see
//! (d)), so a placement whose entry is gone, applied or truncated is free space after a
//! restart. An entry applied without its command (its object moved out in a split) frees
//! its placements with the batch that applies it (`PgApply::dropped`), like a failed
//! command. Until a restart these stay reserved (space, not data, is lost, and only with a
//! rare event): a command the one-by-one retry skipped as corrupt (its blocks may be what
//! is broken), a placement whose append then failed (the WAL is stopping then anyway),
//! placed entries dropped by a snapshot install (a one-voter PG installs none). At open, a
//! placement that overlaps a durable row's blocks (impossible unless something is broken)
//! is not reserved at all (`DataFile::rebuild`): releasing or dropping it must never free
//! a row's block; its entry's apply is then refused as corrupt. Tests:
//! `a_released_placement_is_free_at_once`,
//! `a_failed_or_duplicate_command_frees_its_placement_and_a_bad_shape_or_crc_is_einval`,
//! `a_dropped_placement_is_freed_with_the_batch_that_passes_its_entry`,
//! `a_placement_named_at_open_over_a_rows_blocks_is_not_reserved` (quarry-store's
//! `tests/placed.rs`).
//!
//! **(c) A block claimed by an apply is not also reserved.** `DataFile::claim_reserved`
//! moves an extent from the reserved set to the open batch's claimed list under the
//! allocator's lock, only when it is reserved with that exact length; a batch that is
//! dropped puts it back, a committed one forgets it (its rows own it). A second claim, or a
//! claim of a released placement, is `Corrupt` (nothing applied), never a second owner.
//! Placements come only from free blocks (`DataFile::reserve`), so a reserved block is never
//! a row's either. Test: `a_placed_write_becomes_the_objects_data_without_a_second_write`
//! (claimed twice: refused).
//!
//! **(d) A restart reserves the placements of unapplied entries again.** The store is opened
//! with `StoreOptions::placements_at_open` = [`placements_in_log`]: every PG's durable
//! `pg_state` (applied index, in the same redb commit as the rows) against its log; the
//! placements of entries above the applied index are reserved before the allocator hands
//! out or punches anything (`DataFile::rebuild`), marked as written by an earlier run, so
//! their crcs are checked when claimed. Entries at or below the durable applied index were
//! applied durably: their rows own the blocks, or freed them durably. The blocks of an entry
//! applied only in memory before the crash are still its data: a block an apply freed waits
//! for the checkpoint that makes that commit durable, and that checkpoint also makes the
//! apply durable. Tests: `powerloss_placed` (placements not reserved at open: 89/120 fail),
//! `a_placement_named_at_open_stays_reserved_and_is_checked_when_claimed`.
//!
//! **(e) A read never sees a freed-and-reused block.** A placed overwrite writes its data
//! into blocks taken from the free list when it is appended; the object's rows still point
//! at the old blocks until the apply commits, and those are freed by that commit like any
//! overwrite's: pending until a checkpoint made the commit durable *and* every reader that
//! started before it has finished (`DataFile::register_reader`), only then punched and free.
//! So neither a read that overlaps the overwrite nor a crash back to the previous
//! checkpoint finds another write's data under a row. The only reads of placed blocks by
//! address are the apply's check (d) and [`rehydrate`], both crc-checked per 4 KiB chunk.
//! Test: `a_placed_overwrite_keeps_the_snapshots_blocks_and_only_freed_ones_are_placed_again`.
//!
//! **(f) Snapshots and clones keep their blocks.** The apply of a placed write runs the same
//! op code as any write (`Batch::exec`): the clone for a newer snap context is made first,
//! the placed blocks become the head's rows at the head's tag, and the older tag's rows (the
//! snapshot's blocks) are untouched; only the one whole-chunk run of the op takes the
//! placement (`put_run`). Test: the same.
//!
//! **(g) A payload corrupted before it was placed never becomes object data.** The OSD's op
//! check leaves large whole-chunk payloads' crcs to the store (`op::check`): the apply of a
//! placed write combines the placement's chunk crcs (computed from the bytes written) and
//! compares them with the client's crc of the payload; a mismatch fails the command with
//! EINVAL and frees the placement with the batch. Test:
//! `a_failed_or_duplicate_command_frees_its_placement_and_a_bad_shape_or_crc_is_einval`
//! (without the check: the corrupted write is applied, `Ok`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use openraft::EntryPayload;
use quarry_raftlog::{EntryCodec, Placer, Wal};
use quarry_store::{Placed, Store};
use quarry_types::{ObjectOp, Payload, PgId};

use super::apply::InlineGate;
use super::preplace::Preplaced;
use super::{group_id, pg_of_group, ClientCommand, PgCommand, PgRaftConfig, PgState, PlacedWrite};

/// Write ops of more than this many bytes stay in the log (the stand-in payload of a placed
/// op is a slice of a static zero buffer of this size).
pub(crate) const PLACE_MAX: usize = 16 << 20;

/// What a placed op's payload is in memory after decoding: zeros of its length, never read
/// (the apply takes the placed blocks). In `.bss`: no memory is spent on it.
static ZEROS: [u8; PLACE_MAX] = [0; PLACE_MAX];

/// The stand-in payload of a placed op of `len` bytes with the client's `crc`.
pub(crate) fn stand_in(len: usize, crc: u32) -> Payload {
    Payload::with_crc(Bytes::from_static(&ZEROS[..len.min(PLACE_MAX)]), crc)
}

/// Whether op `op` is placed (see the module docs) when ops of at least `min` bytes are
/// (`min` 0: none is).
fn placeable(op: &ObjectOp, min: usize) -> Option<&Payload> {
    if min == 0 {
        return None;
    }
    let (off, data) = match op {
        ObjectOp::Write { off, data } => (*off, data),
        ObjectOp::WriteFull { data } => (0, data),
        _ => return None,
    };
    let len = data.len();
    let whole = off.is_multiple_of(4096) && len.is_multiple_of(4096);
    (whole && (min.max(4096)..=PLACE_MAX).contains(&len)).then_some(data)
}

/// The store side of one PG's write-once path.
pub(crate) struct PgPlacer {
    store: Arc<Store>,
    /// The PG's applied membership is one voter and no learner (kept by its state machine).
    solo: Arc<AtomicBool>,
    /// `osd_write_once_min_bytes` (0: nothing is placed), changed at runtime by `ceph tell`.
    min_bytes: Arc<AtomicU64>,
    /// Payloads placed while they arrived ([`super::preplace`]).
    preplaced: Arc<Preplaced>,
    /// Open while a client op is alone (`OpTracker::alone`).
    lone_op: InlineGate,
}

impl PgPlacer {
    pub(crate) fn new(
        store: Arc<Store>,
        solo: Arc<AtomicBool>,
        min_bytes: Arc<AtomicU64>,
        preplaced: Arc<Preplaced>,
        lone_op: InlineGate,
    ) -> PgPlacer {
        PgPlacer { store, solo, min_bytes, preplaced, lone_op }
    }

    /// Places the large payloads of `command`; None if it has none (or placing failed: the
    /// entry then carries them, as before).
    fn place(&self, command: &ClientCommand) -> Option<PgCommand> {
        let min = usize::try_from(self.min_bytes.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        let mut placed: Vec<PlacedWrite> = Vec::new();
        let mut arrived = 0u64;
        for (i, op) in command.ops.iter().enumerate() {
            let Some(data) = placeable(op, min) else { continue };
            // Written while the request arrived: the placement is this payload's.
            if let Some(Placed { block, crcs }) = self.preplaced.take(&data.data) {
                placed.push(PlacedWrite { op: i as u32, block, crcs });
                arrived += 1;
                continue;
            }
            match self.store.place(&data.data) {
                Ok(Placed { block, crcs }) => {
                    placed.push(PlacedWrite { op: i as u32, block, crcs })
                }
                Err(error) => {
                    tracing::warn!(%error, "placing a large write failed: it goes into the log");
                    for p in &placed {
                        self.store.release_placed(&p.placed());
                    }
                    return None;
                }
            }
        }
        if placed.is_empty() {
            return None;
        }
        let counters = &self.preplaced;
        counters.placed_on_arrival.fetch_add(arrived, Ordering::Relaxed);
        counters.placed_at_append.fetch_add(placed.len() as u64 - arrived, Ordering::Relaxed);
        Some(PgCommand::ClientPlaced { command: command.clone(), placed })
    }
}

impl Placer<PgRaftConfig> for PgPlacer {
    fn encode(&self, data: &PgCommand, out: &mut Vec<u8>) {
        if let PgCommand::Client(command) = data {
            if self.solo.load(Ordering::Acquire) {
                if let Some(placed) = self.place(command) {
                    PgRaftConfig::encode_data(&placed, out);
                    return;
                }
            }
        }
        PgRaftConfig::encode_data(data, out);
    }

    fn release(&self, data: &PgCommand) {
        if let PgCommand::ClientPlaced { placed, .. } = data {
            for p in placed {
                self.store.release_placed(&p.placed());
            }
        }
    }

    /// A one-voter PG whose client op is alone: its round has nobody to share it
    /// and no replica to wait for (4 KiB writes at queue depth 1: ~330 → ~270 µs, with the
    /// inline apply; docs/benchmarks.md, "Tenth round").
    fn append_inline(&self) -> bool {
        self.solo.load(Ordering::Acquire) && (self.lone_op)()
    }
}

/// `command` with its placed payloads read back from `store` (each chunk checked against
/// its crc): what a peer is sent ([`PgCommand::ClientPlaced`] never leaves the OSD).
pub(crate) fn rehydrate(store: &Store, data: PgCommand) -> Result<PgCommand, String> {
    let PgCommand::ClientPlaced { mut command, placed } = data else {
        return Ok(data);
    };
    for p in &placed {
        let mut buf = vec![0u8; p.crcs.len() * 4096];
        store.read_placed(&p.placed(), &mut buf).map_err(|e| e.to_string())?;
        let Some(op) = command.ops.get_mut(p.op as usize) else {
            return Err(format!("placed op {} out of range", p.op));
        };
        match op {
            ObjectOp::Write { data, .. } | ObjectOp::WriteFull { data } => {
                data.data = Bytes::from(buf);
            }
            _ => return Err(format!("placed op {} is not a write", p.op)),
        }
    }
    Ok(PgCommand::Client(command))
}

/// The placements `(block, blocks)` of the entries in `wal` above each PG's applied index
/// (`states`: the store's `pg_state` blobs): what the store's allocator must keep reserved
/// at open ([`quarry_store::StoreOptions::placements_at_open`]). A group whose entries do not
/// read or decode is logged and skipped (it cannot start either).
pub(crate) fn placements_in_log(
    wal: &Arc<Wal>,
    states: &BTreeMap<PgId, Vec<u8>>,
) -> Vec<(u64, u64)> {
    let mut found = Vec::new();
    for group in wal.groups() {
        let pg = pg_of_group(group);
        if group_id(pg) != group {
            continue;
        }
        let applied = match states.get(&pg).map(|b| PgState::decode(b)) {
            Some(Ok(state)) => state.applied.map_or(0, |id| id.index),
            Some(Err(error)) => {
                tracing::error!(%pg, %error, "pg_state does not decode: its placed writes are not reserved");
                continue;
            }
            None => 0,
        };
        let log = wal.log_store::<PgRaftConfig>(group);
        let Some(last) = log.last_index() else { continue };
        if last <= applied {
            continue;
        }
        let entries = match log.read_blocking(applied + 1, last + 1) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::error!(%pg, %error, "reading the log for placed writes failed");
                continue;
            }
        };
        for entry in entries {
            if let EntryPayload::Normal(PgCommand::ClientPlaced { placed, .. }) = &entry.payload {
                found.extend(placed.iter().map(|p| (p.block, p.crcs.len() as u64)));
            }
        }
    }
    found
}
