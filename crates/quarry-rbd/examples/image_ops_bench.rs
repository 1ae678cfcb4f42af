//! Image metadata operations timed at the library call (what `rbd snap create`, `rbd clone`
//! spend after connecting), and 4 KiB write IOPS while snapshots exist and while they are
//! removed. Run by `scripts/bench-rbd.sh` against a running cluster (`CEPH_CONF`); prints
//! markdown rows. Not a test: nothing here passes or fails on a number.
//!
//!   cargo run --release -p quarry-rbd --example image_ops_bench -- [POOL] [SECONDS]

use std::time::{Duration, Instant};

use bytes::Bytes;
use quarry_client::{ClientConfig, IoCtx, Rados};
use quarry_conf::CommonArgs;
use quarry_rbd::{pool, CloneFormat, CreateOptions, Image, OpenOptions};

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let pool_name = args.next().unwrap_or_else(|| "rbd".to_string());
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let common = CommonArgs::default();
    let (conf, _) = common.load_conf().expect("ceph.conf (set CEPH_CONF)");
    let cfg = ClientConfig::from_conf(&conf, &common).expect("client config");
    let rados = Rados::connect(cfg).await.expect("connect");
    let io = rados.ioctx(&pool_name).await.expect("pool");
    let tag = std::process::id();

    println!("| operation | existing snapshots / size | mean | p99 | max |");
    println!("|---|---|---|---|---|");
    snapshot_times(&io, tag).await;
    clone_times(&io, tag).await;
    println!();
    write_iops_with_snapshots(&io, tag, Duration::from_secs(seconds)).await;
    rados.shutdown().await;
}

/// Creates (and at the end removes) 20 snapshots on an image that already has 0, 100 and
/// 1000, each call timed.
async fn snapshot_times(io: &IoCtx, tag: u32) {
    let name = format!("bench-snaps-{tag}");
    pool::create(io, &name, &CreateOptions::new(GIB)).await.expect("create");
    let image = Image::open(io, &name, OpenOptions::default()).await.expect("open");
    image.write(0, Bytes::from(vec![1u8; 4096])).await.expect("write");
    let mut existing = 0u32;
    for target in [0u32, 100, 1000] {
        while existing < target {
            image.snap_create(&format!("base{existing}")).await.expect("snap create");
            existing += 1;
        }
        let mut create = Vec::new();
        let mut remove = Vec::new();
        for i in 0..20 {
            let started = Instant::now();
            image.snap_create(&format!("timed{i}")).await.expect("snap create");
            create.push(started.elapsed());
        }
        for i in 0..20 {
            let started = Instant::now();
            image.snap_remove(&format!("timed{i}")).await.expect("snap remove");
            remove.push(started.elapsed());
        }
        row("snapshot create", &format!("{target} snapshots"), &mut create);
        row("snapshot remove", &format!("{target} snapshots"), &mut remove);
    }
    for i in 0..existing {
        image.snap_remove(&format!("base{i}")).await.expect("snap remove");
    }
    image.close().await.expect("close");
    pool::remove(io, &name).await.expect("remove");
}

/// Clones a protected snapshot of a 1 GiB, 100 GiB and 10 TiB image, 10 times each.
async fn clone_times(io: &IoCtx, tag: u32) {
    for (label, size) in [("1 GiB", GIB), ("100 GiB", 100 * GIB), ("10 TiB", 10 * TIB)] {
        let parent_name = format!("bench-golden-{tag}-{}", size >> 30);
        pool::create(io, &parent_name, &CreateOptions::new(size)).await.expect("create");
        let parent = Image::open(io, &parent_name, OpenOptions::default()).await.expect("open");
        parent.write(0, Bytes::from(vec![7u8; 1 << 20])).await.expect("write");
        parent.snap_create("gold").await.expect("snap");
        parent.snap_protect("gold").await.expect("protect");
        let snap = pool::open_snapshot(io, &parent_name, "gold").await.expect("open snap");
        let mut times = Vec::new();
        for i in 0..10 {
            let child = format!("{parent_name}-child{i}");
            let started = Instant::now();
            pool::clone(&snap, io, &child, &CreateOptions::new(size), CloneFormat::V2)
                .await
                .expect("clone");
            times.push(started.elapsed());
        }
        row("clone", label, &mut times);
        snap.close().await.expect("close");
        for i in 0..10 {
            pool::remove(io, &format!("{parent_name}-child{i}")).await.expect("remove child");
        }
        parent.snap_unprotect("gold").await.expect("unprotect");
        parent.snap_remove("gold").await.expect("snap rm");
        parent.close().await.expect("close");
        pool::remove(io, &parent_name).await.expect("remove");
    }
}

/// 4 KiB random writes from 16 concurrent writers for `span`: with no snapshot, with 50
/// (each holding different data, so removal has objects to trim), and while those 50 are
/// removed.
async fn write_iops_with_snapshots(io: &IoCtx, tag: u32, span: Duration) {
    let name = format!("bench-trim-{tag}");
    let size = GIB;
    pool::create(io, &name, &CreateOptions::new(size)).await.expect("create");
    let image =
        std::sync::Arc::new(Image::open(io, &name, OpenOptions::default()).await.expect("open"));
    // Fill 256 MiB so every snapshot preserves real objects.
    let fill = Bytes::from(vec![3u8; 4 << 20]);
    for k in 0..64u64 {
        image.write(k << 22, fill.clone()).await.expect("fill");
    }
    let base = write_iops(&image, span, 256 << 20).await;
    for s in 0..50 {
        image.snap_create(&format!("s{s}")).await.expect("snap");
        // Rewrite a spread of objects after each snapshot: 50 snapshots, each with clones.
        for k in (s % 8..64).step_by(8) {
            image.write(k << 22, Bytes::from(vec![s as u8; 65536])).await.expect("write");
        }
    }
    let with_snaps = write_iops(&image, span, 256 << 20).await;
    let remover = {
        let image = image.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            for s in 0..50 {
                image.snap_remove(&format!("s{s}")).await.expect("snap rm");
            }
            started.elapsed()
        })
    };
    let while_removing = write_iops(&image, span, 256 << 20).await;
    let removal = remover.await.expect("remover");
    println!("| 4 KiB random write, 16 writers | IOPS | ratio to no snapshots |");
    println!("|---|---|---|");
    println!("| no snapshots | {base:.0} | 1.00 |");
    println!("| 50 snapshots | {with_snaps:.0} | {:.2} |", with_snaps / base);
    println!(
        "| while 50 snapshots are removed (removal took {:.0} ms) | {while_removing:.0} | {:.2} |",
        removal.as_secs_f64() * 1000.0,
        while_removing / base
    );
    let Ok(image) = std::sync::Arc::try_unwrap(image) else { panic!("the writers are done") };
    image.close().await.expect("close");
    pool::remove(io, &name).await.expect("remove");
}

/// IOPS of 16 concurrent 4 KiB random writers over the first `range` bytes for `span`.
async fn write_iops(image: &std::sync::Arc<Image>, span: Duration, range: u64) -> f64 {
    let deadline = Instant::now() + span;
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..16u64 {
        let image = image.clone();
        writers.spawn(async move {
            let mut state = w.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let data = Bytes::from(vec![w as u8; 4096]);
            let mut done = 0u64;
            while Instant::now() < deadline {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let off = (state % (range / 4096)) * 4096;
                image.write(off, data.clone()).await.expect("write");
                done += 1;
            }
            done
        });
    }
    let mut total = 0;
    while let Some(done) = writers.join_next().await {
        total += done.expect("writer");
    }
    total as f64 / span.as_secs_f64()
}

fn row(operation: &str, what: &str, times: &mut [Duration]) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = times.iter().map(|&d| ms(d)).sum::<f64>() / times.len() as f64;
    let p99 = times[(times.len() * 99).div_ceil(100) - 1];
    let max = times[times.len() - 1];
    println!("| {operation} | {what} | {mean:.1} ms | {:.1} ms | {:.1} ms |", ms(p99), ms(max));
}
