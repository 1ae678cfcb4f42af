//! Identifiers: pools, placement groups, OSDs, snapshots and authenticated entities.

use serde::{Deserialize, Serialize};

/// A pool's numeric id, assigned by the monitor (never reused).
pub type PoolId = u64;
/// An OSD's numeric id (`osd.N`).
pub type OsdId = u64;
/// A snapshot id. Ids grow monotonically per pool; `SNAP_HEAD` names the live object.
pub type SnapId = u64;
/// The "no snapshot" id: read the head (Ceph's CEPH_NOSNAP).
pub const SNAP_HEAD: SnapId = u64::MAX - 1;

/// A placement group: `seed` in `0..pg_num` of `pool`. Printed as Ceph does: `1.1f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PgId {
    /// The pool the PG belongs to.
    pub pool: PoolId,
    /// The PG's index within the pool, `< pg_num`.
    pub seed: u32,
}

impl std::fmt::Display for PgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:x}", self.pool, self.seed)
    }
}

/// The kind of an authenticated entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityType {
    /// A client (`client.admin`, `client.qemu`).
    Client,
    /// A storage daemon (`osd.3`).
    Osd,
    /// A monitor (`mon.` or `mon.a`).
    Mon,
}

/// An authenticated entity name: `TYPE.ID`, e.g. `client.qemu`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityName {
    /// The entity's type.
    pub kind: EntityType,
    /// The id part after the dot (may be empty for `mon.`).
    pub id: String,
}

impl EntityName {
    /// A client entity: `client.ID`.
    pub fn client(id: &str) -> Self {
        EntityName { kind: EntityType::Client, id: id.to_string() }
    }

    /// An OSD entity: `osd.N`.
    pub fn osd(id: OsdId) -> Self {
        EntityName { kind: EntityType::Osd, id: id.to_string() }
    }

    /// The monitor entity `mon.`.
    pub fn mon() -> Self {
        EntityName { kind: EntityType::Mon, id: String::new() }
    }

    /// Parses `TYPE.ID` (`client.admin`, `osd.0`, `mon.`). Returns None for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, id) = s.split_once('.')?;
        let kind = match kind {
            "client" => EntityType::Client,
            "osd" => EntityType::Osd,
            "mon" => EntityType::Mon,
            _ => return None,
        };
        let valid = id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
        if !valid || (id.is_empty() && kind != EntityType::Mon) || id.len() > 256 {
            return None;
        }
        Some(EntityName { kind, id: id.to_string() })
    }
}

impl std::fmt::Display for EntityName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            EntityType::Client => "client",
            EntityType::Osd => "osd",
            EntityType::Mon => "mon",
        };
        write!(f, "{}.{}", kind, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_names_round_trip_and_reject_garbage() {
        for s in ["client.admin", "client.qemu", "osd.12", "mon."] {
            assert_eq!(EntityName::parse(s).unwrap().to_string(), s);
        }
        for s in ["qemu", "client.", "bogus.x", "client.a b", ""] {
            assert!(EntityName::parse(s).is_none(), "{s} must not parse");
        }
    }
}

/// A client request id (Ceph's `osd_reqid_t` without the entity): `client` is a random number
/// a client instance (one `Rados` handle) picks once, `tid` that instance's counter of
/// mutating requests. Every resend of one request carries the same id, which is how an OSD
/// recognises a resend whose first copy was already applied (the PG's duplicate table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReqId {
    /// The client instance: random, chosen once per instance (not the monitor's global id,
    /// which changes when the client reconnects to a monitor).
    pub client: u64,
    /// The request's number within the instance; the same on every resend.
    pub tid: u64,
}

/// A [`ReqId`] qualified by the entity the OSD authenticated it from: what a PG log entry and
/// the duplicate table key on, so one entity cannot collide with (or probe) another's ids.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityReqId {
    /// The authenticated sender.
    pub entity: EntityName,
    /// The id the client sent.
    pub reqid: ReqId,
}

impl std::fmt::Display for EntityReqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{:x}:{}", self.entity, self.reqid.client, self.reqid.tid)
    }
}
