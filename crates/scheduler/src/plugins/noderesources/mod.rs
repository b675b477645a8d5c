//! Node resources: [`Fit`] (NodeResourcesFit) keeps pods off nodes without room for their
//! requests (or with too many pods) and scores nodes by how much stays free
//! (LeastAllocated, the default) or used (MostAllocated); [`BalancedAllocation`]
//! (NodeResourcesBalancedAllocation) prefers nodes whose CPU and memory use stay even.

use std::borrow::Cow;

use crate::framework::resource::Resource;
use crate::framework::{
    ActionType, ClusterEventWithHint, Code, CycleState, EventObjects, EventResource, FilterPlugin,
    MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, QueueingHint, ScorePlugin, Snapshot, Status,
};

/// The Fit plugin's name.
pub const FIT_NAME: &str = super::names::NODE_RESOURCES_FIT;
/// The BalancedAllocation plugin's name.
pub const BALANCED_ALLOCATION_NAME: &str = super::names::NODE_RESOURCES_BALANCED_ALLOCATION;
/// Reason: the node has as many pods as it allows.
pub const ERR_REASON_TOO_MANY_PODS: &str = "Too many pods";
/// Reason: not enough CPU.
pub const ERR_REASON_CPU: &str = "Insufficient cpu";
/// Reason: not enough memory.
pub const ERR_REASON_MEMORY: &str = "Insufficient memory";
/// Reason: not enough ephemeral storage.
pub const ERR_REASON_EPHEMERAL_STORAGE: &str = "Insufficient ephemeral-storage";

/// How Fit scores nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoringStrategy {
    /// Prefer nodes with the most free CPU and memory (spreads pods; upstream's default).
    #[default]
    LeastAllocated,
    /// Prefer nodes with the least free CPU and memory (packs pods).
    MostAllocated,
}

/// One resource the node lacks for the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsufficientResource {
    /// The resource name (`cpu`, `pods`, `example.com/gpu`).
    pub resource: String,
    /// The reason shown to users (`Insufficient cpu`).
    pub reason: Cow<'static, str>,
    /// What the pod asks for.
    pub requested: i64,
    /// What the node's pods already use.
    pub used: i64,
    /// What the node offers.
    pub capacity: i64,
    /// The pod asks for more than the node has at all: evicting pods cannot help.
    pub unresolvable: bool,
}

/// The resources `node` lacks for a pod with `request` (empty: it fits). Checks the pod
/// count first, then CPU, memory, ephemeral storage and scalar resources, like upstream.
pub fn fits(request: &Resource, node: &NodeInfo) -> Vec<InsufficientResource> {
    let mut out = Vec::new();
    let pods = node.pods.len() as i64;
    if pods + 1 > node.allocatable.allowed_pods {
        out.push(InsufficientResource {
            resource: "pods".into(),
            reason: Cow::Borrowed(ERR_REASON_TOO_MANY_PODS),
            requested: 1,
            used: pods,
            capacity: node.allocatable.allowed_pods,
            unresolvable: false,
        });
    }
    if request.is_empty_request() {
        return out;
    }
    let alloc = &node.allocatable;
    let used = &node.requested;
    let mut check = |name: &str, reason: Cow<'static, str>, want: i64, used: i64, cap: i64| {
        if want > 0 && want > cap - used {
            out.push(InsufficientResource {
                resource: name.to_string(),
                reason,
                requested: want,
                used,
                capacity: cap,
                unresolvable: want > cap,
            });
        }
    };
    check(
        "cpu",
        ERR_REASON_CPU.into(),
        request.milli_cpu,
        used.milli_cpu,
        alloc.milli_cpu,
    );
    check(
        "memory",
        ERR_REASON_MEMORY.into(),
        request.memory,
        used.memory,
        alloc.memory,
    );
    check(
        "ephemeral-storage",
        ERR_REASON_EPHEMERAL_STORAGE.into(),
        request.ephemeral_storage,
        used.ephemeral_storage,
        alloc.ephemeral_storage,
    );
    for (name, want) in &request.scalar {
        check(
            name,
            Cow::Owned(format!("Insufficient {name}")),
            *want,
            used.scalar(name),
            alloc.scalar(name),
        );
    }
    out
}

/// Upstream's `leastRequestedScore`: the free share of `capacity`, 0–100.
pub fn least_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// Upstream's `mostRequestedScore`: the used share of `capacity`, 0–100.
pub fn most_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

/// Upstream's balanced allocation score: `(1 - std) * 100` of the CPU and memory fractions
/// (`requested / allocatable`, capped at 1; resources the node lacks are left out).
pub fn balanced_score(requested: [i64; 2], allocatable: [i64; 2]) -> i64 {
    let fractions: Vec<f64> = requested
        .iter()
        .zip(allocatable)
        .filter(|(_, a)| *a != 0)
        .map(|(r, a)| (*r as f64 / a as f64).min(1.0))
        .collect();
    let std = if fractions.len() == 2 {
        ((fractions[0] - fractions[1]) / 2.0).abs()
    } else {
        0.0
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// The NodeResourcesFit plugin.
#[derive(Debug, Default)]
pub struct Fit {
    strategy: ScoringStrategy,
}

impl Fit {
    /// A Fit plugin scoring with `strategy`.
    #[must_use]
    pub fn new(strategy: ScoringStrategy) -> Self {
        Self { strategy }
    }
}

fn fit_hint(pod: &PodInfo, objects: &EventObjects<'_>) -> QueueingHint {
    match objects {
        // Any deletion of a bound pod may free resources.
        EventObjects::Pod {
            old: Some(_),
            new: None,
        } => QueueingHint::Queue,
        EventObjects::Node {
            old,
            new: Some(new),
        } => {
            let empty = NodeInfo::new(std::sync::Arc::new((*new).clone()));
            if !fits(&pod.requests, &empty).is_empty() {
                return QueueingHint::Skip;
            }
            match old {
                None => QueueingHint::Queue,
                Some(old) => {
                    let before = NodeInfo::new(std::sync::Arc::new((*old).clone())).allocatable;
                    let after = &empty.allocatable;
                    let r = &pod.requests;
                    let grew = after.allowed_pods > before.allowed_pods
                        || (r.milli_cpu > 0 && after.milli_cpu > before.milli_cpu)
                        || (r.memory > 0 && after.memory > before.memory)
                        || (r.ephemeral_storage > 0
                            && after.ephemeral_storage > before.ephemeral_storage)
                        || r.scalar
                            .iter()
                            .any(|(n, v)| *v > 0 && after.scalar(n) > before.scalar(n));
                    if grew {
                        QueueingHint::Queue
                    } else {
                        QueueingHint::Skip
                    }
                }
            }
        }
        _ => QueueingHint::Queue,
    }
}

impl Plugin for Fit {
    fn name(&self) -> &'static str {
        FIT_NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![
            ClusterEventWithHint::with_hint(
                EventResource::Pod,
                ActionType::DELETE.or(ActionType::UPDATE_POD_SCALE_DOWN),
                fit_hint,
            ),
            ClusterEventWithHint::with_hint(
                EventResource::Node,
                ActionType::ADD.or(ActionType::UPDATE_NODE_ALLOCATABLE),
                fit_hint,
            ),
        ]
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl FilterPlugin for Fit {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot<'_>) -> Status {
        let missing = fits(&pod.requests, node);
        if missing.is_empty() {
            return Status::success();
        }
        // Asking for more than the node has at all is beyond preemption's help.
        let code = if missing.iter().any(|m| m.unresolvable) {
            Code::UnschedulableAndUnresolvable
        } else {
            Code::Unschedulable
        };
        Status::with_reasons(code, missing.into_iter().map(|m| m.reason).collect())
    }
}

impl ScorePlugin for Fit {
    fn score(
        &self,
        _: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot<'_>,
    ) -> Result<i64, Status> {
        let cpu = (
            node.non_zero_requested.0 + pod.non_zero.0,
            node.allocatable.milli_cpu,
        );
        let mem = (
            node.non_zero_requested.1 + pod.non_zero.1,
            node.allocatable.memory,
        );
        let f = match self.strategy {
            ScoringStrategy::LeastAllocated => least_requested_score,
            ScoringStrategy::MostAllocated => most_requested_score,
        };
        // Weights: cpu 1, memory 1.
        Ok((f(cpu.0, cpu.1) + f(mem.0, mem.1)) / 2)
    }
}

/// The NodeResourcesBalancedAllocation plugin.
#[derive(Debug, Default)]
pub struct BalancedAllocation;

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        BALANCED_ALLOCATION_NAME
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl ScorePlugin for BalancedAllocation {
    fn score(
        &self,
        _: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot<'_>,
    ) -> Result<i64, Status> {
        Ok(balanced_score(
            [
                node.requested.milli_cpu + pod.requests.milli_cpu,
                node.requested.memory + pod.requests.memory,
            ],
            [node.allocatable.milli_cpu, node.allocatable.memory],
        ))
    }
}

#[cfg(test)]
mod tests;
