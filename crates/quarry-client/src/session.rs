//! The values a monitor session yields, shared by the modules that make them (`monc`), keep
//! them (`shared`) and use them (`osdc`, `rados`): the session itself, the OSD ticket (as
//! received and as installed), a freshly opened session with its first map, and small helpers
//! (our clock, a reply's name for logs). A leaf: it depends on no other module of the crate
//! but the error type.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;

use quarry_wire::{ClusterMap, Event, Reply, RpcClient};

/// Shortest interval between two ticket renewals (guards against a ticket that looks
/// expired on arrival because of clock skew).
const RENEW_INTERVAL_MIN: Duration = Duration::from_secs(1);

/// An authenticated monitor session.
#[derive(Clone)]
pub(crate) struct MonSession {
    /// Pipelined requests to the monitor.
    pub client: RpcClient,
    /// The key both sides derived in the handshake: opens what the monitor seals for us.
    pub session_key: [u8; 32],
    /// Bumped for every new session, so waiters can tell a new session from the old one.
    pub generation: u64,
}

/// A ticket for OSD sessions, with its session key opened.
pub(crate) struct TicketState {
    /// The sealed ticket (opaque), presented in the OSD handshake.
    pub ticket: Vec<u8>,
    /// The ticket's session key.
    pub session_key: [u8; 32],
    /// When the monitor says it expires (unix seconds).
    pub expires_unix: u64,
    /// When we received it (unix seconds, our clock).
    pub obtained_unix: u64,
    /// Bumped for every new ticket: OSD connections made with an older one are replaced.
    pub generation: u64,
}

impl TicketState {
    /// True once the ticket is past its expiry (by our clock).
    pub fn expired(&self) -> bool {
        unix_now() >= self.expires_unix
    }
}

/// A ticket as it came from the monitor, before it gets a generation.
pub(crate) struct FreshTicket {
    pub ticket: Vec<u8>,
    pub session_key: [u8; 32],
    pub expires_unix: u64,
    pub obtained_unix: u64,
}

impl FreshTicket {
    /// A placeholder that is always expired (replaced before anyone sees it).
    pub fn empty() -> FreshTicket {
        FreshTicket { ticket: Vec::new(), session_key: [0; 32], expires_unix: 0, obtained_unix: 0 }
    }

    pub fn into_state(self, generation: u64) -> TicketState {
        TicketState {
            ticket: self.ticket,
            session_key: self.session_key,
            expires_unix: self.expires_unix,
            obtained_unix: self.obtained_unix,
            generation,
        }
    }

    /// When to renew: at half the remaining lifetime.
    pub fn renew_at(&self) -> Instant {
        let lifetime = self.expires_unix.saturating_sub(self.obtained_unix);
        Instant::now() + Duration::from_secs(lifetime / 2).max(RENEW_INTERVAL_MIN)
    }
}

/// A freshly opened monitor session with its first map and ticket.
pub(crate) struct Opened {
    pub client: RpcClient,
    pub addr: SocketAddr,
    pub session_key: [u8; 32],
    pub events: mpsc::Receiver<Event>,
    pub map: ClusterMap,
    pub ticket: FreshTicket,
    pub global_id: u64,
}

/// Seconds since the epoch, by our clock.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A short name of a reply, for logs (never the payload).
pub(crate) fn reply_kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Map(_) => "Map",
        Reply::Ticket { .. } => "Ticket",
        Reply::Command(_) => "Command",
        Reply::Booted { .. } => "Booted",
        Reply::Ack => "Ack",
        Reply::ServiceKeys(_) => "ServiceKeys",
        Reply::Op(_) => "Op",
        Reply::List { .. } => "List",
        Reply::Raft(_) => "Raft",
        Reply::Retry { .. } => "Retry",
        Reply::Failed { .. } => "Failed",
        Reply::Watching { .. } => "Watching",
        Reply::Notified(_) => "Notified",
        Reply::Watchers(_) => "Watchers",
        Reply::Told { .. } => "Told",
        Reply::ReadPart(_) => "ReadPart",
        Reply::ReadDone => "ReadDone",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_renew_at_half_their_lifetime() {
        let now = unix_now();
        let t = FreshTicket {
            ticket: vec![],
            session_key: [0; 32],
            expires_unix: now + 300,
            obtained_unix: now,
        };
        let wait = t.renew_at() - Instant::now();
        assert!(wait > Duration::from_secs(149) && wait <= Duration::from_secs(150), "{wait:?}");
        let skewed = FreshTicket { expires_unix: now - 10, ..t };
        let wait = skewed.renew_at() - Instant::now();
        assert!(wait > Duration::from_millis(900), "never renew in a tight loop: {wait:?}");
        let state = skewed.into_state(3);
        assert!(state.expired());
        assert_eq!(state.generation, 3);
    }
}
