//! The documentation's shell blocks as tests run them: [`shell_blocks`] takes the ```` ```sh ````
//! blocks of one section of a Markdown file, [`as_script`] makes a block a `bash` script that
//! stops at the first failing command, where a line whose comment names an error
//! (`# (1) Operation not permitted`) must fail, as the text says it does. Used by the tests
//! that run README.md and docs/getting-started.md as written.

/// The ```` ```sh ```` blocks of the section whose heading starts with `## {heading}`.
pub fn shell_blocks(markdown: &str, heading: &str) -> Vec<String> {
    let start = markdown.find(&format!("## {heading}")).unwrap_or_else(|| panic!("no {heading}"));
    let section = &markdown[start + 3..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split("```sh\n")
        .skip(1)
        .map(|b| b[..b.find("```").unwrap_or(b.len())].to_string())
        .collect()
}

/// A block as a script: `set -e`, `\` continuations joined, and a line whose comment names an
/// error (`# (1) Operation not permitted`) must fail.
pub fn as_script(block: &str) -> String {
    let mut script = String::from("set -e\n");
    for line in block.replace("\\\n", " ").lines() {
        let expected_error =
            line.split_once('#').is_some_and(|(_, comment)| comment.trim_start().starts_with('('));
        match line.split_once('#') {
            Some((command, _)) if expected_error => script.push_str(&format!(
                "if {command}; then echo 'expected to fail: {}' >&2; exit 1; fi\n",
                command.trim().replace('\'', "")
            )),
            _ => {
                script.push_str(line);
                script.push('\n');
            }
        }
    }
    script
}

/// A file replaced for the length of a test and put back (or removed) when dropped: the docs
/// save keyrings where Ceph's documentation puts them (`/etc/ceph/…`).
pub struct Restore {
    path: std::path::PathBuf,
    saved: Option<Vec<u8>>,
}

impl Restore {
    /// Remembers what `path` holds now (nothing, if absent).
    pub fn new(path: impl Into<std::path::PathBuf>) -> Restore {
        let path = path.into();
        let saved = std::fs::read(&path).ok();
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        Restore { path, saved }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = match &self.saved {
            Some(bytes) => std::fs::write(&self.path, bytes),
            None => std::fs::remove_file(&self.path),
        };
    }
}
