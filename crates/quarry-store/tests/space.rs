//! Space and batching: full 4 KiB chunks must cost about one 4 KiB redb page each (the row
//! plus a small tail row), not the 8 KiB page a 4100-byte value would take; apply_many
//! applies several PGs in one transaction; the checkpoint counters count.

use quarry_store::{PgApply, Store};
use quarry_types::{PgId, SNAP_HEAD};

use crate::common::*;

#[test]
fn full_chunks_take_one_page_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // redb keeps a fixed ~2 MiB of allocator state and freed-page lists once it has
    // checkpointed a few times: measure from there.
    store.apply(PG, &[cmd("warmup", vec![write(0, b"w")])], b"s").unwrap();
    for _ in 0..3 {
        store.checkpoint().unwrap();
    }
    let empty = store.space().unwrap().allocated_bytes;
    let object = pattern(256 << 10, 3);
    let cmds: Vec<_> =
        (0..32).map(|i| cmd(&format!("rbd_data.{i:016x}"), vec![write(0, &object)])).collect();
    store.apply(PG, &cmds, b"s").unwrap();
    for _ in 0..3 {
        store.checkpoint().unwrap();
    }
    let data = 32 * object.len() as u64;
    let used = store.space().unwrap().allocated_bytes - empty;
    assert!(
        used < data + data / 8,
        "{used} bytes allocated for {data} bytes of full chunks ({:.2}x)",
        used as f64 / data as f64
    );
    assert_eq!(read_all(&store, "rbd_data.0000000000000005", SNAP_HEAD), Ok(object));
}

#[test]
fn apply_many_commits_several_pgs_at_once() {
    let (_dir, store) = open_temp();
    let other = PgId { pool: 1, seed: 8 };
    let a = vec![cmd("x", vec![write(0, b"in pg 7")])];
    let b =
        vec![cmd("x", vec![write(0, b"in pg 8")]), cmd("y", vec![quarry_types::ObjectOp::Remove])];
    let replies = store
        .apply_many(&[
            PgApply { pg: PG, cmds: &a, pg_state: b"seven" },
            PgApply { pg: other, cmds: &b, pg_state: b"eight" },
        ])
        .unwrap();
    assert_eq!(replies.len(), 2);
    assert_ok(&replies[0][0]);
    assert_ok(&replies[1][0]);
    assert_failed(&replies[1][1], 0, quarry_types::ErrorCode::ENOENT);
    assert_eq!(store.pg_state(PG).unwrap(), Some(b"seven".to_vec()));
    assert_eq!(store.pg_state(other).unwrap(), Some(b"eight".to_vec()));
    assert_eq!(read_all(&store, "x", SNAP_HEAD), Ok(b"in pg 7".to_vec()));
    assert_eq!(store.usage().unwrap().get(&1).map(|u| (u.objects, u.bytes)), Some((2, 14)));
    assert!(store.verify_usage().unwrap().is_empty());
    assert_eq!((store.commits_since_checkpoint(), store.bytes_since_checkpoint()), (1, 14));
    store.checkpoint().unwrap();
    assert_eq!((store.commits_since_checkpoint(), store.bytes_since_checkpoint()), (0, 0));
}

/// Goal (issue 8 h): removed objects give their space back to later writes within a
/// checkpoint or two, although redb never shrinks its file: the pages freed by removes are
/// reused, so writing as much again as was removed barely grows the file on disk.
/// (`Store::space` is what the OSD subtracts from the disk usage it reports.)
#[test]
fn removed_objects_pages_are_reused_after_checkpoints() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let path = dir.path().join("store.redb");
    let on_disk = || std::fs::metadata(&path).unwrap().blocks() * 512;
    let object = pattern(1 << 20, 3);
    let put = |i: usize| {
        store.apply(PG, &[cmd(&format!("o{i}"), vec![write_full(&object)])], b"s").unwrap();
        if i % 4 == 0 {
            store.checkpoint().unwrap();
        }
    };
    (0..40).for_each(put);
    store.checkpoint().unwrap();
    let (full_disk, full_allocated) = (on_disk(), store.space().unwrap().allocated_bytes);
    for i in 0..20 {
        let remove = cmd(&format!("o{i}"), vec![quarry_types::ObjectOp::Remove]);
        store.apply(PG, &[remove], b"s").unwrap();
    }
    // Pages freed by non-durable commits become free after durable ones.
    for _ in 0..2 {
        store.checkpoint().unwrap();
    }
    let allocated = store.space().unwrap().allocated_bytes;
    assert!(
        allocated + (18 << 20) < full_allocated,
        "20 MiB removed, allocated {full_allocated} -> {allocated}"
    );
    (40..60).for_each(put);
    store.checkpoint().unwrap();
    let grown = on_disk().saturating_sub(full_disk);
    assert!(grown < 4 << 20, "writing 20 MiB again grew the file by {grown} bytes on disk");

    // Compaction (what the OSD does at start on a nearly full disk) gives the free pages of
    // 20 removed objects back to the file system.
    for i in 40..60 {
        let remove = cmd(&format!("o{i}"), vec![quarry_types::ObjectOp::Remove]);
        store.apply(PG, &[remove], b"s").unwrap();
    }
    for _ in 0..2 {
        store.checkpoint().unwrap();
    }
    let before = on_disk();
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    store.checkpoint().unwrap();
    let free = before - store.space().unwrap().allocated_bytes;
    let compacted = store.compact().unwrap();
    let after = on_disk();
    eprintln!("compacted {compacted}: {before} -> {after} bytes on disk, {free} were free");
    assert!(after + (10 << 20) < before, "compaction gave back {} bytes", before - after);
    assert_eq!(read_all(&store, "o39", SNAP_HEAD), Ok(object));
}
