//! The client's error type: every way connecting, configuring or running an operation can
//! fail, each with the errno a C caller or the CLI reports ([`ClientError::errno`]).
//!
//! Display follows Ceph's tools: a detail when there is one, then `(N) Message`, e.g.
//! `no keyring found at /etc/ceph/ceph.keyring: (2) No such file or directory`, or just
//! `(2) No such file or directory` for an op that found no object.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quarry_auth::AuthError;
use quarry_conf::ConfError;
use quarry_types::{EntityName, ErrorCode, PoolId};
use quarry_wire::WireError;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Op `index` of the op vector failed on the OSD; nothing of the vector was applied.
    #[error("{code}")]
    Op {
        /// Index of the failing op in the vector.
        index: u32,
        /// Why it failed (ENOENT, EEXIST, ECANCELED, ...).
        code: ErrorCode,
    },

    /// The monitor or an OSD refused to authenticate us (wrong key, unknown entity,
    /// revoked or blocklisted). Never retried.
    #[error("{message}: {code}")]
    Auth {
        /// EACCES (wrong key or unknown entity: one answer), EPERM (ticket refused or
        /// revoked), ESHUTDOWN when blocklisted.
        code: ErrorCode,
        /// The server's one-line reason.
        message: String,
    },

    /// The request as a whole was refused (capabilities, a failed monitor command, ...).
    #[error("{message}: {code}")]
    Failed {
        /// errno from the server.
        code: ErrorCode,
        /// The server's one-line reason.
        message: String,
    },

    /// The operation did not complete within `rados_osd_op_timeout` (or a monitor command
    /// found no monitor within `client_mount_timeout`).
    #[error("{}", ErrorCode::ETIMEDOUT)]
    Timeout,

    /// No monitor answered within `client_mount_timeout`.
    #[error(
        "failed to connect to the cluster (monitors {}) within {after:?}{}: {}",
        list_addrs(tried),
        last_error(last),
        ErrorCode::ETIMEDOUT
    )]
    Connect {
        /// The monitors tried.
        tried: Vec<SocketAddr>,
        /// How long we tried.
        after: Duration,
        /// The last failure seen, if any.
        last: Option<WireError>,
    },

    /// The pool is not in the cluster map.
    #[error("pool '{pool}' does not exist: {}", ErrorCode::ENOENT)]
    PoolNotFound {
        /// The pool name, or its id in decimal.
        pool: String,
    },

    /// The request was refused before it was sent (bad name, snapshot context, size...).
    #[error("{reason}: {code}")]
    Invalid {
        /// EINVAL, ENAMETOOLONG, EFBIG, EROFS or EMSGSIZE.
        code: ErrorCode,
        /// What is wrong.
        reason: &'static str,
    },

    /// Data returned by an OSD failed its crc32c check.
    #[error("checksum mismatch reading {object} in pool {pool}: {}", ErrorCode::EIO)]
    Corrupt {
        /// Pool id.
        pool: PoolId,
        /// Object name.
        object: String,
    },

    /// A peer answered with a message that does not fit the request.
    #[error("protocol error: unexpected reply to {request}: {}", ErrorCode::EPROTO)]
    Protocol {
        /// The request that got the odd reply.
        request: &'static str,
    },

    /// A secret the monitor sealed for us did not open.
    #[error("cannot open the ticket from the monitor: {source}: {}", ErrorCode::EPERM)]
    Ticket {
        /// Why it did not open.
        source: Box<AuthError>,
    },

    /// [`crate::Rados::shutdown`] was called.
    #[error("client is shut down: {}", ErrorCode::ESHUTDOWN)]
    Shutdown,

    /// ceph.conf or the command line is wrong (bad `mon_host`, conflicting `--id`/`--name`,
    /// a missing `-c` file...).
    #[error("{source}")]
    Conf {
        /// The configuration error.
        #[from]
        source: ConfError,
    },

    /// Neither `-m` nor `mon_host` names a monitor.
    #[error(
        "no monitors specified to connect to (set mon_host or pass -m): {}",
        ErrorCode::EINVAL
    )]
    NoMonitors,

    /// A monitor host name in `mon_host` does not resolve.
    #[error("cannot resolve monitor host '{name}': {source}: {}", ErrorCode::ENOENT)]
    Resolve {
        /// The host name.
        name: String,
        /// The resolver's error.
        source: std::io::Error,
    },

    /// An option has a value of the wrong type.
    #[error("option {name} = '{value}' is not {expected}: {}", ErrorCode::EINVAL)]
    BadOption {
        /// Option name.
        name: &'static str,
        /// Value as written.
        value: String,
        /// What was expected, e.g. "a number of seconds".
        expected: &'static str,
    },

    /// None of the keyring search paths holds a readable file.
    #[error("no keyring found at {}: {}", list_paths(tried), ErrorCode::ENOENT)]
    NoKeyring {
        /// Every path tried, in order.
        tried: Vec<PathBuf>,
    },

    /// Keyring files were found, but none has a key for the entity.
    #[error("keyring {} has no key for {entity}: {}", path.display(), ErrorCode::ENOENT)]
    NoKeyForEntity {
        /// The first keyring found.
        path: PathBuf,
        /// The entity we authenticate as.
        entity: EntityName,
    },

    /// A keyring file or key could not be parsed.
    #[error("{origin}: {source}: {}", ErrorCode::EINVAL)]
    BadKey {
        /// Where the key came from (`keyring /etc/ceph/ceph.keyring`, `option key`).
        origin: String,
        /// Why it was refused.
        source: Box<AuthError>,
    },

    /// A `keyfile` could not be read (absent, a directory, a device, too large, binary).
    #[error("cannot read keyfile {}: {source}: {}", path.display(), ErrorCode(quarry_conf::small_file_errno(source)))]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// The blocking wrapper could not start its runtime.
    #[error("cannot start the client runtime: {source}: {}", ErrorCode::EIO)]
    Runtime {
        /// The I/O error.
        source: std::io::Error,
    },

    /// A keyring file exists but cannot be used: unreadable (EACCES), a directory (EISDIR),
    /// not a regular file or binary (EINVAL), too large (EFBIG).
    #[error("cannot read keyring {}: {source}: {}", path.display(), ErrorCode(quarry_conf::small_file_errno(source)))]
    KeyringUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// The `fsid` in ceph.conf is not the cluster's: the configuration is for another
    /// cluster. Refused before anything is read or written.
    #[error(
        "fsid {conf} in the configuration does not match the cluster's fsid {cluster}: {}",
        ErrorCode::EINVAL
    )]
    FsidMismatch {
        /// The configured fsid.
        conf: String,
        /// The fsid of the cluster the monitors serve.
        cluster: String,
    },
}

fn list_addrs(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")
}

fn last_error(last: &Option<WireError>) -> String {
    match last {
        Some(e) => format!(" (last error: {e})"),
        None => String::new(),
    }
}

impl ClientError {
    /// The errno this error reports (positive; the C ABI negates it).
    pub fn errno(&self) -> ErrorCode {
        match self {
            ClientError::Op { code, .. }
            | ClientError::Auth { code, .. }
            | ClientError::Failed { code, .. }
            | ClientError::Invalid { code, .. } => *code,
            ClientError::Timeout | ClientError::Connect { .. } => ErrorCode::ETIMEDOUT,
            ClientError::PoolNotFound { .. }
            | ClientError::NoKeyring { .. }
            | ClientError::NoKeyForEntity { .. }
            | ClientError::Resolve { .. } => ErrorCode::ENOENT,
            ClientError::KeyFile { source, .. } | ClientError::KeyringUnreadable { source, .. } => {
                ErrorCode(quarry_conf::small_file_errno(source))
            }
            ClientError::FsidMismatch { .. } => ErrorCode::EINVAL,
            ClientError::Corrupt { .. } | ClientError::Runtime { .. } => ErrorCode::EIO,
            ClientError::Protocol { .. } => ErrorCode::EPROTO,
            ClientError::Ticket { .. } => ErrorCode::EPERM,
            ClientError::Shutdown => ErrorCode::ESHUTDOWN,
            ClientError::Conf { source } => match source {
                ConfError::NotFound { .. } | ConfError::UnknownOption { .. } => ErrorCode::ENOENT,
                _ => ErrorCode::EINVAL,
            },
            ClientError::NoMonitors
            | ClientError::BadOption { .. }
            | ClientError::BadKey { .. } => ErrorCode::EINVAL,
        }
    }

    pub(crate) fn invalid(code: ErrorCode, reason: &'static str) -> ClientError {
        ClientError::Invalid { code, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_what_ceph_users_recognise() {
        let e = ClientError::Op { index: 0, code: ErrorCode::ENOENT };
        assert_eq!(e.to_string(), "(2) No such file or directory");
        assert_eq!(e.errno(), ErrorCode::ENOENT);
        let e =
            ClientError::Auth { code: ErrorCode::EACCES, message: "authentication failed".into() };
        assert_eq!(e.to_string(), "authentication failed: (13) Permission denied");
        assert_eq!(ClientError::Timeout.to_string(), "(110) Connection timed out");
        let e = ClientError::NoKeyring {
            tried: vec!["/etc/ceph/ceph.keyring".into(), "/etc/ceph/keyring".into()],
        };
        assert_eq!(
            e.to_string(),
            "no keyring found at /etc/ceph/ceph.keyring,/etc/ceph/keyring: \
             (2) No such file or directory"
        );
        let e =
            ClientError::NoKeyForEntity { path: "/tmp/k".into(), entity: EntityName::client("x") };
        assert_eq!(
            e.to_string(),
            "keyring /tmp/k has no key for client.x: (2) No such file or directory"
        );
        assert_eq!(ClientError::PoolNotFound { pool: "p".into() }.errno(), ErrorCode::ENOENT);
        assert_eq!(ClientError::Shutdown.errno(), ErrorCode::ESHUTDOWN);
    }
}
