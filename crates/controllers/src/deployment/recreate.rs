//! The Recreate strategy (upstream `recreate.go`): scale every old ReplicaSet to zero, wait
//! until their pods are gone (no replicas and no terminating replicas in their status),
//! then create or scale up the new ReplicaSet.

use k8s_openapi::api::apps::v1::ReplicaSet;

use super::Result;
use super::status::is_complete;
use super::sync::Dc;
use super::util::*;

/// Whether any old ReplicaSet may still have pods: replicas or terminating replicas in its
/// status, or a status that has not seen its latest spec.
pub fn old_pods_running(old: &[ReplicaSet]) -> bool {
    old.iter().any(|rs| {
        let st = rs.status.clone().unwrap_or_default();
        st.replicas > 0
            || st.terminating_replicas.unwrap_or(0) > 0
            || st.observed_generation < rs.metadata.generation
    })
}

impl Dc<'_> {
    /// Upstream `rolloutRecreate`.
    pub async fn rollout_recreate(&mut self, rss: Vec<ReplicaSet>) -> Result<()> {
        let mut sets = self.all_and_sync_revision(rss, false).await?;
        let mut scaled = false;
        for rs in sets.old.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
            scaled |= self.scale_and_record(rs, 0).await?;
        }
        if scaled || old_pods_running(&sets.old) {
            return self.sync_rollout_status(&sets).await;
        }
        if sets.new.is_none() {
            let rss: Vec<ReplicaSet> = sets.old.clone();
            sets = self.all_and_sync_revision(rss, true).await?;
        }
        let want = replicas(&self.d);
        if let Some(new) = sets.new.as_mut() {
            self.scale_and_record(new, want).await?;
        }
        let st = self.d.status.clone().unwrap_or_default();
        if is_complete(&self.d, &st) {
            self.cleanup(&sets.old).await?;
        }
        self.sync_rollout_status(&sets).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetStatus;

    #[test]
    fn old_pods_count_until_gone_and_observed() {
        let mut rs = ReplicaSet {
            status: Some(ReplicaSetStatus {
                replicas: 0,
                terminating_replicas: Some(1),
                observed_generation: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        };
        rs.metadata.generation = Some(2);
        assert!(old_pods_running(std::slice::from_ref(&rs)));
        rs.status.as_mut().unwrap().terminating_replicas = Some(0);
        assert!(!old_pods_running(std::slice::from_ref(&rs)));
        rs.metadata.generation = Some(3);
        assert!(old_pods_running(&[rs]));
    }
}
