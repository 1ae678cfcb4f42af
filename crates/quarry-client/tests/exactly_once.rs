//! Exactly-once and ordered ops against a real OSD: a mutation or method call whose reply is
//! lost (the
//! connection drops after the OSD applied it, before the reply reaches the client) is resent
//! by the client with the same request id and answered from the PG's duplicate table, also
//! after an OSD restart; 1000 pipelined writes to one object apply in the order they were
//! started, also across a connection drop.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use quarry_client::{ClientError, ErrorCode, IoCtx, ObjectOp, Rados};
use quarry_testkit::Cluster;
use quarry_types::CmpOp;

use crate::io;

/// One OSD behind a front proxy (so its client connections can be cut and replies held).
async fn cluster() -> Cluster {
    Cluster::builder().osds(1).pools(vec![("rbd", 8, 1)]).osd_fronts().start().await
}

/// Entries applied on osd.0 over all its PGs.
fn applied(cluster: &Cluster) -> u64 {
    cluster.osd(0).pgs().iter().filter_map(|pg| pg.applied).sum()
}

/// Runs `op` with its reply lost: holds replies at the OSD's front, waits until the OSD has
/// applied something (the op), then (optionally restarts the OSD and) cuts the connection, so
/// the client resends the op on a new connection. Returns the op's result.
async fn with_lost_reply<T: Send + 'static>(
    cluster: &mut Cluster,
    restart: bool,
    op: impl Future<Output = Result<T, ClientError>> + Send + 'static,
) -> Result<T, ClientError> {
    let before = applied(cluster);
    cluster.osd_front(0).hold_replies();
    let task = tokio::spawn(op);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while applied(cluster) <= before {
        assert!(tokio::time::Instant::now() < deadline, "the op was not applied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!task.is_finished(), "the reply got through");
    if restart {
        cluster.restart_osd(0).await;
    }
    cluster.osd_front(0).cut();
    tokio::time::sleep(Duration::from_millis(50)).await;
    cluster.osd_front(0).resume();
    tokio::time::timeout(Duration::from_secs(30), task).await.expect("op answered").unwrap()
}

async fn lost_replies_are_answered_once(restart: bool) {
    let mut cluster = cluster().await;
    let rados = cluster.admin().await;
    let pool = rados.pool_id("rbd").unwrap();
    let ctx = io(&rados, pool);
    // A first op opens the connection (and elects the PG leaders).
    ctx.write_full("warmup", Bytes::from_static(b"x")).await.unwrap();

    // Exclusive create: success, and the object exists once.
    let c = ctx.clone();
    let created =
        with_lost_reply(&mut cluster, restart, async move { c.create("obj", true).await });
    created.await.expect("a resent exclusive create reports its first success");
    ctx.stat("obj").await.unwrap();
    let again = ctx.create("obj", true).await.unwrap_err();
    assert_eq!(again.errno(), ErrorCode::EEXIST, "{again}");

    // Remove: success, and the object is gone.
    let c = ctx.clone();
    with_lost_reply(&mut cluster, restart, async move { c.remove("obj").await })
        .await
        .expect("a resent remove reports its first success");
    let gone = ctx.stat("obj").await.unwrap_err();
    assert_eq!(gone.errno(), ErrorCode::ENOENT, "{gone}");

    // A guarded omap update: its first answer (success), applied once.
    let kv =
        |v: &'static [u8]| std::collections::BTreeMap::from([("k".into(), Bytes::from_static(v))]);
    ctx.omap_set("omap", kv(b"v1")).await.unwrap();
    let c = ctx.clone();
    let guarded = async move {
        let ops = vec![
            ObjectOp::OmapCmp { key: "k".into(), op: CmpOp::Eq, value: Bytes::from_static(b"v1") },
            ObjectOp::OmapSetVals { vals: kv(b"v2") },
        ];
        c.exec("omap", ops).await
    };
    with_lost_reply(&mut cluster, restart, guarded)
        .await
        .expect("a resent guarded update reports its first success");
    let vals = ctx.omap_get_vals("omap", "", "", 10).await.unwrap().0;
    assert_eq!(vals.get("k").map(|v| &v[..]), Some(&b"v2"[..]));

    // A writing method call (not idempotent: numops.add) applies once.
    let c = ctx.clone();
    let add = async move { c.exec("counter", vec![quarry_cls::numops::add_op("n", 5.0)]).await };
    with_lost_reply(&mut cluster, restart, add).await.expect("a resent method call succeeds");
    let vals = ctx.omap_get_vals("counter", "", "", 10).await.unwrap().0;
    assert_eq!(vals.get("n").map(|v| &v[..]), Some(&b"5"[..]), "the add ran twice");

    rados.shutdown().await;
    cluster.shutdown().await;
}

/// Goal: create, remove, a guarded omap update and a method call whose replies are lost
/// report their first answer when resent (not EEXIST, ENOENT, ECANCELED) and take effect once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_after_a_lost_reply_gets_the_first_answer() {
    lost_replies_are_answered_once(false).await;
}

/// Goal: the same with the OSD restarted between the lost reply and the resend: the duplicate
/// table is in the PG's applied state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_duplicate_table_survives_an_osd_restart() {
    lost_replies_are_answered_once(true).await;
}

/// Polls every future in the order given (each is first polled in that order, so the ops get
/// increasing request ids in that order) until all are done.
async fn join_in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(out) => *output = Some(out),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future finished")).collect()
}

const PIPELINED: u64 = 1000;

/// Starts `PIPELINED` write-fulls of increasing version numbers to `object` without waiting
/// and checks the last one is what the object holds. `drop_at`: cut the connection once the
/// OSD applied this many of them.
async fn pipelined_writes(cluster: &Cluster, ctx: &IoCtx, object: &str, drop_at: Option<u64>) {
    let before = applied(cluster);
    let writes: Vec<_> = (0..PIPELINED)
        .map(|version| ctx.write_full(object, Bytes::from(version.to_be_bytes().to_vec())))
        .collect();
    let all = join_in_order(writes);
    let cutter = async {
        let Some(at) = drop_at else {
            return;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while applied(cluster) < before + at {
            assert!(tokio::time::Instant::now() < deadline, "writes not applied");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        cluster.osd_front(0).cut();
        tokio::time::sleep(Duration::from_millis(20)).await;
        cluster.osd_front(0).resume();
    };
    let (results, ()) = tokio::join!(all, cutter);
    for result in results {
        result.unwrap();
    }
    let data = ctx.read(object, 0, 0).await.unwrap();
    assert_eq!(data[..], (PIPELINED - 1).to_be_bytes(), "an earlier write applied last");
}

/// Goal: 1000 writes pipelined to one object apply in the order they were started: the last
/// one wins, every time (several rounds), also with the connection dropped in the middle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_writes_to_one_object_apply_in_order() {
    let cluster = cluster().await;
    // The writes aborted with their connection drop the Raft responders openraft answers.
    cluster.logs().allow("OneshotConsumer.tx.send: is_ok: false");
    let rados: Rados = cluster.admin().await;
    let pool = rados.pool_id("rbd").unwrap();
    let ctx = io(&rados, pool);
    ctx.write_full("warmup", Bytes::from_static(b"x")).await.unwrap();
    for round in 0..3 {
        pipelined_writes(&cluster, &ctx, &format!("ordered{round}"), None).await;
    }
    for round in 0..3 {
        let object = format!("dropped{round}");
        pipelined_writes(&cluster, &ctx, &object, Some(200 + 200 * round)).await;
    }
    rados.shutdown().await;
    cluster.shutdown().await;
}
