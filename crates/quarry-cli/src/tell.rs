//! `ceph tell TARGET COMMAND…`: an admin command sent to daemons themselves rather than to
//! the monitor's command table. Targets: `osd.N`, `osd.*` (every OSD up), `mon.*` or
//! `mon.NAME` (the monitor). The daemon's answer is printed as Ceph's tool prints it: the
//! JSON on stdout (prefixed `osd.N: ` when several daemons answer), status lines on stderr,
//! refusals as `Error EACCES: problem getting command descriptions from osd.0` with the
//! errno as exit status.

use quarry_client::{ClientError, Rados};
use quarry_types::{ErrorCode, OsdId};

use crate::ceph::CephArgs;
use crate::error::CliError;
use crate::output;
use crate::session::{self, Tool};

/// Which daemons a tell goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Osd(OsdId),
    AllOsds,
    Mon,
}

fn parse_target(text: &str) -> Result<Target, CliError> {
    let invalid = || {
        CliError::command(
            ErrorCode::EINVAL,
            format!("invalid target '{text}': osd.N, osd.*, mon.* or mon.NAME"),
        )
    };
    match text.split_once('.') {
        Some(("osd", "*")) => Ok(Target::AllOsds),
        Some(("osd", id)) => id.parse::<OsdId>().map(Target::Osd).map_err(|_| invalid()),
        Some(("mon", name)) if !name.is_empty() => Ok(Target::Mon),
        _ => Err(invalid()),
    }
}

fn failed(e: ClientError) -> CliError {
    match e {
        ClientError::Failed { code, message } => CliError::command(code, message),
        other => CliError::command(other.errno(), other.to_string()),
    }
}

/// Runs `ceph tell …` (`args.words[0]` is `tell`).
pub async fn run(args: &CephArgs) -> Result<(), CliError> {
    let words = &args.words[1..];
    let Some((target, command)) = words.split_first() else {
        return Err(CliError::command(
            ErrorCode::EINVAL,
            "invalid command: missing required parameter target(<name (type.id)>)",
        ));
    };
    let target = parse_target(target)?;
    if command.is_empty() {
        return Err(CliError::command(ErrorCode::EINVAL, "invalid command: no command to send"));
    }
    let rados = session::connect(&args.common, Tool::Ceph).await?;
    let result = tell(&rados, target, command.to_vec()).await;
    rados.shutdown().await;
    result
}

async fn tell(rados: &Rados, target: Target, command: Vec<String>) -> Result<(), CliError> {
    let osds: Vec<OsdId> = match target {
        Target::Mon => {
            let (out, status) = rados.tell_mon(command).await.map_err(failed)?;
            return show(None, &out, &status);
        }
        Target::Osd(id) => {
            let (out, status) = rados.tell_osd(id, command).await.map_err(failed)?;
            return show(None, &out, &status);
        }
        Target::AllOsds => rados.map().osds.values().filter(|o| o.up).map(|o| o.id).collect(),
    };
    if let [id] = osds.as_slice() {
        // One daemon answers as a named one does (no prefix), as in Ceph.
        let (out, status) = rados.tell_osd(*id, command).await.map_err(failed)?;
        return show(None, &out, &status);
    }
    // Several daemons: each answer is prefixed with its name, a failure is reported and the
    // others still asked; the exit status is the first failure's.
    let mut first_failure = None;
    for id in osds {
        match rados.tell_osd(id, command.clone()).await {
            Ok((out, status)) => show(Some(&format!("osd.{id}")), &out, &status)?,
            Err(e) => {
                let e = failed(e);
                eprintln!("osd.{id}: {e}");
                first_failure.get_or_insert(e);
            }
        }
    }
    match first_failure {
        Some(CliError::Command { code, .. }) => {
            Err(CliError::Reported { status: u8::try_from(code.0).unwrap_or(1).max(1) })
        }
        Some(other) => Err(other),
        None => Ok(()),
    }
}

fn show(name: Option<&str>, out: &str, status: &str) -> Result<(), CliError> {
    if !status.is_empty() {
        eprint!("{status}");
    }
    let text = match name {
        Some(name) => format!("{name}: {out}\n"),
        None => format!("{out}\n"),
    };
    output::stdout_bytes(text.as_bytes()).map_err(|e| CliError::io("<stdout>", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("osd.3").unwrap(), Target::Osd(3));
        assert_eq!(parse_target("osd.*").unwrap(), Target::AllOsds);
        assert_eq!(parse_target("mon.*").unwrap(), Target::Mon);
        assert_eq!(parse_target("mon.a").unwrap(), Target::Mon);
        let e = parse_target("osd.x").unwrap_err();
        assert_eq!(e.status(), 22);
        assert!(parse_target("mds.0").is_err());
    }
}
