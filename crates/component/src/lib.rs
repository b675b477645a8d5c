//! Plumbing every rkube API-client component needs (the scheduler, the controller
//! manager, the node agent): they talk to the API server only through kube-rs, like
//! upstream's components through client-go.
//!
//! - [`kubeconfig`]: a client from a kubeconfig file, and the `hostname_uuid` identity;
//! - [`leader`]: client-go style leader election on a `coordination.k8s.io/v1` Lease;
//! - [`events`]: a core/v1 Event recorder that folds repeats into counts.

pub mod events;
pub mod kubeconfig;
pub mod leader;

pub use events::{EventRecord, Recorder};
pub use kubeconfig::{client, client_from_kubeconfig, default_identity, hostname};
pub use leader::LeaderElectionConfig;

/// Errors of the shared plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the leader election lease failed.
    #[error("cannot use lease {lease}")]
    Lease {
        /// `namespace/name`.
        lease: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// No client could be built from the kubeconfig.
    #[error("cannot build an API client from kubeconfig {path}")]
    Kubeconfig {
        /// The file (`(default)` when inferred).
        path: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
