//! The `rbd` class run by a real store, as the OSD runs it: headers, snapshots, parents and
//! clone v2 children, image-meta, the pool directory and id objects, the clone v1 registry,
//! the trash, object maps, and the pinned encoding of everything the class stores.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use quarry_cls::codec;
use quarry_cls::rbd::directory::{
    ChildRegistryRequest, DirEntryRequest, DirList, DirRenameRequest, ListRequest, LookupRequest,
    SetIdRequest, TrashAddRequest, TrashList,
};
use quarry_cls::rbd::header::{
    ChildRequest, ChildSpec, CreateRequest, ImageHeader, MetadataKeyRequest, MetadataList,
    MetadataListRequest, MetadataSetRequest, RemoveParentRequest, SetFeaturesRequest,
    SetProtectionRequest, SetSizeRequest, SnapLimitRequest, SnapRequest, SnapshotAddRequest,
    SnapshotRenameRequest,
};
use quarry_cls::rbd::object_map::{self, ObjectMap, ResizeRequest, UpdateRequest};
use quarry_cls::rbd::{
    call, decode, features, ParentInfo, ParentSpec, Protection, SnapNamespace, SnapshotInfo,
    TrashEntry, TrashSource,
};
use quarry_types::{CmpOp, ErrorCode, ObjectOp, OpReply};

use common::{code, returned, Fixture};

const HDR: &str = "rbd_header.1234abcd";

fn create_req(size: u64, features: u64) -> CreateRequest {
    CreateRequest {
        size,
        order: 22,
        features,
        object_prefix: "rbd_data.1234abcd".into(),
        stripe_unit: 0,
        stripe_count: 0,
    }
}

fn ok(reply: OpReply) {
    assert_eq!(code(&reply), None, "{reply:?}");
}

fn header(f: &Fixture) -> ImageHeader {
    decode(&returned(&f.read(HDR, 1, vec![call("get_image", &())]))).unwrap()
}

fn image(f: &mut Fixture, features: u64) {
    ok(f.apply(HDR, 1, vec![call("create", &create_req(10 << 30, features))]));
}

fn snap(f: &mut Fixture, id: u64, name: &str) -> OpReply {
    f.apply(
        HDR,
        1,
        vec![call("snapshot_add", &SnapshotAddRequest { snap_id: id, name: name.into() })],
    )
}

#[test]
fn create_validates_and_get_image_reads_it_back() {
    let mut f = Fixture::new();
    let bad = |req: CreateRequest| code(&Fixture::new().apply(HDR, 1, vec![call("create", &req)]));
    assert_eq!(bad(CreateRequest { order: 11, ..create_req(1, 0) }), Some(ErrorCode::EDOM));
    assert_eq!(bad(CreateRequest { order: 26, ..create_req(1, 0) }), Some(ErrorCode::EDOM));
    assert_eq!(bad(create_req(1, features::JOURNALING)), Some(ErrorCode::ENOSYS));
    assert_eq!(bad(create_req(1, features::FAST_DIFF)), Some(ErrorCode::EINVAL));
    assert_eq!(bad(create_req(1, features::OBJECT_MAP)), Some(ErrorCode::EINVAL));
    let prefixless = CreateRequest { object_prefix: String::new(), ..create_req(1, 0) };
    assert_eq!(bad(prefixless), Some(ErrorCode::EINVAL));
    let striped = CreateRequest { stripe_unit: 1 << 16, stripe_count: 4, ..create_req(1, 0) };
    assert_eq!(bad(striped.clone()), Some(ErrorCode::EINVAL), "striping needs STRIPINGV2");
    assert_eq!(bad(CreateRequest { features: features::STRIPINGV2, ..striped }), None);

    assert_eq!(code(&f.read(HDR, 1, vec![call("get_image", &())])), Some(ErrorCode::ENOENT));
    image(&mut f, features::DEFAULT);
    let clock = f.clock;
    let h = header(&f);
    assert_eq!((h.size, h.order, h.features, h.flags), (10 << 30, 22, features::DEFAULT, 0));
    assert_eq!(h.object_prefix, "rbd_data.1234abcd");
    assert_eq!((h.snap_seq, h.snapshots.len(), h.parent.clone()), (0, 0, None));
    assert_eq!((h.stripe_unit, h.stripe_count), (4 << 20, 1));
    assert_eq!(h.create_timestamp, (clock, 0));
    assert_eq!(
        features::names(h.features),
        ["layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"]
    );
    let again = f.apply(HDR, 1, vec![call("create", &create_req(1, 0))]);
    assert_eq!(code(&again), Some(ErrorCode::EEXIST));
    assert_eq!(header(&f).size, 10 << 30, "a refused create changes nothing");
}

#[test]
fn snapshots_follow_cls_rbd_rules() {
    let mut f = Fixture::new();
    image(&mut f, features::DEFAULT);
    ok(snap(&mut f, 4, "a"));
    assert_eq!(code(&snap(&mut f, 4, "b")), Some(ErrorCode::EEXIST), "same id");
    assert_eq!(code(&snap(&mut f, 5, "a")), Some(ErrorCode::EEXIST), "same name");
    assert_eq!(code(&snap(&mut f, 3, "b")), Some(ErrorCode::ESTALE), "older than snap_seq");
    ok(f.apply(HDR, 1, vec![call("set_size", &SetSizeRequest { size: 1 << 30 })]));
    ok(snap(&mut f, 7, "b"));
    let h = header(&f);
    assert_eq!(h.snap_seq, 7);
    assert_eq!(h.snap_context().snaps, vec![7, 4]);
    let a = h.user_snapshot("a").unwrap();
    assert_eq!((a.id, a.size, a.protection), (4, 10 << 30, Protection::Unprotected));
    assert_eq!(h.user_snapshot("b").unwrap().size, 1 << 30);

    // Limit: ERANGE below the count, EDQUOT when reached, cleared by None.
    let limit = |n| call("set_snap_limit", &SnapLimitRequest { limit: n });
    assert_eq!(code(&f.apply(HDR, 1, vec![limit(Some(1))])), Some(ErrorCode::ERANGE));
    ok(f.apply(HDR, 1, vec![limit(Some(2))]));
    assert_eq!(code(&snap(&mut f, 8, "c")), Some(ErrorCode::EDQUOT));
    ok(f.apply(HDR, 1, vec![limit(None)]));
    ok(snap(&mut f, 8, "c"));

    // Rename.
    let rename = |id, name: &str| {
        call("snapshot_rename", &SnapshotRenameRequest { snap_id: id, name: name.into() })
    };
    assert_eq!(code(&f.apply(HDR, 1, vec![rename(8, "a")])), Some(ErrorCode::EEXIST));
    assert_eq!(code(&f.apply(HDR, 1, vec![rename(9, "z")])), Some(ErrorCode::ENOENT));
    ok(f.apply(HDR, 1, vec![rename(8, "c2")]));
    assert!(header(&f).user_snapshot("c2").is_some());

    // Protection: a protected snapshot cannot be removed.
    let protect =
        |id, p| call("set_protection", &SetProtectionRequest { snap_id: id, protection: p });
    ok(f.apply(HDR, 1, vec![protect(4, Protection::Protected)]));
    let remove = |id| call("snapshot_remove", &SnapRequest { snap_id: id });
    assert_eq!(code(&f.apply(HDR, 1, vec![remove(4)])), Some(ErrorCode::EBUSY));

    // Clone v2 children keep the snapshot (and its protection) until they detach.
    let child = ChildSpec { pool: 3, namespace: String::new(), image_id: "c1".into() };
    let attach = call("child_attach", &ChildRequest { snap_id: 4, child: child.clone() });
    ok(f.apply(HDR, 1, vec![attach.clone()]));
    assert_eq!(code(&f.apply(HDR, 1, vec![attach])), Some(ErrorCode::EEXIST));
    assert_eq!(
        code(&f.apply(HDR, 1, vec![protect(4, Protection::Unprotected)])),
        Some(ErrorCode::EBUSY)
    );
    let listed: Vec<ChildSpec> = decode(&returned(&f.read(
        HDR,
        1,
        vec![call("children_list", &SnapRequest { snap_id: 4 })],
    )))
    .unwrap();
    assert_eq!(listed, vec![child.clone()]);
    // The user removes it: with a child it goes to the trash namespace, its name freed.
    let unprotecting = f.apply(HDR, 1, vec![protect(4, Protection::Unprotecting)]);
    assert_eq!(code(&unprotecting), Some(ErrorCode::EBUSY));
    assert_eq!(header(&f).snapshot(4).unwrap().protection, Protection::Protected);
    let trash = call("snapshot_trash_add", &SnapRequest { snap_id: 4 });
    assert_eq!(code(&f.apply(HDR, 1, vec![trash.clone()])), Some(ErrorCode::EBUSY));
    // (Clone v2 images are cloned from unprotected snapshots: unprotect before attaching.)
    let detach = call("child_detach", &ChildRequest { snap_id: 4, child: child.clone() });
    let left: u64 = decode(&returned(&f.apply(HDR, 1, vec![detach.clone()]))).unwrap();
    assert_eq!(left, 0);
    assert_eq!(code(&f.apply(HDR, 1, vec![detach])), Some(ErrorCode::ENOENT));
    ok(f.apply(HDR, 1, vec![protect(4, Protection::Unprotected)]));
    ok(f.apply(HDR, 1, vec![call("child_attach", &ChildRequest { snap_id: 4, child })]));
    assert_eq!(code(&f.apply(HDR, 1, vec![remove(4)])), Some(ErrorCode::EBUSY));
    ok(f.apply(HDR, 1, vec![trash]));
    let h = header(&f);
    let trashed = h.snapshot(4).unwrap();
    assert_eq!(trashed.namespace, SnapNamespace::Trash { original_name: "a".into() });
    assert!(h.user_snapshot("a").is_none());
    ok(snap(&mut f, 9, "a"));
    ok(f.apply(HDR, 1, vec![remove(7)]));
    assert_eq!(code(&f.apply(HDR, 1, vec![remove(7)])), Some(ErrorCode::ENOENT));
    assert_eq!(header(&f).snap_context().snaps, vec![9, 8, 4]);
}

#[test]
fn protection_needs_layering() {
    let mut f = Fixture::new();
    image(&mut f, 0);
    ok(snap(&mut f, 1, "s"));
    let req = SetProtectionRequest { snap_id: 1, protection: Protection::Protected };
    assert_eq!(code(&f.apply(HDR, 1, vec![call("set_protection", &req)])), Some(ErrorCode::EINVAL));
}

#[test]
fn parent_link_overlap_and_deep_flatten() {
    let mut f = Fixture::new();
    image(&mut f, features::DEFAULT);
    let spec = ParentSpec { pool: 2, namespace: String::new(), image_id: "p1".into(), snap_id: 5 };
    let parent = ParentInfo { spec, overlap: 4 << 30 };
    ok(f.apply(HDR, 1, vec![call("set_parent", &parent)]));
    assert_eq!(code(&f.apply(HDR, 1, vec![call("set_parent", &parent)])), Some(ErrorCode::EEXIST));
    ok(snap(&mut f, 3, "s"));
    // Shrinking below the overlap shrinks it; growing again does not restore it.
    ok(f.apply(HDR, 1, vec![call("set_size", &SetSizeRequest { size: 1 << 30 })]));
    ok(f.apply(HDR, 1, vec![call("set_size", &SetSizeRequest { size: 8 << 30 })]));
    let h = header(&f);
    assert_eq!(h.parent.as_ref().unwrap().overlap, 1 << 30);
    assert_eq!(h.snapshot(3).unwrap().parent.as_ref().unwrap().overlap, 4 << 30);
    ok(f.apply(HDR, 1, vec![call("remove_parent", &RemoveParentRequest::default())]));
    let h = header(&f);
    assert_eq!(h.parent, None);
    assert_eq!(h.snapshot(3).unwrap().parent, None, "deep-flatten: snapshots flattened too");
    let again = f.apply(HDR, 1, vec![call("remove_parent", &RemoveParentRequest::default())]);
    assert_eq!(code(&again), Some(ErrorCode::ENOENT));

    // Without deep-flatten the snapshots keep reading through.
    let mut g = Fixture::new();
    image(&mut g, features::LAYERING);
    ok(g.apply(HDR, 1, vec![call("set_parent", &parent)]));
    ok(snap(&mut g, 3, "s"));
    ok(g.apply(HDR, 1, vec![call("remove_parent", &RemoveParentRequest::default())]));
    assert!(header(&g).snapshot(3).unwrap().parent.is_some());
    // And no parent without layering.
    let mut h = Fixture::new();
    image(&mut h, 0);
    assert_eq!(code(&h.apply(HDR, 1, vec![call("set_parent", &parent)])), Some(ErrorCode::EINVAL));
}

#[test]
fn features_change_only_where_ceph_allows() {
    let mut f = Fixture::new();
    image(&mut f, features::DEFAULT);
    let set = |features, mask| call("set_features", &SetFeaturesRequest { features, mask });
    let m = features::OBJECT_MAP;
    assert_eq!(
        code(&f.apply(HDR, 1, vec![set(0, m)])),
        Some(ErrorCode::EINVAL),
        "fast-diff needs it"
    );
    ok(f.apply(HDR, 1, vec![set(0, features::FAST_DIFF | m)]));
    let l = features::LAYERING;
    assert_eq!(code(&f.apply(HDR, 1, vec![set(0, l)])), Some(ErrorCode::EINVAL), "immutable");
    ok(f.apply(HDR, 1, vec![set(0, features::DEEP_FLATTEN)]));
    let d = features::DEEP_FLATTEN;
    assert_eq!(code(&f.apply(HDR, 1, vec![set(d, d)])), Some(ErrorCode::EINVAL), "disable-only");
    assert_eq!(header(&f).features, features::LAYERING | features::EXCLUSIVE_LOCK);
}

#[test]
fn image_meta_is_paged_and_checked() {
    let mut f = Fixture::new();
    image(&mut f, 0);
    let entries: BTreeMap<String, Bytes> =
        (0..30).map(|i| (format!("k{i:02}"), Bytes::from(format!("v{i}")))).collect();
    ok(f.apply(HDR, 1, vec![call("metadata_set", &MetadataSetRequest { entries })]));
    let get = |f: &Fixture, key: &str| {
        f.read(HDR, 1, vec![call("metadata_get", &MetadataKeyRequest { key: key.into() })])
    };
    assert_eq!(returned(&get(&f, "k07")), Bytes::from("v7"));
    assert_eq!(code(&get(&f, "nope")), Some(ErrorCode::ENOENT));
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let req = MetadataListRequest { start_after: after.clone(), max: 8 };
        let page: MetadataList =
            decode(&returned(&f.read(HDR, 1, vec![call("metadata_list", &req)]))).unwrap();
        seen.extend(page.entries.keys().cloned());
        after = page.entries.keys().next_back().cloned().unwrap_or_default();
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, (0..30).map(|i| format!("k{i:02}")).collect::<Vec<_>>());
    let rm = |key: &str| call("metadata_remove", &MetadataKeyRequest { key: key.into() });
    ok(f.apply(HDR, 1, vec![rm("k07")]));
    assert_eq!(code(&f.apply(HDR, 1, vec![rm("k07")])), Some(ErrorCode::ENOENT));
    // Image-meta never shows up as a header field, nor header keys as image-meta.
    assert_eq!(header(&f).size, 10 << 30);
}

#[test]
fn directory_id_objects_and_registries() {
    let mut f = Fixture::new();
    let dir = "rbd_directory";
    let add = |name: &str, id: &str| {
        call("dir_add_image", &DirEntryRequest { name: name.into(), id: id.into() })
    };
    ok(f.apply(dir, 1, vec![add("golden", "aa01")]));
    assert_eq!(code(&f.apply(dir, 1, vec![add("golden", "bb02")])), Some(ErrorCode::EEXIST));
    assert_eq!(code(&f.apply(dir, 1, vec![add("other", "aa01")])), Some(ErrorCode::EEXIST));
    assert_eq!(code(&f.apply(dir, 1, vec![add("a/b", "cc03")])), Some(ErrorCode::EINVAL));
    for i in 0..5 {
        ok(f.apply(dir, 1, vec![add(&format!("vm{i}"), &format!("ff{i}"))]));
    }
    let lookup = |f: &Fixture, method: &str, key: &str| -> Result<String, ErrorCode> {
        let reply = f.read(dir, 1, vec![call(method, &LookupRequest { key: key.into() })]);
        match code(&reply) {
            None => Ok(decode(&returned(&reply)).unwrap()),
            Some(code) => Err(code),
        }
    };
    assert_eq!(lookup(&f, "dir_get_id", "golden"), Ok("aa01".into()));
    assert_eq!(lookup(&f, "dir_get_name", "ff3"), Ok("vm3".into()));
    assert_eq!(lookup(&f, "dir_get_id", "nope"), Err(ErrorCode::ENOENT));
    let rename = DirRenameRequest { src: "golden".into(), dst: "vm1".into(), id: "aa01".into() };
    assert_eq!(
        code(&f.apply(dir, 1, vec![call("dir_rename_image", &rename)])),
        Some(ErrorCode::EEXIST)
    );
    let rename = DirRenameRequest { dst: "gold".into(), ..rename };
    ok(f.apply(dir, 1, vec![call("dir_rename_image", &rename)]));
    assert_eq!(lookup(&f, "dir_get_name", "aa01"), Ok("gold".into()));
    assert_eq!(lookup(&f, "dir_get_id", "golden"), Err(ErrorCode::ENOENT));
    let list = |f: &Fixture, after: &str, max| -> DirList {
        let req = ListRequest { start_after: after.into(), max };
        decode(&returned(&f.read(dir, 1, vec![call("dir_list", &req)]))).unwrap()
    };
    let first = list(&f, "", 4);
    assert_eq!(first.images.keys().collect::<Vec<_>>(), ["gold", "vm0", "vm1", "vm2"]);
    assert!(first.more);
    let rest = list(&f, "vm2", 4);
    assert_eq!(rest.images.keys().collect::<Vec<_>>(), ["vm3", "vm4"]);
    assert!(!rest.more);
    let remove = |name: &str, id: &str| {
        call("dir_remove_image", &DirEntryRequest { name: name.into(), id: id.into() })
    };
    assert_eq!(code(&f.apply(dir, 1, vec![remove("gold", "ff1")])), Some(ErrorCode::ENOENT));
    ok(f.apply(dir, 1, vec![remove("gold", "aa01")]));
    assert_eq!(list(&f, "", 100).images.len(), 5);
    // An absent directory lists empty.
    let empty = Fixture::new();
    assert!(list(&empty, "", 10).images.is_empty());

    // The id object is set once.
    let id_obj = "rbd_id.vm0";
    ok(f.apply(id_obj, 1, vec![call("set_id", &SetIdRequest { id: "ff0".into() })]));
    let again = f.apply(id_obj, 1, vec![call("set_id", &SetIdRequest { id: "ee".into() })]);
    assert_eq!(code(&again), Some(ErrorCode::EEXIST));
    let bad = f.apply("rbd_id.x", 1, vec![call("set_id", &SetIdRequest { id: "a.b".into() })]);
    assert_eq!(code(&bad), Some(ErrorCode::EINVAL));
    let id: String = decode(&returned(&f.read(id_obj, 1, vec![call("get_id", &())]))).unwrap();
    assert_eq!(id, "ff0");
    assert_eq!(code(&f.read("rbd_id.none", 1, vec![call("get_id", &())])), Some(ErrorCode::ENOENT));

    // Clone v1 registry.
    let parent =
        ParentSpec { pool: 1, namespace: String::new(), image_id: "aa01".into(), snap_id: 4 };
    let reg = |child: &str| ChildRegistryRequest { parent: parent.clone(), child_id: child.into() };
    ok(f.apply("rbd_children", 1, vec![call("add_child", &reg("c1"))]));
    ok(f.apply("rbd_children", 1, vec![call("add_child", &reg("c0"))]));
    assert_eq!(
        code(&f.apply("rbd_children", 1, vec![call("add_child", &reg("c1"))])),
        Some(ErrorCode::EEXIST)
    );
    let children = |f: &Fixture| -> Vec<String> {
        decode(&returned(&f.read("rbd_children", 1, vec![call("get_children", &parent)]))).unwrap()
    };
    assert_eq!(children(&f), ["c0", "c1"]);
    ok(f.apply("rbd_children", 1, vec![call("remove_child", &reg("c0"))]));
    ok(f.apply("rbd_children", 1, vec![call("remove_child", &reg("c1"))]));
    assert!(children(&f).is_empty());
    assert_eq!(
        code(&f.apply("rbd_children", 1, vec![call("remove_child", &reg("c1"))])),
        Some(ErrorCode::ENOENT)
    );

    // Trash.
    let entry = TrashEntry {
        source: TrashSource::User,
        name: "vm4".into(),
        deletion_time: (100, 0),
        deferment_end_time: (200, 0),
    };
    let add = TrashAddRequest { id: "ff4".into(), entry: entry.clone() };
    ok(f.apply("rbd_trash", 1, vec![call("trash_add", &add)]));
    assert_eq!(
        code(&f.apply("rbd_trash", 1, vec![call("trash_add", &add)])),
        Some(ErrorCode::EEXIST)
    );
    let listed: TrashList = decode(&returned(&f.read(
        "rbd_trash",
        1,
        vec![call("trash_list", &ListRequest { start_after: String::new(), max: 10 })],
    )))
    .unwrap();
    assert_eq!(listed.entries, BTreeMap::from([("ff4".to_string(), entry)]));
    let key = LookupRequest { key: "ff4".into() };
    ok(f.apply("rbd_trash", 1, vec![call("trash_remove", &key)]));
    assert_eq!(
        code(&f.read("rbd_trash", 1, vec![call("trash_get", &key)])),
        Some(ErrorCode::ENOENT)
    );
}

#[test]
fn object_map_resize_update_and_snapshot_marking() {
    let mut f = Fixture::new();
    let om = "rbd_object_map.1234abcd";
    let load = |f: &Fixture| -> ObjectMap {
        decode(&returned(&f.read(om, 1, vec![call("object_map_load", &())]))).unwrap()
    };
    let resize = |count, state| {
        call("object_map_resize", &ResizeRequest { object_count: count, default_state: state })
    };
    let update = |start, end, new_state, current_state| {
        call("object_map_update", &UpdateRequest { start, end, new_state, current_state })
    };
    assert_eq!(code(&f.read(om, 1, vec![call("object_map_load", &())])), Some(ErrorCode::ENOENT));
    ok(f.apply(om, 1, vec![resize(10, object_map::NONEXISTENT)]));
    ok(f.apply(om, 1, vec![update(2, 7, object_map::EXISTS, None)]));
    assert_eq!(code(&f.apply(om, 1, vec![update(8, 11, 1, None)])), Some(ErrorCode::ERANGE));
    assert_eq!(code(&f.apply(om, 1, vec![update(0, 1, 4, None)])), Some(ErrorCode::EINVAL));
    // Only objects in the current state change.
    ok(f.apply(om, 1, vec![update(0, 10, object_map::PENDING, Some(object_map::EXISTS))]));
    let map = load(&f);
    let states: Vec<u8> = (0..10).map(|k| map.get(k)).collect();
    assert_eq!(states, [0, 0, 2, 2, 2, 2, 2, 0, 0, 0]);
    // Shrinking over existing objects is refused; after they are gone it works.
    assert_eq!(code(&f.apply(om, 1, vec![resize(3, 0)])), Some(ErrorCode::ESTALE));
    ok(f.apply(om, 1, vec![update(3, 10, object_map::NONEXISTENT, None)]));
    ok(f.apply(om, 1, vec![resize(3, 0)]));
    ok(f.apply(om, 1, vec![resize(6, object_map::EXISTS)]));
    let map = load(&f);
    assert_eq!((0..7).map(|k| map.get(k)).collect::<Vec<_>>(), [0, 0, 2, 1, 1, 1, 0]);
    // A snapshot marks EXISTS as EXISTS_CLEAN (fast-diff) and leaves the rest.
    ok(f.apply(om, 1, vec![call("object_map_snap_add", &())]));
    let map = load(&f);
    assert_eq!((0..6).map(|k| map.get(k)).collect::<Vec<_>>(), [0, 0, 2, 3, 3, 3]);
    // Save replaces it whole and checks the length.
    let bad = ObjectMap { object_count: 9, packed: Bytes::from_static(&[0]) };
    assert_eq!(code(&f.apply(om, 1, vec![call("object_map_save", &bad)])), Some(ErrorCode::EINVAL));
    ok(f.apply(om, 1, vec![call("object_map_save", &ObjectMap::filled(9, object_map::EXISTS))]));
    assert_eq!(load(&f), ObjectMap::filled(9, object_map::EXISTS));
}

#[test]
fn a_failing_vector_leaves_the_header_untouched() {
    let mut f = Fixture::new();
    image(&mut f, features::DEFAULT);
    let guard = ObjectOp::OmapCmp { key: "size".into(), op: CmpOp::Eq, value: Bytes::from("x") };
    let reply = f.apply(HDR, 1, vec![call("set_size", &SetSizeRequest { size: 1 }), guard]);
    assert_eq!(code(&reply), Some(ErrorCode::ECANCELED));
    ok(snap(&mut f, 1, "s"));
    let reply = f.apply(
        HDR,
        1,
        vec![
            call("snapshot_add", &SnapshotAddRequest { snap_id: 2, name: "t".into() }),
            call("snapshot_add", &SnapshotAddRequest { snap_id: 3, name: "s".into() }),
        ],
    );
    assert_eq!(code(&reply), Some(ErrorCode::EEXIST));
    let h = header(&f);
    assert_eq!((h.size, h.snap_seq, h.snapshots.len()), (10 << 30, 1, 1));
    // Undecodable input is EINVAL.
    let garbage = quarry_cls::call_op("rbd", "set_size", Bytes::from_static(b"\x01\x02"));
    assert_eq!(code(&f.apply(HDR, 1, vec![garbage])), Some(ErrorCode::EINVAL));
}

/// Golden bytes of what the class stores and of its requests: a change needs a new codec
/// version and a decoder for the old one, never an edited golden file.
#[test]
fn encodings_are_pinned() {
    let spec = ParentSpec { pool: 2, namespace: "ns".into(), image_id: "p1".into(), snap_id: 5 };
    let parent = ParentInfo { spec: spec.clone(), overlap: 1 << 30 };
    let snapshot = SnapshotInfo {
        id: 7,
        name: "golden".into(),
        namespace: SnapNamespace::Trash { original_name: "g".into() },
        size: 10 << 30,
        features: features::DEFAULT,
        flags: 1,
        parent: Some(parent.clone()),
        protection: Protection::Protected,
        child_count: 2,
        timestamp: (1_700_000_000, 5),
    };
    let trash = TrashEntry {
        source: TrashSource::Removing,
        name: "vm".into(),
        deletion_time: (1, 2),
        deferment_end_time: (3, 4),
    };
    let child = ChildSpec { pool: 3, namespace: String::new(), image_id: "c1".into() };
    let values = vec![
        ("size_u64", codec::encode(&(10u64 << 30)).to_vec()),
        ("order_u8", codec::encode(&22u8).to_vec()),
        ("object_prefix", codec::encode(&"rbd_data.ab".to_string()).to_vec()),
        ("timestamp", codec::encode(&(1_700_000_000u64, 7u32)).to_vec()),
        ("parent", codec::encode(&parent).to_vec()),
        ("snapshot", codec::encode(&snapshot).to_vec()),
        ("trash_entry", codec::encode(&trash).to_vec()),
        ("child_spec", codec::encode(&child).to_vec()),
        ("v1_children", codec::encode(&vec!["c0".to_string(), "c1".to_string()]).to_vec()),
        ("object_count", codec::encode(&9u64).to_vec()),
        ("create_request", codec::encode(&create_req(1 << 30, features::DEFAULT)).to_vec()),
    ];
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/rbd_v1.hex");
    let header = "quarry-cls rbd class, codec version 1: header values, snapshot, parent, trash,\n\
                  children, object map count, create request.\n\
                  Generated once; never edit: a change of bytes needs a new version.";
    quarry_persist::golden::check(&path, header, &values);
    let golden = quarry_persist::golden::parse(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(codec::decode_stored::<SnapshotInfo>(&golden[5].1), Ok(snapshot));
    assert_eq!(codec::decode_stored::<TrashEntry>(&golden[6].1), Ok(trash));
}
