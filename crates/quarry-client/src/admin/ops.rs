//! The operators' commands that change how pools and OSDs are run (issue 13): `osd pool
//! set|rename|stats`, `osd blocklist clear`, `osd out|in|down|reweight`, and the central
//! config (`config set|rm|get|dump`). Here are their words, their monitor-command JSON (the
//! argument names of Ceph's `MonCommands.h`), and their execution with Ceph's lines and JSON
//! shapes. The monitor checks and applies them (`quarry_mon::state`); this side checks only
//! what Ceph's CLI checks before sending (argument types and ranges).

use serde_json::{json, Map, Value};

use quarry_types::ErrorCode;
use quarry_wire::{MonCommand, MonReply};

use super::json::{render, Format};
use super::{call, done_text, pool_info, AdminError, CommandReply};
use crate::Rados;

/// One of this module's commands, its arguments checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpsCommand {
    /// `ceph osd blocklist clear`.
    BlocklistClear,
    /// `ceph osd pool set POOL VAR VAL`.
    PoolSet {
        /// Pool name.
        pool: String,
        /// Variable.
        var: String,
        /// Value as typed.
        val: String,
    },
    /// `ceph osd pool rename OLD NEW`.
    PoolRename {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// `ceph osd pool stats [POOL]`.
    PoolStats {
        /// One pool, or all.
        pool: Option<String>,
    },
    /// `ceph osd out|in|down ID...`.
    OsdMark {
        /// `out`, `in` or `down`.
        mark: String,
        /// OSD ids.
        ids: Vec<u64>,
    },
    /// `ceph osd reweight ID WEIGHT`.
    OsdReweight {
        /// OSD id.
        id: u64,
        /// Weight in Ceph's fixed point (0x10000 = 1.0).
        weight_fixed: u32,
    },
}

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError::Failed { code: ErrorCode::EINVAL, message: message.into() }
}

fn string(req: &Map<String, Value>, name: &str) -> Result<Option<String>, AdminError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(invalid(format!("argument '{name}' must be a string, not {other}"))),
    }
}

fn required(req: &Map<String, Value>, name: &str) -> Result<String, AdminError> {
    string(req, name)?.ok_or_else(|| invalid(format!("missing required argument '{name}'")))
}

/// An OSD id as Ceph's CLI takes it: `3` or `osd.3`.
fn osd_id(text: &str) -> Result<u64, AdminError> {
    text.strip_prefix("osd.")
        .unwrap_or(text)
        .parse()
        .map_err(|_| invalid(format!("invalid osd id '{text}'")))
}

/// `ids`: a list of strings (Ceph's CLI) or numbers, or one string.
fn osd_ids(req: &Map<String, Value>) -> Result<Vec<u64>, AdminError> {
    let items: Vec<String> = match req.get("ids") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Number(n)) => vec![n.to_string()],
        _ => return Err(invalid("missing required argument 'ids'")),
    };
    if items.is_empty() {
        return Err(invalid("missing required argument 'ids'"));
    }
    items.iter().map(|s| osd_id(s)).collect()
}

/// A reweight as Ceph's CLI checks it: a float in [0.0, 1.0], to Ceph's fixed point.
fn weight_fixed(text: &str) -> Result<u32, AdminError> {
    let usage = "osd reweight <id|osd.id> <weight:float> :  reweight osd to 0.0 < <weight> < 1.0";
    let w: f64 = text.parse().map_err(|_| {
        invalid(format!("Invalid command: {text} doesn't represent a float\n{usage}"))
    })?;
    if !(0.0..=1.0).contains(&w) {
        return Err(invalid(format!("Invalid command: {text} not in range [0.0, 1.0]\n{usage}")));
    }
    Ok((w * 65536.0).round() as u32)
}

impl OpsCommand {
    /// The command of a request whose prefix is one of this module's, or None.
    pub fn from_request(
        prefix: &str,
        req: &Map<String, Value>,
    ) -> Result<Option<OpsCommand>, AdminError> {
        Ok(Some(match prefix {
            "osd blocklist clear" | "osd blacklist clear" => OpsCommand::BlocklistClear,
            "osd pool set" => OpsCommand::PoolSet {
                pool: required(req, "pool")?,
                var: required(req, "var")?,
                val: required(req, "val")?,
            },
            "osd pool rename" => OpsCommand::PoolRename {
                from: required(req, "srcpool")?,
                to: required(req, "destpool")?,
            },
            "osd pool stats" => OpsCommand::PoolStats { pool: string(req, "pool_name")? },
            "osd out" | "osd in" | "osd down" => OpsCommand::OsdMark {
                mark: prefix.trim_start_matches("osd ").to_string(),
                ids: osd_ids(req)?,
            },
            "osd reweight" => OpsCommand::OsdReweight {
                id: osd_id(&required(req, "id")?)?,
                weight_fixed: weight_fixed(&required(req, "weight")?)?,
            },
            _ => return Ok(None),
        }))
    }

    /// Puts the command's arguments in `req` and returns its prefix.
    pub fn to_request(&self, req: &mut Map<String, Value>) -> &'static str {
        let mut put = |k: &str, v: Value| {
            req.insert(k.to_string(), v);
        };
        match self {
            OpsCommand::BlocklistClear => "osd blocklist clear",
            OpsCommand::PoolSet { pool, var, val } => {
                put("pool", json!(pool));
                put("var", json!(var));
                put("val", json!(val));
                "osd pool set"
            }
            OpsCommand::PoolRename { from, to } => {
                put("srcpool", json!(from));
                put("destpool", json!(to));
                "osd pool rename"
            }
            OpsCommand::PoolStats { pool } => {
                if let Some(pool) = pool {
                    put("pool_name", json!(pool));
                }
                "osd pool stats"
            }
            OpsCommand::OsdMark { mark, ids } => {
                let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
                put("ids", json!(ids));
                match mark.as_str() {
                    "in" => "osd in",
                    "down" => "osd down",
                    _ => "osd out",
                }
            }
            OpsCommand::OsdReweight { id, weight_fixed } => {
                put("id", json!(id));
                put("weight", json!(f64::from(*weight_fixed) / 65536.0));
                "osd reweight"
            }
        }
    }
}

/// The `ceph` tool's words for this module's commands: the request, or None if the words
/// are not one of them.
pub fn request_from_words(w: &[&str]) -> Option<Map<String, Value>> {
    let mut req = Map::new();
    let mut put = |k: &str, v: Value| {
        req.insert(k.to_string(), v);
    };
    let prefix = match w {
        ["osd", "blocklist" | "blacklist", "clear"] => "osd blocklist clear".to_string(),
        ["osd", "pool", "rename", from, to] => {
            put("srcpool", json!(from));
            put("destpool", json!(to));
            "osd pool rename".into()
        }
        ["osd", "pool", "stats"] => "osd pool stats".into(),
        ["osd", "pool", "stats", pool] => {
            put("pool_name", json!(pool));
            "osd pool stats".into()
        }
        ["osd", verb @ ("out" | "in" | "down"), ids @ ..] if !ids.is_empty() => {
            put("ids", json!(ids));
            format!("osd {verb}")
        }
        ["osd", "reweight", id, weight] => {
            put("id", json!(id));
            put("weight", json!(weight));
            "osd reweight".into()
        }
        _ => return None,
    };
    req.insert("prefix".into(), json!(prefix));
    Some(req)
}

/// Runs one of this module's commands.
pub(super) async fn execute(
    rados: &Rados,
    cmd: OpsCommand,
    fmt: Format,
) -> Result<CommandReply, CommandReply> {
    Ok(match cmd {
        OpsCommand::BlocklistClear => {
            let reply = call(rados, MonCommand::BlocklistClear).await?;
            done_text(reply, " removed all blocklist entries".into())?
        }
        OpsCommand::PoolSet { pool, var, val } => {
            // Ceph's CLI knows the variable names; the monitor checks the values.
            let cmd =
                MonCommand::PoolSet { pool: pool.clone(), var: var.clone(), val: val.clone() };
            let reply = call(rados, cmd).await?;
            let text = match &reply {
                MonReply::Done(text) => text.clone(),
                _ => String::new(),
            };
            // The map that carries the change, for the commands that follow.
            let _ = rados.lookup_pool(&pool).await;
            CommandReply::status(text)
        }
        OpsCommand::PoolRename { from, to } => {
            let reply =
                call(rados, MonCommand::PoolRename { from: from.clone(), to: to.clone() }).await?;
            done_text(reply, format!("pool '{from}' renamed to '{to}'"))?
        }
        OpsCommand::PoolStats { pool } => {
            let pools = match &pool {
                Some(name) => vec![pool_info(rados, name).await?],
                None => rados.map().pools.values().cloned().collect(),
            };
            if fmt.is_json() {
                // Quarry does not measure client or recovery rates: empty, as Ceph's for an
                // idle pool.
                let list: Vec<Value> = pools
                    .iter()
                    .map(|p| {
                        json!({
                            "pool_name": p.name,
                            "pool_id": p.id,
                            "recovery": {},
                            "recovery_rate": {},
                            "client_io_rate": {}
                        })
                    })
                    .collect();
                CommandReply::data(render(&Value::Array(list), fmt))
            } else {
                let text: String = pools
                    .iter()
                    .map(|p| format!("pool {} id {}\n  nothing is going on\n\n", p.name, p.id))
                    .collect();
                CommandReply::data(text)
            }
        }
        OpsCommand::OsdMark { mark, ids } => {
            let reply = call(rados, MonCommand::OsdMark { ids, mark }).await?;
            done_text(reply, String::new())?
        }
        OpsCommand::OsdReweight { id, weight_fixed } => {
            let reply = call(rados, MonCommand::OsdReweight { id, weight_fixed }).await?;
            done_text(reply, String::new())?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_survives_the_json_round_trip() {
        let all = [
            OpsCommand::BlocklistClear,
            OpsCommand::PoolSet { pool: "p".into(), var: "min_size".into(), val: "1".into() },
            OpsCommand::PoolRename { from: "a".into(), to: "b".into() },
            OpsCommand::PoolStats { pool: None },
            OpsCommand::PoolStats { pool: Some("p".into()) },
            OpsCommand::OsdMark { mark: "out".into(), ids: vec![0, 3] },
            OpsCommand::OsdMark { mark: "in".into(), ids: vec![1] },
            OpsCommand::OsdMark { mark: "down".into(), ids: vec![2] },
            OpsCommand::OsdReweight { id: 0, weight_fixed: 0x8000 },
        ];
        for cmd in all {
            let mut req = Map::new();
            let prefix = cmd.to_request(&mut req);
            assert_eq!(OpsCommand::from_request(prefix, &req).unwrap(), Some(cmd.clone()));
        }
    }

    #[test]
    fn words_and_checks() {
        let words = |w: &[&str]| {
            let req = request_from_words(w).unwrap();
            let prefix = req["prefix"].as_str().unwrap().to_string();
            OpsCommand::from_request(&prefix, &req)
        };
        assert_eq!(
            words(&["osd", "out", "0", "osd.3"]).unwrap(),
            Some(OpsCommand::OsdMark { mark: "out".into(), ids: vec![0, 3] })
        );
        assert_eq!(
            words(&["osd", "reweight", "osd.1", "0.5"]).unwrap(),
            Some(OpsCommand::OsdReweight { id: 1, weight_fixed: 0x8000 })
        );
        assert!(words(&["osd", "reweight", "0", "1.5"]).is_err());
        assert!(words(&["osd", "reweight", "0", "abc"]).is_err());
        assert!(words(&["osd", "out", "x"]).is_err());
        assert!(request_from_words(&["osd", "out"]).is_none());
    }
}
