//! The admin surface: Ceph's monitor commands behind one call shaped like librados'
//! `rados_mon_command(cmd_json, inbuf) -> (rc, outbuf, outs)` ([`Rados::mon_command`]), so
//! the `ceph` tool and `rados_mon_command` (python3-rados, the C ABI) answer with the same
//! bytes from one implementation.
//!
//! - [`command`]: [`CephCommand`], checked, and its Ceph request JSON (both directions).
//! - [`words`]: the `ceph` tool's command words to a request ([`request_from_words`]).
//! - [`json`] and [`plain`]: the output shapes, Ceph's field names and text layouts.
//! - [`errno`]: errno names (`ENOENT`) as `ceph` prints them.
//!
//! A reply follows Ceph's conventions: `outbuf` holds the data (plain text or JSON, as the
//! request's `format` asks), `outs` the status line a person reads (`pool 'x' created`) or,
//! when `rc < 0`, the reason of the failure.

pub mod command;
pub mod errno;
pub mod json;
pub mod ops;
pub mod pgs;
pub mod plain;
pub mod words;

use serde_json::{json as js, Map, Value};

use quarry_types::{EntityName, ErrorCode};
use quarry_wire::{MonCommand, MonReply, StatusReport};

pub use command::CephCommand;
pub use errno::errno_name;
pub use json::{render, Format};
pub use words::{request_from_words, WordFlags};

use crate::{ClientError, Rados};

/// Why a request could not become a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// A known command with a bad argument, or one Quarry does not support.
    #[error("{message}")]
    Failed {
        /// errno.
        code: ErrorCode,
        /// The reason, one line.
        message: String,
    },
    /// A request whose prefix names no command.
    #[error("command not known: '{prefix}'")]
    UnknownCommand {
        /// The prefix given.
        prefix: String,
    },
    /// Command words the `ceph` grammar does not know.
    #[error("no valid command found for '{}'", words.join(" "))]
    InvalidCommand {
        /// The words given.
        words: Vec<String>,
    },
    /// No command words at all.
    #[error("no command given")]
    NoCommand,
}

impl AdminError {
    /// The errno of the failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            AdminError::Failed { code, .. } => *code,
            _ => ErrorCode::EINVAL,
        }
    }
}

/// What a monitor command returns, as `rados_mon_command` does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandReply {
    /// 0, or a negative errno.
    pub rc: i32,
    /// The data: plain text or JSON.
    pub outbuf: Vec<u8>,
    /// The status line, or the reason of a failure.
    pub outs: String,
}

impl CommandReply {
    fn data(text: impl Into<String>) -> CommandReply {
        CommandReply { rc: 0, outbuf: text.into().into_bytes(), outs: String::new() }
    }

    fn status(text: impl Into<String>) -> CommandReply {
        CommandReply { rc: 0, outbuf: Vec::new(), outs: text.into() }
    }

    /// A failure with errno `code`.
    pub fn failed(code: ErrorCode, message: impl Into<String>) -> CommandReply {
        CommandReply { rc: -code.0, outbuf: Vec::new(), outs: message.into() }
    }

    /// The errno of a failed reply, None for success.
    pub fn error_code(&self) -> Option<ErrorCode> {
        (self.rc < 0).then(|| ErrorCode(-self.rc))
    }
}

impl From<AdminError> for CommandReply {
    fn from(e: AdminError) -> CommandReply {
        CommandReply::failed(e.code(), e.to_string())
    }
}

/// The version string `ceph -v` prints.
pub fn version_string() -> String {
    // Ceph's shape (`ceph version X.Y.Z (SHA1) NAME (stable)`), which scripts parse for the
    // release: the Ceph release whose interface Quarry implements, with Quarry's own version
    // in the suffix and in the place of the commit.
    let quarry = env!("CARGO_PKG_VERSION");
    format!("ceph version 16.2.15-quarry.{quarry} (quarry-{quarry}) pacific (stable)")
}

/// The reply to `version` in `fmt` (needs no cluster: the `ceph` tool answers `-v` offline).
pub fn version_reply(fmt: Format) -> CommandReply {
    let version = version_string();
    if fmt.is_json() {
        CommandReply::data(render(&js!({ "version": version }), fmt))
    } else {
        CommandReply::data(format!("{version}\n"))
    }
}

impl Rados {
    /// Runs one monitor command given as Ceph's request JSON (an object with `prefix`, or a
    /// list of such objects' texts as librados accepts; the first is run), with `inbuf` as
    /// its input (`auth import`). Never fails as a call: every failure is a negative `rc`
    /// with its reason in `outs`, as `rados_mon_command` reports it.
    pub async fn mon_command(&self, cmd: &str, inbuf: &[u8]) -> CommandReply {
        let req = match parse_request(cmd) {
            Ok(req) => req,
            Err(e) => return e.into(),
        };
        let (command, fmt) = match CephCommand::from_request(&req, !inbuf.is_empty()) {
            Ok(parsed) => parsed,
            Err(e) => return e.into(),
        };
        match execute(self, command, fmt, inbuf).await {
            Ok(reply) => reply,
            Err(reply) => reply,
        }
    }

    /// The monitor's status report (`ceph -s`, `ceph df`, `rados df`).
    pub async fn status_report(&self) -> Result<StatusReport, ClientError> {
        match self.command(MonCommand::Status).await? {
            MonReply::Status(report) => Ok(*report),
            other => Err(unexpected_reply(&other)),
        }
    }
}

fn unexpected_reply(reply: &MonReply) -> ClientError {
    ClientError::Failed {
        code: ErrorCode::EPROTO,
        message: format!("unexpected reply from the monitor: {reply:?}"),
    }
}

/// A request text as a JSON object. librados takes a list of strings it concatenates; a JSON
/// list of objects (or of their texts) is accepted too, and its first element is used.
fn parse_request(cmd: &str) -> Result<Map<String, Value>, AdminError> {
    let bad = |detail: String| AdminError::Failed {
        code: ErrorCode::EINVAL,
        message: format!("bad command JSON: {detail}"),
    };
    let value: Value = serde_json::from_str(cmd).map_err(|e| bad(e.to_string()))?;
    let value = match value {
        Value::Array(mut items) if !items.is_empty() => match items.swap_remove(0) {
            Value::String(text) => serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?,
            other => other,
        },
        other => other,
    };
    match value {
        Value::Object(map) => Ok(map),
        other => Err(bad(format!("expected an object, got {other}"))),
    }
}

/// A failed monitor call as a reply.
fn client_failure(e: ClientError) -> CommandReply {
    match e {
        ClientError::Failed { code, message } | ClientError::Auth { code, message } => {
            CommandReply::failed(code, message)
        }
        other => CommandReply::failed(other.errno(), other.to_string()),
    }
}

async fn call(rados: &Rados, cmd: MonCommand) -> Result<MonReply, CommandReply> {
    rados.command(cmd).await.map_err(client_failure)
}

fn unexpected(reply: &MonReply) -> CommandReply {
    client_failure(unexpected_reply(reply))
}

fn done_text(reply: MonReply, fallback: String) -> Result<CommandReply, CommandReply> {
    match reply {
        MonReply::Done(text) if text.is_empty() => Ok(CommandReply::status(fallback)),
        MonReply::Done(text) => Ok(CommandReply::status(text)),
        other => Err(unexpected(&other)),
    }
}

fn keyring_text(reply: MonReply) -> Result<String, CommandReply> {
    match reply {
        MonReply::Keyring(text) => Ok(text),
        other => Err(unexpected(&other)),
    }
}

/// Keyring text from the monitor as JSON entries.
fn keyring_json(text: &str) -> Result<Value, CommandReply> {
    json::keyring_entries(text)
        .ok_or_else(|| CommandReply::failed(ErrorCode::EPROTO, "bad keyring from the monitor"))
}

/// The key of `entity` in keyring text.
fn key_of(text: &str, entity: &str) -> Result<String, CommandReply> {
    let ring = quarry_auth::Keyring::parse(text).map_err(|e| {
        CommandReply::failed(ErrorCode::EPROTO, format!("bad keyring from the monitor: {e}"))
    })?;
    EntityName::parse(entity)
        .and_then(|name| ring.entries.get(&name).map(|e| e.key.to_base64()))
        .ok_or_else(|| {
            CommandReply::failed(
                ErrorCode::EPROTO,
                format!("the monitor returned no key for {entity}"),
            )
        })
}

/// Pool `pool` as the map has it once it knows the pool (looked up, as a pool just created
/// elsewhere may be in a newer map); ENOENT `unrecognized pool` otherwise.
async fn pool_info(rados: &Rados, pool: &str) -> Result<quarry_wire::PoolInfo, CommandReply> {
    let unknown = || CommandReply::failed(ErrorCode::ENOENT, format!("unrecognized pool '{pool}'"));
    rados.lookup_pool(pool).await.map_err(|_| unknown())?;
    rados.map().pool_by_name(pool).cloned().ok_or_else(unknown)
}

async fn status_report(rados: &Rados) -> Result<StatusReport, CommandReply> {
    rados.status_report().await.map_err(client_failure)
}

/// Runs a checked command on the cluster. `Err` carries a failed reply (`rc < 0`).
pub async fn execute(
    rados: &Rados,
    cmd: CephCommand,
    fmt: Format,
    inbuf: &[u8],
) -> Result<CommandReply, CommandReply> {
    let data = |v: Value| CommandReply::data(render(&v, fmt));
    let text = CommandReply::data;
    Ok(match cmd {
        CephCommand::Ops(cmd) => ops::execute(rados, cmd, fmt).await?,
        CephCommand::Version => version_reply(fmt),
        CephCommand::PgStat if fmt.is_json() => {
            data(pgs::pg_stat_json(&rados.map(), &status_report(rados).await?))
        }
        CephCommand::PgStat => text(pgs::pg_stat(&rados.map(), &status_report(rados).await?)),
        CephCommand::PgQuery { pgid } => {
            // Ceph's answer is JSON whatever the format (indented unless `-f json`).
            let fmt = if fmt == Format::Json { fmt } else { Format::JsonPretty };
            match pgs::pg_query_json(&rados.map(), &pgid) {
                Ok(v) => CommandReply::data(render(&v, fmt)),
                Err(reply) => return Err(reply),
            }
        }
        CephCommand::PgList { .. } if fmt.is_json() => data(pgs::pg_list_json(&rados.map())),
        CephCommand::PgList { brief } => CommandReply {
            rc: 0,
            outbuf: pgs::pg_list(&rados.map(), brief).into_bytes(),
            outs: if brief { "dumped pgs_brief".into() } else { String::new() },
        },
        CephCommand::OsdDf { .. } if fmt.is_json() => data(pgs::osd_df_json(&rados.map())),
        CephCommand::OsdDf { tree } => text(pgs::osd_df(&rados.map(), tree)),
        CephCommand::QuorumStatus => {
            let fmt = if fmt.is_json() { fmt } else { Format::Json };
            CommandReply::data(render(&pgs::quorum_status(&rados.map()), fmt))
        }
        CephCommand::DfDetail if fmt.is_json() => data(json::df(&status_report(rados).await?)),
        CephCommand::DfDetail => text(plain::df_detail(&status_report(rados).await?)),
        CephCommand::Versions => {
            let map = rados.map();
            let version = version_string();
            let count = |n: usize| if n == 0 { js!({}) } else { js!({ version.clone(): n }) };
            let mons = map.mons.len();
            let osds = map.osds.values().filter(|o| o.up).count();
            let fmt = if fmt.is_json() { fmt } else { Format::JsonPretty };
            CommandReply::data(render(
                &js!({
                    "mon": count(mons),
                    "mgr": {},
                    "osd": count(osds),
                    "mds": {},
                    "overall": count(mons + osds)
                }),
                fmt,
            ))
        }
        CephCommand::Status => {
            let report = status_report(rados).await?;
            let states = pgs::by_state(&pgs::pg_rows(&rados.map()));
            if fmt.is_json() {
                data(json::status_with(&report, &states))
            } else {
                text(plain::status_with(&report, &states))
            }
        }
        CephCommand::Health { detail } if fmt.is_json() => {
            data(json::health_with(&status_report(rados).await?, detail))
        }
        CephCommand::Health { detail } => text(plain::health(&status_report(rados).await?, detail)),
        CephCommand::Df if fmt.is_json() => data(json::df(&status_report(rados).await?)),
        CephCommand::Df => text(plain::df(&status_report(rados).await?)),
        CephCommand::Fsid if fmt.is_json() => data(js!({ "fsid": rados.map().fsid })),
        CephCommand::Fsid => text(format!("{}\n", rados.map().fsid)),
        CephCommand::OsdLs if fmt.is_json() => {
            data(js!(rados.map().osds.keys().collect::<Vec<_>>()))
        }
        CephCommand::OsdLs => {
            text(rados.map().osds.keys().map(|id| format!("{id}\n")).collect::<String>())
        }
        CephCommand::OsdTree if fmt.is_json() => data(json::osd_tree(&rados.map())),
        CephCommand::OsdTree => text(plain::osd_tree(&rados.map())),
        CephCommand::CrushTree if fmt.is_json() => data(json::osd_tree(&rados.map())),
        CephCommand::CrushTree => text(plain::crush_tree(&rados.map())),
        CephCommand::OsdStat if fmt.is_json() => data(json::osd_stat(&rados.map())),
        CephCommand::OsdStat => text(plain::osd_stat(&rados.map())),
        CephCommand::OsdDump if fmt.is_json() => data(json::osd_dump(&rados.map())),
        CephCommand::OsdDump => text(plain::osd_dump(&rados.map())),
        CephCommand::MonDump { stat: false } if fmt.is_json() => {
            let map = rados.map();
            CommandReply {
                rc: 0,
                outbuf: render(&json::mon_dump(&map), fmt).into_bytes(),
                outs: format!("dumped monmap epoch {}", map.epoch),
            }
        }
        CephCommand::MonDump { .. } if fmt.is_json() => data(json::mon_dump(&rados.map())),
        CephCommand::MonDump { stat: true } => text(plain::mon_stat(&rados.map())),
        CephCommand::MonDump { stat: false } => CommandReply {
            rc: 0,
            outbuf: plain::mon_dump(&rados.map()).into_bytes(),
            outs: format!("dumped monmap epoch {}", rados.map().epoch),
        },
        CephCommand::PoolApplicationGet { pool } => {
            let info = pool_info(rados, &pool).await?;
            let apps: serde_json::Map<String, Value> =
                info.applications.iter().map(|a| (a.clone(), js!({}))).collect();
            let fmt = if fmt.is_json() { fmt } else { Format::JsonPretty };
            CommandReply::data(render(&Value::Object(apps), fmt))
        }
        CephCommand::PoolGetQuota { pool } => {
            let info = pool_info(rados, &pool).await?;
            // The stored figures the monitor has from the OSDs' reports.
            let report = status_report(rados).await?;
            let (objects, bytes) = report
                .pools
                .iter()
                .find(|p| p.id == info.id)
                .map_or((0, 0), |p| (p.stored_objects, p.stored_bytes));
            if fmt.is_json() {
                data(js!({
                    "pool_name": pool,
                    "pool_id": info.id,
                    "quota_max_objects": info.quota_max_objects,
                    "quota_max_bytes": info.quota_max_bytes,
                    "current_num_objects": objects,
                    "current_num_bytes": bytes
                }))
            } else {
                let max_objects = match info.quota_max_objects {
                    0 => "N/A".to_string(),
                    n => format!("{n} objects  (current num objects: {objects} objects)"),
                };
                let max_bytes = match info.quota_max_bytes {
                    0 => "N/A".to_string(),
                    n => format!("{}  (current num bytes: {bytes} bytes)", plain::bytes_iec(n)),
                };
                text(format!(
                    "quotas for pool '{pool}':\n  max objects: {max_objects}\n  max bytes  : {max_bytes}\n"
                ))
            }
        }
        CephCommand::PoolSetQuota { pool, field, value } => {
            let number = match field.as_str() {
                "max_bytes" => quarry_conf::parse_size(&value).map_err(|e| e.to_string()),
                "max_objects" => value.trim().parse::<u64>().map_err(|e| e.to_string()),
                _ => {
                    return Err(CommandReply::failed(
                        ErrorCode::EINVAL,
                        format!(
                            "Invalid command: {field} not in max_objects|max_bytes\n\
                             osd pool set-quota <pool> max_objects|max_bytes <val> :  set object or byte limit on pool"
                        ),
                    ));
                }
            };
            let n = number.map_err(|e| {
                CommandReply::failed(
                    ErrorCode::EINVAL,
                    format!("error parsing value '{value}': {e}"),
                )
            })?;
            let cmd = MonCommand::PoolSet {
                pool: pool.clone(),
                var: format!("quota_{field}"),
                val: n.to_string(),
            };
            let reply = call(rados, cmd).await?;
            let _ = rados.lookup_pool(&pool).await;
            done_text(reply, format!("set-quota {field} = {n} for pool {pool}"))?
        }
        CephCommand::PoolGet { pool, key } => {
            let info = pool_info(rados, &pool).await?;
            if fmt.is_json() {
                data(json::pool_get(&info, &key))
            } else {
                text(plain::pool_get(&info, &key))
            }
        }
        CephCommand::PoolLs { detail } if fmt.is_json() => {
            data(json::pool_ls(&rados.map(), detail))
        }
        CephCommand::PoolLs { detail } => {
            let map = rados.map();
            text(
                map.pools
                    .values()
                    .map(|p| {
                        if detail {
                            plain::pool_detail(p, map.epoch)
                        } else {
                            format!("{}\n", p.name)
                        }
                    })
                    .collect::<String>(),
            )
        }
        CephCommand::PoolCreate { name, pg_num, size } => {
            let reply =
                call(rados, MonCommand::PoolCreate { name: name.clone(), pg_num, size }).await?;
            done_text(reply, format!("pool '{name}' created"))?
        }
        CephCommand::PoolRm { name, again, sure } => {
            if rados.lookup_pool(&name).await.is_err() {
                return Ok(CommandReply::status(format!("pool '{name}' does not exist")));
            }
            if again.as_deref() != Some(name.as_str()) || !sure {
                return Err(CommandReply::failed(
                    ErrorCode::EPERM,
                    format!(
                        "WARNING: this will *PERMANENTLY DESTROY* all data stored in pool {name}.  \
                         If you are *ABSOLUTELY CERTAIN* that is what you want, pass the pool name \
                         *twice*, followed by --yes-i-really-really-mean-it."
                    ),
                ));
            }
            let reply = call(rados, MonCommand::PoolRm { name: name.clone() }).await?;
            done_text(reply, format!("pool '{name}' removed"))?
        }
        CephCommand::PoolApplicationEnable { pool, app } => {
            let reply = call(
                rados,
                MonCommand::PoolApplicationEnable { pool: pool.clone(), app: app.clone() },
            )
            .await?;
            done_text(reply, format!("enabled application '{app}' on pool '{pool}'"))?
        }
        CephCommand::PoolMkSnap { pool, snap } => {
            let cmd = MonCommand::PoolSnapCreate {
                pool: pool.clone(),
                snap: snap.clone(),
                strict: false,
            };
            done_text(call(rados, cmd).await?, format!("created pool {pool} snap {snap}"))?
        }
        CephCommand::PoolRmSnap { pool, snap } => {
            let cmd = MonCommand::PoolSnapRemove {
                pool: pool.clone(),
                snap: snap.clone(),
                strict: false,
            };
            done_text(call(rados, cmd).await?, format!("removed pool {pool} snap {snap}"))?
        }
        CephCommand::BlocklistAdd { instance, expire_secs } => {
            let reply =
                call(rados, MonCommand::BlocklistAdd { instance: instance.clone(), expire_secs })
                    .await?;
            // Ceph's line, with the expiry the monitor stamped (the map was refreshed).
            let key = quarry_wire::blocklist::BlocklistEntry::parse(&instance)
                .map_or(instance.clone(), |(_, key)| key);
            match rados.map().blocklist.get(&key) {
                Some(&until) => CommandReply::status(format!(
                    "blocklisting {key} until {} ({expire_secs} sec)",
                    plain::utime(until, 0)
                )),
                None => done_text(reply, format!("blocklisting {key}"))?,
            }
        }
        CephCommand::BlocklistRm { entry } => {
            let reply = call(rados, MonCommand::BlocklistRm { entry: entry.clone() }).await?;
            done_text(reply, format!("un-blocklisting {entry}"))?
        }
        CephCommand::BlocklistLs => {
            let map = rados.map();
            let now = crate::session::unix_now();
            let live: Vec<(&String, u64)> = map
                .blocklist
                .iter()
                .filter(|(_, &until)| until > now)
                .map(|(k, &u)| (k, u))
                .collect();
            let outs = format!("listed {} entries", live.len());
            let outbuf = if fmt.is_json() {
                let list: Vec<Value> = live
                    .iter()
                    .map(|(addr, until)| js!({ "addr": addr, "until": plain::utime(*until, 0) }))
                    .collect();
                render(&js!(list), fmt)
            } else {
                live.iter()
                    .map(|(addr, until)| format!("{addr} {}\n", plain::utime(*until, 0)))
                    .collect()
            };
            CommandReply { rc: 0, outbuf: outbuf.into_bytes(), outs }
        }
        CephCommand::AuthGetOrCreate { entity, caps, key_only } => {
            let reply =
                call(rados, MonCommand::AuthGetOrCreate { entity: entity.clone(), caps }).await?;
            let keyring = keyring_text(reply)?;
            match (key_only, fmt.is_json()) {
                (true, true) => data(js!({ "key": key_of(&keyring, &entity)? })),
                (true, false) => text(format!("{}\n", key_of(&keyring, &entity)?)),
                (false, true) => data(keyring_json(&keyring)?),
                (false, false) => text(keyring),
            }
        }
        CephCommand::AuthAdd { entity, caps } => {
            let reply =
                call(rados, MonCommand::AuthGetOrCreate { entity: entity.clone(), caps }).await?;
            keyring_text(reply)?;
            CommandReply::status(format!("added key for {entity}"))
        }
        CephCommand::AuthGet { entity } => {
            let keyring = keyring_text(call(rados, MonCommand::AuthGet { entity }).await?)?;
            if fmt.is_json() {
                data(keyring_json(&keyring)?)
            } else {
                text(keyring)
            }
        }
        CephCommand::AuthGetKey { entity } => {
            match call(rados, MonCommand::AuthGetKey { entity }).await? {
                MonReply::Key(key) if fmt.is_json() => data(js!({ "key": key })),
                MonReply::Key(key) => text(format!("{key}\n")),
                other => return Err(unexpected(&other)),
            }
        }
        CephCommand::AuthLs => match call(rados, MonCommand::AuthLs).await? {
            MonReply::AuthList(entries) if fmt.is_json() => {
                data(js!({ "auth_dump": json::auth_entries(&entries) }))
            }
            MonReply::AuthList(entries) => CommandReply {
                rc: 0,
                outbuf: plain::auth_list(&entries).into_bytes(),
                outs: "installed auth entries:".into(),
            },
            other => return Err(unexpected(&other)),
        },
        CephCommand::AuthDel { entity } => {
            match rados.command(MonCommand::AuthDel { entity: entity.clone() }).await {
                Ok(reply) => done_text(reply, "updated".into())?,
                // Ceph's `auth del` of a missing entity succeeds and says so (scripts that
                // clean up rely on it being idempotent).
                Err(e) if e.errno() == ErrorCode::ENOENT => {
                    CommandReply::status(format!("entity {entity} does not exist"))
                }
                Err(e) => return Err(client_failure(e)),
            }
        }
        CephCommand::AuthCaps { entity, caps } => {
            let reply = call(rados, MonCommand::AuthCaps { entity: entity.clone(), caps }).await?;
            done_text(reply, format!("updated caps for {entity}"))?
        }
        CephCommand::AuthImport => {
            let keyring = String::from_utf8(inbuf.to_vec()).map_err(|_| {
                CommandReply::failed(ErrorCode::EINVAL, "the keyring to import is not text")
            })?;
            done_text(
                call(rados, MonCommand::AuthImport { keyring }).await?,
                "imported keyring".into(),
            )?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_text_forms() {
        let obj = parse_request(r#"{"prefix": "status", "format": "json"}"#).unwrap();
        assert_eq!(obj["prefix"], "status");
        let list = parse_request(r#"["{\"prefix\": \"df\"}"]"#).unwrap();
        assert_eq!(list["prefix"], "df");
        let e = parse_request("{not json").unwrap_err();
        assert_eq!(e.code(), ErrorCode::EINVAL);
        assert!(e.to_string().starts_with("bad command JSON"), "{e}");
        assert!(parse_request("42").is_err());
    }

    #[test]
    fn replies_carry_negative_errnos() {
        let r: CommandReply = AdminError::UnknownCommand { prefix: "x".into() }.into();
        assert_eq!(r.rc, -22);
        assert_eq!(r.outs, "command not known: 'x'");
        assert_eq!(r.error_code(), Some(ErrorCode::EINVAL));
        let v = version_reply(Format::Json);
        assert_eq!(v.rc, 0);
        assert!(String::from_utf8(v.outbuf)
            .unwrap()
            .starts_with("{\"version\":\"ceph version 16.2.15-quarry."));
    }
}
