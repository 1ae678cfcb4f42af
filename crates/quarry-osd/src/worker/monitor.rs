//! The monitor session: connect as `osd.N` with its key, `OsdBoot`, `Subscribe` to maps,
//! fetch the service keys (to open client tickets) and a ticket of our own (for peer OSDs),
//! then beacon every second with usage figures, refetch keys periodically and on demand,
//! renew the ticket before it expires, and forward every pushed map to the map worker. If the
//! monitor goes away, reconnect with backoff; clients keep being served meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use quarry_types::{EntityName, PgId};
use quarry_wire::{ClientSecret, Event, Reply, Request, RpcClient, Service, Usage};

use crate::osd::Osd;
use crate::pg::network::PeerTicket;
use crate::pg::state_machine::blocking;
use crate::session::now_unix;
use crate::space::Figures;
use crate::OsdError;

/// Liveness lease renewal period.
pub(crate) const BEACON_INTERVAL: Duration = Duration::from_secs(1);
/// Service keys are refetched at least this often.
const KEYS_INTERVAL: Duration = Duration::from_secs(30);
/// Handshake deadline per monitor.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for one request to the monitor.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs the monitor session until the OSD stops; `ready` fires after the first complete
/// set-up (booted, map applied, keys fetched).
pub(crate) async fn run(osd: Arc<Osd>, ready: oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    let mut next_warning: u64 = 0;
    loop {
        let mut established = false;
        let ended = session(&osd, &mut ready, &mut established).await;
        if established {
            backoff = BACKOFF_MIN;
            failures = 0;
            next_warning = 0;
        }
        match ended {
            Ok(()) => return,
            // One warning per outage (and a reminder now and then), not one per attempt.
            Err(e) if failures == next_warning => {
                tracing::warn!(osd = osd.id, error = %e, failures, "no monitor session; retrying");
                next_warning += 30;
            }
            Err(e) => tracing::debug!(osd = osd.id, error = %e, "monitor still unreachable"),
        }
        failures += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A connection to the first monitor that accepts us.
async fn connect(osd: &Osd) -> Result<quarry_wire::Connected, OsdError> {
    connect_as(osd.id, &osd.key, &osd.mon_addrs).await
}

/// The central config of `cfg`'s OSD, merged (see `crate::fetch_central_config`).
pub(crate) async fn fetch_central_config(
    cfg: &crate::OsdConfig,
) -> Result<BTreeMap<String, String>, OsdError> {
    let connected = connect_as(cfg.id, &cfg.key, &cfg.mon_addrs).await?;
    let reply = call(&connected.client, Request::GetConfig { subscribe: false }).await;
    drop(connected);
    match reply? {
        Reply::Command(quarry_wire::MonReply::Config(sections)) => {
            Ok(quarry_conf::central_for(&sections, &EntityName::osd(cfg.id)))
        }
        other => Err(refused("GetConfig", other)),
    }
}

async fn connect_as(
    id: quarry_types::OsdId,
    key: &quarry_auth::CryptoKey,
    mon_addrs: &[std::net::SocketAddr],
) -> Result<quarry_wire::Connected, OsdError> {
    let entity = EntityName::osd(id);
    let secret = ClientSecret::EntityKey(key.secret().to_vec());
    let mut last = None;
    for &addr in mon_addrs {
        match quarry_wire::connect(addr, &entity, Service::Mon, &secret, CONNECT_TIMEOUT).await {
            Ok(connected) => return Ok(connected),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "monitor connection failed");
                last = Some(e);
            }
        }
    }
    Err(OsdError::MonUnreachable {
        addrs: mon_addrs.to_vec(),
        last_error: last.map(|e| e.to_string()).unwrap_or_else(|| "no monitor address".into()),
    })
}

async fn call(client: &RpcClient, request: Request) -> Result<Reply, OsdError> {
    match tokio::time::timeout(CALL_TIMEOUT, client.call(request)).await {
        Ok(reply) => Ok(reply?),
        Err(_) => Err(OsdError::Wire(quarry_wire::WireError::Timeout)),
    }
}

/// Applies the central config's sections for this OSD (`ceph config set osd|osd.N|global`)
/// to the process's options (`crate::tell::Knobs::apply_central`: runtime options now,
/// others at the next start; ceph.conf and the command line win).
fn apply_config(osd: &Osd, sections: &BTreeMap<String, BTreeMap<String, String>>) {
    let values = quarry_conf::central_for(sections, &EntityName::osd(osd.id));
    let changed = crate::tell::knobs().apply_central(&values);
    if !changed.is_empty() {
        tracing::info!(osd = osd.id, changed = %changed.join(", "), "central config applied");
    }
}

fn refused(request: &'static str, reply: Reply) -> OsdError {
    let detail = match reply {
        Reply::Failed { code, message } => format!("{code} {message}"),
        other => format!("unexpected reply {other:?}"),
    };
    OsdError::MonRefused { request, detail }
}

/// One monitor session; `Ok` only when the OSD stops.
async fn session(
    osd: &Arc<Osd>,
    ready: &mut Option<oneshot::Sender<()>>,
    established: &mut bool,
) -> Result<(), OsdError> {
    let quarry_wire::Connected { client, mut events, session_key, .. } = connect(osd).await?;
    let boot = Request::OsdBoot { id: osd.id, addr: osd.addr, host: osd.host.clone() };
    let up_from = match call(&client, boot).await? {
        Reply::Booted { epoch, up_from } => {
            tracing::info!(osd = osd.id, epoch, up_from, "booted");
            up_from
        }
        other => return Err(refused("OsdBoot", other)),
    };
    let map = match call(&client, Request::Subscribe).await? {
        Reply::Map(map) => Arc::new(*map),
        other => return Err(refused("Subscribe", other)),
    };
    match call(&client, Request::GetConfig { subscribe: true }).await? {
        Reply::Command(quarry_wire::MonReply::Config(sections)) => apply_config(osd, &sections),
        other => return Err(refused("GetConfig", other)),
    }
    fetch_keys(osd, &client, &session_key).await?;
    let mut ticket_renew_at = fetch_ticket(osd, &client, &session_key).await?;
    osd.router.apply_map(map).await?;
    *established = true;
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    let mut beacon = tokio::time::interval(BEACON_INTERVAL);
    // The damaged PGs the monitor was last told of (this session).
    let mut reported_damage: Vec<PgId> = Vec::new();
    let mut keys = tokio::time::interval(KEYS_INTERVAL);
    let mut stop = osd.stop.subscribe();
    loop {
        tokio::select! {
            _ = crate::osd::stopped(&mut stop) => return Ok(()),
            event = events.recv() => match event {
                Some(Event::Map(map)) => osd.offer_map(Arc::new(*map)),
                Some(Event::Config(sections)) => apply_config(osd, &sections),
                // A monitor pushes maps only; watch events are for clients of OSDs.
                Some(Event::Notify { .. } | Event::WatchError { .. }) => {}
                None => return Err(OsdError::Wire(quarry_wire::WireError::Closed)),
            },
            _ = beacon.tick() => {
                send_beacon(osd, &client, up_from).await?;
                send_damage(osd, &client, up_from, &mut reported_damage).await?;
                send_remaps(osd, &client, up_from).await?;
            }
            _ = keys.tick() => fetch_keys(osd, &client, &session_key).await?,
            _ = osd.keys.refresh_requested() => fetch_keys(osd, &client, &session_key).await?,
            _ = osd.map_refresh_requested() => match call(&client, Request::GetMap).await? {
                Reply::Map(map) => osd.offer_map(Arc::new(*map)),
                other => return Err(refused("GetMap", other)),
            },
            _ = tokio::time::sleep_until(ticket_renew_at) => {
                ticket_renew_at = fetch_ticket(osd, &client, &session_key).await?;
            }
        }
    }
}

/// Fetches and installs the service keys.
async fn fetch_keys(osd: &Osd, client: &RpcClient, session_key: &[u8; 32]) -> Result<(), OsdError> {
    let sealed = match call(client, Request::GetServiceKeys).await? {
        Reply::ServiceKeys(sealed) => sealed,
        other => return Err(refused("GetServiceKeys", other)),
    };
    let keys = quarry_auth::open_service_keys(session_key, &sealed)
        .map_err(|source| OsdError::Auth { what: "service keys", source })?;
    osd.keys.install(keys);
    Ok(())
}

/// Fetches a ticket for peer connections; returns when to renew it (half its remaining life).
async fn fetch_ticket(
    osd: &Osd,
    client: &RpcClient,
    session_key: &[u8; 32],
) -> Result<tokio::time::Instant, OsdError> {
    let (ticket, sealed_key, expires_unix) = match call(client, Request::GetTicket).await? {
        Reply::Ticket { ticket, session_key, expires_unix } => (ticket, session_key, expires_unix),
        other => return Err(refused("GetTicket", other)),
    };
    let key = quarry_auth::open_key(session_key, &sealed_key)
        .map_err(|source| OsdError::Auth { what: "ticket session key", source })?;
    osd.ticket.send_replace(Some(PeerTicket { ticket, session_key: key }));
    let life = expires_unix.saturating_sub(now_unix()).max(2);
    Ok(tokio::time::Instant::now() + Duration::from_secs(life / 2))
}

async fn send_beacon(osd: &Osd, client: &RpcClient, up_from: u64) -> Result<(), OsdError> {
    let store = osd.router.store().clone();
    let (pools, held) =
        blocking(move || Ok::<_, quarry_store::StoreError>((store.usage()?, store.pgs()?))).await?;
    let mut pgs: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    for pg in held {
        pgs.entry(pg.pool).or_default().insert(pg.seed);
    }
    let usage: BTreeMap<u64, Usage> = pools
        .into_iter()
        .map(|(pool, u)| (pool, Usage { objects: u.objects, bytes: u.bytes }))
        .collect();
    let space = osd.space.clone();
    let store = osd.router.store().clone();
    let figures = blocking(move || {
        space.refresh_reusable(&store);
        Ok::<_, quarry_store::StoreError>(space.reported())
    })
    .await?;
    let (Figures { used: disk_used, avail: disk_avail }, data_used) = figures;
    let pgs = Some(pgs);
    let beacon =
        Request::OsdBeacon { id: osd.id, up_from, usage, disk_used, disk_avail, data_used, pgs };
    match call(client, beacon).await? {
        Reply::Ack => Ok(()),
        other => Err(refused("OsdBeacon", other)),
    }
}

/// Reports the committed PG moves (`pg::membership`): the monitor makes their new voters the
/// acting sets. A refused report (the acting set changed meanwhile) is dropped: the move is
/// recomputed from the next map. One that did not reach the monitor is kept for the next
/// beacon.
async fn send_remaps(osd: &Osd, client: &RpcClient, up_from: u64) -> Result<(), OsdError> {
    // Merges applied (`pg::merge`): a report lost here is queued again by the next scan
    // while the map still marks the merge.
    for (target, source) in osd.router.take_merge_reports() {
        let report = Request::PgMerged { id: osd.id, up_from, target, source };
        match call(client, report).await {
            Ok(Reply::Ack) => tracing::info!(%target, source, "pg merge reported to the monitor"),
            Ok(Reply::Failed { code, message }) => {
                tracing::info!(%target, source, %code, %message, "pg merge report refused: the next map decides")
            }
            Ok(other) => return Err(refused("PgMerged", other)),
            Err(e) => return Err(e),
        }
    }
    let reports = osd.router.take_remap_reports();
    let mut left = reports.into_iter();
    while let Some((pg, from, to)) = left.next() {
        let report =
            Request::PgRemapped { id: osd.id, up_from, pg, from: from.clone(), to: to.clone() };
        match call(client, report).await {
            Ok(Reply::Ack) => tracing::info!(%pg, ?from, ?to, "pg move reported to the monitor"),
            Ok(Reply::Failed { code, message }) => {
                tracing::info!(%pg, %code, %message, "pg move report refused: the next map decides")
            }
            Ok(other) => {
                osd.router.queue_remap_report(pg, from, to);
                for (pg, from, to) in left {
                    osd.router.queue_remap_report(pg, from, to);
                }
                return Err(refused("PgRemapped", other));
            }
            Err(e) => {
                osd.router.queue_remap_report(pg, from, to);
                for (pg, from, to) in left {
                    osd.router.queue_remap_report(pg, from, to);
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Tells the monitor which PGs are marked damaged here, while some are and once when the
/// last is repaired.
async fn send_damage(
    osd: &Osd,
    client: &RpcClient,
    up_from: u64,
    reported: &mut Vec<PgId>,
) -> Result<(), OsdError> {
    let pgs = osd.router.damaged_pgs();
    if pgs.is_empty() && reported.is_empty() {
        return Ok(());
    }
    let report = Request::OsdDamaged { id: osd.id, up_from, pgs: pgs.clone() };
    match call(client, report).await? {
        Reply::Ack => {
            *reported = pgs;
            Ok(())
        }
        other => Err(refused("OsdDamaged", other)),
    }
}
