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

/// A new PG's primary whose first campaign meets a voter that does not run the group yet
/// (that OSD's map with the new pool is late) campaigns again as soon as it learns so, at its
/// next pass: the PG has a leader about a second after the voter starts the group, not after
/// the primary's election timer or its 4 s wait for a leaderless PG (a client's op waits
/// meanwhile; seen as a 5 s op wait in a test that creates a pool). The Raft heartbeat is
/// 4 s here, so neither of those comes within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_pgs_primary_campaigns_again_once_a_late_voter_starts_it() {
    let cluster = quarry_testkit::Cluster::builder()
        .osds(2)
        .pools(vec![])
        .pool_default_size(2)
        .mon_links()
        .osd_grace(Duration::from_secs(60))
        .raft_heartbeat(Duration::from_secs(4))
        .start()
        .await;
    common::allow_election_noise(&cluster);
    let rados = cluster.admin().await;
    // osd.1 gets no map from now on: it will not know the pool.
    cluster.mon_link(1).stall();
    let created =
        rados.mon_command(r#"{"prefix":"osd pool create","pool":"late","pg_num":16}"#, b"").await;
    assert_eq!(created.rc, 0, "{}", created.outs);
    let map = loop {
        let map = rados.map();
        if map.pool_by_name("late").is_some() {
            break map;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pool = map.pool_by_name("late").unwrap();
    let led_by_0: Vec<quarry_types::PgId> = (0..pool.pg_num)
        .map(|seed| quarry_types::PgId { pool: pool.id, seed })
        .filter(|pg| map.acting(*pg) == [0, 1])
        .collect();
    assert!(!led_by_0.is_empty(), "no PG of 16 has osd.0 as its primary: {:?}", pool.acting);
    // osd.0 starts its groups and campaigns; osd.1 answers that it does not run them.
    let started =
        |pgs: &[quarry_osd::PgStatus]| led_by_0.iter().all(|pg| pgs.iter().any(|s| s.pg == *pg));
    for _ in 0..200 {
        if started(&cluster.osd(0).pgs()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(started(&cluster.osd(0).pgs()), "osd.0 did not start {led_by_0:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        cluster.osd(0).pgs().iter().all(|s| !led_by_0.contains(&s.pg) || s.leader.is_none()),
        "a PG has a leader while its other voter cannot know it: {:?}",
        cluster.osd(0).pgs()
    );
    // osd.1 gets the map and starts the groups: osd.0 leads each soon after.
    let resumed = std::time::Instant::now();
    cluster.mon_link(1).resume();
    let led = |pgs: &[quarry_osd::PgStatus]| {
        led_by_0.iter().all(|pg| pgs.iter().any(|s| s.pg == *pg && s.leader == Some(0)))
    };
    while !led(&cluster.osd(0).pgs()) && resumed.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = resumed.elapsed();
    assert!(led(&cluster.osd(0).pgs()), "no leader in 30 s: {:?}", cluster.osd(0).pgs());
    assert!(
        took < Duration::from_secs(3),
        "{} PG(s) led by osd.0 {took:?} after osd.1 could start them (a retry waits >= 3.5 s)",
        led_by_0.len()
    );
    // And the pool serves writes.
    let io = rados.ioctx("late").await.unwrap();
    for i in 0..8 {
        let name = format!("late{i}");
        io.write_full(&name, bytes::Bytes::from(name.clone())).await.unwrap();
        assert_eq!(&io.read(&name, 0, 64).await.unwrap()[..], name.as_bytes());
    }
    cluster.shutdown().await;
}

/// A PG whose primary leaves it (marked out) while the voter that becomes its primary cannot
/// be reached: the move's membership change commits without that voter, the old primary
/// steps down to a learner and replicates nothing more, and the new primary's log is behind
/// the two other voters', which refuse its campaigns. Those voters must not wait for the old
/// primary, whom openraft still names their leader, but campaign themselves: one wins, brings
/// the new primary up to date and hands over, and the PG serves again. (Seen in CI as a put
/// and a listing that never returned after a pool split 4 -> 16 moved its children: the
/// voters waited for a leader that was no longer a voter, for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn voters_do_not_wait_for_a_leader_the_membership_removed() {
    let cluster = quarry_testkit::Cluster::builder()
        .osds(4)
        .pools(vec![("rbd", 8, 3)])
        .osd_fronts()
        .osd_grace(Duration::from_secs(60))
        .start()
        .await;
    common::allow_election_noise(&cluster);
    // openraft, when a replication result meets a newer membership (PGs moving).
    cluster.logs().allow("membership_log_id changed");
    // The client, while the PG elects a leader after the heir is reachable again.
    cluster.logs().allow("is not ready for it");
    let rados = cluster.admin().await;
    let io = rados.ioctx("rbd").await.unwrap();
    let map = rados.map();
    let pool = map.pool_by_name("rbd").unwrap().clone();
    let pg = (0..pool.pg_num)
        .map(|seed| quarry_types::PgId { pool: pool.id, seed })
        .find(|pg| map.acting(*pg).first() == Some(&0))
        .expect("a PG whose primary is osd.0");
    let old = map.acting(pg).to_vec();
    let heir = old[1];
    let name = (0..)
        .map(|i| format!("moved{i}"))
        .find(|n| quarry_placement::pg_of(n, pool.pg_num) == pg.seed)
        .unwrap();
    io.write_full(&name, bytes::Bytes::from_static(b"before")).await.unwrap();

    // The heir hears nothing from now on (its own connections out still work: its
    // campaigns reach the other voters and are refused, as their logs are longer).
    cluster.osd_front(heir).cut();
    let mon = common::admin(&cluster).await;
    mon.command(quarry_wire::MonCommand::OsdMark { ids: vec![0], mark: "out".into() }).await;
    let moved = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let map = rados.map();
            if !map.is_remapped(pg) && !map.acting(pg).contains(&0) {
                return map.acting(pg).to_vec();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the pg moved off osd.0 within 60 s");
    assert_eq!(
        moved.first(),
        Some(&heir),
        "the new primary is the old second: {old:?} -> {moved:?}"
    );
    // The new primary campaigns and is refused by log for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.osd_front(heir).resume();
    let statuses = || -> Vec<quarry_osd::PgStatus> {
        [1, 2, 3]
            .iter()
            .flat_map(|&id| cluster.osd(id).pgs().into_iter().filter(|s| s.pg == pg))
            .collect()
    };
    let served = tokio::time::timeout(Duration::from_secs(120), async {
        io.write_full(&name, bytes::Bytes::from_static(b"after")).await?;
        io.read(&name, 0, 64).await
    })
    .await;
    match served {
        Ok(Ok(data)) => assert_eq!(&data[..], b"after"),
        other => panic!("pg {pg} served nothing after the move ({other:?}): {:?}", statuses()),
    }
    cluster.shutdown().await;
}
