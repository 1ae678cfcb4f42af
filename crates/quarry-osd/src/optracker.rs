//! The OSD's op tracker: the client ops it is handling now and the last ones it finished,
//! for `ceph tell osd.N dump_ops_in_flight` and `dump_historic_ops` in Ceph's JSON shapes
//! (`{"ops": [{"description", "initiated_at", "age", "duration", "type_data": {"flag_point",
//! "client_info", "events"}}], "num_ops"}`; historic: `{"size", "duration", "ops"}`).
//!
//! An op is registered when the OSD starts handling it (after the connection's and the
//! OSD's in-flight bounds let it in) and leaves when it is answered; Quarry does not record
//! the stages inside (queued for its object, proposed, committed), so an op in flight has
//! the flag point `started` and the events `initiated` and `started`, a finished one also
//! `done`. The historic list keeps the last [`HISTORY_SIZE`] ops that finished within
//! [`HISTORY_DURATION`] (Ceph's `osd_op_history_size` 20, `osd_op_history_duration` 600 s).
//! It also says when an op is alone ([`OpTracker::alone`]: queue depth 1, which the OSD
//! serves on the op's own thread). Cost per op: one short mutex hold to register, one to
//! finish, and copies of the object's name, the ops' names and extents (never data): the
//! description is formatted only when dumped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use std::net::SocketAddr;

use quarry_types::{EntityName, ObjectOp};
use quarry_wire::OsdOp;

/// Finished ops kept for `dump_historic_ops`.
pub const HISTORY_SIZE: usize = 20;
/// How long a finished op stays in the history.
pub const HISTORY_DURATION: Duration = Duration::from_secs(600);

/// What the description says, kept raw: formatted only when dumped.
struct Tracked {
    pg: quarry_types::PgId,
    object: String,
    /// Each op's name and extent.
    ops: Vec<(&'static str, Option<(u64, u64)>)>,
    epoch: u64,
    client: EntityName,
    client_addr: SocketAddr,
    tid: u64,
    initiated: SystemTime,
    started: Instant,
    finished: Option<(SystemTime, Instant)>,
}

/// An op is [`OpTracker::alone`] only if no two ops overlapped for this long: a client at
/// queue depth 32 answered in bursts has moments with one op in flight, which must not count.
pub const ALONE_AFTER: Duration = Duration::from_millis(2);

/// The ops in flight and the recent history of one OSD.
pub struct OpTracker {
    next: AtomicU64,
    /// Ops in flight (the length of `in_flight`, readable without its lock).
    count: AtomicUsize,
    /// When an op last started beside another (µs since `born`): see [`OpTracker::alone`].
    overlap_at: AtomicU64,
    born: Instant,
    in_flight: Mutex<BTreeMap<u64, Tracked>>,
    history: Mutex<VecDeque<Tracked>>,
}

/// An op being handled: it leaves the in-flight list (for the history) when dropped.
pub struct InFlight {
    tracker: Arc<OpTracker>,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(mut op) = lock(&self.tracker.in_flight).remove(&self.id) else { return };
        self.tracker.count.fetch_sub(1, Ordering::Relaxed);
        op.finished = Some((SystemTime::now(), Instant::now()));
        let mut history = lock(&self.tracker.history);
        history.push_back(op);
        while history.len() > HISTORY_SIZE {
            history.pop_front();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Ceph's name of an op of the vector and its extent (`osd_op`'s bracketed list).
fn op_name(op: &ObjectOp) -> (&'static str, Option<(u64, u64)>) {
    match op {
        ObjectOp::Read { off, len, .. } => ("read", Some((*off, *len))),
        ObjectOp::Write { off, data } => ("write", Some((*off, data.len() as u64))),
        ObjectOp::WriteFull { data } => ("writefull", Some((0, data.len() as u64))),
        ObjectOp::Zero { off, len } => ("zero", Some((*off, *len))),
        ObjectOp::Truncate { .. } => ("truncate", None),
        ObjectOp::Stat => ("stat", None),
        ObjectOp::AssertExists => ("assert-exists", None),
        ObjectOp::GetXattr { .. } => ("getxattr", None),
        ObjectOp::GetXattrs => ("getxattrs", None),
        ObjectOp::CmpXattr { .. } => ("cmpxattr", None),
        ObjectOp::OmapGetVals { .. } => ("omap-get-vals", None),
        ObjectOp::OmapGetKeys { .. } => ("omap-get-keys", None),
        ObjectOp::OmapGetValsByKeys { .. } => ("omap-get-vals-by-keys", None),
        ObjectOp::OmapGetHeader => ("omap-get-header", None),
        ObjectOp::OmapCmp { .. } => ("omap-cmp", None),
        ObjectOp::Create { .. } => ("create", None),
        ObjectOp::Remove => ("delete", None),
        ObjectOp::SetXattr { .. } => ("setxattr", None),
        ObjectOp::RmXattr { .. } => ("rmxattr", None),
        ObjectOp::OmapSetVals { .. } => ("omap-set-vals", None),
        ObjectOp::OmapRmKeys { .. } => ("omap-rm-keys", None),
        ObjectOp::OmapClear => ("omap-clear", None),
        ObjectOp::OmapSetHeader { .. } => ("omap-set-header", None),
        ObjectOp::SnapTrimRetired { .. } => ("snaptrim", None),
        ObjectOp::Call { .. } => ("call", None),
        ObjectOp::Rollback { .. } => ("rollback", None),
        ObjectOp::CmpExt { .. } => ("cmpext", None),
    }
}

/// `2026-12-04T22:50:00.123456+0000`, as Ceph prints op times.
fn utime(at: SystemTime) -> String {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

impl OpTracker {
    /// Registers `op` from `client` (its entity) at `addr`.
    pub fn start(self: &Arc<Self>, op: &OsdOp, client: &EntityName, addr: SocketAddr) -> InFlight {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let tracked = Tracked {
            pg: op.pg,
            object: op.name.clone(),
            ops: op.ops.iter().map(op_name).collect(),
            epoch: op.epoch,
            client: client.clone(),
            client_addr: addr,
            tid: op.reqid.map(|r| r.tid).unwrap_or(0),
            initiated: SystemTime::now(),
            started: Instant::now(),
            finished: None,
        };
        lock(&self.in_flight).insert(id, tracked);
        if self.count.fetch_add(1, Ordering::Relaxed) > 0 {
            self.overlap_at.store(self.micros(), Ordering::Relaxed);
        }
        InFlight { tracker: self.clone(), id }
    }

    fn micros(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// True when the op being handled is the only one in flight and no two ops overlapped for
    /// [`ALONE_AFTER`]: a client at queue depth 1 (the OSD then runs the op's WAL round and
    /// apply on the op's own thread: `pg::apply`, "Inline applies").
    pub fn alone(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 1
            && self.micros().saturating_sub(self.overlap_at.load(Ordering::Relaxed))
                >= ALONE_AFTER.as_micros() as u64
    }

    /// `dump_ops_in_flight`.
    pub fn dump_in_flight(&self) -> Value {
        let now = Instant::now();
        let ops: Vec<Value> = lock(&self.in_flight).values().map(|op| op.json(now)).collect();
        json!({"ops": ops, "num_ops": ops.len()})
    }

    /// `dump_historic_ops`: the last finished ops still within [`HISTORY_DURATION`].
    pub fn dump_historic(&self) -> Value {
        let now = Instant::now();
        let mut history = lock(&self.history);
        history.retain(|op| {
            op.finished.is_some_and(|(_, at)| now.duration_since(at) <= HISTORY_DURATION)
        });
        let ops: Vec<Value> = history.iter().map(|op| op.json(now)).collect();
        json!({"size": HISTORY_SIZE, "duration": HISTORY_DURATION.as_secs(), "ops": ops})
    }
}

impl Default for OpTracker {
    fn default() -> OpTracker {
        OpTracker {
            next: AtomicU64::new(0),
            count: AtomicUsize::new(0),
            overlap_at: AtomicU64::new(0),
            born: Instant::now(),
            in_flight: Mutex::default(),
            history: Mutex::default(),
        }
    }
}

impl Tracked {
    /// Ceph's description: `osd_op(client.admin.0:7 1.3 obj [write 0~4096] e12)`.
    fn description(&self) -> String {
        let ops: Vec<String> = self
            .ops
            .iter()
            .map(|(name, extent)| match extent {
                Some((offset, length)) => format!("{name} {offset}~{length}"),
                None => name.to_string(),
            })
            .collect();
        format!(
            "osd_op({}.0:{} {} {} [{}] e{})",
            self.client,
            self.tid,
            self.pg,
            self.object,
            ops.join(","),
            self.epoch
        )
    }

    fn json(&self, now: Instant) -> Value {
        let age = now.duration_since(self.started).as_secs_f64();
        let duration = match self.finished {
            Some((_, at)) => at.duration_since(self.started).as_secs_f64(),
            None => age,
        };
        let initiated = utime(self.initiated);
        let mut events = vec![
            json!({"event": "initiated", "time": initiated, "duration": 0.0}),
            json!({"event": "started", "time": initiated, "duration": 0.0}),
        ];
        let flag_point = match self.finished {
            Some((at, _)) => {
                events.push(json!({"event": "done", "time": utime(at), "duration": duration}));
                "done"
            }
            None => "started",
        };
        json!({
            "description": self.description(),
            "initiated_at": initiated,
            "age": age,
            "duration": duration,
            "type_data": {
                "flag_point": flag_point,
                "client_info": {
                    "client": self.client.to_string(),
                    "client_addr": self.client_addr.to_string(),
                    "tid": self.tid
                },
                "events": events
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_cephs() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_424_600_123_456);
        assert_eq!(utime(at), "2026-12-04T22:50:00.123456+0000");
    }

    /// Goal: `alone` holds for an op with no other in flight and none overlapping for
    /// [`ALONE_AFTER`] (a queue-depth-1 client), not for a moment with one op left of a burst.
    /// Method: ops started and finished by hand around sleeps of `ALONE_AFTER`.
    #[test]
    fn an_op_is_alone_only_when_nothing_overlapped_lately() {
        let tracker = Arc::new(OpTracker::default());
        let op = OsdOp {
            pg: quarry_types::PgId { pool: 1, seed: 0 },
            epoch: 1,
            name: "o".into(),
            snapc: Default::default(),
            snap: quarry_types::SNAP_HEAD,
            ops: Vec::new(),
            reqid: None,
        };
        let client = EntityName::client("a");
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(!tracker.alone(), "nothing in flight");
        std::thread::sleep(ALONE_AFTER);
        let first = tracker.start(&op, &client, peer);
        assert!(tracker.alone());
        drop(first);
        let first = tracker.start(&op, &client, peer);
        let second = tracker.start(&op, &client, peer);
        assert!(!tracker.alone(), "two in flight");
        drop(second);
        assert!(!tracker.alone(), "one left of a burst");
        std::thread::sleep(ALONE_AFTER);
        assert!(tracker.alone(), "alone again");
        drop(first);
        assert_eq!(tracker.dump_in_flight()["num_ops"], 0);
    }
}
