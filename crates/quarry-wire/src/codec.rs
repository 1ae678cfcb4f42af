//! Frames: the byte layout on the wire, independent of any socket so it can be fuzzed.
//!
//! ```text
//! offset size field
//!      0    4 magic "QRY1"
//!      4    1 version (FRAME_VERSION = 4)
//!      5    1 flags (bit 0: signed)
//!      6    2 bulk offset: where the payload's first large data payload's bytes start
//!           (u16; 0: none, or it starts past 64 KiB)
//!      8    8 request id (0 for events and handshake)
//!     16    4 payload length (bytes)
//!     20    4 crc32c of the payload
//!     24    8 sequence number (per direction, starts at 1 after the handshake)
//!     32    n payload: bincode(Message), fixed-width integers, little endian
//!   32+n   32 signature when flag 0 is set: BLAKE3 keyed hash under the session key of
//!           the header and payload, the bulk (below) replaced by its BLAKE3 digest
//! ```
//! Why keyed BLAKE3 and not HMAC-SHA256 (frame version 1): the MAC runs over every payload
//! byte on both ends, and a 4 MiB write spent ~2.7 ms of the OSD's CPU in SHA-256 alone
//! (perf, `rados bench -b 4194304`), more than half of issue 14's 4 ms budget for the whole
//! write. BLAKE3's keyed mode is a MAC by design (a PRF under a 256-bit key), and it runs
//! several times faster here (`cargo run --release -p quarry-wire --example auth_cost`, in
//! docs/benchmarks.md). The full 32-byte tag is sent and compared in constant time.
//! A frame whose magic, version, flags, length, crc, sequence or signature is wrong is an
//! error; the connection is then closed. Nothing here panics on any input. The receiver of a
//! signed frame checks its signature and not its crc, and the sender leaves the crc field 0:
//! the keyed hash covers the header and every payload byte, so any change a crc would catch
//! fails the signature; one crc pass less over every payload on each side (issue 14).
//! A receiver may hash the payload while it arrives ([`StreamingMac`]): the check then
//! overlaps the transfer instead of following it. A sender encodes a frame in pieces
//! ([`encode_segments`]): a large data payload (a write's, a read reply's) is written from
//! its own buffer after the encoded bytes before it, not copied into the frame; the bytes
//! on the wire are the same.
//!
//! What is signed (frame version 4): with a bulk offset `b` (below), the payload's bytes
//! from `b` on, as many as the length prefix before them says (at most to the payload's end),
//! are the bulk; the keyed hash covers `header ++ payload[..b] ++ blake3(bulk) ++ the rest`.
//! Without one it covers `header ++ payload`. Forging a tag still needs the key (the keyed
//! hash) or two bulks with the same BLAKE3 digest (a collision of a 256-bit hash: ~2^128
//! work, also for a peer that chooses a bulk's bytes). What it
//! buys: the bulk's digest does not depend on the header, whose sequence number is only
//! known when the frame is written, so a producer that has the bytes in hand earlier may hash
//! them then (the OSD hashes a large read while it arrives from the device, in pieces, and
//! the reply carries the digest: `quarry_types::Payload::with_digest`); the writer then
//! hashes only the small rest ([`FrameMac`]).
//!
//! The bulk offset (frame version 3) tells a receiver, before the body arrives, where the
//! bytes of a large data payload (a 4 MiB write's) will be: it receives the body so that they
//! land 4 KiB-aligned in memory (the OSD writes them with direct I/O without an aligned copy)
//! and may hand them on while the rest still arrives ([`crate::conn::BulkSink`]: the OSD
//! writes them to their place in its data file meanwhile). It is a hint the signature
//! covers, like every header byte; a wrong one from a hostile peer costs that peer's own
//! write (the OSD matches what it wrote against the decoded payload's exact bytes).

use bincode::Options;

use crate::message::Message;
use crate::WireError;

/// Frame magic.
pub const FRAME_MAGIC: [u8; 4] = *b"QRY1";
/// Frame format version.
pub const FRAME_VERSION: u8 = 4;
/// Header size in bytes.
pub const HEADER_LEN: usize = 32;
/// Signature size in bytes.
pub const SIGNATURE_LEN: usize = 32;
/// Largest payload accepted before authentication (the handshake messages are tiny).
pub const HANDSHAKE_PAYLOAD_MAX: u32 = 64 << 10;
/// Largest payload accepted on an authenticated session: one object write of the largest
/// object size plus room for the rest of the request.
pub const FRAME_PAYLOAD_MAX: u32 = (quarry_types::OBJECT_SIZE_MAX as u32) + (1 << 20);

const FLAG_SIGNED: u8 = 1;

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Request id.
    pub request_id: u64,
    /// Payload length.
    pub payload_len: u32,
    /// crc32c of the payload.
    pub payload_crc: u32,
    /// Sequence number.
    pub seq: u64,
    /// Whether a signature follows the payload.
    pub signed: bool,
    /// Where the bytes of the payload's first large data payload start (0: not said); see
    /// the module docs. At least 8 (its length prefix comes first) and within the payload.
    pub bulk_offset: u16,
}

impl FrameHeader {
    /// Bytes that follow the header (payload and signature).
    pub fn body_len(&self) -> usize {
        self.payload_len as usize + if self.signed { SIGNATURE_LEN } else { 0 }
    }
}

/// Session key used to sign frames once a handshake succeeded.
pub type SessionKey = [u8; 32];

fn bincode_options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(limit)
}

/// Encodes `msg` as one complete frame (header, payload, signature if `key` is given).
pub fn encode_frame(
    request_id: u64,
    seq: u64,
    msg: &Message,
    key: Option<&SessionKey>,
) -> Result<Vec<u8>, WireError> {
    let mut frame = encode_unsigned_part(request_id, seq, msg, key.is_some())?;
    if let Some(key) = key {
        append_signature(&mut frame, key);
    }
    Ok(frame)
}

/// Appends the signature of `frame` ([`encode_unsigned_part`]'s bytes, signed) under `key`.
pub fn append_signature(frame: &mut Vec<u8>, key: &SessionKey) {
    let tag = signature(key, frame);
    frame.extend_from_slice(&tag);
}

/// A frame's header and payload, without its signature, in one buffer (see
/// [`encode_segments`], which leaves large payloads out of the buffer).
pub fn encode_unsigned_part(
    request_id: u64,
    seq: u64,
    msg: &Message,
    signed: bool,
) -> Result<Vec<u8>, WireError> {
    let segments = encode_segments(request_id, seq, msg, signed)?;
    let mut frame = Vec::with_capacity(segments.len() + SIGNATURE_LEN);
    for piece in segments.pieces() {
        frame.extend_from_slice(piece);
    }
    Ok(frame)
}

/// A frame's header and payload, without its signature, as pieces to send in order
/// ([`Segments::pieces`]): the encoded message with its large data payloads left out, and
/// those payloads' own bytes (`quarry_types::zerocopy::encode_spliced`: a 4 MiB write or read
/// reply is not copied into the frame). The sender of a signed frame hashes the pieces
/// ([`FrameSigner`]) and sends the tag after them. `signed` sets the header's flag (and
/// leaves its crc 0).
pub fn encode_segments(
    request_id: u64,
    seq: u64,
    msg: &Message,
    signed: bool,
) -> Result<Segments, WireError> {
    let payload_len = bincode_options(u64::from(FRAME_PAYLOAD_MAX))
        .serialized_size(msg)
        .map_err(|e| WireError::Encode(e.to_string()))?;
    if payload_len > u64::from(FRAME_PAYLOAD_MAX) {
        return Err(WireError::TooLarge { len: payload_len, max: FRAME_PAYLOAD_MAX });
    }
    // The header is written once the payload's length, crc and bulk offset are known (below).
    let mut header = Vec::with_capacity(HEADER_LEN + (payload_len as usize).min(64 << 10));
    header.extend_from_slice(&[0u8; HEADER_LEN]);
    // Without a size limit (checked above): bincode would run a sizing pass first.
    let options = bincode::DefaultOptions::new().with_fixint_encoding().with_little_endian();
    let (encoded, head, splices, first_bulk) =
        quarry_types::zerocopy::encode_spliced(header, |w| options.serialize_into(w, msg));
    encoded.map_err(|e| WireError::Encode(e.to_string()))?;
    let spliced: usize = splices.iter().map(|s| s.bytes.len()).sum();
    assert_eq!(head.len() - HEADER_LEN + spliced, payload_len as usize, "bincode size estimate");
    let mut segments = Segments { head, splices };
    // A signed frame's crc field is 0: its receiver checks the signature, which covers every
    // byte, and never the crc (one pass less over every payload on the sender, issue 14).
    let crc = if signed {
        0
    } else {
        let (mut crc, mut skip) = (0, HEADER_LEN);
        for piece in segments.pieces() {
            let from = skip.min(piece.len());
            skip -= from;
            crc = crc32c::crc32c_append(crc, &piece[from..]);
        }
        crc
    };
    // The first payload of at least 1 KiB is the bulk: signed by its digest, which BLAKE3
    // computes from a chunk boundary (`quarry_types::zerocopy::BULK_MIN`).
    let bulk = first_bulk.map_or(0, |at| at - HEADER_LEN);
    let bulk = u16::try_from(bulk).unwrap_or(0);
    let header = FrameHeader {
        request_id,
        payload_len: payload_len as u32,
        payload_crc: crc,
        seq,
        signed,
        bulk_offset: bulk,
    };
    segments.head[..HEADER_LEN].copy_from_slice(&header.encode());
    Ok(segments)
}

impl FrameHeader {
    /// The header's bytes (the layout in the module docs).
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[..4].copy_from_slice(&FRAME_MAGIC);
        bytes[4] = FRAME_VERSION;
        bytes[5] = if self.signed { FLAG_SIGNED } else { 0 };
        bytes[6..8].copy_from_slice(&self.bulk_offset.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.payload_len.to_le_bytes());
        bytes[20..24].copy_from_slice(&self.payload_crc.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.seq.to_le_bytes());
        bytes
    }
}

/// The start of a frame carrying a [`crate::message::Reply::ReadPart`] of `len` data bytes
/// that are not in hand yet (`crate::conn` streams them as they are read): the header
/// (signed, the data as the bulk) and the payload's bytes before the data. What follows on
/// the wire: the `len` bytes, the data's crc32c (4 bytes, little endian: the payload's end)
/// and the tag. The bytes are those [`encode_segments`] makes of the same message with the
/// data in hand (`codec::tests::a_streamed_part_is_the_frame_of_its_message`).
pub fn encode_part_head(request_id: u64, seq: u64, len: usize) -> Result<Vec<u8>, WireError> {
    use crate::message::Reply;
    // The message with no data: its encoding ends with the data's length prefix (0 here)
    // and the crc; the data goes between them.
    let empty =
        Message::Reply(Reply::ReadPart(quarry_types::Payload::with_crc(bytes::Bytes::new(), 0)));
    let options = bincode::DefaultOptions::new().with_fixint_encoding().with_little_endian();
    let encoded = options.serialize(&empty).map_err(|e| WireError::Encode(e.to_string()))?;
    let before = encoded.len() - 4;
    let payload_len = encoded.len() as u64 + len as u64;
    if payload_len > u64::from(FRAME_PAYLOAD_MAX) {
        return Err(WireError::TooLarge { len: payload_len, max: FRAME_PAYLOAD_MAX });
    }
    if len < quarry_types::zerocopy::BULK_MIN {
        // Not a bulk in the frame `encode_segments` makes: the header would differ.
        return Err(WireError::Encode(format!("a streamed part of {len} bytes is too small")));
    }
    let header = FrameHeader {
        request_id,
        payload_len: payload_len as u32,
        payload_crc: 0,
        seq,
        signed: true,
        bulk_offset: before as u16,
    };
    let mut head = Vec::with_capacity(HEADER_LEN + before);
    head.extend_from_slice(&header.encode());
    head.extend_from_slice(&encoded[..before - 8]);
    head.extend_from_slice(&(len as u64).to_le_bytes());
    Ok(head)
}

/// An encoded frame in pieces ([`encode_segments`]).
pub struct Segments {
    /// The header and the encoded message, large payloads left out.
    head: Vec<u8>,
    /// The payloads left out: where each goes in `head`, its bytes (and digest).
    splices: Vec<quarry_types::zerocopy::Splice>,
}

impl Segments {
    /// The frame's bytes in order: parts of the head and the payloads between them (no
    /// allocation: every frame a connection sends goes through here).
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let cuts = self.splices.iter().map(|s| s.at);
        let starts = std::iter::once(0).chain(cuts.clone());
        let ends = cuts.chain(std::iter::once(self.head.len()));
        let parts = starts.zip(ends).map(|(a, b)| &self.head[a..b]);
        let payloads = self.splices.iter().map(|s| Some(&s.bytes[..])).chain([None]);
        parts
            .zip(payloads)
            .flat_map(|(part, payload)| [Some(part), payload])
            .flatten()
            .filter(|piece| !piece.is_empty())
    }

    /// Bytes of the whole frame (header and payload).
    pub fn len(&self) -> usize {
        self.head.len() + self.splices.iter().map(|s| s.bytes.len()).sum::<usize>()
    }

    /// Never true: a frame has a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The frame's signature under `key`, for a sender that writes the pieces and then it.
    /// A bulk whose producer gave its digest is not hashed again.
    pub fn signature(&self, key: &SessionKey) -> [u8; SIGNATURE_LEN] {
        let mut mac = FrameMac::new(key, &self.header());
        let mut at = HEADER_LEN;
        for splice in &self.splices {
            mac.update(&self.head[at..splice.at]);
            let given = splice.digest.as_ref();
            if !given.is_some_and(|d| mac.bulk_digest(d, splice.bytes.len())) {
                mac.update(&splice.bytes);
            }
            at = splice.at;
        }
        mac.update(&self.head[at..]);
        *mac.finalize().as_bytes()
    }

    /// The first [`HEADER_LEN`] bytes.
    fn header(&self) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.head[..HEADER_LEN]);
        header
    }
}

/// The keyed hash that signs a frame (module docs: the header, then the payload with its bulk
/// replaced by the bulk's digest), fed the payload in order in pieces of any size. Sender and
/// receiver read the bulk's place from the header's bytes and its length from the payload, so
/// both compute the same tag from the same bytes however they cut them.
pub struct FrameMac {
    /// Keyed: the header, the payload outside the bulk, the bulk's digest. Boxed for the
    /// reason [`StreamingMac`]'s hasher is.
    outer: Box<blake3::Hasher>,
    /// The bulk's digest while it is being hashed.
    inner: Option<Box<blake3::Hasher>>,
    /// Payload bytes taken so far.
    pos: usize,
    payload_len: usize,
    /// The bulk offset (0: none).
    bulk: usize,
    /// Where the bulk ends, once its length prefix was taken.
    bulk_end: Option<usize>,
    /// The 8 bytes before the bulk (its length prefix), as they pass.
    prefix: [u8; 8],
}

impl FrameMac {
    /// A MAC under `key` of the frame whose header is `header_bytes` (hashed now); feed it the
    /// payload ([`FrameMac::update`]).
    pub fn new(key: &SessionKey, header_bytes: &[u8; HEADER_LEN]) -> FrameMac {
        let mut outer = Box::new(blake3::Hasher::new_keyed(key));
        outer.update(header_bytes);
        let (payload_len, bulk) = payload_len_and_bulk(header_bytes);
        let (payload_len, bulk) = (payload_len as usize, usize::from(bulk));
        // An offset the header check would refuse (below 8 or past the payload) is no bulk.
        let bulk = if bulk >= 8 && bulk <= payload_len { bulk } else { 0 };
        FrameMac { outer, inner: None, pos: 0, payload_len, bulk, bulk_end: None, prefix: [0; 8] }
    }

    /// Hashes the next payload bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.bulk == 0 || self.bulk_end.is_some_and(|end| self.pos >= end) {
                self.outer.update(bytes);
                self.pos += bytes.len();
                return;
            }
            if self.pos < self.bulk {
                let take = bytes.len().min(self.bulk - self.pos);
                let (part, rest) = bytes.split_at(take);
                // The part of the length prefix (payload[bulk - 8..bulk]) inside `part`.
                let from = self.pos.max(self.bulk - 8);
                let to = self.pos + take;
                if from < to {
                    self.prefix[from + 8 - self.bulk..to + 8 - self.bulk]
                        .copy_from_slice(&part[from - self.pos..]);
                }
                self.outer.update(part);
                self.pos += take;
                bytes = rest;
                if self.pos == self.bulk {
                    self.enter_bulk();
                }
                continue;
            }
            let end = self.bulk_end.unwrap_or(self.pos);
            let take = bytes.len().min(end - self.pos);
            let (part, rest) = bytes.split_at(take);
            if let Some(inner) = self.inner.as_mut() {
                inner.update(part);
            }
            self.pos += take;
            bytes = rest;
            if self.pos == end {
                self.leave_bulk(None);
            }
        }
    }

    /// At the bulk's start: its end from the length prefix, at most the payload's end.
    fn enter_bulk(&mut self) {
        let len = u64::from_le_bytes(self.prefix).min((self.payload_len - self.bulk) as u64);
        let end = self.bulk + len as usize;
        self.bulk_end = Some(end);
        self.inner = Some(Box::new(blake3::Hasher::new()));
        if end == self.pos {
            self.leave_bulk(None);
        }
    }

    /// At the bulk's end: its digest (hashed, or `given`) goes into the outer hash.
    fn leave_bulk(&mut self, given: Option<&[u8; 32]>) {
        let hashed = self.inner.take().map(|inner| *inner.finalize().as_bytes());
        if let Some(digest) = given.copied().or(hashed) {
            self.outer.update(&digest);
        }
    }

    /// Takes the next `len` payload bytes as the bulk whose BLAKE3 digest is `digest`,
    /// without hashing them: false (nothing taken; hash the bytes instead) unless the next
    /// bytes are exactly the bulk, untouched so far.
    pub fn bulk_digest(&mut self, digest: &[u8; 32], len: usize) -> bool {
        let untouched = self.bulk != 0 && self.pos == self.bulk;
        if !untouched || self.bulk_end != Some(self.bulk + len) || self.inner.is_none() {
            return false;
        }
        self.inner = None;
        self.pos += len;
        self.leave_bulk(Some(digest));
        true
    }

    /// The tag.
    pub fn finalize(self) -> blake3::Hash {
        self.outer.finalize()
    }
}

/// The signature of a frame computed piece by piece, in order, as the sender writes them
/// ([`Segments::pieces`], header first): the hash overlaps the transfer.
pub struct FrameSigner {
    key: SessionKey,
    mac: Option<FrameMac>,
    header: Vec<u8>,
}

impl FrameSigner {
    /// A signer under `key` of a frame whose bytes ([`Segments::pieces`]) follow.
    pub fn new(key: &SessionKey) -> FrameSigner {
        FrameSigner { key: *key, mac: None, header: Vec::with_capacity(HEADER_LEN) }
    }

    /// Hashes the next bytes of the frame.
    pub fn update(&mut self, mut bytes: &[u8]) {
        if self.mac.is_none() {
            let take = bytes.len().min(HEADER_LEN - self.header.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() == HEADER_LEN {
                let mut header = [0u8; HEADER_LEN];
                header.copy_from_slice(&self.header);
                self.mac = Some(FrameMac::new(&self.key, &header));
            }
        }
        if let Some(mac) = self.mac.as_mut() {
            mac.update(bytes);
        }
    }

    /// The tag to send after the frame.
    pub fn finish(self) -> [u8; SIGNATURE_LEN] {
        match self.mac {
            Some(mac) => *mac.finalize().as_bytes(),
            // Not a frame (shorter than a header): a tag no receiver accepts for it.
            None => *blake3::keyed_hash(&self.key, &self.header).as_bytes(),
        }
    }
}

/// The bytes `msg` takes as a frame (header, payload, signature): what a queued reply costs.
pub fn encoded_len(msg: &Message) -> u64 {
    let payload = bincode_options(u64::MAX).serialized_size(msg).unwrap_or(u64::MAX / 2);
    payload + (HEADER_LEN + SIGNATURE_LEN) as u64
}

/// A header's payload length and bulk offset, as they are (unchecked).
fn payload_len_and_bulk(bytes: &[u8; HEADER_LEN]) -> (u32, u16) {
    let len = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    (len, u16::from_le_bytes([bytes[6], bytes[7]]))
}

/// Parses and checks a header. `payload_max` is the limit for this connection state.
pub fn decode_header(bytes: &[u8; HEADER_LEN], payload_max: u32) -> Result<FrameHeader, WireError> {
    if bytes[0..4] != FRAME_MAGIC {
        return Err(WireError::BadMagic);
    }
    if bytes[4] != FRAME_VERSION {
        return Err(WireError::BadVersion(bytes[4]));
    }
    let flags = bytes[5];
    if flags & !FLAG_SIGNED != 0 {
        return Err(WireError::BadFlags(flags));
    }
    let le64 = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[r]);
        u64::from_le_bytes(b)
    };
    let le32 = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[r]);
        u32::from_le_bytes(b)
    };
    let (payload_len, bulk_offset) = payload_len_and_bulk(bytes);
    if payload_len > payload_max {
        return Err(WireError::TooLarge { len: u64::from(payload_len), max: payload_max });
    }
    if bulk_offset != 0 && (bulk_offset < 8 || u32::from(bulk_offset) > payload_len) {
        return Err(WireError::BadBulkOffset(bulk_offset));
    }
    Ok(FrameHeader {
        bulk_offset,
        request_id: le64(8..16),
        payload_len,
        payload_crc: le32(20..24),
        seq: le64(24..32),
        signed: flags & FLAG_SIGNED != 0,
    })
}

/// The PG and object name of an [`crate::OsdOp`] request whose payload starts with `head` (its
/// bytes before a bulk payload's length prefix, [`FrameHeader::bulk_offset`]` - 8` of them):
/// None if they are not the start of one. Lets a receiver decide where a write's data goes
/// before the rest of its frame arrived.
pub fn osd_op_head(head: &[u8]) -> Option<(quarry_types::PgId, String)> {
    // The variant tags of `Message::Request(Request::Op(..))`, as this build encodes them.
    static TAGS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let op = crate::OsdOp {
            pg: quarry_types::PgId { pool: 0, seed: 0 },
            epoch: 0,
            name: String::new(),
            snapc: Default::default(),
            snap: quarry_types::SNAP_HEAD,
            ops: Vec::new(),
            reqid: None,
        };
        let msg = Message::Request(crate::Request::Op(op));
        let bytes = bincode_options(u64::MAX).serialize(&msg).unwrap_or_default();
        bytes.get(..8).unwrap_or_default().to_vec()
    });
    if tags.len() != 8 || head.get(..8)? != tags.as_slice() {
        return None;
    }
    // `OsdOp`'s first fields: the PG, the map epoch, the object name.
    let (pg, _epoch, name) = bincode_options(head.len() as u64)
        .allow_trailing_bytes()
        .deserialize::<(quarry_types::PgId, u64, String)>(&head[8..])
        .ok()?;
    Some((pg, name))
}

/// Checks the body (payload and signature) of a frame whose header was accepted and decodes
/// the message. With `key`, the frame must be signed with it and carry `expected_seq`.
pub fn decode_body(
    header_bytes: &[u8; HEADER_LEN],
    header: &FrameHeader,
    body: &[u8],
    key: Option<&SessionKey>,
    expected_seq: u64,
) -> Result<Message, WireError> {
    decode_body_streamed(header_bytes, header, body, key, expected_seq, None)
}

/// A keyed hash of a frame's header and payload computed while the body arrives: feed it
/// the body received so far ([`StreamingMac::feed`]) and pass it to [`decode_body_shared`],
/// which hashes what was not fed yet and checks the signature as [`decode_body`] does.
pub struct StreamingMac {
    mac: FrameMac,
    /// Payload bytes hashed so far (a prefix of the body).
    hashed: usize,
    payload_len: usize,
    key: SessionKey,
    header_bytes: [u8; HEADER_LEN],
}

impl StreamingMac {
    /// Bytes fed to the hasher at once (BLAKE3 hashes large inputs in parallel lanes; tiny
    /// updates would lose that).
    const STEP: usize = 256 << 10;

    /// A hasher for the frame with `header_bytes` under `key`; None if the frame is not
    /// signed (nothing to hash) or its payload is not larger than one step (nothing to
    /// overlap: the body is hashed whole when it is complete, without a hasher of its own).
    pub fn new(
        key: &SessionKey,
        header_bytes: &[u8; HEADER_LEN],
        header: &FrameHeader,
    ) -> Option<StreamingMac> {
        if !header.signed || header.payload_len as usize <= Self::STEP {
            return None;
        }
        Some(StreamingMac {
            mac: FrameMac::new(key, header_bytes),
            hashed: 0,
            payload_len: header.payload_len as usize,
            key: *key,
            header_bytes: *header_bytes,
        })
    }

    /// Hashes the payload bytes of `received` not hashed yet, once at least [`Self::STEP`] of
    /// them are waiting or the payload is complete. `received` is the body's bytes from
    /// offset `base` on, as received so far; every byte before `base` must have been hashed
    /// ([`StreamingMac::hash_through`] before a receiver lets go of them).
    pub fn feed(&mut self, base: usize, received: &[u8]) {
        let end = (base + received.len()).min(self.payload_len);
        if end > self.hashed && (end - self.hashed >= Self::STEP || end == self.payload_len) {
            self.hash_through(base, received, end);
        }
    }

    /// Hashes the payload bytes up to body offset `end` now (`received` as in
    /// [`StreamingMac::feed`], holding them): a receiver that hands bytes on calls it first.
    pub fn hash_through(&mut self, base: usize, received: &[u8], end: usize) {
        let end = end.min(self.payload_len).min(base + received.len());
        if end > self.hashed {
            debug_assert!(self.hashed >= base, "bytes handed on before they were hashed");
            self.mac.update(&received[self.hashed - base..end - base]);
            self.hashed = end;
        }
    }

    /// The tag over the header and `payload` (its unhashed rest is hashed now); None if this
    /// hasher was made for another frame or key.
    fn finish(
        mut self,
        key: &SessionKey,
        header_bytes: &[u8; HEADER_LEN],
        payload: &[u8],
    ) -> Option<blake3::Hash> {
        if self.key != *key
            || self.header_bytes != *header_bytes
            || payload.len() != self.payload_len
        {
            return None;
        }
        self.mac.update(&payload[self.hashed..]);
        Some(self.mac.finalize())
    }
}

fn decode_body_streamed(
    header_bytes: &[u8; HEADER_LEN],
    header: &FrameHeader,
    body: &[u8],
    key: Option<&SessionKey>,
    expected_seq: u64,
    streamed: Option<StreamingMac>,
) -> Result<Message, WireError> {
    if body.len() != header.body_len() {
        return Err(WireError::Truncated);
    }
    let (payload, tag) = body.split_at(header.payload_len as usize);
    match key {
        Some(key) => {
            if !header.signed {
                return Err(WireError::Unsigned);
            }
            if header.seq != expected_seq {
                return Err(WireError::BadSequence { got: header.seq, want: expected_seq });
            }
            let mac = match streamed.and_then(|m| m.finish(key, header_bytes, payload)) {
                Some(mac) => mac,
                None => {
                    let mut mac = FrameMac::new(key, header_bytes);
                    mac.update(payload);
                    mac.finalize()
                }
            };
            let tag: [u8; SIGNATURE_LEN] = tag.try_into().map_err(|_| WireError::BadSignature)?;
            // `blake3::Hash`'s equality is constant time.
            if mac != blake3::Hash::from_bytes(tag) {
                return Err(WireError::BadSignature);
            }
        }
        None => {
            if header.signed {
                return Err(WireError::BadFlags(FLAG_SIGNED));
            }
            // Only unsigned frames need their crc checked: a signature that verifies means
            // every byte of the header (the crc field too) and the payload is what the sender
            // signed, a far stronger check than the crc. One crc pass over a 4 MiB write was
            // ~3% of the server's CPU per write (issue 14).
            if crc32c::crc32c(payload) != header.payload_crc {
                return Err(WireError::BadCrc);
            }
        }
    }
    bincode_options(u64::from(header.payload_len))
        .deserialize(payload)
        .map_err(|e| WireError::Decode(e.to_string()))
}

/// [`decode_body`] of a body held in shared bytes: the message's payloads (a write's data, a
/// read's reply) are slices of `body`, not copies (`quarry_types::zerocopy`).
/// `streamed`: the payload's hash as far as it was computed while the body arrived.
pub fn decode_body_shared(
    header_bytes: &[u8; HEADER_LEN],
    header: &FrameHeader,
    body: &bytes::Bytes,
    key: Option<&SessionKey>,
    expected_seq: u64,
    streamed: Option<StreamingMac>,
) -> Result<Message, WireError> {
    quarry_types::zerocopy::decode_from(body, |body| {
        decode_body_streamed(header_bytes, header, body, key, expected_seq, streamed)
    })
}

/// Decodes one whole frame held in memory (header, body). For tests and fuzzing.
pub fn decode_frame(
    frame: &[u8],
    payload_max: u32,
    key: Option<&SessionKey>,
    expected_seq: u64,
) -> Result<(FrameHeader, Message), WireError> {
    if frame.len() < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let mut header_bytes = [0u8; HEADER_LEN];
    header_bytes.copy_from_slice(&frame[..HEADER_LEN]);
    let header = decode_header(&header_bytes, payload_max)?;
    let msg = decode_body(&header_bytes, &header, &frame[HEADER_LEN..], key, expected_seq)?;
    Ok((header, msg))
}

/// The signature of a frame's header and payload held in one buffer.
fn signature(key: &SessionKey, header_and_payload: &[u8]) -> [u8; SIGNATURE_LEN] {
    let mut signer = FrameSigner::new(key);
    signer.update(header_and_payload);
    signer.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Goal: a part streamed piece by piece (its head, the data, its crc, the tag computed
    /// over them in order) is byte for byte the frame `encode_frame` makes of the same
    /// message with the data in hand, so every receiver decodes and verifies it as any
    /// frame. Method: several lengths, the tag from a `FrameSigner` fed the pieces.
    #[test]
    fn a_streamed_part_is_the_frame_of_its_message() {
        let key = [7u8; 32];
        for len in [1024usize, 5000, (1 << 20) + 3, 4 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let crc = crc32c::crc32c(&data);
            let head = encode_part_head(9, 4, len).unwrap();
            let mut signer = FrameSigner::new(&key);
            let mut frame = Vec::new();
            for piece in [&head[..], &data[..], &crc.to_le_bytes()[..]] {
                signer.update(piece);
                frame.extend_from_slice(piece);
            }
            frame.extend_from_slice(&signer.finish());
            let payload = quarry_types::Payload::with_crc(bytes::Bytes::from(data), crc);
            let msg = Message::Reply(crate::message::Reply::ReadPart(payload));
            assert!(frame == encode_frame(9, 4, &msg, Some(&key)).unwrap(), "{len} bytes");
            let (header, decoded) = decode_frame(&frame, FRAME_PAYLOAD_MAX, Some(&key), 4).unwrap();
            assert_eq!((header.request_id, decoded), (9, msg));
        }
        assert!(encode_part_head(1, 1, 1000).is_err(), "below a bulk's size");
    }
    use crate::message::{Reply, Request};
    use proptest::prelude::*;

    /// A request writing `data` at offset 0 of object `name` of `pg` (also `conn`'s tests').
    pub(crate) fn write_op_to(pg: quarry_types::PgId, name: &str, data: Vec<u8>) -> Message {
        use quarry_types::{ObjectOp, Payload, SnapContext, SNAP_HEAD};
        Message::Request(Request::Op(crate::OsdOp {
            reqid: None,
            pg,
            epoch: 1,
            name: name.into(),
            snapc: SnapContext::default(),
            snap: SNAP_HEAD,
            ops: vec![ObjectOp::Write { off: 0, data: Payload::new(data) }],
        }))
    }

    /// The data of [`write_op_to`]'s write.
    pub(crate) fn data_of(msg: &Message) -> bytes::Bytes {
        match msg {
            Message::Request(Request::Op(op)) => match &op.ops[0] {
                quarry_types::ObjectOp::Write { data, .. } => data.data.clone(),
                other => panic!("not a write: {other:?}"),
            },
            other => panic!("not an op: {other:?}"),
        }
    }

    /// A request writing `data` at offset 0 of object "o".
    fn write_op(data: Vec<u8>) -> Message {
        write_op_to(quarry_types::PgId { pool: 1, seed: 0 }, "o", data)
    }

    fn sample() -> Message {
        Message::Request(Request::GetMap)
    }

    #[test]
    fn the_bulk_offset_is_checked_and_names_an_ops_pg() {
        let msg = write_op(vec![7u8; 1 << 20]);
        let frame = encode_frame(1, 1, &msg, None).unwrap();
        let header: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().unwrap();
        let h = decode_header(&header, FRAME_PAYLOAD_MAX).unwrap();
        let at = usize::from(h.bulk_offset);
        assert!(at > 8, "a spliced write's frame says where its data is");
        let body = &frame[HEADER_LEN..];
        assert_eq!(u64::from_le_bytes(body[at - 8..at].try_into().unwrap()), 1 << 20);
        assert_eq!(body[at..at + 16], [7u8; 16]);
        let head = osd_op_head(&body[..at - 8]);
        assert_eq!(head, Some((quarry_types::PgId { pool: 1, seed: 0 }, "o".to_string())));
        // Not an op: no PG; a short head: none either.
        let map = encode_frame(1, 1, &sample(), None).unwrap();
        assert_eq!(osd_op_head(&map[HEADER_LEN..]), None);
        assert_eq!(osd_op_head(&body[..10]), None);
        // Small frames say nothing; a bulk offset below its length prefix or past the
        // payload is an error.
        assert_eq!(
            decode_header(&map[..HEADER_LEN].try_into().unwrap(), 1 << 20).unwrap().bulk_offset,
            0
        );
        for bad in [1u16, 7, u16::MAX] {
            let mut header = header;
            let mut small = header;
            small[16..20].copy_from_slice(&100u32.to_le_bytes());
            header[6..8].copy_from_slice(&bad.to_le_bytes());
            small[6..8].copy_from_slice(&bad.to_le_bytes());
            for h in [header, small] {
                let result = decode_header(&h, FRAME_PAYLOAD_MAX);
                if bad < 8 || u32::from(bad) > u32::from_le_bytes(h[16..20].try_into().unwrap()) {
                    assert!(matches!(result, Err(WireError::BadBulkOffset(b)) if b == bad));
                }
            }
        }
    }

    #[test]
    fn round_trip_unsigned_and_signed() {
        let f = encode_frame(7, 0, &sample(), None).unwrap();
        let (h, m) = decode_frame(&f, HANDSHAKE_PAYLOAD_MAX, None, 0).unwrap();
        assert_eq!((h.request_id, m), (7, sample()));
        let key = [9u8; 32];
        let f = encode_frame(8, 5, &sample(), Some(&key)).unwrap();
        let (h, m) = decode_frame(&f, FRAME_PAYLOAD_MAX, Some(&key), 5).unwrap();
        assert_eq!((h.request_id, h.seq, m), (8, 5, sample()));
    }

    #[test]
    fn a_shared_body_lends_its_bytes_to_the_payload() {
        use quarry_types::ObjectOp;
        let msg = write_op(vec![3u8; 64 << 10]);
        let key = [4u8; 32];
        let frame = encode_frame(1, 1, &msg, Some(&key)).unwrap();
        let mut header_bytes = [0u8; HEADER_LEN];
        header_bytes.copy_from_slice(&frame[..HEADER_LEN]);
        let header = decode_header(&header_bytes, FRAME_PAYLOAD_MAX).unwrap();
        let body = bytes::Bytes::copy_from_slice(&frame[HEADER_LEN..]);
        let decoded =
            decode_body_shared(&header_bytes, &header, &body, Some(&key), 1, None).unwrap();
        assert_eq!(decoded, msg);
        let Message::Request(Request::Op(op)) = decoded else { panic!("not an op") };
        let ObjectOp::Write { data: payload, .. } = &op.ops[0] else { panic!("not a write") };
        let inside = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        assert!(inside.contains(&(payload.data.as_ptr() as usize)), "the payload was copied");
        assert!(payload.verify());
    }

    /// A frame signed piece by piece as it is written is the frame `encode_frame` makes.
    #[test]
    fn a_frame_signed_while_written_is_the_same_frame() {
        let key = [9u8; 32];
        let msg = sample();
        let whole = encode_frame(3, 7, &msg, Some(&key)).unwrap();
        let mut streamed = encode_unsigned_part(3, 7, &msg, true).unwrap();
        let mut signer = FrameSigner::new(&key);
        for piece in streamed.chunks(5) {
            signer.update(piece);
        }
        streamed.extend_from_slice(&signer.finish());
        assert_eq!(streamed, whole);
        assert_eq!(decode_frame(&streamed, FRAME_PAYLOAD_MAX, Some(&key), 7).unwrap().1, msg);
    }

    /// A read reply whose payload is `data`, with its producer's digest when `digest` is given.
    fn read_reply(data: Vec<u8>, digest: Option<[u8; 32]>) -> Message {
        use quarry_types::{OpOutput, OpReply, Payload};
        let data = bytes::Bytes::from(data);
        let crc = crc32c::crc32c(&data);
        let payload = match digest {
            Some(d) => Payload::with_digest(data, crc, d),
            None => Payload::with_crc(data, crc),
        };
        Message::Reply(Reply::Op(OpReply::Ok(vec![OpOutput::Data(payload)])))
    }

    /// The signature of a frame with a bulk is the keyed hash of the header, the payload's
    /// bytes before the bulk, the bulk's BLAKE3 digest and the bytes after it: computed over
    /// the bytes in one piece or many, or from the digest a producer gave, it is the same tag,
    /// and the receiver accepts it; a wrong given digest makes a tag the receiver refuses,
    /// and a digest given for other bytes than the payload's is not used.
    #[test]
    fn a_bulk_is_signed_through_its_digest() {
        let key = [6u8; 32];
        let data: Vec<u8> = (0..(1usize << 20) + 3).map(|i| (i * 7 % 253) as u8).collect();
        let digest = *blake3::hash(&data).as_bytes();
        let plain_msg = read_reply(data.clone(), None);
        let segments = encode_segments(4, 11, &plain_msg, true).unwrap();
        let frame: Vec<u8> = segments.pieces().flatten().copied().collect();
        let header: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().unwrap();
        let b = usize::from(decode_header(&header, FRAME_PAYLOAD_MAX).unwrap().bulk_offset);
        assert!(b >= 8, "a reply with a large payload has a bulk");
        let payload = &frame[HEADER_LEN..];
        assert_eq!(&payload[b..b + data.len()], &data[..]);
        // What the module docs say is signed.
        let mut mac = blake3::Hasher::new_keyed(&key);
        mac.update(&header);
        mac.update(&payload[..b]);
        mac.update(&digest);
        mac.update(&payload[b + data.len()..]);
        let want = *mac.finalize().as_bytes();
        assert_eq!(segments.signature(&key), want);
        assert_eq!(signature(&key, &frame), want);
        for cut in [1usize, 5, 4096, 256 << 10] {
            let mut signer = FrameSigner::new(&key);
            for piece in frame.chunks(cut) {
                signer.update(piece);
            }
            assert_eq!(signer.finish(), want, "pieces of {cut}");
        }
        // Given by the producer: the bulk is not hashed, the tag is the same, it decodes.
        let given = encode_segments(4, 11, &read_reply(data.clone(), Some(digest)), true).unwrap();
        assert_eq!(given.signature(&key), want);
        let mut signed = frame.clone();
        signed.extend_from_slice(&want);
        let decoded = decode_frame(&signed, FRAME_PAYLOAD_MAX, Some(&key), 11).unwrap().1;
        assert_eq!(decoded, plain_msg);
        // A wrong digest signs something else: refused.
        let wrong = encode_segments(4, 11, &read_reply(data.clone(), Some([1; 32])), true).unwrap();
        let mut bad = frame.clone();
        bad.extend_from_slice(&wrong.signature(&key));
        let refused = decode_frame(&bad, FRAME_PAYLOAD_MAX, Some(&key), 11);
        assert!(matches!(refused, Err(WireError::BadSignature)), "{refused:?}");
        // A changed bulk byte is caught through the digest.
        let mut flipped = signed.clone();
        flipped[HEADER_LEN + b + 1000] ^= 1;
        let refused = decode_frame(&flipped, FRAME_PAYLOAD_MAX, Some(&key), 11);
        assert!(matches!(refused, Err(WireError::BadSignature)), "{refused:?}");
        // A payload whose bytes were replaced after its digest was given does not use it.
        let mut stale = quarry_types::Payload::with_digest(
            bytes::Bytes::from(vec![0u8; data.len()]),
            0,
            [1; 32],
        );
        assert!(stale.digest().is_some());
        stale.data = bytes::Bytes::from(data.clone());
        assert_eq!(stale.digest(), None);
    }

    proptest! {
        /// However the payload is cut, and whatever the length prefix before a bulk says
        /// (past the payload's end, 0), sender and receiver compute the same tag as one pass.
        #[test]
        fn the_frame_mac_does_not_depend_on_how_the_bytes_are_cut(
            len in 8usize..300,
            bulk in 8usize..300,
            claimed in prop_oneof![Just(0u64), 0u64..400, Just(u64::MAX)],
            cuts in proptest::collection::vec(1usize..64, 1..20),
        ) {
            let bulk = bulk.min(len);
            let mut payload: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            payload[bulk - 8..bulk].copy_from_slice(&claimed.to_le_bytes());
            let mut header = [0u8; HEADER_LEN];
            header[6..8].copy_from_slice(&(bulk as u16).to_le_bytes());
            header[16..20].copy_from_slice(&(len as u32).to_le_bytes());
            let key = [3u8; 32];
            let end = bulk + (claimed.min((len - bulk) as u64) as usize);
            let mut want = blake3::Hasher::new_keyed(&key);
            want.update(&header);
            want.update(&payload[..bulk]);
            want.update(blake3::hash(&payload[bulk..end]).as_bytes());
            want.update(&payload[end..]);
            let mut mac = FrameMac::new(&key, &header);
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= len {
                    break;
                }
                let to = (at + cut).min(len);
                mac.update(&payload[at..to]);
                at = to;
            }
            prop_assert_eq!(mac.finalize(), want.finalize());
        }
    }

    /// A frame whose large payloads are left out of the encoded buffer (`encode_segments`) is,
    /// piece by piece, the plain bincode encoding: the same bytes, the same crc, the same
    /// signature, and it decodes; small payloads stay in the buffer.
    #[test]
    fn a_frame_in_segments_is_the_plain_frame() {
        let key = [5u8; 32];
        let data: Vec<u8> = (0..(1usize << 20) + 17).map(|i| (i * 31 % 251) as u8).collect();
        let small: Vec<u8> = (0..4096).map(|i| (i * 7 % 253) as u8).collect();
        let cases =
            [(write_op(data), true), (write_op(small), false), (write_op(vec![3u8; 100]), false)];
        for (msg, spliced) in cases {
            for signed in [false, true] {
                // The plain encoding, as frames were built before segments.
                let mut plain = encode_segments(2, 9, &sample(), signed).unwrap().head;
                plain.truncate(HEADER_LEN);
                bincode_options(u64::from(FRAME_PAYLOAD_MAX))
                    .serialize_into(&mut plain, &msg)
                    .unwrap();
                let payload_len = (plain.len() - HEADER_LEN) as u32;
                let crc = if signed { 0 } else { crc32c::crc32c(&plain[HEADER_LEN..]) };
                plain[16..20].copy_from_slice(&payload_len.to_le_bytes());
                plain[20..24].copy_from_slice(&crc.to_le_bytes());

                let segments = encode_segments(2, 9, &msg, signed).unwrap();
                // The bulk offset says where the write's data starts in the payload, for data
                // of at least 1 KiB (spliced or not); smaller data has none.
                let bulk = usize::from(u16::from_le_bytes([segments.head[6], segments.head[7]]));
                let data = data_of(&msg);
                if data.len() >= quarry_types::zerocopy::BULK_MIN {
                    let data_at = plain.windows(64).position(|w| w == &data[..64]);
                    assert_eq!(data_at, Some(HEADER_LEN + bulk));
                } else {
                    assert_eq!(bulk, 0);
                }
                plain[6..8].copy_from_slice(&(bulk as u16).to_le_bytes());
                assert_eq!(segments.splices.is_empty(), !spliced);
                assert!(segments.head.len() < 4096 || !spliced, "payload copied into the head");
                let joined: Vec<u8> = segments.pieces().flatten().copied().collect();
                assert_eq!(joined, plain);
                assert_eq!(segments.len(), plain.len());
                let key = signed.then_some(&key);
                let mut frame = joined;
                if let Some(key) = key {
                    assert_eq!(segments.signature(key), signature(key, &plain));
                    frame.extend_from_slice(&segments.signature(key));
                }
                assert_eq!(frame, encode_frame(2, 9, &msg, key).unwrap());
                assert_eq!(decode_frame(&frame, FRAME_PAYLOAD_MAX, key, 9).unwrap().1, msg);
            }
        }
    }

    /// A 1 MiB write whose body is hashed as it arrives, in uneven pieces: the frame decodes,
    /// a flipped bit anywhere (hashed early or late) fails the signature, and a hasher made
    /// for another frame or key is not trusted (the body is hashed again).
    #[test]
    fn a_body_hashed_while_it_arrives_is_checked_as_a_whole() {
        let msg = write_op((0..1u32 << 20).map(|i| (i * 13 + 5) as u8).collect());
        let key = [7u8; 32];
        let frame = encode_frame(1, 1, &msg, Some(&key)).unwrap();
        let receive = |frame: &[u8], mac_key: &SessionKey, mac_header: Option<[u8; HEADER_LEN]>| {
            let mut header_bytes = [0u8; HEADER_LEN];
            header_bytes.copy_from_slice(&frame[..HEADER_LEN]);
            let header = decode_header(&header_bytes, FRAME_PAYLOAD_MAX).unwrap();
            let body = &frame[HEADER_LEN..];
            let mac_header = mac_header.unwrap_or(header_bytes);
            let mut mac = StreamingMac::new(mac_key, &mac_header, &header).unwrap();
            let (mut got, mut base) = (0, 0);
            for (k, piece) in
                [1usize, 65_536, 300_000, 7, 262_144, 500_000].iter().cycle().enumerate()
            {
                got = (got + piece).min(body.len());
                mac.feed(base, &body[base..got]);
                // Now and then the bytes so far are handed on (a bulk's pieces): the hasher
                // must have them first, and then sees only what came after.
                if k % 3 == 2 {
                    mac.hash_through(base, &body[base..got], got);
                    base = got;
                }
                if got == body.len() {
                    break;
                }
            }
            assert!(mac.hashed > 0, "nothing hashed while arriving");
            let body = bytes::Bytes::copy_from_slice(body);
            decode_body_shared(&header_bytes, &header, &body, Some(&key), 1, Some(mac))
        };
        assert_eq!(receive(&frame, &key, None).unwrap(), msg);
        for at in [HEADER_LEN + 100, HEADER_LEN + 400_000, frame.len() - SIGNATURE_LEN - 1] {
            let mut bad = frame.clone();
            bad[at] ^= 0x10;
            let got = receive(&bad, &key, None);
            assert!(matches!(got, Err(WireError::BadSignature)), "byte {at}: {got:?}");
        }
        // A hasher of another key or header: ignored, the frame is checked from scratch.
        assert_eq!(receive(&frame, &[8u8; 32], None).unwrap(), msg);
        let mut other = [0u8; HEADER_LEN];
        other.copy_from_slice(&frame[..HEADER_LEN]);
        other[8] ^= 1;
        assert_eq!(receive(&frame, &key, Some(other)).unwrap(), msg);
    }

    #[test]
    fn signed_frames_reject_tamper_replay_and_wrong_key() {
        let key = [1u8; 32];
        let f = encode_frame(1, 3, &Message::Reply(Reply::Ack), Some(&key)).unwrap();
        for i in 0..f.len() {
            let mut bad = f.clone();
            bad[i] ^= 0x40;
            assert!(decode_frame(&bad, FRAME_PAYLOAD_MAX, Some(&key), 3).is_err(), "byte {i}");
        }
        // replay: the same frame when the next sequence number is expected
        assert!(matches!(
            decode_frame(&f, FRAME_PAYLOAD_MAX, Some(&key), 4),
            Err(WireError::BadSequence { .. })
        ));
        assert!(decode_frame(&f, FRAME_PAYLOAD_MAX, Some(&[2u8; 32]), 3).is_err());
        // unsigned frame on a signed session
        let u = encode_frame(1, 3, &Message::Reply(Reply::Ack), None).unwrap();
        assert!(matches!(
            decode_frame(&u, FRAME_PAYLOAD_MAX, Some(&key), 3),
            Err(WireError::Unsigned)
        ));
    }

    /// A 64 KiB write in a signed frame: a bit flipped anywhere in its data is refused by
    /// the signature (the receiver no longer runs the crc over signed frames), and an
    /// unsigned frame still has its crc checked.
    #[test]
    fn a_flipped_payload_bit_fails_the_signature_and_the_crc() {
        let msg = write_op((0..64u32 << 10).map(|i| (i * 7) as u8).collect());
        let key = [6u8; 32];
        let signed = encode_frame(1, 1, &msg, Some(&key)).unwrap();
        let unsigned = encode_frame(1, 0, &msg, None).unwrap();
        let len = signed.len() - SIGNATURE_LEN;
        for at in [HEADER_LEN + 200, HEADER_LEN + 30_000, len - 1] {
            for bit in [0x01, 0x80] {
                let mut bad = signed.clone();
                bad[at] ^= bit;
                let got = decode_frame(&bad, FRAME_PAYLOAD_MAX, Some(&key), 1);
                assert!(matches!(got, Err(WireError::BadSignature)), "byte {at}: {got:?}");
                let mut bad = unsigned.clone();
                bad[at] ^= bit;
                let got = decode_frame(&bad, FRAME_PAYLOAD_MAX, None, 0);
                assert!(matches!(got, Err(WireError::BadCrc)), "byte {at}: {got:?}");
            }
        }
        assert_eq!(decode_frame(&signed, FRAME_PAYLOAD_MAX, Some(&key), 1).unwrap().1, msg);
    }

    /// The receiver of a signed frame skips the crc pass: a frame whose crc field is wrong
    /// but which is signed as it is (only a holder of the session key can make one) decodes.
    #[test]
    fn a_signed_frame_is_not_crc_checked_again() {
        let key = [5u8; 32];
        let mut f = encode_frame(2, 9, &sample(), Some(&key)).unwrap();
        f[20] ^= 0xff;
        let end = f.len() - SIGNATURE_LEN;
        let tag = signature(&key, &f[..end]);
        f[end..].copy_from_slice(&tag);
        let (h, m) = decode_frame(&f, FRAME_PAYLOAD_MAX, Some(&key), 9).unwrap();
        assert_eq!((h.request_id, m), (2, sample()));
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let f = encode_frame(1, 0, &sample(), None).unwrap();
        for cut in 0..f.len() {
            assert!(decode_frame(&f[..cut], HANDSHAKE_PAYLOAD_MAX, None, 0).is_err());
        }
        let mut big = f.clone();
        big[16..20].copy_from_slice(&(HANDSHAKE_PAYLOAD_MAX + 1).to_le_bytes());
        assert!(matches!(
            decode_frame(&big, HANDSHAKE_PAYLOAD_MAX, None, 0),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn hostile_length_prefix_inside_payload_does_not_allocate() {
        // A Vec length of 2^60 inside a small payload must fail on the limit, not abort.
        let mut payload = vec![5u8, 0, 0, 0]; // variant index of Message::Request
        payload.extend_from_slice(&0u32.to_le_bytes());
        payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let mut frame = Vec::new();
        frame.extend_from_slice(&FRAME_MAGIC);
        frame.extend_from_slice(&[FRAME_VERSION, 0, 0, 0]);
        frame.extend_from_slice(&1u64.to_le_bytes());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        frame.extend_from_slice(&0u64.to_le_bytes());
        frame.extend_from_slice(&payload);
        assert!(decode_frame(&frame, HANDSHAKE_PAYLOAD_MAX, None, 0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The decoder never panics on arbitrary bytes, signed or not.
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(&bytes, HANDSHAKE_PAYLOAD_MAX, None, 0);
            let _ = decode_frame(&bytes, FRAME_PAYLOAD_MAX, Some(&[3u8; 32]), 1);
        }

        /// Valid headers with a random payload never panic the message decoder.
        #[test]
        fn random_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut frame = Vec::new();
            frame.extend_from_slice(&FRAME_MAGIC);
            frame.extend_from_slice(&[FRAME_VERSION, 0, 0, 0]);
            frame.extend_from_slice(&1u64.to_le_bytes());
            frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            frame.extend_from_slice(&0u64.to_le_bytes());
            frame.extend_from_slice(&payload);
            let _ = decode_frame(&frame, HANDSHAKE_PAYLOAD_MAX, None, 0);
        }
    }
}
