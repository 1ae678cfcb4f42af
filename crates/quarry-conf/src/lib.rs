//! ceph.conf parsing, CEPH_ARGS and the typed option table.
//!
//! # What this crate owns
//! Quarry's configuration is Ceph's, because users bring theirs: `ceph.conf` in Ceph's INI
//! dialect, `CEPH_CONF`, `CEPH_ARGS`, `-c/--conf`, `--id/--user`, `--name`, `-k/--keyring`,
//! `--cluster`, `-m/--mon-host`, keyring search paths, and `mon_host` in all its forms. It is
//! pure and synchronous (it reads files, never the network) and depends only on
//! `quarry-types` (and, with the `cli` feature, clap); daemons, clients, the CLI and the C
//! ABI call it.
//!
//! - [`Conf`]: a parsed file; [`Conf::load`] searches like librados; [`Conf::get`] looks a
//!   key up for an entity (`[type.id]` > `[type]` > `[global]`, runtime overrides first),
//!   normalising key names (`mon host` = `mon_host` = `mon-host`) and expanding
//!   metavariables (`$cluster`, `$type`, `$id`, `$name`, `$host`, `$pid`, `$option`);
//!   typed getters ([`Conf::get_int`], [`Conf::get_parsed`]) refuse a bad value with
//!   [`ConfError::BadValue`] naming the option, the value and where it was set
//!   ([`Conf::origin`]: file, line, section).
//! - [`CommonArgs`] (a plain struct; a clap argument group with the `cli` feature),
//!   [`resolve_entity`], [`ceph_args_env`], [`merge_ceph_args`].
//! - [`keyring_search_paths`], [`key_source`]: where an entity's key comes from.
//! - [`parse_mon_host`]: monitor addresses.
//! - [`read_small_file`]: how every file a user names as configuration (ceph.conf, keyrings,
//!   key files) is read: regular files only, at most [`SMALL_FILE_BYTES_MAX`] (4 MiB);
//!   `/dev/zero`, a FIFO or a directory is refused at once, naming what it is.
//! - [`OPTIONS`]: every option some Quarry code reads (and only those), typed, with defaults,
//!   docs and readers; [`IGNORED_OPTIONS`] and [`IGNORED_PREFIXES`]: Ceph options accepted
//!   and ignored (including `rbd_*` options other than the cache's, and `debug_*`);
//!   [`validate`] warns about unknown (misspelt) keys by name with the option they resemble,
//!   and about values of the wrong type; the daemons and `quarry up` log its warnings at
//!   start; [`is_known`] answers `rados_conf_set` (-ENOENT).
//!
//! Each reader turns the options into its own settings: `quarry_client::ClientConfig`,
//! `quarry_mon::MonConfig` and `quarry_osd::OsdConfig` each have a `from_conf(conf, args, ..)`.
//!
//! The annotated example `docs/ceph.conf.example` lists every option in [`OPTIONS`]; a test
//! parses and validates it, so the table and the example cannot drift apart.
//!
//! # Decisions
//! - `--id client.qemu` names `client.client.qemu`, exactly as in Ceph (authentication then
//!   fails with "(13) Permission denied"); [`doubled_type_hint`] explains it in that error.
//! - A file named by `-c` or `CEPH_CONF` must exist; the default search finding nothing is
//!   not an error (librados ignores ENOENT there).
//! - Host names in `mon_host` are returned unresolved ([`parse_mon_host_entries`]): DNS is
//!   network I/O and belongs to the client.
//!
//! # Dependencies
//! `clap` (derive), only with the `cli` feature (off by default), for [`CommonArgs`] as a
//! command-line group: the workspace's CLI parser, kept optional so libraries built on
//! quarry-client (librados.so) do not link it; `thiserror` for [`ConfError`]. The INI reader is hand-written (about 150 lines) because Ceph's dialect
//! (comments anywhere, `\` continuations, key normalisation, last value wins) matches no
//! INI crate.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod args;
mod conf;
mod error;
pub mod ini;
mod keys;
mod mon_host;
mod options;
mod small_file;

pub use args::{
    args_with_ceph_args_env, ceph_args_env, doubled_type_hint, extract_config_args,
    merge_ceph_args, resolve_entity, resolve_entity_as, split_args, CommonArgs,
};
pub use conf::{
    default_conf_paths, local_hostname, local_short_hostname, type_name, Conf, SearchEnv,
    CONF_FILE_BYTES_MAX,
};
pub use error::ConfError;
pub use keys::{find_keyring, key_source, keyring_search_paths, read_keyfile, KeySource};
pub use mon_host::{
    parse_mon_host, parse_mon_host_entries, AddrProto, MonAddr, MonHostName, MON_PORT_DEFAULT,
    MON_PORT_V2_DEFAULT,
};
pub use options::{
    is_known, option_spec, parse_bool, parse_float, parse_int, parse_size, validate, OptionKind,
    OptionSpec, Problem, Reader, Warning, IGNORED_OPTIONS, IGNORED_PREFIXES, KEYRING_DEFAULT,
    OPTIONS,
};
pub use small_file::{read_small_file, small_file_errno, SMALL_FILE_BYTES_MAX};

/// The full-disk thresholds for `name` (`mon_osd_nearfull_ratio`, `mon_osd_full_ratio`,
/// `osd_failsafe_full_ratio`; the monitor and the OSDs read the same three). A value that is
/// not a number in (0, 1], or three that are out of order, is a `BadValue` naming the option.
pub fn full_ratios(
    conf: &Conf,
    name: &quarry_types::EntityName,
) -> Result<quarry_types::FullRatios, ConfError> {
    let ratio = |text: &str| match parse_float(text) {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err("expected a number in (0, 1]".to_string()),
    };
    let mut ratios = quarry_types::FullRatios::default();
    if let Some(v) = conf.get_parsed(name, "mon_osd_nearfull_ratio", ratio)? {
        ratios.nearfull = v;
    }
    if let Some(v) = conf.get_parsed(name, "mon_osd_full_ratio", ratio)? {
        ratios.full = v;
    }
    if let Some(v) = conf.get_parsed(name, "osd_failsafe_full_ratio", ratio)? {
        ratios.failsafe = v;
    }
    if let Err(reason) = ratios.validate() {
        // Name the option the order check failed on (the full ratio sits between the others).
        let value = conf.get(name, "mon_osd_full_ratio").unwrap_or_else(|| ratios.full.to_string());
        return Err(ConfError::BadValue {
            option: "mon_osd_full_ratio".to_string(),
            value,
            reason,
            at: Some(conf.origin(name, "mon_osd_full_ratio").unwrap_or_else(|| "default".into())),
        });
    }
    Ok(ratios)
}

/// The connection and memory budget of daemon `name` (`osd.N` or `mon.X`, of `kind`): the
/// options of [`quarry_types::ServerLimits`] (docs/security.md, "Limits"), each set or
/// defaulted. A value that does not parse, or is zero where one is needed, is a `BadValue`
/// naming the option.
pub fn server_limits(
    conf: &Conf,
    name: &quarry_types::EntityName,
    kind: quarry_types::DaemonKind,
) -> Result<quarry_types::ServerLimits, ConfError> {
    use quarry_types::DaemonKind;
    let count = |text: &str| match parse_int(text) {
        Ok(v) if v >= 1 => Ok(v as usize),
        _ => Err("expected a whole number of at least 1".to_string()),
    };
    let bytes = |text: &str| match parse_size(text) {
        Ok(v) if v >= 1 => Ok(v),
        Ok(_) => Err("expected at least 1 byte".to_string()),
        Err(e) => Err(e.to_string()),
    };
    let seconds = |text: &str| match parse_float(text) {
        Ok(v) if v > 0.0 && v < 1e9 => Ok(std::time::Duration::from_secs_f64(v)),
        _ => Err("expected a positive number of seconds".to_string()),
    };
    let mut l = quarry_types::ServerLimits::defaults(kind);
    if let Some(v) = conf.get_parsed(name, "ms_max_connections", count)? {
        l.max_connections = v;
    }
    if let Some(v) = conf.get_parsed(name, "ms_max_connections_per_entity", count)? {
        l.max_connections_per_entity = v;
    }
    let (client, daemon) = match kind {
        DaemonKind::Osd => ("osd_client_message_size_cap", "ms_dispatch_throttle_bytes"),
        DaemonKind::Mon => ("mon_client_bytes", "mon_daemon_bytes"),
    };
    if let Some(v) = conf.get_parsed(name, client, bytes)? {
        l.client_request_bytes = v;
    }
    if let Some(v) = conf.get_parsed(name, daemon, bytes)? {
        l.daemon_request_bytes = v;
    }
    if kind == DaemonKind::Osd {
        if let Some(v) = conf.get_parsed(name, "osd_client_message_cap", count)? {
            l.requests_per_connection = v;
        }
    }
    if let Some(v) = conf.get_parsed(name, "ms_reply_queue_bytes", bytes)? {
        l.reply_queue_bytes = v;
    }
    if let Some(v) = conf.get_parsed(name, "ms_reply_queue_bytes_per_connection", bytes)? {
        l.reply_queue_bytes_per_connection = v;
    }
    if let Some(v) = conf.get_parsed(name, "ms_tcp_read_timeout", seconds)? {
        l.idle_timeout = v;
    }
    if let Some(v) = conf.get_parsed(name, "ms_handshake_timeout", seconds)? {
        l.handshake_timeout = v;
    }
    let target = match kind {
        DaemonKind::Osd => "osd_memory_target",
        DaemonKind::Mon => "mon_memory_target",
    };
    if let Some(v) = conf.get_parsed(name, target, bytes)? {
        l.memory_target = v;
    }
    Ok(l)
}

/// Ceph's key normalisation, extended as Quarry documents: trimmed, and every run of spaces,
/// tabs, dashes and underscores becomes one `_` (`mon host` = `mon-host` = `mon_host`).
pub fn normalize_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut pending_separator = false;
    for c in key.trim().chars() {
        if c.is_whitespace() || c == '-' || c == '_' {
            pending_separator = true;
        } else {
            if pending_separator && !out.is_empty() {
                out.push('_');
            }
            pending_separator = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod example {
    //! The annotated example configuration stays valid and complete.

    use super::*;

    const EXAMPLE: &str = include_str!("../../../docs/ceph.conf.example");

    /// The example with every `;option = value` line switched on.
    fn uncommented() -> String {
        EXAMPLE.lines().map(|l| l.strip_prefix(';').unwrap_or(l)).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn example_conf_parses_and_validates_without_warnings() {
        for text in [EXAMPLE.to_string(), uncommented()] {
            let conf = Conf::parse(&text).unwrap();
            let warnings = validate(&conf);
            assert!(
                warnings.is_empty(),
                "{}",
                warnings.iter().map(|w| w.to_string() + "\n").collect::<String>()
            );
        }
    }

    #[test]
    fn example_conf_shows_every_option_quarry_reads() {
        let conf = Conf::parse(&uncommented()).unwrap();
        let mut set: Vec<String> = Vec::new();
        for section in conf.sections() {
            for spec in OPTIONS {
                if conf.get_in(section, spec.name).is_some() {
                    set.push(spec.name.to_string());
                }
            }
        }
        for spec in OPTIONS {
            assert!(
                set.iter().any(|s| s == spec.name),
                "docs/ceph.conf.example lacks {}",
                spec.name
            );
        }
        let uses_debug = conf.sections().any(|s| {
            ["debug_rbd", "debug_ms", "debug_auth"].iter().any(|k| conf.get_in(s, k).is_some())
        });
        assert!(uses_debug, "the example shows a debug_* option");
    }

    #[test]
    fn validate_names_misspelt_keys_bad_values_and_sections() {
        let text = "[global]\nmon_host = 1.2.3.4\nfsid = x\n[client]\nrbd_cahce = true\nosd pool default size = huge\n[cilent]\nx = 1\n[osd.3]\nosd journal size = 1024\nmon host = 1.2.3.4:x\n";
        let warnings = validate(&Conf::parse(text).unwrap());
        let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 5, "{shown:#?}");
        assert_eq!(
            shown[0],
            "line 5: unknown option 'rbd_cahce' in [client] (did you mean 'rbd_cache'?)"
        );
        assert!(
            shown[1].contains("invalid value 'huge' for 'osd pool default size'"),
            "{}",
            shown[1]
        );
        assert_eq!(shown[2], "line 7: unknown section [cilent]");
        assert_eq!(shown[3], "line 8: unknown option 'x' in [cilent]");
        assert!(
            shown[4].starts_with("line 11: invalid value '1.2.3.4:x' for 'mon host'"),
            "{}",
            shown[4]
        );
    }

    #[test]
    fn keys_normalise() {
        for (raw, want) in [
            ("mon host", "mon_host"),
            ("mon-host", "mon_host"),
            ("  mon \t host ", "mon_host"),
            ("rbd__cache", "rbd_cache"),
            ("-x-", "x"),
            ("", ""),
        ] {
            assert_eq!(normalize_key(raw), want, "{raw:?}");
        }
    }

    mod robustness {
        use proptest::prelude::*;

        use crate::*;

        proptest! {
            #[test]
            fn parsers_never_panic(text in "\\PC{0,160}") {
                if let Ok(conf) = Conf::parse(&text) {
                    let _ = validate(&conf);
                    let name = quarry_types::EntityName::client("admin");
                    for section in conf.sections().map(str::to_string).collect::<Vec<_>>() {
                        let _ = conf.get_in(&section, "x");
                    }
                    let _ = conf.get(&name, "mon_host");
                    let _ = conf.expand_for(&text, &name, "ceph");
                }
                let _ = parse_mon_host(&text);
                let _ = split_args(&text);
                let _ = parse_size(&text);
            }

            #[test]
            fn mon_host_like_text_never_panics(text in "[\\[\\]v12:.,;/ 0-9a-f]{0,40}") {
                let _ = parse_mon_host(&text);
            }
        }
    }
}

#[cfg(test)]
mod full_ratio_tests {
    use super::*;
    use quarry_types::{EntityName, EntityType, FullRatios};

    fn osd() -> EntityName {
        EntityName { kind: EntityType::Osd, id: "0".into() }
    }

    #[test]
    fn defaults_overrides_and_bad_values() {
        let conf = Conf::parse("[global]\n").unwrap();
        assert_eq!(full_ratios(&conf, &osd()).unwrap(), FullRatios::default());
        let conf =
            Conf::parse("[global]\nmon osd full ratio = 0.9\nmon_osd_nearfull_ratio = 0.8\n")
                .unwrap();
        let r = full_ratios(&conf, &osd()).unwrap();
        assert_eq!((r.nearfull, r.full, r.failsafe), (0.8, 0.9, 0.97));
        let conf = Conf::parse("[global]\nmon_osd_full_ratio = 95\n").unwrap();
        let e = full_ratios(&conf, &osd()).unwrap_err().to_string();
        assert!(e.contains("mon_osd_full_ratio") && e.contains("(0, 1]"), "{e}");
        let conf = Conf::parse("[global]\nmon_osd_full_ratio = 0.99\n").unwrap();
        let e = full_ratios(&conf, &osd()).unwrap_err().to_string();
        assert!(e.contains("out of order"), "{e}");
    }

    #[test]
    fn server_limits_defaults_match_the_option_table_and_read_overrides() {
        use quarry_types::{DaemonKind, ServerLimits};
        let conf = Conf::parse("[global]\n").unwrap();
        let mon = EntityName { kind: quarry_types::EntityType::Mon, id: "a".into() };
        assert_eq!(
            server_limits(&conf, &osd(), DaemonKind::Osd).unwrap(),
            ServerLimits::defaults(DaemonKind::Osd),
            "the table's defaults are ServerLimits::defaults"
        );
        assert_eq!(
            server_limits(&conf, &mon, DaemonKind::Mon).unwrap(),
            ServerLimits::defaults(DaemonKind::Mon)
        );
        let table = |name: &str| OPTIONS.iter().find(|o| o.name == name).unwrap().default;
        assert_eq!(
            parse_size(table("osd_memory_target")).unwrap(),
            ServerLimits::OSD_MEMORY_TARGET_DEFAULT
        );
        let text = "[global]\nms max connections = 10\n[osd]\nosd_client_message_size_cap = 8M\nms_tcp_read_timeout = 2.5\nosd_memory_target = 64M\n[mon]\nmon_client_bytes = 1M\n";
        let conf = Conf::parse(text).unwrap();
        let l = server_limits(&conf, &osd(), DaemonKind::Osd).unwrap();
        assert_eq!((l.max_connections, l.client_request_bytes), (10, 8 << 20));
        assert_eq!(l.memory_target, 64 << 20);
        assert_eq!((l.store_cache_bytes(), l.wal_cache_bytes()), (8 << 20, 4 << 20));
        assert_eq!(l.meta_cache_bytes(), 12 << 20);
        assert_eq!(l.idle_timeout, std::time::Duration::from_millis(2500));
        let l = server_limits(&conf, &mon, DaemonKind::Mon).unwrap();
        assert_eq!((l.max_connections, l.client_request_bytes), (10, 1 << 20));
        let conf = Conf::parse("[global]\nms_max_connections_per_entity = 0\n").unwrap();
        let e = server_limits(&conf, &osd(), DaemonKind::Osd).unwrap_err().to_string();
        assert!(e.contains("ms_max_connections_per_entity") && e.contains("at least 1"), "{e}");
    }
}

/// The central config's values for `name` from the sections the monitor sent
/// (`global`, `[type]`, `[type.id]`; the most specific wins), keys normalised.
pub fn central_for(
    sections: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    name: &quarry_types::EntityName,
) -> std::collections::BTreeMap<String, String> {
    let full = name.to_string();
    let mut out = std::collections::BTreeMap::new();
    for section in ["global", type_name(name.kind), full.as_str()] {
        if let Some(options) = sections.get(section) {
            for (key, value) in options {
                out.insert(normalize_key(key), value.clone());
            }
        }
    }
    out
}

/// Options a running Quarry daemon applies when they change (`ceph config set`, `ceph tell
/// … config set|injectargs`): the `debug_<subsystem>` levels and the OSD's own full-disk
/// thresholds (`mon_osd_nearfull_ratio`, `mon_osd_full_ratio`, `osd_failsafe_full_ratio`,
/// which its write check reads) and `osd_write_once_min_bytes`. Every other option is read at start (`config dump|get`
/// mark them `RO`); a central value of one is applied at the next start.
pub fn runtime_option(name: &str) -> bool {
    let name = normalize_key(name);
    (name.starts_with("debug_") && name.len() > "debug_".len())
        || matches!(
            name.as_str(),
            "mon_osd_nearfull_ratio"
                | "mon_osd_full_ratio"
                | "osd_failsafe_full_ratio"
                | "osd_write_once_min_bytes"
        )
}
