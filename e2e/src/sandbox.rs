//! The sandbox: a whole cluster on one machine. A bridge, node namespaces, a
//! client namespace, the emulator (reachable from the root namespace on
//! loopback for kubectl, and on the bridge for the node processes), ferrolb
//! installed from its Helm chart (rendered by Helm's engine, applied with
//! kubectl, its Pods run by [`crate::pods`] with the rendered args and env), and
//! the kubelet/endpoints/kube-proxy stand-ins for users' workloads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::client::ClientHost;
use crate::standin::{NodeNet, run_standins};
use crate::topology::Topology;

/// The namespace ferrolb runs in.
pub const NS: &str = "ferrolb-system";
/// The controller's ServiceAccount (the chart's, installed as release `ferrolb`).
pub const CONTROLLER_SA: &str = "ferrolb-controller";
/// The speakers' ServiceAccount.
pub const SPEAKER_SA: &str = "ferrolb-speaker";

/// How to build a sandbox.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of nodes (1-20).
    pub nodes: usize,
    /// Service IP families of the cluster.
    pub families: Families,
    /// Authorize the controller's and speakers' requests with RBAC from the roles and
    /// bindings stored in the emulator (none are, until someone applies them). Without
    /// it they are still authenticated as their ServiceAccounts, but allowed everything.
    pub rbac: bool,
    /// Start the controller and the speakers (otherwise call [`Sandbox::start_components`]).
    pub start_components: bool,
    /// The speakers' membership Lease duration in seconds (the crash-detection fallback
    /// when heartbeats are off or not yet heard).
    pub speaker_lease_seconds: u32,
    /// Heartbeats between the speakers (`speaker.memberlist.enabled`; off: Leases only).
    pub heartbeats: bool,
    /// Chart values over the sandbox's own (`--set key=value` of `up` and `demo`).
    pub values: serde_json::Value,
    /// Watch events the emulator keeps for resuming watches (its default when `None`).
    pub history_limit: Option<usize>,
    /// A BGP router between the nodes and an outside client (`--bgp frr|bird`).
    pub bgp: Option<crate::router::Daemon>,
    /// YAML applied with kubectl (as an admin) before the chart is installed: what an
    /// operator creates first (an existing Secret the values name, say).
    pub before_install: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 2,
            families: Families::Dual,
            rbac: false,
            start_components: true,
            speaker_lease_seconds: 3,
            heartbeats: true,
            values: serde_json::Value::Null,
            history_limit: None,
            bgp: None,
            before_install: None,
        }
    }
}

/// Create an object from its JSON form, the way `kubectl create -f` would.
pub async fn create<K>(api: &Api<K>, v: serde_json::Value) -> anyhow::Result<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Serialize,
{
    let obj: K = serde_json::from_value(v).context("object JSON")?;
    Ok(api.create(&PostParams::default(), &obj).await?)
}

/// Create, in [`NS`], an IPAddressPool `name` over `addresses` and an L2Advertisement `adv`
/// that announces every pool.
pub async fn pool_and_advertisement(client: &Client, name: &str, addresses: &[&str], adv: &str) -> anyhow::Result<()> {
    create(
        &Api::<ferrolb_crds::IPAddressPool>::namespaced(client.clone(), NS),
        json!({"apiVersion": ferrolb_crds::API_VERSION, "kind": "IPAddressPool",
            "metadata": {"name": name}, "spec": {"addresses": addresses}}),
    )
    .await?;
    create(
        &Api::<ferrolb_crds::L2Advertisement>::namespaced(client.clone(), NS),
        json!({"apiVersion": ferrolb_crds::API_VERSION, "kind": "L2Advertisement", "metadata": {"name": adv}, "spec": {}}),
    )
    .await?;
    Ok(())
}

/// For a sandbox with a router: BGPPeer `router` (every node peers with it, hold time
/// 9 s, reconnecting every second), IPAddressPool `bgp` of VIPs that lie on no segment
/// ([`crate::router::BGP_POOL_V4`], [`crate::router::BGP_POOL_V6`]) and a
/// BGPAdvertisement `bgp` advertising it to every peer.
pub async fn bgp_objects(client: &Client) -> anyhow::Result<()> {
    use crate::router::{BGP_POOL_V4, BGP_POOL_V6, NODE_ASN, ROUTER_ASN, ROUTER_V4};
    create(
        &Api::<ferrolb_crds::BGPPeer>::namespaced(client.clone(), NS),
        json!({"apiVersion": "ferrolb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "router"},
            "spec": {"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": ROUTER_V4, "holdTime": "9s", "connectTime": "1s"}}),
    )
    .await?;
    create(
        &Api::<ferrolb_crds::IPAddressPool>::namespaced(client.clone(), NS),
        json!({"apiVersion": ferrolb_crds::API_VERSION, "kind": "IPAddressPool", "metadata": {"name": "bgp"},
            "spec": {"addresses": [BGP_POOL_V4, BGP_POOL_V6]}}),
    )
    .await?;
    create(
        &Api::<ferrolb_crds::BGPAdvertisement>::namespaced(client.clone(), NS),
        json!({"apiVersion": ferrolb_crds::API_VERSION, "kind": "BGPAdvertisement", "metadata": {"name": "bgp"},
            "spec": {"ipAddressPools": ["bgp"]}}),
    )
    .await?;
    Ok(())
}

/// Pool `p` with one IPv4 and one IPv6 VIP, advertised everywhere (`all`), and the
/// dual-stack LoadBalancer Service `default/web` that gets both.
pub async fn dual_stack_web(client: &Client, vip4: &str, vip6: &str) -> anyhow::Result<()> {
    pool_and_advertisement(client, "p", &[&format!("{vip4}/32"), &format!("{vip6}/128")], "all").await?;
    create(
        &Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), "default"),
        json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "RequireDualStack",
               "ipFamilies": ["IPv4", "IPv6"], "ports": [{"port": 80}]}}),
    )
    .await?;
    Ok(())
}

/// IP families of the sandbox Services' pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Families {
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
    Dual,
}

/// One interface of a node, in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IfaceState {
    pub name: String,
    pub mac: String,
    /// IPv4 address.
    pub ipv4: String,
    /// IPv6 address.
    pub ipv6: String,
}

/// One node, in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its interfaces on the bridge.
    pub interfaces: Vec<IfaceState>,
}

/// Process IDs, in the state file. The containers' are in their pid files
/// ([`State::pid`]): the kubelet restarts them.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Pids {
    /// The sandbox process (it hosts the emulator, the stand-ins and the kubelet).
    pub emulator: u32,
}

/// What `up` writes for the other subcommands and for scripts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Per-run suffix of every namespace name.
    pub suffix: String,
    /// Service IP families of the cluster.
    pub families: Families,
    /// Logs and kubeconfigs.
    pub run_dir: PathBuf,
    /// Kubeconfig usable from the root namespace.
    pub kubeconfig: PathBuf,
    /// Kubeconfig for the bridge side of the API without credentials (a cluster admin).
    pub node_kubeconfig: PathBuf,
    /// Kubeconfig the controller uses: the bridge, with its ServiceAccount's token.
    #[serde(default)]
    pub controller_kubeconfig: PathBuf,
    /// Kubeconfig the speakers use: the bridge, with their ServiceAccount's token.
    #[serde(default)]
    pub speaker_kubeconfig: PathBuf,
    /// The API server's address on the bridge (`KUBERNETES_SERVICE_HOST:PORT` in a Pod).
    #[serde(default)]
    pub api_server: String,
    /// The speakers' Lease duration (s).
    #[serde(default = "default_lease")]
    pub speaker_lease_seconds: u32,
    /// Whether the speakers heartbeat each other.
    #[serde(default = "default_true")]
    pub heartbeats: bool,
    /// The client ("outside world") namespace.
    pub client_netns: String,
    /// Its interface.
    pub client_interface: String,
    pub nodes: Vec<NodeState>,
    /// Running processes.
    pub pids: Pids,
    /// The control plane's namespace (the controller runs there, on the bridge).
    pub control_plane_netns: String,
    /// The first controller replica's metrics address (on the bridge, reachable from
    /// every namespace there); [`State::controller_leader_metrics`] finds the leader's.
    pub controller_metrics: String,
    /// The controller replicas' Pod networks (namespace, IPv4), replica 0 first.
    #[serde(default)]
    pub controller_pods: Vec<(String, String)>,
    /// The sandbox administrator's bearer token (kubeconfig), which may read everything,
    /// `/metrics` included.
    #[serde(default)]
    pub admin_token: String,
    /// A bearer token of the ServiceAccount `monitoring/prometheus`, as a Prometheus in
    /// the cluster would carry: it may read `/metrics` once bound (`metrics.reader`).
    #[serde(default)]
    pub prometheus_token: String,
    /// The path of the speaker binary (for `start speaker`).
    pub speaker_binary: PathBuf,
    /// The path of the controller binary (for `start controller`).
    pub controller_binary: PathBuf,
    /// The chart's Pods and the process of each, by key (`controller`, `speaker/NODE`).
    #[serde(default)]
    pub launches: BTreeMap<String, crate::pods::Launched>,
    /// The Pod of each key.
    #[serde(default)]
    pub pods: BTreeMap<String, String>,
    /// How the containers run (`the image, under runc` or `the workspace binaries`).
    #[serde(default)]
    pub runtime: String,
    /// The chart values of the release as installed or last upgraded.
    #[serde(default)]
    pub values: serde_json::Value,
    /// The BGP router, when the sandbox has one.
    #[serde(default)]
    pub router: Option<crate::router::RouterState>,
}

/// A running sandbox. Dropping it tears everything down.
pub struct Sandbox {
    /// The topology (removed on drop).
    pub topo: Topology,
    /// State as written to the state file.
    pub state: State,
    /// In-process client to the emulator.
    pub client: Client,
    /// The emulator itself (e.g. for its access log).
    pub emulator: ferrolb_emulator::Emulator,
    /// The kubelet running ferrolb's Pods' containers.
    pub kubelet: crate::containers::Kubelet,
    /// The BGP router (`Options::bgp`).
    pub router: Option<crate::router::Router>,
    stop: watch::Sender<bool>,
    logs: LogFiles,
}

/// Where each Pod writes its output, by (namespace, Pod): ferrolb's containers, and
/// users' Pods (the stand-in servers' request logs).
pub type LogFiles = std::sync::Arc<std::sync::Mutex<BTreeMap<(String, String), PathBuf>>>;

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if std::thread::panicking() {
            dump_logs(&self.state.run_dir);
        }
        // SIGTERM first, so speakers remove their nftables tables and release their Leases.
        self.kubelet.remove_all(std::time::Duration::from_secs(2));
        // The unpacked image is tens of MB and rebuilt by every sandbox; the logs stay.
        let _ = std::fs::remove_dir_all(self.state.run_dir.join("image"));
    }
}

/// The directory holding this executable's sibling binaries (`target/debug` or
/// `target/release`), after building `packages`' binaries in it when run under cargo.
pub fn build_binaries(packages: &[&str]) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("executable has a directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    if let Ok(cargo) = std::env::var("CARGO") {
        let mut build = Command::new(cargo);
        // Without the variables cargo gives a test or bench process: build scripts that
        // watch some of them (ring's, through cc) would otherwise rebuild half the
        // dependency tree here and again at the next plain `cargo build`.
        for (k, _) in std::env::vars() {
            let keep = ["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&k.as_str())
                || k.starts_with("CARGO_BUILD_")
                || k.starts_with("CARGO_REGISTR")
                || k.starts_with("CARGO_NET_");
            if (k.starts_with("CARGO_") && !keep) || k == "OUT_DIR" || k.starts_with("RUST_TEST") {
                build.env_remove(&k);
            }
        }
        // The same profile as this executable (benches run from target/release).
        let release = dir.file_name().is_some_and(|n| n == "release");
        build.args(["build", "-q", "--bins"]);
        for p in packages {
            build.args(["-p", p]);
        }
        let st =
            build.args(if release { &["--release"][..] } else { &[][..] }).status().context("running cargo build")?;
        anyhow::ensure!(st.success(), "building {packages:?} failed");
    }
    Ok(dir)
}

/// The controller and speaker binaries next to this executable, built when run under cargo.
pub fn binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = build_binaries(&["ferrolb-controller", "ferrolb-speaker"])?;
    let (ctl, spk) = (dir.join("ferrolb-controller"), dir.join("ferrolb-speaker"));
    anyhow::ensure!(
        ctl.is_file() && spk.is_file(),
        "ferrolb-controller and ferrolb-speaker must be built next to {}",
        dir.display()
    );
    Ok((ctl, spk))
}

pub use crate::client::{netns_command, netns_exec};

impl State {
    /// A command running `program` in the client namespace (to spawn or pipe it).
    pub fn client_command(&self, program: &str) -> Command {
        netns_command(&self.client_netns, program)
    }

    /// Run `args` in the client namespace; its stdout when it succeeded.
    pub fn client_exec(&self, args: &[&str]) -> Option<String> {
        netns_exec(&self.client_netns, args)
    }

    /// Run `args` in `node`'s namespace; its stdout when it succeeded.
    pub fn node_exec(&self, node: &str, args: &[&str]) -> Option<String> {
        netns_exec(&self.nodes.iter().find(|n| n.name == node)?.netns, args)
    }

    /// The node owning `mac`, if any.
    pub fn node_of_mac(&self, mac: &str) -> Option<String> {
        self.nodes.iter().find(|n| n.interfaces.iter().any(|i| i.mac == mac)).map(|n| n.name.clone())
    }

    /// The directory of the containers' pid and hold files.
    pub fn pods_dir(&self) -> PathBuf {
        self.run_dir.join("pods")
    }

    /// The process ID of Pod `key`'s container (`controller`, `speaker/NODE`), while it runs.
    pub fn pid(&self, key: &str) -> Option<u32> {
        let pod = self.pods.get(key)?;
        let path = crate::containers::Kubelet::pid_file(&self.pods_dir(), pod);
        std::fs::read_to_string(path).ok()?.trim().parse().ok().filter(|p| process_running(*p))
    }

    /// The sandbox's client, to measure what it sees.
    pub fn client(&self) -> ClientHost {
        ClientHost::new(&self.client_netns, &self.client_interface)
    }

    /// The MACs that answered `count` ARP requests for the IPv4 address `ip`, in order.
    pub fn arp_replies(&self, ip: &str, count: u32) -> Vec<String> {
        self.client().arp_replies(ip, count)
    }

    /// The MAC answering ARP (IPv4) or NDP (IPv6) for `ip`, as the client sees it.
    pub fn answering_mac(&self, ip: &str) -> Option<String> {
        self.client().answering_mac(ip)
    }

    /// `node`'s speaker metrics (the text exposition; empty when unreachable).
    pub fn speaker_metrics(&self, node: &str) -> String {
        let Some(n) = self.nodes.iter().find(|n| n.name == node) else { return String::new() };
        let ip = n.interfaces.first().map(|i| i.ipv4.as_str()).unwrap_or_default();
        self.scrape(&n.netns, &format!("{ip}:7473")).unwrap_or_default()
    }

    /// Whether the chart serves metrics over HTTPS to authorized tokens only
    /// (`metrics.secure`).
    pub fn metrics_secure(&self) -> bool {
        self.values["metrics"]["secure"] == true
    }

    /// `/metrics` of `target` (`IP:PORT`), fetched from the namespace `netns` as the
    /// chart serves it: plain HTTP, or HTTPS with a token allowed to read it.
    pub fn scrape(&self, netns: &str, target: &str) -> Option<String> {
        if self.metrics_secure() {
            let auth = format!("Authorization: Bearer {}", self.admin_token);
            let url = format!("https://{target}/metrics");
            netns_exec(netns, &["curl", "-sk", "--fail", "--max-time", "2", "-H", &auth, &url])
        } else {
            netns_exec(netns, &["curl", "-s", "--max-time", "2", &format!("http://{target}/metrics")])
        }
    }

    /// Every speaker counts every other one alive by heartbeats
    /// (`ferrolb_memberlist_peers{state="alive"}`): a fault injected before that is
    /// detected by Lease expiry at the peers that had not heard the node yet.
    pub fn speakers_hear_each_other(&self) -> bool {
        let peers = self.nodes.len().saturating_sub(1) as f64;
        self.nodes.iter().all(|n| {
            metric_sum(&self.speaker_metrics(&n.name), "ferrolb_memberlist_peers", Some(("state", "alive"))) == peers
        })
    }

    /// One metric from `node`'s speaker, summed over its label sets (0 when absent).
    pub fn speaker_metric(&self, node: &str, name: &str) -> f64 {
        metric_sum(&self.speaker_metrics(node), name, None)
    }

    /// Every controller replica's metrics address, replica 0 first.
    pub fn controller_targets(&self) -> Vec<String> {
        self.controller_pods.iter().map(|(_, ip)| format!("{ip}:7472")).collect()
    }

    /// The metrics of the controller replica that leads (of the first one when none does
    /// yet), scraped from the control plane's namespace; empty when unreachable.
    pub fn controller_leader_metrics(&self) -> String {
        let mut first = None;
        for target in self.controller_targets() {
            let text = self.scrape(&self.control_plane_netns, &target).unwrap_or_default();
            if metric_sum(&text, "ferrolb_controller_leader", None) == 1.0 {
                return text;
            }
            first.get_or_insert(text);
        }
        first.unwrap_or_default()
    }

    /// One metric from the leading controller replica, summed over the label sets that
    /// carry `label` (all of them when `None`).
    pub fn controller_metric(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        metric_sum(&self.controller_leader_metrics(), name, label)
    }
}

/// A metric in a Prometheus text exposition, summed over the label sets that carry
/// `label` (all of them when `None`); 0 when absent.
pub fn metric_sum(exposition: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    let want = label.map(|(k, v)| format!("{k}=\"{v}\""));
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter(|l| {
            want.as_ref().is_none_or(|w| l.split_once(' ').is_some_and(|(series, _)| series.contains(w.as_str())))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The environment the chart gives both containers besides their own settings: glibc's
/// malloc capped at two arenas (by default up to eight per core, which kept 12-18 MiB
/// more of the controller's freed request buffers resident at 10,000 Services).
/// `charts/ferrolb/tests/check_chart.py` checks the chart renders it.
pub const CONTAINER_ENV: &[(&str, &str)] = &[("MALLOC_ARENA_MAX", "2")];

/// The chart values the sandbox installs with: the chart's forwarding (kube-proxy: the
/// sandbox's kube-proxy stand-in carries VIP traffic to the Pods), short Leases, then
/// `opts.values` over them (`{"speaker": {"forwarding": "nodeport"}}` for the speakers'
/// own forwarding). The controller keeps the chart's two replicas, each Pod
/// with a network of its own on the bridge.
pub fn chart_values(opts: &Options) -> serde_json::Value {
    let mut v = json!({
        "controller": {"leaseDuration": 5},
        "speaker": {"leaseDuration": opts.speaker_lease_seconds,
                    "memberlist": {"enabled": opts.heartbeats}},
    });
    if opts.values.is_object() {
        crate::chart::merge(&mut v, &opts.values);
    }
    v
}

impl Sandbox {
    /// Build everything. Runs inside a tokio runtime.
    pub async fn up(nodes: usize, run_dir: &Path) -> anyhow::Result<Sandbox> {
        Self::up_with(nodes, Families::Dual, run_dir).await
    }

    /// Build everything with the cluster's Service networking in `families`
    /// (`V4`: IPv4 ClusterIPs only; `V6`: IPv6 first; `Dual`: both, IPv4 first).
    pub async fn up_with(nodes: usize, families: Families, run_dir: &Path) -> anyhow::Result<Sandbox> {
        Self::up_opts(&Options { nodes, families, ..Options::default() }, run_dir).await
    }

    /// Build everything as `opts` says.
    pub async fn up_opts(opts: &Options, run_dir: &Path) -> anyhow::Result<Sandbox> {
        let (nodes, families) = (opts.nodes, opts.families);
        // Node addresses are 198.51.100.11-50 (tests use .96 and up for Services).
        anyhow::ensure!((1..=40).contains(&nodes), "--nodes must be 1-40");
        let (controller_binary, speaker_binary) = binaries()?;
        std::fs::create_dir_all(run_dir)?;
        let topo = Topology::new(nodes).context("building the network namespaces (are you root?)")?;
        let router = match opts.bgp {
            Some(d) => Some(
                crate::router::Router::start(&topo, d, &run_dir.join("router")).context("starting the BGP router")?,
            ),
            None => None,
        };
        let cidrs: Vec<&str> = match families {
            Families::V4 => vec!["10.96.0.0/16"],
            Families::V6 => vec!["fd42:f1b:96::/112", "10.96.0.0/16"],
            Families::Dual => vec!["10.96.0.0/16", "fd42:f1b:96::/112"],
        };
        let services = ferrolb_emulator::ServiceConfig {
            service_cidrs: cidrs.iter().map(|c| c.parse().expect("literal CIDR")).collect(),
            ..Default::default()
        };
        // The binaries authenticate as the chart's ServiceAccounts; kubectl and the in-process
        // clients (sandbox, stand-ins, tests) are cluster admins.
        use ferrolb_emulator::auth::{Auth, Mode, User};
        let token = |who: &str| format!("{who}-{}-{}", topo.suffix, std::process::id());
        let (ctl_token, spk_token, admin_token) = (token("controller"), token("speaker"), token("admin"));
        let prometheus_token = token("prometheus");
        let auth = Auth::new(if opts.rbac { Mode::Rbac } else { Mode::AlwaysAllow })
            .anonymous_admin()
            .with_token(&admin_token, User::admin("kubernetes-admin"))
            .with_token(&ctl_token, User::service_account(NS, CONTROLLER_SA))
            .with_token(&spk_token, User::service_account(NS, SPEAKER_SA))
            .with_token(&prometheus_token, User::service_account("monitoring", "prometheus"));
        // Each speaker Pod's token names its node, as a kubelet's projected token does
        // (Kubernetes 1.30+); ferrolb's ValidatingAdmissionPolicy keys on it.
        let node_names: Vec<String> = (1..=nodes).map(|i| format!("node-{i}")).collect();
        let node_tokens: Vec<String> = node_names.iter().map(|n| token(&format!("speaker-{n}"))).collect();
        let auth = node_names
            .iter()
            .zip(&node_tokens)
            .fold(auth, |auth, (n, t)| auth.with_token(t, User::service_account_on_node(NS, SPEAKER_SA, n)));
        // `kubectl logs` of ferrolb's Pods reads their containers' output files.
        let logs: LogFiles = Default::default();
        let source = logs.clone();
        let pod_logs = ferrolb_emulator::PodLogs(std::sync::Arc::new(move |ns: &str, pod: &str, _: Option<&str>| {
            let path = ferrolb_common::lock(&source).get(&(ns.to_string(), pod.to_string())).cloned()?;
            std::fs::read_to_string(path).ok()
        }));
        let defaults = ferrolb_emulator::Config::default();
        let emu = ferrolb_emulator::Emulator::new(ferrolb_emulator::Config {
            services,
            auth: Some(auth),
            pod_logs: Some(pod_logs),
            webhook_dialer: Some(control_plane_dialer(topo.control_plane.netns.path())),
            history_limit: opts.history_limit.unwrap_or(defaults.history_limit),
            ..defaults
        });
        // Two listeners on one API: loopback for kubectl, the bridge for node processes.
        let root = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let root_addr = root.local_addr()?;
        let bridge_std =
            crate::netns::in_netns(&topo.control_plane.netns.path(), || std::net::TcpListener::bind("198.51.100.3:0"))?
                .join()
                .map_err(|_| anyhow::anyhow!("listener thread died"))???;
        bridge_std.set_nonblocking(true)?;
        let bridge_addr: SocketAddr = bridge_std.local_addr()?;
        let bridge = tokio::net::TcpListener::from_std(bridge_std)?;
        // HTTPS only, as kube-apiserver: a CA of the sandbox's, a certificate for both
        // addresses, and every client trusting that CA (kubeconfigs, or a Pod's
        // ServiceAccount `ca.crt`).
        let cert = ferrolb_emulator::ServingCert::generate(&["127.0.0.1", "198.51.100.3", "localhost"])?;
        let (e1, e2, c1, c2) = (emu.clone(), emu.clone(), cert.clone(), cert.clone());
        tokio::spawn(async move { e1.serve_tls(root, &c1).await });
        tokio::spawn(async move { e2.serve_tls(bridge, &c2).await });
        let ca = Some(cert.ca_pem.as_str());
        let kubeconfig = run_dir.join("kubeconfig");
        let node_kubeconfig = run_dir.join("kubeconfig-nodes");
        let bridge_url = format!("https://{bridge_addr}");
        use ferrolb_emulator::write_kubeconfig_full as kubeconfig_for;
        kubeconfig_for(&kubeconfig, &format!("https://{root_addr}"), ca, Some(&admin_token))?;
        kubeconfig_for(&node_kubeconfig, &bridge_url, ca, Some(&admin_token))?;
        let controller_kubeconfig = run_dir.join("kubeconfig-controller");
        let speaker_kubeconfig = run_dir.join("kubeconfig-speaker");
        kubeconfig_for(&controller_kubeconfig, &bridge_url, ca, Some(&ctl_token))?;
        kubeconfig_for(&speaker_kubeconfig, &bridge_url, ca, Some(&spk_token))?;
        // What the kubelet projects into a Pod of each ServiceAccount (in-cluster config).
        let mut projected = vec![(run_dir.join("serviceaccounts").join(CONTROLLER_SA), &ctl_token)];
        projected.push((run_dir.join("serviceaccounts").join(SPEAKER_SA), &spk_token));
        for (n, t) in node_names.iter().zip(&node_tokens) {
            kubeconfig_for(&run_dir.join(format!("kubeconfig-speaker-{n}")), &bridge_url, ca, Some(t))?;
            projected.push((run_dir.join("serviceaccounts").join(SPEAKER_SA).join(n), t));
        }
        for (dir, tok) in projected {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("token"), tok)?;
            std::fs::write(dir.join("ca.crt"), &cert.ca_pem)?;
            std::fs::write(dir.join("namespace"), NS)?;
        }
        let client = Client::new(emu.router(), "default");

        // The API objects a cluster has: the namespace (`helm install --create-namespace`)
        // and the Nodes; the CRDs come with the chart (or, with `crds.enabled=false`, are
        // applied apart first, as their operator would).
        let values = chart_values(opts);
        if values["crds"]["enabled"] == false {
            install_crds(&client).await?;
        }
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
        let mut node_states = Vec::new();
        for (i, h) in topo.nodes.iter().enumerate() {
            let name = format!("node-{}", i + 1);
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
                "status": {"addresses": [{"type": "InternalIP", "address": h.ipv4.to_string()}, {"type": "InternalIP", "address": h.ipv6.to_string()},
                                         {"type": "Hostname", "address": name}],
                           "conditions": [{"type": "Ready", "status": "True"}, {"type": "NetworkUnavailable", "status": "False"}]}}))?;
            let api: Api<Node> = Api::all(client.clone());
            api.create(&PostParams::default(), &node).await?;
            api.patch_status(
                &name,
                &kube::api::PatchParams::apply("ferrolb-sandbox").force(),
                &kube::api::Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Node", "status": serde_json::to_value(&node.status)?})),
            )
            .await?;
            node_states.push(NodeState {
                name,
                netns: h.netns.name.clone(),
                interfaces: vec![IfaceState {
                    name: h.iface.clone(),
                    mac: h.mac.clone(),
                    ipv4: h.ipv4.to_string(),
                    ipv6: h.ipv6.to_string(),
                }],
            });
        }
        let state = State {
            suffix: topo.suffix.clone(),
            families,
            run_dir: run_dir.to_path_buf(),
            kubeconfig,
            node_kubeconfig,
            controller_kubeconfig,
            speaker_kubeconfig,
            api_server: bridge_addr.to_string(),
            speaker_lease_seconds: opts.speaker_lease_seconds,
            heartbeats: opts.heartbeats,
            client_netns: topo.client.netns.name.clone(),
            client_interface: topo.client.iface.clone(),
            nodes: node_states,
            pids: Pids { emulator: std::process::id() },
            control_plane_netns: topo.control_plane.netns.name.clone(),
            controller_metrics: "198.51.100.4:7472".to_string(),
            controller_pods: Vec::new(),
            admin_token: admin_token.clone(),
            prometheus_token,
            speaker_binary,
            controller_binary,
            launches: BTreeMap::new(),
            pods: BTreeMap::new(),
            runtime: String::new(),
            values: serde_json::Value::Null,
            router: router.as_ref().map(|r| r.state.clone()),
        };
        // ferrolb as an operator installs it: the chart rendered by Helm's engine and
        // applied with kubectl; its Deployment and DaemonSet become Pods, whose
        // containers the kubelet runs (from the image when there is one).
        let mut state = state;
        let runtime = crate::containers::Runtime::from_env(run_dir)?;
        state.runtime = runtime.describe().to_string();
        let kubelet = crate::containers::Kubelet::new(&state.pods_dir(), runtime, &state.suffix)?;
        state.values = values;
        if let Some(yaml) = &opts.before_install {
            crate::chart::apply(&state.kubeconfig, yaml).context("applying what comes before the chart")?;
        }
        let rendered = crate::chart::render("ferrolb", NS, &state.values)?;
        crate::chart::apply(&state.kubeconfig, &rendered)?;
        // A network of its own for each controller replica, as a CNI gives a Pod.
        let replicas = crate::chart::documents(&rendered)
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .and_then(|d| d["spec"]["replicas"].as_u64())
            .unwrap_or(1);
        let mut topo = topo;
        for _ in 0..replicas {
            let h = topo.add_pod_host().context("a network for a controller Pod")?;
            state.controller_pods.push((h.netns.name.clone(), h.ipv4.to_string()));
        }
        let plans = crate::pods::plan(&client, &state).await?;
        for p in &plans {
            state.pods.insert(p.key.clone(), p.pod.name_any());
            if !opts.start_components {
                kubelet.hold(&p.pod.name_any())?;
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let standin_nodes =
            state.nodes.iter().map(|n| NodeNet { name: n.name.clone(), netns: n.netns.clone() }).collect();
        kubelet.run(client.clone(), state.clone(), &state.control_plane_netns, stop_rx.clone())?;
        tokio::spawn(crate::workloads::run_workloads(client.clone(), NS.to_string(), stop_rx.clone()));
        // The sandbox's kube-proxy handles LoadBalancer IPs as a cluster's does exactly
        // when ferrolb is installed to rely on it (the chart's default).
        let kube_proxy = chart_values(opts)["speaker"]["forwarding"] != "nodeport";
        let workload_logs = (logs.clone(), state.run_dir.join("workloads"));
        tokio::spawn(run_standins(client.clone(), standin_nodes, kube_proxy, workload_logs, stop_rx));
        let mut sb = Sandbox { topo, state, client, kubelet, router, stop, emulator: emu, logs };
        for p in plans {
            sb.create_pod(p).await?;
        }
        if opts.start_components {
            sb.admitting().await?;
        }
        Ok(sb)
    }

    /// Create the Pod of `p` and hand its container to the kubelet.
    async fn create_pod(&mut self, p: crate::pods::PodPlan) -> anyhow::Result<()> {
        crate::pods::create(&self.client, &p).await?;
        let pod = p.pod.name_any();
        ferrolb_common::lock(&self.logs).insert((NS.to_string(), pod.clone()), self.state.run_dir.join(log_name(&p)));
        self.state.pods.insert(p.key.clone(), pod);
        match &p.launch {
            Ok(l) => {
                self.state.launches.insert(p.key.clone(), l.clone());
            }
            Err(_) => {
                self.state.launches.remove(&p.key);
            }
        }
        self.kubelet.add(p);
        Ok(())
    }

    /// Start the containers of a sandbox built with `start_components: false`; returns
    /// once ferrolb's objects are admitted (see [`Sandbox::admitting`]).
    pub async fn start_components(&mut self) -> anyhow::Result<()> {
        for pod in self.state.pods.values() {
            self.kubelet.release(pod)?;
        }
        self.admitting().await
    }

    /// Wait until ferrolb's objects can be written: with the chart's validating webhook
    /// (`failurePolicy: Fail`), an IPAddressPool is refused until a controller replica
    /// serves the webhook with a certificate the API server trusts, as in a real
    /// cluster right after `helm install`. The witness is a dry-run create.
    pub async fn admitting(&self) -> anyhow::Result<()> {
        if self.state.values["webhook"]["enabled"] == serde_json::json!(false) {
            return Ok(());
        }
        let api: Api<ferrolb_crds::IPAddressPool> = Api::namespaced(self.client.clone(), NS);
        let probe: ferrolb_crds::IPAddressPool = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "sandbox-admission-probe"}, "spec": {"addresses": ["203.0.113.255/32"]}}),
        )?;
        let params = kube::api::PostParams { dry_run: true, ..Default::default() };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            match api.create(&params, &probe).await {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() > deadline => {
                    anyhow::bail!("ferrolb's webhook did not admit an IPAddressPool within 90 s: {e}")
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    }

    /// Send `signal` (`-TERM`, `-KILL`) to Pod `key`'s container and wait until it has
    /// ended. With `hold`, the kubelet does not restart it (its node lost its kubelet:
    /// a crash, a power cut) until [`Sandbox::start_pod`]; without, it restarts it as
    /// `restartPolicy: Always` says.
    pub fn kill_pod(&self, key: &str, signal: &str, hold: bool) -> anyhow::Result<()> {
        let pid = self.signal_pod(key, signal, hold)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        while process_running(pid) {
            anyhow::ensure!(std::time::Instant::now() < deadline, "Pod {key}'s container did not end");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }

    /// [`Sandbox::kill_pod`] without waiting: the signalled process's ID.
    pub fn signal_pod(&self, key: &str, signal: &str, hold: bool) -> anyhow::Result<u32> {
        if hold {
            return self.kubelet.hold_and_signal(key, signal);
        }
        let pid = self.kubelet.pid(key).with_context(|| format!("Pod {key} runs no container"))?;
        anyhow::ensure!(
            Command::new("kill").args([signal, &pid.to_string()]).status()?.success(),
            "kill {signal} {pid} failed"
        );
        Ok(pid)
    }

    /// Let the kubelet start Pod `key`'s held container again; returns once it runs.
    pub fn start_pod(&self, key: &str) -> anyhow::Result<()> {
        let pod = self.state.pods.get(key).with_context(|| format!("no Pod {key}"))?;
        self.kubelet.release(pod)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.kubelet.pid(key).is_none_or(|p| !process_running(p)) {
            anyhow::ensure!(std::time::Instant::now() < deadline, "Pod {key} did not start");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }

    /// The Pod key (`controller`, `controller-1`, ...) of the controller replica that
    /// holds the leader Lease, if one does.
    pub async fn controller_leader(&self) -> Option<String> {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(self.client.clone(), NS);
        // The chart names the leader Lease after the controller (release `ferrolb`).
        let lease = leases.get_opt("ferrolb-controller").await.ok()??;
        let holder = lease.spec?.holder_identity?;
        self.state.pods.iter().find(|(_, pod)| **pod == holder).map(|(key, _)| key.clone())
    }

    /// The process ID of Pod `key`'s running container.
    pub fn pid(&self, key: &str) -> Option<u32> {
        self.kubelet.pid(key).filter(|p| process_running(*p))
    }

    /// `helm upgrade` with `values` over the release's: render, `kubectl apply`, then
    /// roll every Pod whose process changed, one at a time (the DaemonSet's
    /// `maxUnavailable: 1`): stop the old container with SIGTERM (a speaker hands its
    /// IPs over), replace the Pod, start the new container, and wait until the new Pod
    /// is Ready before the next. Returns the rolled Pods in order.
    pub async fn upgrade(&mut self, values: &serde_json::Value) -> anyhow::Result<Vec<String>> {
        let mut merged = self.state.values.clone();
        crate::chart::merge(&mut merged, values);
        let rendered = crate::chart::render("ferrolb", NS, &merged)?;
        crate::chart::apply(&self.state.kubeconfig, &rendered)?;
        self.state.values = merged;
        let mut rolled = Vec::new();
        for p in crate::pods::plan(&self.client, &self.state).await? {
            if p.launch.as_ref().ok() == self.state.launches.get(&p.key) {
                continue;
            }
            // The old Pod is deleted (its container stopped with SIGTERM, so a speaker
            // hands its IPs over), its replacement created and started.
            self.kubelet.remove(&p.key, grace(&p.pod));
            let pod = p.pod.name_any();
            self.create_pod(p).await?;
            self.until_ready(&pod).await?;
            rolled.push(pod);
        }
        Ok(rolled)
    }

    /// `kubectl delete pod` of Pod `key`: its container stopped with SIGTERM, and the
    /// Pod its controller creates in its place started.
    pub async fn delete_pod(&mut self, key: &str) -> anyhow::Result<()> {
        let plan = crate::pods::plan(&self.client, &self.state).await?.into_iter().find(|p| p.key == key);
        let plan = plan.with_context(|| format!("no Pod {key}"))?;
        self.kubelet.remove(key, grace(&plan.pod));
        self.create_pod(plan).await
    }

    /// `helm uninstall`: delete what the chart installed (the CRDs stay: they say
    /// `helm.sh/resource-policy: keep`) and end every Pod's container with SIGTERM, as the garbage collector and
    /// the kubelet would.
    pub async fn uninstall(&mut self) -> anyhow::Result<()> {
        let rendered = crate::chart::render("ferrolb", NS, &self.state.values)?;
        // As Helm does: what says `helm.sh/resource-policy: keep` (the CRDs) stays.
        let removed: Vec<String> = crate::chart::documents(&rendered)
            .into_iter()
            .filter(|d| d["metadata"]["annotations"]["helm.sh/resource-policy"] != "keep")
            .map(|d| serde_yaml::to_string(&d))
            .collect::<Result<_, _>>()?;
        crate::chart::delete(&self.state.kubeconfig, &removed.join("---\n"))?;
        for (key, pod) in std::mem::take(&mut self.state.pods) {
            self.kubelet.remove(&key, std::time::Duration::from_secs(30));
            crate::pods::delete(&self.client, &pod).await?;
        }
        self.state.launches.clear();
        Ok(())
    }

    /// `kubectl apply -f -` of `yaml` (JSON is YAML too), as a user would.
    pub fn kubectl_apply(&self, yaml: &str) -> anyhow::Result<()> {
        crate::chart::apply(&self.state.kubeconfig, yaml)
    }

    /// Wait until Pod `name` is Ready (its readiness probe answers).
    pub async fn until_ready(&self, name: &str) -> anyhow::Result<()> {
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.client.clone(), NS);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let ready = api
                .get_opt(name)
                .await?
                .and_then(|p| p.status)
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ready {
                return Ok(());
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "Pod {name} did not become Ready in 60 s");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Write the state file.
    pub fn write_state(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&self.state)?)?;
        Ok(())
    }
}

/// The API server's way to admission webhooks: connections from the control plane's
/// network namespace (the socket is made there; a socket keeps its namespace).
fn control_plane_dialer(netns: String) -> ferrolb_emulator::admission::Dialer {
    ferrolb_emulator::admission::Dialer(std::sync::Arc::new(move |addr: SocketAddr| {
        let netns = netns.clone();
        Box::pin(async move {
            let socket = crate::netns::in_netns(&netns, move || {
                let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(s)
            })?
            .join()
            .map_err(|_| std::io::Error::other("netns thread died"))???;
            tokio::net::TcpSocket::from_std_stream(socket.into()).connect(addr).await
        })
    }))
}

/// A failing test's evidence: the tail of every component's output, on stderr (the
/// run directory goes with the test).
fn dump_logs(run_dir: &Path) {
    const TAIL: usize = 60;
    let Ok(entries) = std::fs::read_dir(run_dir) else { return };
    let mut logs: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "log")).collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("---- {} (last {} of {} lines) ----", log.display(), TAIL.min(lines.len()), lines.len());
        for l in &lines[lines.len().saturating_sub(TAIL)..] {
            eprintln!("{l}");
        }
    }
}

/// A Pod's `terminationGracePeriodSeconds` (30 s by default).
fn grace(pod: &k8s_openapi::api::core::v1::Pod) -> std::time::Duration {
    let secs = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
    std::time::Duration::from_secs(secs.max(0) as u64)
}

/// The file (in the run directory) a Pod's container writes its output to.
fn log_name(p: &crate::pods::PodPlan) -> String {
    match p.key.strip_prefix("speaker/") {
        Some(node) => format!("speaker-{node}.log"),
        None if p.key == "controller" => "controller.log".to_string(),
        None => format!("{}.log", p.pod.metadata.name.clone().unwrap_or_default()),
    }
}

fn default_lease() -> u32 {
    3
}

fn default_true() -> bool {
    true
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn process_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Create the chart's CRDs (`charts/ferrolb/files/crds`), as `kubectl apply -f` of them would.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let crd_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ferrolb/files/crds");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for entry in std::fs::read_dir(&crd_dir).with_context(|| format!("reading {}", crd_dir.display()))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        let crd: CustomResourceDefinition = parse_crd(&text).with_context(|| format!("parsing {}", path.display()))?;
        crds.create(&PostParams::default(), &crd).await?;
    }
    Ok(())
}

/// CRD YAML files carry a comment header and one document; parse the document.
fn parse_crd(text: &str) -> anyhow::Result<CustomResourceDefinition> {
    let doc = text.split("\n---\n").last().unwrap_or(text);
    Ok(serde_yaml::from_str(doc)?)
}
