//! Damaged chunks: flip bytes of a stored chunk value with a raw redb write (behind the
//! store's back) and check that reads, read-modify-writes and exports refuse with
//! `StoreError::Corrupt` instead of returning or propagating wrong data.

use quarry_store::{Store, StoreError};
use quarry_types::{ObjectOp, OpReply, SNAP_HEAD};
use redb::{ReadableTable, TableDefinition};

use crate::common::*;

const RAW_CHUNKS: TableDefinition<&[u8; 24], &[u8]> = TableDefinition::new("chunks");
const RAW_TAILS: TableDefinition<&[u8; 24], &[u8]> = TableDefinition::new("chunk_tails");

/// Flips one bit of byte `byte` after the 4-byte crc of row number `row` (in key order) of a
/// chunk table (`chunks`: crc ++ inline data) of the file.
fn damage_chunk(file: &std::path::Path, row: usize, byte: usize) {
    damage_row(file, RAW_CHUNKS, row, 4 + byte);
}

/// Flips one bit of byte `byte` of row number `row` of `table`.
fn damage_row(
    file: &std::path::Path,
    def: TableDefinition<&[u8; 24], &[u8]>,
    row: usize,
    byte: usize,
) {
    let db = redb::Database::create(file).expect("open raw db");
    let txn = db.begin_write().expect("begin");
    {
        let mut table = txn.open_table(def).expect("chunks table");
        let (key, mut value) = {
            let (k, v) = table.iter().expect("iter").nth(row).expect("row exists").expect("row");
            (*k.value(), v.value().to_vec())
        };
        assert!(value.len() > byte, "row too short to damage");
        value[byte] ^= 0x08;
        table.insert(&key, value.as_slice()).expect("write back");
    }
    txn.commit().expect("commit");
}

fn is_corrupt(result: Result<OpReply, StoreError>) -> bool {
    matches!(result, Err(StoreError::Corrupt { .. }))
}

#[test]
fn a_damaged_chunk_is_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(3 * 4096, 6);
    let file = {
        let store = Store::open(dir.path()).unwrap();
        store.apply(PG, &[cmd("o", vec![write(0, &data)])], b"s").unwrap();
        store.checkpoint().unwrap();
        store.path().to_path_buf()
    };
    damage_chunk(&file, 1, 17);
    // Chunk 2's last bytes live in the tail table: damage them too.
    damage_row(&file, RAW_TAILS, 2, 30);
    let store = Store::open(&file).unwrap();
    match store.read(PG, "o", SNAP_HEAD, &[ObjectOp::Read { off: 8192, len: 1 }]) {
        Err(StoreError::Corrupt { detail, .. }) => assert!(detail.contains("chunk 2"), "{detail}"),
        other => panic!("expected Corrupt for the damaged tail, got {other:?}"),
    }
    // Reads touching chunk 1 fail; reads of other chunks still work.
    assert!(is_corrupt(store.read(PG, "o", SNAP_HEAD, &[ObjectOp::Read { off: 0, len: 0 }])));
    assert!(is_corrupt(store.read(
        PG,
        "o",
        SNAP_HEAD,
        &[ObjectOp::Read { off: 4096 + 17, len: 1 }]
    )));
    let reply = store.read(PG, "o", SNAP_HEAD, &[ObjectOp::Read { off: 0, len: 4096 }]).unwrap();
    assert_eq!(
        reply,
        OpReply::Ok(vec![quarry_types::OpOutput::Data(quarry_types::Payload::new(
            data[..4096].to_vec()
        ))])
    );
    match store.read(PG, "o", SNAP_HEAD, &[ObjectOp::Read { off: 4096, len: 10 }]) {
        Err(StoreError::Corrupt { pg, object, detail }) => {
            assert_eq!((pg, object.as_str()), (PG, "o"));
            assert!(detail.contains("chunk 1"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A partial write into the damaged chunk must merge with it: the whole batch is refused.
    let before = store.pg_state(PG).unwrap();
    let result = store.apply(
        PG,
        &[cmd("other", vec![write(0, b"x")]), cmd("o", vec![write(4096 + 5, b"patch")])],
        b"new",
    );
    assert!(matches!(result, Err(StoreError::Corrupt { .. })), "{result:?}");
    assert_eq!(store.pg_state(PG).unwrap(), before, "a failed batch must not commit");
    assert_eq!(read_all(&store, "other", SNAP_HEAD), Err(quarry_types::ErrorCode::ENOENT));
    // Export refuses to spread the damage.
    let mut out = Vec::new();
    assert!(matches!(store.export_pg(PG, &mut out), Err(StoreError::Corrupt { .. })));
    // Overwriting the whole chunks repairs them (no read needed).
    store.apply(PG, &[cmd("o", vec![write(4096, &data[4096..])])], b"fixed").unwrap();
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(data));
}
