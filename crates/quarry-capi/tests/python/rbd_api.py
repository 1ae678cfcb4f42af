"""python3-rados / python3-rbd (Debian 12, Ceph 16.2) against Quarry's librados.so.2: the
calls of the modules' documented API that Quarry implements. Run by tests/tools.rs with
CEPH_CONF and LD_LIBRARY_PATH from DIR/env. Prints 'all checks passed' or raises."""
import json
import os
import time

import rados
import rbd

MIB = 1 << 20

with rados.Rados(conffile=os.environ["CEPH_CONF"]) as cluster:
    # rados_mon_command: the bytes `ceph osd pool ls -f json` prints.
    ret, out, status = cluster.mon_command(json.dumps({"prefix": "osd pool ls", "format": "json"}), b"")
    assert ret == 0 and "rbd" in json.loads(out), (ret, out, status)
    ret, out, status = cluster.mon_command(json.dumps({"prefix": "no such command"}), b"")
    assert ret < 0 and status, (ret, out, status)
    # Pools.
    assert "rbd" in cluster.list_pools()
    assert cluster.pool_exists("rbd") and not cluster.pool_exists("pynew")
    cluster.create_pool("pynew")
    assert cluster.pool_exists("pynew") and "pynew" in cluster.list_pools()
    cluster.delete_pool("pynew")
    assert not cluster.pool_exists("pynew")
    assert len(cluster.get_fsid()) == 36
    # rados_cluster_stat (libvirt's pool capacity): the OSDs' raw space in KiB.
    st = cluster.get_cluster_stats()
    assert st["kb"] > 0 and abs(st["kb_used"] + st["kb_avail"] - st["kb"]) <= 1, st

    with cluster.open_ioctx("rbd") as io:
        io.write_full("listed-1", b"x")
        io.write_full("listed-2", b"y")
        names = sorted(o.key for o in io.list_objects() if o.key.startswith("listed-"))
        assert names == ["listed-1", "listed-2"], names
        # rados_ioctx_pool_stat (libvirt's pool allocation): the fields in their places, once
        # the OSDs' periodic usage report shows an object just written.
        io.write_full("stats-probe", b"s" * 5000)
        deadline = time.time() + 60
        while True:
            st = io.get_stats()
            if st["num_objects"] >= 1 and st["num_bytes"] >= 5000:
                break
            assert time.time() < deadline, st
            time.sleep(0.2)
        io.remove_object("stats-probe")
        assert st["num_kb"] == (st["num_bytes"] + 1023) // 1024, st
        assert st["num_object_copies"] == st["num_objects"], st  # pool size 1
        assert st["num_objects_unfound"] == 0 and st["num_wr_kb"] == 0, st
        io.remove_object("listed-1")
        io.remove_object("listed-2")
        # Objects, xattrs.
        io.write_full("greeting", b"hello quarry")
        assert io.read("greeting") == b"hello quarry"
        io.write("greeting", b"HELLO", 0)
        assert io.read("greeting", 6, 6) == b"quarry"
        size, _mtime = io.stat("greeting")
        assert size == 12, size
        io.set_xattr("greeting", "lang", b"en")
        assert io.get_xattr("greeting", "lang") == b"en"
        io.rm_xattr("greeting", "lang")
        # Omap through write and read operations.
        with rados.WriteOpCtx() as op:
            io.set_omap(op, ("a", "b", "c"), (b"1", b"2", b"\x00\x03"))
            io.operate_write_op(op, "greeting")
        with rados.ReadOpCtx() as op:
            it, ret = io.get_omap_vals(op, "", "", 10)
            io.operate_read_op(op, "greeting")
            assert dict(it) == {"a": b"1", "b": b"2", "c": b"\x00\x03"}
        with rados.WriteOpCtx() as op:
            io.remove_omap_keys(op, ("a",))
            io.operate_write_op(op, "greeting")
        with rados.ReadOpCtx() as op:
            it, ret = io.get_omap_keys(op, "", 10)
            io.operate_read_op(op, "greeting")
            assert [k for k, _ in it] == ["b", "c"]
        with rados.ReadOpCtx() as op:
            it, ret = io.get_omap_vals_by_keys(op, ("c", "zz"))
            io.operate_read_op(op, "greeting")
            assert dict(it) == {"c": b"\x00\x03"}
        io.remove_object("greeting")
        try:
            io.stat("greeting")
            raise AssertionError("removed object still there")
        except rados.ObjectNotFound:
            pass

        # Images.
        r = rbd.RBD()
        r.create(io, "py", 16 * MIB, order=22)
        assert "py" in r.list(io), r.list(io)
        try:
            r.create(io, "py", MIB)
            raise AssertionError("EEXIST expected")
        except rbd.ImageExists:
            pass
        with rbd.Image(io, "py") as img:
            assert img.size() == 16 * MIB
            img.write(b"\xab" * 4096, 0)
            img.write(b"\xcd" * 4096, 5 * MIB)
            assert img.read(0, 4096) == b"\xab" * 4096
            assert img.read(5 * MIB, 4096) == b"\xcd" * 4096
            img.resize(32 * MIB)
            assert img.size() == 32 * MIB
            img.metadata_set("conf_rbd_cache", "false")
            assert img.metadata_get("conf_rbd_cache") == "false"
            img.metadata_remove("conf_rbd_cache")
            assert img.is_exclusive_lock_owner()  # taken by the first write
            img.create_snap("s1")
            assert [s["name"] for s in img.list_snaps()] == ["s1"]
            img.protect_snap("s1")
            assert img.is_protected_snap("s1")
            img.write(b"\xef" * 4096, 0)
            assert img.stat()["num_objs"] == 8
            assert img.id()
            assert img.block_name_prefix().startswith("rbd_data.")

        # Advisory locks, on an image without the exclusive-lock feature.
        r.create(io, "pylock", MIB, features=rbd.RBD_FEATURE_LAYERING)
        with rbd.Image(io, "pylock") as img:
            assert img.features() == rbd.RBD_FEATURE_LAYERING
            img.lock_exclusive("cookie-1")
            lockers = img.list_lockers()
            assert lockers["exclusive"] and lockers["lockers"][0][1] == "cookie-1", lockers
            try:
                img.lock_shared("cookie-2", "tag")
                raise AssertionError("a shared lock beside an exclusive one")
            except rbd.ImageBusy:
                pass
            img.unlock("cookie-1")
            assert not img.list_lockers(), img.list_lockers()
        r.remove(io, "pylock")

        # Watchers and the trash.
        r.create(io, "pytrash", MIB)
        with rbd.Image(io, "pytrash") as img:
            watchers = list(img.watchers_list())
            assert len(watchers) == 1 and watchers[0]["cookie"], watchers
        r.trash_move(io, "pytrash", 0)
        assert "pytrash" not in r.list(io)
        entries = [e for e in r.trash_list(io) if e["name"] == "pytrash"]
        assert len(entries) == 1, list(r.trash_list(io))
        image_id = entries[0]["id"]
        assert r.trash_get(io, image_id)["name"] == "pytrash"
        r.trash_restore(io, image_id, "pytrash2")
        assert "pytrash2" in r.list(io)
        r.trash_move(io, "pytrash2", 0)
        r.trash_remove(io, image_id)
        assert not [e for e in r.trash_list(io) if e["id"] == image_id]

        r.clone(io, "py", "s1", io, "pyclone")
        with rbd.Image(io, "py", snapshot="s1", read_only=True) as snap:
            children = [(c["pool"], c["image"]) for c in snap.list_children2()]
            assert children == [("rbd", "pyclone")], children
        with rbd.Image(io, "pyclone") as child:
            parent = child.get_parent_image_spec()
            assert parent["pool_name"] == "rbd" and parent["image_name"] == "py", parent
            assert parent["snap_name"] == "s1", parent
            assert child.read(0, 4096) == b"\xab" * 4096  # the snapshot's data
            child.flatten()
            try:
                child.get_parent_image_spec()
                raise AssertionError("flattened clone still has a parent")
            except rbd.ImageNotFound:
                pass
            assert child.read(5 * MIB, 4096) == b"\xcd" * 4096
        r.remove(io, "pyclone")
        with rbd.Image(io, "py") as img:
            img.unprotect_snap("s1")
            img.remove_snap("s1")
            assert list(img.list_snaps()) == []
        r.remove(io, "py")
        assert "py" not in r.list(io)

print("all checks passed")
