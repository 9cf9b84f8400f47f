//! What `kubectl ferrolb` prints, computed from the objects alone (pure): per
//! Service its IPs, pool, announcing node and interfaces and, when something is
//! missing, why, in the words of the conditions ferrolb wrote; per pool its
//! validity, usage and served ranges.

use std::collections::BTreeMap;

use ferrolb_crds::annotations::IP_ALLOCATED_FROM_POOL;
use ferrolb_crds::conditions::{pool as pool_cond, service as cond, status};
use ferrolb_crds::{IPAddressPool, ServiceL2Status};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

/// One row of `kubectl ferrolb status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub namespace: String,
    pub name: String,
    /// The ingress IPs, or `<pending>`.
    pub ips: String,
    pub pool: String,
    /// The announcing node(s).
    pub announced_by: String,
    pub interfaces: String,
    /// `announced`, or what is wrong and why.
    pub status: String,
}

fn condition<'a>(svc: &'a Service, type_: &str) -> Option<&'a Condition> {
    svc.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

/// The rows for every `type: LoadBalancer` Service in `services`, sorted by namespace and name.
pub fn service_rows(services: &[Service], statuses: &[ServiceL2Status], lb_class: Option<&str>) -> Vec<ServiceRow> {
    let mut announced: BTreeMap<(String, String), Vec<&ServiceL2Status>> = BTreeMap::new();
    for s in statuses {
        if let Some(st) = s.status.as_ref().filter(|st| !st.node.is_empty()) {
            announced.entry((st.service_namespace.clone(), st.service_name.clone())).or_default().push(s);
        }
    }
    let mut rows: Vec<ServiceRow> = services
        .iter()
        .filter(|s| s.spec.as_ref().and_then(|sp| sp.type_.as_deref()) == Some("LoadBalancer"))
        .map(|svc| {
            let (namespace, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
            let ips: Vec<String> = ferrolb_model::ingress_ips(svc).iter().map(|i| i.to_string()).collect();
            let by = announced.get(&(namespace.clone(), name.clone())).cloned().unwrap_or_default();
            let nodes: Vec<String> = by.iter().filter_map(|s| s.status.as_ref().map(|st| st.node.clone())).collect();
            let ifaces: Vec<String> = by
                .iter()
                .filter_map(|s| s.status.as_ref())
                .flat_map(|st| st.interfaces.iter().map(|i| i.name.clone()))
                .collect();
            let status = if !ferrolb_model::is_ours(svc, lb_class) {
                let class = svc.spec.as_ref().and_then(|s| s.load_balancer_class.clone()).unwrap_or_default();
                format!("not ferrolb's (loadBalancerClass {class:?})")
            } else {
                why(svc, &ips, &nodes)
            };
            ServiceRow {
                namespace,
                name,
                ips: if ips.is_empty() { "<pending>".into() } else { ips.join(",") },
                pool: or_dash(svc.annotations().get(IP_ALLOCATED_FROM_POOL).cloned().unwrap_or_default()),
                announced_by: or_dash(nodes.join(",")),
                interfaces: or_dash(ifaces.join(",")),
                status,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

/// Why a ferrolb Service is where it is, from its conditions and announcements.
fn why(svc: &Service, ips: &[String], nodes: &[String]) -> String {
    let allocated = condition(svc, cond::ALLOCATED);
    if ips.is_empty() {
        return match allocated {
            Some(c) if c.status == status::FALSE => format!("pending: {}: {}", c.reason, c.message),
            Some(_) => "pending: allocated, the status is being written".into(),
            None => "pending: no ferrolb controller has reconciled it (is a controller replica leading?)".into(),
        };
    }
    let mut out = if !nodes.is_empty() {
        "announced".to_string()
    } else {
        match condition(svc, cond::ANNOUNCED) {
            Some(c) if c.status == status::FALSE => format!("not announced: {}: {}", c.reason, c.message),
            _ => "not announced: no node announces it (no ServiceL2Status): check the L2Advertisement's \
                  nodeSelectors and interfaces, the nodes' conditions and exclusion label, the speakers' \
                  Leases and, with externalTrafficPolicy: Local, ready endpoints"
                .into(),
        }
    };
    if let Some(c) = condition(svc, cond::ENDPOINTS_READY).filter(|c| c.status == status::FALSE) {
        out.push_str(&format!("; {}: {}", c.reason, c.message));
    }
    if let Some(c) = allocated.filter(|c| c.status == status::FALSE) {
        out.push_str(&format!("; {}: {}", c.reason, c.message));
    }
    out
}

/// One row of `kubectl ferrolb pools`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    pub name: String,
    /// The `Valid` condition's status (`-` before the controller wrote one).
    pub valid: String,
    /// IPv4 `assigned/total`.
    pub ipv4: String,
    /// IPv6 `assigned/total`.
    pub ipv6: String,
    /// The ranges it serves (`status.effectiveAddresses`), else its spec.
    pub addresses: String,
    /// Why it is not valid, when it is not.
    pub message: String,
}

/// The rows for every pool, sorted by name.
pub fn pool_rows(pools: &[IPAddressPool]) -> Vec<PoolRow> {
    let mut rows: Vec<PoolRow> = pools
        .iter()
        .map(|p| {
            let st = p.status.clone().unwrap_or_default();
            let valid = st.conditions.iter().find(|c| c.type_ == pool_cond::VALID);
            let used = |assigned: i64, available: i64| format!("{assigned}/{}", assigned.saturating_add(available));
            let served = if st.effective_addresses.is_empty() { &p.spec.addresses } else { &st.effective_addresses };
            PoolRow {
                name: p.name_any(),
                valid: valid.map(|c| c.status.clone()).unwrap_or_else(|| "-".into()),
                ipv4: used(st.assigned_ipv4, st.available_ipv4),
                ipv6: used(st.assigned_ipv6, st.available_ipv6),
                addresses: served.join(","),
                message: valid
                    .filter(|c| c.status != status::TRUE)
                    .map(|c| format!("{}: {}", c.reason, c.message))
                    .unwrap_or_default(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// A table as kubectl prints one: upper-case headers, columns padded to their widest
/// cell and three spaces apart, the last column unpadded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(&c);
            } else {
                out.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.clone()));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_model::testing::{pool, svc};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn with_condition(mut s: Service, type_: &str, st: &str, reason: &str, message: &str) -> Service {
        let c = Condition {
            type_: type_.into(),
            status: st.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        };
        s.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new).push(c);
        s
    }

    fn l2(ns: &str, name: &str, node: &str, iface: &str) -> ServiceL2Status {
        let mut s = ServiceL2Status::new(&format!("{ns}.{name}"), Default::default());
        s.status = Some(ferrolb_crds::ServiceL2StatusStatus {
            node: node.into(),
            service_name: name.into(),
            service_namespace: ns.into(),
            interfaces: vec![ferrolb_crds::InterfaceInfo { name: iface.into() }],
        });
        s
    }

    #[test]
    fn each_service_says_where_it_is_and_why() {
        let services = vec![
            svc("web").ingress("198.51.100.10").annotation(IP_ALLOCATED_FROM_POOL, "public").build(),
            with_condition(
                svc("full").build(),
                cond::ALLOCATED,
                "False",
                "PoolExhausted",
                "no free IPv4 address in IPAddressPool(s) public",
            ),
            svc("fresh").build(),
            with_condition(
                svc("hidden").ingress("198.51.100.11").build(),
                cond::ANNOUNCED,
                "False",
                "NoL2Advertisement",
                "no L2Advertisement selects IPAddressPool hidden",
            ),
            svc("quiet").ingress("198.51.100.12").build(),
            with_condition(
                svc("idle").ingress("198.51.100.13").build(),
                cond::ENDPOINTS_READY,
                "False",
                "NoReadyEndpoint",
                "no ready endpoint",
            ),
            svc("other").class("example.com/other").build(),
            svc("internal").type_("ClusterIP").build(),
        ];
        let rows = service_rows(
            &services,
            &[l2("default", "web", "node-1", "eth0"), l2("default", "idle", "node-2", "eth0")],
            None,
        );
        let by = |n: &str| rows.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!(rows.len(), 7, "ClusterIP Services are not listed");
        let web = by("web");
        assert_eq!(
            (
                web.ips.as_str(),
                web.pool.as_str(),
                web.announced_by.as_str(),
                web.interfaces.as_str(),
                web.status.as_str()
            ),
            ("198.51.100.10", "public", "node-1", "eth0", "announced")
        );
        assert_eq!(by("full").ips, "<pending>");
        assert_eq!(by("full").status, "pending: PoolExhausted: no free IPv4 address in IPAddressPool(s) public");
        assert!(by("fresh").status.contains("no ferrolb controller has reconciled it"));
        assert_eq!(
            by("hidden").status,
            "not announced: NoL2Advertisement: no L2Advertisement selects IPAddressPool hidden"
        );
        assert!(by("quiet").status.starts_with("not announced: no node announces it"));
        assert_eq!(by("idle").status, "announced; NoReadyEndpoint: no ready endpoint");
        assert_eq!(by("other").status, "not ferrolb's (loadBalancerClass \"example.com/other\")");
        assert_eq!(
            rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["fresh", "full", "hidden", "idle", "other", "quiet", "web"]
        );
    }

    #[test]
    fn pools_show_validity_usage_and_what_they_serve() {
        let mut ok = pool("public", &["198.51.100.0/28"]);
        ok.status = Some(ferrolb_crds::IPAddressPoolStatus {
            assigned_ipv4: 3,
            available_ipv4: 13,
            effective_addresses: vec!["198.51.100.0-198.51.100.15".into()],
            conditions: vec![Condition {
                type_: "Valid".into(),
                status: "True".into(),
                reason: "PoolValid".into(),
                message: "ok".into(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..Default::default()
        });
        let mut bad = pool("aaa", &["198.51.100.0/24"]);
        bad.status = Some(ferrolb_crds::IPAddressPoolStatus {
            conditions: vec![Condition {
                type_: "Valid".into(),
                status: "False".into(),
                reason: "Overlap".into(),
                message: "overlaps IPAddressPool public".into(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..Default::default()
        });
        let rows = pool_rows(&[ok, bad, pool("new", &["fd42:f1b::/120"])]);
        assert_eq!(rows[0].name, "aaa");
        assert_eq!(
            (rows[0].valid.as_str(), rows[0].message.as_str()),
            ("False", "Overlap: overlaps IPAddressPool public")
        );
        assert_eq!(rows[1].valid, "-", "not yet seen by the controller");
        assert_eq!(rows[1].addresses, "fd42:f1b::/120");
        let p = &rows[2];
        assert_eq!(
            (p.ipv4.as_str(), p.ipv6.as_str(), p.addresses.as_str()),
            ("3/16", "0/0", "198.51.100.0-198.51.100.15")
        );
        assert!(p.message.is_empty());
    }

    #[test]
    fn tables_align_like_kubectls() {
        let t = table(&["NAME", "IPS", "STATUS"], &[vec!["web".into(), "198.51.100.10".into(), "announced".into()]]);
        assert_eq!(t, "NAME   IPS             STATUS\nweb    198.51.100.10   announced\n");
    }
}
