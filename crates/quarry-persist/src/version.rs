//! The envelope of a persisted payload: `version u8 ++ body`, and the errors of decoding one.
//!
//! The body is bincode 1 with fixed-width little-endian integers (what `bincode::serialize`
//! writes); decoding refuses trailing bytes. Version 0 is never written, so a zeroed payload
//! is not mistaken for data. See the crate docs for the upgrade rule.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A payload (or file) written by a newer build than this one: the data may be fine, this
/// binary cannot read it. Never reported as corruption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} has format version {found}, newer than this build reads (up to {supported}): upgrade Quarry")]
pub struct FormatTooNew {
    /// What was being decoded (`monitor snapshot`, `PgCommand`, ...).
    pub what: &'static str,
    /// The version found.
    pub found: u32,
    /// The newest version this build reads.
    pub supported: u32,
}

/// Why a persisted payload did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Written by a newer build.
    #[error(transparent)]
    TooNew(#[from] FormatTooNew),
    /// Not a valid payload of any version this build knows.
    #[error("{what} does not decode: {detail}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl DecodeError {
    /// An [`DecodeError::Invalid`].
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> DecodeError {
        DecodeError::Invalid { what, detail: detail.into() }
    }
}

/// The bincode configuration of persisted bodies: fixed-width little-endian integers (the
/// same bytes `bincode::serialize` writes), no trailing bytes.
fn options() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().reject_trailing_bytes()
}

/// `version ++ bincode(value)`.
///
/// # Panics
/// If `value` does not serialise. With no size limit, bincode fails only on sequences of
/// unknown length, which derived `Serialize` impls never produce: a failure is a bug.
pub fn encode<T: Serialize + ?Sized>(version: u8, value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, version, value);
    out
}

/// Appends `version ++ bincode(value)` to `out` (see [`encode`]).
pub fn encode_into<T: Serialize + ?Sized>(out: &mut Vec<u8>, version: u8, value: &T) {
    assert!(version > 0, "version 0 is never written");
    out.push(version);
    encode_body_into(out, value);
}

/// Appends `bincode(value)` to `out`, with no version byte: for a body inside a payload whose
/// version byte covers it. Panics like [`encode`].
pub fn encode_body_into<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Sized first (a walk that copies nothing): a 4 MiB write is then serialised into one
    // allocation instead of a chain of doublings, each a copy onto fresh pages.
    if let Ok(len) = options().serialized_size(value) {
        out.reserve(usize::try_from(len).unwrap_or(0));
    }
    if let Err(error) = options().serialize_into(&mut *out, value) {
        panic!("a persisted value failed to serialise (a bug): {error}");
    }
}

/// Splits `bytes` into its version byte and body, checking `1 <= version <= supported`.
/// Newer versions are [`DecodeError::TooNew`].
pub fn split<'a>(
    what: &'static str,
    supported: u8,
    bytes: &'a [u8],
) -> Result<(u8, &'a [u8]), DecodeError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(DecodeError::invalid(what, "empty payload"));
    };
    if version == 0 {
        return Err(DecodeError::invalid(what, "version 0"));
    }
    if version > supported {
        let too_new =
            FormatTooNew { what, found: u32::from(version), supported: u32::from(supported) };
        return Err(too_new.into());
    }
    Ok((version, body))
}

/// Decodes a bincode body (no trailing bytes allowed).
pub fn decode_body<T: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T, DecodeError> {
    options().deserialize(body).map_err(|e| DecodeError::invalid(what, e.to_string()))
}

/// Decodes a payload of a type with a single version so far: checks the version byte is
/// `current` (older versions do not exist yet; newer ones are [`DecodeError::TooNew`]) and
/// decodes the body. When a type gets a second version, its decoder matches on the version
/// from [`split`] instead.
pub fn decode<T: DeserializeOwned>(
    what: &'static str,
    current: u8,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    let (version, body) = split(what, current, bytes)?;
    if version != current {
        return Err(DecodeError::invalid(what, format!("unknown old version {version}")));
    }
    decode_body(what, body)
}

/// Lower-case hex of `bytes`, for golden-byte tests.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string; whitespace and `#` comments to the end of a line are ignored, so
/// golden files can be annotated. Panics on anything else (golden files are test inputs).
pub fn from_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.bytes().filter(|b| !b.is_ascii_whitespace()))
        .collect();
    assert!(digits.len() & 1 == 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(text, 16).unwrap_or_else(|_| panic!("bad hex digits {text:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        a: u32,
        b: String,
    }

    #[test]
    fn envelope_bytes_are_pinned() {
        let bytes = encode(1, &Sample { a: 2, b: "x".into() });
        assert_eq!(to_hex(&bytes), "01020000000100000000000000".to_string() + "78");
        assert_eq!(decode::<Sample>("sample", 1, &bytes).unwrap(), Sample { a: 2, b: "x".into() });
    }

    #[test]
    fn newer_versions_are_too_new_not_invalid() {
        let mut bytes = encode(1, &Sample { a: 2, b: "x".into() });
        bytes[0] = 2;
        let err = decode::<Sample>("sample", 1, &bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooNew(FormatTooNew { what: "sample", found: 2, supported: 1 })
        );
        assert!(err.to_string().contains("upgrade"), "{err}");
    }

    #[test]
    fn garbage_is_invalid() {
        let bytes = encode(1, &Sample { a: 2, b: "x".into() });
        for bad in [&[][..], &[0u8, 1][..], &bytes[..bytes.len() - 1]] {
            assert!(matches!(decode::<Sample>("s", 1, bad), Err(DecodeError::Invalid { .. })));
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(decode::<Sample>("s", 1, &trailing), Err(DecodeError::Invalid { .. })));
    }

    #[test]
    fn hex_round_trips_with_comments() {
        assert_eq!(from_hex("01 ff # comment\n0a"), vec![1, 0xff, 0x0a]);
        assert_eq!(to_hex(&[1, 0xff, 0x0a]), "01ff0a");
    }
}
