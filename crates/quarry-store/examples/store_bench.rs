//! Store throughput benchmark (not a test): 4 MiB object writes, 4 KiB random writes (one
//! command per apply, as one Raft entry per apply, and 32 per apply, as a batched apply),
//! 4 KiB and 4 MiB reads, and the cost of a checkpoint. Prints ops/s and MB/s, plus the
//! database file size against the logical bytes stored.
//!
//! Run: `cargo run --release -p quarry-store --example store_bench [-- DIR [OBJECTS]]`.
//! Without DIR it uses a temporary directory (on the same disk as /tmp).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quarry_store::{ObjectCommand, Store};
use quarry_types::{ObjectOp, OpReply, Payload, PgId, SnapContext, SNAP_HEAD};
use rand::{Rng, SeedableRng};

const PG: PgId = PgId { pool: 1, seed: 0 };
const OBJECT_BYTES: usize = 4 << 20;
/// Applies between checkpoints, as an OSD would checkpoint periodically.
const CHECKPOINT_EVERY: usize = 256;

fn name(i: usize) -> String {
    format!("rbd_data.1234abcd.{i:016x}")
}

fn command(object: usize, op: ObjectOp) -> ObjectCommand {
    ObjectCommand {
        name: name(object),
        snapc: SnapContext::default(),
        ops: vec![op],
        mtime: (1, 0),
        reqid: None,
    }
}

/// CPU time (user, system) this process used so far, from /proc/self/stat (Linux; clock
/// ticks of 10 ms). Zero where unavailable.
fn cpu_time() -> (Duration, Duration) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (Duration::ZERO, Duration::ZERO);
    };
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (Duration::from_millis(ticks(11) * 10), Duration::from_millis(ticks(12) * 10))
}

thread_local! {
    static CPU_MARK: std::cell::Cell<(Duration, Duration)> =
        const { std::cell::Cell::new((Duration::ZERO, Duration::ZERO)) };
}

fn report(what: &str, ops: usize, bytes: usize, took: Duration) {
    let secs = took.as_secs_f64();
    let now = cpu_time();
    let (user0, sys0) = CPU_MARK.with(|m| m.replace(now));
    let per_op = |d: Duration| d.as_secs_f64() * 1e6 / ops.max(1) as f64;
    let (user, sys) = (now.0.saturating_sub(user0), now.1.saturating_sub(sys0));
    println!(
        "{what:<36} {ops:>6} ops in {secs:>6.3} s: {:>7.0} ops/s {:>7.1} MB/s, CPU/op {:>7.1} us \
         (user {:>7.1}, sys {:>7.1})",
        ops as f64 / secs,
        bytes as f64 / secs / 1e6,
        per_op(user + sys),
        per_op(user),
        per_op(sys)
    );
}

fn check(replies: &[OpReply]) {
    for r in replies {
        assert!(matches!(r, OpReply::Ok(_)), "bench op failed: {r:?}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _temp;
    let dir: PathBuf = match args.first() {
        Some(d) => PathBuf::from(d),
        None => {
            _temp = tempfile::tempdir().expect("tempdir");
            _temp.path().to_path_buf()
        }
    };
    let objects: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    std::fs::create_dir_all(&dir).expect("create bench dir");
    let store = Store::open(&dir).expect("open store");
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let big: Vec<u8> = (0..OBJECT_BYTES).map(|_| rng.gen()).collect();
    let big = Payload::new(Bytes::from(big));
    let smalls: Vec<Payload> = (0..64)
        .map(|_| Payload::new(Bytes::from((0..4096).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>())))
        .collect();
    let mut log_index = 0u64;
    let mut applies = 0usize;
    let mut checkpoint_time = Duration::ZERO;
    let mut checkpoints = 0usize;
    let mut apply = |cmds: &[ObjectCommand], store: &Store| {
        log_index += 1;
        check(&store.apply(PG, cmds, &log_index.to_le_bytes()).expect("apply"));
        applies += 1;
        if applies % CHECKPOINT_EVERY == 0 {
            let t = Instant::now();
            store.checkpoint().expect("checkpoint");
            checkpoint_time += t.elapsed();
            checkpoints += 1;
        }
    };

    println!("store bench: {objects} objects of 4 MiB in {}", dir.display());
    CPU_MARK.with(|m| m.set(cpu_time()));
    let t = Instant::now();
    for _ in 0..5000 {
        apply(&[], &store);
    }
    report("apply with no command (pg_state)", 5000, 0, t.elapsed());

    let t = Instant::now();
    for i in 0..objects {
        apply(&[command(i, ObjectOp::WriteFull { data: big.clone() })], &store);
    }
    store.checkpoint().expect("checkpoint");
    report("write 4 MiB (1/apply, +fsync)", objects, objects * OBJECT_BYTES, t.elapsed());

    let t = Instant::now();
    for i in 0..objects {
        apply(&[command(i, ObjectOp::Write { off: 0, data: big.clone() })], &store);
    }
    report("overwrite 4 MiB (1/apply)", objects, objects * OBJECT_BYTES, t.elapsed());

    let n = 20_000;
    let t = Instant::now();
    for k in 0..n {
        let off = rng.gen_range(0..1024u64) * 4096;
        let op = ObjectOp::Write { off, data: smalls[k % smalls.len()].clone() };
        apply(&[command(rng.gen_range(0..objects), op)], &store);
    }
    report("write 4 KiB random (1/apply)", n, n * 4096, t.elapsed());

    let batch = 32;
    let t = Instant::now();
    for k in 0..n / batch {
        let cmds: Vec<ObjectCommand> = (0..batch)
            .map(|j| {
                let off = rng.gen_range(0..1024u64) * 4096;
                let data = smalls[(k + j) % smalls.len()].clone();
                command(rng.gen_range(0..objects), ObjectOp::Write { off, data })
            })
            .collect();
        apply(&cmds, &store);
    }
    report(
        "write 4 KiB random (32/apply)",
        n / batch * batch,
        n / batch * batch * 4096,
        t.elapsed(),
    );

    let t = Instant::now();
    for _ in 0..n {
        let c = command(
            rng.gen_range(0..objects),
            ObjectOp::Write { off: rng.gen_range(0..4096 * 1024 - 512), data: smalls[0].clone() },
        );
        apply(&[c], &store);
    }
    report("write 4 KiB unaligned (1/apply, RMW)", n, n * 4096, t.elapsed());
    store.checkpoint().expect("checkpoint");
    CPU_MARK.with(|m| m.set(cpu_time()));

    let t = Instant::now();
    for _ in 0..n {
        let off = rng.gen_range(0..1024u64) * 4096;
        let r = store
            .read(
                PG,
                &name(rng.gen_range(0..objects)),
                SNAP_HEAD,
                &[ObjectOp::Read { off, len: 4096 }],
            )
            .expect("read");
        check(&[r]);
    }
    report("read 4 KiB random", n, n * 4096, t.elapsed());

    let t = Instant::now();
    for i in 0..objects {
        let r = store
            .read(PG, &name(i), SNAP_HEAD, &[ObjectOp::Read { off: 0, len: 0 }])
            .expect("read");
        check(&[r]);
    }
    report("read 4 MiB", objects, objects * OBJECT_BYTES, t.elapsed());

    let t = Instant::now();
    for _ in 0..20 {
        store.checkpoint().expect("checkpoint");
    }
    println!(
        "checkpoint: {:.2} ms each idle, {:.2} ms each under load ({checkpoints} during the run)",
        t.elapsed().as_secs_f64() * 1000.0 / 20.0,
        checkpoint_time.as_secs_f64() * 1000.0 / checkpoints.max(1) as f64
    );
    let data = store.data_space().expect("data space");
    let data_on_disk = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(store.data_path()).map_or(0, |m| m.blocks() * 512)
    };
    let space = store.space().expect("space");
    let logical = (objects * OBJECT_BYTES) as u64;
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "space: {:.1} MiB of object data; redb allocated {:.1} MiB, stored {:.1} MiB, file {:.1} \
         MiB; data file {:.1} MiB long, {:.1} MiB on disk ({:.1} MiB free, {:.1} MiB pending); \
         redb allocated + data on disk = {:.3}x the object data",
        mib(logical),
        mib(space.allocated_bytes),
        mib(space.stored_bytes),
        mib(space.file_bytes),
        mib(data.file_bytes),
        mib(data_on_disk),
        mib(data.free_bytes),
        mib(data.pending_bytes),
        (space.allocated_bytes + data_on_disk) as f64 / logical as f64
    );
}
