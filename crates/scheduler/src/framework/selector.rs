//! Label selectors, node selector terms and taints/tolerations, parsed once per pod or node
//! and matched without allocating.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of an object (an empty map when it has none).
pub type Labels = BTreeMap<String, String>;

static EMPTY_LABELS: Labels = BTreeMap::new();

/// The labels of a node, or an empty map.
pub fn node_labels(node: &Node) -> &Labels {
    node.metadata.labels.as_ref().unwrap_or(&EMPTY_LABELS)
}

/// The labels of a pod, or an empty map.
pub fn pod_labels(pod: &Pod) -> &Labels {
    pod.metadata.labels.as_ref().unwrap_or(&EMPTY_LABELS)
}

/// A label selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label's value, an integer, is greater than the only value (node selectors).
    Gt,
    /// The label's value, an integer, is less than the only value (node selectors).
    Lt,
}

impl Op {
    fn parse(op: &str) -> Option<Self> {
        Some(match op {
            "In" => Self::In,
            "NotIn" => Self::NotIn,
            "Exists" => Self::Exists,
            "DoesNotExist" => Self::DoesNotExist,
            "Gt" => Self::Gt,
            "Lt" => Self::Lt,
            _ => return None,
        })
    }
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: Op,
    /// The values (`In`/`NotIn`; one integer for `Gt`/`Lt`).
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Op::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::NotIn => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Gt | Op::Lt => {
                let (Some(v), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Op::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

/// A parsed label selector. `Nothing` (a missing or invalid selector where upstream treats
/// it so) matches no object; an empty selector matches every object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Matches nothing.
    Nothing,
    /// Matches objects whose labels meet every requirement (none: everything).
    Requirements(Vec<Requirement>),
}

impl Selector {
    /// Matches every object.
    #[must_use]
    pub fn everything() -> Self {
        Self::Requirements(Vec::new())
    }

    /// Upstream's `LabelSelectorAsSelector`: `None` matches nothing, `{}` everything.
    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Self {
        let Some(sel) = sel else {
            return Self::Nothing;
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement {
                key: k.clone(),
                op: Op::In,
                values: vec![v.clone()],
            });
        }
        for e in sel.match_expressions.iter().flatten() {
            let Some(op) = Op::parse(&e.operator).filter(|o| !matches!(o, Op::Gt | Op::Lt)) else {
                return Self::Nothing;
            };
            reqs.push(Requirement {
                key: e.key.clone(),
                op,
                values: e.values.clone().unwrap_or_default(),
            });
        }
        Self::Requirements(reqs)
    }

    /// Adds `key = value` requirements (for `matchLabelKeys`).
    pub fn add_equal(&mut self, key: &str, value: &str) {
        if let Self::Requirements(reqs) = self {
            reqs.push(Requirement {
                key: key.to_string(),
                op: Op::In,
                values: vec![value.to_string()],
            });
        }
    }

    /// Whether `labels` match.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Self::Nothing => false,
            Self::Requirements(reqs) => reqs.iter().all(|r| r.matches(labels)),
        }
    }

    /// Matches everything (an empty selector).
    pub fn is_everything(&self) -> bool {
        matches!(self, Self::Requirements(r) if r.is_empty())
    }
}

/// One parsed node selector term: label expressions and `metadata.name` field expressions,
/// all of which must hold. An empty or invalid term matches no node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTerm {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
    valid: bool,
}

impl NodeTerm {
    /// Parses a term.
    pub fn parse(term: &NodeSelectorTerm) -> Self {
        let mut valid = true;
        let mut conv = |reqs: Option<&Vec<NodeSelectorRequirement>>, fields: bool| {
            let mut out = Vec::new();
            for r in reqs.into_iter().flatten() {
                match Op::parse(&r.operator) {
                    Some(op) if !fields || matches!(op, Op::In | Op::NotIn) => {
                        if fields && r.key != "metadata.name" {
                            valid = false;
                        }
                        if matches!(op, Op::Gt | Op::Lt)
                            && r.values
                                .as_ref()
                                .is_none_or(|v| v.len() != 1 || v[0].parse::<i64>().is_err())
                        {
                            valid = false;
                        }
                        out.push(Requirement {
                            key: r.key.clone(),
                            op,
                            values: r.values.clone().unwrap_or_default(),
                        })
                    }
                    _ => valid = false,
                }
            }
            out
        };
        let labels = conv(term.match_expressions.as_ref(), false);
        let fields = conv(term.match_fields.as_ref(), true);
        let valid = valid && (!labels.is_empty() || !fields.is_empty());
        Self {
            labels,
            fields,
            valid,
        }
    }

    /// Whether the node matches.
    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        if !self.valid {
            return false;
        }
        if !self.labels.iter().all(|r| r.matches(labels)) {
            return false;
        }
        self.fields.iter().all(|r| {
            let found = r.values.iter().any(|v| v == node_name);
            if r.op == Op::In { found } else { !found }
        })
    }

    /// The node names a term is restricted to by `metadata.name In (...)`, if any.
    pub fn name_restriction(&self) -> Option<Vec<String>> {
        if !self.valid {
            return Some(Vec::new());
        }
        self.fields
            .iter()
            .filter(|r| r.op == Op::In)
            .map(|r| r.values.clone())
            .reduce(|a, b| a.into_iter().filter(|x| b.contains(x)).collect())
    }
}

/// Parsed terms of a node selector (ORed). No terms: matches no node.
pub fn node_selector_terms(sel: &NodeSelector) -> Vec<NodeTerm> {
    sel.node_selector_terms
        .iter()
        .map(NodeTerm::parse)
        .collect()
}

/// A taint effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// `NoSchedule`.
    NoSchedule,
    /// `PreferNoSchedule`.
    PreferNoSchedule,
    /// `NoExecute`.
    NoExecute,
    /// Anything else.
    Other,
}

impl Effect {
    /// Parses an effect name.
    pub fn parse(s: &str) -> Self {
        match s {
            "NoSchedule" => Self::NoSchedule,
            "PreferNoSchedule" => Self::PreferNoSchedule,
            "NoExecute" => Self::NoExecute,
            _ => Self::Other,
        }
    }
}

/// Whether `toleration` tolerates `taint` (upstream's `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("") {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        "Exists" => true,
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The pod's tolerations (empty when none).
pub fn pod_tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

/// The node's taints (empty when none).
pub fn node_taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        assert!(!Selector::from_label_selector(None).matches(&labels(&[])));
        assert!(
            Selector::from_label_selector(Some(&LabelSelector::default())).matches(&labels(&[]))
        );
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        let s = Selector::from_label_selector(Some(&sel));
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "db")])));
    }

    #[test]
    fn node_terms() {
        let term = NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "cores".into(),
                operator: "Gt".into(),
                values: Some(vec!["4".into()]),
            }]),
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec!["n1".into(), "n2".into()]),
            }]),
        };
        let t = NodeTerm::parse(&term);
        assert!(t.matches("n1", &labels(&[("cores", "8")])));
        assert!(!t.matches("n3", &labels(&[("cores", "8")])));
        assert!(!t.matches("n1", &labels(&[("cores", "2")])));
        assert_eq!(t.name_restriction(), Some(vec!["n1".into(), "n2".into()]));
        assert!(!NodeTerm::parse(&NodeSelectorTerm::default()).matches("n1", &labels(&[])));
    }

    #[test]
    fn tolerations() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tol = |key: Option<&str>,
                   op: Option<&str>,
                   value: Option<&str>,
                   effect: Option<&str>| Toleration {
            key: key.map(Into::into),
            operator: op.map(Into::into),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            toleration_seconds: None,
        };
        assert!(tolerates(&tol(Some("k"), None, Some("v"), None), &taint));
        assert!(tolerates(
            &tol(Some("k"), Some("Exists"), None, Some("NoSchedule")),
            &taint
        ));
        assert!(tolerates(&tol(None, Some("Exists"), None, None), &taint));
        assert!(!tolerates(&tol(Some("k"), None, Some("w"), None), &taint));
        assert!(!tolerates(
            &tol(Some("k"), Some("Exists"), None, Some("NoExecute")),
            &taint
        ));
    }
}
