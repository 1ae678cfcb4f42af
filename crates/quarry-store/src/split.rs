//! Splitting a PG ([`Store::split_pg`]): the rows that move when a pool's `pg_num` grows and
//! the objects of one PG are divided between it and its children. Owns no table of its own
//! and changes no format: it rewrites rows of the existing tables in one transaction.
//!
//! What moves, for each object whose new PG (the caller's `target`) is a child: its
//! `objects` row (the key is `pool ++ seed ++ name`, the record is unchanged) and its
//! `snap_objects` rows (keyed by PG too). Data, xattrs, omap and `object_snaps` are keyed by
//! the internal object id and stay where they are. Per-PG rows: `pg_usage` is divided (what
//! moved is subtracted from the parent and added to the child), the parent's `purged_snaps`
//! and duplicate table are copied to every child (a snapshot the parent finished trimming
//! has no version left in any of its objects; a resend of a write applied before the split
//! must still be answered from the table in whichever PG now holds the object), and the
//! parent's and each child's `pg_state` are written. All in one transaction: a crash leaves
//! the store either before the split or after it.

use std::collections::BTreeMap;

use quarry_types::PgId;
use redb::{Durability, ReadableTable};

use crate::dups;
use crate::format::{
    object_key, pg_key, pg_key_end, purged_key, seal, seal_usage, unseal_usage, ObjectRecord,
    DUP_LOG, OBJECTS, PG_STATE, PG_USAGE, PURGED_SNAPS, SNAP_OBJECTS,
};
use crate::read::Ctx;
use crate::{pg_corrupt, Store, StoreError};

/// What a split moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitStats {
    /// Object records moved to children.
    pub objects: u64,
    /// Head bytes of the objects moved (the sum of their sizes).
    pub bytes: u64,
}

impl Store {
    /// Splits `parent`: every object whose `target(name)` is not the parent's seed moves to
    /// that child PG (which must be one of `children`, each given with its new `pg_state`
    /// blob), with the rows described in the module docs; the parent gets `parent_state`.
    /// One transaction (committed like an apply, with `Durability::None`: the split is a log
    /// entry, replayed after a crash). A child that already holds objects or a `pg_state`,
    /// or an object whose target is neither the parent nor a child, is an error and changes
    /// nothing.
    pub fn split_pg(
        &self,
        parent: PgId,
        target: &dyn Fn(&str) -> u32,
        parent_state: &[u8],
        children: &[(u32, Vec<u8>)],
    ) -> Result<SplitStats, StoreError> {
        let child_pg = |seed: u32| PgId { pool: parent.pool, seed };
        let (_writer, mut txn) = self.begin_write()?;
        txn.set_durability(Durability::None);
        let mut stats = SplitStats::default();
        {
            let mut objects = txn.open_table(OBJECTS)?;
            let mut pg_state = txn.open_table(PG_STATE)?;
            for (seed, _) in children {
                let child = child_pg(*seed);
                let start = pg_key(child);
                let taken = match pg_key_end(child) {
                    Some(end) => objects.range(start.as_slice()..end.as_slice())?.next().is_some(),
                    None => objects.range(start.as_slice()..)?.next().is_some(),
                };
                if taken || pg_state.get(&pg_key(child))?.is_some() {
                    return Err(StoreError::SplitChildExists { parent, child });
                }
            }
            // The parent's objects that move, with their destination.
            let mut moving: Vec<(Vec<u8>, Vec<u8>, u32)> = Vec::new();
            let mut per_child: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
            {
                let start = pg_key(parent);
                let range = match pg_key_end(parent) {
                    Some(end) => objects.range(start.as_slice()..end.as_slice())?,
                    None => objects.range(start.as_slice()..)?,
                };
                for item in range {
                    let (key, raw) = item?;
                    let name_bytes = &key.value()[12..];
                    let lossy = String::from_utf8_lossy(name_bytes).into_owned();
                    let ctx = Ctx { pg: parent, name: &lossy };
                    let name = std::str::from_utf8(name_bytes)
                        .map_err(|_| ctx.corrupt("object name is not UTF-8".into()))?;
                    let to = target(name);
                    if to == parent.seed {
                        continue;
                    }
                    if !children.iter().any(|(seed, _)| *seed == to) {
                        return Err(StoreError::SplitTarget { parent, object: lossy, target: to });
                    }
                    let record = ObjectRecord::decode(raw.value())
                        .map_err(|why| ctx.corrupt(format!("object record: {why}")))?;
                    let head = record.head();
                    if head.exists {
                        let usage = per_child.entry(to).or_default();
                        usage.0 += 1;
                        usage.1 += head.size;
                        stats.bytes += head.size;
                    }
                    stats.objects += 1;
                    moving.push((name_bytes.to_vec(), raw.value().to_vec(), to));
                }
            }
            let mut key = Vec::new();
            for (name, record, to) in &moving {
                object_key(parent, name, &mut key);
                objects.remove(key.as_slice())?;
                object_key(child_pg(*to), name, &mut key);
                objects.insert(key.as_slice(), record.as_slice())?;
            }
            drop(objects);
            // Snapshot index rows of the moved objects: `pg ++ snap ++ name`.
            let mut snap_objects = txn.open_table(SNAP_OBJECTS)?;
            let mut moved_rows: Vec<(Vec<u8>, u32)> = Vec::new();
            {
                let start = pg_key(parent);
                let range = match pg_key_end(parent) {
                    Some(end) => snap_objects.range(start.as_slice()..end.as_slice())?,
                    None => snap_objects.range(start.as_slice()..)?,
                };
                for item in range {
                    let (key, _) = item?;
                    let key = key.value();
                    if key.len() < 20 {
                        return Err(pg_corrupt(parent, "snap_objects", "short key".into()));
                    }
                    let name = String::from_utf8_lossy(&key[20..]);
                    let to = target(&name);
                    if to != parent.seed {
                        moved_rows.push((key.to_vec(), to));
                    }
                }
            }
            for (old, to) in &moved_rows {
                snap_objects.remove(old.as_slice())?;
                let mut new = pg_key(child_pg(*to)).to_vec();
                new.extend_from_slice(&old[12..]);
                snap_objects.insert(new.as_slice(), ())?;
            }
            drop(snap_objects);
            // Usage: divided.
            let mut usage = txn.open_table(PG_USAGE)?;
            let (mut objects_left, mut bytes_left) = match usage.get(&pg_key(parent))? {
                Some(v) => {
                    unseal_usage(v.value()).map_err(|d| pg_corrupt(parent, "pg_usage", d))?
                }
                None => (0, 0),
            };
            for (seed, _) in children {
                let (n, b) = per_child.get(seed).copied().unwrap_or((0, 0));
                objects_left = objects_left.checked_sub(n).ok_or_else(|| {
                    pg_corrupt(parent, "pg_usage", "fewer objects counted than moved".into())
                })?;
                bytes_left = bytes_left.checked_sub(b).ok_or_else(|| {
                    pg_corrupt(parent, "pg_usage", "fewer bytes counted than moved".into())
                })?;
                usage.insert(&pg_key(child_pg(*seed)), &seal_usage(n, b))?;
            }
            usage.insert(&pg_key(parent), &seal_usage(objects_left, bytes_left))?;
            drop(usage);
            // Purged snapshots: copied.
            let mut purged = txn.open_table(PURGED_SNAPS)?;
            let snaps: Vec<[u8; 20]> = {
                let (lo, hi) = (purged_key(parent, 0), purged_key(parent, u64::MAX));
                let mut out = Vec::new();
                for item in purged.range::<&[u8; 20]>(&lo..=&hi)? {
                    out.push(*item?.0.value());
                }
                out
            };
            for (seed, _) in children {
                for row in &snaps {
                    let snap = u64::from_be_bytes(row[12..].try_into().expect("8 bytes"));
                    purged.insert(&purged_key(child_pg(*seed), snap), ())?;
                }
            }
            drop(purged);
            // Duplicate table: copied, same sequence numbers (and so the same floor); the
            // child's table is exactly the copy (a new child has none: no pg_state).
            let mut log = txn.open_table(DUP_LOG)?;
            let rows = dups::entries(&log, parent)?;
            for (seed, _) in children {
                let child = child_pg(*seed);
                dups::purge(&mut log, child)?;
                if let Some(first) = rows.first() {
                    dups::write_entries(&mut log, child, first.0, &rows)?;
                }
                self.dup_memory.forget(child);
            }
            drop(log);
            // States.
            pg_state.insert(&pg_key(parent), seal(parent_state).as_slice())?;
            for (seed, state) in children {
                pg_state.insert(&pg_key(child_pg(*seed)), seal(state).as_slice())?;
            }
        }
        self.views.commit(txn)?;
        self.commits_since_checkpoint.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(pg = %parent, children = children.len(), objects = stats.objects, bytes = stats.bytes, "pg split");
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use quarry_types::{
        EntityName, EntityReqId, ObjectOp, OpReply, Payload, ReqId, SnapContext, SNAP_HEAD,
    };

    use crate::ObjectCommand;

    const PARENT: PgId = PgId { pool: 3, seed: 1 };

    /// The test's placement: seeds 1 (stays), 5 and 9 (children).
    fn target(name: &str) -> u32 {
        [1, 5, 9][name.len() % 3]
    }

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

    /// 60 objects of 0..~60 KiB with an xattr and omap, in `PARENT`, with a snapshot clone.
    fn filled() -> (tempfile::TempDir, Store, Vec<ObjectCommand>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        let mut cmds = Vec::new();
        for i in 0..60u64 {
            let name = format!("obj{}{}", "x".repeat((i % 7) as usize), i);
            let data = Bytes::from(vec![i as u8; (i as usize) * 1000]);
            let ops = vec![
                ObjectOp::WriteFull { data: Payload::new(data) },
                ObjectOp::SetXattr { name: "a".into(), value: Bytes::from(format!("v{i}")) },
                ObjectOp::OmapSetVals {
                    vals: [(format!("k{i}"), Bytes::from_static(b"omap"))].into(),
                },
            ];
            cmds.push(command(&name, ops, i));
        }
        store.apply(PARENT, &cmds, b"before").unwrap();
        // A self-managed snapshot 4 and a rewrite of every object: one clone each, indexed.
        let rewrite: Vec<ObjectCommand> = cmds
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut c = command(
                    &c.name,
                    vec![ObjectOp::Write {
                        off: 0,
                        data: Payload::new(Bytes::from_static(b"new")),
                    }],
                    1000 + i as u64,
                );
                c.snapc = SnapContext { seq: 4, snaps: vec![4] };
                c
            })
            .collect();
        store.apply(PARENT, &rewrite, b"before").unwrap();
        (dir, store, cmds)
    }

    fn children() -> Vec<(u32, Vec<u8>)> {
        vec![(5, b"child5".to_vec()), (9, b"child9".to_vec())]
    }

    fn read(store: &Store, pg: PgId, name: &str, snap: u64) -> OpReply {
        let ops = [ObjectOp::Read { off: 0, len: 8 }];
        store.read(pg, name, snap, &ops).unwrap()
    }

    /// Every object lands in exactly one PG, its target, with its data, clone, xattr and
    /// omap; usage rows add up; dup rows and states are where they belong.
    #[test]
    fn every_object_lands_in_exactly_one_pg() {
        let (_dir, store, cmds) = filled();
        // Reads before the split: their shared read view must not outlive it (`view.rs`).
        for c in &cmds {
            assert!(matches!(read(&store, PARENT, &c.name, SNAP_HEAD), OpReply::Ok(_)));
        }
        let stats = store.split_pg(PARENT, &target, b"after", &children()).unwrap();
        let expected = cmds.iter().filter(|c| target(&c.name) != PARENT.seed).count() as u64;
        assert!(expected > 10);
        assert_eq!(stats.objects, expected);
        let pgs = [1u32, 5, 9].map(|seed| PgId { pool: 3, seed });
        let mut listed = Vec::new();
        for pg in pgs {
            listed.extend(store.list(pg, None, 1000).unwrap().0);
        }
        listed.sort();
        let mut names: Vec<String> = cmds.iter().map(|c| c.name.clone()).collect();
        names.sort();
        assert_eq!(listed, names, "each object listed once");
        for (i, c) in cmds.iter().enumerate() {
            for pg in pgs {
                let head = read(&store, pg, &c.name, SNAP_HEAD);
                let clone = read(&store, pg, &c.name, 4);
                if pg.seed == target(&c.name) {
                    assert!(format!("{head:?}").contains("b\"new"), "{}: {head:?}", c.name);
                    if i > 0 {
                        let old = format!("{:?}", Bytes::from(vec![i as u8; 8]));
                        assert!(format!("{clone:?}").contains(&old), "{}: {clone:?}", c.name);
                    }
                    let x = store.read(pg, &c.name, SNAP_HEAD, &[ObjectOp::GetXattrs]).unwrap();
                    assert!(format!("{x:?}").contains(&format!("v{i}")), "{x:?}");
                    assert_eq!(store.indexed_snaps(pg, &c.name).unwrap(), vec![4]);
                } else {
                    assert!(matches!(head, OpReply::Failed { .. }), "{} in {pg}", c.name);
                }
            }
        }
        assert!(store.verify_usage().unwrap().is_empty(), "usage rows add up");
        let total: u64 = store.usage().unwrap().values().map(|u| u.objects).sum();
        assert_eq!(total, 60);
        for pg in pgs {
            let reqid = cmds[0].reqid.clone().unwrap();
            assert!(store.dup_reply(pg, &reqid).unwrap().is_some(), "dup row in {pg}");
            assert_eq!(store.dup_count(pg).unwrap(), store.dup_count(PARENT).unwrap());
        }
        assert_eq!(store.pg_state(PARENT).unwrap().unwrap(), b"after");
        assert_eq!(store.pg_state(pgs[1]).unwrap().unwrap(), b"child5");
        let moved: u64 = [5, 9]
            .iter()
            .map(|&s| store.snap_index_len(PgId { pool: 3, seed: s }, 4).unwrap())
            .sum();
        assert_eq!(moved + store.snap_index_len(PARENT, 4).unwrap(), 60);
    }

    /// A split into a child that exists changes nothing.
    #[test]
    fn existing_child_refused_and_nothing_changes() {
        let (_dir, store, cmds) = filled();
        store.apply(PgId { pool: 3, seed: 9 }, &[], b"x").unwrap();
        let err = store.split_pg(PARENT, &target, b"after", &children()).unwrap_err();
        assert!(matches!(err, StoreError::SplitChildExists { .. }), "{err}");
        assert_eq!(store.list(PARENT, None, 1000).unwrap().0.len(), cmds.len());
        assert_eq!(store.pg_state(PARENT).unwrap().unwrap(), b"before");
        assert!(store.pg_state(PgId { pool: 3, seed: 5 }).unwrap().is_none());
        let err = store.split_pg(PARENT, &|_| 7, b"after", &[(5, vec![])]).unwrap_err();
        assert!(matches!(err, StoreError::SplitTarget { target: 7, .. }), "{err}");
    }
}
