//! The object store: one resourceVersion counter, objects per resource type,
//! a bounded event history for watch resumption, and the write path every
//! verb goes through (validation, defaulting, field ownership, finalizers).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, FieldError};
use crate::patch::{self, Writer};
use crate::resources::{self, Registry, ResourceKey, ResourceType};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::services::{self, ServiceAllocations, ServiceConfig};
use crate::validation;

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change, as kept in the history and fanned out to watchers.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// Resource type.
    pub key: ResourceKey,
    /// Namespace of the object ("" for cluster-scoped).
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for deletions, the last state with the deletion's rv).
    pub object: Value,
    /// The object before the change, for MODIFIED (selector transitions).
    pub old: Option<Value>,
}

/// Where a request points.
#[derive(Debug, Clone)]
pub struct Target {
    /// Resource type.
    pub rt: Arc<ResourceType>,
    /// Requested version.
    pub version: String,
    /// Namespace from the path, if any.
    pub namespace: Option<String>,
    /// Object name, if any.
    pub name: Option<String>,
    /// Subresource (`status`), if any.
    pub subresource: Option<String>,
}

impl Target {
    fn key(&self) -> ResourceKey {
        (self.rt.group.clone(), self.rt.plural.clone())
    }
    fn ns(&self) -> String {
        if self.rt.namespaced { self.namespace.clone().unwrap_or_default() } else { String::new() }
    }
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
    fn is_status(&self) -> bool {
        self.subresource.as_deref() == Some("status")
    }
    fn not_found(&self) -> ApiError {
        ApiError::not_found(&self.rt.group, &self.rt.plural, self.name())
    }
}

/// Options shared by writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// Field manager (from `fieldManager` or the User-Agent).
    pub field_manager: String,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldValidation`: `Strict`, `Warn` (default) or `Ignore`.
    pub field_validation: String,
    /// `force` for apply.
    pub force: bool,
    /// Whether `fieldManager` was given explicitly (apply requires it).
    pub explicit_manager: bool,
}

/// Options for list and watch.
#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    /// Parsed label selector.
    pub labels: LabelSelector,
    /// Parsed field selector.
    pub fields: FieldSelector,
    /// Page size (0 = all).
    pub limit: usize,
    /// Continue token.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
}

impl ListOpts {
    /// Whether an object passes namespace, label and field filters.
    pub fn matches(&self, namespace: Option<&str>, obj: &Value) -> bool {
        namespace.is_none_or(|ns| obj["metadata"]["namespace"].as_str().unwrap_or("") == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

/// The kind of patch, from the Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml`.
    Apply,
}

/// What a write produced: the object and any warnings (`Warning` headers).
#[derive(Debug, Clone)]
pub struct Written {
    /// HTTP status (200 or 201).
    pub code: u16,
    /// The object as stored.
    pub object: Value,
    /// Warnings for the client.
    pub warnings: Vec<String>,
}

/// The stored objects and served types at one resourceVersion, as an etcd backup
/// holds them ([`State::snapshot`], [`State::restore`]).
#[derive(Debug, Clone)]
pub struct Snapshot {
    rv: u64,
    registry: Registry,
    objects: BTreeMap<ResourceKey, BTreeMap<(String, String), Value>>,
    svc_alloc: ServiceAllocations,
}

impl Snapshot {
    /// The resourceVersion it was taken at.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }
}

/// The whole mutable state of the emulated API server.
#[derive(Debug)]
pub struct State {
    rv: u64,
    /// Served types.
    pub registry: Registry,
    objects: BTreeMap<ResourceKey, BTreeMap<(String, String), Value>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Events with rv at or below this are no longer in the history.
    compacted: u64,
    svc_cfg: ServiceConfig,
    svc_alloc: ServiceAllocations,
    /// Events produced by the last operation, to publish after the lock is released.
    pub pending: Vec<Arc<Event>>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn strip_for_compare(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
        m.remove("generation");
    }
    v
}

/// Field ownership without timestamps or order: a re-apply of the same fields is a
/// no-op, whichever manager's entry comes first.
fn managed_sans_time(v: &Value) -> Value {
    let mut m = v["metadata"]["managedFields"].clone();
    if let Some(a) = m.as_array_mut() {
        for e in a.iter_mut() {
            if let Some(o) = e.as_object_mut() {
                o.remove("time");
            }
        }
        a.sort_by_key(|e| e.to_string());
    }
    m
}

/// kube-apiserver's defaults for the apps workloads' top-level spec fields that
/// kubectl reads (`rollout status` refuses a DaemonSet without an update strategy),
/// filled only where absent.
fn workload_defaults(plural: &str, obj: &mut Value) {
    if !obj["spec"].is_object() {
        return;
    }
    let spec = &mut obj["spec"];
    let mut set = |k: &str, v: Value| {
        if spec[k].is_null() {
            spec[k] = v;
        }
    };
    match plural {
        "deployments" => {
            set("replicas", json!(1));
            set(
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            set("revisionHistoryLimit", json!(10));
            set("progressDeadlineSeconds", json!(600));
        }
        "daemonsets" => {
            set(
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            set("revisionHistoryLimit", json!(10));
        }
        _ => set("replicas", json!(1)),
    }
}

fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

impl State {
    /// A fresh state with the built-in types and the namespaces every cluster has.
    pub fn new(history_limit: usize, svc_cfg: ServiceConfig) -> Self {
        let mut s = State {
            rv: 0,
            registry: Registry::with_builtins(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            svc_cfg,
            svc_alloc: ServiceAllocations::default(),
            pending: Vec::new(),
        };
        let ns_rt = s.registry.lookup("", "v1", "namespaces").expect("builtin");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let t = Target { rt: ns_rt.clone(), version: "v1".into(), namespace: None, name: None, subresource: None };
            s.create(
                &t,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                &WriteOpts::default(),
            )
            .expect("builtin namespaces are valid");
        }
        s.pending.clear();
        s
    }

    /// Everything stored now, at the current resourceVersion.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            rv: self.rv,
            registry: self.registry.clone(),
            objects: self.objects.clone(),
            svc_alloc: self.svc_alloc.clone(),
        }
    }

    /// Go back to `snap`, as a server on a restored etcd: its objects, types and
    /// resourceVersion, and no watch history (a watch from before it is 410 Gone, one
    /// from a version it never reached 504 "Too large resource version").
    pub fn restore(&mut self, snap: &Snapshot) {
        self.rv = snap.rv;
        self.registry = snap.registry.clone();
        self.objects = snap.objects.clone();
        self.svc_alloc = snap.svc_alloc.clone();
        self.history.clear();
        self.compacted = snap.rv;
        self.pending.clear();
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch can resume from.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Forget all history: watches resuming from any earlier rv get 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Events after `rv`, or `None` if some were already dropped.
    pub fn events_since(&self, rv: u64) -> Option<Vec<Arc<Event>>> {
        if rv < self.compacted {
            return None;
        }
        Some(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    fn record(&mut self, key: ResourceKey, namespace: String, kind: EventType, object: Value, old: Option<Value>) {
        let ev = Arc::new(Event { rv: self.rv, key, namespace, kind, object, old });
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
        self.pending.push(ev);
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn bucket(&mut self, key: &ResourceKey) -> &mut BTreeMap<(String, String), Value> {
        self.objects.entry(key.clone()).or_default()
    }

    fn present(&self, t: &Target, obj: &Value) -> Value {
        let mut o = obj.clone();
        o["apiVersion"] = json!(t.rt.api_version(&t.version));
        o["kind"] = json!(t.rt.kind);
        o
    }

    /// GET one object.
    pub fn get(&self, t: &Target) -> ApiResult<Value> {
        self.objects
            .get(&t.key())
            .and_then(|b| b.get(&(t.ns(), t.name().to_string())))
            .map(|o| self.present(t, o))
            .ok_or_else(|| t.not_found())
    }

    /// Every stored object of the type `(group, plural)`, as stored (no apiVersion/kind).
    pub fn stored(&self, group: &str, plural: &str) -> impl Iterator<Item = &Value> {
        self.objects.get(&(group.to_string(), plural.to_string())).into_iter().flat_map(|b| b.values())
    }

    /// One stored object of the type `(group, plural)`, as stored.
    pub fn stored_one(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(group.to_string(), plural.to_string()))?.get(&(namespace.to_string(), name.to_string()))
    }

    /// All objects of a type that match, in (namespace, name) order.
    pub fn matching(&self, t: &Target, opts: &ListOpts) -> Vec<Value> {
        let ns = t.namespace.as_deref().filter(|_| t.rt.namespaced);
        self.objects
            .get(&t.key())
            .map(|b| b.values().filter(|o| opts.matches(ns, o)).map(|o| self.present(t, o)).collect())
            .unwrap_or_default()
    }

    /// LIST with pagination: (items, list resourceVersion, continue token).
    pub fn list(&self, t: &Target, opts: &ListOpts) -> ApiResult<(Vec<Value>, String, Option<String>)> {
        if let Some(rv) = opts.resource_version.as_deref().and_then(|r| r.parse::<u64>().ok())
            && rv > self.rv
        {
            return Err(ApiError::too_large_resource_version(rv, self.rv));
        }
        if opts.resource_version_match.as_deref() == Some("Exact")
            && let Some(rv) = opts.resource_version.as_deref().and_then(|r| r.parse::<u64>().ok())
            && rv != self.rv
        {
            return Err(ApiError::gone(format!("too old resource version: {rv} ({})", self.rv)));
        }
        let (list_rv, start_after) = match &opts.continue_token {
            Some(tok) => decode_continue(tok)?,
            None => (self.rv, None),
        };
        let all = self.matching(t, opts);
        let mut items: Vec<Value> = all
            .into_iter()
            .filter(|o| {
                start_after.as_ref().is_none_or(|after| {
                    let k = format!(
                        "{}/{}",
                        o["metadata"]["namespace"].as_str().unwrap_or(""),
                        o["metadata"]["name"].as_str().unwrap_or("")
                    );
                    k.as_str() > after.as_str()
                })
            })
            .collect();
        let mut cont = None;
        if opts.limit > 0 && items.len() > opts.limit {
            items.truncate(opts.limit);
            let last = items.last().expect("limit > 0");
            let k = format!(
                "{}/{}",
                last["metadata"]["namespace"].as_str().unwrap_or(""),
                last["metadata"]["name"].as_str().unwrap_or("")
            );
            cont = Some(encode_continue(list_rv, &k));
        }
        Ok((items, list_rv.to_string(), cont))
    }

    fn check_namespace(&self, ns: &str) -> ApiResult<()> {
        let nsobj = self
            .objects
            .get(&(String::new(), "namespaces".to_string()))
            .and_then(|b| b.get(&(String::new(), ns.to_string())));
        match nsobj {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(o) if o["metadata"].get("deletionTimestamp").is_some() => Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ))),
            Some(_) => Ok(()),
        }
    }

    fn check_type(&self, t: &Target, body: &Value) -> ApiResult<()> {
        let want_av = t.rt.api_version(&t.version);
        if let Some(av) = body.get("apiVersion").and_then(|v| v.as_str())
            && av != want_av
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
        if let Some(k) = body.get("kind").and_then(|v| v.as_str())
            && k != t.rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                t.rt.kind
            )));
        }
        check_shape(body)
    }

    /// Kind-specific validation and defaulting; returns warnings.
    fn admit(&mut self, t: &Target, obj: &mut Value, old: Option<&Value>, opts: &WriteOpts) -> ApiResult<Vec<String>> {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let invalid = |errs: Vec<FieldError>| ApiError::invalid(&t.rt.kind, &t.rt.group, &name, errs);
        let mut warnings = Vec::new();
        let dns_label = matches!(t.rt.plural.as_str(), "namespaces" | "services");
        let errs = validation::validate_metadata(&obj["metadata"], dns_label && t.rt.group.is_empty());
        if !errs.is_empty() {
            return Err(invalid(errs));
        }
        match (t.rt.group.as_str(), t.rt.plural.as_str()) {
            ("", "services") => {
                let errs = services::validate_status(obj);
                if !errs.is_empty() {
                    return Err(invalid(errs));
                }
                let mut alloc = if opts.dry_run { self.svc_alloc.clone() } else { std::mem::take(&mut self.svc_alloc) };
                let r = services::prepare(&self.svc_cfg, &mut alloc, obj, old);
                if !opts.dry_run {
                    self.svc_alloc = alloc;
                }
                r.map_err(invalid)?;
            }
            ("apps", "deployments" | "daemonsets" | "replicasets") => workload_defaults(&t.rt.plural, obj),
            ("", "secrets") => {
                // kube-apiserver merges the write-only `stringData` into `data` (base64),
                // its keys winning, and never stores it.
                if let Some(Value::Object(plain)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
                    use base64::Engine;
                    if !obj["data"].is_object() {
                        obj["data"] = json!({});
                    }
                    for (k, v) in plain {
                        let text = v.as_str().unwrap_or_default();
                        obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
                    }
                }
            }
            ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => {
                let errs = crate::admission::prepare(obj);
                if !errs.is_empty() {
                    return Err(invalid(errs));
                }
            }
            ("admissionregistration.k8s.io", "validatingadmissionpolicies") => {
                let errs = crate::policy::validate_policy(obj);
                if !errs.is_empty() {
                    return Err(invalid(errs));
                }
            }
            ("", "namespaces") => {
                // As kube-apiserver since 1.21: every namespace is labelled with its name,
                // so that namespaceSelectors can pick one.
                let name = obj["metadata"]["name"].clone();
                if !obj["metadata"]["labels"].is_object() {
                    obj["metadata"]["labels"] = json!({});
                }
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
                if obj["status"]["phase"].is_null() {
                    obj["status"] = json!({"phase": "Active"});
                }
                if obj["spec"]["finalizers"].is_null() {
                    obj["spec"] = json!({"finalizers": ["kubernetes"]});
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let rt = resources::from_crd(obj).map_err(|e| invalid(vec![e]))?;
                if let Some(existing) = self.registry.by_kind(&rt.group, &rt.kind)
                    && existing.plural != rt.plural
                {
                    return Err(invalid(vec![FieldError::duplicate("spec.names.kind", json!(rt.kind))]));
                }
                obj["status"] = json!({
                    "acceptedNames": obj["spec"]["names"].clone(),
                    "storedVersions": [rt.versions[0].name.clone()],
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()},
                    ],
                });
            }
            _ if t.rt.custom => {
                let schema = t.rt.version(&t.version).and_then(|v| v.schema.clone());
                if let Some(schema) = schema {
                    let out = validation::validate_custom(&schema, obj, old);
                    if !out.errors.is_empty() {
                        return Err(invalid(out.errors));
                    }
                    if !out.unknown.is_empty() {
                        match opts.field_validation.as_str() {
                            "Strict" => {
                                let list = out
                                    .unknown
                                    .iter()
                                    .map(|u| format!("unknown field \"{u}\""))
                                    .collect::<Vec<_>>()
                                    .join(", ");
                                return Err(ApiError::bad_request(format!("strict decoding error: {list}")));
                            }
                            "Ignore" => {}
                            _ => warnings.extend(out.unknown.iter().map(|u| format!("unknown field \"{u}\""))),
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(warnings)
    }

    /// POST: create an object.
    pub fn create(&mut self, t: &Target, body: Value, opts: &WriteOpts) -> ApiResult<Written> {
        self.create_inner(t, body, opts, false)
    }

    /// Create; `applied` means `managedFields` was already computed by server-side apply.
    fn create_inner(&mut self, t: &Target, mut body: Value, opts: &WriteOpts, applied: bool) -> ApiResult<Written> {
        self.check_type(t, &body)?;
        if !body["metadata"].is_object() {
            body["metadata"] = json!({});
        }
        let path_ns = t.ns();
        if t.rt.namespaced {
            let body_ns = body["metadata"]["namespace"].as_str().unwrap_or("");
            if !body_ns.is_empty() && body_ns != path_ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            self.check_namespace(&path_ns)?;
            body["metadata"]["namespace"] = json!(path_ns);
        } else if let Some(m) = body["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let mut name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
        if name.is_empty() {
            match body["metadata"]["generateName"].as_str().filter(|g| !g.is_empty()) {
                Some(prefix) => {
                    let suffix: String = uuid::Uuid::new_v4()
                        .simple()
                        .to_string()
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric())
                        .take(5)
                        .collect();
                    name = format!("{prefix}{suffix}");
                    body["metadata"]["name"] = json!(name);
                }
                None => {
                    return Err(ApiError::invalid(
                        &t.rt.kind,
                        &t.rt.group,
                        "",
                        vec![FieldError::required("metadata.name", "name or generateName is required")],
                    ));
                }
            }
        }
        let key = t.key();
        if self.objects.get(&key).is_some_and(|b| b.contains_key(&(path_ns.clone(), name.clone()))) {
            return Err(ApiError::already_exists(&t.rt.group, &t.rt.plural, &name));
        }
        body["apiVersion"] = json!(t.rt.api_version(&t.version));
        body["kind"] = json!(t.rt.kind);
        if t.rt.status_subresource
            && let Some(m) = body.as_object_mut()
        {
            m.remove("status");
        }
        {
            let meta = body["metadata"].as_object_mut().expect("made an object above");
            for k in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                meta.remove(k);
            }
            if !applied {
                meta.remove("managedFields");
            }
        }
        let warnings = self.admit(t, &mut body, None, opts)?;
        if !applied {
            let writer = Writer {
                manager: &opts.field_manager,
                subresource: "",
                api_version: &t.rt.api_version(&t.version),
                time: &now(),
            };
            patch::record_update(&Value::Null, &mut body, &writer, false, false);
        }
        if opts.dry_run {
            return Ok(Written { code: 201, object: body, warnings });
        }
        let rv = self.bump();
        let meta = &mut body["metadata"];
        meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        meta["creationTimestamp"] = json!(now());
        meta["resourceVersion"] = json!(rv.to_string());
        meta["generation"] = json!(1);
        self.after_commit(t, &body, None);
        self.bucket(&key).insert((path_ns.clone(), name), body.clone());
        self.record(key, path_ns, EventType::Added, body.clone(), None);
        Ok(Written { code: 201, object: self.present(t, &body), warnings })
    }

    fn after_commit(&mut self, t: &Target, obj: &Value, _old: Option<&Value>) {
        if (t.rt.group.as_str(), t.rt.plural.as_str()) == ("apiextensions.k8s.io", "customresourcedefinitions")
            && let Ok(rt) = resources::from_crd(obj)
        {
            self.registry.insert(rt);
        }
    }

    /// PUT on the object or its `/status`.
    pub fn update(&mut self, t: &Target, body: Value, opts: &WriteOpts) -> ApiResult<Written> {
        self.check_type(t, &body)?;
        let old = self.get(t)?;
        let body_name = body["metadata"]["name"].as_str().unwrap_or("");
        if body_name != t.name() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                t.name()
            )));
        }
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str().filter(|r| !r.is_empty())
            && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("")
        {
            return Err(ApiError::conflict(
                &t.rt.group,
                &t.rt.plural,
                t.name(),
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        self.commit(t, old, body, opts, None)
    }

    /// Shared update path for PUT and PATCH: `new` is the full desired object.
    fn commit(
        &mut self,
        t: &Target,
        old: Value,
        mut new: Value,
        opts: &WriteOpts,
        applied: Option<Value>,
    ) -> ApiResult<Written> {
        check_shape(&new)?;
        let is_status = t.is_status();
        if is_status {
            // Status writes change only status (and, for apply, the field bookkeeping).
            let status = new.get("status").cloned().unwrap_or(Value::Null);
            let managed = new["metadata"].get("managedFields").cloned();
            new = old.clone();
            new["status"] = status;
            if let (Some(m), true) = (managed, applied.is_some()) {
                new["metadata"]["managedFields"] = m;
            }
        } else if t.rt.status_subresource {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        // Identity and server-owned metadata cannot be changed by a client.
        for k in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old["metadata"].get(k) {
                Some(v) => new["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        if old["metadata"].get("deletionTimestamp").is_some() {
            let old_f = old["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
            let new_f = new["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
            if new_f.iter().any(|f| !old_f.contains(f)) {
                return Err(ApiError::invalid(
                    &t.rt.kind,
                    &t.rt.group,
                    t.name(),
                    vec![FieldError::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        new["apiVersion"] = json!(t.rt.api_version(&t.version));
        new["kind"] = json!(t.rt.kind);
        let warnings = self.admit(t, &mut new, Some(&old), opts)?;
        let sub = if is_status { "status" } else { "" };
        let av = t.rt.api_version(&t.version);
        let time = now();
        let writer = Writer { manager: &opts.field_manager, subresource: sub, api_version: &av, time: &time };
        if applied.is_none() {
            patch::record_update(&old, &mut new, &writer, is_status, t.rt.status_subresource && !is_status);
        }
        if spec_part(&new) != spec_part(&old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        let unchanged =
            strip_for_compare(&new) == strip_for_compare(&old) && managed_sans_time(&new) == managed_sans_time(&old);
        if unchanged {
            return Ok(Written { code: 200, object: old, warnings });
        }
        if opts.dry_run {
            return Ok(Written { code: 200, object: new, warnings });
        }
        let rv = self.bump();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = t.key();
        let ns = t.ns();
        let name = t.name().to_string();
        // Finalizers all gone on an object being deleted: it goes now.
        let finalized = new["metadata"].get("deletionTimestamp").is_some()
            && new["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty());
        self.after_commit(t, &new, Some(&old));
        self.bucket(&key).insert((ns.clone(), name.clone()), new.clone());
        self.record(key, ns.clone(), EventType::Modified, new.clone(), Some(old));
        if finalized {
            let gone = self.remove_now(t, &ns, &name);
            return Ok(Written { code: 200, object: gone.map(|g| self.present(t, &g)).unwrap_or(new), warnings });
        }
        Ok(Written { code: 200, object: self.present(t, &new), warnings })
    }

    /// PATCH of any type; apply creates the object when missing.
    pub fn patch(&mut self, t: &Target, kind: PatchType, body: Value, opts: &WriteOpts) -> ApiResult<Written> {
        if kind == PatchType::Strategic && t.rt.custom {
            return Err(ApiError::unsupported_media_type(
                "application/strategic-merge-patch+json is not supported for custom resources",
            ));
        }
        if kind == PatchType::Apply {
            if !opts.explicit_manager || opts.field_manager.is_empty() {
                return Err(ApiError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            self.check_type(t, &body)?;
            if body["metadata"].get("managedFields").is_some_and(|m| !m.is_null()) {
                return Err(ApiError::bad_request("metadata.managedFields must be nil"));
            }
            // An apply body without a name patches the object named in the URL, as upstream.
            if let Some(n) = body["metadata"]["name"].as_str()
                && n != t.name()
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({})",
                    t.name()
                )));
            }
        }
        let current = match self.get(t) {
            Ok(c) => c,
            Err(e) if e.code == 404 && kind == PatchType::Apply && !t.is_status() => {
                let av = t.rt.api_version(&t.version);
                let time = now();
                let writer = Writer { manager: &opts.field_manager, subresource: "", api_version: &av, time: &time };
                let mut obj =
                    patch::server_side_apply(&Value::Null, &body, &writer, true, false, t.rt.status_subresource)
                        .map_err(|c| ApiError::apply_conflict(&c))?;
                obj["metadata"]["name"] = json!(t.name());
                return self.create_inner(t, obj, opts, true);
            }
            Err(e) => return Err(e),
        };
        let mut new = current.clone();
        let mut applied = None;
        match kind {
            PatchType::Merge => patch::merge_patch(&mut new, &body),
            PatchType::Strategic => patch::strategic_merge_patch(&mut new, &body).map_err(ApiError::bad_request)?,
            PatchType::Json => patch::json_patch(&mut new, &body).map_err(|e| {
                ApiError::invalid(
                    &t.rt.kind,
                    &t.rt.group,
                    t.name(),
                    vec![FieldError::invalid("<patch>", Value::Null, e)],
                )
            })?,
            PatchType::Apply => {
                let av = t.rt.api_version(&t.version);
                let time = now();
                let sub = if t.is_status() { "status" } else { "" };
                let writer = Writer { manager: &opts.field_manager, subresource: sub, api_version: &av, time: &time };
                new = patch::server_side_apply(
                    &current,
                    &body,
                    &writer,
                    opts.force,
                    t.is_status(),
                    t.rt.status_subresource && !t.is_status(),
                )
                .map_err(|c| ApiError::apply_conflict(&c))?;
                applied = Some(body.clone());
            }
        }
        if kind != PatchType::Apply
            && let Some(rv) = body["metadata"]["resourceVersion"].as_str().filter(|r| !r.is_empty())
            && rv != current["metadata"]["resourceVersion"].as_str().unwrap_or("")
        {
            return Err(ApiError::conflict(
                &t.rt.group,
                &t.rt.plural,
                t.name(),
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        self.commit(t, current, new, opts, applied)
    }

    /// Remove an object at once: DELETED event, type-specific cleanup.
    fn remove_now(&mut self, t: &Target, ns: &str, name: &str) -> Option<Value> {
        let key = t.key();
        let mut obj = self.objects.get_mut(&key)?.remove(&(ns.to_string(), name.to_string()))?;
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(key.clone(), ns.to_string(), EventType::Deleted, obj.clone(), None);
        match (t.rt.group.as_str(), t.rt.plural.as_str()) {
            ("", "services") => self.svc_alloc.release(&obj),
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                if let Ok(rt) = resources::from_crd(&obj) {
                    let ckey = (rt.group.clone(), rt.plural.clone());
                    if let Some(items) = self.objects.remove(&ckey) {
                        for ((ons, _), mut o) in items {
                            let rv = self.bump();
                            o["metadata"]["resourceVersion"] = json!(rv.to_string());
                            self.record(ckey.clone(), ons, EventType::Deleted, o, None);
                        }
                    }
                    self.registry.remove(&rt.group, &rt.plural);
                }
            }
            _ => {}
        }
        if !ns.is_empty() {
            self.maybe_finish_namespace(ns);
        }
        Some(obj)
    }

    /// DELETE: with finalizers, mark for deletion; without, remove.
    pub fn delete(&mut self, t: &Target, options: &Value, dry_run: bool) -> ApiResult<Value> {
        let current = self.get(t)?;
        let pre = &options["preconditions"];
        if let Some(uid) = pre["uid"].as_str()
            && Some(uid) != current["metadata"]["uid"].as_str()
        {
            return Err(ApiError::conflict(
                &t.rt.group,
                &t.rt.plural,
                t.name(),
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    current["metadata"]["uid"].as_str().unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = pre["resourceVersion"].as_str()
            && Some(rv) != current["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(
                &t.rt.group,
                &t.rt.plural,
                t.name(),
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    current["metadata"]["resourceVersion"].as_str().unwrap_or("")
                ),
            ));
        }
        if dry_run {
            return Ok(current);
        }
        let ns = t.ns();
        let name = t.name().to_string();
        let is_ns = (t.rt.group.as_str(), t.rt.plural.as_str()) == ("", "namespaces");
        let has_finalizers = current["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if has_finalizers || is_ns {
            if current["metadata"].get("deletionTimestamp").is_some() {
                return Ok(current);
            }
            let mut new = current.clone();
            new["metadata"]["deletionTimestamp"] = json!(now());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if is_ns {
                new["status"]["phase"] = json!("Terminating");
            }
            let rv = self.bump();
            new["metadata"]["resourceVersion"] = json!(rv.to_string());
            let key = t.key();
            self.bucket(&key).insert((ns.clone(), name.clone()), new.clone());
            self.record(key, ns, EventType::Modified, new.clone(), Some(current));
            if is_ns {
                self.empty_namespace(&name);
                self.maybe_finish_namespace(&name);
                if let Some(still) = self.objects.get(&t.key()).and_then(|b| b.get(&(String::new(), name.clone()))) {
                    return Ok(self.present(t, still));
                }
            }
            return Ok(self.present(t, &new));
        }
        let gone = self.remove_now(t, &ns, &name).ok_or_else(|| t.not_found())?;
        Ok(self.present(t, &gone))
    }

    /// Every namespaced object in `ns` is deleted (finalizers respected).
    fn empty_namespace(&mut self, ns: &str) {
        let keys: Vec<ResourceKey> = self.objects.keys().cloned().collect();
        for key in keys {
            let Some(rt) = self.registry.lookup(&key.0, &self.version_of(&key), &key.1) else { continue };
            if !rt.namespaced {
                continue;
            }
            let names: Vec<String> =
                self.objects[&key].keys().filter(|(n, _)| n == ns).map(|(_, name)| name.clone()).collect();
            let version = rt.versions[0].name.clone();
            for name in names {
                let t = Target {
                    rt: rt.clone(),
                    version: version.clone(),
                    namespace: Some(ns.to_string()),
                    name: Some(name),
                    subresource: None,
                };
                let _ = self.delete(&t, &Value::Null, false);
            }
        }
    }

    fn version_of(&self, key: &ResourceKey) -> String {
        self.registry.by_plural(&key.0, &key.1).map(|rt| rt.versions[0].name.clone()).unwrap_or_default()
    }

    /// A terminating namespace whose contents are all gone is removed.
    fn maybe_finish_namespace(&mut self, ns: &str) {
        let nskey = (String::new(), "namespaces".to_string());
        let terminating = self
            .objects
            .get(&nskey)
            .and_then(|b| b.get(&(String::new(), ns.to_string())))
            .is_some_and(|o| o["metadata"].get("deletionTimestamp").is_some());
        if !terminating {
            return;
        }
        let empty = self.objects.iter().all(|(k, b)| *k == nskey || !b.keys().any(|(n, _)| n == ns));
        if empty {
            let rt = self.registry.lookup("", "v1", "namespaces").expect("builtin");
            let t = Target { rt, version: "v1".into(), namespace: None, name: Some(ns.to_string()), subresource: None };
            self.remove_now(&t, "", ns);
        }
    }

    /// DELETE on a collection.
    pub fn delete_collection(&mut self, t: &Target, opts: &ListOpts, dry_run: bool) -> ApiResult<Vec<Value>> {
        let items = self.matching(t, opts);
        let mut out = Vec::new();
        for it in items {
            let mut one = t.clone();
            one.name = it["metadata"]["name"].as_str().map(String::from);
            one.namespace = it["metadata"]["namespace"]
                .as_str()
                .map(String::from)
                .filter(|s| !s.is_empty())
                .or(t.namespace.clone());
            out.push(self.delete(&one, &Value::Null, dry_run)?);
        }
        Ok(out)
    }
}

/// An object must be a JSON object with an object (or absent) `metadata`, as the decoder requires.
fn check_shape(v: &Value) -> ApiResult<()> {
    if !v.is_object() {
        return Err(ApiError::bad_request(format!("the object must be a JSON object, not {}", kind_of(v))));
    }
    match v.get("metadata") {
        None | Some(Value::Object(_)) => Ok(()),
        Some(Value::Null) => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!("metadata must be an object, not {}", kind_of(other)))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn encode_continue(rv: u64, after: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"rv": rv, "start": after}).to_string())
}

fn decode_continue(tok: &str) -> ApiResult<(u64, Option<String>)> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tok).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((v["rv"].as_u64().ok_or_else(bad)?, v["start"].as_str().map(String::from)))
}
