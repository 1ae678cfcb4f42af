//! librados' compound operations (`rados_write_op_t`, `rados_read_op_t`): a list of object
//! ops built call by call and run as one atomic vector on one object by `*_operate`
//! (quarry's `IoCtx::exec`); omap results come back through `rados_omap_iter_t`.
//!
//! Lifetimes as librados: an operation is freed by `rados_release_*_op`; an omap iterator
//! handed out by `rados_read_op_omap_get_*` is filled by `rados_read_op_operate` and freed
//! by `rados_omap_get_end`, and must outlive the operate call; the `pmore`/`prval`
//! pointers too. The strings `rados_omap_get_next` returns stay valid until the next call
//! on the iterator.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::Mutex;

use bytes::Bytes;
use quarry_types::{ObjectOp, OpOutput, Payload};

use crate::rados::{client_errno, ioctx};
use crate::{block_on, cstr, ffi, EINVAL};

/// What a `rados_write_op_t` points to.
pub struct WriteOp {
    ops: Mutex<Vec<ObjectOp>>,
}

/// Where a read op's result goes.
enum Slot {
    /// No output wanted.
    Nothing,
    /// Omap entries into an iterator, `more` and the op's return value.
    Omap { iter: usize, more: usize, rval: usize },
}

/// What a `rados_read_op_t` points to.
pub struct ReadOp {
    ops: Mutex<Vec<(ObjectOp, Slot)>>,
}

/// What a `rados_omap_iter_t` points to.
pub struct OmapIter {
    entries: Vec<(String, Bytes)>,
    next: usize,
    /// The strings of the entry `rados_omap_get_next` returned last.
    current: Option<(CString, Vec<u8>)>,
}

/// # Safety
/// `p` is NULL or a live `rados_write_op_t` of this library.
unsafe fn write_op<'a>(p: *mut c_void) -> Option<&'a WriteOp> {
    // SAFETY: by contract NULL or a Box made by rados_create_write_op.
    unsafe { p.cast::<WriteOp>().as_ref() }
}

/// # Safety
/// `p` is NULL or a live `rados_read_op_t` of this library.
unsafe fn read_op<'a>(p: *mut c_void) -> Option<&'a ReadOp> {
    // SAFETY: by contract NULL or a Box made by rados_create_read_op.
    unsafe { p.cast::<ReadOp>().as_ref() }
}

/// The ops of the write operation behind `op`, copied (None for NULL).
///
/// # Safety
/// `op` is NULL or a live `rados_write_op_t` of this library.
pub unsafe fn write_op_ops(op: *mut c_void) -> Option<Vec<ObjectOp>> {
    // SAFETY: forwarded contract.
    unsafe { write_op(op) }.map(|w| w.ops.lock().unwrap_or_else(|p| p.into_inner()).clone())
}

fn push(op: *mut c_void, o: ObjectOp) {
    // SAFETY: the callers' contract (librados.h): a live write op.
    if let Some(w) = unsafe { write_op(op) } {
        w.ops.lock().unwrap_or_else(|p| p.into_inner()).push(o);
    }
}

/// The bytes of `buf` (`len` bytes; empty for NULL).
///
/// # Safety
/// `buf` valid for `len` bytes or NULL.
unsafe fn bytes(buf: *const c_char, len: usize) -> Bytes {
    if buf.is_null() || len == 0 {
        return Bytes::new();
    }
    // SAFETY: caller's contract.
    Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) })
}

/// `n` C strings of `keys` (`None` if one is NULL or not UTF-8).
///
/// # Safety
/// `keys` holds `n` C strings.
unsafe fn strings(keys: *const *const c_char, n: usize) -> Option<Vec<String>> {
    if keys.is_null() && n > 0 {
        return None;
    }
    (0..n)
        // SAFETY: caller's contract.
        .map(|i| unsafe { cstr(*keys.add(i)) }.ok().map(str::to_string))
        .collect()
}

/// `rados_create_write_op()`.
#[no_mangle]
pub extern "C" fn rados_create_write_op() -> *mut c_void {
    ffi!(std::ptr::null_mut(), {
        Box::into_raw(Box::new(WriteOp { ops: Mutex::new(Vec::new()) })).cast()
    })
}

/// `rados_release_write_op(op)`.
#[no_mangle]
pub unsafe extern "C" fn rados_release_write_op(op: *mut c_void) {
    ffi!((), {
        if !op.is_null() {
            // SAFETY: made by rados_create_write_op, released once.
            drop(unsafe { Box::from_raw(op.cast::<WriteOp>()) });
        }
    })
}

/// `rados_write_op_omap_set(op, keys, vals, lens, num)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_omap_set(
    op: *mut c_void,
    keys: *const *const c_char,
    vals: *const *const c_char,
    lens: *const usize,
    num: usize,
) {
    ffi!((), {
        // SAFETY: `keys`, `vals`, `lens` hold `num` entries (librados.h).
        let Some(keys) = (unsafe { strings(keys, num) }) else { return };
        if num > 0 && (vals.is_null() || lens.is_null()) {
            return;
        }
        let mut map = BTreeMap::new();
        for (i, key) in keys.into_iter().enumerate() {
            // SAFETY: as above.
            let value = unsafe { bytes(*vals.add(i), *lens.add(i)) };
            map.insert(key, value);
        }
        push(op, ObjectOp::OmapSetVals { vals: map });
    })
}

/// `rados_write_op_omap_rm_keys(op, keys, keys_len)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_omap_rm_keys(
    op: *mut c_void,
    keys: *const *const c_char,
    n: usize,
) {
    ffi!((), {
        // SAFETY: `keys` holds `n` C strings (librados.h).
        if let Some(keys) = unsafe { strings(keys, n) } {
            push(op, ObjectOp::OmapRmKeys { keys });
        }
    })
}

/// `rados_write_op_omap_clear(op)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_omap_clear(op: *mut c_void) {
    ffi!((), { push(op, ObjectOp::OmapClear) })
}

/// `rados_write_op_write(op, buffer, len, offset)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_write(
    op: *mut c_void,
    buf: *const c_char,
    len: usize,
    off: u64,
) {
    ffi!((), {
        // SAFETY: `buf` holds `len` bytes (librados.h).
        let data = Payload::new(unsafe { bytes(buf, len) });
        push(op, ObjectOp::Write { off, data });
    })
}

/// `rados_write_op_write_full(op, buffer, len)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_write_full(
    op: *mut c_void,
    buf: *const c_char,
    len: usize,
) {
    ffi!((), {
        // SAFETY: `buf` holds `len` bytes (librados.h).
        let data = Payload::new(unsafe { bytes(buf, len) });
        push(op, ObjectOp::WriteFull { data });
    })
}

/// `rados_write_op_create(op, exclusive, category)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_create(
    op: *mut c_void,
    exclusive: c_int,
    _cat: *const c_char,
) {
    ffi!((), { push(op, ObjectOp::Create { exclusive: exclusive != 0 }) })
}

/// `rados_write_op_remove(op)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_remove(op: *mut c_void) {
    ffi!((), { push(op, ObjectOp::Remove) })
}

/// `rados_write_op_truncate(op, offset)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_truncate(op: *mut c_void, size: u64) {
    ffi!((), { push(op, ObjectOp::Truncate { size }) })
}

/// `rados_write_op_zero(op, offset, len)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_zero(op: *mut c_void, off: u64, len: u64) {
    ffi!((), { push(op, ObjectOp::Zero { off, len }) })
}

/// `rados_write_op_setxattr(op, name, value, value_len)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_setxattr(
    op: *mut c_void,
    name: *const c_char,
    value: *const c_char,
    len: usize,
) {
    ffi!((), {
        // SAFETY: a C string and `len` bytes (librados.h).
        if let Ok(name) = unsafe { cstr(name) } {
            let value = unsafe { bytes(value, len) };
            push(op, ObjectOp::SetXattr { name: name.to_string(), value });
        }
    })
}

/// `rados_write_op_rmxattr(op, name)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_rmxattr(op: *mut c_void, name: *const c_char) {
    ffi!((), {
        // SAFETY: a C string (librados.h).
        if let Ok(name) = unsafe { cstr(name) } {
            push(op, ObjectOp::RmXattr { name: name.to_string() });
        }
    })
}

/// `rados_write_op_operate(op, io, oid, mtime, flags)`: runs the ops atomically on `oid`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_operate(
    op: *mut c_void,
    io: *mut c_void,
    oid: *const c_char,
    _mtime: *mut libc::time_t,
    _flags: c_int,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (Some(w), Ok(io), Ok(oid)) =
            (unsafe { write_op(op) }, unsafe { ioctx(io) }, unsafe { cstr(oid) })
        else {
            return EINVAL;
        };
        let ops = w.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (io, oid) = (io.get(), oid.to_string());
        match block_on(async move { io.exec(&oid, ops).await }) {
            Ok(_) => 0,
            Err(e) => client_errno(&e),
        }
    })
}

/// `rados_write_op_operate2(op, io, oid, ts, flags)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_op_operate2(
    op: *mut c_void,
    io: *mut c_void,
    oid: *const c_char,
    _ts: *mut libc::timespec,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded contracts.
    unsafe { rados_write_op_operate(op, io, oid, std::ptr::null_mut(), flags) }
}

// ---- read ops ----

/// `rados_create_read_op()`.
#[no_mangle]
pub extern "C" fn rados_create_read_op() -> *mut c_void {
    ffi!(std::ptr::null_mut(), {
        Box::into_raw(Box::new(ReadOp { ops: Mutex::new(Vec::new()) })).cast()
    })
}

/// `rados_release_read_op(op)`.
#[no_mangle]
pub unsafe extern "C" fn rados_release_read_op(op: *mut c_void) {
    ffi!((), {
        if !op.is_null() {
            // SAFETY: made by rados_create_read_op, released once.
            drop(unsafe { Box::from_raw(op.cast::<ReadOp>()) });
        }
    })
}

/// A new empty iterator written to `*iter`, and the read op's slot for it.
///
/// # Safety
/// `iter` NULL or writable.
unsafe fn new_iter(iter: *mut *mut c_void, more: *mut u8, rval: *mut c_int) -> Slot {
    if iter.is_null() {
        return Slot::Nothing;
    }
    let it = Box::into_raw(Box::new(OmapIter { entries: Vec::new(), next: 0, current: None }));
    // SAFETY: non-NULL out-parameter.
    unsafe { *iter = it.cast() };
    Slot::Omap { iter: it as usize, more: more as usize, rval: rval as usize }
}

fn push_read(op: *mut c_void, o: ObjectOp, slot: Slot) {
    // SAFETY: the callers' contract (librados.h): a live read op.
    if let Some(r) = unsafe { read_op(op) } {
        r.ops.lock().unwrap_or_else(|p| p.into_inner()).push((o, slot));
    }
}

/// `rados_read_op_omap_get_vals2(op, start_after, filter_prefix, max_return, iter, pmore,
/// prval)`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rados_read_op_omap_get_vals2(
    op: *mut c_void,
    start_after: *const c_char,
    prefix: *const c_char,
    max: u64,
    iter: *mut *mut c_void,
    more: *mut u8,
    rval: *mut c_int,
) {
    ffi!((), {
        // SAFETY: C strings or NULL; out-parameters NULL or writable (librados.h).
        let (Ok(after), Ok(prefix)) =
            (unsafe { crate::opt_cstr(start_after) }, unsafe { crate::opt_cstr(prefix) })
        else {
            return;
        };
        let o = ObjectOp::OmapGetVals {
            start_after: after.unwrap_or("").to_string(),
            prefix: prefix.unwrap_or("").to_string(),
            max: max.min(u32::MAX as u64) as u32,
        };
        // SAFETY: as above.
        let slot = unsafe { new_iter(iter, more, rval) };
        push_read(op, o, slot);
    })
}

/// `rados_read_op_omap_get_keys2(op, start_after, max_return, iter, pmore, prval)`.
#[no_mangle]
pub unsafe extern "C" fn rados_read_op_omap_get_keys2(
    op: *mut c_void,
    start_after: *const c_char,
    max: u64,
    iter: *mut *mut c_void,
    more: *mut u8,
    rval: *mut c_int,
) {
    ffi!((), {
        // SAFETY: C string or NULL; out-parameters NULL or writable (librados.h).
        let Ok(after) = (unsafe { crate::opt_cstr(start_after) }) else { return };
        let o = ObjectOp::OmapGetKeys {
            start_after: after.unwrap_or("").to_string(),
            max: max.min(u32::MAX as u64) as u32,
        };
        // SAFETY: as above.
        let slot = unsafe { new_iter(iter, more, rval) };
        push_read(op, o, slot);
    })
}

/// `rados_read_op_omap_get_vals_by_keys(op, keys, keys_len, iter, prval)`.
#[no_mangle]
pub unsafe extern "C" fn rados_read_op_omap_get_vals_by_keys(
    op: *mut c_void,
    keys: *const *const c_char,
    n: usize,
    iter: *mut *mut c_void,
    rval: *mut c_int,
) {
    ffi!((), {
        // SAFETY: `keys` holds `n` C strings; out-parameters NULL or writable.
        let Some(keys) = (unsafe { strings(keys, n) }) else { return };
        // SAFETY: as above.
        let slot = unsafe { new_iter(iter, std::ptr::null_mut(), rval) };
        push_read(op, ObjectOp::OmapGetValsByKeys { keys }, slot);
    })
}

/// `rados_read_op_operate(op, io, oid, flags)`: runs the ops on `oid` and fills the
/// iterators, `pmore` and `prval` they were given.
#[no_mangle]
pub unsafe extern "C" fn rados_read_op_operate(
    op: *mut c_void,
    io: *mut c_void,
    oid: *const c_char,
    _flags: c_int,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (Some(r), Ok(io), Ok(oid)) =
            (unsafe { read_op(op) }, unsafe { ioctx(io) }, unsafe { cstr(oid) })
        else {
            return EINVAL;
        };
        let guard = r.ops.lock().unwrap_or_else(|p| p.into_inner());
        let ops: Vec<ObjectOp> = guard.iter().map(|(o, _)| o.clone()).collect();
        let (io, oid) = (io.get(), oid.to_string());
        let result = block_on(async move { io.exec(&oid, ops).await });
        let (outputs, code) = match result {
            Ok(outputs) => (outputs, 0),
            Err(e) => (Vec::new(), client_errno(&e)),
        };
        for (i, (_, slot)) in guard.iter().enumerate() {
            let Slot::Omap { iter, more, rval } = *slot else { continue };
            let (entries, has_more): (Vec<(String, Bytes)>, bool) = match outputs.get(i) {
                Some(OpOutput::OmapVals { vals, more }) => {
                    (vals.clone().into_iter().collect(), *more)
                }
                Some(OpOutput::OmapKeys { keys, more }) => {
                    (keys.iter().map(|k| (k.clone(), Bytes::new())).collect(), *more)
                }
                _ => (Vec::new(), false),
            };
            // SAFETY: the iterator and out-parameters the caller gave with the op, alive
            // until operate returns (librados.h).
            unsafe {
                (*(iter as *mut OmapIter)).entries = entries;
                if more != 0 {
                    *(more as *mut u8) = has_more as u8;
                }
                if rval != 0 {
                    *(rval as *mut c_int) = code;
                }
            }
        }
        code
    })
}

/// `rados_omap_get_next(iter, key, val, len)`: the next entry; `*key` NULL at the end.
#[no_mangle]
pub unsafe extern "C" fn rados_omap_get_next(
    iter: *mut c_void,
    key: *mut *mut c_char,
    val: *mut *mut c_char,
    len: *mut usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: a live iterator from rados_read_op_omap_get_* (librados.h).
        let Some(it) = (unsafe { iter.cast::<OmapIter>().as_mut() }) else {
            return EINVAL;
        };
        let entry = it.entries.get(it.next).cloned();
        it.next += 1;
        it.current =
            entry.map(|(k, v)| (CString::new(k.replace('\0', "")).unwrap_or_default(), v.to_vec()));
        let (k, v, n) = match &mut it.current {
            Some((k, v)) => (k.as_ptr().cast_mut(), v.as_mut_ptr().cast::<c_char>(), v.len()),
            None => (std::ptr::null_mut(), std::ptr::null_mut(), 0),
        };
        // SAFETY: out-parameters NULL or writable.
        unsafe {
            if !key.is_null() {
                *key = k;
            }
            if !val.is_null() {
                *val = v;
            }
            if !len.is_null() {
                *len = n;
            }
        }
        0
    })
}

/// `rados_omap_get_end(iter)`: frees the iterator.
#[no_mangle]
pub unsafe extern "C" fn rados_omap_get_end(iter: *mut c_void) {
    ffi!((), {
        if !iter.is_null() {
            // SAFETY: made by rados_read_op_omap_get_*, freed once.
            drop(unsafe { Box::from_raw(iter.cast::<OmapIter>()) });
        }
    })
}
