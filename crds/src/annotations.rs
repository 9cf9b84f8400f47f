//! Service annotations ferrolb reads and writes.
//!
//! Each input annotation is accepted in three spellings: ferrolb's own and the
//! two MetalLB has used (`metallb.io/*` and the older `metallb.universe.tf/*`),
//! so Services written for MetalLB keep working. The first spelling present in
//! [`ALL_SPELLINGS`] order wins.

/// Requested IPs, comma-separated, at most one per family.
pub const LOAD_BALANCER_IPS: &str = "ferrolb.io/loadBalancerIPs";
/// Name of the pool to allocate from.
pub const ADDRESS_POOL: &str = "ferrolb.io/address-pool";
/// Sharing key: Services with the same key may share one IP.
pub const ALLOW_SHARED_IP: &str = "ferrolb.io/allow-shared-ip";
/// Output: the pool the Service's IPs were allocated from.
pub const IP_ALLOCATED_FROM_POOL: &str = "ferrolb.io/ip-allocated-from-pool";

/// MetalLB's current spelling of [`LOAD_BALANCER_IPS`].
pub const METALLB_LOAD_BALANCER_IPS: &str = "metallb.io/loadBalancerIPs";
/// MetalLB's current spelling of [`ADDRESS_POOL`].
pub const METALLB_ADDRESS_POOL: &str = "metallb.io/address-pool";
/// MetalLB's current spelling of [`ALLOW_SHARED_IP`].
pub const METALLB_ALLOW_SHARED_IP: &str = "metallb.io/allow-shared-ip";

/// MetalLB's legacy spelling of [`LOAD_BALANCER_IPS`].
pub const LEGACY_LOAD_BALANCER_IPS: &str = "metallb.universe.tf/loadBalancerIPs";
/// MetalLB's legacy spelling of [`ADDRESS_POOL`].
pub const LEGACY_ADDRESS_POOL: &str = "metallb.universe.tf/address-pool";
/// MetalLB's legacy spelling of [`ALLOW_SHARED_IP`].
pub const LEGACY_ALLOW_SHARED_IP: &str = "metallb.universe.tf/allow-shared-ip";

/// An input annotation with all the spellings it is accepted under, preferred first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Annotation {
    /// The spellings, ferrolb's own first.
    pub spellings: [&'static str; 3],
}

/// `loadBalancerIPs` in all accepted spellings.
pub const LOAD_BALANCER_IPS_ANY: Annotation =
    Annotation { spellings: [LOAD_BALANCER_IPS, METALLB_LOAD_BALANCER_IPS, LEGACY_LOAD_BALANCER_IPS] };
/// `address-pool` in all accepted spellings.
pub const ADDRESS_POOL_ANY: Annotation =
    Annotation { spellings: [ADDRESS_POOL, METALLB_ADDRESS_POOL, LEGACY_ADDRESS_POOL] };
/// `allow-shared-ip` in all accepted spellings.
pub const ALLOW_SHARED_IP_ANY: Annotation =
    Annotation { spellings: [ALLOW_SHARED_IP, METALLB_ALLOW_SHARED_IP, LEGACY_ALLOW_SHARED_IP] };

/// Every input annotation ferrolb understands.
pub const ALL_SPELLINGS: [Annotation; 3] = [LOAD_BALANCER_IPS_ANY, ADDRESS_POOL_ANY, ALLOW_SHARED_IP_ANY];

impl Annotation {
    /// The value of the first spelling present in `annotations`, with the key it was found under.
    pub fn lookup<'a, I>(&self, annotations: I) -> Option<(&'static str, &'a str)>
    where
        I: IntoIterator<Item = (&'a String, &'a String)> + Clone,
    {
        self.spellings.iter().find_map(|key| {
            annotations.clone().into_iter().find(|(k, _)| k.as_str() == *key).map(|(_, v)| (*key, v.as_str()))
        })
    }
}

/// Label that excludes a node from announcing load-balancer IPs (upstream Kubernetes).
pub const EXCLUDE_FROM_EXTERNAL_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// Label on a ServiceL2Status naming the Service it describes.
pub const SERVICE_NAME_LABEL: &str = "ferrolb.io/service-name";
/// Label on a ServiceL2Status naming the namespace of the Service it describes.
pub const SERVICE_NAMESPACE_LABEL: &str = "ferrolb.io/service-namespace";
/// Label on a ServiceL2Status naming the announcing node (on a report: the reporting one).
pub const NODE_LABEL: &str = "ferrolb.io/node";
/// A ServiceL2Status whose name ends so is a speaker's report that the Service's IPs
/// are not announced, and why (`<namespace>.<name>.not-announced`); it has no status.
pub const NOT_ANNOUNCED_SUFFIX: &str = ".not-announced";
/// Label on such a report: the cause (`NoReadyEndpoint`, `InterfaceMissing`).
pub const NOT_ANNOUNCED_REASON_LABEL: &str = "ferrolb.io/not-announced";
/// Annotation on such a report: what a person reads.
pub const NOT_ANNOUNCED_MESSAGE_ANNOTATION: &str = "ferrolb.io/not-announced-message";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn own_spelling_wins_over_metallb_spellings() {
        let a = map(&[(LEGACY_ADDRESS_POOL, "legacy"), (ADDRESS_POOL, "own"), (METALLB_ADDRESS_POOL, "metallb")]);
        assert_eq!(ADDRESS_POOL_ANY.lookup(&a), Some((ADDRESS_POOL, "own")));
    }

    #[test]
    fn metallb_spellings_are_accepted_in_order() {
        let a = map(&[(LEGACY_ALLOW_SHARED_IP, "k1"), (METALLB_ALLOW_SHARED_IP, "k2")]);
        assert_eq!(ALLOW_SHARED_IP_ANY.lookup(&a), Some((METALLB_ALLOW_SHARED_IP, "k2")));
        let b = map(&[(LEGACY_LOAD_BALANCER_IPS, "198.51.100.7")]);
        assert_eq!(LOAD_BALANCER_IPS_ANY.lookup(&b), Some((LEGACY_LOAD_BALANCER_IPS, "198.51.100.7")));
    }

    #[test]
    fn absent_annotation_is_none() {
        let a = map(&[("unrelated/key", "x")]);
        assert_eq!(ADDRESS_POOL_ANY.lookup(&a), None);
    }

    #[test]
    fn every_spelling_is_distinct() {
        let mut all: Vec<&str> = ALL_SPELLINGS.iter().flat_map(|a| a.spellings).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
