//! Client configuration: which monitors, which entity, which key, which timeouts. Built from
//! ceph.conf and the common command-line arguments the way librados does
//! ([`ClientConfig::from_conf`]), or filled in directly by embedders and tests.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use quarry_auth::{CryptoKey, Keyring};
use quarry_conf::{CommonArgs, Conf, KeySource, MonHostName};
use quarry_types::EntityName;

use crate::ClientError;

/// `client_mount_timeout` when unset: how long [`crate::Rados::connect`] hunts for a monitor.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// The options of [`ClientConfig`] the central config may set (after connecting).
const CENTRAL_OPTIONS: &[&str] = &["rados_osd_op_timeout", "rados_mon_op_timeout"];

/// Everything a client needs to reach and authenticate to a cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Monitor addresses (`-m` or `mon_host`), tried in random order.
    pub mon_addrs: Vec<SocketAddr>,
    /// The entity we authenticate as (`client.admin`).
    pub entity: EntityName,
    /// Its key.
    pub key: CryptoKey,
    /// `client_mount_timeout`: bound on finding and authenticating to a monitor (and on
    /// waiting for a lost monitor session during a command). Default 30 s.
    pub connect_timeout: Duration,
    /// `rados_osd_op_timeout`: bound on one object operation including every retry.
    /// `None` (option 0 or absent) waits forever, as librados does.
    pub op_timeout: Option<Duration>,
    /// `rados_mon_op_timeout`: bound on one monitor command including every retry.
    /// `None` (option 0 or absent) waits forever, as librados does.
    pub mon_op_timeout: Option<Duration>,
    /// The `fsid` option: when set, a cluster whose map has another fsid is refused at
    /// connect ([`ClientError::FsidMismatch`]), as Ceph's clients refuse to talk to it.
    pub fsid: Option<String>,
    /// The options ceph.conf or the command line set (normalised names): the monitor's
    /// central config (fetched at connect, [`ClientConfig::with_central`]) does not
    /// override them, as in Ceph (default < mon < file < command line). Empty for a
    /// configuration filled in directly: the central config then sets the timeouts it has.
    pub local_options: std::collections::BTreeSet<String>,
}

impl ClientConfig {
    /// Builds the configuration from a parsed ceph.conf and the common arguments:
    /// - `-k` and `-m` override the `keyring` and `mon_host` options (as in Ceph; applying
    ///   them again to a conf from [`CommonArgs::load_conf`] changes nothing);
    /// - monitors: the `mon_host` option ([`quarry_conf::parse_mon_host`]);
    /// - entity: `--id`/`--name` (`client.admin` by default);
    /// - key: the `key` option, else the `keyfile` option, else the first readable keyring of
    ///   the `keyring` list (Ceph's default list when unset) that holds the entity;
    /// - timeouts: `client_mount_timeout` (seconds, default 30), `rados_osd_op_timeout` and
    ///   `rados_mon_op_timeout` (seconds, 0 or absent = wait forever);
    /// - `fsid`, checked against the cluster's at connect.
    pub fn from_conf(conf: &Conf, args: &CommonArgs) -> Result<ClientConfig, ClientError> {
        let mut conf = conf.clone();
        args.apply_overrides(&mut conf)?;
        let entity = quarry_conf::resolve_entity(args)?;
        let mon_addrs = match conf.get(&entity, "mon_host") {
            Some(text) => mon_addrs(&text)?,
            None => Vec::new(),
        };
        if mon_addrs.is_empty() {
            return Err(ClientError::NoMonitors);
        }
        let key = find_key(&entity, quarry_conf::key_source(&conf, &entity, &args.cluster))?;
        let mount =
            seconds_option("client_mount_timeout", conf.get(&entity, "client_mount_timeout"))?;
        let connect_timeout = mount.filter(|t| !t.is_zero()).unwrap_or(CONNECT_TIMEOUT_DEFAULT);
        let op_timeout =
            seconds_option("rados_osd_op_timeout", conf.get(&entity, "rados_osd_op_timeout"))?
                .filter(|t| !t.is_zero());
        let mon_op_timeout =
            seconds_option("rados_mon_op_timeout", conf.get(&entity, "rados_mon_op_timeout"))?
                .filter(|t| !t.is_zero());
        let fsid =
            conf.get(&entity, "fsid").map(|f| f.trim().to_string()).filter(|f| !f.is_empty());
        let local_options = CENTRAL_OPTIONS
            .iter()
            .filter(|o| conf.get(&entity, o).is_some())
            .map(|o| o.to_string())
            .collect();
        Ok(ClientConfig {
            mon_addrs,
            entity,
            key,
            connect_timeout,
            op_timeout,
            mon_op_timeout,
            fsid,
            local_options,
        })
    }

    /// This configuration with the monitor's central values for the client (`ceph config
    /// set client|client.NAME|global`, merged) applied where ceph.conf and the command line
    /// set nothing: `rados_osd_op_timeout`, `rados_mon_op_timeout`. A value that does not
    /// parse is ignored with a warning (the monitor checked it when it was set).
    pub fn with_central(mut self, central: &std::collections::BTreeMap<String, String>) -> Self {
        let seconds = |name: &'static str| -> Option<Option<Duration>> {
            if self.local_options.contains(name) {
                return None;
            }
            let value = central.get(name)?;
            match seconds_option(name, Some(value.clone())) {
                Ok(d) => Some(d.filter(|t| !t.is_zero())),
                Err(e) => {
                    tracing::warn!(option = name, error = %e, "central config value ignored");
                    None
                }
            }
        };
        if let Some(timeout) = seconds("rados_osd_op_timeout") {
            self.op_timeout = timeout;
        }
        if let Some(timeout) = seconds("rados_mon_op_timeout") {
            self.mon_op_timeout = timeout;
        }
        self
    }
}

/// The monitor addresses of a `mon_host` value (every form Ceph accepts, see
/// [`quarry_conf::parse_mon_host_entries`]); host names are resolved here, as librados does.
fn mon_addrs(text: &str) -> Result<Vec<SocketAddr>, ClientError> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for addr in quarry_conf::parse_mon_host_entries(text)?.into_iter().flatten() {
        let resolved = match addr.host {
            MonHostName::Ip(ip) => vec![SocketAddr::new(ip, addr.port)],
            MonHostName::Name(name) => (name.as_str(), addr.port)
                .to_socket_addrs()
                .map_err(|source| ClientError::Resolve { name: name.clone(), source })?
                .collect(),
        };
        for socket in resolved {
            if !out.contains(&socket) {
                out.push(socket);
            }
        }
    }
    Ok(out)
}

/// Parses an option holding seconds (a decimal number, as Ceph's `secs` options accept).
fn seconds_option(
    name: &'static str,
    value: Option<String>,
) -> Result<Option<Duration>, ClientError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let bad = || ClientError::BadOption {
        name,
        value: value.clone(),
        expected: "a non-negative number of seconds",
    };
    let secs: f64 = value.trim().parse().map_err(|_| bad())?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs).map(Some).map_err(|_| bad())
}

/// Reads the entity's key from where the configuration says it is (Ceph's precedence:
/// `key` > `keyfile` > keyrings, KeyRing::from_ceph_context).
pub(crate) fn find_key(entity: &EntityName, source: KeySource) -> Result<CryptoKey, ClientError> {
    match source {
        KeySource::Key(text) => CryptoKey::from_base64(&text).map_err(|source| {
            ClientError::BadKey { origin: "option key".into(), source: Box::new(source) }
        }),
        KeySource::KeyFile(path) => {
            let text = read_key_text(&path)
                .map_err(|source| ClientError::KeyFile { path: path.clone(), source })?;
            CryptoKey::from_base64(text.trim()).map_err(|source| ClientError::BadKey {
                origin: format!("keyfile {}", path.display()),
                source: Box::new(source),
            })
        }
        KeySource::Keyrings(paths) => key_from_keyrings(entity, &paths),
    }
}

/// The key of `entity` from the first readable keyring of `search` that holds it.
fn key_from_keyrings(entity: &EntityName, search: &[PathBuf]) -> Result<CryptoKey, ClientError> {
    // The first problem met with a file that exists: reported if no file has the key.
    let mut first_problem: Option<ClientError> = None;
    for path in search {
        let text = match read_key_text(path) {
            Ok(text) => text,
            // Absent: try the next path, as Ceph's keyring search does.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            // There, but a directory, a device, too large, binary or unreadable: said as
            // what it is if no later file has the key (never "No such file or directory").
            Err(source) => {
                tracing::debug!(path = %path.display(), error = %source, "keyring not readable");
                first_problem
                    .get_or_insert(ClientError::KeyringUnreadable { path: path.clone(), source });
                continue;
            }
        };
        match Keyring::parse(&text) {
            Ok(ring) => match ring.get(entity) {
                Some(entry) => return Ok(entry.key.clone()),
                None => {
                    first_problem.get_or_insert(ClientError::NoKeyForEntity {
                        path: path.clone(),
                        entity: entity.clone(),
                    });
                }
            },
            Err(source) => {
                tracing::warn!(path = %path.display(), error = %source, "skipping a bad keyring");
                first_problem.get_or_insert(ClientError::BadKey {
                    origin: format!("keyring {}", path.display()),
                    source: Box::new(source),
                });
            }
        }
    }
    Err(first_problem.unwrap_or_else(|| ClientError::NoKeyring { tried: search.to_vec() }))
}

/// A keyring's or key file's text: a regular file of at most `SMALL_FILE_BYTES_MAX` bytes
/// (`quarry_conf::read_small_file`) that is UTF-8 text.
fn read_key_text(path: &Path) -> std::io::Result<String> {
    let bytes = quarry_conf::read_small_file(path, quarry_conf::SMALL_FILE_BYTES_MAX)?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not text (binary data)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==";

    fn keyring_text(entity: &str, key: &CryptoKey) -> String {
        format!("[{entity}]\n\tkey = {key}\n\tcaps mon = \"allow *\"\n")
    }

    #[test]
    fn key_option_then_keyfile_then_keyrings() {
        let dir = tempfile::tempdir().unwrap();
        let admin = EntityName::client("admin");
        let ring_key = CryptoKey::generate();
        let ring = dir.path().join("ceph.keyring");
        std::fs::write(&ring, keyring_text("client.admin", &ring_key)).unwrap();
        let file_key = CryptoKey::generate();
        let keyfile = dir.path().join("admin.key");
        std::fs::write(&keyfile, format!("{file_key}\n")).unwrap();

        let k = find_key(&admin, KeySource::Key(KEY_A.into())).unwrap();
        assert_eq!(k.to_base64(), KEY_A);
        assert_eq!(find_key(&admin, KeySource::KeyFile(keyfile)).unwrap(), file_key);
        assert_eq!(find_key(&admin, KeySource::Keyrings(vec![ring])).unwrap(), ring_key);

        let err = find_key(&admin, KeySource::Key("garbage".into())).unwrap_err();
        assert!(err.to_string().contains("option key"), "{err}");
        let missing = dir.path().join("nope.key");
        let err = find_key(&admin, KeySource::KeyFile(missing)).unwrap_err();
        assert!(matches!(err, ClientError::KeyFile { .. }), "{err}");
    }

    #[test]
    fn keyring_search_takes_the_first_file_holding_the_entity() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = EntityName::client("qemu");
        let other = dir.path().join("a.keyring");
        std::fs::write(&other, keyring_text("client.admin", &CryptoKey::generate())).unwrap();
        let wanted = CryptoKey::generate();
        let second = dir.path().join("b.keyring");
        std::fs::write(&second, keyring_text("client.qemu", &wanted)).unwrap();
        let absent = dir.path().join("absent.keyring");
        let search = vec![absent.clone(), other.clone(), second];
        assert_eq!(find_key(&qemu, KeySource::Keyrings(search)).unwrap(), wanted);

        // Files exist but none holds the entity: name the first one.
        let search = vec![absent.clone(), other.clone()];
        let err = find_key(&qemu, KeySource::Keyrings(search)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "keyring {} has no key for client.qemu: (2) No such file or directory",
                other.display()
            )
        );
        // No file at all: list every path tried.
        let other_absent = dir.path().join("x.keyring");
        let search = vec![absent.clone(), other_absent.clone()];
        let err = find_key(&qemu, KeySource::Keyrings(search)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no keyring found at {},{}: (2) No such file or directory",
                absent.display(),
                other_absent.display()
            )
        );
        assert_eq!(err.errno(), quarry_types::ErrorCode::ENOENT);
    }

    #[test]
    fn config_comes_from_conf_and_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let admin_key = CryptoKey::generate();
        let qemu_key = CryptoKey::generate();
        let ring = dir.path().join("ceph.keyring");
        let text =
            keyring_text("client.admin", &admin_key) + &keyring_text("client.qemu", &qemu_key);
        std::fs::write(&ring, text).unwrap();
        let conf_text = format!(
            "[global]\n\tmon host = [v2:127.0.0.1:3300/0,v1:127.0.0.1:6789/0] 127.0.0.2:6789\n\
             \tkeyring = {}\n[client]\n\trados osd op timeout = 5\n[client.qemu]\n\
             \tclient mount timeout = 2.5\n",
            ring.display()
        );
        let conf = Conf::parse(&conf_text).unwrap();

        let cfg = ClientConfig::from_conf(&conf, &CommonArgs::default()).unwrap();
        assert_eq!(cfg.entity, EntityName::client("admin"));
        assert_eq!(cfg.key, admin_key);
        let want: Vec<SocketAddr> = ["127.0.0.1:3300", "127.0.0.1:6789", "127.0.0.2:6789"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(cfg.mon_addrs, want);
        assert_eq!(cfg.connect_timeout, CONNECT_TIMEOUT_DEFAULT);
        assert_eq!(cfg.op_timeout, Some(Duration::from_secs(5)));

        let args = CommonArgs {
            id: Some("qemu".into()),
            mon_host: Some("10.1.2.3:6789".into()),
            ..CommonArgs::default()
        };
        let cfg = ClientConfig::from_conf(&conf, &args).unwrap();
        assert_eq!(cfg.entity, EntityName::client("qemu"));
        assert_eq!(cfg.key, qemu_key);
        assert_eq!(cfg.mon_addrs, vec!["10.1.2.3:6789".parse().unwrap()]);
        assert_eq!(cfg.connect_timeout, Duration::from_millis(2500));

        // -k replaces the keyring list.
        let elsewhere = dir.path().join("other.keyring");
        let args = CommonArgs { keyring: Some(elsewhere.display().to_string()), ..args };
        let err = ClientConfig::from_conf(&conf, &args).unwrap_err();
        assert!(
            matches!(err, ClientError::NoKeyring { ref tried } if tried == &[elsewhere]),
            "{err}"
        );

        let bare =
            Conf::parse("[global]\n\tkey = AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==\n").unwrap();
        let err = ClientConfig::from_conf(&bare, &CommonArgs::default()).unwrap_err();
        assert!(matches!(err, ClientError::NoMonitors), "{err}");
        let args = CommonArgs { mon_host: Some("127.0.0.1:6789".into()), ..CommonArgs::default() };
        let cfg = ClientConfig::from_conf(&bare, &args).unwrap();
        assert_eq!(cfg.key.to_base64(), KEY_A);
        assert_eq!(cfg.op_timeout, None);
    }

    #[test]
    fn mon_host_names_are_resolved() {
        let addrs = mon_addrs("localhost:6790, 127.0.0.1").unwrap();
        assert!(addrs.iter().any(|a| a.ip().is_loopback() && a.port() == 6790), "{addrs:?}");
        assert!(addrs.contains(&"127.0.0.1:6789".parse().unwrap()), "{addrs:?}");
        let err = mon_addrs("no-such-host.invalid").unwrap_err();
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
        assert!(mon_addrs("").is_err());
    }

    #[test]
    fn seconds_options_parse_like_ceph() {
        assert_eq!(seconds_option("t", None).unwrap(), None);
        assert_eq!(seconds_option("t", Some("30".into())).unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(
            seconds_option("t", Some(" 0.5 ".into())).unwrap(),
            Some(Duration::from_millis(500))
        );
        assert!(seconds_option("t", Some("-1".into())).is_err());
        assert!(seconds_option("t", Some("soon".into())).is_err());
    }
}
