//! Every plugin name, as upstream's `pkg/scheduler/framework/plugins/names`.

/// PrioritySort (QueueSort).
pub const PRIORITY_SORT: &str = "PrioritySort";
/// SchedulingGates (PreEnqueue).
pub const SCHEDULING_GATES: &str = "SchedulingGates";
/// NodeUnschedulable (Filter).
pub const NODE_UNSCHEDULABLE: &str = "NodeUnschedulable";
/// NodeName (Filter).
pub const NODE_NAME: &str = "NodeName";
/// TaintToleration (Filter, Score).
pub const TAINT_TOLERATION: &str = "TaintToleration";
/// NodeAffinity (PreFilter, Filter, Score).
pub const NODE_AFFINITY: &str = "NodeAffinity";
/// NodePorts (PreFilter, Filter).
pub const NODE_PORTS: &str = "NodePorts";
/// NodeResourcesFit (PreFilter, Filter, Score).
pub const NODE_RESOURCES_FIT: &str = "NodeResourcesFit";
/// PodTopologySpread (PreFilter, Filter, PreScore, Score).
pub const POD_TOPOLOGY_SPREAD: &str = "PodTopologySpread";
/// InterPodAffinity (PreFilter, Filter, PreScore, Score).
pub const INTER_POD_AFFINITY: &str = "InterPodAffinity";
/// DefaultPreemption (PostFilter).
pub const DEFAULT_PREEMPTION: &str = "DefaultPreemption";
/// NodeResourcesBalancedAllocation (Score).
pub const NODE_RESOURCES_BALANCED_ALLOCATION: &str = "NodeResourcesBalancedAllocation";
/// ImageLocality (Score).
pub const IMAGE_LOCALITY: &str = "ImageLocality";
/// DefaultBinder (Bind; the binding itself is done by [`crate::binder`]).
pub const DEFAULT_BINDER: &str = "DefaultBinder";
