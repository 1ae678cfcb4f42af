//! The client cache against a real cluster.
//!
//! - A model test: seeded random batches of writes, reads, discards, write-zeroes,
//!   compare-and-writes and flushes through a small writeback cache (so writeback, eviction
//!   and read-ahead all happen), the ops of a batch running concurrently on disjoint ranges;
//!   every read and compare-and-write outcome must be what an uncached in-memory model
//!   says, and after every flush an uncached read-only handle must see the model in the
//!   cluster.
//! - Ordering of overlapping writes through writeback, snapshot contents, the lock hand-off
//!   writing back first, compare-and-write (mismatch offset, object boundary, clones).
//! - SIGKILL of a real writer process (this test binary run again as
//!   [`cache_writer_child`]): with writeback nothing before the last completed flush is
//!   lost; with writethrough and none nothing acknowledged is.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quarry_client::IoCtx;
use quarry_rbd::{features, pool, CacheConfig, CloneFormat, CreateOptions, Image, OpenOptions};
use quarry_testkit::Cluster;
use quarry_types::ErrorCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::make_pool;

const KIB: u64 = 1024;

/// A small writeback cache: 256 KiB, writeback from 64 KiB dirty, 50 ms age, read-ahead
/// after 2 sequential reads.
fn small_cache() -> CacheConfig {
    CacheConfig {
        size: 256 * KIB,
        max_dirty: 128 * KIB,
        target_dirty: 64 * KIB,
        max_dirty_age: Duration::from_millis(50),
        writethrough_until_flush: false,
        readahead_trigger_requests: 2,
        readahead_max_bytes: 64 * KIB,
        ..CacheConfig::default()
    }
}

fn writer(cache: CacheConfig) -> OpenOptions {
    OpenOptions { cache, ..Default::default() }
}

fn read_only() -> OpenOptions {
    OpenOptions { read_only: true, ..Default::default() }
}

#[derive(Clone, Debug)]
enum Op {
    Write(u64, Bytes),
    Read(u64, u64),
    Discard(u64, u64),
    Zeroes(u64, u64),
    /// Compare-and-write; `matching` says whether the compare bytes come from the model.
    Caw(u64, u64, bool, u8),
}

impl Op {
    fn range(&self) -> (u64, u64) {
        match self {
            Op::Write(off, data) => (*off, *off + data.len() as u64),
            Op::Read(off, len) | Op::Discard(off, len) | Op::Zeroes(off, len) => (*off, off + len),
            Op::Caw(off, len, _, _) => (*off, off + len),
        }
    }
}

fn random_op(rng: &mut StdRng, size: u64, object: u64) -> Op {
    let off = rng.gen_range(0..size - 1);
    let len = match rng.gen_range(0..4) {
        0 => rng.gen_range(1..=512),
        1 => 4 * KIB,
        2 => rng.gen_range(1..=32 * KIB),
        _ => rng.gen_range(1..=160 * KIB), // larger than the dirty limit sometimes
    }
    .min(size - off);
    match rng.gen_range(0..10) {
        0..=3 => {
            let seed: u8 = rng.gen();
            Op::Write(off, Bytes::from((0..len).map(|i| seed ^ (i as u8) | 1).collect::<Vec<_>>()))
        }
        4..=6 => Op::Read(off, len),
        7 => Op::Discard(off, len),
        8 => Op::Zeroes(off, len),
        _ => {
            // Within one object.
            let end = (off / object + 1) * object;
            Op::Caw(off, len.min(end - off).min(4 * KIB), rng.gen_bool(0.6), rng.gen())
        }
    }
}

async fn run_op(image: &Image, op: Op, before: &[u8]) -> Result<Option<Bytes>, String> {
    let r = match op {
        Op::Write(off, data) => image.write(off, data).await.map(|_| None),
        Op::Read(off, len) => image.read(off, len).await.map(Some),
        Op::Discard(off, len) => image.discard(off, len).await.map(|_| None),
        Op::Zeroes(off, len) => image.write_zeroes(off, len).await.map(|_| None),
        Op::Caw(off, len, matching, seed) => {
            let range = off as usize..(off + len) as usize;
            let mut cmp = before[range].to_vec();
            if !matching {
                cmp[len as usize / 2] ^= 0x5a;
            }
            let data = Bytes::from(vec![seed | 1; len as usize]);
            match image.compare_and_write(off, Bytes::from(cmp), data).await {
                Ok(()) => Ok(None),
                Err(e) if e.errno() == ErrorCode::EILSEQ => {
                    return Ok(Some(Bytes::from(
                        e.mismatch_offset().unwrap().to_be_bytes().to_vec(),
                    )))
                }
                Err(e) => Err(e),
            }
        }
    };
    r.map_err(|e| e.to_string())
}

fn apply(model: &mut [u8], op: &Op, outcome: &Option<Bytes>) {
    match op {
        Op::Write(off, data) => {
            model[*off as usize..*off as usize + data.len()].copy_from_slice(data)
        }
        Op::Read(..) => {}
        Op::Discard(off, len) | Op::Zeroes(off, len) => {
            model[*off as usize..(off + len) as usize].fill(0)
        }
        Op::Caw(off, len, _, seed) => {
            if outcome.is_none() {
                model[*off as usize..(off + len) as usize].fill(seed | 1);
            }
        }
    }
}

/// The outcome `op` must have had on `model` (before the op).
fn expected(model: &[u8], op: &Op) -> Option<Bytes> {
    match op {
        Op::Read(off, len) => {
            Some(Bytes::copy_from_slice(&model[*off as usize..(off + len) as usize]))
        }
        Op::Caw(off, len, matching, _) if !matching => {
            // The flipped byte is the first difference.
            let _ = len;
            Some(Bytes::from((off + len / 2).to_be_bytes().to_vec()))
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_interleavings_read_back_as_the_uncached_model() {
    let cluster = Cluster::start().await;
    let rados = cluster.admin().await;
    let io = make_pool(&rados, "rbd", 1).await;
    let seeds: Vec<u64> = match std::env::var("QUARRY_CACHE_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        run_model(&io, seed).await;
    }
    cluster.shutdown().await;
}

async fn run_model(io: &IoCtx, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let size = 1024 * KIB;
    let object = 64 * KIB;
    let name = format!("model{seed}");
    // Half the seeds are clones (copy-up under the cache and compare-and-write).
    let clone = seed.is_multiple_of(2);
    let mut model = vec![0u8; size as usize];
    if clone {
        let parent = format!("parent{seed}");
        pool::create(io, &parent, &CreateOptions { order: 16, ..CreateOptions::new(size) })
            .await
            .unwrap();
        let p = Image::open(io, &parent, OpenOptions::default()).await.unwrap();
        for k in 0..8u64 {
            let data = vec![(k as u8) * 17 + 3; 40 * KIB as usize];
            p.write(k * 128 * KIB + 3 * KIB, Bytes::from(data.clone())).await.unwrap();
            let at = (k * 128 * KIB + 3 * KIB) as usize;
            model[at..at + data.len()].copy_from_slice(&data);
        }
        p.snap_create("base").await.unwrap();
        p.close().await.unwrap();
        let snap = Image::open(
            io,
            &parent,
            OpenOptions { snapshot: Some("base".into()), read_only: true, ..Default::default() },
        )
        .await
        .unwrap();
        let options = CreateOptions { order: 16, ..CreateOptions::new(size) };
        pool::clone(&snap, io, &name, &options, CloneFormat::V2).await.unwrap();
    } else {
        let mut options = CreateOptions { order: 16, ..CreateOptions::new(size) };
        if seed.is_multiple_of(3) {
            options.features = features::LAYERING; // no object map, no exclusive lock
        }
        pool::create(io, &name, &options).await.unwrap();
    }
    let image = Image::open(io, &name, writer(small_cache())).await.unwrap();
    let mut log: Vec<String> = Vec::new();
    for step in 0..250 {
        if rng.gen_bool(0.08) {
            log.push(format!("{step}: flush"));
            image.flush().await.unwrap();
            let check = Image::open(io, &name, read_only()).await.unwrap();
            let got = check.read(0, size).await.unwrap();
            if got[..] != model[..] {
                let at = got.iter().zip(&model).position(|(a, b)| a != b).unwrap();
                panic!(
                    "seed {seed}: after a flush the cluster differs at {at}\n{}",
                    log.join("\n")
                );
            }
            continue;
        }
        // A batch of ops on disjoint ranges, run concurrently.
        let mut batch: Vec<Op> = Vec::new();
        for _ in 0..rng.gen_range(1..=4) {
            let op = random_op(&mut rng, size, object);
            let (lo, hi) = op.range();
            if batch.iter().all(|b| {
                let (blo, bhi) = b.range();
                hi <= blo || bhi <= lo
            }) {
                batch.push(op);
            }
        }
        if rng.gen_bool(0.15) {
            // A sequential run of reads (read-ahead starts after two).
            let start = rng.gen_range(0..size / 2);
            log.push(format!("{step}: sequential reads from {start}"));
            for i in 0..8 {
                let at = start + i * 8 * KIB;
                let got = image.read(at, 8 * KIB).await.unwrap();
                let want = &model[at as usize..(at + 8 * KIB) as usize];
                assert!(got[..] == want[..], "seed {seed} step {step}: sequential read at {at}");
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for (i, op) in batch.iter().enumerate() {
            let (image, op, before) = (image.clone(), op.clone(), model.clone());
            set.spawn(async move { (i, run_op(&image, op, &before).await) });
        }
        let mut outcomes: BTreeMap<usize, Option<Bytes>> = BTreeMap::new();
        while let Some(joined) = set.join_next().await {
            let (i, r) = joined.unwrap();
            let r = r.unwrap_or_else(|e| panic!("seed {seed} step {step}: {:?}: {e}", batch[i]));
            outcomes.insert(i, r);
        }
        for (i, op) in batch.iter().enumerate() {
            log.push(format!("{step}: {:?}", short(op)));
            let want = expected(&model, op);
            if outcomes[&i] != want {
                panic!(
                    "seed {seed} step {step}: {:?} gave {:?}, the model says {:?}\n{}",
                    short(op),
                    outcomes[&i].as_ref().map(|b| first_diff(b, want.as_ref())),
                    want.as_ref().map(|b| b.len()),
                    log.join("\n")
                );
            }
            apply(&mut model, op, &outcomes[&i]);
        }
    }
    image.close().await.unwrap();
    let check = Image::open(io, &name, read_only()).await.unwrap();
    assert!(check.read(0, size).await.unwrap()[..] == model[..], "seed {seed}: after close");
}

fn short(op: &Op) -> String {
    match op {
        Op::Write(off, data) => format!("write {off}+{}", data.len()),
        other => format!("{other:?}"),
    }
}

fn first_diff(got: &Bytes, want: Option<&Bytes>) -> String {
    match want {
        Some(want) => match got.iter().zip(want.iter()).position(|(a, b)| a != b) {
            Some(at) => format!("first difference at {at} of {}", got.len()),
            None => format!("len {} vs {}", got.len(), want.len()),
        },
        None => format!("{} bytes", got.len()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writeback_order_snapshots_and_lock_hand_off() {
    let cluster = Cluster::start().await;
    let rados = cluster.admin().await;
    let io = make_pool(&rados, "rbd", 1).await;
    pool::create(&io, "wb", &CreateOptions { order: 16, ..CreateOptions::new(1 << 20) })
        .await
        .unwrap();
    let cache = CacheConfig { max_dirty_age: Duration::from_secs(60), ..small_cache() };
    let a = Image::open(&io, "wb", writer(cache.clone())).await.unwrap();
    let ro = || Image::open(&io, "wb", read_only());

    // Overlapping writes, then a flush: the cluster has the last one.
    for i in 0..20u8 {
        a.write(1000 + u64::from(i) * 10, Bytes::from(vec![i + 1; 4096])).await.unwrap();
    }
    let want = a.read(0, 1 << 16).await.unwrap();
    a.flush().await.unwrap();
    assert_eq!(ro().await.unwrap().read(0, 1 << 16).await.unwrap(), want);

    // Buffered writes are not in the cluster before a flush (the cache is really writeback)…
    a.write(300_000, Bytes::from(vec![7u8; 4096])).await.unwrap();
    assert_eq!(a.read(300_000, 4).await.unwrap(), vec![7u8; 4]);
    assert_eq!(ro().await.unwrap().read(300_000, 4).await.unwrap(), vec![0u8; 4]);
    // …but a snapshot holds every write acknowledged before it.
    a.snap_create("s").await.unwrap();
    a.write(300_000, Bytes::from(vec![8u8; 4096])).await.unwrap();
    let snap = Image::open(
        &io,
        "wb",
        OpenOptions { snapshot: Some("s".into()), read_only: true, ..Default::default() },
    )
    .await
    .unwrap();
    assert_eq!(snap.read(300_000, 4).await.unwrap(), vec![7u8; 4]);

    // Another writer asks for the lock: the holder writes back before handing it over, and
    // drops what it cached (the new owner may change the image).
    let b = Image::open(&io, "wb", writer(CacheConfig { enabled: false, ..cache })).await.unwrap();
    // b reads the cluster without the lock: a's last write is still only in a's cache.
    assert_eq!(b.read(300_000, 4).await.unwrap(), vec![7u8; 4]);
    b.write(300_000, Bytes::from(vec![9u8; 16])).await.unwrap();
    assert!(!a.is_lock_owner().await);
    assert_eq!(b.read(300_000, 4096).await.unwrap()[..20], [&[9u8; 16][..], &[8u8; 4]].concat());
    assert_eq!(a.read(300_000, 4).await.unwrap(), vec![9u8; 4], "a's clean cache was dropped");
    // Without the lock a caches nothing it reads: b's next write shows at once.
    b.write(300_000, Bytes::from(vec![10u8; 4])).await.unwrap();
    assert_eq!(a.read(300_000, 4).await.unwrap(), vec![10u8; 4], "a cached while not owning");
    b.close().await.unwrap();
    a.close().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_write_semantics() {
    let cluster = Cluster::start().await;
    let rados = cluster.admin().await;
    let io = make_pool(&rados, "rbd", 1).await;
    let opts = CreateOptions { order: 16, ..CreateOptions::new(1 << 20) };
    pool::create(&io, "c", &opts).await.unwrap();
    for cache in [CacheConfig::default(), CacheConfig { enabled: false, ..Default::default() }] {
        let image = Image::open(&io, "c", writer(cache)).await.unwrap();
        image.flush().await.unwrap(); // writeback from here
        image.write(4096, Bytes::from_static(b"abcdefgh")).await.unwrap();
        // A buffered write is compared against (written back first).
        image
            .compare_and_write(4096, Bytes::from_static(b"abcd"), Bytes::from_static(b"ABCD"))
            .await
            .unwrap();
        assert_eq!(image.read(4096, 8).await.unwrap(), &b"ABCDefgh"[..]);
        let e = image
            .compare_and_write(4098, Bytes::from_static(b"CDxf"), Bytes::from_static(b"zzzz"))
            .await
            .unwrap_err();
        assert_eq!((e.errno(), e.mismatch_offset()), (ErrorCode::EILSEQ, Some(4100)));
        assert_eq!(image.read(4096, 8).await.unwrap(), &b"ABCDefgh"[..], "nothing written");
        // Absent data compares as zeros.
        image
            .compare_and_write(200_000, Bytes::from(vec![0u8; 8]), Bytes::from_static(b"12345678"))
            .await
            .unwrap();
        assert_eq!(image.read(200_000, 8).await.unwrap(), &b"12345678"[..]);
        // Across an object boundary, unequal lengths, past the end: EINVAL (librbd's rules).
        let two = Bytes::from(vec![0u8; 16]);
        let across = image.compare_and_write(65_536 - 8, two.clone(), two.clone()).await;
        assert_eq!(across.unwrap_err().errno(), ErrorCode::EINVAL);
        let unequal = image.compare_and_write(0, two.clone(), two.slice(..8)).await;
        assert_eq!(unequal.unwrap_err().errno(), ErrorCode::EINVAL);
        let past = image.compare_and_write((1 << 20) - 8, two.clone(), two.clone()).await;
        assert_eq!(past.unwrap_err().errno(), ErrorCode::EINVAL);
        image.discard(0, 1 << 20).await.unwrap();
        image.close().await.unwrap();
    }

    // In a clone the parent's data is copied up first and compared.
    let parent = Image::open(&io, "c", OpenOptions::default()).await.unwrap();
    parent.write(70_000, Bytes::from_static(b"parent!!")).await.unwrap();
    parent.snap_create("p").await.unwrap();
    parent.close().await.unwrap();
    let snap = Image::open(
        &io,
        "c",
        OpenOptions { snapshot: Some("p".into()), read_only: true, ..Default::default() },
    )
    .await
    .unwrap();
    pool::clone(&snap, &io, "child", &opts, CloneFormat::V2).await.unwrap();
    let child = Image::open(&io, "child", OpenOptions::default()).await.unwrap();
    let e = child
        .compare_and_write(70_000, Bytes::from(vec![0u8; 8]), Bytes::from_static(b"xxxxxxxx"))
        .await
        .unwrap_err();
    assert_eq!(e.mismatch_offset(), Some(70_000), "the parent's bytes, not zeros");
    child
        .compare_and_write(70_000, Bytes::from_static(b"parent!!"), Bytes::from_static(b"child!!!"))
        .await
        .unwrap();
    assert_eq!(child.read(69_998, 12).await.unwrap(), &b"\0\0child!!!\0\0"[..]);
    child.close().await.unwrap();
    let parent_snap = Image::open(
        &io,
        "c",
        OpenOptions { snapshot: Some("p".into()), read_only: true, ..Default::default() },
    )
    .await
    .unwrap();
    assert_eq!(parent_snap.read(70_000, 8).await.unwrap(), &b"parent!!"[..]);
    cluster.shutdown().await;
}

// ---- SIGKILL of a writer process ----

const BLOCK: u64 = 4096;
const WRITER_CONF: &str = "QUARRY_CACHE_WRITER_CONF";
const WRITER_IMAGE: &str = "QUARRY_CACHE_WRITER_IMAGE";

/// The writer process of the SIGKILL test (a no-op unless run by it): opens the image with
/// the cache settings of the conf (`rbd_cache*` in `[client]`), writes 4 KiB block after
/// block, printing `acked N` once write N returned and `flushed N` once a flush issued after
/// write N returned; flushes every 50 writes; runs until killed.
#[test]
fn cache_writer_child() {
    let (Ok(conf_path), Ok(image_name)) = (std::env::var(WRITER_CONF), std::env::var(WRITER_IMAGE))
    else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        use std::io::Write;
        let common = quarry_conf::CommonArgs {
            conf: Some(conf_path.into()),
            ..quarry_conf::CommonArgs::default()
        };
        let (conf, _) = common.load_conf().unwrap();
        let config = quarry_client::ClientConfig::from_conf(&conf, &common).unwrap();
        let admin = quarry_types::EntityName::client("admin");
        let cache = CacheConfig::from_conf(&conf, &admin).unwrap();
        let rados = quarry_client::Rados::connect(config).await.unwrap();
        let io = rados.ioctx("rbd").await.unwrap();
        let image = Image::open(&io, &image_name, writer(cache)).await.unwrap();
        let mut out = std::io::stdout();
        for i in 0u64.. {
            image.write(i * BLOCK, Bytes::from(block(i))).await.unwrap();
            writeln!(out, "acked {i}").unwrap();
            out.flush().unwrap();
            if i % 50 == 49 {
                image.flush().await.unwrap();
                writeln!(out, "flushed {i}").unwrap();
                out.flush().unwrap();
            }
        }
    });
}

fn block(i: u64) -> Vec<u8> {
    (0..BLOCK).map(|j| (i as u8).wrapping_mul(31) ^ (j as u8) | 1).collect()
}

/// Runs the writer (settings in `dir/ceph.conf`) until it has flushed `flushes` times
/// and acknowledged some writes after that, SIGKILLs it, and returns (last write
/// acknowledged, last write covered by a completed flush).
fn kill_writer(dir: &std::path::Path, image: &str, flushes: u64) -> (Option<u64>, Option<u64>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "cache::cache_writer_child", "--nocapture", "--test-threads=1"])
        .env(WRITER_CONF, dir.join("ceph.conf"))
        .env(WRITER_IMAGE, image)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (mut acked, mut flushed, mut seen) = (None, None, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in out.lines() {
        let line = line.unwrap();
        // The test harness's own lines ("running 1 test") are not the writer's.
        let Some((what, Ok(n))) = line.split_once(' ').map(|(w, n)| (w, n.parse::<u64>())) else {
            continue;
        };
        match what {
            "acked" => acked = Some(n),
            "flushed" => {
                flushed = Some(n);
                seen += 1;
            }
            _ => {}
        }
        if (seen >= flushes && acked.zip(flushed).is_some_and(|(a, f)| a >= f + 20))
            || Instant::now() > deadline
        {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    assert!(flushed.is_some(), "the writer never flushed");
    (acked, flushed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_writer_loses_nothing_it_must_keep() {
    let cluster = Cluster::start().await;
    let rados = cluster.admin().await;
    let io = make_pool(&rados, "rbd", 1).await;
    // Requests of the killed client whose replies nobody waits for any more.
    cluster.logs().allow("OneshotConsumer.tx.send: is_ok: false");
    let dir = tempfile_dir();
    std::fs::write(
        dir.join("keyring"),
        format!("[client.admin]\n\tkey = {}\n", cluster.admin_key().to_base64()),
    )
    .unwrap();
    for (mode, settings) in [
        ("writeback", "rbd_cache = true\nrbd_cache_writethrough_until_flush = false\nrbd_cache_max_dirty_age = 30\n"),
        ("writethrough", "rbd_cache = true\nrbd_cache_max_dirty = 0\n"),
        ("none", "rbd_cache = false\n"),
    ] {
        std::fs::write(
            dir.join("ceph.conf"),
            format!(
                "[global]\nmon_host = {}\nkeyring = {}\n[client]\n{settings}",
                cluster.mon_addr(),
                dir.join("keyring").display()
            ),
        )
        .unwrap();
        let name = format!("killed-{mode}");
        pool::create(&io, &name, &CreateOptions { order: 16, ..CreateOptions::new(64 << 20) })
            .await
            .unwrap();
        let (acked, flushed) = kill_writer(&dir, &name, 3);
        let (acked, flushed) = (acked.unwrap(), flushed.unwrap());
        let image = Image::open(&io, &name, read_only()).await.unwrap();
        let data = image.read(0, (acked + 1) * BLOCK).await.unwrap();
        let must_keep = if mode == "writeback" { flushed } else { acked };
        let mut lost = 0;
        for i in 0..=acked {
            let got = &data[(i * BLOCK) as usize..((i + 1) * BLOCK) as usize];
            if got == block(i).as_slice() {
                continue;
            }
            assert!(got.iter().all(|&b| b == 0), "{mode}: block {i} holds neither its data nor zeros");
            assert!(i > must_keep, "{mode}: block {i} lost (acked {acked}, flushed {flushed})");
            lost += 1;
        }
        eprintln!("{mode}: {acked} writes acknowledged, flush covered {flushed}, {lost} lost");
    }
    let _ = std::fs::remove_dir_all(&dir);
    cluster.shutdown().await;
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("quarry-cache-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
