//! 4 KiB write throughput of an image with the cache settings of a ceph.conf (`rbd_cache*`
//! in `[client]`): COUNT writes, sequential or random, THREADS in flight, the final flush
//! included in the time (so writeback figures count the data reaching the cluster).
//!
//! Usage: `cache_bench CONF IMAGE seq|rand COUNT THREADS` (pool `rbd`, `client.admin`);
//! prints `PATTERN THREADS: N writes in S s = IOPS IOPS (MiB/s)`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use quarry_client::{ClientConfig, Rados};
use quarry_conf::CommonArgs;
use quarry_rbd::{CacheConfig, Image, OpenOptions};
use quarry_types::EntityName;
use rand::Rng;

const BLOCK: u64 = 4096;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [conf_path, image_name, pattern, count, threads] = args.as_slice() else {
        eprintln!("usage: cache_bench CONF IMAGE seq|rand COUNT THREADS");
        std::process::exit(2);
    };
    let count: u64 = count.parse().expect("COUNT");
    let threads: u64 = threads.parse().expect("THREADS");
    let common = CommonArgs { conf: Some(conf_path.into()), ..CommonArgs::default() };
    let (conf, _) = common.load_conf().expect("conf");
    let config = ClientConfig::from_conf(&conf, &common).expect("client config");
    let cache = CacheConfig::from_conf(&conf, &EntityName::client("admin")).expect("cache config");
    let rados = Rados::connect(config).await.expect("connect");
    let io = rados.ioctx("rbd").await.expect("pool");
    let image = Image::open(&io, image_name, OpenOptions { cache, ..Default::default() })
        .await
        .expect("open");
    let blocks = image.size().await / BLOCK;
    // Take the lock and end writethrough-until-flush before timing.
    image.write(0, Bytes::from(vec![1u8; BLOCK as usize])).await.expect("write");
    image.flush().await.expect("flush");
    let next = Arc::new(AtomicU64::new(0));
    let random = pattern == "rand";
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..threads {
        let (image, next) = (image.clone(), next.clone());
        set.spawn(async move {
            let data = Bytes::from(vec![0xa5u8; BLOCK as usize]);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let k = if random { rand::thread_rng().gen_range(0..blocks) } else { i % blocks };
                image.write(k * BLOCK, data.clone()).await.expect("write");
            }
        });
    }
    while set.join_next().await.is_some() {}
    image.flush().await.expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let iops = count as f64 / secs;
    println!(
        "{pattern} {threads}: {count} writes in {secs:.2} s = {iops:.0} IOPS ({:.1} MiB/s)",
        iops * BLOCK as f64 / (1 << 20) as f64
    );
    image.close().await.expect("close");
}
