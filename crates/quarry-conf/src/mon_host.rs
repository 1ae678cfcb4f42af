//! `mon_host` parsing: every form Ceph accepts. `127.0.0.1:6789`, `127.0.0.1` (port 6789),
//! `[v2:127.0.0.1:3300/0,v1:127.0.0.1:6789/0]` (one monitor's address vector), `v2:IP:PORT`,
//! `[::1]:6789`, bare IPv6 `::1`, host names, lists separated by commas, semicolons or spaces.
//! Host names are returned as names: resolving them is DNS, i.e. network I/O, not done here.

use std::net::{IpAddr, SocketAddr};

use crate::ConfError;

/// The monitor port when none is given (Ceph's msgr1 port).
pub const MON_PORT_DEFAULT: u16 = 6789;
/// The msgr2 port when `v2:` is given without a port.
pub const MON_PORT_V2_DEFAULT: u16 = 3300;

/// The protocol prefix of an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrProto {
    /// No prefix.
    Unspecified,
    /// `v1:` (Ceph's legacy messenger).
    V1,
    /// `v2:` (Ceph's msgr2).
    V2,
    /// `any:`.
    Any,
}

/// A host: an IP address, or a name still to be resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MonHostName {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name.
    Name(String),
}

/// One address of a monitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonAddr {
    /// Protocol prefix as written.
    pub proto: AddrProto,
    /// Host.
    pub host: MonHostName,
    /// Port (defaulted when not written).
    pub port: u16,
}

/// Parses `mon_host` into monitors, each with its addresses in the order written.
pub fn parse_mon_host_entries(text: &str) -> Result<Vec<Vec<MonAddr>>, ConfError> {
    let mut monitors = Vec::new();
    for token in split_top_level(text)? {
        monitors.push(parse_token(token)?);
    }
    if monitors.is_empty() {
        return Err(bad(text, "no monitor address"));
    }
    Ok(monitors)
}

/// Parses `mon_host` into socket addresses (every address of every monitor, in order,
/// duplicates dropped). A host name is an error naming it: resolve names with
/// [`parse_mon_host_entries`] and the resolver of your choice.
pub fn parse_mon_host(text: &str) -> Result<Vec<SocketAddr>, ConfError> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for addr in parse_mon_host_entries(text)?.into_iter().flatten() {
        let ip = match addr.host {
            MonHostName::Ip(ip) => ip,
            MonHostName::Name(name) => {
                return Err(ConfError::BadMonHost {
                    token: name,
                    reason: "host names need DNS resolution",
                })
            }
        };
        let socket = SocketAddr::new(ip, addr.port);
        if !out.contains(&socket) {
            out.push(socket);
        }
    }
    Ok(out)
}

fn bad(token: &str, reason: &'static str) -> ConfError {
    ConfError::BadMonHost { token: token.to_string(), reason }
}

/// Splits at commas, semicolons and whitespace outside brackets.
fn split_top_level(text: &str) -> Result<Vec<&str>, ConfError> {
    let mut tokens = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (at, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth < 0 {
                    return Err(bad(&text[start..], "unbalanced ']'"));
                }
            }
            ',' | ';' | ' ' | '\t' | '\n' if depth == 0 => {
                if at > start {
                    tokens.push(&text[start..at]);
                }
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(bad(&text[start..], "unbalanced '['"));
    }
    if text.len() > start {
        tokens.push(&text[start..]);
    }
    Ok(tokens)
}

/// One monitor: an address vector `[v2:...,v1:...]` or a single address.
fn parse_token(token: &str) -> Result<Vec<MonAddr>, ConfError> {
    if let Some(inner) = token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let is_vector =
            inner.contains(',') || ["v1:", "v2:", "any:"].iter().any(|p| inner.starts_with(p));
        if is_vector {
            let addrs = inner.split(',').map(str::trim).filter(|a| !a.is_empty());
            let parsed: Result<Vec<_>, _> = addrs.map(parse_single).collect();
            let parsed = parsed?;
            if parsed.is_empty() {
                return Err(bad(token, "empty address vector"));
            }
            return Ok(parsed);
        }
    }
    Ok(vec![parse_single(token)?])
}

/// `[proto:]host[:port][/nonce]`.
fn parse_single(token: &str) -> Result<MonAddr, ConfError> {
    let (proto, rest) = if let Some(r) = token.strip_prefix("v2:") {
        (AddrProto::V2, r)
    } else if let Some(r) = token.strip_prefix("v1:") {
        (AddrProto::V1, r)
    } else if let Some(r) = token.strip_prefix("any:") {
        (AddrProto::Any, r)
    } else {
        (AddrProto::Unspecified, token)
    };
    let rest = strip_nonce(token, rest)?;
    let default_port = if proto == AddrProto::V2 { MON_PORT_V2_DEFAULT } else { MON_PORT_DEFAULT };
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some(close) = bracketed.find(']') else { return Err(bad(token, "missing ']'")) };
        let ip: IpAddr =
            bracketed[..close].parse().map_err(|_| bad(token, "invalid IPv6 address"))?;
        let after = &bracketed[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => parse_port(token, p)?,
            None if after.is_empty() => default_port,
            None => return Err(bad(token, "unexpected text after ']'")),
        };
        (MonHostName::Ip(ip), port)
    } else if let Ok(ip) = rest.parse::<IpAddr>() {
        (MonHostName::Ip(ip), default_port)
    } else if let Some((host, port)) = rest.rsplit_once(':') {
        if host.contains(':') {
            return Err(bad(token, "IPv6 addresses with a port need brackets: [::1]:6789"));
        }
        (parse_host(token, host)?, parse_port(token, port)?)
    } else {
        (parse_host(token, rest)?, default_port)
    };
    Ok(MonAddr { proto, host, port })
}

/// Drops Ceph's `/nonce` suffix (digits).
fn strip_nonce<'a>(token: &str, rest: &'a str) -> Result<&'a str, ConfError> {
    match rest.rsplit_once('/') {
        Some((addr, nonce))
            if !rest.starts_with('[') || addr.ends_with(']') || addr.contains("]:") =>
        {
            if nonce.is_empty() || !nonce.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad(token, "the part after '/' must be a nonce (digits)"));
            }
            Ok(addr)
        }
        Some(_) => Err(bad(token, "invalid address")),
        None => Ok(rest),
    }
}

fn parse_port(token: &str, port: &str) -> Result<u16, ConfError> {
    match port.parse::<u16>() {
        Ok(0) => Err(bad(token, "port 0")),
        Ok(p) => Ok(p),
        Err(_) => Err(bad(token, "invalid port")),
    }
}

fn parse_host(token: &str, host: &str) -> Result<MonHostName, ConfError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(MonHostName::Ip(ip));
    }
    let looks_like_ipv4 = host.chars().all(|c| c.is_ascii_digit() || c == '.');
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if looks_like_ipv4 || !name_ok {
        return Err(bad(token, "not an IP address or host name"));
    }
    Ok(MonHostName::Name(host.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(text: &str) -> Vec<String> {
        parse_mon_host(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    #[test]
    fn every_ceph_form_parses() {
        assert_eq!(addrs("127.0.0.1:6789"), ["127.0.0.1:6789"]);
        assert_eq!(addrs("127.0.0.1"), ["127.0.0.1:6789"]);
        assert_eq!(
            addrs("[v2:127.0.0.1:3300/0,v1:127.0.0.1:6789/0]"),
            ["127.0.0.1:3300", "127.0.0.1:6789"]
        );
        assert_eq!(addrs("v2:10.0.0.1"), ["10.0.0.1:3300"]);
        assert_eq!(addrs("v1:10.0.0.1:6790/123"), ["10.0.0.1:6790"]);
        assert_eq!(addrs("[::1]:6789"), ["[::1]:6789"]);
        assert_eq!(addrs("[::1]"), ["[::1]:6789"]);
        assert_eq!(addrs("::1"), ["[::1]:6789"]);
        assert_eq!(addrs("fe80::1"), ["[fe80::1]:6789"]);
        assert_eq!(addrs("[v2:[::1]:3300/0,v1:[::1]:6789/0]"), ["[::1]:3300", "[::1]:6789"]);
        assert_eq!(
            addrs("10.0.0.1:6789, 10.0.0.2:6789;10.0.0.3 10.0.0.4:7000"),
            ["10.0.0.1:6789", "10.0.0.2:6789", "10.0.0.3:6789", "10.0.0.4:7000"]
        );
        assert_eq!(
            addrs("[v2:10.0.0.1:3300,v1:10.0.0.1:6789],[v2:10.0.0.2:3300,v1:10.0.0.2:6789]"),
            ["10.0.0.1:3300", "10.0.0.1:6789", "10.0.0.2:3300", "10.0.0.2:6789"]
        );
        assert_eq!(addrs("10.0.0.1, 10.0.0.1"), ["10.0.0.1:6789"], "duplicates dropped");
    }

    #[test]
    fn monitors_keep_their_address_vectors_and_names() {
        let mons =
            parse_mon_host_entries("[v2:1.2.3.4:3300/0,v1:1.2.3.4:6789/0] mon2.example.com:6790")
                .unwrap();
        assert_eq!(mons.len(), 2);
        assert_eq!(mons[0].len(), 2);
        assert_eq!(mons[0][0].proto, AddrProto::V2);
        assert_eq!(mons[0][1].proto, AddrProto::V1);
        assert_eq!(
            mons[1],
            [MonAddr {
                proto: AddrProto::Unspecified,
                host: MonHostName::Name("mon2.example.com".into()),
                port: 6790
            }]
        );
        let err = parse_mon_host("mon2.example.com").unwrap_err();
        assert!(
            matches!(&err, ConfError::BadMonHost { token, .. } if token == "mon2.example.com"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_bad_token() {
        for (text, token) in [
            ("", ""),
            (" , ", " , "),
            ("127.0.0.1:99999", "127.0.0.1:99999"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("10.0.0.1:6789, 300.1.1.1", "300.1.1.1"),
            ("127.0.0.1:abc", "127.0.0.1:abc"),
            ("[v2:127.0.0.1:3300/0,v1:127.0.0.1:x/0]", "v1:127.0.0.1:x/0"),
            ("[v2:127.0.0.1:3300", "[v2:127.0.0.1:3300"),
            ("[::1", "[::1"),
            ("[::zz]:6789", "[::zz]:6789"),
            ("::1:6789:", "::1:6789:"),
            ("1.2.3.4/x", "1.2.3.4/x"),
            ("bad_host!:6789", "bad_host!:6789"),
            ("[]", "[]"),
        ] {
            let err = parse_mon_host(text).unwrap_err();
            let ConfError::BadMonHost { token: got, reason } = &err else {
                panic!("{text}: {err:?}")
            };
            assert_eq!(got, token, "{text}: {reason}");
            assert!(err.to_string().contains(token), "{err}");
        }
    }
}
