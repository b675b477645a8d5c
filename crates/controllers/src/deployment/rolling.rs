//! The RollingUpdate strategy (upstream `rolling.go`): scale the new ReplicaSet up within
//! `replicas + maxSurge`, scale old ones down while at least `replicas - maxUnavailable`
//! pods stay available, first the old replicas that are not available anyway.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::Result;
use super::status::is_complete;
use super::sync::{Dc, Sets};
use super::util::*;

/// Live replicas of a ReplicaSet for the surge budget: its spec, or more while a scale-down
/// has not removed the pods yet (see the module docs of `deployment`).
fn live(rs: &ReplicaSet) -> i32 {
    rs_replicas(rs).max(rs_actual(rs))
}

/// Available replicas that will remain after the ReplicaSet reaches its spec.
fn remaining_available(rs: &ReplicaSet) -> i32 {
    rs_available(rs).min(rs_replicas(rs))
}

/// The size of the new ReplicaSet for this step (upstream `NewRSNewReplicas`): as far as the
/// surge allows toward `spec.replicas` (RollingUpdate), or `spec.replicas` (Recreate).
pub fn new_rs_new_replicas(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: &ReplicaSet,
) -> Result<i32, String> {
    let want = replicas(d);
    if !is_rolling(d) {
        return Ok(want);
    }
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let (surge, _) = resolve_fenceposts(
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
        want,
    )?;
    let current: i32 = all.iter().map(|rs| live(rs)).sum();
    let max_total = want + surge;
    if current >= max_total {
        return Ok(rs_replicas(new));
    }
    let up = (max_total - current).min(want - rs_replicas(new)).max(0);
    Ok(rs_replicas(new) + up)
}

/// How many old replicas may go now (upstream `reconcileOldReplicaSets` arithmetic): all
/// replicas, minus the minimum available, minus the new ReplicaSet's unavailable ones.
pub fn max_scaled_down(d: &Deployment, sets: &Sets) -> i32 {
    let all: i32 = sets.all().iter().map(|rs| rs_replicas(rs)).sum();
    let min_available = replicas(d) - max_unavailable(d);
    let new_unavailable = sets
        .new
        .as_ref()
        .map_or(0, |rs| rs_replicas(rs) - rs_available(rs));
    all - min_available - new_unavailable
}

/// Old replicas that may be scaled away because more than the minimum is available
/// (upstream `scaleDownOldReplicaSetsForRollingUpdate`).
pub fn available_surplus(d: &Deployment, sets: &Sets) -> i32 {
    let min_available = replicas(d) - max_unavailable(d);
    let available: i32 = sets.all().iter().map(|rs| remaining_available(rs)).sum();
    (available - min_available).max(0)
}

impl Dc<'_> {
    /// Upstream `rolloutRolling`.
    pub async fn rollout_rolling(&mut self, rss: Vec<ReplicaSet>) -> Result<()> {
        let mut sets = self.all_and_sync_revision(rss, true).await?;
        if self.reconcile_new(&mut sets).await? {
            return self.sync_rollout_status(&sets).await;
        }
        if self.reconcile_old(&mut sets).await? {
            return self.sync_rollout_status(&sets).await;
        }
        let st = self.d.status.clone().unwrap_or_default();
        if is_complete(&self.d, &st) {
            self.cleanup(&sets.old).await?;
        }
        self.sync_rollout_status(&sets).await
    }

    async fn reconcile_new(&self, sets: &mut Sets) -> Result<bool> {
        let want = replicas(&self.d);
        let all: Vec<ReplicaSet> = sets.all().into_iter().cloned().collect();
        let Some(new) = sets.new.as_mut() else {
            return Ok(false);
        };
        let size = rs_replicas(new);
        if size == want {
            return Ok(false);
        }
        if size > want {
            return self.scale_and_record(new, want).await;
        }
        let refs: Vec<&ReplicaSet> = all.iter().collect();
        let target = new_rs_new_replicas(&self.d, &refs, new).map_err(|message| {
            super::Error::InvalidSpec {
                name: format!(
                    "{}/{}",
                    self.d.metadata.namespace.as_deref().unwrap_or_default(),
                    self.d.metadata.name.as_deref().unwrap_or_default()
                ),
                message,
            }
        })?;
        self.scale_and_record(new, target).await
    }

    async fn reconcile_old(&self, sets: &mut Sets) -> Result<bool> {
        let old_count: i32 = sets.old.iter().map(rs_replicas).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let max_down = max_scaled_down(&self.d, sets);
        if max_down <= 0 {
            return Ok(false);
        }
        sort_by_creation(&mut sets.old);
        // First the old replicas that are unavailable anyway.
        let mut cleaned = 0;
        for rs in sets.old.iter_mut() {
            if cleaned >= max_down {
                break;
            }
            let size = rs_replicas(rs);
            let unhealthy = size - rs_available(rs);
            if size == 0 || unhealthy <= 0 {
                continue;
            }
            let down = (max_down - cleaned).min(unhealthy);
            self.scale_and_record(rs, size - down).await?;
            cleaned += down;
        }
        // Then as many as the availability budget allows.
        let surplus = available_surplus(&self.d, sets);
        let mut scaled = 0;
        for rs in sets.old.iter_mut() {
            if scaled >= surplus {
                break;
            }
            let size = rs_replicas(rs);
            if size == 0 {
                continue;
            }
            let down = size.min(surplus - scaled);
            self.scale_and_record(rs, size - down).await?;
            scaled += down;
        }
        Ok(cleaned + scaled > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus,
        RollingUpdateDeployment,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn rs(spec: i32, actual: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            spec: Some(ReplicaSetSpec {
                replicas: Some(spec),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: actual,
                available_replicas: Some(available),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn d(replicas: i32, surge: i32, unavailable: i32, strategy: &str) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some(strategy.into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(surge)),
                        max_unavailable: Some(IntOrString::Int(unavailable)),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_new_replica_set_grows_within_the_surge() {
        let dep = d(4, 1, 1, "RollingUpdate");
        let (old, new) = (rs(4, 4, 4), rs(0, 0, 0));
        assert_eq!(new_rs_new_replicas(&dep, &[&old, &new], &new), Ok(1));
        // The old set was scaled to 3 but its pod is still there: no room yet.
        let (old, new) = (rs(3, 4, 4), rs(1, 1, 1));
        assert_eq!(new_rs_new_replicas(&dep, &[&old, &new], &new), Ok(1));
        let (old, new) = (rs(3, 3, 3), rs(1, 1, 1));
        assert_eq!(new_rs_new_replicas(&dep, &[&old, &new], &new), Ok(2));
        // Never beyond spec.replicas.
        let (old, new) = (rs(0, 0, 0), rs(3, 3, 3));
        assert_eq!(new_rs_new_replicas(&dep, &[&old, &new], &new), Ok(4));
        // Recreate: all at once.
        assert_eq!(
            new_rs_new_replicas(&d(4, 1, 1, "Recreate"), &[&old], &new),
            Ok(4)
        );
        let mut bad = d(4, 1, 1, "RollingUpdate");
        bad.spec
            .as_mut()
            .unwrap()
            .strategy
            .as_mut()
            .unwrap()
            .rolling_update
            .as_mut()
            .unwrap()
            .max_surge = Some(IntOrString::String("many".into()));
        assert!(new_rs_new_replicas(&bad, &[&old], &new).is_err());
    }

    #[test]
    fn old_replica_sets_shrink_only_while_enough_stay_available() {
        let dep = d(4, 1, 1, "RollingUpdate");
        // New set surged by one, not yet available: 5 total, 3 must stay... 5-3-1 = 1.
        let sets = Sets {
            new: Some(rs(1, 1, 0)),
            old: vec![rs(4, 4, 4)],
        };
        assert_eq!(max_scaled_down(&dep, &sets), 1);
        assert_eq!(available_surplus(&dep, &sets), 1);
        // The old set was already scaled to 3 (pods not gone yet): its 4 available count
        // as 3, so nothing more may go until the new pod is available.
        let sets = Sets {
            new: Some(rs(2, 1, 0)),
            old: vec![rs(3, 4, 4)],
        };
        assert_eq!(available_surplus(&dep, &sets), 0);
        let sets = Sets {
            new: Some(rs(2, 2, 2)),
            old: vec![rs(3, 3, 3)],
        };
        assert_eq!(available_surplus(&dep, &sets), 2);
    }
}
