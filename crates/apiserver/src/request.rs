//! Parsing a resource request's path and method into what it asks for, the way upstream's
//! `RequestInfoFactory` does.
//!
//! `/api/v1/namespaces/default/pods/web/log` is group `""`, version `v1`, namespace `default`,
//! resource `pods`, name `web`, subresource `log`; the verb comes from the method, whether a
//! name is present, and `?watch=true`.

use http::Method;

/// What a resource request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// API group (`""` for `/api`).
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace, when the path names one (for `namespaces/NAME` it is that name, as upstream).
    pub namespace: Option<String>,
    /// Resource plural.
    pub resource: String,
    /// Object name.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`, `log`, ...).
    pub subresource: Option<String>,
    /// The verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: &'static str,
}

/// Parses a path below `/api` or `/apis` (`path` includes that prefix) into a request.
/// Returns `None` for paths that are not resource requests (discovery documents, `/version`).
pub fn parse(method: &Method, path: &str, watch_param: bool) -> Option<RequestInfo> {
    let trimmed = path.trim_matches('/');
    let mut parts: Vec<&str> = trimmed.split('/').collect();
    let (group, version) = match parts.first() {
        Some(&"api") if parts.len() >= 3 => {
            let v = parts[1].to_string();
            parts.drain(..2);
            (String::new(), v)
        }
        Some(&"apis") if parts.len() >= 4 => {
            let (g, v) = (parts[1].to_string(), parts[2].to_string());
            parts.drain(..3);
            (g, v)
        }
        _ => return None,
    };
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    // The legacy `/watch/` prefix.
    let mut watch = watch_param;
    if parts.first() == Some(&"watch") {
        watch = true;
        parts.remove(0);
        if parts.is_empty() {
            return None;
        }
    }
    let mut namespace = None;
    if parts[0] == "namespaces" && parts.len() > 1 {
        namespace = Some(parts[1].to_string());
        // `namespaces/NAME/status` and `/finalize` are subresources of the namespace itself.
        if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
            parts.drain(..2);
        }
    }
    if parts.len() > 3 {
        return None;
    }
    let resource = parts[0].to_string();
    let name = parts.get(1).map(|s| s.to_string());
    let subresource = parts.get(2).map(|s| s.to_string());
    let verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if name.is_some() => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => return None,
    };
    Some(RequestInfo {
        group,
        version,
        namespace,
        resource,
        name,
        subresource,
        verb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> RequestInfo {
        parse(&Method::GET, path, false).unwrap()
    }

    #[test]
    fn namespaced_object_with_subresource() {
        let r = get("/api/v1/namespaces/default/pods/web/log");
        assert_eq!(r.group, "");
        assert_eq!(r.version, "v1");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.resource, "pods");
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.subresource.as_deref(), Some("log"));
        assert_eq!(r.verb, "get");
    }

    #[test]
    fn group_list_watch_and_cluster_scope() {
        let r = get("/apis/apps/v1/namespaces/ns1/deployments");
        assert_eq!((r.group.as_str(), r.verb), ("apps", "list"));
        let w = parse(&Method::GET, "/apis/apps/v1/deployments", true).unwrap();
        assert_eq!((w.namespace, w.verb), (None, "watch"));
        let n = get("/api/v1/nodes/n1");
        assert_eq!(
            (n.resource.as_str(), n.name.as_deref()),
            ("nodes", Some("n1"))
        );
        let legacy = get("/api/v1/watch/namespaces/default/pods");
        assert_eq!(legacy.verb, "watch");
    }

    #[test]
    fn namespaces_themselves() {
        let r = get("/api/v1/namespaces/kube-system");
        assert_eq!(r.resource, "namespaces");
        assert_eq!(r.name.as_deref(), Some("kube-system"));
        let s = parse(&Method::PUT, "/api/v1/namespaces/x/finalize", false).unwrap();
        assert_eq!(
            (s.resource.as_str(), s.subresource.as_deref(), s.verb),
            ("namespaces", Some("finalize"), "update")
        );
        assert_eq!(get("/api/v1/namespaces").verb, "list");
    }

    #[test]
    fn verbs_from_methods() {
        let p = "/api/v1/namespaces/d/configmaps";
        assert_eq!(parse(&Method::POST, p, false).unwrap().verb, "create");
        assert_eq!(
            parse(&Method::DELETE, p, false).unwrap().verb,
            "deletecollection"
        );
        let o = "/api/v1/namespaces/d/configmaps/c";
        assert_eq!(parse(&Method::DELETE, o, false).unwrap().verb, "delete");
        assert_eq!(parse(&Method::PATCH, o, false).unwrap().verb, "patch");
    }

    #[test]
    fn not_resource_requests() {
        assert!(parse(&Method::GET, "/api", false).is_none());
        assert!(parse(&Method::GET, "/api/v1", false).is_none());
        assert!(parse(&Method::GET, "/apis/apps/v1", false).is_none());
        assert!(parse(&Method::GET, "/api/v1/namespaces/d/pods/a/b/c", false).is_none());
        assert!(parse(&Method::GET, "/api/v1//pods", false).is_none());
    }
}
