//! Table tests for eligibility and election.

use super::*;
use ferrolb_crds::annotations::EXCLUDE_FROM_EXTERNAL_LB_LABEL;
use ferrolb_model::selector::Selector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn sel(pairs: &[(&str, &str)]) -> Selector {
    Selector::parse(&LabelSelector { match_labels: Some(labels(pairs)), ..Default::default() }).unwrap()
}

fn node(name: &str) -> Node {
    Node {
        name: name.into(),
        labels: labels(&[("kubernetes.io/hostname", name)]),
        network_unavailable: false,
        alive: true,
        excluded: false,
    }
}

fn svc(key: &str, pool: &str) -> Service {
    Service { key: key.into(), labels: Labels::new(), pool: pool.into(), local: false, ready_nodes: BTreeSet::new() }
}

fn all_pools() -> L2Advertisement {
    L2Advertisement { name: "all".into(), ..Default::default() }
}

fn names(m: &BTreeMap<String, Interfaces>) -> Vec<&str> {
    m.keys().map(|s| s.as_str()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn every_usable_node_is_eligible_under_a_catch_all_advertisement() {
    let nodes = [node("a"), node("b"), node("c")];
    let s = svc("ns/web", "p");
    let e = eligible(&[&s], &BTreeMap::new(), &[all_pools()], &nodes);
    assert_eq!(names(&e), ["a", "b", "c"]);
    assert_eq!(e["a"], Interfaces::All);
}

#[test]
fn node_rules_table() {
    let s = svc("ns/web", "p");
    let mut unavailable = node("a");
    unavailable.network_unavailable = true;
    let mut excluded = node("b");
    excluded.labels.insert(EXCLUDE_FROM_EXTERNAL_LB_LABEL.into(), "".into());
    excluded.excluded = Node::excluded_by(&excluded.labels, false);
    assert!(!Node::excluded_by(&excluded.labels, true), "--ignore-exclude-lb");
    let mut dead = node("c");
    dead.alive = false;
    let e = eligible(&[&s], &BTreeMap::new(), &[all_pools()], &[unavailable, excluded, dead, node("d")]);
    assert_eq!(names(&e), ["d"]);
}

#[test]
fn advertisement_must_cover_pool_service_and_node() {
    let mut s = svc("ns/web", "gold");
    s.labels = labels(&[("tier", "front")]);
    let pools = BTreeMap::from([("gold".to_string(), labels(&[("class", "premium")]))]);
    let nodes = [node("a"), node("b")];
    let table: Vec<(L2Advertisement, Vec<&str>)> = vec![
        (L2Advertisement { pools: vec!["silver".into()], ..all_pools() }, vec![]),
        (L2Advertisement { pools: vec!["gold".into()], ..all_pools() }, vec!["a", "b"]),
        (L2Advertisement { pool_selectors: vec![sel(&[("class", "premium")])], ..all_pools() }, vec!["a", "b"]),
        (L2Advertisement { pool_selectors: vec![sel(&[("class", "basic")])], ..all_pools() }, vec![]),
        (L2Advertisement { service_selectors: vec![sel(&[("tier", "back")])], ..all_pools() }, vec![]),
        (L2Advertisement { service_selectors: vec![sel(&[("tier", "front")])], ..all_pools() }, vec!["a", "b"]),
        (L2Advertisement { node_selectors: vec![sel(&[("kubernetes.io/hostname", "b")])], ..all_pools() }, vec!["b"]),
    ];
    for (adv, want) in table {
        let e = eligible(&[&s], &pools, std::slice::from_ref(&adv), &nodes);
        assert_eq!(names(&e), want, "{adv:?}");
    }
    assert!(eligible(&[&s], &pools, &[], &nodes).is_empty(), "no advertisement, nobody announces");
}

#[test]
fn interfaces_are_the_union_of_matching_advertisements() {
    let s = svc("ns/web", "p");
    let a1 = L2Advertisement { interfaces: vec!["eth1".into()], ..all_pools() };
    let a2 = L2Advertisement { name: "b".into(), interfaces: vec!["eth2".into()], ..all_pools() };
    let e = eligible(&[&s], &BTreeMap::new(), &[a1.clone(), a2], &[node("a")]);
    assert_eq!(e["a"], Interfaces::Named(BTreeSet::from(["eth1".to_string(), "eth2".to_string()])));
    let e = eligible(&[&s], &BTreeMap::new(), &[a1, all_pools()], &[node("a")]);
    assert_eq!(e["a"], Interfaces::All, "an advertisement without interfaces means all");
}

#[test]
fn local_services_need_a_ready_endpoint_and_follow_it() {
    let mut s = svc("ns/web", "p");
    s.local = true;
    let nodes = [node("a"), node("b"), node("c")];
    assert!(eligible(&[&s], &BTreeMap::new(), &[all_pools()], &nodes).is_empty());
    s.ready_nodes = BTreeSet::from(["b".to_string()]);
    let e = eligible(&[&s], &BTreeMap::new(), &[all_pools()], &nodes);
    assert_eq!(names(&e), ["b"]);
    let vip = ip("198.51.100.7");
    assert_eq!(elect(&vip, e.keys(), None, false).as_deref(), Some("b"));
    // The endpoint moves to c: b is no longer eligible, so even non-revertive election moves.
    s.ready_nodes = BTreeSet::from(["c".to_string()]);
    let e = eligible(&[&s], &BTreeMap::new(), &[all_pools()], &nodes);
    assert_eq!(elect(&vip, e.keys(), Some("b"), false).as_deref(), Some("c"));
}

#[test]
fn services_sharing_an_ip_are_announced_from_one_node_eligible_for_all() {
    let mut http = svc("ns/http", "p");
    http.labels = labels(&[("app", "x")]);
    let dns = svc("ns/dns", "p");
    let adv = L2Advertisement {
        service_selectors: vec![sel(&[("app", "x")])],
        node_selectors: vec![sel(&[("kubernetes.io/hostname", "a")])],
        ..all_pools()
    };
    let other = L2Advertisement { name: "o".into(), ..all_pools() };
    let nodes = [node("a"), node("b")];
    // http is announced only from a; dns from anywhere: together, only a.
    let e = eligible(&[&http, &dns], &BTreeMap::new(), &[adv, other], &nodes);
    assert_eq!(names(&e), ["a", "b"], "the catch-all advertisement covers http too");
    let strict = L2Advertisement {
        service_selectors: vec![sel(&[("app", "x")])],
        node_selectors: vec![sel(&[("kubernetes.io/hostname", "a")])],
        ..all_pools()
    };
    let e = eligible(&[&http, &dns], &BTreeMap::new(), &[strict], &nodes);
    assert!(e.is_empty(), "dns is covered by no advertisement: the shared IP is not announced");
}

#[test]
fn election_is_deterministic_and_spreads_ips() {
    let nodes: Vec<String> = ["node-1", "node-2", "node-3"].iter().map(|s| s.to_string()).collect();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..3000u32 {
        let vip = IpAddr::V4(std::net::Ipv4Addr::from(0xc6336400u32 + i));
        let w = elect(&vip, nodes.iter(), None, false).unwrap();
        assert_eq!(elect(&vip, nodes.iter().rev(), None, false).unwrap(), w, "order of nodes does not matter");
        *count.entry(w).or_default() += 1;
    }
    for (n, c) in &count {
        assert!((850..=1150).contains(c), "{n} got {c} of 3000: {count:?}");
    }
}

#[test]
fn non_revertive_holder_keeps_the_ip_after_failover() {
    let vip = ip("198.51.100.7");
    let all: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let first = elect(&vip, all.iter(), None, false).unwrap();
    // The winner fails: another takes over.
    let rest: Vec<String> = all.iter().filter(|n| **n != first).cloned().collect();
    let second = elect(&vip, rest.iter(), Some(&first), false).unwrap();
    assert_ne!(second, first);
    // The first comes back: non-revertive keeps the IP where it is, revertive moves it back.
    assert_eq!(elect(&vip, all.iter(), Some(&second), false).unwrap(), second);
    assert_eq!(elect(&vip, all.iter(), Some(&second), true).unwrap(), first);
    // Removing a node that does not hold the IP never moves it.
    let without_third: Vec<String> = all.iter().filter(|n| **n == first || **n == second).cloned().collect();
    assert_eq!(elect(&vip, without_third.iter(), Some(&second), false).unwrap(), second);
    assert!(elect(&vip, std::iter::empty(), None, false).is_none());
}
