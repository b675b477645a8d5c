//! Clients from kubeconfig files, and the identity components use for leases and events.

use std::path::Path;

use crate::{Error, Result};

/// A client from the kubeconfig at `path`, or from `$KUBECONFIG` / `~/.kube/config` /
/// in-cluster configuration when it is `None`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client> {
    let shown = kubeconfig.map_or_else(|| "(default)".into(), |p| p.display().to_string());
    let wrap = |source: Box<dyn std::error::Error + Send + Sync>| Error::Kubeconfig {
        path: shown.clone(),
        source,
    };
    let config = match kubeconfig {
        Some(file) => {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(file).map_err(|e| wrap(e.into()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| wrap(e.into()))?
        }
        None => kube::Config::infer().await.map_err(|e| wrap(e.into()))?,
    };
    kube::Client::try_from(config).map_err(|e| wrap(e.into()))
}

/// A client for the cluster of the kubeconfig at `path` (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    client(Some(path)).await
}

/// `hostname_uuid`, as upstream's leader election identity.
pub fn default_identity() -> String {
    format!("{}_{}", hostname(), uuid::Uuid::new_v4())
}

/// This machine's hostname (`localhost` when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
