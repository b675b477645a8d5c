//! Pod status as the agent reports it, computed by pure functions from the pod and what the
//! worker knows ([`PodWorker`]): phase (upstream's `getPhase`), conditions, container
//! statuses, addresses, start time and QoS class.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodIP, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::lifecycle::{CState, ContainerRecord, Lifecycle, PodWorker, Termination};

/// Pod phase names.
pub mod phase {
    /// Not all containers started.
    pub const PENDING: &str = "Pending";
    /// At least one container running or restarting.
    pub const RUNNING: &str = "Running";
    /// All containers exited 0 and will not restart.
    pub const SUCCEEDED: &str = "Succeeded";
    /// All containers exited, at least one failed, none restarts.
    pub const FAILED: &str = "Failed";
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn terminated(t: &Termination) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(time),
        finished_at: Some(time(t.finished_at)),
        container_id: Some(format!("containerd://{}", t.container_id)),
        signal: None,
    }
}

/// One container's status.
pub fn container_status(c: &ContainerRecord) -> ContainerStatus {
    let state = match &c.state {
        CState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        CState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..ContainerState::default()
        },
        CState::Terminated(t) => ContainerState {
            terminated: Some(terminated(t)),
            ..ContainerState::default()
        },
    };
    let running = matches!(c.state, CState::Running { .. });
    let container_id = match &c.state {
        CState::Terminated(t) => Some(t.container_id.clone()),
        _ => c.id.clone(),
    };
    ContainerStatus {
        name: c.name.clone(),
        state: Some(state),
        last_state: Some(
            c.last_termination
                .as_ref()
                .map(|t| ContainerState {
                    terminated: Some(terminated(t)),
                    ..ContainerState::default()
                })
                .unwrap_or_default(),
        ),
        ready: running,
        started: Some(running),
        restart_count: c.restart_count,
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: container_id.map(|id| format!("containerd://{id}")),
        ..ContainerStatus::default()
    }
}

/// Upstream's `getPhase`, from the init and regular container records.
pub fn pod_phase(
    restart_policy: &str,
    init: &[ContainerRecord],
    containers: &[ContainerRecord],
) -> &'static str {
    // Init containers: any not yet succeeded keeps the pod Pending, unless one failed for
    // good (restartPolicy Never).
    for c in init {
        match &c.state {
            CState::Terminated(t) if t.exit_code == 0 => {}
            CState::Terminated(_) if restart_policy == "Never" => return phase::FAILED,
            _ => return phase::PENDING,
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            CState::Running { .. } => running += 1,
            CState::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            CState::Waiting { .. } => {
                if c.last_termination.is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if waiting > 0 {
        return phase::PENDING;
    }
    if running > 0 {
        return phase::RUNNING;
    }
    if stopped > 0 {
        return match restart_policy {
            "Always" => phase::RUNNING,
            "OnFailure" if stopped == succeeded => phase::SUCCEEDED,
            "OnFailure" => phase::RUNNING,
            _ if stopped == succeeded => phase::SUCCEEDED,
            _ => phase::FAILED,
        };
    }
    phase::PENDING
}

fn has_any(r: &Option<ResourceRequirements>, key: &str) -> (bool, bool) {
    let r = r.as_ref();
    let req = r
        .and_then(|r| r.requests.as_ref())
        .is_some_and(|m| m.contains_key(key));
    let lim = r
        .and_then(|r| r.limits.as_ref())
        .is_some_and(|m| m.contains_key(key));
    (req, lim)
}

/// The QoS class (upstream's `GetPodQOS`, simplified to cpu and memory).
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        for key in ["cpu", "memory"] {
            let (req, lim) = has_any(&c.resources, key);
            any |= req || lim;
            let r = c.resources.as_ref();
            let request = r.and_then(|r| r.requests.as_ref()).and_then(|m| m.get(key));
            let limit = r.and_then(|r| r.limits.as_ref()).and_then(|m| m.get(key));
            match (request, limit) {
                (_, None) => guaranteed = false,
                (Some(a), Some(b)) if a != b => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn condition(
    old: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status does not change.
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .or(Some(time(now)));
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        last_transition_time,
        ..PodCondition::default()
    }
}

/// The pod's status.
pub fn pod_status(pod: &Pod, w: &PodWorker, host_ip: &str, now: Timestamp) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let old = pod.status.clone().unwrap_or_default();
    let old_conditions = old.conditions.clone().unwrap_or_default();
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let phase = match &w.lifecycle {
        // A terminal phase never changes again.
        _ if matches!(old.phase.as_deref(), Some(phase::SUCCEEDED | phase::FAILED)) => {
            old.phase.clone().unwrap_or_default()
        }
        Lifecycle::Pending => phase::PENDING.to_string(),
        _ => pod_phase(restart_policy, &w.init, &w.containers).to_string(),
    };
    let sandbox_ready = matches!(w.lifecycle, Lifecycle::Running);
    let initialized = w
        .init
        .iter()
        .all(|c| matches!(&c.state, CState::Terminated(t) if t.exit_code == 0));
    let containers_ready = sandbox_ready
        && !w.containers.is_empty()
        && w.containers
            .iter()
            .all(|c| matches!(c.state, CState::Running { .. }));
    let not_ready_reason = if phase == phase::SUCCEEDED {
        Some("PodCompleted")
    } else if containers_ready {
        None
    } else {
        Some("ContainersNotReady")
    };
    let mut conditions = vec![
        condition(
            &old_conditions,
            "PodReadyToStartContainers",
            sandbox_ready,
            None,
            now,
        ),
        condition(
            &old_conditions,
            "Initialized",
            initialized,
            (!initialized).then_some("ContainersNotInitialized"),
            now,
        ),
        condition(
            &old_conditions,
            "Ready",
            containers_ready,
            not_ready_reason,
            now,
        ),
        condition(
            &old_conditions,
            "ContainersReady",
            containers_ready,
            not_ready_reason,
            now,
        ),
    ];
    let scheduled = old_conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .cloned()
        .unwrap_or_else(|| condition(&[], "PodScheduled", true, None, now));
    conditions.push(scheduled);
    let ips: Vec<PodIP> = w.pod_ip.iter().map(|ip| PodIP { ip: ip.clone() }).collect();
    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        host_ip: Some(host_ip.into()),
        host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP {
            ip: host_ip.into(),
        }]),
        pod_ip: w.pod_ip.clone(),
        pod_ips: (!ips.is_empty()).then_some(ips),
        start_time: old.start_time.clone().or(w.start_time.map(time)),
        qos_class: Some(qos_class(pod).into()),
        init_container_statuses: (!w.init.is_empty())
            .then(|| w.init.iter().map(container_status).collect()),
        container_statuses: Some(w.containers.iter().map(container_status).collect()),
        message: w.sandbox_error.clone(),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::lifecycle::ContainerRecord;

    fn rec(state: CState) -> ContainerRecord {
        ContainerRecord {
            state,
            ..ContainerRecord::new("c", "localhost/busybox:1")
        }
    }

    fn term(code: i32) -> CState {
        CState::Terminated(Termination {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: None,
            finished_at: Timestamp::UNIX_EPOCH,
            container_id: "x".into(),
        })
    }

    fn waiting(reason: &str) -> CState {
        CState::Waiting {
            reason: reason.into(),
            message: None,
        }
    }

    #[test]
    fn phase_follows_upstream() {
        let running = || {
            rec(CState::Running {
                started_at: Timestamp::UNIX_EPOCH,
            })
        };
        assert_eq!(pod_phase("Always", &[], &[running()]), phase::RUNNING);
        assert_eq!(
            pod_phase("Always", &[], &[rec(waiting("ContainerCreating"))]),
            phase::PENDING
        );
        assert_eq!(pod_phase("Never", &[], &[rec(term(0))]), phase::SUCCEEDED);
        assert_eq!(pod_phase("Never", &[], &[rec(term(1))]), phase::FAILED);
        assert_eq!(pod_phase("OnFailure", &[], &[rec(term(1))]), phase::RUNNING);
        assert_eq!(
            pod_phase("OnFailure", &[], &[rec(term(0))]),
            phase::SUCCEEDED
        );
        assert_eq!(pod_phase("Always", &[], &[rec(term(0))]), phase::RUNNING);
        // CrashLoopBackOff (waiting after a termination) counts as stopped, not waiting.
        let mut crash = rec(waiting("CrashLoopBackOff"));
        crash.last_termination = match term(1) {
            CState::Terminated(t) => Some(t),
            _ => None,
        };
        assert_eq!(pod_phase("Always", &[], &[crash]), phase::RUNNING);
        // Init containers.
        assert_eq!(
            pod_phase("Always", &[running()], &[rec(waiting("PodInitializing"))]),
            phase::PENDING
        );
        assert_eq!(
            pod_phase("Never", &[rec(term(2))], &[rec(waiting("PodInitializing"))]),
            phase::FAILED
        );
        assert_eq!(
            pod_phase("Always", &[rec(term(0))], &[running()]),
            phase::RUNNING
        );
    }

    #[test]
    fn qos_classes() {
        let pod = |resources: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "i", "resources": resources}]}
            }))
            .unwrap()
        };
        assert_eq!(qos_class(&pod(serde_json::json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(serde_json::json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&pod(
                serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}})
            )),
            "Guaranteed"
        );
    }
}
