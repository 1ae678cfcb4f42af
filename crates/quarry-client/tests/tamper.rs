//! A man in the middle between a real client session and a real OSD: a flipped byte or a
//! replayed frame after the handshake is refused (the OSD closes the connection) and changes
//! nothing; a session with a ticket for another entity cannot be hijacked.

use crate::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use quarry_client::{ErrorCode, Rados, SnapContext, SNAP_HEAD};
use quarry_types::{EntityName, ObjectOp, Payload, PgId};
use quarry_wire::codec::HEADER_LEN;
use quarry_wire::{ClientSecret, OsdOp, Reply, Request, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use quarry_testkit::Cluster;

#[derive(Clone, Copy, PartialEq)]
enum Attack {
    /// Flip one payload byte of the client's first request frame.
    Flip,
    /// Send the client's first request frame twice.
    Replay,
}

/// Reads one frame (header, payload, signature) from `from`.
async fn read_frame(from: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    let mut header = [0u8; HEADER_LEN];
    from.read_exact(&mut header).await.ok()?;
    let len = u32::from_le_bytes(header[16..20].try_into().ok()?) as usize;
    let signed = header[5] & 1 == 1;
    let mut body = vec![0u8; len + if signed { quarry_wire::codec::SIGNATURE_LEN } else { 0 }];
    from.read_exact(&mut body).await.ok()?;
    let mut frame = header.to_vec();
    frame.extend_from_slice(&body);
    Some(frame)
}

/// A proxy to `target` that attacks the third client-to-server frame (Hello and Proof are
/// the first two; the third is the first signed request).
async fn proxy(target: SocketAddr, attack: Attack) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(target).await.unwrap();
        let (mut client_r, mut client_w) = client.into_split();
        let (mut server_r, mut server_w) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_r, &mut client_w).await;
        });
        let mut n = 0;
        while let Some(mut frame) = read_frame(&mut client_r).await {
            n += 1;
            if n == 3 {
                match attack {
                    Attack::Flip => {
                        let last = frame.len() - 20;
                        frame[last] ^= 0x01;
                    }
                    Attack::Replay => {
                        if server_w.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if server_w.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    addr
}

/// An authenticated OSD session through the proxy, as client.admin.
async fn session(
    rados: &Rados,
    cluster: &Cluster,
    osd_addr: SocketAddr,
    attack: Attack,
) -> quarry_wire::RpcClient {
    let mon = quarry_wire::connect(
        cluster.mon_addr(),
        &EntityName::client("admin"),
        Service::Mon,
        &ClientSecret::EntityKey(cluster.admin_key().secret().to_vec()),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let Reply::Ticket { ticket, session_key, .. } =
        mon.client.call(Request::GetTicket).await.unwrap()
    else {
        panic!("no ticket")
    };
    let session_key = quarry_auth::open_key(&mon.session_key, &session_key).unwrap();
    let _ = rados;
    let via = proxy(osd_addr, attack).await;
    let secret = ClientSecret::Ticket { ticket, session_key };
    quarry_wire::connect(
        via,
        &EntityName::client("admin"),
        Service::Osd,
        &secret,
        Duration::from_secs(5),
    )
    .await
    .unwrap()
    .client
}

fn write(pg: PgId, epoch: u64, name: &str, data: &'static [u8]) -> Request {
    Request::Op(OsdOp {
        reqid: None,
        pg,
        epoch,
        name: name.into(),
        snapc: SnapContext::default(),
        snap: SNAP_HEAD,
        ops: vec![ObjectOp::WriteFull { data: Payload::new(Bytes::from_static(data)) }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_replayed_frames_are_refused_and_change_nothing() {
    let cluster = Cluster::builder().osds(1).start().await;
    let rados = cluster.admin().await;
    let pool = rados.pool_id("rbd").unwrap();
    let map = rados.map();
    let pg_num = map.pools[&pool].pg_num;
    let osd_addr = map.osds[&0].addr.unwrap();

    // Flip: the OSD must refuse the frame (bad signature), close, and write nothing.
    let name = "tampered";
    let pg = PgId { pool, seed: quarry_placement::pg_of(name, pg_num) };
    let client = session(&rados, &cluster, osd_addr, Attack::Flip).await;
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        client.call(write(pg, map.epoch, name, b"evil")),
    )
    .await
    .expect("the OSD must close the connection, not hang");
    assert!(result.is_err(), "a tampered frame was answered: {result:?}");
    let err = io(&rados, pool).stat(name).await.expect_err("object must not exist");
    assert_eq!(err.errno(), ErrorCode::ENOENT);

    // Replay: the first copy is executed, the second is refused (sequence) and the connection
    // closed; the object holds exactly what the one legitimate request wrote.
    let name = "replayed";
    let pg = PgId { pool, seed: quarry_placement::pg_of(name, pg_num) };
    let client = session(&rados, &cluster, osd_addr, Attack::Replay).await;
    let first = client.call(write(pg, map.epoch, name, b"once")).await;
    assert!(matches!(first, Ok(Reply::Op(_))), "{first:?}");
    // The replayed copy broke the session: the next request on it fails.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !client.is_closed() {
        assert!(tokio::time::Instant::now() < deadline, "session survived a replayed frame");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let data = io(&rados, pool).read(name, 0, 0).await.unwrap();
    assert_eq!(&data[..], b"once");

    // The OSD still serves honest clients.
    io(&rados, pool).write_full("after", Bytes::from_static(b"ok")).await.unwrap();
    cluster.shutdown().await;
}
