//! What a kubelet does to a container spec before it starts the process: the
//! environment built in order from literal values, `fieldRef` (the downward API),
//! `secretKeyRef` and `configMapKeyRef`, then `$(VAR)` references in the command,
//! args and later values expanded against it. Pure: the Pod's identity and the
//! Secrets and ConfigMaps are passed in, so the rules are tested on tables, and a
//! stand-in that starts a chart's containers runs them with exactly the args and
//! env a kubelet would give them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar};

/// The Pod a container runs in, as the downward API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `spec.nodeName`.
    pub node_name: String,
    /// `spec.serviceAccountName`.
    pub service_account: String,
    /// `status.hostIP`.
    pub host_ip: String,
    /// `status.podIP`.
    pub pod_ip: String,
}

/// Where a container's references to Secrets and ConfigMaps are looked up (its Pod's namespace).
pub trait Lookup {
    /// `data[key]` of Secret `name`, decoded; `None` when the Secret or the key is missing.
    fn secret(&self, name: &str, key: &str) -> Option<String>;
    /// `data[key]` of ConfigMap `name`.
    fn config_map(&self, name: &str, key: &str) -> Option<String>;
}

/// A process to start: the program, its arguments and its whole environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// `command[0]` (the image's entrypoint when the container names none).
    pub program: String,
    /// The rest of `command`, then `args`.
    pub args: Vec<String>,
    /// The environment, in the container's order.
    pub env: Vec<(String, String)>,
}

/// Why a container cannot start; the kubelet reports it as `CreateContainerConfigError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A `secretKeyRef` names a Secret or key that does not exist (and is not optional).
    #[error("secret {name:?} (key {key:?}) not found")]
    Secret {
        /// The Secret.
        name: String,
        /// Its key.
        key: String,
    },
    /// A `configMapKeyRef` names a ConfigMap or key that does not exist.
    #[error("configmap {name:?} (key {key:?}) not found")]
    ConfigMap {
        /// The ConfigMap.
        name: String,
        /// Its key.
        key: String,
    },
    /// A `fieldRef` path the downward API does not offer.
    #[error("env {var}: unsupported fieldRef {path:?}")]
    FieldPath {
        /// The variable.
        var: String,
        /// The path.
        path: String,
    },
    /// No command in the container and no entrypoint given.
    #[error("container {0:?} has no command")]
    NoCommand(String),
}

/// Expand `$(VAR)` in `s` against `vars` the way the kubelet does: `$$` is a literal `$`,
/// and a reference to an unknown variable is left as written.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[i..i + 2 + end + 1]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field(pod: &PodInfo, var: &str, path: &str) -> Result<String, ConfigError> {
    let indexed = |prefix: &str, map: &BTreeMap<String, String>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.get(key).cloned().unwrap_or_default())
    };
    let v = match path {
        "metadata.name" => pod.name.clone(),
        "metadata.namespace" => pod.namespace.clone(),
        "metadata.uid" => pod.uid.clone(),
        "spec.nodeName" => pod.node_name.clone(),
        "spec.serviceAccountName" => pod.service_account.clone(),
        "status.hostIP" | "status.hostIPs" => pod.host_ip.clone(),
        "status.podIP" | "status.podIPs" => pod.pod_ip.clone(),
        _ => indexed("metadata.labels['", &pod.labels)
            .or_else(|| indexed("metadata.annotations['", &pod.annotations))
            .ok_or_else(|| ConfigError::FieldPath { var: var.into(), path: path.into() })?,
    };
    Ok(v)
}

fn value(
    e: &EnvVar,
    pod: &PodInfo,
    vars: &BTreeMap<String, String>,
    lookup: &dyn Lookup,
) -> Result<Option<String>, ConfigError> {
    let Some(from) = &e.value_from else {
        return Ok(Some(expand(e.value.as_deref().unwrap_or_default(), vars)));
    };
    if let Some(f) = &from.field_ref {
        return field(pod, &e.name, &f.field_path).map(Some);
    }
    if let Some(s) = &from.secret_key_ref {
        return match lookup.secret(&s.name, &s.key) {
            Some(v) => Ok(Some(v)),
            None if s.optional == Some(true) => Ok(None),
            None => Err(ConfigError::Secret { name: s.name.clone(), key: s.key.clone() }),
        };
    }
    if let Some(c) = &from.config_map_key_ref {
        return match lookup.config_map(&c.name, &c.key) {
            Some(v) => Ok(Some(v)),
            None if c.optional == Some(true) => Ok(None),
            None => Err(ConfigError::ConfigMap { name: c.name.clone(), key: c.key.clone() }),
        };
    }
    // resourceFieldRef (limits) is not used by ferrolb's chart; an empty value keeps the
    // variable defined, as it would be.
    Ok(Some(String::new()))
}

/// The process a kubelet starts for `container` in `pod`; `entrypoint` stands for the
/// image's when the container has no `command`.
pub fn launch(
    container: &Container,
    pod: &PodInfo,
    lookup: &dyn Lookup,
    entrypoint: Option<&[String]>,
) -> Result<Launch, ConfigError> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut env = Vec::new();
    for e in container.env.iter().flatten() {
        if let Some(v) = value(e, pod, &vars, lookup)? {
            vars.insert(e.name.clone(), v.clone());
            env.retain(|(k, _): &(String, String)| *k != e.name);
            env.push((e.name.clone(), v));
        }
    }
    let command: Vec<String> = match (&container.command, entrypoint) {
        (Some(c), _) if !c.is_empty() => c.iter().map(|s| expand(s, &vars)).collect(),
        (_, Some(ep)) if !ep.is_empty() => ep.to_vec(),
        _ => return Err(ConfigError::NoCommand(container.name.clone())),
    };
    let (program, mut args) = (command[0].clone(), command[1..].to_vec());
    args.extend(container.args.iter().flatten().map(|a| expand(a, &vars)));
    Ok(Launch { program, args, env })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Objects(BTreeMap<(String, String), String>);

    impl Lookup for Objects {
        fn secret(&self, name: &str, key: &str) -> Option<String> {
            self.0.get(&(format!("secret/{name}"), key.to_string())).cloned()
        }
        fn config_map(&self, name: &str, key: &str) -> Option<String> {
            self.0.get(&(format!("configmap/{name}"), key.to_string())).cloned()
        }
    }

    fn pod() -> PodInfo {
        PodInfo {
            name: "ferrolb-speaker-x7k2p".into(),
            namespace: "ferrolb-system".into(),
            node_name: "node-1".into(),
            host_ip: "198.51.100.11".into(),
            pod_ip: "198.51.100.11".into(),
            labels: [("app".to_string(), "speaker".to_string())].into(),
            ..Default::default()
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn references_expand_as_the_kubelet_expands_them() {
        let v = vars(&[("NODE_NAME", "node-1"), ("EMPTY", "")]);
        let table = [
            ("--node-name=$(NODE_NAME)", "--node-name=node-1"),
            ("$(NODE_NAME)$(NODE_NAME)", "node-1node-1"),
            ("$$(NODE_NAME)", "$(NODE_NAME)"),
            ("$(MISSING) stays", "$(MISSING) stays"),
            ("cost $5", "cost $5"),
            ("x=$(EMPTY)", "x="),
            ("unclosed $(NODE_NAME", "unclosed $(NODE_NAME"),
            ("trailing $", "trailing $"),
        ];
        for (input, want) in table {
            assert_eq!(expand(input, &v), want, "{input}");
        }
    }

    #[test]
    fn a_container_gets_its_downward_api_secret_and_earlier_variables() {
        let c: Container = serde_json::from_value(json!({
        "name": "speaker", "command": ["ferrolb-speaker"],
        "args": ["--node-name=$(NODE_NAME)", "--namespace=$(NS)", "--x=$(KEY_COPY)"],
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "ml", "key": "secretkey"}}},
            {"name": "KEY_COPY", "value": "$(KEY)-copy"},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
        ]}))
        .unwrap();
        let objects = Objects([(("secret/ml".to_string(), "secretkey".to_string()), "s3cret".to_string())].into());
        let l = launch(&c, &pod(), &objects, None).unwrap();
        assert_eq!(l.program, "ferrolb-speaker");
        assert_eq!(l.args, ["--node-name=node-1", "--namespace=ferrolb-system", "--x=s3cret-copy"]);
        let env: BTreeMap<_, _> = l.env.iter().cloned().collect();
        assert_eq!(env["APP"], "speaker");
        assert!(!env.contains_key("OPT"), "an optional missing Secret leaves the variable unset");
    }

    #[test]
    fn a_missing_secret_or_an_unknown_field_is_a_config_error() {
        let c: Container = serde_json::from_value(json!({"name": "c", "command": ["x"],
            "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]}))
        .unwrap();
        let none = Objects(BTreeMap::new());
        assert_eq!(launch(&c, &pod(), &none, None).unwrap_err().to_string(), "secret \"gone\" (key \"k\") not found");
        let c: Container = serde_json::from_value(json!({"name": "c", "command": ["x"],
            "env": [{"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]}))
        .unwrap();
        assert!(matches!(launch(&c, &pod(), &none, None), Err(ConfigError::FieldPath { .. })));
        let c: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        assert_eq!(launch(&c, &pod(), &none, None), Err(ConfigError::NoCommand("c".into())));
        let ep = vec!["/entry".to_string(), "--flag".to_string()];
        assert_eq!(launch(&c, &pod(), &none, Some(&ep)).unwrap().args, ["--flag"]);
    }
}
