//! Object maps (`rbd_object_map.<id>` for the head, `rbd_object_map.<id>.<snap 016x>` per
//! snapshot): the state of every data object of an image in 2 bits, so `du`, `diff`,
//! export, copy-up and NBD block status need no scan of the data objects.
//!
//! Layout: the omap header holds the object count (`codec` u64); the object's data holds the
//! states packed four per byte, object `k` in byte `k / 4` at bit shift `6 - 2 (k % 4)`
//! (most significant pair first). States are Ceph's: [`NONEXISTENT`], [`EXISTS`],
//! [`PENDING`] (being removed), [`EXISTS_CLEAN`] (exists, unchanged since the last snapshot:
//! what fast-diff reads).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use quarry_types::{ErrorCode, MethodCtx, ObjectOp, OpOutput, Payload};

use super::{nothing, reply, require_exists};
use crate::codec::{decode_input, decode_stored, encode};

/// The object does not exist.
pub const NONEXISTENT: u8 = 0;
/// The object exists (written since the last snapshot).
pub const EXISTS: u8 = 1;
/// The object is being removed.
pub const PENDING: u8 = 2;
/// The object exists and has not changed since the last snapshot.
pub const EXISTS_CLEAN: u8 = 3;

/// Most objects an object map covers (2^32: a 16 PiB image at 4 MiB objects).
pub const OBJECT_COUNT_MAX: u64 = 1 << 32;

/// An object map as loaded by a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMap {
    /// Number of objects covered.
    pub object_count: u64,
    /// States, packed four per byte (module docs).
    pub packed: Bytes,
}

impl ObjectMap {
    /// A map of `object_count` objects all in `state`.
    pub fn filled(object_count: u64, state: u8) -> ObjectMap {
        let byte = fill_byte(state);
        ObjectMap { object_count, packed: Bytes::from(vec![byte; packed_len(object_count)]) }
    }

    /// State of object `k` (NONEXISTENT beyond the end).
    pub fn get(&self, k: u64) -> u8 {
        if k >= self.object_count {
            return NONEXISTENT;
        }
        state_in(&self.packed, k)
    }
}

/// Input of `rbd.object_map_resize`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeRequest {
    /// New number of objects.
    pub object_count: u64,
    /// State of objects added by growing.
    pub default_state: u8,
}

/// Input of `rbd.object_map_update`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRequest {
    /// First object.
    pub start: u64,
    /// One past the last object.
    pub end: u64,
    /// State to set.
    pub new_state: u8,
    /// Only objects currently in this state change (None: all).
    pub current_state: Option<u8>,
}

/// State of object `k` in packed states (NONEXISTENT past the end): the one place the
/// packing is read, by the class and by clients holding a copy of a map.
pub fn state_in(packed: &[u8], k: u64) -> u8 {
    packed.get((k / 4) as usize).map_or(NONEXISTENT, |byte| (byte >> shift(k)) & 3)
}

/// Sets object `k` to `state` in packed states (nothing past the end).
pub fn set_in(packed: &mut [u8], k: u64, state: u8) {
    if let Some(byte) = packed.get_mut((k / 4) as usize) {
        *byte = (*byte & !(3 << shift(k))) | ((state & 3) << shift(k));
    }
}

fn shift(k: u64) -> u32 {
    6 - 2 * (k % 4) as u32
}

fn packed_len(object_count: u64) -> usize {
    object_count.div_ceil(4) as usize
}

fn fill_byte(state: u8) -> u8 {
    let s = state & 3;
    (s << 6) | (s << 4) | (s << 2) | s
}

fn valid_state(state: u8) -> Result<(), ErrorCode> {
    if state > 3 {
        return Err(ErrorCode::EINVAL);
    }
    Ok(())
}

fn object_count(ctx: &mut dyn MethodCtx) -> Result<u64, ErrorCode> {
    require_exists(ctx)?;
    match ctx.op(&ObjectOp::OmapGetHeader)? {
        OpOutput::OmapHeader(bytes) if bytes.is_empty() => Err(ErrorCode::EBADMSG),
        OpOutput::OmapHeader(bytes) => decode_stored(&bytes),
        _ => Err(ErrorCode::EIO),
    }
}

fn read_bytes(ctx: &mut dyn MethodCtx, off: u64, len: u64) -> Result<Vec<u8>, ErrorCode> {
    match ctx.op(&ObjectOp::Read { off, len })? {
        OpOutput::Data(payload) => {
            let mut bytes = payload.data.to_vec();
            // A map written sparsely reads short: the rest is NONEXISTENT (zero).
            bytes.resize(len as usize, 0);
            Ok(bytes)
        }
        _ => Err(ErrorCode::EIO),
    }
}

fn load(ctx: &mut dyn MethodCtx) -> Result<ObjectMap, ErrorCode> {
    let count = object_count(ctx)?;
    let packed = read_bytes(ctx, 0, packed_len(count) as u64)?;
    Ok(ObjectMap { object_count: count, packed: Bytes::from(packed) })
}

fn save(ctx: &mut dyn MethodCtx, map: &ObjectMap) -> Result<(), ErrorCode> {
    ctx.op(&ObjectOp::WriteFull { data: Payload::new(map.packed.clone()) })?;
    ctx.op(&ObjectOp::OmapSetHeader { header: encode(&map.object_count) })?;
    Ok(())
}

/// `rbd.object_map_load` (read-only): the whole map.
pub fn object_map_load(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let () = decode_input(input)?;
    reply(&load(ctx)?)
}

/// `rbd.object_map_save`: replaces the map (a snapshot's copy of the head map, a rebuild).
pub fn object_map_save(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let map: ObjectMap = decode_input(input)?;
    if map.object_count > OBJECT_COUNT_MAX || map.packed.len() != packed_len(map.object_count) {
        return Err(ErrorCode::EINVAL);
    }
    save(ctx, &map)?;
    Ok(nothing())
}

/// `rbd.object_map_resize`: grows with `default_state` or shrinks (ESTALE if an object past
/// the new end is not NONEXISTENT: remove the data first). Creates the map.
pub fn object_map_resize(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: ResizeRequest = decode_input(input)?;
    valid_state(req.default_state)?;
    if req.object_count > OBJECT_COUNT_MAX {
        return Err(ErrorCode::EINVAL);
    }
    let exists = match ctx.op(&ObjectOp::AssertExists) {
        Ok(_) => true,
        Err(code) if code == ErrorCode::ENOENT => false,
        Err(code) => return Err(code),
    };
    let current = if exists { load(ctx)? } else { ObjectMap::filled(0, NONEXISTENT) };
    let mut packed = current.packed.to_vec();
    if req.object_count < current.object_count {
        if (req.object_count..current.object_count).any(|k| current.get(k) != NONEXISTENT) {
            return Err(ErrorCode::ESTALE);
        }
        packed.truncate(packed_len(req.object_count));
        // Clear the unused pairs of the last byte.
        if !req.object_count.is_multiple_of(4) {
            let keep = 8 - 2 * (req.object_count % 4) as u32;
            if let Some(last) = packed.last_mut() {
                *last &= !((1u8 << keep) - 1);
            }
        }
    } else {
        packed.resize(packed_len(req.object_count), 0);
        for k in current.object_count..req.object_count {
            set_in(&mut packed, k, req.default_state);
        }
    }
    save(ctx, &ObjectMap { object_count: req.object_count, packed: Bytes::from(packed) })?;
    Ok(nothing())
}

/// `rbd.object_map_update`: sets objects `start..end` to `new_state` (those in
/// `current_state` only, if given). ERANGE past the map's end. Writes only the bytes that
/// cover the range.
pub fn object_map_update(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: UpdateRequest = decode_input(input)?;
    valid_state(req.new_state)?;
    if let Some(state) = req.current_state {
        valid_state(state)?;
    }
    let count = object_count(ctx)?;
    if req.start > req.end || req.end > count {
        return Err(ErrorCode::ERANGE);
    }
    if req.start == req.end {
        return Ok(nothing());
    }
    let first = req.start / 4;
    let last = (req.end - 1) / 4;
    let mut bytes = read_bytes(ctx, first, last - first + 1)?;
    let mut changed = false;
    for k in req.start..req.end {
        let byte = &mut bytes[(k / 4 - first) as usize];
        let state = (*byte >> shift(k)) & 3;
        if req.current_state.is_none_or(|want| want == state) && state != req.new_state {
            *byte = (*byte & !(3 << shift(k))) | (req.new_state << shift(k));
            changed = true;
        }
    }
    if changed {
        ctx.op(&ObjectOp::Write { off: first, data: Payload::new(bytes) })?;
    }
    Ok(nothing())
}

/// `rbd.object_map_snap_add`: after a snapshot, every EXISTS object of the head map becomes
/// EXISTS_CLEAN (unchanged since the newest snapshot), which is what fast-diff compares.
pub fn object_map_snap_add(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let () = decode_input(input)?;
    let map = load(ctx)?;
    let mut packed = map.packed.to_vec();
    for k in 0..map.object_count {
        if state_in(&packed, k) == EXISTS {
            set_in(&mut packed, k, EXISTS_CLEAN);
        }
    }
    if packed != map.packed {
        ctx.op(&ObjectOp::WriteFull { data: Payload::new(packed) })?;
    }
    Ok(nothing())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_is_msb_first_four_per_byte() {
        let map =
            ObjectMap { object_count: 5, packed: Bytes::from(vec![0b01_11_10_00, 0b11 << 6]) };
        assert_eq!(
            (0..6).map(|k| map.get(k)).collect::<Vec<_>>(),
            vec![EXISTS, EXISTS_CLEAN, PENDING, NONEXISTENT, EXISTS_CLEAN, NONEXISTENT]
        );
        assert_eq!(ObjectMap::filled(5, EXISTS).packed.len(), 2);
        assert_eq!(ObjectMap::filled(5, EXISTS).get(4), EXISTS);
    }
}
