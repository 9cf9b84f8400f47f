//! The BGP custom resources, in MetalLB's shapes (`metallb.io/v1beta2` BGPPeer,
//! `metallb.io/v1beta1` BGPAdvertisement and Community) so that a MetalLB user
//! moves by changing the API group.

// kube-derive takes one `printcolumn(...)` per column; clippy mistakes the repeated keys for duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A BGP router the speakers of the selected nodes open sessions with.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta2",
    kind = "BGPPeer",
    namespaced,
    status = "BGPPeerStatus",
    derive = "PartialEq",
    shortname = "bgppeer",
    category = "ferrolb",
    doc = "BGPPeer is a router the speakers advertise Service IPs to over BGP.",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.peerAddress"),
    printcolumn(name = "ASN", type_ = "integer", json_path = ".spec.peerASN"),
    printcolumn(name = "My ASN", type_ = "integer", json_path = ".spec.myASN"),
    printcolumn(name = "Node Selectors", type_ = "string", json_path = ".spec.nodeSelectors", priority = "10"),
    printcolumn(name = "Valid", type_ = "string", json_path = ".status.conditions[?(@.type==\"Valid\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// The AS the speakers announce themselves with.
    #[serde(rename = "myASN")]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub my_asn: u32,
    /// The AS the peer must announce (equal to `myASN`: internal BGP).
    #[serde(rename = "peerASN")]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub peer_asn: u32,
    /// The peer's address, IPv4 or IPv6.
    #[schemars(schema_with = "ip_schema")]
    pub peer_address: String,
    /// The local address the session is dialed from (default: the kernel's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_ip_schema")]
    pub source_address: Option<String>,
    /// The peer's TCP port (default 179).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub peer_port: Option<u16>,
    /// The hold time proposed, as a duration (`90s`; 0 or at least 3 s; default 90s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub hold_time: Option<String>,
    /// How often KEEPALIVE is sent (default: a third of the negotiated hold time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub keepalive_time: Option<String>,
    /// The wait between connection attempts (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub connect_time: Option<String>,
    /// The BGP identifier to use (default: the node's first IPv4 address).
    #[serde(rename = "routerID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_ip_schema")]
    pub router_id: Option<String>,
    /// Nodes whose speakers peer with this router; empty means all nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// TCP MD5 password (RFC 2385). Prefer `passwordSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 80))]
    pub password: Option<String>,
    /// A `kubernetes.io/basic-auth` Secret in ferrolb's namespace whose `password` key
    /// holds the TCP MD5 password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,
    /// The BFDProfile (by name, in ferrolb's namespace) of the BFD session run beside
    /// this peer's BGP session: when BFD finds the path down, the BGP session is torn
    /// down at once instead of at the hold timer. A peer naming a profile that does not
    /// exist is refused (Valid False) rather than run without the detection it asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<String>,
    /// The peer is more than one hop away: send with TTL 255 instead of 1.
    #[serde(default, rename = "ebgpMultiHop")]
    pub ebgp_multi_hop: bool,
    /// Offer graceful restart (RFC 4724): across a speaker restart the peer keeps the
    /// routes until the new session's End-of-RIB.
    #[serde(default)]
    pub enable_graceful_restart: bool,
    /// Carry each family on a session of its own address family (no multiprotocol
    /// IPv6 over an IPv4 session).
    #[serde(default, rename = "disableMP")]
    pub disable_mp: bool,
}

/// A Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretReference {
    /// The Secret's name.
    pub name: String,
    /// Its namespace; must be ferrolb's (the speakers read no other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What the controller observed about a peer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct BGPPeerStatus {
    /// Standard conditions; `Valid` says whether the speakers use the peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::types::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Which pools are advertised over BGP, to which peers, with which attributes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPAdvertisement",
    namespaced,
    status = "BGPAdvertisementStatus",
    derive = "PartialEq",
    shortname = "bgpadv",
    category = "ferrolb",
    doc = "BGPAdvertisement makes the speakers advertise the IPs of the selected pools to their BGP peers.",
    printcolumn(name = "IPAddressPools", type_ = "string", json_path = ".spec.ipAddressPools"),
    printcolumn(name = "IPAddressPool Selectors", type_ = "string", json_path = ".spec.ipAddressPoolSelectors"),
    printcolumn(name = "Peers", type_ = "string", json_path = ".spec.peers"),
    printcolumn(name = "Node Selectors", type_ = "string", json_path = ".spec.nodeSelectors", priority = "10"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Advertise each IPv4 address as part of a prefix of this length (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 32))]
    pub aggregation_length: Option<u8>,
    /// Advertise each IPv6 address as part of a prefix of this length (default 128).
    #[serde(default, rename = "aggregationLengthV6", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 128))]
    pub aggregation_length_v6: Option<u8>,
    /// LOCAL_PREF of the routes (sent to internal peers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Communities: `65000:100` (standard), `large:65000:1:2` (large), or the name of a
    /// Community alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "communities_schema")]
    pub communities: Vec<String>,
    /// Pools advertised, by name. With neither this nor `ipAddressPoolSelectors`, all pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Pools advertised, by label selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that advertise; empty means all nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Peers (BGPPeer names) advertised to; empty means every peer of the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

/// What the controller observed about a BGP advertisement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct BGPAdvertisementStatus {
    /// Standard conditions; `Valid` says whether the advertisement is used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::types::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Named BGP communities, usable by name in BGPAdvertisements.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "Community",
    namespaced,
    derive = "PartialEq",
    category = "ferrolb",
    doc = "Community gives names to BGP community values.",
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CommunitySpec {
    /// The aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<CommunityAlias>,
}

/// One alias.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CommunityAlias {
    /// The alias used in BGPAdvertisements.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `65000:100` or `large:65000:1:2`.
    #[schemars(length(min = 3, max = 40))]
    pub value: String,
}

/// The timers of BFD sessions (RFC 5880), named by BGPPeers' `bfdProfile`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BFDProfile",
    namespaced,
    status = "BFDProfileStatus",
    derive = "PartialEq",
    shortname = "bfdprofile",
    category = "ferrolb",
    doc = "BFDProfile sets the timers of the BFD sessions run beside the BGP sessions of the peers naming it.",
    printcolumn(name = "Passive Mode", type_ = "boolean", json_path = ".spec.passiveMode"),
    printcolumn(name = "Transmit Interval", type_ = "integer", json_path = ".spec.transmitInterval"),
    printcolumn(name = "Receive Interval", type_ = "integer", json_path = ".spec.receiveInterval"),
    printcolumn(name = "Multiplier", type_ = "integer", json_path = ".spec.detectMultiplier"),
    printcolumn(name = "Valid", type_ = "string", json_path = ".status.conditions[?(@.type==\"Valid\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// The shortest interval, in milliseconds, at which this side can take control
    /// packets (10-60000, default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub receive_interval: Option<u32>,
    /// The interval, in milliseconds, at which this side would like to send (10-60000,
    /// default 300); the one used is the longer of it and the peer's receive interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub transmit_interval: Option<u32>,
    /// How many intervals without a packet declare the path down (2-255, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 255))]
    pub detect_multiplier: Option<u32>,
    /// The echo function's interval in milliseconds (10-60000, default 50); used only
    /// with `echoMode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub echo_interval: Option<u32>,
    /// The echo function (RFC 5880 §6.4). Not supported: a profile with `true` is
    /// refused (Valid False), and so are the peers naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_mode: Option<bool>,
    /// Send nothing until the peer has sent (RFC 5880 §6.1, passive role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_mode: Option<bool>,
    /// The least TTL accepted on multi-hop sessions (1-254, default 254). Single-hop
    /// sessions accept TTL 255 only (RFC 5881 §5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub minimum_ttl: Option<u32>,
}

/// What the controller observed about a BFD profile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct BFDProfileStatus {
    /// Standard conditions; `Valid` says whether peers can use the profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::types::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// To which BGP peers one node advertises a Service's IPs. Written by that node's speaker.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "ServiceBGPStatus",
    namespaced,
    status = "ServiceBGPStatusStatus",
    derive = "PartialEq",
    shortname = "bgpstatus",
    category = "ferrolb",
    doc = "ServiceBGPStatus reports the BGP peers a node advertises a Service's IPs to.",
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(name = "Service Name", type_ = "string", json_path = ".status.serviceName"),
    printcolumn(name = "Service Namespace", type_ = "string", json_path = ".status.serviceNamespace"),
    printcolumn(name = "Peers", type_ = "string", json_path = ".status.peers"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct ServiceBGPStatusSpec {}

/// The advertisement a ServiceBGPStatus describes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBGPStatusStatus {
    /// The advertising node.
    #[serde(default)]
    pub node: String,
    /// Name of the Service.
    #[serde(default)]
    pub service_name: String,
    /// Namespace of the Service.
    #[serde(default)]
    pub service_namespace: String,
    /// The BGPPeers whose Established session has the Service's prefixes from this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

fn ip_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 2,
        "maxLength": 45,
        "x-kubernetes-validations": [{"rule": "isIP(self)", "message": "must be an IPv4 or IPv6 address"}]
    })
}

fn optional_ip_schema(g: &mut SchemaGenerator) -> Schema {
    ip_schema(g)
}

fn duration_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 32,
        "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
    })
}

fn communities_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {"type": "string", "minLength": 1, "maxLength": 253}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metallb_peer_spellings_round_trip() {
        let v = json!({
            "myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.1",
            "sourceAddress": "198.51.100.11", "peerPort": 1179, "holdTime": "9s",
            "keepaliveTime": "3s", "connectTime": "1s", "routerID": "198.51.100.11",
            "nodeSelectors": [{"matchLabels": {"rack": "a"}}], "password": "pw",
            "passwordSecret": {"name": "s", "namespace": "ferrolb-system"},
            "bfdProfile": "fast", "ebgpMultiHop": true, "enableGracefulRestart": true, "disableMP": true
        });
        let spec: BGPPeerSpec = serde_json::from_value(v.clone()).unwrap();
        assert_eq!((spec.my_asn, spec.peer_asn, spec.peer_port), (64512, 64513, Some(1179)));
        assert_eq!(serde_json::to_value(&spec).unwrap(), v);
    }

    #[test]
    fn metallb_bfd_profile_spellings_round_trip() {
        let v = json!({
            "receiveInterval": 50, "transmitInterval": 60, "detectMultiplier": 3, "echoInterval": 50,
            "echoMode": false, "passiveMode": true, "minimumTtl": 254
        });
        let spec: BFDProfileSpec = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(
            (spec.receive_interval, spec.transmit_interval, spec.passive_mode),
            (Some(50), Some(60), Some(true))
        );
        assert_eq!(serde_json::to_value(&spec).unwrap(), v);
    }

    #[test]
    fn metallb_advertisement_spellings_round_trip() {
        let v = json!({
            "aggregationLength": 24, "aggregationLengthV6": 120, "localPref": 100,
            "communities": ["65535:65282", "large:64512:1:2", "no-advertise"],
            "ipAddressPools": ["p"], "ipAddressPoolSelectors": [{"matchLabels": {"a": "b"}}],
            "nodeSelectors": [{"matchLabels": {"rack": "a"}}], "peers": ["r1"]
        });
        let spec: BGPAdvertisementSpec = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(spec.aggregation_length_v6, Some(120));
        assert_eq!(serde_json::to_value(&spec).unwrap(), v);
    }
}
