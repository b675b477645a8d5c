//! The static registry of every built-in resource the API server serves.
//!
//! Each entry is derived from its `k8s-openapi` type ([`Resource::GROUP`], [`Resource::VERSION`],
//! [`Resource::KIND`], [`Resource::URL_PATH_SEGMENT`], the scope type and
//! [`ListableResource::LIST_KIND`]), so group, version, kind, plural and scope cannot be
//! misspelled. What the types do not carry — verbs, short names, categories and subresources — is
//! written here, copied from upstream Kubernetes v1.33's discovery documents
//! (`kubectl api-resources -o wide`, `kubectl get --raw /api/v1`).
//!
//! The registry answers the lookups the API server and kubectl-style clients need: by
//! group/version/plural, by group/version/kind, by the type itself, and by a user-typed name
//! (`po`, `deploy.apps`, `deployments.v1.apps`, …), plus the list of groups with their versions
//! in upstream's priority order.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use k8s_openapi::api::{
    apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz,
    autoscaling::v1 as autoscaling_v1, autoscaling::v2 as autoscaling_v2, batch::v1 as batch,
    certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, events::v1 as events, networking::v1 as networking,
    policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage,
};
use k8s_openapi::{
    ClusterResourceScope, ListableResource, NamespaceResourceScope, Resource, SubResourceScope,
};

/// Whether objects of a resource live in a namespace or at cluster level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Objects live in a namespace (`/api/v1/namespaces/{ns}/pods/{name}`).
    Namespaced,
    /// Objects are cluster-wide (`/api/v1/nodes/{name}`).
    Cluster,
}

impl Scope {
    /// The spelling aggregated discovery uses: `"Namespaced"` or `"Cluster"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Namespaced => "Namespaced",
            Scope::Cluster => "Cluster",
        }
    }

    /// `true` for [`Scope::Namespaced`].
    pub fn is_namespaced(self) -> bool {
        self == Scope::Namespaced
    }
}

/// Maps a `k8s-openapi` scope marker type to a [`Scope`]. Implemented only for the two
/// top-level scopes, so a subresource type (`Scale`, `Eviction`, …) cannot be registered as a
/// resource by mistake.
trait HasScope {
    const SCOPE: Scope;
}

impl HasScope for NamespaceResourceScope {
    const SCOPE: Scope = Scope::Namespaced;
}

impl HasScope for ClusterResourceScope {
    const SCOPE: Scope = Scope::Cluster;
}

/// An API verb, as it appears in discovery and in RBAC rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// `create` (POST).
    Create,
    /// `delete` (DELETE of one object).
    Delete,
    /// `deletecollection` (DELETE of a collection).
    DeleteCollection,
    /// `get` (GET of one object).
    Get,
    /// `list` (GET of a collection).
    List,
    /// `patch` (PATCH).
    Patch,
    /// `update` (PUT).
    Update,
    /// `watch` (GET with `?watch=true`).
    Watch,
}

impl Verb {
    /// Every verb, in the (alphabetical) order discovery lists them.
    pub const ALL: [Verb; 8] = [
        Verb::Create,
        Verb::Delete,
        Verb::DeleteCollection,
        Verb::Get,
        Verb::List,
        Verb::Patch,
        Verb::Update,
        Verb::Watch,
    ];

    /// The lowercase wire spelling (`"deletecollection"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Patch => "patch",
            Verb::Update => "update",
            Verb::Watch => "watch",
        }
    }

    /// Parses the wire spelling; `None` for anything else (verbs are case-sensitive upstream).
    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subresource of a resource (`pods/status`, `deployments/scale`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subresource {
    /// The path segment after the object's name: `status`, `scale`, `log`, …
    pub name: &'static str,
    /// Group of the kind the subresource takes and returns (`autoscaling` for `scale`).
    pub group: &'static str,
    /// Version of that kind (`v1` for `scale`).
    pub version: &'static str,
    /// That kind: the parent's kind for `status`, `Scale` for `scale`, `PodExecOptions` for
    /// `exec`, …
    pub kind: &'static str,
    /// Verbs the subresource supports, sorted.
    pub verbs: &'static [Verb],
}

impl Subresource {
    /// `true` if the subresource supports `verb`.
    pub fn has_verb(&self, verb: Verb) -> bool {
        self.verbs.contains(&verb)
    }
}

/// One built-in resource: a plural name in a group/version, with everything discovery says
/// about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; `""` for the core (legacy) group.
    pub group: &'static str,
    /// API version (`v1`, `v2`, …).
    pub version: &'static str,
    /// Kind of the objects (`Pod`).
    pub kind: &'static str,
    /// Kind of the list type (`PodList`); `None` for resources that cannot be listed (reviews,
    /// `Binding`).
    pub list_kind: Option<&'static str>,
    /// Plural resource name, the URL path segment (`pods`).
    pub plural: &'static str,
    /// Singular name (`pod`): the kind in lowercase, as upstream derives it.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub scope: Scope,
    /// Verbs on the resource itself, sorted.
    pub verbs: &'static [Verb],
    /// kubectl short names (`po`).
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Subresources, sorted by name.
    pub subresources: Vec<Subresource>,
}

impl ResourceInfo {
    /// `apiVersion` of the objects: `"v1"` for core, `"apps/v1"` otherwise.
    pub fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }

    /// `true` if the resource is namespaced.
    pub fn is_namespaced(&self) -> bool {
        self.scope.is_namespaced()
    }

    /// `true` if the resource itself supports `verb`.
    pub fn has_verb(&self, verb: Verb) -> bool {
        self.verbs.contains(&verb)
    }

    /// The subresource called `name`, if any.
    pub fn subresource(&self, name: &str) -> Option<&Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// `true` if `name` (already lowercase) is this resource's plural, singular or a short name.
    fn answers_to(&self, name: &str) -> bool {
        self.plural == name || self.singular == name || self.short_names.contains(&name)
    }

    // ---- builders used by `builtin_resources` ----

    fn short(mut self, names: &'static [&'static str]) -> Self {
        self.short_names = names;
        self
    }

    fn categories(mut self, categories: &'static [&'static str]) -> Self {
        self.categories = categories;
        self
    }

    /// Adds a subresource whose kind is in the parent's group/version.
    fn sub(mut self, name: &'static str, kind: &'static str, verbs: &'static [Verb]) -> Self {
        self.subresources.push(Subresource {
            name,
            group: self.group,
            version: self.version,
            kind,
            verbs,
        });
        self
    }

    /// Adds the `status` subresource (kind of the parent; get, patch, update).
    fn status(self) -> Self {
        let kind = self.kind;
        self.sub("status", kind, GET_PATCH_UPDATE)
    }

    /// Adds a subresource whose kind is the (sub)resource type `S`, named by
    /// `S::URL_PATH_SEGMENT` (`scale`, `eviction`, `token`).
    fn sub_typed<S: Resource<Scope = SubResourceScope>>(mut self, verbs: &'static [Verb]) -> Self {
        self.subresources.push(Subresource {
            name: S::URL_PATH_SEGMENT,
            group: S::GROUP,
            version: S::VERSION,
            kind: S::KIND,
            verbs,
        });
        self
    }

    /// Adds a subresource called `name` whose kind is the type `S` (`pods/binding` → `Binding`).
    fn sub_kind<S: Resource>(mut self, name: &'static str, verbs: &'static [Verb]) -> Self {
        self.subresources.push(Subresource {
            name,
            group: S::GROUP,
            version: S::VERSION,
            kind: S::KIND,
            verbs,
        });
        self
    }
}

/// `"v1"` for the core group, `"group/version"` otherwise.
pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// An API group and the versions the server serves, preferred version first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// Group name; `""` for the core group.
    pub name: &'static str,
    /// Served versions, the preferred one first (upstream's order, e.g. `["v2", "v1"]` for
    /// `autoscaling`).
    pub versions: &'static [&'static str],
}

impl GroupInfo {
    /// The preferred version: the first of [`GroupInfo::versions`].
    pub fn preferred_version(&self) -> &'static str {
        self.versions[0]
    }

    /// `true` for the core (legacy, `/api`) group.
    pub fn is_core(&self) -> bool {
        self.name.is_empty()
    }
}

/// The served groups in upstream's priority order (the order `/apis` lists them and kubectl
/// prefers them when a name is ambiguous), core first.
const GROUPS: &[GroupInfo] = &[
    GroupInfo {
        name: "",
        versions: &["v1"],
    },
    GroupInfo {
        name: "apps",
        versions: &["v1"],
    },
    GroupInfo {
        name: "events.k8s.io",
        versions: &["v1"],
    },
    GroupInfo {
        name: "authentication.k8s.io",
        versions: &["v1"],
    },
    GroupInfo {
        name: "authorization.k8s.io",
        versions: &["v1"],
    },
    GroupInfo {
        name: "autoscaling",
        versions: &["v2", "v1"],
    },
    GroupInfo {
        name: "batch",
        versions: &["v1"],
    },
    GroupInfo {
        name: "certificates.k8s.io",
        versions: &["v1"],
    },
    GroupInfo {
        name: "networking.k8s.io",
        versions: &["v1"],
    },
    GroupInfo {
        name: "policy",
        versions: &["v1"],
    },
    GroupInfo {
        name: "rbac.authorization.k8s.io",
        versions: &["v1"],
    },
    GroupInfo {
        name: "storage.k8s.io",
        versions: &["v1"],
    },
    GroupInfo {
        name: "scheduling.k8s.io",
        versions: &["v1"],
    },
    GroupInfo {
        name: "coordination.k8s.io",
        versions: &["v1"],
    },
    GroupInfo {
        name: "discovery.k8s.io",
        versions: &["v1"],
    },
];

// ---- verb sets, as upstream's storage implementations expose them ----

/// An ordinary stored resource.
const CRUD: &[Verb] = &Verb::ALL;
/// `namespaces`: no `deletecollection`.
const CRUD_NO_DELETECOLLECTION: &[Verb] = &[
    Verb::Create,
    Verb::Delete,
    Verb::Get,
    Verb::List,
    Verb::Patch,
    Verb::Update,
    Verb::Watch,
];
/// `status`, `scale`, `ephemeralcontainers`, `resize`.
const GET_PATCH_UPDATE: &[Verb] = &[Verb::Get, Verb::Patch, Verb::Update];
/// `proxy` subresources (connect with GET/POST/PUT/PATCH/DELETE).
const PROXY: &[Verb] = &[
    Verb::Create,
    Verb::Delete,
    Verb::Get,
    Verb::Patch,
    Verb::Update,
];
/// `exec`, `attach`, `portforward` (connect with GET and POST).
const CONNECT: &[Verb] = &[Verb::Create, Verb::Get];
/// Reviews, `bindings`, `eviction`, `token`.
const CREATE: &[Verb] = &[Verb::Create];
/// `componentstatuses`.
const GET_LIST: &[Verb] = &[Verb::Get, Verb::List];
/// `log`.
const GET: &[Verb] = &[Verb::Get];
/// `namespaces/finalize`.
const UPDATE: &[Verb] = &[Verb::Update];

/// A resource with a list type.
fn listed<K>(verbs: &'static [Verb]) -> ResourceInfo
where
    K: ListableResource,
    K::Scope: HasScope,
{
    ResourceInfo {
        list_kind: Some(K::LIST_KIND),
        ..unlisted::<K>(verbs)
    }
}

/// A resource without a list type (create-only reviews, `Binding`).
fn unlisted<K>(verbs: &'static [Verb]) -> ResourceInfo
where
    K: Resource,
    K::Scope: HasScope,
{
    ResourceInfo {
        group: K::GROUP,
        version: K::VERSION,
        kind: K::KIND,
        list_kind: None,
        plural: K::URL_PATH_SEGMENT,
        singular: K::KIND.to_ascii_lowercase(),
        scope: <K::Scope as HasScope>::SCOPE,
        verbs,
        short_names: &[],
        categories: &[],
        subresources: Vec::new(),
    }
}

const ALL: &[&str] = &["all"];

/// Every built-in resource, in no particular order ([`Registry`] sorts them).
fn builtin_resources() -> Vec<ResourceInfo> {
    vec![
        // ---- core/v1 ----
        // `bindings` is the pre-subresource way to bind a pod; upstream still serves it.
        unlisted::<core::Binding>(CREATE),
        // `componentstatuses` is deprecated upstream; kept because `kubectl get cs` still asks.
        listed::<core::ComponentStatus>(GET_LIST).short(&["cs"]),
        listed::<core::ConfigMap>(CRUD).short(&["cm"]),
        listed::<core::Endpoints>(CRUD).short(&["ep"]),
        listed::<core::Event>(CRUD).short(&["ev"]),
        listed::<core::LimitRange>(CRUD).short(&["limits"]),
        listed::<core::Namespace>(CRUD_NO_DELETECOLLECTION)
            .short(&["ns"])
            .sub("finalize", core::Namespace::KIND, UPDATE)
            .status(),
        listed::<core::Node>(CRUD)
            .short(&["no"])
            .sub("proxy", "NodeProxyOptions", PROXY)
            .status(),
        listed::<core::PersistentVolumeClaim>(CRUD)
            .short(&["pvc"])
            .status(),
        listed::<core::PersistentVolume>(CRUD)
            .short(&["pv"])
            .status(),
        listed::<core::Pod>(CRUD)
            .short(&["po"])
            .categories(ALL)
            .sub("attach", "PodAttachOptions", CONNECT)
            .sub_kind::<core::Binding>("binding", CREATE)
            .sub("ephemeralcontainers", core::Pod::KIND, GET_PATCH_UPDATE)
            .sub_typed::<policy::Eviction>(CREATE)
            .sub("exec", "PodExecOptions", CONNECT)
            .sub("log", core::Pod::KIND, GET)
            .sub("portforward", "PodPortForwardOptions", CONNECT)
            .sub("proxy", "PodProxyOptions", PROXY)
            .sub("resize", core::Pod::KIND, GET_PATCH_UPDATE)
            .status(),
        listed::<core::PodTemplate>(CRUD),
        listed::<core::ReplicationController>(CRUD)
            .short(&["rc"])
            .categories(ALL)
            .sub_typed::<autoscaling_v1::Scale>(GET_PATCH_UPDATE)
            .status(),
        listed::<core::ResourceQuota>(CRUD)
            .short(&["quota"])
            .status(),
        listed::<core::Secret>(CRUD),
        listed::<core::ServiceAccount>(CRUD)
            .short(&["sa"])
            .sub_typed::<authn::TokenRequest>(CREATE),
        listed::<core::Service>(CRUD)
            .short(&["svc"])
            .categories(ALL)
            .sub("proxy", "ServiceProxyOptions", PROXY)
            .status(),
        // ---- apps/v1 ----
        listed::<apps::ControllerRevision>(CRUD),
        listed::<apps::DaemonSet>(CRUD)
            .short(&["ds"])
            .categories(ALL)
            .status(),
        listed::<apps::Deployment>(CRUD)
            .short(&["deploy"])
            .categories(ALL)
            .sub_typed::<autoscaling_v1::Scale>(GET_PATCH_UPDATE)
            .status(),
        listed::<apps::ReplicaSet>(CRUD)
            .short(&["rs"])
            .categories(ALL)
            .sub_typed::<autoscaling_v1::Scale>(GET_PATCH_UPDATE)
            .status(),
        listed::<apps::StatefulSet>(CRUD)
            .short(&["sts"])
            .categories(ALL)
            .sub_typed::<autoscaling_v1::Scale>(GET_PATCH_UPDATE)
            .status(),
        // ---- events.k8s.io/v1 ----
        listed::<events::Event>(CRUD).short(&["ev"]),
        // ---- authentication.k8s.io/v1 ----
        unlisted::<authn::SelfSubjectReview>(CREATE),
        unlisted::<authn::TokenReview>(CREATE),
        // ---- authorization.k8s.io/v1 ----
        unlisted::<authz::SelfSubjectAccessReview>(CREATE),
        unlisted::<authz::SelfSubjectRulesReview>(CREATE),
        unlisted::<authz::SubjectAccessReview>(CREATE),
        // ---- autoscaling/v2 and autoscaling/v1 ----
        listed::<autoscaling_v2::HorizontalPodAutoscaler>(CRUD)
            .short(&["hpa"])
            .categories(ALL)
            .status(),
        listed::<autoscaling_v1::HorizontalPodAutoscaler>(CRUD)
            .short(&["hpa"])
            .categories(ALL)
            .status(),
        // ---- batch/v1 ----
        listed::<batch::CronJob>(CRUD)
            .short(&["cj"])
            .categories(ALL)
            .status(),
        listed::<batch::Job>(CRUD).categories(ALL).status(),
        // ---- certificates.k8s.io/v1 ----
        listed::<certificates::CertificateSigningRequest>(CRUD)
            .short(&["csr"])
            .sub(
                "approval",
                certificates::CertificateSigningRequest::KIND,
                GET_PATCH_UPDATE,
            )
            .status(),
        // ---- networking.k8s.io/v1 ----
        listed::<networking::IngressClass>(CRUD),
        listed::<networking::Ingress>(CRUD).short(&["ing"]).status(),
        listed::<networking::NetworkPolicy>(CRUD).short(&["netpol"]),
        // ---- policy/v1 ----
        listed::<policy::PodDisruptionBudget>(CRUD)
            .short(&["pdb"])
            .status(),
        // ---- rbac.authorization.k8s.io/v1 ----
        listed::<rbac::ClusterRoleBinding>(CRUD),
        listed::<rbac::ClusterRole>(CRUD),
        listed::<rbac::RoleBinding>(CRUD),
        listed::<rbac::Role>(CRUD),
        // ---- storage.k8s.io/v1 ----
        listed::<storage::CSIDriver>(CRUD),
        listed::<storage::CSINode>(CRUD),
        listed::<storage::StorageClass>(CRUD).short(&["sc"]),
        listed::<storage::VolumeAttachment>(CRUD).status(),
        // ---- scheduling.k8s.io/v1 ----
        listed::<scheduling::PriorityClass>(CRUD).short(&["pc"]),
        // ---- coordination.k8s.io/v1 ----
        listed::<coordination::Lease>(CRUD),
        // ---- discovery.k8s.io/v1 ----
        listed::<discovery::EndpointSlice>(CRUD),
    ]
}

/// The set of served resources with lookup indexes. Obtain the built-in one with [`registry`].
#[derive(Debug)]
pub struct Registry {
    groups: &'static [GroupInfo],
    /// Sorted by group priority, then version (preferred first), then plural.
    resources: Vec<ResourceInfo>,
    by_gvr: HashMap<(&'static str, &'static str, &'static str), usize>,
    by_gvk: HashMap<(&'static str, &'static str, &'static str), usize>,
}

static BUILTIN: LazyLock<Registry> = LazyLock::new(|| Registry::new(GROUPS, builtin_resources()));

/// The registry of built-in resources (built once, on first use).
pub fn registry() -> &'static Registry {
    &BUILTIN
}

impl Registry {
    /// Builds the indexes. Panics on a resource whose group/version is not in `groups`, or on a
    /// duplicate plural or kind within one group/version: both are programming errors in the
    /// static tables, caught by the tests.
    fn new(groups: &'static [GroupInfo], mut resources: Vec<ResourceInfo>) -> Registry {
        let position = |r: &ResourceInfo| -> (usize, usize) {
            let g = groups
                .iter()
                .position(|g| g.name == r.group)
                .unwrap_or_else(|| panic!("group {:?} of {} is not registered", r.group, r.plural));
            let v = groups[g]
                .versions
                .iter()
                .position(|v| *v == r.version)
                .unwrap_or_else(|| {
                    panic!(
                        "version {} of {}/{} is not registered",
                        r.version, r.group, r.plural
                    )
                });
            (g, v)
        };
        resources.sort_by(|a, b| (position(a), a.plural).cmp(&(position(b), b.plural)));
        let mut by_gvr = HashMap::new();
        let mut by_gvk = HashMap::new();
        for (i, r) in resources.iter_mut().enumerate() {
            r.subresources.sort_by_key(|s| s.name);
            let dup = by_gvr.insert((r.group, r.version, r.plural), i);
            assert!(
                dup.is_none(),
                "duplicate resource {}/{}/{}",
                r.group,
                r.version,
                r.plural
            );
            let dup = by_gvk.insert((r.group, r.version, r.kind), i);
            assert!(
                dup.is_none(),
                "duplicate kind {}/{}/{}",
                r.group,
                r.version,
                r.kind
            );
        }
        Registry {
            groups,
            resources,
            by_gvr,
            by_gvk,
        }
    }

    /// Every resource: groups in priority order (core first), versions preferred first,
    /// plurals alphabetically.
    pub fn resources(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// The resources of one group/version, plurals alphabetically.
    pub fn resources_in<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceInfo> + 'a {
        self.resources
            .iter()
            .filter(move |r| r.group == group && r.version == version)
    }

    /// Served groups in upstream's priority order, core (`""`) first.
    pub fn groups(&self) -> &[GroupInfo] {
        self.groups
    }

    /// The group called `name` (`""` for core).
    pub fn group(&self, name: &str) -> Option<&GroupInfo> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// `true` if `group`/`version` is served.
    pub fn serves(&self, group: &str, version: &str) -> bool {
        self.group(group)
            .is_some_and(|g| g.versions.contains(&version))
    }

    /// The resource at `group`/`version`/`plural` (exact, case-sensitive, as in a URL).
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.by_gvr
            .get(&(group, version, plural))
            .map(|&i| &self.resources[i])
    }

    /// The resource serving `kind` in `group`/`version` (exact, case-sensitive).
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<&ResourceInfo> {
        self.by_gvk
            .get(&(group, version, kind))
            .map(|&i| &self.resources[i])
    }

    /// The resource for the `k8s-openapi` type `K`.
    pub fn for_type<K: Resource>(&self) -> Option<&ResourceInfo> {
        self.by_kind(K::GROUP, K::VERSION, K::KIND)
    }

    /// The resource at `group`/`version`/`plural` and its subresource `subresource`.
    pub fn subresource(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        subresource: &str,
    ) -> Option<(&ResourceInfo, &Subresource)> {
        let r = self.get(group, version, plural)?;
        Some((r, r.subresource(subresource)?))
    }

    /// Resolves a resource name as typed to kubectl: `pods`, `pod`, `po`, `Pods`,
    /// `deploy.apps`, `deployments.apps`, `deployments.v1.apps`, `ingresses.networking.k8s.io`.
    /// Matching is case-insensitive against plurals, singulars and short names.
    ///
    /// Like kubectl, `name.version.group` is tried first when there are at least three dotted
    /// parts, then `name.group`, and a name without dots matches in every group. Matches come
    /// in priority order — core first, then `/apis` order, preferred version first — so the
    /// first one is what kubectl would pick (`events` → core `events`, `hpa` →
    /// `autoscaling/v2`).
    pub fn resolve(&self, arg: &str) -> Vec<&ResourceInfo> {
        let arg = arg.to_ascii_lowercase();
        let matching = |name: &str, group: Option<&str>, version: Option<&str>| {
            self.resources
                .iter()
                .filter(|r| {
                    group.is_none_or(|g| r.group == g)
                        && version.is_none_or(|v| r.version == v)
                        && r.answers_to(name)
                })
                .collect::<Vec<_>>()
        };
        let Some((name, rest)) = arg.split_once('.') else {
            return matching(&arg, None, None);
        };
        if let Some((version, group)) = rest.split_once('.') {
            let found = matching(name, Some(group), Some(version));
            if !found.is_empty() {
                return found;
            }
        }
        matching(name, Some(rest), None)
    }

    /// The first (preferred) match of [`Registry::resolve`].
    pub fn resolve_one(&self, arg: &str) -> Option<&ResourceInfo> {
        self.resolve(arg).into_iter().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_fields_come_from_the_types() {
        let pod = registry().for_type::<core::Pod>().unwrap();
        assert_eq!(
            (pod.group, pod.version, pod.kind, pod.plural),
            ("", "v1", "Pod", "pods")
        );
        assert_eq!(pod.singular, "pod");
        assert_eq!(pod.list_kind, Some("PodList"));
        assert_eq!(pod.scope, Scope::Namespaced);
        let node = registry().for_type::<core::Node>().unwrap();
        assert_eq!(node.scope, Scope::Cluster);
        let review = registry().for_type::<authz::SubjectAccessReview>().unwrap();
        assert_eq!(review.list_kind, None);
        assert_eq!(review.verbs, &[Verb::Create]);
    }

    #[test]
    fn verb_sets_are_sorted_like_discovery() {
        for set in [
            CRUD,
            CRUD_NO_DELETECOLLECTION,
            GET_PATCH_UPDATE,
            PROXY,
            CONNECT,
            CREATE,
            GET_LIST,
            GET,
            UPDATE,
        ] {
            let mut names: Vec<_> = set.iter().map(|v| v.as_str()).collect();
            names.sort_unstable();
            assert_eq!(names, set.iter().map(|v| v.as_str()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn verbs_parse_and_print() {
        for v in Verb::ALL {
            assert_eq!(Verb::parse(v.as_str()), Some(v));
        }
        assert_eq!(Verb::DeleteCollection.to_string(), "deletecollection");
        assert_eq!(Verb::parse("Get"), None);
        assert_eq!(Verb::parse("escalate"), None);
    }

    #[test]
    fn every_group_has_resources_in_every_version() {
        let reg = registry();
        for g in reg.groups() {
            for v in g.versions {
                assert!(
                    reg.resources_in(g.name, v).next().is_some(),
                    "{}/{} is empty",
                    g.name,
                    v
                );
            }
        }
    }
}
