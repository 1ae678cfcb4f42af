//! `export-diff` / `import-diff` / `merge-diff` through a real cluster: a source image goes
//! through writes, discards, a grow and a shrink between snapshots (and a clone reads
//! through its parent); each diff applied to a copy makes it read exactly as the source at
//! that snapshot, the end snapshot is created, and the start snapshot is required.

use bytes::Bytes;
use quarry_rbd::diff::{export_diff, import_diff, merge_diff};
use quarry_rbd::{pool, CloneFormat, CreateOptions, Image, OpenOptions};
use quarry_testkit::Cluster;
use quarry_types::ErrorCode;

use crate::make_pool;

const MIB: u64 = 1 << 20;

fn pattern(seed: u8, len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| seed.wrapping_add((i % 251) as u8) | 1).collect::<Vec<u8>>())
}

/// Equal contents, else the first differing offset (not megabytes of bytes).
fn same(a: &[u8], b: &[u8], what: &str) {
    let first = a.iter().zip(b).position(|(x, y)| x != y);
    assert!(
        a.len() == b.len() && first.is_none(),
        "{what}: sizes {} and {}, first difference at {first:?}",
        a.len(),
        b.len()
    );
}

async fn whole(image: &Image) -> Vec<u8> {
    image.read(0, image.size().await).await.unwrap().to_vec()
}

async fn at_snap(io: &quarry_client::IoCtx, name: &str, snap: &str) -> Vec<u8> {
    let options =
        OpenOptions { snapshot: Some(snap.into()), read_only: true, ..Default::default() };
    whole(&Image::open(io, name, options).await.unwrap()).await
}

async fn diff_of(io: &quarry_client::IoCtx, name: &str, from: Option<&str>, to: &str) -> Vec<u8> {
    let options = OpenOptions { snapshot: Some(to.into()), read_only: true, ..Default::default() };
    let image = Image::open(io, name, options).await.unwrap();
    let mut out = Vec::new();
    export_diff(&image, from, &mut out, |_, _| {}).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diffs_between_snapshots_rebuild_the_image() {
    let cluster = Cluster::builder().pool_default_size(1).start().await;
    let rados = cluster.admin().await;
    let io = make_pool(&rados, "rbd", 1).await;
    let options = CreateOptions { order: 20, ..CreateOptions::new(8 * MIB) };
    pool::create(&io, "src", &options).await.unwrap();
    let src = Image::open(&io, "src", OpenOptions::default()).await.unwrap();

    // s1: data across object boundaries, a hole.
    src.write(0, pattern(1, 1500 << 10)).await.unwrap();
    src.write(5 * MIB + 100, pattern(2, 300 << 10)).await.unwrap();
    src.snap_create("s1").await.unwrap();
    // s2: overwrite part, discard a whole object and part of another, grow.
    src.write(MIB / 2, pattern(3, 4096)).await.unwrap();
    src.discard(0, 256 << 10).await.unwrap();
    src.discard(MIB, MIB).await.unwrap();
    src.resize(12 * MIB, |_, _| {}).await.unwrap();
    src.write(11 * MIB, pattern(4, 64 << 10)).await.unwrap();
    src.snap_create("s2").await.unwrap();
    // s3: shrink (cuts data), write.
    src.resize(6 * MIB, |_, _| {}).await.unwrap();
    src.write(3 * MIB, pattern(5, 10)).await.unwrap();
    src.snap_create("s3").await.unwrap();

    let d1 = diff_of(&io, "src", None, "s1").await;
    let d2 = diff_of(&io, "src", Some("s1"), "s2").await;
    let d3 = diff_of(&io, "src", Some("s2"), "s3").await;
    assert!(d1.starts_with(b"rbd diff v1\n"));
    assert!(d2.len() < d1.len() + (2 << 20), "an incremental diff carries the changes only");

    pool::create(&io, "dst", &CreateOptions { order: 20, ..CreateOptions::new(MIB) })
        .await
        .unwrap();
    let dst = Image::open(&io, "dst", OpenOptions::default()).await.unwrap();
    // Without s1 the second diff does not apply (and changes nothing).
    let e = import_diff(&dst, d2.as_slice(), None, |_, _| {}).await.unwrap_err();
    assert_eq!(e.errno(), ErrorCode::ENOENT, "{e}");
    assert_eq!(dst.size().await, MIB);
    for (diff, snap) in [(&d1, "s1"), (&d2, "s2"), (&d3, "s3")] {
        import_diff(&dst, diff.as_slice(), None, |_, _| {}).await.unwrap();
        same(&whole(&dst).await, &at_snap(&io, "src", snap).await, &format!("after {snap}"));
        same(&at_snap(&io, "dst", snap).await, &at_snap(&io, "src", snap).await, "snapshot");
    }
    // The end snapshot exists now: applying again is refused.
    let e = import_diff(&dst, d3.as_slice(), None, |_, _| {}).await.unwrap_err();
    assert_eq!(e.errno(), ErrorCode::EEXIST, "{e}");

    // merge-diff: s1 + (s1..s2) = s2, and (s1..s2) + (s2..s3) applies on s1.
    let mut merged = Vec::new();
    merge_diff(d1.as_slice(), d2.as_slice(), &mut merged).await.unwrap();
    let mut merged23 = Vec::new();
    merge_diff(d2.as_slice(), d3.as_slice(), &mut merged23).await.unwrap();
    pool::create(&io, "dst2", &CreateOptions { order: 20, ..CreateOptions::new(MIB) })
        .await
        .unwrap();
    let dst2 = Image::open(&io, "dst2", OpenOptions::default()).await.unwrap();
    import_diff(&dst2, merged.as_slice(), None, |_, _| {}).await.unwrap();
    same(&whole(&dst2).await, &at_snap(&io, "src", "s2").await, "contents");
    pool::create(&io, "dst4", &CreateOptions { order: 20, ..CreateOptions::new(MIB) })
        .await
        .unwrap();
    let dst4 = Image::open(&io, "dst4", OpenOptions::default()).await.unwrap();
    import_diff(&dst4, d1.as_slice(), None, |_, _| {}).await.unwrap();
    import_diff(&dst4, merged23.as_slice(), None, |_, _| {}).await.unwrap();
    same(&whole(&dst4).await, &at_snap(&io, "src", "s3").await, "contents");
    // A clone's full diff carries its parent's data.
    src.snap_protect("s3").await.unwrap();
    let parent = Image::open(
        &io,
        "src",
        OpenOptions { snapshot: Some("s3".into()), read_only: true, ..Default::default() },
    )
    .await
    .unwrap();
    pool::clone(
        &parent,
        &io,
        "kid",
        &CreateOptions { order: 20, ..CreateOptions::new(0) },
        CloneFormat::V2,
    )
    .await
    .unwrap();
    let kid = Image::open(&io, "kid", OpenOptions::default()).await.unwrap();
    kid.write(MIB, pattern(6, 4096)).await.unwrap();
    kid.snap_create("k1").await.unwrap();
    let dk = diff_of(&io, "kid", None, "k1").await;
    pool::create(&io, "dst3", &CreateOptions { order: 20, ..CreateOptions::new(MIB) })
        .await
        .unwrap();
    let dst3 = Image::open(&io, "dst3", OpenOptions::default()).await.unwrap();
    import_diff(&dst3, dk.as_slice(), None, |_, _| {}).await.unwrap();
    same(&whole(&dst3).await, &at_snap(&io, "kid", "k1").await, "contents");

    for image in [src, dst, dst2, dst3, dst4, kid] {
        image.close().await.unwrap();
    }
    rados.shutdown().await;
    cluster.shutdown().await;
}
