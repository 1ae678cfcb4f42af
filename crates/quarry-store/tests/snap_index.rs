//! Cluster-owned snapshot trimming at the store level: the snapshot index written by apply,
//! `apply_trim` driven by it (never a scan), purged snapshots filtered out of later contexts,
//! rollback, export/import of the index, and a property test of self-managed snapshots of two
//! images with stale contexts, removals and background trim steps against a model.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use quarry_store::Store;
use quarry_types::{ErrorCode, ObjectOp, OpReply, SnapContext, SnapId, SNAP_HEAD};

use crate::common::*;

fn ctx(seq: SnapId, snaps: &[SnapId]) -> SnapContext {
    SnapContext { seq, snaps: snaps.to_vec() }
}

fn put(store: &Store, name: &str, c: &SnapContext, data: &[u8]) {
    assert_ok(&apply1(store, cmd_at(name, c, (1, 0), vec![write_full(data)])));
}

fn trim_to_end(store: &Store, snap: SnapId) -> u64 {
    let mut visited = 0;
    loop {
        let step = store.apply_trim(PG, snap, 3, b"trim").unwrap();
        visited += step.visited;
        if step.purged {
            return visited;
        }
    }
}

/// Goal: the scenario. Snapshots 5 and 7, versions tagged 0, 5 and 7: removing
/// either snapshot keeps what the other one reads (there is no client trim any more; the
/// index says which snapshot needs which version). Method: build the versions, remove 5 and
/// trim it, read at 7; rebuild, remove 7 and trim it, read at 5.
#[test]
fn snapshots_5_and_7_keep_their_data_whichever_is_removed() {
    for removed in [5, 7] {
        let (_dir, store) = open_temp();
        put(&store, "o", &ctx(0, &[]), b"version 0");
        put(&store, "o", &ctx(5, &[5]), b"version 5");
        put(&store, "o", &ctx(7, &[7, 5]), b"version 7");
        let tags: Vec<u64> =
            store.object_versions(PG, "o").unwrap().unwrap().iter().map(|v| v.tag).collect();
        assert_eq!(tags, vec![0, 5, 7]);
        assert_eq!(store.indexed_snaps(PG, "o").unwrap(), vec![5, 7]);
        assert_eq!(trim_to_end(&store, removed), 1);
        assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(b"version 7".to_vec()));
        if removed == 5 {
            assert_eq!(read_all(&store, "o", 7), Ok(b"version 5".to_vec()));
        } else {
            assert_eq!(read_all(&store, "o", 5), Ok(b"version 0".to_vec()));
        }
        assert_eq!(store.object_versions(PG, "o").unwrap().unwrap().len(), 2);
        // The retired client trim changes nothing.
        let retired = ObjectOp::SnapTrimRetired { live_snaps: vec![] };
        assert_failed(&apply1(&store, cmd("o", vec![retired])), 0, ErrorCode::EOPNOTSUPP);
        assert_eq!(store.object_versions(PG, "o").unwrap().unwrap().len(), 2);
    }
}

/// Goal: a writer with a stale context (a lower seq than the object's newest version) writes
/// the head in place and never changes what a newer snapshot reads. Method: versions for
/// snapshots 5 and 7, then a write with context {5, [5]}.
#[test]
fn a_stale_context_does_not_break_a_newer_snapshot() {
    let (_dir, store) = open_temp();
    put(&store, "o", &ctx(0, &[]), b"v0");
    put(&store, "o", &ctx(7, &[7, 5]), b"v7");
    put(&store, "o", &ctx(5, &[5]), b"stale");
    assert_eq!(read_all(&store, "o", 5), Ok(b"v0".to_vec()));
    assert_eq!(read_all(&store, "o", 7), Ok(b"v0".to_vec()));
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(b"stale".to_vec()));
    assert_eq!(store.object_versions(PG, "o").unwrap().unwrap().len(), 2);
}

/// Goal: once a PG purged a snapshot, a context still naming it records nothing for it.
/// Method: trim snapshot 3 to the end, then write with {4, [4, 3]} and {5, [3]}.
#[test]
fn purged_snapshots_are_filtered_from_contexts() {
    let (_dir, store) = open_temp();
    put(&store, "o", &ctx(0, &[]), b"a");
    assert_eq!(trim_to_end(&store, 3), 0);
    assert_eq!(store.purged_snaps(PG).unwrap(), vec![3]);
    put(&store, "o", &ctx(5, &[3]), b"b");
    assert_eq!(store.object_versions(PG, "o").unwrap().unwrap().len(), 1, "no version for 3");
    put(&store, "o", &ctx(6, &[6, 3]), b"c");
    assert_eq!(store.indexed_snaps(PG, "o").unwrap(), vec![6]);
    assert_eq!(store.snap_index_len(PG, 3).unwrap(), 0);
}

/// Goal: trimming visits only the objects that keep versions for the snapshot, not the PG.
/// Method: 2000 objects, a snapshot, 10 of them written after it; trim it and count visits
/// (the store's counter and the steps' sum).
#[test]
fn trimming_visits_only_indexed_objects() {
    let (_dir, store) = open_temp();
    let names: Vec<String> = (0..2000).map(|i| format!("obj{i:05}")).collect();
    for chunk in names.chunks(200) {
        let cmds: Vec<_> =
            chunk.iter().map(|n| cmd_at(n, &ctx(0, &[]), (1, 0), vec![write_full(b"x")])).collect();
        store.apply(PG, &cmds, b"fill").unwrap();
    }
    for name in names.iter().step_by(200) {
        put(&store, name, &ctx(1, &[1]), b"after");
    }
    assert_eq!(store.snap_index_len(PG, 1).unwrap(), 10);
    let before = store.snap_trim_visits();
    let mut steps = 0;
    let mut visited = 0;
    loop {
        let step = store.apply_trim(PG, 1, 4, b"trim").unwrap();
        steps += 1;
        visited += step.visited;
        if step.purged {
            break;
        }
    }
    assert_eq!(visited, 10);
    assert_eq!(store.snap_trim_visits() - before, 10);
    assert_eq!(steps, 3, "4 + 4 + 2 objects");
    for name in names.iter().step_by(200) {
        assert_eq!(store.object_versions(PG, name).unwrap().unwrap().len(), 1);
        assert_eq!(read_all(&store, name, SNAP_HEAD), Ok(b"after".to_vec()));
    }
}

/// Goal: rollback semantics. The head becomes what the snapshot sees and the replaced head is
/// kept for newer snapshots; a snapshot that does not see the object removes the head; with
/// neither, ENOENT.
#[test]
fn rollback_restores_a_snapshot_and_keeps_newer_ones() {
    let (_dir, store) = open_temp();
    let big = pattern(3 * 4096 + 100, 4);
    put(&store, "o", &ctx(1, &[]), &big);
    put(&store, "o", &ctx(2, &[2]), b"after 2");
    let rollback = |c: &SnapContext, snap| {
        apply1(&store, cmd_at("o", c, (9, 0), vec![ObjectOp::Rollback { snap }]))
    };
    assert_ok(&rollback(&ctx(3, &[3, 2]), 2));
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Ok(big.clone()));
    assert_eq!(read_all(&store, "o", 3), Ok(b"after 2".to_vec()));
    assert_eq!(read_all(&store, "o", 2), Ok(big.clone()));
    // Snapshot 1 was taken before the object existed: rollback removes the head.
    assert_ok(&rollback(&ctx(3, &[3, 2]), 1));
    assert_eq!(read_all(&store, "o", SNAP_HEAD), Err(ErrorCode::ENOENT));
    assert_failed(&rollback(&ctx(3, &[3, 2]), 1), 0, ErrorCode::ENOENT);
    assert_failed(
        &apply1(&store, cmd("nothing", vec![ObjectOp::Rollback { snap: 1 }])),
        0,
        ErrorCode::ENOENT,
    );
    assert_eq!(read_all(&store, "o", 2), Ok(big.clone()));
    assert_eq!(read_all(&store, "o", 3), Ok(b"after 2".to_vec()));
    assert!(store.verify_usage().unwrap().is_empty());
}

/// Goal: a PG export carries the snapshot index and the purged snapshots, so a replica built
/// from a Raft snapshot trims the same way. Method: export, import elsewhere, compare, trim.
#[test]
fn export_and_import_carry_the_index() {
    let (_dir, store) = open_temp();
    put(&store, "a", &ctx(0, &[]), b"a0");
    put(&store, "a", &ctx(2, &[2]), b"a2");
    put(&store, "b", &ctx(0, &[]), b"b0");
    trim_to_end(&store, 1);
    let mut stream = Vec::new();
    store.export_pg(PG, &mut stream).unwrap();
    let (_dir2, target) = open_temp();
    target.import_pg(PG, &mut stream.as_slice()).unwrap();
    assert_eq!(target.purged_snaps(PG).unwrap(), vec![1]);
    assert_eq!(target.indexed_snaps(PG, "a").unwrap(), vec![2]);
    assert_eq!(target.snap_index_len(PG, 2).unwrap(), 1);
    assert_eq!(trim_to_end(&target, 2), 1);
    assert_eq!(target.object_versions(PG, "a").unwrap().unwrap().len(), 1);
    // Importing over a PG replaces its index too.
    target.import_pg(PG, &mut stream.as_slice()).unwrap();
    assert_eq!(target.snap_index_len(PG, 2).unwrap(), 1);
    target.remove_pg(PG).unwrap();
    assert_eq!(target.snap_index_len(PG, 2).unwrap(), 0);
    assert!(target.purged_snaps(PG).unwrap().is_empty());
}

// ---- property test -------------------------------------------------------------------------

/// Objects of image `i` are `IMAGE_OBJECTS[i]`; snapshot ids come from one pool-wide counter,
/// as the monitor allocates them, but each image's contexts name only its own snapshots.
const IMAGE_OBJECTS: [[&str; 2]; 2] = [["a0", "a1"], ["b0", "b1"]];

#[derive(Clone, Debug)]
enum Op {
    Write { off: u64, len: usize, seed: u8 },
    WriteFull { len: usize, seed: u8 },
    Truncate { size: u64 },
    Remove,
    Rollback { pick: usize },
}

#[derive(Clone, Debug)]
enum Step {
    Cmd { image: usize, obj: usize, op: Op, stale: Option<usize>, with_removed: bool },
    CreateSnap { image: usize },
    RemoveSnap { image: usize, pick: usize },
    Trim { pick: usize, max: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u64..5 * 4096, 1usize..9000, 1u8..7).prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        2 => (0usize..9000, 1u8..7).prop_map(|(len, seed)| Op::WriteFull { len, seed }),
        1 => (0u64..5 * 4096).prop_map(|size| Op::Truncate { size }),
        1 => Just(Op::Remove),
        2 => any::<usize>().prop_map(|pick| Op::Rollback { pick }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0usize..2, 0usize..2, op(), prop::option::of(any::<usize>()), any::<bool>())
            .prop_map(|(image, obj, op, stale, with_removed)| Step::Cmd { image, obj, op, stale, with_removed }),
        3 => (0usize..2).prop_map(|image| Step::CreateSnap { image }),
        2 => (0usize..2, any::<usize>()).prop_map(|(image, pick)| Step::RemoveSnap { image, pick }),
        3 => (any::<usize>(), 1u32..4).prop_map(|(pick, max)| Step::Trim { pick, max }),
    ]
}

/// One object: its states in write order, each with the seq it was written at (Ceph's rule:
/// the larger of the writer's seq and the newest seq the object was written with). Snapshot
/// `S` sees the last state written at a seq below `S`.
#[derive(Clone, Debug, Default)]
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

#[derive(Clone, Debug, Default)]
struct MImage {
    /// Newest snapshot id this image ever had (its contexts' seq).
    seq: SnapId,
    live: BTreeSet<SnapId>,
    removed: BTreeSet<SnapId>,
    /// Contexts the image's writers used before (a stale writer picks one).
    history: Vec<SnapContext>,
}

impl MImage {
    fn snapc(&self) -> SnapContext {
        SnapContext { seq: self.seq, snaps: self.live.iter().rev().copied().collect() }
    }
}

struct SnapModel {
    seq: SnapId,
    images: [MImage; 2],
    objects: BTreeMap<&'static str, MObject>,
    /// Removed, not yet purged by the store.
    trimming: Vec<SnapId>,
}

fn apply_model(obj: &MObject, image: &MImage, op: &Op) -> Result<Option<Vec<u8>>, ErrorCode> {
    let head = obj.head().cloned();
    Ok(match op {
        Op::Write { off, len, seed } => {
            let mut data = head.unwrap_or_default();
            let end = *off as usize + len;
            if data.len() < end {
                data.resize(end, 0);
            }
            data[*off as usize..end].copy_from_slice(&pattern(*len, *seed));
            Some(data)
        }
        Op::WriteFull { len, seed } => Some(pattern(*len, *seed)),
        Op::Truncate { size } => {
            let mut data = head.unwrap_or_default();
            data.resize(*size as usize, 0);
            Some(data)
        }
        Op::Remove => {
            head.ok_or(ErrorCode::ENOENT)?;
            None
        }
        Op::Rollback { pick } => {
            let live: Vec<SnapId> = image.live.iter().copied().collect();
            let snap = live[pick % live.len()];
            match obj.at(snap) {
                Some(data) => Some(data.clone()),
                None => {
                    head.ok_or(ErrorCode::ENOENT)?;
                    None
                }
            }
        }
    })
}

fn store_op(op: &Op, image: &MImage) -> ObjectOp {
    match op {
        Op::Write { off, len, seed } => write(*off, &pattern(*len, *seed)),
        Op::WriteFull { len, seed } => write_full(&pattern(*len, *seed)),
        Op::Truncate { size } => ObjectOp::Truncate { size: *size },
        Op::Remove => ObjectOp::Remove,
        Op::Rollback { pick } => {
            let live: Vec<SnapId> = image.live.iter().copied().collect();
            ObjectOp::Rollback { snap: live[pick % live.len()] }
        }
    }
}

fn verify(store: &Store, model: &SnapModel, step: usize) {
    for (i, image) in model.images.iter().enumerate() {
        for name in IMAGE_OBJECTS[i] {
            let obj = &model.objects[name];
            let want = obj.head().cloned().ok_or(ErrorCode::ENOENT);
            assert_eq!(read_all(store, name, SNAP_HEAD), want, "step {step}: head of {name}");
            for &snap in &image.live {
                let want = obj.at(snap).cloned().ok_or(ErrorCode::ENOENT);
                assert_eq!(read_all(store, name, snap), want, "step {step}: {name} at {snap}");
            }
        }
    }
}

fn run_model(steps: &[Step]) {
    let (_dir, store) = open_temp();
    let mut model = SnapModel {
        seq: 0,
        images: Default::default(),
        objects: IMAGE_OBJECTS.iter().flatten().map(|n| (*n, MObject::default())).collect(),
        trimming: Vec::new(),
    };
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Cmd { image: i, obj, op, stale, with_removed } => {
                let name = IMAGE_OBJECTS[*i][*obj];
                let image = &model.images[*i];
                if matches!(op, Op::Rollback { .. }) && image.live.is_empty() {
                    continue;
                }
                let object = &model.objects[name];
                // A stale context is one the OSD can recognise as stale: the object was
                // already written at a seq at least its image's newest snapshot (Ceph uses the
                // object's newer seq then). A writer that missed a snapshot no write of the
                // object has seen yet writes "before" it, in Quarry as in Ceph.
                let newest = image.live.last().copied().unwrap_or(0);
                let may_be_stale = object.head().is_some() && object.last_seq >= newest;
                let mut c = match stale {
                    Some(k) if may_be_stale && !image.history.is_empty() => {
                        image.history[k % image.history.len()].clone()
                    }
                    _ => image.snapc(),
                };
                if *with_removed {
                    // A context that still names removed snapshots (purged or not).
                    c.snaps.extend(image.removed.iter().filter(|&&s| s <= c.seq));
                    c.snaps.sort_unstable_by(|a, b| b.cmp(a));
                    c.snaps.dedup();
                }
                let result = apply_model(object, image, op);
                let command = cmd_at(name, &c, (n as u64, 0), vec![store_op(op, image)]);
                let got = apply1(&store, command);
                match result {
                    Ok(state) => {
                        assert!(matches!(got, OpReply::Ok(_)), "step {n}: {got:?}");
                        let object = model.objects.get_mut(name).expect("object");
                        let seq = c.seq.max(object.last_seq);
                        object.history.push((seq, state));
                        object.last_seq = seq;
                    }
                    Err(code) => assert_failed(&got, 0, code),
                }
            }
            Step::CreateSnap { image } => {
                let current = model.images[*image].snapc();
                model.seq += 1;
                let img = &mut model.images[*image];
                img.history.push(current);
                img.seq = model.seq;
                img.live.insert(model.seq);
            }
            Step::RemoveSnap { image, pick } => {
                let img = &mut model.images[*image];
                let live: Vec<SnapId> = img.live.iter().copied().collect();
                if live.is_empty() {
                    continue;
                }
                let snap = live[pick % live.len()];
                img.history.push(img.snapc());
                img.live.remove(&snap);
                img.removed.insert(snap);
                model.trimming.push(snap);
            }
            Step::Trim { pick, max } => {
                if model.trimming.is_empty() {
                    continue;
                }
                let k = pick % model.trimming.len();
                let step = store.apply_trim(PG, model.trimming[k], *max, b"trim").unwrap();
                assert!(step.visited <= u64::from(*max));
                if step.purged {
                    model.trimming.remove(k);
                }
            }
        }
        verify(&store, &model, n);
    }
    // Remove every snapshot and trim to the end: only heads remain, the index is empty.
    for img in &mut model.images {
        model.trimming.extend(std::mem::take(&mut img.live));
    }
    for snap in std::mem::take(&mut model.trimming) {
        trim_to_end(&store, snap);
    }
    for snap in 1..=model.seq {
        assert_eq!(store.snap_index_len(PG, snap).unwrap(), 0, "rows left for {snap}");
    }
    for (name, object) in &model.objects {
        assert_eq!(
            read_all(&store, name, SNAP_HEAD),
            object.head().cloned().ok_or(ErrorCode::ENOENT)
        );
        let versions = store.object_versions(PG, name).unwrap().map_or(0, |v| v.len());
        assert!(versions <= 1, "{name}: {versions} versions after every snapshot was trimmed");
        let rows = store.chunk_rows(PG, name).unwrap();
        let max_rows = object.head().map_or(0, |d| (d.len() as u64).div_ceil(4096));
        assert!(rows <= max_rows, "{name}: {rows} chunk rows, head needs {max_rows}");
    }
    assert!(store.verify_usage().unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("QUARRY_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    /// Goal: self-managed snapshots of two images (ids from one counter), current and stale
    /// contexts (older contexts, contexts naming removed snapshots), removals and background
    /// trim steps of a few objects: the head and every live snapshot of every object read
    /// what the model says after every step, and trimming everything leaves only heads.
    #[test]
    fn snapshots_trims_and_stale_contexts_match_the_model(
        steps in prop::collection::vec(step(), 1..60)
    ) {
        run_model(&steps);
    }
}
