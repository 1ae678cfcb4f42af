//! Errors that say what happened (issue 8 i): a write whose PG stops on a log error after the
//! write was proposed (its entry may be in the log and apply after a restart) is answered
//! ETIMEDOUT, "outcome unknown", never EIO, and so is its resend; a write refused before the
//! log (here: ENOSPC at full, in the CLI's disk-full test) is final and never applies.

use std::time::Duration;

use bytes::Bytes;
use quarry_types::{ErrorCode, ObjectOp, Payload, ReqId};

use crate::common;

const ENOSPC: i32 = 28;
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// A one-OSD cluster whose WAL will be made to refuse writes: the log lines of a PG stopped
/// by that (and restarted by the revive worker, whose timing varies) are expected.
async fn full_disk_cluster() -> quarry_testkit::Cluster {
    let mut cluster = common::start().await;
    for line in [
        "WAL write refused",
        "LogFlush error",
        "quit RaftCore::main on error",
        "failure sending RaftMsg to RaftCore",
        // A snapshot trigger (the store's checkpoint cadence) reaching a stopped group.
        "failure sending external command to RaftCore",
        "write answered ETIMEDOUT: its outcome is unknown",
        "restarting a pg whose raft group stopped on an error",
        "restarting the pg failed",
    ] {
        cluster.logs().allow(line);
    }
    cluster.logs().allow_raft_churn();
    cluster.start_osd(0).await;
    cluster
}

/// Goal: a client told "failed" can trust it. Method: a real OSD whose WAL refuses the next
/// round (the fault hook): the write in that round stops its PG after the proposal. Its
/// answer, and that of a resend with the same request id, is ETIMEDOUT. After a restart the
/// object is either there with its full content or absent (the write's fate was unknown,
/// the answer said so), and the PG serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_lost_in_a_stopped_pg_is_answered_unknown_not_failed() {
    let mut cluster = full_disk_cluster().await;
    let admin = common::admin(&cluster).await;
    let client = admin.osd_client(cluster.osd(0).addr()).await;
    client.write_full("before", b"kept").await.unwrap();

    cluster.osd(0).inject_wal_write_error(Some(ENOSPC));
    let reqid = ReqId { client: 4242, tid: 1 };
    let write = || vec![ObjectOp::WriteFull { data: Payload::new(Bytes::from_static(b"maybe")) }];
    let first = tokio::time::timeout(OP_TIMEOUT, client.exec_with_id("x", write(), reqid))
        .await
        .expect("answered");
    assert_eq!(first, Err(ErrorCode::ETIMEDOUT), "the first answer must say unknown");
    let resend = tokio::time::timeout(OP_TIMEOUT, client.exec_with_id("x", write(), reqid))
        .await
        .expect("answered");
    assert_eq!(resend, Err(ErrorCode::ETIMEDOUT), "a resend must say unknown too");
    cluster.osd(0).inject_wal_write_error(None);

    cluster.restart_osd(0).await;
    let client = admin.osd_client(cluster.osd(0).addr()).await;
    match client.read("x").await {
        Ok(data) => assert_eq!(data, b"maybe"),
        Err(code) => assert_eq!(code, ErrorCode::ENOENT),
    }
    assert_eq!(client.read("before").await.unwrap(), b"kept");
    client.write_full("x", b"after").await.unwrap();
    assert_eq!(client.read("x").await.unwrap(), b"after");
    cluster.shutdown().await;
}

/// Goal: a full disk stops a PG only while it stays full (issue 8 c: no client input may stop
/// a PG until a restart). Method: a real OSD whose WAL refuses a round (the fault hook) while
/// the disk "stays full" for a few seconds: its PG stops, the revive worker's restarts fail
/// again (each restart's first log write is refused too); once space is back the PG serves
/// again without any restart of the OSD, with everything acknowledged before intact and the
/// object of the stopped PG writable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pg_stopped_by_a_full_disk_serves_again_once_space_is_back() {
    let mut cluster = full_disk_cluster().await;
    let admin = common::admin(&cluster).await;
    let client = admin.osd_client(cluster.osd(0).addr()).await;
    client.write_full("before", b"kept").await.unwrap();

    cluster.osd(0).inject_wal_write_error(Some(ENOSPC));
    let first =
        tokio::time::timeout(OP_TIMEOUT, client.write_full("x", b"maybe")).await.expect("answered");
    assert_eq!(first, Err(ErrorCode::ETIMEDOUT), "the answer must say unknown");
    // The disk stays full a while: restarts in the meantime meet the same refusal.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.osd(0).inject_wal_write_error(None);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let attempt =
            tokio::time::timeout(Duration::from_secs(5), client.write_full("x", b"after"));
        if let Ok(Ok(_)) = attempt.await {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the pg never served again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(client.read("x").await.unwrap(), b"after");
    assert_eq!(client.read("before").await.unwrap(), b"kept");
    // And what it serves now survives a restart.
    cluster.restart_osd(0).await;
    let client = admin.osd_client(cluster.osd(0).addr()).await;
    assert_eq!(client.read("x").await.unwrap(), b"after");
    assert_eq!(client.read("before").await.unwrap(), b"kept");
    cluster.shutdown().await;
}
