//! Writes the scheduler's events as core/v1 Events (what `kubectl describe pod` lists),
//! off the scheduling path: a bounded channel, a few concurrent writes, and repeats of the
//! same event for the same pod folded into one Event with a count, like upstream's
//! recorder. Events are dropped rather than slowing the scheduler down.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use crate::api::EventRecord;

/// Events buffered before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 16 * 1024;
/// Concurrent event writes.
pub const CONCURRENCY: usize = 8;
/// Folded events remembered (the oldest half is forgotten beyond this).
const MAX_REMEMBERED: usize = 8192;

/// Starts the writer; events sent to the returned channel are written as `component`.
pub fn spawn_writer(
    client: kube::Client,
    component: String,
    instance: String,
) -> (mpsc::Sender<EventRecord>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let task = tokio::spawn(run(rx, client, component, instance));
    (tx, task)
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
    let mut folded: HashMap<(String, &'static str, String), Folded> = HashMap::new();
    let mut seq = 0u64;
    while let Some(ev) = rx.recv().await {
        seq += 1;
        let now = Timestamp::now();
        let key = (ev.pod.uid.clone(), ev.reason, ev.message.clone());
        let (entry, repeat) = match folded.get_mut(&key) {
            Some(f) => {
                f.count += 1;
                (f.clone(), true)
            }
            None => {
                let f = Folded {
                    name: format!("{}.{:x}", ev.pod.name, (now.as_nanosecond() as u64) ^ seq),
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
        let api: Api<Event> = Api::namespaced(client.clone(), &ev.pod.namespace);
        let event = Event {
            metadata: ObjectMeta {
                name: Some(entry.name.clone()),
                namespace: Some(ev.pod.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(ev.pod.namespace.clone()),
                name: Some(ev.pod.name.clone()),
                uid: Some(ev.pod.uid.clone()),
                ..Default::default()
            },
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
