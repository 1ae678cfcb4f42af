//! Golden-byte files: the checked-in bytes of persisted encodings, so that any change to how a
//! persisted type encodes fails a test instead of silently breaking data already on disk.
//!
//! A golden file holds one value per line, `name hex`, and `#` comment lines. [`check`]
//! compares freshly encoded values with it. A missing file is created only when the
//! environment variable `QUARRY_GOLDEN_CREATE=1` is set (for a new payload version); an
//! existing file is never rewritten by code. When a golden test fails, the encoding changed:
//! that needs a new version number and a new golden file (see the crate docs), not an edit of
//! the old file.

use std::path::Path;

/// Environment variable that lets [`check`] create a missing golden file.
pub const CREATE_ENV: &str = "QUARRY_GOLDEN_CREATE";

/// Parses a golden file's text into `(name, bytes)` pairs.
pub fn parse(text: &str) -> Vec<(String, Vec<u8>)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, hex) = line.split_once(' ').unwrap_or((line, ""));
            (name.to_string(), crate::version::from_hex(hex))
        })
        .collect()
}

/// Compares `values` (name, encoded bytes) with the golden file at `path`, in order.
///
/// # Panics
/// On any difference (naming the first value that differs), or if the file is missing and
/// `QUARRY_GOLDEN_CREATE=1` is not set.
pub fn check(path: &Path, header: &str, values: &[(&str, Vec<u8>)]) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var(CREATE_ENV).as_deref() == Ok("1"),
                "golden file {} is missing (set {CREATE_ENV}=1 to create it for a new version)",
                path.display()
            );
            let mut text = String::new();
            for line in header.lines() {
                text.push_str(&format!("# {line}\n"));
            }
            for (name, bytes) in values {
                assert!(!name.contains(' '), "golden value names have no spaces");
                text.push_str(&format!("{name} {}\n", crate::version::to_hex(bytes)));
            }
            std::fs::create_dir_all(path.parent().expect("golden files live in a directory"))
                .expect("creating the golden directory");
            std::fs::write(path, text).expect("writing the golden file");
            return;
        }
        Err(e) => panic!("reading golden file {}: {e}", path.display()),
    };
    let golden = parse(&text);
    for (index, (name, bytes)) in values.iter().enumerate() {
        let Some((golden_name, golden_bytes)) = golden.get(index) else {
            panic!("{}: no golden value for {name} (new value? new version!)", path.display());
        };
        assert_eq!(golden_name, name, "{}: value {index} has another name", path.display());
        assert!(
            golden_bytes == bytes,
            "{}: the encoding of {name} changed.\n  golden: {}\n  now:    {}\n\
             A persisted format changed: give it a new version and keep decoding the old one \
             (see quarry_persist); do not edit the golden file.",
            path.display(),
            crate::version::to_hex(golden_bytes),
            crate::version::to_hex(bytes),
        );
    }
    assert_eq!(golden.len(), values.len(), "{}: golden file has more values", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_changed_missing_and_extra_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.hex");
        std::fs::write(&path, "# header\na 0102\nb ff\n").unwrap();
        check(&path, "", &[("a", vec![1, 2]), ("b", vec![0xff])]);
        let changed = std::panic::catch_unwind(|| check(&path, "", &[("a", vec![1, 3])]));
        assert!(changed.is_err());
        let fewer = std::panic::catch_unwind(|| check(&path, "", &[("a", vec![1, 2])]));
        assert!(fewer.is_err());
        let missing = dir.path().join("missing.hex");
        let result = std::panic::catch_unwind(|| check(&missing, "", &[("a", vec![1])]));
        assert!(result.is_err() || std::env::var(CREATE_ENV).as_deref() == Ok("1"));
    }
}
