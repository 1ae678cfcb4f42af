//! Image namespaces: images of one pool kept apart by namespace (same names, separate
//! listings and objects), a clone whose parent is in another namespace, and the refusals
//! (image in a namespace that does not exist, removing a namespace with images).

use bytes::Bytes;
use quarry_rbd::{namespace, pool, CloneFormat, CreateOptions, Image, OpenOptions};
use quarry_testkit::Cluster;
use quarry_types::ErrorCode;

use crate::make_pool;

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_keep_images_apart() {
    let cluster = Cluster::builder().pool_default_size(1).start().await;
    let rados = cluster.admin().await;
    let io = make_pool(&rados, "rbd", 1).await;
    let in_ns = |name: &str| {
        let mut io = io.clone();
        io.set_namespace(name).unwrap();
        io
    };
    let (t1, t2) = (in_ns("t1"), in_ns("t2"));
    let options = CreateOptions { order: 20, ..CreateOptions::new(8 * MIB) };

    // No image in a namespace that does not exist; then create it (once).
    let refused = pool::create(&t1, "vm", &options).await.unwrap_err();
    assert_eq!(refused.errno(), ErrorCode::ENOENT);
    namespace::create(&io, "t1").await.unwrap();
    assert_eq!(namespace::create(&io, "t1").await.unwrap_err().errno(), ErrorCode::EEXIST);
    namespace::create(&io, "t2").await.unwrap();
    assert_eq!(namespace::list(&io).await.unwrap(), ["t1", "t2"]);
    assert!(namespace::exists(&io, "t1").await.unwrap());
    assert!(!namespace::exists(&io, "t3").await.unwrap());

    // The same image name in the default namespace and in t1, with different data.
    for (io, byte) in [(&io, 1u8), (&t1, 2u8)] {
        pool::create(io, "vm", &options).await.unwrap();
        let image = Image::open(io, "vm", OpenOptions::default()).await.unwrap();
        image.write(0, Bytes::from(vec![byte; 4096])).await.unwrap();
        image.close().await.unwrap();
    }
    for (io, byte) in [(&io, 1u8), (&t1, 2u8)] {
        let image = Image::open(io, "vm", OpenOptions::default()).await.unwrap();
        assert!(image.read(0, 4096).await.unwrap().iter().all(|&b| b == byte));
        image.close().await.unwrap();
    }
    let names = |io: &quarry_client::IoCtx| {
        let io = io.clone();
        async move { pool::list(&io).await.unwrap().into_iter().map(|e| e.name).collect::<Vec<_>>() }
    };
    assert_eq!(names(&io).await, ["vm"]);
    assert_eq!(names(&t1).await, ["vm"]);
    assert!(names(&t2).await.is_empty());
    assert_eq!(
        Image::open(&t2, "vm", OpenOptions::default()).await.unwrap_err().errno(),
        ErrorCode::ENOENT
    );
    // The RADOS objects of each namespace are listed apart.
    let default_objects = io.list_objects().await.unwrap();
    assert!(default_objects.contains(&"rbd_namespace".to_string()), "{default_objects:?}");
    assert!(t1.list_objects().await.unwrap().contains(&"rbd_directory".to_string()));
    assert!(!t2.list_objects().await.unwrap().iter().any(|o| o.starts_with("rbd_id.")));

    // A clone in t2 of a snapshot in the default namespace reads through to it.
    let golden = Image::open(&io, "vm", OpenOptions::default()).await.unwrap();
    golden.snap_create("base").await.unwrap();
    golden.snap_protect("base").await.unwrap();
    golden.close().await.unwrap();
    let base = pool::open_snapshot(&io, "vm", "base").await.unwrap();
    pool::clone(&base, &t2, "child", &options, CloneFormat::V2).await.unwrap();
    base.close().await.unwrap();
    let child = Image::open(&t2, "child", OpenOptions::default()).await.unwrap();
    assert_eq!(child.parent().await.unwrap().spec.namespace, "");
    assert!(child.read(0, 4096).await.unwrap().iter().all(|&b| b == 1));
    child.write(MIB, Bytes::from(vec![9u8; 4096])).await.unwrap();
    child.close().await.unwrap();

    // A namespace with images is not removed; an empty one is, with its objects.
    assert_eq!(namespace::remove(&io, "t2").await.unwrap_err().errno(), ErrorCode::EBUSY);
    pool::remove(&t2, "child").await.unwrap();
    namespace::remove(&io, "t2").await.unwrap();
    assert_eq!(namespace::list(&io).await.unwrap(), ["t1"]);
    assert!(t2.list_objects().await.unwrap().is_empty());
    assert_eq!(namespace::remove(&io, "t2").await.unwrap_err().errno(), ErrorCode::ENOENT);
    // An object name with the separator is refused, not misfiled.
    assert_eq!(io.stat("t1\u{1f}rbd_directory").await.unwrap_err().errno(), ErrorCode::EINVAL);

    rados.shutdown().await;
    cluster.shutdown().await;
}
