//! A real Prometheus server (Debian's) scrapes the sandbox's controller and every
//! speaker; the test asks it, over its HTTP API, for the pool gauges and the
//! announcement, runs `promtool check metrics` on every endpoint, and checks the
//! metrics reference against what the binaries export. Runs as root.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrolb_e2e::sandbox::{NS, Sandbox, pool_and_advertisement};
use ferrolb_e2e::topology::privileged;
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_ns(ns: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("ip").args(["netns", "exec", ns]).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Everything `promtool check metrics` reports about an exposition.
fn promtool_problems(text: &str) -> Vec<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

fn names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("# TYPE ferrolb_"))
        .filter_map(|l| l.split_whitespace().nth(2).map(String::from))
        .collect()
}

#[test]
fn prometheus_scrapes_controller_and_speakers() {
    assert!(privileged(), "network tests need root (CI runs .ci/run as root)");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sb = rt.block_on(Sandbox::up(2, dir.path())).expect("sandbox");
    let c = sb.client.clone();
    rt.block_on(async {
        pool_and_advertisement(&c, "p", &["198.51.100.100/30"], "all").await.unwrap();
        let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
        svcs.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    });
    let st = sb.state.clone();
    let holder = eventually("web announced", Duration::from_secs(20), || {
        let api: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(c.clone(), NS);
        rt.block_on(api.get_opt("default.web")).ok().flatten()?.status.map(|s| s.node)
    });

    let speaker_targets: Vec<String> = st.nodes.iter().map(|n| format!("{}:7473", n.interfaces[0].ipv4)).collect();
    let controller_targets = st.controller_targets();
    let quoted = |ts: &[String]| ts.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: ferrolb-controller\n    static_configs: [{{targets: [{}]}}]\n  - job_name: ferrolb-speaker\n    static_configs: [{{targets: [{}]}}]\n",
        quoted(&controller_targets),
        quoted(&speaker_targets)
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let data = dir.path().join("tsdb");
    let cp = st.control_plane_netns.clone();
    let _prom = Proc(
        Command::new("ip")
            .args(["netns", "exec", &cp, "prometheus"])
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .args(["--web.listen-address=127.0.0.1:9090"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package `prometheus`)"),
    );
    let query = |q: &str| -> Option<Value> {
        let out = in_ns(
            &cp,
            &[
                "curl",
                "-s",
                "--max-time",
                "2",
                "--data-urlencode",
                &format!("query={q}"),
                "http://127.0.0.1:9090/api/v1/query",
            ],
        )?;
        let v: Value = serde_json::from_str(&out).ok()?;
        (v["status"] == "success").then(|| v["data"]["result"].clone())
    };
    let total = eventually("Prometheus has the pool gauge", Duration::from_secs(30), || {
        let r = query("ferrolb_allocator_addresses{pool=\"p\"}")?;
        r.as_array().filter(|a| !a.is_empty()).map(|a| a[0]["value"][1].as_str().unwrap_or("").to_string())
    });
    assert_eq!(total, "4");
    let in_use = eventually("in-use gauge", Duration::from_secs(30), || {
        query("ferrolb_allocator_addresses_in_use{pool=\"p\"}")?
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| a[0]["value"][1].as_str().unwrap_or("").to_string())
    });
    assert_eq!(in_use, "1");
    let announced = eventually("announcement scraped", Duration::from_secs(30), || {
        query("ferrolb_speaker_announced").filter(|r| r.as_array().is_some_and(|a| !a.is_empty()))
    });
    let series = announced.as_array().unwrap();
    assert_eq!(series.len(), 1, "exactly one node announces: {announced}");
    assert_eq!(series[0]["metric"]["node"], holder.as_str());
    assert_eq!(series[0]["metric"]["ip"], "198.51.100.100");
    let want = controller_targets.len() + speaker_targets.len();
    let up = eventually("every target up", Duration::from_secs(30), || {
        let r = query("up")?;
        let a = r.as_array()?.clone();
        (a.len() == want && a.iter().all(|s| s["value"][1] == "1")).then_some(a)
    });
    assert_eq!(up.len(), want, "both controller replicas and every speaker");

    // Some ARP traffic, so the per-IP request/response counters exist.
    let replies = st.arp_replies("198.51.100.100", 2);
    assert!(!replies.is_empty(), "the VIP answers ARP");
    // promtool on every endpoint, and the metrics reference against the exported names.
    let mut exported = BTreeSet::new();
    for target in controller_targets.iter().chain(&speaker_targets) {
        let text = in_ns(&cp, &["curl", "-s", "--max-time", "2", &format!("http://{target}/metrics")]).expect("scrape");
        let problems = promtool_problems(&text);
        assert!(problems.is_empty(), "promtool on {target}: {problems:?}");
        exported.extend(names(&text));
    }
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md")).unwrap();
    let documented: BTreeSet<String> =
        doc.split('`').filter(|w| w.starts_with("ferrolb_") && !w.contains(' ')).map(String::from).collect();
    let missing: Vec<&String> = exported.iter().filter(|n| !documented.contains(*n)).collect();
    assert!(missing.is_empty(), "exported but not in docs/metrics.md: {missing:?}");
    let phantom: Vec<&String> = documented.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(phantom.is_empty(), "documented but not exported: {phantom:?}");
    let _g = rt.enter();
    drop(sb);
}
