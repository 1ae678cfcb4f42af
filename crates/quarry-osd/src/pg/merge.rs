//! PG merge, the OSD side: what applying [`PgCommand::Seal`] and [`PgCommand::Merge`]
//! entries does (the apply itself is in `state_machine`, beside the split's), and the rules
//! the primaries driving them follow.
//!
//! The monitor marks a merge in the map (`PoolInfo::merging`: the pool's last PG `s` into
//! `t = split_parent(s, s)`) only once both PGs act on the same OSDs, all up, and it changes
//! neither PG's members until the merge is reported. Then:
//! 1. `s`'s primary proposes `Seal` in `s`'s log. Applied (same index on every replica), it
//!    records the seal's log id in `s`'s [`PgState`]; from then on every client command is
//!    answered [`super::split::misplaced`] (the op path turns it into "retry"), snapshot trims
//!    and splits change nothing: `s`'s data is final at the seal and identical on every
//!    replica.
//! 2. `t`'s primary asks every voter of `t` for its copy of `s`'s seal and proposes
//!    `Merge { source: s, sealed }` only when all answer the same `sealed` log id. Applied on
//!    each replica of `t`, it checks that replica's copy of `s` is sealed at exactly that id
//!    (anything else stops the PG as damaged data does, and the repair path rebuilds it from
//!    a healthy replica: it never merges other data), then
//!    [`quarry_store::Store::merge_pg`] moves `s`'s objects into `t` in one transaction with
//!    `t`'s new state (`pg_num` = `s`), which also deletes `s`'s state.
//! 3. `t`'s primary reports `PgMerged`; the monitor lowers `pg_num` and marks the next step.
//!    Meanwhile `t` refuses ops for `s`'s objects while it records `pg_num` `s + 1`
//!    ([`super::split::moved_out`]), and clients at the smaller `pg_num` send them to `t`.
//!
//! Not built yet (the monitor's admin command refuses a `pg_num` decrease until they are):
//! the primaries' proposals (step 1 and 2, with a `RaftRpc` that answers a PG's seal after a
//! store checkpoint, so the seal is durable on every voter before `Merge` is proposed: a
//! replica of `t` that restarts replays `Merge` from its WAL and must find `s` sealed in its
//! store, not rolled back to its last checkpoint); the router stopping `s`'s group after the
//! merge, never starting it again (a group of the same pool recording `pg_num <= s`), and
//! deleting `s`'s Raft state from the WAL; watches on `s`'s objects following them to `t`;
//! the `PgMerged` report.

#[cfg(doc)]
use super::{PgCommand, PgState};
