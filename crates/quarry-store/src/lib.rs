//! The local object engine of an OSD: objects, chunks with crc32c, snapshots, omap, xattrs
