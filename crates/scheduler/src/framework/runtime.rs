//! The framework: runs the enabled plugins at each extension point in order, and turns the
//! per-node verdicts of a failed cycle into upstream's `FitError` message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::cycle_state::CycleState;
use super::interface::{
    ClusterEvent, ClusterEventWithHint, EventObjects, Plugin, PostFilterContext, PostFilterResult,
    PreFilterPlugin, QueueingHint,
};
use super::status::{Code, Status};
use super::types::{NodeInfo, PodInfo, Snapshot};

/// A set of plugins, one bit per plugin in registry order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PluginSet(pub u64);

impl PluginSet {
    /// No plugin.
    pub const EMPTY: Self = Self(0);

    /// Adds plugin `i`.
    pub fn insert(&mut self, i: usize) {
        self.0 |= 1 << i;
    }

    /// Contains plugin `i`.
    pub fn contains(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }

    /// Empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The plugin indexes in the set.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |i| self.contains(*i))
    }
}

/// Why each node was rejected in a cycle, by node position in the snapshot; nodes not in
/// the map share `absent` (nodes a PreFilter result or a PreFilter failure ruled out).
#[derive(Debug, Clone, Default)]
pub struct NodeToStatus {
    /// Verdicts by node position.
    pub statuses: HashMap<usize, Status>,
    /// The verdict of every node not in `statuses`.
    pub absent: Option<Status>,
}

impl NodeToStatus {
    /// The verdict for node `i`.
    pub fn get(&self, i: usize) -> Option<&Status> {
        self.statuses.get(&i).or(self.absent.as_ref())
    }
}

/// Everything known about a failed cycle.
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    /// Per-node verdicts.
    pub node_to_status: NodeToStatus,
    /// Plugins that rejected the pod (for requeueing).
    pub unschedulable_plugins: PluginSet,
    /// Plugins that returned Pending.
    pub pending_plugins: PluginSet,
    /// The PreFilter rejection message, when PreFilter failed.
    pub pre_filter_msg: String,
    /// The PostFilter (preemption) message.
    pub post_filter_msg: String,
}

/// Upstream's `FitError.Error()`: `0/3 nodes are available: 1 Insufficient cpu, 2 node(s)
/// had untolerated taint {k: v}. preemption: ...`.
pub fn fit_error_message(num_all_nodes: usize, d: &Diagnosis) -> String {
    let mut msg = format!("0/{num_all_nodes} nodes are available:");
    if !d.pre_filter_msg.is_empty() {
        msg.push_str(&format!(" {}.", d.pre_filter_msg));
    } else {
        let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
        for status in d.node_to_status.statuses.values() {
            for r in status.reasons() {
                *histogram.entry(r.as_ref()).or_default() += 1;
            }
        }
        let listed = d.node_to_status.statuses.len();
        if listed < num_all_nodes
            && let Some(absent) = &d.node_to_status.absent
        {
            for r in absent.reasons() {
                *histogram.entry(r.as_ref()).or_default() += num_all_nodes - listed;
            }
        }
        let mut reasons: Vec<String> = histogram
            .into_iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        reasons.sort();
        if !reasons.is_empty() {
            msg.push_str(&format!(" {}.", reasons.join(", ")));
        }
    }
    if !d.post_filter_msg.is_empty() {
        // The preemption message is itself a sentence ("... scheduling."): one period.
        msg.push(' ');
        msg.push_str(&d.post_filter_msg);
        if !d.post_filter_msg.ends_with('.') {
            msg.push('.');
        }
    }
    msg
}

/// The enabled plugins of the profile, by extension point.
pub struct Framework {
    plugins: Vec<Arc<dyn Plugin>>,
    pre_enqueue: Vec<usize>,
    pre_filter: Vec<usize>,
    filter: Vec<usize>,
    post_filter: Vec<usize>,
    pre_score: Vec<usize>,
    score: Vec<(usize, i64)>,
    registrations: Vec<(usize, ClusterEventWithHint)>,
    /// The scheduler name pods must ask for (`spec.schedulerName`).
    pub scheduler_name: String,
}

impl std::fmt::Debug for Framework {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framework")
            .field(
                "plugins",
                &self.plugins.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Framework {
    /// Builds a framework from plugins (in registry order) and their score weights.
    pub fn new(scheduler_name: &str, plugins: Vec<(Arc<dyn Plugin>, i64)>) -> Self {
        assert!(plugins.len() <= 64, "at most 64 plugins");
        let mut fw = Self {
            plugins: Vec::with_capacity(plugins.len()),
            pre_enqueue: Vec::new(),
            pre_filter: Vec::new(),
            filter: Vec::new(),
            post_filter: Vec::new(),
            pre_score: Vec::new(),
            score: Vec::new(),
            registrations: Vec::new(),
            scheduler_name: scheduler_name.to_string(),
        };
        for (i, (p, weight)) in plugins.into_iter().enumerate() {
            if p.as_pre_enqueue().is_some() {
                fw.pre_enqueue.push(i);
            }
            if p.as_pre_filter().is_some() {
                fw.pre_filter.push(i);
            }
            if p.as_filter().is_some() {
                fw.filter.push(i);
            }
            if p.as_post_filter().is_some() {
                fw.post_filter.push(i);
            }
            if p.as_pre_score().is_some() {
                fw.pre_score.push(i);
            }
            if p.as_score().is_some() && weight > 0 {
                fw.score.push((i, weight));
            }
            for reg in p.events_to_register() {
                fw.registrations.push((i, reg));
            }
            fw.plugins.push(p);
        }
        fw
    }

    /// The plugins, in registry order.
    pub fn plugins(&self) -> &[Arc<dyn Plugin>] {
        &self.plugins
    }

    /// The position of the plugin named `name`.
    pub fn plugin_index(&self, name: &str) -> Option<usize> {
        self.plugins.iter().position(|p| p.name() == name)
    }

    /// The names of the plugins in `set`.
    pub fn plugin_names(&self, set: PluginSet) -> Vec<&'static str> {
        set.iter()
            .filter_map(|i| self.plugins.get(i).map(|p| p.name()))
            .collect()
    }

    /// Runs PreEnqueue plugins: a pod that fails one waits for an update.
    pub fn run_pre_enqueue(&self, pod: &PodInfo) -> Result<(), (usize, Status)> {
        for &i in &self.pre_enqueue {
            if let Some(p) = self.plugins[i].as_pre_enqueue() {
                let s = p.pre_enqueue(pod);
                if !s.is_success() {
                    return Err((i, s.with_plugin(self.plugins[i].name())));
                }
            }
        }
        Ok(())
    }

    /// Runs PreFilter plugins. `Ok(Some((names, plugins)))` restricts the cycle to those
    /// nodes (`plugins` restricted it).
    #[allow(clippy::type_complexity)]
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot<'_>,
    ) -> Result<Option<(Vec<String>, Vec<&'static str>)>, (Status, PluginSet)> {
        let mut allowed: Option<(Vec<String>, Vec<&'static str>)> = None;
        for &i in &self.pre_filter {
            let plugin = &self.plugins[i];
            let Some(p) = plugin.as_pre_filter() else {
                continue;
            };
            let (result, status) = p.pre_filter(state, pod, snapshot);
            if status.is_skip() {
                state.skip_filter |= 1 << i;
                continue;
            }
            if !status.is_success() {
                let mut set = PluginSet::EMPTY;
                if status.is_rejected() {
                    set.insert(i);
                }
                return Err((status.with_plugin(plugin.name()), set));
            }
            if let Some(names) = result.and_then(|r| r.node_names) {
                allowed = Some(match allowed {
                    None => (names, vec![plugin.name()]),
                    Some((prev, mut who)) => {
                        who.push(plugin.name());
                        (
                            prev.into_iter().filter(|n| names.contains(n)).collect(),
                            who,
                        )
                    }
                });
                if allowed.as_ref().is_some_and(|(n, _)| n.is_empty()) {
                    let who = allowed.map(|(_, w)| w).unwrap_or_default();
                    let mut set = PluginSet::EMPTY;
                    set.insert(i);
                    let msg = if who.len() > 1 {
                        format!(
                            "node(s) didn't satisfy plugin(s) [{}] simultaneously",
                            who.join(" ")
                        )
                    } else {
                        format!("node(s) didn't satisfy plugin(s) [{}]", who.join(" "))
                    };
                    return Err((
                        Status::new(Code::UnschedulableAndUnresolvable, msg)
                            .with_plugin(plugin.name()),
                        set,
                    ));
                }
            }
        }
        Ok(allowed)
    }

    /// Runs Filter plugins on one node; the first rejection wins (tagged with its plugin).
    pub fn run_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot<'_>,
    ) -> Status {
        for &i in &self.filter {
            if state.skip_filter & (1 << i) != 0 {
                continue;
            }
            let plugin = &self.plugins[i];
            if let Some(p) = plugin.as_filter() {
                let s = p.filter(state, pod, node, snapshot);
                if !s.is_success() {
                    return s.with_plugin(plugin.name());
                }
            }
        }
        Status::success()
    }

    /// Runs Filter plugins as if the pods nominated to the node with at least the pod's
    /// priority were already there, then (if they were any) without them: the pod must fit
    /// both ways (upstream's `RunFilterPluginsWithNominatedPods`).
    pub fn run_filter_with_nominated(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot<'_>,
        nominated: &[Arc<PodInfo>],
    ) -> Status {
        let relevant: Vec<&Arc<PodInfo>> = nominated
            .iter()
            .filter(|n| n.uid != pod.uid && n.priority >= pod.priority)
            .collect();
        if relevant.is_empty() {
            return self.run_filter(state, pod, node, snapshot);
        }
        let mut state_with = state.clone();
        let mut node_with = node.clone();
        for n in &relevant {
            node_with.add_pod((*n).clone());
            let s = self.run_pre_filter_add_pod(&mut state_with, pod, n, &node_with, snapshot);
            if !s.is_success() {
                return s;
            }
        }
        let s = self.run_filter(&state_with, pod, &node_with, snapshot);
        if !s.is_success() {
            return s;
        }
        self.run_filter(state, pod, node, snapshot)
    }

    /// Calls `call` on every PreFilter plugin with extensions that did not skip this cycle,
    /// stopping at the first failure.
    fn each_pre_filter_extension(
        &self,
        state: &mut CycleState,
        call: impl Fn(&dyn PreFilterPlugin, &mut CycleState) -> Status,
    ) -> Status {
        for &i in &self.pre_filter {
            if state.skip_filter & (1 << i) != 0 {
                continue;
            }
            if let Some(p) = self.plugins[i]
                .as_pre_filter()
                .filter(|p| p.has_extensions())
            {
                let s = call(p, state);
                if !s.is_success() {
                    return s.with_plugin(self.plugins[i].name());
                }
            }
        }
        Status::success()
    }

    /// Tells PreFilter plugins with extensions that `other` is now on `node`.
    pub fn run_pre_filter_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot<'_>,
    ) -> Status {
        self.each_pre_filter_extension(state, |p, state| {
            p.add_pod(state, pod, other, node, snapshot)
        })
    }

    /// Tells PreFilter plugins with extensions that `other` left `node`.
    pub fn run_pre_filter_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot<'_>,
    ) -> Status {
        self.each_pre_filter_extension(state, |p, state| {
            p.remove_pod(state, pod, other, node, snapshot)
        })
    }

    /// Runs PostFilter plugins until one succeeds (or rejects definitively).
    pub fn run_post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        statuses: &NodeToStatus,
        ctx: &PostFilterContext<'_>,
    ) -> (Option<PostFilterResult>, Status) {
        let mut last = (None, Status::new(Code::Unschedulable, ""));
        let mut messages = Vec::new();
        for &i in &self.post_filter {
            let plugin = &self.plugins[i];
            let Some(p) = plugin.as_post_filter() else {
                continue;
            };
            let (result, status) = p.post_filter(self, state, pod, statuses, ctx);
            if status.is_success() {
                return (result, status.with_plugin(plugin.name()));
            }
            if status.code() == Code::UnschedulableAndUnresolvable {
                return (result, status.with_plugin(plugin.name()));
            }
            if status.code() == Code::Error {
                return (result, status.with_plugin(plugin.name()));
            }
            let m = status.message();
            if !m.is_empty() {
                messages.push(m);
            }
            last = (result, status.with_plugin(plugin.name()));
        }
        if !messages.is_empty() {
            let code = last.1.code();
            let plugin = last.1.plugin();
            last.1 = Status::new(code, messages.join(" ")).with_plugin(plugin);
        }
        last
    }

    /// Whether any Score plugin is enabled.
    pub fn has_score_plugins(&self) -> bool {
        !self.score.is_empty()
    }

    /// Runs PreScore, Score and NormalizeScore; returns the weighted total of each node.
    pub fn run_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        snapshot: &Snapshot<'_>,
    ) -> Result<Vec<i64>, Status> {
        for &i in &self.pre_score {
            let plugin = &self.plugins[i];
            if let Some(p) = plugin.as_pre_score() {
                let s = p.pre_score(state, pod, nodes, snapshot);
                if s.is_skip() {
                    state.skip_score |= 1 << i;
                } else if !s.is_success() {
                    return Err(s.with_plugin(plugin.name()));
                }
            }
        }
        let mut totals = vec![0i64; nodes.len()];
        let mut scratch = vec![0i64; nodes.len()];
        for &(i, weight) in &self.score {
            if state.skip_score & (1 << i) != 0 {
                continue;
            }
            let plugin = &self.plugins[i];
            let Some(p) = plugin.as_score() else {
                continue;
            };
            for (slot, node) in scratch.iter_mut().zip(nodes) {
                *slot = p
                    .score(state, pod, node, snapshot)
                    .map_err(|s| s.with_plugin(plugin.name()))?;
            }
            let s = p.normalize(state, pod, &mut scratch);
            if !s.is_success() {
                return Err(s.with_plugin(plugin.name()));
            }
            for (t, s) in totals.iter_mut().zip(&scratch) {
                *t += s * weight;
            }
        }
        Ok(totals)
    }

    /// Whether `event` may make a pod that `rejectors` rejected schedulable: any rejecting
    /// plugin registered for it and its hint (if any) does not say Skip. A pod without
    /// rejecting plugins (an error, a flush) is always retried.
    pub fn worth_requeueing(
        &self,
        rejectors: PluginSet,
        event: &ClusterEvent,
        objects: &EventObjects<'_>,
        pod: &PodInfo,
    ) -> bool {
        if rejectors.is_empty() || event.resource == super::interface::EventResource::WildCard {
            return true;
        }
        self.registrations.iter().any(|(i, reg)| {
            rejectors.contains(*i)
                && reg.event.covers(event)
                && reg
                    .hint
                    .is_none_or(|hint| hint(pod, objects) == QueueingHint::Queue)
        })
    }

    /// The plugins interested in `event` at all (cheap pre-check before hints).
    pub fn interested(&self, event: &ClusterEvent) -> PluginSet {
        let mut set = PluginSet::EMPTY;
        for (i, reg) in &self.registrations {
            if reg.event.covers(event) {
                set.insert(*i);
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_error_messages_match_upstream() {
        let mut d = Diagnosis::default();
        d.node_to_status
            .statuses
            .insert(0, Status::new(Code::Unschedulable, "Insufficient cpu"));
        for i in 1..3 {
            d.node_to_status.statuses.insert(
                i,
                Status::new(
                    Code::UnschedulableAndUnresolvable,
                    "node(s) had untolerated taint {key: value}",
                ),
            );
        }
        d.post_filter_msg =
            "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
                .into();
        assert_eq!(
            fit_error_message(3, &d),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {key: value}. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
        let p = Diagnosis {
            pre_filter_msg: "node(s) didn't match Pod's node affinity/selector".into(),
            ..Default::default()
        };
        assert_eq!(
            fit_error_message(2, &p),
            "0/2 nodes are available: node(s) didn't match Pod's node affinity/selector."
        );
        let mut a = Diagnosis::default();
        a.node_to_status.absent = Some(Status::new(
            Code::UnschedulableAndUnresolvable,
            "Preemption is not helpful for scheduling",
        ));
        assert_eq!(
            fit_error_message(3, &a),
            "0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }
}
