//! The admin commands clients send (`MonCommand`, the `ceph` CLI's verbs: pools, auth,
//! snapshot ids, blocklist, status): capability checks, argument checks, then either a read of
//! the local state or a Raft proposal of a [`crate::log_op::Op`]. Replies carry the text Ceph
//! prints, so the CLI shows the same lines.
//!
//! Capabilities (quarry-auth `MonAccess`): status and the central config's contents = Read;
//! pool create/rm/application/set/rename, osd out/in/down/reweight, config set/rm =
//! PoolAdmin; auth * = AuthAdmin; blocklist = Blocklist; self-managed snapshot ids = PoolAdmin
//! or OSD write access to that pool (as Ceph checks pool ops against the `osd` cap, so
//! `profile rbd` users can snapshot their images). A denial is EACCES and changes nothing.
//!
//! `osd blocklist add` records who added the entry; a new entry is refused with ENOSPC once
//! the live entries the caller added reach `mon_blocklist_max` (entities without `auth`
//! rights) or [`BLOCKLIST_HARD_MAX`] (admins): the blocklist is part of the map every client
//! and OSD receives, and one user filling its share leaves the others theirs.

use std::collections::BTreeMap;

use quarry_auth::{Caps, CryptoKey, Keyring, MonAccess, OsdAccess};
use quarry_types::{EntityName, ErrorCode, PoolId};
use quarry_wire::{AuthEntry, MonCommand, MonReply, Reply};

use crate::log_op::{EntityRecord, Op, OpError, OsdMark, Outcome, StoredKey};
use crate::mon::Mon;
use crate::server::{failed, Session};
use crate::state::check_caps;

/// Longest keyring text `auth import` accepts.
pub const IMPORT_BYTES_MAX: usize = 1 << 20;
/// Live blocklist entries beyond which even an admin's `osd blocklist add` of a new entry is
/// refused (users without `auth` rights stop at `mon_blocklist_max`).
pub const BLOCKLIST_HARD_MAX: u32 = 65536;

impl Mon {
    /// Executes one command for `session`.
    pub async fn command(&self, session: &Session, cmd: MonCommand) -> Reply {
        let access = required_access(&cmd);
        let caps = match self.require_any(session, access) {
            Ok(caps) => caps,
            Err(reply) => return reply,
        };
        if let Some(pool) = snap_pool(&cmd) {
            if !self.may_snap(&caps, pool) {
                tracing::info!(entity = %session.entity, pool, "snapshot id request denied");
                return failed(OpError::new(ErrorCode::EACCES, "access denied"));
            }
        }
        if let MonCommand::BlocklistAdd { instance, expire_secs } = cmd {
            return self.blocklist_add(session, &caps, &instance, expire_secs).await;
        }
        match self.execute(cmd).await {
            Ok(reply) => Reply::Command(reply),
            Err(e) => failed(e),
        }
    }

    /// Like `require`, but snapshot commands are judged later against the pool.
    fn require_any(&self, session: &Session, access: Option<MonAccess>) -> Result<Caps, Reply> {
        match access {
            Some(want) => self.require(session, want),
            None => self
                .caps_of(&session.entity)
                .ok_or_else(|| failed(OpError::new(ErrorCode::EACCES, "access denied"))),
        }
    }

    /// `osd blocklist add`, recording the caller as the entry's adder. The bound is per
    /// adding entity and applied with the op (so concurrent adds cannot overshoot it): a *new*
    /// entry is refused with ENOSPC once the caller's own live entries reach
    /// `mon_blocklist_max` (entities without `auth` rights on the monitor: a `profile rbd`
    /// user may add entries, to break a dead client's lock, but not grow the map every client
    /// and OSD receives without bound) or [`BLOCKLIST_HARD_MAX`] (admins). Entries of other
    /// entities and expired ones never count; renewing a live entry is always allowed.
    async fn blocklist_add(
        &self,
        session: &Session,
        caps: &Caps,
        instance: &str,
        expire_secs: u64,
    ) -> Reply {
        let instance = match blocklist_key(instance) {
            Ok(key) => key,
            Err(e) => return failed(e),
        };
        let max = if caps.mon.allows(MonAccess::AuthAdmin) {
            BLOCKLIST_HARD_MAX
        } else {
            self.cfg.blocklist_max
        };
        let by = session.entity.to_string();
        let op = Op::BlocklistAddBy { instance, expire_secs, by, max };
        match self.propose(op).await.and_then(done) {
            Ok(reply) => Reply::Command(reply),
            Err(e) => {
                if e.code == ErrorCode::ENOSPC {
                    tracing::warn!(entity = %session.entity, max, "blocklist add refused: blocklist full");
                }
                failed(e)
            }
        }
    }

    fn may_snap(&self, caps: &Caps, pool: PoolId) -> bool {
        if caps.mon.allows(MonAccess::PoolAdmin) {
            return true;
        }
        let map = self.core.map();
        let Some(info) = map.pools.get(&pool) else {
            return false;
        };
        caps.osd.allows(&info.name, "", OsdAccess::WRITE)
    }

    async fn execute(&self, cmd: MonCommand) -> Result<MonReply, OpError> {
        match cmd {
            MonCommand::Status => Ok(MonReply::Status(Box::new(self.status()))),
            MonCommand::PoolCreate { name, pg_num, size } => {
                let pg_num = pg_num.unwrap_or(self.cfg.pool_default_pg_num);
                let size = size.unwrap_or(self.cfg.pool_default_size);
                done(self.propose(Op::PoolCreate { name, pg_num, size }).await?)
            }
            MonCommand::PoolRm { name } => done(self.propose(Op::PoolRm { name }).await?),
            MonCommand::PoolApplicationEnable { pool, app } => {
                done(self.propose(Op::PoolApplicationEnable { pool, app }).await?)
            }
            MonCommand::SnapCreate { pool } => match self.propose(Op::SnapCreate { pool }).await? {
                Outcome::SnapId(snap) => Ok(MonReply::SnapId(snap)),
                other => Err(unexpected(&other)),
            },
            MonCommand::SnapRemove { pool, snap } => {
                done(self.propose(Op::SnapRemove { pool, snap }).await?)
            }
            MonCommand::AuthGetOrCreate { entity, caps } => {
                self.auth_get_or_create(&entity, caps).await
            }
            MonCommand::AuthGet { entity } => self.auth_get(&entity, true).map(MonReply::Keyring),
            MonCommand::AuthGetKey { entity } => self.auth_key(&entity).map(MonReply::Key),
            MonCommand::AuthLs => Ok(MonReply::AuthList(self.auth_ls())),
            MonCommand::AuthDel { entity } => {
                let entity = parse_entity(&entity)?;
                done(self.propose(Op::AuthDel { entity }).await?)
            }
            MonCommand::AuthCaps { entity, caps } => {
                let entity = parse_entity(&entity)?;
                check_caps(&caps)?;
                done(self.propose(Op::AuthCaps { entity, caps }).await?)
            }
            MonCommand::AuthImport { keyring } => done(self.propose(import_op(&keyring)?).await?),
            MonCommand::BlocklistAdd { .. } => {
                Err(OpError::new(ErrorCode::EIO, "blocklist add is handled with its caller"))
            }
            MonCommand::BlocklistRm { entry } => {
                let entry = blocklist_key(&entry)?;
                done(self.propose(Op::BlocklistRm { entry }).await?)
            }
            MonCommand::PoolSnapCreate { pool, snap, strict } => {
                done(self.propose(Op::PoolSnapCreate { pool, snap, strict }).await?)
            }
            MonCommand::PoolSnapRemove { pool, snap, strict } => {
                done(self.propose(Op::PoolSnapRemove { pool, snap, strict }).await?)
            }
            MonCommand::BlocklistClear => self.blocklist_clear().await,
            MonCommand::PoolSet { pool, var, val } => {
                done(self.propose(Op::PoolSet { pool, var, val }).await?)
            }
            MonCommand::PoolRename { from, to } => {
                done(self.propose(Op::PoolRename { from, to }).await?)
            }
            MonCommand::OsdMark { ids, mark } => {
                let mark = match mark.as_str() {
                    "out" => OsdMark::Out,
                    "in" => OsdMark::In,
                    "down" => OsdMark::Down,
                    other => return Err(OpError::inval(format!("unknown osd mark '{other}'"))),
                };
                done(self.propose(Op::OsdMark { ids, mark }).await?)
            }
            MonCommand::OsdReweight { id, weight_fixed } => {
                let weight = f64::from(weight_fixed) / 65536.0;
                done(
                    self.propose(Op::OsdMark { ids: vec![id], mark: OsdMark::Reweight(weight) })
                        .await?,
                )
            }
            MonCommand::ConfigSet { who, key, value } => {
                // `config rm` of an option Quarry does not know succeeds (as Ceph's): nothing
                // can be stored under it.
                let key = match crate::config_db::check_option(&key, value.as_deref()) {
                    Ok(key) => key,
                    Err(_) if value.is_none() => quarry_conf::normalize_key(&key),
                    Err(e) => return Err(e),
                };
                done(self.propose(Op::ConfigSet { who, key, value }).await?)
            }
            MonCommand::ConfigDump => Ok(MonReply::Config(self.core.read().config.clone())),
        }
    }

    /// `ceph osd blocklist clear`: removes every entry, one `BlocklistRm` each (Ceph's line
    /// ` removed all blocklist entries`, leading space included).
    async fn blocklist_clear(&self) -> Result<MonReply, OpError> {
        let entries: Vec<String> = self.core.map().blocklist.keys().cloned().collect();
        for entry in entries {
            self.propose(Op::BlocklistRm { entry }).await?;
        }
        Ok(MonReply::Done(" removed all blocklist entries".into()))
    }

    async fn auth_get_or_create(
        &self,
        entity: &str,
        caps: BTreeMap<String, String>,
    ) -> Result<MonReply, OpError> {
        let entity = parse_entity(entity)?;
        check_caps(&caps)?;
        let key = StoredKey(CryptoKey::generate());
        match self.propose(Op::AuthGetOrCreate { entity, caps, key }).await? {
            Outcome::Entity { entity, key, .. } => {
                Ok(MonReply::Keyring(keyring_text(entity, key.0, BTreeMap::new())))
            }
            other => Err(unexpected(&other)),
        }
    }

    fn auth_get(&self, entity: &str, with_caps: bool) -> Result<String, OpError> {
        let name = parse_entity(entity)?;
        let state = self.core.read();
        let auth = state.auth.get(&name).ok_or_else(|| not_found(&name))?;
        let caps = if with_caps { auth.caps.clone() } else { BTreeMap::new() };
        Ok(keyring_text(name, auth.key.0.clone(), caps))
    }

    fn auth_key(&self, entity: &str) -> Result<String, OpError> {
        let name = parse_entity(entity)?;
        let state = self.core.read();
        let auth = state.auth.get(&name).ok_or_else(|| not_found(&name))?;
        Ok(auth.key.0.to_base64())
    }

    fn auth_ls(&self) -> Vec<AuthEntry> {
        let state = self.core.read();
        let entry = |(name, auth): (&EntityName, &crate::state::EntityAuth)| AuthEntry {
            entity: name.to_string(),
            key: auth.key.0.to_base64(),
            caps: auth.caps.clone(),
        };
        state.auth.iter().map(entry).collect()
    }
}

/// The access class a command needs; None for snapshot ids (judged against the pool).
fn required_access(cmd: &MonCommand) -> Option<MonAccess> {
    Some(match cmd {
        MonCommand::Status => MonAccess::Read,
        MonCommand::PoolCreate { .. } | MonCommand::PoolRm { .. } => MonAccess::PoolAdmin,
        MonCommand::PoolApplicationEnable { .. } => MonAccess::PoolAdmin,
        MonCommand::SnapCreate { .. } | MonCommand::SnapRemove { .. } => return None,
        MonCommand::AuthGetOrCreate { .. }
        | MonCommand::AuthGet { .. }
        | MonCommand::AuthGetKey { .. }
        | MonCommand::AuthLs
        | MonCommand::AuthDel { .. }
        | MonCommand::AuthCaps { .. }
        | MonCommand::AuthImport { .. } => MonAccess::AuthAdmin,
        MonCommand::BlocklistAdd { .. }
        | MonCommand::BlocklistRm { .. }
        | MonCommand::BlocklistClear => MonAccess::Blocklist,
        MonCommand::PoolSet { .. }
        | MonCommand::PoolRename { .. }
        | MonCommand::OsdMark { .. }
        | MonCommand::OsdReweight { .. }
        | MonCommand::ConfigSet { .. } => MonAccess::PoolAdmin,
        // Clients and daemons read the central config at start, as Ceph's do.
        MonCommand::ConfigDump => MonAccess::Read,
        // Ceph's `osd pool mksnap|rmsnap` need `osd rw` on the monitor: pool administration.
        MonCommand::PoolSnapCreate { .. } | MonCommand::PoolSnapRemove { .. } => {
            MonAccess::PoolAdmin
        }
    })
}

/// The canonical blocklist key of what a user typed: an instance `client.x@GID`, or an
/// address (`10.0.0.5` means `10.0.0.5:0/0`, every client from that IP).
fn blocklist_key(entry: &str) -> Result<String, OpError> {
    let (_, key) = quarry_wire::blocklist::BlocklistEntry::parse(entry).map_err(OpError::inval)?;
    crate::state::check_instance(&key)?;
    Ok(key)
}

fn snap_pool(cmd: &MonCommand) -> Option<PoolId> {
    match cmd {
        MonCommand::SnapCreate { pool } | MonCommand::SnapRemove { pool, .. } => Some(*pool),
        _ => None,
    }
}

fn done(outcome: Outcome) -> Result<MonReply, OpError> {
    match outcome {
        Outcome::Done(text) => Ok(MonReply::Done(text)),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(outcome: &Outcome) -> OpError {
    OpError::new(ErrorCode::EIO, format!("unexpected command outcome {outcome:?}"))
}

fn parse_entity(text: &str) -> Result<EntityName, OpError> {
    EntityName::parse(text).ok_or_else(|| {
        OpError::inval(format!(
            "bad entity name '{}': expected TYPE.ID (client.x, osd.N)",
            text.escape_debug()
        ))
    })
}

fn not_found(name: &EntityName) -> OpError {
    OpError::noent(format!("failed to find {name} in keyring"))
}

fn keyring_text(entity: EntityName, key: CryptoKey, caps: BTreeMap<String, String>) -> String {
    let mut keyring = Keyring::default();
    keyring.insert(entity, key, caps);
    keyring.to_string()
}

fn import_op(text: &str) -> Result<Op, OpError> {
    if text.len() > IMPORT_BYTES_MAX {
        return Err(OpError::inval(format!("keyring of {} bytes is too large", text.len())));
    }
    let keyring = Keyring::parse(text).map_err(|e| OpError::inval(e.to_string()))?;
    if keyring.entries.is_empty() {
        return Err(OpError::inval("keyring holds no entity"));
    }
    let mut entries = Vec::with_capacity(keyring.entries.len());
    for (entity, entry) in keyring.entries {
        check_caps(&entry.caps)?;
        entries.push(EntityRecord { entity, key: StoredKey(entry.key), caps: entry.caps });
    }
    Ok(Op::AuthImport { entries })
}
