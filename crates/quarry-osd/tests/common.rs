//! Test harness: a cluster from `quarry_testkit` (a real monitor bootstrapped as production
//! does, plus a restricted `client.other` and pool `rbd` of 8 PGs, size 1; the tests start
//! the OSDs), plus a small client that talks the wire protocol directly (GetTicket from the
//! monitor, then op vectors to the OSD).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use quarry_auth::CryptoKey;
pub use quarry_testkit::Cluster;
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

/// The test cluster: the monitor only (the tests start their OSDs), OSD ids `0..osds` on
/// hosts `host{id}`, `pools`, and `client.other` limited to pool `other`.
pub async fn start_with(osds: u32, pools: Vec<(&str, u32, u32)>) -> Cluster {
    Cluster::builder()
        .osds(osds)
        .pools(pools)
        .user("other", &[("mon", "profile rbd"), ("osd", "profile rbd pool=other")])
        .monitor_only()
        .start()
        .await
}

/// osd.0 only and pool `rbd` (8 PGs, size 1).
pub async fn start() -> Cluster {
    start_with(1, vec![(POOL, PG_NUM, 1)]).await
}

/// A monitor session as client.admin.
pub async fn admin(cluster: &Cluster) -> MonClient {
    MonClient::connect(cluster.mon_addr(), EntityName::client("admin"), cluster.admin_key()).await
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
        self.try_exec_with_id(name, snapc, snap, ops, None).await
    }

    /// [`OsdClient::try_exec`] with a request id.
    pub async fn try_exec_with_id(
        &self,
        name: &str,
        snapc: &SnapContext,
        snap: SnapId,
        ops: Vec<ObjectOp>,
        reqid: Option<quarry_types::ReqId>,
    ) -> Result<OpResult, quarry_wire::WireError> {
        for _ in 0..100 {
            let op = OsdOp {
                reqid,
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

    /// An op vector with a request id.
    pub async fn exec_with_id(
        &self,
        name: &str,
        ops: Vec<ObjectOp>,
        reqid: quarry_types::ReqId,
    ) -> OpResult {
        let snapc = SnapContext::default();
        self.try_exec_with_id(name, &snapc, SNAP_HEAD, ops, Some(reqid)).await.unwrap()
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

/// Declares what openraft logs while the PGs of a replicated pool elect their first leaders
/// with OSDs that start together, or lose a peer that restarts (see
/// `LogGuard::allow_raft_churn`).
pub fn allow_election_noise(cluster: &Cluster) {
    cluster.logs().allow_raft_churn();
}
