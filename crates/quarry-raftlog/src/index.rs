//! The in-memory view readers use: per group, the vote, committed and purged log ids and where
//! each live entry is (still queued in memory, or at a position in a segment file), plus the
//! bounded cache of recently written entries. It reflects every request accepted so far, even
//! those the writer has not written yet.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};

use openraft::{LogId, Vote};

use crate::error::Corruption;
use crate::format::GroupCheckpoint;

/// Where an entry's serialised bytes are.
#[derive(Clone, Debug)]
pub(crate) enum Location {
    /// Accepted, not yet written: the bytes the writer will write.
    Queued(Bytes),
    /// Written: the record starts at `offset` of segment `segment`, payload `len` bytes.
    Disk { segment: u64, offset: u64, len: u32 },
}

/// One live entry of a group.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub log_id: LogId<u64>,
    /// Identity of the append that produced this slot, so the writer updates the right one.
    pub serial: u64,
    pub location: Location,
}

/// A group's state. Live entries are `first .. first + slots.len()`, always contiguous.
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupIndex {
    pub vote: Option<Vote<u64>>,
    pub committed: Option<LogId<u64>>,
    pub purged: Option<LogId<u64>>,
    pub first: u64,
    pub slots: VecDeque<Slot>,
}

impl GroupIndex {
    /// One past the last live entry (meaningless when there are none).
    pub fn next_index(&self) -> u64 {
        self.first + self.slots.len() as u64
    }

    /// The last entry's log id, else the purged log id (openraft's `last_log_id`).
    pub fn last_log_id(&self) -> Option<LogId<u64>> {
        self.slots.back().map(|slot| slot.log_id).or(self.purged)
    }

    /// Checks that an entry at `index` may be appended: right after the last entry. With no
    /// live entry any index is accepted, even one at or below the purged index: openraft's own
    /// conformance suite appends there after `get_initial_state` purged up to the state
    /// machine's applied id (`get_initial_state_membership_from_log_and_sm`).
    pub fn check_append(&self, group: u64, index: u64) -> Result<(), Corruption> {
        if !self.slots.is_empty() && index != self.next_index() {
            return Err(Corruption::NonContiguous { group, index, expected: self.next_index() });
        }
        Ok(())
    }

    /// Appends a slot; the caller has run [`GroupIndex::check_append`].
    pub fn push(&mut self, slot: Slot) {
        if self.slots.is_empty() {
            self.first = slot.log_id.index;
        }
        assert_eq!(slot.log_id.index, self.next_index(), "entries must stay contiguous");
        self.slots.push_back(slot);
    }

    /// Deletes the entries with index >= `from`.
    pub fn truncate(&mut self, from: u64) {
        let keep = from.saturating_sub(self.first).min(self.slots.len() as u64);
        self.slots.truncate(keep as usize);
        assert!(self.slots.back().is_none_or(|slot| slot.log_id.index < from));
    }

    /// Deletes the entries up to `upto.index` and remembers `upto` as purged (never going back).
    pub fn purge(&mut self, upto: LogId<u64>) {
        if self.purged.is_none_or(|purged| purged < upto) {
            self.purged = Some(upto);
        }
        while self.slots.front().is_some_and(|slot| slot.log_id.index <= upto.index) {
            self.slots.pop_front();
            self.first += 1;
        }
        assert!(self.slots.front().is_none_or(|slot| slot.log_id.index > upto.index));
    }

    /// Applies a checkpoint record found at the start of a segment during replay.
    pub fn apply_checkpoint(&mut self, checkpoint: &GroupCheckpoint) {
        self.vote = checkpoint.vote;
        self.committed = checkpoint.committed;
        if let Some(purged) = checkpoint.purged {
            self.purge(purged);
        }
    }

    /// Whether the group carries no state at all (it need not be remembered).
    pub fn is_blank(&self) -> bool {
        self.vote.is_none()
            && self.committed.is_none()
            && self.purged.is_none()
            && self.slots.is_empty()
    }
}

/// Recently written entries, keyed by their position on disk (a position is never reused, so
/// truncation needs no invalidation). First in, first out, bounded by `capacity_bytes`.
#[derive(Debug)]
pub(crate) struct EntryCache {
    capacity_bytes: u64,
    bytes: u64,
    entries: HashMap<(u64, u64), Bytes>,
    order: VecDeque<(u64, u64)>,
}

impl EntryCache {
    pub fn new(capacity_bytes: u64) -> EntryCache {
        EntryCache { capacity_bytes, bytes: 0, entries: HashMap::new(), order: VecDeque::new() }
    }

    pub fn get(&self, segment: u64, offset: u64) -> Option<Bytes> {
        self.entries.get(&(segment, offset)).cloned()
    }

    pub fn insert(&mut self, segment: u64, offset: u64, bytes: Bytes) {
        let size = bytes.len() as u64;
        if size > self.capacity_bytes {
            return;
        }
        if self.entries.insert((segment, offset), bytes).is_some() {
            panic!("a disk position was cached twice: segment {segment} offset {offset}");
        }
        self.order.push_back((segment, offset));
        self.bytes += size;
        while self.bytes > self.capacity_bytes {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(evicted) = self.entries.remove(&oldest) {
                self.bytes -= evicted.len() as u64;
            }
        }
        assert!(self.bytes <= self.capacity_bytes);
        assert_eq!(self.entries.len(), self.order.len());
    }

    /// Drops the entries of deleted segments.
    pub fn forget_segments_below(&mut self, segment: u64) {
        let entries = &mut self.entries;
        let bytes = &mut self.bytes;
        self.order.retain(|key| {
            if key.0 >= segment {
                return true;
            }
            if let Some(evicted) = entries.remove(key) {
                *bytes -= evicted.len() as u64;
            }
            false
        });
        assert_eq!(self.entries.len(), self.order.len());
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn slot(index: u64) -> Slot {
        Slot {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            serial: index,
            location: Location::Disk { segment: 1, offset: index * 100, len: 10 },
        }
    }

    #[test]
    fn truncate_and_purge_keep_entries_contiguous() {
        let mut group = GroupIndex::default();
        for index in 3..10 {
            group.check_append(5, index).unwrap();
            group.push(slot(index));
        }
        assert!(group.check_append(5, 11).is_err());
        assert!(group.check_append(5, 9).is_err());
        group.truncate(7);
        assert_eq!(group.next_index(), 7);
        group.purge(LogId::new(CommittedLeaderId::new(1, 0), 4));
        assert_eq!(group.first, 5);
        assert_eq!(group.slots.len(), 2);
        group.purge(LogId::new(CommittedLeaderId::new(1, 0), 20));
        assert!(group.slots.is_empty());
        assert_eq!(group.last_log_id().map(|id| id.index), Some(20));
        group.check_append(5, 21).unwrap();
        group.check_append(5, 3).unwrap();
        group.truncate(0);
        assert!(group.slots.is_empty());
    }

    #[test]
    fn cache_stays_within_its_capacity() {
        let mut cache = EntryCache::new(100);
        for offset in 0..10 {
            cache.insert(1, offset, Bytes::from(vec![0u8; 30]));
            assert!(cache.bytes() <= 100);
        }
        assert!(cache.get(1, 9).is_some());
        assert!(cache.get(1, 0).is_none());
        cache.insert(2, 0, Bytes::from(vec![0u8; 500]));
        assert!(cache.get(2, 0).is_none());
        cache.forget_segments_below(2);
        assert_eq!(cache.bytes(), 0);
    }
}
