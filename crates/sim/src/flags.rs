//! Parsing and validation of the simulator's command-line values: resource quantities
//! (`32`, `500m`, `256Gi`), node labels (`k=v,k2=v2`), taints (`key=value:Effect,key:Effect`)
//! and the node name prefix. The rules are upstream's (`resource.Quantity`, label keys and
//! values, taint effects), so a value accepted here is accepted by the API server.
//!
//! Each function fits clap's `value_parser`: it takes the flag's text and returns the value or
//! a [`FlagError`] whose message says what is wrong in one line.

use std::collections::BTreeMap;

pub use k8s_openapi::api::core::v1::Taint;
pub use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A command-line value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    /// Not a Kubernetes quantity.
    #[error(
        "{0:?} is not a quantity: give a number with an optional suffix, e.g. 32, 500m, 256Gi, 1e3"
    )]
    Quantity(String),
    /// A negative quantity where only sizes make sense.
    #[error("{0:?} is negative: capacity cannot be negative")]
    NegativeQuantity(String),
    /// A `k=v` list entry without `=`.
    #[error("label {0:?} has no '=': give labels as key=value[,key=value...]")]
    LabelSyntax(String),
    /// A label (or taint) key upstream would refuse.
    #[error(
        "{0:?} is not a valid key: [prefix/]name, name of at most 63 characters [A-Za-z0-9-_.] starting and ending alphanumeric, prefix a DNS subdomain"
    )]
    Key(String),
    /// A label (or taint) value upstream would refuse.
    #[error(
        "{0:?} is not a valid value: at most 63 characters [A-Za-z0-9-_.], starting and ending alphanumeric"
    )]
    Value(String),
    /// The same label key twice.
    #[error("label {0:?} is given twice")]
    DuplicateLabel(String),
    /// A taint without `:Effect`.
    #[error("taint {0:?} has no effect: give key=value:Effect or key:Effect")]
    TaintSyntax(String),
    /// A taint effect other than the three upstream ones.
    #[error("taint effect {0:?} is not one of NoSchedule, PreferNoSchedule, NoExecute")]
    TaintEffect(String),
    /// A node name prefix that would not make valid node names.
    #[error(
        "name prefix {0:?} does not make valid node names: use lowercase letters, digits, '-' and '.', starting with a letter or digit"
    )]
    NamePrefix(String),
}

/// Parses a Kubernetes quantity (`<number><suffix>`: suffixes `n u m k M G T P E`,
/// `Ki Mi Gi Ti Pi Ei`, or an exponent `e3`/`E-2`) and refuses negative values.
pub fn parse_quantity(text: &str) -> Result<Quantity, FlagError> {
    let s = text.trim();
    let err = || FlagError::Quantity(text.to_string());
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    if !valid_number(number) || !valid_suffix(suffix) {
        return Err(err());
    }
    if negative && number.bytes().any(|b| b.is_ascii_digit() && b != b'0') {
        return Err(FlagError::NegativeQuantity(text.to_string()));
    }
    Ok(Quantity(s.to_string()))
}

/// `<digits>`, `<digits>.<digits>`, `<digits>.` or `.<digits>`.
fn valid_number(n: &str) -> bool {
    let (int, frac) = n.split_once('.').unwrap_or((n, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty())
}

fn valid_suffix(suffix: &str) -> bool {
    const SI: &[&str] = &[
        "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    if SI.contains(&suffix) {
        return true;
    }
    // Decimal exponent: e|E followed by a signed integer.
    let Some(exp) = suffix.strip_prefix(['e', 'E']) else {
        return false;
    };
    let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    !exp.is_empty() && exp.bytes().all(|b| b.is_ascii_digit())
}

/// Parses `key=value[,key=value...]` (an empty text is no labels).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, FlagError> {
    let mut labels = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (key, value) = entry
            .split_once('=')
            .ok_or_else(|| FlagError::LabelSyntax(entry.to_string()))?;
        validate_key(key)?;
        validate_value(value)?;
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(FlagError::DuplicateLabel(key.to_string()));
        }
    }
    Ok(labels)
}

/// Parses `key=value:Effect` / `key:Effect` entries separated by commas.
pub fn parse_taints(text: &str) -> Result<Vec<Taint>, FlagError> {
    let mut taints = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (key_value, effect) = entry
            .rsplit_once(':')
            .ok_or_else(|| FlagError::TaintSyntax(entry.to_string()))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(FlagError::TaintEffect(effect.to_string()));
        }
        let (key, value) = match key_value.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (key_value, None),
        };
        validate_key(key)?;
        if let Some(v) = value {
            validate_value(v)?;
        }
        taints.push(Taint {
            key: key.to_string(),
            value: value.filter(|v| !v.is_empty()).map(str::to_string),
            effect: effect.to_string(),
            time_added: None,
        });
    }
    Ok(taints)
}

/// Checks that `<prefix><index>` is a valid node name (a DNS subdomain) for every index.
pub fn parse_name_prefix(text: &str) -> Result<String, FlagError> {
    let ok = !text.is_empty()
        && text.len() <= 240
        && text.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !text.contains("..")
        && !text.contains(".-")
        && !text.contains("-.");
    if ok {
        Ok(text.to_string())
    } else {
        Err(FlagError::NamePrefix(text.to_string()))
    }
}

/// A qualified name: `[prefix/]name` (label keys, taint keys).
fn validate_key(key: &str) -> Result<(), FlagError> {
    let err = || FlagError::Key(key.to_string());
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Err(err());
    }
    if name.is_empty() || !is_label_value(name) {
        return Err(err());
    }
    Ok(())
}

fn validate_value(value: &str) -> Result<(), FlagError> {
    if is_label_value(value) {
        Ok(())
    } else {
        Err(FlagError::Value(value.to_string()))
    }
}

/// Empty, or at most 63 of `[A-Za-z0-9-_.]` starting and ending alphanumeric.
fn is_label_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    v.len() <= 63
        && v.starts_with(alnum)
        && v.ends_with(alnum)
        && v.chars()
            .all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated labels of `[a-z0-9-]`
/// starting and ending alphanumeric.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
            !label.is_empty()
                && label.len() <= 63
                && label.starts_with(lower_alnum)
                && label.ends_with(lower_alnum)
                && label.chars().all(|c| lower_alnum(c) || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_upstream_grammar() {
        for ok in [
            "32", "0", "500m", "1.5", ".5", "2.", "256Gi", "1Ki", "100M", "1e3", "1E-2", "3e+2",
            "+4", "7Ei", "10n", "10u", " 8 ",
        ] {
            assert!(parse_quantity(ok).is_ok(), "{ok} should parse");
        }
        assert_eq!(parse_quantity("256Gi").unwrap(), Quantity("256Gi".into()));
        assert_eq!(parse_quantity(" 8 ").unwrap(), Quantity("8".into()));
        for bad in [
            "", "Gi", "abc", "1.2.3", "1GB", "1g", "1Gi2", "1e", "1e+", "e3", "1 Gi", ".", "1KiB",
        ] {
            assert_eq!(
                parse_quantity(bad),
                Err(FlagError::Quantity(bad.into())),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(
            parse_quantity("-1"),
            Err(FlagError::NegativeQuantity("-1".into()))
        );
        assert!(parse_quantity("-0").is_ok());
    }

    #[test]
    fn labels_are_key_value_pairs_with_upstream_rules() {
        let labels = parse_labels("zone=a, tier=web,example.com/team=x_y.z,empty=").unwrap();
        assert_eq!(labels.len(), 4);
        assert_eq!(labels["zone"], "a");
        assert_eq!(labels["example.com/team"], "x_y.z");
        assert_eq!(labels["empty"], "");
        assert!(parse_labels("").unwrap().is_empty());
        assert_eq!(
            parse_labels("zone"),
            Err(FlagError::LabelSyntax("zone".into()))
        );
        assert_eq!(parse_labels("-a=b"), Err(FlagError::Key("-a".into())));
        assert_eq!(
            parse_labels("Example.com/a=b"),
            Err(FlagError::Key("Example.com/a".into()))
        );
        assert_eq!(parse_labels("a/=b"), Err(FlagError::Key("a/".into())));
        assert_eq!(parse_labels("a=b c"), Err(FlagError::Value("b c".into())));
        let long = "x".repeat(64);
        assert_eq!(
            parse_labels(&format!("a={long}")),
            Err(FlagError::Value(long.clone()))
        );
        assert_eq!(
            parse_labels("a=1,a=2"),
            Err(FlagError::DuplicateLabel("a".into()))
        );
    }

    #[test]
    fn taints_have_key_optional_value_and_effect() {
        let taints = parse_taints(
            "dedicated=sim:NoSchedule,example.com/gpu:NoExecute,soft=:PreferNoSchedule",
        )
        .unwrap();
        assert_eq!(taints.len(), 3);
        assert_eq!(taints[0].key, "dedicated");
        assert_eq!(taints[0].value.as_deref(), Some("sim"));
        assert_eq!(taints[0].effect, "NoSchedule");
        assert_eq!(taints[1].key, "example.com/gpu");
        assert_eq!(taints[1].value, None);
        assert_eq!(taints[1].effect, "NoExecute");
        assert_eq!(taints[2].value, None);
        assert!(parse_taints("").unwrap().is_empty());
        assert_eq!(
            parse_taints("dedicated=sim"),
            Err(FlagError::TaintSyntax("dedicated=sim".into()))
        );
        assert_eq!(
            parse_taints("a=b:Never"),
            Err(FlagError::TaintEffect("Never".into()))
        );
        assert_eq!(
            parse_taints("a b:NoSchedule"),
            Err(FlagError::Key("a b".into()))
        );
        assert_eq!(
            parse_taints("a=b!:NoSchedule"),
            Err(FlagError::Value("b!".into()))
        );
    }

    #[test]
    fn name_prefixes_must_make_dns_names() {
        for ok in ["sim-", "sim", "a.b-", "n1-"] {
            assert!(parse_name_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Sim-", "-sim", "sim_", "a..b", "a.-b", "sim/"] {
            assert!(parse_name_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_are_one_line() {
        for e in [
            parse_quantity("x").unwrap_err(),
            parse_labels("x").unwrap_err(),
            parse_taints("x").unwrap_err(),
            parse_name_prefix("X").unwrap_err(),
        ] {
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
        }
    }
}
