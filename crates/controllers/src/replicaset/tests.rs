//! The reconcile's pod management against a recording [`PodControl`].

use super::*;
use k8s_openapi::api::apps::v1::ReplicaSetSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// Records calls; creates fail once `fail_after` creates succeeded.
#[derive(Default)]
struct FakeControl {
    created: Mutex<usize>,
    create_calls: Mutex<usize>,
    deleted: Mutex<Vec<String>>,
    fail_after: Option<usize>,
}

fn api_error(code: u16, message: &str) -> kube::Error {
    kube::Error::Api(Box::new(
        kube::core::Status::failure(message, "Forbidden").with_code(code),
    ))
}

#[async_trait]
impl PodControl for FakeControl {
    async fn create(&self, _ns: &str, pod: &Pod) -> Result<Pod, kube::Error> {
        *self.create_calls.lock() += 1;
        let mut n = self.created.lock();
        if self.fail_after.is_some_and(|max| *n >= max) {
            return Err(api_error(403, "exceeded quota"));
        }
        *n += 1;
        let mut pod = pod.clone();
        pod.metadata.name = Some(format!("web-{n}"));
        Ok(pod)
    }
    async fn delete(&self, _ns: &str, name: &str) -> Result<(), kube::Error> {
        self.deleted.lock().push(name.into());
        Ok(())
    }
    async fn json_patch(&self, _ns: &str, _name: &str, _patch: Value) -> Result<Pod, kube::Error> {
        Ok(Pod::default())
    }
}

fn rs(replicas: i32) -> ReplicaSet {
    let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("ns".into()),
            uid: Some("rs-uid".into()),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(Default::default()),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn named(name: &str, node: Option<&str>) -> Arc<Pod> {
    let mut pod = Pod::default();
    pod.metadata.name = Some(name.into());
    pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
        node_name: node.map(Into::into),
        ..Default::default()
    });
    Arc::new(pod)
}

#[tokio::test]
async fn creates_missing_pods_and_records_events() {
    let control = FakeControl::default();
    let exp = Expectations::default();
    let (tx, mut rx) = mpsc::channel(100);
    let recorder = Recorder::from_sender(tx);
    let failure = manage_pods(&rs(5), &[], &exp, &control, &recorder).await;
    assert_eq!(failure, None);
    assert_eq!(*control.created.lock(), 5);
    // Nothing observed yet: the next sync must not count pods.
    assert!(!exp.satisfied("rs-uid"));
    let ev = rx.recv().await.unwrap();
    assert_eq!(ev.reason, "SuccessfulCreate");
    assert!(
        ev.message.starts_with("Created pod: web-"),
        "{}",
        ev.message
    );
}

#[tokio::test]
async fn slow_start_stops_at_the_first_failing_batch() {
    // Batches 1, 2, 4, 3: the third batch fails after one more success.
    let control = FakeControl {
        fail_after: Some(4),
        ..Default::default()
    };
    let exp = Expectations::default();
    let (tx, mut rx) = mpsc::channel(100);
    let failure = manage_pods(&rs(10), &[], &exp, &control, &Recorder::from_sender(tx)).await;
    let failure = failure.expect("creates failed");
    assert_eq!(failure.reason, "FailedCreate");
    assert_eq!(failure.message, "exceeded quota");
    // 1 + 2 + 4 calls; the last batch of 3 never started.
    assert_eq!(*control.create_calls.lock(), 7);
    assert_eq!(*control.created.lock(), 4);
    // Failed and skipped creations are not expected: once the 4 successes are seen the
    // controller may sync again.
    for _ in 0..3 {
        assert!(!exp.satisfied("rs-uid"));
        exp.creation_observed("rs-uid");
    }
    exp.creation_observed("rs-uid");
    assert!(exp.satisfied("rs-uid"));
    let mut reasons = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        reasons.push(ev.reason);
    }
    assert_eq!(reasons.iter().filter(|r| **r == "FailedCreate").count(), 3);
}

#[tokio::test]
async fn scale_down_deletes_the_least_useful_pods_and_expects_them() {
    let control = FakeControl::default();
    let exp = Expectations::default();
    let (tx, _rx) = mpsc::channel(100);
    let pods = vec![
        named("on-node-1", Some("n")),
        named("unassigned", None),
        named("on-node-2", Some("n")),
    ];
    let failure = manage_pods(&rs(2), &pods, &exp, &control, &Recorder::from_sender(tx)).await;
    assert_eq!(failure, None);
    assert_eq!(*control.deleted.lock(), ["unassigned"]);
    assert!(!exp.satisfied("rs-uid"));
    exp.deletion_observed("rs-uid", &("ns".into(), "unassigned".into()));
    assert!(exp.satisfied("rs-uid"));
    // At the desired count nothing happens.
    assert_eq!(
        manage_pods(
            &rs(3),
            &pods,
            &exp,
            &control,
            &Recorder::from_sender(mpsc::channel(1).0)
        )
        .await,
        None
    );
    assert_eq!(control.deleted.lock().len(), 1);
}

#[test]
fn replication_controllers_select_by_map_and_drop_terminating_replicas() {
    let rc = ReplicationController {
        spec: Some(k8s_openapi::api::core::v1::ReplicationControllerSpec {
            selector: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    assert!(rc.selects(Some(&labels)));
    assert!(!rc.selects(None));
    let v = ReplicationController::status_json(&ReplicaSetStatus {
        replicas: 2,
        terminating_replicas: Some(1),
        ..Default::default()
    });
    assert_eq!(v["replicas"], 2);
    assert!(v.get("terminatingReplicas").is_none());
    assert!(v["conditions"].is_null());
}
