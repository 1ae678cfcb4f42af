//! Connections to OSDs: one pipelined [`RpcClient`] per OSD, opened lazily with the current
//! ticket and replaced when it closes, when the OSD's address changes, or when the ticket is
//! renewed. Concurrent callers share one connection; while one of them connects, the others
//! wait for it instead of opening their own.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use quarry_types::{EntityName, ErrorCode, OsdId};
use quarry_wire::{ClientSecret, RpcClient, Service, WireError};

use crate::session::TicketState;
use crate::watch::WatchRegistry;

/// After a failed connection attempt, callers arriving within this window get the same
/// failure without trying again (they back off instead of queueing on a dead address).
const FAILED_CONNECT_HOLD: Duration = Duration::from_millis(100);

/// Why no connection to an OSD could be had.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The OSD refused our ticket.
    Refused(ErrorCode, String),
    /// The OSD could not be reached (or the handshake failed in transit; logged).
    Unreachable,
}

struct OsdConn {
    client: RpcClient,
    id: u64,
    addr: SocketAddr,
    ticket_generation: u64,
}

struct Failure {
    at: Instant,
    addr: SocketAddr,
    ticket_generation: u64,
    refused: Option<(ErrorCode, String)>,
}

#[derive(Default)]
struct Slot {
    conn: Option<OsdConn>,
    failure: Option<Failure>,
}

/// The OSD connections of one client.
#[derive(Default)]
pub(crate) struct OsdConns {
    slots: Mutex<HashMap<OsdId, Arc<tokio::sync::Mutex<Slot>>>>,
    /// Connections opened so far (also the id of the newest one).
    pub opened: AtomicU64,
    /// The watches of this client: events OSDs push on a connection go there, and a closed
    /// connection ends the watches made over it.
    pub watches: Arc<WatchRegistry>,
    /// The local IPs our OSD connections came from: the blocklist may name our address
    /// (`IP:0/GLOBAL_ID`) or our whole IP.
    pub local_ips: Mutex<BTreeSet<IpAddr>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl OsdConns {
    /// A connection to `osd` at `addr` authenticated with `ticket`: the existing one if it is
    /// still good, else a new one.
    /// A connection to `osd` at `addr` authenticated with `ticket`: the existing one if it is
    /// still good, else a new one; with the connection's id (watches are bound to one).
    pub async fn get(
        &self,
        osd: OsdId,
        addr: SocketAddr,
        entity: &EntityName,
        ticket: &TicketState,
        timeout: Duration,
    ) -> Result<(RpcClient, u64), ConnectError> {
        let slot = lock(&self.slots).entry(osd).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(conn) = &slot.conn {
            let current = conn.addr == addr && conn.ticket_generation == ticket.generation;
            if current && !conn.client.is_closed() {
                return Ok((conn.client.clone(), conn.id));
            }
        }
        // Dropping our handle lets the old connection close once in-flight calls finish.
        slot.conn = None;
        if let Some(failure) = &slot.failure {
            let same = failure.addr == addr && failure.ticket_generation == ticket.generation;
            if same && failure.at.elapsed() < FAILED_CONNECT_HOLD {
                return Err(match &failure.refused {
                    Some((code, message)) => ConnectError::Refused(*code, message.clone()),
                    None => ConnectError::Unreachable,
                });
            }
        }
        let secret =
            ClientSecret::Ticket { ticket: ticket.ticket.clone(), session_key: ticket.session_key };
        match quarry_wire::connect(addr, entity, Service::Osd, &secret, timeout).await {
            Ok(connected) => {
                tracing::debug!(osd, %addr, "connected to OSD");
                let id = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
                lock(&self.local_ips).insert(connected.local_addr.ip());
                // OSDs push watch events; the registry routes them, and learns when the
                // connection closes (the event stream ends with it).
                tokio::spawn(self.watches.clone().dispatch(id, connected.events));
                let client = connected.client;
                slot.failure = None;
                slot.conn = Some(OsdConn {
                    client: client.clone(),
                    id,
                    addr,
                    ticket_generation: ticket.generation,
                });
                Ok((client, id))
            }
            Err(e) => {
                let refused = match &e {
                    WireError::Refused(code, message) => Some((*code, message.clone())),
                    _ => None,
                };
                tracing::debug!(osd, %addr, error = %e, "cannot connect to OSD");
                slot.failure = Some(Failure {
                    at: Instant::now(),
                    addr,
                    ticket_generation: ticket.generation,
                    refused: refused.clone(),
                });
                Err(match refused {
                    Some((code, message)) => ConnectError::Refused(code, message),
                    None => ConnectError::Unreachable,
                })
            }
        }
    }

    /// Drops every connection (shutdown).
    pub fn clear(&self) {
        lock(&self.slots).clear();
    }
}
