//! Zero-copy decoding of payload bytes. A decoder run inside [`decode_from`] that meets a
//! [`Payload`](crate::Payload) whose bytes lie inside the buffer being decoded takes them as
//! a slice of that buffer (`Bytes::slice_ref`: a reference count, no copy) instead of copying
//! them. The wire (a received frame's body) and the WAL (an entry read back for apply) decode
//! through it, so a 4 MiB write is not copied on either step (issue 14: every copy of a 4 MiB
//! payload cost ~0.7 ms of CPU plus page faults on fresh pages here).
//!
//! The decoded slices keep the whole source buffer alive; a frame or a log entry is mostly its
//! payload, so that costs little. Outside [`decode_from`], or for bytes a decoder produced
//! itself, decoding copies as before. The encoding is unchanged (serde bytes).

use std::cell::RefCell;

use bytes::Bytes;
use serde::de::{Deserializer, Error, SeqAccess, Visitor};

thread_local! {
    /// The buffer being decoded on this thread, if any.
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` on `source`'s bytes with `source` registered as the buffer payloads may be
/// sliced from. Nests (the outer source is restored afterwards, also on unwind).
pub fn decode_from<R>(source: &Bytes, decode: impl FnOnce(&[u8]) -> R) -> R {
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SOURCE.with(|s| *s.borrow_mut() = previous);
        }
    }
    let previous = SOURCE.with(|s| s.borrow_mut().replace(source.clone()));
    let _restore = Restore(previous);
    decode(source)
}

/// `borrowed` as a slice of the registered source when it lies inside it, else a copy.
fn bytes_of(borrowed: &[u8]) -> Bytes {
    SOURCE.with(|s| {
        if let Some(source) = s.borrow().as_ref() {
            let start = source.as_ptr() as usize;
            let at = borrowed.as_ptr() as usize;
            if !borrowed.is_empty() && at >= start && at + borrowed.len() <= start + source.len() {
                return source.slice_ref(borrowed);
            }
        }
        Bytes::copy_from_slice(borrowed)
    })
}

/// Serde `deserialize_with` for a `Bytes` field: zero-copy under [`decode_from`] when the
/// format lends its input's bytes (bincode from a slice does).
pub(crate) fn deserialize_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    struct BytesVisitor;
    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Bytes;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes")
        }
        fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
            Ok(bytes_of(v))
        }
        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v))
        }
        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(byte) = seq.next_element::<u8>()? {
                out.push(byte);
            }
            Ok(Bytes::from(out))
        }
    }
    d.deserialize_bytes(BytesVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;

    fn options() -> impl bincode::Options {
        use bincode::Options;
        bincode::DefaultOptions::new().with_fixint_encoding().with_little_endian()
    }

    #[test]
    fn payloads_are_slices_of_the_source_inside_decode_from_and_copies_outside() {
        use bincode::Options;
        let payload = Payload::new(vec![7u8; 8192]);
        let encoded = Bytes::from(options().serialize(&payload).unwrap());
        let range = encoded.as_ptr() as usize..encoded.as_ptr() as usize + encoded.len();
        let inside: Payload = decode_from(&encoded, |b| options().deserialize(b).unwrap());
        assert_eq!(inside, payload);
        assert!(range.contains(&(inside.data.as_ptr() as usize)), "not a slice of the source");
        let outside: Payload = options().deserialize(&encoded).unwrap();
        assert_eq!(outside, payload);
        assert!(!range.contains(&(outside.data.as_ptr() as usize)), "a slice without a source");
        // bytes from another buffer than the registered one are copied
        let other = Bytes::from(options().serialize(&payload).unwrap());
        let copied: Payload = decode_from(&encoded, |_| options().deserialize(&other).unwrap());
        assert!(!(other.as_ptr() as usize..other.as_ptr() as usize + other.len())
            .contains(&(copied.data.as_ptr() as usize)));
        assert_eq!(copied, payload);
    }

    #[test]
    fn json_still_decodes() {
        let payload = Payload::new(vec![1u8, 2, 3]);
        let text = serde_json::to_string(&payload).unwrap();
        assert_eq!(serde_json::from_str::<Payload>(&text).unwrap(), payload);
    }
}
