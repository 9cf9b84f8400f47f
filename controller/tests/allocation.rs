//! The controller's real reconcile loop against the in-process emulator:
//! MetalLB's allocation e2e scenarios, ported.

mod common;

use common::*;
use kube::api::Api;
use serde_json::json;

#[tokio::test]
async fn service_gets_an_ip_annotation_conditions_and_event() {
    let c = Cluster::new().await;
    c.pool("public", json!({"addresses": ["198.51.100.10-198.51.100.20"]})).await;
    c.advertise_all().await;
    let _ctl = c.start(None, false, "solo");
    c.service(svc("web")).await;
    c.until_ips("default", "web", &["198.51.100.10"]).await;
    let s = c
        .until("default", "web", "pool annotation", |s| {
            s.annotations().get("ferrolb.io/ip-allocated-from-pool").map(String::as_str) == Some("public")
        })
        .await;
    let allocated = condition(&s, "ferrolb.io/Allocated").unwrap();
    assert_eq!((allocated.0.as_str(), allocated.1.as_str()), ("True", "IPAllocated"));
    // Announced only once a speaker says so.
    assert_eq!(condition(&s, "ferrolb.io/Announced").unwrap().0, "False");
    c.node("n1").await;
    c.speaker_lease("n1").await;
    c.l2_status("default", "web", "n1").await;
    assert_eq!(c.until_announced("default", "web", "True", "Announced").await, "announced by n1");
    let ingress = s.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert_eq!(ingress[0].ip_mode.as_deref(), Some("VIP"));
    let note = c.until_event("default", "web", "IPAllocated").await;
    assert!(note.contains("198.51.100.10") && note.contains("public"), "{note}");
    let p = c.pool_status("public", |p| p.status.as_ref().is_some_and(|s| s.assigned_ipv4 == 1)).await;
    let st = p.status.unwrap();
    assert_eq!((st.assigned_ipv4, st.available_ipv4, st.available_ipv6), (1, 10, 0));
    assert_eq!(st.conditions[0].type_, "Valid");
    assert_eq!(st.conditions[0].status, "True");
}

use kube::ResourceExt;

#[tokio::test]
async fn freed_ip_goes_to_the_pending_service_on_type_change_and_on_delete() {
    let c = Cluster::new().await;
    c.pool("one", json!({"addresses": ["198.51.100.7/32"]})).await;
    let ctl = c.start(None, false, "solo");
    c.service(svc("a")).await;
    c.until_ips("default", "a", &["198.51.100.7"]).await;
    c.service(svc("b")).await;
    let b = c.until_failed("default", "b", "PoolExhausted").await;
    assert!(condition(&b, "ferrolb.io/Allocated").unwrap().2.contains("no free IPv4 address in IPAddressPool(s) one"));
    assert_eq!(ctl.state.metrics.pending.get(), 1, "ferrolb_controller_services_pending counts b");
    // a stops being a LoadBalancer: its status and annotation are cleared, b gets the IP.
    c.patch_service(
        "default",
        "a",
        json!({"spec": {"type": "ClusterIP", "externalTrafficPolicy": null, "allocateLoadBalancerNodePorts": null}}),
    )
    .await;
    c.until_ips("default", "b", &["198.51.100.7"]).await;
    let a = c
        .until("default", "a", "status cleared", |s| {
            ips(s).is_empty() && condition(s, "ferrolb.io/Allocated").is_none()
        })
        .await;
    assert!(a.annotations().get("ferrolb.io/ip-allocated-from-pool").is_none());
    // Deleting b frees it for c.
    c.service(svc("c")).await;
    c.until_failed("default", "c", "PoolExhausted").await;
    c.delete_service("default", "b").await;
    c.until_ips("default", "c", &["198.51.100.7"]).await;
}

#[tokio::test]
async fn pools_are_selected_by_namespace_labels_service_labels_and_priority() {
    let c = Cluster::new().await;
    c.namespace("team-a", json!({})).await;
    c.namespace("prod", json!({"env": "prod"})).await;
    c.pool(
        "by-ns",
        json!({"addresses": ["198.51.100.0/28"], "serviceAllocation": {"priority": 10, "namespaces": ["team-a"]}}),
    )
    .await;
    c.pool(
        "by-ns-label",
        json!({"addresses": ["198.51.100.16/28"],
        "serviceAllocation": {"priority": 10, "namespaceSelectors": [{"matchLabels": {"env": "prod"}}]}}),
    )
    .await;
    c.pool(
        "by-svc-label",
        json!({"addresses": ["198.51.100.32/28"],
        "serviceAllocation": {"priority": 10, "serviceSelectors": [{"matchLabels": {"lb": "edge"}}]}}),
    )
    .await;
    c.pool("z-high", json!({"addresses": ["203.0.113.0/28"], "serviceAllocation": {"priority": 1}})).await;
    c.pool("a-default", json!({"addresses": ["203.0.113.16/28"]})).await;
    let _ctl = c.start(None, false, "solo");
    let pool = |s: &k8s_openapi::api::core::v1::Service| {
        s.annotations().get("ferrolb.io/ip-allocated-from-pool").cloned().unwrap_or_default()
    };
    // Priority 1 beats 10 and the unprioritised pool for everyone it admits.
    c.service(svc("s4")).await;
    c.until("default", "s4", "pool z-high", move |s| pool(s) == "z-high").await;
    // Once z-high admits nobody, s4 moves to the unrestricted pool, and the restricted
    // pools serve exactly the Services they admit.
    c.patch_pool("z-high", json!({"spec": {"serviceAllocation": {"priority": 1, "namespaces": ["nobody"]}}})).await;
    c.until("default", "s4", "pool a-default", move |s| pool(s) == "a-default").await;
    c.service(svc("s1").ns("team-a")).await;
    c.service(svc("s2").ns("prod")).await;
    c.service(svc("s3").label("lb", "edge")).await;
    let s1 = c.until("team-a", "s1", "pool by-ns", move |s| pool(s) == "by-ns").await;
    assert_eq!(ips(&s1), ["198.51.100.0"]);
    c.until("prod", "s2", "pool by-ns-label", move |s| pool(s) == "by-ns-label").await;
    c.until("default", "s3", "pool by-svc-label", move |s| pool(s) == "by-svc-label").await;
}

#[tokio::test]
async fn pool_annotation_works_with_auto_assign_true_and_false() {
    let c = Cluster::new().await;
    c.pool("auto", json!({"addresses": ["198.51.100.0/28"]})).await;
    c.pool("manual", json!({"addresses": ["203.0.113.0/28"], "autoAssign": false})).await;
    let _ctl = c.start(None, false, "solo");
    c.service(svc("plain")).await;
    c.until_ips("default", "plain", &["198.51.100.0"]).await;
    c.service(svc("wants-manual").annotation("metallb.universe.tf/address-pool", "manual")).await;
    c.until_ips("default", "wants-manual", &["203.0.113.0"]).await;
    c.service(svc("wants-auto").annotation("ferrolb.io/address-pool", "auto")).await;
    c.until_ips("default", "wants-auto", &["198.51.100.1"]).await;
    c.service(svc("wants-missing").annotation("ferrolb.io/address-pool", "nope")).await;
    let s = c.until_failed("default", "wants-missing", "UnknownPool").await;
    assert!(condition(&s, "ferrolb.io/Allocated").unwrap().2.contains("IPAddressPool nope does not exist"));
}

#[tokio::test]
async fn requested_ip_is_honoured_and_bad_requests_say_why() {
    let c = Cluster::new().await;
    c.pool("p", json!({"addresses": ["198.51.100.0/24"]})).await;
    let _ctl = c.start(None, false, "solo");
    c.service(svc("by-annotation").annotation("metallb.io/loadBalancerIPs", "198.51.100.42")).await;
    c.until_ips("default", "by-annotation", &["198.51.100.42"]).await;
    c.service(svc("by-field").load_balancer_ip("198.51.100.43")).await;
    c.until_ips("default", "by-field", &["198.51.100.43"]).await;
    c.service(svc("taken").annotation("ferrolb.io/loadBalancerIPs", "198.51.100.42")).await;
    c.until_failed("default", "taken", "RequestedIPInUse").await;
    c.service(svc("outside").annotation("ferrolb.io/loadBalancerIPs", "203.0.113.9")).await;
    c.until_failed("default", "outside", "RequestedIPOutsidePools").await;
    c.service(svc("garbage").annotation("ferrolb.io/loadBalancerIPs", "not-an-ip")).await;
    let g = c.until_failed("default", "garbage", "InvalidAnnotation").await;
    assert!(condition(&g, "ferrolb.io/Allocated").unwrap().2.contains("ferrolb.io/loadBalancerIPs \"not-an-ip\""));
    let note = c.until_event("default", "garbage", "AllocationFailed").await;
    assert!(note.contains("not-an-ip"), "{note}");
    c.service(svc("wrong-family").annotation("ferrolb.io/loadBalancerIPs", "fd42:f1b::1")).await;
    c.until_failed("default", "wrong-family", "InvalidRequest").await;
    // A 58 KB value: quoted, but the condition and the Event stay within what the API
    // server accepts.
    let huge = "x".repeat(58_000);
    c.service(svc("huge").annotation("ferrolb.io/loadBalancerIPs", &huge)).await;
    let h = c.until_failed("default", "huge", "InvalidAnnotation").await;
    let message = condition(&h, "ferrolb.io/Allocated").unwrap().2;
    assert!(message.len() <= 1024 && message.contains("xxxx"), "{} bytes", message.len());
    assert!(c.until_event("default", "huge", "AllocationFailed").await.len() <= 1024);
    // Nothing else was disturbed.
    assert_eq!(ips(&c.get_service("default", "by-annotation").await), ["198.51.100.42"]);
}

#[tokio::test]
async fn two_services_share_an_ip_until_one_becomes_local() {
    let c = Cluster::new().await;
    c.pool("p", json!({"addresses": ["198.51.100.0/24"]})).await;
    let _ctl = c.start(None, false, "solo");
    let shared = |name: &str| {
        svc(name).annotation("ferrolb.io/allow-shared-ip", "k").annotation("ferrolb.io/loadBalancerIPs", "198.51.100.9")
    };
    c.service(shared("http")).await;
    c.service(shared("dns").ports(&[(53, "UDP")])).await;
    c.until_ips("default", "http", &["198.51.100.9"]).await;
    c.until_ips("default", "dns", &["198.51.100.9"]).await;
    c.pool_status("p", |p| p.status.as_ref().is_some_and(|s| s.assigned_ipv4 == 1)).await;
    // dns becomes Local: no longer compatible; it loses the shared IP with an event.
    c.patch_service("default", "dns", json!({"spec": {"externalTrafficPolicy": "Local"}})).await;
    let d = c.until_failed("default", "dns", "RequestedIPInUse").await;
    assert!(condition(&d, "ferrolb.io/Allocated").unwrap().2.contains("externalTrafficPolicy differs"));
    assert_eq!(ips(&c.get_service("default", "http").await), ["198.51.100.9"]);
}

#[tokio::test]
async fn dual_stack_preferences() {
    let c = Cluster::new().await;
    c.pool("v4-only", json!({"addresses": ["198.51.100.0/28"], "serviceAllocation": {"priority": 1}})).await;
    let _ctl = c.start(None, false, "solo");
    c.service(svc("prefer").policy("PreferDualStack")).await;
    c.until_ips("default", "prefer", &["198.51.100.0"]).await;
    c.service(svc("require").policy("RequireDualStack")).await;
    c.until_failed("default", "require", "DualStackUnavailable").await;
    c.pool("dual", json!({"addresses": ["203.0.113.0/28", "fd42:f1b::/120"], "serviceAllocation": {"priority": 2}}))
        .await;
    c.until_ips("default", "require", &["203.0.113.0", "fd42:f1b::"]).await;
    c.service(svc("prefer-later").policy("PreferDualStack")).await;
    c.until_ips("default", "prefer-later", &["203.0.113.1", "fd42:f1b::1"]).await;
    // The first Service did not jump to the dual-stack pool.
    assert_eq!(ips(&c.get_service("default", "prefer").await), ["198.51.100.0"]);
}

#[tokio::test]
async fn deleting_pools_reallocates_or_empties_ingress() {
    let c = Cluster::new().await;
    c.pool("first", json!({"addresses": ["198.51.100.0/28"], "serviceAllocation": {"priority": 1}})).await;
    c.pool("second", json!({"addresses": ["203.0.113.0/28"], "serviceAllocation": {"priority": 2}})).await;
    let _ctl = c.start(None, false, "solo");
    c.service(svc("s")).await;
    c.until_ips("default", "s", &["198.51.100.0"]).await;
    c.delete_pool("first").await;
    c.until_ips("default", "s", &["203.0.113.0"]).await;
    c.until_event("default", "s", "IPRevoked").await;
    c.delete_pool("second").await;
    let s = c.until_failed("default", "s", "NoPoolMatches").await;
    assert!(ips(&s).is_empty());
}

#[tokio::test]
async fn shrinking_a_pool_moves_only_the_services_outside_it() {
    let c = Cluster::new().await;
    c.pool("p", json!({"addresses": ["198.51.100.0/30"]})).await;
    let _ctl = c.start(None, false, "solo");
    for s in ["a", "b", "c"] {
        c.service(svc(s)).await;
        c.until("default", s, "an IP", |s| !ips(s).is_empty()).await;
    }
    let c_ip = ips(&c.get_service("default", "c").await);
    assert_eq!(c_ip, ["198.51.100.2"]);
    c.patch_pool("p", json!({"spec": {"addresses": ["198.51.100.0/31", "198.51.100.3/32"]}})).await;
    c.until_ips("default", "c", &["198.51.100.3"]).await;
    assert_eq!(ips(&c.get_service("default", "a").await), ["198.51.100.0"]);
    assert_eq!(ips(&c.get_service("default", "b").await), ["198.51.100.1"]);
}

#[tokio::test]
async fn other_load_balancer_classes_are_never_touched() {
    let c = Cluster::new().await;
    c.pool("p", json!({"addresses": ["198.51.100.0/28"]})).await;
    let _ctl = c.start(None, false, "solo");
    let foreign = c.service(svc("foreign").class("other.io/lb")).await;
    c.service(svc("mine")).await;
    c.until_ips("default", "mine", &["198.51.100.0"]).await;
    let f = c.get_service("default", "foreign").await;
    assert_eq!(f.metadata.resource_version, foreign.metadata.resource_version, "not even its status was written");
    assert!(f.managed_fields().iter().all(|m| m.manager.as_deref() != Some("ferrolb-controller")));
    // With --lb-class, only that class is handled, and the two instances leave each other's
    // Services alone (separate field managers and leases).
    let classed = c.start(Some("other.io/lb"), false, "classed");
    let f = c.until("default", "foreign", "an IP from the classed instance", |s| !ips(s).is_empty()).await;
    assert!(f.managed_fields().iter().any(|m| m.manager.as_deref() == Some("ferrolb-controller-other.io-lb")));
    let mine = c.get_service("default", "mine").await;
    assert_eq!(ips(&mine), ["198.51.100.0"]);
    assert!(mine.managed_fields().iter().all(|m| m.manager.as_deref() != Some("ferrolb-controller-other.io-lb")));
    classed.stop().await;
}

#[tokio::test]
async fn invalid_pools_are_reported_and_the_rest_keep_working() {
    let c = Cluster::new().await;
    c.pool("good", json!({"addresses": ["198.51.100.0/28"]})).await;
    c.pool("overlapping", json!({"addresses": ["198.51.100.8/29"]})).await;
    let _ctl = c.start(None, false, "solo");
    let p = c
        .pool_status("overlapping", |p| {
            p.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.status == "False"))
        })
        .await;
    let cond = &p.status.unwrap().conditions[0];
    assert_eq!(cond.reason, "Overlap");
    assert!(
        cond.message.contains("spec.addresses[0]") && cond.message.contains("IPAddressPool good"),
        "{}",
        cond.message
    );
    c.until_event(NS, "overlapping", "InvalidPool").await;
    c.service(svc("s")).await;
    c.until_ips("default", "s", &["198.51.100.0"]).await;
}

#[tokio::test]
async fn bgp_advertisers_are_the_live_nodes_whose_speakers_report_it() {
    let c = Cluster::new().await;
    c.pool("p", json!({"addresses": ["198.51.100.0/28"]})).await;
    let adv: ferrolb_crds::BGPAdvertisement = serde_json::from_value(json!({"apiVersion": ferrolb_crds::API_VERSION,
        "kind": "BGPAdvertisement", "metadata": {"name": "all"}, "spec": {}}))
    .unwrap();
    Api::namespaced(c.client.clone(), NS).create(&kube::api::PostParams::default(), &adv).await.unwrap();
    for n in ["n1", "n2", "n3"] {
        c.node(n).await;
    }
    c.speaker_lease("n1").await;
    c.speaker_lease("n2").await;
    let _ctl = c.start(None, false, "solo");
    c.service(svc("s")).await;
    c.service(svc("other")).await;
    c.until_announced("default", "s", "False", "NotAnnounced").await;
    // Another Service's reports, and one from a node without a live speaker, do not count.
    c.bgp_status("default", "other", "n1").await;
    c.bgp_status("default", "s", "n3").await;
    c.bgp_status("default", "s", "n2").await;
    assert_eq!(c.until_announced("default", "s", "True", "Announced").await, "advertised over BGP by n2");
    c.bgp_status("default", "s", "n1").await;
    let s = c
        .until("default", "s", "both nodes", |s| {
            condition(s, "ferrolb.io/Announced").is_some_and(|c| c.2 == "advertised over BGP by n1, n2")
        })
        .await;
    assert_eq!(condition(&s, "ferrolb.io/Announced").unwrap().0, "True");
}

#[tokio::test]
async fn allocated_but_not_announced_is_said_loudly() {
    let c = Cluster::new().await;
    c.pool("p", json!({"addresses": ["198.51.100.0/28"]})).await;
    let _ctl = c.start(None, false, "solo");
    c.service(svc("s")).await;
    let s = c
        .until("default", "s", "Announced=False", |s| {
            condition(s, "ferrolb.io/Announced").is_some_and(|c| c.0 == "False")
        })
        .await;
    let (_, reason, msg) = condition(&s, "ferrolb.io/Announced").unwrap();
    assert_eq!(reason, "NoL2Advertisement");
    assert!(msg.contains("no L2Advertisement selects IPAddressPool p"), "{msg}");
    c.until_event("default", "s", "NotAnnounced").await;
    // Each cause in turn, as an operator fixes them.
    c.advertise_all().await;
    let msg = c.until_announced("default", "s", "False", "NoEligibleNode").await;
    assert_eq!(msg, "no node matches the nodeSelectors of L2Advertisement all");
    c.node("n1").await;
    let msg = c.until_announced("default", "s", "False", "NoLiveSpeaker").await;
    assert_eq!(msg, "no speaker is running on the nodes that may announce it (n1)");
    c.speaker_lease("n1").await;
    c.until_announced("default", "s", "False", "NotAnnounced").await;
    c.l2_status("default", "s", "n1").await;
    assert_eq!(c.until_announced("default", "s", "True", "Announced").await, "announced by n1");
}

#[tokio::test]
async fn a_speaker_lease_that_runs_out_unrenewed_is_seen_without_an_event() {
    let c = Cluster::new().await;
    c.pool("p", json!({"addresses": ["198.51.100.0/28"]})).await;
    c.advertise_all().await;
    c.node("n1").await;
    // A Lease renewed 28 s ago for 30 s: current for 2 more seconds, then nothing happens to it.
    let api: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(c.client.clone(), NS);
    let renewed = (k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(28)).to_string();
    let l = serde_json::from_value(
        json!({"metadata": {"name": "n1", "labels": {"app.kubernetes.io/component": "speaker"}},
        "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 30, "renewTime": renewed}}),
    )
    .unwrap();
    api.create(&kube::api::PostParams::default(), &l).await.unwrap();
    let _ctl = c.start(None, false, "solo");
    c.service(svc("s")).await;
    c.until_announced("default", "s", "False", "NotAnnounced").await;
    c.until_announced("default", "s", "False", "NoLiveSpeaker").await;
}

#[tokio::test]
async fn restart_keeps_every_ip_and_replays_before_allocating() {
    let c = Cluster::new().await;
    c.pool("p", json!({"addresses": ["198.51.100.0/28"]})).await;
    let ctl = c.start(None, false, "first");
    for s in ["a", "b", "c"] {
        c.service(svc(s)).await;
        c.until("default", s, "an IP", |s| !ips(s).is_empty()).await;
    }
    c.delete_service("default", "a").await;
    ctl.stop().await;
    // While down: a new Service appears. The lowest free IP is .0 (a's), but b and c keep theirs.
    let b_before = ips(&c.get_service("default", "b").await);
    let c_before = ips(&c.get_service("default", "c").await);
    c.service(svc("d")).await;
    let _ctl = c.start(None, false, "second");
    c.until_ips("default", "d", &["198.51.100.0"]).await;
    assert_eq!(ips(&c.get_service("default", "b").await), b_before);
    assert_eq!(ips(&c.get_service("default", "c").await), c_before);
}

#[tokio::test]
async fn leader_failover_moves_no_ip() {
    let c = Cluster::new().await;
    c.pool("p", json!({"addresses": ["198.51.100.0/28"]})).await;
    let one = c.start(None, true, "one");
    let two = c.start(None, true, "two");
    c.service(svc("a")).await;
    c.until_ips("default", "a", &["198.51.100.0"]).await;
    let leader_one = one.is_leader();
    assert!(leader_one != two.is_leader(), "exactly one leader");
    let (leader, standby) = if leader_one { (one, two) } else { (two, one) };
    // The leader crashes without releasing its lease.
    leader.kill();
    c.service(svc("b")).await;
    // The standby takes over within the lease duration (2 s) plus a renewal and allocates b.
    let started = tokio::time::Instant::now();
    c.until_ips("default", "b", &["198.51.100.1"]).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(standby.is_leader());
    assert_eq!(ips(&c.get_service("default", "a").await), ["198.51.100.0"]);
    standby.stop().await;
}

/// Taking over from MetalLB: Services whose status holds IPs MetalLB assigned (and its
/// pool annotation) before ferrolb's controller first runs keep them, the lowest free
/// IP notwithstanding; one whose IP no pool contains keeps it too, and says why.
#[tokio::test]
async fn ips_another_implementation_assigned_are_adopted_not_renumbered() {
    use kube::api::{Patch, PatchParams};
    let c = Cluster::new().await;
    c.pool("p", json!({"addresses": ["198.51.100.0/28"]})).await;
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(c.client.clone(), "default");
    for (name, ip) in [("kept", "198.51.100.9"), ("stray", "203.0.113.200")] {
        c.service(svc(name)).await;
        let meta = json!({"metadata": {"annotations": {"metallb.universe.tf/ip-allocated-from-pool": "old"}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(meta)).await.unwrap();
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    }
    c.service(svc("new")).await;
    let _ctl = c.start(None, false, "takeover");
    // The newcomer gets the lowest free IP; the adopted one is not it.
    let new = c.until("default", "new", "an IP", |s| !ips(s).is_empty()).await;
    assert_eq!(ips(&new), ["198.51.100.0"], "stray: {:?}", ips(&c.get_service("default", "stray").await));
    let kept = c.until("default", "kept", "adopted", |s| condition(s, "ferrolb.io/Allocated").is_some()).await;
    assert_eq!(ips(&kept), ["198.51.100.9"]);
    assert_eq!(condition(&kept, "ferrolb.io/Allocated").unwrap().0, "True");
    assert_eq!(kept.annotations().get("ferrolb.io/ip-allocated-from-pool").map(String::as_str), Some("p"));
    // An IP no pool contains is never silently renumbered: kept, and reported.
    let stray = c.until("default", "stray", "reported", |s| condition(s, "ferrolb.io/Allocated").is_some()).await;
    let (status, reason, message) = condition(&stray, "ferrolb.io/Allocated").unwrap();
    assert_eq!(ips(&stray), ["203.0.113.200"], "{reason}: {message}");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "IPOutsidePools"), "{message}");
    assert!(message.starts_with("203.0.113.200 in no IPAddressPool"), "{message}");
    // A pool that contains it makes it ferrolb's, unchanged.
    c.pool("old", json!({"addresses": ["203.0.113.192/27"]})).await;
    let adopted = c
        .until("default", "stray", "adopted by the new pool", |s| {
            condition(s, "ferrolb.io/Allocated").is_some_and(|c| c.0 == "True")
        })
        .await;
    assert_eq!(ips(&adopted), ["203.0.113.200"]);
}
