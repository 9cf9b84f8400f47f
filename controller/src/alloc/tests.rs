//! Table tests for every allocation rule.

use std::collections::BTreeMap;

use super::*;
use ferrolb_crds::{IPAddressPool, ServiceAllocation};
use ferrolb_model::Config;
use ferrolb_model::testing::pool;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

fn with_alloc(mut p: IPAddressPool, a: ServiceAllocation) -> IPAddressPool {
    p.spec.service_allocation = Some(a);
    p
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn alloc(pools: Vec<IPAddressPool>) -> Allocator {
    let mut a = Allocator::new();
    a.set_config(Config::build(&pools, &[], BTreeMap::new()));
    a
}

fn req(key: &str) -> Request {
    Request {
        key: ServiceKey::new("default", key),
        namespace: "default".into(),
        labels: Labels::new(),
        families: vec![Family::V4],
        policy: Policy::SingleStack,
        requested: vec![],
        pool: None,
        sharing: Sharing {
            key: None,
            ports: vec![("TCP".into(), 80)],
            local: false,
            selector: labels(&[("app", key)]),
        },
        allocated_before: false,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(a: &Assignment) -> Vec<String> {
    a.ips.iter().map(|i| i.to_string()).collect()
}

#[test]
fn lowest_free_address_then_next() {
    let mut a = alloc(vec![pool("p", &["198.51.100.10-198.51.100.12"])]);
    assert_eq!(ips(&a.assign(&req("a"), &[]).unwrap()), ["198.51.100.10"]);
    assert_eq!(ips(&a.assign(&req("b"), &[]).unwrap()), ["198.51.100.11"]);
    // Idempotent: asking again keeps the same IP and uses no more addresses.
    assert_eq!(ips(&a.assign(&req("a"), &[]).unwrap()), ["198.51.100.10"]);
    assert_eq!(a.stats("p"), PoolStats { v4_total: 3, v4_in_use: 2, v6_total: 0, v6_in_use: 0 });
}

#[test]
fn freed_ip_goes_to_the_next_pending_service() {
    let mut a = alloc(vec![pool("p", &["198.51.100.10/32"])]);
    a.assign(&req("a"), &[]).unwrap();
    let e = a.assign(&req("b"), &[]).unwrap_err();
    assert_eq!(e.reason(), "PoolExhausted");
    assert_eq!(e.to_string(), "no free IPv4 address in IPAddressPool(s) p");
    assert!(a.release("default/a").is_some());
    assert!(a.release("default/a").is_none(), "release is idempotent");
    assert_eq!(ips(&a.assign(&req("b"), &[]).unwrap()), ["198.51.100.10"]);
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let mut p = pool("p", &["198.51.100.255-198.51.101.1"]);
    p.spec.avoid_buggy_ips = true;
    let mut a = alloc(vec![p]);
    assert_eq!(ips(&a.assign(&req("a"), &[]).unwrap()), ["198.51.101.1"]);
    assert_eq!(a.stats("p").v4_total, 1);
    let mut r = req("b");
    r.requested = vec![ip("198.51.101.0")];
    assert_eq!(a.assign(&r, &[]).unwrap_err().reason(), "InvalidRequest");
}

#[test]
fn pools_are_chosen_by_priority_then_name_and_auto_assign() {
    let mut manual = pool("a-manual", &["198.51.100.0/30"]);
    manual.spec.auto_assign = false;
    let low = with_alloc(
        pool("z-first", &["198.51.100.8/30"]),
        ServiceAllocation { priority: Some(1), ..Default::default() },
    );
    let plain = pool("b-plain", &["198.51.100.16/30"]);
    let mut a = alloc(vec![manual, low, plain]);
    assert_eq!(a.assign(&req("s1"), &[]).unwrap().pool, "z-first");
    let mut r = req("s2");
    r.pool = Some("a-manual".into());
    assert_eq!(a.assign(&r, &[]).unwrap().pool, "a-manual", "autoAssign=false only on request");
    let mut r = req("s3");
    r.pool = Some("missing".into());
    assert_eq!(a.assign(&r, &[]).unwrap_err().to_string(), "IPAddressPool missing does not exist");
}

#[test]
fn auto_assign_false_keeps_a_pool_from_new_ips_not_from_what_services_hold() {
    let mut manual = pool("manual", &["198.51.100.0/30"]);
    manual.spec.auto_assign = false;
    let plain = pool("plain", &["198.51.100.16/30"]);
    let mut a = alloc(vec![manual.clone(), plain.clone()]);
    // Given by another implementation (MetalLB, on request since removed): kept, and
    // still kept on every later reconcile and after a restart (ferrolb's annotation then).
    let held = a.assign(&req("adopted"), &[ip("198.51.100.2")]).unwrap();
    assert_eq!((held.pool.as_str(), ips(&held)), ("manual", vec!["198.51.100.2".to_string()]));
    assert_eq!(ips(&a.assign(&req("adopted"), &[ip("198.51.100.2")]).unwrap()), ["198.51.100.2"]);
    let mut restarted = alloc(vec![manual.clone(), plain.clone()]);
    let mut r = req("adopted");
    r.allocated_before = true;
    assert_eq!(ips(&restarted.assign(&r, &[ip("198.51.100.2")]).unwrap()), ["198.51.100.2"]);
    // A pool turned to autoAssign: false keeps serving what it gave; new Services go elsewhere.
    let mut auto = plain.clone();
    auto.spec.auto_assign = true;
    let mut a = alloc(vec![manual.clone(), auto.clone()]);
    assert_eq!(ips(&a.assign(&req("web"), &[]).unwrap()), ["198.51.100.16"]);
    auto.spec.auto_assign = false;
    let second = pool("second", &["198.51.100.32/30"]);
    a.set_config(Config::build(&[manual, auto, second], &[], BTreeMap::new()));
    assert_eq!(ips(&a.assign(&req("web"), &[]).unwrap()), ["198.51.100.16"]);
    assert_eq!(a.assign(&req("new"), &[]).unwrap().pool, "second");
}

#[test]
fn namespace_and_service_selectors_restrict_pools() {
    let team = with_alloc(
        pool("team", &["198.51.100.0/30"]),
        ServiceAllocation { namespaces: vec!["team-a".into()], priority: Some(0), ..Default::default() },
    );
    let labelled = with_alloc(
        pool("labelled", &["198.51.100.8/30"]),
        ServiceAllocation {
            service_selectors: vec![LabelSelector {
                match_labels: Some(labels(&[("lb", "edge")])),
                ..Default::default()
            }],
            priority: Some(1),
            ..Default::default()
        },
    );
    let mut a = alloc(vec![team, labelled]);
    let mut r = req("x");
    assert_eq!(a.assign(&r, &[]).unwrap_err().reason(), "NoPoolMatches");
    r.namespace = "team-a".into();
    r.key = "team-a/x".into();
    assert_eq!(a.assign(&r, &[]).unwrap().pool, "team");
    let mut r = req("y");
    r.labels = labels(&[("lb", "edge")]);
    assert_eq!(a.assign(&r, &[]).unwrap().pool, "labelled");
}

#[test]
fn namespace_label_selectors_use_namespace_labels() {
    let p = with_alloc(
        pool("prod", &["198.51.100.0/30"]),
        ServiceAllocation {
            namespace_selectors: vec![LabelSelector {
                match_labels: Some(labels(&[("env", "prod")])),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    let mut a = Allocator::new();
    let ns = BTreeMap::from([("shop".to_string(), labels(&[("env", "prod")]))]);
    a.set_config(Config::build(&[p], &[], ns));
    let mut r = req("x");
    assert!(a.assign(&r, &[]).is_err());
    r.namespace = "shop".into();
    r.key = "shop/x".into();
    assert_eq!(a.assign(&r, &[]).unwrap().pool, "prod");
}

#[test]
fn requested_ips_are_honoured_and_checked() {
    let mut a = alloc(vec![pool("p", &["198.51.100.0/24", "fd42:f1b::/120"]), pool("q", &["203.0.113.0/24"])]);
    let mut r = req("a");
    r.requested = vec![ip("198.51.100.77")];
    assert_eq!(ips(&a.assign(&r, &[]).unwrap()), ["198.51.100.77"]);
    let table: Vec<(Vec<&str>, Option<&str>, Policy, &str)> = vec![
        (vec!["192.0.2.9"], None, Policy::SingleStack, "RequestedIPOutsidePools"),
        (vec!["203.0.113.5"], Some("p"), Policy::SingleStack, "RequestedIPOutsidePools"),
        (vec!["fd42:f1b::5"], None, Policy::SingleStack, "InvalidRequest"),
        (vec!["198.51.100.5", "198.51.100.6"], None, Policy::PreferDualStack, "InvalidRequest"),
        (vec!["198.51.100.5"], None, Policy::RequireDualStack, "InvalidRequest"),
        (vec!["198.51.100.77"], None, Policy::SingleStack, "RequestedIPInUse"),
    ];
    for (want, pool, policy, reason) in table {
        let mut r = req("b");
        r.requested = want.iter().map(|s| ip(s)).collect();
        r.pool = pool.map(String::from);
        r.policy = policy;
        assert_eq!(a.assign(&r, &[]).unwrap_err().reason(), reason, "{want:?} {policy:?}");
    }
    let mut dual = req("c");
    dual.policy = Policy::RequireDualStack;
    dual.families = vec![Family::V6, Family::V4];
    dual.requested = vec![ip("198.51.100.9"), ip("fd42:f1b::9")];
    assert_eq!(ips(&a.assign(&dual, &[]).unwrap()), ["fd42:f1b::9", "198.51.100.9"], "in family order");
}

#[test]
fn changing_the_requested_ip_moves_the_service() {
    let mut a = alloc(vec![pool("p", &["198.51.100.0/24"])]);
    let mut r = req("a");
    r.requested = vec![ip("198.51.100.7")];
    a.assign(&r, &[]).unwrap();
    r.requested = vec![ip("198.51.100.8")];
    assert_eq!(ips(&a.assign(&r, &[]).unwrap()), ["198.51.100.8"]);
    assert_eq!(a.stats("p").v4_in_use, 1, "the old IP was released");
}

#[test]
fn prefer_dual_stack_picks_a_dual_pool_else_the_primary_family() {
    let v4only =
        with_alloc(pool("a-v4", &["198.51.100.0/24"]), ServiceAllocation { priority: Some(0), ..Default::default() });
    let dual = with_alloc(
        pool("b-dual", &["203.0.113.0/24", "fd42:f1b::/120"]),
        ServiceAllocation { priority: Some(1), ..Default::default() },
    );
    let mut a = alloc(vec![v4only.clone(), dual]);
    let mut r = req("a");
    r.policy = Policy::PreferDualStack;
    r.families = vec![Family::V4, Family::V6];
    let got = a.assign(&r, &[]).unwrap();
    assert_eq!((got.pool.as_str(), ips(&got)), ("b-dual", vec!["203.0.113.0".to_string(), "fd42:f1b::".to_string()]));
    let mut only = alloc(vec![v4only]);
    assert_eq!(ips(&only.assign(&r, &[]).unwrap()), ["198.51.100.0"]);
}

#[test]
fn require_dual_stack_with_single_stack_pools_stays_pending() {
    let mut a = alloc(vec![pool("v4", &["198.51.100.0/24"]), pool("v6", &["fd42:f1b::/120"])]);
    let mut r = req("a");
    r.policy = Policy::RequireDualStack;
    r.families = vec![Family::V4, Family::V6];
    assert_eq!(a.assign(&r, &[]).unwrap_err(), AllocError::DualStackUnavailable);
}

#[test]
fn a_service_never_jumps_pools_and_gains_a_family_from_its_own_pool() {
    let mut a = alloc(vec![pool("mine", &["198.51.100.0/24"])]);
    let mut r = req("a");
    r.policy = Policy::PreferDualStack;
    r.families = vec![Family::V4, Family::V6];
    assert_eq!(ips(&a.assign(&r, &[]).unwrap()), ["198.51.100.0"]);
    // A dual-stack pool appears (sorting first): the Service stays.
    a.set_config(Config::build(
        &[pool("mine", &["198.51.100.0/24"]), pool("aaa-dual", &["203.0.113.0/24", "fd42:f1b::/120"])],
        &[],
        BTreeMap::new(),
    ));
    let got = a.assign(&r, &[]).unwrap();
    assert_eq!((got.pool.as_str(), ips(&got)), ("mine", vec!["198.51.100.0".to_string()]));
    // Its own pool becomes dual-stack: it gains IPv6 from it.
    a.set_config(Config::build(
        &[
            pool("mine", &["198.51.100.0/24", "fd42:f1b:1::/120"]),
            pool("aaa-dual", &["203.0.113.0/24", "fd42:f1b::/120"]),
        ],
        &[],
        BTreeMap::new(),
    ));
    let got = a.assign(&r, &[]).unwrap();
    assert_eq!((got.pool.as_str(), ips(&got)), ("mine", vec!["198.51.100.0".to_string(), "fd42:f1b:1::".to_string()]));
}

#[test]
fn sharing_needs_key_compatible_backends_and_distinct_ports() {
    let mut a = alloc(vec![pool("p", &["198.51.100.0/24"])]);
    let shared = |name: &str, key: &str, port: i32, local: bool, app: &str| {
        let mut r = req(name);
        r.requested = vec![ip("198.51.100.50")];
        r.sharing = Sharing {
            key: Some(key.into()),
            ports: vec![("TCP".into(), port)],
            local,
            selector: labels(&[("app", app)]),
        };
        r
    };
    a.assign(&shared("a", "k", 80, false, "x"), &[]).unwrap();
    assert!(a.assign(&shared("b", "k", 443, false, "y"), &[]).is_ok(), "same key, other port");
    let table = [
        (shared("c", "other", 8080, false, "x"), "sharing keys differ"),
        (shared("c", "k", 80, false, "x"), "both use port 80/TCP"),
        (shared("c", "k", 8080, true, "x"), "externalTrafficPolicy differs"),
    ];
    for (r, why) in table {
        let e = a.assign(&r, &[]).unwrap_err();
        assert!(e.to_string().contains(why), "{e}");
        assert_eq!(e.reason(), "RequestedIPInUse");
    }
    assert_eq!(a.holders(&ip("198.51.100.50")).len(), 2);
    assert_eq!(a.stats("p").v4_in_use, 1, "a shared IP counts once");
}

#[test]
fn sharing_services_without_requested_ip_land_together() {
    let mut a = alloc(vec![pool("p", &["198.51.100.0/24"])]);
    let mut r1 = req("a");
    r1.sharing.key = Some("k".into());
    let mut r2 = req("b");
    r2.sharing.key = Some("k".into());
    r2.sharing.ports = vec![("UDP".into(), 53)];
    let first = a.assign(&r1, &[]).unwrap();
    assert_eq!(a.assign(&r2, &[]).unwrap().ips, first.ips);
}

#[test]
fn a_service_that_no_longer_fits_its_shared_ip_moves() {
    let mut a = alloc(vec![pool("p", &["198.51.100.0/24"])]);
    let mut r1 = req("a");
    r1.sharing.key = Some("k".into());
    let mut r2 = req("b");
    r2.sharing.key = Some("k".into());
    r2.sharing.ports = vec![("TCP".into(), 443)];
    let shared = a.assign(&r1, &[]).unwrap().ips;
    assert_eq!(a.assign(&r2, &[]).unwrap().ips, shared);
    // b becomes Local: it is no longer compatible and gets its own IP.
    r2.sharing.local = true;
    let moved = a.assign(&r2, &[]).unwrap().ips;
    assert_ne!(moved, shared);
    assert_eq!(a.holders(&shared[0]), vec![ServiceKey::from("default/a")]);
}

#[test]
fn restart_replays_existing_ips_before_new_allocations() {
    let pools = vec![pool("p", &["198.51.100.0/24"])];
    let mut a = alloc(pools.clone());
    // After a restart the allocator is empty; b held .5 according to its status.
    assert_eq!(ips(&a.assign(&req("b"), &[ip("198.51.100.5")]).unwrap()), ["198.51.100.5"]);
    assert_eq!(ips(&a.assign(&req("a"), &[]).unwrap()), ["198.51.100.0"]);
    // A status IP outside every pool that ferrolb gave (its pool is gone) is replaced...
    let ours = Request { allocated_before: true, ..req("c") };
    assert_eq!(ips(&a.assign(&ours, &[ip("203.0.113.1")]).unwrap()), ["198.51.100.1"]);
    // ...one that something else gave (MetalLB, before the switch) is kept and said.
    let foreign = a.assign(&req("e"), &[ip("203.0.113.2")]).unwrap_err();
    assert_eq!(foreign, AllocError::OutsidePoolsAdopted(vec![ip("203.0.113.2")]));
    assert!(foreign.to_string().starts_with("203.0.113.2 in no IPAddressPool"), "{foreign}");
    assert!(a.assignment("default/e").is_none(), "nothing claimed");
    // A status IP already held by another (not sharing) Service is not stolen.
    assert_eq!(ips(&a.assign(&req("d"), &[ip("198.51.100.5")]).unwrap()), ["198.51.100.2"]);
}

#[test]
fn shrinking_or_deleting_a_pool_revokes_exactly_the_affected_services() {
    let mut a = alloc(vec![pool("p", &["198.51.100.0/30"]), pool("q", &["203.0.113.0/30"])]);
    for s in ["a", "b", "c"] {
        a.assign(&req(s), &[]).unwrap();
    }
    let mut rq = req("d");
    rq.pool = Some("q".into());
    a.assign(&rq, &[]).unwrap();
    let revoked = a.set_config(Config::build(
        &[pool("p", &["198.51.100.0/31"]), pool("q", &["203.0.113.0/30"])],
        &[],
        BTreeMap::new(),
    ));
    assert_eq!(revoked, vec![ServiceKey::from("default/c")]);
    assert_eq!(a.stats("p"), PoolStats { v4_total: 2, v4_in_use: 2, v6_total: 0, v6_in_use: 0 });
    let revoked = a.set_config(Config::build(&[pool("p", &["198.51.100.0/31"])], &[], BTreeMap::new()));
    assert_eq!(revoked, vec![ServiceKey::from("default/d")]);
    assert!(a.assignment("default/a").is_some());
    // The revoked Service is reallocated from what is left.
    assert_eq!(a.assign(&req("c"), &[]).unwrap_err().reason(), "PoolExhausted");
}

#[test]
fn ipv6_slash_64_counts_are_exact() {
    let mut a = alloc(vec![pool("big", &["fd42:f1b::/64"])]);
    let mut r = req("a");
    r.families = vec![Family::V6];
    a.assign(&r, &[]).unwrap();
    let s = a.stats("big");
    assert_eq!(s.v6_total, 1u128 << 64);
    assert_eq!(s.v6_in_use, 1);
}

/// `p` as the controller left it after serving `effective`.
fn serving(mut p: IPAddressPool, effective: &[&str]) -> IPAddressPool {
    p.status = Some(ferrolb_crds::IPAddressPoolStatus {
        effective_addresses: effective.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
    p
}

#[test]
fn a_stale_pool_keeps_its_services_and_allocates_nothing_new() {
    let prod = |spec: &[&str]| serving(pool("prod", spec), &["198.51.100.240-198.51.100.243"]);
    let spare = pool("spare", &["203.0.113.0/30"]);
    let mut a = alloc(vec![prod(&["198.51.100.240/30"]), spare.clone()]);
    assert_eq!(ips(&a.assign(&req("web"), &[]).unwrap()), ["198.51.100.240"]);
    let mut pinned = req("pinned");
    pinned.requested = vec![ip("198.51.100.241")];
    a.assign(&pinned, &[]).unwrap();
    // The spec is broken by an edit: nothing is revoked.
    let revoked = a.set_config(Config::build(&[prod(&["198.51.100.240/30", "typo"]), spare], &[], BTreeMap::new()));
    assert!(revoked.is_empty(), "{revoked:?}");
    assert_eq!(ips(&a.assign(&req("web"), &[]).unwrap()), ["198.51.100.240"]);
    assert_eq!(ips(&a.assign(&pinned, &[]).unwrap()), ["198.51.100.241"]);
    // A controller restarted meanwhile replays them from the Services' statuses.
    let mut restarted = Allocator::new();
    restarted.set_config(a.config().clone());
    assert_eq!(ips(&restarted.assign(&req("web"), &[ip("198.51.100.240")]).unwrap()), ["198.51.100.240"]);
    assert_eq!(ips(&restarted.assign(&pinned, &[ip("198.51.100.241")]).unwrap()), ["198.51.100.241"]);
    // New Services get nothing from it.
    assert_eq!(ips(&a.assign(&req("new"), &[]).unwrap()), ["203.0.113.0"]);
    let mut wants_prod = req("wants-prod");
    wants_prod.pool = Some("prod".into());
    let e = a.assign(&wants_prod, &[]).unwrap_err();
    assert_eq!(e.reason(), "UnknownPool");
    assert!(e.to_string().contains("spec.addresses[1] \"typo\""), "{e}");
    let mut wants_ip = req("wants-ip");
    wants_ip.requested = vec![ip("198.51.100.242")];
    let e = a.assign(&wants_ip, &[]).unwrap_err();
    assert!(e.to_string().contains("serving only the IPs it had assigned"), "{e}");
}
