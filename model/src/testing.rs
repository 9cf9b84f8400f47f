//! Typed fixture builders for tests of every crate (feature `testing`):
//! `svc("web").ns("shop").local().annotation(k, v).ingress("198.51.100.7").build()`
//! and `pool("public", &["198.51.100.0/24"])`. A builder starts from the smallest
//! object ferrolb handles (a `LoadBalancer` Service with one TCP port) and each
//! call says the one thing a test is about.

use std::collections::BTreeMap;

use ferrolb_crds::{IPAddressPool, IPAddressPoolSpec, L2Advertisement, ServiceAllocation};
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A Service builder; see [`svc`].
#[derive(Debug, Clone)]
pub struct SvcBuilder(Service);

/// A `LoadBalancer` Service `name` in namespace `default`, port `http` 80/TCP, selecting
/// `app: name`.
pub fn svc(name: &str) -> SvcBuilder {
    SvcBuilder(Service {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..Default::default() },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            selector: Some([("app".to_string(), name.to_string())].into()),
            ..Default::default()
        }),
        status: None,
    })
}

impl SvcBuilder {
    fn spec(&mut self) -> &mut ServiceSpec {
        self.0.spec.get_or_insert_with(Default::default)
    }

    /// In namespace `ns`.
    pub fn ns(mut self, ns: &str) -> Self {
        self.0.metadata.namespace = Some(ns.into());
        self
    }

    /// `spec.type` (`ClusterIP`, `NodePort`, ...).
    pub fn type_(mut self, t: &str) -> Self {
        self.spec().type_ = Some(t.into());
        self
    }

    /// `spec.loadBalancerClass`.
    pub fn class(mut self, class: &str) -> Self {
        self.spec().load_balancer_class = Some(class.into());
        self
    }

    /// An annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(key.into(), value.into());
        self
    }

    /// A label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0.metadata.labels.get_or_insert_with(BTreeMap::new).insert(key.into(), value.into());
        self
    }

    /// `externalTrafficPolicy: Local`.
    pub fn local(mut self) -> Self {
        self.spec().external_traffic_policy = Some("Local".into());
        self
    }

    /// The pod selector, replacing `app: name`.
    pub fn selector(mut self, pairs: &[(&str, &str)]) -> Self {
        self.spec().selector = Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        self
    }

    /// The ports, replacing `http` 80/TCP: `(port, protocol)`, named `tcp-53` and so on.
    pub fn ports(mut self, ports: &[(i32, &str)]) -> Self {
        self.spec().ports = Some(
            ports
                .iter()
                .map(|(p, proto)| ServicePort {
                    name: Some(format!("{}-{p}", proto.to_lowercase())),
                    port: *p,
                    protocol: Some(proto.to_string()),
                    ..Default::default()
                })
                .collect(),
        );
        self
    }

    /// `targetPort` of every port.
    pub fn target_port(mut self, port: i32) -> Self {
        for p in self.spec().ports.iter_mut().flatten() {
            p.target_port = Some(IntOrString::Int(port));
        }
        self
    }

    /// `spec.ipFamilyPolicy` and `spec.ipFamilies`.
    pub fn families(self, policy: &str, families: &[&str]) -> Self {
        self.policy(policy).ip_families(families)
    }

    /// `spec.ipFamilyPolicy`.
    pub fn policy(mut self, policy: &str) -> Self {
        self.spec().ip_family_policy = Some(policy.into());
        self
    }

    /// `spec.ipFamilies`, primary first.
    pub fn ip_families(mut self, families: &[&str]) -> Self {
        self.spec().ip_families = Some(families.iter().map(|f| f.to_string()).collect());
        self
    }

    /// `spec.loadBalancerIP`.
    pub fn load_balancer_ip(mut self, ip: &str) -> Self {
        self.spec().load_balancer_ip = Some(ip.into());
        self
    }

    /// Add `ip` to `status.loadBalancer.ingress`.
    pub fn ingress(mut self, ip: &str) -> Self {
        let lb = self
            .0
            .status
            .get_or_insert_with(ServiceStatus::default)
            .load_balancer
            .get_or_insert_with(LoadBalancerStatus::default);
        lb.ingress.get_or_insert_with(Vec::new).push(LoadBalancerIngress { ip: Some(ip.into()), ..Default::default() });
        self
    }

    pub fn build(self) -> Service {
        self.0
    }

    /// The Service as the JSON a client would send, `apiVersion` and `kind` included.
    pub fn json(self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.0).expect("a Service serialises");
        v["apiVersion"] = "v1".into();
        v["kind"] = "Service".into();
        v
    }
}

/// An IPAddressPool `name` with `addresses`, auto-assigning, no restrictions.
pub fn pool(name: &str, addresses: &[&str]) -> IPAddressPool {
    IPAddressPool::new(
        name,
        IPAddressPoolSpec {
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        },
    )
}

/// A pool with `spec.serviceAllocation`.
pub fn pool_for(name: &str, addresses: &[&str], allocation: ServiceAllocation) -> IPAddressPool {
    let mut p = pool(name, addresses);
    p.spec.service_allocation = Some(allocation);
    p
}

/// An L2Advertisement `name` announcing every pool from every node.
pub fn l2_advertisement(name: &str) -> L2Advertisement {
    L2Advertisement::new(name, Default::default())
}

/// A `matchLabels` selector.
pub fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    }
}
