//! The cluster hooks: OSD and monitor restarts keep their data, a cut OSD-to-monitor link gets
//! the OSD marked down and a resumed one brings it back, disk damage stops an OSD's start.

use std::time::Duration;

use bytes::Bytes;
use quarry_client::MonCommand;
use quarry_testkit::{Cluster, DiskFault};

async fn wait_for(cluster: &Cluster, what: &str, pred: impl Fn(&quarry_wire::ClusterMap) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !pred(&cluster.mon().map()) {
        assert!(tokio::time::Instant::now() < deadline, "{what}: {:?}", cluster.mon().map().osds);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_keep_data_and_links_cut_and_resume() {
    let mut cluster =
        Cluster::builder().osds(2).pools(vec![("rbd", 4, 1)]).mon_links().start().await;
    // The OSDs notice the monitor's restart and the cut link; the monitor marks osd.1 down;
    // openraft reports replies nobody waits for any more when an OSD stops.
    cluster
        .logs()
        .expect("no monitor session; retrying")
        .expect("no beacon within grace: marking osd down osd=1")
        .allow("OneshotConsumer.tx.send: is_ok: false");
    let rados = cluster.admin().await;
    let io = rados.ioctx("rbd").await.unwrap();
    for i in 0..8 {
        io.write_full(&format!("o{i}"), Bytes::from(format!("v{i}"))).await.unwrap();
    }

    // Both OSDs restart on their data; the monitor restarts on its data and address.
    for id in cluster.osd_ids() {
        cluster.restart_osd(id).await;
    }
    cluster.restart_mon().await;
    cluster.wait_osds_up().await;
    for i in 0..8 {
        let got = io.read(&format!("o{i}"), 0, 0).await.unwrap();
        assert_eq!(got, Bytes::from(format!("v{i}")));
    }
    let status = tokio::time::timeout(Duration::from_secs(20), rados.command(MonCommand::Status));
    assert!(status.await.unwrap().is_ok());

    // osd.1 loses its monitor: marked down after the grace; the link back brings it up again.
    let up_from = cluster.mon().map().osds[&1].up_from;
    cluster.mon_link(1).cut();
    wait_for(&cluster, "osd.1 marked down", |m| !m.osds[&1].up).await;
    assert!(cluster.mon().map().osds[&0].up, "osd.0 kept its link");
    cluster.mon_link(1).resume();
    wait_for(&cluster, "osd.1 up again", |m| m.osds[&1].up && m.osds[&1].up_from > up_from).await;
    rados.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_stops_the_osd_from_starting() {
    let mut cluster = Cluster::builder().osds(1).pools(vec![("rbd", 4, 1)]).start().await;
    cluster.stop_osd(0).await;
    let files = quarry_testkit::fault::files_under(&cluster.osd_dir(0));
    assert!(files.iter().any(|f| f.to_str() == Some("store.redb")), "{files:?}");
    cluster.damage_osd(0, &DiskFault::FlipByte { file: "store.redb".into(), offset: 0 });
    let err = cluster.try_start_osd(0).await.expect_err("a damaged store must not open");
    assert!(!cluster.osd_running(0));
    eprintln!("start refused: {err}");
    // Put the byte back: the OSD starts again.
    cluster.damage_osd(0, &DiskFault::FlipByte { file: "store.redb".into(), offset: 0 });
    cluster.start_osd(0).await;
    cluster.wait_osds_up().await;
    cluster.shutdown().await;
}

/// A front proxy carries every connection to its OSD: cutting osd.1's isolates it from its
/// peer, so writes to size-2 PGs led by osd.0 cannot commit (they need osd.1) and wait; on
/// resume they complete. osd.1 keeps its registered address across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_front_partitions_a_replica_and_resume_heals_it() {
    let mut cluster =
        Cluster::builder().osds(2).pools(vec![("rep", 4, 2)]).osd_fronts().start().await;
    cluster.logs().allow_raft_churn();
    assert_eq!(cluster.osd(1).addr(), cluster.osd_front(1).addr(), "osd.1 registered its front");
    let rados = cluster.admin().await;
    let pool = rados.pool_id("rep").unwrap();
    let pg = quarry_testkit::fixtures::pgs_with_primary(&rados.map(), pool, 0)[0];
    let name = quarry_testkit::fixtures::name_in_pg("cut", 4, pg.seed);
    let io = rados.ioctx("rep").await.unwrap();
    io.write_full(&name, Bytes::from_static(b"one")).await.unwrap();

    cluster.osd_front(1).cut();
    let write = {
        let (io, name) = (io.clone(), name.clone());
        tokio::spawn(async move { io.write_full(&name, Bytes::from_static(b"two")).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!write.is_finished(), "a write committed without its cut-off replica");
    cluster.osd_front(1).resume();
    let done = tokio::time::timeout(Duration::from_secs(30), write).await;
    done.expect("the write completes once the link is back").unwrap().unwrap();
    assert_eq!(io.read(&name, 0, 0).await.unwrap(), "two");

    let front = cluster.osd_front(1).addr();
    cluster.restart_osd(1).await;
    assert_eq!(cluster.osd(1).addr(), front, "same registered address after a restart");
    assert_ne!(cluster.osd(1).listen_addr(), front);
    rados.shutdown().await;
    cluster.shutdown().await;
}
