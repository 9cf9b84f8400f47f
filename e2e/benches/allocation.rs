//! Allocation latency: the controller as the chart installs it (in the sandbox, its
//! Pod run from the image when there is one), LoadBalancer Services created at a
//! steady rate; for each, the time from its create returning to its ingress IP
//! appearing in a watch. The baseline, in the same run, is the emulator's own floor:
//! create returning to the Service's ADDED event on the same watch. Also the
//! controller's peak RSS, its API writes once everything is allocated, and the time
//! from creating a Service to the first TCP connection through its VIP.
//!
//! `cargo bench -p ferrolb-e2e --bench allocation`; `FERROLB_BENCH_SERVICES` (default
//! 10000) at `FERROLB_BENCH_RATE` per second (default 500). Under `cargo test` it
//! runs 100 Services. Needs root (the sandbox).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrolb_common::lock;
use ferrolb_e2e::bench::{Row, peak_rss_mib, print_table};
use ferrolb_e2e::client::Prober;
use ferrolb_e2e::sandbox::{CONTROLLER_SA, Families, NS, Options, Sandbox, create};
use ferrolb_e2e::topology::privileged;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams};
use kube::runtime::watcher;
use serde_json::json;

#[derive(Default)]
struct Seen {
    added: BTreeMap<String, Instant>,
    ingress: BTreeMap<String, Instant>,
}

/// Without NodePorts: 10,000 Services would exhaust the 2,768 of the default range (as on
/// a real cluster, where such setups turn them off and kube-proxy handles the VIPs).
fn svc(name: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "SingleStack",
           "ipFamilies": ["IPv6"], "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}})
}

async fn allocation_run(n: usize, rate: u32) -> anyhow::Result<()> {
    // ferrolb as the chart installs it, on one node; the emulator keeps enough watch
    // history for 10,000 Services.
    let dir = tempfile::tempdir()?;
    let opts = Options { nodes: 1, history_limit: Some(200_000), ..Options::default() };
    let sb = Sandbox::up_opts(&opts, dir.path()).await?;
    let emu = sb.emulator.clone();
    let client = sb.client.clone();
    create(
        &Api::<ferrolb_crds::IPAddressPool>::namespaced(client.clone(), NS),
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "bench"},
               "spec": {"addresses": ["fd42:f1b:10::/112"]}}),
    )
    .await?;
    // Announced from no node: the controller's work is measured, not the speakers'.
    create(
        &Api::<ferrolb_crds::L2Advertisement>::namespaced(client.clone(), NS),
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": "bench"},
               "spec": {"nodeSelectors": [{"matchLabels": {"bench": "nowhere"}}]}}),
    )
    .await?;
    let controller_user = format!("system:serviceaccount:{NS}:{CONTROLLER_SA}");
    let by_controller = |a: &ferrolb_emulator::Access| a.user.as_deref() == Some(controller_user.as_str());

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s2 = seen.clone();
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let w = svcs.clone();
    let watch = tokio::spawn(async move {
        let mut stream = watcher(w, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            let objs: Vec<Service> = match ev {
                Ok(watcher::Event::Apply(s)) | Ok(watcher::Event::InitApply(s)) => vec![s],
                _ => continue,
            };
            let mut g = lock(&s2);
            for s in objs {
                let name = s.metadata.name.clone().unwrap_or_default();
                g.added.entry(name.clone()).or_insert(now);
                if !ferrolb_model::ingress_ips(&s).is_empty() {
                    g.ingress.entry(name).or_insert(now);
                }
            }
        }
    });
    // The controller is up once a first Service gets its IP.
    create(&svcs, svc("warmup")).await?;
    let t = Instant::now();
    while !lock(&seen).ingress.contains_key("warmup") {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "the controller never allocated");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let leader = sb.controller_leader().await.context("a controller replica leads")?;
    let pid = sb.pid(&leader).context("the leading controller runs")?;
    let log_start = emu.access_log().len();
    let mut created: BTreeMap<String, Instant> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    for i in 0..n {
        tick.tick().await;
        let name = format!("svc-{i:05}");
        create(&svcs, svc(&name)).await?;
        created.insert(name, Instant::now());
    }
    let create_secs = start.elapsed().as_secs_f64();
    let t = Instant::now();
    loop {
        let done = lock(&seen).ingress.len() > n;
        if done {
            break;
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(600), "not all Services got an IP in 10 min");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_secs = start.elapsed().as_secs_f64();
    let per_service: BTreeMap<String, String> = emu.access_log()[log_start..]
        .iter()
        .filter(|a| by_controller(a))
        .fold(BTreeMap::<String, usize>::new(), |mut m, a| {
            *m.entry(format!("{} {}", a.verb, a.resource)).or_default() += 1;
            m
        })
        .into_iter()
        .map(|(k, v)| (k, format!("{:.2}", v as f64 / n as f64)))
        .collect();
    // Steady state: everything allocated; what does the controller write now?
    let before = emu.access_log().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes: BTreeMap<String, usize> = emu.access_log()[before..]
        .iter()
        .filter(|a| by_controller(a) && ["create", "update", "patch", "delete"].contains(&a.verb.as_str()))
        .fold(BTreeMap::new(), |mut m, a| {
            *m.entry(format!("{} {}", a.verb, a.resource)).or_default() += 1;
            m
        });
    let rss = peak_rss_mib(pid);
    let cpu = ferrolb_e2e::bench::cpu_time(pid).unwrap_or_default();
    let own_cpu = ferrolb_e2e::bench::cpu_time(std::process::id()).unwrap_or_default();
    watch.abort();
    drop(sb);

    let g = lock(&seen);
    let ms = |a: Instant, b: Instant| a.saturating_duration_since(b).as_secs_f64() * 1000.0;
    let floor: Vec<f64> = created.iter().filter_map(|(n, c)| Some(ms(*g.added.get(n)?, *c))).collect();
    let alloc: Vec<f64> = created.iter().filter_map(|(n, c)| Some(ms(*g.ingress.get(n)?, *c))).collect();
    let tenth = (alloc.len() / 10).max(1);
    let (first, last) = (alloc[..tenth].to_vec(), alloc[alloc.len() - tenth..].to_vec());
    print_table(
        &format!(
            "Allocation: {n} LoadBalancer Services at {rate}/s (created in {create_secs:.1} s, all allocated after {all_secs:.1} s)"
        ),
        "ms",
        &[
            Row::new("create -> ADDED on a watch (emulator floor, baseline)", floor),
            Row::new("create -> ingress IP on a watch (controller)", alloc),
            Row::new("  the first tenth created", first),
            Row::new("  the last tenth created", last),
        ],
        Some("create -> ADDED on a watch (emulator floor, baseline)"),
    );
    println!("controller requests per Service while allocating: {per_service:?}");
    println!(
        "CPU used: controller {:.1} s, emulator + load generator {:.1} s, over {all_secs:.1} s of allocation (2 cores)",
        cpu.as_secs_f64(),
        own_cpu.as_secs_f64()
    );
    println!(
        "controller peak RSS: {} MiB; its writes in the 10 s after all were allocated: {:?}",
        rss.map(|r| format!("{r:.1}")).unwrap_or_else(|| "?".into()),
        writes
    );
    Ok(())
}

/// In the sandbox: create a Service, then open TCP connections to its VIP every 10 ms
/// until one succeeds; `trials` times.
fn sandbox_run(trials: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let opts = Options { nodes: 3, families: Families::V4, ..Options::default() };
    let sb = rt.block_on(Sandbox::up_opts(&opts, dir.path()))?;
    let c = sb.client.clone();
    rt.block_on(async {
        ferrolb_e2e::sandbox::pool_and_advertisement(&c, "p", &["198.51.100.100/32"], "all").await?;
        create(
            &Api::<Pod>::namespaced(c.clone(), "default"),
            json!({"metadata": {"name": "web-1", "labels": {"app": "web"}},
                   "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "any", "ports": [{"containerPort": 8080}]}]}}),
        )
        .await?;
        anyhow::Ok(())
    })?;
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let target: SocketAddr = "198.51.100.100:80".parse()?;
    let mut v = Vec::new();
    for i in 0..trials {
        let name = format!("web-{i}");
        let p = Prober::start(
            &format!("/run/netns/{}", sb.state.client_netns),
            target,
            Duration::from_millis(10),
            Duration::from_millis(200),
        )?;
        let t0 = p.now();
        rt.block_on(create(
            &svcs,
            json!({"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                   "ports": [{"port": 80, "targetPort": 8080}]}}),
        ))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.results().iter().any(|x| x.at >= t0 && x.ok) {
            anyhow::ensure!(Instant::now() < deadline, "no connection through the VIP in 30 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        let first = p.stop().into_iter().find(|x| x.at >= t0 && x.ok).map(|x| x.at - t0).unwrap_or_default();
        v.push(first.as_secs_f64() * 1000.0);
        rt.block_on(svcs.delete(&name, &DeleteParams::default()))?;
        // The single address is free again once the Service is gone and its status removed.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(c.clone(), NS);
            let gone = rt.block_on(svcs.get_opt(&name))?.is_none()
                && rt.block_on(st.get_opt(&format!("default.{name}")))?.is_none();
            let unanswered = sb.state.arp_replies("198.51.100.100", 1).is_empty();
            if gone && unanswered {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "{name} was not cleaned up");
        }
    }
    print_table(
        "Sandbox: Service created -> first TCP connection through its VIP (a connection every 10 ms)",
        "ms",
        &[Row::new("create -> first connection via the VIP", v)],
        None,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let quick = !std::env::args().any(|a| a == "--bench");
    let env_num = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let n = if quick { 100 } else { env_num("FERROLB_BENCH_SERVICES", 10_000) as usize };
    let rate = env_num("FERROLB_BENCH_RATE", 500) as u32;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if !privileged() {
        eprintln!("allocation needs root (the sandbox's network namespaces); skipped");
        return Ok(());
    }
    let r = rt.block_on(allocation_run(n, rate.max(1)));
    rt.shutdown_timeout(Duration::from_secs(1));
    r?;
    sandbox_run(if quick { 2 } else { 20 })
}
