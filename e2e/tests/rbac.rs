//! The chart installed into the emulator, and the real binaries running under its
//! RBAC. The chart is rendered with Helm's engine and applied with real kubectl; the
//! emulator authenticates the controller and the speakers as the chart's
//! ServiceAccounts and authorizes every request against the ClusterRoles, Roles and
//! bindings kubectl stored. A scenario exercises allocation, announcement, traffic,
//! failover and shutdown; then every call must have been allowed, and every permission
//! granted must have been used. Taking a permission away must stop the component
//! at exactly that call, and giving it back must heal it.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use ferrolb_e2e::sandbox::{CONTROLLER_SA, NS, Options, SPEAKER_SA, Sandbox, State, chart_values};
use ferrolb_e2e::topology::privileged;
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams};
use serde_json::Value;

type Perm = (String, String, String);

/// The rules of the roles bound to `sa`, flattened to (group, resource, verb).
fn granted(docs: &[Value], sa: &str) -> BTreeSet<Perm> {
    let bound: BTreeSet<(String, String)> = docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRoleBinding" | "RoleBinding")))
        .filter(|d| d["subjects"].as_array().is_some_and(|s| s.iter().any(|s| s["name"] == sa)))
        .map(|d| {
            (d["roleRef"]["kind"].as_str().unwrap().to_string(), d["roleRef"]["name"].as_str().unwrap().to_string())
        })
        .collect();
    let mut out = BTreeSet::new();
    for d in docs {
        let key =
            (d["kind"].as_str().unwrap_or("").to_string(), d["metadata"]["name"].as_str().unwrap_or("").to_string());
        if !bound.contains(&key) {
            continue;
        }
        for r in d["rules"].as_array().unwrap() {
            let list = |k: &str| -> Vec<String> {
                r[k].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
            };
            for g in list("apiGroups") {
                for res in list("resources") {
                    for v in list("verbs") {
                        out.insert((g.clone(), res.clone(), v));
                    }
                }
            }
        }
    }
    out
}

fn kubectl(st: &State, args: &[&str]) -> String {
    let out = Command::new("kubectl").env("KUBECONFIG", &st.kubeconfig).args(args).output().expect("kubectl");
    let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubectl {args:?}:\n{o}\n{e}");
    o.into_owned()
}

/// `apply` flags: kubectl before 1.29 validates client-side from OpenAPI v2, which the
/// emulator does not serve.
fn apply_args(file: &str) -> Vec<String> {
    let mut a = vec!["apply".to_string(), "-f".into(), file.into()];
    if ferrolb_e2e::chart::kubectl_minor() < 29 {
        a.push("--validate=false".into());
    }
    a
}

#[test]
fn the_chart_rbac_runs_the_binaries_and_grants_exactly_what_they_call() {
    assert!(privileged(), "network tests need root (CI runs .ci/run as root)");
    // With a BGP router, so the speakers' BGP calls (ServiceBGPStatus) happen too.
    let opts = Options {
        nodes: 2,
        rbac: true,
        start_components: false,
        bgp: Some(ferrolb_e2e::router::Daemon::Frr),
        ..Options::default()
    };
    let docs = ferrolb_e2e::chart::documents(&ferrolb_e2e::chart::render("ferrolb", NS, &chart_values(&opts)).unwrap());
    let ctl_rules = granted(&docs, CONTROLLER_SA);
    let spk_rules = granted(&docs, SPEAKER_SA);
    assert!(!ctl_rules.is_empty() && !spk_rules.is_empty(), "the chart binds roles to both ServiceAccounts");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut sb = rt.block_on(Sandbox::up_opts(&opts, dir.path())).expect("sandbox");
    let st = sb.state.clone();

    // The sandbox installed the chart as an operator would (Helm's engine, then kubectl):
    // its objects are in the API before any Pod runs.
    let out = kubectl(
        &st,
        &[
            "get",
            "-n",
            NS,
            "-o",
            "name",
            "serviceaccount/ferrolb-controller",
            "clusterrole/ferrolb-controller",
            "rolebinding/ferrolb-speaker",
            "deployment/ferrolb-controller",
            "daemonset/ferrolb-speaker",
            "poddisruptionbudget/ferrolb-controller",
        ],
    );
    assert_eq!(out.lines().count(), 6, "{out}");
    rt.block_on(sb.start_components()).unwrap();

    // A pool, an advertisement, a backend and two Services, as a user would write them.
    let user_objects = format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: p, namespace: {NS}}}\n\
         spec: {{addresses: [198.51.100.100/30]}}\n---\n\
         apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: all, namespace: {NS}}}\n---\n\
         apiVersion: ferrolb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: r, namespace: {NS}}}\n\
         spec: {{myASN: 64513, peerASN: 64512, peerAddress: 198.51.100.1, connectTime: 1s}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: r-md5, namespace: {NS}}}\ntype: kubernetes.io/basic-auth\n\
         stringData: {{password: s3cret}}\n---\n\
         apiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: all, namespace: {NS}}}\n---\n\
         apiVersion: ferrolb.io/v1beta1\nkind: BFDProfile\nmetadata: {{name: fast, namespace: {NS}}}\n\
         spec: {{receiveInterval: 100}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: web-1, labels: {{app: web}}}}\n\
         spec: {{nodeName: node-1, containers: [{{name: c, image: any, ports: [{{containerPort: 8080}}]}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\n\
         spec: {{type: LoadBalancer, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: gone}}\n\
         spec: {{type: LoadBalancer, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}\n"
    );
    let objects = dir.path().join("objects.yaml");
    std::fs::write(&objects, user_objects).unwrap();
    kubectl(&st, &apply_args(objects.to_str().unwrap()).iter().map(String::as_str).collect::<Vec<_>>());

    let c = sb.client.clone();
    let holder_of = |svc: &str| {
        let api: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(c.clone(), NS);
        rt.block_on(api.get_opt(&format!("default.{svc}"))).ok().flatten()?.status.map(|s| s.node)
    };
    let ip_of = |svc: &str| {
        let out = kubectl(&st, &["get", "svc", svc, "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"]);
        Some(out.trim().to_string()).filter(|s| !s.is_empty())
    };
    let ip = eventually("web gets an IP", Duration::from_secs(20), || ip_of("web"));
    let body = eventually("curl through the VIP", Duration::from_secs(20), || {
        st.client().curl(&format!("http://{ip}/"), Duration::from_secs(2))
    });
    assert!(body.contains("web-1"), "{body}");
    let holder = eventually("web announced", Duration::from_secs(20), || holder_of("web"));
    eventually("gone announced", Duration::from_secs(20), || holder_of("gone"));
    eventually("gone advertised over BGP by both nodes", Duration::from_secs(20), || {
        let out = kubectl(&st, &["get", "-n", NS, "servicebgpstatuses", "-o", "name"]);
        (out.lines().filter(|l| l.contains("default.gone.")).count() == 2).then_some(())
    });
    // The BGP objects are read and judged (their Valid conditions written).
    for kind in ["bgppeer/r", "bgpadvertisement/all", "bfdprofile/fast"] {
        eventually(&format!("{kind} Valid"), Duration::from_secs(20), || {
            let out = kubectl(&st, &["get", "-n", NS, kind, "-o", "jsonpath={.status.conditions[0].status}"]);
            (out.trim() == "True").then_some(())
        });
    }
    // A Service that goes away: the controller releases its IP, the announcer removes its status.
    kubectl(&st, &["delete", "svc", "gone"]);
    eventually("gone's status removed", Duration::from_secs(20), || holder_of("gone").is_none().then_some(()));
    eventually("gone's BGP statuses removed", Duration::from_secs(20), || {
        let out = kubectl(&st, &["get", "-n", NS, "servicebgpstatuses", "-o", "name"]);
        (!out.contains("default.gone.")).then_some(())
    });

    // Take the controller's right to write Service status away: a new Service stays
    // pending, refused at exactly that call; give it back and the Service gets its IP.
    let ctl_user = format!("system:serviceaccount:{NS}:{CONTROLLER_SA}");
    let role = docs.iter().find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == CONTROLLER_SA).unwrap();
    let (idx, rest): (usize, Vec<Value>) = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .find_map(|(i, r)| {
            let res = r["resources"].as_array()?;
            res.contains(&serde_json::json!("services/status"))
                .then(|| (i, res.iter().filter(|x| *x != "services/status").cloned().collect()))
        })
        .expect("the controller's ClusterRole grants services/status");
    let patch = serde_json::json!([{"op": "replace", "path": format!("/rules/{idx}/resources"), "value": rest}]);
    kubectl(&st, &["patch", "clusterrole", CONTROLLER_SA, "--type=json", "-p", &patch.to_string()]);
    let late = dir.path().join("late.yaml");
    std::fs::write(
        &late,
        "apiVersion: v1\nkind: Service\nmetadata: {name: late}\n\
         spec: {type: LoadBalancer, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n",
    )
    .unwrap();
    kubectl(&st, &apply_args(late.to_str().unwrap()).iter().map(String::as_str).collect::<Vec<_>>());
    let emulator = sb.emulator.clone();
    eventually("the controller is refused its status write", Duration::from_secs(20), || {
        emulator
            .access_log()
            .iter()
            .any(|a| {
                !a.allowed
                    && a.user.as_deref() == Some(ctl_user.as_str())
                    && (a.resource.as_str(), a.verb.as_str()) == ("services/status", "patch")
            })
            .then_some(())
    });
    assert_eq!(ip_of("late"), None, "no IP without the permission");
    eventually("the controller counts the refusal", Duration::from_secs(10), || {
        (st.controller_metric("ferrolb_controller_reconcile_errors_total", Some(("kind", "forbidden"))) >= 1.0)
            .then_some(())
    });
    let restore = dir.path().join("role.yaml");
    std::fs::write(&restore, serde_json::to_string(role).unwrap()).unwrap();
    kubectl(&st, &apply_args(restore.to_str().unwrap()).iter().map(String::as_str).collect::<Vec<_>>());
    eventually("late gets an IP once allowed again", Duration::from_secs(60), || ip_of("late"));

    // Failover and graceful shutdown of a speaker and of the controller.
    sb.signal_pod(&format!("speaker/{holder}"), "-TERM", true).unwrap();
    eventually("web moved", Duration::from_secs(20), || holder_of("web").filter(|h| *h != holder));
    let _g = rt.enter();
    rt.block_on(Api::<Service>::namespaced(c.clone(), "default").delete("late", &DeleteParams::default())).unwrap();
    drop(sb); // SIGTERM to everything: Lease releases and status removal are recorded too.

    let spk_user = format!("system:serviceaccount:{NS}:{SPEAKER_SA}");
    let log = emulator.access_log();
    let used = |user: &str| -> BTreeSet<Perm> {
        log.iter()
            .filter(|a| a.allowed && a.user.as_deref() == Some(user))
            .map(|a| (a.group.clone(), a.resource.clone(), a.verb.clone()))
            .collect()
    };
    let denied: Vec<_> = log
        .iter()
        .filter(|a| !a.allowed && a.user.as_deref() == Some(spk_user.as_str()))
        .chain(log.iter().filter(|a| {
            !a.allowed
                && a.user.as_deref() == Some(ctl_user.as_str())
                && (a.resource.as_str(), a.verb.as_str()) != ("services/status", "patch")
        }))
        .collect();
    assert!(denied.is_empty(), "refused under the chart's RBAC: {denied:?}");
    for (who, used, rules) in [("controller", used(&ctl_user), &ctl_rules), ("speaker", used(&spk_user), &spk_rules)] {
        assert!(!used.is_empty(), "{who} was seen");
        // Real code paths this scenario does not reach: kube's event Recorder patches an
        // event when the same one repeats (its series count); the controller renews the
        // webhook's certificate (updates its Secret) 30 days before it expires.
        let rare: BTreeSet<Perm> = [("events.k8s.io", "events", "patch"), ("", "secrets", "update")]
            .iter()
            .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
            .collect();
        let unused: Vec<&Perm> = rules.difference(&used).filter(|p| !rare.contains(*p)).collect();
        assert!(unused.is_empty(), "{who}'s RBAC grants what it never calls: {unused:?}");
    }
}

/// RBAC lets every speaker write every Lease in the namespace (a Role cannot say "the
/// Lease of your own node"); the chart's ValidatingAdmissionPolicy narrows that, from
/// the node name in each speaker Pod's token: the speakers still hold their own Leases,
/// but node-1's token can neither take the controller's leader Lease nor touch
/// node-2's, each refusal naming both. Real kubectl, with the emulator's RBAC and
/// policy evaluation in force.
#[test]
fn a_speaker_may_write_only_its_own_nodes_lease() {
    use ferrolb_e2e::harness::Harness;
    use k8s_openapi::api::coordination::v1::Lease;
    assert!(privileged(), "network tests need root (CI runs .ci/run as root)");
    let h = Harness::up(&Options { nodes: 2, rbac: true, ..Options::default() });
    let st = h.sb().state.clone();
    let api: Api<Lease> = Api::namespaced(h.sb().client.clone(), NS);
    let is_speaker =
        |l: &Lease| l.metadata.labels.as_ref().is_some_and(|m| m.contains_key("app.kubernetes.io/component"));
    // Witness: both speakers took their Leases through the policy, and a controller leads.
    let leader = eventually("speaker Leases held and a leader elected", Duration::from_secs(30), || {
        let leases = h.rt.block_on(api.list(&Default::default())).ok()?.items;
        let held = |n: &str| {
            leases.iter().any(|l| {
                l.metadata.name.as_deref() == Some(n) && is_speaker(l) && {
                    l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(n)
                }
            })
        };
        let leader =
            leases.iter().find(|l| !is_speaker(l) && l.spec.as_ref().is_some_and(|s| s.holder_identity.is_some()));
        (held("node-1") && held("node-2")).then_some(())?;
        leader.and_then(|l| l.metadata.name.clone())
    });
    let token =
        std::fs::read_to_string(st.run_dir.join("serviceaccounts").join(SPEAKER_SA).join("node-1/token")).unwrap();
    // node-1's speaker, as its token authenticates it: a merge patch (the speakers may
    // patch Leases, not get them).
    let as_node1 = {
        let kc = kube::config::Kubeconfig::read_from(&st.kubeconfig).unwrap();
        let mut cfg = h.rt.block_on(kube::Config::from_custom_kubeconfig(kc, &Default::default())).unwrap();
        cfg.auth_info.token = Some(token.trim().to_string().into());
        let _g = h.rt.enter();
        kube::Client::try_from(cfg).unwrap()
    };
    let spk: Api<Lease> = Api::namespaced(as_node1, NS);
    let annotate = |lease: &str| {
        let patch = serde_json::json!({"metadata": {"annotations": {"example.com/touched": "yes"}}});
        match h.rt.block_on(spk.patch(lease, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))) {
            Ok(_) => (true, String::new()),
            Err(kube::Error::Api(e)) => (false, format!("{} {}", e.code, e.message)),
            Err(e) => (false, e.to_string()),
        }
    };
    let (ok, err) = annotate("node-1");
    assert!(ok, "its own Lease: {err}");
    for other in [leader.as_str(), "node-2"] {
        let (ok, err) = annotate(other);
        assert!(!ok, "node-1's speaker wrote the Lease {other}");
        assert!(
            err.contains(&format!("a speaker may write only the Lease of its own node node-1, not {other}")),
            "{other}: {err}"
        );
        assert!(err.starts_with("403 ") && err.contains("ValidatingAdmissionPolicy 'ferrolb-speaker-leases'"), "{err}");
    }
    let untouched = h.rt.block_on(api.get(&leader)).unwrap();
    assert!(!untouched.metadata.annotations.unwrap_or_default().contains_key("example.com/touched"));
}
