//! Load on the API server: the requests the controller and the speakers make at
//! steady state with 1,000 LoadBalancer Services on 10 nodes, counted by verb at the
//! emulator, and during one failover (a speaker killed). Also the speakers' memory:
//! with about 100 VIPs each here, and one speaker alone holding 1,000.
//!
//! Needs root. `cargo bench -p ferrolb-e2e --bench api_load`; `FERROLB_BENCH_WINDOW`
//! steady-state seconds (default 30). Under `cargo test` it runs 50 Services on 3 nodes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferrolb_e2e::bench::peak_rss_mib;
use ferrolb_e2e::sandbox::{CONTROLLER_SA, Families, NS, Options, SPEAKER_SA, Sandbox, create};
use ferrolb_e2e::topology::privileged;
use ferrolb_e2e::wait::until;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use serde_json::json;

struct Cluster {
    rt: tokio::runtime::Runtime,
    sb: Sandbox,
    _dir: tempfile::TempDir,
}

/// A sandbox with `nodes` nodes (15 s Leases, as installed) and `services` announced Services.
fn cluster(nodes: usize, services: usize) -> Cluster {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { nodes, families: Families::V6, speaker_lease_seconds: 15, ..Options::default() };
    let sb = rt.block_on(Sandbox::up_opts(&opts, dir.path())).expect("sandbox");
    let c = sb.client.clone();
    rt.block_on(async {
        ferrolb_e2e::sandbox::pool_and_advertisement(&c, "p", &["fd42:f1b:20::/112"], "all").await.unwrap();
        let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        for i in 0..services {
            tick.tick().await;
            create(
                &svcs,
                json!({"metadata": {"name": format!("svc-{i:04}")}, "spec": {"type": "LoadBalancer",
                       "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}}),
            )
            .await
            .unwrap();
        }
    });
    let st: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(c.clone(), NS);
    until("every Service announced", Duration::from_secs(300), || {
        rt.block_on(st.list(&ListParams::default())).map(|l| l.items.len() >= services).unwrap_or(false)
    });
    Cluster { rt, sb, _dir: dir }
}

/// Requests by (component, verb resource) in the access log from `from` on.
fn count(sb: &Sandbox, from: usize) -> BTreeMap<(String, String), usize> {
    let ctl = format!("system:serviceaccount:{NS}:{CONTROLLER_SA}");
    let spk = format!("system:serviceaccount:{NS}:{SPEAKER_SA}");
    let mut m = BTreeMap::new();
    for a in &sb.emulator.access_log()[from..] {
        let who = match a.user.as_deref() {
            Some(u) if u == ctl => "controller",
            Some(u) if u == spk => "speakers",
            _ => continue,
        };
        *m.entry((who.to_string(), format!("{} {}", a.verb, a.resource))).or_default() += 1;
    }
    m
}

fn print_counts(title: &str, counts: &BTreeMap<(String, String), usize>, secs: f64) {
    println!("\n{title}");
    println!("| {:<10} | {:<40} | {:>8} | {:>10} |", "component", "request", "count", "per second");
    println!("|------------|------------------------------------------|----------|------------|");
    for ((who, what), n) in counts {
        println!("| {who:<10} | {what:<40} | {n:>8} | {:>10.2} |", *n as f64 / secs);
    }
    let writes: usize = counts
        .iter()
        .filter(|((_, w), _)| ["create", "update", "patch", "delete"].iter().any(|v| w.starts_with(v)))
        .map(|(_, n)| n)
        .sum();
    println!("writes: {writes} ({:.2}/s)", writes as f64 / secs);
}

fn speaker_rss(sb: &Sandbox) -> Vec<f64> {
    sb.state.nodes.iter().filter_map(|n| peak_rss_mib(sb.pid(&format!("speaker/{}", n.name))?)).collect()
}

fn main() {
    if !privileged() {
        eprintln!("api_load needs root (network namespaces); skipped");
        return;
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let (nodes, services) = if quick { (3, 50) } else { (10, 1000) };
    let window = Duration::from_secs(if quick {
        5
    } else {
        std::env::var("FERROLB_BENCH_WINDOW").ok().and_then(|v| v.parse().ok()).unwrap_or(30)
    });
    let c = cluster(nodes, services);
    // Settled: no ServiceL2Status written for 3 s.
    until("announcements settle", Duration::from_secs(120), || {
        let quiet_from = c.sb.emulator.access_log().len();
        std::thread::sleep(Duration::from_secs(3));
        !c.sb.emulator.access_log()[quiet_from..]
            .iter()
            .any(|a| a.resource.starts_with("servicel2statuses") && a.verb != "watch" && a.verb != "list")
    });
    let from = c.sb.emulator.access_log().len();
    std::thread::sleep(window);
    print_counts(
        &format!("Steady state: {services} Services on {nodes} nodes, {} s", window.as_secs()),
        &count(&c.sb, from),
        window.as_secs_f64(),
    );
    let rss = speaker_rss(&c.sb);
    println!(
        "speaker peak RSS with about {} VIPs each: max {:.1} MiB (of {} speakers)",
        services / nodes,
        rss.iter().cloned().fold(0.0, f64::max),
        rss.len()
    );

    // One failover: the speaker on node-1 killed; count what moving its IPs costs.
    let from = c.sb.emulator.access_log().len();
    c.sb.signal_pod("speaker/node-1", "-KILL", true).expect("node-1's speaker runs");
    let t0 = Instant::now();
    let st: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(c.sb.client.clone(), NS);
    until("node-1's Services announced elsewhere", Duration::from_secs(120), || {
        c.rt.block_on(st.list(&ListParams::default()))
            .map(|l| l.items.iter().all(|s| s.status.as_ref().is_some_and(|x| x.node != "node-1")))
            .unwrap_or(false)
    });
    let moved = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let secs = t0.elapsed().as_secs_f64();
    print_counts(
        &format!(
            "One failover (node-1's speaker killed): statuses moved after {:.2} s, counted over {secs:.1} s",
            moved.as_secs_f64()
        ),
        &count(&c.sb, from),
        secs,
    );
    drop(c);

    // One speaker holding every VIP.
    let one = cluster(1, services);
    let rss = speaker_rss(&one.sb);
    println!(
        "\nspeaker peak RSS holding all {services} VIPs alone: {:.1} MiB",
        rss.first().copied().unwrap_or(f64::NAN)
    );
}
