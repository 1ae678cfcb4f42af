//! Connects to a Quarry cluster, authenticates, routes object ops to OSDs
