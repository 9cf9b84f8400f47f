//! A `helm upgrade` that rolls the speakers of a 3-node sandbox, one node at a
//! time (each new Pod Ready before the next goes; each stopping speaker hands its
//! IPs over), while a client opens a TCP connection to the VIP every 10 ms. With the
//! heartbeat key unchanged, against the same roll after the key's Secret was
//! replaced (an operator re-creating it), where old and new speakers cannot
//! authenticate each other mid-roll and fall back to judging each other by Lease:
//! the baseline. Printed: probes that failed per roll, and the longest
//! client-visible outage. Under `cargo test` (no `--bench`) one roll of each;
//! `scripts/bench` runs 5.

use std::net::SocketAddr;
use std::time::Duration;

use ferrolb_e2e::bench::{Row, print_table};
use ferrolb_e2e::client::{Probe, Prober, outages};
use ferrolb_e2e::sandbox::{Options, Sandbox, create, pool_and_advertisement};
use ferrolb_e2e::topology::privileged;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const VIP: &str = "198.51.100.100";

/// Failed probes, and the longest client-visible outage in ms.
fn damage(probes: &[Probe]) -> (f64, f64) {
    let failed = probes.iter().filter(|p| !p.ok).count() as f64;
    let longest = outages(probes).into_iter().map(|(_, d)| d).max().unwrap_or_default();
    (failed, longest.as_secs_f64() * 1000.0)
}

fn main() {
    if !privileged() {
        eprintln!("rolling_upgrade needs root (network namespaces); skipped");
        return;
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let rolls = if quick { 1 } else { 5 };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sb = rt
        .block_on(Sandbox::up_opts(
            &Options {
                nodes: 3,
                values: serde_json::json!({"speaker": {"forwarding": "nodeport"}}),
                ..Options::default()
            },
            dir.path(),
        ))
        .expect("sandbox");
    let c = sb.client.clone();
    rt.block_on(async {
        pool_and_advertisement(&c, "p", &[&format!("{VIP}/32")], "all").await?;
        for (i, node) in ["node-1", "node-2", "node-3"].iter().enumerate() {
            create(
                &Api::<Pod>::namespaced(c.clone(), "default"),
                json!({"metadata": {"name": format!("web-{i}"), "labels": {"app": "web"}},
                       "spec": {"nodeName": node, "containers": [{"name": "c", "image": "any", "ports": [{"containerPort": 8080}]}]}}),
            )
            .await?;
        }
        create(
            &Api::<Service>::namespaced(c.clone(), "default"),
            json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                   "ports": [{"port": 80, "targetPort": 8080}]}}),
        )
        .await
        .map(|_| ())
    })
    .expect("pool, pods and Service");
    let st = sb.state.clone();
    let url = format!("http://{VIP}/");
    ferrolb_e2e::wait::eventually("the VIP answers", Duration::from_secs(30), || {
        st.client().curl(&url, Duration::from_secs(2))
    });
    let netns = format!("/run/netns/{}", st.client_netns);
    let target: SocketAddr = format!("{VIP}:80").parse().expect("literal");
    let mut refresh = 20;
    let mut rows = Vec::new();
    let mut outage_rows = Vec::new();
    const BASELINE: &str = "heartbeat key replaced before the roll (baseline)";
    let secrets: Api<Secret> = Api::namespaced(c.clone(), ferrolb_e2e::sandbox::NS);
    for (keep, name) in [(true, "heartbeat key unchanged"), (false, BASELINE)] {
        let (mut failed, mut longest) = (Vec::new(), Vec::new());
        for i in 0..rolls {
            if !keep {
                let key = format!("{:032}", 7_777_000 + i);
                let patch = json!({"stringData": {"secretkey": key}});
                rt.block_on(secrets.patch("ferrolb-memberlist", &PatchParams::default(), &Patch::Merge(&patch)))
                    .expect("replace the key");
            }
            let prober =
                Prober::start(&netns, target, Duration::from_millis(10), Duration::from_millis(200)).expect("prober");
            std::thread::sleep(Duration::from_millis(300));
            let rolled = rt.block_on(sb.upgrade(&json!({"speaker": {"refreshInterval": refresh}}))).expect("upgrade");
            assert_eq!(rolled.len(), 3, "every speaker rolled: {rolled:?}");
            std::thread::sleep(Duration::from_millis(500));
            let probes = prober.stop();
            let (f, l) = damage(&probes);
            eprintln!("{name}: {} probes, {f} failed, longest outage {l:.0} ms", probes.len());
            failed.push(f);
            longest.push(l);
            refresh = if refresh == 20 { 30 } else { 20 };
        }
        rows.push(Row::new(name, failed));
        outage_rows.push(Row::new(name, longest));
    }
    print_table(
        "Rolling upgrade of 3 speakers (helm upgrade, one node at a time): failed probes per roll (a TCP connection to the VIP every 10 ms)",
        "",
        &rows,
        Some(BASELINE),
    );
    print_table("Rolling upgrade: longest client-visible outage per roll", "ms", &outage_rows, Some(BASELINE));
}
