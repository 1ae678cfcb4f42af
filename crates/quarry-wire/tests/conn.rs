//! Handshake and session tests over real loopback TCP: a toy server that knows one key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use quarry_types::{EntityName, ErrorCode};
use quarry_wire::codec::{encode_frame, HEADER_LEN};
use quarry_wire::{
    accept, connect, serve, Authenticator, ClientSecret, ConnContext, Handler, Hello, Message,
    Refused, Reply, Request, Service, WireError,
};

const KEY: &[u8] = b"0123456789abcdef";
const T: Duration = Duration::from_secs(5);

struct OneKey;
impl Authenticator for OneKey {
    type Session = EntityName;
    fn secret_for(&self, hello: &Hello) -> Result<(Vec<u8>, EntityName), Refused> {
        if hello.entity == EntityName::client("admin") {
            Ok((KEY.to_vec(), hello.entity.clone()))
        } else {
            Err(Refused { code: ErrorCode::EACCES, reason: "unknown entity".into() })
        }
    }
    fn accepted(&self, _: &EntityName) -> u64 {
        42
    }
    fn rejected(&self, _: &Hello, _: SocketAddr, _: &str) {}
}

struct Echo;
impl Handler<EntityName> for Echo {
    async fn handle(&self, _ctx: Arc<ConnContext<EntityName>>, request: Request) -> Reply {
        match request {
            Request::GetMap => Reply::Ack,
            Request::List { max, .. } => {
                tokio::time::sleep(Duration::from_millis(u64::from(max))).await;
                Reply::List { names: vec![max.to_string()], more: false }
            }
            _ => Reply::Failed { code: ErrorCode::EINVAL, message: "unsupported".into() },
        }
    }
}

async fn server() -> SocketAddr {
    server_with(Arc::new(Echo)).await
}

/// A server on a free loopback port that authenticates with `OneKey` and serves `handler`.
async fn server_with<H: Handler<EntityName>>(handler: Arc<H>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                if let Ok(acc) = accept(stream, &OneKey, T).await {
                    let _ = serve(acc, handler).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn authenticated_pipelined_session() {
    let addr = server().await;
    let c = connect(
        addr,
        &EntityName::client("admin"),
        Service::Mon,
        &ClientSecret::EntityKey(KEY.to_vec()),
        T,
    )
    .await
    .unwrap();
    assert_eq!(c.global_id, 42);
    assert_eq!(c.client.call(Request::GetMap).await.unwrap(), Reply::Ack);
    // Pipelining: the slow request (2 s) does not hold back the fast ones.
    let slow = {
        let client = c.client.clone();
        tokio::spawn(async move {
            client
                .call(Request::List {
                    pg: quarry_types::PgId { pool: 1, seed: 0 },
                    epoch: 0,
                    start_after: None,
                    max: 2000,
                })
                .await
        })
    };
    let started = std::time::Instant::now();
    for max in 0..50u32 {
        let r = c
            .client
            .call(Request::List {
                pg: quarry_types::PgId { pool: 1, seed: 0 },
                epoch: 0,
                start_after: None,
                max: max % 3,
            })
            .await
            .unwrap();
        assert_eq!(r, Reply::List { names: vec![(max % 3).to_string()], more: false });
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "fast requests waited for the slow one"
    );
    assert!(matches!(slow.await.unwrap().unwrap(), Reply::List { .. }));
}

#[tokio::test]
async fn wrong_key_and_unknown_entity_are_refused_quickly() {
    let addr = server().await;
    let bad = connect(
        addr,
        &EntityName::client("admin"),
        Service::Mon,
        &ClientSecret::EntityKey(b"wrong key 123456".to_vec()),
        T,
    )
    .await;
    let Err(WireError::Refused(ErrorCode::EACCES, bad)) = bad else {
        panic!("{:?}", bad.err());
    };
    assert_eq!(bad, quarry_wire::AUTH_DENIED_REASON);
    let unknown = connect(
        addr,
        &EntityName::client("eve"),
        Service::Mon,
        &ClientSecret::EntityKey(KEY.to_vec()),
        T,
    )
    .await;
    // The same answer: the reason the authenticator gave stays on the server.
    let Err(WireError::Refused(ErrorCode::EACCES, unknown)) = unknown else {
        panic!("{:?}", unknown.err());
    };
    assert_eq!(unknown, bad);
}

#[tokio::test]
async fn garbage_closes_one_connection_and_the_server_keeps_serving() {
    let addr = server().await;
    for garbage in [vec![0u8; 3], b"GET / HTTP/1.1\r\n\r\n".to_vec(), vec![0xff; 4096]] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&garbage).await.unwrap();
        let _ = s.shutdown().await;
        let mut buf = Vec::new();
        // The server closes: read returns (EOF or reset) instead of hanging.
        let _ = tokio::time::timeout(T, s.read_to_end(&mut buf)).await.expect("server must close");
    }
    // A valid header announcing a huge payload before authentication.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut frame = encode_frame(0, 0, &Message::Request(Request::GetMap), None).unwrap();
    frame[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    s.write_all(&frame[..HEADER_LEN]).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut buf)).await.expect("server must close");
    let c = connect(
        addr,
        &EntityName::client("admin"),
        Service::Mon,
        &ClientSecret::EntityKey(KEY.to_vec()),
        T,
    )
    .await
    .unwrap();
    assert_eq!(c.client.call(Request::GetMap).await.unwrap(), Reply::Ack);
}

#[tokio::test]
async fn stalled_handshake_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let (_s, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let r = connect(
        addr,
        &EntityName::client("admin"),
        Service::Mon,
        &ClientSecret::EntityKey(KEY.to_vec()),
        Duration::from_millis(300),
    )
    .await;
    assert!(matches!(r, Err(WireError::Timeout)));
}

#[tokio::test]
async fn unsigned_frames_are_refused_by_a_signing_server() {
    // A client that (wrongly) sends unsigned frames after the handshake is cut off: this is
    // what the signing switch guards against, and why it is not a configuration option.
    let addr = server().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let hello = Hello {
        protocol: quarry_wire::PROTOCOL_VERSION,
        service: Service::Mon,
        entity: EntityName::client("admin"),
        client_nonce: [1; 16],
        ticket: None,
    };
    s.write_all(&encode_frame(0, 0, &Message::Hello(hello), None).unwrap()).await.unwrap();
    let mut header = [0u8; HEADER_LEN];
    s.read_exact(&mut header).await.unwrap();
    let h = quarry_wire::codec::decode_header(&header, 1 << 16).unwrap();
    let mut body = vec![0u8; h.body_len()];
    s.read_exact(&mut body).await.unwrap();
    let Message::Challenge(ch) =
        quarry_wire::codec::decode_body(&header, &h, &body, None, 0).unwrap()
    else {
        panic!("expected a challenge")
    };
    let proof =
        quarry_auth::client_proof(KEY, &EntityName::client("admin"), &[1; 16], &ch.server_nonce);
    s.write_all(&encode_frame(0, 0, &Message::Proof(quarry_wire::Proof { proof }), None).unwrap())
        .await
        .unwrap();
    s.read_exact(&mut header).await.unwrap();
    let h = quarry_wire::codec::decode_header(&header, 1 << 16).unwrap();
    let mut body = vec![0u8; h.body_len()];
    s.read_exact(&mut body).await.unwrap();
    assert!(matches!(
        quarry_wire::codec::decode_body(&header, &h, &body, None, 0).unwrap(),
        Message::Welcome(_)
    ));
    // Authenticated, but now an unsigned request: the server must close without answering.
    s.write_all(&encode_frame(1, 1, &Message::Request(Request::GetMap), None).unwrap())
        .await
        .unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(T, s.read_to_end(&mut rest)).await.expect("server must close");
    assert!(
        n.is_err() || rest.is_empty(),
        "server answered an unsigned frame: {} bytes",
        rest.len()
    );
}

/// A request still running when its connection dies is cancelled: it must not take effect
/// after the client has given up on it (the client resends on a new connection).
#[tokio::test]
async fn requests_of_a_closed_connection_are_cancelled() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static FINISHED: AtomicUsize = AtomicUsize::new(0);
    struct Slow;
    impl Handler<EntityName> for Slow {
        async fn handle(&self, _ctx: Arc<ConnContext<EntityName>>, _request: Request) -> Reply {
            tokio::time::sleep(Duration::from_millis(600)).await;
            FINISHED.fetch_add(1, Ordering::SeqCst);
            Reply::Ack
        }
    }
    let addr = server_with(Arc::new(Slow)).await;
    let secret = ClientSecret::EntityKey(KEY.to_vec());
    // Control: on a live connection the slow request completes.
    let c = connect(addr, &EntityName::client("admin"), Service::Mon, &secret, T).await.unwrap();
    assert_eq!(c.client.call(Request::GetMap).await.unwrap(), Reply::Ack);
    assert_eq!(FINISHED.load(Ordering::SeqCst), 1);
    // Now send and drop the connection before the handler finishes.
    let c = connect(addr, &EntityName::client("admin"), Service::Mon, &secret, T).await.unwrap();
    let pending = {
        let client = c.client.clone();
        tokio::spawn(async move { client.call(Request::GetMap).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    pending.abort();
    drop(c);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        FINISHED.load(Ordering::SeqCst),
        1,
        "a request of a closed connection ran to completion"
    );
}

/// A peer cannot make a server hold more than `INFLIGHT_BYTES_MAX` of request bodies: with
/// three 100 MiB requests whose handlers never finish, only two are dispatched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_request_bytes_are_bounded_per_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    struct Stuck;
    impl Handler<EntityName> for Stuck {
        async fn handle(&self, _ctx: Arc<ConnContext<EntityName>>, _request: Request) -> Reply {
            STARTED.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Reply::Ack
        }
    }
    let addr = server_with(Arc::new(Stuck)).await;
    let c = connect(
        addr,
        &EntityName::client("admin"),
        Service::Osd,
        &ClientSecret::EntityKey(KEY.to_vec()),
        T,
    )
    .await
    .unwrap();
    const { assert!(3 * (100 << 20) > quarry_wire::conn::INFLIGHT_BYTES_MAX) };
    for i in 0..3u8 {
        let client = c.client.clone();
        tokio::spawn(async move {
            let op = quarry_wire::OsdOp {
                reqid: None,
                pg: quarry_types::PgId { pool: 1, seed: 0 },
                epoch: 1,
                name: format!("big{i}"),
                snapc: quarry_types::SnapContext::default(),
                snap: quarry_types::SNAP_HEAD,
                ops: vec![quarry_types::ObjectOp::WriteFull {
                    data: quarry_types::Payload::new(vec![i; 100 << 20]),
                }],
            };
            let _ = client.call(Request::Op(op)).await;
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while STARTED.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first two requests were not dispatched"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(STARTED.load(Ordering::SeqCst), 2, "a third 100 MiB request was dispatched");
}

/// A server like `server_with` whose sessions draw from `budget` (`accept_limited`).
async fn limited_server(budget: Arc<quarry_wire::limits::Budget>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            match budget.try_connection() {
                Ok(slot) => {
                    tokio::spawn(async move {
                        if let Ok(acc) = quarry_wire::accept_limited(stream, &OneKey, slot).await {
                            let _ = serve(acc, Arc::new(Echo)).await;
                        }
                    });
                }
                Err(r) => {
                    tokio::spawn(quarry_wire::refuse(stream, r.code, r.reason));
                }
            }
        }
    });
    addr
}

fn small_limits() -> quarry_types::ServerLimits {
    quarry_types::ServerLimits {
        max_connections: 2,
        client_request_bytes: 1 << 20,
        idle_timeout: Duration::from_millis(800),
        ..quarry_types::ServerLimits::defaults(quarry_types::DaemonKind::Mon)
    }
}

async fn admin(addr: SocketAddr) -> Result<quarry_wire::Connected, WireError> {
    let secret = ClientSecret::EntityKey(KEY.to_vec());
    connect(addr, &EntityName::client("admin"), Service::Mon, &secret, T).await
}

/// A request frame larger than the budget gets EMSGSIZE without being stored, and the
/// session goes on; a connection beyond `ms_max_connections` is told EAGAIN.
#[tokio::test]
async fn oversized_requests_get_emsgsize_and_extra_connections_eagain() {
    let budget = quarry_wire::limits::Budget::new("mon.test", small_limits(), 0);
    let addr = limited_server(budget.clone()).await;
    let c = admin(addr).await.unwrap();
    let op = quarry_wire::OsdOp {
        reqid: None,
        pg: quarry_types::PgId { pool: 1, seed: 0 },
        epoch: 1,
        name: "big".into(),
        snapc: quarry_types::SnapContext::default(),
        snap: quarry_types::SNAP_HEAD,
        ops: vec![quarry_types::ObjectOp::WriteFull {
            data: quarry_types::Payload::new(vec![1; 2 << 20]),
        }],
    };
    match c.client.call(Request::Op(op)).await.unwrap() {
        Reply::Failed { code, message } => {
            assert_eq!(code, ErrorCode::EMSGSIZE, "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.client.call(Request::GetMap).await.unwrap(), Reply::Ack, "the session goes on");
    assert_eq!(budget.usage(), (0, 0, 0), "nothing held once answered");
    let _second = admin(addr).await.unwrap();
    match admin(addr).await {
        Err(WireError::Refused(code, reason)) => {
            assert_eq!(code, ErrorCode::EAGAIN);
            assert!(reason.contains("too many connections"), "{reason}");
        }
        other => panic!("a third connection was not refused: {:?}", other.map(|_| ())),
    }
}

/// An authenticated session that sends nothing for the idle timeout is closed; one that
/// keeps sending is not.
#[tokio::test]
async fn idle_sessions_are_closed() {
    let budget = quarry_wire::limits::Budget::new("mon.test", small_limits(), 0);
    let addr = limited_server(budget).await;
    let idle = admin(addr).await.unwrap();
    let busy = admin(addr).await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(busy.client.call(Request::GetMap).await.unwrap(), Reply::Ack);
    }
    assert!(idle.client.is_closed(), "an idle session was kept past the timeout");
    assert!(!busy.client.is_closed());
}

/// A request whose handler never waits is answered on the connection's reader (no task of
/// its own: `Handler::arrived` and `Handler::handle` see the same task); one that waits goes
/// on in a task of its own and is answered from there, while the reader goes on reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_never_wait_are_answered_on_the_reader() {
    use std::sync::Mutex;
    #[derive(Default)]
    struct Where {
        arrived: Mutex<Vec<tokio::task::Id>>,
        handled: Mutex<Vec<(tokio::task::Id, tokio::task::Id)>>,
    }
    impl Handler<EntityName> for Where {
        fn arrived(&self, _ctx: &Arc<ConnContext<EntityName>>, _request: &Request) {
            self.arrived.lock().unwrap().push(tokio::task::id());
        }
        async fn handle(&self, _ctx: Arc<ConnContext<EntityName>>, request: Request) -> Reply {
            let first = tokio::task::id();
            if let Request::List { max, .. } = request {
                tokio::time::sleep(Duration::from_millis(u64::from(max))).await;
            }
            self.handled.lock().unwrap().push((first, tokio::task::id()));
            Reply::Ack
        }
    }
    let handler = Arc::new(Where::default());
    let addr = server_with(handler.clone()).await;
    let c = admin(addr).await.unwrap();
    assert_eq!(c.client.call(Request::GetMap).await.unwrap(), Reply::Ack);
    let list = Request::List {
        pg: quarry_types::PgId { pool: 1, seed: 0 },
        epoch: 0,
        start_after: None,
        max: 50,
    };
    assert_eq!(c.client.call(list).await.unwrap(), Reply::Ack);
    let reader = handler.arrived.lock().unwrap().clone();
    let handled = handler.handled.lock().unwrap().clone();
    assert_eq!(reader.len(), 2);
    assert_eq!(reader[0], reader[1], "one reader task per connection");
    assert_eq!(handled[0], (reader[0], reader[0]), "a request that never waits got a task");
    assert_eq!(handled[1].0, reader[0], "a request's first steps run on the reader");
    assert_ne!(handled[1].1, reader[0], "a request that waits kept the reader");
}

/// While one of a connection's requests is at work (waiting), the next one gets a task of
/// its own instead of running on the reader (with device reads in flight, answering the
/// cached ones on the reader cost more than their tasks: docs/benchmarks.md, "Eighteenth
/// round").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_behind_one_at_work_get_tasks_of_their_own() {
    use std::sync::Mutex;
    #[derive(Default)]
    struct Where {
        reader: Mutex<Option<tokio::task::Id>>,
        quick: Mutex<Vec<tokio::task::Id>>,
    }
    impl Handler<EntityName> for Where {
        fn arrived(&self, _ctx: &Arc<ConnContext<EntityName>>, _request: &Request) {
            *self.reader.lock().unwrap() = Some(tokio::task::id());
        }
        async fn handle(&self, _ctx: Arc<ConnContext<EntityName>>, request: Request) -> Reply {
            match request {
                Request::List { max, .. } => {
                    tokio::time::sleep(Duration::from_millis(u64::from(max))).await
                }
                _ => self.quick.lock().unwrap().push(tokio::task::id()),
            }
            Reply::Ack
        }
    }
    let handler = Arc::new(Where::default());
    let addr = server_with(handler.clone()).await;
    let c = admin(addr).await.unwrap();
    // Alone: on the reader.
    assert_eq!(c.client.call(Request::GetMap).await.unwrap(), Reply::Ack);
    let slow = {
        let client = c.client.clone();
        tokio::spawn(async move {
            let pg = quarry_types::PgId { pool: 1, seed: 0 };
            client.call(Request::List { pg, epoch: 0, start_after: None, max: 500 }).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Behind a request at work: a task of its own.
    assert_eq!(c.client.call(Request::GetMap).await.unwrap(), Reply::Ack);
    assert_eq!(slow.await.unwrap().unwrap(), Reply::Ack);
    let reader = handler.reader.lock().unwrap().unwrap();
    let quick = handler.quick.lock().unwrap().clone();
    assert_eq!(quick.len(), 2);
    assert_eq!(quick[0], reader, "a request alone was not answered on the reader");
    assert_ne!(quick[1], reader, "a request behind one at work ran on the reader");
}

/// Goal: a read's data streamed ahead of its answer (`conn`'s streamed replies) reaches the
/// caller as the usual `Reply::Op` with that data when the answer is `ReadDone`; a part cut
/// short (its sender dropped) arrives as a well-formed frame whose zeros are dropped with the
/// answer that stands alone; the connection goes on (sequence numbers, signatures) after
/// both, and a request sent meanwhile is answered; a `ReadDone` without a part closes the
/// connection (a peer breaking the protocol). Method: a handler that streams 3 MiB in 300 KB
/// pieces from a blocking thread with pauses, or half of it, or nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_parts_arrive_joined_with_their_answer() {
    use quarry_types::{OpOutput, OpReply};
    use quarry_wire::conn::PartStarter;
    fn data() -> bytes::Bytes {
        (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect::<Vec<u8>>().into()
    }
    struct Streamer;
    impl Handler<EntityName> for Streamer {
        async fn handle(&self, _ctx: Arc<ConnContext<EntityName>>, request: Request) -> Reply {
            let Request::List { max, .. } = request else { return Reply::Ack };
            if max == 4 {
                return Reply::ReadDone;
            }
            let starter = PartStarter::current().expect("a signed session streams");
            let ended = tokio::task::spawn_blocking(move || {
                let data = data();
                let mut part = starter.start(data.len()).expect("room for a part");
                let upto = if max == 1 { data.len() } else { data.len() / 2 };
                for at in (0..upto).step_by(300_000) {
                    std::thread::sleep(Duration::from_millis(2));
                    assert!(part.piece(data.slice(at..(at + 300_000).min(upto))));
                }
                (max == 1).then(|| part.end(crc32c::crc32c(&data)))
            })
            .await
            .unwrap();
            match ended {
                Some(true) => Reply::ReadDone,
                _ => Reply::Failed { code: ErrorCode::EIO, message: "damaged".into() },
            }
        }
    }
    let addr = server_with(Arc::new(Streamer)).await;
    let c = admin(addr).await.unwrap();
    let list = |max| Request::List {
        pg: quarry_types::PgId { pool: 1, seed: 0 },
        epoch: 0,
        start_after: None,
        max,
    };
    // A frame that never ends (a part not finished) must fail the test, not hang it.
    let within = |secs| Duration::from_secs(secs);
    let steps = async {
        for _ in 0..2 {
            let (whole, other) = tokio::join!(c.client.call(list(1)), async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                c.client.call(Request::GetMap).await
            });
            match whole.unwrap() {
                Reply::Op(OpReply::Ok(outputs)) => match &outputs[..] {
                    [OpOutput::Data(payload)] => {
                        assert!(payload.data == data(), "the streamed bytes differ");
                        assert!(payload.verify(), "the part's crc");
                    }
                    other => panic!("outputs {other:?}"),
                },
                other => panic!("not the joined reply: {other:?}"),
            }
            assert_eq!(other.unwrap(), Reply::Ack, "a request sent meanwhile");
            match c.client.call(list(2)).await.unwrap() {
                Reply::Failed { code, .. } => assert_eq!(code, ErrorCode::EIO),
                other => panic!("a part cut short was used: {other:?}"),
            }
            assert_eq!(c.client.call(Request::GetMap).await.unwrap(), Reply::Ack);
        }
    };
    tokio::time::timeout(within(30), steps).await.expect("a streamed reply never arrived");
    assert!(c.client.call(list(4)).await.is_err(), "ReadDone without a part was accepted");
    assert!(c.client.is_closed());
}
