//! Damaged metadata (format 2): flip a byte of a stored xattr, omap value, omap header,
//! `pg_state`, `pg_usage` or `dups` value with a raw redb write (behind the store's
//! back) and check that every read of it is `StoreError::Corrupt` (the OSD's EIO), that apply
//! fails instead of panicking, and that a format-1 store (values without crcs) is migrated at
//! open.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use quarry_store::ObjectCommand;
use quarry_store::{Store, StoreError};
use quarry_types::{CmpOp, ObjectOp, OpOutput, OpReply, SNAP_HEAD};
use redb::{ReadableTable, TableDefinition};

use crate::common::*;

const RAW_XATTRS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("xattrs");
const RAW_OMAP: TableDefinition<&[u8], &[u8]> = TableDefinition::new("omap");
const RAW_HEADER: TableDefinition<&[u8; 8], &[u8]> = TableDefinition::new("omap_header");
const RAW_PG_STATE: TableDefinition<&[u8; 12], &[u8]> = TableDefinition::new("pg_state");
const RAW_DUPS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dups");
const RAW_DUP_SEQ: TableDefinition<&[u8; 20], &[u8]> = TableDefinition::new("dup_seq");
const RAW_DUP_LOG: TableDefinition<&[u8; 20], &[u8]> = TableDefinition::new("dup_log");
const RAW_USAGE: TableDefinition<&[u8; 12], &[u8; 20]> = TableDefinition::new("pg_usage");
const RAW_USAGE_V1: TableDefinition<&[u8; 12], &[u8; 16]> = TableDefinition::new("pg_usage");
const RAW_META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Rewrites every value of a raw table with `f` (the key types differ per table).
macro_rules! rewrite {
    (usage $file:expr, $f:expr) => {{
        let db = redb::Database::create($file).expect("open raw db");
        let txn = db.begin_write().expect("begin");
        {
            let mut table = txn.open_table(RAW_USAGE).expect("table");
            let rows: Vec<_> = table
                .iter()
                .expect("iter")
                .map(|r| r.expect("row"))
                .map(|(k, v)| (*k.value(), v.value().to_vec()))
                .collect();
            assert!(!rows.is_empty(), "no row to rewrite");
            for (k, v) in rows {
                let v: [u8; 20] = $f(v).try_into().expect("20 bytes");
                table.insert(&k, &v).expect("write back");
            }
        }
        txn.commit().expect("commit");
    }};
    (slice $file:expr, $def:expr, $f:expr) => {{
        let db = redb::Database::create($file).expect("open raw db");
        let txn = db.begin_write().expect("begin");
        {
            let mut table = txn.open_table($def).expect("table");
            let rows: Vec<(Vec<u8>, Vec<u8>)> = table
                .iter()
                .expect("iter")
                .map(|r| r.expect("row"))
                .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .collect();
            assert!(!rows.is_empty(), "no row to rewrite");
            for (k, v) in rows {
                table.insert(k.as_slice(), $f(v).as_slice()).expect("write back");
            }
        }
        txn.commit().expect("commit");
    }};
    (array $file:expr, $def:expr, $f:expr) => {{
        let db = redb::Database::create($file).expect("open raw db");
        let txn = db.begin_write().expect("begin");
        {
            let mut table = txn.open_table($def).expect("table");
            let rows: Vec<_> = table
                .iter()
                .expect("iter")
                .map(|r| r.expect("row"))
                .map(|(k, v)| (*k.value(), v.value().to_vec()))
                .collect();
            assert!(!rows.is_empty(), "no row to rewrite");
            for (k, v) in rows {
                table.insert(&k, $f(v).as_slice()).expect("write back");
            }
        }
        txn.commit().expect("commit");
    }};
}

/// Flips one bit of the last byte of a value (past its crc).
fn flip_last(mut v: Vec<u8>) -> Vec<u8> {
    let last = v.len() - 1;
    v[last] ^= 0x04;
    v
}

fn xattr(name: &str) -> ObjectOp {
    ObjectOp::GetXattr { name: name.into() }
}

fn omap_vals() -> ObjectOp {
    ObjectOp::OmapGetVals { start_after: String::new(), prefix: String::new(), max: 10 }
}

fn with_reqid(c: ObjectCommand, tid: u64) -> ObjectCommand {
    ObjectCommand { reqid: Some(reqid("client.admin", 7, tid)), ..c }
}

/// A checkpointed store with one object carrying an xattr, an omap entry and a header, a
/// `pg_state`, usage counters and one duplicate-table entry; returns its file.
fn populated(dir: &Path) -> PathBuf {
    let store = Store::open(dir).unwrap();
    let ops = vec![
        write(0, b"data"),
        ObjectOp::SetXattr { name: "a".into(), value: Bytes::from_static(b"xattr-value") },
        ObjectOp::OmapSetVals {
            vals: BTreeMap::from([("k".to_string(), Bytes::from_static(b"omap-value"))]),
        },
        ObjectOp::OmapSetHeader { header: Bytes::from_static(b"header-bytes") },
    ];
    let reply = store.apply(PG, &[with_reqid(cmd("o", ops), 1)], b"pg-state").unwrap();
    assert_ok(&reply[0]);
    store.checkpoint().unwrap();
    store.path().to_path_buf()
}

fn corrupt<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
    match r {
        Err(StoreError::Corrupt { .. }) => {}
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

fn read(store: &Store, ops: Vec<ObjectOp>) -> Result<OpReply, StoreError> {
    store.read(PG, "o", SNAP_HEAD, &ops)
}

/// Goal: a damaged xattr, omap value or omap header is never returned nor compared: every
/// read of it (read path, guards inside apply, export) is `Corrupt`. Method: one store per
/// table, one bit flipped in the value's last byte by a raw redb write.
#[test]
fn damaged_xattr_omap_and_header_values_are_corrupt() {
    let guard = |ops| with_reqid(cmd("o", ops), 9);
    let cmp_x = || ObjectOp::CmpXattr {
        name: "a".into(),
        op: CmpOp::Eq,
        value: Bytes::from_static(b"xattr-value"),
    };
    let cmp_o = || ObjectOp::OmapCmp {
        key: "k".into(),
        op: CmpOp::Eq,
        value: Bytes::from_static(b"omap-value"),
    };

    let dir = tempfile::tempdir().unwrap();
    let file = populated(dir.path());
    rewrite!(slice & file, RAW_XATTRS, flip_last);
    let store = Store::open(&file).unwrap();
    corrupt("GetXattr", read(&store, vec![xattr("a")]));
    corrupt("GetXattrs", read(&store, vec![ObjectOp::GetXattrs]));
    corrupt("CmpXattr", read(&store, vec![cmp_x()]));
    corrupt("CmpXattr in apply", store.apply(PG, &[guard(vec![cmp_x(), write(0, b"x")])], b"s"));
    corrupt("export", store.export_pg(PG, &mut Vec::new()));
    // The other metadata of the object still reads.
    let reply = read(&store, vec![ObjectOp::OmapGetHeader]).unwrap();
    assert_eq!(assert_ok(&reply), vec![OpOutput::OmapHeader(Bytes::from_static(b"header-bytes"))]);

    let dir = tempfile::tempdir().unwrap();
    let file = populated(dir.path());
    rewrite!(slice & file, RAW_OMAP, flip_last);
    let store = Store::open(&file).unwrap();
    corrupt("OmapGetVals", read(&store, vec![omap_vals()]));
    corrupt(
        "OmapGetValsByKeys",
        read(&store, vec![ObjectOp::OmapGetValsByKeys { keys: vec!["k".into()] }]),
    );
    corrupt("OmapCmp", read(&store, vec![cmp_o()]));
    corrupt("OmapCmp in apply", store.apply(PG, &[guard(vec![cmp_o(), write(0, b"x")])], b"s"));
    corrupt("export", store.export_pg(PG, &mut Vec::new()));

    let dir = tempfile::tempdir().unwrap();
    let file = populated(dir.path());
    rewrite!(array & file, RAW_HEADER, flip_last);
    let store = Store::open(&file).unwrap();
    corrupt("OmapGetHeader", read(&store, vec![ObjectOp::OmapGetHeader]));
    corrupt("export", store.export_pg(PG, &mut Vec::new()));
    // Nothing was changed by the failed guards: the data is as written.
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(b"data".to_vec()));
}

/// Goal: damaged per-PG rows (`pg_state`, `pg_usage`) and duplicate-table rows are `Corrupt`
/// on every read, and apply over a damaged usage row fails instead of panicking (a crash
/// loop under panic=abort). Method: one store per table, one bit flipped by a raw write.
#[test]
fn damaged_pg_rows_and_dup_rows_are_corrupt_and_apply_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = populated(dir.path());
    rewrite!(array & file, RAW_PG_STATE, flip_last);
    let store = Store::open(&file).unwrap();
    corrupt("pg_state", store.pg_state(PG));
    corrupt("export", store.export_pg(PG, &mut Vec::new()));
    // A new apply overwrites the pg_state with a good one.
    store.apply(PG, &[cmd("p", vec![write(0, b"y")])], b"new-state").unwrap();
    assert_eq!(store.pg_state(PG).unwrap(), Some(b"new-state".to_vec()));

    let dir = tempfile::tempdir().unwrap();
    let file = populated(dir.path());
    rewrite!(usage & file, flip_last);
    let store = Store::open(&file).unwrap();
    corrupt("usage", store.usage());
    corrupt("verify_usage", store.verify_usage());
    corrupt("apply over the usage row", store.apply(PG, &[cmd("p", vec![write(0, b"y")])], b"s"));
    assert_eq!(read_all(&store, "p", SNAP_HEAD), Err(quarry_types::ErrorCode::ENOENT));

    let dir = tempfile::tempdir().unwrap();
    let file = populated(dir.path());
    rewrite!(array & file, RAW_DUP_LOG, flip_last);
    let store = Store::open(&file).unwrap();
    corrupt("dup_reply", store.dup_reply(PG, &reqid("client.admin", 7, 1)));
    corrupt("export over dups", store.export_pg(PG, &mut Vec::new()));
    let resend = with_reqid(cmd("o", vec![write(0, b"again")]), 1);
    corrupt("resend answered from a damaged dup row", store.apply(PG, &[resend], b"s"));
    // A damaged row held request ids nobody can read: a new request of the PG may be one of
    // them, so it fails too, and nothing of it is applied.
    let fresh = with_reqid(cmd("o", vec![write(0, b"fresh")]), 2);
    let error = store.apply(PG, std::slice::from_ref(&fresh), b"s").unwrap_err();
    assert!(quarry_store::is_damaged_dup_table(&error), "{error}");
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(b"data".to_vec()));
    // Commands without a request id and other PGs are not affected.
    assert_ok(&store.apply(PG, &[cmd("p", vec![write(0, b"p")])], b"s").unwrap()[0]);
    let other = quarry_types::PgId { pool: PG.pool, seed: PG.seed + 1 };
    let elsewhere = with_reqid(cmd("o", vec![write(0, b"x")]), 3);
    assert_ok(&store.apply(other, &[elsewhere], b"s").unwrap()[0]);
    // What a PG with one voter does (the OSD's state machine): the table is dropped, and the
    // PG's requests are applied and recorded again; a healthy table is left alone.
    assert!(!store.drop_damaged_dups(other).unwrap());
    assert_eq!(store.dup_count(other).unwrap(), 1);
    assert!(store.drop_damaged_dups(PG).unwrap());
    assert_ok(&store.apply(PG, std::slice::from_ref(&fresh), b"s").unwrap()[0]);
    assert_eq!(store.dup_count(PG).unwrap(), 1);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(b"fresh".to_vec()));
    drop(store);
    // Durably: the reopened store holds the new entry only.
    let store = Store::open(&file).unwrap();
    assert!(store.dup_reply(PG, &reqid("client.admin", 7, 2)).unwrap().is_some());
    assert_eq!(store.dup_reply(PG, &reqid("client.admin", 7, 1)).unwrap(), None);
}

/// Goal: usage counters that a command would drive below zero (a stale or damaged row that
/// still passes its crc) are a `Corrupt` error from apply, not the old assert. Method: a
/// correctly sealed row saying (0 objects, 1 byte) under an existing object, then remove it.
#[test]
fn usage_going_negative_is_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = populated(dir.path());
    {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(RAW_USAGE).unwrap();
            let key = *table.iter().unwrap().next().unwrap().unwrap().0.value();
            let mut plain = [0u8; 16];
            plain[8..].copy_from_slice(&1u64.to_le_bytes());
            let mut row = [0u8; 20];
            row[..4].copy_from_slice(&crc32c::crc32c(&plain).to_le_bytes());
            row[4..].copy_from_slice(&plain);
            table.insert(&key, &row).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(&file).unwrap();
    corrupt("remove under zero usage", store.apply(PG, &[cmd("o", vec![ObjectOp::Remove])], b"s"));
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(b"data".to_vec()));
}

/// Rewrites a format-3 store as format 1 wrote it: chunk data in redb rows (as format 2),
/// metadata values without their crc, the 16-byte usage row, marker version 1.
fn downgrade_to_v1(file: &Path) {
    downgrade_to_v2(file);
    let strip = |v: Vec<u8>| v[4..].to_vec();
    rewrite!(slice file, RAW_XATTRS, strip);
    rewrite!(slice file, RAW_OMAP, strip);
    rewrite!(array file, RAW_HEADER, strip);
    rewrite!(array file, RAW_PG_STATE, strip);
    rewrite!(slice file, RAW_DUPS, strip);
    rewrite!(array file, RAW_DUP_SEQ, strip);
    let db = redb::Database::create(file).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let rows: Vec<([u8; 12], [u8; 20])> = {
            let t = txn.open_table(RAW_USAGE).unwrap();
            let rows = t.iter().unwrap().map(|r| r.unwrap()).map(|(k, v)| (*k.value(), *v.value()));
            rows.collect()
        };
        txn.delete_table(RAW_USAGE).unwrap();
        let mut t = txn.open_table(RAW_USAGE_V1).unwrap();
        for (k, v) in rows {
            let plain: [u8; 16] = v[4..].try_into().unwrap();
            t.insert(&k, &plain).unwrap();
        }
        let mut marker = b"QRYSTORE".to_vec();
        marker.extend_from_slice(&1u32.to_le_bytes());
        txn.open_table(RAW_META).unwrap().insert("format", marker.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

/// Goal: a format-1 store (metadata without crcs) opens: it is migrated in place to format 2
/// (then to format 3, the data moving to the data file),
/// every value reads back as it was, and the migrated values are checked from then on.
/// Method: a store written by this build and rewritten to format 1's encoding behind its
/// back (raw redb writes), opened, read, damaged again.
#[test]
fn a_format_1_store_is_migrated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = populated(dir.path());
    downgrade_to_v1(&file);
    assert_eq!(marker_version(&file), 1);
    let store = Store::open(&file).unwrap();
    let reply = read(
        &store,
        vec![
            xattr("a"),
            ObjectOp::OmapGetValsByKeys { keys: vec!["k".into()] },
            ObjectOp::OmapGetHeader,
        ],
    )
    .unwrap();
    assert_eq!(
        assert_ok(&reply),
        vec![
            OpOutput::Xattr(Bytes::from_static(b"xattr-value")),
            OpOutput::OmapVals {
                vals: BTreeMap::from([("k".to_string(), Bytes::from_static(b"omap-value"))]),
                more: false
            },
            OpOutput::OmapHeader(Bytes::from_static(b"header-bytes")),
        ]
    );
    assert_eq!(store.pg_state(PG).unwrap(), Some(b"pg-state".to_vec()));
    let usage = store.usage().unwrap();
    assert_eq!((usage[&PG.pool].objects, usage[&PG.pool].bytes), (1, 4));
    assert_eq!(store.verify_usage().unwrap(), Vec::new());
    assert!(store.dup_reply(PG, &reqid("client.admin", 7, 1)).unwrap().is_some());
    store.export_pg(PG, &mut Vec::new()).unwrap();
    drop(store);
    assert_eq!(marker_version(&file), 6);
    assert_eq!(raw_table_len(&file, "dup_seq"), None);
    // Reopening a migrated store changes nothing; its values are now checked.
    drop(Store::open(&file).unwrap());
    rewrite!(slice & file, RAW_XATTRS, flip_last);
    let store = Store::open(&file).unwrap();
    corrupt("GetXattr after migration", read(&store, vec![xattr("a")]));
}
