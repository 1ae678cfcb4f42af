//! A test cluster: one monitor and N OSDs in this process, on loopback, in a tempdir.
//! OSDs can be stopped and restarted on the same data directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quarry_auth::CryptoKey;
use quarry_client::{ClientConfig, PgId, PoolId, Rados};
use quarry_mon::{Bootstrap, MonConfig, MonHandle};
use quarry_osd::{OsdConfig, OsdHandle};
use quarry_types::EntityName;

/// Options of a test cluster.
pub struct Spec {
    pub osds: u64,
    pub pools: Vec<(String, u32, u32)>,
    pub ticket_ttl: Duration,
    /// Extra entities: (name, caps as (service, cap) pairs).
    pub users: Vec<(String, Vec<(&'static str, &'static str)>)>,
}

impl Default for Spec {
    fn default() -> Spec {
        Spec {
            osds: 3,
            pools: vec![("rbd".into(), 16, 1)],
            ticket_ttl: Duration::from_secs(300),
            users: Vec::new(),
        }
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub mon: Option<MonHandle>,
    pub mon_addr: SocketAddr,
    pub osds: Vec<Option<OsdHandle>>,
    pub osd_keys: Vec<CryptoKey>,
    pub admin_key: CryptoKey,
    pub user_keys: BTreeMap<String, CryptoKey>,
}

fn caps(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(s, c)| (s.to_string(), c.to_string())).collect()
}

/// Logs go to the test's output when `RUST_LOG` is set.
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl Cluster {
    pub async fn start(spec: Spec) -> Cluster {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let admin_key = CryptoKey::generate();
        let osd_keys: Vec<CryptoKey> = (0..spec.osds).map(|_| CryptoKey::generate()).collect();
        let mut entities = vec![(
            EntityName::client("admin"),
            admin_key.clone(),
            caps(&[("mon", "allow *"), ("osd", "allow *")]),
        )];
        for (i, key) in osd_keys.iter().enumerate() {
            entities.push((
                EntityName::osd(i as u64),
                key.clone(),
                caps(&[("mon", "profile osd"), ("osd", "profile osd")]),
            ));
        }
        let mut user_keys = BTreeMap::new();
        for (name, user_caps) in &spec.users {
            let key = CryptoKey::generate();
            entities.push((EntityName::client(name), key.clone(), caps(user_caps)));
            user_keys.insert(name.clone(), key);
        }
        let bootstrap = Bootstrap {
            fsid: "00000000-0000-4000-8000-00000000c11e".into(),
            entities,
            osds: (0..spec.osds).map(|i| (i, format!("host{i}"))).collect(),
            pools: spec.pools.clone(),
        };
        let mut cfg = MonConfig::new("a", dir.path().join("mon"), "127.0.0.1:0".parse().unwrap());
        cfg.bootstrap = Some(bootstrap);
        cfg.ticket_ttl = spec.ticket_ttl;
        cfg.osd_grace = Duration::from_secs(2);
        cfg.pool_default_size = 1;
        cfg.pool_default_pg_num = 8;
        let mon = quarry_mon::start(cfg).await.unwrap();
        let mon_addr = mon.addr();
        let mut cluster = Cluster {
            dir,
            mon: Some(mon),
            mon_addr,
            osds: (0..spec.osds).map(|_| None).collect(),
            osd_keys,
            admin_key,
            user_keys,
        };
        let starts: Vec<_> =
            (0..spec.osds).map(|i| quarry_osd::start(cluster.osd_config(i))).collect();
        for (i, started) in futures_join(starts).await.into_iter().enumerate() {
            cluster.osds[i] = Some(started.unwrap());
        }
        cluster.wait_all_up().await;
        cluster
    }

    fn osd_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("osd.{id}"))
    }

    fn osd_config(&self, id: u64) -> OsdConfig {
        OsdConfig {
            id,
            data_dir: self.osd_dir(id),
            listen: "127.0.0.1:0".parse().unwrap(),
            mon_addrs: vec![self.mon_addr],
            key: self.osd_keys[id as usize].clone(),
            host: format!("host{id}"),
        }
    }

    fn mon(&self) -> &MonHandle {
        self.mon.as_ref().unwrap()
    }

    /// Waits until every OSD that runs is up in the monitor's map.
    pub async fn wait_all_up(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let map = self.mon().map();
            let running = self.osds.iter().enumerate().filter(|(_, h)| h.is_some());
            if running.clone().all(|(i, _)| map.osds.get(&(i as u64)).is_some_and(|o| o.up)) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "OSDs not up in time: {:?}", map.osds);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn admin_config(&self) -> ClientConfig {
        self.config(EntityName::client("admin"), self.admin_key.clone())
    }

    pub fn config(&self, entity: EntityName, key: CryptoKey) -> ClientConfig {
        ClientConfig {
            mon_addrs: vec![self.mon_addr],
            entity,
            key,
            connect_timeout: Duration::from_secs(10),
            op_timeout: Some(Duration::from_secs(60)),
        }
    }

    pub fn user_config(&self, name: &str) -> ClientConfig {
        self.config(EntityName::client(name), self.user_keys[name].clone())
    }

    pub async fn admin(&self) -> Rados {
        Rados::connect(self.admin_config()).await.unwrap()
    }

    pub async fn stop_osd(&mut self, id: u64) {
        let handle = self.osds[id as usize].take().expect("OSD running");
        handle.shutdown().await;
    }

    pub async fn restart_osd(&mut self, id: u64) {
        assert!(self.osds[id as usize].is_none());
        let handle = quarry_osd::start(self.osd_config(id)).await.unwrap();
        self.osds[id as usize] = Some(handle);
    }

    pub async fn shutdown(mut self) {
        for handle in self.osds.iter_mut().filter_map(Option::take) {
            handle.shutdown().await;
        }
        if let Some(mon) = self.mon.take() {
            mon.shutdown().await;
        }
    }
}

/// Runs futures concurrently on the current task and collects their outputs in order.
pub async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// An object name whose PG in a pool of `pg_num` PGs is `seed`.
pub fn name_in_pg(prefix: &str, pg_num: u32, seed: u32) -> String {
    (0..)
        .map(|i| format!("{prefix}-{seed}-{i}"))
        .find(|n| quarry_placement::pg_of(n, pg_num) == seed)
        .unwrap()
}

/// The PGs of `pool` whose primary is `osd`.
pub fn pgs_with_primary(rados: &Rados, pool: PoolId, osd: u64) -> Vec<PgId> {
    let map = rados.map();
    let info = &map.pools[&pool];
    (0..info.pg_num)
        .filter(|&seed| info.acting[seed as usize].first() == Some(&osd))
        .map(|seed| PgId { pool, seed })
        .collect()
}
