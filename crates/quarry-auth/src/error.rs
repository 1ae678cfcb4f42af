//! The crate's error type: every way a key, keyring, capability string or sealed blob can be
//! refused. Variants are structured so the monitor, the OSDs and the CLI can map them to
//! Ceph's errno conventions (EINVAL for bad input, EPERM/EACCES for authentication).

use std::path::PathBuf;

/// Why quarry-auth refused something.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A key is not in Ceph's keyring format (`AQ...==`).
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What is wrong, e.g. "not base64" or "secret is 8 bytes, expected 16".
        reason: String,
    },

    /// A keyring line could not be parsed.
    #[error("keyring line {line}: {reason}")]
    KeyringSyntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A keyring section header does not name an entity Quarry knows (`[client.qemu]`).
    #[error(
        "keyring line {line}: '{name}' is not an entity name (TYPE.ID: client.*, osd.N, mon.)"
    )]
    KeyringEntity {
        /// 1-based line number.
        line: usize,
        /// The section name as written.
        name: String,
    },

    /// A keyring entry holds a setting Ceph does not define (only `key`, `caps *`, `auid`).
    #[error("keyring line {line}: unknown setting '{setting}' for {entity}")]
    KeyringSetting {
        /// 1-based line number.
        line: usize,
        /// The entity the setting belongs to.
        entity: String,
        /// The setting name as written.
        setting: String,
    },

    /// A keyring entry's `key = ...` is malformed.
    #[error("keyring line {line}: bad key for {entity}: {reason}")]
    KeyringKey {
        /// 1-based line number.
        line: usize,
        /// The entity whose key is bad.
        entity: String,
        /// Why the key was refused.
        reason: String,
    },

    /// A keyring entry has no `key = ...` line.
    #[error("keyring entry {entity} has no key")]
    KeyringMissingKey {
        /// The entity without a key.
        entity: String,
    },

    /// A keyring file could not be read.
    #[error("cannot read keyring {path}: {source}")]
    KeyringIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A capability string does not parse (what `ceph auth get-or-create` refuses with EINVAL).
    /// Displayed in Ceph's shape: `osd capability parse failed, stopped at 'pol=x' of '...'`.
    #[error("{service} capability parse failed, stopped at '{rest}' of '{cap}': {reason}{}", quoted(.token))]
    InvalidCap {
        /// The service the cap is for (`mon`, `osd`).
        service: String,
        /// The whole cap string.
        cap: String,
        /// The offending token.
        token: String,
        /// The cap text from the offending token to the end.
        rest: String,
        /// What is wrong with the token.
        reason: &'static str,
    },

    /// Caps were given for a service Ceph does not have (`caps foo = ...`).
    #[error("unknown capability service '{service}' (known: mon, osd, mgr, mds)")]
    UnknownCapService {
        /// The service name as written.
        service: String,
    },

    /// A sealed blob failed authentication: it was modified, truncated, or sealed under another
    /// key. Nothing of its content is returned.
    #[error("sealed data failed authentication (tampered, truncated or wrong key)")]
    Tampered,

    /// A ticket (or the service key it was sealed under) has expired.
    #[error("ticket expired at {expires_unix} (now {now_unix})")]
    Expired {
        /// When it expired (unix seconds).
        expires_unix: u64,
        /// The time it was checked at (unix seconds).
        now_unix: u64,
    },

    /// A ticket names a service key id the verifier does not hold (rotated out, or forged).
    #[error("ticket sealed under unknown service key {key_id}")]
    UnknownKey {
        /// The key id the ticket claims.
        key_id: u64,
    },

    /// Authenticated data did not decode: only possible if the sealing side has a bug or
    /// runs an incompatible version.
    #[error("malformed {what} after successful authentication")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
    },
}

/// ` 'token'`, or nothing when the problem is at the end of the string.
fn quoted(token: &str) -> String {
    if token.is_empty() {
        String::new()
    } else {
        format!(" '{token}'")
    }
}
