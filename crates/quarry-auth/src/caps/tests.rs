//! Cap parsing positives and negatives, and the allow matrices (one row per profile or
//! grant form, one column per access class).

use super::*;

const RO: OsdAccess = OsdAccess::READ;
const WO: OsdAccess = OsdAccess::WRITE;
const RW: OsdAccess = OsdAccess::READ_WRITE;
const RWE: OsdAccess = OsdAccess::READ_WRITE_EXEC;
const EXEC: OsdAccess = OsdAccess { read: false, write: false, exec: true };

fn mon(text: &str) -> MonCap {
    MonCap::parse(text).unwrap_or_else(|e| panic!("mon cap {text:?} must parse: {e}"))
}

fn osd(text: &str) -> OsdCap {
    OsdCap::parse(text).unwrap_or_else(|e| panic!("osd cap {text:?} must parse: {e}"))
}

#[test]
fn mon_matrix_every_profile_and_grant_form_against_every_access_class() {
    use MonAccess::*;
    let table: &[(&str, &[MonAccess])] = &[
        ("allow *", &[Read, PoolAdmin, AuthAdmin, OsdDaemon, Blocklist]),
        ("allow all", &[Read, PoolAdmin, AuthAdmin, OsdDaemon, Blocklist]),
        ("allow r", &[Read]),
        ("allow rw", &[Read, PoolAdmin, Blocklist]),
        // Ceph: auth commands need rwx, boot needs x on the osd service.
        ("allow rwx", &[Read, PoolAdmin, AuthAdmin, OsdDaemon, Blocklist]),
        ("allow x", &[]),
        ("allow w", &[]),
        ("profile rbd", &[Read, Blocklist]),
        ("allow profile rbd", &[Read, Blocklist]),
        ("profile=rbd", &[Read, Blocklist]),
        ("profile rbd-read-only", &[Read]),
        ("profile read-only", &[Read]),
        ("profile simple-rados-client", &[Read]),
        ("profile read-write", &[Read, PoolAdmin, Blocklist]),
        ("profile osd", &[Read, OsdDaemon]),
        ("allow profile osd", &[Read, OsdDaemon]),
        ("profile mon", &[Read, PoolAdmin, AuthAdmin, OsdDaemon, Blocklist]),
        ("allow service auth rwx", &[AuthAdmin]),
        ("allow service auth rw", &[]),
        ("allow service=auth *", &[AuthAdmin]),
        ("allow service mon r, allow service osd r", &[Read]),
        ("allow service osd rw", &[PoolAdmin, Blocklist]),
        ("allow r, allow service auth rwx", &[Read, AuthAdmin]),
        ("allow service mon r; allow service osd rwx", &[Read, PoolAdmin, OsdDaemon, Blocklist]),
        ("profile rbd, allow rw", &[Read, PoolAdmin, Blocklist]),
        ("", &[]),
    ];
    for (text, allowed) in table {
        let cap = mon(text);
        for want in MonAccess::ALL {
            let expected = allowed.contains(&want);
            assert_eq!(cap.allows(want), expected, "mon '{text}' {want:?}: expected {expected}");
        }
    }
}

/// `(cap, [(pool, namespace, access, allowed)])`.
type OsdRow<'a> = (&'a str, &'a [(&'a str, &'a str, OsdAccess, bool)]);

#[test]
fn osd_matrix_every_profile_and_grant_form_against_every_access_class() {
    let table: &[OsdRow<'_>] = &[
        ("allow *", &[("p", "", RO, true), ("p", "n", RWE, true), ("q", "", EXEC, true)]),
        (
            "allow r",
            &[
                ("p", "", RO, true),
                ("p", "", WO, false),
                ("p", "", RW, false),
                ("p", "", EXEC, false),
            ],
        ),
        (
            "allow rw",
            &[
                ("p", "", RW, true),
                ("p", "", WO, true),
                ("p", "", RWE, false),
                ("p", "", EXEC, false),
            ],
        ),
        (
            "allow rx",
            &[
                ("p", "", RO, true),
                ("p", "", EXEC, true),
                ("p", "", WO, false),
                ("p", "", RWE, false),
            ],
        ),
        ("allow rwx", &[("p", "", RO, true), ("p", "", RW, true), ("p", "ns", RWE, true)]),
        (
            "allow r pool=rbdpool",
            &[("rbdpool", "", RO, true), ("rbdpool", "", WO, false), ("other", "", RO, false)],
        ),
        ("allow pool rbdpool rwx", &[("rbdpool", "", RWE, true), ("other", "", RO, false)]),
        (
            "allow rw pool=rbdpool namespace=ns1",
            &[
                ("rbdpool", "ns1", RW, true),
                ("rbdpool", "", RO, false),
                ("rbdpool", "ns2", RO, false),
                ("rbdpool", "ns1", RWE, false),
            ],
        ),
        ("allow rw pool=a namespace=\"\"", &[("a", "", RW, true), ("a", "x", RO, false)]),
        (
            "allow rw namespace=foo*",
            &[
                ("any", "foo", RW, true),
                ("any", "foobar", RW, true),
                ("any", "bar", RO, false),
                ("any", "", RO, false),
            ],
        ),
        ("profile rbd", &[("p", "", RWE, true), ("q", "ns", RWE, true)]),
        (
            "profile rbd pool=rbdpool",
            &[
                ("rbdpool", "", RO, true),
                ("rbdpool", "", RW, true),
                ("rbdpool", "", RWE, true),
                ("other", "", RO, false),
                ("other", "", WO, false),
            ],
        ),
        ("profile rbd pool=a namespace=n", &[("a", "n", RWE, true), ("a", "", RO, false)]),
        (
            "profile rbd-read-only",
            &[
                ("p", "", RO, true),
                ("p", "", WO, false),
                ("p", "", RWE, false),
                ("p", "", EXEC, false),
            ],
        ),
        (
            "profile rbd-read-only pool=b",
            &[("b", "", RO, true), ("b", "", RW, false), ("a", "", RO, false)],
        ),
        (
            "profile rbd pool=a, profile rbd-read-only pool=b",
            &[
                ("a", "", RWE, true),
                ("b", "", RO, true),
                ("b", "", WO, false),
                ("c", "", RO, false),
            ],
        ),
        ("profile read-only pool=a", &[("a", "", RO, true), ("a", "", WO, false)]),
        (
            "profile read-write pool=a",
            &[("a", "", RW, true), ("a", "", RWE, false), ("b", "", RO, false)],
        ),
        ("profile osd", &[("p", "", RWE, true), ("q", "n", RO, true)]),
        ("profile mon", &[("p", "", RWE, true)]),
        // Ceph's pre-Luminous rbd caps: the object_prefix grant never covers a whole pool.
        (
            "allow class-read object_prefix rbd_children, allow rwx pool=rbdpool",
            &[("rbdpool", "", RWE, true), ("other", "", RO, false)],
        ),
        ("allow r class-read", &[("p", "", RO, true), ("p", "", EXEC, false)]),
        ("allow class-write", &[("p", "", EXEC, true), ("p", "", WO, false), ("p", "", RO, false)]),
        ("", &[("p", "", RO, false)]),
    ];
    for (text, checks) in table {
        let cap = osd(text);
        for &(pool, namespace, want, expected) in *checks {
            assert_eq!(
                cap.allows(pool, namespace, want),
                expected,
                "osd '{text}' on {pool}/{namespace} {want:?}: expected {expected}"
            );
        }
    }
}

#[test]
fn object_prefix_grants_apply_only_to_matching_objects() {
    let cap = osd("allow class-read object_prefix rbd_children, allow rwx pool=rbdpool");
    assert!(cap.allows_object("other", "", "rbd_children", RO));
    assert!(!cap.allows_object("other", "", "rbd_children", WO));
    assert!(!cap.allows_object("other", "", "rbd_header.1234", RO));
    assert!(cap.allows_object("rbdpool", "", "rbd_header.1234", RWE));

    // profile rbd: read of the clone registry in every pool (a clone's parent may live elsewhere).
    let rbd = osd("profile rbd pool=a");
    assert!(rbd.allows_object("b", "", "rbd_children", RO));
    assert!(rbd.allows_object("b", "", "rbd_mirroring", RO));
    assert!(!rbd.allows_object("b", "", "rbd_children", RW));
    assert!(!rbd.allows_object("b", "", "rbd_data.1.0000000000000000", RO));
    assert!(rbd.allows_object("a", "", "rbd_data.1.0000000000000000", RWE));
}

#[test]
fn osd_grant_syntax_variants_parse() {
    for text in [
        "allow rwx pool rbd",
        "allow pool=rbd rwx",
        "allow r pool=\"my pool\"",
        "allow r pool='my pool'",
        "profile=rbd pool=x",
        "profile rbd pool x namespace y",
        "allow r class-read",
        "allow class-read object_prefix rbd_children",
        "allow rw pool=a; allow r",
        "  allow r  ,  profile rbd  ",
        "allow rwx pool=a namespace=b object_prefix rbd_data.",
        "allow pool=a namespace=b object_prefix c rw",
        "allow all",
        "\tallow\t*\t",
    ] {
        osd(text);
    }
    for text in [
        "allow profile rbd",
        "profile osd",
        "allow service=auth rwx",
        "allow rw, profile rbd ; allow service osd r",
    ] {
        mon(text);
    }
    assert_eq!(osd("profile rbd pool=rbdpool").to_string(), "profile rbd pool=rbdpool");
}

/// `(cap, bad token, reason fragment)`.
const OSD_BAD: &[(&str, &str, &str)] = &[
    ("allow foo", "foo", "unknown word"),
    ("allow rw pol=x", "pol", "unknown word"),
    ("allow wr", "wr", "unknown word"),
    ("allow", "", "missing access"),
    ("deny r", "deny", "expected 'allow' or 'profile'"),
    ("profile rdb", "rdb", "unknown osd profile"),
    ("profile rbd pool=a extra", "extra", "unexpected word"),
    ("profile osd pool=a", "pool", "daemon profiles take no pool"),
    ("allow rw pool", "", "missing value"),
    ("allow rw pool=a object_prefix", "", "missing value"),
    ("allow rw pool==a", "=", "unexpected"),
    ("allow rw pool=a,", "", "empty grant at end"),
    ("allow r, , allow w", ",", "empty grant"),
    ("allow rw namespace=a pool=b", "pool", "out-of-order"),
    ("allow rw pool=a pool=b", "pool", "repeated"),
    ("allow r pool=a w", "w", "interleave"),
    ("allow rw pool=a!", "a!", "invalid name"),
    ("allow class rbd", "class", "class-specific"),
    ("allow rw tag rbd *=*", "tag", "tags"),
    ("allow rw network 10.0.0.0/8", "network", "network"),
    ("allow rw pool=\"open", "\"open", "unterminated quote"),
];

const MON_BAD: &[(&str, &str, &str)] = &[
    ("allow rw pool=a", "pool", "unexpected word"),
    ("profile rbd pool=a", "pool", "unexpected word"),
    ("profile bootstrap-osd", "bootstrap-osd", "unknown mon profile"),
    ("allow command \"osd blocklist\"", "command", "command grants"),
    ("allow service osd", "", "missing access"),
    ("allow service osd q", "q", "expected r, w, x"),
    ("allow", "", "missing access"),
    ("allow xr", "xr", "unknown word"),
    ("allow r network 10.0.0.0/8", "network", "network"),
    ("allow r,", "", "empty grant"),
];

#[test]
fn invalid_caps_are_errors_naming_the_bad_token() {
    for (service, cases) in [("osd", OSD_BAD), ("mon", MON_BAD)] {
        for &(text, bad, reason_part) in cases {
            let err = if service == "osd" {
                OsdCap::parse(text).map(|_| ()).unwrap_err()
            } else {
                MonCap::parse(text).map(|_| ()).unwrap_err()
            };
            let AuthError::InvalidCap { service: s, cap, token, rest, reason } = &err else {
                panic!("{service} '{text}': wrong error {err:?}");
            };
            assert_eq!(s, service);
            assert_eq!(cap, text);
            assert_eq!(token, bad, "{service} '{text}': {err}");
            assert!(rest.starts_with(bad), "{service} '{text}': rest '{rest}'");
            assert!(reason.contains(reason_part), "{service} '{text}': reason '{reason}'");
            let shown = err.to_string();
            assert!(shown.starts_with(&format!("{service} capability parse failed")), "{shown}");
            assert!(!shown.ends_with("''"), "{shown}");
        }
    }
}

#[test]
fn caps_by_service_ignore_mgr_and_mds_and_refuse_unknown_services() {
    let mut map = BTreeMap::new();
    map.insert("mon".to_string(), "profile rbd".to_string());
    map.insert("osd".to_string(), "profile rbd pool=rbdpool".to_string());
    map.insert("mgr".to_string(), "profile rbd pool=rbdpool".to_string());
    map.insert("mds".to_string(), "allow whatever Quarry ignores".to_string());
    let caps = Caps::parse(&map).unwrap();
    assert!(caps.mon.allows(MonAccess::Blocklist));
    assert!(!caps.mon.allows(MonAccess::PoolAdmin));
    assert!(caps.osd.allows("rbdpool", "", RWE));
    assert!(!caps.osd.allows("other", "", RO));

    map.insert("osd".to_string(), "allow rw pol=x".to_string());
    assert!(matches!(Caps::parse(&map), Err(AuthError::InvalidCap { .. })));
    map.remove("osd");
    map.insert("rgw".to_string(), "allow *".to_string());
    let err = Caps::parse(&map).unwrap_err();
    assert!(matches!(&err, AuthError::UnknownCapService { service } if service == "rgw"), "{err}");

    let none = Caps::parse(&BTreeMap::new()).unwrap();
    assert!(!none.mon.allows(MonAccess::Read));
    assert!(!none.osd.allows("p", "", RO));
}

#[test]
fn error_messages_read_like_cephs() {
    let err = OsdCap::parse("allow rw pol=x").unwrap_err();
    assert_eq!(
        err.to_string(),
        "osd capability parse failed, stopped at 'pol=x' of 'allow rw pol=x': unknown word 'pol'"
    );
    let err = MonCap::parse("allow").unwrap_err();
    assert_eq!(
        err.to_string(),
        "mon capability parse failed, stopped at '' of 'allow': missing access after 'allow'"
    );
}

#[test]
fn control_characters_in_any_service_are_refused() {
    // A newline in a stored cap would inject lines into the keyring text `auth get` prints.
    for service in ["mon", "osd", "mgr", "mds"] {
        let mut caps = BTreeMap::new();
        caps.insert(service.to_string(), "allow r\n[client.evil]\n\tkey = AQ==".to_string());
        let err = Caps::parse(&caps).expect_err("a newline must be refused");
        assert!(err.to_string().contains("control characters"), "{service}: {err}");
    }
    let mut fine = BTreeMap::new();
    fine.insert("mgr".to_string(), "allow r".to_string());
    assert!(Caps::parse(&fine).is_ok());
}

#[test]
fn only_allow_star_is_all_for_tell() {
    let osd = |t: &str| OsdCap::parse(t).unwrap().allows_all();
    assert!(osd("allow *"));
    assert!(osd("allow r pool=x, allow  *"));
    assert!(osd("allow all"));
    assert!(!osd("allow rwx"));
    assert!(!osd("profile rbd"));
    assert!(!osd("allow * pool=rbd"));
    let mon = |t: &str| MonCap::parse(t).unwrap().allows_all();
    assert!(mon("allow *"));
    assert!(!mon("allow rwx"));
    assert!(!mon("profile rbd"));
    assert!(!mon("allow service osd *"));
}
