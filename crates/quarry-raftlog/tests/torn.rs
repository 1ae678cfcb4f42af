//! Torn tails and corruption. Goal: a partial last round is cut away (every earlier round
//! intact), garbage after the last record is cut away, a torn unsynced round is cut even when
//! intact records of it follow the damage, and a bad record anywhere else (an older segment,
//! or data of the newest segment that a later round end marks as synced) is refused with
//! `WalError::Corrupt` naming the file and offset. Method: write a log, then damage copies of
//! its files at chosen and random places and reopen each copy.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftLogStorage;
use quarry_raftlog::{Corruption, Wal, WalError, WalOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{
    all_entries, append, copy_dir, data_of, entry, payload, record_spans, runtime, segment_files,
    Tc,
};

const GROUPS: u64 = 3;
const PER_GROUP: u64 = 20;

/// Writes `PER_GROUP` entries to each group, interleaved; returns the options used.
fn write_log(dir: &Path, segment_bytes: u64) -> WalOptions {
    let options = WalOptions { segment_bytes, cache_bytes: 1 << 20 };
    let wal = Wal::open(dir, options).unwrap();
    runtime().block_on(async {
        for index in 0..PER_GROUP {
            for group in 0..GROUPS {
                let mut store = wal.log_store::<Tc>(group);
                append(&mut store, vec![entry(1, index, payload(group, index, 1, 700))]).await;
            }
        }
    });
    drop(wal);
    options
}

/// Opens `dir` and checks that each group holds exactly entries `0 .. count(group)`, intact.
fn assert_entries(dir: &Path, options: WalOptions, count: impl Fn(u64) -> u64) -> Arc<Wal> {
    let wal = Wal::open(dir, options).unwrap();
    runtime().block_on(async {
        for group in 0..GROUPS {
            let mut store = wal.log_store::<Tc>(group);
            let entries = all_entries(&mut store).await;
            assert_eq!(entries.len() as u64, count(group), "group {group}");
            for (index, found) in entries.iter().enumerate() {
                let index = index as u64;
                assert_eq!(found.log_id.index, index);
                assert!(data_of(found) == &payload(group, index, 1, 700)[..], "{group}/{index}");
            }
            let last = store.get_log_state().await.unwrap().last_log_id.map(|id| id.index + 1);
            assert_eq!(last.unwrap_or(0), count(group));
        }
    });
    wal
}

/// `(offset, total length)` of the entry records of a segment (round ends left out).
fn entry_spans(path: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let entry_kind = quarry_raftlog::format::RecordKind::Entry as u8;
    record_spans(path)
        .into_iter()
        .filter(|&(offset, _)| bytes[offset as usize + 8] == entry_kind)
        .collect()
}

fn damage(path: &Path, offset: u64, byte_xor: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= byte_xor;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn torn_last_record_is_cut_at_every_offset() {
    let original = tempfile::tempdir().unwrap();
    let options = write_log(original.path(), 64 << 20);
    let files = segment_files(original.path());
    assert_eq!(files.len(), 1);
    let spans = record_spans(&files[0]);
    // The last round: entry PER_GROUP - 1 of the last group and its round end.
    let (last_offset, _) = spans[spans.len() - 2];
    let (end_offset, end_len) = spans[spans.len() - 1];
    let last_len = end_offset + end_len - last_offset;
    let mut rng = StdRng::seed_from_u64(7);
    let mut cuts: Vec<u64> = (0..12).map(|_| rng.gen_range(1..last_len)).collect();
    cuts.extend([0, 1, 16, 17, last_len - 1]);
    for cut in cuts {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let file = OpenOptions::new().write(true).open(segment_files(copy.path())[0].clone());
        file.unwrap().set_len(last_offset + cut).unwrap();
        let count = |group| if group == GROUPS - 1 { PER_GROUP - 1 } else { PER_GROUP };
        let wal = assert_entries(copy.path(), options, count);
        assert_eq!(wal.stats().torn_bytes, cut, "cut {cut} of {last_len}");
        // The lost index can be written again and survives another reopen.
        runtime().block_on(async {
            let mut store = wal.log_store::<Tc>(GROUPS - 1);
            let index = PER_GROUP - 1;
            append(&mut store, vec![entry(1, index, payload(GROUPS - 1, index, 1, 700))]).await;
        });
        drop(wal);
        let wal = assert_entries(copy.path(), options, |_| PER_GROUP);
        assert_eq!(wal.stats().torn_bytes, 0);
    }
}

#[test]
fn garbage_after_the_last_record_is_cut() {
    let original = tempfile::tempdir().unwrap();
    let options = write_log(original.path(), 64 << 20);
    let mut rng = StdRng::seed_from_u64(11);
    for garbage in [vec![0u8; 4096], (0..5000).map(|_| rng.gen::<u8>()).collect(), vec![1u8; 3]] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let path = segment_files(copy.path())[0].clone();
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&garbage).unwrap();
        let wal = assert_entries(copy.path(), options, |_| PER_GROUP);
        // An all-zero tail is the writer's preallocation, cut off but not counted as torn.
        let torn = if garbage.iter().all(|&byte| byte == 0) { 0 } else { garbage.len() as u64 };
        assert_eq!(wal.stats().torn_bytes, torn);
    }
}

/// Goal: the writer preallocates zeros after small rounds, and a crash that leaves them (the
/// files as they are while the log is open) loses nothing and is not reported as torn; a
/// clean close leaves no zeros. Method: append, copy the directory while the log is open,
/// reopen the copy; then close the original and check its segment ends on a record.
#[test]
fn preallocated_zeros_are_cut_after_a_crash_and_at_close() {
    let original = tempfile::tempdir().unwrap();
    let options = WalOptions { segment_bytes: 64 << 20, cache_bytes: 1 << 20 };
    let wal = Wal::open(original.path(), options).unwrap();
    runtime().block_on(async {
        for index in 0..PER_GROUP {
            for group in 0..GROUPS {
                let mut store = wal.log_store::<Tc>(group);
                append(&mut store, vec![entry(1, index, payload(group, index, 1, 700))]).await;
            }
        }
    });
    let active = segment_files(original.path()).pop().unwrap();
    let file_len = std::fs::metadata(&active).unwrap().len();
    assert!(file_len >= quarry_raftlog::writer::PREALLOC_BYTES, "no preallocation: {file_len}");
    let copy = tempfile::tempdir().unwrap();
    copy_dir(original.path(), copy.path());
    std::fs::remove_file(copy.path().join("LOCK")).unwrap();
    let reopened = assert_entries(copy.path(), options, |_| PER_GROUP);
    assert_eq!(reopened.stats().torn_bytes, 0);
    drop(reopened);
    let copied = copy.path().join(active.file_name().unwrap());
    record_spans(&copied); // ends exactly on a record: the zeros were cut
    drop(wal);
    record_spans(&active);
}

#[test]
fn corruption_in_an_older_segment_is_an_error() {
    let original = tempfile::tempdir().unwrap();
    let options = write_log(original.path(), 8 << 10);
    let files = segment_files(original.path());
    assert!(files.len() >= 3, "expected several segments, got {}", files.len());
    let older = &files[1];
    let spans = record_spans(older);
    let (offset, len) = spans[spans.len() / 2];
    for (position, reason_is_crc) in
        [(offset + len - 1, true), (offset + 20, true), (offset, false)]
    {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let path = copy.path().join(older.file_name().unwrap());
        damage(&path, position, 0x10);
        match Wal::open(copy.path(), options) {
            Err(WalError::Corrupt { path: bad, offset: at, reason }) => {
                assert_eq!(bad, path);
                assert_eq!(at, offset);
                if reason_is_crc {
                    assert_eq!(reason, Corruption::BadRecordCrc);
                }
            }
            other => panic!("damage at {position} not refused: {other:?}"),
        }
    }
    let copy = tempfile::tempdir().unwrap();
    copy_dir(original.path(), copy.path());
    damage(&copy.path().join(older.file_name().unwrap()), 3, 0x01);
    assert!(matches!(
        Wal::open(copy.path(), options),
        Err(WalError::Corrupt { offset: 0, reason: Corruption::BadMagic, .. })
    ));
}

#[test]
fn bad_record_followed_by_intact_ones_in_the_newest_segment_is_an_error() {
    let original = tempfile::tempdir().unwrap();
    let options = write_log(original.path(), 64 << 20);
    let newest = segment_files(original.path()).pop().unwrap();
    let spans = entry_spans(&newest);
    for (which, delta) in [(spans.len() / 2, 30u64), (spans.len() - 2, 5), (spans.len() / 3, 0)] {
        let (offset, _) = spans[which];
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let path = copy.path().join(newest.file_name().unwrap());
        damage(&path, offset + delta, 0x80);
        match Wal::open(copy.path(), options) {
            Err(WalError::Corrupt { path: bad, offset: at, .. }) => {
                assert_eq!((bad, at), (path, offset));
            }
            other => panic!("damage in record {which} not refused: {other:?}"),
        }
    }
}

#[test]
fn a_cut_short_new_segment_is_removed() {
    let original = tempfile::tempdir().unwrap();
    let options = write_log(original.path(), 64 << 20);
    let next = original.path().join("00000000000000000002.wal");
    for contents in [vec![], b"QRYR".to_vec(), vec![0u8; 100]] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        std::fs::write(copy.path().join(next.file_name().unwrap()), &contents).unwrap();
        let wal = assert_entries(copy.path(), options, |_| PER_GROUP);
        assert_eq!(wal.stats().torn_bytes, contents.len() as u64);
        // The segment started instead takes the removed one's number: a gap in the numbers
        // would make the next open drop every older segment as left over from deletion
        // (seen on a full disk: a monitor lost its log on the second restart).
        drop(wal);
        drop(assert_entries(copy.path(), options, |_| PER_GROUP));
    }
}

/// Two cuts in a row: the creation of segment 2 is cut short (an empty file), recovery
/// removes it and starts the next segment, whose creation is cut short too. Had recovery
/// numbered the new segment 3, the files would be 1 and an empty 3: the gap made the next
/// recovery take segment 1 for a leftover of a deletion and remove it, every acknowledged
/// entry with it (the power-loss harness of quarry-store found this). Recovery reuses the
/// removed segment's number instead.
#[test]
fn a_cut_short_segment_removed_by_recovery_leaves_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let options = write_log(dir.path(), 64 << 20);
    let second = dir.path().join("00000000000000000002.wal");
    std::fs::write(&second, b"").unwrap();
    let wal = assert_entries(dir.path(), options, |_| PER_GROUP);
    assert_eq!(wal.stats().active_segment, 2, "the removed segment's number is reused");
    drop(wal);
    // The creation of the recovery's segment cut short as well.
    let files = segment_files(dir.path());
    let newest = files.last().unwrap().clone();
    std::fs::write(&newest, b"").unwrap();
    assert_entries(dir.path(), options, |_| PER_GROUP);
}

#[test]
fn a_second_open_of_a_locked_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    match Wal::open(dir.path(), WalOptions::default()) {
        Err(WalError::Locked { path, .. }) => assert_eq!(path, dir.path().join("LOCK")),
        other => panic!("second open not refused: {other:?}"),
    }
    drop(wal);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    runtime().block_on(async {
        let mut store = wal.log_store::<Tc>(1);
        assert_eq!(store.get_log_state().await.unwrap().last_log_id, None);
    });
}

/// Goal (issue 8 b): a power cut during a group commit may leave the pages of the last,
/// unsynced round on disk out of order: an earlier record of the round zeroed or garbled, a
/// later one (and the round end) intact. Recovery must keep every acknowledged round, cut the
/// torn one without operator help, and never take client data inside the torn record (here: a
/// forged round end claiming everything synced, and a forged entry) for a record. Method:
/// write acknowledged rounds, then one last round of four entries (to disk the same bytes as an
/// unsynced round after a sync: its round end claims only what precedes it), damage copies of
/// that round and reopen each.
#[test]
fn a_torn_unsynced_round_is_cut_and_acknowledged_rounds_are_kept() {
    use quarry_raftlog::format::{encode_metadata, encode_record, Record, RecordKind};
    const LAST: u64 = 4;
    let original = tempfile::tempdir().unwrap();
    let options = write_log(original.path(), 64 << 20);
    // Client data that looks like records: a round end claiming the whole file synced (with a
    // salt the client cannot know) and an entry of group 0.
    let mut forged = Vec::new();
    let fake_end = Record::RoundEnd { salt: 0x5eed_5eed, synced: u64::MAX >> 1 };
    encode_record(&mut forged, RecordKind::RoundEnd, 0, &encode_metadata(&fake_end));
    encode_record(&mut forged, RecordKind::Entry, 0, b"\x01not an entry at all");
    let wal = Wal::open(original.path(), options).unwrap();
    runtime().block_on(async {
        let mut store = wal.log_store::<Tc>(0);
        let round = (PER_GROUP..PER_GROUP + LAST)
            .map(|index| {
                let mut data = payload(0, index, 1, 700);
                if index == PER_GROUP {
                    data.extend_from_slice(&forged);
                }
                entry(1, index, data)
            })
            .collect();
        append(&mut store, round).await;
    });
    drop(wal);
    let newest = segment_files(original.path()).pop().unwrap();
    let spans = record_spans(&newest);
    // The last round: LAST entries and the round end.
    let round = &spans[spans.len() - LAST as usize - 1..];
    let round_start = round[0].0;
    let file_len = std::fs::metadata(&newest).unwrap().len();
    let mut rng = StdRng::seed_from_u64(23);
    // (record of the round, how it is damaged)
    let cases: Vec<(usize, &str)> = vec![
        (0, "zeroed"),
        (1, "zeroed"),
        (0, "garbled header"),
        (2, "garbled payload"),
        (LAST as usize, "zeroed"), // the round end itself never reached the disk
    ];
    for (which, how) in cases {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let path = copy.path().join(newest.file_name().unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        let (offset, len) = round[which];
        let record = &mut bytes[offset as usize..(offset + len) as usize];
        match how {
            "zeroed" => record.fill(0),
            "garbled header" => record[..17].iter_mut().for_each(|byte| *byte = rng.gen()),
            _ => record[40..60].iter_mut().for_each(|byte| *byte = rng.gen()),
        }
        std::fs::write(&path, &bytes).unwrap();
        let wal = assert_entries(copy.path(), options, |_| PER_GROUP);
        // A zeroed round end is a zero tail (counted like preallocation: not torn bytes).
        let torn = if which == LAST as usize { offset } else { file_len } - round_start;
        assert_eq!(wal.stats().torn_bytes, torn, "{how} record {which}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), round_start);
        // The log goes on: the lost round is written again and survives a reopen.
        runtime().block_on(async {
            let mut store = wal.log_store::<Tc>(0);
            let index = PER_GROUP;
            append(&mut store, vec![entry(1, index, payload(0, index, 1, 700))]).await;
        });
        drop(wal);
        let wal = Wal::open(copy.path(), options).unwrap();
        runtime().block_on(async {
            let mut store = wal.log_store::<Tc>(0);
            assert_eq!(all_entries(&mut store).await.len() as u64, PER_GROUP + 1);
        });
    }
}
