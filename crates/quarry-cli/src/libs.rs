//! `quarry install-libs`, `quarry uninstall-libs` and `quarry which-libs`: the system-wide,
//! reversible install of Quarry's librados.so.2/librbd.so.1 for programs that do not inherit
//! a user's `LD_LIBRARY_PATH` (libvirtd, the QEMU processes libvirt starts, OpenStack's
//! services), and a way to see which library a running process mapped.
//!
//! # How the install wins over Ceph's packages
//! The two files are copied into their own directory, [`INSTALL_DIR`], and an
//! `/etc/ld.so.conf.d` entry named [`LD_CONF`] lists it. `/etc/ld.so.conf` includes the
//! `ld.so.conf.d/*.conf` files in name order and `ldconfig` keeps that order in its cache for
//! libraries of the same SONAME, so `00-quarry.conf` comes before Debian's
//! `x86_64-linux-gnu.conf` (which lists `/usr/lib/x86_64-linux-gnu`, where `librados2` and
//! `librbd1` live) and the dynamic linker picks Quarry's. Nothing of the distribution is
//! touched: `uninstall-libs` removes the entry and the directory and runs `ldconfig` again,
//! and Ceph's libraries are the ones found, as before. After either command, running
//! processes keep what they mapped: restart libvirtd and the guests.
//!
//! # Which library is Quarry's
//! Both files carry the bytes [`MARKER`] (a static of quarry-capi; a string in the code-less
//! librbd.so.1 that `scripts/link-capi.sh` builds). `which-libs PID` reads
//! `/proc/PID/maps` and looks for them in every mapped librados/librbd file.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::CliError;

/// Where `install-libs` puts the libraries.
pub const INSTALL_DIR: &str = "/usr/local/lib/quarry";
/// The dynamic linker's configuration entry (sorted before the distribution's files).
pub const LD_CONF: &str = "/etc/ld.so.conf.d/00-quarry.conf";
/// The bytes both of Quarry's libraries contain (quarry-capi's `QUARRY_CAPI_MARKER`).
pub const MARKER: &[u8] = b"QUARRY-CAPI-LIBRARY";
/// The libraries, by SONAME.
const LIBS: [&str; 2] = ["librados.so.2", "librbd.so.1"];

/// `quarry install-libs`.
#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// Directory with Quarry's librados.so.2 and librbd.so.1 (default: `lib/` beside this
    /// binary, where scripts/setup.sh and scripts/build-capi.sh put them).
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Only report: whether the install is in place and which file the dynamic linker picks
    /// for each library (Quarry's or another).
    #[arg(long)]
    pub status: bool,
}

/// `quarry which-libs`.
#[derive(clap::Args, Debug)]
pub struct WhichArgs {
    /// Processes to inspect.
    #[arg(required = true, value_name = "PID")]
    pub pids: Vec<u32>,
}

/// `println!` that ignores a closed stdout (`quarry uninstall-libs | head -1` must not panic
/// after the work is done).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn fail(message: impl Into<String>) -> CliError {
    CliError::Usage { message: message.into(), status: 1 }
}

/// Whether `path` is one of Quarry's libraries (contains [`MARKER`]).
pub fn is_quarry(path: &Path) -> std::io::Result<bool> {
    let bytes = std::fs::read(path)?;
    Ok(contains(&bytes, MARKER))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else { return true };
    let mut at = 0;
    while let Some(i) = hay[at..].iter().position(|&b| b == first) {
        let start = at + i + 1;
        if hay.len() >= start + rest.len() && &hay[start..start + rest.len()] == rest {
            return true;
        }
        at = start;
    }
    false
}

fn ldconfig() -> Result<(), CliError> {
    let out = Command::new("ldconfig")
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .map_err(|e| fail(format!("quarry: cannot run ldconfig: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "quarry: ldconfig failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The file the dynamic linker's cache gives for `soname` (its first entry), if any.
fn resolved(soname: &str) -> Result<Option<PathBuf>, CliError> {
    let out = Command::new("ldconfig")
        .arg("-p")
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .map_err(|e| fail(format!("quarry: cannot run ldconfig -p: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().find_map(|l| {
        let l = l.trim();
        (l.split_whitespace().next() == Some(soname))
            .then(|| l.rsplit_once(" => ").map(|(_, p)| PathBuf::from(p)))
            .flatten()
    }))
}

fn describe(path: &Path) -> String {
    match is_quarry(path) {
        Ok(true) => format!("{} (quarry)", path.display()),
        Ok(false) => format!("{} (not quarry: Ceph's or another)", path.display()),
        Err(e) => format!("{} (unreadable: {e})", path.display()),
    }
}

fn require_root(what: &str) -> Result<(), CliError> {
    // /proc/self belongs to the process's effective user.
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if euid != 0 {
        return Err(fail(format!(
            "quarry {what}: must run as root (it writes {INSTALL_DIR} and {LD_CONF} and runs ldconfig)"
        )));
    }
    Ok(())
}

fn default_from() -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe().map_err(|e| fail(format!("quarry: {e}")))?;
    Ok(exe.parent().map(|d| d.join("lib")).unwrap_or_else(|| PathBuf::from("lib")))
}

/// Copies `src` to `dst` through a temporary file and a rename, so a process that has the
/// old file mapped keeps it intact.
fn install_file(src: &Path, dst: &Path) -> Result<(), CliError> {
    let tmp = dst.with_extension("quarry-tmp");
    std::fs::copy(src, &tmp).map_err(|e| CliError::io(src, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| CliError::io(&tmp, e))?;
    std::fs::rename(&tmp, dst).map_err(|e| CliError::io(dst, e))
}

fn status() -> Result<(), CliError> {
    let installed = Path::new(LD_CONF).exists();
    say!(
        "install: {}",
        if installed { format!("{LD_CONF} -> {INSTALL_DIR}") } else { "not installed".into() }
    );
    for lib in LIBS {
        match resolved(lib)? {
            Some(p) => say!("{lib} => {}", describe(&p)),
            None => say!("{lib} => not found by the dynamic linker"),
        }
    }
    Ok(())
}

/// `quarry install-libs [--from DIR] [--status]`.
pub fn install(args: InstallArgs) -> Result<(), CliError> {
    if args.status {
        return status();
    }
    let from = match args.from {
        Some(d) => d,
        None => default_from()?,
    };
    for lib in LIBS {
        let src = from.join(lib);
        match is_quarry(&src) {
            Ok(true) => {}
            Ok(false) => {
                return Err(fail(format!(
                    "quarry install-libs: {} is not Quarry's {lib} (build it: scripts/build-capi.sh)",
                    src.display()
                )))
            }
            Err(e) => {
                return Err(fail(format!(
                    "quarry install-libs: {}: {e} (build it: scripts/build-capi.sh, or give --from DIR)",
                    src.display()
                )))
            }
        }
    }
    require_root("install-libs")?;
    let dir = Path::new(INSTALL_DIR);
    std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| CliError::io(dir, e))?;
    for lib in LIBS {
        install_file(&from.join(lib), &dir.join(lib))?;
    }
    let conf = format!(
        "# Quarry's librados.so.2 and librbd.so.1, before the distribution's (Ceph's).\n\
         # Written by `quarry install-libs`; `quarry uninstall-libs` removes it.\n{INSTALL_DIR}\n"
    );
    let mut f = std::fs::File::create(LD_CONF).map_err(|e| CliError::io(LD_CONF, e))?;
    f.write_all(conf.as_bytes()).map_err(|e| CliError::io(LD_CONF, e))?;
    drop(f);
    ldconfig()?;
    for lib in LIBS {
        let got = resolved(lib)?;
        if got.as_deref() != Some(dir.join(lib).as_path()) {
            return Err(fail(format!(
                "quarry install-libs: installed, but the dynamic linker picks {} for {lib}: \
                 an /etc/ld.so.conf entry sorts before {LD_CONF}",
                got.map_or("nothing".into(), |p| p.display().to_string())
            )));
        }
        say!("{lib} => {}", describe(&dir.join(lib)));
    }
    say!(
        "installed in {INSTALL_DIR} ({LD_CONF}); restart libvirtd and running guests to load them"
    );
    Ok(())
}

/// `quarry uninstall-libs`: removes what `install-libs` put in place; the distribution's
/// libraries are found again. Nothing to do is not an error.
pub fn uninstall() -> Result<(), CliError> {
    require_root("uninstall-libs")?;
    let mut removed = false;
    if Path::new(LD_CONF).exists() {
        std::fs::remove_file(LD_CONF).map_err(|e| CliError::io(LD_CONF, e))?;
        removed = true;
    }
    let dir = Path::new(INSTALL_DIR);
    for lib in LIBS {
        let p = dir.join(lib);
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| CliError::io(&p, e))?;
            removed = true;
        }
    }
    if dir.exists() {
        std::fs::remove_dir(dir).map_err(|e| CliError::io(dir, e))?;
    }
    ldconfig()?;
    say!("{}", if removed { "uninstalled" } else { "not installed" });
    for lib in LIBS {
        match resolved(lib)? {
            Some(p) => say!("{lib} => {}", describe(&p)),
            None => say!("{lib} => not found by the dynamic linker"),
        }
    }
    Ok(())
}

/// The librados/librbd files `pid` has mapped (from `/proc/PID/maps`), in order of first
/// appearance.
pub fn mapped_libs(pid: u32) -> std::io::Result<Vec<String>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut out: Vec<String> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode pathname
        let Some(path) = line.splitn(6, char::is_whitespace).nth(5).map(str::trim) else {
            continue;
        };
        let name = Path::new(path.trim_end_matches(" (deleted)"))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if (name.starts_with("librados.so") || name.starts_with("librbd.so"))
            && !out.iter().any(|p| p == path)
        {
            out.push(path.to_string());
        }
    }
    Ok(out)
}

/// `quarry which-libs PID…`: one line per mapped librados/librbd file of each process.
pub fn which(args: WhichArgs) -> Result<(), CliError> {
    let mut failed = false;
    for pid in args.pids {
        match mapped_libs(pid) {
            Err(e) => {
                eprintln!("{pid}: cannot read /proc/{pid}/maps: {e}");
                failed = true;
            }
            Ok(libs) if libs.is_empty() => say!("{pid}: no librados/librbd mapped"),
            Ok(libs) => {
                for path in libs {
                    let line = match path.strip_suffix(" (deleted)") {
                        // The file was replaced since: read the mapped one through /proc.
                        Some(p) => format!("{p} (deleted since it was mapped)"),
                        None => describe(Path::new(&path)),
                    };
                    say!("{pid}: {line}");
                }
            }
        }
    }
    if failed {
        return Err(CliError::Reported { status: 1 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_search_finds_only_the_whole_marker() {
        assert!(contains(b"xxQUARRY-CAPI-LIBRARYyy", MARKER));
        assert!(contains(b"QQUARRY-CAPI-LIBRAR QUARRY-CAPI-LIBRARY", MARKER));
        assert!(!contains(b"QUARRY-CAPI-LIBRAR", MARKER));
        assert!(!contains(b"", MARKER));
    }

    #[test]
    fn maps_of_this_process_list_no_ceph_library() {
        // The test binary links neither library: nothing found, no error.
        assert_eq!(mapped_libs(std::process::id()).unwrap(), Vec::<String>::new());
    }
}
