//! `quarry rados …` (or `rados …` through a link): object-level commands on one pool with
//! the `rados` tool's syntax, output and error lines (`error getting rbd/x: (2) No such file
//! or directory`, exit 1). Files larger than one op go in 4 MiB operations on the same object;
//! a progress bar shows on stderr for long transfers when stderr is a terminal.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use quarry_client::admin::{self, Format};
use quarry_client::{IoCtx, Rados};
use quarry_conf::CommonArgs;
use quarry_types::{ErrorCode, ObjectOp, OpOutput, Payload};

use crate::bench::{self, BenchMode, BenchOptions};
use crate::error::CliError;
use crate::output;
use crate::session::{self, Tool};

/// Bytes per read or write operation of `put` and `get` (`rados`' default `op_size`).
pub const OP_SIZE: usize = 4 << 20;
/// Omap entries asked for per request when listing.
const OMAP_PAGE: u32 = 512;
/// Transfers at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

/// The `rados` tool's command line.
#[derive(clap::Args, Debug)]
#[command(about = "Ceph-compatible object commands (put, get, ls, omap, xattr, bench)", after_help = COMMANDS_HELP)]
pub struct RadosArgs {
    /// Who we are and where the cluster is.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The pool to work in.
    #[arg(short = 'p', long = "pool", value_name = "POOL")]
    pub pool: Option<String>,
    /// The namespace objects are named in (default: the pool's default namespace).
    #[arg(short = 'N', long = "namespace", value_name = "NS")]
    pub namespace: Option<String>,
    /// ls: objects of every namespace (`NS<tab>NAME` for those outside the default one).
    #[arg(long = "all")]
    pub all: bool,
    /// bench: bytes per write (suffixes K, M, G accepted; default 4M).
    #[arg(short = 'b', long = "block-size", value_name = "SIZE")]
    pub block_size: Option<String>,
    /// bench: operations in flight (default 16).
    #[arg(short = 't', long = "concurrent-ios", value_name = "N")]
    pub concurrent_ios: Option<usize>,
    /// bench write: keep the objects (for a later seq or rand run).
    #[arg(long = "no-cleanup")]
    pub no_cleanup: bool,
    /// bench: name of the run (its metadata object); default `benchmark_last_metadata`.
    #[arg(long = "run-name", value_name = "NAME")]
    pub run_name: Option<String>,
    /// cleanup: object-name prefix of the bench objects to remove.
    #[arg(long = "prefix", value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Confirms `purge`.
    #[arg(long = "yes-i-really-really-mean-it", hide = true)]
    pub really_really: bool,
    /// Output format of `ls` and `df`: plain (default), json or json-pretty.
    #[arg(short = 'f', long = "format", value_name = "FORMAT")]
    pub format: Option<String>,
    /// Read at this pool snapshot (`get`, `stat`, ...).
    #[arg(short = 's', long = "snap", value_name = "SNAP")]
    pub snap: Option<String>,
    /// cp: the pool to copy into (default: the source's).
    #[arg(long = "target-pool", value_name = "POOL")]
    pub target_pool: Option<String>,
    /// put: write at this offset instead of replacing the object.
    #[arg(long = "offset", value_name = "BYTES")]
    pub offset: Option<u64>,
    /// import: say what would be written, write nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// import: leave objects that already exist as they are.
    #[arg(long = "no-overwrite")]
    pub no_overwrite: bool,
    /// lock get/break: the locker's cookie.
    #[arg(long = "lock-cookie", value_name = "COOKIE")]
    pub lock_cookie: Option<String>,
    /// lock get: the tag every shared holder must use.
    #[arg(long = "lock-tag", value_name = "TAG")]
    pub lock_tag: Option<String>,
    /// lock get: free text shown by lock info.
    #[arg(long = "lock-description", value_name = "TEXT")]
    pub lock_description: Option<String>,
    /// lock get: seconds until the hold expires (default: never).
    #[arg(long = "lock-duration", value_name = "SECONDS")]
    pub lock_duration: Option<String>,
    /// lock get: shared or exclusive (default).
    #[arg(long = "lock-type", value_name = "TYPE")]
    pub lock_type: Option<String>,
    /// The command and its arguments, e.g. `put obj ./file`.
    #[arg(value_name = "COMMAND", allow_negative_numbers = true)]
    pub words: Vec<String>,
}

const COMMANDS_HELP: &str = "\
Pool commands:
  lspools                          list pools
  df                               usage per pool
Object commands (need -p POOL):
  ls                               list objects, one per line
  put OBJ FILE|- [--offset N]      write an object from a file or stdin
  append OBJ FILE|-                add a file's bytes at the object's end
  get OBJ FILE|-                   read an object into a file or stdout
  rm OBJ...                        remove objects
  stat OBJ | stat2 OBJ             size and modification time
  purge POOL --yes-i-really-really-mean-it   remove every object of a pool
  create OBJ                       create an empty object (fails if it exists)
  touch OBJ                        create the object if absent, set its modification time
  cp OBJ [TARGET] [--target-pool P]  copy data, xattrs and omap to TARGET (default: the same name)
  truncate OBJ SIZE                set the object's size
  setxattr OBJ NAME [VALUE]        set an xattr (value from stdin if absent)
  getxattr OBJ NAME                print an xattr's value
  rmxattr OBJ NAME                 remove an xattr
  listxattr OBJ                    list xattr names
  setomapval OBJ KEY [VALUE]       set an omap entry (value from stdin if absent)
  getomapval OBJ KEY [FILE]        show an omap value (hexdump) or write it to FILE
  rmomapkey OBJ KEY                remove an omap key
  clearomap OBJ...                 remove every omap entry
  listomapkeys OBJ                 list omap keys
  listomapvals OBJ                 list omap keys and values
  getomapheader OBJ [FILE]         show the omap header
  setomapheader OBJ VALUE          set the omap header
  watch OBJ                        watch an object: print notifies (and ack them) until enter or EOF
  notify OBJ MESSAGE               notify the watchers of an object, print their replies
  listwatchers OBJ                 list the watchers of an object
  lssnap                           list pool snapshots
  mksnap SNAP                      create a pool snapshot
  rmsnap SNAP                      remove a pool snapshot
  rollback OBJ SNAP                roll an object back to a pool snapshot
  -s SNAP get OBJ FILE             read at a pool snapshot (also stat, ...)
  bench SECONDS write|seq|rand [-b SIZE] [-t N] [--no-cleanup] [--run-name NAME]
  cleanup [--prefix PREFIX] [--run-name NAME]
Import and export (Ceph's pool export format):
  export [FILE|-]                  every object of the pool (all namespaces) to a file
  import [--dry-run] [--no-overwrite] FILE|-   load an export into the pool
Advisory locks:
  lock list OBJ                    lock names on an object (JSON)
  lock info OBJ NAME               a lock's type, tag and holders (JSON)
  lock get OBJ NAME [--lock-cookie C] [--lock-tag T] [--lock-description D]
                    [--lock-duration SECS] [--lock-type shared|exclusive]
  lock break OBJ NAME LOCKER [--lock-cookie C]   release another client's hold";

/// One parsed `rados` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RadosCommand {
    /// `lspools`.
    LsPools,
    /// `df`.
    Df,
    /// `ls`.
    Ls,
    /// `put OBJ FILE`.
    Put {
        /// Object.
        obj: String,
        /// File or `-`.
        file: String,
        /// `--offset`.
        offset: Option<u64>,
    },
    /// `append OBJ FILE`.
    Append {
        /// Object.
        obj: String,
        /// File or `-`.
        file: String,
    },
    /// `export [FILE]` (None or `-`: standard output).
    Export {
        /// File.
        file: Option<String>,
    },
    /// `import FILE`.
    Import {
        /// File or `-`.
        file: String,
        /// `--dry-run`.
        dry_run: bool,
        /// `--no-overwrite`.
        no_overwrite: bool,
    },
    /// `lock …`.
    Lock(crate::rados_lock::LockCommand),
    /// `get OBJ FILE`.
    Get {
        /// Object.
        obj: String,
        /// File or `-`.
        file: String,
    },
    /// `rm OBJ...`.
    Rm {
        /// Objects.
        objs: Vec<String>,
    },
    /// `stat OBJ` (`stat2`: with sub-second mtime).
    Stat {
        /// Object.
        obj: String,
        /// Print the mtime's fraction (`stat2`).
        precise: bool,
    },
    /// `purge POOL --yes-i-really-really-mean-it`: remove every object of the pool.
    Purge {
        /// Pool.
        pool: String,
    },
    /// `create OBJ`.
    Create {
        /// Object.
        obj: String,
    },
    /// `touch OBJ`: create if absent, update the modification time.
    Touch {
        /// Object.
        obj: String,
    },
    /// `cp OBJ [TARGET]`: copy an object (data, xattrs, omap) within the pool or to
    /// `--target-pool`.
    Cp {
        /// Source object.
        obj: String,
        /// Target object (default: the source's name).
        target: String,
        /// `--target-pool`.
        target_pool: Option<String>,
    },
    /// `truncate OBJ SIZE`.
    Truncate {
        /// Object.
        obj: String,
        /// New size.
        size: u64,
    },
    /// `setxattr OBJ NAME [VALUE]`.
    SetXattr {
        /// Object.
        obj: String,
        /// Attribute.
        name: String,
        /// Value (stdin if None).
        value: Option<String>,
    },
    /// `getxattr OBJ NAME`.
    GetXattr {
        /// Object.
        obj: String,
        /// Attribute.
        name: String,
    },
    /// `rmxattr OBJ NAME`.
    RmXattr {
        /// Object.
        obj: String,
        /// Attribute.
        name: String,
    },
    /// `listxattr OBJ`.
    ListXattr {
        /// Object.
        obj: String,
    },
    /// `setomapval OBJ KEY [VALUE]`.
    SetOmapVal {
        /// Object.
        obj: String,
        /// Key.
        key: String,
        /// Value (stdin if None).
        value: Option<String>,
    },
    /// `getomapval OBJ KEY [FILE]`.
    GetOmapVal {
        /// Object.
        obj: String,
        /// Key.
        key: String,
        /// Output file.
        file: Option<String>,
    },
    /// `rmomapkey OBJ KEY`.
    RmOmapKey {
        /// Object.
        obj: String,
        /// Key.
        key: String,
    },
    /// `clearomap OBJ...`.
    ClearOmap {
        /// Objects.
        objs: Vec<String>,
    },
    /// `listomapkeys OBJ`.
    ListOmapKeys {
        /// Object.
        obj: String,
    },
    /// `listomapvals OBJ`.
    ListOmapVals {
        /// Object.
        obj: String,
    },
    /// `getomapheader OBJ [FILE]`.
    GetOmapHeader {
        /// Object.
        obj: String,
        /// Output file.
        file: Option<String>,
    },
    /// `setomapheader OBJ VALUE`.
    SetOmapHeader {
        /// Object.
        obj: String,
        /// Header.
        value: String,
    },
    /// `watch OBJ`.
    Watch {
        /// Object.
        obj: String,
        /// `osd_client_watch_timeout` from the configuration (None: the OSD's default).
        timeout: Option<std::time::Duration>,
    },
    /// `notify OBJ MESSAGE`.
    Notify {
        /// Object.
        obj: String,
        /// Message.
        message: String,
    },
    /// `listwatchers OBJ`.
    ListWatchers {
        /// Object.
        obj: String,
    },
    /// `bench SECONDS MODE`.
    Bench(BenchOptions),
    /// `lssnap`.
    LsSnap,
    /// `mksnap SNAP`.
    MkSnap {
        /// Snapshot name.
        snap: String,
    },
    /// `rmsnap SNAP`.
    RmSnap {
        /// Snapshot name.
        snap: String,
    },
    /// `rollback OBJ SNAP`.
    Rollback {
        /// Object.
        obj: String,
        /// Snapshot name.
        snap: String,
    },
    /// `cleanup`.
    Cleanup {
        /// Object prefix, or None for the run's metadata.
        prefix: Option<String>,
        /// Metadata object name.
        run_name: String,
    },
}

impl RadosCommand {
    fn needs_pool(&self) -> bool {
        !matches!(self, RadosCommand::LsPools | RadosCommand::Df | RadosCommand::Purge { .. })
    }
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::Usage { message: format!("{}\nsee `rados --help`", message.into()), status: 1 }
}

/// Parses a size with an optional binary suffix (`4096`, `4K`, `4M`, `1G`, `64KiB`).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim_end_matches(['B', 'b']).trim_end_matches('i') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// Parses the command words and flags (no cluster needed).
pub fn parse(args: &RadosArgs) -> Result<RadosCommand, CliError> {
    if Format::parse(args.format.as_deref()).is_none() {
        return Err(usage(format!(
            "unrecognized format: {} (plain, json, json-pretty)",
            args.format.as_deref().unwrap_or_default()
        )));
    }
    let words = &args.words;
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let s = |x: &&str| x.to_string();
    let cmd = match w.as_slice() {
        [] => return Err(usage("rados: no command given")),
        ["lspools"] => RadosCommand::LsPools,
        ["df"] => RadosCommand::Df,
        ["ls"] | ["ls", "-"] => RadosCommand::Ls,
        ["put", obj, file] => RadosCommand::Put { obj: s(obj), file: s(file), offset: args.offset },
        ["get", obj, file] => RadosCommand::Get { obj: s(obj), file: s(file) },
        ["append", obj, file] => RadosCommand::Append { obj: s(obj), file: s(file) },
        ["export"] => RadosCommand::Export { file: None },
        ["export", file] => RadosCommand::Export { file: Some(s(file)) },
        ["import", file] => RadosCommand::Import {
            file: s(file),
            dry_run: args.dry_run,
            no_overwrite: args.no_overwrite,
        },
        ["lock", rest @ ..] => {
            if args.format.as_deref() == Some("plain") {
                return Err(CliError::Usage {
                    message: "unrecognized format: plain".into(),
                    status: 234,
                });
            }
            RadosCommand::Lock(crate::rados_lock::parse(
                rest,
                args.lock_cookie.as_deref(),
                args.lock_tag.as_deref(),
                args.lock_description.as_deref(),
                args.lock_duration.as_deref(),
                args.lock_type.as_deref(),
            )?)
        }
        ["rm", objs @ ..] if !objs.is_empty() => {
            RadosCommand::Rm { objs: objs.iter().map(s).collect() }
        }
        ["stat", obj] => RadosCommand::Stat { obj: s(obj), precise: false },
        ["stat2", obj] => RadosCommand::Stat { obj: s(obj), precise: true },
        ["purge", pool] => {
            if !args.really_really {
                return Err(CliError::Usage {
                    message: "WARNING:\n  This will PERMANENTLY DESTROY all objects from a pool with no way back.\n  \
                              To confirm, follow pool with --yes-i-really-really-mean-it"
                        .into(),
                    status: 1,
                });
            }
            RadosCommand::Purge { pool: s(pool) }
        }
        ["create", obj] => RadosCommand::Create { obj: s(obj) },
        ["touch", obj] => RadosCommand::Touch { obj: s(obj) },
        ["cp", obj] => {
            RadosCommand::Cp { obj: s(obj), target: s(obj), target_pool: args.target_pool.clone() }
        }
        ["cp", obj, target] => RadosCommand::Cp {
            obj: s(obj),
            target: s(target),
            target_pool: args.target_pool.clone(),
        },
        ["truncate", obj, size] => {
            let size = size
                .parse::<i64>()
                .map_err(|_| usage(format!("Invalid value for size: '{size}'")))?;
            if size < 0 {
                return Err(usage("error, cannot truncate to negative value"));
            }
            RadosCommand::Truncate { obj: s(obj), size: size as u64 }
        }
        ["setxattr", obj, name] => {
            RadosCommand::SetXattr { obj: s(obj), name: s(name), value: None }
        }
        ["setxattr", obj, name, value] => {
            RadosCommand::SetXattr { obj: s(obj), name: s(name), value: Some(s(value)) }
        }
        ["getxattr", obj, name] => RadosCommand::GetXattr { obj: s(obj), name: s(name) },
        ["rmxattr", obj, name] => RadosCommand::RmXattr { obj: s(obj), name: s(name) },
        ["listxattr", obj] => RadosCommand::ListXattr { obj: s(obj) },
        ["setomapval", obj, key] => {
            RadosCommand::SetOmapVal { obj: s(obj), key: s(key), value: None }
        }
        ["setomapval", obj, key, value] => {
            RadosCommand::SetOmapVal { obj: s(obj), key: s(key), value: Some(s(value)) }
        }
        ["getomapval", obj, key] => {
            RadosCommand::GetOmapVal { obj: s(obj), key: s(key), file: None }
        }
        ["getomapval", obj, key, file] => {
            RadosCommand::GetOmapVal { obj: s(obj), key: s(key), file: Some(s(file)) }
        }
        ["rmomapkey", obj, key] => RadosCommand::RmOmapKey { obj: s(obj), key: s(key) },
        ["clearomap", objs @ ..] if !objs.is_empty() => {
            RadosCommand::ClearOmap { objs: objs.iter().map(s).collect() }
        }
        ["listomapkeys", obj] => RadosCommand::ListOmapKeys { obj: s(obj) },
        ["listomapvals", obj] => RadosCommand::ListOmapVals { obj: s(obj) },
        ["getomapheader", obj] => RadosCommand::GetOmapHeader { obj: s(obj), file: None },
        ["getomapheader", obj, file] => {
            RadosCommand::GetOmapHeader { obj: s(obj), file: Some(s(file)) }
        }
        ["setomapheader", obj, value] => {
            RadosCommand::SetOmapHeader { obj: s(obj), value: s(value) }
        }
        ["watch", obj] => RadosCommand::Watch { obj: s(obj), timeout: None },
        ["notify", obj, message] => RadosCommand::Notify { obj: s(obj), message: s(message) },
        ["listwatchers", obj] => RadosCommand::ListWatchers { obj: s(obj) },
        ["bench", seconds, mode] => {
            let seconds: u64 = seconds
                .parse()
                .map_err(|_| usage(format!("Invalid value for seconds: '{seconds}'")))?;
            let mode = match *mode {
                "write" => BenchMode::Write,
                "seq" => BenchMode::Seq,
                "rand" => BenchMode::Rand,
                other => {
                    return Err(usage(format!(
                        "Unknown benchmark type '{other}' (write, seq, rand)"
                    )))
                }
            };
            let block_size = match &args.block_size {
                Some(text) => parse_size(text)
                    .filter(|&b| b > 0 && b <= quarry_types::OBJECT_SIZE_MAX)
                    .ok_or_else(|| usage(format!("Invalid value for block-size: '{text}'")))?,
                None => OP_SIZE as u64,
            };
            let concurrency = args.concurrent_ios.unwrap_or(16);
            if concurrency == 0 {
                return Err(usage("-t must be at least 1"));
            }
            RadosCommand::Bench(BenchOptions {
                seconds,
                mode,
                block_size,
                concurrency,
                cleanup: !args.no_cleanup,
                run_name: args.run_name.clone(),
            })
        }
        ["lssnap"] => RadosCommand::LsSnap,
        ["mksnap", snap] => RadosCommand::MkSnap { snap: s(snap) },
        ["rmsnap", snap] => RadosCommand::RmSnap { snap: s(snap) },
        ["rollback", obj, snap] => RadosCommand::Rollback { obj: s(obj), snap: s(snap) },
        ["cleanup"] => RadosCommand::Cleanup {
            prefix: args.prefix.clone(),
            run_name: args.run_name.clone().unwrap_or_else(|| bench::DEFAULT_RUN_NAME.into()),
        },
        [verb, ..] => {
            let synopsis = crate::suggest::RADOS_SYNOPSES.iter().find(|(c, _)| c == verb);
            return Err(match synopsis {
                Some((verb, args)) => usage(format!(
                    "rados {verb}: wrong arguments '{}'\nusage: rados [-p POOL] {verb} {args}",
                    words[1..].join(" ")
                )),
                None => usage(format!(
                    "rados: unknown command '{verb}'{}",
                    crate::suggest::hint(
                        verb,
                        crate::suggest::RADOS_SYNOPSES.iter().map(|(c, _)| *c)
                    )
                )),
            });
        }
    };
    if cmd.needs_pool() && args.pool.is_none() {
        let message = if cmd == RadosCommand::Ls {
            "either pool name or pg id needs to be specified".to_string()
        } else {
            format!("rados {}: pool name was not specified (use -p POOL)", w[0])
        };
        return Err(usage(message));
    }
    Ok(cmd)
}

/// Runs `rados …`.
pub async fn run(args: RadosArgs) -> Result<(), CliError> {
    let mut cmd = parse(&args)?;
    if let RadosCommand::Watch { timeout, .. } = &mut cmd {
        *timeout = watch_timeout(&args.common)?;
    }
    let rados = session::connect(&args.common, Tool::Rados).await?;
    let fmt = Format::parse(args.format.as_deref()).unwrap_or(Format::Plain);
    let scope = Scope { namespace: args.namespace.as_deref(), all: args.all };
    let result = execute(&rados, args.pool.as_deref(), args.snap.as_deref(), scope, cmd, fmt).await;
    rados.shutdown().await;
    match result {
        Err(CliError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        other => other,
    }
}

/// Runs one op on `obj` with `io`, failing as `rados` does: `what: (N) message`.
/// `rados cp`: reads the source's data (in [`OP_SIZE`] pieces), xattrs, omap header and
/// entries, then writes them to the target, replacing what it held. Not atomic (Ceph's
/// `copy_from` is): a reader of the target may see it half-written, and a copy that fails
/// midway leaves it so; run it again.
async fn copy_object(src_io: &IoCtx, src: &str, dst_io: &IoCtx, dst: &str) -> Result<(), CliError> {
    let failed = |e: quarry_client::ClientError| {
        CliError::rados_op(
            format!("error copying {}/{src} => {}/{dst}", src_io.pool_name(), dst_io.pool_name()),
            e.errno(),
        )
    };
    let size = match src_io.exec(src, vec![ObjectOp::Stat]).await.map_err(failed)?.pop() {
        Some(OpOutput::Stat { size, .. }) => size,
        _ => return Err(unexpected(format!("stat of {src}"))),
    };
    let xattrs = src_io.getxattrs(src).await.map_err(failed)?;
    let header = match src_io.exec(src, vec![ObjectOp::OmapGetHeader]).await.map_err(failed)?.pop()
    {
        Some(OpOutput::OmapHeader(header)) => header,
        _ => Bytes::new(),
    };
    // The target starts empty: data, xattrs and omap are replaced.
    let _ = dst_io.exec(dst, vec![ObjectOp::Remove]).await;
    let mut first = vec![ObjectOp::Create { exclusive: false }, ObjectOp::OmapSetHeader { header }];
    for (name, value) in xattrs {
        first.push(ObjectOp::SetXattr { name, value });
    }
    dst_io.exec(dst, first).await.map_err(failed)?;
    let mut off = 0;
    while off < size {
        let data = src_io.read(src, off, OP_SIZE as u64).await.map_err(failed)?;
        if data.is_empty() {
            break;
        }
        let len = data.len() as u64;
        dst_io
            .exec(dst, vec![ObjectOp::Write { off, data: Payload::new(data) }])
            .await
            .map_err(failed)?;
        off += len;
    }
    let mut start_after = String::new();
    loop {
        let (vals, more) =
            src_io.omap_get_vals(src, &start_after, "", OMAP_PAGE).await.map_err(failed)?;
        let last = vals.keys().next_back().cloned();
        if !vals.is_empty() {
            dst_io.exec(dst, vec![ObjectOp::OmapSetVals { vals }]).await.map_err(failed)?;
        }
        match last {
            Some(last) if more => start_after = last,
            _ => break,
        }
    }
    Ok(())
}

pub async fn run_op(
    io: &IoCtx,
    obj: &str,
    op: ObjectOp,
    what: impl FnOnce() -> String,
) -> Result<OpOutput, CliError> {
    match io.exec(obj, vec![op]).await {
        Ok(mut outputs) => Ok(outputs.pop().unwrap_or(OpOutput::None)),
        Err(e) => Err(CliError::rados_op(what(), e.errno())),
    }
}

fn stdout_io(e: std::io::Error) -> CliError {
    CliError::io("<stdout>", e)
}

fn print(text: &str) -> Result<(), CliError> {
    output::stdout_bytes(text.as_bytes()).map_err(stdout_io)
}

async fn read_stdin() -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    tokio::io::stdin().read_to_end(&mut buf).await.map_err(|e| CliError::io("<stdin>", e))?;
    Ok(buf)
}

fn unexpected(what: String) -> CliError {
    CliError::rados_op(what, ErrorCode::EPROTO)
}

/// Which namespace a command works in (`-N`), and whether `ls` lists all of them (`--all`).
#[derive(Clone, Copy, Debug)]
struct Scope<'a> {
    namespace: Option<&'a str>,
    all: bool,
}

async fn execute(
    rados: &Rados,
    pool_name: Option<&str>,
    snap: Option<&str>,
    scope: Scope<'_>,
    cmd: RadosCommand,
    fmt: Format,
) -> Result<(), CliError> {
    match cmd {
        RadosCommand::LsPools => {
            let text: String =
                rados.map().pools.values().map(|p| format!("{}\n", p.name)).collect();
            return print(&text);
        }
        RadosCommand::Df => return df(rados, pool_name, fmt).await,
        RadosCommand::Purge { pool } => return purge(rados, &pool).await,
        _ => {}
    }
    let name = pool_name.unwrap_or_default();
    let mut io = rados
        .ioctx(name)
        .await
        .map_err(|e| CliError::rados_op(format!("error opening pool {name}"), e.errno()))?;
    if let Some(namespace) = scope.namespace {
        io.set_namespace(namespace).map_err(|e| {
            CliError::rados_op(format!("error setting namespace {namespace}"), e.errno())
        })?;
    }
    if let Some(snap) = snap {
        let id = io.snap_lookup(snap).map_err(|e| {
            CliError::rados_op(format!("error looking up snap '{snap}'"), e.errno())
        })?;
        io.set_read_snap(id);
        print(&format!("selected snap {id} '{snap}'\n"))?;
    }
    let io = io;
    let p = name;
    match cmd {
        RadosCommand::LsSnap => {
            let snaps = io
                .snap_list()
                .map_err(|e| CliError::rados_op("error listing snapshots", e.errno()))?;
            let mut text = String::new();
            for id in &snaps {
                if let Ok((name, stamp)) = io.snap_info(*id) {
                    text.push_str(&format!("{id}\t{name}\t{}\n", admin::plain::snap_stamp(stamp)));
                }
            }
            text.push_str(&format!("{} snaps\n", snaps.len()));
            return print(&text);
        }
        RadosCommand::MkSnap { snap } => {
            io.snap_create(&snap).await.map_err(|e| {
                CliError::rados_op(format!("error creating pool {p} snapshot {snap}"), e.errno())
            })?;
            return print(&format!("created pool {p} snap {snap}\n"));
        }
        RadosCommand::RmSnap { snap } => {
            io.snap_remove(&snap).await.map_err(|e| {
                CliError::rados_op(format!("error removing pool {p} snapshot {snap}"), e.errno())
            })?;
            return print(&format!("removed pool {p} snap {snap}\n"));
        }
        RadosCommand::Rollback { obj, snap } => {
            io.snap_rollback(&obj, &snap).await.map_err(|e| {
                CliError::rados_op(
                    format!("error rolling back pool {p} to snapshot {snap}"),
                    e.errno(),
                )
            })?;
            return print(&format!("rolled back pool {p} to snapshot {snap}\n"));
        }
        _ => {}
    }
    match cmd {
        RadosCommand::LsPools
        | RadosCommand::Df
        | RadosCommand::Purge { .. }
        | RadosCommand::LsSnap
        | RadosCommand::MkSnap { .. }
        | RadosCommand::RmSnap { .. }
        | RadosCommand::Rollback { .. } => unreachable!("handled above"),
        RadosCommand::Ls => {
            let listed = if scope.all {
                io.list_objects_all().await
            } else {
                let namespace = io.namespace().to_string();
                io.list_objects()
                    .await
                    .map(|names| names.into_iter().map(|n| (namespace.clone(), n)).collect())
            };
            let objects =
                listed.map_err(|e| CliError::rados_op("error listing objects", e.errno()))?;
            if fmt.is_json() {
                print(&admin::render(&admin::json::rados_ls(&objects), fmt))?;
            } else {
                let mut text = String::new();
                for (namespace, name) in objects {
                    // Ceph's `ls --all` prints the namespace and a tab on every line, the
                    // default namespace's as an empty field (`\tNAME`).
                    if scope.all {
                        text.push_str(&namespace);
                        text.push('\t');
                    }
                    text.push_str(&name);
                    text.push('\n');
                }
                print(&text)?;
            }
        }
        RadosCommand::Put { obj, file, offset } => put(&io, &obj, &file, offset).await?,
        RadosCommand::Get { obj, file } => get(&io, &obj, &file).await?,
        RadosCommand::Append { obj, file } => {
            crate::rados_dump::append(&io, &obj, &file, OP_SIZE).await?
        }
        RadosCommand::Export { file } => crate::rados_dump::export(&io, file.as_deref()).await?,
        RadosCommand::Import { file, dry_run, no_overwrite } => {
            crate::rados_dump::import(&io, &file, dry_run, no_overwrite).await?
        }
        RadosCommand::Lock(cmd) => crate::rados_lock::run(&io, cmd, fmt).await?,
        RadosCommand::Rm { objs } => {
            for obj in objs {
                run_op(&io, &obj, ObjectOp::Remove, || format!("error removing {p}>{obj}")).await?;
            }
        }
        RadosCommand::Stat { obj, precise } => {
            let what = || format!(" error stat-ing {p}/{obj}");
            match run_op(&io, &obj, ObjectOp::Stat, what).await? {
                OpOutput::Stat { size, mtime_sec, mtime_nsec } => {
                    // `stat` shows whole seconds (time_t), `stat2` the full time.
                    let nsec = if precise { mtime_nsec } else { 0 };
                    print(&format!(
                        "{p}/{obj} mtime {}, size {size}\n",
                        admin::plain::utime(mtime_sec, nsec)
                    ))?
                }
                _ => return Err(unexpected(what())),
            }
        }
        RadosCommand::Create { obj } => {
            run_op(&io, &obj, ObjectOp::Create { exclusive: true }, || {
                format!("error creating {p}/{obj}")
            })
            .await?;
        }
        RadosCommand::Touch { obj } => {
            run_op(&io, &obj, ObjectOp::Create { exclusive: false }, || {
                format!("error touching {p}/{obj}")
            })
            .await?;
        }
        RadosCommand::Cp { obj, target, target_pool } => {
            let target_io = match &target_pool {
                Some(pool) => {
                    let mut other = rados.ioctx(pool).await.map_err(|e| {
                        CliError::rados_op(format!("error opening target pool {pool}"), e.errno())
                    })?;
                    if let Some(namespace) = scope.namespace {
                        other.set_namespace(namespace).map_err(|e| {
                            CliError::rados_op(
                                format!("error setting namespace {namespace}"),
                                e.errno(),
                            )
                        })?;
                    }
                    other
                }
                None => io.clone(),
            };
            if target_io.pool_name() == io.pool_name() && target == obj {
                return Err(usage(
                    "rados cp: the target is the source (give TARGET or --target-pool)",
                ));
            }
            copy_object(&io, &obj, &target_io, &target).await?;
        }
        RadosCommand::Truncate { obj, size } => {
            run_op(&io, &obj, ObjectOp::Truncate { size }, || {
                format!("error truncating oid {obj} to {size}")
            })
            .await?;
        }
        RadosCommand::SetXattr { obj, name, value } => {
            let value = match value {
                Some(v) => Bytes::from(v.into_bytes()),
                None => Bytes::from(read_stdin().await?),
            };
            let what = || format!("error setting xattr {p}/{obj}/{name}");
            run_op(&io, &obj, ObjectOp::SetXattr { name: name.clone(), value }, what).await?;
        }
        RadosCommand::GetXattr { obj, name } => {
            let what = || format!("error getting xattr {p}/{obj}/{name}");
            match run_op(&io, &obj, ObjectOp::GetXattr { name: name.clone() }, what).await? {
                OpOutput::Xattr(value) => output::stdout_bytes(&value).map_err(stdout_io)?,
                _ => return Err(unexpected(what())),
            }
        }
        RadosCommand::RmXattr { obj, name } => {
            let what = || format!("error removing xattr {p}/{obj}/{name}");
            run_op(&io, &obj, ObjectOp::RmXattr { name: name.clone() }, what).await?;
        }
        RadosCommand::ListXattr { obj } => {
            let what = || format!("error getting xattr set {p}/{obj}");
            match run_op(&io, &obj, ObjectOp::GetXattrs, what).await? {
                OpOutput::Xattrs(attrs) => {
                    print(&attrs.keys().map(|k| format!("{k}\n")).collect::<String>())?
                }
                _ => return Err(unexpected(what())),
            }
        }
        RadosCommand::SetOmapVal { obj, key, value } => {
            let value = match value {
                Some(v) => Bytes::from(v.into_bytes()),
                None => Bytes::from(read_stdin().await?),
            };
            let what = || format!("error setting omap value {p}/{obj}/{key}");
            let vals = BTreeMap::from([(key.clone(), value)]);
            run_op(&io, &obj, ObjectOp::OmapSetVals { vals }, what).await?;
        }
        RadosCommand::GetOmapVal { obj, key, file } => {
            let what = || format!("error getting omap value {p}/{obj}/{key}");
            let keys = vec![key.clone()];
            let vals = match run_op(&io, &obj, ObjectOp::OmapGetValsByKeys { keys }, what).await? {
                OpOutput::OmapVals { vals, .. } => vals,
                _ => return Err(unexpected(what())),
            };
            match vals.get(&key) {
                Some(value) => dump_value("value", value, file.as_deref())?,
                None => {
                    print(&format!("No such key: {p}/{obj}/{key}\n"))?;
                    return Err(CliError::Reported { status: 1 });
                }
            }
        }
        RadosCommand::RmOmapKey { obj, key } => {
            let what = || format!("error removing omap key {p}/{obj}/{key}");
            run_op(&io, &obj, ObjectOp::OmapRmKeys { keys: vec![key.clone()] }, what).await?;
        }
        RadosCommand::ClearOmap { objs } => {
            for obj in objs {
                run_op(&io, &obj, ObjectOp::OmapClear, || {
                    format!("error clearing omap keys {p}/{obj}")
                })
                .await?;
            }
        }
        RadosCommand::ListOmapKeys { obj } => {
            let mut start_after = String::new();
            loop {
                let what = || format!("error getting omap key set {p}/{obj}");
                let op = ObjectOp::OmapGetKeys { start_after: start_after.clone(), max: OMAP_PAGE };
                let (keys, more) = match run_op(&io, &obj, op, what).await? {
                    OpOutput::OmapKeys { keys, more } => (keys, more),
                    _ => return Err(unexpected(what())),
                };
                print(&keys.iter().map(|k| format!("{k}\n")).collect::<String>())?;
                match keys.last() {
                    Some(last) if more => start_after = last.clone(),
                    _ => break,
                }
            }
        }
        RadosCommand::ListOmapVals { obj } => {
            let mut start_after = String::new();
            loop {
                let what = || format!("error getting omap keys {p}/{obj}");
                let op = ObjectOp::OmapGetVals {
                    start_after: start_after.clone(),
                    prefix: String::new(),
                    max: OMAP_PAGE,
                };
                let (vals, more) = match run_op(&io, &obj, op, what).await? {
                    OpOutput::OmapVals { vals, more } => (vals, more),
                    _ => return Err(unexpected(what())),
                };
                let mut text = String::new();
                for (key, value) in &vals {
                    if key.chars().all(|c| !c.is_control()) {
                        text.push_str(key);
                    } else {
                        text.push_str(&format!("key ({} bytes):\n", key.len()));
                        text.push_str(&output::hexdump(key.as_bytes()));
                    }
                    text.push('\n');
                    text.push_str(&format!("value ({} bytes) :\n", value.len()));
                    text.push_str(&output::hexdump(value));
                    text.push('\n');
                }
                print(&text)?;
                match vals.keys().next_back() {
                    Some(last) if more => start_after = last.clone(),
                    _ => break,
                }
            }
        }
        RadosCommand::GetOmapHeader { obj, file } => {
            let what = || format!("error getting omap header {p}/{obj}");
            match run_op(&io, &obj, ObjectOp::OmapGetHeader, what).await? {
                OpOutput::OmapHeader(header) => dump_value("header", &header, file.as_deref())?,
                _ => return Err(unexpected(what())),
            }
        }
        RadosCommand::SetOmapHeader { obj, value } => {
            let what = || format!("error setting omap value {p}/{obj}");
            run_op(
                &io,
                &obj,
                ObjectOp::OmapSetHeader { header: Bytes::from(value.into_bytes()) },
                what,
            )
            .await?;
        }
        RadosCommand::Bench(opts) => bench::run(&io, opts).await?,
        RadosCommand::Watch { obj, timeout } => watch(&io, &obj, timeout).await?,
        RadosCommand::Notify { obj, message } => notify(&io, &obj, &message).await?,
        RadosCommand::ListWatchers { obj } => {
            let watchers = io.list_watchers(&obj).await.map_err(|e| {
                CliError::rados_op(format!("error listing watchers {p}/{obj}"), e.errno())
            })?;
            let text: String = watchers
                .iter()
                .map(|w| format!("watcher={} client.{} cookie={}\n", w.addr, w.global_id, w.cookie))
                .collect();
            print(&text)?;
        }
        RadosCommand::Cleanup { prefix, run_name } => {
            bench::cleanup(&io, prefix, &run_name).await?
        }
    }
    Ok(())
}

/// Shows a value as `rados` does: `value (N bytes) :` and a hexdump, or writes it to a file.
/// `osd_client_watch_timeout` from the configuration, if set.
fn watch_timeout(common: &CommonArgs) -> Result<Option<std::time::Duration>, CliError> {
    let cfg = session::client_config(common, Tool::Rados)?;
    let Ok((conf, _)) = common.load_conf() else { return Ok(None) };
    let Some(text) = conf.get(&cfg.entity, "osd_client_watch_timeout") else { return Ok(None) };
    match text.trim().parse::<f64>() {
        Ok(secs) if secs >= 1.0 && secs.is_finite() => {
            Ok(Some(std::time::Duration::from_secs(secs as u64)))
        }
        _ => Err(usage(format!(
            "osd_client_watch_timeout = '{text}' is not a number of seconds >= 1"
        ))),
    }
}

/// `rados watch OBJ`: prints every notify as Ceph's tool does (`NOTIFY cookie C notify_id N
/// from G` and a hexdump of the payload) and acks it with an empty payload, until a line or
/// EOF on stdin. A broken watch is reported (`ERROR:  cookie C err (N) message`) and made
/// again once the object's OSD answers.
async fn watch(
    io: &IoCtx,
    obj: &str,
    timeout: Option<std::time::Duration>,
) -> Result<(), CliError> {
    use tokio::io::AsyncBufReadExt;
    let what = || "error calling watch".to_string();
    let mut w = io.watch(obj, timeout).await.map_err(|e| CliError::rados_op(what(), e.errno()))?;
    print("press enter to exit...\n")?;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    let mut enter = std::pin::pin!(stdin.read_line(&mut line));
    loop {
        tokio::select! {
            _ = &mut enter => break,
            event = w.next() => match event {
                Some(quarry_client::WatchEvent::Notify { notify_id, notifier_id, payload }) => {
                    let mut text = format!(
                        "NOTIFY cookie {} notify_id {notify_id} from {notifier_id}\n",
                        w.cookie()
                    );
                    text.push_str(&output::hexdump(&payload));
                    print(&text)?;
                    if let Err(e) = io.notify_ack(w.cookie(), notify_id, b"").await {
                        eprintln!("ERROR:  cookie {} err {}", w.cookie(), e.errno());
                    }
                }
                Some(quarry_client::WatchEvent::Error(_)) | None => {
                    let code = code_of(&event);
                    eprintln!("ERROR:  cookie {} err {code}", w.cookie());
                    // Watch again (the old watch is dropped, which unwatches it), unless the
                    // user asks to stop meanwhile.
                    loop {
                        tokio::select! {
                            _ = &mut enter => return Ok(()),
                            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                                if let Ok(again) = io.watch(obj, timeout).await {
                                    w = again;
                                    break;
                                }
                            }
                        }
                    }
                }
            },
        }
    }
    let _ = io.unwatch(w.cookie()).await;
    Ok(())
}

fn code_of(event: &Option<quarry_client::WatchEvent>) -> ErrorCode {
    match event {
        Some(quarry_client::WatchEvent::Error(code)) => *code,
        _ => ErrorCode::ENOTCONN,
    }
}

/// `rados notify OBJ MESSAGE`: the message goes encoded as Ceph's tool encodes it (a
/// length-prefixed string, so a Ceph watcher's hexdump looks the same), with a 10 s
/// timeout; each reply is printed (`reply client.G cookie C : N bytes` and a hexdump), then
/// each watcher that missed it (`timeout client.G cookie C`, and the error
/// `(110) Connection timed out`, exit 1).
async fn notify(io: &IoCtx, obj: &str, message: &str) -> Result<(), CliError> {
    let mut payload = (message.len() as u32).to_le_bytes().to_vec();
    payload.extend_from_slice(message.as_bytes());
    let timeout = Some(std::time::Duration::from_secs(10));
    let outcome = io
        .notify(obj, &payload, timeout)
        .await
        .map_err(|e| CliError::rados_op("error calling notify", e.errno()))?;
    let mut acks = outcome.acks.clone();
    acks.sort_by_key(|a| (a.global_id, a.cookie));
    let mut text = String::new();
    for ack in &acks {
        text.push_str(&format!(
            "reply client.{} cookie {} : {} bytes\n",
            ack.global_id,
            ack.cookie,
            ack.payload.len()
        ));
        text.push_str(&output::hexdump(&ack.payload));
    }
    let mut missed = outcome.missed.clone();
    missed.sort();
    for (gid, cookie) in &missed {
        text.push_str(&format!("timeout client.{gid} cookie {cookie}\n"));
    }
    print(&text)?;
    if !missed.is_empty() {
        return Err(CliError::rados_op("error calling notify", ErrorCode::ETIMEDOUT));
    }
    Ok(())
}

fn dump_value(label: &str, value: &[u8], file: Option<&str>) -> Result<(), CliError> {
    match file {
        Some(path) => {
            eprintln!("Writing to {path}");
            std::fs::write(path, value).map_err(|e| CliError::io(path, e))
        }
        None => print(&format!("{label} ({} bytes) :\n{}\n", value.len(), output::hexdump(value))),
    }
}

fn progress_bar(total: u64, verb: &str) -> Option<indicatif::ProgressBar> {
    if total < PROGRESS_MIN_BYTES || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{verb} {{bar:40}} {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, {{eta}})"
    ));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    Some(bar)
}

/// Reads up to `buf.len()` bytes, fewer only at the end of the input.
pub(crate) async fn read_full(
    input: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = input.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// `rados put`: the first chunk replaces the object (or writes at `--offset`), the following
/// 4 MiB chunks are written after it.
async fn put(io: &IoCtx, obj: &str, file: &str, offset: Option<u64>) -> Result<(), CliError> {
    let what = || format!("error putting {}/{obj}", io.pool_name());
    let (mut input, size): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) = if file == "-" {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let f = tokio::fs::File::open(file).await.map_err(|e| {
            CliError::rados_op(
                format!("error reading input file {file}"),
                ErrorCode(e.raw_os_error().unwrap_or(5)),
            )
        })?;
        let size = f.metadata().await.ok().map(|m| m.len());
        (Box::new(f), size)
    };
    let bar = size.and_then(|s| progress_bar(s, "put"));
    let mut buf = vec![0u8; OP_SIZE];
    let mut pos: u64 = 0;
    loop {
        let n = read_full(&mut input, &mut buf).await.map_err(|e| {
            CliError::rados_op(
                format!("error reading input file {file}"),
                ErrorCode(e.raw_os_error().unwrap_or(5)),
            )
        })?;
        if n == 0 && pos > 0 {
            break;
        }
        let data = Payload::new(Bytes::copy_from_slice(&buf[..n]));
        let op = match (pos, offset) {
            (0, None) => ObjectOp::WriteFull { data },
            (_, off) => ObjectOp::Write { off: off.unwrap_or(0) + pos, data },
        };
        run_op(io, obj, op, what).await?;
        pos += n as u64;
        if let Some(bar) = &bar {
            bar.set_position(pos);
        }
        if n < OP_SIZE {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

/// `rados get`: reads 4 MiB at a time until a short read.
async fn get(io: &IoCtx, obj: &str, file: &str) -> Result<(), CliError> {
    let what = || format!("error getting {}/{obj}", io.pool_name());
    let bar = if std::io::stderr().is_terminal() {
        match run_op(io, obj, ObjectOp::Stat, what).await? {
            OpOutput::Stat { size, .. } => progress_bar(size, "get"),
            _ => None,
        }
    } else {
        None
    };
    let mut out: Option<Box<dyn AsyncWrite + Unpin + Send>> = None;
    let mut off: u64 = 0;
    loop {
        let data = match run_op(io, obj, ObjectOp::Read { off, len: OP_SIZE as u64 }, what).await? {
            OpOutput::Data(p) => p.data,
            _ => return Err(unexpected(what())),
        };
        // The output is opened after the first successful read: a missing object leaves no
        // empty file behind.
        if out.is_none() {
            out = Some(if file == "-" {
                Box::new(tokio::io::stdout())
            } else {
                Box::new(
                    tokio::fs::File::create(file)
                        .await
                        .map_err(|e| CliError::io(PathBuf::from(file), e))?,
                )
            });
        }
        if let Some(w) = out.as_mut() {
            w.write_all(&data).await.map_err(|e| CliError::io(PathBuf::from(file), e))?;
        }
        off += data.len() as u64;
        if let Some(bar) = &bar {
            bar.set_position(off);
        }
        if data.len() < OP_SIZE {
            break;
        }
    }
    if let Some(mut w) = out {
        w.flush().await.map_err(|e| CliError::io(PathBuf::from(file), e))?;
        w.shutdown().await.map_err(|e| CliError::io(PathBuf::from(file), e))?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

/// `rados purge POOL --yes-i-really-really-mean-it`: removes every object of the pool.
async fn purge(rados: &Rados, name: &str) -> Result<(), CliError> {
    let io = rados
        .ioctx(name)
        .await
        .map_err(|e| CliError::rados_op(format!("error pool {name}"), e.errno()))?;
    bench::cleanup(&io, Some(String::new()), bench::DEFAULT_RUN_NAME).await?;
    print(&format!("successfully purged pool {name}\n"))
}

/// `rados df`: one row per pool, then cluster totals.
async fn df(rados: &Rados, only: Option<&str>, fmt: Format) -> Result<(), CliError> {
    let report = rados
        .status_report()
        .await
        .map_err(|e| CliError::rados_op("error fetching pool stats", e.errno()))?;
    let mut pools: Vec<_> =
        report.pools.iter().filter(|p| only.is_none_or(|n| n == p.name)).collect();
    if let Some(n) = only {
        if pools.is_empty() {
            return Err(CliError::rados_op(format!("error opening pool {n}"), ErrorCode::ENOENT));
        }
    }
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    if fmt.is_json() {
        print(&admin::render(&admin::json::rados_df(&report, &pools), fmt))
    } else {
        print(&admin::plain::rados_df(&report, &pools))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Wrapper {
        #[command(flatten)]
        rados: RadosArgs,
    }

    fn parse_line(line: &[&str]) -> Result<RadosCommand, CliError> {
        let argv = std::iter::once("rados").chain(line.iter().copied());
        let w = Wrapper::try_parse_from(argv)
            .map_err(|e| CliError::Usage { message: e.to_string(), status: 2 })?;
        parse(&w.rados)
    }

    #[test]
    fn object_commands() {
        assert_eq!(
            parse_line(&["-p", "rbd", "put", "obj", "-"]).unwrap(),
            RadosCommand::Put { obj: "obj".into(), file: "-".into(), offset: None }
        );
        assert_eq!(
            parse_line(&["get", "obj", "/tmp/x", "-p", "rbd"]).unwrap(),
            RadosCommand::Get { obj: "obj".into(), file: "/tmp/x".into() }
        );
        assert_eq!(
            parse_line(&["-p", "rbd", "rm", "a", "b"]).unwrap(),
            RadosCommand::Rm { objs: vec!["a".into(), "b".into()] }
        );
        assert_eq!(
            parse_line(&["-p", "rbd", "setomapval", "o", "k"]).unwrap(),
            RadosCommand::SetOmapVal { obj: "o".into(), key: "k".into(), value: None }
        );
        assert_eq!(parse_line(&["lspools"]).unwrap(), RadosCommand::LsPools);
        assert_eq!(parse_line(&["--pool=rbd", "ls"]).unwrap(), RadosCommand::Ls);
    }

    #[test]
    fn missing_pool_and_bad_commands_exit_1() {
        let e = parse_line(&["ls"]).unwrap_err();
        assert!(
            e.to_string().starts_with("either pool name or pg id needs to be specified"),
            "{e}"
        );
        assert_eq!(e.status(), 1);
        assert_eq!(parse_line(&["put", "o", "f"]).unwrap_err().status(), 1);
        assert_eq!(parse_line(&["-p", "x", "frob"]).unwrap_err().status(), 1);
        assert_eq!(parse_line(&["-p", "x", "truncate", "o", "-5"]).unwrap_err().status(), 1);
    }

    #[test]
    fn bench_options() {
        let cmd = parse_line(&[
            "-p",
            "rbd",
            "bench",
            "10",
            "write",
            "-b",
            "4K",
            "-t",
            "32",
            "--no-cleanup",
        ])
        .unwrap();
        assert_eq!(
            cmd,
            RadosCommand::Bench(BenchOptions {
                seconds: 10,
                mode: BenchMode::Write,
                block_size: 4096,
                concurrency: 32,
                cleanup: false,
                run_name: None,
            })
        );
        assert!(parse_line(&["-p", "rbd", "bench", "10", "fly"]).is_err());
        assert!(parse_line(&["-p", "rbd", "bench", "10", "seq", "-b", "4Q"]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("4K"), Some(4096));
        assert_eq!(parse_size("4M"), Some(4 << 20));
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("4Q"), None);
    }
}
