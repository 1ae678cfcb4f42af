//! The store's file format across builds: a store written by a format-2 build (redb 2.6, redb's
//! file format 2, which redb 5 cannot read) is refused with a clear error and left untouched,
//! never misread; a new store is format 3.

use std::path::Path;

use quarry_store::{Store, StoreError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// The format-2 store fixture (`tests/golden/store_format2_redb2.rle`, written once by the
/// last format-2 build): its length and crc32c, to check the decoder rebuilt it byte for byte.
const V2_LEN: u64 = 6_836_224;
const V2_CRC: u32 = 0x4804_5bd5;

/// Rebuilds the fixture's file from its run-length text (format in the file's header).
fn decode_rle(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["len", len] => out = vec![0; len.parse().unwrap()],
            ["fill", offset, count, byte] => {
                let offset: usize = offset.parse().unwrap();
                let count: usize = count.parse().unwrap();
                let byte = u8::from_str_radix(byte, 16).unwrap();
                out[offset..offset + count].fill(byte);
            }
            ["data", offset, hex] => {
                let offset: usize = offset.parse().unwrap();
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                out[offset..offset + bytes.len()].copy_from_slice(&bytes);
            }
            other => panic!("bad fixture line {other:?}"),
        }
    }
    out
}

fn write_v2_store(dir: &Path) -> std::path::PathBuf {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/store_format2_redb2.rle");
    let bytes = decode_rle(&std::fs::read_to_string(fixture).unwrap());
    assert_eq!(bytes.len() as u64, V2_LEN);
    assert_eq!(crc32c::crc32c(&bytes), V2_CRC, "the fixture decodes to the file it was made of");
    let file = dir.join(quarry_store::STORE_FILE);
    std::fs::write(&file, &bytes).unwrap();
    file
}

/// Goal: a store written by a format-2 build (redb 2.6's file format) is refused with
/// `FormatRetired`, whose message says what to do (rebuild the OSD from its replicas), and the
/// file is left exactly as it was (an older build can still open it).
/// Method: the real file a format-2 build wrote (fixture), opened by path and by directory.
/// Teeth: without the mapping of redb's `UpgradeRequired` in `Store::open_with` the error is an
/// opaque database error and the match below fails (tried once).
#[test]
fn a_format_2_store_is_refused_untouched_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_v2_store(dir.path());
    for path in [file.clone(), dir.path().to_path_buf()] {
        let err = Store::open(&path).expect_err("a format-2 store must not open");
        match &err {
            StoreError::FormatRetired { path: reported, redb_format: 2 } => {
                assert_eq!(reported, &file)
            }
            other => panic!("expected FormatRetired, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("store format 2 or older"), "{message}");
        assert!(message.contains("Rebuild this OSD from its replicas"), "{message}");
        let after = std::fs::read(&file).unwrap();
        assert_eq!(after.len() as u64, V2_LEN, "the refused file keeps its length");
        assert_eq!(crc32c::crc32c(&after), V2_CRC, "the refused file is not modified");
    }
    // Nothing was created beside it either (no partial file, no second store).
    let names: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from(quarry_store::STORE_FILE)]);
}

/// Goal: a new store carries the format-3 marker (a format-2 build meeting it, if its redb
/// reads the file at all, refuses it as `FormatTooNew` instead of misreading it).
#[test]
fn a_new_store_is_format_3() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(quarry_store::STORE_FILE);
    drop(Store::open(&file).unwrap());
    let db = redb::Database::open(&file).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
    let marker = meta.get("format").unwrap().unwrap().value().to_vec();
    let mut want = b"QRYSTORE".to_vec();
    want.extend_from_slice(&3u32.to_le_bytes());
    assert_eq!(marker, want);
}
