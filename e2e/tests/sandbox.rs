//! The sandbox CLI as a newcomer and a script use it: `demo` exits 0 having
//! shown every step; `up` runs until told, and `status`, `stop`, `start`,
//! `link` and `down` act on it through the state file. Runs as root.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrolb_e2e::sandbox::{State, process_running};
use ferrolb_e2e::topology::privileged;
use ferrolb_e2e::wait::until as eventually;

const BIN: &str = env!("CARGO_BIN_EXE_ferrolb-sandbox");

fn sandbox(state: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).arg("--state-file").arg(state).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn demo_runs_every_step_and_exits_zero() {
    assert!(privileged(), "the sandbox needs root (CI runs .ci/run as root)");
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = sandbox(&dir.path().join("state.json"), &["demo", "--nodes", "2"]);
    assert!(ok, "demo failed:\n{out}");
    for line in [
        "ferrolb installed from charts/ferrolb",
        "every ferrolb Pod is Ready",
        "got EXTERNAL-IP 198.51.100.100",
        "reached a backend through the VIP",
        "answers ARP for 198.51.100.100",
        "took over; client-visible outage",
        "sandbox removed",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert!(!out.contains('✘'), "{out}");
    println!("{out}");
}

/// Tears the sandbox down even when an assertion fails.
struct Running {
    state: std::path::PathBuf,
    up: std::process::Child,
}

impl Running {
    /// `ferrolb-sandbox up --nodes 2` with its state in `state`, once it says it is up
    /// (that first line is returned; the rest of its output is drained).
    fn up(state: &Path) -> (Running, String) {
        let up = Command::new(BIN)
            .arg("--state-file")
            .arg(state)
            .args(["up", "--nodes", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut running = Running { state: state.to_path_buf(), up };
        let mut lines = BufReader::new(running.up.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        std::thread::spawn(move || for _ in lines {});
        (running, first)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new(BIN).arg("--state-file").arg(&self.state).arg("down").output();
        let _ = self.up.kill();
        let _ = self.up.wait();
    }
}

#[test]
fn demo_works_on_an_ipv6_only_cluster() {
    assert!(privileged(), "the sandbox needs root (CI runs .ci/run as root)");
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = sandbox(&dir.path().join("state.json"), &["demo", "--nodes", "2", "--ipv6"]);
    assert!(ok, "demo --ipv6 failed:\n{out}");
    for line in ["got EXTERNAL-IP fd42:f1b::100", "answers NDP for fd42:f1b::100", "took over"] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn up_status_stop_start_link_down() {
    assert!(privileged(), "the sandbox needs root (CI runs .ci/run as root)");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let (mut running, first) = Running::up(&state);
    assert!(first.contains("ferrolb sandbox is up (2 nodes)"), "{first}");
    let st: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    for key in ["run_dir", "kubeconfig", "client_netns", "client_interface", "nodes", "pids"] {
        assert!(st.get(key).is_some(), "state file lacks {key}: {st}");
    }
    assert_eq!(st["nodes"].as_array().unwrap().len(), 2);
    assert!(st["nodes"][0]["interfaces"][0]["mac"].is_string());
    let kubeconfig = st["kubeconfig"].as_str().unwrap();
    let nodes =
        Command::new("kubectl").env("KUBECONFIG", kubeconfig).args(["get", "nodes", "-o", "name"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&nodes.stdout).trim(), "node/node-1\nnode/node-2");

    let (ok, out) = sandbox(&state, &["status"]);
    assert!(ok && out.contains("node-1") && out.contains("speaker") && out.contains("running"), "{out}");
    // The chart's Pods, as kubectl shows them: Ready while their readiness probe answers.
    let ready = |pod: &str| {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .args(["get", "pod", pod, "-n", "ferrolb-system", "-o", "jsonpath={.status.containerStatuses[0].ready}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    eventually("the speaker Pod of node-1 is Ready", Duration::from_secs(20), || {
        ready("ferrolb-speaker-node-1") == "true"
    });
    let (ok, out) = sandbox(&state, &["stop", "speaker", "node-1"]);
    assert!(ok, "{out}");
    eventually("speaker node-1 stopped", Duration::from_secs(10), || {
        sandbox(&state, &["status"]).1.lines().any(|l| l.contains("node-1") && l.contains("stopped"))
    });
    eventually("its Pod is no longer Ready", Duration::from_secs(10), || ready("ferrolb-speaker-node-1") == "false");
    let (ok, out) = sandbox(&state, &["start", "speaker", "node-1"]);
    assert!(ok, "{out}");
    eventually("Ready again once restarted", Duration::from_secs(20), || ready("ferrolb-speaker-node-1") == "true");
    // `kubectl logs` shows a Pod's container output, across its restarts.
    let logs = |args: &[&str]| {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .args(["logs", "-n", "ferrolb-system"])
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, all) = logs(&["ferrolb-speaker-node-1"]);
    assert!(ok && all.lines().count() >= 2, "the speaker's output: {all}");
    let (ok, last) = logs(&["ferrolb-speaker-node-1", "--tail=1"]);
    assert!(ok && last.lines().count() == 1 && all.contains(last.trim()), "{last}");
    assert!(!logs(&["ferrolb-speaker-node-1", "-c", "nope"]).0, "an unknown container is refused");
    let (_, out) = sandbox(&state, &["status"]);
    assert!(out.lines().any(|l| l.contains("node-1") && l.contains("running")), "{out}");
    let netns = st["nodes"][1]["netns"].as_str().unwrap().to_string();
    assert!(sandbox(&state, &["link", "down", "node-2"]).0);
    let link = Command::new("ip").args(["-n", &netns, "link", "show", "eth0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&link.stdout).contains("state DOWN"));
    assert!(sandbox(&state, &["link", "up", "node-2"]).0);
    let (ok, out) = sandbox(&state, &["stop", "nothing"]);
    assert!(!ok && out.contains("unknown component"), "{out}");

    let (ok, out) = sandbox(&state, &["down"]);
    assert!(ok, "{out}");
    let status = running.up.wait().unwrap();
    assert!(status.success(), "up exits cleanly after down: {status:?}");
    assert!(!state.exists());
    let suffix =
        st["nodes"][0]["netns"].as_str().unwrap().trim_end_matches(char::is_numeric).trim_end_matches('n').to_string();
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&left.stdout).contains(&suffix), "namespaces left behind");
}

/// A speaker restarted with `start` (from another process than `up`) ends with the
/// sandbox when `up` is stopped with Ctrl-C: every process in the sandbox's
/// namespaces does, whoever started it.
#[test]
fn a_restarted_speaker_ends_with_its_sandbox() {
    assert!(privileged(), "the sandbox needs root (CI runs .ci/run as root)");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let (mut running_up, first) = Running::up(&state);
    assert!(first.contains("ferrolb sandbox is up"), "{first}");
    let st: State = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let old = ferrolb_e2e::wait::eventually("the speaker runs", Duration::from_secs(10), || st.pid("speaker/node-1"));
    assert!(sandbox(&state, &["stop", "speaker", "node-1"]).0);
    eventually("the old speaker exited", Duration::from_secs(10), || !process_running(old));
    let (ok, out) = sandbox(&state, &["start", "speaker", "node-1"]);
    assert!(ok, "{out}");
    let restarted =
        ferrolb_e2e::wait::eventually("the speaker runs again", Duration::from_secs(10), || st.pid("speaker/node-1"));
    assert!(restarted != old, "a new process");

    let up_pid = running_up.up.id().to_string();
    assert!(Command::new("kill").args(["-INT", &up_pid]).status().unwrap().success());
    let status = running_up.up.wait().unwrap();
    assert!(status.success(), "up exits cleanly on Ctrl-C: {status:?}");
    eventually("the restarted speaker ended with the sandbox", Duration::from_secs(5), || !process_running(restarted));
}
