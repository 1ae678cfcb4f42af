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
//! log from threads that are not the test's), so a guard sees the events of every test running
//! in the process. `cargo nextest` runs each test in its own process (what `scripts/test.sh`
//! uses); under plain `cargo test` run cluster tests with `--test-threads=1`, or another
//! test's warnings are reported too.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

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
}

/// A guard over the WARN/ERROR events from now on (installs the subscriber if needed).
pub fn log_guard() -> LogGuard {
    install();
    LogGuard { from: next_seq(), rules: Mutex::new(Vec::new()), checked: AtomicBool::new(false) }
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
        if let Some(problems) = self.problems() {
            panic!("log guard: {problems}");
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.check();
        }
    }
}
