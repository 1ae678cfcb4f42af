//! Background work of the daemon, one task each: the monitor session (boot, map
//! subscription, beacons, service keys and the peer ticket), the map worker (applies maps in
//! order), the checkpoint worker (makes applied state durable by time so the WAL can be
//! purged behind it), the snapshot trimmer (trims removed snapshots of the PGs it leads), the
//! repair worker (rebuilds damaged PGs) and the revive worker (restarts PG groups stopped by
//! an error, e.g. a log write refused on a full disk) and the rebalance worker (moves the PGs
//! whose up set differs from their acting set, keeps leadership on the map's primaries).

pub(crate) mod checkpoint;
pub(crate) mod maps;
pub(crate) mod monitor;
pub(crate) mod rebalance;
pub(crate) mod repair;
pub(crate) mod revive;
pub(crate) mod snap_trim;
