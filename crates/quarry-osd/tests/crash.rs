//! SIGKILL recovery: the OSD runs in a child process (this test binary re-executed with
//! `--ignored --exact crash::osd_child`), many writers write versioned objects, the child is
//! killed at a random moment, restarted on the same dir, and every object must hold its last
//! acknowledged version (or the version that was in flight when the OSD died), and nothing
//! that was never written may appear.
//!
//! SIGKILL keeps the kernel's page cache, so the same rounds also run as **power losses**
//! (`power_loss_loses_no_acknowledged_write`): the child runs with
//! `QUARRY_TEST_POWERLOSS=SEED` (`quarry_persist::powerloss`), which keeps everything its WAL
//! and store write since their last fsync in a user-space cache (a random part of it is
//! written back, as a kernel does); the kill then loses exactly what a power cut loses.
//!
//! One more writer has a connection of its own and writes 1–2 MiB versions one at a time:
//! the OSD writes those to their place while they arrive (`pg::preplace`), so kills and
//! power cuts also land in the middle of such writes (the rounds check that some were).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quarry_types::ErrorCode;
use rand::{Rng, SeedableRng};

use crate::common::{self, Cluster, MonClient, OsdClient};

const ROUNDS: usize = 5;
const POWER_LOSS_ROUNDS: usize = 4;
const WRITERS: usize = 8;
const OBJECTS_PER_WRITER: usize = 4;

/// Entry point of the child process; does nothing unless started by the crash test.
#[test]
#[ignore = "run by the crash test in a child process"]
fn osd_child() {
    let Some(cfg) = quarry_testkit::osd_config_from_env() else {
        return;
    };
    let addr_file = PathBuf::from(std::env::var("QUARRY_OSD_CHILD_ADDR_FILE").unwrap());
    quarry_testkit::logs::install();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let osd = quarry_osd::start(cfg).await.unwrap();
        let addr = osd.addr().to_string();
        quarry_persist::write_atomic(&addr_file, addr.as_bytes(), 0o644).unwrap();
        std::future::pending::<()>().await;
    });
}

/// Starts the OSD child; with `powerloss`, under the power-loss simulator with that seed
/// (and its options, e.g. `SEED,fsync-noop`).
fn spawn_child(cluster: &Cluster, addr_file: &Path, powerloss: Option<&str>) -> Child {
    let _ = std::fs::remove_file(addr_file);
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "crash::osd_child", "--ignored", "--nocapture", "--test-threads=1"])
        .envs(quarry_testkit::osd_child_env(&cluster.osd_config(0)))
        .env("QUARRY_OSD_CHILD_ADDR_FILE", addr_file)
        .env_remove(quarry_persist::powerloss::ENV_VAR)
        .stdout(Stdio::null());
    if let Some(setting) = powerloss {
        command.env(quarry_persist::powerloss::ENV_VAR, setting);
    }
    command.spawn().unwrap()
}

async fn child_addr(addr_file: &Path, child: &mut Child) -> std::net::SocketAddr {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(addr_file) {
            return text.parse().unwrap();
        }
        assert!(child.try_wait().unwrap().is_none(), "the OSD child exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the OSD child did not start");
}

/// The bytes of version `v` of `name` (sizes vary from a few bytes to several chunks; every
/// third version is 64 to 256 KiB of whole chunks, which the one-replica PG writes once:
/// placed in the store when its entry is appended, the entry naming it). The large writer's
/// objects get 1 to 2 MiB of whole chunks, placed while they arrive.
fn payload(name: &str, v: u64) -> Vec<u8> {
    let len = if name.starts_with(LARGE) {
        (256 + ((v * 31 + name.len() as u64) % 257) as usize) * 4096
    } else if v % 3 == 2 {
        (16 + ((v * 31 + name.len() as u64) % 49) as usize) * 4096
    } else {
        1 + ((v * 7919 + name.len() as u64 * 104_729) % 20_000) as usize
    };
    format!("{name}:{v}:").bytes().cycle().take(len).collect()
}

/// What the test knows of each object.
#[derive(Default)]
struct Knowledge {
    /// Last acknowledged version.
    acked: Option<u64>,
    /// Version sent but not acknowledged when the OSD died.
    inflight: Option<u64>,
}

type Model = Arc<Mutex<BTreeMap<String, Knowledge>>>;

/// Objects of the large writer (writer `WRITERS`) are named with this prefix.
const LARGE: &str = "crash-large-";

fn names() -> Vec<String> {
    let small = (0..WRITERS * OBJECTS_PER_WRITER).map(|i| format!("crash-{i}"));
    small.chain((0..OBJECTS_PER_WRITER).map(|i| format!("{LARGE}{i}"))).collect()
}

/// The OSD child's count of writes placed while they arrived (`perf dump`); 0 if it does not
/// answer (it may be dying).
async fn placed_on_arrival(client: &OsdClient) -> u64 {
    let words = vec!["perf".to_string(), "dump".to_string()];
    let told = tokio::time::timeout(
        Duration::from_secs(2),
        client.rpc.call(quarry_wire::Request::Tell { words }),
    )
    .await;
    let Ok(Ok(quarry_wire::Reply::Told { output, .. })) = told else { return 0 };
    let value: serde_json::Value = serde_json::from_str(&output).unwrap();
    value["quarry_write_once"]["placed_on_arrival"].as_u64().unwrap()
}

/// Checks every object against the model after a restart and settles uncertain versions.
async fn verify(client: &OsdClient, model: &Model) -> usize {
    let mut checked = 0;
    for name in names() {
        let got = client.read(&name).await;
        let mut model = model.lock().unwrap();
        let k = model.entry(name.clone()).or_default();
        match got {
            Err(ErrorCode::ENOENT) => {
                assert!(k.acked.is_none(), "{name}: acknowledged v{:?} is gone", k.acked);
            }
            Ok(data) => {
                let seen = [k.inflight, k.acked]
                    .into_iter()
                    .flatten()
                    .find(|&v| payload(&name, v) == data)
                    .unwrap_or_else(|| {
                        panic!(
                            "{name}: {} bytes match neither acked {:?} nor in-flight {:?}",
                            data.len(),
                            k.acked,
                            k.inflight
                        )
                    });
                k.acked = Some(seen);
                checked += 1;
            }
            Err(code) => panic!("{name}: read failed with {code}"),
        }
        k.inflight = None;
    }
    checked
}

/// Writes versions of its objects until the connection dies.
async fn writer(client: Arc<OsdClient>, model: Model, index: usize) -> u64 {
    let mine: Vec<String> =
        names().into_iter().skip(index * OBJECTS_PER_WRITER).take(OBJECTS_PER_WRITER).collect();
    let mut acked = 0;
    for turn in 0.. {
        let name = &mine[turn % mine.len()];
        let v = {
            let mut model = model.lock().unwrap();
            let k = model.entry(name.clone()).or_default();
            let v = k.acked.unwrap_or(0) + 1;
            k.inflight = Some(v);
            v
        };
        let write = vec![quarry_types::ObjectOp::WriteFull {
            data: quarry_types::Payload::new(payload(name, v)),
        }];
        match client.try_exec(name, &Default::default(), quarry_types::SNAP_HEAD, write).await {
            Ok(Ok(_)) => {
                let mut model = model.lock().unwrap();
                let k = model.get_mut(name).unwrap();
                k.acked = Some(v);
                k.inflight = None;
                acked += 1;
            }
            Ok(Err(code)) => panic!("{name}: write failed with {code}"),
            Err(_) => return acked,
        }
    }
    acked
}

async fn connect(
    admin: &MonClient,
    addr_file: &Path,
    child: &mut Child,
    up_from: &mut u64,
) -> Arc<OsdClient> {
    let addr = child_addr(addr_file, child).await;
    let map = admin.wait_osd_up(*up_from).await;
    *up_from = map.osds[&0].up_from;
    Arc::new(admin.osd_client(addr).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_acknowledged_write() {
    crash_rounds(ROUNDS, false).await;
}

/// The same rounds as power losses (see the module docs). `QUARRY_TEST_POWERLOSS_OPTIONS`
/// (e.g. `fsync-noop`) is appended to the child's setting: with `fsync-noop` this test must
/// fail (it did: acknowledged versions were gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn power_loss_loses_no_acknowledged_write() {
    crash_rounds(POWER_LOSS_ROUNDS, true).await;
}

async fn crash_rounds(rounds: usize, power_loss: bool) {
    let cluster = common::start().await;
    // SIGKILLed OSDs: the monitor may mark osd.0 down before the next incarnation boots.
    cluster.logs().allow("no beacon within grace: marking osd down osd=0");
    let admin = common::admin(&cluster).await;
    let addr_file = cluster.dir().join("osd-addr");
    let seed: u64 = rand::random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let model: Model = Arc::default();
    let mut up_from = 0;
    let mut total_acked = 0;
    let mut total_streamed = 0;
    let options = std::env::var("QUARRY_TEST_POWERLOSS_OPTIONS").unwrap_or_default();
    for round in 0..rounds {
        let setting = format!("{},{options}", seed.wrapping_add(round as u64));
        let mut child = spawn_child(&cluster, &addr_file, power_loss.then_some(setting.as_str()));
        let client = connect(&admin, &addr_file, &mut child, &mut up_from).await;
        let intact = verify(&client, &model).await;
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            writers.spawn(writer(client.clone(), model.clone(), w));
        }
        // The large writer, alone on its connection (queue depth 1 there).
        let alone = Arc::new(admin.osd_client(child_addr(&addr_file, &mut child).await).await);
        writers.spawn(writer(alone, model.clone(), WRITERS));
        // Short rounds kill before any checkpoint (everything replays from the WAL); long ones
        // kill after checkpoints and log purges (replay starts from the store's pg_state).
        let delay = Duration::from_millis(if round % 2 == 0 {
            rng.gen_range(100..1500)
        } else {
            rng.gen_range(5500..8000)
        });
        tokio::time::sleep(delay).await;
        let streamed = placed_on_arrival(&client).await;
        total_streamed += streamed;
        child.kill().unwrap();
        child.wait().unwrap();
        let mut acked = 0;
        while let Some(done) = writers.join_next().await {
            acked += done.unwrap();
        }
        eprintln!("round {round}: {intact} objects intact after restart, {acked} writes acked ({streamed} placed while they arrived), killed after {delay:?} (power loss: {power_loss})");
        total_acked += acked;
    }
    let mut child = spawn_child(&cluster, &addr_file, None);
    let client = connect(&admin, &addr_file, &mut child, &mut up_from).await;
    verify(&client, &model).await;
    let written: BTreeSet<String> = names().into_iter().collect();
    for name in client.list_all().await {
        assert!(written.contains(&name), "{name} was never written but is listed");
    }
    for i in 0..20 {
        assert_eq!(client.read(&format!("never-{i}")).await, Err(ErrorCode::ENOENT));
    }
    assert!(total_acked > 0, "the writers made progress");
    assert!(total_streamed > 0, "no write was placed while it arrived");
    child.kill().unwrap();
    child.wait().unwrap();
    cluster.shutdown().await;
}
