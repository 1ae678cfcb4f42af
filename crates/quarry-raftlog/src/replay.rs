//! Recovery at open: lists the segment files, checks their headers, replays every record in
//! order into a fresh [`GroupIndex`] per group, and applies the torn-tail rule to the newest
//! segment (see the crate docs, "Recovery").

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read, Seek, SeekFrom};

use quarry_persist::durable::FileReader;
use quarry_persist::DurableFile;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, WalError};
use crate::format::{
    check_record, check_segment_header, decode_record, parse_segment_file_name, segment_file_name,
    Record, RecordHeader, RecordKind, SegmentFormat, FORMAT_VERSION, RECORD_HEADER_LEN,
    RECORD_PAYLOAD_MAX, SEGMENT_HEADER_LEN,
};
use crate::index::{GroupIndex, Location, Slot};
use quarry_persist::FormatTooNew;

/// Read buffer of the sequential replay reader.
const REPLAY_BUFFER_BYTES: usize = 1 << 20;
/// Window of the scan for intact records after a bad one.
const SCAN_WINDOW_BYTES: u64 = 1 << 20;

/// What replay found.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// State of every group with any.
    pub groups: HashMap<u64, GroupIndex>,
    /// The segment files kept, by sequence number, opened for reading and writing.
    pub segments: BTreeMap<u64, Arc<DurableFile>>,
    /// Sequence number for the next segment: above every segment kept (and every leftover
    /// removed); a cut-short newest segment that was removed gives its number back.
    pub next_seq: u64,
    /// Bytes dropped from the newest segment as a torn tail.
    pub torn_bytes: u64,
}

/// Replays the log in `dir` (which must be locked by the caller).
pub(crate) fn recover(dir: &Path) -> Result<Recovered, WalError> {
    let mut seqs = list_segments(dir)?;
    let next_seq = seqs.last().map_or(1, |&last| last + 1);
    drop_segments_before_gap(dir, &mut seqs)?;
    let newest = seqs.last().copied();
    let mut recovered =
        Recovered { groups: HashMap::new(), segments: BTreeMap::new(), next_seq, torn_bytes: 0 };
    for seq in seqs {
        let tolerant = Some(seq) == newest;
        let path = dir.join(segment_file_name(seq));
        let file = DurableFile::open(&path).map_err(|error| WalError::io(&path, error))?;
        let len = file.len().map_err(|error| WalError::io(&path, error))?;
        let format = read_segment_header(&file, &path, seq, len)?;
        if let Err(reason) = format {
            if let Corruption::UnsupportedVersion { found } = reason {
                if found > FORMAT_VERSION {
                    // The header's crc matched: a newer build wrote this segment on purpose.
                    let source =
                        FormatTooNew { what: "WAL segment", found, supported: FORMAT_VERSION };
                    return Err(WalError::FormatTooNew { path, offset: 0, source });
                }
            }
            if tolerant && find_intact_record(&file, &path, 0, len)?.is_none() {
                tracing::warn!(path = %path.display(), %reason, len,
                    "removing the newest WAL segment: its creation was cut short");
                drop(file);
                quarry_persist::remove_file(&path).map_err(|error| WalError::io(&path, error))?;
                sync_dir(dir)?;
                recovered.torn_bytes += len;
                // Its number is reused for the next segment: a new number would leave a gap
                // (..., N-1, N+1), and should the creation of N+1 be cut short too, the next
                // recovery would take every segment before the gap for leftovers of a
                // deletion and remove them, acknowledged entries with them (the power-loss
                // harness found this).
                recovered.next_seq = seq;
                continue;
            }
            return Err(WalError::Corrupt { path, offset: 0, reason });
        }
        let salt = format.ok().and_then(|format| format.salt);
        recovered.torn_bytes +=
            replay_segment(&file, &path, seq, len, salt, tolerant, None, &mut recovered.groups)?;
        if tolerant {
            // After a process crash its last records may be in the page cache only; they were
            // just replayed as real, so make them durable before anything builds on them.
            file.sync_all().map_err(|error| WalError::io(&path, error))?;
        }
        recovered.segments.insert(seq, Arc::new(file));
    }
    recovered.groups.retain(|_, group| !group.is_blank());
    Ok(recovered)
}

/// Sequence numbers of the segment files in `dir`, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut seqs = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|error| WalError::io(dir, error))?;
    for entry in entries {
        let entry = entry.map_err(|error| WalError::io(dir, error))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Segments are created with consecutive numbers and deleted oldest first, so the live log is
/// the consecutive run ending at the newest segment. Older files before a gap are deletions
/// that did not reach the disk before a crash: replaying them could resurrect entries whose
/// truncation lived in the missing segments, so they are removed.
fn drop_segments_before_gap(dir: &Path, seqs: &mut Vec<u64>) -> Result<(), WalError> {
    let Some(mut run_start) = seqs.len().checked_sub(1) else { return Ok(()) };
    while run_start > 0 && seqs[run_start - 1] + 1 == seqs[run_start] {
        run_start -= 1;
    }
    if run_start == 0 {
        return Ok(());
    }
    for &seq in &seqs[..run_start] {
        let path = dir.join(segment_file_name(seq));
        tracing::warn!(path = %path.display(), "removing a WAL segment left over from deletion");
        quarry_persist::remove_file(&path).map_err(|error| WalError::io(&path, error))?;
    }
    seqs.drain(..run_start);
    sync_dir(dir)
}

fn read_segment_header(
    file: &DurableFile,
    path: &Path,
    seq: u64,
    len: u64,
) -> Result<Result<SegmentFormat, Corruption>, WalError> {
    let mut header = vec![0u8; len.min(SEGMENT_HEADER_LEN) as usize];
    file.read_exact_at(&mut header, 0).map_err(|error| WalError::io(path, error))?;
    Ok(check_segment_header(&header, seq))
}

/// A replayed record of a round whose end has not been read yet.
struct Pending {
    group: u64,
    record: Record,
    offset: u64,
    len: u32,
}

/// Replays the records of one segment; returns the torn-tail bytes cut off (tolerant only).
/// In a format 3 segment (`salt` given) a round's records are applied at its round end; the
/// records after the last round end are an incomplete round. With `only`, records of other
/// groups are checked but not applied.
#[allow(clippy::too_many_arguments)]
fn replay_segment(
    file: &DurableFile,
    path: &Path,
    seq: u64,
    len: u64,
    salt: Option<u32>,
    tolerant: bool,
    only: Option<u64>,
    groups: &mut HashMap<u64, GroupIndex>,
) -> Result<u64, WalError> {
    let io_error = |error| WalError::io(path, error);
    let mut reader = BufReader::with_capacity(REPLAY_BUFFER_BYTES, file.reader_at(0));
    reader.seek(SeekFrom::Start(SEGMENT_HEADER_LEN)).map_err(io_error)?;
    let mut offset = SEGMENT_HEADER_LEN;
    // End of the last complete round: where a torn segment is cut.
    let mut round_end = SEGMENT_HEADER_LEN;
    let mut pending: Vec<Pending> = Vec::new();
    let mut payload = Vec::new();
    while offset < len {
        let (header, kind) = match read_record(&mut reader, offset, len, &mut payload) {
            Ok(Ok(found)) => found,
            Ok(Err(reason)) => {
                let bad = Bad { offset, round_end, salt, reason };
                return cut_torn_tail(file, path, len, tolerant, bad);
            }
            Err(error) => return Err(io_error(error)),
        };
        let record = decode_record(kind, &payload).map_err(|rejected| rejected.at(path, offset))?;
        let next = offset + header.record_len();
        let wanted = only.is_none_or(|group| group == header.group);
        match (record, salt) {
            (Record::RoundEnd { salt: found, .. }, Some(salt)) if found == salt => {
                for done in pending.drain(..) {
                    apply_record(groups, done.group, done.record, seq, done.offset, done.len)
                        .map_err(|reason| WalError::Corrupt {
                            path: path.to_path_buf(),
                            offset: done.offset,
                            reason,
                        })?;
                }
                round_end = next;
            }
            (Record::RoundEnd { .. }, _) => {
                // A round end of another segment (or in a format 2 segment): not ours.
                let reason = Corruption::Undecodable { kind: kind as u8 };
                let bad = Bad { offset, round_end, salt, reason };
                return cut_torn_tail(file, path, len, tolerant, bad);
            }
            (_, Some(_)) if !wanted => {}
            (record, Some(_)) => {
                pending.push(Pending { group: header.group, record, offset, len: header.len })
            }
            (_, None) if !wanted => round_end = next,
            (record, None) => {
                apply_record(groups, header.group, record, seq, offset, header.len).map_err(
                    |reason| WalError::Corrupt { path: path.to_path_buf(), offset, reason },
                )?;
                round_end = next;
            }
        }
        offset = next;
    }
    assert_eq!(offset, len, "replay must end exactly at the end of the segment");
    if round_end < len {
        // Intact records without their round end: the round was never completely written.
        let reason = Corruption::IncompleteRound;
        let bad = Bad { offset: round_end, round_end, salt, reason };
        return cut_torn_tail(file, path, len, tolerant, bad);
    }
    Ok(0)
}

/// Replays one group's records from the live `segments` (`(seq, file, len)`, oldest first,
/// each read up to `len`: the writer passes the active segment's end of its last round) into
/// a fresh index, `None` if the group has no state. For [`crate::Wal::reload_group`]; the
/// segments were replayed at open (or written since), so a bad record is corruption.
pub(crate) fn replay_group(
    dir: &Path,
    segments: &[(u64, Arc<DurableFile>, u64)],
    group: u64,
) -> Result<Option<GroupIndex>, WalError> {
    let mut groups = HashMap::new();
    for (seq, file, len) in segments {
        let path = dir.join(segment_file_name(*seq));
        let salt = match read_segment_header(file, &path, *seq, *len)? {
            Ok(format) => format.salt,
            Err(reason) => return Err(WalError::Corrupt { path, offset: 0, reason }),
        };
        replay_segment(file, &path, *seq, *len, salt, false, Some(group), &mut groups)?;
    }
    Ok(groups.remove(&group).filter(|index| !index.is_blank()))
}

/// Reads the record at `offset` (the reader is positioned there) into `payload`.
fn read_record(
    reader: &mut BufReader<FileReader<'_>>,
    offset: u64,
    len: u64,
    payload: &mut Vec<u8>,
) -> std::io::Result<Result<(RecordHeader, RecordKind), Corruption>> {
    if len - offset < RECORD_HEADER_LEN as u64 {
        return Ok(Err(Corruption::ShortRecordHeader));
    }
    let mut header_bytes = [0u8; RECORD_HEADER_LEN];
    reader.read_exact(&mut header_bytes)?;
    let header = RecordHeader::parse(&header_bytes);
    if header.len > RECORD_PAYLOAD_MAX {
        return Ok(Err(Corruption::RecordTooLong { len: header.len }));
    }
    if offset + header.record_len() > len {
        return Ok(Err(Corruption::RecordPastEnd { len: header.len }));
    }
    payload.resize(header.len as usize, 0);
    reader.read_exact(payload)?;
    Ok(check_record(&header, payload).map(|kind| (header, kind)))
}

/// A bad record found by replay.
struct Bad {
    /// Where it starts.
    offset: u64,
    /// End of the last complete round before it (format 2: of the last record).
    round_end: u64,
    /// The segment's salt (format 3).
    salt: Option<u32>,
    /// What was wrong.
    reason: Corruption,
}

/// A bad record in the newest segment (`tolerant`) is a torn tail if it lies in the part of
/// the segment that was not yet synced when anything after it was written: the segment is cut
/// at the end of the last complete round before it. Format 3: no intact round end (with this
/// segment's salt) after it claims a synced length beyond it. Format 2: no intact record at
/// all follows it. Anything else, and any bad record in an older segment, is corruption.
fn cut_torn_tail(
    file: &DurableFile,
    path: &Path,
    len: u64,
    tolerant: bool,
    bad: Bad,
) -> Result<u64, WalError> {
    let Bad { offset, round_end, salt, reason } = bad;
    let corrupt = |reason| WalError::Corrupt { path: path.to_path_buf(), offset, reason };
    if !tolerant {
        return Err(corrupt(reason));
    }
    if all_zero(file, path, offset, len)? {
        // The writer's preallocated zeros after the last round (a crash kept them): the
        // segment simply ends here; not a torn write (unless a round was left incomplete).
        tracing::debug!(path = %path.display(), offset, zeros = len - offset,
            "cutting the preallocated tail off the newest WAL segment");
        file.set_len(round_end).map_err(|error| WalError::io(path, error))?;
        file.sync_all().map_err(|error| WalError::io(path, error))?;
        return Ok(offset - round_end);
    }
    match salt {
        Some(salt) => {
            if let Some((at, synced)) = highest_sync_claim(file, path, offset + 1, len, salt)? {
                if synced > offset {
                    tracing::error!(path = %path.display(), offset, round_end = at, synced,
                        %reason, "bad WAL record inside data synced before a later round");
                    return Err(corrupt(reason));
                }
            }
        }
        None => {
            if let Some(intact) = find_intact_record(file, path, offset + 1, len)? {
                tracing::error!(path = %path.display(), offset, intact, %reason,
                    "bad WAL record followed by an intact one: not a torn write");
                return Err(corrupt(reason));
            }
        }
    }
    tracing::warn!(path = %path.display(), offset, round_end, dropped_bytes = len - round_end,
        %reason, "cutting a torn tail (unsynced rounds) off the newest WAL segment");
    file.set_len(round_end).map_err(|error| WalError::io(path, error))?;
    file.sync_all().map_err(|error| WalError::io(path, error))?;
    Ok(len - round_end)
}

/// True when every byte in `from .. len` is zero (read in windows).
fn all_zero(file: &DurableFile, path: &Path, from: u64, len: u64) -> Result<bool, WalError> {
    let mut window = vec![0u8; SCAN_WINDOW_BYTES.min(len - from) as usize];
    let mut at = from;
    while at < len {
        let chunk = &mut window[..SCAN_WINDOW_BYTES.min(len - at) as usize];
        file.read_exact_at(chunk, at).map_err(|error| WalError::io(path, error))?;
        if chunk.iter().any(|&byte| byte != 0) {
            return Ok(false);
        }
        at += chunk.len() as u64;
    }
    Ok(true)
}

/// The first offset in `from .. len` where an intact record (plausible header, matching crc)
/// starts, if any.
fn find_intact_record(
    file: &DurableFile,
    path: &Path,
    from: u64,
    len: u64,
) -> Result<Option<u64>, WalError> {
    let mut found = None;
    scan_intact_records(file, path, from, len, |position, _, _| {
        found = Some(position);
        true
    })?;
    Ok(found)
}

/// Among the intact round ends carrying `salt` in `from .. len`, the one claiming the highest
/// synced length: `(offset, synced)`. Records inside client data never carry the salt.
fn highest_sync_claim(
    file: &DurableFile,
    path: &Path,
    from: u64,
    len: u64,
    salt: u32,
) -> Result<Option<(u64, u64)>, WalError> {
    let mut highest: Option<(u64, u64)> = None;
    scan_intact_records(file, path, from, len, |position, header, payload| {
        if header.kind == RecordKind::RoundEnd as u8 {
            if let Ok(Record::RoundEnd { salt: found, synced }) =
                decode_record(RecordKind::RoundEnd, payload)
            {
                if found == salt && highest.is_none_or(|(_, best)| synced > best) {
                    highest = Some((position, synced));
                }
            }
        }
        false
    })?;
    Ok(highest)
}

/// Calls `visit` for every offset in `from .. len` where an intact record (plausible header,
/// matching crc) starts, until it returns true. Reads the region in windows; memory stays
/// bounded.
fn scan_intact_records(
    file: &DurableFile,
    path: &Path,
    from: u64,
    len: u64,
    mut visit: impl FnMut(u64, &RecordHeader, &[u8]) -> bool,
) -> Result<(), WalError> {
    let io_error = |error| WalError::io(path, error);
    let header_len = RECORD_HEADER_LEN as u64;
    let mut window = Vec::new();
    let mut payload = Vec::new();
    let mut window_start = from;
    while window_start + header_len <= len {
        let window_len = (SCAN_WINDOW_BYTES + header_len).min(len - window_start);
        window.resize(window_len as usize, 0);
        file.read_exact_at(&mut window, window_start).map_err(io_error)?;
        let candidates = (window_len - header_len + 1).min(SCAN_WINDOW_BYTES);
        for at in 0..candidates {
            let start = at as usize;
            let header = RecordHeader::parse(&window[start..start + RECORD_HEADER_LEN]);
            let position = window_start + at;
            if !header.plausible(len - position) {
                continue;
            }
            let payload_start = start + RECORD_HEADER_LEN;
            let payload_end = payload_start + header.len as usize;
            let candidate = if payload_end <= window.len() {
                &window[payload_start..payload_end]
            } else {
                payload.resize(header.len as usize, 0);
                file.read_exact_at(&mut payload, position + header_len).map_err(io_error)?;
                &payload[..]
            };
            if check_record(&header, candidate).is_ok() && visit(position, &header, candidate) {
                return Ok(());
            }
        }
        window_start += candidates;
    }
    Ok(())
}

/// Applies one replayed record to the group states.
fn apply_record(
    groups: &mut HashMap<u64, GroupIndex>,
    group: u64,
    record: Record,
    segment: u64,
    offset: u64,
    len: u32,
) -> Result<(), Corruption> {
    if let Record::RemoveGroup = record {
        groups.remove(&group);
        return Ok(());
    }
    let state = groups.entry(group).or_default();
    match record {
        Record::Entry { log_id } => {
            state.check_append(group, log_id.index)?;
            let location = Location::Disk { segment, offset, len };
            state.push(Slot { log_id, serial: 0, location });
        }
        Record::Vote(vote) => state.vote = Some(vote),
        Record::Committed(committed) => state.committed = committed,
        Record::Truncate { from } => state.truncate(from),
        Record::Purge(upto) => state.purge(upto),
        Record::RemoveGroup => unreachable!("handled above"),
        Record::GroupState(checkpoint) => state.apply_checkpoint(&checkpoint),
        Record::RoundEnd { .. } => {}
    }
    Ok(())
}

/// fsyncs a directory, making creations, renames and deletions in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    quarry_persist::sync_dir(dir).map_err(|error| WalError::io(error.path, error.source))
}

/// Path of segment `seq` in `dir`.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(segment_file_name(seq))
}
