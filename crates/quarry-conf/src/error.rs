//! The crate's error type. Each variant names what was wrong (path, line, option, token), so
//! the CLI and the C ABI can print one line a person understands and map it to an errno
//! (NotFound -> ENOENT, UnknownOption -> ENOENT as librados' `rados_conf_set`, the rest EINVAL).

use std::path::PathBuf;

/// Why quarry-conf refused something.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// A config file named explicitly (`-c`, `CEPH_CONF`) does not exist.
    #[error("cannot open config file {path}: (2) No such file or directory")]
    NotFound {
        /// The file that was asked for.
        path: PathBuf,
    },

    /// A file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A config file does not parse.
    #[error("{}line {line}: {reason}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Syntax {
        /// The file, when parsed from one.
        path: Option<PathBuf>,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },

    /// `--name` is not `TYPE.ID` with a type Quarry knows (client, osd, mon).
    #[error("invalid entity name '{name}' (expected TYPE.ID, e.g. client.admin)")]
    BadEntityName {
        /// The name as given.
        name: String,
    },

    /// `--id` and `--name` name different entities.
    #[error("--id {id} and --name {name} name different entities")]
    ConflictingIdentity {
        /// The `--id` value.
        id: String,
        /// The `--name` value.
        name: String,
    },

    /// A daemon was started without an id (`quarry osd` needs `-i N`).
    #[error("no id given for a {kind} (use --id or --name)")]
    MissingId {
        /// The daemon type.
        kind: &'static str,
    },

    /// A `mon_host` token is not an address.
    #[error("bad mon_host entry '{token}': {reason}")]
    BadMonHost {
        /// The offending token.
        token: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An option name Quarry and Ceph do not know (librados answers -ENOENT).
    #[error("unknown option '{name}'")]
    UnknownOption {
        /// The option as given.
        name: String,
    },

    /// A value does not fit its option's type (or the range its reader accepts).
    #[error("invalid value '{value}' for option '{option}'{}: {reason}", at.as_ref().map(|a| format!(" ({a})")).unwrap_or_default())]
    BadValue {
        /// The option.
        option: String,
        /// The value as given.
        value: String,
        /// What was expected.
        reason: String,
        /// Where the value was set (`/etc/ceph/ceph.conf line 7, [global]`, `command line`),
        /// when known.
        at: Option<String>,
    },
}
