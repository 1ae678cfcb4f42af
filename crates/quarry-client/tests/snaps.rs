//! Cluster-owned snapshots through a real cluster: pool snapshots (the OSD applies the pool's
//! snap context to every write), self-managed snapshots (ids from the monitor), Ceph's mode
//! rule, rollback, the OSDs' background trimming of removed snapshots (replicated, driven by
//! the snapshot index), what a `profile rbd` client can and cannot do to other snapshots, and
//! a seeded random sequence checked against a model.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quarry_client::{ErrorCode, IoCtx, MonCommand, ObjectOp, Rados, SnapContext, SNAP_HEAD};
use quarry_types::{PgId, SnapId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use quarry_testkit::Cluster;

fn code(e: quarry_client::ClientError) -> ErrorCode {
    e.errno()
}

async fn make_pool(rados: &Rados, name: &str, size: u32) -> IoCtx {
    let cmd = MonCommand::PoolCreate { name: name.into(), pg_num: Some(8), size: Some(size) };
    rados.command(cmd).await.unwrap();
    rados.ioctx(name).await.unwrap()
}

async fn read_at(io: &IoCtx, object: &str, snap: SnapId) -> Result<Bytes, ErrorCode> {
    let mut io = io.clone();
    io.set_read_snap(snap);
    io.read(object, 0, 0).await.map_err(code)
}

fn pg_of(io: &IoCtx, object: &str) -> PgId {
    let pool = io.pool_id();
    let pg_num = io.rados().map().pools[&pool].pg_num;
    PgId { pool, seed: quarry_placement::pg_of(object, pg_num) }
}

/// Waits until every OSD holding a PG of `io`'s pool has purged every snapshot in `snaps`.
async fn wait_purged(cluster: &Cluster, io: &IoCtx, snaps: &BTreeSet<SnapId>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut missing = Vec::new();
        for id in cluster.osd_ids() {
            let osd = cluster.osd(id);
            let store = osd.store();
            for status in osd.pgs().iter().filter(|s| s.pg.pool == io.pool_id()) {
                let purged: BTreeSet<SnapId> =
                    store.purged_snaps(status.pg).unwrap().into_iter().collect();
                if !snaps.is_subset(&purged) {
                    missing.push((id, status.pg));
                }
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "snapshots {snaps:?} not purged on {missing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Version count of `object` on every OSD that stores it.
fn versions(cluster: &Cluster, io: &IoCtx, object: &str) -> Vec<usize> {
    let pg = pg_of(io, object);
    let mut out = Vec::new();
    for id in cluster.osd_ids() {
        let osd = cluster.osd(id);
        if osd.pgs().iter().any(|s| s.pg == pg) {
            let v = osd.store().object_versions(pg, object).unwrap();
            out.push(v.map_or(0, |v| v.len()));
        }
    }
    out
}

/// Goal: pool snapshots as `rados mksnap` users know them. Method: a replicated pool; write,
/// snapshot, overwrite with a client that sends no snap context (the OSD uses the pool's);
/// read at the snapshot; the mode rule both ways; rollback; remove the snapshot and wait for
/// every replica to trim it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_snapshots_end_to_end() {
    let cluster = Cluster::start().await;
    cluster.logs().allow_raft_churn();
    let rados = cluster.admin().await;
    let io = make_pool(&rados, "data", 2).await;
    io.write_full("o", Bytes::from_static(b"one")).await.unwrap();
    io.snap_create("s1").await.unwrap();
    assert_eq!(code(io.snap_create("s1").await.unwrap_err()), ErrorCode::EEXIST);
    let s1 = io.snap_lookup("s1").unwrap();
    assert_eq!(io.snap_list().unwrap(), vec![s1]);
    assert_eq!(io.snap_info(s1).unwrap().0, "s1");
    assert_eq!(io.snap_context(), &SnapContext::default(), "the client sends no context");
    io.write_full("o", Bytes::from_static(b"two")).await.unwrap();
    io.write_full("new", Bytes::from_static(b"born after s1")).await.unwrap();
    assert_eq!(read_at(&io, "o", s1).await.unwrap(), Bytes::from_static(b"one"));
    assert_eq!(read_at(&io, "new", s1).await, Err(ErrorCode::ENOENT));
    assert_eq!(read_at(&io, "o", SNAP_HEAD).await.unwrap(), Bytes::from_static(b"two"));
    // A pool uses one kind of snapshots.
    assert_eq!(code(io.selfmanaged_snap_create().await.unwrap_err()), ErrorCode::EINVAL);
    let rbd = rados.ioctx("rbd").await.unwrap();
    rbd.selfmanaged_snap_create().await.unwrap();
    assert_eq!(code(rbd.snap_create("x").await.unwrap_err()), ErrorCode::EINVAL);
    // Rollback: the head becomes what s1 sees; a later snapshot keeps the rolled-over head.
    io.snap_create("s2").await.unwrap();
    let s2 = io.snap_lookup("s2").unwrap();
    io.snap_rollback("o", "s1").await.unwrap();
    assert_eq!(io.read("o", 0, 0).await.unwrap(), Bytes::from_static(b"one"));
    assert_eq!(read_at(&io, "o", s2).await.unwrap(), Bytes::from_static(b"two"));
    io.snap_rollback("new", "s1").await.unwrap();
    assert_eq!(code(io.stat("new").await.unwrap_err()), ErrorCode::ENOENT);
    assert_eq!(code(io.snap_rollback("new", "s1").await.unwrap_err()), ErrorCode::ENOENT);
    assert_eq!(code(io.snap_rollback("o", "nope").await.unwrap_err()), ErrorCode::ENOENT);
    // Removing both: every replica trims, back to one version per object.
    io.snap_remove("s1").await.unwrap();
    io.snap_remove("s2").await.unwrap();
    assert_eq!(code(io.snap_remove("s1").await.unwrap_err()), ErrorCode::ENOENT);
    assert!(io.snap_list().unwrap().is_empty());
    wait_purged(&cluster, &io, &BTreeSet::from([s1, s2])).await;
    assert_eq!(versions(&cluster, &io, "o"), vec![1, 1]);
    assert_eq!(versions(&cluster, &io, "new"), vec![0, 0], "nothing left of it");
    assert_eq!(io.read("o", 0, 0).await.unwrap(), Bytes::from_static(b"one"));
    rados.shutdown().await;
    cluster.shutdown().await;
}

/// Goal: the scenario through the cluster, with a `profile rbd` client: snapshots 5
/// and 7 of an image (self-managed), versions for 0, 5 and 7. The client cannot destroy what
/// snapshot 7 needs: the old client trim op is refused, a stale context writes the head only,
/// pool snapshot administration is refused; removing snapshot 5 makes the OSDs trim version
/// 0 only, and snapshot 7 still reads version 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_rbd_client_cannot_remove_data_other_snapshots_need() {
    let cluster = Cluster::builder()
        .user("qemu", &[("mon", "profile rbd"), ("osd", "profile rbd pool=rbd")])
        .start()
        .await;

    let rados = Rados::connect(cluster.user_config("qemu")).await.unwrap();
    let mut io = rados.ioctx("rbd").await.unwrap();
    io.write_full("img", Bytes::from_static(b"version 0")).await.unwrap();
    let s5 = io.selfmanaged_snap_create().await.unwrap();
    io.set_snap_context(SnapContext { seq: s5, snaps: vec![s5] }).unwrap();
    io.write_full("img", Bytes::from_static(b"version 5")).await.unwrap();
    let s7 = io.selfmanaged_snap_create().await.unwrap();
    io.set_snap_context(SnapContext { seq: s7, snaps: vec![s7, s5] }).unwrap();
    io.write_full("img", Bytes::from_static(b"version 7")).await.unwrap();
    let check = |io: &IoCtx| {
        let io = io.clone();
        async move {
            assert_eq!(read_at(&io, "img", s7).await.unwrap(), Bytes::from_static(b"version 5"));
        }
    };
    check(&io).await;
    // The retired client trim, with a stale list: refused, nothing changes.
    let trim = vec![ObjectOp::SnapTrimRetired { live_snaps: vec![s5] }];
    assert_eq!(code(io.exec("img", trim).await.unwrap_err()), ErrorCode::EOPNOTSUPP);
    check(&io).await;
    assert_eq!(read_at(&io, "img", s5).await.unwrap(), Bytes::from_static(b"version 0"));
    // A stale context (before snapshot 7): the head changes, the snapshots do not.
    let mut stale = io.clone();
    stale.set_snap_context(SnapContext { seq: s5, snaps: vec![s5] }).unwrap();
    stale.write_full("img", Bytes::from_static(b"stale writer")).await.unwrap();
    check(&io).await;
    assert_eq!(read_at(&io, "img", s5).await.unwrap(), Bytes::from_static(b"version 0"));
    // Pool snapshots are pool administration.
    let denied = io.snap_create("mine").await.unwrap_err();
    assert!(matches!(denied.errno(), ErrorCode::EACCES | ErrorCode::EPERM), "{denied}");
    // Removing snapshot 5 (the image's own, as `rbd snap rm`): the OSDs trim version 0 only.
    io.selfmanaged_snap_remove(s5).await.unwrap();
    wait_purged(&cluster, &io, &BTreeSet::from([s5])).await;
    check(&io).await;
    assert_eq!(versions(&cluster, &io, "img"), vec![2]);
    assert_eq!(read_at(&io, "img", SNAP_HEAD).await.unwrap(), Bytes::from_static(b"stale writer"));
    rados.shutdown().await;
    cluster.shutdown().await;
}

/// Goal: trimming a snapshot touches only the objects that keep versions for it, not the
/// pool. Method: 400 objects, a snapshot, 10 of them written after it; remove it and wait for
/// the trim; the OSDs' trim counters add up to 10 objects visited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_visits_only_objects_with_versions_for_the_snapshot() {
    let cluster = Cluster::start().await;
    let rados = cluster.admin().await;
    let io = make_pool(&rados, "many", 1).await;
    let names: Vec<String> = (0..400).map(|i| format!("obj{i:04}")).collect();
    let mut writers = tokio::task::JoinSet::new();
    for chunk in names.chunks(50) {
        let (io, chunk) = (io.clone(), chunk.to_vec());
        writers.spawn(async move {
            for name in chunk {
                io.write_full(&name, Bytes::from_static(b"x")).await.unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    io.snap_create("snap").await.unwrap();
    let snap = io.snap_lookup("snap").unwrap();
    for name in names.iter().step_by(40) {
        io.write_full(name, Bytes::from_static(b"after")).await.unwrap();
    }
    let visits = |cluster: &Cluster| -> u64 {
        cluster.osd_ids().iter().map(|&id| cluster.osd(id).store().snap_trim_visits()).sum()
    };
    let before = visits(&cluster);
    io.snap_remove("snap").await.unwrap();
    wait_purged(&cluster, &io, &BTreeSet::from([snap])).await;
    assert_eq!(visits(&cluster) - before, 10);
    for name in names.iter().step_by(40) {
        assert_eq!(versions(&cluster, &io, name), vec![1]);
    }
    rados.shutdown().await;
    cluster.shutdown().await;
}

/// One object of the model: states in write order with the seq each was written at; a
/// snapshot `S` sees the last state written at a seq below `S` (Ceph's rule, the effective
/// seq being the larger of the writer's and the object's).
#[derive(Default)]
struct MObject {
    history: Vec<(SnapId, Option<Vec<u8>>)>,
    last_seq: SnapId,
}

impl MObject {
    fn head(&self) -> Option<&Vec<u8>> {
        self.history.last().and_then(|(_, s)| s.as_ref())
    }

    fn at(&self, snap: SnapId) -> Option<&Vec<u8>> {
        self.history.iter().rev().find(|(seq, _)| *seq < snap).and_then(|(_, s)| s.as_ref())
    }
}

#[derive(Default)]
struct MImage {
    seq: SnapId,
    live: BTreeSet<SnapId>,
    removed: BTreeSet<SnapId>,
    history: Vec<SnapContext>,
}

impl MImage {
    fn snapc(&self) -> SnapContext {
        SnapContext { seq: self.seq, snaps: self.live.iter().rev().copied().collect() }
    }
}

const OBJECTS: [[&str; 2]; 2] = [["a0", "a1"], ["b0", "b1"]];

async fn verify(io: &IoCtx, images: &[MImage], objects: &BTreeMap<&str, MObject>, step: usize) {
    for (i, image) in images.iter().enumerate() {
        for name in OBJECTS[i] {
            let obj = &objects[name];
            let want = obj.head().map(|d| Bytes::from(d.clone())).ok_or(ErrorCode::ENOENT);
            assert_eq!(read_at(io, name, SNAP_HEAD).await, want, "step {step}: head of {name}");
            for &snap in &image.live {
                let want = obj.at(snap).map(|d| Bytes::from(d.clone())).ok_or(ErrorCode::ENOENT);
                assert_eq!(read_at(io, name, snap).await, want, "step {step}: {name} at {snap}");
            }
        }
    }
}

/// Goal: self-managed snapshots of two images in one replicated pool (ids from the monitor),
/// writes with current and stale contexts (older contexts, contexts naming removed
/// snapshots), removals trimmed by the OSDs in the background while writes go on: after
/// every step the head and every live snapshot of every object read what the model says;
/// at the end, with every snapshot removed and trimmed, each replica keeps one version per
/// object. Seeded (QUARRY_SNAP_SEED to replay another sequence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_snapshot_sequences_match_the_model() {
    let seed: u64 =
        std::env::var("QUARRY_SNAP_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster = Cluster::start().await;
    cluster.logs().allow_raft_churn();
    let rados = cluster.admin().await;
    let base = make_pool(&rados, "images", 2).await;
    let mut images: Vec<MImage> = vec![MImage::default(), MImage::default()];
    let mut objects: BTreeMap<&str, MObject> =
        OBJECTS.iter().flatten().map(|n| (*n, MObject::default())).collect();
    for step in 0..120 {
        let i = rng.gen_range(0..2);
        match rng.gen_range(0..10) {
            0 | 1 => {
                let current = images[i].snapc();
                let snap = base.selfmanaged_snap_create().await.unwrap();
                let image = &mut images[i];
                image.history.push(current);
                image.seq = snap;
                image.live.insert(snap);
            }
            2 => {
                let image = &mut images[i];
                let live: Vec<SnapId> = image.live.iter().copied().collect();
                if live.is_empty() {
                    continue;
                }
                let snap = live[rng.gen_range(0..live.len())];
                image.history.push(image.snapc());
                image.live.remove(&snap);
                image.removed.insert(snap);
                base.selfmanaged_snap_remove(snap).await.unwrap();
            }
            _ => {
                let name = OBJECTS[i][rng.gen_range(0..2)];
                let image = &images[i];
                let object = &objects[name];
                let newest = image.live.last().copied().unwrap_or(0);
                let may_be_stale = object.head().is_some() && object.last_seq >= newest;
                let mut snapc = if may_be_stale && !image.history.is_empty() && rng.gen_bool(0.4) {
                    image.history[rng.gen_range(0..image.history.len())].clone()
                } else {
                    image.snapc()
                };
                if rng.gen_bool(0.3) {
                    snapc.snaps.extend(image.removed.iter().filter(|&&s| s <= snapc.seq));
                    snapc.snaps.sort_unstable_by(|a, b| b.cmp(a));
                    snapc.snaps.dedup();
                }
                let mut io = base.clone();
                io.set_snap_context(snapc.clone()).unwrap();
                let head = object.head().cloned();
                let had_head = head.is_some();
                let (result, state) = match rng.gen_range(0..5) {
                    0 | 1 => {
                        let off = rng.gen_range(0..3 * 4096u64);
                        let data: Vec<u8> =
                            (0..rng.gen_range(1..6000)).map(|_| rng.gen()).collect();
                        let mut state = head.unwrap_or_default();
                        let end = off as usize + data.len();
                        if state.len() < end {
                            state.resize(end, 0);
                        }
                        state[off as usize..end].copy_from_slice(&data);
                        (io.write(name, off, Bytes::from(data)).await, Some(state))
                    }
                    2 => {
                        let data: Vec<u8> =
                            (0..rng.gen_range(0..9000)).map(|_| rng.gen()).collect();
                        (io.write_full(name, Bytes::from(data.clone())).await, Some(data))
                    }
                    3 => (io.remove(name).await, None),
                    _ => {
                        let live: Vec<SnapId> = image.live.iter().copied().collect();
                        if live.is_empty() {
                            continue;
                        }
                        let snap = live[rng.gen_range(0..live.len())];
                        let state = object.at(snap).cloned();
                        (io.selfmanaged_snap_rollback(name, snap).await, state)
                    }
                };
                let expect_enoent = state.is_none() && !had_head;
                match result {
                    Ok(()) => {
                        assert!(!expect_enoent, "step {step}: {name} should be ENOENT");
                        let object = objects.get_mut(name).unwrap();
                        let seq = snapc.seq.max(object.last_seq);
                        object.history.push((seq, state));
                        object.last_seq = seq;
                    }
                    Err(e) => {
                        assert!(expect_enoent, "step {step}: {name}: {e}");
                        assert_eq!(code(e), ErrorCode::ENOENT);
                    }
                }
            }
        }
        verify(&base, &images, &objects, step).await;
    }
    let mut all = BTreeSet::new();
    for image in &mut images {
        for snap in std::mem::take(&mut image.live) {
            base.selfmanaged_snap_remove(snap).await.unwrap();
        }
        all.extend(image.removed.iter().copied());
    }
    let removed: BTreeSet<SnapId> = rados.map().pools[&base.pool_id()].removed_snaps.clone();
    wait_purged(&cluster, &base, &removed).await;
    assert!(all.is_subset(&removed));
    verify(&base, &images, &objects, usize::MAX).await;
    for name in OBJECTS.iter().flatten() {
        let want = usize::from(objects[name].head().is_some());
        assert_eq!(versions(&cluster, &base, name), vec![want, want], "{name}");
    }
    rados.shutdown().await;
    cluster.shutdown().await;
}
