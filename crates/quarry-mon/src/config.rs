//! The monitor's settings: [`MonConfig`], built from ceph.conf and the command line by
//! [`MonConfig::from_conf`] (or filled in directly by embedders and tests), and what a new
//! cluster starts with ([`Bootstrap`]; `--mkfs` builds it from a keyring, see [`Mkfs`]).
//!
//! Options read, for the entity `mon.ID` (`[mon.ID]` > `[mon]` > `[global]`, command-line
//! overrides first): `mon_host` (the listening address: its first entry), `fsid` (for
//! `--mkfs`), `keyring` (the `--mkfs` keyring), `osd_pool_default_size`,
//! `osd_pool_default_pg_num`, `auth_service_ticket_ttl`, the full ratios
//! (`mon_osd_nearfull_ratio`, `mon_osd_full_ratio`, `osd_failsafe_full_ratio`),
//! `mon_blocklist_max` (Quarry's: live blocklist entries a non-admin may grow the list to),
//! the connection and memory budget (`quarry_conf::server_limits`). A value that does not
//! parse, or is
//! out of the range the monitor accepts, is an error naming the option, the value and the
//! line it was set on; nothing is silently replaced by a default.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use quarry_auth::{CryptoKey, Keyring};
use quarry_conf::{CommonArgs, Conf, ConfError};
use quarry_types::{EntityName, EntityType, OsdId};

use crate::{state, MonError};

/// Where a monitor listens when neither `--addr` nor `mon_host` says (Ceph's port).
pub const LISTEN_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 6789);
/// The monitor name when the command line gives none.
pub const NAME_DEFAULT: &str = "a";

/// Monitor settings.
#[derive(Clone, Debug)]
pub struct MonConfig {
    /// Monitor name (`a`).
    pub name: String,
    /// WAL and snapshots.
    pub data_dir: PathBuf,
    /// Bind address (port 0 allowed: see [`crate::MonHandle::addr`]).
    pub listen: SocketAddr,
    /// Applied once, when the monitor's Raft group is first initialised.
    pub bootstrap: Option<Bootstrap>,
    /// Beacon silence after which an OSD is marked down (default 6 s).
    pub osd_grace: Duration,
    /// Ticket lifetime (default 300 s).
    pub ticket_ttl: Duration,
    /// `mon_osd_down_out_interval` (default 600 s, Ceph's): an OSD down this long is marked
    /// out and its PGs move to other OSDs; zero never marks one out.
    pub down_out_interval: Duration,
    /// Default PGs of a new pool (32).
    pub pool_default_pg_num: u32,
    /// Default replicas of a new pool (1 on `quarry up`, 3 otherwise).
    pub pool_default_size: u32,
    /// Full-disk thresholds (`mon_osd_nearfull_ratio`, `mon_osd_full_ratio`,
    /// `osd_failsafe_full_ratio`): which OSDs `ceph health` reports nearfull / full.
    pub full_ratios: quarry_types::FullRatios,
    /// Connection and memory budget (`ms_max_connections`, `mon_client_bytes`, ...:
    /// `quarry_types::ServerLimits`, enforced by `quarry_wire::limits`).
    pub limits: quarry_types::ServerLimits,
    /// `mon_blocklist_max` (default 1000): `osd blocklist add` of a new entry by an entity
    /// without `auth` rights on the monitor is refused (ENOSPC) once the blocklist holds this
    /// many live entries; an admin may go to [`crate::admin::BLOCKLIST_HARD_MAX`]. `ceph -s`
    /// warns from half of it.
    pub blocklist_max: u32,
}

/// The initial contents of a new cluster.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    /// Cluster id.
    pub fsid: String,
    /// `client.admin` (mon/osd `allow *`), `osd.N` (`profile osd`), ...
    pub entities: Vec<(EntityName, CryptoKey, BTreeMap<String, String>)>,
    /// Registered OSDs and their hosts: `in`, not up until they boot.
    pub osds: Vec<(OsdId, String)>,
    /// Pools: name, pg_num, size; application `rbd` enabled.
    pub pools: Vec<(String, u32, u32)>,
}

/// What the `quarry mon` command line sets besides the common options; `None` takes the
/// value from the configuration (else the default).
#[derive(Clone, Debug, Default)]
pub struct MonOverrides {
    /// `--addr`: the listening address (else the first `mon_host` entry, else
    /// 127.0.0.1:6789).
    pub addr: Option<SocketAddr>,
    /// `--size` (else `osd_pool_default_size`).
    pub pool_default_size: Option<u32>,
    /// `--pg-num` (else `osd_pool_default_pg_num`).
    pub pool_default_pg_num: Option<u32>,
    /// `--osd-grace` (no ceph.conf option).
    pub osd_grace: Option<Duration>,
    /// `--mkfs`: create a new cluster if the data directory is empty.
    pub mkfs: Option<Mkfs>,
}

/// `--mkfs`: the new cluster's users come from the keyring (`-k`, else the `keyring`
/// option: the first file that exists), which must hold `client.admin`.
#[derive(Clone, Debug, Default)]
pub struct Mkfs {
    /// `--fsid` (else the `fsid` option).
    pub fsid: Option<String>,
    /// OSDs to register (empty: every `osd.N` of the keyring), on this machine's host name.
    pub osds: Vec<OsdId>,
    /// Pools to create (default size and pg_num, application rbd).
    pub pools: Vec<String>,
}

impl MonConfig {
    /// Settings with the documented defaults.
    pub fn new(name: &str, data_dir: PathBuf, listen: SocketAddr) -> MonConfig {
        MonConfig {
            name: name.to_string(),
            data_dir,
            listen,
            bootstrap: None,
            osd_grace: Duration::from_secs(6),
            ticket_ttl: Duration::from_secs(300),
            down_out_interval: Duration::from_secs(600),
            pool_default_pg_num: 32,
            pool_default_size: 3,
            full_ratios: quarry_types::FullRatios::default(),
            limits: quarry_types::ServerLimits::defaults(quarry_types::DaemonKind::Mon),
            blocklist_max: 1000,
        }
    }

    /// Builds the settings of monitor `--id` (default `a`) from a parsed ceph.conf, the
    /// common arguments (`-m` and `-k` override `mon_host` and `keyring`) and the monitor's
    /// own command-line values (see the module docs for the options read). With
    /// `overrides.mkfs` and an empty data directory, `bootstrap` is filled from the keyring;
    /// with data present, `--mkfs` has nothing to do (logged).
    pub fn from_conf(
        conf: &Conf,
        args: &CommonArgs,
        data_dir: PathBuf,
        overrides: &MonOverrides,
    ) -> Result<MonConfig, MonError> {
        let mut conf = conf.clone();
        args.apply_overrides(&mut conf)?;
        let entity = match quarry_conf::resolve_entity_as(args, EntityType::Mon) {
            Err(ConfError::MissingId { .. }) => {
                EntityName { kind: EntityType::Mon, id: NAME_DEFAULT.to_string() }
            }
            other => other?,
        };
        let listen = match overrides.addr {
            Some(addr) => addr,
            None => conf.get_parsed(&entity, "mon_host", first_mon_addr)?.unwrap_or(LISTEN_DEFAULT),
        };
        let mut cfg = MonConfig::new(&entity.id, data_dir, listen);
        cfg.pool_default_size = match overrides.pool_default_size {
            Some(size) => size,
            None => conf
                .get_parsed(&entity, "osd_pool_default_size", |v| {
                    ranged(v, 1, state::POOL_SIZE_MAX)
                })?
                .unwrap_or(cfg.pool_default_size),
        };
        cfg.pool_default_pg_num = match overrides.pool_default_pg_num {
            Some(pg_num) => pg_num,
            None => conf
                .get_parsed(&entity, "osd_pool_default_pg_num", |v| {
                    ranged(v, 1, state::PG_NUM_MAX)
                })?
                .unwrap_or(cfg.pool_default_pg_num),
        };
        if let Some(ttl) = conf.get_parsed(&entity, "auth_service_ticket_ttl", ticket_ttl)? {
            cfg.ticket_ttl = ttl;
        }
        if let Some(interval) =
            conf.get_parsed(&entity, "mon_osd_down_out_interval", down_out_interval)?
        {
            cfg.down_out_interval = interval;
        }
        cfg.full_ratios = quarry_conf::full_ratios(&conf, &entity)?;
        cfg.limits = quarry_conf::server_limits(&conf, &entity, quarry_types::DaemonKind::Mon)?;
        if let Some(max) = conf.get_parsed(&entity, "mon_blocklist_max", |v| {
            ranged(v, 1, crate::admin::BLOCKLIST_HARD_MAX)
        })? {
            cfg.blocklist_max = max;
        }
        if let Some(grace) = overrides.osd_grace {
            cfg.osd_grace = grace;
        }
        if let Some(mkfs) = &overrides.mkfs {
            cfg.mkfs(&conf, &entity, &args.cluster, mkfs)?;
        }
        Ok(cfg)
    }

    /// True if the data directory holds anything (a monitor ran here before).
    pub fn has_data(&self) -> bool {
        has_entries(&self.data_dir)
    }

    /// `--mkfs`: sets `bootstrap` from the keyring, unless the data directory has data.
    fn mkfs(
        &mut self,
        conf: &Conf,
        entity: &EntityName,
        cluster: &str,
        mkfs: &Mkfs,
    ) -> Result<(), MonError> {
        let bad = |reason: String| MonError::Config { reason };
        if self.has_data() {
            tracing::info!(data = %self.data_dir.display(), "monitor data exists: --mkfs has nothing to do");
            return Ok(());
        }
        let fsid = mkfs
            .fsid
            .clone()
            .or_else(|| conf.get(entity, "fsid").filter(|f| !f.trim().is_empty()))
            .ok_or_else(|| bad("--mkfs needs --fsid (or the fsid option)".into()))?;
        let search = quarry_conf::keyring_search_paths(conf, entity, cluster);
        let path = quarry_conf::find_keyring(&search).ok_or_else(|| {
            let tried: Vec<String> = search.iter().map(|p| p.display().to_string()).collect();
            bad(format!(
                "--mkfs needs a keyring with client.admin (--keyring FILE or the keyring option); tried {}",
                tried.join(",")
            ))
        })?;
        let ring = Keyring::from_file(&path)
            .map_err(|e| bad(format!("reading keyring {}: {e}", path.display())))?;
        if !ring.entries.contains_key(&EntityName::client("admin")) {
            return Err(bad(format!("keyring {} has no client.admin", path.display())));
        }
        let entities =
            ring.entries.iter().map(|(n, e)| (n.clone(), e.key.clone(), e.caps.clone())).collect();
        let osds: Vec<OsdId> = if mkfs.osds.is_empty() {
            ring.entries
                .keys()
                .filter(|n| n.kind == EntityType::Osd)
                .filter_map(|n| n.id.parse().ok())
                .collect()
        } else {
            mkfs.osds.clone()
        };
        let host = quarry_conf::local_hostname();
        let pools = mkfs
            .pools
            .iter()
            .map(|p| (p.clone(), self.pool_default_pg_num, self.pool_default_size))
            .collect();
        self.bootstrap = Some(Bootstrap {
            fsid,
            entities,
            osds: osds.into_iter().map(|id| (id, host.clone())).collect(),
            pools,
        });
        Ok(())
    }

    pub(crate) fn validate(&self) -> Result<(), MonError> {
        let bad = |reason: String| Err(MonError::Config { reason });
        if self.name.is_empty()
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad(format!("monitor name '{}' must be [A-Za-z0-9_.-]+", self.name));
        }
        if self.ticket_ttl < Duration::from_secs(state::SERVICE_KEY_TTL_MIN) {
            return bad(format!("ticket_ttl {:?} is below 2 s", self.ticket_ttl));
        }
        if self.osd_grace < Duration::from_millis(200) {
            return bad(format!("osd_grace {:?} is below 200 ms", self.osd_grace));
        }
        if !(1..=state::PG_NUM_MAX).contains(&self.pool_default_pg_num) {
            return bad(format!("pool_default_pg_num {} out of range", self.pool_default_pg_num));
        }
        if !(1..=state::POOL_SIZE_MAX).contains(&self.pool_default_size) {
            return bad(format!("pool_default_size {} out of range", self.pool_default_size));
        }
        if let Err(reason) = self.limits.validate() {
            return bad(reason);
        }
        Ok(())
    }
}

/// The first address of a `mon_host` value.
fn first_mon_addr(text: &str) -> Result<SocketAddr, String> {
    let addrs = quarry_conf::parse_mon_host(text).map_err(|e| e.to_string())?;
    addrs.first().copied().ok_or_else(|| "names no monitor".to_string())
}

/// An integer in `min..=max`.
fn ranged(text: &str, min: u32, max: u32) -> Result<u32, String> {
    quarry_conf::parse_int(text)
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("expected an integer from {min} to {max}"))
}

/// Seconds, at least the service key's minimum lifetime.
fn ticket_ttl(text: &str) -> Result<Duration, String> {
    let secs = quarry_conf::parse_float(text).map_err(str::to_string)?;
    let min = state::SERVICE_KEY_TTL_MIN as f64;
    if secs < min {
        return Err(format!("expected at least {min} seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| "too large".to_string())
}

fn down_out_interval(text: &str) -> Result<Duration, String> {
    let secs = quarry_conf::parse_float(text).map_err(str::to_string)?;
    if secs < 0.0 {
        return Err("expected a number of seconds, 0 or more".to_string());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| "too large".to_string())
}

/// Whether `dir` holds anything but `log/` (where `quarry mon` writes its log file by
/// default, before `--mkfs` looks at the directory).
fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|d| d.flatten().any(|e| e.file_name() != "log")).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Conf {
        Conf::parse(text).unwrap()
    }

    fn build(text: &str, args: &CommonArgs, o: &MonOverrides) -> Result<MonConfig, MonError> {
        MonConfig::from_conf(&conf(text), args, PathBuf::from("/nonexistent/mon"), o)
    }

    #[test]
    fn options_come_from_the_monitor_sections_and_the_command_line_wins() {
        let text = "[global]\nmon_host = 10.0.0.1:6790, 10.0.0.2\nosd pool default size = 2\n\
                    [mon]\nosd_pool_default_pg_num = 16\n[mon.b]\nosd_pool_default_size = 1\n\
                    auth service ticket ttl = 60\n";
        let a = build(text, &CommonArgs::default(), &MonOverrides::default()).unwrap();
        assert_eq!(a.name, "a");
        assert_eq!(a.listen, "10.0.0.1:6790".parse().unwrap());
        assert_eq!((a.pool_default_size, a.pool_default_pg_num), (2, 16));
        assert_eq!(a.ticket_ttl, Duration::from_secs(300));
        assert!(a.bootstrap.is_none());

        let b_args = CommonArgs { id: Some("b".into()), ..CommonArgs::default() };
        let b = build(text, &b_args, &MonOverrides::default()).unwrap();
        assert_eq!((b.name.as_str(), b.pool_default_size), ("b", 1));
        assert_eq!(b.ticket_ttl, Duration::from_secs(60));

        let m_args = CommonArgs { mon_host: Some("127.0.0.1:7000".into()), ..b_args };
        let o = MonOverrides {
            pool_default_size: Some(3),
            osd_grace: Some(Duration::from_secs(2)),
            ..MonOverrides::default()
        };
        let b = build(text, &m_args, &o).unwrap();
        assert_eq!(b.listen, "127.0.0.1:7000".parse().unwrap(), "-m overrides mon_host");
        assert_eq!((b.pool_default_size, b.osd_grace), (3, Duration::from_secs(2)));
        let o = MonOverrides { addr: Some("127.0.0.1:0".parse().unwrap()), ..o };
        assert_eq!(build(text, &m_args, &o).unwrap().listen.port(), 0, "--addr wins");

        let bare = build("", &CommonArgs::default(), &MonOverrides::default()).unwrap();
        assert_eq!(bare.listen, LISTEN_DEFAULT);
        assert_eq!((bare.pool_default_size, bare.pool_default_pg_num), (3, 32));
    }

    #[test]
    fn bad_values_are_errors_naming_option_value_and_line() {
        let none = MonOverrides::default();
        let err = build("[global]\nosd_pool_default_size = two\n", &CommonArgs::default(), &none)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value 'two' for option 'osd_pool_default_size' (line 2, [global]): expected an integer from 1 to 10"
        );
        for (text, option) in [
            ("[mon]\nosd_pool_default_size = 0\n", "osd_pool_default_size"),
            ("[mon.a]\nosd_pool_default_pg_num = 5000\n", "osd_pool_default_pg_num"),
            ("[mon]\nauth_service_ticket_ttl = 1\n", "auth_service_ticket_ttl"),
            ("[global]\nmon_host = 1.2.3.4:x\n", "mon_host"),
        ] {
            let err = build(text, &CommonArgs::default(), &none).unwrap_err().to_string();
            assert!(err.contains(&format!("for option '{option}'")), "{text}: {err}");
            assert!(err.contains("line 2,"), "{text}: {err}");
        }
        // The command line's value is used instead of the bad one: no error.
        let o = MonOverrides { pool_default_size: Some(2), ..MonOverrides::default() };
        let cfg = build("[global]\nosd_pool_default_size = two\n", &CommonArgs::default(), &o);
        assert_eq!(cfg.unwrap().pool_default_size, 2);
    }

    #[test]
    fn mkfs_reads_fsid_and_keyring_from_options_and_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let ring_path = dir.path().join("mon.keyring");
        let mut ring = Keyring::default();
        let admin_caps = BTreeMap::from([("mon".to_string(), "allow *".to_string())]);
        ring.insert(EntityName::client("admin"), CryptoKey::generate(), admin_caps);
        ring.insert(EntityName::osd(0), CryptoKey::generate(), BTreeMap::new());
        ring.insert(EntityName::osd(2), CryptoKey::generate(), BTreeMap::new());
        std::fs::write(&ring_path, ring.to_string()).unwrap();
        let text = format!(
            "[global]\nfsid = f-1\nosd_pool_default_size = 2\n[mon]\nkeyring = {}\n",
            dir.path().join("$cluster.keyring").display()
        );
        let mkfs = Mkfs { pools: vec!["rbd".into()], ..Mkfs::default() };
        let o = MonOverrides { mkfs: Some(mkfs.clone()), ..MonOverrides::default() };
        let data = dir.path().join("mon");
        let args = CommonArgs { cluster: "mon".into(), ..CommonArgs::default() };
        let cfg = MonConfig::from_conf(&conf(&text), &args, data.clone(), &o).unwrap();
        let boot = cfg.bootstrap.unwrap();
        assert_eq!(boot.fsid, "f-1");
        assert_eq!(boot.entities.len(), 3);
        let ids: Vec<OsdId> = boot.osds.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [0, 2]);
        assert_eq!(boot.pools, [("rbd".to_string(), 32, 2)]);

        // -k replaces the keyring option; --fsid the fsid option; --osds the keyring's list.
        let missing = dir.path().join("missing.keyring");
        let args = CommonArgs { keyring: Some(missing.display().to_string()), ..args };
        let err = MonConfig::from_conf(&conf(&text), &args, data.clone(), &o).unwrap_err();
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
        let args = CommonArgs { keyring: Some(ring_path.display().to_string()), ..args };
        let mkfs = Mkfs { fsid: Some("f-2".into()), osds: vec![7], ..mkfs };
        let o = MonOverrides { mkfs: Some(mkfs), ..o };
        let boot = MonConfig::from_conf(&conf(""), &args, data.clone(), &o).unwrap().bootstrap;
        let boot = boot.unwrap();
        assert_eq!((boot.fsid.as_str(), boot.osds[0].0), ("f-2", 7));

        let no_fsid = MonOverrides { mkfs: Some(Mkfs::default()), ..MonOverrides::default() };
        let err = MonConfig::from_conf(&conf(""), &args, data.clone(), &no_fsid).unwrap_err();
        assert!(err.to_string().contains("--fsid"), "{err}");

        // Only a log directory (`quarry mon` writes its log there): still no data.
        std::fs::create_dir_all(data.join("log")).unwrap();
        std::fs::write(data.join("log").join("quarry-mon.a.log"), "x\n").unwrap();
        let cfg = MonConfig::from_conf(&conf(&text), &args, data.clone(), &no_fsid).unwrap();
        assert!(cfg.bootstrap.is_some() && !cfg.has_data());

        // A data directory with data: --mkfs has nothing to do.
        std::fs::create_dir_all(data.join("wal")).unwrap();
        let cfg = MonConfig::from_conf(&conf(&text), &args, data, &no_fsid).unwrap();
        assert!(cfg.bootstrap.is_none() && cfg.has_data());
    }
}
