//! export_pg / import_pg: a PG with snapshots, xattrs, omap and header survives a round trip
//! into a fresh store and into a store holding other data for that PG; damaged or foreign
//! streams are refused without changing anything.

use std::collections::BTreeMap;

use bytes::Bytes;
use quarry_store::{ObjectCommand, Store, StoreError};
use quarry_types::{ObjectOp, PgId, SNAP_HEAD};

use crate::common::*;

/// Builds a PG through the model and returns the model.
fn populate(store: &Store) -> Model {
    let mut model = Model::default();
    let mut clock = 1u64;
    let mut run = |model: &mut Model, name: &str, ops: Vec<ObjectOp>| {
        clock += 1;
        let c = cmd_at(name, &model.snapc(), (clock, 0), ops);
        let want = model.apply(&c);
        assert_eq!(
            store.apply(PG, std::slice::from_ref(&c), &clock.to_le_bytes()).unwrap(),
            vec![want]
        );
    };
    run(&mut model, "img.0", vec![write(0, &pattern(5 * 4096 + 3, 1))]);
    run(&mut model, "img.1", vec![write(4096, &pattern(4096, 2))]);
    run(
        &mut model,
        "header",
        vec![
            ObjectOp::OmapSetVals {
                vals: BTreeMap::from([
                    ("size".into(), Bytes::from_static(b"42")),
                    ("features".into(), Bytes::from_static(b"61")),
                ]),
            },
            ObjectOp::OmapSetHeader { header: Bytes::from_static(b"hdr") },
            ObjectOp::SetXattr { name: "lock.x".into(), value: Bytes::from_static(b"owner") },
        ],
    );
    model.create_snap();
    run(&mut model, "img.0", vec![write(100, &pattern(9000, 3))]);
    run(&mut model, "img.1", vec![ObjectOp::Remove]);
    model.create_snap();
    run(&mut model, "img.0", vec![ObjectOp::Truncate { size: 4096 }]);
    run(&mut model, "img.2", vec![write(0, b"after both snapshots")]);
    model
}

fn names() -> Vec<String> {
    ["img.0", "img.1", "img.2", "header", "absent"].iter().map(|s| s.to_string()).collect()
}

#[test]
fn export_import_round_trip() {
    let (_d1, source) = open_temp();
    let model = populate(&source);
    model.verify(&source, &names());
    let mut stream = Vec::new();
    source.export_pg(PG, &mut stream).unwrap();

    // Into a fresh store.
    let (_d2, target) = open_temp();
    target.import_pg(PG, &mut stream.as_slice()).unwrap();
    model.verify(&target, &names());
    assert_eq!(target.pg_state(PG).unwrap(), source.pg_state(PG).unwrap());
    assert_eq!(target.list_all(PG, None, 100).unwrap(), source.list_all(PG, None, 100).unwrap());
    assert_eq!(target.usage().unwrap(), source.usage().unwrap());
    for name in names() {
        assert_eq!(
            target.object_versions(PG, &name).unwrap(),
            source.object_versions(PG, &name).unwrap()
        );
    }
    // The imported store keeps working: writes under the same snapshots, then trims.
    let mut model2 = model.clone();
    let c = cmd_at("img.0", &model2.snapc(), (99, 0), vec![write(0, b"post-import")]);
    let want = model2.apply(&c);
    assert_eq!(target.apply(PG, &[c], b"x").unwrap(), vec![want]);
    model2.verify(&target, &names());

    // Into a store that already has different data for the PG and another PG: replaced, the
    // other PG untouched.
    let (_d3, busy) = open_temp();
    let other = PgId { pool: 9, seed: 1 };
    busy.apply(
        PG,
        &[cmd("stale", vec![write(0, b"old")]), cmd("img.0", vec![write(0, b"old")])],
        b"old",
    )
    .unwrap();
    busy.apply(other, &[cmd("keep", vec![write(0, b"keep")])], b"other").unwrap();
    busy.import_pg(PG, &mut stream.as_slice()).unwrap();
    model.verify(&busy, &names());
    assert_eq!(read_all(&busy, "stale", SNAP_HEAD), Err(quarry_types::ErrorCode::ENOENT));
    assert_eq!(busy.list(other, None, 10).unwrap().0, vec!["keep".to_string()]);
    assert!(busy.verify_usage().unwrap().is_empty());
    // Exporting the import gives the same bytes back.
    let mut again = Vec::new();
    busy.export_pg(PG, &mut again).unwrap();
    assert_eq!(again, stream);
}

#[test]
fn damaged_or_foreign_streams_change_nothing() {
    let (_d1, source) = open_temp();
    populate(&source);
    // Duplicate table records too.
    for tid in 1..=3 {
        let c = ObjectCommand {
            reqid: Some(reqid("client.admin", 5, tid)),
            ..cmd("dup", vec![write(0, b"d")])
        };
        source.apply(PG, &[c], b"s").unwrap();
    }
    let mut stream = Vec::new();
    source.export_pg(PG, &mut stream).unwrap();

    let (_d2, target) = open_temp();
    target.apply(PG, &[cmd("mine", vec![write(0, b"mine")])], b"mine-state").unwrap();
    let check_untouched = |target: &Store| {
        assert_eq!(read_all(target, "mine", SNAP_HEAD), Ok(b"mine".to_vec()));
        assert_eq!(target.pg_state(PG).unwrap(), Some(b"mine-state".to_vec()));
        assert_eq!(target.list_all(PG, None, 10).unwrap().0, vec!["mine".to_string()]);
    };
    // Every single-byte flip (sampled) and every truncation point (sampled) is refused.
    for pos in (0..stream.len()).step_by(97).chain([stream.len() - 1]) {
        let mut bad = stream.clone();
        bad[pos] ^= 0x20;
        let err = target.import_pg(PG, &mut bad.as_slice()).unwrap_err();
        assert!(
            matches!(err, StoreError::BadExport { .. } | StoreError::ExportPgMismatch { .. }),
            "flip at {pos}: {err}"
        );
        check_untouched(&target);
    }
    for cut in (0..stream.len()).step_by(131) {
        let err = target.import_pg(PG, &mut &stream[..cut]).unwrap_err();
        assert!(matches!(err, StoreError::BadExport { .. }), "cut at {cut}: {err}");
        check_untouched(&target);
    }
    let err = target.import_pg(PgId { pool: 1, seed: 8 }, &mut stream.as_slice()).unwrap_err();
    assert!(matches!(err, StoreError::ExportPgMismatch { .. }), "{err}");
    // A stream followed by other bytes: import stops at its end record.
    let mut followed = stream.clone();
    followed.extend_from_slice(b"trailing");
    let mut reader = followed.as_slice();
    target.import_pg(PG, &mut reader).unwrap();
    assert_eq!(reader, b"trailing");
}

/// The small PG the golden streams hold: two versions of an object (the older one kept for
/// snapshot 1), a chunk, an xattr, an omap entry and header, and a pg_state.
fn golden_pg() -> (tempfile::TempDir, quarry_store::Store) {
    let (dir, store) = open_temp();
    let snapc = quarry_types::SnapContext { seq: 0, snaps: vec![] };
    let first = cmd_at("obj", &snapc, (100, 1), vec![write(0, b"first")]);
    store.apply(PG, &[first], b"state-1").unwrap();
    let snapc = quarry_types::SnapContext { seq: 1, snaps: vec![1] };
    let second = cmd_at(
        "obj",
        &snapc,
        (200, 2),
        vec![
            write(2, b"second"),
            ObjectOp::SetXattr { name: "x".into(), value: Bytes::from_static(b"xv") },
            ObjectOp::OmapSetVals {
                vals: BTreeMap::from([("k".into(), Bytes::from_static(b"v"))]),
            },
            ObjectOp::OmapSetHeader { header: Bytes::from_static(b"h") },
        ],
    );
    store.apply(PG, &[second], b"state-2").unwrap();
    (dir, store)
}

fn golden_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

/// Version 1 of the stream (before the snapshot index) still imports: the golden bytes of
/// `tests/golden/export_v1.hex` give the same objects as the PG they were exported from, with
/// an empty snapshot index.
#[test]
fn export_stream_version_1_still_imports() {
    let text = std::fs::read_to_string(golden_file("export_v1.hex")).unwrap();
    let golden = quarry_persist::golden::parse(&text);
    let (_, stream) = &golden[0];
    let (_dir, target) = open_temp();
    target.import_pg(PG, &mut stream.as_slice()).unwrap();
    let (_dir2, source) = golden_pg();
    assert_eq!(target.list_all(PG, None, 10).unwrap(), source.list_all(PG, None, 10).unwrap());
    assert_eq!(
        target.object_versions(PG, "obj").unwrap(),
        source.object_versions(PG, "obj").unwrap()
    );
    assert_eq!(target.pg_state(PG).unwrap(), Some(b"state-2".to_vec()));
    for snap in [1, SNAP_HEAD] {
        assert_eq!(read_all(&target, "obj", snap), read_all(&source, "obj", snap));
    }
    assert!(target.indexed_snaps(PG, "obj").unwrap().is_empty());
}

/// The golden PG plus a purged snapshot (3) and two duplicate table entries (an exclusive
/// create with a request id, and a resend of it recorded as answered).
fn golden_pg_v3() -> (tempfile::TempDir, quarry_store::Store) {
    let (dir, store) = golden_pg();
    assert!(store.apply_trim(PG, 3, 10, b"state-3").unwrap().purged);
    let reqid = |tid| reqid("client.admin", 0xabcd, tid);
    let create = ObjectCommand { reqid: Some(reqid(1)), ..cmd("new", vec![create_excl()]) };
    let again = ObjectCommand { reqid: Some(reqid(2)), ..cmd("new", vec![create_excl()]) };
    store.apply(PG, &[create, again], b"state-4").unwrap();
    (dir, store)
}

/// Version 2 of the stream (duplicate table, no snapshot index) still imports: the objects and
/// the duplicate table of `tests/golden/export_v2.hex` arrive, with an empty snapshot index.
#[test]
fn export_stream_version_2_still_imports() {
    let text = std::fs::read_to_string(golden_file("export_v2.hex")).unwrap();
    let golden = quarry_persist::golden::parse(&text);
    let (_, stream) = &golden[0];
    let (_dir, target) = open_temp();
    target.import_pg(PG, &mut stream.as_slice()).unwrap();
    let (_dir2, source) = golden_pg();
    for snap in [1, SNAP_HEAD] {
        assert_eq!(read_all(&target, "obj", snap), read_all(&source, "obj", snap));
    }
    assert!(target.indexed_snaps(PG, "obj").unwrap().is_empty());
    // The duplicate table came along: a resend of the recorded create is answered as before
    // (success), not run again (EEXIST).
    let resend = ObjectCommand {
        reqid: Some(reqid("client.admin", 0xabcd, 1)),
        ..cmd("new", vec![create_excl()])
    };
    let replies = target.apply(PG, &[resend], b"state-x").unwrap();
    assert!(matches!(replies[0], quarry_types::OpReply::Ok(_)), "{replies:?}");
}

/// Golden bytes of the PG export stream (the Raft snapshot OSDs send each other; format
/// `QRYPGEX1` version 3) of the golden PG with a purged snapshot and duplicate table entries:
/// `tests/golden/export_v3.hex` (snapshot index row, purged snapshot, 'D' records). A
/// failure means the stream format changed: bump its version and keep importing the old
/// ones; never edit the file.
#[test]
fn export_stream_bytes_are_pinned() {
    let (_dir, store) = golden_pg_v3();
    let mut stream = Vec::new();
    store.export_pg(PG, &mut stream).unwrap();
    let header = "PG export stream QRYPGEX1 version 3 (quarry-store).\n\
                  Generated once; never edit: a change of bytes needs a new version.";
    quarry_persist::golden::check(
        &golden_file("export_v3.hex"),
        header,
        &[("export", stream.clone())],
    );
    // It imports back to the same PG.
    let (_dir1, copy) = open_temp();
    copy.import_pg(PG, &mut stream.as_slice()).unwrap();
    let mut again = Vec::new();
    copy.export_pg(PG, &mut again).unwrap();
    assert_eq!(again, stream);

    // A stream of a newer format version is refused as too new (not as a bad stream), and
    // the importing store is left as it was.
    let mut newer = stream;
    newer[8..12].copy_from_slice(&4u32.to_le_bytes());
    let (_dir2, target) = open_temp();
    let err = target.import_pg(PG, &mut newer.as_slice()).unwrap_err();
    assert!(matches!(err, StoreError::ExportFormatTooNew { found: 4, supported: 3 }), "{err}");
    assert_eq!(target.pg_state(PG).unwrap(), None);
}
