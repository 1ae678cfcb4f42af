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

/// What scripts around Ceph parse (issue 13, "Breaks callers"), against a live cluster:
/// - OpenStack Nova's and Cinder's monitor lookup, re-implemented from their code
///   (`nova/virt/libvirt/storage/rbd_utils.py` `get_mon_addrs`, Cinder's rbd driver alike):
///   `ceph mon dump --format=json`, drop a leading "dumped monmap epoch" line if stdout has
///   one, take each `mons[].addr`, cut at the last `/`, split host and port at the last `:`,
///   strip `[]`. Quarry's bare `IP:PORT` made their `rindex('/')` raise ValueError.
/// - `ceph --version` / `rbd --version` / `rados --version` in Ceph's
///   `ceph version X.Y.Z... (SHA) NAME (stable)` shape; `ceph versions` as JSON counts.
/// - Ceph's generic options (`--no-mon-config`, `--debug-ms 1`, `--debug_osd=5/5`,
///   `--connect-timeout 5`, `--log-file F`, `--admin-socket P`, `--cluster ceph`) accepted
///   by every tool, also in `CEPH_ARGS`; a bad value of a known option refused by name.
/// - `ceph auth del` of a missing user: exit 0 and "entity X does not exist", as Ceph.
/// - `-o FILE` in a missing directory refused before the command runs.
/// - `ceph pg stat|ls`, `pg dump pgs_brief`, `osd df [tree]`, `osd crush tree`,
///   `quorum_status`, `df detail`, `osd pool application get`, `osd pool get-quota|set-quota`
///   (no quotas: only 0 is accepted, anything else is EOPNOTSUPP).
#[test]
fn scripts_parse_what_ceph_prints() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let conf_text = std::fs::read_to_string(&conf).unwrap();

    let dump = ceph(&conf, &["mon", "dump", "--format=json"]).ok("mon dump");
    let mut lines: Vec<String> = dump.out().lines().map(String::from).collect();
    if lines.first().is_some_and(|l| l.starts_with("dumped monmap epoch")) {
        lines.remove(0);
    }
    let monmap: serde_json::Value = serde_json::from_str(&lines.join("\n")).unwrap();
    let mut found = Vec::new();
    for mon in monmap["mons"].as_array().unwrap() {
        let addr = mon["addr"].as_str().unwrap();
        let host_port = &addr[..addr.rfind('/').expect("Nova's addr.rindex('/')")];
        let (host, port) = host_port.rsplit_once(':').unwrap();
        found.push(format!("{}:{}", host.trim_matches(|c| c == '[' || c == ']'), port));
    }
    assert_eq!(found.len(), 1);
    assert!(conf_text.contains(&found[0]), "{found:?} is not the conf's monitor:\n{conf_text}");
    assert_eq!(dump.stderr.trim_end(), format!("dumped monmap epoch {}", monmap["epoch"]));
    let addrvec = &monmap["mons"][0]["public_addrs"]["addrvec"][0];
    assert_eq!(addrvec["type"], "v2");
    assert_eq!(addrvec["addr"].as_str().unwrap(), found[0]);
    let plain = ceph(&conf, &["mon", "dump"]).ok("mon dump").out();
    assert!(plain.contains(&format!("0: [v2:{}/0] mon.", found[0])), "{plain}");

    let version_shape = |text: &str| {
        let words: Vec<&str> = text.trim_end().split(' ').collect();
        assert_eq!(&words[..2], ["ceph", "version"], "{text}");
        let release: Vec<&str> = words[2].split(['.', '-']).take(3).collect();
        assert!(release.iter().all(|n| n.parse::<u32>().is_ok()), "{text}");
        assert!(words[3].starts_with('(') && words[3].ends_with(')'), "{text}");
        assert_eq!(&words[4..], ["pacific", "(stable)"], "{text}");
    };
    version_shape(&ceph(&conf, &["--version"]).ok("ceph --version").out());
    for tool in ["rbd", "rados"] {
        let run = run_bounded(tool_cmd(tool, None, &["--version"]), None, COMMAND_TIMEOUT);
        version_shape(&run.ok(tool).out());
    }
    let versions: serde_json::Value =
        serde_json::from_slice(&ceph(&conf, &["versions"]).ok("versions").stdout).unwrap();
    let count = |kind: &str| versions[kind].as_object().unwrap().values().next().cloned();
    assert_eq!(count("mon"), Some(serde_json::json!(1)));
    assert_eq!(count("osd"), Some(serde_json::json!(1)));
    assert_eq!(count("overall"), Some(serde_json::json!(2)));

    let generic = [
        "--no-mon-config",
        "--debug-ms",
        "1",
        "--debug_osd=5/5",
        "--connect-timeout",
        "5",
        "--log-file",
        "/dev/null",
        "--admin-socket",
        "/nonexistent/x.asok",
        "--cluster",
        "ceph",
    ];
    let with = |first: &[&'static str]| -> Vec<&'static str> { [first, &generic[..]].concat() };
    ceph(&conf, &with(&["health"])).ok("ceph with generic options");
    let rados =
        |args: &[&str]| run_bounded(tool_cmd("rados", Some(&conf), args), None, COMMAND_TIMEOUT);
    rados(&with(&["lspools"])).ok("rados with generic options");
    let rbd = run_bounded(tool_cmd("rbd", Some(&conf), &with(&["ls"])), None, COMMAND_TIMEOUT);
    rbd.ok("rbd with generic options");
    let mut env = tool_cmd("rados", Some(&conf), &["lspools"]);
    env.env("CEPH_ARGS", "--no-mon-config --debug-ms 0 --connect-timeout 5");
    run_bounded(env, None, COMMAND_TIMEOUT).ok("CEPH_ARGS with generic options");
    let bad = rados(&["--client-mount-timeout", "soon", "lspools"]);
    assert_ne!(bad.code(), 0);
    assert!(bad.stderr.contains("client_mount_timeout"), "{}", bad.stderr);

    let del = ceph(&conf, &["auth", "del", "client.nosuch"]).ok("auth del of a missing user");
    assert_eq!(del.stderr.trim_end(), "entity client.nosuch does not exist");

    // What monitoring agents poll: PG states, per-OSD usage, quorum, df detail.
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_slice(&ceph(&conf, args).ok(&args.join(" ")).stdout).unwrap()
    };
    // Right after `ready` a PG may still show `creating` for up to one beacon (the OSD's
    // first beacon can be computed before its last PG's first entry is applied, and reach
    // the monitor after `quarry up` listed every PG): wait for all of them to be clean.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (stat, pgs) = loop {
        let stat = json(&["pg", "stat", "-f", "json"]);
        let pgs = stat["num_pgs"].as_u64().unwrap();
        let clean = serde_json::json!([{"name": "active+clean", "num": pgs}]);
        if pgs > 0 && stat["num_pg_by_state"] == clean {
            break (stat, pgs);
        }
        assert!(std::time::Instant::now() < deadline, "not all PGs active+clean in 30 s: {stat}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(pgs > 0, "{stat}");
    let listed = json(&["pg", "ls", "-f", "json"]);
    let listed = listed["pg_stats"].as_array().unwrap();
    assert_eq!(listed.len() as u64, pgs);
    assert!(listed.iter().all(|p| p["state"] == "active+clean" && p["acting_primary"] == 0));
    let brief = ceph(&conf, &["pg", "dump", "pgs_brief"]).ok("pg dump pgs_brief");
    assert_eq!(brief.out().lines().count() as u64, pgs + 1, "{}", brief.out());
    let plain = ceph(&conf, &["pg", "stat"]).ok("pg stat").out();
    assert!(plain.starts_with(&format!("{pgs} pgs: {pgs} active+clean; ")), "{plain}");
    let df = json(&["osd", "df", "-f", "json"]);
    assert_eq!(df["nodes"][0]["name"], "osd.0");
    assert_eq!(df["nodes"][0]["pgs"].as_u64(), Some(pgs));
    assert!(df["summary"]["total_kb"].as_u64().unwrap() > 0, "{df}");
    let tree = ceph(&conf, &["osd", "df", "tree"]).ok("osd df tree").out();
    assert!(tree.contains("root default") && tree.contains("osd.0"), "{tree}");
    let quorum = json(&["quorum_status"]);
    assert_eq!(quorum["quorum_names"], serde_json::json!(["a"]));
    assert_eq!(quorum["monmap"]["mons"][0]["addr"], monmap["mons"][0]["addr"]);
    let crush = ceph(&conf, &["osd", "crush", "tree"]).ok("osd crush tree").out();
    assert!(crush.starts_with("ID  CLASS") && crush.contains("        osd.0"), "{crush}");
    let apps = ceph(&conf, &["osd", "pool", "application", "get", "rbd"]).ok("application get");
    assert_eq!(apps.out(), "{\n    \"rbd\": {}\n}\n");
    let quota = ceph(&conf, &["osd", "pool", "get-quota", "rbd"]).ok("get-quota").out();
    assert_eq!(quota, "quotas for pool 'rbd':\n  max objects: N/A\n  max bytes  : N/A\n");
    ceph(&conf, &["osd", "pool", "set-quota", "rbd", "max_objects", "0"]).ok("set-quota 0");
    let set = ceph(&conf, &["osd", "pool", "set-quota", "rbd", "max_bytes", "100"]);
    assert_eq!(set.ok("set-quota").stderr.trim_end(), "set-quota max_bytes = 100 for pool rbd");
    ceph(&conf, &["osd", "pool", "set-quota", "rbd", "max_bytes", "0"]).ok("no quota");
    let detail = ceph(&conf, &["df", "detail"]).ok("df detail").out();
    assert!(detail.contains("QUOTA OBJECTS") && detail.contains("rbd"), "{detail}");

    // `-o` into a missing directory fails before the user is created (it used to create
    // the user, then fail to save its key).
    let out = tmp.path().join("missing-dir/ceph.client.lost.keyring");
    let out = out.to_str().unwrap();
    let r = ceph(&conf, &["auth", "get-or-create", "client.lost", "mon", "allow r", "-o", out]);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("can't open") && r.stderr.contains("No such file"), "{}", r.stderr);
    assert_eq!(ceph(&conf, &["auth", "get", "client.lost"]).code(), 2, "the user was created");
}

/// `rados touch` creates an object or moves its modification time; `rados cp` copies data
/// (across several reads), xattrs, the omap header and entries, within a pool and to
/// `--target-pool`, replacing what the target held; copying onto itself is refused.
#[test]
fn rados_touch_and_cp() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let rados =
        |args: &[&str]| run_bounded(tool_cmd("rados", Some(&conf), args), None, COMMAND_TIMEOUT);
    let stat = |obj: &str| rados(&["-p", "rbd", "stat2", obj]).ok("stat2").out();

    rados(&["-p", "rbd", "touch", "t"]).ok("touch (create)");
    let before = stat("t");
    assert!(before.ends_with("size 0\n"), "{before}");
    std::thread::sleep(std::time::Duration::from_millis(20));
    rados(&["-p", "rbd", "touch", "t"]).ok("touch (again)");
    assert_ne!(stat("t"), before, "touch did not move the modification time");

    let data = pattern((9 << 20) + 123, 5);
    let file = tmp.path().join("src");
    std::fs::write(&file, &data).unwrap();
    rados(&["-p", "rbd", "put", "src", file.to_str().unwrap()]).ok("put");
    rados(&["-p", "rbd", "setxattr", "src", "colour", "blue"]).ok("setxattr");
    rados(&["-p", "rbd", "setomapheader", "src", "head"]).ok("setomapheader");
    for i in 0..4 {
        rados_in_batch(&conf, &format!("k{i:04}"), &format!("v{i}"));
    }
    rados(&["-p", "rbd", "put", "dst", "/etc/hostname"]).ok("put old target");
    rados(&["-p", "rbd", "setxattr", "dst", "stale", "x"]).ok("setxattr old target");
    rados(&["-p", "rbd", "cp", "src", "dst"]).ok("cp");
    let out = tmp.path().join("out");
    rados(&["-p", "rbd", "get", "dst", out.to_str().unwrap()]).ok("get");
    assert!(std::fs::read(&out).unwrap() == data, "copied data differs");
    assert_eq!(rados(&["-p", "rbd", "getxattr", "dst", "colour"]).ok("getxattr").out(), "blue");
    assert_eq!(rados(&["-p", "rbd", "listxattr", "dst"]).ok("listxattr").out(), "colour\n");
    let keys = rados(&["-p", "rbd", "listomapkeys", "dst"]).ok("listomapkeys").out();
    assert_eq!(keys, "k0000\nk0001\nk0002\nk0003\n");
    let header = rados(&["-p", "rbd", "getomapheader", "dst"]).ok("getomapheader").out();
    assert!(header.contains("head"), "{header}");

    run_bounded(
        tool_cmd("ceph", Some(&conf), &["osd", "pool", "create", "other", "8"]),
        None,
        COMMAND_TIMEOUT,
    )
    .ok("pool create");
    rados(&["-p", "rbd", "cp", "src", "--target-pool", "other"]).ok("cp to another pool");
    rados(&["-p", "other", "get", "src", out.to_str().unwrap()]).ok("get from the other pool");
    assert!(std::fs::read(&out).unwrap() == data);
    let same = rados(&["-p", "rbd", "cp", "src"]);
    assert_ne!(same.code(), 0, "a copy onto itself must be refused");
    let missing = rados(&["-p", "rbd", "cp", "nope", "x"]);
    assert_eq!(missing.code(), 1, "{}", missing.stderr);
    assert!(missing.stderr.contains("(2) No such file or directory"), "{}", missing.stderr);
}

/// One `setomapval` on `src`.
fn rados_in_batch(conf: &Path, key: &str, value: &str) {
    run_bounded(
        tool_cmd("rados", Some(conf), &["-p", "rbd", "setomapval", "src", key, value]),
        None,
        COMMAND_TIMEOUT,
    )
    .ok("setomapval");
}
