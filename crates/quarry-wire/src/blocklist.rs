//! Blocklist entries and how they match a client: the keys of `ClusterMap::blocklist` are
//! either a client instance `entity@global_id` (`client.qemu@4123`) or an address in Ceph's
//! form `IP:PORT/NONCE` (`127.0.0.1:0/4123`, `[::1]:0/4123`).
//!
//! A client's address, as OSDs show it (`list_watchers`) and match it, is `IP:0/GLOBAL_ID`:
//! the IP its connection comes from, port 0 (clients do not listen, as in Ceph) and its
//! instance's global id as the nonce. An entry matches a client when it names its instance,
//! its address exactly, or its IP with port 0 and nonce 0 (`10.0.0.5:0/0` covers every client
//! from that IP, as Ceph's range-less address entries do). Entries whose expiry (unix seconds)
//! is not after `now` match nothing.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// A Ceph-style entity address: `IP:PORT/NONCE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityAddr {
    /// IP and port.
    pub addr: SocketAddr,
    /// Instance nonce (a client's global id).
    pub nonce: u64,
}

impl EntityAddr {
    /// The address of the client instance `global_id` connecting from `ip`.
    pub fn client(ip: IpAddr, global_id: u64) -> EntityAddr {
        EntityAddr { addr: SocketAddr::new(ip, 0), nonce: global_id }
    }
}

impl fmt::Display for EntityAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.nonce)
    }
}

impl FromStr for EntityAddr {
    type Err = String;

    /// `IP:PORT/NONCE`; `IP:PORT` and a bare `IP` mean nonce 0 (and port 0).
    fn from_str(s: &str) -> Result<EntityAddr, String> {
        let bad = || format!("'{s}' is not an address (IP:PORT/NONCE)");
        let (head, nonce) = match s.split_once('/') {
            Some((head, nonce)) => (head, nonce.parse::<u64>().map_err(|_| bad())?),
            None => (s, 0),
        };
        let addr = match head.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => SocketAddr::new(head.parse::<IpAddr>().map_err(|_| bad())?, 0),
        };
        Ok(EntityAddr { addr, nonce })
    }
}

/// A parsed blocklist key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlocklistEntry {
    /// `entity@global_id`.
    Instance(String),
    /// `IP:PORT/NONCE`.
    Addr(EntityAddr),
}

impl BlocklistEntry {
    /// Parses what `ceph osd blocklist add|rm` accepts: `TYPE.ID@GLOBAL_ID` or an address.
    /// Returns the entry and its canonical key in the map.
    pub fn parse(s: &str) -> Result<(BlocklistEntry, String), String> {
        if let Some((entity, gid)) = s.rsplit_once('@') {
            let named =
                entity.split_once('.').is_some_and(|(t, id)| !t.is_empty() && !id.is_empty());
            if named && gid.parse::<u64>().is_ok() {
                return Ok((BlocklistEntry::Instance(s.to_string()), s.to_string()));
            }
            return Err(format!("'{s}' is not a client instance (TYPE.ID@GLOBAL_ID)"));
        }
        let addr: EntityAddr = s.parse()?;
        Ok((BlocklistEntry::Addr(addr), addr.to_string()))
    }
}

/// The blocklist key that fences the client `instance` (`entity@global_id`) connecting from
/// `ip`, if any entry of `blocklist` valid at `now` does.
pub fn fencing_entry<'a>(
    blocklist: &'a std::collections::BTreeMap<String, u64>,
    instance: &str,
    addr: Option<EntityAddr>,
    now: u64,
) -> Option<&'a str> {
    if blocklist.is_empty() {
        return None;
    }
    let live = |key: &str| blocklist.get_key_value(key).filter(|(_, &until)| until > now);
    if let Some((key, _)) = live(instance) {
        return Some(key);
    }
    let addr = addr?;
    let whole_ip = EntityAddr { addr: SocketAddr::new(addr.addr.ip(), 0), nonce: 0 };
    [addr, whole_ip].into_iter().find_map(|a| live(&a.to_string()).map(|(k, _)| k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn addresses_parse_and_print_as_ceph() {
        let a: EntityAddr = "127.0.0.1:0/4123".parse().unwrap();
        assert_eq!(a, EntityAddr::client("127.0.0.1".parse().unwrap(), 4123));
        assert_eq!(a.to_string(), "127.0.0.1:0/4123");
        assert_eq!("10.0.0.5".parse::<EntityAddr>().unwrap().to_string(), "10.0.0.5:0/0");
        assert_eq!("[::1]:6800/7".parse::<EntityAddr>().unwrap().to_string(), "[::1]:6800/7");
        assert!("nonsense".parse::<EntityAddr>().is_err());
        assert!("1.2.3.4:0/x".parse::<EntityAddr>().is_err());
    }

    #[test]
    fn entries_parse_to_canonical_keys() {
        assert_eq!(BlocklistEntry::parse("client.qemu@7").unwrap().1, "client.qemu@7");
        assert_eq!(BlocklistEntry::parse("10.1.2.3").unwrap().1, "10.1.2.3:0/0");
        assert!(BlocklistEntry::parse("client.qemu@x").is_err());
        assert!(BlocklistEntry::parse("qemu@7").is_err());
        assert!(BlocklistEntry::parse("garbage").is_err());
    }

    #[test]
    fn instances_addresses_and_whole_ips_fence_until_expiry() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let me = Some(EntityAddr::client(ip, 42));
        let mut bl = BTreeMap::new();
        assert_eq!(fencing_entry(&bl, "client.a@42", me, 100), None);
        bl.insert("client.a@42".to_string(), 200);
        assert_eq!(fencing_entry(&bl, "client.a@42", me, 100), Some("client.a@42"));
        assert_eq!(fencing_entry(&bl, "client.a@42", me, 200), None, "expired");
        bl.clear();
        bl.insert("10.0.0.5:0/42".to_string(), 200);
        assert_eq!(fencing_entry(&bl, "client.a@42", me, 100), Some("10.0.0.5:0/42"));
        assert_eq!(fencing_entry(&bl, "client.a@43", Some(EntityAddr::client(ip, 43)), 100), None);
        assert_eq!(fencing_entry(&bl, "client.a@42", None, 100), None);
        bl.clear();
        bl.insert("10.0.0.5:0/0".to_string(), 200);
        assert!(fencing_entry(&bl, "client.b@9", Some(EntityAddr::client(ip, 9)), 100).is_some());
        let other = Some(EntityAddr::client("10.0.0.6".parse().unwrap(), 9));
        assert_eq!(fencing_entry(&bl, "client.b@9", other, 100), None);
    }
}
