//! [`OsdConfig`]: what an OSD needs to start, built from ceph.conf and the command line by
//! [`OsdConfig::from_conf`] (or filled in directly by embedders and tests).
//!
//! Options read, for the entity `osd.N` (`[osd.N]` > `[osd]` > `[global]`, command-line
//! overrides first): `mon_host` (the monitors), `key`, `keyfile`, `keyring` (osd.N's key,
//! in that precedence; `DATA/keyring` is tried after the keyring list), the full ratios
//! (`mon_osd_nearfull_ratio`, `mon_osd_full_ratio`, `osd_failsafe_full_ratio`), the
//! connection and memory budget (`quarry_conf::server_limits`). A value that does
//! not parse is an error naming the option, the value and the line it was set on.

use std::net::SocketAddr;
use std::path::PathBuf;

use quarry_auth::{CryptoKey, Keyring};
use quarry_conf::{CommonArgs, Conf, KeySource};
use quarry_types::{EntityName, EntityType, OsdId};

use crate::{DataDir, OsdError};

/// What an OSD needs to start.
#[derive(Clone)]
pub struct OsdConfig {
    /// This OSD's id (`osd.N`).
    pub id: OsdId,
    /// Data directory (layout: [`DataDir`]).
    pub data_dir: PathBuf,
    /// Address to listen on for clients and peers (port 0: any; see
    /// [`crate::OsdHandle::addr`]). The address bound is recorded in the data directory.
    pub listen: SocketAddr,
    /// Monitors to reach (tried in order).
    pub mon_addrs: Vec<SocketAddr>,
    /// `osd.N`'s key.
    pub key: CryptoKey,
    /// Host name reported to the monitor (placement spreads replicas over hosts).
    pub host: String,
    /// Full-disk thresholds (`mon_osd_nearfull_ratio`, `mon_osd_full_ratio`,
    /// `osd_failsafe_full_ratio`): writes that need space are refused with ENOSPC from the
    /// full ratio on (see `crate::space`).
    pub full_ratios: quarry_types::FullRatios,
    /// Connection and memory budget (`ms_max_connections`, `osd_client_message_size_cap`,
    /// ...: `quarry_types::ServerLimits`, enforced by `quarry_wire::limits`).
    pub limits: quarry_types::ServerLimits,
    /// `osd_max_backfills` (default 1, Ceph's): PG moves this OSD drives at once as a PG's
    /// primary (`pg::membership`).
    pub max_backfills: usize,
    /// `osd_raft_heartbeat_interval` (default 1 s): a PG leader's heartbeat; elections start
    /// after 2.5 to 5 of them without a word from the leader.
    pub raft_heartbeat: std::time::Duration,
    /// `osd_write_once_min_bytes` (default 64 KiB, 0 = off, at most 16 MiB; it changes at
    /// runtime too): write ops of at least this many bytes, whole 4 KiB chunks at a chunk
    /// boundary, of one-replica PGs are written once, into the store's data file, with only
    /// their place in the log (`pg::placer`).
    pub write_once_min_bytes: u64,
}

/// What the `quarry osd` command line sets besides the common options.
#[derive(Clone, Debug, Default)]
pub struct OsdOverrides {
    /// `--addr` (else the previous start's address if free, else 127.0.0.1 and any port:
    /// [`DataDir::stable_addr`]).
    pub addr: Option<SocketAddr>,
    /// `--host` (else this machine's host name).
    pub host: Option<String>,
}

impl OsdConfig {
    /// Builds the settings of `osd.N` (`--id N` or `--name osd.N`) from a parsed ceph.conf,
    /// the common arguments (`-m` and `-k` override `mon_host` and `keyring`), the data
    /// directory and the OSD's own command-line values (see the module docs).
    pub fn from_conf(
        conf: &Conf,
        args: &CommonArgs,
        data_dir: PathBuf,
        overrides: &OsdOverrides,
    ) -> Result<OsdConfig, OsdError> {
        let bad = |reason: String| OsdError::Config { reason };
        let mut conf = conf.clone();
        args.apply_overrides(&mut conf)?;
        let entity = quarry_conf::resolve_entity_as(args, EntityType::Osd)?;
        let id: OsdId = entity
            .id
            .parse()
            .map_err(|_| bad(format!("the OSD id must be a number, not '{}'", entity.id)))?;
        let mon_addrs = conf
            .get_parsed(&entity, "mon_host", |text| {
                quarry_conf::parse_mon_host(text).map_err(|e| e.to_string())
            })?
            .unwrap_or_default();
        if mon_addrs.is_empty() {
            return Err(bad(
                "no monitor address: set mon_host in the configuration (-c FILE) or pass -m IP:PORT"
                    .into(),
            ));
        }
        let data = DataDir::new(data_dir);
        let key = find_key(&entity, quarry_conf::key_source(&conf, &entity, &args.cluster), &data)?;
        Ok(OsdConfig {
            id,
            listen: overrides.addr.unwrap_or_else(|| data.stable_addr()),
            data_dir: data.root().to_path_buf(),
            mon_addrs,
            key,
            host: overrides.host.clone().unwrap_or_else(quarry_conf::local_hostname),
            full_ratios: quarry_conf::full_ratios(&conf, &entity)?,
            limits: quarry_conf::server_limits(&conf, &entity, quarry_types::DaemonKind::Osd)?,
            max_backfills: conf
                .get_parsed(&entity, "osd_max_backfills", |v| {
                    quarry_conf::parse_int(v).map_err(str::to_string).and_then(|n| {
                        match usize::try_from(n) {
                            Ok(n) if (1..=64).contains(&n) => Ok(n),
                            _ => Err("expected 1 to 64".to_string()),
                        }
                    })
                })?
                .unwrap_or(1),
            raft_heartbeat: conf
                .get_parsed(&entity, "osd_raft_heartbeat_interval", |v| {
                    quarry_conf::parse_float(v).map_err(str::to_string).and_then(|s| {
                        if (0.05..=10.0).contains(&s) {
                            Ok(std::time::Duration::from_secs_f64(s))
                        } else {
                            Err("expected 0.05 to 10 (seconds)".to_string())
                        }
                    })
                })?
                .unwrap_or(crate::DEFAULT_RAFT_HEARTBEAT),
            write_once_min_bytes: conf
                .get_parsed(&entity, "osd_write_once_min_bytes", parse_write_once_min)?
                .unwrap_or(crate::DEFAULT_WRITE_ONCE_MIN_BYTES),
        })
    }

    /// The data directory's layout.
    pub fn data(&self) -> DataDir {
        DataDir::new(&self.data_dir)
    }
}

/// `osd_write_once_min_bytes`: a size from 0 (off) to 16 MiB (`pg::placer::PLACE_MAX`).
pub(crate) fn parse_write_once_min(text: &str) -> Result<u64, String> {
    let max = crate::pg::placer::PLACE_MAX as u64;
    match quarry_conf::parse_size(text) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("expected a size from 0 (off) to {}M", max >> 20)),
    }
}

/// The OSD's key: the `key` option, else `keyfile`, else the first keyring of the list (then
/// `DATA/keyring`) that holds the entity.
fn find_key(entity: &EntityName, source: KeySource, data: &DataDir) -> Result<CryptoKey, OsdError> {
    let bad = |reason: String| OsdError::Config { reason };
    match source {
        KeySource::Key(text) => {
            CryptoKey::from_base64(&text).map_err(|e| bad(format!("option key: {e}")))
        }
        KeySource::KeyFile(path) => {
            let text = quarry_conf::read_keyfile(&path)?;
            CryptoKey::from_base64(&text)
                .map_err(|e| bad(format!("keyfile {}: {e}", path.display())))
        }
        KeySource::Keyrings(mut paths) => {
            paths.push(data.keyring());
            key_from_keyrings(entity, &paths)
        }
    }
}

fn key_from_keyrings(entity: &EntityName, paths: &[PathBuf]) -> Result<CryptoKey, OsdError> {
    let mut first_problem: Option<String> = None;
    for path in paths.iter().filter(|p| p.is_file()) {
        match Keyring::from_file(path) {
            Ok(ring) => match ring.get(entity) {
                Some(entry) => return Ok(entry.key.clone()),
                None => {
                    first_problem.get_or_insert(format!(
                        "keyring {} has no key for {entity}",
                        path.display()
                    ));
                }
            },
            Err(e) => {
                first_problem.get_or_insert(format!("reading keyring {}: {e}", path.display()));
            }
        }
    }
    let reason = first_problem.unwrap_or_else(|| {
        let tried: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        format!("no keyring for {entity} (-k FILE); tried {}", tried.join(","))
    });
    Err(OsdError::Config { reason })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn write_once_min_bytes_is_a_size_up_to_16m() {
        assert_eq!(parse_write_once_min("0"), Ok(0), "off");
        assert_eq!(parse_write_once_min("64K"), Ok(64 << 10));
        assert_eq!(parse_write_once_min("16M"), Ok(16 << 20));
        assert!(parse_write_once_min("17M").is_err());
        assert!(parse_write_once_min("lots").is_err());
        let dir = tempfile::tempdir().unwrap();
        let args = CommonArgs { id: Some("0".into()), ..CommonArgs::default() };
        let with = |line: &str| {
            let key = CryptoKey::generate().to_base64();
            let text = format!("[osd]\nmon_host = 10.0.0.9\nkey = {key}\n{line}\n");
            let conf = Conf::parse(&text).unwrap();
            OsdConfig::from_conf(&conf, &args, dir.path().to_path_buf(), &Default::default())
        };
        assert_eq!(with("").unwrap().write_once_min_bytes, crate::DEFAULT_WRITE_ONCE_MIN_BYTES);
        assert_eq!(with("osd_write_once_min_bytes = 1M").unwrap().write_once_min_bytes, 1 << 20);
        assert!(with("osd_write_once_min_bytes = 32M").is_err());
    }

    fn keyring(entity: EntityName, key: &CryptoKey) -> String {
        let mut ring = Keyring::default();
        ring.insert(entity, key.clone(), BTreeMap::new());
        ring.to_string()
    }

    #[test]
    fn settings_come_from_the_osd_sections_and_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("osd.3");
        std::fs::create_dir_all(&data).unwrap();
        let in_data = CryptoKey::generate();
        std::fs::write(data.join("keyring"), keyring(EntityName::osd(3), &in_data)).unwrap();
        let listed = CryptoKey::generate();
        let ring = dir.path().join("ceph.osd.3.keyring");
        std::fs::write(&ring, keyring(EntityName::osd(3), &listed)).unwrap();
        let text = format!(
            "[global]\nmon_host = 10.0.0.9\n[osd]\nkeyring = {}\n[osd.3]\nmon host = 127.0.0.1:6790, 127.0.0.2:6791\n",
            dir.path().join("$cluster.$name.keyring").display()
        );
        let conf = Conf::parse(&text).unwrap();
        let args = CommonArgs { id: Some("3".into()), ..CommonArgs::default() };
        let none = OsdOverrides::default();
        let cfg = OsdConfig::from_conf(&conf, &args, data.clone(), &none).unwrap();
        assert_eq!(cfg.id, 3);
        let want: Vec<SocketAddr> =
            vec!["127.0.0.1:6790".parse().unwrap(), "127.0.0.2:6791".parse().unwrap()];
        assert_eq!(cfg.mon_addrs, want, "[osd.3] wins over [global]");
        assert_eq!(cfg.key, listed, "the keyring option before DATA/keyring");
        assert_eq!(cfg.listen.port(), 0);
        assert!(!cfg.host.is_empty());

        // -k names a keyring without osd.3: DATA/keyring is still tried.
        let other = dir.path().join("other.keyring");
        std::fs::write(&other, keyring(EntityName::osd(4), &CryptoKey::generate())).unwrap();
        let args = CommonArgs {
            keyring: Some(other.display().to_string()),
            mon_host: Some("127.0.0.1:7000".into()),
            ..args
        };
        let o =
            OsdOverrides { addr: Some("127.0.0.1:7001".parse().unwrap()), host: Some("h".into()) };
        let cfg = OsdConfig::from_conf(&conf, &args, data.clone(), &o).unwrap();
        assert_eq!(cfg.key, in_data);
        assert_eq!(cfg.mon_addrs, vec!["127.0.0.1:7000".parse().unwrap()]);
        assert_eq!((cfg.listen.port(), cfg.host.as_str()), (7001, "h"));

        // The previous start's address is kept.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        cfg.data().record_addr(free).unwrap();
        let cfg = OsdConfig::from_conf(&conf, &args, data, &none).unwrap();
        assert_eq!(cfg.listen, free);
    }

    #[test]
    fn problems_are_errors_that_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("osd.0");
        let args = CommonArgs { id: Some("0".into()), ..CommonArgs::default() };
        let none = OsdOverrides::default();
        let build = |text: &str, args: &CommonArgs| {
            let conf = Conf::parse(text).unwrap();
            OsdConfig::from_conf(&conf, args, data.clone(), &none).err().unwrap().to_string()
        };
        let err = build("[osd]\n\nmon_host = 1.2.3.4:x\n", &args);
        assert!(err.contains("'1.2.3.4:x' for option 'mon_host' (line 3, [osd])"), "{err}");
        let err = build("", &args);
        assert!(err.contains("no monitor address"), "{err}");
        let err = build("[global]\nmon_host = 127.0.0.1\n", &args);
        assert!(err.contains("no keyring for osd.0") && err.contains("osd.0/keyring"), "{err}");
        let err = build("[osd]\nmon_host = 127.0.0.1\nkey = nonsense\n", &args);
        assert!(err.contains("option key"), "{err}");
        let err = build("", &CommonArgs::default());
        assert!(err.contains("no id given for a osd"), "{err}");
        let err = build("", &CommonArgs { id: Some("x".into()), ..CommonArgs::default() });
        assert!(err.contains("must be a number, not 'x'"), "{err}");
    }
}
