//! The classes run by a real store (`quarry_store::Store` with the `Classes` registry), as the
//! OSD runs them: semantics of each method, atomicity with the rest of the vector, the read
//! path, and the pinned encoding of the state they persist.

use bytes::Bytes;
use quarry_cls::lock::{self, LockRequest, LockType};
use quarry_cls::{codec, numops};
use quarry_store::{ObjectCommand, Store};
use quarry_types::{CmpOp, ErrorCode, ObjectOp, OpOutput, OpReply, Payload, SnapContext};

mod common;

use common::{code, Fixture, PG};

fn lock_info(f: &Fixture, name: &str) -> lock::LockInfo {
    match f.read(name, 9, vec![lock::get_info_op("l")]) {
        OpReply::Ok(out) => match &out[0] {
            OpOutput::Returned(bytes) => lock::decode_info(bytes).unwrap(),
            other => panic!("get_info returned {other:?}"),
        },
        failed => panic!("get_info failed: {failed:?}"),
    }
}

fn lock_req(kind: LockType, cookie: &str, tag: &str) -> LockRequest {
    LockRequest {
        name: "l".into(),
        lock_type: kind,
        cookie: cookie.into(),
        tag: tag.into(),
        description: "test".into(),
        duration_secs: 0,
        may_renew: false,
        must_renew: false,
    }
}

#[test]
fn exclusive_lock_admits_one_locker() {
    let mut f = Fixture::new();
    let req = lock_req(LockType::Exclusive, "c1", "");
    assert_eq!(code(&f.apply("hdr", 1, vec![lock::lock_op(&req)])), None);
    assert_eq!(code(&f.apply("hdr", 2, vec![lock::lock_op(&req)])), Some(ErrorCode::EBUSY));
    assert_eq!(code(&f.apply("hdr", 1, vec![lock::lock_op(&req)])), Some(ErrorCode::EEXIST));
    let shared = lock_req(LockType::Shared, "c2", "");
    assert_eq!(code(&f.apply("hdr", 2, vec![lock::lock_op(&shared)])), Some(ErrorCode::EBUSY));
    let info = lock_info(&f, "hdr");
    assert_eq!(info.lock_type, Some(LockType::Exclusive));
    assert_eq!(info.lockers.len(), 1);
    assert_eq!(info.lockers[0].locker, "client.1");
    assert_eq!(info.lockers[0].cookie, "c1");
    assert_eq!(info.lockers[0].addr, "127.0.0.1:0/1");
    // Only the holder unlocks its own hold; another instance must break it.
    let unlock = lock::UnlockRequest { name: "l".into(), cookie: "c1".into() };
    assert_eq!(code(&f.apply("hdr", 2, vec![lock::unlock_op(&unlock)])), Some(ErrorCode::ENOENT));
    let brk =
        lock::BreakLockRequest { name: "l".into(), locker: "client.1".into(), cookie: "c1".into() };
    assert_eq!(code(&f.apply("hdr", 2, vec![lock::break_lock_op(&brk)])), None);
    assert_eq!(code(&f.apply("hdr", 2, vec![lock::break_lock_op(&brk)])), Some(ErrorCode::ENOENT));
    assert_eq!(lock_info(&f, "hdr"), lock::LockInfo::default());
    assert_eq!(code(&f.apply("hdr", 2, vec![lock::lock_op(&req)])), None);
}

#[test]
fn shared_lockers_need_the_same_tag_and_expire() {
    let mut f = Fixture::new();
    let mut a = lock_req(LockType::Shared, "a", "t");
    a.duration_secs = 10;
    assert_eq!(code(&f.apply("o", 1, vec![lock::lock_op(&a)])), None);
    assert_eq!(
        code(&f.apply("o", 2, vec![lock::lock_op(&lock_req(LockType::Shared, "b", "t"))])),
        None
    );
    let other_tag = lock_req(LockType::Shared, "c", "u");
    assert_eq!(code(&f.apply("o", 3, vec![lock::lock_op(&other_tag)])), Some(ErrorCode::EBUSY));
    assert_eq!(lock_info(&f, "o").lockers.len(), 2);
    // Renewal needs may_renew.
    let mut renew = a.clone();
    renew.may_renew = true;
    assert_eq!(code(&f.apply("o", 1, vec![lock::lock_op(&renew)])), None);
    let mut only_renew = lock_req(LockType::Shared, "zz", "t");
    only_renew.must_renew = true;
    assert_eq!(code(&f.apply("o", 1, vec![lock::lock_op(&only_renew)])), Some(ErrorCode::ENOENT));
    // Past a's expiry (the command clock moves 1 s per apply), only b remains.
    f.clock += 100;
    let names = |f: &mut Fixture| -> Vec<String> {
        match f.apply("o", 5, vec![lock::list_locks_op()]) {
            OpReply::Ok(out) => match &out[0] {
                OpOutput::Returned(b) => lock::decode_names(b).unwrap(),
                o => panic!("{o:?}"),
            },
            r => panic!("{r:?}"),
        }
    };
    assert_eq!(names(&mut f), vec!["l".to_string()]);
    let unlock_b = lock::UnlockRequest { name: "l".into(), cookie: "b".into() };
    assert_eq!(code(&f.apply("o", 2, vec![lock::unlock_op(&unlock_b)])), None);
    assert!(names(&mut f).is_empty());
}

#[test]
fn assert_locked_guards_a_write_in_the_same_vector() {
    let mut f = Fixture::new();
    let req = lock_req(LockType::Exclusive, "me", "");
    f.apply("obj", 1, vec![lock::lock_op(&req)]);
    let guard = lock::AssertLockedRequest {
        name: "l".into(),
        lock_type: LockType::Exclusive,
        cookie: "me".into(),
        tag: String::new(),
    };
    let write = |byte: u8| ObjectOp::WriteFull { data: Payload::new(vec![byte; 100]) };
    assert_eq!(code(&f.apply("obj", 1, vec![lock::assert_locked_op(&guard), write(1)])), None);
    let refused = f.apply("obj", 2, vec![lock::assert_locked_op(&guard), write(2)]);
    assert_eq!(refused, OpReply::Failed { index: 0, code: ErrorCode::EBUSY });
    let data = f.read("obj", 1, vec![ObjectOp::Read { off: 0, len: 0 }]);
    let OpReply::Ok(out) = data else { panic!() };
    assert_eq!(out[0], OpOutput::Data(Payload::new(vec![1u8; 100])));
}

#[test]
fn numops_adds_and_a_failing_vector_leaves_no_trace() {
    let mut f = Fixture::new();
    assert_eq!(code(&f.apply("n", 1, vec![numops::add_op("k", 2.5)])), None);
    assert_eq!(code(&f.apply("n", 1, vec![numops::mul_op("k", 4.0)])), None);
    let get = |f: &Fixture| {
        let OpReply::Ok(out) =
            f.read("n", 1, vec![ObjectOp::OmapGetValsByKeys { keys: vec!["k".into()] }])
        else {
            panic!()
        };
        let OpOutput::OmapVals { vals, .. } = &out[0] else { panic!() };
        vals.get("k").cloned()
    };
    assert_eq!(get(&f), Some(Bytes::from("10")));
    // The method writes, then a later guard fails: the write is undone.
    let guard = ObjectOp::CmpXattr { name: "x".into(), op: CmpOp::Eq, value: Bytes::from("nope") };
    let failed = f.apply("n", 1, vec![numops::add_op("k", 1.0), guard]);
    assert_eq!(failed, OpReply::Failed { index: 1, code: ErrorCode::ECANCELED });
    assert_eq!(get(&f), Some(Bytes::from("10")));
    // A value that is not a number is EBADMSG and stays as it was.
    let vals = [("k".to_string(), Bytes::from("ten"))].into_iter().collect();
    f.apply("n", 1, vec![ObjectOp::OmapSetVals { vals }]);
    assert_eq!(code(&f.apply("n", 1, vec![numops::add_op("k", 1.0)])), Some(ErrorCode::EBADMSG));
    assert_eq!(get(&f), Some(Bytes::from("ten")));
    assert_eq!(
        code(&f.apply("n", 1, vec![numops::add_op("k", f64::NAN)])),
        Some(ErrorCode::EINVAL)
    );
}

#[test]
fn unknown_methods_bad_input_and_the_read_path() {
    let mut f = Fixture::new();
    let unknown = quarry_cls::call_op("lock", "steal", Bytes::new());
    assert_eq!(code(&f.apply("o", 1, vec![unknown.clone()])), Some(ErrorCode::EOPNOTSUPP));
    assert_eq!(code(&f.read("o", 1, vec![unknown])), Some(ErrorCode::EOPNOTSUPP));
    let garbage = quarry_cls::call_op("lock", "lock", Bytes::from_static(b"\x01\xff"));
    assert_eq!(code(&f.apply("o", 1, vec![garbage])), Some(ErrorCode::EINVAL));
    assert_eq!(code(&f.read("o", 1, vec![lock::get_info_op("l")])), Some(ErrorCode::ENOENT));
    // A writing method cannot run on the read path.
    let req = lock_req(LockType::Exclusive, "c", "");
    assert_eq!(code(&f.read("o", 1, vec![lock::lock_op(&req)])), Some(ErrorCode::EROFS));
    // A store without a registry runs no method.
    let dir = tempfile::tempdir().unwrap();
    let bare = Store::open(&dir.path().join("s.redb")).unwrap();
    let command = ObjectCommand {
        name: "o".into(),
        snapc: SnapContext::default(),
        ops: vec![numops::add_op("k", 1.0)],
        mtime: (1, 0),
        reqid: None,
    };
    let reply = bare.apply(PG, &[command], b"s").unwrap().pop().unwrap();
    assert_eq!(code(&reply), Some(ErrorCode::EOPNOTSUPP));
}

/// Golden bytes of what the classes persist (a lock's xattr) and of their requests: a change
/// needs a new codec version and a decoder for the old one, never an edited golden file.
#[test]
fn encodings_are_pinned() {
    let mut stored = lock::StoredLock {
        lock_type: Some(LockType::Shared),
        tag: "t".into(),
        ..Default::default()
    };
    stored.lockers.insert(
        ("client.7".into(), "c".into()),
        lock::StoredLocker {
            addr: "1.2.3.4:0/7".into(),
            description: "d".into(),
            expiration: Some((9, 1)),
        },
    );
    let values = vec![
        ("stored_lock", codec::encode(&stored).to_vec()),
        ("lock_request", codec::encode(&lock_req(LockType::Exclusive, "c", "t")).to_vec()),
        (
            "numop_request",
            codec::encode(&numops::NumOpRequest { key: "k".into(), value: 1.5 }).to_vec(),
        ),
    ];
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cls_v1.hex");
    let header = "quarry-cls codec version 1: a lock's xattr, lock and numops requests.\n\
                  Generated once; never edit: a change of bytes needs a new version.";
    quarry_persist::golden::check(&path, header, &values);
    let golden = quarry_persist::golden::parse(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(codec::decode_stored::<lock::StoredLock>(&golden[0].1), Ok(stored));
}

/// `data.append` adds at the current end: a missing object is created (even by an empty
/// append), successive appends concatenate, and an append after a write lands after it.
#[test]
fn append_writes_at_the_current_end() {
    use quarry_cls::data;
    let mut f = Fixture::new();
    assert_eq!(code(&f.apply("a", 1, vec![data::append_op(b"")])), None);
    assert_eq!(code(&f.apply("a", 1, vec![data::append_op(b"hello ")])), None);
    assert_eq!(code(&f.apply("a", 2, vec![data::append_op(b"world")])), None);
    let write = ObjectOp::Write { off: 11, data: Payload::new(Bytes::from_static(b"!")) };
    assert_eq!(code(&f.apply("a", 1, vec![write])), None);
    assert_eq!(code(&f.apply("a", 2, vec![data::append_op(b"?")])), None);
    match f.read("a", 1, vec![ObjectOp::Read { off: 0, len: 100 }]) {
        OpReply::Ok(out) => match &out[0] {
            OpOutput::Data(p) => assert_eq!(&p.data[..], b"hello world!?"),
            other => panic!("read returned {other:?}"),
        },
        failed => panic!("read failed: {failed:?}"),
    }
    let bad = quarry_cls::call_op("data", "append", Bytes::from_static(b"\x01junk"));
    assert_eq!(code(&f.apply("a", 1, vec![bad])), Some(ErrorCode::EINVAL));
}
