//! ServiceBGPStatus: for each Service this node advertises over BGP, an object naming
//! the node and the peers whose Established session has the Service's prefixes
//! (written by server-side apply), removed when that is no longer so.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_crds::ServiceBGPStatus;
use ferrolb_model::ServiceKey;
use kube::api::Api;
use kube::runtime::reflector::Store;
use serde_json::json;

use crate::api::Health;

/// The name of `key`'s ServiceBGPStatus from `node`.
pub fn name(key: &ServiceKey, node: &str) -> String {
    key.per_node(node)
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
    let wanted = mine
        .iter()
        .map(|(key, peers)| {
            let status = json!({"node": node, "serviceName": key.name(), "serviceNamespace": key.namespace(),
                                "peers": peers});
            (key.clone(), (name(key, node), status))
        })
        .collect();
    crate::l2status::sync_owned(api, store, namespace, node, &wanted, health).await;
}
