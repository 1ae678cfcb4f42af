//! The RADOS object names of Ceph's format-2 layout, and which image and snapshot names are
//! valid.

use quarry_types::{ErrorCode, SnapId, OBJECT_NAME_LEN_MAX};

use crate::error::{RbdError, RbdResult};

/// The pool directory.
pub const DIRECTORY: &str = "rbd_directory";
/// The clone v1 children registry.
pub const CHILDREN: &str = "rbd_children";
/// The image trash.
pub const TRASH: &str = "rbd_trash";

/// `rbd_id.<name>`.
pub fn id_object(name: &str) -> String {
    format!("rbd_id.{name}")
}

/// `rbd_header.<id>`.
pub fn header_object(id: &str) -> String {
    format!("rbd_header.{id}")
}

/// `rbd_object_map.<id>` (head) or `rbd_object_map.<id>.<snap 016x>`.
pub fn object_map(id: &str, snap: Option<SnapId>) -> String {
    match snap {
        None => format!("rbd_object_map.{id}"),
        Some(snap) => format!("rbd_object_map.{id}.{snap:016x}"),
    }
}

/// An image name: not empty, no `/` or `@` (they separate pool, namespace and snapshot in
/// specs), and short enough for its id object's name.
pub fn check_image_name(name: &str) -> RbdResult<()> {
    if name.is_empty() || name.contains('/') || name.contains('@') {
        return Err(RbdError::refused(ErrorCode::EINVAL, format!("invalid image name '{name}'")));
    }
    if id_object(name).len() > OBJECT_NAME_LEN_MAX {
        return Err(RbdError::refused(ErrorCode::ENAMETOOLONG, "image name too long"));
    }
    Ok(())
}

/// A snapshot name: not empty, no `/` or `@`, at most 255 bytes.
pub fn check_snap_name(name: &str) -> RbdResult<()> {
    if name.is_empty() || name.contains('/') || name.contains('@') {
        return Err(RbdError::refused(
            ErrorCode::EINVAL,
            format!("invalid snapshot name '{name}'"),
        ));
    }
    if name.len() > 255 {
        return Err(RbdError::refused(ErrorCode::ENAMETOOLONG, "snapshot name too long"));
    }
    Ok(())
}
