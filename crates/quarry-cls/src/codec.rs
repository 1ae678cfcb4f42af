//! How method inputs, outputs and the state methods store are encoded: `version byte ++
//! bincode`, through `quarry_persist::version`. An input that does not decode is EINVAL (the
//! caller's fault); stored state that does not decode is EBADMSG (the object's).

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use quarry_persist::version;
use quarry_types::ErrorCode;

/// Version byte of every encoding in this crate so far.
pub const VERSION: u8 = 1;

/// Encodes a request, reply or stored value.
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(version::encode(VERSION, value))
}

/// Decodes a method's input: EINVAL if it is not a valid encoding of `T`.
pub fn decode_input<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ErrorCode> {
    version::decode("method input", VERSION, bytes).map_err(|_| ErrorCode::EINVAL)
}

/// Decodes state a method stored: EBADMSG if it does not decode.
pub fn decode_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ErrorCode> {
    version::decode("method state", VERSION, bytes).map_err(|_| ErrorCode::EBADMSG)
}

/// Decodes a method's reply (client side): EBADMSG if it does not decode.
pub fn decode_reply<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ErrorCode> {
    version::decode("method reply", VERSION, bytes).map_err(|_| ErrorCode::EBADMSG)
}
