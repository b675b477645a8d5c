//! rkube's API server: serves the Kubernetes REST API over HTTPS from a [`rkube_store::Store`].
//!
//! Start with [`server::start`]. A request flows: [`server`] (TLS, HTTP/1.1 and HTTP/2) →
//! [`authn`] (client certificate or bearer token) → [`handlers`] (routing, discovery, body
//! decoding, watch streams) → [`rest`] (generic storage with upstream metadata semantics,
//! per-kind rules in [`strategy`]) → the store; LIST and WATCH are served from the per-resource
//! [`cache`]. Errors are [`status::ApiError`]s, rendered as Kubernetes `Status` objects.

pub mod admission;
pub mod allocator;
pub mod apply;
pub mod authn;
pub mod cache;
pub mod compactor;
pub mod conversion;
pub mod defaults;
pub mod handlers;
pub mod kubeconfig;
pub mod meta;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod request;
pub mod rest;
pub mod server;
pub mod serviceaccount_token;
pub mod status;
pub mod strategy;
pub mod table;
pub mod tls;
