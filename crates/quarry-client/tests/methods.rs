//! Server-side object methods against real daemons: concurrent clients changing one object's
//! state through methods never lose an update (each call runs atomically in the PG's apply,
//! on every replica), the caller identity a method sees is the authenticated one whatever
//! the client sends, and the errors of unknown methods and writing methods at snapshots.

use crate::io;

use bytes::Bytes;
use quarry_client::{ClientError, ErrorCode, ObjectOp, OpOutput, Rados};
use quarry_cls::lock::{self, LockRequest, LockType};
use quarry_cls::numops;
use quarry_testkit::Cluster;
use rand::Rng;

fn errno<T>(r: Result<T, ClientError>) -> Option<ErrorCode> {
    r.err().map(|e| e.errno())
}

async fn lock_info(rados: &Rados, pool: quarry_client::PoolId, object: &str) -> lock::LockInfo {
    let out = io(rados, pool).exec(object, vec![lock::get_info_op("l")]).await.unwrap();
    let OpOutput::Returned(bytes) = &out[0] else { panic!("get_info returned {out:?}") };
    lock::decode_info(bytes).unwrap()
}

fn shared(cookie: &str) -> LockRequest {
    LockRequest {
        name: "l".into(),
        lock_type: LockType::Shared,
        cookie: cookie.into(),
        tag: "t".into(),
        description: String::new(),
        duration_secs: 0,
        may_renew: false,
        must_renew: false,
    }
}

/// Goal: no lost update under concurrency. Method: 4 clients (separate instances), each
/// with 6 calls in flight at a time in random order, do 60 `numops.add` of random amounts on
/// one counter and take then release shared-lock holds under their own cookies on the same
/// object, on a 3-replica pool; the final counter equals the sum of every acknowledged add,
/// exactly, and the lock ends with exactly the holds never released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_method_calls_never_lose_an_update() {
    let cluster = Cluster::builder().osds(3).pools(vec![("p", 4, 3)]).start().await;
    cluster.logs().allow_raft_churn();
    let admin = cluster.admin().await;
    let pool = admin.pool_id("p").unwrap();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(Rados::connect(cluster.admin_config()).await.unwrap());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (c, client) in clients.iter().enumerate() {
        let ioctx = io(client, pool);
        let gid = client.global_id();
        tasks.spawn(async move {
            let mut total = 0i64;
            let mut kept = Vec::new();
            for round in 0..10usize {
                let mut calls = Vec::new();
                for i in 0..6usize {
                    let amount = rand::thread_rng().gen_range(1..100i64);
                    calls.push((amount, format!("c{c}-{round}-{i}")));
                }
                let mut inflight = tokio::task::JoinSet::new();
                for (amount, cookie) in calls.clone() {
                    let ioctx = ioctx.clone();
                    inflight.spawn(async move {
                        let ops = vec![numops::add_op("count", amount as f64)];
                        ioctx.exec("header", ops).await.unwrap();
                        ioctx.exec("header", vec![lock::lock_op(&shared(&cookie))]).await.unwrap();
                    });
                }
                while let Some(done) = inflight.join_next().await {
                    done.unwrap();
                }
                for (i, (amount, cookie)) in calls.into_iter().enumerate() {
                    total += amount;
                    if (round + i) % 3 == 0 {
                        kept.push(cookie);
                    } else {
                        let unlock = lock::UnlockRequest { name: "l".into(), cookie };
                        ioctx.exec("header", vec![lock::unlock_op(&unlock)]).await.unwrap();
                    }
                }
            }
            (gid, total, kept)
        });
    }
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next().await {
        results.push(done.unwrap());
    }
    let expected: i64 = results.iter().map(|(_, total, _)| total).sum();
    let vals = io(&admin, pool)
        .exec("header", vec![ObjectOp::OmapGetValsByKeys { keys: vec!["count".into()] }])
        .await
        .unwrap();
    let OpOutput::OmapVals { vals, .. } = &vals[0] else { panic!("{vals:?}") };
    let count: f64 = std::str::from_utf8(&vals["count"]).unwrap().parse().unwrap();
    assert_eq!(count as i64, expected, "numops.add lost updates");
    let info = lock_info(&admin, pool, "header").await;
    let mut held: Vec<(String, String)> =
        info.lockers.into_iter().map(|l| (l.locker, l.cookie)).collect();
    held.sort();
    let mut want: Vec<(String, String)> = results
        .iter()
        .flat_map(|(gid, _, kept)| kept.iter().map(move |c| (format!("client.{gid}"), c.clone())))
        .collect();
    want.sort();
    assert_eq!(held, want, "lock holders lost or kept wrongly");
    for client in clients {
        client.shutdown().await;
    }
    admin.shutdown().await;
    cluster.shutdown().await;
}

/// Goal: a method trusts the caller identity. Method: a client puts a forged origin in its
/// call; the lock records the real instance (`client.GID`) and address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_osd_stamps_the_real_caller_and_refuses_bad_calls() {
    let cluster = Cluster::builder().osds(1).pools(vec![("p", 4, 1)]).start().await;
    let admin = cluster.admin().await;
    let pool = admin.pool_id("p").unwrap();
    let ObjectOp::Call { class, method, input, .. } = lock::lock_op(&shared("mine")) else {
        unreachable!()
    };
    let forged = quarry_client::CallOrigin {
        entity: "client.victim".into(),
        global_id: 1,
        addr: "10.0.0.1:0/1".into(),
    };
    let call = ObjectOp::Call { class, method, input, origin: Some(forged) };
    io(&admin, pool).exec("obj", vec![call]).await.unwrap();
    let info = lock_info(&admin, pool, "obj").await;
    assert_eq!(info.lockers.len(), 1);
    assert_eq!(info.lockers[0].locker, format!("client.{}", admin.global_id()));
    assert!(info.lockers[0].addr.starts_with("127.0.0.1:0/"), "{:?}", info.lockers[0].addr);

    // Unknown class or method: EOPNOTSUPP, nothing proposed.
    let ioctx = io(&admin, pool);
    let unknown = ioctx.call("obj", "lock", "steal", Bytes::new()).await;
    assert_eq!(errno(unknown), Some(ErrorCode::EOPNOTSUPP));
    let unknown = ioctx.call("obj", "nosuchclass", "x", Bytes::new()).await;
    assert_eq!(errno(unknown), Some(ErrorCode::EOPNOTSUPP));
    // Garbage input: EINVAL from the method, and nothing changed.
    let garbage = ioctx.call("obj", "lock", "lock", Bytes::from_static(b"\x01zz")).await;
    assert_eq!(errno(garbage), Some(ErrorCode::EINVAL));
    assert_eq!(lock_info(&admin, pool, "obj").await.lockers.len(), 1);
    // A read-only method runs through `call` too.
    let bytes = ioctx.call("obj", "lock", "list_locks", quarry_cls::codec::encode(&())).await;
    assert_eq!(lock::decode_names(&bytes.unwrap()).unwrap(), vec!["l".to_string()]);
    // A writing method at a snapshot is EROFS.
    let mut at_snap = io(&admin, pool);
    at_snap.set_read_snap(1);
    let refused = at_snap.exec("obj", vec![numops::add_op("k", 1.0)]).await;
    assert_eq!(errno(refused), Some(ErrorCode::EROFS));
    admin.shutdown().await;
    cluster.shutdown().await;
}
