//! Pure checks an op passes before it touches a PG: is the session still honoured (ticket
//! not expired, not revoked by `auth_floor`), is the client fenced (instance or address
//! blocklisted: ESHUTDOWN, checked right before the op takes effect), do its caps allow the
//! access on the pool, does the object name hash to the PG the op names, and is the op vector
//! well formed (name length, crc of every payload but large whole-chunk ones, which the store
//! checks, no mutation of a snapshot). Each failure is the `Reply` the client gets.

use std::net::IpAddr;

use quarry_auth::OsdAccess;
use quarry_types::{
    CallOrigin, ErrorCode, ObjectMethods, ObjectOp, OpReply, Payload, PgId, SnapId,
    OBJECT_NAME_LEN_MAX, SNAP_HEAD,
};
use quarry_wire::blocklist::{fencing_entry, EntityAddr};
use quarry_wire::{ClusterMap, OsdOp, Reply};

use crate::session::Session;

/// Most ops one request may carry.
pub(crate) const OPS_PER_REQUEST_MAX: usize = 1024;

/// The reply to an op the caps do not allow (Ceph's OSD answers EPERM).
pub(crate) fn not_permitted() -> Reply {
    Reply::Failed { code: ErrorCode::EPERM, message: "operation not permitted".into() }
}

fn refuse(session: &Session, why: &str) -> Result<(), Reply> {
    tracing::warn!(entity = %session.entity, global_id = session.global_id, why, "op refused");
    Err(Reply::Failed {
        code: ErrorCode::EPERM,
        message: format!("operation not permitted: {why}"),
    })
}

/// Refuses a client whose instance (`entity@global_id`) or address (`IP:0/GLOBAL_ID`, from
/// `peer`) is blocklisted at `now`: ESHUTDOWN (Ceph's EBLOCKLISTED). The op paths call it
/// right before an op takes effect (before proposing a mutation to the PG's log, before
/// reading, before registering a watch or sending a notify), with the newest map: an op that
/// waited inside the OSD while the blocklist entry arrived never applies.
pub(crate) fn fenced(
    session: &Session,
    peer: IpAddr,
    map: &ClusterMap,
    now_unix: u64,
) -> Result<(), Reply> {
    let addr = EntityAddr::client(peer, session.global_id);
    let Some(entry) = fencing_entry(&map.blocklist, session.instance(), Some(addr), now_unix)
    else {
        return Ok(());
    };
    tracing::info!(entity = %session.entity, global_id = session.global_id, entry, "op of a blocklisted client refused");
    Err(Reply::Failed {
        code: ErrorCode::ESHUTDOWN,
        message: format!("client {} ({addr}) is blocklisted ({entry})", session.instance()),
    })
}

/// Refuses a session whose ticket expired or whose entity's credentials were revoked after
/// the ticket was issued (`auth_floor`). For Raft traffic between OSDs: the blocklist fences
/// *client* instances (any `profile rbd` user may add entries, to break a dead client's
/// exclusive lock), so an entry naming an OSD's instance must not cut replication.
pub(crate) fn ticket_honoured(
    session: &Session,
    map: &ClusterMap,
    now_unix: u64,
) -> Result<(), Reply> {
    if now_unix >= session.expires_unix {
        return refuse(session, "ticket expired; reconnect with a fresh ticket");
    }
    if map.auth_floor.get(session.name()).is_some_and(|&floor| floor > session.issued_unix) {
        return refuse(session, "credentials revoked since the ticket was issued");
    }
    Ok(())
}

/// What an op vector needs: read if any op reads, write if any op mutates (an empty vector
/// counts as a read). Method calls are classified by `shape_of`; here a call counts as a
/// read.
pub(crate) fn access_of(ops: &[ObjectOp]) -> OsdAccess {
    let write = ops.iter().any(ObjectOp::is_mutation);
    let read = ops.iter().any(|op| !op.is_mutation()) || ops.is_empty();
    OsdAccess { read, write, exec: false }
}

/// What an op vector is once its method calls are looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// The caps it needs: a read-only method needs `r` (Ceph's class-read), a writing one `x`
    /// (class-write).
    pub(crate) access: OsdAccess,
    /// It changes state: it goes through the PG log (a plain mutation or a writing method).
    pub(crate) writes: bool,
}

/// Classifies an op vector, looking up every [`ObjectOp::Call`] in `methods`: an unknown
/// class or method is EOPNOTSUPP; a writing method at a snapshot EROFS.
pub(crate) fn shape_of(
    ops: &[ObjectOp],
    snap: SnapId,
    methods: &dyn ObjectMethods,
) -> Result<Shape, Reply> {
    let mut access = access_of(ops);
    let mut writes = access.write;
    for (index, op) in ops.iter().enumerate() {
        let ObjectOp::Call { class, method, .. } = op else {
            continue;
        };
        let Some(flags) = methods.flags(class, method) else {
            tracing::debug!(class, method, "call of an unknown method");
            return Err(failed(index, ErrorCode::EOPNOTSUPP));
        };
        if flags.write {
            if snap != SNAP_HEAD {
                return Err(failed(index, ErrorCode::EROFS));
            }
            access.exec = true;
            writes = true;
        }
        access.read |= flags.read;
    }
    Ok(Shape { access, writes })
}

/// Stamps every [`ObjectOp::Call`] with the authenticated caller: whatever a client put in
/// `origin` is overwritten, so a method can trust it.
/// The caller's address is formatted only for a vector with a call (most ops have none).
pub(crate) fn stamp_origin(ops: &mut [ObjectOp], session: &Session, peer: IpAddr) {
    let mut addr: Option<String> = None;
    for op in ops {
        if let ObjectOp::Call { origin, .. } = op {
            let addr =
                addr.get_or_insert_with(|| EntityAddr::client(peer, session.global_id).to_string());
            *origin = Some(CallOrigin {
                entity: session.name().to_string(),
                global_id: session.global_id,
                addr: addr.clone(),
            });
        }
    }
}

/// Checks the session's osd caps for `access` on `pool`/`namespace`.
pub(crate) fn caps_allow(
    session: &Session,
    pool: &str,
    namespace: &str,
    access: OsdAccess,
) -> Result<(), Reply> {
    if session.caps.osd.allows(pool, namespace, access) {
        return Ok(());
    }
    tracing::warn!(entity = %session.entity, pool, namespace, ?access, "op denied by caps");
    Err(not_permitted())
}

fn failed(index: usize, code: ErrorCode) -> Reply {
    Reply::Op(OpReply::Failed { index: u32::try_from(index).unwrap_or(u32::MAX), code })
}

/// Validates an op vector before it is proposed or read: name length, op count, snapshot
/// context, no mutation of a snapshot (EROFS), no retired client snap trim (EOPNOTSUPP),
/// every payload's crc (EINVAL), and the data the vector carries (at most
/// `quarry_types::OP_DATA_BYTES_MAX`, else EMSGSIZE: it would not fit one log entry).
pub(crate) fn validate(op: &OsdOp) -> Result<(), Reply> {
    if op.name.len() > OBJECT_NAME_LEN_MAX {
        return Err(failed(0, ErrorCode::ENAMETOOLONG));
    }
    if op.ops.len() > OPS_PER_REQUEST_MAX {
        return Err(failed(OPS_PER_REQUEST_MAX, ErrorCode::EINVAL));
    }
    // More data than one log entry holds (a WAL record): refused before it reaches the log,
    // whose refusal openraft would treat as fatal for the PG.
    if let Some(index) = ObjectOp::vector_too_big(&op.ops) {
        tracing::warn!(object = op.name, index, "op vector carries too much data: refused");
        return Err(failed(index, ErrorCode::EMSGSIZE));
    }
    let mutates = op.ops.iter().any(ObjectOp::is_mutation);
    if mutates && !op.snapc.is_valid() {
        return Err(failed(0, ErrorCode::EINVAL));
    }
    for (index, item) in op.ops.iter().enumerate() {
        // Trimming is the PGs' own job since snapshots are cluster-owned: no client asks.
        if matches!(item, ObjectOp::SnapTrimRetired { .. }) {
            return Err(failed(index, ErrorCode::EOPNOTSUPP));
        }
        if item.is_mutation() && op.snap != SNAP_HEAD {
            return Err(failed(index, ErrorCode::EROFS));
        }
        let payload = match item {
            ObjectOp::Write { data, .. } | ObjectOp::WriteFull { data } => Some(data),
            _ => None,
        };
        let store_verifies = match item {
            ObjectOp::Write { off, data } => verified_by_the_store(*off, data),
            ObjectOp::WriteFull { data } => verified_by_the_store(0, data),
            _ => false,
        };
        if !store_verifies && payload.is_some_and(|p| !p.verify()) {
            tracing::warn!(object = op.name, index, "payload crc mismatch: refused");
            return Err(failed(index, ErrorCode::EINVAL));
        }
    }
    Ok(())
}

/// Large payloads of whole 4 KiB chunks at a chunk boundary are not checked against their crc
/// here: the store checks every write payload against the client's crc anyway, with the
/// per-chunk crcs it computes in the same pass (the apply's precheck; for a placed write,
/// the placement's chunk crcs combined, `quarry_store::PlacedOp`), on every replica. A bad
/// one fails there with the same EINVAL, and changes nothing; checking it here too was a
/// second pass over 4 MiB per write (7% of the server's samples, issue 14 fourth round).
fn verified_by_the_store(off: u64, data: &Payload) -> bool {
    const CHUNK: u64 = 4096;
    let len = data.len() as u64;
    off.is_multiple_of(CHUNK) && len.is_multiple_of(CHUNK) && len >= 64 << 10
}

/// Refuses an op whose object name does not hash to the PG it names (`pg_num` is the pool's
/// PG count). Clients compute the PG with `quarry_placement::pg_of`; an op sent to another PG
/// of the pool (a buggy or lying client) would otherwise store the object where no reader
/// looks for it: absent to every read of that name, yet listed. EINVAL, nothing changes
/// (Ceph answers such misdirected ops with an error too).
///
/// An op sent with an older map than ours (`op.epoch < epoch`) may name the PG its object was
/// in before the pool's `pg_num` grew: that is a stale map, not a lie, and is answered
/// "retry" (the client takes our map and resends to the child PG).
pub(crate) fn placed(op: &OsdOp, pg_num: u32, epoch: u64) -> Result<(), Reply> {
    if pg_num > 0 && quarry_placement::pg_of(&op.name, pg_num) == op.pg.seed {
        return Ok(());
    }
    if op.epoch < epoch && pg_num > 0 {
        tracing::debug!(object = op.name, pg = %op.pg, pg_num, "op placed with an older map: retry");
        return Err(Reply::Retry { epoch });
    }
    tracing::warn!(object = op.name, pg = %op.pg, pg_num, "op names a pg its object is not in");
    let message = format!("object '{}' is not in pg {} (misdirected op)", op.name, op.pg);
    Err(Reply::Failed { code: ErrorCode::EINVAL, message })
}

/// `pg` is one of its pool's `pg_num` PGs at our map `map_epoch`. A client whose map (`epoch`)
/// differs from ours retries: a newer one may know a split ours does not show yet (it was not
/// in even after the wait for it), an older one may name a PG a merge took away (with our map
/// it retargets the object, or its listing starts over). EINVAL only when both maps agree.
pub(crate) fn pg_exists(pg: PgId, pg_num: u32, epoch: u64, map_epoch: u64) -> Result<(), Reply> {
    if pg.seed < pg_num {
        return Ok(());
    }
    if epoch != map_epoch {
        tracing::debug!(%pg, pg_num, epoch, map_epoch, "pg beyond our map's pg_num: retry");
        return Err(Reply::Retry { epoch: map_epoch });
    }
    let message = format!("pg {pg} does not exist (pg_num {pg_num})");
    Err(Reply::Failed { code: ErrorCode::EINVAL, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use quarry_types::{EntityName, Payload, SnapContext};
    use std::collections::BTreeMap;

    fn session(osd_caps: &str) -> Session {
        session_of(EntityName::client("qemu"), osd_caps)
    }

    fn session_of(entity: EntityName, osd_caps: &str) -> Session {
        let caps = BTreeMap::from([("osd".to_string(), osd_caps.to_string())]);
        Session::new(entity, 7, quarry_auth::Caps::parse(&caps).unwrap(), 1000, 2000)
    }

    fn op(ops: Vec<ObjectOp>) -> OsdOp {
        OsdOp {
            reqid: None,
            pg: PgId { pool: 1, seed: 0 },
            epoch: 1,
            name: "obj".into(),
            snapc: SnapContext::default(),
            snap: SNAP_HEAD,
            ops,
        }
    }

    fn code(reply: Reply) -> ErrorCode {
        match reply {
            Reply::Op(OpReply::Failed { code, .. }) | Reply::Failed { code, .. } => code,
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn sessions_expire_are_revoked_and_blocklisted() {
        let s = session("allow *");
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut map = ClusterMap::default();
        assert!(ticket_honoured(&s, &map, 1500).is_ok());
        assert_eq!(code(ticket_honoured(&s, &map, 2000).unwrap_err()), ErrorCode::EPERM);
        map.auth_floor.insert("client.qemu".into(), 1000);
        assert!(ticket_honoured(&s, &map, 1500).is_ok(), "floor equal to issue time is fine");
        map.auth_floor.insert("client.qemu".into(), 1001);
        assert!(ticket_honoured(&s, &map, 1500).is_err());
        map.auth_floor.clear();
        map.blocklist.insert("client.qemu@7".into(), 1400);
        assert!(fenced(&s, ip, &map, 1500).is_ok(), "expired blocklist entry");
        map.blocklist.insert("client.qemu@7".into(), 1600);
        assert_eq!(code(fenced(&s, ip, &map, 1500).unwrap_err()), ErrorCode::ESHUTDOWN);
        map.blocklist.insert("client.qemu@8".into(), 1600);
        map.blocklist.remove("client.qemu@7");
        assert!(fenced(&s, ip, &map, 1500).is_ok(), "another instance");
        map.blocklist.insert("10.0.0.5:0/7".into(), 1600);
        assert_eq!(code(fenced(&s, ip, &map, 1500).unwrap_err()), ErrorCode::ESHUTDOWN);
        map.blocklist.remove("10.0.0.5:0/7");
        map.blocklist.insert("10.0.0.5:0/0".into(), 1600);
        assert!(fenced(&s, ip, &map, 1500).is_err(), "the whole IP");
        assert!(fenced(&s, "10.0.0.6".parse().unwrap(), &map, 1500).is_ok(), "another IP");
    }

    #[test]
    fn peer_sessions_ignore_the_blocklist_but_not_expiry_or_revocation() {
        let s = session_of(EntityName::osd(1), "allow *");
        let mut map = ClusterMap::default();
        map.blocklist.insert("osd.1@7".into(), 1600);
        assert!(fenced(&s, "127.0.0.1".parse().unwrap(), &map, 1500).is_err());
        assert!(ticket_honoured(&s, &map, 1500).is_ok(), "the blocklist fences clients only");
        assert!(ticket_honoured(&s, &map, 2000).is_err(), "expired");
        map.auth_floor.insert("osd.1".into(), 1001);
        assert!(ticket_honoured(&s, &map, 1500).is_err(), "revoked");
    }

    #[test]
    fn caps_are_checked_per_pool_and_access() {
        let write = vec![ObjectOp::WriteFull { data: Payload::new(Bytes::from_static(b"x")) }];
        let read = vec![ObjectOp::Read { off: 0, len: 0 }];
        assert_eq!(access_of(&write), OsdAccess::WRITE);
        assert_eq!(access_of(&read), OsdAccess::READ);
        assert_eq!(access_of(&[]), OsdAccess::READ);
        let mixed = [read.clone(), write.clone()].concat();
        assert_eq!(access_of(&mixed), OsdAccess::READ_WRITE);

        let rbd = session("profile rbd pool=rbd");
        assert!(caps_allow(&rbd, "rbd", "", access_of(&mixed)).is_ok());
        assert_eq!(
            code(caps_allow(&rbd, "other", "", OsdAccess::READ).unwrap_err()),
            ErrorCode::EPERM
        );
        let ro = session("profile rbd-read-only");
        assert!(caps_allow(&ro, "rbd", "", OsdAccess::READ).is_ok());
        assert!(caps_allow(&ro, "rbd", "", OsdAccess::WRITE).is_err());
        // A grant limited to a namespace covers that namespace only.
        let ns = session("allow rw pool=rbd namespace=tenant1");
        assert!(caps_allow(&ns, "rbd", "tenant1", OsdAccess::READ_WRITE).is_ok());
        assert!(caps_allow(&ns, "rbd", "", OsdAccess::READ).is_err());
        assert!(caps_allow(&ns, "rbd", "tenant2", OsdAccess::READ).is_err());
    }

    #[test]
    fn ops_must_name_the_pg_of_their_object() {
        let mut o = op(vec![ObjectOp::Stat]);
        let seed = quarry_placement::pg_of("obj", 8);
        o.pg.seed = seed;
        assert!(placed(&o, 8, o.epoch).is_ok());
        o.pg.seed = (seed + 1) % 8;
        assert_eq!(code(placed(&o, 8, o.epoch).unwrap_err()), ErrorCode::EINVAL);
        // Sent with an older map (the pool may have split since): retry, not EINVAL.
        assert!(matches!(placed(&o, 8, o.epoch + 1), Err(Reply::Retry { .. })));
        o.pg.seed = 0;
        assert!(placed(&o, 1, o.epoch).is_ok());
        assert!(placed(&o, 0, o.epoch).is_err(), "a pool without PGs holds nothing");
    }

    /// A PG beyond the pool's pg_num is EINVAL when the client's map is ours; with another
    /// map (a split we have not seen yet, a merge the client has not) it retries.
    #[test]
    fn a_pg_beyond_pg_num_is_refused_only_when_the_maps_agree() {
        let pg = PgId { pool: 1, seed: 9 };
        assert!(pg_exists(pg, 16, 5, 5).is_ok());
        assert!(pg_exists(pg, 16, 4, 5).is_ok());
        assert_eq!(code(pg_exists(pg, 4, 5, 5).unwrap_err()), ErrorCode::EINVAL);
        assert!(matches!(pg_exists(pg, 4, 4, 5), Err(Reply::Retry { epoch: 5 })));
        assert!(matches!(pg_exists(pg, 4, 6, 5), Err(Reply::Retry { epoch: 5 })));
    }

    #[test]
    fn validation_refuses_bad_vectors() {
        let good = Payload::new(Bytes::from_static(b"data"));
        let mut bad = good.clone();
        bad.crc ^= 1;
        assert!(validate(&op(vec![ObjectOp::Write { off: 0, data: good.clone() }])).is_ok());
        let reply = validate(&op(vec![ObjectOp::Stat, ObjectOp::Write { off: 0, data: bad }]));
        assert_eq!(reply.unwrap_err(), failed(1, ErrorCode::EINVAL));
        // A large whole-chunk payload is left to the store (its apply fails with EINVAL).
        let mut large = Payload::new(Bytes::from(vec![7u8; 64 << 10]));
        large.crc ^= 1;
        let write = |off| ObjectOp::Write { off, data: large.clone() };
        assert!(validate(&op(vec![write(4096)])).is_ok(), "left to the store");
        let reply = validate(&op(vec![write(4095)]));
        assert_eq!(reply.unwrap_err(), failed(0, ErrorCode::EINVAL), "not at a chunk boundary");

        let mut snap = op(vec![ObjectOp::Read { off: 0, len: 0 }, ObjectOp::Remove]);
        snap.snap = 4;
        assert_eq!(validate(&snap).unwrap_err(), failed(1, ErrorCode::EROFS));
        snap.ops.pop();
        assert!(validate(&snap).is_ok(), "reads of a snapshot are fine");

        let mut long = op(vec![ObjectOp::Stat]);
        long.name = "n".repeat(OBJECT_NAME_LEN_MAX + 1);
        assert_eq!(code(validate(&long).unwrap_err()), ErrorCode::ENAMETOOLONG);

        let mut snapc = op(vec![ObjectOp::Remove]);
        snapc.snapc = SnapContext { seq: 1, snaps: vec![3] };
        assert_eq!(code(validate(&snapc).unwrap_err()), ErrorCode::EINVAL);

        let many = op(vec![ObjectOp::Stat; OPS_PER_REQUEST_MAX + 1]);
        assert_eq!(code(validate(&many).unwrap_err()), ErrorCode::EINVAL);
    }
}
