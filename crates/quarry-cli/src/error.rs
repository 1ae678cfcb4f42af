//! The CLI's failures and how each one reaches the user: the exact line Ceph's tools print
//! (on stderr) and the exit status they return. `main` prints the `Display` text and exits
//! with [`CliError::status`].

use std::path::PathBuf;

use quarry_types::ErrorCode;

use quarry_client::admin::errno_name;

use crate::output::rados_python_error;

/// What `ceph` prints when python-rados cannot read the configuration.
const CEPH_CONF_READ_FAILED: &str = "\nError initializing cluster client: \
     ObjectNotFound('RADOS object not found (error calling conf_read_file)')";

/// Why a `quarry` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A `ceph` command the monitor refused: `Error ENOENT: ...`, exit status = errno (as
    /// `ceph` does).
    #[error("Error {}: {message}", errno_name(*code))]
    Command {
        /// errno.
        code: ErrorCode,
        /// The monitor's (or our) one-line explanation.
        message: String,
    },
    /// The `ceph` tool could not connect or authenticate:
    /// `[errno 13] RADOS permission denied (error connecting to the cluster)`, exit 13 for
    /// EACCES (as `ceph` does for python-rados' PermissionDeniedError), 1 otherwise.
    #[error("{detail}\n{}", rados_python_error(*code, "error connecting to the cluster"))]
    CephConnect {
        /// errno of the failure.
        code: ErrorCode,
        /// What went wrong, in a line of its own before Ceph's line.
        detail: String,
    },
    /// The `rados` tool could not connect: `couldn't connect to cluster: (1) Operation not
    /// permitted`, exit 1.
    #[error("{detail}\ncouldn't connect to cluster: {code}")]
    RadosConnect {
        /// errno of the failure.
        code: ErrorCode,
        /// What went wrong, in a line of its own before Ceph's line.
        detail: String,
    },
    /// ceph.conf could not be loaded. `ceph` adds python-rados' line after the reason.
    #[error("{detail}{}", if *ceph { CEPH_CONF_READ_FAILED } else { "" })]
    ConfLoad {
        /// Why (file missing, syntax error at line N...).
        detail: String,
        /// Word it as the `ceph` tool does.
        ceph: bool,
    },
    /// A `rados` operation failed: `error getting rbd/x: (2) No such file or directory`, exit 1.
    #[error("{what}: {code}")]
    RadosOp {
        /// `error getting rbd/x` (Ceph's words for the operation and its target).
        what: String,
        /// errno.
        code: ErrorCode,
    },
    /// The command line is wrong in a way the argument parser cannot see.
    #[error("{message}")]
    Usage {
        /// What to tell the user (may span lines: a usage summary).
        message: String,
        /// Exit status (`ceph`: 22 = EINVAL; `rados`: 1).
        status: u8,
    },
    /// `quarry up DIR` while another process runs a cluster in DIR.
    #[error("quarry up: {} is in use by another quarry process (pid {pid})", dir.display())]
    InUse {
        /// The cluster directory.
        dir: PathBuf,
        /// The pid recorded by the holder of the lock (`?` if unreadable).
        pid: String,
    },
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The message was already printed (e.g. `rados getomapval` prints `No such key` on
    /// stdout); only the exit status remains.
    #[error("")]
    Reported {
        /// Exit status.
        status: u8,
    },
    /// A daemon or cluster start-up failure, with its chain of causes.
    #[error("quarry: {0:#}")]
    Daemon(#[from] anyhow::Error),
    /// `quarry up` stopped because its daemons did not start or serve (the last line it
    /// prints says so).
    #[error("quarry up: stopped: start-up failed: {0:#}")]
    UpFailed(anyhow::Error),
}

impl CliError {
    /// The process exit status for this failure.
    pub fn status(&self) -> u8 {
        match self {
            CliError::Command { code, .. } => u8::try_from(code.0).unwrap_or(1).max(1),
            CliError::Usage { status, .. } | CliError::Reported { status } => *status,
            CliError::InUse { .. } => 16,
            CliError::CephConnect { code, .. } if *code == ErrorCode::EACCES => 13,
            CliError::CephConnect { .. }
            | CliError::RadosConnect { .. }
            | CliError::RadosOp { .. }
            | CliError::ConfLoad { .. }
            | CliError::Io { .. }
            | CliError::Daemon(_)
            | CliError::UpFailed(_) => 1,
        }
    }

    /// A `ceph` command failure with errno `code`.
    pub fn command(code: ErrorCode, message: impl Into<String>) -> CliError {
        CliError::Command { code, message: message.into() }
    }

    /// A `rados` operation failure.
    pub fn rados_op(what: impl Into<String>, code: ErrorCode) -> CliError {
        CliError::RadosOp { what: what.into(), code }
    }

    /// A local file error.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> CliError {
        CliError::Io { path: path.into(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_statuses_follow_ceph() {
        let e = CliError::command(ErrorCode::ENOENT, "failed to find client.x in keyring");
        assert_eq!(e.to_string(), "Error ENOENT: failed to find client.x in keyring");
        assert_eq!(e.status(), 2);
        let e = CliError::command(ErrorCode::EACCES, "access denied");
        assert_eq!(e.to_string(), "Error EACCES: access denied");
        assert_eq!(e.status(), 13);
        let e = CliError::rados_op("error getting rbd/x", ErrorCode::ENOENT);
        assert_eq!(e.to_string(), "error getting rbd/x: (2) No such file or directory");
        assert_eq!(e.status(), 1);
        let e = CliError::CephConnect { code: ErrorCode::EPERM, detail: "auth: bad key".into() };
        assert_eq!(
            e.to_string(),
            "auth: bad key\n[errno 1] RADOS permission error (error connecting to the cluster)"
        );
        assert_eq!(e.status(), 1);
        let e = CliError::CephConnect {
            code: ErrorCode::EACCES,
            detail: "authentication failed: (13) Permission denied".into(),
        };
        assert!(e
            .to_string()
            .ends_with("\n[errno 13] RADOS permission denied (error connecting to the cluster)"));
        assert_eq!(e.status(), 13);
        let e = CliError::InUse { dir: "/tmp/q".into(), pid: "42".into() };
        assert_eq!(e.to_string(), "quarry up: /tmp/q is in use by another quarry process (pid 42)");
        assert_eq!(e.status(), 16);
    }
}
