//! All pool and advertisement custom resources plus namespace labels, turned
//! into one validated [`Config`]. Pure: no client, no I/O.
//!
//! An invalid pool is reported (with the field and value at fault) and left
//! out; every other pool keeps working.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_crds::selector::{Labels, Selector, any_matches, parse_all};
use ferrolb_crds::{IPAddressPool, L2Advertisement};
use kube::ResourceExt;

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
    /// `IPv4` / `IPv6`, as in `spec.ipFamilies`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
    /// Parse `IPv4` / `IPv6`.
    pub fn parse(s: &str) -> Option<Family> {
        match s {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }
}

/// An address as an integer, for arithmetic on ranges of either family.
pub fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

/// The address of `family` with integer value `n`.
pub fn from_u128(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(std::net::Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(std::net::Ipv6Addr::from(n)),
    }
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IpRange {
    /// Family of both ends.
    pub family: Family,
    /// First address, as an integer.
    pub start: u128,
    /// Last address, as an integer (inclusive).
    pub end: u128,
}

impl IpRange {
    /// Number of addresses.
    pub fn size(&self) -> u128 {
        self.end - self.start + 1
    }
    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        Family::of(ip) == self.family && (self.start..=self.end).contains(&to_u128(ip))
    }
    fn overlaps(&self, other: &IpRange) -> bool {
        self.family == other.family && self.start <= other.end && other.start <= self.end
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", from_u128(self.family, self.start), from_u128(self.family, self.end))
    }
}

/// Parse one `spec.addresses` entry: a CIDR (host bits allowed, as MetalLB does) or `a-b`.
pub fn parse_range(s: &str) -> Result<IpRange, String> {
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let a: IpAddr = a.trim().parse().map_err(|_| format!("{:?} is not an IP address", a.trim()))?;
        let b: IpAddr = b.trim().parse().map_err(|_| format!("{:?} is not an IP address", b.trim()))?;
        if Family::of(&a) != Family::of(&b) {
            return Err("the two ends of a range must be of the same family".into());
        }
        let (start, end) = (to_u128(&a), to_u128(&b));
        if start > end {
            return Err(format!("range start {a} is after its end {b}"));
        }
        return Ok(IpRange { family: Family::of(&a), start, end });
    }
    let (addr, len) = s.split_once('/').ok_or_else(|| format!("{s:?} is neither a CIDR nor a start-end range"))?;
    let ip: IpAddr = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    let len: u32 =
        len.parse().ok().filter(|l| *l <= bits).ok_or_else(|| format!("prefix length {len:?} is not 0-{bits}"))?;
    let host_bits = bits - len;
    let mask: u128 = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    let start = to_u128(&ip) & !mask;
    Ok(IpRange { family: Family::of(&ip), start, end: start | mask })
}

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
        /// The entry.
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

/// A valid L2Advertisement, reduced to what the controller needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Advertisement {
    /// Name.
    pub name: String,
    /// Pools by name.
    pub pools: Vec<String>,
    /// Pools by label.
    pub pool_selectors: Vec<Selector>,
    /// Services by label.
    pub service_selectors: Vec<Selector>,
}

impl Advertisement {
    /// Whether the advertisement covers `pool` and a Service with `svc_labels`.
    pub fn covers(&self, pool: &Pool, svc_labels: &Labels) -> bool {
        let pool_ok = (self.pools.is_empty() && self.pool_selectors.is_empty())
            || self.pools.contains(&pool.name)
            || self.pool_selectors.iter().any(|s| s.matches(&pool.labels));
        pool_ok && any_matches(&self.service_selectors, svc_labels)
    }
}

/// Everything the allocator and reconciler need, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Valid pools by name.
    pub pools: BTreeMap<String, Pool>,
    /// Invalid pools by name, with why.
    pub invalid_pools: BTreeMap<String, PoolError>,
    /// Valid advertisements.
    pub advertisements: Vec<Advertisement>,
    /// Invalid advertisements by name, with why.
    pub invalid_advertisements: BTreeMap<String, String>,
    /// Namespace labels by namespace name.
    pub namespaces: BTreeMap<String, Labels>,
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
    })
}

fn parse_advertisement(a: &L2Advertisement) -> Result<Advertisement, String> {
    Ok(Advertisement {
        name: a.name_any(),
        pools: a.spec.ip_address_pools.clone(),
        pool_selectors: parse_all("spec.ipAddressPoolSelectors", &a.spec.ip_address_pool_selectors)?,
        service_selectors: parse_all("spec.serviceSelectors", &a.spec.service_selectors)?,
    })
}

impl Config {
    /// Build the config from every pool, advertisement and namespace.
    ///
    /// Pools are considered in name order; when two overlap, the one whose name
    /// sorts later is the invalid one, so the outcome does not depend on list order.
    pub fn build(
        pools: &[IPAddressPool],
        advertisements: &[L2Advertisement],
        namespaces: BTreeMap<String, Labels>,
    ) -> Config {
        let mut cfg = Config { namespaces, ..Config::default() };
        let mut sorted: Vec<&IPAddressPool> = pools.iter().collect();
        sorted.sort_by_key(|p| p.name_any());
        // Accepted ranges so far, by start: (end, family, pool, index).
        let mut accepted: Vec<(IpRange, String)> = Vec::new();
        for p in sorted {
            let pool = match parse_pool(p) {
                Ok(pool) => pool,
                Err(e) => {
                    cfg.invalid_pools.insert(p.name_any(), e);
                    continue;
                }
            };
            let mut clash = None;
            'ranges: for (i, r) in pool.ranges.iter().enumerate() {
                for (j, own) in pool.ranges.iter().enumerate().take(i) {
                    if r.overlaps(own) {
                        clash = Some((i, *r, format!("spec.addresses[{j}] {own}")));
                        break 'ranges;
                    }
                }
                if let Some((other, owner)) = accepted.iter().find(|(a, _)| a.overlaps(r)) {
                    clash = Some((i, *r, format!("IPAddressPool {owner} range {other}")));
                    break;
                }
            }
            if let Some((index, range, other)) = clash {
                cfg.invalid_pools.insert(
                    pool.name.clone(),
                    PoolError::Overlap { pool: pool.name.clone(), index, range: range.to_string(), other },
                );
                continue;
            }
            let mut pool = pool;
            pool.ranges.sort();
            accepted.extend(pool.ranges.iter().map(|r| (*r, pool.name.clone())));
            cfg.pools.insert(pool.name.clone(), pool);
        }
        for a in advertisements {
            match parse_advertisement(a) {
                Ok(adv) => cfg.advertisements.push(adv),
                Err(why) => {
                    cfg.invalid_advertisements.insert(a.name_any(), why);
                }
            }
        }
        cfg.advertisements.sort_by(|a, b| a.name.cmp(&b.name));
        cfg
    }

    /// The pool `ip` belongs to, if any valid pool holds it.
    pub fn pool_of(&self, ip: &IpAddr) -> Option<&Pool> {
        self.pools.values().find(|p| p.contains(ip))
    }

    /// Labels of a namespace (empty if unknown).
    pub fn namespace_labels(&self, ns: &str) -> Labels {
        self.namespaces.get(ns).cloned().unwrap_or_default()
    }

    /// Whether any advertisement covers `pool` for a Service with `svc_labels`.
    pub fn advertised(&self, pool: &str, svc_labels: &Labels) -> bool {
        self.pools.get(pool).is_some_and(|p| self.advertisements.iter().any(|a| a.covers(p, svc_labels)))
    }

    /// Valid pools in allocation order (priority, then name).
    pub fn ordered_pools(&self) -> Vec<&Pool> {
        let mut v: Vec<&Pool> = self.pools.values().collect();
        v.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        v
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ferrolb_crds::{IPAddressPoolSpec, L2AdvertisementSpec, ServiceAllocation};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    pub(crate) fn pool(name: &str, addrs: &[&str]) -> IPAddressPool {
        IPAddressPool::new(
            name,
            IPAddressPoolSpec {
                addresses: addrs.iter().map(|s| s.to_string()).collect(),
                auto_assign: true,
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        )
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn ranges_parse_like_metallb() {
        let table = [
            ("198.51.100.0/24", Ok((Family::V4, 256u128))),
            ("198.51.100.7/24", Ok((Family::V4, 256))),
            ("198.51.100.7/32", Ok((Family::V4, 1))),
            ("198.51.100.10-198.51.100.20", Ok((Family::V4, 11))),
            (" 198.51.100.10 - 198.51.100.10 ", Ok((Family::V4, 1))),
            ("fd42:f1b::/64", Ok((Family::V6, 1u128 << 64))),
            ("fd42:f1b::1-fd42:f1b::ff", Ok((Family::V6, 255))),
            ("::/0", Ok((Family::V6, u128::MAX))),
            ("banana", Err("neither a CIDR nor a start-end range")),
            ("198.51.100.0/33", Err("prefix length")),
            ("198.51.100.20-198.51.100.10", Err("is after its end")),
            ("198.51.100.1-fd42::1", Err("same family")),
            ("198.51.100.1-x", Err("not an IP address")),
        ];
        for (input, want) in table {
            match (parse_range(input), want) {
                (Ok(r), Ok((fam, size))) => {
                    assert_eq!(r.family, fam, "{input}");
                    // ::/0 has 2^128 addresses, one more than u128 holds: its size saturates in end-start+1.
                    if size != u128::MAX {
                        assert_eq!(r.size(), size, "{input}");
                    }
                }
                (Err(e), Err(frag)) => assert!(e.contains(frag), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
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
