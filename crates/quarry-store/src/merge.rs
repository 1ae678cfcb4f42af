//! Merging a PG into another ([`Store::merge_pg`]): the rows that move when a pool's
//! `pg_num` shrinks and the last PG (the source) is folded into its split parent (the
//! target), the inverse of [`Store::split_pg`]. Owns no table of its own and changes no
//! format: it rewrites rows of the existing tables in one transaction.
//!
//! What moves, for every object of the source: its `objects` row (the key is `pool ++ seed ++
//! name`, re-keyed to the target; the record is unchanged) and its `snap_objects` rows (keyed
//! by PG too). Data, extents, xattrs, omap and `object_snaps` are keyed by the internal
//! object id and stay where they are. Per-PG rows: `pg_usage` is added to the target's;
//! duplicate-table rows are appended after the target's with new consecutive sequence
//! numbers (a reqid the target already has, as a split copies the table to both sides, keeps
//! the target's row); `purged_snaps` becomes the *intersection* of both PGs' (a snapshot is
//! purged in a PG when none of its objects has a version of it: after the merge that holds
//! only if it held in both, and recording more would leave the source's clones untrimmed
//! for good; Ceph's `merge_from` keeps the target's info, but Ceph tracks purged snapshots
//! at the monitor since Octopus, which Quarry does not); the target's `pg_state` becomes the
//! caller's and every row of the source is gone (its `pg_state` too). All in one
//! transaction: a crash leaves the store either before the merge or after it. An object of
//! the source whose key the target holds too is an error and changes nothing (two PGs never
//! hold the same name: that store is damaged, and the caller stops rather than guess).

use std::collections::BTreeSet;

use quarry_types::PgId;
use redb::{Durability, ReadableTable};

use crate::dups;
use crate::format::{
    object_key, pg_key, pg_key_end, purged_key, seal, seal_usage, unseal_usage, ObjectRecord,
    DUP_LOG, OBJECTS, PG_STATE, PG_USAGE, PURGED_SNAPS, SNAP_OBJECTS,
};
use crate::read::Ctx;
use crate::{pg_corrupt, Store, StoreError};

/// What a merge moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Object records moved to the target.
    pub objects: u64,
    /// Head bytes of the objects moved (the sum of their sizes).
    pub bytes: u64,
    /// Duplicate-table rows appended to the target's.
    pub dups: u64,
}

impl Store {
    /// Merges `source` into `target` (same pool, different seeds): every row of the source
    /// moves or is folded as the module docs say, and the target's `pg_state` becomes
    /// `target_state`. One transaction (committed like an apply, with `Durability::None`: the
    /// merge is a log entry, replayed after a crash). A source object whose name the target
    /// holds too is [`StoreError::MergeCollision`] and changes nothing.
    pub fn merge_pg(
        &self,
        source: PgId,
        target: PgId,
        target_state: &[u8],
    ) -> Result<MergeStats, StoreError> {
        assert!(
            source.pool == target.pool && source.seed != target.seed,
            "merge of {source} into {target}: same pool, two PGs"
        );
        let (_writer, mut txn) = self.begin_write()?;
        txn.set_durability(Durability::None);
        let mut stats = MergeStats::default();
        {
            let mut objects = txn.open_table(OBJECTS)?;
            let mut moving: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            {
                let start = pg_key(source);
                let range = match pg_key_end(source) {
                    Some(end) => objects.range(start.as_slice()..end.as_slice())?,
                    None => objects.range(start.as_slice()..)?,
                };
                for item in range {
                    let (key, raw) = item?;
                    let name = &key.value()[12..];
                    let lossy = String::from_utf8_lossy(name).into_owned();
                    let ctx = Ctx { pg: source, name: &lossy };
                    let record = ObjectRecord::decode(raw.value())
                        .map_err(|why| ctx.corrupt(format!("object record: {why}")))?;
                    let head = record.head();
                    if head.exists {
                        stats.bytes += head.size;
                    }
                    stats.objects += 1;
                    moving.push((name.to_vec(), raw.value().to_vec()));
                }
            }
            let mut key = Vec::new();
            for (name, _) in &moving {
                object_key(target, name, &mut key);
                if objects.get(key.as_slice())?.is_some() {
                    let object = String::from_utf8_lossy(name).into_owned();
                    return Err(StoreError::MergeCollision {
                        merged: source,
                        into: target,
                        object,
                    });
                }
            }
            for (name, record) in &moving {
                object_key(source, name, &mut key);
                objects.remove(key.as_slice())?;
                object_key(target, name, &mut key);
                objects.insert(key.as_slice(), record.as_slice())?;
            }
            drop(objects);
            // Snapshot index rows: `pg ++ snap ++ name`, re-keyed.
            let mut snap_objects = txn.open_table(SNAP_OBJECTS)?;
            let rows: Vec<Vec<u8>> = {
                let start = pg_key(source);
                let range = match pg_key_end(source) {
                    Some(end) => snap_objects.range(start.as_slice()..end.as_slice())?,
                    None => snap_objects.range(start.as_slice()..)?,
                };
                let mut out = Vec::new();
                for item in range {
                    let key = item?.0.value().to_vec();
                    if key.len() < 20 {
                        return Err(pg_corrupt(source, "snap_objects", "short key".into()));
                    }
                    out.push(key);
                }
                out
            };
            for old in &rows {
                snap_objects.remove(old.as_slice())?;
                let mut new = pg_key(target).to_vec();
                new.extend_from_slice(&old[12..]);
                snap_objects.insert(new.as_slice(), ())?;
            }
            drop(snap_objects);
            // Usage: added.
            let mut usage = txn.open_table(PG_USAGE)?;
            let read = |usage: &redb::Table<_, _>, pg: PgId| -> Result<(u64, u64), StoreError> {
                match usage.get(&pg_key(pg))? {
                    Some(v) => unseal_usage(v.value()).map_err(|d| pg_corrupt(pg, "pg_usage", d)),
                    None => Ok((0, 0)),
                }
            };
            let (so, sb) = read(&usage, source)?;
            let (to, tb) = read(&usage, target)?;
            usage.insert(&pg_key(target), &seal_usage(to + so, tb + sb))?;
            usage.remove(&pg_key(source))?;
            drop(usage);
            // Purged snapshots: the intersection.
            let mut purged = txn.open_table(PURGED_SNAPS)?;
            let snaps_of = |purged: &redb::Table<&[u8; 20], ()>,
                            pg: PgId|
             -> Result<BTreeSet<u64>, StoreError> {
                let (lo, hi) = (purged_key(pg, 0), purged_key(pg, u64::MAX));
                let mut out = BTreeSet::new();
                for item in purged.range::<&[u8; 20]>(&lo..=&hi)? {
                    let row = *item?.0.value();
                    out.insert(u64::from_be_bytes(row[12..].try_into().expect("8 bytes")));
                }
                Ok(out)
            };
            let in_source = snaps_of(&purged, source)?;
            for snap in snaps_of(&purged, target)? {
                if !in_source.contains(&snap) {
                    purged.remove(&purged_key(target, snap))?;
                }
            }
            for snap in in_source {
                purged.remove(&purged_key(source, snap))?;
            }
            drop(purged);
            // Duplicate table: the source's rows after the target's, renumbered.
            let mut log = txn.open_table(DUP_LOG)?;
            let source_rows = dups::entries(&log, source)?;
            let (target_floor, target_next, target_rows) = dups::table(&log, target)?;
            dups::purge(&mut log, source)?;
            let mut known: std::collections::HashSet<&[u8]> =
                target_rows.iter().map(|r| r.1.as_slice()).collect();
            let mut seq = target_next;
            let mut appended = Vec::new();
            for (_, part, value) in &source_rows {
                if !known.insert(part.as_slice()) {
                    continue;
                }
                let (_, reply) =
                    dups::decode_value(value).map_err(|why| dups::corrupt(source, why))?;
                appended.push((seq, part.clone(), dups::encode_value(seq, &reply)));
                seq += 1;
                stats.dups += 1;
            }
            if let Some(first) = appended.first() {
                let floor = if target_rows.is_empty() { first.0 } else { target_floor };
                dups::write_entries(&mut log, target, floor, &appended)?;
            }
            drop(log);
            self.dup_memory.forget(source);
            self.dup_memory.forget(target);
            // States.
            let mut pg_state = txn.open_table(PG_STATE)?;
            pg_state.remove(&pg_key(source))?;
            pg_state.insert(&pg_key(target), seal(target_state).as_slice())?;
        }
        self.views.commit(txn)?;
        self.commits_since_checkpoint.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(%source, %target, objects = stats.objects, bytes = stats.bytes, dups = stats.dups, "pg merged");
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use quarry_persist::powerloss::{self, Config, World};
    use quarry_types::{
        EntityName, EntityReqId, ObjectOp, OpReply, Payload, ReqId, SnapContext, SNAP_HEAD,
    };

    use crate::{ObjectCommand, StoreOptions};

    const TARGET: PgId = PgId { pool: 3, seed: 1 };
    const SOURCE: PgId = PgId { pool: 3, seed: 5 };

    fn command(name: &str, ops: Vec<ObjectOp>, tid: u64) -> ObjectCommand {
        ObjectCommand {
            name: name.into(),
            snapc: SnapContext { seq: 0, snaps: vec![] },
            ops,
            mtime: (1, 0),
            reqid: Some(EntityReqId {
                entity: EntityName::client("admin"),
                reqid: ReqId { client: 7, tid },
            }),
        }
    }

    fn options() -> StoreOptions {
        StoreOptions { cache_bytes: 4 << 20, ..StoreOptions::default() }
    }

    /// The names written to `pg` (disjoint between the two PGs).
    fn names(pg: PgId) -> Vec<String> {
        (0..24u64)
            .map(|i| format!("pg{}-obj{}{i}", pg.seed, "x".repeat((i % 5) as usize)))
            .collect()
    }

    /// Each PG: 24 objects of 0..~23 KiB with an xattr and omap, then snapshot 4 and a
    /// rewrite of each (one clone each, indexed). Snapshot 7 is purged in both PGs, 8 only
    /// in the target. Request ids: 0..24 in the target, 100.. in the source, and one (tid
    /// 0, as a split copies the dup table to both sides) in both.
    fn fill(store: &Store) {
        for (pg, base) in [(TARGET, 0u64), (SOURCE, 100)] {
            let mut cmds = Vec::new();
            for (i, name) in names(pg).iter().enumerate() {
                let data = Bytes::from(vec![i as u8 + 1; i * 1000]);
                let ops = vec![
                    ObjectOp::WriteFull { data: Payload::new(data) },
                    ObjectOp::SetXattr { name: "a".into(), value: Bytes::from(format!("v{i}")) },
                    ObjectOp::OmapSetVals {
                        vals: [(format!("k{i}"), Bytes::from_static(b"omap"))].into(),
                    },
                ];
                let tid = if i == 0 { 0 } else { base + i as u64 };
                cmds.push(command(name, ops, tid));
            }
            store.apply(pg, &cmds, b"before").unwrap();
            let rewrite: Vec<ObjectCommand> = names(pg)
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let data = Payload::new(Bytes::from_static(b"new"));
                    let mut c = command(
                        name,
                        vec![ObjectOp::Write { off: 0, data }],
                        base + 1000 + i as u64,
                    );
                    c.snapc = SnapContext { seq: 4, snaps: vec![4] };
                    c
                })
                .collect();
            store.apply(pg, &rewrite, b"before").unwrap();
            store.apply_trim(pg, 7, 100, b"before").unwrap();
        }
        store.apply_trim(TARGET, 8, 100, b"before").unwrap();
        assert_eq!(store.purged_snaps(TARGET).unwrap(), vec![7, 8]);
        assert_eq!(store.purged_snaps(SOURCE).unwrap(), vec![7]);
    }

    fn read(store: &Store, pg: PgId, name: &str, snap: u64) -> OpReply {
        store.read(pg, name, snap, &[ObjectOp::Read { off: 0, len: 8 }]).unwrap()
    }

    /// Where the store stands: `Some(false)` before the merge, `Some(true)` after, checked
    /// whole (every object readable in exactly one PG with its head, clone and xattr; usage
    /// rows, snapshot index, dup rows, purged snapshots and states consistent with that).
    fn state_of(store: &Store) -> bool {
        let merged = store.pg_state(SOURCE).unwrap().is_none();
        let (t_dups, s_dups) = (store.dup_count(TARGET).unwrap(), store.dup_count(SOURCE).unwrap());
        if merged {
            assert_eq!(store.pg_state(TARGET).unwrap().unwrap(), b"after");
            assert_eq!(store.list(SOURCE, None, 1000).unwrap().0.len(), 0);
            assert_eq!((t_dups, s_dups), (2 * 48 - 1, 0), "the shared reqid once");
            assert_eq!(store.purged_snaps(TARGET).unwrap(), vec![7], "the intersection");
            assert!(store.purged_snaps(SOURCE).unwrap().is_empty());
            assert_eq!(store.snap_index_len(TARGET, 4).unwrap(), 48);
            assert_eq!(store.snap_index_len(SOURCE, 4).unwrap(), 0);
        } else {
            assert_eq!(store.pg_state(TARGET).unwrap().unwrap(), b"before");
            assert_eq!((t_dups, s_dups), (48, 48));
            assert_eq!(store.snap_index_len(SOURCE, 4).unwrap(), 24);
        }
        for pg in [TARGET, SOURCE] {
            for (i, name) in names(pg).iter().enumerate() {
                let home = if merged { TARGET } else { pg };
                for other in [TARGET, SOURCE] {
                    let head = read(store, other, name, SNAP_HEAD);
                    if other != home {
                        assert!(matches!(head, OpReply::Failed { .. }), "{name} in {other}");
                        continue;
                    }
                    assert!(format!("{head:?}").contains("b\"new"), "{name}: {head:?}");
                    if i > 2 {
                        let clone = read(store, other, name, 4);
                        let old = format!("{:?}", Bytes::from(vec![i as u8 + 1; 8]));
                        assert!(format!("{clone:?}").contains(&old), "{name}: {clone:?}");
                    }
                    let x = store.read(other, name, SNAP_HEAD, &[ObjectOp::GetXattrs]).unwrap();
                    assert!(format!("{x:?}").contains(&format!("v{i}")), "{x:?}");
                    assert_eq!(store.indexed_snaps(other, name).unwrap(), vec![4]);
                }
            }
        }
        let mut listed = Vec::new();
        for pg in [TARGET, SOURCE] {
            listed.extend(store.list(pg, None, 1000).unwrap().0);
        }
        assert_eq!(listed.len(), 48, "each object listed once");
        assert!(store.verify_usage().unwrap().is_empty(), "usage rows add up");
        let total: u64 = store.usage().unwrap().values().map(|u| u.objects).sum();
        assert_eq!(total, 48);
        merged
    }

    /// Every object of both PGs is in the target exactly once after, with its data, clone,
    /// xattr and snapshot index row; usage adds up; a resend of a request applied in the
    /// source is answered by the target; the source has no row left.
    #[test]
    fn every_object_ends_in_the_target_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        fill(&store);
        assert!(!state_of(&store));
        let before = store.usage().unwrap();
        let stats = store.merge_pg(SOURCE, TARGET, b"after").unwrap();
        assert_eq!((stats.objects, stats.dups), (24, 47));
        assert!(state_of(&store));
        assert_eq!(store.usage().unwrap(), before, "the pool's usage is the same");
        let resend = command(&names(SOURCE)[3], vec![], 103).reqid.unwrap();
        assert!(store.dup_reply(TARGET, &resend).unwrap().is_some());
        assert!(!store.pgs().unwrap().contains(&SOURCE), "{:?}", store.pgs().unwrap());
    }

    /// A source object the target holds too: refused, nothing changes.
    #[test]
    fn a_name_in_both_pgs_is_refused_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        fill(&store);
        let name = &names(SOURCE)[2];
        let data = Payload::new(Bytes::from_static(b"dup"));
        store
            .apply(TARGET, &[command(name, vec![ObjectOp::WriteFull { data }], 999)], b"before")
            .unwrap();
        let err = store.merge_pg(SOURCE, TARGET, b"after").unwrap_err();
        assert!(matches!(err, StoreError::MergeCollision { .. }), "{err}");
        assert_eq!(store.pg_state(SOURCE).unwrap().unwrap(), b"before");
        assert_eq!(store.list(SOURCE, None, 1000).unwrap().0.len(), 24);
        assert_eq!(store.list(TARGET, None, 1000).unwrap().0.len(), 25);
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }

    /// A power cut before each mutating I/O call of the merge and the checkpoint that makes it
    /// durable (every page's fate seeded): the reopened store is whole, before the merge or
    /// after it, never in between; after the checkpoint returned, always after.
    #[test]
    fn a_cut_at_each_io_leaves_before_or_after() {
        let filled = tempfile::tempdir().unwrap();
        {
            let store = Store::open_with(&filled.path().join("store.redb"), &options()).unwrap();
            fill(&store);
            store.checkpoint().unwrap();
        }
        // A clean run under the simulator: which calls the merge and the checkpoint make.
        let (first, last) = {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(filled.path(), dir.path());
            let world = World::new(Config::default());
            let _installed = powerloss::install(dir.path(), world.clone());
            let store = Store::open_with(&dir.path().join("store.redb"), &options()).unwrap();
            let first = world.ops() + 1;
            store.merge_pg(SOURCE, TARGET, b"after").unwrap();
            store.checkpoint().unwrap();
            (first, world.ops())
        };
        assert!(last >= first + 2, "the merge and checkpoint write ({first}..={last})");
        let (mut before, mut after) = (0, 0);
        for crash_at in first..=last + 1 {
            for seed in 0..2 {
                let dir = tempfile::tempdir().unwrap();
                copy_dir(filled.path(), dir.path());
                let config = Config {
                    seed,
                    crash_at: Some(crash_at),
                    writeback_per_mille: 300,
                    ..Config::default()
                };
                let world = World::new(config);
                let durable = {
                    let _installed = powerloss::install(dir.path(), world.clone());
                    let store =
                        Store::open_with(&dir.path().join("store.redb"), &options()).unwrap();
                    let merged = store.merge_pg(SOURCE, TARGET, b"after").is_ok();
                    let synced = store.checkpoint().is_ok() && merged && !world.crashed();
                    world.crash();
                    synced
                };
                let _installed = powerloss::install(dir.path(), World::new(Config::default()));
                let store = Store::open_with(&dir.path().join("store.redb"), &options())
                    .unwrap_or_else(|e| panic!("cut at call {crash_at} (seed {seed}): {e}"));
                let merged =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state_of(&store)))
                        .unwrap_or_else(|_| panic!("cut at call {crash_at} (seed {seed}): torn"));
                assert!(merged || !durable, "cut at {crash_at}: a durable merge was lost");
                if merged {
                    after += 1;
                } else {
                    before += 1;
                }
            }
        }
        eprintln!("merge cut points {first}..={last}: {before} before, {after} after");
        assert!(before > 0 && after > 0, "the cuts fell on both sides ({before} / {after})");
    }
}
