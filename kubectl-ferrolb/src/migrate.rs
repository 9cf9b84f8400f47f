//! `kubectl ferrolb migrate`: MetalLB's configuration as ferrolb objects.
//!
//! Reads MetalLB manifests (what `kubectl get -o yaml` prints, a `List` included):
//! `metallb.io` IPAddressPools, L2Advertisements, BGPPeers, BGPAdvertisements,
//! BFDProfiles and Communities become `ferrolb.io` ones in ferrolb's namespace, field
//! for field (the shapes are MetalLB's); MetalLB's legacy ConfigMap (`config`, before
//! 0.13) becomes pools and layer-2 advertisements too. Every field that does not carry
//! over, and every object that does not, is a report line naming the object and the
//! field; the rest still migrates. Pools are then checked with ferrolb's model, as its webhook would.
//! Pure: the command reads and prints.

use std::collections::BTreeMap;

use ferrolb_crds::{
    API_VERSION, BFDProfileSpec, BGPAdvertisementSpec, BGPPeerSpec, CommunitySpec, IPAddressPool, IPAddressPoolSpec,
    L2Advertisement, L2AdvertisementSpec,
};
use serde_json::{Value, json};

/// The converted objects and what did not carry over.
#[derive(Debug, Default)]
pub struct Migration {
    /// ferrolb objects, ready for `kubectl apply`.
    pub objects: Vec<Value>,
    /// One line per field or object not carried over, naming it.
    pub report: Vec<String>,
}

/// `apiVersion` of ferrolb's BGPPeer (MetalLB's v1beta2 shape).
const PEER_API_VERSION: &str = "ferrolb.io/v1beta2";

/// Convert the documents of a MetalLB manifest into objects in `namespace`.
pub fn migrate(docs: Vec<Value>, namespace: &str) -> Migration {
    let mut m = Migration::default();
    let mut queue: Vec<Value> = docs;
    queue.reverse();
    while let Some(d) = queue.pop() {
        if d.is_null() {
            continue;
        }
        if d["kind"] == "List" {
            let mut items: Vec<Value> = d["items"].as_array().cloned().unwrap_or_default();
            items.reverse();
            queue.extend(items);
            continue;
        }
        let kind = d["kind"].as_str().unwrap_or_default().to_string();
        let api = d["apiVersion"].as_str().unwrap_or_default();
        let name = d["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let at = format!("{kind} {}/{name}", d["metadata"]["namespace"].as_str().unwrap_or("-"));
        match (api.split('/').next().unwrap_or_default(), kind.as_str()) {
            ("metallb.io", "IPAddressPool") => {
                if let Some(o) = carry::<IPAddressPoolSpec>(&d, &at, &mut m.report) {
                    m.objects.push(object(API_VERSION, "IPAddressPool", &name, namespace, &d, o));
                }
            }
            ("metallb.io", "L2Advertisement") => {
                if let Some(o) = carry::<L2AdvertisementSpec>(&d, &at, &mut m.report) {
                    m.objects.push(object(API_VERSION, "L2Advertisement", &name, namespace, &d, o));
                }
            }
            ("metallb.io", "BGPPeer") => {
                if let Some(mut o) = carry::<BGPPeerSpec>(&d, &at, &mut m.report) {
                    // The speakers read Secrets of ferrolb's namespace only.
                    if let Some(secret) = o["passwordSecret"]["name"].as_str() {
                        m.report.push(format!(
                            "{at}: spec.passwordSecret: copy Secret {secret} into namespace {namespace} (the speakers \
                             read Secrets of ferrolb's namespace only)"
                        ));
                        o["passwordSecret"] = json!({"name": secret});
                    }
                    m.objects.push(object(PEER_API_VERSION, "BGPPeer", &name, namespace, &d, o));
                }
            }
            ("metallb.io", "BGPAdvertisement") => {
                if let Some(o) = carry::<BGPAdvertisementSpec>(&d, &at, &mut m.report) {
                    m.objects.push(object(API_VERSION, "BGPAdvertisement", &name, namespace, &d, o));
                }
            }
            ("metallb.io", "BFDProfile") => {
                if let Some(o) = carry::<BFDProfileSpec>(&d, &at, &mut m.report) {
                    m.objects.push(object(API_VERSION, "BFDProfile", &name, namespace, &d, o));
                }
            }
            ("metallb.io", "Community") => {
                if let Some(o) = carry::<CommunitySpec>(&d, &at, &mut m.report) {
                    m.objects.push(object(API_VERSION, "Community", &name, namespace, &d, o));
                }
            }
            ("metallb.io", _) => m.report.push(format!("{at}: not migrated: not a kind ferrolb knows")),
            ("v1", "ConfigMap") if d["data"]["config"].is_string() => legacy(&d, &at, namespace, &mut m),
            _ => m.report.push(format!("{at}: skipped: not a MetalLB object ({api})")),
        }
    }
    check_pools(&mut m);
    m
}

/// The ferrolb object: name, labels and annotations kept (kubectl's last-applied copy
/// dropped), namespace ferrolb's, server-set metadata and status left behind.
fn object(api_version: &str, kind: &str, name: &str, namespace: &str, from: &Value, spec: Value) -> Value {
    let mut meta = json!({"name": name, "namespace": namespace});
    if let Some(l) = from["metadata"]["labels"].as_object().filter(|l| !l.is_empty()) {
        meta["labels"] = json!(l);
    }
    let mut ann = from["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
    ann.remove("kubectl.kubernetes.io/last-applied-configuration");
    if !ann.is_empty() {
        meta["annotations"] = json!(ann);
    }
    json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec})
}

/// `spec` through ferrolb's type, and a report line per field that did not survive.
fn carry<S: serde::de::DeserializeOwned + serde::Serialize>(
    d: &Value,
    at: &str,
    report: &mut Vec<String>,
) -> Option<Value> {
    match ferrolb_crds::metallb::carry::<S>(&d["spec"]) {
        Ok((spec, lost)) => {
            report.extend(lost.iter().map(|path| format!("{at}: {path}: not carried over: ferrolb has no such field")));
            Some(spec)
        }
        Err(e) => {
            report.push(format!("{at}: not migrated: {e}"));
            None
        }
    }
}

/// MetalLB's configuration before 0.13: a ConfigMap whose `config` holds
/// `address-pools` (name, protocol, addresses, auto-assign, avoid-buggy-ips,
/// bgp-advertisements), `peers` and `bgp-communities`.
fn legacy(d: &Value, at: &str, namespace: &str, m: &mut Migration) {
    let cfg: Value = match serde_yaml::from_str(d["data"]["config"].as_str().unwrap_or_default()) {
        Ok(v) => v,
        Err(e) => {
            m.report.push(format!("{at}: data.config: not migrated: not YAML: {e}"));
            return;
        }
    };
    for (i, p) in cfg["address-pools"].as_array().into_iter().flatten().enumerate() {
        let field = format!("{at}: data.config address-pools[{i}]");
        let Some(name) = p["name"].as_str() else {
            m.report.push(format!("{field}: not migrated: it has no name"));
            continue;
        };
        let mut spec = json!({"addresses": p["addresses"]});
        if let Some(b) = p["auto-assign"].as_bool() {
            spec["autoAssign"] = json!(b);
        }
        if let Some(b) = p["avoid-buggy-ips"].as_bool() {
            spec["avoidBuggyIPs"] = json!(b);
        }
        for k in p.as_object().into_iter().flat_map(|o| o.keys()) {
            if !["name", "protocol", "addresses", "auto-assign", "avoid-buggy-ips", "bgp-advertisements"]
                .contains(&k.as_str())
            {
                m.report.push(format!("{field}.{k}: not carried over: unknown to MetalLB's legacy format"));
            }
        }
        m.objects.push(json!({"apiVersion": API_VERSION, "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}));
        match p["protocol"].as_str() {
            Some("layer2") => m.objects.push(json!({"apiVersion": API_VERSION, "kind": "L2Advertisement",
                "metadata": {"name": name, "namespace": namespace}, "spec": {"ipAddressPools": [name]}})),
            Some("bgp") => m.report.push(format!(
                "{field}: the pool is migrated, not its BGP announcement: write a BGPAdvertisement for it (docs/bgp.md)"
            )),
            other => {
                m.report.push(format!("{field}.protocol: {other:?} is neither layer2 nor bgp; no advertisement made"))
            }
        }
    }
    for key in ["peers", "bgp-communities"] {
        if cfg[key].as_array().is_some_and(|a| !a.is_empty()) || cfg[key].as_object().is_some_and(|o| !o.is_empty()) {
            m.report.push(format!(
                "{at}: data.config {key}: not migrated: write BGPPeers and Communities for them (docs/bgp.md)"
            ));
        }
    }
}

/// What ferrolb's webhook would say of the migrated pools and advertisements, together.
fn check_pools(m: &mut Migration) {
    let pools: Vec<IPAddressPool> = m
        .objects
        .iter()
        .filter(|o| o["kind"] == "IPAddressPool")
        .filter_map(|o| serde_json::from_value(o.clone()).ok())
        .collect();
    let advs: Vec<L2Advertisement> = m
        .objects
        .iter()
        .filter(|o| o["kind"] == "L2Advertisement")
        .filter_map(|o| serde_json::from_value(o.clone()).ok())
        .collect();
    let cfg = ferrolb_model::Config::build(&pools, &advs, BTreeMap::new());
    for e in cfg.invalid_pools.values() {
        m.report.push(format!("{e} (ferrolb would refuse it; fix it before applying)"));
    }
    for (name, why) in &cfg.invalid_advertisements {
        m.report.push(format!("L2Advertisement {name}: {why} (ferrolb would refuse it)"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(yaml: &str) -> Vec<Value> {
        serde_yaml::Deserializer::from_str(yaml).map(|d| Value::deserialize(d).unwrap()).collect()
    }

    use serde::Deserialize;

    // Written from MetalLB's documented configuration examples.
    const METALLB: &str = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: production
  namespace: metallb-system
  labels: {tier: prod}
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
  uid: 1234
  resourceVersion: "99"
spec:
  addresses: ["198.51.100.0/24", "fd42:f1b::100-fd42:f1b::1ff"]
  autoAssign: false
  serviceAllocation:
    priority: 50
    namespaces: [web]
  someFutureField: 3
status:
  assignedIPv4: 2
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2, namespace: metallb-system}
spec:
  ipAddressPools: [production]
  interfaces: [eth0]
  nodeSelectors:
  - matchLabels: {kubernetes.io/hostname: node-1}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: router, namespace: metallb-system}
spec:
  myASN: 64512
  peerASN: 64513
  peerAddress: 203.0.113.1
  bfdProfile: fast
  passwordSecret: {name: md5, namespace: metallb-system}
  vrf: red
---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: fast, namespace: metallb-system}
spec: {receiveInterval: 50, transmitInterval: 50, echoMode: false}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: bgp, namespace: metallb-system}
spec: {ipAddressPools: [production], communities: [edge], localPref: 50}
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: site, namespace: metallb-system}
spec:
  communities: [{name: edge, value: "64512:7"}]
---
apiVersion: v1
kind: Secret
metadata: {name: other, namespace: metallb-system}
"#;

    #[test]
    fn pools_and_advertisements_carry_over_field_for_field_and_the_rest_is_reported() {
        let m = migrate(docs(METALLB), "ferrolb-system");
        assert_eq!(m.objects.len(), 6);
        let pool = &m.objects[0];
        assert_eq!(pool["apiVersion"], "ferrolb.io/v1beta1");
        assert_eq!(
            pool["metadata"],
            json!({"name": "production", "namespace": "ferrolb-system", "labels": {"tier": "prod"}})
        );
        assert_eq!(pool["spec"]["addresses"], json!(["198.51.100.0/24", "fd42:f1b::100-fd42:f1b::1ff"]));
        assert_eq!(pool["spec"]["autoAssign"], false);
        assert_eq!(pool["spec"]["serviceAllocation"]["priority"], 50);
        assert!(pool.get("status").is_none());
        let adv = &m.objects[1];
        assert_eq!(adv["spec"]["nodeSelectors"][0]["matchLabels"]["kubernetes.io/hostname"], "node-1");
        assert_eq!(adv["spec"]["interfaces"], json!(["eth0"]));
        // The BGP objects carry over too; the peer in v1beta2, its Secret in ferrolb's namespace.
        let peer = &m.objects[2];
        assert_eq!((peer["apiVersion"].as_str(), peer["kind"].as_str()), (Some("ferrolb.io/v1beta2"), Some("BGPPeer")));
        assert_eq!(peer["spec"]["bfdProfile"], "fast");
        assert_eq!(peer["spec"]["passwordSecret"], json!({"name": "md5"}));
        assert_eq!(m.objects[3]["spec"]["receiveInterval"], 50);
        assert_eq!(m.objects[4]["spec"]["localPref"], 50);
        assert_eq!(m.objects[5]["spec"]["communities"][0]["value"], "64512:7");
        for o in &m.objects[2..] {
            let parsed = match o["kind"].as_str().unwrap() {
                "BGPPeer" => serde_json::from_value::<ferrolb_crds::BGPPeer>(o.clone()).map(|_| ()),
                "BFDProfile" => serde_json::from_value::<ferrolb_crds::BFDProfile>(o.clone()).map(|_| ()),
                "BGPAdvertisement" => serde_json::from_value::<ferrolb_crds::BGPAdvertisement>(o.clone()).map(|_| ()),
                _ => serde_json::from_value::<ferrolb_crds::Community>(o.clone()).map(|_| ()),
            };
            assert!(parsed.is_ok(), "{o}");
        }
        assert_eq!(
            m.report,
            [
                "IPAddressPool metallb-system/production: spec.someFutureField: not carried over: ferrolb has no such field",
                "BGPPeer metallb-system/router: spec.vrf: not carried over: ferrolb has no such field",
                "BGPPeer metallb-system/router: spec.passwordSecret: copy Secret md5 into namespace ferrolb-system (the \
                 speakers read Secrets of ferrolb's namespace only)",
                "Secret metallb-system/other: skipped: not a MetalLB object (v1)",
            ]
        );
    }

    #[test]
    fn a_kubectl_list_and_the_legacy_configmap_migrate_too() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config", "namespace": "metallb-system"},
             "data": {"config": "address-pools:\n- name: default\n  protocol: layer2\n  addresses: [198.51.100.10-198.51.100.20]\n  avoid-buggy-ips: true\n- name: edge\n  protocol: bgp\n  addresses: [203.0.113.0/28]\npeers:\n- peer-address: 203.0.113.1\n  peer-asn: 64513\n  my-asn: 64512\n"}}
        ]});
        let m = migrate(vec![list], "lb");
        let kinds: Vec<(String, String)> = m
            .objects
            .iter()
            .map(|o| (o["kind"].as_str().unwrap().into(), o["metadata"]["name"].as_str().unwrap().into()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("IPAddressPool".into(), "default".into()),
                ("L2Advertisement".into(), "default".into()),
                ("IPAddressPool".into(), "edge".into())
            ]
        );
        assert_eq!(m.objects[0]["spec"]["avoidBuggyIPs"], true);
        assert_eq!(m.report.len(), 2, "{:?}", m.report);
        assert!(m.report[0].contains("address-pools[1]: the pool is migrated, not its BGP announcement"));
        assert!(
            m.report[1]
                .ends_with("data.config peers: not migrated: write BGPPeers and Communities for them (docs/bgp.md)")
        );
    }

    #[test]
    fn what_ferrolb_would_refuse_is_said_and_unreadable_specs_are_skipped() {
        let yaml = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: a}
spec: {addresses: [198.51.100.0/24]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: b}
spec: {addresses: [198.51.100.128/25]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: c}
spec: {addresses: "not a list"}
"#;
        let m = migrate(docs(yaml), "lb");
        assert_eq!(m.objects.len(), 2);
        assert!(
            m.report.iter().any(|r| r.starts_with("IPAddressPool -/c: not migrated: spec cannot be read")),
            "{:?}",
            m.report
        );
        assert!(
            m.report.iter().any(|r| r.contains("overlaps") && r.contains("ferrolb would refuse it")),
            "{:?}",
            m.report
        );
    }
}
