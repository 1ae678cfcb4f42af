//! The crate's single integration test binary (see helper rules: one binary per crate).

mod common;
mod crash;
mod golden;
mod group_commit;
mod nospace;
mod replay;
mod suite;
mod torn;
