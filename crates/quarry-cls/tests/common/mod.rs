//! The store fixture every test of the classes uses: a real `quarry_store::Store` with the
//! `Classes` registry, commands applied as the OSD applies them (origin filled in, clock
//! advancing), reads through the store's read path.

#![allow(dead_code)] // each test binary uses its own part of the fixture

use std::sync::Arc;

use quarry_cls::Classes;
use quarry_store::{ObjectCommand, Store, StoreOptions};
use quarry_types::{CallOrigin, ErrorCode, ObjectOp, OpReply, PgId, SnapContext, SNAP_HEAD};

pub const PG: PgId = PgId { pool: 1, seed: 0 };

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub store: Store,
    pub clock: u64,
}

fn origin(global_id: u64) -> CallOrigin {
    CallOrigin {
        entity: "client.admin".into(),
        global_id,
        addr: format!("127.0.0.1:0/{global_id}"),
    }
}

/// Fills in the origin, as the OSD does for every call it admits.
fn as_caller(ops: Vec<ObjectOp>, who: u64) -> Vec<ObjectOp> {
    ops.into_iter()
        .map(|op| match op {
            ObjectOp::Call { class, method, input, .. } => {
                ObjectOp::Call { class, method, input, origin: Some(origin(who)) }
            }
            other => other,
        })
        .collect()
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let options =
            StoreOptions { methods: Some(Arc::new(Classes::new())), ..Default::default() };
        let store = Store::open_with(&dir.path().join("store.redb"), &options).unwrap();
        // The read path uses the local clock: start the command clock there.
        let clock =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        Fixture { _dir: dir, store, clock }
    }

    /// Applies `ops` on `name` as caller `who` at the fixture's clock.
    pub fn apply(&mut self, name: &str, who: u64, ops: Vec<ObjectOp>) -> OpReply {
        self.clock += 1;
        let command = ObjectCommand {
            name: name.into(),
            snapc: SnapContext::default(),
            ops: as_caller(ops, who),
            mtime: (self.clock, 0),
            reqid: None,
        };
        self.store.apply(PG, &[command], b"state").unwrap().pop().unwrap()
    }

    pub fn read(&self, name: &str, who: u64, ops: Vec<ObjectOp>) -> OpReply {
        self.store.read(PG, name, SNAP_HEAD, &as_caller(ops, who)).unwrap()
    }
}

pub fn code(reply: &OpReply) -> Option<ErrorCode> {
    match reply {
        OpReply::Ok(_) => None,
        OpReply::Failed { code, .. } => Some(*code),
    }
}

/// The bytes the single method call of a successful reply returned.
pub fn returned(reply: &OpReply) -> bytes::Bytes {
    match reply {
        OpReply::Ok(out) => match out.last() {
            Some(quarry_types::OpOutput::Returned(bytes)) => bytes.clone(),
            other => panic!("expected a method's return, got {other:?}"),
        },
        failed => panic!("call failed: {failed:?}"),
    }
}
