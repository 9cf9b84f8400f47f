//! The emulator binary driven by real kubectl, a client nobody here wrote.
//!
//! Runs every kubectl found: `kubectl` on PATH, and an old one, named by
//! `FERROLB_OLD_KUBECTL` or unpacked by `.ci/run` into `target/tools/kubectl-1.20`
//! (Debian's 1.20), so both old and new clients are proven. Fails when no kubectl
//! is found at all.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod binary;

use binary::{Emulator, start as start_emulator, start_with as start_emulator_with};

struct Kubectl {
    bin: PathBuf,
    minor: u32,
}

impl Kubectl {
    fn cmd(&self, emu: &Emulator, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("KUBECONFIG", &emu.kubeconfig).env("HOME", emu.dir.path()).args(args);
        c
    }

    fn run(&self, emu: &Emulator, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.cmd(emu, args);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    fn ok(&self, emu: &Emulator, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(emu, args, stdin);
        let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "kubectl 1.{} {args:?} failed:\n{o}\n{e}", self.minor);
        o.into_owned()
    }

    fn fails(&self, emu: &Emulator, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(emu, args, stdin);
        assert!(!out.status.success(), "kubectl 1.{} {args:?} should have failed", self.minor);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `apply` flags: before 1.29 kubectl validates client-side from protobuf OpenAPI v2,
    /// which the emulator does not serve; from 1.29 it asks the server to validate (Strict).
    fn apply_args<'a>(&self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec!["apply"];
        if self.minor < 29 {
            a.push("--validate=false");
        }
        a.extend_from_slice(rest);
        a
    }
}

fn find_kubectls() -> Vec<Kubectl> {
    let mut bins: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("PATH") {
        if let Some(k) = std::env::split_paths(&p).map(|d| d.join("kubectl")).find(|k| k.is_file()) {
            bins.push(k);
        }
    }
    let unpacked = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/kubectl-1.20/usr/bin/kubectl");
    let old = std::env::var_os("FERROLB_OLD_KUBECTL").map(PathBuf::from).unwrap_or(unpacked);
    if old.is_file() {
        bins.push(old);
    }
    bins.into_iter()
        .filter_map(|bin| {
            let out = Command::new(&bin).args(["version", "--client", "-o", "json"]).output().ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let minor = v["clientVersion"]["minor"].as_str()?.trim_end_matches('+').parse().ok()?;
            Some(Kubectl { bin, minor })
        })
        .collect()
}

const POOL: &str = "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata:
  name: public
spec:
  addresses:
  - 198.51.100.0/24
  - fd42:f1b::/120
";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: LoadBalancer
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
";

fn crd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ferrolb/files/crds")
}

fn exercise(k: &Kubectl) {
    let emu = start_emulator();
    let crds = crd_dir();
    let out = k.ok(&emu, &k.apply_args(&["-f", crds.to_str().unwrap()]), None);
    assert_eq!(out.matches("created").count(), ferrolb_crds::crds().len(), "{out}");
    let out = k.ok(&emu, &["get", "crd"], None);
    assert!(out.contains("ipaddresspools.ferrolb.io") && out.contains("l2advertisements.ferrolb.io"), "{out}");

    let out = k.ok(&emu, &k.apply_args(&["-f", "-"]), Some(POOL));
    assert!(out.contains("ipaddresspool.ferrolb.io/public created"), "{out}");
    let out = k.ok(&emu, &["get", "ippool"], None);
    let header = out.lines().next().unwrap();
    for col in ["NAME", "AUTO ASSIGN", "ADDRESSES", "IPV4 AVAILABLE", "IPV6 IN USE"] {
        assert!(header.contains(col), "missing printer column {col}: {out}");
    }
    let row = out.lines().nth(1).unwrap();
    assert!(row.starts_with("public") && row.contains("true") && row.contains("198.51.100.0/24"), "{out}");

    // get -w sees a change made by another kubectl.
    let mut watch = k
        .cmd(&emu, &["get", "ipaddresspools", "-w", "-o", "custom-columns=NAME:.metadata.name,AUTO:.spec.autoAssign"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("watch header");
    assert!(first.starts_with("NAME"), "{first}");
    let initial = rx.recv_timeout(Duration::from_secs(20)).expect("initial row");
    assert!(initial.contains("true"), "{initial}");
    k.ok(&emu, &["patch", "ippool", "public", "--type=merge", "-p", r#"{"spec":{"autoAssign":false}}"#], None);
    let changed = rx.recv_timeout(Duration::from_secs(20)).expect("watch saw the change");
    assert!(changed.starts_with("public") && changed.contains("false"), "{changed}");
    let _ = watch.kill();
    let _ = watch.wait();

    if k.minor >= 24 {
        k.ok(
            &emu,
            &[
                "patch",
                "ippool",
                "public",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"assignedIPv4":3},"spec":{"autoAssign":true}}"#,
            ],
            None,
        );
        let st =
            k.ok(&emu, &["get", "ippool", "public", "-o", "jsonpath={.status.assignedIPv4} {.spec.autoAssign}"], None);
        assert_eq!(st, "3 false", "the status write changed status only");
    }

    let err = k.fails(
        &emu,
        &k.apply_args(&["-f", "-"]),
        Some("apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: bad\nspec:\n  addresses: [banana]\n"),
    );
    assert!(err.contains("spec.addresses[0]") && err.contains("must be a CIDR"), "{err}");
    if k.minor >= 29 {
        let typo = POOL.replace("spec:\n", "spec:\n  autoAsign: false\n");
        let err = k.fails(&emu, &k.apply_args(&["-f", "-"]), Some(&typo));
        assert!(err.contains("unknown field \"spec.autoAsign\""), "{err}");
    }

    let out = k.ok(&emu, &k.apply_args(&["-f", "-"]), Some(SERVICE));
    assert!(out.contains("service/web created"), "{out}");
    let out = k.ok(&emu, &["get", "svc", "web"], None);
    assert!(out.contains("LoadBalancer") && out.contains("<pending>") && out.contains("80:3"), "{out}");
    let out = k.ok(
        &emu,
        &[
            "run",
            "web-1",
            "--image=any",
            "--labels=app=web",
            "--port=8080",
            "--overrides",
            r#"{"spec":{"nodeName":"node-2"}}"#,
        ],
        None,
    );
    assert!(out.contains("pod/web-1 created"), "{out}");
    assert_eq!(k.ok(&emu, &["get", "pod", "web-1", "-o", "jsonpath={.spec.nodeName}"], None), "node-2");

    let out = k.ok(&emu, &["delete", "ippool", "public"], None);
    assert!(out.contains("deleted"), "{out}");
    let err = k.fails(&emu, &["get", "ippool", "public"], None);
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
}

#[test]
fn kubectl_drives_the_emulator() {
    let kubectls = find_kubectls();
    assert!(!kubectls.is_empty(), "no kubectl found: install Debian's kubernetes-client (`.ci/run` does)");
    for k in &kubectls {
        eprintln!("exercising kubectl 1.{} at {}", k.minor, k.bin.display());
        exercise(k);
    }
}

/// The generator subcommands every tutorial starts with: kubectl sends their bodies in
/// protobuf (and asks for protobuf answers first).
fn exercise_generators(k: &Kubectl) {
    let emu = start_emulator();
    let get = |args: &[&str]| k.ok(&emu, args, None);
    assert!(get(&["create", "namespace", "shop"]).contains("namespace/shop created"));
    let out = get(&[
        "create",
        "deployment",
        "hello",
        "-n",
        "shop",
        "--image=registry.example/hello:1",
        "--replicas=2",
        "--port=8080",
    ]);
    assert!(out.contains("deployment.apps/hello created"), "{out}");
    let d = get(&[
        "get",
        "deploy",
        "hello",
        "-n",
        "shop",
        "-o",
        "jsonpath={.spec.replicas} {.spec.selector.matchLabels.app} {.spec.template.spec.containers[0].ports[0].containerPort}",
    ]);
    assert_eq!(d, "2 hello 8080");
    let out =
        get(&["expose", "deployment", "hello", "-n", "shop", "--type=LoadBalancer", "--port=80", "--target-port=8080"]);
    assert!(out.contains("service/hello exposed"), "{out}");
    let svc = get(&[
        "get",
        "svc",
        "hello",
        "-n",
        "shop",
        "-o",
        "jsonpath={.spec.type} {.spec.selector.app} {.spec.ports[0].port} {.spec.ports[0].targetPort}",
    ]);
    assert_eq!(svc, "LoadBalancer hello 80 8080");
    assert!(get(&["scale", "deployment", "hello", "-n", "shop", "--replicas=0"]).contains("scaled"));
    assert_eq!(get(&["get", "deploy", "hello", "-n", "shop", "-o", "jsonpath={.spec.replicas}"]), "0");
    assert!(
        get(&["create", "secret", "generic", "creds", "-n", "shop", "--from-literal=user=admin"]).contains("created")
    );
    assert_eq!(get(&["get", "secret", "creds", "-n", "shop", "-o", "jsonpath={.data.user}"]), "YWRtaW4=");
    assert!(get(&["create", "configmap", "settings", "-n", "shop", "--from-literal=mode=fast"]).contains("created"));
    assert_eq!(get(&["get", "cm", "settings", "-n", "shop", "-o", "jsonpath={.data.mode}"]), "fast");
    assert!(get(&["create", "serviceaccount", "robot", "-n", "shop"]).contains("created"));
    // A kind the URL does not serve, sent by kubectl itself: refused with the server's reason.
    let err = k.fails(&emu, &["create", "deployment", "Bad_Name", "--image=x"], None);
    assert!(err.contains("Invalid") || err.contains("invalid"), "{err}");
    assert!(get(&["delete", "namespace", "shop"]).contains("deleted"));
}

#[test]
fn kubectl_generator_commands_work() {
    let kubectls = find_kubectls();
    assert!(!kubectls.is_empty(), "no kubectl found: install Debian's kubernetes-client (`.ci/run` does)");
    for k in &kubectls {
        eprintln!("kubectl 1.{} create/expose at {}", k.minor, k.bin.display());
        exercise_generators(k);
    }
}

const READER_ROLE: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: svc-reader, namespace: default}
rules:
- {apiGroups: [\"\"], resources: [services], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: svc-reader, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: svc-reader}
subjects:
- {kind: ServiceAccount, name: reader, namespace: default}
";

/// A kube-rs client authenticating with `token` (kubectl sends no token over plain HTTP).
fn token_client(emu: &Emulator, token: &str) -> kube::Client {
    let text = std::fs::read_to_string(&emu.kubeconfig).unwrap();
    let server = text.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap().to_string();
    let path = emu.dir.path().join(format!("kubeconfig-{token}"));
    ferrolb_emulator::write_kubeconfig_with_token(&path, &server, Some(token)).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let rt = tokio::runtime::Handle::current();
    let config = rt.block_on(kube::Config::from_custom_kubeconfig(kc, &Default::default())).unwrap();
    kube::Client::try_from(config).unwrap()
}

fn api_error(r: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// With a token file and RBAC, what a ServiceAccount may do follows the roles kubectl
/// applies, and the refusals read like kube-apiserver's.
fn exercise_rbac(k: &Kubectl) {
    use k8s_openapi::api::core::v1::{Secret, Service};
    use kube::api::{Api, DeleteParams, ListParams};
    let emu = start_emulator_with(|dir| {
        let tokens = dir.join("tokens.csv");
        std::fs::write(&tokens, "reader-token,system:serviceaccount:default:reader,2\n").unwrap();
        ["--token-auth-file", tokens.to_str().unwrap(), "--authorization-mode", "RBAC"].map(String::from).to_vec()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    // kubectl sends no credentials over HTTP: it is the admin here.
    k.ok(&emu, &k.apply_args(&["-f", "-"]), Some(SERVICE));
    let reader = token_client(&emu, "reader-token");
    let svcs: Api<Service> = Api::namespaced(reader.clone(), "default");
    let (code, msg) = api_error(rt.block_on(svcs.list(&ListParams::default())));
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "services is forbidden: User \"system:serviceaccount:default:reader\" cannot list resource \"services\" \
         in API group \"\" in the namespace \"default\""
    );
    let out = k.ok(&emu, &k.apply_args(&["-f", "-"]), Some(READER_ROLE));
    assert!(out.contains("role.rbac.authorization.k8s.io/svc-reader created"), "{out}");
    assert!(k.ok(&emu, &["get", "rolebinding", "svc-reader"], None).contains("Role/svc-reader"));
    // The binding takes effect at once.
    let names: Vec<String> = rt
        .block_on(svcs.list(&ListParams::default()))
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    assert_eq!(names, ["web"]);
    let (code, msg) = api_error(rt.block_on(svcs.delete("web", &DeleteParams::default())));
    assert!(code == 403 && msg.contains("cannot delete resource \"services\""), "{msg}");
    let secrets: Api<Secret> = Api::namespaced(reader, "kube-system");
    let (code, msg) = api_error(rt.block_on(secrets.list(&ListParams::default())));
    assert!(code == 403 && msg.contains("in the namespace \"kube-system\""), "{msg}");
    let nobody: Api<Service> = Api::namespaced(token_client(&emu, "nobody"), "default");
    assert_eq!(api_error(rt.block_on(nobody.list(&ListParams::default()))).0, 401);
    // Deleting the binding takes the permission away again.
    k.ok(&emu, &["delete", "rolebinding", "svc-reader"], None);
    assert_eq!(api_error(rt.block_on(svcs.list(&ListParams::default()))).0, 403);
}

#[test]
fn kubectl_sees_rbac_enforced() {
    let kubectls = find_kubectls();
    assert!(!kubectls.is_empty(), "no kubectl found: install Debian's kubernetes-client (`.ci/run` does)");
    for k in &kubectls {
        eprintln!("exercising RBAC with kubectl 1.{} at {}", k.minor, k.bin.display());
        exercise_rbac(k);
    }
}
