//! `quarry ceph …` (or `ceph …` through a link): the cluster admin commands with Ceph's
//! syntax and output. The command words are matched by hand, as Ceph's own CLI matches its
//! command signatures, so options may stand anywhere among them (`ceph osd pool ls --id x`).
//!
//! Ceph's conventions kept here: data goes to stdout (or the `-o` file), the status line a
//! command produces (`pool 'x' created`, `updated`) goes to stderr, and a failure prints
//! `Error EXXX: message` on stderr and exits with the errno.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use quarry_client::Rados;
use quarry_conf::CommonArgs;
use quarry_types::{EntityName, ErrorCode};
use quarry_wire::{MonCommand, MonReply, StatusReport};

use crate::error::CliError;
use crate::json::{self, Format};
use crate::output;
use crate::session::{self, command_error, Tool};

/// The `ceph` tool's command line.
#[derive(clap::Args, Debug)]
#[command(
    about = "Ceph-compatible cluster administration (status, pools, users)",
    after_help = COMMANDS_HELP
)]
pub struct CephArgs {
    /// Who we are and where the cluster is.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Show the cluster status (same as `ceph status`).
    #[arg(short = 's', long = "status")]
    pub status: bool,
    /// Write the command's output to this file instead of stdout.
    #[arg(short = 'o', long = "out-file", value_name = "FILE")]
    pub out_file: Option<PathBuf>,
    /// Input file for commands that read one (`auth import -i FILE`). `-i` is accepted too.
    #[arg(long = "in-file", value_name = "FILE")]
    pub in_file: Option<PathBuf>,
    /// Confirms `osd pool rm`.
    #[arg(long = "yes-i-really-really-mean-it")]
    pub really_really: bool,
    /// Confirms a risky but recoverable change.
    #[arg(long = "yes-i-really-mean-it")]
    pub really: bool,
    /// Replicas for `osd pool create` (default: the monitor's `osd_pool_default_size`).
    #[arg(long = "size", value_name = "N")]
    pub size: Option<u32>,
    /// Output format: plain (default), json or json-pretty.
    #[arg(short = 'f', long = "format", value_name = "FORMAT")]
    pub format: Option<String>,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    /// The command words, e.g. `osd pool create rbd 32`.
    #[arg(value_name = "COMMAND")]
    pub words: Vec<String>,
}

const COMMANDS_HELP: &str = "\
Commands:
  status | -s                         cluster status
  health [detail]                     health summary
  df                                  usage per pool
  fsid                                the cluster id
  osd ls | tree | stat | dump         OSDs
  mon dump | stat                     monitors
  osd pool get POOL size|min_size|pg_num|pgp_num|crush_rule|all
  osd pool create NAME [PG_NUM] [--size N]
  osd pool ls [detail]
  osd pool rm NAME NAME --yes-i-really-really-mean-it
  osd pool application enable POOL APP
  osd blocklist add ENTITY@GLOBAL_ID [SECONDS]
  auth get-or-create ENTITY [TYPE CAPS]... [-o FILE]
  auth get-or-create-key ENTITY [TYPE CAPS]...
  auth add ENTITY [TYPE CAPS]... | auth add ENTITY -i FILE
  auth get ENTITY [-o FILE]
  auth get-key ENTITY | auth print-key ENTITY
  auth ls
  auth del ENTITY
  auth caps ENTITY [TYPE CAPS]...
  auth import -i FILE";

/// One parsed `ceph` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CephCommand {
    /// `ceph -s`.
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
    /// `ceph -v`.
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
    /// `ceph osd blocklist add INSTANCE [SECONDS]`.
    BlocklistAdd {
        /// `client.x@GLOBAL_ID`.
        instance: String,
        /// Expiry in seconds.
        expire_secs: u64,
    },
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
    /// `ceph auth import -i FILE` (also `auth add ENTITY -i FILE`).
    AuthImport {
        /// The keyring file.
        file: PathBuf,
    },
}

/// `Error EINVAL: ...` with Ceph's exit status 22.
fn invalid(message: impl Into<String>) -> CliError {
    CliError::command(ErrorCode::EINVAL, message)
}

fn invalid_command(words: &[String]) -> CliError {
    CliError::Usage {
        message: format!(
            "no valid command found for '{}'; see `ceph --help`\nError EINVAL: invalid command",
            words.join(" ")
        ),
        status: 22,
    }
}

fn entity_arg(text: &str) -> Result<String, CliError> {
    match EntityName::parse(text) {
        Some(name) => Ok(name.to_string()),
        None => {
            Err(invalid(format!("bad entity name '{text}': expected TYPE.ID (client.x, osd.N)")))
        }
    }
}

/// `[TYPE CAPS]...` pairs: `mon 'profile rbd' osd 'profile rbd pool=x'`.
fn caps_args(words: &[String]) -> Result<BTreeMap<String, String>, CliError> {
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

fn number<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, CliError> {
    text.parse().map_err(|_| invalid(format!("{what} '{text}' is not a valid number")))
}

/// Parses the command words and flags into a command (no cluster needed).
pub fn parse(args: &CephArgs) -> Result<CephCommand, CliError> {
    if args.version {
        return Ok(CephCommand::Version);
    }
    if Format::parse(args.format.as_deref()).is_none() {
        let format = args.format.as_deref().unwrap_or_default();
        return Err(invalid(format!(
            "output format '{format}' is not supported (plain, json, json-pretty)"
        )));
    }
    let words = &args.words;
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    if args.status {
        return if w.is_empty() || w == ["status"] {
            Ok(CephCommand::Status)
        } else {
            Err(invalid_command(words))
        };
    }
    let cmd = match w.as_slice() {
        [] => {
            return Err(CliError::Usage {
                message: format!("ceph: no command given\n{COMMANDS_HELP}"),
                status: 22,
            })
        }
        ["status"] | ["s"] => CephCommand::Status,
        ["health"] => CephCommand::Health { detail: false },
        ["health", "detail"] => CephCommand::Health { detail: true },
        ["df"] => CephCommand::Df,
        ["fsid"] => CephCommand::Fsid,
        ["version"] | ["versions"] => CephCommand::Version,
        ["osd", "ls"] => CephCommand::OsdLs,
        ["osd", "tree"] => CephCommand::OsdTree,
        ["osd", "stat"] => CephCommand::OsdStat,
        ["osd", "dump"] => CephCommand::OsdDump,
        ["mon", "dump"] => CephCommand::MonDump { stat: false },
        ["mon", "stat"] => CephCommand::MonDump { stat: true },
        ["osd", "pool", "get", pool, key] => {
            if !output::POOL_GET_KEYS.contains(key) {
                return Err(invalid(format!(
                    "unsupported pool variable '{key}' (one of: {})",
                    output::POOL_GET_KEYS.join(", ")
                )));
            }
            CephCommand::PoolGet { pool: pool.to_string(), key: key.to_string() }
        }
        ["osd", "pool", "set", _, key, ..] => {
            return Err(CliError::command(
                ErrorCode::EOPNOTSUPP,
                format!("changing pool variable '{key}' is not supported yet"),
            ))
        }
        ["osd", "lspools"] => CephCommand::PoolLs { detail: false },
        ["osd", "pool", "ls" | "list"] => CephCommand::PoolLs { detail: false },
        ["osd", "pool", "ls" | "list", "detail"] => CephCommand::PoolLs { detail: true },
        ["osd", "pool", "create", name, rest @ ..] => {
            let mut pg_num = None;
            let mut numbers = 0;
            for word in rest {
                match *word {
                    "replicated" => {}
                    "erasure" => {
                        return Err(CliError::command(
                            ErrorCode::EOPNOTSUPP,
                            "erasure-coded pools are not supported; use a replicated pool",
                        ))
                    }
                    n if n.chars().all(|c| c.is_ascii_digit()) && numbers < 2 => {
                        // pg_num, then pgp_num (which always equals pg_num here).
                        let value: u32 = number("pg_num", n)?;
                        if numbers == 0 {
                            pg_num = Some(value);
                        }
                        numbers += 1;
                    }
                    other => {
                        return Err(invalid(format!(
                            "unexpected argument '{other}' to osd pool create"
                        )))
                    }
                }
            }
            if pg_num == Some(0) {
                return Err(CliError::command(
                    ErrorCode::ERANGE,
                    "'pg_num' must be greater than 0",
                ));
            }
            CephCommand::PoolCreate { name: name.to_string(), pg_num, size: args.size }
        }
        ["osd", "pool", "rm" | "delete", name] => {
            CephCommand::PoolRm { name: name.to_string(), again: None, sure: args.really_really }
        }
        ["osd", "pool", "rm" | "delete", name, again] => CephCommand::PoolRm {
            name: name.to_string(),
            again: Some(again.to_string()),
            sure: args.really_really,
        },
        ["osd", "pool", "application", "enable", pool, app] => {
            CephCommand::PoolApplicationEnable { pool: pool.to_string(), app: app.to_string() }
        }
        ["osd", "blocklist" | "blacklist", "add", instance, rest @ ..] if rest.len() <= 1 => {
            let expire_secs = match rest.first() {
                Some(secs) => number::<f64>("expire", secs)?.max(0.0) as u64,
                None => 3600,
            };
            CephCommand::BlocklistAdd { instance: instance.to_string(), expire_secs }
        }
        ["auth", verb @ ("get-or-create" | "get-or-create-key"), entity, ..] => {
            CephCommand::AuthGetOrCreate {
                entity: entity_arg(entity)?,
                caps: caps_args(&words[3..])?,
                key_only: *verb == "get-or-create-key",
            }
        }
        ["auth", "add", entity, ..] => match &args.in_file {
            Some(file) if words.len() == 3 => CephCommand::AuthImport { file: file.clone() },
            _ => {
                CephCommand::AuthAdd { entity: entity_arg(entity)?, caps: caps_args(&words[3..])? }
            }
        },
        ["auth", "get" | "export", entity] => CephCommand::AuthGet { entity: entity_arg(entity)? },
        ["auth", "get-key" | "print-key" | "print_key", entity] => {
            CephCommand::AuthGetKey { entity: entity_arg(entity)? }
        }
        ["auth", "ls" | "list"] => CephCommand::AuthLs,
        ["auth", "del" | "rm", entity] => CephCommand::AuthDel { entity: entity_arg(entity)? },
        ["auth", "caps", entity, ..] => {
            CephCommand::AuthCaps { entity: entity_arg(entity)?, caps: caps_args(&words[3..])? }
        }
        ["auth", "import"] => match &args.in_file {
            Some(file) => CephCommand::AuthImport { file: file.clone() },
            None => {
                return Err(invalid("auth import needs the keyring file: ceph auth import -i FILE"))
            }
        },
        _ => return Err(invalid_command(words)),
    };
    Ok(cmd)
}

/// What a command produced: data (stdout or `-o` file) and a status line (stderr).
#[derive(Debug, Default)]
struct Output {
    data: Vec<u8>,
    status: String,
}

impl Output {
    fn data(text: impl Into<String>) -> Output {
        Output { data: text.into().into_bytes(), status: String::new() }
    }

    fn status(text: impl Into<String>) -> Output {
        Output { data: Vec::new(), status: text.into() }
    }
}

/// Runs `ceph …`.
pub async fn run(args: CephArgs) -> Result<(), CliError> {
    let cmd = parse(&args)?;
    let fmt = Format::parse(args.format.as_deref()).unwrap_or(Format::Plain);
    if cmd == CephCommand::Version {
        let version =
            format!("ceph version quarry-{} (Ceph-compatible)", env!("CARGO_PKG_VERSION"));
        let out = if fmt.is_json() {
            Output::data(json::render(&serde_json::json!({ "version": version }), fmt))
        } else {
            Output::data(format!("{version}\n"))
        };
        return write_output(&out, args.out_file.as_deref());
    }
    let rados = session::connect(&args.common, Tool::Ceph).await?;
    let result = execute(&rados, cmd, fmt).await;
    rados.shutdown().await;
    write_output(&result?, args.out_file.as_deref())
}

fn write_output(out: &Output, file: Option<&Path>) -> Result<(), CliError> {
    // Like the ceph CLI: the status line (stderr) before the data.
    if !out.status.is_empty() {
        eprintln!("{}", out.status);
    }
    match file {
        Some(path) => write_private_file(path, &out.data)?,
        None if !out.data.is_empty() => {
            if let Err(e) = output::stdout_bytes(&out.data) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(CliError::io("<stdout>", e));
                }
            }
        }
        None => {}
    }
    Ok(())
}

/// Writes `data` to `path` readable by its owner only (outputs are often keyrings).
pub fn write_private_file(path: &Path, data: &[u8]) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::io(path, e))?;
    file.write_all(data).map_err(|e| CliError::io(path, e))
}

async fn command(rados: &Rados, cmd: MonCommand) -> Result<MonReply, CliError> {
    rados.command(cmd).await.map_err(command_error)
}

async fn status_report(rados: &Rados) -> Result<StatusReport, CliError> {
    match command(rados, MonCommand::Status).await? {
        MonReply::Status(report) => Ok(*report),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(reply: &MonReply) -> CliError {
    CliError::command(ErrorCode::EPROTO, format!("unexpected reply from the monitor: {reply:?}"))
}

fn done_text(reply: MonReply, fallback: String) -> Result<Output, CliError> {
    match reply {
        MonReply::Done(text) if text.is_empty() => Ok(Output::status(fallback)),
        MonReply::Done(text) => Ok(Output::status(text)),
        other => Err(unexpected(&other)),
    }
}

fn keyring_text(reply: MonReply) -> Result<String, CliError> {
    match reply {
        MonReply::Keyring(text) => Ok(text),
        other => Err(unexpected(&other)),
    }
}

/// Keyring text from the monitor as JSON entries.
fn keyring_json(text: &str) -> Result<serde_json::Value, CliError> {
    json::keyring_entries(text).ok_or_else(|| {
        CliError::command(ErrorCode::EPROTO, "bad keyring from the monitor".to_string())
    })
}

/// The key of `entity` in keyring text.
fn key_of(text: &str, entity: &str) -> Result<String, CliError> {
    let ring = quarry_auth::Keyring::parse(text).map_err(|e| {
        CliError::command(ErrorCode::EPROTO, format!("bad keyring from the monitor: {e}"))
    })?;
    EntityName::parse(entity)
        .and_then(|name| ring.entries.get(&name).map(|e| e.key.to_base64()))
        .ok_or_else(|| {
            CliError::command(
                ErrorCode::EPROTO,
                format!("the monitor returned no key for {entity}"),
            )
        })
}

async fn execute(rados: &Rados, cmd: CephCommand, fmt: Format) -> Result<Output, CliError> {
    let js = |v: serde_json::Value| Output::data(json::render(&v, fmt));
    Ok(match cmd {
        CephCommand::Version => unreachable!("handled before connecting"),
        CephCommand::Status if fmt.is_json() => js(json::status(&status_report(rados).await?)),
        CephCommand::Status => Output::data(output::status(&status_report(rados).await?)),
        CephCommand::Health { .. } if fmt.is_json() => {
            js(json::health(&status_report(rados).await?))
        }
        CephCommand::Health { detail } => {
            Output::data(output::health(&status_report(rados).await?, detail))
        }
        CephCommand::Df if fmt.is_json() => js(json::df(&status_report(rados).await?)),
        CephCommand::Df => Output::data(output::df(&status_report(rados).await?)),
        CephCommand::Fsid if fmt.is_json() => js(serde_json::json!({ "fsid": rados.map().fsid })),
        CephCommand::Fsid => Output::data(format!("{}\n", rados.map().fsid)),
        CephCommand::OsdLs if fmt.is_json() => {
            js(serde_json::json!(rados.map().osds.keys().collect::<Vec<_>>()))
        }
        CephCommand::OsdLs => {
            let map = rados.map();
            Output::data(map.osds.keys().map(|id| format!("{id}\n")).collect::<String>())
        }
        CephCommand::OsdTree if fmt.is_json() => js(json::osd_tree(&rados.map())),
        CephCommand::OsdTree => Output::data(output::osd_tree(&rados.map())),
        CephCommand::OsdStat if fmt.is_json() => js(json::osd_stat(&rados.map())),
        CephCommand::OsdStat => Output::data(output::osd_stat(&rados.map())),
        CephCommand::OsdDump if fmt.is_json() => js(json::osd_dump(&rados.map())),
        CephCommand::OsdDump => Output::data(output::osd_dump(&rados.map())),
        CephCommand::MonDump { .. } if fmt.is_json() => js(json::mon_dump(&rados.map())),
        CephCommand::MonDump { stat } => {
            let map = rados.map();
            if stat {
                Output::data(output::mon_stat(&map))
            } else {
                Output { data: output::mon_dump(&map).into_bytes(), status: "dumped monmap".into() }
            }
        }
        CephCommand::PoolGet { pool, key } => {
            rados.lookup_pool(&pool).await.map_err(|_| {
                CliError::command(ErrorCode::ENOENT, format!("unrecognized pool '{pool}'"))
            })?;
            let map = rados.map();
            let info = map.pool_by_name(&pool).ok_or_else(|| {
                CliError::command(ErrorCode::ENOENT, format!("unrecognized pool '{pool}'"))
            })?;
            if fmt.is_json() {
                js(json::pool_get(info, &key))
            } else {
                Output::data(output::pool_get(info, &key))
            }
        }
        CephCommand::PoolLs { detail } if fmt.is_json() => js(json::pool_ls(&rados.map(), detail)),
        CephCommand::PoolLs { detail } => {
            let map = rados.map();
            let text: String = map
                .pools
                .values()
                .map(|p| {
                    if detail {
                        output::pool_detail(p, map.epoch)
                    } else {
                        format!("{}\n", p.name)
                    }
                })
                .collect();
            Output::data(text)
        }
        CephCommand::PoolCreate { name, pg_num, size } => {
            let reply =
                command(rados, MonCommand::PoolCreate { name: name.clone(), pg_num, size }).await?;
            done_text(reply, format!("pool '{name}' created"))?
        }
        CephCommand::PoolRm { name, again, sure } => {
            if rados.lookup_pool(&name).await.is_err() {
                return Ok(Output::status(format!("pool '{name}' does not exist")));
            }
            if again.as_deref() != Some(name.as_str()) || !sure {
                return Err(CliError::command(
                    ErrorCode::EPERM,
                    format!(
                        "WARNING: this will *PERMANENTLY DESTROY* all data stored in pool {name}.  \
                         If you are *ABSOLUTELY CERTAIN* that is what you want, pass the pool name \
                         *twice*, followed by --yes-i-really-really-mean-it."
                    ),
                ));
            }
            let reply = command(rados, MonCommand::PoolRm { name: name.clone() }).await?;
            done_text(reply, format!("pool '{name}' removed"))?
        }
        CephCommand::PoolApplicationEnable { pool, app } => {
            let reply = command(
                rados,
                MonCommand::PoolApplicationEnable { pool: pool.clone(), app: app.clone() },
            )
            .await?;
            done_text(reply, format!("enabled application '{app}' on pool '{pool}'"))?
        }
        CephCommand::BlocklistAdd { instance, expire_secs } => {
            let reply = command(
                rados,
                MonCommand::BlocklistAdd { instance: instance.clone(), expire_secs },
            )
            .await?;
            done_text(reply, format!("blocklisting {instance}"))?
        }
        CephCommand::AuthGetOrCreate { entity, caps, key_only } => {
            let reply =
                command(rados, MonCommand::AuthGetOrCreate { entity: entity.clone(), caps })
                    .await?;
            let text = keyring_text(reply)?;
            match (key_only, fmt.is_json()) {
                (true, true) => js(serde_json::json!({ "key": key_of(&text, &entity)? })),
                (true, false) => Output::data(format!("{}\n", key_of(&text, &entity)?)),
                (false, true) => js(keyring_json(&text)?),
                (false, false) => Output::data(text),
            }
        }
        CephCommand::AuthAdd { entity, caps } => {
            let reply =
                command(rados, MonCommand::AuthGetOrCreate { entity: entity.clone(), caps })
                    .await?;
            keyring_text(reply)?;
            Output::status(format!("added key for {entity}"))
        }
        CephCommand::AuthGet { entity } => {
            let text = keyring_text(command(rados, MonCommand::AuthGet { entity }).await?)?;
            if fmt.is_json() {
                js(keyring_json(&text)?)
            } else {
                Output::data(text)
            }
        }
        CephCommand::AuthGetKey { entity } => {
            match command(rados, MonCommand::AuthGetKey { entity }).await? {
                MonReply::Key(key) if fmt.is_json() => js(serde_json::json!({ "key": key })),
                MonReply::Key(key) => Output::data(format!("{key}\n")),
                other => return Err(unexpected(&other)),
            }
        }
        CephCommand::AuthLs => match command(rados, MonCommand::AuthLs).await? {
            MonReply::AuthList(entries) if fmt.is_json() => {
                js(serde_json::json!({ "auth_dump": json::auth_entries(&entries) }))
            }
            MonReply::AuthList(entries) => Output {
                data: output::auth_list(&entries).into_bytes(),
                status: "installed auth entries:".into(),
            },
            other => return Err(unexpected(&other)),
        },
        CephCommand::AuthDel { entity } => {
            done_text(command(rados, MonCommand::AuthDel { entity }).await?, "updated".into())?
        }
        CephCommand::AuthCaps { entity, caps } => {
            let reply =
                command(rados, MonCommand::AuthCaps { entity: entity.clone(), caps }).await?;
            done_text(reply, format!("updated caps for {entity}"))?
        }
        CephCommand::AuthImport { file } => {
            let keyring = std::fs::read_to_string(&file).map_err(|e| {
                CliError::command(
                    ErrorCode(e.raw_os_error().unwrap_or(ErrorCode::EIO.0)),
                    format!("can't read {}: {e}", file.display()),
                )
            })?;
            done_text(
                command(rados, MonCommand::AuthImport { keyring }).await?,
                "imported keyring".into(),
            )?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Wrapper {
        #[command(flatten)]
        ceph: CephArgs,
    }

    fn parse_line(line: &[&str]) -> Result<CephCommand, CliError> {
        let argv = std::iter::once("ceph").chain(line.iter().copied());
        let w = Wrapper::try_parse_from(argv)
            .map_err(|e| CliError::Usage { message: e.to_string(), status: 2 })?;
        parse(&w.ceph)
    }

    #[test]
    fn status_and_health() {
        assert_eq!(parse_line(&["-s"]).unwrap(), CephCommand::Status);
        assert_eq!(parse_line(&["status"]).unwrap(), CephCommand::Status);
        assert_eq!(
            parse_line(&["health", "detail"]).unwrap(),
            CephCommand::Health { detail: true }
        );
        assert_eq!(parse_line(&["-v"]).unwrap(), CephCommand::Version);
    }

    #[test]
    fn pool_commands() {
        assert_eq!(
            parse_line(&["osd", "pool", "create", "rbdpool", "64", "64", "replicated"]).unwrap(),
            CephCommand::PoolCreate { name: "rbdpool".into(), pg_num: Some(64), size: None }
        );
        assert_eq!(
            parse_line(&["osd", "pool", "create", "p", "--size", "2"]).unwrap(),
            CephCommand::PoolCreate { name: "p".into(), pg_num: None, size: Some(2) }
        );
        assert_eq!(
            parse_line(&["osd", "pool", "rm", "p", "p", "--yes-i-really-really-mean-it"]).unwrap(),
            CephCommand::PoolRm { name: "p".into(), again: Some("p".into()), sure: true }
        );
        assert_eq!(
            parse_line(&["osd", "pool", "rm", "p"]).unwrap(),
            CephCommand::PoolRm { name: "p".into(), again: None, sure: false }
        );
        assert_eq!(
            parse_line(&["osd", "pool", "ls", "detail"]).unwrap(),
            CephCommand::PoolLs { detail: true }
        );
        assert_eq!(
            parse_line(&["osd", "pool", "application", "enable", "p", "rbd"]).unwrap(),
            CephCommand::PoolApplicationEnable { pool: "p".into(), app: "rbd".into() }
        );
        assert_eq!(
            parse_line(&["osd", "pool", "get", "rbd", "size"]).unwrap(),
            CephCommand::PoolGet { pool: "rbd".into(), key: "size".into() }
        );
        assert_eq!(parse_line(&["osd", "pool", "get", "rbd", "color"]).unwrap_err().status(), 22);
        assert_eq!(
            parse_line(&["osd", "pool", "set", "rbd", "size", "2"]).unwrap_err().status(),
            95
        );
        assert_eq!(parse_line(&["osd", "dump"]).unwrap(), CephCommand::OsdDump);
        let e = parse_line(&["osd", "pool", "create", "p", "erasure"]).unwrap_err();
        assert_eq!(e.status(), 95);
        let e = parse_line(&["osd", "pool", "create", "p", "bogus"]).unwrap_err();
        assert_eq!(e.status(), 22);
    }

    #[test]
    fn auth_commands_take_caps_pairs_and_options_anywhere() {
        let cmd = parse_line(&[
            "auth",
            "get-or-create",
            "client.qemu",
            "mon",
            "profile rbd",
            "osd",
            "profile rbd pool=rbdpool",
            "-o",
            "/tmp/k",
        ])
        .unwrap();
        assert_eq!(
            cmd,
            CephCommand::AuthGetOrCreate {
                entity: "client.qemu".into(),
                caps: BTreeMap::from([
                    ("mon".into(), "profile rbd".into()),
                    ("osd".into(), "profile rbd pool=rbdpool".into())
                ]),
                key_only: false,
            }
        );
        let e = parse_line(&["auth", "get-or-create", "client.qemu", "mon"]).unwrap_err();
        assert_eq!(e.status(), 22);
        let e = parse_line(&["auth", "get", "qemu"]).unwrap_err();
        assert!(e.to_string().starts_with("Error EINVAL: bad entity name"), "{e}");
        assert_eq!(
            parse_line(&["auth", "del", "client.qemu"]).unwrap(),
            CephCommand::AuthDel { entity: "client.qemu".into() }
        );
        assert_eq!(
            parse_line(&["auth", "import", "--in-file", "/tmp/k"]).unwrap(),
            CephCommand::AuthImport { file: "/tmp/k".into() }
        );
        assert_eq!(parse_line(&["auth", "ls", "--id", "admin"]).unwrap(), CephCommand::AuthLs);
    }

    #[test]
    fn unknown_commands_are_einval() {
        let e = parse_line(&["osd", "frobnicate"]).unwrap_err();
        assert_eq!(e.status(), 22);
        assert!(e.to_string().ends_with("Error EINVAL: invalid command"));
        assert_eq!(parse_line(&[]).unwrap_err().status(), 22);
    }
}
