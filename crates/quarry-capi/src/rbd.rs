//! Images (`rbd_image_t`) and pool-level image calls: create, remove, open/close, stat,
//! size, features, flags, parent, resize, snapshots, `diff_iterate2`, synchronous I/O,
//! namespaces, encryption (not supported), version.
//!
//! An `rbd_image_t` is an `Arc<ImageHandle>` turned into a raw pointer: `rbd_close` gives up
//! the caller's reference after waiting for the image's in-flight asynchronous requests;
//! requests and queued completions hold their own references, so a close racing them never
//! frees memory they use.

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use quarry_client::IoCtx;
use quarry_rbd::{pool, CreateOptions, Image, OpenOptions, RbdError};

use crate::aio::Completion;
use crate::rados::{client_errno, ioctx};
use crate::{block_on, copy_out, cstr, ffi, neg, opt_cstr, EINVAL, EOPNOTSUPP};

/// What an `rbd_image_t` points to.
pub struct ImageHandle {
    /// The open image.
    pub image: Image,
    inflight: Mutex<usize>,
    idle: Condvar,
    events: Mutex<Events>,
    /// Writes by submission number: the next number, those whose I/O has not ended, those
    /// whose callback has not returned. A flush waits for the writes submitted before it
    /// (librbd's flush covers every write issued before it, not only the completed ones),
    /// and an asynchronous flush's callback for their callbacks (`aio`).
    writes: Mutex<Writes>,
    write_done: tokio::sync::Notify,
}

/// See [`ImageHandle`]'s `writes`.
struct Writes {
    next: u64,
    io: std::collections::BTreeSet<u64>,
    callbacks: std::collections::BTreeSet<u64>,
}

/// One write in flight (see [`ImageHandle::begin_write`]): its I/O ends with
/// [`WriteTicket::end_io`] (or the drop), its callback with the drop.
pub struct WriteTicket(Arc<ImageHandle>, u64);

impl WriteTicket {
    /// The write's I/O has ended: flushes behind it may go on (their callbacks still wait
    /// for this write's callback, `aio`).
    pub fn end_io(&self) {
        self.0.writes.lock().unwrap_or_else(|p| p.into_inner()).io.remove(&self.1);
        self.0.write_done.notify_waiters();
    }
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        let mut writes = self.0.writes.lock().unwrap_or_else(|p| p.into_inner());
        writes.io.remove(&self.1);
        writes.callbacks.remove(&self.1);
        drop(writes);
        self.0.write_done.notify_waiters();
    }
}

/// fio's poll mode: completions are queued here and `fd` is signalled.
pub struct Events {
    /// The notification fd (`-1`: none).
    pub fd: c_int,
    /// `EVENT_TYPE_PIPE` (1) or `EVENT_TYPE_EVENTFD` (2).
    pub kind: c_int,
    /// Completed requests not yet taken by `rbd_poll_io_events`.
    pub queue: VecDeque<Arc<Completion>>,
}

/// Counts one in-flight request of an image until dropped.
pub struct InFlight(Arc<ImageHandle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut n = self.0.inflight.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        if *n == 0 {
            self.0.idle.notify_all();
        }
    }
}

impl ImageHandle {
    fn new(image: Image) -> ImageHandle {
        ImageHandle {
            image,
            inflight: Mutex::new(0),
            idle: Condvar::new(),
            events: Mutex::new(Events { fd: -1, kind: 0, queue: VecDeque::new() }),
            writes: Mutex::new(Writes {
                next: 0,
                io: Default::default(),
                callbacks: Default::default(),
            }),
            write_done: tokio::sync::Notify::new(),
        }
    }

    /// Registers a write (or discard, or write-zeroes) at submission.
    pub fn begin_write(self: &Arc<Self>) -> WriteTicket {
        let mut writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let seq = writes.next;
        writes.next += 1;
        writes.io.insert(seq);
        writes.callbacks.insert(seq);
        WriteTicket(self.clone(), seq)
    }

    /// Registers a request in flight.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        *self.inflight.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        InFlight(self.clone())
    }

    /// At a flush's submission: the mark [`ImageHandle::wait_writes_before`] waits for.
    pub fn write_mark(&self) -> u64 {
        self.writes.lock().unwrap_or_else(|p| p.into_inner()).next
    }

    /// Ends when the I/O of every write submitted before `mark` has.
    pub async fn wait_writes_before(&self, mark: u64) {
        self.wait_before(mark, |w| &w.io).await
    }

    /// Ends when the callback of every write submitted before `mark` has returned.
    pub async fn wait_write_callbacks_before(&self, mark: u64) {
        self.wait_before(mark, |w| &w.callbacks).await
    }

    async fn wait_before(&self, mark: u64, set: fn(&Writes) -> &std::collections::BTreeSet<u64>) {
        loop {
            let done = self.write_done.notified();
            let oldest =
                set(&self.writes.lock().unwrap_or_else(|p| p.into_inner())).first().copied();
            if oldest.is_none_or(|seq| seq >= mark) {
                return;
            }
            done.await;
        }
    }

    fn wait_idle(&self) {
        crate::blocking_wait(|| {
            let mut n = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            while *n > 0 {
                n = self.idle.wait(n).unwrap_or_else(|p| p.into_inner());
            }
        });
    }

    /// The event state.
    pub fn events(&self) -> MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle behind `p`, borrowed.
///
/// # Safety
/// `p` is NULL or a live `rbd_image_t` of this library.
pub unsafe fn handle<'a>(p: *mut c_void) -> Result<&'a ImageHandle, c_int> {
    // SAFETY: by contract a pointer from Arc::into_raw not yet given back by rbd_close.
    unsafe { p.cast::<ImageHandle>().cast_const().as_ref() }.ok_or(EINVAL)
}

/// A new reference to the handle behind `p`.
///
/// # Safety
/// As [`handle`].
pub unsafe fn handle_arc(p: *mut c_void) -> Result<Arc<ImageHandle>, c_int> {
    if p.is_null() {
        return Err(EINVAL);
    }
    let p = p.cast::<ImageHandle>().cast_const();
    // SAFETY: `p` came from Arc::into_raw and the caller's reference is alive, so adding a
    // reference and taking it back as an Arc is balanced.
    unsafe {
        Arc::increment_strong_count(p);
        Ok(Arc::from_raw(p))
    }
}

/// The errno of an image error, negated.
pub fn rbd_errno(e: &RbdError) -> c_int {
    neg(e.errno())
}

fn code<T>(r: Result<T, RbdError>) -> c_int {
    match r {
        Ok(_) => 0,
        Err(e) => rbd_errno(&e),
    }
}

/// Runs `f` with the image behind `p` (borrowed), mapping errors to errnos.
unsafe fn with_image(p: *mut c_void, f: impl FnOnce(&ImageHandle) -> c_int) -> c_int {
    // SAFETY: forwarded contract.
    match unsafe { handle(p) } {
        Ok(h) => f(h),
        Err(e) => e,
    }
}

/// The ioctx behind `io`, copied.
unsafe fn io_of(io: *mut c_void) -> Result<IoCtx, c_int> {
    // SAFETY: forwarded contract.
    Ok(unsafe { ioctx(io) }?.get())
}

/// Writes `value` through `out` if it is not NULL.
unsafe fn put<T>(out: *mut T, value: T) -> c_int {
    if out.is_null() {
        return EINVAL;
    }
    // SAFETY: non-NULL out-parameter (librbd.h).
    unsafe { out.write(value) };
    0
}

// ---- version, pool-level ----

/// `rbd_version(major, minor, extra)`: the librbd API level provided (1.16.0, Debian 12's).
#[no_mangle]
pub unsafe extern "C" fn rbd_version(major: *mut c_int, minor: *mut c_int, extra: *mut c_int) {
    ffi!((), {
        for (p, v) in [(major, 1), (minor, 16), (extra, 0)] {
            if !p.is_null() {
                // SAFETY: non-NULL out-parameter.
                unsafe { *p = v };
            }
        }
    })
}

unsafe fn create_common(
    io: *mut c_void,
    name: *const c_char,
    size: u64,
    features: Option<u64>,
    order: *mut c_int,
    stripe: (u64, u64),
) -> c_int {
    // SAFETY: contracts of librbd.h.
    let (io, name) = match unsafe { (io_of(io), cstr(name)) } {
        (Ok(io), Ok(n)) => (io, n.to_string()),
        _ => return EINVAL,
    };
    let mut options = CreateOptions::new(size);
    if !order.is_null() {
        // SAFETY: non-NULL in/out parameter.
        let asked = unsafe { *order };
        if asked != 0 {
            if !(12..=25).contains(&asked) {
                return -libc::EDOM;
            }
            options.order = asked as u8;
        }
    }
    if let Some(f) = features {
        options.features = f;
    }
    options.stripe_unit = stripe.0;
    options.stripe_count = stripe.1;
    let chosen = options.order;
    match block_on(async move { pool::create(&io, &name, &options).await }) {
        Ok(_) => {
            if !order.is_null() {
                // SAFETY: as above.
                unsafe { *order = chosen as c_int };
            }
            0
        }
        Err(e) => rbd_errno(&e),
    }
}

/// `rbd_create(io, name, size, order)`: default features; `*order` 0 picks 22 and is set.
#[no_mangle]
pub unsafe extern "C" fn rbd_create(
    io: *mut c_void,
    name: *const c_char,
    size: u64,
    order: *mut c_int,
) -> c_int {
    // SAFETY: forwarded contracts.
    ffi!(EINVAL, { unsafe { create_common(io, name, size, None, order, (0, 0)) } })
}

/// `rbd_create2(io, name, size, features, order)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_create2(
    io: *mut c_void,
    name: *const c_char,
    size: u64,
    features: u64,
    order: *mut c_int,
) -> c_int {
    // SAFETY: forwarded contracts.
    ffi!(EINVAL, { unsafe { create_common(io, name, size, Some(features), order, (0, 0)) } })
}

/// `rbd_create3(io, name, size, features, order, stripe_unit, stripe_count)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_create3(
    io: *mut c_void,
    name: *const c_char,
    size: u64,
    features: u64,
    order: *mut c_int,
    stripe_unit: u64,
    stripe_count: u64,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe { create_common(io, name, size, Some(features), order, (stripe_unit, stripe_count)) }
    })
}

/// `rbd_remove(io, name)`: `-ENOTEMPTY` with snapshots, `-EBUSY` while watched.
#[no_mangle]
pub unsafe extern "C" fn rbd_remove(io: *mut c_void, name: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        let (io, name) = match unsafe { (io_of(io), cstr(name)) } {
            (Ok(io), Ok(n)) => (io, n.to_string()),
            _ => return EINVAL,
        };
        code(block_on(async move { pool::remove(&io, &name).await }))
    })
}

/// `rbd_namespace_exists(io, name, exists)`: the default namespace always exists; others
/// when `rbd namespace create` registered them in the pool's `rbd_namespace` object.
#[no_mangle]
pub unsafe extern "C" fn rbd_namespace_exists(
    io: *mut c_void,
    name: *const c_char,
    exists: *mut bool,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        let (io, name) = match unsafe { (io_of(io), cstr(name)) } {
            (Ok(io), Ok(n)) => (io, n.to_string()),
            _ => return EINVAL,
        };
        if exists.is_null() {
            return EINVAL;
        }
        let found = if name.is_empty() {
            Ok(true)
        } else {
            block_on(async move {
                let mut io = io;
                io.set_namespace("")?;
                let key = format!("name_{name}");
                match io.omap_get_vals("rbd_namespace", "", &key, 1).await {
                    Ok((vals, _)) => Ok(vals.contains_key(&key)),
                    Err(e) if e.errno() == quarry_types::ErrorCode::ENOENT => Ok(false),
                    Err(e) => Err(e),
                }
            })
        };
        match found {
            // SAFETY: checked non-NULL.
            Ok(v) => unsafe { put(exists, v) },
            Err(e) => client_errno(&e),
        }
    })
}

// ---- open / close ----

unsafe fn open_common(
    io: *mut c_void,
    name: *const c_char,
    out: *mut *mut c_void,
    snap: *const c_char,
    read_only: bool,
) -> c_int {
    // SAFETY: contracts of librbd.h.
    let (ctx, name, snap) = match unsafe { (ioctx(io), cstr(name), opt_cstr(snap)) } {
        (Ok(ctx), Ok(n), Ok(s)) => (ctx, n.to_string(), s.map(str::to_string)),
        _ => return EINVAL,
    };
    if out.is_null() {
        return EINVAL;
    }
    let io = ctx.get();
    // The client cache's settings are `ctx.options()`: `rbd_cache` (QEMU sets it from its
    // cache mode: false for cache=none, true otherwise), `rbd_cache_size`,
    // `rbd_cache_max_dirty`, `rbd_cache_writethrough_until_flush`, ... (file, CEPH_ARGS,
    // rados_conf_set). A value that does not parse keeps the default, as librbd does.
    let mut cache = quarry_rbd::CacheConfig::default();
    for key in quarry_rbd::CACHE_OPTIONS {
        if let Some(value) = ctx.options().get(key) {
            let _ = cache.set(key, &value);
        }
    }
    let options = OpenOptions { snapshot: snap, read_only, cache };
    match block_on(async move { Image::open(&io, &name, options).await }) {
        Ok(image) => {
            let p = Arc::into_raw(Arc::new(ImageHandle::new(image))).cast_mut().cast::<c_void>();
            // SAFETY: checked non-NULL.
            unsafe { *out = p };
            0
        }
        Err(e) => rbd_errno(&e),
    }
}

/// `rbd_open(io, name, image, snap_name)`: a snapshot (non-NULL `snap_name`) opens read-only.
#[no_mangle]
pub unsafe extern "C" fn rbd_open(
    io: *mut c_void,
    name: *const c_char,
    out: *mut *mut c_void,
    snap: *const c_char,
) -> c_int {
    // SAFETY: forwarded contracts.
    ffi!(EINVAL, { unsafe { open_common(io, name, out, snap, false) } })
}

/// `rbd_open_read_only(io, name, image, snap_name)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_open_read_only(
    io: *mut c_void,
    name: *const c_char,
    out: *mut *mut c_void,
    snap: *const c_char,
) -> c_int {
    // SAFETY: forwarded contracts.
    ffi!(EINVAL, { unsafe { open_common(io, name, out, snap, true) } })
}

/// `rbd_close(image)`: ends update watches left on the image, waits until every
/// asynchronous request of the image has ended and its callback has run (not when called
/// from the callback of one of the image's requests, which is among them), releases the
/// exclusive lock and the header watch, and gives up the caller's reference.
#[no_mangle]
pub unsafe extern "C" fn rbd_close(image: *mut c_void) -> c_int {
    ffi!(EINVAL, {
        if image.is_null() {
            return EINVAL;
        }
        crate::manage::end_update_watches(image);
        // SAFETY: the caller's reference from rbd_open, given back exactly once here.
        let handle = unsafe { Arc::from_raw(image.cast::<ImageHandle>().cast_const()) };
        if !crate::aio::in_callback_of(&handle) {
            handle.wait_idle();
        }
        let img = handle.image.clone();
        code(block_on(async move { img.close().await }))
    })
}

// ---- information ----

/// librbd's `rbd_image_info_t`.
#[repr(C)]
pub struct ImageInfoC {
    size: u64,
    obj_size: u64,
    num_objs: u64,
    order: c_int,
    block_name_prefix: [c_char; 24],
    parent_pool: i64,
    parent_name: [c_char; 96],
}

/// `rbd_stat(image, info, infosize)`: `-ERANGE` if `infosize` is smaller than the struct.
#[no_mangle]
pub unsafe extern "C" fn rbd_stat(image: *mut c_void, info: *mut ImageInfoC, size: usize) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        unsafe {
            with_image(image, |h| {
                if info.is_null() {
                    return EINVAL;
                }
                if size < std::mem::size_of::<ImageInfoC>() {
                    return -libc::ERANGE;
                }
                let img = h.image.clone();
                let i = block_on(async move { img.info().await });
                let mut out = ImageInfoC {
                    size: i.size,
                    obj_size: 1u64 << i.order,
                    num_objs: i.object_count,
                    order: i.order as c_int,
                    block_name_prefix: [0; 24],
                    parent_pool: -1,
                    parent_name: [0; 96],
                };
                for (d, s) in
                    out.block_name_prefix.iter_mut().zip(i.block_name_prefix.bytes().take(23))
                {
                    *d = s as c_char;
                }
                if let Some(p) = &i.parent {
                    out.parent_pool = p.spec.pool as i64;
                }
                // SAFETY: `info` is valid for `size` >= sizeof bytes (checked).
                info.write(out);
                0
            })
        }
    })
}

/// `rbd_get_size(image, size)`: of the head or the open snapshot.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_size(image: *mut c_void, out: *mut u64) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        unsafe {
            with_image(image, |h| {
                let img = h.image.clone();
                put(out, block_on(async move { img.size().await }))
            })
        }
    })
}

/// `rbd_get_features(image, features)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_features(image: *mut c_void, out: *mut u64) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        unsafe {
            with_image(image, |h| {
                let img = h.image.clone();
                put(out, block_on(async move { img.features().await }))
            })
        }
    })
}

/// `rbd_get_flags(image, flags)`: of the head or the open snapshot.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_flags(image: *mut c_void, out: *mut u64) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        unsafe {
            with_image(image, |h| {
                let img = h.image.clone();
                put(out, block_on(async move { img.info().await.flags }))
            })
        }
    })
}

/// The parent's (pool name, image name, image id, snapshot name); `-ENOENT` when none.
fn parent_names(h: &ImageHandle) -> Result<(String, String, String, String), c_int> {
    let img = h.image.clone();
    block_on(async move {
        let Some(parent) = img.parent().await else {
            return Err(-libc::ENOENT);
        };
        let rados = img.ioctx().rados().clone();
        let mut pio = rados.ioctx_by_id(parent.spec.pool).map_err(|e| client_errno(&e))?;
        pio.set_namespace(&parent.spec.namespace).map_err(|e| client_errno(&e))?;
        let pool_name = pio.pool_name().to_string();
        let name = pool::image_name(&pio, &parent.spec.image_id).await.unwrap_or_default();
        let snap = match Image::open_by_id(
            &pio,
            &parent.spec.image_id,
            &name,
            OpenOptions { snapshot: None, read_only: true, ..Default::default() },
        )
        .await
        {
            Ok(p) => {
                let snaps = p.header().await.snapshots;
                let _ = p.close().await;
                snaps
                    .iter()
                    .find(|s| s.id == parent.spec.snap_id)
                    .map(|s| s.name.clone())
                    .unwrap_or_default()
            }
            Err(_) => String::new(),
        };
        Ok((pool_name, name, parent.spec.image_id.clone(), snap))
    })
}

/// `rbd_get_parent_info(image, pool, plen, name, nlen, snap, slen)`: `-ENOENT` without a
/// parent, `-ERANGE` when a buffer is short.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_parent_info(
    image: *mut c_void,
    pool: *mut c_char,
    pool_len: usize,
    name: *mut c_char,
    name_len: usize,
    snap: *mut c_char,
    snap_len: usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        unsafe {
            rbd_get_parent_info2(
                image,
                pool,
                pool_len,
                name,
                name_len,
                std::ptr::null_mut(),
                0,
                snap,
                snap_len,
            )
        }
    })
}

/// `rbd_get_parent_info2(...)`: also the parent's image id (NULL buffers are skipped).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rbd_get_parent_info2(
    image: *mut c_void,
    pool: *mut c_char,
    pool_len: usize,
    name: *mut c_char,
    name_len: usize,
    id: *mut c_char,
    id_len: usize,
    snap: *mut c_char,
    snap_len: usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        unsafe {
            with_image(image, |h| {
                let (p, n, i, s) = c_try!(parent_names(h));
                for (text, buf, len) in
                    [(p, pool, pool_len), (n, name, name_len), (i, id, id_len), (s, snap, snap_len)]
                {
                    if buf.is_null() {
                        continue;
                    }
                    // SAFETY: `buf` valid for `len` bytes (librbd.h).
                    if let Err(e) = copy_out(&text, buf, len) {
                        return e;
                    }
                }
                0
            })
        }
    })
}

// ---- changes ----

/// `rbd_resize(image, size)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_resize(image: *mut c_void, size: u64) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        unsafe {
            with_image(image, |h| {
                let img = h.image.clone();
                code(block_on(async move { img.resize(size, |_, _| {}).await }))
            })
        }
    })
}

/// librbd's `rbd_snap_info_t`.
#[repr(C)]
pub struct SnapInfoC {
    id: u64,
    size: u64,
    name: *const c_char,
}

/// `rbd_snap_list(image, snaps, max_snaps)`: the count, the array ended by an entry with a
/// NULL name; `-ERANGE` with `*max_snaps` set to the room needed when it is too small.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_list(
    image: *mut c_void,
    snaps: *mut SnapInfoC,
    max: *mut c_int,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        unsafe {
            with_image(image, |h| {
                if max.is_null() {
                    return EINVAL;
                }
                let img = h.image.clone();
                let list = block_on(async move {
                    let _ = img.refresh().await;
                    img.snapshots().await
                });
                let room = *max;
                if room < list.len() as c_int + 1 || snaps.is_null() {
                    *max = list.len() as c_int + 1;
                    return -libc::ERANGE;
                }
                for (i, s) in list.iter().enumerate() {
                    snaps.add(i).write(SnapInfoC {
                        id: s.id,
                        size: s.size,
                        name: crate::malloc_str(&s.name),
                    });
                }
                snaps.add(list.len()).write(SnapInfoC { id: 0, size: 0, name: std::ptr::null() });
                list.len() as c_int
            })
        }
    })
}

/// `rbd_snap_list_end(snaps)`: frees the names `rbd_snap_list` filled in.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_list_end(snaps: *mut SnapInfoC) {
    ffi!((), {
        if snaps.is_null() {
            return;
        }
        let mut i = 0;
        loop {
            // SAFETY: the array rbd_snap_list filled, ended by a NULL name.
            let entry = unsafe { &mut *snaps.add(i) };
            if entry.name.is_null() {
                break;
            }
            // SAFETY: the name was malloc'ed by rbd_snap_list.
            unsafe { libc::free(entry.name.cast_mut().cast()) };
            entry.name = std::ptr::null();
            i += 1;
        }
    })
}

/// The future of one snapshot operation.
type SnapFuture = std::pin::Pin<Box<dyn std::future::Future<Output = c_int> + Send>>;

unsafe fn snap_op(
    image: *mut c_void,
    name: *const c_char,
    op: fn(Image, String) -> SnapFuture,
) -> c_int {
    // SAFETY: contracts of librbd.h.
    let name = c_try!(unsafe { cstr(name) }).to_string();
    // SAFETY: as above.
    unsafe {
        with_image(image, |h| {
            let img = h.image.clone();
            block_on(op(img, name))
        })
    }
}

/// `rbd_snap_create(image, name)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_create(image: *mut c_void, name: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe {
            snap_op(image, name, |img, n| Box::pin(async move { code(img.snap_create(&n).await) }))
        }
    })
}

/// `rbd_snap_remove(image, name)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_remove(image: *mut c_void, name: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe {
            snap_op(image, name, |img, n| Box::pin(async move { code(img.snap_remove(&n).await) }))
        }
    })
}

/// `rbd_snap_rollback(image, name)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_rollback(image: *mut c_void, name: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe {
            snap_op(image, name, |img, n| {
                Box::pin(async move { code(img.snap_rollback(&n, |_, _| {}).await) })
            })
        }
    })
}

/// `rbd_invalidate_cache(image)`: writes the client cache back and drops what it holds.
#[no_mangle]
pub unsafe extern "C" fn rbd_invalidate_cache(image: *mut c_void) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        unsafe {
            with_image(image, |h| {
                let img = h.image.clone();
                code(block_on(async move { img.invalidate_cache().await }))
            })
        }
    })
}

/// `rbd_flush(image)`: every acknowledged write durable.
#[no_mangle]
pub unsafe extern "C" fn rbd_flush(image: *mut c_void) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        unsafe {
            with_image(image, |h| {
                let img = h.image.clone();
                let mark = h.write_mark();
                code(block_on(async move {
                    h.wait_writes_before(mark).await;
                    img.flush().await
                }))
            })
        }
    })
}

type DiffCb = unsafe extern "C" fn(u64, usize, c_int, *mut c_void) -> c_int;

/// `rbd_diff_iterate2(image, fromsnap, ofs, len, include_parent, whole_object, cb, arg)`:
/// calls `cb(offset, length, exists, arg)` on the caller's thread for each object piece of
/// the range that holds data (or changed since `fromsnap`), whole objects clipped to the
/// range; a non-zero return of `cb` stops the walk and is returned (QEMU's -9000).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rbd_diff_iterate2(
    image: *mut c_void,
    fromsnap: *const c_char,
    ofs: u64,
    len: u64,
    include_parent: u8,
    _whole_object: u8,
    cb: Option<DiffCb>,
    arg: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        let from = match unsafe { opt_cstr(fromsnap) } {
            Ok(f) => f.map(str::to_string),
            Err(e) => return e,
        };
        let Some(cb) = cb else {
            return EINVAL;
        };
        let arg = arg as usize;
        // SAFETY: contract of librbd.h.
        let h = c_try!(unsafe { handle(image) });
        let img = h.image.clone();
        let r = block_on(async move {
            let from_id = match from {
                None => None,
                Some(name) => {
                    let snaps = img.snapshots().await;
                    match snaps.iter().find(|s| s.name == name) {
                        Some(s) => Some(s.id),
                        None => return Ok(-libc::ENOENT),
                    }
                }
            };
            img.diff_iterate(from_id, ofs, len, include_parent != 0, move |o, l, exists| {
                // SAFETY: the caller's callback with its own argument (librbd.h).
                unsafe { cb(o, l as usize, exists as c_int, arg as *mut c_void) }
            })
            .await
        });
        match r {
            Ok(v) => v,
            Err(e) => rbd_errno(&e),
        }
    })
}

// ---- synchronous I/O ----

/// `rbd_read(image, ofs, len, buf)`: bytes read (short at the end of the image).
#[no_mangle]
pub unsafe extern "C" fn rbd_read(
    image: *mut c_void,
    ofs: u64,
    len: usize,
    buf: *mut c_char,
) -> isize {
    ffi!(EINVAL as isize, {
        if buf.is_null() && len > 0 {
            return EINVAL as isize;
        }
        // SAFETY: contract of librbd.h.
        let h = match unsafe { handle(image) } {
            Ok(h) => h,
            Err(e) => return e as isize,
        };
        let img = h.image.clone();
        match block_on(async move { img.read(ofs, len as u64).await }) {
            Ok(data) => {
                // SAFETY: `buf` holds `len` >= data.len() bytes (librbd.h).
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr(), buf.cast::<u8>(), data.len())
                };
                data.len() as isize
            }
            Err(e) => rbd_errno(&e) as isize,
        }
    })
}

/// `rbd_write(image, ofs, len, buf)`: bytes written.
#[no_mangle]
pub unsafe extern "C" fn rbd_write(
    image: *mut c_void,
    ofs: u64,
    len: usize,
    buf: *const c_char,
) -> isize {
    ffi!(EINVAL as isize, {
        if buf.is_null() && len > 0 {
            return EINVAL as isize;
        }
        // SAFETY: contract of librbd.h.
        let h = match unsafe { handle(image) } {
            Ok(h) => h,
            Err(e) => return e as isize,
        };
        // SAFETY: `buf` holds `len` bytes (librbd.h).
        let data =
            Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) });
        let img = h.image.clone();
        match block_on(async move { img.write(ofs, data).await }) {
            Ok(()) => len as isize,
            Err(e) => rbd_errno(&e) as isize,
        }
    })
}

/// `rbd_compare_and_write(image, ofs, len, cmp_buf, buf, mismatch_off, op_flags)`: `len`
/// once the image held `cmp_buf` at `ofs` and now holds `buf` (atomically on the OSD);
/// -EILSEQ with `*mismatch_off` the image offset of the first differing byte (nothing
/// written); -EINVAL across an object boundary or past the end (librbd's rules).
#[no_mangle]
pub unsafe extern "C" fn rbd_compare_and_write(
    image: *mut c_void,
    ofs: u64,
    len: usize,
    cmp_buf: *const c_char,
    buf: *const c_char,
    mismatch_off: *mut u64,
    _op_flags: c_int,
) -> isize {
    ffi!(EINVAL as isize, {
        if (buf.is_null() || cmp_buf.is_null()) && len > 0 {
            return EINVAL as isize;
        }
        // SAFETY: contract of librbd.h.
        let h = match unsafe { handle(image) } {
            Ok(h) => h,
            Err(e) => return e as isize,
        };
        // SAFETY: `cmp_buf` and `buf` hold `len` bytes each (librbd.h).
        let (cmp, data) = unsafe {
            (
                Bytes::copy_from_slice(std::slice::from_raw_parts(cmp_buf.cast::<u8>(), len)),
                Bytes::copy_from_slice(std::slice::from_raw_parts(buf.cast::<u8>(), len)),
            )
        };
        let img = h.image.clone();
        match block_on(async move { img.compare_and_write(ofs, cmp, data).await }) {
            Ok(()) => len as isize,
            Err(e) => {
                if let (Some(at), false) = (e.mismatch_offset(), mismatch_off.is_null()) {
                    // SAFETY: checked non-NULL; the caller's u64 (librbd.h).
                    unsafe { *mismatch_off = at };
                }
                rbd_errno(&e) as isize
            }
        }
    })
}

/// `rbd_discard(image, ofs, len)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_discard(image: *mut c_void, ofs: u64, len: u64) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        unsafe {
            with_image(image, |h| {
                let img = h.image.clone();
                code(block_on(async move { img.discard(ofs, len).await }))
            })
        }
    })
}

// ---- encryption: not supported ----

/// `rbd_encryption_format(...)`: `-EOPNOTSUPP` (Quarry has no image encryption).
#[no_mangle]
pub unsafe extern "C" fn rbd_encryption_format(
    _image: *mut c_void,
    _format: c_int,
    _opts: *mut c_void,
    _size: usize,
) -> c_int {
    EOPNOTSUPP
}

/// `rbd_encryption_load(...)`: `-EOPNOTSUPP` (Quarry has no image encryption).
#[no_mangle]
pub unsafe extern "C" fn rbd_encryption_load(
    _image: *mut c_void,
    _format: c_int,
    _opts: *mut c_void,
    _size: usize,
) -> c_int {
    EOPNOTSUPP
}
