//! Keyrings in Ceph's plain-text format: parse what Ceph (or a person) wrote, and write exactly
//! what `ceph auth get ... -o FILE` writes:
//!
//! ```text
//! [client.qemu]
//! <TAB>key = AQD0Pn1cUT2BLRAA3XMZRI0wWLd+wf6Qbn8Jvw==
//! <TAB>caps mon = "profile rbd"
//! <TAB>caps osd = "profile rbd pool=rbdpool"
//! ```
//!
//! Reading follows Ceph's `KeyRing::decode_plaintext`: the INI rules of `ceph.conf` (comments,
//! quotes, continuations), `[global]` skipped, per entry only `key`, `caps <service>` and the
//! obsolete `auid` (ignored); `caps_mon` and `caps mon` are the same setting. Entries of
//! entity types Quarry has no daemons for (`[mds.*]`, `[mgr.*]`) are skipped, so a keyring
//! copied from a Ceph cluster still loads. Writing orders entries as Ceph does (mon, osd,
//! client; then by id) and caps by service name.

use std::collections::BTreeMap;
use std::path::Path;

use quarry_types::{EntityName, EntityType};

use crate::{AuthError, CryptoKey};
use quarry_conf::ini::{self, Item};

/// Keyring files larger than this are refused (they hold a few keys).
pub const KEYRING_FILE_BYTES_MAX: u64 = quarry_conf::SMALL_FILE_BYTES_MAX;

/// Ceph entity types that may appear in keyrings but have no counterpart in Quarry.
const FOREIGN_TYPES: &[&str] = &["mds", "mgr"];

/// One entity's key and its capability strings (`"mon"` -> `"profile rbd"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyringEntry {
    /// The entity's secret.
    pub key: CryptoKey,
    /// Capability strings by service, unparsed (see [`crate::Caps::parse`]).
    pub caps: BTreeMap<String, String>,
}

/// A set of entity keys, as stored in `/etc/ceph/ceph.client.admin.keyring`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keyring {
    /// Entries by entity.
    pub entries: BTreeMap<EntityName, KeyringEntry>,
}

impl Keyring {
    /// Parses Ceph's plain-text keyring format.
    pub fn parse(text: &str) -> Result<Keyring, AuthError> {
        let lines =
            ini::lex(text).map_err(|(line, reason)| AuthError::KeyringSyntax { line, reason })?;
        let mut builder = Builder::default();
        for line in lines {
            match line.item {
                Item::Section(name) => builder.section(line.number, &name)?,
                Item::Entry(key, value) => builder.setting(line.number, &key, value)?,
            }
        }
        builder.finish()
    }

    /// Reads and parses a keyring file.
    pub fn from_file(path: &Path) -> Result<Keyring, AuthError> {
        let io = |source| AuthError::KeyringIo { path: path.to_path_buf(), source };
        // Regular files only, bounded: `--keyring /dev/zero` is refused, not read forever.
        let bytes = quarry_conf::read_small_file(path, KEYRING_FILE_BYTES_MAX).map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            io(std::io::Error::new(std::io::ErrorKind::InvalidData, "not text (binary data)"))
        })?;
        Keyring::parse(&text)
    }

    /// The entry of one entity.
    pub fn get(&self, name: &EntityName) -> Option<&KeyringEntry> {
        self.entries.get(name)
    }

    /// Adds or replaces an entity's entry.
    pub fn insert(&mut self, name: EntityName, key: CryptoKey, caps: BTreeMap<String, String>) {
        self.entries.insert(name, KeyringEntry { key, caps });
    }
}

#[derive(Default)]
struct Builder {
    entries: BTreeMap<EntityName, (Option<CryptoKey>, BTreeMap<String, String>)>,
    /// The entity of the current section; None in `[global]`, a foreign section, or before any.
    current: Option<EntityName>,
    /// Whether any section header has been seen.
    in_section: bool,
}

impl Builder {
    fn section(&mut self, line: usize, name: &str) -> Result<(), AuthError> {
        self.in_section = true;
        self.current = None;
        if name == "global" {
            return Ok(());
        }
        let kind = name.split('.').next().unwrap_or_default();
        if FOREIGN_TYPES.contains(&kind) && name.contains('.') {
            return Ok(());
        }
        let entity = EntityName::parse(name)
            .ok_or_else(|| AuthError::KeyringEntity { line, name: name.to_string() })?;
        self.entries.entry(entity.clone()).or_default();
        self.current = Some(entity);
        Ok(())
    }

    fn setting(&mut self, line: usize, raw_key: &str, value: String) -> Result<(), AuthError> {
        if !self.in_section {
            return Err(AuthError::KeyringSyntax { line, reason: "setting outside a [section]" });
        }
        let Some(entity) = self.current.clone() else { return Ok(()) };
        let setting = normalize_setting(raw_key);
        let Some(slot) = self.entries.get_mut(&entity) else {
            unreachable!("section() registers the current entity");
        };
        if setting == "key" {
            let key = CryptoKey::from_base64(&value).map_err(|e| AuthError::KeyringKey {
                line,
                entity: entity.to_string(),
                reason: match e {
                    AuthError::InvalidKey { reason } => reason,
                    other => other.to_string(),
                },
            })?;
            slot.0 = Some(key);
        } else if let Some(service) = setting.strip_prefix("caps ") {
            slot.1.insert(service.to_string(), value);
        } else if setting != "auid" {
            return Err(AuthError::KeyringSetting {
                line,
                entity: entity.to_string(),
                setting: raw_key.to_string(),
            });
        }
        Ok(())
    }

    fn finish(self) -> Result<Keyring, AuthError> {
        let mut entries = BTreeMap::new();
        for (name, (key, caps)) in self.entries {
            let key =
                key.ok_or_else(|| AuthError::KeyringMissingKey { entity: name.to_string() })?;
            entries.insert(name, KeyringEntry { key, caps });
        }
        Ok(Keyring { entries })
    }
}

/// Ceph's key normalisation for keyrings: whitespace runs and underscores become one space.
fn normalize_setting(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.trim().chars() {
        let c = if c == '_' || c.is_whitespace() { ' ' } else { c };
        if !(c == ' ' && out.ends_with(' ')) {
            out.push(c);
        }
    }
    out
}

/// Ceph's entity order: by type number (mon 1, osd 4, client 8), then id.
fn ceph_order(name: &EntityName) -> (u8, &str) {
    let rank = match name.kind {
        EntityType::Mon => 1,
        EntityType::Osd => 4,
        EntityType::Client => 8,
    };
    (rank, name.id.as_str())
}

impl std::fmt::Display for Keyring {
    /// Ceph's layout: tab-indented settings, caps quoted (`"` and `\` escaped).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&EntityName> = self.entries.keys().collect();
        names.sort_by(|a, b| ceph_order(a).cmp(&ceph_order(b)));
        for name in names {
            let entry = &self.entries[name];
            writeln!(f, "[{name}]")?;
            writeln!(f, "\tkey = {}", entry.key)?;
            for (service, caps) in &entry.caps {
                let escaped = caps.replace('\\', "\\\\").replace('"', "\\\"");
                writeln!(f, "\tcaps {service} = \"{escaped}\"")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ceph auth get client.admin` output from Ceph's documentation (mgr/mds caps included).
    const CEPH_ADMIN: &str = "[client.admin]\n\tkey = AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==\n\tcaps mds = \"allow *\"\n\tcaps mgr = \"allow *\"\n\tcaps mon = \"allow *\"\n\tcaps osd = \"allow *\"\n";

    fn caps(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn ceph_written_keyring_parses_and_prints_byte_for_byte() {
        let ring = Keyring::parse(CEPH_ADMIN).unwrap();
        let entry = ring.get(&EntityName::client("admin")).unwrap();
        assert_eq!(entry.key.to_base64(), "AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==");
        assert_eq!(entry.caps.len(), 4);
        assert_eq!(entry.caps["osd"], "allow *");
        assert_eq!(ring.to_string(), CEPH_ADMIN);
    }

    #[test]
    fn get_or_create_layout_for_the_seed_user() {
        let mut ring = Keyring::default();
        let key = CryptoKey::generate();
        let name = EntityName::client("qemu");
        let qemu_caps = caps(&[("mon", "profile rbd"), ("osd", "profile rbd pool=rbdpool")]);
        ring.insert(name.clone(), key.clone(), qemu_caps);
        let want = format!(
            "[client.qemu]\n\tkey = {key}\n\tcaps mon = \"profile rbd\"\n\tcaps osd = \"profile rbd pool=rbdpool\"\n"
        );
        assert_eq!(ring.to_string(), want);
        assert_eq!(Keyring::parse(&want).unwrap(), ring);
    }

    #[test]
    fn hand_written_keyrings_with_spaces_tabs_quotes_and_comments_parse() {
        let text = "# written by hand\n[global]\nauid = 0\n\n[client.qemu]   ; the VM host\n    key=AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==  # secret\n  caps_mon = 'profile rbd'\n\tcaps  osd=profile rbd pool=a, profile rbd-read-only pool=b\n\tauid = 18446744073709551615\n[osd.3]\nkey = \"AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==\"\n[mgr.x]\nkey = AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==\n[mon.]\nkey = AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==\ncaps mon = \"allow *\"\n";
        let ring = Keyring::parse(text).unwrap();
        assert_eq!(ring.entries.len(), 3, "mgr.x is skipped: {:?}", ring.entries.keys());
        let qemu = ring.get(&EntityName::client("qemu")).unwrap();
        assert_eq!(qemu.caps["mon"], "profile rbd");
        assert_eq!(qemu.caps["osd"], "profile rbd pool=a, profile rbd-read-only pool=b");
        assert!(ring.get(&EntityName::osd(3)).unwrap().caps.is_empty());
        // Ceph's order when written back: mon, osd, client.
        let written = ring.to_string();
        let order: Vec<&str> = written.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(order, ["[mon.]", "[osd.3]", "[client.qemu]"]);
        assert_eq!(Keyring::parse(&written).unwrap(), ring);
    }

    #[test]
    fn caps_with_quotes_survive_a_round_trip() {
        let mut ring = Keyring::default();
        let tricky = caps(&[("osd", "allow rw pool=\"my pool\" namespace=\\x")]);
        ring.insert(EntityName::client("a"), CryptoKey::generate(), tricky);
        assert_eq!(Keyring::parse(&ring.to_string()).unwrap(), ring);
    }

    #[test]
    fn bad_keyrings_are_refused_with_the_line() {
        let key = "AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==";
        let cases = [
            (format!("key = {key}\n"), "line 1: setting outside"),
            (format!("[qemu]\nkey = {key}\n"), "line 1: 'qemu' is not an entity"),
            (format!("[client.a]\nkey = {key}\nsecret = x\n"), "line 3: unknown setting 'secret'"),
            ("[client.a]\nkey = AQBvaBFZ\n".to_string(), "line 2: bad key for client.a"),
            ("[client.a]\ncaps mon = \"allow r\"\n".to_string(), "client.a has no key"),
            ("[client.a\n".to_string(), "line 1: section header"),
        ];
        for (text, want) in cases {
            let err = Keyring::parse(&text).unwrap_err();
            assert!(err.to_string().contains(want), "{text:?}: '{err}' lacks '{want}'");
        }
    }

    #[test]
    fn from_file_reads_real_files_and_names_missing_ones() {
        let dir = std::env::temp_dir().join(format!("quarry-auth-keyring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ceph.client.admin.keyring");
        std::fs::write(&path, CEPH_ADMIN).unwrap();
        assert_eq!(Keyring::from_file(&path).unwrap(), Keyring::parse(CEPH_ADMIN).unwrap());
        let missing = dir.join("nope.keyring");
        let err = Keyring::from_file(&missing).unwrap_err();
        assert!(err.to_string().contains("nope.keyring"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
