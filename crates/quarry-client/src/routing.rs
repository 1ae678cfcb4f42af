//! Pure routing and request checks: which PG an object falls in, which OSD serves it in a
//! given map, whether an op vector may be sent at all, and whether returned data is intact.
//! No I/O here, so every rule is unit-tested on hand-made maps.

use std::net::SocketAddr;

use quarry_types::{
    ErrorCode, ObjectOp, OpOutput, OsdId, PgId, PoolId, SnapContext, SnapId, OBJECT_NAME_LEN_MAX,
    OBJECT_SIZE_MAX, SNAP_HEAD,
};
use quarry_wire::codec::FRAME_PAYLOAD_MAX;
use quarry_wire::{ClusterMap, Request};

use crate::ClientError;

/// Room left in a frame for everything but the bulk bytes of a request (names, keys, the
/// snapshot context, encoding overhead).
const REQUEST_OVERHEAD_MAX: u64 = 64 << 10;

/// Where a PG's requests go in one map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The primary is up and has an address.
    Primary {
        /// The primary OSD.
        osd: OsdId,
        /// Its address.
        addr: SocketAddr,
    },
    /// No usable primary in this map (acting set empty, primary down or never booted):
    /// wait for a newer map.
    Unavailable,
}

/// The PG of `object` in `pool`, or `PoolNotFound` if the map does not know the pool.
pub(crate) fn pg_for(map: &ClusterMap, pool: PoolId, object: &str) -> Result<PgId, ClientError> {
    let info = map.pools.get(&pool).ok_or(ClientError::PoolNotFound { pool: pool.to_string() })?;
    if info.pg_num == 0 {
        // A map with a zero-PG pool is malformed; treat the pool as absent rather than panic.
        return Err(ClientError::PoolNotFound { pool: pool.to_string() });
    }
    let seed = quarry_placement::pg_of(object, info.pg_num);
    assert!(seed < info.pg_num);
    Ok(PgId { pool, seed })
}

/// Points a request that names an object at the object's PG in `map` (the pool's `pg_num`
/// may have grown since the request was made: the object may now be in a child PG of the one
/// computed then); returns the PG it is sent to. Requests without an object keep `pg`.
pub(crate) fn retarget(map: &ClusterMap, pg: PgId, request: &mut Request) -> PgId {
    let (target, name) = match request {
        Request::Op(op) => (&mut op.pg, op.name.as_str()),
        Request::Watch { pg, name, .. }
        | Request::WatchPing { pg, name, .. }
        | Request::Unwatch { pg, name, .. }
        | Request::Notify { pg, name, .. }
        | Request::ListWatchers { pg, name, .. } => (pg, name.as_str()),
        _ => return pg,
    };
    if let Ok(now) = pg_for(map, target.pool, name) {
        *target = now;
    }
    *target
}

/// The OSD that serves `pg` in `map`: the first OSD of the acting set, if it is up.
pub(crate) fn target(map: &ClusterMap, pg: PgId) -> Target {
    let Some(&primary) = map.acting(pg).first() else {
        return Target::Unavailable;
    };
    match map.osds.get(&primary) {
        Some(info) if info.up => match info.addr {
            Some(addr) => Target::Primary { osd: primary, addr },
            None => Target::Unavailable,
        },
        _ => Target::Unavailable,
    }
}

/// Refuses, before anything is sent, a request the OSD would refuse or that could not be
/// framed: an empty or over-long name, an empty op vector, an invalid snapshot context, a
/// mutation on a snapshot, data beyond the object size limit, or a request too large for
/// one frame.
pub(crate) fn check_request(
    object: &str,
    snapc: &SnapContext,
    snap: SnapId,
    ops: &[ObjectOp],
) -> Result<(), ClientError> {
    if object.is_empty() {
        return Err(ClientError::invalid(ErrorCode::EINVAL, "empty object name"));
    }
    if object.len() > OBJECT_NAME_LEN_MAX {
        return Err(ClientError::invalid(ErrorCode::ENAMETOOLONG, "object name too long"));
    }
    if ops.is_empty() {
        return Err(ClientError::invalid(ErrorCode::EINVAL, "empty op vector"));
    }
    if !snapc.is_valid() {
        return Err(ClientError::invalid(ErrorCode::EINVAL, "invalid snapshot context"));
    }
    if snap != SNAP_HEAD && ops.iter().any(ObjectOp::is_mutation) {
        return Err(ClientError::invalid(ErrorCode::EROFS, "cannot modify a snapshot"));
    }
    if ObjectOp::vector_too_big(ops).is_some() {
        // Checked early; the OSD refuses it too (it would not fit one log entry).
        return Err(ClientError::invalid(
            ErrorCode::EMSGSIZE,
            "op vector carries more than OP_DATA_BYTES_MAX (60 MiB) of data",
        ));
    }
    let mut bulk: u64 = 0;
    for op in ops {
        let (end, bytes) = op_extent(op);
        if end > OBJECT_SIZE_MAX {
            return Err(ClientError::invalid(ErrorCode::EFBIG, "beyond the largest object size"));
        }
        bulk = bulk.saturating_add(bytes);
    }
    if bulk.saturating_add(REQUEST_OVERHEAD_MAX) > u64::from(FRAME_PAYLOAD_MAX) {
        return Err(ClientError::invalid(ErrorCode::EMSGSIZE, "request too large for one message"));
    }
    Ok(())
}

/// The end offset an op addresses (0 if none) and the bulk bytes it carries.
fn op_extent(op: &ObjectOp) -> (u64, u64) {
    let len = |n: usize| n as u64;
    match op {
        ObjectOp::Write { off, data } => (off.saturating_add(len(data.len())), len(data.len())),
        ObjectOp::WriteFull { data } => (len(data.len()), len(data.len())),
        ObjectOp::Zero { off, len } => (off.saturating_add(*len), 0),
        ObjectOp::Truncate { size } => (*size, 0),
        ObjectOp::SetXattr { name, value } => (0, len(name.len() + value.len())),
        ObjectOp::CmpXattr { name, value, .. } => (0, len(name.len() + value.len())),
        ObjectOp::OmapCmp { key, value, .. } => (0, len(key.len() + value.len())),
        ObjectOp::OmapSetVals { vals } => {
            (0, vals.iter().map(|(k, v)| len(k.len() + v.len())).sum())
        }
        ObjectOp::OmapSetHeader { header } => (0, len(header.len())),
        ObjectOp::CmpExt { off, data } => (off.saturating_add(len(data.len())), len(data.len())),
        ObjectOp::OmapRmKeys { keys } | ObjectOp::OmapGetValsByKeys { keys } => {
            (0, keys.iter().map(|k| len(k.len())).sum())
        }
        _ => (0, 0),
    }
}

/// Checks the crc32c of every data payload an OSD returned. Returns false (and the caller
/// reports EIO) if any payload does not match its bytes.
pub(crate) fn outputs_intact(outputs: &[OpOutput]) -> bool {
    outputs.iter().all(|out| match out {
        OpOutput::Data(payload) => payload.verify(),
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use quarry_types::Payload;
    use quarry_wire::{OsdInfo, PoolInfo};

    use super::*;

    fn osd(id: OsdId, up: bool, addr: Option<&str>) -> OsdInfo {
        OsdInfo {
            id,
            addr: addr.map(|a| a.parse().unwrap()),
            host: format!("h{id}"),
            up,
            in_cluster: true,
            weight: 1.0,
            up_from: 1,
            used_bytes: 0,
            avail_bytes: 0,
            reweight: 1.0,
            down_since: 0,
        }
    }

    fn map() -> ClusterMap {
        let mut m = ClusterMap { epoch: 7, ..Default::default() };
        m.osds.insert(0, osd(0, true, Some("127.0.0.1:7000")));
        m.osds.insert(1, osd(1, false, Some("127.0.0.1:7001")));
        m.osds.insert(2, osd(2, true, None));
        let acting = vec![vec![0, 1], vec![1, 0], vec![2], vec![]];
        m.pools.insert(
            3,
            PoolInfo {
                id: 3,
                name: "rbd".into(),
                pg_num: 4,
                pg_num_target: 4,
                pg_num_pending: 4,
                creating: Default::default(),
                size: 2,
                min_size: 1,
                applications: Default::default(),
                snap_seq: 0,
                removed_snaps: Default::default(),
                acting,
                stored_objects: 0,
                stored_bytes: 0,
                snap_mode: Default::default(),
                pool_snaps: Default::default(),
                flags: quarry_wire::pool_flags::HASHPSPOOL,
                quota_max_bytes: 0,
                quota_max_objects: 0,
                up: Vec::new(),
            },
        );
        m
    }

    #[test]
    fn objects_route_to_their_pgs_primary_only_when_up() {
        let m = map();
        let want = |seed| PgId { pool: 3, seed };
        assert_eq!(
            target(&m, want(0)),
            Target::Primary { osd: 0, addr: "127.0.0.1:7000".parse().unwrap() }
        );
        assert_eq!(target(&m, want(1)), Target::Unavailable, "primary down");
        assert_eq!(target(&m, want(2)), Target::Unavailable, "primary never booted");
        assert_eq!(target(&m, want(3)), Target::Unavailable, "empty acting set");
        assert_eq!(target(&m, PgId { pool: 9, seed: 0 }), Target::Unavailable);
        // Every object name lands in a PG of the pool, the same one placement computes.
        for i in 0..200 {
            let name = format!("obj{i}");
            let pg = pg_for(&m, 3, &name).unwrap();
            assert_eq!(pg.pool, 3);
            assert_eq!(pg.seed, quarry_placement::pg_of(&name, 4));
        }
        let err = pg_for(&m, 4, "x").unwrap_err();
        assert_eq!(err.errno(), ErrorCode::ENOENT);
    }

    #[test]
    fn requests_are_checked_before_sending() {
        let head = SNAP_HEAD;
        let ok = SnapContext::default();
        let read = vec![ObjectOp::Read { off: 0, len: 10 }];
        let write = vec![ObjectOp::Write { off: 0, data: Payload::new(Bytes::from_static(b"x")) }];
        assert!(check_request("a", &ok, head, &read).is_ok());
        assert!(check_request("a", &ok, head, &write).is_ok());
        assert!(check_request("a", &ok, 5, &read).is_ok(), "reads may target a snapshot");
        let code = |r: Result<(), ClientError>| r.unwrap_err().errno();
        assert_eq!(code(check_request("", &ok, head, &read)), ErrorCode::EINVAL);
        let long = "n".repeat(OBJECT_NAME_LEN_MAX + 1);
        assert_eq!(code(check_request(&long, &ok, head, &read)), ErrorCode::ENAMETOOLONG);
        assert_eq!(code(check_request("a", &ok, head, &[])), ErrorCode::EINVAL);
        let bad = SnapContext { seq: 1, snaps: vec![4] };
        assert_eq!(code(check_request("a", &bad, head, &write)), ErrorCode::EINVAL);
        assert_eq!(code(check_request("a", &ok, 5, &write)), ErrorCode::EROFS);
        let far = vec![ObjectOp::Write {
            off: OBJECT_SIZE_MAX,
            data: Payload::new(Bytes::from_static(b"x")),
        }];
        assert_eq!(code(check_request("a", &ok, head, &far)), ErrorCode::EFBIG);
        let trunc = vec![ObjectOp::Truncate { size: OBJECT_SIZE_MAX + 1 }];
        assert_eq!(code(check_request("a", &ok, head, &trunc)), ErrorCode::EFBIG);
        let mut vals = BTreeMap::new();
        vals.insert("k".to_string(), Bytes::from(vec![0u8; FRAME_PAYLOAD_MAX as usize]));
        let huge = vec![ObjectOp::OmapSetVals { vals }];
        assert_eq!(code(check_request("a", &ok, head, &huge)), ErrorCode::EMSGSIZE);
        // One WAL record's worth: 60 MiB of data per vector passes, a byte more does not.
        let at = |n: u64| vec![ObjectOp::WriteFull { data: Payload::new(vec![0u8; n as usize]) }];
        assert!(check_request("a", &ok, head, &at(quarry_types::OP_DATA_BYTES_MAX)).is_ok());
        let over = at(quarry_types::OP_DATA_BYTES_MAX + 1);
        assert_eq!(code(check_request("a", &ok, head, &over)), ErrorCode::EMSGSIZE);
    }

    #[test]
    fn corrupted_payloads_are_detected() {
        let good = Payload::new(Bytes::from_static(b"hello"));
        let mut bad = good.clone();
        bad.data = Bytes::from_static(b"hellp");
        assert!(outputs_intact(&[OpOutput::None, OpOutput::Data(good.clone())]));
        assert!(!outputs_intact(&[OpOutput::Data(good), OpOutput::Data(bad)]));
    }
}
