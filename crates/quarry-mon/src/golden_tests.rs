//! Golden bytes of what the monitor persists: a [`Proposal`] of every [`Op`] variant as the WAL
//! stores it, and a snapshot file of a state built by applying a history that fills every
//! part of `MonState` (map, pools with flags and quotas, OSDs with reweights, auth, service
//! keys, blocklist with adders, central config, counters, up sets being moved, down stamps,
//! a pool shrinking by PG merges),
//! compared with `tests/golden/mon_v5.hex` (versions 1 to 4, `mon_v1.hex` to `mon_v4.hex`,
//! must still decode to the same values, with what the conversion adds). A failure means a persisted format changed: bump
//! `PROPOSAL_VERSION` or the snapshot `VERSION` and keep decoding the old one (the upgrade
//! rule in `quarry_persist`); never edit the golden file.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use openraft::{BasicNode, CommittedLeaderId, LogId, Membership, SnapshotMeta, StoredMembership};
use quarry_auth::{CryptoKey, ServiceKey};
use quarry_persist::{golden, DecodeError};
use quarry_types::EntityName;

use crate::error::MonError;
use crate::log_op::{EntityRecord, Op, OsdMark, Proposal, StoredKey};
use crate::snapshot::{self, SnapshotFile};
use crate::state::MonState;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/mon_v5.hex")
}

fn golden_v4_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/mon_v4.hex")
}

fn golden_v3_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/mon_v3.hex")
}

fn golden_v2_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/mon_v2.hex")
}

fn golden_v1_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/mon_v1.hex")
}

/// Every op: those of version 4, then the ones version 5 added or changed (a pool shrunk:
/// `pg_num_target` set, a merge marked, reported, and the next one marked).
fn every_op() -> Vec<(&'static str, Op)> {
    let mut all = every_op_v4();
    all.push(("osd_boot_1", Op::OsdBoot { id: 1, addr: addr(6801), host: "h1".into() }));
    all.push((
        "pool_create_to_shrink",
        Op::PoolCreate { name: "shrink".into(), pg_num: 4, size: 1 },
    ));
    all.push((
        "pool_set_pg_num_down",
        Op::PoolSet { pool: "shrink".into(), var: "pg_num".into(), val: "2".into() },
    ));
    let state = snapshot_file_of(proposals_of(all.clone())).state;
    let pool = state.map.pool_by_name("shrink").unwrap();
    assert_eq!(pool.merging(), Some((3, 1)), "{pool:?}");
    let target = quarry_types::PgId { pool: pool.id, seed: 1 };
    all.push(("pg_merged", Op::PgMerged { target, source: 3 }));
    all
}

/// Every op of version 4: those of version 3, then the ones version 4 added or changed (a
/// pool's size changed, its PG moved and reported, an OSD marked out automatically).
fn every_op_v4() -> Vec<(&'static str, Op)> {
    let mut all = every_op_v3();
    let set = |pool: &str, var: &str, val: &str| Op::PoolSet {
        pool: pool.into(),
        var: var.into(),
        val: val.into(),
    };
    all.push(("osd_in", Op::OsdMark { ids: vec![1], mark: OsdMark::In }));
    all.push(("pool_set_size", set("photos", "size", "2")));
    // The history so far, applied, says which PG moves and when osd.0 went down.
    let state = snapshot_file_of(proposals_of(all.clone())).state;
    let photos = state.map.pool_by_name("photos").unwrap();
    let pg = quarry_types::PgId { pool: photos.id, seed: 0 };
    let (from, to) = (state.map.acting(pg).to_vec(), state.map.up_set(pg).to_vec());
    assert_ne!(from, to, "the size change remaps pg {pg}");
    all.push(("pg_remapped", Op::PgRemapped { pg, from, to }));
    let down_since = state.map.osds[&0].down_since;
    assert!(down_since > 0);
    all.push(("osd_auto_out", Op::OsdAutoOut { id: 0, down_since }));
    all
}

/// Every op of version 3: those of version 2, then the ones version 3 added (blocklist
/// adders, pool settings, quota flags, rename, OSD marks, central config).
fn every_op_v3() -> Vec<(&'static str, Op)> {
    let mut all = every_op_v2();
    let set = |pool: &str, var: &str, val: &str| Op::PoolSet {
        pool: pool.into(),
        var: var.into(),
        val: val.into(),
    };
    let config = |who: &str, key: &str, value: Option<&str>| Op::ConfigSet {
        who: who.into(),
        key: key.into(),
        value: value.map(String::from),
    };
    all.extend([
        (
            "blocklist_add_by",
            Op::BlocklistAddBy {
                instance: "10.0.0.7:0/7".into(),
                expire_secs: 600,
                by: "client.qemu".into(),
                max: 1000,
            },
        ),
        ("pool_set_flag", set("rbd", "nodelete", "true")),
        ("pool_set_min_size", set("rbd", "min_size", "1")),
        ("pool_set_quota", set("pics", "quota_max_objects", "10")),
        ("pool_quota_full", Op::PoolQuotaFull { pool: 3, full: true }),
        ("pool_rename", Op::PoolRename { from: "pics".into(), to: "photos".into() }),
        ("osd_out", Op::OsdMark { ids: vec![1], mark: OsdMark::Out }),
        ("osd_reweight", Op::OsdMark { ids: vec![0], mark: OsdMark::Reweight(0.5) }),
        ("osd_mark_down", Op::OsdMark { ids: vec![0, 7], mark: OsdMark::Down }),
        ("config_set", config("osd", "osd_max_backfills", Some("3"))),
        ("config_set_daemon", config("osd.0", "debug_osd", Some("5/5"))),
        ("config_rm", config("osd", "osd_max_backfills", None)),
    ]);
    all
}

/// Every op of version 2: those of version 1, then pool snapshots (on a pool of their own:
/// a pool uses one kind of snapshots).
fn every_op_v2() -> Vec<(&'static str, Op)> {
    let mut all = every_op_v1();
    all.push((
        "pool_create_for_pool_snaps",
        Op::PoolCreate { name: "pics".into(), pg_num: 2, size: 1 },
    ));
    all.push((
        "pool_snap_create",
        Op::PoolSnapCreate { pool: "pics".into(), snap: "monday".into(), strict: false },
    ));
    all.push((
        "pool_snap_create_2",
        Op::PoolSnapCreate { pool: "pics".into(), snap: "tuesday".into(), strict: true },
    ));
    all.push((
        "pool_snap_remove",
        Op::PoolSnapRemove { pool: "pics".into(), snap: "monday".into(), strict: true },
    ));
    all
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

fn caps(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn key(n: u8) -> StoredKey {
    StoredKey(CryptoKey::from_parts([n; 16], u32::from(n) * 10, u32::from(n) * 100))
}

fn service_key(id: u64) -> ServiceKey {
    ServiceKey { id, key: [id as u8 + 0x40; 32], expires_unix: 1_000 + id * 300 }
}

/// One op of every variant of version 1, in the order of a history that applies cleanly.
fn every_op_v1() -> Vec<(&'static str, Op)> {
    vec![
        (
            "bootstrap",
            Op::Bootstrap {
                fsid: "00000000-0000-4000-8000-000000000001".into(),
                entities: vec![
                    EntityRecord {
                        entity: EntityName::client("admin"),
                        key: key(1),
                        caps: caps(&[("mon", "allow *"), ("osd", "allow *")]),
                    },
                    EntityRecord {
                        entity: EntityName::osd(0),
                        key: key(2),
                        caps: caps(&[("mon", "profile osd"), ("osd", "allow *")]),
                    },
                ],
                osds: vec![(0, "h0".into()), (1, "h1".into())],
                pools: vec![("rbd".into(), 4, 2)],
                service_key: service_key(1),
                service_key_ttl: 600,
                mon: ("a".into(), addr(6789)),
            },
        ),
        ("set_mon_addr", Op::SetMonAddr { name: "a".into(), addr: addr(6790) }),
        ("pool_create", Op::PoolCreate { name: "images".into(), pg_num: 8, size: 2 }),
        ("pool_rm", Op::PoolRm { name: "images".into() }),
        (
            "pool_application_enable",
            Op::PoolApplicationEnable { pool: "rbd".into(), app: "rgw".into() },
        ),
        ("snap_create", Op::SnapCreate { pool: 1 }),
        ("snap_remove", Op::SnapRemove { pool: 1, snap: 1 }),
        ("osd_boot", Op::OsdBoot { id: 0, addr: addr(6800), host: "h0".into() }),
        ("osd_down", Op::OsdDown { id: 0, up_from: 3 }),
        (
            "auth_get_or_create",
            Op::AuthGetOrCreate {
                entity: EntityName::client("qemu"),
                caps: caps(&[("mon", "profile rbd"), ("osd", "profile rbd pool=rbd")]),
                key: key(3),
            },
        ),
        (
            "auth_caps",
            Op::AuthCaps {
                entity: EntityName::client("qemu"),
                caps: caps(&[("mon", "profile rbd"), ("osd", "profile rbd-read-only")]),
            },
        ),
        (
            "auth_import",
            Op::AuthImport {
                entries: vec![EntityRecord {
                    entity: EntityName::client("backup"),
                    key: key(4),
                    caps: caps(&[("mon", "allow r")]),
                }],
            },
        ),
        ("auth_del", Op::AuthDel { entity: EntityName::client("backup") }),
        (
            "blocklist_add",
            Op::BlocklistAdd { instance: "client.qemu@4100".into(), expire_secs: 3600 },
        ),
        ("rotate_service_key", Op::RotateServiceKey { key: service_key(2) }),
        ("alloc_global_ids", Op::AllocGlobalIds { count: 1024 }),
        // An absent entry: the state (and the snapshot file below) stays as before.
        ("blocklist_rm", Op::BlocklistRm { entry: "10.0.0.9:0/0".into() }),
    ]
}

fn proposals() -> Vec<(String, Proposal)> {
    proposals_of(every_op())
}

fn proposals_of(ops: Vec<(&'static str, Op)>) -> Vec<(String, Proposal)> {
    ops.into_iter()
        .enumerate()
        .map(|(i, (name, op))| {
            (format!("proposal_{name}"), Proposal { now_unix: 500 + i as u64, op })
        })
        .collect()
}

/// The state after applying every op, and the snapshot of it.
fn snapshot_file() -> SnapshotFile {
    snapshot_file_of(proposals())
}

fn snapshot_file_of(proposals: Vec<(String, Proposal)>) -> SnapshotFile {
    let mut state = MonState::default();
    for (name, proposal) in proposals {
        state.apply(&proposal).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    let log_id = |term, index| LogId::new(CommittedLeaderId::new(term, 0), index);
    let nodes = BTreeMap::from([(0u64, BasicNode::new("10.0.0.1:6790"))]);
    let membership = Membership::new(vec![BTreeSet::from([0u64])], nodes);
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(1, 17)),
        last_membership: StoredMembership::new(Some(log_id(1, 1)), membership),
        snapshot_id: "mon-1-17".into(),
    };
    SnapshotFile { meta, state }
}

#[test]
fn every_op_variant_is_covered() {
    // A new Op variant fails this match at compile time until it is added to `every_op`.
    for (_, op) in every_op() {
        match op {
            Op::Bootstrap { .. }
            | Op::SetMonAddr { .. }
            | Op::PoolCreate { .. }
            | Op::PoolRm { .. }
            | Op::PoolApplicationEnable { .. }
            | Op::SnapCreate { .. }
            | Op::SnapRemove { .. }
            | Op::OsdBoot { .. }
            | Op::OsdDown { .. }
            | Op::AuthGetOrCreate { .. }
            | Op::AuthCaps { .. }
            | Op::AuthDel { .. }
            | Op::AuthImport { .. }
            | Op::BlocklistAdd { .. }
            | Op::RotateServiceKey { .. }
            | Op::AllocGlobalIds { .. }
            | Op::BlocklistRm { .. }
            | Op::PoolSnapCreate { .. }
            | Op::PoolSnapRemove { .. }
            | Op::BlocklistAddBy { .. }
            | Op::PoolSet { .. }
            | Op::PoolRename { .. }
            | Op::PoolQuotaFull { .. }
            | Op::OsdMark { .. }
            | Op::ConfigSet { .. }
            | Op::PgRemapped { .. }
            | Op::OsdAutoOut { .. }
            | Op::PgMerged { .. } => {}
        }
    }
}

#[test]
fn mon_bytes_are_pinned() {
    let mut values = Vec::new();
    for (name, proposal) in proposals() {
        let mut out = Vec::new();
        proposal.encode_into(&mut out);
        values.push((name, out));
    }
    values.push(("snapshot_file".to_string(), snapshot::encode(&snapshot_file()).unwrap()));
    let refs: Vec<(&str, Vec<u8>)> =
        values.iter().map(|(name, bytes)| (name.as_str(), bytes.clone())).collect();
    let header = "Monitor Proposal version 5 (WAL entry data) and snapshot file version 5, \
                  quarry-mon.\nGenerated once; never edit: a change of bytes needs a new version.";
    golden::check(&golden_path(), header, &refs);
}

/// What a state of an older version decodes to: every PG's up set is its acting set and no
/// OSD has a down stamp (the conversion of `snapshot_v3`). The older history applied now may
/// also have moved a primary off a down OSD (version 4 does; the members are the same), so
/// both sides are compared with their acting sets sorted.
fn as_upgraded(mut state: MonState) -> MonState {
    for pool in state.map.pools.values_mut() {
        for acting in pool.acting.iter_mut() {
            acting.sort_unstable();
        }
        pool.up = pool.acting.clone();
    }
    for osd in state.map.osds.values_mut() {
        osd.down_since = 0;
    }
    state
}

#[test]
fn golden_bytes_decode_to_the_same_values() {
    let text = std::fs::read_to_string(golden_path()).unwrap();
    let golden: BTreeMap<String, Vec<u8>> = golden::parse(&text).into_iter().collect();
    for (name, proposal) in proposals() {
        assert_eq!(Proposal::decode(&golden[&name]).unwrap(), proposal, "{name}");
    }
    let back = snapshot::decode(&golden["snapshot_file"]).unwrap();
    let want = snapshot_file();
    assert_eq!(back.meta, want.meta);
    assert_eq!(back.state, want.state);
    let photos = back.state.map.pool_by_name("photos").unwrap();
    assert_eq!((photos.size, photos.min_size), (2, 1));
    assert_eq!(photos.acting[0].len(), 2, "the reported move made both OSDs voters");
    assert!(!back.state.map.osds[&0].in_cluster, "osd.0 was marked out automatically");
    assert!(back.state.map.osds[&0].down_since > 0);
    let shrink = back.state.map.pool_by_name("shrink").unwrap();
    assert_eq!((shrink.pg_num, shrink.pg_num_target, shrink.pg_num_pending), (3, 2, 2));
    assert_eq!(shrink.merging(), Some((2, 0)), "the next merge is marked");
}

/// What a state of version 4 decodes to: every pool's `pg_num_target` and
/// `pg_num_pending` are its `pg_num`.
fn as_upgraded_v4(mut state: MonState) -> MonState {
    for pool in state.map.pools.values_mut() {
        pool.pg_num_target = pool.pg_num;
        pool.pg_num_pending = pool.pg_num;
    }
    state
}

/// Version 4 (before `pg_num_target` and `pg_num_pending`): proposals and the snapshot file
/// still decode, to the values the version 4 history gives now.
#[test]
fn version_4_bytes_still_decode() {
    let text = std::fs::read_to_string(golden_v4_path()).unwrap();
    let golden: BTreeMap<String, Vec<u8>> = golden::parse(&text).into_iter().collect();
    let v4 = proposals_of(every_op_v4());
    for (name, proposal) in &v4 {
        assert_eq!(golden[name][0], 4);
        assert_eq!(&Proposal::decode(&golden[name]).unwrap(), proposal, "{name}");
    }
    let back = snapshot::decode(&golden["snapshot_file"]).unwrap();
    let want = snapshot_file_of(v4);
    assert_eq!(back.meta, want.meta);
    assert_eq!(back.state, as_upgraded_v4(want.state.clone()));
    assert_eq!(back.state, want.state, "a version 4 history leaves target = pending = pg_num");
    let photos = back.state.map.pool_by_name("photos").unwrap();
    assert_eq!(photos.acting[0].len(), 2);
}

/// Version 3 (before up sets and down stamps): proposals and the snapshot file still
/// decode, to the values the version 3 history gives now, with every PG's up set its acting
/// set and no down stamps.
#[test]
fn version_3_bytes_still_decode() {
    let text = std::fs::read_to_string(golden_v3_path()).unwrap();
    let golden: BTreeMap<String, Vec<u8>> = golden::parse(&text).into_iter().collect();
    let v3 = proposals_of(every_op_v3());
    for (name, proposal) in &v3 {
        assert_eq!(golden[name][0], 3);
        assert_eq!(&Proposal::decode(&golden[name]).unwrap(), proposal, "{name}");
    }
    let back = snapshot::decode(&golden["snapshot_file"]).unwrap();
    let want = snapshot_file_of(v3);
    assert_eq!(back.meta, want.meta);
    assert_eq!(as_upgraded(back.state.clone()), as_upgraded(want.state));
    let photos = back.state.map.pool_by_name("photos").unwrap();
    assert_eq!(photos.snap_mode, quarry_wire::SnapMode::Pool);
    assert_eq!(photos.pool_snaps.len(), 1);
    assert_eq!(photos.quota_max_objects, 10);
    assert!(photos.is_full());
    let rbd = back.state.map.pool_by_name("rbd").unwrap();
    assert!(rbd.has_flag(quarry_wire::pool_flags::NODELETE));
    assert_eq!(back.state.blocklist_adders["10.0.0.7:0/7"], "client.qemu");
    assert_eq!(back.state.config["osd.0"]["debug_osd"], "5/5");
    assert!(!back.state.config.contains_key("osd"));
    assert_eq!(back.state.map.osds[&0].reweight, 0.5);
    assert!(!back.state.map.osds[&1].in_cluster);
}

/// Version 2 (before pool flags, quotas, reweights, blocklist adders and central config):
/// proposals and the snapshot file still decode, to the values the version 2 history gives
/// now (pools `hashpspool` without quota, OSDs reweight 1, no adders, no config).
#[test]
fn version_2_bytes_still_decode() {
    let text = std::fs::read_to_string(golden_v2_path()).unwrap();
    let golden: BTreeMap<String, Vec<u8>> = golden::parse(&text).into_iter().collect();
    let v2 = proposals_of(every_op_v2());
    for (name, proposal) in &v2 {
        assert_eq!(golden[name][0], 2);
        assert_eq!(&Proposal::decode(&golden[name]).unwrap(), proposal, "{name}");
    }
    let back = snapshot::decode(&golden["snapshot_file"]).unwrap();
    let want = snapshot_file_of(v2);
    assert_eq!(back.meta, want.meta);
    assert_eq!(as_upgraded(back.state.clone()), as_upgraded(want.state));
    assert!(back.state.map.osds.values().all(|o| o.reweight == 1.0));
    assert!(back
        .state
        .map
        .pools
        .values()
        .all(|p| p.flags == quarry_wire::pool_flags::HASHPSPOOL && p.quota_max_bytes == 0));
}

/// Version 1 (before pool snapshots): proposals and the snapshot file still decode, to the
/// values the version 1 history gives now (its pool with self-managed ids is in self-managed
/// mode).
#[test]
fn version_1_bytes_still_decode() {
    let text = std::fs::read_to_string(golden_v1_path()).unwrap();
    let golden: BTreeMap<String, Vec<u8>> = golden::parse(&text).into_iter().collect();
    let v1 = proposals_of(every_op_v1());
    for (name, proposal) in &v1 {
        assert_eq!(golden[name][0], 1);
        assert_eq!(&Proposal::decode(&golden[name]).unwrap(), proposal, "{name}");
    }
    let back = snapshot::decode(&golden["snapshot_file"]).unwrap();
    let want = snapshot_file_of(v1);
    assert_eq!(back.meta, want.meta);
    assert_eq!(as_upgraded(back.state.clone()), as_upgraded(want.state));
    assert!(back
        .state
        .map
        .pools
        .values()
        .any(|p| p.snap_mode == quarry_wire::SnapMode::SelfManaged));
}

#[test]
fn newer_proposals_and_snapshots_are_format_too_new() {
    let mut out = Vec::new();
    proposals()[0].1.encode_into(&mut out);
    out[0] = crate::log_op::PROPOSAL_VERSION + 1;
    assert!(matches!(Proposal::decode(&out), Err(DecodeError::TooNew(_))));

    let mut file = snapshot::encode(&snapshot_file()).unwrap();
    file[8..12].copy_from_slice(&(snapshot::VERSION + 1).to_le_bytes());
    match snapshot::decode(&file) {
        Err(MonError::FormatTooNew { found, supported, .. }) => {
            assert_eq!((found, supported), (snapshot::VERSION + 1, snapshot::VERSION));
        }
        other => panic!("a newer snapshot must be FormatTooNew: {:?}", other.map(|_| ())),
    }
    // Even a newer snapshot whose rest is laid out differently (here: shorter than our header).
    match snapshot::decode(&file[..14]) {
        Err(MonError::FormatTooNew { .. }) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
    // And through the file loader, as a restarting monitor sees it.
    let dir = tempfile::tempdir().unwrap();
    snapshot::write_atomic(dir.path(), &file).unwrap();
    assert!(matches!(snapshot::load(dir.path()), Err(MonError::FormatTooNew { .. })));
}
