//! Golden bytes of what a PG persists: [`PgCommand`] as the WAL stores it (one value per
//! `ObjectOp` variant, so every op's layout is pinned) and [`PgState`] as the store keeps it,
//! compared with `tests/golden/pg_v1.hex`. A failure means a persisted format changed: bump
//! `PG_COMMAND_VERSION` / `PG_STATE_VERSION` and keep decoding the old version (the upgrade
//! rule in `quarry_persist`); never edit the golden file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use bytes::Bytes;
use openraft::{BasicNode, CommittedLeaderId, LogId, Membership, StoredMembership};
use quarry_persist::{golden, DecodeError};
use quarry_raftlog::EntryCodec;
use quarry_types::{CmpOp, ObjectOp, Payload, SnapContext};

use super::{PgCommand, PgRaftConfig, PgState};

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/pg_v1.hex")
}

/// One op of every variant, with distinct field values (so swapped fields change the bytes).
fn every_op() -> Vec<(&'static str, ObjectOp)> {
    let b = |s: &'static [u8]| Bytes::from_static(s);
    vec![
        ("read", ObjectOp::Read { off: 1, len: 2 }),
        ("stat", ObjectOp::Stat),
        ("assert_exists", ObjectOp::AssertExists),
        ("get_xattr", ObjectOp::GetXattr { name: "x".into() }),
        ("get_xattrs", ObjectOp::GetXattrs),
        ("cmp_xattr", ObjectOp::CmpXattr { name: "n".into(), op: CmpOp::Gte, value: b(b"v") }),
        (
            "omap_get_vals",
            ObjectOp::OmapGetVals { start_after: "a".into(), prefix: "p".into(), max: 3 },
        ),
        ("omap_get_keys", ObjectOp::OmapGetKeys { start_after: "k".into(), max: 4 }),
        (
            "omap_get_vals_by_keys",
            ObjectOp::OmapGetValsByKeys { keys: vec!["k1".into(), "k2".into()] },
        ),
        ("omap_get_header", ObjectOp::OmapGetHeader),
        ("omap_cmp", ObjectOp::OmapCmp { key: "c".into(), op: CmpOp::Lt, value: b(b"w") }),
        ("write", ObjectOp::Write { off: 5, data: Payload::new(b(b"data")) }),
        ("write_full", ObjectOp::WriteFull { data: Payload::new(b(b"full")) }),
        ("zero", ObjectOp::Zero { off: 6, len: 7 }),
        ("truncate", ObjectOp::Truncate { size: 8 }),
        ("create", ObjectOp::Create { exclusive: true }),
        ("remove", ObjectOp::Remove),
        ("set_xattr", ObjectOp::SetXattr { name: "s".into(), value: b(b"sv") }),
        ("rm_xattr", ObjectOp::RmXattr { name: "r".into() }),
        (
            "omap_set_vals",
            ObjectOp::OmapSetVals {
                vals: BTreeMap::from([("a".to_string(), b(b"1")), ("b".to_string(), b(b"2"))]),
            },
        ),
        ("omap_rm_keys", ObjectOp::OmapRmKeys { keys: vec!["x".into()] }),
        ("omap_clear", ObjectOp::OmapClear),
        ("omap_set_header", ObjectOp::OmapSetHeader { header: b(b"h") }),
        ("snap_trim", ObjectOp::SnapTrim { live_snaps: vec![9, 10] }),
    ]
}

fn command(ops: Vec<ObjectOp>) -> PgCommand {
    PgCommand {
        name: "rbd_data.1".into(),
        snapc: SnapContext { seq: 12, snaps: vec![12, 11] },
        ops,
        mtime: (0x1122_3344_5566_7788, 0x99aa_bbcc),
    }
}

fn commands() -> Vec<(String, PgCommand)> {
    let mut all = vec![("command_no_ops".to_string(), command(Vec::new()))];
    for (name, op) in every_op() {
        all.push((format!("command_op_{name}"), command(vec![op])));
    }
    all
}

fn states() -> Vec<(&'static str, PgState)> {
    let log_id = |term, node, index| LogId::new(CommittedLeaderId::new(term, node), index);
    let nodes = BTreeMap::from([
        (1u64, BasicNode::new("10.0.0.1:6800")),
        (2u64, BasicNode::new("10.0.0.2:6800")),
    ]);
    let membership = Membership::new(vec![BTreeSet::from([1u64, 2])], nodes);
    vec![
        ("pg_state_empty", PgState::default()),
        (
            "pg_state",
            PgState {
                applied: Some(log_id(3, 1, 40)),
                membership: StoredMembership::new(Some(log_id(2, 1, 5)), membership),
            },
        ),
    ]
}

fn encoded() -> Vec<(String, Vec<u8>)> {
    let mut values = Vec::new();
    for (name, command) in commands() {
        let mut out = Vec::new();
        PgRaftConfig::encode_data(&command, &mut out);
        values.push((name, out));
    }
    for (name, state) in states() {
        values.push((name.to_string(), state.encode()));
    }
    values
}

#[test]
fn every_op_variant_is_covered() {
    // `every_op` must list each variant once: adding a variant to ObjectOp without adding it
    // here fails this match at compile time.
    for (_, op) in every_op() {
        match op {
            ObjectOp::Read { .. }
            | ObjectOp::Stat
            | ObjectOp::AssertExists
            | ObjectOp::GetXattr { .. }
            | ObjectOp::GetXattrs
            | ObjectOp::CmpXattr { .. }
            | ObjectOp::OmapGetVals { .. }
            | ObjectOp::OmapGetKeys { .. }
            | ObjectOp::OmapGetValsByKeys { .. }
            | ObjectOp::OmapGetHeader
            | ObjectOp::OmapCmp { .. }
            | ObjectOp::Write { .. }
            | ObjectOp::WriteFull { .. }
            | ObjectOp::Zero { .. }
            | ObjectOp::Truncate { .. }
            | ObjectOp::Create { .. }
            | ObjectOp::Remove
            | ObjectOp::SetXattr { .. }
            | ObjectOp::RmXattr { .. }
            | ObjectOp::OmapSetVals { .. }
            | ObjectOp::OmapRmKeys { .. }
            | ObjectOp::OmapClear
            | ObjectOp::OmapSetHeader { .. }
            | ObjectOp::SnapTrim { .. } => {}
            // Appended after version 1's golden file was made: pinned with the next
            // PgCommand version's file (a new value in a v1 file would be an edit).
            ObjectOp::Call { .. } => {}
        }
    }
    let names: BTreeSet<&str> = every_op().iter().map(|(name, _)| *name).collect();
    assert_eq!(names.len(), every_op().len());
}

#[test]
fn pg_bytes_are_pinned() {
    let header = "PgCommand version 1 (WAL entry data) and PgState version 1 (store pg_state), \
                  quarry-osd.\nGenerated once; never edit: a change of bytes needs a new version.";
    let values = encoded();
    let refs: Vec<(&str, Vec<u8>)> =
        values.iter().map(|(name, bytes)| (name.as_str(), bytes.clone())).collect();
    golden::check(&golden_path(), header, &refs);
}

#[test]
fn golden_bytes_decode_to_the_same_values() {
    let text = std::fs::read_to_string(golden_path()).unwrap();
    let golden: BTreeMap<String, Vec<u8>> = golden::parse(&text).into_iter().collect();
    for (name, command) in commands() {
        assert_eq!(PgRaftConfig::decode_data(&golden[&name]).unwrap(), command, "{name}");
    }
    for (name, state) in states() {
        assert_eq!(PgState::decode(&golden[name]).unwrap(), state, "{name}");
    }
}

#[test]
fn newer_versions_are_format_too_new() {
    let mut out = Vec::new();
    PgRaftConfig::encode_data(&command(Vec::new()), &mut out);
    out[0] = 2;
    assert!(matches!(PgRaftConfig::decode_data(&out), Err(DecodeError::TooNew(_))));
    let mut state = PgState::default().encode();
    state[0] = 2;
    assert!(matches!(PgState::decode(&state), Err(DecodeError::TooNew(_))));
}
