//! Connecting the `ceph` and `rados` tools to a cluster: load ceph.conf (`-c`, `CEPH_CONF`,
//! the standard paths), build the client configuration from it and the common arguments, and
//! connect within `client_mount_timeout` (plus a small margin, so nothing ever hangs). Each
//! failure is reported the way the tool being imitated reports it. Problems in the conf
//! (misspelt keys, bad values) are printed once on stderr as `warning: FILE: line N: …`.

use std::time::Duration;

use crate::error::CliError;
use quarry_client::{ClientConfig, ClientError, Rados};
use quarry_conf::CommonArgs;

/// Which of Ceph's tools we are imitating (they word connection failures differently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// The python `ceph` CLI.
    Ceph,
    /// The C++ `rados` tool.
    Rados,
}

/// Margin over `client_mount_timeout` before we give up on a connection attempt ourselves.
const CONNECT_MARGIN: Duration = Duration::from_secs(5);

/// How long a tool connects in silence before it says where it is connecting to.
const CONNECT_NOTICE_AFTER: Duration = Duration::from_secs(1);

/// Loads the configuration and connects as the entity the arguments name; after
/// [`CONNECT_NOTICE_AFTER`] without a session it says on stderr which monitors it tries.
pub async fn connect(common: &CommonArgs, tool: Tool) -> Result<Rados, CliError> {
    let cfg = client_config(common, tool)?;
    let bound = cfg.connect_timeout + CONNECT_MARGIN;
    let mons: Vec<String> = cfg.mon_addrs.iter().map(ToString::to_string).collect();
    let timeout = cfg.connect_timeout;
    let connecting = tokio::time::timeout(bound, Rados::connect(cfg));
    tokio::pin!(connecting);
    // Silence for the usual sub-second connect; after a second, say what we wait for.
    let result = tokio::select! {
        result = &mut connecting => result,
        () = tokio::time::sleep(CONNECT_NOTICE_AFTER) => {
            eprintln!(
                "connecting to monitors at {} (client_mount_timeout {}s)...",
                mons.join(", "),
                timeout.as_secs()
            );
            connecting.await
        }
    };
    match result {
        Ok(Ok(rados)) => {
            print_wait_notices(&rados);
            Ok(rados)
        }
        Ok(Err(e)) => Err(connect_error(tool, &e, common)),
        Err(_) => Err(connect_error(tool, &ClientError::Timeout, common)),
    }
}

/// Prints on stderr why an op waits on a PG once it has waited a few seconds
/// ([`quarry_client::WAIT_NOTICE_AFTER`]): `waiting for PG 2.3: no OSD up`, once per PG, so
/// a command that hangs on a down PG says so instead of nothing (it keeps waiting, up to
/// `rados_osd_op_timeout` when set).
fn print_wait_notices(rados: &Rados) {
    let mut notices = rados.wait_notices();
    tokio::spawn(async move {
        let mut told = std::collections::BTreeSet::new();
        loop {
            match notices.recv().await {
                Ok(notice) => {
                    if told.insert(notice.pg) {
                        eprintln!("{notice}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// The client configuration from ceph.conf and the command line.
pub fn client_config(common: &CommonArgs, tool: Tool) -> Result<ClientConfig, CliError> {
    let (conf, _path) = common
        .load_conf()
        .map_err(|e| CliError::ConfLoad { detail: e.to_string(), ceph: tool == Tool::Ceph })?;
    warn_conf_problems(&conf);
    ClientConfig::from_conf(&conf, common).map_err(|e| connect_error(tool, &e, common))
}

/// Prints what [`quarry_conf::validate`] finds in the tool's conf (a misspelt key with the
/// option it resembles, a value of the wrong type) on stderr, once per process:
/// `warning: /etc/ceph/ceph.conf: line 5: unknown option 'rbd_cahce' in [client] (did you
/// mean 'rbd_cache'?)`. The tool goes on, as Ceph's tools load such files.
fn warn_conf_problems(conf: &quarry_conf::Conf) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let file = conf.path().map(|p| format!("{}: ", p.display())).unwrap_or_default();
        for warning in quarry_conf::validate(conf) {
            eprintln!("warning: {file}{warning}");
        }
    });
}

/// A failure to connect, worded as `tool` words it, with a hint when `--id` repeated the
/// entity type (`--id client.qemu`).
pub fn connect_error(tool: Tool, e: &ClientError, common: &CommonArgs) -> CliError {
    let code = e.errno();
    let mut detail = e.to_string();
    if let Some(hint) =
        quarry_conf::resolve_entity(common).ok().as_ref().and_then(quarry_conf::doubled_type_hint)
    {
        detail.push('\n');
        detail.push_str(&hint);
    }
    match tool {
        Tool::Ceph => CliError::CephConnect { code, detail },
        Tool::Rados => CliError::RadosConnect { code, detail },
    }
}
