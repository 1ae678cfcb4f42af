//! The monitor session: hunting for a monitor, authenticating with the entity's key,
//! subscribing to map updates, fetching and renewing the OSD ticket, and the background task
//! that keeps all of that alive (reconnecting with backoff when the monitor goes away).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::sync::mpsc;
use tokio::time::Instant;

use quarry_types::ErrorCode;
use quarry_wire::{ClientSecret, Event, Reply, Request, RpcClient, Service, WireError};

use crate::session::{unix_now, FreshTicket, Opened};
use crate::shared::Shared;
use crate::{ClientConfig, ClientError};

/// First pause between two rounds over all monitors.
const HUNT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between two rounds over all monitors.
const HUNT_BACKOFF_MAX: Duration = Duration::from_secs(3);
/// Pause before retrying a ticket renewal that failed.
const RENEW_RETRY: Duration = Duration::from_secs(1);
/// Bound on one request to the monitor made by the background task.
const MON_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why opening a session failed: fatal (the monitor refused us) or worth retrying.
pub(crate) enum OpenError {
    /// Authentication or capability refusal: report at once, never loop on it.
    Refused(ClientError),
    /// Transport trouble: try another monitor.
    Transient(WireError),
    /// Authenticated, but the monitor cannot serve us yet (no ticket while its service keys
    /// are not ready after a bootstrap; EAGAIN): retried, and reported if the hunt times out.
    NotReady(ClientError),
}

/// Connects to the monitor at `addr`, authenticates, subscribes to the map and fetches a
/// ticket, all within `timeout`.
async fn open_session(
    cfg: &ClientConfig,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Opened, OpenError> {
    let deadline = Instant::now() + timeout;
    let secret = ClientSecret::EntityKey(cfg.key.secret().to_vec());
    let connected =
        match quarry_wire::connect(addr, &cfg.entity, Service::Mon, &secret, timeout).await {
            Ok(c) => c,
            Err(WireError::Refused(code, message)) => {
                return Err(OpenError::Refused(ClientError::Auth { code, message }))
            }
            Err(e) => return Err(OpenError::Transient(e)),
        };
    let client = connected.client;
    let rest = async {
        let map = match client.call(Request::Subscribe).await {
            Ok(Reply::Map(map)) => *map,
            Ok(Reply::Failed { code, message }) if code == ErrorCode::EAGAIN => {
                return Err(OpenError::NotReady(ClientError::Failed { code, message }))
            }
            Ok(Reply::Failed { code, message }) => {
                return Err(OpenError::Refused(ClientError::Auth { code, message }))
            }
            Ok(_) => return Err(OpenError::Transient(WireError::UnexpectedMessage("Map"))),
            Err(e) => return Err(OpenError::Transient(e)),
        };
        let ticket = fetch_ticket(&client, &connected.session_key).await?;
        Ok((map, ticket))
    };
    let (map, ticket) = tokio::time::timeout_at(deadline, rest)
        .await
        .map_err(|_| OpenError::Transient(WireError::Timeout))??;
    Ok(Opened {
        client,
        addr,
        session_key: connected.session_key,
        events: connected.events,
        map,
        ticket,
        global_id: connected.global_id,
    })
}

/// Asks the monitor for a ticket and opens its session key with the connection's key.
async fn fetch_ticket(client: &RpcClient, mon_key: &[u8; 32]) -> Result<FreshTicket, OpenError> {
    match client.call(Request::GetTicket).await {
        Ok(Reply::Ticket { ticket, session_key, expires_unix }) => {
            let session_key = quarry_auth::open_key(mon_key, &session_key).map_err(|source| {
                OpenError::Refused(ClientError::Ticket { source: Box::new(source) })
            })?;
            Ok(FreshTicket { ticket, session_key, expires_unix, obtained_unix: unix_now() })
        }
        // No service key yet (a monitor just bootstrapped): ask again later.
        Ok(Reply::Failed { code, message }) if code == ErrorCode::EAGAIN => {
            Err(OpenError::NotReady(ClientError::Auth { code, message }))
        }
        // Our entity was deleted (or may no longer have tickets): final, and reported to the
        // ops waiting for the ticket at once (EPERM), not after their timeout.
        Ok(Reply::Failed { code, message }) => {
            Err(OpenError::Refused(ClientError::Auth { code, message }))
        }
        Ok(_) => Err(OpenError::Transient(WireError::UnexpectedMessage("Ticket"))),
        Err(e) => Err(OpenError::Transient(e)),
    }
}

/// Exponential backoff with a cap.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        assert!(min <= max && !min.is_zero());
        Backoff { next: min, max }
    }

    /// The pause to take now; the following one doubles, up to the cap.
    pub fn next(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }
}

/// How long every monitor may refuse the TCP connection (nothing listens: the cluster is
/// stopped) before [`hunt_initial`] gives up, well before `client_mount_timeout`: long enough
/// for a monitor that restarts to listen again, short enough that a command against a stopped
/// cluster fails in seconds, not after 30 s of silence.
pub(crate) const ALL_REFUSED_GRACE: Duration = Duration::from_secs(3);

/// Hunts for a monitor during [`crate::Rados::connect`]: tries every monitor in random order,
/// round after round, until one accepts us or `cfg.connect_timeout` passes. An
/// authentication refusal ends the hunt at once; so do connections refused by every
/// monitor for [`ALL_REFUSED_GRACE`] (no monitor process is there).
pub(crate) async fn hunt_initial(cfg: &ClientConfig) -> Result<Opened, ClientError> {
    if cfg.mon_addrs.is_empty() {
        return Err(ClientError::NoMonitors);
    }
    let started = Instant::now();
    let deadline = started + cfg.connect_timeout;
    let mut backoff = Backoff::new(HUNT_BACKOFF_MIN, HUNT_BACKOFF_MAX);
    let mut last = None;
    let mut no_ticket = None;
    // Since when every attempt found no monitor listening (ECONNREFUSED).
    let mut all_refused_since: Option<Instant> = None;
    loop {
        let mut addrs = cfg.mon_addrs.clone();
        addrs.shuffle(&mut rand::thread_rng());
        let mut round_refused = true;
        for addr in addrs {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            match open_session(cfg, addr, remaining).await {
                Ok(opened) => return Ok(opened),
                Err(OpenError::Refused(e)) => {
                    tracing::warn!(mon = %addr, error = %e, "monitor refused authentication");
                    return Err(e);
                }
                Err(OpenError::Transient(e)) => {
                    tracing::debug!(mon = %addr, error = %e, "monitor not reachable");
                    round_refused &= connection_refused(&e);
                    last = Some(e);
                }
                Err(OpenError::NotReady(e)) => {
                    tracing::debug!(mon = %addr, error = %e, "monitor gave no ticket yet");
                    round_refused = false;
                    no_ticket = Some(e);
                }
            }
        }
        all_refused_since =
            if round_refused { all_refused_since.or(Some(Instant::now())) } else { None };
        let refused_too_long = all_refused_since.is_some_and(|t| t.elapsed() >= ALL_REFUSED_GRACE);
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || refused_too_long {
            if let Some(e) = no_ticket {
                return Err(e);
            }
            return Err(ClientError::Connect {
                tried: cfg.mon_addrs.clone(),
                after: started.elapsed(),
                last,
            });
        }
        tokio::time::sleep(backoff.next().min(remaining)).await;
    }
}

/// True if `e` is a TCP connection refused: nothing listens at the address.
fn connection_refused(e: &WireError) -> bool {
    matches!(e, WireError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// Hunts for a monitor after the session was lost: forever (until shutdown), with backoff,
/// over the configured monitors and those the last map lists. A refusal is remembered (so
/// commands report it) and retried at the slowest pace: keys can be restored.
async fn hunt_forever(shared: &Shared) -> Option<Opened> {
    let mut backoff = Backoff::new(HUNT_BACKOFF_MIN, HUNT_BACKOFF_MAX);
    loop {
        let mut addrs = shared.cfg.mon_addrs.clone();
        for addr in shared.map().mons.values() {
            if !addrs.contains(addr) {
                addrs.push(*addr);
            }
        }
        addrs.shuffle(&mut rand::thread_rng());
        let mut pause = None;
        for addr in addrs {
            if shared.is_shut_down() {
                return None;
            }
            match open_session(&shared.cfg, addr, shared.cfg.connect_timeout).await {
                Ok(opened) => return Some(opened),
                Err(OpenError::Refused(e)) => {
                    tracing::warn!(mon = %addr, error = %e, "monitor refused authentication");
                    shared.set_refusal(&e);
                    pause = Some(HUNT_BACKOFF_MAX);
                }
                Err(OpenError::Transient(e)) => {
                    tracing::debug!(mon = %addr, error = %e, "monitor not reachable");
                }
                Err(OpenError::NotReady(e)) => {
                    tracing::debug!(mon = %addr, error = %e, "monitor gave no ticket yet");
                }
            }
        }
        let pause = pause.unwrap_or_else(|| backoff.next());
        if shared.sleep_or_shutdown(pause).await.is_err() {
            return None;
        }
    }
}

/// The background task of a client: consumes pushed maps, renews the ticket at half its
/// lifetime, and reconnects when the monitor session is lost (closed, or silent: a renewal
/// that gets no answer). Ends on shutdown.
pub(crate) async fn run(shared: Arc<Shared>, mut events: mpsc::Receiver<Event>, renew_at: Instant) {
    let mut renew_at = renew_at;
    let mut shutdown = shared.shutdown_receiver();
    loop {
        let renewal = tokio::select! {
            _ = crate::shared::stopped(&mut shutdown) => return,
            event = events.recv() => match event {
                Some(Event::Map(map)) => {
                    shared.install_map(*map);
                    continue;
                }
                // Monitors push maps only (watch events come from OSDs).
                Some(Event::Notify { .. } | Event::WatchError { .. } | Event::Config(_)) => continue,
                None => Renewal::SessionLost,
            },
            _ = tokio::time::sleep_until(renew_at) => renew_ticket(&shared).await,
            _ = shared.renew_now.notified() => {
                shared.counters.tickets_on_demand.fetch_add(1, Ordering::Relaxed);
                renew_ticket(&shared).await
            }
        };
        match renewal {
            Renewal::Next(at) => renew_at = at,
            Renewal::SessionLost => {
                tracing::info!("monitor session lost; hunting for a monitor");
                shared.clear_session();
                let Some(opened) = hunt_forever(&shared).await else { return };
                tracing::info!(mon = %opened.addr, "monitor session re-established");
                renew_at = opened.ticket.renew_at();
                events = shared.install_opened(opened);
            }
        }
    }
}

/// What a renewal attempt leaves the background task to do.
enum Renewal {
    /// Renew next at this time.
    Next(Instant),
    /// The monitor session is gone or does not answer: hunt for another.
    SessionLost,
}

/// Fetches a new ticket on the current session.
async fn renew_ticket(shared: &Shared) -> Renewal {
    let Some(session) = shared.current_session() else {
        return Renewal::SessionLost;
    };
    let fetched = tokio::time::timeout(
        MON_REQUEST_TIMEOUT,
        fetch_ticket(&session.client, &session.session_key),
    )
    .await;
    match fetched {
        Ok(Ok(ticket)) => {
            let next = ticket.renew_at();
            tracing::debug!(expires_unix = ticket.expires_unix, "ticket renewed");
            shared.install_ticket(ticket);
            Renewal::Next(next)
        }
        Ok(Err(OpenError::Refused(e))) => {
            tracing::warn!(error = %e, "monitor refused to renew our ticket");
            shared.set_refusal(&e);
            Renewal::Next(Instant::now() + HUNT_BACKOFF_MAX)
        }
        Ok(Err(OpenError::Transient(e))) if session.client.is_closed() => {
            tracing::debug!(error = %e, "ticket renewal failed: session closed");
            Renewal::SessionLost
        }
        Ok(Err(OpenError::Transient(e))) => {
            tracing::debug!(error = %e, "ticket renewal failed; retrying");
            Renewal::Next(Instant::now() + RENEW_RETRY)
        }
        Ok(Err(OpenError::NotReady(e))) => {
            tracing::debug!(error = %e, "monitor gave no ticket; retrying");
            Renewal::Next(Instant::now() + RENEW_RETRY)
        }
        Err(_) => {
            tracing::warn!("the monitor did not answer a ticket renewal; looking for another");
            Renewal::SessionLost
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<_> = (0..4).map(|_| b.next().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 350, 350]);
    }
}
