//! The discovery documents the API server serves, built from a [`Registry`].
//!
//! | path | `Accept` | document |
//! |---|---|---|
//! | `/api` | JSON | [`api_versions`] ([`APIVersions`]) |
//! | `/apis` | JSON | [`api_group_list`] ([`APIGroupList`]) |
//! | `/apis/{group}` | JSON | [`api_group`] ([`APIGroup`]) |
//! | `/api/v1`, `/apis/{group}/{version}` | JSON | [`api_resource_list`] ([`APIResourceList`]) |
//! | `/api`, `/apis` | aggregated (see [`negotiate`]) | [`aggregated_discovery`] ([`APIGroupDiscoveryList`]) |
//!
//! kubectl ≥ 1.26 (client-go) asks `/api` and `/apis` for the aggregated format first:
//! `Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,
//! application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json`.
//! When it gets it (the response's `Content-Type` must name the same `g`/`v`/`as`), it never
//! fetches the per-group-version lists. Upstream also sets `Vary: Accept` on these responses.
//!
//! `k8s-openapi` 0.29 has no `apidiscovery.k8s.io` types, so the aggregated documents are the
//! serde structs below, with upstream's field names.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
    ListMeta, ObjectMeta, ServerAddressByClientCIDR,
};
use serde::{Deserialize, Serialize};

use crate::registry::{GroupInfo, Registry, ResourceInfo, Scope, Subresource, Verb, group_version};

/// Group of the aggregated discovery types.
pub const APIDISCOVERY_GROUP: &str = "apidiscovery.k8s.io";
/// `Content-Type` of a plain (legacy) discovery document.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// `Content-Type` of an aggregated discovery document, version v2 (GA since Kubernetes 1.30).
pub const CONTENT_TYPE_AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// `Content-Type` of an aggregated discovery document, version v2beta1 (what kubectl
/// 1.26–1.29 ask for).
pub const CONTENT_TYPE_AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// A version of the aggregated discovery format. Both have the same schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggregatedVersion {
    /// `apidiscovery.k8s.io/v2`.
    V2,
    /// `apidiscovery.k8s.io/v2beta1`.
    V2Beta1,
}

impl AggregatedVersion {
    /// The version string (`v2`, `v2beta1`).
    pub fn version(self) -> &'static str {
        match self {
            AggregatedVersion::V2 => "v2",
            AggregatedVersion::V2Beta1 => "v2beta1",
        }
    }

    /// The document's `apiVersion` (`apidiscovery.k8s.io/v2`).
    pub fn api_version(self) -> &'static str {
        match self {
            AggregatedVersion::V2 => "apidiscovery.k8s.io/v2",
            AggregatedVersion::V2Beta1 => "apidiscovery.k8s.io/v2beta1",
        }
    }

    /// The `Content-Type` the server must answer with.
    pub fn content_type(self) -> &'static str {
        match self {
            AggregatedVersion::V2 => CONTENT_TYPE_AGGREGATED_V2,
            AggregatedVersion::V2Beta1 => CONTENT_TYPE_AGGREGATED_V2BETA1,
        }
    }
}

/// Which document to serve for `/api` or `/apis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiscoveryFormat {
    /// The plain document ([`APIVersions`] / [`APIGroupList`]), `application/json`.
    Legacy,
    /// An [`APIGroupDiscoveryList`] in the given version.
    Aggregated(AggregatedVersion),
}

impl DiscoveryFormat {
    /// The `Content-Type` to answer with.
    pub fn content_type(self) -> &'static str {
        match self {
            DiscoveryFormat::Legacy => CONTENT_TYPE_JSON,
            DiscoveryFormat::Aggregated(v) => v.content_type(),
        }
    }
}

/// Picks the discovery format for a request to `/api` or `/apis` from its `Accept` header.
///
/// Media ranges are weighed by `q` (default 1; `q=0` refuses), ties going to the earlier one.
/// An aggregated range must be `application/json` with `g=apidiscovery.k8s.io`,
/// `v=v2`|`v2beta1` and `as=APIGroupDiscoveryList`; a plain JSON range (`application/json`,
/// `application/*`, `*/*`) without a `g` parameter selects the legacy document. Ranges we
/// cannot produce (protobuf, other `as=` targets) are skipped. With no header, or nothing
/// acceptable, the answer is [`DiscoveryFormat::Legacy`] — the one format every client reads.
pub fn negotiate(accept: Option<&str>) -> DiscoveryFormat {
    let Some(accept) = accept else {
        return DiscoveryFormat::Legacy;
    };
    let mut best: Option<(f32, DiscoveryFormat)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media_type = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let (mut g, mut v, mut as_, mut q) = (None, None, None, 1.0_f32);
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "g" => g = Some(value),
                "v" => v = Some(value),
                "as" => as_ = Some(value),
                "q" => q = value.parse().unwrap_or(0.0),
                _ => {}
            }
        }
        let format = match (media_type.as_str(), g) {
            ("application/json", Some(APIDISCOVERY_GROUP)) => {
                if as_ != Some("APIGroupDiscoveryList") {
                    continue;
                }
                match v {
                    Some("v2") => DiscoveryFormat::Aggregated(AggregatedVersion::V2),
                    Some("v2beta1") => DiscoveryFormat::Aggregated(AggregatedVersion::V2Beta1),
                    _ => continue,
                }
            }
            ("application/json" | "application/*" | "*/*", None) => DiscoveryFormat::Legacy,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
            best = Some((q, format));
        }
    }
    best.map_or(DiscoveryFormat::Legacy, |(_, format)| format)
}

/// `/api`: the core group's versions, and the address clients should use.
///
/// `server_address` is `host:port` (upstream advertises its external address for the
/// `0.0.0.0/0` CIDR).
pub fn api_versions(registry: &Registry, server_address: &str) -> APIVersions {
    APIVersions {
        versions: registry
            .group("")
            .map(|g| g.versions.iter().map(|v| (*v).to_owned()).collect())
            .unwrap_or_default(),
        server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
            client_cidr: "0.0.0.0/0".to_owned(),
            server_address: server_address.to_owned(),
        }],
    }
}

fn group_document(group: &GroupInfo) -> APIGroup {
    let for_discovery = |version: &str| GroupVersionForDiscovery {
        group_version: group_version(group.name, version),
        version: version.to_owned(),
    };
    APIGroup {
        name: group.name.to_owned(),
        preferred_version: Some(for_discovery(group.preferred_version())),
        server_address_by_client_cidrs: None,
        versions: group.versions.iter().map(|v| for_discovery(v)).collect(),
    }
}

/// `/apis`: every named group (core excluded), in priority order, preferred version first.
pub fn api_group_list(registry: &Registry) -> APIGroupList {
    APIGroupList {
        groups: registry
            .groups()
            .iter()
            .filter(|g| !g.is_core())
            .map(group_document)
            .collect(),
    }
}

/// `/apis/{group}`; `None` for an unknown group or the core group (which has no such path).
pub fn api_group(registry: &Registry, group: &str) -> Option<APIGroup> {
    registry
        .group(group)
        .filter(|g| !g.is_core())
        .map(group_document)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn verb_strings(r: &[Verb]) -> Vec<String> {
    r.iter().map(|v| v.as_str().to_owned()).collect()
}

fn non_empty(items: &[&str]) -> Option<Vec<String>> {
    (!items.is_empty()).then(|| strings(items))
}

/// `/api/v1` or `/apis/{group}/{version}`: resources and subresources (`pods/status`), sorted by
/// name as upstream does; `None` if the group/version is not served.
///
/// A subresource whose kind lives in another group/version (`deployments/scale` →
/// `autoscaling/v1` `Scale`) carries that `group` and `version`; every other entry leaves them
/// out. `storageVersionHash` is not emitted.
pub fn api_resource_list(
    registry: &Registry,
    group: &str,
    version: &str,
) -> Option<APIResourceList> {
    if !registry.serves(group, version) {
        return None;
    }
    let mut resources = Vec::new();
    for r in registry.resources_in(group, version) {
        resources.push(APIResource {
            categories: non_empty(r.categories),
            group: None,
            kind: r.kind.to_owned(),
            name: r.plural.to_owned(),
            namespaced: r.is_namespaced(),
            short_names: non_empty(r.short_names),
            singular_name: r.singular.clone(),
            storage_version_hash: None,
            verbs: verb_strings(r.verbs),
            version: None,
        });
        for s in &r.subresources {
            let foreign = (s.group, s.version) != (r.group, r.version);
            resources.push(APIResource {
                categories: None,
                group: foreign.then(|| s.group.to_owned()),
                kind: s.kind.to_owned(),
                name: format!("{}/{}", r.plural, s.name),
                namespaced: r.is_namespaced(),
                short_names: None,
                singular_name: String::new(),
                storage_version_hash: None,
                verbs: verb_strings(s.verbs),
                version: foreign.then(|| s.version.to_owned()),
            });
        }
    }
    resources.sort_by(|a, b| a.name.cmp(&b.name));
    Some(APIResourceList {
        group_version: group_version(group, version),
        resources,
    })
}

// ---- aggregated discovery (apidiscovery.k8s.io/v2, v2beta1) ----

/// `apidiscovery.k8s.io` `APIGroupDiscoveryList`: every group (for `/apis`) or the core group
/// alone (for `/api`), with all versions and resources inline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APIGroupDiscoveryList {
    /// `apidiscovery.k8s.io/v2` or `apidiscovery.k8s.io/v2beta1`.
    pub api_version: String,
    /// Always `APIGroupDiscoveryList`.
    pub kind: String,
    /// Empty list metadata (`{}`).
    #[serde(default)]
    pub metadata: ListMeta,
    /// One entry per group, in priority order.
    #[serde(default)]
    pub items: Vec<APIGroupDiscovery>,
}

/// One group in an [`APIGroupDiscoveryList`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APIGroupDiscovery {
    /// `metadata.name` is the group name. For the core group it is empty and, as upstream
    /// (Go `omitempty`), left out.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Versions, preferred first.
    #[serde(default)]
    pub versions: Vec<APIVersionDiscovery>,
}

/// One version of a group in aggregated discovery.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APIVersionDiscovery {
    /// The version (`v1`).
    pub version: String,
    /// Resources, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<APIResourceDiscovery>,
    /// Whether this document is up to date for the version; built-ins are always `Current`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
}

/// [`APIVersionDiscovery::freshness`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Freshness {
    /// The document reflects the served API.
    Current,
    /// The document may be out of date (an aggregated server did not answer).
    Stale,
}

/// A resource in aggregated discovery.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APIResourceDiscovery {
    /// Plural name (`pods`).
    pub resource: String,
    /// Kind returned; `group` and `version` are empty when they are the enclosing ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_kind: Option<GroupVersionKind>,
    /// `Namespaced` or `Cluster`.
    pub scope: ResourceScope,
    /// Singular name (`pod`).
    #[serde(default)]
    pub singular_resource: String,
    /// Verbs, sorted.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// kubectl short names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub short_names: Vec<String>,
    /// Categories (`all`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Subresources, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subresources: Vec<APISubresourceDiscovery>,
}

/// A subresource in aggregated discovery.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APISubresourceDiscovery {
    /// Subresource name (`status`).
    pub subresource: String,
    /// Kind returned; `group` and `version` are empty when they are the enclosing ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_kind: Option<GroupVersionKind>,
    /// Media types accepted besides JSON (unused by built-ins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_types: Vec<GroupVersionKind>,
    /// Verbs, sorted.
    #[serde(default)]
    pub verbs: Vec<String>,
}

/// `meta/v1` `GroupVersionKind` as aggregated discovery spells it (all three fields always
/// present, possibly empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupVersionKind {
    /// Group, `""` for core or for "the enclosing group".
    #[serde(default)]
    pub group: String,
    /// Version, `""` for "the enclosing version".
    #[serde(default)]
    pub version: String,
    /// Kind.
    pub kind: String,
}

/// [`APIResourceDiscovery::scope`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResourceScope {
    /// Cluster-scoped.
    #[default]
    Cluster,
    /// Namespaced.
    Namespaced,
}

impl From<Scope> for ResourceScope {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::Namespaced => ResourceScope::Namespaced,
            Scope::Cluster => ResourceScope::Cluster,
        }
    }
}

/// `responseKind`: group and version empty when equal to the enclosing resource's, as
/// upstream emits them.
fn response_kind(
    parent: &ResourceInfo,
    group: &str,
    version: &str,
    kind: &str,
) -> GroupVersionKind {
    let same = (group, version) == (parent.group, parent.version);
    GroupVersionKind {
        group: if same {
            String::new()
        } else {
            group.to_owned()
        },
        version: if same {
            String::new()
        } else {
            version.to_owned()
        },
        kind: kind.to_owned(),
    }
}

fn subresource_discovery(parent: &ResourceInfo, s: &Subresource) -> APISubresourceDiscovery {
    APISubresourceDiscovery {
        subresource: s.name.to_owned(),
        response_kind: Some(response_kind(parent, s.group, s.version, s.kind)),
        accepted_types: Vec::new(),
        verbs: verb_strings(s.verbs),
    }
}

fn resource_discovery(r: &ResourceInfo) -> APIResourceDiscovery {
    APIResourceDiscovery {
        resource: r.plural.to_owned(),
        response_kind: Some(response_kind(r, r.group, r.version, r.kind)),
        scope: r.scope.into(),
        singular_resource: r.singular.clone(),
        verbs: verb_strings(r.verbs),
        short_names: strings(r.short_names),
        categories: strings(r.categories),
        subresources: r
            .subresources
            .iter()
            .map(|s| subresource_discovery(r, s))
            .collect(),
    }
}

fn group_discovery(registry: &Registry, group: &GroupInfo) -> APIGroupDiscovery {
    APIGroupDiscovery {
        metadata: ObjectMeta {
            name: (!group.is_core()).then(|| group.name.to_owned()),
            ..ObjectMeta::default()
        },
        versions: group
            .versions
            .iter()
            .map(|version| APIVersionDiscovery {
                version: (*version).to_owned(),
                resources: registry
                    .resources_in(group.name, version)
                    .map(resource_discovery)
                    .collect(),
                freshness: Some(Freshness::Current),
            })
            .collect(),
    }
}

/// The aggregated discovery document: for `/api` (`core = true`) a list holding only the core
/// group, for `/apis` (`core = false`) every named group in priority order. Serve it with
/// `version.content_type()` as `Content-Type`.
pub fn aggregated_discovery(
    registry: &Registry,
    core: bool,
    version: AggregatedVersion,
) -> APIGroupDiscoveryList {
    APIGroupDiscoveryList {
        api_version: version.api_version().to_owned(),
        kind: "APIGroupDiscoveryList".to_owned(),
        metadata: ListMeta::default(),
        items: registry
            .groups()
            .iter()
            .filter(|g| g.is_core() == core)
            .map(|g| group_discovery(registry, g))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::registry;

    const KUBECTL_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    #[test]
    fn negotiation() {
        use AggregatedVersion::*;
        use DiscoveryFormat::*;
        assert_eq!(negotiate(None), Legacy);
        assert_eq!(negotiate(Some("application/json")), Legacy);
        assert_eq!(negotiate(Some("*/*")), Legacy);
        assert_eq!(negotiate(Some(KUBECTL_ACCEPT)), Aggregated(V2));
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
            )),
            Aggregated(V2Beta1)
        );
        // Protobuf first: skipped, the JSON aggregated range is next.
        assert_eq!(
            negotiate(Some(
                "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
            )),
            Aggregated(V2)
        );
        // Spaces, parameter order and q values.
        assert_eq!(
            negotiate(Some(
                "application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io"
            )),
            Aggregated(V2)
        );
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0.5, application/json"
            )),
            Legacy
        );
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0"
            )),
            Legacy
        );
        // Unknown versions and targets are not ours.
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList"
            )),
            Legacy
        );
        assert_eq!(
            negotiate(Some("application/json;g=apidiscovery.k8s.io;v=v2;as=Other")),
            Legacy
        );
        assert_eq!(
            Aggregated(V2).content_type(),
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
        assert_eq!(Legacy.content_type(), "application/json");
    }

    #[test]
    fn api_versions_document() {
        let doc = serde_json::to_value(api_versions(registry(), "10.0.0.1:6443")).unwrap();
        assert_eq!(doc["kind"], "APIVersions");
        assert_eq!(doc["versions"], serde_json::json!(["v1"]));
        assert_eq!(
            doc["serverAddressByClientCIDRs"],
            serde_json::json!([{"clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.1:6443"}])
        );
    }

    #[test]
    fn api_group_document() {
        let doc = serde_json::to_value(api_group(registry(), "autoscaling").unwrap()).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "APIGroup",
                "name": "autoscaling",
                "preferredVersion": {"groupVersion": "autoscaling/v2", "version": "v2"},
                "versions": [
                    {"groupVersion": "autoscaling/v2", "version": "v2"},
                    {"groupVersion": "autoscaling/v1", "version": "v1"},
                ],
            })
        );
        assert!(api_group(registry(), "").is_none());
        assert!(api_group(registry(), "example.com").is_none());
    }

    #[test]
    fn unknown_group_version_has_no_resource_list() {
        assert!(api_resource_list(registry(), "apps", "v1beta1").is_none());
        assert!(api_resource_list(registry(), "", "v2").is_none());
        assert!(api_resource_list(registry(), "example.com", "v1").is_none());
    }

    #[test]
    fn aggregated_round_trips_through_serde() {
        let doc = aggregated_discovery(registry(), false, AggregatedVersion::V2);
        let json = serde_json::to_string(&doc).unwrap();
        let back: APIGroupDiscoveryList = serde_json::from_str(&json).unwrap();
        assert_eq!(back, doc);
    }
}
