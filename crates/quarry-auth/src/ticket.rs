//! Tickets: what the monitor gives an authenticated client so OSDs can admit it without
//! asking the monitor. A ticket names the entity, its caps and a session key, and is sealed
//! (ChaCha20-Poly1305, key id bound as associated data) under a rotating service key that
//! only the monitors and OSDs hold. Time is always passed in (`now_unix`): nothing here reads
//! a clock, so expiry and rotation are deterministic under test.

use std::collections::BTreeMap;

use bincode::Options;
use serde::{Deserialize, Serialize};

use quarry_types::EntityName;

use crate::crypto::{open_with_aad, random_key, seal_with_aad};
use crate::AuthError;

/// Largest encoded ticket accepted when opening (caps strings are short).
pub const TICKET_BYTES_MAX: u64 = 64 * 1024;
/// Largest encoded service-key list accepted when opening.
pub const SERVICE_KEYS_BYTES_MAX: u64 = 64 * 1024;

const LABEL_TICKET: &[u8] = b"quarry-auth v1 ticket";
const LABEL_SERVICE_KEYS: &[u8] = b"quarry-auth v1 service keys";

/// What an OSD learns about a client from its ticket.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The authenticated entity.
    pub entity: EntityName,
    /// The client instance's global id (blocklist entries name `entity@global_id`).
    pub global_id: u64,
    /// Caps by service, as in the keyring (parse with [`crate::Caps::parse`]).
    pub caps: BTreeMap<String, String>,
    /// When the monitor issued it (unix seconds): compared with the map's `auth_floor`.
    pub issued_unix: u64,
    /// First second at which it is no longer valid (unix seconds).
    pub expires_unix: u64,
    /// The key the client proves it holds when connecting to an OSD; the client receives it
    /// sealed under its monitor session key.
    pub session_key: [u8; 32],
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("entity", &self.entity)
            .field("global_id", &self.global_id)
            .field("caps", &self.caps)
            .field("issued_unix", &self.issued_unix)
            .field("expires_unix", &self.expires_unix)
            .field("session_key", &"<redacted>")
            .finish()
    }
}

/// A key tickets are sealed under, shared by monitors and OSDs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceKey {
    /// Increasing id; tickets carry it in clear to pick the key.
    pub id: u64,
    /// The ChaCha20-Poly1305 key.
    pub key: [u8; 32],
    /// First second at which tickets under this key are refused (unix seconds).
    pub expires_unix: u64,
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .field("expires_unix", &self.expires_unix)
            .finish()
    }
}

/// A sealed ticket: the key id in clear, the rest encrypted and authenticated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedTicket {
    /// Which service key sealed it.
    pub key_id: u64,
    /// `seal_with_aad(key, label || key_id, encoded ticket)`.
    pub blob: Vec<u8>,
}

impl SealedTicket {
    /// The opaque bytes a client presents (`Hello::ticket`): key id (u64 LE) then the blob.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.blob.len());
        out.extend_from_slice(&self.key_id.to_le_bytes());
        out.extend_from_slice(&self.blob);
        out
    }

    /// Splits bytes made by [`SealedTicket::to_bytes`]; too short is `Tampered`.
    pub fn from_bytes(bytes: &[u8]) -> Result<SealedTicket, AuthError> {
        let Some((id, blob)) = bytes.split_first_chunk::<8>() else {
            return Err(AuthError::Tampered);
        };
        Ok(SealedTicket { key_id: u64::from_le_bytes(*id), blob: blob.to_vec() })
    }
}

fn codec(limit: u64) -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_limit(limit).reject_trailing_bytes()
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    match bincode::DefaultOptions::new().with_fixint_encoding().serialize(value) {
        Ok(bytes) => bytes,
        Err(e) => unreachable!("tickets and keys always encode: {e}"),
    }
}

fn ticket_aad(key_id: u64) -> Vec<u8> {
    [LABEL_TICKET, &key_id.to_le_bytes()].concat()
}

/// Seals `ticket` under `key`. A ticket outliving `key` stops opening once the key rotates
/// out; [`ServiceKeyRing::issue`] picks an expiry that avoids this.
pub fn seal_ticket(key: &ServiceKey, ticket: &Ticket) -> SealedTicket {
    let blob = seal_with_aad(&key.key, &ticket_aad(key.id), &encode(ticket));
    SealedTicket { key_id: key.id, blob }
}

/// Opens a sealed ticket with whichever of `keys` it names, and checks it has not expired
/// (neither the ticket nor its key) at `now_unix`. Authenticity is checked before expiry, so
/// `Expired` is only ever reported for genuine tickets.
pub fn open_ticket(
    keys: &[ServiceKey],
    sealed: &SealedTicket,
    now_unix: u64,
) -> Result<Ticket, AuthError> {
    let key = keys
        .iter()
        .find(|k| k.id == sealed.key_id)
        .ok_or(AuthError::UnknownKey { key_id: sealed.key_id })?;
    let plaintext = open_with_aad(&key.key, &ticket_aad(key.id), &sealed.blob)?;
    let ticket: Ticket = codec(TICKET_BYTES_MAX)
        .deserialize(&plaintext)
        .map_err(|_| AuthError::Malformed { what: "ticket" })?;
    if now_unix >= ticket.expires_unix {
        return Err(AuthError::Expired { expires_unix: ticket.expires_unix, now_unix });
    }
    if now_unix >= key.expires_unix {
        return Err(AuthError::Expired { expires_unix: key.expires_unix, now_unix });
    }
    Ok(ticket)
}

/// [`open_ticket`] on the bytes of [`SealedTicket::to_bytes`].
pub fn open_ticket_bytes(
    keys: &[ServiceKey],
    bytes: &[u8],
    now_unix: u64,
) -> Result<Ticket, AuthError> {
    open_ticket(keys, &SealedTicket::from_bytes(bytes)?, now_unix)
}

/// Seals service keys for an OSD under its session key (`Reply::ServiceKeys`).
pub fn seal_service_keys(session_key: &[u8; 32], keys: &[ServiceKey]) -> Vec<u8> {
    seal_with_aad(session_key, LABEL_SERVICE_KEYS, &encode(&keys))
}

/// Opens what [`seal_service_keys`] made.
pub fn open_service_keys(
    session_key: &[u8; 32],
    sealed: &[u8],
) -> Result<Vec<ServiceKey>, AuthError> {
    let plaintext = open_with_aad(session_key, LABEL_SERVICE_KEYS, sealed)?;
    codec(SERVICE_KEYS_BYTES_MAX)
        .deserialize(&plaintext)
        .map_err(|_| AuthError::Malformed { what: "service keys" })
}

/// The monitor's service keys: a current key and the previous one. A key lives `ttl` seconds;
/// a new one becomes current every `ttl / 2`, so a ticket sealed under the current key keeps
/// opening for at least `ttl / 2` seconds. The ring is plain data: the monitor persists it (and
/// replicates rotations through Raft with [`ServiceKeyRing::next_key`] + `install`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceKeyRing {
    ttl_secs: u64,
    current: ServiceKey,
    previous: Option<ServiceKey>,
}

impl ServiceKeyRing {
    /// A ring with one fresh random key (id 1) valid from `now_unix` for `ttl_secs` (>= 2).
    pub fn new(ttl_secs: u64, now_unix: u64) -> ServiceKeyRing {
        assert!(ttl_secs >= 2, "service key ttl must be at least 2 seconds");
        let current = ServiceKey { id: 1, key: random_key(), expires_unix: now_unix + ttl_secs };
        ServiceKeyRing { ttl_secs, current, previous: None }
    }

    /// A ring restored from persisted keys.
    pub fn from_keys(ttl_secs: u64, current: ServiceKey, previous: Option<ServiceKey>) -> Self {
        assert!(ttl_secs >= 2, "service key ttl must be at least 2 seconds");
        if let Some(previous) = &previous {
            assert!(previous.id < current.id, "the previous key has the smaller id");
        }
        ServiceKeyRing { ttl_secs, current, previous }
    }

    /// Key lifetime in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// The key new tickets are sealed under.
    pub fn current(&self) -> &ServiceKey {
        &self.current
    }

    /// The key before it (still opens tickets it sealed), if any.
    pub fn previous(&self) -> Option<&ServiceKey> {
        self.previous.as_ref()
    }

    /// Current then previous: what OSDs need to open tickets.
    pub fn keys(&self) -> Vec<ServiceKey> {
        std::iter::once(self.current.clone()).chain(self.previous.clone()).collect()
    }

    /// Whether the current key is half-way through its life at `now_unix`.
    pub fn rotation_due(&self, now_unix: u64) -> bool {
        let created = self.current.expires_unix.saturating_sub(self.ttl_secs);
        now_unix >= created + self.ttl_secs / 2
    }

    /// The key a rotation at `now_unix` installs (random; the next id).
    pub fn next_key(&self, now_unix: u64) -> ServiceKey {
        ServiceKey {
            id: self.current.id + 1,
            key: random_key(),
            expires_unix: now_unix + self.ttl_secs,
        }
    }

    /// Makes `key` current and the current key previous (the oldest is dropped).
    pub fn install(&mut self, key: ServiceKey) {
        assert!(key.id > self.current.id, "service key ids only grow");
        self.previous = Some(std::mem::replace(&mut self.current, key));
    }

    /// Rotates if due; returns whether it did.
    pub fn rotate_if_due(&mut self, now_unix: u64) -> bool {
        if !self.rotation_due(now_unix) {
            return false;
        }
        let key = self.next_key(now_unix);
        self.install(key);
        true
    }

    /// The expiry for a ticket issued at `now_unix` that should live `lifetime_secs`, cut to
    /// the current key's own expiry.
    pub fn ticket_expiry(&self, now_unix: u64, lifetime_secs: u64) -> u64 {
        now_unix.saturating_add(lifetime_secs).min(self.current.expires_unix)
    }

    /// Issues a ticket with a fresh random session key, sealed under the current key.
    pub fn issue(
        &self,
        entity: EntityName,
        global_id: u64,
        caps: BTreeMap<String, String>,
        now_unix: u64,
        lifetime_secs: u64,
    ) -> (Ticket, SealedTicket) {
        let ticket = Ticket {
            entity,
            global_id,
            caps,
            issued_unix: now_unix,
            expires_unix: self.ticket_expiry(now_unix, lifetime_secs),
            session_key: random_key(),
        };
        let sealed = seal_ticket(&self.current, &ticket);
        (ticket, sealed)
    }

    /// Opens a ticket with the ring's keys.
    pub fn open(&self, sealed: &SealedTicket, now_unix: u64) -> Result<Ticket, AuthError> {
        open_ticket(&self.keys(), sealed, now_unix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rbd_caps() -> BTreeMap<String, String> {
        [("mon", "profile rbd"), ("osd", "profile rbd pool=rbdpool")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ticket(expires_unix: u64) -> Ticket {
        Ticket {
            entity: EntityName::client("qemu"),
            global_id: 4242,
            caps: rbd_caps(),
            issued_unix: 1000,
            expires_unix,
            session_key: random_key(),
        }
    }

    fn key(id: u64, expires_unix: u64) -> ServiceKey {
        ServiceKey { id, key: random_key(), expires_unix }
    }

    #[test]
    fn a_ticket_round_trips_until_it_expires() {
        let k = key(1, 5000);
        let t = ticket(2000);
        let sealed = seal_ticket(&k, &t);
        assert_eq!(sealed.key_id, 1);
        assert_eq!(open_ticket(std::slice::from_ref(&k), &sealed, 1000).unwrap(), t);
        assert_eq!(open_ticket(std::slice::from_ref(&k), &sealed, 1999).unwrap(), t);
        let err = open_ticket(std::slice::from_ref(&k), &sealed, 2000).unwrap_err();
        assert!(matches!(err, AuthError::Expired { expires_unix: 2000, now_unix: 2000 }), "{err}");
        let bytes = sealed.to_bytes();
        assert_eq!(open_ticket_bytes(&[k], &bytes, 1500).unwrap(), t);
    }

    #[test]
    fn a_ticket_under_an_expired_key_is_expired() {
        let k = key(1, 1500);
        let sealed = seal_ticket(&k, &ticket(2000));
        assert!(open_ticket(std::slice::from_ref(&k), &sealed, 1499).is_ok());
        let err = open_ticket(&[k], &sealed, 1500).unwrap_err();
        assert!(matches!(err, AuthError::Expired { expires_unix: 1500, .. }), "{err}");
    }

    #[test]
    fn forged_tickets_are_tampered_and_unknown_ids_are_unknown() {
        let real = key(7, 5000);
        let forger = key(7, 5000); // same id, different secret
        let forged = seal_ticket(&forger, &ticket(2000));
        assert!(matches!(
            open_ticket(std::slice::from_ref(&real), &forged, 1000),
            Err(AuthError::Tampered)
        ));

        let other_id = seal_ticket(&key(8, 5000), &ticket(2000));
        let err = open_ticket(std::slice::from_ref(&real), &other_id, 1000).unwrap_err();
        assert!(matches!(err, AuthError::UnknownKey { key_id: 8 }), "{err}");

        // Relabelling a genuine ticket with another known id fails authentication.
        let genuine = seal_ticket(&real, &ticket(2000));
        let mut relabelled = genuine.clone();
        relabelled.key_id = 9;
        let nine = ServiceKey { id: 9, ..real.clone() };
        assert!(matches!(
            open_ticket(&[real.clone(), nine], &relabelled, 1000),
            Err(AuthError::Tampered)
        ));

        // Every flipped byte of the sealed form is caught.
        let bytes = genuine.to_bytes();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            let err = open_ticket_bytes(std::slice::from_ref(&real), &bad, 1000).unwrap_err();
            assert!(
                matches!(err, AuthError::Tampered | AuthError::UnknownKey { .. }),
                "byte {i}: {err}"
            );
        }
        assert!(matches!(SealedTicket::from_bytes(&bytes[..7]), Err(AuthError::Tampered)));
    }

    #[test]
    fn the_ring_rotates_every_half_ttl_and_keeps_one_previous_key() {
        let mut ring = ServiceKeyRing::new(100, 1000);
        assert_eq!(ring.current().id, 1);
        assert_eq!(ring.current().expires_unix, 1100);
        let caps = rbd_caps();
        let (t1, s1) = ring.issue(EntityName::client("qemu"), 1, caps.clone(), 1040, 100);
        assert_eq!(t1.expires_unix, 1100, "cut to the key's expiry");
        assert_eq!(t1.issued_unix, 1040);

        assert!(!ring.rotate_if_due(1049));
        assert!(ring.rotate_if_due(1050));
        assert_eq!((ring.current().id, ring.previous().map(|k| k.id)), (2, Some(1)));
        assert_eq!(ring.current().expires_unix, 1150);
        assert!(!ring.rotate_if_due(1050), "not twice");
        assert_eq!(ring.open(&s1, 1060).unwrap(), t1, "previous key still opens");

        let (t2, s2) = ring.issue(EntityName::client("qemu"), 2, caps, 1060, 30);
        assert_eq!(t2.expires_unix, 1090);
        assert_eq!(s2.key_id, 2);

        assert!(ring.open(&s1, 1099).is_ok());
        assert!(ring.rotate_if_due(1100));
        assert_eq!(ring.keys().iter().map(|k| k.id).collect::<Vec<_>>(), [3, 2]);
        let err = ring.open(&s1, 1100).unwrap_err();
        assert!(matches!(err, AuthError::UnknownKey { key_id: 1 }), "{err}");

        // A monitor that slept through several periods rotates once, to a fresh key.
        assert!(ring.rotate_if_due(5000));
        assert_eq!(ring.current().id, 4);
        assert_eq!(ring.current().expires_unix, 5100);
        let restored =
            ServiceKeyRing::from_keys(100, ring.current().clone(), ring.previous().cloned());
        assert_eq!(restored, ring);
    }

    #[test]
    fn service_keys_travel_sealed_under_the_session_key() {
        let session = random_key();
        let keys = vec![key(3, 100), key(2, 50)];
        let sealed = seal_service_keys(&session, &keys);
        assert_eq!(open_service_keys(&session, &sealed).unwrap(), keys);
        assert!(matches!(open_service_keys(&random_key(), &sealed), Err(AuthError::Tampered)));
        // A sealed ticket is not a service-key blob, even under the same key.
        let as_key = ServiceKey { id: 1, key: session, expires_unix: 100 };
        let ticket_blob = seal_ticket(&as_key, &ticket(50)).blob;
        assert!(matches!(open_service_keys(&session, &ticket_blob), Err(AuthError::Tampered)));
    }

    #[test]
    fn debug_output_hides_keys() {
        let t = ticket(5);
        let k = key(1, 5);
        for shown in [format!("{t:?}"), format!("{k:?}")] {
            assert!(shown.contains("redacted"), "{shown}");
        }
    }
}
