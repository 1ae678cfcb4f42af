//! The storage daemon: hosts placement groups, each a Raft group over the local store
