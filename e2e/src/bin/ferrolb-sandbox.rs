//! `ferrolb-sandbox`: a cluster in a box on network namespaces, with the real
//! ferrolb binaries. `demo` shows the whole flow and exits 0 only if every step
//! worked; `up` keeps a sandbox running for you to poke at.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrolb_e2e::client::{Prober, any_failed, outage};
use ferrolb_e2e::containers::Kubelet;
use ferrolb_e2e::router::{BGP_POOL_V4, BGP_POOL_V6, Daemon};
use ferrolb_e2e::sandbox::{Families, NS, Options, Sandbox, State, pool_and_advertisement, process_running};
use ferrolb_e2e::topology::privileged;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;

/// A whole cluster on one Linux machine, with the real ferrolb binaries.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where `up` writes, and the other commands read, the sandbox state.
    #[arg(long, global = true, env = "FERROLB_SANDBOX_STATE", default_value = "/tmp/ferrolb-sandbox/state.json")]
    state_file: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the sandbox and keep it running until Ctrl-C.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[command(flatten)]
        fam: FamilyFlags,
        /// A chart value for the install, as `helm install --set` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Put a BGP router (`frr`, `bird` or `gobgp`) between the nodes and an outside
        /// client, and configure ferrolb to peer with it.
        #[arg(long, value_name = "DAEMON")]
        bgp: Option<Daemon>,
    },
    /// Build a sandbox, show a Service getting an IP, answering and failing over, tear down.
    Demo {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[command(flatten)]
        fam: FamilyFlags,
        /// A chart value for the install, as `helm install --set` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// The BGP variant: a router (`frr` or `bird`) between the nodes and an outside
        /// client, every node advertising the VIP.
        #[arg(long, value_name = "DAEMON")]
        bgp: Option<Daemon>,
    },
    /// Stop a Pod's container with SIGTERM and keep it stopped (as when its node loses
    /// its kubelet): `controller`, or `speaker NODE`.
    Stop { component: String, node: Option<String> },
    /// Kill a Pod's container with SIGKILL and keep it stopped (a node crash).
    Kill { component: String, node: Option<String> },
    /// Let the kubelet start a stopped container again.
    Start { component: String, node: Option<String> },
    /// Take a node's link down or up: `link down node-2`.
    Link { action: String, node: String },
    /// Show the running sandbox.
    Status,
    /// Tear down the running sandbox (also cleans a crashed run's leftovers).
    Down,
}

/// The cluster's Service IP families (default: dual stack).
#[derive(Debug, clap::Args)]
#[group(multiple = false)]
struct FamilyFlags {
    /// IPv4 only.
    #[arg(long)]
    ipv4: bool,
    /// IPv6 only.
    #[arg(long)]
    ipv6: bool,
    /// Both, IPv4 first (the default).
    #[arg(long)]
    dual: bool,
}

impl FamilyFlags {
    fn families(&self) -> Families {
        if self.ipv4 {
            Families::V4
        } else if self.ipv6 {
            Families::V6
        } else {
            Families::Dual
        }
    }
}

fn step(ok: bool, what: &str) -> anyhow::Result<()> {
    println!("{} {what}", if ok { "✔" } else { "✘" });
    anyhow::ensure!(ok, "step failed: {what}");
    Ok(())
}

fn read_state(path: &Path) -> anyhow::Result<State> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("no sandbox state at {} (is `ferrolb-sandbox up` running?)", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    anyhow::ensure!(Command::new("kill").args([sig, &pid.to_string()]).status()?.success(), "kill {sig} {pid} failed");
    Ok(())
}

/// The Pod key (`controller`, `speaker/NODE`) of a component on the command line.
fn key_of(state: &State, component: &str, node: Option<&str>) -> anyhow::Result<String> {
    let key = match (component, node) {
        ("controller", _) => "controller".to_string(),
        ("speaker", Some(n)) => format!("speaker/{n}"),
        ("speaker", None) => anyhow::bail!("which node? `speaker node-1`"),
        (other, _) => anyhow::bail!("unknown component {other:?}: controller or speaker NODE"),
    };
    anyhow::ensure!(state.pods.contains_key(&key), "no Pod {key} in this sandbox");
    Ok(key)
}

/// Keep Pod `key`'s container stopped (the kubelet reads the hold file) and signal it.
fn stop_pod(state: &State, key: &str, sig: &str) -> anyhow::Result<()> {
    Kubelet::hold_in(&state.pods_dir(), &state.pods[key])?;
    match state.pid(key) {
        Some(pid) => signal(pid, sig),
        None => Ok(()),
    }
}

/// Sandbox options from the command line; `--set` values go to the chart.
fn options(nodes: usize, families: Families, set: &[String]) -> anyhow::Result<Options> {
    let mut values = serde_json::json!({});
    for s in set {
        ferrolb_e2e::chart::merge(&mut values, &ferrolb_e2e::chart::set_value(s)?);
    }
    Ok(Options { nodes, families, values, ..Options::default() })
}

async fn demo(opts: Options, state_file: &Path) -> anyhow::Result<()> {
    let nodes = opts.nodes;
    let run_dir = std::env::temp_dir().join(format!("ferrolb-sandbox-demo-{}", std::process::id()));
    println!("Building a sandbox with {nodes} nodes (logs in {})...", run_dir.display());
    let sb = Sandbox::up_opts(&opts, &run_dir).await?;
    sb.write_state(state_file)?;
    let st = sb.state.clone();
    step(
        true,
        &format!(
            "ferrolb installed from charts/ferrolb (Helm's engine, kubectl apply): {} controller and {nodes} speaker Pods run from {}; kubeconfig {}",
            st.controller_pods.len(),
            st.runtime,
            st.kubeconfig.display()
        ),
    )?;
    // As an operator would: wait until every Pod of the release is Ready.
    let ferrolb_pods: Api<Pod> = Api::namespaced(sb.client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = ferrolb_pods.list(&Default::default()).await?;
        let ready = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        if !list.items.is_empty() && list.items.iter().all(ready) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "ferrolb's Pods did not become Ready in 60 s (logs in {})",
            run_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    step(true, "every ferrolb Pod is Ready (its readiness probe answers)")?;
    if let Ok(out) =
        Command::new("kubectl").env("KUBECONFIG", &st.kubeconfig).args(["get", "pods", "-n", NS, "-o", "wide"]).output()
    {
        println!("\n$ kubectl get pods -n {NS} -o wide\n{}", String::from_utf8_lossy(&out.stdout));
    }
    if opts.bgp.is_some() {
        return bgp_demo(sb, state_file).await;
    }
    let c = sb.client.clone();
    pool_and_advertisement(&c, "demo", &["198.51.100.100-198.51.100.150", "fd42:f1b::100-fd42:f1b::150"], "demo")
        .await?;
    step(true, "IPAddressPool 198.51.100.100-150 + fd42:f1b::100-150 and an L2Advertisement applied")?;
    let svcs = web_deployment_and_service(&st, &c, nodes)?;
    step(true, "Deployment `web` and its LoadBalancer Service created with kubectl create/expose")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let vip = loop {
        let s = svcs.get("web").await?;
        if let Some(ip) = ferrolb_model::ingress_ips(&s).first() {
            break ip.to_string();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the Service got no IP in 30 s (status {}; see {}/controller.log)",
            serde_json::to_string(&s.status).unwrap_or_default(),
            run_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    step(true, &format!("Service web got EXTERNAL-IP {vip}"))?;
    if let Ok(out) = Command::new("kubectl").env("KUBECONFIG", &st.kubeconfig).args(["get", "svc", "web"]).output() {
        println!("\n$ kubectl get svc web\n{}", String::from_utf8_lossy(&out.stdout));
    }
    let url = if vip.contains(':') { format!("http://[{vip}]/") } else { format!("http://{vip}/") };
    let mut answer = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while answer.is_none() && Instant::now() < deadline {
        answer = st.client_exec(&["curl", "-s", "--max-time", "1", &url]).filter(|s| !s.is_empty());
    }
    let answer = answer.context("curl through the VIP got no answer")?;
    println!("$ ip netns exec {} curl {url}\n{answer}", st.client_netns);
    step(true, "curl from the client namespace reached a backend through the VIP")?;
    let mac = st.answering_mac(&vip).context("no ARP answer for the VIP")?;
    let holder = st.node_of_mac(&mac).context("ARP answered by an unknown MAC")?;
    let proto = if vip.contains(':') { "NDP" } else { "ARP" };
    step(true, &format!("{holder} answers {proto} for {vip} ({mac})"))?;

    // Fail over: stop the announcing speaker while the client opens a TCP connection to
    // the VIP every 20 ms (the prober and the outage the benches and tests use).
    let target = std::net::SocketAddr::new(vip.parse()?, 80);
    let netns_path = format!("/run/netns/{}", st.client_netns);
    let prober = Prober::start(&netns_path, target, Duration::from_millis(20), Duration::from_millis(300))?;
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = prober.now();
    let killed = Instant::now();
    sb.signal_pod(&format!("speaker/{holder}"), "-TERM", true)?;
    println!("\nStopped the speaker on {holder} (SIGTERM)...");
    let mut new_holder = None;
    while killed.elapsed() < Duration::from_secs(10) {
        if let Some(h) = st.answering_mac(&vip).and_then(|m| st.node_of_mac(&m)).filter(|h| *h != holder) {
            new_holder = Some(h);
            break;
        }
    }
    let new_holder = new_holder.context("no other node took the IP over")?;
    // Probe on for a moment after the takeover, so a late failure is seen too.
    std::thread::sleep(Duration::from_secs(1));
    let results = prober.stop();
    let failed = results.iter().filter(|p| p.at >= killed_at && !p.ok).count();
    let gap = if any_failed(&results, killed_at) {
        outage(&results, killed_at).context("the VIP did not answer again")?
    } else {
        Duration::ZERO
    };
    step(
        true,
        &format!(
            "{new_holder} took over; client-visible outage {} ms ({failed} of {} probes failed)",
            gap.as_millis(),
            results.iter().filter(|p| p.at >= killed_at).count()
        ),
    )?;
    let after = st.client_exec(&["curl", "-s", "--max-time", "1", &url]).unwrap_or_default();
    step(!after.is_empty(), &format!("curl after failover: {}", after.trim()))?;
    println!("\nTearing down...");
    drop(sb);
    let _ = std::fs::remove_file(state_file);
    step(true, "sandbox removed")?;
    Ok(())
}

/// The demo's backends, as every tutorial makes them: a Deployment `web` (one replica
/// per node, at most 3, serving on 8080) and a LoadBalancer Service in front of it
/// (port 80), with kubectl's generator commands; the Services API.
fn web_deployment_and_service(st: &State, c: &kube::Client, nodes: usize) -> anyhow::Result<Api<Service>> {
    let replicas = format!("--replicas={}", nodes.min(3));
    for args in [
        vec!["create", "deployment", "web", "--image=registry.example/web:1", &replicas, "--port=8080"],
        vec!["expose", "deployment", "web", "--type=LoadBalancer", "--port=80", "--target-port=8080"],
    ] {
        let out = Command::new("kubectl").env("KUBECONFIG", &st.kubeconfig).args(&args).output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("$ kubectl {}\n{}", args.join(" "), text.trim_end());
        anyhow::ensure!(out.status.success(), "kubectl {} failed: {text}", args.join(" "));
    }
    Ok(Api::namespaced(c.clone(), "default"))
}

/// The BGP variant of the demo, from a sandbox whose Pods are Ready: every node
/// advertises the VIP to the router, the outside client reaches it through the router,
/// and a speaker stopping withdraws its node's route before it goes.
async fn bgp_demo(sb: Sandbox, state_file: &Path) -> anyhow::Result<()> {
    let st = sb.state.clone();
    let router = st.router.clone().context("the sandbox has a router")?;
    let c = sb.client.clone();
    ferrolb_e2e::sandbox::bgp_objects(&c).await?;
    step(
        true,
        &format!(
            "BGPPeer router ({:?}, AS {}), IPAddressPool bgp ({BGP_POOL_V4}, {BGP_POOL_V6}) and a BGPAdvertisement applied",
            router.daemon, router.asn
        ),
    )?;
    let nodes = st.nodes.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while router.established() < nodes {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the router has {} of {nodes} sessions after 30 s",
            router.established()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    step(true, &format!("the router has a BGP session Established with each of the {nodes} nodes"))?;
    let svcs = web_deployment_and_service(&st, &c, nodes)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let vip = loop {
        if let Some(ip) = ferrolb_model::ingress_ips(&svcs.get("web").await?).first() {
            break ip.to_string();
        }
        anyhow::ensure!(Instant::now() < deadline, "the Service got no IP in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    step(true, &format!("Service web got EXTERNAL-IP {vip}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while router.next_hops(&vip).len() < nodes {
        anyhow::ensure!(Instant::now() < deadline, "the router has {:?} for {vip} after 30 s", router.next_hops(&vip));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Ok(out) = Command::new("ip").args(["netns", "exec", &router.netns, "ip", "route", "show", &vip]).output() {
        println!("\n$ ip netns exec {} ip route show {vip}\n{}", router.netns, String::from_utf8_lossy(&out.stdout));
    }
    step(true, &format!("the router's kernel routes {vip} to all {nodes} nodes (ECMP)"))?;
    let outside = ferrolb_e2e::client::ClientHost::new(&router.outside_netns, "eth0");
    let url = ferrolb_e2e::client::url(&vip, 80);
    let mut answer = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while answer.is_none() && Instant::now() < deadline {
        answer = outside.curl(&url, Duration::from_secs(1));
    }
    let answer = answer.context("curl from outside got no answer")?;
    println!("$ ip netns exec {} curl {url}\n{answer}", router.outside_netns);
    step(true, "curl from the outside client reached a backend through the router")?;
    // A speaker stops (SIGTERM, as in a rolling upgrade) while the outside client opens
    // a connection every 20 ms: its node's route is withdrawn first.
    let target = std::net::SocketAddr::new(vip.parse()?, 80);
    let prober = Prober::start(
        &format!("/run/netns/{}", router.outside_netns),
        target,
        Duration::from_millis(20),
        Duration::from_millis(1000),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let stopped = st.nodes[nodes - 1].name.clone();
    sb.kill_pod(&format!("speaker/{stopped}"), "-TERM", true)?;
    println!("\nStopped the speaker on {stopped} (SIGTERM)...");
    let deadline = Instant::now() + Duration::from_secs(10);
    while router.next_hops(&vip).len() != nodes - 1 {
        anyhow::ensure!(Instant::now() < deadline, "the router still has {:?}", router.next_hops(&vip));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::thread::sleep(Duration::from_secs(1));
    let results = prober.stop();
    let failed = results.iter().filter(|p| !p.ok).count();
    step(
        failed == 0,
        &format!(
            "{stopped} withdrew its route before stopping: the router has {} next hops; {failed} of {} connections failed",
            nodes - 1,
            results.len()
        ),
    )?;
    println!("\nTearing down...");
    drop(sb);
    let _ = std::fs::remove_file(state_file);
    step(true, "sandbox removed")?;
    Ok(())
}

async fn up(opts: Options, state_file: &Path) -> anyhow::Result<()> {
    let run_dir = std::env::temp_dir().join(format!("ferrolb-sandbox-{}", std::process::id()));
    let sb = Sandbox::up_opts(&opts, &run_dir).await?;
    sb.write_state(state_file)?;
    let st = &sb.state;
    println!("ferrolb sandbox is up ({} nodes). State: {}", st.nodes.len(), state_file.display());
    println!("  export KUBECONFIG={}", st.kubeconfig.display());
    println!("  client namespace: {} (interface {})", st.client_netns, st.client_interface);
    if let Some(r) = &st.router {
        ferrolb_e2e::sandbox::bgp_objects(&sb.client).await?;
        println!(
            "  BGP router: {:?} in namespace {} (AS {}, {}); outside client: namespace {} ({})",
            r.daemon,
            r.netns,
            r.asn,
            r.addresses.join(", "),
            r.outside_netns,
            r.outside_addresses.join(", ")
        );
        println!("  applied: BGPPeer router, IPAddressPool bgp ({BGP_POOL_V4}, {BGP_POOL_V6}), BGPAdvertisement bgp");
        println!("Try:");
        println!("  kubectl create deployment web --image=registry.example/web:1 --replicas=2 --port=8080");
        println!("  kubectl expose deployment web --type=LoadBalancer --port=80 --target-port=8080");
        println!("  ip netns exec {} ip route show 203.0.113.64", r.netns);
        println!("  ip netns exec {} curl http://203.0.113.64/", r.outside_netns);
        println!("Ctrl-C tears everything down.");
    } else {
        println!("Try:");
        println!(
            "  kubectl apply -f - <<'EOF'\n  apiVersion: ferrolb.io/v1beta1\n  kind: IPAddressPool\n  metadata: {{name: demo, namespace: {NS}}}\n  spec: {{addresses: [198.51.100.100-198.51.100.150]}}\n  ---\n  apiVersion: ferrolb.io/v1beta1\n  kind: L2Advertisement\n  metadata: {{name: demo, namespace: {NS}}}\n  EOF"
        );
        println!("  kubectl create deployment web --image=registry.example/web:1 --replicas=2 --port=8080");
        println!("  kubectl expose deployment web --type=LoadBalancer --port=80 --target-port=8080");
        println!("  kubectl get svc web");
        println!("  ip netns exec {} curl http://198.51.100.100/", st.client_netns);
        println!("Ctrl-C tears everything down.");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("Tearing down...");
    drop(sb);
    let _ = std::fs::remove_file(state_file);
    Ok(())
}

fn down(state_file: &Path) -> anyhow::Result<()> {
    match read_state(state_file) {
        Ok(st) => {
            if process_running(st.pids.emulator) {
                signal(st.pids.emulator, "-TERM")?;
                for _ in 0..100 {
                    if !process_running(st.pids.emulator) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            // Leftovers of a crashed run: its containers and namespaces.
            for key in st.pods.keys() {
                let _ = stop_pod(&st, key, "-KILL");
            }
            // Containers runc still lists (it runs the image's), by this sandbox's prefix.
            if let Ok(out) = Command::new("runc").args(["list", "-q"]).output() {
                for id in String::from_utf8_lossy(&out.stdout).lines() {
                    if id.starts_with(&format!("flb{}-", st.suffix)) {
                        let _ = Command::new("runc").args(["delete", "--force", id]).output();
                    }
                }
            }
            let list = Command::new("ip").args(["netns", "list"]).output()?;
            for line in String::from_utf8_lossy(&list.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if name.starts_with(&format!("flb{}", st.suffix)) {
                    ferrolb_e2e::topology::delete_netns(name);
                }
            }
            let _ = std::fs::remove_file(state_file);
            println!("sandbox {} is down", st.suffix);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let needs_root = !matches!(args.cmd, Cmd::Status);
    anyhow::ensure!(!needs_root || privileged(), "the sandbox creates network namespaces: run it as root");
    match args.cmd {
        Cmd::Demo { nodes, fam, set, bgp } => {
            anyhow::ensure!(
                bgp != Some(Daemon::Gobgp),
                "demo --bgp gobgp: GoBGP keeps routes in its RIB and installs none in a kernel table, so the \
                 outside client cannot reach the VIP through it; use frr or bird (`up --bgp gobgp` works)"
            );
            let opts = Options { bgp, ..options(nodes, fam.families(), &set)? };
            tokio::runtime::Runtime::new()?.block_on(demo(opts, &args.state_file))
        }
        Cmd::Up { nodes, fam, set, bgp } => {
            let opts = Options { bgp, ..options(nodes, fam.families(), &set)? };
            tokio::runtime::Runtime::new()?.block_on(up(opts, &args.state_file))
        }
        Cmd::Down => down(&args.state_file),
        Cmd::Status => {
            let st = read_state(&args.state_file)?;
            println!("sandbox {} (run dir {})", st.suffix, st.run_dir.display());
            println!("  KUBECONFIG={}", st.kubeconfig.display());
            println!("  client: {} ({})", st.client_netns, st.client_interface);
            let mark =
                |pid: u32| if process_running(pid) { format!("{pid} running") } else { format!("{pid} stopped") };
            let pod = |key: &str| st.pid(key).map_or("stopped".to_string(), |p| format!("{p} running"));
            println!("  emulator + stand-ins + kubelet: {}", mark(st.pids.emulator));
            println!("  containers: {}", st.runtime);
            println!("  controller: {}", pod("controller"));
            for n in &st.nodes {
                let i = &n.interfaces[0];
                println!(
                    "  {} ({}): {} {} {} speaker {}",
                    n.name,
                    n.netns,
                    i.mac,
                    i.ipv4,
                    i.ipv6,
                    pod(&format!("speaker/{}", n.name))
                );
            }
            if let Some(r) = &st.router {
                println!(
                    "  BGP router: {:?} in {} (AS {}, {}), {} sessions Established; outside client {} ({})",
                    r.daemon,
                    r.netns,
                    r.asn,
                    r.addresses.join(", "),
                    r.established(),
                    r.outside_netns,
                    r.outside_addresses.join(", ")
                );
            }
            Ok(())
        }
        Cmd::Stop { component, node } => {
            let st = read_state(&args.state_file)?;
            stop_pod(&st, &key_of(&st, &component, node.as_deref())?, "-TERM")
        }
        Cmd::Kill { component, node } => {
            let st = read_state(&args.state_file)?;
            stop_pod(&st, &key_of(&st, &component, node.as_deref())?, "-KILL")
        }
        Cmd::Start { component, node } => {
            let st = read_state(&args.state_file)?;
            let key = key_of(&st, &component, node.as_deref())?;
            let pod = &st.pods[&key];
            anyhow::ensure!(Kubelet::hold_file(&st.pods_dir(), pod).exists(), "{key} is not stopped");
            Kubelet::release_in(&st.pods_dir(), pod)
        }
        Cmd::Link { action, node } => {
            let st = read_state(&args.state_file)?;
            anyhow::ensure!(action == "up" || action == "down", "link up|down NODE");
            let n = st.nodes.iter().find(|x| x.name == node).context("no such node")?;
            let ok = Command::new("ip")
                .args(["-n", &n.netns, "link", "set", &n.interfaces[0].name, &action])
                .status()?
                .success();
            anyhow::ensure!(ok, "ip link set failed");
            Ok(())
        }
    }
}
