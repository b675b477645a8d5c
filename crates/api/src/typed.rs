//! Typed decoding of objects: every built-in kind goes through its `k8s-openapi` type.
//!
//! [`normalize`] decodes a JSON object into the Rust type of its kind and encodes it back.
//! That checks every field's type (a string where a number belongs is refused, as upstream's
//! decoder does), drops fields the type does not know, and reports those fields so that the
//! API server can apply `fieldValidation` (Strict: refuse, Warn: warn, Ignore: drop silently).

use serde_json::Value;

/// The outcome of [`normalize`].
#[derive(Debug)]
pub struct Normalized {
    /// The object as its type encodes it.
    pub object: Value,
    /// Paths of fields the type does not know (`spec.foo`, `spec.containers[0].bar`).
    pub unknown_fields: Vec<String>,
}

macro_rules! typed_kinds {
    ($($group:literal $version:literal $kind:literal => $ty:ty;)*) => {
        /// Decodes `object` as `group/version, kind` and encodes it back. Returns `None` for a
        /// kind without a typed decoder, `Some(Err(message))` when the object does not decode.
        pub fn normalize(group: &str, version: &str, kind: &str, object: &Value) -> Option<Result<Normalized, String>> {
            match (group, version, kind) {
                $(($group, $version, $kind) => Some(round_trip::<$ty>(object)),)*
                _ => None,
            }
        }
    };
}

typed_kinds! {
    "" "v1" "Binding" => k8s_openapi::api::core::v1::Binding;
    "" "v1" "ComponentStatus" => k8s_openapi::api::core::v1::ComponentStatus;
    "" "v1" "ConfigMap" => k8s_openapi::api::core::v1::ConfigMap;
    "" "v1" "Endpoints" => k8s_openapi::api::core::v1::Endpoints;
    "" "v1" "Event" => k8s_openapi::api::core::v1::Event;
    "" "v1" "LimitRange" => k8s_openapi::api::core::v1::LimitRange;
    "" "v1" "Namespace" => k8s_openapi::api::core::v1::Namespace;
    "" "v1" "Node" => k8s_openapi::api::core::v1::Node;
    "" "v1" "PersistentVolume" => k8s_openapi::api::core::v1::PersistentVolume;
    "" "v1" "PersistentVolumeClaim" => k8s_openapi::api::core::v1::PersistentVolumeClaim;
    "" "v1" "Pod" => k8s_openapi::api::core::v1::Pod;
    "" "v1" "PodTemplate" => k8s_openapi::api::core::v1::PodTemplate;
    "" "v1" "ReplicationController" => k8s_openapi::api::core::v1::ReplicationController;
    "" "v1" "ResourceQuota" => k8s_openapi::api::core::v1::ResourceQuota;
    "" "v1" "Secret" => k8s_openapi::api::core::v1::Secret;
    "" "v1" "Service" => k8s_openapi::api::core::v1::Service;
    "" "v1" "ServiceAccount" => k8s_openapi::api::core::v1::ServiceAccount;
    "apps" "v1" "ControllerRevision" => k8s_openapi::api::apps::v1::ControllerRevision;
    "apps" "v1" "DaemonSet" => k8s_openapi::api::apps::v1::DaemonSet;
    "apps" "v1" "Deployment" => k8s_openapi::api::apps::v1::Deployment;
    "apps" "v1" "ReplicaSet" => k8s_openapi::api::apps::v1::ReplicaSet;
    "apps" "v1" "StatefulSet" => k8s_openapi::api::apps::v1::StatefulSet;
    "autoscaling" "v1" "HorizontalPodAutoscaler" => k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
    "autoscaling" "v1" "Scale" => k8s_openapi::api::autoscaling::v1::Scale;
    "autoscaling" "v2" "HorizontalPodAutoscaler" => k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    "batch" "v1" "CronJob" => k8s_openapi::api::batch::v1::CronJob;
    "batch" "v1" "Job" => k8s_openapi::api::batch::v1::Job;
    "certificates.k8s.io" "v1" "CertificateSigningRequest" => k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    "coordination.k8s.io" "v1" "Lease" => k8s_openapi::api::coordination::v1::Lease;
    "discovery.k8s.io" "v1" "EndpointSlice" => k8s_openapi::api::discovery::v1::EndpointSlice;
    "events.k8s.io" "v1" "Event" => k8s_openapi::api::events::v1::Event;
    "networking.k8s.io" "v1" "Ingress" => k8s_openapi::api::networking::v1::Ingress;
    "networking.k8s.io" "v1" "IngressClass" => k8s_openapi::api::networking::v1::IngressClass;
    "networking.k8s.io" "v1" "NetworkPolicy" => k8s_openapi::api::networking::v1::NetworkPolicy;
    "policy" "v1" "Eviction" => k8s_openapi::api::policy::v1::Eviction;
    "policy" "v1" "PodDisruptionBudget" => k8s_openapi::api::policy::v1::PodDisruptionBudget;
    "rbac.authorization.k8s.io" "v1" "ClusterRole" => k8s_openapi::api::rbac::v1::ClusterRole;
    "rbac.authorization.k8s.io" "v1" "ClusterRoleBinding" => k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    "rbac.authorization.k8s.io" "v1" "Role" => k8s_openapi::api::rbac::v1::Role;
    "rbac.authorization.k8s.io" "v1" "RoleBinding" => k8s_openapi::api::rbac::v1::RoleBinding;
    "scheduling.k8s.io" "v1" "PriorityClass" => k8s_openapi::api::scheduling::v1::PriorityClass;
    "storage.k8s.io" "v1" "CSIDriver" => k8s_openapi::api::storage::v1::CSIDriver;
    "storage.k8s.io" "v1" "CSINode" => k8s_openapi::api::storage::v1::CSINode;
    "storage.k8s.io" "v1" "StorageClass" => k8s_openapi::api::storage::v1::StorageClass;
    "storage.k8s.io" "v1" "VolumeAttachment" => k8s_openapi::api::storage::v1::VolumeAttachment;
    "authentication.k8s.io" "v1" "SelfSubjectReview" => k8s_openapi::api::authentication::v1::SelfSubjectReview;
    "authentication.k8s.io" "v1" "TokenReview" => k8s_openapi::api::authentication::v1::TokenReview;
    "authentication.k8s.io" "v1" "TokenRequest" => k8s_openapi::api::authentication::v1::TokenRequest;
    "authorization.k8s.io" "v1" "SelfSubjectAccessReview" => k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    "authorization.k8s.io" "v1" "SelfSubjectRulesReview" => k8s_openapi::api::authorization::v1::SelfSubjectRulesReview;
    "authorization.k8s.io" "v1" "SubjectAccessReview" => k8s_openapi::api::authorization::v1::SubjectAccessReview;
}

fn round_trip<T>(object: &Value) -> Result<Normalized, String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    let encoded = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut unknown_fields = Vec::new();
    find_unknown(object, &encoded, &mut String::new(), &mut unknown_fields);
    Ok(Normalized {
        object: encoded,
        unknown_fields,
    })
}

/// Collects the paths of fields present (and not null) in `input` but absent from `typed`.
fn find_unknown(input: &Value, typed: &Value, path: &mut String, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                match t.get(k) {
                    Some(tv) => find_unknown(v, tv, path, out),
                    None if !v.is_null() && !is_empty_container(v) => out.push(path.clone()),
                    None => {}
                }
                path.truncate(len);
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{n}]"));
                find_unknown(iv, tv, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// `{}` and `[]` for optional fields encode as absent; they are not unknown fields.
fn is_empty_container(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.is_empty()) || matches!(v, Value::Array(a) if a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_found_and_dropped() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolcy": "Always"}]}
        });
        let n = normalize("", "v1", "Pod", &pod).unwrap().unwrap();
        assert_eq!(
            n.unknown_fields,
            vec!["metadata.bogus", "spec.containers[0].imagePullPolcy"]
        );
        assert!(
            n.object["spec"]["containers"][0]
                .get("imagePullPolcy")
                .is_none()
        );
        assert_eq!(n.object["spec"]["containers"][0]["image"], "i");
    }

    #[test]
    fn wrong_types_are_refused() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": 5}});
        let err = normalize("", "v1", "ConfigMap", &cm).unwrap().unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn unknown_kinds_have_no_decoder() {
        assert!(normalize("example.com", "v1", "Widget", &json!({})).is_none());
    }
}
