//! Stand-ins for the kubelet, the endpoints controller and kube-proxy, so that
//! Services in the sandbox get real backends the Kubernetes way: a Pod created
//! through the API becomes a small server on its node (HTTP and UDP echo on its
//! container ports, answering with its name and node), EndpointSlices follow
//! ready Pods, and each node forwards its NodePorts to the Service's ready
//! backends (for `externalTrafficPolicy: Local`, only those on that node).
//!
//! Everything that opens a socket for a node runs on a thread inside that node's
//! network namespace, with its own runtime: sockets belong to the namespace of
//! the thread that creates them.

use ferrolb_common::{lock, reflect};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
    Backend { uid: String, pod: String, ip: Ipv4Addr, ports: Vec<u16> },
    StopBackend { uid: String },
    Proxies(BTreeSet<(u16, String)>),
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
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Cmd::Backend { uid, pod, ip, ports } => {
                        let mut tasks = Vec::new();
                        for port in ports {
                            let text = format!("{pod} on {name}\n");
                            match backend(ip, port, text).await {
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
                    Cmd::Proxies(want) => {
                        proxies.retain(|k, t| {
                            let keep = want.contains(k);
                            if !keep {
                                t.abort();
                            }
                            keep
                        });
                        for key in want {
                            if proxies.contains_key(&key) {
                                continue;
                            }
                            match proxy(key.clone(), name.clone(), table.clone()).await {
                                Ok(t) => {
                                    proxies.insert(key, t);
                                }
                                Err(e) => eprintln!("sandbox: node port {}/{} on {name}: {e}", key.0, key.1),
                            }
                        }
                    }
                }
            }
        });
    })?;
    Ok(Agent { tx })
}

/// A pod's server: HTTP on TCP and echo on UDP, each answering with the pod's name and node.
async fn backend(ip: Ipv4Addr, port: u16, text: String) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpListener::bind((ip, port)).await?;
    let udp = tokio::net::UdpSocket::bind((ip, port)).await?;
    let t1 = {
        let text = text.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = tcp.accept().await {
                let text = text.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let _ = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await;
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
                let Some(t) = pick(&table) else { continue };
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
    ip: Ipv4Addr,
}

/// Run the stand-ins until `stop` fires.
pub async fn run_standins(client: Client, nodes: Vec<NodeNet>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
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
            let _ = run(&["ip", "-n", &netns[&r.node], "addr", "del", &format!("{}/32", r.ip), "dev", "eth0"]);
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
            let ip = Ipv4Addr::new(198, 51, 100, next_ip);
            next_ip += 1;
            if let Err(e) = run(&["ip", "-n", &netns[&node], "addr", "add", &format!("{ip}/32"), "dev", "eth0"]) {
                eprintln!("sandbox: pod IP {ip}: {e}");
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
            let _ = agents[&node].tx.send(Cmd::Backend { uid: uid.clone(), pod: p.name_any(), ip, ports });
            let status = json!({"apiVersion": "v1", "kind": "Pod", "status": {
                "phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]}});
            let _ = api.patch_status(&p.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(status)).await;
            running.insert(uid, Running { node, ip });
        }
        // Endpoints controller + kube-proxy tables.
        let mut forwards: HashMap<(u16, String), Forward> = HashMap::new();
        let mut want_slices: BTreeSet<(String, String)> = BTreeSet::new();
        for s in svcs.state() {
            let ns = s.namespace().unwrap_or_default();
            let spec = s.spec.clone().unwrap_or_default();
            let Some(sel) = spec.selector.clone().filter(|m| !m.is_empty()) else { continue };
            let ready: Vec<(IpAddr, String, Pod)> = pods
                .state()
                .iter()
                .filter(|p| {
                    p.namespace().unwrap_or_default() == ns && sel.iter().all(|(k, v)| p.labels().get(k) == Some(v))
                })
                .filter_map(|p| match running.get(&p.uid()?) {
                    Some(r) => Some((IpAddr::V4(r.ip), r.node.clone(), (**p).clone())),
                    // ferrolb's own Pods (run by the sandbox's kubelet): ready by their status.
                    None => {
                        let st = p.status.as_ref()?;
                        let ready = st.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
                        let ip = st.pod_ip.as_deref()?.parse().ok()?;
                        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                        ready.then(|| (ip, node, (**p).clone()))
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
            let endpoints: Vec<serde_json::Value> = ready
                .iter()
                .map(|(ip, node, p)| {
                    json!({"addresses": [ip.to_string()], "nodeName": node, "conditions": {"ready": true},
                                            "targetRef": {"kind": "Pod", "name": p.name_any(), "namespace": ns}})
                })
                .collect();
            let ports: Vec<serde_json::Value> = sports
                .iter()
                .map(|sp| {
                    let port = ready.first().and_then(|(_, _, p)| target_port(sp, p)).map(i32::from).unwrap_or(sp.port);
                    json!({"name": sp.name.clone().unwrap_or_default(), "port": port, "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into())})
                })
                .collect();
            let name = format!("{}-sandbox", s.name_any());
            let body = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "labels": {"kubernetes.io/service-name": s.name_any(), "endpointslice.kubernetes.io/managed-by": MANAGER}},
                "addressType": "IPv4", "endpoints": endpoints, "ports": ports});
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
            let local_only = spec.external_traffic_policy.as_deref() == Some("Local");
            for sp in &sports {
                let Some(np) = sp.node_port.and_then(|n| u16::try_from(n).ok()) else { continue };
                let proto = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
                let targets = ready
                    .iter()
                    .filter_map(|(ip, node, p)| Some(Target { ip: *ip, port: target_port(sp, p)?, node: node.clone() }))
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
    }
    Ok(())
}
