//! Server-side printing: `meta.k8s.io/v1` `Table` responses for `kubectl get`, with the
//! upstream columns for the common kinds and Name/Age for the rest.

use rkube_api::registry::ResourceInfo;
use serde_json::{Value, json};

use crate::meta::meta_str;

/// One column: name, type, and whether it shows only in `-o wide` (priority 1).
struct Column(&'static str, &'static str, u8);

fn columns(info: &ResourceInfo) -> Vec<Column> {
    use Column as C;
    match (info.group, info.plural) {
        ("", "pods") => vec![
            C("Name", "string", 0),
            C("Ready", "string", 0),
            C("Status", "string", 0),
            C("Restarts", "string", 0),
            C("Age", "string", 0),
            C("IP", "string", 1),
            C("Node", "string", 1),
            C("Nominated Node", "string", 1),
            C("Readiness Gates", "string", 1),
        ],
        ("apps", "deployments") => vec![
            C("Name", "string", 0),
            C("Ready", "string", 0),
            C("Up-to-date", "string", 0),
            C("Available", "string", 0),
            C("Age", "string", 0),
            C("Containers", "string", 1),
            C("Images", "string", 1),
            C("Selector", "string", 1),
        ],
        ("apps", "replicasets") => vec![
            C("Name", "string", 0),
            C("Desired", "integer", 0),
            C("Current", "integer", 0),
            C("Ready", "integer", 0),
            C("Age", "string", 0),
            C("Containers", "string", 1),
            C("Images", "string", 1),
            C("Selector", "string", 1),
        ],
        ("", "services") => vec![
            C("Name", "string", 0),
            C("Type", "string", 0),
            C("Cluster-IP", "string", 0),
            C("External-IP", "string", 0),
            C("Port(s)", "string", 0),
            C("Age", "string", 0),
            C("Selector", "string", 1),
        ],
        ("", "namespaces") => vec![
            C("Name", "string", 0),
            C("Status", "string", 0),
            C("Age", "string", 0),
        ],
        ("", "nodes") => vec![
            C("Name", "string", 0),
            C("Status", "string", 0),
            C("Roles", "string", 0),
            C("Age", "string", 0),
            C("Version", "string", 0),
            C("Internal-IP", "string", 1),
        ],
        ("", "configmaps") => vec![
            C("Name", "string", 0),
            C("Data", "integer", 0),
            C("Age", "string", 0),
        ],
        ("", "secrets") => vec![
            C("Name", "string", 0),
            C("Type", "string", 0),
            C("Data", "integer", 0),
            C("Age", "string", 0),
        ],
        ("", "serviceaccounts") => vec![
            C("Name", "string", 0),
            C("Secrets", "integer", 0),
            C("Age", "string", 0),
        ],
        ("", "endpoints") => vec![
            C("Name", "string", 0),
            C("Endpoints", "string", 0),
            C("Age", "string", 0),
        ],
        ("discovery.k8s.io", "endpointslices") => vec![
            C("Name", "string", 0),
            C("AddressType", "string", 0),
            C("Ports", "string", 0),
            C("Endpoints", "string", 0),
            C("Age", "string", 0),
        ],
        ("batch", "jobs") => vec![
            C("Name", "string", 0),
            C("Status", "string", 0),
            C("Completions", "string", 0),
            C("Duration", "string", 0),
            C("Age", "string", 0),
        ],
        _ => vec![C("Name", "string", 0), C("Age", "string", 0)],
    }
}

/// A duration as kubectl shows ages: `45s`, `5m`, `3h`, `2d`.
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=599 => format!("{}m{}s", s / 60, s % 60),
        600..=10799 => format!("{}m", s / 60),
        10800..=172799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn age(obj: &Value) -> String {
    meta_str(obj, "creationTimestamp")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| human_age((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()))
        .unwrap_or_else(|| "<unknown>".into())
}

fn i(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn s<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn join_containers(obj: &Value, ptr: &str, field: &str) -> String {
    obj.pointer(ptr)
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| c.get(field).and_then(Value::as_str).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn selector(obj: &Value, ptr: &str) -> String {
    none(&crate::meta::label_map_selector(obj.pointer(ptr)))
}

fn none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.into()
    }
}

/// At most three entries then `+ N more...`, as kubectl's printers; `empty` when none.
fn first_three(items: Vec<String>, empty: &str) -> String {
    if items.is_empty() {
        return empty.into();
    }
    let shown = items[..items.len().min(3)].join(",");
    if items.len() > 3 {
        format!("{shown} + {} more...", items.len() - 3)
    } else {
        shown
    }
}

fn array<'a>(obj: &'a Value, ptr: &str) -> &'a [Value] {
    obj.pointer(ptr)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Upstream `formatEndpoints`: `ip:port` of the ready addresses.
fn format_endpoints(obj: &Value) -> String {
    let mut out = Vec::new();
    for subset in array(obj, "/subsets") {
        let ports = array(subset, "/ports");
        for a in array(subset, "/addresses") {
            let ip = s(a, "/ip");
            if ports.is_empty() {
                out.push(ip.to_string());
            }
            for p in ports {
                out.push(format!("{ip}:{}", i(p, "/port")));
            }
        }
    }
    first_three(out, "<none>")
}

/// Upstream `formatDiscoveryPorts`.
fn format_slice_ports(obj: &Value) -> String {
    let ports: Vec<String> = array(obj, "/ports")
        .iter()
        .map(|p| i(p, "/port").to_string())
        .collect();
    first_three(ports, "<unset>")
}

/// Upstream `formatDiscoveryEndpoints`.
fn format_slice_endpoints(obj: &Value) -> String {
    let addrs: Vec<String> = array(obj, "/endpoints")
        .iter()
        .flat_map(|e| array(e, "/addresses"))
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    first_three(addrs, "<unset>")
}

fn cells(info: &ResourceInfo, obj: &Value) -> Vec<Value> {
    let name = json!(meta_str(obj, "name").unwrap_or(""));
    match (info.group, info.plural) {
        ("", "pods") => {
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses.map_or(0, |s| {
                s.iter()
                    .filter(|c| c.get("ready") == Some(&json!(true)))
                    .count()
            });
            let restarts: i64 = statuses.map_or(0, |s| {
                s.iter()
                    .map(|c| c.get("restartCount").and_then(Value::as_i64).unwrap_or(0))
                    .sum()
            });
            let mut status = s(obj, "/status/reason").to_string();
            if status.is_empty() {
                status = s(obj, "/status/phase").to_string();
            }
            for c in statuses.into_iter().flatten() {
                if let Some(r) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
                    status = r.to_string();
                } else if let Some(r) = c
                    .pointer("/state/terminated/reason")
                    .and_then(Value::as_str)
                    && status != "Running"
                {
                    status = r.to_string();
                }
            }
            if meta_str(obj, "deletionTimestamp").is_some() {
                status = "Terminating".into();
            }
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(status),
                json!(restarts.to_string()),
                json!(age(obj)),
                json!(none(s(obj, "/status/podIP"))),
                json!(none(s(obj, "/spec/nodeName"))),
                json!(none(s(obj, "/status/nominatedNodeName"))),
                json!("<none>"),
            ]
        }
        ("apps", "deployments") => vec![
            name,
            json!(format!(
                "{}/{}",
                i(obj, "/status/readyReplicas"),
                obj.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            )),
            json!(i(obj, "/status/updatedReplicas")),
            json!(i(obj, "/status/availableReplicas")),
            json!(age(obj)),
            json!(join_containers(
                obj,
                "/spec/template/spec/containers",
                "name"
            )),
            json!(join_containers(
                obj,
                "/spec/template/spec/containers",
                "image"
            )),
            json!(selector(obj, "/spec/selector/matchLabels")),
        ],
        ("apps", "replicasets") => vec![
            name,
            json!(
                obj.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            ),
            json!(i(obj, "/status/replicas")),
            json!(i(obj, "/status/readyReplicas")),
            json!(age(obj)),
            json!(join_containers(
                obj,
                "/spec/template/spec/containers",
                "name"
            )),
            json!(join_containers(
                obj,
                "/spec/template/spec/containers",
                "image"
            )),
            json!(selector(obj, "/spec/selector/matchLabels")),
        ],
        ("", "services") => {
            let ports = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                            match p.get("nodePort").and_then(Value::as_i64) {
                                Some(np) => format!("{}:{np}/{proto}", i(p, "/port")),
                                None => format!("{}/{proto}", i(p, "/port")),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".into());
            let ty = match s(obj, "/spec/type") {
                "" => "ClusterIP",
                t => t,
            };
            vec![
                name,
                json!(ty),
                json!(none(s(obj, "/spec/clusterIP"))),
                json!("<none>"),
                json!(ports),
                json!(age(obj)),
                json!(selector(obj, "/spec/selector")),
            ]
        }
        ("", "namespaces") => vec![name, json!(s(obj, "/status/phase")), json!(age(obj))],
        ("", "nodes") => {
            let ready = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c.get("type") == Some(&json!("Ready"))))
                .map(|c| {
                    if c.get("status") == Some(&json!("True")) {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                })
                .unwrap_or("Unknown");
            let mut status = ready.to_string();
            if obj.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<&str> = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect()
                })
                .unwrap_or_default();
            let ip = obj
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|x| x.get("type") == Some(&json!("InternalIP")))
                })
                .and_then(|x| x.get("address").and_then(Value::as_str))
                .unwrap_or("<none>");
            vec![
                name,
                json!(status),
                json!(if roles.is_empty() {
                    "<none>".to_string()
                } else {
                    roles.join(",")
                }),
                json!(age(obj)),
                json!(s(obj, "/status/nodeInfo/kubeletVersion")),
                json!(ip),
            ]
        }
        ("", "configmaps") => {
            let n = ["data", "binaryData"]
                .iter()
                .filter_map(|f| obj.get(*f).and_then(Value::as_object))
                .map(|m| m.len())
                .sum::<usize>();
            vec![name, json!(n), json!(age(obj))]
        }
        ("", "endpoints") => vec![name, json!(format_endpoints(obj)), json!(age(obj))],
        ("discovery.k8s.io", "endpointslices") => vec![
            name,
            json!(s(obj, "/addressType")),
            json!(format_slice_ports(obj)),
            json!(format_slice_endpoints(obj)),
            json!(age(obj)),
        ],
        ("", "secrets") => {
            let n = obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            vec![name, json!(s(obj, "/type")), json!(n), json!(age(obj))]
        }
        ("", "serviceaccounts") => {
            vec![
                name,
                json!(
                    obj.get("secrets")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                ),
                json!(age(obj)),
            ]
        }
        ("batch", "jobs") => {
            let completions = obj
                .pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let conds = obj.pointer("/status/conditions").and_then(Value::as_array);
            let has = |t: &str| {
                conds.is_some_and(|c| {
                    c.iter().any(|x| {
                        x.get("type") == Some(&json!(t)) && x.get("status") == Some(&json!("True"))
                    })
                })
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if obj.pointer("/spec/suspend") == Some(&json!(true)) {
                "Suspended"
            } else {
                "Running"
            };
            vec![
                name,
                json!(status),
                json!(format!("{}/{completions}", i(obj, "/status/succeeded"))),
                json!(""),
                json!(age(obj)),
            ]
        }
        _ => vec![name, json!(age(obj))],
    }
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

fn table(info: &ResourceInfo, items: &[&Value], list_meta: Value) -> Value {
    let cols: Vec<Value> = columns(info)
        .into_iter()
        .map(|Column(name, ty, priority)| {
            let mut c = json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" }, "description": "", "priority": priority});
            if name == "Name" {
                c["description"] = json!("Name must be unique within a namespace.");
            }
            c
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| json!({"cells": cells(info, o), "object": partial_metadata(o)}))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": cols,
        "rows": rows,
    })
}

/// The Table of a list document.
pub fn list_table(info: &ResourceInfo, list: &Value) -> Value {
    let items: Vec<&Value> = list["items"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    table(
        info,
        &items,
        list.get("metadata").cloned().unwrap_or(json!({})),
    )
}

/// The Table of one object.
pub fn object_table(info: &ResourceInfo, obj: &Value) -> Value {
    table(
        info,
        &[obj],
        json!({"resourceVersion": meta_str(obj, "resourceVersion")}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(150), "2m30s");
        assert_eq!(human_age(900), "15m");
        assert_eq!(human_age(4 * 3600), "4h");
        assert_eq!(human_age(3 * 86400), "3d");
    }

    #[test]
    fn endpoints_columns_read_like_kubectl() {
        let ep = json!({"subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
             "notReadyAddresses": [{"ip": "10.0.0.9"}],
             "ports": [{"port": 80}, {"port": 81}]}]});
        assert_eq!(
            format_endpoints(&ep),
            "10.0.0.1:80,10.0.0.1:81,10.0.0.2:80 + 1 more..."
        );
        assert_eq!(format_endpoints(&json!({})), "<none>");
        let slice = json!({"ports": [{"port": 8080}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        assert_eq!(format_slice_ports(&slice), "8080");
        assert_eq!(format_slice_endpoints(&slice), "10.0.0.1,10.0.0.2");
        assert_eq!(format_slice_ports(&json!({})), "<unset>");
    }
}
