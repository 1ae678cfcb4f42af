//! Placed writes (write-once): data placed in the data file before its entry is applied
//! ([`Store::place`]) becomes the object's data when the apply claims it, without being
//! written again; a failed or duplicate command frees it with its batch; a released one is
//! free at once; a placement named at open stays reserved (never handed out, never punched)
//! and is checked against its crcs when claimed; one that is not reserved is refused.

use std::sync::Arc;

use quarry_store::{PgApply, Placed, PlacedOp, PlacementsAtOpen, Store, StoreError, StoreOptions};
use quarry_types::{CmpOp, ErrorCode, ObjectOp, OpReply, Payload, SnapContext, SNAP_HEAD};

use crate::common::*;

/// A write op standing for a placed write of `placed` at `off`: zeros of its length.
fn stand_in(off: u64, placed: &Placed) -> ObjectOp {
    ObjectOp::Write {
        off,
        data: Payload::with_crc(vec![0; placed.bytes() as usize].into(), placed.crc()),
    }
}

fn apply_placed(
    store: &Store,
    cmd: quarry_store::ObjectCommand,
    placed: &Placed,
) -> Result<OpReply, StoreError> {
    let ops = [PlacedOp { cmd: 0, op: cmd.ops.len() - 1, placed }];
    let cmds = [cmd];
    let work = PgApply { pg: PG, cmds: &cmds, pg_state: b"s", placed: &ops, dropped: &[] };
    Ok(store.apply_many(&[work])?.remove(0).remove(0))
}

fn reserved(store: &Store) -> u64 {
    store.data_space().unwrap().reserved_bytes
}

#[test]
fn a_placed_write_becomes_the_objects_data_without_a_second_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = pattern(256 << 10, 9);
    let placed = store.place(&data).unwrap();
    store.sync_placed().unwrap();
    assert_eq!(reserved(&store), 256 << 10);
    let file_len = std::fs::metadata(store.data_path()).unwrap().len();
    let reply = apply_placed(&store, cmd("obj", vec![stand_in(8192, &placed)]), &placed).unwrap();
    assert_eq!(reply, OpReply::Ok(vec![quarry_types::OpOutput::None]));
    assert_eq!(reserved(&store), 0);
    assert_eq!(std::fs::metadata(store.data_path()).unwrap().len(), file_len, "no new block");
    let mut want = vec![0u8; 8192];
    want.extend_from_slice(&data);
    assert_eq!(read_all(&store, "obj", SNAP_HEAD), Ok(want.clone()));
    // Claimed once: a second apply of the same placement is refused.
    let again = apply_placed(&store, cmd("obj2", vec![stand_in(0, &placed)]), &placed);
    assert!(matches!(again, Err(StoreError::Corrupt { .. })), "{again:?}");
    store.checkpoint().unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(read_all(&store, "obj", SNAP_HEAD), Ok(want));
}

#[test]
fn a_failed_or_duplicate_command_frees_its_placement_and_a_bad_shape_or_crc_is_einval() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = pattern(64 << 10, 3);
    // A guard that fails: the command changes nothing, the blocks go with the batch.
    let placed = store.place(&data).unwrap();
    let guarded = cmd(
        "obj",
        vec![
            ObjectOp::CmpXattr { name: "x".into(), op: CmpOp::Eq, value: b"y".to_vec().into() },
            stand_in(0, &placed),
        ],
    );
    let reply = apply_placed(&store, guarded, &placed).unwrap();
    assert!(matches!(reply, OpReply::Failed { .. }), "{reply:?}");
    assert_eq!(reserved(&store), 0);
    assert_eq!(read_all(&store, "obj", SNAP_HEAD), Err(ErrorCode::ENOENT));
    // Not at a chunk boundary: EINVAL, freed.
    let placed = store.place(&data).unwrap();
    let reply = apply_placed(&store, cmd("obj", vec![stand_in(100, &placed)]), &placed).unwrap();
    assert_eq!(reply, OpReply::Failed { index: 0, code: ErrorCode::EINVAL });
    assert_eq!(reserved(&store), 0);
    // The client's crc is not the placed bytes' (corrupted before they were placed): EINVAL,
    // nothing written, freed (the OSD leaves large payloads' crcs to this check).
    let placed = store.place(&data).unwrap();
    let mut op = stand_in(0, &placed);
    if let ObjectOp::Write { data, .. } = &mut op {
        assert_eq!(data.crc, crc32c::crc32c(&pattern(64 << 10, 3)), "Placed::crc is the data's");
        data.crc ^= 1;
    }
    let reply = apply_placed(&store, cmd("obj", vec![op]), &placed).unwrap();
    assert_eq!(reply, OpReply::Failed { index: 0, code: ErrorCode::EINVAL });
    assert_eq!(reserved(&store), 0);
    assert_eq!(read_all(&store, "obj", SNAP_HEAD), Err(ErrorCode::ENOENT));
    // A duplicate request: answered from the table, its placement freed.
    let reqid = reqid("client.admin", 1, 7);
    let placed = store.place(&data).unwrap();
    let mut first = cmd("obj", vec![stand_in(0, &placed)]);
    first.reqid = Some(reqid.clone());
    assert!(matches!(apply_placed(&store, first.clone(), &placed).unwrap(), OpReply::Ok(_)));
    let resent = store.place(&data).unwrap();
    assert!(matches!(apply_placed(&store, first, &resent).unwrap(), OpReply::Ok(_)));
    assert_eq!(reserved(&store), 0);
    assert_eq!(read_all(&store, "obj", SNAP_HEAD), Ok(data));
    // Not whole chunks: refused before anything is written.
    assert!(matches!(store.place(&[1; 100]), Err(StoreError::BadPlacement { bytes: 100 })));
    assert!(matches!(store.place(&[]), Err(StoreError::BadPlacement { bytes: 0 })));
}

#[test]
fn a_released_placement_is_free_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let placed = store.place(&pattern(64 << 10, 1)).unwrap();
    assert!(store.release_placed(&placed));
    assert!(!store.release_placed(&placed), "released twice");
    assert_eq!(reserved(&store), 0);
    let next = store.place(&pattern(64 << 10, 2)).unwrap();
    assert_eq!(next.block, placed.block, "the released blocks are reused");
}

fn options_naming(extents: Vec<(u64, u64)>) -> StoreOptions {
    StoreOptions {
        placements_at_open: Some(PlacementsAtOpen(Arc::new(move |_| extents.clone()))),
        ..StoreOptions::default()
    }
}

#[test]
fn a_placement_named_at_open_stays_reserved_and_is_checked_when_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(128 << 10, 5);
    let (kept, lost) = {
        let store = Store::open(dir.path()).unwrap();
        // Something applied after the placements, so the file does not end with them.
        let kept = store.place(&data).unwrap();
        let lost = store.place(&data).unwrap();
        store.apply(PG, &[cmd("tail", vec![write(0, &pattern(64 << 10, 7))])], b"s").unwrap();
        store.sync_placed().unwrap();
        store.checkpoint().unwrap();
        (kept, lost)
    };
    // `kept` is named (its entry is still in the log), `lost` is not: free, punched.
    let named = vec![(kept.block, kept.blocks())];
    let store = Store::open_with(dir.path(), &options_naming(named.clone())).unwrap();
    assert_eq!(reserved(&store), 128 << 10);
    let other = store.place(&pattern(128 << 10, 6)).unwrap();
    assert_ne!(other.block, kept.block, "a reserved placement is never handed out");
    assert!(store.release_placed(&other));
    let reply = apply_placed(&store, cmd("obj", vec![stand_in(0, &kept)]), &kept).unwrap();
    assert!(matches!(reply, OpReply::Ok(_)));
    assert_eq!(read_all(&store, "obj", SNAP_HEAD), Ok(data.clone()));
    // Not named at open: not reserved, refused.
    let refused = apply_placed(&store, cmd("obj3", vec![stand_in(0, &lost)]), &lost);
    assert!(matches!(refused, Err(StoreError::Corrupt { .. })), "{refused:?}");
    drop(store);
    // A placement named at open whose data is not what its entry says: Corrupt, nothing
    // applied (the entry names `lost`'s crcs but its blocks were punched to zeros).
    let store = Store::open_with(dir.path(), &options_naming(vec![(lost.block, lost.blocks())]));
    let store = store.unwrap();
    let refused = apply_placed(&store, cmd("obj4", vec![stand_in(0, &lost)]), &lost);
    assert!(matches!(refused, Err(StoreError::Corrupt { .. })), "{refused:?}");
    assert_eq!(read_all(&store, "obj4", SNAP_HEAD), Err(ErrorCode::ENOENT));
}

/// Snapshots and freed blocks (`placer.rs`' arguments (e) and (f)): a placed overwrite under a
/// snapshot leaves the snapshot's blocks to it; a placed overwrite without one frees the old
/// blocks, which later placements take only once a checkpoint made the free durable; neither
/// the snapshot, the heads nor the reusing objects ever read another's data.
#[test]
fn a_placed_overwrite_keeps_the_snapshots_blocks_and_only_freed_ones_are_placed_again() {
    let (_dir, store) = open_temp();
    let snapc = |seq: u64, snaps: &[u64]| SnapContext { seq, snaps: snaps.to_vec() };
    let len = 256 << 10;
    let place_apply = |name: &str, sc: &SnapContext, mtime: u64, data: &[u8]| -> Placed {
        let placed = store.place(data).unwrap();
        store.sync_placed().unwrap();
        let reply =
            apply_placed(&store, cmd_at(name, sc, (mtime, 0), vec![stand_in(0, &placed)]), &placed);
        assert!(matches!(reply, Ok(OpReply::Ok(_))), "{reply:?}");
        placed
    };
    let (v1, v2) = (pattern(len, 1), pattern(len, 2));
    let o1 = place_apply("o", &snapc(0, &[]), 1, &v1);
    // Snapshot 1 taken, then "o" overwritten by a placed write: the clone keeps o1's blocks.
    let o2 = place_apply("o", &snapc(1, &[1]), 2, &v2);
    // "p" overwritten without a snapshot: its first blocks are freed.
    let (w1, w2) = (pattern(len, 3), pattern(len, 4));
    let p1 = place_apply("p", &snapc(0, &[]), 3, &w1);
    let p2 = place_apply("p", &snapc(0, &[]), 4, &w2);
    // Not before a checkpoint made the free durable: the next placement does not take them.
    let early = store.place(&pattern(len, 9)).unwrap();
    assert_ne!(early.block, p1.block, "freed blocks placed again before they were durable");
    assert!(store.release_placed(&early));
    store.checkpoint().unwrap();
    store.checkpoint().unwrap();
    let mut reused = false;
    for i in 0..4u8 {
        let data = pattern(len, 20 + i);
        let q = place_apply(&format!("q{i}"), &snapc(0, &[]), 10 + u64::from(i), &data);
        for held in [&o1, &o2, &p2] {
            let overlap = q.block < held.block + held.blocks() && held.block < q.block + q.blocks();
            assert!(!overlap, "placement {q:?} took blocks of {held:?}");
        }
        reused |= q.block == p1.block;
        assert_eq!(read_all(&store, &format!("q{i}"), SNAP_HEAD), Ok(data));
    }
    assert!(reused, "the freed blocks of p's first version were placed again");
    assert_eq!(read_all(&store, "o", 1), Ok(v1), "the snapshot reads the first placed write");
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(v2));
    assert_eq!(read_all(&store, "p", SNAP_HEAD), Ok(w2));
}

/// A placement of an entry applied without its command (`PgApply::dropped`: its object moved
/// out in a split) is freed with that apply's batch: pending until a checkpoint, then free.
#[test]
fn a_dropped_placement_is_freed_with_the_batch_that_passes_its_entry() {
    let (_dir, store) = open_temp();
    let placed = store.place(&pattern(128 << 10, 4)).unwrap();
    store.sync_placed().unwrap();
    let work = PgApply { pg: PG, cmds: &[], pg_state: b"s", placed: &[], dropped: &[&placed] };
    store.apply_many(&[work]).unwrap();
    assert_eq!(reserved(&store), 0, "no longer reserved");
    let early = store.place(&pattern(128 << 10, 5)).unwrap();
    assert_ne!(early.block, placed.block, "freed blocks placed again before they were durable");
    assert!(store.release_placed(&early));
    store.checkpoint().unwrap();
    store.checkpoint().unwrap();
    let later = store.place(&pattern(128 << 10, 6)).unwrap();
    assert_eq!(later.block, placed.block, "free once durable");
    // One that is not reserved: skipped, the reserved one untouched.
    let stray = Placed { block: later.block + 1000, crcs: later.crcs.clone() };
    let work = PgApply { pg: PG, cmds: &[], pg_state: b"s", placed: &[], dropped: &[&stray] };
    store.apply_many(&[work]).unwrap();
    assert_eq!(reserved(&store), 128 << 10);
}

/// A placement named at open that overlaps a durable row's blocks (something broken: a row
/// takes a placement's blocks only in the commit that applies its entry) is not reserved:
/// releasing it must never free the row's blocks for the next placement to overwrite.
#[test]
fn a_placement_named_at_open_over_a_rows_blocks_is_not_reserved() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(128 << 10, 8);
    let placed = {
        let store = Store::open(dir.path()).unwrap();
        let placed = store.place(&data).unwrap();
        store.sync_placed().unwrap();
        apply_placed(&store, cmd("obj", vec![stand_in(0, &placed)]), &placed).unwrap();
        store.checkpoint().unwrap();
        placed
    };
    let store =
        Store::open_with(dir.path(), &options_naming(vec![(placed.block, placed.blocks())]));
    let store = store.unwrap();
    assert_eq!(reserved(&store), 0, "overlapping a row: not reserved");
    assert!(!store.release_placed(&placed), "nothing to release");
    let next = store.place(&pattern(128 << 10, 9)).unwrap();
    assert_ne!(next.block, placed.block, "the row's blocks were handed out");
    assert_eq!(read_all(&store, "obj", SNAP_HEAD), Ok(data));
}
