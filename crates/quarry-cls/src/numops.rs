//! The `numops` class: atomic arithmetic on numbers kept as decimal text in omap values
//! (Ceph's `cls_numops`). `add` and `mul` read `omap[key]` (absent: 0), apply the operand and
//! store the result, in one step no other client can interleave with. A stored value that is
//! not a number is EBADMSG; a non-finite operand or result is EINVAL. Creates the object.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use quarry_types::{ErrorCode, MethodCtx, ObjectOp, OpOutput};

use crate::codec::{decode_input, encode};

/// Input of `numops.add` and `numops.mul`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NumOpRequest {
    /// The omap key holding the number.
    pub key: String,
    /// The operand.
    pub value: f64,
}

fn apply(
    ctx: &mut dyn MethodCtx,
    input: &[u8],
    combine: fn(f64, f64) -> f64,
) -> Result<Bytes, ErrorCode> {
    let req: NumOpRequest = decode_input(input)?;
    if req.key.is_empty() || !req.value.is_finite() {
        return Err(ErrorCode::EINVAL);
    }
    let keys = vec![req.key.clone()];
    let stored = match ctx.op(&ObjectOp::OmapGetValsByKeys { keys }) {
        Ok(OpOutput::OmapVals { mut vals, .. }) => vals.remove(&req.key),
        Ok(_) => return Err(ErrorCode::EIO),
        Err(code) if code == ErrorCode::ENOENT => None,
        Err(code) => return Err(code),
    };
    let current = match stored {
        None => 0.0,
        Some(text) => std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
            .ok_or(ErrorCode::EBADMSG)?,
    };
    let result = combine(current, req.value);
    if !result.is_finite() {
        return Err(ErrorCode::EINVAL);
    }
    let vals = BTreeMap::from([(req.key, Bytes::from(result.to_string()))]);
    ctx.op(&ObjectOp::OmapSetVals { vals })?;
    Ok(Bytes::new())
}

/// `numops.add`.
pub fn add(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    apply(ctx, input, |a, b| a + b)
}

/// `numops.mul`.
pub fn mul(ctx: &mut dyn MethodCtx, input: &[u8]) -> Result<Bytes, ErrorCode> {
    apply(ctx, input, |a, b| a * b)
}

/// A `numops.add` call op.
pub fn add_op(key: &str, value: f64) -> ObjectOp {
    crate::call_op("numops", "add", encode(&NumOpRequest { key: key.into(), value }))
}

/// A `numops.mul` call op.
pub fn mul_op(key: &str, value: f64) -> ObjectOp {
    crate::call_op("numops", "mul", encode(&NumOpRequest { key: key.into(), value }))
}
