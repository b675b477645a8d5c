//! Everything the scheduler writes to the API server goes through [`SchedulerApi`]: the
//! binding, pod status updates, preemption deletes and events. [`KubeApi`] is the real
//! implementation (events go through `rkube_component::Recorder`); tests use a recording fake.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::Value;

use crate::error::{Error, Result};

/// Identifies a pod for an API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (a precondition of deletes and bindings).
    pub uid: String,
}

impl PodRef {
    /// The reference of `pod`.
    pub fn of(pod: &Pod) -> Self {
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// An event about a pod (`kubectl describe pod` shows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// The pod the event is about.
    pub pod: PodRef,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// `Scheduled`, `FailedScheduling`, `Preempted`.
    pub reason: &'static str,
    /// What the scheduler did (`Binding`, `Scheduling`, `Preempting`).
    pub action: &'static str,
    /// The message.
    pub message: String,
}

/// The scheduler's side effects.
#[async_trait]
pub trait SchedulerApi: Send + Sync + 'static {
    /// Binds a pod to a node (`POST pods/{name}/binding`).
    async fn bind(&self, pod: &PodRef, node: &str) -> Result<()>;
    /// Applies a strategic merge patch to a pod's status.
    async fn patch_pod_status(&self, pod: &PodRef, patch: &Value) -> Result<()>;
    /// Deletes a pod (gracefully, with a UID precondition).
    async fn delete_pod(&self, pod: &PodRef) -> Result<()>;
    /// Records an event (never blocks; may drop events under pressure).
    fn event(&self, event: EventRecord);
}

/// [`SchedulerApi`] over a kube client; events go to an [`crate::events`] writer.
#[derive(Clone)]
pub struct KubeApi {
    client: kube::Client,
    events: rkube_component::Recorder,
}

impl KubeApi {
    /// A client-backed API whose events go to `events`.
    pub fn new(client: kube::Client, events: rkube_component::Recorder) -> Self {
        Self { client, events }
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }
}

#[async_trait]
impl SchedulerApi for KubeApi {
    async fn bind(&self, pod: &PodRef, node: &str) -> Result<()> {
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        self.pods(&pod.namespace)
            .create_subresource::<Binding, Value>(
                "binding",
                &pod.name,
                &PostParams::default(),
                &binding,
            )
            .await
            .map(drop)
            .map_err(|source| Error::Bind {
                pod: pod.key(),
                node: node.to_string(),
                source,
            })
    }

    async fn patch_pod_status(&self, pod: &PodRef, patch: &Value) -> Result<()> {
        self.pods(&pod.namespace)
            .patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map(drop)
            .map_err(|source| Error::PatchStatus {
                pod: pod.key(),
                source,
            })
    }

    async fn delete_pod(&self, pod: &PodRef) -> Result<()> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        self.pods(&pod.namespace)
            .delete(&pod.name, &dp)
            .await
            .map(drop)
            .map_err(|source| Error::DeletePod {
                pod: pod.key(),
                source,
            })
    }

    fn event(&self, event: EventRecord) {
        self.events.record(rkube_component::EventRecord {
            regarding: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(event.pod.namespace),
                name: Some(event.pod.name),
                uid: Some(event.pod.uid),
                ..Default::default()
            },
            type_: event.type_,
            reason: event.reason,
            action: event.action,
            message: event.message,
        });
    }
}

/// A recording [`SchedulerApi`] for tests.
#[cfg(test)]
#[derive(Default)]
pub struct RecordingApi {
    /// Calls made, in order: `bind ns/name node`, `status ns/name <patch>`, `delete ns/name`.
    pub calls: parking_lot::Mutex<Vec<String>>,
    /// Events recorded.
    pub events: parking_lot::Mutex<Vec<EventRecord>>,
    /// Pods whose binding fails.
    pub fail_bind: parking_lot::Mutex<Vec<String>>,
}

#[cfg(test)]
#[async_trait]
impl SchedulerApi for RecordingApi {
    async fn bind(&self, pod: &PodRef, node: &str) -> Result<()> {
        self.calls.lock().push(format!("bind {} {node}", pod.key()));
        if self.fail_bind.lock().contains(&pod.name) {
            return Err(Error::Bind {
                pod: pod.key(),
                node: node.into(),
                source: kube::Error::Api(Box::new(kube::core::Status {
                    code: 500,
                    message: "injected".into(),
                    ..Default::default()
                })),
            });
        }
        Ok(())
    }
    async fn patch_pod_status(&self, pod: &PodRef, patch: &Value) -> Result<()> {
        self.calls
            .lock()
            .push(format!("status {} {patch}", pod.key()));
        Ok(())
    }
    async fn delete_pod(&self, pod: &PodRef) -> Result<()> {
        self.calls.lock().push(format!("delete {}", pod.key()));
        Ok(())
    }
    fn event(&self, event: EventRecord) {
        self.events.lock().push(event);
    }
}

/// Shared handle to the API.
pub type SharedApi = Arc<dyn SchedulerApi>;
