//! Golden bytes of what a PG persists: [`PgCommand`] as the WAL stores it (one value per
//! `ObjectOp` variant, so every op's layout is pinned) and [`PgState`] as the store keeps it,
//! compared with `tests/golden/pg_v1.hex` (version 1 commands, still decoded, and PgState
//! version 1) and `tests/golden/pg_v2.hex` (version 2 commands: with request ids, TrimSnap),
//! `pg_v2_split.hex` (PgState version 2, Split) and `pg_v3_merge.hex` (PgState version 3,
//! Seal, Merge). A failure means a persisted format changed: bump
//! `PG_COMMAND_VERSION` / `PG_STATE_VERSION` and keep decoding the old version (the upgrade
//! rule in `quarry_persist`); never edit the golden file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use bytes::Bytes;
use openraft::{BasicNode, CommittedLeaderId, LogId, Membership, StoredMembership};
use quarry_persist::{golden, DecodeError};
use quarry_raftlog::EntryCodec;
use quarry_types::{CmpOp, ObjectOp, Payload, SnapContext};

use quarry_types::{EntityName, EntityReqId, ReqId};

use super::{ClientCommand, PgCommand, PgCommandV1, PgRaftConfig, PgState, PgStateV1, PgStateV2};

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/pg_v1.hex")
}

fn golden_split_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/pg_v2_split.hex")
}

fn golden_merge_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/pg_v3_merge.hex")
}

fn golden_v2_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/pg_v2.hex")
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
        ("snap_trim", ObjectOp::SnapTrimRetired { live_snaps: vec![9, 10] }),
    ]
}

fn command(ops: Vec<ObjectOp>) -> PgCommandV1 {
    PgCommandV1 {
        name: "rbd_data.1".into(),
        snapc: SnapContext { seq: 12, snaps: vec![12, 11] },
        ops,
        mtime: (0x1122_3344_5566_7788, 0x99aa_bbcc),
    }
}

/// Version 1 commands (encoded as version 1 wrote them).
fn commands() -> Vec<(String, PgCommandV1)> {
    let mut all = vec![("command_no_ops".to_string(), command(Vec::new()))];
    for (name, op) in every_op() {
        all.push((format!("command_op_{name}"), command(vec![op])));
    }
    all
}

fn client(ops: Vec<ObjectOp>, reqid: Option<EntityReqId>) -> PgCommand {
    let v1 = command(ops);
    PgCommand::Client(ClientCommand {
        reqid,
        name: v1.name,
        snapc: v1.snapc,
        ops: v1.ops,
        mtime: v1.mtime,
    })
}

/// Version 2 commands.
fn commands_v2() -> Vec<(String, PgCommand)> {
    let reqid = EntityReqId {
        entity: EntityName::client("qemu"),
        reqid: ReqId { client: 0x0102_0304_0506_0708, tid: 0x1112_1314 },
    };
    let mut all = vec![
        ("client_no_ops".to_string(), client(Vec::new(), None)),
        ("client_reqid".to_string(), client(vec![ObjectOp::Remove], Some(reqid))),
        ("trim_snap".to_string(), PgCommand::TrimSnap { snap: 0x21, max_objects: 0x3344 }),
    ];
    for (name, op) in every_op() {
        all.push((format!("client_op_{name}"), client(vec![op], None)));
    }
    // Appended to ObjectOp after version 1's file: pinned here.
    let call = |origin| ObjectOp::Call {
        class: "lock".into(),
        method: "lock".into(),
        input: Bytes::from_static(b"in"),
        origin,
    };
    all.push(("client_op_call".to_string(), client(vec![call(None)], None)));
    let origin = quarry_types::CallOrigin {
        entity: "client.admin".into(),
        global_id: 0x4123,
        addr: "127.0.0.1:0/16675".into(),
    };
    all.push(("client_op_call_origin".to_string(), client(vec![call(Some(origin))], None)));
    // Appended to ObjectOp after Call (a new line at the end of version 2's file; the bytes
    // of every earlier value are unchanged).
    all.push((
        "client_op_rollback".to_string(),
        client(vec![ObjectOp::Rollback { snap: 13 }], None),
    ));
    // Appended after Rollback (issue 9's compare-and-write), the same way.
    let cmp_ext = ObjectOp::CmpExt { off: 14, data: Bytes::from_static(b"cmp") };
    all.push(("client_op_cmp_ext".to_string(), client(vec![cmp_ext], None)));
    all
}

fn states() -> Vec<(&'static str, PgStateV1)> {
    let log_id = |term, node, index| LogId::new(CommittedLeaderId::new(term, node), index);
    let nodes = BTreeMap::from([
        (1u64, BasicNode::new("10.0.0.1:6800")),
        (2u64, BasicNode::new("10.0.0.2:6800")),
    ]);
    let membership = Membership::new(vec![BTreeSet::from([1u64, 2])], nodes);
    vec![
        ("pg_state_empty", PgStateV1::default()),
        (
            "pg_state",
            PgStateV1 {
                applied: Some(log_id(3, 1, 40)),
                membership: StoredMembership::new(Some(log_id(2, 1, 5)), membership),
            },
        ),
    ]
}

/// PgState version 2 (with `pg_num`), and the `Split` command appended to PgCommand
/// version 2: pinned in `pg_v2_split.hex`.
fn split_values() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, v1) in states() {
        let state =
            PgStateV2 { applied: v1.applied, membership: v1.membership, pg_num: 0x0102_0304 };
        out.push((format!("{name}_v2"), quarry_persist::version::encode(2, &state)));
    }
    let mut bytes = Vec::new();
    PgRaftConfig::encode_data(&PgCommand::Split { pg_num: 0x0506_0708 }, &mut bytes);
    out.push(("split".to_string(), bytes));
    out
}

/// PgState version 3 (with `sealed`), and the `Seal` and `Merge` commands appended to
/// PgCommand version 2: pinned in `pg_v3_merge.hex`.
fn merge_values() -> Vec<(String, Vec<u8>)> {
    let sealed = LogId::new(CommittedLeaderId::new(9, 2), 0x0a0b_0c0d);
    let mut out = Vec::new();
    for (name, v1) in states() {
        let state = PgState {
            applied: v1.applied,
            membership: v1.membership,
            pg_num: 0x0102_0304,
            sealed: Some(sealed),
        };
        out.push((format!("{name}_v3"), state.encode()));
    }
    for (name, command) in merge_commands() {
        let mut bytes = Vec::new();
        PgRaftConfig::encode_data(&command, &mut bytes);
        out.push((name.to_string(), bytes));
    }
    out
}

fn merge_commands() -> Vec<(&'static str, PgCommand)> {
    let sealed = LogId::new(CommittedLeaderId::new(9, 2), 0x0a0b_0c0d);
    vec![("seal", PgCommand::Seal), ("merge", PgCommand::Merge { source: 0x0506_0708, sealed })]
}

fn encoded() -> Vec<(String, Vec<u8>)> {
    let mut values = Vec::new();
    for (name, command) in commands() {
        values.push((name, quarry_persist::version::encode(1, &command)));
    }
    for (name, state) in states() {
        values.push((name.to_string(), quarry_persist::version::encode(1, &state)));
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
            | ObjectOp::SnapTrimRetired { .. } => {}
            // Appended after version 1's golden file was made: pinned in version 2's file
            // (`commands_v2`).
            ObjectOp::Call { .. } | ObjectOp::Rollback { .. } | ObjectOp::CmpExt { .. } => {}
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
    let header = "PgCommand version 2 (WAL entry data: request ids, TrimSnap), quarry-osd.\n\
                  Generated once; never edit: a change of bytes needs a new version.";
    let values: Vec<(String, Vec<u8>)> = commands_v2()
        .into_iter()
        .map(|(name, command)| {
            let mut out = Vec::new();
            PgRaftConfig::encode_data(&command, &mut out);
            (name, out)
        })
        .collect();
    let refs: Vec<(&str, Vec<u8>)> =
        values.iter().map(|(name, bytes)| (name.as_str(), bytes.clone())).collect();
    golden::check(&golden_v2_path(), header, &refs);
    let header = "PgState version 2 (store pg_state with pg_num) and PgCommand::Split (appended \
                  to version 2), quarry-osd.\n\
                  Generated once; never edit: a change of bytes needs a new version.";
    let values = split_values();
    let refs: Vec<(&str, Vec<u8>)> =
        values.iter().map(|(name, bytes)| (name.as_str(), bytes.clone())).collect();
    golden::check(&golden_split_path(), header, &refs);
    let header = "PgState version 3 (store pg_state with the merge seal) and PgCommand::Seal, \
                  PgCommand::Merge (appended to version 2), quarry-osd.\n\
                  Generated once; never edit: a change of bytes needs a new version.";
    let values = merge_values();
    let refs: Vec<(&str, Vec<u8>)> =
        values.iter().map(|(name, bytes)| (name.as_str(), bytes.clone())).collect();
    golden::check(&golden_merge_path(), header, &refs);
}

#[test]
fn golden_bytes_decode_to_the_same_values() {
    let text = std::fs::read_to_string(golden_path()).unwrap();
    let golden: BTreeMap<String, Vec<u8>> = golden::parse(&text).into_iter().collect();
    for (name, command) in commands() {
        // Version 1 entries decode as client commands without a request id.
        let want = PgCommand::from(command);
        assert_eq!(PgRaftConfig::decode_data(&golden[&name]).unwrap(), want, "{name}");
    }
    for (name, state) in states() {
        // Version 1 states decode with pg_num 0 (not recorded).
        let want = PgState {
            applied: state.applied,
            membership: state.membership,
            pg_num: 0,
            sealed: None,
        };
        assert_eq!(PgState::decode(&golden[name]).unwrap(), want, "{name}");
    }
    let text = std::fs::read_to_string(golden_v2_path()).unwrap();
    let golden: BTreeMap<String, Vec<u8>> = golden::parse(&text).into_iter().collect();
    for (name, command) in commands_v2() {
        assert_eq!(PgRaftConfig::decode_data(&golden[&name]).unwrap(), command, "{name}");
    }
    let text = std::fs::read_to_string(golden_split_path()).unwrap();
    let golden: BTreeMap<String, Vec<u8>> = golden::parse(&text).into_iter().collect();
    for (name, v1) in states() {
        let want = PgState {
            applied: v1.applied,
            membership: v1.membership,
            pg_num: 0x0102_0304,
            sealed: None,
        };
        assert_eq!(PgState::decode(&golden[&format!("{name}_v2")]).unwrap(), want, "{name}");
    }
    let split = PgCommand::Split { pg_num: 0x0506_0708 };
    assert_eq!(PgRaftConfig::decode_data(&golden["split"]).unwrap(), split);
    let text = std::fs::read_to_string(golden_merge_path()).unwrap();
    let golden: BTreeMap<String, Vec<u8>> = golden::parse(&text).into_iter().collect();
    let sealed = LogId::new(CommittedLeaderId::new(9, 2), 0x0a0b_0c0d);
    for (name, v1) in states() {
        let want = PgState {
            applied: v1.applied,
            membership: v1.membership,
            pg_num: 0x0102_0304,
            sealed: Some(sealed),
        };
        assert_eq!(PgState::decode(&golden[&format!("{name}_v3")]).unwrap(), want, "{name}");
    }
    for (name, command) in merge_commands() {
        assert_eq!(PgRaftConfig::decode_data(&golden[name]).unwrap(), command, "{name}");
    }
}

#[test]
fn newer_versions_are_format_too_new() {
    let mut out = Vec::new();
    PgRaftConfig::encode_data(&client(Vec::new(), None), &mut out);
    out[0] = 3;
    assert!(matches!(PgRaftConfig::decode_data(&out), Err(DecodeError::TooNew(_))));
    let mut state = PgState::default().encode();
    state[0] = 4;
    assert!(matches!(PgState::decode(&state), Err(DecodeError::TooNew(_))));
}

fn golden_placed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/pg_v2_placed.hex")
}

/// `PgCommand::ClientPlaced` (appended to version 2): a `Write` and a `WriteFull` placed
/// (their payloads not in the bytes, their crcs kept), a small write beside them inline.
fn placed_command() -> PgCommand {
    let reqid = EntityReqId {
        entity: EntityName::client("admin"),
        reqid: ReqId { client: 0x1112_1314, tid: 0x2122 },
    };
    let PgCommand::Client(mut command) = client(Vec::new(), Some(reqid)) else {
        unreachable!("client() builds a client command")
    };
    command.ops = vec![
        ObjectOp::Write { off: 8192, data: super::placer::stand_in(2 * 4096, 0x3132_3334) },
        ObjectOp::Write { off: 1, data: Payload::new(Bytes::from_static(b"inline")) },
        ObjectOp::WriteFull { data: super::placer::stand_in(4096, 0x4142_4344) },
    ];
    let placed = vec![
        super::PlacedWrite { op: 0, block: 0x5152_5354_5556, crcs: vec![0x61, 0x62] },
        super::PlacedWrite { op: 2, block: 7, crcs: vec![0x71] },
    ];
    PgCommand::ClientPlaced { command, placed }
}

#[test]
fn placed_command_bytes_are_pinned_and_decode_to_the_same_value() {
    let header = "PgCommand::ClientPlaced (appended to version 2: write-once large writes), \
                  quarry-osd.\nGenerated once; never edit: a change of bytes needs a new version.";
    let mut bytes = Vec::new();
    PgRaftConfig::encode_data(&placed_command(), &mut bytes);
    assert!(bytes.len() < 300, "placed payloads are not in the record ({} bytes)", bytes.len());
    golden::check(&golden_placed_path(), header, &[("client_placed", bytes)]);
    let text = std::fs::read_to_string(golden_placed_path()).unwrap();
    let golden: BTreeMap<String, Vec<u8>> = golden::parse(&text).into_iter().collect();
    let decoded = PgRaftConfig::decode_data(&golden["client_placed"]).unwrap();
    assert_eq!(decoded, placed_command());
    // A placed op that is not a write, or whose payload is in the record, does not decode.
    let mut bad = golden["client_placed"].clone();
    let PgCommand::ClientPlaced { command, mut placed } = placed_command() else { unreachable!() };
    placed[0].op = 1;
    let mut out = Vec::new();
    quarry_persist::version::encode_into(
        &mut out,
        super::PG_COMMAND_VERSION,
        &PgCommand::ClientPlaced { command, placed },
    );
    assert!(PgRaftConfig::decode_data(&out).is_err(), "an inline payload named as placed");
    bad.truncate(bad.len() - 3);
    assert!(PgRaftConfig::decode_data(&bad).is_err());
}
