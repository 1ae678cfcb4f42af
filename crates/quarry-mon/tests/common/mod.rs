//! Helpers: the monitor of a `quarry_testkit` cluster (127.0.0.1 port 0, temp dir,
//! bootstrapped as production does with client.admin, osd.0 and pool `rbd`); clients
//! connected with quarry-wire.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quarry_auth::CryptoKey;
use quarry_testkit::{Builder, Cluster};
use quarry_types::{EntityName, ErrorCode};
use quarry_wire::{
    ClientSecret, ClusterMap, Connected, MonCommand, MonReply, Reply, Request, Service, WireError,
};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn caps(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Keys of the test cluster's entities.
pub struct Keys {
    pub admin: CryptoKey,
    pub osd0: CryptoKey,
}

/// The monitor of a `quarry_testkit` cluster (bootstrapped as production does: client.admin,
/// osd.0 on host0, pool `rbd` of 32 PGs, size 1); the tests play the OSD themselves.
pub struct TestMon {
    cluster: Cluster,
}

impl TestMon {
    /// The test settings: OSD grace 1.5 s, new pools of 8 PGs and 1 replica.
    pub async fn start_with(tweak: impl FnOnce(Builder) -> Builder) -> TestMon {
        let builder = Cluster::builder()
            .osds(1)
            .pools(vec![("rbd", 32, 1)])
            .monitor_only()
            .osd_grace(Duration::from_millis(1500))
            .pool_default_pg_num(8)
            .pool_default_size(1);
        TestMon { cluster: tweak(builder).start().await }
    }

    pub fn addr(&self) -> SocketAddr {
        self.cluster.mon_addr()
    }

    pub fn map(&self) -> Arc<ClusterMap> {
        self.cluster.mon().map()
    }

    pub fn keys(&self) -> Keys {
        Keys { admin: self.cluster.admin_key().clone(), osd0: self.cluster.osd_key(0).clone() }
    }

    /// The monitor's data directory.
    pub fn dir(&self) -> PathBuf {
        self.cluster.mon_dir()
    }

    /// A loopback proxy to the monitor (to stall a client's link).
    pub async fn proxy(&self) -> quarry_testkit::Proxy {
        self.cluster.proxy_to_mon().await
    }

    pub fn logs(&self) -> &quarry_testkit::LogGuard {
        self.cluster.logs()
    }

    /// Stops the monitor (data and address stay).
    pub async fn stop(&mut self) {
        self.cluster.stop_mon().await;
    }

    /// Starts it again on the same data and address.
    pub async fn start(&mut self) {
        self.cluster.start_mon().await;
    }

    pub async fn shutdown(self) {
        self.cluster.shutdown().await;
    }
}

/// A monitor with the test settings.
pub async fn start() -> TestMon {
    TestMon::start_with(|b| b).await
}

pub async fn connect(
    addr: SocketAddr,
    entity: &EntityName,
    key: &CryptoKey,
) -> Result<Connected, WireError> {
    let secret = ClientSecret::EntityKey(key.secret().to_vec());
    quarry_wire::connect(addr, entity, Service::Mon, &secret, TIMEOUT).await
}

pub async fn admin(addr: SocketAddr, keys: &Keys) -> Connected {
    connect(addr, &EntityName::client("admin"), &keys.admin).await.expect("admin connects")
}

pub async fn call(conn: &Connected, request: Request) -> Reply {
    tokio::time::timeout(TIMEOUT, conn.client.call(request))
        .await
        .expect("reply in time")
        .expect("call")
}

/// A command that must succeed.
pub async fn ok(conn: &Connected, cmd: MonCommand) -> MonReply {
    match call(conn, Request::Command(cmd.clone())).await {
        Reply::Command(reply) => reply,
        other => panic!("{cmd:?} failed: {other:?}"),
    }
}

/// A command that must fail with `code`; returns the message.
pub async fn fails(conn: &Connected, cmd: MonCommand, code: ErrorCode) -> String {
    match call(conn, Request::Command(cmd.clone())).await {
        Reply::Failed { code: got, message } if got == code => message,
        other => panic!("{cmd:?}: expected {code}, got {other:?}"),
    }
}

pub async fn done(conn: &Connected, cmd: MonCommand) -> String {
    match ok(conn, cmd).await {
        MonReply::Done(text) => text,
        other => panic!("expected Done, got {other:?}"),
    }
}

pub async fn map(conn: &Connected) -> quarry_wire::ClusterMap {
    match call(conn, Request::GetMap).await {
        Reply::Map(map) => *map,
        other => panic!("GetMap: {other:?}"),
    }
}

/// Polls `GetMap` until `pred` holds or `limit` passes.
pub async fn wait_map(
    conn: &Connected,
    limit: Duration,
    pred: impl Fn(&quarry_wire::ClusterMap) -> bool,
) -> quarry_wire::ClusterMap {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let m = map(conn).await;
        if pred(&m) {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "map condition not reached: {m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
