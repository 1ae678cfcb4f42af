//! Faults: an OSD stopped and restarted on its data directory, op timeouts, a monitor
//! restart.

use crate::io;
use std::time::Duration;

use bytes::Bytes;
use quarry_client::{ClientError, ErrorCode, MonCommand, Rados};

use quarry_testkit::fixtures::{name_in_pg, pgs_with_primary};
use quarry_testkit::Cluster;

/// Ops to the PGs of a stopped OSD block (no error), then succeed once it is back on the same
/// data directory, and what was written before is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_wait_for_a_restarting_osd() {
    let mut cluster = Cluster::start().await;
    cluster.logs().expect("no beacon within grace: marking osd down osd=1");
    let mut cfg = cluster.admin_config();
    cfg.op_timeout = None; // librados' default: wait forever
    let rados = Rados::connect(cfg).await.unwrap();
    let pool = rados.pool_id("rbd").unwrap();
    let victim = 1;
    let pgs = pgs_with_primary(&rados.map(), pool, victim);
    assert!(!pgs.is_empty(), "osd.{victim} is primary of some PGs");
    let names: Vec<String> = pgs.iter().map(|pg| name_in_pg("before", 16, pg.seed)).collect();
    for name in &names {
        io(&rados, pool).write_full(name, Bytes::from(format!("data of {name}"))).await.unwrap();
    }

    cluster.stop_osd(victim).await;
    let blocked_name = names[0].clone();
    let blocked = {
        let rados = rados.clone();
        tokio::spawn(async move {
            let data = Bytes::from_static(b"written while down");
            io(&rados, pool).write(&blocked_name, 100, data).await?;
            io(&rados, pool).read(&blocked_name, 0, 0).await
        })
    };
    // Long enough for the monitor to mark the OSD down (grace 2 s) and the client to retry.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!blocked.is_finished(), "the op must wait for the OSD, not fail");
    let map = rados.map();
    assert!(!map.osds[&victim].up, "the client saw the OSD go down");

    cluster.start_osd(victim).await;
    let read = tokio::time::timeout(Duration::from_secs(30), blocked).await.unwrap().unwrap();
    let data = read.unwrap();
    assert_eq!(&data[..names[0].len() + 8], format!("data of {}", names[0]).as_bytes());
    assert_eq!(&data[100..], b"written while down");
    for name in &names[1..] {
        let got = io(&rados, pool).read(name, 0, 0).await.unwrap();
        assert_eq!(got, Bytes::from(format!("data of {name}")));
    }
    rados.shutdown().await;
    cluster.shutdown().await;
}

/// With `rados_osd_op_timeout` set, an op to a stopped OSD fails with ETIMEDOUT in about
/// that time; ops to other OSDs keep working meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op_timeout_bounds_an_op_to_a_dead_osd() {
    let mut cluster = Cluster::start().await;
    // The test may outlast the grace: the monitor then marks osd.2 down.
    cluster.logs().allow("no beacon within grace: marking osd down osd=2");
    let mut cfg = cluster.admin_config();
    cfg.op_timeout = Some(Duration::from_millis(1500));
    let rados = Rados::connect(cfg).await.unwrap();
    let pool = rados.pool_id("rbd").unwrap();
    let dead = pgs_with_primary(&rados.map(), pool, 2)[0];
    let alive = pgs_with_primary(&rados.map(), pool, 0)[0];
    cluster.stop_osd(2).await;
    let started = std::time::Instant::now();
    let name = name_in_pg("timeout", 16, dead.seed);
    let err = io(&rados, pool).read(&name, 0, 0).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
    assert_eq!(err.errno(), ErrorCode::ETIMEDOUT);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(5), "{took:?}");
    let name = name_in_pg("alive", 16, alive.seed);
    io(&rados, pool).write_full(&name, Bytes::from_static(b"ok")).await.unwrap();
    rados.shutdown().await;
    cluster.shutdown().await;
}

/// An op waiting on a PG whose primary is gone says why once, after a few seconds: one
/// warning and one [`quarry_client::WaitNotice`] naming the PG, while it keeps waiting up to
/// the op timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_a_down_pg_is_told_once() {
    let mut cluster = Cluster::start().await;
    cluster.logs().allow("no beacon within grace: marking osd down osd=2");
    cluster.logs().expect("waiting for PG");
    let mut cfg = cluster.admin_config();
    cfg.op_timeout = Some(Duration::from_secs(7));
    let rados = Rados::connect(cfg).await.unwrap();
    let mut notices = rados.wait_notices();
    let pool = rados.pool_id("rbd").unwrap();
    let dead = pgs_with_primary(&rados.map(), pool, 2)[0];
    cluster.stop_osd(2).await;
    let started = std::time::Instant::now();
    let name = name_in_pg("waiting", 16, dead.seed);
    let reader = io(&rados, pool);
    let read = tokio::spawn(async move { reader.read(&name, 0, 0).await });
    let notice = tokio::time::timeout(Duration::from_secs(6), notices.recv()).await;
    let notice = notice.expect("no notice within 6 s").unwrap();
    let told = started.elapsed();
    assert_eq!(notice.pg, dead);
    assert!(notice.reason == "no OSD up" || notice.reason == "osd.2 does not answer", "{notice}");
    assert!(notice.to_string().starts_with(&format!("waiting for PG {dead}: ")), "{notice}");
    assert!(told >= quarry_client::WAIT_NOTICE_AFTER, "told after {told:?}");
    let err = read.await.unwrap().unwrap_err();
    assert_eq!(err.errno(), ErrorCode::ETIMEDOUT);
    assert!(notices.try_recv().is_err(), "the same op was told twice");
    rados.shutdown().await;
    cluster.shutdown().await;
}

/// `rados_mon_op_timeout` bounds a monitor command: with the monitor gone, a command fails
/// with ETIMEDOUT after it instead of waiting for the monitor to come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mon_op_timeout_bounds_a_command() {
    let mut cluster = Cluster::start().await;
    cluster.logs().allow("no monitor session; retrying");
    cluster.logs().allow("OneshotConsumer.tx.send: is_ok: false");
    let mut cfg = cluster.admin_config();
    cfg.op_timeout = None;
    cfg.mon_op_timeout = Some(Duration::from_millis(1500));
    let rados = Rados::connect(cfg).await.unwrap();
    cluster.stop_mon().await;
    let started = std::time::Instant::now();
    let outcome =
        tokio::time::timeout(Duration::from_secs(15), rados.command(MonCommand::Status)).await;
    let err = outcome.expect("the command outlived its timeout").unwrap_err();
    assert_eq!(err.errno(), ErrorCode::ETIMEDOUT, "{err:?}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(5), "{took:?}");
    rados.shutdown().await;
    cluster.start_mon().await;
    cluster.shutdown().await;
}

/// The monitor goes away and comes back on the same address and data: the client
/// reconnects in the background and commands work again; object ops never needed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_to_a_restarted_monitor() {
    let mut cluster = Cluster::start().await;
    cluster.logs().expect("no monitor session; retrying");
    // Stopping the monitor drops the reply channel of a proposal in flight (an OSD beacon);
    // openraft warns that nobody waits for that answer any more.
    cluster.logs().allow("OneshotConsumer.tx.send: is_ok: false");
    let rados = cluster.admin().await;
    let pool = rados.pool_id("rbd").unwrap();
    cluster.stop_mon().await;
    // Object I/O goes to the OSDs only.
    io(&rados, pool).write_full("during", Bytes::from_static(b"x")).await.unwrap();
    cluster.start_mon().await;
    let status = tokio::time::timeout(Duration::from_secs(20), rados.command(MonCommand::Status))
        .await
        .unwrap();
    assert!(status.is_ok(), "{status:?}");
    assert_eq!(io(&rados, pool).read("during", 0, 0).await.unwrap(), "x");
    rados.shutdown().await;
    cluster.shutdown().await;
}
