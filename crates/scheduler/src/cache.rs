//! The scheduler cache: every node with the pods on it (bound or assumed) and running
//! totals, fed by the informers and by the scheduler's own assumptions.
//!
//! A pod is *assumed* on a node as soon as a cycle picks the node, before the binding
//! request returns, so the next cycle already counts its resources (upstream's assume
//! cache). When the informer later reports the pod bound, the assumption is *confirmed*;
//! when the binding fails, it is *forgotten*.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use crate::framework::selector::Labels;
use crate::framework::types::{DisruptionBudget, Spreaders};
use crate::framework::{NodeInfo, PodInfo, Snapshot};

/// Where the cache keeps one pod.
#[derive(Debug, Clone)]
struct PodState {
    info: Arc<PodInfo>,
    node: String,
    /// Placed by this scheduler and not yet seen bound by the informer.
    assumed: bool,
}

/// What adding or updating a bound pod changed.
#[derive(Debug)]
pub enum PodChange {
    /// The pod is new to the cache (or an assumption was confirmed).
    Added,
    /// The pod was known; here is its previous state.
    Updated(Arc<PodInfo>),
}

/// Nodes and the pods on them.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Pods bound to nodes the cache does not know (yet).
    orphans: HashMap<String, Vec<Arc<PodInfo>>>,
    pods: HashMap<String, PodState>,
    namespaces: HashMap<String, Labels>,
    image_nodes: HashMap<String, usize>,
    /// Pods on nodes (not orphans) with any pod (anti-)affinity.
    with_affinity: usize,
    /// Pods on nodes (not orphans) with required anti-affinity.
    with_required_anti_affinity: usize,
    /// PodDisruptionBudgets by `namespace/name`.
    pdb_index: HashMap<String, usize>,
    pdbs: Vec<DisruptionBudget>,
    /// Service and workload selectors (default spread constraints).
    pub spreaders: Spreaders,
}

impl Cache {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A view for a scheduling cycle.
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            nodes: &self.nodes,
            index: &self.index,
            namespaces: &self.namespaces,
            image_nodes: &self.image_nodes,
            pods_with_affinity: self.with_affinity,
            pods_with_required_anti_affinity: self.with_required_anti_affinity,
            pdbs: &self.pdbs,
            spreaders: &self.spreaders,
        }
    }

    /// Adds or replaces a PodDisruptionBudget.
    pub fn upsert_pdb(&mut self, key: &str, pdb: DisruptionBudget) {
        match self.pdb_index.get(key) {
            Some(&i) => self.pdbs[i] = pdb,
            None => {
                self.pdb_index.insert(key.to_string(), self.pdbs.len());
                self.pdbs.push(pdb);
            }
        }
    }

    /// Removes a PodDisruptionBudget.
    pub fn remove_pdb(&mut self, key: &str) {
        if let Some(i) = self.pdb_index.remove(key) {
            self.pdbs.swap_remove(i);
            if let Some(moved) = self
                .pdb_index
                .iter_mut()
                .find(|(_, v)| **v == self.pdbs.len())
            {
                *moved.1 = i;
            }
        }
    }

    fn count_affinity(&mut self, pod: &PodInfo, delta: isize) {
        if pod.has_affinity() {
            self.with_affinity = self.with_affinity.saturating_add_signed(delta);
        }
        if !pod.required_anti_affinity.is_empty() {
            self.with_required_anti_affinity = self
                .with_required_anti_affinity
                .saturating_add_signed(delta);
        }
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// The names of all nodes.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Adds or replaces a node; returns the previous object when it was known.
    pub fn upsert_node(&mut self, node: Arc<Node>) -> Option<Arc<Node>> {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(&i) = self.index.get(&name) {
            let old = self.nodes[i].node.clone();
            count_images(&mut self.image_nodes, &self.nodes[i].images, -1);
            self.nodes[i].set_node(node);
            count_images(&mut self.image_nodes, &self.nodes[i].images, 1);
            return Some(old);
        }
        let mut info = NodeInfo::new(node);
        for pod in self.orphans.remove(&name).unwrap_or_default() {
            self.count_affinity(&pod, 1);
            info.add_pod(pod);
        }
        count_images(&mut self.image_nodes, &info.images, 1);
        self.index.insert(name, self.nodes.len());
        self.nodes.push(info);
        None
    }

    /// Removes a node; its pods stay known (as orphans) until they are deleted.
    pub fn remove_node(&mut self, name: &str) -> Option<Arc<Node>> {
        let i = self.index.remove(name)?;
        let info = self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
        count_images(&mut self.image_nodes, &info.images, -1);
        for pod in &info.pods {
            self.count_affinity(pod, -1);
        }
        if !info.pods.is_empty() {
            self.orphans.insert(name.to_string(), info.pods.clone());
        }
        Some(info.node)
    }

    /// Sets a namespace's labels; returns whether they changed.
    pub fn upsert_namespace(&mut self, name: &str, labels: Labels) -> bool {
        self.namespaces.insert(name.to_string(), labels.clone()) != Some(labels)
    }

    /// Forgets a namespace.
    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    fn place(&mut self, node: &str, pod: Arc<PodInfo>) {
        match self.index.get(node) {
            Some(&i) => {
                self.count_affinity(&pod, 1);
                self.nodes[i].add_pod(pod);
            }
            None => self.orphans.entry(node.to_string()).or_default().push(pod),
        }
    }

    fn unplace(&mut self, node: &str, uid: &str) {
        match self.index.get(node) {
            Some(&i) => {
                if let Some(pod) = self.nodes[i].remove_pod(uid) {
                    self.count_affinity(&pod, -1);
                }
            }
            None => {
                if let Some(list) = self.orphans.get_mut(node) {
                    list.retain(|p| p.uid != uid);
                    if list.is_empty() {
                        self.orphans.remove(node);
                    }
                }
            }
        }
    }

    /// Records a bound pod seen by the informer (confirming an assumption if there was one).
    pub fn upsert_pod(&mut self, info: Arc<PodInfo>) -> PodChange {
        let node = info.node_name().to_string();
        let uid = info.uid.clone();
        match self.pods.get(&uid).cloned() {
            Some(old) => {
                self.unplace(&old.node, &uid);
                self.place(&node, info.clone());
                self.pods.insert(
                    uid,
                    PodState {
                        info,
                        node,
                        assumed: false,
                    },
                );
                if old.assumed {
                    PodChange::Added
                } else {
                    PodChange::Updated(old.info)
                }
            }
            None => {
                self.place(&node, info.clone());
                self.pods.insert(
                    uid,
                    PodState {
                        info,
                        node,
                        assumed: false,
                    },
                );
                PodChange::Added
            }
        }
    }

    /// Removes a pod (bound or assumed); returns it when it was known.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let state = self.pods.remove(uid)?;
        self.unplace(&state.node, uid);
        Some(state.info)
    }

    /// Places `info` on `node` before the binding is confirmed.
    pub fn assume_pod(&mut self, info: Arc<PodInfo>, node: &str) {
        if self.pods.contains_key(&info.uid) {
            return;
        }
        self.place(node, info.clone());
        self.pods.insert(
            info.uid.clone(),
            PodState {
                info,
                node: node.to_string(),
                assumed: true,
            },
        );
    }

    /// Undoes an assumption (the binding failed); returns whether the pod was assumed.
    pub fn forget_pod(&mut self, uid: &str) -> bool {
        if self.is_assumed(uid) {
            self.remove_pod(uid);
            true
        } else {
            false
        }
    }

    /// Whether the pod is assumed (placed by us, not yet seen bound).
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|p| p.assumed)
    }

    /// Whether the cache knows the pod (bound or assumed).
    pub fn has_pod(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// The pods the informer confirmed (for relist cleanup).
    pub fn confirmed_pod_uids(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, p)| !p.assumed)
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// Number of pods known (bound or assumed).
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}

fn count_images(counts: &mut HashMap<String, usize>, images: &HashMap<String, i64>, delta: isize) {
    for name in images.keys() {
        let e = counts.entry(name.clone()).or_default();
        *e = e.saturating_add_signed(delta);
        if *e == 0 {
            counts.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, pod};

    #[test]
    fn assume_confirm_forget() {
        let mut c = Cache::new();
        c.upsert_node(Arc::new(node("n1").obj()));
        let p = Arc::new(pod("p").req(&[("cpu", "1")]).info());
        c.assume_pod(p.clone(), "n1");
        assert!(c.is_assumed("p"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        assert!(c.forget_pod("p"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 0);

        c.assume_pod(p, "n1");
        let bound = Arc::new(pod("p").req(&[("cpu", "1")]).node("n1").info());
        assert!(matches!(c.upsert_pod(bound), PodChange::Added));
        assert!(!c.is_assumed("p"));
        assert!(!c.forget_pod("p"));
        assert_eq!(c.node("n1").unwrap().pods.len(), 1);
        assert!(c.remove_pod("p").is_some());
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 0);
    }

    #[test]
    fn pods_before_their_node_and_node_removal() {
        let mut c = Cache::new();
        c.upsert_pod(Arc::new(pod("p").req(&[("cpu", "1")]).node("late").info()));
        c.upsert_node(Arc::new(node("late").image(&["img:1"], 10).obj()));
        c.upsert_node(Arc::new(node("other").image(&["img:1"], 10).obj()));
        assert_eq!(c.node("late").unwrap().requested.milli_cpu, 1000);
        assert_eq!(c.snapshot().image_nodes.get("img:1"), Some(&2));
        c.remove_node("late");
        assert_eq!(c.node_count(), 1);
        assert_eq!(c.snapshot().image_nodes.get("img:1"), Some(&1));
        assert_eq!(c.snapshot().node("other").unwrap().name, "other");
        c.upsert_node(Arc::new(node("late").obj()));
        assert_eq!(c.node("late").unwrap().pods.len(), 1);
        c.upsert_node(Arc::new(node("other").obj()));
        assert!(c.snapshot().image_nodes.is_empty());
    }
}
