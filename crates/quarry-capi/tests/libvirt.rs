//! libvirt (Debian 12's libvirt 9.0, its rbd storage backend and QEMU 7.2) against a `quarry
//! up` cluster, through Quarry's librados.so.2/librbd.so.1 installed system-wide with `quarry
//! install-libs`: a cephx secret, an rbd storage pool, a TCG guest booted from a clone of a
//! golden image (the disk XML of issue 15: cache=writeback, discard=unmap), live
//! domblkinfo/blockresize/attach-device/detach-device, and every pool and volume command,
//! checked against `rbd ls/info/du` and the guest's console. A wrong key and a user without
//! caps fail with libvirt's own errors, quickly; so does a call once the cluster is gone
//! (within libvirt's 30 s client_mount_timeout). Before `install-libs`, the same libvirtd
//! loads Ceph's libraries and the pool fails to start: the install is what makes it work.
//!
//! The walk-through of docs/libvirt.md is what runs: every ```sh block of the page (each
//! after a `<!-- step: NAME -->` line) is run verbatim, in a shell where `. DIR/env` points
//! `ceph`/`rbd` at the cluster and `virsh` is a wrapper that runs the real one bounded by a
//! timeout. The test fails if the page has a block it does not run.
//!
//! The libvirt daemon is the test's own: `libvirtd` in session mode (`qemu:///session`) as
//! user `nobody`, with its runtime, configuration and cache directories in the test's
//! temporary directory, so nothing of a system libvirtd is used or changed. The only system
//! change is `quarry install-libs`, undone by `quarry uninstall-libs` when the test ends,
//! whether it passes or fails; a lock file keeps two runs on one machine apart. Needs root
//! (install-libs, setpriv); skipped with a message when libvirt, QEMU 7.2 or the VM files are
//! missing (scripts/setup.sh installs them).

use std::os::unix::fs::PermissionsExt;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use quarry_testkit::process::{self, Daemon, Run};

const BLOCK_RBD: &str = "/usr/lib/x86_64-linux-gnu/qemu/block-rbd.so";
const RBD_BACKEND: &str =
    "/usr/lib/x86_64-linux-gnu/libvirt/storage-backend/libvirt_storage_backend_rbd.so";
const STEP_TIMEOUT: Duration = Duration::from_secs(180);
/// `virsh` calls are bounded by this (the wrapper's `timeout`).
const VIRSH_TIMEOUT_SECS: u32 = 90;
const NOBODY: u32 = 65534;

/// Why this test cannot run here, if it cannot.
fn missing() -> Option<String> {
    for (path, pkg) in [
        ("/usr/sbin/libvirtd", "libvirt-daemon"),
        ("/usr/bin/virsh", "libvirt-clients"),
        (RBD_BACKEND, "libvirt-daemon-driver-storage-rbd"),
        (BLOCK_RBD, "qemu-block-extra/bookworm"),
        ("/usr/bin/qemu-system-x86_64", "qemu-system-x86/bookworm"),
        ("/usr/bin/setpriv", "util-linux"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} missing ({pkg})"));
        }
    }
    let euid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if euid.ok() != Some(0) {
        return Some("not root (quarry install-libs writes /etc/ld.so.conf.d)".into());
    }
    None
}

fn vm_dir() -> PathBuf {
    std::env::var_os("QUARRY_VM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/vm"))
}

/// The ```sh blocks of docs/libvirt.md, by the step name on the line before each.
fn doc_steps() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/libvirt.md"),
    )
    .unwrap();
    let mut steps = Vec::new();
    let mut lines = doc.lines();
    let mut name: Option<String> = None;
    while let Some(line) = lines.next() {
        if let Some(n) = line.strip_prefix("<!-- step: ").and_then(|l| l.strip_suffix(" -->")) {
            name = Some(n.to_string());
        } else if line == "```sh" {
            let n = name
                .take()
                .unwrap_or_else(|| panic!("a ```sh block of docs/libvirt.md has no step name"));
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            steps.push((n, body.join("\n") + "\n"));
        }
    }
    steps
}

/// `quarry uninstall-libs` when dropped: the system's libraries are restored however the
/// test ends.
struct Installed {
    quarry: PathBuf,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let out = Command::new(&self.quarry).arg("uninstall-libs").output();
        match out {
            Ok(o) if o.status.success() => {}
            other => eprintln!("quarry uninstall-libs failed: {other:?}"),
        }
    }
}

/// The test's world: the cluster, the work directory (owned by `nobody`, where the doc's
/// commands run and libvirt writes consoles), the libvirt daemon.
struct World {
    tmp: tempfile::TempDir,
    cluster: Option<Daemon>,
    libvirtd: Option<Daemon>,
    steps: Vec<(String, String)>,
    used: Vec<String>,
}

impl World {
    fn cluster_dir(&self) -> PathBuf {
        self.tmp.path().join("cluster")
    }

    fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }

    fn lv(&self) -> PathBuf {
        self.tmp.path().join("libvirt")
    }

    /// Session libvirtd as `nobody`, its directories under the temporary directory.
    fn start_libvirtd(&mut self) {
        if let Some(mut d) = self.libvirtd.take() {
            d.terminate();
        }
        let lv = self.lv();
        let sock = lv.join("run/libvirt/libvirt-sock");
        let _ = std::fs::remove_file(&sock);
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid",
            &NOBODY.to_string(),
            "--regid",
            &NOBODY.to_string(),
            "--clear-groups",
        ])
        .arg("libvirtd")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/bin")
        .env("HOME", lv.join("home"))
        .env("XDG_RUNTIME_DIR", lv.join("run"))
        .env("XDG_CONFIG_HOME", lv.join("config"))
        .env("XDG_CACHE_HOME", lv.join("cache"));
        let daemon = Daemon::spawn("libvirtd", cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "libvirtd did not listen: {}",
                daemon.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.libvirtd = Some(daemon);
    }

    fn libvirtd_pid(&self) -> u32 {
        self.libvirtd.as_ref().unwrap().pid()
    }

    /// `bash -c '. DIR/env; cd WORK; script'` with the settings step first (after it ran)
    /// and the virsh wrapper first on PATH.
    fn sh(&self, script: &str) -> Run {
        let settings = if self.used.iter().any(|s| s == "settings") {
            self.step_text("settings")
        } else {
            String::new()
        };
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!(
                "set -e\n. {}/env\nexport PATH={}/bin:$PATH\ncd {}\n{settings}{script}",
                self.cluster_dir().display(),
                self.work().display(),
                self.work().display()
            ))
            .env("KERNEL", self.work().join("vmlinuz"))
            .env("INITRD", self.work().join("initrd.cpio"))
            .env_remove("CEPH_ARGS")
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("CEPH_CONF")
            .env_remove("LIBVIRT_DEFAULT_URI");
        process::run_bounded(cmd, None, STEP_TIMEOUT)
    }

    /// Why `virsh start DOMAIN` failed (it must fail): libvirt's message, followed, when
    /// libvirt says only that QEMU closed its monitor (QEMU exited before libvirt read its
    /// error; seen on a loaded machine), by what QEMU logged for this start.
    fn start_failure(&self, domain: &str) -> String {
        let run = self.sh(&format!("virsh start {domain}"));
        assert_ne!(run.code(), 0, "{}", run.out());
        let mut why = run.stderr.clone();
        if why.contains("qemu unexpectedly closed the monitor") {
            let log = self.lv().join(format!("cache/libvirt/qemu/log/{domain}.log"));
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let start = log.rfind("starting up").unwrap_or(0);
            why.push_str(&format!("\nQEMU log of this start:\n{}", &log[start..]));
        }
        why
    }

    fn ok(&self, script: &str) -> String {
        let run = self.sh(script).ok(script);
        format!("{}{}", run.out(), run.stderr)
    }

    fn step_text(&self, name: &str) -> String {
        self.steps
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("docs/libvirt.md has no step {name}"))
            .1
            .clone()
    }

    /// Runs docs/libvirt.md's block `name` verbatim; returns its output.
    fn step(&mut self, name: &str) -> String {
        let text = self.step_text(name);
        self.used.push(name.to_string());
        if name == "settings" {
            return self.ok(":");
        }
        let started = Instant::now();
        let out = self.ok(&text);
        eprintln!("step {name}: {:?}", started.elapsed());
        out
    }

    /// The guest's console so far.
    fn console(&self) -> String {
        std::fs::read_to_string(self.work().join("vm1.console")).unwrap_or_default()
    }

    /// Waits until the console has `marker`; panics with the console after `timeout`.
    fn wait_console(&self, marker: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console();
            if text.contains(marker) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the guest did not print {marker:?} within {timeout:?}:\n{text}\nQEMU log:\n{}",
                std::fs::read_to_string(self.lv().join("cache/libvirt/qemu/log/vm1.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The pid of the guest's QEMU (libvirt's pid file), if it runs.
    fn qemu_pid(&self, domain: &str) -> Option<u32> {
        let path = self.lv().join(format!("run/libvirt/qemu/run/{domain}.pid"));
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // A failed test may leave a guest running: libvirt's QEMU outlives libvirtd, so stop
        // it through libvirt, then by its pid (a process this test had libvirt start).
        if self.libvirtd.is_some() {
            for domain in ["vm1", "vm-bad"] {
                let _ = self.sh(&format!("virsh destroy {domain} >/dev/null 2>&1 || true"));
                if let Some(pid) = self.qemu_pid(domain) {
                    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                }
            }
        }
        if let Some(mut d) = self.libvirtd.take() {
            d.terminate();
        }
        if let Some(mut d) = self.cluster.take() {
            d.terminate();
        }
    }
}

/// An uncompressed initramfs (cpio "newc") of `files` (path, mode, content).
fn newc(files: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |ino: usize, name: &str, mode: u32, data: &[u8]| {
        let fields =
            [ino as u32, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (i, (name, mode, data)) in files.iter().enumerate() {
        put(i + 1, name, *mode, data);
    }
    put(files.len() + 1, "TRAILER!!!", 0, &[]);
    out
}

/// The guest's initramfs: busybox, the virtio modules and tests/vm/init-libvirt as /init.
fn initramfs(vm: &Path) -> Vec<u8> {
    let read = |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let init = read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/init-libvirt"));
    let mut files: Vec<(&str, u32, Vec<u8>)> = vec![
        ("bin", 0o40755, vec![]),
        ("lib", 0o40755, vec![]),
        ("proc", 0o40755, vec![]),
        ("sys", 0o40755, vec![]),
        ("dev", 0o40755, vec![]),
        ("init", 0o100755, init),
        ("bin/busybox", 0o100755, read(vm.join("busybox"))),
    ];
    let modules = [
        "virtio_ring",
        "virtio",
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
        "virtio_pci",
        "virtio_blk",
    ];
    let names: Vec<String> = modules.iter().map(|m| format!("lib/{m}.ko")).collect();
    for (m, name) in modules.iter().zip(&names) {
        files.push((name, 0o100644, read(vm.join("modules").join(format!("{m}.ko")))));
    }
    newc(&files)
}

fn chown_nobody(path: &Path) {
    let status =
        Command::new("chown").arg(format!("{NOBODY}:{NOBODY}")).arg(path).status().unwrap();
    assert!(status.success(), "chown {}", path.display());
}

/// The `Capacity:`/`Allocation:` value of `virsh vol-info`/`pool-info` output, in bytes
/// (libvirt prints `64.00 MiB`).
fn info_bytes(out: &str, field: &str) -> u64 {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} not in:\n{out}"));
    let mut words = line[field.len()..].split_whitespace();
    let value: f64 = words.next().unwrap().parse().unwrap();
    let unit = match words.next().unwrap() {
        "B" => 1u64,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        u => panic!("unit {u} in {line}"),
    };
    (value * unit as f64).round() as u64
}

/// The USED column of `rbd du`'s line for `image`.
fn du_used(out: &str, image: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(image))
        .unwrap_or_else(|| panic!("{image} not in:\n{out}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    words[words.len() - 2..].join(" ")
}

const MIB: u64 = 1 << 20;

/// docs/libvirt.md end to end, then the failures.
#[test]
fn libvirt_walkthrough_secret_pool_domain_and_volumes() {
    if let Some(why) = missing() {
        eprintln!("SKIPPED: {why}; scripts/setup.sh installs libvirt and QEMU 7.2 (run as root)");
        return;
    }
    let vm = vm_dir();
    if !vm.join("vmlinuz").exists() || !vm.join("busybox").exists() {
        eprintln!(
            "SKIPPED: {} has no vmlinuz/busybox; scripts/setup.sh fetches them",
            vm.display()
        );
        return;
    }
    // install-libs is system-wide: one run of this test at a time on a machine (another
    // run's uninstall would pull the libraries from under this one's guests).
    let lock = std::fs::File::create("/tmp/quarry-libvirt-test.lock").unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while lock.try_lock().is_err() {
        assert!(Instant::now() < deadline, "another run of this test holds the lock");
        std::thread::sleep(Duration::from_millis(500));
    }
    let test_started = Instant::now();
    let quarry = common::prepared(STEP_TIMEOUT);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut w = World {
        cluster: Some(process::up(&quarry, &tmp.path().join("cluster"), 1)),
        tmp,
        libvirtd: None,
        steps: doc_steps(),
        used: Vec::new(),
    };
    // The work directory (nobody's: libvirt writes the console there) with the virsh wrapper,
    // the guest's kernel and initramfs, and the golden image.
    let work = w.work();
    std::fs::create_dir_all(work.join("bin")).unwrap();
    for d in ["run", "config", "cache", "home"] {
        std::fs::create_dir_all(w.lv().join(d)).unwrap();
    }
    std::fs::set_permissions(w.lv().join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let lv = w.lv();
    for d in [
        lv.clone(),
        lv.join("run"),
        lv.join("config"),
        lv.join("cache"),
        lv.join("home"),
        work.clone(),
    ] {
        chown_nobody(&d);
    }
    let wrapper = format!(
        "#!/bin/sh\n# virsh as the test's libvirtd user, on its session daemon, bounded.\n\
         exec setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups env -i PATH=/usr/bin:/bin \
         HOME={lv}/home XDG_RUNTIME_DIR={lv}/run XDG_CONFIG_HOME={lv}/config \
         XDG_CACHE_HOME={lv}/cache LIBVIRT_DEFAULT_URI=qemu:///session LIBVIRT_AUTOSTART=0 \
         timeout -k 5 {VIRSH_TIMEOUT_SECS} /usr/bin/virsh \"$@\"\n",
        lv = lv.display()
    );
    std::fs::write(work.join("bin/virsh"), wrapper).unwrap();
    std::fs::set_permissions(work.join("bin/virsh"), std::fs::Permissions::from_mode(0o755))
        .unwrap();
    std::fs::copy(vm.join("vmlinuz"), work.join("vmlinuz")).unwrap();
    std::fs::write(work.join("initrd.cpio"), initramfs(&vm)).unwrap();
    let mut golden = vec![0u8; 64 * MIB as usize];
    golden[..512].fill(0x47);
    std::fs::write(work.join("golden.raw"), golden).unwrap();
    for f in ["vmlinuz", "initrd.cpio", "golden.raw"] {
        std::fs::set_permissions(work.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    // --- The walk-through's first steps, with the distribution's (Ceph's) libraries. ---
    w.step("settings");
    w.step("user");
    let status = w.ok(&format!("{} install-libs --status", quarry.display()));
    let preinstalled = status.contains("/etc/ld.so.conf.d/00-quarry.conf");
    if preinstalled {
        eprintln!(
            "note: quarry install-libs was in place before the test; it is uninstalled at the end"
        );
    }
    let installed = Installed { quarry: quarry.clone() };
    if !preinstalled {
        // Without the install, libvirtd loads Ceph's librados: the pool cannot start (Ceph's
        // client gives up after the client_mount_timeout libvirt sets, 30 s).
        w.start_libvirtd();
        let maps = w.ok(&format!("{} which-libs {}", quarry.display(), w.libvirtd_pid()));
        assert!(maps.contains("librados.so.2") && !maps.contains("(quarry)"), "{maps}");
        w.step("secret");
        let started = Instant::now();
        let run = w.sh(&w.step_text("pool"));
        assert_ne!(run.code(), 0, "the pool started with Ceph's librados: {}", run.out());
        assert!(run.stderr.contains("failed to connect to the RADOS monitor"), "{}", run.stderr);
        assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
        w.ok("virsh pool-undefine quarry >/dev/null");
    }

    // --- quarry install-libs: libvirtd (restarted) maps Quarry's libraries. ---
    let out = w.ok(&format!(
        "{} install-libs --from {}",
        quarry.display(),
        common::target_dir().join("lib").display()
    ));
    assert!(out.contains("librados.so.2 => /usr/local/lib/quarry/librados.so.2 (quarry)"), "{out}");
    assert!(out.contains("librbd.so.1 => /usr/local/lib/quarry/librbd.so.1 (quarry)"), "{out}");
    let out = w.ok(&format!("{} install-libs --status", quarry.display()));
    assert!(out.contains("librados.so.2 => /usr/local/lib/quarry/librados.so.2 (quarry)"), "{out}");
    w.start_libvirtd();
    let maps = w.ok(&format!("{} which-libs {}", quarry.display(), w.libvirtd_pid()));
    assert!(maps.contains("/usr/local/lib/quarry/librados.so.2 (quarry)"), "{maps}");
    assert!(maps.contains("/usr/local/lib/quarry/librbd.so.1 (quarry)"), "{maps}");
    if preinstalled {
        w.step("secret");
    }
    // (Otherwise the secret, defined before the restart, persists in the daemon's
    // configuration directory.)

    // --- The pool. ---
    let out = w.step("pool");
    assert!(out.contains("Pool quarry started"), "{out}");
    assert!(out.contains("State:          running"), "{out}");
    let df = w.ok("ceph df -f json");
    let total: u64 = df
        .split("\"total_bytes\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty()))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{df}"));
    let capacity = info_bytes(&out, "Capacity:");
    // rados_cluster_stat reports KiB; libvirt prints two decimals: within 1%.
    assert!(
        capacity.abs_diff(total) * 100 <= total,
        "pool-info {capacity} vs ceph df {total}:\n{out}"
    );

    // --- Golden image, clones (rbd and libvirt's vol-clone). ---
    w.step("golden");
    let out = w.step("vol-clone");
    assert!(out.contains("Vol vm2-disk cloned from golden"), "{out}");
    let info = w.ok("rbd info $POOL/vm2-disk");
    assert!(
        info.contains("parent: libvirt-pool/golden@base"),
        "vol-clone reuses the unchanged snapshot:\n{info}"
    );
    let snaps = w.ok("rbd snap ls $POOL/golden");
    assert!(snaps.contains(" base ") && !snaps.contains("libvirt-"), "no new snapshot: {snaps}");

    // --- The guest. ---
    let started = Instant::now();
    let out = w.step("domain");
    assert!(out.contains("Domain 'vm1' started"), "{out}");
    let pid = w.qemu_pid("vm1").expect("vm1's QEMU pid file");
    let maps = w.ok(&format!("{} which-libs {pid}", quarry.display()));
    assert!(maps.contains("/usr/local/lib/quarry/librados.so.2 (quarry)"), "QEMU: {maps}");
    let qemu_log =
        std::fs::read_to_string(w.lv().join("cache/libvirt/qemu/log/vm1.log")).unwrap_or_default();
    assert!(
        qemu_log.contains("\"driver\":\"rbd\"") && qemu_log.contains("\"user\":\"qemu\""),
        "{qemu_log}"
    );
    assert!(
        qemu_log.contains("\"key-secret\""),
        "the key reaches QEMU as a secret object:\n{qemu_log}"
    );
    assert!(qemu_log.contains("\"discard\":\"unmap\""), "{qemu_log}");
    let console = w.wait_console("GUEST-SIZE:", STEP_TIMEOUT);
    eprintln!("guest up and written: {:?}", started.elapsed());
    assert!(console.contains("GUEST-SAW: GGGGGGGGGGGGGGGGGGG"), "{console}");
    assert!(console.contains("GUEST-READ: GUEST-DATA-WRITTEN-BY-THE-VM"), "{console}");
    assert!(console.contains("GUEST-SIZE: 131072"), "64 MiB in sectors: {console}");
    assert!(!console.contains("GUEST-INSMOD-FAILED"), "{console}");

    let out = w.step("resize");
    assert!(out.contains("Capacity:       67108864"), "{out}");
    assert!(out.contains("Block device 'vda' is resized"), "{out}");
    w.wait_console("GUEST-RESIZED: 262144", Duration::from_secs(60));
    assert!(w.ok("rbd info $POOL/vm1-disk").contains("size 128 MiB in 32 objects"));

    // An external disk-only snapshot onto a local overlay, then committed back into the rbd
    // image with the guest running on it again.
    let out = w.step("disk-snapshot");
    assert!(out.contains("Domain snapshot before-upgrade created"), "{out}");
    assert!(out.contains("vm1-overlay.qcow2"), "{out}");
    assert!(out.contains("Successfully pivoted"), "{out}");
    let last = out.rsplit("Target").next().unwrap();
    assert!(last.contains("libvirt-pool/vm1-disk") && !last.contains("overlay"), "{out}");

    let out = w.step("attach");
    assert!(out.contains("Device attached successfully"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["vdb", "libvirt-pool/vm1-data"]),
        "{out}"
    );
    w.wait_console("GUEST-VDB: GUEST-SECOND-DISK-DATA", Duration::from_secs(90));
    let out = w.step("detach");
    assert!(out.contains("Device detached successfully"), "{out}");
    w.wait_console("GUEST-VDB-GONE", Duration::from_secs(60));
    let out = w.ok("virsh domblklist vm1");
    assert!(!out.contains("vm1-data"), "{out}");
    // The guest's go-ahead to power off.
    w.ok("virsh blockresize vm1 vda 192M");
    w.wait_console("QUARRY-GUEST-DONE", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !w.ok("virsh domstate vm1").contains("shut off") {
        assert!(Instant::now() < deadline, "vm1 did not power off: {}", w.console());
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("guest done: {:?}", started.elapsed());
    // The guest's data is in the clone, the golden image unchanged; the data disk has its.
    let out =
        w.ok("qemu-io -r -f raw -c 'read -v 1M 28' -c 'read -P 0x47 0 512' rbd:$POOL/vm1-disk");
    assert!(out.contains("GUEST.DATA.WRITT"), "{out}");
    assert!(!out.contains("Pattern verification failed"), "{out}");
    let out =
        w.ok("qemu-io -r -f raw -c 'read -P 0 1M 4k' -c 'read -P 0x47 0 512' rbd:$POOL/golden");
    assert!(!out.contains("Pattern verification failed"), "{out}");
    let out = w.ok("qemu-io -r -f raw -c 'read -v 0 22' rbd:$POOL/vm1-data");
    assert!(out.contains("GUEST.SECOND.DI"), "{out}");
    let du = w.ok("rbd du $POOL/vm1-disk");
    assert_eq!(du_used(&du, "vm1-disk"), "4 MiB", "one object written by the guest:\n{du}");
    assert!(w.ok("rbd info $POOL/vm1-disk").contains("size 192 MiB"));

    // libvirt's vol-clone of an image without snapshots: it creates `libvirt-N`, protects it
    // and clones it with rbd_clone2 (the source's features, order and striping).
    let out = w.ok("virsh pool-refresh quarry >/dev/null && virsh vol-clone --pool quarry vm1-data vm1-data-copy");
    assert!(out.contains("Vol vm1-data-copy cloned from vm1-data"), "{out}");
    let snaps = w.ok("rbd snap ls $POOL/vm1-data");
    let snap = snaps
        .lines()
        .find_map(|l| l.split_whitespace().nth(1).filter(|n| n.starts_with("libvirt-")))
        .unwrap_or_else(|| panic!("no libvirt-N snapshot:\n{snaps}"))
        .to_string();
    assert!(snaps.contains("yes"), "protected: {snaps}");
    let info = w.ok("rbd info $POOL/vm1-data-copy");
    assert!(info.contains(&format!("parent: libvirt-pool/vm1-data@{snap}")), "{info}");
    let features = |text: &str| text.lines().find(|l| l.contains("features:")).map(str::to_string);
    assert_eq!(features(&info), features(&w.ok("rbd info $POOL/vm1-data")), "{info}");
    let out = w.ok("qemu-io -r -f raw -c 'read -v 0 22' rbd:$POOL/vm1-data-copy");
    assert!(out.contains("GUEST.SECOND.DI"), "the clone reads its parent: {out}");

    // --- Volumes. ---
    let out = w.step("volumes");
    for vol in ["golden", "vm1-disk", "vm1-data", "vm1-data-copy", "vm2-disk"] {
        assert!(
            out.lines().any(|l| l.split_whitespace().next() == Some(vol)),
            "{vol} not listed:\n{out}"
        );
    }
    let list = out
        .lines()
        .find(|l| l.starts_with(" vm1-disk"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert!(
        list.contains("192.00 MiB") && list.contains("4.00 MiB"),
        "capacity and real allocation: {list}"
    );
    assert!(out.contains("Vol scratch created"), "{out}");
    assert!(out.contains("Size of volume 'scratch' successfully changed to 128M"), "{out}");
    assert_eq!(info_bytes(&out, "Capacity:"), 128 * MIB, "{out}");
    let info = w.ok("rbd info $POOL/scratch");
    assert!(info.contains("size 128 MiB in 32 objects"), "{info}");
    assert!(w.ok("rbd ls $POOL").lines().any(|l| l == "scratch"));
    w.ok("qemu-io -f raw -c 'write -P 0x5a 0 8M' -c 'write -P 0x5b 100M 1M' rbd:$POOL/scratch");
    assert_eq!(du_used(&w.ok("rbd du $POOL/scratch"), "scratch"), "12 MiB");
    let out = w.step("wipe");
    assert!(out.contains("Vol scratch wiped"), "{out}");
    assert_eq!(info_bytes(&out, "Allocation:"), 0, "trimmed: nothing allocated:\n{out}");
    let out =
        w.ok("qemu-io -r -f raw -c 'read -P 0 0 8M' -c 'read -P 0 100M 1M' rbd:$POOL/scratch");
    assert!(!out.contains("Pattern verification failed"), "wiped: {out}");
    assert_eq!(du_used(&w.ok("rbd du $POOL/scratch"), "scratch"), "0 B");
    let out = w.step("delete");
    assert!(out.contains("Vol scratch deleted") && out.contains("Vol vm2-disk deleted"), "{out}");
    assert!(out.contains("State:          running"), "{out}");
    let ls = w.ok("rbd ls $POOL");
    assert!(!ls.lines().any(|l| l == "scratch" || l == "vm2-disk"), "{ls}");
    assert!(ls.lines().any(|l| l == "vm1-disk"), "{ls}");
    // pool-info's allocation is the pool's stored bytes (rados_ioctx_pool_stat), as `rados
    // df` shows them; both follow the OSDs' periodic reports, so compare once they settle.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let df = w.ok("rados df -p $POOL -f json");
        let stored: u64 = df
            .split("\"size_bytes\":")
            .nth(1)
            .map(|s| s.trim_start().chars().take_while(char::is_ascii_digit).collect::<String>())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("rados df: {df}"));
        let info = w.ok("virsh pool-refresh quarry >/dev/null && virsh pool-info quarry");
        let allocation = info_bytes(&info, "Allocation:");
        if allocation.abs_diff(stored) <= stored / 100 + 1024 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pool-info allocation {allocation} vs rados df {stored}:\n{info}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // --- Failures: wrong key, user without caps on the pool; each fails at once. ---
    w.ok("ceph auth get-or-create client.nocaps mon 'profile rbd' osd 'profile rbd pool=elsewhere' >/dev/null");
    let bad_pool = |user: &str| {
        format!(
            "cat > bad.xml <<EOF\n<pool type='rbd'><name>bad</name><source><name>$POOL</name>\
             <host name='$MON_IP' port='$MON_PORT'/><auth type='ceph' username='{user}'>\
             <secret uuid='0b5e0cbb-9f7e-4c9b-8a4f-3f8e7a6d5c4b'/></auth></source></pool>\nEOF\n\
             virsh pool-define bad.xml >/dev/null\n"
        )
    };
    w.ok("cat > bad-secret.xml <<EOF\n<secret ephemeral='no' private='yes'>\
          <uuid>0b5e0cbb-9f7e-4c9b-8a4f-3f8e7a6d5c4b</uuid><usage type='ceph'><name>bad</name></usage></secret>\nEOF\n\
          virsh secret-define bad-secret.xml >/dev/null\n\
          echo AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A== > bad.key\n\
          virsh secret-set-value --secret 0b5e0cbb-9f7e-4c9b-8a4f-3f8e7a6d5c4b --file bad.key >/dev/null");
    w.ok(&bad_pool("qemu"));
    let started = Instant::now();
    let run = w.sh("virsh pool-start bad");
    assert_ne!(run.code(), 0, "{}", run.out());
    assert!(
        run.stderr.contains("failed to connect to the RADOS monitor on: 127.0.0.1:")
            && run.stderr.contains("Permission denied"),
        "wrong key: {}",
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    // The guest with the wrong key: QEMU's error, through libvirt.
    w.ok("sed -e \"s/<name>vm1</<name>vm-bad</\" -e \"s/$SECRET_UUID/0b5e0cbb-9f7e-4c9b-8a4f-3f8e7a6d5c4b/\" \
          -e \"s/vm1.console/vm-bad.console/\" vm1.xml > vm-bad.xml && virsh define vm-bad.xml >/dev/null");
    let started = Instant::now();
    let why = w.start_failure("vm-bad");
    assert!(why.contains("error connecting: Permission denied"), "wrong key: {why}");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    // A user whose caps do not cover the pool.
    w.ok("virsh pool-undefine bad >/dev/null && \
          ceph auth get-key client.nocaps > bad.key && \
          virsh secret-set-value --secret 0b5e0cbb-9f7e-4c9b-8a4f-3f8e7a6d5c4b --file bad.key >/dev/null");
    w.ok(&bad_pool("nocaps"));
    let started = Instant::now();
    let run = w.sh("virsh pool-start bad");
    assert_ne!(run.code(), 0, "{}", run.out());
    assert!(
        run.stderr.contains("Unable to list RBD images: Operation not permitted"),
        "no caps: {}",
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    w.ok("virsh undefine vm-bad >/dev/null && sed -i \"s/username='qemu'/username='nocaps'/\" vm-bad.xml && virsh define vm-bad.xml >/dev/null");
    let why = w.start_failure("vm-bad");
    assert!(why.contains("Operation not permitted"), "no caps: {why}");
    w.ok("virsh undefine vm-bad >/dev/null && virsh pool-undefine bad >/dev/null && \
          virsh secret-undefine 0b5e0cbb-9f7e-4c9b-8a4f-3f8e7a6d5c4b >/dev/null");

    // --- Snapshots: libvirt's own refusal for rbd disks, at once. ---
    let run = w.sh("virsh snapshot-create-as vm1 s1");
    assert_ne!(run.code(), 0);
    assert!(
        run.stderr.contains(
            "internal inactive snapshots are not supported on 'network' disks using 'rbd' protocol"
        ),
        "{}",
        run.stderr
    );

    // --- The cluster gone: libvirt's own timeouts (it sets client_mount_timeout and
    // rados_osd_op_timeout to 30 s, which Quarry's client honours) end the call. ---
    if let Some(mut cluster) = w.cluster.take() {
        cluster.terminate();
    }
    let started = Instant::now();
    let run = w.sh("virsh vol-create-as quarry never 4M");
    assert_ne!(run.code(), 0, "{}", run.out());
    assert!(
        run.stderr.contains("failed to connect to the RADOS monitor on: 127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());

    w.step("cleanup");
    let out = w.ok("virsh list --all --name; virsh pool-list --all --name; virsh secret-list");
    assert!(!out.contains("vm1") && !out.contains("quarry") && !out.contains("2a5b08e4"), "{out}");

    // Every block of the page ran.
    let unused: Vec<&String> =
        w.steps.iter().map(|(n, _)| n).filter(|n| !w.used.contains(n)).collect();
    assert!(unused.is_empty(), "docs/libvirt.md blocks the test does not run: {unused:?}");
    drop(w);
    drop(installed);
    let out = Command::new(&quarry).args(["install-libs", "--status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("install: not installed"), "{text}");
    assert!(!text.contains("(quarry)"), "Ceph's libraries again:\n{text}");
    eprintln!("libvirt test: {:?}", test_started.elapsed());
}
