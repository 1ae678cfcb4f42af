//! Authentication and authorisation at the OSD: caps on every op, forged tickets, revocation
//! (auth_floor) and blocklisting reaching open sessions, and hostile bytes on the socket.

use std::time::Duration;

use quarry_types::{EntityName, ErrorCode};
use quarry_wire::{ClientSecret, MonCommand, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{self, Cluster, MonClient};

async fn other_client(cluster: &Cluster) -> MonClient {
    MonClient::connect(cluster.mon_addr(), EntityName::client("other"), cluster.user_key("other"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caps_for_another_pool_get_eperm_and_change_nothing() {
    let cluster = common::start().await;
    cluster.logs().expect("op denied by caps entity=client.other pool=rbd");
    let osd = cluster.start_osd_detached(0).await;
    let admin = common::admin(&cluster).await;
    let client = admin.osd_client(osd.addr()).await;
    client.write_full("guarded", b"original").await.unwrap();

    let other = other_client(&cluster).await.osd_client(osd.addr()).await;
    assert_eq!(other.write_full("guarded", b"evil").await, Err(ErrorCode::EPERM));
    assert_eq!(other.write_full("new-object", b"evil").await, Err(ErrorCode::EPERM));
    assert_eq!(other.read("guarded").await, Err(ErrorCode::EPERM));
    assert_eq!(client.read("guarded").await.unwrap(), b"original");
    assert_eq!(client.read("new-object").await, Err(ErrorCode::ENOENT));
    assert_eq!(client.list_all().await, vec!["guarded".to_string()]);
    osd.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_and_tampered_tickets_are_refused() {
    let cluster = common::start().await;
    cluster.logs().expect("quarry_osd::session: authentication refused");
    let osd = cluster.start_osd_detached(0).await;
    let admin = common::admin(&cluster).await;
    let entity = EntityName::client("admin");
    let ClientSecret::Ticket { ticket, session_key } = admin.ticket().await else {
        panic!("not a ticket")
    };
    let timeout = Duration::from_secs(5);
    let mut tampered = ticket.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x40;
    // A ticket sealed under a service key the monitor never made.
    let forged_key = quarry_auth::ServiceKey { id: 1, key: [9; 32], expires_unix: u64::MAX };
    let forged_ticket = quarry_auth::Ticket {
        entity: entity.clone(),
        global_id: 1,
        caps: [("osd".to_string(), "allow *".to_string())].into(),
        issued_unix: 0,
        expires_unix: u64::MAX,
        session_key: [3; 32],
    };
    let forged = quarry_auth::seal_ticket(&forged_key, &forged_ticket).to_bytes();
    // A ticket the OSD cannot open is EPERM; a genuine ticket without its session key fails
    // the proof, answered as every failed proof is (EACCES, "authentication failed").
    let attempts = [
        (ClientSecret::Ticket { ticket: tampered, session_key }, ErrorCode::EPERM),
        (ClientSecret::Ticket { ticket: forged, session_key: [3; 32] }, ErrorCode::EPERM),
        (ClientSecret::Ticket { ticket: ticket.clone(), session_key: [0; 32] }, ErrorCode::EACCES),
        (ClientSecret::EntityKey(cluster.admin_key().secret().to_vec()), ErrorCode::EPERM),
    ];
    for (secret, code) in attempts {
        let err = quarry_wire::connect(osd.addr(), &entity, Service::Osd, &secret, timeout)
            .await
            .err()
            .expect("a bad ticket must be refused");
        assert_eq!(err.errno(), code, "{err}");
    }
    // Someone else's genuine ticket does not work under another name either.
    let secret = ClientSecret::Ticket { ticket, session_key };
    let err = quarry_wire::connect(
        osd.addr(),
        &EntityName::client("other"),
        Service::Osd,
        &secret,
        timeout,
    )
    .await
    .err()
    .expect("a ticket is bound to its entity");
    assert_eq!(err.errno(), ErrorCode::EPERM);
    // The genuine one still works.
    let client = admin.osd_client(osd.addr()).await;
    client.write_full("ok", b"fine").await.unwrap();
    osd.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_and_blocklist_reach_open_sessions_and_pools_come_and_go() {
    let cluster = common::start().await;
    cluster.logs().expect("why=credentials revoked since the ticket was issued");
    let osd = cluster.start_osd_detached(0).await;
    let admin = common::admin(&cluster).await;
    let create = MonCommand::PoolCreate { name: "other".into(), pg_num: Some(4), size: Some(1) };
    admin.command(create).await;
    let mon_other = other_client(&cluster).await;
    let mut other = mon_other.osd_client(osd.addr()).await;
    other.pool = "other".into();
    // The client's map is newer than the OSD's may be: the OSD catches up and serves it.
    other.write_full("mine", b"allowed").await.unwrap();
    assert_eq!(other.read("mine").await.unwrap(), b"allowed");

    let instance = format!("client.other@{}", mon_other.global_id);
    admin.command(MonCommand::BlocklistAdd { instance, expire_secs: 3600 }).await;
    other.map = admin.map().await;
    let mut refused = false;
    for _ in 0..100 {
        // Blocklisted: ESHUTDOWN (Ceph's EBLOCKLISTED), not EPERM.
        if other.read("mine").await == Err(ErrorCode::ESHUTDOWN) {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "a blocklisted instance must be refused");

    // A fresh instance is not blocklisted; changing its caps revokes its open session.
    let mon_other = other_client(&cluster).await;
    let mut fresh = mon_other.osd_client(osd.addr()).await;
    fresh.pool = "other".into();
    assert_eq!(fresh.read("mine").await.unwrap(), b"allowed");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let caps = [
        ("mon".to_string(), "profile rbd".to_string()),
        ("osd".to_string(), "profile rbd".to_string()),
    ];
    admin.command(MonCommand::AuthCaps { entity: "client.other".into(), caps: caps.into() }).await;
    fresh.map = admin.map().await;
    let mut revoked = false;
    for _ in 0..100 {
        if fresh.read("mine").await == Err(ErrorCode::EPERM) {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(revoked, "a ticket issued before the caps change must be refused");

    // Deleting the pool drops its PGs; the rest keeps working.
    let other_pool = admin.map().await.pool_by_name("other").unwrap().id;
    assert_eq!(osd.pgs().iter().filter(|p| p.pg.pool == other_pool).count(), 4);
    admin.command(MonCommand::PoolRm { name: "other".into() }).await;
    let mut dropped = false;
    for _ in 0..100 {
        if osd.pgs().iter().all(|p| p.pg.pool != other_pool) {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dropped, "the deleted pool's PGs must be dropped: {:?}", osd.pgs());
    let client = admin.osd_client(osd.addr()).await;
    client.write_full("still", b"here").await.unwrap();
    assert_eq!(client.read("still").await.unwrap(), b"here");
    osd.shutdown().await;
    cluster.shutdown().await;
}

/// Reads until the server closes the connection; true if it did within the deadline.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_and_truncated_frames_close_only_that_connection() {
    let cluster = common::start().await;
    let osd = cluster.start_osd_detached(0).await;
    let admin = common::admin(&cluster).await;
    let client = admin.osd_client(osd.addr()).await;
    client.write_full("steady", b"before").await.unwrap();

    let mut garbage = TcpStream::connect(osd.addr()).await.unwrap();
    garbage.write_all(&[0xA5; 4096]).await.unwrap();
    assert!(closed_by_server(&mut garbage).await, "garbage must close the connection");

    // A header announcing more payload than is sent, then silence: the handshake deadline
    // or the short read closes it.
    let mut truncated = TcpStream::connect(osd.addr()).await.unwrap();
    let mut header = Vec::from(*b"QRY1");
    header.extend_from_slice(&[quarry_wire::codec::FRAME_VERSION, 0, 0, 0]);
    header.extend_from_slice(&0u64.to_le_bytes());
    header.extend_from_slice(&1000u32.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    truncated.write_all(&header).await.unwrap();
    truncated.write_all(&[1, 2, 3]).await.unwrap();
    truncated.shutdown().await.unwrap();
    assert!(closed_by_server(&mut truncated).await, "a truncated frame must close the connection");

    // The authenticated session opened before carries on, and new ones are accepted.
    let fresh = admin.osd_client(osd.addr()).await;
    fresh.write_full("fresh", b"x").await.unwrap();
    client.write_full("steady", b"after").await.unwrap();
    assert_eq!(client.read("steady").await.unwrap(), b"after");
    osd.shutdown().await;
    cluster.shutdown().await;
}

/// Goal: an op is executed only in the PG its object name hashes to. A client that names
/// another PG of the pool (buggy, or lying) would otherwise store the object where no other
/// client looks for it: invisible to reads, yet listed. Method: send a write and a read of
/// one name to every other PG of the pool over a genuine admin session; each must be refused
/// and leave nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ops_naming_the_wrong_pg_are_refused() {
    use bytes::Bytes;
    use quarry_types::{ObjectOp, Payload, PgId, SnapContext, SNAP_HEAD};
    use quarry_wire::{OsdOp, Reply, Request};

    let cluster = common::start().await;
    cluster.logs().expect("op names a pg its object is not in");
    let osd = cluster.start_osd_detached(0).await;
    let admin = common::admin(&cluster).await;
    let client = admin.osd_client(osd.addr()).await;
    client.write_full("placed", b"right pg").await.unwrap();
    let write = vec![ObjectOp::WriteFull { data: Payload::new(Bytes::from_static(b"wrong pg")) }];
    let read = vec![ObjectOp::Read { off: 0, len: 0 }];
    for (name, ops) in [("misplaced", &write), ("placed", &write), ("placed", &read)] {
        let right = client.pg(name);
        for seed in (0..crate::common::PG_NUM).filter(|&s| s != right.seed) {
            let op = OsdOp {
                reqid: None,
                pg: PgId { pool: right.pool, seed },
                epoch: client.map.epoch,
                name: name.into(),
                snapc: SnapContext::default(),
                snap: SNAP_HEAD,
                ops: ops.clone(),
            };
            let reply = loop {
                match client.rpc.call(Request::Op(op.clone())).await.unwrap() {
                    Reply::Retry { .. } => tokio::time::sleep(Duration::from_millis(50)).await,
                    other => break other,
                }
            };
            assert!(
                matches!(reply, Reply::Failed { code: ErrorCode::EINVAL, .. }),
                "{name} in pg seed {seed} (it hashes to {}): {reply:?}",
                right.seed
            );
        }
    }
    assert_eq!(client.list_all().await, vec!["placed".to_string()]);
    assert_eq!(client.read("placed").await.unwrap(), b"right pg");
    assert_eq!(client.read("misplaced").await, Err(ErrorCode::ENOENT));
    osd.shutdown().await;
    cluster.shutdown().await;
}

/// Goal: the blocklist fences client instances, not OSDs: a `profile rbd` user may add
/// blocklist entries (librbd breaks dead exclusive locks that way), and an entry naming an
/// OSD's instance must not let it cut the Raft traffic between OSDs, which would stall every
/// write of every replicated PG. Method: a size-2 pool over two OSDs; the restricted client
/// blocklists a range of global ids of both OSD entities (covering the instances their peer
/// tickets carry); writes to every PG must still commit on both replicas, in bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocklisting_osd_instances_does_not_stop_replication() {
    let cluster = common::start_with(2, vec![("rep", 4, 2)]).await;
    common::allow_election_noise(&cluster);
    let (a, b) = tokio::join!(cluster.start_osd_detached(0), cluster.start_osd_detached(1));
    let admin = common::admin(&cluster).await;
    let map = admin.map().await;
    let pool = map.pool_by_name("rep").unwrap().clone();
    let mut clients = std::collections::BTreeMap::new();
    for (id, addr) in [(0u64, a.addr()), (1, b.addr())] {
        let mut client = admin.osd_client(addr).await;
        client.pool = "rep".into();
        clients.insert(id, client);
    }
    let primary_of =
        |name: &str| pool.acting[quarry_placement::pg_of(name, pool.pg_num) as usize][0];
    async fn write_all(
        clients: &std::collections::BTreeMap<u64, crate::common::OsdClient>,
        primary_of: impl Fn(&str) -> u64,
        round: u32,
    ) {
        for i in 0..8 {
            let name = format!("obj{i}");
            let client = &clients[&primary_of(&name)];
            let data = format!("round {round} {i}");
            let written = tokio::time::timeout(
                Duration::from_secs(20),
                client.write_full(&name, data.as_bytes()),
            )
            .await;
            assert!(matches!(written, Ok(Ok(_))), "write of {name} in round {round}: {written:?}");
        }
    }
    write_all(&clients, primary_of, 0).await;

    let other = other_client(&cluster).await;
    let first = quarry_mon::state::GLOBAL_ID_FIRST;
    for osd in [0, 1] {
        for id in first..first + 48 {
            let instance = format!("osd.{osd}@{id}");
            let reply =
                other.command(MonCommand::BlocklistAdd { instance, expire_secs: 3600 }).await;
            assert!(matches!(reply, quarry_wire::MonReply::Done(_)), "{reply:?}");
        }
    }
    // Let both OSDs see the blocklist, then write again everywhere.
    let epoch = admin.map().await.epoch;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for client in clients.values_mut() {
        client.map = admin.map().await;
        assert!(client.map.epoch >= epoch);
    }
    write_all(&clients, primary_of, 1).await;
    for i in 0..8 {
        let name = format!("obj{i}");
        let client = &clients[&primary_of(&name)];
        assert_eq!(client.read(&name).await.unwrap(), format!("round 1 {i}").as_bytes());
    }
    a.shutdown().await;
    b.shutdown().await;
    cluster.shutdown().await;
}
