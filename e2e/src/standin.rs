//! Stand-ins for the kubelet, the endpoints controller and kube-proxy, so that
//! Services in the sandbox get real backends the Kubernetes way: a Pod created
//! through the API becomes a small server on its node (HTTP and UDP echo on its
//! container ports, answering with its name and node), EndpointSlices follow
//! ready Pods, and each node forwards its NodePorts to the Service's ready
//! backends (for `externalTrafficPolicy: Local`, only those on that node).
//!
//! With `kube_proxy` on (ferrolb installed with `--forwarding kube-proxy`), each node
//! also does what kube-proxy's nftables mode does for ClusterIPs and LoadBalancer
//! ingress IPs: a table of its own (`ip ferrolb-sandbox-kube-proxy`) DNATs each
//! VIP:port to a random ready endpoint (Cluster: any, masqueraded as the node;
//! Local: this node's, client address kept, dropped where there are none), rejects
//! traffic to a Service without endpoints (TCP reset, ICMP unreachable), and the
//! Service's `healthCheckNodePort` answers 200 where local endpoints exist, 503
//! elsewhere, as kube-proxy's health server. Users' Pods are dual-stack (an IPv4 and
//! an IPv6 address on their node's link), so each family has a table (`ip`, `ip6`)
//! DNATing its VIPs to that family's endpoints; the NodePort proxy dials IPv4.
//!
//! Everything that opens a socket for a node runs on a thread inside that node's
//! network namespace, with its own runtime: sockets belong to the namespace of
//! the thread that creates them.

use ferrolb_common::{lock, reflect};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, mpsc, watch};

use crate::topology::run;

const MANAGER: &str = "ferrolb-sandbox";

/// A backend target: pod IP, port, node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Pod IP.
    pub ip: IpAddr,
    /// Container port.
    pub port: u16,
    /// Node the pod runs on.
    pub node: String,
}

/// What one NodePort forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Only this node's backends (`externalTrafficPolicy: Local`).
    pub local_only: bool,
    /// Ready backends.
    pub targets: Vec<Target>,
}

type Table = Arc<Mutex<HashMap<(u16, String), Forward>>>;

enum Cmd {
    Backend {
        uid: String,
        pod: String,
        ips: Vec<IpAddr>,
        ports: Vec<u16>,
        /// Its output (`kubectl logs`): what it serves, and each request.
        log: PathBuf,
    },
    StopBackend {
        uid: String,
    },
    Proxies(BTreeSet<(u16, String)>),
    /// healthCheckNodePort -> (namespace/name, local ready endpoints).
    Health(BTreeMap<u16, (String, usize)>),
}

/// One Service port as kube-proxy programs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedPort {
    /// The ClusterIPs and LoadBalancer ingress IPs (both families).
    pub vips: Vec<IpAddr>,
    /// `tcp` or `udp`.
    pub proto: String,
    /// Service port.
    pub port: u16,
    /// `externalTrafficPolicy: Local`.
    pub local_only: bool,
    /// Ready endpoints.
    pub endpoints: Vec<Target>,
}

/// The nft tables' name (one per family: `ip` and `ip6`).
pub const KUBE_PROXY_TABLE: &str = "ferrolb-sandbox-kube-proxy";

/// kube-proxy's nftables rules on `node` for `ports`: one table per family, each
/// replaced atomically (dnat is per family, as kube-proxy's own tables are).
pub fn kube_proxy_script(node: &str, ports: &[ProxiedPort]) -> String {
    family_script(node, ports, false) + &family_script(node, ports, true)
}

fn family_script(node: &str, ports: &[ProxiedPort], v6: bool) -> String {
    let (family, addr_type, daddr) = if v6 { ("ip6", "ipv6_addr", "ip6") } else { ("ip", "ipv4_addr", "ip") };
    let table = format!("{family} {KUBE_PROXY_TABLE}");
    let mut chains = String::new();
    let mut services = Vec::new();
    let mut no_endpoints = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let vips: Vec<&IpAddr> = p.vips.iter().filter(|v| v.is_ipv6() == v6).collect();
        if vips.is_empty() {
            continue;
        }
        let eps: Vec<&Target> =
            p.endpoints.iter().filter(|t| t.ip.is_ipv6() == v6 && (!p.local_only || t.node == node)).collect();
        let key = |vip: &IpAddr| format!("{vip} . {} . {}", p.proto, p.port);
        if eps.is_empty() {
            // Cluster: nothing serves it (reject). Local: nothing here (drop, as
            // kube-proxy drops external traffic for Local without local endpoints).
            if p.local_only && p.endpoints.iter().any(|t| t.ip.is_ipv6() == v6) {
                services.extend(vips.iter().map(|v| format!("{} : drop", key(v))));
            } else {
                no_endpoints.extend(vips.iter().map(|v| key(v)));
            }
            continue;
        }
        let mark = if p.local_only { "" } else { "meta mark set meta mark | 0x4000 " };
        let picks: Vec<String> = (0..eps.len()).map(|j| format!("{j} : goto ep-{i}-{j}")).collect();
        chains.push_str(&format!(
            "  chain svc-{i} {{\n    {mark}numgen random mod {} vmap {{ {} }}\n  }}\n",
            eps.len(),
            picks.join(", ")
        ));
        for (j, t) in eps.iter().enumerate() {
            let to = SocketAddr::new(t.ip, t.port);
            chains.push_str(&format!("  chain ep-{i}-{j} {{\n    meta l4proto {} dnat to {to}\n  }}\n", p.proto));
        }
        services.extend(vips.iter().map(|v| format!("{} : goto svc-{i}", key(v))));
    }
    let elements =
        |e: &[String]| if e.is_empty() { String::new() } else { format!(" elements = {{ {} }};", e.join(", ")) };
    format!(
        "table {table}\ndelete table {table}\ntable {table} {{\n  \
         map services {{ type {addr_type} . inet_proto . inet_service : verdict;{} }}\n  \
         set no-endpoints {{ type {addr_type} . inet_proto . inet_service;{} }}\n{chains}  \
         chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    \
         {daddr} daddr . meta l4proto . th dport vmap @services\n  }}\n  \
         chain output {{\n    type nat hook output priority -100; policy accept;\n    \
         {daddr} daddr . meta l4proto . th dport vmap @services\n  }}\n  \
         chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         meta mark & 0x4000 == 0x4000 masquerade\n  }}\n  \
         chain no-endpoint-reject {{\n    type filter hook prerouting priority -110; policy accept;\n    \
         {daddr} daddr . meta l4proto . th dport @no-endpoints meta l4proto tcp reject with tcp reset\n    \
         {daddr} daddr . meta l4proto . th dport @no-endpoints reject\n  }}\n}}\n",
        elements(&services),
        elements(&no_endpoints),
    )
}

/// A node as the stand-ins see it.
#[derive(Debug, Clone)]
pub struct NodeNet {
    /// Node name (`node-1`).
    pub name: String,
    /// Its network namespace name.
    pub netns: String,
}

struct Agent {
    tx: mpsc::UnboundedSender<Cmd>,
}

/// Start one agent thread per node; returns senders for commands.
fn start_agent(node: &NodeNet, table: Table) -> anyhow::Result<Agent> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
    let name = node.name.clone();
    let path = format!("/run/netns/{}", node.netns);
    crate::netns::in_netns(&path, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let mut backends: HashMap<String, Vec<tokio::task::JoinHandle<()>>> = HashMap::new();
            let mut proxies: HashMap<(u16, String), tokio::task::JoinHandle<()>> = HashMap::new();
            let health_table: Arc<Mutex<BTreeMap<u16, (String, usize)>>> = Arc::default();
            let mut health: HashMap<u16, tokio::task::JoinHandle<()>> = HashMap::new();
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Cmd::Backend { uid, pod, ips, ports, log } => {
                        let mut tasks = Vec::new();
                        for (ip, port) in ips.iter().flat_map(|ip| ports.iter().map(move |p| (*ip, *p))) {
                            let text = format!("{pod} on {name}\n");
                            match backend(ip, port, text, log.clone()).await {
                                Ok(mut t) => tasks.append(&mut t),
                                Err(e) => eprintln!("sandbox: backend {pod} {ip}:{port}: {e}"),
                            }
                        }
                        backends.insert(uid, tasks);
                    }
                    Cmd::StopBackend { uid } => {
                        for t in backends.remove(&uid).unwrap_or_default() {
                            t.abort();
                        }
                    }
                    Cmd::Health(want) => {
                        let ports: Vec<u16> = want.keys().copied().collect();
                        *lock(&health_table) = want;
                        let start = async |port: &u16| health_server(*port, health_table.clone()).await;
                        for (port, e) in keep_listening(&mut health, &ports, start).await {
                            eprintln!("sandbox: health check node port {port} on {name}: {e}");
                        }
                    }
                    Cmd::Proxies(want) => {
                        let keys: Vec<(u16, String)> = want.into_iter().collect();
                        let start = async |key: &(u16, String)| proxy(key.clone(), name.clone(), table.clone()).await;
                        for (key, e) in keep_listening(&mut proxies, &keys, start).await {
                            eprintln!("sandbox: node port {}/{} on {name}: {e}", key.0, key.1);
                        }
                    }
                }
            }
        });
    })?;
    Ok(Agent { tx })
}

/// Keep one listening task per wanted key: abort the tasks no longer wanted, start the
/// missing ones; the keys whose listener could not start, with why.
async fn keep_listening<K: Clone + Eq + std::hash::Hash>(
    tasks: &mut HashMap<K, tokio::task::JoinHandle<()>>,
    want: &[K],
    start: impl AsyncFn(&K) -> std::io::Result<tokio::task::JoinHandle<()>>,
) -> Vec<(K, std::io::Error)> {
    tasks.retain(|k, t| {
        let keep = want.contains(k);
        if !keep {
            t.abort();
        }
        keep
    });
    let mut failed = Vec::new();
    for key in want {
        if tasks.contains_key(key) {
            continue;
        }
        match start(key).await {
            Ok(t) => {
                tasks.insert(key.clone(), t);
            }
            Err(e) => failed.push((key.clone(), e)),
        }
    }
    failed
}

/// Append a line to a Pod's log, stamped as a container runtime stamps output.
fn log_line(log: &Path, line: &str) {
    use std::io::Write;
    let stamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(f, "{stamp} {line}");
    }
}

/// A pod's server: HTTP on TCP and echo on UDP, each answering with the pod's name and
/// node; it logs what it serves and each HTTP request line, as a web server would.
async fn backend(
    ip: IpAddr,
    port: u16,
    text: String,
    log: PathBuf,
) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpListener::bind((ip, port)).await?;
    let udp = tokio::net::UdpSocket::bind((ip, port)).await?;
    log_line(&log, &format!("serving HTTP on {} and UDP echo on the same port", SocketAddr::new(ip, port)));
    let t1 = {
        let text = text.clone();
        tokio::spawn(async move {
            while let Ok((mut c, from)) = tcp.accept().await {
                let (text, log) = (text.clone(), log.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await;
                    let request = match n {
                        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string(),
                        _ => String::new(),
                    };
                    log_line(&log, &format!("{from} \"{request}\" 200"));
                    let body = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = c.write_all(body.as_bytes()).await;
                });
            }
        })
    };
    let t2 = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let mut reply = text.clone().into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = udp.send_to(&reply, from).await;
        }
    });
    Ok(vec![t1, t2])
}

/// kube-proxy's health server for one `healthCheckNodePort`: 200 while this node has
/// ready endpoints for the Service, 503 otherwise, with kube-proxy's JSON body.
async fn health_server(
    port: u16,
    table: Arc<Mutex<BTreeMap<u16, (String, usize)>>>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))).await?;
    Ok(tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let (svc, local) = lock(&table).get(&port).cloned().unwrap_or_default();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await;
                let (ns, name) = svc.split_once('/').unwrap_or(("", ""));
                let body = json!({"service": {"namespace": ns, "name": name}, "localEndpoints": local,
                                  "serviceProxyHealthy": true})
                .to_string();
                let status = if local > 0 { "200 OK" } else { "503 Service Unavailable" };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes()).await;
            });
        }
    }))
}

/// kube-proxy's job for one NodePort on this node: pick a ready backend per connection/datagram.
async fn proxy(key: (u16, String), node: String, table: Table) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let (port, proto) = key.clone();
    let rr = Arc::new(AtomicUsize::new(0));
    let pick = move |table: &Table| -> Option<Target> {
        let t = lock(table);
        let f = t.get(&key)?;
        let pool: Vec<&Target> = f.targets.iter().filter(|t| !f.local_only || t.node == node).collect();
        if pool.is_empty() {
            return None;
        }
        Some(pool[rr.fetch_add(1, Ordering::Relaxed) % pool.len()].clone())
    };
    // `[::]` with v6only off accepts IPv4 too (the speaker's nftables redirect keeps the family).
    let any = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    if proto == "TCP" {
        let l = tokio::net::TcpListener::bind(any).await?;
        Ok(tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let Some(t) = pick(&table) else {
                    // No endpoint: reset at once, as kube-proxy rejects (not an empty reply).
                    let _ = c.set_zero_linger();
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut b) = tokio::net::TcpStream::connect((t.ip, t.port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
                    }
                });
            }
        }))
    } else {
        let s = Arc::new(tokio::net::UdpSocket::bind(any).await?);
        Ok(tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let Some(t) = pick(&table) else { continue };
                let data = buf[..n].to_vec();
                let s = s.clone();
                tokio::spawn(async move {
                    let Ok(up) = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await else { return };
                    if up.send_to(&data, (t.ip, t.port)).await.is_err() {
                        return;
                    }
                    let mut r = [0u8; 2048];
                    if let Ok(Ok((m, _))) = tokio::time::timeout(Duration::from_secs(2), up.recv_from(&mut r)).await {
                        let _ = s.send_to(&r[..m], from).await;
                    }
                });
            }
        }))
    }
}

struct Running {
    node: String,
    /// Its IPv4 and IPv6 address (a dual-stack Pod, as in a dual-stack cluster).
    ips: [IpAddr; 2],
}

/// The `n`th Pod's addresses: `198.51.100.n` and `fd42:f1b::1:n`, on its node's link
/// (so the other nodes reach them by ARP and NDP, as a flat Pod network would).
fn pod_ips(n: u8) -> [IpAddr; 2] {
    [
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, n)),
        IpAddr::V6(std::net::Ipv6Addr::new(0xfd42, 0xf1b, 0, 0, 0, 0, 1, n.into())),
    ]
}

fn addr_cmd<'a>(netns: &'a str, op: &'a str, ip: &IpAddr) -> Vec<String> {
    let (prefix, extra) = if ip.is_ipv6() { (128, Some("nodad")) } else { (32, None) };
    let mut c: Vec<String> = ["ip", "-n", netns, "addr", op, &format!("{ip}/{prefix}"), "dev", "eth0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if op == "add" {
        c.extend(extra.map(str::to_string));
    }
    c
}

/// Run the stand-ins until `stop` fires.
pub async fn run_standins(
    client: Client,
    nodes: Vec<NodeNet>,
    kube_proxy: bool,
    (logs, log_dir): (crate::sandbox::LogFiles, PathBuf),
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&log_dir)?;
    if kube_proxy {
        // A node where kube-proxy runs forwards (DNAT to a Pod on another node).
        for n in &nodes {
            run(&["ip", "netns", "exec", &n.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            run(&["ip", "netns", "exec", &n.netns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
        }
    }
    let mut programmed: BTreeMap<String, String> = BTreeMap::new();
    let table: Table = Arc::new(Mutex::new(HashMap::new()));
    let mut agents: BTreeMap<String, Agent> = BTreeMap::new();
    for n in &nodes {
        agents.insert(n.name.clone(), start_agent(n, table.clone())?);
    }
    let netns: BTreeMap<String, String> = nodes.iter().map(|n| (n.name.clone(), n.netns.clone())).collect();
    let changed = Arc::new(Notify::new());
    let (pods, _) = reflect(Api::<Pod>::all(client.clone()), changed.clone());
    let (svcs, _) = reflect(Api::<Service>::all(client.clone()), changed.clone());
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut next_ip: u8 = 200;
    let mut placed = 0usize;
    let mut slices_written: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = stop.changed() => break,
        }
        // Kubelet: start new Pods, stop deleted ones.
        let live: BTreeSet<String> =
            pods.state().iter().filter(|p| p.metadata.deletion_timestamp.is_none()).filter_map(|p| p.uid()).collect();
        for uid in running.keys().filter(|u| !live.contains(*u)).cloned().collect::<Vec<_>>() {
            let r = running.remove(&uid).expect("listed");
            if let Some(a) = agents.get(&r.node) {
                let _ = a.tx.send(Cmd::StopBackend { uid });
            }
            for ip in &r.ips {
                let c = addr_cmd(&netns[&r.node], "del", ip);
                let _ = run(&c.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
        for p in pods.state() {
            let Some(uid) = p.uid() else { continue };
            if running.contains_key(&uid) || p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            // ferrolb's own Pods run as processes (crate::pods), not as backends.
            if p.namespace().as_deref() == Some(crate::sandbox::NS) {
                continue;
            }
            let ns = p.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let spec = p.spec.clone().unwrap_or_default();
            let node = match spec.node_name.clone().filter(|n| agents.contains_key(n)) {
                Some(n) => n,
                None => {
                    // The scheduler's job: place it round-robin.
                    let n = nodes[placed % nodes.len()].name.clone();
                    placed += 1;
                    if api
                        .patch(
                            &p.name_any(),
                            &PatchParams::apply(MANAGER).force(),
                            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Pod", "spec": {"nodeName": n}})),
                        )
                        .await
                        .is_err()
                    {
                        continue;
                    }
                    n
                }
            };
            if next_ip > 250 {
                eprintln!("sandbox: out of pod IPs");
                continue;
            }
            let ips = pod_ips(next_ip);
            next_ip += 1;
            let added = ips.iter().try_for_each(|ip| {
                let c = addr_cmd(&netns[&node], "add", ip);
                run(&c.iter().map(String::as_str).collect::<Vec<_>>()).map(|_| ())
            });
            if let Err(e) = added {
                eprintln!("sandbox: pod IPs {ips:?}: {e}");
                continue;
            }
            let mut ports: Vec<u16> = spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|p| u16::try_from(p.container_port).ok())
                .collect();
            if ports.is_empty() {
                ports.push(8080);
            }
            let log = log_dir.join(format!("{ns}_{}_{uid}.log", p.name_any()));
            lock(&logs).insert((ns.clone(), p.name_any()), log.clone());
            let _ = agents[&node].tx.send(Cmd::Backend {
                uid: uid.clone(),
                pod: p.name_any(),
                ips: ips.to_vec(),
                ports,
                log,
            });
            let status = json!({"apiVersion": "v1", "kind": "Pod", "status": {
                "phase": "Running", "podIP": ips[0].to_string(),
                "podIPs": [{"ip": ips[0].to_string()}, {"ip": ips[1].to_string()}],
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]}});
            let _ = api.patch_status(&p.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(status)).await;
            running.insert(uid, Running { node, ips });
        }
        // Endpoints controller + kube-proxy tables.
        let mut forwards: HashMap<(u16, String), Forward> = HashMap::new();
        let mut want_slices: BTreeSet<(String, String)> = BTreeSet::new();
        let mut proxied: Vec<ProxiedPort> = Vec::new();
        let mut health: BTreeMap<String, BTreeMap<u16, (String, usize)>> = BTreeMap::new();
        for s in svcs.state() {
            let ns = s.namespace().unwrap_or_default();
            let spec = s.spec.clone().unwrap_or_default();
            let Some(sel) = spec.selector.clone().filter(|m| !m.is_empty()) else { continue };
            let ready: Vec<(Vec<IpAddr>, String, Pod)> = pods
                .state()
                .iter()
                .filter(|p| {
                    p.namespace().unwrap_or_default() == ns && sel.iter().all(|(k, v)| p.labels().get(k) == Some(v))
                })
                .filter_map(|p| match running.get(&p.uid()?) {
                    Some(r) => Some((r.ips.to_vec(), r.node.clone(), (**p).clone())),
                    // ferrolb's own Pods (run by the sandbox's kubelet): ready by their status.
                    None => {
                        let st = p.status.as_ref()?;
                        let ready = st.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
                        let ip: IpAddr = st.pod_ip.as_deref()?.parse().ok()?;
                        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                        ready.then(|| (vec![ip], node, (**p).clone()))
                    }
                })
                .collect();
            let sports = spec.ports.clone().unwrap_or_default();
            let target_port = |sp: &k8s_openapi::api::core::v1::ServicePort, pod: &Pod| -> Option<u16> {
                use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
                match &sp.target_port {
                    Some(IntOrString::Int(i)) => u16::try_from(*i).ok(),
                    Some(IntOrString::String(name)) => pod
                        .spec
                        .as_ref()?
                        .containers
                        .iter()
                        .flat_map(|c| c.ports.iter().flatten())
                        .find(|p| p.name.as_deref() == Some(name))
                        .and_then(|p| u16::try_from(p.container_port).ok()),
                    None => u16::try_from(sp.port).ok(),
                }
            };
            let ports: Vec<serde_json::Value> = sports
                .iter()
                .map(|sp| {
                    let port = ready.first().and_then(|(_, _, p)| target_port(sp, p)).map(i32::from).unwrap_or(sp.port);
                    json!({"name": sp.name.clone().unwrap_or_default(), "port": port, "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into())})
                })
                .collect();
            // One slice per family of the Service, as the EndpointSlice controller writes.
            let mut families =
                spec.ip_families.clone().filter(|f| !f.is_empty()).unwrap_or_else(|| vec!["IPv4".into()]);
            // ferrolb's own Pods have an IPv4 address only (a network of their own on the
            // bridge): their Services keep an IPv4 slice in an IPv6-only cluster too.
            if !families.iter().any(|f| f == "IPv4") && ready.iter().any(|(ips, _, _)| ips.iter().all(IpAddr::is_ipv4))
            {
                families.push("IPv4".into());
            }
            for family in families.iter().filter(|f| ["IPv4", "IPv6"].contains(&f.as_str())) {
                let v6 = family == "IPv6";
                let endpoints: Vec<serde_json::Value> = ready
                    .iter()
                    .filter_map(|(ips, node, p)| {
                        let ip = ips.iter().find(|ip| ip.is_ipv6() == v6)?;
                        Some(json!({"addresses": [ip.to_string()], "nodeName": node, "conditions": {"ready": true},
                                    "targetRef": {"kind": "Pod", "name": p.name_any(), "namespace": ns}}))
                    })
                    .collect();
                let name =
                    if v6 { format!("{}-sandbox-ipv6", s.name_any()) } else { format!("{}-sandbox", s.name_any()) };
                let body = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": name, "labels": {"kubernetes.io/service-name": s.name_any(), "endpointslice.kubernetes.io/managed-by": MANAGER}},
                    "addressType": family, "endpoints": endpoints, "ports": ports});
                let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
                let current = api.get_opt(&name).await.ok().flatten();
                let same = current.as_ref().is_some_and(|c| {
                    let v = serde_json::to_value(c).unwrap_or_default();
                    v["endpoints"] == body["endpoints"] && v["ports"] == body["ports"]
                });
                if !same {
                    let _ = api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await;
                }
                want_slices.insert((ns.clone(), name));
            }
            let local_only = spec.external_traffic_policy.as_deref() == Some("Local");
            if kube_proxy {
                let mut vips: Vec<IpAddr> =
                    spec.cluster_ips.iter().flatten().filter_map(|ip| ip.parse().ok()).collect();
                let ingress =
                    s.status.as_ref().and_then(|st| st.load_balancer.as_ref()).and_then(|lb| lb.ingress.clone());
                vips.extend(ingress.iter().flatten().filter_map(|i| i.ip.as_deref()?.parse::<IpAddr>().ok()));
                for sp in &sports {
                    let (Ok(port), proto) =
                        (u16::try_from(sp.port), sp.protocol.as_deref().unwrap_or("TCP").to_lowercase())
                    else {
                        continue;
                    };
                    if !["tcp", "udp"].contains(&proto.as_str()) {
                        continue;
                    }
                    let endpoints = ready
                        .iter()
                        .flat_map(|(ips, node, p)| {
                            let port = target_port(sp, p);
                            ips.iter().filter_map(move |ip| Some(Target { ip: *ip, port: port?, node: node.clone() }))
                        })
                        .collect();
                    proxied.push(ProxiedPort { vips: vips.clone(), proto, port, local_only, endpoints });
                }
                if let Some(hc) = spec.health_check_node_port.and_then(|p| u16::try_from(p).ok()).filter(|_| local_only)
                {
                    for n in &nodes {
                        let local = ready.iter().filter(|(_, node, _)| *node == n.name).count();
                        health.entry(n.name.clone()).or_default().insert(hc, (format!("{ns}/{}", s.name_any()), local));
                    }
                }
            }
            for sp in &sports {
                let Some(np) = sp.node_port.and_then(|n| u16::try_from(n).ok()) else { continue };
                let proto = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
                let targets = ready
                    .iter()
                    .filter_map(|(ips, node, p)| {
                        // The NodePort proxy dials Pods over IPv4, whatever the client spoke.
                        let ip = *ips.iter().find(|ip| ip.is_ipv4())?;
                        Some(Target { ip, port: target_port(sp, p)?, node: node.clone() })
                    })
                    .collect();
                forwards.insert((np, proto), Forward { local_only, targets });
            }
        }
        for (ns, name) in slices_written.difference(&want_slices) {
            let _ = Api::<EndpointSlice>::namespaced(client.clone(), ns).delete(name, &DeleteParams::default()).await;
        }
        slices_written = want_slices;
        let keys: BTreeSet<(u16, String)> = forwards.keys().cloned().collect();
        *lock(&table) = forwards;
        for a in agents.values() {
            let _ = a.tx.send(Cmd::Proxies(keys.clone()));
        }
        if kube_proxy {
            for n in &nodes {
                let script = kube_proxy_script(&n.name, &proxied);
                if programmed.get(&n.name) != Some(&script) {
                    match crate::client::netns_nft(&n.netns, &script) {
                        Ok(()) => {
                            programmed.insert(n.name.clone(), script);
                        }
                        Err(e) => eprintln!("sandbox: kube-proxy on {}: {e}", n.name),
                    }
                }
                let _ = agents[&n.name].tx.send(Cmd::Health(health.remove(&n.name).unwrap_or_default()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(ip: &str, node: &str) -> Target {
        Target { ip: ip.parse().unwrap(), port: 8080, node: node.into() }
    }

    #[test]
    fn kube_proxy_rules_follow_the_traffic_policy() {
        let vip: IpAddr = "198.51.100.100".parse().unwrap();
        let port = |local_only, endpoints| ProxiedPort {
            vips: vec![vip],
            proto: "tcp".into(),
            port: 80,
            local_only,
            endpoints,
        };
        let two = vec![target("198.51.100.201", "node-1"), target("198.51.100.202", "node-2")];
        // Cluster: every endpoint, masqueraded.
        let s = kube_proxy_script("node-3", &[port(false, two.clone())]);
        assert!(s.contains("198.51.100.100 . tcp . 80 : goto svc-0"), "{s}");
        assert!(s.contains("meta mark set meta mark | 0x4000 numgen random mod 2"), "{s}");
        assert!(s.contains("meta l4proto tcp dnat to 198.51.100.202:8080"), "{s}");
        // Local: this node's only, the client address kept; dropped where there are none.
        let s = kube_proxy_script("node-1", &[port(true, two.clone())]);
        assert!(s.contains("numgen random mod 1") && !s.contains("0x4000 numgen"), "{s}");
        assert!(s.contains("dnat to 198.51.100.201:8080") && !s.contains("198.51.100.202:8080"), "{s}");
        let s = kube_proxy_script("node-3", &[port(true, two)]);
        assert!(s.contains("198.51.100.100 . tcp . 80 : drop"), "{s}");
        // No endpoints at all: rejected.
        let s = kube_proxy_script("node-1", &[port(false, vec![])]);
        assert!(s.contains("set no-endpoints { type ipv4_addr . inet_proto . inet_service; elements = { 198.51.100.100 . tcp . 80 }; }"), "{s}");
        assert!(
            s.starts_with("table ip ferrolb-sandbox-kube-proxy\ndelete table ip ferrolb-sandbox-kube-proxy\n"),
            "atomic"
        );
        // Dual stack: each family's VIPs go to that family's endpoints, in its own table.
        let dual = ProxiedPort {
            vips: vec![vip, "fd42:f1b::100".parse().unwrap()],
            proto: "tcp".into(),
            port: 80,
            local_only: false,
            endpoints: vec![target("198.51.100.201", "node-1"), target("fd42:f1b::1:c9", "node-1")],
        };
        let s = kube_proxy_script("node-2", &[dual]);
        let (v4, v6) = s.split_once("table ip6 ").expect("an ip6 table");
        assert!(v4.contains("dnat to 198.51.100.201:8080") && !v4.contains("fd42"), "{s}");
        assert!(v6.contains("fd42:f1b::100 . tcp . 80 : goto svc-0"), "{s}");
        assert!(v6.contains("dnat to [fd42:f1b::1:c9]:8080") && !v6.contains("198.51.100"), "{s}");
        assert!(v6.contains("ip6 daddr . meta l4proto . th dport vmap @services"), "{s}");
    }
}
