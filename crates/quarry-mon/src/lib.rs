//! The monitor: cluster map, auth database and OSD liveness in a Raft group
