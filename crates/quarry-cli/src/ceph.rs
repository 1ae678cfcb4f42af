//! `quarry ceph …` (or `ceph …` through a link): the cluster admin commands with Ceph's
//! syntax and output. Only the command line is handled here: the words become a monitor
//! command request (`quarry_client::admin`, which matches them as Ceph's own CLI matches its
//! command signatures, so options may stand anywhere among them: `ceph osd pool ls --id x`),
//! the request goes through `Rados::mon_command`, and the reply is printed.
//!
//! Ceph's conventions kept here: data goes to stdout (or the `-o` file), the status line a
//! command produces (`pool 'x' created`, `updated`) goes to stderr, and a failure prints
//! `Error EXXX: message` on stderr and exits with the errno.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use quarry_client::admin::{self, AdminError, CephCommand, CommandReply, Format, WordFlags};
use quarry_conf::CommonArgs;
use quarry_types::ErrorCode;
use serde_json::{Map, Value};

use crate::error::CliError;
use crate::output;
use crate::session::{self, Tool};

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
    /// Confirms `osd pool rm` (hidden: never offered as a typo suggestion).
    #[arg(long = "yes-i-really-really-mean-it", hide = true)]
    pub really_really: bool,
    /// Confirms a risky but recoverable change (hidden: never offered as a suggestion).
    #[arg(long = "yes-i-really-mean-it", hide = true)]
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
    #[arg(value_name = "COMMAND", allow_negative_numbers = true)]
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
  osd pool mksnap POOL SNAP           create a pool snapshot
  osd pool rmsnap POOL SNAP           remove a pool snapshot
  osd blocklist add ENTITY@GLOBAL_ID|IP:PORT/NONCE [SECONDS]
  osd blocklist rm ENTITY@GLOBAL_ID|IP:PORT/NONCE
  osd blocklist ls
  auth get-or-create ENTITY [TYPE CAPS]... [-o FILE]
  auth get-or-create-key ENTITY [TYPE CAPS]...
  auth add ENTITY [TYPE CAPS]... | auth add ENTITY -i FILE
  auth get ENTITY [-o FILE]
  auth get-key ENTITY | auth print-key ENTITY
  auth ls
  auth del ENTITY
  auth caps ENTITY [TYPE CAPS]...
  auth import -i FILE";

/// The request's input buffer: the `-i` file (a keyring for `auth import`), read before
/// connecting so a missing file fails fast. A regular file of at most 4 MiB
/// (`quarry_conf::read_small_file`: `-i /dev/zero` is refused, not read forever).
fn read_input(file: Option<&Path>) -> Result<Vec<u8>, CliError> {
    match file {
        None => Ok(Vec::new()),
        Some(file) => quarry_conf::read_small_file(file, quarry_conf::SMALL_FILE_BYTES_MAX)
            .map_err(|e| {
                CliError::command(
                    ErrorCode(quarry_conf::small_file_errno(&e)),
                    format!("can't read {}: {e}", file.display()),
                )
            }),
    }
}

/// Refuses an `-o` file in a directory that does not exist before anything runs (Ceph's tool
/// opens it first): `auth get-or-create … -o /missing/dir/keyring` must not create the user
/// and then fail to save its key.
fn check_output_dir(out: &Path) -> Result<(), CliError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if parent.is_dir() {
        return Ok(());
    }
    Err(CliError::Usage {
        message: format!("can't open {}: [Errno 2] No such file or directory", out.display()),
        status: 1,
    })
}

/// `osd blocklist add ADDR EXPIRE` with an EXPIRE Ceph's CLI refuses (not a float, or
/// negative): Ceph's lines (its argument check, the command's signature) and EINVAL.
fn check_blocklist_expire(words: &[String]) -> Result<(), CliError> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let ["osd", "blocklist" | "blacklist", "add", _, expire] = w.as_slice() else {
        return Ok(());
    };
    let why = match expire.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => return Ok(()),
        Ok(v) => format!("{expire} not valid:  {v:?} not in range [0.0]"),
        Err(_) => format!("{expire} not valid:  {expire} doesn't represent a float"),
    };
    Err(CliError::Usage {
        message: format!(
            "{why}\nInvalid command: unused arguments: ['{expire}']\nosd blocklist [<range>] \
             add|rm <addr> [<expire:float>] :  add (optionally until <expire> seconds from now) \
             or remove <addr> from blocklist\nError EINVAL: invalid command"
        ),
        status: 22,
    })
}

/// A request the words could not make, as `ceph` reports it.
fn admin_error(e: AdminError) -> CliError {
    match e {
        AdminError::InvalidCommand { words } => {
            let phrases = crate::suggest::command_phrases(COMMANDS_HELP);
            let hint = crate::suggest::closest_phrase(&words, &phrases)
                .map(crate::suggest::did_you_mean)
                .unwrap_or_default();
            CliError::Usage {
                message: format!(
                    "no valid command found for '{}'{hint}; see `ceph --help`\nError EINVAL: invalid command",
                    words.join(" ")
                ),
                status: 22,
            }
        }
        AdminError::NoCommand => CliError::Usage {
            message: format!("ceph: no command given\n{COMMANDS_HELP}"),
            status: 22,
        },
        other => CliError::command(other.code(), other.to_string()),
    }
}

/// The words and flags as a monitor command request, checked (no cluster needed).
pub fn parse(args: &CephArgs) -> Result<(CephCommand, Format, Map<String, Value>), CliError> {
    let Some(fmt) = Format::parse(args.format.as_deref()) else {
        let format = args.format.as_deref().unwrap_or_default();
        return Err(CliError::command(
            ErrorCode::EINVAL,
            format!("output format '{format}' is not supported (plain, json, json-pretty)"),
        ));
    };
    if args.version {
        return Ok((CephCommand::Version, fmt, CephCommand::Version.to_request(fmt)));
    }
    let flags = WordFlags {
        status: args.status,
        size: args.size,
        really_really: args.really_really,
        has_input: args.in_file.is_some(),
        format: args.format.clone(),
    };
    check_blocklist_expire(&args.words)?;
    let request = admin::request_from_words(&args.words, &flags).map_err(admin_error)?;
    let (cmd, fmt) = CephCommand::from_request(&request, flags.has_input).map_err(admin_error)?;
    Ok((cmd, fmt, request))
}

/// Runs `ceph …`: the request goes through [`quarry_client::Rados::mon_command`], the same
/// call `rados_mon_command` makes, and its reply is printed as Ceph's tool prints it.
pub async fn run(args: CephArgs) -> Result<(), CliError> {
    if args.words.first().is_some_and(|w| w == "tell") {
        return crate::tell::run(&args).await;
    }
    let (cmd, fmt, request) = parse(&args)?;
    if let Some(out) = &args.out_file {
        check_output_dir(out)?;
    }
    let reply = if cmd == CephCommand::Version {
        admin::version_reply(fmt)
    } else {
        let inbuf = read_input(args.in_file.as_deref())?;
        let rados = session::connect(&args.common, Tool::Ceph).await?;
        let reply = rados.mon_command(&Value::Object(request).to_string(), &inbuf).await;
        rados.shutdown().await;
        reply
    };
    if let Some(code) = reply.error_code() {
        return Err(CliError::command(code, reply.outs));
    }
    write_output(&reply, args.out_file.as_deref())
}

fn write_output(reply: &CommandReply, file: Option<&Path>) -> Result<(), CliError> {
    // Like the ceph CLI: the status line (stderr) before the data.
    if !reply.outs.is_empty() {
        eprintln!("{}", reply.outs);
    }
    match file {
        Some(path) => write_private_file(path, &reply.outbuf)?,
        None if !reply.outbuf.is_empty() => {
            if let Err(e) = output::stdout_bytes(&reply.outbuf) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::BTreeMap;

    #[derive(clap::Parser, Debug)]
    struct Wrapper {
        #[command(flatten)]
        ceph: CephArgs,
    }

    fn parse_line(line: &[&str]) -> Result<(CephCommand, Format), CliError> {
        let argv = std::iter::once("ceph").chain(line.iter().copied());
        let w = Wrapper::try_parse_from(argv)
            .map_err(|e| CliError::Usage { message: e.to_string(), status: 2 })?;
        parse(&w.ceph).map(|(cmd, fmt, _)| (cmd, fmt))
    }

    #[test]
    fn flags_become_arguments() {
        assert_eq!(parse_line(&["-s"]).unwrap().0, CephCommand::Status);
        assert_eq!(parse_line(&["-v"]).unwrap().0, CephCommand::Version);
        assert_eq!(parse_line(&["df", "-f", "json"]).unwrap(), (CephCommand::Df, Format::Json));
        assert_eq!(
            parse_line(&["osd", "pool", "create", "p", "--size", "2"]).unwrap().0,
            CephCommand::PoolCreate { name: "p".into(), pg_num: None, size: Some(2) }
        );
        assert_eq!(
            parse_line(&["osd", "pool", "rm", "p", "p", "--yes-i-really-really-mean-it"])
                .unwrap()
                .0,
            CephCommand::PoolRm { name: "p".into(), again: Some("p".into()), sure: true }
        );
        assert_eq!(
            parse_line(&["auth", "import", "--in-file", "/tmp/k"]).unwrap().0,
            CephCommand::AuthImport
        );
    }

    #[test]
    fn options_stand_anywhere_among_the_words() {
        let (cmd, _) = parse_line(&[
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
        assert_eq!(parse_line(&["auth", "ls", "--id", "admin"]).unwrap().0, CephCommand::AuthLs);
    }

    #[test]
    fn failures_read_as_cephs() {
        let e = parse_line(&["osd", "frobnicate"]).unwrap_err();
        assert_eq!(e.status(), 22);
        assert!(e.to_string().ends_with("Error EINVAL: invalid command"), "{e}");
        assert_eq!(parse_line(&[]).unwrap_err().status(), 22);
        let e = parse_line(&["auth", "get", "qemu"]).unwrap_err();
        assert!(e.to_string().starts_with("Error EINVAL: bad entity name"), "{e}");
        let e = parse_line(&["-f", "xml", "df"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Error EINVAL: output format 'xml' is not supported (plain, json, json-pretty)"
        );
        assert_eq!(
            parse_line(&["osd", "pool", "create", "p", "erasure"]).unwrap_err().status(),
            95
        );
        assert_eq!(parse_line(&["osd", "reweight", "0", "1.5"]).unwrap_err().status(), 22);
    }
}
