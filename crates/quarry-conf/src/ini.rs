//! A line lexer for Ceph's INI dialect, as Ceph's `ConfFile` reads ceph.conf and keyrings
//! (quarry-auth's keyring parser uses it too): `[section]` headers, `key = value` lines, `#` and `;` comments (whole-line or trailing), values in
//! double or single quotes, `\x` escapes, and `\` at the end of a line continuing it.
//! Inside quotes `#` and `;` are literal (Ceph refuses them there; accepting is a superset).

/// One meaningful line.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// `[name]`, trimmed.
    Section(String),
    /// `key = value`: key trimmed as written, value unquoted and unescaped.
    Entry(String, String),
}

/// A meaningful line and where it started (1-based).
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number where the item started.
    pub number: usize,
    /// What the line holds.
    pub item: Item,
}

/// A syntax error: 1-based line number and what is wrong.
pub type SyntaxError = (usize, &'static str);

/// Lines longer than this (after joining continuations) are refused: config files are small.
const LOGICAL_LINE_MAX: usize = 64 * 1024;

/// Splits `text` into sections and entries.
pub fn lex(text: &str) -> Result<Vec<Line>, SyntaxError> {
    let mut out = Vec::new();
    for (number, line) in logical_lines(text) {
        if line.len() > LOGICAL_LINE_MAX {
            return Err((number, "line too long"));
        }
        if let Some(item) = lex_line(&line).map_err(|reason| (number, reason))? {
            out.push(Line { number, item });
        }
    }
    Ok(out)
}

/// Joins lines ending in an unescaped backslash with the next one.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trailing_backslashes = raw.chars().rev().take_while(|&c| c == '\\').count();
        let continues = trailing_backslashes % 2 == 1;
        let piece = if continues { &raw[..raw.len() - 1] } else { raw };
        let (start, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        joined.push_str(piece);
        if continues {
            pending = Some((start, joined));
        } else {
            out.push((start, joined));
        }
    }
    if let Some(last) = pending {
        out.push(last);
    }
    out
}

fn is_comment_start(c: char) -> bool {
    c == '#' || c == ';'
}

/// Lexes one logical line; `None` for blank and comment lines.
fn lex_line(line: &str) -> Result<Option<Item>, &'static str> {
    let trimmed = line.trim_start();
    let Some(first) = trimmed.chars().next() else { return Ok(None) };
    if is_comment_start(first) {
        return Ok(None);
    }
    if let Some(after_bracket) = trimmed.strip_prefix('[') {
        let Some(close) = after_bracket.find(']') else {
            return Err("section header without ']'");
        };
        let name = after_bracket[..close].trim();
        if name.is_empty() {
            return Err("empty section name");
        }
        if !only_comment_left(&after_bracket[close + 1..]) {
            return Err("text after section header");
        }
        return Ok(Some(Item::Section(name.to_string())));
    }
    let Some(eq) = trimmed.find('=') else {
        return Err("expected 'key = value'");
    };
    let key = trimmed[..eq].trim();
    if key.is_empty() {
        return Err("empty key");
    }
    if key.contains(['[', '"', '\'']) || key.chars().any(is_comment_start) {
        return Err("invalid character in key");
    }
    let value = lex_value(&trimmed[eq + 1..])?;
    Ok(Some(Item::Entry(key.to_string(), value)))
}

fn only_comment_left(rest: &str) -> bool {
    let rest = rest.trim_start();
    rest.is_empty() || rest.starts_with(is_comment_start)
}

/// Unquotes and unescapes a value, dropping a trailing comment.
fn lex_value(raw: &str) -> Result<String, &'static str> {
    let raw = raw.trim_start();
    let mut chars = raw.char_indices();
    let mut value = String::new();
    match raw.chars().next() {
        Some(quote @ ('"' | '\'')) => {
            chars.next();
            let mut escaped = false;
            for (at, c) in chars {
                if escaped {
                    value.push(c);
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == quote {
                    if !only_comment_left(&raw[at + c.len_utf8()..]) {
                        return Err("text after closing quote");
                    }
                    return Ok(value);
                } else {
                    value.push(c);
                }
            }
            Err("unterminated quote")
        }
        _ => {
            let mut escaped = false;
            // Trailing whitespace is trimmed, but an escaped space is kept.
            let mut keep_len = 0;
            for (_, c) in chars {
                if escaped {
                    value.push(c);
                    keep_len = value.len();
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if is_comment_start(c) {
                    break;
                } else {
                    value.push(c);
                    if !c.is_whitespace() {
                        keep_len = value.len();
                    }
                }
            }
            value.truncate(keep_len);
            Ok(value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<Item> {
        lex(text).unwrap().into_iter().map(|l| l.item).collect()
    }

    #[test]
    fn lexes_sections_entries_comments_quotes_and_continuations() {
        let text = "# comment\n; other\n[client.a]  # trailing\n\tkey = abc ; note\n  caps mon = \"allow r # x\"\nk2='single' \nlong = one \\\n two\nesc = a\\;b\\ \n";
        assert_eq!(
            entries(text),
            vec![
                Item::Section("client.a".into()),
                Item::Entry("key".into(), "abc".into()),
                Item::Entry("caps mon".into(), "allow r # x".into()),
                Item::Entry("k2".into(), "single".into()),
                Item::Entry("long".into(), "one  two".into()),
                Item::Entry("esc".into(), "a;b ".into()),
            ]
        );
        let lines = lex("\n\n[x]\r\na = \"q\\\"uote\"\r\n").unwrap();
        assert_eq!(lines[0].number, 3);
        assert_eq!(lines[1].item, Item::Entry("a".into(), "q\"uote".into()));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        for (text, line, reason) in [
            ("[a]\nnot a setting\n", 2, "expected"),
            ("[a\n", 1, "without ']'"),
            ("[]\n", 1, "empty section"),
            ("[a] b\n", 1, "after section"),
            ("[a]\nk = \"open\n", 2, "unterminated"),
            ("[a]\nk = \"v\" extra\n", 2, "after closing"),
            ("[a]\n = v\n", 2, "empty key"),
        ] {
            let (at, why) = lex(text).unwrap_err();
            assert_eq!(at, line, "{text:?}");
            assert!(why.contains(reason), "{text:?}: {why}");
        }
    }
}
