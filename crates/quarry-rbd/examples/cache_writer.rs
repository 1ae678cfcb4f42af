//! A writer process for the cache's SIGKILL test (`tests/cache.rs`): opens IMAGE with the
//! cache settings of CONF (`rbd_cache*` in `[client]`), writes 4 KiB block after block,
//! printing `acked N` once write N returned and `flushed N` once a flush issued after
//! write N returned; it flushes every 50 writes and runs until killed.
//!
//! Usage: `cache_writer CONF IMAGE` (pool `rbd`, entity `client.admin`).

use bytes::Bytes;
use quarry_client::{ClientConfig, Rados};
use quarry_conf::CommonArgs;
use quarry_rbd::{CacheConfig, Image, OpenOptions};
use quarry_types::EntityName;
use std::io::Write;

const BLOCK: u64 = 4096;

fn block(i: u64) -> Vec<u8> {
    (0..BLOCK).map(|j| (i as u8).wrapping_mul(31) ^ (j as u8) | 1).collect()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(conf_path), Some(image_name)) = (args.next(), args.next()) else {
        eprintln!("usage: cache_writer CONF IMAGE");
        std::process::exit(2);
    };
    let common = CommonArgs { conf: Some(conf_path.into()), ..CommonArgs::default() };
    let (conf, _) = common.load_conf().expect("conf");
    let config = ClientConfig::from_conf(&conf, &common).expect("client config");
    let cache = CacheConfig::from_conf(&conf, &EntityName::client("admin")).expect("cache config");
    let rados = Rados::connect(config).await.expect("connect");
    let io = rados.ioctx("rbd").await.expect("pool");
    let image = Image::open(&io, &image_name, OpenOptions { cache, ..Default::default() })
        .await
        .expect("open");
    let mut out = std::io::stdout();
    for i in 0u64.. {
        image.write(i * BLOCK, Bytes::from(block(i))).await.expect("write");
        writeln!(out, "acked {i}").unwrap();
        out.flush().unwrap();
        if i % 50 == 49 {
            image.flush().await.expect("flush");
            writeln!(out, "flushed {i}").unwrap();
            out.flush().unwrap();
        }
    }
}
