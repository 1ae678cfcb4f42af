//! Connections over TCP: the authentication handshake (client and server side), then a
//! pipelined request/reply session with signed frames.
//!
//! Client side: [`connect`] authenticates and returns an [`RpcClient`]: many requests may be
//! in flight on one connection; replies are matched by request id; pushed events arrive on a
//! channel. Server side: [`accept`] authenticates a peer through an [`Authenticator`], then
//! [`serve`] runs the session, calling a [`Handler`] for each request concurrently (at most
//! `osd_client_message_cap` per connection), within its daemon's budget
//! ([`crate::limits`]): a request's body is read once the budget has room for it, room for
//! its reply is reserved before it runs, an idle or non-reading peer is disconnected.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};

use quarry_types::{EntityName, ErrorCode};

use crate::codec::{
    decode_body_shared, decode_header, encode_part_head, encode_segments, encoded_len, FrameHeader,
    FrameMac, FrameSigner, SessionKey, StreamingMac, FRAME_PAYLOAD_MAX, HANDSHAKE_PAYLOAD_MAX,
    HEADER_LEN,
};
use crate::limits::{Budget, Charge, ConnAccount, ConnectionSlot};
use crate::message::{
    Challenge, Event, Hello, Message, Proof, Refused, Reply, Request, Service, Welcome,
};
use crate::WireError;

/// Protocol version spoken by this build. 2: `OsdOp` carries a request id. 3: frame version 3
/// (the header's bulk offset). 4: frame version 4 (a bulk is signed through its digest).
/// 5: streamed replies ([`Reply::ReadPart`], [`Reply::ReadDone`]).
pub const PROTOCOL_VERSION: u32 = 5;
/// Requests one connection may have in flight on a server before it stops reading.
pub const INFLIGHT_REQUESTS_MAX: usize = 256;
/// Request bytes (frame bodies) one connection may have in flight on a server before it stops
/// reading: with the one frame being read, this bounds what a peer can make a server hold.
pub const INFLIGHT_BYTES_MAX: usize = 256 << 20;
const INFLIGHT_KIB_MAX: u32 = (INFLIGHT_BYTES_MAX >> 10) as u32;
/// Frames queued for the writer task of one connection.
const OUTGOING_QUEUE_MAX: usize = 1024;

/// Whether sessions sign their frames. Always true in Quarry's daemons and tools; only the
/// `auth_cost` benchmark turns it off (in one process, for both ends) to measure what
/// signatures cost. Both ends of a connection must agree, so it is not a configuration option.
static SIGN_FRAMES: AtomicBool = AtomicBool::new(true);

/// Measurement only: turn frame signatures off (true) or on for every session this process
/// opens or accepts afterwards. The handshake still authenticates both ends.
#[doc(hidden)]
pub fn disable_signatures_for_measurement(disabled: bool) {
    SIGN_FRAMES.store(!disabled, Ordering::SeqCst);
}

/// Whether client connections this process opens hash large replies aside ([`HashAside`]).
static HASH_REPLIES_ASIDE: AtomicBool = AtomicBool::new(false);

/// Makes the client connections this process opens afterwards hash a large reply's pieces on
/// a blocking thread while the rest arrives ([`HashAside`]): for a client whose runtime has
/// one worker (the `ceph`, `rados` and `rbd` tools), whose reader would otherwise hash every
/// large reply on that worker. Off by default: in a daemon each such frame would hold one of
/// the few blocking threads its store I/O needs for as long as the frame takes to arrive
/// (an OSD's peer connections are client connections too), and on a runtime of several
/// workers it measured level (fio through the C library, docs/benchmarks.md, "Nineteenth
/// round").
pub fn hash_large_replies_aside(on: bool) {
    HASH_REPLIES_ASIDE.store(on, Ordering::Relaxed);
}

fn session_signing_key(key: SessionKey) -> Option<SessionKey> {
    SIGN_FRAMES.load(Ordering::SeqCst).then_some(key)
}

/// The secret a client proves it holds.
#[derive(Clone)]
pub enum ClientSecret {
    /// The entity's own key (monitor connections).
    EntityKey(Vec<u8>),
    /// A monitor ticket and its session key (OSD connections).
    Ticket {
        /// Sealed ticket bytes, opaque to the client.
        ticket: Vec<u8>,
        /// The ticket's session key.
        session_key: SessionKey,
    },
}

impl ClientSecret {
    fn key(&self) -> &[u8] {
        match self {
            ClientSecret::EntityKey(k) => k,
            ClientSecret::Ticket { session_key, .. } => session_key,
        }
    }
}

struct FrameReader {
    inner: BufReader<OwnedReadHalf>,
    key: Option<SessionKey>,
    next_seq: u64,
    payload_max: u32,
    /// Body length of the last frame received.
    last_body_len: usize,
    /// Whether a large signed frame's bytes are hashed on a blocking thread while the rest
    /// arrives (the client side: replies; see [`HashAside`]).
    hash_aside: bool,
}

impl FrameReader {
    async fn recv(&mut self) -> Result<(u64, Message), WireError> {
        let (header_bytes, header) = self.read_header().await?;
        self.read_body(&header_bytes, &header).await
    }

    /// Reads and checks the next frame's header (nothing is allocated for its body yet).
    async fn read_header(&mut self) -> Result<([u8; HEADER_LEN], FrameHeader), WireError> {
        let mut header_bytes = [0u8; HEADER_LEN];
        match self.inner.read_exact(&mut header_bytes).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(WireError::Closed)
            }
            Err(e) => return Err(WireError::Io(e)),
        }
        let header = decode_header(&header_bytes, self.payload_max)?;
        Ok((header_bytes, header))
    }

    /// Reads the body of the frame whose header was just read, checks and decodes it.
    async fn read_body(
        &mut self,
        header_bytes: &[u8; HEADER_LEN],
        header: &FrameHeader,
    ) -> Result<(u64, Message), WireError> {
        let (id, msg, _) = self.read_body_to(header_bytes, header, &mut |_, _| None).await?;
        Ok((id, msg))
    }

    /// [`FrameReader::read_body`], offering a bulk payload (the header's bulk offset) to
    /// `sinks` once the bytes before it are in: a sink it returns is handed the bulk's pieces
    /// as they arrive ([`BulkSink`]), and what it makes of them comes back with the message.
    async fn read_body_to(
        &mut self,
        header_bytes: &[u8; HEADER_LEN],
        header: &FrameHeader,
        sinks: &mut SinkFactory<'_>,
    ) -> Result<(u64, Message, Option<BulkDone>), WireError> {
        // Read into uninitialised memory (`read_buf` never exposes it): zeroing a 4 MiB body
        // before overwriting it cost ~7% of the server's CPU per 4 MiB write (issue 14).
        // `take` stops the reads at the frame's end (the buffer may have spare capacity).
        // The signature is computed while the body arrives (`StreamingMac`): on a large
        // write the hash overlaps the transfer instead of following it.
        let len = header.body_len();
        let bulk_at = usize::from(header.bulk_offset);
        let mut body = body_buffer(len, bulk_at);
        let mut mac = self.key.as_ref().and_then(|k| StreamingMac::new(k, header_bytes, header));
        // A client hashes a large reply's pieces on a blocking thread while the rest arrives
        // (its sinks are never offered anything).
        let mut aside = None;
        if self.hash_aside && header.payload_len as usize >= HashAside::FRAME_MIN {
            aside = mac.take().map(HashAside::start);
        }
        // `body` holds the body's bytes from offset `base` on; with a sink, the bytes before
        // are in `head` and the pieces handed on (with `aside`, to the hasher).
        let mut base = 0;
        let mut stream: Option<BulkStream> = None;
        let mut offered = bulk_at == 0 || aside.is_some();
        while base + body.len() < len {
            let left = (len - base - body.len()) as u64;
            let n = (&mut self.inner).take(left).read_buf(&mut body).await.map_err(truncated)?;
            if n == 0 {
                return Err(WireError::Truncated);
            }
            if let Some(aside) = aside.as_mut() {
                aside.hand_on(&mut body, &mut base);
            }
            if let Some(mac) = mac.as_mut() {
                mac.feed(base, &body);
            }
            if !offered && body.len() >= bulk_at {
                offered = true;
                stream = BulkStream::offer(&mut body, bulk_at, header, sinks, mac.as_mut());
                if stream.is_some() {
                    base = bulk_at;
                }
            }
            if let Some(stream) = stream.as_mut() {
                stream.hand_on(&mut body, &mut base, mac.as_mut());
            }
        }
        if let Some(aside) = aside {
            let (whole, hashed) = aside.finish(body).await;
            body = whole;
            mac = hashed;
        }
        let mut sink = None;
        if let Some(stream) = stream {
            let (whole, done) = stream.finish(body).await;
            body = whole;
            sink = done;
        }
        let body = body.freeze();
        let msg =
            decode_body_shared(header_bytes, header, &body, self.key.as_ref(), self.next_seq, mac)?;
        self.last_body_len = body.len();
        if self.key.is_some() {
            self.next_seq += 1;
        }
        // Only a frame that decoded and whose signature verified gets its sink's result.
        let done = sink.and_then(|(sink, len)| sink.finish(body.slice(bulk_at..bulk_at + len)));
        Ok((header.request_id, msg, done))
    }

    /// Reads past the body of the frame whose header was just read, into a small buffer
    /// (a frame refused for its size costs bandwidth, not memory). Its sequence number counts.
    async fn skip_body(&mut self, header: &FrameHeader) -> Result<(), WireError> {
        let mut left = header.body_len();
        let mut scratch = vec![0u8; 64 << 10];
        while left > 0 {
            let n = left.min(scratch.len());
            self.inner.read_exact(&mut scratch[..n]).await.map_err(truncated)?;
            left -= n;
        }
        if self.key.is_some() {
            self.next_seq += 1;
        }
        Ok(())
    }
}

fn truncated(e: std::io::Error) -> WireError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        WireError::Truncated
    } else {
        WireError::Io(e)
    }
}

/// Alignment in memory of a received bulk payload: a direct write's (4 KiB).
const BULK_ALIGN: usize = 4096;
/// A bulk payload is handed to a sink in pieces of this size (the last may be shorter).
pub const BULK_PIECE: usize = 512 << 10;
/// Bulk payloads smaller than this are not offered to a sink: nothing much to overlap.
pub const BULK_STREAM_MIN: usize = 1 << 20;

/// What a [`Handler`] made of a request's bulk payload ([`BulkSink::finish`]): handed to
/// [`Handler::handle_bulk`] with the request.
pub type BulkDone = Box<dyn std::any::Any + Send>;

/// Offers a frame's bulk payload to a sink: the payload's bytes before the bulk's length
/// prefix, and the bulk's length.
type SinkFactory<'a> = dyn FnMut(&[u8], usize) -> Option<Arc<dyn BulkSink>> + Send + 'a;

/// Where a request's large data payload goes while the rest of its frame still arrives
/// ([`Handler::bulk_sink`]). The OSD writes a write's data to its place in the data file
/// meanwhile, so the device write overlaps the transfer (issue 14).
pub trait BulkSink: Send + Sync + 'static {
    /// Bytes `[at, at + bytes.len())` of the bulk, 4 KiB-aligned in memory, each piece
    /// [`BULK_PIECE`] long except the last; called on a blocking thread (it may do blocking
    /// I/O), one piece after the other, in order. They are not authenticated yet:
    /// nothing may use them before [`BulkSink::finish`]. False: the sink gave up (`finish`
    /// is not called then).
    fn write(&self, at: usize, bytes: &[u8]) -> bool;

    /// Every piece was written, the frame arrived whole, its signature verified and it
    /// decoded; `bulk` is the bulk's bytes in the received body (the memory every piece was
    /// in). Called at most once; what it returns goes to [`Handler::handle_bulk`]. A sink
    /// dropped without it (a truncated, tampered or undecodable frame, a closed connection,
    /// a failed piece) must undo what it did.
    fn finish(&self, bulk: bytes::Bytes) -> Option<BulkDone>;
}

/// A frame body's buffer: with a bulk offset, placed so that the bulk's bytes start 4 KiB-
/// aligned in memory (the OSD writes them with direct I/O as they are).
fn body_buffer(len: usize, bulk_at: usize) -> bytes::BytesMut {
    if bulk_at == 0 {
        return bytes::BytesMut::with_capacity(len);
    }
    let mut body = bytes::BytesMut::with_capacity(len + BULK_ALIGN);
    let pad = (BULK_ALIGN - (body.as_ptr() as usize + bulk_at) % BULK_ALIGN) % BULK_ALIGN;
    bytes::BufMut::put_bytes(&mut body, 0, pad);
    let _ = body.split_to(pad);
    body
}

/// A blocking thread that is handed a frame body's pieces in order, does `each` with every
/// one and keeps them; [`PieceThread::finish`] gives them back with its state. What a bulk
/// sink's writer ([`BulkStream`]) and a reply's hasher ([`HashAside`]) share.
struct PieceThread<S> {
    pieces: std::sync::mpsc::Sender<(usize, bytes::BytesMut)>,
    worker: tokio::task::JoinHandle<(Vec<bytes::BytesMut>, S)>,
}

impl<S: Send + 'static> PieceThread<S> {
    fn start(mut state: S, each: impl Fn(&mut S, usize, &[u8]) + Send + 'static) -> Self {
        let (pieces, rx) = std::sync::mpsc::channel::<(usize, bytes::BytesMut)>();
        let worker = tokio::task::spawn_blocking(move || {
            let mut kept = Vec::new();
            for (at, piece) in rx {
                each(&mut state, at, &piece);
                kept.push(piece);
            }
            (kept, state)
        });
        PieceThread { pieces, worker }
    }

    /// Hands on the piece at `at`.
    fn send(&self, at: usize, piece: bytes::BytesMut) {
        // The thread ends only when this sender is dropped: a send cannot fail.
        let _ = self.pieces.send((at, piece));
    }

    /// Every piece, in order, and the state, once the thread is done with them. None only
    /// if the thread panicked (a bug): then the pieces are gone, and the frame with them.
    async fn finish(self) -> Option<(Vec<bytes::BytesMut>, S)> {
        let PieceThread { pieces, worker } = self;
        drop(pieces);
        worker.await.ok()
    }
}

/// `head`, then `pieces`, then `rest`: contiguous parts of one buffer, in order, so that each
/// `unsplit` is O(1).
fn rejoin(
    mut head: bytes::BytesMut,
    pieces: Vec<bytes::BytesMut>,
    rest: bytes::BytesMut,
) -> bytes::BytesMut {
    for piece in pieces {
        head.unsplit(piece);
    }
    head.unsplit(rest);
    head
}

/// A bulk payload being handed to a sink on a blocking thread, piece by piece. One thread:
/// two in flight did not help on this machine's ext4 (a direct write that allocates blocks,
/// as every placed write does, holds the file's inode lock; 4 MiB writes at QD1, fresh
/// clusters: 203/160 IOPS with one writer, 153/166 with two; issue 14, docs/benchmarks.md
/// "Eighth round").
struct BulkStream {
    /// The body's bytes before the bulk.
    head: bytes::BytesMut,
    /// Body offsets of the bulk's start and end.
    start: usize,
    end: usize,
    sink: Arc<dyn BulkSink>,
    /// Writes the pieces to the sink; its state: whether the sink took every one.
    writer: PieceThread<bool>,
}

impl BulkStream {
    /// Offers the bulk of a frame whose body's first `bulk_at` bytes are in `body` (from
    /// offset 0) to `sinks`; with a sink, those bytes move to the stream's head.
    fn offer(
        body: &mut bytes::BytesMut,
        bulk_at: usize,
        header: &FrameHeader,
        sinks: &mut SinkFactory<'_>,
        mac: Option<&mut StreamingMac>,
    ) -> Option<BulkStream> {
        let prefix: [u8; 8] = body.get(bulk_at - 8..bulk_at)?.try_into().ok()?;
        let bulk_len = usize::try_from(u64::from_le_bytes(prefix)).ok()?;
        let fits = bulk_len <= header.payload_len as usize - bulk_at;
        if !fits || bulk_len < BULK_STREAM_MIN || bulk_len % BULK_ALIGN != 0 {
            return None;
        }
        let sink = sinks(&body[..bulk_at - 8], bulk_len)?;
        if let Some(mac) = mac {
            mac.hash_through(0, body, bulk_at);
        }
        let head = body.split_to(bulk_at);
        let writer_sink = sink.clone();
        let writer = PieceThread::start(true, move |ok: &mut bool, at, piece: &[u8]| {
            *ok = *ok && writer_sink.write(at, piece);
        });
        Some(BulkStream { head, start: bulk_at, end: bulk_at + bulk_len, sink, writer })
    }

    /// Hands on every whole piece `body` (the body from offset `base` on) holds.
    fn hand_on(
        &mut self,
        body: &mut bytes::BytesMut,
        base: &mut usize,
        mut mac: Option<&mut StreamingMac>,
    ) {
        loop {
            let piece_end = (*base + BULK_PIECE).min(self.end);
            if *base >= self.end || *base + body.len() < piece_end {
                return;
            }
            if let Some(mac) = mac.as_deref_mut() {
                mac.hash_through(*base, body, piece_end);
            }
            let piece = body.split_to(piece_end - *base);
            self.writer.send(*base - self.start, piece);
            *base = piece_end;
        }
    }

    /// The whole body again (`rest`: its bytes after the last piece) once the writer is
    /// done, and the sink with the bulk's length if it took every piece.
    async fn finish(
        self,
        rest: bytes::BytesMut,
    ) -> (bytes::BytesMut, Option<(Arc<dyn BulkSink>, usize)>) {
        let BulkStream { head, start, end, sink, writer } = self;
        // The writer cannot panic short of a bug in a sink: then its pieces are gone and the
        // frame with them (an empty body fails to decode).
        let Some((kept, ok)) = writer.finish().await else {
            return (bytes::BytesMut::new(), None);
        };
        (rejoin(head, kept, rest), ok.then_some((sink, end - start)))
    }
}

/// A large signed frame's body being hashed on a blocking thread while the rest of it arrives
/// ([`FrameReader::read_body_to`] on the client side of a process that asked for it,
/// [`hash_large_replies_aside`]). The connection's reader only copies
/// the bytes in: on a runtime of one worker (the `rados`, `rbd` and `ceph` tools), hashing on
/// the reader held the worker through every 4 MiB reply (`rados bench` 4 MiB reads at QD32
/// 15-20% below two workers; docs/benchmarks.md, "Nineteenth round"). The pieces come back
/// with the hasher, contiguous, and are joined again (no copy).
struct HashAside {
    hasher: PieceThread<StreamingMac>,
}

impl HashAside {
    /// Pieces handed to the hasher (the last of the body is hashed when the frame is decoded).
    const PIECE: usize = BULK_PIECE;
    /// Smaller payloads are hashed on the reader: too little to overlap for a thread's wake-up.
    const FRAME_MIN: usize = 2 * Self::PIECE;

    fn start(mac: StreamingMac) -> HashAside {
        let hasher = PieceThread::start(mac, |mac: &mut StreamingMac, at, piece: &[u8]| {
            mac.hash_through(at, piece, at + piece.len());
        });
        HashAside { hasher }
    }

    /// Hands on every whole piece `body` (the body from offset `base` on) holds.
    fn hand_on(&mut self, body: &mut bytes::BytesMut, base: &mut usize) {
        while body.len() >= Self::PIECE {
            self.hasher.send(*base, body.split_to(Self::PIECE));
            *base += Self::PIECE;
        }
    }

    /// The whole body again (`rest`: its bytes after the last piece) and the hasher that
    /// hashed every piece.
    async fn finish(self, rest: bytes::BytesMut) -> (bytes::BytesMut, Option<StreamingMac>) {
        // The hasher cannot panic short of a bug: then the pieces are gone and the frame
        // with them (an empty body fails to decode).
        let Some((kept, mac)) = self.hasher.finish().await else {
            return (bytes::BytesMut::new(), None);
        };
        (rejoin(bytes::BytesMut::new(), kept, rest), Some(mac))
    }
}

struct FrameWriter {
    inner: BufWriter<OwnedWriteHalf>,
    key: Option<SessionKey>,
    next_seq: u64,
    /// Whether large signed frames are hashed piece by piece as they are written (the
    /// client side: requests; see [`FrameWriter::push`]).
    sign_while_writing: bool,
}

impl FrameWriter {
    /// Queues a frame in the buffer; call `flush` to send. On the client side a signed frame
    /// larger than [`SIGN_STEP`] is written in pieces of that size, each hashed just before it
    /// goes (the server hashes what arrived meanwhile: 4 MiB writes at queue depth 1
    /// +7-10%), the thread yielding its core after each (the reader of the piece may be
    /// waiting for it), and its tag after them. A server writes each reply whole after hashing it:
    /// in pieces, its 4 MiB read replies cost ~0.5 ms more CPU each (measured, issue 14).
    async fn push(&mut self, request_id: u64, msg: &Message) -> Result<(), WireError> {
        let seq = if self.key.is_some() { self.next_seq } else { 0 };
        // Large payloads are written from their own buffers (`encode_segments`), not copied
        // into the frame first.
        let frame = encode_segments(request_id, seq, msg, self.key.is_some())?;
        match self.key.as_ref() {
            Some(key) if self.sign_while_writing && frame.len() > SIGN_STEP => {
                let mut signer = FrameSigner::new(key);
                for piece in frame.pieces() {
                    for step in piece.chunks(SIGN_STEP) {
                        signer.update(step);
                        self.inner.write_all(step).await?;
                        // Lets the reader of what was just sent run: on loopback the kernel
                        // wakes it on this core, behind this thread, and without a yield it
                        // waited there until the whole frame was sent while the other core
                        // idled (4 MiB writes at queue depth 1: 224-232 -> 283-354 IOPS).
                        // With nothing else runnable it returns at once.
                        std::thread::yield_now();
                    }
                }
                self.inner.write_all(&signer.finish()).await?;
            }
            Some(key) => {
                let tag = frame.signature(key);
                for piece in frame.pieces() {
                    self.inner.write_all(piece).await?;
                }
                self.inner.write_all(&tag).await?;
            }
            None => {
                for piece in frame.pieces() {
                    self.inner.write_all(piece).await?;
                }
            }
        }
        if self.key.is_some() {
            self.next_seq += 1;
        }
        Ok(())
    }

    async fn push_outbound(&mut self, request_id: u64, out: Outbound) -> Result<(), WireError> {
        match out {
            Outbound::Message(msg) => self.push(request_id, &msg).await,
            Outbound::Part(part) => self.push_part(request_id, part).await,
        }
    }

    /// Writes a [`Reply::ReadPart`] as its pieces come, signing it as it goes (see
    /// [`Outbound`]'s streamed replies): the head, each piece (flushed at once: the client
    /// checks it while the next is read), then the crc and the tag. If the pieces stop short
    /// (the read failed, or its sender broke the part's rules), the rest is zeros and the crc
    /// 0: the frame stays well formed, and its answer is not `ReadDone`.
    async fn push_part(&mut self, request_id: u64, mut part: PartStream) -> Result<(), WireError> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let Some(key) = self.key else {
            return Err(WireError::UnexpectedMessage("a streamed part on an unsigned session"));
        };
        let head = encode_part_head(request_id, self.next_seq, part.len)?;
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&head[..HEADER_LEN]);
        let mut mac = FrameMac::new(&key, &header);
        mac.update(&head[HEADER_LEN..]);
        // Flushed now: replies queued before it go out while the first piece is read.
        self.inner.write_all(&head).await?;
        self.inner.flush().await?;
        let (mut sent, mut crc) = (0, 0);
        while let Some(piece) = part.pieces.recv().await {
            match piece {
                PartPiece::Data(bytes) if sent + bytes.len() <= part.len => {
                    mac.update(&bytes);
                    self.inner.write_all(&bytes).await?;
                    self.inner.flush().await?;
                    sent += bytes.len();
                }
                PartPiece::End { crc: end } if sent == part.len => {
                    crc = end;
                    break;
                }
                _ => break,
            }
        }
        while sent < part.len {
            let zeros = &ZEROS[..(part.len - sent).min(ZEROS.len())];
            mac.update(zeros);
            self.inner.write_all(zeros).await?;
            sent += zeros.len();
        }
        let crc = crc.to_le_bytes();
        mac.update(&crc);
        self.inner.write_all(&crc).await?;
        self.inner.write_all(mac.finalize().as_bytes()).await?;
        self.next_seq += 1;
        Ok(())
    }

    async fn send(&mut self, request_id: u64, msg: &Message) -> Result<(), WireError> {
        self.push(request_id, msg).await?;
        self.inner.flush().await?;
        Ok(())
    }
}

/// Pieces in which a large signed frame is hashed and written by a client
/// ([`FrameWriter::push`]).
const SIGN_STEP: usize = 256 << 10;

/// Socket buffers of a client connection (few per process: sized for throughput).
const CLIENT_BUFFER: usize = 256 << 10;
/// Socket buffers of a server connection (a daemon holds thousands: what each costs; frame
/// bodies larger than this bypass the buffers anyway).
const SERVER_BUFFER: usize = 64 << 10;

/// The two halves of a connection; `client_side`: large frames are signed while they are
/// written ([`FrameWriter::push`]) and, where the process asked for it
/// ([`hash_large_replies_aside`]), hashed aside while they arrive ([`HashAside`]).
fn split(stream: TcpStream, buffer: usize, client_side: bool) -> (FrameReader, FrameWriter) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    (
        FrameReader {
            inner: BufReader::with_capacity(buffer, r),
            key: None,
            next_seq: 1,
            payload_max: HANDSHAKE_PAYLOAD_MAX,
            last_body_len: 0,
            hash_aside: client_side && HASH_REPLIES_ASIDE.load(Ordering::Relaxed),
        },
        FrameWriter {
            inner: BufWriter::with_capacity(buffer, w),
            key: None,
            next_seq: 1,
            sign_while_writing: client_side,
        },
    )
}

/// Connects to `addr`, authenticates as `entity` for `service`, and starts a pipelined
/// session. Returns the client, the channel of pushed events, and the global id the server
/// assigned. An authentication failure is `WireError::Refused` (EPERM/EACCES); the whole
/// handshake is bounded by `timeout`.
pub async fn connect(
    addr: SocketAddr,
    entity: &EntityName,
    service: Service,
    secret: &ClientSecret,
    timeout: Duration,
) -> Result<Connected, WireError> {
    let work = async {
        let stream = TcpStream::connect(addr).await?;
        let local_addr = stream.local_addr()?;
        let (mut reader, mut writer) = split(stream, CLIENT_BUFFER, true);
        let client_nonce = quarry_auth::random_nonce();
        let ticket = match secret {
            ClientSecret::Ticket { ticket, .. } => Some(ticket.clone()),
            ClientSecret::EntityKey(_) => None,
        };
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            service,
            entity: entity.clone(),
            client_nonce,
            ticket,
        };
        writer.send(0, &Message::Hello(hello)).await?;
        let server_nonce = match reader.recv().await? {
            (_, Message::Challenge(Challenge { server_nonce })) => server_nonce,
            (_, Message::Refused(r)) => return Err(WireError::Refused(r.code, r.reason)),
            _ => return Err(WireError::UnexpectedMessage("expected Challenge")),
        };
        let key = secret.key();
        let proof = quarry_auth::client_proof(key, entity, &client_nonce, &server_nonce);
        writer.send(0, &Message::Proof(Proof { proof })).await?;
        let welcome = match reader.recv().await? {
            (_, Message::Welcome(w)) => w,
            (_, Message::Refused(r)) => return Err(WireError::Refused(r.code, r.reason)),
            _ => return Err(WireError::UnexpectedMessage("expected Welcome")),
        };
        let proven = quarry_auth::verify_server_proof(
            key,
            entity,
            &client_nonce,
            &server_nonce,
            &welcome.proof,
        );
        if !proven {
            return Err(WireError::Refused(
                ErrorCode::EPERM,
                "the server could not prove it knows our key (wrong cluster or impostor)".into(),
            ));
        }
        let session = quarry_auth::session_key(key, &client_nonce, &server_nonce);
        reader.key = session_signing_key(session);
        reader.payload_max = FRAME_PAYLOAD_MAX;
        writer.key = session_signing_key(session);
        Ok((reader, writer, welcome.global_id, session, local_addr))
    };
    let (reader, writer, global_id, session_key, local_addr) =
        tokio::time::timeout(timeout, work).await.map_err(|_| WireError::Timeout)??;
    let (client, events) = RpcClient::start(reader, writer);
    Ok(Connected { client, events, global_id, session_key, local_addr })
}

/// An authenticated client connection.
pub struct Connected {
    /// Pipelined requests.
    pub client: RpcClient,
    /// Events the server pushes (map updates).
    pub events: mpsc::Receiver<Event>,
    /// The global id the server assigned to this client instance.
    pub global_id: u64,
    /// The session key both sides derived: used to open secrets the server seals for us
    /// (a ticket's session key, service keys).
    pub session_key: SessionKey,
    /// Our end of the connection (the IP a server sees us as, unless NAT is in between).
    pub local_addr: SocketAddr,
}

/// What a server needs to authenticate a peer.
pub trait Authenticator: Send + Sync + 'static {
    /// What the server remembers about an authenticated peer (entity, caps, ...).
    type Session: Send + Sync + 'static;

    /// The secret the peer must prove it holds, and its session, or a refusal. For the
    /// monitor: the entity's key; for an OSD: the session key in the (opened) ticket. A
    /// refusal with EACCES is logged with its reason but answered [`AUTH_DENIED_REASON`].
    fn secret_for(&self, hello: &Hello) -> Result<(Vec<u8>, Self::Session), Refused>;

    /// A peer proved its identity; returns the global id to announce.
    fn accepted(&self, session: &Self::Session) -> u64;

    /// A peer failed to prove its identity (for logging and counters).
    fn rejected(&self, hello: &Hello, peer: SocketAddr, why: &str);
}

/// A connection that finished the server side of the handshake.
pub struct Accepted<S> {
    reader: FrameReader,
    writer: FrameWriter,
    /// The authenticated peer's session.
    pub session: S,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The session key: seal secrets sent to this peer with it.
    pub session_key: SessionKey,
    /// What the connection holds of its daemon's budget.
    account: ConnAccount,
}

/// What a peer that failed to authenticate is told, whatever the reason (wrong key, or an
/// [`Authenticator`] refusal with EACCES such as an unknown entity): Ceph's one answer,
/// `(13) Permission denied`, so the server never tells an unauthenticated peer which names
/// exist. The reason is only given to [`Authenticator::rejected`] (the server's log).
pub const AUTH_DENIED_REASON: &str = "authentication failed";

fn auth_denied() -> Refused {
    Refused { code: ErrorCode::EACCES, reason: AUTH_DENIED_REASON.to_string() }
}

/// Runs the server side of the handshake on `stream`, bounded by `timeout`, with no limit
/// on what the session may hold (tools and tests; daemons use [`accept_limited`]).
pub async fn accept<A: Authenticator>(
    stream: TcpStream,
    auth: &A,
    timeout: Duration,
) -> Result<Accepted<A::Session>, WireError> {
    let budget = Budget::unlimited();
    let slot = budget.try_connection().map_err(|r| WireError::Refused(r.code, r.reason))?;
    accept_in(stream, auth, timeout, slot).await
}

/// Runs the server side of the handshake on `stream` for a connection that holds `slot` of
/// its daemon's budget: bounded by the budget's handshake timeout; a client entity already
/// at its connection cap is refused (EAGAIN) after proving its key.
pub async fn accept_limited<A: Authenticator>(
    stream: TcpStream,
    auth: &A,
    slot: ConnectionSlot,
) -> Result<Accepted<A::Session>, WireError> {
    let timeout = slot.budget().limits().handshake_timeout;
    accept_in(stream, auth, timeout, slot).await
}

/// Tells the peer of a socket just accepted why it is not served (best effort, bounded),
/// then closes it.
pub async fn refuse(stream: TcpStream, code: ErrorCode, reason: String) {
    let (_reader, mut writer) = split(stream, 4 << 10, false);
    let refused = Message::Refused(Refused { code, reason });
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.send(0, &refused)).await;
}

async fn accept_in<A: Authenticator>(
    stream: TcpStream,
    auth: &A,
    timeout: Duration,
    mut slot: ConnectionSlot,
) -> Result<Accepted<A::Session>, WireError> {
    let peer = stream.peer_addr()?;
    let work = async {
        let (mut reader, mut writer) = split(stream, SERVER_BUFFER, false);
        let hello = match reader.recv().await? {
            (_, Message::Hello(h)) => h,
            _ => return Err(WireError::UnexpectedMessage("expected Hello")),
        };
        if hello.protocol != PROTOCOL_VERSION {
            let reason =
                format!("protocol {} not supported (want {})", hello.protocol, PROTOCOL_VERSION);
            let refused = Refused { code: ErrorCode::EPROTO, reason: reason.clone() };
            let _ = writer.send(0, &Message::Refused(refused)).await;
            return Err(WireError::Refused(ErrorCode::EPROTO, reason));
        }
        // The challenge goes out even for unknown entities, so a prober learns nothing
        // before proving a key.
        let server_nonce = quarry_auth::random_nonce();
        writer.send(0, &Message::Challenge(Challenge { server_nonce })).await?;
        let proof = match reader.recv().await? {
            (_, Message::Proof(p)) => p,
            _ => return Err(WireError::UnexpectedMessage("expected Proof")),
        };
        let (secret, session) = match auth.secret_for(&hello) {
            Ok(found) => found,
            Err(refused) => {
                auth.rejected(&hello, peer, &refused.reason);
                // EACCES is "who are you": the detail (unknown entity) stays in the log and
                // the peer gets the same answer as for a wrong key.
                let refused =
                    if refused.code == ErrorCode::EACCES { auth_denied() } else { refused };
                let err = WireError::Refused(refused.code, refused.reason.clone());
                let _ = writer.send(0, &Message::Refused(refused)).await;
                return Err(err);
            }
        };
        let proven = quarry_auth::verify_client_proof(
            &secret,
            &hello.entity,
            &hello.client_nonce,
            &server_nonce,
            &proof.proof,
        );
        if !proven {
            auth.rejected(&hello, peer, "wrong key");
            let refused = auth_denied();
            let err = WireError::Refused(refused.code, refused.reason.clone());
            let _ = writer.send(0, &Message::Refused(refused)).await;
            return Err(err);
        }
        // Only a peer that proved its name is counted against that name's cap (otherwise
        // anyone could lock a user out by claiming to be it).
        if let Err(refusal) = slot.admit(&hello.entity) {
            let err = WireError::Refused(refusal.code, refusal.reason.clone());
            let refused = Refused { code: refusal.code, reason: refusal.reason };
            let _ = writer.send(0, &Message::Refused(refused)).await;
            return Err(err);
        }
        let global_id = auth.accepted(&session);
        let proof =
            quarry_auth::server_proof(&secret, &hello.entity, &hello.client_nonce, &server_nonce);
        writer.send(0, &Message::Welcome(Welcome { proof, global_id })).await?;
        let key = quarry_auth::session_key(&secret, &hello.client_nonce, &server_nonce);
        reader.key = session_signing_key(key);
        reader.payload_max = FRAME_PAYLOAD_MAX;
        writer.key = session_signing_key(key);
        Ok((reader, writer, session, key))
    };
    let (reader, writer, session, session_key) =
        tokio::time::timeout(timeout, work).await.map_err(|_| WireError::Timeout)??;
    let account = ConnAccount::new(slot);
    Ok(Accepted { reader, writer, session, peer, session_key, account })
}

/// A frame for a connection's writer task, with the reply room it holds until written.
type Outgoing = (u64, Outbound, Option<Charge>);

/// What a connection's writer sends: a message, or a read's data while it is being read.
enum Outbound {
    Message(Message),
    Part(PartStream),
}

impl From<Message> for Outbound {
    fn from(msg: Message) -> Outbound {
        Outbound::Message(msg)
    }
}

/// Streamed replies. A large read's data can go to the client while the OSD still reads it
/// from the device, instead of after: the client's receive and check of 4 MiB (~3 ms here,
/// most of it the frame's BLAKE3) then overlap the device read rather than follow it. The
/// data goes in a frame of its own ahead of the answer, a [`Reply::ReadPart`], signed like
/// any frame but written as its pieces come (the header says the length, which is known
/// when the read starts; the crc and tag follow the data); the request's answer follows it
/// on the connection: [`Reply::ReadDone`] (the part is the op's output), or any other reply,
/// which stands alone (a read that failed half way: the part's rest is zeros, and dropped).
/// [`RpcClient`] joins the two, so callers see the usual `Reply::Op`. A handler starts a
/// part through [`PartStarter::current`]; while a part is written, the connection's other
/// replies wait behind it, so the OSD streams only a read that is alone in flight.
struct PartStream {
    len: usize,
    /// Unbounded: the sender must never wait (the OSD's store thread holds a read view while
    /// it gives pieces, and a client that stops reading must not hold that); what it holds is
    /// bounded by the part's length, charged as reply room when the part started.
    pieces: mpsc::UnboundedReceiver<PartPiece>,
}

enum PartPiece {
    Data(bytes::Bytes),
    End { crc: u32 },
}

tokio::task_local! {
    /// The part starter of the request a [`serve`] handler task is answering (None on an
    /// unsigned session: a part is always signed).
    static REPLY_PART: Option<PartStarter>;
}

/// Starts a [`Reply::ReadPart`] of the request being answered (see [`Outbound`]'s streamed
/// replies).
#[derive(Clone)]
pub struct PartStarter {
    request_id: u64,
    tx: mpsc::Sender<Outgoing>,
    account: std::sync::Weak<ConnAccount>,
}

impl PartStarter {
    /// The starter of the request whose handler runs in this task, if its connection may
    /// carry parts (a signed session, served by [`serve`]).
    pub fn current() -> Option<PartStarter> {
        REPLY_PART.try_with(Option::clone).ok().flatten()
    }

    /// Queues a part of `len` bytes (at least 1 KiB) for the writer, ahead of anything the
    /// request sends later; its pieces follow through the returned sender. The part holds
    /// reply room for its bytes until written. None if the connection has no room for it
    /// now, the writer's queue is full or the connection is gone. Never waits.
    pub fn start(&self, len: usize) -> Option<PartSender> {
        // The frame's payload holds the data and ~20 bytes around it.
        if len < quarry_types::zerocopy::BULK_MIN || len + 64 > FRAME_PAYLOAD_MAX as usize {
            return None;
        }
        let charge = self.account.upgrade()?.try_charge_reply(len as u64 + 64)?;
        let (tx, pieces) = mpsc::unbounded_channel();
        let part = Outbound::Part(PartStream { len, pieces });
        self.tx.try_send((self.request_id, part, charge)).ok()?;
        Some(PartSender { tx, left: len })
    }
}

/// The sending end of a started part: its pieces in order, then their crc. Dropped before
/// [`PartSender::end`], the part is finished with zeros (the answer must then not be
/// [`Reply::ReadDone`]).
pub struct PartSender {
    tx: mpsc::UnboundedSender<PartPiece>,
    left: usize,
}

impl PartSender {
    /// Queues the next piece (never waits); false if the connection is gone or the piece is
    /// longer than what is left (nothing queued).
    pub fn piece(&mut self, piece: bytes::Bytes) -> bool {
        if piece.len() > self.left {
            return false;
        }
        self.left -= piece.len();
        self.tx.send(PartPiece::Data(piece)).is_ok()
    }

    /// Ends the part with `crc` (of all its bytes); false if pieces are missing or the
    /// connection is gone.
    pub fn end(self, crc: u32) -> bool {
        self.left == 0 && self.tx.send(PartPiece::End { crc }).is_ok()
    }
}

/// Pushes events to one connected peer (e.g. map updates to a subscriber). Events count
/// against the connection's reply room like replies.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Outgoing>,
    account: std::sync::Weak<ConnAccount>,
}

impl EventSink {
    /// Sends an event, waiting for reply room; false if the connection is gone.
    pub async fn send(&self, event: Event) -> bool {
        let msg = Message::Event(event);
        let Some(account) = self.account.upgrade() else { return false };
        let charge = tokio::select! {
            charge = account.charge_reply(encoded_len(&msg)) => charge,
            _ = self.tx.closed() => return false,
        };
        drop(account);
        self.tx.send((0, msg.into(), charge)).await.is_ok()
    }

    /// Queues an event without waiting; false if the connection is gone or has no room for
    /// it (the event is then dropped).
    pub fn try_send(&self, event: Event) -> bool {
        let msg = Message::Event(event);
        let Some(account) = self.account.upgrade() else { return false };
        let Some(charge) = account.try_charge_reply(encoded_len(&msg)) else { return false };
        self.tx.try_send((0, msg.into(), charge)).is_ok()
    }

    /// True once the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Messages (replies and events) queued for this peer and not yet taken by the writer:
    /// a pusher can hold back an event that a newer one will replace while the peer is slow.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Per-connection context handed to a [`Handler`].
pub struct ConnContext<S> {
    /// The authenticated peer.
    pub session: S,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Push channel to this peer.
    pub events: EventSink,
    /// The session key: seal secrets sent to this peer with it.
    pub session_key: SessionKey,
}

/// Serves requests of one authenticated connection.
pub trait Handler<S>: Send + Sync + 'static {
    /// Handles one request; the returned reply is sent back with the same request id.
    fn handle(
        &self,
        ctx: Arc<ConnContext<S>>,
        request: Request,
    ) -> impl Future<Output = Reply> + Send;

    /// Called for every request on the connection's reader, in arrival order, before
    /// [`Handler::handle`] runs (its first steps may run on the reader too, up to its first
    /// wait: [`serve`]; the rest, in a task of its own, in any order). Whatever must
    /// follow the order requests arrived in on one connection is done here (the OSD queues a
    /// mutation behind earlier ones to the same object). Must not block. Default: nothing.
    fn arrived(&self, _ctx: &Arc<ConnContext<S>>, _request: &Request) {}

    /// The bytes `request`'s reply will take at most, as far as the request says (data
    /// reads: their lengths). Reply room for it is reserved before the request runs; the
    /// charge is corrected once the reply exists. Default: 4 KiB.
    fn reply_estimate(&self, _request: &Request) -> u64 {
        4 << 10
    }

    /// A sink for the bulk payload (`len` bytes) of a request whose payload starts with
    /// `head` (the bytes before the bulk's length prefix; [`crate::codec::osd_op_head`] reads
    /// an op's PG and object from them), called on the connection's reader before the bulk arrives
    /// (must not block). Default: none (the payload is simply received).
    fn bulk_sink(
        &self,
        _ctx: &Arc<ConnContext<S>>,
        _head: &[u8],
        _len: usize,
    ) -> Option<Arc<dyn BulkSink>> {
        None
    }

    /// [`Handler::handle`] for a request whose bulk payload went to a sink, with what the
    /// sink made of it ([`BulkSink::finish`]). Default: drops it and handles the request.
    fn handle_bulk(
        &self,
        ctx: Arc<ConnContext<S>>,
        request: Request,
        bulk: Option<BulkDone>,
    ) -> impl Future<Output = Reply> + Send {
        drop(bulk);
        self.handle(ctx, request)
    }
}

/// What the reader of a session got next.
// One per request, moved once: boxing the large variant would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(u64, Request, Charge, Option<BulkDone>),
    /// A frame larger than this peer may send: its body was skipped.
    Oversized(u64, u32),
    /// Nothing in flight and nothing received for the idle timeout.
    Idle,
}

/// Runs an authenticated connection until the peer goes away, sends a bad frame, stays idle
/// past the budget's timeout or stops reading its replies for as long. Requests are handled
/// concurrently; replies may go out of order (they carry the request id).
pub async fn serve<S, H>(accepted: Accepted<S>, handler: Arc<H>) -> Result<(), WireError>
where
    S: Send + Sync + 'static,
    H: Handler<S>,
{
    let Accepted { mut reader, writer, session, peer, session_key, account } = accepted;
    let signed = writer.key.is_some();
    let account = Arc::new(account);
    let limits = *account.budget().limits();
    let frame_max = account.budget().frame_max(account.is_client());
    let (tx, rx) = mpsc::channel::<Outgoing>(OUTGOING_QUEUE_MAX);
    let (writer_gone_tx, mut writer_gone) = oneshot::channel::<()>();
    let running = Arc::new(AtomicUsize::new(0));
    let writer_running = running.clone();
    let writer_task = tokio::spawn(async move {
        write_loop(writer, rx, Some(limits.idle_timeout), More::Handlers(writer_running)).await;
        drop(writer_gone_tx);
    });
    let events = EventSink { tx: tx.clone(), account: Arc::downgrade(&account) };
    let ctx = Arc::new(ConnContext { session, peer, events, session_key });
    let per_connection = limits.requests_per_connection;
    let inflight = Arc::new(Semaphore::new(per_connection));
    let inflight_kib = Arc::new(Semaphore::new(INFLIGHT_KIB_MAX as usize));
    let mut handlers = tokio::task::JoinSet::new();
    let result = loop {
        // Only while no other request of the connection is in flight (queue depth 1): the
        // reader then waits for the sink's last piece before it reads on, which at a deeper
        // queue would hold back the requests behind (issue 14: 4 MiB writes at QD32 halved
        // with every payload streamed, while a QD1 stream gained ~60%).
        let mut sinks = |head: &[u8], len: usize| {
            let alone = inflight.available_permits() == per_connection;
            alone.then(|| handler.bulk_sink(&ctx, head, len)).flatten()
        };
        let next = tokio::select! {
            next = next_request(&mut reader, &account, frame_max, &limits, &inflight, per_connection, &mut sinks) => next,
            _ = &mut writer_gone => break Err(WireError::Stalled),
        };
        let (request_id, request, request_charge, bulk) = match next {
            Ok(Next::Request(id, request, charge, bulk)) => (id, request, charge, bulk),
            Ok(Next::Oversized(id, len)) => {
                let message = format!(
                    "request of {len} bytes is larger than this daemon accepts ({frame_max})"
                );
                let reply = Reply::Failed { code: ErrorCode::EMSGSIZE, message };
                let _ = tx.send((id, Message::Reply(reply).into(), None)).await;
                continue;
            }
            Ok(Next::Idle) => break Err(WireError::Idle),
            Err(WireError::Closed) => break Ok(()),
            Err(e) => break Err(e),
        };
        // Room for the reply before the request runs: a peer that does not read its replies
        // stops being read from here (back-pressure), it does not grow the daemon.
        let estimate = handler.reply_estimate(&request);
        let reply_charge = tokio::select! {
            charge = account.charge_reply(estimate) => charge,
            _ = &mut writer_gone => break Err(WireError::Stalled),
        };
        let permit = match inflight.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break Ok(()),
        };
        let kib = ((reader.last_body_len >> 10) as u32).clamp(1, INFLIGHT_KIB_MAX);
        let bytes_permit = match inflight_kib.clone().acquire_many_owned(kib).await {
            Ok(p) => p,
            Err(_) => break Ok(()),
        };
        handler.arrived(&ctx, &request);
        // The request's part starter (streamed replies), on the same queue as its answer.
        let part = signed.then(|| PartStarter {
            request_id,
            tx: tx.clone(),
            account: Arc::downgrade(&account),
        });
        let (handler, ctx, tx) = (handler.clone(), ctx.clone(), tx.clone());
        while handlers.try_join_next().is_some() {}
        // Only while none of the connection's requests is still at work: with reads waiting
        // for the device in flight, answering the cached ones here left the second worker
        // idle between their completions, and waking it for each cost more than the tasks
        // (fio's 4 KiB random reads at QD32 over a half-cached image, docs/benchmarks.md
        // "Eighteenth round").
        let first_here = running.load(Ordering::Acquire) == 0;
        let running = Running::start(&running);
        let work = async move {
            let reply = handler.handle_bulk(ctx, request, bulk).await;
            drop(running);
            drop(request_charge);
            let msg = Message::Reply(reply);
            let mut reply_charge = reply_charge;
            if let Some(charge) = reply_charge.as_mut() {
                charge.resize(encoded_len(&msg));
            }
            let _ = tx.send((request_id, msg.into(), reply_charge)).await;
            drop((permit, bytes_permit));
        };
        let work = REPLY_PART.scope(part, work);
        if !first_here {
            handlers.spawn(work);
        } else if let Some(waiting) = run_until_it_waits(Box::pin(work)).await {
            handlers.spawn(waiting);
        }
    };
    // Requests of a dead connection must not take effect later: the client resends them on a
    // new connection, and a stale copy applied after the client's later writes would undo
    // them. Handlers not finished yet are cancelled at their next await point (a mutation
    // already proposed to its PG's log stays ordered before anything proposed after it).
    handlers.abort_all();
    drop(tx);
    drop(ctx);
    // The writer ends when every sender (in-flight handlers, event sinks) is gone; do not
    // wait for subscribers' sinks to drop: abort the writer once the reader has stopped.
    writer_task.abort();
    result
}

/// Polls a request's work once on the connection's reader: done there if it never waits (a
/// read answered from the page cache, an error), else handed back to become a task of its
/// own. A task per request cost its allocation, its first scheduling and, on a multi-thread
/// runtime, the wake of an idle worker to take it (a cross-CPU wake-up: ~20 µs of this VM's
/// time each way, docs/benchmarks.md "Eighteenth round"); most small reads never wait.
/// A future polled once here and again in its task re-registers its waker there: the
/// reader's task may only see one spurious wake-up.
async fn run_until_it_waits<F>(mut work: std::pin::Pin<Box<F>>) -> Option<std::pin::Pin<Box<F>>>
where
    F: Future<Output = ()>,
{
    let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(work.as_mut().poll(cx))).await;
    polled.is_pending().then_some(work)
}

/// Reads the next request: its header, then (once the budget has room for it) its body.
async fn next_request(
    reader: &mut FrameReader,
    account: &ConnAccount,
    frame_max: u32,
    limits: &quarry_types::ServerLimits,
    inflight: &Semaphore,
    per_connection: usize,
    sinks: &mut SinkFactory<'_>,
) -> Result<Next, WireError> {
    let (header_bytes, header) = loop {
        match tokio::time::timeout(limits.idle_timeout, reader.read_header()).await {
            Ok(read) => break read?,
            Err(_) => {
                let busy =
                    inflight.available_permits() < per_connection || account.queued_replies() > 0;
                if !busy {
                    return Ok(Next::Idle);
                }
            }
        }
    };
    if header.payload_len > frame_max {
        reader.skip_body(&header).await?;
        return Ok(Next::Oversized(header.request_id, header.payload_len));
    }
    // Nothing is allocated for the body before the budget admits it.
    let charge = account.charge_request(header.body_len() as u64).await;
    let (request_id, msg, bulk) = reader.read_body_to(&header_bytes, &header, sinks).await?;
    match msg {
        Message::Request(r) => Ok(Next::Request(request_id, r, charge, bulk)),
        _ => Err(WireError::UnexpectedMessage("expected Request")),
    }
}

/// Counts a handler of a served connection until its reply is made (or it is cancelled).
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(count: &Arc<AtomicUsize>) -> Running {
        count.fetch_add(1, Ordering::AcqRel);
        Running(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `work`, failed as `Stalled` if it takes longer than `stall`.
async fn bounded(
    stall: Option<Duration>,
    work: impl Future<Output = Result<(), WireError>>,
) -> Result<(), WireError> {
    match stall {
        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or(Err(WireError::Stalled)),
        None => work.await,
    }
}

/// Whether more frames may soon join a writer's flush (see [`write_loop`]).
enum More {
    /// The server's side: the connection's handlers that have not made their reply yet.
    Handlers(Arc<AtomicUsize>),
    /// The client's side: the requests waiting for their replies (the one just queued
    /// among them).
    Pending(Pending),
}

impl More {
    fn likely(&self) -> bool {
        match self {
            More::Handlers(running) => running.load(Ordering::Acquire) > 0,
            More::Pending(pending) => lock(pending).len() > 1,
        }
    }
}

/// Sends what `rx` brings, several frames per flush when they come together. While more
/// frames are likely (`more`: on a server, handlers still running; on a client, other
/// requests in flight, whose replies start the caller's next requests), the writer lets
/// the other tasks go first once before it flushes: under a deep queue the replies of one
/// apply round finish together, and each flushed on its own cost a `sendto` (with the peer's
/// loopback receive in it) per reply — 0.85 per 4 KiB write at QD32, 0.23 with the turn
/// given; the client's requests likewise, 0.90 per write (docs/benchmarks.md, "Eleventh
/// round"). At queue depth 1 nothing else is in flight and the frame goes at once.
async fn write_loop(
    mut writer: FrameWriter,
    mut rx: mpsc::Receiver<Outgoing>,
    stall: Option<Duration>,
    more: More,
) {
    while let Some((id, out, charge)) = rx.recv().await {
        if bounded(stall, writer.push_outbound(id, out)).await.is_err() {
            return;
        }
        drop(charge);
        // Coalesce whatever else is queued into the same flush.
        let mut turn_given = false;
        loop {
            while let Ok((id, out, charge)) = rx.try_recv() {
                if bounded(stall, writer.push_outbound(id, out)).await.is_err() {
                    return;
                }
                drop(charge);
            }
            if turn_given || !more.likely() {
                break;
            }
            tokio::task::yield_now().await;
            turn_given = true;
        }
        if bounded(stall, async { writer.inner.flush().await.map_err(WireError::Io) })
            .await
            .is_err()
        {
            return;
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Reply, WireError>>>>>;

/// The client side of an authenticated session: pipelined requests.
#[derive(Clone)]
pub struct RpcClient {
    tx: mpsc::Sender<Outgoing>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    /// Process-unique number of this connection.
    conn_id: u64,
}

/// Numbers connections for [`RpcClient::id`].
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// The reply of a request sent with [`RpcClient::send`].
pub struct PendingReply {
    rx: oneshot::Receiver<Result<Reply, WireError>>,
}

impl Future for PendingReply {
    type Output = Result<Reply, WireError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(WireError::Closed)))
    }
}

impl RpcClient {
    fn start(reader: FrameReader, writer: FrameWriter) -> (RpcClient, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE_MAX);
        let (event_tx, event_rx) = mpsc::channel(64);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_loop(writer, rx, None, More::Pending(pending.clone())));
        tokio::spawn(read_loop(reader, pending.clone(), event_tx, closed.clone()));
        let conn_id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
        let client =
            RpcClient { tx, pending, next_id: Arc::new(AtomicU64::new(1)), closed, conn_id };
        (client, event_rx)
    }

    /// Sends `request` and waits for its reply. `WireError::Closed` if the connection drops
    /// before the reply arrives (the request may or may not have been executed).
    pub async fn call(&self, request: Request) -> Result<Reply, WireError> {
        self.send(request).await?.await
    }

    /// Queues `request` for sending and returns its reply to await: requests queued one
    /// after the other go out on the connection in that order (what a caller that must keep
    /// an order between requests needs; [`RpcClient::call`] is `send` then await).
    pub async fn send(&self, request: Request) -> Result<PendingReply, WireError> {
        if self.is_closed() {
            return Err(WireError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        lock(&self.pending).insert(id, reply_tx);
        if self.tx.send((id, Message::Request(request).into(), None)).await.is_err() {
            lock(&self.pending).remove(&id);
            return Err(WireError::Closed);
        }
        // The reader may have failed between the check above and the insert.
        if self.is_closed() {
            if let Some(tx) = lock(&self.pending).remove(&id) {
                let _ = tx.send(Err(WireError::Closed));
            }
        }
        Ok(PendingReply { rx: reply_rx })
    }

    /// A number no other connection of this process has: tells connections apart (a request
    /// sent on a connection that was replaced since must be sent again).
    pub fn id(&self) -> u64 {
        self.conn_id
    }

    /// True once the connection is gone; make a new one.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.tx.is_closed()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn read_loop(
    mut reader: FrameReader,
    pending: Pending,
    events: mpsc::Sender<Event>,
    closed: Arc<AtomicBool>,
) {
    // Parts of requests still waiting for their answer (at most one each).
    let mut parts: HashMap<u64, quarry_types::Payload> = HashMap::new();
    let reason = loop {
        match reader.recv().await {
            Ok((id, Message::Reply(Reply::ReadPart(data)))) => {
                if lock(&pending).contains_key(&id) && parts.insert(id, data).is_some() {
                    break WireError::UnexpectedMessage("two parts for one request");
                }
            }
            Ok((id, Message::Reply(reply))) => {
                let part = parts.remove(&id);
                let reply = match (reply, part) {
                    (Reply::ReadDone, Some(data)) => {
                        let outputs = vec![quarry_types::OpOutput::Data(data)];
                        Reply::Op(quarry_types::OpReply::Ok(outputs))
                    }
                    (Reply::ReadDone, None) => {
                        if lock(&pending).contains_key(&id) {
                            break WireError::UnexpectedMessage("ReadDone without its part");
                        }
                        continue;
                    }
                    // Any other answer stands alone: the part (if any) is dropped.
                    (reply, _) => reply,
                };
                if let Some(tx) = lock(&pending).remove(&id) {
                    let _ = tx.send(Ok(reply));
                }
            }
            Ok((_, Message::Event(event))) => {
                // A slow event consumer must not stall replies: drop events if full; the
                // consumer re-fetches the map when it sees a newer epoch anyway.
                let _ = events.try_send(event);
            }
            Ok(_) => break WireError::UnexpectedMessage("expected Reply or Event"),
            Err(e) => break e,
        }
    };
    tracing::debug!(error = %reason, "connection closed");
    closed.store(true, Ordering::Release);
    let waiters: Vec<_> = lock(&pending).drain().collect();
    for (_, tx) in waiters {
        let _ = tx.send(Err(WireError::Closed));
    }
}

#[cfg(test)]
mod tests {
    //! The reader's bulk path over real loopback TCP: a large write's data lands 4 KiB-aligned
    //! and is handed to a sink piece by piece while it arrives; the sink's result comes back
    //! only for a frame whose signature verified.

    use super::*;
    use crate::codec::tests::{data_of, write_op_to};
    use crate::codec::{append_signature, encode_unsigned_part, SIGNATURE_LEN};
    use quarry_types::PgId;

    fn write_op(data: Vec<u8>) -> Message {
        write_op_to(PgId { pool: 3, seed: 5 }, "object", data)
    }

    /// Records what it is given; `finish` hands back the bulk it was told of.
    struct Recorder {
        pieces: Mutex<Vec<(usize, Vec<u8>, usize)>>,
        finished: Mutex<Option<bytes::Bytes>>,
        dropped: Arc<AtomicBool>,
    }

    impl BulkSink for Recorder {
        fn write(&self, at: usize, bytes: &[u8]) -> bool {
            let address = bytes.as_ptr() as usize;
            self.pieces.lock().unwrap().push((at, bytes.to_vec(), address));
            true
        }

        fn finish(&self, bulk: bytes::Bytes) -> Option<BulkDone> {
            *self.finished.lock().unwrap() = Some(bulk.clone());
            Some(Box::new(bulk))
        }
    }

    impl Drop for Recorder {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    /// A reader of signed frames under `key` on one end of a loopback connection, the other end.
    async fn pair(key: SessionKey) -> (FrameReader, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sender = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read, _write) = server.into_split();
        let reader = FrameReader {
            inner: BufReader::new(read),
            key: Some(key),
            next_seq: 1,
            payload_max: FRAME_PAYLOAD_MAX,
            last_body_len: 0,
            hash_aside: false,
        };
        (reader, sender)
    }

    /// Reads one frame from `reader`, offering its bulk to a new `Recorder` (kept in `sink`).
    async fn read_one(
        reader: &mut FrameReader,
        sink: &mut Option<Arc<Recorder>>,
        dropped: &Arc<AtomicBool>,
    ) -> Result<(Message, Option<BulkDone>), WireError> {
        let (header_bytes, header) = reader.read_header().await?;
        let mut sinks = |head: &[u8], len: usize| -> Option<Arc<dyn BulkSink>> {
            let want = (PgId { pool: 3, seed: 5 }, "object".to_string());
            assert_eq!(crate::codec::osd_op_head(head), Some(want));
            let recorder = Arc::new(Recorder {
                pieces: Mutex::default(),
                finished: Mutex::default(),
                dropped: dropped.clone(),
            });
            assert!(len >= BULK_STREAM_MIN);
            *sink = Some(recorder.clone());
            Some(recorder)
        };
        let (_, msg, done) = reader.read_body_to(&header_bytes, &header, &mut sinks).await?;
        Ok((msg, done))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bulk_arrives_aligned_and_goes_to_the_sink_piece_by_piece() {
        let key = [6u8; 32];
        let (mut reader, mut sender) = pair(key).await;
        let len = 4 << 20;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let msg = write_op(data.clone());
        let frame = crate::codec::encode_frame(9, 1, &msg, Some(&key)).unwrap();
        // Sent in uneven bursts, so pieces become whole at odd moments of the reads.
        let send = tokio::spawn(async move {
            for part in frame.chunks(100_003) {
                sender.write_all(part).await.unwrap();
                tokio::task::yield_now().await;
            }
            sender
        });
        let dropped = Arc::new(AtomicBool::new(false));
        let mut sink = None;
        let (got, done) = read_one(&mut reader, &mut sink, &dropped).await.unwrap();
        let _sender = send.await.unwrap();
        assert_eq!(got, msg);
        let payload = data_of(&got);
        assert_eq!(payload.as_ptr() as usize % 4096, 0, "the data is 4 KiB-aligned in memory");
        let sink = sink.expect("the bulk was offered");
        let mut pieces = sink.pieces.lock().unwrap().clone();
        pieces.sort_by_key(|(at, _, _)| *at);
        assert_eq!(pieces.len(), len / BULK_PIECE);
        for (k, (at, bytes, address)) in pieces.iter().enumerate() {
            assert_eq!(*at, k * BULK_PIECE);
            assert_eq!(bytes[..], data[*at..*at + bytes.len()], "piece at {at}");
            assert_eq!(*address, payload.as_ptr() as usize + at, "a piece is the payload's memory");
        }
        let finished = sink.finished.lock().unwrap().clone().expect("finished");
        assert_eq!((finished.as_ptr(), finished.len()), (payload.as_ptr(), payload.len()));
        let done = done.expect("the sink's result comes with the request");
        let bulk = done.downcast::<bytes::Bytes>().expect("what finish returned");
        assert_eq!(bulk.as_ptr(), payload.as_ptr());
        assert_eq!(reader.next_seq, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tampered_bulk_frame_never_finishes_its_sink() {
        let key = [6u8; 32];
        let (mut reader, mut sender) = pair(key).await;
        let msg = write_op(vec![5u8; 2 << 20]);
        let mut frame = encode_unsigned_part(9, 1, &msg, true).unwrap();
        append_signature(&mut frame, &key);
        let at = frame.len() - SIGNATURE_LEN - 1000;
        frame[at] ^= 1;
        sender.write_all(&frame).await.unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        let mut sink = None;
        let got = read_one(&mut reader, &mut sink, &dropped).await;
        assert!(matches!(got, Err(WireError::BadSignature)), "{:?}", got.map(|_| ()));
        let sink = sink.expect("the bulk was offered");
        assert!(sink.finished.lock().unwrap().is_none(), "finished with unauthenticated bytes");
        assert!(!sink.pieces.lock().unwrap().is_empty());
        drop(sink);
        assert!(dropped.load(Ordering::SeqCst), "the sink is dropped: it undoes its writes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_payloads_are_not_offered_and_still_arrive_aligned() {
        let key = [6u8; 32];
        let (mut reader, mut sender) = pair(key).await;
        let msg = write_op(vec![9u8; 256 << 10]);
        let frame = crate::codec::encode_frame(9, 1, &msg, Some(&key)).unwrap();
        sender.write_all(&frame).await.unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        let mut sink = None;
        let (got, done) = read_one(&mut reader, &mut sink, &dropped).await.unwrap();
        assert!(sink.is_none() && done.is_none(), "below BULK_STREAM_MIN: no sink");
        assert_eq!(data_of(&got).as_ptr() as usize % 4096, 0);
        assert_eq!(got, msg);
    }

    /// Goal: a client hashes a large reply's pieces on another thread while the rest
    /// arrives ([`HashAside`]) and still gets every byte, joined, of a frame whose
    /// signature verifies, and nothing of one tampered inside a piece handed aside or in
    /// the tail hashed at the end. The frames arrive in slices, with pauses between them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_replies_hashed_aside_arrive_whole_or_not_at_all() {
        let key = [8u8; 32];
        let data: Vec<u8> = (0..(3 << 20) + 12345).map(|i| (i * 31 % 251) as u8).collect();
        let msg = write_op(data);
        let frame = crate::codec::encode_frame(4, 1, &msg, Some(&key)).unwrap();
        assert!(frame.len() > HashAside::FRAME_MIN + HashAside::PIECE);
        for tamper in [None, Some(HEADER_LEN + 700_000), Some(frame.len() - SIGNATURE_LEN - 9)] {
            let (mut reader, mut sender) = pair(key).await;
            reader.hash_aside = true;
            let mut bytes = frame.clone();
            if let Some(at) = tamper {
                bytes[at] ^= 0x40;
            }
            let send = tokio::spawn(async move {
                for slice in bytes.chunks(300_000) {
                    sender.write_all(slice).await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                sender
            });
            let got = reader.recv().await;
            let _sender = send.await.unwrap();
            match tamper {
                None => {
                    let (id, got) = got.expect("an intact frame decodes");
                    assert_eq!(id, 4);
                    assert_eq!(got, msg);
                }
                Some(at) => assert!(
                    matches!(got, Err(WireError::BadSignature)),
                    "a byte changed at {at}: {:?}",
                    got.map(|_| ())
                ),
            }
        }
    }
}
