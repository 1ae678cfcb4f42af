//! Who is talking to this OSD: the service keys fetched from the monitor, the
//! [`Authenticator`] that admits a peer by opening its monitor ticket with them, and the
//! [`Session`] remembered for the connection (entity, instance, caps, ticket times).
//!
//! A ticket sealed under a key id this OSD does not hold (the monitor rotated since our last
//! fetch) triggers a refetch; on a multi-threaded runtime the handshake waits for it briefly
//! instead of refusing a genuine client.

use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};

use quarry_auth::{AuthError, Caps, ServiceKey};
use quarry_types::{EntityName, ErrorCode};
use quarry_wire::{Authenticator, Hello, Refused, Service};

/// How long a handshake waits for a service-key refetch when a ticket names an unknown key.
const UNKNOWN_KEY_WAIT: Duration = Duration::from_secs(2);

/// Seconds since the epoch (0 if the clock is before it).
pub(crate) fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The service keys tickets are sealed under, as last fetched from the monitor.
pub(crate) struct ServiceKeys {
    keys: RwLock<Vec<ServiceKey>>,
    /// Bumped on every successful fetch.
    generation: watch::Sender<u64>,
    /// Wakes the monitor worker to refetch now.
    refresh: Notify,
}

impl ServiceKeys {
    pub(crate) fn new() -> ServiceKeys {
        ServiceKeys {
            keys: RwLock::new(Vec::new()),
            generation: watch::Sender::new(0),
            refresh: Notify::new(),
        }
    }

    /// Replaces the keys (after a fetch).
    pub(crate) fn install(&self, keys: Vec<ServiceKey>) {
        let ids: Vec<u64> = keys.iter().map(|k| k.id).collect();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        self.generation.send_modify(|g| *g += 1);
        tracing::debug!(?ids, "service keys installed");
    }

    /// A copy of the current keys.
    pub(crate) fn current(&self) -> Vec<ServiceKey> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks the monitor worker to refetch now.
    pub(crate) fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Resolves when someone asked for a refetch.
    pub(crate) async fn refresh_requested(&self) {
        self.refresh.notified().await
    }

    /// Opens a ticket; on an unknown key id, asks for a refetch and (if the runtime allows
    /// blocking this thread) waits briefly for it, then tries once more.
    fn open(&self, bytes: &[u8]) -> Result<quarry_auth::Ticket, AuthError> {
        let first = quarry_auth::open_ticket_bytes(&self.current(), bytes, now_unix());
        let Err(AuthError::UnknownKey { key_id }) = first else {
            return first;
        };
        self.request_refresh();
        let handle = tokio::runtime::Handle::try_current();
        let multi = handle
            .as_ref()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi {
            return Err(AuthError::UnknownKey { key_id });
        }
        let mut generation = self.generation.subscribe();
        let wait = async {
            let _ = tokio::time::timeout(UNKNOWN_KEY_WAIT, generation.changed()).await;
        };
        if let Ok(h) = handle {
            tokio::task::block_in_place(|| h.block_on(wait));
        }
        quarry_auth::open_ticket_bytes(&self.current(), bytes, now_unix())
    }
}

/// What the OSD remembers about an authenticated connection.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The entity (`client.qemu`, `osd.3`).
    pub(crate) entity: EntityName,
    /// Its instance id (blocklist entries are `entity@global_id`).
    pub(crate) global_id: u64,
    /// `entity` as text (`client.qemu`: the map's `auth_floor` key), and `entity@global_id`
    /// ([`Session::instance`]), formatted once for the session instead of for every op.
    name: String,
    instance: String,
    /// Parsed caps from the ticket.
    pub(crate) caps: Caps,
    /// When the ticket was issued (compared with the map's `auth_floor`).
    pub(crate) issued_unix: u64,
    /// When the ticket expires: the session's ops are refused from then on.
    pub(crate) expires_unix: u64,
    /// Object-queue slots of this connection's ops, taken on arrival (`op::order`).
    pub(crate) parked: crate::op::order::Parked,
}

impl Session {
    /// A session of `entity` (instance `global_id`) with `caps`, its ticket issued and
    /// expiring at these times.
    pub(crate) fn new(
        entity: EntityName,
        global_id: u64,
        caps: Caps,
        issued_unix: u64,
        expires_unix: u64,
    ) -> Session {
        let name = entity.to_string();
        let instance = format!("{name}@{global_id}");
        Session {
            entity,
            global_id,
            name,
            instance,
            caps,
            issued_unix,
            expires_unix,
            parked: Default::default(),
        }
    }

    /// The entity as text (`client.qemu`).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `entity@global_id`, the blocklist's key.
    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }
}

/// Admits peers of the OSD service by their monitor ticket.
pub(crate) struct OsdAuthenticator {
    pub(crate) keys: std::sync::Arc<ServiceKeys>,
}

fn refuse(reason: impl Into<String>) -> Refused {
    Refused { code: ErrorCode::EPERM, reason: reason.into() }
}

impl Authenticator for OsdAuthenticator {
    type Session = Session;

    fn secret_for(&self, hello: &Hello) -> Result<(Vec<u8>, Session), Refused> {
        if hello.service != Service::Osd {
            return Err(refuse("this is an OSD: connect with a ticket for the OSD service"));
        }
        let bytes = hello.ticket.as_deref().ok_or_else(|| refuse("no ticket presented"))?;
        let ticket = self.keys.open(bytes).map_err(|e| refuse(format!("ticket refused: {e}")))?;
        if ticket.entity != hello.entity {
            return Err(refuse(format!("ticket is for {}, not {}", ticket.entity, hello.entity)));
        }
        let caps = Caps::parse(&ticket.caps)
            .map_err(|e| refuse(format!("caps in ticket do not parse: {e}")))?;
        let session = Session::new(
            ticket.entity,
            ticket.global_id,
            caps,
            ticket.issued_unix,
            ticket.expires_unix,
        );
        Ok((ticket.session_key.to_vec(), session))
    }

    fn accepted(&self, session: &Session) -> u64 {
        tracing::debug!(entity = %session.entity, global_id = session.global_id, "peer authenticated");
        session.global_id
    }

    fn rejected(&self, hello: &Hello, peer: SocketAddr, why: &str) {
        tracing::warn!(entity = %hello.entity, %peer, reason = why, "authentication refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn key(id: u64) -> ServiceKey {
        ServiceKey { id, key: [id as u8; 32], expires_unix: now_unix() + 600 }
    }

    fn ticket(entity: &EntityName, expires_unix: u64) -> quarry_auth::Ticket {
        quarry_auth::Ticket {
            entity: entity.clone(),
            global_id: 42,
            caps: BTreeMap::from([("osd".to_string(), "allow rw pool=rbd".to_string())]),
            issued_unix: now_unix() - 1,
            expires_unix,
            session_key: [7; 32],
        }
    }

    fn hello(entity: &EntityName, ticket: Option<Vec<u8>>) -> Hello {
        Hello {
            protocol: quarry_wire::PROTOCOL_VERSION,
            service: Service::Osd,
            entity: entity.clone(),
            client_nonce: [1; 16],
            ticket,
        }
    }

    fn auth_with(keys: Vec<ServiceKey>) -> OsdAuthenticator {
        let ring = Arc::new(ServiceKeys::new());
        ring.install(keys);
        OsdAuthenticator { keys: ring }
    }

    #[test]
    fn genuine_ticket_admits_with_its_session_key_and_caps() {
        let entity = EntityName::client("qemu");
        let sealed = quarry_auth::seal_ticket(&key(1), &ticket(&entity, now_unix() + 60));
        let auth = auth_with(vec![key(1)]);
        let (secret, session) = auth.secret_for(&hello(&entity, Some(sealed.to_bytes()))).unwrap();
        assert_eq!(secret, vec![7; 32]);
        assert_eq!(session.global_id, 42);
        assert_eq!(session.instance(), "client.qemu@42");
        assert!(session.caps.osd.allows("rbd", "", quarry_auth::OsdAccess::READ_WRITE));
        assert!(!session.caps.osd.allows("other", "", quarry_auth::OsdAccess::READ));
    }

    #[test]
    fn bad_tickets_are_refused_with_eperm() {
        let entity = EntityName::client("qemu");
        let auth = auth_with(vec![key(1)]);
        let expired = quarry_auth::seal_ticket(&key(1), &ticket(&entity, now_unix() - 1));
        let unknown = quarry_auth::seal_ticket(&key(9), &ticket(&entity, now_unix() + 60));
        let mut forged = quarry_auth::seal_ticket(&key(1), &ticket(&entity, now_unix() + 60));
        let last = forged.blob.len() - 1;
        forged.blob[last] ^= 1;
        let other =
            quarry_auth::seal_ticket(&key(1), &ticket(&EntityName::client("x"), now_unix() + 60));
        for bytes in [
            None,
            Some(vec![1, 2, 3]),
            Some(expired.to_bytes()),
            Some(unknown.to_bytes()),
            Some(forged.to_bytes()),
            Some(other.to_bytes()),
        ] {
            let refused = auth.secret_for(&hello(&entity, bytes)).unwrap_err();
            assert_eq!(refused.code, ErrorCode::EPERM, "{}", refused.reason);
        }
        let mut mon = hello(&entity, None);
        mon.service = Service::Mon;
        assert_eq!(auth.secret_for(&mon).unwrap_err().code, ErrorCode::EPERM);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_key_waits_for_a_refetch() {
        let entity = EntityName::client("qemu");
        let ring = Arc::new(ServiceKeys::new());
        ring.install(vec![key(1)]);
        let fetcher = ring.clone();
        tokio::spawn(async move {
            fetcher.refresh_requested().await;
            fetcher.install(vec![key(1), key(2)]);
        });
        let auth = OsdAuthenticator { keys: ring };
        let sealed = quarry_auth::seal_ticket(&key(2), &ticket(&entity, now_unix() + 60));
        let bytes = sealed.to_bytes();
        let admitted = tokio::task::spawn(async move {
            auth.secret_for(&hello(&entity, Some(bytes))).map(|(_, s)| s.global_id)
        });
        assert_eq!(admitted.await.unwrap().unwrap(), 42);
    }
}
