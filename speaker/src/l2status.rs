//! ServiceL2Status: for each Service this node announces, an object naming the
//! node and interfaces (written by server-side apply), removed when it stops.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_crds::annotations::{NODE_LABEL, SERVICE_NAME_LABEL, SERVICE_NAMESPACE_LABEL};
use ferrolb_crds::{API_VERSION, SPEAKER_FIELD_MANAGER, ServiceL2Status};
use ferrolb_model::ServiceKey;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};

use crate::api::{Failure, Health};

/// Make the ServiceL2Statuses naming `node` exactly `mine` (Service -> interfaces).
pub async fn sync(
    api: &Api<ServiceL2Status>,
    store: &Store<ServiceL2Status>,
    namespace: &str,
    node: &str,
    mine: &BTreeMap<ServiceKey, BTreeSet<String>>,
    health: &Health,
) {
    let wanted = mine
        .iter()
        .map(|(key, ifaces)| {
            let status = json!({"node": node, "serviceName": key.name(), "serviceNamespace": key.namespace(),
                                "interfaces": ifaces.iter().map(|i| json!({"name": i})).collect::<Vec<_>>()});
            (key.clone(), (key.dotted(), status))
        })
        .collect();
    sync_owned(api, store, namespace, node, &wanted, health).await;
}

/// Make the status objects of kind `K` (ServiceL2Status, ServiceBGPStatus: a `status`
/// with `node`, `serviceName` and `serviceNamespace`) that name `node` exactly
/// `wanted` (Service -> (object name, status)): each written by server-side apply
/// (labels naming the Service and the node, then the status) when its status differs,
/// every other one naming `node` removed.
pub async fn sync_owned<K>(
    api: &Api<K>,
    store: &Store<K>,
    namespace: &str,
    node: &str,
    wanted: &BTreeMap<ServiceKey, (String, Value)>,
    health: &Health,
) where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let kind = K::kind(&());
    let status_of = |obj: &K| serde_json::to_value(obj).ok().map(|v| v["status"].clone());
    for (key, (name, want)) in wanted {
        let current = store.get(&ObjectRef::new(name).within(namespace));
        if current.as_deref().and_then(status_of).as_ref() == Some(want) {
            continue;
        }
        let pp = PatchParams::apply(SPEAKER_FIELD_MANAGER).force();
        let meta = json!({"apiVersion": API_VERSION, "kind": kind,
            "metadata": {"name": name, "labels": {SERVICE_NAME_LABEL: key.name(), SERVICE_NAMESPACE_LABEL: key.namespace(), NODE_LABEL: node}},
            "spec": {}});
        let status = json!({"apiVersion": API_VERSION, "kind": kind, "status": want});
        let what = format!("write a {kind}");
        let r = async {
            health.call(&what, api.patch(name, &pp, &Patch::Apply(&meta))).await?;
            health.call(&what, api.patch_status(name, &pp, &Patch::Apply(&status))).await
        }
        .await;
        if let Err(e) = r {
            tracing::debug!(service = %key, error = %e, "could not write {kind}");
        }
    }
    for st in store.state() {
        let Some(s) = status_of(&st).filter(|s| s["node"] == node) else { continue };
        let key = ServiceKey::new(
            s["serviceNamespace"].as_str().unwrap_or_default(),
            s["serviceName"].as_str().unwrap_or_default(),
        );
        if wanted.contains_key(&key) {
            continue;
        }
        // Only delete the version that still names this node: a new holder may have taken it.
        if let Err(e) = delete_unchanged(api, &st, health).await {
            tracing::debug!(service = %key, error = %e, "could not remove {kind}");
        }
    }
}

/// Delete `st` only as this node last saw it (uid and resourceVersion preconditions):
/// another speaker may have rewritten it since. Already gone or changed is fine.
async fn delete_unchanged<K>(api: &Api<K>, st: &K, health: &Health) -> Result<(), Failure>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let pre = Preconditions { uid: st.uid(), resource_version: st.resource_version() };
    let dp = DeleteParams { preconditions: Some(pre), ..Default::default() };
    match health.call("remove a status", api.delete(&st.name_any(), &dp)).await {
        Ok(_) => Ok(()),
        Err(Failure::Api(kube::Error::Api(e))) if e.code == 409 || e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Make this node's reports exactly `reports` (Service -> (reason, message)): a
/// ServiceL2Status `<namespace>.<name>.not-announced` without status, whose labels name
/// the Service, this node and the reason, and whose annotation carries the message.
/// The controller shows them in the Service's `ferrolb.io/Announced` condition.
pub async fn sync_reports(
    api: &Api<ServiceL2Status>,
    store: &Store<ServiceL2Status>,
    namespace: &str,
    node: &str,
    reports: &BTreeMap<ServiceKey, (&'static str, String)>,
    health: &Health,
) {
    use ferrolb_crds::annotations::{
        NOT_ANNOUNCED_MESSAGE_ANNOTATION, NOT_ANNOUNCED_REASON_LABEL, NOT_ANNOUNCED_SUFFIX,
    };
    for (key, (reason, message)) in reports {
        let name = format!("{}{NOT_ANNOUNCED_SUFFIX}", key.dotted());
        let current = store.get(&ObjectRef::new(&name).within(namespace));
        let same = current.as_ref().is_some_and(|c| {
            c.labels().get(NODE_LABEL).map(String::as_str) == Some(node)
                && c.labels().get(NOT_ANNOUNCED_REASON_LABEL).map(String::as_str) == Some(*reason)
                && c.annotations().get(NOT_ANNOUNCED_MESSAGE_ANNOTATION) == Some(message)
        });
        if same {
            continue;
        }
        let body = json!({"apiVersion": API_VERSION, "kind": "ServiceL2Status",
            "metadata": {"name": name,
                "labels": {SERVICE_NAME_LABEL: key.name(), SERVICE_NAMESPACE_LABEL: key.namespace(), NODE_LABEL: node, NOT_ANNOUNCED_REASON_LABEL: reason},
                "annotations": {NOT_ANNOUNCED_MESSAGE_ANNOTATION: message}},
            "spec": {}});
        let pp = PatchParams::apply(SPEAKER_FIELD_MANAGER).force();
        if let Err(e) = health.call("write a not-announced report", api.patch(&name, &pp, &Patch::Apply(&body))).await {
            tracing::debug!(service = %key, error = %e, "could not write the not-announced report");
        }
    }
    for st in store.state() {
        let labels = st.labels();
        if labels.get(NODE_LABEL).map(String::as_str) != Some(node) || !labels.contains_key(NOT_ANNOUNCED_REASON_LABEL)
        {
            continue;
        }
        let (Some(n), Some(ns)) = (labels.get(SERVICE_NAME_LABEL), labels.get(SERVICE_NAMESPACE_LABEL)) else {
            continue;
        };
        if reports.contains_key(&ServiceKey::new(ns, n)) {
            continue;
        }
        if let Err(e) = delete_unchanged(api, &st, health).await {
            tracing::debug!(report = %st.name_any(), error = %e, "could not remove the not-announced report");
        }
    }
}
