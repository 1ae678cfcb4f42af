//! Logging setup: the `tracing` subscriber of the daemons (`quarry mon`, `quarry osd`,
//! `quarry up`) and of the tools, built from Ceph's logging options.
//!
//! - `debug_<subsystem> = N/M` (Ceph levels 0-20; the first number, the log level, is used)
//!   sets the level of the crates the subsystem maps to ([`SUBSYSTEMS`]): 0 = warnings and
//!   errors, 1-4 = info, 5-9 = debug, 10 and more = trace. Libraries (openraft, redb, tokio…)
//!   log warnings only unless their subsystem asks for more (openraft is `debug_paxos`).
//! - `log_file` (or `--log-file`) names the log file; daemons default to a file under their
//!   data directory ([`default_log_file`]); `log_file =` (empty) or `log_to_file = false`
//!   writes none. The file gets every line the levels let through, without colours.
//! - stderr gets warnings and errors only while a log file is written, everything when
//!   `log_to_stderr = true` or when no file is written, nothing when `log_to_stderr` and
//!   `err_to_stderr` are both false. Colour escapes only when stderr is a terminal.
//! - `RUST_LOG`, when set (non-empty), replaces the levels for the file and stderr alike.
//!
//! The tools (`ceph`, `rados`, `rbd`) write no file and log errors only (they print the
//! reason of a failure themselves), unless `--debug-<subsystem> N` on their command line (or
//! in CEPH_ARGS) or `RUST_LOG` says otherwise.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use quarry_conf::Conf;
use quarry_types::{EntityName, EntityType};

/// One of Ceph's `debug_<name>` subsystems and the targets (crates) it sets.
#[derive(Debug)]
pub struct Subsystem {
    /// The option is `debug_<name>`.
    pub name: &'static str,
    /// Level when the option is not set (Ceph's default, except `paxos`: 0, as openraft's
    /// info lines would flood the output).
    pub default: u32,
    /// The `tracing` targets it sets.
    pub targets: &'static [&'static str],
    /// Which daemon's sections `quarry up` (all daemons in one process) reads it from.
    pub daemon: EntityType,
}

/// Ceph's subsystems Quarry maps, with the crates each one sets.
pub const SUBSYSTEMS: &[Subsystem] = &[
    Subsystem { name: "mon", default: 1, targets: &["quarry_mon"], daemon: EntityType::Mon },
    Subsystem {
        name: "paxos",
        default: 0,
        targets: &["openraft", "quarry_raftlog"],
        daemon: EntityType::Mon,
    },
    Subsystem { name: "auth", default: 1, targets: &["quarry_auth"], daemon: EntityType::Mon },
    Subsystem { name: "osd", default: 1, targets: &["quarry_osd"], daemon: EntityType::Osd },
    Subsystem {
        name: "bluestore",
        default: 1,
        targets: &["quarry_store", "quarry_persist"],
        daemon: EntityType::Osd,
    },
    Subsystem { name: "objclass", default: 0, targets: &["quarry_cls"], daemon: EntityType::Osd },
    Subsystem {
        name: "crush",
        default: 1,
        targets: &["quarry_placement"],
        daemon: EntityType::Mon,
    },
    Subsystem { name: "ms", default: 0, targets: &["quarry_wire"], daemon: EntityType::Osd },
    Subsystem { name: "rados", default: 0, targets: &["quarry_client"], daemon: EntityType::Osd },
    Subsystem {
        name: "rbd",
        default: 0,
        targets: &["quarry_rbd", "quarry_nbd", "quarry_capi"],
        daemon: EntityType::Osd,
    },
];

/// The `tracing` level of a Ceph level.
pub fn tracing_level(ceph: u32) -> &'static str {
    match ceph {
        0 => "warn",
        1..=4 => "info",
        5..=9 => "debug",
        _ => "trace",
    }
}

/// Parses a `debug_*` value: `N` or `N/M` (log level / memory level: the first is used).
pub fn parse_debug_level(text: &str) -> Result<u32, String> {
    let first = text.split('/').next().unwrap_or_default().trim();
    first.parse::<u32>().map_err(|_| {
        format!("invalid value '{text}': expected a level from 0 to 20, or N/M (log/memory level)")
    })
}

/// Where a daemon logs by default: `DATA/log/quarry-mon.ID.log`, `DATA/log/quarry-osd.N.log`
/// (`quarry up`: `DIR/log/quarry-up.log`, see [`LogSetup::up`]).
pub fn default_log_file(data: &Path, name: &EntityName) -> PathBuf {
    data.join("log").join(format!("quarry-{name}.log"))
}

/// What the subscriber does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSetup {
    /// Directives (`warn,quarry=info,quarry_osd=debug,…`) when `RUST_LOG` is not set.
    pub directives: String,
    /// The log file, if one is written.
    pub file: Option<PathBuf>,
    /// What reaches stderr.
    pub stderr: StderrLevel,
    /// Problems with the logging options, logged as warnings once the subscriber is up.
    pub problems: Vec<String>,
    /// The Ceph level of each of [`SUBSYSTEMS`] (what `directives` was built from; levels
    /// change at runtime through [`set_level`]).
    pub levels: Vec<u32>,
}

/// The directives of a daemon whose subsystems (in [`SUBSYSTEMS`] order) log at `levels`.
fn directives_of(levels: &[u32]) -> String {
    let mut directives = vec!["warn".to_string(), "quarry=info".to_string()];
    for (sub, level) in SUBSYSTEMS.iter().zip(levels) {
        for target in sub.targets {
            directives.push(format!("{target}={}", tracing_level(*level)));
        }
    }
    directives.join(",")
}

/// Re-filters one layer with new directives.
type Refilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The levels of a running daemon process, changeable at runtime (`ceph tell osd.N config
/// set debug_osd 5`, `injectargs '--debug-ms 1'`).
struct RuntimeLevels {
    levels: Mutex<Vec<u32>>,
    layers: Vec<Refilter>,
}

static RUNTIME_LEVELS: std::sync::OnceLock<RuntimeLevels> = std::sync::OnceLock::new();

/// `debug_<name>`'s level now, as Ceph shows it (`N/N`), if the subsystem exists.
pub fn level(name: &str) -> Option<String> {
    let at = SUBSYSTEMS.iter().position(|s| s.name == name)?;
    let levels = RUNTIME_LEVELS.get()?.levels.lock().unwrap_or_else(|e| e.into_inner());
    levels.get(at).map(|l| format!("{l}/{l}"))
}

/// Sets `debug_<name>` to `value` (`N` or `N/M`, 0-20) in this process: its log file (and
/// stderr when it gets everything) follow at once. Returns the level as shown.
pub fn set_level(name: &str, value: &str) -> Result<String, String> {
    let at = SUBSYSTEMS.iter().position(|s| s.name == name).ok_or("no such subsystem")?;
    let level = parse_debug_level(value)?;
    if level > 20 {
        return Err(format!("invalid value '{value}': levels go from 0 to 20"));
    }
    let runtime = RUNTIME_LEVELS.get().ok_or("logging is not set up")?;
    let mut levels = runtime.levels.lock().unwrap_or_else(|e| e.into_inner());
    levels[at] = level;
    let directives = directives_of(&levels);
    for layer in &runtime.layers {
        layer(&directives)?;
    }
    tracing::info!("debug_{name} set to {level} at runtime ({directives})");
    // Shown as given when it names both levels (`1/5`), else Ceph's `N/N`.
    Ok(if value.contains('/') { value.trim().to_string() } else { format!("{level}/{level}") })
}

/// For `ceph tell osd.N config get|set`: records the OSD options' values as `name` reads
/// them from `conf`, and registers every `debug_<subsystem>` as an option that changes at
/// runtime (this process's level).
pub fn register_osd_knobs(conf: &Conf, name: &EntityName) {
    let knobs = quarry_osd::tell::knobs();
    let source = |key: &str| quarry_osd::tell::Source::from_conf(conf.source(name, key));
    knobs.load(
        quarry_conf::OPTIONS
            .iter()
            .filter(|o| o.used_by.contains(&quarry_conf::Reader::Osd))
            .filter_map(|o| conf.get(name, o.name).map(|v| (o.name, v, source(o.name)))),
    );
    for sub in SUBSYSTEMS {
        let sub_name = sub.name;
        let key = format!("debug_{sub_name}");
        let default = format!("{0}/{0}", sub.default);
        let now = level(sub_name).unwrap_or_else(|| default.clone());
        if conf.get(name, &key).is_some() {
            knobs.load([(key.as_str(), now.clone(), source(&key))]);
        }
        let setter: quarry_osd::tell::Setter = std::sync::Arc::new(move |v| set_level(sub_name, v));
        knobs.runtime(&key, now, default, setter);
    }
}

/// What a daemon writes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StderrLevel {
    /// Everything the levels let through.
    All,
    /// Warnings and errors.
    Warnings,
    /// Nothing.
    Off,
}

/// A boolean option's value, if set; a bad value counts as unset (`quarry_conf::validate`
/// names it in its warnings at start).
fn bool_option(value: Option<String>) -> Option<bool> {
    quarry_conf::parse_bool(&value?).ok()
}

impl LogSetup {
    /// The setup of a daemon: `lookup(entity type, key)` returns the option's value as that
    /// daemon reads it (overrides, `[type.id]`, `[type]`, `[global]`, metavariables
    /// expanded); `cli_file` is `--log-file`; `default_file` the file when none is named.
    pub fn from_options(
        lookup: impl Fn(EntityType, &str) -> Option<String>,
        main: EntityType,
        cli_file: Option<&Path>,
        default_file: PathBuf,
    ) -> LogSetup {
        let mut problems = Vec::new();
        let mut levels = Vec::with_capacity(SUBSYSTEMS.len());
        for sub in SUBSYSTEMS {
            let key = format!("debug_{}", sub.name);
            let level = match lookup(sub.daemon, &key) {
                Some(value) => match parse_debug_level(&value) {
                    Ok(level) => level,
                    Err(e) => {
                        problems.push(format!("{key}: {e}; using {}", sub.default));
                        sub.default
                    }
                },
                None => sub.default,
            };
            levels.push(level);
        }
        let directives = directives_of(&levels);
        let to_file = bool_option(lookup(main, "log_to_file"));
        let file = match (cli_file, lookup(main, "log_file")) {
            (Some(path), _) => Some(path.to_path_buf()),
            _ if to_file == Some(false) => None,
            (None, Some(path)) if path.trim().is_empty() => None,
            (None, Some(path)) => Some(PathBuf::from(path.trim())),
            (None, None) => Some(default_file),
        };
        let log_to_stderr = bool_option(lookup(main, "log_to_stderr"));
        let err_to_stderr = bool_option(lookup(main, "err_to_stderr"));
        let stderr = match (log_to_stderr, err_to_stderr) {
            (Some(true), _) => StderrLevel::All,
            (None, _) if file.is_none() => StderrLevel::All,
            (_, Some(false)) => StderrLevel::Off,
            _ => StderrLevel::Warnings,
        };
        LogSetup { directives, file, stderr, problems, levels }
    }

    /// A daemon's setup from its conf (`name` is the daemon, `data` its data directory).
    pub fn daemon(conf: &Conf, name: &EntityName, data: &Path, cli_file: Option<&Path>) -> Self {
        LogSetup::from_options(
            |_, key| conf.get(name, key),
            name.kind,
            cli_file,
            default_log_file(data, name),
        )
    }

    /// `quarry up DIR`'s setup: the options as the monitor `mon.a` reads them, the OSD
    /// subsystems' levels as `osd.0` reads them (`[osd]` applies); default file
    /// `DIR/log/quarry-up.log`.
    pub fn up(conf: &Conf, dir: &Path, cli_file: Option<&Path>) -> Self {
        let mon = EntityName { kind: EntityType::Mon, id: "a".into() };
        let osd = EntityName { kind: EntityType::Osd, id: "0".into() };
        LogSetup::from_options(
            |kind, key| conf.get(if kind == EntityType::Osd { &osd } else { &mon }, key),
            EntityType::Mon,
            cli_file,
            dir.join("log").join("quarry-up.log"),
        )
    }

    /// Installs the subscriber. The log file is created by [`LogFile::open`], once the
    /// daemon's configuration is known to be good (a start that fails on a bad option creates
    /// nothing); lines logged before are kept in memory and written then.
    pub fn init(self) -> LogFile {
        let env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
        let directives = env.clone().unwrap_or_else(|| self.directives.clone());
        let stderr_filter = match (self.stderr, &env) {
            (StderrLevel::Off, _) => EnvFilter::new("off"),
            (_, Some(env)) => EnvFilter::new(env),
            (StderrLevel::All, None) => EnvFilter::new(&directives),
            (StderrLevel::Warnings, None) => EnvFilter::new("warn"),
        };
        let mut layers: Vec<Refilter> = Vec::new();
        let (stderr_filter, stderr_handle) = tracing_subscriber::reload::Layer::new(stderr_filter);
        if self.stderr == StderrLevel::All && env.is_none() {
            layers.push(Box::new(move |d: &str| {
                stderr_handle.reload(EnvFilter::new(d)).map_err(|e| e.to_string())
            }));
        }
        let stderr = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(stderr_filter);
        let log_file = LogFile {
            state: Arc::new(Mutex::new(match &self.file {
                Some(path) => {
                    FileState::Pending { path: path.clone(), lines: Vec::new(), bytes: 0 }
                }
                None => FileState::None,
            })),
            // Warnings and errors already reach stderr unless it is off.
            stderr_has_warnings: self.stderr != StderrLevel::Off,
        };
        let file = self.file.is_some().then(|| {
            let (filter, handle) =
                tracing_subscriber::reload::Layer::new(EnvFilter::new(&directives));
            layers.push(Box::new(move |d: &str| {
                handle.reload(EnvFilter::new(d)).map_err(|e| e.to_string())
            }));
            tracing_subscriber::fmt::layer()
                .with_writer(log_file.clone())
                .with_ansi(false)
                .with_filter(filter)
        });
        tracing_subscriber::registry().with(stderr).with(file).init();
        let _ =
            RUNTIME_LEVELS.set(RuntimeLevels { levels: Mutex::new(self.levels.clone()), layers });
        for problem in &self.problems {
            tracing::warn!("logging: {problem}");
        }
        if let Some(path) = &self.file {
            tracing::info!("logging to {} ({directives})", path.display());
        }
        log_file
    }
}

/// Lines kept in memory before the log file is opened, at most (then dropped).
const PENDING_MAX_BYTES: usize = 4 << 20;

/// The log file's writer (a `MakeWriter` of the file layer) and the handle that opens it.
#[derive(Clone)]
pub struct LogFile {
    state: Arc<Mutex<FileState>>,
    stderr_has_warnings: bool,
}

enum FileState {
    /// No file is written.
    None,
    /// Not opened yet: the lines so far (with whether each is a warning or an error).
    Pending {
        path: PathBuf,
        lines: Vec<(bool, Vec<u8>)>,
        bytes: usize,
    },
    Open(File),
    /// The file could not be opened: its lines go to stderr (but for warnings and errors,
    /// which the stderr layer prints already).
    Stderr,
}

impl LogFile {
    /// Creates the log file (and its directory) and writes the lines logged so far. If it
    /// cannot be opened, says so (a warning) and sends the file's lines to stderr instead.
    pub fn open(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let FileState::Pending { path, lines, .. } = &mut *state else { return };
        let lines = std::mem::take(lines);
        match open_log_file(path) {
            Ok(mut file) => {
                for (_, line) in &lines {
                    let _ = file.write_all(line);
                }
                *state = FileState::Open(file);
            }
            Err(problem) => {
                let mut stderr = std::io::stderr().lock();
                for (warning, line) in &lines {
                    if !(*warning && self.stderr_has_warnings) {
                        let _ = stderr.write_all(line);
                    }
                }
                *state = FileState::Stderr;
                drop(state);
                tracing::warn!("logging: {problem}");
            }
        }
    }
}

/// One event's line for the log file.
pub struct LogFileWriter {
    state: Arc<Mutex<FileState>>,
    warning: bool,
    stderr_has_warnings: bool,
}

impl Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            FileState::None => {}
            FileState::Pending { lines, bytes, .. } => {
                if *bytes + buf.len() <= PENDING_MAX_BYTES {
                    *bytes += buf.len();
                    lines.push((self.warning, buf.to_vec()));
                }
            }
            FileState::Open(file) => file.write_all(buf)?,
            FileState::Stderr => {
                if !(self.warning && self.stderr_has_warnings) {
                    std::io::stderr().write_all(buf)?;
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter;

    fn make_writer(&'a self) -> LogFileWriter {
        LogFileWriter {
            state: self.state.clone(),
            warning: false,
            stderr_has_warnings: self.stderr_has_warnings,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LogFileWriter {
        LogFileWriter {
            state: self.state.clone(),
            warning: *meta.level() <= Level::WARN,
            stderr_has_warnings: self.stderr_has_warnings,
        }
    }
}

/// Opens (creating it and its directory) the log file for appending.
fn open_log_file(path: &Path) -> Result<File, String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}; logging to stderr", parent.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}; logging to stderr", path.display()))
}

/// The tools' directives: `default`, then the levels `--debug-<subsystem> N` (or CEPH_ARGS)
/// asks for (`overrides` are the generic `--OPTION VALUE` options); a bad level is ignored.
pub fn tool_directives(default: &str, overrides: &[(String, String)]) -> String {
    let mut directives = vec![default.to_string()];
    for (key, value) in overrides {
        let key = quarry_conf::normalize_key(key);
        let Some(sub) = SUBSYSTEMS.iter().find(|s| key.strip_prefix("debug_") == Some(s.name))
        else {
            continue;
        };
        if let Ok(level) = parse_debug_level(value) {
            for target in sub.targets {
                directives.push(format!("{target}={}", tracing_level(level)));
            }
        }
    }
    directives.join(",")
}

/// The tools' subscriber: stderr only, `directives` unless `RUST_LOG` is set, colours only
/// on a terminal.
pub fn init_tool(directives: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(EnvFilter::new)
        .unwrap_or_else(|| EnvFilter::new(directives));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(text: &str) -> LogSetup {
        let conf = Conf::parse(text).unwrap();
        let name = EntityName { kind: EntityType::Osd, id: "3".into() };
        LogSetup::daemon(&conf, &name, Path::new("/data"), None)
    }

    #[test]
    fn ceph_levels_map_onto_tracing_levels() {
        assert_eq!(parse_debug_level("5/5"), Ok(5));
        assert_eq!(parse_debug_level(" 1 / 20 "), Ok(1));
        assert_eq!(parse_debug_level("20"), Ok(20));
        assert!(parse_debug_level("loud").is_err());
        assert_eq!(tracing_level(0), "warn");
        assert_eq!(tracing_level(1), "info");
        assert_eq!(tracing_level(4), "info");
        assert_eq!(tracing_level(5), "debug");
        assert_eq!(tracing_level(10), "trace");
        assert_eq!(tracing_level(20), "trace");
    }

    #[test]
    fn defaults_keep_libraries_quiet_and_log_to_the_data_directory() {
        let s = setup("[global]\n");
        assert_eq!(s.file.as_deref(), Some(Path::new("/data/log/quarry-osd.3.log")));
        assert_eq!(s.stderr, StderrLevel::Warnings);
        assert!(s.directives.starts_with("warn,quarry=info,"), "{}", s.directives);
        assert!(s.directives.contains(",openraft=warn,"), "{}", s.directives);
        assert!(s.directives.contains(",quarry_osd=info,"), "{}", s.directives);
        assert!(s.problems.is_empty());
    }

    #[test]
    fn the_sections_of_the_daemon_set_levels_file_and_stderr() {
        let s = setup(
            "[global]\ndebug_osd = 20/20\ndebug ms = 1\nlog_file = /var/log/ceph/$cluster-$name.log\n\
             [osd]\ndebug_osd = 0/0\ndebug_paxos = 5/5\nlog_to_stderr = true\n[osd.1]\ndebug_osd = 10\n",
        );
        assert!(
            s.directives.contains(",quarry_osd=warn,"),
            "[osd] beats [global]: {}",
            s.directives
        );
        assert!(s.directives.contains(",openraft=debug,"), "{}", s.directives);
        assert!(s.directives.contains(",quarry_wire=info,"), "{}", s.directives);
        assert_eq!(s.file.as_deref(), Some(Path::new("/var/log/ceph/ceph-osd.3.log")));
        assert_eq!(s.stderr, StderrLevel::All);
    }

    #[test]
    fn no_file_means_everything_on_stderr_and_bad_values_are_reported() {
        let s = setup("[global]\nlog_file =\ndebug_osd = loud\n");
        assert_eq!(s.file, None);
        assert_eq!(s.stderr, StderrLevel::All);
        assert!(s.directives.contains(",quarry_osd=info,"), "default kept: {}", s.directives);
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        assert!(s.problems[0].contains("debug_osd"), "{:?}", s.problems);
        let s = setup("[global]\nlog_to_file = false\nlog_to_stderr = false\nerr_to_stderr = no\n");
        assert_eq!((s.file, s.stderr), (None, StderrLevel::Off));
        let s = setup("[global]\nlog_to_stderr = false\n");
        assert_eq!(s.stderr, StderrLevel::Warnings);
    }

    #[test]
    fn the_tools_take_levels_from_their_command_line() {
        let o = |k: &str, v: &str| (k.to_string(), v.to_string());
        let d = tool_directives(
            "error",
            &[
                o("debug-ms", "10"),
                o("debug_rados", "1/5"),
                o("debug_bogus", "5"),
                o("debug_rbd", "x"),
            ],
        );
        assert_eq!(d, "error,quarry_wire=trace,quarry_client=info");
    }

    #[test]
    fn the_command_line_file_wins() {
        let conf = Conf::parse("[global]\nlog_file = /elsewhere.log\n").unwrap();
        let s = LogSetup::up(&conf, Path::new("/q"), Some(Path::new("/tmp/up.log")));
        assert_eq!(s.file.as_deref(), Some(Path::new("/tmp/up.log")));
        let s = LogSetup::up(&Conf::default(), Path::new("/q"), None);
        assert_eq!(s.file.as_deref(), Some(Path::new("/q/log/quarry-up.log")));
    }
}
