//! Durable appends per second of 4 KiB entries through the shared WAL, at concurrency 1 and
//! 32 across 32 Raft groups, with fsyncs per append (the group-commit ratio).
//!
//! `cargo run -p quarry-raftlog --release --example wal_bench -- [DIR] [SECONDS]`
//! DIR defaults to a temporary directory under the current one (so it is on the disk under
//! test, not tmpfs); SECONDS per phase defaults to 5. Compare with the raw disk:
//! `fio --name=x --filename=FILE --size=64m --bs=4k --rw=randwrite --fsync=1 --ioengine=sync`.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, TokioRuntime};
use quarry_raftlog::{Wal, WalOptions};

openraft::declare_raft_types!(
    /// Bench type config: byte payloads.
    pub Bench:
        D = Vec<u8>,
        R = (),
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<Bench>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = TokioRuntime,
);

/// Bench payloads are stored as a version byte (1) and the bytes themselves.
impl quarry_raftlog::EntryCodec for Bench {
    fn encode_data(data: &Vec<u8>, out: &mut Vec<u8>) {
        out.push(1);
        out.extend_from_slice(data);
    }

    fn decode_data(bytes: &[u8]) -> Result<Vec<u8>, quarry_raftlog::DecodeError> {
        match bytes.split_first() {
            Some((1, data)) => Ok(data.to_vec()),
            _ => Err(quarry_raftlog::DecodeError::invalid("bench payload", "bad version")),
        }
    }
}

const GROUPS: u64 = 32;
const ENTRY_BYTES: usize = 4096;
/// Each group purges its log every this many entries (as a snapshotting node would).
const PURGE_EVERY: u64 = 2000;

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// Appends to `group` until `deadline`, one entry at a time; returns the appends done.
async fn drive(wal: Arc<Wal>, groups: Vec<u64>, deadline: Instant) -> u64 {
    let mut stores: Vec<_> = groups.iter().map(|&group| wal.log_store::<Bench>(group)).collect();
    let mut next = vec![0u64; stores.len()];
    for (slot, store) in stores.iter_mut().enumerate() {
        let state = store.get_log_state().await.unwrap();
        next[slot] = state.last_log_id.map_or(0, |id| id.index + 1);
    }
    let mut appends = 0;
    while Instant::now() < deadline {
        for (slot, store) in stores.iter_mut().enumerate() {
            let index = next[slot];
            let entry = Entry {
                log_id: log_id(index),
                payload: EntryPayload::Normal(vec![(index % 251) as u8; ENTRY_BYTES]),
            };
            store.blocking_append([entry]).await.unwrap();
            if index % PURGE_EVERY == PURGE_EVERY - 1 {
                store.purge(log_id(index - 100)).await.unwrap();
            }
            next[slot] += 1;
            appends += 1;
        }
    }
    appends
}

async fn phase(wal: &Arc<Wal>, concurrency: u64, seconds: u64) {
    let before = wal.stats();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let per_task = GROUPS / concurrency;
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let groups = (task * per_task..(task + 1) * per_task).collect();
            tokio::spawn(drive(wal.clone(), groups, deadline))
        })
        .collect();
    let mut appends = 0;
    for task in tasks {
        appends += task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = wal.stats();
    let fsyncs = after.fsyncs - before.fsyncs;
    println!(
        "concurrency {concurrency:>2} over {GROUPS} groups: {:>8.0} durable appends/s \
         ({:.1} MiB/s), {fsyncs} fsyncs = {:.3} fsyncs/append, {:.0} fsyncs/s, {} segments",
        appends as f64 / elapsed,
        (appends as f64 * ENTRY_BYTES as f64) / elapsed / (1 << 20) as f64,
        fsyncs as f64 / appends.max(1) as f64,
        fsyncs as f64 / elapsed,
        after.segments,
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    let seconds: u64 = args.next().map_or(5, |text| text.parse().expect("SECONDS"));
    let dir = tempfile::Builder::new().prefix("wal-bench-").tempdir_in(&base).expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let wal = Wal::open(dir.path(), WalOptions::default()).expect("open WAL");
    println!("WAL in {} ({ENTRY_BYTES}-byte entries, {seconds}s per phase)", dir.path().display());
    runtime.block_on(async {
        phase(&wal, 1, seconds).await;
        phase(&wal, 32, seconds).await;
    });
}
