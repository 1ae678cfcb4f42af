//! Typo suggestions for the tools' command words ("did you mean 'status'?"), as Ceph's tools
//! point at the closest commands, and the synopses of `rados` commands for a command given
//! with the wrong arguments. The distance is `strsim`'s Damerau-Levenshtein (the crate clap
//! already uses for its own option suggestions).

/// The candidate closest to `word` if it is close enough to be a typo of it: at most a
/// third of the longer word's letters differ (at least one may).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|&(distance, c)| distance > 0 && distance <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| c)
}

/// `" (did you mean 'X'?)"`, or nothing when no candidate is close.
pub fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates).map(did_you_mean).unwrap_or_default()
}

/// `" (did you mean 'X'?)"`.
pub fn did_you_mean(candidate: &str) -> String {
    format!(" (did you mean '{candidate}'?)")
}

/// The command phrases of a help text's `Commands:` lines (`osd pool ls [detail]` gives
/// `osd pool ls`; `osd ls | tree` gives `osd ls` and `osd tree`).
pub fn command_phrases(help: &str) -> Vec<String> {
    let is_word = |t: &str| {
        !t.is_empty()
            && t.chars().all(|c| c.is_ascii_lowercase() || c == '-' || c == '_')
            && !t.starts_with('-')
    };
    let mut phrases = Vec::new();
    for line in help.lines().skip_while(|l| !l.starts_with("Commands:")).skip(1) {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let words: Vec<&str> = tokens.iter().copied().take_while(|t| is_word(t)).collect();
        if words.is_empty() {
            continue;
        }
        phrases.push(words.join(" "));
        let mut rest = tokens[words.len()..].iter().copied();
        while rest.next() == Some("|") {
            match rest.next() {
                Some(alt) if is_word(alt) => {
                    let mut other = words[..words.len() - 1].to_vec();
                    other.push(alt);
                    phrases.push(other.join(" "));
                }
                _ => break,
            }
        }
    }
    phrases
}

/// The phrase closest to the start of `words` (compared over as many words as the phrase
/// has), if it is a likely typo.
pub fn closest_phrase<'a>(words: &[String], phrases: &'a [String]) -> Option<&'a str> {
    phrases
        .iter()
        .filter_map(|p| {
            let n = p.split(' ').count();
            let given = words.iter().take(n).cloned().collect::<Vec<_>>().join(" ");
            closest(&given, [p.as_str()]).map(|c| (strsim::damerau_levenshtein(&given, c), c))
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| c)
}

/// Every `rados` command with its arguments (`rados [-p POOL] COMMAND ARGS`).
pub const RADOS_SYNOPSES: &[(&str, &str)] = &[
    ("lspools", ""),
    ("df", ""),
    ("ls", ""),
    ("put", "OBJECT INFILE"),
    ("append", "OBJECT INFILE"),
    ("get", "OBJECT OUTFILE"),
    ("rm", "OBJECT..."),
    ("stat", "OBJECT"),
    ("stat2", "OBJECT"),
    ("purge", "POOL --yes-i-really-really-mean-it"),
    ("create", "OBJECT"),
    ("touch", "OBJECT"),
    ("cp", "OBJECT [TARGET] [--target-pool POOL]"),
    ("truncate", "OBJECT SIZE"),
    ("setxattr", "OBJECT NAME [VALUE]"),
    ("getxattr", "OBJECT NAME"),
    ("rmxattr", "OBJECT NAME"),
    ("listxattr", "OBJECT"),
    ("setomapval", "OBJECT KEY [VALUE]"),
    ("getomapval", "OBJECT KEY [OUTFILE]"),
    ("rmomapkey", "OBJECT KEY"),
    ("clearomap", "OBJECT..."),
    ("listomapkeys", "OBJECT"),
    ("listomapvals", "OBJECT"),
    ("getomapheader", "OBJECT [OUTFILE]"),
    ("setomapheader", "OBJECT VALUE"),
    ("watch", "OBJECT"),
    ("notify", "OBJECT MESSAGE"),
    ("listwatchers", "OBJECT"),
    ("bench", "SECONDS write|seq|rand [-b SIZE] [-t N] [--no-cleanup]"),
    ("lssnap", ""),
    ("mksnap", "SNAP"),
    ("rmsnap", "SNAP"),
    ("rollback", "OBJECT SNAP"),
    ("cleanup", "[--prefix PREFIX] [--run-name NAME]"),
    ("export", "[FILE|-]"),
    ("import", "[--dry-run] [--no-overwrite] FILE|-"),
    ("lock", "list|info|get|break OBJECT [LOCK] [LOCKER]"),
];

/// The `rbd` commands (first words).
pub const RBD_COMMANDS: &[&str] = &[
    "create",
    "ls",
    "list",
    "info",
    "resize",
    "rm",
    "remove",
    "rename",
    "mv",
    "snap",
    "clone",
    "children",
    "flatten",
    "status",
    "du",
    "disk-usage",
    "image-meta",
    "diff",
    "watch",
    "pool",
    "device",
    "cp",
    "copy",
    "deep",
    "feature",
    "lock",
    "namespace",
    "trash",
    "bench",
    "export",
    "export-diff",
    "import-diff",
    "merge-diff",
    "import",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_command_and_strangers_find_none() {
        let rados = RADOS_SYNOPSES.iter().map(|(c, _)| *c);
        assert_eq!(closest("lss", rados.clone()), Some("ls"));
        assert_eq!(closest("lsppols", rados.clone()), Some("lspools"));
        assert_eq!(closest("frobnicate", rados), None);
        assert_eq!(closest("staus", ["status", "health", "df"]), Some("status"));
        assert_eq!(closest("status", ["status"]), None, "an exact match is no typo");
        assert_eq!(hint("lss", RBD_COMMANDS.iter().copied()), " (did you mean 'ls'?)");
        let phrases = command_phrases(
            "Commands:\n  status | -s   x\n  osd ls | tree | stat\n  osd pool get POOL\n",
        );
        assert_eq!(phrases, ["status", "osd ls", "osd tree", "osd stat", "osd pool get"]);
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(closest_phrase(&words(&["staus"]), &phrases), Some("status"));
        assert_eq!(
            closest_phrase(&words(&["osd", "pool", "gett", "rbd"]), &phrases),
            Some("osd pool get")
        );
        assert_eq!(closest_phrase(&words(&["mgr", "fail"]), &phrases), None);
    }
}
