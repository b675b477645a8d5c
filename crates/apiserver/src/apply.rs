//! Server-side apply and `metadata.managedFields`, with upstream's semantics (the API
//! server's field manager over structured-merge-diff).
//!
//! Every object carries `metadata.managedFields`: one entry per field manager and operation,
//! each with the set of fields that manager owns in upstream's `FieldsV1` encoding
//! (`f:<field>`, `k:{<keys>}` for an item of an associative list, `v:<value>` for an item of
//! a set, `.` for a node that is itself owned). How the entries change:
//!
//! - a create, update or non-apply patch ([`track`], operation `Update`) diffs the stored
//!   object against the written one: the fields it added or changed move to the writer, the
//!   fields it removed leave every manager;
//! - an apply ([`apply`], operation `Apply`) merges the applied configuration into the live
//!   object structurally (maps by key, associative lists by their keys, other lists whole),
//!   removes the fields the manager applied before but no longer applies (unless another
//!   manager owns them), and fails with a 409 listing the fields another manager owns whose
//!   value it would change, unless forced; the manager then owns exactly what it applied;
//! - entries that own nothing are dropped; `Update` entries beyond ten are folded into an
//!   `ancient-changes` entry; `metadata.name` and the other server-set fields, `apiVersion`,
//!   `kind` and (outside the status subresource) `status` are never owned.
//!
//! Clients cannot corrupt the entries: a write whose managedFields do not decode keeps the
//! stored ones, a write of a list of empty entries (`[{}]`) resets them, and an apply must
//! not carry any.
//!
//! Which lists are associative and which objects are atomic comes from upstream's schema
//! tags, kept by field name in [`crate::patch::list_type`] and [`atomic_object`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;

use rkube_api::registry::ResourceInfo;
use serde_json::{Map, Value, json};

use crate::meta::{self, meta_str};
use crate::patch::{self, ListType};
use crate::status::{ApiError, ApiResult, Cause, Details};

/// Longest field manager name accepted (upstream's `FieldManagerMaxLength`).
pub const FIELD_MANAGER_MAX_LENGTH: usize = 128;

/// The annotation client-side `kubectl apply` keeps its last configuration in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manager that owns what an object held before its first apply, when it had no
/// managedFields.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// The manager old `Update` entries are folded into beyond [`MAX_UPDATE_MANAGERS`].
const ANCIENT_CHANGES: &str = "ancient-changes";

/// How many `Update` entries an object keeps (upstream's `DefaultMaxUpdateManagers`).
const MAX_UPDATE_MANAGERS: usize = 10;

static EMPTY_OBJECT: LazyLock<Value> = LazyLock::new(|| json!({}));

// ---------------------------------------------------------------------------------------
// Field sets
// ---------------------------------------------------------------------------------------

/// A set of field paths, kept as a tree of path elements in their `FieldsV1` spelling
/// (`f:spec`, `k:{"name":"web"}`, `v:"x"`, `i:0`). A node is a member of the set (the path
/// to it is in the set) or only leads to members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `path` (the empty path, the object itself, is never a member).
    pub fn insert(&mut self, path: &[String]) {
        if path.is_empty() {
            return;
        }
        let mut node = self;
        for pe in path {
            node = node.children.entry(pe.clone()).or_default();
        }
        node.member = true;
    }

    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        let mut node = self;
        for pe in path {
            node = node.children.get(pe)?;
        }
        Some(node)
    }

    /// Whether `path` is in the set.
    pub fn contains(&self, path: &[String]) -> bool {
        !path.is_empty() && self.node(path).is_some_and(|n| n.member)
    }

    /// Whether the set holds a path below `path`.
    pub fn has_below(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| !n.children.is_empty())
    }

    /// Whether the set has no member.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Drops nodes that lead to no member.
    fn prune_empty(&mut self) {
        self.children.retain(|_, c| {
            c.prune_empty();
            c.member || !c.children.is_empty()
        });
    }

    /// The paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.member |= other.member;
        for (pe, c) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    /// The paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                out.children.insert(pe.clone(), c.intersection(o));
            }
        }
        out.prune_empty();
        out
    }

    /// The paths of `self` that are not in `other` (paths below a member of `other` stay).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            let d = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), d);
        }
        out.prune_empty();
        out
    }

    /// The paths of `self` that neither are in `other` nor lie below one of its members.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            match other.children.get(pe) {
                Some(o) if o.member => {}
                Some(o) => {
                    out.children.insert(pe.clone(), c.recursive_difference(o));
                }
                None => {
                    out.children.insert(pe.clone(), c.clone());
                }
            }
        }
        out.prune_empty();
        out
    }

    /// Only the paths at or below `prefix`.
    fn restricted_to(&self, prefix: &[String]) -> FieldSet {
        let mut out = FieldSet::new();
        if let Some(node) = self.node(prefix) {
            let mut at = &mut out;
            for pe in prefix {
                at = at.children.entry(pe.clone()).or_default();
            }
            *at = node.clone();
        }
        out.prune_empty();
        out
    }

    /// Every member, parents before their children, in element order.
    pub fn paths(&self) -> Vec<Vec<String>> {
        fn walk(node: &FieldSet, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            for (pe, c) in &node.children {
                path.push(pe.clone());
                if c.member {
                    out.push(path.clone());
                }
                walk(c, path, out);
                path.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// The `FieldsV1` document: `{"f:spec": {"f:replicas": {}}, ...}`, with `".": {}` for a
    /// member that also has members below it.
    pub fn to_fields_v1(&self) -> Value {
        let mut out = Map::new();
        for (pe, c) in &self.children {
            let mut inner = match c.to_fields_v1() {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            if c.member && !c.children.is_empty() {
                inner.insert(".".into(), json!({}));
            }
            out.insert(pe.clone(), Value::Object(inner));
        }
        Value::Object(out)
    }

    /// Parses a `FieldsV1` document.
    pub fn from_fields_v1(doc: &Value) -> Result<FieldSet, String> {
        let Value::Object(m) = doc else {
            return Err("FieldsV1 must be a JSON object".into());
        };
        let mut out = FieldSet::new();
        for (k, v) in m {
            if !v.is_object() {
                return Err(format!("the value of {k:?} must be a JSON object"));
            }
            if k == "." {
                out.member = true;
                continue;
            }
            check_path_element(k)?;
            let mut child = FieldSet::from_fields_v1(v)?;
            // A leaf (`{}`) is a member; `.` marks an inner node as one.
            if child.children.is_empty() {
                child.member = true;
            }
            out.children.insert(k.clone(), child);
        }
        Ok(out)
    }
}

fn check_path_element(pe: &str) -> Result<(), String> {
    let bad = || format!("invalid path element {pe:?}");
    match pe.split_at_checked(2) {
        Some(("f:", name)) if !name.is_empty() => Ok(()),
        Some(("k:", keys)) => match serde_json::from_str::<Value>(keys) {
            Ok(Value::Object(m)) if !m.is_empty() => Ok(()),
            _ => Err(bad()),
        },
        Some(("v:", value)) => serde_json::from_str::<Value>(value)
            .map(|_| ())
            .map_err(|_| bad()),
        Some(("i:", index)) => index.parse::<u64>().map(|_| ()).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn field(name: &str) -> String {
    format!("f:{name}")
}

fn path_of(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| field(f)).collect()
}

/// A value as upstream prints it in a path: strings quoted, numbers and booleans bare.
fn value_string(v: &Value) -> String {
    match v {
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}={}", value_string(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(value_string).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// A path as upstream prints it: `.spec.template.spec.containers[name="web"].image`.
pub fn path_string(path: &[String]) -> String {
    let mut out = String::new();
    for pe in path {
        let (kind, rest) = pe.split_at_checked(2).unwrap_or(("", pe));
        match kind {
            "f:" => {
                out.push('.');
                out.push_str(rest);
            }
            "k:" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(m)) => {
                    let keys: Vec<String> = m
                        .iter()
                        .map(|(k, v)| format!("{k}={}", value_string(v)))
                        .collect();
                    out.push_str(&format!("[{}]", keys.join(",")));
                }
                _ => out.push_str(pe),
            },
            "v:" => match serde_json::from_str::<Value>(rest) {
                Ok(v) => out.push_str(&format!("[={}]", value_string(&v))),
                Err(_) => out.push_str(pe),
            },
            "i:" => out.push_str(&format!("[{rest}]")),
            _ => out.push_str(pe),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// What upstream's schema says about fields
// ---------------------------------------------------------------------------------------

/// Objects upstream marks atomic (`+structType=atomic`, `+mapType=atomic`): label
/// selectors, node selectors, object references inside env sources, role references.
pub fn atomic_object(fields: &[String]) -> bool {
    fields.last().is_some_and(|f| {
        matches!(
            f.as_str(),
            "selector"
                | "nodeSelector"
                | "podSelector"
                | "namespaceSelector"
                | "labelSelector"
                | "roleRef"
                | "secretKeyRef"
                | "configMapKeyRef"
                | "fieldRef"
                | "resourceFieldRef"
                | "requiredDuringSchedulingIgnoredDuringExecution"
        )
    })
}

fn list_kind(kind: &str, fields: &[String]) -> ListType {
    let Some(field) = fields.last() else {
        return ListType::Atomic;
    };
    let parent = fields.len().checked_sub(2).map(|i| fields[i].as_str());
    patch::list_type(kind, parent, field)
}

/// Structs that upstream's Go types always carry (non-pointer fields): a diff treats them
/// as present on both sides, so a create does not make their writer own the node itself.
fn always_present(fields: &[String]) -> bool {
    match fields {
        [f] => matches!(f.as_str(), "metadata" | "spec" | "status"),
        [.., p, f] => matches!(
            (p.as_str(), f.as_str()),
            (
                "spec",
                "template" | "strategy" | "updateStrategy" | "jobTemplate"
            ) | ("template" | "jobTemplate", "metadata" | "spec")
                | (
                    "containers" | "initContainers" | "ephemeralContainers",
                    "resources"
                )
                | ("status", "loadBalancer")
        ),
        [] => false,
    }
}

/// The path elements of a list's items (`k:{...}` or `v:...`), or why they cannot be built:
/// an item without a key field that has no default, or two items with the same key.
fn item_elements(list_type: ListType, items: &[Value]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let pe = match list_type {
            ListType::Map(keys) => {
                let Value::Object(m) = item else {
                    return Err(format!(
                        "element {i}: associative list with keys has an element that is not a map"
                    ));
                };
                let mut key = Map::new();
                for (name, default) in keys {
                    match (m.get(*name).filter(|v| !v.is_null()), default) {
                        (Some(v), _) => {
                            key.insert((*name).to_string(), v.clone());
                        }
                        (None, Some(d)) => {
                            key.insert((*name).to_string(), json!(d));
                        }
                        (None, None) => {
                            return Err(format!(
                                "element {i}: associative list with keys has an element that omits key field {name:?} (and doesn't have default value)"
                            ));
                        }
                    }
                }
                format!("k:{}", Value::Object(key))
            }
            ListType::Set => {
                if item.is_object() || item.is_array() {
                    return Err(format!(
                        "element {i}: set lists can only contain scalar values"
                    ));
                }
                format!("v:{item}")
            }
            ListType::Atomic => format!("i:{i}"),
        };
        if !seen.insert(pe.clone()) {
            return Err(format!(
                "duplicate entries for key {}",
                path_string(std::slice::from_ref(&pe))
            ));
        }
        out.push(pe);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Walks over objects: field sets, diffs, merge, prune
// ---------------------------------------------------------------------------------------

/// The fields an applied configuration sets: every scalar, every list item of an
/// associative list or set, atomic lists and objects whole, and empty or null values.
fn field_set_of(kind: &str, obj: &Value) -> Result<FieldSet, String> {
    fn walk(
        kind: &str,
        fields: &mut Vec<String>,
        path: &mut Vec<String>,
        v: &Value,
        out: &mut FieldSet,
    ) -> Result<(), String> {
        match v {
            Value::Object(m) => {
                if !path.is_empty() && atomic_object(fields) {
                    out.insert(path);
                    return Ok(());
                }
                for (k, child) in m {
                    fields.push(k.clone());
                    path.push(field(k));
                    walk(kind, fields, path, child, out)?;
                    if child.is_null() || child.as_object().is_some_and(Map::is_empty) {
                        out.insert(path);
                    }
                    path.pop();
                    fields.pop();
                }
            }
            Value::Array(items) => match list_kind(kind, fields) {
                ListType::Atomic => out.insert(path),
                lt => {
                    let pes = item_elements(lt, items)
                        .map_err(|e| format!("{}: {e}", path_string(path)))?;
                    for (item, pe) in items.iter().zip(pes) {
                        path.push(pe);
                        if matches!(lt, ListType::Map(_)) {
                            walk(kind, fields, path, item, out)?;
                        }
                        out.insert(path);
                        path.pop();
                    }
                }
            },
            _ => out.insert(path),
        }
        Ok(())
    }
    let mut out = FieldSet::new();
    walk(kind, &mut Vec::new(), &mut Vec::new(), obj, &mut out)?;
    Ok(out)
}

/// What changed between two versions of an object.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Comparison {
    /// Paths present only in the new version (with every node of a new subtree).
    pub added: FieldSet,
    /// Leaves (and atomic values) whose value changed.
    pub modified: FieldSet,
    /// Paths present only in the old version.
    pub removed: FieldSet,
}

impl Comparison {
    fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }

    fn filtered(&self, f: impl Fn(&FieldSet) -> FieldSet) -> Comparison {
        Comparison {
            added: f(&self.added),
            modified: f(&self.modified),
            removed: f(&self.removed),
        }
    }
}

/// Diffs `old` (`None`: a create) against `new`.
fn compare(kind: &str, old: Option<&Value>, new: &Value) -> Comparison {
    #[derive(PartialEq)]
    enum Shape {
        Object,
        List,
        Scalar,
    }
    fn shape(v: &Value) -> Shape {
        match v {
            Value::Object(_) => Shape::Object,
            Value::Array(_) => Shape::List,
            _ => Shape::Scalar,
        }
    }
    fn leaf(path: &[String], l: Option<&Value>, r: Option<&Value>, out: &mut Comparison) {
        match (l, r) {
            (None, Some(_)) => out.added.insert(path),
            (Some(_), None) => out.removed.insert(path),
            (Some(a), Some(b)) if a != b => out.modified.insert(path),
            _ => {}
        }
    }
    fn mark(path: &[String], l: Option<&Value>, r: Option<&Value>, out: &mut Comparison) {
        if l.is_none() {
            out.added.insert(path);
        } else if r.is_none() {
            out.removed.insert(path);
        }
    }
    fn walk(
        kind: &str,
        fields: &mut Vec<String>,
        path: &mut Vec<String>,
        l: Option<&Value>,
        r: Option<&Value>,
        out: &mut Comparison,
    ) {
        let (ls, rs) = (l.map(shape), r.map(shape));
        let sh = match (ls, rs) {
            (None, None) => return,
            (Some(a), Some(b)) if a != b => return leaf(path, l, r, out),
            (Some(a), _) | (None, Some(a)) => a,
        };
        match sh {
            Shape::Object => {
                let (lm, rm) = (l.and_then(Value::as_object), r.and_then(Value::as_object));
                let empty = |m: Option<&Map<String, Value>>| m.is_none_or(Map::is_empty);
                if (!path.is_empty() && atomic_object(fields)) || (empty(lm) && empty(rm)) {
                    return leaf(path, l, r, out);
                }
                let keys: BTreeSet<&String> = lm
                    .into_iter()
                    .flat_map(Map::keys)
                    .chain(rm.into_iter().flat_map(Map::keys))
                    .collect();
                for k in keys {
                    let (mut lc, mut rc) = (lm.and_then(|m| m.get(k)), rm.and_then(|m| m.get(k)));
                    fields.push(k.clone());
                    path.push(field(k));
                    if always_present(fields) {
                        if lc.is_none() && lm.is_some() && rc.is_some_and(Value::is_object) {
                            lc = Some(&EMPTY_OBJECT);
                        }
                        if rc.is_none() && rm.is_some() && lc.is_some_and(Value::is_object) {
                            rc = Some(&EMPTY_OBJECT);
                        }
                    }
                    walk(kind, fields, path, lc, rc, out);
                    path.pop();
                    fields.pop();
                }
                mark(path, l, r, out);
            }
            Shape::List => {
                let (la, ra) = (l.and_then(Value::as_array), r.and_then(Value::as_array));
                let empty = |a: Option<&Vec<Value>>| a.is_none_or(Vec::is_empty);
                let lt = list_kind(kind, fields);
                if lt == ListType::Atomic || (empty(la) && empty(ra)) {
                    return leaf(path, l, r, out);
                }
                let no_items = Vec::new();
                let (la, ra) = (la.unwrap_or(&no_items), ra.unwrap_or(&no_items));
                let (Ok(lk), Ok(rk)) = (item_elements(lt, la), item_elements(lt, ra)) else {
                    return leaf(path, l, r, out);
                };
                let rmap: HashMap<&String, &Value> = rk.iter().zip(ra).collect();
                let lmap: HashMap<&String, &Value> = lk.iter().zip(la).collect();
                let mut order: Vec<&String> = lk.iter().collect();
                order.extend(rk.iter().filter(|k| !lmap.contains_key(k)));
                for pe in order {
                    let (li, ri) = (lmap.get(pe).copied(), rmap.get(pe).copied());
                    path.push(pe.clone());
                    if matches!(lt, ListType::Map(_)) {
                        walk(kind, fields, path, li, ri, out);
                    } else {
                        leaf(path, li, ri, out);
                    }
                    path.pop();
                }
                mark(path, l, r, out);
            }
            Shape::Scalar => leaf(path, l, r, out),
        }
    }
    let mut out = Comparison::default();
    walk(
        kind,
        &mut Vec::new(),
        &mut Vec::new(),
        Some(old.unwrap_or(&EMPTY_OBJECT)),
        Some(new),
        &mut out,
    );
    out
}

/// The order of a merged list: items only in `live` keep their place, items in the
/// configuration follow its order (upstream's merge of associative lists).
fn merged_order(live: &[String], config: &[String]) -> Vec<(Option<usize>, Option<usize>)> {
    let live_at: HashMap<&String, usize> = live.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let config_at: HashMap<&String, usize> =
        config.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let shared: Vec<&String> = config.iter().filter(|k| live_at.contains_key(k)).collect();
    let mut next_shared = 0;
    let mut done: HashSet<&String> = HashSet::new();
    let mut out = Vec::with_capacity(live.len().max(config.len()));
    let (mut li, mut ci) = (0, 0);
    while li < live.len() || ci < config.len() {
        if li < live.len() && ci < config.len() && live[li] == config[ci] {
            out.push((Some(li), Some(ci)));
            done.insert(&live[li]);
            li += 1;
            ci += 1;
            next_shared += 1;
            continue;
        }
        if li < live.len() {
            let k = &live[li];
            if !config_at.contains_key(k) {
                out.push((Some(li), None));
                li += 1;
                continue;
            }
            let waiting = shared.get(next_shared).is_some_and(|n| *n != k);
            if done.contains(k) || waiting || ci >= config.len() {
                li += 1;
                continue;
            }
        }
        if ci < config.len() {
            let k = &config[ci];
            out.push((live_at.get(k).copied(), Some(ci)));
            done.insert(k);
            if shared.get(next_shared) == Some(&k) {
                next_shared += 1;
            }
            ci += 1;
        }
    }
    out
}

/// Merges an applied configuration into the live object: objects key by key (atomic ones
/// replaced), associative lists and sets item by item, everything else replaced.
fn merge(kind: &str, fields: &mut Vec<String>, live: Option<&Value>, config: &Value) -> Value {
    match (live, config) {
        (Some(Value::Object(lm)), Value::Object(cm))
            if fields.is_empty() || !atomic_object(fields) =>
        {
            let mut out = lm.clone();
            for (k, cv) in cm {
                fields.push(k.clone());
                let v = merge(kind, fields, lm.get(k), cv);
                fields.pop();
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        (Some(Value::Array(la)), Value::Array(ca)) => {
            let lt = list_kind(kind, fields);
            if lt == ListType::Atomic {
                return config.clone();
            }
            let (Ok(lk), Ok(ck)) = (item_elements(lt, la), item_elements(lt, ca)) else {
                return config.clone();
            };
            let items = merged_order(&lk, &ck)
                .into_iter()
                .filter_map(|pair| match pair {
                    (Some(l), Some(c)) if matches!(lt, ListType::Map(_)) => {
                        Some(merge(kind, fields, Some(&la[l]), &ca[c]))
                    }
                    (_, Some(c)) => Some(ca[c].clone()),
                    (Some(l), None) => Some(la[l].clone()),
                    (None, None) => None,
                })
                .collect();
            Value::Array(items)
        }
        _ => config.clone(),
    }
}

/// Removes what the applying manager applied last time (`last`) but nobody owns now
/// (`owned`: every manager's set, the new configuration's included). Object fields count
/// as owned when anything below them is (upstream's "named fields are members").
fn prune(
    kind: &str,
    fields: &mut Vec<String>,
    path: &mut Vec<String>,
    v: &mut Value,
    last: &FieldSet,
    owned: &FieldSet,
) {
    match v {
        Value::Object(m) => {
            if !path.is_empty() && atomic_object(fields) {
                return;
            }
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                fields.push(k.clone());
                path.push(field(&k));
                let in_last = last.contains(path) || last.has_below(path);
                let is_owned = owned.contains(path) || owned.has_below(path);
                if in_last && !is_owned {
                    m.remove(&k);
                } else if last.has_below(path)
                    && let Some(child) = m.get_mut(&k)
                {
                    prune(kind, fields, path, child, last, owned);
                }
                path.pop();
                fields.pop();
            }
        }
        Value::Array(items) => {
            let lt = list_kind(kind, fields);
            if lt == ListType::Atomic {
                return;
            }
            let Ok(pes) = item_elements(lt, items) else {
                return;
            };
            let mut kept = Vec::with_capacity(items.len());
            for (mut item, pe) in std::mem::take(items).into_iter().zip(pes) {
                path.push(pe);
                if last.contains(path) && !owned.contains(path) {
                    path.pop();
                    continue;
                }
                if matches!(lt, ListType::Map(_)) && last.has_below(path) {
                    prune(kind, fields, path, &mut item, last, owned);
                }
                path.pop();
                kept.push(item);
            }
            *items = kept;
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// managedFields entries
// ---------------------------------------------------------------------------------------

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    /// `Apply` or `Update`.
    operation: String,
    api_version: String,
    subresource: String,
    time: Option<String>,
    set: FieldSet,
}

impl Entry {
    /// Upstream's manager identifier: manager, operation, (for `Update`) apiVersion and
    /// subresource; time and fields never part of it.
    fn id(&self) -> String {
        let mut id = json!({"manager": self.manager, "operation": self.operation});
        if self.operation == "Update" {
            id["apiVersion"] = json!(self.api_version);
        }
        if !self.subresource.is_empty() {
            id["subresource"] = json!(self.subresource);
        }
        id.to_string()
    }

    /// How a conflict names the manager: `"kubectl"`, `"kube-controller-manager" using
    /// apps/v1`, `"x" with subresource "status"`.
    fn describe(&self) -> String {
        let mut s = serde_json::to_string(&self.manager).unwrap_or_default();
        if !self.subresource.is_empty() {
            s.push_str(&format!(
                " with subresource {}",
                serde_json::to_string(&self.subresource).unwrap_or_default()
            ));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn encode(&self) -> Value {
        let mut e = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.set.to_fields_v1(),
        });
        if let Some(t) = &self.time {
            e["time"] = json!(t);
        }
        if !self.subresource.is_empty() {
            e["subresource"] = json!(self.subresource);
        }
        e
    }
}

/// The decoded `managedFields` of an object, by manager identifier.
#[derive(Debug, Clone, Default, PartialEq)]
struct Managed(BTreeMap<String, Entry>);

impl Managed {
    /// Decodes `metadata.managedFields` the way upstream validates it.
    fn decode(v: Option<&Value>) -> Result<Managed, String> {
        let mut out = Managed::default();
        let entries = match v {
            None | Some(Value::Null) => return Ok(out),
            Some(Value::Array(a)) => a,
            Some(_) => return Err("managedFields must be a list".into()),
        };
        for (i, e) in entries.iter().enumerate() {
            let Value::Object(m) = e else {
                return Err(format!("managed fields entry {i} is not an object"));
            };
            let text = |f: &str| -> Result<String, String> {
                match m.get(f) {
                    None | Some(Value::Null) => Ok(String::new()),
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(_) => Err(format!("{f} of managed fields entry {i} is not a string")),
                }
            };
            let operation = text("operation")?;
            if operation != "Apply" && operation != "Update" {
                return Err("operation must be `Apply` or `Update`".into());
            }
            let api_version = text("apiVersion")?;
            if api_version.is_empty() {
                return Err("apiVersion must not be empty".into());
            }
            match text("fieldsType")?.as_str() {
                "FieldsV1" => {}
                "" => return Err(format!("missing fieldsType in managed fields entry {i}")),
                other => {
                    return Err(format!(
                        "invalid fieldsType {other:?} in managed fields entry {i}"
                    ));
                }
            }
            let set = match m.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::new(),
                Some(doc) => FieldSet::from_fields_v1(doc)?,
            };
            let time = text("time")?;
            let entry = Entry {
                manager: text("manager")?,
                operation,
                api_version,
                subresource: text("subresource")?,
                time: (!time.is_empty()).then_some(time),
                set,
            };
            out.0.insert(entry.id(), entry);
        }
        Ok(out)
    }

    /// The `managedFields` list, sorted as upstream sorts it: `Apply` before `Update`, then
    /// by time, manager, apiVersion and subresource.
    fn encode(&self) -> Value {
        let mut entries: Vec<&Entry> = self.0.values().collect();
        entries.sort_by(|a, b| {
            a.operation
                .cmp(&b.operation)
                .then_with(|| a.time.cmp(&b.time))
                .then_with(|| a.manager.cmp(&b.manager))
                .then_with(|| a.api_version.cmp(&b.api_version))
                .then_with(|| a.subresource.cmp(&b.subresource))
        });
        Value::Array(entries.into_iter().map(Entry::encode).collect())
    }

    /// Removes `changed` and `removed` from every entry but `except`, dropping entries that
    /// own nothing any more.
    fn take_from_others(&mut self, except: &str, changed: &FieldSet, removed: &FieldSet) {
        for (id, e) in self.0.iter_mut() {
            if id != except {
                e.set = e.set.difference(changed).difference(removed);
            }
        }
        self.0.retain(|_, e| !e.set.is_empty());
    }

    /// Folds the oldest `Update` entries into `ancient-changes` (one per apiVersion) until
    /// at most [`MAX_UPDATE_MANAGERS`] remain.
    fn cap_updaters(&mut self) {
        let mut updaters: Vec<(Option<String>, String)> = self
            .0
            .iter()
            .filter(|(_, e)| e.operation == "Update")
            .map(|(id, e)| (e.time.clone(), id.clone()))
            .collect();
        if updaters.len() <= MAX_UPDATE_MANAGERS {
            return;
        }
        updaters.sort();
        let mut excess = updaters.len() - MAX_UPDATE_MANAGERS;
        for (_, id) in updaters {
            if excess == 0 {
                break;
            }
            let Some(old) = self.0.get(&id).cloned() else {
                continue;
            };
            if old.manager == ANCIENT_CHANGES && old.subresource.is_empty() {
                continue;
            }
            let bucket = Entry {
                manager: ANCIENT_CHANGES.into(),
                operation: "Update".into(),
                api_version: old.api_version.clone(),
                subresource: String::new(),
                time: old.time.clone(),
                set: FieldSet::new(),
            };
            let bucket_id = bucket.id();
            self.0.remove(&id);
            let had_bucket = self.0.contains_key(&bucket_id);
            let slot = self.0.entry(bucket_id).or_insert(bucket);
            slot.set = slot.set.union(&old.set);
            slot.time = old.time;
            if had_bucket {
                excess -= 1;
            }
        }
    }

    fn union_of_all(&self) -> FieldSet {
        self.0
            .values()
            .fold(FieldSet::new(), |acc, e| acc.union(&e.set))
    }
}

/// Whether a write's managedFields ask for a reset: a non-empty list of empty entries.
fn is_reset(v: Option<&Value>) -> bool {
    let Some(Value::Array(entries)) = v else {
        return false;
    };
    !entries.is_empty()
        && entries.iter().all(|e| match e {
            Value::Object(m) => m.values().all(|v| match v {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            }),
            _ => false,
        })
}

fn managed_fields_of(obj: &Value) -> Option<&Value> {
    obj.get("metadata")?.get("managedFields")
}

fn take_managed_fields(obj: &mut Value) -> Option<Value> {
    obj.get_mut("metadata")?
        .as_object_mut()?
        .remove("managedFields")
}

fn set_managed_fields(obj: &mut Value, managed: &Managed) {
    if managed.0.is_empty() {
        take_managed_fields(obj);
    } else {
        meta::set_meta(obj, "managedFields", managed.encode());
    }
}

// ---------------------------------------------------------------------------------------
// Which fields a write may own
// ---------------------------------------------------------------------------------------

/// Fields no manager owns: identity and server-set metadata (upstream's stripped fields).
fn strip(set: &FieldSet) -> FieldSet {
    let mut stripped = FieldSet::new();
    for p in [
        &["apiVersion"][..],
        &["kind"],
        &["metadata"],
        &["metadata", "name"],
        &["metadata", "namespace"],
        &["metadata", "creationTimestamp"],
        &["metadata", "selfLink"],
        &["metadata", "uid"],
        &["metadata", "clusterName"],
        &["metadata", "generation"],
        &["metadata", "managedFields"],
        &["metadata", "resourceVersion"],
    ] {
        stripped.insert(&path_of(p));
    }
    set.difference(&stripped)
}

/// The part of a field set a write through `subresource` may own: the status subresource
/// owns only `status`; the main resource of a kind with a status subresource everything
/// but `status` (upstream's reset fields).
fn scoped(info: &ResourceInfo, subresource: &str, set: &FieldSet) -> FieldSet {
    let status = path_of(&["status"]);
    match subresource {
        "status" => set.restricted_to(&status),
        "" if info.subresource("status").is_some() => {
            let mut ignored = FieldSet::new();
            ignored.insert(&status);
            set.recursive_difference(&ignored)
        }
        _ => set.clone(),
    }
}

/// Who is writing, for `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldManager {
    /// A create, update or non-apply patch by `manager`: an `Update` entry (per
    /// `subresource`, when the write goes through one).
    Update {
        /// The field manager.
        manager: String,
        /// `status`, `scale`, ...; `None` for the resource itself.
        subresource: Option<String>,
    },
    /// A server-side apply, which set the object's managedFields itself ([`apply`]).
    Applied,
    /// A write upstream does not track (a binding, a deletion): managedFields stay.
    Untracked,
}

impl FieldManager {
    /// The API server's own writes (system namespaces, the `kubernetes` Service), which
    /// upstream records as `kube-apiserver`.
    pub fn server() -> Self {
        Self::update("kube-apiserver")
    }

    /// An `Update` by `manager` on the resource itself.
    pub fn update(manager: impl Into<String>) -> Self {
        Self::Update {
            manager: manager.into(),
            subresource: None,
        }
    }

    /// An `Update` by `manager` through `subresource`.
    pub fn subresource(manager: impl Into<String>, subresource: &str) -> Self {
        Self::Update {
            manager: manager.into(),
            subresource: Some(subresource.to_string()),
        }
    }
}

/// The manager of a request without `fieldManager`: its User-Agent up to the first `/`
/// (`kubectl/v1.33.0 (linux/amd64) ...` → `kubectl`), printable characters only, at most
/// [`FIELD_MANAGER_MAX_LENGTH`] bytes, `unknown` when nothing is left (as upstream).
pub fn manager_from_user_agent(user_agent: Option<&str>) -> String {
    let prefix = user_agent.unwrap_or("").split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars().filter(|c| is_print(*c)) {
        if out.len() + c.len_utf8() > FIELD_MANAGER_MAX_LENGTH {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        "unknown".into()
    } else {
        out
    }
}

/// Go's `unicode.IsPrint`: graphic characters and the ASCII space.
fn is_print(c: char) -> bool {
    c == ' ' || !(c.is_control() || c.is_whitespace() || ('\u{e000}'..='\u{f8ff}').contains(&c))
}

/// Upstream's checks of a `fieldManager` parameter: at most 128 bytes, printable.
pub fn field_manager_causes(manager: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if manager.len() > FIELD_MANAGER_MAX_LENGTH {
        causes.push(Cause {
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {FIELD_MANAGER_MAX_LENGTH} bytes"),
            field: "fieldManager".into(),
        });
    }
    for (i, c) in manager.chars().enumerate() {
        if !is_print(c) {
            causes.push(Cause::invalid(
                "fieldManager",
                &json!(manager),
                format!("invalid character U+{:04X} (at position {i})", c as u32),
            ));
        }
    }
    causes
}

// ---------------------------------------------------------------------------------------
// Update operations
// ---------------------------------------------------------------------------------------

/// Maintains `new`'s managedFields for a write replacing `old` (`None`: a create).
///
/// For an `Update`: the managedFields the write carries are used when they decode and are
/// not empty (a list of empty entries resets them), the stored ones otherwise (always, for
/// a subresource); the fields the write added or changed move to its manager, the ones it
/// removed leave every manager. For every kind of write, when nothing but managedFields
/// timestamps would change, the stored managedFields are kept so that no write happens.
pub fn track(info: &ResourceInfo, old: Option<&Value>, new: &mut Value, who: &FieldManager) {
    if let FieldManager::Update {
        manager,
        subresource,
    } = who
    {
        track_update(
            info,
            old,
            new,
            manager,
            subresource.as_deref().unwrap_or(""),
        );
    }
    if let Some(old) = old {
        keep_old_timestamps(old, new);
    }
}

fn track_update(
    info: &ResourceInfo,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
) {
    let stored = || Managed::decode(old.and_then(managed_fields_of)).unwrap_or_default();
    let requested = take_managed_fields(new);
    let mut managed = if !subresource.is_empty() {
        stored()
    } else if is_reset(requested.as_ref()) {
        Managed::default()
    } else {
        match Managed::decode(requested.as_ref()) {
            Ok(m) if !m.0.is_empty() => m,
            _ => stored(),
        }
    };
    let old_body = old.map(|o| {
        let mut o = o.clone();
        take_managed_fields(&mut o);
        o
    });
    let cmp = compare(info.kind, old_body.as_ref(), new)
        .filtered(|s| strip(&scoped(info, subresource, s)));
    record_update(
        info,
        &mut managed,
        &cmp,
        manager,
        subresource,
        &meta::now_rfc3339(),
    );
    set_managed_fields(new, &managed);
}

/// Moves what `cmp` added or changed to `manager`'s `Update` entry and drops what it
/// removed from everyone.
fn record_update(
    info: &ResourceInfo,
    managed: &mut Managed,
    cmp: &Comparison,
    manager: &str,
    subresource: &str,
    now: &str,
) {
    let entry = Entry {
        manager: manager.to_string(),
        operation: "Update".into(),
        api_version: info.api_version(),
        subresource: subresource.to_string(),
        time: Some(now.to_string()),
        set: FieldSet::new(),
    };
    let id = entry.id();
    let changed = cmp.changed();
    managed.take_from_others(&id, &changed, &cmp.removed);
    let owned = changed.difference(&cmp.removed);
    if let Some(mine) = managed.0.get_mut(&id) {
        mine.set = mine.set.difference(&cmp.removed);
    }
    if !owned.is_empty() {
        let slot = managed.0.entry(id).or_insert(entry);
        slot.set = slot.set.union(&owned);
        slot.api_version = info.api_version();
        slot.time = Some(now.to_string());
    }
    managed.0.retain(|_, e| !e.set.is_empty());
    managed.cap_updaters();
}

/// Keeps `old`'s managedFields on `new` when they differ only in timestamps and the rest
/// of the object is unchanged (upstream avoids a write, and a resourceVersion bump, then).
fn keep_old_timestamps(old: &Value, new: &mut Value) {
    let (om, nm) = (managed_fields_of(old), managed_fields_of(new));
    if om == nm {
        return;
    }
    let (Ok(o), Ok(n)) = (Managed::decode(om), Managed::decode(nm)) else {
        return;
    };
    let untimed = |m: &Managed| -> Vec<(String, Entry)> {
        m.0.iter()
            .map(|(id, e)| {
                let mut e = e.clone();
                e.time = None;
                (id.clone(), e)
            })
            .collect()
    };
    if o.0.is_empty() || untimed(&o) != untimed(&n) {
        return;
    }
    let body = |v: &Value| {
        let mut v = v.clone();
        take_managed_fields(&mut v);
        meta::remove_meta(&mut v, "resourceVersion");
        v
    };
    if body(old) == body(new)
        && let Some(m) = om.cloned()
    {
        meta::set_meta(new, "managedFields", m);
    }
}

// ---------------------------------------------------------------------------------------
// Apply
// ---------------------------------------------------------------------------------------

/// An apply request.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions<'a> {
    /// The applying field manager (`fieldManager`, required).
    pub manager: &'a str,
    /// `force=true`: take the conflicting fields instead of failing.
    pub force: bool,
    /// The subresource applied to (`status`), if any.
    pub subresource: Option<&'a str>,
}

/// `group/version, Kind=kind`, as upstream prints a GroupVersionKind.
fn gvk_string(api_version: &str, kind: &str) -> String {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    format!("{group}/{version}, Kind={kind}")
}

/// Checks an applied configuration before it is used: its apiVersion and kind must be the
/// resource's, and it may not carry managedFields. The messages are upstream's.
pub fn check_config(info: &ResourceInfo, config: &Value) -> ApiResult<()> {
    let text = |f: &str| config.get(f).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    if api_version != info.api_version() || kind != info.kind {
        return Err(ApiError::bad_request(format!(
            "invalid object type: {}",
            gvk_string(api_version, kind)
        )));
    }
    if managed_fields_of(config).is_some_and(|m| !m.is_null()) {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    Ok(())
}

/// Applies `config` (checked by [`check_config`]) to `live` (`None`: the object does not
/// exist yet) as `opts.manager`, returning the object to store, managedFields set.
///
/// Fails with 409 `Conflict` when the apply would change fields other managers own (unless
/// forced; for `kubectl`, fields its client-side apply owned and that still match the
/// last-applied annotation are taken over, as upstream) and with 400 when the configuration
/// does not fit the kind's list keys.
pub fn apply(
    info: &ResourceInfo,
    live: Option<&Value>,
    config: &Value,
    opts: &ApplyOptions<'_>,
) -> ApiResult<Value> {
    apply_at(info, live, config, opts, &meta::now_rfc3339())
}

fn apply_at(
    info: &ResourceInfo,
    live: Option<&Value>,
    config: &Value,
    opts: &ApplyOptions<'_>,
    now: &str,
) -> ApiResult<Value> {
    let kind = info.kind;
    let subresource = opts.subresource.unwrap_or("");
    let mut live_body = live.cloned().unwrap_or_else(|| json!({}));
    let stored = take_managed_fields(&mut live_body);
    let mut managed = Managed::decode(stored.as_ref()).unwrap_or_default();
    if live.is_some() && managed.0.is_empty() {
        // An object that never had managedFields: what it holds belongs to a manager of its
        // own, so that the first apply conflicts with it like with any other writer.
        let cmp = compare(kind, None, &live_body).filtered(|s| strip(&scoped(info, "", s)));
        record_update(info, &mut managed, &cmp, BEFORE_FIRST_APPLY, "", now);
    }
    let config_set = field_set_of(kind, config).map_err(|e| {
        ApiError::bad_request(format!(
            "failed to create typed patch object ({}/{}; {}): {e}",
            meta_str(config, "namespace").unwrap_or(""),
            meta_str(config, "name").unwrap_or(""),
            gvk_string(&info.api_version(), kind)
        ))
    })?;
    let config_set = scoped(info, subresource, &config_set);
    let mut merged = merge(kind, &mut Vec::new(), Some(&live_body), config);

    let entry = Entry {
        manager: opts.manager.to_string(),
        operation: "Apply".into(),
        api_version: info.api_version(),
        subresource: subresource.to_string(),
        time: Some(now.to_string()),
        set: strip(&config_set),
    };
    let id = entry.id();
    if let Some(last) = managed.0.get(&id).map(|e| e.set.clone()) {
        let mut others = managed.clone();
        others.0.remove(&id);
        let owned = others.union_of_all().union(&config_set);
        prune(
            kind,
            &mut Vec::new(),
            &mut Vec::new(),
            &mut merged,
            &last,
            &owned,
        );
    }

    let cmp =
        compare(kind, Some(&live_body), &merged).filtered(|s| strip(&scoped(info, subresource, s)));
    let changed = cmp.changed();
    let mut conflicts: Vec<(&Entry, FieldSet)> = managed
        .0
        .iter()
        .filter(|(other, _)| **other != id)
        .map(|(_, e)| (e, e.set.intersection(&changed)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    if !opts.force && !conflicts.is_empty() && opts.manager == "kubectl" {
        // Upgrading from client-side apply: fields the last-applied configuration holds with
        // the live values are kubectl's already.
        if let Some(allowed) = last_applied_fields(info, &live_body) {
            for (_, c) in conflicts.iter_mut() {
                *c = c.difference(&allowed);
            }
            conflicts.retain(|(_, c)| !c.is_empty());
        }
    }
    if !opts.force && !conflicts.is_empty() {
        return Err(conflict_error(&conflicts));
    }
    managed.take_from_others(&id, &changed, &cmp.removed);
    managed.0.remove(&id);
    if !entry.set.is_empty() {
        managed.0.insert(id, entry);
    }
    managed.cap_updaters();

    if opts.manager == "kubectl" && subresource.is_empty() {
        update_last_applied(&mut merged, config);
    }
    set_managed_fields(&mut merged, &managed);
    Ok(merged)
}

/// The fields of the last-applied annotation that still hold their live values: the ones a
/// `kubectl apply --server-side` may take over from client-side apply without conflict.
fn last_applied_fields(info: &ResourceInfo, live: &Value) -> Option<FieldSet> {
    let text = live
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED_ANNOTATION)?
        .as_str()?;
    let last: Value = serde_json::from_str(text).ok()?;
    if last.get("apiVersion").and_then(Value::as_str) != Some(info.api_version().as_str()) {
        return None;
    }
    let set = field_set_of(info.kind, &last).ok()?;
    let cmp = compare(info.kind, Some(&last), live);
    Some(
        set.difference(&cmp.modified)
            .difference(&cmp.added)
            .difference(&cmp.removed),
    )
}

/// Keeps client-side apply's annotation in step with a `kubectl` apply, when the object has
/// one: it becomes the applied configuration (without the annotation itself).
fn update_last_applied(obj: &mut Value, config: &Value) {
    let has = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
        .is_some();
    if !has {
        return;
    }
    let mut last = config.clone();
    if let Some(a) = last
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(LAST_APPLIED_ANNOTATION);
    }
    obj["metadata"]["annotations"][LAST_APPLIED_ANNOTATION] = json!(last.to_string());
}

/// The 409 of a conflicting apply, worded as upstream words it.
fn conflict_error(conflicts: &[(&Entry, FieldSet)]) -> ApiError {
    let mut by_manager: Vec<(String, Vec<String>)> = conflicts
        .iter()
        .map(|(e, set)| {
            (
                e.describe(),
                set.paths().iter().map(|p| path_string(p)).collect(),
            )
        })
        .collect();
    by_manager.sort();
    let total: usize = by_manager.iter().map(|(_, p)| p.len()).sum();
    let message = if total == 1 {
        let (m, p) = &by_manager[0];
        format!("Apply failed with 1 conflict: conflict with {m}: {}", p[0])
    } else {
        let mut lines = Vec::new();
        for (m, paths) in &by_manager {
            lines.push(format!("conflicts with {m}:"));
            lines.extend(paths.iter().map(|p| format!("- {p}")));
        }
        format!("Apply failed with {total} conflicts: {}", lines.join("\n"))
    };
    let causes = by_manager
        .iter()
        .flat_map(|(m, paths)| {
            paths.iter().map(move |p| Cause {
                reason: "FieldManagerConflict",
                message: format!("conflict with {m}"),
                field: p.clone(),
            })
        })
        .collect();
    ApiError {
        code: 409,
        reason: "Conflict",
        message,
        details: Some(Box::new(Details {
            causes,
            ..Details::default()
        })),
    }
}

/// Keeps from `config` only what its kind's type knows, with the type's values (`typed`
/// is `config` decoded and encoded by the type): unknown fields go, nothing is added.
pub fn restrict_to_typed(config: &Value, typed: &Value) -> Value {
    match (config, typed) {
        (Value::Object(c), Value::Object(t)) => Value::Object(
            c.iter()
                .filter_map(|(k, v)| match (v, t.get(k)) {
                    (Value::Null, _) => Some((k.clone(), Value::Null)),
                    (_, Some(tv)) => Some((k.clone(), restrict_to_typed(v, tv))),
                    (_, None) => None,
                })
                .collect(),
        ),
        (Value::Array(c), Value::Array(t)) if c.len() == t.len() => Value::Array(
            c.iter()
                .zip(t)
                .map(|(cv, tv)| restrict_to_typed(cv, tv))
                .collect(),
        ),
        (Value::Object(_) | Value::Array(_), _) => config.clone(),
        (_, t) => t.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> &'static rkube_api::registry::Registry {
        rkube_api::registry::registry()
    }

    fn info(group: &str, plural: &str) -> &'static ResourceInfo {
        registry().get(group, "v1", plural).unwrap()
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "web", "image": image,
                        "ports": [{"containerPort": 80}],
                        "env": [{"name": "A", "value": "1"}],
                    }]},
                },
            },
        })
    }

    fn opts(manager: &str) -> ApplyOptions<'_> {
        ApplyOptions {
            manager,
            force: false,
            subresource: None,
        }
    }

    fn entries(obj: &Value) -> Vec<Value> {
        obj["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn owns(obj: &Value, manager: &str, path: &[&str]) -> bool {
        let m = Managed::decode(managed_fields_of(obj)).unwrap();
        let p = path_of(path);
        m.0.values()
            .any(|e| e.manager == manager && e.set.contains(&p))
    }

    #[test]
    fn fieldsets_round_trip_through_fields_v1() {
        let doc = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}},
                }}},
            },
            "f:metadata2": {"f:finalizers": {"v:\"a\"": {}}},
        });
        let set = FieldSet::from_fields_v1(&doc).unwrap();
        assert_eq!(set.to_fields_v1(), doc);
        let paths: Vec<String> = set.paths().iter().map(|p| path_string(p)).collect();
        assert!(paths.contains(&".metadata.labels".to_string()), "{paths:?}");
        assert!(paths.contains(
            &".spec.template.spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"].containerPort"
                .to_string()
        ));
        assert!(paths.contains(&".metadata2.finalizers[=\"a\"]".to_string()));
        assert!(!set.contains(&path_of(&["spec"])));
        assert!(set.contains(&path_of(&["spec", "replicas"])));
        for bad in [
            json!({"x:y": {}}),
            json!({"f:a": 1}),
            json!({"k:notjson": {}}),
            json!([]),
        ] {
            assert!(FieldSet::from_fields_v1(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::new();
        a.insert(&path_of(&["spec", "replicas"]));
        a.insert(&path_of(&["spec", "paused"]));
        let mut b = FieldSet::new();
        b.insert(&path_of(&["spec", "replicas"]));
        b.insert(&path_of(&["data"]));
        assert_eq!(
            a.intersection(&b).paths(),
            vec![path_of(&["spec", "replicas"])]
        );
        assert_eq!(a.difference(&b).paths(), vec![path_of(&["spec", "paused"])]);
        assert_eq!(a.union(&b).paths().len(), 3);
        let mut spec = FieldSet::new();
        spec.insert(&path_of(&["spec"]));
        assert!(a.recursive_difference(&spec).is_empty());
        assert_eq!(a.difference(&spec), a);
    }

    #[test]
    fn create_records_an_update_entry() {
        let d = info("apps", "deployments");
        let mut obj = deployment(2, "web:1");
        track(d, None, &mut obj, &FieldManager::update("kubectl-create"));
        let e = entries(&obj);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0]["manager"], "kubectl-create");
        assert_eq!(e[0]["operation"], "Update");
        assert_eq!(e[0]["apiVersion"], "apps/v1");
        assert_eq!(e[0]["fieldsType"], "FieldsV1");
        let f = &e[0]["fieldsV1"];
        assert!(f.get("f:apiVersion").is_none() && f["f:metadata"].get("f:name").is_none());
        // Labels are new (the node is owned); spec is always there (it is not).
        assert_eq!(f["f:metadata"]["f:labels"], json!({".": {}, "f:app": {}}));
        assert!(f["f:spec"].get(".").is_none());
        assert_eq!(f["f:spec"]["f:selector"], json!({}));
        let c = &f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(c["."], json!({}));
        assert_eq!(
            c["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"]["f:containerPort"],
            json!({})
        );
    }

    #[test]
    fn updates_move_ownership_and_drop_empty_entries() {
        let d = info("apps", "deployments");
        let mut v1 = deployment(2, "web:1");
        track(d, None, &mut v1, &FieldManager::update("creator"));
        let mut v2 = v1.clone();
        v2["spec"]["replicas"] = json!(5);
        track(d, Some(&v1), &mut v2, &FieldManager::update("scaler"));
        assert!(owns(&v2, "scaler", &["spec", "replicas"]));
        assert!(!owns(&v2, "creator", &["spec", "replicas"]));
        assert!(owns(&v2, "creator", &["spec", "selector"]));
        // Writing the same values changes nothing.
        let mut same = v2.clone();
        track(d, Some(&v2), &mut same, &FieldManager::update("idle"));
        assert_eq!(same, v2);
        // Removing the only field a manager owns drops its entry.
        let mut v3 = v2.clone();
        v3["spec"].as_object_mut().unwrap().remove("replicas");
        track(d, Some(&v2), &mut v3, &FieldManager::update("creator"));
        assert!(entries(&v3).iter().all(|e| e["manager"] != "scaler"));
    }

    #[test]
    fn invalid_managed_fields_in_a_write_are_ignored_and_empty_entries_reset() {
        let cm = info("", "configmaps");
        let mut v1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        track(cm, None, &mut v1, &FieldManager::update("creator"));
        let mut bad = v1.clone();
        bad["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Nope", "apiVersion": "v1", "fieldsType": "FieldsV1"}]);
        track(cm, Some(&v1), &mut bad, &FieldManager::update("other"));
        assert_eq!(
            bad["metadata"]["managedFields"],
            v1["metadata"]["managedFields"]
        );
        let mut reset = v1.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        track(cm, Some(&v1), &mut reset, &FieldManager::update("other"));
        assert!(reset["metadata"].get("managedFields").is_none());
        // A status write keeps the stored entries whatever it sends.
        let mut valid = v1.clone();
        valid["metadata"]["managedFields"][0]["manager"] = json!("renamed");
        track(cm, Some(&v1), &mut valid, &FieldManager::update("other"));
        assert_eq!(entries(&valid)[0]["manager"], "renamed");
    }

    #[test]
    fn apply_merges_lists_by_key() {
        let d = info("apps", "deployments");
        let live = apply(d, None, &deployment(2, "web:1"), &opts("a")).unwrap();
        let mut config = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "side", "image": "side:1"},
                {"name": "web", "env": [{"name": "B", "value": "2"}],
                 "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}]},
            ]}}},
        });
        let out = apply(d, Some(&live), &config, &opts("b")).unwrap();
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 2);
        let web = cs.iter().find(|c| c["name"] == "web").unwrap();
        assert_eq!(web["image"], "web:1");
        assert_eq!(
            web["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(
            web["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
        );
        // Atomic lists and objects are replaced whole.
        config = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchExpressions": []}}});
        let forced = ApplyOptions {
            force: true,
            ..opts("c")
        };
        let out = apply(d, Some(&live), &config, &forced).unwrap();
        assert_eq!(out["spec"]["selector"], json!({"matchExpressions": []}));
        assert!(owns(&out, "c", &["spec", "selector"]));
    }

    #[test]
    fn fields_a_manager_stops_applying_are_removed_unless_owned_elsewhere() {
        let d = info("apps", "deployments");
        let mut config = deployment(2, "web:1");
        config["metadata"]["labels"]["tier"] = json!("front");
        let v1 = apply(d, None, &config, &opts("a")).unwrap();
        // Another manager co-owns `tier` by applying the same value.
        let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"tier": "front"}}});
        let v2 = apply(d, Some(&v1), &other, &opts("b")).unwrap();
        let mut smaller = deployment(2, "web:1");
        smaller["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("env");
        smaller["metadata"]["labels"] = json!({"app": "web"});
        smaller["spec"].as_object_mut().unwrap().remove("replicas");
        let v3 = apply(d, Some(&v2), &smaller, &opts("a")).unwrap();
        assert!(v3["spec"].get("replicas").is_none());
        assert!(
            v3["spec"]["template"]["spec"]["containers"][0]
                .get("env")
                .is_none()
        );
        assert_eq!(v3["metadata"]["labels"]["tier"], "front");
        assert_eq!(v3["metadata"]["name"], "web");
        assert!(!owns(&v3, "a", &["spec", "replicas"]));
        // Once b lets go too, the label goes.
        let b_only_name =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        let v4 = apply(d, Some(&v3), &b_only_name, &opts("b")).unwrap();
        assert!(v4["metadata"]["labels"].get("tier").is_none());
        assert!(entries(&v4).iter().all(|e| e["manager"] != "b"));
    }

    #[test]
    fn conflicts_and_force() {
        let d = info("apps", "deployments");
        let v1 = apply(d, None, &deployment(2, "web:1"), &opts("kubectl")).unwrap();
        let scale = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let err = apply(d, Some(&v1), &scale, &opts("other")).unwrap_err();
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"
        );
        let causes = &err.to_status()["details"]["causes"];
        assert_eq!(
            causes,
            &json!([{"reason": "FieldManagerConflict", "message": "conflict with \"kubectl\"", "field": ".spec.replicas"}])
        );
        // The same value is no conflict: shared ownership.
        let same = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 2}});
        let shared = apply(d, Some(&v1), &same, &opts("other")).unwrap();
        assert!(owns(&shared, "kubectl", &["spec", "replicas"]));
        assert!(owns(&shared, "other", &["spec", "replicas"]));
        // Forced: the field moves.
        let forced = ApplyOptions {
            force: true,
            ..opts("other")
        };
        let v2 = apply(d, Some(&v1), &scale, &forced).unwrap();
        assert_eq!(v2["spec"]["replicas"], 3);
        assert!(owns(&v2, "other", &["spec", "replicas"]));
        assert!(!owns(&v2, "kubectl", &["spec", "replicas"]));
        // Update owners are named with their apiVersion; several conflicts are listed.
        let mut u = v1.clone();
        u["spec"]["replicas"] = json!(7);
        u["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
        track(d, Some(&v1), &mut u, &FieldManager::update("kubectl-edit"));
        let err = apply(d, Some(&u), &deployment(2, "web:1"), &opts("kubectl")).unwrap_err();
        assert_eq!(
            err.message,
            "Apply failed with 2 conflicts: conflicts with \"kubectl-edit\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn client_side_apply_fields_matching_last_applied_go_to_kubectl() {
        let cm = info("", "configmaps");
        let last = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"a": "1"}});
        let mut live = last.clone();
        live["metadata"]["annotations"] = json!({LAST_APPLIED_ANNOTATION: last.to_string()});
        track(
            cm,
            None,
            &mut live,
            &FieldManager::update("kubectl-client-side-apply"),
        );
        let mut config = last.clone();
        config["data"]["a"] = json!("2");
        let out = apply(cm, Some(&live), &config, &opts("kubectl")).unwrap();
        assert_eq!(out["data"]["a"], "2");
        let annotation = out["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
            .as_str()
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(annotation).unwrap(), config);
        // Another manager gets the conflict.
        let err = apply(cm, Some(&live), &config, &opts("other")).unwrap_err();
        assert!(
            err.message
                .contains("\"kubectl-client-side-apply\" using v1")
        );
    }

    #[test]
    fn apply_errors() {
        let d = info("apps", "deployments");
        let mut config = deployment(2, "web:1");
        config["spec"]["template"]["spec"]["containers"] = json!([{"image": "x"}]);
        let err = apply(d, None, &config, &opts("a")).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.contains(".spec.template.spec.containers: element 0: associative list with keys has an element that omits key field \"name\""),
            "{}",
            err.message
        );
        let err = check_config(d, &json!({"apiVersion": "v1", "kind": "ConfigMap"})).unwrap_err();
        assert_eq!(err.message, "invalid object type: /v1, Kind=ConfigMap");
        let mut with_mf = deployment(1, "x");
        with_mf["metadata"]["managedFields"] = json!([]);
        assert_eq!(
            check_config(d, &with_mf).unwrap_err().message,
            "metadata.managedFields must be nil"
        );
    }

    #[test]
    fn reapplying_the_same_configuration_keeps_the_object() {
        let d = info("apps", "deployments");
        let v1 = apply_at(
            d,
            None,
            &deployment(2, "web:1"),
            &opts("a"),
            "2024-01-01T00:00:00Z",
        )
        .unwrap();
        let mut v2 = apply_at(
            d,
            Some(&v1),
            &deployment(2, "web:1"),
            &opts("a"),
            "2024-02-01T00:00:00Z",
        )
        .unwrap();
        assert_ne!(v2, v1);
        track(d, Some(&v1), &mut v2, &FieldManager::Applied);
        assert_eq!(v2, v1);
    }

    #[test]
    fn status_writes_are_tracked_per_subresource() {
        let d = info("apps", "deployments");
        let v1 = apply(d, None, &deployment(2, "web:1"), &opts("a")).unwrap();
        let mut v2 = v1.clone();
        v2["status"] = json!({"replicas": 2});
        track(
            d,
            Some(&v1),
            &mut v2,
            &FieldManager::subresource("controller", "status"),
        );
        let e = entries(&v2);
        let ctl = e.iter().find(|e| e["manager"] == "controller").unwrap();
        assert_eq!(ctl["subresource"], "status");
        assert_eq!(ctl["fieldsV1"], json!({"f:status": {"f:replicas": {}}}));
        // The main resource never owns status.
        let mut v3 = v1.clone();
        v3["status"] = json!({"replicas": 9});
        track(d, Some(&v1), &mut v3, &FieldManager::update("x"));
        assert!(entries(&v3).iter().all(|e| e["manager"] != "x"));
    }

    #[test]
    fn update_managers_are_capped() {
        let cm = info("", "configmaps");
        let mut obj =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
        for i in 0..13 {
            let old = obj.clone();
            obj["data"][format!("k{i}")] = json!("v");
            track(
                cm,
                Some(&old),
                &mut obj,
                &FieldManager::update(format!("m{i:02}")),
            );
        }
        let e = entries(&obj);
        assert_eq!(e.len(), 10, "{e:?}");
        assert!(e.iter().any(|e| e["manager"] == ANCIENT_CHANGES));
    }

    #[test]
    fn managers_from_user_agents() {
        assert_eq!(
            manager_from_user_agent(Some("kubectl/v1.33.0 (linux/amd64) kubernetes/abc")),
            "kubectl"
        );
        assert_eq!(manager_from_user_agent(Some("kube-rs")), "kube-rs");
        assert_eq!(manager_from_user_agent(None), "unknown");
        assert_eq!(manager_from_user_agent(Some(&"a".repeat(300))).len(), 128);
        assert!(field_manager_causes("ok").is_empty());
        assert_eq!(field_manager_causes(&"a".repeat(129)).len(), 1);
        assert_eq!(field_manager_causes("a\u{7}").len(), 1);
    }

    #[test]
    fn typed_restriction_drops_unknown_fields_only() {
        let config = json!({"spec": {"replicas": 2, "bogus": 1, "template": {"spec": {"containers": [{"name": "a", "x": 1}]}}}});
        let typed = json!({"spec": {"replicas": 2, "selector": {}, "template": {"spec": {"containers": [{"name": "a", "image": ""}]}}}});
        assert_eq!(
            restrict_to_typed(&config, &typed),
            json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a"}]}}}})
        );
    }

    #[test]
    fn merged_lists_keep_live_only_items_in_place() {
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let order = merged_order(&k(&["a", "b", "c"]), &k(&["c", "d"]));
        assert_eq!(
            order,
            vec![
                (Some(0), None),
                (Some(1), None),
                (Some(2), Some(0)),
                (None, Some(1))
            ]
        );
        let order = merged_order(&k(&["a", "b"]), &k(&["b", "a"]));
        assert_eq!(order, vec![(Some(1), Some(0)), (Some(0), Some(1))]);
    }
}
