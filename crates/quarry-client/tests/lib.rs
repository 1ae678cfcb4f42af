//! Integration tests of the client against real daemons: one monitor and three OSDs started
//! in-process by `quarry_testkit::Cluster` on 127.0.0.1 (port 0), with data in temporary
//! directories.

mod caps_matrix;
mod faults;
mod ops;
mod security;
mod tamper;
