//! A real Prometheus server (Debian's) scrapes the sandbox's controller and every
//! speaker; the test asks it, over its HTTP API, for the pool gauges and the
//! announcement, runs `promtool check metrics` on every endpoint, and checks the
//! metrics reference against what the binaries export. Runs as root.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrolb_e2e::prometheus::{in_ns, prometheus, query};
use ferrolb_e2e::sandbox::{NS, Sandbox, pool_and_advertisement};
use ferrolb_e2e::topology::privileged;
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

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
    // With a BGP router too, and pool p advertised both ways (layer 2 and BGP), so the
    // BGP series exist.
    let opts =
        ferrolb_e2e::sandbox::Options { nodes: 2, bgp: Some(ferrolb_e2e::router::Daemon::Frr), ..Default::default() };
    let sb = rt.block_on(Sandbox::up_opts(&opts, dir.path())).expect("sandbox");
    let c = sb.client.clone();
    rt.block_on(async {
        pool_and_advertisement(&c, "p", &["198.51.100.100/30"], "all").await.unwrap();
        use ferrolb_e2e::router::{NODE_ASN, ROUTER_ASN, ROUTER_V4};
        // With BFD, so its series exist too.
        let profile =
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BFDProfile", "metadata": {"name": "bfd"}, "spec": {}});
        ferrolb_e2e::sandbox::create(&Api::<ferrolb_crds::BFDProfile>::namespaced(c.clone(), NS), profile)
            .await
            .unwrap();
        let peer = json!({"apiVersion": "ferrolb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "router"},
            "spec": {"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": ROUTER_V4, "connectTime": "1s",
                     "bfdProfile": "bfd"}});
        ferrolb_e2e::sandbox::create(&Api::<ferrolb_crds::BGPPeer>::namespaced(c.clone(), NS), peer).await.unwrap();
        let adv = json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "p"},
            "spec": {"ipAddressPools": ["p"]}});
        ferrolb_e2e::sandbox::create(&Api::<ferrolb_crds::BGPAdvertisement>::namespaced(c.clone(), NS), adv)
            .await
            .unwrap();
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
    let cp = st.control_plane_netns.clone();
    let _prom = prometheus(&cp, dir.path(), &config);
    let query = |q: &str| query(&cp, q).map(Value::Array);
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

    // Both nodes advertise it over BGP as well (the router's kernel routes it to both).
    let bgp = eventually("both nodes advertise over BGP", Duration::from_secs(30), || {
        let r = query("ferrolb_bgp_advertised{ip=\"198.51.100.100\"}")?;
        r.as_array().filter(|a| a.len() == 2).cloned()
    });
    assert_eq!(bgp.len(), 2);
    assert_eq!(st.router.as_ref().unwrap().next_hops("198.51.100.100").len(), 2);
    // And each runs BFD with the router.
    eventually("both nodes' BFD sessions up", Duration::from_secs(30), || {
        let r = query("ferrolb_bfd_session_up{peer=\"router\"} == 1")?;
        r.as_array().filter(|a| a.len() == 2).cloned()
    });
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

/// `metrics.secure`: both components serve HTTPS, and `/metrics` only to tokens the API
/// server authenticates and authorizes (TokenReview, SubjectAccessReview, with the
/// emulator's RBAC in force); a real Prometheus scrapes every target with the token of a
/// ServiceAccount bound by `metrics.reader`, and with another ServiceAccount's token gets
/// nothing. Probes pass over HTTPS (the Pods are Ready), and a speaker listens on its
/// node's address only.
#[test]
fn secure_metrics_answer_only_authorized_tokens() {
    use ferrolb_e2e::harness::Harness;
    use ferrolb_e2e::sandbox::Options;
    let values =
        json!({"metrics": {"secure": true, "reader": {"serviceAccount": "prometheus", "namespace": "monitoring"}}});
    let h = Harness::up(&Options { nodes: 2, rbac: true, values, ..Options::default() });
    let st = h.sb().state.clone();
    let cp = st.control_plane_netns.clone();
    let speaker_targets: Vec<String> = st.nodes.iter().map(|n| format!("{}:7473", n.interfaces[0].ipv4)).collect();
    let controller_targets = st.controller_targets();
    let speaker_token = std::fs::read_to_string(st.run_dir.join("serviceaccounts/ferrolb-speaker/token")).unwrap();
    let code = |url: &str, token: Option<&str>| status_code(&cp, url, token);
    // The witness that the kubelet's HTTPS probes pass: every Pod Ready.
    for pod in st.pods.values() {
        h.rt.block_on(h.sb().until_ready(pod)).expect("Ready over HTTPS probes");
    }
    for t in controller_targets.iter().chain(&speaker_targets) {
        let m = format!("https://{t}/metrics");
        assert_eq!(code(&m, None), "401", "{t}: no token");
        assert_eq!(code(&m, Some("made-up")), "401", "{t}: a token nobody issued");
        assert_eq!(code(&m, Some(speaker_token.trim())), "403", "{t}: a ServiceAccount not bound to the reader role");
        assert_eq!(code(&m, Some(&st.prometheus_token)), "200", "{t}: Prometheus's token");
        assert_eq!(code(&format!("https://{t}/healthz"), None), "200", "{t}: health stays open for the kubelet");
        assert_eq!(code(&format!("http://{t}/metrics"), None), "000", "{t}: no plain HTTP");
    }
    // Bound to the node's address, not to every address of the node.
    let n1 = &st.nodes[0];
    let loopback = status_code(&n1.netns, "https://127.0.0.1:7473/healthz", None);
    assert_eq!(loopback, "000", "the speaker listens on its node's address only");

    // A real Prometheus: one job with the bound ServiceAccount's token, one with the
    // speaker's; certificates are self-signed, so not verified (the chart's default).
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("prometheus.token"), dir.path().join("speaker.token"));
    std::fs::write(&good, &st.prometheus_token).unwrap();
    std::fs::write(&bad, speaker_token.trim()).unwrap();
    let targets: Vec<String> = controller_targets.iter().chain(&speaker_targets).map(|t| format!("'{t}'")).collect();
    let job = |name: &str, token: &Path| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    bearer_token_file: {}\n    tls_config: {{insecure_skip_verify: true}}\n    static_configs: [{{targets: [{}]}}]\n",
            token.display(),
            targets.join(", ")
        )
    };
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n{}{}",
        job("ferrolb", &good),
        job("intruder", &bad)
    );
    let _prom = prometheus(&cp, dir.path(), &config);
    let query = |q: &str| query(&cp, q);
    let want = targets.len();
    let scraped = |job: &'static str, value: &'static str| {
        let q = format!("up{{job=\"{job}\"}}");
        move || query(&q).filter(|a| a.len() == want && a.iter().all(|s| s["value"][1] == value))
    };
    eventually("every target up with the bound token", Duration::from_secs(30), scraped("ferrolb", "1"));
    eventually("every target refuses the other token", Duration::from_secs(30), scraped("intruder", "0"));
    let speakers = eventually("speaker series scraped", Duration::from_secs(30), || {
        query("count(ferrolb_speaker_members{job=\"ferrolb\"})").filter(|a| !a.is_empty())
    });
    assert_eq!(speakers[0]["value"][1], st.nodes.len().to_string(), "every speaker's metrics, scraped over HTTPS");
}

/// The HTTP status of a GET of `url` with `token`, from the namespace `netns` ("000":
/// no HTTP answer at all).
fn status_code(netns: &str, url: &str, token: Option<&str>) -> String {
    let auth = token.map(|t| format!("Authorization: Bearer {t}")).unwrap_or_else(|| "X-No-Token: 1".into());
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3"])
        .args(["-H", &auth, url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
