//! A real Prometheus server (Debian's `prometheus`) in one of the sandbox's
//! namespaces, and instant queries to its HTTP API.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `args` in namespace `ns`; its stdout when it succeeded.
pub fn in_ns(ns: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("ip").args(["netns", "exec", ns]).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A Prometheus server (Debian's) in the namespace `netns` on 127.0.0.1:9090, with
/// `config` (written to `dir/prometheus.yml`) and its database in `dir/tsdb`.
pub fn prometheus(netns: &str, dir: &Path, config: &str) -> Proc {
    std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus.yml");
    Proc(
        Command::new("ip")
            .args(["netns", "exec", netns, "prometheus"])
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .args(["--web.listen-address=127.0.0.1:9090"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package `prometheus`)"),
    )
}

/// The result vector of the instant query `q` to the Prometheus in `netns`.
pub fn query(netns: &str, q: &str) -> Option<Vec<Value>> {
    let out = in_ns(
        netns,
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
    (v["status"] == "success").then(|| v["data"]["result"].as_array().cloned().unwrap_or_default())
}
