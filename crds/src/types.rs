//! The custom resource types. Field names and semantics mirror MetalLB's
//! `metallb.io/v1beta1` resources; ferrolb additions are marked as such.

// kube-derive takes one `printcolumn(...)` per column; clippy mistakes the repeated keys for duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Longest textual address entry accepted: an IPv6 range of two full addresses with spaces.
const MAX_ADDRESS_LEN: u32 = 100;
/// Most address entries in one pool; bounds the CEL cost estimate as the API server requires.
const MAX_ADDRESSES: u32 = 1024;

fn default_true() -> bool {
    true
}

/// A pool of IP addresses that LoadBalancer Services can be given.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    namespaced,
    status = "IPAddressPoolStatus",
    derive = "PartialEq",
    shortname = "ippool",
    category = "ferrolb",
    doc = "IPAddressPool is a set of IP addresses ferrolb may assign to LoadBalancer Services.",
    printcolumn(name = "Auto Assign", type_ = "boolean", json_path = ".spec.autoAssign"),
    printcolumn(name = "Avoid Buggy IPs", type_ = "boolean", json_path = ".spec.avoidBuggyIPs"),
    printcolumn(name = "Addresses", type_ = "string", json_path = ".spec.addresses"),
    printcolumn(name = "IPv4 In Use", type_ = "integer", json_path = ".status.assignedIPv4"),
    printcolumn(name = "IPv4 Available", type_ = "integer", json_path = ".status.availableIPv4"),
    printcolumn(name = "IPv6 In Use", type_ = "integer", json_path = ".status.assignedIPv6"),
    printcolumn(name = "IPv6 Available", type_ = "integer", json_path = ".status.availableIPv6"),
    printcolumn(name = "Valid", type_ = "string", json_path = ".status.conditions[?(@.type==\"Valid\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// The addresses of the pool: CIDRs (`198.51.100.0/24`, `fd42:f1b::/120`) and
    /// inclusive ranges (`198.51.100.10-198.51.100.20`), IPv4 and IPv6 mixed.
    #[schemars(schema_with = "addresses_schema")]
    pub addresses: Vec<String>,
    /// Whether Services that do not name this pool may get addresses from it.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// Never hand out IPv4 addresses ending in `.0` or `.255`, which some buggy
    /// network equipment drops.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Which Services may get addresses from the pool, and in what order pools are tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

/// Restricts a pool to some Services and orders it among other pools.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower values are tried first; pools without a priority come after all that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub priority: Option<i32>,
    /// Namespaces whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Label selectors for namespaces whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Label selectors for Services that may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// What the controller observed about a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IPAddressPoolStatus {
    /// IPv4 addresses assigned to Services.
    #[serde(rename = "assignedIPv4", default)]
    pub assigned_ipv4: i64,
    /// IPv6 addresses assigned to Services (saturates at the int64 maximum).
    #[serde(rename = "assignedIPv6", default)]
    pub assigned_ipv6: i64,
    /// IPv4 addresses still free.
    #[serde(rename = "availableIPv4", default)]
    pub available_ipv4: i64,
    /// IPv6 addresses still free (saturates at the int64 maximum: a /64 has 2^64).
    #[serde(rename = "availableIPv6", default)]
    pub available_ipv6: i64,
    /// The ranges the pool serves, written by the controller: `spec.addresses` while
    /// the spec is valid; while it is not (edited into an overlap or a typo), the last
    /// valid ranges, whose Services keep their IPs while no new ones are allocated.
    /// Every binary reads it, so a restart does not forget it. An overlap is decided
    /// against these ranges: a pool whose addresses are in use is never the one that loses.
    #[serde(rename = "effectiveAddresses", default, skip_serializing_if = "Vec::is_empty")]
    pub effective_addresses: Vec<String>,
    /// Standard conditions; `Valid` says whether the allocator uses the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Convert an exact address count to the int64 the API carries, saturating.
pub fn saturating_count(n: u128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Which pools are announced over layer 2, from which nodes and interfaces.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    namespaced,
    status = "L2AdvertisementStatus",
    derive = "PartialEq",
    shortname = "l2adv",
    category = "ferrolb",
    doc = "L2Advertisement makes ferrolb answer ARP and NDP for the IPs of the selected pools.",
    printcolumn(name = "IPAddressPools", type_ = "string", json_path = ".spec.ipAddressPools"),
    printcolumn(name = "IPAddressPool Selectors", type_ = "string", json_path = ".spec.ipAddressPoolSelectors"),
    printcolumn(name = "Interfaces", type_ = "string", json_path = ".spec.interfaces"),
    printcolumn(name = "Node Selectors", type_ = "string", json_path = ".spec.nodeSelectors", priority = "10"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools announced, by name. With neither this nor `ipAddressPoolSelectors`, all pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Pools announced, by label selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that may announce; empty means all nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to announce on; empty means every eligible interface of the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "interfaces_schema")]
    pub interfaces: Vec<String>,
    /// Services announced, by label selector (as in MetalLB 0.16); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
    /// Soft preferences among the eligible nodes (MetalLB's shape, after Kubernetes'
    /// `PreferredSchedulingTerm`): a node's score is the sum of the weights of the
    /// preferences it matches; an IP is announced from the highest-scoring eligible
    /// nodes, the others taking over only when none of those can. At most one
    /// advertisement with preferences per pool, and not with `serviceSelectors`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,
}

/// A weighted soft preference for nodes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PreferredNodeSelector {
    /// Weight of matching `preference`, 1-100.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
    /// The nodes this weight applies to.
    pub preference: LabelSelector,
}

impl L2AdvertisementSpec {
    /// MetalLB's rule: an advertisement that names no pool and selects none covers every pool.
    pub fn selects_all_pools(&self) -> bool {
        self.ip_address_pools.is_empty() && self.ip_address_pool_selectors.is_empty()
    }
}

/// What the controller observed about an advertisement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct L2AdvertisementStatus {
    /// Standard conditions; `Valid` says whether the advertisement is used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Which node announces a Service's IPs, and on which interfaces. Written by the announcing speaker.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "ServiceL2Status",
    namespaced,
    status = "ServiceL2StatusStatus",
    derive = "PartialEq",
    shortname = "l2status",
    category = "ferrolb",
    doc = "ServiceL2Status reports which node announces a Service's IPs over layer 2.",
    printcolumn(name = "Allocated Node", type_ = "string", json_path = ".status.node"),
    printcolumn(name = "Service Name", type_ = "string", json_path = ".status.serviceName"),
    printcolumn(name = "Service Namespace", type_ = "string", json_path = ".status.serviceNamespace"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct ServiceL2StatusSpec {}

/// The announcement a ServiceL2Status describes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceL2StatusStatus {
    /// The announcing node.
    #[serde(default)]
    pub node: String,
    /// Name of the Service.
    #[serde(default)]
    pub service_name: String,
    /// Namespace of the Service.
    #[serde(default)]
    pub service_namespace: String,
    /// Interfaces the IPs are announced on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceInfo>,
}

/// One announcing interface.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct InterfaceInfo {
    /// The interface name on the node.
    pub name: String,
}

fn addresses_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "CIDRs or inclusive start-end ranges, IPv4 and IPv6.",
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_ADDRESSES,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ADDRESS_LEN,
            "x-kubernetes-validations": [{
                "rule": "isCIDR(self.trim()) || (self.split('-').size() == 2 && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()))",
                "message": "must be a CIDR such as 198.51.100.0/24 or a range such as 198.51.100.10-198.51.100.20"
            }]
        }
    })
}

fn interfaces_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Interface names; empty means every eligible interface.",
        "type": "array",
        "maxItems": 64,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 15,
            "pattern": "^[^/\\s]+$"
        }
    })
}

/// `metav1.Condition` list, as a map keyed by `type` (the upstream convention).
pub(crate) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<Condition>();
    json_schema!({
        "type": "array",
        "items": item,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::json;

    #[test]
    fn the_api_version_constant_is_the_kinds_own() {
        use kube::Resource;
        assert_eq!(crate::API_VERSION, format!("{}/{}", crate::GROUP, crate::VERSION));
        assert_eq!(IPAddressPool::api_version(&()), crate::API_VERSION);
        assert_eq!(ServiceL2Status::api_version(&()), crate::API_VERSION);
    }

    #[test]
    fn auto_assign_defaults_to_true_and_avoid_buggy_to_false() {
        let spec: IPAddressPoolSpec = serde_json::from_value(json!({"addresses": ["198.51.100.0/24"]})).unwrap();
        assert!(spec.auto_assign);
        assert!(!spec.avoid_buggy_ips);
        assert_eq!(spec.service_allocation, None);
    }

    #[test]
    fn metallb_field_spellings_round_trip() {
        let v = json!({
            "addresses": ["198.51.100.0/24", "fd42:f1b::10-fd42:f1b::20"],
            "autoAssign": false,
            "avoidBuggyIPs": true,
            "serviceAllocation": {"priority": 5, "namespaces": ["a"],
                "namespaceSelectors": [{"matchLabels": {"team": "x"}}],
                "serviceSelectors": [{"matchExpressions": [{"key": "k", "operator": "Exists"}]}]}
        });
        let spec: IPAddressPoolSpec = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(spec.service_allocation.as_ref().unwrap().priority, Some(5));
        assert_eq!(serde_json::to_value(&spec).unwrap(), v);
        let status = IPAddressPoolStatus { assigned_ipv4: 1, available_ipv6: 2, ..Default::default() };
        let s = serde_json::to_value(&status).unwrap();
        assert_eq!(s["assignedIPv4"], 1);
        assert_eq!(s["availableIPv6"], 2);
    }

    #[test]
    fn empty_pool_selection_selects_all_pools() {
        assert!(L2AdvertisementSpec::default().selects_all_pools());
        let named = L2AdvertisementSpec { ip_address_pools: vec!["p".into()], ..Default::default() };
        assert!(!named.selects_all_pools());
    }

    #[test]
    fn advertisement_spec_may_be_omitted() {
        let crd = serde_json::to_value(&crate::crds()[1]).unwrap();
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert!(root["required"].as_array().is_none_or(|r| !r.contains(&json!("spec"))));
        assert_eq!(root["properties"]["spec"]["default"], json!({}));
        let pool = serde_json::to_value(&crate::crds()[0]).unwrap();
        assert!(
            pool["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["required"]
                .as_array()
                .unwrap()
                .contains(&json!("spec"))
        );
    }

    #[test]
    fn counts_saturate() {
        assert_eq!(saturating_count(7), 7);
        assert_eq!(saturating_count(1u128 << 64), i64::MAX);
    }

    #[test]
    fn crd_schema_carries_the_validation_a_user_needs() {
        let crd = serde_json::to_value(IPAddressPool::crd()).unwrap();
        let v = &crd["spec"]["versions"][0];
        assert_eq!(v["name"], "v1beta1");
        assert!(v["subresources"]["status"].is_object());
        let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], json!(["addresses"]));
        assert_eq!(spec["properties"]["addresses"]["minItems"], 1);
        assert_eq!(spec["properties"]["autoAssign"]["default"], true);
        assert!(
            spec["properties"]["addresses"]["items"]["x-kubernetes-validations"][0]["rule"]
                .as_str()
                .unwrap()
                .contains("isCIDR")
        );
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["ippool"]));
        let cols: Vec<&str> =
            v["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert!(cols.contains(&"IPv6 Available") && cols.contains(&"Addresses"));
    }
}
