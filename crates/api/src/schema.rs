//! OpenAPI schemas of the served kinds, in the shape upstream's API server publishes them.
//!
//! The schemas come from `k8s-openapi`'s `schemars` implementations (one per type, with
//! upstream's descriptions and upstream's definition names such as `io.k8s.api.core.v1.Pod`),
//! and are reshaped for the document they go into ([`Dialect`]):
//!
//! - references point at `#/definitions/…` (Swagger 2.0, `/openapi/v2`) or
//!   `#/components/schemas/…` (OpenAPI 3, `/openapi/v3`); in OpenAPI 3 a reference with
//!   siblings (a field's own description) is wrapped in a one-element `allOf`, as upstream does;
//! - top-level kinds (and their lists) carry `x-kubernetes-group-version-kind`;
//! - `IntOrString` and `Quantity` get upstream's per-version shapes
//!   (`format: int-or-string`, `oneOf` in OpenAPI 3);
//! - list fields that strategic merge patch merges carry `x-kubernetes-patch-strategy` and
//!   `x-kubernetes-patch-merge-key` ([`PATCH_STRATEGIES`]): `k8s-openapi` does not carry them,
//!   and kubectl computes `apply` patches from them;
//! - `metadata` is never required (`k8s-openapi` makes it required because its Rust field is
//!   not optional; upstream does not);
//! - list kinds (`PodList`), which `k8s-openapi` has no schema for, are built here.
//!
//! `x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type` and
//! `x-kubernetes-unions` are not produced: `k8s-openapi` does not carry them.
//!
//! Pure functions, no I/O; the API server serializes and caches the result.

use std::borrow::Cow;

use k8s_openapi::api::{
    apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz,
    autoscaling::v1 as autoscaling_v1, autoscaling::v2 as autoscaling_v2, batch::v1 as batch,
    certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, events::v1 as events, networking::v1 as networking,
    policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceInfo};

/// Which OpenAPI document the schemas are shaped for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Swagger 2.0 (`/openapi/v2`): `#/definitions/NAME`, references keep their siblings.
    Swagger2,
    /// OpenAPI 3.0 (`/openapi/v3/...`): `#/components/schemas/NAME`, a reference with
    /// siblings becomes `allOf: [{$ref}]` next to them.
    OpenApi3,
}

impl Dialect {
    /// The prefix of a reference to a named schema.
    pub fn ref_prefix(self) -> &'static str {
        match self {
            Dialect::Swagger2 => "#/definitions/",
            Dialect::OpenApi3 => "#/components/schemas/",
        }
    }

    /// A `{"$ref": ...}` schema pointing at the definition `name`.
    pub fn reference(self, name: &str) -> Value {
        json!({"$ref": format!("{}{name}", self.ref_prefix())})
    }
}

/// Where `schemars` puts references while generating; rewritten per [`Dialect`] afterwards.
const GENERATED_PREFIX: &str = "#/definitions/";

const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
/// `ListMeta`, referenced by every list kind.
pub const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
/// `Status`, what deletes answer.
pub const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
/// `DeleteOptions`, the body of deletes.
pub const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
/// `Patch`, the body of patches.
pub const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

/// One kind with a schema: its group/version/kind and how to generate it.
struct KindSchema {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    name: fn() -> Cow<'static, str>,
    generate: fn(&mut SchemaGenerator) -> Schema,
}

impl KindSchema {
    const fn of<T: k8s_openapi::Resource + JsonSchema>() -> KindSchema {
        KindSchema {
            group: T::GROUP,
            version: T::VERSION,
            kind: T::KIND,
            name: T::schema_name,
            generate: SchemaGenerator::subschema_for::<T>,
        }
    }
}

/// Every kind the registry serves (resources and the kinds of subresources that have a type).
const KINDS: &[KindSchema] = &[
    // core/v1
    KindSchema::of::<core::Binding>(),
    KindSchema::of::<core::ComponentStatus>(),
    KindSchema::of::<core::ConfigMap>(),
    KindSchema::of::<core::Endpoints>(),
    KindSchema::of::<core::Event>(),
    KindSchema::of::<core::LimitRange>(),
    KindSchema::of::<core::Namespace>(),
    KindSchema::of::<core::Node>(),
    KindSchema::of::<core::PersistentVolumeClaim>(),
    KindSchema::of::<core::PersistentVolume>(),
    KindSchema::of::<core::Pod>(),
    KindSchema::of::<core::PodTemplate>(),
    KindSchema::of::<core::ReplicationController>(),
    KindSchema::of::<core::ResourceQuota>(),
    KindSchema::of::<core::Secret>(),
    KindSchema::of::<core::ServiceAccount>(),
    KindSchema::of::<core::Service>(),
    // apps/v1
    KindSchema::of::<apps::ControllerRevision>(),
    KindSchema::of::<apps::DaemonSet>(),
    KindSchema::of::<apps::Deployment>(),
    KindSchema::of::<apps::ReplicaSet>(),
    KindSchema::of::<apps::StatefulSet>(),
    // events.k8s.io/v1
    KindSchema::of::<events::Event>(),
    // authentication.k8s.io/v1
    KindSchema::of::<authn::SelfSubjectReview>(),
    KindSchema::of::<authn::TokenReview>(),
    KindSchema::of::<authn::TokenRequest>(),
    // authorization.k8s.io/v1
    KindSchema::of::<authz::SelfSubjectAccessReview>(),
    KindSchema::of::<authz::SelfSubjectRulesReview>(),
    KindSchema::of::<authz::SubjectAccessReview>(),
    // autoscaling/v2, autoscaling/v1
    KindSchema::of::<autoscaling_v2::HorizontalPodAutoscaler>(),
    KindSchema::of::<autoscaling_v1::HorizontalPodAutoscaler>(),
    KindSchema::of::<autoscaling_v1::Scale>(),
    // batch/v1
    KindSchema::of::<batch::CronJob>(),
    KindSchema::of::<batch::Job>(),
    // certificates.k8s.io/v1
    KindSchema::of::<certificates::CertificateSigningRequest>(),
    // networking.k8s.io/v1
    KindSchema::of::<networking::IngressClass>(),
    KindSchema::of::<networking::Ingress>(),
    KindSchema::of::<networking::NetworkPolicy>(),
    // policy/v1
    KindSchema::of::<policy::PodDisruptionBudget>(),
    KindSchema::of::<policy::Eviction>(),
    // rbac.authorization.k8s.io/v1
    KindSchema::of::<rbac::ClusterRoleBinding>(),
    KindSchema::of::<rbac::ClusterRole>(),
    KindSchema::of::<rbac::RoleBinding>(),
    KindSchema::of::<rbac::Role>(),
    // storage.k8s.io/v1
    KindSchema::of::<storage::CSIDriver>(),
    KindSchema::of::<storage::CSINode>(),
    KindSchema::of::<storage::StorageClass>(),
    KindSchema::of::<storage::VolumeAttachment>(),
    // scheduling.k8s.io/v1
    KindSchema::of::<scheduling::PriorityClass>(),
    // coordination.k8s.io/v1
    KindSchema::of::<coordination::Lease>(),
    // discovery.k8s.io/v1
    KindSchema::of::<discovery::EndpointSlice>(),
];

fn kind_schema(group: &str, version: &str, kind: &str) -> Option<&'static KindSchema> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
}

/// Strategic-merge-patch metadata of list (and a few object) fields, as upstream's Go types
/// declare it (`patchStrategy` / `patchMergeKey` tags): definition, field, strategy, merge key.
/// Only the types the registry serves are listed.
#[rustfmt::skip]
pub const PATCH_STRATEGIES: &[(&str, &str, &str, Option<&str>)] = &[
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", None),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", Some("uid")),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", Some("ip")),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", Some("topologyKey")),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", Some("name")),
    ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    ("io.k8s.api.core.v1.Container", "ports", "merge", Some("containerPort")),
    ("io.k8s.api.core.v1.Container", "volumeDevices", "merge", Some("devicePath")),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "merge", Some("mountPath")),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", Some("name")),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", "merge", Some("containerPort")),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", Some("devicePath")),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", Some("mountPath")),
    ("io.k8s.api.core.v1.ContainerStatus", "allocatedResourcesStatus", "merge", Some("name")),
    ("io.k8s.api.core.v1.ContainerStatus", "volumeMounts", "merge", Some("mountPath")),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", Some("ip")),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", Some("ip")),
    ("io.k8s.api.core.v1.PodStatus", "resourceClaimStatuses", "merge,retainKeys", Some("name")),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", Some("port")),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", "merge", Some("name")),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", Some("type")),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.ComponentStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.ReplicationControllerStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", None),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector", "replace", None),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.storage.v1.CSINodeSpec", "drivers", "merge", Some("name")),
];

/// The upstream definition name of a served kind or of its list kind
/// (`("", "v1", "Pod")` → `io.k8s.api.core.v1.Pod`, `…PodList` for `PodList`).
pub fn definition_name(group: &str, version: &str, kind: &str) -> Option<String> {
    if let Some(k) = kind_schema(group, version, kind) {
        return Some((k.name)().into_owned());
    }
    let base = kind.strip_suffix("List")?;
    kind_schema(group, version, base).map(|k| format!("{}List", (k.name)()))
}

/// The named schemas for the resources of one group-version (`Some((group, version))`, as a
/// `/openapi/v3` document holds them) or of every served group-version (`None`, as
/// `/openapi/v2` does): each resource's kind, its list kind, the kinds of its subresources
/// that have a type (`Scale`, `Eviction`, …), [`STATUS`], [`DELETE_OPTIONS`], [`PATCH`], and
/// everything they reference. Keys are sorted.
pub fn definitions(
    registry: &Registry,
    group_version: Option<(&str, &str)>,
    dialect: Dialect,
) -> Map<String, Value> {
    let settings = SchemaSettings::draft07().with(|s| {
        s.definitions_path = GENERATED_PREFIX.trim_end_matches('/').into();
        s.meta_schema = None;
        s.transforms.clear();
    });
    let mut generator = SchemaGenerator::new(settings);
    generator.subschema_for::<meta::ListMeta>();
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::Patch>();

    // (definition name, group, version, kind) of every top-level kind in the document.
    let mut kinds: Vec<(String, &str, &str, &str)> = Vec::new();
    let mut lists: Vec<(&ResourceInfo, String)> = Vec::new();
    let selected = registry.resources().iter().filter(|r| match group_version {
        Some((g, v)) => r.group == g && r.version == v,
        None => true,
    });
    for info in selected {
        let mut add = |group: &'static str, version: &'static str, kind: &'static str| {
            if let Some(k) = kind_schema(group, version, kind) {
                let name = (k.name)().into_owned();
                if !kinds.iter().any(|(n, ..)| *n == name) {
                    (k.generate)(&mut generator);
                    kinds.push((name, group, version, kind));
                }
            }
        };
        add(info.group, info.version, info.kind);
        for sub in &info.subresources {
            add(sub.group, sub.version, sub.kind);
        }
        if info.list_kind.is_some()
            && let Some(name) = definition_name(info.group, info.version, info.kind)
        {
            lists.push((info, name));
        }
    }

    let mut defs = generator.take_definitions(false);
    for (info, item_name) in lists {
        let list = list_schema(info, &item_name, defs.get(&item_name));
        defs.insert(format!("{item_name}List"), list);
        let kind = info.list_kind.unwrap_or_default();
        kinds.push((format!("{item_name}List"), info.group, info.version, kind));
    }
    for (name, group, version, kind) in &kinds {
        if let Some(Value::Object(schema)) = defs.get_mut(name) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": group, "kind": kind, "version": version}]),
            );
        }
    }
    for (name, field, strategy, key) in PATCH_STRATEGIES {
        if let Some(prop) = defs
            .get_mut(*name)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(*field))
            .and_then(Value::as_object_mut)
        {
            prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
            if let Some(key) = key {
                prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
            }
        }
    }
    for (name, schema) in defs.iter_mut() {
        match name.as_str() {
            INT_OR_STRING => *schema = int_or_string(schema, dialect),
            QUANTITY => *schema = quantity(schema, dialect),
            _ => {
                drop_required_metadata(schema);
                reshape(schema, dialect);
            }
        }
    }
    defs
}

/// The schema of a list kind (`PodList`), which `k8s-openapi` does not describe.
fn list_schema(info: &ResourceInfo, item_name: &str, item: Option<&Value>) -> Value {
    let kind = info.list_kind.unwrap_or_default();
    let item_prop = |field: &str| {
        item.and_then(|i| i.get("properties"))
            .and_then(|p| p.get(field))
            .cloned()
            .unwrap_or_else(|| json!({"type": "string"}))
    };
    json!({
        "description": format!("{kind} is a list of {} objects.", info.kind),
        "type": "object",
        "properties": {
            "apiVersion": item_prop("apiVersion"),
            "items": {
                "description": format!("List of {}.", info.plural),
                "type": "array",
                "items": {"$ref": format!("{GENERATED_PREFIX}{item_name}")},
            },
            "kind": item_prop("kind"),
            "metadata": {
                "$ref": format!("{GENERATED_PREFIX}{LIST_META}"),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            },
        },
        "required": ["items"],
    })
}

fn description(schema: &Value) -> Value {
    schema.get("description").cloned().unwrap_or(Value::Null)
}

/// Upstream: a string with format `int-or-string` (v2), a `oneOf` integer/string (v3).
fn int_or_string(schema: &Value, dialect: Dialect) -> Value {
    let mut out = Map::new();
    out.insert("description".into(), description(schema));
    out.insert("format".into(), json!("int-or-string"));
    match dialect {
        Dialect::Swagger2 => out.insert("type".into(), json!("string")),
        Dialect::OpenApi3 => out.insert(
            "oneOf".into(),
            json!([{"type": "integer"}, {"type": "string"}]),
        ),
    };
    Value::Object(out)
}

/// Upstream: a string (v2), a `oneOf` string/number (v3).
fn quantity(schema: &Value, dialect: Dialect) -> Value {
    let mut out = Map::new();
    out.insert("description".into(), description(schema));
    match dialect {
        Dialect::Swagger2 => out.insert("type".into(), json!("string")),
        Dialect::OpenApi3 => out.insert(
            "oneOf".into(),
            json!([{"type": "string"}, {"type": "number"}]),
        ),
    };
    Value::Object(out)
}

fn drop_required_metadata(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(required)) = obj.get_mut("required") {
        required.retain(|r| r != "metadata");
        if required.is_empty() {
            obj.remove("required");
        }
    }
}

/// Rewrites references for `dialect`, recursing through the schema keywords that hold
/// schemas (never through descriptions or extension values).
fn reshape(schema: &mut Value, dialect: Dialect) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
        for p in props.values_mut() {
            reshape(p, dialect);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(s) = obj.get_mut(key) {
            reshape(s, dialect);
        }
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        if let Some(Value::Array(list)) = obj.get_mut(key) {
            for s in list {
                reshape(s, dialect);
            }
        }
    }
    let Some(Value::String(r)) = obj.get_mut("$ref") else {
        return;
    };
    if let Some(name) = r.strip_prefix(GENERATED_PREFIX) {
        *r = format!("{}{name}", dialect.ref_prefix());
    }
    if dialect == Dialect::OpenApi3 && obj.len() > 1 {
        let r = obj.remove("$ref").unwrap_or_default();
        obj.insert("allOf".into(), json!([{"$ref": r}]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::registry;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                for (k, v) in m {
                    if k != "description" {
                        refs(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_registry_kind_has_a_schema() {
        let reg = registry();
        assert_eq!(reg.resources().len(), 48);
        for r in reg.resources() {
            let name = definition_name(r.group, r.version, r.kind)
                .unwrap_or_else(|| panic!("no schema for {}/{} {}", r.group, r.version, r.kind));
            assert!(
                name.ends_with(&format!(".{}.{}", r.version, r.kind)),
                "{name}"
            );
            if let Some(list) = r.list_kind {
                assert_eq!(
                    definition_name(r.group, r.version, list),
                    Some(format!("{name}List"))
                );
            }
        }
        let all = definitions(reg, None, Dialect::Swagger2);
        for r in reg.resources() {
            let name = definition_name(r.group, r.version, r.kind).unwrap();
            let gvk = &all[&name]["x-kubernetes-group-version-kind"][0];
            assert_eq!(gvk["kind"], r.kind, "{name}");
            assert_eq!(gvk["group"], r.group, "{name}");
            assert_eq!(gvk["version"], r.version, "{name}");
            if let Some(list) = r.list_kind {
                let l = &all[&format!("{name}List")];
                assert_eq!(l["x-kubernetes-group-version-kind"][0]["kind"], list);
                assert_eq!(l["required"], json!(["items"]));
            }
        }
        assert!(all.contains_key("io.k8s.api.autoscaling.v1.Scale"));
        assert!(all.contains_key("io.k8s.api.policy.v1.Eviction"));
        assert!(definition_name("", "v1", "Nope").is_none());
    }

    #[test]
    fn references_resolve_in_both_dialects() {
        let reg = registry();
        for (dialect, gv) in [
            (Dialect::Swagger2, None),
            (Dialect::OpenApi3, Some(("", "v1"))),
            (Dialect::OpenApi3, Some(("apps", "v1"))),
            (Dialect::OpenApi3, Some(("rbac.authorization.k8s.io", "v1"))),
        ] {
            let defs = definitions(reg, gv, dialect);
            let mut all = Vec::new();
            for d in defs.values() {
                refs(d, &mut all);
            }
            assert!(!all.is_empty());
            for r in all {
                let name = r
                    .strip_prefix(dialect.ref_prefix())
                    .unwrap_or_else(|| panic!("{r} in {dialect:?}"));
                assert!(
                    defs.contains_key(name),
                    "{name} missing in {dialect:?} {gv:?}"
                );
            }
        }
    }

    #[test]
    fn shapes_follow_upstream() {
        let reg = registry();
        let v2 = definitions(reg, None, Dialect::Swagger2);
        let v3 = definitions(reg, Some(("apps", "v1")), Dialect::OpenApi3);

        // v2 keeps the description next to the reference; v3 wraps it in allOf.
        let meta2 = &v2["io.k8s.api.core.v1.Pod"]["properties"]["metadata"];
        assert_eq!(
            meta2["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(meta2["description"].as_str().unwrap().contains("metadata"));
        let spec3 = &v3["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"];
        assert!(spec3.get("$ref").is_none());
        assert_eq!(
            spec3["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        // Array items that are bare references stay bare.
        let containers = &v3["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(
            containers["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(
            v3["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]["x-kubernetes-patch-strategy"],
            "retainKeys"
        );
        // Upstream never requires metadata.
        assert!(v2["io.k8s.api.core.v1.Pod"].get("required").is_none());
        assert_eq!(
            v2["io.k8s.api.certificates.v1.CertificateSigningRequest"]["required"],
            json!(["spec"])
        );
        // Special types.
        assert_eq!(v2[INT_OR_STRING]["format"], "int-or-string");
        assert_eq!(v2[INT_OR_STRING]["type"], "string");
        assert_eq!(v3[INT_OR_STRING]["oneOf"][0]["type"], "integer");
        assert_eq!(v2[QUANTITY]["type"], "string");
        assert!(v3[QUANTITY].get("type").is_none());
        // Types the document does not need are not in it.
        assert!(!v3.contains_key("io.k8s.api.rbac.v1.Role"));
        assert!(v3.contains_key("io.k8s.api.autoscaling.v1.Scale"));
        // Every patch strategy names a field that exists.
        for (name, field, ..) in PATCH_STRATEGIES {
            assert!(
                v2[*name]["properties"].get(*field).is_some(),
                "{name}.{field}"
            );
        }
    }
}
