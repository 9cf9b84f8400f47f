//! Object validation: names and metadata as the API server checks them, and
//! custom resources against their CRD's OpenAPI v3 schema (types, required,
//! enums, bounds, patterns, defaults, pruning of unknown fields, and the
//! `x-kubernetes-validations` CEL rules, evaluated with kube-cel).

use serde_json::{Map, Value, json};

use crate::error::FieldError;

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Lowercase RFC 1123 subdomain, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// The name part of a qualified name or a label value: alphanumerics, `-_.`, at most 63.
pub fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_qualified_name(s: &str) -> bool {
    match s.rsplit_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(s),
    }
}

/// Validate `metadata` of an object to be stored. `namespace_name` selects the stricter DNS-label rule.
pub fn validate_metadata(meta: &Value, dns_label_name: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = meta["name"].as_str().unwrap_or_default();
    let ok = if dns_label_name { is_dns_label(name) } else { is_dns_subdomain(name) };
    if !ok {
        let rule = if dns_label_name {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        };
        errs.push(FieldError::invalid("metadata.name", json!(name), rule));
    }
    if let Some(labels) = meta.get("labels").filter(|l| !l.is_null()) {
        match labels.as_object() {
            Some(map) => {
                for (k, v) in map {
                    if !is_qualified_name(k) {
                        errs.push(FieldError::invalid("metadata.labels", json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
                    }
                    match v.as_str() {
                        Some(s) if s.is_empty() || is_qualified_name_part(s) => {}
                        _ => errs.push(FieldError::invalid(
                            format!("metadata.labels.{k}"),
                            v.clone(),
                            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                        )),
                    }
                }
            }
            None => errs.push(FieldError::invalid("metadata.labels", labels.clone(), "must be a map of strings")),
        }
    }
    if let Some(ann) = meta.get("annotations").filter(|a| !a.is_null()) {
        match ann.as_object() {
            Some(map) => {
                let mut total = 0;
                for (k, v) in map {
                    if !is_qualified_name(k) {
                        errs.push(FieldError::invalid(
                            "metadata.annotations",
                            json!(k),
                            "name part must consist of alphanumeric characters, '-', '_' or '.'",
                        ));
                    }
                    match v.as_str() {
                        Some(s) => total += k.len() + s.len(),
                        None => errs.push(FieldError::invalid(
                            format!("metadata.annotations.{k}"),
                            v.clone(),
                            "must be a string",
                        )),
                    }
                }
                if total > 256 * 1024 {
                    errs.push(FieldError::too_many("metadata.annotations", "must have at most 262144 bytes"));
                }
            }
            None => errs.push(FieldError::invalid("metadata.annotations", ann.clone(), "must be a map of strings")),
        }
    }
    if let Some(f) = meta.get("finalizers").filter(|f| !f.is_null()) {
        match f.as_array() {
            Some(items) => {
                for (i, it) in items.iter().enumerate() {
                    if !it.as_str().is_some_and(is_qualified_name) {
                        errs.push(FieldError::invalid(
                            format!("metadata.finalizers[{i}]"),
                            it.clone(),
                            "must be a qualified name",
                        ));
                    }
                }
            }
            None => errs.push(FieldError::invalid("metadata.finalizers", f.clone(), "must be a list of strings")),
        }
    }
    errs
}

/// Outcome of validating a custom resource against its schema.
#[derive(Debug, Default)]
pub struct SchemaOutcome {
    /// Field errors (422).
    pub errors: Vec<FieldError>,
    /// Paths of fields the schema does not know (pruned, or rejected under Strict).
    pub unknown: Vec<String>,
}

/// Validate, default and prune `obj` (a whole custom resource) against `schema`.
///
/// `metadata`, `apiVersion` and `kind` are left to the caller. `old` enables CEL transition rules.
pub fn validate_custom(schema: &Value, obj: &mut Value, old: Option<&Value>) -> SchemaOutcome {
    let mut out = SchemaOutcome::default();
    if let (Some(props), Some(map)) = (schema.get("properties").and_then(|p| p.as_object()), obj.as_object_mut()) {
        let preserve = schema["x-kubernetes-preserve-unknown-fields"] == json!(true);
        let keys: Vec<String> = map.keys().cloned().collect();
        for k in keys {
            if ["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
                continue;
            }
            match props.get(&k) {
                Some(sub) => {
                    let v = map.get_mut(&k).expect("key listed above");
                    walk(sub, v, &k, &mut out);
                }
                None if !preserve => {
                    map.remove(&k);
                    out.unknown.push(k);
                }
                None => {}
            }
        }
        apply_defaults(schema, map);
        check_required(schema, map, "", &mut out);
    }
    if out.errors.is_empty() {
        let validator = kube_cel::Validator::new();
        let mut for_cel = obj.clone();
        if let Some(m) = for_cel.as_object_mut() {
            m.remove("metadata");
        }
        let old_for_cel = old.map(|o| {
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("metadata");
            }
            o
        });
        if let Err(errs) = validator.validate(schema, &for_cel, old_for_cel.as_ref()) {
            for e in errs.into_vec() {
                let field = if e.field_path.is_empty() { "<root>".to_string() } else { e.field_path.clone() };
                let value = lookup_path(&for_cel, &e.field_path).cloned().unwrap_or(Value::Null);
                out.errors.push(FieldError::invalid(field, value, e.message.clone()));
            }
        }
    }
    out
}

fn lookup_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let (name, idx) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        cur = cur.get(name)?;
        if let Some(i) = idx {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn apply_defaults(schema: &Value, map: &mut Map<String, Value>) {
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (k, sub) in props {
            if !map.contains_key(k)
                && let Some(d) = sub.get("default")
            {
                map.insert(k.clone(), d.clone());
            }
        }
    }
}

fn check_required(schema: &Value, map: &Map<String, Value>, path: &str, out: &mut SchemaOutcome) {
    if let Some(req) = schema.get("required").and_then(|r| r.as_array()) {
        for r in req.iter().filter_map(|r| r.as_str()) {
            if !map.contains_key(r) {
                let p = if path.is_empty() { r.to_string() } else { format!("{path}.{r}") };
                out.errors.push(FieldError::required(p, ""));
            }
        }
    }
}

fn walk(schema: &Value, v: &mut Value, path: &str, out: &mut SchemaOutcome) {
    if v.is_null() {
        if schema["nullable"] == json!(true) {
            return;
        }
        // The API server drops nulls for fields that are not nullable, as if absent.
        return;
    }
    if schema["x-kubernetes-int-or-string"] == json!(true) {
        if !(v.is_string() || type_name(v) == "integer") {
            out.errors.push(FieldError::invalid(path, v.clone(), "must be an integer or a string"));
        }
        return;
    }
    let want = schema["type"].as_str().unwrap_or("");
    let have = type_name(v);
    let type_ok = match want {
        "" => true,
        "number" => have == "number" || have == "integer",
        w => w == have,
    };
    if !type_ok {
        out.errors.push(FieldError::invalid(
            path,
            v.clone(),
            format!("{path} in body must be of type {want}: \"{have}\""),
        ));
        return;
    }
    if let Some(en) = schema.get("enum").and_then(|e| e.as_array())
        && !en.contains(v)
    {
        let supported: Vec<String> =
            en.iter().map(|e| e.as_str().map(String::from).unwrap_or_else(|| e.to_string())).collect();
        let refs: Vec<&str> = supported.iter().map(|s| s.as_str()).collect();
        out.errors.push(FieldError::not_supported(path, v.clone(), &refs));
    }
    match v {
        Value::String(s) => {
            let s = s.clone();
            let v = &Value::String(s.clone());
            let n = s.chars().count() as u64;
            if let Some(min) = schema["minLength"].as_u64().filter(|m| n < *m) {
                out.errors.push(FieldError::invalid(
                    path,
                    v.clone(),
                    format!("{path} in body should be at least {min} chars long"),
                ));
            }
            if let Some(max) = schema["maxLength"].as_u64().filter(|m| n > *m) {
                out.errors.push(FieldError::too_many(path, format!("may not be more than {max} bytes")));
            }
            if let Some(p) = schema["pattern"].as_str() {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(&s) => out.errors.push(FieldError::invalid(
                        path,
                        v.clone(),
                        format!("{path} in body should match '{p}'"),
                    )),
                    _ => {}
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema["minimum"].as_f64().filter(|m| x < *m) {
                out.errors.push(FieldError::invalid(
                    path,
                    v.clone(),
                    format!("{path} in body should be greater than or equal to {min}"),
                ));
            }
            if let Some(max) = schema["maximum"].as_f64().filter(|m| x > *m) {
                out.errors.push(FieldError::invalid(
                    path,
                    v.clone(),
                    format!("{path} in body should be less than or equal to {max}"),
                ));
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = schema["minItems"].as_u64().filter(|m| n < *m) {
                out.errors.push(FieldError::invalid(
                    path,
                    json!(items),
                    format!("{path} in body should have at least {min} items"),
                ));
            }
            if let Some(max) = schema["maxItems"].as_u64().filter(|m| n > *m) {
                out.errors.push(FieldError::too_many(path, format!("must have at most {max} items")));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    walk(item_schema, it, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == json!(true);
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    let sub_path = format!("{path}.{k}");
                    match props.get(&k) {
                        Some(sub) => {
                            if map[&k].is_null() && sub["nullable"] != json!(true) {
                                map.remove(&k);
                                continue;
                            }
                            walk(sub, map.get_mut(&k).expect("key listed above"), &sub_path, out)
                        }
                        None if !preserve => {
                            map.remove(&k);
                            out.unknown.push(sub_path);
                        }
                        None => {}
                    }
                }
                apply_defaults(schema, map);
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, sub) in map.iter_mut() {
                    walk(ap, sub, &format!("{path}.{k}"), out);
                }
            } else if !preserve && schema.get("additionalProperties").is_none() && schema["type"] == json!("object") {
                // An object schema with no properties keeps nothing (structural pruning).
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    map.remove(&k);
                    out.unknown.push(format!("{path}.{k}"));
                }
            }
            check_required(schema, map, path, out);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_schema() -> Value {
        let crd = serde_json::to_value(<ferrolb_crds::IPAddressPool as kube::CustomResourceExt>::crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    fn pool(spec: Value) -> Value {
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn names_follow_the_rfc1123_rules() {
        assert!(is_dns_label("web-1"));
        assert!(!is_dns_label("Web"));
        assert!(!is_dns_label("-a"));
        assert!(is_dns_subdomain("ipaddresspools.ferrolb.io"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(is_qualified_name("ferrolb.io/address-pool"));
        assert!(!is_qualified_name("bad key/x y"));
    }

    #[test]
    fn metadata_errors_name_the_field() {
        let errs = validate_metadata(&json!({"name": "ok", "labels": {"app": "has space"}}), false);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.labels.app");
        assert!(validate_metadata(&json!({"name": "UPPER"}), false)[0].field == "metadata.name");
    }

    #[test]
    fn defaults_are_applied_and_unknown_fields_pruned() {
        let mut o = pool(json!({"addresses": ["198.51.100.0/24"], "bogus": 1}));
        let out = validate_custom(&pool_schema(), &mut o, None);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(
            out.unknown,
            vec![".spec.bogus".to_string()]
                .into_iter()
                .map(|s| s.trim_start_matches('.').to_string())
                .collect::<Vec<_>>()
        );
        assert_eq!(o["spec"]["autoAssign"], true);
        assert!(o["spec"].get("bogus").is_none());
    }

    #[test]
    fn empty_addresses_and_wrong_types_are_rejected() {
        let mut o = pool(json!({"addresses": []}));
        let out = validate_custom(&pool_schema(), &mut o, None);
        assert_eq!(out.errors[0].field, "spec.addresses");
        let mut o = pool(json!({"addresses": ["198.51.100.0/24"], "autoAssign": "yes"}));
        let out = validate_custom(&pool_schema(), &mut o, None);
        assert_eq!(out.errors[0].field, "spec.autoAssign");
        let mut o =
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p"}, "spec": {}});
        let out = validate_custom(&pool_schema(), &mut o, None);
        assert_eq!(out.errors[0].field, "spec.addresses");
    }

    #[test]
    fn cel_rules_reject_garbage_addresses() {
        for good in ["198.51.100.0/24", "fd42:f1b::/64", "198.51.100.10-198.51.100.20", "fd42:f1b::1 - fd42:f1b::9"] {
            let mut o = pool(json!({"addresses": [good]}));
            let out = validate_custom(&pool_schema(), &mut o, None);
            assert!(out.errors.is_empty(), "{good}: {:?}", out.errors);
        }
        for bad in ["not-an-ip", "198.51.100.0/33", "198.51.100.1-", "1-2-3"] {
            let mut o = pool(json!({"addresses": [bad]}));
            let out = validate_custom(&pool_schema(), &mut o, None);
            assert!(!out.errors.is_empty(), "{bad} accepted");
            assert!(out.errors[0].to_string().contains("must be a CIDR"), "{}", out.errors[0]);
        }
    }
}
