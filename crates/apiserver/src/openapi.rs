//! OpenAPI v3 documents: `/openapi/v3` lists one document per group-version, and each lists
//! the paths and operations of its resources, with upstream's vendor extensions
//! (`x-kubernetes-group-version-kind`, `x-kubernetes-action`) and query parameters.
//!
//! This is what lets kubectl see that the server validates fields itself (`fieldValidation`
//! on PATCH), so `kubectl create/apply` send `fieldValidation=Strict` instead of validating
//! against schemas client-side. Schemas are objects that keep unknown fields: `kubectl
//! explain` needs the full type schemas, which are not generated yet.

use rkube_api::registry::{Registry, ResourceInfo, Verb};
use serde_json::{Map, Value, json};

/// The `/openapi/v3` discovery document.
pub fn root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for g in registry.groups() {
        for v in g.versions {
            let key = if g.name.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{}/{v}", g.name)
            };
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", hash(&key))}),
            );
        }
    }
    json!({"paths": paths})
}

fn hash(key: &str) -> String {
    // Stable per build: the documents only change with the binary.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(env!("CARGO_PKG_VERSION").bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016X}")
}

fn param(name: &str, location: &str) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(info: &ResourceInfo, action: &str, id: &str, extra_params: &[&str]) -> Value {
    let gvk = json!({"group": info.group, "version": info.version, "kind": info.kind});
    let params: Vec<Value> = extra_params.iter().map(|p| param(p, "query")).collect();
    let schema = json!({"$ref": format!("#/components/schemas/{}", schema_name(info))});
    json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}},
    })
}

fn schema_name(info: &ResourceInfo) -> String {
    let group = if info.group.is_empty() {
        "core"
    } else {
        info.group
    };
    format!(
        "io.k8s.api.{}.{}.{}",
        group.split('.').next().unwrap_or(group),
        info.version,
        info.kind
    )
}

/// The document of one group-version, or None if it is not served.
pub fn group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    if !registry.serves(group, version) {
        return None;
    }
    let base = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for info in registry.resources_in(group, version) {
        let ns = if info.is_namespaced() {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let collection = format!("{base}{ns}/{}", info.plural);
        let item = format!("{collection}/{{name}}");
        let mut path_params = vec![param("pretty", "query")];
        if info.is_namespaced() {
            path_params.push(param("namespace", "path"));
        }
        let mut coll = Map::new();
        coll.insert("parameters".into(), Value::Array(path_params.clone()));
        if info.has_verb(Verb::List) {
            coll.insert(
                "get".into(),
                operation(
                    info,
                    "list",
                    &format!("list{}", info.kind),
                    &[
                        "labelSelector",
                        "fieldSelector",
                        "limit",
                        "continue",
                        "resourceVersion",
                        "resourceVersionMatch",
                        "watch",
                        "timeoutSeconds",
                        "allowWatchBookmarks",
                        "sendInitialEvents",
                    ],
                ),
            );
        }
        if info.has_verb(Verb::Create) {
            coll.insert(
                "post".into(),
                operation(
                    info,
                    "post",
                    &format!("create{}", info.kind),
                    &["dryRun", "fieldManager", "fieldValidation"],
                ),
            );
        }
        if info.has_verb(Verb::DeleteCollection) {
            coll.insert(
                "delete".into(),
                operation(
                    info,
                    "deletecollection",
                    &format!("deleteCollection{}", info.kind),
                    &[
                        "dryRun",
                        "gracePeriodSeconds",
                        "propagationPolicy",
                        "labelSelector",
                        "fieldSelector",
                    ],
                ),
            );
        }
        paths.insert(collection, Value::Object(coll));
        let mut item_params = path_params;
        item_params.push(param("name", "path"));
        let mut it = Map::new();
        it.insert("parameters".into(), Value::Array(item_params));
        if info.has_verb(Verb::Get) {
            it.insert(
                "get".into(),
                operation(info, "get", &format!("read{}", info.kind), &[]),
            );
        }
        if info.has_verb(Verb::Update) {
            it.insert(
                "put".into(),
                operation(
                    info,
                    "put",
                    &format!("replace{}", info.kind),
                    &["dryRun", "fieldManager", "fieldValidation"],
                ),
            );
        }
        if info.has_verb(Verb::Patch) {
            it.insert(
                "patch".into(),
                operation(
                    info,
                    "patch",
                    &format!("patch{}", info.kind),
                    &["dryRun", "fieldManager", "fieldValidation", "force"],
                ),
            );
        }
        if info.has_verb(Verb::Delete) {
            it.insert(
                "delete".into(),
                operation(
                    info,
                    "delete",
                    &format!("delete{}", info.kind),
                    &["dryRun", "gracePeriodSeconds", "propagationPolicy"],
                ),
            );
        }
        paths.insert(item, Value::Object(it));
        schemas.insert(
            schema_name(info),
            json!({
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "x-kubernetes-group-version-kind": [{"group": info.group, "version": info.version, "kind": info.kind}],
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_name_every_group_version_and_patch_operation() {
        let reg = rkube_api::registry::registry();
        let root = root(reg);
        assert!(
            root["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/api/v1?hash=")
        );
        assert!(root["paths"].get("apis/apps/v1").is_some());
        let apps = group_version(reg, "apps", "v1").unwrap();
        let patch =
            &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(group_version(reg, "nope", "v1").is_none());
    }
}
