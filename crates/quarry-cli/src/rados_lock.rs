//! `rados lock list|info|get|break`: advisory locks on an object (the `lock` class, Ceph's
//! `cls_lock`), with the options and output of Ceph's `rados` (`--lock-cookie`, `--lock-tag`,
//! `--lock-description`, `--lock-duration`, `--lock-type shared|exclusive`; JSON answers,
//! compact by default, `-f json-pretty` indented; errors `ERROR: failed locking: (16) Device
//! or resource busy` then `error 16: …`, exit 1).

use serde::Serialize;

use quarry_client::admin::{self, Format};
use quarry_client::IoCtx;
use quarry_cls::lock::{self, BreakLockRequest, LockRequest, LockType};
use quarry_types::{ErrorCode, OpOutput};

use crate::error::CliError;
use crate::output;

/// One `rados lock` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockCommand {
    /// `lock list OBJ`.
    List {
        /// Object.
        obj: String,
    },
    /// `lock info OBJ NAME`.
    Info {
        /// Object.
        obj: String,
        /// Lock name.
        name: String,
    },
    /// `lock get OBJ NAME`: take the lock.
    Get {
        /// Object.
        obj: String,
        /// Lock name.
        name: String,
        /// Options.
        opts: LockOptions,
    },
    /// `lock break OBJ NAME LOCKER`: release another client's hold.
    Break {
        /// Object.
        obj: String,
        /// Lock name.
        name: String,
        /// The holder (`client.4123`).
        locker: String,
        /// Its cookie (`--lock-cookie`).
        cookie: String,
    },
}

/// The `--lock-*` options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockOptions {
    /// `--lock-cookie`.
    pub cookie: String,
    /// `--lock-tag`.
    pub tag: String,
    /// `--lock-description`.
    pub description: String,
    /// `--lock-duration` in seconds (0: no expiry).
    pub duration_secs: u64,
    /// `--lock-type shared` (default exclusive).
    pub shared: bool,
}

/// The synopsis printed for wrong arguments.
pub const SYNOPSIS: &str = "lock list <obj-name> | lock get <obj-name> <lock-name> \
[--lock-cookie C] [--lock-tag T] [--lock-description D] [--lock-duration SECS] \
[--lock-type shared|exclusive] | lock break <obj-name> <lock-name> <locker-name> \
[--lock-cookie C] | lock info <obj-name> <lock-name>";

fn invalid(message: String) -> CliError {
    CliError::rados_op(format!("{message}\nerror 22"), ErrorCode::EINVAL)
}

/// Parses `lock SUB OBJ …` (`words` start after `lock`), with the option values as given.
pub fn parse(
    words: &[&str],
    cookie: Option<&str>,
    tag: Option<&str>,
    description: Option<&str>,
    duration: Option<&str>,
    kind: Option<&str>,
) -> Result<LockCommand, CliError> {
    let usage = || CliError::Usage {
        message: format!(
            "rados lock: wrong arguments '{}'\nusage: rados -p POOL {SYNOPSIS}",
            words.join(" ")
        ),
        status: 1,
    };
    let s = |x: &&str| x.to_string();
    let cmd = match words {
        ["list", obj] => LockCommand::List { obj: s(obj) },
        ["info", obj, name] => LockCommand::Info { obj: s(obj), name: s(name) },
        ["get", obj, name] => {
            let duration_secs = match duration {
                None => 0,
                Some(text) => text.trim().parse::<u64>().map_err(|_| {
                    invalid(format!(
                        "Invalid value for lock-duration: expected a number of seconds, got '{text}'"
                    ))
                })?,
            };
            let shared = match kind {
                None | Some("exclusive") => false,
                Some("shared") => true,
                Some(_) => return Err(invalid("unknown lock type was specified, aborting".into())),
            };
            let opts = LockOptions {
                cookie: cookie.unwrap_or_default().to_string(),
                tag: tag.unwrap_or_default().to_string(),
                description: description.unwrap_or_default().to_string(),
                duration_secs,
                shared,
            };
            LockCommand::Get { obj: s(obj), name: s(name), opts }
        }
        ["break", obj, name, locker] => {
            if !valid_locker(locker) {
                return Err(invalid(format!("ERROR: failed to parse locker name ({locker})")));
            }
            LockCommand::Break {
                obj: s(obj),
                name: s(name),
                locker: s(locker),
                cookie: cookie.unwrap_or_default().to_string(),
            }
        }
        _ => return Err(usage()),
    };
    Ok(cmd)
}

/// Ceph's `entity_name_t`: `client.4123`, `osd.0`, `mon.1`, `mds.2`, `mgr.3`.
fn valid_locker(text: &str) -> bool {
    match text.split_once('.') {
        Some((kind, num)) => {
            ["client", "osd", "mon", "mds", "mgr"].contains(&kind)
                && !num.is_empty()
                && num.parse::<u64>().is_ok()
        }
        None => false,
    }
}

fn failed(what: &str, code: ErrorCode) -> CliError {
    CliError::rados_op(format!("ERROR: {what}: {code}\nerror {}", code.0), code)
}

/// `lock list`'s answer, fields in Ceph's order.
#[derive(Serialize)]
struct LockList<'a> {
    objname: &'a str,
    locks: Vec<LockName<'a>>,
}

#[derive(Serialize)]
struct LockName<'a> {
    name: &'a str,
}

/// `lock info`'s answer, fields in Ceph's order.
#[derive(Serialize)]
struct LockInfoOut<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    tag: &'a str,
    lockers: Vec<LockerOut<'a>>,
}

#[derive(Serialize)]
struct LockerOut<'a> {
    name: &'a str,
    cookie: &'a str,
    description: &'a str,
    expiration: String,
    addr: &'a str,
}

fn show(value: &impl Serialize, fmt: Format) -> Result<(), CliError> {
    // Ceph's formatter flushes compact JSON without a newline, indented JSON (four spaces)
    // with one.
    let mut text = Vec::new();
    let written = match fmt {
        Format::JsonPretty => {
            let style = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut text, style);
            value.serialize(&mut ser).map(|()| text.push(b'\n'))
        }
        Format::Json | Format::Plain => serde_json::to_writer(&mut text, value),
    };
    written.map_err(|_| CliError::rados_op("error formatting the answer", ErrorCode::EINVAL))?;
    output::stdout_bytes(&text).map_err(|e| CliError::io("<stdout>", e))
}

/// Runs a lock command on `io` (`fmt` Plain means no `--format`: compact JSON).
pub async fn run(io: &IoCtx, cmd: LockCommand, fmt: Format) -> Result<(), CliError> {
    match cmd {
        LockCommand::List { obj } => {
            let out = io.exec(&obj, vec![lock::list_locks_op()]).await;
            let names = match out.map(|mut o| o.pop()) {
                Ok(Some(OpOutput::Returned(bytes))) => {
                    lock::decode_names(&bytes).map_err(|code| failed("rados_list_locks()", code))?
                }
                Ok(_) => return Err(failed("rados_list_locks()", ErrorCode::EPROTO)),
                Err(e) => return Err(failed("rados_list_locks()", e.errno())),
            };
            let locks = names.iter().map(|name| LockName { name }).collect();
            show(&LockList { objname: &obj, locks }, fmt)
        }
        LockCommand::Info { obj, name } => {
            let what = "rados_lock_get_lock_info()";
            let out = io.exec(&obj, vec![lock::get_info_op(&name)]).await;
            let info = match out.map(|mut o| o.pop()) {
                Ok(Some(OpOutput::Returned(bytes))) => {
                    lock::decode_info(&bytes).map_err(|code| failed(what, code))?
                }
                Ok(_) => return Err(failed(what, ErrorCode::EPROTO)),
                Err(e) => return Err(failed(what, e.errno())),
            };
            let kind = match info.lock_type {
                None => "none",
                Some(LockType::Exclusive) => "exclusive",
                Some(LockType::Shared) => "shared",
            };
            let lockers = info
                .lockers
                .iter()
                .map(|l| LockerOut {
                    name: &l.locker,
                    cookie: &l.cookie,
                    description: &l.description,
                    expiration: match l.expiration {
                        None => "0.000000".to_string(),
                        Some((sec, nsec)) => admin::plain::utime(sec, nsec),
                    },
                    addr: &l.addr,
                })
                .collect();
            show(&LockInfoOut { name: &name, kind, tag: &info.tag, lockers }, fmt)
        }
        LockCommand::Get { obj, name, opts } => {
            let req = LockRequest {
                name,
                lock_type: if opts.shared { LockType::Shared } else { LockType::Exclusive },
                cookie: opts.cookie,
                tag: opts.tag,
                description: opts.description,
                duration_secs: opts.duration_secs,
                may_renew: false,
                must_renew: false,
            };
            io.exec(&obj, vec![lock::lock_op(&req)])
                .await
                .map_err(|e| failed("failed locking", e.errno()))?;
            Ok(())
        }
        LockCommand::Break { obj, name, locker, cookie } => {
            let req = BreakLockRequest { name, locker, cookie };
            io.exec(&obj, vec![lock::break_lock_op(&req)])
                .await
                .map_err(|e| failed("failed breaking lock", e.errno()))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ceph_forms() {
        let get = parse(&["get", "o", "l"], Some("c"), None, None, Some("60"), Some("shared"));
        match get.unwrap() {
            LockCommand::Get { opts, .. } => {
                assert_eq!(opts.cookie, "c");
                assert_eq!(opts.duration_secs, 60);
                assert!(opts.shared);
            }
            other => panic!("{other:?}"),
        }
        let e = parse(&["get", "o", "l"], None, None, None, None, Some("weird")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown lock type was specified, aborting\nerror 22: (22) Invalid argument"
        );
        let e = parse(&["break", "o", "l", "bogus"], None, None, None, None, None).unwrap_err();
        assert!(e.to_string().starts_with("ERROR: failed to parse locker name (bogus)"), "{e}");
        assert!(parse(&["break", "o", "l", "client.4"], None, None, None, None, None).is_ok());
        assert_eq!(
            parse(&["set", "o", "l"], None, None, None, None, None).unwrap_err().status(),
            1
        );
        assert_eq!(parse(&["info", "o"], None, None, None, None, None).unwrap_err().status(), 1);
    }
}
