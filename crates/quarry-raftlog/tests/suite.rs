//! openraft's own storage conformance suite (`openraft::testing::Suite`) against
//! [`WalLogStore`], with a small in-memory state machine written here. It runs three ways:
//! a plain log; tiny segments with no cache (every read is a `pread`, segments rotate and are
//! deleted); and a log shared with busy neighbour groups (isolation between groups).

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StoredMembership,
};
use quarry_raftlog::{Wal, WalLogStore, WalOptions};
use tempfile::TempDir;

use crate::common::{append, entry, log_id, Tc};

/// State of the in-memory state machine.
#[derive(Debug, Default)]
struct MachineState {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    applied_payloads: Vec<Vec<u8>>,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
}

/// A state machine that keeps everything in memory (it is not what is under test).
#[derive(Clone, Debug, Default)]
struct MemoryMachine {
    state: Arc<Mutex<MachineState>>,
}

impl RaftSnapshotBuilder<Tc> for MemoryMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Tc>, StorageError<u64>> {
        let mut state = self.state.lock().unwrap();
        state.snapshots_built += 1;
        let data = bincode::serialize(&state.applied_payloads).unwrap();
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id: format!("snapshot-{}", state.snapshots_built),
        };
        state.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<Tc> for MemoryMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let state = self.state.lock().unwrap();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = openraft::Entry<Tc>> + Send,
        I::IntoIter: Send,
    {
        let mut state = self.state.lock().unwrap();
        let mut replies = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(data) => state.applied_payloads.push(data),
                EntryPayload::Membership(membership) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), membership);
                }
            }
            replies.push(());
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let mut state = self.state.lock().unwrap();
        state.applied_payloads = bincode::deserialize(&data).unwrap();
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        state.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Tc>>, StorageError<u64>> {
        let state = self.state.lock().unwrap();
        Ok(state.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

/// How the builder prepares the log before handing out the group under test.
#[derive(Clone, Copy)]
enum Flavour {
    Plain,
    TinySegmentsNoCache,
    SharedWithNeighbours,
}

/// Group under test; neighbours use other ids.
const GROUP: u64 = 7;

struct Builder {
    flavour: Flavour,
}

impl StoreBuilder<Tc, WalLogStore<Tc>, MemoryMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, WalLogStore<Tc>, MemoryMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let options = match self.flavour {
            Flavour::Plain | Flavour::SharedWithNeighbours => WalOptions::default(),
            Flavour::TinySegmentsNoCache => WalOptions { segment_bytes: 4096, cache_bytes: 0 },
        };
        let wal = Wal::open(dir.path(), options).unwrap();
        if let Flavour::SharedWithNeighbours = self.flavour {
            for group in [0, 6, 8, 1000] {
                let mut neighbour = wal.log_store::<Tc>(group);
                let entries =
                    (0..20).map(|index| entry(3, index, vec![group as u8; 300])).collect();
                append(&mut neighbour, entries).await;
                openraft::storage::RaftLogStorage::purge(&mut neighbour, log_id(3, 4)).await?;
                openraft::storage::RaftLogStorage::save_vote(
                    &mut neighbour,
                    &openraft::Vote::new(9, 2),
                )
                .await?;
            }
        }
        Ok((dir, wal.log_store(GROUP), MemoryMachine::default()))
    }
}

#[test]
fn openraft_suite_plain() {
    Suite::test_all(Builder { flavour: Flavour::Plain }).unwrap();
}

#[test]
fn openraft_suite_tiny_segments_without_cache() {
    Suite::test_all(Builder { flavour: Flavour::TinySegmentsNoCache }).unwrap();
}

#[test]
fn openraft_suite_shared_with_neighbour_groups() {
    Suite::test_all(Builder { flavour: Flavour::SharedWithNeighbours }).unwrap();
}
