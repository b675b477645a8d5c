//! The only place that lists every in-tree plugin: the default profile, in upstream's
//! order (which is the order Filter plugins run in) with upstream's score weights.

use std::sync::Arc;

use super::noderesources::ScoringStrategy;
use super::{
    defaultpreemption, imagelocality, interpodaffinity, nodeaffinity, nodename, nodeports,
    noderesources, nodeunschedulable, podtopologyspread, queuesort, schedulinggates,
    tainttoleration,
};
use crate::framework::{Framework, Plugin};

/// Plugin arguments of the profile.
#[derive(Debug, Clone, Default)]
pub struct Args {
    /// How NodeResourcesFit scores (LeastAllocated by default).
    pub scoring_strategy: ScoringStrategy,
}

/// The default profile's plugins with their score weights (0: not a Score plugin).
pub fn default_plugins(args: &Args) -> Vec<(Arc<dyn Plugin>, i64)> {
    vec![
        (Arc::new(schedulinggates::SchedulingGates), 0),
        (Arc::new(queuesort::PrioritySort), 0),
        (Arc::new(nodeunschedulable::NodeUnschedulable), 0),
        (Arc::new(nodename::NodeName), 0),
        (Arc::new(tainttoleration::TaintToleration), 3),
        (Arc::new(nodeaffinity::NodeAffinity), 2),
        (Arc::new(nodeports::NodePorts), 0),
        (Arc::new(noderesources::Fit::new(args.scoring_strategy)), 1),
        (Arc::new(podtopologyspread::PodTopologySpread), 2),
        (Arc::new(interpodaffinity::InterPodAffinity), 2),
        (Arc::new(defaultpreemption::DefaultPreemption), 0),
        (Arc::new(noderesources::BalancedAllocation), 1),
        (Arc::new(imagelocality::ImageLocality), 1),
    ]
}

/// The default profile for `scheduler_name`.
pub fn default_framework(scheduler_name: &str, args: &Args) -> Framework {
    Framework::new(scheduler_name, default_plugins(args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::names;

    #[test]
    fn default_profile_matches_upstream() {
        let plugins = default_plugins(&Args::default());
        let weights: Vec<(&str, i64)> = plugins
            .iter()
            .filter(|(p, _)| p.as_score().is_some())
            .map(|(p, w)| (p.name(), *w))
            .collect();
        assert_eq!(
            weights,
            vec![
                (names::TAINT_TOLERATION, 3),
                (names::NODE_AFFINITY, 2),
                (names::NODE_RESOURCES_FIT, 1),
                (names::POD_TOPOLOGY_SPREAD, 2),
                (names::INTER_POD_AFFINITY, 2),
                (names::NODE_RESOURCES_BALANCED_ALLOCATION, 1),
                (names::IMAGE_LOCALITY, 1),
            ]
        );
        let filters: Vec<&str> = plugins
            .iter()
            .filter(|(p, _)| p.as_filter().is_some())
            .map(|(p, _)| p.name())
            .collect();
        assert_eq!(
            filters,
            vec![
                names::NODE_UNSCHEDULABLE,
                names::NODE_NAME,
                names::TAINT_TOLERATION,
                names::NODE_AFFINITY,
                names::NODE_PORTS,
                names::NODE_RESOURCES_FIT,
                names::POD_TOPOLOGY_SPREAD,
                names::INTER_POD_AFFINITY,
            ]
        );
    }
}
