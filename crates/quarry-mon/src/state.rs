//! The monitor's replicated state and its deterministic `apply`: the cluster map, the auth
//! database, the rotating service keys and the id counters. Pure: no clock, no randomness,
//! no I/O; every input comes from the [`Proposal`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use quarry_placement::Candidate;
use quarry_types::{EntityName, ErrorCode, OsdId, PgId, PoolId, SnapId};
use quarry_wire::{pool_flags, ClusterMap, OsdInfo, PoolInfo, PoolSnap, SnapMode};

use quarry_auth::{ServiceKey, ServiceKeyRing};

use crate::log_op::{Applied, EntityRecord, Op, OpError, OsdMark, Outcome, Proposal, StoredKey};

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
/// Longest central config option name.
pub const CONFIG_KEY_LEN_MAX: usize = 128;
/// Longest central config value.
pub const CONFIG_VALUE_LEN_MAX: usize = 4096;
/// Most options in the central config (all sections together).
pub const CONFIG_ENTRIES_MAX: usize = 4096;
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
    /// Who added each blocklist entry (same keys as `map.blocklist`; entries added before
    /// version 3 have none): `mon_blocklist_max` bounds the live entries of one adder.
    pub blocklist_adders: BTreeMap<String, String>,
    /// The central configuration (`ceph config set WHO KEY VALUE`): section (`global`,
    /// `mon`, `osd`, `osd.3`, `client`, `client.admin`) -> option name -> value.
    pub config: BTreeMap<String, BTreeMap<String, String>>,
}

impl MonState {
    /// Applies one committed proposal. A refused op changes nothing.
    pub fn apply(&mut self, p: &Proposal) -> Applied {
        let now = p.now_unix;
        match &p.op {
            Op::Bootstrap { .. } => self.bootstrap(&p.op),
            Op::SetMonAddr { name, addr } => Ok(self.set_mon_addr(name, *addr)),
            Op::PoolCreate { name, pg_num, size } => self.pool_create(name, *pg_num, *size),
            Op::PoolRm { name } => self.pool_rm(name),
            Op::PoolApplicationEnable { pool, app } => self.app_enable(pool, app),
            Op::SnapCreate { pool } => self.snap_create(*pool),
            Op::SnapRemove { pool, snap } => self.snap_remove(*pool, *snap),
            Op::OsdBoot { id, addr, host } => self.osd_boot(*id, *addr, host),
            Op::OsdDown { id, up_from } => Ok(self.osd_down(*id, *up_from, now)),
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
            Op::BlocklistAddBy { instance, expire_secs, by, max } => {
                self.blocklist_add_by(instance, *expire_secs, by, *max, now)
            }
            Op::PoolSet { pool, var, val } => self.pool_set(pool, var, val),
            Op::PoolRename { from, to } => self.pool_rename(from, to),
            Op::PoolQuotaFull { pool, full } => Ok(self.pool_quota_full(*pool, *full)),
            Op::OsdMark { ids, mark } => self.osd_mark(ids, *mark, now),
            Op::ConfigSet { who, key, value } => self.config_set(who, key, value.as_deref()),
            Op::PgRemapped { pg, from, to } => self.pg_remapped(*pg, from, to),
            Op::OsdAutoOut { id, down_since } => Ok(self.osd_auto_out(*id, *down_since)),
            Op::PgMerged { target, source } => self.pg_merged(*target, *source),
        }
    }

    /// Every change to the map ends here: the pools' merge steps are brought up to date
    /// (`merge_steps`: an acting set, an OSD's state or a target may have changed) and the
    /// epoch is bumped.
    fn bump(&mut self) -> u64 {
        self.merge_steps();
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

    /// `pg_num` of pool `id` grows to `n` (checked by the caller: above the current one, at
    /// most 65536), after Ceph's `mon_max_pg_per_osd` check (ERANGE, Ceph's message). Each
    /// new PG (a split child) starts with its parent's acting set, where its parent's primary
    /// creates it by splitting; its up set is placement's choice (`remap`), where the
    /// rebalancing then moves it. `pgp_num` follows (Ceph 16 moves it to `pg_num` too).
    fn pool_grow(&mut self, id: PoolId, n: u32) -> Result<(), OpError> {
        let max_per_osd = self.max_pg_per_osd();
        let in_osds = self.map.osds.values().filter(|o| o.in_cluster).count().max(3) as u64;
        let max_pgs = max_per_osd * in_osds;
        let projected: u64 = self
            .map
            .pools
            .values()
            .map(|p| u64::from(if p.id == id { n } else { p.pg_num }) * u64::from(p.size))
            .sum();
        let Some(pool) = self.map.pools.get_mut(&id) else {
            return Err(OpError::new(ErrorCode::ENOENT, format!("pool {id} does not exist")));
        };
        if projected > max_pgs {
            return Err(OpError::new(
                ErrorCode::ERANGE,
                format!(
                    "pool id {id} pg_num {n} size {} would mean {projected} total pgs, which exceeds max {max_pgs} (mon_max_pg_per_osd {max_per_osd} * num_in_osds {in_osds})",
                    pool.size
                ),
            ));
        }
        let from = pool.pg_num;
        for child in from..n {
            let parent = quarry_placement::split_parent(child, from) as usize;
            let acting = pool.acting.get(parent).cloned().unwrap_or_default();
            pool.acting.push(acting);
        }
        pool.pg_num = n;
        pool.pg_num_target = n;
        pool.pg_num_pending = n;
        self.remap();
        self.bump();
        Ok(())
    }

    /// `pg_num` of pool `id` set to `n` while it shrinks or to shrink it (`n` below
    /// `pg_num`, or a shrink under way): records Ceph's `pg_num_target`; `merge_steps` then
    /// merges one PG at a time. `n` at or above `pg_num` during a shrink cancels what is left
    /// of it (and grows the pool beyond), unless a merge is marked in the map: that one
    /// must finish first (EBUSY, nothing changes), as its PGs are sealed on the OSDs.
    fn pool_shrink(&mut self, id: PoolId, n: u32) -> Result<(), OpError> {
        let Some(pool) = self.map.pools.get_mut(&id) else {
            return Err(OpError::noent(format!("pool {id} does not exist")));
        };
        if n < pool.pg_num {
            if pool.pg_num_target != n {
                pool.pg_num_target = n;
                self.bump();
            }
            return Ok(());
        }
        if let Some((source, target)) = pool.merging() {
            return Err(OpError::new(
                ErrorCode::EBUSY,
                format!(
                    "pool '{}' is merging pg {id}.{source:x} into {id}.{target:x} (pg_num {}, pg_num_target {}): set pg_num again once pg_num is {}",
                    pool.name, pool.pg_num, pool.pg_num_target, pool.pg_num_pending
                ),
            ));
        }
        if n > pool.pg_num {
            // Resets the target and recomputes every up set (the source's was pinned).
            return self.pool_grow(id, n);
        }
        pool.pg_num_target = pool.pg_num;
        // The source's up set was pinned to its target's: placement decides again.
        self.remap();
        self.bump();
        Ok(())
    }

    /// One step of each shrinking pool (Ceph merges one PG at a time): the last PG `s`
    /// (`pg_num - 1`) merges into `t = split_parent(s, pg_num - 1)`. First `s`'s up set
    /// becomes `t`'s (its primary moves it by the rebalancing); once `s`'s and `t`'s acting
    /// sets are `t`'s up set and every member is up, the merge is marked (`pg_num_pending =
    /// pg_num - 1`: the OSDs seal `s` and merge it into `t`, whose primary reports
    /// `PgMerged`). While marked, both PGs' up sets are their acting sets: no membership
    /// change of either until the merge is done.
    fn merge_steps(&mut self) {
        let osds = &self.map.osds;
        let all_up = |set: &[OsdId]| {
            !set.is_empty() && set.iter().all(|o| osds.get(o).is_some_and(|i| i.up))
        };
        let same = |a: &[OsdId], b: &[OsdId]| a.len() == b.len() && a.iter().all(|o| b.contains(o));
        for pool in self.map.pools.values_mut() {
            if pool.pg_num_target >= pool.pg_num || pool.pg_num < 2 {
                continue;
            }
            if pool.up.len() < pool.acting.len() {
                pool.up = pool.acting.clone();
            }
            if let Some((s, t)) = pool.merging() {
                let (s, t) = (s as usize, t as usize);
                pool.up[s] = pool.acting[s].clone();
                pool.up[t] = pool.acting[t].clone();
                continue;
            }
            let s = (pool.pg_num - 1) as usize;
            let t = quarry_placement::split_parent(s as u32, pool.pg_num - 1) as usize;
            let (Some(acting_s), Some(acting_t), Some(up_t)) =
                (pool.acting.get(s), pool.acting.get(t), pool.up.get(t))
            else {
                continue;
            };
            let colocated = same(acting_s, acting_t) && same(acting_t, up_t) && all_up(acting_t);
            pool.up[s] = pool.up[t].clone();
            if colocated {
                // Same members, and the target's order: one primary drives both (the
                // source's seal and the target's merge), and watches on the source's
                // objects stay on that OSD when they follow them to the target.
                pool.pg_num_pending = pool.pg_num - 1;
                pool.acting[s] = pool.acting[t].clone();
                pool.up[s] = pool.acting[t].clone();
            }
        }
    }

    /// `PgMerged`: the primary of `target` applied the merge of `source` into it.
    fn pg_merged(&mut self, target: PgId, source: u32) -> Applied {
        let Some(pool) = self.map.pools.get_mut(&target.pool) else {
            return Err(OpError::noent(format!("pool {} does not exist", target.pool)));
        };
        let id = pool.id;
        if pool.merging() != Some((source, target.seed)) {
            if source >= pool.pg_num && target.seed < pool.pg_num {
                // A report resent after it was counted: the source is gone already.
                return Ok(Outcome::Done(String::new()));
            }
            return Err(OpError::new(
                ErrorCode::ESTALE,
                format!("pool {id} is not merging pg {id}.{source:x} into {target}"),
            ));
        }
        pool.acting.truncate(source as usize);
        pool.up.truncate(source as usize);
        pool.pg_num = source;
        pool.pg_num_pending = source;
        let message = format!(
            "pg {id}.{source:x} merged into {target}: pool {id} pg_num {source} (target {})",
            pool.pg_num_target
        );
        self.bump();
        Ok(Outcome::Done(message))
    }

    /// `mon_max_pg_per_osd` from the central config (`mon`, then `global`), Ceph's default
    /// 250 when unset or not a number.
    fn max_pg_per_osd(&self) -> u64 {
        ["mon", "global"]
            .iter()
            .find_map(|who| self.config.get(*who)?.get("mon_max_pg_per_osd")?.parse().ok())
            .unwrap_or(250)
    }

    fn placement_candidates(&self) -> Vec<Candidate> {
        let usable = |o: &&OsdInfo| o.in_cluster && o.weight > 0.0;
        let to_candidate =
            |o: &OsdInfo| Candidate { id: o.id, host: o.host.clone(), weight: o.weight };
        self.map.osds.values().filter(usable).map(to_candidate).collect()
    }

    fn pool_rm(&mut self, name: &str) -> Applied {
        let Some(pool) = self.map.pool_by_name(name) else {
            return Ok(Outcome::Done(format!("pool '{name}' does not exist")));
        };
        if pool.has_flag(pool_flags::NODELETE) {
            return Err(OpError::new(
                ErrorCode::EPERM,
                "pool deletion is disabled; you must unset nodelete flag for the pool first",
            ));
        }
        let id = pool.id;
        self.map.pools.remove(&id);
        self.bump();
        Ok(Outcome::Done(format!("pool '{name}' removed")))
    }

    /// `ceph osd pool set POOL VAR VAL` (and `set-quota`), with Ceph's checks and messages.
    /// A new `size` recomputes the pool's up sets (its PGs' primaries then move the data) and
    /// resets `min_size` to the default for it, as Ceph does; `pg_num`/`pgp_num` accept only
    /// their current value (no PG split).
    fn pool_set(&mut self, pool: &str, var: &str, val: &str) -> Applied {
        let info = self.pool_mut_by_name(pool)?;
        let id = info.id;
        let int = |val: &str| {
            val.parse::<u64>().map_err(|_| {
                OpError::inval(format!(
                    "error parsing integer value '{val}': Expected option value to be integer, got '{val}'"
                ))
            })
        };
        let set = |var: &str| Outcome::Done(format!("set pool {id} {var} to {val}"));
        if let Some(&(_, bit)) = pool_flags::SETTABLE.iter().find(|(name, _)| *name == var) {
            let on = match val {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(OpError::inval("expecting value 'true', 'false', '0', or '1'"));
                }
            };
            let flags = if on { info.flags | bit } else { info.flags & !bit };
            if flags != info.flags {
                info.flags = flags;
                self.bump();
            }
            return Ok(set(var));
        }
        match var {
            "min_size" => {
                let n = int(val)?;
                if n == 0 || n > u64::from(info.size) {
                    return Err(OpError::inval(format!(
                        "pool min_size must be between 1 and size, which is set to {}",
                        info.size
                    )));
                }
                if info.min_size as u64 != n {
                    info.min_size = n as u32;
                    self.bump();
                }
                Ok(set(var))
            }
            "size" => {
                if info.has_flag(pool_flags::NOSIZECHANGE) {
                    return Err(OpError::new(
                        ErrorCode::EPERM,
                        "pool size change is disabled; you must unset nosizechange flag for the pool first",
                    ));
                }
                let n = int(val)?;
                if n == 0 || n > u64::from(POOL_SIZE_MAX) {
                    return Err(OpError::inval(format!(
                        "pool size must be between 1 and {POOL_SIZE_MAX}"
                    )));
                }
                if n != u64::from(info.size) {
                    // As Ceph: min_size goes back to the default for the new size.
                    info.size = n as u32;
                    info.min_size = info.size - info.size / 2;
                    self.remap();
                    self.bump();
                }
                Ok(set(var))
            }
            "pg_num" | "pgp_num" => {
                if info.has_flag(pool_flags::NOPGCHANGE) {
                    return Err(OpError::new(
                        ErrorCode::EPERM,
                        "pool pg_num change is disabled; you must unset nopgchange flag for the pool first",
                    ));
                }
                let n = int(val)?;
                if n == 0 || n > 65536 {
                    return Err(OpError::new(
                        ErrorCode::ERANGE,
                        format!("'{var}' must be greater than 0 and less than or equal to 65536 (you may adjust 'mon max pool pg num' for higher values)"),
                    ));
                }
                let (current, n) = (info.pg_num, n as u32);
                if var == "pg_num" && (n < current || info.pg_num_target < current) {
                    self.pool_shrink(id, n)?;
                    return Ok(set(var));
                }
                if n == current {
                    return Ok(Outcome::Done(String::new()));
                }
                if var == "pgp_num" {
                    if n > current {
                        return Err(OpError::inval(format!(
                            "specified pgp_num {n} > pg_num {current}"
                        )));
                    }
                    return Err(OpError::new(
                        ErrorCode::EOPNOTSUPP,
                        format!("pgp_num follows pg_num in Quarry (each PG is placed by its own id): pool '{pool}' keeps pgp_num {current}; set pg_num instead"),
                    ));
                }
                self.pool_grow(id, n)?;
                Ok(set(var))
            }
            "quota_max_bytes" | "quota_max_objects" => {
                let n = int(val)?;
                let field = if var == "quota_max_bytes" {
                    &mut info.quota_max_bytes
                } else {
                    &mut info.quota_max_objects
                };
                let mut changed = std::mem::replace(field, n) != n;
                // No quota left: the pool cannot be full by quota (a raised quota is left to
                // the leader's next usage check, which sees the figures).
                if info.quota_max_bytes == 0 && info.quota_max_objects == 0 && info.is_full() {
                    info.flags &= !(pool_flags::FULL | pool_flags::FULL_QUOTA);
                    changed = true;
                }
                if changed {
                    self.bump();
                }
                let short = var.trim_start_matches("quota_");
                Ok(Outcome::Done(format!("set-quota {short} = {n} for pool {pool}")))
            }
            _ => Err(OpError::new(
                ErrorCode::EINVAL,
                format!("pool setting '{var}' is not supported by Quarry"),
            )),
        }
    }

    /// `ceph osd pool rename`, with Ceph's answers (a repeated rename is a success).
    fn pool_rename(&mut self, from: &str, to: &str) -> Applied {
        check_pool_name(to)?;
        if self.map.pool_by_name(to).is_some() {
            if self.map.pool_by_name(from).is_none() {
                return Ok(Outcome::Done(format!(
                    "pool '{from}' does not exist; pool '{to}' does -- assuming successful rename"
                )));
            }
            return Err(OpError::new(ErrorCode::EEXIST, format!("pool '{to}' already exists")));
        }
        let info = self.pool_mut_by_name(from)?;
        info.name = to.to_string();
        self.bump();
        Ok(Outcome::Done(format!("pool '{from}' renamed to '{to}'")))
    }

    /// Sets or clears a pool's quota-full flags (Ceph sets `full` and `full_quota`).
    fn pool_quota_full(&mut self, pool: PoolId, full: bool) -> Outcome {
        let Some(info) = self.map.pools.get_mut(&pool) else {
            return Outcome::Done(String::new());
        };
        let bits = pool_flags::FULL | pool_flags::FULL_QUOTA;
        let flags = if full { info.flags | bits } else { info.flags & !bits };
        if flags == info.flags {
            return Outcome::Done(String::new());
        }
        info.flags = flags;
        let state = if full { "full" } else { "no longer full" };
        let message = format!("pool '{}' is {state}", info.name);
        self.bump();
        Outcome::Done(message)
    }

    /// `ceph osd out|in|down|reweight`: Ceph's line per OSD ("marked out osd.0. "); an
    /// unknown OSD is named, not an error (as Ceph), except for `reweight` (ENOENT).
    fn osd_mark(&mut self, ids: &[OsdId], mark: OsdMark, now: u64) -> Applied {
        if let OsdMark::Reweight(w) = mark {
            if !(0.0..=1.0).contains(&w) {
                return Err(OpError::inval(format!("{w} not in range [0.0, 1.0]")));
            }
            if let Some(id) = ids.iter().find(|id| !self.map.osds.contains_key(id)) {
                return Err(OpError::noent(format!("osd.{id} does not exist")));
            }
        }
        let mut text = String::new();
        let mut changed = false;
        for id in ids {
            let Some(osd) = self.map.osds.get_mut(id) else {
                text.push_str(&format!("osd.{id} does not exist. "));
                continue;
            };
            match mark {
                OsdMark::Out | OsdMark::In => {
                    let (want_in, word) =
                        (mark == OsdMark::In, if mark == OsdMark::In { "in" } else { "out" });
                    if osd.in_cluster == want_in {
                        text.push_str(&format!("osd.{id} is already {word}. "));
                        continue;
                    }
                    osd.in_cluster = want_in;
                    osd.reweight = if want_in { 1.0 } else { 0.0 };
                    text.push_str(&format!("marked {word} osd.{id}. "));
                }
                OsdMark::Down => {
                    if !osd.up {
                        text.push_str(&format!("osd.{id} is already down. "));
                        continue;
                    }
                    osd.up = false;
                    osd.down_since = now.max(1);
                    text.push_str(&format!("marked down osd.{id}. "));
                }
                OsdMark::Reweight(w) => {
                    osd.reweight = w;
                    osd.in_cluster = w > 0.0;
                    let fixed = (w * 65536.0).round() as u32;
                    text.push_str(&format!("reweighted osd.{id} to {w} ({fixed:x})"));
                }
            }
            changed = true;
        }
        if changed {
            if mark == OsdMark::Down {
                self.move_primaries_off_down_osds();
            } else {
                self.remap();
            }
            self.bump();
        }
        Ok(Outcome::Done(text))
    }

    /// Recomputes every PG's up set: `place()` over the OSDs that are in, with the pool's
    /// size. Members of the acting set that placement keeps stay first, in their order (the
    /// primary stays unless it leaves); new OSDs follow in placement order. A PG whose up set
    /// has the acting set's members keeps the acting set's order (nothing to move).
    fn remap(&mut self) {
        let candidates = self.placement_candidates();
        for pool in self.map.pools.values_mut() {
            let size = pool.size as usize;
            let mut ups = Vec::with_capacity(pool.acting.len());
            for (seed, acting) in pool.acting.iter().enumerate() {
                let pg = PgId { pool: pool.id, seed: seed as u32 };
                let placed = quarry_placement::place(pg, size, &candidates);
                let mut up: Vec<OsdId> =
                    acting.iter().copied().filter(|o| placed.contains(o)).collect();
                up.extend(placed.iter().copied().filter(|o| !acting.contains(o)));
                if up.is_empty() {
                    // Nothing is in: the PG stays where it is (placement has nowhere to go).
                    up = acting.clone();
                }
                ups.push(up);
            }
            pool.up = ups;
        }
    }

    /// Ceph's acting primary is the first member that is up: for every PG whose primary is
    /// down and that has a member up, that member becomes the primary (the members, the Raft
    /// voters, stay the same; the new primary campaigns). The up set follows the same order.
    fn move_primaries_off_down_osds(&mut self) {
        let osds = &self.map.osds;
        let alive = |o: &OsdId| osds.get(o).is_some_and(|i| i.up);
        for pool in self.map.pools.values_mut() {
            for (seed, acting) in pool.acting.iter_mut().enumerate() {
                if acting.first().is_none_or(alive) {
                    continue;
                }
                let Some(at) = acting.iter().position(alive) else { continue };
                let primary = acting.remove(at);
                acting.insert(0, primary);
                if let Some(up) = pool.up.get_mut(seed) {
                    if let Some(at) = up.iter().position(|o| *o == primary) {
                        let moved = up.remove(at);
                        up.insert(0, moved);
                    }
                }
            }
        }
    }

    /// `PgRemapped`: the acting set becomes the voters the primary committed, if the map's
    /// acting set is still the one it started from.
    fn pg_remapped(&mut self, pg: PgId, from: &[OsdId], to: &[OsdId]) -> Applied {
        let Some(pool) = self.map.pools.get_mut(&pg.pool) else {
            return Err(OpError::noent(format!("pool {} does not exist", pg.pool)));
        };
        let Some(acting) = pool.acting.get_mut(pg.seed as usize) else {
            return Err(OpError::noent(format!("pg {pg} does not exist")));
        };
        let same = |a: &[OsdId], b: &[OsdId]| a.len() == b.len() && a.iter().all(|o| b.contains(o));
        if !same(acting, from) {
            return Err(OpError::new(
                ErrorCode::ESTALE,
                format!("pg {pg} acting set is {acting:?}, not {from:?}"),
            ));
        }
        if to.is_empty() || to.iter().any(|o| !self.map.osds.contains_key(o)) {
            return Err(OpError::inval(format!("pg {pg}: bad new acting set {to:?}")));
        }
        let up = pool.up.get(pg.seed as usize).cloned().unwrap_or_default();
        let new = if same(&up, to) { up } else { to.to_vec() };
        if *acting == new {
            return Ok(Outcome::Done(String::new()));
        }
        let message = format!("pg {pg} acting {acting:?} -> {new:?}");
        *acting = new;
        self.bump();
        Ok(Outcome::Done(message))
    }

    /// `OsdAutoOut`: marks the OSD out if it is still down since `down_since` and in.
    fn osd_auto_out(&mut self, id: OsdId, down_since: u64) -> Outcome {
        let Some(osd) = self.map.osds.get_mut(&id) else {
            return Outcome::Done(String::new());
        };
        if osd.up || !osd.in_cluster || osd.down_since != down_since {
            return Outcome::Done(String::new());
        }
        osd.in_cluster = false;
        osd.reweight = 0.0;
        self.remap();
        self.bump();
        Outcome::Done(format!("marked out osd.{id}"))
    }

    /// `ceph config set|rm`: the key and value were checked against the options Quarry knows
    /// by the proposer; here only the shape and the size of the database.
    fn config_set(&mut self, who: &str, key: &str, value: Option<&str>) -> Applied {
        check_config_who(who)?;
        let key_ok = !key.is_empty()
            && key.len() <= CONFIG_KEY_LEN_MAX
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key_ok {
            return Err(OpError::inval(format!(
                "unrecognized config option '{}'",
                key.escape_debug()
            )));
        }
        let Some(value) = value else {
            if let Some(section) = self.config.get_mut(who) {
                section.remove(key);
                if section.is_empty() {
                    self.config.remove(who);
                }
            }
            return Ok(Outcome::Done(String::new()));
        };
        if value.len() > CONFIG_VALUE_LEN_MAX {
            return Err(OpError::inval(format!(
                "config value of {} bytes is too long (at most {CONFIG_VALUE_LEN_MAX})",
                value.len()
            )));
        }
        let entries: usize = self.config.values().map(BTreeMap::len).sum();
        let exists = self.config.get(who).is_some_and(|s| s.contains_key(key));
        if !exists && entries >= CONFIG_ENTRIES_MAX {
            return Err(OpError::new(
                ErrorCode::ENOSPC,
                format!("the central config holds {entries} options, the most allowed"),
            ));
        }
        self.config.entry(who.to_string()).or_default().insert(key.to_string(), value.to_string());
        Ok(Outcome::Done(String::new()))
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
        let mut added = false;
        if !self.map.osds.contains_key(&id) {
            if !self.auth.contains_key(&EntityName::osd(id)) {
                return Err(OpError::noent(format!("osd.{id} does not exist (no osd.{id} key)")));
            }
            self.map.osds.insert(id, new_osd(id, host));
            added = true;
        }
        let epoch = self.bump();
        let Some(osd) = self.map.osds.get_mut(&id) else {
            return Err(OpError::noent(format!("osd.{id} does not exist")));
        };
        osd.addr = Some(addr);
        osd.host = host.to_string();
        osd.up = true;
        osd.up_from = epoch;
        osd.down_since = 0;
        // A new OSD takes its share of the PGs. (Primaries are not moved at boot: at a
        // cluster's start every OSD is down until it boots, and the first to boot would take
        // every PG's primary role.)
        if added {
            self.remap();
        }
        // The epoch was taken before the OSD was up: a merge waiting for it is marked now.
        self.merge_steps();
        Ok(Outcome::Booted { epoch, up_from: epoch })
    }

    fn osd_down(&mut self, id: OsdId, up_from: u64, now: u64) -> Outcome {
        let Some(osd) = self.map.osds.get_mut(&id) else {
            return Outcome::Done(String::new());
        };
        if !osd.up || osd.up_from != up_from {
            return Outcome::Done(String::new());
        }
        osd.up = false;
        osd.down_since = now.max(1);
        self.move_primaries_off_down_osds();
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
        self.forget_gone_adders();
        self.bump();
        Ok(Outcome::Done(format!("blocklisting {instance} until {until} ({expire_secs} sec)")))
    }

    /// `osd blocklist add` by `by`: a new entry (not live in the map) is refused with ENOSPC
    /// when `by` already added `max` entries that are still live; expired entries never
    /// count. Renewing a live entry keeps its adder and is always allowed.
    fn blocklist_add_by(
        &mut self,
        instance: &str,
        expire_secs: u64,
        by: &str,
        max: u32,
        now: u64,
    ) -> Applied {
        check_instance(instance)?;
        let renewal = self.map.blocklist.get(instance).is_some_and(|&until| until > now);
        if !renewal {
            let mine = self
                .blocklist_adders
                .iter()
                .filter(|(key, adder)| {
                    *adder == by && self.map.blocklist.get(*key).is_some_and(|&u| u > now)
                })
                .count();
            if mine >= max as usize {
                let what = if max == crate::admin::BLOCKLIST_HARD_MAX {
                    "the monitor's hard limit"
                } else {
                    "mon_blocklist_max"
                };
                return Err(OpError::new(
                    ErrorCode::ENOSPC,
                    format!(
                        "{by} has {mine} live blocklist entries, the most one entity may add \
                         ({max}, {what}): remove some (osd blocklist rm) or wait for them to expire"
                    ),
                ));
            }
            self.blocklist_adders.insert(instance.to_string(), by.to_string());
        }
        self.blocklist_add(instance, expire_secs, now)
    }

    /// Drops the adders of entries no longer in the map.
    fn forget_gone_adders(&mut self) {
        let blocklist = &self.map.blocklist;
        self.blocklist_adders.retain(|key, _| blocklist.contains_key(key));
    }

    /// Removes a blocklist entry; an absent (or expired) one changes nothing, as in Ceph.
    fn blocklist_rm(&mut self, entry: &str, now: u64) -> Applied {
        check_instance(entry)?;
        let live = self.map.blocklist.get(entry).is_some_and(|&until| until > now);
        if self.map.blocklist.remove(entry).is_none() {
            return Ok(Outcome::Done(format!("{entry} isn't blocklisted")));
        }
        self.blocklist_adders.remove(entry);
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
        reweight: 1.0,
        down_since: 0,
    }
}

fn new_pool(id: PoolId, name: &str, pg_num: u32, size: u32, acting: Vec<Vec<OsdId>>) -> PoolInfo {
    PoolInfo {
        id,
        name: name.to_string(),
        pg_num,
        pg_num_target: pg_num,
        pg_num_pending: pg_num,
        creating: Default::default(),
        size,
        min_size: size - size / 2,
        applications: BTreeSet::new(),
        snap_seq: 0,
        removed_snaps: BTreeSet::new(),
        up: acting.clone(),
        acting,
        stored_objects: 0,
        stored_bytes: 0,
        snap_mode: Default::default(),
        pool_snaps: Default::default(),
        flags: quarry_wire::pool_flags::HASHPSPOOL,
        quota_max_bytes: 0,
        quota_max_objects: 0,
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

/// A central config section: `global`, a daemon type (`mon`, `osd`, `mgr`, `mds`,
/// `client`) or one daemon `TYPE.ID` (Ceph's "config target").
pub fn check_config_who(who: &str) -> Result<(), OpError> {
    const TYPES: [&str; 5] = ["mon", "osd", "mgr", "mds", "client"];
    let valid = who == "global"
        || TYPES.contains(&who)
        || who.split_once('.').is_some_and(|(t, id)| {
            TYPES.contains(&t)
                && !id.is_empty()
                && id.len() <= 64
                && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    if !valid {
        return Err(OpError::inval(format!("unrecognized config target '{}'", who.escape_debug())));
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

    /// Goal (issue 12): the blocklist bound is per adding entity: one that filled its share
    /// leaves the others theirs, expired entries and removed ones stop counting, renewing a
    /// live entry is always allowed and keeps its adder.
    #[test]
    fn blocklist_bound_is_per_adding_entity() {
        let mut s = booted();
        let add = |now: u64, i: &str, by: &str, secs: u64| {
            at(
                now,
                Op::BlocklistAddBy { instance: i.into(), expire_secs: secs, by: by.into(), max: 2 },
            )
        };
        s.apply(&add(10, "10.0.0.1:0/1", "client.a", 60)).unwrap();
        s.apply(&add(10, "10.0.0.2:0/2", "client.a", 5)).unwrap();
        let before = s.clone();
        let err = s.apply(&add(11, "10.0.0.3:0/3", "client.a", 60)).unwrap_err();
        assert_eq!(err.code, ErrorCode::ENOSPC);
        assert!(
            err.message.starts_with("client.a has 2 live blocklist entries"),
            "{}",
            err.message
        );
        assert_eq!(s, before, "a refused add changes nothing");
        // Another entity still has its share, and renewing client.a's entry is no new one.
        s.apply(&add(11, "10.0.0.3:0/3", "client.b", 60)).unwrap();
        s.apply(&add(11, "10.0.0.1:0/1", "client.b", 600)).unwrap();
        assert_eq!(s.blocklist_adders["10.0.0.1:0/1"], "client.a");
        // client.a's 5 s entry expired at 15: it no longer counts.
        s.apply(&add(16, "10.0.0.4:0/4", "client.a", 60)).unwrap();
        assert!(!s.blocklist_adders.contains_key("10.0.0.2:0/2"), "expired entries are dropped");
        assert!(s.apply(&add(16, "10.0.0.5:0/5", "client.a", 60)).is_err());
        s.apply(&at(17, Op::BlocklistRm { entry: "10.0.0.4:0/4".into() })).unwrap();
        s.apply(&add(17, "10.0.0.5:0/5", "client.a", 60)).unwrap();
        assert_eq!(s.blocklist_adders.len(), s.map.blocklist.len());
    }

    /// Goal: `osd pool set` stores flags and min_size with Ceph's checks and lines, a nodelete
    /// pool cannot be removed (EPERM), size and pg_num accept only their current value, quotas
    /// are stored and a quota of 0 clears a quota-full pool; rename keeps the pool's id.
    #[test]
    fn pool_settings_rename_and_quotas() {
        let mut s = booted();
        let set = |var: &str, val: &str| {
            at(5, Op::PoolSet { pool: "rbd".into(), var: var.into(), val: val.into() })
        };
        let done = |t: &str| Ok(Outcome::Done(t.to_string()));
        assert_eq!(s.apply(&set("nodelete", "true")), done("set pool 1 nodelete to true"));
        assert_eq!(s.apply(&set("min_size", "2")), done("set pool 1 min_size to 2"));
        assert_eq!(s.map.pools[&1].min_size, 2);
        let before = s.clone();
        for (var, val, code) in [
            ("nodelete", "yes", ErrorCode::EINVAL),
            ("min_size", "3", ErrorCode::EINVAL),
            ("min_size", "0", ErrorCode::EINVAL),
            ("min_size", "x", ErrorCode::EINVAL),
            ("size", "0", ErrorCode::EINVAL),
            ("size", "11", ErrorCode::EINVAL),
            ("size", "two", ErrorCode::EINVAL),
            ("pg_num", "0", ErrorCode::ERANGE),
            ("pg_num", "65537", ErrorCode::ERANGE),
            ("pg_num", "4096", ErrorCode::ERANGE),
            ("pgp_num", "32", ErrorCode::EINVAL),
            ("pgp_num", "4", ErrorCode::EOPNOTSUPP),
            ("crush_rule", "1", ErrorCode::EINVAL),
        ] {
            assert_eq!(s.apply(&set(var, val)).unwrap_err().code, code, "{var} {val}");
            assert_eq!(s, before, "{var} {val} changed the state");
        }
        assert_eq!(s.apply(&set("size", "2")), done("set pool 1 size to 2"));
        assert_eq!(s, before, "the same size changes nothing");
        assert_eq!(s.apply(&set("pg_num", "16")), done(""));
        {
            // Growth: each child starts where its parent acts; pgp_num follows.
            let mut grown = s.clone();
            assert_eq!(grown.apply(&set("pg_num", "24")), done("set pool 1 pg_num to 24"));
            let pool = &grown.map.pools[&1];
            assert_eq!((pool.pg_num, pool.acting.len(), pool.up.len()), (24, 24, 24));
            for child in 16..24u32 {
                let parent = quarry_placement::split_parent(child, 16) as usize;
                assert_eq!(pool.acting[child as usize], pool.acting[parent], "pg {child}");
            }
            assert!(grown.map.epoch > s.map.epoch);
            assert_eq!(grown.apply(&set("pgp_num", "24")), done(""));
        }
        let rm = s.apply(&at(6, Op::PoolRm { name: "rbd".into() })).unwrap_err();
        assert_eq!(rm.code, ErrorCode::EPERM);
        assert_eq!(s, before);
        s.apply(&set("nosizechange", "1")).unwrap();
        assert_eq!(s.apply(&set("size", "2")).unwrap_err().code, ErrorCode::EPERM);

        assert_eq!(
            s.apply(&set("quota_max_objects", "3")),
            done("set-quota max_objects = 3 for pool rbd")
        );
        s.apply(&at(7, Op::PoolQuotaFull { pool: 1, full: true })).unwrap();
        assert!(s.map.pools[&1].is_full());
        assert_eq!(
            pool_flags::names(s.map.pools[&1].flags),
            "hashpspool,full,nodelete,nosizechange,full_quota"
        );
        s.apply(&set("quota_max_objects", "0")).unwrap();
        assert!(!s.map.pools[&1].is_full(), "no quota left: not full");

        let rename =
            |from: &str, to: &str| at(8, Op::PoolRename { from: from.into(), to: to.into() });
        assert_eq!(s.apply(&rename("rbd", "vms")), done("pool 'rbd' renamed to 'vms'"));
        assert_eq!(s.map.pools[&1].name, "vms");
        assert_eq!(
            s.apply(&rename("rbd", "vms")),
            done("pool 'rbd' does not exist; pool 'vms' does -- assuming successful rename")
        );
        assert_eq!(s.apply(&rename("vms", "vms")).unwrap_err().code, ErrorCode::EEXIST);
        assert_eq!(s.apply(&rename("nope", "other")).unwrap_err().code, ErrorCode::ENOENT);
    }

    /// Goal (PG merge, Ceph's order): a decrease records `pg_num_target` and nothing else
    /// moves at once; the last PG's up set becomes its merge target's; once both act on the
    /// same OSDs, all up, the merge is marked (`premerge`, `pg_num_pending`), neither PG's up
    /// set follows an OSD going out meanwhile, a later increase is EBUSY, and only the target
    /// primary's `PgMerged` for exactly that pair lowers `pg_num`, one PG at a time, until the
    /// target (6: not a power of two); a resent report changes nothing.
    #[test]
    fn shrink_colocates_marks_and_merges_one_pg_at_a_time() {
        let mut s = booted();
        for id in 0..3 {
            s.apply(&at(2, Op::OsdBoot { id, addr: addr(), host: format!("h{id}") })).unwrap();
        }
        let set = |var: &str, val: &str| {
            at(5, Op::PoolSet { pool: "rbd".into(), var: var.into(), val: val.into() })
        };
        let done = |t: &str| Ok(Outcome::Done(t.to_string()));
        let acting_before = s.map.pools[&1].acting.clone();
        assert_eq!(s.apply(&set("pg_num", "6")), done("set pool 1 pg_num to 6"));
        let pool = s.map.pools[&1].clone();
        assert_eq!((pool.pg_num, pool.pg_num_target, pool.pg_num_pending), (16, 6, 16));
        assert_eq!(pool.acting, acting_before, "nothing acts elsewhere at once");

        // Cancel before anything is marked: placement decides the up sets again.
        {
            let mut cancelled = s.clone();
            let pool = &cancelled.map.pools[&1];
            if pool.merging().is_none() {
                assert_eq!(cancelled.apply(&set("pg_num", "16")), done("set pool 1 pg_num to 16"));
                let pool = &cancelled.map.pools[&1];
                assert_eq!((pool.pg_num, pool.pg_num_target), (16, 16));
                assert!(pool.merging().is_none());
            }
        }

        let mut merges = 0;
        let mut marked_seen = false;
        while s.map.pools[&1].pg_num > 6 {
            let pool = s.map.pools[&1].clone();
            let n = pool.pg_num;
            let (src, tgt) = (n - 1, quarry_placement::split_parent(n - 1, n - 1));
            let (pg_s, pg_t) = (PgId { pool: 1, seed: src }, PgId { pool: 1, seed: tgt });
            match pool.merging() {
                None => {
                    // Colocating: s moves to where t is going; its primary reports the move.
                    assert_eq!(s.map.up_set(pg_s), s.map.up_set(pg_t), "pg_num {n}");
                    assert!(s.map.is_remapped(pg_s));
                    let (from, to) = (s.map.acting(pg_s).to_vec(), s.map.up_set(pg_s).to_vec());
                    s.apply(&at(6, Op::PgRemapped { pg: pg_s, from, to })).unwrap();
                    assert_eq!(
                        s.map.pools[&1].merging(),
                        Some((src, tgt)),
                        "marked once colocated"
                    );
                }
                Some(pair) => {
                    assert_eq!(pair, (src, tgt));
                    assert_eq!(pool.pg_num_pending, n - 1);
                    assert_eq!(s.map.acting(pg_s), s.map.acting(pg_t), "one primary for both");
                    assert_eq!(s.map.pg_state(pg_s), "active+clean+premerge");
                    assert_eq!(s.map.pg_state(pg_t), "active+clean+premerge");
                    if !marked_seen {
                        marked_seen = true;
                        let before = s.clone();
                        let busy = s.apply(&set("pg_num", "32")).unwrap_err();
                        assert_eq!(busy.code, ErrorCode::EBUSY, "{busy:?}");
                        assert_eq!(s, before, "a refused increase changes nothing");
                        let wrong =
                            Op::PgMerged { target: PgId { pool: 1, seed: tgt + 1 }, source: src };
                        assert_eq!(s.apply(&at(6, wrong)).unwrap_err().code, ErrorCode::ESTALE);
                        assert_eq!(s, before, "a report of another pair changes nothing");
                        // An OSD of the pair out meanwhile: neither PG's up set follows.
                        let mut out = s.clone();
                        let member = s.map.acting(pg_t)[0];
                        out.apply(&at(6, Op::OsdMark { ids: vec![member], mark: OsdMark::Out }))
                            .unwrap();
                        assert!(!out.map.is_remapped(pg_s) && !out.map.is_remapped(pg_t));
                    }
                    let epoch = s.map.epoch;
                    s.apply(&at(7, Op::PgMerged { target: pg_t, source: src })).unwrap();
                    let pool = &s.map.pools[&1];
                    assert_eq!(
                        (pool.pg_num, pool.acting.len(), pool.up.len()),
                        (n - 1, n as usize - 1, n as usize - 1)
                    );
                    assert!(s.map.epoch > epoch);
                    merges += 1;
                    let before = s.clone();
                    assert_eq!(
                        s.apply(&at(7, Op::PgMerged { target: pg_t, source: src })),
                        done("")
                    );
                    assert_eq!(s, before, "a resent report changes nothing");
                }
            }
        }
        assert_eq!(merges, 10);
        assert!(marked_seen);
        let pool = &s.map.pools[&1];
        assert_eq!((pool.pg_num, pool.pg_num_target, pool.pg_num_pending), (6, 6, 6));
        assert!(pool.merging().is_none());
        assert_eq!(s.apply(&set("pg_num", "8")), done("set pool 1 pg_num to 8"), "grows again");
    }

    /// Goal: a merge is marked only with every OSD of the pair up; while one is down the
    /// step waits, and its boot marks it.
    #[test]
    fn a_merge_waits_for_its_osds_to_be_up() {
        let mut s = booted();
        for id in 0..3 {
            s.apply(&at(2, Op::OsdBoot { id, addr: addr(), host: format!("h{id}") })).unwrap();
        }
        s.apply(&at(5, Op::PoolSet { pool: "rbd".into(), var: "pg_num".into(), val: "15".into() }))
            .unwrap();
        let pg_s = PgId { pool: 1, seed: 15 };
        let t = quarry_placement::split_parent(15, 15);
        if s.map.pools[&1].merging().is_none() {
            let (from, to) = (s.map.acting(pg_s).to_vec(), s.map.up_set(pg_s).to_vec());
            // osd of the target down before the move is reported: not marked.
            let member = s.map.acting(PgId { pool: 1, seed: t })[1];
            let up_from = s.map.osds[&member].up_from;
            s.apply(&at(6, Op::OsdDown { id: member, up_from })).unwrap();
            s.apply(&at(6, Op::PgRemapped { pg: pg_s, from, to })).unwrap();
            assert_eq!(s.map.pools[&1].merging(), None, "a member is down");
            s.apply(&at(7, Op::OsdBoot { id: member, addr: addr(), host: format!("h{member}") }))
                .unwrap();
        }
        let p = &s.map.pools[&1];
        assert_eq!(
            p.merging(),
            Some((15, t)),
            "{:?} {:?} {:?} {:?}",
            p.acting[15],
            p.acting[t as usize],
            p.up[t as usize],
            s.map.osds
        );
    }

    /// Goal (rebalancing): a size change recomputes the up sets over the in OSDs, keeping the
    /// acting members first (the primary stays); acting changes only with a report whose
    /// `from` is the current acting set and then follows the up set's order; out moves the
    /// out OSD's PGs, in brings them back; a down primary is replaced by a member that is up;
    /// an OSD down long is marked out only for the outage the leader saw.
    #[test]
    fn up_sets_follow_size_and_out_and_acting_follows_reports() {
        let mut s = booted();
        for id in 0..3 {
            s.apply(&at(2, Op::OsdBoot { id, addr: addr(), host: format!("h{id}") })).unwrap();
        }
        let set = |var: &str, val: &str| {
            at(5, Op::PoolSet { pool: "rbd".into(), var: var.into(), val: val.into() })
        };
        s.apply(&set("size", "3")).unwrap();
        let rbd = s.map.pools[&1].clone();
        assert_eq!((rbd.size, rbd.min_size), (3, 2));
        for (seed, acting) in rbd.acting.iter().enumerate() {
            let pg = PgId { pool: 1, seed: seed as u32 };
            let up = s.map.up_set(pg);
            assert_eq!(up.len(), 3);
            assert_eq!(&up[..2], acting.as_slice(), "acting members stay first, in order");
            assert!(s.map.is_remapped(pg));
            assert_eq!(s.map.pg_state(pg), "active+undersized+degraded+remapped+backfilling");
        }
        let pg = PgId { pool: 1, seed: 0 };
        let (from, to) = (s.map.acting(pg).to_vec(), s.map.up_set(pg).to_vec());
        let before = s.clone();
        let stale = Op::PgRemapped { pg, from: vec![to[2]], to: to.clone() };
        assert_eq!(s.apply(&at(6, stale)).unwrap_err().code, ErrorCode::ESTALE);
        assert_eq!(s, before, "a stale report changes nothing");
        let mut reversed = to.clone();
        reversed.reverse();
        s.apply(&at(6, Op::PgRemapped { pg, from, to: reversed })).unwrap();
        assert_eq!(s.map.acting(pg), to.as_slice(), "acting takes the up set's order");
        assert_eq!(s.map.pg_state(pg), "active+clean");
        // osd.2 out: no PG's up set names it; in again: it is placed again.
        let epoch = s.map.epoch;
        s.apply(&at(7, Op::OsdMark { ids: vec![2], mark: OsdMark::Out })).unwrap();
        assert_eq!(s.map.epoch, epoch + 1);
        assert!(s.map.pools[&1].up.iter().all(|up| !up.contains(&2) && up.len() == 2));
        assert_eq!(s.map.up_set(pg).first(), s.map.acting(pg).iter().find(|o| **o != 2));
        s.apply(&at(8, Op::OsdMark { ids: vec![2], mark: OsdMark::In })).unwrap();
        assert!(s.map.pools[&1].up.iter().all(|up| up.contains(&2)));
        // The primary goes down: a member that is up serves; the set is the same.
        let primary = s.map.acting(pg)[0];
        let up_from = s.map.osds[&primary].up_from;
        s.apply(&at(9, Op::OsdDown { id: primary, up_from })).unwrap();
        assert_ne!(s.map.acting(pg)[0], primary);
        assert!(s.map.acting(pg).contains(&primary));
        assert_eq!(s.map.osds[&primary].down_since, 9);
        // Marked out automatically only for the outage seen.
        let stale = at(700, Op::OsdAutoOut { id: primary, down_since: 3 });
        assert_eq!(s.apply(&stale), Ok(Outcome::Done(String::new())));
        assert!(s.map.osds[&primary].in_cluster);
        let out = s.apply(&at(700, Op::OsdAutoOut { id: primary, down_since: 9 })).unwrap();
        assert_eq!(out, Outcome::Done(format!("marked out osd.{primary}")));
        assert!(!s.map.osds[&primary].in_cluster);
        assert!(!s.map.up_set(pg).contains(&primary));
    }

    /// Goal: `osd out|in|down|reweight` answer per OSD as Ceph does and keep `in` and the
    /// reweight consistent; the central config stores, removes and refuses bad targets.
    #[test]
    fn osd_marks_and_central_config() {
        let mut s = booted();
        let mark = |ids: Vec<OsdId>, mark: OsdMark| at(5, Op::OsdMark { ids, mark });
        let done = |t: &str| Ok(Outcome::Done(t.to_string()));
        assert_eq!(
            s.apply(&mark(vec![0, 9], OsdMark::Out)),
            done("marked out osd.0. osd.9 does not exist. ")
        );
        assert_eq!((s.map.osds[&0].in_cluster, s.map.osds[&0].reweight), (false, 0.0));
        assert_eq!(s.apply(&mark(vec![0], OsdMark::Out)), done("osd.0 is already out. "));
        assert_eq!(s.apply(&mark(vec![0], OsdMark::In)), done("marked in osd.0. "));
        assert_eq!(
            s.apply(&mark(vec![0], OsdMark::Reweight(0.5))),
            done("reweighted osd.0 to 0.5 (8000)")
        );
        assert_eq!(
            s.apply(&mark(vec![9], OsdMark::Reweight(0.5))).unwrap_err().code,
            ErrorCode::ENOENT
        );
        assert_eq!(
            s.apply(&mark(vec![0], OsdMark::Reweight(1.5))).unwrap_err().code,
            ErrorCode::EINVAL
        );
        assert_eq!(s.apply(&mark(vec![0], OsdMark::Down)), done("osd.0 is already down. "));

        let cfg = |who: &str, key: &str, v: Option<&str>| {
            at(6, Op::ConfigSet { who: who.into(), key: key.into(), value: v.map(String::from) })
        };
        s.apply(&cfg("osd", "osd_max_backfills", Some("3"))).unwrap();
        s.apply(&cfg("osd.0", "debug_osd", Some("5/5"))).unwrap();
        assert_eq!(s.config["osd"]["osd_max_backfills"], "3");
        s.apply(&cfg("osd", "osd_max_backfills", None)).unwrap();
        s.apply(&cfg("osd", "osd_max_backfills", None)).unwrap();
        assert!(!s.config.contains_key("osd"));
        let err = s.apply(&cfg("bogus", "debug_osd", Some("1"))).unwrap_err();
        assert_eq!(err.message, "unrecognized config target 'bogus'");
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
