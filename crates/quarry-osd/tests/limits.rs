//! Size limits end to end: an op vector too big for one log entry is refused before it
//! reaches the log, and its PG keeps serving.

use std::time::Duration;

use bytes::Bytes;
use quarry_types::{ErrorCode, ObjectOp, Payload, OP_DATA_BYTES_MAX};

use crate::common;

/// Bound on each op of the test: with the OSD's check removed, the oversized entry stops the
/// PG and later ops would wait for the OSD's 120 s timeout.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Goal: a write larger than one WAL record (64 MiB) gets a clear error and never stops its
/// PG. Method: a real monitor and OSD; the raw wire client (no client-side check) sends one
/// 65 MiB write op, then a 4 KiB write to another object of the same PG and to the same
/// object, and reads them back. Also a vector of two 31 MiB writes (each under the bound, the
/// sum over it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_over_one_log_entry_is_refused_and_the_pg_keeps_serving() {
    let cluster = common::start().await;
    cluster.logs().expect("op vector carries too much data: refused object=big index=0");
    cluster.logs().expect("op vector carries too much data: refused object=big index=1");
    let osd = cluster.start_osd_detached(0).await;
    let admin = common::admin(&cluster).await;
    let client = admin.osd_client(osd.addr()).await;

    let big = "big";
    let pg = client.pg(big);
    let neighbour = (0..10_000)
        .map(|i| format!("small-{i}"))
        .find(|name| client.pg(name) == pg)
        .expect("an object in the same pg");

    let payload = Payload::new(Bytes::from(vec![7u8; 65 << 20]));
    let huge = vec![ObjectOp::Write { off: 0, data: payload }];
    let refused = tokio::time::timeout(OP_TIMEOUT, client.exec(big, huge)).await;
    assert_eq!(refused.expect("65 MiB write answered"), Err(ErrorCode::EMSGSIZE));

    let half = Payload::new(Bytes::from(vec![1u8; 31 << 20]));
    const { assert!(2 * (31u64 << 20) > OP_DATA_BYTES_MAX) };
    let two = vec![
        ObjectOp::Write { off: 0, data: half.clone() },
        ObjectOp::Write { off: 31 << 20, data: half },
    ];
    let refused = tokio::time::timeout(OP_TIMEOUT, client.exec(big, two)).await;
    assert_eq!(refused.expect("2 x 31 MiB answered"), Err(ErrorCode::EMSGSIZE));
    assert_eq!(client.read(big).await, Err(ErrorCode::ENOENT), "a refused write changed nothing");

    let small = vec![5u8; 4096];
    let written = tokio::time::timeout(OP_TIMEOUT, client.write_full(&neighbour, &small)).await;
    assert!(written.expect("4 KiB write answered (PG alive)").is_ok());
    let written = tokio::time::timeout(OP_TIMEOUT, client.write_full(big, &small)).await;
    assert!(written.expect("4 KiB write to the same object answered").is_ok());
    assert_eq!(client.read(&neighbour).await.unwrap(), small);
    assert_eq!(client.read(big).await.unwrap(), small);

    // The largest accepted vector still goes through the log.
    let max = Payload::new(Bytes::from(vec![3u8; OP_DATA_BYTES_MAX as usize]));
    let written =
        tokio::time::timeout(OP_TIMEOUT, client.exec(big, vec![ObjectOp::WriteFull { data: max }]))
            .await;
    assert!(written.expect("60 MiB write answered").is_ok());
    assert_eq!(client.read(big).await.unwrap().len() as u64, OP_DATA_BYTES_MAX);
    osd.shutdown().await;
    cluster.shutdown().await;
}
