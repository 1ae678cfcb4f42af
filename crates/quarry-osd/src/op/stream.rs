//! Streamed reads: a large read's data handed to the client's connection while the store
//! still reads it from the device (`quarry_wire::conn`'s streamed replies), so the client's
//! receive and check of the data overlap the device read instead of following it. Only a
//! read alone in flight on the OSD is streamed: a part holds its connection's writer until
//! the read ends, and at a deeper queue the device and the transfers of other replies
//! overlap anyway.

use std::sync::Mutex;

use bytes::Bytes;
use quarry_store::ReadSink;
use quarry_types::ObjectOp;
use quarry_wire::conn::{PartSender, PartStarter};

/// A [`ReadSink`] that sends what it is given as the request's [`quarry_wire::Reply::ReadPart`].
pub(crate) struct PartSink {
    starter: PartStarter,
    part: Mutex<Part>,
}

/// A part's sender while it is open, its length once started, and whether it was ended.
#[derive(Default)]
struct Part {
    sender: Option<PartSender>,
    len: usize,
    ended: bool,
}

impl PartSink {
    pub fn new(starter: PartStarter) -> PartSink {
        PartSink { starter, part: Mutex::new(Part::default()) }
    }

    /// The bytes sent if the whole read went out (answer `ReadDone`); a part cut short is
    /// finished with zeros now (its sender dropped): the writer must not wait for it while
    /// the rest of the request goes on (a read repair may take seconds).
    pub fn finish(&self) -> Option<usize> {
        let mut part = self.part();
        part.sender = None;
        part.ended.then_some(part.len)
    }

    fn part(&self) -> std::sync::MutexGuard<'_, Part> {
        self.part.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ReadSink for PartSink {
    fn start(&self, len: usize) -> bool {
        let mut part = self.part();
        if part.len != 0 {
            return false;
        }
        part.len = len;
        part.sender = self.starter.start(len);
        part.sender.is_some()
    }

    fn piece(&self, piece: Bytes) -> bool {
        self.part().sender.as_mut().is_some_and(|sender| sender.piece(piece))
    }

    fn end(&self, crc: u32) {
        let mut part = self.part();
        if let Some(sender) = part.sender.take() {
            part.ended = sender.end(crc);
        }
    }

    fn abort(&self) {
        // Dropped: the writer finishes the part with zeros and goes on.
        self.part().sender = None;
    }
}

/// Whether an op vector may be streamed: one read (the store streams it only if it is large
/// and read in pieces).
pub(crate) fn streamable(ops: &[ObjectOp]) -> bool {
    matches!(ops, [ObjectOp::Read { .. }])
}
