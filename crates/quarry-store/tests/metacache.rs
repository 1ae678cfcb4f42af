//! The object metadata cache (`metacache.rs`): reads of an object's head answered from memory
//! must see every write answered before they began, through every kind of commit; a
//! checkpoint keeps the entries; objects too large to keep are still read right. (An object
//! gets an entry at its first miss while the cache has room, at its second once it is full:
//! the tests read twice to make one either way.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use quarry_store::{Store, StoreOptions};
use quarry_types::{ErrorCode, ObjectOp, OpOutput, OpReply, SnapContext, SNAP_HEAD};

use crate::common::*;

fn lazy() -> StoreOptions {
    StoreOptions { commit_age: std::time::Duration::from_secs(3600), ..StoreOptions::default() }
}

/// Ops to apply and what the object then reads as.
type Step = (Vec<ObjectOp>, Result<Vec<u8>, ErrorCode>);

fn hits(store: &Store) -> u64 {
    store.meta_cache_stats().hits
}

/// Goal: a cached head is dropped by the commit of the applies that wrote the object, so a
/// read after an overwrite, a truncate, a removal and a re-creation sees each (and the reads
/// between them are answered from the cache). Method: each change is applied (the transaction
/// stays open), then the object is read twice.
#[test]
fn a_cached_head_follows_every_write_of_its_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), &lazy()).unwrap();
    apply1(&store, cmd("o", vec![write_full(&pattern(6000, 1))]));
    apply1(&store, cmd("other", vec![write_full(b"x")]));
    store.settle().unwrap();
    // The first miss makes the entry (the cache has room; once full, the second would).
    for _ in 0..2 {
        assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(pattern(6000, 1)));
    }
    let before = hits(&store);
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(pattern(6000, 1)));
    assert_eq!(hits(&store), before + 1, "the second read was not answered from the cache");

    let mut want = pattern(6000, 1);
    want[100..4196].copy_from_slice(&pattern(4096, 2));
    let steps: Vec<Step> = vec![
        (vec![write(100, &pattern(4096, 2))], Ok(want.clone())),
        (vec![ObjectOp::Truncate { size: 50 }], Ok(want[..50].to_vec())),
        (vec![write_full(&pattern(9000, 3))], Ok(pattern(9000, 3))),
        (vec![ObjectOp::Remove], Err(ErrorCode::ENOENT)),
        (vec![write(8192, b"again")], Ok([vec![0; 8192], b"again".to_vec()].concat())),
    ];
    for (i, (ops, want)) in steps.into_iter().enumerate() {
        // Another object's read in between: the transaction stays open.
        apply1(&store, cmd("o", ops));
        assert_eq!(read_all(&store, "other", SNAP_HEAD), Ok(b"x".to_vec()));
        assert!(store.has_open_transaction());
        for _ in 0..2 {
            assert_eq!(read_all(&store, "o", SNAP_HEAD), want, "step {i}: a stale head was read");
        }
        let before = hits(&store);
        assert_eq!(read_all(&store, "o", SNAP_HEAD), want, "step {i}, read again");
        assert_eq!(hits(&store), before + 1, "step {i}: not cached again");
    }
}

/// Goal: a write under a newer snapshot context (a clone made) is seen at the head, and the
/// snapshot still reads the old content. Method: head cached, then written with snapc 4.
#[test]
fn a_snapshot_write_replaces_the_cached_head() {
    let (_dir, store) = open_temp();
    apply1(&store, cmd("o", vec![write_full(&pattern(5000, 1))]));
    for _ in 0..3 {
        assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(pattern(5000, 1)));
    }
    assert!(hits(&store) > 0);
    let snapc = SnapContext { seq: 4, snaps: vec![4] };
    apply1(&store, cmd_at("o", &snapc, (200, 0), vec![write(0, &pattern(100, 2))]));
    let mut head = pattern(5000, 1);
    head[..100].copy_from_slice(&pattern(100, 2));
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(head));
    assert_eq!(read_all(&store, "o", 4), Ok(pattern(5000, 1)));
}

/// Goal: a checkpoint (a durable commit writing no object) keeps the cache; a stat is served
/// from it too.
#[test]
fn a_checkpoint_keeps_the_cached_heads() {
    let (_dir, store) = open_temp();
    apply1(&store, cmd("o", vec![write_full(&pattern(3000, 1))]));
    for _ in 0..2 {
        assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(pattern(3000, 1)));
    }
    store.checkpoint().unwrap();
    let before = hits(&store);
    match store.read(PG, "o", SNAP_HEAD, &[ObjectOp::Stat]).unwrap() {
        OpReply::Ok(out) => {
            assert!(matches!(out[..], [OpOutput::Stat { size: 3000, .. }]), "{out:?}")
        }
        other => panic!("stat: {other:?}"),
    }
    assert_eq!(hits(&store), before + 1, "the checkpoint emptied the cache");
}

fn read_range(store: &Store, name: &str, off: u64, len: u64) -> Vec<u8> {
    match store.read(PG, name, SNAP_HEAD, &[ObjectOp::Read { off, len }]).unwrap() {
        OpReply::Ok(mut out) => match out.pop() {
            Some(OpOutput::Data(p)) => p.data.to_vec(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// Writes `chunks` 4 KiB chunks of object `name` one write each (every other chunk, then
/// three-chunk writes across the rows at every 16th), so that its head sees many rows;
/// returns what it reads as.
fn write_piecemeal(store: &Store, name: &str, chunks: u64) -> Vec<u8> {
    let mut want = vec![0u8; (chunks * 4096) as usize];
    let mut cmds = Vec::new();
    let mut put = |off: u64, data: Vec<u8>, cmds: &mut Vec<_>| {
        want[off as usize..][..data.len()].copy_from_slice(&data);
        cmds.push(cmd(name, vec![write(off, &data)]));
    };
    for i in (0..chunks).step_by(2) {
        put(i * 4096, pattern(4096, (i % 250) as u8 + 1), &mut cmds);
    }
    for i in (3..chunks.saturating_sub(3)).step_by(16) {
        put(i * 4096 + 100, pattern(3 * 4096, (i % 200) as u8 + 3), &mut cmds);
    }
    for batch in cmds.chunks(64) {
        store.apply(PG, batch, b"state").unwrap();
    }
    let end = want.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    want.truncate(end);
    want
}

/// `count` reads of object `name` at random ranges (within a chunk, a few bytes, a few chunks,
/// up to 64 chunks, some past the end), each checked against `want` and each a hit of the
/// metadata cache.
fn reads_are_hits_and_right(store: &Store, name: &str, want: &[u8], count: u64, seed: u64) {
    let before = hits(store);
    let mut seed = seed;
    for k in 0..count {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (seed >> 33) % (want.len() as u64 + 8192);
        let len = match k % 4 {
            0 => 4096 - off % 4096,
            1 => 1 + (seed >> 20) % 100,
            2 => 1 + (seed >> 12) % (5 * 4096),
            _ => 1 + (seed >> 8) % (64 * 4096),
        };
        let from = (off as usize).min(want.len());
        let to = ((off + len) as usize).min(want.len());
        assert_eq!(read_range(store, name, off, len), want[from..to], "{name}: {off}+{len}");
    }
    assert_eq!(hits(store), before + count, "reads of {name} missed the cache");
}

/// Goal: an object written piecemeal (a VM image's: hundreds of rows) is kept, and every read
/// of it, whatever range it asks for, is answered from the entry with the right data (a hit
/// decodes only the rows its range overlaps). Method: 1024 chunks written 4 KiB at a time and
/// across rows; read whole twice (the entry is made), then 600 reads of single chunks, parts
/// of chunks, ranges across rows and holes, and ranges past the end, each checked and each a
/// hit.
#[test]
fn an_object_of_many_rows_is_kept_and_read_right_from_its_entry() {
    let (_dir, store) = open_temp();
    let want = write_piecemeal(&store, "image", 1024);
    assert!(store.extent_rows(PG, "image").unwrap() > 500);
    for _ in 0..2 {
        assert_eq!(read_all(&store, "image", SNAP_HEAD), Ok(want.clone()));
    }
    reads_are_hits_and_right(&store, "image", &want, 600, 12345);
}

/// Goal: a head whose rows span two tags (a 4 MiB object written whole, then rewritten 4 KiB
/// at a time after a snapshot: one row of 1024 chunks mostly hidden by 500 newer ones) is
/// kept, and every read of it is answered from the entry with the head's data, while the
/// snapshot still reads the old data. Method: 500 reads of random ranges, each checked and
/// each a hit; the snapshot read whole.
#[test]
fn a_head_of_rows_over_two_tags_is_read_right_from_its_entry() {
    let (_dir, store) = open_temp();
    let old = pattern(4 << 20, 7);
    apply1(&store, cmd("image", vec![write_full(&old)]));
    let snapc = SnapContext { seq: 4, snaps: vec![4] };
    let mut head = old.clone();
    let mut cmds = Vec::new();
    for i in (0..1024u64).filter(|i| i % 2 == 0 || i % 7 == 3) {
        let data = pattern(4096, (i % 240) as u8 + 11);
        head[(i * 4096) as usize..][..4096].copy_from_slice(&data);
        cmds.push(cmd_at("image", &snapc, (200, 0), vec![write(i * 4096, &data)]));
    }
    for batch in cmds.chunks(64) {
        store.apply(PG, batch, b"state").unwrap();
    }
    assert!(store.extent_rows(PG, "image").unwrap() > 500);
    for _ in 0..2 {
        assert_eq!(read_all(&store, "image", SNAP_HEAD), Ok(head.clone()));
    }
    reads_are_hits_and_right(&store, "image", &head, 500, 777);
    assert_eq!(read_all(&store, "image", 4), Ok(old));
}

/// Goal: objects of many rows read at random through a cache too small for all of them do
/// not churn it (each entry reads every row of its object to be made: one made to evict
/// another, to be evicted in turn, cost five times the reads it served, docs/benchmarks.md
/// "Twenty-third round"): once each object has an entry or a hint, reading them all again
/// misses none, and every read is right. Method: a cache of 16 × 40 KiB, 48 objects of
/// ~580 rows (~23 KB an entry), read round robin three times.
#[test]
fn objects_of_many_rows_do_not_churn_a_small_cache() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { meta_cache_bytes: (16 * 40) << 10, ..StoreOptions::default() };
    let store = Store::open_with(dir.path(), &options).unwrap();
    let names: Vec<String> = (0..48).map(|i| format!("rbd_data.1.{i:016x}")).collect();
    let wants: Vec<Vec<u8>> = names.iter().map(|n| write_piecemeal(&store, n, 1024)).collect();
    let read_all_once = || {
        for (name, want) in names.iter().zip(&wants) {
            let (off, len) = (777 * 4096 + 5, 3 * 4096);
            assert_eq!(read_range(&store, name, off, len), want[off as usize..][..len as usize]);
        }
    };
    read_all_once();
    read_all_once();
    let (misses, stats) = (store.meta_cache_stats().misses, store.meta_cache_stats());
    assert!(stats.bytes <= (16 * 40) << 10, "{stats:?}");
    // A shard holds one large entry (~23 KB of its 40 KiB); the objects' hashes spread them
    // over the shards (about one shard in twenty gets none of the 48).
    assert!(stats.bytes > (8 * 20) << 10, "{stats:?}: the large entries were not kept");
    assert_eq!(stats.entries, 48, "{stats:?}: an object has neither an entry nor a hint");
    read_all_once();
    assert_eq!(store.meta_cache_stats().misses, misses, "the cache churned");
}

/// Goal: an object whose head sees more rows than an entry keeps is read right, every time,
/// with the rest of the cache working. Method: 4400 chunks written 4 KiB at a time.
#[test]
fn an_object_of_more_rows_than_an_entry_keeps_is_read_right() {
    let (_dir, store) = open_temp();
    let want = write_piecemeal(&store, "big", 4400);
    assert!(store.extent_rows(PG, "big").unwrap() > 2048);
    apply1(&store, cmd("small", vec![write_full(b"small")]));
    for _ in 0..3 {
        assert_eq!(read_all(&store, "big", SNAP_HEAD), Ok(want.clone()));
        assert_eq!(read_all(&store, "small", SNAP_HEAD), Ok(b"small".to_vec()));
    }
    let before = hits(&store);
    assert_eq!(read_range(&store, "big", 2 * 4096, 10), want[2 * 4096..][..10]);
    assert_eq!(read_all(&store, "small", SNAP_HEAD), Ok(b"small".to_vec()));
    // The large object's entry is only a hint (its rows are not kept): small.
    assert_eq!(hits(&store), before + 2);
    let stats = store.meta_cache_stats();
    assert!(stats.entries == 2 && stats.bytes < 1024, "{stats:?}: the rows were kept");
}

/// The version written into each object, and its length (so that a record and rows of two
/// different versions would not read as a valid one).
fn content(version: u64) -> Vec<u8> {
    let len = 1000 + (version as usize * 997) % 12000;
    let mut data = pattern(len, (version % 250) as u8 + 1);
    data[..8].copy_from_slice(&version.to_le_bytes());
    data
}

/// Goal: under concurrent writes, commits and checkpoints, a read never returns a version
/// older than the last one answered before it began, nor a mix of two versions. Method: a
/// writer overwrites 4 objects with increasing versions (each answered version published after
/// its apply returned), a committer settles and checkpoints at random, two readers read and
/// check the content against the version it claims and against the published one.
#[test]
fn concurrent_reads_never_see_an_answered_write_undone() {
    let (_dir, store) = open_temp();
    let store = Arc::new(store);
    const OBJECTS: usize = 4;
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..OBJECTS).map(|_| AtomicU64::new(0)).collect());
    for o in 0..OBJECTS {
        apply1(&store, cmd(&format!("o{o}"), vec![write_full(&content(0))]));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, acked, stop) = (store.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut version = 1u64;
            while !stop.load(Ordering::Relaxed) {
                let o = (version as usize * 7) % OBJECTS;
                let op = if version % 5 == 0 {
                    write(0, &content(version)[..8])
                } else {
                    write_full(&content(version))
                };
                let name = format!("o{o}");
                assert!(matches!(apply1(&store, cmd(&name, vec![op])), OpReply::Ok(_)));
                if version % 5 != 0 {
                    acked[o].store(version, Ordering::SeqCst);
                }
                version += 1;
            }
            version
        })
    };
    let committer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if n % 7 == 0 {
                    store.checkpoint().unwrap();
                } else {
                    store.settle().unwrap();
                }
                n += 1;
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (store, acked, stop) = (store.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let o = (reads as usize + r) % OBJECTS;
                    let floor = acked[o].load(Ordering::SeqCst);
                    let data = read_all(&store, &format!("o{o}"), SNAP_HEAD).unwrap();
                    let mut v = [0u8; 8];
                    v.copy_from_slice(&data[..8]);
                    let claimed = u64::from_le_bytes(v);
                    // A partial write (version % 5 == 0) changes only the first 8 bytes.
                    let base = if claimed % 5 == 0 { None } else { Some(content(claimed)) };
                    if let Some(base) = base {
                        assert_eq!(data, base, "object o{o}: a mix of versions was read");
                    }
                    assert!(
                        claimed >= floor,
                        "object o{o}: version {claimed} read after {floor} was answered"
                    );
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let versions = writer.join().unwrap();
    committer.join().unwrap();
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(versions > 100 && reads > 100, "{versions} writes, {reads} reads");
    assert!(hits(&store) > 0, "no read was answered from the cache");
}

/// Goal: commits that write objects without naming them (PG removal, import) empty the cache.
/// Method: an object's head cached (a hit seen), then the PG removed, or an older export
/// imported over it; the next read must see the change.
#[test]
fn a_pg_removal_or_an_import_drops_the_cached_heads() {
    let (_dir, store) = open_temp();
    let cached = |store: &Store, want: &[u8]| {
        let before = hits(store);
        for _ in 0..3 {
            assert_eq!(read_all(store, "o", SNAP_HEAD).as_deref(), Ok(want));
        }
        assert!(hits(store) > before, "not cached");
    };
    apply1(&store, cmd("o", vec![write_full(b"exported")]));
    let mut stream = Vec::new();
    store.export_pg(PG, &mut stream).unwrap();
    apply1(&store, cmd("o", vec![write_full(b"written after the export")]));
    cached(&store, b"written after the export");
    store.import_pg(PG, &mut stream.as_slice()).unwrap();
    assert_eq!(read_all(&store, "o", SNAP_HEAD).as_deref(), Ok(b"exported".as_slice()));
    cached(&store, b"exported");
    store.remove_pg(PG).unwrap();
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Err(ErrorCode::ENOENT), "a removed PG was read");
}

/// Goal: the cache's budget bounds what its entries really hold, and a small object's entry
/// stays small (kept decoded, one took ~750 bytes of resident memory, ~530 by the estimate).
/// Method: 2000 objects of 4 KiB with `rados bench`-like names, each read once in a way the
/// cache does not serve (the database's pages are read into its cache), then read again
/// under a heap count: those reads make the entries and nothing else stays allocated. What stayed must be within the weight the cache counts, and that under 256
/// bytes an entry.
#[test]
fn entries_hold_no_more_heap_than_they_are_weighed() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { meta_cache_bytes: 64 << 20, ..StoreOptions::default() };
    let store = Store::open_with(dir.path(), &options).unwrap();
    let names: Vec<String> =
        (0..2000).map(|i| format!("benchmark_data_host_4242_object{i}")).collect();
    for chunk in names.chunks(100) {
        let cmds: Vec<_> =
            chunk.iter().map(|n| cmd(n, vec![write_full(&pattern(4096, 3))])).collect();
        store.apply(PG, &cmds, b"state").unwrap();
    }
    store.checkpoint().unwrap();
    let read_each = || {
        for name in &names {
            assert_eq!(read_all(&store, name, SNAP_HEAD), Ok(pattern(4096, 3)), "{name}");
        }
    };
    // A first pass warms the database's page cache with reads the metadata cache does not
    // serve (a read with an xattr listing), so that the measured pass holds only entries.
    for name in &names {
        let ops = [ObjectOp::Read { off: 0, len: 0 }, ObjectOp::GetXattrs];
        assert!(matches!(store.read(PG, name, SNAP_HEAD, &ops), Ok(OpReply::Ok(_))), "{name}");
    }
    assert_eq!(store.meta_cache_stats().entries, 0, "a read with an xattr listing was kept");
    let ((), held) = crate::heap::net_bytes(read_each);
    let stats = store.meta_cache_stats();
    assert_eq!(stats.entries, 2000);
    assert!(held > 0 && held as u64 <= stats.bytes, "{held} bytes held, {} weighed", stats.bytes);
    assert!(stats.bytes / stats.entries <= 256, "{} bytes an entry", stats.bytes / stats.entries);
    eprintln!("2000 entries: {held} bytes held, {} weighed", stats.bytes);
    let ((), again) = crate::heap::net_bytes(read_each);
    assert_eq!(store.meta_cache_stats().hits, stats.hits + 2000);
    assert!(again.abs() < 4096, "hits left {again} bytes allocated");
}
