//! The server against hand-built protocol streams, over in-memory pipes, with real images on
//! an in-process cluster: the errors a well-formed but wrong request gets (EINVAL out of
//! range, EPERM on a read-only export, BLOCK_STATUS without a context, an unknown export),
//! and a fuzz of random bytes and of valid request streams with corrupted bytes: the server
//! never panics or hangs, and the export keeps serving correct data afterwards.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quarry_nbd::proto::{self, cmd, opt, rep, Request};
use quarry_nbd::{Export, Server};
use quarry_rbd::{pool, CreateOptions, Image, OpenOptions};
use quarry_testkit::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const MIB: u64 = 1 << 20;

async fn make_server(cluster: &Cluster) -> (quarry_client::Rados, Arc<Server>) {
    // openraft's benign line when a reply's receiver is gone.
    cluster.logs().allow("OneshotConsumer.tx.send: is_ok: false");
    let rados = cluster.admin().await;
    let cmd = quarry_client::MonCommand::PoolCreate {
        name: "rbd".into(),
        pg_num: Some(8),
        size: Some(1),
    };
    rados.command(cmd).await.unwrap();
    let io = rados.ioctx("rbd").await.unwrap();
    for name in ["rw", "ro"] {
        pool::create(&io, name, &CreateOptions { order: 20, ..CreateOptions::new(8 * MIB) })
            .await
            .unwrap();
    }
    let rw = Image::open(&io, "rw", OpenOptions::default()).await.unwrap();
    let ro = Image::open(&io, "ro", OpenOptions { read_only: true, ..OpenOptions::default() })
        .await
        .unwrap();
    let server = Server::new(vec![
        Export {
            name: "rw".into(),
            description: String::new(),
            image: Arc::new(rw),
            read_only: false,
        },
        Export {
            name: "ro".into(),
            description: String::new(),
            image: Arc::new(ro),
            read_only: true,
        },
    ]);
    (rados, server)
}

fn connect(server: &Arc<Server>) -> (DuplexStream, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (client, served) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(server.clone().serve_connection(served));
    (client, task)
}

fn option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut out = proto::IHAVEOPT.to_be_bytes().to_vec();
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Client flags, STRUCTURED_REPLY, optionally SET_META_CONTEXT base:allocation, GO `name`.
fn negotiation(name: &str, meta: bool) -> Vec<u8> {
    let mut out = (proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES).to_be_bytes().to_vec();
    out.extend(option(opt::STRUCTURED_REPLY, &[]));
    if meta {
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&1u32.to_be_bytes());
        data.extend_from_slice(&(proto::BASE_ALLOCATION.len() as u32).to_be_bytes());
        data.extend_from_slice(proto::BASE_ALLOCATION.as_bytes());
        out.extend(option(opt::SET_META_CONTEXT, &data));
    }
    let mut data = (name.len() as u32).to_be_bytes().to_vec();
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    out.extend(option(opt::GO, &data));
    out
}

/// Reads the server's greeting and option replies up to (and including) GO's ACK; returns
/// the option replies' types.
async fn read_negotiation(c: &mut DuplexStream) -> Vec<u32> {
    let mut hello = [0u8; 18];
    c.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello[..8], b"NBDMAGIC");
    let mut kinds = Vec::new();
    loop {
        assert_eq!(c.read_u64().await.unwrap(), proto::OPTION_REPLY_MAGIC);
        let option = c.read_u32().await.unwrap();
        let kind = c.read_u32().await.unwrap();
        let len = c.read_u32().await.unwrap();
        let mut data = vec![0u8; len as usize];
        c.read_exact(&mut data).await.unwrap();
        kinds.push(kind);
        if option == opt::GO && (kind == rep::ACK || kind >= 1 << 31) {
            return kinds;
        }
    }
}

/// Reads one structured reply chunk: (flags, type, cookie, payload).
async fn read_chunk(c: &mut DuplexStream) -> (u16, u16, u64, Vec<u8>) {
    assert_eq!(c.read_u32().await.unwrap(), proto::STRUCTURED_REPLY_MAGIC);
    let flags = c.read_u16().await.unwrap();
    let kind = c.read_u16().await.unwrap();
    let cookie = c.read_u64().await.unwrap();
    let len = c.read_u32().await.unwrap();
    let mut payload = vec![0u8; len as usize];
    c.read_exact(&mut payload).await.unwrap();
    (flags, kind, cookie, payload)
}

fn request(kind: u16, flags: u16, cookie: u64, offset: u64, length: u32) -> Vec<u8> {
    Request { flags, kind, cookie, offset, length }.encode().to_vec()
}

/// The error of a final error chunk, or 0 for success.
fn error_of(chunk: &(u16, u16, u64, Vec<u8>)) -> u32 {
    if chunk.1 == proto::chunk::ERROR {
        u32::from_be_bytes(chunk.3[..4].try_into().unwrap())
    } else {
        0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_get_the_protocols_answers() {
    let cluster = Cluster::builder().pool_default_size(1).start().await;
    let (rados, server) = make_server(&cluster).await;

    // An unknown export: ERR_UNKNOWN, and the client may go on.
    let (mut c, _task) = connect(&server);
    c.write_all(&negotiation("nosuch", false)).await.unwrap();
    let kinds = read_negotiation(&mut c).await;
    assert_eq!(kinds.last(), Some(&rep::ERR_UNKNOWN));

    let (mut c, task) = connect(&server);
    c.write_all(&negotiation("rw", true)).await.unwrap();
    let kinds = read_negotiation(&mut c).await;
    assert_eq!(kinds, [rep::ACK, rep::META_CONTEXT, rep::ACK, rep::INFO, rep::ACK]);
    // Write, read back, out of range, block status.
    let data = vec![0x5au8; 8192];
    // (Requests in flight run in any order, as NBD allows: the read goes after the write's reply.)
    let mut stream = request(cmd::WRITE, proto::cflag::FUA, 1, MIB, 8192);
    stream.extend_from_slice(&data);
    c.write_all(&stream).await.unwrap();
    let written = read_chunk(&mut c).await;
    assert_eq!((written.2, error_of(&written)), (1, 0));
    let mut stream = request(cmd::READ, 0, 2, MIB, 8192);
    stream.extend(request(cmd::READ, 0, 3, 8 * MIB - 10, 20));
    stream.extend(request(cmd::BLOCK_STATUS, 0, 4, 0, (4 * MIB) as u32));
    c.write_all(&stream).await.unwrap();
    let mut replies = std::collections::BTreeMap::new();
    replies.insert(1, written);
    for _ in 0..3 {
        let chunk = read_chunk(&mut c).await;
        replies.insert(chunk.2, chunk);
    }
    assert_eq!(error_of(&replies[&1]), 0);
    assert_eq!(replies[&2].1, proto::chunk::OFFSET_DATA);
    assert!(replies[&2].3[8..] == data[..], "read back what was written");
    assert_eq!(error_of(&replies[&3]), proto::errno::EINVAL);
    let status = &replies[&4].3;
    assert_eq!(u32::from_be_bytes(status[..4].try_into().unwrap()), proto::BASE_ALLOCATION_ID);
    let descriptors: Vec<(u32, u32)> = status[4..]
        .chunks(8)
        .map(|d| {
            (
                u32::from_be_bytes(d[..4].try_into().unwrap()),
                u32::from_be_bytes(d[4..].try_into().unwrap()),
            )
        })
        .collect();
    let hole = proto::STATE_HOLE | proto::STATE_ZERO;
    assert_eq!(descriptors, [(MIB as u32, hole), (MIB as u32, 0), (2 * MIB as u32, hole)]);
    c.write_all(&request(cmd::DISC, 0, 5, 0, 0)).await.unwrap();
    task.await.unwrap().unwrap();

    // The read-only export: EPERM for writes; no context negotiated: BLOCK_STATUS is EINVAL.
    let (mut c, _task) = connect(&server);
    c.write_all(&negotiation("ro", false)).await.unwrap();
    read_negotiation(&mut c).await;
    let mut stream = request(cmd::WRITE, 0, 7, 0, 4);
    stream.extend_from_slice(b"nope");
    stream.extend(request(cmd::TRIM, 0, 8, 0, 4096));
    stream.extend(request(cmd::BLOCK_STATUS, 0, 9, 0, 4096));
    c.write_all(&stream).await.unwrap();
    let mut errors = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let chunk = read_chunk(&mut c).await;
        errors.insert(chunk.2, error_of(&chunk));
    }
    assert_eq!(errors[&7], proto::errno::EPERM);
    assert_eq!(errors[&8], proto::errno::EPERM);
    assert_eq!(errors[&9], proto::errno::EINVAL);

    // A write larger than the server takes ends the connection.
    let (mut c, task) = connect(&server);
    c.write_all(&negotiation("rw", false)).await.unwrap();
    read_negotiation(&mut c).await;
    c.write_all(&request(cmd::WRITE, 0, 10, 0, proto::PAYLOAD_MAX + 1)).await.unwrap();
    assert!(task.await.unwrap().is_err());

    drop(server);
    rados.shutdown().await;
    cluster.shutdown().await;
}

/// xorshift, seeded per case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A valid stream of requests of every kind (some out of range), then DISC.
fn valid_requests(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for cookie in 0..(rng.next() % 12) {
        let kind = [
            cmd::READ,
            cmd::WRITE,
            cmd::FLUSH,
            cmd::TRIM,
            cmd::CACHE,
            cmd::WRITE_ZEROES,
            cmd::BLOCK_STATUS,
        ][(rng.next() % 7) as usize];
        let offset = rng.next() % (9 * MIB);
        let length = (rng.next() % (64 << 10)) as u32;
        let flags = (rng.next() % 32) as u16;
        out.extend(request(kind, flags, cookie, offset, length));
        if kind == cmd::WRITE {
            out.extend((0..length).map(|i| (i % 251) as u8));
        }
    }
    out.extend(request(cmd::DISC, 0, 99, 0, 0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_corrupted_streams_never_hurt_the_server() {
    let cluster = Cluster::builder().pool_default_size(1).start().await;
    let (rados, server) = make_server(&cluster).await;
    let cases: u64 =
        std::env::var("QUARRY_NBD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(150);
    for case in 0..cases {
        let mut rng = Rng(case.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut stream = match case % 3 {
            // Random bytes from the first byte on.
            0 => (0..rng.next() % 4096).map(|_| rng.next() as u8).collect::<Vec<u8>>(),
            // A valid negotiation and requests with a few bytes flipped somewhere.
            _ => {
                let name = if rng.next().is_multiple_of(2) { "rw" } else { "ro" };
                let mut s = negotiation(name, rng.next().is_multiple_of(2));
                s.extend(valid_requests(&mut rng));
                for _ in 0..(case % 3) * (1 + rng.next() % 4) {
                    let at = (rng.next() % s.len() as u64) as usize;
                    s[at] ^= (rng.next() % 255 + 1) as u8;
                }
                s
            }
        };
        if case.is_multiple_of(5) {
            stream.truncate((rng.next() % (stream.len() as u64 + 1)) as usize);
        }
        let (mut c, task) = connect(&server);
        let writer = tokio::spawn(async move {
            let _ = c.write_all(&stream).await;
            let _ = c.shutdown().await;
            let mut sink = Vec::new();
            let _ = c.read_to_end(&mut sink).await;
        });
        let ended = tokio::time::timeout(Duration::from_secs(30), task).await;
        let joined = ended.unwrap_or_else(|_| panic!("case {case}: the server hung"));
        assert!(joined.is_ok(), "case {case}: the server's connection task panicked");
        writer.abort();
    }
    // The export still serves correct data.
    let (mut c, _task) = connect(&server);
    c.write_all(&negotiation("rw", false)).await.unwrap();
    read_negotiation(&mut c).await;
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let mut s = request(cmd::WRITE, proto::cflag::FUA, 1, 3 * MIB, 4096);
    s.extend_from_slice(&data);
    c.write_all(&s).await.unwrap();
    assert_eq!(error_of(&read_chunk(&mut c).await), 0);
    c.write_all(&request(cmd::READ, 0, 2, 3 * MIB, 4096)).await.unwrap();
    let chunk = read_chunk(&mut c).await;
    assert!(chunk.3[8..] == data[..], "read back what was written");
    let image = &server.exports()[0].image;
    assert_eq!(image.read(3 * MIB, 4096).await.unwrap(), Bytes::from(data));
    drop(c);
    drop(server);
    rados.shutdown().await;
    cluster.shutdown().await;
}
