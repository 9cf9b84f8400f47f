//! Safe configuration, driven as a user would (kubectl apply against the sandbox,
//! ferrolb installed by its chart): no Service is renumbered by an object that
//! appeared or changed, and Services that share an IP are reconsidered whenever
//! the conditions for sharing change. Runs as root.

use std::time::Duration;

use ferrolb_crds::annotations::ALLOW_SHARED_IP;
use ferrolb_crds::{API_VERSION, IPAddressPool};
use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::sandbox::NS;
use ferrolb_e2e::wait::eventually;
use ferrolb_model::testing::{self, SvcBuilder};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use serde_json::{Value, json};

/// The sandbox, with the helpers below.
struct Env(Harness);

impl std::ops::Deref for Env {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.0
    }
}

fn env() -> Env {
    env_with(serde_json::Value::Null)
}

/// A one-node sandbox installed with chart `values`.
fn env_with(values: Value) -> Env {
    Env(Harness::up(&ferrolb_e2e::sandbox::Options { nodes: 1, values, ..Default::default() }))
}

impl Env {
    fn apply(&self, object: Value) {
        self.sb().kubectl_apply(&object.to_string()).expect("kubectl apply");
    }

    fn pool(&self, name: &str, addresses: &[&str]) {
        self.pool_spec(name, json!({"addresses": addresses}));
    }

    fn pool_spec(&self, name: &str, spec: Value) {
        self.apply(json!({"apiVersion": API_VERSION, "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}));
    }

    fn svc(&self, svc: SvcBuilder) {
        self.apply(svc.json());
    }

    fn ips(&self, svc: &str) -> Vec<String> {
        let api = Api::<Service>::namespaced(self.sb().client.clone(), "default");
        let s = self.rt.block_on(api.get_opt(svc)).unwrap();
        s.map(|s| ferrolb_model::ingress_ips(&s).iter().map(|i| i.to_string()).collect()).unwrap_or_default()
    }

    /// Wait until `svc` shows exactly `want` (empty: no IP).
    fn until_ips(&self, svc: &str, want: &[&str]) {
        eventually(&format!("{svc} shows {want:?}"), Duration::from_secs(20), || (self.ips(svc) == want).then_some(()));
    }

    fn pool_object(&self, name: &str) -> IPAddressPool {
        let api = Api::<IPAddressPool>::namespaced(self.sb().client.clone(), NS);
        self.rt.block_on(api.get(name)).unwrap()
    }

    fn valid(&self, pool: &str) -> Option<Condition> {
        let p = self.pool_object(pool);
        p.status?.conditions.into_iter().find(|c| c.type_ == "Valid")
    }

    /// Wait until `pool`'s `Valid` condition has `status` and `reason`; the condition.
    fn until_valid(&self, pool: &str, status: &str, reason: &str) -> Condition {
        eventually(&format!("{pool} Valid={status} ({reason})"), Duration::from_secs(20), || {
            self.valid(pool).filter(|c| c.status == status && c.reason == reason)
        })
    }

    fn stale(&self, pool: &str) -> f64 {
        self.sb().state.controller_metric("ferrolb_config_stale", Some(("pool", pool)))
    }

    fn answered(&self, ip: &str) -> bool {
        let st = &self.sb().state;
        st.answering_mac(ip).and_then(|mac| st.node_of_mac(&mac)).is_some()
    }
}

fn svc(name: &str) -> SvcBuilder {
    testing::svc(name).target_port(8080)
}

/// Issue case 1: a new pool overlapping the in-use pool `prod` (and named to sort
/// first), then an edit of `prod` into an overlap: no Service moves, `prod` keeps
/// serving (also across a controller restart), allocates nothing new while its spec
/// is invalid, and the stale gauge says so.
///
/// The admission webhook refuses both writes (`webhook.rs`); here it is off, as when it
/// is bypassed or was down, to prove the run-time rules hold on their own.
#[test]
fn no_object_a_user_did_not_delete_renumbers_a_service() {
    let mut e = env_with(json!({"webhook": {"enabled": false}}));
    // prod comes first for new Services (priority), so "nothing new from it" shows.
    let prod = |addresses: &[&str]| json!({"addresses": addresses, "serviceAllocation": {"priority": 1}});
    e.pool_spec("prod", prod(&["198.51.100.240/29"]));
    e.apply(json!({"apiVersion": API_VERSION, "kind": "L2Advertisement",
        "metadata": {"name": "all", "namespace": NS}, "spec": {}}));
    e.svc(svc("web"));
    e.until_ips("web", &["198.51.100.240"]);
    eventually("prod's served ranges are recorded", Duration::from_secs(20), || {
        let st = e.pool_object("prod").status?;
        (st.effective_addresses == ["198.51.100.240-198.51.100.247"]).then_some(())
    });

    // A newcomer whose name sorts first and which overlaps prod: it is the invalid one.
    e.pool("aaa", &["198.51.100.224/27"]);
    let c = e.until_valid("aaa", "False", "Overlap");
    assert!(c.message.contains("spec.addresses[0] 198.51.100.224-198.51.100.255 overlaps IPAddressPool prod"), "{c:?}");
    assert_eq!(e.valid("prod").map(|c| c.status).as_deref(), Some("True"));
    assert_eq!(e.ips("web"), ["198.51.100.240"]);
    e.svc(svc("web2"));
    e.until_ips("web2", &["198.51.100.241"]);

    // prod edited to grow into another pool's served range: prod keeps its last valid ranges.
    e.pool("other", &["203.0.113.0/29"]);
    e.until_valid("other", "True", "PoolValid");
    eventually("other's served ranges are recorded", Duration::from_secs(20), || {
        (!e.pool_object("other").status?.effective_addresses.is_empty()).then_some(())
    });
    e.pool_spec("prod", prod(&["198.51.100.240/29", "203.0.113.4/30"]));
    let c = e.until_valid("prod", "False", "Overlap");
    assert!(c.message.contains("spec.addresses[1] 203.0.113.4-203.0.113.7 overlaps IPAddressPool other"), "{c:?}");
    assert!(c.message.contains("serving its last valid addresses (198.51.100.240-198.51.100.247)"), "{c:?}");
    assert_eq!(e.pool_object("prod").status.unwrap().effective_addresses, ["198.51.100.240-198.51.100.247"]);
    assert_eq!((e.ips("web"), e.ips("web2")), (vec!["198.51.100.240".into()], vec!["198.51.100.241".into()]));
    eventually("the stale gauge shows prod", Duration::from_secs(10), || (e.stale("prod") == 1.0).then_some(()));
    assert_eq!(e.stale("other"), 0.0);
    assert!(e.answered("198.51.100.240"), "the speakers keep announcing a stale pool's IPs");
    // Nothing new comes from it: a new Service gets other's first address.
    e.svc(svc("web3"));
    e.until_ips("web3", &["203.0.113.0"]);

    // A new controller Pod (`kubectl delete pod`) reads the served ranges back from the pool's status.
    let (rt, sb) = e.0.parts();
    rt.block_on(sb.delete_pod("controller")).unwrap();
    eventually("the new controller leads and sees prod stale", Duration::from_secs(30), || {
        let st = &e.sb().state;
        (st.controller_metric("ferrolb_controller_leader", None) == 1.0 && e.stale("prod") == 1.0).then_some(())
    });
    e.svc(svc("web4"));
    e.until_ips("web4", &["203.0.113.1"]);
    assert_eq!((e.ips("web"), e.ips("web2")), (vec!["198.51.100.240".into()], vec!["198.51.100.241".into()]));

    // Fixed: valid again, allocating again.
    e.pool_spec("prod", prod(&["198.51.100.240/29"]));
    e.until_valid("prod", "True", "PoolValid");
    eventually("the stale gauge clears", Duration::from_secs(10), || (e.stale("prod") == 0.0).then_some(()));
    e.svc(svc("web5"));
    e.until_ips("web5", &["198.51.100.242"]);
    assert_eq!(e.ips("web"), ["198.51.100.240"]);
}

/// A Service of the sharing sequence: key `k`, `port`, selecting `app`.
fn sharer(name: &str, port: i32, app: &str, local: bool) -> SvcBuilder {
    let s = testing::svc(name).ports(&[(port, "TCP")]).selector(&[("app", app)]).annotation(ALLOW_SHARED_IP, "k");
    if local { s.local() } else { s }
}

/// Issue case 2, MetalLB's "should reconsider services when sharing the ip and
/// conditions change": one address, two Services with one sharing key; every change
/// of policy or selector on either side re-evaluates the other.
#[test]
fn sharing_is_reconsidered_when_conditions_change() {
    let e = env();
    e.pool("one", &["198.51.100.250/32"]);
    e.apply(json!({"apiVersion": API_VERSION, "kind": "L2Advertisement",
        "metadata": {"name": "all", "namespace": NS}, "spec": {}}));
    let ip = ["198.51.100.250"];
    e.svc(sharer("first", 80, "x", false));
    e.until_ips("first", &ip);
    e.svc(sharer("second", 81, "x", false));
    e.until_ips("second", &ip);
    // The second turns Local: incompatible, and the only address is taken.
    e.svc(sharer("second", 81, "x", true));
    e.until_ips("second", &[]);
    assert_eq!(e.ips("first"), ip);
    // The first turns Local too: compatible again, the waiting second shares.
    e.svc(sharer("first", 80, "x", true));
    e.until_ips("second", &ip);
    assert_eq!(e.ips("first"), ip);
    // The first's selector changes: Local with different selectors cannot share.
    e.svc(sharer("first", 80, "y", true));
    e.until_ips("first", &[]);
    assert_eq!(e.ips("second"), ip);
    // The second's selector aligned: both share again.
    e.svc(sharer("second", 81, "y", true));
    e.until_ips("first", &ip);
    assert_eq!(e.ips("second"), ip);
}

/// A single-node cluster whose only node carries the exclusion label (kind, kubeadm
/// single-node setups): nothing is announced unless the speakers are installed with
/// `speaker.ignoreExcludeLB`, with which the node answers.
#[test]
fn ignore_exclude_lb_lets_an_excluded_only_node_announce() {
    let label = |e: &Env| {
        let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(e.sb().client.clone());
        let patch = json!({"metadata": {"labels": {"node.kubernetes.io/exclude-from-external-load-balancers": ""}}});
        e.rt.block_on(nodes.patch("node-1", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)))
            .unwrap();
    };
    let setup = |e: &Env| {
        label(e);
        e.pool("p", &["198.51.100.240/32"]);
        e.apply(json!({"apiVersion": API_VERSION, "kind": "L2Advertisement",
            "metadata": {"name": "all", "namespace": NS}, "spec": {}}));
        e.svc(svc("web"));
        e.until_ips("web", &["198.51.100.240"]);
    };
    let honoured = env();
    setup(&honoured);
    // Witness: the speaker has planned the IP and counts no usable node.
    eventually("the speaker planned without the excluded node", Duration::from_secs(20), || {
        let st = &honoured.sb().state;
        let planned = st.speaker_metric("node-1", "ferrolb_speaker_planned_ips");
        (planned >= 1.0 && st.speaker_metric("node-1", "ferrolb_speaker_usable_nodes") == 0.0).then_some(())
    });
    assert!(!honoured.answered("198.51.100.240"), "an excluded node does not announce");
    drop(honoured);

    let ignored = env_with(json!({"speaker": {"ignoreExcludeLB": true}}));
    setup(&ignored);
    eventually("the excluded node answers", Duration::from_secs(20), || {
        ignored.answered("198.51.100.240").then_some(())
    });
}
