//! Property test: random sequences of commands (writes, zero, truncate, remove, create, xattr,
//! omap, guards, bad crcs), snapshot creation and deletion with index-driven trims, applied to the store
//! and to the in-memory model; after every step the head and every live snapshot of every
//! object must match, and usage/list must agree.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use quarry_types::{CmpOp, ObjectOp, Payload};

use crate::common::*;

const NAMES: [&str; 3] = ["a", "b", "c"];
const LIVE_SNAPS_MAX: usize = 4;

#[derive(Clone, Debug)]
enum OpSpec {
    Write { off: u64, len: usize, seed: u8 },
    WriteFull { len: usize, seed: u8 },
    BadCrcWrite { off: u64 },
    Zero { off: u64, len: u64 },
    Truncate { size: u64 },
    Create { exclusive: bool },
    Remove,
    SetXattr { key: u8, val: u8 },
    RmXattr { key: u8 },
    CmpXattr { key: u8, val: u8 },
    OmapSet { key: u8, val: u8 },
    OmapRm { key: u8 },
    OmapClear,
    OmapHeader { val: u8 },
    AssertExists,
    Read { off: u64, len: u64 },
}

#[derive(Clone, Debug)]
enum Step {
    Cmd { obj: usize, ops: Vec<OpSpec> },
    CreateSnap,
    RemoveSnap { pick: usize, trim: bool },
    TrimAll,
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..6).prop_map(|k| k * 4096),
        0u64..6 * 4096,
        (1u64..6).prop_map(|k| k * 4096 - 1),
    ]
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![(1usize..4).prop_map(|k| k * 4096), 0usize..9000, Just(1usize)]
}

fn op_spec() -> impl Strategy<Value = OpSpec> {
    prop_oneof![
        6 => (offset(), length(), 0u8..6).prop_map(|(off, len, seed)| OpSpec::Write { off, len, seed }),
        2 => (length(), 0u8..6).prop_map(|(len, seed)| OpSpec::WriteFull { len, seed }),
        1 => offset().prop_map(|off| OpSpec::BadCrcWrite { off }),
        2 => (offset(), offset()).prop_map(|(off, len)| OpSpec::Zero { off, len }),
        2 => offset().prop_map(|size| OpSpec::Truncate { size }),
        1 => any::<bool>().prop_map(|exclusive| OpSpec::Create { exclusive }),
        2 => Just(OpSpec::Remove),
        1 => (0u8..3, 0u8..3).prop_map(|(key, val)| OpSpec::SetXattr { key, val }),
        1 => (0u8..3).prop_map(|key| OpSpec::RmXattr { key }),
        1 => (0u8..3, 0u8..3).prop_map(|(key, val)| OpSpec::CmpXattr { key, val }),
        1 => (0u8..3, 0u8..3).prop_map(|(key, val)| OpSpec::OmapSet { key, val }),
        1 => (0u8..3).prop_map(|key| OpSpec::OmapRm { key }),
        1 => Just(OpSpec::OmapClear),
        1 => (0u8..3).prop_map(|val| OpSpec::OmapHeader { val }),
        1 => Just(OpSpec::AssertExists),
        1 => (offset(), offset()).prop_map(|(off, len)| OpSpec::Read { off, len }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0usize..NAMES.len(), prop::collection::vec(op_spec(), 1..4))
            .prop_map(|(obj, ops)| Step::Cmd { obj, ops }),
        2 => Just(Step::CreateSnap),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, trim)| Step::RemoveSnap { pick, trim }),
        1 => Just(Step::TrimAll),
    ]
}

fn to_op(spec: &OpSpec) -> ObjectOp {
    let small = |v: u8| Bytes::from(vec![b'v', v]);
    let key = |k: u8| format!("k{k}");
    match spec {
        OpSpec::Write { off, len, seed } => write(*off, &pattern(*len, *seed)),
        OpSpec::WriteFull { len, seed } => write_full(&pattern(*len, *seed)),
        OpSpec::BadCrcWrite { off } => {
            let mut data = Payload::new(Bytes::from(pattern(5000, 1)));
            data.crc = data.crc.wrapping_add(1);
            ObjectOp::Write { off: *off, data }
        }
        OpSpec::Zero { off, len } => ObjectOp::Zero { off: *off, len: *len },
        OpSpec::Truncate { size } => ObjectOp::Truncate { size: *size },
        OpSpec::Create { exclusive } => ObjectOp::Create { exclusive: *exclusive },
        OpSpec::Remove => ObjectOp::Remove,
        OpSpec::SetXattr { key: k, val } => {
            ObjectOp::SetXattr { name: key(*k), value: small(*val) }
        }
        OpSpec::RmXattr { key: k } => ObjectOp::RmXattr { name: key(*k) },
        OpSpec::CmpXattr { key: k, val } => {
            ObjectOp::CmpXattr { name: key(*k), op: CmpOp::Eq, value: small(*val) }
        }
        OpSpec::OmapSet { key: k, val } => {
            ObjectOp::OmapSetVals { vals: BTreeMap::from([(key(*k), small(*val))]) }
        }
        OpSpec::OmapRm { key: k } => ObjectOp::OmapRmKeys { keys: vec![key(*k)] },
        OpSpec::OmapClear => ObjectOp::OmapClear,
        OpSpec::OmapHeader { val } => ObjectOp::OmapSetHeader { header: small(*val) },
        OpSpec::AssertExists => ObjectOp::AssertExists,
        OpSpec::Read { off, len } => ObjectOp::Read { off: *off, len: *len },
    }
}

/// Trims every removed snapshot to the end, a few objects per step (as the PG's trimmer does).
fn trim_all(store: &quarry_store::Store, model: &mut Model) {
    for snap in std::mem::take(&mut model.removed) {
        while !store.apply_trim(PG, snap, 2, b"trim").expect("apply trim").purged {}
    }
}

fn run(steps: &[Step]) {
    let (_dir, store) = open_temp();
    let mut model = Model::default();
    let names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    for (clock, step) in steps.iter().enumerate() {
        let clock = clock as u64 + 1;
        match step {
            Step::Cmd { obj, ops } => {
                let c = cmd_at(
                    NAMES[*obj],
                    &model.snapc(),
                    (clock, clock as u32),
                    ops.iter().map(to_op).collect(),
                );
                let want = model.apply(&c);
                let got =
                    store.apply(PG, std::slice::from_ref(&c), &clock.to_le_bytes()).expect("apply");
                assert_eq!(got.len(), 1);
                assert_same(&got[0], &want, &format!("reply to command {clock} on {}", c.name));
            }
            Step::CreateSnap => {
                if model.snaps.len() < LIVE_SNAPS_MAX {
                    model.create_snap();
                }
            }
            Step::RemoveSnap { pick, trim } => {
                let live = model.live();
                if !live.is_empty() {
                    model.remove_snap(live[pick % live.len()]);
                    if *trim {
                        trim_all(&store, &mut model);
                    }
                }
            }
            Step::TrimAll => trim_all(&store, &mut model),
        }
        model.verify(&store, &names);
    }
    // Usage counters and listings agree with the model.
    assert!(store.verify_usage().expect("verify usage").is_empty());
    let listed = store.list(PG, None, 100).expect("list").0;
    assert_eq!(listed, model.heads.keys().cloned().collect::<Vec<_>>());
    let usage = store.usage().expect("usage");
    let bytes: u64 = model.heads.values().map(|o| o.data.len() as u64).sum();
    match usage.get(&PG.pool) {
        Some(u) => assert_eq!((u.objects, u.bytes), (model.heads.len() as u64, bytes)),
        None => assert!(model.heads.is_empty() && bytes == 0),
    }
    // Drop every snapshot and trim: only head data may remain.
    for snap in model.live() {
        model.remove_snap(snap);
    }
    trim_all(&store, &mut model);
    model.verify(&store, &names);
    assert_eq!(store.list_all(PG, None, 100).expect("list_all").0, listed);
    for (name, obj) in &model.heads {
        let rows = store.chunk_rows(PG, name).expect("chunk rows");
        let max_rows = (obj.data.len() as u64).div_ceil(4096);
        assert!(
            rows <= max_rows,
            "{name}: {rows} chunk rows for {} bytes after full trim",
            obj.data.len()
        );
        assert_eq!(store.object_versions(PG, name).expect("versions").map(|v| v.len()), Some(1));
    }
}

proptest! {
    // QUARRY_PROPTEST_CASES=5000 for a deeper run; the default keeps `cargo test` quick.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("QUARRY_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_model(steps in prop::collection::vec(step(), 1..40)) {
        run(&steps);
    }
}

/// A long fixed run through the same machinery, so a basic regression shows without proptest.
#[test]
fn fixed_sequence_matches_model() {
    let mut steps = Vec::new();
    for i in 0..60usize {
        let seed = (i % 5) as u8 + 1;
        steps.push(Step::Cmd {
            obj: i % 3,
            ops: vec![OpSpec::Write { off: (i as u64 * 1234) % 20000, len: 3000 + i * 97, seed }],
        });
        if i % 7 == 0 {
            steps.push(Step::CreateSnap);
        }
        if i % 11 == 0 {
            steps.push(Step::Cmd {
                obj: (i + 1) % 3,
                ops: vec![OpSpec::Truncate { size: (i as u64 * 311) % 9000 }],
            });
        }
        if i % 13 == 0 {
            steps.push(Step::Cmd { obj: (i + 2) % 3, ops: vec![OpSpec::Remove] });
            steps.push(Step::RemoveSnap { pick: i, trim: true });
        }
    }
    run(&steps);
}
