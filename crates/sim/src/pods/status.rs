//! The pod status a kubelet would report for simulated containers: pure functions of the pod,
//! the addresses and the time, unit-tested without a cluster.
//!
//! The simulator keeps no per-pod state: a pod's life is read back from its own status as a
//! [`PodState`], [`plan`] says what happens next, and [`started`], [`exited`] and
//! [`restarted`] build the status that records it. Shapes follow upstream's kubelet
//! (`generateAPIPodStatus`, `pkg/kubelet/status/generate.go`): the kubelet-owned conditions
//! in its order (PodReadyToStartContainers, Initialized, Ready, ContainersReady,
//! PodScheduled) with `lastTransitionTime` kept while a condition's status stays the same,
//! other writers' conditions kept, and the phase derived from the containers and the
//! restart policy.
//!
//! The builders return the fields the kubelet owns; fields left `None` (qosClass,
//! nominatedNodeName, and podIP/hostIP after the start) are left as they are, because the
//! caller sends the result as a JSON merge patch of `status`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::digest;

/// Annotation: the simulated containers exit with this code (`"0"`, `"3"`, ...).
pub const EXIT_CODE_ANNOTATION: &str = "sim.rkube.io/exit-code";
/// Annotation: seconds the containers run before they exit (default 0; needs the exit code).
pub const RUN_SECONDS_ANNOTATION: &str = "sim.rkube.io/run-seconds";

/// Longest back-off before a crashed container is restarted (upstream: 5 min; short here so
/// Jobs finish quickly).
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Conditions the kubelet owns (upstream `PodConditionByKubelet`): rewritten on every status.
const KUBELET_CONDITIONS: &[&str] = &[
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
];

/// What a pod's annotations ask of its simulated containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Behaviour {
    /// Exit code the containers end with; `None`: they run until the pod is deleted.
    pub(crate) exit_code: Option<i32>,
    /// How long each run lasts before it exits.
    pub(crate) run_for: Duration,
}

/// Reads the `sim.rkube.io/*` annotations; the error says which one is malformed.
pub(crate) fn behaviour(pod: &Pod) -> Result<Behaviour, String> {
    let annotations = pod.metadata.annotations.as_ref();
    let get = |key: &str| annotations.and_then(|a| a.get(key)).map(|v| v.trim());
    let exit_code = get(EXIT_CODE_ANNOTATION)
        .map(|v| {
            v.parse::<i32>()
                .map_err(|_| format!("annotation {EXIT_CODE_ANNOTATION}={v:?} is not an integer"))
        })
        .transpose()?;
    let run_for = get(RUN_SECONDS_ANNOTATION)
        .map(|v| {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    format!(
                        "annotation {RUN_SECONDS_ANNOTATION}={v:?} is not a number of seconds >= 0"
                    )
                })
        })
        .transpose()?
        .unwrap_or_default();
    Ok(Behaviour { exit_code, run_for })
}

/// Where a simulated pod is in its life, as its status records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodState {
    /// Not started by the simulator: no pod IP, or a container without a running or
    /// terminated state.
    NotStarted,
    /// Every container runs; the latest (re)start was at `since`.
    Running {
        /// When the current run began.
        since: Timestamp,
    },
    /// Every container exited (last at `at`, with `exit_code`) and the phase is not terminal:
    /// the restart policy restarts them after a back-off.
    Exited {
        /// When the containers exited.
        at: Timestamp,
        /// Their exit code.
        exit_code: i32,
        /// Restarts so far (the back-off grows with it).
        restarts: i32,
    },
    /// Phase Succeeded or Failed: nothing happens any more.
    Terminal,
}

/// Reads a pod's [`PodState`] from its status.
pub(crate) fn observe(pod: &Pod) -> PodState {
    let Some(status) = pod.status.as_ref() else {
        return PodState::NotStarted;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return PodState::Terminal;
    }
    if status.pod_ip.as_deref().is_none_or(str::is_empty) {
        return PodState::NotStarted;
    }
    let containers = containers(pod);
    let mut running_since: Option<Timestamp> = None;
    let mut exited: Option<(Timestamp, i32, i32)> = None;
    let (mut running, mut terminated) = (0, 0);
    for c in containers {
        let Some(cs) = find(status.container_statuses.as_deref(), &c.name) else {
            return PodState::NotStarted;
        };
        let state = cs.state.as_ref();
        if let Some(r) = state.and_then(|s| s.running.as_ref()) {
            running += 1;
            let at = r.started_at.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
            running_since = Some(running_since.map_or(at, |s| s.max(at)));
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            terminated += 1;
            let at = t
                .finished_at
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
            let later = exited.is_none_or(|(prev, _, _)| at >= prev);
            if later {
                exited = Some((at, t.exit_code, cs.restart_count));
            }
        }
    }
    match (running, terminated, running_since, exited) {
        (r, 0, Some(since), _) if r > 0 => PodState::Running { since },
        (0, t, _, Some((at, exit_code, restarts))) if t > 0 => PodState::Exited {
            at,
            exit_code,
            restarts,
        },
        _ => PodState::NotStarted,
    }
}

/// What the simulated kubelet does next with a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Nothing now; look again after this long (`None`: only when the pod changes).
    Wait(Option<Duration>),
    /// Give the pod an IP and start its containers ([`started`]).
    Start,
    /// The containers exit now with this code ([`exited`]).
    Exit(i32),
    /// The back-off is over: start the containers again ([`restarted`]).
    Restart,
}

/// One step of a pod's life at time `now`.
pub(crate) fn plan(pod: &Pod, behaviour: &Behaviour, now: Timestamp) -> Plan {
    match observe(pod) {
        PodState::Terminal => Plan::Wait(None),
        PodState::NotStarted => Plan::Start,
        PodState::Running { since } => match behaviour.exit_code {
            None => Plan::Wait(None),
            Some(code) => match remaining(since, behaviour.run_for, now) {
                None => Plan::Exit(code),
                left => Plan::Wait(left),
            },
        },
        PodState::Exited {
            at,
            exit_code,
            restarts,
        } => {
            if !restarts_after(&restart_policy(pod), exit_code) {
                return Plan::Wait(None);
            }
            match remaining(at, backoff(restarts), now) {
                None => Plan::Restart,
                left => Plan::Wait(left),
            }
        }
    }
}

/// Time left until `since + wait`, or `None` when it has passed.
fn remaining(since: Timestamp, wait: Duration, now: Timestamp) -> Option<Duration> {
    let due = since
        .as_millisecond()
        .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
    let left = due.saturating_sub(now.as_millisecond());
    (left > 0).then(|| Duration::from_millis(left as u64))
}

/// Back-off before restart number `restarts + 1`: 1 s, doubling, at most [`MAX_BACKOFF`].
pub(crate) fn backoff(restarts: i32) -> Duration {
    Duration::from_secs(1u64 << restarts.clamp(0, 8)).min(MAX_BACKOFF)
}

/// The pod's restart policy (`Always` when unset, as defaulted upstream).
fn restart_policy(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into())
}

/// Whether containers that exited with `code` are restarted under `policy`.
fn restarts_after(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// Where a pod runs: its node's address and its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The node's InternalIP.
    pub(crate) host_ip: Ipv4Addr,
    /// The pod's IP (the node's for hostNetwork pods).
    pub(crate) pod_ip: Ipv4Addr,
}

/// The status once the pod has an IP and its containers run: phase Running, every
/// kubelet condition True, init containers completed (sidecars running).
pub(crate) fn started(pod: &Pod, at: Placement, now: Timestamp) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let t = Time(now);
    let uid = uid(pod);
    let containers = containers(pod)
        .iter()
        .map(|c| {
            let prev = find(old.container_statuses.as_deref(), &c.name);
            let restarts = prev.map_or(0, |p| p.restart_count);
            let last = prev.and_then(|p| p.last_state.clone());
            running(&uid, c, restarts, last, &t)
        })
        .collect();
    let init: Vec<ContainerStatus> = init_containers(pod)
        .iter()
        .map(|c| {
            if is_sidecar(c) {
                running(&uid, c, 0, None, &t)
            } else {
                completed_init(&uid, c, &t)
            }
        })
        .collect();
    PodStatus {
        phase: Some("Running".into()),
        host_ip: Some(at.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: at.host_ip.to_string(),
        }]),
        pod_ip: Some(at.pod_ip.to_string()),
        pod_ips: Some(vec![PodIP {
            ip: at.pod_ip.to_string(),
        }]),
        start_time: old.start_time.clone().or_else(|| Some(t.clone())),
        conditions: Some(conditions(pod, &Readiness::Ready, &t)),
        container_statuses: Some(containers),
        init_container_statuses: (!init.is_empty()).then_some(init),
        ..Default::default()
    }
}

/// The status when the containers exit with `code`: terminated states; phase Succeeded or
/// Failed when the restart policy does not restart them, else still Running (not ready).
pub(crate) fn exited(pod: &Pod, code: i32, now: Timestamp) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let t = Time(now);
    let restarting = restarts_after(&restart_policy(pod), code);
    let phase = match (restarting, code) {
        (true, _) => "Running",
        (false, 0) => "Succeeded",
        (false, _) => "Failed",
    };
    let statuses = containers(pod)
        .iter()
        .map(|c| {
            let prev = find(old.container_statuses.as_deref(), &c.name);
            terminate(&uid(pod), c, prev, code, &t)
        })
        .collect();
    let init = old.init_container_statuses.clone().map(|statuses| {
        if restarting {
            return statuses;
        }
        // The pod is done: sidecars are stopped too.
        init_containers(pod)
            .iter()
            .map(|c| {
                let prev = find(Some(&statuses), &c.name);
                match prev {
                    Some(p) if !is_sidecar(c) => p.clone(),
                    _ => terminate(&uid(pod), c, prev, 0, &t),
                }
            })
            .collect()
    });
    let readiness = if restarting {
        Readiness::NotReady(containers(pod).iter().map(|c| c.name.clone()).collect())
    } else {
        Readiness::Terminal(phase)
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions(pod, &readiness, &t)),
        container_statuses: Some(statuses),
        init_container_statuses: init,
        ..Default::default()
    }
}

/// The status after the back-off: the containers run again, one restart more, the last
/// termination kept in `lastState`.
pub(crate) fn restarted(pod: &Pod, now: Timestamp) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let t = Time(now);
    let containers = containers(pod)
        .iter()
        .map(|c| {
            let prev = find(old.container_statuses.as_deref(), &c.name);
            let restarts = prev.map_or(0, |p| p.restart_count) + 1;
            let last = prev
                .and_then(|p| p.state.as_ref())
                .and_then(|s| s.terminated.clone())
                .map(|terminated| ContainerState {
                    terminated: Some(terminated),
                    ..Default::default()
                });
            running(&uid(pod), c, restarts, last, &t)
        })
        .collect();
    PodStatus {
        phase: Some("Running".into()),
        conditions: Some(conditions(pod, &Readiness::Ready, &t)),
        container_statuses: Some(containers),
        ..Default::default()
    }
}

fn running(
    uid: &str,
    c: &Container,
    restarts: i32,
    last: Option<ContainerState>,
    t: &Time,
) -> ContainerStatus {
    let image = c.image.clone().unwrap_or_default();
    ContainerStatus {
        name: c.name.clone(),
        image_id: image_id(&image),
        image,
        container_id: Some(container_id(uid, &c.name, restarts)),
        ready: true,
        started: Some(true),
        restart_count: restarts,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(t.clone()),
            }),
            ..Default::default()
        }),
        last_state: Some(last.unwrap_or_default()),
        resources: resources(c),
        ..Default::default()
    }
}

/// A regular init container that ran to completion (ready, as upstream reports it).
fn completed_init(uid: &str, c: &Container, t: &Time) -> ContainerStatus {
    let image = c.image.clone().unwrap_or_default();
    let id = container_id(uid, &c.name, 0);
    ContainerStatus {
        name: c.name.clone(),
        image_id: image_id(&image),
        image,
        container_id: Some(id.clone()),
        ready: true,
        started: Some(false),
        restart_count: 0,
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 0,
                reason: Some("Completed".into()),
                started_at: Some(t.clone()),
                finished_at: Some(t.clone()),
                container_id: Some(id),
                ..Default::default()
            }),
            ..Default::default()
        }),
        last_state: Some(ContainerState::default()),
        resources: resources(c),
        ..Default::default()
    }
}

/// `prev` (a running container) terminated now with `code`.
fn terminate(
    uid: &str,
    c: &Container,
    prev: Option<&ContainerStatus>,
    code: i32,
    t: &Time,
) -> ContainerStatus {
    let restarts = prev.map_or(0, |p| p.restart_count);
    let started_at = prev
        .and_then(|p| p.state.as_ref())
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.clone());
    let id = prev
        .and_then(|p| p.container_id.clone())
        .unwrap_or_else(|| container_id(uid, &c.name, restarts));
    let image = c.image.clone().unwrap_or_default();
    ContainerStatus {
        name: c.name.clone(),
        image_id: image_id(&image),
        image,
        container_id: Some(id.clone()),
        ready: false,
        started: Some(false),
        restart_count: restarts,
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                started_at,
                finished_at: Some(t.clone()),
                container_id: Some(id),
                ..Default::default()
            }),
            ..Default::default()
        }),
        last_state: Some(prev.and_then(|p| p.last_state.clone()).unwrap_or_default()),
        resources: resources(c),
        ..Default::default()
    }
}

/// How ready the containers are, for the conditions.
enum Readiness {
    /// Every container is ready.
    Ready,
    /// These containers are not ready (they wait for a restart).
    NotReady(Vec<String>),
    /// The pod reached this terminal phase.
    Terminal(&'static str),
}

/// Other writers' conditions, then the kubelet's in upstream's order.
fn conditions(pod: &Pod, readiness: &Readiness, t: &Time) -> Vec<PodCondition> {
    let old: &[PodCondition] = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let mut out: Vec<PodCondition> = old
        .iter()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let (containers_ready, reason, message) = match readiness {
        Readiness::Ready => ("True", None, None),
        Readiness::NotReady(names) => (
            "False",
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                names.join(" ")
            )),
        ),
        Readiness::Terminal("Succeeded") => ("False", Some("PodCompleted"), None),
        Readiness::Terminal(_) => ("False", Some("PodFailed"), None),
    };
    // Ready also needs every readiness gate's condition to be True.
    let (ready, ready_reason, ready_message) = if containers_ready == "True" {
        let unready: Vec<String> = readiness_gates(pod)
            .filter_map(|gate| match out.iter().find(|c| c.type_ == gate) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate \"{gate}\" does not exist."
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate \"{gate}\" is not \"True\", but {}",
                    c.status
                )),
                Some(_) => None,
            })
            .collect();
        if unready.is_empty() {
            ("True", None, None)
        } else {
            (
                "False",
                Some("ReadinessGatesNotReady"),
                Some(unready.join(", ")),
            )
        }
    } else {
        (containers_ready, reason, message.clone())
    };
    let terminal = matches!(readiness, Readiness::Terminal(_));
    let succeeded = matches!(readiness, Readiness::Terminal("Succeeded"));
    let mut push = |type_: &str, status: &str, reason: Option<&str>, message: Option<String>| {
        let previous = old.iter().find(|c| c.type_ == type_);
        let since = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => None,
        };
        out.push(PodCondition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.map(str::to_string),
            message,
            last_transition_time: since.or_else(|| Some(t.clone())),
            ..Default::default()
        });
    };
    push(
        "PodReadyToStartContainers",
        if terminal { "False" } else { "True" },
        None,
        None,
    );
    push(
        "Initialized",
        "True",
        succeeded.then_some("PodCompleted"),
        None,
    );
    push("Ready", ready, ready_reason, ready_message);
    push("ContainersReady", containers_ready, reason, message);
    push("PodScheduled", "True", None, None);
    out
}

fn readiness_gates(pod: &Pod) -> impl Iterator<Item = String> + '_ {
    pod.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|g| g.condition_type.clone())
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map_or(&[], |s| s.containers.as_slice())
}

fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
}

/// An init container with `restartPolicy: Always` runs beside the main containers.
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn find<'a>(statuses: Option<&'a [ContainerStatus]>, name: &str) -> Option<&'a ContainerStatus> {
    statuses?.iter().find(|s| s.name == name)
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// The resources the container runs with (upstream reports them since in-place resize).
fn resources(c: &Container) -> Option<ResourceRequirements> {
    let r = c.resources.as_ref()?;
    let some = |m: &Option<BTreeMap<String, Quantity>>| m.as_ref().is_some_and(|m| !m.is_empty());
    (some(&r.limits) || some(&r.requests)).then(|| ResourceRequirements {
        limits: r.limits.clone(),
        requests: r.requests.clone(),
        claims: None,
    })
}

/// `sim://` and 64 hex digits, new for every restart (as a runtime's container ID).
fn container_id(uid: &str, name: &str, restarts: i32) -> String {
    format!(
        "sim://{}",
        digest::hex(&[uid, name, &restarts.to_string()], 64)
    )
}

/// `<repository>@sha256:<digest>`, the shape a runtime reports.
fn image_id(image: &str) -> String {
    let repository = match image.split_once('@') {
        Some((repo, _)) => repo,
        None => match image.rfind(':') {
            Some(i) if !image[i..].contains('/') => &image[..i],
            _ => image,
        },
    };
    format!("{repository}@sha256:{}", digest::hex(&[image], 64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u-1",
                          "annotations": annotations},
            "spec": spec,
            "status": {
                "phase": "Pending",
                "qosClass": "BestEffort",
                "conditions": [
                    {"type": "PodScheduled", "status": "True",
                     "lastTransitionTime": "2025-01-01T00:00:00Z"},
                    {"type": "example.com/gate", "status": "True"}
                ]
            }
        }))
        .unwrap()
    }

    fn simple(restart_policy: &str, annotations: serde_json::Value) -> Pod {
        pod(
            json!({"nodeName": "sim-0", "restartPolicy": restart_policy,
                   "containers": [{"name": "app", "image": "localhost/busybox:1"},
                                  {"name": "side", "image": "nginx@sha256:abc"}]}),
            annotations,
        )
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const AT: Placement = Placement {
        host_ip: Ipv4Addr::new(10, 200, 0, 1),
        pod_ip: Ipv4Addr::new(10, 201, 0, 2),
    };

    /// The pod with `status` applied as the API server would merge it.
    fn apply(mut pod: Pod, status: PodStatus) -> Pod {
        let mut old = serde_json::to_value(pod.status.take()).unwrap();
        for (k, v) in serde_json::to_value(status).unwrap().as_object().unwrap() {
            old[k] = v.clone();
        }
        pod.status = Some(serde_json::from_value(old).unwrap());
        pod
    }

    fn condition<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
        status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    #[test]
    fn started_status_has_upstream_shape() {
        let p = simple("Always", json!({}));
        let now = ts("2025-06-01T10:00:00Z");
        assert_eq!(observe(&p), PodState::NotStarted);
        assert_eq!(plan(&p, &Behaviour::default(), now), Plan::Start);
        let s = started(&p, AT, now);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["phase"], "Running");
        assert_eq!(v["hostIP"], "10.200.0.1");
        assert_eq!(v["hostIPs"], json!([{"ip": "10.200.0.1"}]));
        assert_eq!(v["podIP"], "10.201.0.2");
        assert_eq!(v["podIPs"], json!([{"ip": "10.201.0.2"}]));
        assert_eq!(v["startTime"], "2025-06-01T10:00:00Z");
        assert!(v.get("qosClass").is_none(), "left to the API server");
        let types: Vec<&str> = v["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "example.com/gate",
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        for c in v["conditions"].as_array().unwrap() {
            assert_eq!(c["status"], "True", "{c}");
        }
        // PodScheduled kept its transition time; the others are new.
        assert_eq!(
            condition(&s, "PodScheduled").last_transition_time,
            Some(Time(ts("2025-01-01T00:00:00Z")))
        );
        assert_eq!(condition(&s, "Ready").last_transition_time, Some(Time(now)));
        let app = &v["containerStatuses"][0];
        assert_eq!(app["name"], "app");
        assert_eq!(app["ready"], true);
        assert_eq!(app["started"], true);
        assert_eq!(app["restartCount"], 0);
        assert_eq!(app["image"], "localhost/busybox:1");
        assert!(
            app["imageID"]
                .as_str()
                .unwrap()
                .starts_with("localhost/busybox@sha256:")
        );
        let id = app["containerID"].as_str().unwrap();
        assert!(id.starts_with("sim://") && id.len() == 6 + 64, "{id}");
        assert_eq!(
            app["state"],
            json!({"running": {"startedAt": "2025-06-01T10:00:00Z"}})
        );
        assert_eq!(app["lastState"], json!({}));
        assert!(
            v["containerStatuses"][1]["imageID"]
                .as_str()
                .unwrap()
                .starts_with("nginx@sha256:")
        );
        assert_ne!(v["containerStatuses"][1]["containerID"], app["containerID"]);
        assert!(v.get("initContainerStatuses").is_none());
        // Once started, the pod waits: it has no exit annotation.
        let running = apply(p, s);
        assert_eq!(observe(&running), PodState::Running { since: now });
        assert_eq!(plan(&running, &Behaviour::default(), now), Plan::Wait(None));
    }

    #[test]
    fn init_containers_complete_and_sidecars_run() {
        let p = pod(
            json!({"containers": [{"name": "app", "image": "a"}],
                   "initContainers": [{"name": "setup", "image": "s"},
                                      {"name": "proxy", "image": "p", "restartPolicy": "Always"}]}),
            json!({}),
        );
        let s = started(&p, AT, ts("2025-06-01T10:00:00Z"));
        let init = serde_json::to_value(&s.init_container_statuses).unwrap();
        assert_eq!(init[0]["name"], "setup");
        assert_eq!(init[0]["ready"], true);
        assert_eq!(init[0]["started"], false);
        assert_eq!(init[0]["state"]["terminated"]["exitCode"], 0);
        assert_eq!(init[0]["state"]["terminated"]["reason"], "Completed");
        assert_eq!(init[1]["name"], "proxy");
        assert!(init[1]["state"]["running"].is_object());
        // Terminal: the sidecar stops, the completed init container stays as it was.
        let p = pod(
            json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": "a"}],
                   "initContainers": [{"name": "setup", "image": "s"},
                                      {"name": "proxy", "image": "p", "restartPolicy": "Always"}]}),
            json!({}),
        );
        let running = apply(p.clone(), started(&p, AT, ts("2025-06-01T10:00:00Z")));
        let done = exited(&running, 0, ts("2025-06-01T10:00:05Z"));
        let init = serde_json::to_value(&done.init_container_statuses).unwrap();
        assert_eq!(
            init[0]["state"]["terminated"]["finishedAt"],
            "2025-06-01T10:00:00Z"
        );
        assert_eq!(
            init[1]["state"]["terminated"]["finishedAt"],
            "2025-06-01T10:00:05Z"
        );
    }

    #[test]
    fn readiness_gates_hold_ready_back() {
        let p = pod(
            json!({"containers": [{"name": "app", "image": "a"}],
                   "readinessGates": [{"conditionType": "example.com/gate"},
                                      {"conditionType": "example.com/missing"}]}),
            json!({}),
        );
        let s = started(&p, AT, ts("2025-06-01T10:00:00Z"));
        let ready = condition(&s, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert!(
            ready
                .message
                .as_deref()
                .unwrap()
                .contains("\"example.com/missing\" does not exist")
        );
        assert_eq!(condition(&s, "ContainersReady").status, "True");
    }

    #[test]
    fn exit_codes_end_never_pods() {
        let annotations = json!({EXIT_CODE_ANNOTATION: "3", RUN_SECONDS_ANNOTATION: "5"});
        let p = simple("Never", annotations);
        let b = behaviour(&p).unwrap();
        assert_eq!(
            b,
            Behaviour {
                exit_code: Some(3),
                run_for: Duration::from_secs(5)
            }
        );
        let t0 = ts("2025-06-01T10:00:00Z");
        let running = apply(p, started(&simple("Never", json!({})), AT, t0));
        // Still running before run-seconds have passed.
        assert_eq!(
            plan(&running, &b, ts("2025-06-01T10:00:02Z")),
            Plan::Wait(Some(Duration::from_secs(3)))
        );
        let t1 = ts("2025-06-01T10:00:05Z");
        assert_eq!(plan(&running, &b, t1), Plan::Exit(3));
        let s = exited(&running, 3, t1);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["phase"], "Failed");
        let term = &v["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(term["exitCode"], 3);
        assert_eq!(term["reason"], "Error");
        assert_eq!(term["startedAt"], "2025-06-01T10:00:00Z");
        assert_eq!(term["finishedAt"], "2025-06-01T10:00:05Z");
        assert_eq!(
            term["containerID"],
            v["containerStatuses"][0]["containerID"]
        );
        assert_eq!(v["containerStatuses"][0]["ready"], false);
        assert_eq!(condition(&s, "Ready").status, "False");
        assert_eq!(condition(&s, "Ready").reason.as_deref(), Some("PodFailed"));
        assert_eq!(condition(&s, "PodReadyToStartContainers").status, "False");
        let failed = apply(running, s);
        assert_eq!(observe(&failed), PodState::Terminal);
        assert_eq!(plan(&failed, &b, t1), Plan::Wait(None));

        // Exit 0 succeeds.
        let p = simple("Never", json!({EXIT_CODE_ANNOTATION: "0"}));
        let running = apply(p.clone(), started(&p, AT, t0));
        let b = behaviour(&p).unwrap();
        assert_eq!(plan(&running, &b, t0), Plan::Exit(0));
        let s = exited(&running, 0, t0);
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(
            condition(&s, "Ready").reason.as_deref(),
            Some("PodCompleted")
        );
        assert_eq!(
            condition(&s, "Initialized").reason.as_deref(),
            Some("PodCompleted")
        );
        let term =
            &serde_json::to_value(&s).unwrap()["containerStatuses"][1]["state"]["terminated"];
        assert_eq!(term["reason"], "Completed");
    }

    #[test]
    fn failures_restart_after_a_backoff_under_on_failure_and_always() {
        let p = simple("OnFailure", json!({EXIT_CODE_ANNOTATION: "1"}));
        let b = behaviour(&p).unwrap();
        let t0 = ts("2025-06-01T10:00:00Z");
        let running = apply(p.clone(), started(&p, AT, t0));
        let s = exited(&running, 1, t0);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let ready = condition(&s, "Ready");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [app side]")
        );
        let crashed = apply(running, s);
        assert_eq!(
            observe(&crashed),
            PodState::Exited {
                at: t0,
                exit_code: 1,
                restarts: 0
            }
        );
        assert_eq!(
            plan(&crashed, &b, t0),
            Plan::Wait(Some(Duration::from_secs(1)))
        );
        let t1 = ts("2025-06-01T10:00:01Z");
        assert_eq!(plan(&crashed, &b, t1), Plan::Restart);
        let s = restarted(&crashed, t1);
        let v = serde_json::to_value(&s).unwrap();
        let app = &v["containerStatuses"][0];
        assert_eq!(app["restartCount"], 1);
        assert_eq!(app["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(app["state"]["running"]["startedAt"], "2025-06-01T10:00:01Z");
        assert_ne!(
            app["containerID"],
            app["lastState"]["terminated"]["containerID"]
        );
        assert_eq!(condition(&s, "Ready").status, "True");
        let again = apply(crashed, s);
        assert_eq!(observe(&again), PodState::Running { since: t1 });
        // The next back-off is longer.
        let crashed = apply(again.clone(), exited(&again, 1, t1));
        assert_eq!(
            plan(&crashed, &b, t1),
            Plan::Wait(Some(Duration::from_secs(2)))
        );

        // OnFailure with exit 0 succeeds; Always restarts even then.
        let s = exited(&again, 0, t1);
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let p = simple("Always", json!({EXIT_CODE_ANNOTATION: "0"}));
        let running = apply(p.clone(), started(&p, AT, t0));
        assert_eq!(exited(&running, 0, t0).phase.as_deref(), Some("Running"));
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn bad_annotations_are_reported() {
        let p = simple("Never", json!({EXIT_CODE_ANNOTATION: "x"}));
        assert!(behaviour(&p).unwrap_err().contains("exit-code"));
        let p = simple(
            "Never",
            json!({EXIT_CODE_ANNOTATION: "0", RUN_SECONDS_ANNOTATION: "-1"}),
        );
        assert!(behaviour(&p).unwrap_err().contains("run-seconds"));
        let p = simple(
            "Never",
            json!({EXIT_CODE_ANNOTATION: "0", RUN_SECONDS_ANNOTATION: "1.5"}),
        );
        assert_eq!(behaviour(&p).unwrap().run_for, Duration::from_millis(1500));
        assert_eq!(
            behaviour(&simple("Never", json!({}))).unwrap(),
            Behaviour::default()
        );
    }
}
