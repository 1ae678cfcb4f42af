//! ceph.conf parsing, CEPH_ARGS and the typed option table
