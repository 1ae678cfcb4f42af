//! Helpers for the CLI tests: run the built `quarry` binary (under the names `ceph`, `rados`
//! through argv[0]), start `quarry up` or separate daemons in temporary directories on free
//! loopback ports, wait for their `ready` line, and stop only the processes started here.
//! Every wait is bounded, so a hung command fails the test instead of hanging it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn quarry() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_quarry"))
}

/// How long one CLI command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a cluster may take to print `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(150);

/// Result of one command.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

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
            panic!("{desc} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    Run { status, stdout, stderr }
}

/// `quarry` invoked as `tool` (argv[0]), with `conf` as CEPH_CONF and no CEPH_ARGS.
pub fn tool_cmd(tool: &str, conf: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(quarry());
    cmd.arg0(tool).args(args).env_remove("CEPH_ARGS").env_remove("RUST_LOG");
    match conf {
        Some(c) => cmd.env("CEPH_CONF", c),
        None => cmd.env_remove("CEPH_CONF"),
    };
    cmd
}

/// A long-running child (`quarry up`, `quarry mon`, `quarry osd`) whose stdout and stderr are
/// collected; killed on drop if still running.
pub struct Daemon {
    pub name: String,
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn spawn(name: &str, mut cmd: Command) -> Daemon {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env_remove("CEPH_ARGS");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn,quarry_cli=info");
        }
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
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = keep.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Daemon { name: name.to_string(), child: Some(child), lines, stdout, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

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
    pub fn signal(&self, sig: rustix::process::Signal) {
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
        self.signal(rustix::process::Signal::TERM);
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

/// `quarry up DIR --osds N`, started and ready.
pub fn up(dir: &Path, osds: u32) -> Daemon {
    let mut cmd = Command::new(quarry());
    cmd.arg("up").arg(dir).arg("--osds").arg(osds.to_string());
    let mut d = Daemon::spawn("quarry up", cmd);
    d.wait_ready();
    d
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
