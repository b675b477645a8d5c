//! SchedulingGates: a pod with `spec.schedulingGates` waits outside the active queue until
//! an update removes every gate.

use std::borrow::Cow;

use crate::framework::{Code, Plugin, PodInfo, PreEnqueuePlugin, Status};

/// The plugin name.
pub const NAME: &str = super::names::SCHEDULING_GATES;

/// The SchedulingGates plugin.
#[derive(Debug, Default)]
pub struct SchedulingGates;

/// The gates still on the pod (empty: the pod may be scheduled).
pub fn gates(pod: &PodInfo) -> Vec<&str> {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .into_iter()
        .flatten()
        .map(|g| g.name.as_str())
        .collect()
}

impl Plugin for SchedulingGates {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_enqueue(&self) -> Option<&dyn PreEnqueuePlugin> {
        Some(self)
    }
}

impl PreEnqueuePlugin for SchedulingGates {
    fn pre_enqueue(&self, pod: &PodInfo) -> Status {
        let g = gates(pod);
        if g.is_empty() {
            return Status::success();
        }
        Status::new(
            Code::UnschedulableAndUnresolvable,
            Cow::Owned(format!("waiting for scheduling gates: [{}]", g.join(" "))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pod;

    #[test]
    fn gated_pods_wait() {
        assert!(SchedulingGates.pre_enqueue(&pod("p").info()).is_success());
        let s = SchedulingGates.pre_enqueue(&pod("p").gate("a").gate("b").info());
        assert_eq!(s.message(), "waiting for scheduling gates: [a b]");
    }
}
