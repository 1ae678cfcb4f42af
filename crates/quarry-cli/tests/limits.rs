//! The daemons' connection and memory budget against a hostile read-only user (issue 12,
//! items 1, 2, 3a and 3b). Each test runs `quarry up` (monitor + one OSD in one process) as
//! a child with lowered limits in its ceph.conf, stores an object, then attacks it from this
//! process over loopback as `client.ro` (`mon 'profile rbd' osd 'profile rbd-read-only
//! pool=rbd'`), and checks that the daemon process stays up, that `client.admin` is still
//! served within a bound, that the daemon's resident memory (VmRSS of the child) stays under
//! the budget plus a fixed margin, and that the stored object is unchanged.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use quarry_auth::CryptoKey;
use quarry_types::{EntityName, ErrorCode, ObjectOp, PgId, SnapContext, SNAP_HEAD};
use quarry_wire::{ClientSecret, ClusterMap, Connected, OsdOp, Reply, Request, Service, WireError};
use tokio::io::AsyncWriteExt;

const T: Duration = Duration::from_secs(10);
/// What `client.admin` must be served within while the attack goes on.
const SERVED_WITHIN: Duration = Duration::from_secs(30);
/// The object stored before every attack (4 MiB: a full image object).
const KEEP: &str = "keep";
const KEEP_LEN: usize = 4 << 20;

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    conf: PathBuf,
    daemon: Daemon,
    ro_key: CryptoKey,
    mon: SocketAddr,
    data: Vec<u8>,
}

fn ceph(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("ceph", Some(conf), args), None, COMMAND_TIMEOUT)
}

fn rados(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("rados", Some(conf), args), None, COMMAND_TIMEOUT)
}

/// `quarry up` with `client.ro` and the object `keep`, restarted with `limits` appended to
/// its ceph.conf (and, with `nofile`, started with that soft/hard open-files limit).
fn setup(limits: &str, nofile: Option<(u64, u64)>) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let conf = dir.join("ceph.conf");
    let mut first = up(&dir, 1);
    ceph(
        &conf,
        &[
            "auth",
            "get-or-create",
            "client.ro",
            "mon",
            "profile rbd",
            "osd",
            "profile rbd-read-only pool=rbd",
        ],
    )
    .ok("create client.ro");
    let key = ceph(&conf, &["auth", "get-key", "client.ro"]).ok("get-key").out();
    let ro_key = CryptoKey::from_base64(key.trim()).unwrap();
    let data = pattern(KEEP_LEN, 12);
    let file = tmp.path().join("keep.in");
    std::fs::write(&file, &data).unwrap();
    rados(&conf, &["-p", "rbd", "put", KEEP, file.to_str().unwrap()]).ok("put keep");
    first.terminate();
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\n[global]\n");
    text.push_str(limits);
    std::fs::write(&conf, text).unwrap();
    let mut cmd = std::process::Command::new(quarry());
    cmd.arg("up").arg(&dir);
    if let Some((soft, hard)) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
        unsafe {
            cmd.pre_exec(move || {
                let lim = rustix::process::Rlimit { current: Some(soft), maximum: Some(hard) };
                rustix::process::setrlimit(rustix::process::Resource::Nofile, lim)
                    .map_err(std::io::Error::from)
            });
        }
    }
    let mut daemon = Daemon::spawn("quarry up", cmd);
    daemon.wait_ready();
    let conf_text = std::fs::read_to_string(&conf).unwrap();
    let parsed = quarry_conf::Conf::parse(&conf_text).unwrap();
    let mon_host = parsed.get(&EntityName::client("admin"), "mon_host").unwrap();
    let mon = quarry_conf::parse_mon_host(&mon_host).unwrap()[0];
    Setup { _dir: tmp, dir, conf, daemon, ro_key, mon, data }
}

impl Setup {
    /// `rados get keep` as client.admin: answered within `SERVED_WITHIN`, same bytes.
    fn admin_reads_keep(&self, what: &str) {
        let out = self.dir.join("keep.out");
        let _ = std::fs::remove_file(&out);
        let started = Instant::now();
        let r = run_bounded(
            tool_cmd("rados", Some(&self.conf), &["-p", "rbd", "get", KEEP, out.to_str().unwrap()]),
            None,
            SERVED_WITHIN,
        );
        assert_eq!(r.code(), 0, "{what}: client.admin was not served: {}", r.stderr);
        assert!(started.elapsed() < SERVED_WITHIN, "{what}: served too late");
        assert!(std::fs::read(&out).unwrap() == self.data, "{what}: {KEEP} changed");
    }

    fn alive(&mut self) {
        assert!(
            self.daemon.wait_exit(Duration::from_millis(10)).is_none(),
            "the daemon process exited: {}",
            self.daemon.logs()
        );
    }

    fn rss_kib(&self) -> u64 {
        status_field(self.daemon.pid(), "VmRSS:")
    }

    async fn ro_mon(&self) -> Result<Connected, WireError> {
        let secret = ClientSecret::EntityKey(self.ro_key.secret().to_vec());
        quarry_wire::connect(self.mon, &EntityName::client("ro"), Service::Mon, &secret, T).await
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A ticket for OSD sessions of the monitor session's entity, and the map.
async fn ticket_and_map(mon: &Connected) -> (ClientSecret, ClusterMap) {
    let Reply::Ticket { ticket, session_key, .. } =
        mon.client.call(Request::GetTicket).await.unwrap()
    else {
        panic!("no ticket")
    };
    let session_key = quarry_auth::open_key(&mon.session_key, &session_key).unwrap();
    let Reply::Map(map) = mon.client.call(Request::GetMap).await.unwrap() else { panic!("no map") };
    (ClientSecret::Ticket { ticket, session_key }, *map)
}

fn osd_addr(map: &ClusterMap) -> SocketAddr {
    map.osds.values().find_map(|o| o.addr).unwrap()
}

fn read_keep(map: &ClusterMap) -> OsdOp {
    let pool = map.pools.values().find(|p| p.name == "rbd").unwrap();
    OsdOp {
        pg: PgId { pool: pool.id, seed: quarry_placement::pg_of(KEEP, pool.pg_num) },
        epoch: map.epoch,
        name: KEEP.into(),
        snapc: SnapContext::default(),
        snap: SNAP_HEAD,
        ops: vec![ObjectOp::Read { off: 0, len: 0 }],
        reqid: None,
    }
}

fn refused_eagain(e: &WireError) -> bool {
    matches!(e, WireError::Refused(code, reason) if *code == ErrorCode::EAGAIN && reason.contains("too many connections"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Item 1: sessions of a read-only user until the process runs out of file descriptors.
/// The daemon raised its soft limit to the hard one, keeps the descriptors its own files need
/// (the WAL could not create a segment before, and the process aborted), refuses the
/// connections beyond with EAGAIN and logs that rate-limited; it serves and writes again once
/// the sessions go.
#[test]
fn descriptor_exhaustion_by_a_read_only_user_refuses_connections_not_the_daemon() {
    // No per-entity cap here: the descriptors are what runs out.
    let mut s = setup("ms_max_connections_per_entity = 100000\n", Some((256, 1024)));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.daemon.pid())).unwrap();
    let nofile = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let soft: u64 = nofile.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(soft, 1024, "the soft open-files limit was not raised: {nofile}");
    let rt = runtime();
    let started = Instant::now();
    let (held, refused) = rt.block_on(async {
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..1500 {
            match s.ro_mon().await {
                Ok(c) => held.push(c),
                Err(e) if refused_eagain(&e) => refused += 1,
                Err(e) => panic!("unexpected failure: {e}"),
            }
        }
        (held, refused)
    });
    assert!(refused > 0, "1500 sessions were all accepted with 1024 descriptors");
    s.alive();
    let open = std::fs::read_dir(format!("/proc/{}/fd", s.daemon.pid())).unwrap().count();
    let free = 1024usize.saturating_sub(open);
    assert!(
        free >= 128,
        "{} sessions held, {open} descriptors open: only {free} left for the WAL and store",
        held.len()
    );
    // The refusals were logged, rate-limited (one line per 10 s).
    let lines = s.daemon.logs().matches("connection refused").count();
    eprintln!("sessions held {}, refused {refused}, descriptors open {open}, free {free}, refusal log lines {lines}", held.len());
    let allowed = 2 + (started.elapsed().as_secs() / 10) as usize;
    assert!(lines <= allowed, "{refused} refusals logged in {lines} lines");
    rt.block_on(async { drop(held) });
    std::thread::sleep(Duration::from_millis(500));
    s.admin_reads_keep("after the sessions closed");
    // The WAL and store still work: a write goes through.
    let file = s.dir.join("new.in");
    std::fs::write(&file, b"after").unwrap();
    rados(&s.conf, &["-p", "rbd", "put", "new", file.to_str().unwrap()]).ok("put after");
    s.alive();
    s.daemon.terminate();
}

/// Item 2: idle authenticated sessions of one read-only user on the monitor and the OSD do
/// not lock out another user; beyond its cap the user gets EAGAIN; idle sessions are closed
/// after ms_tcp_read_timeout.
#[test]
fn one_users_idle_sessions_do_not_lock_out_another() {
    let limits =
        "ms_max_connections = 48\nms_max_connections_per_entity = 8\nms_tcp_read_timeout = 4\n";
    let mut s = setup(limits, None);
    let rt = runtime();
    let (mon_held, osd_held, refused) = rt.block_on(async {
        let first = s.ro_mon().await.unwrap();
        let (secret, map) = ticket_and_map(&first).await;
        let osd = osd_addr(&map);
        let (mut mon_held, mut osd_held, mut refused) = (vec![first], Vec::new(), 0);
        for _ in 0..60 {
            match s.ro_mon().await {
                Ok(c) => mon_held.push(c),
                Err(e) if refused_eagain(&e) => refused += 1,
                Err(e) => panic!("unexpected failure on the monitor: {e}"),
            }
            let ro = EntityName::client("ro");
            match quarry_wire::connect(osd, &ro, Service::Osd, &secret, T).await {
                Ok(c) => osd_held.push(c),
                Err(e) if refused_eagain(&e) => refused += 1,
                Err(e) => panic!("unexpected failure on the OSD: {e}"),
            }
        }
        (mon_held, osd_held, refused)
    });
    eprintln!(
        "client.ro holds {} + {} sessions, {refused} refused",
        mon_held.len(),
        osd_held.len()
    );
    assert_eq!((mon_held.len(), osd_held.len()), (8, 8), "the per-entity cap");
    assert_eq!(refused, 61 + 60 - 16, "every other attempt refused with EAGAIN");
    s.alive();
    s.admin_reads_keep("while client.ro holds its sessions");
    // client.ro itself, beyond its cap, is told why at once instead of hanging.
    let keyring = s.dir.join("ro.keyring");
    std::fs::write(&keyring, format!("[client.ro]\n\tkey = {}\n", s.ro_key.to_base64())).unwrap();
    let out = s.dir.join("ro.out");
    let args = ["--id", "ro", "-k", keyring.to_str().unwrap(), "-p", "rbd", "get", KEEP];
    let mut args = args.to_vec();
    args.push(out.to_str().unwrap());
    let started = Instant::now();
    let r = run_bounded(tool_cmd("rados", Some(&s.conf), &args), None, SERVED_WITHIN);
    eprintln!("client.ro over its cap: exit {} in {:?}: {}", r.code(), started.elapsed(), r.stderr);
    assert_ne!(r.code(), 0, "client.ro got a session beyond its cap");
    assert!(r.stderr.contains("Resource temporarily unavailable"), "{}", r.stderr);
    assert!(r.stderr.contains("too many connections from client.ro"), "{}", r.stderr);
    // Idle sessions are closed after ms_tcp_read_timeout (4 s).
    std::thread::sleep(Duration::from_secs(7));
    let open = mon_held.iter().chain(&osd_held).filter(|c| !c.client.is_closed()).count();
    assert_eq!(open, 0, "idle sessions still open after ms_tcp_read_timeout");
    rt.block_on(async {
        s.ro_mon().await.expect("client.ro connects again once its idle sessions are gone");
        drop((mon_held, osd_held));
    });
    s.alive();
    s.daemon.terminate();
}

/// Writes a frame header announcing `len` payload bytes on a raw authenticated session, then
/// `send` bytes of its body, and keeps the socket open (returned).
async fn announce(
    addr: SocketAddr,
    entity: &EntityName,
    service: Service,
    secret: &ClientSecret,
    len: u32,
    send: usize,
) -> tokio::net::TcpStream {
    let mut stream = raw_handshake(addr, entity, service, secret).await;
    let mut header = Vec::with_capacity(32);
    header.extend_from_slice(b"QRY1");
    header.extend_from_slice(&[quarry_wire::codec::FRAME_VERSION, 1, 0, 0]);
    header.extend_from_slice(&7u64.to_le_bytes());
    header.extend_from_slice(&len.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&1u64.to_le_bytes());
    stream.write_all(&header).await.unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = send;
    while left > 0 {
        let n = left.min(chunk.len());
        // A peer that stopped reading (the budget is full) stalls us: give up on the rest.
        match tokio::time::timeout(Duration::from_secs(2), stream.write_all(&chunk[..n])).await {
            Ok(Ok(())) => left -= n,
            _ => break,
        }
    }
    stream
}

/// The client side of the handshake on a raw socket (the frames `quarry_wire::connect`
/// sends), so the test can then write frames byte by byte.
async fn raw_handshake(
    addr: SocketAddr,
    entity: &EntityName,
    service: Service,
    secret: &ClientSecret,
) -> tokio::net::TcpStream {
    use quarry_wire::codec::{decode_frame, encode_frame, HANDSHAKE_PAYLOAD_MAX};
    use quarry_wire::{Hello, Message, Proof};
    use tokio::io::AsyncReadExt;
    async fn recv(stream: &mut tokio::net::TcpStream) -> Message {
        let mut header = [0u8; 32];
        stream.read_exact(&mut header).await.unwrap();
        let len = u32::from_le_bytes(header[16..20].try_into().unwrap()) as usize;
        let mut frame = header.to_vec();
        frame.resize(32 + len, 0);
        stream.read_exact(&mut frame[32..]).await.unwrap();
        decode_frame(&frame, HANDSHAKE_PAYLOAD_MAX, None, 0).unwrap().1
    }
    let (key, ticket) = match secret {
        ClientSecret::EntityKey(k) => (k.clone(), None),
        ClientSecret::Ticket { ticket, session_key } => {
            (session_key.to_vec(), Some(ticket.clone()))
        }
    };
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client_nonce = quarry_auth::random_nonce();
    let hello = Hello {
        protocol: quarry_wire::PROTOCOL_VERSION,
        service,
        entity: entity.clone(),
        client_nonce,
        ticket,
    };
    stream.write_all(&encode_frame(0, 0, &Message::Hello(hello), None).unwrap()).await.unwrap();
    let Message::Challenge(challenge) = recv(&mut stream).await else { panic!("no challenge") };
    let proof = quarry_auth::client_proof(&key, entity, &client_nonce, &challenge.server_nonce);
    let proof = Message::Proof(Proof { proof });
    stream.write_all(&encode_frame(0, 0, &proof, None).unwrap()).await.unwrap();
    let Message::Welcome(_) = recv(&mut stream).await else { panic!("not welcomed") };
    stream
}

/// Item 3a: frames announced large, with most of their body sent, on many connections to the
/// monitor and the OSD. A body is read only when the request budget has room (one at a time
/// here); a frame larger than the budget is skipped unread (EMSGSIZE). VmRSS stays under the
/// two budgets plus a margin (without the budget: every body in memory, about 430 MiB).
#[test]
fn huge_announced_frames_do_not_grow_the_daemons_beyond_their_budget() {
    let limits = "mon_client_bytes = 16M\nosd_client_message_size_cap = 32M\n";
    let mut s = setup(limits, None);
    let rt = runtime();
    let before = s.rss_kib();
    let held = rt.block_on(async {
        let ro = EntityName::client("ro");
        let first = s.ro_mon().await.unwrap();
        let (osd_secret, map) = ticket_and_map(&first).await;
        let osd = osd_addr(&map);
        let mon_secret = ClientSecret::EntityKey(s.ro_key.secret().to_vec());
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(announce(s.mon, &ro, Service::Mon, &mon_secret, 12 << 20, 11 << 20).await);
        }
        for _ in 0..2 {
            held.push(announce(s.mon, &ro, Service::Mon, &mon_secret, 128 << 20, 60 << 20).await);
        }
        for _ in 0..6 {
            held.push(announce(osd, &ro, Service::Osd, &osd_secret, 24 << 20, 22 << 20).await);
        }
        held
    });
    std::thread::sleep(Duration::from_secs(2));
    let grown_mib = s.rss_kib().saturating_sub(before) >> 10;
    eprintln!("VmRSS {before} KiB before, grown by {grown_mib} MiB");
    s.alive();
    assert!(
        grown_mib <= 16 + 32 + 40,
        "VmRSS grew by {grown_mib} MiB with budgets of 16 + 32 MiB (+40 MiB margin)"
    );
    s.admin_reads_keep("while the frames are held");
    drop(held);
    s.alive();
    s.daemon.terminate();
}

/// Item 3b: pipelined 4 MiB reads whose replies are never read (a proxy that holds them).
/// Room for each reply is reserved before the read runs, so the OSD stops reading the
/// connections once client.ro's share of ms_reply_queue_bytes is taken (without it: every
/// reply in memory, 160 x 4 MiB); after ms_tcp_read_timeout without progress it closes them.
#[test]
fn pipelined_reads_never_drained_do_not_grow_the_osd_beyond_its_budget() {
    let limits = "ms_reply_queue_bytes = 64M\nms_reply_queue_bytes_per_connection = 16M\nms_tcp_read_timeout = 8\n";
    let mut s = setup(limits, None);
    let rt = runtime();
    let before = s.rss_kib();
    let held = rt.block_on(async {
        let first = s.ro_mon().await.unwrap();
        let (secret, map) = ticket_and_map(&first).await;
        let proxy = quarry_testkit::Proxy::start(osd_addr(&map)).await.unwrap();
        let ro = EntityName::client("ro");
        let mut held = Vec::new();
        for _ in 0..4 {
            let c =
                quarry_wire::connect(proxy.addr(), &ro, Service::Osd, &secret, T).await.unwrap();
            // One read answered normally first: the session works and the object is there.
            match c.client.call(Request::Op(read_keep(&map))).await.unwrap() {
                Reply::Op(_) => {}
                other => panic!("read refused: {other:?}"),
            }
            held.push(c);
        }
        proxy.hold_replies();
        let mut pending = Vec::new();
        for c in &held {
            for _ in 0..40 {
                pending.push(c.client.send(Request::Op(read_keep(&map))).await.unwrap());
            }
        }
        drop(first);
        (held, pending, proxy)
    });
    std::thread::sleep(Duration::from_secs(4));
    let grown_mib = s.rss_kib().saturating_sub(before) >> 10;
    eprintln!("VmRSS {before} KiB before, grown by {grown_mib} MiB");
    s.alive();
    assert!(
        grown_mib <= 64 + 48,
        "VmRSS grew by {grown_mib} MiB with ms_reply_queue_bytes of 64 MiB (+48 MiB margin)"
    );
    s.admin_reads_keep("while client.ro's replies are held");
    // The OSD closes the four connections whose peer reads nothing (the proxy keeps its own
    // ends open, so only the daemon's descriptors tell): those with a reply pending after
    // ms_tcp_read_timeout (8 s), then those that were waiting for client.ro's reply room
    // (once they get it, their replies stall in turn).
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", s.daemon.pid())).unwrap().count();
    std::thread::sleep(Duration::from_secs(1)); // the admin's connections are gone
    let with_stalled = fds();
    let deadline = Instant::now() + Duration::from_secs(45);
    while fds() + 4 > with_stalled {
        assert!(
            Instant::now() < deadline,
            "the OSD kept the stalled connections: {} descriptors, {with_stalled} before",
            fds()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    rt.block_on(async { drop(held) });
    s.alive();
    s.daemon.terminate();
}
