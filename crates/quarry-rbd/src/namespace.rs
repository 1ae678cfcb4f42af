//! Image namespaces of a pool (`rbd namespace create|ls|remove`, `pool/ns/image` specs):
//! Ceph's layout. A namespace is registered in `rbd_namespace` (an omap in the pool's
//! default namespace, changed by the `rbd` class so two creations cannot both succeed) and
//! exists for its images when its own `rbd_directory` does (created with it, so a user whose
//! caps cover only that namespace can still use it). The images of a namespace live in its
//! RADOS namespace (`quarry_client::IoCtx::set_namespace`): directory, trash, headers, data.

use quarry_client::IoCtx;
use quarry_cls::rbd::directory::{ListRequest, NamespaceList, NamespaceRequest, LIST_MAX};
use quarry_types::ErrorCode;

use crate::error::{is, RbdError, RbdResult};
use crate::names;
use crate::pool::{call, call_read};

/// The namespace registry (in the default namespace).
pub const REGISTRY: &str = "rbd_namespace";

/// Objects a namespace has of its own (removed with it).
const NAMESPACE_OBJECTS: [&str; 4] = [names::DIRECTORY, names::TRASH, names::CHILDREN, "rbd_info"];

/// `io` in the pool's default namespace.
fn default_namespace(io: &IoCtx) -> IoCtx {
    let mut io = io.clone();
    io.set_namespace("").expect("the default namespace is valid");
    io
}

/// `io` in namespace `name` (EINVAL for a name a namespace cannot have).
fn in_namespace(io: &IoCtx, name: &str) -> RbdResult<IoCtx> {
    if name.is_empty() || name.contains('/') || name.contains('@') {
        return Err(RbdError::refused(
            ErrorCode::EINVAL,
            format!("invalid namespace name '{name}'"),
        ));
    }
    let mut io = io.clone();
    io.set_namespace(name).map_err(RbdError::from)?;
    Ok(io)
}

/// Creates namespace `name` in `io`'s pool (EEXIST if it exists).
pub async fn create(io: &IoCtx, name: &str) -> RbdResult<()> {
    let ns = in_namespace(io, name)?;
    let registry = default_namespace(io);
    call(&registry, REGISTRY, "namespace_add", &NamespaceRequest { name: name.into() }).await?;
    let made = async {
        ns.create(names::TRASH, false).await?;
        ns.create(names::DIRECTORY, false).await
    };
    if let Err(e) = made.await {
        let _ = ns.remove(names::DIRECTORY).await;
        let _ = ns.remove(names::TRASH).await;
        let request = NamespaceRequest { name: name.into() };
        let _ = call(&registry, REGISTRY, "namespace_remove", &request).await;
        return Err(e.into());
    }
    Ok(())
}

/// Whether namespace `name` exists (its directory does). The default namespace always does.
pub async fn exists(io: &IoCtx, name: &str) -> RbdResult<bool> {
    if name.is_empty() {
        return Ok(true);
    }
    let ns = in_namespace(io, name)?;
    match ns.stat(names::DIRECTORY).await {
        Ok(_) => Ok(true),
        Err(e) if is(&e, ErrorCode::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// ENOENT unless `io`'s namespace exists (what creating an image there needs).
pub(crate) async fn require(io: &IoCtx) -> RbdResult<()> {
    if exists(io, io.namespace()).await? {
        Ok(())
    } else {
        Err(RbdError::refused(
            ErrorCode::ENOENT,
            format!("namespace '{}' does not exist", io.namespace()),
        ))
    }
}

/// The namespaces of `io`'s pool, sorted.
pub async fn list(io: &IoCtx) -> RbdResult<Vec<String>> {
    let registry = default_namespace(io);
    let mut names = Vec::new();
    loop {
        let request =
            ListRequest { start_after: names.last().cloned().unwrap_or_default(), max: LIST_MAX };
        let page: NamespaceList =
            match call_read(&registry, REGISTRY, "namespace_list", &request).await {
                Ok(page) => page,
                Err(e) if e.errno() == ErrorCode::ENOENT => return Ok(names),
                Err(e) => return Err(e),
            };
        names.extend(page.names);
        if !page.more {
            return Ok(names);
        }
    }
}

/// Removes namespace `name` (ENOENT if it does not exist; EBUSY while it has images, in its
/// directory or its trash).
pub async fn remove(io: &IoCtx, name: &str) -> RbdResult<()> {
    let ns = in_namespace(io, name)?;
    if !list(io).await?.iter().any(|n| n == name) {
        return Err(RbdError::code(ErrorCode::ENOENT));
    }
    if !crate::pool::list(&ns).await?.is_empty() || !crate::pool::trash_list(&ns).await?.is_empty()
    {
        return Err(RbdError::refused(
            ErrorCode::EBUSY,
            format!("namespace '{name}' is not empty"),
        ));
    }
    for object in NAMESPACE_OBJECTS {
        match ns.remove(object).await {
            Ok(()) => {}
            Err(e) if is(&e, ErrorCode::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let registry = default_namespace(io);
    call(&registry, REGISTRY, "namespace_remove", &NamespaceRequest { name: name.into() }).await
}
