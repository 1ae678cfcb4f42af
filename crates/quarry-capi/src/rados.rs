//! Cluster handles (`rados_t`) and I/O contexts (`rados_ioctx_t`): creation, configuration as
//! librados takes it (`rados_conf_read_file`, `rados_conf_set`, `rados_conf_get`), connect,
//! shutdown, pools and namespaces.
//!
//! Configuration: `quarry_conf::Conf` holds the file and the runtime overrides
//! (`rados_conf_set`). Keys Quarry does not know are accepted and stored (QEMU treats a
//! refused key as fatal, and users pass Ceph options Quarry has no use for); `rados_conf_get`
//! returns them. `rbd_cache*` keys are kept for the image cache ([`Cluster::option`]).
//! `rados_connect` builds a `quarry_client::ClientConfig` from the merged configuration and
//! the entity given to `rados_create`/`rados_create2`.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void};
use std::sync::{Mutex, MutexGuard, RwLock};

use quarry_client::{ClientConfig, ClientError, IoCtx, Rados};
use quarry_conf::{CommonArgs, Conf, ConfError};
use quarry_types::{EntityName, ErrorCode};

use crate::{block_on, copy_out, cstr, ffi, neg, opt_cstr, EINVAL};

/// What a `rados_t` points to.
pub struct Cluster {
    state: Mutex<ClusterState>,
}

struct ClusterState {
    conf: Conf,
    args: CommonArgs,
    /// Keys Quarry does not know, by normalised name (`rados_conf_set` stores them).
    extra: BTreeMap<String, String>,
    rados: Option<Rados>,
}

impl Cluster {
    fn new(args: CommonArgs) -> Result<Cluster, c_int> {
        // The entity must be a valid name now (librados fails rados_create2 for a bad one).
        quarry_conf::resolve_entity(&args).map_err(|_| EINVAL)?;
        let mut conf = Conf::default();
        conf.set_cluster(&args.cluster);
        Ok(Cluster {
            state: Mutex::new(ClusterState { conf, args, extra: BTreeMap::new(), rados: None }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entity(&self) -> EntityName {
        let state = self.lock();
        quarry_conf::resolve_entity(&state.args).unwrap_or_else(|_| EntityName::client("admin"))
    }

    /// The value of option `key` for this handle's entity (set, from the file, or stored
    /// unknown), or None.
    pub fn option(&self, key: &str) -> Option<String> {
        self.options().get(key)
    }

    /// The configuration as it is now, for an I/O context to keep.
    pub fn options(&self) -> Options {
        let entity = self.entity();
        let state = self.lock();
        Options { conf: state.conf.clone(), extra: state.extra.clone(), entity }
    }

    /// The connected client (ENOTCONN before `rados_connect`).
    pub fn rados(&self) -> Result<Rados, c_int> {
        self.lock().rados.clone().ok_or(-libc::ENOTCONN)
    }
}

/// A snapshot of a cluster handle's configuration (file, `rados_conf_set` values, stored
/// unknown keys), taken when an I/O context is made: images opened through the context read
/// their `rbd_*` options here (`rbd_cache`, `rbd_cache_size`, ... for the client cache).
#[derive(Clone, Debug)]
pub struct Options {
    conf: Conf,
    extra: BTreeMap<String, String>,
    entity: EntityName,
}

impl Options {
    /// The value of `key` (set, from the file, stored unknown, or the option's default).
    pub fn get(&self, key: &str) -> Option<String> {
        let key = quarry_conf::normalize_key(key);
        self.conf
            .get(&self.entity, &key)
            .or_else(|| self.extra.get(&key).cloned())
            .or_else(|| self.conf.get_or_default(&self.entity, &key))
    }

    /// A boolean option (`true`/`false`/`1`/`0`...), None if unset or not a boolean.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| quarry_conf::parse_bool(&v).ok())
    }
}

/// What a `rados_ioctx_t` points to: a pool, a namespace, the cluster handle's client, and
/// its configuration when the context was made.
pub struct Ioctx {
    io: RwLock<IoCtx>,
    options: Options,
}

impl Ioctx {
    /// The configuration of the cluster handle this context was made from.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// A copy of the context as it is now (namespace included).
    pub fn get(&self) -> IoCtx {
        self.io.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The errno of a client error, negated.
pub fn client_errno(e: &ClientError) -> c_int {
    neg(e.errno())
}

fn conf_errno(e: &ConfError) -> c_int {
    match e {
        ConfError::NotFound { .. } | ConfError::UnknownOption { .. } => -libc::ENOENT,
        ConfError::Io { source, .. } => -source.raw_os_error().unwrap_or(libc::EIO),
        _ => EINVAL,
    }
}

/// # Safety
/// `p` is NULL or a live `rados_t` from this library.
pub unsafe fn cluster<'a>(p: *mut c_void) -> Result<&'a Cluster, c_int> {
    // SAFETY: by contract `p` is NULL or points to a Cluster we boxed and not yet freed.
    unsafe { p.cast::<Cluster>().as_ref() }.ok_or(EINVAL)
}

/// # Safety
/// `p` is NULL or a live `rados_ioctx_t` from this library.
pub unsafe fn ioctx<'a>(p: *mut c_void) -> Result<&'a Ioctx, c_int> {
    // SAFETY: by contract `p` is NULL or points to an Ioctx we boxed and not yet freed.
    unsafe { p.cast::<Ioctx>().as_ref() }.ok_or(EINVAL)
}

unsafe fn create_with(out: *mut *mut c_void, args: CommonArgs) -> c_int {
    if out.is_null() {
        return EINVAL;
    }
    match Cluster::new(args) {
        Ok(cluster) => {
            let p = Box::into_raw(Box::new(cluster)).cast::<c_void>();
            // SAFETY: `out` is non-NULL and writable by the caller's contract.
            unsafe { *out = p };
            0
        }
        Err(e) => e,
    }
}

/// `rados_create(cluster, id)`: `id` without the `client.` prefix; NULL is `admin`.
#[no_mangle]
pub unsafe extern "C" fn rados_create(out: *mut *mut c_void, id: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: `id` is NULL or a C string (librados.h).
        let id = c_try!(unsafe { opt_cstr(id) });
        let args = CommonArgs { id: Some(id.unwrap_or("admin").to_string()), ..Default::default() };
        // SAFETY: forwarded contract on `out`.
        unsafe { create_with(out, args) }
    })
}

/// `rados_create2(cluster, clustername, name, flags)`: `name` is the full `TYPE.ID`.
#[no_mangle]
pub unsafe extern "C" fn rados_create2(
    out: *mut *mut c_void,
    clustername: *const c_char,
    name: *const c_char,
    _flags: u64,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: NULL or C strings (librados.h).
        let (cluster, name) = match unsafe { (opt_cstr(clustername), opt_cstr(name)) } {
            (Ok(c), Ok(n)) => (c, n),
            _ => return EINVAL,
        };
        let args = CommonArgs {
            name: Some(name.unwrap_or("client.admin").to_string()),
            cluster: cluster.unwrap_or("ceph").to_string(),
            ..Default::default()
        };
        // SAFETY: forwarded contract on `out`.
        unsafe { create_with(out, args) }
    })
}

/// `rados_conf_read_file(cluster, path)`: NULL searches as librados does (`$CEPH_CONF`,
/// `/etc/ceph/$cluster.conf`, `~/.ceph/$cluster.conf`, `./$cluster.conf`) and is `-ENOENT`
/// when none exists; a comma-separated list takes the first file that exists. Options set
/// before stay set.
#[no_mangle]
pub unsafe extern "C" fn rados_conf_read_file(cluster: *mut c_void, path: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (c, path) = match unsafe { (self::cluster(cluster), opt_cstr(path)) } {
            (Ok(c), Ok(p)) => (c, p),
            _ => return EINVAL,
        };
        let mut state = c.lock();
        let loaded = match path {
            None => Conf::load(None, &state.args.cluster),
            Some(list) => {
                let found = list
                    .split([',', ';', ' '])
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .find(|p| std::path::Path::new(p).exists());
                match found {
                    Some(p) => Conf::load(Some(std::path::Path::new(p)), &state.args.cluster),
                    None => return -libc::ENOENT,
                }
            }
        };
        match loaded {
            Ok((_, None)) => -libc::ENOENT,
            Ok((mut conf, Some(_))) => {
                for (k, v) in state.conf.overrides().clone() {
                    let _ = conf.set_override(&k, &v);
                }
                state.conf = conf;
                0
            }
            Err(e) => conf_errno(&e),
        }
    })
}

/// `rados_conf_set(cluster, option, value)`: known options are checked (`-EINVAL` for a
/// value of the wrong type); unknown ones are stored and reported by `rados_conf_get`.
#[no_mangle]
pub unsafe extern "C" fn rados_conf_set(
    cluster: *mut c_void,
    option: *const c_char,
    value: *const c_char,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (c, option, value) =
            match unsafe { (self::cluster(cluster), cstr(option), cstr(value)) } {
                (Ok(c), Ok(o), Ok(v)) => (c, o, v),
                _ => return EINVAL,
            };
        let mut state = c.lock();
        let key = quarry_conf::normalize_key(option);
        // Entity options change who we are, as in Ceph's config.
        match key.as_str() {
            "name" => {
                state.args.name = Some(value.to_string());
                state.args.id = None;
                return 0;
            }
            "id" => {
                state.args.id = Some(value.to_string());
                state.args.name = None;
                return 0;
            }
            _ => {}
        }
        match state.conf.set_override(&key, value) {
            Ok(()) => 0,
            Err(ConfError::UnknownOption { .. }) => {
                state.extra.insert(key, value.to_string());
                0
            }
            Err(e) => conf_errno(&e),
        }
    })
}

/// `rados_conf_get(cluster, option, buf, len)`: `-ENOENT` for an option never set and
/// without a default, `-ENAMETOOLONG` when `buf` is too small.
#[no_mangle]
pub unsafe extern "C" fn rados_conf_get(
    cluster: *mut c_void,
    option: *const c_char,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (c, option) = match unsafe { (self::cluster(cluster), cstr(option)) } {
            (Ok(c), Ok(o)) => (c, o),
            _ => return EINVAL,
        };
        let Some(value) = c.option(option) else {
            return -libc::ENOENT;
        };
        // SAFETY: `buf` is valid for `len` bytes (librados.h).
        match unsafe { copy_out(&value, buf, len) } {
            Ok(()) => 0,
            Err(_) => -libc::ENAMETOOLONG,
        }
    })
}

/// `rados_connect(cluster)`: finds the key, authenticates to a monitor, fetches the map.
/// A refused key (wrong, or an unknown user) is `-EACCES` at once, as librados; no monitor
/// within `client_mount_timeout` `-ETIMEDOUT`.
#[no_mangle]
pub unsafe extern "C" fn rados_connect(cluster: *mut c_void) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let c = c_try!(unsafe { self::cluster(cluster) });
        let (conf, args) = {
            let state = c.lock();
            if state.rados.is_some() {
                return -libc::EISCONN;
            }
            (state.conf.clone(), state.args.clone())
        };
        let cfg = match ClientConfig::from_conf(&conf, &args) {
            Ok(cfg) => cfg,
            Err(e) => {
                tracing::debug!(error = %e, "rados_connect: configuration");
                return client_errno(&e);
            }
        };
        match crate::block_on(Rados::connect(cfg)) {
            Ok(rados) => {
                // The central config (`ceph config set client …`) under the file's values
                // and `rados_conf_set`'s, for what is read later (the rbd cache options).
                let mut state = c.lock();
                state.conf.set_central(rados.central_config().clone());
                state.rados = Some(rados);
                0
            }
            Err(e) => {
                tracing::debug!(error = %e, "rados_connect");
                client_errno(&e)
            }
        }
    })
}

/// `rados_shutdown(cluster)`: disconnects and frees the handle.
#[no_mangle]
pub unsafe extern "C" fn rados_shutdown(cluster: *mut c_void) {
    ffi!((), {
        if cluster.is_null() {
            return;
        }
        // SAFETY: a live handle from rados_create*, freed exactly once here (librados.h).
        let c = unsafe { Box::from_raw(cluster.cast::<Cluster>()) };
        let rados = c.lock().rados.take();
        if let Some(rados) = rados {
            block_on(async move { rados.shutdown().await });
        }
    })
}

/// `rados_version(major, minor, extra)`: the librados version whose API this provides.
#[no_mangle]
pub unsafe extern "C" fn rados_version(major: *mut c_int, minor: *mut c_int, extra: *mut c_int) {
    ffi!((), {
        for (p, v) in [(major, 3), (minor, 0), (extra, 0)] {
            if !p.is_null() {
                // SAFETY: non-NULL out-parameter (librados.h).
                unsafe { *p = v };
            }
        }
    })
}

fn new_ioctx(out: *mut *mut c_void, io: Result<IoCtx, ClientError>, options: Options) -> c_int {
    match io {
        Ok(io) => {
            let p =
                Box::into_raw(Box::new(Ioctx { io: RwLock::new(io), options })).cast::<c_void>();
            // SAFETY: `out` checked non-NULL by the callers.
            unsafe { *out = p };
            0
        }
        Err(e) => client_errno(&e),
    }
}

/// `rados_ioctx_create(cluster, pool_name, ioctx)`: `-ENOENT` for an unknown pool.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_create(
    cluster: *mut c_void,
    pool: *const c_char,
    out: *mut *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (c, pool) = match unsafe { (self::cluster(cluster), cstr(pool)) } {
            (Ok(c), Ok(p)) => (c, p),
            _ => return EINVAL,
        };
        if out.is_null() {
            return EINVAL;
        }
        let rados = c_try!(c.rados());
        new_ioctx(out, block_on(async move { rados.ioctx(pool).await }), c.options())
    })
}

/// `rados_ioctx_create2(cluster, pool_id, ioctx)`.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_create2(
    cluster: *mut c_void,
    pool_id: i64,
    out: *mut *mut c_void,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let c = c_try!(unsafe { self::cluster(cluster) });
        if out.is_null() || pool_id < 0 {
            return if out.is_null() { EINVAL } else { -libc::ENOENT };
        }
        let rados = c_try!(c.rados());
        new_ioctx(out, rados.ioctx_by_id(pool_id as u64), c.options())
    })
}

/// `rados_ioctx_destroy(ioctx)`: images opened through it stay usable (they hold their own
/// copy, as librbd's do).
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_destroy(io: *mut c_void) {
    ffi!((), {
        if !io.is_null() {
            // SAFETY: a live handle from rados_ioctx_create*, freed exactly once (librados.h).
            drop(unsafe { Box::from_raw(io.cast::<Ioctx>()) });
        }
    })
}

/// `rados_ioctx_set_namespace(ioctx, nspace)`: NULL or "" is the default namespace.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_set_namespace(io: *mut c_void, nspace: *const c_char) {
    ffi!((), {
        // SAFETY: contracts of librados.h.
        let (Ok(io), Ok(ns)) = (unsafe { ioctx(io) }, unsafe { opt_cstr(nspace) }) else {
            return;
        };
        let mut guard = io.io.write().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = guard.set_namespace(ns.unwrap_or("")) {
            tracing::warn!(error = %e, "rados_ioctx_set_namespace refused");
        }
    })
}

/// `rados_ioctx_get_namespace(ioctx, buf, maxlen)`: the length written, `-ERANGE` if short.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_get_namespace(
    io: *mut c_void,
    buf: *mut c_char,
    len: u32,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let io = c_try!(unsafe { ioctx(io) }).get();
        let ns = io.namespace().to_string();
        // SAFETY: `buf` valid for `len` bytes (librados.h).
        match unsafe { copy_out(&ns, buf, len as usize) } {
            Ok(()) => ns.len() as c_int,
            Err(e) => e,
        }
    })
}

/// `rados_ioctx_get_id(ioctx)`: the pool id.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_get_id(io: *mut c_void) -> i64 {
    ffi!(EINVAL as i64, {
        // SAFETY: contract of librados.h.
        match unsafe { ioctx(io) } {
            Ok(io) => io.get().pool_id() as i64,
            Err(e) => e as i64,
        }
    })
}

/// `rados_ioctx_get_pool_name(ioctx, buf, maxlen)`: the length written, `-ERANGE` if short.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_get_pool_name(
    io: *mut c_void,
    buf: *mut c_char,
    len: u32,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let io = c_try!(unsafe { ioctx(io) }).get();
        let name = io.pool_name().to_string();
        // SAFETY: `buf` valid for `len` bytes (librados.h).
        match unsafe { copy_out(&name, buf, len as usize) } {
            Ok(()) => name.len() as c_int,
            Err(e) => e,
        }
    })
}

/// `rados_pool_lookup(cluster, name)`: the pool id, `-ENOENT` if there is none.
#[no_mangle]
pub unsafe extern "C" fn rados_pool_lookup(cluster: *mut c_void, name: *const c_char) -> i64 {
    ffi!(EINVAL as i64, {
        // SAFETY: contracts of librados.h.
        let (c, name) = match unsafe { (self::cluster(cluster), cstr(name)) } {
            (Ok(c), Ok(n)) => (c, n),
            _ => return EINVAL as i64,
        };
        let rados = match c.rados() {
            Ok(r) => r,
            Err(e) => return e as i64,
        };
        match block_on(async move { rados.lookup_pool(name).await }) {
            Ok(id) => id as i64,
            Err(e) => client_errno(&e) as i64,
        }
    })
}

/// An errno for an `ErrorCode` in `i64` form.
pub fn neg64(code: ErrorCode) -> i64 {
    -(code.0 as i64)
}

/// A `malloc`ed copy of `data` (NULL for empty data, as librados gives).
fn malloc_bytes(data: &[u8]) -> *mut c_char {
    if data.is_empty() {
        return std::ptr::null_mut();
    }
    // SAFETY: malloc of `len` bytes; on success exactly that many are written.
    unsafe {
        let p = libc::malloc(data.len()).cast::<c_char>();
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(data.as_ptr(), p.cast::<u8>(), data.len());
        }
        p
    }
}

/// `rados_mon_command(cluster, cmd, cmdlen, inbuf, inbuflen, outbuf, outbuflen, outs,
/// outslen)`: Ceph's JSON monitor command (`{"prefix": "osd pool ls", "format": "json"}`);
/// `outbuf` holds the bytes `ceph … -f json` prints (the same implementation,
/// `quarry_client::Rados::mon_command`), `outs` the status line; both freed with
/// `rados_buffer_free`. Returns 0 or the command's negative errno.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rados_mon_command(
    cluster: *mut c_void,
    cmd: *const *const c_char,
    cmdlen: usize,
    inbuf: *const c_char,
    inbuflen: usize,
    outbuf: *mut *mut c_char,
    outbuflen: *mut usize,
    outs: *mut *mut c_char,
    outslen: *mut usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let c = c_try!(unsafe { self::cluster(cluster) });
        if cmd.is_null() || cmdlen == 0 {
            return EINVAL;
        }
        let mut parts = Vec::with_capacity(cmdlen);
        for i in 0..cmdlen {
            // SAFETY: `cmd` holds `cmdlen` C strings (librados.h).
            match unsafe { cstr(*cmd.add(i)) } {
                Ok(s) => parts.push(s.to_string()),
                Err(e) => return e,
            }
        }
        let text =
            if parts.len() == 1 { parts.remove(0) } else { format!("[{}]", parts.join(",")) };
        let input = if inbuflen == 0 || inbuf.is_null() {
            Vec::new()
        } else {
            // SAFETY: `inbuf` holds `inbuflen` bytes (librados.h).
            unsafe { std::slice::from_raw_parts(inbuf.cast::<u8>(), inbuflen) }.to_vec()
        };
        let rados = c_try!(c.rados());
        let reply = block_on(async move { rados.mon_command(&text, &input).await });
        // SAFETY: out-parameters are NULL or writable (librados.h).
        unsafe {
            if !outbuf.is_null() {
                *outbuf = malloc_bytes(&reply.outbuf);
            }
            if !outbuflen.is_null() {
                *outbuflen = reply.outbuf.len();
            }
            if !outs.is_null() {
                *outs = malloc_bytes(reply.outs.as_bytes());
            }
            if !outslen.is_null() {
                *outslen = reply.outs.len();
            }
        }
        reply.rc
    })
}

/// `rados_buffer_free(buf)`: frees a buffer this library returned.
#[no_mangle]
pub unsafe extern "C" fn rados_buffer_free(buf: *mut c_char) {
    // SAFETY: NULL or a buffer this library malloc'ed (librados.h).
    ffi!((), { unsafe { libc::free(buf.cast()) } })
}

// ---- pools, the cluster, object listing ----

/// `rados_pool_list(cluster, buf, len)`: the pool names, each ended by a NUL, then an empty
/// name; returns the room that needs (as librados: compare it with `len`).
#[no_mangle]
pub unsafe extern "C" fn rados_pool_list(
    cluster: *mut c_void,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let c = c_try!(unsafe { self::cluster(cluster) });
        let rados = c_try!(c.rados());
        let names: Vec<String> = rados.map().pools.values().map(|p| p.name.clone()).collect();
        let needed: usize = names.iter().map(|n| n.len() + 1).sum::<usize>() + 1;
        if buf.is_null() || len == 0 {
            return needed as c_int;
        }
        // Copy the names that fit whole, then the closing NUL (librados does the same).
        let mut at = 0;
        for n in &names {
            if at + n.len() + 2 > len {
                break;
            }
            // SAFETY: `buf` holds `len` bytes and `at + n.len() + 1 < len`.
            unsafe {
                std::ptr::copy_nonoverlapping(n.as_ptr(), buf.add(at).cast::<u8>(), n.len());
                *buf.add(at + n.len()) = 0;
            }
            at += n.len() + 1;
        }
        // SAFETY: `at < len` (each copy left room for this byte).
        unsafe { *buf.add(at) = 0 };
        needed as c_int
    })
}

/// Runs a monitor command given as JSON; its return code.
fn mon(c: &Cluster, json: String) -> c_int {
    let rados = c_try!(c.rados());
    block_on(async move { rados.mon_command(&json, &[]).await.rc })
}

/// `rados_pool_create(cluster, name)`: `-EEXIST` if it exists.
#[no_mangle]
pub unsafe extern "C" fn rados_pool_create(cluster: *mut c_void, name: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (Ok(c), Ok(name)) = (unsafe { self::cluster(cluster) }, unsafe { cstr(name) }) else {
            return EINVAL;
        };
        let rados = c_try!(c.rados());
        if rados.map().pools.values().any(|p| p.name == name) {
            return -libc::EEXIST;
        }
        let json = format!(r#"{{"prefix": "osd pool create", "pool": {}}}"#, json_str(name));
        mon(c, json)
    })
}

/// `rados_pool_delete(cluster, name)`: `-ENOENT` if there is no such pool.
#[no_mangle]
pub unsafe extern "C" fn rados_pool_delete(cluster: *mut c_void, name: *const c_char) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contracts of librados.h.
        let (Ok(c), Ok(name)) = (unsafe { self::cluster(cluster) }, unsafe { cstr(name) }) else {
            return EINVAL;
        };
        let n = json_str(name);
        let json = format!(
            r#"{{"prefix": "osd pool rm", "pool": {n}, "pool2": {n}, "yes_i_really_really_mean_it": true}}"#
        );
        mon(c, json)
    })
}

/// A JSON string literal of `s`.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `rados_pool_reverse_lookup(cluster, id, buf, maxlen)`: the name's length, `-ENOENT`,
/// `-ERANGE` when short.
#[no_mangle]
pub unsafe extern "C" fn rados_pool_reverse_lookup(
    cluster: *mut c_void,
    id: i64,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let c = c_try!(unsafe { self::cluster(cluster) });
        let rados = c_try!(c.rados());
        let Some(name) = rados.map().pools.get(&(id as u64)).map(|p| p.name.clone()) else {
            return -libc::ENOENT;
        };
        // SAFETY: `buf` holds `len` bytes.
        match unsafe { copy_out(&name, buf, len) } {
            Ok(()) => name.len() as c_int,
            Err(e) => e,
        }
    })
}

/// `rados_cluster_fsid(cluster, buf, len)`: the fsid's length, `-ERANGE` when short.
#[no_mangle]
pub unsafe extern "C" fn rados_cluster_fsid(
    cluster: *mut c_void,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let c = c_try!(unsafe { self::cluster(cluster) });
        let rados = c_try!(c.rados());
        let fsid = rados.map().fsid.clone();
        // SAFETY: `buf` holds `len` bytes.
        match unsafe { copy_out(&fsid, buf, len) } {
            Ok(()) => fsid.len() as c_int,
            Err(e) => e,
        }
    })
}

/// `rados_wait_for_latest_osdmap(cluster)`: the client follows the newest map already.
#[no_mangle]
pub unsafe extern "C" fn rados_wait_for_latest_osdmap(cluster: *mut c_void) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        match unsafe { self::cluster(cluster) }.and_then(|c| c.rados()) {
            Ok(_) => 0,
            Err(e) => e,
        }
    })
}

/// An object listing in progress (`rados_list_ctx_t`): the names of the context's
/// namespace, read at open.
pub struct ListCtx {
    names: Vec<String>,
    next: usize,
    namespace: std::ffi::CString,
    current: Option<std::ffi::CString>,
}

/// `rados_nobjects_list_open(io, ctx)`.
#[no_mangle]
pub unsafe extern "C" fn rados_nobjects_list_open(io: *mut c_void, out: *mut *mut c_void) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let io = c_try!(unsafe { ioctx(io) }).get();
        if out.is_null() {
            return EINVAL;
        }
        let namespace = std::ffi::CString::new(io.namespace()).unwrap_or_default();
        match block_on(async move { io.list_objects().await }) {
            Ok(names) => {
                let ctx = ListCtx { names, next: 0, namespace, current: None };
                // SAFETY: non-NULL out-parameter.
                unsafe { *out = Box::into_raw(Box::new(ctx)).cast() };
                0
            }
            Err(e) => client_errno(&e),
        }
    })
}

/// `rados_nobjects_list_next(ctx, entry, key, nspace)`: `-ENOENT` at the end; the strings
/// stay valid until the next call.
#[no_mangle]
pub unsafe extern "C" fn rados_nobjects_list_next(
    ctx: *mut c_void,
    entry: *mut *const c_char,
    key: *mut *const c_char,
    nspace: *mut *const c_char,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: a live list context (librados.h).
        let Some(l) = (unsafe { ctx.cast::<ListCtx>().as_mut() }) else {
            return EINVAL;
        };
        let Some(name) = l.names.get(l.next) else {
            return -libc::ENOENT;
        };
        l.next += 1;
        l.current = Some(std::ffi::CString::new(name.as_str()).unwrap_or_default());
        let name_ptr = l.current.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: out-parameters NULL or writable.
        unsafe {
            if !entry.is_null() {
                *entry = name_ptr;
            }
            if !key.is_null() {
                *key = std::ptr::null();
            }
            if !nspace.is_null() {
                *nspace = l.namespace.as_ptr();
            }
        }
        0
    })
}

/// `rados_nobjects_list_close(ctx)`.
#[no_mangle]
pub unsafe extern "C" fn rados_nobjects_list_close(ctx: *mut c_void) {
    ffi!((), {
        if !ctx.is_null() {
            // SAFETY: made by rados_nobjects_list_open, closed once.
            drop(unsafe { Box::from_raw(ctx.cast::<ListCtx>()) });
        }
    })
}

/// `struct rados_cluster_stat_t` of librados.h.
#[repr(C)]
pub struct RadosClusterStat {
    /// Raw capacity of the OSDs, KiB.
    pub kb: u64,
    /// Raw space used, KiB.
    pub kb_used: u64,
    /// Raw space available, KiB.
    pub kb_avail: u64,
    /// Objects stored in all pools.
    pub num_objects: u64,
}

/// `rados_cluster_stat(cluster, result)`: the monitor's usage report (the totals of `ceph
/// df`: raw capacity, used and available as the OSDs last reported them) in KiB. libvirt's
/// rbd pool shows it as the pool's capacity and available space. Needs read access to the
/// monitor (`profile rbd` has it); `-ENOTCONN` before `rados_connect`.
#[no_mangle]
pub unsafe extern "C" fn rados_cluster_stat(
    cluster: *mut c_void,
    result: *mut RadosClusterStat,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let rados = c_try!(unsafe { self::cluster(cluster) }.and_then(|c| c.rados()));
        if result.is_null() {
            return EINVAL;
        }
        let report = match block_on(async move { rados.status_report().await }) {
            Ok(r) => r,
            Err(e) => return client_errno(&e),
        };
        let stat = RadosClusterStat {
            kb: report.used_bytes.saturating_add(report.avail_bytes) / 1024,
            kb_used: report.used_bytes.div_ceil(1024),
            kb_avail: report.avail_bytes / 1024,
            num_objects: report.objects,
        };
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { result.write(stat) };
        0
    })
}

/// `struct rados_pool_stat_t` of librados.h (Ceph 16.2's layout: sixteen `uint64_t`).
#[repr(C)]
#[derive(Default)]
pub struct RadosPoolStat {
    /// Bytes stored (the sum of the objects' sizes).
    pub num_bytes: u64,
    /// The same in KiB, rounded up.
    pub num_kb: u64,
    /// Objects in the pool.
    pub num_objects: u64,
    /// Snapshot clones of objects (not counted: 0).
    pub num_object_clones: u64,
    /// Objects times replicas.
    pub num_object_copies: u64,
    /// Missing on the primary (0).
    pub num_objects_missing_on_primary: u64,
    /// Found on no OSD (0).
    pub num_objects_unfound: u64,
    /// Degraded (0).
    pub num_objects_degraded: u64,
    /// Reads (not counted: 0).
    pub num_rd: u64,
    /// KiB read (0).
    pub num_rd_kb: u64,
    /// Writes (0).
    pub num_wr: u64,
    /// KiB written (0).
    pub num_wr_kb: u64,
    /// Bytes the users stored (= `num_bytes`).
    pub num_user_bytes: u64,
    /// Compression (none: 0).
    pub compressed_bytes_orig: u64,
    /// Compression (none: 0).
    pub compressed_bytes: u64,
    /// Compression (none: 0).
    pub compressed_bytes_alloc: u64,
}

/// `rados_ioctx_pool_stat(ioctx, stats)`: the context's pool's objects and bytes as the OSDs
/// last reported them to the monitor (`rados df`'s numbers; libvirt's pool allocation).
/// `-ENOENT` once the pool is gone.
#[no_mangle]
pub unsafe extern "C" fn rados_ioctx_pool_stat(
    io: *mut c_void,
    stats: *mut RadosPoolStat,
) -> c_int {
    ffi!(EINVAL, {
        // SAFETY: contract of librados.h.
        let io = c_try!(unsafe { ioctx(io) }).get();
        if stats.is_null() {
            return EINVAL;
        }
        let pool = io.pool_id();
        let report = match block_on(async move { io.rados().status_report().await }) {
            Ok(r) => r,
            Err(e) => return client_errno(&e),
        };
        let Some(p) = report.pools.iter().find(|p| p.id == pool) else {
            return -libc::ENOENT;
        };
        let stat = RadosPoolStat {
            num_bytes: p.stored_bytes,
            num_kb: p.stored_bytes.div_ceil(1024),
            num_objects: p.stored_objects,
            num_object_copies: p.stored_objects.saturating_mul(u64::from(p.size.max(1))),
            num_user_bytes: p.stored_bytes,
            ..RadosPoolStat::default()
        };
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { stats.write(stat) };
        0
    })
}
