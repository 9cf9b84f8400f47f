//! Service defaulting, validation and ClusterIP/NodePort allocation, as the
//! real API server's Service REST storage does it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::error::FieldError;

/// Cluster networking settings the Service logic needs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Service CIDRs, primary family first; one or two (dual-stack).
    pub service_cidrs: Vec<IpNet>,
    /// Inclusive NodePort range.
    pub node_port_range: (u16, u16),
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            service_cidrs: vec![
                "10.96.0.0/16".parse().expect("literal"),
                "fd42:f1b:96::/112".parse().expect("literal"),
            ],
            node_port_range: (30000, 32767),
        }
    }
}

/// Allocated ClusterIPs and NodePorts.
#[derive(Debug, Default, Clone)]
pub struct ServiceAllocations {
    cluster_ips: BTreeSet<IpAddr>,
    node_ports: BTreeSet<u16>,
    next_port: u16,
}

fn family_of(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn ports_of(svc: &Value) -> Vec<u16> {
    let mut out: Vec<u16> = svc["spec"]["ports"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["nodePort"].as_u64()).map(|p| p as u16).collect())
        .unwrap_or_default();
    if let Some(h) = svc["spec"]["healthCheckNodePort"].as_u64() {
        out.push(h as u16);
    }
    out.sort();
    out.dedup();
    out
}

fn ips_of(svc: &Value) -> Vec<IpAddr> {
    svc["spec"]["clusterIPs"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

impl ServiceAllocations {
    /// Account for a stored Service (used when replaying state).
    pub fn claim(&mut self, svc: &Value) {
        self.cluster_ips.extend(ips_of(svc));
        self.node_ports.extend(ports_of(svc));
    }

    /// Return a deleted Service's ClusterIPs and NodePorts.
    pub fn release(&mut self, svc: &Value) {
        for ip in ips_of(svc) {
            self.cluster_ips.remove(&ip);
        }
        for p in ports_of(svc) {
            self.node_ports.remove(&p);
        }
    }

    fn alloc_ip(&mut self, net: &IpNet) -> Option<IpAddr> {
        // Skip the network address and the first host (the API server's own Service).
        net.hosts().skip(1).find(|ip| !self.cluster_ips.contains(ip)).inspect(|ip| {
            self.cluster_ips.insert(*ip);
        })
    }

    fn alloc_port(&mut self, range: (u16, u16)) -> Option<u16> {
        let (lo, hi) = range;
        let span = u32::from(hi - lo) + 1;
        if self.next_port < lo || self.next_port > hi {
            self.next_port = lo;
        }
        for i in 0..span {
            let p = lo + ((u32::from(self.next_port - lo) + i) % span) as u16;
            if !self.node_ports.contains(&p) {
                self.node_ports.insert(p);
                self.next_port = if p == hi { lo } else { p + 1 };
                return Some(p);
            }
        }
        None
    }
}

/// Validate `status.conditions` as upstream's `metav1.Condition` validation: a
/// type, a status of True, False or Unknown, a CamelCase reason of at most 1024
/// bytes, a message of at most 32768 bytes, a transition time.
fn validate_conditions(svc: &Value, errs: &mut Vec<FieldError>) {
    let Some(conds) = svc["status"]["conditions"].as_array() else { return };
    for (i, c) in conds.iter().enumerate() {
        let path = format!("status.conditions[{i}]");
        if c["type"].as_str().is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("{path}.type"), "must be specified"));
        }
        match c["status"].as_str() {
            Some("True" | "False" | "Unknown") => {}
            _ => errs.push(FieldError::not_supported(
                format!("{path}.status"),
                c["status"].clone(),
                &["False", "True", "Unknown"],
            )),
        }
        if c["lastTransitionTime"].as_str().is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("{path}.lastTransitionTime"), "must be set"));
        }
        let reason = c["reason"].as_str().unwrap_or("");
        let camel = reason.chars().next().is_some_and(|f| f.is_ascii_alphabetic())
            && reason.chars().all(|x| x.is_ascii_alphanumeric() || "_,:".contains(x))
            && !reason.ends_with([',', ':']);
        if reason.is_empty() {
            errs.push(FieldError::required(format!("{path}.reason"), "must be specified"));
        } else if reason.len() > 1024 {
            errs.push(FieldError::too_long(format!("{path}.reason"), 1024));
        } else if !camel {
            errs.push(FieldError::invalid(
                format!("{path}.reason"),
                json!(reason),
                "a condition reason must start with alphabetic character, optionally followed by a string of \
                 alphanumeric characters or '_,:', and must end with an alphanumeric character or '_'",
            ));
        }
        if c["message"].as_str().is_some_and(|m| m.len() > 32768) {
            errs.push(FieldError::too_long(format!("{path}.message"), 32768));
        }
    }
}

/// Validate `status.loadBalancer` and `status.conditions`, as upstream does on
/// status writes.
pub fn validate_status(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_conditions(svc, &mut errs);
    let Some(ingress) = svc["status"]["loadBalancer"]["ingress"].as_array() else { return errs };
    for (i, ing) in ingress.iter().enumerate() {
        let path = format!("status.loadBalancer.ingress[{i}]");
        match ing.get("ip").and_then(|v| v.as_str()) {
            Some(ip) if ip.parse::<IpAddr>().is_err() => {
                errs.push(FieldError::invalid(format!("{path}.ip"), json!(ip), "must be a valid IP address"))
            }
            Some(_) => {}
            None if ing.get("ipMode").is_some() => {
                errs.push(FieldError::required(format!("{path}.ip"), "must be specified when `ipMode` is set"))
            }
            None => {}
        }
        if let Some(mode) = ing.get("ipMode").filter(|m| !m.is_null())
            && mode != "VIP"
            && mode != "Proxy"
        {
            errs.push(FieldError::not_supported(format!("{path}.ipMode"), mode.clone(), &["Proxy", "VIP"]));
        }
        if ing.get("hostname").and_then(|h| h.as_str()).is_some_and(|h| h.parse::<IpAddr>().is_ok()) {
            errs.push(FieldError::invalid(
                format!("{path}.hostname"),
                ing["hostname"].clone(),
                "must be a DNS name, not an IP address",
            ));
        }
    }
    errs
}

const TYPES: [&str; 4] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
const POLICIES: [&str; 3] = ["SingleStack", "PreferDualStack", "RequireDualStack"];

/// Default and validate a Service being created (`old` is `None`) or updated, then
/// allocate its ClusterIPs and NodePorts. On error nothing stays allocated.
pub fn prepare(
    cfg: &ServiceConfig,
    alloc: &mut ServiceAllocations,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    if !svc["spec"].is_object() {
        svc["spec"] = json!({});
    }
    let spec = &mut svc["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if !TYPES.contains(&ty.as_str()) {
        errs.push(FieldError::not_supported("spec.type", spec["type"].clone(), &TYPES));
        return Err(errs);
    }
    spec["type"] = json!(ty);
    let old_spec = old.map(|o| &o["spec"]);
    let old_type = old_spec.and_then(|s| s["type"].as_str()).unwrap_or("");
    let external = ty == "NodePort" || ty == "LoadBalancer";

    // Type-dependent fields are dropped when the type changes away from what they need,
    // unless the user set them in this very request (then validation below rejects them).
    if let Some(os) = old_spec {
        let was_external = old_type == "NodePort" || old_type == "LoadBalancer";
        if was_external && !external {
            if let Some(ports) = spec["ports"].as_array_mut() {
                for (i, p) in ports.iter_mut().enumerate() {
                    if p.get("nodePort").is_some() && os["ports"][i]["nodePort"] == p["nodePort"] {
                        p.as_object_mut().expect("port object").remove("nodePort");
                    }
                }
            }
            if spec["externalTrafficPolicy"] == os["externalTrafficPolicy"]
                && let Some(m) = spec.as_object_mut()
            {
                m.remove("externalTrafficPolicy");
            }
        }
        if old_type == "LoadBalancer" && ty != "LoadBalancer" {
            for f in ["allocateLoadBalancerNodePorts", "loadBalancerClass", "healthCheckNodePort"] {
                if spec[f] == os[f]
                    && let Some(m) = spec.as_object_mut()
                {
                    m.remove(f);
                }
            }
        }
    }

    if ty == "ExternalName" {
        if spec["externalName"].as_str().is_none_or(|s| s.is_empty()) {
            errs.push(FieldError::required("spec.externalName", ""));
        }
        return if errs.is_empty() { Ok(()) } else { Err(errs) };
    }

    // Ports.
    let headless = spec["clusterIP"] == json!("None");
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(
                format!("{path}.port"),
                p["port"].clone(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        if !PROTOCOLS.contains(&proto) {
            errs.push(FieldError::not_supported(format!("{path}.protocol"), p["protocol"].clone(), &PROTOCOLS));
        }
        let name = p["name"].as_str().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        }
        if !name.is_empty() && !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(format!("{path}.name"), json!(name)));
        }
        if !seen.insert((port, proto.to_string())) {
            errs.push(FieldError::duplicate(path.clone(), json!({"port": port, "protocol": proto})));
        }
        if let Some(np) = p.get("nodePort").and_then(|v| v.as_i64()).filter(|n| *n != 0) {
            if !external {
                errs.push(FieldError::forbidden(
                    format!("{path}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if np < i64::from(cfg.node_port_range.0) || np > i64::from(cfg.node_port_range.1) {
                errs.push(FieldError::invalid(
                    format!("{path}.nodePort"),
                    json!(np),
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        cfg.node_port_range.0, cfg.node_port_range.1
                    ),
                ));
            }
        }
    }

    // Traffic policies.
    if external {
        let etp = spec["externalTrafficPolicy"].as_str().unwrap_or("Cluster").to_string();
        if etp != "Cluster" && etp != "Local" {
            errs.push(FieldError::not_supported("spec.externalTrafficPolicy", json!(etp), &["Cluster", "Local"]));
        }
        spec["externalTrafficPolicy"] = json!(etp);
    } else if spec.get("externalTrafficPolicy").is_some_and(|v| !v.is_null()) {
        errs.push(FieldError::invalid(
            "spec.externalTrafficPolicy",
            spec["externalTrafficPolicy"].clone(),
            "may only be set for externally-accessible services",
        ));
    }
    if spec.get("internalTrafficPolicy").is_none() {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if spec.get("sessionAffinity").is_none() {
        spec["sessionAffinity"] = json!("None");
    }
    if ty == "LoadBalancer" {
        if spec.get("allocateLoadBalancerNodePorts").is_none() {
            spec["allocateLoadBalancerNodePorts"] = json!(true);
        }
    } else {
        for f in ["loadBalancerClass", "allocateLoadBalancerNodePorts"] {
            if spec.get(f).is_some_and(|v| !v.is_null()) {
                errs.push(FieldError::forbidden(format!("spec.{f}"), "may only be used when `type` is 'LoadBalancer'"));
            }
        }
    }
    if let Some(os) = old_spec
        && old_type == "LoadBalancer"
        && ty == "LoadBalancer"
        && os.get("loadBalancerClass").is_some_and(|c| !c.is_null())
        && spec["loadBalancerClass"] != os["loadBalancerClass"]
    {
        errs.push(FieldError::invalid(
            "spec.loadBalancerClass",
            spec["loadBalancerClass"].clone(),
            "may not change once set",
        ));
    }

    // IP families.
    let dual_capable = cfg.service_cidrs.len() > 1;
    let policy = spec["ipFamilyPolicy"].as_str().unwrap_or("SingleStack").to_string();
    if !POLICIES.contains(&policy.as_str()) {
        errs.push(FieldError::not_supported("spec.ipFamilyPolicy", json!(policy), &POLICIES));
    }
    let primary = if cfg.service_cidrs[0].addr().is_ipv4() { "IPv4" } else { "IPv6" };
    let mut families: Vec<String> = spec["ipFamilies"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str().map(String::from)).collect())
        .unwrap_or_default();
    for (i, f) in families.iter().enumerate() {
        if f != "IPv4" && f != "IPv6" {
            errs.push(FieldError::not_supported(format!("spec.ipFamilies[{i}]"), json!(f), &["IPv4", "IPv6"]));
        }
    }
    if families.len() == 2 && families[0] == families[1] {
        errs.push(FieldError::duplicate("spec.ipFamilies[1]", json!(families[1])));
    }
    if families.len() > 2 {
        errs.push(FieldError::too_many("spec.ipFamilies", "must have at most 2 items"));
    }
    if policy == "SingleStack" && families.len() > 1 {
        errs.push(FieldError::invalid(
            "spec.ipFamilies",
            json!(families),
            "when `ipFamilyPolicy` is 'SingleStack' ipFamilies may only contain one family",
        ));
    }
    if policy == "RequireDualStack" && !dual_capable {
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            json!(policy),
            "this cluster is not configured for dual-stack services",
        ));
    }
    for f in &families {
        if !cfg.service_cidrs.iter().any(|c| family_of(&c.addr()) == f) {
            errs.push(FieldError::invalid(
                "spec.ipFamilies",
                json!(f),
                format!("{f} is not configured on this cluster"),
            ));
        }
    }
    if families.is_empty() {
        families.push(primary.to_string());
    }
    if policy != "SingleStack" && dual_capable && families.len() == 1 {
        let other = if families[0] == "IPv4" { "IPv6" } else { "IPv4" };
        families.push(other.to_string());
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    spec["ipFamilyPolicy"] = json!(policy);
    spec["ipFamilies"] = json!(families);

    // ClusterIPs: immutable once set; allocate on create.
    let mut new_ips: Vec<IpAddr> = Vec::new();
    if let Some(os) = old_spec.filter(|_| old_type != "ExternalName") {
        for f in ["clusterIP", "clusterIPs"] {
            if spec.get(f).is_some_and(|v| !v.is_null()) && spec[f] != os[f] {
                errs.push(FieldError::invalid(format!("spec.{f}"), spec[f].clone(), "field is immutable"));
            }
            spec[f] = os[f].clone();
        }
        // A Service that became dual-stack gets its second ClusterIP.
        let have = ips_of(svc).len();
        let spec = &mut svc["spec"];
        if errs.is_empty() && !headless && have < families.len() {
            let fam = families[have].clone();
            match cfg.service_cidrs.iter().find(|c| family_of(&c.addr()) == fam).and_then(|net| alloc.alloc_ip(net)) {
                Some(ip) => {
                    new_ips.push(ip);
                    if let Some(a) = spec["clusterIPs"].as_array_mut() {
                        a.push(json!(ip.to_string()));
                    }
                }
                None => errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    json!(null),
                    "failed to allocate IP: range is full",
                )),
            }
        }
    } else if headless {
        spec["clusterIPs"] = json!(["None"]);
    } else {
        let requested: Option<IpAddr> = match spec["clusterIP"].as_str().filter(|s| !s.is_empty()) {
            Some(s) => match s.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    errs.push(FieldError::invalid(
                        "spec.clusterIP",
                        json!(s),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    ));
                    None
                }
            },
            None => None,
        };
        for (i, fam) in families.iter().enumerate() {
            let Some(net) = cfg.service_cidrs.iter().find(|c| family_of(&c.addr()) == fam) else { continue };
            let ip = match requested.filter(|_| i == 0) {
                Some(ip) if !net.contains(&ip) => {
                    errs.push(FieldError::invalid("spec.clusterIPs", json!(ip.to_string()), format!("failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is {net}")));
                    None
                }
                Some(ip) if alloc.cluster_ips.contains(&ip) => {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        json!(ip.to_string()),
                        format!("failed to allocate IP {ip}: provided IP is already allocated"),
                    ));
                    None
                }
                Some(ip) => {
                    alloc.cluster_ips.insert(ip);
                    Some(ip)
                }
                None => alloc.alloc_ip(net),
            };
            match ip {
                Some(ip) => new_ips.push(ip),
                None if errs.is_empty() => errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    json!(null),
                    "failed to allocate IP: range is full",
                )),
                None => {}
            }
        }
        if errs.is_empty() {
            spec["clusterIP"] = json!(new_ips[0].to_string());
            spec["clusterIPs"] = json!(new_ips.iter().map(|i| i.to_string()).collect::<Vec<_>>());
        }
    }

    // NodePorts.
    let mut new_ports: Vec<u16> = Vec::new();
    let old_ports: BTreeSet<u16> = old.map(ports_of).unwrap_or_default().into_iter().collect();
    let wants_node_ports =
        ty == "NodePort" || (ty == "LoadBalancer" && svc["spec"]["allocateLoadBalancerNodePorts"] != json!(false));
    if errs.is_empty() && external {
        let range = cfg.node_port_range;
        let ports = svc["spec"]["ports"].as_array_mut().cloned().unwrap_or_default();
        let mut claimed_here: BTreeSet<u16> = BTreeSet::new();
        let mut out_ports = ports.clone();
        for (i, p) in ports.iter().enumerate() {
            match p.get("nodePort").and_then(|v| v.as_u64()).filter(|n| *n != 0).map(|n| n as u16) {
                Some(np) => {
                    let ours = old_ports.contains(&np) || claimed_here.contains(&np);
                    if !ours && alloc.node_ports.contains(&np) {
                        errs.push(FieldError::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            json!(np),
                            "provided port is already allocated",
                        ));
                    } else if !ours {
                        alloc.node_ports.insert(np);
                        new_ports.push(np);
                    }
                    claimed_here.insert(np);
                }
                None if wants_node_ports => {
                    // Same port number with another protocol shares the NodePort, as upstream does.
                    let twin =
                        out_ports.iter().take(i).find(|q| q["port"] == p["port"]).and_then(|q| q["nodePort"].as_u64());
                    let np = match twin {
                        Some(t) => Some(t as u16),
                        None => alloc.alloc_port(range).inspect(|np| new_ports.push(*np)),
                    };
                    match np {
                        Some(np) => {
                            out_ports[i]["nodePort"] = json!(np);
                            claimed_here.insert(np);
                        }
                        None => errs.push(FieldError::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            json!(null),
                            "range is full",
                        )),
                    }
                }
                None => {}
            }
        }
        if svc["spec"]["externalTrafficPolicy"] == json!("Local") && ty == "LoadBalancer" {
            match svc["spec"]["healthCheckNodePort"].as_u64().map(|n| n as u16) {
                Some(h) if old_ports.contains(&h) => {}
                Some(h) if alloc.node_ports.contains(&h) => errs.push(FieldError::invalid(
                    "spec.healthCheckNodePort",
                    json!(h),
                    "provided port is already allocated",
                )),
                Some(h) => {
                    alloc.node_ports.insert(h);
                    new_ports.push(h);
                }
                None => match alloc.alloc_port(range) {
                    Some(h) => {
                        new_ports.push(h);
                        svc["spec"]["healthCheckNodePort"] = json!(h);
                    }
                    None => errs.push(FieldError::invalid("spec.healthCheckNodePort", json!(null), "range is full")),
                },
            }
        } else if let Some(m) = svc["spec"].as_object_mut() {
            m.remove("healthCheckNodePort");
        }
        svc["spec"]["ports"] = Value::Array(out_ports);
    }

    // Default per-port fields.
    if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
        for p in ports {
            if p.get("protocol").is_none() {
                p["protocol"] = json!("TCP");
            }
            if p.get("targetPort").is_none() {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
    if svc.get("status").is_none_or(|s| s.is_null()) {
        svc["status"] = json!({"loadBalancer": {}});
    }

    if !errs.is_empty() {
        for ip in new_ips {
            alloc.cluster_ips.remove(&ip);
        }
        for p in new_ports {
            alloc.node_ports.remove(&p);
        }
        return Err(errs);
    }
    // Ports the update stopped using go back to the pool.
    if let Some(o) = old {
        let now: BTreeSet<u16> = ports_of(svc).into_iter().collect();
        for p in old_ports.difference(&now) {
            alloc.node_ports.remove(p);
        }
        let now_ips: BTreeSet<IpAddr> = ips_of(svc).into_iter().collect();
        for ip in ips_of(o) {
            if !now_ips.contains(&ip) {
                alloc.cluster_ips.remove(&ip);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb(extra: Value) -> Value {
        let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                           "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
        crate::patch::merge_patch(&mut s, &extra);
        s
    }

    #[test]
    fn load_balancer_gets_defaults_cluster_ip_and_node_port() {
        let cfg = ServiceConfig::default();
        let mut a = ServiceAllocations::default();
        let mut s = lb(json!({}));
        prepare(&cfg, &mut a, &mut s, None).unwrap();
        let spec = &s["spec"];
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert!(spec["clusterIP"].as_str().unwrap().starts_with("10.96."));
        let np = spec["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&np));
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["externalTrafficPolicy"], "Cluster");
        assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
    }

    #[test]
    fn node_ports_are_unique_and_range_checked() {
        let cfg = ServiceConfig::default();
        let mut a = ServiceAllocations::default();
        let mut s1 = lb(json!({"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}));
        prepare(&cfg, &mut a, &mut s1, None).unwrap();
        let mut s2 = lb(json!({"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}));
        let e = prepare(&cfg, &mut a, &mut s2, None).unwrap_err();
        assert_eq!(e[0].field, "spec.ports[0].nodePort");
        assert!(e[0].to_string().contains("already allocated"));
        let mut s3 = lb(json!({"spec": {"ports": [{"port": 80, "nodePort": 80}]}}));
        let e = prepare(&cfg, &mut a, &mut s3, None).unwrap_err();
        assert!(e[0].to_string().contains("not in the valid range"));
        let mut many = Vec::new();
        for _ in 0..50 {
            let mut s = lb(json!({}));
            prepare(&cfg, &mut a, &mut s, None).unwrap();
            many.push(s["spec"]["ports"][0]["nodePort"].as_u64().unwrap());
        }
        many.push(30080);
        let n = many.len();
        many.sort();
        many.dedup();
        assert_eq!(many.len(), n, "no duplicate nodePorts");
    }

    #[test]
    fn dual_stack_policies() {
        let cfg = ServiceConfig::default();
        let mut a = ServiceAllocations::default();
        let mut s = lb(json!({"spec": {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6"]}}));
        prepare(&cfg, &mut a, &mut s, None).unwrap();
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv6", "IPv4"]));
        assert_eq!(s["spec"]["clusterIPs"].as_array().unwrap().len(), 2);
        let single = ServiceConfig { service_cidrs: vec!["10.96.0.0/16".parse().unwrap()], ..Default::default() };
        let mut s = lb(json!({"spec": {"ipFamilyPolicy": "RequireDualStack"}}));
        let e = prepare(&single, &mut a, &mut s, None).unwrap_err();
        assert_eq!(e[0].field, "spec.ipFamilyPolicy");
    }

    #[test]
    fn type_change_to_cluster_ip_releases_node_ports() {
        let cfg = ServiceConfig::default();
        let mut a = ServiceAllocations::default();
        let mut s = lb(json!({"spec": {"ports": [{"port": 80, "nodePort": 30555}]}}));
        prepare(&cfg, &mut a, &mut s, None).unwrap();
        let mut s2 = s.clone();
        s2["spec"]["type"] = json!("ClusterIP");
        prepare(&cfg, &mut a, &mut s2, Some(&s)).unwrap();
        assert!(s2["spec"]["ports"][0].get("nodePort").is_none());
        assert!(s2["spec"].get("externalTrafficPolicy").is_none());
        let mut s3 = lb(json!({"spec": {"ports": [{"port": 80, "nodePort": 30555}]}}));
        prepare(&cfg, &mut a, &mut s3, None).expect("30555 was released");
    }

    #[test]
    fn cluster_ip_is_immutable_and_bad_values_rejected() {
        let cfg = ServiceConfig::default();
        let mut a = ServiceAllocations::default();
        let mut s = lb(json!({}));
        prepare(&cfg, &mut a, &mut s, None).unwrap();
        let mut s2 = s.clone();
        s2["spec"]["clusterIP"] = json!("10.96.9.9");
        assert!(prepare(&cfg, &mut a, &mut s2, Some(&s)).unwrap_err()[0].to_string().contains("immutable"));
        let mut bad = lb(json!({"spec": {"type": "Bogus"}}));
        assert_eq!(prepare(&cfg, &mut a, &mut bad, None).unwrap_err()[0].field, "spec.type");
        let mut noports = lb(json!({"spec": {"ports": null}}));
        assert_eq!(prepare(&cfg, &mut a, &mut noports, None).unwrap_err()[0].field, "spec.ports");
    }
}
