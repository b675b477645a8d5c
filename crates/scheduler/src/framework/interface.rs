//! The plugin interfaces: one trait per extension point, each extending [`Plugin`], and the
//! cluster events plugins register for so the queue knows when a rejected pod may fit.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use super::cycle_state::CycleState;
use super::runtime::{Framework, NodeToStatus};
use super::status::Status;
use super::types::{NodeInfo, PodInfo, Snapshot};

/// The highest score a Score plugin may give after normalization.
pub const MAX_NODE_SCORE: i64 = 100;

/// What every plugin is: a name, the events that may make a pod it rejected schedulable,
/// and the extension points it implements (the `as_*` accessors).
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's name (from [`crate::plugins::names`]).
    fn name(&self) -> &'static str;

    /// Cluster events that may make a pod this plugin rejected schedulable.
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        Vec::new()
    }

    /// The QueueSort extension point.
    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        None
    }
    /// The PreEnqueue extension point.
    fn as_pre_enqueue(&self) -> Option<&dyn PreEnqueuePlugin> {
        None
    }
    /// The PreFilter extension point.
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    /// The Filter extension point.
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    /// The PostFilter extension point.
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        None
    }
    /// The PreScore extension point.
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    /// The Score extension point.
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
}

/// Orders the active queue.
pub trait QueueSortPlugin: Plugin {
    /// Whether `a` should be scheduled before `b`.
    fn less(&self, a: &QueuedPodRef<'_>, b: &QueuedPodRef<'_>) -> bool;
}

/// What QueueSort compares.
pub struct QueuedPodRef<'a> {
    /// The pod.
    pub pod: &'a PodInfo,
    /// When it (last) entered the queue, as a sequence number (smaller: earlier).
    pub timestamp: u64,
}

/// Decides whether a pod may enter the active queue at all (scheduling gates).
pub trait PreEnqueuePlugin: Plugin {
    /// Success lets the pod in; anything else keeps it waiting for an update.
    fn pre_enqueue(&self, pod: &PodInfo) -> Status;
}

/// Which nodes a PreFilter plugin restricts the cycle to (`None`: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreFilterResult {
    /// The only node names worth evaluating.
    pub node_names: Option<Vec<String>>,
}

/// Computes per-pod data before filtering; may reject the pod outright.
pub trait PreFilterPlugin: Plugin {
    /// Runs once per cycle.
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot<'_>,
    ) -> (Option<PreFilterResult>, Status);

    /// Whether `add_pod`/`remove_pod` must be called when preemption or nominated pods
    /// change a node's pods during the cycle.
    fn has_extensions(&self) -> bool {
        false
    }

    /// `to_add` is now considered on `node`.
    fn add_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _to_add: &PodInfo,
        _node: &NodeInfo,
        _snapshot: &Snapshot<'_>,
    ) -> Status {
        Status::success()
    }

    /// `to_remove` is no longer considered on `node`.
    fn remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _to_remove: &PodInfo,
        _node: &NodeInfo,
        _snapshot: &Snapshot<'_>,
    ) -> Status {
        Status::success()
    }
}

/// Decides whether the pod fits one node.
pub trait FilterPlugin: Plugin {
    /// Success when the pod may run on `node`.
    fn filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot<'_>,
    ) -> Status;
}

/// What a PostFilter plugin (preemption) decided.
#[derive(Debug, Clone, Default)]
pub struct PostFilterResult {
    /// The node to nominate (`Some("")` clears an earlier nomination).
    pub nominated_node: Option<String>,
    /// Pods to evict so the pod fits the nominated node.
    pub victims: Vec<Arc<PodInfo>>,
    /// Lower-priority pods nominated to the same node whose nomination is cleared.
    pub clear_nominations: Vec<Arc<PodInfo>>,
}

/// Runs after no node fit (preemption).
pub trait PostFilterPlugin: Plugin {
    /// `statuses` says why each node was rejected.
    fn post_filter(
        &self,
        framework: &Framework,
        state: &CycleState,
        pod: &PodInfo,
        statuses: &NodeToStatus,
        ctx: &PostFilterContext<'_>,
    ) -> (Option<PostFilterResult>, Status);
}

/// What PostFilter plugins may read besides the snapshot.
pub struct PostFilterContext<'a> {
    /// The cluster.
    pub snapshot: Snapshot<'a>,
    /// Pods nominated to each node (by the queue), with their priority.
    pub nominated: &'a dyn Fn(&str) -> Vec<Arc<PodInfo>>,
    /// A random number source for sampling candidates.
    pub random: &'a dyn Fn(u64) -> u64,
}

/// Computes per-pod scoring data over the feasible nodes.
pub trait PreScorePlugin: Plugin {
    /// Runs once per cycle with the feasible nodes; `Skip` skips the plugin's Score.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        snapshot: &Snapshot<'_>,
    ) -> Status;
}

/// Ranks feasible nodes.
pub trait ScorePlugin: Plugin {
    /// The raw score of `node`.
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot<'_>,
    ) -> Result<i64, Status>;

    /// Brings the raw scores of all feasible nodes into `0..=MAX_NODE_SCORE`.
    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [i64]) -> Status {
        Status::success()
    }
}

/// What changed in the cluster (upstream's `ActionType`), as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ActionType(pub u32);

impl ActionType {
    /// An object was added.
    pub const ADD: Self = Self(1);
    /// An object was deleted.
    pub const DELETE: Self = Self(1 << 1);
    /// A node's allocatable changed.
    pub const UPDATE_NODE_ALLOCATABLE: Self = Self(1 << 2);
    /// A node's labels changed.
    pub const UPDATE_NODE_LABEL: Self = Self(1 << 3);
    /// A node's taints (or `spec.unschedulable`) changed.
    pub const UPDATE_NODE_TAINT: Self = Self(1 << 4);
    /// A node's conditions changed (heartbeat times aside).
    pub const UPDATE_NODE_CONDITION: Self = Self(1 << 5);
    /// A node's annotations changed.
    pub const UPDATE_NODE_ANNOTATION: Self = Self(1 << 6);
    /// A pod's labels changed.
    pub const UPDATE_POD_LABEL: Self = Self(1 << 7);
    /// A pod's requests shrank.
    pub const UPDATE_POD_SCALE_DOWN: Self = Self(1 << 8);
    /// A node's images changed.
    pub const UPDATE_NODE_IMAGES: Self = Self(1 << 9);
    /// Any update.
    pub const UPDATE: Self = Self(
        Self::UPDATE_NODE_ALLOCATABLE.0
            | Self::UPDATE_NODE_LABEL.0
            | Self::UPDATE_NODE_TAINT.0
            | Self::UPDATE_NODE_CONDITION.0
            | Self::UPDATE_NODE_ANNOTATION.0
            | Self::UPDATE_POD_LABEL.0
            | Self::UPDATE_POD_SCALE_DOWN.0
            | Self::UPDATE_NODE_IMAGES.0,
    );
    /// Anything.
    pub const ALL: Self = Self(u32::MAX);

    /// Both sets of bits.
    #[must_use]
    pub const fn or(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Any bit in common.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// No bits.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The kind of object an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventResource {
    /// A pod bound to a node (unscheduled pods requeue through their own updates).
    Pod,
    /// A node.
    Node,
    /// A namespace.
    Namespace,
    /// Anything (matches every event).
    WildCard,
}

/// One kind of cluster change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterEvent {
    /// What kind of object changed.
    pub resource: EventResource,
    /// How.
    pub action: ActionType,
}

impl ClusterEvent {
    /// Any change to anything (used for the periodic flush and unknown changes).
    pub const WILDCARD: Self = Self {
        resource: EventResource::WildCard,
        action: ActionType::ALL,
    };

    /// Whether a registration for `self` covers the event `ev`.
    pub fn covers(&self, ev: &ClusterEvent) -> bool {
        (self.resource == EventResource::WildCard
            || ev.resource == EventResource::WildCard
            || self.resource == ev.resource)
            && self.action.intersects(ev.action)
    }
}

/// Whether an event is worth retrying a rejected pod for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueingHint {
    /// Retry the pod.
    Queue,
    /// The event cannot make the pod schedulable.
    Skip,
}

/// The objects behind an event.
#[derive(Debug, Clone, Copy)]
pub enum EventObjects<'a> {
    /// A node change.
    Node {
        /// Before (None: added).
        old: Option<&'a Node>,
        /// After (None: deleted).
        new: Option<&'a Node>,
    },
    /// A bound pod change.
    Pod {
        /// Before (None: added).
        old: Option<&'a PodInfo>,
        /// After (None: deleted).
        new: Option<&'a PodInfo>,
    },
    /// No object (a flush or an unknown change).
    None,
}

/// Decides, for a pod a plugin rejected, whether an event may help it.
pub type QueueingHintFn = fn(pod: &PodInfo, objects: &EventObjects<'_>) -> QueueingHint;

/// An event registration, with an optional hint to skip events that cannot help.
#[derive(Clone, Copy)]
pub struct ClusterEventWithHint {
    /// The event.
    pub event: ClusterEvent,
    /// `None`: always retry.
    pub hint: Option<QueueingHintFn>,
}

impl ClusterEventWithHint {
    /// A registration without a hint.
    #[must_use]
    pub const fn new(resource: EventResource, action: ActionType) -> Self {
        Self {
            event: ClusterEvent { resource, action },
            hint: None,
        }
    }

    /// A registration with a hint.
    #[must_use]
    pub const fn with_hint(
        resource: EventResource,
        action: ActionType,
        hint: QueueingHintFn,
    ) -> Self {
        Self {
            event: ClusterEvent { resource, action },
            hint: Some(hint),
        }
    }
}

impl std::fmt::Debug for ClusterEventWithHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterEventWithHint")
            .field("event", &self.event)
            .field("hint", &self.hint.is_some())
            .finish()
    }
}
