//! Label and field selectors, as in `?labelSelector=app=web,tier!=db` and
//! `?fieldSelector=metadata.name=x`.
//!
//! Label selectors support `=`, `==`, `!=`, `in (...)`, `notin (...)`, `key` (exists) and
//! `!key` (does not exist). Field selectors support `=`, `==` and `!=` on the fields a
//! resource declares selectable.

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` / `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value` / `key notin (a,b)` (also matches objects without the key).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// A selector that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn check_key(key: &str) -> Result<String, SelectorError> {
    let key = key.trim();
    let ok = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(key.to_string())
    } else {
        Err(SelectorError(format!("invalid label key \"{key}\"")))
    }
}

fn check_value(v: &str) -> Result<String, SelectorError> {
    let v = v.trim();
    let ok = v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(v.to_string())
    } else {
        Err(SelectorError(format!("invalid label value: \"{v}\"")))
    }
}

fn set(values: &str) -> Result<Vec<String>, SelectorError> {
    let inner = values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("found '{values}', expected: '('")))?;
    inner.split(',').map(check_value).collect()
}

impl LabelSelector {
    /// Parses `?labelSelector=`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                return Err(SelectorError("found ',', expected: identifier".into()));
            }
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotIn(check_key(k)?, vec![check_value(v)?])
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::In(check_key(k)?, vec![check_value(v)?])
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::In(check_key(k)?, vec![check_value(v)?])
            } else if let Some((k, v)) = part.split_once(" notin ") {
                Requirement::NotIn(check_key(k)?, set(v)?)
            } else if let Some((k, v)) = part.split_once(" in ") {
                Requirement::In(check_key(k)?, set(v)?)
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::DoesNotExist(check_key(k)?)
            } else {
                Requirement::Exists(check_key(part)?)
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Whether `labels` (key, value pairs) satisfy every requirement.
    pub fn matches<'a>(&self, labels: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::In(k, vs) => labels(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => labels(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            Requirement::Exists(k) => labels(k).is_some(),
            Requirement::DoesNotExist(k) => labels(k).is_none(),
        })
    }

    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One field requirement: `field=value` (`equal`) or `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field path (`metadata.name`).
    pub field: String,
    /// The value.
    pub value: String,
    /// `=`/`==` when true, `!=` when false.
    pub equal: bool,
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    /// Parses `?fieldSelector=`; `allowed` lists the fields the resource supports.
    pub fn parse(s: &str, allowed: &[&str]) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in s.split(',') {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !allowed.contains(&field) {
                return Err(SelectorError(format!("field label not supported: {field}")));
            }
            reqs.push(FieldRequirement {
                field: field.to_string(),
                value: value.trim().to_string(),
                equal,
            });
        }
        Ok(Self(reqs))
    }

    /// Whether the object's fields (looked up by path) satisfy every requirement.
    pub fn matches(&self, field: impl Fn(&str) -> String) -> bool {
        self.0
            .iter()
            .all(|r| (field(&r.field) == r.value) == r.equal)
    }
}

/// The fields a resource can be selected by, as upstream declares them.
pub fn selectable_fields(group: &str, resource: &str) -> &'static [&'static str] {
    match (group, resource) {
        ("", "pods") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "secrets") => &["metadata.name", "metadata.namespace", "type"],
        ("", "nodes") => &["metadata.name", "spec.unschedulable"],
        ("", "namespaces") => &["metadata.name", "status.phase"],
        ("", "replicationcontrollers") => {
            &["metadata.name", "metadata.namespace", "status.replicas"]
        }
        ("apps", "replicasets") => &["metadata.name", "metadata.namespace", "status.replicas"],
        ("batch", "jobs") => &["metadata.name", "metadata.namespace", "status.successful"],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn labels(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "web"), ("tier", "fe")]);
        let m = |s: &str| {
            LabelSelector::parse(s)
                .unwrap()
                .matches(|k| l.get(k).copied())
        };
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(m("app in (db, web),!missing"));
        assert!(m("tier notin (be)"));
        assert!(!m("app!=web"));
        assert!(!m("missing"));
        assert!(m(""));
        assert!(LabelSelector::parse("app=we b").is_err());
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse(",").is_err());
    }

    #[test]
    fn field_selectors() {
        let allowed = selectable_fields("", "pods");
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", allowed).unwrap();
        assert!(s.matches(|f| match f {
            "spec.nodeName" => "n1".into(),
            _ => "Running".into(),
        }));
        let err = FieldSelector::parse("spec.bogus=1", allowed).unwrap_err();
        assert_eq!(err.0, "field label not supported: spec.bogus");
    }
}
