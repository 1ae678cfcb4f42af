//! Framed, versioned, signed messages between Quarry clients and daemons
