//! Every capability profile against every class of operation, on a live cluster: read,
//! write, create, delete, snapshot, list, admin, in the user's pool and in another pool.
//! Each refusal is checked to have changed nothing.

use crate::io;
use std::collections::BTreeMap;

use bytes::Bytes;
use quarry_client::{ClientError, ErrorCode, MonCommand, PoolId, Rados};

use quarry_testkit::Cluster;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Read,
    List,
    Write,
    Create,
    Delete,
    Snapshot,
    /// A read-only server-side method (`lock.get_info`): Ceph's class-read.
    MethodRead,
    /// A writing server-side method (`numops.add`): Ceph's class-write, the `x` cap.
    MethodWrite,
}

const OK: Option<ErrorCode> = None;
const EPERM: Option<ErrorCode> = Some(ErrorCode::EPERM);
const EACCES: Option<ErrorCode> = Some(ErrorCode::EACCES);

/// (user, mon caps, osd caps, expectations in pool `a`, in pool `b`, admin command).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    [Option<ErrorCode>; 8],
    [Option<ErrorCode>; 8],
    Option<ErrorCode>,
);

const CLASSES: [Class; 8] = [
    Class::Read,
    Class::List,
    Class::Write,
    Class::Create,
    Class::Delete,
    Class::Snapshot,
    Class::MethodRead,
    Class::MethodWrite,
];

fn rows() -> Vec<Row> {
    //               read   list   write  create delete snapshot m-read m-write
    vec![
        (
            "full",
            "allow *",
            "allow *",
            [OK, OK, OK, OK, OK, OK, OK, OK],
            [OK, OK, OK, OK, OK, OK, OK, OK],
            OK,
        ),
        (
            "rbda",
            "profile rbd",
            "profile rbd pool=a",
            [OK, OK, OK, OK, OK, OK, OK, OK],
            [EPERM, EPERM, EPERM, EPERM, EPERM, EACCES, EPERM, EPERM],
            EACCES,
        ),
        (
            "roa",
            "profile rbd",
            "profile rbd-read-only pool=a",
            [OK, OK, EPERM, EPERM, EPERM, EACCES, OK, EPERM],
            [EPERM, EPERM, EPERM, EPERM, EPERM, EACCES, EPERM, EPERM],
            EACCES,
        ),
        (
            "rall",
            "allow r",
            "allow r",
            [OK, OK, EPERM, EPERM, EPERM, EACCES, OK, EPERM],
            [OK, OK, EPERM, EPERM, EPERM, EACCES, OK, EPERM],
            EACCES,
        ),
        (
            // rw without x: plain writes yes, writing methods no (as Ceph).
            "rwa",
            "allow r",
            "allow rw pool=a",
            [OK, OK, OK, OK, OK, OK, OK, EPERM],
            [EPERM, EPERM, EPERM, EPERM, EPERM, EACCES, EPERM, EPERM],
            EACCES,
        ),
    ]
}

fn errno<T>(r: Result<T, ClientError>) -> Option<ErrorCode> {
    r.err().map(|e| e.errno())
}

/// Runs one operation class as `user` in `pool`; `tag` makes object names unique.
async fn run(user: &Rados, pool: PoolId, class: Class, tag: &str) -> Option<ErrorCode> {
    match class {
        Class::Read => errno(io(user, pool).read("existing", 0, 0).await),
        Class::List => errno(user.list_objects(pool).await),
        Class::Write => {
            errno(io(user, pool).write_full("existing", Bytes::from(tag.to_string())).await)
        }
        Class::Create => errno(io(user, pool).create(&format!("new-{tag}"), true).await),
        Class::Delete => errno(io(user, pool).remove(&format!("victim-{tag}")).await),
        Class::Snapshot => errno(user.command(MonCommand::SnapCreate { pool }).await),
        Class::MethodRead => {
            let info = quarry_cls::lock::get_info_op("l");
            errno(io(user, pool).exec("existing", vec![info]).await)
        }
        Class::MethodWrite => {
            let add = quarry_cls::numops::add_op("n", 1.0);
            errno(io(user, pool).exec(&format!("counter-{tag}"), vec![add]).await)
        }
    }
}

/// What the admin sees afterwards: the effect happened iff the op was allowed.
async fn check_effect(
    admin: &Rados,
    pool: PoolId,
    class: Class,
    tag: &str,
    allowed: bool,
    snap_before: u64,
) {
    match class {
        Class::Read | Class::List | Class::MethodRead => {}
        Class::MethodWrite => {
            let exists = io(admin, pool).stat(&format!("counter-{tag}")).await.is_ok();
            assert_eq!(exists, allowed, "method write {tag}");
        }
        Class::Write => {
            let data = io(admin, pool).read("existing", 0, 0).await.unwrap();
            assert_eq!(data == tag.as_bytes(), allowed, "write {tag}: object holds {data:?}");
            // Put the baseline back for the next user.
            io(admin, pool).write_full("existing", Bytes::from_static(b"base")).await.unwrap();
        }
        Class::Create => {
            let exists = io(admin, pool).stat(&format!("new-{tag}")).await.is_ok();
            assert_eq!(exists, allowed, "create {tag}");
        }
        Class::Delete => {
            let exists = io(admin, pool).stat(&format!("victim-{tag}")).await.is_ok();
            assert_eq!(exists, !allowed, "delete {tag}");
        }
        Class::Snapshot => {
            // The map push may take a moment; a refused command must never show up.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            let mut now = admin.map().pools[&pool].snap_seq;
            while allowed && now == snap_before && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                now = admin.map().pools[&pool].snap_seq;
            }
            if !allowed {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                now = admin.map().pools[&pool].snap_seq;
            }
            assert_eq!(
                now > snap_before,
                allowed,
                "snapshot {tag}: snap_seq {snap_before} -> {now}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_profile_against_every_operation_class() {
    let mut builder = Cluster::builder().osds(1).pools(vec![("a", 8, 1), ("b", 8, 1)]);
    for (name, mon, osd, ..) in rows() {
        builder = builder.user(name, &[("mon", mon), ("osd", osd)]);
    }
    let cluster = builder.start().await;
    cluster.logs().expect("op denied by caps");
    let admin = cluster.admin().await;
    let mut report = BTreeMap::new();
    for (name, _, _, in_a, in_b, admin_expect) in rows() {
        let user = Rados::connect(cluster.user_config(name)).await.unwrap();
        for (pool_name, expect) in [("a", in_a), ("b", in_b)] {
            let pool = admin.pool_id(pool_name).unwrap();
            for (class, want) in CLASSES.iter().zip(expect) {
                let tag = format!("{name}-{pool_name}-{class:?}");
                io(&admin, pool).write_full("existing", Bytes::from_static(b"base")).await.unwrap();
                io(&admin, pool)
                    .write_full(&format!("victim-{tag}"), Bytes::from_static(b"v"))
                    .await
                    .unwrap();
                let snap_before = admin.map().pools[&pool].snap_seq;
                let got = run(&user, pool, *class, &tag).await;
                report.insert(tag.clone(), (got, want));
                check_effect(&admin, pool, *class, &tag, got.is_none(), snap_before).await;
            }
        }
        let pool_name = format!("made-by-{name}");
        let got = errno(
            user.command(MonCommand::PoolCreate {
                name: pool_name.clone(),
                pg_num: Some(4),
                size: Some(1),
            })
            .await,
        );
        report.insert(format!("{name}-admin"), (got, admin_expect));
        let exists = admin.lookup_pool(&pool_name).await.is_ok();
        assert_eq!(exists, got.is_none(), "pool create by {name}");
        user.shutdown().await;
    }
    let wrong: Vec<_> = report.iter().filter(|(_, (got, want))| got != want).collect();
    assert!(wrong.is_empty(), "unexpected outcomes (got, want): {wrong:#?}");
    admin.shutdown().await;
    cluster.shutdown().await;
}
