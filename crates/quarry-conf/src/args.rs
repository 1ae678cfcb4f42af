//! The command-line options every Ceph tool takes (`-c`, `--id`, `--name`, `-k`, `--cluster`,
//! `-m`), Ceph's generic `--OPTION VALUE` config options ([`extract_config_args`]),
//! `CEPH_ARGS`, and which entity a process authenticates as.
//!
//! `--id` takes the ID only. As in Ceph, `--id client.qemu` names the user
//! `client.client.qemu`: it is not rewritten, and authentication then fails with
//! "(13) Permission denied" because no such user exists. [`doubled_type_hint`] lets the
//! caller add a hint to that error message.

use std::ffi::OsString;
use std::path::PathBuf;

use quarry_types::{EntityName, EntityType};

use crate::conf::type_name;
use crate::{Conf, ConfError};

/// Options common to `rbd`, `rados`, `ceph` and the daemons. A plain struct that libraries
/// (librados' `conf_set`, the daemons' `from_conf`) fill in directly; with the `cli` feature
/// it is also a clap argument group (flatten it into a parser with `#[command(flatten)]`).
/// Not `global`: the `ceph` tool uses `-i FILE` in subcommands. Each option may repeat and
/// the last occurrence wins, as in Ceph (and as [`merge_ceph_args`] relies on).
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommonArgs {
    /// Configuration file (default: $CEPH_CONF, /etc/ceph/$cluster.conf, ~/.ceph/$cluster.conf, ./$cluster.conf).
    #[cfg_attr(
        feature = "cli",
        arg(short = 'c', long = "conf", value_name = "FILE", overrides_with = "conf")
    )]
    pub conf: Option<PathBuf>,
    /// User ID without the "client." prefix (e.g. qemu for client.qemu).
    #[cfg_attr(
        feature = "cli",
        arg(
            short = 'i',
            long = "id",
            visible_alias = "user",
            value_name = "ID",
            overrides_with = "id"
        )
    )]
    pub id: Option<String>,
    /// Full entity name TYPE.ID (e.g. client.qemu).
    #[cfg_attr(
        feature = "cli",
        arg(short = 'n', long = "name", value_name = "TYPE.ID", overrides_with = "name")
    )]
    pub name: Option<String>,
    /// Keyring file(s) to read the key from (comma-separated list allowed).
    #[cfg_attr(
        feature = "cli",
        arg(short = 'k', long = "keyring", value_name = "FILE", overrides_with = "keyring")
    )]
    pub keyring: Option<String>,
    /// Cluster name: selects /etc/ceph/$cluster.conf and keyrings.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "cluster",
            default_value = "ceph",
            value_name = "NAME",
            overrides_with = "cluster"
        )
    )]
    pub cluster: String,
    /// Monitor address(es), overriding mon_host from the configuration file.
    #[cfg_attr(
        feature = "cli",
        arg(
            short = 'm',
            long = "mon-host",
            alias = "mon_host",
            value_name = "ADDR",
            overrides_with = "mon_host"
        )
    )]
    pub mon_host: Option<String>,
    /// Config options given on the command line as `--NAME VALUE` / `--NAME=VALUE` (Ceph's
    /// generic form, e.g. `--debug-ms 1`, `--client-mount-timeout 5`), taken out of the
    /// arguments before parsing by [`extract_config_args`]; applied as overrides.
    #[cfg_attr(feature = "cli", arg(skip))]
    pub config_overrides: Vec<(String, String)>,
}

impl Default for CommonArgs {
    fn default() -> Self {
        CommonArgs {
            conf: None,
            id: None,
            name: None,
            keyring: None,
            cluster: "ceph".to_string(),
            mon_host: None,
            config_overrides: Vec::new(),
        }
    }
}

impl CommonArgs {
    /// Applies `-k` and `-m` to `conf` as overrides of `keyring` and `mon_host` (as Ceph turns
    /// command-line options into config values).
    pub fn apply_overrides(&self, conf: &mut Conf) -> Result<(), ConfError> {
        for (key, value) in &self.config_overrides {
            conf.set_override(key, value)?;
        }
        if let Some(keyring) = &self.keyring {
            conf.set_override("keyring", keyring)?;
        }
        if let Some(mon_host) = &self.mon_host {
            conf.set_override("mon_host", mon_host)?;
        }
        Ok(())
    }

    /// Loads the config these options select ([`Conf::load`]) and applies the overrides.
    pub fn load_conf(&self) -> Result<(Conf, Option<PathBuf>), ConfError> {
        let (mut conf, path) = Conf::load(self.conf.as_deref(), &self.cluster)?;
        self.apply_overrides(&mut conf)?;
        Ok((conf, path))
    }
}

/// The entity a client tool authenticates as: `--name TYPE.ID`, `--id ID` (=> `client.ID`),
/// default `client.admin`.
pub fn resolve_entity(args: &CommonArgs) -> Result<EntityName, ConfError> {
    resolve_entity_as(args, EntityType::Client)
}

/// [`resolve_entity`] for a daemon of type `kind`: `--id 3` => `osd.3`. Only clients have a
/// default id (`admin`).
pub fn resolve_entity_as(args: &CommonArgs, kind: EntityType) -> Result<EntityName, ConfError> {
    let from_id = match &args.id {
        Some(id) => {
            let full = format!("{}.{id}", type_name(kind));
            Some(EntityName::parse(&full).ok_or(ConfError::BadEntityName { name: full })?)
        }
        None => None,
    };
    let from_name = match &args.name {
        Some(name) => Some(
            EntityName::parse(name)
                .ok_or_else(|| ConfError::BadEntityName { name: name.clone() })?,
        ),
        None => None,
    };
    match (from_id, from_name) {
        (Some(a), Some(b)) if a != b => Err(ConfError::ConflictingIdentity {
            id: args.id.clone().unwrap_or_default(),
            name: args.name.clone().unwrap_or_default(),
        }),
        (Some(entity), _) | (None, Some(entity)) => Ok(entity),
        (None, None) if kind == EntityType::Client => Ok(EntityName::client("admin")),
        (None, None) => Err(ConfError::MissingId { kind: type_name(kind) }),
    }
}

/// A hint for an authentication failure of an entity like `client.client.qemu` (what
/// `--id client.qemu` names): `Some("--id takes the ID only: ...")`, else None.
pub fn doubled_type_hint(name: &EntityName) -> Option<String> {
    let kind = type_name(name.kind);
    let inner = name.id.strip_prefix(kind)?.strip_prefix('.')?;
    Some(format!(
        "note: {name} was named by --id {kind}.{inner}; --id takes the ID only: use --id {inner} (or --name {kind}.{inner})"
    ))
}

/// Splits text into words like a POSIX shell (no expansions): whitespace separates, single
/// quotes keep everything, double quotes keep everything but `\"`, `\\`, `\$`, `` \` `` escapes,
/// a backslash outside quotes escapes the next character. An unterminated quote runs to the end.
pub fn split_args(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                    word.push(d);
                }
            }
            '"' => {
                in_word = true;
                while let Some(d) = chars.next() {
                    match d {
                        '"' => break,
                        '\\' if matches!(chars.peek(), Some('"' | '\\' | '$' | '`')) => {
                            word.extend(chars.next());
                        }
                        _ => word.push(d),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// `$CEPH_ARGS` split like a shell would ([`split_args`]); empty when unset.
pub fn ceph_args_env() -> Vec<String> {
    std::env::var("CEPH_ARGS").map(|v| split_args(&v)).unwrap_or_default()
}

/// Inserts `CEPH_ARGS` words into a command line as Ceph does: program name, the env's
/// options, the command line's options, then `--` and the command line's and env's arguments
/// after their `--`. With clap's last-wins options, the command line overrides `CEPH_ARGS`.
pub fn merge_ceph_args(argv: Vec<OsString>, env_args: &[String]) -> Vec<OsString> {
    let mut argv = argv.into_iter();
    let program = argv.next();
    let rest: Vec<OsString> = argv.collect();
    let split = |v: Vec<OsString>| -> (Vec<OsString>, Option<Vec<OsString>>) {
        match v.iter().position(|a| a == "--") {
            Some(at) => (v[..at].to_vec(), Some(v[at + 1..].to_vec())),
            None => (v, None),
        }
    };
    let (options, arguments) = split(rest);
    let (env_options, env_arguments) = split(env_args.iter().map(OsString::from).collect());
    let mut out: Vec<OsString> = program.into_iter().collect();
    out.extend(env_options);
    out.extend(options);
    if arguments.is_some() || env_arguments.is_some() {
        out.push("--".into());
        out.extend(arguments.unwrap_or_default());
        out.extend(env_arguments.unwrap_or_default());
    }
    out
}

/// Ceph's generic flags without a value, accepted and ignored: Quarry's tools never read
/// their configuration from the monitors, and log only to stderr.
const IGNORED_FLAGS: &[&str] =
    &["no_mon_config", "no_config_file", "log_to_stderr", "err_to_stderr"];

/// Takes Ceph's generic command-line options out of `args` (a tool's arguments, program
/// first), as Ceph's tools accept them whatever the command: every config option as
/// `--NAME VALUE` or `--NAME=VALUE` (dashes or underscores: `--debug-ms 1`, `--log-file F`,
/// `--admin-socket P`, `--rados-osd-op-timeout 5`; any name [`crate::is_known`] accepts),
/// the ceph CLI's `--connect-timeout N` (as `client_mount_timeout`), and the flags
/// [`IGNORED_FLAGS`] (`--no-mon-config`). Options the tool's own parser defines (`keep`,
/// their long names) stay, and so does everything after `--`. Returns the remaining
/// arguments and the `(option, value)` pairs, for [`CommonArgs::config_overrides`].
pub fn extract_config_args(
    args: Vec<OsString>,
    keep: &[String],
) -> (Vec<OsString>, Vec<(String, String)>) {
    let mut out = Vec::with_capacity(args.len());
    let mut overrides = Vec::new();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str().and_then(|a| a.strip_prefix("--")) else {
            out.push(arg);
            continue;
        };
        if text.is_empty() {
            // `--`: the rest are the command's own words.
            out.push(arg);
            out.extend(args.by_ref());
            break;
        }
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (text, None),
        };
        if keep.iter().any(|k| k == name) {
            out.push(arg);
            continue;
        }
        let key = crate::normalize_key(name);
        if IGNORED_FLAGS.contains(&key.as_str()) && inline.is_none() {
            continue;
        }
        let key = if key == "connect_timeout" { "client_mount_timeout".to_string() } else { key };
        if !crate::is_known(&key) {
            out.push(arg);
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => match args.peek().and_then(|v| v.to_str()) {
                Some(value) => {
                    let value = value.to_string();
                    args.next();
                    value
                }
                // No value: left for the parser to report.
                None => {
                    out.push(arg);
                    continue;
                }
            },
        };
        overrides.push((key, value));
    }
    (out, overrides)
}

/// This process's arguments with `$CEPH_ARGS` merged in ([`merge_ceph_args`]): pass to
/// clap's `parse_from`.
pub fn args_with_ceph_args_env() -> Vec<OsString> {
    merge_ceph_args(std::env::args_os().collect(), &ceph_args_env())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "cli")]
    #[derive(clap::Parser, Debug)]
    struct Tool {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(short = 'p', long = "pool")]
        pool: Option<String>,
        rest: Vec<String>,
    }

    #[cfg(feature = "cli")]
    fn parse(args: &[&str]) -> CommonArgs {
        use clap::Parser as _;
        let argv = std::iter::once("rbd").chain(args.iter().copied());
        Tool::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}")).common
    }

    #[cfg(feature = "cli")]
    #[test]
    fn ceph_option_spellings_parse() {
        let a = parse(&[
            "-c",
            "/etc/ceph/x.conf",
            "--id",
            "qemu",
            "-k",
            "/k",
            "--cluster",
            "b",
            "-m",
            "1.2.3.4",
        ]);
        assert_eq!(a.conf, Some(PathBuf::from("/etc/ceph/x.conf")));
        assert_eq!(a.id.as_deref(), Some("qemu"));
        assert_eq!(a.keyring.as_deref(), Some("/k"));
        assert_eq!(a.cluster, "b");
        assert_eq!(a.mon_host.as_deref(), Some("1.2.3.4"));
        assert_eq!(parse(&["--user", "qemu"]).id.as_deref(), Some("qemu"));
        assert_eq!(parse(&["-i", "qemu"]).id.as_deref(), Some("qemu"));
        assert_eq!(parse(&["--conf=/c"]).conf, Some(PathBuf::from("/c")));
        assert_eq!(parse(&["-n", "client.a"]).name.as_deref(), Some("client.a"));
        assert_eq!(parse(&["--name=osd.3"]).name.as_deref(), Some("osd.3"));
        assert_eq!(parse(&["--mon_host", "h"]).mon_host.as_deref(), Some("h"));
        assert_eq!(parse(&["--mon-host", "h"]).mon_host.as_deref(), Some("h"));
        assert_eq!(parse(&["--keyring=/a,/b"]).keyring.as_deref(), Some("/a,/b"));
        assert_eq!(parse(&[]), CommonArgs::default());
        let last = parse(&["--id", "env", "-p", "rbd", "--id", "cli"]);
        assert_eq!(last.id.as_deref(), Some("cli"), "the last occurrence wins");
    }

    #[test]
    fn generic_config_options_are_taken_out() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let keep = vec!["pool".to_string(), "conf".to_string()];
        let (rest, overrides) = extract_config_args(
            os(&[
                "rados",
                "--no-mon-config",
                "--debug-ms",
                "1",
                "--pool",
                "rbd",
                "--debug_osd=5/5",
                "--connect-timeout",
                "7",
                "ls",
                "--conf",
                "c",
                "--not-an-option",
                "x",
                "--",
                "--debug-ms",
                "2",
            ]),
            &keep,
        );
        assert_eq!(
            rest,
            os(&[
                "rados",
                "--pool",
                "rbd",
                "ls",
                "--conf",
                "c",
                "--not-an-option",
                "x",
                "--",
                "--debug-ms",
                "2"
            ])
        );
        let expected = [("debug_ms", "1"), ("debug_osd", "5/5"), ("client_mount_timeout", "7")];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(overrides, expected);
        // A known option without its value is left for the parser to report.
        let (rest, overrides) = extract_config_args(os(&["rbd", "--log-file"]), &keep);
        assert_eq!((rest, overrides), (os(&["rbd", "--log-file"]), vec![]));
    }

    fn with(id: Option<&str>, name: Option<&str>) -> CommonArgs {
        CommonArgs {
            id: id.map(String::from),
            name: name.map(String::from),
            ..CommonArgs::default()
        }
    }

    #[test]
    fn entities_resolve_like_ceph() {
        assert_eq!(resolve_entity(&with(None, None)).unwrap(), EntityName::client("admin"));
        assert_eq!(resolve_entity(&with(Some("qemu"), None)).unwrap(), EntityName::client("qemu"));
        assert_eq!(
            resolve_entity(&with(None, Some("client.qemu"))).unwrap(),
            EntityName::client("qemu")
        );
        assert_eq!(resolve_entity(&with(None, Some("osd.3"))).unwrap(), EntityName::osd(3));
        assert_eq!(
            resolve_entity(&with(Some("qemu"), Some("client.qemu"))).unwrap(),
            EntityName::client("qemu")
        );
        assert_eq!(
            resolve_entity_as(&with(Some("3"), None), EntityType::Osd).unwrap(),
            EntityName::osd(3)
        );
        assert!(matches!(
            resolve_entity_as(&with(None, None), EntityType::Osd),
            Err(ConfError::MissingId { kind: "osd" })
        ));

        // Ceph does not special-case this: it is the (non-existent) user client.client.qemu.
        let doubled = resolve_entity(&with(Some("client.qemu"), None)).unwrap();
        assert_eq!(doubled.to_string(), "client.client.qemu");
        let hint = doubled_type_hint(&doubled).unwrap();
        assert!(hint.contains("--id qemu"), "{hint}");
        assert_eq!(doubled_type_hint(&EntityName::client("qemu")), None);
        assert_eq!(doubled_type_hint(&EntityName::client("clientele")), None);

        for (id, name) in [
            (None, Some("qemu")),
            (None, Some("bogus.x")),
            (Some("a b"), None),
            (None, Some("client.")),
        ] {
            let err = resolve_entity(&with(id, name)).unwrap_err();
            assert!(matches!(err, ConfError::BadEntityName { .. }), "{id:?} {name:?}: {err}");
        }
        let err = resolve_entity(&with(Some("a"), Some("client.b"))).unwrap_err();
        assert!(matches!(err, ConfError::ConflictingIdentity { .. }), "{err}");
    }

    #[test]
    fn ceph_args_split_like_a_shell() {
        assert_eq!(split_args("--id qemu  -m 10.0.0.1"), ["--id", "qemu", "-m", "10.0.0.1"]);
        assert_eq!(split_args("  "), Vec::<String>::new());
        assert_eq!(
            split_args("--keyring '/a b/k' -c \"/x y/c\""),
            ["--keyring", "/a b/k", "-c", "/x y/c"]
        );
        assert_eq!(split_args("a\\ b \"q\\\"x\" 'n\\o' \"\""), ["a b", "q\"x", "n\\o", ""]);
        assert_eq!(split_args("pre'mid'post x"), ["premidpost", "x"]);
        assert_eq!(split_args("'unterminated rest"), ["unterminated rest"]);
        assert_eq!(split_args("\t--id\nqemu\t"), ["--id", "qemu"]);
    }

    #[test]
    fn ceph_args_go_before_command_line_options_so_the_command_line_wins() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let env = split_args("--id envuser -m 1.1.1.1");
        let merged = merge_ceph_args(os(&["rbd", "--id", "cli", "ls"]), &env);
        assert_eq!(merged, os(&["rbd", "--id", "envuser", "-m", "1.1.1.1", "--id", "cli", "ls"]));
        #[cfg(feature = "cli")]
        {
            use clap::Parser as _;
            let parsed = Tool::try_parse_from(&merged).unwrap();
            assert_eq!(parsed.common.id.as_deref(), Some("cli"));
            assert_eq!(parsed.common.mon_host.as_deref(), Some("1.1.1.1"));
        }

        let dashed =
            merge_ceph_args(os(&["rados", "-p", "x", "--", "-obj"]), &split_args("--id e -- tail"));
        assert_eq!(dashed, os(&["rados", "--id", "e", "-p", "x", "--", "-obj", "tail"]));
        assert_eq!(merge_ceph_args(os(&["rbd"]), &[]), os(&["rbd"]));
    }
}
