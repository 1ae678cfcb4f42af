//! The log guard: tests fail on WARN/ERROR events they did not declare.
//!
//! [`install`] sets the process's global `tracing` subscriber once: a formatting layer that
//! prints to the test's output (filter from `RUST_LOG`, default `warn`) and a capture layer
//! that records every WARN and ERROR event, whatever `RUST_LOG` says, with its level, target,
//! message and fields. A [`LogGuard`] ([`log_guard`], or the one every
//! [`crate::Cluster`] carries) looks at the events recorded from its creation to its check:
//! each must match a pattern declared with [`LogGuard::expect`] (must appear at least once) or
//! [`LogGuard::allow`] (may appear), or the check panics and lists the undeclared lines. The
//! check runs in [`LogGuard::finish`], in [`crate::Cluster::shutdown`], or when the guard is
//! dropped (not while the test is already panicking: the first failure is the one to read).
//!
//! Events are recorded process-wide (daemon tasks, Raft tasks and the WAL writer threads all
//! log from threads that are not the test's), so two tests guarding at once in one process
//! could not tell whose event is whose. Guards therefore take turns: a guard holds a
//! process-wide turn from its creation until it is checked or dropped, and a guard made on
//! another thread meanwhile waits for it (guards made on the thread that holds the turn share
//! it). Under `cargo nextest` (what `scripts/test.sh` runs; detected by
//! `NEXTEST_EXECUTION_MODE=process-per-test`) each test has its own process and guards take no
//! turns; under plain `cargo test` the guarded tests of one binary run one at a time, and a
//! guard (or cluster) must be made on the test's own thread, not in a spawned task, or it
//! waits for the test's other guard.
//!
//! Daemons in child processes ([`crate::process::Daemon`]) feed the WARN/ERROR lines of their
//! stderr into the same record ([`record_line`]), named after the daemon.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread::ThreadId;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer;

/// One recorded WARN or ERROR event.
#[derive(Clone, Debug)]
pub struct LogLine {
    /// Position in the process's sequence of recorded events.
    pub seq: u64,
    /// WARN or ERROR.
    pub level: Level,
    /// `LEVEL target: message field=value ...`, what patterns are matched against.
    pub text: String,
}

struct Recorded {
    next: u64,
    lines: Vec<LogLine>,
}

fn recorded() -> &'static Mutex<Recorded> {
    static RECORDED: OnceLock<Mutex<Recorded>> = OnceLock::new();
    RECORDED.get_or_init(|| Mutex::new(Recorded { next: 0, lines: Vec::new() }))
}

fn lock() -> std::sync::MutexGuard<'static, Recorded> {
    recorded().lock().unwrap_or_else(|e| e.into_inner())
}

/// Collects an event's message and fields as text.
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// The layer that records WARN/ERROR events.
struct Capture;

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut text = Text(format!("{} {}:", meta.level(), meta.target()));
        event.record(&mut text);
        let mut rec = lock();
        let seq = rec.next;
        rec.next += 1;
        rec.lines.push(LogLine { seq, level: *meta.level(), text: text.0 });
    }
}

/// Installs the kit's global subscriber (once per process; later calls do nothing). Panics if
/// another global subscriber was installed first: the guard would then see nothing.
pub fn install() {
    static ONCE: OnceLock<bool> = OnceLock::new();
    let ours = *ONCE.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
        let print = tracing_subscriber::fmt::layer().with_test_writer().with_filter(filter);
        let capture = Capture.with_filter(LevelFilter::WARN);
        tracing_subscriber::registry().with(print).with(capture).try_init().is_ok()
    });
    assert!(
        ours,
        "another global tracing subscriber was installed before quarry-testkit's: \
         the log guard would see nothing (remove the other `try_init`)"
    );
}

/// Whose turn it is to guard: the thread and how many of its guards are live.
struct Turn {
    holder: Option<(ThreadId, usize)>,
}

fn turn() -> &'static (Mutex<Turn>, Condvar) {
    static TURN: OnceLock<(Mutex<Turn>, Condvar)> = OnceLock::new();
    TURN.get_or_init(|| (Mutex::new(Turn { holder: None }), Condvar::new()))
}

/// Whether this process runs one test only (nextest's process-per-test mode): then every
/// recorded line is that test's and guards need not take turns.
fn one_test_per_process() -> bool {
    static ONE: OnceLock<bool> = OnceLock::new();
    *ONE.get_or_init(|| {
        std::env::var("NEXTEST_EXECUTION_MODE").is_ok_and(|m| m == "process-per-test")
    })
}

/// Waits for the turn (or joins it if this thread holds it).
fn take_turn() {
    if one_test_per_process() {
        return;
    }
    let me = std::thread::current().id();
    let (lock, cv) = turn();
    let mut t = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match &mut t.holder {
            None => {
                t.holder = Some((me, 1));
                return;
            }
            Some((who, n)) if *who == me => {
                *n += 1;
                return;
            }
            Some(_) => t = cv.wait(t).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// Gives one guard's share of the turn back.
fn give_turn() {
    if one_test_per_process() {
        return;
    }
    let (lock, cv) = turn();
    let mut t = lock.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, n)) = &mut t.holder {
        *n -= 1;
        if *n == 0 {
            t.holder = None;
            cv.notify_all();
        }
    }
}

/// Records a WARN or ERROR line that did not come through this process's subscriber (a child
/// daemon's stderr): `source` names where it came from.
pub fn record_line(level: Level, source: &str, line: &str) {
    if level > Level::WARN {
        return;
    }
    let mut rec = lock();
    let seq = rec.next;
    rec.next += 1;
    rec.lines.push(LogLine { seq, level, text: format!("{level} [{source}] {line}") });
}

/// The sequence number the next recorded event will get.
fn next_seq() -> u64 {
    lock().next
}

/// Recorded WARN/ERROR events from sequence number `from` on.
pub fn lines_since(from: u64) -> Vec<LogLine> {
    lock().lines.iter().filter(|l| l.seq >= from).cloned().collect()
}

/// A declared pattern.
#[derive(Debug)]
struct Rule {
    pattern: String,
    required: bool,
}

/// Checks that every WARN/ERROR event since its creation was declared (see the module doc).
#[derive(Debug)]
pub struct LogGuard {
    from: u64,
    rules: Mutex<Vec<Rule>>,
    checked: AtomicBool,
    /// Whether this guard still holds its share of the turn.
    turn: AtomicBool,
}

/// Allowed in every test: an OSD's warning about an op in flight for 30 s (diagnosis for
/// operators; on a loaded machine any test that stops, cuts or holds an OSD may keep an op
/// that long, and tests judge what the op returns, not how long it waited).
const SLOW_REQUEST: &str = "quarry_osd::optracker: slow request ";

/// A guard over the WARN/ERROR events from now on (installs the subscriber if needed).
pub fn log_guard() -> LogGuard {
    install();
    take_turn();
    LogGuard {
        from: next_seq(),
        rules: Mutex::new(vec![Rule { pattern: SLOW_REQUEST.to_string(), required: false }]),
        checked: AtomicBool::new(false),
        turn: AtomicBool::new(true),
    }
}

impl LogGuard {
    fn add(&self, pattern: &str, required: bool) -> &LogGuard {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        rules.push(Rule { pattern: pattern.to_string(), required });
        self
    }

    /// Declares WARN/ERROR lines containing `pattern`, and requires at least one of them.
    pub fn expect(&self, pattern: &str) -> &LogGuard {
        self.add(pattern, true)
    }

    /// Declares WARN/ERROR lines containing `pattern`; none need appear (for events that
    /// depend on timing, such as a peer noticing a killed daemon).
    pub fn allow(&self, pattern: &str) -> &LogGuard {
        self.add(pattern, false)
    }

    /// Declares openraft's chatter when PG peers start, stop or restart: vote replies that
    /// arrive after the vote moved on, vote/append/heartbeat requests to a peer with no address
    /// yet or that does not answer (`PeerError: osd.N: ...`, timeouts), and the replication
    /// back-off that follows. Only for tests that start OSDs together or stop one; nothing
    /// of the OSD's own code is covered by these patterns.
    pub fn allow_raft_churn(&self) -> &LogGuard {
        self.allow("openraft::core::raft_core: A message will be ignored because vote changed")
            .allow("quarry_osd::pg::network::PeerError: no address known for osd.")
            .allow("quarry_osd::pg::network::PeerError: osd.")
            .allow("backoff_drain_events backoff mode")
            .allow("openraft::replication: error replication to target=")
            .allow("openraft::replication: RPCError err=timeout after")
            .allow("openraft::engine::handler::replication_handler: update progress error")
            .allow("openraft::engine::handler::replication_handler: heartbeat error: ")
    }

    /// The WARN/ERROR lines recorded since the guard was made.
    pub fn lines(&self) -> Vec<LogLine> {
        lines_since(self.from)
    }

    /// What is wrong: undeclared lines, and expected patterns never seen.
    pub fn problems(&self) -> Option<String> {
        let lines = self.lines();
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let undeclared: Vec<&LogLine> =
            lines.iter().filter(|l| !rules.iter().any(|r| l.text.contains(&r.pattern))).collect();
        let missing: Vec<&Rule> = rules
            .iter()
            .filter(|r| r.required && !lines.iter().any(|l| l.text.contains(&r.pattern)))
            .collect();
        if undeclared.is_empty() && missing.is_empty() {
            return None;
        }
        let mut msg = String::new();
        if !undeclared.is_empty() {
            let _ = writeln!(
                msg,
                "{} undeclared WARN/ERROR log line(s) (declare them with .expect/.allow):",
                undeclared.len()
            );
            for l in &undeclared {
                let _ = writeln!(msg, "  {}", l.text);
            }
        }
        for r in &missing {
            let _ = writeln!(
                msg,
                "expected a WARN/ERROR line containing {:?}; none appeared",
                r.pattern
            );
        }
        Some(msg)
    }

    /// Checks now (and not again on drop); panics listing the problems.
    pub fn finish(self) {
        self.check();
    }

    pub(crate) fn check(&self) {
        if self.checked.swap(true, Ordering::SeqCst) {
            return;
        }
        let problems = self.problems();
        self.release();
        if let Some(problems) = problems {
            panic!("log guard: {problems}");
        }
    }

    fn release(&self) {
        if self.turn.swap(false, Ordering::SeqCst) {
            give_turn();
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.check();
        }
        self.release();
    }
}
