//! The result of running a plugin: a [`Code`] plus human-readable reasons, as upstream's
//! `framework.Status`. A success status carries no reasons and allocates nothing.

use std::borrow::Cow;
use std::fmt;

/// What a plugin's result means for the pod, with upstream's seven codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Code {
    /// The plugin ran and the pod may go on (to the next plugin, node, or extension point).
    #[default]
    Success,
    /// An internal error (not a property of the pod or node). The pod goes straight to the
    /// backoff queue and is retried after its backoff, whatever cluster events arrive.
    Error,
    /// The pod does not fit this node now. Preemption may help: the node is a preemption
    /// candidate. The pod waits in the unschedulable pool until an event the rejecting
    /// plugin registered for arrives.
    Unschedulable,
    /// The pod does not fit this node and preemption cannot change that (a taint, a label,
    /// a node name). Requeued like `Unschedulable`, but never a preemption candidate.
    UnschedulableAndUnresolvable,
    /// A Permit plugin wants the pod to wait (unused by the default profile).
    Wait,
    /// A PreFilter/PreScore plugin has nothing to do for this pod: its Filter/Score is
    /// skipped for the whole cycle.
    Skip,
    /// The pod waits for something outside the scheduler (not a failure of the pod); it is
    /// requeued only by an event, without backoff penalty.
    Pending,
}

/// A plugin's verdict: a code, the reasons shown to users (`Insufficient cpu`) and the
/// plugin that produced it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    code: Code,
    reasons: Vec<Cow<'static, str>>,
    plugin: &'static str,
}

impl Status {
    /// Success (no reasons; allocation-free).
    #[must_use]
    pub const fn success() -> Self {
        Self {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    /// A status with one reason.
    #[must_use]
    pub fn new(code: Code, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }

    /// A status with several reasons.
    #[must_use]
    pub fn with_reasons(code: Code, reasons: Vec<Cow<'static, str>>) -> Self {
        Self {
            code,
            reasons,
            plugin: "",
        }
    }

    /// `Skip`: the plugin has nothing to do in this cycle.
    #[must_use]
    pub const fn skip() -> Self {
        Self {
            code: Code::Skip,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    /// An internal error.
    #[must_use]
    pub fn error(message: impl fmt::Display) -> Self {
        Self::new(Code::Error, message.to_string())
    }

    /// Records which plugin produced this status (done by the framework).
    #[must_use]
    pub fn with_plugin(mut self, plugin: &'static str) -> Self {
        self.plugin = plugin;
        self
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The reasons.
    pub fn reasons(&self) -> &[Cow<'static, str>] {
        &self.reasons
    }

    /// The plugin that produced the status ("" when unknown).
    pub fn plugin(&self) -> &'static str {
        self.plugin
    }

    /// `Success`.
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    /// `Skip`.
    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }

    /// `Unschedulable` or `UnschedulableAndUnresolvable`.
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable | Code::Pending
        )
    }

    /// The reasons joined with ", " (upstream's `Message`).
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_is_empty_and_messages_join() {
        assert!(Status::success().is_success());
        assert!(Status::success().reasons().is_empty());
        let s = Status::with_reasons(
            Code::Unschedulable,
            vec!["Insufficient cpu".into(), "Insufficient memory".into()],
        )
        .with_plugin("NodeResourcesFit");
        assert_eq!(s.message(), "Insufficient cpu, Insufficient memory");
        assert!(s.is_rejected());
        assert_eq!(s.plugin(), "NodeResourcesFit");
    }
}
