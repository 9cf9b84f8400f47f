//! What a Service asks of ferrolb, read from its spec and annotations. Pure.

use std::net::IpAddr;

use ferrolb_crds::annotations::{ADDRESS_POOL_ANY, ALLOW_SHARED_IP_ANY, LOAD_BALANCER_IPS_ANY};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use crate::alloc::{Policy, Request, Sharing};
use crate::config::Family;

/// Whether ferrolb handles this Service: `type: LoadBalancer` and the right class
/// (no class when ferrolb runs without `--lb-class`, exactly that class with it).
pub fn is_ours(svc: &Service, lb_class: Option<&str>) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.as_deref() == lb_class
}

/// `namespace/name`.
pub fn key(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

/// The IPs in `status.loadBalancer.ingress` (what the Service held, e.g. before a restart).
pub fn current_ips(svc: &Service) -> Vec<IpAddr> {
    ferrolb_crds::ingress_ips(svc)
}

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
        key: key(svc),
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        let mut base = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}});
        merge(&mut base, &v);
        serde_json::from_value(base).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: &serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b.clone(),
        }
    }

    #[test]
    fn ownership_follows_type_and_class() {
        assert!(is_ours(&svc(json!({})), None));
        assert!(!is_ours(&svc(json!({"spec": {"type": "ClusterIP"}})), None));
        assert!(!is_ours(&svc(json!({"spec": {"loadBalancerClass": "other.io/lb"}})), None));
        assert!(is_ours(&svc(json!({"spec": {"loadBalancerClass": "ferrolb.io/l2"}})), Some("ferrolb.io/l2")));
        assert!(!is_ours(&svc(json!({})), Some("ferrolb.io/l2")));
    }

    #[test]
    fn all_annotation_spellings_and_spec_field_are_read() {
        for key in ["ferrolb.io/loadBalancerIPs", "metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"] {
            let r = request(&svc(json!({"metadata": {"annotations": {key: "198.51.100.7, fd42:f1b::7"}}}))).unwrap();
            assert_eq!(
                r.requested,
                vec!["198.51.100.7".parse::<IpAddr>().unwrap(), "fd42:f1b::7".parse().unwrap()],
                "{key}"
            );
        }
        let r = request(&svc(json!({"spec": {"loadBalancerIP": "198.51.100.8"}}))).unwrap();
        assert_eq!(r.requested, vec!["198.51.100.8".parse::<IpAddr>().unwrap()]);
        let r = request(&svc(json!({"metadata": {"annotations": {"metallb.universe.tf/address-pool": "gold", "metallb.io/allow-shared-ip": "k"}}}))).unwrap();
        assert_eq!(r.pool.as_deref(), Some("gold"));
        assert_eq!(r.sharing.key.as_deref(), Some("k"));
        assert_eq!(r.key, "shop/web");
    }

    #[test]
    fn garbage_annotations_name_the_key_and_value() {
        let e =
            request(&svc(json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "198.51.100.7,banana"}}})))
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ferrolb.io/loadBalancerIPs \"198.51.100.7,banana\": \"banana\" is not an IP address"
        );
        let e = request(&svc(json!({"metadata": {"annotations": {"ferrolb.io/address-pool": " "}}}))).unwrap_err();
        assert_eq!(e.field, "ferrolb.io/address-pool");
        let e = request(&svc(json!({"spec": {"ipFamilyPolicy": "Sometimes"}}))).unwrap_err();
        assert_eq!(e.field, "spec.ipFamilyPolicy");
    }

    #[test]
    fn sharing_parameters_come_from_ports_policy_and_selector() {
        let r = request(&svc(json!({"spec": {"externalTrafficPolicy": "Local", "selector": {"app": "web"},
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}})))
        .unwrap();
        assert!(r.sharing.local);
        assert_eq!(r.sharing.ports, vec![("UDP".to_string(), 53), ("TCP".to_string(), 53)]);
        assert_eq!(r.sharing.selector.get("app").map(String::as_str), Some("web"));
    }

    #[test]
    fn current_ips_come_from_ingress() {
        let s =
            svc(json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}, {"hostname": "x.example"}]}}}));
        assert_eq!(current_ips(&s), vec!["198.51.100.9".parse::<IpAddr>().unwrap()]);
    }
}
