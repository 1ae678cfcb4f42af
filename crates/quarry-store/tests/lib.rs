//! The quarry-store test suite (one binary): error codes and atomicity, snapshot scenarios,
//! a property test against an in-memory model, corruption detection, export/import, and
//! crash consistency with a SIGKILLed child process.

mod common;
mod corruption;
mod crash;
mod datafile;
mod dups;
mod errors;
mod exchange;
mod extents;
mod heap;
mod lazy_commit;
mod meta_corruption;
mod metacache;
mod model;
mod placed;
mod powerloss;
mod powerloss_large;
mod powerloss_placed;
mod snap_index;
mod snapshots;
mod space;
mod views;
