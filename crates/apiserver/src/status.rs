//! API errors and the Kubernetes `Status` objects they turn into.
//!
//! Every failure a client can cause is an [`ApiError`] with the upstream HTTP code and
//! `reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Expired`, ...), so that
//! `kubectl` and client libraries react to it exactly as they do against upstream.

use serde_json::{Value, json};

/// A request-level failure, rendered as a `Status` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Invalid`, ...); empty for plain failures.
    pub reason: &'static str,
    /// Human-readable message, as kubectl prints it.
    pub message: String,
    /// `details`: the object the error is about, and field causes for `Invalid`.
    pub details: Option<Box<Details>>,
}

/// The `details` of a `Status`.
#[derive(Debug, Clone, Default)]
pub struct Details {
    /// The object's name.
    pub name: String,
    /// Its API group.
    pub group: String,
    /// Its kind or resource (upstream uses the resource's plural for most errors).
    pub kind: String,
    /// Field-level causes.
    pub causes: Vec<Cause>,
    /// Seconds to wait before retrying (429/503).
    pub retry_after_seconds: Option<u32>,
}

/// One field-level cause of an `Invalid` error.
#[derive(Debug, Clone)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, ...
    pub reason: &'static str,
    /// What is wrong.
    pub message: String,
    /// JSON path of the field (`metadata.name`).
    pub field: String,
}

/// Shorthand result type for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// What an object-level error is about: resource (plural) with group, and name.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// API group (`""` for core).
    pub group: &'a str,
    /// Resource plural (`pods`).
    pub resource: &'a str,
    /// Object name.
    pub name: &'a str,
}

impl Target<'_> {
    /// `pods "web"` or `deployments.apps "web"`, as upstream words it.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            format!("{} \"{}\"", self.resource, self.name)
        } else {
            format!("{}.{} \"{}\"", self.resource, self.group, self.name)
        }
    }

    fn details(&self) -> Details {
        Details {
            name: self.name.to_string(),
            group: self.group.to_string(),
            kind: self.resource.to_string(),
            ..Details::default()
        }
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 404 NotFound for an object.
    pub fn not_found(target: Target<'_>) -> Self {
        Self {
            details: Some(Box::new(target.details())),
            ..Self::new(404, "NotFound", format!("{} not found", target.qualified()))
        }
    }

    /// 404 NotFound for a path that is not served at all.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(target: Target<'_>) -> Self {
        Self {
            details: Some(Box::new(target.details())),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} already exists", target.qualified()),
            )
        }
    }

    /// 409 Conflict (optimistic concurrency).
    pub fn conflict(target: Target<'_>, why: impl std::fmt::Display) -> Self {
        Self {
            details: Some(Box::new(target.details())),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {}: {why}",
                    target.qualified()
                ),
            )
        }
    }

    /// 409 Conflict because the object changed since it was read.
    pub fn modified(target: Target<'_>) -> Self {
        Self::conflict(
            target,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 410 Gone / Expired: a resourceVersion that is too old.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({content_type} given)"
            ),
        )
    }

    /// 422 Invalid with field causes; `kind` is the object's kind (`Pod`).
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let list = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect::<Vec<_>>();
        let what = if group.is_empty() {
            format!("{kind} \"{name}\"")
        } else {
            format!("{kind}.{group} \"{name}\"")
        };
        let message = match list.len() {
            1 => format!("{what} is invalid: {}", list[0]),
            _ => format!("{what} is invalid: [{}]", list.join(", ")),
        };
        Self {
            code: 422,
            reason: "Invalid",
            message,
            details: Some(Box::new(Details {
                name: name.to_string(),
                group: group.to_string(),
                kind: kind.to_string(),
                causes,
                retry_after_seconds: None,
            })),
        }
    }

    /// 500 InternalError.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 504 Timeout.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        if let Some(d) = &self.details {
            let mut details = serde_json::Map::new();
            if !d.name.is_empty() {
                details.insert("name".into(), json!(d.name));
            }
            if !d.group.is_empty() {
                details.insert("group".into(), json!(d.group));
            }
            if !d.kind.is_empty() {
                details.insert("kind".into(), json!(d.kind));
            }
            if !d.causes.is_empty() {
                details.insert(
                    "causes".into(),
                    d.causes
                        .iter()
                        .map(
                            |c| json!({"reason": c.reason, "message": c.message, "field": c.field}),
                        )
                        .collect(),
                );
            }
            if let Some(s) = d.retry_after_seconds {
                details.insert("retryAfterSeconds".into(), json!(s));
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl Cause {
    /// A missing required field.
    pub fn required(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired",
            message: "Required value".into(),
            field: field.into(),
        }
    }

    /// A field with a bad value; `detail` says why.
    pub fn invalid(
        field: impl Into<String>,
        value: &Value,
        detail: impl std::fmt::Display,
    ) -> Self {
        let shown = match value {
            Value::String(s) => format!("\"{s}\""),
            other => other.to_string(),
        };
        Self {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {shown}: {detail}"),
            field: field.into(),
        }
    }

    /// A field that may not change.
    pub fn immutable(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueInvalid",
            message: "field is immutable".into(),
            field: field.into(),
        }
    }

    /// A field that may not be set.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {}", detail.into()),
            field: field.into(),
        }
    }
}

/// The `Status` of a successful delete that removed the object immediately.
pub fn success_status(target: Target<'_>, uid: Option<&str>) -> Value {
    let mut details = json!({"name": target.name, "kind": target.resource});
    if !target.group.is_empty() {
        details["group"] = json!(target.group);
    }
    if let Some(uid) = uid {
        details["uid"] = json!(uid);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_reads_like_upstream() {
        let e = ApiError::not_found(Target {
            group: "apps",
            resource: "deployments",
            name: "web",
        });
        assert_eq!(e.message, "deployments.apps \"web\" not found");
        let s = e.to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["details"]["kind"], "deployments");
        assert_eq!(s["details"]["group"], "apps");
    }

    #[test]
    fn invalid_lists_causes() {
        let e = ApiError::invalid(
            "",
            "ConfigMap",
            "Bad_Name",
            vec![Cause::invalid(
                "metadata.name",
                &json!("Bad_Name"),
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters",
            )],
        );
        assert!(e.message.starts_with(
            "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ));
        assert_eq!(
            e.to_status()["details"]["causes"][0]["field"],
            "metadata.name"
        );
        assert_eq!(e.code, 422);
    }
}
