//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics and
//! upstream's defaults (lease 15 s, renew deadline 10 s, retry every 2 s; the scheduler uses
//! `kube-system/kube-scheduler`, the controller manager `kube-system/kube-controller-manager`): only the holder schedules; a candidate takes over once the holder has
//! not renewed for a lease duration *as observed locally* (clock skew does not matter).
//! The holder releases the lease on shutdown so a successor does not wait.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use crate::{Error, Result};

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    /// Namespace of the lease.
    pub namespace: String,
    /// Name of the lease.
    pub name: String,
    /// This candidate's identity (`hostname_uuid`).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before giving up leadership.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// Upstream's defaults for the lease `kube-system/{name}` and `identity`.
    pub fn kube_system(name: &str, identity: String) -> Self {
        Self {
            namespace: "kube-system".into(),
            name: name.into(),
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate's view of the lease.
struct Elector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    /// The last lease spec seen and when (locally) it was first seen.
    observed: Option<(LeaseSpec, Instant)>,
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    fn lease_error(&self, source: kube::Error) -> Error {
        Error::Lease {
            lease: format!("{}/{}", self.config.namespace, self.config.name),
            source,
        }
    }

    fn spec(&self, acquire: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs() as i32),
            acquire_time: Some(acquire),
            renew_time: Some(now_micro()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Acquires or renews the lease; `Ok(true)` when this candidate holds it now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let current = match self.api.get_opt(&self.config.name).await {
            Ok(l) => l,
            Err(e) => return Err(self.lease_error(e)),
        };
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now_micro(), 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(l) => {
                    self.observed = l.spec.map(|s| (s, Instant::now()));
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.lease_error(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let now = Instant::now();
        let observed_at = match &self.observed {
            Some((seen, at)) if *seen == spec => *at,
            _ => {
                self.observed = Some((spec.clone(), now));
                now
            }
        };
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let ours = holder == self.config.identity;
        let duration = spec
            .lease_duration_seconds
            .map_or(self.config.lease_duration, |s| {
                Duration::from_secs(s.max(0) as u64)
            });
        if !holder.is_empty() && !ours && observed_at + duration > now {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(if ours {
            self.spec(
                spec.acquire_time.clone().unwrap_or_else(now_micro),
                transitions,
            )
        } else {
            self.spec(now_micro(), transitions + 1)
        });
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                self.observed = l.spec.map(|s| (s, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.lease_error(e)),
        }
    }

    /// Gives the lease up (holder cleared) if this candidate holds it.
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now_micro()),
            renew_time: Some(now_micro()),
            lease_transitions: spec.lease_transitions,
            ..Default::default()
        });
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.config.name, "released leadership"),
            Err(err) => tracing::warn!(?err, "cannot release the lease"),
        }
    }
}

fn jittered(d: Duration) -> Duration {
    // client-go waits retryPeriod × (1 + up to 1.2) between acquire attempts.
    let nanos = k8s_openapi::jiff::Timestamp::now()
        .subsec_nanosecond()
        .unsigned_abs() as u64;
    d + d.mul_f64(1.2 * (nanos % 1000) as f64 / 1000.0)
}

/// Runs `lead` whenever this candidate holds the lease, until `shutdown` completes.
/// `lead` gets a future that completes when leadership is lost or on shutdown; it must
/// return soon after.
pub async fn run<F, Fut>(
    client: kube::Client,
    config: LeaderElectionConfig,
    shutdown: impl Future<Output = ()> + Send,
    lead: F,
) where
    F: Fn(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut elector = Elector {
        api,
        config,
        observed: None,
    };
    tokio::pin!(shutdown);
    loop {
        // Candidate: try until the lease is ours.
        let mut first = true;
        loop {
            if !first {
                let wait = jittered(elector.config.retry_period);
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            first = false;
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(err) => tracing::warn!(?err, "leader election attempt failed"),
            }
        }
        tracing::info!(
            identity = %elector.config.identity,
            lease = %format!("{}/{}", elector.config.namespace, elector.config.name),
            "acquired leadership"
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let leading = tokio::spawn(lead(stop_rx));
        // Leader: renew every retry period; give up after the renew deadline.
        let mut last_renew = Instant::now();
        let released = loop {
            tokio::select! {
                () = &mut shutdown => break true,
                () = tokio::time::sleep(elector.config.retry_period) => {}
            }
            let deadline = last_renew + elector.config.renew_deadline;
            let attempt = tokio::time::timeout_at(deadline, elector.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => last_renew = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::warn!("another candidate holds the lease");
                    if Instant::now() >= deadline {
                        break false;
                    }
                }
                Ok(Err(err)) => {
                    tracing::warn!(?err, "cannot renew the lease");
                    if Instant::now() >= deadline {
                        break false;
                    }
                }
                Err(_) => break false,
            }
        };
        let _ = stop_tx.send(true);
        let _ = leading.await;
        if released {
            elector.release().await;
            return;
        }
        tracing::warn!("lost leadership; stopped leading");
        elector.observed = None;
    }
}
