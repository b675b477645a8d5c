//! The scheduler's errors.

/// Errors of the scheduler's API calls and tasks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `POST pods/{name}/binding` failed.
    #[error("cannot bind pod {pod} to node {node}")]
    Bind {
        /// `namespace/name`.
        pod: String,
        /// The chosen node.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Patching a pod's status failed.
    #[error("cannot update the status of pod {pod}")]
    PatchStatus {
        /// `namespace/name`.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting a preemption victim failed.
    #[error("cannot delete pod {pod}")]
    DeletePod {
        /// `namespace/name`.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// An API call took too long.
    #[error("{what} timed out")]
    Timeout {
        /// The call.
        what: String,
    },
    /// A task of the scheduler stopped unexpectedly.
    #[error("scheduler task {task} failed")]
    Task {
        /// Which task.
        task: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Error {
    fn api(&self) -> Option<&kube::Error> {
        match self {
            Self::Bind { source, .. }
            | Self::PatchStatus { source, .. }
            | Self::DeletePod { source, .. } => Some(source),
            Self::Task { .. } | Self::Timeout { .. } => None,
        }
    }

    /// The HTTP status code the API server answered with, if it answered.
    pub fn status_code(&self) -> Option<u16> {
        match self.api()? {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }

    /// The API server's message, or the error chain.
    pub fn message(&self) -> String {
        match self.api() {
            Some(kube::Error::Api(status)) => status.message.clone(),
            Some(e) => e.to_string(),
            None => self.to_string(),
        }
    }
}

/// The scheduler's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
