//! Test harness: a real monitor (bootstrapped with client.admin, osd.0, a restricted client and
//! pool `rbd` of 8 PGs, size 1) and real OSDs on 127.0.0.1, plus a small client that talks the
//! wire protocol directly (GetTicket from the monitor, then op vectors to the OSD).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use quarry_auth::CryptoKey;
use quarry_mon::{Bootstrap, MonConfig, MonHandle};
use quarry_osd::{OsdConfig, OsdHandle};
use quarry_types::{
    EntityName, ErrorCode, ObjectOp, OpOutput, OpReply, Payload, PgId, SnapContext, SnapId,
    SNAP_HEAD,
};
use quarry_wire::{
    ClientSecret, ClusterMap, MonCommand, MonReply, OsdOp, Reply, Request, RpcClient, Service,
};

pub const POOL: &str = "rbd";
pub const PG_NUM: u32 = 8;
const TIMEOUT: Duration = Duration::from_secs(10);

pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Keys of the test cluster's entities.
#[derive(Clone)]
pub struct Keys {
    pub admin: CryptoKey,
    pub osds: BTreeMap<u64, CryptoKey>,
    pub other: CryptoKey,
}

impl Keys {
    pub fn generate(osds: &[u64]) -> Keys {
        Keys {
            admin: CryptoKey::generate(),
            osds: osds.iter().map(|&id| (id, CryptoKey::generate())).collect(),
            other: CryptoKey::generate(),
        }
    }

    pub fn osd0(&self) -> &CryptoKey {
        &self.osds[&0]
    }
}

fn caps(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A monitor and its data dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub keys: Keys,
    pub mon: MonHandle,
}

impl Cluster {
    /// One OSD (osd.0) and pool `rbd` (8 PGs, size 1).
    pub async fn start() -> Cluster {
        Cluster::start_with(&[0], vec![(POOL.into(), PG_NUM, 1)]).await
    }

    /// OSDs `osds` (each on its own host) and `pools` (name, pg_num, size).
    pub async fn start_with(osds: &[u64], pools: Vec<(String, u32, u32)>) -> Cluster {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::generate(osds);
        let mut entities = vec![
            (
                EntityName::client("admin"),
                keys.admin.clone(),
                caps(&[("mon", "allow *"), ("osd", "allow *")]),
            ),
            (
                EntityName::client("other"),
                keys.other.clone(),
                caps(&[("mon", "profile rbd"), ("osd", "profile rbd pool=other")]),
            ),
        ];
        for (&id, key) in &keys.osds {
            entities.push((
                EntityName::osd(id),
                key.clone(),
                caps(&[("mon", "profile osd"), ("osd", "allow *")]),
            ));
        }
        let mut cfg = MonConfig::new("a", dir.path().join("mon"), "127.0.0.1:0".parse().unwrap());
        cfg.pool_default_size = 1;
        cfg.bootstrap = Some(Bootstrap {
            fsid: "00000000-0000-0000-0000-000000000001".into(),
            entities,
            osds: osds.iter().map(|&id| (id, format!("host{id}"))).collect(),
            pools,
        });
        let mon = quarry_mon::start(cfg).await.unwrap();
        Cluster { dir, keys, mon }
    }

    pub fn osd_dir(&self) -> PathBuf {
        self.dir.path().join("osd0")
    }

    /// Starts osd.0.
    pub async fn start_osd(&self) -> OsdHandle {
        self.start_osd_id(0).await
    }

    pub async fn start_osd_id(&self, id: u64) -> OsdHandle {
        let mut cfg = osd_config(
            &self.dir.path().join(format!("osd{id}")),
            self.mon.addr(),
            &self.keys.osds[&id],
        );
        cfg.id = id;
        cfg.host = format!("host{id}");
        quarry_osd::start(cfg).await.unwrap()
    }

    pub async fn admin(&self) -> MonClient {
        MonClient::connect(self.mon.addr(), EntityName::client("admin"), &self.keys.admin).await
    }
}

pub fn osd_config(dir: &Path, mon: SocketAddr, key: &CryptoKey) -> OsdConfig {
    OsdConfig {
        id: 0,
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        mon_addrs: vec![mon],
        key: key.clone(),
        host: "host0".into(),
    }
}

/// A monitor session of a client entity.
pub struct MonClient {
    pub entity: EntityName,
    pub global_id: u64,
    rpc: RpcClient,
    session_key: [u8; 32],
}

impl MonClient {
    pub async fn connect(addr: SocketAddr, entity: EntityName, key: &CryptoKey) -> MonClient {
        let secret = ClientSecret::EntityKey(key.secret().to_vec());
        let c = quarry_wire::connect(addr, &entity, Service::Mon, &secret, TIMEOUT).await.unwrap();
        MonClient { entity, global_id: c.global_id, rpc: c.client, session_key: c.session_key }
    }

    pub async fn map(&self) -> ClusterMap {
        match self.rpc.call(Request::GetMap).await.unwrap() {
            Reply::Map(m) => *m,
            other => panic!("GetMap: {other:?}"),
        }
    }

    /// A fresh ticket for the OSD service.
    pub async fn ticket(&self) -> ClientSecret {
        match self.rpc.call(Request::GetTicket).await.unwrap() {
            Reply::Ticket { ticket, session_key, .. } => {
                let key = quarry_auth::open_key(&self.session_key, &session_key).unwrap();
                ClientSecret::Ticket { ticket, session_key: key }
            }
            other => panic!("GetTicket: {other:?}"),
        }
    }

    pub async fn command(&self, cmd: MonCommand) -> MonReply {
        match self.rpc.call(Request::Command(cmd)).await.unwrap() {
            Reply::Command(r) => r,
            other => panic!("command: {other:?}"),
        }
    }

    /// Waits until the map shows osd.0 up with an incarnation newer than `after`.
    pub async fn wait_osd_up(&self, after: u64) -> ClusterMap {
        for _ in 0..200 {
            let map = self.map().await;
            if map.osds.get(&0).is_some_and(|o| o.up && o.up_from > after && o.addr.is_some()) {
                return map;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("osd.0 did not come up");
    }

    /// An OSD session for this entity at `osd`.
    pub async fn osd_client(&self, osd: SocketAddr) -> OsdClient {
        let secret = self.ticket().await;
        let c =
            quarry_wire::connect(osd, &self.entity, Service::Osd, &secret, TIMEOUT).await.unwrap();
        OsdClient { rpc: c.client, map: self.map().await, pool: POOL.to_string() }
    }
}

/// An authenticated connection to the OSD, routing with a map.
pub struct OsdClient {
    pub rpc: RpcClient,
    pub map: ClusterMap,
    /// The pool ops go to.
    pub pool: String,
}

/// What an op returned.
pub type OpResult = Result<Vec<OpOutput>, ErrorCode>;

impl OsdClient {
    pub fn pg(&self, name: &str) -> PgId {
        let pool = self.map.pool_by_name(&self.pool).unwrap();
        PgId { pool: pool.id, seed: quarry_placement::pg_of(name, pool.pg_num) }
    }

    /// Sends an op vector; retries on `Retry` (bounded). Transport errors are `Err(Err(..))`.
    pub async fn try_exec(
        &self,
        name: &str,
        snapc: &SnapContext,
        snap: SnapId,
        ops: Vec<ObjectOp>,
    ) -> Result<OpResult, quarry_wire::WireError> {
        for _ in 0..100 {
            let op = OsdOp {
                pg: self.pg(name),
                epoch: self.map.epoch,
                name: name.to_string(),
                snapc: snapc.clone(),
                snap,
                ops: ops.clone(),
            };
            match self.rpc.call(Request::Op(op)).await? {
                Reply::Op(OpReply::Ok(out)) => return Ok(Ok(out)),
                Reply::Op(OpReply::Failed { code, .. }) => return Ok(Err(code)),
                Reply::Failed { code, .. } => return Ok(Err(code)),
                Reply::Retry { .. } => tokio::time::sleep(Duration::from_millis(50)).await,
                other => panic!("unexpected reply {other:?}"),
            }
        }
        panic!("op on {name} kept being retried");
    }

    pub async fn exec(&self, name: &str, ops: Vec<ObjectOp>) -> OpResult {
        self.try_exec(name, &SnapContext::default(), SNAP_HEAD, ops).await.unwrap()
    }

    pub async fn write_full(&self, name: &str, data: &[u8]) -> OpResult {
        self.exec(
            name,
            vec![ObjectOp::WriteFull { data: Payload::new(Bytes::copy_from_slice(data)) }],
        )
        .await
    }

    /// The object's whole content, or the errno.
    pub async fn read(&self, name: &str) -> Result<Vec<u8>, ErrorCode> {
        self.read_at(name, SNAP_HEAD).await
    }

    pub async fn read_at(&self, name: &str, snap: SnapId) -> Result<Vec<u8>, ErrorCode> {
        let reply = self
            .try_exec(name, &SnapContext::default(), snap, vec![ObjectOp::Read { off: 0, len: 0 }])
            .await
            .unwrap()?;
        match reply.as_slice() {
            [OpOutput::Data(p)] => {
                assert!(p.verify(), "the OSD sent bytes that fail their crc");
                Ok(p.data.to_vec())
            }
            other => panic!("read returned {other:?}"),
        }
    }

    /// Every object name in the pool.
    pub async fn list_all(&self) -> Vec<String> {
        let pool = self.map.pool_by_name(&self.pool).unwrap();
        let mut names = Vec::new();
        for seed in 0..pool.pg_num {
            let pg = PgId { pool: pool.id, seed };
            let mut after = None;
            loop {
                let req = Request::List {
                    pg,
                    epoch: self.map.epoch,
                    start_after: after.clone(),
                    max: 100,
                };
                match self.rpc.call(req).await.unwrap() {
                    Reply::List { names: batch, more } => {
                        after = batch.last().cloned();
                        names.extend(batch);
                        if !more {
                            break;
                        }
                    }
                    other => panic!("list: {other:?}"),
                }
            }
        }
        names.sort();
        names
    }
}
