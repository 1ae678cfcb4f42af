//! Image management beyond QEMU's set, as python3-rbd's `RBD`/`Image` classes call it: image
//! options and `rbd_create4`, `rbd_list2`, rename, remove with progress, clone, flatten,
//! snapshot protection, parent spec, names and ids, metadata, `*2` variants of read, write,
//! resize and snapshot calls; and librados' synchronous object calls (`rados_write`,
//! `rados_read`, `rados_stat`, xattrs...).
//!
//! Progress callbacks are accepted and not called (the operations are not long here).
//! `rbd_image_options_t` is a boxed map of option number to value; librbd's option numbers.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void};
use std::sync::Mutex;

use bytes::Bytes;
use quarry_client::IoCtx;
use quarry_rbd::{pool, CloneFormat, CreateOptions, Image, OpenOptions, Protection};

use crate::rados::{client_errno, ioctx};
use crate::rbd::{handle, rbd_errno};
use crate::{block_on, copy_out, cstr, ffi, malloc_str, EINVAL, EOPNOTSUPP};

/// librbd's image option numbers Quarry reads.
mod opt {
    use std::ffi::c_int;
    pub const FORMAT: c_int = 0;
    pub const FEATURES: c_int = 1;
    pub const ORDER: c_int = 2;
    pub const STRIPE_UNIT: c_int = 3;
    pub const STRIPE_COUNT: c_int = 4;
    pub const DATA_POOL: c_int = 10;
    pub const CLONE_FORMAT: c_int = 12;
}

/// One option value.
#[derive(Clone, Debug)]
enum OptValue {
    U64(u64),
    Str(String),
}

/// What an `rbd_image_options_t` points to.
struct ImageOptions {
    values: Mutex<BTreeMap<c_int, OptValue>>,
}

impl ImageOptions {
    fn u64(&self, key: c_int) -> Option<u64> {
        match self.values.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            Some(OptValue::U64(v)) => Some(*v),
            _ => None,
        }
    }

    /// The creation options these values ask for (`-EINVAL` for a format other than 2,
    /// `-EDOM` for an order out of 12..=25).
    fn create_options(&self, size: u64) -> Result<CreateOptions, c_int> {
        let mut options = CreateOptions::new(size);
        if let Some(format) = self.u64(opt::FORMAT) {
            if format != 2 {
                return Err(EINVAL);
            }
        }
        if let Some(f) = self.u64(opt::FEATURES) {
            options.features = f;
        }
        if let Some(order) = self.u64(opt::ORDER).filter(|&o| o != 0) {
            if !(12..=25).contains(&order) {
                return Err(-libc::EDOM);
            }
            options.order = order as u8;
        }
        // A separate data pool is not supported.
        let data_pool =
            self.values.lock().unwrap_or_else(|p| p.into_inner()).get(&opt::DATA_POOL).cloned();
        if let Some(OptValue::Str(pool)) = data_pool {
            if !pool.is_empty() {
                return Err(EOPNOTSUPP);
            }
        }
        options.stripe_unit = self.u64(opt::STRIPE_UNIT).unwrap_or(0);
        options.stripe_count = self.u64(opt::STRIPE_COUNT).unwrap_or(0);
        Ok(options)
    }
}

/// # Safety
/// `p` is NULL or a live `rbd_image_options_t` of this library.
unsafe fn options<'a>(p: *mut c_void) -> Option<&'a ImageOptions> {
    // SAFETY: by contract NULL or a Box we made in rbd_image_options_create.
    unsafe { p.cast::<ImageOptions>().as_ref() }
}

/// `rbd_image_options_create(opts)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_create(out: *mut *mut c_void) {
    ffi!((), {
        if !out.is_null() {
            let b = Box::new(ImageOptions { values: Mutex::new(BTreeMap::new()) });
            // SAFETY: non-NULL out-parameter.
            unsafe { *out = Box::into_raw(b).cast() };
        }
    })
}

/// `rbd_image_options_destroy(opts)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_destroy(opts: *mut c_void) {
    ffi!((), {
        if !opts.is_null() {
            // SAFETY: made by rbd_image_options_create, destroyed once.
            drop(unsafe { Box::from_raw(opts.cast::<ImageOptions>()) });
        }
    })
}

/// `rbd_image_options_set_uint64(opts, optname, value)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_set_uint64(
    opts: *mut c_void,
    key: c_int,
    value: u64,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        match unsafe { options(opts) } {
            Some(o) => {
                o.values
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, OptValue::U64(value));
                0
            }
            None => EINVAL,
        }
    })
}

/// `rbd_image_options_set_string(opts, optname, value)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_set_string(
    opts: *mut c_void,
    key: c_int,
    value: *const c_char,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        match unsafe { (options(opts), cstr(value)) } {
            (Some(o), Ok(v)) => {
                o.values
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, OptValue::Str(v.to_string()));
                0
            }
            _ => EINVAL,
        }
    })
}

/// `rbd_image_options_get_uint64(opts, optname, value)`: `-ENOENT` when unset.
#[no_mangle]
pub unsafe extern "C" fn rbd_image_options_get_uint64(
    opts: *mut c_void,
    key: c_int,
    out: *mut u64,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let Some(o) = (unsafe { options(opts) }) else {
            return EINVAL;
        };
        match o.u64(key) {
            Some(v) if !out.is_null() => {
                // SAFETY: non-NULL out-parameter.
                unsafe { *out = v };
                0
            }
            Some(_) => EINVAL,
            None => -libc::ENOENT,
        }
    })
}

unsafe fn io_of(io: *mut c_void) -> Result<IoCtx, c_int> {
    // SAFETY: forwarded contract.
    Ok(unsafe { ioctx(io) }?.get())
}

/// `rbd_create4(io, name, size, opts)`: format 2 only; features, order and striping from
/// `opts` (librbd's defaults otherwise).
#[no_mangle]
pub unsafe extern "C" fn rbd_create4(
    io: *mut c_void,
    name: *const c_char,
    size: u64,
    opts: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        let (io, name) = match unsafe { (io_of(io), cstr(name)) } {
            (Ok(io), Ok(n)) => (io, n.to_string()),
            _ => return EINVAL,
        };
        // SAFETY: contract of librbd.h.
        let options = match unsafe { options(opts) } {
            Some(o) => c_try!(o.create_options(size)),
            None => CreateOptions::new(size),
        };
        match block_on(async move { pool::create(&io, &name, &options).await }) {
            Ok(_) => 0,
            Err(e) => rbd_errno(&e),
        }
    })
}

/// librbd's `rbd_image_spec_t`.
#[repr(C)]
pub struct ImageSpecC {
    id: *mut c_char,
    name: *mut c_char,
}

/// `rbd_list2(io, images, max_images)`: `-ERANGE` with `*max_images` set when short.
#[no_mangle]
pub unsafe extern "C" fn rbd_list2(
    io: *mut c_void,
    images: *mut ImageSpecC,
    max: *mut usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let io = c_try!(unsafe { io_of(io) });
        if max.is_null() {
            return EINVAL;
        }
        let list = match block_on(async move { pool::list(&io).await }) {
            Ok(l) => l,
            Err(e) => return rbd_errno(&e),
        };
        // SAFETY: `max` checked non-NULL; `images` has room for `*max` entries (librbd.h).
        unsafe {
            crate::fill_entries(images, max, &list, |e| ImageSpecC {
                id: malloc_str(&e.id),
                name: malloc_str(&e.name),
            })
        }
    })
}

/// `rbd_list(io, names, size)`: the names, each ended by a NUL, in `names`; returns the bytes
/// used (as librbd does), or `-ERANGE` with `*size` set to the room needed.
#[no_mangle]
pub unsafe extern "C" fn rbd_list(io: *mut c_void, names: *mut c_char, size: *mut usize) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let io = c_try!(unsafe { io_of(io) });
        if size.is_null() {
            return EINVAL;
        }
        let list = match block_on(async move { pool::list(&io).await }) {
            Ok(l) => l,
            Err(e) => return rbd_errno(&e),
        };
        let needed: usize = list.iter().map(|e| e.name.len() + 1).sum();
        // SAFETY: `size` non-NULL; `names` valid for `*size` bytes.
        unsafe {
            let room = *size;
            *size = needed;
            if room < needed || (names.is_null() && needed > 0) {
                return -libc::ERANGE;
            }
            let mut at = 0;
            for e in &list {
                std::ptr::copy_nonoverlapping(
                    e.name.as_ptr(),
                    names.add(at).cast::<u8>(),
                    e.name.len(),
                );
                *names.add(at + e.name.len()) = 0;
                at += e.name.len() + 1;
            }
        }
        needed as c_int
    })
}

/// `rbd_image_spec_list_cleanup(images, num_images)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_image_spec_list_cleanup(images: *mut ImageSpecC, n: usize) {
    ffi!((), {
        if images.is_null() {
            return;
        }
        for i in 0..n {
            // SAFETY: entries filled by rbd_list2 with malloc'ed strings.
            unsafe {
                let e = &mut *images.add(i);
                libc::free(e.id.cast());
                libc::free(e.name.cast());
                e.id = std::ptr::null_mut();
                e.name = std::ptr::null_mut();
            }
        }
    })
}

/// `rbd_remove_with_progress(io, name, cb, data)`: as `rbd_remove`.
#[no_mangle]
pub unsafe extern "C" fn rbd_remove_with_progress(
    io: *mut c_void,
    name: *const c_char,
    _cb: *mut c_void,
    _data: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contracts.
    unsafe { crate::rbd::rbd_remove(io, name) }
}

/// `rbd_rename(io, src, dst)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_rename(
    io: *mut c_void,
    src: *const c_char,
    dst: *const c_char,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        let (io, src, dst) = match unsafe { (io_of(io), cstr(src), cstr(dst)) } {
            (Ok(io), Ok(s), Ok(d)) => (io, s.to_string(), d.to_string()),
            _ => return EINVAL,
        };
        match block_on(async move { pool::rename(&io, &src, &dst).await }) {
            Ok(()) => 0,
            Err(e) => rbd_errno(&e),
        }
    })
}

/// `rbd_clone3(p_io, p_name, p_snap, c_io, c_name, opts)`: clone format 2 unless the options
/// ask for 1 (`RBD_IMAGE_OPTION_CLONE_FORMAT`).
#[no_mangle]
pub unsafe extern "C" fn rbd_clone3(
    p_io: *mut c_void,
    p_name: *const c_char,
    p_snap: *const c_char,
    c_io: *mut c_void,
    c_name: *const c_char,
    opts: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        let (p_io, p_name, p_snap, c_io, c_name) =
            match unsafe { (io_of(p_io), cstr(p_name), cstr(p_snap), io_of(c_io), cstr(c_name)) } {
                (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => {
                    (a, b.to_string(), c.to_string(), d, e.to_string())
                }
                _ => return EINVAL,
            };
        // SAFETY: contract of librbd.h.
        let o = unsafe { options(opts) };
        let options = match o.map(|o| o.create_options(0)) {
            Some(Ok(c)) => c,
            Some(Err(e)) => return e,
            None => CreateOptions::new(0),
        };
        let format = match o.and_then(|o| o.u64(opt::CLONE_FORMAT)) {
            Some(1) => CloneFormat::V1,
            _ => CloneFormat::V2,
        };
        let r = block_on(async move {
            let parent = pool::open_snapshot(&p_io, &p_name, &p_snap).await?;
            let r = pool::clone(&parent, &c_io, &c_name, &options, format).await;
            let _ = parent.close().await;
            r
        });
        match r {
            Ok(_) => 0,
            Err(e) => rbd_errno(&e),
        }
    })
}

/// `rbd_clone2(p_io, p_name, p_snap, c_io, c_name, features, c_order, stripe_unit,
/// stripe_count)`: the clone with these features (layering required, `-ENOSYS` otherwise, as
/// librbd), order (`*c_order` 0 picks 22 and is set) and striping; format 2 unless the cluster
/// handle's `rbd_default_clone_format` is 1. libvirt's rbd pool clones volumes with it.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rbd_clone2(
    p_io: *mut c_void,
    p_name: *const c_char,
    p_snap: *const c_char,
    c_io: *mut c_void,
    c_name: *const c_char,
    features: u64,
    c_order: *mut c_int,
    stripe_unit: u64,
    stripe_count: c_int,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        let (p_io, p_name, p_snap, c_ioctx, c_name) =
            match unsafe { (io_of(p_io), cstr(p_name), cstr(p_snap), ioctx(c_io), cstr(c_name)) } {
                (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (a, b.to_string(), c.to_string(), d, e),
                _ => return EINVAL,
            };
        let c_io = c_ioctx.get();
        let c_name = c_name.to_string();
        let mut options = CreateOptions::new(0);
        if !c_order.is_null() {
            // SAFETY: non-NULL in/out parameter.
            let asked = unsafe { *c_order };
            if asked != 0 {
                if !(12..=25).contains(&asked) {
                    return -libc::EDOM;
                }
                options.order = asked as u8;
            }
        }
        if stripe_count < 0 {
            return EINVAL;
        }
        options.features = features;
        options.stripe_unit = stripe_unit;
        options.stripe_count = stripe_count as u64;
        let format = match c_ioctx.options().get("rbd_default_clone_format").as_deref() {
            Some("1") => CloneFormat::V1,
            _ => CloneFormat::V2,
        };
        let chosen = options.order;
        let r = block_on(async move {
            let parent = pool::open_snapshot(&p_io, &p_name, &p_snap).await?;
            let r = pool::clone(&parent, &c_io, &c_name, &options, format).await;
            let _ = parent.close().await;
            r
        });
        match r {
            Ok(_) => {
                if !c_order.is_null() {
                    // SAFETY: as above.
                    unsafe { *c_order = chosen as c_int };
                }
                0
            }
            Err(e) => rbd_errno(&e),
        }
    })
}

/// Runs `f` on the image behind `image` (borrowed) on the caller's thread.
unsafe fn on_image<F, Fut>(image: *mut c_void, f: F) -> c_int
where
    F: FnOnce(Image) -> Fut,
    Fut: std::future::Future<Output = c_int> + Send,
{
    // SAFETY: forwarded contract.
    match unsafe { handle(image) } {
        Ok(h) => block_on(f(h.image.clone())),
        Err(e) => e,
    }
}

fn code<T>(r: quarry_rbd::RbdResult<T>) -> c_int {
    match r {
        Ok(_) => 0,
        Err(e) => rbd_errno(&e),
    }
}

/// `rbd_flatten_with_progress(image, cb, data)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_flatten_with_progress(
    image: *mut c_void,
    _cb: *mut c_void,
    _data: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contract.
        unsafe { on_image(image, |img| async move { code(img.flatten(|_, _| {}).await) }) }
    })
}

/// `rbd_flatten(image)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_flatten(image: *mut c_void) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { rbd_flatten_with_progress(image, std::ptr::null_mut(), std::ptr::null_mut()) }
}

/// `rbd_resize2(image, size, allow_shrink, cb, data)`: `-EINVAL` for a shrink not allowed.
#[no_mangle]
pub unsafe extern "C" fn rbd_resize2(
    image: *mut c_void,
    size: u64,
    allow_shrink: bool,
    _cb: *mut c_void,
    _data: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contract.
        unsafe {
            on_image(image, |img| async move {
                if !allow_shrink && size < img.size().await {
                    return EINVAL;
                }
                code(img.resize(size, |_, _| {}).await)
            })
        }
    })
}

/// `rbd_read2(image, ofs, len, buf, op_flags)`: flags are hints, ignored.
#[no_mangle]
pub unsafe extern "C" fn rbd_read2(
    image: *mut c_void,
    ofs: u64,
    len: usize,
    buf: *mut c_char,
    _flags: c_int,
) -> isize {
    // SAFETY: forwarded contracts.
    unsafe { crate::rbd::rbd_read(image, ofs, len, buf) }
}

/// `rbd_write2(image, ofs, len, buf, op_flags)`: flags are hints, ignored.
#[no_mangle]
pub unsafe extern "C" fn rbd_write2(
    image: *mut c_void,
    ofs: u64,
    len: usize,
    buf: *const c_char,
    _flags: c_int,
) -> isize {
    // SAFETY: forwarded contracts.
    unsafe { crate::rbd::rbd_write(image, ofs, len, buf) }
}

/// `rbd_write_zeroes(image, ofs, len, zero_flags, op_flags)`: the bytes zeroed.
#[no_mangle]
pub unsafe extern "C" fn rbd_write_zeroes(
    image: *mut c_void,
    ofs: u64,
    len: usize,
    zero_flags: c_int,
    _flags: c_int,
) -> isize {
    ffi!(EINVAL as isize, {
        if zero_flags != 0 {
            return EOPNOTSUPP as isize;
        }
        // SAFETY: forwarded contract.
        let r = unsafe {
            on_image(image, |img| async move { code(img.write_zeroes(ofs, len as u64).await) })
        };
        if r < 0 {
            r as isize
        } else {
            len as isize
        }
    })
}

/// A snapshot call taking the image and a snapshot name.
unsafe fn with_snap<F, Fut>(image: *mut c_void, name: *const c_char, f: F) -> c_int
where
    F: FnOnce(Image, String) -> Fut,
    Fut: std::future::Future<Output = c_int> + Send,
{
    // SAFETY: contract of librbd.h.
    let name = c_try!(unsafe { cstr(name) }).to_string();
    // SAFETY: forwarded contract.
    unsafe { on_image(image, |img| f(img, name)) }
}

/// `rbd_snap_create2(image, name, flags, cb, data)`: quiesce flags are irrelevant (no
/// quiesce hooks here).
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_create2(
    image: *mut c_void,
    name: *const c_char,
    _flags: u32,
    _cb: *mut c_void,
    _data: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contracts.
    ffi!(EINVAL, { unsafe { crate::rbd::rbd_snap_create(image, name) } })
}

/// `rbd_snap_remove2(image, name, flags, cb, data)`: `RBD_SNAP_REMOVE_UNPROTECT` (1)
/// unprotects first; other flags are `-EOPNOTSUPP`.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_remove2(
    image: *mut c_void,
    name: *const c_char,
    flags: u32,
    _cb: *mut c_void,
    _data: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        if flags & !1 != 0 {
            return EOPNOTSUPP;
        }
        // SAFETY: forwarded contracts.
        unsafe {
            with_snap(image, name, |img, n| async move {
                if flags & 1 != 0 {
                    let protected = img
                        .snapshots()
                        .await
                        .iter()
                        .any(|s| s.name == n && s.protection == Protection::Protected);
                    if protected {
                        if let Err(e) = img.snap_unprotect(&n).await {
                            return rbd_errno(&e);
                        }
                    }
                }
                code(img.snap_remove(&n).await)
            })
        }
    })
}

/// `rbd_snap_exists(image, name, exists)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_exists(
    image: *mut c_void,
    name: *const c_char,
    exists: *mut bool,
) -> c_int {
    ffi!(EINVAL, {
        if exists.is_null() {
            return EINVAL;
        }
        let exists = exists as usize;
        // SAFETY: forwarded contracts; `exists` checked non-NULL.
        unsafe {
            with_snap(image, name, |img, n| async move {
                let _ = img.refresh().await;
                let found = img.snapshots().await.iter().any(|s| s.name == n);
                *(exists as *mut bool) = found;
                0
            })
        }
    })
}

/// `rbd_snap_protect(image, name)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_protect(image: *mut c_void, name: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe { with_snap(image, name, |img, n| async move { code(img.snap_protect(&n).await) }) }
    })
}

/// `rbd_snap_unprotect(image, name)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_unprotect(image: *mut c_void, name: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe {
            with_snap(image, name, |img, n| async move { code(img.snap_unprotect(&n).await) })
        }
    })
}

/// `rbd_snap_is_protected(image, name, is_protected)`: `-ENOENT` for no such snapshot.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_is_protected(
    image: *mut c_void,
    name: *const c_char,
    out: *mut c_int,
) -> c_int {
    ffi!(EINVAL, {
        if out.is_null() {
            return EINVAL;
        }
        let out = out as usize;
        // SAFETY: forwarded contracts; `out` checked non-NULL.
        unsafe {
            with_snap(image, name, |img, n| async move {
                let _ = img.refresh().await;
                match img.snapshots().await.iter().find(|s| s.name == n) {
                    Some(s) => {
                        *(out as *mut c_int) = (s.protection == Protection::Protected) as c_int;
                        0
                    }
                    None => -libc::ENOENT,
                }
            })
        }
    })
}

/// librbd's `rbd_linked_image_spec_t`.
#[repr(C)]
pub struct LinkedImageSpecC {
    pool_id: i64,
    pool_name: *mut c_char,
    pool_namespace: *mut c_char,
    image_id: *mut c_char,
    image_name: *mut c_char,
    trash: bool,
}

/// librbd's `rbd_snap_spec_t`.
#[repr(C)]
pub struct SnapSpecC {
    id: u64,
    namespace_type: c_int,
    name: *mut c_char,
}

/// `rbd_get_parent(image, parent_image, parent_snap)`: `-ENOENT` without a parent; strings
/// freed by `rbd_linked_image_spec_cleanup` / `rbd_snap_spec_cleanup`.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_parent(
    image: *mut c_void,
    parent: *mut LinkedImageSpecC,
    snap: *mut SnapSpecC,
) -> c_int {
    ffi!(EINVAL, {
        if parent.is_null() || snap.is_null() {
            return EINVAL;
        }
        // SAFETY: contract of librbd.h.
        let h = c_try!(unsafe { handle(image) });
        let img = h.image.clone();
        let r = block_on(async move {
            let Some(info) = img.parent().await else {
                return Err(-libc::ENOENT);
            };
            let mut pio =
                img.ioctx().rados().ioctx_by_id(info.spec.pool).map_err(|e| client_errno(&e))?;
            pio.set_namespace(&info.spec.namespace).map_err(|e| client_errno(&e))?;
            let name = pool::image_name(&pio, &info.spec.image_id).await.ok();
            let snap_name = match Image::open_by_id(
                &pio,
                &info.spec.image_id,
                name.as_deref().unwrap_or(""),
                OpenOptions { snapshot: None, read_only: true, ..Default::default() },
            )
            .await
            {
                Ok(p) => {
                    let found = p
                        .header()
                        .await
                        .snapshots
                        .iter()
                        .find(|s| s.id == info.spec.snap_id)
                        .map(|s| s.name.clone());
                    let _ = p.close().await;
                    found.unwrap_or_default()
                }
                Err(_) => String::new(),
            };
            Ok((info, pio.pool_name().to_string(), name, snap_name))
        });
        let (info, pool_name, name, snap_name) = c_try!(r);
        // SAFETY: both out-parameters checked non-NULL.
        unsafe {
            parent.write(LinkedImageSpecC {
                pool_id: info.spec.pool as i64,
                pool_name: malloc_str(&pool_name),
                pool_namespace: malloc_str(&info.spec.namespace),
                image_id: malloc_str(&info.spec.image_id),
                image_name: malloc_str(name.as_deref().unwrap_or("")),
                trash: name.is_none(),
            });
            snap.write(SnapSpecC {
                id: info.spec.snap_id,
                namespace_type: 0,
                name: malloc_str(&snap_name),
            });
        }
        0
    })
}

/// `rbd_linked_image_spec_cleanup(spec)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_linked_image_spec_cleanup(spec: *mut LinkedImageSpecC) {
    ffi!((), {
        // SAFETY: a spec filled by this library (malloc'ed strings) or NULL.
        if let Some(s) = unsafe { spec.as_mut() } {
            for p in [&mut s.pool_name, &mut s.pool_namespace, &mut s.image_id, &mut s.image_name] {
                // SAFETY: malloc'ed by us, freed once (set to NULL after).
                unsafe { libc::free(p.cast()) };
                *p = std::ptr::null_mut();
            }
        }
    })
}

/// `rbd_snap_spec_cleanup(spec)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_spec_cleanup(spec: *mut SnapSpecC) {
    ffi!((), {
        // SAFETY: a spec filled by this library or NULL.
        if let Some(s) = unsafe { spec.as_mut() } {
            // SAFETY: malloc'ed by us, freed once.
            unsafe { libc::free(s.name.cast()) };
            s.name = std::ptr::null_mut();
        }
    })
}

/// Copies an image string property into `buf` (`-ERANGE` when short).
unsafe fn string_prop(
    image: *mut c_void,
    buf: *mut c_char,
    len: usize,
    get: impl FnOnce(&Image) -> String,
) -> c_int {
    // SAFETY: contract of librbd.h.
    let h = c_try!(unsafe { handle(image) });
    let text = get(&h.image);
    // SAFETY: `buf` valid for `len` bytes.
    match unsafe { copy_out(&text, buf, len) } {
        Ok(()) => 0,
        Err(e) => e,
    }
}

/// `rbd_get_id(image, id, id_len)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_id(image: *mut c_void, id: *mut c_char, len: usize) -> c_int {
    // SAFETY: forwarded contracts.
    ffi!(EINVAL, { unsafe { string_prop(image, id, len, |i| i.id().to_string()) } })
}

/// `rbd_get_block_name_prefix(image, prefix, len)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_block_name_prefix(
    image: *mut c_void,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe {
            string_prop(image, buf, len, |i| {
                let i = i.clone();
                block_on(async move { i.header().await.object_prefix })
            })
        }
    })
}

/// `rbd_get_name(image, name, name_len)`: `-ERANGE` with `*name_len` set when short.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_name(
    image: *mut c_void,
    buf: *mut c_char,
    len: *mut usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let h = c_try!(unsafe { handle(image) });
        if len.is_null() {
            return EINVAL;
        }
        let name = h.image.name().to_string();
        // SAFETY: `len` non-NULL; `buf` valid for `*len` bytes.
        unsafe {
            let room = *len;
            *len = name.len() + 1;
            match copy_out(&name, buf, room) {
                Ok(()) => 0,
                Err(e) => e,
            }
        }
    })
}

/// A u64 image property through `out`.
unsafe fn u64_prop(
    image: *mut c_void,
    out: *mut u64,
    get: fn(&quarry_rbd::ImageInfo) -> u64,
) -> c_int {
    if out.is_null() {
        return EINVAL;
    }
    let out = out as usize;
    // SAFETY: forwarded contract; `out` checked non-NULL.
    unsafe {
        on_image(image, |img| async move {
            *(out as *mut u64) = get(&img.info().await);
            0
        })
    }
}

/// `rbd_get_stripe_unit(image, stripe_unit)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_stripe_unit(image: *mut c_void, out: *mut u64) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe {
            u64_prop(image, out, |i| if i.stripe_unit == 0 { 1 << i.order } else { i.stripe_unit })
        }
    })
}

/// `rbd_get_stripe_count(image, stripe_count)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_get_stripe_count(image: *mut c_void, out: *mut u64) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe { u64_prop(image, out, |i| i.stripe_count.max(1)) }
    })
}

/// `rbd_get_op_features(image, op_features)`: none are used (0).
#[no_mangle]
pub unsafe extern "C" fn rbd_get_op_features(image: *mut c_void, out: *mut u64) -> c_int {
    // SAFETY: forwarded contracts.
    ffi!(EINVAL, { unsafe { u64_prop(image, out, |_| 0) } })
}

/// `rbd_get_old_format(image, old)`: always format 2 (0).
#[no_mangle]
pub unsafe extern "C" fn rbd_get_old_format(image: *mut c_void, old: *mut u8) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        if unsafe { handle(image) }.is_err() || old.is_null() {
            return EINVAL;
        }
        // SAFETY: non-NULL out-parameter.
        unsafe { *old = 0 };
        0
    })
}

/// `rbd_metadata_get(image, key, value, val_len)`: `-ENOENT` for no such key, `-ERANGE`
/// with `*val_len` set when short.
#[no_mangle]
pub unsafe extern "C" fn rbd_metadata_get(
    image: *mut c_void,
    key: *const c_char,
    value: *mut c_char,
    len: *mut usize,
) -> c_int {
    ffi!(EINVAL, {
        if len.is_null() {
            return EINVAL;
        }
        let (len, value) = (len as usize, value as usize);
        // SAFETY: forwarded contracts; `len` non-NULL, `value` valid for `*len` bytes.
        unsafe {
            with_snap(image, key, |img, k| async move {
                match img.metadata_get(&k).await {
                    Ok(v) => {
                        let len = len as *mut usize;
                        let room = *len;
                        *len = v.len() + 1;
                        match copy_out(&v, value as *mut c_char, room) {
                            Ok(()) => 0,
                            Err(e) => e,
                        }
                    }
                    Err(e) => rbd_errno(&e),
                }
            })
        }
    })
}

/// `rbd_metadata_set(image, key, value)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_metadata_set(
    image: *mut c_void,
    key: *const c_char,
    value: *const c_char,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let value = c_try!(unsafe { cstr(value) }).to_string();
        // SAFETY: forwarded contracts.
        unsafe {
            with_snap(image, key, |img, k| async move { code(img.metadata_set(&k, &value).await) })
        }
    })
}

/// `rbd_metadata_remove(image, key)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_metadata_remove(image: *mut c_void, key: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe {
            with_snap(image, key, |img, k| async move { code(img.metadata_remove(&k).await) })
        }
    })
}

// ---- librados: synchronous object calls ----

unsafe fn with_object<F, Fut>(io: *mut c_void, oid: *const c_char, f: F) -> c_int
where
    F: FnOnce(IoCtx, String) -> Fut,
    Fut: std::future::Future<Output = c_int> + Send,
{
    // SAFETY: contracts of librados.h.
    match unsafe { (io_of(io), cstr(oid)) } {
        (Ok(io), Ok(o)) => block_on(f(io, o.to_string())),
        _ => EINVAL,
    }
}

fn rcode<T>(r: Result<T, quarry_client::ClientError>) -> c_int {
    match r {
        Ok(_) => 0,
        Err(e) => client_errno(&e),
    }
}

/// A caller's buffer as bytes (copied).
///
/// # Safety
/// `buf` valid for `len` bytes, or `len` 0.
unsafe fn bytes_of(buf: *const c_char, len: usize) -> Result<Bytes, c_int> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    if buf.is_null() {
        return Err(EINVAL);
    }
    // SAFETY: valid for `len` bytes (caller's contract).
    Ok(Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }))
}

/// `rados_write(io, oid, buf, len, off)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write(
    io: *mut c_void,
    oid: *const c_char,
    buf: *const c_char,
    len: usize,
    off: u64,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let data = c_try!(unsafe { bytes_of(buf, len) });
        // SAFETY: forwarded contracts.
        unsafe { with_object(io, oid, |io, o| async move { rcode(io.write(&o, off, data).await) }) }
    })
}

/// `rados_write_full(io, oid, buf, len)`.
#[no_mangle]
pub unsafe extern "C" fn rados_write_full(
    io: *mut c_void,
    oid: *const c_char,
    buf: *const c_char,
    len: usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let data = c_try!(unsafe { bytes_of(buf, len) });
        // SAFETY: forwarded contracts.
        unsafe { with_object(io, oid, |io, o| async move { rcode(io.write_full(&o, data).await) }) }
    })
}

/// `rados_read(io, oid, buf, len, off)`: the bytes read.
#[no_mangle]
pub unsafe extern "C" fn rados_read(
    io: *mut c_void,
    oid: *const c_char,
    buf: *mut c_char,
    len: usize,
    off: u64,
) -> c_int {
    ffi!(EINVAL, {
        if buf.is_null() && len > 0 {
            return EINVAL;
        }
        let addr = buf as usize;
        // SAFETY: forwarded contracts; `buf` valid for `len` bytes.
        unsafe {
            with_object(io, oid, |io, o| async move {
                match io.read(&o, off, len as u64).await {
                    Ok(data) => {
                        let n = data.len().min(len);
                        std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, n);
                        n as c_int
                    }
                    Err(e) => client_errno(&e),
                }
            })
        }
    })
}

/// `rados_remove(io, oid)`.
#[no_mangle]
pub unsafe extern "C" fn rados_remove(io: *mut c_void, oid: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe { with_object(io, oid, |io, o| async move { rcode(io.remove(&o).await) }) }
    })
}

/// `rados_stat(io, oid, psize, pmtime)`: NULL out-parameters are skipped.
#[no_mangle]
pub unsafe extern "C" fn rados_stat(
    io: *mut c_void,
    oid: *const c_char,
    size: *mut u64,
    mtime: *mut libc::time_t,
) -> c_int {
    ffi!(EINVAL, {
        let (size, mtime) = (size as usize, mtime as usize);
        // SAFETY: forwarded contracts; out-parameters NULL or writable.
        unsafe {
            with_object(io, oid, |io, o| async move {
                match io.stat(&o).await {
                    Ok(st) => {
                        if size != 0 {
                            *(size as *mut u64) = st.size;
                        }
                        if mtime != 0 {
                            *(mtime as *mut libc::time_t) = st.mtime_sec as libc::time_t;
                        }
                        0
                    }
                    Err(e) => client_errno(&e),
                }
            })
        }
    })
}

/// `rados_getxattr(io, oid, name, buf, len)`: the value's length, `-ERANGE` when short.
#[no_mangle]
pub unsafe extern "C" fn rados_getxattr(
    io: *mut c_void,
    oid: *const c_char,
    name: *const c_char,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let name = c_try!(unsafe { cstr(name) }).to_string();
        let addr = buf as usize;
        // SAFETY: forwarded contracts; `buf` valid for `len` bytes.
        unsafe {
            with_object(io, oid, |io, o| async move {
                match io.getxattr(&o, &name).await {
                    Ok(v) if v.len() > len => -libc::ERANGE,
                    Ok(v) => {
                        if !v.is_empty() {
                            std::ptr::copy_nonoverlapping(v.as_ptr(), addr as *mut u8, v.len());
                        }
                        v.len() as c_int
                    }
                    Err(e) => client_errno(&e),
                }
            })
        }
    })
}

/// `rados_setxattr(io, oid, name, buf, len)`.
#[no_mangle]
pub unsafe extern "C" fn rados_setxattr(
    io: *mut c_void,
    oid: *const c_char,
    name: *const c_char,
    buf: *const c_char,
    len: usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (name, data) = match unsafe { (cstr(name), bytes_of(buf, len)) } {
            (Ok(n), Ok(d)) => (n.to_string(), d),
            _ => return EINVAL,
        };
        // SAFETY: forwarded contracts.
        unsafe {
            with_object(io, oid, |io, o| async move { rcode(io.setxattr(&o, &name, data).await) })
        }
    })
}

/// `rados_rmxattr(io, oid, name)`.
#[no_mangle]
pub unsafe extern "C" fn rados_rmxattr(
    io: *mut c_void,
    oid: *const c_char,
    name: *const c_char,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let name = c_try!(unsafe { cstr(name) }).to_string();
        // SAFETY: forwarded contracts.
        unsafe { with_object(io, oid, |io, o| async move { rcode(io.rmxattr(&o, &name).await) }) }
    })
}

/// `rados_trunc(io, oid, size)`.
#[no_mangle]
pub unsafe extern "C" fn rados_trunc(io: *mut c_void, oid: *const c_char, size: u64) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe { with_object(io, oid, |io, o| async move { rcode(io.truncate(&o, size).await) }) }
    })
}

// ---- snapshots by id ----

/// The snapshot `id` of the image's header (user or trash namespace).
fn snapshot_by_id(img: &Image, id: u64) -> Option<quarry_rbd::SnapshotInfo> {
    let img = img.clone();
    block_on(async move {
        let _ = img.refresh().await;
        img.header().await.snapshots.into_iter().find(|s| s.id == id)
    })
}

/// `rbd_snap_get_namespace_type(image, snap_id, type)`: user 0, trash 2; `-ENOENT`.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_get_namespace_type(
    image: *mut c_void,
    snap_id: u64,
    out: *mut c_int,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let h = c_try!(unsafe { handle(image) });
        if out.is_null() {
            return EINVAL;
        }
        let Some(snap) = snapshot_by_id(&h.image, snap_id) else {
            return -libc::ENOENT;
        };
        let kind = match snap.namespace {
            quarry_cls::rbd::SnapNamespace::User => 0,
            quarry_cls::rbd::SnapNamespace::Trash { .. } => 2,
        };
        // SAFETY: non-NULL out-parameter.
        unsafe { *out = kind };
        0
    })
}

/// `rbd_snap_get_name(image, snap_id, name, name_len)`: `-ERANGE` with `*name_len` set.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_get_name(
    image: *mut c_void,
    snap_id: u64,
    buf: *mut c_char,
    len: *mut usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let h = c_try!(unsafe { handle(image) });
        if len.is_null() {
            return EINVAL;
        }
        let Some(snap) = snapshot_by_id(&h.image, snap_id) else {
            return -libc::ENOENT;
        };
        // SAFETY: `len` non-NULL; `buf` valid for `*len` bytes.
        unsafe {
            let room = *len;
            *len = snap.name.len() + 1;
            match copy_out(&snap.name, buf, room) {
                Ok(()) => 0,
                Err(e) => e,
            }
        }
    })
}

/// `rbd_snap_get_id(image, name, snap_id)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_get_id(
    image: *mut c_void,
    name: *const c_char,
    out: *mut u64,
) -> c_int {
    ffi!(EINVAL, {
        if out.is_null() {
            return EINVAL;
        }
        let out = out as usize;
        // SAFETY: forwarded contracts; `out` checked non-NULL.
        unsafe {
            with_snap(image, name, |img, n| async move {
                let _ = img.refresh().await;
                match img.snapshots().await.iter().find(|s| s.name == n) {
                    Some(s) => {
                        *(out as *mut u64) = s.id;
                        0
                    }
                    None => -libc::ENOENT,
                }
            })
        }
    })
}

/// `rbd_snap_get_timestamp(image, snap_id, timestamp)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_snap_get_timestamp(
    image: *mut c_void,
    snap_id: u64,
    out: *mut libc::timespec,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let h = c_try!(unsafe { handle(image) });
        if out.is_null() {
            return EINVAL;
        }
        let Some(snap) = snapshot_by_id(&h.image, snap_id) else {
            return -libc::ENOENT;
        };
        // SAFETY: non-NULL out-parameter.
        unsafe {
            (*out).tv_sec = snap.timestamp.0 as libc::time_t;
            (*out).tv_nsec = snap.timestamp.1 as libc::c_long;
        }
        0
    })
}

/// `rbd_is_exclusive_lock_owner(image, is_owner)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_is_exclusive_lock_owner(image: *mut c_void, out: *mut c_int) -> c_int {
    ffi!(EINVAL, {
        if out.is_null() {
            return EINVAL;
        }
        let out = out as usize;
        // SAFETY: forwarded contract; `out` checked non-NULL.
        unsafe {
            on_image(image, |img| async move {
                *(out as *mut c_int) = img.is_lock_owner().await as c_int;
                0
            })
        }
    })
}

// ---- advisory locks (`rbd lock`) and the managed exclusive lock ----

/// `rbd_lock_exclusive(image, cookie)`: `-EBUSY` if another client holds the lock,
/// `-EEXIST` if this one does.
#[no_mangle]
pub unsafe extern "C" fn rbd_lock_exclusive(image: *mut c_void, cookie: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe {
            with_snap(image, cookie, |img, c| async move { code(img.lock_add(&c, None).await) })
        }
    })
}

/// `rbd_lock_shared(image, cookie, tag)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_lock_shared(
    image: *mut c_void,
    cookie: *const c_char,
    tag: *const c_char,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let tag = c_try!(unsafe { cstr(tag) }).to_string();
        // SAFETY: forwarded contracts.
        unsafe {
            with_snap(
                image,
                cookie,
                |img, c| async move { code(img.lock_add(&c, Some(&tag)).await) },
            )
        }
    })
}

/// `rbd_unlock(image, cookie)`: releases this client's lock `cookie` (`-ENOENT` if it holds
/// none).
#[no_mangle]
pub unsafe extern "C" fn rbd_unlock(image: *mut c_void, cookie: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: forwarded contracts.
        unsafe {
            with_snap(image, cookie, |img, c| async move {
                let me = format!("client.{}", img.ioctx().rados().global_id());
                code(img.lock_break(&me, &c).await)
            })
        }
    })
}

/// `rbd_break_lock(image, client, cookie)`: breaks `client`'s (`client.4123`) lock.
#[no_mangle]
pub unsafe extern "C" fn rbd_break_lock(
    image: *mut c_void,
    client: *const c_char,
    cookie: *const c_char,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let client = c_try!(unsafe { cstr(client) }).to_string();
        // SAFETY: forwarded contracts.
        unsafe {
            with_snap(
                image,
                cookie,
                |img, c| async move { code(img.lock_break(&client, &c).await) },
            )
        }
    })
}

/// Writes NUL-separated `items` into `buf` of `*len` bytes; sets `*len` to the room needed.
/// False if it does not fit.
///
/// # Safety
/// `len` non-NULL; `buf` valid for `*len` bytes or NULL.
unsafe fn put_list(items: &[&str], buf: *mut c_char, len: *mut usize) -> bool {
    let needed: usize = items.iter().map(|s| s.len() + 1).sum();
    // SAFETY: caller's contract.
    unsafe {
        let room = *len;
        *len = needed;
        if room < needed || (buf.is_null() && needed > 0) {
            return false;
        }
        let mut at = 0;
        for s in items {
            std::ptr::copy_nonoverlapping(s.as_ptr(), buf.add(at).cast::<u8>(), s.len());
            *buf.add(at + s.len()) = 0;
            at += s.len() + 1;
        }
    }
    true
}

/// `rbd_list_lockers(image, exclusive, tag, tag_len, clients, clients_len, cookies,
/// cookies_len, addrs, addrs_len)`: the number of lockers, their fields NUL-separated;
/// `-ERANGE` with every length set when a buffer is short.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rbd_list_lockers(
    image: *mut c_void,
    exclusive: *mut c_int,
    tag: *mut c_char,
    tag_len: *mut usize,
    clients: *mut c_char,
    clients_len: *mut usize,
    cookies: *mut c_char,
    cookies_len: *mut usize,
    addrs: *mut c_char,
    addrs_len: *mut usize,
) -> isize {
    ffi!(EINVAL as isize, {
        // SAFETY: contract of librbd.h.
        let h = match unsafe { handle(image) } {
            Ok(h) => h,
            Err(e) => return e as isize,
        };
        if [tag_len, clients_len, cookies_len, addrs_len].iter().any(|p| p.is_null()) {
            return EINVAL as isize;
        }
        let img = h.image.clone();
        let info = match block_on(async move { img.lockers().await }) {
            Ok(i) => i,
            Err(e) => return rbd_errno(&e) as isize,
        };
        let c: Vec<&str> = info.lockers.iter().map(|l| l.locker.as_str()).collect();
        let k: Vec<&str> = info.lockers.iter().map(|l| l.cookie.as_str()).collect();
        let a: Vec<&str> = info.lockers.iter().map(|l| l.addr.as_str()).collect();
        // SAFETY: lengths non-NULL (checked); buffers valid for their lengths (librbd.h).
        let fits = unsafe {
            let t = put_list(&[info.tag.as_str()], tag, tag_len);
            let c = put_list(&c, clients, clients_len);
            let k = put_list(&k, cookies, cookies_len);
            let a = put_list(&a, addrs, addrs_len);
            t && c && k && a
        };
        if !fits {
            return -(libc::ERANGE as isize);
        }
        if !exclusive.is_null() {
            let is_exclusive = matches!(info.lock_type, Some(quarry_rbd::LockType::Exclusive));
            // SAFETY: non-NULL out-parameter.
            unsafe { *exclusive = is_exclusive as c_int };
        }
        info.lockers.len() as isize
    })
}

/// `rbd_lock_acquire(image, mode)`: takes the managed exclusive lock and keeps it (others
/// get `-EBUSY`, no hand-over); `RBD_LOCK_MODE_SHARED` is `-EOPNOTSUPP`, as in librbd.
#[no_mangle]
pub unsafe extern "C" fn rbd_lock_acquire(image: *mut c_void, mode: c_int) -> c_int {
    ffi!(EINVAL, {
        if mode != 0 {
            return EOPNOTSUPP;
        }
        // SAFETY: forwarded contract.
        unsafe {
            on_image(image, |img| async move {
                code(img.lock_acquire(quarry_rbd::LockMode::Exclusive, false).await)
            })
        }
    })
}

/// `rbd_lock_release(image)`: gives the managed lock up.
#[no_mangle]
pub unsafe extern "C" fn rbd_lock_release(image: *mut c_void) -> c_int {
    // SAFETY: forwarded contract.
    ffi!(EINVAL, {
        unsafe { on_image(image, |img| async move { code(img.lock_release().await) }) }
    })
}

// ---- image change notifications (rbd_update_watch) ----

type UpdateCb = unsafe extern "C" fn(*mut c_void);

/// One registered update watch: the task answering notifies, its context, its cookie, and
/// the image handle it belongs to (its address).
type UpdateWatch = (tokio::task::JoinHandle<()>, IoCtx, u64, usize);

/// Registered update watches by handle.
fn update_watches() -> &'static Mutex<BTreeMap<u64, UpdateWatch>> {
    static WATCHES: std::sync::OnceLock<Mutex<BTreeMap<u64, UpdateWatch>>> =
        std::sync::OnceLock::new();
    WATCHES.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// `rbd_update_watch(image, handle, cb, arg)`: calls `cb(arg)` on the library's callback
/// thread each time another handle (this process or another) changes the image's header
/// (resize, snapshots, features, flatten...). Ends with `rbd_update_unwatch`.
#[no_mangle]
pub unsafe extern "C" fn rbd_update_watch(
    image: *mut c_void,
    out: *mut u64,
    cb: Option<UpdateCb>,
    arg: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let h = c_try!(unsafe { handle(image) });
        let Some(cb) = cb else {
            return EINVAL;
        };
        if out.is_null() {
            return EINVAL;
        }
        let io = h.image.ioctx().clone();
        let header = quarry_rbd::names::header_object(h.image.id());
        let arg = arg as usize;
        let watched = {
            let (io, header) = (io.clone(), header.clone());
            block_on(async move { io.watch(&header, None).await })
        };
        let mut watch = match watched {
            Ok(w) => w,
            Err(e) => return client_errno(&e),
        };
        let cookie = watch.cookie();
        let task_io = io.clone();
        let task = crate::runtime().spawn(async move {
            while let Some(event) = watch.next().await {
                let quarry_client::WatchEvent::Notify { notify_id, payload, .. } = event else {
                    break;
                };
                let _ = task_io.notify_ack(cookie, notify_id, &[]).await;
                if matches!(
                    quarry_rbd::lock::ImageNotify::decode(&payload),
                    Some(quarry_rbd::lock::ImageNotify::HeaderUpdate { .. })
                ) {
                    crate::aio::post(Box::new(move || {
                        // SAFETY: the caller's callback with its argument (librbd.h); it
                        // stays valid until rbd_update_unwatch.
                        unsafe { cb(arg as *mut c_void) }
                    }));
                }
            }
        });
        update_watches()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cookie, (task, io, cookie, image as usize));
        // SAFETY: non-NULL out-parameter.
        unsafe { *out = cookie };
        0
    })
}

/// `rbd_update_unwatch(image, handle)`: no callback starts after it returns; `-ENOENT` for
/// an unknown handle.
#[no_mangle]
pub unsafe extern "C" fn rbd_update_unwatch(image: *mut c_void, handle_id: u64) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        if unsafe { handle(image) }.is_err() {
            return EINVAL;
        }
        let Some((task, io, cookie, _)) =
            update_watches().lock().unwrap_or_else(|p| p.into_inner()).remove(&handle_id)
        else {
            return -libc::ENOENT;
        };
        end_update_watch(task, io, cookie);
        0
    })
}

// ---- watchers and the trash ----

/// librbd's `rbd_image_watcher_t`.
#[repr(C)]
pub struct WatcherC {
    addr: *mut c_char,
    id: i64,
    cookie: u64,
}

/// `rbd_watchers_list(image, watchers, max_watchers)`: the header's watchers (open
/// read-write handles); `-ERANGE` with `*max_watchers` set when short.
#[no_mangle]
pub unsafe extern "C" fn rbd_watchers_list(
    image: *mut c_void,
    out: *mut WatcherC,
    max: *mut usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let h = c_try!(unsafe { handle(image) });
        if max.is_null() {
            return EINVAL;
        }
        let io = h.image.ioctx().clone();
        let header = quarry_rbd::names::header_object(h.image.id());
        let list = match block_on(async move { io.list_watchers(&header).await }) {
            Ok(l) => l,
            Err(e) => return client_errno(&e),
        };
        // SAFETY: `max` checked non-NULL; `out` has room for `*max` entries (librbd.h).
        unsafe {
            crate::fill_entries(out, max, &list, |w| WatcherC {
                addr: malloc_str(&w.addr),
                id: w.global_id as i64,
                cookie: w.cookie,
            })
        }
    })
}

/// `rbd_watchers_list_cleanup(watchers, num_watchers)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_watchers_list_cleanup(watchers: *mut WatcherC, n: usize) {
    ffi!((), {
        if watchers.is_null() {
            return;
        }
        for i in 0..n {
            // SAFETY: entries filled by rbd_watchers_list.
            unsafe {
                let w = &mut *watchers.add(i);
                libc::free(w.addr.cast());
                w.addr = std::ptr::null_mut();
            }
        }
    })
}

/// librbd's `rbd_trash_image_info_t`.
#[repr(C)]
pub struct TrashInfoC {
    id: *mut c_char,
    name: *mut c_char,
    source: c_int,
    deletion_time: libc::time_t,
    deferment_end_time: libc::time_t,
}

fn trash_info(id: &str, entry: &quarry_rbd::TrashEntry) -> TrashInfoC {
    TrashInfoC {
        id: malloc_str(id),
        name: malloc_str(&entry.name),
        source: match entry.source {
            quarry_rbd::TrashSource::User => 0,
            quarry_rbd::TrashSource::Removing => 3,
        },
        deletion_time: entry.deletion_time.0 as libc::time_t,
        deferment_end_time: entry.deferment_end_time.0 as libc::time_t,
    }
}

/// `rbd_trash_move(io, name, delay)`: `-EBUSY` while the image is open for writing.
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_move(io: *mut c_void, name: *const c_char, delay: u64) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        let (io, name) = match unsafe { (io_of(io), cstr(name)) } {
            (Ok(io), Ok(n)) => (io, n.to_string()),
            _ => return EINVAL,
        };
        code(block_on(async move { pool::trash_move(&io, &name, delay).await }))
    })
}

/// `rbd_trash_list(io, entries, num_entries)`: `-ERANGE` with `*num_entries` set when short.
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_list(
    io: *mut c_void,
    out: *mut TrashInfoC,
    max: *mut usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let io = c_try!(unsafe { io_of(io) });
        if max.is_null() {
            return EINVAL;
        }
        let list = match block_on(async move { pool::trash_list(&io).await }) {
            Ok(l) => l,
            Err(e) => return rbd_errno(&e),
        };
        // SAFETY: `max` checked non-NULL; `out` has room for `*max` entries (librbd.h).
        match unsafe { crate::fill_entries(out, max, &list, |e| trash_info(&e.id, &e.entry)) } {
            0 => list.len() as c_int,
            short => short,
        }
    })
}

/// `rbd_trash_get(io, id, info)`: `-ENOENT` if no such entry.
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_get(
    io: *mut c_void,
    id: *const c_char,
    out: *mut TrashInfoC,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        let (io, id) = match unsafe { (io_of(io), cstr(id)) } {
            (Ok(io), Ok(i)) => (io, i.to_string()),
            _ => return EINVAL,
        };
        if out.is_null() {
            return EINVAL;
        }
        let list = match block_on(async move { pool::trash_list(&io).await }) {
            Ok(l) => l,
            Err(e) => return rbd_errno(&e),
        };
        match list.iter().find(|item| item.id == id) {
            Some(item) => {
                // SAFETY: non-NULL out-parameter.
                unsafe { out.write(trash_info(&item.id, &item.entry)) };
                0
            }
            None => -libc::ENOENT,
        }
    })
}

/// `rbd_trash_list_cleanup(entries, num_entries)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_list_cleanup(entries: *mut TrashInfoC, n: usize) {
    ffi!((), {
        if entries.is_null() {
            return;
        }
        for i in 0..n {
            // SAFETY: entries filled by rbd_trash_list / rbd_trash_get.
            unsafe {
                let e = &mut *entries.add(i);
                libc::free(e.id.cast());
                libc::free(e.name.cast());
                e.id = std::ptr::null_mut();
                e.name = std::ptr::null_mut();
            }
        }
    })
}

/// `rbd_trash_get_cleanup(info)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_get_cleanup(info: *mut TrashInfoC) {
    // SAFETY: forwarded contract.
    unsafe { rbd_trash_list_cleanup(info, 1) }
}

/// `rbd_trash_restore(io, id, name)`: back under `name` ("" keeps the old name).
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_restore(
    io: *mut c_void,
    id: *const c_char,
    name: *const c_char,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        let (io, id, name) = match unsafe { (io_of(io), cstr(id), crate::opt_cstr(name)) } {
            (Ok(io), Ok(i), Ok(n)) => (io, i.to_string(), n.map(str::to_string)),
            _ => return EINVAL,
        };
        code(block_on(async move { pool::trash_restore(&io, &id, name.as_deref()).await }))
    })
}

/// `rbd_trash_remove_with_progress(io, id, force, cb, data)`: `-EPERM` before the deferment
/// ends unless `force`.
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_remove_with_progress(
    io: *mut c_void,
    id: *const c_char,
    force: bool,
    _cb: *mut c_void,
    _data: *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librbd.h.
        let (io, id) = match unsafe { (io_of(io), cstr(id)) } {
            (Ok(io), Ok(i)) => (io, i.to_string()),
            _ => return EINVAL,
        };
        code(block_on(async move { pool::trash_remove(&io, &id, force, |_, _| {}).await }))
    })
}

/// `rbd_trash_remove(io, id, force)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_trash_remove(
    io: *mut c_void,
    id: *const c_char,
    force: bool,
) -> c_int {
    // SAFETY: forwarded contracts.
    unsafe {
        rbd_trash_remove_with_progress(io, id, force, std::ptr::null_mut(), std::ptr::null_mut())
    }
}

// ---- children ----

/// `rbd_list_children3(image, images, max_images)`: the clones of the open snapshot (of
/// every snapshot when the head is open), with pool and image names (`trash` true when the
/// child is in the trash); `-ERANGE` with `*max_images` set when short. Strings are freed by
/// `rbd_linked_image_spec_list_cleanup`.
#[no_mangle]
pub unsafe extern "C" fn rbd_list_children3(
    image: *mut c_void,
    out: *mut LinkedImageSpecC,
    max: *mut usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librbd.h.
        let h = c_try!(unsafe { handle(image) });
        if max.is_null() {
            return EINVAL;
        }
        let img = h.image.clone();
        let found = block_on(async move {
            let io = img.ioctx().clone();
            let snaps: Vec<u64> = match img.snap_id() {
                Some(id) => vec![id],
                None => img.snapshots().await.iter().map(|s| s.id).collect(),
            };
            let mut out = Vec::new();
            for snap_id in snaps {
                let spec = quarry_rbd::ParentSpec {
                    pool: io.pool_id(),
                    namespace: io.namespace().to_string(),
                    image_id: img.id().to_string(),
                    snap_id,
                };
                for child in pool::children(&io, &spec).await? {
                    let mut cio = io.rados().ioctx_by_id(child.pool)?;
                    cio.set_namespace(&child.namespace)?;
                    let name = pool::image_name(&cio, &child.image_id).await.ok();
                    out.push((child, cio.pool_name().to_string(), name));
                }
            }
            Ok::<_, quarry_rbd::RbdError>(out)
        });
        let list = match found {
            Ok(l) => l,
            Err(e) => return rbd_errno(&e),
        };
        // SAFETY: `max` checked non-NULL; `out` has room for `*max` entries (librbd.h).
        unsafe {
            crate::fill_entries(out, max, &list, |(child, pool_name, name)| LinkedImageSpecC {
                pool_id: child.pool as i64,
                pool_name: malloc_str(pool_name),
                pool_namespace: malloc_str(&child.namespace),
                image_id: malloc_str(&child.image_id),
                image_name: malloc_str(name.as_deref().unwrap_or("")),
                trash: name.is_none(),
            })
        }
    })
}

/// `rbd_linked_image_spec_list_cleanup(images, num_images)`.
#[no_mangle]
pub unsafe extern "C" fn rbd_linked_image_spec_list_cleanup(
    images: *mut LinkedImageSpecC,
    n: usize,
) {
    ffi!((), {
        if images.is_null() {
            return;
        }
        for i in 0..n {
            // SAFETY: entries filled by this library.
            unsafe { rbd_linked_image_spec_cleanup(images.add(i)) };
        }
    })
}

/// Ends the update watches a caller left on `image` (called by `rbd_close`).
pub(crate) fn end_update_watches(image: *mut c_void) {
    let ended: Vec<UpdateWatch> = {
        let mut map = update_watches().lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<u64> =
            map.iter().filter(|(_, w)| w.3 == image as usize).map(|(k, _)| *k).collect();
        keys.iter().filter_map(|k| map.remove(k)).collect()
    };
    for (task, io, cookie, _) in ended {
        end_update_watch(task, io, cookie);
    }
}

/// Ends one update watch so that no callback of it runs afterwards: the watch task is
/// aborted *and waited for* (a task past its last await could still post a callback), the
/// watch removed, then a marker posted to the callback thread is waited for, so callbacks
/// queued before it have run (not on the callback thread itself, where they have: an
/// update callback ending a watch; an I/O callback on a runtime worker waits like any
/// caller).
fn end_update_watch(task: tokio::task::JoinHandle<()>, io: quarry_client::IoCtx, cookie: u64) {
    task.abort();
    let _ = block_on(async move {
        let _ = task.await;
        io.unwatch(cookie).await
    });
    if !crate::aio::on_callback_thread() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        crate::aio::post(Box::new(move || {
            let _ = tx.send(());
        }));
        let _ = crate::blocking_wait(|| rx.recv());
    }
}
