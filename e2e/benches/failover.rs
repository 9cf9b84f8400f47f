//! Failover as a client sees it. In the sandbox (3 nodes, 15 s Leases, heartbeats
//! on), a client opens a TCP connection to the VIP every 10 ms while the announcing
//! speaker is killed (SIGKILL), stopped (SIGTERM) or its node's link goes down; the
//! outage is the time from the first failed connection to the next successful one.
//! The baseline, in the same run, is a sandbox whose speakers detect failure by
//! Lease expiry only (3 s Leases, heartbeats off). Then a soak: the CPU loaded
//! while nothing fails, counting false failovers; and an API-churn soak: 26 Services
//! nobody touches while about 20 Service writes a second (create, patch, delete, each
//! allocating or freeing an IP that the speakers plan for) go on, counting how often
//! an untouched Service's announcing node changed (its ServiceL2Status, watched).
//!
//! Needs root. `cargo bench -p ferrolb-e2e --bench failover`; `FERROLB_BENCH_TRIALS`
//! (default 20) trials per case, `FERROLB_BENCH_SOAK` soak seconds (default 60;
//! `scripts/bench --soak` runs 600), `FERROLB_BENCH_CHURN` churn seconds (default 60;
//! `--soak` runs 185). Under `cargo test` it runs one short trial each.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrolb_e2e::bench::{Row, print_table};
use ferrolb_e2e::client::{Prober, any_failed, outage};
use ferrolb_e2e::sandbox::{Families, NS, Options, Sandbox, create, pool_and_advertisement};
use ferrolb_e2e::topology::privileged;
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use serde_json::json;

const VIP: &str = "198.51.100.100";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    Kill,
    Term,
    LinkDown,
}

struct Bench {
    rt: tokio::runtime::Runtime,
    sb: Sandbox,
}

impl Bench {
    /// Wait until `node`'s speaker is a member again: it hears its peers' heartbeats
    /// (`received` more than `before`) and every speaker hears every other one, or
    /// without heartbeats it sees every Lease current.
    fn wait_member(&self, node: &str, before: f64) {
        eventually("the node is back among the members", Duration::from_secs(60), || {
            let ok = if self.sb.state.heartbeats {
                self.metric(node, "ferrolb_memberlist_heartbeats_received_total") >= before + 20.0
                    && self.all_hear_each_other()
            } else {
                self.metric(node, "ferrolb_speaker_members") >= self.sb.state.nodes.len() as f64
            };
            ok.then_some(())
        });
    }

    /// Every speaker counts every other one alive by heartbeats (true without heartbeats):
    /// a fault to a peer not heard yet would be detected by its Lease, not measured here.
    fn all_hear_each_other(&self) -> bool {
        !self.sb.state.heartbeats || self.sb.state.speakers_hear_each_other()
    }
}

impl Bench {
    fn up(opts: Options, dir: &std::path::Path) -> Bench {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let sb = rt.block_on(Sandbox::up_opts(&opts, dir)).expect("sandbox");
        let c = sb.client.clone();
        rt.block_on(async {
            pool_and_advertisement(&c, "p", &[&format!("{VIP}/32")], "all").await.unwrap();
            create(
                &Api::<Pod>::namespaced(c.clone(), "default"),
                json!({"metadata": {"name": "web-1", "labels": {"app": "web"}},
                       "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "any", "ports": [{"containerPort": 8080}]}]}}),
            )
            .await
            .unwrap();
            create(
                &Api::<Service>::namespaced(c.clone(), "default"),
                json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                       "ports": [{"port": 80, "targetPort": 8080}]}}),
            )
            .await
            .unwrap();
        });
        Bench { rt, sb }
    }

    fn holder(&self) -> Option<String> {
        let api: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(self.sb.client.clone(), NS);
        self.rt.block_on(api.get_opt("default.web")).ok().flatten()?.status.map(|s| s.node).filter(|n| !n.is_empty())
    }

    fn client_ns(&self) -> String {
        format!("/run/netns/{}", self.sb.state.client_netns)
    }

    fn metric(&self, node: &str, name: &str) -> f64 {
        self.sb.state.speaker_metric(node, name)
    }

    /// When another node than `old` logged that it started announcing the VIP, after `since`.
    fn takeover_at(&self, old: &str, since: chrono::DateTime<chrono::Utc>) -> Option<chrono::DateTime<chrono::Utc>> {
        self.sb
            .state
            .nodes
            .iter()
            .filter(|n| n.name != old)
            .filter_map(|n| std::fs::read_to_string(self.sb.state.run_dir.join(format!("speaker-{}.log", n.name))).ok())
            .flat_map(|log| {
                log.lines()
                    .filter(|l| l.contains(&format!("announcing ip={VIP} ")))
                    .filter_map(|l| l.split_whitespace().next()?.parse::<chrono::DateTime<chrono::Utc>>().ok())
                    .filter(|t| *t >= since)
                    .collect::<Vec<_>>()
            })
            .min()
    }

    /// The holder, once its status is written and the VIP answers.
    fn stable_holder(&self) -> String {
        let target: SocketAddr = format!("{VIP}:80").parse().unwrap();
        eventually("a stable holder", Duration::from_secs(30), || {
            let h = self.holder()?;
            let p =
                Prober::start(&self.client_ns(), target, Duration::from_millis(10), Duration::from_millis(300)).ok()?;
            std::thread::sleep(Duration::from_millis(100));
            let r = p.stop();
            (r.len() >= 5
                && r.iter().all(|x| x.ok)
                && self.holder().as_deref() == Some(h.as_str())
                && self.all_hear_each_other())
            .then_some(h)
        })
    }

    /// One trial: fault the holder while probing; returns the client-visible outage and
    /// the time until another node announced the VIP (ms), then restores the node.
    fn trial(&mut self, fault: Fault) -> (f64, f64) {
        let holder = self.stable_holder();
        let target: SocketAddr = format!("{VIP}:80").parse().unwrap();
        let p =
            Prober::start(&self.client_ns(), target, Duration::from_millis(10), Duration::from_millis(300)).unwrap();
        eventually("probes succeed before the fault", Duration::from_secs(10), || {
            (p.results().iter().filter(|x| x.ok).count() >= 20).then_some(())
        });
        let at = p.now();
        let port = holder.replace("node-", "n");
        let sw = format!("flb{}sw", self.sb.state.suffix);
        let received_before = self.metric(&holder, "ferrolb_memberlist_heartbeats_received_total");
        let wall = chrono::Utc::now();
        match fault {
            Fault::Kill | Fault::Term => {
                // The node's kubelet is gone with it: nothing restarts the speaker.
                let sig = if fault == Fault::Kill { "-KILL" } else { "-TERM" };
                self.sb.signal_pod(&format!("speaker/{holder}"), sig, true).unwrap();
            }
            Fault::LinkDown => {
                assert!(Command::new("ip").args(["-n", &sw, "link", "set", &port, "down"]).status().unwrap().success());
            }
        }
        // Done when connections have succeeded for 300 ms after one failed, or nothing
        // failed for 3 s (a handoff without any lost connection).
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if p.recovered_since(at, Duration::from_millis(300)) {
                break;
            }
            if p.now() > at + Duration::from_secs(3) && !any_failed(&p.results(), at) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let probes = p.stop();
        let out =
            if any_failed(&probes, at) { outage(&probes, at).expect("the VIP answers again") } else { Duration::ZERO };
        let taken = eventually("another node announces", Duration::from_secs(60), || self.takeover_at(&holder, wall));
        let takeover = (taken - wall).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        // Restore the node and wait until it is back among the members.
        match fault {
            Fault::Kill | Fault::Term => {
                let key = format!("speaker/{holder}");
                eventually("the stopped speaker ended", Duration::from_secs(30), || {
                    self.sb.pid(&key).is_none().then_some(())
                });
                self.sb.start_pod(&key).unwrap();
                self.wait_member(&holder, 0.0);
            }
            Fault::LinkDown => {
                assert!(Command::new("ip").args(["-n", &sw, "link", "set", &port, "up"]).status().unwrap().success());
                self.wait_member(&holder, received_before);
            }
        }
        (out.as_secs_f64() * 1000.0, takeover)
    }
}

/// The speakers' own forwarding, as the published numbers were measured: a killed
/// speaker's node keeps forwarding through its nftables table (with kube-proxy,
/// kube-proxy does the same whatever the speaker).
fn nodeport() -> serde_json::Value {
    serde_json::json!({"speaker": {"forwarding": "nodeport"}})
}

fn main() {
    if !privileged() {
        eprintln!("failover needs root (network namespaces); skipped");
        return;
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let env_num = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let trials = if quick { 1 } else { env_num("FERROLB_BENCH_TRIALS", 20) as usize };
    let soak = Duration::from_secs(if quick { 3 } else { env_num("FERROLB_BENCH_SOAK", 60) });
    let churn = Duration::from_secs(if quick { 3 } else { env_num("FERROLB_BENCH_CHURN", 60) });
    let dir = tempfile::tempdir().unwrap();

    let mut rows = Vec::new();
    let mut takeover_rows = Vec::new();
    {
        let opts = Options {
            nodes: 3,
            families: Families::V4,
            speaker_lease_seconds: 15,
            values: nodeport(),
            ..Options::default()
        };
        let mut b = Bench::up(opts, &dir.path().join("heartbeats"));
        for (fault, name) in [
            (Fault::Kill, "SIGKILL, heartbeats (15 s Lease)"),
            (Fault::Term, "SIGTERM, heartbeats"),
            (Fault::LinkDown, "link down, heartbeats"),
        ] {
            let v: Vec<(f64, f64)> = (0..trials).map(|_| b.trial(fault)).collect();
            eprintln!("{name}: {v:?}");
            rows.push(Row::new(name, v.iter().map(|x| x.0).collect()));
            takeover_rows.push(Row::new(name, v.iter().map(|x| x.1).collect()));
        }
        // Soak: no fault, both cores loaded, a client probing; any takeover is a false failover.
        let nodes: Vec<String> = b.sb.state.nodes.iter().map(|n| n.name.clone()).collect();
        let count = |m: &str| nodes.iter().map(|n| b.metric(n, m)).sum::<f64>();
        b.stable_holder();
        let (t0, d0) = (count("ferrolb_speaker_takeovers_total"), count("ferrolb_memberlist_peers_dead_total"));
        let stop = Arc::new(AtomicBool::new(false));
        let burners: Vec<_> = (0..2)
            .map(|_| {
                let s = stop.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 1;
                    while !s.load(Ordering::Relaxed) {
                        for _ in 0..100_000 {
                            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        }
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        let target: SocketAddr = format!("{VIP}:80").parse().unwrap();
        let p = Prober::start(&b.client_ns(), target, Duration::from_millis(100), Duration::from_millis(1000)).unwrap();
        let started = Instant::now();
        while started.elapsed() < soak {
            std::thread::sleep(Duration::from_millis(200));
        }
        let probes = p.stop();
        stop.store(true, Ordering::Relaxed);
        for t in burners {
            let _ = t.join();
        }
        let (t1, d1) = (count("ferrolb_speaker_takeovers_total"), count("ferrolb_memberlist_peers_dead_total"));
        println!(
            "\nSoak: {} s with 2 CPU-bound threads on 2 cores, a connection every 100 ms: \
             {} false failovers (takeovers), {} peers judged dead, {} of {} connections failed",
            soak.as_secs(),
            t1 - t0,
            d1 - d0,
            probes.iter().filter(|p| !p.ok).count(),
            probes.len()
        );
        churn_soak(&b, churn);
    }
    {
        let opts = Options {
            nodes: 3,
            families: Families::V4,
            speaker_lease_seconds: 3,
            heartbeats: false,
            values: nodeport(),
            ..Options::default()
        };
        let mut b = Bench::up(opts, &dir.path().join("leases"));
        let n = if quick { 1 } else { trials.min(5) };
        for (fault, name) in [
            (Fault::Kill, "SIGKILL, Lease only (3 s Lease, baseline)"),
            (Fault::LinkDown, "link down, Lease only (3 s Lease)"),
        ] {
            let v: Vec<(f64, f64)> = (0..n).map(|_| b.trial(fault)).collect();
            eprintln!("{name}: {v:?}");
            rows.push(Row::new(name, v.iter().map(|x| x.0).collect()));
            takeover_rows.push(Row::new(name, v.iter().map(|x| x.1).collect()));
        }
    }
    print_table(
        "Failover: client-visible outage (a TCP connection to the VIP every 10 ms; first failure to next success)",
        "ms",
        &rows,
        Some("link down, Lease only (3 s Lease)"),
    );
    print_table(
        "Failover: fault to another node announcing the VIP (its log), detection included",
        "ms",
        &takeover_rows,
        Some("SIGKILL, Lease only (3 s Lease, baseline)"),
    );
    println!(
        "\nA killed speaker leaves its node's forwarding in place and clients keep its MAC, so \
         traffic flows until the new holder's gratuitous ARP: a speaker crash costs clients almost \
         nothing either way. Link down is the node-death case, where detection is the outage."
    );
}

/// Untouched Services whose announcing node must not change during the churn.
const UNTOUCHED: usize = 26;
/// Services created, patched and deleted in turn by the churn.
const CHURNED: usize = 10;

/// The API-churn soak: [`UNTOUCHED`] Services get IPs and settle; then for `secs` a
/// writer makes about 20 Service writes a second while a watcher counts every change
/// of an untouched Service's announcing node (any is a false failover).
fn churn_soak(b: &Bench, secs: Duration) {
    use futures::StreamExt;
    use kube::api::{DeleteParams, Patch, PatchParams};
    use kube::runtime::{WatchStreamExt, watcher};

    let c = b.sb.client.clone();
    let services = Api::<Service>::namespaced(c.clone(), "default");
    let statuses: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(c.clone(), NS);
    let nodes: Vec<String> = b.sb.state.nodes.iter().map(|n| n.name.clone()).collect();
    let dead = || nodes.iter().map(|n| b.metric(n, "ferrolb_memberlist_peers_dead_total")).sum::<f64>();
    let spec = |name: &str| {
        json!({"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
               "ports": [{"port": 80, "targetPort": 8080}]}})
    };
    let holders = |want: usize| -> Option<std::collections::BTreeMap<String, String>> {
        let list = b.rt.block_on(statuses.list(&Default::default())).ok()?;
        let m: std::collections::BTreeMap<String, String> = list
            .items
            .into_iter()
            .filter(|s| s.metadata.name.as_deref().is_some_and(|n| n.starts_with("default.still-")))
            .filter_map(|s| Some((s.metadata.name?, s.status.map(|st| st.node).filter(|n| !n.is_empty())?)))
            .collect();
        (m.len() == want).then_some(m)
    };
    b.rt.block_on(async {
        pool_and_advertisement(&c, "churn", &["198.51.100.128/25"], "churn").await.unwrap();
        for i in 0..UNTOUCHED {
            create(&services, spec(&format!("still-{i}"))).await.unwrap();
        }
    });
    let start = eventually("every untouched Service announced", Duration::from_secs(60), || holders(UNTOUCHED));
    let dead0 = dead();

    // The witness: every ServiceL2Status event of an untouched Service, compared with
    // the node announcing it at the start.
    let changes = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let watch = {
        let (changes, mut last, statuses2) = (changes.clone(), start.clone(), statuses.clone());
        b.rt.spawn(async move {
            let mut events = std::pin::pin!(watcher(statuses2, watcher::Config::default()).applied_objects());
            while let Some(ev) = events.next().await {
                let Ok(s) = ev else { continue };
                let Some(name) = s.metadata.name.clone().filter(|n| n.starts_with("default.still-")) else { continue };
                let node = s.status.map(|st| st.node).unwrap_or_default();
                if last.get(&name) != Some(&node) {
                    changes.lock().unwrap().push((name.clone(), node.clone()));
                    last.insert(name, node);
                }
            }
        })
    };
    let writes = b.rt.block_on(async {
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut n = 0u64;
        let mut failed = 0u64;
        while started.elapsed() < secs {
            tick.tick().await;
            // Per churned Service: create, patch, patch, delete.
            let (i, step) = ((n / 4) % CHURNED as u64, n % 4);
            let name = format!("churn-{i}-{}", n / (4 * CHURNED as u64));
            let ok = match step {
                0 => create(&services, spec(&name)).await.is_ok(),
                1 | 2 => services
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"labels": {"step": n.to_string()}}})),
                    )
                    .await
                    .is_ok(),
                _ => services.delete(&name, &DeleteParams::default()).await.is_ok(),
            };
            failed += u64::from(!ok);
            n += 1;
        }
        (n, failed, started.elapsed())
    });
    // Settle, then stop the witness.
    std::thread::sleep(Duration::from_secs(2));
    watch.abort();
    let end = holders(UNTOUCHED).unwrap_or_default();
    let changed = changes.lock().unwrap().clone();
    println!(
        "\nAPI churn: {} Service writes in {:.0} s ({:.1}/s, {} refused) beside {UNTOUCHED} untouched Services: \
         {} announcing-node changes of an untouched Service, {} at the end, {} peers judged dead",
        writes.0,
        writes.2.as_secs_f64(),
        writes.0 as f64 / writes.2.as_secs_f64(),
        writes.1,
        changed.len(),
        start.iter().filter(|(k, v)| end.get(*k) != Some(*v)).count(),
        dead() - dead0,
    );
    for (name, node) in changed.iter().take(5) {
        println!("  {name} moved to {node:?}");
    }
}
