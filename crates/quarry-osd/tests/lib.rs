//! Integration tests of the OSD: a real monitor and real OSDs over TCP on 127.0.0.1, data in
//! temp dirs; the crash test runs the OSD in a child process (this test binary re-executed)
//! and SIGKILLs it.

mod common;
mod crash;
mod dups;
mod limits;
mod ops;
mod outcome;
mod repair;
mod replicated;
mod restart;
mod security;
