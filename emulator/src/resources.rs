//! The resources the emulator serves: built-in core types and those registered
//! by CustomResourceDefinitions, plus the discovery documents kubectl reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

/// A printer column (`additionalPrinterColumns` entry).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Header.
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `date`, ...).
    pub type_: String,
    /// Optional format.
    pub format: String,
    /// JSONPath evaluated against the object.
    pub json_path: String,
    /// Column priority (0 shown by default).
    pub priority: i64,
    /// Description.
    pub description: String,
}

/// One servable version of a resource.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    /// Version name (`v1beta1`).
    pub name: String,
    /// Printer columns for Table output.
    pub columns: Vec<PrinterColumn>,
    /// The OpenAPI v3 schema objects are validated against (CRDs only).
    pub schema: Option<Arc<Value>>,
}

/// A resource type: names, scope, subresources, versions.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group; empty for core.
    pub group: String,
    /// Versions served, the storage/preferred one first.
    pub versions: Vec<VersionInfo>,
    /// Kind.
    pub kind: String,
    /// `listKind`.
    pub list_kind: String,
    /// Plural resource name used in paths.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories (`all`, ...).
    pub categories: Vec<String>,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Whether `/status` is a separate subresource.
    pub status_subresource: bool,
    /// Whether `/scale` (autoscaling/v1 `Scale` over `spec.replicas`) is served.
    pub scale_subresource: bool,
    /// Whether objects are custom resources (validated against a schema, no strategic merge).
    pub custom: bool,
}

impl ResourceType {
    /// The version info for `version`, if served.
    pub fn version(&self, version: &str) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.name == version)
    }

    /// `group/version` or `version` for core.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() { version.to_string() } else { format!("{}/{version}", self.group) }
    }

    fn discovery_entries(&self) -> Vec<Value> {
        let verbs = json!(["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]);
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
            "shortNames": self.short_names,
            "categories": self.categories,
        })];
        if self.status_subresource {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if self.scale_subresource {
            out.push(json!({
                "name": format!("{}/scale", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }
}

/// Key of a resource type in the registry and the store: (group, plural).
pub type ResourceKey = (String, String);

/// All resource types currently served.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: BTreeMap<ResourceKey, Arc<ResourceType>>,
}

fn col(name: &str, type_: &str, json_path: &str) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        format: String::new(),
        json_path: json_path.into(),
        priority: 0,
        description: String::new(),
    }
}

/// A column shown only with `-o wide`.
fn wide(mut c: PrinterColumn) -> PrinterColumn {
    c.priority = 1;
    c
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short: &'static [&'static str],
    namespaced: bool,
    status: bool,
    columns: Vec<PrinterColumn>,
}

impl Registry {
    /// The registry with the built-in types ferrolb and kubectl touch.
    pub fn with_builtins() -> Self {
        let age = || col("Age", "date", ".metadata.creationTimestamp");
        let builtins = vec![
            Builtin {
                group: "",
                version: "v1",
                kind: "Namespace",
                plural: "namespaces",
                short: &["ns"],
                namespaced: false,
                status: true,
                columns: vec![col("Status", "string", ".status.phase"), age()],
            },
            Builtin {
                group: "",
                version: "v1",
                kind: "Node",
                plural: "nodes",
                short: &["no"],
                namespaced: false,
                status: true,
                columns: vec![
                    col("Status", "string", ".status.conditions[?(@.type==\"Ready\")].status"),
                    age(),
                    col("Version", "string", ".status.nodeInfo.kubeletVersion"),
                ],
            },
            Builtin {
                group: "",
                version: "v1",
                kind: "Service",
                plural: "services",
                short: &["svc"],
                namespaced: true,
                status: true,
                columns: vec![
                    col("Type", "string", ".spec.type"),
                    col("Cluster-IP", "string", ".spec.clusterIP"),
                    col("External-IP", "string", "$externalIPs"),
                    col("Port(s)", "string", "$servicePorts"),
                    age(),
                ],
            },
            Builtin {
                group: "",
                version: "v1",
                kind: "Endpoints",
                plural: "endpoints",
                short: &["ep"],
                namespaced: true,
                status: false,
                columns: vec![age()],
            },
            Builtin {
                group: "",
                version: "v1",
                kind: "Pod",
                plural: "pods",
                short: &["po"],
                namespaced: true,
                status: true,
                // As kube-apiserver prints Pods: READY, STATUS (a waiting or terminated
                // container's reason before the phase), RESTARTS, AGE; IP and NODE in -o wide.
                columns: vec![
                    col("Ready", "string", "$podReady"),
                    col("Status", "string", "$podStatus"),
                    col("Restarts", "integer", "$podRestarts"),
                    age(),
                    wide(col("IP", "string", ".status.podIP")),
                    wide(col("Node", "string", ".spec.nodeName")),
                ],
            },
            Builtin {
                group: "",
                version: "v1",
                kind: "Event",
                plural: "events",
                short: &["ev"],
                namespaced: true,
                status: false,
                columns: vec![
                    col("Type", "string", ".type"),
                    col("Reason", "string", ".reason"),
                    col("Object", "string", "$involvedObject"),
                    col("Message", "string", ".message"),
                ],
            },
            Builtin {
                group: "",
                version: "v1",
                kind: "Secret",
                plural: "secrets",
                short: &[],
                namespaced: true,
                status: false,
                columns: vec![col("Type", "string", ".type"), age()],
            },
            Builtin {
                group: "",
                version: "v1",
                kind: "ConfigMap",
                plural: "configmaps",
                short: &["cm"],
                namespaced: true,
                status: false,
                columns: vec![age()],
            },
            Builtin {
                group: "",
                version: "v1",
                kind: "ServiceAccount",
                plural: "serviceaccounts",
                short: &["sa"],
                namespaced: true,
                status: false,
                columns: vec![age()],
            },
            Builtin {
                group: "discovery.k8s.io",
                version: "v1",
                kind: "EndpointSlice",
                plural: "endpointslices",
                short: &[],
                namespaced: true,
                status: false,
                columns: vec![
                    col("AddressType", "string", ".addressType"),
                    col("Endpoints", "string", ".endpoints[*].addresses[0]"),
                    age(),
                ],
            },
            Builtin {
                group: "coordination.k8s.io",
                version: "v1",
                kind: "Lease",
                plural: "leases",
                short: &[],
                namespaced: true,
                status: false,
                columns: vec![col("Holder", "string", ".spec.holderIdentity"), age()],
            },
            Builtin {
                group: "events.k8s.io",
                version: "v1",
                kind: "Event",
                plural: "events",
                short: &["ev"],
                namespaced: true,
                status: false,
                columns: vec![
                    col("Type", "string", ".type"),
                    col("Reason", "string", ".reason"),
                    col("Object", "string", ".regarding.name"),
                    col("Note", "string", ".note"),
                ],
            },
            Builtin {
                group: "rbac.authorization.k8s.io",
                version: "v1",
                kind: "ClusterRole",
                plural: "clusterroles",
                short: &[],
                namespaced: false,
                status: false,
                columns: vec![col("Created At", "string", ".metadata.creationTimestamp")],
            },
            Builtin {
                group: "rbac.authorization.k8s.io",
                version: "v1",
                kind: "ClusterRoleBinding",
                plural: "clusterrolebindings",
                short: &[],
                namespaced: false,
                status: false,
                columns: vec![col("Role", "string", "$roleRef"), age()],
            },
            Builtin {
                group: "rbac.authorization.k8s.io",
                version: "v1",
                kind: "Role",
                plural: "roles",
                short: &[],
                namespaced: true,
                status: false,
                columns: vec![col("Created At", "string", ".metadata.creationTimestamp")],
            },
            Builtin {
                group: "rbac.authorization.k8s.io",
                version: "v1",
                kind: "RoleBinding",
                plural: "rolebindings",
                short: &[],
                namespaced: true,
                status: false,
                columns: vec![col("Role", "string", "$roleRef"), age()],
            },
            Builtin {
                group: "apps",
                version: "v1",
                kind: "Deployment",
                plural: "deployments",
                short: &["deploy"],
                namespaced: true,
                status: true,
                columns: vec![
                    col("Ready", "string", "$replicasReady"),
                    col("Up-To-Date", "integer", ".status.updatedReplicas"),
                    col("Available", "integer", ".status.availableReplicas"),
                    age(),
                ],
            },
            Builtin {
                group: "apps",
                version: "v1",
                kind: "ReplicaSet",
                plural: "replicasets",
                short: &["rs"],
                namespaced: true,
                status: true,
                columns: vec![
                    col("Desired", "integer", ".spec.replicas"),
                    col("Current", "integer", ".status.replicas"),
                    col("Ready", "integer", ".status.readyReplicas"),
                    age(),
                ],
            },
            Builtin {
                group: "apps",
                version: "v1",
                kind: "DaemonSet",
                plural: "daemonsets",
                short: &["ds"],
                namespaced: true,
                status: true,
                columns: vec![
                    col("Desired", "integer", ".status.desiredNumberScheduled"),
                    col("Ready", "integer", ".status.numberReady"),
                    age(),
                ],
            },
            Builtin {
                group: "policy",
                version: "v1",
                kind: "PodDisruptionBudget",
                plural: "poddisruptionbudgets",
                short: &["pdb"],
                namespaced: true,
                status: true,
                columns: vec![
                    col("Min Available", "string", ".spec.minAvailable"),
                    col("Max Unavailable", "string", ".spec.maxUnavailable"),
                    age(),
                ],
            },
            Builtin {
                group: "networking.k8s.io",
                version: "v1",
                kind: "NetworkPolicy",
                plural: "networkpolicies",
                short: &["netpol"],
                namespaced: true,
                status: false,
                columns: vec![col("Pod-Selector", "string", ".spec.podSelector"), age()],
            },
            Builtin {
                group: "admissionregistration.k8s.io",
                version: "v1",
                kind: "ValidatingWebhookConfiguration",
                plural: "validatingwebhookconfigurations",
                short: &[],
                namespaced: false,
                status: false,
                columns: vec![age()],
            },
            Builtin {
                group: "admissionregistration.k8s.io",
                version: "v1",
                kind: "ValidatingAdmissionPolicy",
                plural: "validatingadmissionpolicies",
                short: &[],
                namespaced: false,
                status: true,
                columns: vec![col("Validations", "integer", ".spec.validations[*]"), age()],
            },
            Builtin {
                group: "admissionregistration.k8s.io",
                version: "v1",
                kind: "ValidatingAdmissionPolicyBinding",
                plural: "validatingadmissionpolicybindings",
                short: &[],
                namespaced: false,
                status: false,
                columns: vec![col("PolicyName", "string", ".spec.policyName"), age()],
            },
            Builtin {
                group: "apiextensions.k8s.io",
                version: "v1",
                kind: "CustomResourceDefinition",
                plural: "customresourcedefinitions",
                short: &["crd", "crds"],
                namespaced: false,
                status: true,
                columns: vec![col("Created At", "string", ".metadata.creationTimestamp")],
            },
        ];
        let mut reg = Registry::default();
        for b in builtins {
            let mut columns = b.columns;
            for c in &mut columns {
                if c.name == "Age" {
                    c.format = String::new();
                }
            }
            reg.insert(ResourceType {
                group: b.group.into(),
                versions: vec![VersionInfo { name: b.version.into(), columns, schema: None }],
                kind: b.kind.into(),
                list_kind: format!("{}List", b.kind),
                plural: b.plural.into(),
                singular: b.kind.to_lowercase(),
                short_names: b.short.iter().map(|s| s.to_string()).collect(),
                categories: if ["Service", "Pod", "Deployment", "ReplicaSet", "DaemonSet"].contains(&b.kind) {
                    vec!["all".into()]
                } else {
                    vec![]
                },
                namespaced: b.namespaced,
                status_subresource: b.status,
                scale_subresource: ["Deployment", "ReplicaSet"].contains(&b.kind),
                custom: false,
            });
        }
        reg
    }

    /// Add or replace a type.
    pub fn insert(&mut self, rt: ResourceType) {
        self.types.insert((rt.group.clone(), rt.plural.clone()), Arc::new(rt));
    }

    /// Remove a type.
    pub fn remove(&mut self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types.remove(&(group.to_string(), plural.to_string()))
    }

    /// The type served at `group/version` under `plural`, if any.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types.get(&(group.to_string(), plural.to_string())).filter(|rt| rt.version(version).is_some()).cloned()
    }

    /// The type with this group and plural, whatever its versions.
    pub fn by_plural(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types.get(&(group.to_string(), plural.to_string())).cloned()
    }

    /// The type with this group and kind, if any.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types.values().find(|rt| rt.group == group && rt.kind == kind).cloned()
    }

    /// Whether any type is served under `group`.
    pub fn has_group(&self, group: &str) -> bool {
        self.types.values().any(|rt| rt.group == group)
    }

    /// `/api`.
    pub fn core_versions(&self) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        })
    }

    /// `APIGroup` objects for every named group.
    fn groups(&self) -> Vec<Value> {
        let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for rt in self.types.values().filter(|rt| !rt.group.is_empty()) {
            let versions = by_group.entry(rt.group.as_str()).or_default();
            for v in &rt.versions {
                if !versions.contains(&v.name.as_str()) {
                    versions.push(v.name.as_str());
                }
            }
        }
        by_group
            .into_iter()
            .map(|(g, vs)| {
                let vlist: Vec<Value> =
                    vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
                json!({"name": g, "versions": vlist, "preferredVersion": vlist[0].clone()})
            })
            .collect()
    }

    /// `/apis`.
    pub fn group_list(&self) -> Value {
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": self.groups()})
    }

    /// `/apis/<group>`.
    pub fn group(&self, group: &str) -> Option<Value> {
        self.groups().into_iter().find(|g| g["name"] == group).map(|mut g| {
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        })
    }

    /// `/api/v1` or `/apis/<group>/<version>`.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let resources: Vec<Value> = self
            .types
            .values()
            .filter(|rt| rt.group == group && rt.version(version).is_some())
            .flat_map(|rt| rt.discovery_entries())
            .collect();
        if resources.is_empty() {
            return None;
        }
        let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
    }
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

impl Registry {
    /// Every (group, version) served.
    fn group_versions(&self) -> Vec<(String, String)> {
        let mut gvs: Vec<(String, String)> =
            self.types.values().flat_map(|rt| rt.versions.iter().map(|v| (rt.group.clone(), v.name.clone()))).collect();
        gvs.sort();
        gvs.dedup();
        gvs
    }

    /// `/openapi/v3`: the index of per-group-version documents, each URL carrying a content hash
    /// so that kubectl's cache notices a changed CRD.
    pub fn openapi_v3_index(&self) -> Value {
        let mut paths = serde_json::Map::new();
        for (g, v) in self.group_versions() {
            let doc = self.openapi_v3_doc(&g, &v).unwrap_or_default().to_string();
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&doc, &mut h);
            let hash = std::hash::Hasher::finish(&h);
            let p = gv_path(&g, &v);
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash:016X}")}));
        }
        json!({"paths": paths})
    }

    /// `/openapi/v3/<gv>`: enough OpenAPI for kubectl to see that the server validates fields
    /// itself (`fieldValidation` on PATCH) and, for CRDs, the schemas `kubectl explain` reads.
    ///
    /// Strategic merge is deliberately not listed, so kubectl builds patches for built-in
    /// types from its compiled-in structs and JSON merge patches for custom resources.
    pub fn openapi_v3_doc(&self, group: &str, version: &str) -> Option<Value> {
        let mut paths = serde_json::Map::new();
        let mut schemas = serde_json::Map::new();
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
        ]);
        let body = json!({"content": {
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
        }});
        for rt in self.types.values().filter(|rt| rt.group == group) {
            let Some(vi) = rt.version(version) else { continue };
            let gvk = json!({"group": rt.group, "version": version, "kind": rt.kind});
            let base = if rt.namespaced {
                format!("/{}/namespaces/{{namespace}}/{}", gv_path(group, version), rt.plural)
            } else {
                format!("/{}/{}", gv_path(group, version), rt.plural)
            };
            let op = |action: &str| {
                json!({"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": action, "parameters": params,
                       "requestBody": body, "responses": {"200": {"description": "OK"}}})
            };
            paths.insert(format!("{base}/{{name}}"), json!({"patch": op("patch")}));
            if rt.status_subresource {
                paths.insert(format!("{base}/{{name}}/status"), json!({"patch": op("patch")}));
            }
            if let Some(schema) = &vi.schema {
                let mut s = (**schema).clone();
                s["x-kubernetes-group-version-kind"] = json!([gvk]);
                let mut rev: Vec<&str> = rt.group.split('.').collect();
                rev.reverse();
                schemas.insert(format!("{}.{version}.{}", rev.join("."), rt.kind), s);
            }
        }
        if paths.is_empty() {
            return None;
        }
        Some(json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": paths,
            "components": {"schemas": schemas},
        }))
    }
}

/// Build a resource type from a CustomResourceDefinition object, or say which field is wrong.
pub fn from_crd(crd: &Value) -> Result<ResourceType, crate::error::FieldError> {
    use crate::error::FieldError;
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    if group.is_empty() || !group.contains('.') {
        return Err(FieldError::invalid(
            "spec.group",
            spec["group"].clone(),
            "should be a domain with at least one dot",
        ));
    }
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    if plural.is_empty() {
        return Err(FieldError::required("spec.names.plural", ""));
    }
    if kind.is_empty() {
        return Err(FieldError::required("spec.names.kind", ""));
    }
    let expected = format!("{plural}.{group}");
    if crd["metadata"]["name"].as_str() != Some(expected.as_str()) {
        return Err(FieldError::invalid(
            "metadata.name",
            crd["metadata"]["name"].clone(),
            format!("must be spec.names.plural+\".\"+spec.group: {expected}"),
        ));
    }
    let scope = spec["scope"].as_str().unwrap_or_default();
    let namespaced = match scope {
        "Namespaced" => true,
        "Cluster" => false,
        _ => return Err(FieldError::not_supported("spec.scope", json!(scope), &["Cluster", "Namespaced"])),
    };
    let mut versions = Vec::new();
    let mut status_subresource = false;
    let empty = vec![];
    let vs = spec["versions"].as_array().unwrap_or(&empty);
    if vs.is_empty() {
        return Err(FieldError::required("spec.versions", "must have exactly one version marked as storage version"));
    }
    if vs.iter().filter(|v| v["storage"] == json!(true)).count() != 1 {
        return Err(FieldError::invalid(
            "spec.versions",
            json!(null),
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in vs.iter().enumerate() {
        let name = v["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            return Err(FieldError::required(format!("spec.versions[{i}].name"), ""));
        }
        let schema = &v["schema"]["openAPIV3Schema"];
        if !schema.is_object() {
            return Err(FieldError::required(
                format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "schemas are required",
            ));
        }
        if v["subresources"]["status"].is_object() {
            status_subresource = true;
        }
        if v["served"] != json!(true) {
            continue;
        }
        let mut columns: Vec<PrinterColumn> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|c| PrinterColumn {
                name: c["name"].as_str().unwrap_or_default().into(),
                type_: c["type"].as_str().unwrap_or("string").into(),
                format: c["format"].as_str().unwrap_or_default().into(),
                json_path: c["jsonPath"].as_str().unwrap_or_default().into(),
                priority: c["priority"].as_i64().unwrap_or(0),
                description: c["description"].as_str().unwrap_or_default().into(),
            })
            .collect();
        if columns.is_empty() {
            columns.push(col("Age", "date", ".metadata.creationTimestamp"));
        }
        let storage = v["storage"] == json!(true);
        let info = VersionInfo { name: name.into(), columns, schema: Some(Arc::new(schema.clone())) };
        if storage { versions.insert(0, info) } else { versions.push(info) }
    }
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    Ok(ResourceType {
        singular: names["singular"].as_str().map(String::from).unwrap_or_else(|| kind.to_lowercase()),
        list_kind: names["listKind"].as_str().map(String::from).unwrap_or_else(|| format!("{kind}List")),
        short_names: strings(&names["shortNames"]),
        categories: strings(&names["categories"]),
        group,
        versions,
        kind,
        plural,
        namespaced,
        status_subresource,
        scale_subresource: false,
        custom: true,
    })
}
