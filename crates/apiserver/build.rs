//! Generates the protobuf descriptor table that `src/protobuf.rs` decodes request bodies with.
//!
//! Inputs: the sources of two dependencies, found in Cargo's registry cache at the versions
//! `Cargo.lock` pins (or, failing that, with `cargo metadata`). k8s-pb ships neither `.proto`
//! files nor a descriptor set, so its generated Rust is what there is to read.
//! - `k8s-pb`: the prost code generated from upstream's `generated.proto` files. It gives
//!   every message, its fields' tags, wire types and referenced messages, and (from its
//!   `impl Resource` blocks) which Rust module holds which API group/version.
//! - `k8s-openapi` (the version directory the `v1_*` feature selects): each type's
//!   `deserialize_struct(NAME, &[FIELDS])`, i.e. the exact JSON names serde uses. prost's
//!   snake_case names lose the case of acronyms (`cluster_ips` is `clusterIPs`, `pod_ip` is
//!   `podIP`), so the JSON name of a field is the k8s-openapi name that equals it once both are
//!   lowercased and stripped of everything but letters and digits. A message field without
//!   such a name is a Go embedded struct (`json:",inline"`, e.g. `Volume.volumeSource`) and
//!   is flattened into its parent.
//!
//! Also marked per field: the few pointer strings whose empty value is kept
//! ([`KEEP_EMPTY`]) and the non-pointer numbers and booleans whose zero is dropped
//! ([`ZERO_IS_UNSET`]); see `src/protobuf.rs` on presence.
//!
//! Output: `$OUT_DIR/k8s_pb_table.rs` (every message with its fields; (apiVersion, kind) →
//! message), included by `src/protobuf.rs`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CARGO_HOME");
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    // A dependency version change shows in the lock file.
    let lock = manifest_dir.join("../../Cargo.lock");
    if lock.exists() {
        println!("cargo::rerun-if-changed={}", lock.display());
    }
    let sources = locate_sources(&manifest_dir, &lock);
    let openapi_dir = openapi_version_dir(&sources.k8s_openapi);
    let messages = parse_k8s_pb(&sources.k8s_pb.join("src"));
    let openapi = parse_k8s_openapi(&openapi_dir);
    let code = generate(&messages, &openapi);
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("k8s_pb_table.rs");
    // Rewriting an unchanged table would only make Cargo recompile the crate.
    if std::fs::read_to_string(&out).ok().as_deref() != Some(code.as_str()) {
        std::fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
    }
}

struct Sources {
    k8s_pb: PathBuf,
    k8s_openapi: PathBuf,
}

/// Finds the source directories of this package's `k8s-pb` and `k8s-openapi` dependencies:
/// in Cargo's registry cache at the versions `Cargo.lock` pins, else through `cargo metadata`
/// (which needs every package of the workspace downloaded, dev-dependencies included, so
/// it is only the fallback).
fn locate_sources(manifest_dir: &Path, lock: &Path) -> Sources {
    let lock_text = std::fs::read_to_string(lock).unwrap_or_default();
    match (
        registry_source(&lock_text, "k8s-pb"),
        registry_source(&lock_text, "k8s-openapi"),
    ) {
        (Some(k8s_pb), Some(k8s_openapi)) => Sources {
            k8s_pb,
            k8s_openapi,
        },
        _ => metadata_sources(manifest_dir),
    }
}

/// `$CARGO_HOME/registry/src/*/NAME-VERSION` for the newest VERSION of NAME in the lock file.
fn registry_source(lock: &str, name: &str) -> Option<PathBuf> {
    let mut versions: Vec<Vec<u64>> = Vec::new();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{name}\"")
            && let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
                .map(|v| v.trim_end_matches('"'))
        {
            versions.push(v.split('.').map(|p| p.parse().unwrap_or(0)).collect());
        }
    }
    versions.sort();
    let version = versions
        .last()?
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".");
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let mut registries: Vec<PathBuf> = std::fs::read_dir(home.join("registry/src"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    registries.sort();
    registries
        .into_iter()
        .map(|r| r.join(format!("{name}-{version}")))
        .find(|d| d.join("Cargo.toml").is_file() && d.join(".cargo-ok").is_file())
}

fn metadata_sources(manifest_dir: &Path) -> Sources {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--manifest-path",
        ])
        .arg(manifest_dir.join("Cargo.toml"))
        .output()
        .unwrap_or_else(|e| panic!("running `{cargo} metadata`: {e}"));
    assert!(
        output.status.success(),
        "the sources of k8s-pb and k8s-openapi are neither in Cargo's registry cache nor found by `cargo metadata`: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("`cargo metadata` printed invalid JSON");
    let packages = meta["packages"].as_array().expect("metadata packages");
    let manifest_of = |id: &str| -> Option<PathBuf> {
        packages
            .iter()
            .find(|p| p["id"] == id)
            .and_then(|p| p["manifest_path"].as_str())
            .map(|m| Path::new(m).parent().expect("manifest dir").to_path_buf())
    };
    let me = packages
        .iter()
        .find(|p| p["name"] == "rkube-apiserver")
        .and_then(|p| p["id"].as_str())
        .expect("rkube-apiserver in cargo metadata");
    let node = meta["resolve"]["nodes"]
        .as_array()
        .expect("metadata resolve")
        .iter()
        .find(|n| n["id"] == me)
        .expect("rkube-apiserver in the resolve graph");
    let dep = |name: &str| -> PathBuf {
        node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|d| d["name"] == name.replace('-', "_"))
            .find_map(|d| d["pkg"].as_str().and_then(manifest_of))
            .unwrap_or_else(|| panic!("rkube-apiserver has no `{name}` dependency"))
    };
    Sources {
        k8s_pb: dep("k8s-pb"),
        k8s_openapi: dep("k8s-openapi"),
    }
}

/// `src/v1_NN` of the Kubernetes version k8s-openapi was built for (it tells its direct
/// dependents through its `links` metadata), falling back to the only one we enable.
fn openapi_version_dir(root: &Path) -> PathBuf {
    let minor = std::env::vars()
        .find(|(k, _)| k.starts_with("DEP_K8S_OPENAPI_") && k.ends_with("_VERSION"))
        .and_then(|(_, v)| v.parse::<u32>().ok())
        .map(|v| (v >> 8) & 0xff)
        .unwrap_or(33);
    let dir = root.join("src").join(format!("v1_{minor}"));
    assert!(dir.is_dir(), "{} does not exist", dir.display());
    dir
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    Message,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Card {
    Single,
    Repeated,
    Map,
}

#[derive(Debug)]
struct PbField {
    name: String,
    tag: u32,
    ty: Scalar,
    card: Card,
    /// Full Rust path (`api::core::v1::PodSpec`) of the message type, for message fields
    /// and map values.
    msg: Option<String>,
}

#[derive(Debug, Default)]
struct PbModule {
    api_version: Option<String>,
    /// Message name → fields, in declaration order.
    messages: BTreeMap<String, Vec<PbField>>,
}

/// Parses every `mod.rs` under k8s-pb's `src`: module path → messages.
fn parse_k8s_pb(src: &Path) -> BTreeMap<String, PbModule> {
    let mut modules = BTreeMap::new();
    let mut files = Vec::new();
    walk(src, &mut files);
    for file in files {
        if file.file_name().is_none_or(|n| n != "mod.rs") {
            continue;
        }
        let rel = file.parent().unwrap().strip_prefix(src).unwrap();
        let module = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("::");
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed = parse_pb_file(&module, &text);
        if !parsed.messages.is_empty() || parsed.api_version.is_some() {
            modules.insert(module, parsed);
        }
    }
    assert!(
        modules.values().map(|m| m.messages.len()).sum::<usize>() > 500,
        "k8s-pb's sources did not parse: found too few messages under {}",
        src.display()
    );
    modules
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn parse_pb_file(module: &str, text: &str) -> PbModule {
    let mut m = PbModule::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut current: Option<String> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        i += 1;
        if let Some(rest) = line.strip_prefix("pub struct ")
            && let Some((name, body)) = rest.split_once(' ')
            && (body == "{" || body == "{}")
            && lines[..i - 1]
                .iter()
                .rev()
                .find(|l| l.trim_start().starts_with("#[derive("))
                .is_some_and(|l| l.contains("::prost::Message"))
        {
            m.messages.entry(name.to_string()).or_default();
            if body == "{" {
                current = Some(name.to_string());
            }
            continue;
        }
        if line == "}" {
            current = None;
            continue;
        }
        if let Some(v) = line.strip_prefix("const API_VERSION: &'static str = \"") {
            m.api_version = Some(v.trim_end_matches("\";").to_string());
            continue;
        }
        let Some(msg) = &current else { continue };
        let Some(attr) = line
            .strip_prefix("#[prost(")
            .and_then(|a| a.strip_suffix(")]"))
        else {
            continue;
        };
        // The field declaration follows, possibly wrapped over several lines.
        let mut decl = String::new();
        while i < lines.len() {
            decl.push_str(lines[i].trim());
            i += 1;
            if decl.ends_with(',') && balanced(&decl) {
                break;
            }
        }
        let decl = decl
            .strip_prefix("pub ")
            .unwrap_or_else(|| panic!("{module}::{msg}: field `{decl}`"));
        let (name, ty) = decl.split_once(':').unwrap();
        let name = name.trim().trim_start_matches("r#").to_string();
        // rustfmt leaves a trailing comma inside a wrapped generic: `Vec<\n X,\n>`.
        let ty: String = ty.chars().filter(|c| !c.is_whitespace()).collect();
        let ty = ty.trim_end_matches(',').replace(",>", ">");
        let ty = ty.as_str();
        let field = parse_field(module, msg, name, attr, ty);
        m.messages.get_mut(msg).unwrap().push(field);
    }
    m
}

fn balanced(s: &str) -> bool {
    s.matches('<').count() == s.matches('>').count()
}

fn parse_field(module: &str, msg: &str, name: String, attr: &str, ty: &str) -> PbField {
    let parts: Vec<&str> = split_attr(attr);
    let tag = parts
        .iter()
        .find_map(|p| p.strip_prefix("tag = \""))
        .and_then(|t| t.trim_end_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("{module}::{msg}.{name}: no tag in `{attr}`"));
    let scalar = |s: &str| match s {
        "string" => Scalar::String,
        "bytes" | "bytes = \"vec\"" => Scalar::Bytes,
        "bool" => Scalar::Bool,
        "int32" => Scalar::Int32,
        "int64" => Scalar::Int64,
        "double" => Scalar::Double,
        "message" => Scalar::Message,
        other => panic!("{module}::{msg}.{name}: unsupported prost type `{other}`"),
    };
    let first = parts[0];
    let (ty_kind, card) = if let Some(kv) = first
        .strip_prefix("btree_map = \"")
        .or_else(|| first.strip_prefix("map = \""))
    {
        let kv = kv.trim_end_matches('"');
        let (k, v) = kv.split_once(", ").unwrap();
        assert_eq!(k, "string", "{module}::{msg}.{name}: map key `{k}`");
        (scalar(v), Card::Map)
    } else {
        let card = if parts.contains(&"repeated") {
            Card::Repeated
        } else {
            assert!(
                parts.contains(&"optional"),
                "{module}::{msg}.{name}: neither optional nor repeated: `{attr}`"
            );
            Card::Single
        };
        (scalar(first), card)
    };
    let msg_ty = (ty_kind == Scalar::Message).then(|| resolve_type(module, innermost_type(ty)));
    PbField {
        name,
        tag,
        ty: ty_kind,
        card,
        msg: msg_ty,
    }
}

/// Splits `message, optional, tag = "1"` at top-level commas (not inside quotes).
fn split_attr(attr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in attr.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(attr[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(attr[start..].trim());
    out
}

/// The message type inside `Option<…>`, `Vec<…>`, `Box<…>` or a map's value.
fn innermost_type(ty: &str) -> &str {
    let mut t = ty.trim();
    loop {
        let Some(open) = t.find('<') else { return t };
        let inner = &t[open + 1..t.len() - 1];
        // A map: the value type follows the key type.
        t = match inner.split_once(',') {
            Some((_, v)) if t[..open].ends_with("BTreeMap") || t[..open].ends_with("HashMap") => v,
            _ => inner,
        }
        .trim();
    }
}

/// Resolves a prost type path (`super::super::core::v1::PodSpec`, `PodSpec`) from `module`.
fn resolve_type(module: &str, ty: &str) -> String {
    let mut base: Vec<&str> = module.split("::").collect();
    let mut rest = ty;
    if let Some(r) = rest.strip_prefix("crate::") {
        base.clear();
        rest = r;
    }
    while let Some(r) = rest.strip_prefix("super::") {
        base.pop();
        rest = r;
    }
    let mut full = base.join("::");
    if !full.is_empty() {
        full.push_str("::");
    }
    full.push_str(rest);
    full
}

/// k8s-openapi: (module path, lowercased type name) → (type name, JSON field names).
fn parse_k8s_openapi(dir: &Path) -> HashMap<(String, String), (String, Vec<String>)> {
    let mut files = Vec::new();
    walk(dir, &mut files);
    let mut out = HashMap::new();
    for file in files {
        if file.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let Some(name) = text
            .lines()
            .find_map(|l| l.strip_prefix("pub struct "))
            .map(|r| {
                r.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
                    .unwrap()
                    .to_string()
            })
        else {
            continue;
        };
        let Some(start) = text.find("deserializer.deserialize_struct(") else {
            continue;
        };
        let block = &text[start..];
        let Some(list_start) = block.find("&[") else {
            continue;
        };
        let list = &block[list_start + 2..];
        let list = &list[..list.find(']').unwrap()];
        let fields: Vec<String> = list
            .split(',')
            .filter_map(|s| {
                let s = s.trim();
                s.strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .map(str::to_string)
            })
            .collect();
        let rel = file.parent().unwrap().strip_prefix(dir).unwrap();
        let module = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("::");
        out.insert((module, name.to_lowercase()), (name, fields));
    }
    assert!(
        out.len() > 300,
        "k8s-openapi's sources did not parse: found too few types under {}",
        dir.display()
    );
    out
}

/// Letters and digits, lowercased: how prost's and k8s-openapi's names are compared.
fn norm(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    for (i, part) in snake.split('_').enumerate() {
        if i == 0 {
            out.push_str(part);
        } else {
            let mut cs = part.chars();
            if let Some(c) = cs.next() {
                out.push(c.to_ascii_uppercase());
                out.extend(cs);
            }
        }
    }
    out
}

/// Messages whose JSON form is not an object of their fields.
fn special(path: &str) -> &'static str {
    match path {
        "apimachinery::pkg::apis::meta::v1::Time" => "Time",
        "apimachinery::pkg::apis::meta::v1::MicroTime" => "MicroTime",
        "apimachinery::pkg::apis::meta::v1::Duration" => "Duration",
        "apimachinery::pkg::apis::meta::v1::FieldsV1" => "RawJson",
        "apimachinery::pkg::apis::meta::v1::Verbs" => "Items",
        "apimachinery::pkg::api::resource::Quantity"
        | "apimachinery::pkg::api::resource::QuantityValue" => "Quantity",
        "apimachinery::pkg::util::intstr::IntOrString" => "IntOrString",
        "apimachinery::pkg::runtime::RawExtension" => "RawExtension",
        p if p.starts_with("apiextensions_apiserver::") && p.ends_with("::Json") => "RawJson",
        p if p.starts_with("apiextensions_apiserver::")
            && p.ends_with("::JsonSchemaPropsOrArray") =>
        {
            "SchemaOrArray"
        }
        p if p.starts_with("apiextensions_apiserver::")
            && p.ends_with("::JsonSchemaPropsOrBool") =>
        {
            "SchemaOrBool"
        }
        p if p.starts_with("apiextensions_apiserver::")
            && p.ends_with("::JsonSchemaPropsOrStringArray") =>
        {
            "SchemaOrStringArray"
        }
        p if p.ends_with("::ExtraValue") => "Items",
        _ => "None",
    }
}

/// Pointer string fields whose empty value means something other than "unset" (see
/// `protobuf.rs` on empty strings): (message, JSON field).
const KEEP_EMPTY: &[(&str, &str)] = &[
    (
        "api::core::v1::PersistentVolumeClaimSpec",
        "storageClassName",
    ),
    (
        "api::core::v1::PersistentVolumeClaimSpec",
        "volumeAttributesClassName",
    ),
    (
        "api::core::v1::PersistentVolumeSpec",
        "volumeAttributesClassName",
    ),
];

/// Non-pointer integer and boolean fields (Go `int32`/`bool` with `omitempty`) that upstream's
/// Go encoder writes even when zero, so that kubectl's protobuf bodies carry them although
/// its JSON ones do not; their zero value is dropped (see `protobuf.rs`). Only fields known
/// to be non-pointers belong here: a pointer's zero (`replicas: 0`) means something.
const ZERO_IS_UNSET: &[(&str, &[&str])] = &[
    (
        "apimachinery::pkg::apis::meta::v1::ObjectMeta",
        &["generation"],
    ),
    ("api::core::v1::ContainerPort", &["hostPort"]),
    ("api::core::v1::Container", &["stdin", "stdinOnce", "tty"]),
    (
        "api::core::v1::EphemeralContainerCommon",
        &["stdin", "stdinOnce", "tty"],
    ),
    (
        "api::core::v1::PodSpec",
        &["hostNetwork", "hostPID", "hostIPC"],
    ),
    ("api::core::v1::VolumeMount", &["readOnly"]),
    (
        "api::core::v1::Probe",
        &[
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ],
    ),
    ("api::core::v1::ServicePort", &["nodePort"]),
    (
        "api::core::v1::ServiceSpec",
        &["healthCheckNodePort", "publishNotReadyAddresses"],
    ),
    (
        "api::apps::v1::DeploymentSpec",
        &["minReadySeconds", "paused"],
    ),
    ("api::apps::v1::ReplicaSetSpec", &["minReadySeconds"]),
    ("api::apps::v1::DaemonSetSpec", &["minReadySeconds"]),
    ("api::apps::v1::StatefulSetSpec", &["minReadySeconds"]),
];

fn keeps_empty(path: &str, json: &str, used: &mut Vec<(String, String)>) -> bool {
    let hit = KEEP_EMPTY.contains(&(path, json));
    if hit {
        used.push((path.into(), json.into()));
    }
    hit
}

fn zero_is_unset(path: &str, json: &str, used: &mut Vec<(String, String)>) -> bool {
    let hit = ZERO_IS_UNSET
        .iter()
        .any(|(p, fs)| *p == path && fs.contains(&json));
    if hit {
        used.push((path.into(), json.into()));
    }
    hit
}

fn proto_name(path: &str) -> String {
    format!("k8s.io.{}", path.replace("::", "."))
}

fn generate(
    modules: &BTreeMap<String, PbModule>,
    openapi: &HashMap<(String, String), (String, Vec<String>)>,
) -> String {
    // Index every message.
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut all: Vec<(String, &str, &Vec<PbField>)> = Vec::new();
    for (module, m) in modules {
        for (name, fields) in &m.messages {
            let path = format!("{module}::{name}");
            index.insert(path.clone(), all.len());
            all.push((module.clone(), name.as_str(), fields));
        }
    }
    let openapi_of =
        |module: &str, name: &str| openapi.get(&(module.to_string(), name.to_lowercase()));

    // The JSON names each message's fields are matched against: its k8s-openapi type's, or,
    // for a message k8s-openapi has no type for that a typed message embeds (admission's
    // `Rule` in `RuleWithOperations`), those of the type that embeds it.
    let mut names: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for (module, name, _) in &all {
        if let Some(oa) = openapi_of(module, name) {
            names.insert(format!("{module}::{name}"), oa.clone());
        }
    }
    loop {
        let mut added = Vec::new();
        for (module, name, fields) in &all {
            let Some((parent_ty, json)) = names.get(&format!("{module}::{name}")) else {
                continue;
            };
            for f in fields.iter() {
                if f.ty == Scalar::Message
                    && f.card == Card::Single
                    && !json.iter().any(|j| norm(j) == norm(&f.name))
                {
                    let target = f.msg.clone().unwrap();
                    if !names.contains_key(&target) {
                        added.push((target, (parent_ty.clone(), json.clone())));
                    }
                }
            }
        }
        if added.is_empty() {
            break;
        }
        names.extend(added);
    }
    // Whether every field of `target` is a JSON field of `json`, directly or by embedding.
    fn embeds(
        target: &str,
        json: &[String],
        index: &BTreeMap<String, usize>,
        all: &[(String, &str, &Vec<PbField>)],
        depth: u32,
    ) -> bool {
        depth < 8
            && index.get(target).is_some_and(|&i| {
                all[i].2.iter().all(|g| {
                    json.iter().any(|j| norm(j) == norm(&g.name))
                        || (g.ty == Scalar::Message
                            && g.card == Card::Single
                            && embeds(g.msg.as_deref().unwrap(), json, index, all, depth + 1))
                })
            })
    }

    // prost name → JSON name, learned from the types k8s-openapi has, for the others
    // (older API versions, lists, options) that no served kind reaches.
    let mut learned: HashMap<String, Option<String>> = HashMap::new();
    for (module, name, fields) in &all {
        if let Some((_, json)) = openapi_of(module, name) {
            for f in fields.iter() {
                if let Some(j) = json.iter().find(|j| norm(j) == norm(&f.name)) {
                    let e = learned
                        .entry(f.name.clone())
                        .or_insert_with(|| Some(j.clone()));
                    if e.as_deref() != Some(j.as_str()) {
                        *e = None;
                    }
                }
            }
        }
    }

    let mut used = Vec::new();
    let mut out = String::new();
    out.push_str(
        "// @generated by crates/apiserver/build.rs from k8s-pb and k8s-openapi. Do not edit.\n\n",
    );
    out.push_str("pub(super) static MESSAGES: &[MessageDesc] = &[\n");
    for (module, name, fields) in &all {
        let path = format!("{module}::{name}");
        let oa = names.get(&path);
        let _ = writeln!(
            out,
            "    MessageDesc {{ name: {:?}, special: Special::{}, typed: {}, fields: &[",
            proto_name(&path),
            special(&path),
            oa.is_some()
        );
        let mut sorted: Vec<&PbField> = fields.iter().collect();
        sorted.sort_by_key(|f| f.tag);
        for f in sorted {
            let (json, verified, inline) = match oa {
                Some((_, json)) => match json.iter().find(|j| norm(j) == norm(&f.name)) {
                    Some(j) => (j.clone(), true, false),
                    None if f.ty == Scalar::Message && f.card == Card::Single => {
                        // An embedded Go struct: its fields must be the parent's.
                        let inner_ok = embeds(f.msg.as_deref().unwrap(), json, &index, &all, 0);
                        if !inner_ok {
                            println!(
                                "cargo::warning=protobuf table: {path}.{} matches no JSON field of k8s-openapi's {} and is not an embedded struct",
                                f.name,
                                oa.unwrap().0
                            );
                        }
                        (lower_camel(&f.name), inner_ok, true)
                    }
                    None => {
                        println!(
                            "cargo::warning=protobuf table: {path}.{} matches no JSON field of k8s-openapi's {}",
                            f.name,
                            oa.unwrap().0
                        );
                        (lower_camel(&f.name), false, false)
                    }
                },
                None => (
                    learned
                        .get(&f.name)
                        .cloned()
                        .flatten()
                        .unwrap_or_else(|| lower_camel(&f.name)),
                    false,
                    false,
                ),
            };
            let ty = match f.ty {
                Scalar::Message => {
                    let target = f.msg.as_deref().unwrap();
                    let i = index
                        .get(target)
                        .unwrap_or_else(|| panic!("{path}.{}: unknown message {target}", f.name));
                    format!("Ty::Message({i})")
                }
                other => format!("Ty::{other:?}"),
            };
            let _ = writeln!(
                out,
                "        FieldDesc {{ tag: {}, json: {:?}, ty: {ty}, card: Card::{:?}, inline: {inline}, verified: {verified}, keep_empty: {}, zero_is_unset: {} }},",
                f.tag,
                json,
                f.card,
                keeps_empty(&path, &json, &mut used),
                zero_is_unset(&path, &json, &mut used)
            );
        }
        out.push_str("    ] },\n");
    }
    out.push_str("];\n\n");
    let listed = KEEP_EMPTY.iter().map(|&(p, f)| (p, f)).chain(
        ZERO_IS_UNSET
            .iter()
            .flat_map(|(p, fs)| fs.iter().map(move |f| (*p, *f))),
    );
    for (p, f) in listed {
        assert!(
            used.iter().any(|(up, uf)| up == p && uf == f),
            "build.rs lists {p}.{f}, which k8s-pb does not have"
        );
    }

    // (apiVersion, kind) → message, for every message of a group/version module.
    out.push_str("pub(super) static KINDS: &[(&str, &str, u32)] = &[\n");
    for (module, m) in modules {
        let Some(av) = &m.api_version else { continue };
        for name in m.messages.keys() {
            let kind = openapi_of(module, name)
                .map(|(n, _)| n.as_str())
                .unwrap_or(name);
            let i = index[&format!("{module}::{name}")];
            let _ = writeln!(out, "    ({av:?}, {kind:?}, {i}),");
        }
    }
    out.push_str("];\n");
    out
}
