//! The operators' commands that change how pools and OSDs are run (issue 13): `osd pool
//! set|rename|stats`, `osd blocklist clear`, `osd out|in|down|reweight`, and the central
//! config (`config set|rm|get|dump`, kept in the monitor's replicated state and applied by
//! the daemons and clients; `config show` asks the OSD for its running values). Here are their words, their monitor-command JSON (the
//! argument names of Ceph's `MonCommands.h`), and their execution with Ceph's lines and JSON
//! shapes. The monitor checks and applies them (`quarry_mon::state`); this side checks only
//! what Ceph's CLI checks before sending (argument types and ranges).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use quarry_types::ErrorCode;
use quarry_wire::{MonCommand, MonReply};

use super::command::invalid;
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
    /// `ceph config set WHO KEY VALUE` (`value: None`: `ceph config rm WHO KEY`).
    ConfigSet {
        /// Section.
        who: String,
        /// Option.
        key: String,
        /// Value, or None to remove.
        value: Option<String>,
    },
    /// `ceph config get WHO [KEY]`.
    ConfigGet {
        /// Daemon or section.
        who: String,
        /// One option, or every central one that applies.
        key: Option<String>,
    },
    /// `ceph config dump`.
    ConfigDump,
    /// `ceph config show WHO [KEY]` and `ceph config show-with-defaults WHO`: the running
    /// OSD's values and their sources (asked of the OSD: Ceph's mgr answers these).
    ConfigShow {
        /// Daemon.
        who: String,
        /// One option.
        key: Option<String>,
        /// `show-with-defaults`: options at their default too.
        defaults: bool,
    },
    /// `ceph report`: one JSON document with the sections of Ceph's that Quarry can fill.
    Report,
}

/// A string argument; unlike `command`'s reader, a JSON number is taken as its text
/// (`pool set POOL min_size 2` may send the value as a number).
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
            "config set" => OpsCommand::ConfigSet {
                who: required(req, "who")?,
                key: required(req, "name")?,
                value: Some(required(req, "value")?),
            },
            "config rm" => OpsCommand::ConfigSet {
                who: required(req, "who")?,
                key: required(req, "name")?,
                value: None,
            },
            "config get" => {
                OpsCommand::ConfigGet { who: required(req, "who")?, key: string(req, "key")? }
            }
            "config dump" => OpsCommand::ConfigDump,
            "config show" => OpsCommand::ConfigShow {
                who: required(req, "who")?,
                key: string(req, "key")?,
                defaults: false,
            },
            "config show-with-defaults" => {
                OpsCommand::ConfigShow { who: required(req, "who")?, key: None, defaults: true }
            }
            "report" => OpsCommand::Report,
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
            OpsCommand::ConfigSet { who, key, value } => {
                put("who", json!(who));
                put("name", json!(key));
                match value {
                    Some(value) => {
                        put("value", json!(value));
                        "config set"
                    }
                    None => "config rm",
                }
            }
            OpsCommand::ConfigGet { who, key } => {
                put("who", json!(who));
                if let Some(key) = key {
                    put("key", json!(key));
                }
                "config get"
            }
            OpsCommand::ConfigDump => "config dump",
            OpsCommand::ConfigShow { who, key, defaults } => {
                put("who", json!(who));
                if let Some(key) = key {
                    put("key", json!(key));
                }
                if *defaults {
                    "config show-with-defaults"
                } else {
                    "config show"
                }
            }
            OpsCommand::Report => "report",
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
        ["config", "set", who, key, value @ ..] if !value.is_empty() => {
            put("who", json!(who));
            put("name", json!(key));
            put("value", json!(value.join(" ")));
            "config set".into()
        }
        ["config", verb @ ("rm" | "get" | "show"), who, key @ ..] if key.len() <= 1 => {
            put("who", json!(who));
            if let Some(key) = key.first() {
                put(if *verb == "rm" { "name" } else { "key" }, json!(key));
            }
            format!("config {verb}")
        }
        ["config", "dump"] => "config dump".into(),
        ["config", "show-with-defaults", who] => {
            put("who", json!(who));
            "config show-with-defaults".into()
        }
        ["report", tags @ ..] => {
            if !tags.is_empty() {
                put("tags", json!(tags));
            }
            "report".into()
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
        OpsCommand::ConfigSet { who, key, value } => {
            let reply = call(rados, MonCommand::ConfigSet { who, key, value }).await?;
            done_text(reply, String::new())?
        }
        OpsCommand::ConfigGet { who, key } => config_get(rados, &who, key.as_deref(), fmt).await?,
        OpsCommand::ConfigDump => {
            let db = central_config(rados).await?;
            let rows = dump_rows(&db);
            if fmt.is_json() {
                CommandReply::data(render(&config_json(&rows), fmt))
            } else {
                CommandReply::data(config_table(&rows, true))
            }
        }
        OpsCommand::Report => report(rados).await?,
        OpsCommand::ConfigShow { who, key, defaults } => {
            config_show(rados, &who, key.as_deref(), defaults, fmt).await?
        }
    })
}

/// `ceph config show WHO [KEY]` / `show-with-defaults WHO`: asks the OSD for its options
/// and their sources (`tell osd.N config show sources`) and prints Ceph's table (`NAME
/// VALUE SOURCE OVERRIDES IGNORES`, options not at their default unless `defaults`) or the
/// mgr's JSON. Only OSDs report (Ceph's ENOENT `no config state for daemon WHO` otherwise).
async fn config_show(
    rados: &Rados,
    who: &str,
    key: Option<&str>,
    defaults: bool,
    fmt: Format,
) -> Result<CommandReply, CommandReply> {
    let no_state =
        || CommandReply::failed(ErrorCode::ENOENT, format!("no config state for daemon {who}"));
    let id = who.strip_prefix("osd.").and_then(|id| id.parse::<u64>().ok()).ok_or_else(no_state)?;
    let words = ["config", "show", "sources"].map(String::from).to_vec();
    let (output, _) = rados.tell_osd(id, words).await.map_err(|e| match e {
        crate::ClientError::Failed { code: ErrorCode::ENOENT, .. } => no_state(),
        e => CommandReply::failed(e.errno(), e.to_string()),
    })?;
    let rows: Vec<Value> = serde_json::from_str(&output)
        .map_err(|e| CommandReply::failed(ErrorCode::EIO, format!("osd.{id}'s answer: {e}")))?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if let Some(key) = key {
        let name = quarry_conf::normalize_key(key);
        let Some(row) = rows.iter().find(|r| text(r, "name") == name) else {
            return Err(CommandReply::failed(
                ErrorCode::ENOENT,
                format!("unrecognized key '{key}'"),
            ));
        };
        let value = text(row, "value");
        return Ok(if fmt.is_json() {
            CommandReply::data(render(&json!(value), fmt))
        } else {
            CommandReply::data(format!("{value}\n"))
        });
    }
    let shown: Vec<&Value> = rows
        .iter()
        .filter(|r| defaults || text(r, "source") != "default" || r["ignores"].is_string())
        .collect();
    if fmt.is_json() {
        let out: Vec<Value> = shown
            .iter()
            .map(|r| {
                let mut o = Map::new();
                for k in ["name", "value", "source"] {
                    o.insert(k.into(), json!(text(r, k)));
                }
                o.insert("overrides".into(), r.get("overrides").cloned().unwrap_or(json!([])));
                if let Some(ignored) = r.get("ignores").and_then(Value::as_str) {
                    o.insert("ignores".into(), json!(format!("mon[{ignored}]")));
                }
                Value::Object(o)
            })
            .collect();
        return Ok(CommandReply::data(render(&Value::Array(out), fmt)));
    }
    let left = super::plain::Align::Left;
    let mut t = super::plain::Table::new(&[
        ("NAME", left),
        ("VALUE", left),
        ("SOURCE", left),
        ("OVERRIDES", left),
        ("IGNORES", left),
    ]);
    for r in shown {
        let overrides: Vec<String> = r
            .get("overrides")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|o| format!("{}[{}]", text(o, "source"), text(o, "value")))
            .collect();
        let ignores = r
            .get("ignores")
            .and_then(Value::as_str)
            .map(|v| format!("mon[{v}]"))
            .unwrap_or_default();
        t.row(vec![
            text(r, "name"),
            text(r, "value"),
            text(r, "source"),
            overrides.join(","),
            ignores,
        ]);
    }
    Ok(CommandReply::data(t.render()))
}

/// `ceph report`: Ceph's top-level shape with what Quarry has (health, monmap and quorum,
/// osdmap, PG counts by state, per-pool figures, version), always JSON (pretty, as Ceph's
/// default), and `report CRC` (crc32c of the document) on stderr.
async fn report(rados: &Rados) -> Result<CommandReply, CommandReply> {
    let status = super::status_report(rados).await?;
    let map = rados.map();
    let rows = super::pgs::pg_rows(&map);
    let by_state: Vec<Value> = super::pgs::by_state(&rows)
        .into_iter()
        .map(|(state, num)| json!({"state": state, "num": num}))
        .collect();
    let active = rows.iter().filter(|r| r.state.starts_with("active")).count();
    let pool_stats: Vec<Value> = status
        .pools
        .iter()
        .map(|p| {
            json!({
                "poolid": p.id,
                "num_pg": p.pg_num,
                "stat_sum": {"num_bytes": p.stored_bytes, "num_objects": p.stored_objects},
                "store_stats": {"data_stored": p.stored_bytes.saturating_mul(u64::from(p.size))}
            })
        })
        .collect();
    let version = super::version_string();
    let short = version.split_whitespace().nth(2).unwrap_or_default().to_string();
    let quorum: Vec<usize> = (0..status.quorum.len()).collect();
    let now = crate::session::unix_now();
    let doc = json!({
        "cluster_fingerprint": map.fsid,
        "version": short,
        "commit": format!("quarry-{}", env!("CARGO_PKG_VERSION")),
        "timestamp": super::plain::utime(now, 0),
        "tag": "",
        "health": super::json::health(&status),
        "monmap": super::json::mon_dump(&map),
        "quorum": quorum,
        "osdmap": super::json::osd_dump(&map),
        "num_pg": rows.len(),
        "num_pg_active": active,
        "num_pg_unknown": 0,
        "num_osd": map.osds.len(),
        "pool_sum": {"stat_sum": {"num_bytes": status.stored_bytes, "num_objects": status.objects}},
        "osd_sum": {"kb_used": status.used_bytes / 1024, "kb_avail": status.avail_bytes / 1024},
        "pool_stats": pool_stats,
        "num_pg_by_state": by_state
    });
    let text = render(&doc, Format::JsonPretty);
    let crc = crc32c::crc32c(text.as_bytes());
    Ok(CommandReply { rc: 0, outbuf: text.into_bytes(), outs: format!("report {crc}") })
}

/// The monitor's central config: section -> option -> value.
async fn central_config(
    rados: &Rados,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, CommandReply> {
    match call(rados, MonCommand::ConfigDump).await? {
        MonReply::Config(db) => Ok(db),
        other => Err(super::unexpected(&other)),
    }
}

/// The types of config sections, in Ceph's dump order.
const SECTION_TYPES: [&str; 5] = ["mon", "mgr", "osd", "mds", "client"];

/// One central option as `config dump|get` lists it: section, depth (0 global, 1 a type,
/// 2 a daemon), name, value.
struct ConfigRow {
    section: String,
    depth: usize,
    name: String,
    value: String,
}

/// Every central option: `global` first, then each type and its daemons.
fn dump_rows(db: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<ConfigRow> {
    let mut order: Vec<(&String, usize)> = Vec::new();
    if let Some((name, _)) = db.get_key_value("global") {
        order.push((name, 0));
    }
    for kind in SECTION_TYPES {
        if let Some((name, _)) = db.get_key_value(kind) {
            order.push((name, 1));
        }
        let prefix = format!("{kind}.");
        order.extend(db.keys().filter(|s| s.starts_with(&prefix)).map(|s| (s, 2)));
    }
    let mut rows = Vec::new();
    for (section, depth) in order {
        for (name, value) in &db[section] {
            rows.push(ConfigRow {
                section: section.clone(),
                depth,
                name: name.clone(),
                value: value.clone(),
            });
        }
    }
    rows
}

/// The sections that apply to `who`, most specific first: `osd.3`, `osd`, `global`.
fn sections_for(who: &str) -> Vec<String> {
    let mut out = vec![who.to_string()];
    if let Some((kind, _)) = who.split_once('.') {
        out.push(kind.to_string());
    }
    if who != "global" {
        out.push("global".to_string());
    }
    out
}

/// Ceph's `config get|dump` table (`WHO MASK LEVEL OPTION VALUE RO`); `indent` nests the
/// sections as `config dump` does.
fn config_table(rows: &[ConfigRow], indent: bool) -> String {
    let mut t = super::plain::Table::new(&[
        ("WHO", super::plain::Align::Left),
        ("MASK", super::plain::Align::Left),
        ("LEVEL", super::plain::Align::Left),
        ("OPTION", super::plain::Align::Left),
        ("VALUE", super::plain::Align::Left),
        ("RO", super::plain::Align::Left),
    ]);
    for row in rows {
        let pad = if indent { "  ".repeat(row.depth) } else { String::new() };
        t.row(vec![
            format!("{pad}{}", row.section),
            String::new(),
            "advanced".into(),
            row.name.clone(),
            row.value.clone(),
            if read_at_start(&row.name) { "*".into() } else { String::new() },
        ]);
    }
    t.render()
}

/// Whether a daemon reads `name` only at start (Ceph's `RO` mark in `config dump|get`): an
/// option a Quarry daemon reads that is not one of `quarry_conf::runtime_option`'s. Options
/// only clients read take effect at each client's next connect; options Quarry ignores
/// are not marked.
fn read_at_start(name: &str) -> bool {
    use quarry_conf::Reader;
    let daemon = quarry_conf::option_spec(name)
        .is_some_and(|o| o.used_by.iter().any(|r| matches!(r, Reader::Mon | Reader::Osd)));
    daemon && !quarry_conf::runtime_option(name)
}

fn config_json(rows: &[ConfigRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "section": r.section,
                    "name": r.name,
                    "value": r.value,
                    "level": "advanced",
                    "can_update_at_runtime": !read_at_start(&r.name),
                    "mask": ""
                })
            })
            .collect(),
    )
}

/// `ceph config get WHO [KEY]`: one option's value (the most specific central section that
/// sets it, else the option's default), or the central options that apply to WHO.
async fn config_get(
    rados: &Rados,
    who: &str,
    key: Option<&str>,
    fmt: Format,
) -> Result<CommandReply, CommandReply> {
    let db = central_config(rados).await?;
    let sections = sections_for(who);
    let Some(key) = key else {
        let mut rows: Vec<ConfigRow> = Vec::new();
        for (depth, section) in sections.iter().rev().enumerate() {
            for (name, value) in db.get(section).into_iter().flatten() {
                rows.retain(|r| &r.name != name);
                rows.push(ConfigRow {
                    section: section.clone(),
                    depth,
                    name: name.clone(),
                    value: value.clone(),
                });
            }
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        return Ok(if fmt.is_json() {
            let obj: Map<String, Value> = rows
                .iter()
                .map(|r| (r.name.clone(), json!({"value": r.value, "section": r.section, "mask": {}, "can_update_at_runtime": !read_at_start(&r.name)})))
                .collect();
            CommandReply::data(render(&Value::Object(obj), fmt))
        } else {
            CommandReply::data(config_table(&rows, false))
        });
    };
    let name = quarry_conf::normalize_key(key);
    let central = sections.iter().find_map(|s| db.get(s).and_then(|opts| opts.get(&name)));
    let value = match (central, quarry_conf::option_spec(&name)) {
        (Some(value), _) => value.clone(),
        (None, Some(spec)) => spec.default.to_string(),
        (None, None) if quarry_conf::is_known(&name) => String::new(),
        (None, None) => {
            return Err(CommandReply::failed(
                ErrorCode::ENOENT,
                format!("unrecognized key '{key}'"),
            ))
        }
    };
    Ok(if fmt.is_json() {
        CommandReply::data(render(&json!(value), fmt))
    } else {
        CommandReply::data(format!("{value}\n"))
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
            OpsCommand::ConfigSet {
                who: "osd".into(),
                key: "osd_max_backfills".into(),
                value: Some("3".into()),
            },
            OpsCommand::ConfigSet { who: "osd".into(), key: "x".into(), value: None },
            OpsCommand::ConfigGet { who: "osd.0".into(), key: None },
            OpsCommand::ConfigGet { who: "osd.0".into(), key: Some("debug_osd".into()) },
            OpsCommand::ConfigDump,
            OpsCommand::ConfigShow {
                who: "osd.0".into(),
                key: Some("debug_osd".into()),
                defaults: false,
            },
            OpsCommand::ConfigShow { who: "osd.1".into(), key: None, defaults: true },
            OpsCommand::Report,
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
