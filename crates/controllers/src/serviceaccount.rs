//! The serviceaccount controller and the root-ca-cert-publisher, in one loop over
//! namespaces: every namespace that is not terminating gets a `default` ServiceAccount and a
//! `kube-root-ca.crt` ConfigMap whose `ca.crt` is the cluster CA, each created again when it
//! is deleted (and the ConfigMap put back when it is changed), as upstream's
//! `serviceaccount-controller` and `root-ca-cert-publisher` do.
//!
//! Where the CA comes from: [`crate::Config::root_ca`], which `rkube server` and `rkube
//! controller-manager` fill from the kubeconfig the controllers use
//! ([`root_ca_from_kubeconfig`]: its `certificate-authority-data`, or the file its
//! `certificate-authority` names). Without it no ConfigMap is published.
//!
//! Start at [`run`]: a kube-runtime `Controller` over namespaces that also watches the
//! `default` ServiceAccounts and the `kube-root-ca.crt` ConfigMaps (by field selector), so a
//! deletion or change triggers the namespace's reconcile. What to write comes from pure
//! functions ([`desired_service_account`], [`desired_root_ca`], [`root_ca_outdated`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tracing::Instrument;

use crate::context::{Context, Stop, stopped};

/// Name of the ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Name of the ConfigMap holding the cluster CA.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// Key of the CA bundle in [`ROOT_CA_CONFIGMAP`].
pub const ROOT_CA_KEY: &str = "ca.crt";
/// Annotation upstream puts on [`ROOT_CA_CONFIGMAP`].
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// Its value.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// What a reconcile can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the ServiceAccount.
    #[error("cannot ensure serviceaccount {namespace}/default")]
    ServiceAccount {
        /// The namespace.
        namespace: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// Reading or writing the ConfigMap.
    #[error("cannot ensure configmap {namespace}/kube-root-ca.crt")]
    RootCa {
        /// The namespace.
        namespace: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether the namespace is going away (no new objects are made in it).
pub fn is_terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// The `default` ServiceAccount of `namespace`.
pub fn desired_service_account(namespace: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT_SERVICE_ACCOUNT.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The `kube-root-ca.crt` ConfigMap of `namespace` carrying `ca`.
pub fn desired_root_ca(namespace: &str, ca: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CA_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            annotations: Some(BTreeMap::from([(
                DESCRIPTION_ANNOTATION.to_string(),
                DESCRIPTION.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(ROOT_CA_KEY.to_string(), ca.to_string())])),
        ..Default::default()
    }
}

/// Whether an existing ConfigMap must be put back: its data is not exactly `ca.crt: ca`, or
/// the description annotation is missing or changed.
pub fn root_ca_outdated(cm: &ConfigMap, ca: &str) -> bool {
    let data_ok = cm
        .data
        .as_ref()
        .is_some_and(|d| d.len() == 1 && d.get(ROOT_CA_KEY).map(String::as_str) == Some(ca))
        && cm.binary_data.as_ref().is_none_or(|b| b.is_empty());
    let annotation_ok = cm
        .annotations()
        .get(DESCRIPTION_ANNOTATION)
        .map(String::as_str)
        == Some(DESCRIPTION);
    !(data_ok && annotation_ok)
}

/// The CA (PEM) of the kubeconfig at `path`'s current cluster: its
/// `certificate-authority-data`, else the file `certificate-authority` names. `None` when
/// there is none (or it cannot be read: logged).
pub fn root_ca_from_kubeconfig(path: &Path) -> Option<String> {
    let kubeconfig = match kube::config::Kubeconfig::read_from(path) {
        Ok(k) => k,
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "cannot read the kubeconfig for the cluster CA");
            return None;
        }
    };
    let context_name = kubeconfig.current_context.clone()?;
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)?
        .context
        .as_ref()?
        .cluster
        .clone();
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)?
        .cluster
        .as_ref()?;
    if let Some(data) = &cluster.certificate_authority_data {
        return match base64::engine::general_purpose::STANDARD.decode(data.trim()) {
            Ok(bytes) => String::from_utf8(bytes).ok(),
            Err(err) => {
                tracing::warn!(%err, "certificate-authority-data is not base64");
                None
            }
        };
    }
    let file = cluster.certificate_authority.as_ref()?;
    let file = match path.parent() {
        Some(dir) if Path::new(file).is_relative() => dir.join(file),
        _ => file.into(),
    };
    std::fs::read_to_string(&file)
        .inspect_err(
            |err| tracing::warn!(path = %file.display(), %err, "cannot read the cluster CA"),
        )
        .ok()
}

/// Runs the controller until `stop` turns true.
pub async fn run(ctx: Arc<Context>, stop: Stop) {
    let client = ctx.client.clone();
    if ctx.config.root_ca.is_none() {
        tracing::warn!("no cluster CA known: kube-root-ca.crt ConfigMaps are not published");
    }
    let by_namespace = |obj_ns: Option<String>| obj_ns.map(|ns| ObjectRef::<Namespace>::new(&ns));
    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={DEFAULT_SERVICE_ACCOUNT}")),
        move |sa| by_namespace(sa.namespace()),
    )
    .watches(
        Api::<ConfigMap>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_CONFIGMAP}")),
        move |cm| by_namespace(cm.namespace()),
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency))
    .graceful_shutdown_on(stopped(stop))
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {})
    .await;
}

/// Ensures the namespace's `default` ServiceAccount and `kube-root-ca.crt` ConfigMap.
async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action> {
    let name = ns.name_any();
    let span = tracing::info_span!("reconcile", object.ref = %format!("namespace/{name}"), object.reason = "sync");
    async {
        if is_terminating(&ns) {
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
        ensure_service_account(&ctx, &name).await?;
        if let Some(ca) = &ctx.config.root_ca {
            ensure_root_ca(&ctx, &name, ca).await?;
        }
        Ok(Action::requeue(Duration::from_secs(300)))
    }
    .instrument(span)
    .await
}

/// Uncached check, then create; AlreadyExists and a namespace that started terminating in
/// the meantime are fine.
async fn ensure_service_account(ctx: &Context, namespace: &str) -> Result<()> {
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let err = |source| Error::ServiceAccount {
        namespace: namespace.into(),
        source,
    };
    if api
        .get_opt(DEFAULT_SERVICE_ACCOUNT)
        .await
        .map_err(err)?
        .is_some()
    {
        return Ok(());
    }
    match api
        .create(&PostParams::default(), &desired_service_account(namespace))
        .await
    {
        Ok(_) => {
            tracing::info!(namespace, "created the default service account");
            Ok(())
        }
        Err(e) if benign(&e) => Ok(()),
        Err(e) => {
            tracing::warn!(namespace, err = ?e, "cannot create the default service account");
            Err(err(e))
        }
    }
}

async fn ensure_root_ca(ctx: &Context, namespace: &str, ca: &str) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let err = |source| Error::RootCa {
        namespace: namespace.into(),
        source,
    };
    let desired = desired_root_ca(namespace, ca);
    match api.get_opt(ROOT_CA_CONFIGMAP).await.map_err(err)? {
        None => match api.create(&PostParams::default(), &desired).await {
            Ok(_) => {
                tracing::info!(namespace, "published kube-root-ca.crt");
                Ok(())
            }
            Err(e) if benign(&e) => Ok(()),
            Err(e) => {
                tracing::warn!(namespace, err = ?e, "cannot create kube-root-ca.crt");
                Err(err(e))
            }
        },
        Some(current) if root_ca_outdated(&current, ca) => {
            let mut new = current.clone();
            new.data = desired.data;
            new.binary_data = None;
            new.annotations_mut()
                .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
            match api
                .replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &new)
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace, "put back kube-root-ca.crt");
                    Ok(())
                }
                Err(e) => {
                    tracing::debug!(namespace, err = ?e, "cannot update kube-root-ca.crt");
                    Err(err(e))
                }
            }
        }
        Some(_) => Ok(()),
    }
}

/// Errors that mean there is nothing to do: the object exists, or the namespace is being
/// deleted (upstream's "forbidden: ... because it is being terminated").
fn benign(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(s) => {
            s.code == 409 || (s.code == 403 && s.message.contains("being terminated"))
        }
        _ => false,
    }
}

fn error_policy(ns: Arc<Namespace>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(namespace = %ns.name_any(), err = ?err, "serviceaccount sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;

    #[test]
    fn terminating_namespaces_are_skipped() {
        let mut ns = Namespace::default();
        assert!(!is_terminating(&ns));
        ns.status = Some(NamespaceStatus {
            phase: Some("Terminating".into()),
            ..Default::default()
        });
        assert!(is_terminating(&ns));
        let mut ns = Namespace::default();
        ns.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert!(is_terminating(&ns));
    }

    #[test]
    fn desired_objects() {
        let sa = desired_service_account("team-a");
        assert_eq!(sa.metadata.name.as_deref(), Some("default"));
        assert_eq!(sa.metadata.namespace.as_deref(), Some("team-a"));
        let cm = desired_root_ca("team-a", "PEM");
        assert_eq!(cm.metadata.name.as_deref(), Some("kube-root-ca.crt"));
        assert_eq!(cm.data.as_ref().unwrap()["ca.crt"], "PEM");
        assert!(!root_ca_outdated(&cm, "PEM"));
    }

    #[test]
    fn changed_root_ca_is_put_back() {
        let good = desired_root_ca("a", "PEM");
        assert!(root_ca_outdated(&good, "NEW"));
        let mut extra = good.clone();
        extra.data.as_mut().unwrap().insert("x".into(), "y".into());
        assert!(root_ca_outdated(&extra, "PEM"));
        let mut bare = good.clone();
        bare.metadata.annotations = None;
        assert!(root_ca_outdated(&bare, "PEM"));
        let mut empty = good;
        empty.data = None;
        assert!(root_ca_outdated(&empty, "PEM"));
    }

    #[test]
    fn root_ca_comes_from_the_kubeconfig() {
        let dir = std::env::temp_dir().join(format!("rkube-sa-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n";
        let data = base64::engine::general_purpose::STANDARD.encode(pem);
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:1\n    certificate-authority-data: {data}\n- name: f\n  cluster:\n    server: https://127.0.0.1:1\n    certificate-authority: ca.pem\ncontexts:\n- name: c\n  context:\n    cluster: k\n    user: u\n- name: d\n  context:\n    cluster: f\n    user: u\nusers:\n- name: u\n  user: {{}}\n"
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, &kubeconfig).unwrap();
        assert_eq!(root_ca_from_kubeconfig(&path).as_deref(), Some(pem));
        // A CA given as a file, relative to the kubeconfig.
        std::fs::write(dir.join("ca.pem"), "FILE-PEM").unwrap();
        std::fs::write(
            &path,
            kubeconfig.replace("current-context: c", "current-context: d"),
        )
        .unwrap();
        assert_eq!(root_ca_from_kubeconfig(&path).as_deref(), Some("FILE-PEM"));
        assert_eq!(root_ca_from_kubeconfig(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
