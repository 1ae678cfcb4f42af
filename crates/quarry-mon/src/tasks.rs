//! The leader's timers: marking silent OSDs down (and out after `mon_osd_down_out_interval`), rotating the service key, marking pools
//! full when their usage reaches a quota, and keeping the monitor's own address in the map. Each runs on every monitor but acts only while that
//! monitor is the Raft leader; everything they decide is proposed through Raft.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::log_op::Op;
use crate::mon::{unix_now, Mon};

/// Shortest tick of any timer.
const TICK_MIN: Duration = Duration::from_millis(50);

async fn ticker(mon: &Mon, period: Duration) -> bool {
    let mut shutdown = mon.shutdown.clone();
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(period.max(TICK_MIN)) => true,
        _ = shutdown.changed() => false,
    }
}

/// Marks up OSDs down after `osd_grace` without a beacon (checked four times per grace).
pub async fn liveness(mon: Arc<Mon>) {
    let period = mon.cfg.osd_grace / 4;
    while ticker(&mon, period).await {
        if !mon.is_leader() {
            continue;
        }
        let map = mon.core.map();
        for (id, up_from) in mon.silent_osds(&map, Instant::now()) {
            tracing::warn!(osd = id, grace = ?mon.cfg.osd_grace, "no beacon within grace: marking osd down");
            if let Err(e) = mon.propose(Op::OsdDown { id, up_from }).await {
                tracing::warn!(osd = id, error = %e.message, "could not mark osd down");
            }
        }
    }
}

/// Marks OSDs out that have been down for `mon_osd_down_out_interval` (Ceph's automatic
/// out), so their PGs are re-replicated elsewhere; checked every second. Zero disables it.
pub async fn down_out(mon: Arc<Mon>) {
    let interval = mon.cfg.down_out_interval;
    if interval.is_zero() {
        return;
    }
    while ticker(&mon, Duration::from_secs(1).min(interval)).await {
        if !mon.is_leader() {
            continue;
        }
        let now = unix_now();
        let map = mon.core.map();
        let due: Vec<(u64, u64)> = map
            .osds
            .values()
            .filter(|o| !o.up && o.in_cluster && o.down_since > 0)
            .filter(|o| now.saturating_sub(o.down_since) >= interval.as_secs().max(1))
            .map(|o| (o.id, o.down_since))
            .collect();
        for (id, down_since) in due {
            let down_for = now.saturating_sub(down_since);
            match mon.propose(Op::OsdAutoOut { id, down_since }).await {
                Ok(_) => tracing::warn!(
                    osd = id,
                    "Marking osd.{id} out (has been down for {down_for} seconds): its PGs are re-replicated on the other OSDs"
                ),
                Err(e) => tracing::info!(osd = id, error = %e.message, "could not mark a down osd out"),
            }
        }
    }
}

/// Proposes a new service key whenever the current one is half-way through its life.
pub async fn rotate_service_keys(mon: Arc<Mon>) {
    let period = (mon.cfg.ticket_ttl / 8).clamp(TICK_MIN, Duration::from_secs(10));
    while ticker(&mon, period).await {
        if !mon.is_leader() {
            continue;
        }
        let now = unix_now();
        let next = {
            let state = mon.core.read();
            match state.service_keys.as_ref() {
                Some(ring) if ring.rotation_due(now) => ring.next_key(now),
                _ => continue,
            }
        };
        let id = next.id;
        match mon.propose(Op::RotateServiceKey { key: next }).await {
            Ok(_) => tracing::info!(key_id = id, "service key rotated"),
            Err(e) => tracing::warn!(error = %e.message, "service key rotation failed"),
        }
    }
}

/// Most expired blocklist entries removed per tick.
const BLOCKLIST_EXPIRE_BATCH: usize = 64;

/// Removes expired blocklist entries from the map (they already match nothing; this keeps
/// the map every client and OSD receives small), up to [`BLOCKLIST_EXPIRE_BATCH`] a tick,
/// each through Raft as `BlocklistRm`.
pub async fn expire_blocklist(mon: Arc<Mon>, period: Duration) {
    while ticker(&mon, period).await {
        if !mon.is_leader() {
            continue;
        }
        let now = unix_now();
        let expired: Vec<String> = mon
            .core
            .map()
            .blocklist
            .iter()
            .filter(|(_, &until)| until <= now)
            .map(|(key, _)| key.clone())
            .take(BLOCKLIST_EXPIRE_BATCH)
            .collect();
        for entry in expired {
            match mon.propose(Op::BlocklistRm { entry: entry.clone() }).await {
                Ok(_) => tracing::info!(%entry, "expired blocklist entry removed"),
                Err(e) => {
                    tracing::info!(%entry, error = %e.message, "could not remove an expired blocklist entry");
                    break;
                }
            }
        }
    }
}

/// Every `period`, compares each pool's stored figures (from the OSDs' latest beacons) with
/// its quotas and proposes `PoolQuotaFull` where the pool's `full_quota` flag should change:
/// set once `stored_objects >= quota_max_objects` or `stored_bytes >= quota_max_bytes`,
/// cleared once below both (a raised or removed quota, deleted objects). Ceph's monitor does
/// the same with the figures its mgr reports.
pub async fn quota_full(mon: Arc<Mon>, period: Duration) {
    while ticker(&mon, period).await {
        if !mon.is_leader() {
            continue;
        }
        let map = mon.map_with_usage();
        for pool in map.pools.values() {
            let reached = (pool.quota_max_objects > 0
                && pool.stored_objects >= pool.quota_max_objects)
                || (pool.quota_max_bytes > 0 && pool.stored_bytes >= pool.quota_max_bytes);
            if reached == pool.has_flag(quarry_wire::pool_flags::FULL_QUOTA) {
                continue;
            }
            match mon.propose(Op::PoolQuotaFull { pool: pool.id, full: reached }).await {
                Ok(_) if reached => tracing::warn!(
                    pool = %pool.name,
                    objects = pool.stored_objects,
                    bytes = pool.stored_bytes,
                    "pool is full: it reached its quota; writes wait until it is raised or data is removed"
                ),
                Ok(_) => tracing::info!(pool = %pool.name, "pool is no longer full"),
                Err(e) => {
                    tracing::info!(pool = %pool.name, error = %e.message, "could not change the pool's full flag")
                }
            }
        }
    }
}

/// Records this monitor's listening address in the map when it leads and the map differs.
pub async fn advertise(mon: Arc<Mon>, addr: std::net::SocketAddr) {
    while ticker(&mon, Duration::from_secs(1)).await {
        let known = mon.core.map().mons.get(&mon.cfg.name) == Some(&addr);
        if known || !mon.is_leader() || !mon.core.read().bootstrapped {
            continue;
        }
        if let Err(e) = mon.propose(Op::SetMonAddr { name: mon.cfg.name.clone(), addr }).await {
            tracing::warn!(error = %e.message, "could not record the monitor address");
        }
    }
}
