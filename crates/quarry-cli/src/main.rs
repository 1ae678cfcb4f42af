//! `quarry`: the one binary of Quarry. A small dispatcher; the commands live in modules:
//! - `up`: the embedded one-machine cluster (`quarry up DIR`);
//! - `daemon`: `quarry mon`, `quarry osd` as separate processes; `cluster`: their files
//!   (`quarry cluster-init`) and the cluster directory lock;
//! - `libs`: `quarry install-libs`/`uninstall-libs`/`which-libs`, the system-wide install of
//!   Quarry's librados/librbd for services (libvirtd);
//! - `ceph`, `rados` (+ `bench`), `rbd`: Ceph's admin tools, with Ceph's syntax, output and exit
//!   codes; `session` connects them; `output` prints; `error` maps failures to Ceph's words.
//!   The monitor commands themselves (parsing, running, rendering) are
//!   `quarry_client::admin`: the CLI parses argv and prints.
//!
//! A panic prints the version and a backtrace on stderr before the process aborts
//! (`QUARRY_TEST_PANIC=1` panics on purpose, for the test of that hook).
//!
//! Invoked through a link named `ceph`, `rados` or `rbd`, it behaves as `quarry ceph …`,
//! `quarry rados …`, `quarry rbd …`. For those tools `CEPH_ARGS` is put before the
//! command-line arguments, as Ceph's tools do. `logging` sets up the logs: Ceph's `debug_*`,
//! `log_file` and `log_to_stderr` options for the daemons, `RUST_LOG` over everything.
//!
//! Dependencies: clap (derive) for the command lines; tokio for the daemons and clients;
//! anyhow for daemon start-up errors (chains of context), thiserror for `CliError`;
//! tracing-subscriber (env filter) for logs; indicatif for progress bars of long transfers;
//! serde_json (+ serde) for `-f json` output; rand for `rados bench rand`; mimalloc as the
//! global allocator (below).
//!
//! Why mimalloc (issue 14, memory target): with glibc's malloc, a `quarry up` that had served
//! `rados bench` with 4 MiB objects kept 829 MiB resident, of which `malloc_trim(0)` (called
//! from gdb) gave back 450 MiB: freed payload buffers stayed in glibc's arenas. mimalloc
//! returns freed pages to the kernel after a short delay and is as fast for the daemons'
//! allocation pattern (figures in docs/benchmarks.md, "Memory"). Only this binary sets it:
//! the C ABI libraries leave their host process's allocator alone.

#![warn(missing_docs)]

mod bench;
mod ceph;
mod cluster;
mod daemon;
mod error;
mod libs;
mod logging;
mod nbd;
mod output;
mod pool_dump;
mod rados;
mod rados_dump;
mod rados_lock;
mod rbd;
mod session;
mod suggest;
mod tell;
mod up;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;

/// Quarry: a distributed block store that speaks Ceph.
#[derive(Parser, Debug)]
#[command(name = "quarry", version, about, propagate_version = false)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a one-machine cluster (a monitor and N OSDs in this process) with data in DIR.
    Up(up::UpArgs),
    /// Run a monitor.
    Mon(daemon::MonArgs),
    /// Run an OSD.
    Osd(daemon::OsdArgs),
    /// Write ceph.conf and keyrings for a cluster of separate `quarry mon`/`quarry osd` processes.
    ClusterInit(cluster::ClusterInitArgs),
    /// Ceph's `ceph` tool: status, pools, users.
    Ceph(ceph::CephArgs),
    /// Ceph's `rados` tool: objects, omap, xattrs, bench.
    Rados(rados::RadosArgs),
    /// Ceph's `rbd` tool: images, snapshots, clones.
    Rbd(Box<rbd::RbdArgs>),
    /// Serve images over NBD (`quarry nbd serve POOL/IMAGE…`).
    Nbd(nbd::NbdArgs),
    /// Install Quarry's librados.so.2/librbd.so.1 system-wide, before Ceph's (for libvirtd
    /// and the QEMU it starts); `--status` reports which library the dynamic linker picks.
    InstallLibs(libs::InstallArgs),
    /// Undo `install-libs`: the distribution's (Ceph's) libraries are found again.
    UninstallLibs,
    /// Which librados/librbd files running processes have mapped, and whether each is Quarry's.
    WhichLibs(libs::WhichArgs),
}

/// Tools that may be reached through a link named after them.
const TOOLS: [&str; 3] = ["ceph", "rados", "rbd"];

/// Rewrites argv into `quarry TOOL [CEPH_ARGS...] ARGS...` for the Ceph tools, whether
/// reached through a link (`argv[0]` = `ceph`) or as `quarry ceph`.
fn effective_args(argv: Vec<OsString>, ceph_args: Vec<String>) -> Vec<OsString> {
    let prog = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tool, rest): (String, Vec<OsString>) = if TOOLS.contains(&prog.as_str()) {
        (prog, argv.into_iter().skip(1).collect())
    } else {
        match argv.get(1).map(|a| a.to_string_lossy().into_owned()) {
            Some(t) if TOOLS.contains(&t.as_str()) => (t, argv.into_iter().skip(2).collect()),
            _ => return argv,
        }
    };
    // CEPH_ARGS go first (the command line's options win: last occurrence wins), with
    // Ceph's handling of `--` (quarry-conf's merge_ceph_args).
    let merged = quarry_conf::merge_ceph_args(
        std::iter::once(OsString::from(&tool)).chain(rest).collect(),
        &ceph_args,
    );
    let mut out: Vec<OsString> = vec!["quarry".into()];
    for (i, arg) in merged.into_iter().enumerate() {
        // The ceph CLI's `-i` is --in-file (for the C++ tools it is --id).
        if i > 0 && tool == "ceph" && arg == "-i" {
            out.push("--in-file".into());
        } else {
            out.push(arg);
        }
    }
    out
}

/// For the Ceph tools and `quarry up`: takes Ceph's generic `--OPTION VALUE` config options
/// out of the arguments (`quarry_conf::extract_config_args`), keeping every long option the
/// command's own parser defines; `rados --version` / `rbd --version` print the version as
/// Ceph's do.
fn config_args(args: Vec<OsString>) -> (Vec<OsString>, Vec<(String, String)>) {
    let tool = args.get(1).and_then(|t| t.to_str()).unwrap_or_default().to_string();
    if !TOOLS.contains(&tool.as_str()) && tool != "up" {
        return (args, Vec::new());
    }
    let version = args.iter().skip(2).take_while(|a| *a != "--").any(|a| a == "--version");
    if version && tool != "ceph" && tool != "up" {
        println!("{}", quarry_client::admin::version_string());
        std::process::exit(0);
    }
    let mut keep = Vec::new();
    if let Some(command) = <Cli as clap::CommandFactory>::command().find_subcommand(&tool) {
        collect_long_names(command, &mut keep);
    }
    // `ceph tell osd.N injectargs --debug-osd 5`: what follows `injectargs` is for the
    // daemon, never the tool's own options (as in Ceph).
    if tool == "ceph" {
        if let Some(at) = args.iter().position(|a| a == "injectargs") {
            let mut args = args;
            let injected = args.split_off(at);
            let (mut out, overrides) = quarry_conf::extract_config_args(args, &keep);
            if !out.iter().any(|a| a == "--") {
                out.push("--".into());
            }
            out.extend(injected);
            return (out, overrides);
        }
    }
    quarry_conf::extract_config_args(args, &keep)
}

/// Reports a command line clap refused, as clap does, but never suggests a confirmation
/// flag (`--yes-i-really-mean-it`) for a mistyped option: a typo must not be one step from
/// a destructive command.
fn parse_failed(e: clap::Error) -> ! {
    if e.use_stderr() {
        let text = e.render().to_string();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !(l.contains("tip:") && l.contains("--yes-i-really")))
            .collect();
        eprintln!("{}", kept.join("\n").trim_end());
        std::process::exit(e.exit_code());
    }
    e.exit()
}

/// Every long option name (and alias) of `command` and its subcommands.
fn collect_long_names(command: &clap::Command, out: &mut Vec<String>) {
    for arg in command.get_arguments() {
        out.extend(arg.get_long().map(String::from));
        out.extend(arg.get_all_aliases().into_iter().flatten().map(String::from));
    }
    for sub in command.get_subcommands() {
        collect_long_names(sub, out);
    }
}

/// The tools' logging (stderr only). The daemons and `quarry up` set theirs up once their
/// configuration is read (`logging::LogSetup`).
fn init_logging(command: &Command, overrides: &[(String, String)]) {
    let default = match command {
        Command::Mon(_) | Command::Osd(_) | Command::Up(_) => return,
        // The binary's own lines (target `quarry::…`), not its libraries' (`quarry_…`).
        Command::Nbd(_) => "warn,quarry=info,quarry_=warn",
        // The tools print the reason of a failure themselves (Ceph's wording); library
        // warnings would repeat it.
        _ => "error",
    };
    logging::init_tool(&logging::tool_directives(default, overrides));
}

async fn dispatch(command: Command) -> Result<(), CliError> {
    match command {
        Command::Up(args) => up::run(args).await,
        Command::Mon(args) => daemon::run_mon(args).await,
        Command::Osd(args) => daemon::run_osd(args).await,
        Command::ClusterInit(args) => cluster::cluster_init(args),
        Command::Ceph(args) => ceph::run(args).await,
        Command::Rados(args) => rados::run(args).await,
        Command::Rbd(args) => rbd::run(*args).await,
        Command::Nbd(args) => nbd::run(args).await,
        Command::InstallLibs(args) => libs::install(args),
        Command::UninstallLibs => libs::uninstall(),
        Command::WhichLibs(args) => libs::which(args),
    }
}

/// Set to `1` to make `quarry` panic at once: only for the test of [`install_panic_hook`].
const TEST_PANIC_ENV: &str = "QUARRY_TEST_PANIC";

/// Prints the version and a backtrace to stderr when a thread panics, before the process
/// aborts (`panic = "abort"`): what a bug report needs, whatever `RUST_BACKTRACE` says.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let backtrace = std::backtrace::Backtrace::force_capture();
        eprintln!(
            "quarry {} panicked in thread '{}': {info}\nbacktrace:\n{backtrace}",
            env!("CARGO_PKG_VERSION"),
            thread.name().unwrap_or("unnamed"),
        );
    }));
}

/// Worker threads of the runtime of a one-shot tool (`ceph`, `rados`, `rbd`): one, so that a
/// request's task, its connection's writer and reader, and the task woken by its reply run on
/// the same thread (for requests in tasks of their own, as `rados bench`'s and `rbd bench`'s;
/// the dispatching future itself runs on the main thread); blocking work (files, hashing a
/// large reply: `quarry_client::hash_large_replies_aside`) still has its pool. On this VM a
/// wake-up of another vCPU costs ~20 µs, more than a small request's own work, and two
/// workers passed each request between them. Alternated against one server
/// (docs/benchmarks.md, "Nineteenth round"): `rados bench` 4 KiB reads at QD32 50.7k / 51.3k /
/// 53.7k IOPS against 34.7k / 43.3k / 36.9k (client CPU 11-12 against 15-18 µs per read),
/// writes at QD32 and QD1 level or ahead; 4 MiB reads at QD32 ahead in 3 of 4 pairs once large
/// replies were hashed aside (15-20% behind before); `rbd bench` level. The daemons (`up`,
/// `mon`, `osd`) and `nbd`, which serve many clients, keep one worker per core, as does the C
/// library (fio's `rbd` engine was slower on one). `TOKIO_WORKER_THREADS` in the environment
/// overrides both (tokio's own variable).
fn tool_worker_threads(command: &Command) -> Option<usize> {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        return None;
    }
    match command {
        Command::Ceph(_) | Command::Rados(_) | Command::Rbd(_) => Some(1),
        Command::Up(_)
        | Command::Mon(_)
        | Command::Osd(_)
        | Command::Nbd(_)
        | Command::ClusterInit(_)
        | Command::InstallLibs(_)
        | Command::UninstallLibs
        | Command::WhichLibs(_) => None,
    }
}

/// The runtime's bound on threads for blocking work (see `main`).
const BLOCKING_THREADS_MAX: usize = 16;

/// How long an idle blocking thread stays (see `main`).
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(2);

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    install_panic_hook();
    if std::env::var_os(TEST_PANIC_ENV).is_some_and(|v| v == "1") {
        panic!("{TEST_PANIC_ENV}=1: panicking on purpose (tests the panic hook)");
    }
    // The image cache's options in CEPH_ARGS are read where images are opened (rbd.rs).
    let ceph_args = quarry_rbd::CacheConfig::strip_args(&quarry_conf::ceph_args_env());
    let args = effective_args(std::env::args_os().collect(), ceph_args);
    let (args, overrides) = config_args(args);
    let mut cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => parse_failed(e),
    };
    init_logging(&cli.command, &overrides);
    match &mut cli.command {
        Command::Ceph(a) => a.common.config_overrides = overrides,
        Command::Rados(a) => a.common.config_overrides = overrides,
        Command::Rbd(a) => a.common.config_overrides = overrides,
        Command::Up(a) => a.config_overrides = overrides,
        _ => {}
    }
    // At most BLOCKING_THREADS_MAX threads for blocking work (store reads and writes of large
    // objects, checkpoints), each leaving after BLOCKING_KEEP_ALIVE idle: every thread that
    // allocates keeps a heap of its own in mimalloc, which holds pages (2 MiB huge pages
    // here) after the work is done. tokio's defaults (512 threads, 10 s) left ~25 of them
    // after 4 MiB I/O at queue depth 32, and `quarry up` ended a benchmark sequence 30-40
    // MiB larger, for no gain in throughput on this machine (docs/benchmarks.md, "Twelfth
    // round").
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE);
    if let Some(threads) = tool_worker_threads(&cli.command) {
        builder.worker_threads(threads);
        // One worker: a large reply's hashing goes to a blocking thread.
        quarry_client::hash_large_replies_aside(true);
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quarry: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(dispatch(cli.command));
    // Background tasks (client sessions, daemons' helpers) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = e.to_string();
            if !text.is_empty() {
                eprintln!("{text}");
            }
            ExitCode::from(e.status())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn links_and_ceph_args_dispatch() {
        let env = vec!["--id".to_string(), "qemu".to_string()];
        assert_eq!(
            effective_args(os(&["/usr/bin/ceph", "-s"]), env.clone()),
            os(&["quarry", "ceph", "--id", "qemu", "-s"])
        );
        assert_eq!(
            effective_args(os(&["rados", "-p", "rbd", "ls"]), vec![]),
            os(&["quarry", "rados", "-p", "rbd", "ls"])
        );
        assert_eq!(
            effective_args(os(&["target/quarry", "rados", "lspools"]), env.clone()),
            os(&["quarry", "rados", "--id", "qemu", "lspools"])
        );
        assert_eq!(
            effective_args(os(&["quarry", "up", "/tmp/q"]), env),
            os(&["quarry", "up", "/tmp/q"])
        );
        assert_eq!(
            effective_args(os(&["ceph", "auth", "import", "-i", "/tmp/k"]), vec![]),
            os(&["quarry", "ceph", "auth", "import", "--in-file", "/tmp/k"])
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
