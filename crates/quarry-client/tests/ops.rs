//! Object operations through a real cluster: concurrency across every PG, pipelining on one
//! connection, metadata calls, listing, monitor commands, and the blocking wrapper.

use crate::io;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quarry_client::{
    BlockingRados, ErrorCode, MonCommand, MonReply, ObjectOp, SnapContext, SNAP_HEAD,
};

use quarry_testkit::fixtures::name_in_pg;
use quarry_testkit::Cluster;

fn payload(task: usize, object: usize, round: usize, len: usize) -> Bytes {
    let seed = (task * 7919 + object * 104_729 + round * 13) as u32;
    (0..len).map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i as u32) >> 7) as u8).collect()
}

/// 16 tasks write, read back and verify objects spread over all 16 PGs (and so over all three
/// OSDs), concurrently, through one client; then the listing shows exactly those objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_write_and_read_every_pg() {
    let cluster = Cluster::start().await;
    let rados = cluster.admin().await;
    let pool = rados.pool_id("rbd").unwrap();
    let tasks = 16;
    let per_task = 4;
    let work = (0..tasks).map(|t| {
        let rados = rados.clone();
        async move {
            let mut names = Vec::new();
            for o in 0..per_task {
                // Object o of task t lands in PG (t + o) % 16: every PG is used.
                let name = name_in_pg(&format!("t{t}o{o}"), 16, ((t + o) % 16) as u32);
                for round in 0..3 {
                    let data = payload(t, o, round, 4096 * (1 + o) + 17);
                    io(&rados, pool).write_full(&name, data.clone()).await.unwrap();
                    let back = io(&rados, pool).read(&name, 0, 0).await.unwrap();
                    assert_eq!(back, data, "{name} round {round}");
                }
                let tail = Bytes::from_static(b"tail");
                let size = io(&rados, pool).stat(&name).await.unwrap().size;
                io(&rados, pool).write(&name, size, tail.clone()).await.unwrap();
                let end = io(&rados, pool).read(&name, size, 4).await.unwrap();
                assert_eq!(end, tail);
                assert_eq!(io(&rados, pool).stat(&name).await.unwrap().size, size + 4);
                names.push(name);
            }
            names
        }
    });
    let written: BTreeSet<String> =
        futures_join(work.collect()).await.into_iter().flatten().collect();
    assert_eq!(written.len(), tasks * per_task);
    let pgs: BTreeSet<u32> = written.iter().map(|n| quarry_placement::pg_of(n, 16)).collect();
    assert_eq!(pgs.len(), 16, "every PG was used");
    let primaries: BTreeSet<u64> = rados.map().pools[&pool].acting.iter().map(|a| a[0]).collect();
    assert_eq!(primaries.len(), 3, "the PGs are spread over the three OSDs");

    let listed: BTreeSet<String> = rados.list_objects(pool).await.unwrap().into_iter().collect();
    assert_eq!(listed, written);
    rados.shutdown().await;
    cluster.shutdown().await;
}

/// Hundreds of requests in flight at once on the connection to one OSD: each reply is matched
/// to its own request (distinct contents), none is lost or mixed up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_in_flight_on_one_connection() {
    let cluster = Cluster::start().await;
    let rados = cluster.admin().await;
    let pool = rados.pool_id("rbd").unwrap();
    // All objects in PG 5: every request goes to the same primary, on one connection.
    let names: Vec<String> = (0..64).map(|i| name_in_pg(&format!("pipe{i}"), 16, 5)).collect();
    let names = Arc::new(names);
    let writes = (0..names.len()).map(|i| {
        let (rados, names) = (rados.clone(), names.clone());
        async move {
            let data = Bytes::from(format!("object {i} {}", "x".repeat(i * 13)));
            io(&rados, pool).write_full(&names[i], data).await
        }
    });
    for result in futures_join(writes.collect()).await {
        result.unwrap();
    }
    let started = std::time::Instant::now();
    let reads = (0..512).map(|k| {
        let (rados, names) = (rados.clone(), names.clone());
        async move {
            let i = k % names.len();
            let got = io(&rados, pool).read(&names[i], 0, 0).await.unwrap();
            assert_eq!(got, Bytes::from(format!("object {i} {}", "x".repeat(i * 13))));
        }
    });
    futures_join(reads.collect()).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(rados.stats().osd_connections, 1, "all requests shared one connection");
    rados.shutdown().await;
    cluster.shutdown().await;
}

/// xattrs, omap, create/remove and error codes through the convenience calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_calls_and_error_codes() {
    let cluster = Cluster::start().await;
    let rados = cluster.admin().await;
    let pool = rados.pool_id("rbd").unwrap();
    let none = SnapContext::default();

    let err = io(&rados, pool).read("absent", 0, 0).await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::ENOENT);
    assert_eq!(err.to_string(), "(2) No such file or directory");

    io(&rados, pool).create("meta", true).await.unwrap();
    let err = io(&rados, pool).create("meta", true).await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::EEXIST);

    io(&rados, pool).setxattr("meta", "colour", Bytes::from_static(b"blue")).await.unwrap();
    io(&rados, pool).setxattr("meta", "size", Bytes::from_static(b"42")).await.unwrap();
    assert_eq!(io(&rados, pool).getxattr("meta", "colour").await.unwrap(), "blue");
    let all = io(&rados, pool).getxattrs("meta").await.unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), vec!["colour", "size"]);
    io(&rados, pool).rmxattr("meta", "colour").await.unwrap();
    let err = io(&rados, pool).getxattr("meta", "colour").await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::ENODATA);

    let vals: BTreeMap<String, Bytes> =
        (0..10).map(|i| (format!("key{i:02}"), Bytes::from(format!("v{i}")))).collect();
    io(&rados, pool).omap_set("meta", vals.clone()).await.unwrap();
    let (page, more) = io(&rados, pool).omap_get_vals("meta", "", "key", 4).await.unwrap();
    assert_eq!(page.len(), 4);
    assert!(more);
    let (rest, more) = io(&rados, pool).omap_get_vals("meta", "key03", "", 100).await.unwrap();
    assert_eq!(rest.len(), 6);
    assert!(!more);
    io(&rados, pool).omap_rm("meta", vec!["key00".into(), "key09".into()]).await.unwrap();
    let (left, _) = io(&rados, pool).omap_get_vals("meta", "", "", 100).await.unwrap();
    assert_eq!(left.len(), 8);
    assert!(!left.contains_key("key00"));

    // An atomic vector: the guard fails, so the write in the same vector is not applied.
    let guarded = vec![
        ObjectOp::CmpXattr {
            name: "size".into(),
            op: quarry_types::CmpOp::Eq,
            value: Bytes::from_static(b"43"),
        },
        ObjectOp::SetXattr { name: "size".into(), value: Bytes::from_static(b"44") },
    ];
    let err = rados.exec(pool, "meta", &none, SNAP_HEAD, guarded).await.unwrap_err();
    assert!(matches!(err, quarry_client::ClientError::Op { index: 0, .. }), "{err:?}");
    assert_eq!(err.errno(), ErrorCode::ECANCELED);
    assert_eq!(io(&rados, pool).getxattr("meta", "size").await.unwrap(), "42");

    io(&rados, pool).remove("meta").await.unwrap();
    let err = io(&rados, pool).stat("meta").await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::ENOENT);

    // Refused before sending.
    let err = io(&rados, pool).write("x", 0, Bytes::from_static(b"a")).await;
    assert!(err.is_ok());
    let err = rados.exec(pool, "x", &none, 3, vec![ObjectOp::Remove]).await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::EROFS);
    let read = vec![ObjectOp::Read { off: 0, len: 0 }];
    let err = rados.exec(9999, "x", &none, SNAP_HEAD, read).await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::ENOENT);
    assert_eq!(rados.ioctx_by_id(9999).unwrap_err().errno(), ErrorCode::ENOENT);
    assert_eq!(rados.ioctx("nope").await.unwrap_err().errno(), ErrorCode::ENOENT);

    // The I/O context's settings: a read snapshot makes it read-only, an invalid snap
    // context and namespaces/locators (not stored yet) are refused and change nothing.
    let mut at_snap = rados.ioctx("rbd").await.unwrap();
    at_snap.set_read_snap(3);
    let err = at_snap.write_full("x", Bytes::from_static(b"b")).await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::EROFS);
    assert_eq!(io(&rados, pool).read("x", 0, 0).await.unwrap(), "a");
    let mut ctx = rados.ioctx("rbd").await.unwrap();
    let bad = SnapContext { seq: 1, snaps: vec![5] };
    assert_eq!(ctx.set_snap_context(bad).unwrap_err().errno(), ErrorCode::EINVAL);
    assert_eq!(ctx.snap_context(), &SnapContext::default());
    assert_eq!(ctx.set_namespace("a\u{1f}b").unwrap_err().errno(), ErrorCode::EINVAL);
    assert_eq!(ctx.namespace(), "");
    assert_eq!(ctx.set_locator("key").unwrap_err().errno(), ErrorCode::EOPNOTSUPP);
    ctx.set_snap_context(SnapContext { seq: 5, snaps: vec![5] }).unwrap();
    ctx.write_full("x", Bytes::from_static(b"c")).await.unwrap();
    let mut old = ctx.clone();
    old.set_read_snap(5);
    assert_eq!(old.read("x", 0, 0).await.unwrap(), "a", "snapshot 5 keeps the old data");
    assert_eq!(ctx.read("x", 0, 0).await.unwrap(), "c");
    assert_eq!(rados.pool_id("nope").unwrap_err().errno(), ErrorCode::ENOENT);

    rados.shutdown().await;
    let err = io(&rados, pool).read("x", 0, 0).await.unwrap_err();
    assert_eq!(err.errno(), ErrorCode::ESHUTDOWN);
    cluster.shutdown().await;
}

/// Monitor commands: status, and a pool created through the client is usable at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_new_pools() {
    let cluster = Cluster::start().await;
    let rados = cluster.admin().await;
    match rados.command(MonCommand::Status).await.unwrap() {
        MonReply::Status(status) => assert_eq!(status.osds.1, 3, "{status:?}"),
        other => panic!("unexpected {other:?}"),
    }
    let create = MonCommand::PoolCreate { name: "fresh".into(), pg_num: Some(4), size: Some(1) };
    rados.command(create.clone()).await.unwrap();
    let pool = rados.pool_id("fresh").expect("the new pool is in the map at once");
    io(&rados, pool).write_full("o", Bytes::from_static(b"new")).await.unwrap();
    assert_eq!(io(&rados, pool).read("o", 0, 0).await.unwrap(), "new");
    // As Ceph: creating an existing pool succeeds and says so.
    match rados.command(create).await.unwrap() {
        MonReply::Done(line) => assert!(line.contains("already exists"), "{line}"),
        other => panic!("unexpected {other:?}"),
    }
    let err =
        rados.command(MonCommand::AuthGet { entity: "client.nobody".into() }).await.unwrap_err();
    assert!(matches!(err, quarry_client::ClientError::Failed { .. }), "{err:?}");
    assert_eq!(err.errno(), ErrorCode::ENOENT, "{err}");
    rados.shutdown().await;
    cluster.shutdown().await;
}

/// The blocking wrapper from plain threads (as the C ABI uses it), several at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_client_from_many_threads() {
    let cluster = Cluster::start().await;
    let cfg = cluster.admin_config();
    // A plain thread with no runtime context, as a C caller's thread.
    let body = move || {
        let client = Arc::new(BlockingRados::connect(cfg, 2).unwrap());
        let io = client.ioctx("rbd").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (client, io) = (client.clone(), io.clone());
                std::thread::spawn(move || {
                    for i in 0..8 {
                        let name = format!("blocking-{t}-{i}");
                        let data = Bytes::from(format!("thread {t} object {i}"));
                        client.block_on(io.write_full(&name, data.clone())).unwrap();
                        assert_eq!(client.block_on(io.read(&name, 0, 0)).unwrap(), data);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let listed = client.list_objects(io.pool_id()).unwrap();
        assert_eq!(listed.iter().filter(|n| n.starts_with("blocking-")).count(), 32);
    };
    let done = tokio::task::spawn_blocking(move || std::thread::spawn(body).join());
    done.await.unwrap().unwrap();
    cluster.shutdown().await;
}

/// Runs futures concurrently (each on its own task) and collects their outputs in order.
async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
