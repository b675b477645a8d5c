//! Writes a component's events as core/v1 Events (what `kubectl describe` lists), off the
//! component's own path: a bounded channel, a few concurrent writes, and repeats of the
//! same event about the same object folded into one Event with a count, as upstream's
//! event correlator does. Events are dropped rather than slowing the component down.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

/// Events buffered before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 16 * 1024;
/// Concurrent event writes.
pub const CONCURRENCY: usize = 8;
/// Folded events remembered (the oldest half is forgotten beyond this).
const MAX_REMEMBERED: usize = 8192;

/// One event to record.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// The object the event is about (`apiVersion`, `kind`, `namespace`, `name`, `uid`).
    pub regarding: ObjectReference,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// A CamelCase reason: `Scheduled`, `SuccessfulCreate`, `ScalingReplicaSet`, ...
    pub reason: &'static str,
    /// What the component did (`Binding`, `Create`, ...).
    pub action: &'static str,
    /// The human-readable message.
    pub message: String,
}

impl EventRecord {
    /// A `Normal` event about `regarding`.
    pub fn normal(
        regarding: ObjectReference,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            regarding,
            type_: "Normal",
            reason,
            action: reason,
            message: message.into(),
        }
    }

    /// A `Warning` event about `regarding`.
    pub fn warning(
        regarding: ObjectReference,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: "Warning",
            ..Self::normal(regarding, reason, message)
        }
    }
}

/// A reference to `obj` for [`EventRecord::regarding`].
pub fn object_ref<K>(obj: &K) -> ObjectReference
where
    K: kube::Resource<DynamicType = ()>,
{
    let meta = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}

/// A handle that records events; cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<EventRecord>,
}

impl Recorder {
    /// Starts the writer; events are written as `component` (`source.component`,
    /// `reportingController`) from `instance` (`reportingInstance`).
    pub fn spawn(
        client: kube::Client,
        component: String,
        instance: String,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(rx, client, component, instance));
        (Self { tx }, task)
    }

    /// A recorder whose events go to `tx` (tests read them from the other end).
    pub fn from_sender(tx: mpsc::Sender<EventRecord>) -> Self {
        Self { tx }
    }

    /// Records `event`; drops it when the writer is behind.
    pub fn record(&self, event: EventRecord) {
        if let Err(err) = self.tx.try_send(event) {
            tracing::debug!(%err, "event dropped");
        }
    }
}

#[derive(Debug, Clone)]
struct Folded {
    name: String,
    count: i32,
    first: Timestamp,
    seq: u64,
}

async fn run(
    mut rx: mpsc::Receiver<EventRecord>,
    client: kube::Client,
    component: String,
    instance: String,
) {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut folded: HashMap<(String, &'static str, &'static str, String), Folded> = HashMap::new();
    let mut seq = 0u64;
    while let Some(ev) = rx.recv().await {
        seq += 1;
        let now = Timestamp::now();
        let uid = ev.regarding.uid.clone().unwrap_or_default();
        let object_name = ev.regarding.name.clone().unwrap_or_default();
        let key = (uid, ev.type_, ev.reason, ev.message.clone());
        let (entry, repeat) = match folded.get_mut(&key) {
            Some(f) => {
                f.count += 1;
                (f.clone(), true)
            }
            None => {
                let f = Folded {
                    name: format!("{object_name}.{:x}", (now.as_nanosecond() as u64) ^ seq),
                    count: 1,
                    first: now,
                    seq,
                };
                folded.insert(key, f.clone());
                (f, false)
            }
        };
        if folded.len() > MAX_REMEMBERED {
            let cutoff = seq.saturating_sub(MAX_REMEMBERED as u64 / 2);
            folded.retain(|_, f| f.seq >= cutoff);
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        // Events about cluster-scoped objects (nodes) live in `default`, as upstream.
        let namespace = ev
            .regarding
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
        let event = Event {
            metadata: ObjectMeta {
                name: Some(entry.name.clone()),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: ev.regarding,
            reason: Some(ev.reason.into()),
            message: Some(ev.message),
            type_: Some(ev.type_.into()),
            action: Some(ev.action.into()),
            source: Some(EventSource {
                component: Some(component.clone()),
                host: None,
            }),
            reporting_component: Some(component.clone()),
            reporting_instance: Some(instance.clone()),
            first_timestamp: Some(Time(entry.first)),
            last_timestamp: Some(Time(now)),
            count: Some(entry.count),
            ..Default::default()
        };
        tokio::spawn(async move {
            let _permit = permit;
            let result = if repeat {
                let patch = json!({"count": entry.count, "lastTimestamp": Time(now)});
                match api
                    .patch(&entry.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    // The first write failed or the event expired: write it whole.
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        api.create(&PostParams::default(), &event).await.map(drop)
                    }
                    other => other.map(drop),
                }
            } else {
                api.create(&PostParams::default(), &event).await.map(drop)
            };
            if let Err(err) = result {
                tracing::debug!(?err, "cannot write event");
            }
        });
    }
}
