//! Small shapes where Quarry's `ceph` differed from Ceph 16's (issue 13), checked against
//! lines recorded from a real Ceph 16.2.15 cluster: `osd blocklist add ADDR EXPIRE` with a
//! negative or non-numeric EXPIRE, and the key order of health JSON (`ceph health [detail]
//! -f json`, `ceph -s -f json`).

mod common;

use std::path::Path;

use common::*;

fn ceph(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("ceph", Some(conf), args), None, COMMAND_TIMEOUT)
}

/// The positions of `keys` in `text`, which must be increasing (the keys in that order).
fn in_order(text: &str, keys: &[&str]) {
    let at: Vec<usize> = keys
        .iter()
        .map(|k| text.find(&format!("\"{k}\"")).unwrap_or_else(|| panic!("{k} missing: {text}")))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "keys not in Ceph's order {keys:?}: {text}");
}

/// Goal: a bad blocklist expiry is Ceph's EINVAL with its lines (the CLI's check, the
/// command's signature), exit 22, and nothing is added; health JSON has Ceph's key order,
/// each check's `detail` only in `health detail`.
#[test]
fn blocklist_expiry_and_health_json_as_ceph() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let signature = "osd blocklist [<range>] add|rm <addr> [<expire:float>] :  add (optionally \
                     until <expire> seconds from now) or remove <addr> from blocklist\n\
                     Error EINVAL: invalid command\n";
    let r = ceph(&conf, &["osd", "blocklist", "add", "1.2.3.4:0/1", "-5"]);
    assert_eq!(r.code(), 22, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!(
            "-5 not valid:  -5.0 not in range [0.0]\nInvalid command: unused arguments: \
             ['-5']\n{signature}"
        )
    );
    let r = ceph(&conf, &["osd", "blocklist", "add", "1.2.3.4:0/1", "abc"]);
    assert_eq!(r.code(), 22, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!(
            "abc not valid:  abc doesn't represent a float\nInvalid command: unused \
             arguments: ['abc']\n{signature}"
        )
    );
    let ls = ceph(&conf, &["osd", "blocklist", "ls"]).ok("ls");
    assert!(!ls.out().contains("1.2.3.4"), "{}", ls.out());
    let r = ceph(&conf, &["osd", "blocklist", "add", "1.2.3.4:0/1", "0"]).ok("expire 0");
    assert!(r.stderr.starts_with("blocklisting 1.2.3.4:0/1 until "), "{}", r.stderr);

    // A warning to show: an out OSD that still holds PGs.
    ceph(&conf, &["osd", "out", "0"]).ok("out");
    let check = ["severity", "summary", "message", "count"];
    let detail = ceph(&conf, &["health", "detail", "--format=json"]).ok("detail").out();
    in_order(&detail, &["status", "checks", "severity", "summary", "detail", "muted", "mutes"]);
    in_order(&detail, &check);
    let health = ceph(&conf, &["health", "--format=json"]).ok("health").out();
    in_order(&health, &["status", "checks", "severity", "summary", "muted", "mutes"]);
    assert!(!health.contains("\"detail\""), "{health}");
    let status = ceph(&conf, &["-s", "--format=json"]).ok("status").out();
    in_order(&status, &["fsid", "health", "quorum", "quorum_names", "monmap", "osdmap", "pgmap"]);
    in_order(&status, &["status", "checks", "mutes", "quorum"]);
    assert!(!status.contains("\"detail\""), "{status}");
}
