//! A loopback TCP proxy with fault controls, placed on a link between two parties.
//!
//! [`Proxy::start`] listens on 127.0.0.1 (a free port) and forwards every accepted connection
//! to its target. Controls, effective at once on open connections and new ones:
//! - [`Proxy::cut`]: closes every open connection and closes new ones as soon as they are
//!   accepted (a peer that died; both sides see EOF or a reset), until [`Proxy::resume`].
//! - [`Proxy::stall`]: keeps connections open but forwards nothing (a partition that sends no
//!   reset: only timeouts notice it); held bytes flow on [`Proxy::resume`].
//! - [`Proxy::hold_replies`]: forwards what the connecting party sends but holds what comes
//!   back (a reply lost on the way: with a [`Proxy::cut`] after it, the request was served
//!   and its answer never arrives).
//! - [`Proxy::delay`]: forwards every chunk of bytes after the given delay (a slow link).
//! - [`Proxy::set_target`]: new connections go to another address (the party restarted on
//!   another port).
//!
//! Where the kit places proxies: daemons and clients find the monitor through the addresses
//! they are configured with (`OsdConfig::mon_addrs`, `ClientConfig::mon_addrs`), so the
//! OSD-to-monitor and client-to-monitor links can go through a proxy
//! ([`crate::Builder::mon_links`], [`crate::Cluster::mon_link`],
//! [`crate::Cluster::proxy_to_mon`]). Clients and peers reach an OSD at the address it
//! registers in the map; an OSD started with `quarry_osd::start_advertising` registers its
//! front proxy's address ([`crate::Builder::osd_fronts`], [`crate::Cluster::osd_front`]), so
//! cutting that proxy cuts every connection *to* that OSD (clients' and peers'); its own
//! connections out go to the other OSDs' fronts. A link between one pair of OSDs only is not
//! expressible this way (every peer reaches an OSD at the one address in the map).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with the bytes it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Forward, each chunk after this delay (zero: at once).
    Pass(Duration),
    /// Hold everything; connections stay open.
    Stall,
    /// Close every connection.
    Cut,
    /// Forward towards the target, hold everything coming back; connections stay open.
    HoldReplies,
}

/// A running proxy; stops (closing its connections) when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    state: watch::Sender<LinkState>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `target` on a free 127.0.0.1 port.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let target = Arc::new(Mutex::new(target));
        let (state, _) = watch::channel(LinkState::Pass(Duration::ZERO));
        let accept = tokio::spawn(accept_loop(listener, target.clone(), state.clone()));
        Ok(Proxy { addr, target, state, accept })
    }

    /// Where the proxy listens: give this address to the party that connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where new connections go.
    pub fn target(&self) -> SocketAddr {
        *self.target.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends new connections to `target`.
    pub fn set_target(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// Closes every open connection and every new one until [`Proxy::resume`].
    pub fn cut(&self) {
        self.state.send_replace(LinkState::Cut);
    }

    /// Holds every byte (connections stay open) until [`Proxy::resume`].
    pub fn stall(&self) {
        self.state.send_replace(LinkState::Stall);
    }

    /// Forwards requests, holds replies (connections stay open) until [`Proxy::resume`] or
    /// [`Proxy::cut`] (which drops what was held).
    pub fn hold_replies(&self) {
        self.state.send_replace(LinkState::HoldReplies);
    }

    /// Forwards every chunk after `delay`.
    pub fn delay(&self, delay: Duration) {
        self.state.send_replace(LinkState::Pass(delay));
    }

    /// Forwards at once again.
    pub fn resume(&self) {
        self.state.send_replace(LinkState::Pass(Duration::ZERO));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.send_replace(LinkState::Cut);
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: Arc<Mutex<SocketAddr>>,
    state: watch::Sender<LinkState>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        if *state.borrow() == LinkState::Cut {
            drop(inbound);
            continue;
        }
        let to = *target.lock().unwrap_or_else(|e| e.into_inner());
        let rx = state.subscribe();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            // Either direction ending (EOF, error, cut) closes both: a proxy mid-link must
            // not leave half-open connections the real peers would never see.
            tokio::select! {
                _ = pump(ri, wo, rx.clone(), false) => {}
                _ = pump(ro, wi, rx, true) => {}
            }
        });
    }
}

/// Copies `from` to `to`, obeying the link state (`replies`: this is the direction back from
/// the target); returns when either side ends or the link is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<LinkState>,
    replies: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = state.changed() => {
                if changed.is_err() || *state.borrow() == LinkState::Cut {
                    return;
                }
                continue;
            }
        };
        // Wait out stalls and delays; a cut meanwhile drops the bytes and the connection.
        loop {
            let now = *state.borrow_and_update();
            match now {
                LinkState::Cut => return,
                LinkState::Stall => {
                    if state.changed().await.is_err() {
                        return;
                    }
                }
                LinkState::HoldReplies if replies => {
                    if state.changed().await.is_err() {
                        return;
                    }
                }
                LinkState::HoldReplies => break,
                LinkState::Pass(delay) if delay > Duration::ZERO => {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => break,
                        changed = state.changed() => if changed.is_err() { return },
                    }
                }
                LinkState::Pass(_) => break,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
