//! ServiceBGPStatus: for each Service this node advertises over BGP, an object naming
//! the node and the peers whose Established session has the Service's prefixes
//! (written by server-side apply), removed when that is no longer so.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_crds::annotations::{NODE_LABEL, SERVICE_NAME_LABEL, SERVICE_NAMESPACE_LABEL};
use ferrolb_crds::{API_VERSION, SPEAKER_FIELD_MANAGER, ServiceBGPStatus};
use ferrolb_model::ServiceKey;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::api::Health;

/// The name of `key`'s ServiceBGPStatus from `node`.
pub fn name(key: &ServiceKey, node: &str) -> String {
    format!("{}.{node}", key.dotted())
}

/// Make the ServiceBGPStatuses of `node` exactly `mine` (Service -> peers).
pub async fn sync(
    api: &Api<ServiceBGPStatus>,
    store: &Store<ServiceBGPStatus>,
    namespace: &str,
    node: &str,
    mine: &BTreeMap<ServiceKey, BTreeSet<String>>,
    health: &Health,
) {
    for (key, peers) in mine {
        let name = name(key, node);
        let want = json!({"node": node, "serviceName": key.name(), "serviceNamespace": key.namespace(),
                          "peers": peers});
        let current = store.get(&ObjectRef::new(&name).within(namespace));
        if current.as_ref().and_then(|c| serde_json::to_value(&c.status).ok()).as_ref() == Some(&want) {
            continue;
        }
        let pp = PatchParams::apply(SPEAKER_FIELD_MANAGER).force();
        let meta = json!({"apiVersion": API_VERSION, "kind": "ServiceBGPStatus",
            "metadata": {"name": name, "labels": {SERVICE_NAME_LABEL: key.name(), SERVICE_NAMESPACE_LABEL: key.namespace(), NODE_LABEL: node}},
            "spec": {}});
        let status = json!({"apiVersion": API_VERSION, "kind": "ServiceBGPStatus", "status": want});
        let r = async {
            health.call("write a ServiceBGPStatus", api.patch(&name, &pp, &Patch::Apply(&meta))).await?;
            health.call("write a ServiceBGPStatus", api.patch_status(&name, &pp, &Patch::Apply(&status))).await
        }
        .await;
        if let Err(e) = r {
            tracing::debug!(service = %key, error = %e, "could not write ServiceBGPStatus");
        }
    }
    for st in store.state() {
        let Some(s) = st.status.as_ref().filter(|s| s.node == node) else { continue };
        let key = ServiceKey::new(&s.service_namespace, &s.service_name);
        if mine.contains_key(&key) {
            continue;
        }
        if let Err(e) = crate::l2status::delete_unchanged(api, &st, health).await {
            tracing::debug!(service = %key, error = %e, "could not remove ServiceBGPStatus");
        }
    }
}
