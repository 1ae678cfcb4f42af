//! Extent rows (format 4): a write of a run of whole chunks is one row per 4 MiB; writes,
//! zeroes and truncates inside a row split it (the parts outside keep their data and crcs);
//! snapshots keep the rows their versions see; a failed command's undo restores split rows
//! exactly; blocks a split frees are reused only for new data.

use quarry_store::Store;
use quarry_types::{ObjectOp, SnapContext, SNAP_HEAD};

use crate::common::*;

/// Goal: one row per 4 MiB write, split by partial overwrites, zeroes and truncates, with
/// every byte right after each step and after a reopen (the allocator rebuilt from the rows:
/// a block of a kept piece handed out again would show as wrong data).
#[test]
fn writes_inside_an_extent_split_it_and_keep_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut model = pattern(4 << 20, 1);
    store.apply(PG, &[cmd("o", vec![write(0, &model)])], b"1").unwrap();
    assert_eq!(store.extent_rows(PG, "o").unwrap(), 1);
    assert_eq!(store.chunk_rows(PG, "o").unwrap(), 1024);
    // A partial chunk in the middle: left piece, the new chunk, right piece.
    store.apply(PG, &[cmd("o", vec![write(100 * 4096 + 7, b"xyz")])], b"2").unwrap();
    model[100 * 4096 + 7..100 * 4096 + 10].copy_from_slice(b"xyz");
    assert_eq!(store.extent_rows(PG, "o").unwrap(), 3);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(model.clone()));
    // Whole chunks across the first split point: one new row, the pieces cut again.
    let run = pattern(8 * 4096, 2);
    store.apply(PG, &[cmd("o", vec![write(96 * 4096, &run)])], b"3").unwrap();
    model[96 * 4096..104 * 4096].copy_from_slice(&run);
    assert_eq!(store.extent_rows(PG, "o").unwrap(), 3);
    assert_eq!(store.chunk_rows(PG, "o").unwrap(), 1024);
    // Zero whole chunks (no snapshot: rows dropped), and a partial zero.
    let zero = ObjectOp::Zero { off: 200 * 4096, len: 10 * 4096 + 100 };
    store.apply(PG, &[cmd("o", vec![zero])], b"4").unwrap();
    model[200 * 4096..210 * 4096 + 100].fill(0);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(model.clone()));
    // Truncate inside the last row.
    store.apply(PG, &[cmd("o", vec![ObjectOp::Truncate { size: 600 * 4096 + 5 }])], b"5").unwrap();
    model.truncate(600 * 4096 + 5);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(model.clone()));
    // New data after a checkpoint and a reopen reuses freed blocks, never kept ones.
    store.checkpoint().unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(model.clone()));
    let other = pattern(2 << 20, 3);
    store.apply(PG, &[cmd("p", vec![write(0, &other)])], b"6").unwrap();
    store.apply(PG, &[cmd("o", vec![write(300 * 4096 + 1, b"late")])], b"7").unwrap();
    model[300 * 4096 + 1..300 * 4096 + 5].copy_from_slice(b"late");
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(model));
    assert_eq!(read_all(&store, "p", SNAP_HEAD), Ok(other));
}

/// Goal: a snapshot keeps the rows its version sees while the head's rows are split and
/// replaced; trimming the snapshot drops exactly what only it saw. Reads at the snapshot
/// find the old version's row under the head's newer rows directly.
#[test]
fn snapshots_keep_their_extents_under_split_head_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let old = pattern(1 << 20, 4);
    let snapc = SnapContext { seq: 0, snaps: vec![] };
    store.apply(PG, &[cmd_at("o", &snapc, (1, 0), vec![write(0, &old)])], b"1").unwrap();
    let snap = SnapContext { seq: 5, snaps: vec![5] };
    let patch = pattern(3 * 4096, 5);
    store.apply(PG, &[cmd_at("o", &snap, (2, 0), vec![write(10 * 4096, &patch)])], b"2").unwrap();
    let patch2 = b"small".to_vec();
    store
        .apply(PG, &[cmd_at("o", &snap, (3, 0), vec![write(11 * 4096 + 3, &patch2)])], b"3")
        .unwrap();
    let mut head = old.clone();
    head[10 * 4096..13 * 4096].copy_from_slice(&patch);
    head[11 * 4096 + 3..11 * 4096 + 8].copy_from_slice(&patch2);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(head.clone()));
    assert_eq!(read_all(&store, "o", 5), Ok(old.clone()));
    // The old version's row (256 chunks) plus the head's rows (3 chunks, split in three).
    assert_eq!(store.chunk_rows(PG, "o").unwrap(), 256 + 3);
    let zero = ObjectOp::Zero { off: 0, len: 4 * 4096 };
    store.apply(PG, &[cmd_at("o", &snap, (4, 0), vec![zero])], b"4").unwrap();
    head[..4 * 4096].fill(0);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(head.clone()));
    assert_eq!(read_all(&store, "o", 5), Ok(old));
    assert!(store.apply_trim(PG, 5, 10, b"5").unwrap().purged);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(head));
    // Left: the old row's chunks the head still sees (256 - 4 zeroed - 3 replaced) and the
    // head's 3; the head's holes over chunks 0..4 hide nothing any more and go.
    assert_eq!(store.chunk_rows(PG, "o").unwrap(), 256 - 4 - 3 + 3);
}

/// Goal: a command that splits a row and then fails leaves the row exactly as it was (the
/// undo log restores the row and its blocks; the pieces' rows go). Method: a write inside an
/// extent followed by a failing guard in the same command, then reads, a checkpoint, and new
/// writes (a block of the restored row handed out again would show as wrong data).
#[test]
fn a_failed_command_restores_a_split_extent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = pattern(64 * 4096, 6);
    store.apply(PG, &[cmd("o", vec![write(0, &data)])], b"1").unwrap();
    let failing = cmd(
        "o",
        vec![
            write(5 * 4096 + 1, b"never"),
            ObjectOp::Zero { off: 20 * 4096, len: 8 * 4096 },
            ObjectOp::CmpXattr {
                name: "missing".into(),
                op: quarry_types::CmpOp::Eq,
                value: bytes::Bytes::from_static(b"x"),
            },
        ],
    );
    let replies = store.apply(PG, &[failing], b"2").unwrap();
    assert!(matches!(replies[0], quarry_types::OpReply::Failed { .. }), "{replies:?}");
    assert_eq!(store.extent_rows(PG, "o").unwrap(), 1);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(data.clone()));
    store.checkpoint().unwrap();
    let other = pattern(64 * 4096, 7);
    store.apply(PG, &[cmd("p", vec![write(0, &other)])], b"3").unwrap();
    store.checkpoint().unwrap();
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(data));
    assert_eq!(read_all(&store, "p", SNAP_HEAD), Ok(other));
}
