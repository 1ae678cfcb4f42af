//! [`CephCommand`]: one admin command, checked, and its form as Ceph's monitor command JSON
//! (`{"prefix": "osd pool create", "pool": "x", "pg_num": 32, "format": "json"}`, the argument
//! names of Ceph's `MonCommands.h`). [`CephCommand::from_request`] is the one place a request
//! is validated, whether it came from the `ceph` tool's words or from `rados_mon_command`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use quarry_types::{EntityName, ErrorCode};

use super::json::Format;
use super::plain::POOL_GET_KEYS;
use super::AdminError;

/// One admin command, its arguments checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CephCommand {
    /// `ceph -s` / `status`.
    Status,
    /// `ceph health [detail]`.
    Health {
        /// With one line per check.
        detail: bool,
    },
    /// `ceph df`.
    Df,
    /// `ceph fsid`.
    Fsid,
    /// `ceph -v` / `version`.
    Version,
    /// `ceph osd ls`.
    OsdLs,
    /// `ceph osd tree`.
    OsdTree,
    /// `ceph osd stat`.
    OsdStat,
    /// `ceph osd dump`.
    OsdDump,
    /// `ceph mon dump` / `ceph mon stat`.
    MonDump {
        /// `mon stat`: one line.
        stat: bool,
    },
    /// `ceph osd pool get POOL KEY`.
    PoolGet {
        /// Pool.
        pool: String,
        /// `size`, `min_size`, `pg_num`, `pgp_num`, `crush_rule` or `all`.
        key: String,
    },
    /// `ceph osd pool create NAME [PG_NUM] [PGP_NUM] [replicated] [--size N]`.
    PoolCreate {
        /// Pool name.
        name: String,
        /// PGs.
        pg_num: Option<u32>,
        /// Replicas.
        size: Option<u32>,
    },
    /// `ceph osd pool ls [detail]`.
    PoolLs {
        /// One line per pool with its settings.
        detail: bool,
    },
    /// `ceph osd pool rm NAME NAME --yes-i-really-really-mean-it`.
    PoolRm {
        /// Pool name.
        name: String,
        /// The name again, as confirmation.
        again: Option<String>,
        /// The confirmation flag.
        sure: bool,
    },
    /// `ceph osd pool application enable POOL APP`.
    PoolApplicationEnable {
        /// Pool.
        pool: String,
        /// Application.
        app: String,
    },
    /// `ceph osd pool mksnap POOL SNAP`.
    PoolMkSnap {
        /// Pool.
        pool: String,
        /// Snapshot name.
        snap: String,
    },
    /// `ceph osd pool rmsnap POOL SNAP`.
    PoolRmSnap {
        /// Pool.
        pool: String,
        /// Snapshot name.
        snap: String,
    },
    /// `ceph osd blocklist add INSTANCE|ADDR [SECONDS]`.
    BlocklistAdd {
        /// `client.x@GLOBAL_ID` or `IP:PORT/NONCE`.
        instance: String,
        /// Expiry in seconds.
        expire_secs: u64,
    },
    /// `ceph osd blocklist rm INSTANCE|ADDR`.
    BlocklistRm {
        /// `client.x@GLOBAL_ID` or `IP:PORT/NONCE`.
        entry: String,
    },
    /// `ceph osd blocklist ls`.
    BlocklistLs,
    /// `ceph auth get-or-create ENTITY [TYPE CAPS]...` (`key_only`: `get-or-create-key`).
    AuthGetOrCreate {
        /// Entity.
        entity: String,
        /// Caps by service.
        caps: BTreeMap<String, String>,
        /// Print the key only.
        key_only: bool,
    },
    /// `ceph auth add ENTITY [TYPE CAPS]...`.
    AuthAdd {
        /// Entity.
        entity: String,
        /// Caps by service.
        caps: BTreeMap<String, String>,
    },
    /// `ceph auth get ENTITY`.
    AuthGet {
        /// Entity.
        entity: String,
    },
    /// `ceph auth get-key ENTITY` / `auth print-key ENTITY`.
    AuthGetKey {
        /// Entity.
        entity: String,
    },
    /// `ceph auth ls`.
    AuthLs,
    /// `ceph auth del ENTITY`.
    AuthDel {
        /// Entity.
        entity: String,
    },
    /// `ceph auth caps ENTITY [TYPE CAPS]...`.
    AuthCaps {
        /// Entity.
        entity: String,
        /// New caps (replace all).
        caps: BTreeMap<String, String>,
    },
    /// `ceph auth import -i FILE` (also `auth add ENTITY -i FILE`): the keyring is the
    /// command's input buffer.
    AuthImport,
    /// `ceph versions`: how many daemons of each kind run which version (JSON always).
    Versions,
    /// `ceph pg stat`: PGs by state, and usage.
    PgStat,
    /// `ceph pg PGID query`: one PG's state, sets and primaries (JSON).
    PgQuery {
        /// The PG (`1.1f`).
        pgid: String,
    },
    /// `ceph pg ls` / `ceph pg dump pgs_brief`: one line per PG (state, up and acting sets).
    PgList {
        /// `pg dump pgs_brief`'s shape rather than `pg ls`'s.
        brief: bool,
    },
    /// `ceph osd df [tree]`: usage and PG count per OSD.
    OsdDf {
        /// `tree`: under the host and root buckets.
        tree: bool,
    },
    /// `ceph quorum_status`.
    QuorumStatus,
    /// `ceph df detail`.
    DfDetail,
    /// `ceph osd crush tree`: the buckets and OSDs with their weights.
    CrushTree,
    /// `ceph osd pool application get POOL`: the pool's applications (JSON always).
    PoolApplicationGet {
        /// Pool name.
        pool: String,
    },
    /// `ceph osd pool get-quota POOL`: Quarry has no pool quotas (both `N/A`).
    PoolGetQuota {
        /// Pool name.
        pool: String,
    },
    /// `ceph osd pool set-quota POOL max_objects|max_bytes N`: refused (no pool quotas), except
    /// 0, which is what a pool has.
    PoolSetQuota {
        /// Pool name.
        pool: String,
        /// `max_objects` or `max_bytes`.
        field: String,
        /// The value as given.
        value: String,
    },
    /// `osd pool set|rename|stats`, `osd blocklist clear`, `osd out|in|down|reweight`
    /// (module `ops`).
    Ops(super::ops::OpsCommand),
}

/// `ceph osd blocklist add` without an expiry: one hour, as Ceph.
pub const BLOCKLIST_EXPIRE_DEFAULT: u64 = 3600;

/// An EINVAL refusal with `message` (also used by `ops`).
pub(super) fn invalid(message: impl Into<String>) -> AdminError {
    AdminError::Failed { code: ErrorCode::EINVAL, message: message.into() }
}

/// A string argument.
fn string(req: &Map<String, Value>, name: &str) -> Result<Option<String>, AdminError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!("argument '{name}' must be a string, not {other}"))),
    }
}

fn required(req: &Map<String, Value>, name: &str) -> Result<String, AdminError> {
    string(req, name)?.ok_or_else(|| invalid(format!("missing required argument '{name}'")))
}

/// An integer argument, given as a JSON number or a string of digits (Ceph's CLI sends
/// numbers, hand-written JSON often strings).
fn integer(req: &Map<String, Value>, name: &str) -> Result<Option<u64>, AdminError> {
    let bad = |v: &Value| invalid(format!("{name} '{}' is not a valid number", unquote(v)));
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| bad(v)),
        Some(v @ Value::String(s)) => s.parse().map(Some).map_err(|_| bad(v)),
        Some(v) => Err(bad(v)),
    }
}

fn float(req: &Map<String, Value>, name: &str) -> Result<Option<f64>, AdminError> {
    let bad = |v: &Value| invalid(format!("{name} '{}' is not a valid number", unquote(v)));
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => n.as_f64().map(Some).ok_or_else(|| bad(v)),
        Some(v @ Value::String(s)) => s.parse().map(Some).map_err(|_| bad(v)),
        Some(v) => Err(bad(v)),
    }
}

fn boolean(req: &Map<String, Value>, name: &str) -> Result<bool, AdminError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
        Some(other) => {
            Err(invalid(format!("argument '{name}' must be true or false, not {other}")))
        }
    }
}

fn unquote(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn u32_arg(req: &Map<String, Value>, name: &str) -> Result<Option<u32>, AdminError> {
    match integer(req, name)? {
        None => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| invalid(format!("{name} '{n}' is not a valid number"))),
    }
}

fn entity(req: &Map<String, Value>) -> Result<String, AdminError> {
    let text = required(req, "entity")?;
    match EntityName::parse(&text) {
        Some(name) => Ok(name.to_string()),
        None => {
            Err(invalid(format!("bad entity name '{text}': expected TYPE.ID (client.x, osd.N)")))
        }
    }
}

/// `caps`: `["mon", "profile rbd", "osd", "profile rbd pool=x"]`.
fn caps(req: &Map<String, Value>) -> Result<BTreeMap<String, String>, AdminError> {
    let words: Vec<String> = match req.get("caps") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(invalid(format!("caps must be strings, not {other}"))),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::String(s)) => vec![s.clone()],
        Some(other) => return Err(invalid(format!("caps must be a list of strings, not {other}"))),
    };
    if words.len() & 1 == 1 {
        return Err(invalid(format!(
            "caps must be given as pairs of service and capability; '{}' has no capability",
            words[words.len() - 1]
        )));
    }
    let mut caps = BTreeMap::new();
    for pair in words.chunks(2) {
        let service = pair[0].as_str();
        if !matches!(service, "mon" | "osd" | "mgr" | "mds") {
            return Err(invalid(format!(
                "unknown service '{service}' in caps (mon, osd, mgr, mds)"
            )));
        }
        caps.insert(service.to_string(), pair[1].clone());
    }
    Ok(caps)
}

fn caps_value(caps: &BTreeMap<String, String>) -> Value {
    Value::Array(caps.iter().flat_map(|(s, c)| [json!(s), json!(c)]).collect())
}

/// The output format a request asks for (`format`; absent = plain).
pub(crate) fn request_format(req: &Map<String, Value>) -> Result<Format, AdminError> {
    let text = string(req, "format")?;
    Format::parse(text.as_deref()).ok_or_else(|| {
        invalid(format!(
            "output format '{}' is not supported (plain, json, json-pretty)",
            text.unwrap_or_default()
        ))
    })
}

impl CephCommand {
    /// Checks a monitor command request (a JSON object with `prefix` and Ceph's argument
    /// names) and returns the command and the output format it asks for. `has_input` tells
    /// whether an input buffer came with it (`auth add ENTITY` with a keyring = import).
    pub fn from_request(
        req: &Map<String, Value>,
        has_input: bool,
    ) -> Result<(CephCommand, Format), AdminError> {
        let format = request_format(req)?;
        let prefix = required(req, "prefix")?;
        if let Some(cmd) = super::ops::OpsCommand::from_request(&prefix, req)? {
            return Ok((CephCommand::Ops(cmd), format));
        }
        let detail = || string(req, "detail").map(|d| d.as_deref() == Some("detail"));
        let cmd = match prefix.as_str() {
            "status" | "s" => CephCommand::Status,
            "health" => CephCommand::Health { detail: detail()? },
            "df" if detail()? => CephCommand::DfDetail,
            "df" => CephCommand::Df,
            "pg stat" => CephCommand::PgStat,
            "pg query" => CephCommand::PgQuery { pgid: required(req, "pgid")? },
            "pg ls" => CephCommand::PgList { brief: false },
            "pg dump" => CephCommand::PgList { brief: true },
            "osd df" => CephCommand::OsdDf {
                tree: string(req, "output_method")?.as_deref() == Some("tree"),
            },
            "quorum_status" => CephCommand::QuorumStatus,
            "osd crush tree" => CephCommand::CrushTree,
            "osd pool application get" => {
                CephCommand::PoolApplicationGet { pool: required(req, "pool")? }
            }
            "osd pool get-quota" => CephCommand::PoolGetQuota { pool: required(req, "pool")? },
            "osd pool set-quota" => CephCommand::PoolSetQuota {
                pool: required(req, "pool")?,
                field: required(req, "field")?,
                value: required(req, "val")?,
            },
            "fsid" => CephCommand::Fsid,
            "version" => CephCommand::Version,
            "versions" => CephCommand::Versions,
            "osd ls" => CephCommand::OsdLs,
            "osd tree" => CephCommand::OsdTree,
            "osd stat" => CephCommand::OsdStat,
            "osd dump" => CephCommand::OsdDump,
            "mon dump" => CephCommand::MonDump { stat: false },
            "mon stat" => CephCommand::MonDump { stat: true },
            "osd pool get" => {
                let pool = required(req, "pool")?;
                let key = required(req, "var")?;
                if !POOL_GET_KEYS.contains(&key.as_str()) {
                    return Err(invalid(format!(
                        "unsupported pool variable '{key}' (one of: {})",
                        POOL_GET_KEYS.join(", ")
                    )));
                }
                CephCommand::PoolGet { pool, key }
            }
            "osd lspools" => CephCommand::PoolLs { detail: false },
            "osd pool ls" => CephCommand::PoolLs { detail: detail()? },
            "osd pool create" => {
                let name = required(req, "pool")?;
                match string(req, "pool_type")?.as_deref() {
                    None | Some("replicated") => {}
                    Some("erasure") => {
                        return Err(AdminError::Failed {
                            code: ErrorCode::EOPNOTSUPP,
                            message: "erasure-coded pools are not supported; use a replicated \
                                      pool"
                                .into(),
                        })
                    }
                    Some(other) => {
                        return Err(invalid(format!(
                            "unexpected argument '{other}' to osd pool create"
                        )))
                    }
                }
                let pg_num = u32_arg(req, "pg_num")?;
                // pgp_num always equals pg_num here; it is checked, then ignored.
                u32_arg(req, "pgp_num")?;
                if pg_num == Some(0) {
                    return Err(AdminError::Failed {
                        code: ErrorCode::ERANGE,
                        message: "'pg_num' must be greater than 0".into(),
                    });
                }
                CephCommand::PoolCreate { name, pg_num, size: u32_arg(req, "size")? }
            }
            "osd pool rm" | "osd pool delete" => CephCommand::PoolRm {
                name: required(req, "pool")?,
                again: string(req, "pool2")?,
                sure: boolean(req, "yes_i_really_really_mean_it")?,
            },
            "osd pool application enable" => CephCommand::PoolApplicationEnable {
                pool: required(req, "pool")?,
                app: required(req, "app")?,
            },
            "osd pool mksnap" => CephCommand::PoolMkSnap {
                pool: required(req, "pool")?,
                snap: required(req, "snap")?,
            },
            "osd pool rmsnap" => CephCommand::PoolRmSnap {
                pool: required(req, "pool")?,
                snap: required(req, "snap")?,
            },
            "osd blocklist" | "osd blacklist" => {
                let op = match string(req, "blocklistop")? {
                    Some(op) => op,
                    None => required(req, "blacklistop")?,
                };
                match op.as_str() {
                    "add" => {
                        let expire_secs = match float(req, "expire")? {
                            Some(secs) => secs.max(0.0) as u64,
                            None => BLOCKLIST_EXPIRE_DEFAULT,
                        };
                        CephCommand::BlocklistAdd { instance: required(req, "addr")?, expire_secs }
                    }
                    "rm" => CephCommand::BlocklistRm { entry: required(req, "addr")? },
                    "ls" => CephCommand::BlocklistLs,
                    _ => {
                        return Err(AdminError::Failed {
                            code: ErrorCode::EINVAL,
                            message: format!("osd blocklist {op}: expected add, rm or ls"),
                        })
                    }
                }
            }
            verb @ ("auth get-or-create" | "auth get-or-create-key") => {
                CephCommand::AuthGetOrCreate {
                    entity: entity(req)?,
                    caps: caps(req)?,
                    key_only: verb == "auth get-or-create-key",
                }
            }
            "auth add" if has_input && !req.contains_key("caps") => {
                // The entity is checked even though the keyring names its own entities.
                entity(req)?;
                CephCommand::AuthImport
            }
            "auth add" => CephCommand::AuthAdd { entity: entity(req)?, caps: caps(req)? },
            "auth get" | "auth export" => CephCommand::AuthGet { entity: entity(req)? },
            "auth get-key" | "auth print-key" | "auth print_key" => {
                CephCommand::AuthGetKey { entity: entity(req)? }
            }
            "auth ls" | "auth list" => CephCommand::AuthLs,
            "auth del" | "auth rm" => CephCommand::AuthDel { entity: entity(req)? },
            "auth caps" => CephCommand::AuthCaps { entity: entity(req)?, caps: caps(req)? },
            "auth import" if has_input => CephCommand::AuthImport,
            "auth import" => {
                return Err(invalid("auth import needs the keyring file: ceph auth import -i FILE"))
            }
            _ => return Err(AdminError::UnknownCommand { prefix }),
        };
        Ok((cmd, format))
    }

    /// The command as a monitor command request in `format` (the inverse of
    /// [`CephCommand::from_request`]).
    pub fn to_request(&self, format: Format) -> Map<String, Value> {
        let mut req = Map::new();
        let mut put = |k: &str, v: Value| {
            req.insert(k.to_string(), v);
        };
        let prefix = match self {
            CephCommand::Status => "status",
            CephCommand::Health { detail } => {
                if *detail {
                    put("detail", json!("detail"));
                }
                "health"
            }
            CephCommand::Df => "df",
            CephCommand::Fsid => "fsid",
            CephCommand::Version => "version",
            CephCommand::Versions => "versions",
            CephCommand::PgStat => "pg stat",
            CephCommand::PgQuery { pgid } => {
                put("pgid", json!(pgid));
                "pg query"
            }
            CephCommand::PgList { brief: false } => "pg ls",
            CephCommand::PgList { brief: true } => {
                put("dumpcontents", json!(["pgs_brief"]));
                "pg dump"
            }
            CephCommand::OsdDf { tree } => {
                if *tree {
                    put("output_method", json!("tree"));
                }
                "osd df"
            }
            CephCommand::QuorumStatus => "quorum_status",
            CephCommand::CrushTree => "osd crush tree",
            CephCommand::PoolApplicationGet { pool } => {
                put("pool", json!(pool));
                "osd pool application get"
            }
            CephCommand::PoolGetQuota { pool } => {
                put("pool", json!(pool));
                "osd pool get-quota"
            }
            CephCommand::PoolSetQuota { pool, field, value } => {
                put("pool", json!(pool));
                put("field", json!(field));
                put("val", json!(value));
                "osd pool set-quota"
            }
            CephCommand::DfDetail => {
                put("detail", json!("detail"));
                "df"
            }
            CephCommand::OsdLs => "osd ls",
            CephCommand::OsdTree => "osd tree",
            CephCommand::OsdStat => "osd stat",
            CephCommand::OsdDump => "osd dump",
            CephCommand::MonDump { stat: false } => "mon dump",
            CephCommand::MonDump { stat: true } => "mon stat",
            CephCommand::PoolGet { pool, key } => {
                put("pool", json!(pool));
                put("var", json!(key));
                "osd pool get"
            }
            CephCommand::PoolCreate { name, pg_num, size } => {
                put("pool", json!(name));
                if let Some(n) = pg_num {
                    put("pg_num", json!(n));
                }
                if let Some(n) = size {
                    put("size", json!(n));
                }
                "osd pool create"
            }
            CephCommand::PoolLs { detail } => {
                if *detail {
                    put("detail", json!("detail"));
                }
                "osd pool ls"
            }
            CephCommand::PoolRm { name, again, sure } => {
                put("pool", json!(name));
                if let Some(again) = again {
                    put("pool2", json!(again));
                }
                if *sure {
                    put("yes_i_really_really_mean_it", json!(true));
                }
                "osd pool rm"
            }
            CephCommand::PoolApplicationEnable { pool, app } => {
                put("pool", json!(pool));
                put("app", json!(app));
                "osd pool application enable"
            }
            CephCommand::PoolMkSnap { pool, snap } => {
                put("pool", json!(pool));
                put("snap", json!(snap));
                "osd pool mksnap"
            }
            CephCommand::PoolRmSnap { pool, snap } => {
                put("pool", json!(pool));
                put("snap", json!(snap));
                "osd pool rmsnap"
            }
            CephCommand::BlocklistAdd { instance, expire_secs } => {
                put("blocklistop", json!("add"));
                put("addr", json!(instance));
                put("expire", json!(*expire_secs as f64));
                "osd blocklist"
            }
            CephCommand::BlocklistRm { entry } => {
                put("blocklistop", json!("rm"));
                put("addr", json!(entry));
                "osd blocklist"
            }
            CephCommand::BlocklistLs => {
                put("blocklistop", json!("ls"));
                "osd blocklist"
            }
            CephCommand::AuthGetOrCreate { entity, caps, key_only } => {
                put("entity", json!(entity));
                put("caps", caps_value(caps));
                if *key_only {
                    "auth get-or-create-key"
                } else {
                    "auth get-or-create"
                }
            }
            CephCommand::AuthAdd { entity, caps } => {
                put("entity", json!(entity));
                put("caps", caps_value(caps));
                "auth add"
            }
            CephCommand::AuthGet { entity } => {
                put("entity", json!(entity));
                "auth get"
            }
            CephCommand::AuthGetKey { entity } => {
                put("entity", json!(entity));
                "auth get-key"
            }
            CephCommand::AuthLs => "auth ls",
            CephCommand::AuthDel { entity } => {
                put("entity", json!(entity));
                "auth del"
            }
            CephCommand::AuthCaps { entity, caps } => {
                put("entity", json!(entity));
                put("caps", caps_value(caps));
                "auth caps"
            }
            CephCommand::AuthImport => "auth import",
            CephCommand::Ops(cmd) => cmd.to_request(&mut req),
        };
        req.insert("prefix".into(), json!(prefix));
        match format {
            Format::Plain => {}
            Format::Json => {
                req.insert("format".into(), json!("json"));
            }
            Format::JsonPretty => {
                req.insert("format".into(), json!("json-pretty"));
            }
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_command_survives_the_json_round_trip() {
        let caps = BTreeMap::from([
            ("mon".to_string(), "profile rbd".to_string()),
            ("osd".to_string(), "profile rbd pool=x".to_string()),
        ]);
        let all = [
            CephCommand::Status,
            CephCommand::Health { detail: true },
            CephCommand::Health { detail: false },
            CephCommand::Df,
            CephCommand::Fsid,
            CephCommand::Version,
            CephCommand::Versions,
            CephCommand::PgStat,
            CephCommand::PgQuery { pgid: "1.1f".into() },
            CephCommand::PgList { brief: false },
            CephCommand::PgList { brief: true },
            CephCommand::OsdDf { tree: false },
            CephCommand::OsdDf { tree: true },
            CephCommand::QuorumStatus,
            CephCommand::DfDetail,
            CephCommand::CrushTree,
            CephCommand::PoolApplicationGet { pool: "p".into() },
            CephCommand::PoolGetQuota { pool: "p".into() },
            CephCommand::PoolSetQuota {
                pool: "p".into(),
                field: "max_objects".into(),
                value: "0".into(),
            },
            CephCommand::OsdLs,
            CephCommand::OsdTree,
            CephCommand::OsdStat,
            CephCommand::OsdDump,
            CephCommand::MonDump { stat: false },
            CephCommand::MonDump { stat: true },
            CephCommand::PoolGet { pool: "p".into(), key: "size".into() },
            CephCommand::PoolCreate { name: "p".into(), pg_num: Some(8), size: Some(2) },
            CephCommand::PoolCreate { name: "p".into(), pg_num: None, size: None },
            CephCommand::PoolLs { detail: true },
            CephCommand::PoolRm { name: "p".into(), again: Some("p".into()), sure: true },
            CephCommand::PoolRm { name: "p".into(), again: None, sure: false },
            CephCommand::PoolApplicationEnable { pool: "p".into(), app: "rbd".into() },
            CephCommand::BlocklistAdd { instance: "client.x@4".into(), expire_secs: 60 },
            CephCommand::BlocklistAdd { instance: "127.0.0.1:0/4".into(), expire_secs: 60 },
            CephCommand::BlocklistRm { entry: "client.x@4".into() },
            CephCommand::BlocklistLs,
            CephCommand::AuthGetOrCreate {
                entity: "client.q".into(),
                caps: caps.clone(),
                key_only: true,
            },
            CephCommand::AuthAdd { entity: "client.q".into(), caps: caps.clone() },
            CephCommand::AuthGet { entity: "client.q".into() },
            CephCommand::AuthGetKey { entity: "client.q".into() },
            CephCommand::AuthLs,
            CephCommand::AuthDel { entity: "client.q".into() },
            CephCommand::AuthCaps { entity: "client.q".into(), caps },
        ];
        for cmd in all {
            for format in [Format::Plain, Format::Json, Format::JsonPretty] {
                let back = CephCommand::from_request(&cmd.to_request(format), false).unwrap();
                assert_eq!(back, (cmd.clone(), format), "{cmd:?}");
            }
        }
        let import = CephCommand::AuthImport.to_request(Format::Plain);
        assert_eq!(CephCommand::from_request(&import, true).unwrap().0, CephCommand::AuthImport);
    }

    #[test]
    fn requests_are_checked_as_cephs_monitor_checks_them() {
        let status = |v| match CephCommand::from_request(&req(v), false) {
            Err(AdminError::Failed { code, .. }) => code.0,
            Err(_) => -1,
            Ok(_) => 0,
        };
        assert_eq!(status(json!({"prefix": "osd pool create", "pool": "p", "pg_num": 0})), 34);
        assert_eq!(status(json!({"prefix": "osd pool create", "pool": "p", "pg_num": "x"})), 22);
        assert_eq!(
            status(json!({"prefix": "osd pool create", "pool": "p", "pool_type": "erasure"})),
            95
        );
        assert_eq!(status(json!({"prefix": "osd pool create", "pool": "p", "pg_num": "16"})), 0);
        assert_eq!(status(json!({"prefix": "osd pool get", "pool": "p", "var": "color"})), 22);
        assert_eq!(status(json!({"prefix": "osd pool set", "pool": "p", "var": "size"})), 22);
        assert_eq!(status(json!({"prefix": "auth get", "entity": "qemu"})), 22);
        assert_eq!(
            status(json!({"prefix": "auth caps", "entity": "client.q", "caps": ["mon"]})),
            22
        );
        assert_eq!(
            status(json!({"prefix": "auth caps", "entity": "client.q", "caps": ["fs", "r"]})),
            22
        );
        assert_eq!(status(json!({"prefix": "auth import"})), 22);
        assert_eq!(status(json!({"prefix": "status", "format": "xml"})), 22);
        assert_eq!(status(json!({"prefix": "osd frobnicate"})), -1);
        assert_eq!(status(json!({"nothing": 1})), 22);
    }
}
