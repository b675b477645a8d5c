//! Generic REST storage: get, list, watch, create, update, patch, delete and deletecollection
//! for every built-in resource, over the [`Store`], with upstream's metadata semantics.
//!
//! Objects are stored as JSON without `metadata.resourceVersion`; the store revision of the
//! write becomes the resourceVersion when the object is read. Keys are
//! `/registry/<group or core>/<resource>/<namespace>/<name>` (cluster-scoped: no namespace).

use std::collections::HashMap;
use std::sync::Arc;

use rkube_api::registry::{Registry, ResourceInfo};
use rkube_api::selector::{FieldSelector, LabelSelector, selectable_fields};
use rkube_store::{Compare, Error as StoreError, Op, RangeRequest, Store, Txn};
use serde_json::{Value, json};

use crate::allocator::{self, Claims, ServiceRanges, Taken};
use crate::apply::FieldManager;
use crate::cache::{WatchCache, decode};
use crate::conversion;
use crate::meta::{self, meta_str, remove_meta, set_meta};
use crate::status::{ApiError, ApiResult, Cause, Target};

/// Namespaces that exist from the start, as upstream.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Kinds whose `metadata.generation` the server maintains (bumped when the spec changes).
fn tracks_generation(info: &ResourceInfo) -> bool {
    matches!(
        info.group,
        "apps" | "batch" | "networking.k8s.io" | "policy" | "autoscaling" | "scheduling.k8s.io"
    ) || (info.group.is_empty() && info.plural == "replicationcontrollers")
}

/// Resources where PUT of a missing object creates it (upstream's AllowCreateOnUpdate).
fn create_on_update(info: &ResourceInfo) -> bool {
    matches!(
        info.plural,
        "endpoints" | "events" | "leases" | "endpointslices"
    )
}

/// The store state of one object.
pub struct Current {
    /// The object, resourceVersion set.
    pub object: Value,
    /// Its mod revision.
    pub revision: i64,
}

/// Parsed list options shared by list, watch and deletecollection.
#[derive(Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0: none).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
}

impl ListOptions {
    /// Parses the query parameters of a list or watch.
    pub fn parse(q: &HashMap<String, String>, info: &ResourceInfo) -> ApiResult<Self> {
        let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(
            q.get("fieldSelector").map_or("", String::as_str),
            selectable_fields(info.group, info.plural),
        )
        .map_err(|e| ApiError::bad_request(e.0))?;
        let limit = match q.get("limit") {
            None => 0,
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?
                .max(0) as usize,
        };
        Ok(Self {
            labels,
            fields,
            limit,
            continue_token: q.get("continue").filter(|s| !s.is_empty()).cloned(),
            resource_version: q.get("resourceVersion").filter(|s| !s.is_empty()).cloned(),
            resource_version_match: q
                .get("resourceVersionMatch")
                .filter(|s| !s.is_empty())
                .cloned(),
        })
    }

    /// Whether `obj` passes both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.get("metadata").and_then(|m| m.get("labels"));
        self.labels
            .matches(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
            && self.fields.matches(|path| field_value(obj, path))
    }
}

/// The string value of a selectable field.
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Parses a resourceVersion parameter.
pub fn parse_rv(rv: &str) -> ApiResult<i64> {
    rv.parse::<i64>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv}")))
}

/// The REST storage of every built-in resource.
pub struct Rest {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The resources served.
    pub registry: &'static Registry,
    caches: HashMap<(&'static str, &'static str), Arc<WatchCache>>,
    /// Where Services get their ClusterIPs and NodePorts.
    ranges: ServiceRanges,
}

/// `/registry/<group>/<resource>/`.
pub fn resource_prefix(info: &ResourceInfo) -> String {
    let group = if info.group.is_empty() {
        "core"
    } else {
        info.group
    };
    format!("/registry/{group}/{}/", info.plural)
}

impl Rest {
    /// Starts a watch cache for every listable resource and creates the system namespaces.
    pub async fn start(
        store: Arc<dyn Store>,
        registry: &'static Registry,
        ranges: ServiceRanges,
    ) -> ApiResult<Arc<Self>> {
        let mut caches = HashMap::new();
        for info in registry.resources() {
            if info.list_kind.is_none() || caches.contains_key(&(info.group, info.plural)) {
                continue;
            }
            let cache = WatchCache::new(resource_prefix(info).into_bytes());
            caches.insert((info.group, info.plural), cache);
        }
        crate::cache::start_all(
            store.clone(),
            b"/registry/".to_vec(),
            caches.values().cloned().collect(),
        );
        let rest = Arc::new(Self {
            store,
            registry,
            caches,
            ranges,
        });
        rest.bootstrap().await?;
        Ok(rest)
    }

    async fn bootstrap(&self) -> ApiResult<()> {
        let info = self
            .registry
            .get("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("namespaces are not registered"))?;
        for ns in SYSTEM_NAMESPACES {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            match self.create(info, None, obj, false).await {
                Ok(_) => tracing::info!(namespace = ns, "created system namespace"),
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(info) = self
            .registry
            .get("scheduling.k8s.io", "v1", "priorityclasses")
        {
            for pc in crate::admission::system_priority_classes() {
                match self.create(info, None, pc, false).await {
                    Ok(_) | Err(ApiError { code: 409, .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn cache(&self, info: &ResourceInfo) -> ApiResult<&Arc<WatchCache>> {
        self.caches.get(&(info.group, info.plural)).ok_or_else(|| {
            ApiError::method_not_allowed(format!("{} cannot be listed", info.plural))
        })
    }

    /// The store key of an object.
    pub fn key(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> Vec<u8> {
        let mut k = resource_prefix(info);
        if info.is_namespaced() {
            k.push_str(namespace.unwrap_or(""));
            k.push('/');
        }
        k.push_str(name);
        k.into_bytes()
    }

    /// Reads one object from the store.
    pub async fn get(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Current> {
        let kv = self
            .store
            .get(&Self::key(info, namespace, name))
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found(target(info, name)))?;
        let object = decode(&kv.value, kv.mod_revision)
            .ok_or_else(|| ApiError::internal(format!("stored object {name} is not JSON")))?;
        Ok(Current {
            object: conversion::from_storage(info, object),
            revision: kv.mod_revision,
        })
    }

    /// The registry entry of the version `info`'s resource is stored in (itself, unless it
    /// is served in several versions; see [`conversion`]).
    fn storage_info(&self, info: &ResourceInfo) -> &'static ResourceInfo {
        let version = conversion::storage_version(info).unwrap_or(info.version);
        self.registry
            .get(info.group, version, info.plural)
            .expect("every served resource has its storage version registered")
    }

    /// Lists objects (a whole `kind: XList` document).
    pub async fn list(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<Value> {
        let page = self.list_page(info, namespace, opts).await?;
        let list = json!({
            "kind": info.list_kind.unwrap_or("List"),
            "apiVersion": info.api_version(),
            "metadata": page.metadata(),
            "items": page.items.iter().map(|o| (**o).clone()).collect::<Vec<Value>>(),
        });
        Ok(conversion::list_from_storage(info, list))
    }

    /// Lists objects straight into the JSON bytes of the `XList` document: the objects are
    /// written from the cache as they are, without copying them into a new tree first
    /// (what makes a LIST of 10,000 objects cheap).
    pub async fn list_json(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<Vec<u8>> {
        if conversion::storage_version(info).is_some() {
            let list = self.list(info, namespace, opts).await?;
            return serde_json::to_vec(&list).map_err(ApiError::internal);
        }
        let page = self.list_page(info, namespace, opts).await?;
        let bytes_hint: usize = page.items.len() * 1024 + 256;
        let mut out = Vec::with_capacity(bytes_hint);
        let head = json!({
            "kind": info.list_kind.unwrap_or("List"),
            "apiVersion": info.api_version(),
            "metadata": page.metadata(),
        });
        let head = serde_json::to_vec(&head).map_err(ApiError::internal)?;
        // `{...head...}` without its closing brace, then the items.
        out.extend_from_slice(&head[..head.len() - 1]);
        out.extend_from_slice(br#","items":["#);
        for (i, item) in page.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &**item).map_err(ApiError::internal)?;
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }

    /// The objects of a LIST, from the cache or (paged, exact revision) from the store.
    async fn list_page(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<ListPage> {
        let mut prefix = resource_prefix(info);
        if let Some(ns) = namespace.filter(|_| info.is_namespaced()) {
            prefix.push_str(ns);
            prefix.push('/');
        }
        if opts.limit > 0
            || opts.continue_token.is_some()
            || opts.resource_version_match.as_deref() == Some("Exact")
        {
            let (items, revision, cont, remaining) = self.list_from_store(&prefix, opts).await?;
            return Ok(ListPage {
                items: items.into_iter().map(Arc::new).collect(),
                revision,
                cont,
                remaining,
            });
        }
        let cache = self.cache(info)?;
        match opts.resource_version.as_deref() {
            // "0": any state the cache has.
            Some("0") => cache.wait_for(1).await?,
            // NotOlderThan the given revision.
            Some(rv) => cache.wait_for(parse_rv(rv)?).await?,
            // Most recent: a consistent read, served from the cache once it caught up.
            None => {
                let current = self.store.current_revision().await.map_err(store_error)?;
                cache.wait_for(current).await?
            }
        }
        let (items, revision) = cache.list(prefix.as_bytes());
        Ok(ListPage {
            items: items.into_iter().filter(|o| opts.matches(o)).collect(),
            revision,
            cont: None,
            remaining: None,
        })
    }

    /// A paged (or exact-revision) list read from the store, as upstream does with etcd.
    async fn list_from_store(
        &self,
        prefix: &str,
        opts: &ListOptions,
    ) -> ApiResult<(Vec<Value>, i64, Option<String>, Option<i64>)> {
        let (mut start, mut revision) = match &opts.continue_token {
            Some(token) => decode_continue(token, prefix)?,
            None => {
                let rev = match opts.resource_version.as_deref() {
                    Some(rv) if opts.resource_version_match.as_deref() == Some("Exact") => {
                        parse_rv(rv)?
                    }
                    _ => 0,
                };
                (prefix.as_bytes().to_vec(), rev)
            }
        };
        let limit = if opts.limit == 0 {
            usize::MAX
        } else {
            opts.limit
        };
        let mut items = Vec::new();
        loop {
            let mut req = RangeRequest::prefix(prefix).at_revision(revision);
            req.key = start.clone();
            req.limit = if limit == usize::MAX {
                0
            } else {
                limit - items.len()
            };
            let resp = self.store.range(req).await.map_err(|e| match e {
                StoreError::Compacted { .. } => ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ),
                other => store_error(other),
            })?;
            revision = resp.revision;
            let last = resp.kvs.last().map(|kv| kv.key.clone());
            for kv in &resp.kvs {
                if let Some(obj) = decode(&kv.value, kv.mod_revision)
                    && opts.matches(&obj)
                {
                    items.push(obj);
                }
            }
            match (resp.more, last) {
                (true, Some(last)) if items.len() < limit => {
                    start = last;
                    start.push(0);
                }
                (true, Some(last)) => {
                    let remaining = (resp.count - resp.kvs.len()) as i64;
                    let remaining = opts.labels.is_empty().then_some(remaining);
                    let mut next = last;
                    next.push(0);
                    return Ok((
                        items,
                        revision,
                        Some(encode_continue(&next, revision)),
                        remaining,
                    ));
                }
                _ => return Ok((items, revision, None, None)),
            }
        }
    }

    /// The watch cache of a resource, for the watch handler.
    pub fn watch_cache(&self, info: &ResourceInfo) -> ApiResult<&Arc<WatchCache>> {
        self.cache(info)
    }

    /// Checks the namespace of a namespaced create: it must exist and not be terminating.
    async fn check_namespace(&self, namespace: &str) -> ApiResult<()> {
        let info = self
            .registry
            .get("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("namespaces are not registered"))?;
        let ns = self.get(info, None, namespace).await?;
        if meta_str(&ns.object, "deletionTimestamp").is_some()
            || ns.object.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
        {
            return Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// Creates an object as the API server itself (field manager `kube-apiserver`).
    pub async fn create(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        obj: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        self.create_as(info, namespace, obj, dry_run, &FieldManager::server())
            .await
    }

    /// Creates an object written by `manager` (recorded in `metadata.managedFields`). `obj`
    /// has been decoded and typed-checked by the caller.
    pub async fn create_as(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        obj: Value,
        dry_run: bool,
        manager: &FieldManager,
    ) -> ApiResult<Value> {
        let storage = self.storage_info(info);
        let obj = conversion::to_storage(info, obj);
        let created = self
            .create_stored(storage, namespace, obj, dry_run, manager)
            .await?;
        Ok(conversion::from_storage(info, created))
    }

    /// [`Self::create_as`] in the storage version.
    async fn create_stored(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        mut obj: Value,
        dry_run: bool,
        manager: &FieldManager,
    ) -> ApiResult<Value> {
        self.prepare_identity(info, namespace, &mut obj)?;
        if meta_str(&obj, "name").is_none_or(str::is_empty)
            && let Some(prefix) = meta_str(&obj, "generateName").map(str::to_string)
        {
            set_meta(
                &mut obj,
                "name",
                json!(format!("{prefix}{}", meta::random_suffix())),
            );
        }
        let name = meta_str(&obj, "name").unwrap_or("").to_string();
        validate_meta(info, &obj, &name, true)?;
        if info.is_namespaced() {
            self.check_namespace(namespace.unwrap_or_default()).await?;
        }
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            remove_meta(&mut obj, field);
        }
        set_meta(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
        set_meta(&mut obj, "creationTimestamp", json!(meta::now_rfc3339()));
        if tracks_generation(info) {
            set_meta(&mut obj, "generation", json!(1));
        } else {
            remove_meta(&mut obj, "generation");
        }
        crate::defaults::apply(info, &mut obj, true);
        crate::apply::track(info, None, &mut obj, manager);
        crate::admission::admit_create(self, info, &mut obj).await?;
        crate::strategy::prepare_for_create(info, &mut obj);
        crate::strategy::validate(info, &obj, None)?;
        let key = Self::key(info, namespace, &name);
        let mut taken = Taken::default();
        for _ in 0..ALLOCATION_ATTEMPTS {
            let mut candidate = obj.clone();
            let claims = self.plan_allocation(info, None, &mut candidate, &taken)?;
            if dry_run {
                return Ok(candidate);
            }
            let bytes = serde_json::to_vec(&candidate).map_err(ApiError::internal)?;
            let txn = Txn::new()
                .when(Compare::absent(&key))
                .then(Op::put(&key, bytes));
            let resp = self
                .store
                .txn(with_claims(txn, &claims))
                .await
                .map_err(store_error)?;
            if resp.succeeded {
                set_meta(
                    &mut candidate,
                    "resourceVersion",
                    json!(resp.revision.to_string()),
                );
                return Ok(candidate);
            }
            if resp.current.first().is_some_and(Option::is_some) {
                return Err(ApiError::already_exists(target(info, &name)));
            }
            self.allocation_clash(&claims, &resp.current[1..], &name)?;
            taken = self.taken().await?;
        }
        Err(ApiError::internal(
            "could not allocate the Service's IP and ports",
        ))
    }

    /// The ClusterIP/NodePort claims of a Service write (none for other kinds).
    fn plan_allocation(
        &self,
        info: &ResourceInfo,
        old: Option<&Value>,
        new: &mut Value,
        taken: &Taken,
    ) -> ApiResult<Claims> {
        if !is_service(info) {
            return Ok(Claims::default());
        }
        allocator::plan(&self.ranges, old, new, taken)
    }

    /// After a failed write: a user-chosen value someone else holds is the user's error;
    /// a random pick that clashed is retried.
    fn allocation_clash(
        &self,
        claims: &Claims,
        current: &[Option<rkube_store::KeyValue>],
        name: &str,
    ) -> ApiResult<()> {
        for (claim, cur) in claims.claim.iter().zip(current) {
            if cur.is_some() && claim.chosen_by_user {
                return Err(claim.taken(name));
            }
        }
        Ok(())
    }

    /// Every allocated IP and port, read when random picks keep clashing (a nearly full
    /// range).
    async fn taken(&self) -> ApiResult<Taken> {
        let resp = self
            .store
            .range(RangeRequest::prefix(Taken::PREFIX))
            .await
            .map_err(store_error)?;
        Ok(Taken::from_keys(
            resp.kvs.iter().map(|kv| kv.key.as_slice()),
        ))
    }

    /// Creates (or keeps) the `kubernetes` Service in `default`: the API server at the first
    /// IP of the service range, as upstream.
    pub async fn ensure_kubernetes_service(&self, port: u16) -> ApiResult<()> {
        let info = self
            .registry
            .get("", "v1", "services")
            .ok_or_else(|| ApiError::internal("services are not registered"))?;
        let ip = self.ranges.first_ip().to_string();
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": ip, "type": "ClusterIP", "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
        });
        match self.create(info, Some("default"), svc, false).await {
            Ok(_) => {
                tracing::info!(%ip, "created the kubernetes Service");
                Ok(())
            }
            Err(e) if e.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets apiVersion/kind and checks the body's namespace against the URL's.
    fn prepare_identity(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        obj: &mut Value,
    ) -> ApiResult<()> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        obj["apiVersion"] = json!(info.api_version());
        obj["kind"] = json!(info.kind);
        if info.is_namespaced() {
            match (meta_str(obj, "namespace"), namespace) {
                (Some(body), Some(url)) if !body.is_empty() && body != url => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (_, Some(url)) => set_meta(obj, "namespace", json!(url)),
                (_, None) => {}
            }
        } else {
            remove_meta(obj, "namespace");
        }
        Ok(())
    }

    /// Replaces an object (PUT), or its status with `status_only`, as the API server itself.
    pub async fn update(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        obj: Value,
        status_only: bool,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let manager = FieldManager::server();
        self.update_as(info, namespace, name, obj, status_only, dry_run, &manager)
            .await
    }

    /// Replaces an object (PUT), or its status with `status_only`, written by `manager`.
    ///
    /// `expected_rv` (from the body's resourceVersion) makes the update conditional.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_as(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        obj: Value,
        status_only: bool,
        dry_run: bool,
        manager: &FieldManager,
    ) -> ApiResult<Value> {
        let storage = self.storage_info(info);
        let obj = conversion::to_storage(info, obj);
        let updated = self
            .update_stored(storage, namespace, name, obj, status_only, dry_run, manager)
            .await?;
        Ok(conversion::from_storage(info, updated))
    }

    /// [`Self::update_as`] in the storage version.
    #[allow(clippy::too_many_arguments)]
    async fn update_stored(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        mut obj: Value,
        status_only: bool,
        dry_run: bool,
        manager: &FieldManager,
    ) -> ApiResult<Value> {
        self.prepare_identity(info, namespace, &mut obj)?;
        match meta_str(&obj, "name") {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            None | Some("") => set_meta(&mut obj, "name", json!(name)),
            _ => {}
        }
        let expected_rv =
            match meta_str(&obj, "resourceVersion") {
                Some(rv) if !rv.is_empty() => Some(parse_rv(rv).map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
                _ => None,
            };
        let key = Self::key(info, namespace, name);
        // Unconditional updates retry on a concurrent write, as upstream's GuaranteedUpdate.
        for _ in 0..16 {
            let current = match self.get(info, namespace, name).await {
                Ok(c) => c,
                Err(e) if e.code == 404 && create_on_update(info) && !status_only => {
                    return self.create_as(info, namespace, obj, dry_run, manager).await;
                }
                Err(e) => return Err(e),
            };
            if let Some(rv) = expected_rv
                && rv != current.revision
            {
                return Err(ApiError::modified(target(info, name)));
            }
            let mut new = obj.clone();
            merge_preserved(info, &current.object, &mut new, status_only);
            validate_meta(info, &new, name, false)?;
            crate::defaults::apply(info, &mut new, false);
            if is_service(info) {
                allocator::keep_allocated(&current.object, &mut new);
            }
            crate::apply::track(info, Some(&current.object), &mut new, manager);
            crate::strategy::validate(info, &new, Some(&current.object))?;
            crate::admission::admit_update(self, info, &new)?;
            return match self
                .write_update(info, &key, name, &current, new, dry_run)
                .await
            {
                Err(e) if e.reason == "Conflict" && expected_rv.is_none() => continue,
                other => other,
            };
        }
        Err(ApiError::modified(target(info, name)))
    }

    /// Writes `new` over `current` (CAS on its revision). Deletes instead when the update
    /// removed the last finalizer of an object being deleted.
    async fn write_update(
        &self,
        info: &ResourceInfo,
        key: &[u8],
        name: &str,
        current: &Current,
        new: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let mut taken = Taken::default();
        for _ in 0..ALLOCATION_ATTEMPTS {
            let mut candidate = new.clone();
            let claims =
                self.plan_allocation(info, Some(&current.object), &mut candidate, &taken)?;
            if let Some(written) = self
                .write_update_once(info, key, name, current, candidate, dry_run, &claims)
                .await?
            {
                return Ok(written);
            }
            taken = self.taken().await?;
        }
        Err(ApiError::internal(
            "could not allocate the Service's IP and ports",
        ))
    }

    /// One try of [`Self::write_update`]; `None` when a randomly picked IP or port clashed.
    #[allow(clippy::too_many_arguments)]
    async fn write_update_once(
        &self,
        info: &ResourceInfo,
        key: &[u8],
        name: &str,
        current: &Current,
        mut new: Value,
        dry_run: bool,
        claims: &Claims,
    ) -> ApiResult<Option<Value>> {
        let mut old_cmp = current.object.clone();
        remove_meta(&mut old_cmp, "resourceVersion");
        remove_meta(&mut new, "resourceVersion");
        if tracks_generation(info) && old_cmp.get("spec") != new.get("spec") {
            let generation = old_cmp
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            set_meta(&mut new, "generation", json!(generation + 1));
        }
        if old_cmp == new {
            // Nothing changed: no write, the resourceVersion stays (as upstream).
            return Ok(Some(current.object.clone()));
        }
        if meta_str(&new, "deletionTimestamp").is_some()
            && pending_finalizers(&old_cmp) > 0
            && pending_finalizers(&new) == 0
        {
            // The update removed the last finalizer of an object being deleted.
            if dry_run {
                return Ok(Some(new));
            }
            let revision = self
                .delete_stored(info, key, name, current)
                .await
                .map_err(|e| {
                    if e.code == 404 {
                        ApiError::modified(target(info, name))
                    } else {
                        e
                    }
                })?;
            set_meta(&mut new, "resourceVersion", json!(revision.to_string()));
            return Ok(Some(new));
        }
        if dry_run {
            set_meta(
                &mut new,
                "resourceVersion",
                json!(current.revision.to_string()),
            );
            return Ok(Some(new));
        }
        let bytes = serde_json::to_vec(&new).map_err(ApiError::internal)?;
        let txn = Txn::new()
            .when(Compare::mod_revision(key, current.revision))
            .then(Op::put(key, bytes));
        let resp = self
            .store
            .txn(with_claims(txn, claims))
            .await
            .map_err(store_error)?;
        if !resp.succeeded {
            match resp.current.first() {
                Some(None) => return Err(ApiError::not_found(target(info, name))),
                Some(Some(kv)) if kv.mod_revision != current.revision => {
                    return Err(ApiError::modified(target(info, name)));
                }
                _ => {}
            }
            self.allocation_clash(claims, &resp.current[1..], name)?;
            return Ok(None);
        }
        set_meta(
            &mut new,
            "resourceVersion",
            json!(resp.revision.to_string()),
        );
        Ok(Some(new))
    }

    /// Deletes the stored object (CAS on its revision) and, for a Service, its IP and ports.
    /// A concurrent change is a `Conflict`, a vanished object `NotFound`.
    async fn delete_stored(
        &self,
        info: &ResourceInfo,
        key: &[u8],
        name: &str,
        current: &Current,
    ) -> ApiResult<i64> {
        let mut txn = Txn::new()
            .when(Compare::mod_revision(key, current.revision))
            .then(Op::delete(key));
        if is_service(info) {
            for held in allocator::held_keys(&current.object) {
                txn = txn.then(Op::delete(held));
            }
        }
        let resp = self.store.txn(txn).await.map_err(store_error)?;
        if resp.succeeded {
            return Ok(resp.revision);
        }
        match resp.current.first() {
            Some(Some(_)) => Err(ApiError::conflict(
                target(info, name),
                "the object has been modified".to_owned(),
            )),
            _ => Err(ApiError::not_found(target(info, name))),
        }
    }

    /// Applies `patch_fn` to the current object and writes the result as the API server
    /// itself; see [`Self::patch_as`].
    pub async fn patch(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        status_only: bool,
        dry_run: bool,
        patch_fn: impl Fn(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        let manager = FieldManager::server();
        self.patch_as(
            info,
            namespace,
            name,
            status_only,
            dry_run,
            &manager,
            patch_fn,
        )
        .await
    }

    /// Applies `patch_fn` to the current object and writes the result, written by
    /// `manager`, retrying on conflicts (a patch is relative to whatever is current).
    /// `patch_fn` sees and returns the object in `info`'s version.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch_as(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        status_only: bool,
        dry_run: bool,
        manager: &FieldManager,
        patch_fn: impl Fn(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        if conversion::storage_version(info).is_none() {
            return self
                .patch_stored(
                    info,
                    namespace,
                    name,
                    status_only,
                    dry_run,
                    manager,
                    patch_fn,
                )
                .await;
        }
        let storage = self.storage_info(info);
        let converted = |stored: &Value| {
            let served = conversion::from_storage(info, stored.clone());
            Ok(conversion::to_storage(info, patch_fn(&served)?))
        };
        let patched = self
            .patch_stored(
                storage,
                namespace,
                name,
                status_only,
                dry_run,
                manager,
                converted,
            )
            .await?;
        Ok(conversion::from_storage(info, patched))
    }

    /// [`Self::patch_as`] in the storage version.
    #[allow(clippy::too_many_arguments)]
    async fn patch_stored(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        status_only: bool,
        dry_run: bool,
        manager: &FieldManager,
        patch_fn: impl Fn(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        let key = Self::key(info, namespace, name);
        for _ in 0..16 {
            let current = self.get(info, namespace, name).await?;
            let mut new = patch_fn(&current.object)?;
            // A resourceVersion in the patch is a precondition.
            if let Some(rv) = meta_str(&new, "resourceVersion")
                && rv != current.revision.to_string()
            {
                return Err(ApiError::modified(target(info, name)));
            }
            let mut new_checked = new.take();
            self.prepare_identity(info, namespace, &mut new_checked)?;
            if meta_str(&new_checked, "name") != Some(name) {
                return Err(ApiError::bad_request(
                    "the name of the object may not be changed by a patch",
                ));
            }
            merge_preserved(info, &current.object, &mut new_checked, status_only);
            validate_meta(info, &new_checked, name, false)?;
            crate::defaults::apply(info, &mut new_checked, false);
            if is_service(info) {
                allocator::keep_allocated(&current.object, &mut new_checked);
            }
            crate::apply::track(info, Some(&current.object), &mut new_checked, manager);
            crate::strategy::validate(info, &new_checked, Some(&current.object))?;
            crate::admission::admit_update(self, info, &new_checked)?;
            match self
                .write_update(info, &key, name, &current, new_checked, dry_run)
                .await
            {
                Err(e) if e.reason == "Conflict" => continue,
                other => return other,
            }
        }
        Err(ApiError::modified(target(info, name)))
    }

    /// Binds a pod to `node` (`pods/binding`): sets `spec.nodeName` and the `PodScheduled`
    /// condition in one write, as upstream's binding storage does, without tracking
    /// managedFields. Refused for a pod that is bound already or being deleted.
    pub async fn bind_pod(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        node: &str,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let key = Self::key(info, namespace, name);
        for _ in 0..16 {
            let current = self.get(info, namespace, name).await?;
            let cur = &current.object;
            if let Some(existing) = cur
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(ApiError::conflict(
                    target(info, name),
                    format!("pod {name} is already assigned to node \"{existing}\""),
                ));
            }
            if meta_str(cur, "deletionTimestamp").is_some() {
                return Err(ApiError::conflict(
                    target(info, name),
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            let mut new = cur.clone();
            new["spec"]["nodeName"] = json!(node);
            set_pod_condition(&mut new, "PodScheduled", "True");
            match self
                .write_update(info, &key, name, &current, new, dry_run)
                .await
            {
                Err(e) if e.reason == "Conflict" => continue,
                other => return other,
            }
        }
        Err(ApiError::modified(target(info, name)))
    }

    /// Deletes an object per `DeleteOptions`. Returns the object and whether it is gone now
    /// (false: it was marked for deletion and waits for finalizers or a graceful stop).
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> ApiResult<(Value, bool)> {
        let storage = self.storage_info(info);
        let (obj, gone) = self
            .delete_in_storage(storage, namespace, name, options, dry_run)
            .await?;
        let obj = if obj.is_null() {
            obj
        } else {
            conversion::from_storage(info, obj)
        };
        Ok((obj, gone))
    }

    /// [`Self::delete`] in the storage version.
    async fn delete_in_storage(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> ApiResult<(Value, bool)> {
        crate::admission::admit_delete(info, name)?;
        let key = Self::key(info, namespace, name);
        for _ in 0..16 {
            let current = self.get(info, namespace, name).await?;
            if let Some(uid) = options
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                && Some(uid) != meta_str(&current.object, "uid")
            {
                return Err(ApiError::conflict(
                    target(info, name),
                    format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&current.object, "uid").unwrap_or("")
                    ),
                ));
            }
            if let Some(rv) = options
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                && rv != current.revision.to_string()
            {
                return Err(ApiError::conflict(
                    target(info, name),
                    format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        current.revision
                    ),
                ));
            }
            let mut obj = current.object.clone();
            let mut finalizers: Vec<Value> = obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            // propagationPolicy is recorded the way upstream records it: as finalizers the
            // garbage collector acts on.
            let policy = options
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .or_else(
                    || match options.get("orphanDependents").and_then(Value::as_bool) {
                        Some(true) => Some("Orphan"),
                        Some(false) => Some("Background"),
                        None => None,
                    },
                );
            // An explicit policy replaces the one recorded by an earlier delete (upstream
            // `deletionFinalizersForGarbageCollection` drops both, then adds the one asked for).
            if policy.is_some() {
                finalizers.retain(|f| f != "foregroundDeletion" && f != "orphan");
            }
            match policy {
                Some("Foreground") => add_finalizer(&mut finalizers, "foregroundDeletion"),
                Some("Orphan") => add_finalizer(&mut finalizers, "orphan"),
                Some("Background") | None => {}
                Some(other) => {
                    return Err(ApiError::invalid(
                        info.group,
                        info.kind,
                        name,
                        vec![Cause {
                            reason: "FieldValueNotSupported",
                            message: format!(
                                "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                            ),
                            field: "propagationPolicy".into(),
                        }],
                    ));
                }
            }
            let graceful = crate::strategy::grace_period(info, &obj, options);
            let is_namespace = info.plural == "namespaces" && info.group.is_empty();
            if !finalizers.is_empty() || graceful.is_some() || is_namespace {
                let before = obj
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if meta_str(&obj, "deletionTimestamp").is_some() {
                    if finalizers == before {
                        // Already being deleted: nothing more to record.
                        return Ok((obj, false));
                    }
                } else {
                    let grace = graceful.unwrap_or(0);
                    let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
                    set_meta(
                        &mut obj,
                        "deletionTimestamp",
                        json!(when.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                    set_meta(&mut obj, "deletionGracePeriodSeconds", json!(grace));
                }
                set_meta(&mut obj, "finalizers", Value::Array(finalizers));
                crate::strategy::prepare_for_delete(info, &mut obj);
                match self
                    .write_update(info, &key, name, &current, obj, dry_run)
                    .await
                {
                    Err(e) if e.reason == "Conflict" => continue,
                    Err(e) => return Err(e),
                    Ok(obj) => return Ok((obj, false)),
                }
            }
            if dry_run {
                return Ok((obj, true));
            }
            match self.delete_stored(info, &key, name, &current).await {
                Ok(revision) => {
                    set_meta(&mut obj, "resourceVersion", json!(revision.to_string()));
                    return Ok((obj, true));
                }
                Err(e) if e.reason == "Conflict" => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::modified(target(info, name)))
    }
}

/// The objects of one LIST response and its list metadata.
struct ListPage {
    items: Vec<Arc<Value>>,
    revision: i64,
    cont: Option<String>,
    remaining: Option<i64>,
}

impl ListPage {
    fn metadata(&self) -> Value {
        let mut metadata = json!({"resourceVersion": self.revision.to_string()});
        if let Some(c) = &self.cont {
            metadata["continue"] = json!(c);
        }
        if let Some(r) = self.remaining {
            metadata["remainingItemCount"] = json!(r);
        }
        metadata
    }
}

/// How often a Service write re-picks clashing IPs/ports. After the first clash every pick
/// is made among the values the store shows free, so a retry fails only when another
/// writer took the same value in between.
const ALLOCATION_ATTEMPTS: usize = 64;

fn is_service(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "services"
}

/// Adds a Service write's claims (keys that must be absent, then created) and releases.
fn with_claims(mut txn: Txn, claims: &Claims) -> Txn {
    for claim in &claims.claim {
        txn = txn
            .when(Compare::absent(&claim.key))
            .then(Op::put(&claim.key, b"{}".to_vec()));
    }
    for key in &claims.release {
        txn = txn.then(Op::delete(key));
    }
    txn
}

/// Sets (or adds) a pod condition, moving its lastTransitionTime only when the status
/// changes, as upstream's `UpdatePodCondition`.
fn set_pod_condition(pod: &mut Value, kind: &str, status: &str) {
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let now = meta::now_rfc3339();
    let Some(conditions) = pod["status"]["conditions"].as_array_mut() else {
        return;
    };
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(c) if c["status"] == status => {}
        Some(c) => {
            *c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
        }
        None => conditions.push(
            json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now}),
        ),
    }
}

/// Finalizers that still hold an object: `metadata.finalizers`, and for namespaces also
/// `spec.finalizers` (the namespace controller's `kubernetes`).
fn pending_finalizers(obj: &Value) -> usize {
    let count = |p: &str| obj.pointer(p).and_then(Value::as_array).map_or(0, Vec::len);
    let namespace_spec = if obj.get("kind").and_then(Value::as_str) == Some("Namespace") {
        count("/spec/finalizers")
    } else {
        0
    };
    count("/metadata/finalizers") + namespace_spec
}

fn add_finalizer(finalizers: &mut Vec<Value>, name: &str) {
    if !finalizers.iter().any(|f| f == name) {
        finalizers.push(json!(name));
    }
}

/// What an update may not change: identity and server-managed metadata, and (depending on
/// the endpoint) the status or everything but the status.
fn merge_preserved(info: &ResourceInfo, old: &Value, new: &mut Value, status_only: bool) {
    let has_status = info.subresource("status").is_some();
    if status_only {
        // Status endpoint: only the status changes.
        let status = new.get("status").cloned();
        let rv = new.pointer("/metadata/resourceVersion").cloned();
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        if let Some(rv) = rv {
            set_meta(new, "resourceVersion", rv);
        }
        return;
    }
    for field in [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old.get("metadata").and_then(|m| m.get(field)) {
            Some(v) => set_meta(new, field, v.clone()),
            None => remove_meta(new, field),
        }
    }
    if has_status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
}

/// Name, namespace and label checks every object gets.
fn validate_meta(info: &ResourceInfo, obj: &Value, name: &str, creating: bool) -> ApiResult<()> {
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: name or generateName is required".into(),
            field: "metadata.name".into(),
        });
    } else if creating {
        for why in meta::name_rule(info.plural)(name) {
            causes.push(Cause::invalid("metadata.name", &json!(name), why));
        }
    }
    meta::validate_labels(obj, &mut causes);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(info.group, info.kind, name, causes))
    }
}

/// What an error about an object of `info` names.
pub fn target<'a>(info: &'a ResourceInfo, name: &'a str) -> Target<'a> {
    Target {
        group: info.group,
        resource: info.plural,
        name,
    }
}

/// Maps store failures to API errors.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::ValueTooLarge { size, limit, .. } => ApiError::too_large(format!(
            "Request entity too large: object is {size} bytes, the limit is {limit}"
        )),
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::expired(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        StoreError::FutureRevision { requested, current } => ApiError::timeout(format!(
            "Too large resource version: {requested}, current: {current}"
        )),
        StoreError::Unavailable { .. } => ApiError::unavailable(e.to_string()),
        other => ApiError::internal(other),
    }
}

/// Upstream's continue token: base64 of `{"v":"meta.k8s.io/v1","rv":N,"start":"KEY"}`, where
/// the key is relative to the list's prefix.
fn encode_continue(next_key: &[u8], revision: i64) -> String {
    use base64::Engine;
    let token =
        json!({"v": "meta.k8s.io/v1", "rv": revision, "start": String::from_utf8_lossy(next_key)});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<(Vec<u8>, i64)> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: illegal base64 data or invalid continue token",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = v
        .get("rv")
        .and_then(Value::as_i64)
        .filter(|r| *r > 0)
        .ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    if !start.starts_with(prefix) {
        return Err(bad());
    }
    Ok((start.as_bytes().to_vec(), rv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_stay_in_their_prefix() {
        let t = encode_continue(b"/registry/core/pods/default/b\0", 42);
        let (k, rv) = decode_continue(&t, "/registry/core/pods/default/").unwrap();
        assert_eq!(
            (k.as_slice(), rv),
            (&b"/registry/core/pods/default/b\0"[..], 42)
        );
        assert!(decode_continue(&t, "/registry/core/secrets/").is_err());
        assert!(decode_continue("!!!", "/").is_err());
    }

    #[test]
    fn field_values() {
        let pod =
            json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "hostNetwork": true}});
        assert_eq!(field_value(&pod, "spec.nodeName"), "n1");
        assert_eq!(field_value(&pod, "spec.hostNetwork"), "true");
        assert_eq!(field_value(&pod, "status.phase"), "");
    }
}
