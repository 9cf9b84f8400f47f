//! `--forwarding=nodeport`: for clusters whose proxy does not handle
//! LoadBalancer IPs, the speaker keeps an nftables table of its own
//! (`inet ferrolb`) that redirects each announced VIP:port to this node's
//! NodePort. Nothing else on the host is touched; the table is replaced
//! atomically on every change and deleted on exit.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

/// The nftables table the speaker owns.
pub const TABLE: &str = "inet ferrolb";

/// How traffic to a VIP reaches the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// kube-proxy (or an equivalent) handles LoadBalancer IPs; the speaker only announces.
    KubeProxy,
    /// The speaker redirects VIP:port to the node's NodePort with nftables.
    NodePort,
}

impl std::str::FromStr for Forwarding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kube-proxy" => Ok(Forwarding::KubeProxy),
            "nodeport" => Ok(Forwarding::NodePort),
            other => Err(format!("{other:?}: want kube-proxy or nodeport")),
        }
    }
}

/// One redirect: traffic to `ip`:`port`/`proto` goes to this node's `node_port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub ip: IpAddr,
    /// `tcp`, `udp` or `sctp`.
    pub proto: String,
    /// Service port.
    pub port: u16,
    /// The node port it goes to.
    pub node_port: u16,
}

/// The redirects for the announced IPs, from the Services that hold them.
pub fn rules(announced: &BTreeSet<IpAddr>, services: &[Service]) -> BTreeSet<Rule> {
    let mut out = BTreeSet::new();
    for svc in services {
        let ips: Vec<IpAddr> =
            ferrolb_model::ingress_ips(svc).into_iter().filter(|ip| announced.contains(ip)).collect();
        let ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
        for ip in ips {
            for p in &ports {
                let (Ok(port), Some(Ok(node_port))) = (u16::try_from(p.port), p.node_port.map(u16::try_from)) else {
                    continue;
                };
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
                    continue;
                }
                out.insert(Rule { ip, proto, port, node_port });
            }
        }
    }
    out
}

/// The nft script that replaces the table with exactly `rules` (atomic: one transaction).
pub fn script(rules: &BTreeSet<Rule>) -> String {
    let mut s = format!(
        "table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n"
    );
    // Group for readability; order is deterministic.
    let mut by_ip: BTreeMap<&IpAddr, Vec<&Rule>> = BTreeMap::new();
    for r in rules {
        by_ip.entry(&r.ip).or_default().push(r);
    }
    for (ip, rs) in by_ip {
        let fam = if ip.is_ipv4() { "ip" } else { "ip6" };
        for r in rs {
            s.push_str(&format!("    {fam} daddr {ip} {} dport {} redirect to :{}\n", r.proto, r.port, r.node_port));
        }
    }
    s.push_str("  }\n}\n");
    s
}

/// Install exactly `rules`. Needs CAP_NET_ADMIN.
pub fn apply(rules: &BTreeSet<Rule>) -> std::io::Result<()> {
    ferrolb_speaker_sys::nft(&script(rules))
}

/// Remove the table (on exit).
pub fn remove() -> std::io::Result<()> {
    ferrolb_speaker_sys::nft(&format!("table {TABLE}\ndelete table {TABLE}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_cover_announced_ips_with_node_ports() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "nodePort": 30053, "protocol": "UDP"}, {"port": 9}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}, {"ip": "fd42:f1b::7"}]}}}))
        .unwrap();
        let announced: BTreeSet<IpAddr> = ["198.51.100.7".parse().unwrap()].into();
        let r = rules(&announced, &[svc]);
        assert_eq!(r.len(), 2, "only the announced IP, only ports with a nodePort: {r:?}");
        let text = script(&r);
        assert_eq!(
            text,
            "table inet ferrolb\ndelete table inet ferrolb\ntable inet ferrolb {\n  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr 198.51.100.7 tcp dport 80 redirect to :30080\n    ip daddr 198.51.100.7 udp dport 53 redirect to :30053\n  }\n}\n"
        );
    }

    #[test]
    fn ipv6_uses_ip6_and_empty_rules_leave_an_empty_chain() {
        let r = BTreeSet::from([Rule {
            ip: "fd42:f1b::7".parse().unwrap(),
            proto: "tcp".into(),
            port: 443,
            node_port: 30443,
        }]);
        assert!(script(&r).contains("ip6 daddr fd42:f1b::7 tcp dport 443 redirect to :30443"));
        assert!(!script(&BTreeSet::new()).contains("daddr"));
        assert_eq!("nodeport".parse::<Forwarding>(), Ok(Forwarding::NodePort));
        assert!("iptables".parse::<Forwarding>().is_err());
    }
}
