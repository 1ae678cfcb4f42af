//! Server-side object methods: what Ceph's object classes (`cls_lock`, `cls_numops`, later
//! `cls_rbd`) are to RADOS. A method runs inside the OSD, atomically with the rest of its op
//! vector, on one object: it reads and changes the object's data, xattrs and omap with checks
//! and returns bytes. So clients change shared state (an image header, a lock) without racing
//! each other: two clients' read-modify-write cycles can interleave, two method calls cannot.
//!
//! # What it owns
//! - [`Classes`], the registry the OSD hands to its store (it implements
//!   [`quarry_types::ObjectMethods`]): which methods exist, whether each reads or writes (the
//!   OSD routes writers through the PG log and checks the `x` cap for them), and running them.
//! - The classes, one module each: [`data`] (an atomic append: what `rados append` stands
//!   on), [`lock`] (advisory locks: what `rbd lock`, `rados lock` and the exclusive lock stand
//!   on), [`numops`] (atomic arithmetic on omap values) and [`rbd`] (image
//!   headers, the pool directory, children, trash and object maps: what `quarry-rbd` stands
//!   on).
//! - Each class's request and reply types and how they are encoded ([`codec`]), shared by the
//!   OSD side and the clients that build [`quarry_types::ObjectOp::Call`] ops (helpers such as
//!   [`lock::lock_op`]).
//!
//! # Rules every method follows
//! - Deterministic: every replica runs it on its own copy, so it uses only its input, the
//!   object, the command's clock ([`quarry_types::MethodCtx::mtime`]) and the caller
//!   ([`quarry_types::MethodCtx::origin`], filled in by the OSD from the authenticated session).
//! - Errors are Ceph's errnos: undecodable input EINVAL, an unknown class or method
//!   EOPNOTSUPP (decided before the call is proposed), stored state it cannot parse EBADMSG.
//!   A failing method leaves no trace: the store undoes whatever it wrote.
//! - Inputs, outputs and stored state are `version byte ++ bincode` ([`codec`]), pinned by
//!   golden bytes: stored state (a lock's xattr) follows `quarry_persist`'s upgrade rule.
//!
//! Dependencies: `quarry-types` (the op and method interfaces), `quarry-persist` (the
//! version-byte encoding and golden checks every persisted format here uses), `serde`,
//! `bytes`.

#![warn(missing_docs)]

pub mod codec;
pub mod data;
pub mod lock;
pub mod numops;
pub mod rbd;

use bytes::Bytes;
use quarry_types::{ErrorCode, MethodCtx, MethodFlags, ObjectMethods, ObjectOp};

/// A method's implementation.
type Handler = fn(&mut dyn MethodCtx, &[u8]) -> Result<Bytes, ErrorCode>;

/// One registered method.
struct Method {
    class: &'static str,
    name: &'static str,
    flags: MethodFlags,
    run: Handler,
}

/// Every method this build knows. Sorted by (class, name) for lookup.
const METHODS: &[Method] = &[
    Method { class: "data", name: "append", flags: MethodFlags::RDWR, run: data::append },
    Method {
        class: "lock",
        name: "assert_locked",
        flags: MethodFlags::RD,
        run: lock::assert_locked,
    },
    Method { class: "lock", name: "break_lock", flags: MethodFlags::RDWR, run: lock::break_lock },
    Method { class: "lock", name: "get_info", flags: MethodFlags::RD, run: lock::get_info },
    Method { class: "lock", name: "list_locks", flags: MethodFlags::RD, run: lock::list_locks },
    Method { class: "lock", name: "lock", flags: MethodFlags::RDWR, run: lock::lock },
    Method { class: "lock", name: "set_cookie", flags: MethodFlags::RDWR, run: lock::set_cookie },
    Method { class: "lock", name: "unlock", flags: MethodFlags::RDWR, run: lock::unlock },
    Method { class: "numops", name: "add", flags: MethodFlags::RDWR, run: numops::add },
    Method { class: "numops", name: "mul", flags: MethodFlags::RDWR, run: numops::mul },
    Method {
        class: "rbd",
        name: "add_child",
        flags: MethodFlags::RDWR,
        run: rbd::directory::add_child,
    },
    Method {
        class: "rbd",
        name: "child_attach",
        flags: MethodFlags::RDWR,
        run: rbd::header::child_attach,
    },
    Method {
        class: "rbd",
        name: "child_detach",
        flags: MethodFlags::RDWR,
        run: rbd::header::child_detach,
    },
    Method {
        class: "rbd",
        name: "children_list",
        flags: MethodFlags::RD,
        run: rbd::header::children_list,
    },
    Method { class: "rbd", name: "copyup", flags: MethodFlags::RDWR, run: rbd::header::copyup },
    Method { class: "rbd", name: "create", flags: MethodFlags::RDWR, run: rbd::header::create },
    Method {
        class: "rbd",
        name: "dir_add_image",
        flags: MethodFlags::RDWR,
        run: rbd::directory::dir_add_image,
    },
    Method {
        class: "rbd",
        name: "dir_get_id",
        flags: MethodFlags::RD,
        run: rbd::directory::dir_get_id,
    },
    Method {
        class: "rbd",
        name: "dir_get_name",
        flags: MethodFlags::RD,
        run: rbd::directory::dir_get_name,
    },
    Method {
        class: "rbd",
        name: "dir_list",
        flags: MethodFlags::RD,
        run: rbd::directory::dir_list,
    },
    Method {
        class: "rbd",
        name: "dir_remove_image",
        flags: MethodFlags::RDWR,
        run: rbd::directory::dir_remove_image,
    },
    Method {
        class: "rbd",
        name: "dir_rename_image",
        flags: MethodFlags::RDWR,
        run: rbd::directory::dir_rename_image,
    },
    Method {
        class: "rbd",
        name: "get_children",
        flags: MethodFlags::RD,
        run: rbd::directory::get_children,
    },
    Method { class: "rbd", name: "get_id", flags: MethodFlags::RD, run: rbd::directory::get_id },
    Method { class: "rbd", name: "get_image", flags: MethodFlags::RD, run: rbd::header::get_image },
    Method {
        class: "rbd",
        name: "metadata_get",
        flags: MethodFlags::RD,
        run: rbd::header::metadata_get,
    },
    Method {
        class: "rbd",
        name: "metadata_list",
        flags: MethodFlags::RD,
        run: rbd::header::metadata_list,
    },
    Method {
        class: "rbd",
        name: "metadata_remove",
        flags: MethodFlags::RDWR,
        run: rbd::header::metadata_remove,
    },
    Method {
        class: "rbd",
        name: "metadata_set",
        flags: MethodFlags::RDWR,
        run: rbd::header::metadata_set,
    },
    Method {
        class: "rbd",
        name: "namespace_add",
        flags: MethodFlags::RDWR,
        run: rbd::directory::namespace_add,
    },
    Method {
        class: "rbd",
        name: "namespace_list",
        flags: MethodFlags::RD,
        run: rbd::directory::namespace_list,
    },
    Method {
        class: "rbd",
        name: "namespace_remove",
        flags: MethodFlags::RDWR,
        run: rbd::directory::namespace_remove,
    },
    Method {
        class: "rbd",
        name: "object_map_load",
        flags: MethodFlags::RD,
        run: rbd::object_map::object_map_load,
    },
    Method {
        class: "rbd",
        name: "object_map_resize",
        flags: MethodFlags::RDWR,
        run: rbd::object_map::object_map_resize,
    },
    Method {
        class: "rbd",
        name: "object_map_save",
        flags: MethodFlags::RDWR,
        run: rbd::object_map::object_map_save,
    },
    Method {
        class: "rbd",
        name: "object_map_snap_add",
        flags: MethodFlags::RDWR,
        run: rbd::object_map::object_map_snap_add,
    },
    Method {
        class: "rbd",
        name: "object_map_update",
        flags: MethodFlags::RDWR,
        run: rbd::object_map::object_map_update,
    },
    Method {
        class: "rbd",
        name: "remove_child",
        flags: MethodFlags::RDWR,
        run: rbd::directory::remove_child,
    },
    Method {
        class: "rbd",
        name: "remove_parent",
        flags: MethodFlags::RDWR,
        run: rbd::header::remove_parent,
    },
    Method {
        class: "rbd",
        name: "set_features",
        flags: MethodFlags::RDWR,
        run: rbd::header::set_features,
    },
    Method {
        class: "rbd",
        name: "set_flags",
        flags: MethodFlags::RDWR,
        run: rbd::header::set_flags,
    },
    Method { class: "rbd", name: "set_id", flags: MethodFlags::RDWR, run: rbd::directory::set_id },
    Method {
        class: "rbd",
        name: "set_parent",
        flags: MethodFlags::RDWR,
        run: rbd::header::set_parent,
    },
    Method {
        class: "rbd",
        name: "set_protection",
        flags: MethodFlags::RDWR,
        run: rbd::header::set_protection,
    },
    Method { class: "rbd", name: "set_size", flags: MethodFlags::RDWR, run: rbd::header::set_size },
    Method {
        class: "rbd",
        name: "set_snap_limit",
        flags: MethodFlags::RDWR,
        run: rbd::header::set_snap_limit,
    },
    Method {
        class: "rbd",
        name: "set_timestamp",
        flags: MethodFlags::RDWR,
        run: rbd::header::set_timestamp,
    },
    Method {
        class: "rbd",
        name: "snapshot_add",
        flags: MethodFlags::RDWR,
        run: rbd::header::snapshot_add,
    },
    Method {
        class: "rbd",
        name: "snapshot_remove",
        flags: MethodFlags::RDWR,
        run: rbd::header::snapshot_remove,
    },
    Method {
        class: "rbd",
        name: "snapshot_rename",
        flags: MethodFlags::RDWR,
        run: rbd::header::snapshot_rename,
    },
    Method {
        class: "rbd",
        name: "snapshot_trash_add",
        flags: MethodFlags::RDWR,
        run: rbd::header::snapshot_trash_add,
    },
    Method {
        class: "rbd",
        name: "trash_add",
        flags: MethodFlags::RDWR,
        run: rbd::directory::trash_add,
    },
    Method {
        class: "rbd",
        name: "trash_get",
        flags: MethodFlags::RD,
        run: rbd::directory::trash_get,
    },
    Method {
        class: "rbd",
        name: "trash_list",
        flags: MethodFlags::RD,
        run: rbd::directory::trash_list,
    },
    Method {
        class: "rbd",
        name: "trash_remove",
        flags: MethodFlags::RDWR,
        run: rbd::directory::trash_remove,
    },
];

/// The method registry the OSD's store runs [`ObjectOp::Call`] with.
#[derive(Debug, Default, Clone, Copy)]
pub struct Classes;

impl Classes {
    /// The registry of every method this build has.
    pub fn new() -> Classes {
        Classes
    }

    fn find(class: &str, method: &str) -> Option<&'static Method> {
        METHODS.iter().find(|m| m.class == class && m.name == method)
    }

    /// `(class, method)` of every registered method, for docs and tests.
    pub fn list() -> impl Iterator<Item = (&'static str, &'static str, MethodFlags)> {
        METHODS.iter().map(|m| (m.class, m.name, m.flags))
    }
}

impl ObjectMethods for Classes {
    fn flags(&self, class: &str, method: &str) -> Option<MethodFlags> {
        Classes::find(class, method).map(|m| m.flags)
    }

    fn call(
        &self,
        class: &str,
        method: &str,
        ctx: &mut dyn MethodCtx,
        input: &[u8],
    ) -> Result<Bytes, ErrorCode> {
        let Some(found) = Classes::find(class, method) else {
            return Err(ErrorCode::EOPNOTSUPP);
        };
        (found.run)(ctx, input)
    }
}

/// A [`ObjectOp::Call`] of `class.method` with an already encoded input (the OSD fills in
/// the origin).
pub fn call_op(class: &str, method: &str, input: Bytes) -> ObjectOp {
    ObjectOp::Call { class: class.into(), method: method.into(), input, origin: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_sorted_and_unique() {
        let keys: Vec<_> = METHODS.iter().map(|m| (m.class, m.name)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(keys, sorted);
        assert_eq!(Classes.flags("lock", "lock"), Some(MethodFlags::RDWR));
        assert_eq!(Classes.flags("lock", "get_info"), Some(MethodFlags::RD));
        assert_eq!(Classes.flags("lock", "nope"), None);
        assert_eq!(Classes.flags("nope", "lock"), None);
    }
}
