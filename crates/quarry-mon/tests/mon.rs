//! The monitor over real TCP on 127.0.0.1 with real files: maps, authentication, commands,
//! capabilities, subscriptions, OSD liveness, tickets, restart, and hostile input.

mod common;

use std::time::Duration;

use quarry_auth::{CryptoKey, Keyring};
use quarry_types::{EntityName, ErrorCode};
use quarry_wire::{Event, MonCommand, MonReply, Reply, Request, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;

#[tokio::test]
async fn map_has_bootstrap_pool_and_auth_refuses_bad_keys() {
    let mon = common::start().await;
    let keys = mon.keys();
    mon.logs()
        .expect("monitor refused authentication entity=client.admin")
        .expect("monitor refused authentication entity=client.nobody");
    let admin = common::admin(mon.addr(), &keys).await;
    let m = map(&admin).await;
    let rbd = m.pool_by_name("rbd").expect("pool rbd");
    assert_eq!(rbd.pg_num, 32);
    assert_eq!(rbd.acting.len(), 32);
    assert!(rbd.acting.iter().all(|set| set == &vec![0]));
    assert!(rbd.applications.contains("rbd"));
    assert_eq!(m.osds[&0].host, "host0");
    assert!(!m.osds[&0].up);
    assert_eq!(m.mons.get("a"), Some(&mon.addr()));
    assert_eq!(*mon.map(), m);

    let wrong = connect(mon.addr(), &EntityName::client("admin"), &CryptoKey::generate()).await;
    let Err(WireError::Refused(ErrorCode::EACCES, wrong)) = wrong else {
        panic!("{:?}", wrong.err());
    };
    let unknown = connect(mon.addr(), &EntityName::client("nobody"), &keys.admin).await;
    let Err(WireError::Refused(ErrorCode::EACCES, unknown)) = unknown else {
        panic!("{:?}", unknown.err());
    };
    // One answer: an unauthenticated peer cannot tell which names exist.
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, quarry_wire::AUTH_DENIED_REASON);
    // The admin session is unaffected by the refusals.
    assert_eq!(map(&admin).await.epoch, m.epoch);
    mon.shutdown().await;
}

#[tokio::test]
async fn pool_commands() {
    let mon = common::start().await;
    let keys = mon.keys();
    let admin = common::admin(mon.addr(), &keys).await;
    let create = |name: &str, pg_num: Option<u32>| MonCommand::PoolCreate {
        name: name.into(),
        pg_num,
        size: None,
    };
    assert_eq!(done(&admin, create("vms", Some(16))).await, "pool 'vms' created");
    assert_eq!(done(&admin, create("vms", Some(16))).await, "pool 'vms' already exists");
    let m = map(&admin).await;
    let vms = m.pool_by_name("vms").unwrap();
    assert_eq!((vms.pg_num, vms.size, vms.acting.len()), (16, 1, 16));
    assert_ne!(vms.id, m.pool_by_name("rbd").unwrap().id);
    assert_eq!(done(&admin, create("small", None)).await, "pool 'small' created");
    assert_eq!(map(&admin).await.pool_by_name("small").unwrap().pg_num, 8);

    fails(&admin, create("zero", Some(0)), ErrorCode::EINVAL).await;
    fails(&admin, create("huge", Some(1025)), ErrorCode::EINVAL).await;
    fails(&admin, create("", None), ErrorCode::EINVAL).await;
    fails(&admin, create("bad name", None), ErrorCode::EINVAL).await;
    let too_big = MonCommand::PoolCreate { name: "big".into(), pg_num: None, size: Some(0) };
    fails(&admin, too_big, ErrorCode::EINVAL).await;

    let enable = MonCommand::PoolApplicationEnable { pool: "vms".into(), app: "rbd".into() };
    assert_eq!(done(&admin, enable).await, "enabled application 'rbd' on pool 'vms'");
    let missing = MonCommand::PoolApplicationEnable { pool: "nope".into(), app: "rbd".into() };
    fails(&admin, missing, ErrorCode::ENOENT).await;

    let epoch = map(&admin).await.epoch;
    assert_eq!(done(&admin, MonCommand::PoolRm { name: "vms".into() }).await, "pool 'vms' removed");
    assert_eq!(
        done(&admin, MonCommand::PoolRm { name: "vms".into() }).await,
        "pool 'vms' does not exist"
    );
    let m = map(&admin).await;
    assert!(m.pool_by_name("vms").is_none());
    assert_eq!(m.epoch, epoch + 1);

    let pool = m.pool_by_name("rbd").unwrap().id;
    assert_eq!(ok(&admin, MonCommand::SnapCreate { pool }).await, MonReply::SnapId(1));
    assert_eq!(ok(&admin, MonCommand::SnapCreate { pool }).await, MonReply::SnapId(2));
    done(&admin, MonCommand::SnapRemove { pool, snap: 1 }).await;
    fails(&admin, MonCommand::SnapRemove { pool, snap: 9 }, ErrorCode::ENOENT).await;
    fails(&admin, MonCommand::SnapCreate { pool: 999 }, ErrorCode::ENOENT).await;
    let rbd = map(&admin).await.pool_by_name("rbd").unwrap().clone();
    assert_eq!(rbd.snap_seq, 2);
    assert!(rbd.removed_snaps.contains(&1));

    match ok(&admin, MonCommand::Status).await {
        MonReply::Status(s) => {
            assert_eq!(s.pgs.0, 32 + 8);
            assert_eq!(s.health, "HEALTH_WARN");
            // Each check's summary, then its items (`ceph health detail`).
            let summaries: Vec<&str> =
                s.health_details.iter().filter_map(|d| d.lines().next()).collect();
            assert!(summaries.contains(&"1 osds down"), "{:?}", s.health_details);
            assert!(summaries.contains(&"Reduced data availability: 40 pgs inactive"));
            assert!(
                s.health_details.iter().any(|d| d.contains("\nosd.") && d.ends_with(" is down")),
                "{:?}",
                s.health_details
            );
            assert_eq!(s.quorum, vec!["a".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    mon.shutdown().await;
}

#[tokio::test]
async fn auth_commands() {
    let mon = common::start().await;
    let keys = mon.keys();
    mon.logs().expect("monitor refused authentication entity=client.qemu");
    let admin = common::admin(mon.addr(), &keys).await;
    let rbd_caps = caps(&[("mon", "profile rbd"), ("osd", "profile rbd pool=rbd")]);
    let goc = |c| MonCommand::AuthGetOrCreate { entity: "client.qemu".into(), caps: c };
    let MonReply::Keyring(text) = ok(&admin, goc(rbd_caps.clone())).await else {
        panic!("keyring")
    };
    let ring = Keyring::parse(&text).unwrap();
    let qemu = EntityName::client("qemu");
    let key = ring.get(&qemu).expect("entry").key.clone();
    let MonReply::Keyring(again) = ok(&admin, goc(rbd_caps.clone())).await else {
        panic!("keyring")
    };
    assert_eq!(Keyring::parse(&again).unwrap().get(&qemu).unwrap().key, key, "same key");
    let msg = fails(&admin, goc(caps(&[("mon", "allow r")])), ErrorCode::EINVAL).await;
    assert_eq!(msg, "key for client.qemu exists but cap mon does not match");
    fails(&admin, goc(caps(&[("osd", "allow rwx pol=x")])), ErrorCode::EINVAL).await;
    fails(
        &admin,
        MonCommand::AuthGetOrCreate { entity: "qemu".into(), caps: rbd_caps.clone() },
        ErrorCode::EINVAL,
    )
    .await;

    let MonReply::Keyring(got) =
        ok(&admin, MonCommand::AuthGet { entity: "client.qemu".into() }).await
    else {
        panic!("keyring")
    };
    assert_eq!(Keyring::parse(&got).unwrap().get(&qemu).unwrap().caps, rbd_caps);
    assert_eq!(
        ok(&admin, MonCommand::AuthGetKey { entity: "client.qemu".into() }).await,
        MonReply::Key(key.to_base64())
    );
    let MonReply::AuthList(list) = ok(&admin, MonCommand::AuthLs).await else { panic!("list") };
    let names: Vec<_> = list.iter().map(|e| e.entity.as_str()).collect();
    for name in ["osd.0", "client.admin", "client.qemu"] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert_eq!(list.len(), 3);

    // The new entity can authenticate with the key it was given.
    connect(mon.addr(), &qemu, &key).await.expect("qemu connects");

    let epoch = map(&admin).await.epoch;
    let new_caps = caps(&[("mon", "allow r")]);
    let caps_cmd = MonCommand::AuthCaps { entity: "client.qemu".into(), caps: new_caps.clone() };
    assert_eq!(done(&admin, caps_cmd).await, "updated caps for client.qemu");
    let m = map(&admin).await;
    assert_eq!(m.epoch, epoch + 1);
    assert!(m.auth_floor.contains_key("client.qemu"));
    fails(
        &admin,
        MonCommand::AuthCaps { entity: "client.nobody".into(), caps: new_caps },
        ErrorCode::ENOENT,
    )
    .await;

    done(&admin, MonCommand::AuthDel { entity: "client.qemu".into() }).await;
    fails(&admin, MonCommand::AuthGet { entity: "client.qemu".into() }, ErrorCode::ENOENT).await;
    fails(&admin, MonCommand::AuthDel { entity: "client.qemu".into() }, ErrorCode::ENOENT).await;
    assert!(connect(mon.addr(), &qemu, &key).await.is_err(), "deleted entity is refused");

    let imported = CryptoKey::generate();
    let mut ring = Keyring::default();
    ring.insert(EntityName::client("backup"), imported.clone(), caps(&[("mon", "allow r")]));
    done(&admin, MonCommand::AuthImport { keyring: ring.to_string() }).await;
    connect(mon.addr(), &EntityName::client("backup"), &imported)
        .await
        .expect("imported entity connects");
    fails(
        &admin,
        MonCommand::AuthImport { keyring: "[client.x]\n\tkey = nope\n".into() },
        ErrorCode::EINVAL,
    )
    .await;

    let bl = MonCommand::BlocklistAdd { instance: "client.qemu@4100".into(), expire_secs: 60 };
    done(&admin, bl).await;
    assert!(map(&admin).await.blocklist.contains_key("client.qemu@4100"));
    let bad = MonCommand::BlocklistAdd { instance: "garbage".into(), expire_secs: 60 };
    fails(&admin, bad, ErrorCode::EINVAL).await;
    mon.shutdown().await;
}

#[tokio::test]
async fn rbd_profile_user_is_denied_admin_commands() {
    let mon = common::start().await;
    let keys = mon.keys();
    let admin = common::admin(mon.addr(), &keys).await;
    let goc = MonCommand::AuthGetOrCreate {
        entity: "client.qemu".into(),
        caps: caps(&[("mon", "profile rbd"), ("osd", "profile rbd pool=rbd")]),
    };
    let MonReply::Keyring(text) = ok(&admin, goc).await else { panic!("keyring") };
    let qemu = EntityName::client("qemu");
    let key = Keyring::parse(&text).unwrap().get(&qemu).unwrap().key.clone();
    let user = connect(mon.addr(), &qemu, &key).await.expect("qemu connects");
    let before = map(&user).await;
    let MonReply::AuthList(auth_before) = ok(&admin, MonCommand::AuthLs).await else { panic!() };

    let denied = [
        MonCommand::PoolCreate { name: "mine".into(), pg_num: None, size: None },
        MonCommand::PoolRm { name: "rbd".into() },
        MonCommand::AuthLs,
        MonCommand::AuthGet { entity: "client.admin".into() },
        MonCommand::AuthGetOrCreate {
            entity: "client.evil".into(),
            caps: caps(&[("mon", "allow *")]),
        },
        MonCommand::AuthCaps { entity: "client.qemu".into(), caps: caps(&[("mon", "allow *")]) },
        MonCommand::AuthDel { entity: "client.admin".into() },
    ];
    for cmd in denied {
        assert_eq!(fails(&user, cmd, ErrorCode::EACCES).await, "access denied");
    }
    let osd_boot =
        Request::OsdBoot { id: 0, addr: "127.0.0.1:1".parse().unwrap(), host: "x".into() };
    assert!(matches!(call(&user, osd_boot).await, Reply::Failed { code: ErrorCode::EACCES, .. }));
    assert!(matches!(
        call(&user, Request::GetServiceKeys).await,
        Reply::Failed { code: ErrorCode::EACCES, .. }
    ));

    assert_eq!(map(&user).await, before, "nothing changed");
    let MonReply::AuthList(auth_after) = ok(&admin, MonCommand::AuthLs).await else { panic!() };
    assert_eq!(auth_after, auth_before);

    // What profile rbd may do: snapshot ids in its pool, blocklist, status.
    let pool = before.pool_by_name("rbd").unwrap().id;
    assert_eq!(ok(&user, MonCommand::SnapCreate { pool }).await, MonReply::SnapId(1));
    done(&user, MonCommand::BlocklistAdd { instance: "client.admin@4097".into(), expire_secs: 1 })
        .await;
    assert!(matches!(ok(&user, MonCommand::Status).await, MonReply::Status(_)));
    mon.shutdown().await;
}

#[tokio::test]
async fn subscribers_receive_new_maps() {
    let mon = common::start().await;
    let keys = mon.keys();
    let mut watcher = admin(mon.addr(), &keys).await;
    let Reply::Map(first) = call(&watcher, Request::Subscribe).await else { panic!("map") };
    let other = admin(mon.addr(), &keys).await;
    done(&other, MonCommand::PoolCreate { name: "pushed".into(), pg_num: Some(4), size: None })
        .await;
    let event = tokio::time::timeout(TIMEOUT, watcher.events.recv()).await.expect("pushed in time");
    let Some(Event::Map(pushed)) = event else { panic!("event {event:?}") };
    assert!(pushed.epoch > first.epoch);
    assert!(pushed.pool_by_name("pushed").is_some());
    // A dropped subscriber does not disturb later changes.
    drop(other);
    let third = admin(mon.addr(), &keys).await;
    done(&third, MonCommand::PoolRm { name: "pushed".into() }).await;
    let Some(Event::Map(next)) =
        tokio::time::timeout(TIMEOUT, watcher.events.recv()).await.unwrap()
    else {
        panic!("second event")
    };
    assert!(next.pool_by_name("pushed").is_none());
    mon.shutdown().await;
}

/// Goal (issue 12, item 3c): a subscriber that stops reading does not make the monitor queue
/// a map per change for it (four such subscribers once cost 404 MB). Method: a subscriber
/// behind a proxy that stops reading from the monitor (`hold_replies`: TCP back-pressure, as
/// a peer that never reads) while the admin makes 400 changes to a map of about 100 KiB (six
/// pools of 1024 PGs): 40 MB of maps, far more than the sockets buffer. When the proxy
/// forwards again the subscriber must get far fewer maps than changes (each map not yet sent
/// is replaced by the newer one), and the last one must be the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_gets_the_newest_map_not_every_map() {
    let mon = common::start().await;
    let keys = mon.keys();
    let admin = admin(mon.addr(), &keys).await;
    for i in 0..6 {
        let create =
            MonCommand::PoolCreate { name: format!("wide{i}"), pg_num: Some(1024), size: None };
        done(&admin, create).await;
    }
    let proxy = mon.proxy().await;
    let mut slow = common::admin(proxy.addr(), &keys).await;
    let Reply::Map(first) = call(&slow, Request::Subscribe).await else { panic!("map") };
    proxy.hold_replies();
    assert!(bincode_len(&first) > 90 << 10, "the map is large: {}", bincode_len(&first));
    const CHANGES: u64 = 400;
    for i in 0..CHANGES {
        let instance = format!("client.admin@{}", 100_000 + i);
        done(&admin, MonCommand::BlocklistAdd { instance, expire_secs: 3600 }).await;
    }
    let newest = map(&admin).await.epoch;
    assert!(newest >= first.epoch + CHANGES);
    proxy.resume();
    let mut received = 0u64;
    let mut last = first.epoch;
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_secs(2), slow.events.recv()).await
    {
        if let Event::Map(m) = event {
            assert!(m.epoch > last, "maps arrive in order");
            last = m.epoch;
            received += 1;
        }
    }
    assert_eq!(last, newest, "the newest map reached the slow subscriber");
    assert!(
        received <= CHANGES * 2 / 3,
        "{received} maps of {CHANGES} changes were queued for a subscriber that did not read"
    );
    mon.shutdown().await;
}

fn bincode_len(map: &quarry_wire::ClusterMap) -> u64 {
    bincode::serialized_size(map).unwrap()
}

#[tokio::test]
async fn osd_boot_beacon_and_down_after_grace() {
    let mon = common::start().await;
    let keys = mon.keys();
    mon.logs()
        .expect("OSD request for another id entity=osd.0 claimed=1")
        .expect("no beacon within grace: marking osd down osd=0");
    let admin = common::admin(mon.addr(), &keys).await;
    let osd = connect(mon.addr(), &EntityName::osd(0), &keys.osd0).await.expect("osd.0 connects");
    let addr = "127.0.0.1:6800".parse().unwrap();
    let wrong_id = Request::OsdBoot { id: 1, addr, host: "host0".into() };
    assert!(matches!(call(&osd, wrong_id).await, Reply::Failed { code: ErrorCode::EACCES, .. }));
    let Reply::Booted { epoch, up_from } =
        call(&osd, Request::OsdBoot { id: 0, addr, host: "host0".into() }).await
    else {
        panic!("boot")
    };
    let m = map(&admin).await;
    assert!(m.osds[&0].up && m.osds[&0].addr == Some(addr) && m.osds[&0].up_from == up_from);
    assert_eq!(m.epoch, epoch);
    match ok(&admin, MonCommand::Status).await {
        MonReply::Status(s) => assert_eq!((s.health.as_str(), s.pgs), ("HEALTH_OK", (32, 32))),
        other => panic!("{other:?}"),
    }

    // Beacons for three grace periods keep it up.
    let usage =
        [(m.pool_by_name("rbd").unwrap().id, quarry_wire::Usage { objects: 3, bytes: 300 })].into();
    let beacon = Request::OsdBeacon {
        id: 0,
        up_from,
        usage,
        disk_used: 1000,
        disk_avail: 9000,
        data_used: 500,
        pgs: None,
    };
    let until = tokio::time::Instant::now() + Duration::from_millis(4500);
    while tokio::time::Instant::now() < until {
        assert_eq!(call(&osd, beacon.clone()).await, Reply::Ack);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let m = map(&admin).await;
    assert!(m.osds[&0].up, "beacons keep the OSD up");
    assert_eq!(m.osds[&0].used_bytes, 1000);
    assert_eq!(m.pool_by_name("rbd").unwrap().stored_objects, 3);

    // Silence: down within grace (1.5 s) plus a check period.
    let silent_from = std::time::Instant::now();
    let m = wait_map(&admin, Duration::from_secs(5), |m| !m.osds[&0].up).await;
    let took = silent_from.elapsed();
    assert!(took >= Duration::from_millis(1200), "marked down too early: {took:?}");
    assert!(took <= Duration::from_millis(3000), "marked down too late: {took:?}");
    assert!(m.epoch > epoch);
    let stale = call(&osd, beacon).await;
    assert!(matches!(stale, Reply::Failed { code: ErrorCode::ENOENT, .. }), "{stale:?}");
    let Reply::Booted { up_from: again, .. } =
        call(&osd, Request::OsdBoot { id: 0, addr, host: "host0".into() }).await
    else {
        panic!("reboot")
    };
    assert!(again > up_from);
    mon.shutdown().await;
}

#[tokio::test]
async fn unknown_osd_registers_only_with_a_key() {
    let mon = common::start().await;
    let keys = mon.keys();
    let admin = common::admin(mon.addr(), &keys).await;
    let goc =
        MonCommand::AuthGetOrCreate { entity: "osd.5".into(), caps: quarry_mon::spec::osd_caps() };
    let MonReply::Keyring(text) = ok(&admin, goc).await else { panic!() };
    let key = Keyring::parse(&text).unwrap().get(&EntityName::osd(5)).unwrap().key.clone();
    let osd5 = connect(mon.addr(), &EntityName::osd(5), &key).await.unwrap();
    let boot =
        Request::OsdBoot { id: 5, addr: "127.0.0.1:6805".parse().unwrap(), host: "host5".into() };
    assert!(matches!(call(&osd5, boot).await, Reply::Booted { .. }));
    let m = map(&admin).await;
    assert!(m.osds[&5].up && m.osds[&5].in_cluster);
    mon.shutdown().await;
}

#[tokio::test]
async fn tickets_open_with_the_service_keys_and_expire() {
    let mon = TestMon::start_with(|b| b.ticket_ttl(Duration::from_secs(4))).await;
    let keys = mon.keys();
    let client = admin(mon.addr(), &keys).await;
    let Reply::Ticket { ticket, session_key, expires_unix } =
        call(&client, Request::GetTicket).await
    else {
        panic!("ticket")
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(expires_unix > now && expires_unix <= now + 5, "expiry {expires_unix} now {now}");
    let ticket_key =
        quarry_auth::open_key(&client.session_key, &session_key).expect("session key opens");

    let osd = connect(mon.addr(), &EntityName::osd(0), &keys.osd0).await.unwrap();
    let Reply::ServiceKeys(sealed) = call(&osd, Request::GetServiceKeys).await else {
        panic!("keys")
    };
    let service_keys =
        quarry_auth::open_service_keys(&osd.session_key, &sealed).expect("keys open");
    let opened = quarry_auth::open_ticket_bytes(&service_keys, &ticket, now).expect("ticket opens");
    assert_eq!(opened.entity, EntityName::client("admin"));
    assert_eq!(opened.global_id, client.global_id);
    assert_eq!(opened.caps, caps(&[("mon", "allow *"), ("osd", "allow *")]));
    assert_eq!(opened.session_key, ticket_key);
    let expired = quarry_auth::open_ticket_bytes(&service_keys, &ticket, expires_unix);
    assert!(matches!(expired, Err(quarry_auth::AuthError::Expired { .. })), "{expired:?}");
    // A client cannot fetch service keys.
    assert!(matches!(
        call(&client, Request::GetServiceKeys).await,
        Reply::Failed { code: ErrorCode::EACCES, .. }
    ));

    // The leader rotates the key half-way through its life; new tickets use the new key.
    let first_id = u64::from_le_bytes(ticket[..8].try_into().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let Reply::Ticket { ticket, .. } = call(&client, Request::GetTicket).await else {
            panic!()
        };
        if u64::from_le_bytes(ticket[..8].try_into().unwrap()) > first_id {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "service key never rotated");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    mon.shutdown().await;
}

#[tokio::test]
async fn state_survives_restart() {
    let mut mon = common::start().await;
    let keys = mon.keys();
    let admin = common::admin(mon.addr(), &keys).await;
    done(&admin, MonCommand::PoolCreate { name: "kept".into(), pg_num: Some(4), size: None }).await;
    let goc = MonCommand::AuthGetOrCreate {
        entity: "client.kept".into(),
        caps: caps(&[("mon", "allow r")]),
    };
    let MonReply::Keyring(text) = ok(&admin, goc).await else { panic!() };
    let kept_key =
        Keyring::parse(&text).unwrap().get(&EntityName::client("kept")).unwrap().key.clone();
    let admin_caps = caps(&[("mon", "allow *"), ("osd", "allow rwx")]);
    let recap = MonCommand::AuthCaps { entity: "client.admin".into(), caps: admin_caps.clone() };
    done(&admin, recap).await;
    let before = map(&admin).await;
    drop(admin);
    mon.stop().await;

    // Restart with the same bootstrap: it must not be applied again.
    mon.start().await;
    let admin = common::admin(mon.addr(), &keys).await;
    let after = map(&admin).await;
    assert!(after.epoch >= before.epoch);
    assert_eq!(after.pools, before.pools);
    assert_eq!(after.fsid, before.fsid);
    connect(mon.addr(), &EntityName::client("kept"), &kept_key).await.expect("entity survived");
    let MonReply::Keyring(text) =
        ok(&admin, MonCommand::AuthGet { entity: "client.admin".into() }).await
    else {
        panic!()
    };
    let admin_entry =
        Keyring::parse(&text).unwrap().get(&EntityName::client("admin")).unwrap().clone();
    assert_eq!(admin_entry.caps, admin_caps, "the bootstrap was not applied again");
    assert_eq!(after.mons.get("a"), Some(&mon.addr()));
    mon.shutdown().await;
}

#[tokio::test]
async fn snapshot_and_log_replay_survive_restart() {
    let mut mon = common::start().await;
    let keys = mon.keys();
    let admin = common::admin(mon.addr(), &keys).await;
    let pool = map(&admin).await.pool_by_name("rbd").unwrap().id;
    // Enough commands for openraft to build a snapshot (every 1000 entries) and some after it.
    let mut last = 0;
    for _ in 0..1100 {
        let MonReply::SnapId(id) = ok(&admin, MonCommand::SnapCreate { pool }).await else {
            panic!()
        };
        last = id;
    }
    assert_eq!(last, 1100);
    let snapshot = mon.dir().join("snapshot");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !snapshot.exists() {
        assert!(tokio::time::Instant::now() < deadline, "no snapshot written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = map(&admin).await;
    drop(admin);
    mon.stop().await;
    let file = quarry_mon::snapshot::load(&mon.dir()).unwrap().expect("snapshot loads");
    assert!(file.state.map.pools[&pool].snap_seq >= 900, "snapshot holds most commands");

    mon.start().await;
    let admin = common::admin(mon.addr(), &keys).await;
    let after = map(&admin).await;
    assert_eq!(after.pools[&pool].snap_seq, 1100, "log after the snapshot replayed");
    assert_eq!(after.pools, before.pools);
    assert_eq!(ok(&admin, MonCommand::SnapCreate { pool }).await, MonReply::SnapId(1101));
    mon.shutdown().await;
}

#[tokio::test]
async fn garbage_and_truncated_frames_close_only_their_connection() {
    let mon = common::start().await;
    let keys = mon.keys();
    let admin = common::admin(mon.addr(), &keys).await;

    let mut garbage = tokio::net::TcpStream::connect(mon.addr()).await.unwrap();
    garbage.write_all(&[0xAB; 4096]).await.unwrap();
    assert_closed(&mut garbage).await;

    let hello = quarry_wire::Message::Hello(quarry_wire::Hello {
        protocol: quarry_wire::PROTOCOL_VERSION,
        service: quarry_wire::Service::Mon,
        entity: EntityName::client("admin"),
        client_nonce: [7; 16],
        ticket: None,
    });
    let frame = quarry_wire::codec::encode_frame(0, 0, &hello, None).unwrap();
    let mut truncated = tokio::net::TcpStream::connect(mon.addr()).await.unwrap();
    truncated.write_all(&frame[..frame.len() - 3]).await.unwrap();
    truncated.shutdown().await.unwrap();
    assert_closed(&mut truncated).await;

    let mut huge = tokio::net::TcpStream::connect(mon.addr()).await.unwrap();
    let mut header = frame[..32].to_vec();
    header[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    huge.write_all(&header).await.unwrap();
    assert_closed(&mut huge).await;

    // The monitor still serves the old session and new ones.
    assert!(map(&admin).await.pool_by_name("rbd").is_some());
    let fresh = common::admin(mon.addr(), &keys).await;
    assert!(map(&fresh).await.pool_by_name("rbd").is_some());
    mon.shutdown().await;
}

async fn assert_closed(stream: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("monitor closes the connection");
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => continue, // a Refused/Challenge frame may come first
        }
    }
}

/// Opens a sealed ticket with the service keys osd.0 fetches (as an OSD would).
async fn open_ticket(mon: std::net::SocketAddr, keys: &Keys, sealed: &[u8]) -> quarry_auth::Ticket {
    let osd = connect(mon, &EntityName::osd(0), &keys.osd0).await.unwrap();
    let Reply::ServiceKeys(keys) = call(&osd, Request::GetServiceKeys).await else {
        panic!("service keys")
    };
    let service_keys = quarry_auth::open_service_keys(&osd.session_key, &keys).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    quarry_auth::open_ticket_bytes(&service_keys, sealed, now).expect("ticket opens")
}

/// Goal: a caps change or deletion revokes every ticket issued before it, even one issued in
/// the same second, and never one issued after it. OSDs honour a ticket iff `issued_unix >=
/// auth_floor[entity]`. Method: ticket, caps change, ticket, delete, re-create, ticket, all
/// within a second or two; compare each ticket's issue time with the floor in force.
#[tokio::test]
async fn auth_floor_revokes_tickets_of_the_same_second_but_not_later_ones() {
    let mon = common::start().await;
    let keys = mon.keys();
    let admin = common::admin(mon.addr(), &keys).await;
    let rbd = caps(&[("mon", "profile rbd"), ("osd", "profile rbd")]);
    let goc = MonCommand::AuthGetOrCreate { entity: "client.qemu".into(), caps: rbd.clone() };
    let MonReply::Keyring(text) = ok(&admin, goc).await else { panic!("keyring") };
    let qemu = EntityName::client("qemu");
    let key = Keyring::parse(&text).unwrap().get(&qemu).unwrap().key.clone();
    let ticket = |conn: &quarry_wire::Connected| {
        let client = conn.client.clone();
        async move {
            let Reply::Ticket { ticket, .. } = client.call(Request::GetTicket).await.unwrap()
            else {
                panic!("ticket")
            };
            ticket
        }
    };
    let honoured = |t: &quarry_auth::Ticket, m: &quarry_wire::ClusterMap| {
        m.auth_floor.get("client.qemu").is_none_or(|&floor| t.issued_unix >= floor)
    };

    let user = connect(mon.addr(), &qemu, &key).await.unwrap();
    let before = open_ticket(mon.addr(), &keys, &ticket(&user).await).await;
    let reduced = caps(&[("mon", "profile rbd"), ("osd", "profile rbd-read-only")]);
    done(&admin, MonCommand::AuthCaps { entity: "client.qemu".into(), caps: reduced.clone() })
        .await;
    let after = open_ticket(mon.addr(), &keys, &ticket(&user).await).await;
    let m = map(&admin).await;
    assert_eq!(after.caps, reduced);
    assert!(!honoured(&before, &m), "a ticket with the old caps survives: {before:?} {m:?}");
    assert!(honoured(&after, &m), "a ticket with the new caps is refused: {after:?} {m:?}");

    done(&admin, MonCommand::AuthDel { entity: "client.qemu".into() }).await;
    let m = map(&admin).await;
    assert!(!honoured(&after, &m), "a deleted entity's ticket survives: {after:?} {m:?}");
    mon.shutdown().await;
}
