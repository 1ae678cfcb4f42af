//! Request ids and the send order of mutations to one object.
//!
//! Every mutating op vector gets a [`ReqId`]: this client instance's random `client` number and
//! the next `tid`, taken when [`crate::Rados::exec`] is first polled (so ops started one after
//! the other get increasing tids) and kept for every resend. The OSD keeps the replies of
//! recent request ids per PG, so a resend of an op that was applied gets the first answer.
//!
//! Ordering rule: a mutation to an object is sent (first send or resend) only once every
//! earlier mutation to that object still waiting for its answer has been sent on the same
//! connection. Sends on one connection keep their order, and the OSD proposes ops to one
//! object in arrival order, so ops to one object apply in tid order, across `Retry` replies,
//! lost connections and resends. An op whose send failed (connection lost, `Retry`) counts as
//! not sent until it is sent again, so the ops behind it wait for it. Different objects do not
//! wait for each other.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use quarry_types::{PoolId, ReqId};

type Key = (PoolId, String);

struct Object {
    /// Unanswered mutations by tid: the connection each was last sent on (None: not sent
    /// since it was started or since its last send failed).
    pending: BTreeMap<u64, Option<u64>>,
    changed: Arc<Notify>,
}

/// The request ids and per-object send order of one client instance.
pub(crate) struct SendOrder {
    client: u64,
    next_tid: AtomicU64,
    objects: Mutex<HashMap<Key, Object>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl SendOrder {
    /// A new instance with a random client number.
    pub(crate) fn new() -> Arc<SendOrder> {
        Arc::new(SendOrder {
            client: rand::random(),
            next_tid: AtomicU64::new(1),
            objects: Mutex::new(HashMap::new()),
        })
    }

    /// The next request id, registered as an unsent mutation of `object`.
    pub(crate) fn begin(self: &Arc<Self>, pool: PoolId, object: &str) -> Ticket {
        let tid = self.next_tid.fetch_add(1, Ordering::Relaxed);
        let key = (pool, object.to_string());
        let mut objects = lock(&self.objects);
        let entry = objects.entry(key.clone()).or_insert_with(|| Object {
            pending: BTreeMap::new(),
            changed: Arc::new(Notify::new()),
        });
        entry.pending.insert(tid, None);
        let changed = entry.changed.clone();
        Ticket { order: self.clone(), key, tid, changed }
    }

    fn update(&self, key: &Key, f: impl FnOnce(&mut Object)) {
        let mut objects = lock(&self.objects);
        if let Some(object) = objects.get_mut(key) {
            f(object);
            object.changed.notify_waiters();
            if object.pending.is_empty() {
                objects.remove(key);
            }
        }
    }

    fn earlier_sent_on(&self, key: &Key, tid: u64, conn: u64) -> bool {
        lock(&self.objects)
            .get(key)
            .is_none_or(|o| o.pending.range(..tid).all(|(_, sent)| *sent == Some(conn)))
    }
}

/// One mutation's request id and place in its object's send order; dropping it (answered,
/// failed, timed out, cancelled) lets the ops behind it go.
pub(crate) struct Ticket {
    order: Arc<SendOrder>,
    key: Key,
    tid: u64,
    changed: Arc<Notify>,
}

impl Ticket {
    /// The request id (the same for every send).
    pub(crate) fn reqid(&self) -> ReqId {
        ReqId { client: self.order.client, tid: self.tid }
    }

    /// Waits until every earlier unanswered mutation to the object was sent on `conn`.
    pub(crate) async fn turn(&self, conn: u64) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.order.earlier_sent_on(&self.key, self.tid, conn) {
                return;
            }
            notified.await;
        }
    }

    /// Sent (queued in order) on `conn`.
    pub(crate) fn sent(&self, conn: u64) {
        self.order.update(&self.key, |o| {
            o.pending.insert(self.tid, Some(conn));
        });
    }

    /// The send failed or was refused: the ops behind wait for the resend.
    pub(crate) fn unsent(&self) {
        self.order.update(&self.key, |o| {
            o.pending.insert(self.tid, None);
        });
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let tid = self.tid;
        self.order.update(&self.key, |o| {
            o.pending.remove(&tid);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a later op waits until the earlier ones are sent on its connection; a failed
    /// send holds the ops behind it again; answered ops hold nothing.
    #[tokio::test]
    async fn later_ops_wait_for_earlier_sends_on_the_same_connection() {
        let order = SendOrder::new();
        let first = order.begin(1, "o");
        let second = order.begin(1, "o");
        let other = order.begin(1, "p");
        assert_eq!(second.reqid().tid, first.reqid().tid + 1);
        assert_eq!(second.reqid().client, first.reqid().client);
        // Another object does not wait.
        tokio::time::timeout(std::time::Duration::from_secs(1), other.turn(7)).await.unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), second.turn(7));
        assert!(waiting.await.is_err(), "the second op went before the first was sent");
        first.sent(8);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), second.turn(7));
        assert!(waiting.await.is_err(), "sent on another connection is not sent on ours");
        first.sent(7);
        tokio::time::timeout(std::time::Duration::from_secs(1), second.turn(7)).await.unwrap();
        first.unsent();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), second.turn(7));
        assert!(waiting.await.is_err(), "the first op's resend must go first");
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(1), second.turn(9)).await.unwrap();
        drop((second, other));
        assert!(lock(&order.objects).is_empty());
    }
}
