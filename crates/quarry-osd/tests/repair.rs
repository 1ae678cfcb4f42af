//! Damaged data on one replica of a size-3 PG (issue 8 f): a chunk whose crc no longer
//! matches, met by a read-modify-write. The replica must not apply a different result than
//! its peers: it stops the PG, marks it damaged, and rebuilds it from a healthy replica's
//! export; then all three replicas hold the same PG, byte for byte, and every acknowledged
//! write is there. Once with a non-primary replica damaged, once with the primary.
//!
//! To see the damage while it lasts, the proxy in front of the healthy OSD the damaged one
//! asks first holds its replies: the rebuild waits on it until the test resumes it.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use quarry_client::IoCtx;
use quarry_testkit::Cluster;
use quarry_types::{ObjectOp, OpOutput, OpReply, OsdId, PgId, SNAP_HEAD};
use quarry_wire::{MonCommand, MonReply};
use redb::ReadableTable;

use crate::common;

const POOL: &str = "rep";
const VICTIM: &str = "victim";
/// Three chunks of a recognisable pattern.
const VICTIM_LEN: usize = 3 * 4096;

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(salt)).collect()
}

/// Flips one bit in every stored version of chunk `chunk` of `name` in a stopped OSD's store
/// (behind the store's back, as bit rot would): in each extent row covering it (store format
/// 4: key object id ++ tag ++ first chunk, value kind u8 ++ count u16 ++ last length u16 ++
/// block u64 ++ crc32c u32 per chunk), a bit of that chunk's stored crc.
fn damage_chunk(store_file: &Path, pg: PgId, name: &str, chunk: u64) {
    const OBJECTS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("objects");
    const EXTENTS: redb::TableDefinition<&[u8; 24], &[u8]> = redb::TableDefinition::new("extents");
    let key24 = |id: u64, tag: u64, first: u64| {
        let mut k = [0u8; 24];
        k[..8].copy_from_slice(&id.to_be_bytes());
        k[8..16].copy_from_slice(&tag.to_be_bytes());
        k[16..].copy_from_slice(&first.to_be_bytes());
        k
    };
    let db = redb::Database::create(store_file).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let objects = txn.open_table(OBJECTS).unwrap();
        let mut key = pg.pool.to_be_bytes().to_vec();
        key.extend_from_slice(&pg.seed.to_be_bytes());
        key.extend_from_slice(name.as_bytes());
        let record = objects.get(key.as_slice()).unwrap().expect("object stored").value().to_vec();
        // crc u32 ++ format u8 ++ object id u64 (little-endian) ++ ...
        let id = u64::from_le_bytes(record[5..13].try_into().unwrap());
        let mut extents = txn.open_table(EXTENTS).unwrap();
        let rows: Vec<([u8; 24], Vec<u8>)> = extents
            .range::<&[u8; 24]>(&key24(id, 0, 0)..=&key24(id, u64::MAX, u64::MAX))
            .unwrap()
            .map(|row| {
                let (k, v) = row.unwrap();
                (*k.value(), v.value().to_vec())
            })
            .filter(|(k, v)| {
                let first = u64::from_be_bytes(k[16..].try_into().unwrap());
                let count = u64::from(u16::from_le_bytes([v[1], v[2]]));
                v[0] == 1 && first <= chunk && chunk < first + count
            })
            .collect();
        assert!(!rows.is_empty(), "chunk {chunk} of {name} is stored");
        for (k, mut v) in rows {
            let first = u64::from_be_bytes(k[16..].try_into().unwrap());
            v[13 + 4 * (chunk - first) as usize + 1] ^= 0x08;
            extents.insert(&k, v.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// Reads `name` (`len` bytes) straight from one OSD's store.
fn stored(
    cluster: &Cluster,
    osd: OsdId,
    pg: PgId,
    name: &str,
    len: u64,
) -> Result<Vec<u8>, String> {
    let store = cluster.osd(osd).store();
    match store.read(pg, name, SNAP_HEAD, &[ObjectOp::Read { off: 0, len }]) {
        Ok(OpReply::Ok(outputs)) => match outputs.first() {
            Some(OpOutput::Data(p)) => Ok(p.data.to_vec()),
            other => Err(format!("{other:?}")),
        },
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn export(cluster: &Cluster, osd: OsdId, pg: PgId) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    cluster.osd(osd).store().export_pg(pg, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Waits (bounded) until every OSD applied the same last entry of `pg` and their exports of
/// it are identical. Returns what differs if they never get there.
async fn converged(cluster: &Cluster, pg: PgId, osds: &[OsdId]) -> Result<(), String> {
    same_applied(cluster, pg, osds, true).await
}

/// Waits (bounded) until every OSD applied the same last entry of `pg` (and, if `exports`,
/// their exports are identical).
async fn same_applied(
    cluster: &Cluster,
    pg: PgId,
    osds: &[OsdId],
    exports: bool,
) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..200 {
        let applied: Vec<Option<u64>> = osds
            .iter()
            .map(|&id| cluster.osd(id).pgs().iter().find(|s| s.pg == pg).and_then(|s| s.applied))
            .collect();
        if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
            if !exports {
                return Ok(());
            }
            let exports: Vec<Result<Vec<u8>, String>> =
                osds.iter().map(|&id| export(cluster, id, pg)).collect();
            if exports.iter().all(|e| e.is_ok() && *e == exports[0]) {
                return Ok(());
            }
            last = format!(
                "applied {applied:?}, exports differ or fail: {:?}",
                exports.iter().map(|e| e.as_ref().map(|b| b.len())).collect::<Vec<_>>()
            );
        } else {
            last = format!("applied {applied:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

/// Waits (bounded) until `osd` reports `pg` damaged (`want`) or not.
async fn wait_damaged(cluster: &Cluster, osd: OsdId, pg: PgId, want: bool) -> bool {
    for _ in 0..200 {
        if cluster.osd(osd).damaged_pgs().contains(&pg) == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

const DAMAGE_LINE: &str = "Possible data damage: 1 pg inconsistent";

/// Waits (bounded) until `ceph -s`'s health shows the damage line (`want`) or not.
async fn wait_health(mon: &common::MonClient, want: bool) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..100 {
        match mon.command(MonCommand::Status).await {
            MonReply::Status(s) => {
                // The check's summary line (its items, one per PG, follow it).
                let shown = s.health_details.iter().any(|l| l.lines().next() == Some(DAMAGE_LINE));
                if shown == want && (!want || s.health == "HEALTH_ERR") {
                    return Ok(());
                }
                last = format!("{} {:?}", s.health, s.health_details);
            }
            other => last = format!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

/// Declares what these tests provoke.
fn declare_logs(cluster: &Cluster, meet: Meet, damaged: Damaged) {
    let line = match meet {
        Meet::PartialWrite => "damaged data on this replica: the pg stops here",
        Meet::Read => "damaged data met by a read: rebuilding this replica",
    };
    let logs = cluster.logs().allow_raft_churn().expect(line);
    let logs = match damaged {
        Damaged::Chunk => logs.expect("store corruption: chunk 0 version"),
        Damaged::DupRows => logs
            .expect("damaged duplicate table: the pg's requests fail")
            .allow("corrupt duplicate table"),
    };
    logs
        .allow("store apply failed: stopping the pg")
        // openraft stops the group whose state machine failed, and says so.
        .allow("openraft::core::sm::worker: when Write StateMachine: quarry_store::error::StoreError: corrupt data")
        .allow("openraft::core::raft_core: quit RaftCore::main on error error=when Write StateMachine: quarry_store::error::StoreError: corrupt data")
        // An op that reaches the stopped group before it is taken out (timing).
        .allow("openraft::raft::raft_inner: failure sending RaftMsg to RaftCore")
        .allow("raft group did not shut down cleanly");
}

/// Writes a few objects and returns their names and contents.
async fn write_objects(io: &IoCtx, prefix: &str, count: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..count {
        let name = format!("{prefix}{i}");
        let data = pattern(5000 + i, i as u8);
        io.write_full(&name, Bytes::from(data.clone())).await.unwrap();
        out.push((name, data));
    }
    out
}

/// What meets the damaged chunk.
#[derive(Clone, Copy, PartialEq)]
enum Meet {
    /// A 3-byte write into the chunk (read-modify-write on every replica).
    PartialWrite,
    /// A read of the object (on the primary).
    Read,
}

/// What the damage is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Damaged {
    /// Chunk 0 of the victim (its stored crc).
    Chunk,
    /// The PG's duplicate table (every row): every request of the PG meets it.
    DupRows,
}

/// The scenario: damage chunk 0 of the victim (or the PG's duplicate table) on `acting[damaged]`, hold the replies of
/// `acting[held]` (the replica the damaged one asks first), then `meet` the damage.
/// With `restart`, the damaged OSD is stopped while its rebuild waits, and started again:
/// the mark on disk makes it rebuild the PG before starting its group.
async fn damaged_replica_is_rebuilt(
    damaged: usize,
    held: usize,
    restart: bool,
    meet: Meet,
    what: Damaged,
) {
    let mut cluster =
        Cluster::builder().osds(3).pools(vec![(POOL, 1, 3)]).osd_fronts().start().await;
    declare_logs(&cluster, meet, what);
    let rados = cluster.admin().await;
    let io = rados.ioctx(POOL).await.unwrap();
    let mon = common::admin(&cluster).await;
    let map = mon.map().await;
    let pool = map.pool_by_name(POOL).unwrap().clone();
    let pg = PgId { pool: pool.id, seed: 0 };
    let acting = map.acting(pg).to_vec();
    assert_eq!(acting.len(), 3, "{acting:?}");

    let mut expected = pattern(VICTIM_LEN, 1);
    io.write_full(VICTIM, Bytes::from(expected.clone())).await.unwrap();
    let mut objects = write_objects(&io, "before", 5).await;
    converged(&cluster, pg, &acting).await.expect("replicas equal before the damage");

    let bad = acting[damaged];
    cluster.stop_osd(bad).await;
    match what {
        Damaged::Chunk => damage_chunk(&cluster.osd_dir(bad).join("store.redb"), pg, VICTIM, 0),
        Damaged::DupRows => damage_dup_rows(&cluster.osd_dir(bad).join("store.redb")),
    }
    cluster.start_osd(bad).await;
    same_applied(&cluster, pg, &acting, false)
        .await
        .expect("the damaged osd is back and caught up");

    // The rebuild will wait on this peer until the test has looked at the damage.
    cluster.osd_front(acting[held]).hold_replies();
    let client = io.clone();
    let op = tokio::spawn(async move {
        match meet {
            Meet::PartialWrite => {
                client.write(VICTIM, 100, Bytes::from_static(b"XYZ")).await.map(|()| Vec::new())
            }
            Meet::Read => client.read(VICTIM, 0, VICTIM_LEN as u64).await.map(|b| b.to_vec()),
        }
    });
    if meet == Meet::PartialWrite {
        expected[100..103].copy_from_slice(b"XYZ");
    }
    let seen = wait_damaged(&cluster, bad, pg, true).await;
    let health_while_damaged = wait_health(&mon, true).await;
    if restart {
        cluster.stop_osd(bad).await;
        let mark = cluster.osd_dir(bad).join("damaged").join(pg.to_string());
        assert!(mark.exists(), "the damage mark is on disk while osd.{bad} is down");
    }
    cluster.osd_front(acting[held]).resume();
    let result = op.await.unwrap().expect("the op that met the damage succeeds");
    if meet == Meet::Read {
        assert_eq!(result, expected, "the read returns the good data");
    }
    if restart {
        cluster.start_osd(bad).await;
    }
    objects.extend(write_objects(&io, "after", 5).await);

    // All replicas converge: same applied entry, byte-identical exports of the PG.
    let converged = converged(&cluster, pg, &acting).await;
    assert!(converged.is_ok(), "replicas diverge after the damage: {converged:?}");
    assert!(seen, "osd.{bad} never reported pg {pg} damaged");
    assert!(wait_damaged(&cluster, bad, pg, false).await, "the damage mark stays after the repair");
    assert_eq!(health_while_damaged, Ok(()), "ceph -s while osd.{bad} is damaged");
    assert_eq!(wait_health(&mon, false).await, Ok(()), "ceph -s after the repair");
    for &osd in &acting {
        assert_eq!(
            stored(&cluster, osd, pg, VICTIM, VICTIM_LEN as u64),
            Ok(expected.clone()),
            "osd.{osd}"
        );
        for (name, data) in &objects {
            assert_eq!(
                stored(&cluster, osd, pg, name, 1 << 20).as_ref(),
                Ok(data),
                "osd.{osd} {name}"
            );
        }
    }
    assert_eq!(io.read(VICTIM, 0, VICTIM_LEN as u64).await.unwrap().to_vec(), expected);
    drop(io);
    rados.shutdown().await;
    cluster.shutdown().await;
}

/// Goal: a non-primary replica that meets a damaged chunk in a read-modify-write does not
/// diverge: it stops the PG, reports it damaged, and is rebuilt from the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_replica_stops_and_is_rebuilt_from_the_primary() {
    damaged_replica_is_rebuilt(1, 0, false, Meet::PartialWrite, Damaged::Chunk).await;
}

/// Goal: the damage mark survives a restart, and the OSD rebuilds the PG before starting its
/// group (replaying the log over the damaged chunk would meet it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_replica_restarted_before_its_repair_rebuilds_at_start() {
    damaged_replica_is_rebuilt(2, 0, true, Meet::PartialWrite, Damaged::Chunk).await;
}

/// Goal: the same with the primary damaged: it never answers the write with EIO; its group
/// stops, the client resends, and the primary is rebuilt from a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_primary_stops_and_is_rebuilt_from_a_follower() {
    damaged_replica_is_rebuilt(0, 1, false, Meet::PartialWrite, Damaged::Chunk).await;
}

/// Goal: a read that meets a damaged chunk on the primary of a replicated PG gets the good
/// data (not EIO): the primary rebuilds its replica from a follower, the client reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_chunk_met_by_a_read_is_repaired_from_a_follower() {
    damaged_replica_is_rebuilt(0, 1, false, Meet::Read, Damaged::Chunk).await;
}

/// Goal: a replica whose duplicate table is damaged (a flipped bit in its rows: the request
/// ids they held cannot be read, so it cannot tell a resend from a new request) does not
/// apply a different result than its peers: the next write stops the PG there, and it is
/// rebuilt from the primary (the export carries the table), after which the replicas are
/// byte-identical again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_duplicate_table_on_a_replica_is_rebuilt_from_the_primary() {
    damaged_replica_is_rebuilt(1, 0, false, Meet::PartialWrite, Damaged::DupRows).await;
}

/// Goal: with one replica there is nobody to differ from and nothing to repair from: the
/// command that meets the damage fails alone with EIO, the PG goes on (other writes apply),
/// nothing is marked or reported, a read of the damaged object is EIO, and a restart replays
/// the log to the same result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn size_one_fails_only_the_command_that_meets_the_damage() {
    let mut cluster = Cluster::builder().osds(1).pools(vec![("one", 1, 1)]).start().await;
    cluster
        .logs()
        .expect("store corruption: chunk 0 version")
        .expect("corrupt object met while applying");
    let rados = cluster.admin().await;
    let io = rados.ioctx("one").await.unwrap();
    let mon = common::admin(&cluster).await;
    let pool = mon.map().await.pool_by_name("one").unwrap().clone();
    let pg = PgId { pool: pool.id, seed: 0 };
    let data = pattern(VICTIM_LEN, 3);
    io.write_full(VICTIM, Bytes::from(data.clone())).await.unwrap();
    cluster.stop_osd(0).await;
    damage_chunk(&cluster.osd_dir(0).join("store.redb"), pg, VICTIM, 0);
    cluster.start_osd(0).await;

    let partial = io.write(VICTIM, 100, Bytes::from_static(b"XYZ")).await;
    assert!(is_eio(&partial), "{partial:?}");
    io.write_full("other", Bytes::from_static(b"fine")).await.unwrap();
    assert!(cluster.osd(0).damaged_pgs().is_empty());
    assert_eq!(wait_health(&mon, false).await, Ok(()));
    assert!(is_eio(&io.read(VICTIM, 0, VICTIM_LEN as u64).await));
    // Chunk 1 and 2 are intact; the write that failed changed nothing.
    let tail = io.read(VICTIM, 4096, 8192).await.unwrap();
    assert_eq!(tail.to_vec(), data[4096..]);

    cluster.restart_osd(0).await;
    assert_eq!(io.read("other", 0, 4).await.unwrap().to_vec(), b"fine");
    assert!(is_eio(&io.read(VICTIM, 0, VICTIM_LEN as u64).await));
    drop(io);
    rados.shutdown().await;
    cluster.shutdown().await;
}

/// Goal: a large read alone in flight, whose data goes to the client while the OSD reads
/// it (`op::stream`, counted as `op_r_streamed` in `perf dump`), returns the object's bytes;
/// one that meets a damaged chunk half way, after pieces went out, is EIO (never the bytes
/// before the damage, nor the zeros that finish the part), and the connection goes on
/// serving. Method: a 3 MiB object on one OSD, reads at queue depth 1, then its chunk 600
/// (in the fifth 512 KiB piece) damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_read_that_meets_damage_half_way_is_eio() {
    let mut cluster = Cluster::builder().osds(1).pools(vec![("one", 1, 1)]).start().await;
    cluster.logs().expect("store corruption: chunk 600 version");
    let rados = cluster.admin().await;
    let io = rados.ioctx("one").await.unwrap();
    let mon = common::admin(&cluster).await;
    let pool = mon.map().await.pool_by_name("one").unwrap().clone();
    let pg = PgId { pool: pool.id, seed: 0 };
    let big = pattern((3 << 20) + 100, 5);
    io.write_full("big", Bytes::from(big.clone())).await.unwrap();
    let streamed = |cluster: &Cluster| {
        let addr = cluster.osd(0).addr();
        let mon = &mon;
        async move {
            let client = mon.osd_client(addr).await;
            let words = vec!["perf".to_string(), "dump".to_string()];
            match client.rpc.call(quarry_wire::Request::Tell { words }).await.unwrap() {
                quarry_wire::Reply::Told { output, .. } => {
                    let dump: serde_json::Value = serde_json::from_str(&output).unwrap();
                    dump["osd"]["op_r_streamed"].as_u64().unwrap()
                }
                other => panic!("perf dump: {other:?}"),
            }
        }
    };
    // Alone in flight: no other op for a while (`OpTracker::alone`).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = streamed(&cluster).await;
    for _ in 0..3 {
        let read = io.read("big", 0, big.len() as u64).await.unwrap();
        assert!(read.as_ref() == big.as_slice(), "a streamed read returned other bytes");
    }
    assert!(streamed(&cluster).await >= before + 2, "the reads were not streamed");
    cluster.stop_osd(0).await;
    damage_chunk(&cluster.osd_dir(0).join("store.redb"), pg, "big", 600);
    cluster.start_osd(0).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..2 {
        let read = io.read("big", 0, big.len() as u64).await;
        assert!(is_eio(&read), "{:?}", read.map(|b| b.len()));
        // The pieces before the damage still read (streamed too).
        let head = io.read("big", 0, 2 << 20).await.unwrap();
        assert!(head.as_ref() == &big[..2 << 20]);
    }
    assert!(cluster.osd(0).damaged_pgs().is_empty(), "one replica: nothing to repair from");
    drop(io);
    rados.shutdown().await;
    cluster.shutdown().await;
}

fn is_eio<T>(result: &Result<T, quarry_client::ClientError>) -> bool {
    use quarry_client::ClientError;
    let eio = quarry_types::ErrorCode::EIO;
    matches!(result, Err(ClientError::Op { code, .. } | ClientError::Failed { code, .. }) if *code == eio)
}

/// Flips a bit at the end of every row of a stopped OSD's duplicate table (store format 6:
/// `dup_log`, key pool ++ seed ++ first seq, value sealed by a crc32c over the rest), as bit
/// rot would.
fn damage_dup_rows(store_file: &Path) {
    const DUP_LOG: redb::TableDefinition<&[u8; 20], &[u8]> = redb::TableDefinition::new("dup_log");
    let db = redb::Database::create(store_file).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut log = txn.open_table(DUP_LOG).unwrap();
        let rows: Vec<([u8; 20], Vec<u8>)> = log
            .iter()
            .unwrap()
            .map(|row| {
                let (k, v) = row.unwrap();
                (*k.value(), v.value().to_vec())
            })
            .collect();
        assert!(!rows.is_empty(), "the duplicate table has rows");
        for (k, mut v) in rows {
            *v.last_mut().unwrap() ^= 0x10;
            log.insert(&k, v.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// Goal: with one voter, a PG whose duplicate table is damaged does not refuse writes for
/// ever (a damaged row held request ids nobody can read, so every request of the PG fails
/// against it): the table is dropped, logged, and the write applied; the data written
/// before is intact, and later writes are recorded again (a resend is answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_duplicate_table_does_not_stop_a_pg_with_one_voter() {
    let mut cluster = Cluster::builder().osds(1).pools(vec![("solo", 1, 1)]).start().await;
    cluster
        .logs()
        .expect("damaged duplicate table: the pg's requests fail")
        .expect("damaged pg rows met while applying")
        .expect("the pg's damaged duplicate table is dropped")
        .allow("corrupt duplicate table");
    let rados = cluster.admin().await;
    let io = rados.ioctx("solo").await.unwrap();
    io.write_full("a", Bytes::from_static(b"before")).await.unwrap();
    let osd = cluster.osd_ids()[0];
    cluster.stop_osd(osd).await;
    damage_dup_rows(&cluster.osd_dir(osd).join("store.redb"));
    cluster.start_osd(osd).await;
    let write = io.write_full("b", Bytes::from_static(b"after"));
    tokio::time::timeout(Duration::from_secs(30), write)
        .await
        .expect("the write is answered")
        .expect("the write is applied");
    assert_eq!(&io.read("a", 0, 100).await.unwrap()[..], b"before");
    assert_eq!(&io.read("b", 0, 100).await.unwrap()[..], b"after");
    let pool = common::admin(&cluster).await.map().await.pool_by_name("solo").unwrap().id;
    let pg = PgId { pool, seed: 0 };
    assert_eq!(cluster.osd(osd).store().dup_count(pg).unwrap(), 1, "the new write's entry");
    drop(io);
    rados.shutdown().await;
    cluster.shutdown().await;
}
