//! Integration tests of the client against real daemons: one monitor and three OSDs started
//! in-process by `quarry_testkit::Cluster` on 127.0.0.1 (port 0), with data in temporary
//! directories.

mod caps_matrix;
mod exactly_once;
mod faults;
mod methods;
mod ops;
mod security;
mod snaps;
mod tamper;
mod watch;

/// An I/O context on `pool` by id (the tests name pools by id).
pub fn io(rados: &quarry_client::Rados, pool: quarry_client::PoolId) -> quarry_client::IoCtx {
    rados.ioctx_by_id(pool).unwrap()
}
