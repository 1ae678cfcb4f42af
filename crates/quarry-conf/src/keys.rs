//! Where an entity's key comes from: the `key` option (the key itself), else `keyfile` (a file
//! holding just the key), else the first existing file of the `keyring` list (Ceph's default
//! list when unset). Only paths and text are produced here; quarry-auth parses keys.

use std::path::{Path, PathBuf};

use quarry_types::EntityName;

use crate::options::KEYRING_DEFAULT;
use crate::{Conf, ConfError};

/// Where to read an entity's key from, in Quarry's precedence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The `key` option: the base64 key itself.
    Key(String),
    /// The `keyfile` option: a file holding only the key.
    KeyFile(PathBuf),
    /// Keyring files to try in order (the first that exists is used).
    Keyrings(Vec<PathBuf>),
}

/// Splits a path list at commas, semicolons and whitespace (Ceph's `get_str_list`).
fn split_list(list: &str) -> Vec<PathBuf> {
    list.split([',', ';', ' ', '\t']).filter(|p| !p.is_empty()).map(PathBuf::from).collect()
}

/// The keyring files to try for `name`: the `keyring` option if set (overrides included,
/// metavariables expanded with `cluster`), else Ceph's default
/// `/etc/ceph/$cluster.$name.keyring,/etc/ceph/$cluster.keyring,/etc/ceph/keyring,/etc/ceph/keyring.bin`.
pub fn keyring_search_paths(conf: &Conf, name: &EntityName, cluster: &str) -> Vec<PathBuf> {
    let raw = conf.get_raw(name, "keyring").unwrap_or_else(|| KEYRING_DEFAULT.to_string());
    split_list(&conf.expand_for(&raw, name, cluster))
}

/// Where `name`'s key comes from: `key` > `keyfile` > `keyring` list.
pub fn key_source(conf: &Conf, name: &EntityName, cluster: &str) -> KeySource {
    if let Some(key) = conf.get_raw(name, "key").filter(|k| !k.trim().is_empty()) {
        return KeySource::Key(key.trim().to_string());
    }
    if let Some(file) = conf.get_raw(name, "keyfile").filter(|f| !f.trim().is_empty()) {
        return KeySource::KeyFile(PathBuf::from(conf.expand_for(file.trim(), name, cluster)));
    }
    KeySource::Keyrings(keyring_search_paths(conf, name, cluster))
}

/// The first of `paths` that is an existing file.
pub fn find_keyring(paths: &[PathBuf]) -> Option<PathBuf> {
    paths.iter().find(|p| p.is_file()).cloned()
}

/// Reads a `keyfile`: the key text, whitespace trimmed.
pub fn read_keyfile(path: &Path) -> Result<String, ConfError> {
    let bytes = crate::read_small_file(path, crate::SMALL_FILE_BYTES_MAX).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConfError::NotFound { path: path.to_path_buf() }
        } else {
            ConfError::Io { path: path.to_path_buf(), source }
        }
    })?;
    let text = String::from_utf8(bytes).map_err(|_| ConfError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not text (binary data)"),
    })?;
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu() -> EntityName {
        EntityName::client("qemu")
    }

    #[test]
    fn default_keyring_list_is_cephs_with_metavariables_expanded() {
        let conf = Conf::default();
        let paths = keyring_search_paths(&conf, &qemu(), "ceph");
        let want = [
            "/etc/ceph/ceph.client.qemu.keyring",
            "/etc/ceph/ceph.keyring",
            "/etc/ceph/keyring",
            "/etc/ceph/keyring.bin",
        ];
        assert_eq!(paths, want.map(PathBuf::from));
        let other = keyring_search_paths(&conf, &EntityName::osd(3), "backup");
        assert_eq!(other[0], PathBuf::from("/etc/ceph/backup.osd.3.keyring"));
    }

    #[test]
    fn keyring_option_follows_precedence_and_lists() {
        let text = "[global]\nkeyring = /etc/ceph/$cluster.keyring\n[client]\nkeyring = \"/a/$name.keyring, /b/k;/c/k /d/k\"\n[client.admin]\nkeyring = /admin/only\n";
        let mut conf = Conf::parse(text).unwrap();
        let admin = keyring_search_paths(&conf, &EntityName::client("admin"), "ceph");
        assert_eq!(admin, [PathBuf::from("/admin/only")]);
        let qemu_paths = keyring_search_paths(&conf, &qemu(), "ceph");
        assert_eq!(
            qemu_paths,
            ["/a/client.qemu.keyring", "/b/k", "/c/k", "/d/k"].map(PathBuf::from)
        );
        let osd = keyring_search_paths(&conf, &EntityName::osd(1), "prod");
        assert_eq!(osd, [PathBuf::from("/etc/ceph/prod.keyring")]);
        conf.set_override("keyring", "/from/-k").unwrap();
        assert_eq!(keyring_search_paths(&conf, &qemu(), "ceph"), [PathBuf::from("/from/-k")]);
    }

    #[test]
    fn key_then_keyfile_then_keyring() {
        let key = "AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==";
        let conf = Conf::parse(&format!(
            "[client.a]\nkey = {key}\nkeyfile = /k\n[client.b]\nkeyfile = /etc/ceph/$name.key\n"
        ))
        .unwrap();
        assert_eq!(key_source(&conf, &EntityName::client("a"), "ceph"), KeySource::Key(key.into()));
        assert_eq!(
            key_source(&conf, &EntityName::client("b"), "ceph"),
            KeySource::KeyFile("/etc/ceph/client.b.key".into())
        );
        assert!(
            matches!(key_source(&conf, &EntityName::client("c"), "ceph"), KeySource::Keyrings(p) if p.len() == 4)
        );
    }

    #[test]
    fn keyfiles_and_keyrings_are_found_on_disk() {
        let dir = std::env::temp_dir().join(format!("quarry-conf-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keyfile = dir.join("client.key");
        std::fs::write(&keyfile, "  AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==\n").unwrap();
        assert_eq!(read_keyfile(&keyfile).unwrap(), "AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==");
        let missing = dir.join("missing.key");
        assert!(
            matches!(read_keyfile(&missing), Err(ConfError::NotFound { path }) if path == missing)
        );
        let ring = dir.join("ceph.keyring");
        std::fs::write(&ring, "[client.admin]\n").unwrap();
        assert_eq!(find_keyring(&[missing.clone(), ring.clone(), keyfile]), Some(ring));
        assert_eq!(find_keyring(&[missing, dir.clone()]), None, "a directory is not a keyring");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
