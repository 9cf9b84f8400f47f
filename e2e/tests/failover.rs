//! Heartbeat failure detection, end to end with the real speakers in the sandbox:
//! a crash, a graceful stop, a pulled cable, one lossy link and an unreachable API
//! server. The speakers' Leases last 30 s here, so anything that moves within a few
//! seconds moved because of heartbeats; the speed itself is measured by the
//! `failover` bench, not asserted here.

use std::process::Command;
use std::time::{Duration, Instant};

use ferrolb_crds::conditions::event;
use ferrolb_e2e::sandbox::{NS, Options, Sandbox, metric_sum, pool_and_advertisement, process_running};
use ferrolb_e2e::topology::privileged;
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use serde_json::json;

struct Env {
    rt: tokio::runtime::Runtime,
    sb: Option<Sandbox>,
    ip: String,
    _dir: tempfile::TempDir,
}

impl Env {
    fn sb(&self) -> &Sandbox {
        self.sb.as_ref().expect("sandbox up")
    }

    fn netns_of(&self, node: &str) -> String {
        self.sb().state.nodes.iter().find(|n| n.name == node).expect("node").netns.clone()
    }

    /// Who answered `count` ARP requests for the VIP, as node names.
    fn answering(&self, count: u32) -> Vec<String> {
        let st = &self.sb().state;
        st.arp_replies(&self.ip, count).into_iter().map(|mac| st.node_of_mac(&mac).unwrap_or(mac)).collect()
    }

    /// Who answered `count` ARP requests for each of `ips`, asked in parallel.
    fn answering_each(&self, ips: &[String], count: u32) -> Vec<Vec<String>> {
        let st = &self.sb().state;
        std::thread::scope(|s| {
            let asks: Vec<_> = ips
                .iter()
                .map(|ip| {
                    s.spawn(move || {
                        st.arp_replies(ip, count).into_iter().map(|m| st.node_of_mac(&m).unwrap_or(m)).collect()
                    })
                })
                .collect();
            asks.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Apply `action` (`drop`, `reject with tcp reset`) to every speaker's packets to
    /// the API server, on every node.
    fn cut_speakers_from_api(&self, action: &str) {
        let kc = std::fs::read_to_string(&self.sb().state.speaker_kubeconfig).unwrap();
        let server = kc.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap().to_string();
        let (host, port) = server.trim_start_matches("https://").trim_end_matches('/').rsplit_once(':').unwrap();
        for n in self.nodes() {
            nft(
                self,
                &n,
                &format!(
                    "table inet flbtest {{\n chain output {{\n  type filter hook output priority 0;\n  ip daddr {host} tcp dport {port} counter {action}\n }}\n}}\n"
                ),
            );
        }
    }

    fn holder_status(&self) -> Option<String> {
        let api: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(self.sb().client.clone(), NS);
        self.rt.block_on(api.get_opt("default.web")).ok().flatten()?.status.map(|s| s.node).filter(|n| !n.is_empty())
    }

    fn metric(&self, node: &str, name: &str) -> f64 {
        self.sb().state.speaker_metric(node, name)
    }

    /// The reasons of the Events about Node `node` (a stopping speaker leaves one there).
    fn node_event_reasons(&self, node: &str) -> Vec<String> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(self.sb().client.clone());
        let list = self.rt.block_on(api.list(&Default::default())).expect("list events");
        list.items
            .into_iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.kind.as_deref() == Some("Node") && r.name.as_deref() == Some(node))
            })
            .filter_map(|e| e.reason)
            .collect()
    }

    fn nodes(&self) -> Vec<String> {
        self.sb().state.nodes.iter().map(|n| n.name.clone()).collect()
    }
}

/// Three nodes, Leases of `lease` seconds, one Service; returns once status and ARP
/// agree and every speaker hears every other one: a peer that has not been heard yet
/// is judged by its Lease alone, and every fault below is meant to be seen by heartbeats.
fn setup(lease: u32) -> (Env, String) {
    setup_nodes(3, lease)
}

/// [`setup`] with `nodes` nodes.
fn setup_nodes(nodes: usize, lease: u32) -> (Env, String) {
    let (env, holder) = setup_with_nodes(nodes, lease, |_| {});
    eventually("every speaker hears every other one", Duration::from_secs(10), || {
        env.sb().state.speakers_hear_each_other().then_some(())
    });
    (env, holder)
}

/// [`setup`], running `before_start` on the sandbox before the components start.
fn setup_with(lease: u32, before_start: impl FnOnce(&Env)) -> (Env, String) {
    setup_with_nodes(3, lease, before_start)
}

fn setup_with_nodes(nodes: usize, lease: u32, before_start: impl FnOnce(&Env)) -> (Env, String) {
    assert!(privileged(), "network tests need root (CI runs .ci/run as root)");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        nodes,
        speaker_lease_seconds: lease,
        families: ferrolb_e2e::sandbox::Families::V4,
        start_components: false,
        ..Options::default()
    };
    let sb = rt.block_on(Sandbox::up_opts(&opts, dir.path())).expect("sandbox");
    let c = sb.client.clone();
    let mut env = Env { rt, sb: Some(sb), ip: "198.51.100.100".into(), _dir: dir };
    before_start(&env);
    let sb = env.sb.as_mut().unwrap();
    env.rt.block_on(sb.start_components()).expect("start the controller and speakers");
    let rt = &env.rt;
    rt.block_on(async {
        pool_and_advertisement(&c, "p", &["198.51.100.100/32"], "all").await.unwrap();
        ferrolb_e2e::sandbox::create(
            &Api::<Service>::namespaced(c.clone(), "default"),
            json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        )
        .await
        .unwrap();
    });
    let holder = eventually("web announced consistently", Duration::from_secs(30), || {
        let h = env.holder_status()?;
        (env.answering(1) == [h.clone()]).then_some(h)
    });
    env.ip = "198.51.100.100".into();
    (env, holder)
}

fn new_holder(env: &Env, old: &str) -> (String, Duration) {
    let t0 = Instant::now();
    let h = eventually("another node answers", Duration::from_secs(15), || {
        env.answering(1).into_iter().next().filter(|h| h != old)
    });
    (h, t0.elapsed())
}

#[test]
fn a_crashed_speaker_is_replaced_long_before_its_lease_expires() {
    let (env, holder) = setup(30);
    let others: Vec<String> = env.nodes().into_iter().filter(|n| *n != holder).collect();
    let dead_before: Vec<f64> = others.iter().map(|n| env.metric(n, "ferrolb_memberlist_peers_dead_total")).collect();
    // A crash: the node's kubelet goes with it and restarts nothing.
    env.sb().signal_pod(&format!("speaker/{holder}"), "-KILL", true).unwrap();
    let (new, took) = new_holder(&env, &holder);
    eprintln!("SIGKILL of {holder}: {new} answers after {took:?} (Lease: 30 s)");
    assert!(took < Duration::from_secs(10), "took over by heartbeat loss, not Lease expiry ({took:?})");
    for (n, before) in others.iter().zip(dead_before) {
        assert!(
            env.metric(n, "ferrolb_memberlist_peers_dead_total") > before,
            "{n} judged a peer dead (the only one that died is {holder})"
        );
        let m = env.sb().state.speaker_metrics(n);
        assert_eq!(
            metric_sum(&m, "ferrolb_memberlist_peers", Some(("state", "dead"))),
            1.0,
            "{n} counts {holder} dead"
        );
    }
}

#[test]
fn with_twenty_two_nodes_each_speaker_watches_a_few_and_a_crashed_holder_has_one_successor() {
    let nodes = 22;
    let (env, holder) = setup_nodes(nodes, 30);
    // Each speaker sends its heartbeats to four observers only, not to 21 peers.
    for n in env.nodes() {
        let m = env.sb().state.speaker_metrics(&n);
        let observers = metric_sum(&m, "ferrolb_memberlist_ring", Some(("role", "observers")));
        assert_eq!(observers, ferrolb_speaker::membership::detector::OBSERVERS as f64, "{n}'s observers");
    }
    let others: Vec<String> = env.nodes().into_iter().filter(|n| *n != holder).collect();
    env.sb().signal_pod(&format!("speaker/{holder}"), "-KILL", true).unwrap();
    let (new, took) = new_holder(&env, &holder);
    eprintln!("SIGKILL of {holder} among {nodes} nodes: {new} answers after {took:?} (Lease: 30 s)");
    assert!(took < Duration::from_secs(10), "took over by heartbeats, not Lease expiry ({took:?})");
    // Every node learnt it (by its observers' broadcasts, most never heard from it),
    // so they all agree on one successor: exactly one node answers.
    eventually("every other node counts the holder dead", Duration::from_secs(10), || {
        others
            .iter()
            .all(|n| {
                let m = env.sb().state.speaker_metrics(n);
                metric_sum(&m, "ferrolb_memberlist_peers", Some(("state", "dead"))) == 1.0
            })
            .then_some(())
    });
    let answers = env.answering(5);
    assert!(!answers.is_empty() && answers.iter().all(|h| *h == new), "only {new} answers: {answers:?}");
    eventually("the status names the successor", Duration::from_secs(10), || {
        (env.holder_status().as_deref() == Some(new.as_str())).then_some(())
    });
}

/// SIGTERM the holder (then run `after_signal`), then check that the new holder answers and that the old one
/// waited for its claim before it stopped answering.
fn hands_over(env: &mut Env, holder: &str, after_signal: impl FnOnce(&Env)) {
    let heard = env.metric(holder, "ferrolb_memberlist_heartbeats_received_total");
    let pid = env.sb().signal_pod(&format!("speaker/{holder}"), "-TERM", true).unwrap();
    after_signal(env);
    let (new, took) = new_holder(env, holder);
    eprintln!("SIGTERM of {holder} (had received {heard} heartbeats): {new} answers after {took:?}");
    eventually("the stopped speaker exits", Duration::from_secs(10), || (!process_running(pid)).then_some(()));
    let reasons = eventually("the stopped speaker says how its leave went", Duration::from_secs(10), || {
        let r = env.node_event_reasons(holder);
        r.iter().any(|r| r == event::HANDED_OVER || r == event::HANDOVER_INCOMPLETE).then_some(r)
    });
    assert!(
        reasons.iter().any(|r| r == event::HANDED_OVER) && !reasons.iter().any(|r| r == event::HANDOVER_INCOMPLETE),
        "the new holder claimed the IP before the old one stopped: {reasons:?}"
    );
}

#[test]
fn a_stopping_speaker_hands_its_ips_over_before_it_stops_answering() {
    let (mut env, holder) = setup(30);
    eventually("the holder hears both peers", Duration::from_secs(10), || {
        (env.metric(&holder, "ferrolb_memberlist_heartbeats_received_total") >= 10.0).then_some(())
    });
    hands_over(&mut env, &holder, |_| {});
}

/// A holder that has heard no peer yet (stopped right after it started) counts them
/// through their Leases and still waits for the new holder's claim. Here its inbound
/// heartbeats are dropped until the moment it is told to stop.
#[test]
fn a_speaker_that_heard_no_peer_yet_still_hands_over() {
    const DEAF: &str = "table inet flbtest {\n chain input {\n  type filter hook input priority 0;\n  udp dport 7946 counter drop\n }\n}\n";
    let (mut env, holder) = setup_with(30, |env| {
        for n in env.nodes() {
            nft(env, &n, DEAF);
        }
    });
    for n in env.nodes().iter().filter(|n| **n != holder) {
        nft(&env, n, "delete table inet flbtest\n");
    }
    assert_eq!(env.metric(&holder, "ferrolb_memberlist_heartbeats_received_total"), 0.0, "the holder heard nobody");
    eventually("the holder counts both peers unheard", Duration::from_secs(10), || {
        let m = env.sb().state.speaker_metrics(&holder);
        (metric_sum(&m, "ferrolb_memberlist_peers", Some(("state", "unheard"))) == 2.0).then_some(())
    });
    hands_over(&mut env, &holder, |env| nft(env, &holder, "delete table inet flbtest\n"));
}

#[test]
fn a_node_that_loses_its_link_gives_its_ips_up_and_does_not_take_them_back() {
    let (env, holder) = setup(30);
    let port = holder.replace("node-", "n");
    let sw = format!("flb{}sw", env.sb().state.suffix);
    let link = |state: &str| {
        assert!(Command::new("ip").args(["-n", &sw, "link", "set", &port, state]).status().unwrap().success())
    };
    link("down");
    let (new, took) = new_holder(&env, &holder);
    eprintln!("link of {holder} down: {new} answers after {took:?}");
    assert!(took < Duration::from_secs(10), "by heartbeats, not the 30 s Lease ({took:?})");
    eventually("the cut-off node notices it cannot announce", Duration::from_secs(10), || {
        (env.metric(&holder, "ferrolb_speaker_interfaces") == 0.0).then_some(())
    });
    link("up");
    let received = env.metric(&holder, "ferrolb_memberlist_heartbeats_received_total");
    eventually("the returning node hears its peers again", Duration::from_secs(10), || {
        (env.metric(&holder, "ferrolb_memberlist_heartbeats_received_total") >= received + 20.0).then_some(())
    });
    let answers = env.answering(3);
    assert!(
        !answers.is_empty() && answers.iter().all(|h| *h == new),
        "only {new} answers after the link returns: {answers:?}"
    );
    assert_eq!(env.holder_status().as_deref(), Some(new.as_str()));
}

fn nft(env: &Env, node: &str, script: &str) {
    if let Err(e) = ferrolb_e2e::client::netns_nft(&env.netns_of(node), script) {
        panic!("nft in {node}: {e}: {script}");
    }
}

fn nft_counter(env: &Env, node: &str) -> u64 {
    let out = env.sb().state.node_exec(node, &["nft", "list", "table", "inet", "flbtest"]).unwrap_or_default();
    out.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}

#[test]
fn one_lossy_link_between_two_speakers_moves_nothing() {
    let (env, holder) = setup(30);
    let other = env.nodes().into_iter().find(|n| *n != holder).unwrap();
    let ip_of = |n: &str| env.sb().state.nodes.iter().find(|x| x.name == n).unwrap().interfaces[0].ipv4.clone();
    let before: Vec<(f64, f64)> = env
        .nodes()
        .iter()
        .map(|n| {
            (env.metric(n, "ferrolb_speaker_takeovers_total"), env.metric(n, "ferrolb_memberlist_peers_dead_total"))
        })
        .collect();
    // Every heartbeat between the holder and one other node is lost, both ways.
    for (at, from) in [(&holder, &other), (&other, &holder)] {
        nft(
            &env,
            at,
            &format!(
                "table inet flbtest {{\n chain input {{\n  type filter hook input priority 0;\n  ip saddr {} udp dport 7946 counter drop\n }}\n}}\n",
                ip_of(from)
            ),
        );
    }
    // Forty lost heartbeats each way: over ten suspect-after windows without direct contact.
    eventually("heartbeats dropped on the lossy link", Duration::from_secs(30), || {
        (nft_counter(&env, &holder) >= 40 && nft_counter(&env, &other) >= 40).then_some(())
    });
    let after: Vec<(f64, f64)> = env
        .nodes()
        .iter()
        .map(|n| {
            (env.metric(n, "ferrolb_speaker_takeovers_total"), env.metric(n, "ferrolb_memberlist_peers_dead_total"))
        })
        .collect();
    assert_eq!(before, after, "no takeover and nobody judged dead (takeovers, peers dead per node)");
    assert_eq!(env.holder_status().as_deref(), Some(holder.as_str()));
    assert_eq!(env.answering(2), vec![holder.clone(), holder.clone()]);
}

#[test]
fn speakers_keep_announcing_while_the_api_server_is_unreachable() {
    // 3 s Leases: without heartbeats every speaker would see every Lease expire and withdraw.
    let (env, holder) = setup(3);
    let takeovers: Vec<f64> = env.nodes().iter().map(|n| env.metric(n, "ferrolb_speaker_takeovers_total")).collect();
    let failures = |n: &str| env.metric(n, "ferrolb_speaker_lease_renewal_failures_total");
    let failed_before: Vec<f64> = env.nodes().iter().map(|n| failures(n)).collect();
    env.cut_speakers_from_api("reject with tcp reset");
    eventually(
        "every speaker failed to renew its Lease for longer than the Lease lasts",
        Duration::from_secs(30),
        || env.nodes().iter().zip(&failed_before).all(|(n, b)| failures(n) >= b + 5.0).then_some(()),
    );
    let answers = env.answering(2);
    assert_eq!(answers, vec![holder.clone(), holder.clone()], "fail-static: {holder} still answers");
    let now: Vec<f64> = env.nodes().iter().map(|n| env.metric(n, "ferrolb_speaker_takeovers_total")).collect();
    assert_eq!(takeovers, now, "nothing moved while the API was unreachable");
}

/// A speaker restarted with another heartbeat key (its Secret replaced, the Pod
/// deleted): both sides fall back to judging each other by Lease, so every IP is
/// answered by exactly one node and no ServiceL2Status changes hands, and the
/// mismatch is counted and raised as a Warning Event.
#[test]
fn a_speaker_with_another_heartbeat_key_never_makes_two_nodes_answer() {
    let (mut env, holder) = setup(30);
    let odd = env.nodes().into_iter().find(|n| *n != holder).unwrap();
    let c = env.sb().client.clone();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.clone(), NS);
    let patch = json!({"stringData": {"secretkey": "another-key-0123456789abcdef0123"}});
    env.rt
        .block_on(secrets.patch(
            "ferrolb-memberlist",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        ))
        .unwrap();
    let pod = format!("speaker/{odd}");
    let sb = env.sb.as_mut().unwrap();
    env.rt.block_on(sb.delete_pod(&pod)).unwrap();
    env.rt.block_on(env.sb().until_ready(&format!("ferrolb-speaker-{odd}"))).unwrap();
    // Witness: each side counts the other mismatched, not dead.
    let mismatched = |n: &str| {
        metric_sum(&env.sb().state.speaker_metrics(n), "ferrolb_memberlist_peers", Some(("state", "mismatched")))
    };
    eventually("the mismatch is seen on both sides", Duration::from_secs(15), || {
        env.nodes().iter().all(|n| mismatched(n) == if *n == odd { 2.0 } else { 1.0 }).then_some(())
    });
    for n in env.nodes() {
        let dead = metric_sum(&env.sb().state.speaker_metrics(&n), "ferrolb_memberlist_peers", Some(("state", "dead")));
        assert_eq!(dead, 0.0, "{n} judges nobody dead");
    }
    eventually("a Warning Event names the mismatch", Duration::from_secs(15), || {
        env.nodes()
            .iter()
            .any(|n| env.node_event_reasons(n).iter().any(|r| r == event::MEMBERLIST_KEY_MISMATCH))
            .then_some(())
    });
    // Twelve Services created while the keys differ.
    let ips: Vec<String> = (101..=112).map(|i| format!("198.51.100.{i}")).collect();
    env.rt.block_on(pool_and_advertisement(&c, "many", &["198.51.100.101-198.51.100.112"], "many")).unwrap();
    for i in 0..ips.len() {
        env.rt
            .block_on(ferrolb_e2e::sandbox::create(
                &Api::<Service>::namespaced(c.clone(), "default"),
                json!({"metadata": {"name": format!("s{i}"), "annotations": {"ferrolb.io/address-pool": "many"}},
                       "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
            ))
            .unwrap();
    }
    let statuses: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(c.clone(), NS);
    let announced = || {
        let list = env.rt.block_on(statuses.list(&Default::default())).ok()?;
        let mut by_svc = std::collections::BTreeMap::new();
        for s in list.items {
            let st = s.status.clone()?;
            if st.service_name.starts_with('s') && !st.node.is_empty() {
                by_svc.insert(st.service_name.clone(), (st.node, s.metadata.resource_version.unwrap_or_default()));
            }
        }
        (by_svc.len() == ips.len()).then_some(by_svc)
    };
    let before = eventually("all twelve announced", Duration::from_secs(30), announced);
    // Every IP: one node answers, asked three times.
    for (ip, nodes) in ips.iter().zip(env.answering_each(&ips, 3)) {
        let distinct: std::collections::BTreeSet<&String> = nodes.iter().collect();
        assert_eq!(distinct.len(), 1, "{ip} answered by exactly one node: {nodes:?}");
    }
    let after = announced().expect("still announced");
    let changed: Vec<_> =
        before.iter().filter(|(k, v)| after.get(*k) != Some(v)).map(|(k, v)| (k, v, after.get(k))).collect();
    assert!(changed.is_empty(), "no ServiceL2Status changed hands or was rewritten while the keys differ: {changed:?}");
}

/// The API server hangs (the speakers' packets to it are dropped: requests neither
/// answer nor fail). Writes time out and are counted, and planning never waits for
/// them: a second node failure during the hang is handled like the first. Pools are
/// advertised so that one node (`survivor`) takes over both times: first the IPs of
/// one node, then, while its status writes for those hang, the IPs of the other.
#[test]
fn a_hanging_api_server_delays_no_takeover() {
    let (env, _) = setup(30);
    let nodes = env.nodes();
    let (first, survivor, second) = (nodes[0].clone(), nodes[1].clone(), nodes[2].clone());
    let c = env.sb().client.clone();
    let ips = |base: u8| (0..12u8).map(|i| format!("198.51.100.{}", base + i)).collect::<Vec<_>>();
    let (left, right) = (ips(110), ips(130));
    env.rt.block_on(async {
        // Only the advertisements below: the setup's advertises every pool everywhere.
        Api::<ferrolb_crds::L2Advertisement>::namespaced(c.clone(), NS)
            .delete("all", &Default::default())
            .await
            .unwrap();
        for (pool, first_ip, last_ip, on) in
            [("left", &left[0], &left[11], [&first, &survivor]), ("right", &right[0], &right[11], [&survivor, &second])]
        {
            ferrolb_e2e::sandbox::create(
                &Api::<ferrolb_crds::IPAddressPool>::namespaced(c.clone(), NS),
                json!({"apiVersion": ferrolb_crds::API_VERSION, "kind": "IPAddressPool", "metadata": {"name": pool},
                       "spec": {"addresses": [format!("{first_ip}-{last_ip}")], "autoAssign": false}}),
            )
            .await
            .unwrap();
            ferrolb_e2e::sandbox::create(
                &Api::<ferrolb_crds::L2Advertisement>::namespaced(c.clone(), NS),
                json!({"apiVersion": ferrolb_crds::API_VERSION, "kind": "L2Advertisement", "metadata": {"name": pool},
                       "spec": {"ipAddressPools": [pool], "nodeSelectors": [{"matchExpressions": [
                           {"key": "kubernetes.io/hostname", "operator": "In", "values": on}]}]}}),
            )
            .await
            .unwrap();
            for i in 0..12 {
                ferrolb_e2e::sandbox::create(
                    &Api::<Service>::namespaced(c.clone(), "default"),
                    json!({"metadata": {"name": format!("{pool}{i}"), "annotations": {"ferrolb.io/address-pool": pool}},
                           "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
                )
                .await
                .unwrap();
            }
        }
    });
    let statuses: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(c.clone(), NS);
    let holders = || -> Option<std::collections::BTreeMap<String, String>> {
        let list = env.rt.block_on(statuses.list(&Default::default())).ok()?;
        let m: std::collections::BTreeMap<String, String> = list
            .items
            .into_iter()
            .filter_map(|s| s.status)
            .filter(|s| {
                !s.node.is_empty() && (s.service_name.starts_with("left") || s.service_name.starts_with("right"))
            })
            .map(|s| (s.service_name, s.node))
            .collect();
        (m.len() == 24).then_some(m)
    };
    let before = eventually("all 24 announced", Duration::from_secs(30), holders);
    // The election is a hash of fixed names and IPs: the same split every run.
    assert!(before.iter().any(|(s, n)| s.starts_with("left") && *n == first), "{first} holds a left IP: {before:?}");
    assert!(
        before.iter().any(|(s, n)| s.starts_with("right") && *n == second),
        "{second} holds a right IP: {before:?}"
    );
    // The API server stops answering the speakers: their packets to it vanish.
    env.cut_speakers_from_api("drop");
    let timeouts = |n: &str| {
        metric_sum(&env.sb().state.speaker_metrics(n), "ferrolb_speaker_api_failures_total", Some(("kind", "timeout")))
    };
    eventually("every speaker's API requests time out", Duration::from_secs(45), || {
        nodes.iter().all(|n| timeouts(n) >= 1.0).then_some(())
    });
    // First failure: the survivor takes the left pool (and writes statuses that hang).
    env.sb().signal_pod(&format!("speaker/{first}"), "-KILL", true).unwrap();
    eventually("the survivor answers every left IP", Duration::from_secs(15), || {
        env.answering_each(&left, 1).iter().all(|a| *a == [survivor.clone()]).then_some(())
    });
    // Second failure, during the hang: the survivor takes the right pool too.
    env.sb().signal_pod(&format!("speaker/{second}"), "-KILL", true).unwrap();
    eventually("the survivor answers every right IP", Duration::from_secs(15), || {
        env.answering_each(&right, 1).iter().all(|a| *a == [survivor.clone()]).then_some(())
    });
}
