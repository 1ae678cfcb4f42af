//! Measures what authentication costs on the wire (a benchmark, not a test):
//! 1. handshakes per second over loopback (connect + challenge–response + session key),
//! 2. 4 KiB request round trips per second on one connection at queue depth 32, signed
//!    (what Quarry does) versus the same frames unsigned — the ratio is the per-op overhead
//!    of signatures,
//! 3. encode+decode of one 4 KiB and one 4 MiB write frame, signed and unsigned, in isolation.
//!
//! Run: `cargo run --release -p quarry-wire --example auth_cost`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quarry_types::{EntityName, ErrorCode, ObjectOp, Payload, PgId, SnapContext, SNAP_HEAD};
use quarry_wire::codec::{decode_frame, encode_frame, FRAME_PAYLOAD_MAX};
use quarry_wire::{
    accept, connect, serve, Authenticator, ClientSecret, ConnContext, Handler, Hello, Message,
    OsdOp, Refused, Reply, Request, Service,
};
use tokio::net::TcpListener;

const KEY: &[u8] = b"0123456789abcdef";

struct OneKey;
impl Authenticator for OneKey {
    type Session = ();
    fn secret_for(&self, _hello: &Hello) -> Result<(Vec<u8>, ()), Refused> {
        Ok((KEY.to_vec(), ()))
    }
    fn accepted(&self, _: &()) -> u64 {
        1
    }
    fn rejected(&self, _: &Hello, _: SocketAddr, _: &str) {}
}

struct Ack;
impl Handler<()> for Ack {
    async fn handle(&self, _ctx: Arc<ConnContext<()>>, _request: Request) -> Reply {
        Reply::Ack
    }
}

fn write_request() -> Request {
    write_request_of(4096)
}

fn write_request_of(len: usize) -> Request {
    Request::Op(OsdOp {
        reqid: None,
        pg: PgId { pool: 1, seed: 0 },
        epoch: 1,
        name: "rbd_data.1234.0000000000000000".into(),
        snapc: SnapContext::default(),
        snap: SNAP_HEAD,
        ops: vec![ObjectOp::Write { off: 0, data: Payload::new(vec![7u8; len]) }],
    })
}

#[tokio::main]
async fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(acc) = accept(stream, &OneKey, Duration::from_secs(5)).await {
                    let _ = serve(acc, Arc::new(Ack)).await;
                }
            });
        }
    });
    let entity = EntityName::client("admin");
    let secret = ClientSecret::EntityKey(KEY.to_vec());

    // 1. handshakes per second
    let n = 2000;
    let start = Instant::now();
    for _ in 0..n {
        let c = connect(addr, &entity, Service::Mon, &secret, Duration::from_secs(5))
            .await
            .expect("connect");
        drop(c);
    }
    let secs = start.elapsed().as_secs_f64();
    println!("handshakes: {n} in {secs:.2} s = {:.0} connections/s", f64::from(n) / secs);

    // 2. 4 KiB request round trips at queue depth 32 on one connection, signed and unsigned
    let mut rates = [0f64; 2];
    for (i, unsigned) in [false, true].into_iter().enumerate() {
        quarry_wire::conn::disable_signatures_for_measurement(unsigned);
        let c = connect(addr, &entity, Service::Mon, &secret, Duration::from_secs(5))
            .await
            .expect("connect");
        let ops = 100_000u32;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let client = c.client.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..ops / 32 {
                    assert_eq!(client.call(write_request()).await.expect("call"), Reply::Ack);
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        rates[i] = f64::from(ops) / start.elapsed().as_secs_f64();
    }
    quarry_wire::conn::disable_signatures_for_measurement(false);
    println!(
        "4 KiB round trips, QD32, one connection: signed {:.0} ops/s, unsigned {:.0} ops/s, ratio signed/unsigned {:.2}",
        rates[0],
        rates[1],
        rates[0] / rates[1]
    );

    // 3. frame encode+decode cost, signed vs unsigned, small and large writes
    let key = [5u8; 32];
    for (label, len, frames) in [("4 KiB", 4096usize, 200_000u32), ("4 MiB", 4 << 20, 200)] {
        let msg = Message::Request(write_request_of(len));
        let mut timings = [0f64; 2];
        for (i, signed) in [false, true].into_iter().enumerate() {
            let k = if signed { Some(&key) } else { None };
            let start = Instant::now();
            for seq in 1..=u64::from(frames) {
                let f = encode_frame(1, seq, &msg, k).expect("encode");
                let (_h, m) = decode_frame(&f, FRAME_PAYLOAD_MAX, k, seq).expect("decode");
                std::hint::black_box(m);
            }
            timings[i] = start.elapsed().as_secs_f64() / f64::from(frames);
        }
        println!(
            "{label} frame encode+decode: unsigned {:.2} us, signed {:.2} us (signature adds {:.2} us per frame, sign + verify)",
            timings[0] * 1e6,
            timings[1] * 1e6,
            (timings[1] - timings[0]) * 1e6
        );
    }
    let _ = ErrorCode::EIO;
}
