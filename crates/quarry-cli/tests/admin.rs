//! One admin implementation for every frontend: `ceph … [-f json]` and
//! `Rados::mon_command(json, inbuf)` (what `rados_mon_command` from python3-rados and the C
//! ABI call) return the same bytes, the same status line and the same errno, against a real
//! `quarry up` cluster.

mod common;

use std::path::Path;

use common::*;
use quarry_client::{ClientConfig, Rados};
use quarry_conf::CommonArgs;

fn ceph(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("ceph", Some(conf), args), None, COMMAND_TIMEOUT)
}

async fn connect(conf: &Path) -> Rados {
    let args = CommonArgs { conf: Some(conf.to_path_buf()), ..Default::default() };
    let (parsed, _) = args.load_conf().unwrap();
    let cfg = ClientConfig::from_conf(&parsed, &args).unwrap();
    Rados::connect(cfg).await.unwrap()
}

/// Runs `args` with the `ceph` tool and `request` through `mon_command`, and checks that
/// both said the same: data bytes, status line, errno.
async fn same(rados: &Rados, conf: &Path, args: &[&str], request: &str) {
    let cli = ceph(conf, args);
    let lib = rados.mon_command(request, b"").await;
    let what = format!("ceph {} vs {request}", args.join(" "));
    match lib.error_code() {
        None => {
            assert_eq!(cli.code(), 0, "{what}: ceph failed: {}", cli.stderr);
            assert_eq!(cli.stdout, lib.outbuf, "{what}: different data");
            assert!(!lib.outbuf.is_empty() || !lib.outs.is_empty(), "{what}: empty reply");
            assert_eq!(cli.stderr.trim_end(), lib.outs, "{what}: different status line");
        }
        Some(code) => {
            assert_eq!(cli.code(), code.0, "{what}: exit status vs rc {}", lib.rc);
            assert!(cli.stdout.is_empty() && lib.outbuf.is_empty(), "{what}: data on failure");
            let name = quarry_client::admin::errno_name(code);
            assert_eq!(cli.stderr.trim_end(), format!("Error {name}: {}", lib.outs), "{what}");
        }
    }
}

#[test]
fn ceph_tool_and_mon_command_answer_alike() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 2);
    let conf = dir.join("ceph.conf");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let rados = connect(&conf).await;
        let r = &rados;
        let c = conf.as_path();
        same(r, c, &["osd", "tree", "-f", "json"], r#"{"prefix": "osd tree", "format": "json"}"#)
            .await;
        same(r, c, &["osd", "tree"], r#"{"prefix": "osd tree"}"#).await;
        same(
            r,
            c,
            &["osd", "pool", "ls", "detail", "-f", "json-pretty"],
            r#"{"prefix": "osd pool ls", "detail": "detail", "format": "json-pretty"}"#,
        )
        .await;
        same(r, c, &["auth", "ls", "-f", "json"], r#"{"prefix": "auth ls", "format": "json"}"#)
            .await;
        same(r, c, &["auth", "ls"], r#"{"prefix": "auth ls"}"#).await;
        same(r, c, &["osd", "dump", "-f", "json"], r#"{"prefix": "osd dump", "format": "json"}"#)
            .await;
        same(r, c, &["mon", "dump"], r#"{"prefix": "mon dump"}"#).await;
        same(r, c, &["fsid", "-f", "json"], r#"{"prefix": "fsid", "format": "json"}"#).await;
        same(r, c, &["health", "detail"], r#"{"prefix": "health", "detail": "detail"}"#).await;
        same(
            r,
            c,
            &["osd", "pool", "get", "rbd", "all"],
            r#"{"prefix": "osd pool get", "pool": "rbd", "var": "all"}"#,
        )
        .await;
        // Failures: the same errno and reason.
        same(
            r,
            c,
            &["osd", "pool", "get", "nosuch", "size"],
            r#"{"prefix": "osd pool get", "pool": "nosuch", "var": "size"}"#,
        )
        .await;
        same(
            r,
            c,
            &["osd", "pool", "create", "p", "0"],
            r#"{"prefix": "osd pool create", "pool": "p", "pg_num": 0}"#,
        )
        .await;
        same(
            r,
            c,
            &["auth", "get", "client.nobody"],
            r#"{"prefix": "auth get", "entity": "client.nobody"}"#,
        )
        .await;
        // Changes: the same status lines (two pools, so both calls really create one).
        let lib = r.mon_command(r#"{"prefix":"osd pool create","pool":"a","pg_num":8}"#, b"").await;
        assert_eq!((lib.rc, lib.outs.as_str()), (0, "pool 'a' created"));
        let cli = ceph(c, &["osd", "pool", "create", "b", "8"]).ok("pool create");
        assert_eq!(cli.stderr.trim_end(), "pool 'b' created");
        same(r, c, &["osd", "pool", "ls"], r#"{"prefix": "osd pool ls"}"#).await;

        // librados' form: a list holding the command's JSON text.
        let listed = r.mon_command(r#"["{\"prefix\": \"osd pool ls\"}"]"#, b"").await;
        assert_eq!(String::from_utf8(listed.outbuf).unwrap(), "rbd\na\nb\n");
        // An input buffer: `auth import`.
        let keyring = "[client.imported]\n\tkey = AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==\n";
        let lib = r.mon_command(r#"{"prefix": "auth import"}"#, keyring.as_bytes()).await;
        assert_eq!(lib.rc, 0, "{}", lib.outs);
        let key = ceph(c, &["auth", "get-key", "client.imported"]).ok("get-key").out();
        assert_eq!(key, "AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==\n");
        // Requests the monitor cannot take: EINVAL with a reason, nothing changed.
        for bad in ["{", "[]", r#"{"prefix": "osd frobnicate"}"#, r#"{"pool": "x"}"#] {
            let reply = r.mon_command(bad, b"").await;
            assert_eq!(reply.rc, -22, "{bad}: {reply:?}");
            assert!(!reply.outs.is_empty(), "{bad}");
        }
        rados.shutdown().await;
    });
}
