//! Damaged chunks: flip bytes of a chunk's data in the data file, or of its row with a raw
//! redb write, or cut the data file short (behind the store's back), and check that reads,
//! read-modify-writes and exports refuse with `StoreError::Corrupt` instead of returning or
//! propagating wrong data.

use quarry_store::{Store, StoreError};
use quarry_types::{ObjectOp, OpReply, SNAP_HEAD};
use redb::{ReadableTable, TableDefinition};

use crate::common::*;

const RAW_EXTENTS: TableDefinition<&[u8; 24], &[u8]> = TableDefinition::new("extents");

/// Flips one bit of byte `byte` of block `block` of the store's data file.
pub(crate) fn damage_block(file: &std::path::Path, block: u64, byte: u64) {
    use std::os::unix::fs::FileExt;
    let data = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file.with_extension("data"))
        .expect("open the data file");
    let at = block * 4096 + byte;
    let mut b = [0u8; 1];
    data.read_exact_at(&mut b, at).expect("read the byte");
    b[0] ^= 0x08;
    data.write_all_at(&b, at).expect("write it back");
}

/// Writes object "o" of `size` bytes: 512 KiB of data, a hole to 1.25 MiB (the whole second
/// 512 KiB piece and the start of the third), data to the end, and 10,000 bytes rewritten at
/// 2 MiB + 5000 (three chunks placed elsewhere: the block runs break); checkpointed. Returns
/// the object's bytes. Blocks 0..128 hold the first 512 KiB, then the tail's follow.
fn write_holey_object(store: &Store, size: usize) -> Vec<u8> {
    let mut want = vec![0u8; size];
    let first = pattern(1 << 19, 3);
    let tail_at = 5 << 18;
    let tail = pattern(size - tail_at, 5);
    let patch = pattern(10_000, 9);
    want[..1 << 19].copy_from_slice(&first);
    want[tail_at..].copy_from_slice(&tail);
    want[(2 << 20) + 5000..(2 << 20) + 15_000].copy_from_slice(&patch);
    store.apply(PG, &[cmd("o", vec![write(0, &first)])], b"s").unwrap();
    store.apply(PG, &[cmd("o", vec![write(tail_at as u64, &tail)])], b"s").unwrap();
    store.apply(PG, &[cmd("o", vec![write((2 << 20) + 5000, &patch)])], b"s").unwrap();
    store.checkpoint().unwrap();
    want
}

/// A [`quarry_store::ReadSink`] that records what it is given; it refuses the start (or
/// the piece numbered `refuse_piece`) when told to.
#[derive(Default)]
struct Recorder {
    refuse_start: bool,
    refuse_piece: Option<usize>,
    started: std::sync::Mutex<Option<usize>>,
    pieces: std::sync::Mutex<Vec<bytes::Bytes>>,
    ended: std::sync::Mutex<Option<u32>>,
    aborted: std::sync::atomic::AtomicBool,
}

impl quarry_store::ReadSink for Recorder {
    fn start(&self, len: usize) -> bool {
        let mut started = self.started.lock().unwrap();
        assert!(started.is_none(), "started twice");
        *started = Some(len);
        !self.refuse_start
    }
    fn piece(&self, piece: bytes::Bytes) -> bool {
        let mut pieces = self.pieces.lock().unwrap();
        assert!(self.ended.lock().unwrap().is_none(), "a piece after the end");
        if self.refuse_piece == Some(pieces.len()) {
            return false;
        }
        pieces.push(piece);
        true
    }
    fn end(&self, crc: u32) {
        assert!(self.ended.lock().unwrap().replace(crc).is_none(), "ended twice");
    }
    fn abort(&self) {
        assert!(self.ended.lock().unwrap().is_none(), "aborted after the end");
        self.aborted.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Recorder {
    fn joined(&self) -> Vec<u8> {
        self.pieces.lock().unwrap().iter().flat_map(|p| p.iter().copied()).collect()
    }
}

/// The output of a read of `name` given to `sink`.
fn read_to_sink(
    store: &Store,
    name: &str,
    off: u64,
    sink: &Recorder,
) -> Result<quarry_types::Payload, StoreError> {
    let ops = [ObjectOp::Read { off, len: 0 }];
    match store.read_to(PG, name, SNAP_HEAD, &ops, Some(sink))? {
        OpReply::Ok(mut out) => match out.pop() {
            Some(quarry_types::OpOutput::Data(p)) => Ok(p),
            _ => panic!("a read without data"),
        },
        OpReply::Failed { code, .. } => panic!("read failed: {code:?}"),
    }
}

/// Goal: a large read given to a sink (the OSD streams it to the client while it is read)
/// hands over exactly the bytes and crc of the plain read, in checked pieces of at most
/// 512 KiB, and ends only when all were given; a damaged chunk stops it before the piece that
/// holds it (nothing damaged is given) and fails the read; a sink that refuses the start
/// gets nothing and the read returns its data, one that refuses a piece (its receiver gone)
/// gets no end but an abort before the read returns its data the plain way. Method: an
/// object with a hole and rewritten chunks (as above), pooled piece buffers reused between
/// reads of other objects (holes must read as zeros), then a damaged block.
#[test]
fn a_large_read_given_to_a_sink_arrives_checked_piece_by_piece() {
    let dir = tempfile::tempdir().unwrap();
    let size = (3 << 20) + 100;
    let full = vec![0x5au8; 3 << 20];
    let (file, want) = {
        let store = Store::open(dir.path()).unwrap();
        let want = write_holey_object(&store, size);
        store.apply(PG, &[cmd("f", vec![write(0, &full)])], b"s").unwrap();
        for _ in 0..3 {
            // A full object first: its pieces go back to the pool holding 0x5a where the
            // next read's hole is.
            let f = Recorder::default();
            drop(read_to_sink(&store, "f", 0, &f).unwrap());
            assert!(f.joined() == full);
            let sink = Recorder::default();
            let out = read_to_sink(&store, "o", 0, &sink).unwrap();
            assert_eq!(*sink.started.lock().unwrap(), Some(size));
            let pieces = sink.pieces.lock().unwrap().clone();
            assert_eq!(pieces.len(), 7, "pieces of 512 KiB");
            assert!(pieces.iter().all(|p| p.len() <= 512 << 10));
            assert!(sink.joined() == want, "the pieces are not the object's bytes");
            let crc = crc32c::crc32c(&want);
            assert_eq!(*sink.ended.lock().unwrap(), Some(crc), "the end's crc");
            assert!(out.data.is_empty(), "the data went to the sink, not the output");
            assert_eq!(out.crc, crc);
        }
        // A sink that refuses the start: the plain answer.
        let refusing = Recorder { refuse_start: true, ..Recorder::default() };
        let out = read_to_sink(&store, "o", 0, &refusing).unwrap();
        assert!(out.data == want && out.verify());
        assert!(refusing.pieces.lock().unwrap().is_empty());
        assert!(refusing.ended.lock().unwrap().is_none());
        // A receiver gone after two pieces: no end, the data read again the plain way.
        let gone = Recorder { refuse_piece: Some(2), ..Recorder::default() };
        let out = read_to_sink(&store, "o", 0, &gone).unwrap();
        assert!(out.data == want && out.verify());
        assert_eq!(gone.pieces.lock().unwrap().len(), 2);
        assert!(gone.ended.lock().unwrap().is_none());
        assert!(gone.aborted.load(std::sync::atomic::Ordering::SeqCst), "not aborted first");
        // Small reads never go to a sink.
        let small = Recorder::default();
        let out = read_to_sink(&store, "o", (3 << 20) - 4096, &small).unwrap();
        assert!(out.data == want[(3 << 20) - 4096..]);
        assert!(small.started.lock().unwrap().is_none());
        (store.path().to_path_buf(), want)
    };
    // Chunk 520 (the fifth piece) in block 328, as above.
    damage_block(&file, 328, 9);
    let store = Store::open(&file).unwrap();
    let sink = Recorder::default();
    match read_to_sink(&store, "o", 0, &sink) {
        Err(StoreError::Corrupt { detail, .. }) => {
            assert!(detail.contains("chunk 520"), "{detail}")
        }
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok(p) => panic!("expected Corrupt, got {} bytes", p.data.len()),
    }
    assert_eq!(sink.pieces.lock().unwrap().len(), 4, "the pieces before the damaged one");
    assert!(sink.joined() == want[..2 << 20]);
    assert!(sink.ended.lock().unwrap().is_none(), "a failed read was ended");
    // (A damaged chunk fails the read: nothing is read again, the caller drops the sink.)
    assert!(!sink.aborted.load(std::sync::atomic::Ordering::SeqCst));
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
    // A fresh store writes the three chunks to blocks 0, 1, 2 (one extent).
    damage_block(&file, 1, 17);
    damage_block(&file, 2, 4090);
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

/// A chunk row whose crc was damaged in redb, and rows pointing past the end of a data file
/// that lost its tail, are `Corrupt` too (never zeros, never a panic).
#[test]
fn a_damaged_row_or_a_short_data_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(4 * 4096, 9);
    let file = {
        let store = Store::open(dir.path()).unwrap();
        store.apply(PG, &[cmd("o", vec![write(0, &data)])], b"s").unwrap();
        store.apply(PG, &[cmd("p", vec![write(0, &data)])], b"s").unwrap();
        store.checkpoint().unwrap();
        store.path().to_path_buf()
    };
    // Row 0 (object o's extent of 4 chunks): chunk 0's stored crc (after kind u8, count
    // u16, last length u16, block u64).
    damage_row(&file, RAW_EXTENTS, 0, 14);
    // Object p's blocks are 4..8: the data file loses the last two.
    let data_file = file.with_extension("data");
    std::fs::OpenOptions::new().write(true).open(&data_file).unwrap().set_len(6 * 4096).unwrap();
    let store = Store::open(&file).unwrap();
    match store.read(PG, "o", SNAP_HEAD, &[ObjectOp::Read { off: 0, len: 10 }]) {
        Err(StoreError::Corrupt { detail, .. }) => assert!(detail.contains("chunk 0"), "{detail}"),
        other => panic!("expected Corrupt for the damaged row, got {other:?}"),
    }
    assert!(is_corrupt(store.read(PG, "o", SNAP_HEAD, &[ObjectOp::Read { off: 0, len: 0 }])));
    match store.read(PG, "p", SNAP_HEAD, &[ObjectOp::Read { off: 0, len: 0 }]) {
        Err(StoreError::Corrupt { detail, .. }) => {
            assert!(detail.contains("chunk 2") && detail.contains("past the end"), "{detail}")
        }
        other => panic!("expected Corrupt for the missing blocks, got {other:?}"),
    }
    let reply = store.read(PG, "p", SNAP_HEAD, &[ObjectOp::Read { off: 0, len: 8192 }]).unwrap();
    assert_eq!(
        reply,
        OpReply::Ok(vec![quarry_types::OpOutput::Data(quarry_types::Payload::new(
            data[..8192].to_vec()
        ))])
    );
}

/// Goal: a large read, whose whole blocks come from the device with direct I/O (not the page
/// cache), still checks every chunk: a bit flipped on disk under a 1 MiB object is refused
/// as `Corrupt`, naming its chunk, and never returned; the direct read sees the disk (a bit
/// flipped through another handle, as a failing device would). Method: one 1 MiB write to a
/// fresh store (blocks 0..256, one extent), checkpoint, close; flip a bit in block 200;
/// reopen on a disk file system (the crate's target directory, not tmpfs) and read it all,
/// then only the chunks before the damage.
#[test]
fn a_flipped_bit_under_a_large_direct_read_is_caught() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = pattern(1 << 20, 9);
    let file = {
        let store = Store::open(dir.path()).unwrap();
        store.apply(PG, &[cmd("o", vec![write(0, &data)])], b"s").unwrap();
        store.checkpoint().unwrap();
        assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(data.clone()));
        store.path().to_path_buf()
    };
    damage_block(&file, 200, 1000);
    let store = Store::open(&file).unwrap();
    match store.read(PG, "o", SNAP_HEAD, &[ObjectOp::Read { off: 0, len: 0 }]) {
        Err(StoreError::Corrupt { detail, .. }) => {
            assert!(detail.contains("chunk 200"), "{detail}")
        }
        other => panic!("expected Corrupt for chunk 200, got {:?}", other.map(|_| "data")),
    }
    let reply =
        store.read(PG, "o", SNAP_HEAD, &[ObjectOp::Read { off: 0, len: 200 * 4096 }]).unwrap();
    assert_eq!(
        reply,
        OpReply::Ok(vec![quarry_types::OpOutput::Data(quarry_types::Payload::new(
            data[..200 * 4096].to_vec()
        ))])
    );
}

/// Goal: an extent row damaged anywhere in its header (kind, chunk count, last chunk's length,
/// first block) or its crc array never yields wrong data: every read of the object is either
/// `Corrupt` or the bytes written. Method: two objects of four chunks each (one row each),
/// one bit flipped in one byte of o's row per round (a fresh store each time), then reads of
/// o whole and chunk by chunk.
#[test]
fn a_damaged_extent_row_never_reads_wrong_data() {
    let data = pattern(4 * 4096, 3);
    let other = pattern(4 * 4096, 4);
    let mut caught = 0;
    for byte in 0..13 + 4 * 4 {
        let dir = tempfile::tempdir().unwrap();
        let file = {
            let store = Store::open(dir.path()).unwrap();
            store.apply(PG, &[cmd("o", vec![write(0, &data)])], b"s").unwrap();
            store.apply(PG, &[cmd("p", vec![write(0, &other)])], b"s").unwrap();
            store.checkpoint().unwrap();
            assert_eq!(store.extent_rows(PG, "o").unwrap(), 1);
            store.path().to_path_buf()
        };
        damage_row(&file, RAW_EXTENTS, 0, byte);
        let store = Store::open(&file).unwrap();
        let mut reads = vec![(0, 0)];
        reads.extend((0..4).map(|k| (k * 4096, 4096)));
        for (off, len) in reads {
            match store.read(PG, "o", SNAP_HEAD, &[ObjectOp::Read { off, len }]) {
                Err(StoreError::Corrupt { .. }) => caught += 1,
                Ok(OpReply::Ok(out)) => {
                    let end = if len == 0 { data.len() } else { (off + len) as usize };
                    assert_eq!(
                        out,
                        vec![quarry_types::OpOutput::Data(quarry_types::Payload::new(
                            data[off as usize..end].to_vec()
                        ))],
                        "byte {byte}: read {off}+{len} returned wrong data"
                    );
                }
                other => panic!("byte {byte}: read {off}+{len}: {other:?}"),
            }
        }
    }
    assert!(caught > 13, "damage was caught only {caught} times");
}

/// The payload of a read of `len` bytes at `off` of "o".
fn read_payload(store: &Store, off: u64, len: u64) -> Result<quarry_types::Payload, StoreError> {
    read_payload_of(store, "o", off, len)
}

/// The payload of a read of `len` bytes at `off` of `name`.
fn read_payload_of(
    store: &Store,
    name: &str,
    off: u64,
    len: u64,
) -> Result<quarry_types::Payload, StoreError> {
    match store.read(PG, name, SNAP_HEAD, &[ObjectOp::Read { off, len }])? {
        OpReply::Ok(mut out) => match out.pop() {
            Some(quarry_types::OpOutput::Data(p)) => Ok(p),
            _ => panic!("a read without data"),
        },
        other => panic!("read failed: {other:?}"),
    }
}

/// A read of at least 1 MiB is read in pieces while the pieces already read are checked and
/// hashed (`read.rs`, `read_pieced`): across holes (zeros, also in a reused buffer that held
/// an earlier read's bytes), a short last chunk and extents in several places of the data
/// file, its bytes and payload crc are those of the plain read,
/// its BLAKE3 digest (which the reply's frame signs) is the digest of its bytes, and a
/// damaged chunk in a later piece fails the read with that chunk named. Reads that do not
/// start at a chunk boundary take the plain path (no digest) and return the same bytes.
#[test]
fn a_large_read_is_checked_and_hashed_piece_by_piece() {
    let dir = tempfile::tempdir().unwrap();
    let size = (3 << 20) + 100;
    let tail_at = 5 << 18;
    let (file, want) = {
        let store = Store::open(dir.path()).unwrap();
        let want = write_holey_object(&store, size);
        // Read buffers are reused: this read leaves the tail's bytes where the next one's
        // hole will be, and the hole must still read as zeros (a few times: the kept buffers
        // are the process's, and the store's other tests run beside this one).
        for _ in 0..4 {
            let tail_read = read_payload(&store, tail_at as u64, 0).unwrap();
            assert!(tail_read.data == want[tail_at..]);
            drop(tail_read);
            let again = read_payload(&store, 0, 0).unwrap();
            assert!(again.data == want, "a hole read another read's bytes");
            assert!(again.verify());
        }
        // A short chunk inside an object (100 bytes at 1 MiB, the object grown past it
        // later): the rest of its 4 KiB reads as zeros, though the reused buffer held the
        // tail's bytes there.
        let short = pattern(100, 7);
        let late = pattern(1 << 20, 8);
        store.apply(PG, &[cmd("s", vec![write(1 << 20, &short)])], b"s").unwrap();
        store.apply(PG, &[cmd("s", vec![write(2 << 20, &late)])], b"s").unwrap();
        let mut want_s = vec![0u8; 3 << 20];
        want_s[1 << 20..(1 << 20) + 100].copy_from_slice(&short);
        want_s[2 << 20..].copy_from_slice(&late);
        for _ in 0..4 {
            drop(read_payload(&store, tail_at as u64, 0).unwrap());
            let s = read_payload_of(&store, "s", 0, 0).unwrap();
            assert!(s.data == want_s, "a short chunk's tail read another read's bytes");
            assert!(s.verify());
            assert_eq!(s.digest(), Some(blake3::hash(&want_s).as_bytes()));
        }
        let whole = read_payload(&store, 0, 0).unwrap();
        assert_eq!(whole.data.len(), size);
        assert!(whole.data == want, "the pieced read returned other bytes");
        assert!(whole.verify(), "payload crc");
        assert_eq!(whole.digest(), Some(blake3::hash(&want).as_bytes()), "digest");
        // From a chunk boundary, a part: pieced too.
        let part = read_payload(&store, 4096, 2 << 20).unwrap();
        assert!(part.data == want[4096..4096 + (2 << 20)]);
        assert!(part.verify());
        assert_eq!(part.digest(), Some(blake3::hash(&part.data).as_bytes()));
        // Not at a chunk boundary: the plain path, the same bytes.
        let plain = read_payload(&store, 100, 2 << 20).unwrap();
        assert!(plain.data == want[100..100 + (2 << 20)]);
        assert!(plain.verify());
        assert_eq!(plain.digest(), None);
        (store.path().to_path_buf(), want)
    };
    // Chunk 520 (2.03 MiB: the fifth piece) is in block 328 of a fresh store's data file
    // (the tail's blocks follow the first 512 KiB's 128).
    damage_block(&file, 328, 9);
    let store = Store::open(&file).unwrap();
    match read_payload(&store, 0, 0) {
        Err(StoreError::Corrupt { detail, .. }) => {
            assert!(detail.contains("chunk 520"), "{detail}")
        }
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok(p) => panic!("expected Corrupt, got {} bytes", p.data.len()),
    }
    // The pieces before it still read.
    let before = read_payload(&store, 0, 2 << 20).unwrap();
    assert!(before.data == want[..2 << 20]);
}

/// Goal: a malformed extent row outside what a read needs fails only the reads that need it,
/// however often the object is read (the metadata cache reads every row of the head when it
/// makes an entry: it must not turn the damage into errors of the other reads). Method:
/// chunks 0 and 10 written apart (two rows), the second row's kind byte flipped; stats and
/// reads of chunk 0, five times each, then a read of chunk 10.
#[test]
fn a_malformed_row_fails_only_the_reads_that_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = {
        let store = Store::open(dir.path()).unwrap();
        store.apply(PG, &[cmd("o", vec![write(0, &pattern(4096, 3))])], b"s").unwrap();
        store.apply(PG, &[cmd("o", vec![write(10 * 4096, &pattern(4096, 4))])], b"s").unwrap();
        store.checkpoint().unwrap();
        store.path().to_path_buf()
    };
    damage_row(&file, RAW_EXTENTS, 1, 0);
    let store = Store::open(&file).unwrap();
    for i in 0..5 {
        match store.read(PG, "o", SNAP_HEAD, &[ObjectOp::Stat]) {
            Ok(OpReply::Ok(_)) => {}
            other => panic!("stat {i}: {other:?}"),
        }
        let read = store.read(PG, "o", SNAP_HEAD, &[ObjectOp::Read { off: 0, len: 4096 }]);
        match read {
            Ok(OpReply::Ok(out)) => assert_eq!(
                out,
                vec![quarry_types::OpOutput::Data(quarry_types::Payload::new(pattern(4096, 3)))]
            ),
            other => panic!("read {i} of chunk 0: {other:?}"),
        }
    }
    let far = store.read(PG, "o", SNAP_HEAD, &[ObjectOp::Read { off: 10 * 4096, len: 10 }]);
    assert!(is_corrupt(far), "the damaged row was read without an error");
}
