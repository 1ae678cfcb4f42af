//! The central config's rules (`ceph config set|rm`): which options it takes and how their
//! values are checked, against the option table Quarry knows (`quarry_conf::options`). The
//! values themselves live in `MonState::config` (replicated with the rest of the state).

use quarry_conf::{is_known, option_spec, parse_bool, parse_size, OptionKind};

use crate::log_op::OpError;

/// Checks `key` (dashes or spaces allowed, as Ceph) and, for a set, `value`; returns the
/// canonical key (underscores). An unknown key is Ceph's `unrecognized config option 'KEY'`
/// (EINVAL); a bad value names what was expected.
pub fn check_option(key: &str, value: Option<&str>) -> Result<String, OpError> {
    let canonical = quarry_conf::normalize_key(key);
    // Every user with `mon 'allow r'` (every client) reads the central config: no secrets.
    if canonical == "key" && value.is_some() {
        return Err(OpError::inval(
            "the central config is readable by every user: keep keys in keyrings, not in 'key'",
        ));
    }
    let Some(spec) = option_spec(&canonical) else {
        // Ceph's options Quarry accepts and ignores are stored as given.
        if is_known(&canonical) {
            return Ok(canonical);
        }
        return Err(OpError::inval(format!("unrecognized config option '{}'", key.escape_debug())));
    };
    let Some(value) = value else {
        return Ok(canonical);
    };
    let bad = |what: &str| {
        OpError::inval(format!("error parsing value: '{}': {what}", value.escape_debug()))
    };
    match spec.kind {
        OptionKind::Str => {}
        OptionKind::Int => {
            value.trim().parse::<i64>().map_err(|_| bad("expected an integer"))?;
        }
        OptionKind::Bool => {
            parse_bool(value).map_err(bad)?;
        }
        OptionKind::Size => {
            parse_size(value).map_err(bad)?;
        }
        OptionKind::Float => {
            value.trim().parse::<f64>().map_err(|_| bad("expected a number"))?;
        }
        OptionKind::Choice(words) => {
            let ok = value
                .split([',', ' '])
                .filter(|w| !w.is_empty())
                .all(|w| words.contains(&w.trim()));
            if !ok {
                return Err(bad(&format!("expected one of {}", words.join(", "))));
            }
        }
    }
    Ok(canonical)
}
