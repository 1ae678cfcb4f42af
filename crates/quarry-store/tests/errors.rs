//! Error codes of each op (Ceph's semantics), per-command atomicity, limits, paging and the
//! PG-level calls (pg_state, list, usage, format marker).

use std::collections::BTreeMap;

use bytes::Bytes;
use quarry_store::{ObjectCommand, PoolUsage, Store, StoreError};
use quarry_types::{
    CmpOp, ErrorCode, ObjectOp, OpOutput, OpReply, Payload, PgId, SnapContext, OBJECT_NAME_LEN_MAX,
    OBJECT_SIZE_MAX, SNAP_HEAD,
};

use crate::common::*;

#[test]
fn reads_of_a_missing_object_are_enoent() {
    let (_dir, store) = open_temp();
    for op in [
        ObjectOp::Read { off: 0, len: 0 },
        ObjectOp::Stat,
        ObjectOp::AssertExists,
        ObjectOp::GetXattr { name: "a".into() },
        ObjectOp::GetXattrs,
        ObjectOp::OmapGetVals { start_after: String::new(), prefix: String::new(), max: 10 },
        ObjectOp::OmapGetHeader,
    ] {
        let reply = store.read(PG, "nope", SNAP_HEAD, std::slice::from_ref(&op)).unwrap();
        assert_failed(&reply, 0, ErrorCode::ENOENT);
        // Same through apply (a guard in a write command).
        assert_failed(&apply1(&store, cmd("nope", vec![op])), 0, ErrorCode::ENOENT);
    }
}

#[test]
fn remove_missing_is_enoent_and_create_exclusive_existing_is_eexist() {
    let (_dir, store) = open_temp();
    assert_failed(&apply1(&store, cmd("o", vec![ObjectOp::Remove])), 0, ErrorCode::ENOENT);
    assert_ok(&apply1(&store, cmd("o", vec![ObjectOp::Create { exclusive: true }])));
    assert_failed(
        &apply1(&store, cmd("o", vec![ObjectOp::Create { exclusive: true }])),
        0,
        ErrorCode::EEXIST,
    );
    assert_ok(&apply1(&store, cmd("o", vec![ObjectOp::Create { exclusive: false }])));
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(vec![]));
    assert_ok(&apply1(&store, cmd("o", vec![ObjectOp::Remove])));
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Err(ErrorCode::ENOENT));
    assert_failed(&apply1(&store, cmd("o", vec![ObjectOp::Remove])), 0, ErrorCode::ENOENT);
}

#[test]
fn xattr_errors_and_guards() {
    let (_dir, store) = open_temp();
    let set = ObjectOp::SetXattr { name: "lock".into(), value: Bytes::from_static(b"owner1") };
    assert_ok(&apply1(&store, cmd("o", vec![set])));
    let get = |name: &str| ObjectOp::GetXattr { name: name.into() };
    assert_failed(&store.read(PG, "o", SNAP_HEAD, &[get("other")]).unwrap(), 0, ErrorCode::ENODATA);
    assert_eq!(
        assert_ok(&store.read(PG, "o", SNAP_HEAD, &[get("lock")]).unwrap()),
        vec![OpOutput::Xattr(Bytes::from_static(b"owner1"))]
    );
    let rm = |name: &str| ObjectOp::RmXattr { name: name.into() };
    assert_failed(&apply1(&store, cmd("o", vec![rm("other")])), 0, ErrorCode::ENODATA);
    assert_failed(&apply1(&store, cmd("missing", vec![rm("lock")])), 0, ErrorCode::ENOENT);
    let cmp = |op, value: &'static [u8]| ObjectOp::CmpXattr {
        name: "lock".into(),
        op,
        value: Bytes::from_static(value),
    };
    assert_ok(&apply1(&store, cmd("o", vec![cmp(CmpOp::Eq, b"owner1")])));
    assert_failed(
        &apply1(&store, cmd("o", vec![cmp(CmpOp::Eq, b"owner2")])),
        0,
        ErrorCode::ECANCELED,
    );
    assert_ok(&apply1(&store, cmd("o", vec![cmp(CmpOp::Gt, b"owner0")])));
    // An absent xattr compares as empty.
    let absent = ObjectOp::CmpXattr { name: "none".into(), op: CmpOp::Eq, value: Bytes::new() };
    assert_ok(&apply1(&store, cmd("o", vec![absent])));
    assert_ok(&apply1(&store, cmd("o", vec![rm("lock")])));
    assert_failed(&store.read(PG, "o", SNAP_HEAD, &[get("lock")]).unwrap(), 0, ErrorCode::ENODATA);
}

#[test]
fn omap_cmp_fails_with_ecanceled_on_mismatch_or_absence() {
    let (_dir, store) = open_temp();
    let vals = BTreeMap::from([("k".to_string(), Bytes::from_static(b"v1"))]);
    assert_ok(&apply1(&store, cmd("o", vec![ObjectOp::OmapSetVals { vals }])));
    let cmp = |key: &str, value: &'static [u8]| ObjectOp::OmapCmp {
        key: key.into(),
        op: CmpOp::Eq,
        value: Bytes::from_static(value),
    };
    assert_ok(&apply1(&store, cmd("o", vec![cmp("k", b"v1")])));
    assert_failed(&apply1(&store, cmd("o", vec![cmp("k", b"v2")])), 0, ErrorCode::ECANCELED);
    assert_failed(&apply1(&store, cmd("o", vec![cmp("absent", b"")])), 0, ErrorCode::ECANCELED);
    assert_failed(&apply1(&store, cmd("missing", vec![ObjectOp::OmapClear])), 0, ErrorCode::ENOENT);
    assert_failed(
        &apply1(&store, cmd("missing", vec![ObjectOp::OmapRmKeys { keys: vec!["k".into()] }])),
        0,
        ErrorCode::ENOENT,
    );
}

#[test]
fn limits_efbig_enametoolong_einval() {
    let (_dir, store) = open_temp();
    assert_failed(
        &apply1(&store, cmd("o", vec![write(OBJECT_SIZE_MAX - 1, b"xy")])),
        0,
        ErrorCode::EFBIG,
    );
    assert_failed(&apply1(&store, cmd("o", vec![write(u64::MAX, b"x")])), 0, ErrorCode::EFBIG);
    assert_ok(&apply1(&store, cmd("o", vec![write(OBJECT_SIZE_MAX - 2, b"xy")])));
    assert_failed(
        &apply1(&store, cmd("o", vec![ObjectOp::Truncate { size: OBJECT_SIZE_MAX + 1 }])),
        0,
        ErrorCode::EFBIG,
    );
    assert_failed(
        &apply1(&store, cmd("o", vec![ObjectOp::Zero { off: OBJECT_SIZE_MAX, len: 1 }])),
        0,
        ErrorCode::EFBIG,
    );
    let long = "n".repeat(OBJECT_NAME_LEN_MAX + 1);
    assert_failed(&apply1(&store, cmd(&long, vec![write(0, b"x")])), 0, ErrorCode::ENAMETOOLONG);
    assert_failed(
        &store.read(PG, &long, SNAP_HEAD, &[ObjectOp::Stat]).unwrap(),
        0,
        ErrorCode::ENAMETOOLONG,
    );
    assert_ok(&apply1(&store, cmd(&"n".repeat(OBJECT_NAME_LEN_MAX), vec![write(0, b"x")])));
    assert_failed(&apply1(&store, cmd("", vec![write(0, b"x")])), 0, ErrorCode::EINVAL);
    // Invalid snap contexts.
    for snapc in [
        SnapContext { seq: 1, snaps: vec![2] },
        SnapContext { seq: 5, snaps: vec![3, 3] },
        SnapContext { seq: 5, snaps: vec![1, 3] },
        SnapContext { seq: SNAP_HEAD, snaps: vec![] },
    ] {
        let reply = apply1(&store, cmd_at("s", &snapc, (1, 0), vec![write(0, b"x")]));
        assert_failed(&reply, 0, ErrorCode::EINVAL);
    }
    assert_eq!(read_all(&store, "s", SNAP_HEAD), Err(ErrorCode::ENOENT));
}

#[test]
fn payload_crc_mismatch_is_einval_and_stores_nothing() {
    let (_dir, store) = open_temp();
    let mut bad = Payload::new(Bytes::from(pattern(10000, 3)));
    bad.crc ^= 1;
    let reply = apply1(&store, cmd("o", vec![ObjectOp::Write { off: 0, data: bad.clone() }]));
    assert_failed(&reply, 0, ErrorCode::EINVAL);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Err(ErrorCode::ENOENT));
    // Damaged data with the original crc, in a whole chunk and in a partial one.
    for (off, flip) in [(0u64, 100usize), (4096, 9000)] {
        let mut p = Payload::new(Bytes::from(pattern(10000, 3)));
        let mut data = p.data.to_vec();
        data[flip] ^= 0x40;
        p.data = Bytes::from(data);
        let reply = apply1(&store, cmd("o", vec![ObjectOp::Write { off, data: p.clone() }]));
        assert_failed(&reply, 0, ErrorCode::EINVAL);
        let reply = apply1(&store, cmd("o", vec![ObjectOp::WriteFull { data: p }]));
        assert_failed(&reply, 0, ErrorCode::EINVAL);
    }
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Err(ErrorCode::ENOENT));
}

#[test]
fn mutations_through_read_are_erofs() {
    let (_dir, store) = open_temp();
    assert_ok(&apply1(&store, cmd("o", vec![write(0, b"abc")])));
    let ops = [ObjectOp::Stat, write(0, b"x")];
    assert_failed(&store.read(PG, "o", SNAP_HEAD, &ops).unwrap(), 1, ErrorCode::EROFS);
    assert_failed(&store.read(PG, "o", 3, &ops).unwrap(), 1, ErrorCode::EROFS);
    assert_failed(&store.read(PG, "o", 3, &[ObjectOp::Remove]).unwrap(), 0, ErrorCode::EROFS);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(b"abc".to_vec()));
}

#[test]
fn a_failing_op_leaves_no_trace_of_its_command() {
    let (_dir, store) = open_temp();
    let base = pattern(3 * 4096 + 100, 9);
    let vals = BTreeMap::from([("k".to_string(), Bytes::from_static(b"v"))]);
    assert_ok(&apply1(
        &store,
        cmd(
            "o",
            vec![
                write(0, &base),
                ObjectOp::SetXattr { name: "x".into(), value: Bytes::from_static(b"1") },
                ObjectOp::OmapSetVals { vals },
                ObjectOp::OmapSetHeader { header: Bytes::from_static(b"h") },
            ],
        ),
    ));
    let before = store
        .read(PG, "o", SNAP_HEAD, &[ObjectOp::Stat, ObjectOp::GetXattrs, ObjectOp::OmapGetHeader])
        .unwrap();
    let guard_fails =
        ObjectOp::CmpXattr { name: "x".into(), op: CmpOp::Eq, value: Bytes::from_static(b"2") };
    let vals2 = BTreeMap::from([("k2".to_string(), Bytes::from_static(b"v2"))]);
    let c = ObjectCommand {
        mtime: (999, 0),
        ..cmd(
            "o",
            vec![
                write(10, &pattern(9000, 4)),
                ObjectOp::Truncate { size: 50 },
                write(4096 * 5, &pattern(4096, 5)),
                ObjectOp::SetXattr { name: "x".into(), value: Bytes::from_static(b"changed") },
                ObjectOp::RmXattr { name: "x".into() },
                ObjectOp::OmapSetVals { vals: vals2 },
                ObjectOp::OmapClear,
                ObjectOp::Zero { off: 0, len: 10 },
                ObjectOp::Remove,
                ObjectOp::Create { exclusive: true },
                ObjectOp::SetXattr { name: "x".into(), value: Bytes::from_static(b"3") },
                guard_fails,
            ],
        )
    };
    // The failing command sits between two good ones in the same batch.
    let good = |name: &str| cmd(name, vec![write(0, b"fine")]);
    let replies = store.apply(PG, &[good("a"), c, good("b")], b"st").unwrap();
    assert_ok(&replies[0]);
    assert_failed(&replies[1], 11, ErrorCode::ECANCELED);
    assert_ok(&replies[2]);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(base));
    let after = store
        .read(PG, "o", SNAP_HEAD, &[ObjectOp::Stat, ObjectOp::GetXattrs, ObjectOp::OmapGetHeader])
        .unwrap();
    assert_eq!(before, after);
    let omap = store
        .read(PG, "o", SNAP_HEAD, &[ObjectOp::OmapGetKeys { start_after: String::new(), max: 100 }])
        .unwrap();
    assert_eq!(assert_ok(&omap), vec![OpOutput::OmapKeys { keys: vec!["k".into()], more: false }]);
    assert_eq!(read_all(&store, "a", SNAP_HEAD), Ok(b"fine".to_vec()));
    assert_eq!(read_all(&store, "b", SNAP_HEAD), Ok(b"fine".to_vec()));
    // A command that creates an object and then fails leaves no object behind.
    let reply = apply1(
        &store,
        cmd("new", vec![write(0, &pattern(8192, 1)), ObjectOp::Create { exclusive: true }]),
    );
    assert_failed(&reply, 1, ErrorCode::EEXIST);
    assert_eq!(read_all(&store, "new", SNAP_HEAD), Err(ErrorCode::ENOENT));
    assert_eq!(store.list(PG, None, 100).unwrap().0, vec!["a", "b", "o"]);
    assert!(store.verify_usage().unwrap().is_empty());
}

#[test]
fn ops_in_a_command_see_earlier_ops() {
    let (_dir, store) = open_temp();
    let reply = apply1(
        &store,
        cmd(
            "o",
            vec![
                write(0, b"hello world"),
                ObjectOp::Read { off: 6, len: 5 },
                ObjectOp::Zero { off: 0, len: 5 },
                ObjectOp::Read { off: 0, len: 0 },
                ObjectOp::Stat,
            ],
        ),
    );
    let out = assert_ok(&reply);
    assert_eq!(out[1], OpOutput::Data(Payload::new(Bytes::from_static(b"world"))));
    assert_eq!(out[3], OpOutput::Data(Payload::new(Bytes::from_static(b"\0\0\0\0\0 world"))));
    assert_eq!(out[4], OpOutput::Stat { size: 11, mtime_sec: 100, mtime_nsec: 5 });
}

#[test]
fn zero_on_missing_object_is_a_noop_and_never_grows() {
    let (_dir, store) = open_temp();
    assert_ok(&apply1(&store, cmd("o", vec![ObjectOp::Zero { off: 0, len: 100 }])));
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Err(ErrorCode::ENOENT));
    assert_ok(&apply1(&store, cmd("o", vec![write(0, b"abcdef")])));
    assert_ok(&apply1(&store, cmd("o", vec![ObjectOp::Zero { off: 3, len: 100 }])));
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(b"abc\0\0\0".to_vec()));
    // Reads past the end are short or empty.
    let out = assert_ok(
        &store
            .read(
                PG,
                "o",
                SNAP_HEAD,
                &[ObjectOp::Read { off: 4, len: 100 }, ObjectOp::Read { off: 100, len: 5 }],
            )
            .unwrap(),
    );
    assert_eq!(out[0], OpOutput::Data(Payload::new(Bytes::from_static(b"\0\0"))));
    assert_eq!(out[1], OpOutput::Data(Payload::new(Bytes::new())));
}

#[test]
fn sparse_writes_read_zeros_in_holes_and_truncate_drops_data() {
    let (_dir, store) = open_temp();
    assert_ok(&apply1(&store, cmd("o", vec![write(5 * 4096 + 10, b"tail")])));
    let mut want = vec![0u8; 5 * 4096 + 14];
    want[5 * 4096 + 10..].copy_from_slice(b"tail");
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(want));
    assert_eq!(store.chunk_rows(PG, "o").unwrap(), 1);
    // Shrink then grow: the dropped bytes must read back as zeros.
    assert_ok(&apply1(&store, cmd("o", vec![write(0, &pattern(4 * 4096, 2))])));
    assert_ok(&apply1(&store, cmd("o", vec![ObjectOp::Truncate { size: 4097 }])));
    assert_ok(&apply1(&store, cmd("o", vec![ObjectOp::Truncate { size: 8 * 4096 }])));
    let mut want = pattern(4097, 2);
    want.resize(8 * 4096, 0);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(want));
    assert!(store.chunk_rows(PG, "o").unwrap() <= 2, "truncated chunks must be dropped");
}

#[test]
fn omap_paging_is_bounded() {
    let (_dir, store) = open_temp();
    let vals: BTreeMap<String, Bytes> =
        (0..1500).map(|i| (format!("key{i:05}"), Bytes::from(format!("v{i}")))).collect();
    let mut more_vals = vals.clone();
    more_vals.insert("other".into(), Bytes::from_static(b"o"));
    assert_ok(&apply1(&store, cmd("o", vec![ObjectOp::OmapSetVals { vals: more_vals }])));
    let page = |start_after: &str, prefix: &str, max: u32| {
        let op =
            ObjectOp::OmapGetVals { start_after: start_after.into(), prefix: prefix.into(), max };
        match assert_ok(&store.read(PG, "o", SNAP_HEAD, &[op]).unwrap()).pop() {
            Some(OpOutput::OmapVals { vals, more }) => (vals, more),
            other => panic!("unexpected {other:?}"),
        }
    };
    let (v, more) = page("", "", 0);
    assert_eq!((v.len(), more), (1, true));
    let (v, more) = page("", "", 100_000);
    assert_eq!((v.len(), more), (1024, true));
    let (v, more) = page("", "key", 2000);
    assert_eq!((v.len(), more), (1024, true));
    let (v2, more) = page(v.keys().last().unwrap(), "key", 2000);
    assert_eq!((v2.len(), more), (1500 - 1024, false));
    assert_eq!(v2.keys().next().unwrap(), "key01024");
    let (v, more) = page("key01498", "key", 10);
    assert_eq!(
        (v.keys().cloned().collect::<Vec<_>>(), more),
        (vec!["key01499".to_string()], false)
    );
    let (v, more) = page("key99999", "", 10);
    assert_eq!((v.keys().cloned().collect::<Vec<_>>(), more), (vec!["other".to_string()], false));
    let keys = ObjectOp::OmapGetKeys { start_after: "key01400".into(), max: 1000 };
    match assert_ok(&store.read(PG, "o", SNAP_HEAD, &[keys]).unwrap()).pop() {
        Some(OpOutput::OmapKeys { keys, more }) => {
            assert_eq!(keys.len(), 100);
            assert!(!more);
        }
        other => panic!("unexpected {other:?}"),
    }
    let by_keys = ObjectOp::OmapGetValsByKeys { keys: vec!["key00003".into(), "nope".into()] };
    let out = assert_ok(&store.read(PG, "o", SNAP_HEAD, &[by_keys]).unwrap());
    assert_eq!(
        out,
        vec![OpOutput::OmapVals {
            vals: BTreeMap::from([("key00003".to_string(), Bytes::from_static(b"v3"))]),
            more: false
        }]
    );
}

#[test]
fn pg_state_list_usage_and_remove_pg() {
    let (_dir, store) = open_temp();
    let other = PgId { pool: 2, seed: 0 };
    assert_eq!(store.pg_state(PG).unwrap(), None);
    store.apply(PG, &[], b"log-1").unwrap();
    assert_eq!(store.pg_state(PG).unwrap(), Some(b"log-1".to_vec()));
    let mut cmds: Vec<ObjectCommand> = (0..5)
        .map(|i| cmd(&format!("obj{i}"), vec![write(0, &pattern(1000 * (i + 1), 1))]))
        .collect();
    cmds.push(cmd("obj0", vec![ObjectOp::Remove]));
    store.apply(PG, &cmds, b"log-2").unwrap();
    store.apply(other, &[cmd("x", vec![write(0, b"12345")])], b"other").unwrap();
    assert_eq!(store.pg_state(PG).unwrap(), Some(b"log-2".to_vec()));
    assert_eq!(
        store.list(PG, None, 100).unwrap(),
        (vec!["obj1".into(), "obj2".into(), "obj3".into(), "obj4".into()], false)
    );
    assert_eq!(store.list(PG, None, 2).unwrap(), (vec!["obj1".into(), "obj2".into()], true));
    assert_eq!(
        store.list(PG, Some("obj2"), 2).unwrap(),
        (vec!["obj3".into(), "obj4".into()], false)
    );
    assert_eq!(store.list(other, None, 10).unwrap(), (vec!["x".into()], false));
    let usage = store.usage().unwrap();
    assert_eq!(usage.get(&1), Some(&PoolUsage { objects: 4, bytes: 2000 + 3000 + 4000 + 5000 }));
    assert_eq!(usage.get(&2), Some(&PoolUsage { objects: 1, bytes: 5 }));
    assert_eq!(store.pgs().unwrap(), vec![PG, other]);
    store.remove_pg(PG).unwrap();
    assert_eq!(store.pg_state(PG).unwrap(), None);
    assert_eq!(store.list(PG, None, 100).unwrap(), (vec![], false));
    assert_eq!(store.usage().unwrap().get(&1), None);
    assert_eq!(read_all(&store, "obj1", SNAP_HEAD), Err(ErrorCode::ENOENT));
    assert_eq!(read_all(&store, "x", SNAP_HEAD).ok(), None, "x is in another PG");
    assert_eq!(
        store.read(other, "x", SNAP_HEAD, &[ObjectOp::Read { off: 0, len: 0 }]).unwrap(),
        OpReply::Ok(vec![OpOutput::Data(Payload::new(Bytes::from_static(b"12345")))])
    );
    assert!(store.verify_usage().unwrap().is_empty());
}

#[test]
fn reopen_keeps_data_and_refuses_foreign_or_newer_files() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.apply(PG, &[cmd("o", vec![write(0, b"persist")])], b"s").unwrap();
        store.checkpoint().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(b"persist".to_vec()));
    let file = store.path().to_path_buf();
    drop(store);
    // Pretend a newer Quarry wrote the store.
    {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta =
                txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
            let mut marker = b"QRYSTORE".to_vec();
            marker.extend_from_slice(&99u32.to_le_bytes());
            meta.insert("format", marker.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    match Store::open(&file) {
        Err(StoreError::FormatTooNew { found: 99, supported: 6, .. }) => {}
        other => panic!("expected FormatTooNew, got {other:?}"),
    }
    // A redb file that is not a store.
    let foreign = dir.path().join("foreign.redb");
    {
        let db = redb::Database::create(&foreign).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, u64>::new("something"))
            .unwrap()
            .insert(1, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&foreign).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
}

/// Goal: one op vector cannot make the store materialise more than `OBJECT_SIZE_MAX` bytes of
/// output (data, xattrs, omap): a short request repeating a large read (1024 ops of 4 MiB is
/// 4 GiB) would otherwise exhaust the OSD's memory, and through apply (a guard in a write
/// command) the entry stays in the log and crashes it again on every replay. Method: a 4 MiB
/// object; vectors whose outputs add up past the limit fail with EMSGSIZE at the op that
/// crosses it, through read and through apply (which then changes nothing); vectors within
/// the limit succeed.
#[test]
fn outputs_of_one_vector_are_bounded() {
    let (_dir, store) = open_temp();
    let size = 4 << 20;
    let data = pattern(size, 9);
    let big = ObjectOp::SetXattr { name: "big".into(), value: Bytes::from(pattern(size, 3)) };
    assert_ok(&apply1(&store, cmd("o", vec![write_full(&data), big])));
    let fit = (OBJECT_SIZE_MAX / size as u64) as usize;
    let reads = |n: usize| vec![ObjectOp::Read { off: 0, len: 0 }; n];

    let ok = assert_ok(&store.read(PG, "o", SNAP_HEAD, &reads(fit)).unwrap());
    assert_eq!(ok.len(), fit);
    let reply = store.read(PG, "o", SNAP_HEAD, &reads(fit + 1)).unwrap();
    assert_failed(&reply, fit as u32, ErrorCode::EMSGSIZE);
    // Each GetXattrs returns the name (and its length prefixes) too, so the `fit`-th one
    // already passes the limit.
    let xattrs = vec![ObjectOp::GetXattrs; fit];
    let reply = store.read(PG, "o", SNAP_HEAD, &xattrs).unwrap();
    assert_failed(&reply, fit as u32 - 1, ErrorCode::EMSGSIZE);

    let mut guarded = reads(fit + 1);
    guarded.insert(0, write(0, b"changed"));
    guarded.push(ObjectOp::SetXattr { name: "x".into(), value: Bytes::from_static(b"y") });
    assert_failed(&apply1(&store, cmd("o", guarded)), fit as u32 + 1, ErrorCode::EMSGSIZE);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(data), "the failed command changed nothing");
    let get = [ObjectOp::GetXattr { name: "x".into() }];
    assert_failed(&store.read(PG, "o", SNAP_HEAD, &get).unwrap(), 0, ErrorCode::ENODATA);
}
