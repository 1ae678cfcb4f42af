//! `Conf`: a parsed ceph.conf, where it is searched for, and how a value is looked up for an
//! entity: runtime overrides (`-k`, `-m`, `rados_conf_set`) > `[type.id]` > `[type]` >
//! `[global]`, keys compared after normalisation (`mon host` = `mon-host` = `mon_host`), then
//! metavariables expanded (`$cluster`, `$type`, `$id`, `$name`, `$host`, `$pid`, `${var}`, and
//! `$option` for another option's value, as Ceph does).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use quarry_types::{EntityName, EntityType};

use crate::ini::{self, Item};
use crate::options::{option_spec, parse_bool, parse_float, parse_int, parse_size};
use crate::{is_known, normalize_key, ConfError};

/// Config files larger than this are refused (Ceph allows 1 GiB; real ones are kilobytes).
pub const CONF_FILE_BYTES_MAX: u64 = crate::SMALL_FILE_BYTES_MAX;
/// How deep `$option` references are followed before the text is left as is.
const EXPANSION_DEPTH_MAX: u32 = 8;

/// One `key = value` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Setting {
    /// Normalised key.
    pub(crate) key: String,
    /// Key as written.
    pub(crate) raw_key: String,
    /// Value, unquoted and unescaped, metavariables not yet expanded.
    pub(crate) value: String,
    /// 1-based line.
    pub(crate) line: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Section {
    first_line: usize,
    settings: BTreeMap<String, Setting>,
}

/// A parsed ceph.conf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conf {
    sections: BTreeMap<String, Section>,
    overrides: BTreeMap<String, String>,
    /// The monitor's central config for the entity this conf serves (`ceph config set`),
    /// below every section of the file (Ceph's order: default < mon < file < command line).
    central: BTreeMap<String, String>,
    cluster: String,
    host: Option<String>,
    path: Option<PathBuf>,
}

impl Default for Conf {
    /// An empty config for cluster `ceph`.
    fn default() -> Self {
        Conf {
            sections: BTreeMap::new(),
            overrides: BTreeMap::new(),
            central: BTreeMap::new(),
            cluster: "ceph".to_string(),
            host: None,
            path: None,
        }
    }
}

/// Where `Conf::load` looks, captured from the process so tests can supply their own.
#[derive(Clone, Debug, Default)]
pub struct SearchEnv {
    /// `$CEPH_CONF`.
    pub ceph_conf: Option<OsString>,
    /// `$HOME`, for `~/.ceph/$cluster.conf`.
    pub home: Option<PathBuf>,
    /// Directory of `./$cluster.conf`.
    pub cwd: PathBuf,
}

impl SearchEnv {
    /// The real process environment.
    pub fn from_process() -> SearchEnv {
        SearchEnv {
            ceph_conf: std::env::var_os("CEPH_CONF").filter(|v| !v.is_empty()),
            home: std::env::var_os("HOME").filter(|v| !v.is_empty()).map(PathBuf::from),
            cwd: PathBuf::from("."),
        }
    }
}

/// Ceph's default search list: `/etc/ceph/$cluster.conf`, `~/.ceph/$cluster.conf`,
/// `./$cluster.conf`.
pub fn default_conf_paths(cluster: &str, home: Option<&Path>, cwd: &Path) -> Vec<PathBuf> {
    let file = format!("{cluster}.conf");
    let mut paths = vec![Path::new("/etc/ceph").join(&file)];
    if let Some(home) = home {
        paths.push(home.join(".ceph").join(&file));
    }
    paths.push(cwd.join(&file));
    paths
}

impl Conf {
    /// Parses ceph.conf text. Settings before the first section belong to `[global]`; a
    /// repeated section merges, a repeated key's last value wins (as in Ceph).
    pub fn parse(text: &str) -> Result<Conf, ConfError> {
        let lines = ini::lex(text).map_err(|(line, reason)| ConfError::Syntax {
            path: None,
            line,
            reason,
        })?;
        let mut conf = Conf::default();
        let mut current = "global".to_string();
        for line in lines {
            match line.item {
                Item::Section(name) => {
                    conf.sections.entry(name.clone()).or_insert_with(|| Section {
                        first_line: line.number,
                        ..Section::default()
                    });
                    current = name;
                }
                Item::Entry(raw_key, value) => {
                    let key = normalize_key(&raw_key);
                    let section = conf.sections.entry(current.clone()).or_insert_with(|| Section {
                        first_line: line.number,
                        ..Section::default()
                    });
                    let setting = Setting { key: key.clone(), raw_key, value, line: line.number };
                    section.settings.insert(key, setting);
                }
            }
        }
        Ok(conf)
    }

    /// Reads and parses one file; a missing file is [`ConfError::NotFound`].
    pub fn from_file(path: &Path) -> Result<Conf, ConfError> {
        let io = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfError::NotFound { path: path.to_path_buf() }
            } else {
                ConfError::Io { path: path.to_path_buf(), source }
            }
        };
        // Regular files only, bounded: `-c /dev/zero` is refused, not read forever.
        let bytes = crate::read_small_file(path, CONF_FILE_BYTES_MAX).map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            ConfError::Syntax { path: Some(path.to_path_buf()), line, reason: "invalid UTF-8" }
        })?;
        let mut conf = Conf::parse(&text).map_err(|e| match e {
            ConfError::Syntax { line, reason, .. } => {
                ConfError::Syntax { path: Some(path.to_path_buf()), line, reason }
            }
            other => other,
        })?;
        conf.path = Some(path.to_path_buf());
        Ok(conf)
    }

    /// Loads the config as librados does: `explicit` (`-c`; missing is an error naming it),
    /// else `$CEPH_CONF` (likewise), else the first existing of `/etc/ceph/$cluster.conf`,
    /// `~/.ceph/$cluster.conf`, `./$cluster.conf`; none of those is not an error (an empty
    /// config and `None`). Callers that ignore a missing file, as QEMU does without `conf=`,
    /// match [`ConfError::NotFound`].
    pub fn load(
        explicit: Option<&Path>,
        cluster: &str,
    ) -> Result<(Conf, Option<PathBuf>), ConfError> {
        Conf::load_from(explicit, cluster, &SearchEnv::from_process())
    }

    /// [`Conf::load`] with the environment given.
    pub fn load_from(
        explicit: Option<&Path>,
        cluster: &str,
        env: &SearchEnv,
    ) -> Result<(Conf, Option<PathBuf>), ConfError> {
        let named =
            explicit.map(Path::to_path_buf).or_else(|| env.ceph_conf.as_ref().map(PathBuf::from));
        let chosen = match named {
            Some(path) => Some(path),
            None => default_conf_paths(cluster, env.home.as_deref(), &env.cwd)
                .into_iter()
                .find(|p| p.exists()),
        };
        let mut conf = match &chosen {
            Some(path) => Conf::from_file(path)?,
            None => Conf::default(),
        };
        conf.cluster = cluster.to_string();
        Ok((conf, chosen))
    }

    /// The cluster name (`$cluster`).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Sets the cluster name used for `$cluster`.
    pub fn set_cluster(&mut self, cluster: &str) {
        self.cluster = cluster.to_string();
    }

    /// Sets the host name used for `$host` (default: this machine's short host name).
    pub fn set_host(&mut self, host: &str) {
        self.host = Some(host.to_string());
    }

    /// The file this config was read from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Section names in the file.
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        self.sections.keys().map(String::as_str)
    }

    /// Sections with their first line and settings, for [`crate::validate`].
    pub(crate) fn sections_with_lines(&self) -> Vec<(&str, usize, Vec<&Setting>)> {
        self.sections
            .iter()
            .map(|(name, s)| (name.as_str(), s.first_line, s.settings.values().collect()))
            .collect()
    }

    /// The raw value of `key` in exactly `section` (no precedence, no expansion).
    pub fn get_in(&self, section: &str, key: &str) -> Option<&str> {
        let key = normalize_key(key);
        self.sections.get(section)?.settings.get(&key).map(|s| s.value.as_str())
    }

    /// The value of `key` for `name`, unexpanded: override, then `[type.id]`, `[type]`,
    /// `[global]`.
    pub fn get_raw(&self, name: &EntityName, key: &str) -> Option<String> {
        let key = normalize_key(key);
        if let Some(value) = self.overrides.get(&key) {
            return Some(value.clone());
        }
        let kind = type_name(name.kind);
        let full = name.to_string();
        let found = [full.as_str(), kind, "global"]
            .into_iter()
            .find_map(|section| self.sections.get(section)?.settings.get(&key));
        match found {
            Some(setting) => Some(setting.value.clone()),
            None => self.central.get(&key).cloned(),
        }
    }

    /// Where `name`'s value of `key` comes from, with Ceph's names (`config show`'s SOURCE):
    /// `cmdline` (overrides), `file`, `mon` (the central config), or `default`.
    pub fn source(&self, name: &EntityName, key: &str) -> &'static str {
        let key = normalize_key(key);
        if self.overrides.contains_key(&key) {
            return "cmdline";
        }
        let full = name.to_string();
        let in_file = [full.as_str(), type_name(name.kind), "global"].into_iter().any(|section| {
            self.sections.get(section).is_some_and(|s| s.settings.contains_key(&key))
        });
        if in_file {
            "file"
        } else if self.central.contains_key(&key) {
            "mon"
        } else {
            "default"
        }
    }

    /// Sets the central config layer: `values` are the monitor's options for the entity
    /// (already merged: `[type.id]` > `[type]` > `global`), consulted after the file.
    pub fn set_central(&mut self, values: BTreeMap<String, String>) {
        self.central = values.into_iter().map(|(k, v)| (normalize_key(&k), v)).collect();
    }

    /// The central config layer (see [`Conf::set_central`]).
    pub fn central(&self) -> &BTreeMap<String, String> {
        &self.central
    }

    /// The value of `key` for `name` with metavariables expanded.
    pub fn get(&self, name: &EntityName, key: &str) -> Option<String> {
        let raw = self.get_raw(name, key)?;
        Some(self.expand(&raw, name, &self.cluster, 0))
    }

    /// The value set for `name`, else the option table's default (expanded; None if neither).
    pub fn get_or_default(&self, name: &EntityName, key: &str) -> Option<String> {
        if let Some(value) = self.get(name, key) {
            return Some(value);
        }
        let default = option_spec(key)?.default;
        (!default.is_empty()).then(|| self.expand(default, name, &self.cluster, 0))
    }

    /// Expands metavariables in `text` for `name` and `cluster`.
    pub fn expand_for(&self, text: &str, name: &EntityName, cluster: &str) -> String {
        self.expand(text, name, cluster, 0)
    }

    fn expand(&self, text: &str, name: &EntityName, cluster: &str, depth: u32) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (var, consumed) = if let Some(inner) = after.strip_prefix('{') {
                match inner.find('}') {
                    Some(end) => (&inner[..end], end + 2),
                    None => ("", 0),
                }
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            };
            match self.meta_value(var, name, cluster, depth) {
                Some(value) if !var.is_empty() => out.push_str(&value),
                _ => out.push_str(&rest[at..at + 1 + consumed]),
            }
            rest = &after[consumed..];
        }
        out.push_str(rest);
        out
    }

    fn meta_value(
        &self,
        var: &str,
        name: &EntityName,
        cluster: &str,
        depth: u32,
    ) -> Option<String> {
        Some(match var {
            "cluster" => cluster.to_string(),
            "type" => type_name(name.kind).to_string(),
            "id" | "num" => name.id.clone(),
            "name" => name.to_string(),
            "host" => self.host.clone().unwrap_or_else(local_short_hostname),
            "pid" => std::process::id().to_string(),
            _ if depth < EXPANSION_DEPTH_MAX => {
                let raw = self.get_raw(name, var).or_else(|| {
                    let default = option_spec(var)?.default;
                    (!default.is_empty()).then(|| default.to_string())
                })?;
                self.expand(&raw, name, cluster, depth + 1)
            }
            _ => return None,
        })
    }

    /// Where the value [`Conf::get_raw`] returns for `name` was set, for error messages:
    /// `"/etc/ceph/ceph.conf line 7, [global]"`, `"override"` (command line, `conf_set`), or
    /// None when the option is not set.
    pub fn origin(&self, name: &EntityName, key: &str) -> Option<String> {
        let key = normalize_key(key);
        if self.overrides.contains_key(&key) {
            return Some("override".to_string());
        }
        let full = name.to_string();
        let found = [full.as_str(), type_name(name.kind), "global"]
            .into_iter()
            .find_map(|section| Some((section, self.sections.get(section)?.settings.get(&key)?)));
        let Some((section, setting)) = found else {
            return self.central.contains_key(&key).then(|| "the central config (mon)".to_string());
        };
        let file = self.path.as_ref().map(|p| format!("{} ", p.display())).unwrap_or_default();
        Some(format!("{file}line {}, [{section}]", setting.line))
    }

    /// The option's value for `name` (set, else the table's default) parsed by `parse`; a
    /// value `parse` refuses is [`ConfError::BadValue`] naming the option, the value, the
    /// reason and where it was set ([`Conf::origin`]). None when neither set nor defaulted.
    pub fn get_parsed<T>(
        &self,
        name: &EntityName,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfError> {
        let Some(value) = self.get_or_default(name, key) else { return Ok(None) };
        parse(&value).map(Some).map_err(|reason| ConfError::BadValue {
            option: normalize_key(key),
            value,
            reason,
            at: Some(self.origin(name, key).unwrap_or_else(|| "default".to_string())),
        })
    }

    fn typed<T>(
        &self,
        name: &EntityName,
        key: &str,
        parse: fn(&str) -> Result<T, &'static str>,
    ) -> Result<Option<T>, ConfError> {
        self.get_parsed(name, key, |text| parse(text).map_err(str::to_string))
    }

    /// A boolean option (value set, else default).
    pub fn get_bool(&self, name: &EntityName, key: &str) -> Result<Option<bool>, ConfError> {
        self.typed(name, key, parse_bool)
    }

    /// An integer option (value set, else default).
    pub fn get_int(&self, name: &EntityName, key: &str) -> Result<Option<i64>, ConfError> {
        self.typed(name, key, parse_int)
    }

    /// A size option in bytes (value set, else default).
    pub fn get_size(&self, name: &EntityName, key: &str) -> Result<Option<u64>, ConfError> {
        self.typed(name, key, parse_size)
    }

    /// A decimal option (value set, else default).
    pub fn get_float(&self, name: &EntityName, key: &str) -> Result<Option<f64>, ConfError> {
        self.typed(name, key, parse_float)
    }

    /// Sets a runtime override that wins over the file for every entity (command-line
    /// options, librados' `rados_conf_set`). Unknown names are [`ConfError::UnknownOption`]
    /// (-ENOENT), values of the wrong type [`ConfError::BadValue`] (-EINVAL).
    pub fn set_override(&mut self, key: &str, value: &str) -> Result<(), ConfError> {
        let normalized = normalize_key(key);
        if !is_known(&normalized) {
            return Err(ConfError::UnknownOption { name: key.to_string() });
        }
        if let Some(spec) = option_spec(&normalized) {
            spec.kind.check(value).map_err(|reason| ConfError::BadValue {
                option: normalized.clone(),
                value: value.to_string(),
                reason: reason.to_string(),
                at: None,
            })?;
        }
        self.overrides.insert(normalized, value.to_string());
        Ok(())
    }

    /// The runtime overrides, by normalised key.
    pub fn overrides(&self) -> &BTreeMap<String, String> {
        &self.overrides
    }
}

/// `client`, `osd` or `mon`.
pub fn type_name(kind: EntityType) -> &'static str {
    match kind {
        EntityType::Client => "client",
        EntityType::Osd => "osd",
        EntityType::Mon => "mon",
    }
}

/// This machine's host name as the kernel has it (`uname -n`; `localhost` if unknown): the
/// host the daemons report for placement.
pub fn local_hostname() -> String {
    let full = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let full = full.trim();
    if full.is_empty() {
        "localhost".to_string()
    } else {
        full.to_string()
    }
}

/// This machine's host name up to the first dot (Ceph's `$host`).
pub fn local_short_hostname() -> String {
    let full = local_hostname();
    full.split('.').next().filter(|s| !s.is_empty()).unwrap_or("localhost").to_string()
}

#[cfg(test)]
mod tests;
