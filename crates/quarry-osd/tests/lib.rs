//! Integration tests of the OSD.
