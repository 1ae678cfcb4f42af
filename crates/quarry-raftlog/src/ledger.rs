//! The writer's ledger: what the segment files say, group by group, counting only records
//! already handed to the disk. It decides which segments can be deleted (none of their entries
//! is live), what the checkpoint at the start of a new segment says, and who the laggards are.
//! The readers' [`crate::index`] runs ahead of it (it includes queued requests); the ledger
//! never does, so a segment is never deleted on the strength of a record not yet durable.

use std::collections::{BTreeMap, HashMap, VecDeque};

use openraft::{LogId, Vote};

use crate::format::{GroupCheckpoint, Record};
use crate::index::{GroupIndex, Location};

/// A group that keeps old segments alive: its oldest live entry is in `oldest_segment`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Laggard {
    /// The Raft group.
    pub group: u64,
    /// The oldest segment holding one of its live entries.
    pub oldest_segment: u64,
    /// Its first live (unpurged) log index.
    pub first_index: u64,
    /// How many segments older than the active one it keeps from deletion.
    pub segments_held: u64,
}

/// Durable state of one group. Live entries are `first .. next`; `runs` lists, in order, the
/// segments holding them with the first index each holds.
#[derive(Clone, Debug, Default)]
struct GroupLedger {
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    purged: Option<LogId<u64>>,
    first: u64,
    next: u64,
    runs: VecDeque<(u64, u64)>,
}

impl GroupLedger {
    fn is_empty(&self) -> bool {
        self.first >= self.next
    }

    fn append(&mut self, index: u64, segment: u64) {
        if self.is_empty() {
            self.first = index;
            self.runs.clear();
        } else {
            assert_eq!(index, self.next, "the writer received a non-contiguous entry");
        }
        self.next = index + 1;
        if self.runs.back().is_none_or(|&(run_segment, _)| run_segment != segment) {
            assert!(self.runs.back().is_none_or(|&(run_segment, _)| run_segment < segment));
            self.runs.push_back((segment, index));
        }
    }

    fn truncate(&mut self, from: u64) {
        if self.is_empty() {
            return;
        }
        self.next = self.next.min(from.max(self.first));
        if self.is_empty() {
            self.runs.clear();
            return;
        }
        while self.runs.back().is_some_and(|&(_, run_first)| run_first >= self.next) {
            self.runs.pop_back();
        }
        assert!(!self.runs.is_empty());
    }

    fn purge(&mut self, upto: LogId<u64>) {
        if self.purged.is_none_or(|purged| purged < upto) {
            self.purged = Some(upto);
        }
        self.first = self.first.max(upto.index + 1);
        if self.first >= self.next {
            self.next = self.first;
            self.runs.clear();
            return;
        }
        while self.runs.len() >= 2 && self.runs[1].1 <= self.first {
            self.runs.pop_front();
        }
        if let Some(front) = self.runs.front_mut() {
            front.1 = self.first;
        }
    }

    fn has_metadata(&self) -> bool {
        self.vote.is_some() || self.committed.is_some() || self.purged.is_some()
    }
}

/// The durable state of all groups.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    groups: BTreeMap<u64, GroupLedger>,
}

impl Ledger {
    /// Builds the ledger from a freshly replayed index (every entry is on disk then).
    pub fn from_index(groups: &HashMap<u64, GroupIndex>) -> Ledger {
        let mut ledger = Ledger::default();
        for (&group, index) in groups {
            let state = ledger.groups.entry(group).or_default();
            state.vote = index.vote;
            state.committed = index.committed;
            state.purged = index.purged;
            for slot in &index.slots {
                let Location::Disk { segment, .. } = slot.location else {
                    panic!("a replayed entry is not on disk");
                };
                state.append(slot.log_id.index, segment);
            }
            if state.is_empty() {
                state.first = index.next_index();
                state.next = state.first;
            }
        }
        ledger
    }

    /// Records an entry written into `segment`.
    pub fn append(&mut self, group: u64, index: u64, segment: u64) {
        self.groups.entry(group).or_default().append(index, segment);
    }

    /// Records a metadata record written.
    pub fn apply(&mut self, group: u64, record: &Record) {
        match record {
            Record::RemoveGroup => {
                self.groups.remove(&group);
                return;
            }
            Record::RoundEnd { .. } => panic!("round ends are not group records"),
            _ => {}
        }
        let state = self.groups.entry(group).or_default();
        match record {
            Record::Entry { .. } => panic!("entries go through Ledger::append"),
            Record::Vote(vote) => state.vote = Some(*vote),
            Record::Committed(committed) => state.committed = *committed,
            Record::Truncate { from } => state.truncate(*from),
            Record::Purge(upto) => state.purge(*upto),
            Record::RemoveGroup | Record::RoundEnd { .. } => unreachable!("handled above"),
            Record::GroupState(checkpoint) => {
                state.vote = checkpoint.vote;
                state.committed = checkpoint.committed;
                if let Some(purged) = checkpoint.purged {
                    state.purge(purged);
                }
            }
        }
    }

    /// The checkpoint records that open a new segment: every group with a vote, a committed or
    /// a purged log id, in group order.
    pub fn checkpoints(&self) -> Vec<(u64, GroupCheckpoint)> {
        self.groups
            .iter()
            .filter(|(_, state)| state.has_metadata())
            .map(|(&group, state)| {
                let checkpoint = GroupCheckpoint {
                    vote: state.vote,
                    committed: state.committed,
                    purged: state.purged,
                };
                (group, checkpoint)
            })
            .collect()
    }

    /// The oldest segment still holding a live entry, if any entry is live.
    pub fn oldest_needed_segment(&self) -> Option<u64> {
        self.groups
            .values()
            .filter_map(|state| state.runs.front().map(|&(segment, _)| segment))
            .min()
    }

    /// Groups whose live entries keep segments older than `active` alive, oldest first.
    pub fn laggards(&self, active: u64) -> Vec<Laggard> {
        let mut laggards: Vec<Laggard> = self
            .groups
            .iter()
            .filter_map(|(&group, state)| {
                let &(oldest_segment, _) = state.runs.front()?;
                (oldest_segment < active).then_some(Laggard {
                    group,
                    oldest_segment,
                    first_index: state.first,
                    segments_held: active - oldest_segment,
                })
            })
            .collect();
        laggards.sort_by_key(|laggard| (laggard.oldest_segment, laggard.group));
        laggards
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn log_id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(1, 0), index)
    }

    #[test]
    fn purge_and_truncate_release_segments() {
        let mut ledger = Ledger::default();
        for index in 0..10 {
            ledger.append(1, index, 1 + index / 4);
        }
        ledger.append(2, 0, 3);
        assert_eq!(ledger.oldest_needed_segment(), Some(1));
        assert_eq!(ledger.laggards(3).len(), 1);
        ledger.apply(1, &Record::Purge(log_id(5)));
        assert_eq!(ledger.oldest_needed_segment(), Some(2));
        ledger.apply(1, &Record::Truncate { from: 8 });
        ledger.apply(1, &Record::Purge(log_id(7)));
        assert_eq!(ledger.oldest_needed_segment(), Some(3));
        assert!(ledger.laggards(3).is_empty());
        ledger.apply(2, &Record::RemoveGroup);
        assert_eq!(ledger.oldest_needed_segment(), None);
        ledger.append(1, 8, 4);
        assert_eq!(ledger.oldest_needed_segment(), Some(4));
        assert_eq!(ledger.checkpoints().len(), 1);
    }
}
