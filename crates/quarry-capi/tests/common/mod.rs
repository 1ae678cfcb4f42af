//! What the stock-program tests (tools.rs, libvirt.rs) share: finding this run's `quarry`
//! binary and cdylib and linking the library into `target/<profile>/lib`, the directory
//! `DIR/env` puts on LD_LIBRARY_PATH.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use quarry_testkit::process;

/// `target/<profile>` (these tests run from `target/<profile>/deps`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// The `quarry` binary, with this run's library linked into `target/<profile>/lib`
/// (scripts/link-capi.sh, bounded by `timeout`); panics with what to build if either is
/// missing.
pub fn prepared(timeout: Duration) -> PathBuf {
    let dir = target_dir();
    let quarry = dir.join("quarry");
    // The cdylib this test run built (cargo builds the crate's library, both crate types,
    // into deps/ for its tests; `cargo build` also copies it beside the binaries).
    let fresh = std::env::current_exe().unwrap().with_file_name("librados.so");
    let cdylib = if fresh.exists() { fresh } else { dir.join("librados.so") };
    for (path, what) in [(&quarry, "quarry-cli"), (&cdylib, "quarry-capi")] {
        assert!(
            path.exists(),
            "{} missing: build it first (cargo build -p {what}, or scripts/build-capi.sh)",
            path.display()
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/link-capi.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script).arg(&cdylib).arg(dir.join("lib"));
    process::run_bounded(cmd, None, timeout).ok("link-capi.sh");
    quarry
}
