//! The NBD wire format (NetworkBlockDevice/nbd `doc/proto.md`): magic numbers, option and
//! command codes, flags, errors, and the encoders and decoders of the fixed-size messages.
//! Pure: no I/O, so every message can be tested and fuzzed on its own.

/// `NBDMAGIC`: the first 8 bytes the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle negotiation, and the magic of every option request.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of an option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flags (server): the client may skip the 124 zero bytes.
pub const FLAG_NO_ZEROES: u16 = 2;
/// Client flags.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1;
/// Client flags: no 124 zero bytes after NBD_OPT_EXPORT_NAME.
pub const FLAG_C_NO_ZEROES: u32 = 2;

/// Options.
pub mod opt {
    /// Enter transmission with this export (no reply on error: the server closes).
    pub const EXPORT_NAME: u32 = 1;
    /// End the negotiation.
    pub const ABORT: u32 = 2;
    /// The exports.
    pub const LIST: u32 = 3;
    /// TLS (not offered).
    pub const STARTTLS: u32 = 5;
    /// Information on an export.
    pub const INFO: u32 = 6;
    /// Information on an export, then transmission.
    pub const GO: u32 = 7;
    /// Structured replies.
    pub const STRUCTURED_REPLY: u32 = 8;
    /// Metadata contexts on offer.
    pub const LIST_META_CONTEXT: u32 = 9;
    /// Select metadata contexts.
    pub const SET_META_CONTEXT: u32 = 10;
}

/// Option reply types.
pub mod rep {
    /// Done.
    pub const ACK: u32 = 1;
    /// One export (`NBD_OPT_LIST`).
    pub const SERVER: u32 = 2;
    /// One information item (`NBD_OPT_INFO`/`GO`).
    pub const INFO: u32 = 3;
    /// One metadata context.
    pub const META_CONTEXT: u32 = 4;
    const ERR: u32 = 1 << 31;
    /// The option is not supported.
    pub const ERR_UNSUP: u32 = ERR + 1;
    /// Forbidden by the server's policy.
    pub const ERR_POLICY: u32 = ERR + 2;
    /// Syntactically or semantically invalid.
    pub const ERR_INVALID: u32 = ERR + 3;
    /// No such export.
    pub const ERR_UNKNOWN: u32 = ERR + 6;
}

/// `NBD_OPT_INFO` items.
pub mod info {
    /// Size and transmission flags (always sent).
    pub const EXPORT: u16 = 0;
    /// The export's name.
    pub const NAME: u16 = 1;
    /// A human-readable description.
    pub const DESCRIPTION: u16 = 2;
    /// Minimum, preferred and maximum block sizes.
    pub const BLOCK_SIZE: u16 = 3;
}

/// Transmission flags.
pub mod tflag {
    /// Always set.
    pub const HAS_FLAGS: u16 = 1;
    /// Writes are refused (EPERM).
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_CMD_FLUSH`.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_FUA`.
    pub const SEND_FUA: u16 = 1 << 3;
    /// `NBD_CMD_TRIM`.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_CMD_WRITE_ZEROES`.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `NBD_CMD_FLAG_DF`.
    pub const SEND_DF: u16 = 1 << 7;
    /// Several connections see one consistent export (a flush on one covers all).
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// `NBD_CMD_CACHE`.
    pub const SEND_CACHE: u16 = 1 << 10;
    /// `NBD_CMD_FLAG_FAST_ZERO`.
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
}

/// Commands.
pub mod cmd {
    /// Read.
    pub const READ: u16 = 0;
    /// Write (data follows the request).
    pub const WRITE: u16 = 1;
    /// Soft disconnect.
    pub const DISC: u16 = 2;
    /// Make every completed write durable.
    pub const FLUSH: u16 = 3;
    /// Discard.
    pub const TRIM: u16 = 4;
    /// Prefetch.
    pub const CACHE: u16 = 5;
    /// Write zeros (maybe by punching).
    pub const WRITE_ZEROES: u16 = 6;
    /// Allocation status.
    pub const BLOCK_STATUS: u16 = 7;
}

/// Command flags.
pub mod cflag {
    /// Durable before the reply.
    pub const FUA: u16 = 1;
    /// WRITE_ZEROES: do not punch a hole.
    pub const NO_HOLE: u16 = 1 << 1;
    /// READ: one data chunk.
    pub const DF: u16 = 1 << 2;
    /// BLOCK_STATUS: one descriptor.
    pub const REQ_ONE: u16 = 1 << 3;
    /// WRITE_ZEROES: fail with ENOTSUP rather than be slow.
    pub const FAST_ZERO: u16 = 1 << 4;
}

/// Structured reply chunk types and flags.
pub mod chunk {
    /// Last chunk of the reply.
    pub const FLAG_DONE: u16 = 1;
    /// No payload.
    pub const NONE: u16 = 0;
    /// u64 offset + data.
    pub const OFFSET_DATA: u16 = 1;
    /// u32 context id + (u32 length, u32 flags) descriptors.
    pub const BLOCK_STATUS: u16 = 5;
    /// u32 error + u16 message length + message.
    pub const ERROR: u16 = (1 << 15) + 1;
}

/// `base:allocation` status flags.
pub const STATE_HOLE: u32 = 1;
/// `base:allocation`: reads as zeros.
pub const STATE_ZERO: u32 = 2;
/// The one metadata context served, and its id.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// Id of [`BASE_ALLOCATION`] on every connection.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// NBD error values (a subset of Linux errno, as the protocol names them).
pub mod errno {
    /// Operation not permitted (a write to a read-only export).
    pub const EPERM: u32 = 1;
    /// I/O error.
    pub const EIO: u32 = 5;
    /// Out of memory.
    pub const ENOMEM: u32 = 12;
    /// Invalid argument (out of range, bad flags).
    pub const EINVAL: u32 = 22;
    /// No space.
    pub const ENOSPC: u32 = 28;
    /// Too large.
    pub const EOVERFLOW: u32 = 75;
    /// Not supported (a fast zero that would be slow).
    pub const ENOTSUP: u32 = 95;
    /// The server is shutting down.
    pub const ESHUTDOWN: u32 = 108;
}

/// Length of a transmission request header.
pub const REQUEST_LEN: usize = 28;
/// Largest option payload accepted (anything larger ends the connection).
pub const OPTION_LEN_MAX: u32 = 64 << 10;
/// Largest read or write (advertised as the maximum block size).
pub const PAYLOAD_MAX: u32 = 32 << 20;
/// Preferred block size advertised.
pub const PREFERRED_BLOCK: u32 = 4096;

/// A transmission request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// Command.
    pub kind: u16,
    /// The client's cookie, echoed in the reply.
    pub cookie: u64,
    /// Offset in the export.
    pub offset: u64,
    /// Length (of the data that follows, for a write).
    pub length: u32,
}

impl Request {
    /// Decodes a request header; None when the magic is wrong (the connection ends).
    pub fn decode(bytes: &[u8; REQUEST_LEN]) -> Option<Request> {
        let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        if u32_at(0) != REQUEST_MAGIC {
            return None;
        }
        Some(Request {
            flags: u16_at(4),
            kind: u16_at(6),
            cookie: u64_at(8),
            offset: u64_at(16),
            length: u32_at(24),
        })
    }

    /// Encodes the header (clients and tests).
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut out = [0u8; REQUEST_LEN];
        out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.flags.to_be_bytes());
        out[6..8].copy_from_slice(&self.kind.to_be_bytes());
        out[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out[24..28].copy_from_slice(&self.length.to_be_bytes());
        out
    }
}

/// An option reply: magic, option, type, length, data.
pub fn option_reply(option: u32, kind: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// A simple reply header (the data of a successful read follows it).
pub fn simple_reply(error: u32, cookie: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out
}

/// A structured reply chunk header for a payload of `len` bytes.
pub fn chunk_header(flags: u16, kind: u16, cookie: u64, len: u32) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&kind.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..20].copy_from_slice(&len.to_be_bytes());
    out
}

/// A final error chunk with a message for people.
pub fn error_chunk(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    let message = &message.as_bytes()[..message.len().min(4096)];
    let mut out = Vec::with_capacity(26 + message.len());
    out.extend_from_slice(&chunk_header(
        chunk::FLAG_DONE,
        chunk::ERROR,
        cookie,
        6 + message.len() as u32,
    ));
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// A reader over an option's payload; every read is bounds-checked (None: too short).
pub struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Reads `data`.
    pub fn new(data: &'a [u8]) -> Fields<'a> {
        Fields { data }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A string of `len` bytes (None if short or not UTF-8).
    pub fn string(&mut self, len: u32) -> Option<String> {
        let bytes = self.take(usize::try_from(len).ok()?)?;
        String::from_utf8(bytes.to_vec()).ok()
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_magic_is_refused() {
        let request = Request { flags: 1, kind: cmd::WRITE, cookie: 7, offset: 4096, length: 512 };
        assert_eq!(Request::decode(&request.encode()), Some(request));
        let mut bad = request.encode();
        bad[0] ^= 1;
        assert_eq!(Request::decode(&bad), None);
    }

    #[test]
    fn fields_never_read_past_the_end() {
        let mut f = Fields::new(&[0, 0, 0, 3, b'a', b'b']);
        let len = f.u32().unwrap();
        assert_eq!(f.string(len), None);
        let mut f = Fields::new(&[0, 2, b'o', b'k']);
        let len = f.u16().unwrap();
        assert_eq!(f.string(u32::from(len)).as_deref(), Some("ok"));
        assert!(f.is_empty());
    }

    #[test]
    fn error_chunks_carry_the_error_and_message() {
        let out = error_chunk(9, errno::EINVAL, "out of range");
        assert_eq!(&out[0..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
        assert_eq!(u16::from_be_bytes([out[4], out[5]]), chunk::FLAG_DONE);
        assert_eq!(u16::from_be_bytes([out[6], out[7]]), chunk::ERROR);
        assert_eq!(u32::from_be_bytes(out[16..20].try_into().unwrap()), 6 + 12);
        assert_eq!(u32::from_be_bytes(out[20..24].try_into().unwrap()), errno::EINVAL);
        assert_eq!(&out[26..], b"out of range");
    }
}
