//! The real `ferrolb-controller` binary against the emulator over HTTP, driven
//! with real kubectl as an operator would, and scraped like Prometheus would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrolb_common::wait::eventually;
use ferrolb_emulator::{Config, Emulator, write_kubeconfig};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", kubeconfig.parent().unwrap())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on PATH (.ci/run installs one)");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubectl {args:?}: {o}\n{e}");
    o
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

const SETUP: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: ferrolb-system
---
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata:
  name: public
  namespace: ferrolb-system
spec:
  addresses: [198.51.100.10-198.51.100.20]
---
apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata:
  name: all
  namespace: ferrolb-system
";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
";

#[test]
fn controller_binary_allocates_reports_and_shuts_down_cleanly() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = Emulator::new(Config::default());
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = emu.clone();
    rt.spawn(async move { server.serve(listener).await });
    let dir = std::env::temp_dir().join(format!("ferrolb-controller-test-{}", std::process::id()));
    let kubeconfig: PathBuf = dir.join("kubeconfig");
    write_kubeconfig(&kubeconfig, &format!("http://{addr}")).unwrap();

    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ferrolb/files/crds");
    kubectl(&kubeconfig, &["apply", "--validate=false", "-f", crds.to_str().unwrap()], None);
    kubectl(&kubeconfig, &["apply", "--validate=false", "-f", "-"], Some(SETUP));

    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut ctl = Proc(
        Command::new(env!("CARGO_BIN_EXE_ferrolb-controller"))
            .env("KUBECONFIG", &kubeconfig)
            .args(["--namespace", "ferrolb-system", "--lease-duration", "2", "--log-format", "json"])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .env("POD_NAME", "controller-0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("readyz", Duration::from_secs(30), || http_get(metrics_port, "/readyz").filter(|(c, _)| *c == 200));
    assert_eq!(http_get(metrics_port, "/healthz").unwrap().0, 200);

    kubectl(&kubeconfig, &["apply", "--validate=false", "-f", "-"], Some(SERVICE));
    let row = eventually("EXTERNAL-IP", Duration::from_secs(30), || {
        let out = kubectl(&kubeconfig, &["get", "svc", "web", "--no-headers"], None);
        out.contains("198.51.100.10").then_some(out)
    });
    assert!(row.contains("LoadBalancer"), "{row}");
    let pool = eventually("pool status", Duration::from_secs(30), || {
        let out = kubectl(
            &kubeconfig,
            &[
                "-n",
                "ferrolb-system",
                "get",
                "ippool",
                "public",
                "-o",
                "jsonpath={.status.assignedIPv4}/{.status.availableIPv4}",
            ],
            None,
        );
        (out == "1/10").then_some(out)
    });
    assert_eq!(pool, "1/10");
    let events = kubectl(&kubeconfig, &["get", "events.events.k8s.io", "-o", "jsonpath={.items[*].reason}"], None);
    assert!(events.contains("IPAllocated"), "{events}");
    let described = kubectl(&kubeconfig, &["describe", "svc", "web"], None);
    assert!(described.contains("IPAllocated") && described.contains("198.51.100.10"), "{described}");

    let (code, text) = http_get(metrics_port, "/metrics").unwrap();
    assert_eq!(code, 200);
    for line in [
        "ferrolb_allocator_addresses{pool=\"public\"} 11",
        "ferrolb_allocator_addresses_in_use{pool=\"public\"} 1",
        "ferrolb_allocator_ipv4_addresses_in_use{pool=\"public\"} 1",
        "ferrolb_allocator_ipv6_addresses{pool=\"public\"} 0",
        "ferrolb_controller_leader 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains("ferrolb_allocator_allocation_duration_seconds_count"), "{text}");
    assert!(text.contains("ferrolb_k8s_client_updates_total"), "{text}");

    // SIGTERM: the controller gives its lease back and exits cleanly.
    let pid = ctl.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = eventually("exit after SIGTERM", Duration::from_secs(15), || ctl.0.try_wait().unwrap());
    assert!(status.success(), "{status:?}");
    let holder = kubectl(
        &kubeconfig,
        &["-n", "ferrolb-system", "get", "lease", "ferrolb-controller", "-o", "jsonpath={.spec.holderIdentity}"],
        None,
    );
    assert_eq!(holder, "", "the lease was released on shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_are_rejected_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrolb-controller")).args(["--lease-duration", "0"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--lease-duration"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_ferrolb-controller")).args(["--log-format", "xml"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format"));
}
