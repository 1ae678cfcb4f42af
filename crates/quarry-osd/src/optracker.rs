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
//!
//! It also keeps the `osd` section of `perf dump` ([`OpTracker::perf_json`], Ceph's names and
//! shapes): ops, reads and writes counted when they finish, their latencies (from the moment
//! the OSD starts handling the op to its answer, Ceph's `op_latency`), bytes written by
//! clients and returned to them, and the ops in flight (`op_wip`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use std::net::SocketAddr;

use quarry_types::perf::TimeAvg;
use quarry_types::{EntityName, ObjectOp, OpOutput, OpReply};
use quarry_wire::OsdOp;

/// Finished ops kept for `dump_historic_ops`.
pub const HISTORY_SIZE: usize = 20;
/// How long a finished op stays in the history.
pub const HISTORY_DURATION: Duration = Duration::from_secs(600);
/// An op in flight this long is logged as a slow request, once (Ceph's
/// `osd_op_complaint_time`).
pub const OP_COMPLAINT_TIME: Duration = Duration::from_secs(30);
/// How often the ops in flight are checked for slow ones.
const COMPLAINT_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Logs every op in flight for longer than [`OP_COMPLAINT_TIME`] as a warning, once: an op
/// the OSD holds that long (waiting for its PG, its turn, the log) is what an operator
/// needs to see, with the op, its PG and its client. Runs until the task is aborted.
pub async fn run_complaints(tracker: Arc<OpTracker>) {
    let mut tick = tokio::time::interval(COMPLAINT_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for slow in tracker.newly_slow(Instant::now(), OP_COMPLAINT_TIME) {
            tracing::warn!("{slow}");
        }
    }
}

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
    /// The vector may write (counted as `op_w`, else `op_r`).
    writes: bool,
    /// Bytes of data the client sent (write payloads).
    in_bytes: u64,
    /// Already logged as a slow request ([`OpTracker::newly_slow`]).
    complained: bool,
}

/// The `osd` counters of `perf dump` (see the module docs).
#[derive(Default)]
struct Perf {
    op_latency: TimeAvg,
    op_r_latency: TimeAvg,
    op_w_latency: TimeAvg,
    op_in_bytes: AtomicU64,
    op_out_bytes: AtomicU64,
    /// Reads whose data went to the client while it was read (`op::stream`).
    op_r_streamed: AtomicU64,
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
    perf: Perf,
}

/// An op being handled: it leaves the in-flight list (for the history) when dropped.
pub struct InFlight {
    tracker: Arc<OpTracker>,
    id: u64,
    /// Bytes of data the answer returns ([`InFlight::answered`]).
    out_bytes: u64,
}

impl InFlight {
    /// Notes the answer's size for `perf dump` (the data of its reads).
    pub fn answered(&mut self, reply: &OpReply) {
        if let OpReply::Ok(outputs) = reply {
            self.out_bytes = outputs
                .iter()
                .map(|output| match output {
                    OpOutput::Data(payload) => payload.data.len() as u64,
                    _ => 0,
                })
                .sum();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(mut op) = lock(&self.tracker.in_flight).remove(&self.id) else { return };
        self.tracker.count.fetch_sub(1, Ordering::Relaxed);
        let now = Instant::now();
        let took = now.saturating_duration_since(op.started);
        let perf = &self.tracker.perf;
        perf.op_latency.record(took);
        match op.writes {
            true => perf.op_w_latency.record(took),
            false => perf.op_r_latency.record(took),
        }
        perf.op_in_bytes.fetch_add(op.in_bytes, Ordering::Relaxed);
        perf.op_out_bytes.fetch_add(self.out_bytes, Ordering::Relaxed);
        op.finished = Some((SystemTime::now(), now));
        let mut history = lock(&self.tracker.history);
        history.push_back(op);
        while history.len() > HISTORY_SIZE {
            history.pop_front();
        }
    }
}

/// A time average as `perf dump` prints it: `{"avgcount": N, "sum": s, "avgtime": s}`.
pub(crate) fn time_avg(counter: &TimeAvg) -> Value {
    let (count, sum_ns) = counter.get();
    time_avg_json(count, sum_ns)
}

/// [`time_avg`] of `count` events that took `sum_ns` in all (counters kept elsewhere, e.g.
/// the WAL's `WalStats`).
pub(crate) fn time_avg_json(count: u64, sum_ns: u64) -> Value {
    let (avgcount, sum, avgtime) = quarry_types::perf::ceph_time_avg(count, sum_ns);
    json!({ "avgcount": avgcount, "sum": sum, "avgtime": avgtime })
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
            writes: ObjectOp::vector_may_write(&op.ops),
            in_bytes: op.ops.iter().map(ObjectOp::data_bytes).sum(),
            complained: false,
        };
        lock(&self.in_flight).insert(id, tracked);
        if self.count.fetch_add(1, Ordering::Relaxed) > 0 {
            self.overlap_at.store(self.micros(), Ordering::Relaxed);
        }
        InFlight { tracker: self.clone(), id, out_bytes: 0 }
    }

    /// The `osd` section of `perf dump`: counters named and shaped as Ceph's (`op`,
    /// `op_latency` as `{"avgcount", "sum", "avgtime"}` in seconds, ...).
    pub fn perf_json(&self) -> Value {
        let perf = &self.perf;
        let (reads, _) = perf.op_r_latency.get();
        let (writes, _) = perf.op_w_latency.get();
        let (ops, _) = perf.op_latency.get();
        let in_bytes = perf.op_in_bytes.load(Ordering::Relaxed);
        let out_bytes = perf.op_out_bytes.load(Ordering::Relaxed);
        json!({
            "op_wip": self.count.load(Ordering::Relaxed),
            "op": ops,
            "op_in_bytes": in_bytes,
            "op_out_bytes": out_bytes,
            "op_latency": time_avg(&perf.op_latency),
            "op_r": reads,
            "op_r_out_bytes": out_bytes,
            "op_r_latency": time_avg(&perf.op_r_latency),
            "op_w": writes,
            "op_w_in_bytes": in_bytes,
            "op_w_latency": time_avg(&perf.op_w_latency),
            "op_r_streamed": perf.op_r_streamed.load(Ordering::Relaxed),
        })
    }

    /// Counts a read whose `bytes` went ahead of its answer (`op::stream`): its answer
    /// carries no data for [`InFlight::answered`] to count.
    pub fn streamed(&self, bytes: usize) {
        self.perf.op_r_streamed.fetch_add(1, Ordering::Relaxed);
        self.perf.op_out_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
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

    /// The ops in flight for longer than `after` at `now` that were not reported yet, each once, as
    /// Ceph's OSD logs them: `slow request 31.2 seconds old, received at TIME: osd_op(...)
    /// currently started`.
    pub fn newly_slow(&self, now: Instant, after: Duration) -> Vec<String> {
        let mut slow = Vec::new();
        for op in lock(&self.in_flight).values_mut() {
            let age = now.saturating_duration_since(op.started);
            if age >= after && !op.complained {
                op.complained = true;
                slow.push(format!(
                    "slow request {:.3} seconds old, received at {}: {} currently started",
                    age.as_secs_f64(),
                    utime(op.initiated),
                    op.description()
                ));
            }
        }
        slow
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
            perf: Perf::default(),
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

    /// An op vector on object `name` of PG 1.0 at epoch 1, without a request id.
    fn osd_op(name: &str, ops: Vec<ObjectOp>) -> OsdOp {
        OsdOp {
            pg: quarry_types::PgId { pool: 1, seed: 0 },
            epoch: 1,
            name: name.into(),
            snapc: Default::default(),
            snap: quarry_types::SNAP_HEAD,
            ops,
            reqid: None,
        }
    }

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
        let op = osd_op("o", Vec::new());
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

    /// Goal: an op in flight past the complaint time is reported once, with Ceph's
    /// description; a finished one or a younger one is not.
    #[test]
    fn slow_requests_are_reported_once() {
        let tracker = Arc::new(OpTracker::default());
        let data = quarry_types::Payload::new(vec![0u8; 4096]);
        let mut op = osd_op("obj", vec![ObjectOp::Write { off: 0, data }]);
        (op.pg.seed, op.epoch) = (3, 12);
        op.reqid = Some(quarry_types::ReqId { client: 1, tid: 7 });
        let client = EntityName::client("admin");
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let held = tracker.start(&op, &client, peer);
        op.name = "done".into();
        drop(tracker.start(&op, &client, peer));
        std::thread::sleep(Duration::from_millis(20));
        // The clock is read before the young op starts: it is not 20 ms old then, however
        // slowly this thread runs.
        let now = Instant::now();
        op.name = "young".into();
        let _young = tracker.start(&op, &client, peer);
        let slow = tracker.newly_slow(now, Duration::from_millis(20));
        assert_eq!(slow.len(), 1, "{slow:?}");
        assert!(slow[0].starts_with("slow request 0."), "{}", slow[0]);
        assert!(
            slow[0].ends_with(
                ": osd_op(client.admin.0:7 1.3 obj [write 0~4096] e12) currently started"
            ),
            "{}",
            slow[0]
        );
        let later = Instant::now();
        assert!(tracker.newly_slow(later, Duration::ZERO).iter().all(|s| s.contains(" young ")));
        assert!(tracker.newly_slow(later, Duration::ZERO).is_empty(), "each reported once");
        drop(held);
    }
}
