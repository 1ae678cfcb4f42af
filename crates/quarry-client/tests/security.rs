//! Authentication and capabilities seen from the client: wrong keys, pool-limited users,
//! ticket renewal.

use crate::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quarry_auth::CryptoKey;
use quarry_client::{ClientError, ErrorCode, Rados};
use quarry_types::EntityName;

use quarry_testkit::Cluster;

/// A wrong key or an unknown entity is refused at once with EACCES, in the same words (the
/// monitor tells an unauthenticated peer nothing about which names exist; the detail is in
/// its log only): no retry loop, no wait for the mount timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_an_auth_error_quickly() {
    let cluster = Cluster::start().await;
    cluster
        .logs()
        .expect("monitor refused authentication entity=client.admin")
        .expect("wrong key")
        .expect("monitor refused authentication entity=client.nobody")
        .expect("unknown entity client.nobody")
        .expect("quarry_client::monc: monitor refused authentication");
    let mut answers = Vec::new();
    for (entity, key) in [
        (EntityName::client("admin"), CryptoKey::generate()),
        (EntityName::client("nobody"), CryptoKey::generate()),
    ] {
        let mut cfg = cluster.config(entity.clone(), key);
        cfg.connect_timeout = Duration::from_secs(30);
        let started = Instant::now();
        let err = Rados::connect(cfg).await.err().expect("must be refused");
        assert!(started.elapsed() < Duration::from_secs(3), "{entity}: {:?}", started.elapsed());
        assert!(matches!(err, ClientError::Auth { .. }), "{entity}: {err:?}");
        assert_eq!(err.errno(), ErrorCode::EACCES);
        assert_eq!(err.to_string(), "authentication failed: (13) Permission denied");
        answers.push(err.to_string());
    }
    assert_eq!(answers[0], answers[1], "unknown user and wrong key must be told the same");
    cluster.shutdown().await;
}

/// No monitor listening: ETIMEDOUT after `connect_timeout`, naming the monitors tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_monitor_is_a_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let cfg = quarry_client::ClientConfig {
        mon_addrs: vec![addr],
        entity: EntityName::client("admin"),
        key: CryptoKey::generate(),
        connect_timeout: Duration::from_millis(800),
        op_timeout: None,
        mon_op_timeout: None,
        fsid: None,
        local_options: Default::default(),
    };
    let started = Instant::now();
    let err = Rados::connect(cfg).await.err().expect("nothing listens");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(err.errno(), ErrorCode::ETIMEDOUT);
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// `osd 'profile rbd pool=a'`: full use of pool a, EPERM in pool rbd (nothing written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_limited_user_gets_eperm_elsewhere() {
    let cluster = Cluster::builder()
        .pools(vec![("rbd", 16, 1), ("a", 8, 1)])
        .user("alice", &[("mon", "profile rbd"), ("osd", "profile rbd pool=a")])
        .start()
        .await;
    cluster.logs().expect("op denied by caps entity=client.alice pool=rbd");
    let alice = Rados::connect(cluster.user_config("alice")).await.unwrap();
    let admin = cluster.admin().await;
    let a = alice.pool_id("a").unwrap();
    let rbd = alice.pool_id("rbd").unwrap();
    io(&alice, a).write_full("mine", Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(io(&alice, a).read("mine", 0, 0).await.unwrap(), "hello");
    assert_eq!(alice.list_objects(a).await.unwrap(), vec!["mine".to_string()]);

    let err = io(&alice, rbd).write_full("theirs", Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::EPERM, "{err:?}");
    assert!(matches!(err, ClientError::Failed { .. }), "{err:?}");
    io(&admin, rbd).write_full("admins", Bytes::from_static(b"y")).await.unwrap();
    let err = io(&alice, rbd).read("admins", 0, 0).await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::EPERM);
    let err = io(&admin, rbd).stat("theirs").await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::ENOENT, "the refused write changed nothing");
    alice.shutdown().await;
    admin.shutdown().await;
    cluster.shutdown().await;
}

/// Tickets of 4 s: the client renews them in the background and keeps working for several
/// lifetimes (an OSD refuses every op of an expired ticket's session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_renewal_keeps_a_client_working() {
    let cluster = Cluster::builder().ticket_ttl(Duration::from_secs(4)).start().await;
    let rados = cluster.admin().await;
    let pool = rados.pool_id("rbd").unwrap();
    let started = Instant::now();
    let mut i = 0u32;
    while started.elapsed() < Duration::from_secs(11) {
        let name = format!("renew{}", i % 40);
        let data = Bytes::from(format!("round {i}"));
        io(&rados, pool).write_full(&name, data.clone()).await.unwrap();
        assert_eq!(io(&rados, pool).read(&name, 0, 0).await.unwrap(), data);
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(i > 20);
    let stats = rados.stats();
    assert!(stats.tickets >= 4, "tickets renewed ahead of expiry: {stats:?}");
    assert_eq!(stats.tickets_on_demand, 0, "no op ever found its ticket expired: {stats:?}");
    assert!(stats.osd_connections > 3, "connections follow the ticket: {stats:?}");
    rados.shutdown().await;
    cluster.shutdown().await;
}

/// A ceph.conf and a keyring on disk, read as the CLI does (`-c FILE --id NAME`), give a
/// working client; a keyring without the user is reported by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conf_file_and_keyring_give_a_working_client() {
    let cluster = Cluster::builder()
        .user("qemu", &[("mon", "profile rbd"), ("osd", "profile rbd")])
        .start()
        .await;
    let dir = cluster.dir();
    let keyring = dir.join("ceph.client.qemu.keyring");
    let text = format!("[client.qemu]\n\tkey = {}\n", cluster.user_key("qemu"));
    std::fs::write(&keyring, text).unwrap();
    let conf_path = dir.join("ceph.conf");
    let conf_text = format!(
        "[global]\n\tmon_host = {}\n\tkeyring = {}\n[client]\n\trados_osd_op_timeout = 30\n",
        cluster.mon_addr(),
        keyring.display()
    );
    std::fs::write(&conf_path, conf_text).unwrap();
    let args = quarry_conf::CommonArgs {
        conf: Some(conf_path.clone()),
        id: Some("qemu".into()),
        ..Default::default()
    };
    let (conf, _) = args.load_conf().unwrap();
    let cfg = quarry_client::ClientConfig::from_conf(&conf, &args).unwrap();
    assert_eq!(cfg.op_timeout, Some(Duration::from_secs(30)));
    let rados = Rados::connect(cfg).await.unwrap();
    let pool = rados.pool_id("rbd").unwrap();
    io(&rados, pool).write_full("from-conf", Bytes::from_static(b"ok")).await.unwrap();
    assert_eq!(io(&rados, pool).read("from-conf", 0, 0).await.unwrap(), "ok");
    rados.shutdown().await;

    let args = quarry_conf::CommonArgs { id: Some("admin".into()), ..args };
    let (conf, _) = args.load_conf().unwrap();
    let err = quarry_client::ClientConfig::from_conf(&conf, &args).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "keyring {} has no key for client.admin: (2) No such file or directory",
            keyring.display()
        )
    );
    cluster.shutdown().await;
}

/// Goal: blocklisting fences a client instance for good, as librados does: a fenced client
/// (say one whose exclusive lock was broken while it was partitioned) must not resume
/// writing when its monitor session is re-established, even though the new session has a new
/// global id (the blocklist names `entity@global_id`). Method: blocklist client A's
/// instance, restart the monitor so A hunts and gets a new session and global id, then let
/// A write: it must fail with ESHUTDOWN (Ceph's EBLOCKLISTED) and change nothing, while
/// another client keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocklisted_instance_stays_fenced_after_a_monitor_reconnect() {
    use quarry_client::MonCommand;
    let mut cluster = Cluster::start().await;
    cluster.logs().expect("no monitor session; retrying").expect("blocklisted: refusing every op");
    let fenced = cluster.admin().await;
    let pool = fenced.pool_id("rbd").unwrap();
    io(&fenced, pool).write_full("locked", Bytes::from_static(b"before")).await.unwrap();
    let old_id = fenced.global_id();

    let breaker = cluster.admin().await;
    let instance = format!("client.admin@{old_id}");
    breaker.command(MonCommand::BlocklistAdd { instance, expire_secs: 3600 }).await.unwrap();

    // The monitor restarts: both clients hunt and open new sessions with new global ids.
    cluster.restart_mon().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while fenced.global_id() == old_id {
        assert!(Instant::now() < deadline, "the client never reconnected to the monitor");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let err = tokio::time::timeout(
        Duration::from_secs(20),
        io(&fenced, pool).write_full("locked", Bytes::from_static(b"stale writer")),
    )
    .await
    .expect("a fenced write ends")
    .expect_err("a blocklisted instance must not write again");
    assert_eq!(err.errno(), ErrorCode::ESHUTDOWN, "{err:?}");
    let err = io(&fenced, pool).read("locked", 0, 0).await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::ESHUTDOWN, "{err:?}");

    io(&breaker, pool).write_full("other", Bytes::from_static(b"fine")).await.unwrap();
    assert_eq!(io(&breaker, pool).read("locked", 0, 0).await.unwrap(), "before");
    fenced.shutdown().await;
    breaker.shutdown().await;
    cluster.shutdown().await;
}

/// Goal (issue 12, item 5): revocation reaches a running client as EPERM within the
/// documented bound (the map carrying the entity's `auth_floor` reaching the OSD, plus one
/// ticket request to the monitor), not as ETIMEDOUT after `connect_timeout`. Method: a user
/// with an open client writes; the admin deletes the user; the user's next write must fail
/// with EPERM well within the 30 s connect timeout and change nothing. Then the same with
/// a caps change to read-only on a second user: writes EPERM, reads still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_a_running_client_as_eperm_at_once() {
    use quarry_client::MonCommand;
    let cluster = Cluster::builder()
        .user("gone", &[("mon", "profile rbd"), ("osd", "profile rbd")])
        .user("demoted", &[("mon", "profile rbd"), ("osd", "profile rbd")])
        .start()
        .await;
    cluster
        .logs()
        .expect("op refused entity=client.gone")
        .expect("monitor refused to renew our ticket")
        .allow("op refused entity=client.demoted")
        .expect("op denied by caps entity=client.demoted");
    let admin = cluster.admin().await;
    let mut gone_cfg = cluster.user_config("gone");
    gone_cfg.connect_timeout = Duration::from_secs(30);
    let gone = Rados::connect(gone_cfg).await.unwrap();
    let demoted = Rados::connect(cluster.user_config("demoted")).await.unwrap();
    let pool = gone.pool_id("rbd").unwrap();
    io(&gone, pool).write_full("g", Bytes::from_static(b"before")).await.unwrap();
    io(&demoted, pool).write_full("d", Bytes::from_static(b"before")).await.unwrap();

    admin.command(MonCommand::AuthDel { entity: "client.gone".into() }).await.unwrap();
    let started = Instant::now();
    let err = io(&gone, pool).write_full("g", Bytes::from_static(b"after")).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.errno(), ErrorCode::EPERM, "{err:?}");
    assert!(took < Duration::from_secs(5), "revocation took {took:?}");
    let err = io(&gone, pool).read("g", 0, 0).await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::EPERM, "{err:?}");
    assert_eq!(io(&admin, pool).read("g", 0, 0).await.unwrap(), "before");

    let caps = [("mon", "profile rbd"), ("osd", "profile rbd-read-only")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    admin.command(MonCommand::AuthCaps { entity: "client.demoted".into(), caps }).await.unwrap();
    let started = Instant::now();
    let err = io(&demoted, pool).write_full("d", Bytes::from_static(b"after")).await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::EPERM, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "caps change took {:?}", started.elapsed());
    assert_eq!(io(&demoted, pool).read("d", 0, 0).await.unwrap(), "before");
    gone.shutdown().await;
    demoted.shutdown().await;
    admin.shutdown().await;
    cluster.shutdown().await;
}
