//! metallb compat: the controller reads MetalLB's `metallb.io` objects (the CRDs and
//! objects a cluster running MetalLB has, written from MetalLB's API reference) with
//! its own, keeps the IPs MetalLB assigned, writes MetalLB's pool annotation too,
//! lets a ferrolb object of the same name win, and names every MetalLB field it
//! cannot honour in a Warning Event on the MetalLB object.

mod common;

use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde::Deserialize;
use serde_json::json;

const METALLB_NS: &str = "metallb-system";

/// MetalLB's CRDs, installed as its chart would have.
async fn install_metallb_crds(c: &Cluster) {
    let api: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    let yaml = include_str!("../../e2e/fixtures/metallb/crds.yaml");
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let crd = CustomResourceDefinition::deserialize(doc).unwrap();
        api.create(&PostParams::default(), &crd).await.unwrap();
    }
}

async fn metallb_object(c: &Cluster, version: &str, kind: &str, name: &str, spec: serde_json::Value) {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("metallb.io", version, kind));
    let api: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), METALLB_NS, &ar);
    let mut o = DynamicObject::new(name, &ar);
    o.data = json!({"spec": spec});
    api.create(&PostParams::default(), &o).await.unwrap();
}

/// A Service as MetalLB's controller left it: its IP in status, its pool annotated.
async fn assigned_by_metallb(c: &Cluster, name: &str, ip: &str, pool: &str) {
    c.service(svc(name)).await;
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(c.client.clone(), "default");
    let pp = PatchParams::apply("metallb-controller");
    let meta = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name,
        "annotations": {"metallb.io/ip-allocated-from-pool": pool}}});
    api.patch(name, &pp, &Patch::Apply(meta)).await.unwrap();
    let status = json!({"apiVersion": "v1", "kind": "Service", "status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}});
    api.patch_status(name, &pp, &Patch::Apply(status)).await.unwrap();
}

#[tokio::test]
async fn metallb_s_pools_keep_their_services_ips_and_what_cannot_be_honoured_is_named() {
    let c = Cluster::new().await;
    c.namespace(METALLB_NS, json!({})).await;
    install_metallb_crds(&c).await;
    metallb_object(&c, "v1beta1", "IPAddressPool", "production", json!({"addresses": ["198.51.100.0/28"]})).await;
    metallb_object(&c, "v1beta1", "IPAddressPool", "lab", json!({"addresses": ["203.0.113.0/28"]})).await;
    metallb_object(&c, "v1beta1", "L2Advertisement", "l2", json!({"ipAddressPools": ["production"]})).await;
    metallb_object(
        &c,
        "v1beta2",
        "BGPPeer",
        "router",
        json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "203.0.113.1", "vrf": "red"}),
    )
    .await;
    // The operator has moved `lab` over already: ferrolb's copy, with other addresses, wins.
    c.pool("lab", json!({"addresses": ["203.0.113.64/28"]})).await;
    assigned_by_metallb(&c, "web", "198.51.100.9", "production").await;
    c.service(svc("lab").annotation("metallb.io/address-pool", "lab")).await;

    let _ctl = c.start_compat(None, false, "compat", Some(METALLB_NS));
    let web = c.until("default", "web", "adopted", |s| condition(s, "ferrolb.io/Allocated").is_some()).await;
    assert_eq!(ips(&web), ["198.51.100.9"], "the IP MetalLB assigned is kept");
    let (status, reason, message) = condition(&web, "ferrolb.io/Allocated").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "IPAllocated"), "{message}");
    let web = c
        .until("default", "web", "both annotations", |s| {
            s.annotations().get("ferrolb.io/ip-allocated-from-pool").is_some()
        })
        .await;
    for key in ["ferrolb.io/ip-allocated-from-pool", "metallb.io/ip-allocated-from-pool"] {
        assert_eq!(web.annotations().get(key).map(String::as_str), Some("production"), "{key}");
    }
    let lab = c.until("default", "lab", "an IP", |s| !ips(s).is_empty()).await;
    assert_eq!(ips(&lab), ["203.0.113.64"], "ferrolb's pool of the same name wins");

    let note = c.until_event(METALLB_NS, "router", "MetalLBNotHonoured").await;
    assert_eq!(note, "spec.vrf: ignored: ferrolb has no such field");
    let note = c.until_event(METALLB_NS, "lab", "MetalLBNotHonoured").await;
    assert_eq!(note, "not used: ferrolb.io IPAddressPool ferrolb-system/lab has its name and takes precedence");

    // One ferrolb refuses is said on it, naming the field; the rest keeps working.
    metallb_object(&c, "v1beta1", "IPAddressPool", "typo", json!({"addresses": ["198.51.100.300/32"]})).await;
    let note = c.until_event(METALLB_NS, "typo", "MetalLBNotHonoured").await;
    assert!(note.starts_with("not used: IPAddressPool typo: spec.addresses[0] \"198.51.100.300/32\""), "{note}");

    // A MetalLB pool created now serves at once, as MetalLB's would.
    metallb_object(
        &c,
        "v1beta1",
        "IPAddressPool",
        "late",
        json!({"addresses": ["198.51.100.64/30"], "autoAssign": false}),
    )
    .await;
    c.service(svc("late").annotation("metallb.io/address-pool", "late")).await;
    c.until_ips("default", "late", &["198.51.100.64"]).await;
}

#[tokio::test]
async fn without_compat_metallb_s_objects_are_not_read_and_its_ips_are_reported_not_renumbered() {
    let c = Cluster::new().await;
    c.namespace(METALLB_NS, json!({})).await;
    install_metallb_crds(&c).await;
    metallb_object(&c, "v1beta1", "IPAddressPool", "production", json!({"addresses": ["198.51.100.0/28"]})).await;
    assigned_by_metallb(&c, "web", "198.51.100.9", "production").await;
    let _ctl = c.start(None, false, "plain");
    let web = c.until("default", "web", "reported", |s| condition(s, "ferrolb.io/Allocated").is_some()).await;
    let (status, reason, _) = condition(&web, "ferrolb.io/Allocated").unwrap();
    assert_eq!((status.as_str(), reason.as_str(), ips(&web)), ("False", "IPOutsidePools", vec!["198.51.100.9".into()]));
    assert!(web.annotations().get("ferrolb.io/ip-allocated-from-pool").is_none());
}
