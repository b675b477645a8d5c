//! rkube's API model: what resources exist and how they are described to clients.
//! No I/O and no async here (like kube-core): the API server builds on it.
//!
//! - [`registry`](mod@registry): the static table of built-in resources (group, version,
//!   kind, plural, scope, verbs, short names, categories, subresources) and its lookups.
//! - [`discovery`]: the discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`, and
//!   the aggregated `apidiscovery.k8s.io` format) built from a registry.
//! - [`schema`]: the OpenAPI schemas of the served kinds (`/openapi/v2`, `/openapi/v3`).

pub mod discovery;
pub mod registry;
pub mod schema;

pub use discovery::{AggregatedVersion, DiscoveryFormat};
pub use registry::{GroupInfo, Registry, ResourceInfo, Scope, Subresource, Verb, registry};
pub mod selector;
pub mod typed;
