//! HTTP handlers: routing a request to discovery, health, or the REST storage, decoding
//! bodies, and encoding responses (objects, lists, watch streams, `Status` errors).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Query;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use rkube_api::discovery::{self, DiscoveryFormat};
use rkube_api::registry::ResourceInfo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::apply::{self, FieldManager};
use crate::authn::Authenticator;
use crate::cache::{CacheEvent, WatchKind};
use crate::meta::meta_str;
use crate::patch::{self, PatchType};
use crate::request::{self, RequestInfo};
use crate::rest::{ListOptions, Rest, parse_rv, resource_prefix, target};
use crate::status::{ApiError, ApiResult, success_status};
use crate::tls::UserInfo;

/// Largest request body accepted (upstream: 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Everything a request handler needs.
pub struct ApiServer {
    /// The storage.
    pub rest: Arc<Rest>,
    /// Who is calling.
    pub authn: Authenticator,
    /// The address clients use (for `/api`'s serverAddressByClientCIDRs).
    pub advertise_address: String,
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(value.to_string()));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(err: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &err.to_status())
}

fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The `/version` document.
pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0+rkube.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

impl ApiServer {
    /// Handles one request. `peer` is the identity of the TLS client certificate, if any.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Body>,
        peer: Option<UserInfo>,
    ) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let started = std::time::Instant::now();
        let resp = match self.route(req, peer).await {
            Ok(resp) => resp,
            Err(err) => error_response(&err),
        };
        tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
        resp
    }

    async fn route(&self, req: Request<Body>, peer: Option<UserInfo>) -> ApiResult<Response<Body>> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        match path.as_str() {
            "/healthz" | "/livez" | "/readyz" => return Ok(self.health().await),
            _ => {}
        }
        let mut user = self.authn.authenticate(req.headers(), peer);
        if user.is_none()
            && let Some(keys) = &self.authn.service_account_keys
        {
            user = crate::serviceaccount_token::authenticate(keys, &self.rest, req.headers()).await;
        }
        let Some(user) = user else {
            return Err(ApiError::unauthorized());
        };
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let registry = self.rest.registry;
        match path.as_str() {
            "/version" => return Ok(json_response(StatusCode::OK, &version_info())),
            "/api" => {
                return Ok(match discovery::negotiate(accept.as_deref()) {
                    DiscoveryFormat::Aggregated(v) => typed_response(
                        &discovery::aggregated_discovery(registry, true, v),
                        v.content_type(),
                    ),
                    DiscoveryFormat::Legacy => typed_response(
                        &discovery::api_versions(registry, &self.advertise_address),
                        "application/json",
                    ),
                });
            }
            "/apis" => {
                return Ok(match discovery::negotiate(accept.as_deref()) {
                    DiscoveryFormat::Aggregated(v) => typed_response(
                        &discovery::aggregated_discovery(registry, false, v),
                        v.content_type(),
                    ),
                    DiscoveryFormat::Legacy => {
                        typed_response(&discovery::api_group_list(registry), "application/json")
                    }
                });
            }
            "/api/v1" => {
                return discovery::api_resource_list(registry, "", "v1")
                    .map(|d| typed_response(&d, "application/json"))
                    .ok_or_else(|| ApiError::no_route(&path));
            }
            _ => {}
        }
        if path == "/openapi/v2" || path == "/openapi/v3" || path.starts_with("/openapi/v3/") {
            return crate::openapi::serve(registry, &path, req.uri().query(), req.headers())
                .ok_or_else(|| ApiError::no_route(&path));
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if parts.first() == Some(&"apis") && parts.len() == 2 {
            return discovery::api_group(registry, parts[1])
                .map(|d| typed_response(&d, "application/json"))
                .ok_or_else(|| ApiError::no_route(&path));
        }
        if parts.first() == Some(&"apis") && parts.len() == 3 {
            return discovery::api_resource_list(registry, parts[1], parts[2])
                .map(|d| typed_response(&d, "application/json"))
                .ok_or_else(|| ApiError::no_route(&path));
        }
        let query: HashMap<String, String> = Query::try_from_uri(req.uri())
            .map(|Query(q)| q)
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        let Some(info) = request::parse(req.method(), &path, watch) else {
            return Err(ApiError::no_route(&path));
        };
        if info.verb == "create"
            && info.group == "authentication.k8s.io"
            && info.resource == "selfsubjectreviews"
        {
            return Ok(crate::serviceaccount_token::self_subject_review(&user));
        }
        self.resource(req, info, query, accept).await
    }

    async fn health(&self) -> Response<Body> {
        match self.rest.store.current_revision().await {
            Ok(_) => text(StatusCode::OK, "ok"),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "[-]etcd failed: reason withheld\nhealthz check failed",
            ),
        }
    }

    async fn resource(
        &self,
        req: Request<Body>,
        ri: RequestInfo,
        query: HashMap<String, String>,
        accept: Option<String>,
    ) -> ApiResult<Response<Body>> {
        let registry = self.rest.registry;
        let info = registry
            .get(&ri.group, &ri.version, &ri.resource)
            .ok_or_else(|| ApiError::no_route(req.uri().path()))?;
        // `namespaces/NAME` carries the name in `namespace` too; only namespaced resources
        // have a namespace.
        let namespace = if info.is_namespaced() {
            ri.namespace.as_deref()
        } else {
            None
        };
        let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
        if let Some(d) = query.get("dryRun")
            && d != "All"
            && !d.is_empty()
        {
            return Err(ApiError::bad_request(format!(
                "unsupported dryRun value {d:?}: supported: All"
            )));
        }
        let table = accept.as_deref().is_some_and(|a| a.contains("as=Table"));
        let headers = req.headers().clone();
        let body = read_body(req).await?;

        if let Some(sub) = ri.subresource.as_deref() {
            let name = ri.name.as_deref().unwrap_or_default();
            return self
                .subresource(
                    info, namespace, name, sub, ri.verb, &headers, &body, &query, dry_run,
                )
                .await;
        }
        if info.is_namespaced()
            && namespace.is_none()
            && !matches!(ri.verb, "list" | "watch" | "deletecollection")
        {
            return Err(ApiError::no_route(&format!(
                "{} requires a namespace",
                info.plural
            )));
        }
        if !info.has_verb(
            rkube_api::registry::Verb::parse(ri.verb).unwrap_or(rkube_api::registry::Verb::Get),
        ) {
            return Err(ApiError::method_not_allowed(format!(
                "{} does not support {}",
                info.plural, ri.verb
            )));
        }
        let name = ri.name.clone().unwrap_or_default();
        match ri.verb {
            "get" => {
                let cur = self.rest.get(info, namespace, &name).await?;
                Ok(self.object_response(StatusCode::OK, info, cur.object, table))
            }
            "list" => {
                let opts = ListOptions::parse(&query, info)?;
                if table {
                    let list = self.rest.list(info, namespace, &opts).await?;
                    return Ok(json_response(
                        StatusCode::OK,
                        &crate::table::list_table(info, &list),
                    ));
                }
                let bytes = self.rest.list_json(info, namespace, &opts).await?;
                let mut resp = Response::new(Body::from(bytes));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok(resp)
            }
            "watch" => self.watch(info, namespace, &query, table).await,
            "create" => {
                let (obj, warnings) = decode_object(info, &headers, &body, &query)?;
                let manager = request_manager(&headers, &query, "CreateOptions", None)?;
                let obj = self
                    .rest
                    .create_as(info, namespace, obj, dry_run, &manager)
                    .await?;
                let mut resp = self.object_response(StatusCode::CREATED, info, obj, false);
                add_warnings(&mut resp, &warnings);
                Ok(resp)
            }
            "update" => {
                let (obj, warnings) = decode_object(info, &headers, &body, &query)?;
                let manager = request_manager(&headers, &query, "UpdateOptions", None)?;
                let obj = self
                    .rest
                    .update_as(info, namespace, &name, obj, false, dry_run, &manager)
                    .await?;
                let mut resp = self.object_response(StatusCode::OK, info, obj, false);
                add_warnings(&mut resp, &warnings);
                Ok(resp)
            }
            "patch" => {
                let (obj, created, warnings) = self
                    .patch(
                        info, namespace, &name, &headers, &body, &query, false, dry_run,
                    )
                    .await?;
                let code = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                let mut resp = self.object_response(code, info, obj, false);
                add_warnings(&mut resp, &warnings);
                Ok(resp)
            }
            "delete" => {
                let options = delete_options(&body, &query)?;
                let (obj, gone) = self
                    .rest
                    .delete(info, namespace, &name, &options, dry_run)
                    .await?;
                let code = if gone {
                    StatusCode::OK
                } else {
                    StatusCode::ACCEPTED
                };
                if gone && obj.is_null() {
                    return Ok(json_response(
                        code,
                        &success_status(target(info, &name), None),
                    ));
                }
                Ok(self.object_response(code, info, obj, false))
            }
            "deletecollection" => {
                let options = delete_options(&body, &query)?;
                let opts = ListOptions::parse(&query, info)?;
                let list = self.rest.list(info, namespace, &opts).await?;
                let mut deleted = Vec::new();
                for item in list["items"].as_array().into_iter().flatten() {
                    let (ns, n) = (
                        meta_str(item, "namespace"),
                        meta_str(item, "name").unwrap_or(""),
                    );
                    match self.rest.delete(info, ns, n, &options, dry_run).await {
                        Ok((obj, _)) => deleted.push(obj),
                        Err(e) if e.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
                let mut out = list;
                out["items"] = Value::Array(deleted);
                Ok(json_response(StatusCode::OK, &out))
            }
            other => Err(ApiError::method_not_allowed(format!(
                "verb {other} is not supported"
            ))),
        }
    }

    fn object_response(
        &self,
        code: StatusCode,
        info: &ResourceInfo,
        obj: Value,
        table: bool,
    ) -> Response<Body> {
        if table {
            json_response(code, &crate::table::object_table(info, &obj))
        } else {
            json_response(code, &obj)
        }
    }

    /// A PATCH of the object (or, with `status_only`, of its status). Returns the object,
    /// whether an apply created it, and the warnings to send back.
    #[allow(clippy::too_many_arguments)]
    async fn patch(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        headers: &HeaderMap,
        body: &[u8],
        query: &HashMap<String, String>,
        status_only: bool,
        dry_run: bool,
    ) -> ApiResult<(Value, bool, Vec<String>)> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let patch_type =
            PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media_type(ct))?;
        if patch_type == PatchType::Apply {
            return self
                .apply(info, namespace, name, body, query, status_only, dry_run)
                .await;
        }
        if query.contains_key("force") {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "PatchOptions",
                "",
                vec![crate::status::Cause::forbidden(
                    "force",
                    "may not be specified for non-apply patch",
                )],
            ));
        }
        let manager = request_manager(
            headers,
            query,
            "PatchOptions",
            status_only.then_some("status"),
        )?;
        let doc: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        let strict = query.get("fieldValidation").map(String::as_str) == Some("Strict");
        let result = self
            .rest
            .patch_as(
                info,
                namespace,
                name,
                status_only,
                dry_run,
                &manager,
                |current| {
                    let patched = match patch_type {
                        PatchType::Json => patch::json_patch(current, &doc),
                        PatchType::Merge => patch::merge_patch(current, &doc),
                        PatchType::Strategic | PatchType::Apply => {
                            patch::strategic_merge_patch(current, &doc)
                        }
                    }
                    .map_err(|e| {
                        if patch_type == PatchType::Json {
                            ApiError::invalid(
                                info.group,
                                info.kind,
                                name,
                                vec![crate::status::Cause {
                                    reason: "FieldValueInvalid",
                                    message: e,
                                    field: "".into(),
                                }],
                            )
                        } else {
                            ApiError::bad_request(e)
                        }
                    })?;
                    let (obj, unknown) = typed_check(info, patched)?;
                    if strict && !unknown.is_empty() {
                        return Err(strict_error(&unknown));
                    }
                    Ok(obj)
                },
            )
            .await?;
        Ok((result, false, Vec::new()))
    }

    /// Server-side apply (`PATCH` with `application/apply-patch+yaml`): creates the object
    /// or merges the applied configuration into it as the `fieldManager`, see
    /// [`crate::apply`]. Returns the object, whether it was created, and the warnings.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        body: &[u8],
        query: &HashMap<String, String>,
        status_only: bool,
        dry_run: bool,
    ) -> ApiResult<(Value, bool, Vec<String>)> {
        let manager = query.get("fieldManager").map_or("", String::as_str);
        let validation = query.get("fieldValidation").map_or("", String::as_str);
        let mut causes = Vec::new();
        if manager.is_empty() {
            causes.push(crate::status::Cause {
                reason: "FieldValueRequired",
                message: "Required value: is required for apply patch".into(),
                field: "fieldManager".into(),
            });
        }
        causes.extend(apply::field_manager_causes(manager));
        if !matches!(validation, "" | "Ignore" | "Warn" | "Strict") {
            causes.push(crate::status::Cause {
                reason: "FieldValueNotSupported",
                message: format!(
                    "Unsupported value: {validation:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
                ),
                field: "fieldValidation".into(),
            });
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid("meta.k8s.io", "PatchOptions", "", causes));
        }
        let force = match query.get("force").map(String::as_str) {
            None | Some("" | "false" | "0" | "f" | "F" | "FALSE" | "False") => false,
            Some("true" | "1" | "t" | "T" | "TRUE" | "True") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "invalid value for force: {other:?}"
                )));
            }
        };
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("error decoding YAML: the body is not UTF-8"))?;
        let config: Value = if text.trim().is_empty() {
            json!({})
        } else {
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
        };
        if !config.is_object() {
            return Err(ApiError::bad_request(
                "error decoding YAML: the applied configuration must be a map",
            ));
        }
        apply::check_config(info, &config)?;
        let config_name = meta_str(&config, "name").unwrap_or("");
        if !config_name.is_empty() && config_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({config_name}) does not match the name on the URL ({name})"
            )));
        }
        let (typed, unknown) = typed_check(info, config.clone())?;
        let warnings = match validation {
            "Strict" if !unknown.is_empty() => return Err(strict_error(&unknown)),
            "Ignore" => Vec::new(),
            _ => unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect(),
        };
        let config = apply::restrict_to_typed(&config, &typed);
        let opts = apply::ApplyOptions {
            manager,
            force,
            subresource: status_only.then_some("status"),
        };
        // Apply to what exists, or create; a concurrent create or delete makes it try again.
        for _ in 0..16 {
            match self.rest.get(info, namespace, name).await {
                Ok(_) => {
                    match self
                        .rest
                        .patch_as(
                            info,
                            namespace,
                            name,
                            status_only,
                            dry_run,
                            &FieldManager::Applied,
                            |current| {
                                let merged = apply::apply(info, Some(current), &config, &opts)?;
                                Ok(typed_check(info, merged)?.0)
                            },
                        )
                        .await
                    {
                        Err(e) if e.code == 404 && !status_only => continue,
                        other => return other.map(|obj| (obj, false, warnings)),
                    }
                }
                Err(e) if e.code == 404 && !status_only => {
                    if config_name.is_empty() {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object () does not match the name on the URL ({name})"
                        )));
                    }
                    let obj = typed_check(info, apply::apply(info, None, &config, &opts)?)?.0;
                    match self
                        .rest
                        .create_as(info, namespace, obj, dry_run, &FieldManager::Applied)
                        .await
                    {
                        Err(e) if e.reason == "AlreadyExists" => continue,
                        other => return other.map(|obj| (obj, true, warnings)),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::modified(target(info, name)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn subresource(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        sub: &str,
        verb: &str,
        headers: &HeaderMap,
        body: &[u8],
        query: &HashMap<String, String>,
        dry_run: bool,
    ) -> ApiResult<Response<Body>> {
        let Some(subinfo) = info.subresource(sub) else {
            return Err(ApiError::no_route(&format!("{}/{sub}", info.plural)));
        };
        let _ = subinfo;
        match (sub, verb) {
            ("status", "get") => {
                let cur = self.rest.get(info, namespace, name).await?;
                Ok(json_response(StatusCode::OK, &cur.object))
            }
            ("status", "update") | ("finalize", "update") => {
                let (obj, _) = decode_object(info, headers, body, query)?;
                let obj = if sub == "finalize" {
                    let finalizers = obj
                        .pointer("/spec/finalizers")
                        .cloned()
                        .unwrap_or(json!([]));
                    let manager = request_manager(headers, query, "UpdateOptions", Some(sub))?;
                    self.rest
                        .patch_as(info, namespace, name, false, dry_run, &manager, |cur| {
                            let mut new = cur.clone();
                            new["spec"]["finalizers"] = finalizers.clone();
                            Ok(new)
                        })
                        .await?
                } else {
                    let manager = request_manager(headers, query, "UpdateOptions", Some(sub))?;
                    self.rest
                        .update_as(info, namespace, name, obj, true, dry_run, &manager)
                        .await?
                };
                Ok(json_response(StatusCode::OK, &obj))
            }
            ("status", "patch") => {
                let (obj, _, warnings) = self
                    .patch(info, namespace, name, headers, body, query, true, dry_run)
                    .await?;
                let mut resp = json_response(StatusCode::OK, &obj);
                add_warnings(&mut resp, &warnings);
                Ok(resp)
            }
            ("scale", "get") => {
                let cur = self.rest.get(info, namespace, name).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &crate::strategy::scale_of(info, &cur.object),
                ))
            }
            ("scale", "update") | ("scale", "patch") => {
                let scale_doc: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding Scale: {e}")))?;
                let patch_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(PatchType::from_content_type);
                let options = if verb == "update" {
                    "UpdateOptions"
                } else {
                    "PatchOptions"
                };
                let manager = request_manager(headers, query, options, Some(sub))?;
                let obj = self
                    .rest
                    .patch_as(info, namespace, name, false, dry_run, &manager, |cur| {
                        let scale = crate::strategy::scale_of(info, cur);
                        let new_scale = match (verb, patch_type) {
                            ("update", _) => scale_doc.clone(),
                            (_, Some(PatchType::Json)) => patch::json_patch(&scale, &scale_doc)
                                .map_err(ApiError::bad_request)?,
                            (_, Some(PatchType::Merge)) => patch::merge_patch(&scale, &scale_doc)
                                .map_err(ApiError::bad_request)?,
                            _ => patch::strategic_merge_patch(&scale, &scale_doc)
                                .map_err(ApiError::bad_request)?,
                        };
                        let mut new = cur.clone();
                        crate::strategy::apply_scale(&mut new, &new_scale)?;
                        Ok(new)
                    })
                    .await?;
                Ok(json_response(
                    StatusCode::OK,
                    &crate::strategy::scale_of(info, &obj),
                ))
            }
            ("binding", "create") => {
                let binding = decode_sub_body(headers, body, "v1", "Binding")?;
                let node = binding
                    .pointer("/target/name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "",
                            "Binding",
                            name,
                            vec![crate::status::Cause::required("target.name")],
                        )
                    })?
                    .to_string();
                self.rest
                    .bind_pod(info, namespace, name, &node, dry_run)
                    .await?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            ("token", "create") if info.plural == "serviceaccounts" => {
                let keys = self.authn.service_account_keys.as_ref().ok_or_else(|| {
                    ApiError::unavailable("service account tokens are not enabled")
                })?;
                let request =
                    decode_sub_body(headers, body, "authentication.k8s.io/v1", "TokenRequest")?;
                crate::serviceaccount_token::create_token(
                    keys,
                    &self.rest,
                    namespace.unwrap_or_default(),
                    name,
                    request,
                )
                .await
            }
            ("eviction", "create") => {
                let eviction = decode_sub_body(headers, body, "policy/v1", "Eviction")?;
                let options = eviction.get("deleteOptions").cloned().unwrap_or(json!({}));
                self.rest
                    .delete(info, namespace, name, &options, dry_run)
                    .await?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "{}/{sub} does not support {verb} yet",
                info.plural
            ))),
        }
    }

    /// A watch: a stream of `{"type":..., "object":...}` lines.
    async fn watch(
        &self,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        query: &HashMap<String, String>,
        table: bool,
    ) -> ApiResult<Response<Body>> {
        let opts = ListOptions::parse(query, info)?;
        let cache = self.rest.watch_cache(info)?.clone();
        let bookmarks = query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true");
        let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
        let timeout = match query.get("timeoutSeconds") {
            Some(t) => Duration::from_secs(
                t.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
            ),
            None => Duration::from_secs(30 * 60),
        };
        let mut prefix = resource_prefix(info);
        if let Some(ns) = namespace {
            prefix.push_str(ns);
            prefix.push('/');
        }
        // Where the stream starts, and the synthetic ADDED events of the initial state.
        let (initial, mut cursor) = match opts.resource_version.as_deref() {
            None | Some("0") => {
                if opts.resource_version.is_none() {
                    let current = self
                        .rest
                        .store
                        .current_revision()
                        .await
                        .map_err(crate::rest::store_error)?;
                    cache.wait_for(current).await?;
                } else {
                    cache.wait_for(1).await?;
                }
                let (items, rev) = cache.list(prefix.as_bytes());
                (items, rev)
            }
            Some(rv) => {
                let rv = parse_rv(rv)?;
                cache.wait_for(rv).await?;
                if send_initial {
                    let (items, rev) = cache.list(prefix.as_bytes());
                    (items, rev)
                } else {
                    // Too old a revision is reported in the stream, as an ERROR event with a
                    // 410 Status, as upstream does.
                    (Vec::new(), rv)
                }
            }
        };
        let (tx, rx) = mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
        let namespace = namespace.map(str::to_string);
        let opts = Arc::new(opts);
        tokio::spawn(async move {
            // One event per line, written straight from the cached object (no copy of it).
            let line = |kind: &str, obj: &Value| {
                let mut out = Vec::with_capacity(256);
                out.extend_from_slice(br#"{"type":""#);
                out.extend_from_slice(kind.as_bytes());
                out.extend_from_slice(br#"","object":"#);
                serde_json::to_writer(&mut out, obj).map_err(std::io::Error::other)?;
                out.extend_from_slice(b"}\n");
                Ok(bytes::Bytes::from(out))
            };
            // `kubectl get -w` asks for Tables: each object event carries a one-row Table,
            // with the column definitions only in the first, as upstream sends them.
            let mut headers_sent = false;
            let mut object_line = |kind: &str, obj: &Value| {
                let converted;
                let obj = if crate::conversion::storage_version(info).is_some() {
                    converted = crate::conversion::from_storage(info, obj.clone());
                    &converted
                } else {
                    obj
                };
                if !table {
                    return line(kind, obj);
                }
                let mut t = crate::table::object_table(info, obj);
                if headers_sent {
                    t["columnDefinitions"] = json!([]);
                }
                headers_sent = true;
                line(kind, &t)
            };
            for obj in initial.iter().filter(|o| opts.matches(o)) {
                if tx.send(object_line("ADDED", obj)).await.is_err() {
                    return;
                }
            }
            if send_initial {
                let bm = bookmark(info, cursor, true);
                if tx.send(line("BOOKMARK", &bm)).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let mut changes = cache.subscribe();
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                match cache.events_after(cursor) {
                    Ok((events, rev)) => {
                        for ev in &events {
                            if let Some((kind, obj)) = visible(ev, namespace.as_deref(), &opts)
                                && tx.send(object_line(kind, obj)).await.is_err()
                            {
                                return;
                            }
                        }
                        cursor = rev.max(cursor);
                    }
                    Err(err) => {
                        let _ = tx.send(line("ERROR", &err.to_status())).await;
                        return;
                    }
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = tick.tick(), if bookmarks => {
                        if tx.send(line("BOOKMARK", &bookmark(info, cursor, false))).await.is_err() {
                            return;
                        }
                    }
                    () = tx.closed() => return,
                }
            }
        });
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut resp = Response::new(body);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        Ok(resp)
    }
}

/// A BOOKMARK event's object: only kind, apiVersion and resourceVersion.
fn bookmark(info: &ResourceInfo, revision: i64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": meta})
}

/// What a watcher with this namespace and these selectors sees of an event: objects moving
/// into the selection appear as ADDED, out of it as DELETED.
fn visible<'a>(
    ev: &'a CacheEvent,
    namespace: Option<&str>,
    opts: &ListOptions,
) -> Option<(&'static str, &'a Value)> {
    if let Some(ns) = namespace
        && meta_str(&ev.object, "namespace") != Some(ns)
    {
        return None;
    }
    let now = opts.matches(&ev.object);
    let before = ev.prev.as_ref().is_some_and(|p| opts.matches(p));
    match ev.kind {
        WatchKind::Added if now => Some(("ADDED", &ev.object)),
        WatchKind::Modified if now && before => Some(("MODIFIED", &ev.object)),
        WatchKind::Modified if now => Some(("ADDED", &ev.object)),
        WatchKind::Modified if before => Some(("DELETED", &ev.object)),
        WatchKind::Deleted if now => Some(("DELETED", &ev.object)),
        _ => None,
    }
}

fn typed_response<T: serde::Serialize>(doc: &T, content_type: &'static str) -> Response<Body> {
    let body = serde_json::to_vec(doc).unwrap_or_default();
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

async fn read_body(req: Request<Body>) -> ApiResult<bytes::Bytes> {
    use http_body_util::BodyExt;
    let too_large =
        || ApiError::too_large(format!("Request entity too large: limit is {MAX_BODY}"));
    let mut body = req.into_body();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    // Read the whole body even when it is too large (up to a bound), so the client gets the
    // 413 Status instead of a broken pipe while it is still sending.
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("cannot read request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > 64 * MAX_BODY {
                return Err(too_large());
            }
            if seen <= MAX_BODY {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > MAX_BODY {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

/// Decodes a create/update body (JSON or YAML), checks its apiVersion/kind, and runs it
/// through the kind's type. Returns the object and the warnings to send back.
fn decode_object(
    info: &ResourceInfo,
    headers: &HeaderMap,
    body: &[u8],
    query: &HashMap<String, String>,
) -> ApiResult<(Value, Vec<String>)> {
    let (ct, media) = body_media_type(headers);
    let obj: Value = match media {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                info.kind, info.version, info.kind
            ))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?
        }
        crate::protobuf::MEDIA_TYPE => {
            crate::protobuf::decode(body, &info.api_version(), info.kind)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        _ => return Err(ApiError::unsupported_media_type(ct)),
    };
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: the body must be a JSON object",
            info.kind, info.version, info.kind
        )));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && av != info.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            info.api_version()
        )));
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != info.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            info.kind
        )));
    }
    let (obj, unknown) = typed_check(info, obj)?;
    let validation = query
        .get("fieldValidation")
        .map(String::as_str)
        .unwrap_or("Warn");
    match validation {
        "Strict" if !unknown.is_empty() => Err(strict_error(&unknown)),
        "Strict" | "Warn" => Ok((
            obj,
            unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect(),
        )),
        "Ignore" => Ok((obj, Vec::new())),
        other => Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {other}; supported values: Ignore, Warn, Strict"
        ))),
    }
}

/// The field manager of a create, update or non-apply patch (`options` names the options
/// kind for errors, `CreateOptions`...): `fieldManager` when given (at most 128 printable
/// characters, else 422 as upstream), else derived from the User-Agent.
fn request_manager(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    options: &str,
    subresource: Option<&str>,
) -> ApiResult<FieldManager> {
    let manager = match query.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => {
            let causes = apply::field_manager_causes(m);
            if !causes.is_empty() {
                return Err(ApiError::invalid("meta.k8s.io", options, "", causes));
            }
            m.clone()
        }
        None => apply::manager_from_user_agent(
            headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        ),
    };
    Ok(match subresource {
        Some(sub) => FieldManager::subresource(manager, sub),
        None => FieldManager::update(manager),
    })
}

/// Runs an object through its kind's type: type errors are 400s, unknown fields are dropped
/// and reported.
fn typed_check(info: &ResourceInfo, mut obj: Value) -> ApiResult<(Value, Vec<String>)> {
    if !obj.is_object() {
        // E.g. a JSON patch that replaced the whole document with an array.
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: the object must be a JSON object",
            info.kind, info.version, info.kind
        )));
    }
    if obj.get("apiVersion").is_none() {
        obj["apiVersion"] = json!(info.api_version());
    }
    if obj.get("kind").is_none() {
        obj["kind"] = json!(info.kind);
    }
    match rkube_api::typed::normalize(info.group, info.version, info.kind, &obj) {
        None => Ok((obj, Vec::new())),
        Some(Ok(n)) => Ok((n.object, n.unknown_fields)),
        Some(Err(e)) => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            info.kind, info.version, info.kind
        ))),
    }
}

fn strict_error(unknown: &[String]) -> ApiError {
    ApiError::bad_request(format!(
        "strict decoding error: {}",
        unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn add_warnings(resp: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        let escaped = w.replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append("Warning", v);
        }
    }
}

/// A request body's Content-Type (JSON when absent) and its media type without parameters.
fn body_media_type(headers: &HeaderMap) -> (&str, &str) {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    (ct, ct.split(';').next().unwrap_or("").trim())
}

/// A subresource's body (Binding, Eviction): JSON, or protobuf as Go clients send it.
fn decode_sub_body(
    headers: &HeaderMap,
    body: &[u8],
    api_version: &str,
    kind: &str,
) -> ApiResult<Value> {
    let (_, media) = body_media_type(headers);
    let value: Value = if media == crate::protobuf::MEDIA_TYPE {
        crate::protobuf::decode(body, api_version, kind)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding {kind}: {e}")))?
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "{kind} must be a JSON object"
        )));
    }
    Ok(value)
}

/// DeleteOptions from the body, with query parameters taking their place when given.
fn delete_options(body: &[u8], query: &HashMap<String, String>) -> ApiResult<Value> {
    let mut options: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    if !options.is_object() {
        return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
    }
    if let Some(g) = query.get("gracePeriodSeconds") {
        let g: i64 = g
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?;
        options["gracePeriodSeconds"] = json!(g);
    }
    if let Some(p) = query.get("propagationPolicy") {
        options["propagationPolicy"] = json!(p);
    }
    if let Some(o) = query.get("orphanDependents") {
        options["orphanDependents"] = json!(o == "true");
    }
    Ok(options)
}
