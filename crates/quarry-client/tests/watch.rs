//! Watch / notify / list_watchers and blocklisting against real daemons.

use std::time::Duration;

use bytes::Bytes;
use quarry_client::{ErrorCode, MonCommand, Rados, Watch, WatchEvent};
use quarry_testkit::Cluster;

use crate::io;

const WAIT: Duration = Duration::from_secs(20);

async fn next(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(WAIT, watch.next()).await.expect("a watch event in time").expect("open")
}

/// Answers every notify of `watch` with `reply`, until the watch ends.
fn ack_with(rados: &Rados, mut watch: Watch, reply: &'static str) -> tokio::task::JoinHandle<u32> {
    let rados = rados.clone();
    tokio::spawn(async move {
        let mut acked = 0;
        while let Some(event) = watch.next().await {
            if let WatchEvent::Notify { notify_id, payload, .. } = event {
                assert_eq!(payload, b"hello watchers");
                rados.notify_ack(watch.cookie(), notify_id, reply.as_bytes()).await.unwrap();
                acked += 1;
            }
        }
        acked
    })
}

/// Goal: a notify reaches every watcher and their acks, with reply payloads, reach the
/// notifier; list_watchers shows each watch as Ceph does (`IP:0/GLOBAL_ID`, entity, cookie);
/// watching a missing object is ENOENT; after unwatch the watcher is gone. A watcher that
/// does not ack is reported missed once the notify's timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_ack_a_notify_with_their_payloads() {
    let cluster = Cluster::start().await;
    let (a, b, c) = (cluster.admin().await, cluster.admin().await, cluster.admin().await);
    let pool = a.pool_id("rbd").unwrap();
    io(&c, pool).write_full("header", Bytes::from_static(b"v1")).await.unwrap();

    let missing = io(&a, pool).watch("nothing-here", None).await.unwrap_err();
    assert_eq!(missing.errno(), ErrorCode::ENOENT);

    let wa = io(&a, pool).watch("header", None).await.unwrap();
    let wb = io(&b, pool).watch("header", Some(Duration::from_secs(5))).await.unwrap();
    let (ca, cb) = (wa.cookie(), wb.cookie());
    let mut listed: Vec<_> = io(&c, pool)
        .list_watchers("header")
        .await
        .unwrap()
        .into_iter()
        .map(|w| (w.addr, w.entity, w.global_id, w.cookie, w.timeout_secs))
        .collect();
    listed.sort_by_key(|w| w.2);
    let mut want = vec![
        (format!("127.0.0.1:0/{}", a.global_id()), "client.admin".into(), a.global_id(), ca, 30),
        (format!("127.0.0.1:0/{}", b.global_id()), "client.admin".into(), b.global_id(), cb, 5),
    ];
    want.sort_by_key(|w| w.2);
    assert_eq!(listed, want);

    let ta = ack_with(&a, wa, "from a");
    let tb = ack_with(&b, wb, "from b");
    let outcome = io(&c, pool)
        .notify("header", b"hello watchers", Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(outcome.missed.is_empty(), "{outcome:?}");
    let mut acks: Vec<_> =
        outcome.acks.iter().map(|r| (r.global_id, r.cookie, r.payload.clone())).collect();
    acks.sort();
    let mut want =
        vec![(a.global_id(), ca, b"from a".to_vec()), (b.global_id(), cb, b"from b".to_vec())];
    want.sort();
    assert_eq!(acks, want);

    // A watcher that never acks is missed after the timeout; the others' acks still count.
    let mut silent = io(&c, pool).watch("header", None).await.unwrap();
    let started = std::time::Instant::now();
    let outcome = io(&c, pool)
        .notify("header", b"hello watchers", Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(outcome.acks.len(), 2, "{outcome:?}");
    assert_eq!(outcome.missed, vec![(c.global_id(), silent.cookie())]);
    assert!(
        matches!(next(&mut silent).await, WatchEvent::Notify { notifier_id, .. } if notifier_id == c.global_id())
    );

    a.unwatch(ca).await.unwrap();
    let left: Vec<(u64, u64)> = io(&c, pool)
        .list_watchers("header")
        .await
        .unwrap()
        .iter()
        .map(|w| (w.global_id, w.cookie))
        .collect();
    assert!(!left.contains(&(a.global_id(), ca)), "{left:?}");
    assert_eq!(left.len(), 2);
    assert!(a.watch_check(ca).is_err(), "an unwatched cookie is not connected");
    assert!(b.watch_check(cb).unwrap() < Duration::from_secs(5));
    drop((a, b, c));
    let _ = (ta, tb);
    cluster.shutdown().await;
}

/// Goal: a watcher learns that its watch broke when the OSD holding it restarts (its
/// connection closes: ENOTCONN), `watch_check` reports it, and it can watch again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_errors_when_its_osd_restarts() {
    let mut cluster = Cluster::builder().osds(1).start().await;
    cluster.logs().allow_raft_churn();
    let rados = cluster.admin().await;
    let pool = rados.pool_id("rbd").unwrap();
    io(&rados, pool).write_full("obj", Bytes::from_static(b"x")).await.unwrap();
    let mut watch = io(&rados, pool).watch("obj", None).await.unwrap();
    assert!(rados.watch_check(watch.cookie()).is_ok());

    cluster.restart_osd(0).await;
    assert_eq!(next(&mut watch).await, WatchEvent::Error(ErrorCode::ENOTCONN));
    assert_eq!(rados.watch_check(watch.cookie()).unwrap_err().errno(), ErrorCode::ENOTCONN);

    let again = io(&rados, pool).watch("obj", None).await.unwrap();
    let listed = io(&rados, pool).list_watchers("obj").await.unwrap();
    assert_eq!(listed.iter().map(|w| w.cookie).collect::<Vec<_>>(), vec![again.cookie()]);
    drop(rados);
    cluster.shutdown().await;
}

/// Goal: blocklisting fences a client on every OSD op: its ops that were on their way when
/// the entry was added (held by a stalled link to the OSD) never apply and fail with
/// ESHUTDOWN, its next op fails with `(108) Cannot send after transport endpoint shutdown`,
/// and its watches are dropped. Method: the victim writes `before`, watches an object, then
/// pipelines writes of `after` through a stalled proxy; the blocklist entry is added and
/// reaches the OSD's map; the proxy releases the writes; the object still holds `before`.
/// An address entry (`127.0.0.1:0/GID`) fences a second client the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocklisted_clients_stalled_ops_never_apply() {
    let cluster = Cluster::builder().osds(1).osd_fronts().start().await;
    cluster.logs().expect("blocklisted: refusing every op");
    let admin = cluster.admin().await;
    let victim = cluster.admin().await;
    let pool = admin.pool_id("rbd").unwrap();
    io(&victim, pool).write_full("x", Bytes::from_static(b"before")).await.unwrap();
    io(&victim, pool).write_full("w", Bytes::from_static(b"watched")).await.unwrap();
    let mut watch = io(&victim, pool).watch("w", None).await.unwrap();

    cluster.osd_front(0).stall();
    let stalled: Vec<_> = (0..8)
        .map(|i| {
            let victim = victim.clone();
            tokio::spawn(async move {
                io(&victim, pool).write_full("x", Bytes::from(format!("after {i}"))).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let instance = format!("client.admin@{}", victim.global_id());
    admin.command(MonCommand::BlocklistAdd { instance, expire_secs: 3600 }).await.unwrap();
    let epoch = admin.map().epoch;
    let deadline = std::time::Instant::now() + WAIT;
    while cluster.osd(0).map_epoch() < epoch {
        assert!(std::time::Instant::now() < deadline, "the OSD never got the blocklist");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.osd_front(0).resume();
    for op in stalled {
        let err = op.await.unwrap().expect_err("a stalled op of a blocklisted client");
        assert_eq!(err.errno(), ErrorCode::ESHUTDOWN, "{err}");
    }
    let err = io(&victim, pool).write_full("x", Bytes::from_static(b"later")).await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::ESHUTDOWN);
    assert!(err.errno().to_string() == "(108) Cannot send after transport endpoint shutdown");
    assert_eq!(io(&admin, pool).read("x", 0, 0).await.unwrap(), Bytes::from_static(b"before"));

    // Its watch is dropped by the OSD, which tells it (or its connection goes).
    assert!(matches!(next(&mut watch).await, WatchEvent::Error(_)));
    let deadline = std::time::Instant::now() + WAIT;
    while !io(&admin, pool).list_watchers("w").await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the blocklisted watch stays");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An address entry: the OSD sees this client as 127.0.0.1:0/GID.
    let other = cluster.admin().await;
    io(&other, pool).write_full("y", Bytes::from_static(b"mine")).await.unwrap();
    let addr = format!("127.0.0.1:0/{}", other.global_id());
    admin
        .command(MonCommand::BlocklistAdd { instance: addr.clone(), expire_secs: 60 })
        .await
        .unwrap();
    other.wait_for_epoch(admin.map().epoch).await.unwrap();
    let err = io(&other, pool).read("y", 0, 0).await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::ESHUTDOWN);
    admin.command(MonCommand::BlocklistRm { entry: addr.clone() }).await.unwrap();
    assert!(!admin.map().blocklist.contains_key(&addr));
    drop((admin, victim, other));
    cluster.shutdown().await;
}

/// Goal: when the OSD stops being the primary of a watched object's PG (here: its pool is
/// deleted, the one acting-set change the cluster makes today), it drops the watch and tells
/// the watcher (ENOTCONN) on its still-open connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_errors_when_its_pg_leaves_the_osd() {
    let cluster = Cluster::builder().osds(1).start().await;
    let rados = cluster.admin().await;
    let create = MonCommand::PoolCreate { name: "gone".into(), pg_num: Some(4), size: Some(1) };
    rados.command(create).await.unwrap();
    let pool = rados.pool_id("gone").unwrap();
    io(&rados, pool).write_full("obj", Bytes::from_static(b"x")).await.unwrap();
    let mut watch = io(&rados, pool).watch("obj", None).await.unwrap();
    rados.command(MonCommand::PoolRm { name: "gone".into() }).await.unwrap();
    assert_eq!(next(&mut watch).await, WatchEvent::Error(ErrorCode::ENOTCONN));
    drop(rados);
    cluster.shutdown().await;
}

/// Goal: a watch stays with its object when the pool splits and when it merges back. On one
/// OSD the object's new PG has the same primary, so the OSD keeps the watch, the watch's
/// pings (which name the object's PG in the newest map) keep confirming it, and the same
/// watch acks a notify after each change with no error in between. (Before, the OSD kept a
/// watch under the PG it was made in: the first ping naming the new PG was refused, the
/// watch broke with ENOTCONN, and a notify meanwhile waited for the broken watch until its
/// timeout: the notifier saw ETIMEDOUT.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stays_with_its_object_across_a_split_and_a_merge() {
    let cluster = Cluster::builder().osds(1).start().await;
    let (rados, notifier) = (cluster.admin().await, cluster.admin().await);
    let create = MonCommand::PoolCreate { name: "moving".into(), pg_num: Some(4), size: Some(1) };
    rados.command(create).await.unwrap();
    let pool = rados.pool_id("moving").unwrap();
    let moves = |n: &String| quarry_placement::pg_of(n, 4) != quarry_placement::pg_of(n, 8);
    let name = (0..).map(|i| format!("obj{i}")).find(moves).unwrap();
    io(&rados, pool).write_full(&name, Bytes::from_static(b"x")).await.unwrap();
    // A 3 s timeout: pinged every second.
    let mut watch = io(&rados, pool).watch(&name, Some(Duration::from_secs(3))).await.unwrap();
    for (pg_num, when) in [(8u32, "after the split"), (4, "after the merges")] {
        let (var, val) = ("pg_num".to_string(), pg_num.to_string());
        rados.command(MonCommand::PoolSet { pool: "moving".into(), var, val }).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while [&rados, &notifier].iter().any(|r| r.map().pools[&pool].pg_num != pg_num) {
            assert!(tokio::time::Instant::now() < deadline, "pg_num not {pg_num} in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The object is served from its new PG; then the watch is pinged there.
        io(&notifier, pool).write_full(&name, Bytes::from_static(b"y")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let confirmed = rados.watch_check(watch.cookie());
        assert!(
            confirmed.as_ref().is_ok_and(|d| *d < Duration::from_secs(2)),
            "{when}: {confirmed:?}"
        );
        let io_n = io(&notifier, pool);
        let obj = name.clone();
        let notify = tokio::spawn(async move {
            io_n.notify(&obj, b"hello watchers", Some(Duration::from_secs(5))).await
        });
        match next(&mut watch).await {
            WatchEvent::Notify { notify_id, .. } => {
                rados.notify_ack(watch.cookie(), notify_id, b"here").await.unwrap()
            }
            other => panic!("{when}: {other:?} instead of the notify"),
        }
        let outcome = notify.await.unwrap().unwrap();
        assert_eq!(outcome.acks.len(), 1, "{when}: {outcome:?}");
        assert!(outcome.missed.is_empty(), "{when}: {outcome:?}");
    }
    drop(watch);
    drop((rados, notifier));
    cluster.shutdown().await;
}
