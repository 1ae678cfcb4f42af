//! The seed's least-privilege flow against `quarry up`: a `client.qemu` user limited to one
//! pool works there, is refused elsewhere with EPERM, cannot be named `client.qemu` in
//! `--id`, is refused with a wrong key (and an unknown user in the very same words), and is
//! refused everywhere once deleted. Every refusal
//! is a non-zero exit with a message, and none hangs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn run(tool: &str, conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd(tool, Some(conf), args), None, COMMAND_TIMEOUT)
}

fn run_in(tool: &str, conf: &Path, args: &[&str], input: &[u8]) -> Run {
    run_bounded(tool_cmd(tool, Some(conf), args), Some(input), COMMAND_TIMEOUT)
}

#[test]
fn least_privilege_user_lifecycle() {
    let logs = quarry_testkit::log_guard();
    // The test's refusals, as the daemons log them.
    logs.expect("op denied by caps entity=client.qemu")
        .expect("monitor refused authentication entity=client.qemu")
        .expect("reason=\"unknown entity client.nobody\"");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let kr = tmp.path().join("ceph.client.qemu.keyring");
    let kr_s = kr.to_str().unwrap();

    run("ceph", &conf, &["osd", "pool", "create", "rbdpool", "8"]).ok("pool create");
    run("ceph", &conf, &["osd", "pool", "application", "enable", "rbdpool", "rbd"])
        .ok("app enable");
    let r = run(
        "ceph",
        &conf,
        &[
            "auth",
            "get-or-create",
            "client.qemu",
            "mon",
            "profile rbd",
            "osd",
            "profile rbd pool=rbdpool",
            "-o",
            kr_s,
        ],
    )
    .ok("get-or-create");
    assert_eq!(r.out(), "", "-o sends the keyring to the file only");
    let text = std::fs::read_to_string(&kr).unwrap();
    assert!(text.starts_with("[client.qemu]\n\tkey = "), "{text}");
    // get-or-create again (same caps) returns the same key
    let again = run(
        "ceph",
        &conf,
        &[
            "auth",
            "get-or-create",
            "client.qemu",
            "mon",
            "profile rbd",
            "osd",
            "profile rbd pool=rbdpool",
        ],
    )
    .ok("get-or-create again")
    .out();
    assert_eq!(again, text);
    let key = run("ceph", &conf, &["auth", "get-key", "client.qemu"]).ok("get-key").out();
    assert!(text.contains(key.trim()), "{key} not in {text}");
    assert_eq!(
        run("ceph", &conf, &["auth", "print-key", "client.qemu"]).ok("print-key").out(),
        key
    );
    let got = run("ceph", &conf, &["auth", "get", "client.qemu"]).ok("auth get").out();
    assert!(
        got.contains("caps mon = \"profile rbd\"")
            && got.contains("caps osd = \"profile rbd pool=rbdpool\""),
        "{got}"
    );
    let ls = run("ceph", &conf, &["auth", "ls"]).ok("auth ls").out();
    assert!(
        ls.contains("client.qemu\n\tkey: ")
            && ls.contains("\tcaps: [osd] profile rbd pool=rbdpool\n"),
        "{ls}"
    );
    assert!(ls.contains("client.admin\n"), "{ls}");

    let qemu = |args: &[&str]| -> Vec<String> {
        let mut v =
            vec!["--id".to_string(), "qemu".to_string(), "--keyring".to_string(), kr_s.to_string()];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let q = |args: &[&str]| {
        let v = qemu(args);
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        run("rados", &conf, &refs)
    };
    let q_in = |args: &[&str], input: &[u8]| {
        let v = qemu(args);
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        run_in("rados", &conf, &refs, input)
    };

    // allowed in rbdpool
    let data = pattern(100_000, 3);
    q_in(&["-p", "rbdpool", "put", "disk", "-"], &data).ok("qemu put");
    assert!(q(&["-p", "rbdpool", "get", "disk", "-"]).ok("qemu get").stdout == data);
    assert_eq!(q(&["-p", "rbdpool", "ls"]).ok("qemu ls").out(), "disk\n");

    // refused in rbd, and nothing changes there
    let r = q_in(&["-p", "rbd", "put", "x", "-"], b"no");
    assert_eq!(r.code(), 1);
    assert!(r.stderr.contains("error putting rbd/x: (1) Operation not permitted"), "{}", r.stderr);
    let r = q(&["-p", "rbd", "ls"]);
    assert_ne!(r.code(), 0);
    assert!(r.stderr.contains("(1) Operation not permitted"), "{}", r.stderr);
    assert_eq!(run("rados", &conf, &["-p", "rbd", "ls"]).ok("admin ls").out(), "");
    // no admin rights on the monitor
    let r =
        run("ceph", &conf, &["--id", "qemu", "--keyring", kr_s, "osd", "pool", "create", "evil"]);
    assert_eq!(r.code(), 13, "{}", r.stderr);
    assert!(r.stderr.contains("Error EACCES: access denied"), "{}", r.stderr);

    // --id client.qemu is refused (as Ceph: id= takes the ID only)
    let t0 = Instant::now();
    let r = run("rados", &conf, &["--id", "client.qemu", "--keyring", kr_s, "-p", "rbdpool", "ls"]);
    assert_ne!(r.code(), 0);
    assert!(!r.stderr.trim().is_empty());
    // a wrong key is refused
    let bad = tmp.path().join("bad.keyring");
    std::fs::write(&bad, "[client.qemu]\n\tkey = AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==\n")
        .unwrap();
    let r = run(
        "rados",
        &conf,
        &["--id", "qemu", "--keyring", bad.to_str().unwrap(), "-p", "rbdpool", "ls"],
    );
    assert_eq!(r.code(), 1);
    assert!(
        r.stderr.contains("couldn't connect to cluster: (13) Permission denied"),
        "{}",
        r.stderr
    );
    let r = run("ceph", &conf, &["--id", "qemu", "--keyring", bad.to_str().unwrap(), "-s"]);
    assert_eq!(r.code(), 13, "{}", r.stderr);
    assert!(
        r.stderr.contains("[errno 13] RADOS permission denied (error connecting to the cluster)"),
        "{}",
        r.stderr
    );
    // An unknown user gets exactly what a wrong key gets (Ceph's one answer, exit status
    // included): the monitor does not tell who exists. Only its log says which it was.
    let nobody = tmp.path().join("nobody.keyring");
    std::fs::write(&nobody, "[client.nobody]\n\tkey = AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==\n")
        .unwrap();
    for tool in ["rados", "rbd", "ceph"] {
        let attempt = |id: &str, ring: &Path| {
            let ring = ring.to_str().unwrap();
            let what: &[&str] = if tool == "ceph" { &["-s"] } else { &["-p", "rbdpool", "ls"] };
            let mut args = vec!["--id", id, "--keyring", ring];
            args.extend_from_slice(what);
            run(tool, &conf, &args)
        };
        let wrong = attempt("qemu", &bad);
        let unknown = attempt("nobody", &nobody);
        let status = if tool == "rados" { 1 } else { 13 };
        assert_eq!(wrong.code(), status, "{tool}: {}", wrong.stderr);
        assert_eq!(unknown.code(), status, "{tool}: {}", unknown.stderr);
        assert_eq!(wrong.stderr, unknown.stderr, "{tool}");
        let said = if tool == "ceph" {
            "[errno 13] RADOS permission denied"
        } else {
            "(13) Permission denied"
        };
        assert!(wrong.stderr.contains(said), "{tool}: {}", wrong.stderr);
        assert!(!unknown.stderr.contains("nobody"), "{tool}: {}", unknown.stderr);
    }
    assert!(t0.elapsed() < Duration::from_secs(60), "refusals took {:?}", t0.elapsed());

    // caps change: read-only now
    run(
        "ceph",
        &conf,
        &[
            "auth",
            "caps",
            "client.qemu",
            "mon",
            "profile rbd",
            "osd",
            "profile rbd-read-only pool=rbdpool",
        ],
    )
    .ok("auth caps");
    assert!(q(&["-p", "rbdpool", "get", "disk", "-"]).ok("read after caps").stdout == data);
    let r = q_in(&["-p", "rbdpool", "put", "disk2", "-"], b"x");
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("(1) Operation not permitted"), "{}", r.stderr);

    // delete the user: everything refused
    let r = run("ceph", &conf, &["auth", "del", "client.qemu"]).ok("auth del");
    assert_eq!(r.stderr.trim(), "updated");
    let r = q(&["-p", "rbdpool", "ls"]);
    assert_eq!(r.code(), 1);
    assert!(r.stderr.contains("couldn't connect to cluster"), "{}", r.stderr);
    let r = run("ceph", &conf, &["auth", "get", "client.qemu"]);
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(r.stderr.starts_with("Error ENOENT: "), "{}", r.stderr);

    // import it back from the keyring file: the old key works again
    run("ceph", &conf, &["auth", "import", "-i", kr_s]).ok("auth import");
    assert!(run("ceph", &conf, &["auth", "get", "client.qemu"])
        .ok("auth get")
        .out()
        .contains(key.trim()));
}

#[test]
fn namespace_limited_user_works_in_its_namespace_only() {
    let logs = quarry_testkit::log_guard();
    logs.expect("op denied by caps entity=client.tenant");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let kr = tmp.path().join("ceph.client.tenant.keyring");
    let kr_s = kr.to_str().unwrap();

    run("rbd", &conf, &["namespace", "create", "rbd/t1"]).ok("namespace create");
    let r = run("rbd", &conf, &["namespace", "create", "--pool", "rbd", "--namespace", "t1"]);
    assert_eq!(r.code(), 17, "{}", r.stderr);
    assert!(
        r.stderr.contains("rbd: failed to created namespace: (17) File exists"),
        "{}",
        r.stderr
    );
    assert_eq!(run("rbd", &conf, &["namespace", "ls"]).ok("namespace ls").out(), "NAME\nt1\n");
    let caps = ["mon", "profile rbd", "osd", "profile rbd pool=rbd namespace=t1"];
    let mut args = vec!["auth", "get-or-create", "client.tenant"];
    args.extend(caps);
    args.extend(["-o", kr_s]);
    run("ceph", &conf, &args).ok("get-or-create");
    let tenant = |args: &[&str]| {
        let mut all = vec!["--id", "tenant", "--keyring", kr_s];
        all.extend_from_slice(args);
        run("rbd", &conf, &all)
    };

    // In its namespace: create, write, list.
    tenant(&["create", "--size", "16M", "rbd/t1/disk"]).ok("tenant create");
    let r = run_in(
        "rbd",
        &conf,
        &["--id", "tenant", "--keyring", kr_s, "import", "-", "rbd/t1/data"],
        &pattern(8192, 4),
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert_eq!(tenant(&["ls", "rbd/t1"]).ok("tenant ls").out(), "data\ndisk\n");
    assert_eq!(
        tenant(&["ls", "--namespace", "t1"]).ok("tenant ls --namespace").out(),
        "data\ndisk\n"
    );
    // Outside it: refused, and nothing made.
    let r = tenant(&["create", "--size", "16M", "rbd/disk"]);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("(1) Operation not permitted"), "{}", r.stderr);
    assert_eq!(run("rbd", &conf, &["ls"]).ok("admin ls").out(), "");
    // A namespace that does not exist has no images.
    let r = run("rbd", &conf, &["create", "--size", "16M", "rbd/nosuch/disk"]);
    assert_eq!(r.code(), 2, "{}", r.stderr);

    // The objects, by namespace.
    let listed = run("rados", &conf, &["-p", "rbd", "-N", "t1", "ls"]).ok("rados -N ls").out();
    assert!(listed.lines().any(|l| l == "rbd_id.disk"), "{listed}");
    let all = run("rados", &conf, &["-p", "rbd", "--all", "ls"]).ok("rados --all ls").out();
    assert!(all.lines().any(|l| l == "t1\trbd_id.disk"), "{all}");
    // The default namespace is an empty field, as in Ceph's output.
    assert!(all.lines().any(|l| l == "\trbd_namespace"), "{all}");
    assert!(!run("rados", &conf, &["-p", "rbd", "ls"])
        .ok("rados ls")
        .out()
        .contains("rbd_id.disk"));

    // Removal: refused while it has images.
    let r = run("rbd", &conf, &["namespace", "rm", "rbd/t1"]);
    assert_eq!(r.code(), 16, "{}", r.stderr);
    assert!(r.stderr.contains("rbd: namespace contains images which must be deleted first."));
    tenant(&["rm", "--no-progress", "rbd/t1/disk"]).ok("tenant rm");
    tenant(&["rm", "--no-progress", "rbd/t1/data"]).ok("tenant rm");
    run("rbd", &conf, &["namespace", "rm", "rbd/t1"]).ok("namespace rm");
    assert_eq!(run("rbd", &conf, &["namespace", "ls"]).ok("namespace ls").out(), "");
    let r = run("rbd", &conf, &["namespace", "rm", "rbd/t1"]);
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(r.stderr.contains("rbd: namespace does not exist."), "{}", r.stderr);
}
