//! The exclusive lock between clients (each a separate `Rados` instance, as two processes
//! would be): the first writer takes it; a second writer asks and the first hands it over
//! (and back); an owner in exclusive mode refuses (EBUSY); an owner that is gone without
//! releasing is blocklisted before its lock is broken, so nothing it still sends can land.
//! Header changes reach the other handles (they see the new size).

use bytes::Bytes;
use quarry_client::{MonCommand, Rados};
use quarry_rbd::{pool, CreateOptions, Image, LockMode, OpenOptions};
use quarry_testkit::Cluster;
use quarry_types::ErrorCode;

use crate::make_pool;

const MIB: u64 = 1 << 20;

async fn a_id(io: &quarry_client::IoCtx) -> String {
    pool::image_id(io, "vm").await.unwrap()
}

async fn open(rados: &Rados, name: &str) -> Image {
    let io = rados.ioctx("rbd").await.unwrap();
    Image::open(&io, name, OpenOptions::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_hand_the_lock_over_and_a_dead_owner_is_fenced() {
    let cluster = Cluster::builder().pool_default_size(1).start().await;
    cluster.logs().allow_raft_churn();
    // The fencing of the dead owner is logged as a warning on purpose.
    cluster.logs().allow("lock owner is gone or unresponsive");
    // The fenced client says so.
    cluster.logs().allow("blocklisted: refusing every op");
    let admin = cluster.admin().await;
    let io = make_pool(&admin, "rbd", 1).await;
    pool::create(&io, "vm", &CreateOptions { order: 20, ..CreateOptions::new(16 * MIB) })
        .await
        .unwrap();

    let (ra, rb) = (cluster.admin().await, cluster.admin().await);
    let a = open(&ra, "vm").await;
    let b = open(&rb, "vm").await;
    assert!(!a.is_lock_owner().await);
    a.write(0, Bytes::from_static(b"from a")).await.unwrap();
    assert!(a.is_lock_owner().await);
    // B asks, A hands over; B's write lands after A's.
    b.write(0, Bytes::from_static(b"from b")).await.unwrap();
    assert!(b.is_lock_owner().await);
    assert!(!a.is_lock_owner().await);
    assert_eq!(&a.read(0, 6).await.unwrap()[..], b"from b");
    // And back.
    a.write(MIB, Bytes::from_static(b"a again")).await.unwrap();
    assert!(a.is_lock_owner().await && !b.is_lock_owner().await);

    // Exclusive mode: the owner keeps it; no_wait fails at once too.
    a.lock_acquire(LockMode::Exclusive, false).await.unwrap();
    let refused = b.write(0, Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(refused.errno(), ErrorCode::EBUSY, "{refused}");
    let refused = b.lock_acquire(LockMode::Cooperative, true).await.unwrap_err();
    assert_eq!(refused.errno(), ErrorCode::EBUSY);
    a.lock_release().await.unwrap();
    b.write(0, Bytes::from_static(b"b owns")).await.unwrap();

    // Header changes reach the other handle.
    b.resize(32 * MIB, |_, _| {}).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while a.size().await != 32 * MIB {
        assert!(tokio::time::Instant::now() < deadline, "A never saw the resize");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // B dies holding the lock (its client stops, the image is never closed): A finds no
    // watch of the owner, blocklists it, breaks the lock and writes.
    let b_addr = format!("127.0.0.1:0/{}", rb.global_id());
    rb.shutdown().await;
    std::mem::forget(b); // no drop-time release: the lock stays with the gone owner
    a.write(0, Bytes::from_static(b"a after b")).await.unwrap();
    assert!(a.is_lock_owner().await);
    // A's client sent the blocklist command, so its map has the entry.
    assert!(
        ra.map().blocklist.contains_key(&b_addr),
        "B not blocklisted: {:?}",
        ra.map().blocklist
    );
    assert_eq!(&a.read(0, 9).await.unwrap()[..], b"a after b");

    // An owner whose client is alive but whose handle no longer watches (cut off, hung) is
    // fenced the same way, and then nothing it sends lands: C takes the lock as a handle
    // would (cookie `auto N`) without a watch; A's next write fences it; C's write to the
    // image's data is refused with ESHUTDOWN and A's data stays.
    a.close().await.unwrap();
    let rc = cluster.admin().await;
    let c_io = rc.ioctx("rbd").await.unwrap();
    let header = quarry_rbd::names::header_object(a_id(&io).await.as_str());
    let take = quarry_cls::lock::LockRequest {
        name: quarry_rbd::lock::LOCK_NAME.into(),
        lock_type: quarry_cls::lock::LockType::Exclusive,
        cookie: "auto 424242".into(),
        tag: quarry_rbd::lock::LOCK_TAG.into(),
        description: String::new(),
        duration_secs: 0,
        may_renew: false,
        must_renew: false,
    };
    c_io.exec(&header, vec![quarry_cls::lock::lock_op(&take)]).await.unwrap();
    let a = open(&ra, "vm").await;
    a.write(0, Bytes::from_static(b"a fenced c")).await.unwrap();
    let c_addr = format!("127.0.0.1:0/{}", rc.global_id());
    assert!(
        ra.map().blocklist.contains_key(&c_addr),
        "C not blocklisted: {:?}",
        ra.map().blocklist
    );
    let prefix = a.header().await.object_prefix;
    let object = quarry_rbd::layout::data_object(&prefix, 0);
    let late = c_io.write(&object, 0, Bytes::from_static(b"late write")).await.unwrap_err();
    assert_eq!(late.errno(), ErrorCode::ESHUTDOWN, "{late}");
    assert_eq!(&a.read(0, 10).await.unwrap()[..], b"a fenced c");
    admin.command(MonCommand::BlocklistRm { entry: c_addr }).await.unwrap();
    rc.shutdown().await;

    a.close().await.unwrap();
    ra.shutdown().await;
    admin.shutdown().await;
    cluster.shutdown().await;
}

/// The lock's holder cookie and whether a watch of `rados`'s client with that cookie is on
/// the header.
async fn lock_cookie_watched(image: &Image, rados: &Rados) -> (String, bool) {
    let info = image.lockers().await.unwrap();
    let cookie = info.lockers.first().map(|l| l.cookie.clone()).unwrap_or_default();
    let n: Option<u64> = cookie.strip_prefix("auto ").and_then(|c| c.parse().ok());
    let header = quarry_rbd::names::header_object(image.id());
    let watchers = image.ioctx().list_watchers(&header).await.unwrap();
    let watched = watchers.iter().any(|w| w.global_id == rados.global_id() && Some(w.cookie) == n);
    (cookie, watched)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_watch_is_re_established_and_the_lock_follows_it() {
    let mut cluster = Cluster::builder().osds(1).pool_default_size(1).start().await;
    cluster.logs().allow_raft_churn();
    // B fences A once A is blocklisted (its watch is gone by then).
    cluster.logs().allow("lock owner is gone or unresponsive");
    cluster.logs().allow("blocklisted: refusing every op");
    cluster.logs().allow("OneshotConsumer.tx.send: is_ok: false");
    let admin = cluster.admin().await;
    let io = make_pool(&admin, "rbd", 1).await;
    pool::create(&io, "vm", &CreateOptions { order: 20, ..CreateOptions::new(16 * MIB) })
        .await
        .unwrap();
    let (ra, rb) = (cluster.admin().await, cluster.admin().await);
    let a = open(&ra, "vm").await;
    a.write(0, Bytes::from_static(b"a before")).await.unwrap();
    let (before, watched) = lock_cookie_watched(&a, &ra).await;
    assert!(watched, "the owner's lock cookie {before} is its watch's");

    // The only OSD restarts: every watch on it breaks. A watches again and moves its lock to
    // the new watch's cookie (lock.set_cookie), still the owner.
    cluster.restart_osd(0).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (cookie, watched) = lock_cookie_watched(&a, &ra).await;
        if cookie != before && watched {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no re-watch: lock cookie {cookie}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(a.is_lock_owner().await, "the re-watch kept the lock");
    a.write(0, Bytes::from_static(b"a after!")).await.unwrap();

    // B asks A (watching again) and A hands over: no fence.
    let b = open(&rb, "vm").await;
    b.write(0, Bytes::from_static(b"b now")).await.unwrap();
    assert!(!a.is_lock_owner().await && b.is_lock_owner().await);
    let a_addr = format!("127.0.0.1:0/{}", ra.global_id());
    assert!(!admin.map().blocklist.contains_key(&a_addr), "a live, re-watched owner was fenced");
    // A's new watch gets header updates.
    b.resize(32 * MIB, |_, _| {}).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while a.size().await != 32 * MIB {
        assert!(tokio::time::Instant::now() < deadline, "A never saw the resize");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // A takes the lock back, then is blocklisted: its watch ends (ESHUTDOWN) and is not
    // re-established, the lock is lost, and its writes fail with ESHUTDOWN and never land.
    a.write(0, Bytes::from_static(b"a owns")).await.unwrap();
    assert!(a.is_lock_owner().await);
    admin
        .command(MonCommand::BlocklistAdd { instance: a_addr.clone(), expire_secs: 3600 })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while a.is_lock_owner().await {
        assert!(tokio::time::Instant::now() < deadline, "A never learnt it was blocklisted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let late = a.write(0, Bytes::from_static(b"a late")).await.unwrap_err();
    assert_eq!(late.errno(), ErrorCode::ESHUTDOWN, "{late}");
    assert_eq!(&b.read(0, 6).await.unwrap()[..], b"a owns");
    // B takes over (A's hold is fenced: its watch is gone).
    b.write(0, Bytes::from_static(b"b again")).await.unwrap();
    assert_eq!(
        a.write(0, Bytes::from_static(b"a later")).await.unwrap_err().errno(),
        ErrorCode::ESHUTDOWN
    );
    assert_eq!(&b.read(0, 7).await.unwrap()[..], b"b again");
    admin.command(MonCommand::BlocklistRm { entry: a_addr }).await.unwrap();

    b.close().await.unwrap();
    let _ = a.close().await;
    ra.shutdown().await;
    rb.shutdown().await;
    admin.shutdown().await;
    cluster.shutdown().await;
}

/// A handle that handed the lock over leaves it to the asker (so the asker is not starved),
/// but not longer than needed: once the asker has taken and released it (its notifies say
/// so), the first handle's next write takes it at once rather than after the grace second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_lock_is_taken_back_as_soon_as_the_asker_is_done() {
    let cluster = Cluster::builder().pool_default_size(1).start().await;
    cluster.logs().allow_raft_churn();
    let admin = cluster.admin().await;
    let io = make_pool(&admin, "rbd", 1).await;
    pool::create(&io, "vm", &CreateOptions { order: 20, ..CreateOptions::new(4 * MIB) })
        .await
        .unwrap();
    let (ra, rb) = (cluster.admin().await, cluster.admin().await);
    let a = open(&ra, "vm").await;
    a.write(0, Bytes::from_static(b"a")).await.unwrap();
    let b = open(&rb, "vm").await;
    b.write(0, Bytes::from_static(b"b")).await.unwrap(); // A hands over
    b.close().await.unwrap(); // and B is done with it
    let started = std::time::Instant::now();
    a.write(0, Bytes::from_static(b"a again")).await.unwrap();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_millis(500), "A waited {took:?} for a free lock");
    assert!(a.is_lock_owner().await);
    a.close().await.unwrap();
    ra.shutdown().await;
    rb.shutdown().await;
    admin.shutdown().await;
    cluster.shutdown().await;
}
