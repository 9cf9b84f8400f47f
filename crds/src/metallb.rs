//! MetalLB's `metallb.io` objects read as ferrolb's: what compat mode does with the
//! objects a MetalLB user already has (controller and speakers), and what
//! `kubectl ferrolb migrate` writes out. The shapes are MetalLB's, so an object
//! converts field for field; every field ferrolb does not have is named.
//!
//! Precedence: when both groups define an object of the same kind and name, the
//! `ferrolb.io` one is used and the `metallb.io` one is ignored (and said so), so
//! that an operator moves objects over one by one by creating the ferrolb copy.

use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// MetalLB's API group.
pub const GROUP: &str = "metallb.io";
/// The annotation MetalLB writes on a Service: the pool its IPs came from. ferrolb
/// writes it too in compat mode, for the tooling that reads it.
pub const IP_ALLOCATED_FROM_POOL: &str = "metallb.io/ip-allocated-from-pool";

/// One MetalLB kind ferrolb reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// `kind`, the same in both groups.
    pub kind: &'static str,
    /// The MetalLB version read (the one MetalLB stores).
    pub version: &'static str,
    /// The resource's plural name.
    pub plural: &'static str,
}

/// `metallb.io/v1beta1` IPAddressPool.
pub const IP_ADDRESS_POOL: Kind = Kind { kind: "IPAddressPool", version: "v1beta1", plural: "ipaddresspools" };
/// `metallb.io/v1beta1` L2Advertisement.
pub const L2_ADVERTISEMENT: Kind = Kind { kind: "L2Advertisement", version: "v1beta1", plural: "l2advertisements" };
/// `metallb.io/v1beta1` BGPAdvertisement.
pub const BGP_ADVERTISEMENT: Kind = Kind { kind: "BGPAdvertisement", version: "v1beta1", plural: "bgpadvertisements" };
/// `metallb.io/v1beta1` BFDProfile.
pub const BFD_PROFILE: Kind = Kind { kind: "BFDProfile", version: "v1beta1", plural: "bfdprofiles" };
/// `metallb.io/v1beta1` Community.
pub const COMMUNITY: Kind = Kind { kind: "Community", version: "v1beta1", plural: "communities" };
/// `metallb.io/v1beta2` BGPPeer.
pub const BGP_PEER: Kind = Kind { kind: "BGPPeer", version: "v1beta2", plural: "bgppeers" };
/// Every kind compat mode reads.
pub const KINDS: [Kind; 6] = [IP_ADDRESS_POOL, L2_ADVERTISEMENT, BGP_ADVERTISEMENT, BFD_PROFILE, COMMUNITY, BGP_PEER];

impl Kind {
    /// `metallb.io/<version>`.
    pub fn api_version(&self) -> String {
        format!("{GROUP}/{}", self.version)
    }
}

/// `spec` read through ferrolb's type `S` and written back, with the path of every
/// field that did not survive (a field ferrolb does not have).
pub fn carry<S: DeserializeOwned + Serialize>(spec: &Value) -> Result<(Value, Vec<String>), String> {
    let spec = if spec.is_null() { json!({}) } else { spec.clone() };
    let typed: S = serde_json::from_value(spec.clone()).map_err(|e| format!("spec cannot be read: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("spec cannot be written: {e}"))?;
    Ok((back.clone(), lost(&spec, &back, "spec")))
}

/// Paths present in `from` but not in `to` (objects compared key by key, lists item by item).
pub fn lost(from: &Value, to: &Value, at: &str) -> Vec<String> {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => a
            .iter()
            .flat_map(|(k, v)| match b.get(k) {
                None if !v.is_null() => vec![format!("{at}.{k}")],
                None => vec![],
                Some(w) => lost(v, w, &format!("{at}.{k}")),
            })
            .collect(),
        (Value::Array(a), Value::Array(b)) => {
            a.iter().zip(b).enumerate().flat_map(|(i, (v, w))| lost(v, w, &format!("{at}[{i}]"))).collect()
        }
        _ => vec![],
    }
}

/// A MetalLB object (as the API server returns it) as ferrolb's `K` in `namespace`:
/// name, labels, annotations, uid and creation time kept (a pool's age decides
/// overlaps), status left behind; with the fields that did not carry over.
pub fn convert<K>(obj: &Value, namespace: &str) -> Result<(K, Vec<String>), String>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Serialize,
{
    let spec = if obj["spec"].is_null() { json!({}) } else { obj["spec"].clone() };
    let meta = &obj["metadata"];
    let mut m = json!({"name": meta["name"], "namespace": namespace});
    for key in ["labels", "annotations", "uid", "creationTimestamp", "generation"] {
        if !meta[key].is_null() {
            m[key] = meta[key].clone();
        }
    }
    let o = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "metadata": m, "spec": spec});
    let typed: K = serde_json::from_value(o.clone()).map_err(|e| format!("spec cannot be read: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("spec cannot be written: {e}"))?;
    Ok((typed, lost(&o["spec"], &back["spec"], "spec")))
}

/// ferrolb's objects and MetalLB's converted ones, together: a MetalLB object with
/// the name of a ferrolb one of its kind is left out, and its name returned.
pub fn merge<K: Resource>(ours: Vec<K>, theirs: Vec<K>) -> (Vec<K>, Vec<String>) {
    let mut shadowed = Vec::new();
    let names: std::collections::BTreeSet<String> = ours.iter().filter_map(|o| o.meta().name.clone()).collect();
    let mut all = ours;
    for t in theirs {
        let name = t.meta().name.clone().unwrap_or_default();
        if names.contains(&name) {
            shadowed.push(name);
        } else {
            all.push(t);
        }
    }
    (all, shadowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BGPPeer, IPAddressPool};

    // Written from MetalLB's API reference: an IPAddressPool as `kubectl get -o json` shows it.
    fn metallb_pool(name: &str, addresses: &[&str]) -> Value {
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
               "metadata": {"name": name, "namespace": "metallb-system", "uid": "u-1", "resourceVersion": "7",
                            "creationTimestamp": "2025-01-02T03:04:05Z", "labels": {"tier": "prod"}},
               "spec": {"addresses": addresses, "avoidBuggyIPs": true, "someFutureField": 1},
               "status": {"assignedIPv4": 1}})
    }

    #[test]
    fn a_metallb_pool_becomes_ferrolb_s_in_ferrolb_s_namespace_with_what_did_not_carry_over() {
        let (p, lost) =
            convert::<IPAddressPool>(&metallb_pool("prod", &["198.51.100.0/28"]), "ferrolb-system").unwrap();
        assert_eq!(p.metadata.namespace.as_deref(), Some("ferrolb-system"));
        assert_eq!(p.metadata.uid.as_deref(), Some("u-1"));
        assert!(p.metadata.creation_timestamp.is_some(), "a pool's age decides overlaps");
        assert_eq!(p.metadata.labels.unwrap()["tier"], "prod");
        assert!(p.metadata.resource_version.is_none(), "not ferrolb's object: no version of ours");
        assert_eq!(p.spec.addresses, ["198.51.100.0/28"]);
        assert!(p.spec.avoid_buggy_ips);
        assert!(p.status.is_none());
        assert_eq!(lost, ["spec.someFutureField"]);
    }

    #[test]
    fn an_unreadable_spec_is_an_error_naming_the_field() {
        let mut o = metallb_pool("prod", &[]);
        o["spec"]["addresses"] = json!("198.51.100.0/28");
        let e = convert::<IPAddressPool>(&o, "ferrolb-system").unwrap_err();
        assert!(e.contains("spec cannot be read") && e.contains("sequence"), "{e}");
        let peer = json!({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "r"},
                          "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "203.0.113.1", "vrf": "red"}});
        let (p, lost) = convert::<BGPPeer>(&peer, "lb").unwrap();
        assert_eq!(p.spec.peer_asn, 64513);
        assert_eq!(lost, ["spec.vrf"]);
    }

    #[test]
    fn ferrolb_s_object_wins_over_metallb_s_of_the_same_name() {
        let ours =
            IPAddressPool::new("prod", serde_json::from_value(json!({"addresses": ["203.0.113.0/28"]})).unwrap());
        let theirs: Vec<IPAddressPool> = ["prod", "lab"]
            .iter()
            .map(|n| convert(&metallb_pool(n, &["198.51.100.0/28"]), "ferrolb-system").unwrap().0)
            .collect();
        let (all, shadowed) = merge(vec![ours], theirs);
        let names: Vec<(String, Vec<String>)> =
            all.iter().map(|p| (p.metadata.name.clone().unwrap(), p.spec.addresses.clone())).collect();
        assert_eq!(
            names,
            [("prod".into(), vec!["203.0.113.0/28".to_string()]), ("lab".into(), vec!["198.51.100.0/28".to_string()])]
        );
        assert_eq!(shadowed, ["prod"]);
    }
}
