//! The on-disk format: segment file names, the segment header, record framing and the record
//! kinds with their payloads. Pure encoding and decoding; no file I/O happens here.
//!
//! The layout is described for readers in the crate documentation (`lib.rs`); this module is
//! its single implementation. Every multi-byte integer is little-endian.

use openraft::{LogId, Vote};
use quarry_persist::version::{self, DecodeError, FormatTooNew};
use serde::{Deserialize, Serialize};

use crate::error::{Corruption, WalError};

/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"QRYRLOG\0";
/// Version of the segment and record framing written by this code (header layout, record
/// header layout, the kinds). Version 3 added the segment salt (header bytes 28..32, covered
/// by the header crc) and ends every round with a [`RecordKind::RoundEnd`] record; version 2
/// segments (no salt, no round ends) are still read, with version 2's torn-tail rule. Version
/// 1 had no version byte in front of record payloads; its segments are refused (clean break
/// before the first release).
pub const FORMAT_VERSION: u32 = 3;
/// The older segment format still read (see [`FORMAT_VERSION`]).
pub const FORMAT_VERSION_V2: u32 = 2;
/// Version byte in front of every record payload this crate writes (each kind's payload is
/// described at [`RecordKind`]). Bump it when any of them changes, and keep decoding the older
/// versions (see `quarry_persist` for the rule and the golden tests in this module).
pub const PAYLOAD_VERSION: u8 = 1;
/// Name of the lock file inside the WAL directory.
pub const LOCK_FILE_NAME: &str = "LOCK";
/// Length of the segment header; the first record starts at this offset.
pub const SEGMENT_HEADER_LEN: u64 = 32;
/// Length of a record header: `len u32, crc u32, kind u8, group u64`.
pub const RECORD_HEADER_LEN: usize = 17;
/// Largest record payload accepted, written or read (an entry bigger than this is refused).
pub const RECORD_PAYLOAD_MAX: u32 = 64 << 20;
/// File name suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Digits in a segment file name (the zero-padded sequence number).
const SEGMENT_NAME_DIGITS: usize = 20;

const _: () = assert!(SEGMENT_HEADER_LEN as usize >= 8 + 4 + 4 + 8 + 4);
const _: () = assert!(RECORD_HEADER_LEN == 4 + 4 + 1 + 8);
const _: () = assert!((RECORD_PAYLOAD_MAX as u64) < u32::MAX as u64);

/// What a record says. The discriminant is the `kind` byte on disk; never renumber. Every
/// payload starts with the version byte [`PAYLOAD_VERSION`] (`v` below).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// One log entry of the group: `v ++ bincode(LogId<u64>) (24 bytes) ++ tag u8 ++ body`;
    /// tag 0 = blank (no body), 1 = normal (body: the application data as its
    /// [`crate::EntryCodec`] encodes it, with its own version byte), 2 = membership (body:
    /// `bincode(Membership<u64, C::Node>)`). Replay reads the log id without knowing `C`.
    Entry = 1,
    /// The group's vote: `v ++ bincode(Vote<u64>)`.
    Vote = 2,
    /// The group's committed log id: `v ++ bincode(Option<LogId<u64>>)`.
    Committed = 3,
    /// Entries with index >= `from` are deleted: `v ++ from u64`.
    Truncate = 4,
    /// Entries up to and including this log id are deleted: `v ++ bincode(LogId<u64>)`.
    Purge = 5,
    /// Everything known about the group is forgotten: `v` alone.
    RemoveGroup = 6,
    /// The group's vote, committed and purged log ids, repeated at the start of every segment
    /// so that older segments can be deleted: `v ++ bincode(GroupCheckpoint)`.
    GroupState = 7,
    /// Ends a round (format 3): `v ++ salt u32 ++ synced u64`. `salt` is the segment's salt
    /// (random, in the segment header: client data cannot forge a round end); `synced` is
    /// the length of the segment already fdatasynced when the round was written. Replay
    /// applies a round's records only at its round end, and a damaged record before a round
    /// end whose `synced` covers it is corruption, not a torn write. Its group field is 0.
    RoundEnd = 8,
}

/// Entry tag: a blank entry (no body).
pub const ENTRY_BLANK: u8 = 0;
/// Entry tag: a normal entry (body: application data).
pub const ENTRY_NORMAL: u8 = 1;
/// Entry tag: a membership entry (body: `bincode(Membership)`).
pub const ENTRY_MEMBERSHIP: u8 = 2;
/// Bytes of `bincode(LogId<u64>)`: term, leader node id, index.
pub const LOG_ID_LEN: usize = 24;
/// Bytes in front of an entry's body: version, log id, tag.
pub const ENTRY_HEAD_LEN: usize = 1 + LOG_ID_LEN + 1;

/// Why a record payload was refused: damage (or a bug), or a newer build's format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Not a valid payload.
    Corrupt(Corruption),
    /// Written by a newer build.
    TooNew(FormatTooNew),
}

impl From<Corruption> for Rejected {
    fn from(reason: Corruption) -> Rejected {
        Rejected::Corrupt(reason)
    }
}

impl Rejected {
    /// The error for a record at `offset` of the segment at `path`.
    pub fn at(self, path: &std::path::Path, offset: u64) -> WalError {
        match self {
            Rejected::Corrupt(reason) => {
                WalError::Corrupt { path: path.to_path_buf(), offset, reason }
            }
            Rejected::TooNew(source) => {
                WalError::FormatTooNew { path: path.to_path_buf(), offset, source }
            }
        }
    }
}

impl RecordKind {
    /// The kind for a byte read from disk, if it is one.
    pub fn from_byte(byte: u8) -> Option<RecordKind> {
        match byte {
            1 => Some(RecordKind::Entry),
            2 => Some(RecordKind::Vote),
            3 => Some(RecordKind::Committed),
            4 => Some(RecordKind::Truncate),
            5 => Some(RecordKind::Purge),
            6 => Some(RecordKind::RemoveGroup),
            7 => Some(RecordKind::GroupState),
            8 => Some(RecordKind::RoundEnd),
            _ => None,
        }
    }
}

/// The payload of a `GroupState` record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCheckpoint {
    /// Last saved vote.
    pub vote: Option<Vote<u64>>,
    /// Last saved committed log id.
    pub committed: Option<LogId<u64>>,
    /// Last purged log id.
    pub purged: Option<LogId<u64>>,
}

/// A decoded record. Entry payloads stay as bytes: only their log id is decoded here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// See [`RecordKind::Entry`].
    Entry {
        /// The log id at the start of the serialised entry.
        log_id: LogId<u64>,
    },
    /// See [`RecordKind::Vote`].
    Vote(Vote<u64>),
    /// See [`RecordKind::Committed`].
    Committed(Option<LogId<u64>>),
    /// See [`RecordKind::Truncate`].
    Truncate {
        /// First deleted index.
        from: u64,
    },
    /// See [`RecordKind::Purge`].
    Purge(LogId<u64>),
    /// See [`RecordKind::RemoveGroup`].
    RemoveGroup,
    /// See [`RecordKind::GroupState`].
    GroupState(GroupCheckpoint),
    /// See [`RecordKind::RoundEnd`].
    RoundEnd {
        /// The segment's salt.
        salt: u32,
        /// Bytes of the segment fdatasynced before the round was written.
        synced: u64,
    },
}

/// What a segment header says about its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFormat {
    /// [`FORMAT_VERSION`] or [`FORMAT_VERSION_V2`].
    pub version: u32,
    /// The salt of a format 3 segment (`None` for format 2).
    pub salt: Option<u32>,
}

/// Name of the segment file with this sequence number, e.g. `00000000000000000001.wal`.
pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:0width$}{SEGMENT_SUFFIX}", width = SEGMENT_NAME_DIGITS)
}

/// Sequence number of a segment file name, or `None` for any other file.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The 32-byte format 3 segment header: magic, format version, header length, sequence
/// number, crc32c of bytes 0..24 and 28..32, the segment's salt.
pub fn encode_segment_header(seq: u64, salt: u32) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = encode_header_fields(seq, FORMAT_VERSION);
    header[28..32].copy_from_slice(&salt.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[0..24]), &header[28..32]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The format 2 segment header (crc32c of bytes 0..24, four zero bytes), still read; written
/// only by tests.
pub fn encode_segment_header_v2(seq: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = encode_header_fields(seq, FORMAT_VERSION_V2);
    let crc = crc32c::crc32c(&header[0..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

fn encode_header_fields(seq: u64, version: u32) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&version.to_le_bytes());
    header[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    header[16..24].copy_from_slice(&seq.to_le_bytes());
    header
}

/// Checks a segment header read from the file whose name carries `seq`.
pub fn check_segment_header(header: &[u8], seq: u64) -> Result<SegmentFormat, Corruption> {
    if header.len() < SEGMENT_HEADER_LEN as usize {
        return Err(Corruption::ShortSegmentHeader { len: header.len() as u64 });
    }
    if header[0..8] != SEGMENT_MAGIC {
        return Err(Corruption::BadMagic);
    }
    let stored_crc = read_u32(&header[24..28]);
    let crc_v2 = crc32c::crc32c(&header[0..24]);
    let crc_v3 = crc32c::crc32c_append(crc_v2, &header[28..32]);
    let version = read_u32(&header[8..12]);
    let salt = read_u32(&header[28..32]);
    let format = match version {
        FORMAT_VERSION if crc_v3 == stored_crc => SegmentFormat { version, salt: Some(salt) },
        FORMAT_VERSION_V2 if crc_v2 == stored_crc => SegmentFormat { version, salt: None },
        _ if crc_v2 != stored_crc && crc_v3 != stored_crc => {
            return Err(Corruption::BadSegmentHeaderCrc)
        }
        _ if version == FORMAT_VERSION || version == FORMAT_VERSION_V2 => {
            return Err(Corruption::BadSegmentHeaderCrc)
        }
        _ => return Err(Corruption::UnsupportedVersion { found: version }),
    };
    let header_len = read_u32(&header[12..16]);
    if u64::from(header_len) != SEGMENT_HEADER_LEN {
        return Err(Corruption::BadSegmentHeaderLength { found: header_len });
    }
    let found = read_u64(&header[16..24]);
    if found != seq {
        return Err(Corruption::SequenceMismatch { found });
    }
    Ok(format)
}

/// The fixed part of a record as read from disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// crc32c over `len`, `kind`, `group` (their on-disk bytes) and the payload.
    pub crc: u32,
    /// The kind byte, not yet validated.
    pub kind: u8,
    /// The Raft group the record belongs to.
    pub group: u64,
}

impl RecordHeader {
    /// Parses the first [`RECORD_HEADER_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> RecordHeader {
        assert!(bytes.len() >= RECORD_HEADER_LEN, "record header needs {RECORD_HEADER_LEN} bytes");
        RecordHeader {
            len: read_u32(&bytes[0..4]),
            crc: read_u32(&bytes[4..8]),
            kind: bytes[8],
            group: read_u64(&bytes[9..17]),
        }
    }

    /// Whether the header could start a record in a file region of `available` bytes (from the
    /// start of the header): known kind, length within limits and within the region.
    pub fn plausible(&self, available: u64) -> bool {
        RecordKind::from_byte(self.kind).is_some()
            && self.len <= RECORD_PAYLOAD_MAX
            && RECORD_HEADER_LEN as u64 + u64::from(self.len) <= available
    }

    /// Total on-disk length of the record (header and payload).
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// crc32c of a record: over `len`, `kind`, `group` and the payload.
pub fn record_crc(len: u32, kind: u8, group: u64, payload: &[u8]) -> u32 {
    assert_eq!(len as usize, payload.len());
    let mut fixed = [0u8; 13];
    fixed[0..4].copy_from_slice(&len.to_le_bytes());
    fixed[4] = kind;
    fixed[5..13].copy_from_slice(&group.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&fixed), payload)
}

/// Where records are encoded: a `Vec`, or the writer's aligned buffer (records go straight
/// into the memory a direct write sends, without a second copy).
pub trait RecordOut {
    /// Appends `bytes`.
    fn extend_from_slice(&mut self, bytes: &[u8]);
    /// The bytes held.
    fn as_slice(&self) -> &[u8];
    /// Overwrites bytes already held, from `at`.
    fn patch(&mut self, at: usize, bytes: &[u8]);
}

impl RecordOut for Vec<u8> {
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes)
    }
    fn as_slice(&self) -> &[u8] {
        self
    }
    fn patch(&mut self, at: usize, bytes: &[u8]) {
        self[at..at + bytes.len()].copy_from_slice(bytes)
    }
}

impl RecordOut for quarry_persist::AlignedBuf {
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        quarry_persist::AlignedBuf::extend_from_slice(self, bytes)
    }
    fn as_slice(&self) -> &[u8] {
        quarry_persist::AlignedBuf::as_slice(self)
    }
    fn patch(&mut self, at: usize, bytes: &[u8]) {
        self.as_mut_slice()[at..at + bytes.len()].copy_from_slice(bytes)
    }
}

/// Payloads are copied into the output and their crc computed in pieces of this size, each
/// piece's crc read from the copy while it is still in the CPU's cache (one pass over memory
/// instead of two for a 4 MiB entry).
const COPY_CRC_PIECE: usize = 64 << 10;

/// Appends one framed record to `out`; returns the offset of the record within `out`.
pub fn encode_record(
    out: &mut impl RecordOut,
    kind: RecordKind,
    group: u64,
    payload: &[u8],
) -> usize {
    assert!(payload.len() <= RECORD_PAYLOAD_MAX as usize, "record payload over the limit");
    let start = out.as_slice().len();
    let len = payload.len() as u32;
    let mut header = [0u8; RECORD_HEADER_LEN];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[8] = kind as u8;
    header[9..17].copy_from_slice(&group.to_le_bytes());
    // The crc, as record_crc computes it, over the copy just made of each piece.
    let mut crc = crc32c::crc32c(&header[0..4]);
    crc = crc32c::crc32c_append(crc, &header[8..17]);
    out.extend_from_slice(&header);
    for piece in payload.chunks(COPY_CRC_PIECE) {
        let at = out.as_slice().len();
        out.extend_from_slice(piece);
        crc = crc32c::crc32c_append(crc, &out.as_slice()[at..]);
    }
    out.patch(start + 4, &crc.to_le_bytes());
    assert_eq!(out.as_slice().len() - start, RECORD_HEADER_LEN + payload.len());
    debug_assert_eq!(crc, record_crc(len, kind as u8, group, payload));
    start
}

/// Verifies a record's payload against its header (crc, then kind).
pub fn check_record(header: &RecordHeader, payload: &[u8]) -> Result<RecordKind, Corruption> {
    if payload.len() != header.len as usize {
        return Err(Corruption::RecordPastEnd { len: header.len });
    }
    if record_crc(header.len, header.kind, header.group, payload) != header.crc {
        return Err(Corruption::BadRecordCrc);
    }
    RecordKind::from_byte(header.kind).ok_or(Corruption::UnknownKind { kind: header.kind })
}

/// What the version byte of a record payload names, for errors.
const PAYLOAD_WHAT: &str = "WAL record payload";

/// Splits a payload into its body after checking the version byte.
fn payload_body(kind: RecordKind, payload: &[u8]) -> Result<&[u8], Rejected> {
    match version::split(PAYLOAD_WHAT, PAYLOAD_VERSION, payload) {
        // Only one version exists so far; a second one would be matched here.
        Ok((_version, body)) => Ok(body),
        Err(DecodeError::TooNew(too_new)) => Err(Rejected::TooNew(too_new)),
        Err(DecodeError::Invalid { .. }) => {
            Err(Corruption::Undecodable { kind: kind as u8 }.into())
        }
    }
}

/// Decodes a crc-checked payload. A crc-valid payload that does not decode is corruption of a
/// kind the crc cannot catch (a bug or a format mismatch), never a torn write; one with a newer
/// version byte is [`Rejected::TooNew`].
pub fn decode_record(kind: RecordKind, payload: &[u8]) -> Result<Record, Rejected> {
    let body = payload_body(kind, payload)?;
    let undecodable = |_| Corruption::Undecodable { kind: kind as u8 };
    let record = match kind {
        RecordKind::Entry => Record::Entry { log_id: split_entry(payload)?.0 },
        RecordKind::Vote => Record::Vote(version::decode_body("", body).map_err(undecodable)?),
        RecordKind::Committed => {
            Record::Committed(version::decode_body("", body).map_err(undecodable)?)
        }
        RecordKind::Truncate => {
            if body.len() != 8 {
                return Err(Corruption::Undecodable { kind: kind as u8 }.into());
            }
            Record::Truncate { from: read_u64(body) }
        }
        RecordKind::Purge => Record::Purge(version::decode_body("", body).map_err(undecodable)?),
        RecordKind::RemoveGroup => {
            if !body.is_empty() {
                return Err(Corruption::Undecodable { kind: kind as u8 }.into());
            }
            Record::RemoveGroup
        }
        RecordKind::GroupState => {
            Record::GroupState(version::decode_body("", body).map_err(undecodable)?)
        }
        RecordKind::RoundEnd => {
            if body.len() != 12 {
                return Err(Corruption::Undecodable { kind: kind as u8 }.into());
            }
            Record::RoundEnd { salt: read_u32(&body[0..4]), synced: read_u64(&body[4..12]) }
        }
    };
    Ok(record)
}

/// Serialises the payload of a metadata record (every kind but `Entry`, whose payload the log
/// store builds with [`encode_entry_head`]).
pub fn encode_metadata(record: &Record) -> Vec<u8> {
    match record {
        Record::Entry { .. } => panic!("entry payloads are serialised by the log store"),
        Record::Vote(vote) => version::encode(PAYLOAD_VERSION, vote),
        Record::Committed(committed) => version::encode(PAYLOAD_VERSION, committed),
        Record::Truncate { from } => {
            let mut out = vec![PAYLOAD_VERSION];
            out.extend_from_slice(&from.to_le_bytes());
            out
        }
        Record::Purge(log_id) => version::encode(PAYLOAD_VERSION, log_id),
        Record::RemoveGroup => vec![PAYLOAD_VERSION],
        Record::GroupState(checkpoint) => version::encode(PAYLOAD_VERSION, checkpoint),
        Record::RoundEnd { salt, synced } => {
            let mut out = vec![PAYLOAD_VERSION];
            out.extend_from_slice(&salt.to_le_bytes());
            out.extend_from_slice(&synced.to_le_bytes());
            out
        }
    }
}

/// Starts an entry payload in `out`: version, log id, tag. The body (if any) follows.
pub fn encode_entry_head(out: &mut Vec<u8>, log_id: &LogId<u64>, tag: u8) {
    let start = out.len();
    version::encode_into(out, PAYLOAD_VERSION, log_id);
    out.push(tag);
    assert_eq!(out.len() - start, ENTRY_HEAD_LEN, "a log id is {LOG_ID_LEN} bytes");
}

/// Splits an entry payload into its log id, tag and body.
pub fn split_entry(payload: &[u8]) -> Result<(LogId<u64>, u8, &[u8]), Rejected> {
    let kind = RecordKind::Entry;
    let body = payload_body(kind, payload)?;
    if body.len() < LOG_ID_LEN + 1 {
        return Err(Corruption::Undecodable { kind: kind as u8 }.into());
    }
    let log_id = version::decode_body("", &body[..LOG_ID_LEN])
        .map_err(|_| Corruption::Undecodable { kind: kind as u8 })?;
    Ok((log_id, body[LOG_ID_LEN], &body[LOG_ID_LEN + 1..]))
}

/// The kind byte of a record.
pub fn kind_of(record: &Record) -> RecordKind {
    match record {
        Record::Entry { .. } => RecordKind::Entry,
        Record::Vote(_) => RecordKind::Vote,
        Record::Committed(_) => RecordKind::Committed,
        Record::Truncate { .. } => RecordKind::Truncate,
        Record::Purge(_) => RecordKind::Purge,
        Record::RemoveGroup => RecordKind::RemoveGroup,
        Record::GroupState(_) => RecordKind::GroupState,
        Record::RoundEnd { .. } => RecordKind::RoundEnd,
    }
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut array = [0u8; 4];
    array.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(array)
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(array)
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 3), index)
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_segment_file_name("00000000000000000001.wal"), Some(1));
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_file_name("1.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.wal"), None);
        assert_eq!(parse_segment_file_name("LOCK"), None);
    }

    #[test]
    fn segment_header_checks_every_field() {
        let header = encode_segment_header(7, 0xdead_beef);
        let format = SegmentFormat { version: FORMAT_VERSION, salt: Some(0xdead_beef) };
        assert_eq!(check_segment_header(&header, 7), Ok(format));
        let old = encode_segment_header_v2(7);
        let format = SegmentFormat { version: FORMAT_VERSION_V2, salt: None };
        assert_eq!(check_segment_header(&old, 7), Ok(format));
        assert_eq!(
            check_segment_header(&header, 8),
            Err(Corruption::SequenceMismatch { found: 7 })
        );
        assert!(check_segment_header(&header[..31], 7).is_err());
        for byte in 0..32 {
            let mut bad = header;
            bad[byte] ^= 0x40;
            assert!(check_segment_header(&bad, 7).is_err(), "flip in byte {byte} undetected");
        }
    }

    #[test]
    fn records_round_trip_and_detect_flips() {
        let records = [
            Record::Vote(Vote::new(4, 2)),
            Record::Committed(Some(log_id(2, 9))),
            Record::Committed(None),
            Record::Truncate { from: 17 },
            Record::Purge(log_id(1, 5)),
            Record::RemoveGroup,
            Record::GroupState(GroupCheckpoint {
                vote: Some(Vote::new_committed(3, 1)),
                committed: None,
                purged: Some(log_id(1, 1)),
            }),
            Record::RoundEnd { salt: 0x1234_5678, synced: 4096 },
        ];
        for record in records {
            let payload = encode_metadata(&record);
            let mut out = Vec::new();
            encode_record(&mut out, kind_of(&record), 42, &payload);
            let header = RecordHeader::parse(&out);
            assert_eq!(header.group, 42);
            assert!(header.plausible(out.len() as u64));
            let kind = check_record(&header, &out[RECORD_HEADER_LEN..]).unwrap();
            assert_eq!(decode_record(kind, &out[RECORD_HEADER_LEN..]).unwrap(), record);
            for byte in 0..out.len() {
                let mut bad = out.clone();
                bad[byte] ^= 0x01;
                let header = RecordHeader::parse(&bad);
                let payload = &bad[RECORD_HEADER_LEN..];
                let detected =
                    payload.len() != header.len as usize || check_record(&header, payload).is_err();
                assert!(detected, "flip in byte {byte} of {record:?} undetected");
            }
        }
    }

    #[test]
    fn entry_log_id_is_read_from_the_entry_head() {
        let mut payload = Vec::new();
        encode_entry_head(&mut payload, &log_id(6, 11), ENTRY_NORMAL);
        payload.extend_from_slice(b"body");
        let record = decode_record(RecordKind::Entry, &payload).unwrap();
        assert_eq!(record, Record::Entry { log_id: log_id(6, 11) });
        assert_eq!(split_entry(&payload).unwrap(), (log_id(6, 11), ENTRY_NORMAL, &b"body"[..]));
        assert!(split_entry(&payload[..ENTRY_HEAD_LEN - 1]).is_err());
    }
}
