//! A new cluster's identity and the one place its initial entities are decided: fsid, the
//! monitor's address, `client.admin`'s key, each OSD's key, the caps each of them gets, and
//! the [`Bootstrap`] the monitor applies on first start.
//!
//! `quarry up`, `quarry cluster-init` (files for separate daemons) and the test kit
//! (`quarry-testkit`) all build clusters from a [`ClusterSpec`], so tests run the entities and
//! caps users get. The files that carry a spec in Ceph's formats (`ceph.conf`, keyrings) are
//! written by the CLI; the keyrings themselves are built here.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use rand::RngCore;

use quarry_auth::{CryptoKey, Keyring};
use quarry_types::{EntityName, OsdId};

use crate::Bootstrap;

/// A random (version 4) UUID, the form of a cluster's fsid.
pub fn new_fsid() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// `client.admin`'s caps: everything, on the monitor and on the OSDs.
pub fn admin_caps() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("mon".to_string(), "allow *".to_string()),
        ("osd".to_string(), "allow *".to_string()),
    ])
}

/// An OSD's caps, as Ceph gives `osd.N`: the OSD profile on the monitor (boot, beacons,
/// service keys) and `allow *` on its peers (PG replication traffic).
pub fn osd_caps() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("mon".to_string(), "profile osd".to_string()),
        ("osd".to_string(), "allow *".to_string()),
    ])
}

/// Everything that identifies a cluster: what its first start generates and later starts read.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Cluster id (a UUID).
    pub fsid: String,
    /// The monitor's address.
    pub mon_addr: SocketAddr,
    /// `client.admin`'s key.
    pub admin_key: CryptoKey,
    /// Each OSD's key.
    pub osd_keys: BTreeMap<OsdId, CryptoKey>,
}

impl ClusterSpec {
    /// A new cluster with `osds` OSDs (ids `0..osds`), fresh keys and fsid, and its monitor
    /// at `mon_addr`.
    pub fn generate(osds: u32, mon_addr: SocketAddr) -> ClusterSpec {
        ClusterSpec {
            fsid: new_fsid(),
            mon_addr,
            admin_key: CryptoKey::generate(),
            osd_keys: (0..u64::from(osds)).map(|id| (id, CryptoKey::generate())).collect(),
        }
    }

    /// The entities a new cluster starts with: `client.admin` ([`admin_caps`]) and every
    /// `osd.N` ([`osd_caps`]), with their keys.
    pub fn entities(&self) -> Vec<(EntityName, CryptoKey, BTreeMap<String, String>)> {
        let mut entities =
            vec![(EntityName::client("admin"), self.admin_key.clone(), admin_caps())];
        for (id, key) in &self.osd_keys {
            entities.push((EntityName::osd(*id), key.clone(), osd_caps()));
        }
        entities
    }

    /// What the monitor is bootstrapped with: [`ClusterSpec::entities`], the OSDs (each on
    /// the host `host_of` names), and `pools` (name, pg_num, size).
    pub fn bootstrap(
        &self,
        host_of: impl Fn(OsdId) -> String,
        pools: Vec<(String, u32, u32)>,
    ) -> Bootstrap {
        Bootstrap {
            fsid: self.fsid.clone(),
            entities: self.entities(),
            osds: self.osd_keys.keys().map(|id| (*id, host_of(*id))).collect(),
            pools,
        }
    }

    /// The admin keyring (with caps, as Ceph writes it).
    pub fn admin_keyring(&self) -> Keyring {
        let mut ring = Keyring::default();
        ring.insert(EntityName::client("admin"), self.admin_key.clone(), admin_caps());
        ring
    }

    /// One OSD's keyring.
    pub fn osd_keyring(&self, id: OsdId) -> Option<Keyring> {
        let key = self.osd_keys.get(&id)?;
        let mut ring = Keyring::default();
        ring.insert(EntityName::osd(id), key.clone(), osd_caps());
        Some(ring)
    }

    /// Admin and every OSD, with caps: what `quarry mon --mkfs --keyring` bootstraps from.
    pub fn full_keyring(&self) -> Keyring {
        let mut ring = Keyring::default();
        for (entity, key, caps) in self.entities() {
            ring.insert(entity, key, caps);
        }
        ring
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsids_are_uuid_v4() {
        let f = new_fsid();
        assert_eq!(f.len(), 36);
        let parts: Vec<&str> = f.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('4'));
        assert!("89ab".contains(&parts[3][..1]));
        assert_ne!(new_fsid(), f);
    }

    #[test]
    fn bootstrap_names_admin_and_every_osd_with_their_caps() {
        let spec = ClusterSpec::generate(3, "127.0.0.1:6789".parse().unwrap());
        let b = spec.bootstrap(|_| "h".to_string(), vec![("rbd".into(), 32, 1)]);
        assert_eq!(b.fsid, spec.fsid);
        assert_eq!(b.entities.len(), 4);
        assert_eq!(
            b.entities[0],
            (EntityName::client("admin"), spec.admin_key.clone(), admin_caps())
        );
        assert_eq!(b.entities[2], (EntityName::osd(1), spec.osd_keys[&1].clone(), osd_caps()));
        assert_eq!(b.osds, vec![(0, "h".to_string()), (1, "h".to_string()), (2, "h".to_string())]);
        let per_host = spec.bootstrap(|id| format!("host{id}"), Vec::new());
        assert_eq!(per_host.osds[2], (2, "host2".to_string()));
        let ring = spec.full_keyring();
        assert_eq!(ring.get(&EntityName::osd(2)).unwrap().caps, osd_caps());
        assert_eq!(ring.get(&EntityName::client("admin")).unwrap().key, spec.admin_key);
        assert!(spec.osd_keyring(3).is_none());
    }
}
