//! The scheduling framework, as upstream's `k8s.io/kube-scheduler/framework`: plugin traits
//! per extension point ([`interface`]), the [`Status`] a plugin returns, per-cycle plugin
//! data ([`CycleState`]), what the scheduler knows about pods and nodes ([`types`]), and the
//! [`Framework`] that runs a profile's plugins in order ([`runtime`]).
//!
//! A scheduling cycle for one pod: PreFilter (once) → Filter (per node, until enough feasible
//! nodes are found) → PostFilter (preemption, only when no node fits) → PreScore → Score and
//! NormalizeScore (per feasible node) → the highest weighted total wins.

pub mod cycle_state;
pub mod interface;
pub mod resource;
pub mod runtime;
pub mod selector;
pub mod status;
pub mod types;

pub use cycle_state::CycleState;
pub use interface::{
    ActionType, ClusterEvent, ClusterEventWithHint, EventObjects, EventResource, FilterPlugin,
    MAX_NODE_SCORE, Plugin, PostFilterContext, PostFilterPlugin, PostFilterResult,
    PreEnqueuePlugin, PreFilterPlugin, PreFilterResult, PreScorePlugin, QueueSortPlugin,
    QueueingHint, ScorePlugin,
};
pub use runtime::{Diagnosis, Framework, NodeToStatus, PluginSet, fit_error_message};
pub use status::{Code, Status};
pub use types::{NodeInfo, PodInfo, Snapshot};

/// Upstream's `DefaultNormalizeScore`: scales scores so the highest becomes `max`
/// (all zero stay zero), reversed (`max - score`) when `reverse`.
pub fn default_normalize_score(max: i64, reverse: bool, scores: &mut [i64]) {
    let highest = scores.iter().copied().max().unwrap_or(0);
    if highest == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = max);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = max * *s / highest;
        *s = if reverse { max - v } else { v };
    }
}
