//! The cluster hooks: OSD and monitor restarts keep their data, a cut OSD-to-monitor link gets
//! the OSD marked down and a resumed one brings it back, disk damage stops an OSD's start.

use std::time::Duration;

use bytes::Bytes;
use quarry_client::{MonCommand, SnapContext, SNAP_HEAD};
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
    let pool = rados.pool_id("rbd").unwrap();
    let none = SnapContext::default();
    for i in 0..8 {
        rados
            .write_full(pool, &format!("o{i}"), Bytes::from(format!("v{i}")), &none)
            .await
            .unwrap();
    }

    // Both OSDs restart on their data; the monitor restarts on its data and address.
    for id in cluster.osd_ids() {
        cluster.restart_osd(id).await;
    }
    cluster.restart_mon().await;
    cluster.wait_osds_up().await;
    for i in 0..8 {
        let got = rados.read(pool, &format!("o{i}"), 0, 0, SNAP_HEAD).await.unwrap();
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
