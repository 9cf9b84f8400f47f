//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902, with `test`),
//! strategic merge patch for built-in types, and server-side apply with
//! field ownership (`metadata.managedFields`).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// RFC 6902 JSON patch; a failed `test` or a bad path is an error message.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &p).map_err(|e| e.to_string())
}

/// The merge key of a list field in built-in types, by its path (array indices dropped).
fn merge_key(path: &[String]) -> Option<&'static str> {
    let last = path.last()?.as_str();
    let parent = path.len().checked_sub(2).map(|i| path[i].as_str()).unwrap_or("");
    Some(match last {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" | "addresses" if parent == "status" => "type",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "topologySpreadConstraints" => "topologyKey",
        "ports" if parent == "spec" && path.len() == 2 => "port",
        "ports" => "containerPort",
        _ => return None,
    })
}

/// Primitive lists whose patch strategy is `merge` (set union).
fn merges_primitives(path: &[String]) -> bool {
    path.last().is_some_and(|l| l == "finalizers")
}

/// Strategic merge patch, for built-in types, with the directives kubectl sends.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    smp(target, patch, &mut Vec::new())
}

fn smp(target: &mut Value, patch: &Value, path: &mut Vec<String>) -> Result<(), String> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(|d| d.as_str()) {
        Some("replace") => {
            let mut v = patch.clone();
            v.as_object_mut().expect("object").remove("$patch");
            *target = v;
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other}")),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Some(retain) = p.get("$retainKeys").and_then(|r| r.as_array()) {
        let keep: BTreeSet<&str> = retain.iter().filter_map(|k| k.as_str()).collect();
        target.as_object_mut().expect("object").retain(|k, _| keep.contains(k.as_str()));
    }
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
            if let Some(arr) = target.get_mut(field).and_then(|a| a.as_array_mut()) {
                arr.retain(|x| !remove.contains(&x));
            }
            continue;
        }
        let t = target.as_object_mut().expect("object");
        if v.is_null() {
            t.remove(k);
            continue;
        }
        path.push(k.clone());
        let slot = t.entry(k.clone()).or_insert(Value::Null);
        match v {
            Value::Array(items) => smp_list(slot, items, path)?,
            Value::Object(_) => smp(slot, v, path)?,
            _ => *slot = v.clone(),
        }
        path.pop();
    }
    Ok(())
}

fn smp_list(slot: &mut Value, items: &[Value], path: &mut Vec<String>) -> Result<(), String> {
    if let Some(key) = merge_key(path) {
        if !slot.is_array() {
            *slot = json!([]);
        }
        let cur = slot.as_array_mut().expect("array");
        for it in items {
            let Some(kv) = it.get(key) else {
                return Err(format!("map in list {} is missing the merge key {key}", path.join(".")));
            };
            let pos = cur.iter().position(|c| c.get(key) == Some(kv));
            let delete = it.get("$patch").and_then(|d| d.as_str()) == Some("delete");
            match (pos, delete) {
                (Some(i), true) => {
                    cur.remove(i);
                }
                (None, true) => {}
                (Some(i), false) => smp(&mut cur[i], it, path)?,
                (None, false) => {
                    let mut fresh = Value::Null;
                    smp(&mut fresh, it, path)?;
                    cur.push(fresh);
                }
            }
        }
    } else if merges_primitives(path) {
        if !slot.is_array() {
            *slot = json!([]);
        }
        let cur = slot.as_array_mut().expect("array");
        for it in items {
            if !cur.contains(it) {
                cur.push(it.clone());
            }
        }
    } else {
        *slot = Value::Array(items.to_vec());
    }
    Ok(())
}

/// A field path as owned by a manager: map keys from the root; lists are atomic leaves.
pub type FieldPath = Vec<String>;

/// Leaf paths of `v` below `prefix`. Maps recurse; scalars and lists are leaves.
/// An empty map owns nothing below it, so it contributes no path.
pub fn leaf_paths(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(m) if m.is_empty() => {}
        Value::Object(m) => {
            for (k, sub) in m {
                prefix.push(k.clone());
                leaf_paths(sub, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

/// Fields of an object that managers track: everything but identity and server-owned metadata.
pub fn tracked_fields(obj: &Value, only_status: bool, exclude_status: bool) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let Some(m) = obj.as_object() else { return out };
    for (k, v) in m {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        if only_status && k != "status" {
            continue;
        }
        if exclude_status && k == "status" {
            continue;
        }
        if k == "metadata" {
            for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                if let Some(sub) = v.get(mk) {
                    let mut p = vec!["metadata".to_string(), mk.to_string()];
                    if mk == "labels" || mk == "annotations" {
                        leaf_paths(sub, &mut p, &mut out);
                    } else {
                        out.insert(p);
                    }
                }
            }
            continue;
        }
        let mut p = vec![k.clone()];
        leaf_paths(v, &mut p, &mut out);
    }
    out
}

/// Value at a field path.
pub fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, seg| cur.get(seg))
}

fn set_path(v: &mut Value, path: &[String], val: Value) {
    let mut cur = v;
    for seg in &path[..path.len() - 1] {
        if !cur.get(seg).is_some_and(|c| c.is_object()) {
            cur[seg.as_str()] = json!({});
        }
        cur = cur.get_mut(seg).expect("set above");
    }
    cur[path[path.len() - 1].as_str()] = val;
}

/// Empty maps in an applied config exist afterwards (they own nothing, but are present).
fn ensure_empty_maps(applied: &Value, obj: &mut Value, prefix: &mut FieldPath) {
    if let Value::Object(m) = applied {
        for (k, sub) in m {
            if prefix.is_empty() && (k == "apiVersion" || k == "kind") {
                continue;
            }
            prefix.push(k.clone());
            if sub.as_object().is_some_and(|s| s.is_empty()) {
                if get_path(obj, prefix).is_none() {
                    set_path(obj, prefix, json!({}));
                }
            } else {
                ensure_empty_maps(sub, obj, prefix);
            }
            prefix.pop();
        }
    }
}

fn remove_path(v: &mut Value, path: &[String]) {
    let mut cur = v;
    for seg in &path[..path.len() - 1] {
        match cur.get_mut(seg) {
            Some(c) => cur = c,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(&path[path.len() - 1]);
    }
}

/// Drop maps left empty by removals, below `path`'s parents.
fn prune_empty_parents(v: &mut Value, path: &[String]) {
    for depth in (1..path.len()).rev() {
        let parent = &path[..depth];
        if get_path(v, parent).is_some_and(|p| p.as_object().is_some_and(|m| m.is_empty())) {
            remove_path(v, parent);
        }
    }
}

/// One `managedFields` entry, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// API version the fields were written in.
    pub api_version: String,
    /// Time of the write (RFC 3339).
    pub time: String,
    /// Subresource written (`""` or `status`).
    pub subresource: String,
    /// Owned field paths.
    pub fields: BTreeSet<FieldPath>,
}

/// Encode a field set as `fieldsV1`.
pub fn encode_fields(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = json!({});
    for p in fields {
        let mut cur = &mut root;
        for seg in p {
            let key = format!("f:{seg}");
            if cur.get(&key).is_none() {
                cur[key.as_str()] = json!({});
            }
            cur = cur.get_mut(&key).expect("inserted");
        }
    }
    root
}

/// Decode `fieldsV1` into leaf paths (intermediate `.` markers ignored).
pub fn decode_fields(v: &Value) -> BTreeSet<FieldPath> {
    fn rec(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let children: Vec<(&String, &Value)> =
            v.as_object().map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect()).unwrap_or_default();
        if children.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (k, sub) in children {
            prefix.push(k[2..].to_string());
            rec(sub, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    rec(v, &mut Vec::new(), &mut out);
    out
}

/// Read `metadata.managedFields`.
pub fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| ManagedEntry {
                    manager: e["manager"].as_str().unwrap_or_default().into(),
                    operation: e["operation"].as_str().unwrap_or("Update").into(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                    time: e["time"].as_str().unwrap_or_default().into(),
                    subresource: e["subresource"].as_str().unwrap_or_default().into(),
                    fields: decode_fields(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Write `metadata.managedFields`, dropping managers that own nothing, in
/// kube-apiserver's order: by operation, time, manager, then subresource (so the order
/// never depends on which manager wrote last).
pub fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let mut sorted: Vec<&ManagedEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.operation, &a.time, &a.manager, &a.subresource).cmp(&(&b.operation, &b.time, &b.manager, &b.subresource))
    });
    let arr: Vec<Value> = sorted
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode_fields(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if arr.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = Value::Array(arr);
    }
}

fn overlaps(a: &FieldPath, b: &FieldPath) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Who writes, and how, for field-ownership bookkeeping.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// Field manager.
    pub manager: &'a str,
    /// Subresource (`""` or `status`).
    pub subresource: &'a str,
    /// API version of the request.
    pub api_version: &'a str,
    /// Timestamp for the entry.
    pub time: &'a str,
}

/// Server-side apply `applied` onto `current` (`Value::Null` when the object does not exist).
///
/// Returns the new object, or the conflicting (manager, field) pairs when `force` is off.
pub fn server_side_apply(
    current: &Value,
    applied: &Value,
    writer: &Writer<'_>,
    force: bool,
    only_status: bool,
    exclude_status: bool,
) -> Result<Value, Vec<(String, String)>> {
    let mut managed = read_managed(current);
    let new_set = tracked_fields(applied, only_status, exclude_status);
    let mut conflicts = Vec::new();
    for e in managed.iter_mut() {
        if e.manager == writer.manager && e.operation == "Apply" && e.subresource == writer.subresource {
            continue;
        }
        let mut lost = Vec::new();
        for owned in &e.fields {
            for p in new_set.iter().filter(|p| overlaps(p, owned)) {
                let differs = get_path(current, owned) != get_path(applied, owned)
                    || get_path(current, p) != get_path(applied, p);
                if differs {
                    if force {
                        lost.push(owned.clone());
                    } else {
                        conflicts.push((e.manager.clone(), format!(".{}", p.join("."))));
                    }
                }
            }
        }
        for l in lost {
            e.fields.remove(&l);
        }
    }
    if !conflicts.is_empty() {
        conflicts.sort();
        conflicts.dedup();
        return Err(conflicts);
    }
    let mut obj = if current.is_null() { json!({}) } else { current.clone() };
    let previous: BTreeSet<FieldPath> = managed
        .iter()
        .find(|e| e.manager == writer.manager && e.operation == "Apply" && e.subresource == writer.subresource)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: BTreeSet<FieldPath> = managed
        .iter()
        .filter(|e| !(e.manager == writer.manager && e.operation == "Apply" && e.subresource == writer.subresource))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    for gone in previous.difference(&new_set) {
        let still_set = new_set.iter().any(|p| overlaps(p, gone));
        let shared = others.iter().any(|o| overlaps(o, gone));
        if !still_set && !shared {
            remove_path(&mut obj, gone);
            prune_empty_parents(&mut obj, gone);
        }
    }
    for p in &new_set {
        let v = get_path(applied, p).cloned().unwrap_or(Value::Null);
        set_path(&mut obj, p, v);
    }
    ensure_empty_maps(applied, &mut obj, &mut Vec::new());
    for k in ["apiVersion", "kind"] {
        if let Some(v) = applied.get(k) {
            obj[k] = v.clone();
        }
    }
    managed.retain(|e| !(e.manager == writer.manager && e.operation == "Apply" && e.subresource == writer.subresource));
    managed.push(ManagedEntry {
        manager: writer.manager.into(),
        operation: "Apply".into(),
        api_version: writer.api_version.into(),
        time: writer.time.into(),
        subresource: writer.subresource.into(),
        fields: new_set,
    });
    write_managed(&mut obj, &managed);
    Ok(obj)
}

/// Record an Update-operation write: the writer takes the fields it changed; removed fields lose owners.
pub fn record_update(old: &Value, new: &mut Value, writer: &Writer<'_>, only_status: bool, exclude_status: bool) {
    let mut managed = read_managed(old);
    let before = tracked_fields(old, only_status, exclude_status);
    let after = tracked_fields(new, only_status, exclude_status);
    let changed: BTreeSet<FieldPath> = after.iter().filter(|p| get_path(old, p) != get_path(new, p)).cloned().collect();
    let removed: BTreeSet<FieldPath> = before.difference(&after).cloned().collect();
    if changed.is_empty() && removed.is_empty() && !old.is_null() {
        write_managed(new, &managed);
        return;
    }
    for e in managed.iter_mut() {
        e.fields.retain(|f| !changed.iter().any(|c| overlaps(c, f)) && !removed.iter().any(|r| overlaps(r, f)));
    }
    let mine = managed
        .iter()
        .position(|e| e.manager == writer.manager && e.operation == "Update" && e.subresource == writer.subresource);
    match mine {
        Some(i) => {
            managed[i].fields.extend(changed);
            managed[i].time = writer.time.into();
        }
        None => managed.push(ManagedEntry {
            manager: writer.manager.into(),
            operation: "Update".into(),
            api_version: writer.api_version.into(),
            time: writer.time.into(),
            subresource: writer.subresource.into(),
            fields: changed,
        }),
    }
    write_managed(new, &managed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(manager: &str) -> Writer<'_> {
        Writer { manager, subresource: "", api_version: "v1", time: "2026-01-01T00:00:00Z" }
    }

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        merge_patch(&mut t, &json!({"list": [1, 2]}));
        merge_patch(&mut t, &json!({"list": [3]}));
        assert_eq!(t["list"], json!([3]));
    }

    #[test]
    fn json_patch_test_op_guards() {
        let mut t = json!({"metadata": {"finalizers": ["a"]}});
        let ok = json!([{"op": "test", "path": "/metadata/finalizers", "value": ["a"]},
                        {"op": "remove", "path": "/metadata/finalizers/0"}]);
        json_patch(&mut t, &ok).unwrap();
        assert_eq!(t["metadata"]["finalizers"], json!([]));
        let bad = json!([{"op": "test", "path": "/metadata/finalizers", "value": ["zzz"]}]);
        assert!(json_patch(&mut t, &bad).is_err());
    }

    #[test]
    fn strategic_merge_merges_by_key_and_honours_directives() {
        let mut svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]},
                             "metadata": {"finalizers": ["a"]}});
        let patch = json!({"spec": {"$setElementOrder/ports": [{"port": 80}, {"port": 443}],
                                    "ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "$patch": "delete"}]},
                           "metadata": {"finalizers": ["b"]}});
        strategic_merge_patch(&mut svc, &patch).unwrap();
        assert_eq!(svc["spec"]["ports"], json!([{"port": 80, "name": "http", "targetPort": 8080}]));
        assert_eq!(svc["metadata"]["finalizers"], json!(["a", "b"]));
        strategic_merge_patch(&mut svc, &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})).unwrap();
        assert_eq!(svc["metadata"]["finalizers"], json!(["b"]));
        strategic_merge_patch(&mut svc, &json!({"spec": {"$patch": "replace", "type": "ClusterIP"}})).unwrap();
        assert_eq!(svc["spec"], json!({"type": "ClusterIP"}));
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let mut set = BTreeSet::new();
        set.insert(vec!["spec".to_string(), "a".to_string()]);
        set.insert(vec!["metadata".to_string(), "labels".to_string(), "x".to_string()]);
        assert_eq!(decode_fields(&encode_fields(&set)), set);
        let real = json!({"f:metadata": {"f:labels": {".": {}, "f:x": {}}}, "f:spec": {"f:a": {}}});
        assert_eq!(decode_fields(&real), set);
    }

    #[test]
    fn apply_creates_then_removes_fields_it_stopped_applying() {
        let a1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"x": "1"}},
                        "data": {"a": "1", "b": "2"}});
        let o1 = server_side_apply(&Value::Null, &a1, &w("m1"), false, false, false).unwrap();
        assert_eq!(o1["data"], json!({"a": "1", "b": "2"}));
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let o2 = server_side_apply(&o1, &a2, &w("m1"), false, false, false).unwrap();
        assert_eq!(o2["data"], json!({"a": "1"}));
        assert!(o2["metadata"].get("labels").is_none());
    }

    #[test]
    fn apply_conflicts_with_another_manager_unless_forced() {
        let a1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let o1 = server_side_apply(&Value::Null, &a1, &w("m1"), false, false, false).unwrap();
        let same = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let shared = server_side_apply(&o1, &same, &w("m2"), false, false, false).unwrap();
        assert_eq!(read_managed(&shared).len(), 2, "same value: shared ownership, no conflict");
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "2"}});
        let err = server_side_apply(&o1, &other, &w("m2"), false, false, false).unwrap_err();
        assert_eq!(err, vec![("m1".to_string(), ".data.a".to_string())]);
        let forced = server_side_apply(&o1, &other, &w("m2"), true, false, false).unwrap();
        assert_eq!(forced["data"]["a"], "2");
        let managers: Vec<String> = read_managed(&forced).into_iter().map(|e| e.manager).collect();
        assert_eq!(managers, vec!["m2".to_string()]);
    }

    #[test]
    fn updates_take_ownership_of_changed_fields() {
        let a1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let o1 = server_side_apply(&Value::Null, &a1, &w("m1"), false, false, false).unwrap();
        let mut o2 = o1.clone();
        o2["data"]["a"] = json!("9");
        record_update(&o1, &mut o2, &w("kubectl-edit"), false, false);
        let err = server_side_apply(&o2, &a1, &w("m1"), false, false, false).unwrap_err();
        assert_eq!(err[0].0, "kubectl-edit");
    }
}
