//! The monitor's replicated state and its deterministic `apply`: the cluster map, the auth
//! database, the rotating service keys and the id counters. Pure: no clock, no randomness,
//! no I/O; every input comes from the [`Proposal`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use quarry_placement::Candidate;
use quarry_types::{EntityName, ErrorCode, OsdId, PgId, PoolId, SnapId};
use quarry_wire::{ClusterMap, OsdInfo, PoolInfo, PoolSnap, SnapMode};

use quarry_auth::{ServiceKey, ServiceKeyRing};

use crate::log_op::{Applied, EntityRecord, Op, OpError, Outcome, Proposal, StoredKey};

/// Largest `pg_num` a pool may have.
pub const PG_NUM_MAX: u32 = 1024;
/// Largest replica count.
pub const POOL_SIZE_MAX: u32 = 10;
/// Longest pool (and application) name.
pub const POOL_NAME_LEN_MAX: usize = 128;
/// Longest OSD host name.
pub const HOST_LEN_MAX: usize = 255;
/// First global id handed out (Ceph's are in the same range).
pub const GLOBAL_ID_FIRST: u64 = 4096;
/// Longest pool snapshot name.
pub const SNAP_NAME_LEN_MAX: usize = 255;
/// Longest cap string (service name + cap text).
pub const CAP_LEN_MAX: usize = 4096;
/// Most services in one entity's caps.
pub const CAP_SERVICES_MAX: usize = 8;
/// Shortest service key lifetime (quarry-auth's ring needs at least 2 s).
pub const SERVICE_KEY_TTL_MIN: u64 = 2;
/// Most global ids reserved by one command.
pub const GLOBAL_ID_BATCH_MAX: u64 = 1 << 20;

/// An entity's key and caps in the auth database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityAuth {
    /// The shared secret.
    pub key: StoredKey,
    /// Caps by service, as written.
    pub caps: BTreeMap<String, String>,
}

/// Everything the monitors agree on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MonState {
    /// The bootstrap command has been applied.
    pub bootstrapped: bool,
    /// The cluster map served to clients and OSDs.
    pub map: ClusterMap,
    /// Entities by name.
    pub auth: BTreeMap<EntityName, EntityAuth>,
    /// The rotating service keys (current and previous); None before bootstrap.
    pub service_keys: Option<ServiceKeyRing>,
    /// Next global id to reserve.
    pub next_global_id: u64,
    /// Next pool id (pool ids are never reused).
    pub next_pool_id: PoolId,
}

impl MonState {
    /// Applies one committed proposal. A refused op changes nothing.
    pub fn apply(&mut self, p: &Proposal) -> Applied {
        let now = p.now_unix;
        match &p.op {
            Op::Bootstrap { .. } => self.bootstrap(&p.op),
            Op::SetMonAddr { name, addr } => Ok(self.set_mon_addr(name, *addr)),
            Op::PoolCreate { name, pg_num, size } => self.pool_create(name, *pg_num, *size),
            Op::PoolRm { name } => Ok(self.pool_rm(name)),
            Op::PoolApplicationEnable { pool, app } => self.app_enable(pool, app),
            Op::SnapCreate { pool } => self.snap_create(*pool),
            Op::SnapRemove { pool, snap } => self.snap_remove(*pool, *snap),
            Op::OsdBoot { id, addr, host } => self.osd_boot(*id, *addr, host),
            Op::OsdDown { id, up_from } => Ok(self.osd_down(*id, *up_from)),
            Op::AuthGetOrCreate { entity, caps, key } => self.auth_get_or_create(entity, caps, key),
            Op::AuthCaps { entity, caps } => self.auth_caps(entity, caps, now),
            Op::AuthDel { entity } => self.auth_del(entity, now),
            Op::AuthImport { entries } => self.auth_import(entries, now),
            Op::BlocklistAdd { instance, expire_secs } => {
                self.blocklist_add(instance, *expire_secs, now)
            }
            Op::RotateServiceKey { key } => Ok(self.rotate_service_key(key)),
            Op::AllocGlobalIds { count } => Ok(self.alloc_global_ids(*count)),
            Op::BlocklistRm { entry } => self.blocklist_rm(entry, now),
            Op::PoolSnapCreate { pool, snap, strict } => {
                self.pool_snap_create(pool, snap, *strict, now)
            }
            Op::PoolSnapRemove { pool, snap, strict } => self.pool_snap_remove(pool, snap, *strict),
        }
    }

    fn bump(&mut self) -> u64 {
        self.map.epoch += 1;
        self.map.epoch
    }

    fn bootstrap(&mut self, op: &Op) -> Applied {
        if self.bootstrapped {
            return Ok(Outcome::Done("already bootstrapped".into()));
        }
        let mut next = self.clone();
        next.bootstrap_into(op)?;
        next.bootstrapped = true;
        *self = next;
        Ok(Outcome::Done(format!("bootstrapped cluster {}", self.map.fsid)))
    }

    fn bootstrap_into(&mut self, op: &Op) -> Result<(), OpError> {
        let Op::Bootstrap { fsid, entities, osds, pools, service_key, service_key_ttl, mon } = op
        else {
            return Err(OpError::inval("not a bootstrap command"));
        };
        if *service_key_ttl < SERVICE_KEY_TTL_MIN {
            return Err(OpError::inval(format!(
                "service key ttl {service_key_ttl} s is too short"
            )));
        }
        self.map.fsid = fsid.clone();
        self.map.mons.insert(mon.0.clone(), mon.1);
        for record in entities {
            check_caps(&record.caps)?;
            self.insert_entity(record);
        }
        for (id, host) in osds {
            check_host(host)?;
            self.map.osds.insert(*id, new_osd(*id, host));
        }
        let ring = ServiceKeyRing::from_keys(*service_key_ttl, service_key.clone(), None);
        self.service_keys = Some(ring);
        self.bump();
        for (name, pg_num, size) in pools {
            self.pool_create(name, *pg_num, *size)?;
            self.app_enable(name, "rbd")?;
        }
        Ok(())
    }

    fn insert_entity(&mut self, record: &EntityRecord) {
        let auth = EntityAuth { key: record.key.clone(), caps: record.caps.clone() };
        self.auth.insert(record.entity.clone(), auth);
    }

    fn set_mon_addr(&mut self, name: &str, addr: SocketAddr) -> Outcome {
        if self.map.mons.get(name) != Some(&addr) {
            self.map.mons.insert(name.to_string(), addr);
            self.bump();
        }
        Outcome::Done(String::new())
    }

    fn pool_create(&mut self, name: &str, pg_num: u32, size: u32) -> Applied {
        check_pool_name(name)?;
        if !(1..=PG_NUM_MAX).contains(&pg_num) {
            return Err(OpError::inval(format!("pg_num {pg_num} out of range 1..={PG_NUM_MAX}")));
        }
        if !(1..=POOL_SIZE_MAX).contains(&size) {
            return Err(OpError::inval(format!(
                "pool size {size} out of range 1..={POOL_SIZE_MAX}"
            )));
        }
        if self.map.pool_by_name(name).is_some() {
            return Ok(Outcome::Done(format!("pool '{name}' already exists")));
        }
        let candidates = self.placement_candidates();
        if candidates.is_empty() {
            return Err(OpError::inval(format!(
                "cannot create pool '{name}': no OSD is in the cluster (add or start an OSD first)"
            )));
        }
        let id = self.next_pool_id.max(1);
        self.next_pool_id = id + 1;
        let acting = (0..pg_num)
            .map(|seed| {
                quarry_placement::place(PgId { pool: id, seed }, size as usize, &candidates)
            })
            .collect();
        let pool = new_pool(id, name, pg_num, size, acting);
        self.map.pools.insert(id, pool);
        self.bump();
        Ok(Outcome::Done(format!("pool '{name}' created")))
    }

    fn placement_candidates(&self) -> Vec<Candidate> {
        let usable = |o: &&OsdInfo| o.in_cluster && o.weight > 0.0;
        let to_candidate =
            |o: &OsdInfo| Candidate { id: o.id, host: o.host.clone(), weight: o.weight };
        self.map.osds.values().filter(usable).map(to_candidate).collect()
    }

    fn pool_rm(&mut self, name: &str) -> Outcome {
        let Some(id) = self.map.pool_by_name(name).map(|p| p.id) else {
            return Outcome::Done(format!("pool '{name}' does not exist"));
        };
        self.map.pools.remove(&id);
        self.bump();
        Outcome::Done(format!("pool '{name}' removed"))
    }

    fn pool_mut_by_name(&mut self, name: &str) -> Result<&mut PoolInfo, OpError> {
        let found = self.map.pools.values_mut().find(|p| p.name == name);
        found.ok_or_else(|| OpError::noent(format!("unrecognized pool '{name}'")))
    }

    fn app_enable(&mut self, pool: &str, app: &str) -> Applied {
        check_app_name(app)?;
        let info = self.pool_mut_by_name(pool)?;
        let changed = info.applications.insert(app.to_string());
        if changed {
            self.bump();
        }
        Ok(Outcome::Done(format!("enabled application '{app}' on pool '{pool}'")))
    }

    fn pool_mut(&mut self, id: PoolId) -> Result<&mut PoolInfo, OpError> {
        self.map
            .pools
            .get_mut(&id)
            .ok_or_else(|| OpError::noent(format!("pool {id} does not exist")))
    }

    fn snap_create(&mut self, pool: PoolId) -> Applied {
        let info = self.pool_mut(pool)?;
        if info.snap_mode == SnapMode::Pool {
            let name = &info.name;
            return Err(OpError::inval(format!("pool {name} is in pool snaps mode")));
        }
        info.snap_mode = SnapMode::SelfManaged;
        info.snap_seq += 1;
        let snap = info.snap_seq;
        self.bump();
        Ok(Outcome::SnapId(snap))
    }

    fn snap_remove(&mut self, pool: PoolId, snap: SnapId) -> Applied {
        let info = self.pool_mut(pool)?;
        if info.snap_mode == SnapMode::Pool {
            let name = &info.name;
            return Err(OpError::inval(format!("pool {name} is in pool snaps mode")));
        }
        if snap == 0 || snap > info.snap_seq {
            return Err(OpError::noent(format!("snapshot {snap} does not exist in pool {pool}")));
        }
        if info.removed_snaps.insert(snap) {
            self.bump();
        }
        Ok(Outcome::Done(String::new()))
    }

    /// Ceph's `osd pool mksnap`: a new id from the pool's `snap_seq`, named and stamped.
    fn pool_snap_create(&mut self, pool: &str, snap: &str, strict: bool, now: u64) -> Applied {
        check_snap_name(snap)?;
        let info = self.pool_mut_by_name(pool)?;
        if info.snap_mode == SnapMode::SelfManaged {
            return Err(OpError::inval(format!("pool {pool} is in unmanaged snaps mode")));
        }
        if info.pool_snap_by_name(snap).is_some() {
            let message = format!("pool {pool} snap {snap} already exists");
            return if strict {
                Err(OpError::new(ErrorCode::EEXIST, message))
            } else {
                Ok(Outcome::Done(message))
            };
        }
        info.snap_mode = SnapMode::Pool;
        info.snap_seq += 1;
        let id = info.snap_seq;
        info.pool_snaps.insert(id, PoolSnap { name: snap.to_string(), stamp: now });
        self.bump();
        Ok(Outcome::Done(format!("created pool {pool} snap {snap}")))
    }

    /// Ceph's `osd pool rmsnap`: the snapshot goes and its id joins `removed_snaps`.
    fn pool_snap_remove(&mut self, pool: &str, snap: &str, strict: bool) -> Applied {
        let info = self.pool_mut_by_name(pool)?;
        if info.snap_mode == SnapMode::SelfManaged {
            return Err(OpError::inval(format!("pool {pool} is in unmanaged snaps mode")));
        }
        let Some(id) = info.pool_snap_by_name(snap) else {
            let message = format!("pool {pool} snap {snap} does not exist");
            return if strict { Err(OpError::noent(message)) } else { Ok(Outcome::Done(message)) };
        };
        info.pool_snaps.remove(&id);
        info.removed_snaps.insert(id);
        self.bump();
        Ok(Outcome::Done(format!("removed pool {pool} snap {snap}")))
    }

    fn osd_boot(&mut self, id: OsdId, addr: SocketAddr, host: &str) -> Applied {
        check_host(host)?;
        if !self.map.osds.contains_key(&id) {
            if !self.auth.contains_key(&EntityName::osd(id)) {
                return Err(OpError::noent(format!("osd.{id} does not exist (no osd.{id} key)")));
            }
            self.map.osds.insert(id, new_osd(id, host));
        }
        let epoch = self.bump();
        let Some(osd) = self.map.osds.get_mut(&id) else {
            return Err(OpError::noent(format!("osd.{id} does not exist")));
        };
        osd.addr = Some(addr);
        osd.host = host.to_string();
        osd.up = true;
        osd.up_from = epoch;
        Ok(Outcome::Booted { epoch, up_from: epoch })
    }

    fn osd_down(&mut self, id: OsdId, up_from: u64) -> Outcome {
        let Some(osd) = self.map.osds.get_mut(&id) else {
            return Outcome::Done(String::new());
        };
        if !osd.up || osd.up_from != up_from {
            return Outcome::Done(String::new());
        }
        osd.up = false;
        self.bump();
        Outcome::Done(format!("marked down osd.{id}"))
    }

    fn auth_get_or_create(
        &mut self,
        entity: &EntityName,
        caps: &BTreeMap<String, String>,
        key: &StoredKey,
    ) -> Applied {
        check_caps(caps)?;
        if let Some(existing) = self.auth.get(entity) {
            for (service, cap) in caps {
                if existing.caps.get(service) != Some(cap) {
                    return Err(OpError::inval(format!(
                        "key for {entity} exists but cap {service} does not match"
                    )));
                }
            }
            return Ok(entity_outcome(entity, existing));
        }
        let auth = EntityAuth { key: key.clone(), caps: caps.clone() };
        let outcome = entity_outcome(entity, &auth);
        self.auth.insert(entity.clone(), auth);
        Ok(outcome)
    }

    fn auth_caps(
        &mut self,
        entity: &EntityName,
        caps: &BTreeMap<String, String>,
        now: u64,
    ) -> Applied {
        check_caps(caps)?;
        let Some(existing) = self.auth.get_mut(entity) else {
            return Err(OpError::noent(format!("couldn't find entry {entity}")));
        };
        existing.caps = caps.clone();
        self.revoke_tickets(entity, now);
        self.bump();
        Ok(Outcome::Done(format!("updated caps for {entity}")))
    }

    fn auth_del(&mut self, entity: &EntityName, now: u64) -> Applied {
        if self.auth.remove(entity).is_none() {
            return Err(OpError::noent(format!("failed to find {entity} in keyring")));
        }
        self.revoke_tickets(entity, now);
        self.bump();
        Ok(Outcome::Done("updated".into()))
    }

    fn auth_import(&mut self, entries: &[EntityRecord], now: u64) -> Applied {
        for record in entries {
            check_caps(&record.caps)?;
        }
        let mut revoked = false;
        for record in entries {
            let changed = self
                .auth
                .get(&record.entity)
                .is_some_and(|old| old.key != record.key || old.caps != record.caps);
            if changed {
                self.revoke_tickets(&record.entity, now);
                revoked = true;
            }
            self.insert_entity(record);
        }
        if revoked {
            self.bump();
        }
        Ok(Outcome::Done("imported keyring".into()))
    }

    /// Revokes every ticket of `entity` issued so far: OSDs honour a ticket only if
    /// `issued_unix >= auth_floor`, so the floor must be *above* the issue time of every
    /// ticket already out. Tickets carry whole seconds: one issued earlier in the same second
    /// as the change (the proposer's clock `now`) holds the old caps, or a deleted entity's,
    /// so the floor is at least `now + 1`. Tickets issued after a revocation are stamped no
    /// earlier than its floor ([`MonState::ticket_issue_time`]), so a second revocation in
    /// that second goes one above the previous floor. The floor never moves back.
    fn revoke_tickets(&mut self, entity: &EntityName, now: u64) {
        let entry = self.map.auth_floor.entry(entity.to_string()).or_insert(0);
        *entry = (*entry).max(now).saturating_add(1);
    }

    /// The issue time to stamp on a ticket of `entity` issued at `now`: `now`, or the entity's
    /// `auth_floor` if that is later (a ticket issued after a revocation in the same second
    /// carries the new caps and must stay valid).
    pub fn ticket_issue_time(&self, entity: &EntityName, now: u64) -> u64 {
        self.map.auth_floor.get(&entity.to_string()).map_or(now, |&floor| floor.max(now))
    }

    fn blocklist_add(&mut self, instance: &str, expire_secs: u64, now: u64) -> Applied {
        check_instance(instance)?;
        let until = now.saturating_add(expire_secs);
        self.map.blocklist.retain(|_, expiry| *expiry > now);
        self.map.blocklist.insert(instance.to_string(), until);
        self.bump();
        Ok(Outcome::Done(format!("blocklisting {instance} until {until} ({expire_secs} sec)")))
    }

    /// Removes a blocklist entry; an absent (or expired) one changes nothing, as in Ceph.
    fn blocklist_rm(&mut self, entry: &str, now: u64) -> Applied {
        check_instance(entry)?;
        let live = self.map.blocklist.get(entry).is_some_and(|&until| until > now);
        if self.map.blocklist.remove(entry).is_none() {
            return Ok(Outcome::Done(format!("{entry} isn't blocklisted")));
        }
        self.bump();
        if !live {
            return Ok(Outcome::Done(format!("{entry} isn't blocklisted")));
        }
        Ok(Outcome::Done(format!("un-blocklisting {entry}")))
    }

    fn rotate_service_key(&mut self, key: &ServiceKey) -> Outcome {
        let Some(ring) = self.service_keys.as_mut() else {
            return Outcome::Done("no service keys before bootstrap".into());
        };
        if key.id <= ring.current().id {
            return Outcome::Done("stale rotation ignored".into());
        }
        ring.install(key.clone());
        Outcome::Done(String::new())
    }

    fn alloc_global_ids(&mut self, count: u64) -> Outcome {
        let count = count.clamp(1, GLOBAL_ID_BATCH_MAX);
        let start = self.next_global_id.max(GLOBAL_ID_FIRST);
        self.next_global_id = start.saturating_add(count);
        Outcome::GlobalIds { start }
    }
}

fn entity_outcome(entity: &EntityName, auth: &EntityAuth) -> Outcome {
    Outcome::Entity { entity: entity.clone(), key: auth.key.clone(), caps: auth.caps.clone() }
}

fn new_osd(id: OsdId, host: &str) -> OsdInfo {
    OsdInfo {
        id,
        addr: None,
        host: host.to_string(),
        up: false,
        in_cluster: true,
        weight: 1.0,
        up_from: 0,
        used_bytes: 0,
        avail_bytes: 0,
    }
}

fn new_pool(id: PoolId, name: &str, pg_num: u32, size: u32, acting: Vec<Vec<OsdId>>) -> PoolInfo {
    PoolInfo {
        id,
        name: name.to_string(),
        pg_num,
        size,
        min_size: size - size / 2,
        applications: BTreeSet::new(),
        snap_seq: 0,
        removed_snaps: BTreeSet::new(),
        acting,
        stored_objects: 0,
        stored_bytes: 0,
        snap_mode: Default::default(),
        pool_snaps: Default::default(),
    }
}

/// Caps must parse as quarry-auth (and Ceph) understands them, within size bounds.
pub fn check_caps(caps: &BTreeMap<String, String>) -> Result<(), OpError> {
    let too_long = caps.iter().any(|(k, v)| k.len() + v.len() > CAP_LEN_MAX);
    if caps.len() > CAP_SERVICES_MAX || too_long {
        return Err(OpError::inval(format!(
            "caps too large: at most {CAP_SERVICES_MAX} services of {CAP_LEN_MAX} bytes"
        )));
    }
    quarry_auth::Caps::parse(caps).map(|_| ()).map_err(|e| OpError::inval(e.to_string()))
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.".contains(c)
}

/// Pool names: 1..=128 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn check_pool_name(name: &str) -> Result<(), OpError> {
    let starts_ok = !name.starts_with('.') && !name.starts_with('-');
    if name.is_empty()
        || name.len() > POOL_NAME_LEN_MAX
        || !starts_ok
        || !name.chars().all(is_name_char)
    {
        return Err(OpError::inval(format!(
            "invalid pool name '{name}': use 1 to {POOL_NAME_LEN_MAX} of [A-Za-z0-9_.-], not starting with '.' or '-'"
        )));
    }
    Ok(())
}

fn check_app_name(app: &str) -> Result<(), OpError> {
    if app.is_empty() || app.len() > POOL_NAME_LEN_MAX || !app.chars().all(is_name_char) {
        return Err(OpError::inval(format!("invalid application name '{app}'")));
    }
    Ok(())
}

fn check_snap_name(name: &str) -> Result<(), OpError> {
    if name.is_empty() || name.len() > SNAP_NAME_LEN_MAX {
        return Err(OpError::inval(format!(
            "snapshot name must be 1 to {SNAP_NAME_LEN_MAX} bytes long"
        )));
    }
    Ok(())
}

fn check_host(host: &str) -> Result<(), OpError> {
    if host.is_empty() || host.len() > HOST_LEN_MAX || host.chars().any(|c| c.is_control()) {
        return Err(OpError::inval(format!("invalid host name '{}'", host.escape_debug())));
    }
    Ok(())
}

/// A client instance: `TYPE.ID@GLOBAL_ID`.
pub fn check_instance(instance: &str) -> Result<(), OpError> {
    let valid = match instance.rsplit_once('@') {
        Some((e, id)) => EntityName::parse(e).is_some() && id.parse::<u64>().is_ok(),
        // An address must be in its canonical form (what `blocklist_key` makes).
        None => instance
            .parse::<quarry_wire::blocklist::EntityAddr>()
            .is_ok_and(|a| a.to_string() == instance),
    };
    if !valid {
        let message = format!(
            "invalid blocklist entry '{}': expected ENTITY@GLOBAL_ID or IP:PORT/NONCE",
            instance.escape_debug()
        );
        return Err(OpError::new(ErrorCode::EINVAL, message));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use quarry_auth::CryptoKey;

    use super::*;

    fn caps(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:6789".parse().unwrap()
    }

    fn at(now_unix: u64, op: Op) -> Proposal {
        Proposal { now_unix, op }
    }

    fn service_key(id: u64) -> ServiceKey {
        ServiceKey { id, key: [id as u8; 32], expires_unix: 1000 + id * 100 }
    }

    fn bootstrap(osds: Vec<(OsdId, String)>, pools: Vec<(String, u32, u32)>) -> Op {
        let admin = EntityRecord {
            entity: EntityName::client("admin"),
            key: StoredKey(CryptoKey::from_parts([1; 16], 1, 2)),
            caps: caps(&[("mon", "allow *")]),
        };
        Op::Bootstrap {
            fsid: "fsid".into(),
            entities: vec![admin],
            osds,
            pools,
            service_key: service_key(1),
            service_key_ttl: 300,
            mon: ("a".into(), addr()),
        }
    }

    fn booted() -> MonState {
        let mut s = MonState::default();
        let osds = vec![(0, "h0".to_string()), (1, "h1".to_string()), (2, "h1".to_string())];
        s.apply(&at(1, bootstrap(osds, vec![("rbd".into(), 16, 2)]))).unwrap();
        s
    }

    fn key(n: u8) -> StoredKey {
        StoredKey(CryptoKey::from_parts([n; 16], 0, 0))
    }

    /// A mixed history; applied twice it must give identical states and replies.
    fn history() -> Vec<Proposal> {
        let qemu = EntityName::client("qemu");
        vec![
            at(10, Op::PoolCreate { name: "vms".into(), pg_num: 64, size: 3 }),
            at(11, Op::SnapCreate { pool: 1 }),
            at(12, Op::OsdBoot { id: 1, addr: addr(), host: "h1".into() }),
            at(
                13,
                Op::AuthGetOrCreate {
                    entity: qemu.clone(),
                    caps: caps(&[("mon", "profile rbd")]),
                    key: key(3),
                },
            ),
            at(
                14,
                Op::AuthGetOrCreate {
                    entity: qemu.clone(),
                    caps: caps(&[("mon", "allow r")]),
                    key: key(4),
                },
            ),
            at(15, Op::AuthCaps { entity: qemu.clone(), caps: caps(&[("mon", "allow r")]) }),
            at(16, Op::BlocklistAdd { instance: "client.qemu@4100".into(), expire_secs: 5 }),
            at(17, Op::RotateServiceKey { key: service_key(2) }),
            at(18, Op::AllocGlobalIds { count: 10 }),
            at(19, Op::OsdDown { id: 1, up_from: 999 }),
            at(20, Op::PoolRm { name: "vms".into() }),
            at(21, Op::AuthDel { entity: qemu }),
        ]
    }

    #[test]
    fn apply_is_deterministic() {
        let (mut a, mut b) = (booted(), booted());
        let ra: Vec<_> = history().iter().map(|p| a.apply(p)).collect();
        let rb: Vec<_> = history().iter().map(|p| b.apply(p)).collect();
        assert_eq!(ra, rb);
        assert_eq!(a, b);
        assert_eq!(a.map.auth_floor.get("client.qemu"), Some(&22));
        assert_eq!(a.map.blocklist.get("client.qemu@4100"), Some(&21));
        assert_eq!(ra[8], Ok(Outcome::GlobalIds { start: GLOBAL_ID_FIRST }));
    }

    /// Goal: blocklist entries name instances or addresses, and `rm` removes them (an absent
    /// one changes nothing, as in Ceph).
    #[test]
    fn blocklist_entries_are_added_and_removed() {
        let mut s = booted();
        let add = |i: &str| at(10, Op::BlocklistAdd { instance: i.into(), expire_secs: 60 });
        assert!(s.apply(&add("127.0.0.1:0/4100")).is_ok());
        assert!(s.apply(&add("10.0.0.5:0/0")).is_ok());
        assert_eq!(s.map.blocklist.get("127.0.0.1:0/4100"), Some(&70));
        let epoch = s.map.epoch;
        let rm = |e: &str| at(11, Op::BlocklistRm { entry: e.into() });
        let done = |t: &str| Ok(Outcome::Done(t.to_string()));
        assert_eq!(s.apply(&rm("127.0.0.1:0/4100")), done("un-blocklisting 127.0.0.1:0/4100"));
        assert_eq!(s.map.epoch, epoch + 1);
        assert!(!s.map.blocklist.contains_key("127.0.0.1:0/4100"));
        assert_eq!(s.apply(&rm("127.0.0.1:0/4100")), done("127.0.0.1:0/4100 isn't blocklisted"));
        assert_eq!(s.map.epoch, epoch + 1, "nothing changed");
        assert!(s.map.blocklist.contains_key("10.0.0.5:0/0"));
    }

    /// Goal: a caps change, deletion or import revokes tickets issued in its own second (OSDs
    /// honour `issued >= floor`), and tickets issued after it are stamped so they stay valid.
    #[test]
    fn revocation_covers_its_own_second() {
        let mut s = booted();
        let qemu = EntityName::client("qemu");
        let create = Op::AuthGetOrCreate {
            entity: qemu.clone(),
            caps: caps(&[("osd", "allow rw")]),
            key: key(3),
        };
        s.apply(&at(100, create)).unwrap();
        assert_eq!(s.ticket_issue_time(&qemu, 100), 100, "no floor yet");
        s.apply(&at(100, Op::AuthCaps { entity: qemu.clone(), caps: caps(&[("osd", "allow r")]) }))
            .unwrap();
        let floor = s.map.auth_floor["client.qemu"];
        assert!(floor > 100, "a ticket issued at 100 before the change is still honoured");
        let issued = s.ticket_issue_time(&qemu, 100);
        assert!(issued >= floor, "a ticket issued at 100 after the change is refused");
        assert_eq!(s.ticket_issue_time(&qemu, 500), 500);
        // A second revocation in the same second revokes the ticket stamped at the first
        // floor; a proposer whose clock is behind never lowers the floor.
        s.apply(&at(90, Op::AuthDel { entity: qemu.clone() })).unwrap();
        let second = s.map.auth_floor["client.qemu"];
        assert!(second > issued, "a ticket issued between two revocations survives the second");
        assert_eq!(s.ticket_issue_time(&qemu, 100), second);
        let import = Op::AuthImport {
            entries: vec![EntityRecord {
                entity: qemu.clone(),
                key: key(4),
                caps: caps(&[("osd", "allow r")]),
            }],
        };
        s.apply(&at(300, import)).unwrap();
        assert_eq!(s.map.auth_floor["client.qemu"], second, "a new entity revokes nothing");
        s.apply(&at(300, Op::AuthCaps { entity: qemu.clone(), caps: BTreeMap::new() })).unwrap();
        assert_eq!(s.map.auth_floor["client.qemu"], 301);
    }

    #[test]
    fn refused_ops_change_nothing() {
        let mut s = booted();
        let before = s.clone();
        let refused = [
            Op::PoolCreate { name: "x".into(), pg_num: 0, size: 1 },
            Op::PoolCreate { name: "x".into(), pg_num: 1025, size: 1 },
            Op::PoolCreate { name: ".hidden".into(), pg_num: 1, size: 1 },
            Op::PoolCreate { name: "x".into(), pg_num: 1, size: 11 },
            Op::PoolApplicationEnable { pool: "nope".into(), app: "rbd".into() },
            Op::SnapRemove { pool: 1, snap: 1 },
            Op::OsdBoot { id: 9, addr: addr(), host: "h9".into() },
            Op::OsdBoot { id: 0, addr: addr(), host: String::new() },
            Op::AuthGetOrCreate {
                entity: EntityName::client("x"),
                caps: caps(&[("osd", "allow rwx pol=x")]),
                key: key(5),
            },
            Op::AuthCaps { entity: EntityName::client("nobody"), caps: BTreeMap::new() },
            Op::AuthDel { entity: EntityName::client("nobody") },
            Op::BlocklistAdd { instance: "nonsense".into(), expire_secs: 1 },
            Op::BlocklistAdd { instance: "10.0.0.1".into(), expire_secs: 1 },
            Op::BlocklistRm { entry: "nonsense".into() },
        ];
        for op in refused {
            assert!(s.apply(&at(5, op.clone())).is_err(), "{op:?} must be refused");
            assert_eq!(s, before, "{op:?} changed the state");
        }
    }

    #[test]
    fn pool_create_places_over_in_osds_and_needs_one() {
        let mut s = booted();
        let rbd = s.map.pool_by_name("rbd").unwrap();
        assert_eq!((rbd.id, rbd.acting.len(), rbd.min_size), (1, 16, 1));
        assert!(rbd.acting.iter().all(|set| set.len() == 2 && set[0] != set[1]));
        assert!(rbd.applications.contains("rbd"));
        let epoch = s.map.epoch;
        let again = s.apply(&at(2, Op::PoolCreate { name: "rbd".into(), pg_num: 4, size: 1 }));
        assert_eq!(again, Ok(Outcome::Done("pool 'rbd' already exists".into())));
        assert_eq!(s.map.epoch, epoch);

        let mut empty = MonState::default();
        empty.apply(&at(1, bootstrap(Vec::new(), Vec::new()))).unwrap();
        let err = empty
            .apply(&at(2, Op::PoolCreate { name: "p".into(), pg_num: 4, size: 1 }))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::EINVAL);
        assert!(err.message.contains("no OSD is in"), "{}", err.message);
        // A bootstrap with pools but no OSD is refused whole.
        let mut none = MonState::default();
        assert!(none.apply(&at(1, bootstrap(Vec::new(), vec![("rbd".into(), 8, 1)]))).is_err());
        assert_eq!(none, MonState::default());
    }

    #[test]
    fn get_or_create_keeps_the_existing_key_and_checks_caps() {
        let mut s = booted();
        let qemu = EntityName::client("qemu");
        let want = caps(&[("mon", "profile rbd"), ("osd", "profile rbd")]);
        let first = s.apply(&at(
            1,
            Op::AuthGetOrCreate { entity: qemu.clone(), caps: want.clone(), key: key(7) },
        ));
        let second =
            s.apply(&at(2, Op::AuthGetOrCreate { entity: qemu.clone(), caps: want, key: key(8) }));
        assert_eq!(first, second, "the second proposal's key is not used");
        let subset = caps(&[("mon", "profile rbd")]);
        assert!(s
            .apply(&at(3, Op::AuthGetOrCreate { entity: qemu.clone(), caps: subset, key: key(9) }))
            .is_ok());
        let other = caps(&[("osd", "allow r")]);
        let err = s
            .apply(&at(4, Op::AuthGetOrCreate { entity: qemu, caps: other, key: key(9) }))
            .unwrap_err();
        assert_eq!(err.message, "key for client.qemu exists but cap osd does not match");
    }

    #[test]
    fn osd_liveness_and_incarnations() {
        let mut s = booted();
        assert!(s.map.osds.values().all(|o| o.in_cluster && !o.up));
        let Ok(Outcome::Booted { up_from, epoch }) =
            s.apply(&at(1, Op::OsdBoot { id: 0, addr: addr(), host: "h0".into() }))
        else {
            panic!("boot")
        };
        assert_eq!((up_from, s.map.epoch), (epoch, epoch));
        s.apply(&at(2, Op::OsdDown { id: 0, up_from: up_from - 1 })).unwrap();
        assert!(s.map.osds[&0].up, "a stale incarnation's down is ignored");
        s.apply(&at(3, Op::OsdDown { id: 0, up_from })).unwrap();
        assert!(!s.map.osds[&0].up);
        assert_eq!(s.map.epoch, epoch + 1);
    }

    #[test]
    fn service_key_rotation_keeps_current_and_previous() {
        let mut s = booted();
        s.apply(&at(1, Op::RotateServiceKey { key: service_key(2) })).unwrap();
        s.apply(&at(2, Op::RotateServiceKey { key: service_key(2) })).unwrap();
        s.apply(&at(3, Op::RotateServiceKey { key: service_key(3) })).unwrap();
        let ids: Vec<u64> = s.service_keys.as_ref().unwrap().keys().iter().map(|k| k.id).collect();
        assert_eq!(ids, vec![3, 2]);
    }
}
