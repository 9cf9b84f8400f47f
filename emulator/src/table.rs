//! `meta.k8s.io/v1` Table output for kubectl, with the printer columns of each
//! resource evaluated as JSONPath.

use serde_json::{Value, json};

use crate::resources::{PrinterColumn, ResourceType};

/// Evaluate the subset of JSONPath printer columns use: `.a.b`, `[n]`, `[*]`, `[?(@.k=="v")]`.
pub fn json_path(obj: &Value, path: &str) -> Vec<Value> {
    let mut cur = vec![obj.clone()];
    let path = path.trim().trim_start_matches('{').trim_end_matches('}').trim_start_matches('$');
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            cur = cur.iter().filter_map(|v| v.get(key).cloned()).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { return vec![] };
            let inner = &r[..end];
            rest = &r[end + 1..];
            if inner == "*" {
                cur = cur.iter().flat_map(|v| v.as_array().cloned().unwrap_or_default()).collect();
            } else if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let Some((k, v)) = filter.split_once("==") else { return vec![] };
                let want = v.trim().trim_matches('"').trim_matches('\'');
                cur = cur
                    .iter()
                    .flat_map(|a| a.as_array().cloned().unwrap_or_default())
                    .filter(|item| item.get(k.trim()).and_then(|x| x.as_str()) == Some(want))
                    .collect();
            } else if let Ok(i) = inner.parse::<usize>() {
                cur = cur.iter().filter_map(|v| v.get(i).cloned()).collect();
            } else {
                return vec![];
            }
        } else {
            return vec![];
        }
    }
    cur
}

/// `5s`, `3m2s`, `4h`, `12d`: kubectl's human-readable age.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=599 => format!("{}m{}s", s / 60, s % 60).replace("m0s", "m"),
        600..=10799 => format!("{}m", s / 60),
        10800..=172799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn age(ts: &Value) -> Value {
    let Some(t) = ts.as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()) else {
        return json!("<unknown>");
    };
    json!(human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()))
}

fn service_ports(obj: &Value) -> Value {
    let ports: Vec<String> = obj["spec"]["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_u64() {
                        Some(np) => format!("{}:{np}/{proto}", p["port"]),
                        None => format!("{}/{proto}", p["port"]),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    json!(if ports.is_empty() { "<none>".to_string() } else { ports.join(",") })
}

fn external_ips(obj: &Value) -> Value {
    let mut ips: Vec<String> = obj["status"]["loadBalancer"]["ingress"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()).map(String::from)).collect())
        .unwrap_or_default();
    if let Some(ext) = obj["spec"]["externalIPs"].as_array() {
        ips.extend(ext.iter().filter_map(|e| e.as_str().map(String::from)));
    }
    if ips.is_empty() {
        let pending = obj["spec"]["type"] == json!("LoadBalancer");
        return json!(if pending { "<pending>" } else { "<none>" });
    }
    json!(ips.join(","))
}

/// A Pod's containers: how many are ready, of how many; the restarts of all; and the
/// status word kubectl shows (a waiting or terminated container's reason, else the phase).
fn pod_columns(obj: &Value) -> (String, i64, String) {
    let total = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
    let statuses = obj["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    let ready = statuses.iter().filter(|c| c["ready"] == json!(true)).count();
    let restarts = statuses.iter().filter_map(|c| c["restartCount"].as_i64()).sum();
    let reason = statuses
        .iter()
        .find_map(|c| c["state"]["waiting"]["reason"].as_str().or_else(|| c["state"]["terminated"]["reason"].as_str()))
        .or_else(|| obj["status"]["reason"].as_str())
        .or_else(|| obj["status"]["phase"].as_str())
        .unwrap_or("Pending");
    (format!("{ready}/{total}"), restarts, reason.to_string())
}

fn cell(obj: &Value, c: &PrinterColumn) -> Value {
    match c.json_path.as_str() {
        "$podReady" => return json!(pod_columns(obj).0),
        "$podRestarts" => return json!(pod_columns(obj).1),
        "$podStatus" => return json!(pod_columns(obj).2),
        "$servicePorts" => return service_ports(obj),
        "$replicasReady" => {
            let ready = obj["status"]["readyReplicas"].as_i64().unwrap_or(0);
            return json!(format!("{ready}/{}", obj["spec"]["replicas"].as_i64().unwrap_or(1)));
        }
        "$externalIPs" => return external_ips(obj),
        "$roleRef" => {
            let r = &obj["roleRef"];
            return json!(format!("{}/{}", r["kind"].as_str().unwrap_or(""), r["name"].as_str().unwrap_or("")));
        }
        "$involvedObject" => {
            let io = &obj["involvedObject"];
            return json!(format!(
                "{}/{}",
                io["kind"].as_str().unwrap_or("").to_lowercase(),
                io["name"].as_str().unwrap_or("")
            ));
        }
        _ => {}
    }
    let vals = json_path(obj, &c.json_path);
    if c.type_ == "date" {
        return vals.first().map(age).unwrap_or(Value::Null);
    }
    match vals.len() {
        0 => Value::Null,
        1 => match (&vals[0], c.type_.as_str()) {
            (Value::Array(_) | Value::Object(_), _) => json!(vals[0].to_string()),
            (v, _) => v.clone(),
        },
        _ => json!(
            vals.iter()
                .map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// The column definitions for a resource version.
pub fn column_definitions(columns: &[PrinterColumn]) -> Vec<Value> {
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    defs.extend(columns.iter().map(|c| {
        json!({"name": c.name, "type": if c.type_ == "date" { "string" } else { c.type_.as_str() }, "format": c.format, "description": c.description, "priority": c.priority})
    }));
    defs
}

/// One Table row for an object.
pub fn row(obj: &Value, columns: &[PrinterColumn], include_object: &str) -> Value {
    let mut cells = vec![obj["metadata"]["name"].clone()];
    cells.extend(columns.iter().map(|c| cell(obj, c)));
    let object = match include_object {
        "None" => Value::Null,
        "Object" => obj.clone(),
        _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}),
    };
    json!({"cells": cells, "object": object})
}

/// A whole Table for a list of objects.
pub fn table(
    rt: &ResourceType,
    version: &str,
    objs: &[Value],
    rv: &str,
    cont: Option<&str>,
    include_object: &str,
) -> Value {
    let cols = rt.version(version).map(|v| v.columns.clone()).unwrap_or_default();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": column_definitions(&cols),
        "rows": objs.iter().map(|o| row(o, &cols, include_object)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_subset() {
        let o = json!({"spec": {"a": [1, 2]}, "status": {"conditions": [{"type": "Valid", "status": "True"}, {"type": "X", "status": "False"}]}});
        assert_eq!(json_path(&o, ".spec.a"), vec![json!([1, 2])]);
        assert_eq!(json_path(&o, ".spec.a[1]"), vec![json!(2)]);
        assert_eq!(json_path(&o, ".spec.a[*]"), vec![json!(1), json!(2)]);
        assert_eq!(json_path(&o, ".status.conditions[?(@.type==\"Valid\")].status"), vec![json!("True")]);
        assert!(json_path(&o, ".missing.x").is_empty());
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(180), "3m");
        assert_eq!(human_duration(7200), "120m");
        assert_eq!(human_duration(3 * 86400), "3d");
    }

    #[test]
    fn service_cells_show_pending_and_ports() {
        let svc = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30001, "protocol": "TCP"}]}, "status": {"loadBalancer": {}}});
        assert_eq!(external_ips(&svc), json!("<pending>"));
        assert_eq!(service_ports(&svc), json!("80:30001/TCP"));
        let done = json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}});
        assert_eq!(external_ips(&done), json!("198.51.100.1"));
    }

    #[test]
    fn pod_cells_read_like_kubectl() {
        let pod = |statuses: Value, phase: &str| {
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                   "status": {"phase": phase, "containerStatuses": statuses}})
        };
        let running = pod(
            json!([{"ready": true, "restartCount": 0, "state": {"running": {}}},
                   {"ready": false, "restartCount": 2, "state": {"running": {}}}]),
            "Running",
        );
        assert_eq!(pod_columns(&running), ("1/2".to_string(), 2, "Running".to_string()));
        let crashing = pod(
            json!([{"ready": false, "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]),
            "Running",
        );
        assert_eq!(pod_columns(&crashing), ("0/2".to_string(), 5, "CrashLoopBackOff".to_string()));
        assert_eq!(pod_columns(&json!({"spec": {"containers": [{}]}})), ("0/1".to_string(), 0, "Pending".to_string()));
    }
}
