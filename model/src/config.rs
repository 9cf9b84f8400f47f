//! Every pool and advertisement custom resource plus namespace labels, turned
//! into one validated [`Config`]. Pure: no client, no I/O. Both binaries build
//! it: the controller to allocate, the speakers to know each IP's pool and who
//! may announce it, so the two can never disagree about a rule.
//!
//! An invalid object is reported (with the field and value at fault) and left
//! out; every other object keeps working.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_crds::IPAddressPool;
use kube::ResourceExt;

use crate::range::{Family, IpRange, parse_range};
use crate::selector::{Labels, Selector, any_matches, parse_all};

/// A valid pool, ready for the allocator.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// Pool name.
    pub name: String,
    /// Labels of the pool (for advertisement pool selectors).
    pub labels: Labels,
    /// Disjoint ranges, sorted.
    pub ranges: Vec<IpRange>,
    /// `spec.autoAssign`.
    pub auto_assign: bool,
    /// `spec.avoidBuggyIPs`.
    pub avoid_buggy_ips: bool,
    /// `spec.serviceAllocation.priority`.
    pub priority: Option<i32>,
    /// `spec.serviceAllocation.namespaces`.
    pub namespaces: Vec<String>,
    /// `spec.serviceAllocation.namespaceSelectors`.
    pub namespace_selectors: Vec<Selector>,
    /// `spec.serviceAllocation.serviceSelectors`.
    pub service_selectors: Vec<Selector>,
    /// The spec is invalid (the reason is in [`Config::invalid_pools`]) and the pool
    /// serves its last valid ranges (`status.effectiveAddresses`): the Services holding
    /// IPs there keep them, and nothing new is allocated from it.
    pub stale: bool,
}

impl Pool {
    /// Whether the pool has any range of `family`.
    pub fn has_family(&self, family: Family) -> bool {
        self.ranges.iter().any(|r| r.family == family)
    }

    /// Whether `ip` lies in the pool.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Whether a Service in `namespace` (with `ns_labels`) and `svc_labels` may use the pool
    /// (autoAssign aside). Namespace names and namespace selectors are alternatives.
    pub fn admits(&self, namespace: &str, ns_labels: &Labels, svc_labels: &Labels) -> bool {
        let ns_ok = (self.namespaces.is_empty() && self.namespace_selectors.is_empty())
            || self.namespaces.iter().any(|n| n == namespace)
            || self.namespace_selectors.iter().any(|s| s.matches(ns_labels));
        ns_ok && any_matches(&self.service_selectors, svc_labels)
    }

    /// Ordering key: priority first (lower first, unset last), then name.
    pub fn order_key(&self) -> (i64, &str) {
        (self.priority.map(i64::from).unwrap_or(i64::MAX), &self.name)
    }

    /// The ranges as `status.effectiveAddresses` carries them (each parses back to itself).
    pub fn effective_addresses(&self) -> Vec<String> {
        self.ranges.iter().map(IpRange::to_string).collect()
    }
}

/// Why a pool is not used. Every variant names the pool and the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PoolError {
    /// An entry of `spec.addresses` does not parse.
    #[error("IPAddressPool {pool}: spec.addresses[{index}] {value:?}: {why}")]
    InvalidAddress {
        /// Pool name.
        pool: String,
        /// Index in `spec.addresses`.
        index: usize,
        value: String,
        /// What is wrong.
        why: String,
    },
    /// The pool has no addresses (or only buggy ones were left).
    #[error("IPAddressPool {pool}: spec.addresses is empty")]
    Empty {
        /// Pool name.
        pool: String,
    },
    /// A range overlaps a range of another pool (or of the same pool).
    #[error("IPAddressPool {pool}: spec.addresses[{index}] {range} overlaps {other}")]
    Overlap {
        /// Pool name.
        pool: String,
        /// Index in `spec.addresses`.
        index: usize,
        /// The overlapping range.
        range: String,
        /// What it overlaps (`IPAddressPool x range` or `spec.addresses[j]`).
        other: String,
    },
    /// A selector in `spec.serviceAllocation` is malformed.
    #[error("IPAddressPool {pool}: {why}")]
    InvalidSelector {
        /// Pool name.
        pool: String,
        /// Field and problem.
        why: String,
    },
}

impl PoolError {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        use ferrolb_crds::conditions::reason;
        match self {
            PoolError::InvalidAddress { .. } => reason::INVALID_ADDRESS,
            PoolError::Empty { .. } => reason::EMPTY,
            PoolError::Overlap { .. } => reason::OVERLAP,
            PoolError::InvalidSelector { .. } => reason::INVALID_SELECTOR,
        }
    }
}

/// A valid L2Advertisement: which pools, Services and nodes it selects and the
/// interfaces it announces on. The controller asks whether a pool is announced at
/// all; the speakers ask which nodes may announce it, from the same value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct L2Advertisement {
    pub name: String,
    /// Pools by name.
    pub pools: Vec<String>,
    /// Pools by label.
    pub pool_selectors: Vec<Selector>,
    /// Nodes that may announce (empty: all).
    pub node_selectors: Vec<Selector>,
    /// Services announced (empty: all).
    pub service_selectors: Vec<Selector>,
    /// Interfaces to announce on (empty: every eligible one).
    pub interfaces: Vec<String>,
    /// Weighted soft node preferences (`spec.preferredNodeSelectors`).
    pub preferred: Vec<(i32, Selector)>,
}

impl L2Advertisement {
    /// Whether the advertisement covers the pool named `pool` (with `pool_labels`) and a
    /// Service with `svc_labels`. No pool named and no pool selector means every pool.
    pub fn covers(&self, pool: &str, pool_labels: &Labels, svc_labels: &Labels) -> bool {
        let pool_ok = (self.pools.is_empty() && self.pool_selectors.is_empty())
            || self.pools.iter().any(|p| p == pool)
            || self.pool_selectors.iter().any(|s| s.matches(pool_labels));
        pool_ok && any_matches(&self.service_selectors, svc_labels)
    }

    /// Whether a node with `labels` may announce for this advertisement.
    pub fn selects_node(&self, labels: &Labels) -> bool {
        any_matches(&self.node_selectors, labels)
    }

    /// A node's preference score: the sum of the weights of the preferences it matches.
    pub fn preference(&self, labels: &Labels) -> i64 {
        self.preferred.iter().filter(|(_, s)| s.matches(labels)).map(|(w, _)| i64::from(*w)).sum()
    }

    /// Parse an `L2Advertisement`; the error names the field at fault.
    pub fn parse(a: &ferrolb_crds::L2Advertisement) -> Result<L2Advertisement, String> {
        let prefs = &a.spec.preferred_node_selectors;
        if !prefs.is_empty() && !a.spec.service_selectors.is_empty() {
            return Err("spec.preferredNodeSelectors cannot be combined with spec.serviceSelectors: the announcing \
                        node is chosen per IP, for every Service of the pool; give such Services a pool of their own"
                .into());
        }
        let mut preferred = Vec::new();
        for (i, p) in prefs.iter().enumerate() {
            if !(1..=100).contains(&p.weight) {
                return Err(format!("spec.preferredNodeSelectors[{i}].weight: {} is not in 1-100", p.weight));
            }
            let field = format!("spec.preferredNodeSelectors[{i}].preference");
            preferred.push((p.weight, Selector::parse(&p.preference).map_err(|e| format!("{field}.{e}"))?));
        }
        Ok(L2Advertisement {
            preferred,
            name: a.name_any(),
            pools: a.spec.ip_address_pools.clone(),
            pool_selectors: parse_all("spec.ipAddressPoolSelectors", &a.spec.ip_address_pool_selectors)?,
            node_selectors: parse_all("spec.nodeSelectors", &a.spec.node_selectors)?,
            service_selectors: parse_all("spec.serviceSelectors", &a.spec.service_selectors)?,
            interfaces: a.spec.interfaces.clone(),
        })
    }
}

/// Everything the allocator and reconciler need, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Valid pools by name.
    pub pools: BTreeMap<String, Pool>,
    /// Pools whose spec is invalid, by name, with why. A stale one (see [`Pool::stale`])
    /// is in [`Config::pools`] too, with its last valid ranges.
    pub invalid_pools: BTreeMap<String, PoolError>,
    /// Valid L2Advertisements, by name. (BGP advertisements join them as a field of
    /// their own, validated the same way.)
    pub l2_advertisements: Vec<L2Advertisement>,
    /// Invalid advertisements by name, with why.
    pub invalid_advertisements: BTreeMap<String, String>,
    /// Namespace labels by namespace name.
    pub namespaces: BTreeMap<String, Labels>,
    /// Valid BGPPeers, by name.
    pub bgp_peers: Vec<crate::bgp::BgpPeer>,
    /// Invalid BGPPeers by name, with why.
    pub invalid_bgp_peers: BTreeMap<String, String>,
    /// Valid BGPAdvertisements, by name.
    pub bgp_advertisements: Vec<crate::bgp::BgpAdvertisement>,
    /// Invalid BGPAdvertisements by name, with why.
    pub invalid_bgp_advertisements: BTreeMap<String, String>,
    /// Invalid BFDProfiles by name, with why (the peers naming them are invalid too).
    pub invalid_bfd_profiles: BTreeMap<String, String>,
    /// Invalid Communities by name, with why (their valid aliases are used).
    pub invalid_communities: BTreeMap<String, String>,
}

fn parse_pool(p: &IPAddressPool) -> Result<Pool, PoolError> {
    let name = p.name_any();
    if p.spec.addresses.is_empty() {
        return Err(PoolError::Empty { pool: name });
    }
    let mut ranges = Vec::new();
    for (index, a) in p.spec.addresses.iter().enumerate() {
        let r = parse_range(a).map_err(|why| PoolError::InvalidAddress {
            pool: name.clone(),
            index,
            value: a.clone(),
            why,
        })?;
        ranges.push(r);
    }
    let alloc = p.spec.service_allocation.clone().unwrap_or_default();
    let sel = |field: &str, s: &[_]| {
        parse_all(field, s).map_err(|why| PoolError::InvalidSelector { pool: name.clone(), why })
    };
    Ok(Pool {
        labels: p.labels().clone(),
        auto_assign: p.spec.auto_assign,
        avoid_buggy_ips: p.spec.avoid_buggy_ips,
        priority: alloc.priority,
        namespaces: alloc.namespaces.clone(),
        namespace_selectors: sel("spec.serviceAllocation.namespaceSelectors", &alloc.namespace_selectors)?,
        service_selectors: sel("spec.serviceAllocation.serviceSelectors", &alloc.service_selectors)?,
        ranges,
        name,
        stale: false,
    })
}

/// The ranges of `status.effectiveAddresses` (those that parse; the controller wrote them).
fn effective_ranges(p: &IPAddressPool) -> Vec<IpRange> {
    let written = p.status.as_ref().map(|s| s.effective_addresses.as_slice()).unwrap_or_default();
    written.iter().filter_map(|a| parse_range(a).ok()).collect()
}

/// A pool whose spec is invalid, serving `ranges` (its last valid ones): it keeps
/// what it holds and admits nothing new.
fn stale_pool(p: &IPAddressPool, mut ranges: Vec<IpRange>) -> Pool {
    ranges.sort();
    Pool {
        name: p.name_any(),
        labels: p.labels().clone(),
        ranges,
        auto_assign: false,
        avoid_buggy_ips: p.spec.avoid_buggy_ips,
        priority: None,
        namespaces: Vec::new(),
        namespace_selectors: Vec::new(),
        service_selectors: Vec::new(),
        stale: true,
    }
}

/// The first range of `pool` that overlaps another of its own, a range accepted
/// before it, or a range another pool serves: `(index, range, what it overlaps)`.
fn overlap(
    pool: &Pool,
    accepted: &[(IpRange, String)],
    serving: &[(String, Vec<IpRange>)],
) -> Option<(usize, IpRange, String)> {
    for (i, r) in pool.ranges.iter().enumerate() {
        if let Some((j, own)) = pool.ranges.iter().enumerate().take(i).find(|(_, own)| r.overlaps(own)) {
            return Some((i, *r, format!("spec.addresses[{j}] {own}")));
        }
        if let Some((other, owner)) = accepted.iter().find(|(a, _)| a.overlaps(r)) {
            return Some((i, *r, format!("IPAddressPool {owner} range {other}")));
        }
        let in_use = serving.iter().filter(|(n, _)| *n != pool.name);
        if let Some((owner, other)) =
            in_use.flat_map(|(n, rs)| rs.iter().map(move |o| (n, o))).find(|(_, o)| o.overlaps(r))
        {
            return Some((i, *r, format!("IPAddressPool {owner} range {other}, which it serves")));
        }
    }
    None
}

impl Config {
    /// Build the config from every pool, advertisement and namespace.
    ///
    /// Nothing in use is taken away because another object appeared or changed:
    /// - a pool's spec is checked for overlap against the ranges every other pool
    ///   serves now (`status.effectiveAddresses`), then against the pools accepted
    ///   before it, oldest first (creation time, then name). A new pool overlapping
    ///   one in use is the invalid one, whatever the names; so is an edit that
    ///   grows a pool into another's ranges;
    /// - a pool whose spec is invalid but which served ranges before is kept,
    ///   [`Pool::stale`], with those ranges: its Services keep their IPs;
    /// - only deleting or shrinking a pool moves its Services (the user asked for it).
    ///
    /// The outcome depends only on the objects, never on list order, so the
    /// controller and every speaker reach the same config.
    pub fn build(
        pools: &[IPAddressPool],
        advertisements: &[ferrolb_crds::L2Advertisement],
        namespaces: BTreeMap<String, Labels>,
    ) -> Config {
        let mut cfg = Config { namespaces, ..Config::default() };
        let mut sorted: Vec<&IPAddressPool> = pools.iter().collect();
        sorted.sort_by_key(|p| (p.metadata.creation_timestamp.as_ref().map(|t| t.0), p.name_any()));
        let serving: Vec<(String, Vec<IpRange>)> = sorted.iter().map(|p| (p.name_any(), effective_ranges(p))).collect();
        // Ranges accepted so far, with their pool.
        let mut accepted: Vec<(IpRange, String)> = Vec::new();
        for p in sorted {
            let name = p.name_any();
            let verdict = parse_pool(p).and_then(|pool| match overlap(&pool, &accepted, &serving) {
                Some((index, range, other)) => {
                    Err(PoolError::Overlap { pool: name.clone(), index, range: range.to_string(), other })
                }
                None => Ok(pool),
            });
            let pool = match verdict {
                Ok(mut pool) => {
                    pool.ranges.sort();
                    pool
                }
                Err(e) => {
                    let last: Vec<IpRange> =
                        serving.iter().find(|(n, _)| *n == name).map(|(_, r)| r.clone()).unwrap_or_default();
                    let free = !last.is_empty() && !last.iter().any(|r| accepted.iter().any(|(a, _)| a.overlaps(r)));
                    cfg.invalid_pools.insert(name, e);
                    if !free {
                        continue;
                    }
                    stale_pool(p, last)
                }
            };
            accepted.extend(pool.ranges.iter().map(|r| (*r, pool.name.clone())));
            cfg.pools.insert(pool.name.clone(), pool);
        }
        for a in advertisements {
            match L2Advertisement::parse(a) {
                Ok(adv) => cfg.l2_advertisements.push(adv),
                Err(why) => {
                    cfg.invalid_advertisements.insert(a.name_any(), why);
                }
            }
        }
        cfg.l2_advertisements.sort_by(|a, b| a.name.cmp(&b.name));
        // At most one advertisement with preferences per pool: the oldest keeps them, the
        // others are invalid (their weights would silently reorder another's policy).
        let created: BTreeMap<String, Option<k8s_openapi::jiff::Timestamp>> = advertisements
            .iter()
            .map(|a| (a.name_any(), a.metadata.creation_timestamp.as_ref().map(|t| t.0)))
            .collect();
        let mut with_prefs: Vec<usize> =
            (0..cfg.l2_advertisements.len()).filter(|i| !cfg.l2_advertisements[*i].preferred.is_empty()).collect();
        with_prefs.sort_by_key(|i| (created.get(&cfg.l2_advertisements[*i].name).cloned().flatten(), *i));
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        let mut refused: BTreeMap<String, String> = BTreeMap::new();
        for i in with_prefs {
            let a = &cfg.l2_advertisements[i];
            let clash = cfg
                .pools
                .values()
                .filter(|p| a.covers(&p.name, &p.labels, &Labels::new()))
                .find_map(|p| owner.get(&p.name).map(|o| (p.name.clone(), o.clone())));
            match clash {
                Some((pool, other)) => {
                    refused.insert(
                        a.name.clone(),
                        format!(
                            "spec.preferredNodeSelectors: IPAddressPool {pool} already takes its node preferences from \
                         L2Advertisement {other} (at most one advertisement with preferences per pool)"
                        ),
                    );
                }
                None => {
                    for p in cfg.pools.values().filter(|p| a.covers(&p.name, &p.labels, &Labels::new())) {
                        owner.insert(p.name.clone(), a.name.clone());
                    }
                }
            }
        }
        cfg.l2_advertisements.retain(|a| !refused.contains_key(&a.name));
        cfg.invalid_advertisements.extend(refused);
        cfg
    }

    /// Add the BGP objects of `namespace` (ferrolb's): peers, advertisements (checked
    /// against the pools they cover) and community aliases. An alias defined twice with
    /// different values is refused in every Community that defines it.
    pub fn with_bgp(
        mut self,
        namespace: &str,
        peers: &[ferrolb_crds::BGPPeer],
        advertisements: &[ferrolb_crds::BGPAdvertisement],
        communities: &[ferrolb_crds::Community],
        bfd_profiles: &[ferrolb_crds::BFDProfile],
    ) -> Config {
        use crate::bgp::{BfdProfile, BgpAdvertisement, BgpPeer, CommunityValue, parse_community};
        let mut aliases: BTreeMap<String, (CommunityValue, String)> = BTreeMap::new();
        let mut clashes: BTreeSet<String> = BTreeSet::new();
        for c in communities {
            for (i, a) in c.spec.communities.iter().enumerate() {
                match parse_community(&a.value) {
                    Err(e) => {
                        self.invalid_communities
                            .entry(c.name_any())
                            .or_insert(format!("spec.communities[{i}].value {e}"));
                    }
                    Ok(v) => match aliases.get(&a.name) {
                        Some((other, owner)) if *other != v => {
                            clashes.insert(a.name.clone());
                            self.invalid_communities.entry(c.name_any()).or_insert(format!(
                                "spec.communities[{i}].name {:?} is defined with another value in Community {owner}",
                                a.name
                            ));
                        }
                        Some(_) => {}
                        None => {
                            aliases.insert(a.name.clone(), (v, c.name_any()));
                        }
                    },
                }
            }
        }
        let aliases: BTreeMap<String, CommunityValue> =
            aliases.into_iter().filter(|(n, _)| !clashes.contains(n)).map(|(n, (v, _))| (n, v)).collect();
        let profiles = BfdProfile::parse_all(bfd_profiles);
        for (name, verdict) in &profiles {
            if let Err(why) = verdict {
                self.invalid_bfd_profiles.insert(name.clone(), why.clone());
            }
        }
        for p in peers {
            match BgpPeer::parse(p, namespace, &profiles) {
                Ok(peer) => self.bgp_peers.push(peer),
                Err(why) => {
                    self.invalid_bgp_peers.insert(p.name_any(), why);
                }
            }
        }
        self.bgp_peers.sort_by(|a, b| a.name.cmp(&b.name));
        for a in advertisements {
            let verdict = BgpAdvertisement::parse(a, &aliases).and_then(|adv| {
                let misfit = self
                    .pools
                    .values()
                    .filter(|p| adv.covers(&p.name, &p.labels))
                    .flat_map(|p| p.ranges.iter().map(move |r| (p, r)))
                    .find_map(|(p, r)| adv.aggregation_misfit(&p.name, r));
                match misfit {
                    Some(why) => Err(why),
                    None => Ok(adv),
                }
            });
            match verdict {
                Ok(adv) => self.bgp_advertisements.push(adv),
                Err(why) => {
                    self.invalid_bgp_advertisements.insert(a.name_any(), why);
                }
            }
        }
        self.bgp_advertisements.sort_by(|a, b| a.name.cmp(&b.name));
        self
    }

    /// The advertisement whose preferences order the nodes for `pool` (at most one).
    pub fn preferences_for(&self, pool: &str) -> Option<&L2Advertisement> {
        let p = self.pools.get(pool)?;
        self.l2_advertisements.iter().find(|a| !a.preferred.is_empty() && a.covers(&p.name, &p.labels, &Labels::new()))
    }

    /// Pools serving their last valid ranges because their spec is invalid.
    pub fn stale_pools(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values().filter(|p| p.stale)
    }

    /// The pool `ip` belongs to, if any valid pool holds it. Valid pools never overlap,
    /// so this is the pool the controller allocated it from: the speakers derive a
    /// Service's pool here instead of waiting for the controller's annotation.
    pub fn pool_of(&self, ip: &IpAddr) -> Option<&Pool> {
        self.pools.values().find(|p| p.contains(ip))
    }

    /// Labels of a namespace (empty if unknown).
    pub fn namespace_labels(&self, ns: &str) -> Labels {
        self.namespaces.get(ns).cloned().unwrap_or_default()
    }

    /// Whether any advertisement covers `pool` for a Service with `svc_labels`.
    pub fn advertised(&self, pool: &str, svc_labels: &Labels) -> bool {
        self.pools
            .get(pool)
            .is_some_and(|p| self.l2_advertisements.iter().any(|a| a.covers(&p.name, &p.labels, svc_labels)))
    }

    /// Pools new IPs may come from (valid, not stale), in allocation order (priority, then name).
    pub fn ordered_pools(&self) -> Vec<&Pool> {
        let mut v: Vec<&Pool> = self.pools.values().filter(|p| !p.stale).collect();
        v.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pool;
    use ferrolb_crds::{L2Advertisement, L2AdvertisementSpec, ServiceAllocation};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn invalid_pools_are_reported_and_skipped() {
        let pools = vec![
            pool("a-good", &["198.51.100.0/26"]),
            pool("b-garbage", &["198.51.100.128/26", "nope"]),
            pool("c-overlap", &["198.51.100.32-198.51.100.40"]),
            pool("d-empty", &[]),
            pool("e-self-overlap", &["203.0.113.0/24", "203.0.113.5/32"]),
            pool("f-v6", &["fd42:f1b::/64"]),
        ];
        let cfg = Config::build(&pools, &[], BTreeMap::new());
        assert_eq!(cfg.pools.keys().collect::<Vec<_>>(), ["a-good", "f-v6"]);
        let e = |n: &str| cfg.invalid_pools[n].to_string();
        assert_eq!(
            e("b-garbage"),
            "IPAddressPool b-garbage: spec.addresses[1] \"nope\": \"nope\" is neither a CIDR nor a start-end range"
        );
        assert!(
            e("c-overlap").contains("spec.addresses[0] 198.51.100.32-198.51.100.40 overlaps IPAddressPool a-good"),
            "{}",
            e("c-overlap")
        );
        assert_eq!(e("d-empty"), "IPAddressPool d-empty: spec.addresses is empty");
        assert!(e("e-self-overlap").contains("overlaps spec.addresses[0]"));
        assert_eq!(cfg.invalid_pools["c-overlap"].reason(), "Overlap");
    }

    #[test]
    fn overlap_verdict_does_not_depend_on_list_order() {
        let a = pool("alpha", &["198.51.100.0/24"]);
        let b = pool("beta", &["198.51.100.128/25"]);
        let one = Config::build(&[a.clone(), b.clone()], &[], BTreeMap::new());
        let two = Config::build(&[b, a], &[], BTreeMap::new());
        assert_eq!(one, two);
        assert!(one.invalid_pools.contains_key("beta"));
    }

    /// `p` created at second `t` of 2026 and serving `effective` (as the controller wrote).
    fn aged(mut p: IPAddressPool, t: i64, effective: &[&str]) -> IPAddressPool {
        let at = k8s_openapi::jiff::Timestamp::from_second(1_767_225_600 + t).expect("valid time");
        p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at));
        p.status = Some(ferrolb_crds::IPAddressPoolStatus {
            effective_addresses: effective.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
        p
    }

    #[test]
    fn a_newcomer_overlapping_a_pool_never_takes_its_ranges() {
        let prod = |serving: &[&str]| aged(pool("prod", &["198.51.100.240/28"]), 0, serving);
        let newcomer = aged(pool("aaa", &["198.51.100.0/24"]), 60, &[]);
        // Older wins even before the controller recorded what prod serves, whatever the names.
        for cfg in [
            Config::build(&[prod(&[]), newcomer.clone()], &[], BTreeMap::new()),
            Config::build(&[newcomer.clone(), prod(&["198.51.100.240-198.51.100.255"])], &[], BTreeMap::new()),
        ] {
            assert_eq!(cfg.pools.keys().collect::<Vec<_>>(), ["prod"]);
            assert!(!cfg.pools["prod"].stale);
            let e = cfg.invalid_pools["aaa"].to_string();
            assert!(e.contains("spec.addresses[0] 198.51.100.0-198.51.100.255 overlaps IPAddressPool prod"), "{e}");
        }
        // Even an older pool (a restored backup) cannot take ranges that another serves.
        let restored = aged(pool("aaa", &["198.51.100.0/24"]), -60, &[]);
        let cfg = Config::build(&[restored, prod(&["198.51.100.240-198.51.100.255"])], &[], BTreeMap::new());
        assert_eq!(cfg.pools.keys().collect::<Vec<_>>(), ["prod"]);
        assert!(cfg.invalid_pools["aaa"].to_string().contains("which it serves"));
    }

    #[test]
    fn a_pool_edited_into_an_invalid_spec_keeps_serving_its_last_valid_ranges() {
        let other = aged(pool("other", &["203.0.113.0/24"]), 0, &["203.0.113.0-203.0.113.255"]);
        let serving = ["198.51.100.0-198.51.100.63"];
        for (spec, why) in [
            (vec!["198.51.100.0/26", "not-an-ip"], "spec.addresses[1]"),
            (vec!["198.51.100.0/26", "203.0.113.128/25"], "overlaps IPAddressPool other"),
            (vec![], "spec.addresses is empty"),
        ] {
            let edited = aged(pool("prod", &spec), 60, &serving);
            let cfg = Config::build(&[edited, other.clone()], &[], BTreeMap::new());
            let p = &cfg.pools["prod"];
            assert!(p.stale, "{spec:?}");
            assert_eq!(p.effective_addresses(), serving);
            assert!(cfg.invalid_pools["prod"].to_string().contains(why), "{}", cfg.invalid_pools["prod"]);
            assert_eq!(cfg.pool_of(&"198.51.100.7".parse().unwrap()).map(|p| p.name.as_str()), Some("prod"));
            assert_eq!(cfg.ordered_pools().iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["other"]);
            assert!(!cfg.pools["other"].stale);
        }
        // A pool that never served anything has nothing to keep.
        let fresh = aged(pool("prod", &["not-an-ip"]), 60, &[]);
        assert!(!Config::build(&[fresh], &[], BTreeMap::new()).pools.contains_key("prod"));
        // Shrinking is the user's wish: the new ranges are served.
        let shrunk = aged(pool("prod", &["198.51.100.0/27"]), 60, &serving);
        let cfg = Config::build(&[shrunk, other], &[], BTreeMap::new());
        assert_eq!(cfg.pools["prod"].effective_addresses(), ["198.51.100.0-198.51.100.31"]);
        assert!(!cfg.pools["prod"].stale);
    }

    fn preferring(name: &str, pools: &[&str], prefs: &[(i32, &[(&str, &str)])]) -> L2Advertisement {
        use ferrolb_crds::{L2AdvertisementSpec, PreferredNodeSelector};
        L2Advertisement::new(
            name,
            L2AdvertisementSpec {
                ip_address_pools: pools.iter().map(|p| p.to_string()).collect(),
                preferred_node_selectors: prefs
                    .iter()
                    .map(|(w, l)| PreferredNodeSelector {
                        weight: *w,
                        preference: LabelSelector { match_labels: Some(labels(l)), ..Default::default() },
                    })
                    .collect(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn node_preferences_add_up_and_one_advertisement_per_pool_holds_them() {
        let pools = [pool("edge", &["198.51.100.0/28"]), pool("other", &["198.51.100.16/28"])];
        let first = preferring("a-first", &["edge"], &[(60, &[("zone", "primary")]), (50, &[("gpu", "true")])]);
        let second = preferring("b-second", &["edge", "other"], &[(100, &[("zone", "secondary")])]);
        let third = preferring("c-other", &["other"], &[(10, &[("zone", "primary")])]);
        let cfg = Config::build(&pools, &[first, second, third], BTreeMap::new());
        let edge = cfg.preferences_for("edge").expect("edge has preferences");
        assert_eq!(edge.name, "a-first");
        assert_eq!(edge.preference(&labels(&[("zone", "primary"), ("gpu", "true")])), 110);
        assert_eq!(edge.preference(&labels(&[("zone", "primary")])), 60);
        assert_eq!(edge.preference(&labels(&[])), 0);
        let why = &cfg.invalid_advertisements["b-second"];
        assert!(
            why.contains("IPAddressPool edge already takes its node preferences from L2Advertisement a-first"),
            "{why}"
        );
        assert_eq!(cfg.preferences_for("other").map(|a| a.name.as_str()), Some("c-other"));

        let mut both = preferring("both", &[], &[(1, &[("zone", "primary")])]);
        both.spec.service_selectors =
            vec![LabelSelector { match_labels: Some(labels(&[("app", "x")])), ..Default::default() }];
        let mut heavy = preferring("heavy", &[], &[(101, &[("zone", "primary")])]);
        heavy.metadata.name = Some("heavy".into());
        let cfg = Config::build(&pools, &[both, heavy], BTreeMap::new());
        assert!(cfg.invalid_advertisements["both"].contains("cannot be combined with spec.serviceSelectors"));
        assert_eq!(cfg.invalid_advertisements["heavy"], "spec.preferredNodeSelectors[0].weight: 101 is not in 1-100");
    }

    #[test]
    fn bad_selectors_invalidate_only_their_pool() {
        let mut p = pool("sel", &["198.51.100.0/24"]);
        p.spec.service_allocation = Some(ServiceAllocation {
            service_selectors: vec![LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "k".into(),
                    operator: "Is".into(),
                    values: None,
                }]),
                ..Default::default()
            }],
            ..Default::default()
        });
        let cfg = Config::build(&[p, pool("ok", &["203.0.113.0/24"])], &[], BTreeMap::new());
        assert!(cfg.pools.contains_key("ok"));
        assert!(
            cfg.invalid_pools["sel"]
                .to_string()
                .contains("spec.serviceAllocation.serviceSelectors[0].matchExpressions[0].operator")
        );
    }

    #[test]
    fn admission_by_namespace_names_selectors_and_service_labels() {
        let mut p = pool("p", &["198.51.100.0/24"]);
        p.spec.service_allocation = Some(ServiceAllocation {
            namespaces: vec!["team-a".into()],
            namespace_selectors: vec![LabelSelector {
                match_labels: Some(labels(&[("env", "prod")])),
                ..Default::default()
            }],
            service_selectors: vec![LabelSelector {
                match_labels: Some(labels(&[("lb", "public")])),
                ..Default::default()
            }],
            priority: Some(1),
        });
        let cfg = Config::build(&[p], &[], BTreeMap::new());
        let p = &cfg.pools["p"];
        let public = labels(&[("lb", "public")]);
        assert!(p.admits("team-a", &labels(&[]), &public));
        assert!(p.admits("other", &labels(&[("env", "prod")]), &public));
        assert!(!p.admits("other", &labels(&[("env", "dev")]), &public));
        assert!(!p.admits("team-a", &labels(&[]), &labels(&[])));
    }

    #[test]
    fn pools_order_by_priority_then_name() {
        let mut pools = vec![
            pool("zeta", &["198.51.100.0/28"]),
            pool("alpha", &["198.51.100.16/28"]),
            pool("mid", &["198.51.100.32/28"]),
        ];
        pools[0].spec.service_allocation = Some(ServiceAllocation { priority: Some(1), ..Default::default() });
        pools[2].spec.service_allocation = Some(ServiceAllocation { priority: Some(5), ..Default::default() });
        let cfg = Config::build(&pools, &[], BTreeMap::new());
        let names: Vec<&str> = cfg.ordered_pools().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["zeta", "mid", "alpha"]);
    }

    #[test]
    fn advertisements_cover_pools_by_name_selector_or_all() {
        let mut labelled = pool("labelled", &["198.51.100.0/24"]);
        labelled.metadata.labels = Some(labels(&[("tier", "edge")]));
        let cfg_with = |adv: L2AdvertisementSpec| {
            Config::build(
                &[labelled.clone(), pool("other", &["203.0.113.0/24"])],
                &[L2Advertisement::new("adv", adv)],
                BTreeMap::new(),
            )
        };
        let all = cfg_with(L2AdvertisementSpec::default());
        assert!(all.advertised("labelled", &labels(&[])) && all.advertised("other", &labels(&[])));
        let by_name = cfg_with(L2AdvertisementSpec { ip_address_pools: vec!["other".into()], ..Default::default() });
        assert!(!by_name.advertised("labelled", &labels(&[])) && by_name.advertised("other", &labels(&[])));
        let by_sel = cfg_with(L2AdvertisementSpec {
            ip_address_pool_selectors: vec![LabelSelector {
                match_labels: Some(labels(&[("tier", "edge")])),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(by_sel.advertised("labelled", &labels(&[])) && !by_sel.advertised("other", &labels(&[])));
        let by_svc = cfg_with(L2AdvertisementSpec {
            service_selectors: vec![LabelSelector {
                match_labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(by_svc.advertised("other", &labels(&[("app", "web")])) && !by_svc.advertised("other", &labels(&[])));
        let none = Config::build(&[pool("p", &["198.51.100.0/24"])], &[], BTreeMap::new());
        assert!(!none.advertised("p", &labels(&[])));
    }
}
