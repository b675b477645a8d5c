//! Node leases in `kube-node-lease`, the heartbeat the node lifecycle controller reads. As
//! upstream's kubelet: named after the node, owned by the Node, holderIdentity the node name,
//! leaseDurationSeconds 40, renewed every 10 s.
//!
//! Renewals are spread evenly instead of bursting: the nodes are split by index into
//! [`SLOTS`] groups and one group is renewed every `RENEW_INTERVAL / SLOTS`, with at most
//! [`CONCURRENCY`] requests in flight; each renewal is one small merge patch of
//! `spec.renewTime`.

use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::nodes::{Cluster, SimNode};

/// Where node leases live.
pub(crate) const NAMESPACE: &str = "kube-node-lease";
/// `spec.leaseDurationSeconds` (upstream's kubelet default).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// How often each lease is renewed (a quarter of the duration, as upstream).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// Groups the renewals are spread over.
const SLOTS: u32 = 10;
/// Renewals in flight at once.
const CONCURRENCY: usize = 32;

/// Node `node`'s lease as its kubelet creates it.
pub(crate) fn lease_object(node: &str, node_uid: &str, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            namespace: Some(NAMESPACE.to_string()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.to_string(),
                uid: node_uid.to_string(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// Creates the lease, or takes over an existing one (holder, duration, owner, renewTime).
pub(crate) async fn ensure(
    leases: &Api<Lease>,
    node: &str,
    node_uid: &str,
) -> Result<(), kube::Error> {
    let lease = lease_object(node, node_uid, crate::now());
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let patch = json!({
                "metadata": {"ownerReferences": lease.metadata.owner_references},
                "spec": lease.spec,
            });
            leases
                .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
        }
        Err(err) => Err(err),
    }
}

/// Renews one lease; recreates it when someone deleted it.
async fn renew_one(leases: &Api<Lease>, node: &SimNode) -> Result<(), kube::Error> {
    let now = crate::now();
    let patch = json!({"spec": {"holderIdentity": node.name, "renewTime": MicroTime(now)}});
    match leases
        .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => leases
            .create(
                &PostParams::default(),
                &lease_object(&node.name, &node.uid, now),
            )
            .await
            .map(drop),
        Err(err) => Err(err),
    }
}

/// Renews every node's lease each [`RENEW_INTERVAL`] until `stop` turns true.
pub(crate) async fn renew(client: Client, cluster: Arc<Cluster>, mut stop: watch::Receiver<bool>) {
    let leases: Api<Lease> = Api::namespaced(client, NAMESPACE);
    let mut tick = tokio::time::interval(RENEW_INTERVAL / SLOTS);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut slot = 0;
    let mut round_started = Instant::now();
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            _ = tick.tick() => {}
        }
        if slot == 0 {
            let round = round_started.elapsed();
            if round > RENEW_INTERVAL * 3 / 2 {
                tracing::warn!(
                    "renewing every lease took {:.1}s, more than {}s: the API server is too slow for {} nodes",
                    round.as_secs_f64(),
                    RENEW_INTERVAL.as_secs(),
                    cluster.nodes().len()
                );
            }
            round_started = Instant::now();
        }
        let group: Vec<Arc<SimNode>> = cluster
            .nodes()
            .iter()
            .filter(|n| n.index % SLOTS == slot)
            .cloned()
            .collect();
        let failures = stream::iter(group)
            .map(|node| {
                let leases = leases.clone();
                async move { renew_one(&leases, &node).await.err().map(|e| (node, e)) }
            })
            .buffer_unordered(CONCURRENCY)
            .filter_map(ready)
            .collect::<Vec<_>>();
        let failures = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            failures = failures => failures,
        };
        if let Some((node, err)) = failures.first() {
            tracing::warn!(
                failed = failures.len(),
                node = %node.name,
                error = %crate::chain(err),
                "lease renewals failed; retrying in {}s",
                RENEW_INTERVAL.as_secs()
            );
        }
        slot = (slot + 1) % SLOTS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_has_kubelet_shape() {
        let now: Timestamp = "2025-06-01T10:00:00.123456Z".parse().unwrap();
        let v = serde_json::to_value(lease_object("sim-0", "uid-0", now)).unwrap();
        assert_eq!(v["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(
            v["metadata"]["ownerReferences"],
            json!([{"apiVersion": "v1", "kind": "Node", "name": "sim-0", "uid": "uid-0"}])
        );
        assert_eq!(
            v["spec"],
            json!({"holderIdentity": "sim-0", "leaseDurationSeconds": 40,
                   "renewTime": "2025-06-01T10:00:00.123456Z"})
        );
    }
}
