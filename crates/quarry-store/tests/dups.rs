//! The duplicate table: a command whose request id was applied before is answered with the
//! recorded reply and not applied again (also within one batch); the table is bounded per PG
//! (oldest first), survives reopening, travels with export/import, is dropped with the PG,
//! keeps only small outputs, and keys on the entity as well as the id.

use bytes::Bytes;
use quarry_store::{ObjectCommand, Store, StoreOptions, DUP_REPLY_MAX};
use quarry_types::{ErrorCode, ObjectOp, OpOutput, OpReply, PgId};

use crate::common::*;

fn with_id(c: ObjectCommand, tid: u64) -> ObjectCommand {
    ObjectCommand { reqid: Some(reqid("client.admin", 7, tid)), ..c }
}

fn eexist() -> OpReply {
    OpReply::Failed { index: 0, code: ErrorCode::EEXIST }
}

/// Goal: a resent exclusive create and remove get their first answers; a new id runs again.
#[test]
fn a_resend_gets_the_recorded_reply_and_changes_nothing() {
    let (_dir, store) = open_temp();
    let create = with_id(cmd("o", vec![create_excl(), write(0, b"abc")]), 1);
    assert_eq!(apply1(&store, create.clone()), OpReply::Ok(vec![OpOutput::None, OpOutput::None]));
    // Someone else overwrites it; the resent create must not apply its write again.
    apply1(&store, cmd("o", vec![write_full(b"other")]));
    assert_eq!(apply1(&store, create.clone()), OpReply::Ok(vec![OpOutput::None, OpOutput::None]));
    let read = [ObjectOp::Read { off: 0, len: 100 }];
    let OpReply::Ok(out) = store.read(PG, "o", quarry_types::SNAP_HEAD, &read).unwrap() else {
        panic!("read failed")
    };
    assert!(matches!(&out[0], OpOutput::Data(p) if &p.data[..] == b"other"));
    // A new request id is a new request: EEXIST.
    assert_eq!(apply1(&store, with_id(cmd("o", vec![create_excl()]), 2)), eexist());
    // ... and its failure is recorded too.
    assert_eq!(apply1(&store, with_id(cmd("o", vec![create_excl()]), 2)), eexist());
    let remove = with_id(cmd("o", vec![ObjectOp::Remove]), 3);
    assert_eq!(apply1(&store, remove.clone()), OpReply::Ok(vec![OpOutput::None]));
    assert_eq!(apply1(&store, remove), OpReply::Ok(vec![OpOutput::None]));
    assert_eq!(store.dup_count(PG).unwrap(), 3);
    // Commands without an id are never recorded.
    apply1(&store, cmd("p", vec![write(0, b"x")]));
    assert_eq!(store.dup_count(PG).unwrap(), 3);
}

/// Goal: a resend in the same batch as its first copy (proposed while the first was in
/// flight) is answered from the table too.
#[test]
fn a_resend_in_the_same_batch_is_not_applied_twice() {
    let (_dir, store) = open_temp();
    let create = with_id(cmd("o", vec![create_excl()]), 1);
    let replies = store.apply(PG, &[create.clone(), create], b"s").unwrap();
    assert_eq!(replies, vec![OpReply::Ok(vec![OpOutput::None]); 2]);
}

/// Goal: the same (client, tid) from two entities are two requests.
#[test]
fn ids_are_qualified_by_the_entity() {
    let (_dir, store) = open_temp();
    let a = ObjectCommand { reqid: Some(reqid("client.a", 1, 1)), ..cmd("o", vec![create_excl()]) };
    let b = ObjectCommand { reqid: Some(reqid("client.b", 1, 1)), ..cmd("o", vec![create_excl()]) };
    assert_eq!(apply1(&store, a), OpReply::Ok(vec![OpOutput::None]));
    assert_eq!(apply1(&store, b), eexist());
}

/// Goal: the table keeps at least the newest `dups_per_pg` entries per PG and at most a
/// quarter more (it is trimmed in steps: `dups.rs`), dropping the oldest; other PGs are not
/// affected; the table survives reopening (the bounds found again by a scan) and keeps its
/// order across it.
#[test]
fn the_table_is_bounded_oldest_first_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { dups_per_pg: 8, ..StoreOptions::default() };
    let (max, slack) = (8u64, 2u64);
    let other = PgId { pool: 1, seed: 8 };
    let check = |store: &Store, last: u64| {
        let count = store.dup_count(PG).unwrap() as u64;
        assert!(count >= last.min(max) && count <= max + slack, "{count} entries after {last}");
        for tid in 1..=last {
            let kept = store.dup_reply(PG, &reqid("client.admin", 7, tid)).unwrap().is_some();
            if tid + max > last {
                assert!(kept, "tid {tid} is among the newest {max} after {last}");
            }
            if tid + max + slack <= last {
                assert!(!kept, "tid {tid} is older than the newest {} after {last}", max + slack);
            }
        }
        // The kept entries are the newest ones: no gap.
        let oldest = (1..=last)
            .find(|&t| store.dup_reply(PG, &reqid("client.admin", 7, t)).unwrap().is_some());
        assert_eq!(oldest.map(|o| last - o + 1), Some(count), "after {last}");
    };
    {
        let store = Store::open_with(dir.path(), &options).unwrap();
        store.apply(other, &[with_id(cmd("o", vec![create_excl()]), 100)], b"s").unwrap();
        for tid in 1..=23 {
            apply1(&store, with_id(cmd(&format!("o{tid}"), vec![create_excl()]), tid));
            check(&store, tid);
        }
        assert_eq!(store.dup_count(other).unwrap(), 1);
    }
    let store = Store::open_with(dir.path(), &options).unwrap();
    check(&store, 23);
    for tid in 24..=41 {
        apply1(&store, with_id(cmd(&format!("o{tid}"), vec![create_excl()]), tid));
        check(&store, tid);
    }
    assert_eq!(store.dup_count(other).unwrap(), 1);
    // An evicted id runs again (EEXIST); a remembered one answers from the table.
    assert_eq!(apply1(&store, with_id(cmd("o1", vec![create_excl()]), 1)), eexist());
    let remembered = apply1(&store, with_id(cmd("o41", vec![create_excl()]), 41));
    assert_eq!(remembered, OpReply::Ok(vec![OpOutput::None]));
}

/// Goal: the table travels with export/import (Raft snapshots) and goes with the PG.
#[test]
fn the_table_is_exported_imported_and_removed_with_the_pg() {
    let (_dir, store) = open_temp();
    for tid in 1..=3 {
        apply1(&store, with_id(cmd("o", vec![write(0, &[tid as u8])]), tid));
    }
    let mut stream = Vec::new();
    store.export_pg(PG, &mut stream).unwrap();
    let (_dir2, target) = open_temp();
    // Stale entries of the target's PG are replaced, not merged.
    apply1(&target, with_id(cmd("stale", vec![create_excl()]), 99));
    target.import_pg(PG, &mut stream.as_slice()).unwrap();
    assert_eq!(target.dup_count(PG).unwrap(), 3);
    assert_eq!(target.dup_reply(PG, &reqid("client.admin", 7, 99)).unwrap(), None);
    assert_eq!(
        apply1(&target, with_id(cmd("o", vec![write(0, b"zz")]), 2)),
        OpReply::Ok(vec![OpOutput::None])
    );
    // Sequence numbers continue after the imported ones (the oldest still goes first).
    apply1(&target, with_id(cmd("o", vec![write(0, b"4")]), 4));
    let mut again = Vec::new();
    target.export_pg(PG, &mut again).unwrap();
    let (_dir3, third) = open_temp();
    third.import_pg(PG, &mut again.as_slice()).unwrap();
    assert_eq!(third.dup_count(PG).unwrap(), 4);
    target.remove_pg(PG).unwrap();
    assert_eq!(target.dup_count(PG).unwrap(), 0);
}

/// Goal: only small outputs are kept: a reply with a large read is recorded as success with
/// empty outputs (Ceph keeps only small op return data); a small one exactly.
#[test]
fn large_outputs_are_not_recorded() {
    let (_dir, store) = open_temp();
    apply1(&store, cmd("o", vec![write(0, &pattern(3 * DUP_REPLY_MAX, 3))]));
    let big = with_id(
        cmd(
            "o",
            vec![
                ObjectOp::SetXattr { name: "x".into(), value: Bytes::from_static(b"1") },
                ObjectOp::Read { off: 0, len: 2 * DUP_REPLY_MAX as u64 },
            ],
        ),
        1,
    );
    let first = apply1(&store, big.clone());
    assert!(
        matches!(&first, OpReply::Ok(out) if matches!(&out[1], OpOutput::Data(p) if p.len() == 2 * DUP_REPLY_MAX))
    );
    assert_eq!(apply1(&store, big), OpReply::Ok(vec![OpOutput::None, OpOutput::None]));
    let small = with_id(
        cmd(
            "o",
            vec![
                ObjectOp::SetXattr { name: "x".into(), value: Bytes::from_static(b"2") },
                ObjectOp::Read { off: 0, len: 16 },
            ],
        ),
        2,
    );
    let first = apply1(&store, small.clone());
    assert_eq!(apply1(&store, small), first);
}

/// Goal: a format-4 store (with the `dup_seq` table) opens as format 5: the table is deleted,
/// every entry still answers its resend, new entries continue the sequence (an export and
/// import of the PG keep them in order) and the trimming goes on from the migrated entries.
/// Method: a store written by this build, its `dup_seq` rebuilt and marker set to 4 behind
/// its back (raw redb writes), reopened.
#[test]
fn a_format_4_store_loses_its_dup_seq_table_and_keeps_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { dups_per_pg: 8, ..StoreOptions::default() };
    let file = {
        let store = Store::open_with(dir.path(), &options).unwrap();
        for tid in 1..=9 {
            apply1(&store, with_id(cmd(&format!("o{tid}"), vec![create_excl()]), tid));
        }
        store.checkpoint().unwrap();
        store.path().to_path_buf()
    };
    downgrade_to_v4(&file);
    assert_eq!(marker_version(&file), 4);
    assert_eq!(raw_table_len(&file, "dup_seq"), Some(9));
    let store = Store::open_with(&file, &options).unwrap();
    for tid in 1..=9 {
        assert!(store.dup_reply(PG, &reqid("client.admin", 7, tid)).unwrap().is_some(), "{tid}");
    }
    // Resends answered from the migrated entries; new ids recorded after them.
    let resend = apply1(&store, with_id(cmd("o3", vec![create_excl()]), 3));
    assert_eq!(resend, OpReply::Ok(vec![OpOutput::None]));
    for tid in 10..=12 {
        apply1(&store, with_id(cmd(&format!("o{tid}"), vec![create_excl()]), tid));
    }
    // The 11th entry made more than 8 + 2: trimmed to the newest 8 (tids 4..=11), then the
    // 12th added.
    assert_eq!(store.dup_count(PG).unwrap(), 9);
    assert!(store.dup_reply(PG, &reqid("client.admin", 7, 3)).unwrap().is_none());
    assert!(store.dup_reply(PG, &reqid("client.admin", 7, 4)).unwrap().is_some());
    let mut stream = Vec::new();
    store.export_pg(PG, &mut stream).unwrap();
    let (_dir2, target) = open_temp();
    target.import_pg(PG, &mut stream.as_slice()).unwrap();
    assert_eq!(target.dup_count(PG).unwrap(), 9);
    drop(store);
    assert_eq!(marker_version(&file), 6);
    assert_eq!(raw_table_len(&file, "dup_seq"), None);
}

/// Goal: a merge appends the source's entries after the target's, and the target's later
/// entries come after those (the bounds an apply kept for the target are not reused): the
/// target's entries stay consecutive, so an export of it imports.
#[test]
fn entries_recorded_after_a_merge_follow_the_merged_ones() {
    let (_dir, store) = open_temp();
    let source = PgId { pool: PG.pool, seed: PG.seed + 64 };
    for tid in 1..=3 {
        apply1(&store, with_id(cmd(&format!("t{tid}"), vec![create_excl()]), tid));
        let c = with_id(cmd(&format!("s{tid}"), vec![create_excl()]), 10 + tid);
        store.apply(source, &[c], b"s").unwrap();
    }
    let stats = store.merge_pg(source, PG, b"merged").unwrap();
    assert_eq!(stats.dups, 3);
    for tid in 4..=5 {
        apply1(&store, with_id(cmd(&format!("t{tid}"), vec![create_excl()]), tid));
    }
    assert_eq!(store.dup_count(PG).unwrap(), 8);
    let mut stream = Vec::new();
    store.export_pg(PG, &mut stream).unwrap();
    let (_dir2, target) = open_temp();
    target.import_pg(PG, &mut stream.as_slice()).expect("consecutive entries");
    for tid in [1, 2, 3, 4, 5, 11, 12, 13] {
        assert!(target.dup_reply(PG, &reqid("client.admin", 7, tid)).unwrap().is_some(), "{tid}");
    }
}

/// Goal: the entries an open transaction recorded are written as one row per PG when it is
/// committed (not a row per entry), and a row goes once all its entries are below the PG's
/// floor, so a PG holds few rows. Method: 40 applies in one transaction (commits only when
/// asked), then trimming across commits with a bound of 8.
#[test]
fn entries_are_packed_one_row_per_pg_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        dups_per_pg: 8,
        commit_age: std::time::Duration::from_secs(3600),
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), &options).unwrap();
    let other = PgId { pool: 1, seed: 8 };
    for tid in 1..=40 {
        apply1(&store, with_id(cmd(&format!("o{tid}"), vec![create_excl()]), tid));
        if tid % 10 == 0 {
            store
                .apply(other, &[with_id(cmd("x", vec![write(0, b"x")]), 100 + tid)], b"s")
                .unwrap();
        }
    }
    // One commit (the reads below settle it): one row each, trimmed entries not written.
    assert_eq!(store.dup_rows(PG).unwrap(), 1);
    assert_eq!(store.dup_rows(other).unwrap(), 1);
    assert_eq!(store.dup_count(other).unwrap(), 4);
    let count = store.dup_count(PG).unwrap();
    assert!((8..=10).contains(&count), "{count}");
    // One apply per commit: a row each, the old ones deleted once wholly below the floor.
    let mut most = 0;
    for tid in 41..=80 {
        apply1(&store, with_id(cmd(&format!("o{tid}"), vec![create_excl()]), tid));
        store.settle().unwrap();
        most = most.max(store.dup_rows(PG).unwrap());
    }
    // At most 10 entries, one per row: at most 10 rows (a missed delete would keep 40).
    assert!(most <= 10, "{most} rows for at most 10 entries");
    for tid in 73..=80 {
        let resend = with_id(cmd(&format!("o{tid}"), vec![create_excl()]), tid);
        assert_eq!(apply1(&store, resend), OpReply::Ok(vec![OpOutput::None]), "{tid}");
    }
    assert_eq!(apply1(&store, with_id(cmd("o1", vec![create_excl()]), 1)), eexist());
}

/// Goal: a format-5 store (a `dups` row per entry) opens as format 6: its entries packed into
/// `dup_log` rows, every one still answering its resend, new entries numbered after them (an
/// export holds the same entries as before the migration), the `dups` table gone.
/// Method: a store written by this build, rewritten as format 5 behind its back (raw redb
/// writes that decode the rows independently), reopened.
#[test]
fn a_format_5_store_packs_its_duplicate_table() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { dups_per_pg: 8, ..StoreOptions::default() };
    let other = PgId { pool: 1, seed: 8 };
    let (file, before) = {
        let store = Store::open_with(dir.path(), &options).unwrap();
        for tid in 1..=13 {
            apply1(&store, with_id(cmd(&format!("o{tid}"), vec![create_excl()]), tid));
            store.settle().unwrap();
        }
        store.apply(other, &[with_id(cmd("x", vec![create_excl()]), 100)], b"s").unwrap();
        store.checkpoint().unwrap();
        assert!(store.dup_rows(PG).unwrap() > 1);
        let mut stream = Vec::new();
        store.export_pg(PG, &mut stream).unwrap();
        (store.path().to_path_buf(), stream)
    };
    downgrade_to_v5(&file);
    assert_eq!(marker_version(&file), 5);
    assert_eq!(raw_table_len(&file, "dup_log"), None);
    // 13 entries, trimmed to 8 at the 11th: tids 4..=13 (10 entries), and one of `other`.
    assert_eq!(raw_table_len(&file, "dups"), Some(11));
    let store = Store::open_with(&file, &options).unwrap();
    let mut after = Vec::new();
    store.export_pg(PG, &mut after).unwrap();
    assert_eq!(after, before);
    assert_eq!(store.dup_rows(PG).unwrap(), 1);
    assert_eq!(store.dup_count(other).unwrap(), 1);
    for tid in 4..=13 {
        let resend = with_id(cmd(&format!("o{tid}"), vec![create_excl()]), tid);
        assert_eq!(apply1(&store, resend), OpReply::Ok(vec![OpOutput::None]), "{tid}");
    }
    apply1(&store, with_id(cmd("o14", vec![create_excl()]), 14));
    // 11 entries > 8 + 2: the floor rose to keep tids 7..=14.
    assert_eq!(store.dup_count(PG).unwrap(), 8);
    assert!(store.dup_reply(PG, &reqid("client.admin", 7, 6)).unwrap().is_none());
    drop(store);
    assert_eq!(marker_version(&file), 6);
    assert_eq!(raw_table_len(&file, "dups"), None);
}

/// Goal: a damaged entry of a format-5 table (its value, so its number, unreadable) is
/// dropped by the migration with every entry older than it, not the newer ones: the PG keeps
/// a run of consecutive numbers. Method: as above, one middle entry's value flipped.
#[test]
fn the_format_5_migration_keeps_the_entries_after_a_damaged_one() {
    use redb::{ReadableTable, TableDefinition};
    let dir = tempfile::tempdir().unwrap();
    let file = {
        let store = Store::open(dir.path()).unwrap();
        for tid in 1..=6 {
            apply1(&store, with_id(cmd(&format!("o{tid}"), vec![create_excl()]), tid));
        }
        store.checkpoint().unwrap();
        store.path().to_path_buf()
    };
    downgrade_to_v5(&file);
    {
        const RAW_DUPS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dups");
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(RAW_DUPS).unwrap();
            let rows: Vec<(Vec<u8>, Vec<u8>)> = table
                .iter()
                .unwrap()
                .map(|r| r.unwrap())
                .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .collect();
            // The entry of tid 3 (number 2): its last byte flipped.
            let (key, mut value) =
                rows.into_iter().find(|(k, _)| k.ends_with(&3u64.to_be_bytes())).unwrap();
            *value.last_mut().unwrap() ^= 1;
            table.insert(key.as_slice(), value.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(&file).unwrap();
    assert_eq!(store.dup_count(PG).unwrap(), 3);
    for tid in 1..=6 {
        let kept = store.dup_reply(PG, &reqid("client.admin", 7, tid)).unwrap().is_some();
        assert_eq!(kept, tid > 3, "{tid}");
    }
    let mut stream = Vec::new();
    store.export_pg(PG, &mut stream).unwrap();
    let (_dir2, target) = open_temp();
    target.import_pg(PG, &mut stream.as_slice()).unwrap();
    assert_eq!(target.dup_count(PG).unwrap(), 3);
}

/// Goal: an import writes a long table in rows of at most 512 entries (as it reads the
/// stream), which read back whole. Method: 1200 entries exported, imported elsewhere.
#[test]
fn a_long_table_is_imported_in_rows() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { dups_per_pg: 2000, ..StoreOptions::default() };
    let store = Store::open_with(dir.path(), &options).unwrap();
    let cmds: Vec<ObjectCommand> =
        (1..=1200).map(|tid| with_id(cmd(&format!("o{tid}"), vec![create_excl()]), tid)).collect();
    store.apply(PG, &cmds, b"s").unwrap();
    assert_eq!(store.dup_rows(PG).unwrap(), 1);
    let mut stream = Vec::new();
    store.export_pg(PG, &mut stream).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let target = Store::open_with(dir2.path(), &options).unwrap();
    target.import_pg(PG, &mut stream.as_slice()).unwrap();
    assert_eq!(target.dup_rows(PG).unwrap(), 3);
    assert_eq!(target.dup_count(PG).unwrap(), 1200);
    let resends: Vec<ObjectCommand> = [1, 512, 513, 1024, 1025, 1200]
        .iter()
        .map(|&tid| with_id(cmd(&format!("o{tid}"), vec![create_excl()]), tid))
        .collect();
    let replies = target.apply(PG, &resends, b"s").unwrap();
    assert_eq!(replies, vec![OpReply::Ok(vec![OpOutput::None]); 6]);
    let mut again = Vec::new();
    target.export_pg(PG, &mut again).unwrap();
    let (_dir3, third) = open_temp();
    third.import_pg(PG, &mut again.as_slice()).unwrap();
    assert_eq!(third.dup_count(PG).unwrap(), 1200);
}
