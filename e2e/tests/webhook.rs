//! The validating admission webhook as an operator meets it: ferrolb installed by its
//! chart, the controller Pods serving the webhook with a certificate they made, the
//! API server calling it through the webhook Service, and real kubectl printing the
//! denials and warnings. Runs as root.

use std::time::Duration;

use ferrolb_crds::API_VERSION;
use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::sandbox::{NS, Options};
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const CONFIGURATION: &str = "ferrolb-validating-webhook";
const SECRET: &str = "ferrolb-webhook-cert";

fn pool(name: &str, addresses: &[&str]) -> Value {
    json!({"apiVersion": API_VERSION, "kind": "IPAddressPool", "metadata": {"name": name, "namespace": NS},
        "spec": {"addresses": addresses}})
}

fn advertisement(name: &str, spec: Value) -> Value {
    json!({"apiVersion": API_VERSION, "kind": "L2Advertisement", "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

/// `kubectl apply` of `obj`: (succeeded, kubectl's error output).
fn apply(h: &Harness, obj: &Value) -> (bool, String) {
    ferrolb_e2e::chart::apply_reporting(&h.sb().state.kubeconfig, &obj.to_string()).expect("kubectl runs")
}

fn refused(h: &Harness, obj: &Value, webhook: &str) -> String {
    let (ok, err) = apply(h, obj);
    assert!(!ok, "admitted: {obj}");
    let prefix = format!("admission webhook \"{webhook}\" denied the request: ");
    eprintln!("kubectl: {}", err.trim());
    let at = err.find(&prefix).unwrap_or_else(|| panic!("not a webhook denial: {err}"));
    err[at + prefix.len()..].trim().to_string()
}

fn exists(h: &Harness, plural: &str, name: &str) -> bool {
    let st = &h.sb().state;
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &st.kubeconfig)
        .args(["get", "-n", NS, plural, name, "-o", "name"])
        .output()
        .unwrap();
    out.status.success()
}

/// The `caBundle` of every webhook, and the Secret's `ca.crt`.
fn bundles(h: &Harness) -> (Vec<Vec<u8>>, Vec<u8>) {
    let c = h.sb().client.clone();
    let cfg = h.rt.block_on(Api::<ValidatingWebhookConfiguration>::all(c.clone()).get(CONFIGURATION)).unwrap();
    let bundles =
        cfg.webhooks.unwrap_or_default().into_iter().filter_map(|w| w.client_config.ca_bundle).map(|b| b.0).collect();
    let secret = h.rt.block_on(Api::<Secret>::namespaced(c, NS).get(SECRET)).unwrap();
    let ca = secret.data.unwrap_or_default().get("ca.crt").map(|b| b.0.clone()).unwrap_or_default();
    (bundles, ca)
}

#[test]
fn kubectl_apply_of_a_bad_object_is_refused_naming_the_field() {
    let h = Harness::up(&Options { nodes: 1, ..Options::default() });
    // The controller made the certificate and gave the API server its CA.
    let (b, ca) = bundles(&h);
    assert_eq!(b.len(), 4, "every webhook carries a caBundle");
    assert!(b.iter().all(|x| *x == ca) && String::from_utf8_lossy(&ca).starts_with("-----BEGIN CERTIFICATE-----"));

    let (ok, err) = apply(&h, &pool("prod", &["198.51.100.240/28"]));
    assert!(ok, "{err}");
    // A newcomer overlapping prod, named to sort first: refused at the door, not stored.
    let why = refused(&h, &pool("aaa", &["198.51.100.224/27"]), "ipaddresspool.validation.ferrolb.io");
    assert!(
        why.starts_with(
            "IPAddressPool aaa: spec.addresses[0] 198.51.100.224-198.51.100.255 overlaps IPAddressPool prod"
        ),
        "{why}"
    );
    assert!(!exists(&h, "ipaddresspools", "aaa"));
    // An edit of prod into bad syntax: refused, prod unchanged.
    let why = refused(&h, &pool("prod", &["198.51.100.250-198.51.100.241"]), "ipaddresspool.validation.ferrolb.io");
    assert!(why.starts_with("IPAddressPool prod: spec.addresses[0]"), "{why}");
    let api: Api<ferrolb_crds::IPAddressPool> = Api::namespaced(h.sb().client.clone(), NS);
    assert_eq!(h.rt.block_on(api.get("prod")).unwrap().spec.addresses, ["198.51.100.240/28"]);

    // Advertisements: a malformed selector is refused; a pool that does not exist is a warning.
    let bogus = advertisement(
        "l2",
        json!({"nodeSelectors": [{"matchExpressions": [{"key": "zone", "operator": "Bogus", "values": ["a"]}]}]}),
    );
    let why = refused(&h, &bogus, "l2advertisement.validation.ferrolb.io");
    assert!(why.contains("spec.nodeSelectors[0].matchExpressions[0].operator"), "{why}");
    let bad_key = advertisement("l2", json!({"nodeSelectors": [{"matchLabels": {"bad key": "x"}}]}));
    let why = refused(&h, &bad_key, "l2advertisement.validation.ferrolb.io");
    assert!(why.contains("spec.nodeSelectors[0].matchLabels: invalid label key \"bad key\""), "{why}");
    let (ok, err) = apply(&h, &advertisement("l2", json!({"ipAddressPools": ["prod", "later"]})));
    assert!(ok, "{err}");
    assert!(
        err.contains(
            "Warning: spec.ipAddressPools[1]: IPAddressPool \"later\" does not exist in namespace ferrolb-system"
        ),
        "{err}"
    );

    // BGP objects: a hold time BGP forbids, an alias no Community defines, an
    // aggregation that would claim addresses outside prod.
    let peer = json!({"apiVersion": "ferrolb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "tor", "namespace": NS},
        "spec": {"myASN": 64513, "peerASN": 64512, "peerAddress": "198.51.100.1", "holdTime": "2s"}});
    let why = refused(&h, &peer, "bgppeer.validation.ferrolb.io");
    assert!(why.starts_with("BGPPeer tor: spec.holdTime 2s: must be 0 or at least 3s"), "{why}");
    let bgp_adv = |spec: Value| json!({"apiVersion": API_VERSION, "kind": "BGPAdvertisement", "metadata": {"name": "b", "namespace": NS}, "spec": spec});
    let why = refused(&h, &bgp_adv(json!({"communities": ["edge"]})), "bgpadvertisement.validation.ferrolb.io");
    assert!(why.contains("spec.communities[0] \"edge\": no Community defines this alias"), "{why}");
    let why = refused(
        &h,
        &bgp_adv(json!({"ipAddressPools": ["prod"], "aggregationLength": 24})),
        "bgpadvertisement.validation.ferrolb.io",
    );
    assert!(why.contains("spec.aggregationLength 24: IPAddressPool prod range 198.51.100.240-198.51.100.255"), "{why}");
    let (ok, err) = apply(&h, &bgp_adv(json!({"ipAddressPools": ["prod"], "aggregationLength": 28})));
    assert!(ok, "{err}");
}

/// A certificate near its end is renewed by a controller replica at start: the new CA
/// goes first in `caBundle`, the old one stays after it, and writes go on being
/// admitted by both replicas meanwhile.
#[test]
fn the_controller_renews_the_webhook_certificate() {
    let mut h = Harness::up(&Options { nodes: 1, ..Options::default() });
    let (_, old_ca) = bundles(&h);
    let secrets: Api<Secret> = Api::namespaced(h.sb().client.clone(), NS);
    let soon = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let patch = json!({"metadata": {"annotations": {"ferrolb.io/not-after": soon}}});
    h.rt.block_on(secrets.patch(SECRET, &PatchParams::default(), &Patch::Merge(&patch))).unwrap();
    let (rt, sb) = h.parts();
    rt.block_on(sb.delete_pod("controller")).unwrap();
    let (b, ca) = eventually("a new certificate and caBundle", Duration::from_secs(60), || {
        let (b, ca) = bundles(&h);
        (ca != old_ca && b.iter().all(|x| *x == ca)).then_some((b, ca))
    });
    assert_eq!(b.len(), 4);
    let text = String::from_utf8_lossy(&ca).to_string();
    assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2, "new CA, then the previous one");
    assert!(text.ends_with(String::from_utf8_lossy(&old_ca).as_ref()), "the previous CA is kept after the new one");
    // Both replicas Ready (the webhook Service's endpoints), then each write may reach
    // either: the new certificate and the one the other replica still serves are trusted.
    let controllers: Vec<String> =
        h.sb().state.pods.iter().filter(|(k, _)| k.starts_with("controller")).map(|(_, p)| p.clone()).collect();
    assert_eq!(controllers.len(), 2, "{controllers:?}");
    for pod in &controllers {
        h.rt.block_on(h.sb().until_ready(pod)).unwrap();
    }
    for i in 0..6 {
        let (ok, err) = apply(&h, &pool(&format!("p{i}"), &[&format!("203.0.113.{}/32", 10 + i)]));
        assert!(ok, "write {i}: {err}");
    }
}
