//! Output helpers of the `ceph` and `rados` commands that are not cluster views: a `println!`
//! that survives a closed stdout, numbers as C++ streams print them, Ceph's hexdumps, and the
//! python-rados error line. The cluster views (status, df, trees, dumps) are rendered by
//! `quarry_client::admin`, which also serves `rados_mon_command`.

use std::fmt::Write as _;
use std::io::Write as _;

use quarry_types::ErrorCode;

/// `println!` that never panics: a closed stdout (`quarry up | head -1`, `rados bench | head`)
/// must not kill a running cluster or benchmark, so write errors are ignored.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// The text python-rados gives a failed call (`rados.Error.__str__`), as the `ceph` tool
/// prints it when it cannot connect:
/// `[errno 1] RADOS permission error (error connecting to the cluster)`.
pub fn rados_python_error(code: ErrorCode, context: &str) -> String {
    let class = match code.0 {
        1 => Some("RADOS permission error"),
        2 => Some("RADOS object not found"),
        5 => Some("RADOS I/O error"),
        13 => Some("RADOS permission denied"),
        16 => Some("RADOS object busy"),
        17 => Some("RADOS object exists"),
        22 => Some("RADOS invalid argument"),
        28 => Some("RADOS no space"),
        34 => Some("RADOS out of range"),
        61 => Some("RADOS no data"),
        108 => Some("RADOS connection shutdown"),
        110 => Some("RADOS timed out"),
        _ => None,
    };
    match class {
        Some(class) => format!("[errno {}] {class} ({context})", code.0),
        None => format!("[errno {}] {context}", code.0),
    }
}

/// A number as a C++ `ostream` prints a double with its default precision of 6 significant
/// digits (`%g`): `10.1951`, `194.604`, `0.0789473`, `48`.
pub fn g6(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "nan".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    // Rounding to 6 significant digits may carry into the next power of ten.
    let sci = format!("{v:.5e}");
    let exp = sci.split_once('e').and_then(|(_, e)| e.parse::<i32>().ok()).unwrap_or(exp);
    if !(-5..6).contains(&exp) {
        let (mantissa, _) = sci.split_once('e').unwrap_or((&sci, ""));
        let mantissa = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let decimals = (5 - exp).max(0) as usize;
    trim_fraction(&format!("{v:.decimals$}")).to_string()
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Ceph's `bufferlist::hexdump`, which imitates `hexdump -C`: 16 bytes a row, a `*` for runs
/// of rows that repeat one byte, and a final line with the length. Empty input prints nothing.
pub fn hexdump(data: &[u8]) -> String {
    let mut out = String::new();
    if data.is_empty() {
        return out;
    }
    const PER: usize = 16;
    let mut last_row_byte = data[0];
    let mut was_same = false;
    let mut did_star = false;
    let mut o = 0;
    while o < data.len() {
        if o + PER < data.len() {
            let mut row_is_same = true;
            for i in 0..PER.min(data.len() - o) {
                let c = data[o + i];
                if c != last_row_byte {
                    if i == 0 {
                        last_row_byte = c;
                        was_same = false;
                        did_star = false;
                    } else {
                        row_is_same = false;
                    }
                }
            }
            if row_is_same {
                if was_same {
                    if !did_star {
                        out.push_str("\n*");
                        did_star = true;
                    }
                    o += PER;
                    continue;
                }
                was_same = true;
            } else {
                was_same = false;
                did_star = false;
            }
        }
        if o > 0 {
            out.push('\n');
        }
        let _ = write!(out, "{o:08x} ");
        let row = &data[o..(o + PER).min(data.len())];
        for i in 0..PER {
            if i == 8 {
                out.push(' ');
            }
            match row.get(i) {
                Some(b) => {
                    let _ = write!(out, " {b:02x}");
                }
                None => out.push_str("   "),
            }
        }
        out.push_str("  |");
        for &b in row {
            let printable = b.is_ascii_alphanumeric() || b == b' ' || b.is_ascii_punctuation();
            out.push(if printable { b as char } else { '.' });
        }
        out.push('|');
        o += PER;
    }
    let _ = write!(out, "\n{:08x}\n", data.len());
    out
}

/// Writes `bytes` to stdout and flushes. A closed pipe (`| head`) is not an error worth
/// reporting: the caller stops quietly.
pub fn stdout_bytes(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_like_cpp_streams() {
        assert_eq!(g6(10.19512), "10.1951");
        assert_eq!(g6(194.6041), "194.604");
        assert_eq!(g6(0.07894731), "0.0789473");
        assert_eq!(g6(48.0), "48");
        assert_eq!(g6(0.0), "0");
        assert_eq!(g6(1234567.0), "1.23457e+06");
        assert_eq!(g6(0.000001234), "1.234e-06");
        assert_eq!(g6(999999.7), "1e+06");
    }

    #[test]
    fn hexdump_matches_hexdump_c() {
        assert_eq!(
            hexdump(b"hello"),
            "00000000  68 65 6c 6c 6f                                    |hello|\n00000005\n"
        );
        let all: Vec<u8> = (0u8..20).collect();
        assert_eq!(
            hexdump(&all),
            "00000000  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  |................|\n\
             00000010  10 11 12 13                                       |....|\n00000014\n"
        );
        let zeros = vec![0u8; 64];
        assert_eq!(
            hexdump(&zeros),
            "00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n*\n\
             00000030  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n00000040\n"
        );
        assert_eq!(hexdump(b""), "");
    }

    #[test]
    fn python_errors() {
        assert_eq!(
            rados_python_error(ErrorCode::EPERM, "error connecting to the cluster"),
            "[errno 1] RADOS permission error (error connecting to the cluster)"
        );
        assert_eq!(
            rados_python_error(ErrorCode(71), "error connecting to the cluster"),
            "[errno 71] error connecting to the cluster"
        );
    }
}
