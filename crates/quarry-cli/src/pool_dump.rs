//! The pool export format of `rados export` / `rados import`: Ceph's (`RadosDump`, written by
//! Ceph's `rados export` since Ceph 10 and read by its `rados import`), so an export made by
//! either side imports into the other. Pure encoding and decoding over `Write` / `Read`; the
//! commands that talk to the cluster are in `rados_dump`.
//!
//! # Layout (all integers little-endian, Ceph's encoding)
//! - A 16-byte super header: magic `0xffceffce`, version 2, the size of every section header
//!   (18) and of every section footer.
//! - Sections: a header (`struct_v 1, compat 1, len u32` framing, then `u32` type tag
//!   `type<<24 | type<<16 | 0xffce` and the body size `i64`), the body, and, when the body
//!   is not empty, a footer (framing, then the end magic `0xecffffce`).
//! - `POOL_BEGIN`, then per object `OBJECT_BEGIN` (its `hobject_t`: key, name, snap, hash,
//!   namespace, pool, then generation, shard and an `object_info_t`), `DATA` sections (offset,
//!   length, bytes; up to 4 MiB each), `ATTRS` (the xattrs, names prefixed with `_` as
//!   Ceph's OSD stores them), `OMAP_HDR`, `OMAP` sections (up to 512 entries each) and
//!   `OBJECT_END`; then `POOL_END`. `ceph-objectstore-tool`'s PG exports (`PG_BEGIN`,
//!   `PG_METADATA`, `PG_END`) are read too; unknown section types are skipped, as Ceph does.
//!
//! # What Quarry adds
//! Ceph's footers carry no checksum, so a flipped byte in a body goes unnoticed. Quarry's
//! footers are 14 bytes instead of 10: the same framing with 8 bytes of content, the end magic
//! and the crc32c of the section's header and body. The super header announces the footer
//! size, and Ceph's reader decodes a footer with its length prefix and skips what it does not
//! know, so Ceph 16's `rados import` reads Quarry's exports (checked by hand, see
//! docs/commands.md). A file whose footers are Ceph's 10 bytes is read without checksums.
//!
//! Bounds: a section body over [`SECTION_BYTES_MAX`] is refused before anything is allocated
//! for it; every length inside a body is checked against what is left of it.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use bytes::Bytes;

/// Magic of the super header (`ce ff ce ff` in the stream).
pub const SUPER_MAGIC: u32 = 0xffce_ffce;
/// The format version written (Ceph's `super_ver`); older or equal versions are read.
pub const SUPER_VERSION: u32 = 2;
const SHORT_MAGIC: u32 = 0xffce;
/// Magic every footer starts with (`ce ff ff ec` in the stream).
pub const END_MAGIC: u32 = 0xecff_ffce;
/// Size of an encoded section header (Ceph's).
pub const HEADER_SIZE: u32 = 18;
/// Size of Ceph's footer (no checksum).
pub const CEPH_FOOTER_SIZE: u32 = 10;
/// Size of Quarry's footer (end magic and crc32c).
pub const QUARRY_FOOTER_SIZE: u32 = 14;
/// The largest section body read (Quarry writes at most 4 MiB of data or 512 omap entries
/// per section).
pub const SECTION_BYTES_MAX: u64 = 256 << 20;
/// Bytes of object data per `DATA` section (Ceph's export uses 4 MiB).
pub const DATA_SECTION_BYTES: usize = 4 << 20;
/// Omap entries per `OMAP` section (Ceph's export uses 512).
pub const OMAP_SECTION_ENTRIES: u32 = 512;
/// Ceph's `CEPH_NOSNAP`: the head of an object.
const NOSNAP: u64 = 0xffff_ffff_ffff_fffe;
/// The pool id Ceph's export leaves in every object (`INT64_MIN`: unset).
const POOL_UNSET: i64 = i64::MIN;

/// Ceph's section types (`RadosDump.h`); never renumbered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Section {
    /// Start of a `ceph-objectstore-tool` PG export.
    PgBegin = 1,
    /// End of a PG export.
    PgEnd = 2,
    /// Start of an object.
    ObjectBegin = 3,
    /// End of an object.
    ObjectEnd = 4,
    /// A piece of object data.
    Data = 5,
    /// The object's xattrs.
    Attrs = 6,
    /// The object's omap header.
    OmapHdr = 7,
    /// Some of the object's omap entries.
    Omap = 8,
    /// PG metadata (ignored on import).
    PgMetadata = 9,
    /// Start of a pool export.
    PoolBegin = 10,
    /// End of a pool export.
    PoolEnd = 11,
}

/// Types at or above this are unknown and skipped (Ceph's `END_OF_TYPES`).
const END_OF_TYPES: u8 = 12;

/// A default `object_info_t` as Ceph 16.2 encodes it (struct v17, compat 8, 226 bytes):
/// Ceph's `rados export` leaves the object info of every object unset and its importers skip
/// it, so this is what every object carries.
const DEFAULT_OBJECT_INFO: &str = "\
1108e200000004032100000000000000000000000000000000000000000000000000000000000000\
000000008006031c0000000000000000000080ffffffff0000000000000000ffffffffffffffff00\
00000000000000000000000000000000000000000000000000000002021500000000000000000000\
00000000000000000000000000000000000000000000000000000000000000000000000000000000\
00000000000000000000000000000000000000000000000000000000000000000000000000000000\
00000000ffffffffffffffff0000000000000000000000000000000000000000";

/// Why an export cannot be read. `at` is the byte offset in the file where it went wrong.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The input ended inside the super header or a section.
    #[error("Unexpected EOF at byte {at}: the export is truncated")]
    Truncated {
        /// Offset.
        at: u64,
    },
    /// Not an export at all.
    #[error("Invalid magic number: {found:#x} vs. {SUPER_MAGIC:#x}: not a rados export")]
    BadMagic {
        /// What the file starts with.
        found: u32,
    },
    /// A newer format.
    #[error("Can't handle export format version={found}")]
    Version {
        /// The file's version.
        found: u32,
    },
    /// Section header or footer sizes this reader cannot parse.
    #[error("unsupported section framing: headers of {header} bytes, footers of {footer}")]
    Framing {
        /// Header size announced.
        header: u32,
        /// Footer size announced.
        footer: u32,
    },
    /// A footer without its magic: the file is damaged or misaligned.
    #[error("Bad footer magic at byte {at}: the export is corrupt")]
    BadFooter {
        /// Offset.
        at: u64,
    },
    /// A section whose checksum does not match.
    #[error("checksum mismatch in the section at byte {at}: the export is corrupt")]
    Checksum {
        /// Offset of the section.
        at: u64,
    },
    /// A section too large to be one of an export's.
    #[error(
        "section of {size} bytes at byte {at} (at most {SECTION_BYTES_MAX}): the export is corrupt"
    )]
    TooLarge {
        /// Offset.
        at: u64,
        /// Announced size.
        size: i64,
    },
    /// A section that does not decode, or is out of place.
    #[error("malformed export at byte {at}: {what}")]
    Malformed {
        /// Offset of the section.
        at: u64,
        /// What is wrong.
        what: String,
    },
    /// Reading the input failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// One object's identity in an export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectId {
    /// Namespace ("" is the default).
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// Locator key (Quarry writes none).
    pub key: String,
    /// Snapshot id (`head` is Ceph's NOSNAP).
    pub snap: u64,
    /// Pool id recorded (Ceph's export leaves it unset).
    pub pool: i64,
    /// Hash recorded (Ceph's export leaves it 0).
    pub hash: u32,
}

impl ObjectId {
    /// A head object as `rados export` records it.
    pub fn head(namespace: &str, name: &str) -> ObjectId {
        ObjectId {
            namespace: namespace.into(),
            name: name.into(),
            key: String::new(),
            snap: NOSNAP,
            pool: POOL_UNSET,
            hash: 0,
        }
    }

    /// Whether this is the head (the only kind imported).
    pub fn is_head(&self) -> bool {
        self.snap == NOSNAP
    }
}

/// Ceph's `ghobject_t` print form: `#POOL:HASH:NAMESPACE:KEY:NAME:SNAP#`, with `%`, `:`, `/`
/// and bytes outside printable ASCII written `%xx`.
impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snap = match self.snap {
            NOSNAP => "head".to_string(),
            0xffff_ffff_ffff_ffff => "snapdir".to_string(),
            s => format!("{s:x}"),
        };
        write!(
            f,
            "#{}:{:08x}:{}:{}:{}:{snap}#",
            self.pool,
            self.hash.reverse_bits(),
            escape(&self.namespace),
            escape(&self.key),
            escape(&self.name)
        )
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'%' | b':' | b'/' | 0..=31 | 127..=255 => out.push_str(&format!("%{byte:02x}")),
            _ => out.push(byte as char),
        }
    }
    out
}

// ---- encoding ----

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, v: &[u8]) {
    assert!(v.len() <= u32::MAX as usize, "a Ceph string or buffer is at most 4 GiB");
    put_u32(buf, v.len() as u32);
    buf.extend_from_slice(v);
}

fn put_map(buf: &mut Vec<u8>, map: &BTreeMap<String, Bytes>) {
    put_u32(buf, map.len() as u32);
    for (k, v) in map {
        put_bytes(buf, k.as_bytes());
        put_bytes(buf, v);
    }
}

/// Ceph's `ENCODE_START(v, compat) … ENCODE_FINISH`: version, compat, then the length of what
/// `fill` writes.
fn put_struct(buf: &mut Vec<u8>, v: u8, compat: u8, fill: impl FnOnce(&mut Vec<u8>)) {
    buf.push(v);
    buf.push(compat);
    let at = buf.len();
    put_u32(buf, 0);
    fill(buf);
    let len = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

fn header_bytes(kind: u8, size: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_SIZE as usize);
    put_struct(&mut buf, 1, 1, |b| {
        put_u32(b, (u32::from(kind) << 24) | (u32::from(kind) << 16) | SHORT_MAGIC);
        put_u64(b, size);
    });
    assert_eq!(buf.len(), HEADER_SIZE as usize);
    buf
}

fn default_object_info() -> Vec<u8> {
    let hex = DEFAULT_OBJECT_INFO.as_bytes();
    hex.chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).unwrap_or("00");
            u8::from_str_radix(text, 16).unwrap_or(0)
        })
        .collect()
}

/// Writes an export: [`DumpWriter::new`] writes the super header, then sections in order.
pub struct DumpWriter<W: Write> {
    out: W,
    object_info: Vec<u8>,
}

impl<W: Write> DumpWriter<W> {
    /// Starts an export on `out` (the super header, then `POOL_BEGIN`).
    pub fn new(mut out: W) -> io::Result<DumpWriter<W>> {
        let mut buf = Vec::with_capacity(16);
        put_u32(&mut buf, SUPER_MAGIC);
        put_u32(&mut buf, SUPER_VERSION);
        put_u32(&mut buf, HEADER_SIZE);
        put_u32(&mut buf, QUARRY_FOOTER_SIZE);
        out.write_all(&buf)?;
        let mut writer = DumpWriter { out, object_info: default_object_info() };
        writer.simple(Section::PoolBegin)?;
        Ok(writer)
    }

    fn simple(&mut self, kind: Section) -> io::Result<()> {
        self.out.write_all(&header_bytes(kind as u8, 0))
    }

    fn section(&mut self, kind: Section, body: &[u8]) -> io::Result<()> {
        assert!(!body.is_empty(), "every encoded section body has its framing");
        let header = header_bytes(kind as u8, body.len() as u64);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header), body);
        let mut footer = Vec::with_capacity(QUARRY_FOOTER_SIZE as usize);
        put_struct(&mut footer, 1, 1, |b| {
            put_u32(b, END_MAGIC);
            put_u32(b, crc);
        });
        assert_eq!(footer.len(), QUARRY_FOOTER_SIZE as usize);
        self.out.write_all(&header)?;
        self.out.write_all(body)?;
        self.out.write_all(&footer)
    }

    /// `OBJECT_BEGIN` of the head object `name` in `namespace`.
    pub fn object_begin(&mut self, namespace: &str, name: &str) -> io::Result<()> {
        let id = ObjectId::head(namespace, name);
        let mut body = Vec::new();
        let info = &self.object_info;
        put_struct(&mut body, 3, 1, |b| {
            put_struct(b, 4, 3, |h| {
                put_bytes(h, id.key.as_bytes());
                put_bytes(h, id.name.as_bytes());
                put_u64(h, id.snap);
                put_u32(h, id.hash);
                h.push(0); // max
                put_bytes(h, id.namespace.as_bytes());
                put_u64(h, id.pool as u64);
            });
            put_u64(b, u64::MAX); // generation: NO_GEN
            b.push(0xff); // shard: NO_SHARD
            b.extend_from_slice(info);
        });
        self.section(Section::ObjectBegin, &body)
    }

    /// A `DATA` section: `data` at `offset`.
    pub fn data(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut body = Vec::with_capacity(data.len() + 30);
        put_struct(&mut body, 1, 1, |b| {
            put_u64(b, offset);
            put_u64(b, data.len() as u64);
            put_bytes(b, data);
        });
        self.section(Section::Data, &body)
    }

    /// The `ATTRS` section: user xattrs, written `_NAME` as Ceph's OSD keeps them.
    pub fn attrs(&mut self, xattrs: &BTreeMap<String, Bytes>) -> io::Result<()> {
        let stored: BTreeMap<String, Bytes> =
            xattrs.iter().map(|(k, v)| (format!("_{k}"), v.clone())).collect();
        let mut body = Vec::new();
        put_struct(&mut body, 1, 1, |b| put_map(b, &stored));
        self.section(Section::Attrs, &body)
    }

    /// The `OMAP_HDR` section.
    pub fn omap_header(&mut self, header: &[u8]) -> io::Result<()> {
        let mut body = Vec::new();
        put_struct(&mut body, 1, 1, |b| put_bytes(b, header));
        self.section(Section::OmapHdr, &body)
    }

    /// An `OMAP` section.
    pub fn omap(&mut self, vals: &BTreeMap<String, Bytes>) -> io::Result<()> {
        let mut body = Vec::new();
        put_struct(&mut body, 1, 1, |b| put_map(b, vals));
        self.section(Section::Omap, &body)
    }

    /// `OBJECT_END`.
    pub fn object_end(&mut self) -> io::Result<()> {
        self.simple(Section::ObjectEnd)
    }

    /// `POOL_END`; flushes and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.simple(Section::PoolEnd)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

// ---- decoding ----

/// A cursor over one section body; every length is checked against what is left.
struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err(format!("{n} bytes wanted, {} left", self.buf.len() - self.pos));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }

    fn map(&mut self) -> Result<BTreeMap<String, Bytes>, String> {
        let n = self.u32()?;
        let mut map = BTreeMap::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = Bytes::copy_from_slice(self.bytes()?);
            map.insert(k, v);
        }
        Ok(map)
    }

    /// Ceph's `DECODE_START`: (struct_v, end offset); refuses a compat newer than `known`.
    fn start(&mut self, known: u8) -> Result<(u8, usize), String> {
        let v = self.u8()?;
        let compat = self.u8()?;
        let len = self.u32()? as usize;
        if compat > known {
            return Err(format!("struct needs decoder version {compat}, this one knows {known}"));
        }
        if self.buf.len() - self.pos < len {
            return Err(format!("struct of {len} bytes, {} left", self.buf.len() - self.pos));
        }
        Ok((v, self.pos + len))
    }

    /// Ceph's `DECODE_FINISH`: skips what a newer encoder added.
    fn finish(&mut self, end: usize) -> Result<(), String> {
        if self.pos > end {
            return Err("struct overran its length".into());
        }
        self.pos = end;
        Ok(())
    }
}

/// What a reader yields, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// An object starts.
    ObjectBegin(ObjectId),
    /// Data at an offset.
    Data {
        /// Offset in the object.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// Xattrs as stored (`_NAME` for user xattrs).
    Attrs(BTreeMap<String, Bytes>),
    /// The omap header.
    OmapHeader(Bytes),
    /// Omap entries.
    Omap(BTreeMap<String, Bytes>),
    /// The object ends.
    ObjectEnd,
    /// The export ends (`POOL_END` or `PG_END`).
    End,
}

/// Reads an export section by section, checking framing, checksums (Quarry's footers) and
/// the order of sections.
pub struct DumpReader<R: Read> {
    input: R,
    pos: u64,
    footer_size: u32,
    in_object: bool,
    done: bool,
}

impl<R: Read> DumpReader<R> {
    /// Reads the super header and the first section (`POOL_BEGIN` or `PG_BEGIN`).
    pub fn new(input: R) -> Result<DumpReader<R>, DumpError> {
        let mut reader =
            DumpReader { input, pos: 0, footer_size: 0, in_object: false, done: false };
        let mut sh = [0u8; 16];
        reader.read_exact(&mut sh)?;
        let mut d = Dec { buf: &sh, pos: 0 };
        let (magic, version, header, footer) = (
            d.u32().unwrap_or(0),
            d.u32().unwrap_or(0),
            d.u32().unwrap_or(0),
            d.u32().unwrap_or(0),
        );
        if magic != SUPER_MAGIC {
            return Err(DumpError::BadMagic { found: magic });
        }
        if version > SUPER_VERSION {
            return Err(DumpError::Version { found: version });
        }
        if header != HEADER_SIZE || !(CEPH_FOOTER_SIZE..=64).contains(&footer) {
            return Err(DumpError::Framing { header, footer });
        }
        reader.footer_size = footer;
        let at = reader.pos;
        let (kind, _) = reader.section()?;
        if kind != Section::PoolBegin as u8 && kind != Section::PgBegin as u8 {
            return Err(DumpError::Malformed {
                at,
                what: format!("the first section is of type {kind}, not a pool or PG start"),
            });
        }
        Ok(reader)
    }

    /// Whether the sections carry Quarry's checksums.
    pub fn checksummed(&self) -> bool {
        self.footer_size >= QUARRY_FOOTER_SIZE
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), DumpError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.input.read(&mut buf[filled..]) {
                Ok(0) => return Err(DumpError::Truncated { at: self.pos + filled as u64 }),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DumpError::Io(e)),
            }
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// One section: (type, body), its footer checked.
    fn section(&mut self) -> Result<(u8, Vec<u8>), DumpError> {
        let at = self.pos;
        let mut header = [0u8; HEADER_SIZE as usize];
        self.read_exact(&mut header)?;
        let malformed = |what: String| DumpError::Malformed { at, what };
        let mut d = Dec { buf: &header, pos: 0 };
        let (v, end) = d.start(1).map_err(|e| malformed(format!("section header: {e}")))?;
        if v != 1 || header[1] != 1 {
            return Err(malformed(format!("section header of version {v}/{}", header[1])));
        }
        let tag = d.u32().map_err(|e| malformed(format!("section header: {e}")))?;
        let size = d.u64().map_err(|e| malformed(format!("section header: {e}")))? as i64;
        d.finish(end).map_err(|e| malformed(format!("section header: {e}")))?;
        let kind = (tag >> 24) as u8;
        if tag & 0xffff != SHORT_MAGIC || (tag >> 16) as u8 != kind {
            return Err(malformed(format!("section header tag {tag:#010x} is not a section's")));
        }
        if !(0..=SECTION_BYTES_MAX as i64).contains(&size) {
            return Err(DumpError::TooLarge { at, size });
        }
        let mut body = Vec::new();
        let read = (&mut self.input).take(size as u64).read_to_end(&mut body)?;
        self.pos += read as u64;
        if read as u64 != size as u64 {
            return Err(DumpError::Truncated { at: self.pos });
        }
        if size > 0 {
            let footer_at = self.pos;
            let mut footer = vec![0u8; self.footer_size as usize];
            self.read_exact(&mut footer)?;
            let mut f = Dec { buf: &footer, pos: 0 };
            let bad = || DumpError::BadFooter { at: footer_at };
            let (v, end) = f.start(1).map_err(|_| bad())?;
            if v != 1 || footer[1] != 1 || f.u32().map_err(|_| bad())? != END_MAGIC {
                return Err(bad());
            }
            if self.checksummed() {
                let crc = f.u32().map_err(|_| bad())?;
                if crc != crc32c::crc32c_append(crc32c::crc32c(&header), &body) {
                    return Err(DumpError::Checksum { at });
                }
            }
            f.finish(end).map_err(|_| bad())?;
        }
        Ok((kind, body))
    }

    /// The next item; after [`Item::End`] it keeps returning `End`.
    pub fn next_item(&mut self) -> Result<Item, DumpError> {
        loop {
            if self.done {
                return Ok(Item::End);
            }
            let at = self.pos;
            let (kind, body) = self.section()?;
            let malformed = |what: String| DumpError::Malformed { at, what };
            if kind >= END_OF_TYPES {
                continue;
            }
            let mut d = Dec { buf: &body, pos: 0 };
            let item = match (self.in_object, kind) {
                (false, k) if k == Section::ObjectBegin as u8 => {
                    self.in_object = true;
                    Item::ObjectBegin(decode_object_begin(&mut d).map_err(malformed)?)
                }
                (false, k) if k == Section::PgMetadata as u8 => continue,
                (false, k) if k == Section::PoolEnd as u8 || k == Section::PgEnd as u8 => {
                    self.done = true;
                    Item::End
                }
                (true, k) if k == Section::Data as u8 => decode_data(&mut d).map_err(malformed)?,
                (true, k) if k == Section::Attrs as u8 => {
                    Item::Attrs(decode_wrapped(&mut d, Dec::map).map_err(malformed)?)
                }
                (true, k) if k == Section::OmapHdr as u8 => {
                    let header = decode_wrapped(&mut d, |d| d.bytes().map(<[u8]>::to_vec))
                        .map_err(malformed)?;
                    Item::OmapHeader(Bytes::from(header))
                }
                (true, k) if k == Section::Omap as u8 => {
                    Item::Omap(decode_wrapped(&mut d, Dec::map).map_err(malformed)?)
                }
                (true, k) if k == Section::ObjectEnd as u8 => {
                    self.in_object = false;
                    Item::ObjectEnd
                }
                (in_object, k) => {
                    let place = if in_object { "inside an object" } else { "between objects" };
                    return Err(malformed(format!("unexpected section type {k} {place}")));
                }
            };
            return Ok(item);
        }
    }
}

fn decode_wrapped<'a, T>(
    d: &mut Dec<'a>,
    inner: impl FnOnce(&mut Dec<'a>) -> Result<T, String>,
) -> Result<T, String> {
    let (_, end) = d.start(1)?;
    let value = inner(d)?;
    d.finish(end)?;
    Ok(value)
}

fn decode_data(d: &mut Dec<'_>) -> Result<Item, String> {
    let (_, end) = d.start(1)?;
    let offset = d.u64()?;
    let len = d.u64()?;
    let data = d.bytes()?;
    if data.len() as u64 != len {
        return Err(format!("a data section says {len} bytes and holds {}", data.len()));
    }
    if offset.checked_add(len).is_none_or(|e| e > quarry_types::OBJECT_SIZE_MAX) {
        return Err(format!("data at {offset}+{len} is beyond the largest object"));
    }
    let data = Bytes::copy_from_slice(data);
    d.finish(end)?;
    Ok(Item::Data { offset, data })
}

fn decode_object_begin(d: &mut Dec<'_>) -> Result<ObjectId, String> {
    let (_, end) = d.start(3)?;
    let (v, hend) = d.start(4)?;
    if v < 4 {
        return Err(format!("object id of struct version {v} (older than Ceph 0.72)"));
    }
    let key = d.string()?;
    let name = d.string()?;
    let snap = d.u64()?;
    let hash = d.u32()?;
    let _max = d.u8()?;
    let namespace = d.string()?;
    let pool = d.u64()? as i64;
    d.finish(hend)?;
    if name.is_empty() {
        return Err("an object with an empty name".into());
    }
    // generation, shard and the object info follow: importers skip them.
    d.finish(end)?;
    Ok(ObjectId { namespace, name, key, snap, pool, hash })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = DumpWriter::new(Vec::new()).unwrap();
        w.object_begin("", "o1").unwrap();
        w.data(0, b"hello world").unwrap();
        let xattrs = BTreeMap::from([("user.a".to_string(), Bytes::from_static(b"va"))]);
        w.attrs(&xattrs).unwrap();
        w.omap_header(b"HDR").unwrap();
        let omap = BTreeMap::from([("k1".to_string(), Bytes::from_static(b"v1"))]);
        w.omap(&omap).unwrap();
        w.object_end().unwrap();
        w.finish().unwrap()
    }

    fn items(bytes: &[u8]) -> Result<Vec<Item>, DumpError> {
        let mut r = DumpReader::new(bytes)?;
        let mut out = Vec::new();
        loop {
            let item = r.next_item()?;
            if item == Item::End {
                return Ok(out);
            }
            out.push(item);
        }
    }

    #[test]
    fn round_trip_and_object_info_framing() {
        let info = default_object_info();
        assert_eq!(info.len(), 232);
        assert_eq!(&info[..6], &[17, 8, 226, 0, 0, 0]);
        let all = items(&sample()).unwrap();
        assert_eq!(all[0], Item::ObjectBegin(ObjectId::head("", "o1")));
        assert_eq!(all[1], Item::Data { offset: 0, data: Bytes::from_static(b"hello world") });
        match &all[2] {
            Item::Attrs(a) => assert_eq!(a.keys().collect::<Vec<_>>(), vec!["_user.a"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(all[3], Item::OmapHeader(Bytes::from_static(b"HDR")));
        assert_eq!(all[5], Item::ObjectEnd);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let full = sample();
        for cut in 0..full.len() {
            assert!(items(&full[..cut]).is_err(), "a file cut at {cut} was accepted");
        }
        for at in 0..full.len() {
            let mut bad = full.clone();
            bad[at] ^= 0x20;
            assert!(items(&bad).is_err(), "a flipped byte at {at} went unnoticed");
        }
    }

    #[test]
    fn names_print_as_ceph_prints_them() {
        let id = ObjectId::head("ns1", "a:b.c_d%e/f\té");
        assert_eq!(
            id.to_string(),
            "#-9223372036854775808:00000000:ns1::a%3ab.c_d%25e%2ff%09%c3%a9:head#"
        );
    }

    #[test]
    fn absurd_sizes_are_refused_before_allocation() {
        let mut bytes = sample()[..16].to_vec();
        bytes.extend_from_slice(&header_bytes(Section::PoolBegin as u8, 0));
        bytes.extend_from_slice(&header_bytes(Section::Data as u8, 1 << 62));
        let mut r = DumpReader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_item(), Err(DumpError::TooLarge { .. })));
    }
}
