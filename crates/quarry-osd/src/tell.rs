//! `ceph tell osd.N …`: admin commands to the OSD itself, with Ceph's words and answers
//! (pretty JSON on stdout, Ceph's error lines): `version`, `config get KEY`, `config set KEY
//! VALUE`, `config show`, `config diff`, `injectargs '--key value …'`, `bench [COUNT] [SIZE]`,
//! `dump_ops_in_flight` and `dump_historic_ops` (`crate::optracker`). Only a caller whose osd
//! caps hold `allow *` may ask (EACCES otherwise, as Ceph's OSD).
//!
//! # Options ([`Knobs`])
//! Every option the OSD reads (quarry-conf's table) can be read with `config get`: the value
//! it runs with, as its process loaded it ([`Knobs::load`]), and where it comes from
//! ([`Source`]: default, mon, file, cmdline, override; `config show sources` for `ceph
//! config show`, `config diff` as Ceph's). Only options registered with a setter
//! ([`Knobs::runtime`]) change while it runs: the process that hosts the OSD registers the
//! `debug_<subsystem>` log levels, the OSD its full ratios ([`register_space`]); anything
//! else is refused with EPERM (`may not be modified at runtime`), an unknown option with
//! ENOENT, a bad value with EINVAL. The central config reaches the knobs through
//! [`Knobs::apply_central`] (the monitor session pushes every change), below ceph.conf and
//! the command line. The registry is per process: in `quarry up` (every daemon in one
//! process) a level set through one OSD is the process's level.
//!
//! # Bench
//! `bench COUNT SIZE` (default 1 GiB in 4 MiB blocks, as Ceph) writes COUNT bytes in SIZE
//! writes to a scratch file in the OSD's data directory, syncs it, and removes it: the
//! figures are the disk under the OSD's store and log, not the store itself (Ceph's measures
//! its object store; Quarry's store is written only through the PGs' logs). Blocks are
//! capped at 64 MiB and COUNT at half the free space; one bench runs at a time.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use quarry_types::ErrorCode;
use quarry_wire::Reply;

use crate::osd::Osd;
use crate::session::Session;

/// Sets a runtime option: Ok(value as shown afterwards) or Err(why the value is bad).
pub type Setter = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// Where an option's running value comes from, lowest first (Ceph's config levels, the
/// `SOURCE` of `ceph config show`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The monitor's central config (`ceph config set`).
    Mon,
    /// ceph.conf.
    File,
    /// The daemon's command line.
    Cmdline,
    /// `ceph tell … config set|injectargs` while it runs.
    Override,
}

impl Source {
    /// Ceph's name of the level.
    pub fn name(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Mon => "mon",
            Source::File => "file",
            Source::Cmdline => "cmdline",
            Source::Override => "override",
        }
    }

    /// The level of [`quarry_conf::Conf::source`]'s answer.
    pub fn from_conf(name: &str) -> Source {
        match name {
            "mon" => Source::Mon,
            "file" => Source::File,
            "cmdline" => Source::Cmdline,
            _ => Source::Default,
        }
    }
}

struct Knob {
    value: String,
    default: String,
    source: Source,
    /// The central config's value, when it sets this option (also when a higher level
    /// overrides it, or when it waits for the next start).
    mon: Option<String>,
    /// The value of the file or command line, kept when an override replaces it.
    local: Option<(Source, String)>,
    setter: Option<Setter>,
}

impl Knob {
    fn new(default: &str) -> Knob {
        Knob {
            value: default.to_string(),
            default: default.to_string(),
            source: Source::Default,
            mon: None,
            local: None,
            setter: None,
        }
    }
}

/// One option as `config show` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    /// Option name.
    pub name: String,
    /// The value the daemon runs with.
    pub value: String,
    /// Where that value comes from.
    pub source: Source,
    /// Lower levels that set it too (overridden), lowest first.
    pub overrides: Vec<(Source, String)>,
    /// A central value this daemon does not run with yet (the option is read at start).
    pub ignores: Option<String>,
    /// The built-in default.
    pub default: String,
}

/// The OSD options of this process: their values, where they come from, and which can
/// change at runtime.
pub struct Knobs {
    all: Mutex<BTreeMap<String, Knob>>,
}

/// Why an option could not be set.
#[derive(Debug, PartialEq, Eq)]
pub enum SetError {
    /// No such option.
    Unknown,
    /// The value does not parse (the reason).
    Invalid(String),
    /// It is read at start only.
    NotRuntime,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Knobs {
    fn new() -> Knobs {
        let all = quarry_conf::OPTIONS
            .iter()
            .filter(|o| o.used_by.contains(&quarry_conf::Reader::Osd))
            .map(|o| (o.name.to_string(), Knob::new(o.default)))
            .collect();
        Knobs { all: Mutex::new(all) }
    }

    /// Records the values the process runs with and where each comes from (options it
    /// does not know are added).
    pub fn load<'a>(&self, values: impl IntoIterator<Item = (&'a str, String, Source)>) {
        let mut all = lock(&self.all);
        for (name, value, source) in values {
            let knob = all.entry(name.to_string()).or_insert_with(|| Knob::new(""));
            knob.value = value.clone();
            knob.source = source;
            match source {
                Source::Mon => knob.mon = Some(value),
                Source::File | Source::Cmdline => knob.local = Some((source, value)),
                Source::Default | Source::Override => {}
            }
        }
    }

    /// Makes `name` changeable at runtime through `setter`, running with `value` now
    /// (`default` when nothing sets it).
    pub fn runtime(&self, name: &str, value: String, default: String, setter: Setter) {
        let mut all = lock(&self.all);
        let knob = all.entry(name.to_string()).or_insert_with(|| Knob::new(&default));
        knob.default = default;
        if knob.source == Source::Default {
            knob.value = value;
        }
        knob.setter = Some(setter);
    }

    /// The value of `name`, if it is an OSD option.
    pub fn get(&self, name: &str) -> Option<String> {
        lock(&self.all).get(&canonical(name)).map(|k| k.value.clone())
    }

    /// Sets `name` to `value` if it may change at runtime (`ceph tell … config set`): the
    /// value's source becomes `override`.
    pub fn set(&self, name: &str, value: &str) -> Result<String, SetError> {
        self.set_from(name, value, Source::Override)
    }

    fn set_from(&self, name: &str, value: &str, source: Source) -> Result<String, SetError> {
        let name = canonical(name);
        let setter = match lock(&self.all).get(&name) {
            None => return Err(SetError::Unknown),
            Some(Knob { setter: None, .. }) => return Err(SetError::NotRuntime),
            Some(Knob { setter: Some(setter), .. }) => setter.clone(),
        };
        // Outside the lock: the setter may log.
        let shown = setter(value).map_err(SetError::Invalid)?;
        if let Some(knob) = lock(&self.all).get_mut(&name) {
            knob.value = shown.clone();
            knob.source = source;
        }
        Ok(shown)
    }

    /// Applies the central config's values for this daemon (`values`: every option the
    /// monitor sets for it, most specific section first already merged), with Ceph's
    /// precedence: a value from ceph.conf, the command line or `tell … config set` wins
    /// over the monitor's; a runtime option changes now; any other waits for the next start
    /// (`config show` lists it under IGNORES meanwhile). An option the monitor no longer
    /// sets goes back to its default. Returns what changed now, for the log.
    pub fn apply_central(&self, values: &BTreeMap<String, String>) -> Vec<String> {
        let mut now: Vec<(String, String)> = Vec::new();
        {
            let mut all = lock(&self.all);
            for (name, knob) in all.iter_mut() {
                let mon = values.get(name).cloned();
                let was = std::mem::replace(&mut knob.mon, mon.clone());
                if was == mon && !(mon.is_some() && knob.source == Source::Default) {
                    continue;
                }
                if knob.source > Source::Mon {
                    continue; // overridden locally: kept for config show
                }
                let target = mon.clone().unwrap_or_else(|| knob.default.clone());
                if knob.setter.is_some() && target != knob.value {
                    now.push((name.clone(), target));
                } else if knob.setter.is_some() {
                    knob.source = if mon.is_some() { Source::Mon } else { Source::Default };
                } else if target != knob.value {
                    tracing::info!(
                        option = %name,
                        value = %target,
                        "central config: the option is read at start; the value applies at the next start"
                    );
                }
            }
        }
        let mut changed = Vec::new();
        for (name, value) in now {
            let source = if values.contains_key(&name) { Source::Mon } else { Source::Default };
            match self.set_from(&name, &value, source) {
                Ok(shown) => changed.push(format!("{name} = '{shown}'")),
                Err(SetError::Invalid(why)) => {
                    tracing::warn!(option = %name, %value, reason = %why, "central config value refused");
                }
                Err(_) => {}
            }
        }
        changed
    }

    /// Every option with its value and where it comes from, by name.
    pub fn show(&self) -> Vec<Shown> {
        lock(&self.all)
            .iter()
            .map(|(name, k)| {
                let mut overrides = Vec::new();
                if let Some(mon) = k.mon.as_ref().filter(|_| k.source > Source::Mon) {
                    overrides.push((Source::Mon, mon.clone()));
                }
                if let Some((source, value)) = k.local.as_ref().filter(|(s, _)| k.source > *s) {
                    overrides.push((*source, value.clone()));
                }
                let ignores = k
                    .mon
                    .clone()
                    .filter(|m| k.setter.is_none() && k.source <= Source::Mon && *m != k.value);
                Shown {
                    name: name.clone(),
                    value: k.value.clone(),
                    source: k.source,
                    overrides,
                    ignores,
                    default: k.default.clone(),
                }
            })
            .collect()
    }

    /// Names of the options that change at runtime.
    pub fn runtime_names(&self) -> Vec<String> {
        lock(&self.all).iter().filter(|(_, k)| k.setter.is_some()).map(|(n, _)| n.clone()).collect()
    }
}

/// The OSDs of this process whose full-disk thresholds the runtime options change.
static SPACES: Mutex<Vec<std::sync::Weak<crate::space::Space>>> = Mutex::new(Vec::new());

/// Makes the full-disk thresholds (`mon_osd_nearfull_ratio`, `mon_osd_full_ratio`,
/// `osd_failsafe_full_ratio`) runtime options of this process, changing `space` (and every
/// other OSD of the process registered so).
pub(crate) fn register_space(space: &Arc<crate::space::Space>) {
    {
        let mut spaces = lock(&SPACES);
        spaces.retain(|s| s.strong_count() > 0);
        spaces.push(Arc::downgrade(space));
    }
    let now = space.ratios();
    for (name, value) in [
        ("mon_osd_nearfull_ratio", now.nearfull),
        ("mon_osd_full_ratio", now.full),
        ("osd_failsafe_full_ratio", now.failsafe),
    ] {
        let default = quarry_conf::option_spec(name).map(|o| o.default).unwrap_or_default();
        let setter: Setter = Arc::new(move |text: &str| {
            let value = quarry_conf::parse_float(text)
                .ok()
                .filter(|v| *v > 0.0 && *v <= 1.0)
                .ok_or_else(|| format!("'{text}' is not a number in (0, 1]"))?;
            let live: Vec<_> = lock(&SPACES).iter().filter_map(std::sync::Weak::upgrade).collect();
            for space in live {
                space.set_ratio(name, value)?;
            }
            Ok(value.to_string())
        });
        knobs().runtime(name, value.to_string(), default.to_string(), setter);
    }
}

/// The OSDs of this process whose `osd_write_once_min_bytes` the runtime option changes.
static WRITE_ONCE: Mutex<Vec<std::sync::Weak<std::sync::atomic::AtomicU64>>> =
    Mutex::new(Vec::new());

/// Makes `osd_write_once_min_bytes` a runtime option of this process, changing `min` (and
/// every other OSD's of the process registered so): `pg::placer` reads it at every append.
pub(crate) fn register_write_once(min: &Arc<std::sync::atomic::AtomicU64>) {
    {
        let mut all = lock(&WRITE_ONCE);
        all.retain(|s| s.strong_count() > 0);
        all.push(Arc::downgrade(min));
    }
    let name = "osd_write_once_min_bytes";
    let default = quarry_conf::option_spec(name).map(|o| o.default).unwrap_or_default();
    let setter: Setter = Arc::new(move |text: &str| {
        let value = crate::config::parse_write_once_min(text)?;
        for min in lock(&WRITE_ONCE).iter().filter_map(std::sync::Weak::upgrade) {
            min.store(value, Ordering::Relaxed);
        }
        Ok(value.to_string())
    });
    let now = min.load(Ordering::Relaxed);
    knobs().runtime(name, now.to_string(), default.to_string(), setter);
}

/// `debug-osd` and `debug osd` are `debug_osd`.
fn canonical(name: &str) -> String {
    name.trim().replace(['-', ' '], "_")
}

/// The process's OSD options.
pub fn knobs() -> &'static Knobs {
    static KNOBS: OnceLock<Knobs> = OnceLock::new();
    KNOBS.get_or_init(Knobs::new)
}

/// Pretty JSON (four spaces, as Ceph's formatter) of a flat object, fields in order.
fn json_object(fields: &[(&str, serde_json::Value)]) -> String {
    if fields.is_empty() {
        return "{}".into();
    }
    let body: Vec<String> =
        fields.iter().map(|(k, v)| format!("    {}: {v}", serde_json::Value::from(*k))).collect();
    format!("{{\n{}\n}}", body.join(",\n"))
}

fn told(output: String) -> Reply {
    Reply::Told { output, status: String::new() }
}

fn failed(code: ErrorCode, message: String) -> Reply {
    Reply::Failed { code, message }
}

/// `perf dump`: Ceph's `osd` section (client ops, reads and writes, their bytes and
/// latencies: `crate::optracker`) and Quarry's own sections, in Ceph's shapes (a latency is
/// `{"avgcount", "sum", "avgtime"}` in seconds; Ceph's other sections, `bluestore`...,
/// are not kept). Where a write's time goes: `quarry_wal.commit_latency` (an append from
/// queued to durable: the wait for a group commit, its write and fdatasync) and
/// `round_latency` (one group commit), `quarry_apply.apply_latency` (one PG's committed
/// entries from handing them to the apply thread to their replies: the wait for a round
/// included) and `round_latency` (one apply round, `round_batches` PG batches in all);
/// `osd.op_w_latency` minus those two is the Raft core's and the op path's own share.
/// `quarry_meta_cache` counts the reads the store's object metadata cache answered (`hits`)
/// and those that read its database (`misses`), and what it holds (`entries`, `bytes`).
/// `quarry_write_once` says how large writes reached the data file: placed while they
/// arrived (`placed_on_arrival`, issue 14), placed when their entries were appended
/// (`placed_at_append`), placements made while payloads arrived that no entry took
/// (`given_back`: refused or misrouted writes), and the bytes reserved for entries not
/// applied yet.
async fn perf_dump(osd: &Arc<Osd>) -> Reply {
    let router = &osd.router;
    let preplaced = router.preplaced().clone();
    let store = router.store().clone();
    let space = tokio::task::spawn_blocking(move || store.data_space()).await;
    let reserved = match space {
        Ok(Ok(space)) => space.reserved_bytes,
        Ok(Err(e)) => return failed(ErrorCode::EIO, format!("perf dump: {e}")),
        Err(e) => return failed(ErrorCode::EIO, format!("perf dump: {e}")),
    };
    let wal = router.wal().stats();
    let meta = router.store().meta_cache_stats();
    let time_avg = crate::optracker::time_avg_json;
    let counters = serde_json::json!({
        "osd": osd.tracker.perf_json(),
        "quarry_wal": {
            "commit_latency": time_avg(wal.commits, wal.commit_ns),
            "round_latency": time_avg(wal.rounds, wal.round_ns),
            "inline_rounds": wal.inline_rounds,
            "fsyncs": wal.fsyncs,
            "entries": wal.entries,
            "bytes": wal.bytes,
        },
        "quarry_apply": router.applier().perf_json(),
        "quarry_meta_cache": {
            "hits": meta.hits,
            "misses": meta.misses,
            "entries": meta.entries,
            "bytes": meta.bytes,
        },
        "quarry_write_once": {
            "placed_on_arrival": preplaced.placed_on_arrival.load(std::sync::atomic::Ordering::Relaxed),
            "placed_at_append": preplaced.placed_at_append.load(std::sync::atomic::Ordering::Relaxed),
            "given_back": preplaced.given_back.load(std::sync::atomic::Ordering::Relaxed),
            "reserved_bytes": reserved,
        }
    });
    told(pretty(&counters))
}

/// Serves one `Tell` from `session`.
pub(crate) async fn handle(osd: &Arc<Osd>, session: &Session, words: Vec<String>) -> Reply {
    if !session.caps.osd.allows_all() {
        tracing::info!(entity = %session.entity, "tell refused: the osd caps lack 'allow *'");
        let message = format!("problem getting command descriptions from osd.{}", osd.id);
        return failed(ErrorCode::EACCES, message);
    }
    tracing::info!(entity = %session.entity, command = ?words, "tell");
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["version"] => told(json_object(&[
            ("version", format!("16.2.15-quarry.{}", env!("CARGO_PKG_VERSION")).into()),
            ("release", "pacific".into()),
            ("release_type", "stable".into()),
        ])),
        ["config", "get", key] => match knobs().get(key) {
            Some(value) => told(json_object(&[(key, value.into())])),
            None => {
                failed(ErrorCode::ENOENT, format!("error getting '{key}': {}", ErrorCode::ENOENT))
            }
        },
        ["dump_ops_in_flight" | "ops"] => told(pretty(&osd.tracker.dump_in_flight())),
        ["dump_historic_ops"] => told(pretty(&osd.tracker.dump_historic())),
        ["config", "show"] => told(config_show()),
        ["config", "diff"] => told(config_diff()),
        ["config", "show", "sources"] => told(config_sources()),
        ["config", "set", key, value @ ..] if !value.is_empty() => {
            let value = value.join(" ");
            match knobs().set(key, &value) {
                Ok(_) => told(json_object(&[("success", "".into())])),
                Err(e) => set_failed(key, &value, e, false),
            }
        }
        ["injectargs", args @ ..] if !args.is_empty() => injectargs(&args.join(" ")),
        ["bench", rest @ ..] if rest.len() <= 2 => bench(osd, rest).await,
        ["perf", "dump"] => perf_dump(osd).await,
        _ => failed(
            ErrorCode::EINVAL,
            format!(
                "invalid command: {}; an OSD answers: version, config get <var>, config set \
                 <var> <val>, config show, config diff, injectargs <args>, bench [<count>] \
                 [<size>], dump_ops_in_flight, dump_historic_ops, perf dump",
                words.join(" ")
            ),
        ),
    }
}

/// Pretty JSON with four spaces, as Ceph's formatter.
fn pretty(value: &serde_json::Value) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    match serde::Serialize::serialize(value, &mut ser) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => "{}".into(),
    }
}

/// `config show`: every option and its running value (Ceph's pretty JSON object).
fn config_show() -> String {
    let fields: Vec<(String, serde_json::Value)> =
        knobs().show().into_iter().map(|o| (o.name, o.value.into())).collect();
    let refs: Vec<(&str, serde_json::Value)> =
        fields.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    json_object(&refs)
}

/// `config show sources` (Quarry's, for `ceph config show osd.N`, which Ceph's mgr
/// answers): every option in the mgr's JSON shape, `[{"name", "value", "source",
/// "overrides": [{"source", "value"}], "ignores": "mon[VALUE]"?, "default"}]`.
fn config_sources() -> String {
    let rows: Vec<serde_json::Value> = knobs()
        .show()
        .into_iter()
        .map(|o| {
            let overrides: Vec<serde_json::Value> = o
                .overrides
                .iter()
                .map(|(s, v)| serde_json::json!({"source": s.name(), "value": v}))
                .collect();
            serde_json::json!({
                "name": o.name,
                "value": o.value,
                "source": o.source.name(),
                "overrides": overrides,
                "ignores": o.ignores,
                "default": o.default,
            })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// `config diff`: the options not at their default, each with the value of every level
/// that sets it, lowest first, and the final one (Ceph's `{"diff": {NAME: {"default": …,
/// "mon": …, "final": …}}}`, pretty with four spaces).
fn config_diff() -> String {
    let q = |text: &str| serde_json::Value::from(text).to_string();
    let mut options = Vec::new();
    for o in knobs().show() {
        if o.source == Source::Default {
            continue;
        }
        let mut levels = vec![("default", o.default.clone())];
        levels.extend(o.overrides.iter().map(|(source, value)| (source.name(), value.clone())));
        if o.source != Source::Default {
            levels.push((o.source.name(), o.value.clone()));
        }
        levels.push(("final", o.value.clone()));
        let body: Vec<String> =
            levels.iter().map(|(k, v)| format!("            {}: {}", q(k), q(v))).collect();
        options.push(format!("        {}: {{\n{}\n        }}", q(&o.name), body.join(",\n")));
    }
    if options.is_empty() {
        return "{\n    \"diff\": {}\n}".into();
    }
    format!("{{\n    \"diff\": {{\n{}\n    }}\n}}", options.join(",\n"))
}

fn set_failed(key: &str, value: &str, e: SetError, inject: bool) -> Reply {
    let key = canonical(key);
    match (e, inject) {
        (SetError::Unknown, false) => failed(
            ErrorCode::ENOENT,
            format!("error setting '{key}' to '{value}': {}", ErrorCode::ENOENT),
        ),
        (SetError::Unknown, true) => {
            failed(ErrorCode::EINVAL, format!(" failed to parse arguments: --{key},{value}"))
        }
        (SetError::Invalid(why), _) => failed(
            ErrorCode::EINVAL,
            format!("error setting '{key}' to '{value}': {} ({why})", ErrorCode::EINVAL),
        ),
        (SetError::NotRuntime, _) => failed(
            ErrorCode::EPERM,
            format!(
                "Parse error setting {key} to '{value}' using injectargs (Configuration option \
                 '{key}' may not be modified at runtime)."
            ),
        ),
    }
}

/// `injectargs '--a 1 --b=2'`: every pair is checked before any is set, so a bad one
/// changes nothing.
fn injectargs(text: &str) -> Reply {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let Some(option) = tokens[i].strip_prefix("--") else {
            return failed(
                ErrorCode::EINVAL,
                format!(" failed to parse arguments: {}", tokens.join(",")),
            );
        };
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match tokens.get(i + 1) {
                Some(v) if !v.starts_with("--") => {
                    i += 1;
                    (option.to_string(), v.to_string())
                }
                // A flag alone means true, as in Ceph.
                _ => (option.to_string(), "true".to_string()),
            },
        };
        pairs.push((canonical(&key), value));
        i += 1;
    }
    let knobs = knobs();
    let runtime = knobs.runtime_names();
    for (key, value) in &pairs {
        if knobs.get(key).is_none() {
            return set_failed(key, value, SetError::Unknown, true);
        }
        if !runtime.contains(key) {
            return set_failed(key, value, SetError::NotRuntime, true);
        }
    }
    let mut status = String::new();
    for (key, value) in &pairs {
        match knobs.set(key, value) {
            Ok(shown) => status.push_str(&format!("{key} = '{shown}' \n")),
            Err(e) => return set_failed(key, value, e, true),
        }
    }
    Reply::Told { output: "{}".into(), status }
}

/// Largest block of `bench` (Ceph's `osd_bench_max_block_size`).
const BENCH_BLOCK_MAX: u64 = 64 << 20;

async fn bench(osd: &Arc<Osd>, args: &[&str]) -> Reply {
    let parse = |i: usize, default: u64| -> Result<u64, Reply> {
        match args.get(i) {
            None => Ok(default),
            Some(text) => text.parse::<u64>().map_err(|_| {
                failed(
                    ErrorCode::EINVAL,
                    format!("{text} not valid:  {text} doesn't represent an int"),
                )
            }),
        }
    };
    let count = match parse(0, 1 << 30) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let size = match parse(1, 4 << 20) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    if size == 0 || count == 0 {
        return failed(ErrorCode::EINVAL, "bench count and size must be positive".into());
    }
    if size > BENCH_BLOCK_MAX {
        return failed(
            ErrorCode::EINVAL,
            "block 'size' values are capped at 64 MiB. If you wish to use a higher value, please \
             adjust 'osd_bench_max_block_size'"
                .into(),
        );
    }
    let dir = osd.space.dir().to_path_buf();
    let avail = crate::space::statvfs(&dir).avail;
    if count > avail / 2 {
        return failed(
            ErrorCode::ENOSPC,
            format!(
                "bench of {count} bytes needs at most half the free space ({avail} bytes free)"
            ),
        );
    }
    static RUNNING: AtomicBool = AtomicBool::new(false);
    if RUNNING.swap(true, Ordering::AcqRel) {
        return failed(ErrorCode::EBUSY, "a bench is already running".into());
    }
    let path = dir.join(format!("bench.{}.tmp", osd.id));
    let run = tokio::task::spawn_blocking(move || {
        let result = write_bench(&path, count, size);
        RUNNING.store(false, Ordering::Release);
        result
    })
    .await;
    match run {
        Ok(Ok(elapsed)) => {
            let secs = elapsed.max(1e-9);
            told(json_object(&[
                ("bytes_written", count.into()),
                ("blocksize", size.into()),
                ("elapsed_sec", secs.into()),
                ("bytes_per_sec", (count as f64 / secs).into()),
                ("iops", ((count as f64 / size as f64) / secs).into()),
            ]))
        }
        Ok(Err(e)) => {
            failed(ErrorCode(e.raw_os_error().unwrap_or(5)), format!("bench failed: {e}"))
        }
        Err(_) => failed(ErrorCode::EIO, "bench task failed".into()),
    }
}

/// Writes `count` bytes in `size` writes to `path`, syncs, removes it: seconds taken.
fn write_bench(path: &PathBuf, count: u64, size: u64) -> std::io::Result<f64> {
    let block: Vec<u8> = (0..size).map(|i| (i * 131 % 251) as u8).collect();
    let started = Instant::now();
    let result = (|| {
        let mut file = std::fs::File::create(path)?;
        let mut left = count;
        while left > 0 {
            let n = left.min(size) as usize;
            file.write_all(&block[..n])?;
            left -= n as u64;
        }
        file.sync_data()
    })();
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    result.map(|()| elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_knobs_change_and_others_refuse() {
        let knobs = Knobs::new();
        assert_eq!(knobs.get("ms_tcp_read_timeout").as_deref(), Some("900"));
        assert_eq!(knobs.set("ms_tcp_read_timeout", "5"), Err(SetError::NotRuntime));
        assert_eq!(knobs.set("nosuch", "5"), Err(SetError::Unknown));
        let setter: Setter = Arc::new(|v: &str| match v.parse::<u32>() {
            Ok(n) if n <= 20 => Ok(format!("{n}/{n}")),
            _ => Err(format!("'{v}' is not a level 0-20")),
        });
        knobs.runtime("debug_osd", "1/5".into(), "1/5".into(), setter);
        assert_eq!(knobs.set("debug-osd", "5"), Ok("5/5".into()));
        assert_eq!(knobs.get("debug_osd").as_deref(), Some("5/5"));
        assert!(matches!(knobs.set("debug_osd", "x"), Err(SetError::Invalid(_))));
        assert_eq!(knobs.get("debug_osd").as_deref(), Some("5/5"));
    }

    /// The central config's precedence: it sets a runtime option that nothing else sets,
    /// loses to the file, waits for the next start for others, and its removal brings the
    /// default back.
    #[test]
    fn central_values_sit_below_the_file_and_wait_for_options_read_at_start() {
        let knobs = Knobs::new();
        let setter: Setter = Arc::new(|v: &str| Ok(v.to_string()));
        knobs.runtime("debug_osd", "1/5".into(), "1/5".into(), setter.clone());
        knobs.runtime("debug_ms", "2/2".into(), "0/0".into(), setter);
        knobs.load([("debug_ms", "2/2".to_string(), Source::File)]);
        let central: BTreeMap<String, String> =
            [("debug_osd", "5/5"), ("debug_ms", "9/9"), ("ms_tcp_read_timeout", "30")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(knobs.apply_central(&central), ["debug_osd = '5/5'"]);
        let show = |name: &str| knobs.show().into_iter().find(|o| o.name == name).unwrap();
        assert_eq!(
            (show("debug_osd").value, show("debug_osd").source),
            ("5/5".into(), Source::Mon)
        );
        let ms = show("debug_ms");
        assert_eq!((ms.value.as_str(), ms.source), ("2/2", Source::File));
        assert_eq!(ms.overrides, [(Source::Mon, "9/9".to_string())]);
        let timeout = show("ms_tcp_read_timeout");
        assert_eq!((timeout.value.as_str(), timeout.ignores.as_deref()), ("900", Some("30")));
        // A tell override wins over both; the central value's removal restores the default.
        knobs.set("debug_ms", "3/3").unwrap();
        assert_eq!(show("debug_ms").source, Source::Override);
        assert_eq!(knobs.apply_central(&BTreeMap::new()), ["debug_osd = '1/5'"]);
        assert_eq!(show("debug_osd").source, Source::Default);
        assert_eq!(show("ms_tcp_read_timeout").ignores, None);
    }

    #[test]
    fn json_objects_keep_their_order() {
        let text = json_object(&[("version", "v".into()), ("release", "pacific".into())]);
        assert_eq!(text, "{\n    \"version\": \"v\",\n    \"release\": \"pacific\"\n}");
        assert_eq!(json_object(&[]), "{}");
    }
}
