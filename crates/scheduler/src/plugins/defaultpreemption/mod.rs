//! DefaultPreemption: when no node fits a pod, find a node where evicting lower-priority
//! pods makes it fit, choosing victims and nodes like upstream:
//!
//! 1. only pods whose `preemptionPolicy` is not `Never` preempt, and not while victims of an
//!    earlier preemption still terminate on their nominated node;
//! 2. candidates are nodes rejected as `Unschedulable` (not `UnschedulableAndUnresolvable`);
//!    on each, all lower-priority pods are removed, the pod must fit, and then pods are
//!    reprieved from the most important down as long as the pod still fits;
//!    (pods whose eviction would break a PodDisruptionBudget are reprieved first);
//! 3. the node with the fewest PDB violations, then the lowest highest victim priority, then
//!    the smallest priority sum, then the fewest victims, then the latest start of its most
//!    important victims wins.
//!
//! The plugin only decides; the scheduler deletes the victims and sets the preemptor's
//! `status.nominatedNodeName`.

use std::cmp::Ordering;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::framework::runtime::fit_error_message;
use crate::framework::types::DisruptionBudget;
use crate::framework::{
    Code, CycleState, Diagnosis, Framework, NodeInfo, NodeToStatus, Plugin, PodInfo,
    PostFilterContext, PostFilterPlugin, PostFilterResult, Snapshot, Status,
};

/// The plugin name.
pub const NAME: &str = super::names::DEFAULT_PREEMPTION;
/// Reason: the pod may not preempt.
pub const ERR_NOT_ELIGIBLE_NEVER: &str = "not eligible due to preemptionPolicy=Never.";
/// Reason: an earlier preemption's victims still terminate.
pub const ERR_NOT_ELIGIBLE_TERMINATING: &str =
    "not eligible due to a terminating pod on the nominated node.";
/// Node verdict: the node was not rejected in a way evictions could fix.
pub const ERR_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Node verdict: the node has no lower-priority pods.
pub const ERR_NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// Share of candidate nodes to dry-run (percent).
pub const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
/// Candidate nodes to dry-run at least.
pub const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// The DefaultPreemption plugin.
#[derive(Debug, Default)]
pub struct DefaultPreemption;

/// A node where preemption makes the pod fit.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Node position in the snapshot.
    pub node: usize,
    /// Pods to evict, most important first.
    pub victims: Vec<Arc<PodInfo>>,
    /// Victims whose eviction violates a PodDisruptionBudget.
    pub pdb_violations: usize,
}

/// Upstream's `MoreImportantPod`: higher priority, then the one that started earlier.
pub fn more_important(a: &PodInfo, b: &PodInfo, now: i128) -> bool {
    match a.priority.cmp(&b.priority) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => a.start_time_nanos(now) < b.start_time_nanos(now),
    }
}

/// How many candidates to dry-run among `nodes` potential nodes.
pub fn num_candidates(nodes: usize) -> usize {
    (nodes * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
        .max(MIN_CANDIDATE_NODES_ABSOLUTE)
        .min(nodes)
}

fn now_nanos() -> i128 {
    k8s_openapi::jiff::Timestamp::now().as_nanosecond()
}

/// Whether `pod` is being deleted because the scheduler preempted it.
pub fn terminating_by_preemption(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "DisruptionTarget")
            .is_some_and(|c| {
                c.status == "True" && c.reason.as_deref() == Some("PreemptionByScheduler")
            })
}

/// Finds the fewest, least important pods on `node` whose eviction lets `pod` fit
/// (upstream's `SelectVictimsOnNode`). `state` and `node` are the caller's copies.
pub fn select_victims_on_node(
    fw: &Framework,
    state: &mut CycleState,
    pod: &PodInfo,
    node: &mut NodeInfo,
    snapshot: &Snapshot<'_>,
    nominated: &[Arc<PodInfo>],
) -> Result<Candidate, Status> {
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Status::new(
            Code::UnschedulableAndUnresolvable,
            ERR_NO_VICTIMS,
        ));
    }
    for v in &potential {
        node.remove_pod(&v.uid);
        let s = fw.run_pre_filter_remove_pod(state, pod, v, node, snapshot);
        if !s.is_success() {
            return Err(s);
        }
    }
    let s = fw.run_filter_with_nominated(state, pod, node, snapshot, nominated);
    if !s.is_success() {
        return Err(s);
    }
    let now = now_nanos();
    potential.sort_by(|a, b| {
        if more_important(a, b, now) {
            Ordering::Less
        } else if more_important(b, a, now) {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    });
    // Reprieve PDB-violating pods first, then the others, most important first.
    let (violating, non_violating) = split_by_pdb_violation(potential, snapshot.pdbs);
    let mixed = !violating.is_empty() && !non_violating.is_empty();
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    for (v, violates) in violating
        .into_iter()
        .map(|v| (v, true))
        .chain(non_violating.into_iter().map(|v| (v, false)))
    {
        node.add_pod(v.clone());
        let s = fw.run_pre_filter_add_pod(state, pod, &v, node, snapshot);
        if !s.is_success() {
            return Err(s);
        }
        if !fw
            .run_filter_with_nominated(state, pod, node, snapshot, nominated)
            .is_success()
        {
            node.remove_pod(&v.uid);
            let s = fw.run_pre_filter_remove_pod(state, pod, &v, node, snapshot);
            if !s.is_success() {
                return Err(s);
            }
            if violates {
                pdb_violations += 1;
            }
            victims.push(v);
        }
    }
    if mixed {
        victims.sort_by(|a, b| {
            if more_important(a, b, now) {
                Ordering::Less
            } else if more_important(b, a, now) {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        });
    }
    Ok(Candidate {
        node: usize::MAX,
        victims,
        pdb_violations,
    })
}

/// Splits `pods` (order kept) into those whose eviction would exceed a
/// PodDisruptionBudget's allowed disruptions and the rest (upstream's
/// `filterPodsWithPDBViolation`).
pub fn split_by_pdb_violation(
    pods: Vec<Arc<PodInfo>>,
    pdbs: &[DisruptionBudget],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i32> = pdbs.iter().map(|p| p.disruptions_allowed).collect();
    let mut violating = Vec::new();
    let mut non_violating = Vec::new();
    for p in pods {
        let mut violated = false;
        if !p.labels().is_empty() {
            for (i, pdb) in pdbs.iter().enumerate() {
                if pdb.namespace != p.namespace()
                    || !pdb.selector.matches(p.labels())
                    || pdb.disrupted_pods.iter().any(|n| n == p.name())
                {
                    continue;
                }
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violated = true;
                }
            }
        }
        if violated {
            violating.push(p);
        } else {
            non_violating.push(p);
        }
    }
    (violating, non_violating)
}

/// Picks the best candidate (upstream's `pickOneNodeForPreemption`); `victims` of each are
/// sorted most important first.
pub fn pick_one(candidates: &[Candidate]) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    let now = now_nanos();
    let earliest_start = |c: &Candidate| -> i128 {
        let top = c.victims.first().map_or(i32::MIN, |v| v.priority);
        c.victims
            .iter()
            .filter(|v| v.priority == top)
            .map(|v| v.start_time_nanos(now))
            .min()
            .unwrap_or(i128::MIN)
    };
    let scores: [&dyn Fn(&Candidate) -> i128; 5] = [
        &|c| -(c.pdb_violations as i128),
        &|c| -i128::from(c.victims.first().map_or(i32::MIN, |v| v.priority)),
        &|c| {
            -c.victims
                .iter()
                .map(|v| i128::from(v.priority) + i128::from(i32::MAX) + 1)
                .sum::<i128>()
        },
        &|c| -(c.victims.len() as i128),
        &earliest_start,
    ];
    let mut remaining: Vec<usize> = (0..candidates.len()).collect();
    for f in scores {
        let best = remaining.iter().map(|&i| f(&candidates[i])).max()?;
        remaining.retain(|&i| f(&candidates[i]) == best);
        if remaining.len() == 1 {
            break;
        }
    }
    remaining.first().copied()
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        Some(self)
    }
}

fn unschedulable(msg: &str) -> Status {
    Status::new(Code::Unschedulable, format!("preemption: {msg}"))
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        fw: &Framework,
        state: &CycleState,
        pod: &PodInfo,
        statuses: &NodeToStatus,
        ctx: &PostFilterContext<'_>,
    ) -> (Option<PostFilterResult>, Status) {
        let snapshot = &ctx.snapshot;
        let spec = pod.pod.spec.as_ref();
        if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
            return (None, unschedulable(ERR_NOT_ELIGIBLE_NEVER));
        }
        let nominated_node = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty());
        if let Some(name) = nominated_node
            && let Some(&i) = snapshot.index.get(name)
            && statuses.get(i).map(|s| s.code()) != Some(Code::UnschedulableAndUnresolvable)
            && snapshot.nodes[i]
                .pods
                .iter()
                .any(|p| p.priority < pod.priority && terminating_by_preemption(&p.pod))
        {
            return (None, unschedulable(ERR_NOT_ELIGIBLE_TERMINATING));
        }

        let potential: Vec<usize> = (0..snapshot.nodes.len())
            .filter(|&i| statuses.get(i).map(|s| s.code()) == Some(Code::Unschedulable))
            .collect();
        let mut dry_run = NodeToStatus {
            statuses: Default::default(),
            absent: Some(Status::new(
                Code::UnschedulableAndUnresolvable,
                ERR_NOT_HELPFUL,
            )),
        };
        let mut candidates: Vec<Candidate> = Vec::new();
        if !potential.is_empty() {
            let offset = (ctx.random)(potential.len() as u64) as usize;
            let wanted = num_candidates(potential.len());
            for j in 0..potential.len() {
                let i = potential[(offset + j) % potential.len()];
                let mut node = snapshot.nodes[i].clone();
                let mut state = state.clone();
                let nominated = (ctx.nominated)(&node.name);
                match select_victims_on_node(fw, &mut state, pod, &mut node, snapshot, &nominated) {
                    Ok(mut c) if !c.victims.is_empty() => {
                        c.node = i;
                        candidates.push(c);
                        let non_violating =
                            candidates.iter().filter(|c| c.pdb_violations == 0).count();
                        if non_violating > 0 && candidates.len() >= wanted {
                            break;
                        }
                    }
                    Ok(_) => {
                        dry_run.statuses.insert(
                            i,
                            Status::error(format!(
                                "expected at least one victim pod on node {:?}",
                                node.name
                            )),
                        );
                    }
                    Err(s) => {
                        dry_run.statuses.insert(i, s);
                    }
                }
            }
        }
        let Some(best) = pick_one(&candidates) else {
            let diagnosis = Diagnosis {
                node_to_status: dry_run,
                ..Default::default()
            };
            let msg = fit_error_message(snapshot.nodes.len(), &diagnosis);
            let result = PostFilterResult {
                // Clear an earlier nomination: the pod cannot go there either.
                nominated_node: Some(String::new()),
                ..Default::default()
            };
            return (Some(result), unschedulable(&msg));
        };
        let best = &candidates[best];
        let node_name = snapshot.nodes[best.node].name.clone();
        let clear_nominations = (ctx.nominated)(&node_name)
            .into_iter()
            .filter(|p| p.priority < pod.priority && p.uid != pod.uid)
            .collect();
        (
            Some(PostFilterResult {
                nominated_node: Some(node_name),
                victims: best.victims.clone(),
                clear_nominations,
            }),
            Status::success(),
        )
    }
}

#[cfg(test)]
mod tests;
