//! A daemon's connection and memory budget ([`ServerLimits`]): how many connections it
//! serves (in total and per entity), how many bytes of requests it holds at once (clients and
//! peer daemons apart), how many bytes of replies it keeps queued for peers that read slowly,
//! how long a connection may stay silent, and the resident memory it aims at (its caches are
//! sized from that). Plain data: `quarry-conf` reads it from
//! ceph.conf (Ceph's option names where they exist), `quarry-wire` enforces it.
//!
//! Defaults follow Ceph's where Ceph has the option (`osd_client_message_size_cap` 500 MiB,
//! `mon_client_bytes` 100 MiB, `ms_dispatch_throttle_bytes` 100 MiB, `mon_daemon_bytes`
//! 400 MiB, `osd_client_message_cap` 256, `ms_tcp_read_timeout` 900 s).

use std::time::Duration;

/// Which daemon a budget is for (their defaults differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaemonKind {
    /// A monitor.
    Mon,
    /// An OSD.
    Osd,
}

/// One daemon's budget. Per-entity shares are fixed fractions of the daemon-wide figures
/// ([`ServerLimits::ENTITY_SHARE`]), so one user never holds all of a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// `ms_max_connections`: connections open at once, authenticated or not (lowered at
    /// start to what the file-descriptor limit leaves after the daemon's own files).
    pub max_connections: usize,
    /// `ms_max_connections_per_entity`: authenticated connections of one client entity.
    pub max_connections_per_entity: usize,
    /// Bytes of client requests read and not answered yet, all connections together
    /// (`osd_client_message_size_cap` on an OSD, `mon_client_bytes` on a monitor). A request
    /// body is read only once it fits; a frame announced larger than this is refused unread.
    pub client_request_bytes: u64,
    /// The same for peer daemons (`osd.N`, `mon.X`): `ms_dispatch_throttle_bytes` on an OSD,
    /// `mon_daemon_bytes` on a monitor (apart, so clients cannot starve replication).
    pub daemon_request_bytes: u64,
    /// `osd_client_message_cap`: requests one connection may have in flight (Ceph counts them
    /// per daemon; Quarry per connection, so one client's pipeline cannot block another's).
    pub requests_per_connection: usize,
    /// `ms_reply_queue_bytes`: bytes of replies and pushed events queued for clients and not
    /// yet written to their sockets, all connections together.
    pub reply_queue_bytes: u64,
    /// `ms_reply_queue_bytes_per_connection`: the same for one connection; a connection at
    /// its share is not read from until its peer drains replies.
    pub reply_queue_bytes_per_connection: u64,
    /// `ms_tcp_read_timeout`: an authenticated connection with nothing in flight that sends
    /// nothing for this long is closed, and so is one whose peer reads nothing of a pending
    /// reply for this long.
    pub idle_timeout: Duration,
    /// `ms_handshake_timeout`: bound on an unauthenticated connection (the whole handshake).
    pub handshake_timeout: Duration,
    /// `osd_memory_target` / `mon_memory_target`: the resident memory the daemon aims at.
    /// An OSD sizes its caches from it ([`ServerLimits::store_cache_bytes`],
    /// [`ServerLimits::meta_cache_bytes`], [`ServerLimits::wal_cache_bytes`]); requests and
    /// replies in flight are bounded by the byte budgets above, which are transient.
    pub memory_target: u64,
}

impl ServerLimits {
    /// One client entity may hold at most this fraction (1/N) of each byte budget (a request
    /// or reply larger than the share is still admitted when the entity holds nothing else).
    pub const ENTITY_SHARE: u64 = 4;
    /// What every request is charged at least, whatever its size.
    pub const REQUEST_CHARGE_MIN: u64 = 1024;

    /// The defaults for `kind`.
    pub fn defaults(kind: DaemonKind) -> ServerLimits {
        let (client, daemon) = match kind {
            DaemonKind::Osd => (500 << 20, 100 << 20),
            DaemonKind::Mon => (100 << 20, 400 << 20),
        };
        ServerLimits {
            max_connections: 8192,
            max_connections_per_entity: 2048,
            client_request_bytes: client,
            daemon_request_bytes: daemon,
            requests_per_connection: 256,
            reply_queue_bytes: 256 << 20,
            reply_queue_bytes_per_connection: 32 << 20,
            idle_timeout: Duration::from_secs(900),
            handshake_timeout: Duration::from_secs(10),
            memory_target: match kind {
                DaemonKind::Osd => Self::OSD_MEMORY_TARGET_DEFAULT,
                DaemonKind::Mon => 2 << 30,
            },
        }
    }

    /// Quarry's default `osd_memory_target` (Ceph's is 4 GiB, most of it BlueStore's cache,
    /// the only cache Ceph's data has; Quarry's store files are read through the kernel's
    /// page cache as well, so its own caches can stay small: docs/benchmarks.md, "Memory").
    pub const OSD_MEMORY_TARGET_DEFAULT: u64 = 192 << 20;

    /// The store's own page cache: an eighth of the memory target, at least 8 MiB (24 MiB
    /// of the default 192). It was a quarter until the object metadata cache's entries
    /// shrank to ~230 bytes, then three sixteenths; each step moved 12 MiB to that cache
    /// (4 KiB reads at queue depth 32 +19%, then +17%, writes level both times:
    /// docs/benchmarks.md, "Twenty-first round" and "Twenty-third round").
    pub fn store_cache_bytes(&self) -> u64 {
        (self.memory_target / 8).max(8 << 20)
    }

    /// The store's object metadata cache (what reads of recently read objects skip the
    /// database for): three sixteenths of the memory target, at least 1 MiB (36 MiB of the
    /// default: ~190k 4 KiB objects' entries, or ~900 image objects written 4 KiB at a time).
    pub fn meta_cache_bytes(&self) -> u64 {
        (self.memory_target * 3 / 16).max(1 << 20)
    }

    /// The WAL's cache of recent entries (what followers and lagging appliers read): a
    /// sixteenth of the memory target, at least 4 MiB.
    pub fn wal_cache_bytes(&self) -> u64 {
        (self.memory_target / 16).max(4 << 20)
    }

    /// No limit worth the name (tools and tests that measure something else).
    pub fn unlimited() -> ServerLimits {
        ServerLimits {
            max_connections: usize::MAX,
            max_connections_per_entity: usize::MAX,
            client_request_bytes: u64::MAX / 8,
            daemon_request_bytes: u64::MAX / 8,
            requests_per_connection: 256,
            reply_queue_bytes: u64::MAX / 8,
            reply_queue_bytes_per_connection: u64::MAX / 8,
            idle_timeout: Duration::from_secs(365 * 86400),
            handshake_timeout: Duration::from_secs(10),
            memory_target: 4 << 30,
        }
    }

    /// `Err` with the reason if a value cannot work (zero where at least one is needed).
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            ("ms_max_connections", self.max_connections as u64),
            ("ms_max_connections_per_entity", self.max_connections_per_entity as u64),
            ("client request bytes", self.client_request_bytes),
            ("daemon request bytes", self.daemon_request_bytes),
            ("osd_client_message_cap", self.requests_per_connection as u64),
            ("ms_reply_queue_bytes", self.reply_queue_bytes),
            ("ms_reply_queue_bytes_per_connection", self.reply_queue_bytes_per_connection),
            ("memory target", self.memory_target),
        ];
        for (name, value) in checks {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.idle_timeout.is_zero() || self.handshake_timeout.is_zero() {
            return Err("timeouts must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_follow_ceph() {
        let osd = ServerLimits::defaults(DaemonKind::Osd);
        let mon = ServerLimits::defaults(DaemonKind::Mon);
        osd.validate().unwrap();
        mon.validate().unwrap();
        assert_eq!(osd.client_request_bytes, 500 << 20);
        assert_eq!(mon.client_request_bytes, 100 << 20);
        assert!(osd.max_connections_per_entity < osd.max_connections);
        let zero = ServerLimits { max_connections: 0, ..osd };
        assert!(zero.validate().unwrap_err().contains("ms_max_connections"));
    }
}
