//! Shared test helpers: store setup, command builders, and an in-memory model of the object
//! semantics (one `Vec<u8>` per object at the head and per snapshot) that tests compare the
//! store against.

use std::collections::BTreeMap;

use bytes::Bytes;
use quarry_store::{ObjectCommand, Store};
use quarry_types::{
    ErrorCode, ObjectOp, OpOutput, OpReply, Payload, PgId, SnapContext, SnapId, OBJECT_SIZE_MAX,
    SNAP_HEAD,
};

/// The PG most tests use.
pub const PG: PgId = PgId { pool: 1, seed: 7 };

/// A store in a fresh temporary directory.
pub fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open store");
    (dir, store)
}

/// A command without snapshots.
pub fn cmd(name: &str, ops: Vec<ObjectOp>) -> ObjectCommand {
    ObjectCommand {
        name: name.to_string(),
        snapc: SnapContext::default(),
        ops,
        mtime: (100, 5),
        reqid: None,
    }
}

/// A command with a snapshot context and mtime.
pub fn cmd_at(
    name: &str,
    snapc: &SnapContext,
    mtime: (u64, u32),
    ops: Vec<ObjectOp>,
) -> ObjectCommand {
    ObjectCommand { name: name.to_string(), snapc: snapc.clone(), ops, mtime, reqid: None }
}

/// Applies one command in its own batch and returns its reply.
pub fn apply1(store: &Store, c: ObjectCommand) -> OpReply {
    let mut replies = store.apply(PG, &[c], b"state").expect("apply");
    assert_eq!(replies.len(), 1);
    replies.pop().expect("one reply")
}

/// A write op with a correct crc.
pub fn write(off: u64, data: &[u8]) -> ObjectOp {
    ObjectOp::Write { off, data: Payload::new(Bytes::copy_from_slice(data)) }
}

/// A write-full op with a correct crc.
pub fn write_full(data: &[u8]) -> ObjectOp {
    ObjectOp::WriteFull { data: Payload::new(Bytes::copy_from_slice(data)) }
}

/// Deterministic test bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    if seed == 0 {
        return vec![0; len];
    }
    (0..len)
        .map(|i| seed.wrapping_mul(31).wrapping_add((i % 251) as u8).wrapping_add((i / 4096) as u8))
        .collect()
}

/// The whole content of an object at `snap` (ENOENT etc. as Err), checking the payload crc.
pub fn read_all(store: &Store, name: &str, snap: SnapId) -> Result<Vec<u8>, ErrorCode> {
    match store.read(PG, name, snap, &[ObjectOp::Read { off: 0, len: 0 }]).expect("read") {
        OpReply::Ok(mut out) => match out.pop() {
            Some(OpOutput::Data(p)) => {
                assert!(p.verify(), "read payload crc does not match its data");
                Ok(p.data.to_vec())
            }
            other => panic!("unexpected read output {other:?}"),
        },
        OpReply::Failed { code, .. } => Err(code),
    }
}

/// Asserts a reply failed at `index` with `code`.
#[track_caller]
pub fn assert_failed(reply: &OpReply, index: u32, code: ErrorCode) {
    assert_eq!(reply, &OpReply::Failed { index, code }, "expected op {index} to fail with {code}");
}

/// Asserts a reply succeeded.
#[track_caller]
pub fn assert_ok(reply: &OpReply) -> Vec<OpOutput> {
    match reply {
        OpReply::Ok(out) => out.clone(),
        other => panic!("expected success, got {other:?}"),
    }
}

/// One object as the model holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MObj {
    pub data: Vec<u8>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub omap: BTreeMap<String, Vec<u8>>,
    pub header: Vec<u8>,
    pub mtime: (u64, u32),
}

/// What one snapshot saw: each object's data and mtime.
pub type SnapView = BTreeMap<String, (Vec<u8>, (u64, u32))>;

/// The reference model: head objects, and what each live snapshot saw when it was taken.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub heads: BTreeMap<String, MObj>,
    pub snaps: BTreeMap<SnapId, SnapView>,
    pub seq: SnapId,
    /// Removed snapshots the store has not been asked to trim yet.
    pub removed: Vec<SnapId>,
}

fn in_limit(off: u64, len: u64) -> bool {
    off.checked_add(len).is_some_and(|e| e <= OBJECT_SIZE_MAX)
}

impl Model {
    /// The snapshot context a current writer uses.
    pub fn snapc(&self) -> SnapContext {
        SnapContext { seq: self.seq, snaps: self.snaps.keys().rev().copied().collect() }
    }

    /// Takes a snapshot (a new id above every earlier one) and returns its id.
    pub fn create_snap(&mut self) -> SnapId {
        self.seq += 1;
        let view = self.heads.iter().map(|(n, o)| (n.clone(), (o.data.clone(), o.mtime))).collect();
        self.snaps.insert(self.seq, view);
        self.seq
    }

    /// Removes a snapshot.
    pub fn remove_snap(&mut self, snap: SnapId) {
        self.snaps.remove(&snap);
        self.removed.push(snap);
    }

    /// Live snapshot ids, descending.
    pub fn live(&self) -> Vec<SnapId> {
        self.snaps.keys().rev().copied().collect()
    }

    /// Applies a command to the model and returns the reply the store must give.
    pub fn apply(&mut self, c: &ObjectCommand) -> OpReply {
        let mut obj = self.heads.get(&c.name).cloned();
        let mut outputs = Vec::new();
        for (i, op) in c.ops.iter().enumerate() {
            match model_op(&mut obj, op, c.mtime) {
                Ok(out) => outputs.push(out),
                Err(code) => return OpReply::Failed { index: i as u32, code },
            }
        }
        match obj {
            Some(o) => self.heads.insert(c.name.clone(), o),
            None => self.heads.remove(&c.name),
        };
        OpReply::Ok(outputs)
    }

    /// Checks every object in `names` at the head and at every live snapshot.
    pub fn verify(&self, store: &Store, names: &[String]) {
        for name in names {
            let head = self.heads.get(name);
            let got = store
                .read(
                    PG,
                    name,
                    SNAP_HEAD,
                    &[
                        ObjectOp::Stat,
                        ObjectOp::Read { off: 0, len: 0 },
                        ObjectOp::GetXattrs,
                        ObjectOp::OmapGetVals {
                            start_after: String::new(),
                            prefix: String::new(),
                            max: 1024,
                        },
                        ObjectOp::OmapGetHeader,
                    ],
                )
                .expect("read head");
            match head {
                None => assert_failed(&got, 0, ErrorCode::ENOENT),
                Some(o) => {
                    let want = vec![
                        OpOutput::Stat {
                            size: o.data.len() as u64,
                            mtime_sec: o.mtime.0,
                            mtime_nsec: o.mtime.1,
                        },
                        OpOutput::Data(Payload::new(o.data.clone())),
                        OpOutput::Xattrs(
                            o.xattrs
                                .iter()
                                .map(|(k, v)| (k.clone(), Bytes::from(v.clone())))
                                .collect(),
                        ),
                        OpOutput::OmapVals {
                            vals: o
                                .omap
                                .iter()
                                .map(|(k, v)| (k.clone(), Bytes::from(v.clone())))
                                .collect(),
                            more: false,
                        },
                        OpOutput::OmapHeader(Bytes::from(o.header.clone())),
                    ];
                    assert_same(&got, &OpReply::Ok(want), &format!("head of {name}"));
                }
            }
            for (&snap, view) in &self.snaps {
                let got = store
                    .read(PG, name, snap, &[ObjectOp::Stat, ObjectOp::Read { off: 0, len: 0 }])
                    .expect("read snapshot");
                match view.get(name) {
                    None => assert_failed(&got, 0, ErrorCode::ENOENT),
                    Some((data, mtime)) => {
                        let want = vec![
                            OpOutput::Stat {
                                size: data.len() as u64,
                                mtime_sec: mtime.0,
                                mtime_nsec: mtime.1,
                            },
                            OpOutput::Data(Payload::new(data.clone())),
                        ];
                        assert_same(
                            &got,
                            &OpReply::Ok(want),
                            &format!("{name} at snapshot {snap}"),
                        );
                    }
                }
            }
        }
    }
}

fn touch(obj: &mut Option<MObj>, mtime: (u64, u32)) -> &mut MObj {
    let o = obj.get_or_insert_with(MObj::default);
    o.mtime = mtime;
    o
}

fn model_op(
    obj: &mut Option<MObj>,
    op: &ObjectOp,
    mtime: (u64, u32),
) -> Result<OpOutput, ErrorCode> {
    let need = |obj: &Option<MObj>| obj.is_some().then_some(()).ok_or(ErrorCode::ENOENT);
    match op {
        ObjectOp::Read { off, len } => {
            need(obj)?;
            let data = &obj.as_ref().expect("checked").data;
            let size = data.len() as u64;
            let out = if *off >= size {
                Vec::new()
            } else {
                let end = if *len == 0 { size } else { (off + len).min(size) };
                data[*off as usize..end as usize].to_vec()
            };
            Ok(OpOutput::Data(Payload::new(out)))
        }
        ObjectOp::Stat => {
            need(obj)?;
            let o = obj.as_ref().expect("checked");
            Ok(OpOutput::Stat {
                size: o.data.len() as u64,
                mtime_sec: o.mtime.0,
                mtime_nsec: o.mtime.1,
            })
        }
        ObjectOp::AssertExists => need(obj).map(|_| OpOutput::None),
        ObjectOp::GetXattr { name } => {
            need(obj)?;
            let o = obj.as_ref().expect("checked");
            o.xattrs
                .get(name)
                .map(|v| OpOutput::Xattr(Bytes::from(v.clone())))
                .ok_or(ErrorCode::ENODATA)
        }
        ObjectOp::CmpXattr { name, op, value } => {
            need(obj)?;
            let o = obj.as_ref().expect("checked");
            let stored = o.xattrs.get(name).map(|v| v.as_slice()).unwrap_or(&[]);
            if op.holds(stored, value) {
                Ok(OpOutput::None)
            } else {
                Err(ErrorCode::ECANCELED)
            }
        }
        ObjectOp::Write { off, data } => {
            if !in_limit(*off, data.len() as u64) {
                return Err(ErrorCode::EFBIG);
            }
            if !data.verify() {
                return Err(ErrorCode::EINVAL);
            }
            let o = touch(obj, mtime);
            let end = *off as usize + data.len();
            if o.data.len() < end {
                o.data.resize(end, 0);
            }
            o.data[*off as usize..end].copy_from_slice(&data.data);
            Ok(OpOutput::None)
        }
        ObjectOp::WriteFull { data } => {
            if !data.verify() {
                return Err(ErrorCode::EINVAL);
            }
            touch(obj, mtime).data = data.data.to_vec();
            Ok(OpOutput::None)
        }
        ObjectOp::Zero { off, len } => {
            if !in_limit(*off, *len) {
                return Err(ErrorCode::EFBIG);
            }
            if obj.is_some() {
                let o = touch(obj, mtime);
                let size = o.data.len() as u64;
                let end = (off + len).min(size);
                if *off < end {
                    o.data[*off as usize..end as usize].fill(0);
                }
            }
            Ok(OpOutput::None)
        }
        ObjectOp::Truncate { size } => {
            if *size > OBJECT_SIZE_MAX {
                return Err(ErrorCode::EFBIG);
            }
            touch(obj, mtime).data.resize(*size as usize, 0);
            Ok(OpOutput::None)
        }
        ObjectOp::Create { exclusive } => {
            if *exclusive && obj.is_some() {
                return Err(ErrorCode::EEXIST);
            }
            touch(obj, mtime);
            Ok(OpOutput::None)
        }
        ObjectOp::Remove => {
            need(obj)?;
            *obj = None;
            Ok(OpOutput::None)
        }
        ObjectOp::SetXattr { name, value } => {
            touch(obj, mtime).xattrs.insert(name.clone(), value.to_vec());
            Ok(OpOutput::None)
        }
        ObjectOp::RmXattr { name } => {
            need(obj)?;
            if !obj.as_ref().expect("checked").xattrs.contains_key(name) {
                return Err(ErrorCode::ENODATA);
            }
            touch(obj, mtime).xattrs.remove(name);
            Ok(OpOutput::None)
        }
        ObjectOp::OmapSetVals { vals } => {
            let o = touch(obj, mtime);
            for (k, v) in vals {
                o.omap.insert(k.clone(), v.to_vec());
            }
            Ok(OpOutput::None)
        }
        ObjectOp::OmapRmKeys { keys } => {
            need(obj)?;
            let o = touch(obj, mtime);
            for k in keys {
                o.omap.remove(k);
            }
            Ok(OpOutput::None)
        }
        ObjectOp::OmapClear => {
            need(obj)?;
            let o = touch(obj, mtime);
            o.omap.clear();
            o.header.clear();
            Ok(OpOutput::None)
        }
        ObjectOp::OmapSetHeader { header } => {
            touch(obj, mtime).header = header.to_vec();
            Ok(OpOutput::None)
        }
        other => panic!("model does not implement {other:?}"),
    }
}

/// Compares replies; on a difference prints data payloads as length and first differing
/// offset instead of megabytes of bytes.
#[track_caller]
pub fn assert_same(got: &OpReply, want: &OpReply, what: &str) {
    if got == want {
        return;
    }
    if let (OpReply::Ok(g), OpReply::Ok(w)) = (got, want) {
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            if let (OpOutput::Data(a), OpOutput::Data(b)) = (a, b) {
                if a != b {
                    let first = a.data.iter().zip(b.data.iter()).position(|(x, y)| x != y);
                    panic!(
                        "{what}: output {i} differs: got {} bytes, want {}, first difference at {first:?}, crc ok {}",
                        a.data.len(),
                        b.data.len(),
                        a.verify()
                    );
                }
            } else if a != b {
                panic!("{what}: output {i} differs: got {a:?}, want {b:?}");
            }
        }
    }
    let short = |r: &OpReply| format!("{r:?}").chars().take(400).collect::<String>();
    panic!("{what}: got {}, want {}", short(got), short(want));
}

/// A request id of `entity` (`client.admin`).
pub fn reqid(entity: &str, client: u64, tid: u64) -> quarry_types::EntityReqId {
    let (_, id) = entity.split_once('.').expect("TYPE.ID");
    quarry_types::EntityReqId {
        entity: quarry_types::EntityName::client(id),
        reqid: quarry_types::ReqId { client, tid },
    }
}

/// An exclusive create.
pub fn create_excl() -> ObjectOp {
    ObjectOp::Create { exclusive: true }
}

/// Every row of a raw table keyed by `N` bytes (a closed store opened with redb directly).
fn raw_rows<const N: usize, T>(table: &T) -> Vec<([u8; N], Vec<u8>)>
where
    T: redb::ReadableTable<&'static [u8; N], &'static [u8]>,
{
    let rows = table.iter().expect("iter").map(|r| r.expect("row"));
    rows.map(|(k, v)| (*k.value(), v.value().to_vec())).collect()
}

/// Sets a raw store's format marker (`"QRYSTORE" ++ version u32 LE`).
fn set_raw_marker(txn: &redb::WriteTransaction, version: u32) {
    const RAW_META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let mut marker = b"QRYSTORE".to_vec();
    marker.extend_from_slice(&version.to_le_bytes());
    txn.open_table(RAW_META).expect("meta").insert("format", marker.as_slice()).expect("marker");
}

/// Rewrites a format-6 store (closed) as format 5 kept it: each duplicate table entry of the
/// `dup_log` rows (`pool BE ++ seed BE ++ first seq BE -> crc32c LE ++ version u8 ++ floor
/// u64 LE ++ count u32 LE ++ entries (part len u16 LE ++ part ++ value len u32 LE ++ value)`)
/// at or above its PG's floor becomes a `dups` row `pool BE ++ seed BE ++ part -> crc32c LE
/// ++ value`; `dup_log` deleted, marker version 5. Raw redb writes behind the store's back;
/// the row layout is decoded here independently of the store's code.
pub fn downgrade_to_v5(file: &std::path::Path) {
    use redb::TableDefinition;
    const RAW_LOG: TableDefinition<&[u8; 20], &[u8]> = TableDefinition::new("dup_log");
    const RAW_DUPS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dups");
    let db = redb::Database::create(file).expect("open raw db");
    let txn = db.begin_write().expect("begin");
    {
        let rows: Vec<([u8; 20], Vec<u8>)> = raw_rows(&txn.open_table(RAW_LOG).expect("table"));
        txn.delete_table(RAW_LOG).expect("delete dup_log");
        // Per PG: (floor of its newest row, entries).
        type Entries = Vec<(u64, Vec<u8>, Vec<u8>)>;
        let mut pgs: std::collections::BTreeMap<[u8; 12], (u64, Entries)> = Default::default();
        for (key, row) in rows {
            let pg: [u8; 12] = key[..12].try_into().unwrap();
            let first = u64::from_be_bytes(key[12..].try_into().unwrap());
            assert_eq!(u32::from_le_bytes(row[..4].try_into().unwrap()), crc32c::crc32c(&row[4..]));
            let plain = &row[4..];
            assert_eq!(plain[0], 1, "row version");
            let floor = u64::from_le_bytes(plain[1..9].try_into().unwrap());
            let count = u32::from_le_bytes(plain[9..13].try_into().unwrap()) as u64;
            let mut rest = &plain[13..];
            let entry = pgs.entry(pg).or_default();
            entry.0 = floor;
            for i in 0..count {
                let len = u16::from_le_bytes(rest[..2].try_into().unwrap()) as usize;
                let part = rest[2..2 + len].to_vec();
                rest = &rest[2 + len..];
                let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                let value = rest[4..4 + len].to_vec();
                rest = &rest[4 + len..];
                entry.1.push((first + i, part, value));
            }
            assert!(rest.is_empty());
        }
        let mut dups = txn.open_table(RAW_DUPS).expect("dups");
        for (pg, (floor, entries)) in pgs {
            for (seq, part, value) in entries.into_iter().filter(|e| e.0 >= floor) {
                assert_eq!(u64::from_le_bytes(value[1..9].try_into().unwrap()), seq);
                let key = [pg.as_slice(), &part].concat();
                let mut sealed = crc32c::crc32c(&value).to_le_bytes().to_vec();
                sealed.extend_from_slice(&value);
                dups.insert(key.as_slice(), sealed.as_slice()).expect("dups row");
            }
        }
        set_raw_marker(&txn, 5);
    }
    txn.commit().expect("commit");
}

/// Rewrites a format-6 store (closed) as format 4 kept it (through format 5): the `dup_seq`
/// table, `pool BE ++ seed BE ++ seq BE -> crc32c LE ++ reqid part of the dups key`, rebuilt from the `dups`
/// rows (their sealed values carry the seq: crc32c u32 ++ version u8 ++ seq u64 LE), marker
/// version 4. Raw redb writes behind the store's back.
pub fn downgrade_to_v4(file: &std::path::Path) {
    downgrade_to_v5(file);
    use redb::{ReadableTable, TableDefinition};
    const RAW_DUPS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dups");
    const RAW_DUP_SEQ: TableDefinition<&[u8; 20], &[u8]> = TableDefinition::new("dup_seq");
    let db = redb::Database::create(file).expect("open raw db");
    let txn = db.begin_write().expect("begin");
    {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = txn
            .open_table(RAW_DUPS)
            .expect("dups")
            .iter()
            .expect("iter")
            .map(|r| r.expect("row"))
            .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
            .collect();
        let mut seqs = txn.open_table(RAW_DUP_SEQ).expect("dup_seq");
        for (key, value) in rows {
            let mut seq_key = [0u8; 20];
            seq_key[..12].copy_from_slice(&key[..12]);
            let seq = u64::from_le_bytes(value[5..13].try_into().expect("8 bytes"));
            seq_key[12..].copy_from_slice(&seq.to_be_bytes());
            let part = &key[12..];
            let mut sealed = crc32c::crc32c(part).to_le_bytes().to_vec();
            sealed.extend_from_slice(part);
            seqs.insert(&seq_key, sealed.as_slice()).expect("dup_seq row");
        }
        set_raw_marker(&txn, 4);
    }
    txn.commit().expect("commit");
}

/// The row count of a table of a store file (closed), or None if the table does not exist.
pub fn raw_table_len(file: &std::path::Path, table: &str) -> Option<u64> {
    use redb::{ReadableTableMetadata, TableDefinition};
    let db = redb::Database::create(file).expect("open raw db");
    let txn = db.begin_read().expect("begin");
    let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(table);
    match txn.open_untyped_table(def) {
        Ok(t) => Some(t.len().expect("len")),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => panic!("{table}: {e}"),
    }
}

/// Rewrites a format-6 store (closed) as format 3 kept it (through formats 5 and 4): each extent row (`extents`, key
/// object id ++ tag ++ first chunk) becomes one row per chunk in `chunks` (key object id ++
/// chunk index ++ tag; value crc32c LE ++ length u16 LE ++ block u64 LE, or 4 zero bytes for
/// a hole), marker version 3. Raw redb writes behind the store's back; the extent value
/// layout is decoded here independently of the store's code.
pub fn downgrade_to_v3(file: &std::path::Path) {
    downgrade_to_v4(file);
    use redb::TableDefinition;
    const RAW_EXTENTS: TableDefinition<&[u8; 24], &[u8]> = TableDefinition::new("extents");
    const RAW_CHUNKS: TableDefinition<&[u8; 24], &[u8]> = TableDefinition::new("chunks");
    let be = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap());
    let db = redb::Database::create(file).expect("open raw db");
    let txn = db.begin_write().expect("begin");
    {
        let rows: Vec<([u8; 24], Vec<u8>)> = raw_rows(&txn.open_table(RAW_EXTENTS).expect("table"));
        txn.delete_table(RAW_EXTENTS).expect("delete extents");
        let mut chunks = txn.open_table(RAW_CHUNKS).expect("chunks");
        for (key, value) in rows {
            let (id, tag, first) = (be(&key[..8]), be(&key[8..16]), be(&key[16..]));
            let count = u16::from_le_bytes([value[1], value[2]]) as u64;
            for k in 0..count {
                let mut ckey = [0u8; 24];
                ckey[..8].copy_from_slice(&id.to_be_bytes());
                ckey[8..16].copy_from_slice(&(first + k).to_be_bytes());
                ckey[16..].copy_from_slice(&tag.to_be_bytes());
                let row = match value[0] {
                    0 => vec![0u8; 4],
                    1 => {
                        let last_len = u16::from_le_bytes([value[3], value[4]]);
                        let block = u64::from_le_bytes(value[5..13].try_into().unwrap()) + k;
                        let at = 13 + 4 * k as usize;
                        let len = if k + 1 == count { last_len } else { 4096 };
                        let mut row = value[at..at + 4].to_vec();
                        row.extend_from_slice(&len.to_le_bytes());
                        row.extend_from_slice(&block.to_le_bytes());
                        row
                    }
                    kind => panic!("extent row of kind {kind}"),
                };
                chunks.insert(&ckey, row.as_slice()).expect("chunk row");
            }
        }
        set_raw_marker(&txn, 3);
    }
    txn.commit().expect("commit");
}

/// Rewrites a format-6 store (closed) as format 2 kept it (through format 3): every chunk's
/// data back in its redb row (crc32c LE ++ data[..4060]) with the rest in the `chunk_tails`
/// table, marker version 2; the data file is left behind with garbage in it (a format-2
/// store has none, and the migration must not trust one it finds). Raw redb writes behind
/// the store's back.
pub fn downgrade_to_v2(file: &std::path::Path) {
    downgrade_to_v3(file);
    use redb::TableDefinition;
    const RAW_CHUNKS: TableDefinition<&[u8; 24], &[u8]> = TableDefinition::new("chunks");
    const RAW_TAILS: TableDefinition<&[u8; 24], &[u8]> = TableDefinition::new("chunk_tails");
    let data_path = file.with_extension("data");
    let data = std::fs::read(&data_path).expect("read the data file");
    let db = redb::Database::create(file).expect("open raw db");
    let txn = db.begin_write().expect("begin");
    {
        let mut chunks = txn.open_table(RAW_CHUNKS).expect("chunks");
        let mut tails = txn.open_table(RAW_TAILS).expect("chunk_tails");
        let rows: Vec<([u8; 24], Vec<u8>)> = raw_rows(&chunks);
        for (key, value) in rows {
            if value.len() == 4 {
                continue; // a hole: the same bytes in both formats
            }
            assert_eq!(value.len(), 14, "a format-3 data row");
            let len = u16::from_le_bytes([value[4], value[5]]) as usize;
            let block = u64::from_le_bytes(value[6..14].try_into().unwrap()) as usize;
            let chunk = &data[block * 4096..block * 4096 + len];
            let mut row = value[..4].to_vec();
            row.extend_from_slice(&chunk[..len.min(4060)]);
            chunks.insert(&key, row.as_slice()).expect("write back");
            if len > 4060 {
                tails.insert(&key, &chunk[4060..]).expect("tail");
            }
        }
        set_raw_marker(&txn, 2);
    }
    txn.commit().expect("commit");
    std::fs::write(&data_path, vec![0xa5u8; 3 * 4096 + 100]).expect("garbage data file");
}

/// The format version in a store file's marker.
pub fn marker_version(file: &std::path::Path) -> u32 {
    use redb::TableDefinition;
    const RAW_META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    let db = redb::Database::create(file).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(RAW_META).unwrap();
    let v = meta.get("format").unwrap().unwrap().value().to_vec();
    u32::from_le_bytes(v[8..12].try_into().unwrap())
}
