//! Parsing edge cases, lookup precedence, metavariables, the load search and overrides.

use super::*;

fn admin() -> EntityName {
    EntityName::client("admin")
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("quarry-conf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_typical_ceph_conf_parses() {
    let text = "\
# Ceph writes this with ceph-deploy\r
[global]\r
fsid = 4a6d1f3e-52a5-4bd5-9c1b-1b8c5ad7c1d0\r
mon_initial_members = a\r
mon host = [v2:10.0.0.1:3300/0,v1:10.0.0.1:6789/0]   ; trailing comment\r
auth cluster required = cephx\r
\r
[client]\r
\trbd cache = true\r
\trbd_cache_size = 64M  # bigger\r
";
    let conf = Conf::parse(text).unwrap();
    assert_eq!(conf.get(&admin(), "mon_host").unwrap(), "[v2:10.0.0.1:3300/0,v1:10.0.0.1:6789/0]");
    assert_eq!(conf.get_in("global", "auth-cluster-required"), Some("cephx"));
    assert_eq!(conf.get_bool(&admin(), "rbd cache").unwrap(), Some(true));
    assert_eq!(conf.get_size(&admin(), "rbd-cache-size").unwrap(), Some(64 << 20));
    assert_eq!(conf.sections().collect::<Vec<_>>(), ["client", "global"]);
}

#[test]
fn parsing_edge_cases() {
    let text = "top = before any section\n[global]\nq1 = \"quoted ; not a comment\"\nq2 = 'single'\nempty =\ncont = first \\\n  second\nesc = a\\#b\ndup = 1\ndup = 2\n[client]\nx = 1\n[global]\nmerged = yes\n  ; indented comment\n\t# another\n";
    let conf = Conf::parse(text).unwrap();
    let g = |k| conf.get_in("global", k);
    assert_eq!(g("top"), Some("before any section"));
    assert_eq!(g("q1"), Some("quoted ; not a comment"));
    assert_eq!(g("q2"), Some("single"));
    assert_eq!(g("empty"), Some(""));
    assert_eq!(g("cont"), Some("first   second"));
    assert_eq!(g("esc"), Some("a#b"));
    assert_eq!(g("dup"), Some("2"), "the last value wins");
    assert_eq!(g("merged"), Some("yes"), "a repeated section merges");
    assert_eq!(conf.get_in("client", "x"), Some("1"));

    for (bad, line) in
        [("[global\n", 1), ("[global]\nno equals sign\n", 2), ("[a]\nk = \"open\n", 2)]
    {
        match Conf::parse(bad) {
            Err(ConfError::Syntax { line: l, path: None, .. }) => assert_eq!(l, line, "{bad:?}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn spaces_underscores_and_dashes_are_the_same_key() {
    for written in ["mon host", "mon_host", "mon-host", "  mon   host ", "mon\thost"] {
        let conf = Conf::parse(&format!("[global]\n{written} = 1.2.3.4\n")).unwrap();
        for asked in ["mon host", "mon_host", "mon-host"] {
            assert_eq!(
                conf.get(&admin(), asked).as_deref(),
                Some("1.2.3.4"),
                "{written:?} / {asked:?}"
            );
        }
    }
}

#[test]
fn lookup_precedence_is_type_id_then_type_then_global() {
    let text = "[global]\nlevel = global\nonly_global = g\n[osd]\nlevel = osd\n[osd.3]\nlevel = osd.3\n[client]\nlevel = client\n[client.admin]\nlevel = client.admin\n[mon]\nlevel = mon\n";
    let conf = Conf::parse(text).unwrap();
    let level = |name: &EntityName| conf.get(name, "level").unwrap();
    assert_eq!(level(&EntityName::osd(3)), "osd.3");
    assert_eq!(level(&EntityName::osd(4)), "osd");
    assert_eq!(level(&admin()), "client.admin");
    assert_eq!(level(&EntityName::client("qemu")), "client");
    assert_eq!(level(&EntityName::mon()), "mon");
    assert_eq!(conf.get(&EntityName::osd(3), "only_global").as_deref(), Some("g"));
    assert_eq!(conf.get(&EntityName::osd(3), "missing"), None);
}

#[test]
fn metavariables_expand() {
    let text = "[global]\nrun_dir = /run/$cluster\nadmin_socket = $run_dir/$cluster-$name.asok\nlog_file = /var/log/ceph/${cluster}-$type.$id.log\nwhere = $host\nloop = $loop\nunknown = $nosuch and $ and ${unterminated\npid = $pid\nnum = $num\n";
    let mut conf = Conf::parse(text).unwrap();
    conf.set_cluster("prod");
    conf.set_host("node1");
    let osd = EntityName::osd(3);
    assert_eq!(conf.get(&osd, "admin_socket").unwrap(), "/run/prod/prod-osd.3.asok");
    assert_eq!(conf.get(&osd, "log_file").unwrap(), "/var/log/ceph/prod-osd.3.log");
    assert_eq!(conf.get(&osd, "where").unwrap(), "node1");
    assert_eq!(conf.get(&osd, "loop").unwrap(), "$loop", "self-reference stops");
    assert_eq!(conf.get(&osd, "unknown").unwrap(), "$nosuch and $ and ${unterminated");
    assert_eq!(conf.get(&osd, "pid").unwrap(), std::process::id().to_string());
    assert_eq!(conf.get(&osd, "num").unwrap(), "3");
    assert_eq!(conf.get_raw(&osd, "admin_socket").unwrap(), "$run_dir/$cluster-$name.asok");
    // An option's table default is used when the file does not set it.
    let empty = Conf::default();
    assert_eq!(empty.expand_for("$osd_pool_default_size/x", &admin(), "ceph"), "3/x");
    assert_eq!(empty.expand_for("$run_dir/x", &admin(), "ceph"), "$run_dir/x", "not read");
    assert!(!Conf::default().expand_for("$host", &admin(), "ceph").is_empty());
}

#[test]
fn typed_values_fall_back_to_defaults_and_report_bad_values() {
    let conf = Conf::parse(
        "[client]\nrbd_cache = maybe\nrbd_default_order = 20\ncache = 1G\n[mon]\nosd pool default size = two\n",
    )
    .unwrap();
    let client = EntityName::client("qemu");
    assert_eq!(conf.get_int(&client, "rbd_default_order").unwrap(), Some(20));
    assert_eq!(conf.get_size(&client, "cache").unwrap(), Some(1 << 30));
    assert_eq!(conf.get_int(&client, "osd_pool_default_size").unwrap(), Some(3), "default");
    assert_eq!(conf.get_float(&client, "client_mount_timeout").unwrap(), Some(30.0));
    assert_eq!(conf.get_int(&client, "not_an_option").unwrap(), None);
    let err = conf.get_bool(&client, "rbd cache").unwrap_err();
    assert!(
        matches!(&err, ConfError::BadValue { option, value, .. } if option == "rbd_cache" && value == "maybe"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "invalid value 'maybe' for option 'rbd_cache' (line 2, [client]): expected true, false, 1, 0, yes or no"
    );
    // The section the value came from is named: [mon] for a monitor.
    let err = conf.get_int(&EntityName::mon(), "osd_pool_default_size").unwrap_err();
    assert!(
        err.to_string().contains("'two'") && err.to_string().contains("line 6, [mon]"),
        "{err}"
    );
    let ranged = conf.get_parsed(&client, "rbd_default_order", |v| {
        let n: u32 = v.parse().map_err(|_| "a number".to_string())?;
        if n > 12 {
            return Err(format!("at most 12, not {n}"));
        }
        Ok(n)
    });
    assert_eq!(
        ranged.unwrap_err().to_string(),
        "invalid value '20' for option 'rbd_default_order' (line 3, [client]): at most 12, not 20"
    );
    assert_eq!(
        conf.get_or_default(&client, "keyring").unwrap().split(',').next(),
        Some("/etc/ceph/ceph.client.qemu.keyring")
    );
}

#[test]
fn overrides_win_and_unknown_or_mistyped_ones_are_refused() {
    let mut conf = Conf::parse("[client.admin]\nrbd_cache = true\n").unwrap();
    conf.set_override("rbd-cache", "false").unwrap();
    assert_eq!(conf.get_bool(&admin(), "rbd_cache").unwrap(), Some(false));
    conf.set_override("debug_rbd", "20/20").unwrap();
    conf.set_override("fsid", "x").unwrap();
    let unknown = conf.set_override("rbd_cahce", "true").unwrap_err();
    assert!(
        matches!(&unknown, ConfError::UnknownOption { name } if name == "rbd_cahce"),
        "{unknown}"
    );
    let mistyped = conf.set_override("osd_pool_default_size", "lots").unwrap_err();
    assert!(matches!(mistyped, ConfError::BadValue { .. }), "{mistyped}");
    let bad_float = conf.set_override("client_mount_timeout", "soon").unwrap_err();
    assert!(matches!(bad_float, ConfError::BadValue { .. }), "{bad_float}");
    assert_eq!(conf.overrides().len(), 3);
}

fn env(dir: &Path, ceph_conf: Option<&Path>, home: Option<&Path>) -> SearchEnv {
    SearchEnv {
        ceph_conf: ceph_conf.map(|p| p.as_os_str().to_owned()),
        home: home.map(Path::to_path_buf),
        cwd: dir.to_path_buf(),
    }
}

#[test]
fn load_explicit_then_env_then_search_list() {
    let scratch = Scratch::new("load");
    let dir = &scratch.0;
    let explicit = dir.join("explicit.conf");
    std::fs::write(&explicit, "[global]\nmon_host = 1.1.1.1\n").unwrap();
    let from_env = dir.join("env.conf");
    std::fs::write(&from_env, "[global]\nmon_host = 2.2.2.2\n").unwrap();

    let (conf, path) =
        Conf::load_from(Some(&explicit), "ceph", &env(dir, Some(&from_env), None)).unwrap();
    assert_eq!(path.as_deref(), Some(explicit.as_path()), "-c wins over CEPH_CONF");
    assert_eq!(conf.get(&admin(), "mon_host").unwrap(), "1.1.1.1");
    assert_eq!(conf.path(), Some(explicit.as_path()));

    let (conf, path) = Conf::load_from(None, "ceph", &env(dir, Some(&from_env), None)).unwrap();
    assert_eq!(path.as_deref(), Some(from_env.as_path()));
    assert_eq!(conf.get(&admin(), "mon_host").unwrap(), "2.2.2.2");

    let missing = dir.join("missing.conf");
    for (explicit, ceph_conf) in [(Some(missing.as_path()), None), (None, Some(missing.as_path()))]
    {
        let err = Conf::load_from(explicit, "ceph", &env(dir, ceph_conf, None)).unwrap_err();
        assert!(matches!(&err, ConfError::NotFound { path } if *path == missing), "{err}");
        assert!(err.to_string().contains("missing.conf"), "{err}");
    }

    // The search list: ~/.ceph/$cluster.conf before ./$cluster.conf; none found is fine.
    let home = dir.join("home");
    let cwd = dir.join("cwd");
    std::fs::create_dir_all(home.join(".ceph")).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    let cluster = format!("quarrytest{}", std::process::id());
    let search = SearchEnv { ceph_conf: None, home: Some(home.clone()), cwd: cwd.clone() };
    let (conf, path) = Conf::load_from(None, &cluster, &search).unwrap();
    assert_eq!((path, conf.sections().count()), (None, 0));
    std::fs::write(cwd.join(format!("{cluster}.conf")), "[global]\nfrom = cwd\n").unwrap();
    let (conf, path) = Conf::load_from(None, &cluster, &search).unwrap();
    assert_eq!(path, Some(cwd.join(format!("{cluster}.conf"))));
    assert_eq!(conf.get(&admin(), "from").unwrap(), "cwd");
    assert_eq!(conf.cluster(), cluster);
    std::fs::write(home.join(".ceph").join(format!("{cluster}.conf")), "[global]\nfrom = home\n")
        .unwrap();
    let (conf, _) = Conf::load_from(None, &cluster, &search).unwrap();
    assert_eq!(conf.get(&admin(), "from").unwrap(), "home");
    assert_eq!(
        default_conf_paths("ceph", Some(Path::new("/root")), Path::new(".")),
        [
            PathBuf::from("/etc/ceph/ceph.conf"),
            "/root/.ceph/ceph.conf".into(),
            "./ceph.conf".into()
        ]
    );
}

#[test]
fn load_reports_syntax_errors_with_path_and_line() {
    let scratch = Scratch::new("syntax");
    let bad = scratch.0.join("bad.conf");
    std::fs::write(&bad, "[global]\nmon_host = 1.2.3.4\nthis line is wrong\n").unwrap();
    let err = Conf::load(Some(&bad), "ceph").unwrap_err();
    assert!(matches!(&err, ConfError::Syntax { line: 3, path: Some(p), .. } if *p == bad), "{err}");
    assert!(err.to_string().contains("bad.conf: line 3"), "{err}");
    std::fs::write(&bad, b"[global]\nx = \xff\n").unwrap();
    let err = Conf::from_file(&bad).unwrap_err();
    assert!(matches!(err, ConfError::Syntax { line: 2, reason: "invalid UTF-8", .. }), "{err}");
}
