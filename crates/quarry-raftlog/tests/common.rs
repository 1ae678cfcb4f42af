//! Shared test helpers: the test type config, entry and payload builders, a runtime.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use openraft::storage::RaftLogStorageExt;
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, TokioRuntime,
};
use quarry_raftlog::WalLogStore;

openraft::declare_raft_types!(
    /// Type config of the tests: opaque byte payloads.
    pub Tc:
        D = Vec<u8>,
        R = (),
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<Tc>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = TokioRuntime,
);

/// Test payloads are stored as a version byte (1) and the bytes themselves.
impl quarry_raftlog::EntryCodec for Tc {
    fn encode_data(data: &Vec<u8>, out: &mut Vec<u8>) {
        out.push(1);
        out.extend_from_slice(data);
    }

    fn decode_data(bytes: &[u8]) -> Result<Vec<u8>, quarry_raftlog::DecodeError> {
        match bytes.split_first() {
            Some((1, data)) => Ok(data.to_vec()),
            Some((&found, _)) if found > 1 => Err(quarry_raftlog::FormatTooNew {
                what: "test payload",
                found: u32::from(found),
                supported: 1,
            }
            .into()),
            _ => Err(quarry_raftlog::DecodeError::invalid("test payload", "bad version")),
        }
    }
}

/// A placer that places nothing and lets every append write its round inline when it finds
/// the writer free (`Placer::append_inline`), as the OSD's does at queue depth 1.
pub struct Inline;

impl quarry_raftlog::Placer<Tc> for Inline {
    fn encode(&self, data: &Vec<u8>, out: &mut Vec<u8>) {
        <Tc as quarry_raftlog::EntryCodec>::encode_data(data, out)
    }

    fn release(&self, _: &Vec<u8>) {}

    fn append_inline(&self) -> bool {
        true
    }
}

/// The log store of `group` whose appends may write their rounds inline ([`Inline`]).
pub fn inline_store(wal: &std::sync::Arc<quarry_raftlog::Wal>, group: u64) -> WalLogStore<Tc> {
    wal.log_store_placed::<Tc>(group, std::sync::Arc::new(Inline))
}

/// Log id with leader node 1.
pub fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// A normal entry carrying `data`.
pub fn entry(term: u64, index: u64, data: Vec<u8>) -> Entry<Tc> {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(data) }
}

/// Deterministic payload of entry `index` of `group` written in `term`: its length and bytes
/// both derive from the three numbers, so any garbage or mix-up is detected.
pub fn payload(group: u64, index: u64, term: u64, max_len: u64) -> Vec<u8> {
    let mut state = group
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(index.wrapping_mul(0xbf58_476d_1ce4_e5b9))
        .wrapping_add(term.wrapping_mul(0x94d0_49bb_1331_11eb))
        | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let len = 16 + next() % max_len.max(1);
    (0..len).map(|_| next() as u8).collect()
}

/// The payload bytes of a normal entry.
pub fn data_of(entry: &Entry<Tc>) -> &[u8] {
    match &entry.payload {
        EntryPayload::Normal(data) => data,
        other => panic!("entry {} is not a normal entry: {other:?}", entry.log_id),
    }
}

/// Appends and waits for the flush callback.
pub async fn append(store: &mut WalLogStore<Tc>, entries: Vec<Entry<Tc>>) {
    store.blocking_append(entries).await.expect("append");
}

/// All live entries of a store.
pub async fn all_entries(store: &mut WalLogStore<Tc>) -> Vec<Entry<Tc>> {
    store.try_get_log_entries(..).await.expect("read entries")
}

/// A multi-threaded runtime for tests that are not `#[tokio::test]`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap()
}

/// Segment files of a WAL directory, ascending.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    files.sort();
    files
}

/// `(offset, total length)` of every record of a segment file, walking the framing.
pub fn record_spans(path: &Path) -> Vec<(u64, u64)> {
    use quarry_raftlog::format::{RecordHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
    let bytes = std::fs::read(path).unwrap();
    let mut spans = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN as usize;
    while offset + RECORD_HEADER_LEN <= bytes.len() {
        let header = RecordHeader::parse(&bytes[offset..]);
        let len = header.record_len() as usize;
        assert!(offset + len <= bytes.len(), "record at {offset} runs past the end");
        spans.push((offset as u64, len as u64));
        offset += len;
    }
    assert_eq!(offset, bytes.len(), "segment {} does not end on a record", path.display());
    spans
}

/// Copies a directory's files (not recursive).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
