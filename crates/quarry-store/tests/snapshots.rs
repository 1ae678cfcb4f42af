//! Snapshot semantics, scenario by scenario: preserving data for snapshots, removal and
//! recreation under snapshots, in-place writes when no snapshot needs the old data, and
//! trimming.

use bytes::Bytes;
use quarry_types::{ErrorCode, ObjectOp, OpOutput, SnapContext, SNAP_HEAD};

use crate::common::*;

fn snapc(seq: u64, snaps: &[u64]) -> SnapContext {
    SnapContext { seq, snaps: snaps.to_vec() }
}

#[test]
fn a_write_after_a_snapshot_keeps_the_old_data_for_it() {
    let (_dir, store) = open_temp();
    let a = pattern(3 * 4096, 1);
    assert_ok(&apply1(&store, cmd_at("o", &snapc(0, &[]), (1, 0), vec![write(0, &a)])));
    // Snapshot 1 is taken; the next write carries it.
    let b = pattern(100, 2);
    assert_ok(&apply1(&store, cmd_at("o", &snapc(1, &[1]), (2, 0), vec![write(4096 + 7, &b)])));
    let mut head = a.clone();
    head[4096 + 7..4096 + 107].copy_from_slice(&b);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(head.clone()));
    assert_eq!(read_all(&store, "o", 1), Ok(a.clone()));
    // Snapshot ids above every write see the head; id 0 predates the object.
    assert_eq!(read_all(&store, "o", 5), Ok(head.clone()));
    assert_eq!(read_all(&store, "o", 0), Err(ErrorCode::ENOENT));
    // Only the one chunk written after the snapshot got a second version.
    assert_eq!(store.chunk_rows(PG, "o").unwrap(), 4);
    // More writes at the same seq overwrite in place.
    assert_ok(&apply1(
        &store,
        cmd_at("o", &snapc(1, &[1]), (3, 0), vec![write(0, &pattern(4096, 3))]),
    ));
    assert_eq!(store.chunk_rows(PG, "o").unwrap(), 5);
    assert_ok(&apply1(
        &store,
        cmd_at("o", &snapc(1, &[1]), (4, 0), vec![write(0, &pattern(4096, 4))]),
    ));
    assert_eq!(store.chunk_rows(PG, "o").unwrap(), 5);
    assert_eq!(read_all(&store, "o", 1), Ok(a.clone()));
    // Stat at the snapshot reports the snapshot's size and mtime.
    let stat = assert_ok(&store.read(PG, "o", 1, &[ObjectOp::Stat]).unwrap());
    assert_eq!(stat, vec![OpOutput::Stat { size: a.len() as u64, mtime_sec: 1, mtime_nsec: 0 }]);
    // xattrs and omap are head-only.
    let reply = store.read(PG, "o", 1, &[ObjectOp::GetXattrs]).unwrap();
    assert_failed(&reply, 0, ErrorCode::EOPNOTSUPP);
    let versions = store.object_versions(PG, "o").unwrap().unwrap();
    assert_eq!(versions.iter().map(|v| v.tag).collect::<Vec<_>>(), vec![0, 1]);
}

#[test]
fn size_changes_are_versioned() {
    let (_dir, store) = open_temp();
    let a = pattern(10_000, 5);
    assert_ok(&apply1(&store, cmd("o", vec![write(0, &a)])));
    assert_ok(&apply1(
        &store,
        cmd_at("o", &snapc(1, &[1]), (2, 0), vec![ObjectOp::Truncate { size: 10 }]),
    ));
    assert_ok(&apply1(
        &store,
        cmd_at("o", &snapc(2, &[2, 1]), (3, 0), vec![ObjectOp::Truncate { size: 9000 }]),
    ));
    let mut grown = a[..10].to_vec();
    grown.resize(9000, 0);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(grown));
    assert_eq!(read_all(&store, "o", 2), Ok(a[..10].to_vec()));
    assert_eq!(read_all(&store, "o", 1), Ok(a.clone()));
    // Write-full under a snapshot, then zero everything.
    assert_ok(&apply1(
        &store,
        cmd_at("o", &snapc(3, &[3, 2, 1]), (4, 0), vec![write_full(b"new")]),
    ));
    assert_ok(&apply1(
        &store,
        cmd_at("o", &snapc(4, &[4, 3, 2, 1]), (5, 0), vec![ObjectOp::Zero { off: 0, len: 3 }]),
    ));
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(vec![0, 0, 0]));
    assert_eq!(read_all(&store, "o", 4), Ok(b"new".to_vec()));
    assert_eq!(read_all(&store, "o", 1), Ok(a));
}

#[test]
fn remove_under_a_snapshot_then_recreate() {
    let (_dir, store) = open_temp();
    let a = pattern(2 * 4096 + 5, 7);
    assert_ok(&apply1(
        &store,
        cmd(
            "o",
            vec![
                write(0, &a),
                ObjectOp::SetXattr { name: "x".into(), value: Bytes::from_static(b"1") },
            ],
        ),
    ));
    assert_ok(&apply1(&store, cmd_at("o", &snapc(1, &[1]), (2, 0), vec![ObjectOp::Remove])));
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Err(ErrorCode::ENOENT));
    assert_eq!(read_all(&store, "o", 1), Ok(a.clone()));
    assert_eq!(store.list(PG, None, 10).unwrap().0, Vec::<String>::new());
    assert_eq!(store.list_all(PG, None, 10).unwrap().0, vec!["o".to_string()]);
    // Recreate at the same seq: nothing of the old data may show through.
    assert_ok(&apply1(&store, cmd_at("o", &snapc(1, &[1]), (3, 0), vec![write(4096 * 2, b"zz")])));
    let mut want = vec![0u8; 4096 * 2];
    want.extend_from_slice(b"zz");
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(want.clone()));
    let reply = store.read(PG, "o", SNAP_HEAD, &[ObjectOp::GetXattr { name: "x".into() }]).unwrap();
    assert_failed(&reply, 0, ErrorCode::ENODATA);
    assert_eq!(read_all(&store, "o", 1), Ok(a.clone()));
    // Remove and recreate inside one command, in place.
    assert_ok(&apply1(
        &store,
        cmd_at("o", &snapc(1, &[1]), (4, 0), vec![ObjectOp::Remove, write(1, b"q")]),
    ));
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(b"\0q".to_vec()));
    assert_eq!(read_all(&store, "o", 1), Ok(a.clone()));
    // Without snapshots a removal frees everything.
    assert_ok(&apply1(&store, cmd("p", vec![write(0, &a)])));
    assert_ok(&apply1(&store, cmd("p", vec![ObjectOp::Remove])));
    assert_eq!(store.object_versions(PG, "p").unwrap(), None);
    assert_eq!(store.chunk_rows(PG, "p").unwrap(), 0);
}

#[test]
fn writes_after_a_deleted_snapshot_do_not_keep_versions() {
    let (_dir, store) = open_temp();
    assert_ok(&apply1(&store, cmd("o", vec![write(0, &pattern(4096, 1))])));
    // Snapshot 1 was created and deleted before this write: seq moved on, no live snaps.
    assert_ok(&apply1(
        &store,
        cmd_at("o", &snapc(1, &[]), (2, 0), vec![write(0, &pattern(4096, 2))]),
    ));
    assert_eq!(store.chunk_rows(PG, "o").unwrap(), 1);
    assert_eq!(store.object_versions(PG, "o").unwrap().unwrap().len(), 1);
    // A stale writer (older seq than the object) also writes in place.
    assert_ok(&apply1(
        &store,
        cmd_at("o", &snapc(0, &[]), (3, 0), vec![write(0, &pattern(4096, 3))]),
    ));
    assert_eq!(store.chunk_rows(PG, "o").unwrap(), 1);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(pattern(4096, 3)));
}

#[test]
fn trimming_a_removed_snapshot_drops_what_no_indexed_snapshot_sees() {
    let (_dir, store) = open_temp();
    let v0 = pattern(4 * 4096, 1);
    assert_ok(&apply1(&store, cmd("o", vec![write(0, &v0)])));
    let v1 = pattern(4096, 2);
    assert_ok(&apply1(&store, cmd_at("o", &snapc(1, &[1]), (2, 0), vec![write(0, &v1)])));
    let v2 = pattern(4096, 3);
    assert_ok(&apply1(&store, cmd_at("o", &snapc(2, &[2, 1]), (3, 0), vec![write(4096, &v2)])));
    assert_ok(&apply1(
        &store,
        cmd_at("o", &snapc(3, &[3, 2, 1]), (4, 0), vec![ObjectOp::Truncate { size: 4096 }]),
    ));
    assert_eq!(store.object_versions(PG, "o").unwrap().unwrap().len(), 4);
    let at = |snap| read_all(&store, "o", snap);
    let mut s2 = v0.clone();
    s2[..4096].copy_from_slice(&v1);
    let mut s3 = s2.clone();
    s3[4096..8192].copy_from_slice(&v2);
    assert_eq!((at(1), at(2), at(3)), (Ok(v0.clone()), Ok(s2.clone()), Ok(s3.clone())));
    // Snapshot 2 is deleted: the PG trims it from the index.
    let trim = |snap: u64| {
        let step = store.apply_trim(PG, snap, 100, b"trim").unwrap();
        assert!(step.purged, "one step trims a one-object PG");
        step.visited
    };
    assert_eq!(store.indexed_snaps(PG, "o").unwrap(), vec![1, 2, 3]);
    assert_eq!(trim(2), 1);
    assert_eq!((at(1), at(3)), (Ok(v0.clone()), Ok(s3.clone())));
    assert_eq!(store.object_versions(PG, "o").unwrap().unwrap().len(), 3);
    assert_eq!(store.purged_snaps(PG).unwrap(), vec![2]);
    // Snapshot 1 is deleted: v0's chunk 0 and 1 versions go.
    let rows_before = store.chunk_rows(PG, "o").unwrap();
    assert_eq!(trim(1), 1);
    assert_eq!(at(3), Ok(s3.clone()));
    assert!(store.chunk_rows(PG, "o").unwrap() < rows_before);
    // All snapshots gone: only the head's chunk remains.
    assert_eq!(trim(3), 1);
    assert_eq!(store.object_versions(PG, "o").unwrap().unwrap().len(), 1);
    assert_eq!(store.chunk_rows(PG, "o").unwrap(), 1);
    assert_eq!(at(SNAP_HEAD), Ok(v1));
    assert!(store.indexed_snaps(PG, "o").unwrap().is_empty());
    // A removed head whose snapshots are all trimmed disappears.
    assert_ok(&apply1(&store, cmd_at("o", &snapc(4, &[4]), (5, 0), vec![ObjectOp::Remove])));
    assert_eq!(store.list_all(PG, None, 10).unwrap().0, vec!["o".to_string()]);
    assert_eq!(trim(4), 1);
    assert_eq!(store.list_all(PG, None, 10).unwrap().0, Vec::<String>::new());
    assert_eq!(store.chunk_rows(PG, "o").unwrap(), 0);
    // Trimming a snapshot no object is indexed for visits nothing.
    assert_eq!(trim(9), 0);
    assert_eq!(store.purged_snaps(PG).unwrap(), vec![1, 2, 3, 4, 9]);
    assert!(store.verify_usage().unwrap().is_empty());
}
