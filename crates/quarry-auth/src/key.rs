//! `CryptoKey`: an entity's shared secret in Ceph's keyring encoding.
//!
//! Ceph writes a key as base64 of a 28-byte little-endian record:
//!
//! | bytes | field | value |
//! |---|---|---|
//! | 0..2 | type | 1 (`CEPH_CRYPTO_AES`) |
//! | 2..6 | created, seconds | unix time the key was made |
//! | 6..10 | created, nanoseconds | |
//! | 10..12 | secret length | 16 |
//! | 12..28 | secret | 16 random bytes |
//!
//! so every key starts `AQ` and is 40 characters long (`AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==`).
//! Quarry uses the 16 secret bytes as the HMAC key of the handshake; the header is kept only so
//! keys travel between Ceph and Quarry keyrings unchanged.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

use crate::AuthError;

/// Ceph's key type for AES keys, the only type Ceph generates (`CEPH_CRYPTO_AES`).
pub const KEY_TYPE_AES: u16 = 1;
/// Length of the secret inside a key.
pub const SECRET_LEN: usize = 16;
/// Length of the encoded record: type, created (sec, nsec), length, secret.
pub const ENCODED_LEN: usize = 2 + 4 + 4 + 2 + SECRET_LEN;

/// An entity's shared secret, as Ceph stores it in keyrings.
#[derive(Clone, PartialEq, Eq)]
pub struct CryptoKey {
    created_sec: u32,
    created_nsec: u32,
    secret: [u8; SECRET_LEN],
}

impl CryptoKey {
    /// A new random key (OS random generator), stamped with the current time as Ceph does.
    pub fn generate() -> CryptoKey {
        let mut secret = [0u8; SECRET_LEN];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // Ceph's utime_t holds 32-bit seconds; saturate rather than wrap after 2106.
        let created_sec = u32::try_from(now.as_secs()).unwrap_or(u32::MAX);
        CryptoKey { created_sec, created_nsec: now.subsec_nanos(), secret }
    }

    /// A key from known parts (tests, imports).
    pub fn from_parts(secret: [u8; SECRET_LEN], created_sec: u32, created_nsec: u32) -> CryptoKey {
        CryptoKey { created_sec, created_nsec, secret }
    }

    /// Parses Ceph's base64 form. Surrounding whitespace is ignored; anything else that is not
    /// exactly one AES key of 16 bytes is refused with a reason.
    pub fn from_base64(text: &str) -> Result<CryptoKey, AuthError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(invalid("empty key"));
        }
        let bytes = STANDARD.decode(text).map_err(|e| invalid(format!("not base64 ({e})")))?;
        Self::from_bytes(&bytes)
    }

    /// Decodes the 28-byte binary record (the base64 payload).
    pub fn from_bytes(bytes: &[u8]) -> Result<CryptoKey, AuthError> {
        if bytes.len() < 12 {
            return Err(invalid(format!("{} bytes, expected {ENCODED_LEN}", bytes.len())));
        }
        let key_type = u16::from_le_bytes([bytes[0], bytes[1]]);
        if key_type != KEY_TYPE_AES {
            return Err(invalid(format!("key type {key_type}, expected {KEY_TYPE_AES} (AES)")));
        }
        let created_sec = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
        let created_nsec = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        let secret_len = usize::from(u16::from_le_bytes([bytes[10], bytes[11]]));
        if secret_len != SECRET_LEN {
            return Err(invalid(format!("secret is {secret_len} bytes, expected {SECRET_LEN}")));
        }
        if bytes.len() != ENCODED_LEN {
            return Err(invalid(format!("{} bytes, expected {ENCODED_LEN}", bytes.len())));
        }
        let mut secret = [0u8; SECRET_LEN];
        secret.copy_from_slice(&bytes[12..]);
        Ok(CryptoKey { created_sec, created_nsec, secret })
    }

    /// The 28-byte binary record.
    pub fn to_bytes(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        out[0..2].copy_from_slice(&KEY_TYPE_AES.to_le_bytes());
        out[2..6].copy_from_slice(&self.created_sec.to_le_bytes());
        out[6..10].copy_from_slice(&self.created_nsec.to_le_bytes());
        out[10..12].copy_from_slice(&(SECRET_LEN as u16).to_le_bytes());
        out[12..].copy_from_slice(&self.secret);
        out
    }

    /// Ceph's base64 form (`AQ...==`, 40 characters).
    pub fn to_base64(&self) -> String {
        let text = STANDARD.encode(self.to_bytes());
        assert_eq!(text.len(), 40, "a Ceph AES key encodes to 40 base64 characters");
        text
    }

    /// The 16 secret bytes: the HMAC key of the handshake.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// When the key was made: (unix seconds, nanoseconds).
    pub fn created(&self) -> (u32, u32) {
        (self.created_sec, self.created_nsec)
    }
}

fn invalid(reason: impl Into<String>) -> AuthError {
    AuthError::InvalidKey { reason: reason.into() }
}

impl std::fmt::Display for CryptoKey {
    /// The base64 form, as keyrings and `ceph auth get-key` print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl std::fmt::Debug for CryptoKey {
    /// Never prints the secret: keys end up in logs through `{:?}` of larger structs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoKey")
            .field("created", &(self.created_sec, self.created_nsec))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl std::str::FromStr for CryptoKey {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CryptoKey::from_base64(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client.admin key from Ceph's documentation, written by `ceph auth get`.
    const CEPH_DOC_KEY: &str = "AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==";

    #[test]
    fn ceph_written_key_decodes_and_re_encodes_identically() {
        let key = CryptoKey::from_base64(CEPH_DOC_KEY).unwrap();
        assert_eq!(key.to_base64(), CEPH_DOC_KEY);
        assert_eq!(key.secret().len(), SECRET_LEN);
        // bytes 2..6 of the record are the creation time 0x5911686f (May 2017).
        assert_eq!(key.created(), (0x5911_686f, 0));
    }

    #[test]
    fn generated_keys_look_like_ceph_keys_and_round_trip() {
        let a = CryptoKey::generate();
        let b = CryptoKey::generate();
        assert_ne!(a.secret(), b.secret(), "two generated keys must differ");
        let text = a.to_base64();
        assert!(text.starts_with("AQ") && text.ends_with("==") && text.len() == 40, "{text}");
        let back: CryptoKey = text.parse().unwrap();
        assert_eq!(back, a);
        assert_eq!(back.to_string(), text);
        assert_eq!(CryptoKey::from_base64(&format!("  {text}\n")).unwrap(), a);
    }

    #[test]
    fn malformed_keys_are_refused_with_a_reason() {
        let good = CryptoKey::from_base64(CEPH_DOC_KEY).unwrap().to_bytes();
        let mut wrong_type = good;
        wrong_type[0] = 2;
        let mut wrong_len = good;
        wrong_len[10] = 8;
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            ("not a key!".into(), "not base64"),
            (STANDARD.encode(&good[..20]), "20 bytes"),
            (STANDARD.encode([&good[..], &[0u8][..]].concat()), "29 bytes"),
            (STANDARD.encode(wrong_type), "key type 2"),
            (STANDARD.encode(wrong_len), "secret is 8 bytes"),
            (STANDARD.encode([1u8, 0]), "2 bytes"),
            (CEPH_DOC_KEY.trim_end_matches('=').to_string(), "not base64"),
        ];
        for (text, want) in cases {
            let err = CryptoKey::from_base64(&text).unwrap_err();
            assert!(matches!(err, AuthError::InvalidKey { .. }), "{text}: {err:?}");
            assert!(err.to_string().contains(want), "{text}: '{err}' should mention '{want}'");
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let key = CryptoKey::from_parts([0xab; 16], 1, 2);
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"), "{shown}");
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab, "), "{shown}");
    }
}
