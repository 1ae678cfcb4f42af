//! The `data` class: object-data steps that must read and write in one atomic step and have
//! no op of their own in Quarry's op set. `append` writes its bytes at the object's current
//! end (what Ceph's `CEPH_OSD_OP_APPEND` does in the OSD): the size is read and the write made
//! inside one command, so two clients appending at once never overwrite each other. It
//! creates the object if needed, even for an empty append (as Ceph's does).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use quarry_types::{ErrorCode, MethodCtx, ObjectOp, OpOutput, Payload};

use crate::codec::{decode_input, encode};

/// Input of `data.append`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendRequest {
    /// The bytes to add at the end.
    pub data: Vec<u8>,
}

/// `data.append`.
pub fn append(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    let req: AppendRequest = decode_input(input)?;
    let size = match ctx.op(&ObjectOp::Stat) {
        Ok(OpOutput::Stat { size, .. }) => size,
        Ok(_) => return Err(ErrorCode::EIO),
        Err(code) if code == ErrorCode::ENOENT => {
            ctx.op(&ObjectOp::Create { exclusive: false })?;
            0
        }
        Err(code) => return Err(code),
    };
    if !req.data.is_empty() {
        let data = Payload::new(Bytes::from(req.data));
        ctx.op(&ObjectOp::Write { off: size, data })?;
    }
    Ok(Bytes::new())
}

/// A `data.append` call op adding `data` at the object's end.
pub fn append_op(data: &[u8]) -> ObjectOp {
    crate::call_op("data", "append", encode(&AppendRequest { data: data.to_vec() }))
}
