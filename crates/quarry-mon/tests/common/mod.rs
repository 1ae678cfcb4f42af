//! Helpers: a monitor on 127.0.0.1 port 0 in a temp dir, bootstrapped with client.admin,
//! osd.0 and pool `rbd`; clients connected with quarry-wire.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use quarry_auth::CryptoKey;
use quarry_mon::{Bootstrap, MonConfig, MonHandle};
use quarry_types::{EntityName, ErrorCode};
use quarry_wire::{
    ClientSecret, Connected, MonCommand, MonReply, Reply, Request, Service, WireError,
};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn caps(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub struct Keys {
    pub admin: CryptoKey,
    pub osd0: CryptoKey,
}

impl Keys {
    pub fn new() -> Keys {
        Keys { admin: CryptoKey::generate(), osd0: CryptoKey::generate() }
    }
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn config(dir: &Path, keys: &Keys) -> MonConfig {
    let mut cfg = MonConfig::new("a", dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    cfg.bootstrap = Some(Bootstrap {
        fsid: "6a5b1c2d-0000-4000-8000-000000000001".into(),
        entities: vec![
            (
                EntityName::client("admin"),
                keys.admin.clone(),
                caps(&[("mon", "allow *"), ("osd", "allow *")]),
            ),
            (
                EntityName::osd(0),
                keys.osd0.clone(),
                caps(&[("mon", "profile osd"), ("osd", "allow *")]),
            ),
        ],
        osds: vec![(0, "host0".into())],
        pools: vec![("rbd".into(), 32, 1)],
    });
    cfg.osd_grace = Duration::from_millis(1500);
    cfg.pool_default_pg_num = 8;
    cfg.pool_default_size = 1;
    cfg
}

pub async fn start(cfg: MonConfig) -> MonHandle {
    init_logs();
    quarry_mon::start(cfg).await.expect("monitor starts")
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
