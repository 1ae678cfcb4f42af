//! Entity keys, keyrings, capabilities, tickets and the challenge-response handshake.
//!
//! # What this crate owns
//! Everything about *who* a peer is and *what* it may do, as pure synchronous functions: no
//! network I/O, no clock reads (time is passed in), no async runtime. `quarry-wire` runs the
//! handshake with these primitives; the monitor issues tickets and checks [`MonCap`]; every OSD
//! opens tickets and checks [`OsdCap`] on every op. It depends only on `quarry-types` and
//! must never depend on wire, daemon or client crates.
//!
//! - [`CryptoKey`]: an entity's 16-byte secret in Ceph's keyring encoding (`AQ...==`).
//! - [`Keyring`]: Ceph's plain-text keyring files, read and written byte-compatibly.
//! - [`Caps`] = [`MonCap`] + [`OsdCap`]: Ceph cap strings parsed and evaluated.
//! - [`mac`], [`client_proof`], [`server_proof`], [`session_key`], [`seal`], [`open`]: crypto.
//! - [`Ticket`], [`ServiceKey`], [`ServiceKeyRing`], [`seal_ticket`], [`open_ticket`].
//!
//! # Capabilities
//! Monitor requests fall in five classes ([`MonAccess`]); `MonCap::allows` answers:
//!
//! | mon cap | Read | PoolAdmin | AuthAdmin | OsdDaemon | Blocklist |
//! |---|---|---|---|---|---|
//! | `allow *` / `profile mon` | yes | yes | yes | yes | yes |
//! | `allow rwx` | yes | yes | yes | yes | yes |
//! | `allow rw` / `profile read-write` | yes | yes | - | - | yes |
//! | `allow r` / `profile read-only` | yes | - | - | - | - |
//! | `profile rbd` | yes | - | - | - | yes |
//! | `profile rbd-read-only` | yes | - | - | - | - |
//! | `profile osd` | yes | - | - | yes | - |
//! | `allow service auth rwx` | - | - | yes | - | - |
//!
//! `allow` grants add up per service as in Ceph: Read needs `r` on services `mon` and `osd`,
//! PoolAdmin and Blocklist `rw` on `osd`, AuthAdmin `rwx` on `auth` (Ceph's auth commands are
//! `rwx`, so `allow rw` cannot manage users), OsdDaemon `rwx` on `osd` and `r` on `mon`.
//! Profiles are fixed sets (the rows above). Deviations from Ceph: `profile osd` does not
//! include pool administration or blocklisting; `profile mon` is everything (monitors are
//! peers in one Raft group); `profile rbd-read-only` on mon means Read (Ceph has no such mon
//! profile and grants nothing). Allocating self-managed snapshot ids is judged like Ceph does,
//! on the *osd* caps: `caps.osd.allows(pool, "", OsdAccess::WRITE)`.
//!
//! OSD ops are judged by [`OsdCap::allows`]`(pool, namespace, OsdAccess{read, write, exec})`
//! with one grant having to cover the whole access: `read` needs `r`, `write` needs `w`, `exec`
//! (a server-side method that mutates) needs `x`. Read-only methods are reads, so
//! `class-read` counts as `r`, and `class-write` as `x`.
//!
//! | osd cap | read | write | mutating method |
//! |---|---|---|---|
//! | `allow *`, `allow rwx`, `profile rbd`, `profile osd`, `profile mon` | yes | yes | yes |
//! | `allow rw`, `profile read-write` | yes | yes | - |
//! | `allow r`, `allow rx`(*), `profile rbd-read-only`, `profile read-only` | yes | - | - |
//!
//! (*) `rx` also allows an `exec`-only check. A `pool=P` narrows a grant to pool P and
//! `namespace=N` (or prefix `N*`) to namespace N; no pool means every pool. `profile rbd
//! pool=P` also grants read of `rbd_children` and `rbd_mirroring` objects in every pool, as
//! Ceph does; grants limited by `object_prefix` only apply through [`OsdCap::allows_object`].
//!
//! # Handshake and tickets
//! 1. Client → server: entity name and a random 16-byte client nonce.
//! 2. Server → client: a random 16-byte server nonce (sent even for unknown entities).
//! 3. Client → server: `client_proof = HMAC(secret, "client proof", entity, cn, sn)`.
//! 4. Server checks it in constant time, answers `server_proof` (its own label, so a captured
//!    client proof cannot be replayed as a server proof), and both sides derive
//!    `session_key = HMAC(secret, "session key", cn, sn)`: the secret and the session key never
//!    cross the wire; fresh nonces make every proof single-use.
//!
//! `secret` is the entity's [`CryptoKey::secret`] towards a monitor. The monitor then issues a
//! [`Ticket`] (entity, global id, caps, issue and expiry time, a random session key) sealed
//! under its current [`ServiceKey`], and sends the ticket's session key to the client sealed
//! under the monitor session key ([`seal`]/[`open_key`]). Towards an OSD the client runs the
//! same handshake with the ticket's session key as `secret` and the sealed ticket in its hello;
//! the OSD opens the ticket with the service keys it fetched from the monitor
//! ([`seal_service_keys`], sealed under its own session key) and never asks the monitor about
//! the client. Service keys rotate every `ttl / 2` and live `ttl`, so OSDs must refresh their
//! copy more often than every `ttl / 2` (and on [`AuthError::UnknownKey`]).
//!
//! # Dependencies
//! RustCrypto's `hmac` + `sha2` (HMAC-SHA256) and `chacha20poly1305` (AEAD): pure Rust, widely
//! used and audited (chacha20poly1305 by NCC Group), constant-time MAC verification
//! (`verify_slice`). `rand`'s `OsRng` for keys and nonces (the OS generator). `base64` for
//! Ceph's key text. `bincode` for the ticket encoding (both ends are this crate), read with a
//! size limit. `thiserror` for [`AuthError`].
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod caps;
mod crypto;
mod error;
mod key;
mod keyring;
mod ticket;

pub use caps::{Caps, MonAccess, MonCap, OsdAccess, OsdCap};
pub use crypto::{
    client_proof, mac, open, open_key, open_with_aad, random_key, random_nonce, seal,
    seal_with_aad, server_proof, session_key, verify_client_proof, verify_mac, verify_server_proof,
    MAC_LEN, SEAL_NONCE_LEN, SEAL_OVERHEAD, SEAL_TAG_LEN,
};
pub use error::AuthError;
pub use key::{CryptoKey, ENCODED_LEN, KEY_TYPE_AES, SECRET_LEN};
pub use keyring::{Keyring, KeyringEntry, KEYRING_FILE_BYTES_MAX};
pub use ticket::{
    open_service_keys, open_ticket, open_ticket_bytes, seal_service_keys, seal_ticket,
    SealedTicket, ServiceKey, ServiceKeyRing, Ticket, SERVICE_KEYS_BYTES_MAX, TICKET_BYTES_MAX,
};

#[cfg(test)]
mod robustness {
    //! Arbitrary input never panics any parser or opener.

    use proptest::prelude::*;

    use super::*;

    fn service_keys() -> Vec<ServiceKey> {
        vec![ServiceKey { id: 1, key: [5; 32], expires_unix: u64::MAX }]
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            prop_assert!(open(&[1; 32], &bytes).is_err());
            let _ = open_key(&[1; 32], &bytes);
            let _ = open_service_keys(&[1; 32], &bytes);
        }

        #[test]
        fn open_ticket_never_panics(key_id in 0u64..3, bytes in proptest::collection::vec(any::<u8>(), 0..256), now in any::<u64>()) {
            let sealed = SealedTicket { key_id, blob: bytes.clone() };
            prop_assert!(open_ticket(&service_keys(), &sealed, now).is_err());
            prop_assert!(open_ticket_bytes(&service_keys(), &bytes, now).is_err());
        }

        #[test]
        fn text_parsers_never_panic(text in "\\PC{0,120}") {
            let _ = CryptoKey::from_base64(&text);
            let _ = Keyring::parse(&text);
            let _ = MonCap::parse(&text);
            let _ = OsdCap::parse(&text);
        }

        #[test]
        fn cap_like_text_never_panics(text in "(allow|profile|pool|namespace|object_prefix|rbd|r|rw|rwx|\\*|=|,|;|\"|'| |x|class-read|service|osd)*") {
            let _ = MonCap::parse(&text);
            let _ = OsdCap::parse(&text);
        }
    }
}
