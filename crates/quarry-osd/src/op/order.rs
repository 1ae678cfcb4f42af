//! Per-object ordering of mutations: mutations to one object are *proposed* to the PG's log in
//! the order they arrived, whatever order their handler tasks run in.
//!
//! The rule:
//! - When a mutating `Op` with a request id arrives on a connection, the wire reader (still in
//!   arrival order, [`quarry_wire::Handler::arrived`]) takes a [`Slot`] at the back of the
//!   object's queue (`(pg, name)`) and parks it in the connection's session under its request
//!   id, where the op's handler picks it up.
//! - The handler does everything that may wait (map catch-up, caps, leader) first, then waits
//!   for its slot to reach the front ([`Slot::turn`]), proposes with `client_write_ff` and
//!   releases the slot at once ([`Slot::proposed`]): the next op proposes right behind it, so
//!   pipelined writes keep flowing, and the log (hence apply) order is the arrival order.
//! - An op that fails before proposing with an answer the client retries (`Retry`, a dead
//!   connection that aborted its handler: its slot is dropped) *fences* its client instance on
//!   that object at its tid: a later op of the same client to that object, reaching the front
//!   while the fence stands, is answered `Retry` without proposing. The fence lifts when the
//!   fenced tid itself comes back (the client's resend), or after [`FENCE_TTL`]. So a later op
//!   never overtakes an earlier one the client has to resend, including ops that were queued
//!   behind an aborted one on a dead connection. Final answers (EPERM, EINVAL, ...) do not
//!   fence: the client will not resend them.
//! - Ops without a request id and reads are not queued (reads see whatever is applied).
//!
//! A proposal the Raft core then refuses (leadership lost between the leader check and the
//! proposal) is answered `Retry` after the ops behind it were released: the one window where
//! a later op of the same client could still be applied first. Leadership is pinned to the
//! primary, so that takes a primary change in the middle of a pipelined burst.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use quarry_types::{EntityName, PgId, ReqId};

/// How long a fence holds a client's later ops on an object when the fenced op is not resent.
pub(crate) const FENCE_TTL: Duration = Duration::from_secs(30);

type Key = (PgId, String);

struct Fence {
    tid: u64,
    until: Instant,
}

#[derive(Default)]
struct Queue {
    /// Sequence number of the next slot.
    next: u64,
    /// Slots not released yet, oldest first: `(seq, released)`.
    slots: VecDeque<(u64, bool)>,
    /// Fenced client instances: `(entity, client) -> fence`.
    fences: HashMap<(EntityName, u64), Fence>,
    changed: Arc<Notify>,
}

impl Queue {
    fn front(&self) -> Option<u64> {
        self.slots.front().map(|(seq, _)| *seq)
    }

    fn prune_fences(&mut self, now: Instant) {
        self.fences.retain(|_, fence| fence.until > now);
    }
}

/// The queues of every object with mutations in flight (or a standing fence) on this OSD.
#[derive(Default)]
pub(crate) struct ObjectOrder {
    queues: Mutex<HashMap<Key, Queue>>,
    /// Enqueues since the last sweep of expired fences.
    since_sweep: std::sync::atomic::AtomicU64,
}

/// Every this many enqueues, objects left with only expired fences are forgotten (a fence is
/// otherwise dropped only when its object is used again).
const SWEEP_EVERY: u64 = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Why an op may not propose.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fenced;

impl ObjectOrder {
    /// A slot at the back of the object's queue.
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        pg: PgId,
        name: &str,
        who: (EntityName, ReqId),
    ) -> Slot {
        let key = (pg, name.to_string());
        let mut queues = lock(&self.queues);
        let count = self.since_sweep.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if count % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let now = Instant::now();
            queues.retain(|_, queue| {
                queue.prune_fences(now);
                !(queue.slots.is_empty() && queue.fences.is_empty())
            });
        }
        let queue = queues.entry(key.clone()).or_default();
        let seq = queue.next;
        queue.next += 1;
        queue.slots.push_back((seq, false));
        Slot { order: self.clone(), key, seq, who, changed: queue.changed.clone(), open: true }
    }

    /// Objects with a queue or a fence (for tests and diagnostics).
    #[cfg(test)]
    fn objects(&self) -> usize {
        lock(&self.queues).len()
    }

    /// Releases slot `seq` of `key`, fencing `who` first if `fence`.
    fn release(&self, key: &Key, seq: u64, who: &(EntityName, ReqId), fence: bool) {
        let mut queues = lock(&self.queues);
        let Some(queue) = queues.get_mut(key) else {
            return;
        };
        let now = Instant::now();
        if fence {
            let client = (who.0.clone(), who.1.client);
            let tid = who.1.tid;
            let until = now + FENCE_TTL;
            queue
                .fences
                .entry(client)
                .and_modify(|f| {
                    if tid <= f.tid || f.until <= now {
                        *f = Fence { tid, until };
                    }
                })
                .or_insert(Fence { tid, until });
        }
        if let Some(slot) = queue.slots.iter_mut().find(|(s, _)| *s == seq) {
            slot.1 = true;
        }
        while queue.slots.front().is_some_and(|(_, released)| *released) {
            queue.slots.pop_front();
        }
        queue.changed.notify_waiters();
        queue.prune_fences(now);
        if queue.slots.is_empty() && queue.fences.is_empty() {
            queues.remove(key);
        }
    }

    /// At the front: may `who` propose? Lifts the fence its tid is.
    fn check_fence(&self, key: &Key, who: &(EntityName, ReqId)) -> Result<(), Fenced> {
        let mut queues = lock(&self.queues);
        let Some(queue) = queues.get_mut(key) else {
            return Ok(());
        };
        let client = (who.0.clone(), who.1.client);
        let Some(fence) = queue.fences.get(&client) else {
            return Ok(());
        };
        if fence.until <= Instant::now() || fence.tid == who.1.tid {
            queue.fences.remove(&client);
            return Ok(());
        }
        if who.1.tid > fence.tid {
            return Err(Fenced);
        }
        Ok(())
    }

    fn is_front(&self, key: &Key, seq: u64) -> bool {
        lock(&self.queues).get(key).and_then(Queue::front) == Some(seq)
    }
}

/// A mutation's place in its object's queue. Dropping it unreleased (the handler was aborted,
/// or failed early) counts as a failure the client will retry: it fences (module docs).
pub(crate) struct Slot {
    order: Arc<ObjectOrder>,
    key: Key,
    seq: u64,
    who: (EntityName, ReqId),
    changed: Arc<Notify>,
    open: bool,
}

impl Slot {
    /// Waits until every op that arrived before this one on the object is proposed or failed;
    /// then `Err(Fenced)` if an earlier op of the same client must be resent first.
    pub(crate) async fn turn(&self) -> Result<(), Fenced> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.order.is_front(&self.key, self.seq) {
                return self.order.check_fence(&self.key, &self.who);
            }
            notified.await;
        }
    }

    /// The op is in the Raft core's queue (or was answered finally): the next one may go.
    pub(crate) fn proposed(mut self) {
        self.open = false;
        self.order.release(&self.key, self.seq, &self.who, false);
    }

    /// The op failed before proposing and the client will resend it: fence, then release.
    pub(crate) fn retry(self) {
        drop(self);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.open {
            self.order.release(&self.key, self.seq, &self.who, true);
        }
    }
}

/// The slots a connection's reader took for ops whose handlers have not picked them up yet
/// (kept in the connection's session: they go, fencing, when the connection does).
#[derive(Clone, Default)]
pub(crate) struct Parked {
    slots: Arc<Mutex<HashMap<ReqId, Slot>>>,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Parked({} slots)", lock(&self.slots).len())
    }
}

impl Parked {
    /// Parks `slot` for the handler of the op with `reqid`. A second op with the same id on
    /// one connection (a client bug) replaces the first's slot; the first then queues at
    /// the back when its handler runs.
    pub(crate) fn park(&self, reqid: ReqId, slot: Slot) {
        lock(&self.slots).insert(reqid, slot);
    }

    pub(crate) fn take(&self, reqid: ReqId) -> Option<Slot> {
        lock(&self.slots).remove(&reqid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(tid: u64) -> (EntityName, ReqId) {
        (EntityName::client("admin"), ReqId { client: 9, tid })
    }

    const PG: PgId = PgId { pool: 1, seed: 0 };

    /// Goal: slots come to the front in arrival order, whatever order they wait in.
    #[tokio::test]
    async fn turns_follow_arrival_order() {
        let order = Arc::new(ObjectOrder::default());
        let slots: Vec<Slot> = (1..=50).map(|tid| order.enqueue(PG, "o", who(tid))).collect();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, slot) in slots.into_iter().enumerate().rev() {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                slot.turn().await.unwrap();
                lock(&log).push(i);
                slot.proposed();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*lock(&log), (0..50).collect::<Vec<_>>());
        assert_eq!(order.objects(), 0, "queues go once empty");
    }

    /// Goal: a dropped (aborted) slot fences the same client's later ops until its tid comes
    /// back; other clients and other objects are not held.
    #[tokio::test]
    async fn a_dropped_slot_fences_later_ops_of_its_client() {
        let order = Arc::new(ObjectOrder::default());
        let first = order.enqueue(PG, "o", who(1));
        let second = order.enqueue(PG, "o", who(2));
        let other_client =
            order.enqueue(PG, "o", (EntityName::client("admin"), ReqId { client: 10, tid: 5 }));
        let other_object = order.enqueue(PG, "p", who(3));
        drop(first);
        assert_eq!(second.turn().await, Err(Fenced));
        second.retry();
        assert_eq!(other_client.turn().await, Ok(()));
        other_client.proposed();
        assert_eq!(other_object.turn().await, Ok(()));
        other_object.proposed();
        // The resend of tid 1 lifts the fence; tid 2 then goes.
        let first = order.enqueue(PG, "o", who(1));
        let second = order.enqueue(PG, "o", who(2));
        assert_eq!(first.turn().await, Ok(()));
        first.proposed();
        assert_eq!(second.turn().await, Ok(()));
        second.proposed();
        assert_eq!(order.objects(), 0);
    }
}
