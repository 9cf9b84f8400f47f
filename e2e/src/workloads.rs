//! A kube-controller-manager stand-in for users' workloads: the Deployment controller
//! (a ReplicaSet per Pod template, rolled to the new one, status for `kubectl rollout
//! status`), the ReplicaSet controller (Pods created and deleted to the replica count),
//! the DaemonSet controller (a Pod on every node its `nodeSelector` admits, replaced one
//! at a time when the template changes) and the garbage collector (a ReplicaSet or Pod
//! whose controlling owner is gone is deleted, as background propagation does). The
//! stand-in kubelet (`standin.rs`) then places and runs the Pods. Jobs are not run:
//! the stand-in's Pods are servers that never complete.
//!
//! The decisions are pure functions of the cached objects ([`deployment_plan`],
//! [`replica_set_plan`], [`daemon_set_plan`]); [`run_workloads`] applies them through
//! the API like any controller. ferrolb's own Deployment and DaemonSet (in the sandbox's namespace) are
//! run by the sandbox's kubelet from the chart's objects, not here.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrolb_common::reflect;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

const MANAGER: &str = "ferrolb-sandbox-controller-manager";
const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
/// The label a DaemonSet's Pods carry: the template they were made from.
const DS_HASH_LABEL: &str = "controller-revision-hash";

/// What the Deployment controller does for one Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentPlan {
    /// The ReplicaSet for the current template, to create when missing.
    pub create: Option<Value>,
    /// ReplicaSet name -> the replica count it should have.
    pub scale: BTreeMap<String, i32>,
    /// The Deployment's status.
    pub status: Value,
}

/// FNV-1a of the template's JSON (keys sorted), as a short label value: the same
/// template always gives the same ReplicaSet name.
pub fn template_hash(template: &Value) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in template.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // Upstream encodes with an alphabet without vowels (no words in names).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut v = h;
    while v > 0 || out.is_empty() {
        out.push(ALPHABET[(v % ALPHABET.len() as u32) as usize] as char);
        v /= ALPHABET.len() as u32;
    }
    out
}

fn replicas(v: &Value, path: &str) -> i32 {
    v.pointer(path).and_then(Value::as_i64).and_then(|n| i32::try_from(n).ok()).unwrap_or(0)
}

/// The Deployment controller's decision for `d` (JSON), given the ReplicaSets it
/// controls. RollingUpdate: the new ReplicaSet is scaled to the desired count at once
/// and the old ones to zero once the new one's Pods are all available; Recreate: the
/// old ones go to zero first, the new one comes up when their Pods are gone.
pub fn deployment_plan(d: &Value, owned: &[Value]) -> DeploymentPlan {
    let name = d["metadata"]["name"].as_str().unwrap_or_default();
    let desired = d["spec"]["replicas"].as_i64().map_or(1, |n| i32::try_from(n).unwrap_or(1));
    let template = d["spec"]["template"].clone();
    let hash = template_hash(&template);
    let is_new = |rs: &Value| rs["metadata"]["labels"][HASH_LABEL].as_str() == Some(hash.as_str());
    let new = owned.iter().find(|rs| is_new(rs));
    let old: Vec<&Value> = owned.iter().filter(|rs| !is_new(rs)).collect();
    let recreate = d["spec"]["strategy"]["type"].as_str() == Some("Recreate");
    let old_pods: i32 = old.iter().map(|rs| replicas(rs, "/status/replicas")).sum();
    let mut scale = BTreeMap::new();
    let create = match new {
        Some(rs) => {
            let want = if recreate && old_pods > 0 { 0 } else { desired };
            if replicas(rs, "/spec/replicas") != want || rs["spec"]["replicas"].is_null() {
                scale.insert(rs["metadata"]["name"].as_str().unwrap_or_default().to_string(), want);
            }
            None
        }
        None => {
            let revision = owned
                .iter()
                .filter_map(|rs| rs["metadata"]["annotations"][REVISION].as_str()?.parse::<u64>().ok())
                .max()
                .unwrap_or(0)
                + 1;
            let mut labels = template["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels[HASH_LABEL] = json!(hash);
            let mut selector = d["spec"]["selector"].clone();
            selector["matchLabels"][HASH_LABEL] = json!(hash);
            let mut tpl = template.clone();
            tpl["metadata"]["labels"] = labels.clone();
            Some(json!({
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": format!("{name}-{hash}"),
                    "namespace": d["metadata"]["namespace"],
                    "labels": labels,
                    "annotations": {REVISION: revision.to_string()},
                    "ownerReferences": [owner_ref(d, "apps/v1", "Deployment")],
                },
                "spec": {"replicas": if recreate && old_pods > 0 { 0 } else { desired }, "selector": selector, "template": tpl},
            }))
        }
    };
    let new_available = new.map_or(0, |rs| replicas(rs, "/status/availableReplicas"));
    let new_done = new.is_some() && new_available >= desired;
    for rs in &old {
        if (recreate || new_done || desired == 0) && replicas(rs, "/spec/replicas") != 0 {
            scale.insert(rs["metadata"]["name"].as_str().unwrap_or_default().to_string(), 0);
        }
    }
    let sum = |path: &str| -> i32 { owned.iter().map(|rs| replicas(rs, path)).sum() };
    let total = sum("/status/replicas");
    let available = sum("/status/availableReplicas");
    let updated = new.map_or(0, |rs| replicas(rs, "/status/replicas"));
    let complete = new_done && total == updated && updated == desired;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let new_name = new.and_then(|rs| rs["metadata"]["name"].as_str()).unwrap_or_default();
    let condition = |t: &str, ok: bool, reason: &str, message: String| {
        json!({"type": t, "status": if ok { "True" } else { "False" }, "reason": reason, "message": message,
               "lastUpdateTime": now, "lastTransitionTime": now})
    };
    let mut status = json!({
        "observedGeneration": d["metadata"]["generation"],
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": sum("/status/readyReplicas"),
        "availableReplicas": available,
        "conditions": [
            if available >= desired {
                condition("Available", true, "MinimumReplicasAvailable", "Deployment has minimum availability.".into())
            } else {
                condition("Available", false, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".into())
            },
            if complete {
                condition("Progressing", true, "NewReplicaSetAvailable", format!("ReplicaSet \"{new_name}\" has successfully progressed."))
            } else {
                condition("Progressing", true, "ReplicaSetUpdated", format!("ReplicaSet \"{new_name}\" is progressing."))
            },
        ],
    });
    if total > available {
        status["unavailableReplicas"] = json!(total - available);
    }
    DeploymentPlan { create, scale, status }
}

/// What the ReplicaSet controller does for one ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSetPlan {
    /// New Pods (bodies with `generateName`).
    pub create: Vec<Value>,
    /// Pods to delete (not-ready and newest first).
    pub delete: Vec<String>,
    /// The ReplicaSet's status.
    pub status: Value,
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The ReplicaSet controller's decision for `rs` (JSON) given the live (not deleting)
/// Pods it controls.
pub fn replica_set_plan(rs: &Value, pods: &[Value]) -> ReplicaSetPlan {
    let name = rs["metadata"]["name"].as_str().unwrap_or_default();
    let want = rs["spec"]["replicas"].as_i64().map_or(1, |n| usize::try_from(n).unwrap_or(0));
    let mut create = Vec::new();
    let mut delete = Vec::new();
    if pods.len() < want {
        let tpl = &rs["spec"]["template"];
        for _ in pods.len()..want {
            let mut meta = tpl["metadata"].clone();
            if !meta.is_object() {
                meta = json!({});
            }
            meta["generateName"] = json!(format!("{name}-"));
            meta["namespace"] = rs["metadata"]["namespace"].clone();
            meta["ownerReferences"] = json!([owner_ref(rs, "apps/v1", "ReplicaSet")]);
            create.push(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": tpl["spec"]}));
        }
    } else if pods.len() > want {
        let mut order: Vec<&Value> = pods.iter().collect();
        order.sort_by_key(|p| {
            (ready(p), std::cmp::Reverse(p["metadata"]["creationTimestamp"].as_str().unwrap_or_default().to_string()))
        });
        delete = order
            .iter()
            .take(pods.len() - want)
            .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
            .collect();
    }
    let n_ready = pods.iter().filter(|p| ready(p)).count();
    let status = json!({
        "observedGeneration": rs["metadata"]["generation"],
        "replicas": pods.len(),
        "fullyLabeledReplicas": pods.len(),
        "readyReplicas": n_ready,
        "availableReplicas": n_ready,
    });
    ReplicaSetPlan { create, delete, status }
}

/// What the DaemonSet controller does for one DaemonSet.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSetPlan {
    /// New Pods, one per node that has none (bodies with `generateName` and `nodeName`).
    pub create: Vec<Value>,
    /// Pods to delete: on a node the selector no longer admits, a node's extra ones,
    /// and (one at a time, once every node's Pod is ready) one of an older template.
    pub delete: Vec<String>,
    /// The DaemonSet's status (what `kubectl rollout status ds/...` reads).
    pub status: Value,
}

/// The DaemonSet controller's decision for `ds` (JSON), given the live Pods it
/// controls and the nodes (name, labels).
pub fn daemon_set_plan(ds: &Value, pods: &[Value], nodes: &[(String, BTreeMap<String, String>)]) -> DaemonSetPlan {
    let name = ds["metadata"]["name"].as_str().unwrap_or_default();
    let tpl = &ds["spec"]["template"];
    let hash = template_hash(tpl);
    let selector = tpl["spec"]["nodeSelector"].as_object().cloned().unwrap_or_default();
    let admits = |labels: &BTreeMap<String, String>| {
        selector.iter().all(|(k, v)| v.as_str().is_some_and(|v| labels.get(k).map(String::as_str) == Some(v)))
    };
    let eligible: Vec<&String> = nodes.iter().filter(|(_, l)| admits(l)).map(|(n, _)| n).collect();
    let node_of = |p: &Value| p["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
    let current = |p: &Value| p["metadata"]["labels"][DS_HASH_LABEL].as_str() == Some(hash.as_str());
    let mut create = Vec::new();
    let mut delete = Vec::new();
    for p in pods.iter().filter(|p| !eligible.iter().any(|n| **n == node_of(p))) {
        delete.extend(p["metadata"]["name"].as_str().map(String::from));
    }
    let mut all_ready = true;
    let mut outdated = Vec::new();
    for node in &eligible {
        let mut here: Vec<&Value> = pods.iter().filter(|p| node_of(p) == **node).collect();
        // The current template's and ready ones are kept first.
        here.sort_by_key(|p| (!current(p), !ready(p)));
        match here.split_first() {
            None => {
                all_ready = false;
                let mut meta = if tpl["metadata"].is_object() { tpl["metadata"].clone() } else { json!({}) };
                meta["generateName"] = json!(format!("{name}-"));
                meta["namespace"] = ds["metadata"]["namespace"].clone();
                meta["labels"][DS_HASH_LABEL] = json!(hash);
                meta["ownerReferences"] = json!([owner_ref(ds, "apps/v1", "DaemonSet")]);
                let mut spec = tpl["spec"].clone();
                spec["nodeName"] = json!(node);
                create.push(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}));
            }
            Some((kept, extra)) => {
                all_ready &= ready(kept);
                if !current(kept) {
                    outdated.extend(kept["metadata"]["name"].as_str().map(String::from));
                }
                delete.extend(extra.iter().filter_map(|p| p["metadata"]["name"].as_str().map(String::from)));
            }
        }
    }
    // RollingUpdate with maxUnavailable 1: replace one outdated Pod at a time.
    if all_ready && let Some(first) = outdated.first() {
        delete.push(first.clone());
    }
    let on_eligible: Vec<&Value> = pods.iter().filter(|p| eligible.iter().any(|n| **n == node_of(p))).collect();
    let scheduled = eligible.iter().filter(|n| on_eligible.iter().any(|p| node_of(p) == ***n)).count();
    let n_ready = on_eligible.iter().filter(|p| ready(p)).count();
    let updated = on_eligible.iter().filter(|p| current(p)).count();
    let status = json!({
        "observedGeneration": ds["metadata"]["generation"],
        "desiredNumberScheduled": eligible.len(),
        "currentNumberScheduled": scheduled,
        "numberMisscheduled": pods.len() - on_eligible.len(),
        "numberReady": n_ready,
        "updatedNumberScheduled": updated,
        "numberAvailable": n_ready,
        "numberUnavailable": eligible.len().saturating_sub(n_ready),
    });
    DaemonSetPlan { create, delete, status }
}

fn owner_ref(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
           "controller": true, "blockOwnerDeletion": true})
}

/// The uid of `v`'s controlling owner of `kind`, if any.
fn controller_uid<'a>(v: &'a Value, kind: &str) -> Option<&'a str> {
    v["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true && r["kind"] == kind)
        .and_then(|r| r["uid"].as_str())
}

/// The API of Deployments, ReplicaSets or Pods in `ns`, by kind (the garbage collector
/// handles owners and dependents alike).
fn kind_api(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let resource = match kind {
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "ReplicaSet" => ApiResource::erase::<ReplicaSet>(&()),
        "DaemonSet" => ApiResource::erase::<DaemonSet>(&()),
        _ => ApiResource::erase::<Pod>(&()),
    };
    Api::namespaced_with(client.clone(), ns, &resource)
}

fn patch_params() -> PatchParams {
    PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() }
}

fn post_params() -> PostParams {
    PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }
}

fn to_json<K: serde::Serialize>(k: &K) -> Value {
    serde_json::to_value(k).unwrap_or(Value::Null)
}

/// Run the Deployment and ReplicaSet controllers and the garbage collector until `stop`.
pub async fn run_workloads(
    client: Client,
    skip_namespace: String,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let changed = Arc::new(Notify::new());
    let (deploys, _d) = reflect(Api::<Deployment>::all(client.clone()), changed.clone());
    let (sets, _r) = reflect(Api::<ReplicaSet>::all(client.clone()), changed.clone());
    let (pods, _p) = reflect(Api::<Pod>::all(client.clone()), changed.clone());
    let (daemons, _ds) = reflect(Api::<DaemonSet>::all(client.clone()), changed.clone());
    let (nodes, _n) = reflect(Api::<Node>::all(client.clone()), changed.clone());
    for ready in [
        deploys.wait_until_ready().await,
        sets.wait_until_ready().await,
        pods.wait_until_ready().await,
        daemons.wait_until_ready().await,
        nodes.wait_until_ready().await,
    ] {
        ready?;
    }
    // Re-check now and then: a write that failed (a conflict) is retried from fresh state.
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = tick.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        let ds: Vec<Value> = deploys.state().iter().map(|d| to_json(&**d)).collect();
        let rss: Vec<Value> = sets.state().iter().map(|r| to_json(&**r)).collect();
        let ps: Vec<Value> = pods.state().iter().map(|p| to_json(&**p)).collect();
        let dss: Vec<Value> = daemons.state().iter().map(|d| to_json(&**d)).collect();
        let node_labels: Vec<(String, BTreeMap<String, String>)> =
            nodes.state().iter().map(|n| (n.name_any(), n.labels().clone())).collect();
        let mine = |v: &&Value| v["metadata"]["namespace"].as_str() != Some(skip_namespace.as_str());
        let alive = |v: &&Value| v["metadata"]["deletionTimestamp"].is_null();
        // Garbage collection: dependents whose controlling owner is gone. The cache may
        // lag the owner's creation, so the owner's absence is confirmed by a read.
        for (deps, owners, owner_kind) in
            [(&rss, &ds, "Deployment"), (&ps, &rss, "ReplicaSet"), (&ps, &dss, "DaemonSet")]
        {
            for dep in deps.iter().filter(mine).filter(alive) {
                let Some(uid) = controller_uid(dep, owner_kind) else { continue };
                if owners.iter().any(|o| o["metadata"]["uid"] == uid) {
                    continue;
                }
                let ns = dep["metadata"]["namespace"].as_str().unwrap_or_default();
                let name = dep["metadata"]["name"].as_str().unwrap_or_default();
                let owner_name = dep["metadata"]["ownerReferences"]
                    .as_array()
                    .and_then(|a| a.iter().find(|r| r["uid"] == uid))
                    .and_then(|r| r["name"].as_str())
                    .unwrap_or_default();
                let owner_api = kind_api(&client, ns, owner_kind);
                let still =
                    owner_api.get_opt(owner_name).await.map(|o| o.and_then(|o| o.uid()).as_deref() == Some(uid));
                if let Ok(false) = still {
                    let dep_kind = if owner_kind == "Deployment" { "ReplicaSet" } else { "Pod" };
                    let _ = kind_api(&client, ns, dep_kind).delete(name, &DeleteParams::background()).await;
                }
            }
        }
        for d in ds.iter().filter(mine).filter(alive) {
            let uid = d["metadata"]["uid"].as_str().unwrap_or_default();
            let ns = d["metadata"]["namespace"].as_str().unwrap_or_default();
            let owned: Vec<Value> =
                rss.iter().filter(|rs| controller_uid(rs, "Deployment") == Some(uid)).cloned().collect();
            let plan = deployment_plan(d, &owned);
            let rs_api = Api::<ReplicaSet>::namespaced(client.clone(), ns);
            if let Some(body) = &plan.create {
                match serde_json::from_value::<ReplicaSet>(body.clone()) {
                    Ok(rs) => {
                        if rs_api.create(&post_params(), &rs).await.is_ok() {
                            let msg = format!(
                                "Scaled up replica set {} to {}",
                                rs.name_any(),
                                replicas(body, "/spec/replicas")
                            );
                            event(&client, d, "Deployment", "ScalingReplicaSet", &msg).await;
                        }
                    }
                    Err(e) => eprintln!(
                        "sandbox: a ReplicaSet for Deployment {ns}/{} does not parse: {e}",
                        d["metadata"]["name"]
                    ),
                }
            }
            for (name, n) in &plan.scale {
                let p = json!({"spec": {"replicas": n}});
                if rs_api.patch(name, &patch_params(), &Patch::Merge(&p)).await.is_ok() {
                    let verb = if owned
                        .iter()
                        .any(|rs| rs["metadata"]["name"] == *name && replicas(rs, "/spec/replicas") > *n)
                    {
                        "down"
                    } else {
                        "up"
                    };
                    event(
                        &client,
                        d,
                        "Deployment",
                        "ScalingReplicaSet",
                        &format!("Scaled {verb} replica set {name} to {n}"),
                    )
                    .await;
                }
            }
            if !subset(&plan.status, &d["status"]) {
                let api = Api::<Deployment>::namespaced(client.clone(), ns);
                let name = d["metadata"]["name"].as_str().unwrap_or_default();
                let _ = api.patch_status(name, &patch_params(), &Patch::Merge(json!({"status": plan.status}))).await;
            }
        }
        for rs in rss.iter().filter(mine).filter(alive) {
            let uid = rs["metadata"]["uid"].as_str().unwrap_or_default();
            let owned: Vec<Value> =
                ps.iter().filter(alive).filter(|p| controller_uid(p, "ReplicaSet") == Some(uid)).cloned().collect();
            let plan = replica_set_plan(rs, &owned);
            apply_pod_plan(&client, rs, "ReplicaSet", &plan.create, &plan.delete, &plan.status).await;
        }
        for d in dss.iter().filter(mine).filter(alive) {
            let uid = d["metadata"]["uid"].as_str().unwrap_or_default();
            let owned: Vec<Value> =
                ps.iter().filter(alive).filter(|p| controller_uid(p, "DaemonSet") == Some(uid)).cloned().collect();
            let plan = daemon_set_plan(d, &owned, &node_labels);
            apply_pod_plan(&client, d, "DaemonSet", &plan.create, &plan.delete, &plan.status).await;
        }
    }
}

/// Carry out a Pod controller's plan for `owner` (a ReplicaSet or DaemonSet): create
/// and delete its Pods, with the Events upstream records, and write its status when
/// it changed.
async fn apply_pod_plan(
    client: &Client,
    owner: &Value,
    kind: &str,
    create: &[Value],
    delete: &[String],
    status: &Value,
) {
    let ns = owner["metadata"]["namespace"].as_str().unwrap_or_default();
    let pod_api = Api::<Pod>::namespaced(client.clone(), ns);
    for body in create {
        if let Ok(p) = serde_json::from_value::<Pod>(body.clone())
            && let Ok(made) = pod_api.create(&post_params(), &p).await
        {
            event(client, owner, kind, "SuccessfulCreate", &format!("Created pod: {}", made.name_any())).await;
        }
    }
    for name in delete {
        if pod_api.delete(name, &DeleteParams::background()).await.is_ok() {
            event(client, owner, kind, "SuccessfulDelete", &format!("Deleted pod: {name}")).await;
        }
    }
    if !subset(status, &owner["status"]) {
        let name = owner["metadata"]["name"].as_str().unwrap_or_default();
        let _ = kind_api(client, ns, kind)
            .patch_status(name, &patch_params(), &Patch::Merge(json!({"status": status})))
            .await;
    }
}

/// Whether every field of `want` has that value in `have` (conditions compared by
/// type, status and reason: their times change on every plan).
fn subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w.iter().all(|(k, v)| match k.as_str() {
            "conditions" => {
                let key = |c: &Value| (c["type"].clone(), c["status"].clone(), c["reason"].clone());
                let a: Vec<_> = v.as_array().into_iter().flatten().map(key).collect();
                let b: Vec<_> = h.get(k).and_then(Value::as_array).into_iter().flatten().map(key).collect();
                a == b
            }
            _ => h.get(k).is_some_and(|hv| subset(v, hv)) || (v.as_i64() == Some(0) && h.get(k).is_none()),
        }),
        _ => want == have,
    }
}

/// Record a Normal Event on `obj`, as the controllers do (`kubectl describe` shows them).
async fn event(client: &Client, obj: &Value, kind: &str, reason: &str, message: &str) {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ev = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{}.", obj["metadata"]["name"].as_str().unwrap_or("x")), "namespace": ns},
        "involvedObject": {"apiVersion": obj["apiVersion"], "kind": kind, "name": obj["metadata"]["name"],
                           "namespace": ns, "uid": obj["metadata"]["uid"]},
        "reason": reason,
        "message": message,
        "type": "Normal",
        "source": {"component": match kind {
            "Deployment" => "deployment-controller",
            "DaemonSet" => "daemonset-controller",
            _ => "replicaset-controller",
        }},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    if let Ok(e) = serde_json::from_value(ev) {
        let _ = api.create(&post_params(), &e).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "hello", "namespace": "default", "uid": "d-1", "generation": 1},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "hello"}},
                        "template": {"metadata": {"labels": {"app": "hello"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    fn rs_with(created: &Value, spec: i64, status: i64, available: i64) -> Value {
        let mut rs = created.clone();
        rs["metadata"]["uid"] = json!(format!("rs-{}", rs["metadata"]["name"]));
        rs["spec"]["replicas"] = json!(spec);
        rs["status"] = json!({"replicas": status, "availableReplicas": available, "readyReplicas": available});
        rs
    }

    #[test]
    fn a_daemon_set_has_one_pod_per_admitted_node_and_replaces_them_one_at_a_time() {
        let ds = |image: &str| {
            json!({"metadata": {"name": "agent", "namespace": "default", "uid": "ds-1", "generation": 1},
                   "spec": {"template": {"metadata": {"labels": {"app": "agent"}},
                            "spec": {"nodeSelector": {"role": "edge"}, "containers": [{"name": "a", "image": image}]}}}})
        };
        let nodes: Vec<(String, BTreeMap<String, String>)> = [("n1", "edge"), ("n2", "edge"), ("n3", "core")]
            .iter()
            .map(|(n, r)| (n.to_string(), BTreeMap::from([("role".to_string(), r.to_string())])))
            .collect();
        let p = daemon_set_plan(&ds("a:1"), &[], &nodes);
        let placed: Vec<&str> = p.create.iter().map(|c| c["spec"]["nodeName"].as_str().unwrap()).collect();
        assert_eq!(placed, ["n1", "n2"]);
        assert_eq!(p.create[0]["metadata"]["ownerReferences"][0]["uid"], "ds-1");
        assert_eq!(p.status["desiredNumberScheduled"], 2);
        let pod = |name: &str, node: &str, body: &Value, ready: bool| {
            let mut p = body.clone();
            p["metadata"]["name"] = json!(name);
            p["spec"]["nodeName"] = json!(node);
            p["status"] = json!({"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]});
            p
        };
        let running = [pod("a-1", "n1", &p.create[0], true), pod("a-2", "n2", &p.create[1], true)];
        let steady = daemon_set_plan(&ds("a:1"), &running, &nodes);
        assert!(steady.create.is_empty() && steady.delete.is_empty(), "{steady:?}");
        assert_eq!(
            (steady.status["numberReady"].clone(), steady.status["updatedNumberScheduled"].clone()),
            (json!(2), json!(2))
        );
        // A new template: one old Pod at a time, and none while a node lacks a ready one.
        let rolling = daemon_set_plan(&ds("a:2"), &running, &nodes);
        assert_eq!(rolling.delete, ["a-1"]);
        assert_eq!(rolling.status["updatedNumberScheduled"], 0);
        let waiting = daemon_set_plan(&ds("a:2"), &running[1..], &nodes);
        assert!(waiting.delete.is_empty() && waiting.create.len() == 1, "{waiting:?}");
        // A Pod on a node no longer admitted goes.
        let stray = [running[0].clone(), pod("a-3", "n3", &p.create[0], true)];
        assert!(daemon_set_plan(&ds("a:1"), &stray, &nodes).delete.contains(&"a-3".to_string()));
    }

    #[test]
    fn a_deployment_gets_a_replica_set_for_its_template_and_rolls_to_a_new_one() {
        let d = deploy(2, "a:1");
        let first = deployment_plan(&d, &[]);
        let rs = first.create.expect("a ReplicaSet for the template");
        assert_eq!(rs["spec"]["replicas"], 2);
        let hash = rs["metadata"]["labels"][HASH_LABEL].as_str().unwrap().to_string();
        assert_eq!(rs["spec"]["selector"]["matchLabels"], json!({"app": "hello", HASH_LABEL: hash}));
        assert_eq!(rs["spec"]["template"]["metadata"]["labels"][HASH_LABEL], json!(hash));
        assert_eq!(rs["metadata"]["ownerReferences"][0]["uid"], "d-1");
        assert_eq!(deployment_plan(&d, &[]).create.unwrap()["metadata"]["name"], rs["metadata"]["name"], "stable");

        // Up and available: complete.
        let old = rs_with(&rs, 2, 2, 2);
        let p = deployment_plan(&d, std::slice::from_ref(&old));
        assert!(p.create.is_none() && p.scale.is_empty(), "{p:?}");
        assert_eq!((p.status["updatedReplicas"].clone(), p.status["availableReplicas"].clone()), (json!(2), json!(2)));
        assert_eq!(p.status["conditions"][1]["reason"], "NewReplicaSetAvailable");

        // A new image: a new ReplicaSet; the old one stays until the new one is available.
        let d2 = deploy(2, "a:2");
        let p = deployment_plan(&d2, std::slice::from_ref(&old));
        assert!(p.scale.is_empty(), "the old one is kept while the new one starts: {p:?}");
        let new = p.create.expect("a second ReplicaSet");
        assert_ne!(new["metadata"]["name"], old["metadata"]["name"]);
        assert_eq!(new["metadata"]["annotations"][REVISION], "2");
        let starting = rs_with(&new, 2, 2, 1);
        let p = deployment_plan(&d2, &[old.clone(), starting]);
        assert!(p.scale.is_empty(), "{p:?}");
        assert_eq!(p.status["conditions"][1]["reason"], "ReplicaSetUpdated");
        let up = rs_with(&new, 2, 2, 2);
        let p = deployment_plan(&d2, &[old.clone(), up]);
        assert_eq!(p.scale.get(old["metadata"]["name"].as_str().unwrap()), Some(&0));
    }

    #[test]
    fn scaling_to_zero_scales_every_replica_set_and_recreate_waits_for_the_old_pods() {
        let d = deploy(2, "a:1");
        let rs = rs_with(&deployment_plan(&d, &[]).create.unwrap(), 2, 2, 2);
        let p = deployment_plan(&deploy(0, "a:1"), std::slice::from_ref(&rs));
        assert_eq!(p.scale.values().copied().collect::<Vec<_>>(), vec![0]);

        let mut d2 = deploy(2, "a:2");
        d2["spec"]["strategy"] = json!({"type": "Recreate"});
        let p = deployment_plan(&d2, std::slice::from_ref(&rs));
        assert_eq!(p.create.as_ref().unwrap()["spec"]["replicas"], 0, "new waits while old Pods run");
        assert_eq!(p.scale.get(rs["metadata"]["name"].as_str().unwrap()), Some(&0));
    }

    #[test]
    fn a_replica_set_creates_and_deletes_pods_to_its_count() {
        let rs = json!({"metadata": {"name": "hello-x", "namespace": "default", "uid": "rs-1", "generation": 3},
                        "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "hello"}}, "spec": {"containers": []}}}});
        let p = replica_set_plan(&rs, &[]);
        assert_eq!(p.create.len(), 3);
        assert_eq!(p.create[0]["metadata"]["generateName"], "hello-x-");
        assert_eq!(p.create[0]["metadata"]["labels"], json!({"app": "hello"}));
        assert_eq!(p.create[0]["metadata"]["ownerReferences"][0]["uid"], "rs-1");
        let pod = |name: &str, ready: bool, at: &str| {
            json!({"metadata": {"name": name, "creationTimestamp": at},
                   "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
        };
        let pods = vec![
            pod("a", true, "2026-01-01T00:00:00Z"),
            pod("b", false, "2026-01-01T00:00:01Z"),
            pod("c", true, "2026-01-01T00:00:02Z"),
        ];
        let mut one = rs.clone();
        one["spec"]["replicas"] = json!(1);
        let p = replica_set_plan(&one, &pods);
        assert_eq!(p.delete, vec!["b", "c"], "not ready first, then the newest");
        assert_eq!(p.status["readyReplicas"], 2);
        assert_eq!(p.status["observedGeneration"], 3);
    }

    #[test]
    fn status_comparison_ignores_condition_times() {
        let want = json!({"replicas": 2, "conditions": [{"type": "Available", "status": "True", "reason": "R", "lastUpdateTime": "t2"}]});
        let have = json!({"replicas": 2, "conditions": [{"type": "Available", "status": "True", "reason": "R", "lastUpdateTime": "t1"}]});
        assert!(subset(&want, &have));
        assert!(!subset(&json!({"replicas": 3}), &have));
        assert!(subset(&json!({"unavailable": 0}), &json!({})), "a zero is Go's absent field");
    }
}
