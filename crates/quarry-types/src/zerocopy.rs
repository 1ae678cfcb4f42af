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
//!
//! Zero-copy encoding, for bincode with fixed-width integers (the wire's frames): inside
//! [`encode_spliced`], a payload of at least [`SPLICE_MIN`] bytes is written as its length
//! prefix only, and its bytes are handed back with the offset where they belong; the caller
//! sends the encoded bytes and the payloads in order (the bytes on the wire are the same as
//! a plain encoding's). A 4 MiB write or read reply is then not copied into the frame. It
//! also says where the first payload of at least [`BULK_MIN`] bytes starts, spliced or not:
//! the wire signs such a payload as a bulk, by its own digest, which BLAKE3 computes over
//! whole 1 KiB chunks several at a time (`quarry_wire::codec`).

use std::cell::{Cell, RefCell};

use bytes::Bytes;
use serde::de::{Deserializer, Error, SeqAccess, Visitor};
use serde::Serializer;

thread_local! {
    /// The buffer being decoded on this thread, if any.
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
    /// Inside [`encode_spliced`]: the payloads left out so far.
    static SPLICES: RefCell<Option<Vec<Splice>>> = const { RefCell::new(None) };
    /// Inside [`encode_spliced`]: the bytes written so far.
    static WRITTEN: Cell<usize> = const { Cell::new(0) };
    /// Inside [`encode_spliced`]: where the first payload of at least [`BULK_MIN`] bytes
    /// starts, once one was written.
    static FIRST_BULK: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Payloads of at least this many bytes are reported by [`encode_spliced`] (the first one):
/// a 4 KiB write's data signed as a bulk, from a chunk boundary, hashed in 1.8 µs instead of
/// 4.3 µs here (the frame's 32-byte header before it left every 1 KiB chunk of the payload
/// straddling two of BLAKE3's, hashed one 64-byte block at a time).
pub const BULK_MIN: usize = 1024;

/// Payloads shorter than this are encoded in place (a copy costs less than a piece more).
pub const SPLICE_MIN: usize = 64 << 10;

/// A payload [`encode_spliced`] left out of the encoded bytes.
#[derive(Clone, Debug)]
pub struct Splice {
    /// Where its bytes belong in the encoded bytes (after its length prefix).
    pub at: usize,
    /// Its bytes.
    pub bytes: Bytes,
    /// Their BLAKE3 digest, when the payload's producer gave one
    /// ([`crate::Payload::with_digest`]).
    pub digest: Option<[u8; 32]>,
}

/// Where [`encode_spliced`]'s encoder writes: a buffer that tells the payload serializer how
/// far it got.
pub struct SplicedWriter {
    buf: Vec<u8>,
}

impl std::io::Write for SplicedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        WRITTEN.with(|w| w.set(self.buf.len()));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `encode` (a bincode fixint encoding into the writer, after `prefix`) with large
/// payloads left out: returns its result, the bytes written (starting with `prefix`), the
/// payloads with the offsets in those bytes where each belongs, and where the first payload
/// of at least [`BULK_MIN`] bytes starts (in the plain encoding: after its length prefix).
/// Concatenating the pieces in order gives the plain encoding. `encode` must serialize the value once: bincode
/// options without a size limit (with one, bincode first runs a sizing pass, which would
/// report every payload twice; check the size before instead).
pub fn encode_spliced<R>(
    prefix: Vec<u8>,
    encode: impl FnOnce(&mut SplicedWriter) -> R,
) -> (R, Vec<u8>, Vec<Splice>, Option<usize>) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SPLICES.with(|s| *s.borrow_mut() = None);
            WRITTEN.with(|w| w.set(0));
            FIRST_BULK.with(|f| f.set(None));
        }
    }
    let mut writer = SplicedWriter { buf: prefix };
    WRITTEN.with(|w| w.set(writer.buf.len()));
    FIRST_BULK.with(|f| f.set(None));
    SPLICES.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let reset = Reset;
    let result = encode(&mut writer);
    let splices = SPLICES.with(|s| s.borrow_mut().take()).unwrap_or_default();
    let first_bulk = FIRST_BULK.with(Cell::get);
    drop(reset);
    (result, writer.buf, splices, first_bulk)
}

/// How a payload's `Bytes` serialize: serde bytes, except inside [`encode_spliced`] where a
/// large one is written as its length (bincode's fixint prefix) and left out, with `digest`.
pub(crate) fn serialize_bytes<S: Serializer>(
    data: &Bytes,
    digest: Option<&[u8; 32]>,
    s: S,
) -> Result<S::Ok, S::Error> {
    // The first payload of at least BULK_MIN bytes: where it starts.
    let note_bulk = |at: usize| FIRST_BULK.with(|f| f.set(Some(f.get().unwrap_or(at))));
    let inside = SPLICES.with(|c| c.borrow().is_some());
    if !inside || data.len() < SPLICE_MIN {
        let done = s.serialize_bytes(data)?;
        if inside && data.len() >= BULK_MIN {
            note_bulk(WRITTEN.with(Cell::get) - data.len());
        }
        return Ok(done);
    }
    let done = s.serialize_u64(data.len() as u64)?;
    let at = WRITTEN.with(Cell::get);
    note_bulk(at);
    SPLICES.with(|c| {
        if let Some(list) = c.borrow_mut().as_mut() {
            list.push(Splice { at, bytes: data.clone(), digest: digest.copied() });
        }
    });
    Ok(done)
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

    /// Spliced pieces put back in order are the plain encoding; small payloads stay inline;
    /// outside `encode_spliced` nothing is left out.
    #[test]
    fn spliced_encodings_put_together_are_the_plain_encoding() {
        use bincode::Options;
        let big = Payload::new(vec![9u8; SPLICE_MIN + 3]);
        let small = Payload::new(vec![1u8; 10]);
        let value = (7u32, big.clone(), small.clone(), big.clone(), 5u8);
        let plain = options().serialize(&value).unwrap();
        let (r, head, splices, first) =
            encode_spliced(b"HDR".to_vec(), |w| options().serialize_into(w, &value));
        r.unwrap();
        assert_eq!(splices.len(), 2, "the two large payloads are left out");
        assert_eq!(first, Some(splices[0].at), "the first large payload is the first bulk");
        assert!(head.starts_with(b"HDR"));
        let mut whole = Vec::new();
        let mut at = 0;
        for splice in &splices {
            whole.extend_from_slice(&head[at..splice.at]);
            whole.extend_from_slice(&splice.bytes);
            at = splice.at;
        }
        whole.extend_from_slice(&head[at..]);
        assert_eq!(&whole[3..], &plain[..]);
        assert_eq!(head.len() - 3 + 2 * big.len(), plain.len());
        // The state is gone afterwards: a plain encoding copies again.
        assert_eq!(options().serialize(&value).unwrap(), plain);
        assert!(SPLICES.with(|s| s.borrow().is_none()));
    }

    /// The first payload of at least `BULK_MIN` bytes is reported where it starts in the
    /// plain encoding (after its length prefix), spliced or not; smaller ones are not.
    #[test]
    fn the_first_bulk_is_reported_where_it_starts() {
        use bincode::Options;
        let tiny = Payload::new(vec![1u8; BULK_MIN - 1]);
        let small = Payload::new(vec![2u8; BULK_MIN]);
        let big = Payload::new(vec![3u8; SPLICE_MIN]);
        let value = (7u32, tiny.clone(), small.clone(), big.clone());
        let plain = options().serialize(&value).unwrap();
        let (r, head, splices, first) =
            encode_spliced(b"HDR".to_vec(), |w| options().serialize_into(w, &value));
        r.unwrap();
        let at = first.expect("a payload of BULK_MIN bytes");
        assert_eq!(&head[at..at + BULK_MIN], &small.data[..]);
        assert_eq!(&plain[at - 3..at - 3 + BULK_MIN], &small.data[..]);
        assert_eq!(u64::from_le_bytes(head[at - 8..at].try_into().unwrap()), BULK_MIN as u64);
        assert_eq!(splices.len(), 1);
        let only_tiny = (7u32, tiny);
        let (_, _, _, none) =
            encode_spliced(Vec::new(), |w| options().serialize_into(w, &only_tiny));
        assert_eq!(none, None);
        assert!(FIRST_BULK.with(Cell::get).is_none(), "the state is gone afterwards");
    }

    #[test]
    fn json_still_decodes() {
        let payload = Payload::new(vec![1u8, 2, 3]);
        let text = serde_json::to_string(&payload).unwrap();
        assert_eq!(serde_json::from_str::<Payload>(&text).unwrap(), payload);
    }
}
