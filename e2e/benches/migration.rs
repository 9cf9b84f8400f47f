//! The switch from MetalLB, measured: a sandbox in the state MetalLB leaves (its
//! CRDs, objects and Services with the IPs it assigned; its speakers not running),
//! then ferrolb's Pods start (installed by the chart with `metallbCompat` on). The
//! client-visible gap runs from that moment (MetalLB's speakers stopped) to the
//! first gratuitous ARP for the Service's IP the client captures, and to its first
//! TCP connection. Baseline from the same run: the same start with ferrolb.io
//! objects instead of MetalLB's (compat off). Needs root.
//! Run with `cargo bench -p ferrolb-e2e --bench migration` (quick without `--bench`).

use std::net::SocketAddr;
use std::time::Duration;

use ferrolb_e2e::bench::{Row, print_table};
use ferrolb_e2e::client::Prober;
use ferrolb_e2e::metallb::{self, Assigned, Capture, epoch};
use ferrolb_e2e::sandbox::{Options, Sandbox};
use ferrolb_e2e::topology::privileged;
use ferrolb_e2e::wait::eventually;
use serde_json::json;

const VIP: &str = "198.51.100.105";

/// MetalLB's configuration, as its documentation's layer-2 example writes it.
const METALLB_OBJECTS: &str = "apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: first-pool, namespace: metallb-system}
spec: {addresses: [198.51.100.100-198.51.100.110]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: example, namespace: metallb-system}
spec: {ipAddressPools: [first-pool]}
";

/// The same, as ferrolb's objects (what `kubectl ferrolb migrate` writes).
const FERROLB_OBJECTS: &str = "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: first-pool, namespace: ferrolb-system}
spec: {addresses: [198.51.100.100-198.51.100.110]}
---
apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata: {name: example, namespace: ferrolb-system}
spec: {ipAddressPools: [first-pool]}
";

/// The heartbeat key, created before the chart as `speaker.memberlist.existingSecret`.
const KEY_SECRET: &str = "apiVersion: v1
kind: Secret
metadata: {name: memberlist-key, namespace: ferrolb-system}
stringData: {secretkey: 0123456789abcdef0123456789abcdef}
";

#[derive(Clone, Copy, PartialEq)]
enum Case {
    /// compat on; the controller creates the heartbeat key (the chart's default).
    CompatKeyByController,
    /// compat on; the key Secret exists before the chart (the guide's order).
    CompatExistingKey,
    /// ferrolb.io objects, compat off, existing key: the baseline.
    Migrated,
}

/// One switch: (start -> first gratuitous ARP, start -> first TCP connection) in ms.
fn trial(case: Case) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let existing = case != Case::CompatKeyByController;
    let mut values = json!({"metallbCompat": {"enabled": case != Case::Migrated}});
    if existing {
        values["speaker"] = json!({"memberlist": {"existingSecret": "memberlist-key"}});
    }
    if case == Case::Migrated {
        // The objects are written before ferrolb runs, so before its webhook can answer.
        values["webhook"] = json!({"enabled": false});
    }
    let opts = Options {
        nodes: 2,
        start_components: false,
        values,
        before_install: existing.then(|| KEY_SECRET.to_string()),
        ..Options::default()
    };
    let sb = rt.block_on(Sandbox::up_opts(&opts, dir.path())).expect("sandbox");
    let client = sb.client.clone();
    let web = [Assigned { name: "web", ips: vec![VIP], pool: "first-pool" }];
    rt.block_on(metallb::install(&client, if case == Case::Migrated { "" } else { METALLB_OBJECTS }))
        .expect("MetalLB's CRDs and objects");
    if case == Case::Migrated {
        sb.kubectl_apply(FERROLB_OBJECTS).expect("ferrolb's objects");
    }
    rt.block_on(async {
        metallb::assigned_services(&client, &web).await?;
        ferrolb_e2e::sandbox::create(
            &kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), "default"),
            json!({"metadata": {"name": "web-1", "labels": {"app": "web"}}, "spec": {"nodeName": "node-1",
                "containers": [{"name": "c", "image": "any", "ports": [{"containerPort": 8080}]}]}}),
        )
        .await?;
        anyhow::Ok(())
    })
    .expect("the state MetalLB leaves");
    let capture = Capture::start(&sb.state).expect("tcpdump");
    let target: SocketAddr = format!("{VIP}:80").parse().expect("address");
    let prober = Prober::start(
        &format!("/run/netns/{}", sb.state.client_netns),
        target,
        Duration::from_millis(10),
        Duration::from_millis(200),
    )
    .expect("prober");
    let t0 = epoch();
    let at = prober.now();
    for pod in sb.state.pods.values() {
        sb.kubelet.release(pod).expect("release");
    }
    let garp = eventually("ferrolb's gratuitous ARP", Duration::from_secs(60), || capture.first_announcement(VIP, t0));
    let tcp = eventually("a TCP connection through ferrolb", Duration::from_secs(60), || {
        prober
            .results()
            .iter()
            .filter(|p| p.at >= at && p.ok)
            .map(|p| (p.done - at).as_secs_f64() * 1e3)
            .reduce(f64::min)
    });
    drop(prober);
    let _g = rt.enter();
    drop(sb);
    ((garp - t0) * 1e3, tcp)
}

fn main() {
    if !privileged() {
        eprintln!("migration needs root (network namespaces); skipped");
        return;
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 2 } else { 10 };
    let cases = [
        (Case::Migrated, "ferrolb.io objects, existing key Secret (baseline)"),
        (Case::CompatExistingKey, "metallb compat, existing key Secret"),
        (Case::CompatKeyByController, "metallb compat, key Secret made by the controller"),
    ];
    let mut garps: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut tcps: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    // Interleaved, so that a slow moment of the machine spreads over every case.
    for _ in 0..n {
        for (i, (case, _)) in cases.iter().enumerate() {
            let (g, t) = trial(*case);
            garps[i].push(g);
            tcps[i].push(t);
        }
    }
    let rows =
        |v: &[Vec<f64>]| -> Vec<Row> { cases.iter().zip(v).map(|((_, name), v)| Row::new(name, v.clone())).collect() };
    let base = Some(cases[0].1);
    print_table(
        "Switch from MetalLB: ferrolb's Pods start -> first gratuitous ARP for the VIP at the client",
        "ms",
        &rows(&garps),
        base,
    );
    print_table(
        "Switch from MetalLB: ferrolb's Pods start -> first TCP connection established to the VIP (a probe every 10 ms)",
        "ms",
        &rows(&tcps),
        base,
    );
}
