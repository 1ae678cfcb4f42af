//! A size-2 pool over two OSDs: the PG groups replicate over the OSD-to-OSD Raft network
//! (peer connections authenticated with the OSDs' own monitor tickets).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{self, OsdClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn size_two_pool_replicates_to_both_osds() {
    let cluster = common::start_with(2, vec![("rep", 4, 2)]).await;
    common::allow_election_noise(&cluster);
    let (a, b) = tokio::join!(cluster.start_osd_detached(0), cluster.start_osd_detached(1));
    let admin = common::admin(&cluster).await;
    let map = admin.map().await;
    let pool = map.pool_by_name("rep").unwrap().clone();
    assert!(pool.acting.iter().all(|set| set.len() == 2), "{:?}", pool.acting);
    let mut clients: BTreeMap<u64, OsdClient> = BTreeMap::new();
    for (id, addr) in [(0, a.addr()), (1, b.addr())] {
        let mut client = admin.osd_client(addr).await;
        client.pool = "rep".into();
        clients.insert(id, client);
    }
    let primary_of =
        |name: &str| pool.acting[quarry_placement::pg_of(name, pool.pg_num) as usize][0];
    for i in 0..40 {
        let name = format!("rep{i}");
        let client = &clients[&primary_of(&name)];
        client.write_full(&name, format!("replicated {i}").as_bytes()).await.unwrap();
    }
    for i in 0..40 {
        let name = format!("rep{i}");
        let client = &clients[&primary_of(&name)];
        assert_eq!(client.read(&name).await.unwrap(), format!("replicated {i}").as_bytes());
    }
    // Both replicas applied the same log in every PG, led by its primary.
    let mut same = false;
    for _ in 0..100 {
        let (pa, pb) = (a.pgs(), b.pgs());
        assert_eq!(pa.len(), 4);
        same = pa
            .iter()
            .zip(&pb)
            .all(|(x, y)| x.pg == y.pg && x.applied == y.applied && x.applied.is_some());
        if same {
            for status in &pa {
                assert_eq!(status.leader, Some(map.acting(status.pg)[0]), "{status:?}");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(same, "replicas diverge: {:?} vs {:?}", a.pgs(), b.pgs());
    // A replica that is not the primary does not serve ops: the client is told to retry.
    let name = "rep0";
    let replica = &clients[&(1 - primary_of(name))];
    let op = quarry_wire::OsdOp {
        reqid: None,
        pg: replica.pg(name),
        epoch: map.epoch,
        name: name.into(),
        snapc: Default::default(),
        snap: quarry_types::SNAP_HEAD,
        ops: vec![quarry_types::ObjectOp::Stat],
    };
    let reply = replica.rpc.call(quarry_wire::Request::Op(op)).await.unwrap();
    assert!(matches!(reply, quarry_wire::Reply::Retry { .. }), "{reply:?}");

    // osd.1 goes away and comes back (new address): its PGs lead again from it, osd.0's PGs
    // replicate to it again, and everything written before is still there.
    let up_from = map.osds[&1].up_from;
    b.shutdown().await;
    let b = cluster.start_osd_detached(1).await;
    let map = loop {
        let map = admin.map().await;
        if map.osds[&1].up_from > up_from && map.osds[&1].up {
            break map;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut fresh = admin.osd_client(b.addr()).await;
    fresh.pool = "rep".into();
    fresh.map = map.clone();
    clients.insert(1, fresh);
    clients.get_mut(&0).unwrap().map = map.clone();
    for i in 0..40 {
        let name = format!("rep{i}");
        let client = &clients[&primary_of(&name)];
        assert_eq!(client.read(&name).await.unwrap(), format!("replicated {i}").as_bytes());
        client.write_full(&name, format!("again {i}").as_bytes()).await.unwrap();
    }
    let mut same = false;
    for _ in 0..100 {
        let (pa, pb) = (a.pgs(), b.pgs());
        same = pa.iter().zip(&pb).all(|(x, y)| x.applied == y.applied);
        if same {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(same, "replicas diverge after the restart: {:?} vs {:?}", a.pgs(), b.pgs());
    a.shutdown().await;
    b.shutdown().await;
    cluster.shutdown().await;
}
