//! Crypto primitives: the length-prefixed HMAC, the handshake proofs, session-key
//! derivation, and authenticated encryption (`seal`/`open`).
//!
//! Every derived value is an HMAC-SHA256 under the shared secret whose first part is a
//! distinct label, so a value computed for one purpose is never valid for another (a client
//! proof replayed as a server proof, a proof used as a key). Parts are length-prefixed, so
//! moving bytes between parts changes the MAC.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use quarry_types::EntityName;

use crate::AuthError;

/// Length of a MAC, proof or derived key.
pub const MAC_LEN: usize = 32;
/// Length of the random nonce `seal` prefixes.
pub const SEAL_NONCE_LEN: usize = 12;
/// Length of the Poly1305 tag `seal` appends.
pub const SEAL_TAG_LEN: usize = 16;
/// Bytes `seal` adds to the plaintext.
pub const SEAL_OVERHEAD: usize = SEAL_NONCE_LEN + SEAL_TAG_LEN;

const LABEL_CLIENT_PROOF: &[u8] = b"quarry-auth v1 client proof";
const LABEL_SERVER_PROOF: &[u8] = b"quarry-auth v1 server proof";
const LABEL_SESSION_KEY: &[u8] = b"quarry-auth v1 session key";

type HmacSha256 = Hmac<Sha256>;

fn hmac_over(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    for part in parts {
        mac.update(&(part.len() as u64).to_le_bytes());
        mac.update(part);
    }
    mac
}

/// HMAC-SHA256 under `key` over `parts`, each prefixed by its length (u64 little-endian), so
/// `["ab", "c"]` and `["a", "bc"]` differ. Start `parts` with a label naming the purpose.
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    hmac_over(key, parts).finalize().into_bytes().into()
}

/// Checks a MAC made by [`mac`] in constant time (`verify_slice`).
pub fn verify_mac(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    hmac_over(key, parts).verify_slice(tag).is_ok()
}

/// Handshake step 3: the client proves it holds `key` (the entity's secret, or a ticket's
/// session key) for this exchange of nonces.
pub fn client_proof(
    key: &[u8],
    entity: &EntityName,
    client_nonce: &[u8; 16],
    server_nonce: &[u8; 16],
) -> [u8; MAC_LEN] {
    let name = entity.to_string();
    mac(key, &[LABEL_CLIENT_PROOF, name.as_bytes(), client_nonce, server_nonce])
}

/// Handshake step 4: the server proves it holds the same key (mutual authentication).
pub fn server_proof(
    key: &[u8],
    entity: &EntityName,
    client_nonce: &[u8; 16],
    server_nonce: &[u8; 16],
) -> [u8; MAC_LEN] {
    let name = entity.to_string();
    mac(key, &[LABEL_SERVER_PROOF, name.as_bytes(), client_nonce, server_nonce])
}

/// Checks a client proof in constant time.
pub fn verify_client_proof(
    key: &[u8],
    entity: &EntityName,
    client_nonce: &[u8; 16],
    server_nonce: &[u8; 16],
    proof: &[u8],
) -> bool {
    let name = entity.to_string();
    let parts: [&[u8]; 4] = [LABEL_CLIENT_PROOF, name.as_bytes(), client_nonce, server_nonce];
    verify_mac(key, &parts, proof)
}

/// Checks a server proof in constant time.
pub fn verify_server_proof(
    key: &[u8],
    entity: &EntityName,
    client_nonce: &[u8; 16],
    server_nonce: &[u8; 16],
    proof: &[u8],
) -> bool {
    let name = entity.to_string();
    let parts: [&[u8]; 4] = [LABEL_SERVER_PROOF, name.as_bytes(), client_nonce, server_nonce];
    verify_mac(key, &parts, proof)
}

/// The key both sides derive after the handshake (frame signatures, sealing secrets for the
/// peer). It is never sent: each side computes it from the shared key and both nonces.
pub fn session_key(key: &[u8], client_nonce: &[u8; 16], server_nonce: &[u8; 16]) -> [u8; MAC_LEN] {
    mac(key, &[LABEL_SESSION_KEY, client_nonce, server_nonce])
}

/// A fresh random nonce for the handshake.
pub fn random_nonce() -> [u8; 16] {
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// A fresh random 32-byte key (ticket session keys, service keys).
pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

/// Encrypts and authenticates `plaintext` under `key` with ChaCha20-Poly1305:
/// `nonce (12 random bytes) || ciphertext || tag (16)`.
pub fn seal(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    seal_with_aad(key, &[], plaintext)
}

/// Opens what [`seal`] made; any change to the bytes, or another key, is `Tampered`.
pub fn open(key: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
    open_with_aad(key, &[], sealed)
}

/// [`seal`] that also authenticates `aad` (not included in the output): opening with
/// different associated data fails. Used to bind a ticket to its key id.
pub fn seal_with_aad(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let mut nonce = [0u8; SEAL_NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ciphertext =
        match cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad }) {
            Ok(c) => c,
            // Only fails for plaintexts beyond 256 GiB, which no caller builds.
            Err(_) => unreachable!("ChaCha20-Poly1305 encrypts anything under 256 GiB"),
        };
    let mut out = Vec::with_capacity(SEAL_NONCE_LEN + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    assert_eq!(out.len(), plaintext.len() + SEAL_OVERHEAD);
    out
}

/// Opens what [`seal_with_aad`] made with the same associated data.
pub fn open_with_aad(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(AuthError::Tampered);
    }
    let (nonce, ciphertext) = sealed.split_at(SEAL_NONCE_LEN);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let plaintext = cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad })
        .map_err(|_| AuthError::Tampered)?;
    assert_eq!(plaintext.len() + SEAL_OVERHEAD, sealed.len());
    Ok(plaintext)
}

/// Opens a sealed 32-byte key (a ticket's session key sent to its client).
pub fn open_key(key: &[u8; 32], sealed: &[u8]) -> Result<[u8; 32], AuthError> {
    let plaintext = open(key, sealed)?;
    plaintext.try_into().map_err(|_| AuthError::Malformed { what: "sealed key" })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CN: [u8; 16] = [1; 16];
    const SN: [u8; 16] = [2; 16];

    fn qemu() -> EntityName {
        EntityName::client("qemu")
    }

    #[test]
    fn mac_parts_are_length_prefixed() {
        let key = b"k";
        assert_ne!(mac(key, &[b"ab", b"c"]), mac(key, &[b"a", b"bc"]));
        assert_ne!(mac(key, &[b"abc"]), mac(key, &[b"abc", b""]));
        assert_ne!(mac(key, &[b"abc"]), mac(b"other", &[b"abc"]));
        assert_eq!(mac(key, &[b"abc"]), mac(key, &[b"abc"]));
        let tag = mac(key, &[b"x", b"y"]);
        assert!(verify_mac(key, &[b"x", b"y"], &tag));
        assert!(!verify_mac(key, &[b"xy"], &tag));
        assert!(!verify_mac(key, &[b"x", b"y"], &tag[..31]));
    }

    #[test]
    fn proofs_differ_by_role_nonce_key_and_entity() {
        let key = [7u8; 16];
        let base = client_proof(&key, &qemu(), &CN, &SN);
        let variants = [
            ("server role", server_proof(&key, &qemu(), &CN, &SN)),
            ("client nonce", client_proof(&key, &qemu(), &[3; 16], &SN)),
            ("server nonce", client_proof(&key, &qemu(), &CN, &[3; 16])),
            ("nonces swapped", client_proof(&key, &qemu(), &SN, &CN)),
            ("key", client_proof(&[8u8; 16], &qemu(), &CN, &SN)),
            ("entity", client_proof(&key, &EntityName::client("admin"), &CN, &SN)),
            ("session key", session_key(&key, &CN, &SN)),
        ];
        for (what, other) in variants {
            assert_ne!(base, other, "changing the {what} must change the proof");
        }
        assert_eq!(base, client_proof(&key, &qemu(), &CN, &SN), "deterministic");
        assert!(verify_client_proof(&key, &qemu(), &CN, &SN, &base));
        assert!(!verify_server_proof(&key, &qemu(), &CN, &SN, &base), "no role replay");
        let server = server_proof(&key, &qemu(), &CN, &SN);
        assert!(verify_server_proof(&key, &qemu(), &CN, &SN, &server));
        assert!(!verify_client_proof(&key, &qemu(), &CN, &SN, &server));
    }

    #[test]
    fn session_keys_agree_on_both_sides_and_depend_on_every_input() {
        let key = [9u8; 16];
        let a = session_key(&key, &CN, &SN);
        assert_eq!(a, session_key(&key, &CN, &SN));
        assert_ne!(a, session_key(&key, &SN, &CN));
        assert_ne!(a, session_key(&[0u8; 16], &CN, &SN));
        assert_ne!(random_nonce(), random_nonce());
    }

    #[test]
    fn seal_round_trips_and_every_flipped_byte_is_detected() {
        let key = random_key();
        let plaintext = b"the ticket's session key, or anything else";
        let sealed = seal(&key, plaintext);
        assert_eq!(sealed.len(), plaintext.len() + SEAL_OVERHEAD);
        assert_eq!(open(&key, &sealed).unwrap(), plaintext);
        assert_ne!(seal(&key, plaintext), sealed, "a fresh nonce every time");
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = sealed.clone();
                bad[i] ^= bit;
                assert!(
                    matches!(open(&key, &bad), Err(AuthError::Tampered)),
                    "byte {i} bit {bit:#x}"
                );
            }
        }
        for len in 0..sealed.len() {
            assert!(
                matches!(open(&key, &sealed[..len]), Err(AuthError::Tampered)),
                "truncated to {len}"
            );
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(matches!(open(&key, &longer), Err(AuthError::Tampered)));
        assert!(matches!(open(&random_key(), &sealed), Err(AuthError::Tampered)), "wrong key");
        assert_eq!(open(&key, &seal(&key, b"")).unwrap(), b"");
    }

    #[test]
    fn associated_data_is_bound() {
        let key = random_key();
        let sealed = seal_with_aad(&key, b"id 1", b"secret");
        assert_eq!(open_with_aad(&key, b"id 1", &sealed).unwrap(), b"secret");
        assert!(matches!(open_with_aad(&key, b"id 2", &sealed), Err(AuthError::Tampered)));
        assert!(matches!(open(&key, &sealed), Err(AuthError::Tampered)));
    }

    #[test]
    fn sealed_keys_open_to_32_bytes_only() {
        let key = random_key();
        let inner = random_key();
        assert_eq!(open_key(&key, &seal(&key, &inner)).unwrap(), inner);
        assert!(matches!(
            open_key(&key, &seal(&key, &inner[..31])),
            Err(AuthError::Malformed { .. })
        ));
    }
}
