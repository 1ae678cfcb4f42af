//! Large write payloads placed while they arrive (issue 14): the wire hands the OSD a
//! request's bulk payload in pieces as it comes in ([`quarry_wire::BulkSink`]); for a write to
//! a one-voter PG that would be placed anyway (write-once, [`super::placer`]), each piece is
//! written to reserved blocks of the store's data file at once, so the device write overlaps
//! the transfer instead of following it. When the op's entry is appended, the PG's placer
//! takes this placement ([`Preplaced::take`]) instead of writing the payload itself; from
//! there every rule of [`super::placer`] applies unchanged (the WAL's sync hook makes the data
//! durable before the record; the apply claims the blocks and checks the client's crc).
//!
//! # Why it is safe
//! - **Nothing names the blocks before an entry does.** They are reserved
//!   ([`quarry_store::Store::reserve_placement`]): neither free nor any row's. Until the
//!   placer takes them, no log entry, row or reader knows them, so giving them back at once
//!   ([`quarry_store::Store::release_placed`]) is safe: when the frame fails (truncated,
//!   tampered: its signature is checked after the pieces were written, so unauthenticated
//!   bytes only ever reach reserved blocks), when a piece's write fails, when the request
//!   ends without its entry taking them (refused, not the primary, not placeable after all,
//!   the connection dropped). The reserved set is memory only: a crash frees them too.
//!   Blocks given back are free at once but not hole-punched (the next placement of that
//!   size takes them, best fit; a restart punches every free extent). A payload is offered
//!   only to a session whose caps let it write to the pool and namespace, while the OSD
//!   takes writes (`OsdService::bulk_sink`): a client the op's own checks will refuse does
//!   not get its data written first.
//! - **The placement is exactly the payload's bytes.** It is registered under the address
//!   and length of the bulk's bytes in the received frame, and the registration holds those
//!   bytes (a `Bytes` of them), so no other buffer can have that address while it exists;
//!   the placer takes it only for a payload with that very address and length, i.e. the
//!   same memory the pieces were written from (a frame is never changed after it arrived).
//!   The chunk crcs are computed from that memory; the apply compares them with the
//!   client's crc of the payload as for any placement.
//! - **Taken or given back, never both.** The placer's [`Preplaced::take`] and the request's
//!   end remove the registration under one lock; only the one that removed it owns it.
//! - **Written before the entry.** The wire calls [`quarry_wire::BulkSink::finish`] (which
//!   registers the placement) only after every piece was written, and the request is handled
//!   (its entry proposed) after that: the placed write precedes the record, as (a) of
//!   [`super::placer`] requires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use quarry_store::{Placed, Store};
use quarry_wire::{BulkDone, BulkSink};

/// Placements made while their payloads arrived, waiting for their entries, by the address
/// and length of the payload's bytes in the received frame.
pub(crate) struct Preplaced {
    store: Arc<Store>,
    waiting: Mutex<HashMap<(usize, usize), Placed>>,
    /// Payloads whose entries carry a placement made while they arrived, and payloads placed
    /// when their entries were appended (`ceph tell osd.N perf dump`; counted by the placer).
    pub(crate) placed_on_arrival: AtomicU64,
    pub(crate) placed_at_append: AtomicU64,
    /// Placements made while payloads arrived that no entry took (given back).
    pub(crate) given_back: AtomicU64,
}

fn key(bytes: &[u8]) -> (usize, usize) {
    (bytes.as_ptr() as usize, bytes.len())
}

impl Preplaced {
    pub(crate) fn new(store: Arc<Store>) -> Arc<Preplaced> {
        let (placed_on_arrival, placed_at_append) = (AtomicU64::new(0), AtomicU64::new(0));
        let (waiting, given_back) = (Mutex::new(HashMap::new()), AtomicU64::new(0));
        Arc::new(Preplaced { store, waiting, placed_on_arrival, placed_at_append, given_back })
    }

    /// Gives a placement no entry took back to the store.
    fn give_back(&self, placed: &Placed) {
        self.store.release_placed(placed);
        self.given_back.fetch_add(1, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(usize, usize), Placed>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The placement of `data` if its very bytes were placed while they arrived (it is then
    /// the caller's, for its entry).
    pub(crate) fn take(&self, data: &Bytes) -> Option<Placed> {
        if data.len() < quarry_wire::BULK_STREAM_MIN {
            return None;
        }
        self.lock().remove(&key(data))
    }

    /// Placements waiting for their entries (tests).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.lock().len()
    }

    /// A sink that places a bulk payload of `len` bytes; None if the store cannot reserve it.
    pub(crate) fn sink(self: &Arc<Self>, len: usize) -> Option<Arc<dyn BulkSink>> {
        let block = match self.store.reserve_placement(len) {
            Ok(block) => block,
            Err(error) => {
                tracing::debug!(%error, len, "no placement while a payload arrives");
                return None;
            }
        };
        let state = Mutex::new(SinkState { crcs: vec![0; len / 4096], written: 0, handed: false });
        Some(Arc::new(PlacingSink { preplaced: self.clone(), block, len, state }))
    }
}

/// Writes a bulk payload's pieces to its reserved blocks as they arrive.
struct PlacingSink {
    preplaced: Arc<Preplaced>,
    block: u64,
    len: usize,
    state: Mutex<SinkState>,
}

struct SinkState {
    /// The chunks' crcs, filled in as pieces are written.
    crcs: Vec<u32>,
    /// Bytes written.
    written: usize,
    /// The placement went to the registry: nothing to undo.
    handed: bool,
}

impl PlacingSink {
    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BulkSink for PlacingSink {
    fn write(&self, at: usize, bytes: &[u8]) -> bool {
        if !at.is_multiple_of(4096) || at + bytes.len() > self.len {
            return false;
        }
        match self.preplaced.store.write_placement(self.block, at, bytes) {
            Ok(crcs) => {
                let mut state = self.lock();
                state.crcs[at / 4096..][..crcs.len()].copy_from_slice(&crcs);
                state.written += bytes.len();
                true
            }
            Err(error) => {
                tracing::warn!(%error, "placing a payload while it arrives failed: placed later");
                false
            }
        }
    }

    fn finish(&self, bulk: Bytes) -> Option<BulkDone> {
        let mut state = self.lock();
        if state.handed || state.written != self.len || bulk.len() != self.len {
            return None; // released when dropped
        }
        state.handed = true;
        let placed = Placed { block: self.block, crcs: std::mem::take(&mut state.crcs) };
        drop(state);
        let key = key(&bulk);
        let earlier = self.preplaced.lock().insert(key, placed);
        if let Some(earlier) = earlier {
            // Impossible while `bulk` holds the address (a registration holds its bytes);
            // never leak or double-own blocks if it happened anyway.
            self.preplaced.store.release_placed(&earlier);
        }
        Some(Box::new(Waiting { preplaced: self.preplaced.clone(), key, _bulk: bulk }))
    }
}

impl Drop for PlacingSink {
    fn drop(&mut self) {
        if !self.lock().handed {
            self.preplaced.give_back(&Placed { block: self.block, crcs: Vec::new() });
        }
    }
}

/// A registered placement, held with its request: when the request is done, a placement
/// its entry did not take goes back to the store.
struct Waiting {
    preplaced: Arc<Preplaced>,
    key: (usize, usize),
    /// Keeps the payload's memory (and so its address) for the registration's life.
    _bulk: Bytes,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let left = self.preplaced.lock().remove(&self.key);
        if let Some(placed) = left {
            self.preplaced.give_back(&placed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: usize = 2 << 20;

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store.redb")).unwrap());
        (dir, store)
    }

    fn reserved(store: &Store) -> u64 {
        store.data_space().unwrap().reserved_bytes
    }

    fn payload() -> Bytes {
        Bytes::from((0..LEN).map(|i| (i * 11 + i / 4096) as u8).collect::<Vec<u8>>())
    }

    /// Hands `bulk` to `sink` in wire-sized pieces, the second half first (writers run in
    /// any order).
    fn write_all(sink: &dyn BulkSink, bulk: &[u8]) {
        let piece = quarry_wire::BULK_PIECE;
        let mut ats: Vec<usize> = (0..bulk.len()).step_by(piece).collect();
        let half = ats.len() / 2;
        ats.rotate_left(half);
        for at in ats {
            assert!(sink.write(at, &bulk[at..(at + piece).min(bulk.len())]));
        }
    }

    #[test]
    fn a_payload_placed_while_it_arrived_is_taken_by_its_entry_once() {
        let (_dir, store) = store();
        let preplaced = Preplaced::new(store.clone());
        let bulk = payload();
        let sink = preplaced.sink(LEN).unwrap();
        write_all(&*sink, &bulk);
        let waiting = sink.finish(bulk.clone()).expect("every piece written");
        drop(sink);
        // Another buffer with the same bytes is not this payload.
        assert_eq!(preplaced.take(&Bytes::copy_from_slice(&bulk)), None);
        let placed = preplaced.take(&bulk).expect("the payload's placement");
        assert_eq!(preplaced.take(&bulk), None, "taken once");
        let crcs: Vec<u32> = bulk.chunks(4096).map(crc32c::crc32c).collect();
        assert_eq!(placed.crcs, crcs);
        let mut back = vec![0u8; LEN];
        store.read_placed(&placed, &mut back).unwrap();
        assert_eq!(back, bulk[..]);
        // The request ends: the entry owns the blocks, they stay reserved for its apply.
        drop(waiting);
        assert_eq!(reserved(&store), LEN as u64);
        assert!(store.release_placed(&placed));
        assert_eq!(reserved(&store), 0);
    }

    #[test]
    fn a_placement_no_entry_took_is_given_back() {
        let (_dir, store) = store();
        let preplaced = Preplaced::new(store.clone());
        let bulk = payload();

        // The request ended before its entry was appended (refused, not the primary...).
        let sink = preplaced.sink(LEN).unwrap();
        write_all(&*sink, &bulk);
        let waiting = sink.finish(bulk.clone()).unwrap();
        drop(sink);
        assert_eq!((reserved(&store), preplaced.waiting()), (LEN as u64, 1));
        drop(waiting);
        assert_eq!((reserved(&store), preplaced.waiting()), (0, 0));

        // The frame failed (its signature, a truncation): the sink is dropped unfinished.
        let sink = preplaced.sink(LEN).unwrap();
        write_all(&*sink, &bulk);
        assert_eq!(reserved(&store), LEN as u64);
        drop(sink);
        assert_eq!(reserved(&store), 0);

        // A piece missing: no placement comes of it.
        let sink = preplaced.sink(LEN).unwrap();
        assert!(sink.write(0, &bulk[..quarry_wire::BULK_PIECE]));
        assert!(!sink.write(1, &bulk[..4096]), "a piece off a chunk boundary");
        assert!(!sink.write(LEN - 4096, &bulk[..8192]), "a piece past the end");
        assert!(sink.finish(bulk.clone()).is_none());
        drop(sink);
        assert_eq!((reserved(&store), preplaced.waiting()), (0, 0));
        // The blocks given back are reused (no leak): the next placement starts at block 0.
        let block = store.reserve_placement(LEN).unwrap();
        assert_eq!(block, 0);
    }
}
