//! What a Service asks of ferrolb, read from its spec and annotations. Pure.

use std::net::IpAddr;

use ferrolb_crds::annotations::{ADDRESS_POOL_ANY, ALLOW_SHARED_IP_ANY, LOAD_BALANCER_IPS_ANY};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use ferrolb_model::{Family, ServiceKey};

use crate::alloc::{Policy, Request, Sharing};

/// A ferrolb annotation (or field) on the Service that cannot be understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} {value:?}: {why}")]
pub struct RequestError {
    /// The annotation key or spec field.
    pub field: String,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub why: String,
}

fn parse_ips(field: &str, value: &str) -> Result<Vec<IpAddr>, RequestError> {
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip = part.parse().map_err(|_| RequestError {
            field: field.into(),
            value: value.into(),
            why: format!("{part:?} is not an IP address"),
        })?;
        out.push(ip);
    }
    if out.is_empty() {
        return Err(RequestError { field: field.into(), value: value.into(), why: "no IP address given".into() });
    }
    Ok(out)
}

/// Build the allocator request for a Service, or say which annotation or field is wrong.
pub fn request(svc: &Service) -> Result<Request, RequestError> {
    let spec = svc.spec.clone().unwrap_or_default();
    let ann = svc.annotations();
    let mut requested = Vec::new();
    if let Some((k, v)) = LOAD_BALANCER_IPS_ANY.lookup(ann) {
        requested = parse_ips(k, v)?;
    } else if let Some(v) = spec.load_balancer_ip.as_deref().filter(|v| !v.is_empty()) {
        requested = parse_ips("spec.loadBalancerIP", v)?;
    }
    let pool = match ADDRESS_POOL_ANY.lookup(ann) {
        Some((k, v)) if v.trim().is_empty() => {
            return Err(RequestError { field: k.into(), value: v.into(), why: "must name an IPAddressPool".into() });
        }
        Some((_, v)) => Some(v.trim().to_string()),
        None => None,
    };
    let sharing_key = match ALLOW_SHARED_IP_ANY.lookup(ann) {
        Some((k, v)) if v.trim().is_empty() => {
            return Err(RequestError {
                field: k.into(),
                value: v.into(),
                why: "the sharing key must not be empty".into(),
            });
        }
        Some((_, v)) => Some(v.trim().to_string()),
        None => None,
    };
    let mut families: Vec<Family> = Vec::new();
    for f in spec.ip_families.iter().flatten() {
        match Family::parse(f) {
            Some(fam) if !families.contains(&fam) => families.push(fam),
            Some(_) => {}
            None => {
                return Err(RequestError {
                    field: "spec.ipFamilies".into(),
                    value: f.clone(),
                    why: "must be IPv4 or IPv6".into(),
                });
            }
        }
    }
    if families.is_empty() {
        // The API server always defaults ipFamilies; without them, follow the requested IPs.
        families = requested.first().map(|ip| vec![Family::of(ip)]).unwrap_or_else(|| vec![Family::V4]);
    }
    let policy = match spec.ip_family_policy.as_deref() {
        None | Some("SingleStack") => Policy::SingleStack,
        Some("PreferDualStack") => Policy::PreferDualStack,
        Some("RequireDualStack") => Policy::RequireDualStack,
        Some(other) => {
            return Err(RequestError {
                field: "spec.ipFamilyPolicy".into(),
                value: other.into(),
                why: "must be SingleStack, PreferDualStack or RequireDualStack".into(),
            });
        }
    };
    let ports =
        spec.ports.iter().flatten().map(|p| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.port)).collect();
    Ok(Request {
        key: ServiceKey::of(svc),
        namespace: svc.namespace().unwrap_or_default(),
        labels: svc.labels().clone(),
        families,
        policy,
        requested,
        pool,
        sharing: Sharing {
            key: sharing_key,
            ports,
            local: spec.external_traffic_policy.as_deref() == Some("Local"),
            selector: spec.selector.unwrap_or_default(),
        },
        allocated_before: svc.annotations().contains_key(ferrolb_crds::annotations::IP_ALLOCATED_FROM_POOL),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_model::testing::{SvcBuilder, svc};

    /// `shop/web`, IPv4 single stack, as the API server defaults it.
    fn web() -> SvcBuilder {
        svc("web").ns("shop").families("SingleStack", &["IPv4"])
    }

    #[test]
    fn all_annotation_spellings_and_spec_field_are_read() {
        for key in ["ferrolb.io/loadBalancerIPs", "metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"] {
            let r = request(&web().annotation(key, "198.51.100.7, fd42:f1b::7").build()).unwrap();
            assert_eq!(
                r.requested,
                vec!["198.51.100.7".parse::<IpAddr>().unwrap(), "fd42:f1b::7".parse().unwrap()],
                "{key}"
            );
        }
        let r = request(&web().load_balancer_ip("198.51.100.8").build()).unwrap();
        assert_eq!(r.requested, vec!["198.51.100.8".parse::<IpAddr>().unwrap()]);
        let r = request(
            &web()
                .annotation("metallb.universe.tf/address-pool", "gold")
                .annotation("metallb.io/allow-shared-ip", "k")
                .build(),
        )
        .unwrap();
        assert_eq!(r.pool.as_deref(), Some("gold"));
        assert_eq!(r.sharing.key.as_deref(), Some("k"));
        assert_eq!(r.key.as_str(), "shop/web");
    }

    #[test]
    fn garbage_annotations_name_the_key_and_value() {
        let e = request(&web().annotation("ferrolb.io/loadBalancerIPs", "198.51.100.7,banana").build()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ferrolb.io/loadBalancerIPs \"198.51.100.7,banana\": \"banana\" is not an IP address"
        );
        let e = request(&web().annotation("ferrolb.io/address-pool", " ").build()).unwrap_err();
        assert_eq!(e.field, "ferrolb.io/address-pool");
        let e = request(&web().families("Sometimes", &["IPv4"]).build()).unwrap_err();
        assert_eq!(e.field, "spec.ipFamilyPolicy");
    }

    #[test]
    fn sharing_parameters_come_from_ports_policy_and_selector() {
        let r = request(&web().local().selector(&[("app", "web")]).ports(&[(53, "UDP"), (53, "TCP")]).build()).unwrap();
        assert!(r.sharing.local);
        assert_eq!(r.sharing.ports, vec![("UDP".to_string(), 53), ("TCP".to_string(), 53)]);
        assert_eq!(r.sharing.selector.get("app").map(String::as_str), Some("web"));
    }
}
