//! Which Services are ferrolb's, and how one is named. Pure.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

/// Whether ferrolb handles this Service: `type: LoadBalancer` and the right class
/// (no class when ferrolb runs without `--lb-class`, exactly that class with it).
pub fn is_ours(svc: &Service, lb_class: Option<&str>) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.as_deref() == lb_class
}

/// The IPs in a Service's `status.loadBalancer.ingress` (hostname entries skipped):
/// what the controller assigned, and what speakers announce.
pub fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| ing.iter().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// A Service's `namespace/name`: the allocator's key, the label of metrics, the
/// name of a ServiceL2Status. One string, so a key costs one allocation; a
/// namespace never contains `/`, so the split is exact.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey(String);

impl ServiceKey {
    /// The key of `namespace`/`name`.
    pub fn new(namespace: &str, name: &str) -> ServiceKey {
        ServiceKey(format!("{namespace}/{name}"))
    }

    /// The key of a Service object.
    pub fn of(svc: &Service) -> ServiceKey {
        ServiceKey::new(&svc.namespace().unwrap_or_default(), &svc.name_any())
    }

    /// The namespace part.
    pub fn namespace(&self) -> &str {
        self.0.split_once('/').map_or("", |(ns, _)| ns)
    }

    /// The name part.
    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or(self.0.as_str(), |(_, n)| n)
    }

    /// `namespace/name`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A reference for looking the Service up in a reflector store.
    pub fn object_ref(&self) -> ObjectRef<Service> {
        ObjectRef::new(self.name()).within(self.namespace())
    }

    /// `namespace.name`: unique because namespaces cannot contain dots, and a valid
    /// object name (the ServiceL2Status of the Service is named so).
    pub fn dotted(&self) -> String {
        format!("{}.{}", self.namespace(), self.name())
    }

    /// `namespace.name.node`: the name of the Service's ServiceBGPStatus from `node`.
    pub fn per_node(&self, node: &str) -> String {
        format!("{}.{node}", self.dotted())
    }
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `"namespace/name"`, as written in tests and logs, kept verbatim. A string without
/// `/` reads as a name in the empty namespace, which no API object has.
impl From<&str> for ServiceKey {
    fn from(s: &str) -> ServiceKey {
        ServiceKey(s.to_string())
    }
}

/// A key reads as its `namespace/name` wherever a `&str` is wanted.
impl std::ops::Deref for ServiceKey {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ServiceKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_splits_back_into_namespace_and_name() {
        let k = ServiceKey::new("team-a", "web");
        assert_eq!((k.namespace(), k.name(), k.as_str()), ("team-a", "web", "team-a/web"));
        assert_eq!(k.dotted(), "team-a.web");
        assert_eq!(ServiceKey::from("team-a/web"), k);
        assert_eq!(ServiceKey::from("web").namespace(), "");
        assert_eq!(k.object_ref(), ObjectRef::new("web").within("team-a"));
    }

    #[test]
    fn ingress_ips_skip_hostnames() {
        use k8s_openapi::api::core::v1::LoadBalancerIngress;
        let mut s = crate::testing::svc("web").ingress("198.51.100.9").build();
        let lb = s.status.as_mut().and_then(|st| st.load_balancer.as_mut()).unwrap();
        lb.ingress
            .as_mut()
            .unwrap()
            .push(LoadBalancerIngress { hostname: Some("x.example".into()), ..Default::default() });
        assert_eq!(ingress_ips(&s), vec!["198.51.100.9".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn only_load_balancers_of_our_class_are_ours() {
        let svc = |type_: &str, class: Option<&str>| Service {
            spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                type_: Some(type_.into()),
                load_balancer_class: class.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        };
        let table = [
            (svc("LoadBalancer", None), None, true),
            (svc("LoadBalancer", Some("x.io/lb")), None, false),
            (svc("LoadBalancer", Some("x.io/lb")), Some("x.io/lb"), true),
            (svc("LoadBalancer", None), Some("x.io/lb"), false),
            (svc("NodePort", None), None, false),
            (Service::default(), None, false),
        ];
        for (i, (s, class, want)) in table.iter().enumerate() {
            assert_eq!(is_ours(s, *class), *want, "row {i}");
        }
    }
}
