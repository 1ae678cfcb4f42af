//! Ceph's incremental image stream, "rbd diff v1" (`rbd export-diff`, `rbd import-diff`,
//! `rbd merge-diff`; Ceph's doc/dev/rbd-diff.rst), written and read here so the CLI only
//! opens files.
//!
//! # Format
//! The banner `rbd diff v1\n`, then records, each a one-byte tag:
//! - `f` le32 length, name: the start snapshot (absent: from the beginning);
//! - `t` le32 length, name: the end snapshot (absent: the head was exported);
//! - `s` le64: the image size at the end;
//! - `w` le64 offset, le64 length, the bytes: data written since the start;
//! - `z` le64 offset, le64 length: a range that reads zeros at the end (discarded, or
//!   zero data);
//! - `e`: the end.
//!
//! Metadata (`f`, `t`, `s`) comes before data records. Export reports the extents
//! [`Image::diff_iterate`] finds (whole objects: the object map's granularity), reads them,
//! and writes 4 KiB runs of zeros as `z` records (so a sparse image stays sparse); a removed
//! object is a `z` record. Import checks that the target has the start snapshot (ENOENT)
//! and not yet the end snapshot (EEXIST), resizes the image to `s`, applies `w` as writes and
//! `z` as discards, and at `e` creates the end snapshot: the target then equals the source at
//! that snapshot, and the next diff (from it) applies on top.
//!
//! Bad input (wrong banner, unknown tag, truncated stream, a record past the size) is
//! EINVAL or EIO with a reason; what was applied before it stays (as in Ceph: import-diff is
//! not atomic) but the end snapshot is not created, so the diff can be applied again.

use bytes::Bytes;
use quarry_types::ErrorCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{RbdError, RbdResult};
use crate::image::Image;

/// The stream's banner.
pub const BANNER: &[u8] = b"rbd diff v1\n";
/// Largest piece read from the image or the stream at once.
const CHUNK: u64 = 4 << 20;
/// Granularity of zero detection on export.
const ZERO_BLOCK: usize = 4096;
/// Longest snapshot name accepted in a stream.
const NAME_MAX: u32 = 4096;

/// What a diff stream's metadata says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffHeader {
    /// Start snapshot (`f`).
    pub from_snap: Option<String>,
    /// End snapshot (`t`).
    pub to_snap: Option<String>,
    /// Image size at the end (`s`).
    pub size: Option<u64>,
}

/// One data record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiffRecord {
    /// `w`: bytes at an offset.
    Data {
        /// Image offset.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// `z`: zeros over `[offset, offset + length)`.
    Zero {
        /// Image offset.
        offset: u64,
        /// Length.
        length: u64,
    },
}

fn io_error(what: &str, e: std::io::Error) -> RbdError {
    let code = e.raw_os_error().map(ErrorCode).unwrap_or(ErrorCode::EIO);
    RbdError::refused(code, format!("{what}: {e}"))
}

fn invalid(reason: impl Into<String>) -> RbdError {
    RbdError::refused(ErrorCode::EINVAL, reason)
}

/// Writes the banner and the metadata records.
pub async fn write_header<W: AsyncWrite + Unpin>(out: &mut W, h: &DiffHeader) -> RbdResult<()> {
    let mut buf = Vec::from(BANNER);
    for (tag, name) in [(b'f', &h.from_snap), (b't', &h.to_snap)] {
        if let Some(name) = name {
            buf.push(tag);
            buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
            buf.extend_from_slice(name.as_bytes());
        }
    }
    if let Some(size) = h.size {
        buf.push(b's');
        buf.extend_from_slice(&size.to_le_bytes());
    }
    out.write_all(&buf).await.map_err(|e| io_error("writing the diff", e))
}

/// Writes one data record.
pub async fn write_record<W: AsyncWrite + Unpin>(out: &mut W, r: &DiffRecord) -> RbdResult<()> {
    let mut head = Vec::with_capacity(17);
    match r {
        DiffRecord::Data { offset, data } => {
            head.push(b'w');
            head.extend_from_slice(&offset.to_le_bytes());
            head.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.write_all(&head).await.map_err(|e| io_error("writing the diff", e))?;
            out.write_all(data).await.map_err(|e| io_error("writing the diff", e))
        }
        DiffRecord::Zero { offset, length } => {
            head.push(b'z');
            head.extend_from_slice(&offset.to_le_bytes());
            head.extend_from_slice(&length.to_le_bytes());
            out.write_all(&head).await.map_err(|e| io_error("writing the diff", e))
        }
    }
}

/// Writes the end record and flushes.
pub async fn write_end<W: AsyncWrite + Unpin>(out: &mut W) -> RbdResult<()> {
    out.write_all(b"e").await.map_err(|e| io_error("writing the diff", e))?;
    out.flush().await.map_err(|e| io_error("writing the diff", e))
}

/// Reads a diff stream: the banner and metadata first ([`DiffReader::header`]), then the
/// data records one by one ([`DiffReader::next`], None at `e`).
pub struct DiffReader<R> {
    input: R,
    header: DiffHeader,
    /// A data record's tag read while looking for metadata.
    pending: Option<u8>,
    /// Bytes consumed so far (for progress).
    consumed: u64,
    /// The rest of a `w` record being read in chunks: (next offset, bytes left).
    data_left: Option<(u64, u64)>,
}

impl<R: AsyncRead + Unpin> DiffReader<R> {
    /// Reads the banner and the metadata records.
    pub async fn open(mut input: R) -> RbdResult<DiffReader<R>> {
        let mut banner = [0u8; BANNER.len()];
        read_exact(&mut input, &mut banner).await?;
        if banner != BANNER {
            return Err(invalid("invalid banner: not an rbd diff v1 stream"));
        }
        let mut reader = DiffReader {
            input,
            header: DiffHeader::default(),
            pending: None,
            consumed: BANNER.len() as u64,
            data_left: None,
        };
        loop {
            let tag = reader.u8().await?;
            match tag {
                b'f' => reader.header.from_snap = Some(reader.name().await?),
                b't' => reader.header.to_snap = Some(reader.name().await?),
                b's' => reader.header.size = Some(reader.u64().await?),
                _ => {
                    reader.pending = Some(tag);
                    break;
                }
            }
        }
        Ok(reader)
    }

    /// The metadata.
    pub fn header(&self) -> &DiffHeader {
        &self.header
    }

    /// Bytes of the stream consumed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The next data record (a `w` record longer than 4 MiB comes in several pieces), None
    /// after `e`.
    pub async fn next(&mut self) -> RbdResult<Option<DiffRecord>> {
        if let Some((offset, left)) = self.data_left {
            return self.data_piece(offset, left).await.map(Some);
        }
        let tag = match self.pending.take() {
            Some(tag) => tag,
            None => self.u8().await?,
        };
        match tag {
            b'w' => {
                let offset = self.u64().await?;
                let length = self.u64().await?;
                offset.checked_add(length).ok_or_else(|| invalid("data record out of range"))?;
                self.data_piece(offset, length).await.map(Some)
            }
            b'z' => {
                let offset = self.u64().await?;
                let length = self.u64().await?;
                offset.checked_add(length).ok_or_else(|| invalid("zero record out of range"))?;
                Ok(Some(DiffRecord::Zero { offset, length }))
            }
            b'e' => Ok(None),
            b'f' | b't' | b's' => Err(invalid("metadata record after data records")),
            other => Err(invalid(format!("unknown record tag {:?}", other as char))),
        }
    }

    async fn data_piece(&mut self, offset: u64, left: u64) -> RbdResult<DiffRecord> {
        let n = left.min(CHUNK);
        let mut data = vec![0u8; n as usize];
        read_exact(&mut self.input, &mut data).await?;
        self.consumed += n;
        self.data_left = (left > n).then(|| (offset + n, left - n));
        Ok(DiffRecord::Data { offset, data: Bytes::from(data) })
    }

    async fn u8(&mut self) -> RbdResult<u8> {
        let mut b = [0u8; 1];
        read_exact(&mut self.input, &mut b).await?;
        self.consumed += 1;
        Ok(b[0])
    }

    async fn u64(&mut self) -> RbdResult<u64> {
        let mut b = [0u8; 8];
        read_exact(&mut self.input, &mut b).await?;
        self.consumed += 8;
        Ok(u64::from_le_bytes(b))
    }

    async fn name(&mut self) -> RbdResult<String> {
        let mut b = [0u8; 4];
        read_exact(&mut self.input, &mut b).await?;
        let len = u32::from_le_bytes(b);
        if len > NAME_MAX {
            return Err(invalid("snapshot name too long"));
        }
        let mut name = vec![0u8; len as usize];
        read_exact(&mut self.input, &mut name).await?;
        self.consumed += 4 + u64::from(len);
        String::from_utf8(name).map_err(|_| invalid("snapshot name is not UTF-8"))
    }
}

async fn read_exact<R: AsyncRead + Unpin>(input: &mut R, buf: &mut [u8]) -> RbdResult<()> {
    match input.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(invalid("truncated diff stream (no end record)"))
        }
        Err(e) => Err(io_error("reading the diff", e)),
    }
}

/// `rbd export-diff`: writes the changes of the open image (head or snapshot) since user
/// snapshot `from_snap` (everything with data when None; a clone's parent data counts) to
/// `out`. `progress(done, total)` in image bytes.
pub async fn export_diff<W: AsyncWrite + Unpin>(
    image: &Image,
    from_snap: Option<&str>,
    out: &mut W,
    mut progress: impl FnMut(u64, u64),
) -> RbdResult<()> {
    let snapshots = image.snapshots().await;
    let from = match from_snap {
        None => None,
        Some(name) => Some(
            snapshots
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| {
                    RbdError::refused(ErrorCode::ENOENT, format!("snapshot '{name}' not found"))
                })?
                .id,
        ),
    };
    if let (Some(from), Some(to)) = (from, image.snap_id()) {
        if from >= to {
            return Err(invalid("the start snapshot must be older than the end snapshot"));
        }
    }
    let to_snap = image
        .snap_id()
        .and_then(|id| snapshots.iter().find(|s| s.id == id))
        .map(|s| s.name.clone());
    let size = image.size().await;
    let header = DiffHeader { from_snap: from_snap.map(str::to_string), to_snap, size: Some(size) };
    write_header(out, &header).await?;
    let mut extents: Vec<(u64, u64, bool)> = Vec::new();
    image
        .diff_iterate(from, 0, size, true, |off, len, exists| {
            extents.push((off, len, exists));
            0
        })
        .await?;
    for (off, len, exists) in extents {
        if !exists {
            write_record(out, &DiffRecord::Zero { offset: off, length: len }).await?;
            progress(off + len, size);
            continue;
        }
        let mut at = off;
        while at < off + len {
            let n = CHUNK.min(off + len - at);
            let data = image.read(at, n).await?;
            write_runs(out, at, &data).await?;
            at += n;
            progress(at, size);
        }
    }
    write_end(out).await?;
    progress(size, size);
    Ok(())
}

/// Writes `data` (at image offset `at`) as `w` records, with 4 KiB runs of zeros as `z`.
async fn write_runs<W: AsyncWrite + Unpin>(out: &mut W, at: u64, data: &Bytes) -> RbdResult<()> {
    let mut run: Option<(bool, usize)> = None; // (zero, start)
    let flush = |zero: bool, start: usize, end: usize| {
        if zero {
            DiffRecord::Zero { offset: at + start as u64, length: (end - start) as u64 }
        } else {
            DiffRecord::Data { offset: at + start as u64, data: data.slice(start..end) }
        }
    };
    let mut start_of = 0;
    while start_of < data.len() {
        let end = (start_of + ZERO_BLOCK).min(data.len());
        let zero = data[start_of..end].iter().all(|&b| b == 0);
        match run {
            Some((z, _)) if z == zero => {}
            Some((z, start)) => {
                write_record(out, &flush(z, start, start_of)).await?;
                run = Some((zero, start_of));
            }
            None => run = Some((zero, start_of)),
        }
        start_of = end;
    }
    if let Some((z, start)) = run {
        write_record(out, &flush(z, start, data.len())).await?;
    }
    Ok(())
}

/// `rbd import-diff`: applies a diff stream to the head of `image` (open for writing): the
/// start snapshot must exist (ENOENT), the end snapshot must not (EEXIST); the image is
/// resized to the stream's size, data written, zero ranges discarded, and the end snapshot
/// created. `progress(consumed, total)` in stream bytes when `total` is known.
pub async fn import_diff<R: AsyncRead + Unpin>(
    image: &Image,
    input: R,
    total: Option<u64>,
    mut progress: impl FnMut(u64, u64),
) -> RbdResult<()> {
    let mut reader = DiffReader::open(input).await?;
    let header = reader.header().clone();
    let snapshots = image.snapshots().await;
    if let Some(from) = &header.from_snap {
        if !snapshots.iter().any(|s| &s.name == from) {
            return Err(RbdError::refused(
                ErrorCode::ENOENT,
                format!("start snapshot '{from}' does not exist in the image, aborting"),
            ));
        }
    }
    if let Some(to) = &header.to_snap {
        if snapshots.iter().any(|s| &s.name == to) {
            return Err(RbdError::refused(
                ErrorCode::EEXIST,
                format!("end snapshot '{to}' already exists, aborting"),
            ));
        }
    }
    if let Some(size) = header.size {
        if size != image.size().await {
            image.resize(size, |_, _| {}).await?;
        }
    }
    let size = image.size().await;
    while let Some(record) = reader.next().await? {
        match record {
            DiffRecord::Data { offset, data } => {
                if offset + data.len() as u64 > size {
                    return Err(invalid("data record past the end of the image"));
                }
                image.write(offset, data).await?;
            }
            DiffRecord::Zero { offset, length } => {
                let end = offset.saturating_add(length).min(size);
                if offset < end {
                    image.write_zeroes(offset, end - offset).await?;
                }
            }
        }
        if let Some(total) = total {
            progress(reader.consumed(), total);
        }
    }
    if let Some(to) = &header.to_snap {
        image.snap_create(to).await?;
    }
    if let Some(total) = total {
        progress(total, total);
    }
    Ok(())
}

impl DiffRecord {
    fn offset(&self) -> u64 {
        match self {
            DiffRecord::Data { offset, .. } | DiffRecord::Zero { offset, .. } => *offset,
        }
    }

    fn end(&self) -> u64 {
        match self {
            DiffRecord::Data { offset, data } => offset + data.len() as u64,
            DiffRecord::Zero { offset, length } => offset + length,
        }
    }

    /// The part of the record within `[lo, hi)`, if any.
    fn clip(&self, lo: u64, hi: u64) -> Option<DiffRecord> {
        let (start, end) = (self.offset().max(lo), self.end().min(hi));
        if start >= end {
            return None;
        }
        Some(match self {
            DiffRecord::Data { offset, data } => DiffRecord::Data {
                offset: start,
                data: data.slice((start - offset) as usize..(end - offset) as usize),
            },
            DiffRecord::Zero { .. } => DiffRecord::Zero { offset: start, length: end - start },
        })
    }
}

/// `rbd merge-diff`: merges a diff `first` (A to B) and a diff `second` (B to C) into one
/// (A to C), streaming: where both have a record the second's wins; records past C's size
/// are cut. EINVAL unless the second starts where the first ends. Both streams must have
/// their records in offset order without overlaps (as export writes them).
pub async fn merge_diff<R1, R2, W>(first: R1, second: R2, out: &mut W) -> RbdResult<()>
where
    R1: AsyncRead + Unpin,
    R2: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut a = DiffReader::open(first).await?;
    let mut b = DiffReader::open(second).await?;
    if a.header().to_snap != b.header().from_snap {
        return Err(invalid(format!(
            "the second diff starts at {:?}, not where the first ends ({:?})",
            b.header().from_snap,
            a.header().to_snap
        )));
    }
    let size = b.header().size.or(a.header().size).unwrap_or(u64::MAX);
    let header = DiffHeader {
        from_snap: a.header().from_snap.clone(),
        to_snap: b.header().to_snap.clone(),
        size: b.header().size.or(a.header().size),
    };
    write_header(out, &header).await?;
    let (mut cur_a, mut cur_b): (Option<DiffRecord>, Option<DiffRecord>) = (None, None);
    // Everything below this is settled by the second diff's records already written.
    let mut covered = 0u64;
    let (mut a_done, mut b_done) = (false, false);
    let mut last_b_end = 0u64;
    loop {
        while cur_a.is_none() && !a_done {
            match a.next().await? {
                None => a_done = true,
                Some(r) => cur_a = r.clip(covered, u64::MAX),
            }
        }
        if cur_b.is_none() && !b_done {
            match b.next().await? {
                None => b_done = true,
                Some(r) => {
                    if r.offset() < last_b_end {
                        return Err(invalid("the second diff's records overlap or are unsorted"));
                    }
                    last_b_end = r.end();
                    cur_b = Some(r);
                }
            }
        }
        match (cur_a.take(), cur_b.take()) {
            (None, None) => break,
            (Some(ra), None) => {
                if let Some(r) = ra.clip(0, size) {
                    write_record(out, &r).await?;
                }
            }
            (None, Some(rb)) => {
                if let Some(r) = rb.clip(0, size) {
                    write_record(out, &r).await?;
                }
                covered = rb.end();
            }
            (Some(ra), Some(rb)) => {
                if ra.offset() < rb.offset() {
                    // The first's part before the second's record, the rest waits.
                    if let Some(r) = ra.clip(0, rb.offset().min(size)) {
                        write_record(out, &r).await?;
                    }
                    cur_a = ra.clip(rb.offset(), u64::MAX);
                    cur_b = Some(rb);
                } else {
                    if let Some(r) = rb.clip(0, size) {
                        write_record(out, &r).await?;
                    }
                    covered = rb.end();
                    cur_a = ra.clip(covered, u64::MAX);
                }
            }
        }
    }
    write_end(out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn stream(h: &DiffHeader, records: &[DiffRecord]) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, h).await.unwrap();
        for r in records {
            write_record(&mut out, r).await.unwrap();
        }
        write_end(&mut out).await.unwrap();
        out
    }

    async fn records(bytes: &[u8]) -> (DiffHeader, Vec<DiffRecord>) {
        let mut r = DiffReader::open(bytes).await.unwrap();
        let mut all = Vec::new();
        while let Some(rec) = r.next().await.unwrap() {
            all.push(rec);
        }
        (r.header().clone(), all)
    }

    fn data(offset: u64, fill: u8, len: usize) -> DiffRecord {
        DiffRecord::Data { offset, data: Bytes::from(vec![fill; len]) }
    }

    /// Ceph's layout, byte for byte: banner, `f`/`t` with le32 lengths, `s` le64, `w`/`z`
    /// with le64 offset and length, `e`.
    #[tokio::test]
    async fn encoding_is_cephs() {
        let h =
            DiffHeader { from_snap: Some("a".into()), to_snap: Some("bc".into()), size: Some(8) };
        let bytes = stream(&h, &[data(1, 7, 2), DiffRecord::Zero { offset: 4, length: 3 }]).await;
        let mut want = b"rbd diff v1\n".to_vec();
        want.extend_from_slice(b"f\x01\x00\x00\x00a");
        want.extend_from_slice(b"t\x02\x00\x00\x00bc");
        want.extend_from_slice(b"s\x08\x00\x00\x00\x00\x00\x00\x00");
        want.extend_from_slice(b"w\x01\0\0\0\0\0\0\0\x02\0\0\0\0\0\0\0\x07\x07");
        want.extend_from_slice(b"z\x04\0\0\0\0\0\0\0\x03\0\0\0\0\0\0\0");
        want.push(b'e');
        assert_eq!(bytes, want);
        let (back, recs) = records(&bytes).await;
        assert_eq!(back, h);
        assert_eq!(recs, [data(1, 7, 2), DiffRecord::Zero { offset: 4, length: 3 }]);
    }

    #[tokio::test]
    async fn bad_streams_are_refused() {
        let bad = |bytes: Vec<u8>| async move {
            let mut r = match DiffReader::open(bytes.as_slice()).await {
                Err(e) => return e.errno(),
                Ok(r) => r,
            };
            loop {
                match r.next().await {
                    Err(e) => return e.errno(),
                    Ok(None) => panic!("accepted"),
                    Ok(Some(_)) => {}
                }
            }
        };
        assert_eq!(bad(b"rbd diff v2\n".to_vec()).await, ErrorCode::EINVAL);
        let good = stream(&DiffHeader::default(), &[data(0, 1, 10)]).await;
        assert_eq!(bad(good[..good.len() - 3].to_vec()).await, ErrorCode::EINVAL, "truncated");
        let mut unknown = good.clone();
        unknown.pop();
        unknown.push(b'x');
        assert_eq!(bad(unknown).await, ErrorCode::EINVAL);
    }

    /// The merge equals applying both diffs in turn (checked on a byte model).
    #[tokio::test]
    async fn merge_equals_applying_both() {
        let apply = |img: &mut Vec<u8>, size: u64, recs: &[DiffRecord]| {
            img.resize(size as usize, 0);
            for r in recs {
                match r {
                    DiffRecord::Data { offset, data } => {
                        img[*offset as usize..*offset as usize + data.len()].copy_from_slice(data)
                    }
                    DiffRecord::Zero { offset, length } => {
                        let end = ((offset + length) as usize).min(img.len());
                        img[*offset as usize..end].fill(0);
                    }
                }
            }
        };
        let h1 = DiffHeader { from_snap: None, to_snap: Some("b".into()), size: Some(100) };
        let r1 = [
            data(0, 1, 10),
            DiffRecord::Zero { offset: 10, length: 5 },
            data(20, 2, 30),
            data(80, 3, 20),
        ];
        let h2 =
            DiffHeader { from_snap: Some("b".into()), to_snap: Some("c".into()), size: Some(90) };
        let r2 = [data(5, 4, 10), DiffRecord::Zero { offset: 25, length: 10 }, data(40, 5, 15)];
        let merged = {
            let (s1, s2) = (stream(&h1, &r1).await, stream(&h2, &r2).await);
            let mut out = Vec::new();
            merge_diff(s1.as_slice(), s2.as_slice(), &mut out).await.unwrap();
            out
        };
        let (mh, mr) = records(&merged).await;
        assert_eq!(mh, DiffHeader { from_snap: None, to_snap: Some("c".into()), size: Some(90) });
        let mut direct = vec![9u8; 100];
        apply(&mut direct, 100, &r1);
        apply(&mut direct, 90, &r2);
        let mut via = vec![9u8; 100];
        apply(&mut via, 90, &mr);
        assert_eq!(direct, via);
        // A second diff that does not start at the first's end is refused.
        let (s1, s3) = (stream(&h1, &r1).await, stream(&h1, &r1).await);
        let e = merge_diff(s1.as_slice(), s3.as_slice(), &mut Vec::new()).await.unwrap_err();
        assert_eq!(e.errno(), ErrorCode::EINVAL);
    }
}
