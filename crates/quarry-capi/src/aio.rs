//! Asynchronous image I/O: completions (`rbd_completion_t`), the callback thread, and fio's
//! event notification (`rbd_set_image_notification` + `rbd_poll_io_events`).
//!
//! # Completion lifetime
//! A completion is an `Arc<Completion>` turned into a raw pointer by
//! `rbd_aio_create_completion`; that reference is the caller's, given back by
//! `rbd_aio_release`. A started request holds a second reference until its callback has
//! returned, so the caller may release the completion inside its callback (QEMU does) or
//! before the request ends. Each request also holds a reference to its image and counts as
//! in flight until its result is known: `rbd_close` waits for that, so a close racing I/O
//! never frees what the request uses.
//!
//! # Where callbacks run, and the order of events when a request ends
//! On the runtime: the result is stored (`rbd_aio_get_return_value` sees it), then the
//! completion's job runs ([`complete`]): the callback is called; if the image has a
//! notification fd, the completion is queued for `rbd_poll_io_events` and the fd signalled;
//! then the completion is marked complete (`rbd_aio_is_complete`,
//! `rbd_aio_wait_for_complete`), as librbd orders them; last, the write (if it is one)
//! stops holding back the callbacks of flushes submitted after it, and the request stops
//! counting as in flight, so `rbd_close` returns only after every callback of the image has
//! run (except when called from the callback of one of the image's requests: then it waits
//! for none of them).
//!
//! The job runs on the runtime worker that saw the request end, as librbd calls back from
//! the thread that completed the request. It used to go to one callback thread of the
//! library's, which cost a wake-up of that thread per request (fio's 4 KiB random reads at
//! queue depth 1 through this library: 5.2k IOPS at 167–171 µs with the hand-off, 6.4k at
//! 133–134 µs without; docs/benchmarks.md "Twenty-fifth round") and hung for good a callback
//! that waited for another request (that request's completion queued behind it). Every
//! blocking call a callback makes into the library (a synchronous read, waiting for a
//! completion, closing another image) first moves its worker's queued tasks and its turn at
//! the runtime's I/O to another thread ([`crate::blocking_wait`]), so the runtime keeps all
//! its workers (a callback that blocks on something of its own holds its worker meanwhile,
//! as it would hold one of librbd's threads). Callbacks may run concurrently, as librbd's
//! may. A request a callback starts goes to the runtime's shared queue ([`spawn_request`]).
//! A write's I/O ends before its callback runs: `rbd_flush` waits for the I/O of the writes
//! before it, not for their callbacks, so a callback may call it (and, as before, it may
//! return before those callbacks have run). An asynchronous flush completes once its I/O is
//! done and the callbacks of the writes it covers have returned, so its callback runs after
//! theirs (it once ran before the last one's); one made by a callback (any callback) does
//! not wait for callbacks, or a callback waiting for the flush it made would wait for
//! itself. So, as with librbd, whose flushes end after the callbacks of the writes before
//! them, a write's callback must not wait for an asynchronous flush another thread made.
//!
//! Return values as librbd: reads the number of bytes read (short at the end of the image),
//! writes, discards, write-zeroes and flushes 0, failures a negative errno.

use std::ffi::{c_char, c_int, c_void};
use std::future::Future;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};

use crate::rbd::{handle, handle_arc, rbd_errno, ImageHandle, InFlight, WriteTicket};
use crate::{ffi, runtime, EINVAL};

type Callback = unsafe extern "C" fn(*mut c_void, *mut c_void);

/// What an `rbd_completion_t` points to.
pub struct Completion {
    callback: Option<Callback>,
    /// The caller's argument (a pointer, kept as an address so the struct is `Send`).
    arg: usize,
    state: Mutex<State>,
    done_cv: Condvar,
}

#[derive(Default)]
struct State {
    ret: i64,
    done: bool,
}

impl Completion {
    fn raw(self: &Arc<Self>) -> *mut c_void {
        Arc::as_ptr(self).cast_mut().cast()
    }
}

/// The completion behind `p`, borrowed.
///
/// # Safety
/// `p` is NULL or a live `rbd_completion_t` of this library.
unsafe fn completion<'a>(p: *mut c_void) -> Option<&'a Completion> {
    // SAFETY: by contract a pointer from Arc::into_raw not yet released.
    unsafe { p.cast::<Completion>().cast_const().as_ref() }
}

/// A new reference to the completion behind `p`.
///
/// # Safety
/// As [`completion`].
unsafe fn completion_arc(p: *mut c_void) -> Option<Arc<Completion>> {
    if p.is_null() {
        return None;
    }
    let p = p.cast::<Completion>().cast_const();
    // SAFETY: `p` came from Arc::into_raw and the caller's reference is alive: adding one and
    // taking it as an Arc is balanced.
    unsafe {
        Arc::increment_strong_count(p);
        Some(Arc::from_raw(p))
    }
}

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    /// Set while the thread runs a callback: a completion's on a runtime worker
    /// ([`complete`]), or any on the callback thread (where it stays set).
    static IN_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set on the callback thread.
    static ON_CALLBACK_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The image whose request's callback the thread runs (its handle's address; 0: none).
    static CALLBACK_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether the calling thread runs the callback of a request of `image` (`rbd_close` of
/// that image then cannot wait for the image's requests: this one is among them).
pub fn in_callback_of(image: &ImageHandle) -> bool {
    CALLBACK_OF.with(|f| f.get()) == std::ptr::from_ref(image) as usize
}

/// Names the image whose request's callback runs on this thread until dropped.
struct CallbackOf(usize);

impl CallbackOf {
    fn enter(image: &Arc<ImageHandle>) -> CallbackOf {
        CallbackOf(CALLBACK_OF.with(|f| f.replace(Arc::as_ptr(image) as usize)))
    }
}

impl Drop for CallbackOf {
    fn drop(&mut self) {
        CALLBACK_OF.with(|f| f.set(self.0));
    }
}

/// Whether the calling thread is running a callback (a request it starts goes to the
/// runtime's shared queue, an asynchronous flush it makes does not wait for callbacks).
pub fn in_callback() -> bool {
    IN_CALLBACK.with(|f| f.get())
}

/// Whether the calling thread is the callback thread (the update watches' callbacks run
/// there: waiting for it to run something would wait for ever).
pub fn on_callback_thread() -> bool {
    ON_CALLBACK_THREAD.with(|f| f.get())
}

/// Marks the thread as running callbacks until dropped (also on unwinding).
struct InCallback(bool);

impl InCallback {
    fn enter() -> InCallback {
        InCallback(IN_CALLBACK.with(|f| f.replace(true)))
    }
}

impl Drop for InCallback {
    fn drop(&mut self) {
        IN_CALLBACK.with(|f| f.set(self.0));
    }
}

/// Spawns a request's task on the runtime. From a callback running on a runtime worker the
/// task goes to the runtime's shared queue (the worker's place moves to another thread
/// meanwhile, [`crate::blocking_wait`]): spawned plainly, it would be that worker's next
/// task, which no other worker takes, and a callback that then blocks on something of its
/// own (a lock the thread waiting for that request holds) would hold it back for good.
pub fn spawn_request<F>(task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if in_callback() {
        crate::blocking_wait(|| drop(runtime().spawn(task)));
    } else {
        drop(runtime().spawn(task));
    }
}

/// Runs a request's completion job (its callback and what follows it, module docs) on this
/// thread: the runtime worker that saw the request end.
pub fn complete(job: Job) {
    let _marked = InCallback::enter();
    job();
}

/// The callback thread: runs the update watches' callbacks (`manage`), one at a time, in the
/// order they are posted.
fn callback_thread() -> &'static Mutex<mpsc::Sender<Job>> {
    static SENDER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new().name("quarry-aio-cb".into()).spawn(move || {
            IN_CALLBACK.with(|f| f.set(true));
            ON_CALLBACK_THREAD.with(|f| f.set(true));
            for job in rx {
                job();
            }
        });
        if let Err(e) = spawned {
            eprintln!("quarry librbd: cannot start the callback thread: {e}");
            std::process::abort();
        }
        Mutex::new(tx)
    })
}

/// Runs `job` on the callback thread (after the callbacks already queued).
pub fn post(job: Box<dyn FnOnce() + Send>) {
    let sender = callback_thread().lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Err(mpsc::SendError(job)) = sender.send(job) {
        job();
    }
}

/// Ends a request: stores `ret`, ends a write's I/O (flushes behind it may go on), then
/// ([`complete`]) calls back, notifies, marks complete, and ends the write's ticket: an
/// asynchronous flush behind it calls back after its callback.
fn finish(
    image: Arc<ImageHandle>,
    comp: Arc<Completion>,
    ret: i64,
    inflight: InFlight,
    ticket: Option<WriteTicket>,
) {
    comp.state.lock().unwrap_or_else(|p| p.into_inner()).ret = ret;
    // Before the callback: `rbd_flush` and the I/O part of an asynchronous flush do not wait
    // for it, so the callback may flush (module docs).
    if let Some(ticket) = &ticket {
        ticket.end_io();
    }
    complete(Box::new(move || {
        if let Some(cb) = comp.callback {
            let _of = CallbackOf::enter(&image);
            // SAFETY: the caller's callback with its completion and argument (librbd.h); our
            // reference keeps the completion alive even if the callback releases it.
            unsafe { cb(comp.raw(), comp.arg as *mut c_void) };
        }
        {
            let mut events = image.events();
            if events.fd >= 0 {
                events.queue.push_back(comp.clone());
                let (fd, kind) = (events.fd, events.kind);
                drop(events);
                signal(fd, kind);
            }
        }
        let mut state = comp.state.lock().unwrap_or_else(|p| p.into_inner());
        state.done = true;
        comp.done_cv.notify_all();
        drop(state);
        drop(ticket);
        drop(inflight);
    }));
}

/// Signals the notification fd: 8 bytes (a count of 1) for an eventfd, 1 byte for a pipe.
fn signal(fd: c_int, kind: c_int) {
    let one: u64 = 1;
    let len = if kind == 2 { 8 } else { 1 };
    // SAFETY: writing from a live local of at least `len` bytes to the caller's fd.
    let r = unsafe { libc::write(fd, (&one as *const u64).cast(), len) };
    if r < 0 {
        tracing::debug!(fd, "notification write failed: {}", std::io::Error::last_os_error());
    }
}

/// What a request is, for the flushes behind it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Changes the image (write, discard, write-zeroes, compare-and-write): a flush
    /// submitted after it waits for it ([`ImageHandle::begin_write`]).
    Write,
    /// Anything else (reads, flushes).
    Other,
}

/// Starts `work` for the image and completion behind the raw pointers; 0, or `-EINVAL`.
unsafe fn start<F>(
    image: *mut c_void,
    c: *mut c_void,
    kind: Kind,
    work: impl FnOnce(&Arc<ImageHandle>) -> F,
) -> c_int
where
    F: Future<Output = i64> + Send + 'static,
{
    // SAFETY: forwarded contracts (librbd.h).
    let (Ok(h), Some(comp)) = (unsafe { handle_arc(image) }, unsafe { completion_arc(c) }) else {
        return EINVAL;
    };
    let ticket = (kind == Kind::Write).then(|| h.begin_write());
    // On the heap from the start: a request's future holds every state of the image, cache
    // and client calls below it (kilobytes), and the task's future is moved several times on
    // its way into its task (the copies were ~11% of the library's CPU in fio's 4 KiB random
    // reads, docs/benchmarks.md "Eighteenth round"); a boxed one moves as a pointer.
    let fut = Box::pin(work(&h));
    let inflight = h.begin();
    spawn_request(async move {
        let ret = fut.await;
        finish(h, comp, ret, inflight, ticket);
    });
    0
}

/// A caller's buffer address and length, kept until the request ends (librbd.h: the buffer
/// stays valid until completion).
#[derive(Clone, Copy)]
struct Piece {
    addr: usize,
    len: usize,
}

/// Copies `data` into the pieces in order; returns the bytes copied.
fn scatter(data: &[u8], pieces: &[Piece]) -> usize {
    let mut at = 0;
    for p in pieces {
        if at >= data.len() {
            break;
        }
        let n = p.len.min(data.len() - at);
        // SAFETY: each piece is a caller buffer valid for `len` bytes until completion.
        unsafe { std::ptr::copy_nonoverlapping(data[at..].as_ptr(), p.addr as *mut u8, n) };
        at += n;
    }
    at
}

/// Copies the pieces into one buffer (at submission: the caller may reuse them after).
fn gather(pieces: &[Piece]) -> Bytes {
    let total = pieces.iter().map(|p| p.len).sum();
    let mut out = BytesMut::with_capacity(total);
    for p in pieces {
        // SAFETY: each piece is a caller buffer valid for `len` bytes during the call.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(p.addr as *const u8, p.len) });
    }
    out.freeze()
}

/// `struct iovec` → pieces (`-EINVAL` for a NULL array or a negative count).
unsafe fn iov_pieces(iov: *const libc::iovec, count: c_int) -> Result<Vec<Piece>, c_int> {
    // librbd: no iovec, or lengths that overflow, are -EINVAL.
    if count <= 0 || iov.is_null() {
        return Err(EINVAL);
    }
    // SAFETY: `iov` points to `count` iovecs (librbd.h).
    let v = unsafe { std::slice::from_raw_parts(iov, count as usize) };
    let total = v.iter().try_fold(0usize, |sum, i| sum.checked_add(i.iov_len));
    if total.is_none_or(|t| t > isize::MAX as usize) {
        return Err(EINVAL);
    }
    Ok(v.iter().map(|i| Piece { addr: i.iov_base as usize, len: i.iov_len }).collect())
}

fn read_into(h: &ImageHandle, off: u64, pieces: Vec<Piece>) -> impl Future<Output = i64> + Send {
    let img = h.image.clone();
    let len: usize = pieces.iter().map(|p| p.len).sum();
    async move {
        match img.read(off, len as u64).await {
            Ok(data) => scatter(&data, &pieces) as i64,
            Err(e) => rbd_errno(&e) as i64,
        }
    }
}

fn write_from(h: &Arc<ImageHandle>, off: u64, data: Bytes) -> impl Future<Output = i64> + Send {
    let img = h.image.clone();
    async move {
        match img.write(off, data).await {
            Ok(()) => 0,
            Err(e) => rbd_errno(&e) as i64,
        }
    }
}

// ---- completions ----

/// `rbd_aio_create_completion(cb_arg, complete_cb, c)`: `complete_cb` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_create_completion(
    arg: *mut c_void,
    callback: Option<Callback>,
    out: *mut *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        if out.is_null() {
            return EINVAL;
        }
        let comp = Arc::new(Completion {
            callback,
            arg: arg as usize,
            state: Mutex::new(State::default()),
            done_cv: Condvar::new(),
        });
        // SAFETY: non-NULL out-parameter (librbd.h).
        unsafe { *out = Arc::into_raw(comp).cast_mut().cast() };
        0
    })
}

/// `rbd_aio_release(c)`: gives up the caller's reference.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_release(c: *mut c_void) {
    ffi!((), {
        if !c.is_null() {
            // SAFETY: the caller's reference from rbd_aio_create_completion, released once.
            drop(unsafe { Arc::from_raw(c.cast::<Completion>().cast_const()) });
        }
    })
}

/// `rbd_aio_get_return_value(c)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_get_return_value(c: *mut c_void) -> isize {
    ffi!(EINVAL as isize, {
        // SAFETY: contract of librbd.h.
        match unsafe { completion(c) } {
            Some(comp) => comp.state.lock().unwrap_or_else(|p| p.into_inner()).ret as isize,
            None => EINVAL as isize,
        }
    })
}

/// `rbd_aio_get_arg(c)`: the `cb_arg` given at creation.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_get_arg(c: *mut c_void) -> *mut c_void {
    ffi!(std::ptr::null_mut(), {
        // SAFETY: contract of librbd.h.
        match unsafe { completion(c) } {
            Some(comp) => comp.arg as *mut c_void,
            None => std::ptr::null_mut(),
        }
    })
}

/// `rbd_aio_is_complete(c)`: 1 once the callback has returned.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_is_complete(c: *mut c_void) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        match unsafe { completion(c) } {
            Some(comp) => comp.state.lock().unwrap_or_else(|p| p.into_inner()).done as c_int,
            None => EINVAL,
        }
    })
}

/// `rbd_aio_wait_for_complete(c)`: blocks until complete (inside a callback: for another
/// request's completion, never its own).
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_wait_for_complete(c: *mut c_void) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let Some(comp) = (unsafe { completion(c) }) else {
            return EINVAL;
        };
        crate::blocking_wait(|| {
            let mut state = comp.state.lock().unwrap_or_else(|p| p.into_inner());
            while !state.done {
                state = comp.done_cv.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        });
        0
    })
}

// ---- requests ----

/// `rbd_aio_read(image, off, len, buf, c)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_read(
    image: *mut c_void,
    off: u64,
    len: usize,
    buf: *mut c_char,
    c: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        if buf.is_null() && len > 0 {
            return EINVAL;
        }
        let pieces = vec![Piece { addr: buf as usize, len }];
        // SAFETY: forwarded contracts.
        unsafe { start(image, c, Kind::Other, |h| read_into(h, off, pieces)) }
    })
}

/// `rbd_aio_read2(image, off, len, buf, c, op_flags)`: flags (fadvise hints) are ignored.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_read2(
    image: *mut c_void,
    off: u64,
    len: usize,
    buf: *mut c_char,
    c: *mut c_void,
    _op_flags: c_int,
) -> c_int {
    // SAFETY: forwarded contracts.
    unsafe { rbd_aio_read(image, off, len, buf, c) }
}

/// `rbd_aio_readv(image, iov, iovcnt, off, c)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_readv(
    image: *mut c_void,
    iov: *const libc::iovec,
    count: c_int,
    off: u64,
    c: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let pieces = c_try!(unsafe { iov_pieces(iov, count) });
        // SAFETY: forwarded contracts.
        unsafe { start(image, c, Kind::Other, |h| read_into(h, off, pieces)) }
    })
}

/// `rbd_aio_write(image, off, len, buf, c)`: the data is copied before the call returns.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_write(
    image: *mut c_void,
    off: u64,
    len: usize,
    buf: *const c_char,
    c: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        if buf.is_null() && len > 0 {
            return EINVAL;
        }
        let data = gather(&[Piece { addr: buf as usize, len }]);
        // SAFETY: forwarded contracts.
        unsafe { start(image, c, Kind::Write, |h| write_from(h, off, data)) }
    })
}

/// `rbd_aio_write2(image, off, len, buf, c, op_flags)`: flags are ignored.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_write2(
    image: *mut c_void,
    off: u64,
    len: usize,
    buf: *const c_char,
    c: *mut c_void,
    _op_flags: c_int,
) -> c_int {
    // SAFETY: forwarded contracts.
    unsafe { rbd_aio_write(image, off, len, buf, c) }
}

/// `rbd_aio_writev(image, iov, iovcnt, off, c)`: the data is copied before the call returns.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_writev(
    image: *mut c_void,
    iov: *const libc::iovec,
    count: c_int,
    off: u64,
    c: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let data = match unsafe { iov_pieces(iov, count) } {
            Ok(p) => gather(&p),
            Err(e) => return e,
        };
        // SAFETY: forwarded contracts.
        unsafe { start(image, c, Kind::Write, |h| write_from(h, off, data)) }
    })
}

/// `rbd_aio_discard(image, off, len, c)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_discard(
    image: *mut c_void,
    off: u64,
    len: u64,
    c: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe {
            start(image, c, Kind::Write, |h| {
                let img = h.image.clone();
                async move {
                    match img.discard(off, len).await {
                        Ok(()) => 0,
                        Err(e) => rbd_errno(&e) as i64,
                    }
                }
            })
        }
    })
}

/// `rbd_aio_write_zeroes(image, off, len, c, zero_flags, op_flags)`: the range reads back
/// zeros; with `RBD_WRITE_ZEROES_FLAG_THICK_PROVISION` (1, what QEMU 7.2 passes unless the
/// request may unmap) zero bytes are written, so the range stays allocated; other flags are
/// `-EINVAL`.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_write_zeroes(
    image: *mut c_void,
    off: u64,
    len: usize,
    c: *mut c_void,
    zero_flags: c_int,
    _op_flags: c_int,
) -> c_int {
    ffi!(EINVAL, {
        if zero_flags & !1 != 0 {
            return EINVAL;
        }
        let thick = zero_flags & 1 != 0;
        // SAFETY: forwarded contracts.
        unsafe {
            start(image, c, Kind::Write, |h| {
                let img = h.image.clone();
                async move {
                    let done = if thick {
                        img.write_zero_bytes(off, len as u64, |_, _| {}).await
                    } else {
                        img.write_zeroes(off, len as u64).await
                    };
                    match done {
                        Ok(()) => 0,
                        Err(e) => rbd_errno(&e) as i64,
                    }
                }
            })
        }
    })
}

/// `rbd_aio_compare_and_write(image, off, len, cmp_buf, buf, c, mismatch_off, op_flags)`:
/// writes `buf` only if the image holds `cmp_buf` there, atomically on the OSD (one object;
/// the result is the length, or `-EILSEQ` with `*mismatch_off` set to the image offset of
/// the first differing byte, written before the completion fires).
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_compare_and_write(
    image: *mut c_void,
    off: u64,
    len: usize,
    cmp_buf: *const c_char,
    buf: *const c_char,
    c: *mut c_void,
    mismatch_off: *mut u64,
    _op_flags: c_int,
) -> c_int {
    ffi!(EINVAL, {
        if (buf.is_null() || cmp_buf.is_null()) && len > 0 {
            return EINVAL;
        }
        // SAFETY: `cmp_buf` and `buf` hold `len` bytes each during the call (librbd.h); they
        // are copied before it returns.
        let (cmp, data) = unsafe {
            (
                Bytes::copy_from_slice(std::slice::from_raw_parts(cmp_buf.cast::<u8>(), len)),
                Bytes::copy_from_slice(std::slice::from_raw_parts(buf.cast::<u8>(), len)),
            )
        };
        // The caller's u64 stays valid until the completion fires (librbd.h).
        let mismatch = mismatch_off as usize;
        let work = move |h: &Arc<ImageHandle>| {
            let img = h.image.clone();
            async move {
                match img.compare_and_write(off, cmp, data).await {
                    Ok(()) => len as i64,
                    Err(e) => {
                        if let (Some(at), true) = (e.mismatch_offset(), mismatch != 0) {
                            // SAFETY: non-NULL, valid until the completion (above).
                            unsafe { *(mismatch as *mut u64) = at };
                        }
                        rbd_errno(&e) as i64
                    }
                }
            }
        };
        // SAFETY: forwarded contracts.
        unsafe { start(image, c, Kind::Write, work) }
    })
}

/// `rbd_aio_flush(image, c)`: completes when every write submitted before it has completed
/// and is durable.
#[no_mangle]
pub unsafe extern "C" fn rbd_aio_flush(image: *mut c_void, c: *mut c_void) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe {
            start(image, c, Kind::Other, |h| {
                let img = h.image.clone();
                let (mark, handle) = (h.write_mark(), h.clone());
                // A flush made by a callback does not wait for the callbacks it covers (the
                // callback making it among them).
                let from_callback = in_callback();
                async move {
                    handle.wait_writes_before(mark).await;
                    let ret = match img.flush().await {
                        Ok(()) => 0,
                        Err(e) => rbd_errno(&e) as i64,
                    };
                    if !from_callback {
                        handle.wait_write_callbacks_before(mark).await;
                    }
                    ret
                }
            })
        }
    })
}

// ---- event notification (fio's poll mode) ----

/// `rbd_set_image_notification(image, fd, type)`: from now on each completed request of the
/// image is queued for [`rbd_poll_io_events`] and `fd` signalled (type 1 pipe, 2 eventfd).
#[no_mangle]
pub unsafe extern "C" fn rbd_set_image_notification(
    image: *mut c_void,
    fd: c_int,
    kind: c_int,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let h = c_try!(unsafe { handle(image) });
        if fd < 0 || !(1..=2).contains(&kind) {
            return EINVAL;
        }
        let mut events = h.events();
        events.fd = fd;
        events.kind = kind;
        0
    })
}

/// `rbd_poll_io_events(image, comps, numcomp)`: moves up to `numcomp` completed requests
/// into `comps` in completion order; returns how many. The caller still releases each.
#[no_mangle]
pub unsafe extern "C" fn rbd_poll_io_events(
    image: *mut c_void,
    comps: *mut *mut c_void,
    numcomp: c_int,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let h = c_try!(unsafe { handle(image) });
        if numcomp <= 0 {
            return 0;
        }
        if comps.is_null() {
            return EINVAL;
        }
        let mut events = h.events();
        let mut n = 0;
        while n < numcomp as usize {
            let Some(comp) = events.queue.pop_front() else { break };
            // SAFETY: `comps` has room for `numcomp` pointers (librbd.h).
            unsafe { *comps.add(n) = comp.raw() };
            n += 1;
        }
        n as c_int
    })
}
