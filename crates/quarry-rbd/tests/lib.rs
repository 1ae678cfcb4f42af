//! Integration tests of the image library against real daemons: one monitor and three OSDs
//! started in-process by `quarry_testkit::Cluster` on 127.0.0.1 (port 0).

mod cache;
mod diff;
mod images;
mod lock;
mod lock_procs;
mod model;
mod namespaces;

use quarry_client::{IoCtx, MonCommand, Rados};

/// Creates pool `name` (8 PGs, `size` replicas) and returns an I/O context on it.
pub async fn make_pool(rados: &Rados, name: &str, size: u32) -> IoCtx {
    let cmd = MonCommand::PoolCreate { name: name.into(), pg_num: Some(8), size: Some(size) };
    rados.command(cmd).await.unwrap();
    rados.ioctx(name).await.unwrap()
}
