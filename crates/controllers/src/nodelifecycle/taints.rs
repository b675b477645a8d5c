//! Which taints a node's conditions call for (upstream's taint-by-condition NoSchedule pass
//! and the NoExecute not-ready/unreachable taints), and when a pod on a NoExecute-tainted
//! node must go (upstream's taint eviction manager).

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::health::condition;

/// Ready=False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Ready=Unknown.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// MemoryPressure=True.
pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// DiskPressure=True.
pub const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
/// PIDPressure=True.
pub const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
/// NetworkUnavailable=True.
pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
/// `spec.unschedulable`.
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// `NoSchedule`.
pub const NO_SCHEDULE: &str = "NoSchedule";
/// `NoExecute`.
pub const NO_EXECUTE: &str = "NoExecute";

/// Every (key, effect) this controller manages.
const MANAGED: [(&str, &str); 9] = [
    (NOT_READY, NO_SCHEDULE),
    (NOT_READY, NO_EXECUTE),
    (UNREACHABLE, NO_SCHEDULE),
    (UNREACHABLE, NO_EXECUTE),
    (MEMORY_PRESSURE, NO_SCHEDULE),
    (DISK_PRESSURE, NO_SCHEDULE),
    (PID_PRESSURE, NO_SCHEDULE),
    (NETWORK_UNAVAILABLE, NO_SCHEDULE),
    (UNSCHEDULABLE, NO_SCHEDULE),
];

/// The managed taints the node's conditions and `spec.unschedulable` call for.
pub fn wanted(node: &Node) -> Vec<(&'static str, &'static str)> {
    let status = |kind: &str| condition(node, kind).map(|c| c.status.as_str());
    let mut out = Vec::new();
    match status("Ready") {
        Some("False") => out.extend([(NOT_READY, NO_SCHEDULE), (NOT_READY, NO_EXECUTE)]),
        Some("Unknown") => out.extend([(UNREACHABLE, NO_SCHEDULE), (UNREACHABLE, NO_EXECUTE)]),
        _ => {}
    }
    for (kind, key) in [
        ("MemoryPressure", MEMORY_PRESSURE),
        ("DiskPressure", DISK_PRESSURE),
        ("PIDPressure", PID_PRESSURE),
        ("NetworkUnavailable", NETWORK_UNAVAILABLE),
    ] {
        if status(kind) == Some("True") {
            out.push((key, NO_SCHEDULE));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push((UNSCHEDULABLE, NO_SCHEDULE));
    }
    out
}

/// The node's taints with the managed ones brought in line with [`wanted`]: taints it keeps
/// stay as they are (with their `timeAdded`), new NoExecute taints get `timeAdded: now`,
/// others' taints are untouched. `None` when nothing changes.
pub fn desired(node: &Node, now: Timestamp) -> Option<Vec<Taint>> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let wanted = wanted(node);
    let is_managed = |t: &Taint| MANAGED.contains(&(t.key.as_str(), t.effect.as_str()));
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !is_managed(t) || wanted.contains(&(t.key.as_str(), t.effect.as_str())))
        .cloned()
        .collect();
    for (key, effect) in &wanted {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: key.to_string(),
                effect: effect.to_string(),
                time_added: (*effect == NO_EXECUTE).then_some(Time(now)),
                value: None,
            });
        }
    }
    (out != current).then_some(out)
}

/// Whether `toleration` tolerates `taint` (upstream `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// What to do with a pod on a node with NoExecute taints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// No NoExecute taint, or all tolerated forever: leave it.
    Never,
    /// A NoExecute taint it does not tolerate (or a toleration ran out): delete it now.
    Now,
    /// Delete it at this time unless the taints go away first.
    At(Timestamp),
}

/// When the pod must go (upstream `processPodOnNode`): a NoExecute taint without a matching
/// toleration means now; otherwise the earliest `timeAdded + tolerationSeconds` of the first
/// toleration matching each taint (a taint without `timeAdded` counts from `fallback`, when
/// this controller first saw it), or never when none has `tolerationSeconds`.
pub fn eviction(
    tolerations: &[Toleration],
    taints: &[Taint],
    fallback: Timestamp,
    now: Timestamp,
) -> Eviction {
    let mut earliest: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == NO_EXECUTE) {
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::Now;
        };
        let Some(seconds) = toleration.toleration_seconds else {
            continue;
        };
        let added = taint.time_added.as_ref().map_or(fallback, |t| t.0);
        let at = added + std::time::Duration::from_secs(seconds.max(0).unsigned_abs());
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    match earliest {
        None => Eviction::Never,
        Some(at) if at <= now => Eviction::Now,
        Some(at) => Eviction::At(at),
    }
}

/// A pod's tolerations.
pub fn pod_tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn node(ready: &str, taints: Vec<Taint>) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: (!taints.is_empty()).then_some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: added.map(|a| Time(ts(a))),
            value: None,
        }
    }

    fn toleration(key: &str, op: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: Some(op.into()),
            effect: Some(NO_EXECUTE.into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    #[test]
    fn conditions_call_for_taints() {
        let user = taint("dedicated", NO_SCHEDULE, None);
        let n = node("Unknown", vec![user.clone()]);
        let t = desired(&n, ts(5)).unwrap();
        assert_eq!(
            t,
            vec![
                user.clone(),
                taint(UNREACHABLE, NO_SCHEDULE, None),
                taint(UNREACHABLE, NO_EXECUTE, Some(5)),
            ]
        );
        // Applied: nothing more to do, and timeAdded is kept.
        let n = node("Unknown", t.clone());
        assert_eq!(desired(&n, ts(50)), None);
        // Ready=False swaps unreachable for not-ready.
        let n = node("False", t.clone());
        assert_eq!(
            desired(&n, ts(60)).unwrap(),
            vec![
                user.clone(),
                taint(NOT_READY, NO_SCHEDULE, None),
                taint(NOT_READY, NO_EXECUTE, Some(60)),
            ]
        );
        // Back to Ready: only the user's taint is left.
        let n = node("True", t);
        assert_eq!(desired(&n, ts(70)).unwrap(), vec![user]);
        assert_eq!(desired(&node("True", vec![]), ts(0)), None);
    }

    #[test]
    fn unschedulable_and_pressure_taints() {
        let mut n = node("True", vec![]);
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        n.status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
            .push(NodeCondition {
                type_: "DiskPressure".into(),
                status: "True".into(),
                ..Default::default()
            });
        assert_eq!(
            wanted(&n),
            vec![(DISK_PRESSURE, NO_SCHEDULE), (UNSCHEDULABLE, NO_SCHEDULE)]
        );
    }

    #[test]
    fn toleration_matching_like_upstream() {
        let t = taint(UNREACHABLE, NO_EXECUTE, None);
        assert!(tolerates(&toleration(UNREACHABLE, "Exists", None), &t));
        assert!(
            tolerates(&toleration("", "Exists", None), &t),
            "empty key + Exists tolerates all"
        );
        assert!(!tolerates(&toleration(NOT_READY, "Exists", None), &t));
        let mut eq = toleration(UNREACHABLE, "Equal", None);
        assert!(tolerates(&eq, &t), "empty value equals no value");
        eq.value = Some("x".into());
        assert!(!tolerates(&eq, &t));
        let mut other_effect = toleration(UNREACHABLE, "Exists", None);
        other_effect.effect = Some(NO_SCHEDULE.into());
        assert!(!tolerates(&other_effect, &t));
        other_effect.effect = None;
        assert!(
            tolerates(&other_effect, &t),
            "no effect matches every effect"
        );
    }

    #[test]
    fn toleration_time_counts_from_time_added() {
        let taints = vec![
            taint(UNREACHABLE, NO_SCHEDULE, None),
            taint(UNREACHABLE, NO_EXECUTE, Some(100)),
        ];
        // No toleration: now.
        assert_eq!(eviction(&[], &taints, ts(0), ts(100)), Eviction::Now);
        // 5 s toleration: at timeAdded + 5, then now.
        let five = [toleration(UNREACHABLE, "Exists", Some(5))];
        assert_eq!(
            eviction(&five, &taints, ts(0), ts(101)),
            Eviction::At(ts(105))
        );
        assert_eq!(eviction(&five, &taints, ts(0), ts(105)), Eviction::Now);
        // Forever.
        let forever = [toleration(UNREACHABLE, "Exists", None)];
        assert_eq!(
            eviction(&forever, &taints, ts(0), ts(9_999)),
            Eviction::Never
        );
        // The earliest of several taints; a missing timeAdded counts from the fallback.
        let two = vec![
            taint(UNREACHABLE, NO_EXECUTE, Some(100)),
            taint("example.com/gpu-broken", NO_EXECUTE, None),
        ];
        let tol = [
            toleration(UNREACHABLE, "Exists", Some(300)),
            toleration("example.com/gpu-broken", "Exists", Some(30)),
        ];
        assert_eq!(
            eviction(&tol, &two, ts(200), ts(201)),
            Eviction::At(ts(230))
        );
        // Negative seconds mean at once, as upstream.
        let neg = [toleration(UNREACHABLE, "Exists", Some(-1))];
        assert_eq!(eviction(&neg, &taints, ts(0), ts(100)), Eviction::Now);
        // Only NoExecute taints matter.
        assert_eq!(
            eviction(&[], &[taint(UNREACHABLE, NO_SCHEDULE, None)], ts(0), ts(0)),
            Eviction::Never
        );
    }
}
