//! Replay equals what was written. Goal: after any mix of appends, truncates, purges, votes,
//! committed ids and group removals across many interleaved groups, a reopened log holds
//! exactly the state a simple model says. Method: seeded random operations against the log
//! and a model; compare live, then after each of several reopen cycles. Tiny segments make
//! rotation, checkpoints and segment deletion part of every run.

use std::collections::{BTreeMap, HashMap};

use openraft::storage::RaftLogStorage;
use openraft::{LogId, RaftLogReader, Vote};
use quarry_raftlog::{Wal, WalOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{append, data_of, entry, log_id, payload, runtime, Tc};

const GROUPS: u64 = 12;

#[derive(Clone, Debug, Default)]
struct ModelGroup {
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    purged: Option<LogId<u64>>,
    entries: BTreeMap<u64, (LogId<u64>, Vec<u8>)>,
    term: u64,
}

impl ModelGroup {
    fn last_log_id(&self) -> Option<LogId<u64>> {
        self.entries.values().next_back().map(|(id, _)| *id).or(self.purged)
    }

    fn next_index(&self) -> u64 {
        self.last_log_id().map_or(0, |id| id.index + 1)
    }
}

async fn random_operation(
    wal: &std::sync::Arc<Wal>,
    model: &mut HashMap<u64, ModelGroup>,
    rng: &mut StdRng,
) {
    let group = rng.gen_range(0..GROUPS);
    let mut store = wal.log_store::<Tc>(group);
    let state = model.entry(group).or_default();
    match rng.gen_range(0..100) {
        0..=59 => {
            let count = rng.gen_range(1..=3);
            let next = state.next_index();
            let term = state.term;
            let mut batch = Vec::new();
            for index in next..next + count {
                let data = payload(group, index, term, 1500);
                batch.push(entry(term, index, data.clone()));
                state.entries.insert(index, (log_id(term, index), data));
            }
            append(&mut store, batch).await;
        }
        60..=69 => {
            let Some(&first) = state.entries.keys().next() else { return };
            let from = rng.gen_range(first..=state.next_index());
            store.truncate(log_id(state.term, from)).await.unwrap();
            state.entries.retain(|&index, _| index < from);
            state.term += 1;
        }
        70..=79 => {
            let upto_index = rng.gen_range(0..state.next_index() + 3);
            let upto = log_id(state.term, upto_index);
            if state.purged.is_some_and(|purged| purged >= upto) {
                return;
            }
            store.purge(upto).await.unwrap();
            state.purged = Some(upto);
            state.entries.retain(|&index, _| index > upto_index);
        }
        80..=87 => {
            state.term += 1;
            let vote = Vote::new(state.term, rng.gen_range(1..4));
            store.save_vote(&vote).await.unwrap();
            state.vote = Some(vote);
        }
        88..=96 => {
            let committed = state.entries.values().next().map(|(id, _)| *id);
            store.save_committed(committed).await.unwrap();
            state.committed = committed;
        }
        _ => {
            wal.remove_group(group).unwrap();
            model.remove(&group);
        }
    }
}

/// Asserts that every group of the log equals the model (a missing group is a blank one).
async fn assert_matches(wal: &std::sync::Arc<Wal>, model: &HashMap<u64, ModelGroup>, when: &str) {
    let blank = ModelGroup::default();
    for group in 0..GROUPS {
        let expected = model.get(&group).unwrap_or(&blank);
        let mut store = wal.log_store::<Tc>(group);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, expected.purged, "{when}: group {group} purged");
        assert_eq!(state.last_log_id, expected.last_log_id(), "{when}: group {group} last");
        assert_eq!(store.read_vote().await.unwrap(), expected.vote, "{when}: group {group} vote");
        let committed = store.read_committed().await.unwrap();
        assert_eq!(committed, expected.committed, "{when}: group {group} committed");
        let entries = store.try_get_log_entries(..).await.unwrap();
        assert_eq!(entries.len(), expected.entries.len(), "{when}: group {group} entry count");
        for (found, (index, (id, data))) in entries.iter().zip(&expected.entries) {
            assert_eq!(found.log_id.index, *index, "{when}: group {group}");
            assert_eq!(found.log_id, *id, "{when}: group {group} index {index}");
            assert!(data_of(found) == &data[..], "{when}: group {group} index {index} payload");
        }
    }
}

#[test]
fn reopen_replays_interleaved_groups_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions { segment_bytes: 16 << 10, cache_bytes: 8 << 10 };
    let mut model = HashMap::new();
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    let runtime = runtime();
    let mut deleted_total = 0;
    for cycle in 0..6 {
        let wal = Wal::open(dir.path(), options).unwrap();
        runtime.block_on(async {
            assert_matches(&wal, &model, &format!("after reopen {cycle}")).await;
            for _ in 0..600 {
                random_operation(&wal, &mut model, &mut rng).await;
            }
            assert_matches(&wal, &model, &format!("live in cycle {cycle}")).await;
            wal.flush().await.unwrap();
        });
        let stats = wal.stats();
        deleted_total += stats.segments_deleted;
        assert!(stats.fsyncs > 0 && stats.entries > 0, "{stats:?}");
        drop(wal);
    }
    let wal = Wal::open(dir.path(), options).unwrap();
    runtime.block_on(assert_matches(&wal, &model, "final reopen"));
    assert!(deleted_total > 0, "tiny segments should have been rotated and deleted");
}

#[test]
fn unflushed_truncate_and_purge_are_durable_after_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    runtime.block_on(async {
        let mut store = wal.log_store::<Tc>(3);
        let entries = (0..10).map(|index| entry(1, index, payload(3, index, 1, 100))).collect();
        append(&mut store, entries).await;
        store.truncate(log_id(1, 8)).await.unwrap();
        store.purge(log_id(1, 2)).await.unwrap();
        store.save_committed(Some(log_id(1, 5))).await.unwrap();
    });
    drop(wal);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    runtime.block_on(async {
        let mut store = wal.log_store::<Tc>(3);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
        assert_eq!(state.last_log_id, Some(log_id(1, 7)));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 5)));
        let indexes: Vec<u64> =
            store.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, (3..8).collect::<Vec<_>>());
    });
}
