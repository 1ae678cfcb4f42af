//! [`Osd`]: the state every task of one running OSD shares (identity, address, PG router,
//! service keys, durability, the map hand-off to the map worker, the op bound, the stop
//! flag), and the small helpers on it. The boot script that builds it is `daemon`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{watch, Notify, Semaphore};

use quarry_auth::CryptoKey;
use quarry_types::OsdId;
use quarry_wire::ClusterMap;

use crate::pg::durability::Durability;
use crate::pg::network::PeerTicket;
use crate::router::Router;
use crate::session::ServiceKeys;

/// State shared by every task of one OSD.
pub(crate) struct Osd {
    pub(crate) id: OsdId,
    pub(crate) host: String,
    pub(crate) key: CryptoKey,
    pub(crate) mon_addrs: Vec<SocketAddr>,
    /// Where clients and peers reach this OSD (registered with the monitor).
    pub(crate) addr: SocketAddr,
    /// The listener's own address (differs from `addr` behind a proxy: see `start_advertising`).
    pub(crate) listen_addr: SocketAddr,
    pub(crate) router: Router,
    pub(crate) keys: Arc<ServiceKeys>,
    pub(crate) durability: Arc<Durability>,
    /// This OSD's ticket for peer connections (renewed by the monitor worker).
    pub(crate) ticket: watch::Sender<Option<PeerTicket>>,
    /// Maps received from the monitor, applied in order by the map worker.
    pub(crate) incoming_map: watch::Sender<Option<Arc<ClusterMap>>>,
    pub(crate) map_refresh: Notify,
    /// Bounds requests in flight over all connections.
    pub(crate) ops: Semaphore,
    /// Flipped to true once at shutdown.
    pub(crate) stop: watch::Sender<bool>,
    /// Per-object queues that keep mutations in arrival order (`op::order`).
    pub(crate) order: Arc<crate::op::order::ObjectOrder>,
    /// Watches and notifies of the PGs this OSD is primary of (in memory only).
    pub(crate) watches: crate::watch::Watches,
    /// Disk usage and the full-disk write check (`crate::space`).
    pub(crate) space: Arc<crate::space::Space>,
    /// Client ops in flight and recently finished (`crate::optracker`).
    pub(crate) tracker: Arc<crate::optracker::OpTracker>,
}

impl Osd {
    /// Asks the monitor worker to fetch the map now (a client saw a newer epoch).
    pub(crate) fn request_map_refresh(&self) {
        self.map_refresh.notify_one();
    }

    /// Resolves when a map refresh was requested.
    pub(crate) async fn map_refresh_requested(&self) {
        self.map_refresh.notified().await
    }

    /// Hands a map from the monitor to the map worker (newest wins).
    pub(crate) fn offer_map(&self, map: Arc<ClusterMap>) {
        self.incoming_map.send_if_modified(|slot| {
            let newer = slot.as_ref().is_none_or(|m| map.epoch > m.epoch);
            if newer {
                *slot = Some(map);
            }
            newer
        });
    }
}

/// Resolves once the OSD is stopping (or its state is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
