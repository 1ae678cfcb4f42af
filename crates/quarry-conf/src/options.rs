//! The typed option table: every option Quarry reads (name, type, default, doc, reader), the
//! common Ceph options Quarry knows and ignores (so users' existing confs load), the value
//! parsers (sizes `64M`, booleans `yes`), and [`validate`], which warns about misspelt or
//! unknown keys by name. [`is_known`] answers librados' `rados_conf_set` (-ENOENT otherwise).

use crate::Conf;

/// An option's value type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionKind {
    /// Free text.
    Str,
    /// A signed integer.
    Int,
    /// `true/false/1/0/yes/no` (any case).
    Bool,
    /// Bytes: plain, or with a binary unit `K M G T P E` (optionally `i`, `B`): `64M`, `1GiB`.
    Size,
    /// A decimal number (seconds for timeouts).
    Float,
    /// One or more of these words, separated by commas or spaces (`cephx, none`).
    Choice(&'static [&'static str]),
}

/// Who reads an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// Clients: librados/librbd, QEMU, the `rbd`/`rados`/`ceph` commands.
    Client,
    /// The monitor daemon.
    Mon,
    /// The OSD daemons.
    Osd,
}

/// One option Quarry reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionSpec {
    /// Canonical name (underscores).
    pub name: &'static str,
    /// Value type.
    pub kind: OptionKind,
    /// Default as text ("" = unset), with `$cluster`/`$name` metavariables unexpanded.
    pub default: &'static str,
    /// What it does in Quarry.
    pub doc: &'static str,
    /// Which daemons or clients read it.
    pub used_by: &'static [Reader],
}

use OptionKind::*;
use Reader::*;

const ALL: &[Reader] = &[Client, Mon, Osd];
const CLIENT: &[Reader] = &[Client];
const CLIENT_OSD: &[Reader] = &[Client, Osd];
const MON: &[Reader] = &[Mon];
const MON_OSD: &[Reader] = &[Mon, Osd];
const OSD: &[Reader] = &[Osd];

/// Ceph's default keyring search list.
pub const KEYRING_DEFAULT: &str =
    "/etc/ceph/$cluster.$name.keyring,/etc/ceph/$cluster.keyring,/etc/ceph/keyring,/etc/ceph/keyring.bin";

/// Every option Quarry reads, with its readers. An option nothing reads belongs in
/// [`IGNORED_OPTIONS`] instead (check with a grep for its name when changing a reader).
pub static OPTIONS: &[OptionSpec] = &[
    OptionSpec { name: "mon_host", kind: Str, default: "", used_by: ALL,
        doc: "Monitor addresses: `IP[:PORT]`, `[v2:IP:3300/0,v1:IP:6789/0]` or `[IPv6]:PORT`, several separated by commas, semicolons or spaces. The port defaults to 6789. A monitor listens on the first one unless `--addr` says otherwise." },
    OptionSpec { name: "keyring", kind: Str, default: KEYRING_DEFAULT, used_by: ALL,
        doc: "Keyring files to search, in order (comma, semicolon or space separated; metavariables expanded). Clients and OSDs use the first that holds their key (an OSD tries `DATA/keyring` last); `quarry mon --mkfs` creates the cluster's users from the first that exists." },
    OptionSpec { name: "key", kind: Str, default: "", used_by: CLIENT_OSD,
        doc: "The entity's key itself (`AQ...==`). Takes precedence over keyfile and keyring; avoid in files others can read." },
    OptionSpec { name: "keyfile", kind: Str, default: "", used_by: CLIENT_OSD,
        doc: "A file holding only the entity's key. Takes precedence over keyring." },
    OptionSpec { name: "mon_blocklist_max", kind: Int, default: "1000", used_by: MON,
        doc: "Quarry's bound on the blocklist: `osd blocklist add` of a new entry by a user without `auth` rights on the monitor (a `profile rbd` user) is refused with ENOSPC once this many live entries are ones that user added (the bound is per adding entity; an admin may go to 65536). `ceph health` warns from half of it. Entries expire (default 1 h) and are removed from the map then." },
    OptionSpec { name: "fsid", kind: Str, default: "", used_by: &[Client, Mon],
        doc: "The cluster id; `quarry mon --mkfs` uses it when `--fsid` is not given. Clients that find it set refuse a cluster with another fsid (EINVAL at connect)." },
    OptionSpec { name: "auth_service_ticket_ttl", kind: Float, default: "300", used_by: MON,
        doc: "Seconds a ticket for OSD sessions lives (at least 2; service keys rotate every half of it). Ceph's default is 3600; Quarry's is shorter so caps changes reach open sessions sooner." },
    OptionSpec { name: "client_mount_timeout", kind: Float, default: "30", used_by: CLIENT,
        doc: "Seconds a client waits to reach a monitor and authenticate before failing with ETIMEDOUT (Ceph's default is 300)." },
    OptionSpec { name: "rados_osd_op_timeout", kind: Float, default: "0", used_by: CLIENT,
        doc: "Seconds before an object operation fails with ETIMEDOUT; 0 waits forever (retrying across failovers). An op waiting on a PG with no reachable primary says why after 3 s (a warning; the tools print `waiting for PG 2.3: no OSD up`)." },
    OptionSpec { name: "rados_mon_op_timeout", kind: Float, default: "0", used_by: CLIENT,
        doc: "Seconds before a monitor command fails with ETIMEDOUT; 0 waits forever (retrying across monitor failovers)." },
    OptionSpec { name: "osd_client_watch_timeout", kind: Float, default: "30", used_by: CLIENT,
        doc: "Seconds a watch lives on its OSD without a ping (whole seconds, at least 1). `rados watch` asks its OSD for this timeout; OSDs apply 30 s to watches that ask for none." },
    OptionSpec { name: "osd_pool_default_size", kind: Int, default: "3", used_by: MON,
        doc: "Replicas of a new pool (`quarry up` writes 1 for a one-machine cluster); `quarry mon --size` overrides it." },
    OptionSpec { name: "mon_osd_nearfull_ratio", kind: Float, default: "0.85", used_by: MON_OSD,
        doc: "Disk usage (used / (used + available) of an OSD's data directory file system) from which `ceph health` reports OSD_NEARFULL. Writes go on." },
    OptionSpec { name: "mon_osd_full_ratio", kind: Float, default: "0.95", used_by: MON_OSD,
        doc: "Disk usage from which an OSD is full: `ceph health` reports OSD_FULL (HEALTH_ERR) and writes that need space get ENOSPC; reads, removes, truncates and zeroing still work. The OSD checks its own disk before every such write, and the monitor's map for its replicas." },
    OptionSpec { name: "osd_failsafe_full_ratio", kind: Float, default: "0.97", used_by: MON_OSD,
        doc: "The OSD's own limit: a write that needs space is refused when it and the writes in flight would take the disk to this usage, whatever the monitor says; every such write stops when the raw disk is halfway between it and full. Must be at least mon_osd_full_ratio." },
    OptionSpec { name: "rbd_cache", kind: Bool, default: "true", used_by: CLIENT,
        doc: "Cache image data in the client (quarry-rbd): writeback, or writethrough when rbd_cache_max_dirty is 0. false sends every read and write to the cluster." },
    OptionSpec { name: "rbd_cache_size", kind: Size, default: "32M", used_by: CLIENT,
        doc: "Bytes an open image caches, dirty and clean (the cache's memory bound)." },
    OptionSpec { name: "rbd_cache_max_dirty", kind: Size, default: "24M", used_by: CLIENT,
        doc: "Dirty bytes at most (writes wait for writeback beyond it); 0 is writethrough: a write is acknowledged once the cluster has it." },
    OptionSpec { name: "rbd_cache_target_dirty", kind: Size, default: "16M", used_by: CLIENT,
        doc: "Dirty bytes from which the cache writes back in the background." },
    OptionSpec { name: "rbd_cache_max_dirty_age", kind: Float, default: "1.0", used_by: CLIENT,
        doc: "Seconds a write stays dirty at most before it is written back." },
    OptionSpec { name: "rbd_cache_writethrough_until_flush", kind: Bool, default: "true", used_by: CLIENT,
        doc: "Writethrough until the first flush of the image (a guest that never flushes is not put at risk), then writeback." },
    OptionSpec { name: "rbd_readahead_trigger_requests", kind: Int, default: "10", used_by: CLIENT,
        doc: "Sequential reads of an image before the cache reads ahead." },
    OptionSpec { name: "rbd_readahead_max_bytes", kind: Size, default: "512K", used_by: CLIENT,
        doc: "Bytes read ahead at once (0: no read-ahead)." },
    OptionSpec { name: "rbd_readahead_disable_after_bytes", kind: Size, default: "50M", used_by: CLIENT,
        doc: "Read-ahead stops after this many bytes of an open image were read (the guest's own read-ahead takes over); 0 never stops." },
    OptionSpec { name: "osd_pool_default_pg_num", kind: Int, default: "32", used_by: MON,
        doc: "Placement groups of a new pool when `ceph osd pool create` gives none; `quarry mon --pg-num` overrides it." },
    OptionSpec { name: "mon_osd_down_out_interval", kind: Float, default: "600", used_by: MON,
        doc: "Seconds an OSD may stay down before the monitor marks it out, so that its PGs are re-replicated on the other OSDs (Ceph's default, 600); 0 never marks an OSD out by itself." },
    OptionSpec { name: "osd_raft_heartbeat_interval", kind: Float, default: "1", used_by: OSD,
        doc: "Seconds between a PG leader's heartbeats to its replicas (Quarry's option, 0.05 to 10). A replica that hears nothing for 2.5 to 5 intervals (randomised) starts an election, so this sets how fast a PG's writes resume after its primary dies." },
    OptionSpec { name: "osd_write_once_min_bytes", kind: Size, default: "64K", used_by: OSD,
        doc: "Write ops of at least this many bytes (whole 4 KiB chunks at a chunk boundary, at most 16M) to a one-replica PG are written once: into the store's data file when the entry is appended, the log entry recording only where (Quarry's option, issue 14; 0 = off: every write goes through the log and again into the store). Changes at runtime." },
    OptionSpec { name: "osd_max_backfills", kind: Int, default: "1", used_by: OSD,
        doc: "PG moves (a new replica caught up by Raft snapshot and log, then promoted) an OSD drives as a PG's primary at once (at least 1)." },
    // The daemons' connection and memory budget (`quarry_types::ServerLimits`, enforced by
    // `quarry_wire::limits`; docs/security.md, "Limits").
    OptionSpec { name: "ms_max_connections", kind: Int, default: "8192", used_by: MON_OSD,
        doc: "Connections a daemon serves at once, authenticated or not (Quarry's option). Lowered at start to what the open-files limit leaves after the daemon's own files. A connection beyond it gets EAGAIN \"too many connections\" and is closed." },
    OptionSpec { name: "ms_max_connections_per_entity", kind: Int, default: "2048", used_by: MON_OSD,
        doc: "Authenticated connections one client entity (`client.X`, all its instances together) may hold on one daemon (Quarry's option); one more is refused with EAGAIN, so one user cannot lock others out." },
    OptionSpec { name: "osd_client_message_size_cap", kind: Size, default: "500M", used_by: OSD,
        doc: "Bytes of client requests an OSD holds at once (read, not answered yet); one client entity at most a quarter of it. A request body is read off the socket only when it fits (the client waits); a frame announced larger than the whole budget gets EMSGSIZE unread." },
    OptionSpec { name: "osd_client_message_cap", kind: Int, default: "256", used_by: OSD,
        doc: "Requests one connection may have in flight on an OSD (Ceph counts them per OSD; Quarry per connection); more wait on the socket." },
    OptionSpec { name: "ms_dispatch_throttle_bytes", kind: Size, default: "100M", used_by: OSD,
        doc: "Bytes of requests from peer daemons (other OSDs' replication) an OSD holds at once; apart from the clients' budget, so clients cannot starve replication." },
    OptionSpec { name: "mon_client_bytes", kind: Size, default: "100M", used_by: MON,
        doc: "Bytes of client requests the monitor holds at once, as osd_client_message_size_cap for OSDs (also the largest request frame it reads)." },
    OptionSpec { name: "mon_daemon_bytes", kind: Size, default: "400M", used_by: MON,
        doc: "Bytes of requests from OSDs the monitor holds at once." },
    OptionSpec { name: "ms_reply_queue_bytes", kind: Size, default: "256M", used_by: MON_OSD,
        doc: "Bytes of replies and map pushes a daemon keeps queued for clients that have not read them yet (Quarry's option); one client entity at most a quarter of it. Room is reserved before a request runs: at the limit, the daemon stops reading new requests from those clients." },
    OptionSpec { name: "ms_reply_queue_bytes_per_connection", kind: Size, default: "32M", used_by: MON_OSD,
        doc: "The same for one connection (Quarry's option): a client that does not read its replies stops being served at this much (one larger reply still goes through alone)." },
    OptionSpec { name: "ms_tcp_read_timeout", kind: Float, default: "900", used_by: MON_OSD,
        doc: "Seconds an authenticated connection with nothing in flight may stay silent before the daemon closes it, and seconds a peer may leave a pending reply unread before the connection is closed (clients reconnect when they next need it)." },
    OptionSpec { name: "ms_handshake_timeout", kind: Float, default: "10", used_by: MON_OSD,
        doc: "Seconds a new connection has to authenticate (Quarry's option) before it is closed." },
    OptionSpec { name: "osd_memory_target", kind: Size, default: "192M", used_by: OSD,
        doc: "Resident memory an OSD aims at: its store cache is an eighth of it, its object metadata cache three sixteenths and its WAL entry cache a sixteenth (Ceph's default is 4G, mostly BlueStore's cache; Quarry's store is also read through the kernel's page cache). Requests and replies in flight are bounded by the byte budgets above." },
    OptionSpec { name: "mon_memory_target", kind: Size, default: "2G", used_by: MON,
        doc: "Resident memory a monitor aims at (accepted for Ceph's sake: a monitor's state is small and holds no cache to size)." },
    OptionSpec { name: "log_file", kind: Str, default: "", used_by: MON_OSD,
        doc: "The daemon's log file (metavariables expanded: `/var/log/ceph/$cluster-$name.log`); default `DATA/log/quarry-TYPE.ID.log` under the daemon's data directory (`quarry up`: `DIR/log/quarry-up.log`); empty: no file. `--log-file` overrides it." },
    OptionSpec { name: "log_to_file", kind: Bool, default: "true", used_by: MON_OSD,
        doc: "false: the daemon writes no log file (as `log_file =`)." },
    OptionSpec { name: "log_to_stderr", kind: Bool, default: "", used_by: MON_OSD,
        doc: "true: stderr gets every log line the file gets. Unset: warnings and errors only while a log file is written, everything when none is. false: warnings and errors only (none if err_to_stderr is false too)." },
    OptionSpec { name: "err_to_stderr", kind: Bool, default: "true", used_by: MON_OSD,
        doc: "false (with log_to_stderr false or unset): nothing on stderr, the log file only." },
];

/// Ceph options Quarry accepts and ignores: common in existing ceph.conf files, or read by
/// layers Quarry does not have yet (the image layer reads only the cache's `rbd_cache*`/`rbd_readahead*`).
/// Moving one to [`OPTIONS`] is how a feature starts honouring it. The `debug_*` levels are
/// in [`IGNORED_PREFIXES`] (any subsystem name loads); the daemons read the ones they map
/// (quarry-cli's logging module) and warn about a value that is not a level.
pub static IGNORED_OPTIONS: &[&str] = &[
    "auth_cluster_required",
    "auth_service_required",
    "auth_client_required",
    "ms_mode",
    "admin_socket",
    "run_dir",
    "rbd_default_order",
    "rbd_default_features",
    "rbd_default_format",
    "rbd_default_pool",
    "mon_initial_members",
    "mon_addr",
    "mon_data",
    "mon_allow_pool_delete",
    "mon_max_pg_per_osd",
    "mon_clock_drift_allowed",
    "mon_cluster_log_file",
    "mon_dns_srv_name",
    "mon_compact_on_start",
    "public_network",
    "cluster_network",
    "public_addr",
    "cluster_addr",
    "public_bind_addr",
    "host",
    "osd_journal_size",
    "osd_journal",
    "osd_data",
    "osd_objectstore",
    "osd_pool_default_min_size",
    "osd_pool_default_pgp_num",
    "osd_pool_default_crush_rule",
    "osd_pool_default_pg_autoscale_mode",
    "osd_crush_chooseleaf_type",
    "osd_crush_update_on_start",
    "osd_max_object_name_len",
    "osd_max_object_namespace_len",
    "osd_mkfs_type",
    "osd_mkfs_options_xfs",
    "osd_mount_options_xfs",
    "osd_heartbeat_grace",
    "osd_heartbeat_interval",
    "osd_op_threads",
    "ms_bind_ipv6",
    "ms_bind_ipv4",
    "ms_bind_msgr1",
    "ms_bind_msgr2",
    "ms_type",
    "ms_client_mode",
    "ms_cluster_mode",
    "ms_service_mode",
    "ms_mon_client_mode",
    "ms_mon_cluster_mode",
    "ms_mon_service_mode",
    "ms_crc_data",
    "ms_crc_header",
    "ms_async_op_threads",
    "log_to_syslog",
    "err_to_syslog",
    "log_stderr_prefix",
    "log_max_recent",
    "log_flush_on_exit",
    "log_to_journald",
    "clog_to_syslog",
    "clog_to_monitors",
    "mon_cluster_log_to_syslog",
    "auth_supported",
    "auth_allow_insecure_global_id_reclaim",
    "auth_expose_insecure_global_id_reclaim",
    "auth_mon_ticket_ttl",
    "cephx_require_signatures",
    "cephx_cluster_require_signatures",
    "cephx_service_require_signatures",
    "cephx_sign_messages",
    "max_open_files",
    "pid_file",
    "setuser_match_path",
    "admin_socket_mode",
    "crash_dir",
    "erasure_code_dir",
    "plugin_dir",
    "rbd_cache_policy",
    "rbd_cache_block_writes_upfront",
    "rbd_concurrent_management_ops",
    "rbd_default_stripe_count",
    "rbd_default_stripe_unit",
    "rbd_default_data_pool",
    "rbd_default_map_options",
    "rbd_default_clone_format",
    "rbd_read_from_replica_policy",
    "rbd_blacklist_on_break_lock",
    "rbd_blocklist_on_break_lock",
    "rbd_op_threads",
    "rbd_localize_parent_reads",
    "rbd_balance_parent_reads",
    "rbd_clone_copy_on_read",
    "rbd_skip_partial_discard",
    "rbd_validate_pool",
    "rbd_compression_hint",
    "rbd_persistent_cache_mode",
    "rbd_persistent_cache_path",
    "rbd_persistent_cache_size",
    "rbd_plugins",
    "rbd_sparse_read_threshold_bytes",
    "objecter_inflight_ops",
    "objecter_inflight_op_bytes",
    "client_permissions",
    "client_quota",
    "rados_tracing",
    "librados_thread_count",
    "mon_osd_backfillfull_ratio",
    // The `mon_osd_*` options Quarry does not read (the full ratios it reads are in OPTIONS).
    "mon_osd_min_down_reporters",
    "mon_osd_report_timeout",
    "mon_osd_adjust_heartbeat_grace",
    "mon_osd_adjust_down_out_interval",
    "mon_osd_auto_mark_in",
    "mon_osd_auto_mark_new_in",
    "mon_osd_auto_mark_auto_out_in",
    "mon_osd_down_out_subtree_limit",
    "mon_osd_min_in_ratio",
    "mon_osd_min_up_ratio",
    "mon_osd_laggy_halflife",
    "mon_osd_laggy_weight",
    "mon_osd_laggy_max_interval",
    "mon_osd_prime_pg_temp",
    "mon_osd_cache_size",
    "mon_osd_max_split_count",
    "mon_osd_allow_primary_affinity",
    "mon_osd_crush_smoke_test",
    "mon_warn_on_pool_no_redundancy",
    "mon_pg_warn_max_per_osd",
    "mon_lease",
];

/// Option families of Ceph subsystems Quarry does not have: any option starting with one
/// of these is known and ignored.
pub static IGNORED_PREFIXES: &[&str] = &[
    "debug_",
    "filestore_",
    "bluestore_",
    "bluefs_",
    "bdev_",
    "rocksdb_",
    "leveldb_",
    "journal_",
    "kstore_",
    "memstore_",
    "mds_",
    "rgw_",
    "mgr_",
    "paxos_",
    "fuse_",
    "client_oc",
    "osd_scrub_",
    "osd_deep_scrub_",
    "osd_recovery_",
    "osd_backfill_",
    "osd_op_queue",
    "osd_client_op_priority",
    "mon_pg_",
    "mon_warn_",
    "rbd_mirror",
    "rbd_journal_",
    "rbd_qos_",
    "err_to_graylog",
    "log_to_graylog",
    "log_graylog",
    "cephfs_",
];

/// The spec of an option Quarry reads (names normalised: `mon host` = `mon-host` = `mon_host`).
pub fn option_spec(name: &str) -> Option<&'static OptionSpec> {
    let name = crate::normalize_key(name);
    OPTIONS.iter().find(|o| o.name == name)
}

/// Whether Ceph or Quarry knows the option (read or ignored). librados' `rados_conf_set`
/// returns -ENOENT for unknown names; so does [`Conf::set_override`].
pub fn is_known(name: &str) -> bool {
    let normalized = crate::normalize_key(name);
    option_spec(&normalized).is_some()
        || IGNORED_OPTIONS.contains(&normalized.as_str())
        || IGNORED_PREFIXES.iter().any(|p| normalized.len() > p.len() && normalized.starts_with(p))
}

/// Parses a boolean as Ceph does: `true/false/1/0/yes/no`, any case.
pub fn parse_bool(text: &str) -> Result<bool, &'static str> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected true, false, 1, 0, yes or no"),
    }
}

/// Parses a byte size: `4096`, `64K`, `64M`, `1G`, `1GiB`, `2T` (binary units, any case).
pub fn parse_size(text: &str) -> Result<u64, &'static str> {
    const WHAT: &str = "expected bytes, optionally with a unit (K, M, G, T, P, E)";
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(WHAT);
    }
    let number: u64 = digits.parse().map_err(|_| "number too large")?;
    let unit = unit.trim_start().to_ascii_uppercase();
    let unit = unit.strip_suffix('B').unwrap_or(&unit);
    let unit = unit.strip_suffix('I').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        "E" => 60,
        _ => return Err(WHAT),
    };
    number.checked_mul(1u64 << shift).ok_or("size too large")
}

/// Parses an integer option.
pub fn parse_int(text: &str) -> Result<i64, &'static str> {
    text.trim().parse().map_err(|_| "expected an integer")
}

/// Parses a decimal option (finite).
pub fn parse_float(text: &str) -> Result<f64, &'static str> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err("expected a number"),
    }
}

impl OptionKind {
    /// Checks `text` against the type.
    pub fn check(self, text: &str) -> Result<(), &'static str> {
        match self {
            Str => Ok(()),
            Int => parse_int(text).map(drop),
            Bool => parse_bool(text).map(drop),
            Size => parse_size(text).map(drop),
            Float => parse_float(text).map(drop),
            Choice(words) => {
                let mut any = false;
                for word in text.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
                    if !words.contains(&word) {
                        return Err("not one of the allowed values");
                    }
                    any = true;
                }
                if any {
                    Ok(())
                } else {
                    Err("empty")
                }
            }
        }
    }
}

/// A problem `validate` found in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The section (`global`, `client.admin`).
    pub section: String,
    /// The key as written (empty for section problems).
    pub key: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub problem: Problem,
}

/// What `validate` complains about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Neither Quarry nor Ceph knows the key; the closest known name, if close.
    UnknownOption {
        /// A known option within two edits.
        suggestion: Option<&'static str>,
    },
    /// The value does not fit the option's type.
    BadValue {
        /// The value as written.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The section is not `global`, a type (`client`, `osd`, `mon`, `mds`, `mgr`) or `TYPE.ID`.
    UnknownSection,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            Problem::UnknownOption { suggestion } => {
                write!(
                    f,
                    "line {}: unknown option '{}' in [{}]",
                    self.line, self.key, self.section
                )?;
                if let Some(s) = suggestion {
                    write!(f, " (did you mean '{s}'?)")?;
                }
                Ok(())
            }
            Problem::BadValue { value, reason } => write!(
                f,
                "line {}: invalid value '{value}' for '{}' in [{}]: {reason}",
                self.line, self.key, self.section
            ),
            Problem::UnknownSection => {
                write!(f, "line {}: unknown section [{}]", self.line, self.section)
            }
        }
    }
}

const SECTION_TYPES: &[&str] = &["client", "osd", "mon", "mds", "mgr"];

fn section_known(section: &str) -> bool {
    if section == "global" || SECTION_TYPES.contains(&section) {
        return true;
    }
    match section.split_once('.') {
        Some((kind, id)) => SECTION_TYPES.contains(&kind) && (kind == "mon" || !id.is_empty()),
        None => false,
    }
}

/// Warnings for a loaded config: unknown sections, unknown (misspelt) keys with a suggestion,
/// values that do not fit their option's type. Files load regardless, as Ceph's do.
pub fn validate(conf: &Conf) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for (section, first_line, settings) in conf.sections_with_lines() {
        if !section_known(section) {
            let problem = Problem::UnknownSection;
            warnings.push(Warning {
                section: section.into(),
                key: String::new(),
                line: first_line,
                problem,
            });
        }
        for setting in settings {
            let warn = |problem| Warning {
                section: section.to_string(),
                key: setting.raw_key.clone(),
                line: setting.line,
                problem,
            };
            if !is_known(&setting.key) {
                let suggestion = suggest(&setting.key);
                warnings.push(warn(Problem::UnknownOption { suggestion }));
            } else if let Some(spec) = option_spec(&setting.key) {
                let mut checked = spec.kind.check(&setting.value);
                if spec.name == "mon_host" && !setting.value.trim().is_empty() {
                    let addresses = crate::parse_mon_host_entries(&setting.value);
                    checked =
                        checked.and(addresses.map(drop).map_err(|_| "not a monitor address list"));
                }
                if let Err(reason) = checked {
                    warnings.push(warn(Problem::BadValue { value: setting.value.clone(), reason }));
                }
            }
        }
    }
    warnings.sort_by_key(|w| w.line);
    warnings
}

/// The known option closest to `name`, if within two edits.
fn suggest(name: &str) -> Option<&'static str> {
    let candidates = OPTIONS.iter().map(|o| o.name).chain(IGNORED_OPTIONS.iter().copied());
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut names: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate option names");
        for spec in OPTIONS {
            assert_eq!(
                crate::normalize_key(spec.name),
                spec.name,
                "{} is not canonical",
                spec.name
            );
            assert!(!spec.doc.is_empty() && !spec.used_by.is_empty(), "{}", spec.name);
            if !spec.default.is_empty() {
                spec.kind
                    .check(spec.default)
                    .unwrap_or_else(|e| panic!("{} default: {e}", spec.name));
            }
            assert!(!IGNORED_OPTIONS.contains(&spec.name), "{} both read and ignored", spec.name);
            assert!(!IGNORED_PREFIXES.iter().any(|p| spec.name.starts_with(p)), "{}", spec.name);
        }
    }

    #[test]
    fn known_and_unknown_names() {
        for name in [
            "mon_host",
            "mon host",
            "mon-host",
            "rbd_cache",
            "debug_rbd",
            "debug ms",
            "fsid",
            "public network",
            "filestore_xattr_use_omap",
            "bluestore_cache_size",
            "osd_journal_size",
            "ms_bind_ipv6",
            "log_to_stderr",
            "err_to_stderr",
            "mon_initial_members",
            "cluster_network",
        ] {
            assert!(is_known(name), "{name} must be known");
        }
        for name in ["rbd_cahce", "mon_hosts", "debug_", "bogus", "keyrings"] {
            assert!(!is_known(name), "{name} must be unknown");
        }
        assert_eq!(option_spec("osd pool-default size").map(|o| o.kind), Some(Int));
        assert_eq!(option_spec("rbd_cache").map(|o| o.kind), Some(Bool), "read by quarry-rbd");
        assert_eq!(option_spec("rbd_default_order"), None, "accepted and ignored, not read");
        assert_eq!(suggest("rbd_cahce"), Some("rbd_cache"));
        assert_eq!(suggest("mon_hosts"), Some("mon_host"));
        assert_eq!(suggest("completely_different"), None);
    }

    #[test]
    fn sizes_bools_ints_floats_choices() {
        for (text, want) in [
            ("0", 0),
            ("4096", 4096),
            ("64M", 64 << 20),
            ("64m", 64 << 20),
            ("1G", 1 << 30),
            ("1GiB", 1 << 30),
            ("1 GB", 1 << 30),
            ("32Mi", 32 << 20),
            ("2T", 2 << 40),
            ("7B", 7),
            ("1E", 1 << 60),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for bad in ["", "M", "-1", "1.5G", "10X", "16E", "99999999999999999999", "1 G B"] {
            assert!(parse_size(bad).is_err(), "{bad} must not parse");
        }
        for (text, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("yes", true),
            ("Yes", true),
            ("false", false),
            ("0", false),
            ("no", false),
            (" False ", false),
        ] {
            assert_eq!(parse_bool(text), Ok(want), "{text}");
        }
        for bad in ["", "2", "on", "y", "truee"] {
            assert!(parse_bool(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_int(" -3 "), Ok(-3));
        assert!(parse_int("3.0").is_err());
        assert_eq!(parse_float("1.5"), Ok(1.5));
        assert!(parse_float("nan").is_err() && parse_float("x").is_err());
        let auth = Choice(&["cephx", "none"]);
        assert!(auth.check("cephx, none").is_ok() && auth.check("cephx").is_ok());
        assert!(auth.check("kerberos").is_err() && auth.check(" , ").is_err());
    }
}
