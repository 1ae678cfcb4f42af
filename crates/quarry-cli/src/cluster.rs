//! A cluster's identity on disk: the files that carry a [`ClusterSpec`] (fsid, monitor
//! address, keys; decided with the entities and caps by `quarry_mon::spec`, which the test kit
//! shares) in Ceph's formats (`ceph.conf`, `ceph.client.admin.keyring`, `osd.N/keyring`, the
//! monitor's bootstrap keyring, `env`). Used by `quarry up` (one process) and
//! `quarry cluster-init` (files for separate `quarry mon` / `quarry osd` processes), plus the
//! directory lock that keeps two `quarry up` off one directory.
//!
//! Files are written atomically (temporary file, fsync, rename), keyrings readable by their
//! owner only. `ceph.conf` is written last on first start, so its presence means the cluster
//! directory is complete.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use quarry_auth::{CryptoKey, Keyring};
use quarry_conf::Conf;
use quarry_types::{EntityName, OsdId};

use crate::error::CliError;

/// Name of the lock file in a `quarry up` directory.
pub const LOCK_FILE: &str = "quarry.lock";
/// The conf file in a cluster directory.
pub const CONF_FILE: &str = "ceph.conf";
/// The admin keyring in a cluster directory.
pub const ADMIN_KEYRING: &str = "ceph.client.admin.keyring";
/// The keyring `quarry mon --mkfs` bootstraps from (admin and every OSD, with caps).
pub const MON_KEYRING: &str = "mon.keyring";

pub use quarry_mon::ClusterSpec;

/// A free TCP port on 127.0.0.1 (bound and released at once).
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("looking for a free port")?;
    Ok(listener.local_addr().context("looking for a free port")?.port())
}

/// The files that carry a [`ClusterSpec`] (decided by `quarry_mon::spec`, shared with the
/// test kit) in Ceph's formats.
pub trait SpecFiles: Sized {
    /// `ceph.conf` for this cluster; `dir` is where the keyrings live.
    fn conf_text(&self, dir: &Path, pool_size: u32, writer: &str) -> String;
    /// Writes the OSD keyrings, the admin keyring, then `ceph.conf`.
    fn write_files(&self, dir: &Path, pool_size: u32, writer: &str) -> anyhow::Result<()>;
    /// Reads a cluster directory written by [`SpecFiles::write_files`].
    fn load(dir: &Path) -> anyhow::Result<Self>;
}

impl SpecFiles for ClusterSpec {
    /// `ceph.conf` for this cluster; `dir` is where the keyrings live. The keyring option is
    /// `DIR/$cluster.$name.keyring` first: `DIR/ceph.client.admin.keyring` for the admin, and
    /// a user's keyring saved as `DIR/ceph.client.NAME.keyring` is found with `--id NAME`
    /// alone; then Ceph's default places (`/etc/ceph/$cluster.$name.keyring`, ...), so a
    /// keyring saved where Ceph's documentation puts it is found too.
    fn conf_text(&self, dir: &Path, pool_size: u32, writer: &str) -> String {
        let own = dir.join("$cluster.$name.keyring");
        let keyring = format!("{},{}", own.display(), quarry_conf::KEYRING_DEFAULT);
        format!(
            "# Written by `{writer}`. Ceph's tools and Quarry's read it (CEPH_CONF or -c).\n\
             [global]\n\
             \tfsid = {fsid}\n\
             \tmon_host = {mon}\n\
             \tkeyring = {keyring}\n\
             \tauth_cluster_required = cephx\n\
             \tauth_service_required = cephx\n\
             \tauth_client_required = cephx\n\
             \tosd_pool_default_size = {pool_size}\n",
            fsid = self.fsid,
            mon = self.mon_addr,
        )
    }

    /// Writes the OSD keyrings, the admin keyring, then `ceph.conf` (last: its presence
    /// marks a complete directory).
    fn write_files(&self, dir: &Path, pool_size: u32, writer: &str) -> anyhow::Result<()> {
        for id in self.osd_keys.keys() {
            let osd_dir = dir.join(format!("osd.{id}"));
            std::fs::create_dir_all(&osd_dir)
                .with_context(|| format!("creating {}", osd_dir.display()))?;
            let ring = self.osd_keyring(*id).ok_or_else(|| anyhow!("no key for osd.{id}"))?;
            write_atomic(&osd_dir.join("keyring"), ring.to_string().as_bytes(), 0o600)?;
        }
        write_atomic(&dir.join(ADMIN_KEYRING), self.admin_keyring().to_string().as_bytes(), 0o600)?;
        write_atomic(&dir.join(CONF_FILE), self.conf_text(dir, pool_size, writer).as_bytes(), 0o644)
    }

    /// Reads a cluster directory written by [`SpecFiles::write_files`].
    fn load(dir: &Path) -> anyhow::Result<ClusterSpec> {
        let conf_path = dir.join(CONF_FILE);
        let text = std::fs::read_to_string(&conf_path)
            .with_context(|| format!("reading {}", conf_path.display()))?;
        let conf =
            Conf::parse(&text).with_context(|| format!("parsing {}", conf_path.display()))?;
        let admin = EntityName::client("admin");
        let fsid = conf
            .get(&admin, "fsid")
            .ok_or_else(|| anyhow!("{} has no fsid", conf_path.display()))?;
        let mon_host = conf
            .get(&admin, "mon_host")
            .ok_or_else(|| anyhow!("{} has no mon_host", conf_path.display()))?;
        let mon_addr = *quarry_conf::parse_mon_host(&mon_host)
            .with_context(|| format!("mon_host in {}", conf_path.display()))?
            .first()
            .ok_or_else(|| anyhow!("mon_host in {} names no monitor", conf_path.display()))?;
        let admin_key = key_from(&dir.join(ADMIN_KEYRING), &admin)?;
        let mut osd_keys = BTreeMap::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix("osd.").and_then(|n| n.parse::<OsdId>().ok()) else {
                continue;
            };
            let keyring = entry.path().join("keyring");
            if keyring.exists() {
                osd_keys.insert(id, key_from(&keyring, &EntityName::osd(id))?);
            }
        }
        if osd_keys.is_empty() {
            bail!("no OSD keyrings (osd.N/keyring) in {}", dir.display());
        }
        Ok(ClusterSpec { fsid, mon_addr, admin_key, osd_keys })
    }
}

/// The key of `entity` in the keyring file at `path`.
pub fn key_from(path: &Path, entity: &EntityName) -> anyhow::Result<CryptoKey> {
    let ring =
        Keyring::from_file(path).with_context(|| format!("reading keyring {}", path.display()))?;
    ring.get(entity)
        .map(|e| e.key.clone())
        .ok_or_else(|| anyhow!("keyring {} has no key for {entity}", path.display()))
}

/// Writes `data` to `path` atomically and durably (`quarry_persist::write_atomic`: a temporary
/// file in the same directory, fsynced, renamed over `path`, directory fsynced).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    Ok(quarry_persist::write_atomic(path, data, mode)?)
}

/// An exclusive `flock(2)` on `DIR/quarry.lock`, held until dropped; the file holds the
/// holder's pid for the error message of the next comer.
pub type DirLock = quarry_persist::LockFile;

/// Takes the lock of `dir` without waiting.
pub fn lock_dir(dir: &Path) -> Result<DirLock, CliError> {
    quarry_persist::LockFile::acquire(&dir.join(LOCK_FILE)).map_err(|e| match e {
        quarry_persist::LockError::Held { holder, .. } => CliError::InUse {
            dir: dir.to_path_buf(),
            pid: holder.map_or_else(|| "?".to_string(), |pid| pid.to_string()),
        },
        quarry_persist::LockError::Fs(e) => CliError::io(&e.path, e.source),
    })
}

/// True if `dir` exists and holds at least one entry.
pub fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false)
}

/// An absolute form of `path` (the directory must exist).
pub fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    std::fs::canonicalize(path).map_err(|e| CliError::io(path, e))
}

/// `quarry cluster-init DIR --osds N`: the files for a cluster of separate processes.
#[derive(clap::Args, Debug)]
pub struct ClusterInitArgs {
    /// Directory for the conf and keyrings (created if missing; must not hold a cluster).
    pub dir: PathBuf,
    /// Number of OSDs.
    #[arg(long, default_value_t = 3)]
    pub osds: u32,
    /// Monitor port on 127.0.0.1 (default: a free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Replicas of the bootstrap pool and default for new pools (default: min(3, OSDs)).
    #[arg(long)]
    pub size: Option<u32>,
}

/// Writes `DIR/ceph.conf`, `DIR/ceph.client.admin.keyring`, `DIR/mon.keyring` and
/// `DIR/osd.N/keyring`, and prints the commands that start the daemons.
pub fn cluster_init(args: ClusterInitArgs) -> Result<(), CliError> {
    if args.osds == 0 {
        return Err(CliError::Usage {
            message: "quarry cluster-init: --osds must be at least 1".into(),
            status: 1,
        });
    }
    std::fs::create_dir_all(&args.dir).map_err(|e| CliError::io(&args.dir, e))?;
    let dir = absolute(&args.dir)?;
    if dir.join(CONF_FILE).exists() {
        return Err(CliError::Usage {
            message: format!(
                "quarry cluster-init: {} already holds a cluster",
                dir.join(CONF_FILE).display()
            ),
            status: 17,
        });
    }
    let port = match args.port {
        Some(p) => p,
        None => free_port()?,
    };
    let size = args.size.unwrap_or(args.osds.min(3));
    let spec = ClusterSpec::generate(args.osds, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    write_atomic(&dir.join(MON_KEYRING), spec.full_keyring().to_string().as_bytes(), 0o600)?;
    spec.write_files(&dir, size, "quarry cluster-init")?;
    let ids: Vec<String> = spec.osd_keys.keys().map(|id| id.to_string()).collect();
    let d = dir.display();
    crate::outln!("cluster {} in {d}: monitor at {}, {} OSDs", spec.fsid, spec.mon_addr, args.osds);
    crate::outln!("start the monitor:");
    crate::outln!(
        "  quarry mon --data {d}/mon --addr {} --mkfs --fsid {} --keyring {d}/{MON_KEYRING} --osds {} --pool rbd --size {size}",
        spec.mon_addr,
        spec.fsid,
        ids.join(",")
    );
    crate::outln!("start each OSD:");
    for id in &ids {
        crate::outln!("  quarry osd --id {id} --data {d}/osd.{id} -c {d}/{CONF_FILE} --keyring {d}/osd.{id}/keyring");
    }
    crate::outln!("then: export CEPH_CONF={d}/{CONF_FILE}; ceph -s");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ClusterSpec::generate(3, "127.0.0.1:6789".parse().unwrap());
        spec.write_files(dir.path(), 1, "test").unwrap();
        let back = ClusterSpec::load(dir.path()).unwrap();
        assert_eq!(back.fsid, spec.fsid);
        assert_eq!(back.mon_addr, spec.mon_addr);
        assert_eq!(back.admin_key, spec.admin_key);
        assert_eq!(back.osd_keys, spec.osd_keys);
        let conf = std::fs::read_to_string(dir.path().join(CONF_FILE)).unwrap();
        assert!(conf.contains("mon_host = 127.0.0.1:6789"), "{conf}");
        // The keyring option expands to the admin keyring for client.admin first, then
        // Ceph's default places.
        let parsed = Conf::parse(&conf).unwrap();
        let paths =
            quarry_conf::keyring_search_paths(&parsed, &EntityName::client("admin"), "ceph");
        assert_eq!(paths[0], dir.path().join(ADMIN_KEYRING));
        assert_eq!(paths[1], std::path::Path::new("/etc/ceph/ceph.client.admin.keyring"));
        let admin = std::fs::read_to_string(dir.path().join(ADMIN_KEYRING)).unwrap();
        assert!(admin.starts_with("[client.admin]\n\tkey = "), "{admin}");
        assert!(admin.contains("caps mon = \"allow *\""), "{admin}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(ADMIN_KEYRING)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let osd1 = std::fs::read_to_string(dir.path().join("osd.1/keyring")).unwrap();
        assert!(osd1.contains("caps mon = \"profile osd\""), "{osd1}");
    }

    #[test]
    fn second_lock_reports_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in this process
        // conflicts like another process would.
        let err = lock_dir(dir.path()).unwrap_err();
        assert_eq!(err.status(), 16);
        assert!(err.to_string().contains(&format!("(pid {})", std::process::id())), "{err}");
        drop(held);
        lock_dir(dir.path()).unwrap();
    }
}
