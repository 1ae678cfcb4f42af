//! Reads share one read transaction until the next commit (`view.rs`): every kind of commit
//! must end that sharing. Each test reads first (so a shared view exists), then changes the
//! store by one kind of commit, then reads again and must see the change.

use quarry_types::{ErrorCode, SnapContext, SNAP_HEAD};

use crate::common::*;

#[test]
fn a_read_after_a_snapshot_trim_sees_the_clone_gone() {
    let (_dir, store) = open_temp();
    apply1(&store, cmd("obj", vec![write_full(b"old")]));
    let snapc = SnapContext { seq: 3, snaps: vec![3] };
    apply1(&store, cmd_at("obj", &snapc, (200, 0), vec![write_full(b"new")]));
    assert_eq!(read_all(&store, "obj", 3).as_deref(), Ok(b"old".as_slice()));
    assert!(store.apply_trim(PG, 3, 10, b"trimmed").unwrap().purged);
    assert_eq!(read_all(&store, "obj", 3), Err(ErrorCode::ENOENT), "the trimmed clone was read");
    assert_eq!(read_all(&store, "obj", SNAP_HEAD).as_deref(), Ok(b"new".as_slice()));
}

#[test]
fn a_read_after_a_pg_removal_finds_nothing() {
    let (_dir, store) = open_temp();
    apply1(&store, cmd("obj", vec![write_full(&pattern(8192, 4))]));
    assert_eq!(read_all(&store, "obj", SNAP_HEAD), Ok(pattern(8192, 4)));
    store.remove_pg(PG).unwrap();
    assert_eq!(read_all(&store, "obj", SNAP_HEAD), Err(ErrorCode::ENOENT), "a removed PG was read");
}

#[test]
fn a_read_after_an_import_sees_the_imported_data() {
    let (_dir, store) = open_temp();
    apply1(&store, cmd("obj", vec![write_full(b"exported")]));
    let mut stream = Vec::new();
    store.export_pg(PG, &mut stream).unwrap();
    apply1(&store, cmd("obj", vec![write_full(b"written after the export")]));
    assert_eq!(
        read_all(&store, "obj", SNAP_HEAD).as_deref(),
        Ok(b"written after the export".as_slice())
    );
    store.import_pg(PG, &mut stream.as_slice()).unwrap();
    assert_eq!(
        read_all(&store, "obj", SNAP_HEAD).as_deref(),
        Ok(b"exported".as_slice()),
        "the import was not seen"
    );
}
