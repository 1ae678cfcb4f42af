//! A cluster of one `quarry mon` and several `quarry osd` processes on loopback for the
//! tests that move PGs (rebalance, split): start it, run the tools against it, poll a
//! condition with the OSDs' output tails in the failure, read `ceph pg ls`, stop it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::COMMAND_TIMEOUT;
use super::{cluster_init, run_bounded, spawn_mon, spawn_osd, tool_cmd, Daemon, Run};

/// What [`Cluster::start`] builds: `osds` OSDs, pool `rbd` of `size` replicas and `pg_num`
/// PGs, `extra` appended to ceph.conf (OSDs are marked down 5 s after their last beacon).
pub struct Spec<'a> {
    pub osds: u32,
    pub size: u32,
    pub pg_num: u32,
    pub extra: &'a str,
}

/// One row of `ceph pg ls -f json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgRow {
    pub pgid: String,
    pub state: String,
    pub up: Vec<u64>,
    pub acting: Vec<u64>,
}

/// A cluster of one monitor and `osds` OSDs as separate processes; `osds[i]` is `None` once
/// the test stopped OSD i for good.
pub struct Cluster {
    pub conf: PathBuf,
    pub mon: Daemon,
    pub osds: Vec<Option<Daemon>>,
}

impl Cluster {
    /// `cluster-init`, the conf's extra lines, the monitor and every OSD; returns once every
    /// OSD is up.
    pub fn start(tmp: &Path, spec: Spec) -> Cluster {
        let dir = tmp.join("c");
        cluster_init(&dir, spec.osds);
        let conf = dir.join("ceph.conf");
        // The host disk's fill level is not what these tests test (quarry-testkit's
        // host_disk_conf); `extra` comes after it and may set other ratios.
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&quarry_testkit::host_disk_conf());
        text.push_str(spec.extra);
        std::fs::write(&conf, &text).unwrap();
        let ids: Vec<String> = (0..spec.osds).map(|i| i.to_string()).collect();
        let (ids, size, pg_num) = (ids.join(","), spec.size.to_string(), spec.pg_num.to_string());
        let conf_arg = conf.to_str().unwrap();
        let mon = spawn_mon(
            &dir,
            &[
                "-c",
                conf_arg,
                "--osds",
                &ids,
                "--pool",
                "rbd",
                "--size",
                &size,
                "--pg-num",
                &pg_num,
                "--osd-grace",
                "5",
            ],
        );
        let osds = (0..spec.osds).map(|id| Some(spawn_osd(&dir, id))).collect();
        let cluster = Cluster { conf, mon, osds };
        cluster.wait(Duration::from_secs(60), "every osd up", |c| {
            let s = c.ceph(&["-s"]).out();
            s.contains(&format!(": {} up", c.osds.len())).then_some(()).ok_or(s)
        });
        cluster
    }

    pub fn ceph(&self, args: &[&str]) -> Run {
        run_bounded(tool_cmd("ceph", Some(&self.conf), args), None, COMMAND_TIMEOUT)
    }

    pub fn rados(&self, args: &[&str]) -> Run {
        run_bounded(tool_cmd("rados", Some(&self.conf), args), None, COMMAND_TIMEOUT)
    }

    /// Polls `check` every 0.5 s until it gives a value or `limit` passes; then fails with
    /// its last reason and the tail of every running OSD's output.
    pub fn wait<T>(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&Cluster) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            match check(self) {
                Ok(v) => return v,
                Err(why) if Instant::now() >= deadline => {
                    panic!("{what}: not within {limit:?}:\n{why}\n{}", self.tails())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// The tail of every running OSD's output.
    pub fn tails(&self) -> String {
        self.osds.iter().flatten().map(tail).collect::<Vec<_>>().join("\n")
    }

    /// `ceph pg ls -f json`, one row per PG.
    pub fn pgs(&self) -> Vec<PgRow> {
        let out = self.ceph(&["pg", "ls", "-f", "json"]).ok("pg ls").out();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let ids = |x: &serde_json::Value| -> Vec<u64> {
            x.as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).collect()
        };
        v["pg_stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| PgRow {
                pgid: p["pgid"].as_str().unwrap().to_string(),
                state: p["state"].as_str().unwrap().to_string(),
                up: ids(&p["up"]),
                acting: ids(&p["acting"]),
            })
            .collect()
    }

    /// `ceph osd pool get rbd VAR`, trimmed.
    pub fn pool_get(&self, var: &str) -> String {
        self.ceph(&["osd", "pool", "get", "rbd", var]).ok("pool get").out().trim().to_string()
    }

    /// Every daemon's last 60 lines of output, on stderr, with `QUARRY_KEEP_TEST_DIR` set.
    pub fn dump(&self) {
        if std::env::var_os("QUARRY_KEEP_TEST_DIR").is_some() {
            for d in self.osds.iter().flatten().chain([&self.mon]) {
                let logs = d.logs();
                let tail: Vec<&str> = logs.lines().rev().take(60).collect();
                eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
        }
    }

    /// Stops every running daemon (SIGTERM, bounded).
    pub fn shutdown(mut self) {
        for osd in self.osds.iter_mut().flatten() {
            osd.terminate();
        }
        self.mon.terminate();
    }
}

/// The last ~3000 bytes of a daemon's output.
fn tail(d: &Daemon) -> String {
    let logs = d.logs();
    let from = logs.len().saturating_sub(3000);
    let from = (from..logs.len()).find(|&i| logs.is_char_boundary(i));
    logs[from.unwrap_or(0)..].to_string()
}

/// The test's directory: removed at the end, kept with `QUARRY_KEEP_TEST_DIR=1` (the
/// daemons' logs are under `c/*/log`).
pub struct TestDir {
    _guard: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    pub fn create() -> TestDir {
        let dir = tempfile::tempdir().unwrap();
        if std::env::var_os("QUARRY_KEEP_TEST_DIR").is_some() {
            let path = dir.keep();
            eprintln!("test directory kept: {}", path.display());
            return TestDir { _guard: None, path };
        }
        TestDir { path: dir.path().to_path_buf(), _guard: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes `name` with `data` into pool `rbd` through `rados put`.
pub fn put(c: &Cluster, tmp: &Path, name: &str, data: &[u8]) {
    let file = tmp.join(format!("in-{name}"));
    std::fs::write(&file, data).unwrap();
    c.rados(&["-p", "rbd", "put", name, file.to_str().unwrap()]).ok(&format!("put {name}"));
}

/// Reads `name` back from pool `rbd` through `rados get` (at pool snapshot `snap` if given);
/// the daemons' output is dumped when it fails (see [`Cluster::dump`]).
pub fn get(c: &Cluster, tmp: &Path, name: &str, snap: Option<&str>) -> Vec<u8> {
    let file = tmp.join(format!("out-{name}"));
    let mut args = vec!["-p", "rbd"];
    if let Some(snap) = snap {
        args.extend(["-s", snap]);
    }
    args.extend(["get", name, file.to_str().unwrap()]);
    let run = c.rados(&args);
    if !run.status.success() {
        c.dump();
    }
    run.ok(&format!("get {name}"));
    std::fs::read(&file).unwrap()
}
