//! Running server-side methods ([`ObjectOp::Call`]) inside the store: the [`MethodCtx`] a
//! method sees, built over whichever side runs it (a command being applied, or a read), and
//! the rules around it: an unknown method is EOPNOTSUPP, a method cannot call another
//! (EINVAL), a store failure met by one of its ops aborts the whole call as that failure
//! (never an errno the method could swallow), a read-only context refuses a mutating method
//! (EROFS).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quarry_types::{CallOrigin, ErrorCode, MethodCtx, ObjectMethods, ObjectOp, OpOutput};

use crate::read::Failure;
use crate::StoreError;

/// One call's coordinates, borrowed from its op.
pub(crate) struct Call<'a> {
    pub class: &'a str,
    pub method: &'a str,
    pub input: &'a Bytes,
    pub origin: Option<&'a CallOrigin>,
}

/// The context handed to a method: plain ops go to `run`.
struct Host<'r> {
    run: &'r mut dyn FnMut(&ObjectOp) -> Result<OpOutput, Failure>,
    mtime: (u64, u32),
    origin: CallOrigin,
    /// A store failure met by one of the method's ops: the call fails with it.
    failed: Option<StoreError>,
}

impl MethodCtx for Host<'_> {
    fn op(&mut self, op: &ObjectOp) -> Result<OpOutput, ErrorCode> {
        if op.is_call() {
            return Err(ErrorCode::EINVAL);
        }
        if self.failed.is_some() {
            return Err(ErrorCode::EIO);
        }
        match (self.run)(op) {
            Ok(out) => Ok(out),
            Err(Failure::Op(code)) => Err(code),
            Err(Failure::Store(e)) => {
                self.failed = Some(e);
                Err(ErrorCode::EIO)
            }
        }
    }

    fn mtime(&self) -> (u64, u32) {
        self.mtime
    }

    fn origin(&self) -> &CallOrigin {
        &self.origin
    }
}

/// Runs `call` with its plain ops going through `run` (which applies them to the command
/// being built, or reads them).
pub(crate) fn invoke(
    methods: Option<&dyn ObjectMethods>,
    call: &Call<'_>,
    mtime: (u64, u32),
    run: &mut dyn FnMut(&ObjectOp) -> Result<OpOutput, Failure>,
) -> Result<OpOutput, Failure> {
    let Some(methods) = methods else {
        return Err(Failure::Op(ErrorCode::EOPNOTSUPP));
    };
    if methods.flags(call.class, call.method).is_none() {
        return Err(Failure::Op(ErrorCode::EOPNOTSUPP));
    }
    // The OSD always fills the origin; a store-level caller that does not gets an anonymous one.
    let origin = call.origin.cloned().unwrap_or(CallOrigin {
        entity: String::new(),
        global_id: 0,
        addr: String::new(),
    });
    let mut host = Host { run, mtime, origin, failed: None };
    let result = methods.call(call.class, call.method, &mut host, call.input);
    if let Some(e) = host.failed {
        return Err(Failure::Store(e));
    }
    result.map(OpOutput::Returned).map_err(Failure::Op)
}

/// Runs a read-only call outside any command (the read path): a method flagged as writing
/// is EROFS; `run` refuses mutations anyway. The clock is the local one: nothing replicates
/// a read.
pub(crate) fn read_only(
    methods: Option<&dyn ObjectMethods>,
    call: &Call<'_>,
    mut run: impl FnMut(&ObjectOp) -> Result<OpOutput, Failure>,
) -> Result<OpOutput, Failure> {
    if methods.and_then(|m| m.flags(call.class, call.method)).is_some_and(|f| f.write) {
        return Err(Failure::Op(ErrorCode::EROFS));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    invoke(methods, call, (now.as_secs(), now.subsec_nanos()), &mut run)
}
