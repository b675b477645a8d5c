//! One sync of a Deployment: claiming its ReplicaSets, finding or creating the new one and
//! its revision, scaling (proportionally during a rollout), history cleanup and status
//! writes (upstream `sync.go` and `syncDeployment`).

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rkube_component::EventRecord;
use rkube_component::events::object_ref;
use serde_json::json;

use super::status::{calculate_status, paused_condition, rollout_status};
use super::util::*;
use super::{Ctx, Error, Result};
use crate::controller_ref::{controller_of, controller_reference};
use crate::replicaset::claim::{adopt_patch, release_patch, selector_is_empty, selector_matches};

/// The new ReplicaSet (template equals the Deployment's) and the old ones.
#[derive(Debug, Default, Clone)]
pub struct Sets {
    /// The ReplicaSet of the current template, if it exists.
    pub new: Option<ReplicaSet>,
    /// Every other ReplicaSet of the Deployment.
    pub old: Vec<ReplicaSet>,
}

impl Sets {
    /// New and old together.
    pub fn all(&self) -> Vec<&ReplicaSet> {
        self.old.iter().chain(self.new.as_ref()).collect()
    }
}

/// Splits `rss` into the new ReplicaSet (the oldest one whose template equals the
/// Deployment's, ignoring the hash label) and the old ones (upstream `FindNewReplicaSet`).
pub fn split(d: &Deployment, mut rss: Vec<ReplicaSet>) -> Sets {
    sort_by_creation(&mut rss);
    let template = d
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let pos = rss.iter().position(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| equal_ignore_hash(t, &template))
    });
    let new = pos.map(|i| rss.remove(i));
    Sets { new, old: rss }
}

/// The sizes of the active ReplicaSets `rss` (sorted by [`sort_by_size`]) after scaling
/// the Deployment to `spec.replicas` mid-rollout: each gets its share of the change by its
/// size relative to the `max-replicas` it was last scaled for, and the largest gets what is
/// left (upstream `scale` with `getReplicaSetFraction`).
pub fn proportional_sizes(d: &Deployment, rss: &[&ReplicaSet]) -> Vec<i32> {
    let want = replicas(d);
    let allowed = if want > 0 { want + max_surge(d) } else { 0 };
    let current: i32 = rss.iter().map(|rs| rs_replicas(rs)).sum();
    let to_add = allowed - current;
    let mut added = 0;
    let mut sizes: Vec<i32> = rss
        .iter()
        .map(|rs| {
            let size = rs_replicas(rs);
            if to_add == 0 || size == 0 || to_add == added {
                return size;
            }
            let fraction = if want == 0 {
                -size
            } else {
                let before = int_annotation(rs, MAX_REPLICAS)
                    .filter(|v| *v > 0)
                    .or_else(|| {
                        d.status
                            .as_ref()
                            .and_then(|s| s.replicas)
                            .filter(|v| *v > 0)
                    });
                match before {
                    Some(before) => {
                        (f64::from(size) * f64::from(allowed) / f64::from(before)).round() as i32
                            - size
                    }
                    None => 0,
                }
            };
            let left = to_add - added;
            let proportion = if to_add > 0 {
                fraction.min(left)
            } else {
                fraction.max(left)
            };
            added += proportion;
            size + proportion
        })
        .collect();
    if let Some(first) = sizes.first_mut()
        && to_add != 0
    {
        *first = (*first + to_add - added).max(0);
    }
    sizes
}

fn status_differs(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    n(a.replicas) != n(b.replicas)
        || n(a.updated_replicas) != n(b.updated_replicas)
        || n(a.ready_replicas) != n(b.ready_replicas)
        || n(a.available_replicas) != n(b.available_replicas)
        || n(a.unavailable_replicas) != n(b.unavailable_replicas)
        || a.observed_generation != b.observed_generation
        || a.collision_count != b.collision_count
        || a.conditions.as_deref().unwrap_or_default()
            != b.conditions.as_deref().unwrap_or_default()
}

/// One sync of one Deployment; `d` is updated as its status is written.
pub struct Dc<'a> {
    ctx: &'a Ctx,
    /// The Deployment as last written.
    pub d: Deployment,
    ns: String,
    name: String,
}

impl<'a> Dc<'a> {
    /// A sync of `d`.
    pub fn new(ctx: &'a Ctx, d: Deployment) -> Self {
        Self {
            ns: d.namespace().unwrap_or_default(),
            name: d.name_any(),
            ctx,
            d,
        }
    }

    fn full_name(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    fn rs_api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.ctx.base.client.clone(), &self.ns)
    }

    fn d_api(&self) -> Api<Deployment> {
        Api::namespaced(self.ctx.base.client.clone(), &self.ns)
    }

    fn event(&self, reason: &'static str, message: String) {
        self.ctx
            .base
            .recorder
            .record(EventRecord::normal(object_ref(&self.d), reason, message));
    }

    fn warning(&self, reason: &'static str, message: String) {
        self.ctx
            .base
            .recorder
            .record(EventRecord::warning(object_ref(&self.d), reason, message));
    }

    fn api_err(&self, op: &'static str, name: &str) -> impl FnOnce(kube::Error) -> Error + use<> {
        let name = format!("{}/{name}", self.ns);
        move |source| Error::Api { op, name, source }
    }

    /// Upstream `syncDeployment`.
    pub async fn sync_deployment(&mut self) -> Result<()> {
        let spec = self.d.spec.clone().unwrap_or_default();
        if selector_is_empty(&spec.selector) {
            self.warning(
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            let mut st = self.d.status.clone().unwrap_or_default();
            if st.observed_generation < self.d.metadata.generation {
                st.observed_generation = self.d.metadata.generation;
                self.update_status(st).await?;
            }
            return Ok(());
        }
        let rss = self.claim_replica_sets().await?;
        if self.d.metadata.deletion_timestamp.is_some() {
            let sets = split(&self.d, rss);
            return self.sync_status(&sets).await;
        }
        let mut st = self.d.status.clone().unwrap_or_default();
        if paused_condition(&self.d, &mut st, Timestamp::now()) {
            self.update_status(st).await?;
        }
        if is_paused(&self.d) || self.is_scaling_event(&rss) {
            return self.sync(rss).await;
        }
        if is_rolling(&self.d) {
            self.rollout_rolling(rss).await
        } else {
            self.rollout_recreate(rss).await
        }
    }

    /// The ReplicaSets this Deployment controls, after adopting matching orphans and
    /// releasing the ones its selector no longer matches.
    async fn claim_replica_sets(&self) -> Result<Vec<ReplicaSet>> {
        let uid = self.d.metadata.uid.clone().unwrap_or_default();
        let selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        let index = &self.ctx.replica_sets;
        let mut out = Vec::new();
        for rs in index.owned_by(&uid) {
            let rs = self.ctx.freshest(rs);
            if rs.metadata.namespace.as_deref() != Some(self.ns.as_str()) {
                continue;
            }
            if selector_matches(&selector, rs.metadata.labels.as_ref())
                || self.d.metadata.deletion_timestamp.is_some()
            {
                out.push((*rs).clone());
            } else if rs.metadata.deletion_timestamp.is_none() {
                let patch =
                    serde_json::from_value(release_patch(&rs.metadata, &uid)).unwrap_or_default();
                if let Err(err) = self
                    .rs_api()
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::<()>::Json(patch),
                    )
                    .await
                {
                    tracing::warn!(rs = %rs.name_any(), ?err, "cannot release replica set");
                }
            }
        }
        if self.d.metadata.deletion_timestamp.is_some() {
            return Ok(out);
        }
        let orphans: Vec<_> = index
            .orphans_in(&self.ns)
            .into_iter()
            .filter(|rs| {
                rs.metadata.deletion_timestamp.is_none()
                    && selector_matches(&selector, rs.metadata.labels.as_ref())
            })
            .collect();
        if orphans.is_empty() {
            return Ok(out);
        }
        let fresh = self
            .d_api()
            .get(&self.name)
            .await
            .map_err(self.api_err("get deployment", &self.name))?;
        if fresh.metadata.uid.as_deref() != Some(uid.as_str())
            || fresh.metadata.deletion_timestamp.is_some()
        {
            return Ok(out);
        }
        let owner = controller_reference(&self.d);
        for rs in orphans {
            let patch = serde_json::from_value(adopt_patch(&rs.metadata, owner.clone()))
                .unwrap_or_default();
            match self
                .rs_api()
                .patch(
                    &rs.name_any(),
                    &PatchParams::default(),
                    &Patch::<()>::Json(patch),
                )
                .await
            {
                Ok(adopted) => out.push(adopted),
                Err(err) => tracing::warn!(rs = %rs.name_any(), ?err, "cannot adopt replica set"),
            }
        }
        Ok(out)
    }

    /// Writes `status` when it differs from what the Deployment shows.
    pub async fn update_status(&mut self, status: DeploymentStatus) -> Result<()> {
        let current = self.d.status.clone().unwrap_or_default();
        if !status_differs(&current, &status) {
            return Ok(());
        }
        let updated = self
            .d_api()
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .map_err(self.api_err("update status of deployment", &self.name))?;
        self.d.status = updated.status.or(Some(status));
        Ok(())
    }

    async fn set_deployment_revision(&mut self, revision: &str) -> Result<()> {
        let current = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned()
            .unwrap_or_default();
        let cur_n: i64 = current.parse().unwrap_or(0);
        let new_n: i64 = revision.parse().unwrap_or(0);
        if current == revision || cur_n > new_n {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        let updated = self
            .d_api()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(self.api_err("annotate deployment", &self.name))?;
        self.d.metadata.annotations = updated.metadata.annotations;
        Ok(())
    }

    /// Splits the ReplicaSets, brings the new one's annotations and revision up to date
    /// and, with `create`, creates it when missing (upstream
    /// `getAllReplicaSetsAndSyncRevision`).
    pub async fn all_and_sync_revision(
        &mut self,
        rss: Vec<ReplicaSet>,
        create: bool,
    ) -> Result<Sets> {
        let mut sets = split(&self.d, rss);
        let new_revision = sets.old.iter().map(rs_revision).max().unwrap_or(0) + 1;
        let now = Timestamp::now();
        if let Some(existing) = sets.new.clone() {
            let mut copy = existing.clone();
            let annotated = set_new_rs_annotations(&self.d, &mut copy, new_revision, true);
            let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let spec = copy.spec.get_or_insert_default();
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0);
            if annotated || min_ready_changed {
                let patch = json!({
                    "metadata": {"annotations": copy.metadata.annotations},
                    "spec": {"minReadySeconds": min_ready},
                });
                let name = copy.name_any();
                let updated = self
                    .rs_api()
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map_err(self.api_err("update replica set", &name))?;
                self.ctx.wrote(&updated);
                sets.new = Some(updated);
                return Ok(sets);
            }
            let revision = existing
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .cloned()
                .unwrap_or_default();
            self.set_deployment_revision(&revision).await?;
            let mut st = self.d.status.clone().unwrap_or_default();
            if progress_deadline(&self.d).is_some() && condition(&st, "Progressing").is_none() {
                set_condition(
                    &mut st,
                    new_condition(
                        "Progressing",
                        "True",
                        reason::FOUND_NEW_RS,
                        format!("Found new replica set {:?}", existing.name_any()),
                        now,
                    ),
                );
                self.update_status(st).await?;
            }
            return Ok(sets);
        }
        if !create {
            return Ok(sets);
        }
        let new = self.create_new_rs(&sets, new_revision).await?;
        sets.new = Some(new);
        Ok(sets)
    }

    async fn create_new_rs(&mut self, sets: &Sets, new_revision: i64) -> Result<ReplicaSet> {
        let spec = self.d.spec.clone().unwrap_or_default();
        let collision_count = self.d.status.as_ref().and_then(|s| s.collision_count);
        let mut template = spec.template.clone();
        let hash = compute_hash(&template, collision_count);
        template
            .metadata
            .get_or_insert_default()
            .labels
            .get_or_insert_default()
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_default()
            .insert(HASH_LABEL.into(), hash.clone());
        let rs_name = format!("{}-{hash}", self.name);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(rs_name.clone()),
                namespace: Some(self.ns.clone()),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                owner_references: Some(vec![controller_reference(&self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let mut all = sets.all();
        all.push(&rs);
        let count = super::rolling::new_rs_new_replicas(&self.d, &all, &rs).map_err(|message| {
            Error::InvalidSpec {
                name: self.full_name(),
                message,
            }
        })?;
        rs.spec.get_or_insert_default().replicas = Some(count);
        set_new_rs_annotations(&self.d, &mut rs, new_revision, false);

        let now = Timestamp::now();
        let (created, already_existed) =
            match self.rs_api().create(&PostParams::default(), &rs).await {
                Ok(created) => (created, false),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let existing = self
                        .rs_api()
                        .get(&rs_name)
                        .await
                        .map_err(self.api_err("get replica set", &rs_name))?;
                    let uid = self.d.metadata.uid.as_deref().unwrap_or_default();
                    let same = existing
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .is_some_and(|t| equal_ignore_hash(t, &spec.template));
                    if controller_of(&existing.metadata).is_some_and(|r| r.uid == uid) && same {
                        (existing, true)
                    } else {
                        let mut st = self.d.status.clone().unwrap_or_default();
                        st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
                        self.update_status(st).await?;
                        return Err(Error::HashCollision {
                            name: self.full_name(),
                            rs: rs_name,
                        });
                    }
                }
                Err(err) => {
                    let msg = format!(
                        "Failed to create new replica set {rs_name:?}: {}",
                        crate::replicaset::api_message(&err)
                    );
                    let mut st = self.d.status.clone().unwrap_or_default();
                    if progress_deadline(&self.d).is_some() {
                        set_condition(
                            &mut st,
                            new_condition(
                                "Progressing",
                                "False",
                                reason::RS_CREATE_ERROR,
                                msg.clone(),
                                now,
                            ),
                        );
                        self.update_status(st).await?;
                    }
                    self.warning("FailedCreate", msg);
                    return Err(self.api_err("create replica set", &rs_name)(err));
                }
            };
        if !already_existed && count > 0 {
            self.event(
                "ScalingReplicaSet",
                format!("Scaled up replica set {rs_name} from 0 to {count}"),
            );
        }
        self.set_deployment_revision(&new_revision.to_string())
            .await?;
        if !already_existed && progress_deadline(&self.d).is_some() {
            let mut st = self.d.status.clone().unwrap_or_default();
            set_condition(
                &mut st,
                new_condition(
                    "Progressing",
                    "True",
                    reason::NEW_RS_CREATED,
                    format!("Created new replica set {rs_name:?}"),
                    now,
                ),
            );
            self.update_status(st).await?;
        }
        Ok(created)
    }

    /// Scales `rs` to `size` and refreshes its replica annotations; records the event.
    /// Returns whether the size changed (upstream `scaleReplicaSet`).
    pub async fn scale_rs(&self, rs: &mut ReplicaSet, size: i32) -> Result<bool> {
        let old = rs_replicas(rs);
        let mut copy = rs.clone();
        let annotated = set_replicas_annotations(
            &mut copy,
            replicas(&self.d),
            replicas(&self.d) + max_surge(&self.d),
        );
        if old == size && !annotated {
            return Ok(false);
        }
        let name = rs.name_any();
        // Guarded by the replicas this decision was based on (not by resourceVersion: the
        // ReplicaSet controller's status writes would make every scale conflict).
        let mut ops = vec![
            json!({"op": "test", "path": "/spec/replicas", "value": old}),
            json!({"op": "replace", "path": "/spec/replicas", "value": size}),
        ];
        if rs.metadata.annotations.is_none() {
            ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
        }
        for key in [DESIRED_REPLICAS, MAX_REPLICAS] {
            let value = copy.metadata.annotations.as_ref().and_then(|a| a.get(key));
            let path = format!(
                "/metadata/annotations/{}",
                key.replace('~', "~0").replace('/', "~1")
            );
            ops.push(json!({"op": "add", "path": path, "value": value}));
        }
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::Value::Array(ops)).unwrap_or_default();
        *rs = self
            .rs_api()
            .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .map_err(self.api_err("scale replica set", &name))?;
        self.ctx.wrote(rs);
        if old != size {
            let dir = if size > old { "up" } else { "down" };
            self.event(
                "ScalingReplicaSet",
                format!("Scaled {dir} replica set {name} from {old} to {size}"),
            );
        }
        Ok(old != size)
    }

    /// Scales `rs` to `size` unless it already has that size (upstream
    /// `scaleReplicaSetAndRecordEvent`).
    pub async fn scale_and_record(&self, rs: &mut ReplicaSet, size: i32) -> Result<bool> {
        if rs_replicas(rs) == size {
            return Ok(false);
        }
        self.scale_rs(rs, size).await
    }

    /// Whether the Deployment was scaled since its active ReplicaSets were (their
    /// `desired-replicas` differs from `spec.replicas`).
    fn is_scaling_event(&self, rss: &[ReplicaSet]) -> bool {
        let want = replicas(&self.d);
        rss.iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .filter_map(|rs| int_annotation(rs, DESIRED_REPLICAS))
            .any(|desired| desired != want)
    }

    /// Scaling without a rollout (paused, or a scaling event): upstream `sync`.
    async fn sync(&mut self, rss: Vec<ReplicaSet>) -> Result<()> {
        let mut sets = self.all_and_sync_revision(rss, false).await?;
        self.scale(&mut sets).await?;
        if is_paused(&self.d) {
            self.cleanup(&sets.old).await?;
        }
        self.sync_status(&sets).await
    }

    /// Upstream `scale`: the only active ReplicaSet follows `spec.replicas`; a saturated new
    /// one empties the old ones; otherwise every active one scales proportionally.
    pub async fn scale(&self, sets: &mut Sets) -> Result<()> {
        let want = replicas(&self.d);
        let active_count = sets.all().iter().filter(|rs| rs_replicas(rs) > 0).count();
        // FindActiveOrLatest: one active ReplicaSet, or none (then the newest).
        if active_count <= 1 {
            let target = if active_count == 1 {
                sets.old
                    .iter_mut()
                    .chain(sets.new.as_mut())
                    .find(|rs| rs_replicas(rs) > 0)
            } else if sets.new.is_some() {
                sets.new.as_mut()
            } else {
                sort_by_creation(&mut sets.old);
                sets.old.last_mut()
            };
            if let Some(rs) = target
                && rs_replicas(rs) != want
            {
                self.scale_and_record(rs, want).await?;
            }
            return Ok(());
        }
        let saturated = sets.new.as_ref().is_some_and(|rs| {
            rs_replicas(rs) == want
                && int_annotation(rs, DESIRED_REPLICAS) == Some(want)
                && rs_available(rs) == want
        });
        if saturated {
            for rs in sets.old.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
                self.scale_and_record(rs, 0).await?;
            }
            return Ok(());
        }
        if !is_rolling(&self.d) {
            return Ok(());
        }
        let allowed = if want > 0 {
            want + max_surge(&self.d)
        } else {
            0
        };
        let current: i32 = sets.all().iter().map(|rs| rs_replicas(rs)).sum();
        let mut active: Vec<ReplicaSet> = sets
            .all()
            .into_iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .cloned()
            .collect();
        sort_by_size(&mut active, allowed > current);
        let refs: Vec<&ReplicaSet> = active.iter().collect();
        let sizes = proportional_sizes(&self.d, &refs);
        for (rs, size) in active.iter().zip(sizes) {
            let name = rs.name_any();
            let slot = sets
                .old
                .iter_mut()
                .chain(sets.new.as_mut())
                .find(|r| r.name_any() == name);
            if let Some(slot) = slot {
                self.scale_rs(slot, size).await?;
            }
        }
        Ok(())
    }

    /// Deletes the oldest ReplicaSets beyond `revisionHistoryLimit` that have no pods
    /// (upstream `cleanupDeployment`).
    pub async fn cleanup(&self, old: &[ReplicaSet]) -> Result<()> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut alive: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = alive.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        alive.sort_by_key(|rs| {
            (
                rs_revision(rs),
                rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        });
        for rs in alive.into_iter().take(diff as usize) {
            let observed = rs.status.as_ref().and_then(|s| s.observed_generation);
            if rs_actual(rs) != 0 || rs_replicas(rs) != 0 || rs.metadata.generation > observed {
                continue;
            }
            tracing::info!(rs = %rs.name_any(), "deleting old replica set");
            match self
                .rs_api()
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(err) => return Err(self.api_err("delete replica set", &rs.name_any())(err)),
            }
        }
        Ok(())
    }

    /// Writes the status the ReplicaSets add up to (upstream `syncDeploymentStatus`).
    pub async fn sync_status(&mut self, sets: &Sets) -> Result<()> {
        let st = calculate_status(&sets.all(), sets.new.as_ref(), &self.d, Timestamp::now());
        self.update_status(st).await
    }

    /// Writes the rollout's status with its conditions (upstream `syncRolloutStatus`).
    pub async fn sync_rollout_status(&mut self, sets: &Sets) -> Result<()> {
        let st = rollout_status(&sets.all(), sets.new.as_ref(), &self.d, Timestamp::now());
        self.update_status(st).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use std::collections::BTreeMap;

    fn rs(name: &str, replicas: i32, max_replicas: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(BTreeMap::from([(
                    MAX_REPLICAS.to_string(),
                    max_replicas.to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn deployment(replicas: i32) -> Deployment {
        let mut d = Deployment::default();
        let spec = d.spec.get_or_insert_default();
        spec.replicas = Some(replicas);
        let ru = spec
            .strategy
            .get_or_insert_default()
            .rolling_update
            .get_or_insert_default();
        ru.max_surge = Some(IntOrString::Int(3));
        ru.max_unavailable = Some(IntOrString::Int(2));
        d
    }

    #[test]
    fn scaling_mid_rollout_is_proportional_with_leftover_to_the_largest() {
        // Upstream's example: 10 replicas, maxSurge 3, rollout at new 5 / old 8 (13),
        // scaled to 15: 18 allowed, +5 split 8:5 of 13.
        let (old, new) = (rs("old", 8, 13), rs("new", 5, 13));
        let sizes = proportional_sizes(&deployment(15), &[&old, &new]);
        assert_eq!(sizes, [11, 7]);
        assert_eq!(sizes.iter().sum::<i32>(), 18);
        // Scaling down to 5: 8 allowed.
        let sizes = proportional_sizes(&deployment(5), &[&old, &new]);
        assert_eq!(sizes.iter().sum::<i32>(), 8);
        assert_eq!(sizes, [5, 3]);
        // To zero: everything goes.
        assert_eq!(proportional_sizes(&deployment(0), &[&old, &new]), [0, 0]);
    }

    #[test]
    fn the_new_replica_set_is_the_oldest_with_the_template() {
        let mut d = deployment(1);
        let template = k8s_openapi::api::core::v1::PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("v".to_string(), "2".to_string())])),
                ..Default::default()
            }),
            spec: None,
        };
        d.spec.as_mut().unwrap().template = template.clone();
        let mut a = rs("a", 1, 1);
        let mut b = rs("b", 1, 1);
        b.spec.as_mut().unwrap().template = Some(template.clone());
        let mut with_hash = template;
        with_hash
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), "x".into());
        a.spec.as_mut().unwrap().template = None;
        let mut c = rs("c", 1, 1);
        c.spec.as_mut().unwrap().template = Some(with_hash);
        let sets = split(&d, vec![c, a, b]);
        // No creation timestamps: ties go by name.
        assert_eq!(sets.new.unwrap().name_any(), "b");
        assert_eq!(sets.old.len(), 2);
    }
}
