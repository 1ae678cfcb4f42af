//! Golden bytes of everything the WAL writes: the segment header and one framed record of every
//! kind (entries blank, normal and membership), compared with `tests/golden/wal_v1.hex`. A
//! failure means the on-disk format changed: bump `FORMAT_VERSION` / `PAYLOAD_VERSION` and keep
//! reading the old one (quarry_persist's upgrade rule); never edit the golden file. Also: the
//! golden bytes decode back to the same values, and newer versions are `FormatTooNew`.
//! `tests/golden/wal_v3.hex` pins what segment format 3 added: its header (with the salt) and
//! the round-end record; `wal_v1.hex` keeps pinning the format 2 header, still read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use quarry_persist::golden;
use quarry_raftlog::format::{
    decode_record, encode_metadata, encode_record, encode_segment_header, encode_segment_header_v2,
    kind_of, segment_file_name, GroupCheckpoint, Record, RecordKind, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};
use quarry_raftlog::store::{decode_entry, encode_entry};
use quarry_raftlog::{DecodeError, Wal, WalError, WalOptions};

use crate::common::Tc;

const GROUP: u64 = 0x0102_0304_0506_0708;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wal_v1.hex")
}

fn id(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn metadata() -> Vec<(&'static str, Record)> {
    vec![
        ("vote", Record::Vote(Vote::new(4, 2))),
        ("vote_committed", Record::Vote(Vote::new_committed(5, 3))),
        ("committed_some", Record::Committed(Some(id(6, 7, 8)))),
        ("committed_none", Record::Committed(None)),
        ("truncate", Record::Truncate { from: 0x1122_3344 }),
        ("purge", Record::Purge(id(9, 10, 11))),
        ("remove_group", Record::RemoveGroup),
        (
            "group_state",
            Record::GroupState(GroupCheckpoint {
                vote: Some(Vote::new_committed(12, 13)),
                committed: Some(id(14, 15, 16)),
                purged: Some(id(17, 18, 19)),
            }),
        ),
        ("group_state_empty", Record::GroupState(GroupCheckpoint::default())),
    ]
}

fn entries() -> Vec<(&'static str, Entry<Tc>)> {
    let nodes = BTreeMap::from([
        (1u64, BasicNode::new("10.0.0.1:6800")),
        (2u64, BasicNode::new("10.0.0.2:6800")),
        (3u64, BasicNode::new("10.0.0.3:6800")),
    ]);
    let membership = Membership::new(vec![BTreeSet::from([1u64, 2])], nodes);
    vec![
        ("entry_blank", Entry { log_id: id(20, 21, 22), payload: EntryPayload::Blank }),
        (
            "entry_normal",
            Entry { log_id: id(23, 24, 25), payload: EntryPayload::Normal(vec![0xaa, 0xbb]) },
        ),
        (
            "entry_membership",
            Entry { log_id: id(26, 27, 28), payload: EntryPayload::Membership(membership) },
        ),
    ]
}

fn framed(kind: RecordKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(&mut out, kind, GROUP, payload);
    out
}

fn encoded() -> Vec<(&'static str, Vec<u8>)> {
    let mut values = vec![("segment_header", encode_segment_header_v2(0x0a0b_0c0d).to_vec())];
    for (name, record) in metadata() {
        values.push((name, framed(kind_of(&record), &encode_metadata(&record))));
    }
    for (name, entry) in entries() {
        values.push((name, framed(RecordKind::Entry, &encode_entry(&entry))));
    }
    values
}

#[test]
fn wal_bytes_are_pinned() {
    let header = "WAL segment format 2, record payload version 1 (quarry-raftlog).\n\
                  Generated once; never edit: a change of bytes needs a new version.";
    golden::check(&golden_path(), header, &encoded());
}

/// What segment format 3 added: the salted header and the round-end record.
#[test]
fn wal_v3_bytes_are_pinned() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wal_v3.hex");
    let header = "WAL segment format 3 additions: salted segment header, round-end record \
                  (quarry-raftlog).\nGenerated once; never edit: a change of bytes needs a new version.";
    let round_end = Record::RoundEnd { salt: 0x1122_3344, synced: 0x0506_0708 };
    let mut round_end_framed = Vec::new();
    encode_record(&mut round_end_framed, RecordKind::RoundEnd, 0, &encode_metadata(&round_end));
    let values = vec![
        ("segment_header_v3", encode_segment_header(0x0a0b_0c0d, 0x1122_3344).to_vec()),
        ("round_end", round_end_framed.clone()),
    ];
    golden::check(&path, header, &values);
    let text = std::fs::read_to_string(&path).unwrap();
    let golden = golden::parse(&text);
    let (_, bytes) = golden.iter().find(|(name, _)| name == "round_end").unwrap();
    assert_eq!(
        decode_record(RecordKind::RoundEnd, &bytes[RECORD_HEADER_LEN..]).unwrap(),
        round_end
    );
}

#[test]
fn golden_bytes_decode_to_the_same_values() {
    let text = std::fs::read_to_string(golden_path()).unwrap();
    let golden = golden::parse(&text);
    let payload = |name: &str| {
        let (_, bytes) = golden.iter().find(|(n, _)| n == name).unwrap();
        bytes[RECORD_HEADER_LEN..].to_vec()
    };
    for (name, record) in metadata() {
        assert_eq!(decode_record(kind_of(&record), &payload(name)).unwrap(), record, "{name}");
    }
    for (name, entry) in entries() {
        let back: Entry<Tc> = decode_entry(&payload(name)).unwrap();
        assert_eq!(back, entry, "{name}");
    }
}

#[test]
fn newer_entry_data_is_format_too_new() {
    let (_, entry) = entries().swap_remove(1);
    let mut payload = encode_entry(&entry);
    // The application data's version byte follows the 26-byte entry head.
    payload[26] = 2;
    match decode_entry::<Tc>(&payload) {
        Err(DecodeError::TooNew(too_new)) => assert_eq!((too_new.found, too_new.supported), (2, 1)),
        other => panic!("{other:?}"),
    }
    // A newer entry envelope (the WAL's own payload version) is too new as well.
    let mut payload = encode_entry(&entry);
    payload[0] = 2;
    assert!(matches!(decode_entry::<Tc>(&payload), Err(DecodeError::TooNew(_))));
}

/// A crc-valid record whose payload version is newer, or a segment whose header version is
/// newer, stops `Wal::open` with `FormatTooNew`, not `Corrupt` (and is not cut as a torn tail).
#[test]
fn newer_records_and_segments_refuse_to_open_as_too_new() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = encode_segment_header(1, 7).to_vec();
    let mut payload = encode_metadata(&Record::Vote(Vote::new(1, 1)));
    payload[0] = 2;
    encode_record(&mut segment, RecordKind::Vote, 1, &payload);
    std::fs::write(dir.path().join(segment_file_name(1)), &segment).unwrap();
    match Wal::open(dir.path(), WalOptions::default()) {
        Err(WalError::FormatTooNew { offset, source, .. }) => {
            assert_eq!(offset, SEGMENT_HEADER_LEN);
            assert_eq!((source.found, source.supported), (2, 1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(dir.path().join(segment_file_name(1))).unwrap(), segment);

    let dir = tempfile::tempdir().unwrap();
    let mut header = encode_segment_header_v2(1);
    header[8..12].copy_from_slice(&4u32.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.path().join(segment_file_name(1)), header).unwrap();
    match Wal::open(dir.path(), WalOptions::default()) {
        Err(WalError::FormatTooNew { offset: 0, source, .. }) => {
            assert_eq!((source.found, source.supported), (4, 3));
        }
        other => panic!("{other:?}"),
    }
}

/// Goal: a log written by the previous build (format 2 segments: no salt, no round ends)
/// still opens, with its records. Method: a format 2 segment holding a vote and an entry,
/// built from the pinned encoders, opened by this build.
#[test]
fn format_2_segments_are_still_read() {
    use openraft::storage::RaftLogStorage;
    let dir = tempfile::tempdir().unwrap();
    let mut segment = encode_segment_header_v2(1).to_vec();
    let vote = Record::Vote(Vote::new(3, 1));
    encode_record(&mut segment, RecordKind::Vote, 5, &encode_metadata(&vote));
    let (_, entry) = entries().swap_remove(1);
    encode_record(&mut segment, RecordKind::Entry, 5, &encode_entry(&entry));
    std::fs::write(dir.path().join(segment_file_name(1)), &segment).unwrap();
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(wal.stats().torn_bytes, 0);
    let runtime = crate::common::runtime();
    runtime.block_on(async {
        let mut store = wal.log_store::<Tc>(5);
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        let found = crate::common::all_entries(&mut store).await;
        assert_eq!(found, vec![entry.clone()]);
    });
}
