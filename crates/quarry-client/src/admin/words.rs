//! The `ceph` tool's grammar: command words (`osd pool create rbd 32`) and flags to a monitor
//! command request, as Ceph's python CLI turns its words into JSON before sending them. Only
//! the shape is decided here (which words are the prefix, which argument each other word
//! fills); [`super::CephCommand::from_request`] checks the values.

use serde_json::{json, Map, Value};

use super::AdminError;

/// The `ceph` tool's flags that become command arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WordFlags {
    /// `-s` / `--status`.
    pub status: bool,
    /// `--size N` (`osd pool create`).
    pub size: Option<u32>,
    /// `--yes-i-really-really-mean-it`.
    pub really_really: bool,
    /// `-i FILE` was given: the file is the command's input buffer.
    pub has_input: bool,
    /// `-f FORMAT`, as given.
    pub format: Option<String>,
}

/// Turns the `ceph` tool's words and flags into a monitor command request.
pub fn request_from_words(
    words: &[String],
    flags: &WordFlags,
) -> Result<Map<String, Value>, AdminError> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let invalid = || AdminError::InvalidCommand { words: words.to_vec() };
    let mut req = Map::new();
    let mut put = |k: &str, v: Value| {
        req.insert(k.to_string(), v);
    };
    if let Some(format) = &flags.format {
        put("format", json!(format));
    }
    if flags.status {
        if !(w.is_empty() || w == ["status"]) {
            return Err(invalid());
        }
        put("prefix", json!("status"));
        return Ok(req);
    }
    if let Some(ops) = super::ops::request_from_words(&w) {
        req.extend(ops);
        return Ok(req);
    }
    let prefix: String = match w.as_slice() {
        [] => return Err(AdminError::NoCommand),
        ["status" | "s"] | ["df"] | ["fsid"] | ["version" | "versions"] => w[0].to_string(),
        ["health"] => "health".into(),
        ["health", "detail"] => {
            put("detail", json!("detail"));
            "health".into()
        }
        ["osd", "ls" | "tree" | "stat" | "dump" | "lspools"] | ["mon", "dump" | "stat"] => {
            w.join(" ")
        }
        ["pg", "stat"] | ["pg", "ls"] | ["quorum_status"] | ["osd", "crush", "tree"] => w.join(" "),
        ["pg", pgid, "query"] => {
            put("pgid", json!(pgid));
            "pg query".into()
        }
        ["pg", "dump", "pgs_brief"] => {
            put("dumpcontents", json!(["pgs_brief"]));
            "pg dump".into()
        }
        ["osd", "df"] => "osd df".into(),
        ["osd", "df", "tree"] => {
            put("output_method", json!("tree"));
            "osd df".into()
        }
        ["df", "detail"] => {
            put("detail", json!("detail"));
            "df".into()
        }
        ["osd", "pool", "get", pool, key] => {
            put("pool", json!(pool));
            put("var", json!(key));
            "osd pool get".into()
        }
        ["osd", "pool", "set", pool, key, rest @ ..] => {
            put("pool", json!(pool));
            put("var", json!(key));
            put("val", json!(rest.join(" ")));
            "osd pool set".into()
        }
        ["osd", "pool", "ls" | "list"] => "osd pool ls".into(),
        ["osd", "pool", "ls" | "list", "detail"] => {
            put("detail", json!("detail"));
            "osd pool ls".into()
        }
        ["osd", "pool", "create", name, rest @ ..] => {
            put("pool", json!(name));
            let mut numbers = 0;
            for word in rest {
                match *word {
                    "replicated" | "erasure" => put("pool_type", json!(word)),
                    n if n.chars().all(|c| c.is_ascii_digit()) && numbers < 2 => {
                        put(if numbers == 0 { "pg_num" } else { "pgp_num" }, json!(n));
                        numbers += 1;
                    }
                    other => {
                        return Err(AdminError::Failed {
                            code: quarry_types::ErrorCode::EINVAL,
                            message: format!("unexpected argument '{other}' to osd pool create"),
                        })
                    }
                }
            }
            if let Some(size) = flags.size {
                put("size", json!(size));
            }
            "osd pool create".into()
        }
        ["osd", "pool", "rm" | "delete", name, again @ ..] if again.len() <= 1 => {
            put("pool", json!(name));
            if let Some(again) = again.first() {
                put("pool2", json!(again));
            }
            if flags.really_really {
                put("yes_i_really_really_mean_it", json!(true));
            }
            "osd pool rm".into()
        }
        ["osd", "pool", "application", "enable", pool, app] => {
            put("pool", json!(pool));
            put("app", json!(app));
            "osd pool application enable".into()
        }
        ["osd", "pool", "application", "get", pool] => {
            put("pool", json!(pool));
            "osd pool application get".into()
        }
        ["osd", "pool", "get-quota", pool] => {
            put("pool", json!(pool));
            "osd pool get-quota".into()
        }
        ["osd", "pool", "set-quota", pool, field, value] => {
            put("pool", json!(pool));
            put("field", json!(field));
            put("val", json!(value));
            "osd pool set-quota".into()
        }
        ["osd", "pool", verb @ ("mksnap" | "rmsnap"), pool, snap] => {
            put("pool", json!(pool));
            put("snap", json!(snap));
            format!("osd pool {verb}")
        }
        ["osd", "blocklist" | "blacklist", "add", instance, rest @ ..] if rest.len() <= 1 => {
            put("blocklistop", json!("add"));
            put("addr", json!(instance));
            if let Some(secs) = rest.first() {
                put("expire", json!(secs));
            }
            "osd blocklist".into()
        }
        ["osd", "blocklist" | "blacklist", "rm", entry] => {
            put("blocklistop", json!("rm"));
            put("addr", json!(entry));
            "osd blocklist".into()
        }
        ["osd", "blocklist" | "blacklist", "ls"] => {
            put("blocklistop", json!("ls"));
            "osd blocklist".into()
        }
        ["auth", verb @ ("get-or-create" | "get-or-create-key" | "add" | "caps"), entity, caps @ ..] =>
        {
            put("entity", json!(entity));
            if !(caps.is_empty() && *verb == "add" && flags.has_input) {
                put("caps", json!(caps));
            }
            format!("auth {verb}")
        }
        ["auth", verb @ ("get" | "export" | "get-key" | "print-key" | "print_key" | "del" | "rm"), entity] =>
        {
            put("entity", json!(entity));
            format!("auth {verb}")
        }
        ["auth", "ls" | "list"] => "auth ls".into(),
        ["auth", "import"] => "auth import".into(),
        _ => return Err(invalid()),
    };
    req.insert("prefix".into(), json!(prefix));
    Ok(req)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{CephCommand, Format};
    use super::*;

    fn parse(line: &[&str], flags: WordFlags) -> Result<CephCommand, AdminError> {
        let words: Vec<String> = line.iter().map(|s| s.to_string()).collect();
        let req = request_from_words(&words, &flags)?;
        CephCommand::from_request(&req, flags.has_input).map(|(cmd, _)| cmd)
    }

    fn words(line: &[&str]) -> Result<CephCommand, AdminError> {
        parse(line, WordFlags::default())
    }

    fn code(e: AdminError) -> i32 {
        match e {
            AdminError::Failed { code, .. } => code.0,
            AdminError::InvalidCommand { .. } | AdminError::NoCommand => -22,
            AdminError::UnknownCommand { .. } => -1,
        }
    }

    #[test]
    fn status_and_health() {
        assert_eq!(words(&["status"]).unwrap(), CephCommand::Status);
        assert_eq!(
            parse(&[], WordFlags { status: true, ..Default::default() }).unwrap(),
            CephCommand::Status
        );
        assert_eq!(words(&["health", "detail"]).unwrap(), CephCommand::Health { detail: true });
        assert_eq!(words(&["versions"]).unwrap(), CephCommand::Versions);
        let flags = WordFlags { status: true, ..Default::default() };
        assert_eq!(code(parse(&["df"], flags).unwrap_err()), -22);
        let flags = WordFlags { format: Some("json-pretty".into()), ..Default::default() };
        let req = request_from_words(&["df".into()], &flags).unwrap();
        assert_eq!(
            CephCommand::from_request(&req, false).unwrap(),
            (CephCommand::Df, Format::JsonPretty)
        );
    }

    #[test]
    fn pool_commands() {
        assert_eq!(
            words(&["osd", "pool", "create", "rbdpool", "64", "64", "replicated"]).unwrap(),
            CephCommand::PoolCreate { name: "rbdpool".into(), pg_num: Some(64), size: None }
        );
        let flags = WordFlags { size: Some(2), ..Default::default() };
        assert_eq!(
            parse(&["osd", "pool", "create", "p"], flags).unwrap(),
            CephCommand::PoolCreate { name: "p".into(), pg_num: None, size: Some(2) }
        );
        let flags = WordFlags { really_really: true, ..Default::default() };
        assert_eq!(
            parse(&["osd", "pool", "rm", "p", "p"], flags).unwrap(),
            CephCommand::PoolRm { name: "p".into(), again: Some("p".into()), sure: true }
        );
        assert_eq!(
            words(&["osd", "pool", "rm", "p"]).unwrap(),
            CephCommand::PoolRm { name: "p".into(), again: None, sure: false }
        );
        assert_eq!(
            words(&["osd", "pool", "ls", "detail"]).unwrap(),
            CephCommand::PoolLs { detail: true }
        );
        assert_eq!(words(&["osd", "lspools"]).unwrap(), CephCommand::PoolLs { detail: false });
        assert_eq!(
            words(&["osd", "pool", "application", "enable", "p", "rbd"]).unwrap(),
            CephCommand::PoolApplicationEnable { pool: "p".into(), app: "rbd".into() }
        );
        assert_eq!(
            words(&["osd", "pool", "get", "rbd", "size"]).unwrap(),
            CephCommand::PoolGet { pool: "rbd".into(), key: "size".into() }
        );
        assert_eq!(code(words(&["osd", "pool", "get", "rbd", "color"]).unwrap_err()), 22);
        assert_eq!(words(&["osd", "dump"]).unwrap(), CephCommand::OsdDump);
        assert_eq!(code(words(&["osd", "pool", "create", "p", "erasure"]).unwrap_err()), 95);
        assert_eq!(code(words(&["osd", "pool", "create", "p", "bogus"]).unwrap_err()), 22);
        assert_eq!(code(words(&["osd", "pool", "create", "p", "0"]).unwrap_err()), 34);
        assert_eq!(
            words(&["osd", "blocklist", "add", "client.x@7", "1.5"]).unwrap(),
            CephCommand::BlocklistAdd { instance: "client.x@7".into(), expire_secs: 1 }
        );
        assert_eq!(
            words(&["osd", "blacklist", "add", "client.x@7"]).unwrap(),
            CephCommand::BlocklistAdd { instance: "client.x@7".into(), expire_secs: 3600 }
        );
        assert_eq!(
            words(&["osd", "blocklist", "rm", "10.0.0.1:0/7"]).unwrap(),
            CephCommand::BlocklistRm { entry: "10.0.0.1:0/7".into() }
        );
        assert_eq!(words(&["osd", "blocklist", "ls"]).unwrap(), CephCommand::BlocklistLs);
    }

    #[test]
    fn auth_commands_take_caps_pairs() {
        let cmd = words(&[
            "auth",
            "get-or-create",
            "client.qemu",
            "mon",
            "profile rbd",
            "osd",
            "profile rbd pool=rbdpool",
        ])
        .unwrap();
        assert_eq!(
            cmd,
            CephCommand::AuthGetOrCreate {
                entity: "client.qemu".into(),
                caps: BTreeMap::from([
                    ("mon".into(), "profile rbd".into()),
                    ("osd".into(), "profile rbd pool=rbdpool".into())
                ]),
                key_only: false,
            }
        );
        assert_eq!(code(words(&["auth", "get-or-create", "client.qemu", "mon"]).unwrap_err()), 22);
        match words(&["auth", "get", "qemu"]).unwrap_err() {
            AdminError::Failed { message, .. } => {
                assert!(message.starts_with("bad entity name"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            words(&["auth", "del", "client.qemu"]).unwrap(),
            CephCommand::AuthDel { entity: "client.qemu".into() }
        );
        let input = WordFlags { has_input: true, ..Default::default() };
        assert_eq!(parse(&["auth", "import"], input.clone()).unwrap(), CephCommand::AuthImport);
        assert_eq!(parse(&["auth", "add", "client.q"], input).unwrap(), CephCommand::AuthImport);
        assert_eq!(code(words(&["auth", "import"]).unwrap_err()), 22);
        assert_eq!(words(&["auth", "ls"]).unwrap(), CephCommand::AuthLs);
    }

    #[test]
    fn unknown_commands_are_invalid() {
        assert!(matches!(words(&["osd", "frobnicate"]), Err(AdminError::InvalidCommand { .. })));
        assert!(matches!(words(&[]), Err(AdminError::NoCommand)));
    }
}
