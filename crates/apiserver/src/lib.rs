//! rkube's API server: serves the Kubernetes REST API over HTTPS from a [`rkube_store::Store`].

pub mod kubeconfig;
pub mod pki;
pub mod tls;
pub mod cache;
pub mod meta;
pub mod request;
pub mod status;
pub mod patch;
