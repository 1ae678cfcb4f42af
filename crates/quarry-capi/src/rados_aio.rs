//! librados' asynchronous object calls (`rados_aio_*`, fio's `rados` engine and python's
//! `aio_*`): completions (`rados_completion_t`), reads, writes, removes and write operations
//! run on the library's runtime.
//!
//! A completion is an `Arc` given out raw; the caller's reference is dropped by
//! `rados_aio_release`, each request holds its own until its callbacks have run. When a
//! request ends: its return value is stored and the completion marked complete
//! (`rados_aio_is_complete`, `rados_aio_wait_for_complete`); then `cb_complete` and `cb_safe`
//! run where image callbacks do (`crate::aio::complete`: on the runtime worker that saw the
//! request end) and the completion is marked so
//! (`rados_aio_wait_for_complete_and_cb`). Reads return the bytes read, the rest 0.

use std::ffi::{c_char, c_int, c_void};
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use quarry_client::IoCtx;

use crate::rados::{client_errno, ioctx};
use crate::{cstr, ffi, EINVAL};

type Callback = unsafe extern "C" fn(*mut c_void, *mut c_void);

/// What a `rados_completion_t` points to.
pub struct RadosCompletion {
    complete: Option<Callback>,
    safe: Option<Callback>,
    arg: usize,
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    ret: c_int,
    done: bool,
    callbacks_done: bool,
}

/// # Safety
/// `p` is NULL or a live `rados_completion_t` of this library.
unsafe fn completion<'a>(p: *mut c_void) -> Option<&'a RadosCompletion> {
    // SAFETY: by contract a pointer from Arc::into_raw not yet released.
    unsafe { p.cast::<RadosCompletion>().cast_const().as_ref() }
}

/// # Safety
/// As [`completion`].
unsafe fn completion_arc(p: *mut c_void) -> Option<Arc<RadosCompletion>> {
    if p.is_null() {
        return None;
    }
    let p = p.cast::<RadosCompletion>().cast_const();
    // SAFETY: the caller's reference is alive: adding one and taking it is balanced.
    unsafe {
        Arc::increment_strong_count(p);
        Some(Arc::from_raw(p))
    }
}

fn create(
    arg: *mut c_void,
    complete: Option<Callback>,
    safe: Option<Callback>,
    out: *mut *mut c_void,
) -> c_int {
    if out.is_null() {
        return EINVAL;
    }
    let c = Arc::new(RadosCompletion {
        complete,
        safe,
        arg: arg as usize,
        state: Mutex::new(State::default()),
        cv: Condvar::new(),
    });
    // SAFETY: non-NULL out-parameter.
    unsafe { *out = Arc::into_raw(c).cast_mut().cast() };
    0
}

/// `rados_aio_create_completion(cb_arg, cb_complete, cb_safe, pc)`.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_create_completion(
    arg: *mut c_void,
    complete: Option<Callback>,
    safe: Option<Callback>,
    out: *mut *mut c_void,
) -> c_int {
    ffi!(EINVAL, { create(arg, complete, safe, out) })
}

/// `rados_aio_create_completion2(cb_arg, cb_complete, pc)`.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_create_completion2(
    arg: *mut c_void,
    complete: Option<Callback>,
    out: *mut *mut c_void,
) -> c_int {
    ffi!(EINVAL, { create(arg, complete, None, out) })
}

/// `rados_aio_release(c)`.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_release(c: *mut c_void) {
    ffi!((), {
        if !c.is_null() {
            // SAFETY: the caller's reference, released once.
            drop(unsafe { Arc::from_raw(c.cast::<RadosCompletion>().cast_const()) });
        }
    })
}

/// `rados_aio_get_return_value(c)`.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_get_return_value(c: *mut c_void) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        match unsafe { completion(c) } {
            Some(c) => c.state.lock().unwrap_or_else(|p| p.into_inner()).ret,
            None => EINVAL,
        }
    })
}

/// `rados_aio_is_complete(c)`.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_is_complete(c: *mut c_void) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        match unsafe { completion(c) } {
            Some(c) => c.state.lock().unwrap_or_else(|p| p.into_inner()).done as c_int,
            None => EINVAL,
        }
    })
}

fn wait(c: *mut c_void, callbacks: bool) -> c_int {
    // SAFETY: contract of librados.h.
    let Some(c) = (unsafe { completion(c) }) else {
        return EINVAL;
    };
    crate::blocking_wait(|| {
        let mut state = c.state.lock().unwrap_or_else(|p| p.into_inner());
        while !(state.done && (!callbacks || state.callbacks_done)) {
            state = c.cv.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    });
    0
}

/// `rados_aio_wait_for_complete(c)`.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_wait_for_complete(c: *mut c_void) -> c_int {
    ffi!(EINVAL, { wait(c, false) })
}

/// `rados_aio_wait_for_complete_and_cb(c)`: also waits for the callbacks to have run (not
/// from inside a callback).
#[no_mangle]
pub unsafe extern "C" fn rados_aio_wait_for_complete_and_cb(c: *mut c_void) -> c_int {
    ffi!(EINVAL, { wait(c, true) })
}

/// Starts `work` for completion `c`; 0 or `-EINVAL`.
fn start<F>(c: *mut c_void, work: F) -> c_int
where
    F: Future<Output = c_int> + Send + 'static,
{
    // SAFETY: contract of librados.h.
    let Some(comp) = (unsafe { completion_arc(c) }) else {
        return EINVAL;
    };
    crate::aio::spawn_request(async move {
        let ret = work.await;
        {
            let mut state = comp.state.lock().unwrap_or_else(|p| p.into_inner());
            state.ret = ret;
            state.done = true;
            comp.cv.notify_all();
        }
        crate::aio::complete(Box::new(move || {
            let raw = Arc::as_ptr(&comp).cast_mut().cast::<c_void>();
            for cb in [comp.complete, comp.safe].into_iter().flatten() {
                // SAFETY: the caller's callback with its completion and argument; our
                // reference keeps the completion alive.
                unsafe { cb(raw, comp.arg as *mut c_void) };
            }
            let mut state = comp.state.lock().unwrap_or_else(|p| p.into_inner());
            state.callbacks_done = true;
            comp.cv.notify_all();
        }));
    });
    0
}

/// The context and object name of a call (`-EINVAL` for NULLs).
///
/// # Safety
/// Contracts of librados.h.
unsafe fn target(io: *mut c_void, oid: *const c_char) -> Result<(IoCtx, String), c_int> {
    // SAFETY: forwarded.
    let io = unsafe { ioctx(io) }?.get();
    // SAFETY: forwarded.
    let oid = unsafe { cstr(oid) }?.to_string();
    Ok((io, oid))
}

fn status<T>(r: Result<T, quarry_client::ClientError>) -> c_int {
    match r {
        Ok(_) => 0,
        Err(e) => client_errno(&e),
    }
}

/// `rados_aio_write(io, oid, c, buf, len, off)`: the data is copied before the call returns.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_write(
    io: *mut c_void,
    oid: *const c_char,
    c: *mut c_void,
    buf: *const c_char,
    len: usize,
    off: u64,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (io, oid) = c_try!(unsafe { target(io, oid) });
        if buf.is_null() && len > 0 {
            return EINVAL;
        }
        // SAFETY: `buf` holds `len` bytes.
        let data = if len == 0 {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) })
        };
        start(c, async move { status(io.write(&oid, off, data).await) })
    })
}

/// `rados_aio_write_full(io, oid, c, buf, len)`.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_write_full(
    io: *mut c_void,
    oid: *const c_char,
    c: *mut c_void,
    buf: *const c_char,
    len: usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (io, oid) = c_try!(unsafe { target(io, oid) });
        if buf.is_null() && len > 0 {
            return EINVAL;
        }
        // SAFETY: `buf` holds `len` bytes.
        let data = if len == 0 {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) })
        };
        start(c, async move { status(io.write_full(&oid, data).await) })
    })
}

/// `rados_aio_read(io, oid, c, buf, len, off)`: the bytes read; `buf` must stay valid until
/// the completion completes.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_read(
    io: *mut c_void,
    oid: *const c_char,
    c: *mut c_void,
    buf: *mut c_char,
    len: usize,
    off: u64,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (io, oid) = c_try!(unsafe { target(io, oid) });
        if buf.is_null() && len > 0 {
            return EINVAL;
        }
        let addr = buf as usize;
        start(c, async move {
            match io.read(&oid, off, len as u64).await {
                Ok(data) => {
                    let n = data.len().min(len);
                    // SAFETY: the caller's buffer of `len` bytes, valid until completion.
                    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, n) };
                    n as c_int
                }
                Err(e) => client_errno(&e),
            }
        })
    })
}

/// `rados_aio_remove(io, oid, c)`.
#[no_mangle]
pub unsafe extern "C" fn rados_aio_remove(
    io: *mut c_void,
    oid: *const c_char,
    c: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (io, oid) = c_try!(unsafe { target(io, oid) });
        start(c, async move { status(io.remove(&oid).await) })
    })
}

/// `rados_aio_write_op_operate(op, io, c, oid, mtime, flags)`: the operation's ops are taken
/// when called (the operation may be released after).
#[no_mangle]
pub unsafe extern "C" fn rados_aio_write_op_operate(
    op: *mut c_void,
    io: *mut c_void,
    c: *mut c_void,
    oid: *const c_char,
    _mtime: *mut libc::time_t,
    _flags: c_int,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (io, oid) = c_try!(unsafe { target(io, oid) });
        // SAFETY: contract of librados.h.
        let Some(ops) = (unsafe { crate::ops::write_op_ops(op) }) else {
            return EINVAL;
        };
        start(c, async move { status(io.exec(&oid, ops).await) })
    })
}
