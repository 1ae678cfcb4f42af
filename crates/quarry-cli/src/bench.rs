//! `rados bench SECONDS write|seq|rand`: the object-level benchmark the project's benchmarks
//! use, with Ceph's report shape (a line per second, then `Total time run`, `Bandwidth
//! (MB/sec)`, `Average IOPS`, `Average Latency(s)` ...). `write` keeps a metadata object
//! (`benchmark_last_metadata`, or `--run-name`) describing what it wrote, so a later `seq` or
//! `rand` run reads those objects back; without `--no-cleanup` the objects are removed at the
//! end, as Ceph does.
//!
//! The run is bounded in time: ops stop being started at SECONDS, and what is in flight then
//! must finish, so `-t` is capped ([`concurrency_cap`]): at most [`INFLIGHT_OPS_MAX`] ops and
//! [`INFLIGHT_BYTES_MAX`] bytes in flight (`-t 100000` runs 64 ops of 4 MiB, with a note on
//! stderr), which keeps the tail after SECONDS to what 256 MiB take to write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;

use quarry_client::IoCtx;
use quarry_types::{ErrorCode, ObjectOp, OpOutput, Payload};

use crate::error::CliError;
use crate::output::g6;

/// The metadata object of the last run when `--run-name` is not given.
pub const DEFAULT_RUN_NAME: &str = "benchmark_last_metadata";
/// Objects removed concurrently during cleanup.
const CLEANUP_CONCURRENCY: usize = 16;

/// What to benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchMode {
    /// Write new objects.
    Write,
    /// Read the objects of the last write run in order.
    Seq,
    /// Read random objects of the last write run.
    Rand,
}

/// `rados bench` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// Run for this long.
    pub seconds: u64,
    /// Mode.
    pub mode: BenchMode,
    /// Bytes per op (= object size for writes).
    pub block_size: u64,
    /// Ops in flight.
    pub concurrency: usize,
    /// Remove the objects after a write run.
    pub cleanup: bool,
    /// Metadata object name.
    pub run_name: Option<String>,
}

/// What a write run left for later read runs (stored as `key=value` lines).
#[derive(Clone, Debug, PartialEq, Eq)]
struct RunMetadata {
    prefix: String,
    objects: u64,
    object_size: u64,
}

impl RunMetadata {
    fn encode(&self) -> String {
        format!(
            "prefix={}\nobjects={}\nobject_size={}\n",
            self.prefix, self.objects, self.object_size
        )
    }

    fn decode(text: &str) -> Option<RunMetadata> {
        let fields: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        Some(RunMetadata {
            prefix: fields.get("prefix")?.to_string(),
            objects: fields.get("objects")?.parse().ok()?,
            object_size: fields.get("object_size")?.parse().ok()?,
        })
    }

    fn object(&self, n: u64) -> String {
        format!("{}_object{n}", self.prefix)
    }
}

/// Counters shared by the workers and the once-a-second reporter.
#[derive(Default)]
struct Progress {
    started: AtomicU64,
    finished: AtomicU64,
    /// Latency of the last completed op, in nanoseconds.
    last_lat_ns: AtomicU64,
    /// Sum of latencies, in nanoseconds.
    total_lat_ns: AtomicU64,
    latencies: Mutex<Vec<f64>>,
}

impl Progress {
    fn record(&self, lat: Duration) {
        let ns = lat.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.finished.fetch_add(1, Ordering::Relaxed);
        self.last_lat_ns.store(ns, Ordering::Relaxed);
        self.total_lat_ns.fetch_add(ns, Ordering::Relaxed);
        self.latencies.lock().unwrap_or_else(|p| p.into_inner()).push(lat.as_secs_f64());
    }
}

fn mean_stddev(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    (mean, var.sqrt())
}

fn min_max(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        (0.0, 0.0)
    } else {
        (min, max)
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Most ops `rados bench` keeps in flight, whatever `-t` says.
pub const INFLIGHT_OPS_MAX: usize = 1024;
/// Most bytes of ops `rados bench` keeps in flight (`-t` times the block size).
pub const INFLIGHT_BYTES_MAX: u64 = 256 << 20;

/// The number of ops kept in flight for `-t requested` with ops of `block_size` bytes: the
/// request, cut to [`INFLIGHT_OPS_MAX`] and to [`INFLIGHT_BYTES_MAX`] bytes (at least 1).
pub fn concurrency_cap(requested: usize, block_size: u64) -> usize {
    let by_bytes = (INFLIGHT_BYTES_MAX / block_size.max(1)).max(1);
    requested.min(INFLIGHT_OPS_MAX).min(usize::try_from(by_bytes).unwrap_or(usize::MAX)).max(1)
}

/// `opts` with `-t` capped for ops of `op_size` bytes, with a note on stderr when it was.
fn capped(opts: &BenchOptions, op_size: u64) -> BenchOptions {
    let mut opts = opts.clone();
    let capped = concurrency_cap(opts.concurrency, op_size);
    if capped < opts.concurrency {
        eprintln!(
            "rados bench: -t {} would keep {} bytes in flight; using -t {capped} (at most {} ops and {} MiB in flight)",
            opts.concurrency,
            opts.concurrency as u128 * op_size as u128,
            INFLIGHT_OPS_MAX,
            INFLIGHT_BYTES_MAX >> 20
        );
        opts.concurrency = capped;
    }
    opts
}

/// Runs the benchmark.
pub async fn run(io: &IoCtx, opts: BenchOptions) -> Result<(), CliError> {
    let run_name = opts.run_name.clone().unwrap_or_else(|| DEFAULT_RUN_NAME.to_string());
    match opts.mode {
        BenchMode::Write => write(io, &opts, &run_name).await,
        BenchMode::Seq | BenchMode::Rand => read(io, &opts, &run_name).await,
    }
}

fn print_header() {
    crate::outln!("  sec Cur ops   started  finished  avg MB/s  cur MB/s last lat(s)  avg lat(s)");
}

/// Samples once a second until `done` is set; returns per-second (MB/s, IOPS).
async fn reporter(
    progress: Arc<Progress>,
    op_size: u64,
    start: Instant,
    done: Arc<tokio::sync::Notify>,
) -> Vec<(f64, f64)> {
    let mut history = Vec::new();
    let mut last_finished = 0u64;
    let mut second = 0u64;
    crate::outln!("{:>5}{:>8}{:>10}{:>10}{:>10}{:>10}{:>12}{:>12}", 0, 0, 0, 0, 0, 0, "-", 0);
    loop {
        second += 1;
        let tick = start + Duration::from_secs(second);
        tokio::select! {
            _ = tokio::time::sleep_until(tick.into()) => {}
            _ = done.notified() => return history,
        }
        let started = progress.started.load(Ordering::Relaxed);
        let finished = progress.finished.load(Ordering::Relaxed);
        let in_flight = started.saturating_sub(finished);
        let elapsed = start.elapsed().as_secs_f64();
        let cur_ops = finished - last_finished;
        last_finished = finished;
        let cur_mb = cur_ops as f64 * op_size as f64 / MIB;
        let avg_mb = finished as f64 * op_size as f64 / MIB / elapsed.max(1e-9);
        let last_lat = progress.last_lat_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let avg_lat = if finished == 0 {
            0.0
        } else {
            progress.total_lat_ns.load(Ordering::Relaxed) as f64 / 1e9 / finished as f64
        };
        history.push((cur_mb, cur_ops as f64));
        crate::outln!(
            "{:>5}{:>8}{:>10}{:>10}{:>10}{:>10}{:>12}{:>12}",
            second,
            in_flight,
            started,
            finished,
            g6(avg_mb),
            g6(cur_mb),
            g6(last_lat),
            g6(avg_lat)
        );
    }
}

/// What a run did, for its summary.
struct Totals {
    /// Seconds from the first op to the last completion.
    elapsed: f64,
    /// Ops completed.
    finished: u64,
    /// Object numbers taken from the run's counter.
    taken: u64,
    /// Per-second (MB/s, IOPS).
    history: Vec<(f64, f64)>,
    /// Latency of every op, in seconds.
    latencies: Vec<f64>,
}

/// Keeps `opts.concurrency` copies of `op` in flight on objects of `meta` until
/// `opts.seconds` have passed or `pick` has no object left, printing the header and a line a
/// second. `pick` chooses the next object number (it may count with the run's counter);
/// `check` judges each answer.
async fn drive<P>(
    io: &IoCtx,
    opts: &BenchOptions,
    meta: &RunMetadata,
    op: ObjectOp,
    pick: P,
    check: fn(&RunMetadata, &[OpOutput]) -> Result<(), quarry_client::ClientError>,
) -> Result<Totals, CliError>
where
    P: Fn(&AtomicU64) -> Option<u64> + Clone + Send + 'static,
{
    print_header();
    let progress = Arc::new(Progress::default());
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(opts.seconds);
    let done = Arc::new(tokio::sync::Notify::new());
    let report = tokio::spawn(reporter(progress.clone(), meta.object_size, start, done.clone()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency {
        let (io, progress, next, meta, op, pick) =
            (io.clone(), progress.clone(), next.clone(), meta.clone(), op.clone(), pick.clone());
        workers.spawn(async move {
            while Instant::now() < deadline {
                let Some(n) = pick(&next) else { break };
                progress.started.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                let out = io.exec(&meta.object(n), vec![op.clone()]).await?;
                check(&meta, &out)?;
                progress.record(t0.elapsed());
            }
            Ok::<(), quarry_client::ClientError>(())
        });
    }
    let mut failure = None;
    while let Some(joined) = workers.join_next().await {
        if let Ok(Err(e)) = joined {
            failure.get_or_insert(e);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    done.notify_one();
    let history = report.await.unwrap_or_default();
    if let Some(e) = failure {
        return Err(CliError::rados_op("error during benchmark", e.errno()));
    }
    let latencies = progress.latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Totals {
        elapsed,
        finished: progress.finished.load(Ordering::Relaxed),
        taken: next.load(Ordering::Relaxed),
        history,
        latencies,
    })
}

/// Prints Ceph's summary of a run. A write run's also has the spread of the bandwidth and of
/// the latency, and wider labels.
fn print_summary(mode: BenchMode, op_size: u64, run: &Totals) {
    let (made, size, width) = match mode {
        BenchMode::Write => ("Total writes made:", "Write size:", 24),
        BenchMode::Seq | BenchMode::Rand => ("Total reads made:", "Read size:", 22),
    };
    let spread = mode == BenchMode::Write;
    let bws: Vec<f64> = run.history.iter().map(|h| h.0).collect();
    let iops: Vec<f64> = run.history.iter().map(|h| h.1).collect();
    let (_, bw_sd) = mean_stddev(&bws);
    let (bw_min, bw_max) = min_max(&bws);
    let (_, iops_sd) = mean_stddev(&iops);
    let (iops_min, iops_max) = min_max(&iops);
    let (lat_avg, lat_sd) = mean_stddev(&run.latencies);
    let (lat_min, lat_max) = min_max(&run.latencies);
    let elapsed = run.elapsed.max(1e-9);
    let bandwidth = run.finished as f64 * op_size as f64 / MIB / elapsed;
    let rows = [
        (true, "Total time run:", g6(run.elapsed)),
        (true, made, run.finished.to_string()),
        (true, size, op_size.to_string()),
        (true, "Object size:", op_size.to_string()),
        (true, "Bandwidth (MB/sec):", g6(bandwidth)),
        (spread, "Stddev Bandwidth:", g6(bw_sd)),
        (spread, "Max bandwidth (MB/sec):", g6(bw_max)),
        (spread, "Min bandwidth (MB/sec):", g6(bw_min)),
        (true, "Average IOPS:", ((run.finished as f64 / elapsed) as u64).to_string()),
        (true, "Stddev IOPS:", g6(iops_sd)),
        (true, "Max IOPS:", (iops_max as u64).to_string()),
        (true, "Min IOPS:", (iops_min as u64).to_string()),
        (true, "Average Latency(s):", g6(lat_avg)),
        (spread, "Stddev Latency(s):", g6(lat_sd)),
        (true, "Max latency(s):", g6(lat_max)),
        (true, "Min latency(s):", g6(lat_min)),
    ];
    for (_, label, value) in rows.iter().filter(|row| row.0) {
        crate::outln!("{label:<width$}{value}");
    }
}

async fn write(io: &IoCtx, opts: &BenchOptions, run_name: &str) -> Result<(), CliError> {
    let opts = &capped(opts, opts.block_size);
    let prefix = format!("benchmark_data_{}_{}", quarry_conf::local_hostname(), std::process::id());
    let op_size = opts.block_size;
    crate::outln!("hints = 1");
    crate::outln!(
        "Maintaining {} concurrent writes of {op_size} bytes to objects of size {op_size} for up to {} seconds or 0 objects",
        opts.concurrency, opts.seconds
    );
    crate::outln!("Object prefix: {prefix}");
    let meta = RunMetadata { prefix: prefix.clone(), objects: 0, object_size: op_size };
    // Object contents: a recognisable pattern, the same buffer (and checksum) for every op.
    let mut pattern = vec![0u8; op_size as usize];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let op = ObjectOp::WriteFull { data: Payload::new(Bytes::from(pattern)) };
    let pick = |next: &AtomicU64| Some(next.fetch_add(1, Ordering::Relaxed));
    let run = drive(io, opts, &meta, op, pick, |_, _| Ok(())).await?;
    print_summary(BenchMode::Write, op_size, &run);
    // Objects 0..n were all written: a worker only takes the next number when it starts a
    // write, and every started write finished (or the run failed above).
    let written = run.taken.min(run.finished);
    let meta = RunMetadata { objects: written, ..meta };
    io.write_full(run_name, Bytes::from(meta.encode().into_bytes())).await.map_err(|e| {
        CliError::rados_op(format!("error writing {}/{run_name}", io.pool_name()), e.errno())
    })?;
    if opts.cleanup {
        remove_run(io, &meta, run_name).await?;
    }
    Ok(())
}

/// The metadata a write run left in `run_name` (None: no run, or not ours).
async fn load_metadata(io: &IoCtx, run_name: &str) -> Result<Option<RunMetadata>, CliError> {
    match io.exec(run_name, vec![ObjectOp::Read { off: 0, len: 0 }]).await {
        Ok(out) => Ok(match out.first() {
            Some(OpOutput::Data(p)) => RunMetadata::decode(&String::from_utf8_lossy(&p.data)),
            _ => None,
        }),
        Err(e) if e.errno() == ErrorCode::ENOENT => Ok(None),
        Err(e) => Err(CliError::rados_op(
            format!("error reading {}/{run_name}", io.pool_name()),
            e.errno(),
        )),
    }
}

async fn read(io: &IoCtx, opts: &BenchOptions, run_name: &str) -> Result<(), CliError> {
    let Some(meta) = load_metadata(io, run_name).await?.filter(|m| m.objects > 0) else {
        eprintln!("Must write data before running a read benchmark!");
        return Err(CliError::Reported { status: 1 });
    };
    let opts = &capped(opts, meta.object_size);
    let (random, objects) = (opts.mode == BenchMode::Rand, meta.objects);
    let pick = move |next: &AtomicU64| {
        if random {
            return Some(rand::thread_rng().gen_range(0..objects));
        }
        let n = next.fetch_add(1, Ordering::Relaxed);
        (n < objects).then_some(n)
    };
    crate::outln!("hints = 1");
    let op = ObjectOp::Read { off: 0, len: meta.object_size };
    let run = drive(io, opts, &meta, op, pick, |meta, out| {
        let got = match out.first() {
            Some(OpOutput::Data(p)) => p.data.len() as u64,
            _ => 0,
        };
        if got != meta.object_size {
            return Err(quarry_client::ClientError::Op { index: 0, code: ErrorCode::EIO });
        }
        Ok(())
    })
    .await?;
    print_summary(opts.mode, meta.object_size, &run);
    Ok(())
}

/// Removes the run's objects and its metadata object, printing Ceph's lines.
async fn remove_run(io: &IoCtx, meta: &RunMetadata, run_name: &str) -> Result<(), CliError> {
    crate::outln!("Cleaning up (deleting benchmark objects)");
    let t0 = Instant::now();
    let names: Vec<String> = (0..meta.objects).map(|n| meta.object(n)).collect();
    let removed = remove_all(io, names).await?;
    crate::outln!("Removed {removed} objects");
    match io.exec(run_name, vec![ObjectOp::Remove]).await {
        Ok(_) => {}
        Err(e) if e.errno() == ErrorCode::ENOENT => {}
        Err(e) => {
            return Err(CliError::rados_op(
                format!("error removing {}>{run_name}", io.pool_name()),
                e.errno(),
            ))
        }
    }
    crate::outln!("Clean up completed and total clean up time :{}", g6(t0.elapsed().as_secs_f64()));
    Ok(())
}

/// Removes `names` with a few removals in flight; absent objects are not an error.
async fn remove_all(io: &IoCtx, names: Vec<String>) -> Result<u64, CliError> {
    let queue = Arc::new(Mutex::new(names));
    let removed = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CLEANUP_CONCURRENCY {
        let (io, queue, removed) = (io.clone(), queue.clone(), removed.clone());
        workers.spawn(async move {
            loop {
                let Some(name) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                    return Ok(());
                };
                match io.exec(&name, vec![ObjectOp::Remove]).await {
                    Ok(_) => {
                        removed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.errno() == ErrorCode::ENOENT => {}
                    Err(e) => {
                        return Err(CliError::rados_op(format!("error removing {name}"), e.errno()))
                    }
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        if let Ok(Err(e)) = joined {
            return Err(e);
        }
    }
    Ok(removed.load(Ordering::Relaxed))
}

/// `rados cleanup`: removes the objects of the last run (or every object whose name starts
/// with `--prefix`).
pub async fn cleanup(io: &IoCtx, prefix: Option<String>, run_name: &str) -> Result<(), CliError> {
    if let Some(prefix) = prefix {
        let names = io
            .list_objects()
            .await
            .map_err(|e| CliError::rados_op("error listing objects", e.errno()))?;
        let names: Vec<String> = names.into_iter().filter(|n| n.starts_with(&prefix)).collect();
        let removed = remove_all(io, names).await?;
        crate::outln!("Removed {removed} objects");
        return Ok(());
    }
    match load_metadata(io, run_name).await? {
        Some(meta) => remove_run(io, &meta, run_name).await,
        None => {
            crate::outln!("Removed 0 objects");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips() {
        let m = RunMetadata { prefix: "benchmark_data_h_1".into(), objects: 12, object_size: 4096 };
        assert_eq!(RunMetadata::decode(&m.encode()), Some(m.clone()));
        assert_eq!(m.object(3), "benchmark_data_h_1_object3");
        assert_eq!(RunMetadata::decode("garbage"), None);
    }

    #[test]
    fn concurrency_is_capped_by_ops_and_bytes() {
        assert_eq!(concurrency_cap(16, 4 << 20), 16);
        assert_eq!(concurrency_cap(100_000, 4 << 20), 64, "256 MiB of 4 MiB ops");
        assert_eq!(concurrency_cap(100_000, 4096), INFLIGHT_OPS_MAX);
        assert_eq!(concurrency_cap(8, 1 << 30), 1, "always at least one");
    }

    #[test]
    fn statistics() {
        let (mean, sd) = mean_stddev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((mean - 5.0).abs() < 1e-12);
        assert!((sd - 2.138_089_935).abs() < 1e-6);
        assert_eq!(min_max(&[3.0, 1.0, 2.0]), (1.0, 3.0));
        assert_eq!(min_max(&[]), (0.0, 0.0));
    }
}
