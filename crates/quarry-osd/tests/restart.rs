//! Restarting an OSD on the same data dir keeps everything; shutdown releases the directory.

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_survives_a_clean_restart() {
    let cluster = common::start().await;
    let admin = common::admin(&cluster).await;
    let osd = cluster.start_osd_detached(0).await;
    let first = admin.wait_osd_up(0).await.osds[&0].up_from;
    let client = admin.osd_client(osd.addr()).await;
    for i in 0..200 {
        let name = format!("obj{i}");
        client
            .write_full(&name, format!("payload {i}").repeat(i % 7 + 1).as_bytes())
            .await
            .unwrap();
    }
    client.write_full("obj0", b"overwritten").await.unwrap();
    let stats = osd.wal_stats();
    assert!(stats.fsyncs > 0 && stats.entries >= 201, "{stats:?}");

    // The checkpoint worker makes the store durable by time and the log is purged behind it.
    let mut purged = false;
    for _ in 0..100 {
        let pgs = osd.pgs();
        assert_eq!(pgs.len(), crate::common::PG_NUM as usize);
        assert!(pgs.iter().all(|p| p.leader == Some(0)), "{pgs:?}");
        if pgs
            .iter()
            .all(|p| p.applied.is_some() && p.purged == p.applied && p.snapshot == p.applied)
        {
            purged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(purged, "every PG checkpointed and purged: {:?}", osd.pgs());
    assert!(osd.checkpoints() > 0);
    client.write_full("obj1", b"after the purge").await.unwrap();
    osd.shutdown().await;

    // The directory is released: the OSD starts again at once on the same dir.
    let osd = cluster.start_osd_detached(0).await;
    admin.wait_osd_up(first).await;
    let client = admin.osd_client(osd.addr()).await;
    assert_eq!(client.read("obj0").await.unwrap(), b"overwritten");
    assert_eq!(client.read("obj1").await.unwrap(), b"after the purge");
    for i in 2..200 {
        let want = format!("payload {i}").repeat(i % 7 + 1);
        assert_eq!(client.read(&format!("obj{i}")).await.unwrap(), want.as_bytes());
    }
    assert_eq!(client.list_all().await.len(), 200);
    // New writes after the restart work too (the groups were not re-initialised).
    client.write_full("after", b"restart").await.unwrap();
    assert_eq!(client.read("after").await.unwrap(), b"restart");
    osd.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn osd_serves_through_a_monitor_outage_and_rejoins() {
    let mut cluster = common::start().await;
    cluster.logs().expect("no monitor session; retrying");
    let admin = common::admin(&cluster).await;
    let osd = cluster.start_osd_detached(0).await;
    let first = admin.wait_osd_up(0).await.osds[&0].up_from;
    let client = admin.osd_client(osd.addr()).await;
    client.write_full("before", b"outage").await.unwrap();

    let mon_addr = cluster.mon_addr();
    cluster.stop_mon().await;
    // Clients with open sessions keep being served while the monitor is away.
    for i in 0..20 {
        client.write_full(&format!("during{i}"), b"no monitor").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(client.read("before").await.unwrap(), b"outage");

    assert_eq!(cluster.start_mon().await.addr(), mon_addr, "same address");
    let admin = common::admin(&cluster).await;
    // The OSD reconnects and boots again (a new incarnation), and new sessions work.
    let map = admin.wait_osd_up(first).await;
    assert_eq!(map.osds[&0].addr, Some(osd.addr()));
    let fresh = admin.osd_client(osd.addr()).await;
    for i in 0..20 {
        assert_eq!(fresh.read(&format!("during{i}")).await.unwrap(), b"no monitor");
    }
    fresh.write_full("after", b"rejoined").await.unwrap();
    osd.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pools_deleted_while_down_are_dropped_at_start() {
    let cluster = common::start().await;
    let admin = common::admin(&cluster).await;
    let osd = cluster.start_osd_detached(0).await;
    let create =
        quarry_wire::MonCommand::PoolCreate { name: "tmp".into(), pg_num: Some(4), size: Some(1) };
    admin.command(create).await;
    let mut client = admin.osd_client(osd.addr()).await;
    client.pool = "tmp".into();
    for i in 0..20 {
        client.write_full(&format!("t{i}"), b"doomed").await.unwrap();
    }
    let tmp = client.map.pool_by_name("tmp").unwrap().id;
    assert_eq!(osd.pgs().len(), 12);
    assert_eq!(osd.wal_stats().groups, 12);
    osd.shutdown().await;

    admin.command(quarry_wire::MonCommand::PoolRm { name: "tmp".into() }).await;
    let osd = cluster.start_osd_detached(0).await;
    assert!(osd.pgs().iter().all(|p| p.pg.pool != tmp), "{:?}", osd.pgs());
    assert_eq!(osd.wal_stats().groups, 8, "the WAL forgot the deleted pool's groups");
    let client = admin.osd_client(osd.addr()).await;
    client.write_full("survivor", b"rbd").await.unwrap();
    osd.shutdown().await;
    cluster.shutdown().await;
}
