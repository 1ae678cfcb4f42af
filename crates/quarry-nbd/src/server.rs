//! The NBD server: the fixed-newstyle negotiation (`NBD_OPT_EXPORT_NAME`, `INFO`, `GO`,
//! `LIST`, `ABORT`, `STRUCTURED_REPLY`, `LIST_META_CONTEXT`, `SET_META_CONTEXT`) and the
//! transmission phase, where requests run concurrently (up to [`IN_FLIGHT_MAX`] per
//! connection) against the export's [`Image`] and their replies go out through one writer.
//!
//! Every export is one open image shared by all its connections, so a flush on any
//! connection covers the writes of all of them (`NBD_FLAG_CAN_MULTI_CONN` is true). A reply
//! to `NBD_CMD_FLUSH` or to a request with `NBD_CMD_FLAG_FUA` is sent after `Image::flush`
//! returned: the data is durable in the cluster, whatever the image's cache mode.
//!
//! A client breaking the protocol (bad magic, unknown handshake flags, an option or a write
//! larger than the server accepts) is disconnected; a well-formed request the export cannot
//! serve gets the protocol's error (EINVAL out of range, EPERM on a read-only export,
//! ENOTSUP for a fast zero that would be slow, the image's error otherwise). Nothing a
//! client sends can panic the server or touch another export.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use quarry_rbd::Image;
use quarry_types::ErrorCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use crate::proto::{self, cflag, chunk, cmd, errno, info, opt, rep, tflag, Fields, Request};

/// Requests one connection may have in flight (more wait to be read).
pub const IN_FLIGHT_MAX: usize = 64;

/// One image served under a name.
pub struct Export {
    /// The name clients ask for (`nbd://HOST:PORT/NAME`).
    pub name: String,
    /// What `NBD_INFO_DESCRIPTION` says.
    pub description: String,
    /// The open image (a snapshot open is read-only).
    pub image: Arc<Image>,
    /// Refuse writes (EPERM) and advertise `NBD_FLAG_READ_ONLY`.
    pub read_only: bool,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("name", &self.name)
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// What negotiation settled for the transmission phase.
struct Session {
    export: Arc<Export>,
    structured: bool,
    base_allocation: bool,
}

/// A server of a fixed set of exports.
#[derive(Debug)]
pub struct Server {
    exports: Vec<Arc<Export>>,
}

impl Server {
    /// A server of `exports` (the first is the default one, asked for by the empty name).
    pub fn new(exports: Vec<Export>) -> Arc<Server> {
        Arc::new(Server { exports: exports.into_iter().map(Arc::new).collect() })
    }

    /// The exports.
    pub fn exports(&self) -> &[Arc<Export>] {
        &self.exports
    }

    fn find(&self, name: &str) -> Option<Arc<Export>> {
        if name.is_empty() {
            return self.exports.first().cloned();
        }
        self.exports.iter().find(|e| e.name == name).cloned()
    }

    /// Accepts TCP connections forever, one task each.
    pub async fn serve_tcp(self: Arc<Self>, listener: tokio::net::TcpListener) -> io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let server = self.clone();
            tokio::spawn(async move {
                if let Err(error) = server.serve_connection(stream).await {
                    tracing::debug!(%peer, %error, "nbd connection ended");
                }
            });
        }
    }

    /// Accepts Unix-socket connections forever, one task each.
    pub async fn serve_unix(self: Arc<Self>, listener: tokio::net::UnixListener) -> io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let server = self.clone();
            tokio::spawn(async move {
                if let Err(error) = server.serve_connection(stream).await {
                    tracing::debug!(%error, "nbd connection ended");
                }
            });
        }
    }

    /// Serves one connection: negotiation, then transmission until the client disconnects.
    /// An error is the connection's end (a client gone or breaking the protocol).
    pub async fn serve_connection<S>(self: Arc<Self>, mut stream: S) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(session) = self.negotiate(&mut stream).await? else {
            return Ok(());
        };
        transmit(stream, session).await
    }

    /// The handshake and option haggling; None when the client aborted or must be dropped.
    async fn negotiate<S>(&self, s: &mut S) -> io::Result<Option<Session>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut hello = Vec::with_capacity(18);
        hello.extend_from_slice(&proto::NBD_MAGIC.to_be_bytes());
        hello.extend_from_slice(&proto::IHAVEOPT.to_be_bytes());
        hello
            .extend_from_slice(&(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES).to_be_bytes());
        s.write_all(&hello).await?;
        s.flush().await?;
        let client_flags = s.read_u32().await?;
        if client_flags & !(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES) != 0 {
            return Ok(None);
        }
        let no_zeroes = client_flags & proto::FLAG_C_NO_ZEROES != 0;
        let mut structured = false;
        // The export `SET_META_CONTEXT` selected base:allocation for, if any.
        let mut meta_for: Option<String> = None;
        loop {
            if s.read_u64().await? != proto::IHAVEOPT {
                return Ok(None);
            }
            let option = s.read_u32().await?;
            let len = s.read_u32().await?;
            if len > proto::OPTION_LEN_MAX {
                return Ok(None);
            }
            let mut data = vec![0u8; len as usize];
            s.read_exact(&mut data).await?;
            let mut out = Vec::new();
            match option {
                opt::EXPORT_NAME => {
                    let Ok(name) = String::from_utf8(data) else { return Ok(None) };
                    let Some(export) = self.find(&name) else { return Ok(None) };
                    let size = export.image.size().await;
                    out.extend_from_slice(&size.to_be_bytes());
                    out.extend_from_slice(&transmission_flags(&export, structured).to_be_bytes());
                    if !no_zeroes {
                        out.extend_from_slice(&[0u8; 124]);
                    }
                    s.write_all(&out).await?;
                    s.flush().await?;
                    let base_allocation = meta_for.as_deref() == Some(export.name.as_str());
                    return Ok(Some(Session { export, structured, base_allocation }));
                }
                opt::ABORT => {
                    let _ = s.write_all(&proto::option_reply(option, rep::ACK, &[])).await;
                    let _ = s.flush().await;
                    return Ok(None);
                }
                opt::LIST => {
                    if !data.is_empty() {
                        out = proto::option_reply(option, rep::ERR_INVALID, b"LIST takes no data");
                    } else {
                        for export in &self.exports {
                            let mut entry = (export.name.len() as u32).to_be_bytes().to_vec();
                            entry.extend_from_slice(export.name.as_bytes());
                            out.extend(proto::option_reply(option, rep::SERVER, &entry));
                        }
                        out.extend(proto::option_reply(option, rep::ACK, &[]));
                    }
                }
                opt::INFO | opt::GO => match parse_info_request(&data) {
                    None => {
                        out = proto::option_reply(option, rep::ERR_INVALID, b"malformed request")
                    }
                    Some((name, wanted)) => match self.find(&name) {
                        None => {
                            out = proto::option_reply(option, rep::ERR_UNKNOWN, b"no such export")
                        }
                        Some(export) => {
                            out = info_replies(option, &export, structured, &wanted).await;
                            if option == opt::GO {
                                s.write_all(&out).await?;
                                s.flush().await?;
                                let base_allocation =
                                    meta_for.as_deref() == Some(export.name.as_str());
                                return Ok(Some(Session { export, structured, base_allocation }));
                            }
                        }
                    },
                },
                opt::STRUCTURED_REPLY => {
                    if data.is_empty() {
                        structured = true;
                        out = proto::option_reply(option, rep::ACK, &[]);
                    } else {
                        out = proto::option_reply(option, rep::ERR_INVALID, b"takes no data");
                    }
                }
                opt::LIST_META_CONTEXT | opt::SET_META_CONTEXT => {
                    out = match parse_meta_request(&data) {
                        None => proto::option_reply(option, rep::ERR_INVALID, b"malformed request"),
                        Some(_) if !structured => proto::option_reply(
                            option,
                            rep::ERR_INVALID,
                            b"negotiate structured replies first",
                        ),
                        Some((name, queries)) => match self.find(&name) {
                            None => {
                                proto::option_reply(option, rep::ERR_UNKNOWN, b"no such export")
                            }
                            Some(export) => {
                                let matched = if option == opt::SET_META_CONTEXT {
                                    queries.iter().any(|q| q == proto::BASE_ALLOCATION)
                                } else {
                                    queries.is_empty()
                                        || queries
                                            .iter()
                                            .any(|q| q == "base:" || q == proto::BASE_ALLOCATION)
                                };
                                let mut replies = Vec::new();
                                if matched {
                                    let id = if option == opt::SET_META_CONTEXT {
                                        proto::BASE_ALLOCATION_ID
                                    } else {
                                        0
                                    };
                                    let mut body = id.to_be_bytes().to_vec();
                                    body.extend_from_slice(proto::BASE_ALLOCATION.as_bytes());
                                    replies.extend(proto::option_reply(
                                        option,
                                        rep::META_CONTEXT,
                                        &body,
                                    ));
                                }
                                if option == opt::SET_META_CONTEXT {
                                    meta_for = matched.then(|| export.name.clone());
                                }
                                replies.extend(proto::option_reply(option, rep::ACK, &[]));
                                replies
                            }
                        },
                    };
                }
                _ => out = proto::option_reply(option, rep::ERR_UNSUP, b"option not supported"),
            }
            s.write_all(&out).await?;
            s.flush().await?;
        }
    }
}

/// `NBD_OPT_INFO`/`GO` data: the export name and the information items asked for.
fn parse_info_request(data: &[u8]) -> Option<(String, Vec<u16>)> {
    let mut f = Fields::new(data);
    let len = f.u32()?;
    let name = f.string(len)?;
    let count = f.u16()?;
    let wanted = (0..count).map(|_| f.u16()).collect::<Option<Vec<u16>>>()?;
    f.is_empty().then_some((name, wanted))
}

/// `NBD_OPT_*_META_CONTEXT` data: the export name and the queries.
fn parse_meta_request(data: &[u8]) -> Option<(String, Vec<String>)> {
    let mut f = Fields::new(data);
    let len = f.u32()?;
    let name = f.string(len)?;
    let count = f.u32()?;
    let mut queries = Vec::new();
    for _ in 0..count {
        let len = f.u32()?;
        queries.push(f.string(len)?);
    }
    f.is_empty().then_some((name, queries))
}

/// The `NBD_REP_INFO` replies (export always; name, description and block sizes when
/// asked) and the final ACK.
async fn info_replies(option: u32, export: &Export, structured: bool, wanted: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = info::EXPORT.to_be_bytes().to_vec();
    body.extend_from_slice(&export.image.size().await.to_be_bytes());
    body.extend_from_slice(&transmission_flags(export, structured).to_be_bytes());
    out.extend(proto::option_reply(option, rep::INFO, &body));
    for &item in wanted {
        let mut body = item.to_be_bytes().to_vec();
        match item {
            info::NAME => body.extend_from_slice(export.name.as_bytes()),
            info::DESCRIPTION => body.extend_from_slice(export.description.as_bytes()),
            info::BLOCK_SIZE => {
                body.extend_from_slice(&1u32.to_be_bytes());
                body.extend_from_slice(&proto::PREFERRED_BLOCK.to_be_bytes());
                body.extend_from_slice(&proto::PAYLOAD_MAX.to_be_bytes());
            }
            _ => continue,
        }
        out.extend(proto::option_reply(option, rep::INFO, &body));
    }
    out.extend(proto::option_reply(option, rep::ACK, &[]));
    out
}

fn transmission_flags(export: &Export, structured: bool) -> u16 {
    let mut flags = tflag::HAS_FLAGS
        | tflag::SEND_FLUSH
        | tflag::SEND_FUA
        | tflag::SEND_CACHE
        | tflag::CAN_MULTI_CONN;
    if export.read_only {
        flags |= tflag::READ_ONLY;
    } else {
        flags |= tflag::SEND_TRIM | tflag::SEND_WRITE_ZEROES | tflag::SEND_FAST_ZERO;
    }
    if structured {
        flags |= tflag::SEND_DF;
    }
    flags
}

/// The transmission phase: reads requests, runs each in its own task (bounded), writes
/// replies through one writer task; ends at `NBD_CMD_DISC` (after the requests in flight
/// are answered), at EOF, or at a protocol violation.
async fn transmit<S>(stream: S, session: Session) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (replies, mut outbox) = mpsc::channel::<Vec<u8>>(IN_FLIGHT_MAX);
    let writing = tokio::spawn(async move {
        while let Some(reply) = outbox.recv().await {
            writer.write_all(&reply).await?;
            if outbox.is_empty() {
                writer.flush().await?;
            }
        }
        writer.flush().await?;
        writer.shutdown().await
    });
    let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let session = Arc::new(session);
    let ended = loop {
        let mut header = [0u8; proto::REQUEST_LEN];
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
        }
        let Some(request) = Request::decode(&header) else {
            break Err(io::Error::new(io::ErrorKind::InvalidData, "bad request magic"));
        };
        if request.kind == cmd::DISC {
            break Ok(());
        }
        let mut data = Bytes::new();
        if request.kind == cmd::WRITE {
            if request.length > proto::PAYLOAD_MAX {
                break Err(io::Error::new(io::ErrorKind::InvalidData, "write too large"));
            }
            let mut buf = vec![0u8; request.length as usize];
            if let Err(e) = reader.read_exact(&mut buf).await {
                break Err(e);
            }
            data = Bytes::from(buf);
        }
        let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (session, replies) = (session.clone(), replies.clone());
        tokio::spawn(async move {
            let reply = handle(&session, request, data).await;
            let _ = replies.send(reply).await;
            drop(slot);
        });
    };
    // Answer what is in flight, then close.
    let _all = slots.acquire_many(IN_FLIGHT_MAX as u32).await;
    drop(replies);
    let written = writing.await.unwrap_or_else(|e| Err(io::Error::other(e)));
    ended.and(
        written.or_else(|e| if e.kind() == io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e) }),
    )
}

/// The reply bytes of one request.
async fn handle(session: &Session, request: Request, data: Bytes) -> Vec<u8> {
    let structured = session.structured;
    match run(session, &request, data).await {
        Ok(Outcome::Done) => done(structured, request.cookie),
        Ok(Outcome::Data(bytes)) => {
            if structured {
                if bytes.is_empty() {
                    return done(true, request.cookie);
                }
                let mut out = Vec::with_capacity(28 + bytes.len());
                let len = 8 + bytes.len() as u32;
                out.extend_from_slice(&proto::chunk_header(
                    chunk::FLAG_DONE,
                    chunk::OFFSET_DATA,
                    request.cookie,
                    len,
                ));
                out.extend_from_slice(&request.offset.to_be_bytes());
                out.extend_from_slice(&bytes);
                out
            } else {
                let mut out = Vec::with_capacity(16 + bytes.len());
                out.extend_from_slice(&proto::simple_reply(0, request.cookie));
                out.extend_from_slice(&bytes);
                out
            }
        }
        Ok(Outcome::Status(payload)) => {
            let mut out = Vec::with_capacity(20 + payload.len());
            out.extend_from_slice(&proto::chunk_header(
                chunk::FLAG_DONE,
                chunk::BLOCK_STATUS,
                request.cookie,
                payload.len() as u32,
            ));
            out.extend_from_slice(&payload);
            out
        }
        Err((error, message)) => {
            tracing::debug!(cookie = request.cookie, kind = request.kind, error, %message, "nbd request failed");
            if structured {
                proto::error_chunk(request.cookie, error, &message)
            } else {
                proto::simple_reply(error, request.cookie).to_vec()
            }
        }
    }
}

fn done(structured: bool, cookie: u64) -> Vec<u8> {
    if structured {
        proto::chunk_header(chunk::FLAG_DONE, chunk::NONE, cookie, 0).to_vec()
    } else {
        proto::simple_reply(0, cookie).to_vec()
    }
}

/// What a request produced.
enum Outcome {
    Done,
    Data(Bytes),
    Status(Vec<u8>),
}

type Failure = (u32, String);

fn failure(error: u32, message: impl Into<String>) -> Failure {
    (error, message.into())
}

/// The NBD error of an image error.
fn nbd_error(e: &quarry_rbd::RbdError) -> Failure {
    let code = e.errno();
    let error = match code {
        ErrorCode::EPERM | ErrorCode::EACCES | ErrorCode::EROFS => errno::EPERM,
        ErrorCode::EINVAL => errno::EINVAL,
        ErrorCode::ENOSPC | ErrorCode::EDQUOT => errno::ENOSPC,
        ErrorCode::EMSGSIZE | ErrorCode::EFBIG => errno::EOVERFLOW,
        ErrorCode::EOPNOTSUPP => errno::ENOTSUP,
        ErrorCode::ESHUTDOWN => errno::ESHUTDOWN,
        _ => errno::EIO,
    };
    (error, e.to_string())
}

async fn run(session: &Session, request: &Request, data: Bytes) -> Result<Outcome, Failure> {
    let export = &session.export;
    let image = &export.image;
    let (off, len) = (request.offset, u64::from(request.length));
    let size = image.size().await;
    let in_range = off.checked_add(len).is_some_and(|end| end <= size);
    let writes = matches!(request.kind, cmd::WRITE | cmd::TRIM | cmd::WRITE_ZEROES);
    if writes && export.read_only {
        return Err(failure(errno::EPERM, "the export is read-only"));
    }
    let known = [
        cmd::READ,
        cmd::WRITE,
        cmd::FLUSH,
        cmd::TRIM,
        cmd::CACHE,
        cmd::WRITE_ZEROES,
        cmd::BLOCK_STATUS,
    ];
    if !known.contains(&request.kind) {
        return Err(failure(errno::EINVAL, format!("unknown command {}", request.kind)));
    }
    if request.kind != cmd::FLUSH && !in_range {
        return Err(failure(
            errno::EINVAL,
            format!("{off}+{len} is beyond the export's {size} bytes"),
        ));
    }
    let fua = request.flags & cflag::FUA != 0;
    match request.kind {
        cmd::READ => {
            if request.length > proto::PAYLOAD_MAX {
                return Err(failure(errno::EOVERFLOW, "read larger than the maximum block size"));
            }
            if len == 0 {
                return Ok(Outcome::Data(Bytes::new()));
            }
            image.read(off, len).await.map(Outcome::Data).map_err(|e| nbd_error(&e))
        }
        cmd::WRITE => {
            if !data.is_empty() {
                image.write(off, data).await.map_err(|e| nbd_error(&e))?;
            }
            flush_if(image, fua).await
        }
        cmd::FLUSH => flush_if(image, true).await,
        cmd::TRIM => {
            if len > 0 {
                image.discard(off, len).await.map_err(|e| nbd_error(&e))?;
            }
            flush_if(image, fua).await
        }
        cmd::WRITE_ZEROES => {
            if request.flags & cflag::NO_HOLE != 0 {
                if request.flags & cflag::FAST_ZERO != 0 {
                    return Err(failure(errno::ENOTSUP, "zeros without holes are not fast"));
                }
                image.write_zero_bytes(off, len, |_, _| {}).await.map_err(|e| nbd_error(&e))?;
            } else if len > 0 {
                image.write_zeroes(off, len).await.map_err(|e| nbd_error(&e))?;
            }
            flush_if(image, fua).await
        }
        cmd::CACHE => Ok(Outcome::Done),
        cmd::BLOCK_STATUS => {
            if !session.base_allocation {
                return Err(failure(errno::EINVAL, "no metadata context was negotiated"));
            }
            block_status(image, off, len, request.flags & cflag::REQ_ONE != 0).await
        }
        _ => unreachable!("checked above"),
    }
}

async fn flush_if(image: &Image, wanted: bool) -> Result<Outcome, Failure> {
    if wanted {
        image.flush().await.map_err(|e| nbd_error(&e))?;
    }
    Ok(Outcome::Done)
}

/// `base:allocation` descriptors of `[off, off + len)` from the image's allocation (the
/// object map when it has one): objects with data (here or in a parent) are 0, the rest
/// `HOLE | ZERO`.
async fn block_status(image: &Image, off: u64, len: u64, one: bool) -> Result<Outcome, Failure> {
    let mut data = Vec::new();
    if len > 0 {
        image
            .diff_iterate(None, off, len, true, |at, n, exists| {
                if exists {
                    data.push((at, n));
                }
                0
            })
            .await
            .map_err(|e| nbd_error(&e))?;
    }
    let mut descriptors: Vec<(u64, u32)> = Vec::new();
    let mut push = |n: u64, flags: u32| {
        if n == 0 {
            return;
        }
        match descriptors.last_mut() {
            Some((last, f)) if *f == flags => *last += n,
            _ => descriptors.push((n, flags)),
        }
    };
    let mut at = off;
    for (start, n) in data {
        push(start.saturating_sub(at), proto::STATE_HOLE | proto::STATE_ZERO);
        push(n, 0);
        at = start + n;
    }
    push((off + len).saturating_sub(at), proto::STATE_HOLE | proto::STATE_ZERO);
    if descriptors.is_empty() {
        // A zero-length query still gets one descriptor (of the smallest length allowed).
        descriptors.push((1, proto::STATE_HOLE | proto::STATE_ZERO));
    }
    if one {
        descriptors.truncate(1);
    }
    let mut payload = proto::BASE_ALLOCATION_ID.to_be_bytes().to_vec();
    for (n, flags) in descriptors {
        // Within one request (a u32 length) every descriptor fits in 32 bits.
        payload.extend_from_slice(&(n.min(u64::from(u32::MAX)) as u32).to_be_bytes());
        payload.extend_from_slice(&flags.to_be_bytes());
    }
    Ok(Outcome::Status(payload))
}
