//! From the cluster's objects to "what this node announces". Pure: takes a
//! snapshot of Services, EndpointSlices, Nodes, the validated config (pools and
//! advertisements), speaker Leases and ServiceL2Statuses, and runs eligibility
//! and election for every assigned IP. Every speaker computes the same plan.
//!
//! A Service's pool is the valid pool that contains its IP: the speakers read it
//! from the pools they watch, as the controller allocated it, instead of waiting
//! for the controller's `ip-allocated-from-pool` annotation after every change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferrolb_crds::ServiceL2Status;
use ferrolb_model::{Config, ServiceKey, ingress_ips, is_ours};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node as K8sNode, Service as K8sService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::election::{self, Interfaces, Node, Service};
use crate::membership::Liveness;

/// Everything the plan is computed from.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// All Services, shared with the caches (a pass copies no object: at 10,000
    /// Services a copy per pass took the speaker past its 128 MiB limit).
    pub services: Vec<Arc<K8sService>>,
    /// All EndpointSlices, shared with the caches.
    pub slices: Vec<Arc<EndpointSlice>>,
    /// All Nodes, shared with the caches.
    pub nodes: Vec<Arc<K8sNode>>,
    /// Valid pools and advertisements.
    pub config: Config,
    /// Speaker membership Leases (one per node, named after it).
    pub leases: Vec<Lease>,
    /// Current announcements, as written by announcing speakers.
    pub statuses: Vec<ServiceL2Status>,
    /// What heartbeats say about each node; a node missing here, or `Unknown`, is
    /// judged by its Lease alone.
    pub liveness: BTreeMap<String, Liveness>,
    /// The newest takeover claim per IP, (node, since ms): fresher than the statuses.
    pub claims: BTreeMap<IpAddr, (String, u64)>,
}

/// One IP and who announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The node that announces, if any is eligible.
    pub node: Option<String>,
    /// Interfaces the winner announces on.
    pub interfaces: Option<Interfaces>,
    /// Services holding the IP.
    pub services: Vec<ServiceKey>,
}

/// The plan for every assigned IP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Decision per IP.
    pub ips: BTreeMap<IpAddr, Decision>,
    /// Nodes that may announce at all (alive, network available, not excluded).
    pub usable_nodes: BTreeSet<String>,
    /// Services no node announces for want of a ready endpoint (`externalTrafficPolicy:
    /// Local`): (the speaker that reports it, the message). Every speaker computes the
    /// same; the reporter is the first node (by name) that could announce but for that.
    pub no_endpoint: BTreeMap<ServiceKey, (String, String)>,
}

/// What one node announces: IP -> interfaces, and the interfaces an advertisement
/// names that the node does not have (per Service, to report).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// The IPs to answer for, each on at least one interface.
    pub ips: BTreeMap<IpAddr, BTreeSet<String>>,
    /// (Service, interface) pairs named but missing here.
    pub missing: BTreeSet<(ServiceKey, String)>,
    /// Services elected here whose named interfaces are all missing: not announced,
    /// with the message for the report.
    pub interface_missing: BTreeMap<ServiceKey, String>,
}

impl Plan {
    /// The IPs `node` announces, with their interfaces.
    pub fn for_node(&self, node: &str) -> BTreeMap<IpAddr, Interfaces> {
        self.ips
            .iter()
            .filter(|(_, d)| d.node.as_deref() == Some(node))
            .filter_map(|(ip, d)| Some((*ip, d.interfaces.clone()?)))
            .collect()
    }

    /// What `node`, answering on `interfaces`, announces. An IP elected here whose
    /// named interfaces all are missing is not announced (and is reported).
    pub fn desired_on(&self, node: &str, interfaces: &BTreeSet<String>) -> Desired {
        let mut out = Desired::default();
        for (ip, ifs) in self.for_node(node) {
            let set: BTreeSet<String> = match ifs {
                Interfaces::All => interfaces.clone(),
                Interfaces::Named(named) => {
                    let have: BTreeSet<String> = named.intersection(interfaces).cloned().collect();
                    if let Some(svc) = self.ips[&ip].services.first() {
                        out.missing.extend(named.difference(interfaces).map(|i| (svc.clone(), i.clone())));
                    }
                    if have.is_empty() {
                        let names = named.iter().cloned().collect::<Vec<_>>().join(", ");
                        for svc in &self.ips[&ip].services {
                            out.interface_missing.insert(
                                svc.clone(),
                                format!("node {node} was chosen to announce it but has none of the interfaces the L2Advertisement names ({names})"),
                            );
                        }
                    }
                    have
                }
            };
            if !set.is_empty() {
                out.ips.insert(ip, set);
            }
        }
        out
    }

    /// How many IPs `node` announces, another node announces, and none does.
    pub fn counts(&self, node: &str) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for d in self.ips.values() {
            match d.node.as_deref() {
                Some(n) if n == node => c.0 += 1,
                Some(_) => c.1 += 1,
                None => c.2 += 1,
            }
        }
        c
    }

    /// The Services whose IPs are in `announced`, with the interfaces of all their IPs.
    pub fn services_on(
        &self,
        announced: &BTreeMap<IpAddr, BTreeSet<String>>,
    ) -> BTreeMap<ServiceKey, BTreeSet<String>> {
        let mut out: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
        for (ip, ifaces) in announced {
            for key in self.ips.get(ip).map(|d| d.services.as_slice()).unwrap_or_default() {
                out.entry(key.clone()).or_default().extend(ifaces.iter().cloned());
            }
        }
        out
    }
}

/// Whether a speaker's Lease is current at `now` (the model's rule, shared with the controller).
pub fn lease_alive(lease: &Lease, now: DateTime<Utc>) -> bool {
    let Some(nanos) = now.timestamp_nanos_opt() else { return false };
    let Ok(now) = k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(nanos)) else { return false };
    ferrolb_model::announce::lease_current(lease, now)
}

/// The members that can hold IPs: they hold their Lease (joining and graceful leave go
/// through it), and heartbeats decide alive or dead faster than Lease expiry and keep
/// members alive while the API server is unreachable.
pub fn members(leases: &[Lease], liveness: &BTreeMap<String, Liveness>, now: DateTime<Utc>) -> BTreeSet<String> {
    leases
        .iter()
        .filter_map(|l| {
            let holder = ferrolb_model::announce::speaker_of(l)?.to_string();
            let ok = match liveness.get(&holder).copied().unwrap_or(Liveness::Unknown) {
                Liveness::Alive => true,
                Liveness::Dead => false,
                Liveness::Unknown => lease_alive(l, now),
            };
            ok.then_some(holder)
        })
        .collect()
}

/// The nodes with a ready endpoint of `svc`.
pub fn ready_nodes(svc: &K8sService, slices: &[Arc<EndpointSlice>]) -> BTreeSet<String> {
    let (ns, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
    slices
        .iter()
        .filter(|s| {
            s.namespace().unwrap_or_default() == ns && s.labels().get("kubernetes.io/service-name") == Some(&name)
        })
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.node_name.clone())
        .collect()
}

/// How the speakers elect, the same on every node (flags of the DaemonSet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// `--revertive`: an IP moves back to its hash winner when that node returns.
    pub revertive: bool,
    /// `--ignore-exclude-lb`: nodes labelled
    /// `node.kubernetes.io/exclude-from-external-load-balancers` announce too.
    pub ignore_exclude_lb: bool,
}

/// Compute the plan. `lb_class` selects the Services ferrolb handles; `now` judges Lease expiry.
pub fn plan(snap: &Snapshot, lb_class: Option<&str>, rules: Rules, now: DateTime<Utc>) -> Plan {
    let mut out = Plan::default();
    let alive = members(&snap.leases, &snap.liveness, now);
    let nodes: Vec<Node> = snap
        .nodes
        .iter()
        .map(|n| {
            let v = ferrolb_model::announce::NodeView::of(n);
            Node {
                alive: alive.contains(&v.name),
                excluded: Node::excluded_by(&v.labels, rules.ignore_exclude_lb),
                name: v.name,
                labels: v.labels,
                network_unavailable: v.network_unavailable,
            }
        })
        .collect();
    out.usable_nodes = nodes.iter().filter(|n| n.usable()).map(|n| n.name.clone()).collect();
    let cfg = &snap.config;
    let pool_labels: BTreeMap<String, _> = cfg.pools.values().map(|p| (p.name.clone(), p.labels.clone())).collect();
    // Services by IP (shared IPs have several); an IP no valid pool contains is not announced.
    let mut by_ip: BTreeMap<IpAddr, Vec<Service>> = BTreeMap::new();
    for svc in snap.services.iter().filter(|s| is_ours(s, lb_class)) {
        let local = svc.spec.as_ref().and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
        let ready = ready_nodes(svc, &snap.slices);
        for ip in ingress_ips(svc) {
            let Some(pool) = cfg.pool_of(&ip) else { continue };
            by_ip.entry(ip).or_default().push(Service {
                key: ServiceKey::of(svc),
                labels: svc.labels().clone(),
                pool: pool.name.clone(),
                local,
                ready_nodes: ready.clone(),
            });
        }
    }
    // Current holders, from the statuses announcing speakers wrote.
    let mut holder_of_svc: BTreeMap<ServiceKey, String> = BTreeMap::new();
    for st in &snap.statuses {
        if let Some(s) = &st.status
            && !s.node.is_empty()
        {
            holder_of_svc.insert(ServiceKey::new(&s.service_namespace, &s.service_name), s.node.clone());
        }
    }
    // A Service's IPs (both families) and IPs shared between Services form one group,
    // announced from one node, so one ServiceL2Status names one node.
    let ips: Vec<IpAddr> = by_ip.keys().copied().collect();
    let mut parent: BTreeMap<IpAddr, IpAddr> = ips.iter().map(|ip| (*ip, *ip)).collect();
    fn root(parent: &mut BTreeMap<IpAddr, IpAddr>, x: IpAddr) -> IpAddr {
        let p = parent[&x];
        if p == x {
            return x;
        }
        let r = root(parent, p);
        parent.insert(x, r);
        r
    }
    let mut by_svc: BTreeMap<ServiceKey, Vec<IpAddr>> = BTreeMap::new();
    for (ip, svcs) in &by_ip {
        for s in svcs {
            by_svc.entry(s.key.clone()).or_default().push(*ip);
        }
    }
    for group in by_svc.values() {
        for w in group.windows(2) {
            let (a, b) = (root(&mut parent, w[0]), root(&mut parent, w[1]));
            if a != b {
                parent.insert(a.max(b), a.min(b));
            }
        }
    }
    let mut groups: BTreeMap<IpAddr, Vec<IpAddr>> = BTreeMap::new();
    for ip in &ips {
        let r = root(&mut parent, *ip);
        groups.entry(r).or_default().push(*ip);
    }
    for (key_ip, members) in groups {
        let mut svcs: Vec<&Service> = Vec::new();
        for ip in &members {
            for s in &by_ip[ip] {
                if !svcs.iter().any(|x| x.key == s.key) {
                    svcs.push(s);
                }
            }
        }
        let eligible = election::eligible(&svcs, &pool_labels, &cfg.l2_advertisements, &nodes);
        // The newest takeover claim for any of the group's IPs, else the status.
        let claimed = members.iter().filter_map(|ip| snap.claims.get(ip)).max_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        let current = match claimed {
            Some((node, _)) => Some(node.as_str()),
            None => svcs.iter().find_map(|s| holder_of_svc.get(&s.key)).map(String::as_str),
        };
        // Node preferences of the group's pool (`preferredNodeSelectors`): only the
        // highest-scoring eligible nodes stand; a holder outside that tier gives way.
        let scores: BTreeMap<&String, i64> = match svcs.first().and_then(|s| cfg.preferences_for(&s.pool)) {
            Some(adv) => eligible
                .keys()
                .map(|n| (n, nodes.iter().find(|x| x.name == *n).map_or(0, |x| adv.preference(&x.labels))))
                .collect(),
            None => eligible.keys().map(|n| (n, 0)).collect(),
        };
        let top = scores.values().copied().max().unwrap_or(0);
        let standing = eligible.keys().filter(|n| scores.get(n).copied().unwrap_or(0) == top);
        // The group's lowest IP is its election key: every speaker picks the same.
        let node = election::elect(&key_ip, standing, current, rules.revertive);
        if node.is_none() && svcs.iter().any(|s| s.local) {
            // Would any node do, endpoints aside? Then endpoints are the cause.
            let anywhere: Vec<Service> = svcs.iter().map(|s| Service { local: false, ..(*s).clone() }).collect();
            let refs: Vec<&Service> = anywhere.iter().collect();
            let could = election::eligible(&refs, &pool_labels, &cfg.l2_advertisements, &nodes);
            if let Some(reporter) = could.keys().next() {
                let list = could.keys().take(5).cloned().collect::<Vec<_>>().join(", ");
                let msg = format!(
                    "externalTrafficPolicy is Local and none of the nodes that may announce it ({list}) has a ready endpoint of the Service"
                );
                for s in &svcs {
                    out.no_endpoint.insert(s.key.clone(), (reporter.clone(), msg.clone()));
                }
            }
        }
        let interfaces = node.as_ref().and_then(|n| eligible.get(n).cloned());
        for ip in members {
            let services = by_ip[&ip].iter().map(|s| s.key.clone()).collect();
            out.ips.insert(ip, Decision { node: node.clone(), interfaces: interfaces.clone(), services });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_model::testing::{self, SvcBuilder};
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:10Z".parse().unwrap()
    }

    fn lease(node: &str, renewed: &str, dur: i32) -> Lease {
        serde_json::from_value(json!({"metadata": {"name": node, "namespace": "ferrolb-system"},
            "spec": {"holderIdentity": node, "renewTime": renewed, "leaseDurationSeconds": dur}}))
        .unwrap()
    }

    fn node(name: &str) -> K8sNode {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})).unwrap()
    }

    fn svc(name: &str, ip: &str) -> SvcBuilder {
        testing::svc(name).ingress(ip)
    }

    fn config() -> Config {
        Config::build(
            &[testing::pool("p", &["198.51.100.0/24", "fd42:f1b::/64"])],
            &[testing::l2_advertisement("all")],
            Default::default(),
        )
    }

    fn base() -> Snapshot {
        Snapshot {
            nodes: vec![node("n1").into(), node("n2").into()],
            leases: vec![
                lease("n1", "2026-01-01T00:00:05.000000Z", 15),
                lease("n2", "2026-01-01T00:00:05.000000Z", 15),
            ],
            config: config(),
            services: vec![svc("web", "198.51.100.7").build().into()],
            ..Default::default()
        }
    }

    #[test]
    fn desired_keeps_the_interfaces_a_node_has_and_reports_the_rest() {
        let mut s = base();
        s.nodes = vec![node("n1").into()];
        s.leases = vec![lease("n1", "2026-01-01T00:00:05.000000Z", 15)];
        s.services = vec![svc("web", "198.51.100.7").build().into(), svc("db", "198.51.100.8").build().into()];
        let mut named = testing::l2_advertisement("named");
        named.spec.interfaces = vec!["eth1".into(), "eth9".into()];
        named.spec.service_selectors = vec![testing::match_labels(&[("app", "db")])];
        Arc::make_mut(&mut s.services[1]).metadata.labels = Some([("app".to_string(), "db".to_string())].into());
        let mut all = testing::l2_advertisement("all");
        all.spec.service_selectors = vec![testing::match_labels(&[("app", "web")])];
        Arc::make_mut(&mut s.services[0]).metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        s.config = Config::build(&[testing::pool("p", &["198.51.100.0/24"])], &[all, named], Default::default());
        let p = plan(&s, None, Rules::default(), now());
        let here: BTreeSet<String> = ["eth0".to_string(), "eth1".to_string()].into();
        let d = p.desired_on("n1", &here);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(d.ips[&ip("198.51.100.7")], here, "a catch-all advertisement: every interface");
        assert_eq!(d.ips[&ip("198.51.100.8")], BTreeSet::from(["eth1".to_string()]));
        assert_eq!(d.missing, BTreeSet::from([(ServiceKey::from("default/db"), "eth9".to_string())]));
        // None of the named interfaces here: elected, not announced, reported.
        let d = p.desired_on("n1", &BTreeSet::from(["eth0".to_string()]));
        assert!(!d.ips.contains_key(&ip("198.51.100.8")));
        assert_eq!(d.missing.len(), 2);
        assert_eq!(d.interface_missing.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["default/db"]);
        assert!(d.interface_missing[&ServiceKey::from("default/db")].contains("(eth1, eth9)"));
        // Some named interface here: announced on it, nothing to report.
        assert!(p.desired_on("n1", &here).interface_missing.is_empty());
        let mine = p.services_on(&p.desired_on("n1", &here).ips);
        assert_eq!(mine.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["default/db", "default/web"]);
        assert!(p.desired_on("n2", &here).ips.is_empty());
    }

    #[test]
    fn lease_expiry() {
        assert!(lease_alive(&lease("n1", "2026-01-01T00:00:05.000000Z", 15), now()));
        assert!(!lease_alive(&lease("n1", "2026-01-01T00:00:05.000000Z", 4), now()));
        let mut released = lease("n1", "2026-01-01T00:00:05.000000Z", 15);
        released.spec.as_mut().unwrap().holder_identity = None;
        assert!(!lease_alive(&released, now()));
    }

    #[test]
    fn exactly_one_node_announces_each_ip() {
        let p = plan(&base(), None, Rules::default(), now());
        let d = &p.ips[&"198.51.100.7".parse().unwrap()];
        let winner = d.node.clone().unwrap();
        assert_eq!(d.services, vec![ServiceKey::from("default/web")]);
        let n1 = p.for_node("n1");
        let n2 = p.for_node("n2");
        assert_eq!(n1.len() + n2.len(), 1);
        assert_eq!(p.counts(&winner), (1, 0, 0));
        assert_eq!(p.counts(if winner == "n1" { "n2" } else { "n1" }), (0, 1, 0));
        assert_eq!(p.usable_nodes.len(), 2);
        assert!(p.for_node(&winner).contains_key(&"198.51.100.7".parse().unwrap()));
    }

    #[test]
    fn preferred_nodes_announce_and_the_others_only_stand_in() {
        use ferrolb_crds::{L2AdvertisementSpec, PreferredNodeSelector};
        let mut s = base();
        let preferring = L2AdvertisementSpec {
            preferred_node_selectors: vec![PreferredNodeSelector {
                weight: 50,
                preference: testing::match_labels(&[("role", "edge")]),
            }],
            ..Default::default()
        };
        s.config = ferrolb_model::Config::build(
            &[testing::pool("p", &["198.51.100.0/24"])],
            &[ferrolb_crds::L2Advertisement::new("prefer", preferring)],
            BTreeMap::new(),
        );
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        for edge in ["n1", "n2"] {
            let mut s = s.clone();
            for n in &mut s.nodes {
                if n.name_any() == edge {
                    Arc::make_mut(n)
                        .metadata
                        .labels
                        .get_or_insert_with(Default::default)
                        .insert("role".into(), "edge".into());
                }
            }
            assert_eq!(plan(&s, None, Rules::default(), now()).ips[&ip].node.as_deref(), Some(edge), "edge {edge}");
            // Held elsewhere (it took over while the edge node was away): the edge node takes it back.
            let other = if edge == "n1" { "n2" } else { "n1" };
            s.claims.insert(ip, (other.to_string(), 1));
            assert_eq!(plan(&s, None, Rules::default(), now()).ips[&ip].node.as_deref(), Some(edge));
            // The edge node's speaker dead: the other stands in.
            s.leases.retain(|l| l.name_any() != edge);
            assert_eq!(plan(&s, None, Rules::default(), now()).ips[&ip].node.as_deref(), Some(other));
        }
    }

    #[test]
    fn excluded_nodes_announce_only_with_ignore_exclude_lb() {
        let mut s = base();
        for n in &mut s.nodes {
            Arc::make_mut(n)
                .metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(ferrolb_crds::annotations::EXCLUDE_FROM_EXTERNAL_LB_LABEL.into(), String::new());
        }
        let honoured = plan(&s, None, Rules::default(), now());
        assert_eq!(honoured.ips.values().next().unwrap().node, None);
        assert!(honoured.usable_nodes.is_empty());
        let ignored = plan(&s, None, Rules { ignore_exclude_lb: true, ..Rules::default() }, now());
        assert!(ignored.ips.values().next().unwrap().node.is_some());
        assert_eq!(ignored.usable_nodes.len(), 2);
    }

    #[test]
    fn dead_speakers_no_advertisement_and_foreign_classes_announce_nothing() {
        let mut s = base();
        s.leases = vec![lease("n1", "2026-01-01T00:00:00.000000Z", 5), lease("n2", "2026-01-01T00:00:00.000000Z", 5)];
        assert_eq!(plan(&s, None, Rules::default(), now()).ips.values().next().unwrap().node, None);
        let mut s = base();
        s.config.l2_advertisements.clear();
        assert_eq!(plan(&s, None, Rules::default(), now()).ips.values().next().unwrap().node, None);
        assert_eq!(plan(&s, None, Rules::default(), now()).counts("n1"), (0, 0, 1));
        let mut s = base();
        s.services = vec![svc("web", "198.51.100.7").class("other.io/x").build().into()];
        assert!(plan(&s, None, Rules::default(), now()).ips.is_empty());
        // An IP outside every valid pool (its pool deleted or invalid) is not announced.
        let mut s = base();
        s.services = vec![svc("web", "203.0.113.7").build().into()];
        assert!(plan(&s, None, Rules::default(), now()).ips.is_empty());
    }

    #[test]
    fn the_current_holder_keeps_the_ip() {
        let mut s = base();
        let first = plan(&s, None, Rules::default(), now()).ips.values().next().unwrap().node.clone().unwrap();
        let other = if first == "n1" { "n2" } else { "n1" };
        s.statuses = vec![
            serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "ferrolb-system"}, "spec": {},
            "status": {"node": other, "serviceName": "web", "serviceNamespace": "default"}}))
            .unwrap(),
        ];
        assert_eq!(plan(&s, None, Rules::default(), now()).ips.values().next().unwrap().node.as_deref(), Some(other));
        assert_eq!(
            plan(&s, None, Rules { revertive: true, ..Rules::default() }, now())
                .ips
                .values()
                .next()
                .unwrap()
                .node
                .as_deref(),
            Some(first.as_str())
        );
    }

    #[test]
    fn a_dual_stack_service_is_announced_from_one_node() {
        let mut s = base();
        s.nodes = (1..=8).map(|i| Arc::new(node(&format!("n{i}")))).collect();
        s.leases = (1..=8).map(|i| lease(&format!("n{i}"), "2026-01-01T00:00:05.000000Z", 15)).collect();
        for i in 0..20 {
            s.services =
                vec![svc("web", &format!("198.51.100.{i}")).ingress(&format!("fd42:f1b::{i:x}")).build().into()];
            let p = plan(&s, None, Rules::default(), now());
            let winners: BTreeSet<_> = p.ips.values().map(|d| d.node.clone()).collect();
            assert_eq!(p.ips.len(), 2);
            assert_eq!(winners.len(), 1, "both families from one node: {p:?}");
        }
    }

    #[test]
    fn heartbeats_override_the_lease_both_ways() {
        let winner = plan(&base(), None, Rules::default(), now()).ips.values().next().unwrap().node.clone().unwrap();
        let other = if winner == "n1" { "n2" } else { "n1" };
        // Crash: the Lease is still current, heartbeats say dead.
        let mut s = base();
        s.liveness.insert(winner.clone(), Liveness::Dead);
        assert_eq!(plan(&s, None, Rules::default(), now()).ips.values().next().unwrap().node.as_deref(), Some(other));
        // API server unreachable: every Lease looks expired, heartbeats keep both alive.
        let mut s = base();
        s.leases = vec![lease("n1", "2026-01-01T00:00:00.000000Z", 5), lease("n2", "2026-01-01T00:00:00.000000Z", 5)];
        s.liveness = [("n1".to_string(), Liveness::Alive), ("n2".to_string(), Liveness::Alive)].into();
        assert_eq!(plan(&s, None, Rules::default(), now()).ips.values().next().unwrap().node, Some(winner.clone()));
        // A released Lease is a graceful leave whatever heartbeats say.
        let mut s = base();
        for l in &mut s.leases {
            if l.metadata.name.as_deref() == Some(winner.as_str()) {
                l.spec.as_mut().unwrap().holder_identity = None;
            }
        }
        s.liveness.insert(winner.clone(), Liveness::Alive);
        assert_eq!(plan(&s, None, Rules::default(), now()).ips.values().next().unwrap().node.as_deref(), Some(other));
    }

    #[test]
    fn a_newer_claim_beats_the_status_as_current_holder() {
        let winner = plan(&base(), None, Rules::default(), now()).ips.values().next().unwrap().node.clone().unwrap();
        let other = if winner == "n1" { "n2" } else { "n1" };
        let mut s = base();
        s.statuses = vec![
            serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "ferrolb-system"}, "spec": {},
            "status": {"node": winner, "serviceName": "web", "serviceNamespace": "default"}}))
            .unwrap(),
        ];
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        s.claims.insert(ip, (other.to_string(), 2_000));
        assert_eq!(plan(&s, None, Rules::default(), now()).ips[&ip].node.as_deref(), Some(other));
    }

    #[test]
    fn local_services_follow_ready_endpoints() {
        let mut s = base();
        s.services = vec![svc("web", "198.51.100.7").local().build().into()];
        s.slices = vec![serde_json::from_value(json!({"metadata": {"name": "web-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["198.51.100.50"], "nodeName": "n2", "conditions": {"ready": true}},
                                                 {"addresses": ["198.51.100.51"], "nodeName": "n1", "conditions": {"ready": false}}]}))
        .map(Arc::new)
        .unwrap()];
        let p = plan(&s, None, Rules::default(), now());
        assert_eq!(p.ips.values().next().unwrap().node.as_deref(), Some("n2"));
        assert!(p.no_endpoint.is_empty());
        // No ready endpoint anywhere: nobody announces, and the first node that could reports why.
        s.slices.clear();
        let p = plan(&s, None, Rules::default(), now());
        assert_eq!(p.ips.values().next().unwrap().node, None);
        let (reporter, msg) = &p.no_endpoint[&ServiceKey::from("default/web")];
        assert_eq!(reporter, "n1");
        assert!(msg.contains("(n1, n2) has a ready endpoint"), "{msg}");
    }
}
