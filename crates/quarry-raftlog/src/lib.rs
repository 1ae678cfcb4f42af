//! One write-ahead log shared by all Raft groups of a daemon, with group commit
