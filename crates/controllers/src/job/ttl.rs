//! The TTL-after-finished controller (upstream's `pkg/controller/ttlafterfinished`): a
//! finished Job with `spec.ttlSecondsAfterFinished` is deleted (background propagation, so
//! the garbage collector removes its pods) that many seconds after it finished.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use tracing::Instrument;

use crate::context::{Context, Stop, stopped};

/// Why a TTL check failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Re-reading the Job before deleting it failed.
    #[error("cannot read job {job}")]
    Get {
        /// `namespace/name`.
        job: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting the Job failed.
    #[error("cannot delete job {job}")]
    Delete {
        /// `namespace/name`.
        job: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// When the Job finished: the `Complete` or `Failed` condition's transition time.
pub fn finish_time(job: &Job) -> Option<Timestamp> {
    super::status::finished_condition(job)?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// Time left before the Job may be deleted: `None` when it has no TTL, is not finished or
/// is being deleted already; zero once it is due.
pub fn time_left(job: &Job, now: Timestamp) -> Option<Duration> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = finish_time(job)?;
    let left = SignedDuration::from_secs(i64::from(ttl)) - now.duration_since(finished);
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// Runs the controller until `stop` turns true.
pub async fn run(ctx: Arc<Context>, stop: Stop) {
    Controller::new(
        Api::<Job>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
    .graceful_shutdown_on(stopped(stop))
    .run(reconcile, error_policy, ctx)
    .for_each(|_| futures::future::ready(()))
    .await;
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any());
    let span = tracing::info_span!("reconcile", object.ref = %key);
    async move {
        match time_left(&job, Timestamp::now()) {
            None => Ok(Action::await_change()),
            Some(left) if !left.is_zero() => Ok(Action::requeue(left)),
            Some(_) => expire(&job, &ctx, &key).await,
        }
    }
    .instrument(span)
    .await
}

/// Deletes the Job after checking the API's (uncached) copy is still due, as upstream
/// does before it deletes.
async fn expire(job: &Job, ctx: &Context, key: &str) -> Result<Action, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let fresh = match api.get_opt(&job.name_any()).await {
        Ok(Some(j)) => j,
        Ok(None) => return Ok(Action::await_change()),
        Err(source) => {
            return Err(Error::Get {
                job: key.into(),
                source,
            });
        }
    };
    match time_left(&fresh, Timestamp::now()) {
        None => return Ok(Action::await_change()),
        Some(left) if !left.is_zero() => return Ok(Action::requeue(left)),
        Some(_) => {}
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: fresh.metadata.uid.clone(),
            resource_version: fresh.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    match api.delete(&fresh.name_any(), &params).await {
        Ok(_) => {
            tracing::info!(job = %key, "deleted finished job after its TTL");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(Action::requeue(Duration::from_secs(1))),
        Err(source) => Err(Error::Delete {
            job: key.into(),
            source,
        }),
    }
}

fn error_policy(job: Arc<Job>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(job = %job.name_any(), error = %err, "ttl-after-finished failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn job(ttl: Option<i32>, finished_at: Option<i64>) -> Job {
        Job {
            spec: Some(JobSpec {
                ttl_seconds_after_finished: ttl,
                ..Default::default()
            }),
            status: Some(JobStatus {
                conditions: finished_at.map(|s| {
                    vec![JobCondition {
                        type_: "Complete".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(s).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ttl_counts_from_the_finish() {
        let at = |s| Timestamp::from_second(s).unwrap();
        assert_eq!(
            time_left(&job(Some(10), Some(100)), at(104)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            time_left(&job(Some(10), Some(100)), at(200)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            time_left(&job(Some(0), Some(100)), at(100)),
            Some(Duration::ZERO)
        );
        // Not finished, or no TTL: never.
        assert_eq!(time_left(&job(Some(10), None), at(200)), None);
        assert_eq!(time_left(&job(None, Some(100)), at(200)), None);
    }
}
