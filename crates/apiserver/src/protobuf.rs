//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded into
//! the same JSON object the JSON path produces, so that the rest of the pipeline (typed check,
//! defaulting, storage) does not know which encoding the client used. kubectl ≥ 1.32 sends
//! its imperative creates (`kubectl create configmap|secret|deployment|…`) this way.
//!
//! # Wire format
//!
//! The 4-byte magic `k8s\0`, then a `runtime.Unknown` {typeMeta=1 {apiVersion=1, kind=2},
//! raw=2, contentEncoding=3, contentType=4} whose `raw` is the object's message in the
//! numbering of upstream's `generated.proto` files.
//!
//! # Design: a descriptor table generated from k8s-pb, not per-type conversion code
//!
//! The `k8s-pb` crate (0.8, kube-rs, prost 0.14, API v1.33) has prost types for every upstream
//! message, but ships only generated Rust: no `.proto` files, no `FileDescriptorSet`, so
//! `prost-reflect` has nothing to load, and prost types have no JSON mapping. Converting each
//! prost type by hand would be thousands of lines. Instead `build.rs` reads k8s-pb's sources
//! (its `#[prost(…)]` attributes: tags, wire types, message references) and k8s-openapi's
//! (each type's serde field names, the exact JSON names `typed::normalize` uses) and writes
//! one static table: every message, every field with its JSON name. The JSON names come from
//! k8s-openapi because prost's snake_case loses acronyms (`cluster_ips` is `clusterIPs`);
//! a message field whose name is not one of its type's JSON fields is a Go embedded struct
//! (`Volume.volumeSource`, `Probe.handler`) and is flattened into its parent, as Go's JSON
//! does. This module is the small wire decoder driven by that table, with the few types
//! whose JSON form is not an object special-cased: `Time` and `MicroTime` (RFC 3339 strings;
//! an empty message is Go's zero time, `null`), `Duration` (Go's duration string),
//! `Quantity`, `IntOrString`, `RawExtension`, `FieldsV1` and apiextensions' `JSON` (embedded
//! JSON), `ExtraValue` and `Verbs` (arrays), and the `JSONSchemaPropsOr*` unions. The
//! envelope itself is decoded with k8s-pb's prost type. Tests encode with k8s-pb's types.
//!
//! # Presence and zero values
//!
//! Upstream's Go encoder writes every non-pointer field, zero or not, and writes a pointer
//! field only when it is set; the wire cannot tell the two apart, and neither k8s-pb nor
//! k8s-openapi records which Go fields are pointers. Zero integers and `false` are kept
//! (`replicas: 0`, `automountServiceAccountToken: false` must not fall back to their
//! defaults), except on a short list in `build.rs` of well-known non-pointer fields every
//! kubectl body carries (`metadata.generation`, `hostPort`, `stdin`, `hostNetwork`, probe
//! thresholds, `minReadySeconds`, `nodePort`, …). Empty strings (and empty `bytes`) in
//! singular fields are dropped: they are Go's non-pointer "unset" (`restartPolicy`,
//! `imagePullPolicy`, `metadata.namespace`, …) and keeping them would stop defaulting, which
//! fills only absent fields. The few pointer strings whose empty value means something
//! (`PersistentVolumeClaimSpec.storageClassName: ""` = no dynamic provisioning) are listed in
//! `build.rs` and kept. Repeated and map entries are always kept as sent
//! (`data: {"k": ""}`).
//!
//! Every malformed input (bad magic, truncated or garbage protobuf, a kind that does not
//! match the URL's, an unknown type, nesting deeper than [`MAX_DEPTH`]) is an [`Error`],
//! which the handler answers with a 400 `Status`; nothing here panics on input.

use base64::Engine as _;
use prost::Message as _;
use serde_json::{Map, Number, Value};

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Deepest nesting of messages accepted (serde_json reads back at most 128 levels).
pub const MAX_DEPTH: u32 = 100;

/// Why a protobuf body was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// The body does not start with `k8s\0`.
    #[error(
        "the body is not a Kubernetes protobuf message: it does not start with the magic \"k8s\\x00\""
    )]
    Magic,
    /// The `runtime.Unknown` envelope does not decode.
    #[error("the protobuf envelope (runtime.Unknown) does not decode: {0}")]
    Envelope(String),
    /// The envelope holds a compressed or non-protobuf object.
    #[error("unsupported protobuf envelope: {0}")]
    Unsupported(String),
    /// The envelope's kind is not the URL's.
    #[error("the kind in the data ({found}) does not match the expected kind ({expected})")]
    KindMismatch {
        /// The envelope's kind.
        found: String,
        /// The URL's kind.
        expected: String,
    },
    /// The envelope's apiVersion is not the URL's.
    #[error(
        "the API version in the data ({found}) does not match the expected API version ({expected})"
    )]
    ApiVersionMismatch {
        /// The envelope's apiVersion.
        found: String,
        /// The URL's apiVersion.
        expected: String,
    },
    /// No protobuf message is known for the kind.
    #[error("no protobuf message is known for kind {kind:?} in API version {api_version:?}")]
    UnknownType {
        /// The requested apiVersion.
        api_version: String,
        /// The requested kind.
        kind: String,
    },
    /// The object's message does not decode.
    #[error("{kind} in version \"{version}\" cannot be handled as protobuf: {path}{message}")]
    Malformed {
        /// The kind being decoded.
        kind: String,
        /// Its apiVersion.
        version: String,
        /// Where (`spec.template.spec.containers[0].ports[1]: `), empty at the top.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A decoding failure inside the object, with the JSON path to it built while unwinding.
#[derive(Debug)]
struct WireError {
    path: Vec<String>,
    message: String,
}

impl WireError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            path: Vec::new(),
            message: message.into(),
        }
    }

    fn at(mut self, segment: impl Into<String>) -> Self {
        self.path.push(segment.into());
        self
    }

    fn path(&self) -> String {
        let mut out = String::new();
        for seg in self.path.iter().rev() {
            if !out.is_empty() && !seg.starts_with('[') {
                out.push('.');
            }
            out.push_str(seg);
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out
    }
}

type WireResult<T> = Result<T, WireError>;

// ---- the generated table ----

/// How a message's JSON form differs from an object of its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    None,
    Time,
    MicroTime,
    Duration,
    Quantity,
    IntOrString,
    RawExtension,
    RawJson,
    Items,
    SchemaOrArray,
    SchemaOrBool,
    SchemaOrStringArray,
}

/// A field's protobuf type; `Message` holds an index into `MESSAGES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    Message(u32),
}

/// Singular, repeated, or a `map<string, Ty>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Card {
    Single,
    Repeated,
    Map,
}

#[derive(Debug)]
struct FieldDesc {
    tag: u32,
    json: &'static str,
    ty: Ty,
    card: Card,
    /// A Go embedded struct: its fields are the parent's in JSON.
    inline: bool,
    /// The JSON name (or the inlining) was matched against k8s-openapi's serde names.
    #[cfg_attr(not(test), allow(dead_code))]
    verified: bool,
    /// An empty string is kept rather than dropped.
    keep_empty: bool,
    /// A non-pointer number or boolean whose zero Go's encoder writes: dropped when zero.
    zero_is_unset: bool,
}

#[derive(Debug)]
struct MessageDesc {
    /// The proto name, `k8s.io.api.core.v1.Pod`.
    name: &'static str,
    special: Special,
    /// k8s-openapi has a type for it (so its JSON names are checked).
    #[cfg_attr(not(test), allow(dead_code))]
    typed: bool,
    /// Sorted by tag.
    fields: &'static [FieldDesc],
}

#[allow(clippy::all)]
mod table {
    use super::{Card, FieldDesc, MessageDesc, Special, Ty};
    include!(concat!(env!("OUT_DIR"), "/k8s_pb_table.rs"));
}

fn message_desc(i: u32) -> &'static MessageDesc {
    &table::MESSAGES[i as usize]
}

/// The message of `kind` in `api_version` (`apps/v1`, `Deployment`).
fn lookup(api_version: &str, kind: &str) -> Option<&'static MessageDesc> {
    table::KINDS
        .iter()
        .find(|(av, k, _)| *av == api_version && *k == kind)
        .or_else(|| {
            table::KINDS
                .iter()
                .find(|(av, k, _)| *av == api_version && k.eq_ignore_ascii_case(kind))
        })
        .map(|&(_, _, i)| message_desc(i))
}

// ---- entry point ----

/// Decodes a protobuf request body for `kind` in `api_version` (the URL's) into the JSON
/// object the same request in JSON would carry, `apiVersion` and `kind` included when the
/// envelope names them.
pub fn decode(body: &[u8], api_version: &str, kind: &str) -> Result<Value, Error> {
    decode_object(body, Some((api_version, kind)), 0)
}

/// Decodes an enveloped object; `expected` is the URL's (apiVersion, kind), `None` for an
/// object embedded in a `RawExtension` (typed by its own envelope).
fn decode_object(body: &[u8], expected: Option<(&str, &str)>, depth: u32) -> Result<Value, Error> {
    let payload = body.strip_prefix(MAGIC.as_slice()).ok_or(Error::Magic)?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(payload)
        .map_err(|e| Error::Envelope(e.to_string()))?;
    if let Some(enc) = unknown
        .content_encoding
        .as_deref()
        .filter(|e| !e.is_empty())
    {
        return Err(Error::Unsupported(format!("contentEncoding {enc:?}")));
    }
    if let Some(ct) = unknown
        .content_type
        .as_deref()
        .filter(|c| !c.is_empty() && *c != MEDIA_TYPE)
    {
        return Err(Error::Unsupported(format!("contentType {ct:?}")));
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    let found_av = type_meta.api_version.unwrap_or_default();
    let found_kind = type_meta.kind.unwrap_or_default();
    let (api_version, kind) = match expected {
        Some((av, kind)) => {
            if !found_kind.is_empty() && found_kind != kind {
                return Err(Error::KindMismatch {
                    found: found_kind,
                    expected: kind.to_string(),
                });
            }
            if !found_av.is_empty() && found_av != av {
                return Err(Error::ApiVersionMismatch {
                    found: found_av,
                    expected: av.to_string(),
                });
            }
            (av.to_string(), kind.to_string())
        }
        None => (found_av.clone(), found_kind.clone()),
    };
    let desc = lookup(&api_version, &kind).ok_or_else(|| Error::UnknownType {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let raw = unknown.raw.unwrap_or_default();
    let malformed = |e: WireError| Error::Malformed {
        kind: kind.clone(),
        version: api_version.clone(),
        path: e.path(),
        message: e.message,
    };
    let value = decode_message(desc, &raw, depth + 1).map_err(malformed)?;
    let Value::Object(fields) = value else {
        return Err(malformed(WireError::new(format!(
            "{} is not an object type",
            desc.name
        ))));
    };
    let mut obj = Map::new();
    if !found_av.is_empty() {
        obj.insert("apiVersion".into(), Value::String(found_av));
    }
    if !found_kind.is_empty() {
        obj.insert("kind".into(), Value::String(found_kind));
    }
    obj.extend(fields);
    Ok(Value::Object(obj))
}

// ---- the wire ----

/// One field's value as it is on the wire.
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

impl Raw<'_> {
    fn wire_name(&self) -> &'static str {
        match self {
            Raw::Varint(_) => "varint",
            Raw::Fixed64(_) => "64-bit",
            Raw::Fixed32 => "32-bit",
            Raw::Bytes(_) => "length-delimited",
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> WireResult<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(WireError::new("truncated varint"));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(WireError::new("varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::new("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> WireResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                WireError::new(format!(
                    "truncated: {n} bytes announced, {} left",
                    self.buf.len() - self.pos
                ))
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next field: its number and value.
    fn field(&mut self) -> WireResult<(u32, Raw<'a>)> {
        let key = self.varint()?;
        let tag = key >> 3;
        if tag == 0 || tag > u64::from(u32::MAX >> 3) {
            return Err(WireError::new(format!("invalid field number {tag}")));
        }
        let tag = tag as u32;
        let raw = match key & 7 {
            0 => Raw::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Raw::Fixed64(u64::from_le_bytes(b.try_into().unwrap_or_default()))
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .map_err(|_| WireError::new("length does not fit in memory"))?;
                Raw::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Raw::Fixed32
            }
            3 | 4 => {
                return Err(WireError::new(format!(
                    "field {tag}: protobuf groups are not supported"
                )));
            }
            wt => {
                return Err(WireError::new(format!(
                    "field {tag}: invalid wire type {wt}"
                )));
            }
        };
        Ok((tag, raw))
    }
}

/// Calls `f` with each field of the message in `buf`, in wire order.
fn for_each_field<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u32, Raw<'a>) -> WireResult<()>,
) -> WireResult<()> {
    let mut r = Reader::new(buf);
    while !r.done() {
        let (tag, raw) = r.field()?;
        f(tag, raw)?;
    }
    Ok(())
}

// ---- messages ----

fn decode_message(desc: &MessageDesc, buf: &[u8], depth: u32) -> WireResult<Value> {
    if depth > MAX_DEPTH {
        return Err(WireError::new(format!(
            "messages nested deeper than {MAX_DEPTH} levels"
        )));
    }
    match desc.special {
        Special::None => decode_fields(desc, buf, depth).map(Value::Object),
        Special::Time => time(buf, false),
        Special::MicroTime => time(buf, true),
        Special::Duration => {
            let mut nanos = 0i64;
            for_each_field(buf, |tag, raw| {
                if tag == 1 {
                    nanos = varint(raw, "duration")? as i64;
                }
                Ok(())
            })?;
            Ok(Value::String(go_duration(nanos)))
        }
        Special::Quantity => {
            let mut s = None;
            for_each_field(buf, |tag, raw| {
                if tag == 1 {
                    s = Some(string(raw, "string")?);
                }
                Ok(())
            })?;
            Ok(Value::String(
                s.filter(|s| !s.is_empty()).unwrap_or_else(|| "0".into()),
            ))
        }
        Special::IntOrString => {
            let (mut ty, mut int_val, mut str_val) = (0i64, 0i32, String::new());
            for_each_field(buf, |tag, raw| {
                match tag {
                    1 => ty = varint(raw, "type")? as i64,
                    2 => int_val = varint(raw, "intVal")? as i32,
                    3 => str_val = string(raw, "strVal")?,
                    _ => {}
                }
                Ok(())
            })?;
            match ty {
                0 => Ok(Value::from(int_val)),
                1 => Ok(Value::String(str_val)),
                other => Err(WireError::new(format!(
                    "IntOrString has an invalid type {other}"
                ))),
            }
        }
        Special::RawExtension => match last_bytes(buf, 1)? {
            None | Some([]) => Ok(Value::Null),
            Some(raw) if raw.starts_with(MAGIC) => decode_object(raw, None, depth)
                .map_err(|e| WireError::new(format!("embedded object: {e}"))),
            Some(raw) => embedded_json(raw),
        },
        Special::RawJson => match last_bytes(buf, 1)? {
            None | Some([]) => Ok(Value::Null),
            Some(raw) => embedded_json(raw),
        },
        Special::Items => {
            let mut m = decode_fields(desc, buf, depth)?;
            Ok(take_tag(desc, &mut m, 1).unwrap_or_else(|| Value::Array(Vec::new())))
        }
        // Upstream marshals a non-empty array, else the schema, else null.
        Special::SchemaOrArray | Special::SchemaOrStringArray => {
            let mut m = decode_fields(desc, buf, depth)?;
            let schema = take_tag(desc, &mut m, 1);
            match take_tag(desc, &mut m, 2) {
                Some(Value::Array(a)) if !a.is_empty() => Ok(Value::Array(a)),
                _ => Ok(schema.unwrap_or(Value::Null)),
            }
        }
        // The schema if there is one, else the boolean.
        Special::SchemaOrBool => {
            let mut m = decode_fields(desc, buf, depth)?;
            let allows = take_tag(desc, &mut m, 1);
            Ok(take_tag(desc, &mut m, 2)
                .or(allows)
                .unwrap_or(Value::Bool(false)))
        }
    }
}

/// Removes the field numbered `tag` from a decoded object.
fn take_tag(desc: &MessageDesc, m: &mut Map<String, Value>, tag: u32) -> Option<Value> {
    let f = desc.fields.iter().find(|f| f.tag == tag)?;
    m.remove(f.json)
}

fn field_desc(desc: &MessageDesc, tag: u32) -> Option<&FieldDesc> {
    desc.fields
        .binary_search_by_key(&tag, |f| f.tag)
        .ok()
        .map(|i| &desc.fields[i])
}

/// An ordinary message: an object of its fields under their JSON names.
fn decode_fields(desc: &MessageDesc, buf: &[u8], depth: u32) -> WireResult<Map<String, Value>> {
    let mut out = Map::new();
    for_each_field(buf, |tag, raw| {
        // Unknown fields are skipped, as upstream's decoder does.
        let Some(f) = field_desc(desc, tag) else {
            return Ok(());
        };
        match f.card {
            Card::Single => {
                let v = value(f.ty, raw, depth).map_err(|e| e.at(f.json))?;
                if f.inline {
                    if let Value::Object(inner) = v {
                        out.extend(inner);
                    }
                } else if is_unset(f, &v) {
                    out.remove(f.json);
                } else {
                    out.insert(f.json.to_string(), v);
                }
            }
            Card::Repeated => {
                let slot = out
                    .entry(f.json)
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(items) = slot else {
                    return Err(WireError::new("repeated field collides with another").at(f.json));
                };
                let start = items.len();
                match (f.ty, raw) {
                    // Packed scalars.
                    (Ty::Bool | Ty::Int32 | Ty::Int64 | Ty::Double, Raw::Bytes(packed)) => {
                        let mut r = Reader::new(packed);
                        while !r.done() {
                            let raw = if f.ty == Ty::Double {
                                let b = r.take(8).map_err(|e| e.at(f.json))?;
                                Raw::Fixed64(u64::from_le_bytes(b.try_into().unwrap_or_default()))
                            } else {
                                Raw::Varint(r.varint().map_err(|e| e.at(f.json))?)
                            };
                            items.push(
                                value(f.ty, raw, depth)
                                    .map_err(|e| e.at(format!("[{}]", items.len())).at(f.json))?,
                            );
                        }
                    }
                    _ => items.push(
                        value(f.ty, raw, depth)
                            .map_err(|e| e.at(format!("[{start}]")).at(f.json))?,
                    ),
                }
            }
            Card::Map => {
                let Raw::Bytes(entry) = raw else {
                    return Err(wrong_wire("map entry", raw).at(f.json));
                };
                let (k, v) = map_entry(f.ty, entry, depth).map_err(|e| e.at(f.json))?;
                let slot = out
                    .entry(f.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(map) = slot else {
                    return Err(WireError::new("map field collides with another").at(f.json));
                };
                map.insert(k, v);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// A singular value that stands for Go's non-pointer "unset" (see the module doc): an empty
/// string or bytes unless the field is one whose empty value means something, and the zero
/// of the listed non-pointer numbers and booleans.
fn is_unset(f: &FieldDesc, v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty() && !f.keep_empty,
        Value::Number(n) => f.zero_is_unset && n.as_f64() == Some(0.0),
        Value::Bool(b) => f.zero_is_unset && !b,
        _ => false,
    }
}

/// A map entry {key=1, value=2}; absent parts take their type's default.
fn map_entry(ty: Ty, buf: &[u8], depth: u32) -> WireResult<(String, Value)> {
    let mut key = String::new();
    let mut val = None;
    for_each_field(buf, |tag, raw| {
        match tag {
            1 => key = string(raw, "key")?,
            2 => val = Some(raw),
            _ => {}
        }
        Ok(())
    })?;
    let v = match val {
        Some(raw) => value(ty, raw, depth),
        None => value(ty, default_raw(ty), depth),
    }
    .map_err(|e| e.at(format!("[{key:?}]")))?;
    Ok((key, v))
}

fn default_raw(ty: Ty) -> Raw<'static> {
    match ty {
        Ty::String | Ty::Bytes | Ty::Message(_) => Raw::Bytes(&[]),
        Ty::Bool | Ty::Int32 | Ty::Int64 => Raw::Varint(0),
        Ty::Double => Raw::Fixed64(0),
    }
}

fn wrong_wire(expected: &str, raw: Raw<'_>) -> WireError {
    WireError::new(format!(
        "expected a {expected}, found a {} value",
        raw.wire_name()
    ))
}

/// One scalar or message value.
fn value(ty: Ty, raw: Raw<'_>, depth: u32) -> WireResult<Value> {
    Ok(match ty {
        Ty::String => Value::String(string(raw, "string")?),
        Ty::Bytes => match raw {
            Raw::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
            other => return Err(wrong_wire("bytes", other)),
        },
        Ty::Bool => Value::Bool(varint(raw, "bool")? != 0),
        // int32 is sign-extended to 64 bits on the wire; the low 32 bits are the value.
        Ty::Int32 => Value::from(varint(raw, "int32")? as i32),
        Ty::Int64 => Value::from(varint(raw, "int64")? as i64),
        Ty::Double => match raw {
            Raw::Fixed64(bits) => Number::from_f64(f64::from_bits(bits))
                .map(Value::Number)
                .ok_or_else(|| WireError::new("a double that is not a finite number"))?,
            other => return Err(wrong_wire("double", other)),
        },
        Ty::Message(i) => match raw {
            Raw::Bytes(b) => decode_message(message_desc(i), b, depth + 1)?,
            other => return Err(wrong_wire("message", other)),
        },
    })
}

fn varint(raw: Raw<'_>, what: &str) -> WireResult<u64> {
    match raw {
        Raw::Varint(v) => Ok(v),
        other => Err(wrong_wire(what, other)),
    }
}

fn string(raw: Raw<'_>, what: &str) -> WireResult<String> {
    match raw {
        Raw::Bytes(b) => std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| WireError::new(format!("{what} is not valid UTF-8"))),
        other => Err(wrong_wire(what, other)),
    }
}

/// The last occurrence of bytes field `tag`.
fn last_bytes(buf: &[u8], tag: u32) -> WireResult<Option<&[u8]>> {
    let mut out = None;
    for_each_field(buf, |t, raw| {
        if t == tag {
            match raw {
                Raw::Bytes(b) => out = Some(b),
                other => return Err(wrong_wire("bytes", other)),
            }
        }
        Ok(())
    })?;
    Ok(out)
}

fn embedded_json(raw: &[u8]) -> WireResult<Value> {
    serde_json::from_slice(raw)
        .map_err(|e| WireError::new(format!("embedded JSON is invalid: {e}")))
}

/// `metav1.Time` (RFC 3339, seconds) or `MicroTime` (RFC 3339, microseconds), in UTC. An
/// empty message is Go's zero time, which upstream's JSON writes as `null`.
fn time(buf: &[u8], micro: bool) -> WireResult<Value> {
    let (mut seconds, mut nanos, mut any) = (0i64, 0i64, false);
    for_each_field(buf, |tag, raw| {
        match tag {
            1 => seconds = varint(raw, "seconds")? as i64,
            2 => nanos = i64::from(varint(raw, "nanos")? as i32),
            _ => return Ok(()),
        }
        any = true;
        Ok(())
    })?;
    if !any {
        return Ok(Value::Null);
    }
    // As Go's time.Unix: nanoseconds outside [0, 1e9) carry into the seconds.
    let seconds = seconds
        .checked_add(nanos.div_euclid(1_000_000_000))
        .ok_or_else(|| WireError::new("timestamp out of range"))?;
    let nanos = nanos.rem_euclid(1_000_000_000) as u32;
    let t = chrono::DateTime::from_timestamp(seconds, nanos)
        .filter(|t| (0..=9999).contains(&chrono::Datelike::year(t)))
        .ok_or_else(|| WireError::new(format!("timestamp {seconds}s is out of range")))?;
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Value::String(t.format(format).to_string()))
}

/// A duration in nanoseconds as Go's `time.Duration.String` writes it: `1h2m3.5s`, `1.5ms`,
/// `0s`.
fn go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n == 0 {
        return "0s".into();
    }
    /// `whole` then `.frac` (of `digits` digits) without trailing zeros.
    fn decimal(whole: u64, frac: u64, digits: usize) -> String {
        let frac = format!("{frac:0digits$}");
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{frac}")
        }
    }
    if n < 1_000_000_000 {
        let (unit, scale, digits) = if n < 1_000 {
            ("ns", 1, 0)
        } else if n < 1_000_000 {
            ("µs", 1_000, 3)
        } else {
            ("ms", 1_000_000, 6)
        };
        return format!("{sign}{}{unit}", decimal(n / scale, n % scale, digits));
    }
    let secs = n / 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h{m}m"));
    } else if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&decimal(s, n % 1_000_000_000, 9));
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::api::resource::Quantity;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = MAGIC.to_vec();
        out.extend(unknown.encode_to_vec());
        out
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What kubectl's Go encoder writes for an ObjectMeta with just a name: every
    /// non-pointer field, zero or not.
    fn go_meta(name: &str, namespace: &str) -> meta::ObjectMeta {
        meta::ObjectMeta {
            name: s(name),
            generate_name: s(""),
            namespace: s(namespace),
            self_link: s(""),
            uid: s(""),
            resource_version: s(""),
            generation: Some(0),
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }
    }

    fn decode_as(api_version: &str, kind: &str, raw: Vec<u8>) -> Value {
        decode(&envelope(api_version, kind, raw), api_version, kind).unwrap()
    }

    #[test]
    fn configmap_with_data_binary_data_and_go_zero_fields() {
        let cm = core::ConfigMap {
            metadata: Some(meta::ObjectMeta {
                labels: map(&[("app", "web")]),
                ..go_meta("cfg", "")
            }),
            immutable: Some(false),
            data: map(&[("a", "1"), ("empty", "")]),
            binary_data: [("bin".to_string(), vec![0u8, 1, 2, 255])].into(),
        };
        let got = decode_as("v1", "ConfigMap", cm.encode_to_vec());
        assert_eq!(
            got,
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "cfg",
                    "creationTimestamp": null,
                    "labels": {"app": "web"},
                },
                "immutable": false,
                "data": {"a": "1", "empty": ""},
                "binaryData": {"bin": "AAEC/w=="},
            })
        );
    }

    #[test]
    fn secret_bytes_are_base64() {
        let secret = core::Secret {
            metadata: Some(go_meta("pw", "ns1")),
            data: [("password".to_string(), b"s3cr3t".to_vec())].into(),
            string_data: map(&[("plain", "x")]),
            r#type: s("Opaque"),
            immutable: None,
        };
        let got = decode_as("v1", "Secret", secret.encode_to_vec());
        assert_eq!(got["data"], json!({"password": "czNjcjN0"}));
        assert_eq!(got["stringData"], json!({"plain": "x"}));
        assert_eq!(got["type"], "Opaque");
        assert_eq!(got["metadata"]["namespace"], "ns1");
        assert!(got.get("immutable").is_none());
    }

    fn pod_template() -> core::PodTemplateSpec {
        let quantity = |q: &str| Quantity { string: s(q) };
        core::PodTemplateSpec {
            metadata: Some(meta::ObjectMeta {
                labels: map(&[("app", "web")]),
                creation_timestamp: Some(meta::Time::default()),
                ..Default::default()
            }),
            spec: Some(core::PodSpec {
                restart_policy: s(""),
                dns_policy: s(""),
                host_ipc: Some(true),
                host_pid: Some(false),
                automount_service_account_token: Some(false),
                termination_grace_period_seconds: Some(0),
                set_hostname_as_fqdn: Some(true),
                volumes: vec![core::Volume {
                    name: s("cfg"),
                    volume_source: Some(core::VolumeSource {
                        config_map: Some(core::ConfigMapVolumeSource {
                            local_object_reference: Some(core::LocalObjectReference {
                                name: s("cfg"),
                            }),
                            default_mode: Some(0o644),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                }],
                containers: vec![core::Container {
                    name: s("nginx"),
                    image: s("nginx:1.27"),
                    image_pull_policy: s(""),
                    ports: vec![core::ContainerPort {
                        container_port: Some(80),
                        host_port: Some(0),
                        protocol: s("TCP"),
                        ..Default::default()
                    }],
                    env: vec![core::EnvVar {
                        name: s("KEY"),
                        value: s(""),
                        value_from: Some(core::EnvVarSource {
                            config_map_key_ref: Some(core::ConfigMapKeySelector {
                                local_object_reference: Some(core::LocalObjectReference {
                                    name: s("cfg"),
                                }),
                                key: s("a"),
                                optional: Some(false),
                            }),
                            ..Default::default()
                        }),
                    }],
                    resources: Some(core::ResourceRequirements {
                        limits: [("cpu".to_string(), quantity("500m"))].into(),
                        requests: [("memory".to_string(), quantity("64Mi"))].into(),
                        claims: vec![],
                    }),
                    readiness_probe: Some(core::Probe {
                        handler: Some(core::ProbeHandler {
                            http_get: Some(core::HttpGetAction {
                                path: s("/healthz"),
                                port: Some(IntOrString {
                                    r#type: Some(1),
                                    int_val: Some(0),
                                    str_val: s("http"),
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        initial_delay_seconds: Some(0),
                        period_seconds: Some(5),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn expected_template() -> Value {
        json!({
            "metadata": {"labels": {"app": "web"}, "creationTimestamp": null},
            "spec": {
                "hostIPC": true,
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 0,
                "setHostnameAsFQDN": true,
                "volumes": [{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}}],
                "containers": [{
                    "name": "nginx",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "env": [{
                        "name": "KEY",
                        "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a", "optional": false}},
                    }],
                    "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}},
                    "readinessProbe": {
                        "httpGet": {"path": "/healthz", "port": "http"},
                        "periodSeconds": 5,
                    },
                }],
            },
        })
    }

    #[test]
    fn deployment_with_pod_template_inline_structs_and_zero_replicas() {
        let deploy = apps::Deployment {
            metadata: Some(go_meta("web", "default")),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(0),
                selector: Some(meta::LabelSelector {
                    match_labels: map(&[("app", "web")]),
                    match_expressions: vec![],
                }),
                template: Some(pod_template()),
                strategy: Some(apps::DeploymentStrategy {
                    r#type: s(""),
                    rolling_update: Some(apps::RollingUpdateDeployment {
                        max_unavailable: Some(IntOrString {
                            r#type: Some(0),
                            int_val: Some(0),
                            str_val: s(""),
                        }),
                        max_surge: Some(IntOrString {
                            r#type: Some(1),
                            int_val: Some(0),
                            str_val: s("25%"),
                        }),
                    }),
                }),
                min_ready_seconds: Some(0),
                paused: Some(false),
                ..Default::default()
            }),
            status: Some(apps::DeploymentStatus::default()),
        };
        let got = decode_as("apps/v1", "Deployment", deploy.encode_to_vec());
        let expected = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": null},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": expected_template(),
                "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            },
            "status": {},
        });
        assert_eq!(got, expected);
        // The JSON names are the typed ones: nothing is unknown to k8s-openapi.
        let n = rkube_api::typed::normalize("apps", "v1", "Deployment", &got)
            .unwrap()
            .unwrap();
        assert_eq!(n.unknown_fields, Vec::<String>::new());
    }

    #[test]
    fn times_micro_times_and_acronym_names() {
        let t = |seconds, nanos| meta::Time {
            seconds: Some(seconds),
            nanos: Some(nanos),
        };
        let pod = core::Pod {
            metadata: Some(meta::ObjectMeta {
                name: s("p"),
                creation_timestamp: Some(t(1_700_000_000, 999_999_999)),
                deletion_grace_period_seconds: Some(0),
                ..Default::default()
            }),
            spec: None,
            status: Some(core::PodStatus {
                pod_ip: s("10.0.0.5"),
                pod_ips: vec![core::PodIp { ip: s("10.0.0.5") }],
                host_ip: s("192.168.1.2"),
                start_time: Some(t(0, 0)),
                ..Default::default()
            }),
        };
        let got = decode_as("v1", "Pod", pod.encode_to_vec());
        assert_eq!(got["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(got["metadata"]["deletionGracePeriodSeconds"], 0);
        assert_eq!(got["status"]["podIP"], "10.0.0.5");
        assert_eq!(got["status"]["podIPs"], json!([{"ip": "10.0.0.5"}]));
        assert_eq!(got["status"]["hostIP"], "192.168.1.2");
        assert_eq!(got["status"]["startTime"], "1970-01-01T00:00:00Z");

        let lease = k8s_pb::api::coordination::v1::Lease {
            metadata: Some(go_meta("l", "kube-system")),
            spec: Some(k8s_pb::api::coordination::v1::LeaseSpec {
                holder_identity: s("node-1"),
                renew_time: Some(meta::MicroTime {
                    seconds: Some(1_700_000_000),
                    nanos: Some(123_456_789),
                }),
                lease_duration_seconds: Some(40),
                ..Default::default()
            }),
        };
        let got = decode_as("coordination.k8s.io/v1", "Lease", lease.encode_to_vec());
        assert_eq!(got["spec"]["renewTime"], "2023-11-14T22:13:20.123456Z");

        let svc = core::Service {
            metadata: Some(go_meta("svc", "")),
            spec: Some(core::ServiceSpec {
                cluster_ip: s("10.96.0.10"),
                cluster_ips: vec!["10.96.0.10".into()],
                external_ips: vec!["1.2.3.4".into()],
                ports: vec![core::ServicePort {
                    name: s(""),
                    protocol: s("TCP"),
                    port: Some(80),
                    target_port: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: s(""),
                    }),
                    node_port: Some(0),
                    ..Default::default()
                }],
                allocate_load_balancer_node_ports: Some(false),
                ..Default::default()
            }),
            status: None,
        };
        let got = decode_as("v1", "Service", svc.encode_to_vec());
        assert_eq!(
            got["spec"],
            json!({
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"],
                "externalIPs": ["1.2.3.4"],
                "ports": [{"protocol": "TCP", "port": 80, "targetPort": 8080}],
                "allocateLoadBalancerNodePorts": false,
            })
        );

        let hpa = k8s_pb::api::autoscaling::v1::HorizontalPodAutoscaler {
            metadata: Some(go_meta("h", "")),
            spec: Some(k8s_pb::api::autoscaling::v1::HorizontalPodAutoscalerSpec {
                target_cpu_utilization_percentage: Some(0),
                max_replicas: Some(3),
                ..Default::default()
            }),
            status: None,
        };
        let got = decode_as(
            "autoscaling/v1",
            "HorizontalPodAutoscaler",
            hpa.encode_to_vec(),
        );
        assert_eq!(
            got["spec"],
            json!({"targetCPUUtilizationPercentage": 0, "maxReplicas": 3})
        );
    }

    #[test]
    fn meaningful_empty_strings_are_kept() {
        let pvc = core::PersistentVolumeClaim {
            metadata: Some(go_meta("data", "")),
            spec: Some(core::PersistentVolumeClaimSpec {
                storage_class_name: s(""),
                volume_mode: s(""),
                access_modes: vec!["ReadWriteOnce".into()],
                ..Default::default()
            }),
            status: None,
        };
        let got = decode_as("v1", "PersistentVolumeClaim", pvc.encode_to_vec());
        assert_eq!(
            got["spec"],
            json!({"storageClassName": "", "accessModes": ["ReadWriteOnce"]})
        );
    }

    #[test]
    fn durations_embedded_json_and_extra_values() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1), "1ns");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(-61_000_000_000), "-1m1s");

        let sar = k8s_pb::api::authorization::v1::SubjectAccessReview {
            metadata: Some(go_meta("", "")),
            spec: Some(k8s_pb::api::authorization::v1::SubjectAccessReviewSpec {
                user: s("alice"),
                extra: [(
                    "scopes".to_string(),
                    k8s_pb::api::authorization::v1::ExtraValue {
                        items: vec!["a".into(), "b".into()],
                    },
                )]
                .into(),
                ..Default::default()
            }),
            status: None,
        };
        let got = decode_as(
            "authorization.k8s.io/v1",
            "SubjectAccessReview",
            sar.encode_to_vec(),
        );
        assert_eq!(
            got["spec"],
            json!({"user": "alice", "extra": {"scopes": ["a", "b"]}})
        );

        let cr = apps::ControllerRevision {
            metadata: Some(go_meta("rev", "")),
            data: Some(k8s_pb::apimachinery::pkg::runtime::RawExtension {
                raw: Some(br#"{"spec":{"x":1}}"#.to_vec()),
            }),
            revision: Some(2),
        };
        let got = decode_as("apps/v1", "ControllerRevision", cr.encode_to_vec());
        assert_eq!(got["data"], json!({"spec": {"x": 1}}));
        assert_eq!(got["revision"], 2);

        let managed = meta::ObjectMeta {
            name: s("m"),
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl"),
                operation: s("Update"),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:data":{}}"#.to_vec()),
                }),
                time: Some(meta::Time {
                    seconds: Some(86_400),
                    nanos: None,
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let cm = core::ConfigMap {
            metadata: Some(managed),
            ..Default::default()
        };
        let got = decode_as("v1", "ConfigMap", cm.encode_to_vec());
        assert_eq!(
            got["metadata"]["managedFields"],
            json!([{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:data": {}}, "time": "1970-01-02T00:00:00Z"}])
        );
    }

    #[test]
    fn envelope_errors() {
        let cm = core::ConfigMap {
            metadata: Some(go_meta("c", "")),
            ..Default::default()
        }
        .encode_to_vec();
        let body = envelope("v1", "ConfigMap", cm.clone());
        assert_eq!(decode(&body[1..], "v1", "ConfigMap"), Err(Error::Magic));
        assert_eq!(decode(b"{}", "v1", "ConfigMap"), Err(Error::Magic));
        assert!(matches!(
            decode(&body, "v1", "Secret"),
            Err(Error::KindMismatch { .. })
        ));
        assert!(matches!(
            decode(&body, "apps/v1", "ConfigMap"),
            Err(Error::ApiVersionMismatch { .. })
        ));
        let body = envelope("example.com/v1", "Widget", cm.clone());
        assert!(matches!(
            decode(&body, "example.com/v1", "Widget"),
            Err(Error::UnknownType { .. })
        ));
        // Truncated envelope.
        let body = envelope("v1", "ConfigMap", cm.clone());
        assert!(matches!(
            decode(&body[..body.len() - 3], "v1", "ConfigMap"),
            Err(Error::Envelope(_))
        ));
        // Compressed content.
        let mut unknown = Unknown::decode(&body[4..]).unwrap();
        unknown.content_encoding = s("gzip");
        let mut gz = MAGIC.to_vec();
        gz.extend(unknown.encode_to_vec());
        assert!(matches!(
            decode(&gz, "v1", "ConfigMap"),
            Err(Error::Unsupported(_))
        ));
        // An envelope without typeMeta is decoded as the URL's kind.
        let mut unknown = Unknown::decode(&body[4..]).unwrap();
        unknown.type_meta = None;
        let mut bare = MAGIC.to_vec();
        bare.extend(unknown.encode_to_vec());
        assert_eq!(
            decode(&bare, "v1", "ConfigMap").unwrap()["metadata"]["name"],
            "c"
        );
    }

    #[test]
    fn malformed_objects_are_errors_with_a_path() {
        // Truncated inside the object.
        let deploy = apps::Deployment {
            metadata: Some(go_meta("web", "")),
            spec: Some(apps::DeploymentSpec {
                template: Some(pod_template()),
                ..Default::default()
            }),
            status: None,
        }
        .encode_to_vec();
        for cut in [1, 7, deploy.len() / 2, deploy.len() - 1] {
            let body = envelope("apps/v1", "Deployment", deploy[..cut].to_vec());
            assert!(
                matches!(
                    decode(&body, "apps/v1", "Deployment"),
                    Err(Error::Malformed { .. })
                ),
                "cut at {cut}"
            );
        }
        // A string where a message belongs: metadata = 1 as a varint.
        let body = envelope("v1", "ConfigMap", vec![0x08, 0x01]);
        let err = decode(&body, "v1", "ConfigMap").unwrap_err();
        assert_eq!(
            err.to_string(),
            "ConfigMap in version \"v1\" cannot be handled as protobuf: metadata: expected a message, found a varint value"
        );
        // Invalid UTF-8 in a nested string, with its path.
        let cm = core::ConfigMap {
            metadata: Some(meta::ObjectMeta {
                name: s("x"),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let mut bad = cm.clone();
        let pos = bad.iter().position(|&b| b == b'x').unwrap();
        bad[pos] = 0xff;
        let err = decode(&envelope("v1", "ConfigMap", bad), "v1", "ConfigMap").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("metadata.name: string is not valid UTF-8"),
            "{err}"
        );
        // Groups and invalid wire types.
        for raw in [vec![0x0b], vec![0x0e, 0x00], vec![0x00, 0x00]] {
            assert!(decode(&envelope("v1", "ConfigMap", raw), "v1", "ConfigMap").is_err());
        }
        // A varint that never ends.
        let raw = vec![0x50; 1].into_iter().chain([0xff; 11]).collect();
        assert!(decode(&envelope("v1", "ConfigMap", raw), "v1", "ConfigMap").is_err());
        // Embedded JSON that is not JSON.
        let cr = apps::ControllerRevision {
            data: Some(k8s_pb::apimachinery::pkg::runtime::RawExtension {
                raw: Some(b"{not json".to_vec()),
            }),
            ..Default::default()
        };
        assert!(
            decode(
                &envelope("apps/v1", "ControllerRevision", cr.encode_to_vec()),
                "apps/v1",
                "ControllerRevision"
            )
            .is_err()
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // JSONSchemaProps.not is recursive; no served kind reaches it yet, so decode with its
        // descriptor directly.
        let desc = table::MESSAGES
            .iter()
            .find(|m| {
                m.name == "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps"
            })
            .expect("JSONSchemaProps");
        let not = desc.fields.iter().find(|f| f.json == "not").unwrap();
        let mut buf: Vec<u8> = Vec::new();
        for _ in 0..(MAX_DEPTH + 10) {
            let mut outer = Vec::new();
            prost::encoding::encode_varint(u64::from(not.tag << 3 | 2), &mut outer);
            prost::encoding::encode_varint(buf.len() as u64, &mut outer);
            outer.extend(&buf);
            buf = outer;
        }
        let err = decode_message(desc, &buf, 0).unwrap_err();
        assert!(err.message.contains("nested deeper"), "{}", err.message);
    }

    /// (apiVersion, group, version, kind) of every served resource and of every subresource
    /// kind with a typed decoder (`Scale`, `Eviction`, `TokenRequest`, `Binding`).
    fn served_kinds() -> Vec<(String, &'static str, &'static str, &'static str)> {
        let mut out = Vec::new();
        for info in rkube_api::registry::registry().resources() {
            out.push((info.group, info.version, info.kind));
            for sub in &info.subresources {
                if rkube_api::typed::normalize(sub.group, sub.version, sub.kind, &json!({}))
                    .is_some()
                {
                    out.push((sub.group, sub.version, sub.kind));
                }
            }
        }
        out.sort();
        out.dedup();
        out.into_iter()
            .map(|(g, v, k)| (rkube_api::registry::group_version(g, v), g, v, k))
            .collect()
    }

    /// Every message a served kind reaches has k8s-openapi's JSON names for all its fields.
    #[test]
    fn every_served_kind_is_fully_mapped() {
        let mut missing = Vec::new();
        for (av, _, _, kind) in served_kinds() {
            let desc =
                lookup(&av, kind).unwrap_or_else(|| panic!("no protobuf message for {av} {kind}"));
            let mut seen = std::collections::HashSet::new();
            let mut stack = vec![desc];
            while let Some(m) = stack.pop() {
                if !seen.insert(m.name) || m.special != Special::None {
                    continue;
                }
                if !m.typed {
                    missing.push(format!("{} (no k8s-openapi type)", m.name));
                }
                for f in m.fields {
                    if !f.verified {
                        missing.push(format!("{}.{}", m.name, f.json));
                    }
                    if let Ty::Message(i) = f.ty {
                        stack.push(message_desc(i));
                    }
                }
            }
        }
        missing.sort();
        missing.dedup();
        assert_eq!(missing, Vec::<String>::new());
    }

    /// A message with every field set (one element per list, one entry per map), nested
    /// messages included down to `depth`.
    fn synthesize(desc: &MessageDesc, depth: u32) -> Vec<u8> {
        use prost::encoding::encode_varint;
        let mut out = Vec::new();
        let key =
            |tag: u32, wt: u32, out: &mut Vec<u8>| encode_varint(u64::from(tag << 3 | wt), out);
        let bytes = |tag: u32, b: &[u8], out: &mut Vec<u8>| {
            key(tag, 2, out);
            encode_varint(b.len() as u64, out);
            out.extend_from_slice(b);
        };
        match desc.special {
            Special::Time | Special::MicroTime => {
                key(1, 0, &mut out);
                encode_varint(1_700_000_000, &mut out);
                return out;
            }
            Special::Duration => {
                key(1, 0, &mut out);
                encode_varint(90_000_000_000, &mut out);
                return out;
            }
            Special::Quantity => {
                bytes(1, b"250m", &mut out);
                return out;
            }
            Special::IntOrString => {
                key(2, 0, &mut out);
                encode_varint(7, &mut out);
                return out;
            }
            Special::RawExtension | Special::RawJson => {
                bytes(1, br#"{"a":1}"#, &mut out);
                return out;
            }
            _ => {}
        }
        for f in desc.fields {
            let one = |out: &mut Vec<u8>, tag: u32| match f.ty {
                Ty::String => bytes(tag, b"x", out),
                Ty::Bytes => bytes(tag, b"\x01\x02", out),
                Ty::Bool | Ty::Int32 | Ty::Int64 => {
                    key(tag, 0, out);
                    encode_varint(1, out);
                }
                Ty::Double => {
                    key(tag, 1, out);
                    out.extend_from_slice(&1.5f64.to_le_bytes());
                }
                Ty::Message(i) => bytes(tag, &synthesize(message_desc(i), depth - 1), out),
            };
            if matches!(f.ty, Ty::Message(_)) && depth == 0 {
                continue;
            }
            match f.card {
                Card::Single | Card::Repeated => one(&mut out, f.tag),
                Card::Map => {
                    let mut entry = Vec::new();
                    bytes(1, b"k", &mut entry);
                    one(&mut entry, 2);
                    bytes(f.tag, &entry, &mut out);
                }
            }
        }
        out
    }

    /// Paths where `a` and `b` differ.
    fn json_diff(a: &Value, b: &Value, path: &mut String, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let len = path.len();
                    path.push('.');
                    path.push_str(k);
                    match (x.get(k), y.get(k)) {
                        (Some(p), Some(q)) => json_diff(p, q, path, out),
                        (p, q) => out.push(format!("{path}: {p:?} vs {q:?}")),
                    }
                    path.truncate(len);
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    json_diff(p, q, path, out);
                    path.truncate(len);
                }
            }
            _ if a == b => {}
            _ => out.push(format!("{path}: {a} vs {b}")),
        }
    }

    /// Every field of every served kind, filled in, decodes to JSON that k8s-openapi's type
    /// reads back whole: the names and the value types are the typed ones.
    #[test]
    fn every_field_of_every_served_kind_round_trips_through_the_typed_object() {
        let mut checked = 0;
        for (av, group, version, kind) in served_kinds() {
            let desc = lookup(&av, kind).unwrap();
            let raw = synthesize(desc, 12);
            let got = decode(&envelope(&av, kind, raw), &av, kind)
                .unwrap_or_else(|e| panic!("{av} {kind}: {e}"));
            let Some(n) = rkube_api::typed::normalize(group, version, kind, &got) else {
                continue;
            };
            let n = n.unwrap_or_else(|e| panic!("{av} {kind}: {e}\n{got:#}"));
            assert_eq!(n.unknown_fields, Vec::<String>::new(), "{av} {kind}");
            let mut diffs = Vec::new();
            json_diff(&got, &n.object, &mut String::new(), &mut diffs);
            // k8s-openapi writes the type of embedded objects (volumeClaimTemplates).
            diffs
                .retain(|d| !d.contains("].apiVersion: None vs") && !d.contains("].kind: None vs"));
            assert_eq!(diffs, Vec::<String>::new(), "{av} {kind}");
            checked += 1;
        }
        assert!(checked > 40, "only {checked} kinds checked");
    }

    #[test]
    fn garbage_after_the_magic_does_not_panic() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for len in 0..2000 {
            let mut body = MAGIC.to_vec();
            for _ in 0..(len % 300) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                body.push(seed as u8);
            }
            let _ = decode(&body, "apps/v1", "Deployment");
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bodies_never_panic(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            // As the whole body, and as the object inside a valid envelope.
            let _ = decode(&raw, "v1", "Pod");
            let _ = decode(&envelope("apps/v1", "Deployment", raw.clone()), "apps/v1", "Deployment");
            let _ = decode(&envelope("v1", "Pod", raw), "v1", "Pod");
        }

        #[test]
        fn mutated_deployments_never_panic(pos in 0usize..4096, byte in proptest::num::u8::ANY) {
            let mut raw = apps::Deployment {
                metadata: Some(go_meta("web", "")),
                spec: Some(apps::DeploymentSpec {
                    template: Some(pod_template()),
                    ..Default::default()
                }),
                status: None,
            }
            .encode_to_vec();
            let pos = pos % raw.len();
            raw[pos] = byte;
            let _ = decode(&envelope("apps/v1", "Deployment", raw), "apps/v1", "Deployment");
        }
    }
}
