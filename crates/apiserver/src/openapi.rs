//! The OpenAPI documents: `/openapi/v2` (one Swagger 2.0 document, JSON or gnostic protobuf)
//! and `/openapi/v3` (an index, and one OpenAPI 3.0 document per group-version).
//!
//! Each document lists the paths and operations of its resources with upstream's vendor
//! extensions (`x-kubernetes-group-version-kind`, `x-kubernetes-action`) and query
//! parameters, and the schemas of its kinds from [`rkube_api::schema`]. What clients use them
//! for:
//!
//! - `kubectl explain` reads the schemas (v3 from kubectl 1.28 on, v2 protobuf before);
//! - `kubectl create/apply` see `fieldValidation` on PATCH and let the server validate
//!   (`fieldValidation=Strict`) instead of validating client-side; kubectl ≤ 1.27 also insists
//!   on fetching `/openapi/v2` as protobuf first and fails without it;
//! - `kubectl apply` computes strategic merge patches from the schemas' patch extensions.
//!
//! Documents are built on first request and kept as bytes (`OnceLock`s): nothing is built at
//! start-up. A group-version document's `hash` (and every document's `ETag`) is a hash of its
//! JSON, so clients' caches change exactly when the document does. As upstream's handlers do:
//! `If-None-Match` gets 304; a v3 request with a stale `hash` is redirected (301) to the
//! current one, one with the current hash is cacheable for a year; v2 is served as JSON or
//! protobuf by `Accept`, and anything else gets 406.

use std::sync::OnceLock;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use rkube_api::registry::{Registry, ResourceInfo, Verb};
use rkube_api::schema::{self, Dialect};
use serde_json::{Map, Value, json};

const JSON: &str = "application/json";
const PROTOBUF_V2: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
/// The spelling kubectl sends; answered with [`PROTOBUF_V2`], as upstream does.
const PROTOBUF_V2_DEPRECATED: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The `/openapi/v3` key of a group-version: `api/v1`, `apis/apps/v1`.
fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// FNV-1a over everything written to it: the documents' hashes and ETags.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn hex(&self) -> String {
        format!("{:016X}", self.0)
    }
}

impl std::io::Write for Fnv {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for b in buf {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The hash of a document's JSON, computed without keeping the JSON.
fn etag_of(doc: &Value) -> String {
    let mut h = Fnv::new();
    // Writing to a hasher cannot fail.
    let _ = serde_json::to_writer(&mut h, doc);
    h.hex()
}

/// The `/openapi/v3` index: every served group-version with its document's URL and hash.
pub fn root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for g in registry.groups() {
        for v in g.versions {
            let key = gv_key(g.name, v);
            let hash = v3_etag(registry, g.name, v).unwrap_or_default();
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}

// ---- operations ----

/// The query parameters and their types (upstream's; anything else is a string).
fn param_type(name: &str) -> &'static str {
    match name {
        "watch" | "allowWatchBookmarks" | "sendInitialEvents" | "force" => "boolean",
        "limit" | "timeoutSeconds" | "gracePeriodSeconds" => "integer",
        _ => "string",
    }
}

fn param(dialect: Dialect, name: &str, location: &str) -> Value {
    let required = location == "path";
    let ty = param_type(name);
    match dialect {
        Dialect::Swagger2 => {
            json!({"name": name, "in": location, "required": required, "type": ty, "uniqueItems": true})
        }
        Dialect::OpenApi3 => {
            json!({"name": name, "in": location, "required": required, "schema": {"type": ty, "uniqueItems": true}})
        }
    }
}

/// What an operation takes and returns, by definition name.
struct Shape<'a> {
    action: &'static str,
    id: String,
    query: &'a [&'a str],
    body: Option<String>,
    response: String,
}

fn operation(dialect: Dialect, info: &ResourceInfo, shape: Shape<'_>) -> Value {
    let gvk = json!({"group": info.group, "version": info.version, "kind": info.kind});
    let mut params: Vec<Value> = shape
        .query
        .iter()
        .map(|p| param(dialect, p, "query"))
        .collect();
    let response_ref = dialect.reference(&shape.response);
    let mut op = Map::new();
    op.insert("operationId".into(), json!(shape.id));
    match dialect {
        Dialect::Swagger2 => {
            if let Some(body) = &shape.body {
                params.insert(
                    0,
                    json!({"name": "body", "in": "body", "required": true, "schema": dialect.reference(body)}),
                );
            }
            if shape.action == "patch" {
                op.insert(
                    "consumes".into(),
                    json!([
                        "application/json-patch+json",
                        "application/merge-patch+json",
                        "application/strategic-merge-patch+json"
                    ]),
                );
            } else {
                op.insert("consumes".into(), json!(["*/*"]));
            }
            op.insert(
                "produces".into(),
                json!(["application/json", "application/yaml"]),
            );
            op.insert("schemes".into(), json!(["https"]));
            op.insert(
                "responses".into(),
                json!({"200": {"description": "OK", "schema": response_ref}, "401": {"description": "Unauthorized"}}),
            );
        }
        Dialect::OpenApi3 => {
            if let Some(body) = &shape.body {
                let schema = json!({"schema": dialect.reference(body)});
                let content = if shape.action == "patch" {
                    json!({
                        "application/json-patch+json": schema,
                        "application/merge-patch+json": schema,
                        "application/strategic-merge-patch+json": schema,
                    })
                } else {
                    json!({"*/*": schema})
                };
                op.insert(
                    "requestBody".into(),
                    json!({"content": content, "required": true}),
                );
            }
            let content = json!({"schema": response_ref});
            op.insert(
                "responses".into(),
                json!({
                    "200": {"description": "OK", "content": {"application/json": content, "application/yaml": content}},
                    "401": {"description": "Unauthorized"},
                }),
            );
        }
    }
    op.insert("parameters".into(), Value::Array(params));
    op.insert("x-kubernetes-action".into(), json!(shape.action));
    op.insert("x-kubernetes-group-version-kind".into(), gvk);
    Value::Object(op)
}

const LIST_PARAMS: &[&str] = &[
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];
const WRITE_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
const PATCH_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];
const DELETE_PARAMS: &[&str] = &["dryRun", "gracePeriodSeconds", "propagationPolicy"];
const DELETE_COLLECTION_PARAMS: &[&str] = &[
    "dryRun",
    "gracePeriodSeconds",
    "propagationPolicy",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
];

/// The paths of the resources in `infos`, in `dialect`'s shape.
fn paths<'a>(
    dialect: Dialect,
    infos: impl Iterator<Item = &'a ResourceInfo>,
) -> Map<String, Value> {
    let mut paths = Map::new();
    for info in infos {
        let Some(kind) = schema::definition_name(info.group, info.version, info.kind) else {
            continue;
        };
        let list = info
            .list_kind
            .and_then(|l| schema::definition_name(info.group, info.version, l));
        let base = if info.group.is_empty() {
            format!("/api/{}", info.version)
        } else {
            format!("/apis/{}/{}", info.group, info.version)
        };
        let (ns, ns_id) = if info.is_namespaced() {
            ("/namespaces/{namespace}", "Namespaced")
        } else {
            ("", "")
        };
        let collection = format!("{base}{ns}/{}", info.plural);
        let item = format!("{collection}/{{name}}");
        let mut path_params = vec![param(dialect, "pretty", "query")];
        if info.is_namespaced() {
            path_params.push(param(dialect, "namespace", "path"));
        }
        let id = |verb: &str| format!("{verb}{ns_id}{}", info.kind);
        let status = schema::STATUS.to_string();

        let mut coll = Map::new();
        coll.insert("parameters".into(), Value::Array(path_params.clone()));
        if info.has_verb(Verb::List)
            && let Some(list) = &list
        {
            let shape = Shape {
                action: "list",
                id: id("list"),
                query: LIST_PARAMS,
                body: None,
                response: list.clone(),
            };
            coll.insert("get".into(), operation(dialect, info, shape));
        }
        if info.has_verb(Verb::Create) {
            let shape = Shape {
                action: "post",
                id: id("create"),
                query: WRITE_PARAMS,
                body: Some(kind.clone()),
                response: kind.clone(),
            };
            coll.insert("post".into(), operation(dialect, info, shape));
        }
        if info.has_verb(Verb::DeleteCollection) {
            let shape = Shape {
                action: "deletecollection",
                id: id("deleteCollection"),
                query: DELETE_COLLECTION_PARAMS,
                body: Some(schema::DELETE_OPTIONS.into()),
                response: status.clone(),
            };
            coll.insert("delete".into(), operation(dialect, info, shape));
        }
        if coll.len() > 1 {
            paths.insert(collection, Value::Object(coll));
        }

        let mut item_params = path_params;
        item_params.insert(0, param(dialect, "name", "path"));
        let mut it = Map::new();
        it.insert("parameters".into(), Value::Array(item_params));
        if info.has_verb(Verb::Get) {
            let shape = Shape {
                action: "get",
                id: id("read"),
                query: &[],
                body: None,
                response: kind.clone(),
            };
            it.insert("get".into(), operation(dialect, info, shape));
        }
        if info.has_verb(Verb::Update) {
            let shape = Shape {
                action: "put",
                id: id("replace"),
                query: WRITE_PARAMS,
                body: Some(kind.clone()),
                response: kind.clone(),
            };
            it.insert("put".into(), operation(dialect, info, shape));
        }
        if info.has_verb(Verb::Patch) {
            let shape = Shape {
                action: "patch",
                id: id("patch"),
                query: PATCH_PARAMS,
                body: Some(schema::PATCH.into()),
                response: kind.clone(),
            };
            it.insert("patch".into(), operation(dialect, info, shape));
        }
        if info.has_verb(Verb::Delete) {
            let shape = Shape {
                action: "delete",
                id: id("delete"),
                query: DELETE_PARAMS,
                body: Some(schema::DELETE_OPTIONS.into()),
                response: status,
            };
            it.insert("delete".into(), operation(dialect, info, shape));
        }
        if it.len() > 1 {
            paths.insert(item, Value::Object(it));
        }
    }
    paths
}

/// The OpenAPI 3 document of one group-version, or None if it is not served.
pub fn group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    if !registry.serves(group, version) {
        return None;
    }
    let dialect = Dialect::OpenApi3;
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths(dialect, registry.resources_in(group, version)),
        "components": {"schemas": schema::definitions(registry, Some((group, version)), dialect)},
    }))
}

/// The Swagger 2.0 document of everything served.
pub fn swagger(registry: &Registry) -> Value {
    let dialect = Dialect::Swagger2;
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths(dialect, registry.resources().iter()),
        "definitions": schema::definitions(registry, None, dialect),
    })
}

// ---- caches ----
//
// Keyed by group-version key only: there is one registry (`rkube_api::registry()`), and the
// documents depend on nothing else.

/// One group-version's document: its hash (computed for the index, without keeping the
/// JSON) and its bytes (built on the first request for it).
struct V3Entry {
    key: String,
    group: &'static str,
    version: &'static str,
    etag: OnceLock<String>,
    bytes: OnceLock<Bytes>,
}

fn v3_entries(registry: &Registry) -> &'static [V3Entry] {
    static ENTRIES: OnceLock<Vec<V3Entry>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        registry
            .groups()
            .iter()
            .flat_map(|g| {
                g.versions.iter().map(|v| V3Entry {
                    key: gv_key(g.name, v),
                    group: g.name,
                    version: v,
                    etag: OnceLock::new(),
                    bytes: OnceLock::new(),
                })
            })
            .collect()
    })
}

fn v3_entry(registry: &Registry, group: &str, version: &str) -> Option<&'static V3Entry> {
    v3_entries(registry)
        .iter()
        .find(|e| e.group == group && e.version == version)
}

fn v3_etag(registry: &Registry, group: &str, version: &str) -> Option<&'static str> {
    let e = v3_entry(registry, group, version)?;
    Some(e.etag.get_or_init(|| {
        match e.bytes.get() {
            Some(bytes) => hash_bytes(bytes),
            None => group_version(registry, group, version)
                .map(|d| etag_of(&d))
                .unwrap_or_default(),
        }
    }))
}

fn v3_bytes(registry: &Registry, e: &'static V3Entry) -> &'static Bytes {
    e.bytes.get_or_init(|| {
        let doc = group_version(registry, e.group, e.version).unwrap_or(Value::Null);
        Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
    })
}

fn hash_bytes(bytes: &[u8]) -> String {
    let mut h = Fnv::new();
    let _ = std::io::Write::write(&mut h, bytes);
    h.hex()
}

fn v3_root_bytes(registry: &Registry) -> &'static (Bytes, String) {
    static ROOT: OnceLock<(Bytes, String)> = OnceLock::new();
    ROOT.get_or_init(|| {
        let bytes = Bytes::from(serde_json::to_vec(&root(registry)).unwrap_or_default());
        let etag = hash_bytes(&bytes);
        (bytes, etag)
    })
}

fn v2_etag(registry: &Registry) -> &'static str {
    static ETAG: OnceLock<String> = OnceLock::new();
    ETAG.get_or_init(|| etag_of(&swagger(registry)))
}

fn v2_json(registry: &Registry) -> &'static Bytes {
    static JSON_DOC: OnceLock<Bytes> = OnceLock::new();
    JSON_DOC.get_or_init(|| Bytes::from(serde_json::to_vec(&swagger(registry)).unwrap_or_default()))
}

fn v2_protobuf(registry: &Registry) -> &'static Bytes {
    static PROTO_DOC: OnceLock<Bytes> = OnceLock::new();
    PROTO_DOC.get_or_init(|| Bytes::from(proto::document(&swagger(registry))))
}

// ---- HTTP ----

/// What a v2 request gets, by its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Protobuf,
}

/// Upstream's negotiation: clauses by preference (q, then order), the first one that names
/// (or wildcards) JSON or the v2 protobuf wins; an absent header means `*/*`.
fn negotiate(accept: Option<&str>, protobuf: bool) -> Option<Format> {
    let accept = accept.filter(|a| !a.trim().is_empty()).unwrap_or("*/*");
    let mut clauses: Vec<(f32, usize, &str)> = accept
        .split(',')
        .enumerate()
        .filter_map(|(i, clause)| {
            let mut parts = clause.split(';');
            let media = parts.next()?.trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (q > 0.0).then_some((q, i, media))
        })
        .collect();
    clauses.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, _, media) in clauses {
        let media = media.to_ascii_lowercase();
        if matches!(media.as_str(), "*/*" | "application/*" | JSON) {
            return Some(Format::Json);
        }
        if protobuf && (media == PROTOBUF_V2 || media == PROTOBUF_V2_DEPRECATED) {
            return Some(Format::Protobuf);
        }
    }
    None
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == etag || t == "*")
}

fn respond(
    headers: &HeaderMap,
    body: &Bytes,
    content_type: &'static str,
    etag: &str,
) -> Response<Body> {
    let not_modified = not_modified(headers, etag);
    let mut resp = Response::new(if not_modified {
        Body::empty()
    } else {
        Body::from(body.clone())
    });
    if not_modified {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        h.insert(header::ETAG, v);
    }
    resp
}

fn status_only(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

/// Serves `/openapi/v2`, `/openapi/v3` and `/openapi/v3/{api/v1, apis/G/V}` (`path` without a
/// trailing slash, `query` the raw query string); None for any other path, or a group-version
/// that is not served.
pub fn serve(
    registry: &Registry,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<Response<Body>> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if path == "/openapi/v2" {
        return Some(match negotiate(accept, true) {
            Some(Format::Json) => respond(headers, v2_json(registry), JSON, v2_etag(registry)),
            Some(Format::Protobuf) => respond(
                headers,
                v2_protobuf(registry),
                PROTOBUF_V2,
                v2_etag(registry),
            ),
            None => status_only(StatusCode::NOT_ACCEPTABLE),
        });
    }
    if path == "/openapi/v3" {
        let (bytes, etag) = v3_root_bytes(registry);
        return Some(respond(headers, bytes, JSON, etag));
    }
    let gv = path.strip_prefix("/openapi/v3/")?;
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let entry = v3_entry(registry, group, version)?;
    if negotiate(accept, false).is_none() {
        return Some(status_only(StatusCode::NOT_ACCEPTABLE));
    }
    let bytes = v3_bytes(registry, entry);
    let etag = v3_etag(registry, group, version)?;
    let hash = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("hash="))
            .filter(|h| !h.is_empty())
    });
    let Some(hash) = hash else {
        return Some(respond(headers, bytes, JSON, etag));
    };
    if hash != etag {
        let mut resp = status_only(StatusCode::MOVED_PERMANENTLY);
        let location = format!("/openapi/v3/{}?hash={etag}", entry.key);
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return Some(resp);
    }
    let mut resp = respond(headers, bytes, JSON, etag);
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, immutable"),
    );
    let expires = (chrono::Utc::now() + chrono::Duration::days(365))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(v) = HeaderValue::from_str(&expires) {
        h.insert(header::EXPIRES, v);
    }
    Some(resp)
}

/// The Swagger 2.0 document in gnostic's protobuf encoding (`openapi_v2.Document`, the message
/// `kubectl` ≤ 1.27 decodes). Only what the JSON document uses is encoded; vendor
/// extensions, defaults and enums travel as `Any { yaml }` holding their JSON text (JSON is
/// YAML).
mod proto {
    use serde_json::{Map, Value};

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, (u64::from(field) << 3) | u64::from(wire));
    }

    fn len_delimited(out: &mut Vec<u8>, field: u32, data: &[u8]) {
        tag(out, field, 2);
        varint(out, data.len() as u64);
        out.extend_from_slice(data);
    }

    fn message(out: &mut Vec<u8>, field: u32, build: impl FnOnce(&mut Vec<u8>)) {
        let mut inner = Vec::new();
        build(&mut inner);
        len_delimited(out, field, &inner);
    }

    /// A string field, skipped when empty (proto3 default).
    fn string(out: &mut Vec<u8>, field: u32, v: Option<&Value>) {
        if let Some(s) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) {
            len_delimited(out, field, s.as_bytes());
        }
    }

    fn strings(out: &mut Vec<u8>, field: u32, v: Option<&Value>) {
        for s in v.and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = s.as_str() {
                len_delimited(out, field, s.as_bytes());
            }
        }
    }

    fn boolean(out: &mut Vec<u8>, field: u32, v: Option<&Value>) {
        if v.and_then(Value::as_bool) == Some(true) {
            tag(out, field, 0);
            varint(out, 1);
        }
    }

    fn int64(out: &mut Vec<u8>, field: u32, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_i64).filter(|n| *n != 0) {
            tag(out, field, 0);
            varint(out, n as u64);
        }
    }

    fn double(out: &mut Vec<u8>, field: u32, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_f64).filter(|n| *n != 0.0) {
            tag(out, field, 1);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }

    /// `Any { yaml = 2 }`.
    fn any(out: &mut Vec<u8>, field: u32, v: &Value) {
        message(out, field, |m| {
            len_delimited(m, 2, v.to_string().as_bytes())
        });
    }

    /// `repeated NamedAny` of the object's `x-` keys.
    fn vendor_extensions(out: &mut Vec<u8>, field: u32, obj: &Map<String, Value>) {
        for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
            message(out, field, |m| {
                len_delimited(m, 1, k.as_bytes());
                any(m, 2, v);
            });
        }
    }

    /// `Document`.
    pub(super) fn document(doc: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, 1, doc.get("swagger"));
        if let Some(info) = doc.get("info") {
            message(&mut out, 2, |m| {
                string(m, 1, info.get("title"));
                string(m, 2, info.get("version"));
            });
        }
        if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
            message(&mut out, 8, |m| {
                for (name, item) in paths {
                    message(m, 2, |m| {
                        len_delimited(m, 1, name.as_bytes());
                        message(m, 2, |m| path_item(m, item));
                    });
                }
            });
        }
        if let Some(defs) = doc.get("definitions").and_then(Value::as_object) {
            message(&mut out, 9, |m| named_schemas(m, defs));
        }
        out
    }

    /// `repeated NamedSchema additional_properties = 1` (`Definitions`, `Properties`).
    fn named_schemas(out: &mut Vec<u8>, map: &Map<String, Value>) {
        for (name, s) in map {
            message(out, 1, |m| {
                len_delimited(m, 1, name.as_bytes());
                message(m, 2, |m| schema(m, s));
            });
        }
    }

    /// `PathItem`.
    fn path_item(out: &mut Vec<u8>, item: &Value) {
        for (method, field) in [
            ("get", 2),
            ("put", 3),
            ("post", 4),
            ("delete", 5),
            ("options", 6),
            ("head", 7),
            ("patch", 8),
        ] {
            if let Some(op) = item.get(method) {
                message(out, field, |m| operation(m, op));
            }
        }
        for p in item
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            message(out, 9, |m| parameters_item(m, p));
        }
    }

    /// `Operation`.
    fn operation(out: &mut Vec<u8>, op: &Value) {
        strings(out, 1, op.get("tags"));
        string(out, 2, op.get("summary"));
        string(out, 3, op.get("description"));
        string(out, 5, op.get("operationId"));
        strings(out, 6, op.get("produces"));
        strings(out, 7, op.get("consumes"));
        for p in op
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            message(out, 8, |m| parameters_item(m, p));
        }
        if let Some(responses) = op.get("responses").and_then(Value::as_object) {
            message(out, 9, |m| {
                for (code, r) in responses {
                    // NamedResponseValue { name, ResponseValue { response = 1 } }
                    message(m, 1, |m| {
                        len_delimited(m, 1, code.as_bytes());
                        message(m, 2, |m| {
                            message(m, 1, |m| {
                                string(m, 1, r.get("description"));
                                if let Some(s) = r.get("schema") {
                                    // SchemaItem { schema = 1 }
                                    message(m, 2, |m| message(m, 1, |m| schema(m, s)));
                                }
                            });
                        });
                    });
                }
            });
        }
        strings(out, 10, op.get("schemes"));
        if let Some(obj) = op.as_object() {
            vendor_extensions(out, 13, obj);
        }
    }

    /// `ParametersItem { Parameter parameter = 1 }`.
    fn parameters_item(out: &mut Vec<u8>, p: &Value) {
        let location = p.get("in").and_then(Value::as_str).unwrap_or("");
        message(out, 1, |m| {
            if location == "body" {
                // Parameter { BodyParameter body_parameter = 1 }
                message(m, 1, |m| {
                    string(m, 1, p.get("description"));
                    string(m, 2, p.get("name"));
                    string(m, 3, p.get("in"));
                    boolean(m, 4, p.get("required"));
                    if let Some(s) = p.get("schema") {
                        message(m, 5, |m| schema(m, s));
                    }
                });
                return;
            }
            // Parameter { NonBodyParameter non_body_parameter = 2 }: header = 1, formData = 2,
            // query = 3, path = 4. Query and form data have `allowEmptyValue` at 5 and so
            // their later fields one number up.
            let (sub, shift) = match location {
                "header" => (1, 0),
                "formData" => (2, 1),
                "path" => (4, 0),
                _ => (3, 1),
            };
            message(m, 2, |m| {
                message(m, sub, |m| {
                    boolean(m, 1, p.get("required"));
                    string(m, 2, p.get("in"));
                    string(m, 3, p.get("description"));
                    string(m, 4, p.get("name"));
                    string(m, 5 + shift, p.get("type"));
                    string(m, 6 + shift, p.get("format"));
                    boolean(m, 19 + shift, p.get("uniqueItems"));
                });
            });
        });
    }

    /// `Schema`.
    fn schema(out: &mut Vec<u8>, s: &Value) {
        let Some(obj) = s.as_object() else {
            return;
        };
        string(out, 1, obj.get("$ref"));
        string(out, 2, obj.get("format"));
        string(out, 3, obj.get("title"));
        string(out, 4, obj.get("description"));
        if let Some(d) = obj.get("default") {
            any(out, 5, d);
        }
        double(out, 6, obj.get("multipleOf"));
        double(out, 7, obj.get("maximum"));
        boolean(out, 8, obj.get("exclusiveMaximum"));
        double(out, 9, obj.get("minimum"));
        boolean(out, 10, obj.get("exclusiveMinimum"));
        int64(out, 11, obj.get("maxLength"));
        int64(out, 12, obj.get("minLength"));
        string(out, 13, obj.get("pattern"));
        int64(out, 14, obj.get("maxItems"));
        int64(out, 15, obj.get("minItems"));
        boolean(out, 16, obj.get("uniqueItems"));
        int64(out, 17, obj.get("maxProperties"));
        int64(out, 18, obj.get("minProperties"));
        strings(out, 19, obj.get("required"));
        for e in obj
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            any(out, 20, e);
        }
        match obj.get("additionalProperties") {
            // AdditionalPropertiesItem { Schema schema = 1; bool boolean = 2 }
            Some(Value::Bool(b)) => message(out, 21, |m| {
                tag(m, 2, 0);
                varint(m, u64::from(*b));
            }),
            Some(a @ Value::Object(_)) => message(out, 21, |m| message(m, 1, |m| schema(m, a))),
            _ => {}
        }
        match obj.get("type") {
            // TypeItem { repeated string value = 1 }
            Some(t @ Value::String(_)) => {
                message(out, 22, |m| string(m, 1, Some(t)));
            }
            Some(t @ Value::Array(_)) => message(out, 22, |m| strings(m, 1, Some(t))),
            _ => {}
        }
        match obj.get("items") {
            // ItemsItem { repeated Schema schema = 1 }
            Some(Value::Array(items)) => message(out, 23, |m| {
                for i in items {
                    message(m, 1, |m| schema(m, i));
                }
            }),
            Some(i @ Value::Object(_)) => message(out, 23, |m| message(m, 1, |m| schema(m, i))),
            _ => {}
        }
        for a in obj
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            message(out, 24, |m| schema(m, a));
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            message(out, 25, |m| named_schemas(m, props));
        }
        string(out, 26, obj.get("discriminator"));
        boolean(out, 27, obj.get("readOnly"));
        if let Some(e) = obj.get("example") {
            any(out, 30, e);
        }
        vendor_extensions(out, 31, obj);
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        #[test]
        fn encodes_gnostic_wire_format() {
            // Wire bytes worked out by hand from gnostic's OpenAPIv2.proto field numbers.
            let doc = json!({"swagger": "2.0", "definitions": {"A": {"type": "string", "x-k": 1}}});
            let want: &[u8] = &[
                0x0a, 0x03, b'2', b'.', b'0', // swagger = 1
                0x4a, 0x1f, // definitions = 9, 31 bytes
                0x0a, 0x1d, // NamedSchema additional_properties = 1, 29 bytes
                0x0a, 0x01, b'A', // name = 1
                0x12, 0x18, // Schema value = 2, 24 bytes
                0xb2, 0x01, 0x08, 0x0a, 0x06, b's', b't', b'r', b'i', b'n', b'g', // type = 22
                0xfa, 0x01, 0x0a, // vendor_extension = 31, 10 bytes
                0x0a, 0x03, b'x', b'-', b'k', // name = 1
                0x12, 0x03, 0x12, 0x01, b'1', // Any value = 2 { yaml = 2: "1" }
            ];
            assert_eq!(document(&doc), want);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_name_every_group_version_and_patch_operation() {
        let reg = rkube_api::registry::registry();
        let root = root(reg);
        let core = root["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        let hash = v3_etag(reg, "", "v1").unwrap();
        assert_eq!(core, format!("/openapi/v3/api/v1?hash={hash}"));
        assert!(root["paths"].get("apis/apps/v1").is_some());
        let served: usize = reg.groups().iter().map(|g| g.versions.len()).sum();
        assert_eq!(root["paths"].as_object().unwrap().len(), served);
        let apps = group_version(reg, "apps", "v1").unwrap();
        assert_eq!(
            etag_of(&apps),
            hash_bytes(&serde_json::to_vec(&apps).unwrap())
        );
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
        assert!(
            patch["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_some()
        );
        let schemas = &apps["components"]["schemas"];
        assert_eq!(
            schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        assert!(group_version(reg, "nope", "v1").is_none());
    }

    #[test]
    fn swagger_document_refers_to_its_definitions() {
        let reg = rkube_api::registry::registry();
        let doc = swagger(reg);
        assert_eq!(doc["swagger"], "2.0");
        let defs = doc["definitions"].as_object().unwrap();
        assert!(defs.contains_key("io.k8s.api.core.v1.Pod"));
        let post = &doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"];
        assert_eq!(post["parameters"][0]["in"], "body");
        assert_eq!(
            post["parameters"][0]["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Pod"
        );
        let list = &doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
        assert_eq!(
            list["responses"]["200"]["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.PodList"
        );
        // Cluster-scoped resources have no namespace in their paths.
        assert!(doc["paths"].get("/api/v1/nodes/{name}").is_some());
        let pb = proto::document(&doc);
        assert!(pb.len() > 100_000);
    }

    #[test]
    fn negotiation_follows_upstream() {
        assert_eq!(negotiate(None, true), Some(Format::Json));
        assert_eq!(negotiate(Some(""), true), Some(Format::Json));
        assert_eq!(
            negotiate(Some(PROTOBUF_V2_DEPRECATED), true),
            Some(Format::Protobuf)
        );
        assert_eq!(
            negotiate(Some("application/json, */*"), true),
            Some(Format::Json)
        );
        assert_eq!(
            negotiate(
                Some(
                    "application/json;q=0.5, application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
                ),
                true
            ),
            Some(Format::Protobuf)
        );
        assert_eq!(negotiate(Some("text/html"), true), None);
        assert_eq!(negotiate(Some(PROTOBUF_V2), false), None);
        assert_eq!(negotiate(Some("application/json;q=0"), true), None);
    }

    #[test]
    fn serving_honours_hash_and_etag() {
        let reg = rkube_api::registry::registry();
        let none = HeaderMap::new();
        let etag = v3_etag(reg, "apps", "v1").unwrap().to_string();
        let ok = serve(
            reg,
            "/openapi/v3/apis/apps/v1",
            Some(&format!("hash={etag}")),
            &none,
        )
        .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[header::CACHE_CONTROL], "public, immutable");
        assert_eq!(ok.headers()[header::ETAG], format!("\"{etag}\"").as_str());
        let stale = serve(reg, "/openapi/v3/apis/apps/v1", Some("hash=0"), &none).unwrap();
        assert_eq!(stale.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            stale.headers()[header::LOCATION],
            format!("/openapi/v3/apis/apps/v1?hash={etag}").as_str()
        );
        let mut cached = HeaderMap::new();
        cached.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"{etag}\"")).unwrap(),
        );
        let same = serve(reg, "/openapi/v3/apis/apps/v1", None, &cached).unwrap();
        assert_eq!(same.status(), StatusCode::NOT_MODIFIED);
        assert!(serve(reg, "/openapi/v3/apis/nope/v1", None, &none).is_none());
        assert!(serve(reg, "/openapi/v4", None, &none).is_none());
        let mut html = HeaderMap::new();
        html.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        let refused = serve(reg, "/openapi/v2", None, &html).unwrap();
        assert_eq!(refused.status(), StatusCode::NOT_ACCEPTABLE);
    }
}
