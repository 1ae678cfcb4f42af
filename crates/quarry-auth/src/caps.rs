//! Capabilities: Ceph's `mon` and `osd` cap strings, parsed into grants and evaluated.
//!
//! Grammar (Ceph's, minus what Quarry cannot enforce): a cap string is a list of grants
//! separated by `,` or `;`. An OSD grant is `allow SPEC [MATCH]`, `allow MATCH SPEC` or
//! `profile NAME [pool[=]P [namespace[=]N]]`, where SPEC is `*`/`all`, `r`, `w`, `x` in that
//! order (`rw`, `rx`, `rwx`, ...) and/or `class-read`/`class-write`, and MATCH is
//! `[pool[=]P] [namespace[=]N] [object_prefix O]` (a namespace ending in `*` is a prefix). A mon
//! grant is `allow *`, `allow rwx` (any subset in order), `allow service NAME rwx`, or
//! `[allow] profile NAME`. Names may be quoted. Refused with [`AuthError::InvalidCap`] naming the
//! token: unknown words or profiles, and the valid Ceph forms Quarry does not enforce
//! (`allow class NAME`, `tag`, `network`, `auid`, `allow command`), so a cap never silently
//! grants more or less than it says.

use std::collections::BTreeMap;

use crate::AuthError;

/// What an op vector needs on a pool. Check the union of the vector's ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct OsdAccess {
    /// Reads data, xattrs or omap, lists, or calls a read-only server-side method.
    pub read: bool,
    /// Mutates the object (plain writes or mutating server-side methods).
    pub write: bool,
    /// Calls a server-side method that mutates (Ceph's `x` / `class-write`).
    pub exec: bool,
}

impl OsdAccess {
    /// Read only.
    pub const READ: OsdAccess = OsdAccess { read: true, write: false, exec: false };
    /// Write only (e.g. `writefull` without reads).
    pub const WRITE: OsdAccess = OsdAccess { read: false, write: true, exec: false };
    /// Read and write.
    pub const READ_WRITE: OsdAccess = OsdAccess { read: true, write: true, exec: false };
    /// A mutating server-side method call (it also reads and writes).
    pub const READ_WRITE_EXEC: OsdAccess = OsdAccess { read: true, write: true, exec: true };
}

/// What a request to the monitor needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MonAccess {
    /// Fetch maps, `ceph -s`, `osd pool ls`, subscribe to map updates.
    Read,
    /// Create and delete pools, set pool applications and options.
    PoolAdmin,
    /// `ceph auth get-or-create|get|del|caps|ls|import`.
    AuthAdmin,
    /// An OSD daemon: boot, report liveness, fetch service keys. The monitor must also check
    /// that the entity is `osd.N` with the N it claims (Ceph hands service keys by type).
    OsdDaemon,
    /// Add blocklist entries (librbd blocklists a dead exclusive-lock holder).
    Blocklist,
}

impl MonAccess {
    /// Every access class, for tables and tests.
    pub const ALL: [MonAccess; 5] = [
        MonAccess::Read,
        MonAccess::PoolAdmin,
        MonAccess::AuthAdmin,
        MonAccess::OsdDaemon,
        MonAccess::Blocklist,
    ];
}

const R: u8 = 1;
const W: u8 = 2;
const X: u8 = 4;
const RWX: u8 = R | W | X;

/// Which namespaces a grant covers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Namespace {
    Exact(String),
    Prefix(String),
}

/// One OSD grant after profile expansion.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OsdGrant {
    pool: Option<String>,
    namespace: Option<Namespace>,
    object_prefix: Option<String>,
    bits: u8,
}

impl OsdGrant {
    fn covers(&self, pool: &str, namespace: &str, object: Option<&str>, want: u8) -> bool {
        if self.bits & want != want {
            return false;
        }
        if self.pool.as_deref().is_some_and(|p| p != pool) {
            return false;
        }
        let namespace_ok = match &self.namespace {
            None => true,
            Some(Namespace::Exact(n)) => n == namespace,
            Some(Namespace::Prefix(p)) => namespace.starts_with(p.as_str()),
        };
        let object_ok = match (&self.object_prefix, object) {
            (None, _) => true,
            (Some(prefix), Some(object)) => object.starts_with(prefix.as_str()),
            (Some(_), None) => false,
        };
        namespace_ok && object_ok
    }
}

/// Parsed `osd` caps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsdCap {
    text: String,
    grants: Vec<OsdGrant>,
}

impl OsdCap {
    /// Parses an `osd` cap string; an empty string grants nothing.
    pub fn parse(text: &str) -> Result<OsdCap, AuthError> {
        let mut grants = Vec::new();
        for tokens in grants_of("osd", text)? {
            grants.extend(parse_osd_grant(&tokens)?);
        }
        Ok(OsdCap { text: text.to_string(), grants })
    }

    /// Whether the caps hold a grant of everything (`allow *` or `allow all`): what an admin
    /// command to an OSD (`ceph tell osd.N`) needs, as Ceph's OSD asks (`profile rbd` or
    /// `allow rwx` do not suffice).
    pub fn allows_all(&self) -> bool {
        self.text.split([',', ';']).any(|grant| {
            let words: Vec<&str> = grant.split_whitespace().collect();
            matches!(words.as_slice(), ["allow", "*"] | ["allow", "all"])
        })
    }

    /// Whether an op on any object of `pool`/`namespace` may proceed. Grants limited to an
    /// `object_prefix` never satisfy this (use [`OsdCap::allows_object`] when the name is known).
    pub fn allows(&self, pool: &str, namespace: &str, want: OsdAccess) -> bool {
        let want = bits_of(want);
        self.grants.iter().any(|g| g.covers(pool, namespace, None, want))
    }

    /// Whether an op on `object` in `pool`/`namespace` may proceed (honours `object_prefix`,
    /// e.g. `profile rbd`'s read access to `rbd_children` in every pool).
    pub fn allows_object(
        &self,
        pool: &str,
        namespace: &str,
        object: &str,
        want: OsdAccess,
    ) -> bool {
        let want = bits_of(want);
        self.grants.iter().any(|g| g.covers(pool, namespace, Some(object), want))
    }

    /// The cap string as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for OsdCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn bits_of(want: OsdAccess) -> u8 {
    (if want.read { R } else { 0 })
        | (if want.write { W } else { 0 })
        | (if want.exec { X } else { 0 })
}

/// Mon profiles Quarry knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MonProfile {
    Rbd,
    RbdReadOnly,
    ReadOnly,
    ReadWrite,
    Osd,
    Mon,
}

impl MonProfile {
    fn from_name(name: &str) -> Option<MonProfile> {
        Some(match name {
            "rbd" => MonProfile::Rbd,
            "rbd-read-only" => MonProfile::RbdReadOnly,
            "read-only" | "simple-rados-client" => MonProfile::ReadOnly,
            "read-write" => MonProfile::ReadWrite,
            "osd" => MonProfile::Osd,
            "mon" => MonProfile::Mon,
            _ => return None,
        })
    }

    fn allows(self, want: MonAccess) -> bool {
        use MonAccess::*;
        match self {
            MonProfile::Rbd => matches!(want, Read | Blocklist),
            MonProfile::RbdReadOnly | MonProfile::ReadOnly => want == Read,
            MonProfile::ReadWrite => matches!(want, Read | PoolAdmin | Blocklist),
            MonProfile::Osd => matches!(want, Read | OsdDaemon),
            MonProfile::Mon => true,
        }
    }
}

/// One mon grant.
#[derive(Clone, Debug, PartialEq, Eq)]
enum MonGrant {
    /// `allow *`.
    All,
    /// `allow rwx` (service None) or `allow service NAME rwx`.
    Bits { service: Option<String>, bits: u8 },
    /// `profile NAME`.
    Profile(MonProfile),
}

/// Parsed `mon` caps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonCap {
    text: String,
    grants: Vec<MonGrant>,
}

impl MonCap {
    /// Parses a `mon` cap string; an empty string grants nothing.
    pub fn parse(text: &str) -> Result<MonCap, AuthError> {
        let mut grants = Vec::new();
        for tokens in grants_of("mon", text)? {
            grants.push(parse_mon_grant(&tokens)?);
        }
        Ok(MonCap { text: text.to_string(), grants })
    }

    /// Whether the caps grant everything on the monitor (`allow *`): what an admin command to
    /// the monitor itself (`ceph tell mon.*`) needs.
    pub fn allows_all(&self) -> bool {
        self.grants.iter().any(|g| matches!(g, MonGrant::All))
    }

    /// Whether a monitor request of class `want` may proceed (see the table in the crate doc).
    pub fn allows(&self, want: MonAccess) -> bool {
        for grant in &self.grants {
            match grant {
                MonGrant::All => return true,
                MonGrant::Profile(p) if p.allows(want) => return true,
                _ => {}
            }
        }
        // Like Ceph, `allow` grants add up per service before a request is judged.
        let has = |service: &str, need: u8| self.service_bits(service) & need == need;
        match want {
            MonAccess::Read => has("mon", R) && has("osd", R),
            MonAccess::PoolAdmin | MonAccess::Blocklist => has("osd", R | W),
            MonAccess::AuthAdmin => has("auth", RWX),
            MonAccess::OsdDaemon => has("osd", RWX) && has("mon", R),
        }
    }

    fn service_bits(&self, service: &str) -> u8 {
        let mut bits = 0;
        for grant in &self.grants {
            if let MonGrant::Bits { service: s, bits: b } = grant {
                if s.as_deref().is_none_or(|s| s == service) {
                    bits |= b;
                }
            }
        }
        bits
    }

    /// The cap string as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for MonCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// An entity's parsed caps. Services Quarry has no daemon for (`mgr`, `mds`) are accepted
/// and ignored, so keyrings and `auth get-or-create` commands copied from Ceph still work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// What the entity may ask the monitor.
    pub mon: MonCap,
    /// What the entity may do on OSDs.
    pub osd: OsdCap,
}

impl Caps {
    /// Parses caps by service, as stored in keyrings and tickets.
    pub fn parse(caps: &BTreeMap<String, String>) -> Result<Caps, AuthError> {
        let mut out = Caps::default();
        for (service, text) in caps {
            // Control characters have no place in a cap; a newline would let a cap inject
            // lines into the keyring text `auth get` prints (mgr/mds caps are stored as is).
            if let Some(at) = text.find(|c: char| c.is_control()) {
                return Err(AuthError::InvalidCap {
                    service: service.clone(),
                    cap: text.escape_debug().to_string(),
                    token: text[at..]
                        .chars()
                        .next()
                        .map(|c| c.escape_debug().to_string())
                        .unwrap_or_default(),
                    rest: text[at..].escape_debug().to_string(),
                    reason: "control characters are not allowed",
                });
            }
            match service.as_str() {
                "mon" => out.mon = MonCap::parse(text)?,
                "osd" => out.osd = OsdCap::parse(text)?,
                "mgr" | "mds" => {}
                _ => return Err(AuthError::UnknownCapService { service: service.clone() }),
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------
// Tokenizing

/// A word of a cap string.
#[derive(Clone, Debug)]
struct Tok {
    /// Unquoted text.
    text: String,
    /// Byte offset in the whole cap string.
    at: usize,
    /// Written in quotes (so never a keyword).
    quoted: bool,
    /// A bare `=`.
    eq: bool,
}

impl Tok {
    fn is(&self, word: &str) -> bool {
        !self.quoted && !self.eq && self.text == word
    }
}

/// The tokens of one grant, with what an error needs to point into the whole string.
struct Grant<'a> {
    service: &'static str,
    cap: &'a str,
    toks: Vec<Tok>,
    /// Offset where the grant ends (for "missing ..." errors).
    end: usize,
}

impl Grant<'_> {
    fn error(&self, tok: &Tok, reason: &'static str) -> AuthError {
        cap_error(self.service, self.cap, tok.at, &tok.text, reason)
    }

    fn error_at_end(&self, reason: &'static str) -> AuthError {
        cap_error(self.service, self.cap, self.end, "", reason)
    }

    /// The value after keyword `toks[i]` (`pool=x` or `pool x`); returns it and the next index.
    fn value(&self, i: usize) -> Result<(&Tok, usize), AuthError> {
        let mut j = i + 1;
        if self.toks.get(j).is_some_and(|t| t.eq) {
            j += 1;
        }
        match self.toks.get(j) {
            Some(t) if !t.eq => Ok((t, j + 1)),
            Some(t) => Err(self.error(t, "unexpected")),
            None => Err(self.error_at_end("missing value after keyword")),
        }
    }

    /// A pool, object prefix or profile name: quoted, or `[A-Za-z0-9_./-]+`.
    fn name(&self, tok: &Tok) -> Result<String, AuthError> {
        let plain = tok.text.chars().all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c));
        if tok.text.is_empty() || (!tok.quoted && !plain) {
            return Err(self.error(tok, "invalid name"));
        }
        Ok(tok.text.clone())
    }
}

fn cap_error(service: &str, cap: &str, at: usize, token: &str, reason: &'static str) -> AuthError {
    let at = at.min(cap.len());
    AuthError::InvalidCap {
        service: service.to_string(),
        cap: cap.to_string(),
        token: token.to_string(),
        rest: cap.get(at..).unwrap_or_default().to_string(),
        reason,
    }
}

/// Splits a cap string into grants (at `,`/`;` outside quotes) and tokenizes each.
fn grants_of<'a>(service: &'static str, cap: &'a str) -> Result<Vec<Grant<'a>>, AuthError> {
    if cap.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut grants = Vec::new();
    let mut toks: Vec<Tok> = Vec::new();
    let mut chars = cap.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c == ',' || c == ';' {
            let grant = Grant { service, cap, toks: std::mem::take(&mut toks), end: at };
            if grant.toks.is_empty() {
                return Err(cap_error(service, cap, at, &c.to_string(), "empty grant before"));
            }
            grants.push(grant);
        } else if c.is_whitespace() {
            continue;
        } else if c == '=' {
            toks.push(Tok { text: "=".into(), at, quoted: false, eq: true });
        } else if c == '"' || c == '\'' {
            let mut text = String::new();
            let mut closed = false;
            for (_, d) in chars.by_ref() {
                if d == c {
                    closed = true;
                    break;
                }
                text.push(d);
            }
            if !closed {
                return Err(cap_error(service, cap, at, &cap[at..], "unterminated quote"));
            }
            toks.push(Tok { text, at, quoted: true, eq: false });
        } else {
            let mut text = c.to_string();
            while let Some(&(_, d)) = chars.peek() {
                if d.is_whitespace() || matches!(d, ',' | ';' | '=' | '"' | '\'') {
                    break;
                }
                text.push(d);
                chars.next();
            }
            toks.push(Tok { text, at, quoted: false, eq: false });
        }
    }
    if toks.is_empty() {
        return Err(cap_error(service, cap, cap.len(), "", "empty grant at end"));
    }
    grants.push(Grant { service, cap, toks, end: cap.len() });
    Ok(grants)
}

// ---------------------------------------------------------------------------------------
// OSD grants

/// `r`, `w`, `x` in that order, at least one.
fn rwx_bits(tok: &Tok) -> Option<u8> {
    if tok.quoted || tok.eq || tok.text.is_empty() {
        return None;
    }
    let mut bits = 0;
    let mut rest = tok.text.as_str();
    for (letter, bit) in [("r", R), ("w", W), ("x", X)] {
        if let Some(after) = rest.strip_prefix(letter) {
            bits |= bit;
            rest = after;
        }
    }
    rest.is_empty().then_some(bits)
}

/// Words Ceph accepts in a grant but Quarry does not enforce.
fn unsupported_word(tok: &Tok) -> Option<&'static str> {
    if tok.quoted {
        return None;
    }
    Some(match tok.text.as_str() {
        "class" => "class-specific grants are not supported by Quarry:",
        "tag" => "pool application tags are not supported by Quarry:",
        "network" => "network restrictions are not supported by Quarry:",
        "auid" => "auid grants are obsolete and not supported:",
        "command" => "command grants are not supported by Quarry:",
        _ => return None,
    })
}

#[derive(Default)]
struct OsdMatch {
    pool: Option<String>,
    namespace: Option<Namespace>,
    object_prefix: Option<String>,
}

fn parse_osd_grant(grant: &Grant<'_>) -> Result<Vec<OsdGrant>, AuthError> {
    let first = &grant.toks[0];
    if first.is("profile") {
        return parse_osd_profile(grant);
    }
    if !first.is("allow") {
        return Err(grant.error(first, "expected 'allow' or 'profile', got"));
    }
    let mut bits: Option<u8> = None;
    let mut matched = OsdMatch::default();
    // 0 = nothing yet, 1 = in spec words, 2 = in match words; Ceph allows one switch.
    let mut section = 0u8;
    let mut switches = 0u8;
    let mut match_stage = 0u8; // pool < namespace < object_prefix
    let mut i = 1;
    while i < grant.toks.len() {
        let tok = &grant.toks[i];
        let is_match_word = tok.is("pool") || tok.is("namespace") || tok.is("object_prefix");
        let now = if is_match_word { 2 } else { 1 };
        if section != 0 && section != now {
            switches += 1;
            if switches > 1 {
                return Err(grant.error(tok, "access and match clauses interleave at"));
            }
        }
        section = now;
        if is_match_word {
            let stage = if tok.is("pool") {
                1
            } else if tok.is("namespace") {
                2
            } else {
                3
            };
            if stage <= match_stage {
                return Err(grant.error(tok, "repeated or out-of-order match clause"));
            }
            match_stage = stage;
            let (value, next) = grant.value(i)?;
            match stage {
                1 => matched.pool = Some(grant.name(value)?),
                2 => matched.namespace = Some(parse_namespace(grant, value)?),
                _ => matched.object_prefix = Some(grant.name(value)?),
            }
            i = next;
            continue;
        }
        let add = if tok.is("*") || tok.is("all") {
            RWX
        } else if tok.is("class-read") {
            // Quarry treats class-read as read: read-only methods are checked as reads.
            R
        } else if tok.is("class-write") {
            X
        } else if let Some(b) = rwx_bits(tok) {
            b
        } else if let Some(reason) = unsupported_word(tok) {
            return Err(grant.error(tok, reason));
        } else {
            return Err(grant.error(tok, "unknown word"));
        };
        bits = Some(bits.unwrap_or(0) | add);
        i += 1;
    }
    let Some(bits) = bits else {
        return Err(grant.error_at_end("missing access (*, r, w, x, class-read) after 'allow'"));
    };
    let OsdMatch { pool, namespace, object_prefix } = matched;
    Ok(vec![OsdGrant { pool, namespace, object_prefix, bits }])
}

fn parse_namespace(grant: &Grant<'_>, tok: &Tok) -> Result<Namespace, AuthError> {
    if tok.quoted && tok.text.is_empty() {
        return Ok(Namespace::Exact(String::new()));
    }
    if let Some(prefix) = tok.text.strip_suffix('*') {
        if prefix.is_empty() {
            return Ok(Namespace::Prefix(String::new()));
        }
        let prefix_tok = Tok { text: prefix.to_string(), ..tok.clone() };
        return Ok(Namespace::Prefix(grant.name(&prefix_tok)?));
    }
    Ok(Namespace::Exact(grant.name(tok)?))
}

fn parse_osd_profile(grant: &Grant<'_>) -> Result<Vec<OsdGrant>, AuthError> {
    let (name_tok, mut i) = grant.value(0)?;
    let name = grant.name(name_tok)?;
    let mut pool = None;
    let mut pool_tok = None;
    let mut namespace = None;
    if grant.toks.get(i).is_some_and(|t| t.is("pool")) {
        pool_tok = grant.toks.get(i);
        let (value, next) = grant.value(i)?;
        pool = Some(grant.name(value)?);
        i = next;
        if grant.toks.get(i).is_some_and(|t| t.is("namespace")) {
            let (value, next) = grant.value(i)?;
            namespace = Some(parse_namespace(grant, value)?);
            i = next;
        }
    }
    if let Some(extra) = grant.toks.get(i) {
        let reason = unsupported_word(extra).unwrap_or("unexpected word after profile");
        return Err(grant.error(extra, reason));
    }
    if let (Some(tok), "osd" | "mon") = (pool_tok, name.as_str()) {
        return Err(grant.error(tok, "daemon profiles take no pool:"));
    }
    let scoped = |bits| OsdGrant {
        pool: pool.clone(),
        namespace: namespace.clone(),
        object_prefix: None,
        bits,
    };
    let any_pool_prefix = |prefix: &str, bits| OsdGrant {
        pool: None,
        namespace: None,
        object_prefix: Some(prefix.to_string()),
        bits,
    };
    Ok(match name.as_str() {
        // Ceph: class-read on the clone registries of every pool, rwx in the named pool.
        "rbd" => vec![
            any_pool_prefix("rbd_children", R),
            any_pool_prefix("rbd_mirroring", R),
            scoped(RWX),
        ],
        // Ceph: r + class-read (read-only methods are reads in Quarry).
        "rbd-read-only" | "read-only" => vec![scoped(R)],
        "read-write" => vec![scoped(R | W)],
        "osd" | "mon" => vec![scoped(RWX)],
        _ => return Err(grant.error(name_tok, "unknown osd profile")),
    })
}

// ---------------------------------------------------------------------------------------
// Mon grants

fn parse_mon_grant(grant: &Grant<'_>) -> Result<MonGrant, AuthError> {
    let toks = &grant.toks;
    let mut i = 0;
    if toks[0].is("allow") {
        i = 1;
    } else if !toks[0].is("profile") {
        return Err(grant.error(&toks[0], "expected 'allow' or 'profile', got"));
    }
    let Some(word) = toks.get(i) else {
        return Err(grant.error_at_end("missing access after 'allow'"));
    };
    let (parsed, next) = if word.is("profile") {
        let (name_tok, next) = grant.value(i)?;
        let name = grant.name(name_tok)?;
        let Some(profile) = MonProfile::from_name(&name) else {
            return Err(grant.error(name_tok, "unknown mon profile"));
        };
        (MonGrant::Profile(profile), next)
    } else if word.is("service") {
        let (name_tok, next) = grant.value(i)?;
        let service = grant.name(name_tok)?;
        let Some(bits_tok) = toks.get(next) else {
            return Err(grant.error_at_end("missing access after service name"));
        };
        let bits = if bits_tok.is("*") || bits_tok.is("all") {
            RWX
        } else {
            rwx_bits(bits_tok).ok_or_else(|| grant.error(bits_tok, "expected r, w, x or *, got"))?
        };
        (MonGrant::Bits { service: Some(service), bits }, next + 1)
    } else if word.is("*") || word.is("all") {
        (MonGrant::All, i + 1)
    } else if let Some(bits) = rwx_bits(word) {
        (MonGrant::Bits { service: None, bits }, i + 1)
    } else if let Some(reason) = unsupported_word(word) {
        return Err(grant.error(word, reason));
    } else {
        return Err(grant.error(word, "unknown word"));
    };
    if let Some(extra) = toks.get(next) {
        let reason = unsupported_word(extra).unwrap_or("unexpected word");
        return Err(grant.error(extra, reason));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests;
