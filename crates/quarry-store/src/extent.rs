//! Finding extent rows (format 4): which rows of an object cover a range of chunks, for one
//! version tag or for every tag in a range, and which chunk version a version of the object
//! sees for each chunk of a range. Rows are keyed `(object id, tag, first chunk)` and rows of
//! one object and tag never overlap, so the row of tag `t` covering chunk `i` is the one with
//! the greatest first chunk `<= i` (one backward seek), and the rows of a tag overlapping a
//! range are that one plus a forward range. Tags with rows are found by seeking backwards
//! from the newest tag wanted (one seek per tag that has rows), never by scanning chunks.

use redb::ReadableTable;

use crate::format::{extent_key, ChunkRef, Extent, ExtentKey, CHUNKS_PER_OBJECT_MAX};
use crate::read::Ctx;
use crate::StoreError;

/// Decodes a stored row (`Corrupt` if it is malformed).
pub(crate) fn decode_row(ctx: &Ctx, key: &ExtentKey, value: &[u8]) -> Result<Extent, StoreError> {
    Extent::decode(key, value).map_err(|why| {
        let (_, tag, first) = crate::format::decode_extent_key(key);
        ctx.corrupt(format!("chunk {first} version {tag}: {why}"))
    })
}

/// The greatest tag in `lo..=hi` with a row of object `id`.
pub(crate) fn tag_at_or_below<T: ReadableTable<&'static ExtentKey, &'static [u8]>>(
    table: &T,
    id: u64,
    lo: u64,
    hi: u64,
) -> Result<Option<u64>, StoreError> {
    if lo > hi {
        return Ok(None);
    }
    let a = extent_key(id, lo, 0);
    let b = extent_key(id, hi, u64::MAX);
    let found = table.range::<&ExtentKey>(&a..=&b)?.next_back();
    match found {
        None => Ok(None),
        Some(item) => Ok(Some(crate::format::decode_extent_key(item?.0.value()).1)),
    }
}

/// The rows of object `id` at exactly `tag` that overlap chunks `a..=b`, in chunk order.
///
/// The row covering chunk `a` is the one with the greatest first chunk `<= a`: at chunk 0 it
/// can only start there, so one exact lookup finds it (a range costs redb two descents, one
/// per end). Rows of one tag never overlap, so once that row reaches past `b` no other row
/// can start in the range and the forward range is not run.
pub(crate) fn overlapping<T: ReadableTable<&'static ExtentKey, &'static [u8]>>(
    table: &T,
    ctx: &Ctx,
    id: u64,
    tag: u64,
    a: u64,
    b: u64,
) -> Result<Vec<Extent>, StoreError> {
    let mut out = Vec::new();
    let at = extent_key(id, tag, a);
    let covering = if a == 0 {
        match table.get(&at)? {
            Some(value) => Some(decode_row(ctx, &at, value.value())?),
            None => None,
        }
    } else {
        let lo = extent_key(id, tag, 0);
        match table.range::<&ExtentKey>(&lo..=&at)?.next_back() {
            Some(item) => {
                let (key, value) = item?;
                Some(decode_row(ctx, key.value(), value.value())?)
            }
            None => None,
        }
    };
    let mut reach = a;
    if let Some(row) = covering.filter(|row| row.end() > a) {
        reach = row.end();
        out.push(row);
    }
    if a < b && reach <= b {
        let from = extent_key(id, tag, a + 1);
        let to = extent_key(id, tag, b);
        for item in table.range::<&ExtentKey>(&from..=&to)? {
            let (key, value) = item?;
            out.push(decode_row(ctx, key.value(), value.value())?);
        }
    }
    Ok(out)
}

/// Every row of object `id` with a tag in `lo..=hi` overlapping chunks `a..=b`, newest tag
/// first, each tag's rows in chunk order.
pub(crate) fn rows_in<T: ReadableTable<&'static ExtentKey, &'static [u8]>>(
    table: &T,
    ctx: &Ctx,
    id: u64,
    (lo, hi): (u64, u64),
    a: u64,
    b: u64,
) -> Result<Vec<Extent>, StoreError> {
    let mut out = Vec::new();
    let mut cursor = hi;
    while let Some(tag) = tag_at_or_below(table, id, lo, cursor)? {
        out.extend(overlapping(table, ctx, id, tag, a, b)?);
        match tag.checked_sub(1) {
            Some(next) => cursor = next,
            None => break,
        }
    }
    Ok(out)
}

/// Every row a version with chunk range `floor..=tag` of object `id` sees (all chunks), as
/// [`visible_in`] takes them (newest tag first, each tag's rows in chunk order), or None if
/// there are more than `max` (the caller would not keep them). One range over the object's
/// rows of those tags: [`rows_in`] over the whole object costs two seeks per tag with rows
/// and one more, each two of redb's descents.
pub(crate) fn head_rows<T: ReadableTable<&'static ExtentKey, &'static [u8]>>(
    table: &T,
    ctx: &Ctx,
    id: u64,
    (floor, tag): (u64, u64),
    max: usize,
) -> Result<Option<Vec<Extent>>, StoreError> {
    let mut rows = Vec::new();
    if floor > tag {
        return Ok(Some(rows));
    }
    let lo = extent_key(id, floor, 0);
    let hi = extent_key(id, tag, u64::MAX);
    for item in table.range::<&ExtentKey>(&lo..=&hi)? {
        if rows.len() == max {
            return Ok(None);
        }
        let (key, value) = item?;
        rows.push(decode_row(ctx, key.value(), value.value())?);
    }
    // Stable: each tag's rows stay in chunk order.
    rows.sort_by_key(|row| std::cmp::Reverse(row.tag));
    Ok(Some(rows))
}

/// [`visible`] over the rows [`head_rows`] returned for the same `(floor, tag)`.
pub(crate) fn visible_in(rows: &[Extent], a: u64, b: u64) -> Vec<(u64, u64, ChunkRef)> {
    let Some(mut seen) = Seen::new(a, b) else {
        return Vec::new();
    };
    // Newest tag first: the first row met for a chunk is the one the version sees.
    for row in rows {
        if seen.take(row) {
            break;
        }
    }
    seen.into_refs()
}

/// The chunks of `a..=b` a version sees, filled from its rows newest tag first.
struct Seen {
    a: u64,
    found: Vec<Option<(u64, ChunkRef)>>,
    left: usize,
}

impl Seen {
    /// None when the range is empty (`b` is clamped to the object's last possible chunk).
    fn new(a: u64, b: u64) -> Option<Seen> {
        let b = b.min(CHUNKS_PER_OBJECT_MAX.saturating_sub(1));
        let span = (b.checked_sub(a)? + 1) as usize;
        Some(Seen { a, found: vec![None; span], left: span })
    }

    /// Takes the chunks of `row` in the range not taken yet; true once every chunk is.
    fn take(&mut self, row: &Extent) -> bool {
        let end = self.a + self.found.len() as u64;
        for index in row.first.max(self.a)..row.end().min(end) {
            let slot = &mut self.found[(index - self.a) as usize];
            if slot.is_none() {
                *slot = Some((row.tag, row.chunk(index)));
                self.left -= 1;
            }
        }
        self.left == 0
    }

    /// `(index, tag of the row, the chunk)` for each chunk taken, in chunk order.
    fn into_refs(self) -> Vec<(u64, u64, ChunkRef)> {
        let a = self.a;
        self.found
            .into_iter()
            .enumerate()
            .filter_map(|(k, f)| f.map(|(t, r)| (a + k as u64, t, r)))
            .collect()
    }
}

/// Every row of object `id` (all tags, all chunks).
pub(crate) fn all_rows<T: ReadableTable<&'static ExtentKey, &'static [u8]>>(
    table: &T,
    ctx: &Ctx,
    id: u64,
) -> Result<Vec<Extent>, StoreError> {
    let lo = extent_key(id, 0, 0);
    let hi = extent_key(id, u64::MAX, u64::MAX);
    let mut out = Vec::new();
    for item in table.range::<&ExtentKey>(&lo..=&hi)? {
        let (key, value) = item?;
        out.push(decode_row(ctx, key.value(), value.value())?);
    }
    Ok(out)
}

/// For each chunk of `a..=b` that a version with chunk range `floor..=tag` sees a row for:
/// `(index, tag of the row, the chunk)`, in chunk order. Chunks with no row are left out
/// (they read as zeros).
pub(crate) fn visible<T: ReadableTable<&'static ExtentKey, &'static [u8]>>(
    table: &T,
    ctx: &Ctx,
    id: u64,
    (floor, tag): (u64, u64),
    a: u64,
    b: u64,
) -> Result<Vec<(u64, u64, ChunkRef)>, StoreError> {
    let b = b.min(CHUNKS_PER_OBJECT_MAX.saturating_sub(1));
    let Some(mut seen) = Seen::new(a, b).filter(|_| floor <= tag) else {
        return Ok(Vec::new());
    };
    let mut cursor = tag;
    // The version's own tag first, without looking for it (most reads find everything
    // there); older tags are then found one seek each.
    let mut known = Some(tag);
    loop {
        let t = match known.take() {
            Some(t) => t,
            None => match tag_at_or_below(table, id, floor, cursor)? {
                Some(t) => t,
                None => break,
            },
        };
        let mut complete = false;
        for row in overlapping(table, ctx, id, t, a, b)? {
            complete = seen.take(&row);
        }
        match t.checked_sub(1) {
            Some(next) if next >= floor && !complete => cursor = next,
            _ => break,
        }
    }
    Ok(seen.into_refs())
}
