//! Daemons and commands in child processes: the production binary (`quarry up`, `quarry mon`,
//! `quarry osd`, `ceph`, `rados`) run the way users run it, for end-to-end tests.
//!
//! [`run_bounded`] runs one command with a deadline; [`Daemon`] runs a long-lived one, keeps
//! its output, waits for its `ready` line, signals it (SIGTERM, SIGKILL: only the processes it
//! started), and kills it on drop. [`up`] starts `quarry up DIR --osds N` and waits for
//! `ready`. Every wait is bounded, so a hung child fails the test instead of hanging it.
//!
//! The WARN and ERROR lines a daemon writes to stderr go into the log guard's record
//! ([`crate::logs::record_line`], named after the daemon), so a test guarding with
//! [`crate::log_guard`] fails on a child's undeclared warnings as it does on its own.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use rustix::process::Signal;
use tracing::Level;

/// How long one CLI command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a cluster may take to print `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(150);

/// Result of one command.
pub struct Run {
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Run {
    /// stdout as text.
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The exit code (-1 if killed by a signal).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Panics with the command's output unless it exited 0.
    pub fn ok(self, what: &str) -> Run {
        assert!(
            self.status.success(),
            "{what} failed ({:?})\nstdout: {}\nstderr: {}",
            self.status,
            self.out(),
            self.stderr
        );
        self
    }
}

/// Runs `cmd` with `input` on stdin, killing it (and failing) after `timeout`.
pub fn run_bounded(mut cmd: Command, input: Option<&[u8]>, timeout: Duration) -> Run {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let desc = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // What it printed says where it waited (the client logs an op blocked for 10 s
            // with its PG and why).
            let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
            panic!("{desc} did not finish within {timeout:?}\nstderr: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    Run { status, stdout, stderr }
}

/// A long-running child (`quarry up`, `quarry mon`, `quarry osd`) whose stdout and stderr are
/// collected; killed on drop if still running.
pub struct Daemon {
    /// What the test calls it (`osd.1`, `quarry up`); names its log lines.
    pub name: String,
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    /// stdout lines so far.
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// stderr so far.
    pub stderr: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `cmd` (stdin closed, output collected; `RUST_LOG` defaults to
    /// `warn,quarry_cli=info` unless the test's environment or `cmd` sets it).
    pub fn spawn(name: &str, mut cmd: Command) -> Daemon {
        let set_by_cmd = cmd.get_envs().any(|(k, v)| k == "RUST_LOG" && v.is_some());
        if std::env::var_os("RUST_LOG").is_none() && !set_by_cmd {
            cmd.env("RUST_LOG", "warn,quarry_cli=info");
        }
        Daemon::spawn_own_logging(name, cmd)
    }

    /// [`Daemon::spawn`] without `RUST_LOG` (removed from its environment): the daemon logs
    /// as its configuration says (for tests of the logging options).
    pub fn spawn_without_rust_log(name: &str, mut cmd: Command) -> Daemon {
        cmd.env_remove("RUST_LOG");
        Daemon::spawn_own_logging(name, cmd)
    }

    fn spawn_own_logging(name: &str, mut cmd: Command) -> Daemon {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env_remove("CEPH_ARGS");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let keep = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let err = child.stderr.take().expect("stderr");
        let keep = stderr.clone();
        let source = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                record_stderr_line(&source, &line);
                let mut s = keep.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Daemon { name: name.to_string(), child: Some(child), lines, stdout, stderr }
    }

    /// Its process id (0 once reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Its output so far, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {} stdout:\n{}\n--- stderr:\n{}",
            self.name,
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    /// Waits for a stdout line equal to `ready`; panics with the logs on timeout or exit.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.trim() == "ready" => return,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) =
                        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
                    {
                        std::thread::sleep(Duration::from_millis(200));
                        panic!("{} exited ({status}) before ready\n{}", self.name, self.logs());
                    }
                    if Instant::now() > deadline {
                        panic!("{} not ready within {READY_TIMEOUT:?}\n{}", self.name, self.logs());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(10));
                    panic!(
                        "{} closed stdout ({status:?}) before ready\n{}",
                        self.name,
                        self.logs()
                    );
                }
            }
        }
    }

    /// Sends `sig` to this child only.
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid() as i32) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// Waits for the child to exit (bounded).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status (panics with the logs if it does not exit in time).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::TERM);
        match self.wait_exit(Duration::from_secs(60)) {
            Some(status) => status,
            None => panic!("{} did not exit after SIGTERM\n{}", self.name, self.logs()),
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `BIN up DIR --osds N` (`BIN`: the `quarry` binary under test), started and ready, with
/// the full-disk thresholds of tests on the host's disk ([`crate::host_disk_args`]).
pub fn up(bin: &Path, dir: &Path, osds: u32) -> Daemon {
    up_with_args(bin, dir, osds, &crate::host_disk_args())
}

/// `BIN up DIR --osds N ARGS...`, started and ready (tests of full disks pass no ratios: the
/// defaults are what they test).
pub fn up_with_args(bin: &Path, dir: &Path, osds: u32, args: &[String]) -> Daemon {
    let mut cmd = Command::new(bin);
    cmd.arg("up").arg(dir).arg("--osds").arg(osds.to_string()).args(args);
    let mut d = Daemon::spawn("quarry up", cmd);
    d.wait_ready();
    d
}

/// Records `line` in the log guard's record if it is a WARN or ERROR line of a daemon's log
/// (`TIMESTAMP LEVEL target: message`, colours stripped).
fn record_stderr_line(source: &str, line: &str) {
    let plain = strip_ansi(line);
    let mut words = plain.split_whitespace();
    let (Some(_time), Some(level)) = (words.next(), words.next()) else {
        return;
    };
    let level = match level {
        "WARN" => Level::WARN,
        "ERROR" => Level::ERROR,
        _ => return,
    };
    let rest = plain.split_once(level.as_str()).map_or("", |(_, r)| r).trim();
    crate::logs::record_line(level, source, rest);
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warn_lines_of_a_daemon_are_recognised_with_or_without_colours() {
        let from = crate::logs::lines_since(0).len();
        record_stderr_line("osd.1", "2026-01-01T00:00:00.000001Z  INFO quarry_osd: started");
        record_stderr_line(
            "osd.1",
            "\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m \u{1b}[2mquarry_osd::x\u{1b}[0m\u{1b}[2m:\u{1b}[0m slow disk",
        );
        record_stderr_line("mon.a", "2026-01-01T00:00:00Z ERROR quarry_mon: broken");
        let lines = crate::logs::lines_since(0);
        let new: Vec<&str> = lines[from..].iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            new,
            vec!["WARN [osd.1] quarry_osd::x: slow disk", "ERROR [mon.a] quarry_mon: broken"]
        );
    }
}
