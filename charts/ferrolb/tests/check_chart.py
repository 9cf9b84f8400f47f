"""Render and lint the chart with Helm's own engine (helm-python-sdk) and validate
every rendered manifest against the Kubernetes OpenAPI schemas (kubernetes-validate).
Run by `cargo test` (e2e/tests/chart.rs) with the venv `scripts/install-deps` makes."""

import json
import pathlib
import re
import sys

import helm_python
import kubernetes_validate
import yaml

CHART = pathlib.Path(__file__).resolve().parents[1]
K8S = "1.33"
failures = []
passed = 0


def check(name, fn):
    global passed
    try:
        fn()
        passed += 1
        print(f"ok   {name}")
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        failures.append(name)
        print(f"FAIL {name}: {e}")


def render(values):
    chart = helm_python.Chart.load(str(CHART))
    return chart.render(values=values, name="lb")


def docs(rendered):
    out = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                out.append((path, d))
    return out


ALL_ON = {
    "loadBalancerClass": "example.com/lb",
    "speaker": {"forwarding": "nodeport", "revertive": True, "priorityClassName": "system-node-critical"},
    "controller": {"priorityClassName": "system-cluster-critical", "nodeSelector": {"kubernetes.io/os": "linux"}},
    "prometheus": {"labels": {"release": "kube-prometheus-stack"}, "serviceMonitor": {"enabled": True},
                   "podMonitor": {"enabled": True, "bearerTokenSecret": {"name": "prom-token", "key": "token"}},
                   "prometheusRule": {"enabled": True}},
    "metrics": {"secure": True, "tlsSecret": "metrics-tls", "reader": {"serviceAccount": "prometheus", "namespace": "monitoring"}},
    "samples": {"pool": {"enabled": True, "addresses": ["198.51.100.240/28"]}, "advertisement": {"enabled": True}},
    "grafana": {"dashboard": {"enabled": True}},
    "metallbCompat": {"enabled": True, "namespace": "lb-old", "metrics": True},
    "webhook": {"certManager": {"enabled": True}},
    "networkPolicy": {"enabled": True, "apiServerPorts": [6443],
                      "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
}


def lint_is_clean():
    r = helm_python.lint(str(CHART), strict=True)
    bad = [m for m in r.get("messages", []) if m.get("severity", 0) >= 2]
    assert not r.get("errors") and not bad, json.dumps(r, indent=1)


def validate_all(values):
    def run():
        n = 0
        for path, d in docs(render(values)):
            if d["apiVersion"].startswith(("monitoring.coreos.com", "ferrolb.io", "cert-manager.io")):
                continue
            kubernetes_validate.validate(d, K8S, strict=True)
            n += 1
        assert n >= 10, f"only {n} built-in objects rendered"
    return run


def kinds(values):
    return {(d["kind"], d["metadata"]["name"]) for _, d in docs(render(values))}


def defaults_render_the_components():
    k = kinds({})
    for want in [("Deployment", "lb-ferrolb-controller"), ("DaemonSet", "lb-ferrolb-speaker"),
                 ("PodDisruptionBudget", "lb-ferrolb-controller"), ("ClusterRole", "lb-ferrolb-speaker"),
                 ("Role", "lb-ferrolb-controller"), ("Service", "lb-ferrolb-controller-metrics")]:
        assert want in k, f"{want} missing from {sorted(k)}"
    assert not any(kind in ("ServiceMonitor", "PrometheusRule", "IPAddressPool") for kind, _ in k), "optional parts are off by default"


def crds_are_the_generated_ones():
    files = sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml"))
    assert files == sorted([
        "ipaddresspools.ferrolb.io.yaml", "l2advertisements.ferrolb.io.yaml", "servicel2statuses.ferrolb.io.yaml",
        "bgppeers.ferrolb.io.yaml", "bgpadvertisements.ferrolb.io.yaml", "communities.ferrolb.io.yaml",
        "servicebgpstatuses.ferrolb.io.yaml", "bfdprofiles.ferrolb.io.yaml",
    ]), files
    generated = {}
    for p in (CHART / "files" / "crds").glob("*.yaml"):
        crd = [d for d in yaml.safe_load_all(p.read_text()) if d][0]
        kubernetes_validate.validate(crd, K8S, strict=True)
        generated[crd["metadata"]["name"]] = crd
    # Installed and upgraded with the release, kept by helm uninstall; off on request.
    rendered = {d["metadata"]["name"]: d for _, d in docs(render({})) if d["kind"] == "CustomResourceDefinition"}
    assert rendered == generated, sorted(rendered)
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in rendered.values())
    off = [d for _, d in docs(render({"crds": {"enabled": False}})) if d["kind"] == "CustomResourceDefinition"]
    assert off == [], "crds.enabled=false renders no CRD"


def speaker_capabilities_follow_forwarding():
    def caps(values):
        ds = [d for _, d in docs(render(values)) if d["kind"] == "DaemonSet"][0]
        c = ds["spec"]["template"]["spec"]["containers"][0]
        assert ds["spec"]["template"]["spec"]["hostNetwork"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        return c["securityContext"]["capabilities"]["add"], c["args"]
    add, args = caps({})
    assert add == ["NET_RAW"], add
    assert "--forwarding=kube-proxy" in args
    add, args = caps({"speaker": {"forwarding": "nodeport"}})
    assert add == ["NET_RAW", "NET_ADMIN"], add
    env = {"NODE_NAME"} <= {e["name"] for e in [d for _, d in docs(render({})) if d["kind"] == "DaemonSet"][0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env, "NODE_NAME from the downward API"


def typos_in_values_fail_at_install():
    for bad in [{"speaker": {"forwading": "nodeport"}}, {"speaker": {"forwarding": "iptables"}},
                {"controller": {"replicas": 0}}, {"log": {"format": "xml"}}]:
        try:
            render(bad)
        except helm_python.HelmError:
            continue
        raise AssertionError(f"values {bad} rendered without error")


def sample_pool_requires_addresses():
    try:
        render({"samples": {"pool": {"enabled": True}}})
    except helm_python.HelmError as e:
        assert "samples.pool.addresses" in str(e), str(e)
        return
    raise AssertionError("a sample pool without addresses rendered")


def lb_class_reaches_both_binaries():
    rendered = docs(render({"loadBalancerClass": "example.com/lb"}))
    for kind in ("Deployment", "DaemonSet"):
        d = [d for _, d in rendered if d["kind"] == kind][0]
        assert "--lb-class=example.com/lb" in d["spec"]["template"]["spec"]["containers"][0]["args"], kind


def metallb_compat_reaches_both_binaries_and_rbac():
    def parts(values):
        rendered = [d for _, d in docs(render(values))]
        args = {k: [d for d in rendered if d["kind"] == k][0]["spec"]["template"]["spec"]["containers"][0]["args"]
                for k in ("Deployment", "DaemonSet")}
        roles = [d for d in rendered if d["kind"] == "ClusterRole"]
        grants = [(r["metadata"]["name"], rule) for r in roles for rule in r["rules"] if rule["apiGroups"] == ["metallb.io"]]
        return args, grants
    args, grants = parts({})
    for kind, a in args.items():
        assert not any(x.startswith("--metallb-namespace") for x in a), (kind, a)
        assert "--metallb-metrics=false" in a, (kind, a)
    assert not grants, "no access to MetalLB's objects unless compat is on"
    args, grants = parts({"metallbCompat": {"enabled": True, "metrics": True}})
    for kind, a in args.items():
        assert "--metallb-namespace=metallb-system" in a and "--metallb-metrics=true" in a, (kind, a)
    assert sorted(n.rsplit("-", 1)[1] for n, _ in grants) == ["controller", "speaker"], grants
    for _, rule in grants:
        assert rule["verbs"] == ["list", "watch"], rule
        assert set(rule["resources"]) == {"ipaddresspools", "l2advertisements", "bgppeers", "bgpadvertisements",
                                          "communities", "bfdprofiles"}, rule


def webhook_parts_name_each_other():
    def parts(values):
        rendered = [d for _, d in docs(render(values))]
        vwc = [d for d in rendered if d["kind"] == "ValidatingWebhookConfiguration"]
        svc = [d for d in rendered if d["kind"] == "Service" and d["metadata"]["name"].endswith("-webhook")]
        args = [d for d in rendered if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
        return vwc, svc, args, rendered
    vwc, svc, args, rendered = parts({})
    assert len(vwc) == 1 and len(svc) == 1, "one configuration, one Service"
    hooks = vwc[0]["webhooks"]
    assert {h["failurePolicy"] for h in hooks} == {"Fail"}
    for h in hooks:
        ref = h["clientConfig"]["service"]
        assert (ref["name"], ref["namespace"]) == (svc[0]["metadata"]["name"], "default"), ref
        assert h["rules"][0]["apiGroups"] == ["ferrolb.io"], "ferrolb objects only"
    assert f"--webhook-service={svc[0]['metadata']['name']}" in args, args
    assert f"--webhook-configuration={vwc[0]['metadata']['name']}" in args, args
    role = [d for d in rendered if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-controller")][0]
    assert any(vwc[0]["metadata"]["name"] in r.get("resourceNames", []) for r in role["rules"]), "may patch its caBundle"
    vwc, svc, args, _ = parts({"webhook": {"enabled": False}})
    assert not vwc and not svc and "--webhook=false" in args
    vwc, _, args, _ = parts({"webhook": {"manageCertificate": False}})
    assert "annotations" not in vwc[0]["metadata"] and "--webhook-manage-cert=false" in args
    vwc, svc, args, rendered = parts({"webhook": {"certManager": {"enabled": True}}})
    cert = [d for d in rendered if d["kind"] == "Certificate"][0]
    assert vwc[0]["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"default/{cert['metadata']['name']}"
    assert f"{svc[0]['metadata']['name']}.default.svc" in cert["spec"]["dnsNames"]
    assert any(d["kind"] == "Issuer" for d in rendered) and "--webhook-manage-cert=false" in args
    role = [d for d in rendered if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-controller")][0]
    assert not any("validatingwebhookconfigurations" in r["resources"] for r in role["rules"]), "cert-manager patches it"
    _, _, _, rendered = parts({"webhook": {"certManager": {"enabled": True, "issuerRef": {"kind": "ClusterIssuer", "name": "ca"}}}})
    assert not any(d["kind"] == "Issuer" for d in rendered)


def network_policy_fences_the_controller():
    rendered = [d for _, d in docs(render(ALL_ON))]
    pol = [d for d in rendered if d["kind"] == "NetworkPolicy"]
    assert len(pol) == 1, "one NetworkPolicy, for the controller"
    spec = pol[0]["spec"]
    dep = [d for d in rendered if d["kind"] == "Deployment"][0]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= labels.items(), "selects the controller Pods"
    port = dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert spec["ingress"][0]["ports"] == [{"port": port, "protocol": "TCP"}], spec["ingress"]
    assert spec["ingress"][0]["from"] == ALL_ON["networkPolicy"]["metricsFrom"]
    assert {"port": 6443, "protocol": "TCP"} in spec["egress"][0]["ports"]
    assert not any(d["kind"] == "NetworkPolicy" for _, d in docs(render({}))), "off by default"


def release_named_ferrolb_gives_plain_names():
    chart = helm_python.Chart.load(str(CHART))
    names = set()
    for path, text in chart.render(values={}, name="ferrolb", namespace="ferrolb-system").items():
        if not path.endswith("NOTES.txt"):
            names |= {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(text) if d}
    assert ("ServiceAccount", "ferrolb-controller") in names and ("DaemonSet", "ferrolb-speaker") in names, sorted(names)


def memberlist_key_and_flags_reach_the_speakers():
    def rendered(values):
        out = [d for _, d in docs(render(values))]
        kind = lambda k: [d for d in out if d["kind"] == k]
        ds = kind("DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0]
        ctl = kind("Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        role = [r for r in kind("Role") if r["metadata"]["name"].endswith("-controller")][0]
        env = {e["name"]: e for e in ds["env"]}
        secrets = {d["metadata"]["name"]: d for d in kind("Secret")}
        return ds["args"], env, secrets, ds["ports"], ctl["args"], role["rules"]
    args, env, secrets, ports, ctl_args, rules = rendered({})
    assert {"--memberlist-port=7946", "--heartbeat-interval=50ms", "--suspect-after=200ms",
            "--memberlist-legacy-heartbeats=true"} <= set(args), args
    ref = env["FERROLB_MEMBERLIST_SECRET"]["valueFrom"]["secretKeyRef"]
    extra = env["FERROLB_MEMBERLIST_ADDITIONAL_SECRET"]["valueFrom"]["secretKeyRef"]
    assert (ref["key"], extra["name"], extra["key"], extra.get("optional")) == ("secretkey", ref["name"], "additionalkey", True)
    # No key is rendered (it would change with every `helm template`): the controller
    # makes the Secret the speakers read, and may create and read only that one.
    assert not secrets, list(secrets)
    assert f"--memberlist-secret-name={ref['name']}" in ctl_args, ctl_args
    assert {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [ref["name"]], "verbs": ["get"]} in rules, rules
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]} in rules, rules
    assert {"name": "memberlist", "containerPort": 7946, "protocol": "UDP"} in ports
    args, env, secrets, _, ctl_args, rules = rendered({"speaker": {"memberlist": {"enabled": False}}, "webhook": {"enabled": False}})
    assert "--memberlist-port=0" in args and "FERROLB_MEMBERLIST_SECRET" not in env and not secrets
    assert not any(a.startswith("--memberlist-secret-name") for a in ctl_args)
    assert not any("secrets" in r["resources"] for r in rules), rules
    args, env, secrets, _, ctl_args, _ = rendered({"speaker": {"memberlist": {"existingSecret": "mine", "legacyHeartbeats": False}}})
    assert env["FERROLB_MEMBERLIST_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "mine" and not secrets
    assert "--memberlist-legacy-heartbeats=false" in args
    assert not any(a.startswith("--memberlist-secret-name") for a in ctl_args), "the operator's Secret is theirs"
    try:
        render({"speaker": {"memberlist": {"suspectAfter": "300"}}})
    except helm_python.HelmError as e:
        assert "suspectAfter" in str(e), str(e)
        return
    raise AssertionError("a duration without unit rendered")


def alert_rules_pass_promtool_tests():
    import shutil
    import subprocess
    import tempfile
    rule = [d for _, d in docs(render(ALL_ON)) if d["kind"] == "PrometheusRule"][0]
    with tempfile.TemporaryDirectory() as tmp:
        rules = pathlib.Path(tmp) / "rules.yaml"
        rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
        shutil.copy(CHART / "tests" / "alerts_test.yaml", tmp)
        check = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        test = subprocess.run(["promtool", "test", "rules", "alerts_test.yaml"], cwd=tmp, capture_output=True, text=True)
        assert test.returncode == 0, test.stdout + test.stderr


def dashboard_and_alerts_use_only_exported_metrics():
    # docs/metrics.md is itself checked against what the binaries export (e2e/tests/prometheus.rs).
    doc = (CHART.parents[1] / "docs" / "metrics.md").read_text()
    known = set(re.findall(r"`(ferrolb_[a-z0-9_]+)`", doc))
    rendered = docs(render(ALL_ON))
    cm = [d for _, d in rendered if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")][0]
    dash = json.loads(cm["data"]["ferrolb.json"])
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    rule = [d for _, d in rendered if d["kind"] == "PrometheusRule"][0]
    exprs += [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    used = set()
    for e in exprs:
        for name in re.findall(r"ferrolb_[a-z0-9_]+", e):
            used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    unknown = sorted(used - known)
    assert not unknown, f"not exported: {unknown}"
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ["pool usage", "pending", "per node", "arp/ndp", "unanswered", "failovers"]:
        assert topic in titles, f"no panel about {topic}"


def containers_get_the_environment_the_sandbox_measures_with():
    # The sandbox and the benches run the binaries with e2e's CONTAINER_ENV; the
    # chart must give the containers the same, or the measured memory is not theirs.
    src = (CHART.parent.parent / "e2e" / "src" / "sandbox.rs").read_text()
    block = re.search(r"CONTAINER_ENV: &\[\(&str, &str\)\] = &\[(.*?)\];", src, re.S)
    assert block, "CONTAINER_ENV not found in e2e/src/sandbox.rs"
    want = dict(re.findall(r'\("([A-Z_]+)", "([^"]*)"\)', block.group(1)))
    assert want, "CONTAINER_ENV is empty"
    rendered = [d for _, d in docs(render({}))]
    for kind in ("Deployment", "DaemonSet"):
        c = [d for d in rendered if d["kind"] == kind][0]["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        for k, v in want.items():
            assert env.get(k) == v, f"{kind}: {k}={env.get(k)!r}, the sandbox uses {v!r}"


def workload(values, kind):
    return next(d for _, d in docs(render(values)) if d["kind"] == kind)


def probes_and_rollout_defaults():
    ds, dep = workload({}, "DaemonSet"), workload({}, "Deployment")
    spk = ds["spec"]["template"]["spec"]["containers"][0]
    ctl = dep["spec"]["template"]["spec"]["containers"][0]
    for c in (spk, ctl):
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", c
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz", c
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert spk["securityContext"]["capabilities"]["add"] == ["NET_RAW"]
    assert spk["securityContext"]["runAsUser"] == 0, "added capabilities work for root only"


def metrics_protection_reaches_flags_probes_rbac_and_monitors():
    def containers(values):
        r = [d for _, d in docs(render(values))]
        return r, [d["spec"]["template"]["spec"] for d in r if d["kind"] in ("Deployment", "DaemonSet")]

    # Default: plain HTTP, on the Pod's address from the downward API; no review rights.
    r, pods = containers({})
    for p in pods:
        c = p["containers"][0]
        assert "--metrics-secure=false" in c["args"] and "--metrics-bind-address=$(POD_IP)" in c["args"], c["args"]
        env = {e["name"]: e for e in c["env"]}
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert c["livenessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert not any("tokenreviews" in json.dumps(d) for d in r if d["kind"] == "ClusterRole")
    r, pods = containers({"metrics": {"bindAddress": "all"}})
    assert not any("--metrics-bind-address=$(POD_IP)" in p["containers"][0]["args"] for p in pods)

    # Secure: HTTPS probes, the mounted certificate, review rights for both, the reader role
    # bound to Prometheus, monitors scraping over HTTPS with a token.
    r, pods = containers(ALL_ON)
    for p in pods:
        c = p["containers"][0]
        assert "--metrics-secure=true" in c["args"] and "--metrics-tls-dir=/etc/ferrolb/metrics-tls" in c["args"]
        assert {c[k]["httpGet"]["scheme"] for k in ("startupProbe", "livenessProbe", "readinessProbe")} == {"HTTPS"}
        assert c["volumeMounts"] == [{"name": "metrics-tls", "mountPath": "/etc/ferrolb/metrics-tls", "readOnly": True}]
        assert p["volumes"] == [{"name": "metrics-tls", "secret": {"secretName": "metrics-tls"}}]
    roles = {d["metadata"]["name"]: d for d in r if d["kind"] == "ClusterRole"}
    for who in ("lb-ferrolb-controller", "lb-ferrolb-speaker"):
        rules = roles[who]["rules"]
        assert {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]} in rules, who
        assert {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]} in rules
    assert roles["lb-ferrolb-metrics-reader"]["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    crb = next(d for d in r if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"] == "lb-ferrolb-metrics-reader")
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}]
    sm = next(d for d in r if d["kind"] == "ServiceMonitor")["spec"]["endpoints"][0]
    assert sm["scheme"] == "https" and sm["bearerTokenFile"].endswith("/token") and sm["tlsConfig"] == {"insecureSkipVerify": True}
    pm = next(d for d in r if d["kind"] == "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert pm["scheme"] == "https" and pm["authorization"]["credentials"] == {"name": "prom-token", "key": "token"}
    bad = {"metrics": {"bindAddress": "everywhere"}}
    try:
        render(bad)
    except Exception as e:  # noqa: BLE001
        assert "bindAddress" in str(e), e
    else:
        raise AssertionError("metrics.bindAddress=everywhere rendered")


def lease_policy_names_the_speaker_and_its_namespace():
    r = [d for _, d in docs(render({}))]
    sa = next(d for d in r if d["kind"] == "ServiceAccount" and d["metadata"]["name"].endswith("-speaker"))
    ds = next(d for d in r if d["kind"] == "DaemonSet")
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    pol = next(d for d in r if d["kind"] == "ValidatingAdmissionPolicy")
    user = f"system:serviceaccount:{sa['metadata']['namespace']}:{sa['metadata']['name']}"
    assert pol["spec"]["matchConditions"][0]["expression"] == f"request.userInfo.username == '{user}'", pol
    assert pol["spec"]["failurePolicy"] == "Fail"
    b = next(d for d in r if d["kind"] == "ValidatingAdmissionPolicyBinding")
    assert b["spec"]["policyName"] == pol["metadata"]["name"] and b["spec"]["validationActions"] == ["Deny"]
    assert b["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": sa["metadata"]["namespace"]}
    off = kinds({"speaker": {"leasePolicy": {"enabled": False}}})
    assert not any(k in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding") for k, _ in off)


def overrides_reach_the_objects():
    values = {"fullnameOverride": "edge-lb",
              "controller": {"podLabels": {"team": "net"}, "podAnnotations": {"a": "b"},
                             "strategy": {"type": "Recreate"}, "securityContext": {"runAsUser": 1000}},
              "speaker": {"podAnnotations": {"c": "d"}, "updateStrategy": {"type": "OnDelete"},
                          "securityContext": {"privileged": True}}}
    k = kinds(values)
    assert ("DaemonSet", "edge-lb-speaker") in k and ("Deployment", "edge-lb-controller") in k, sorted(k)
    dep, ds = workload(values, "Deployment"), workload(values, "DaemonSet")
    tpl = dep["spec"]["template"]
    assert tpl["metadata"]["labels"]["team"] == "net" and tpl["metadata"]["annotations"] == {"a": "b"}, tpl["metadata"]
    assert dep["spec"]["selector"]["matchLabels"].get("team") is None, "extra pod labels stay out of the selector"
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    # Helm merges maps: the default keys stay unless set to null.
    sc = tpl["spec"]["containers"][0]["securityContext"]
    assert sc["runAsUser"] == 1000 and sc["readOnlyRootFilesystem"] is True, sc
    assert ds["spec"]["template"]["metadata"]["annotations"] == {"c": "d"}
    assert ds["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert ds["spec"]["template"]["spec"]["containers"][0]["securityContext"] == {"privileged": True}
    named = kinds({"nameOverride": "lbx"})
    assert ("DaemonSet", "lb-lbx-speaker") in named, sorted(named)


check("helm lint --strict is clean", lint_is_clean)
check("dashboard and alerts use only exported metrics", dashboard_and_alerts_use_only_exported_metrics)
check("alert rules pass promtool check and unit tests", alert_rules_pass_promtool_tests)
check("default render validates against Kubernetes 1.33", validate_all({}))
check("every optional feature on validates", validate_all(ALL_ON))
check("defaults render the components, optional parts off", defaults_render_the_components)
check("chart CRDs are the generated ones, valid, rendered unless crds.enabled=false, kept on uninstall", crds_are_the_generated_ones)
check("speaker capabilities follow the forwarding mode", speaker_capabilities_follow_forwarding)
check("typos in values fail at install time", typos_in_values_fail_at_install)
check("a sample pool needs addresses", sample_pool_requires_addresses)
check("--lb-class reaches both binaries", lb_class_reaches_both_binaries)
check("the optional NetworkPolicy fences the controller", network_policy_fences_the_controller)
check("the webhook's Service, configuration, flags and RBAC name each other", webhook_parts_name_each_other)
check("metallb compat reaches both binaries and their RBAC", metallb_compat_reaches_both_binaries_and_rbac)
check("release `ferrolb` names objects ferrolb-<component>", release_named_ferrolb_gives_plain_names)
check("the heartbeat key and flags reach the speakers", memberlist_key_and_flags_reach_the_speakers)
check("the containers get the environment the sandbox measures with", containers_get_the_environment_the_sandbox_measures_with)
check("probes and rollout defaults", probes_and_rollout_defaults)
check("name, labels, annotations, strategies and securityContext overrides", overrides_reach_the_objects)
check("metrics: bind address, HTTPS with token review, RBAC and monitors", metrics_protection_reaches_flags_probes_rbac_and_monitors)
check("the speaker Lease policy names the speaker's ServiceAccount and namespace", lease_policy_names_the_speaker_and_its_namespace)
print(f"chart: {passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
