//! `ceph tell osd.N …`: admin commands to the OSD itself, with Ceph's words and answers
//! (pretty JSON on stdout, Ceph's error lines): `version`, `config get KEY`, `config set KEY
//! VALUE`, `injectargs '--key value …'` and `bench [COUNT] [SIZE]`. Only a caller whose osd
//! caps hold `allow *` may ask (EACCES otherwise, as Ceph's OSD).
//!
//! # Options ([`Knobs`])
//! Every option the OSD reads (quarry-conf's table) can be read with `config get`: the value
//! it runs with, as its process loaded it ([`Knobs::load`]). Only options registered with a
//! setter ([`Knobs::runtime`]) change while it runs: the process that hosts the OSD registers
//! the `debug_<subsystem>` log levels; anything else is refused with EPERM (`may not be
//! modified at runtime`), an unknown option with ENOENT, a bad value with EINVAL. The
//! registry is per process: in `quarry up` (every daemon in one process) a level set through
//! one OSD is the process's level.
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

struct Knob {
    value: String,
    setter: Option<Setter>,
}

/// The OSD options of this process: their values and which can change at runtime.
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
            .map(|o| (o.name.to_string(), Knob { value: o.default.to_string(), setter: None }))
            .collect();
        Knobs { all: Mutex::new(all) }
    }

    /// Records the values the process runs with (options it does not know are added).
    pub fn load<'a>(&self, values: impl IntoIterator<Item = (&'a str, String)>) {
        let mut all = lock(&self.all);
        for (name, value) in values {
            all.entry(name.to_string())
                .or_insert(Knob { value: String::new(), setter: None })
                .value = value;
        }
    }

    /// Makes `name` changeable at runtime through `setter`, with `value` now.
    pub fn runtime(&self, name: &str, value: String, setter: Setter) {
        lock(&self.all).insert(name.to_string(), Knob { value, setter: Some(setter) });
    }

    /// The value of `name`, if it is an OSD option.
    pub fn get(&self, name: &str) -> Option<String> {
        lock(&self.all).get(&canonical(name)).map(|k| k.value.clone())
    }

    /// Sets `name` to `value` if it may change at runtime.
    pub fn set(&self, name: &str, value: &str) -> Result<String, SetError> {
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
        }
        Ok(shown)
    }

    /// Names of the options that change at runtime.
    pub fn runtime_names(&self) -> Vec<String> {
        lock(&self.all).iter().filter(|(_, k)| k.setter.is_some()).map(|(n, _)| n.clone()).collect()
    }
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
        ["config", "set", key, value @ ..] if !value.is_empty() => {
            let value = value.join(" ");
            match knobs().set(key, &value) {
                Ok(_) => told(json_object(&[("success", "".into())])),
                Err(e) => set_failed(key, &value, e, false),
            }
        }
        ["injectargs", args @ ..] if !args.is_empty() => injectargs(&args.join(" ")),
        ["bench", rest @ ..] if rest.len() <= 2 => bench(osd, rest).await,
        _ => failed(
            ErrorCode::EINVAL,
            format!(
                "invalid command: {}; an OSD answers: version, config get <var>, config set \
                 <var> <val>, injectargs <args>, bench [<count>] [<size>]",
                words.join(" ")
            ),
        ),
    }
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
        knobs.runtime("debug_osd", "1/5".into(), setter);
        assert_eq!(knobs.set("debug-osd", "5"), Ok("5/5".into()));
        assert_eq!(knobs.get("debug_osd").as_deref(), Some("5/5"));
        assert!(matches!(knobs.set("debug_osd", "x"), Err(SetError::Invalid(_))));
        assert_eq!(knobs.get("debug_osd").as_deref(), Some("5/5"));
    }

    #[test]
    fn json_objects_keep_their_order() {
        let text = json_object(&[("version", "v".into()), ("release", "pacific".into())]);
        assert_eq!(text, "{\n    \"version\": \"v\",\n    \"release\": \"pacific\"\n}");
        assert_eq!(json_object(&[]), "{}");
    }
}
