//! ferrolb's Pods as the kubelet runs them, seen with kubectl: a crashed container
//! is restarted (at once, then after a back-off shown as `CrashLoopBackOff`); a
//! container whose arguments the binary refuses crash-loops with the binary's error
//! in `kubectl logs`, and a fixed `helm upgrade` brings it back; a Pod whose Secret
//! is missing does not start, says why, and starts once the Secret exists; a hung
//! container is restarted for failing its liveness probe. Runs as root.

use std::process::Command;
use std::time::Duration;

use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::sandbox::{NS, Options};
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// The sandbox, with the helpers below.
struct Env(Harness);

impl std::ops::Deref for Env {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.0
    }
}

fn env(nodes: usize, values: Value) -> Env {
    Env(Harness::up(&Options { nodes, values, ..Options::default() }))
}

impl Env {
    fn pod(&self, name: &str) -> Pod {
        self.rt.block_on(Api::<Pod>::namespaced(self.sb().client.clone(), NS).get(name)).unwrap()
    }

    /// The container's status of Pod `name`, as JSON.
    fn container(&self, name: &str) -> Value {
        let st = self.pod(name).status.and_then(|s| s.container_statuses).unwrap_or_default();
        st.first().map(|c| serde_json::to_value(c).unwrap()).unwrap_or_default()
    }

    fn waiting_reason(&self, name: &str) -> Option<String> {
        self.container(name)["state"]["waiting"]["reason"].as_str().map(String::from)
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl").env("KUBECONFIG", &self.sb().state.kubeconfig).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `kubectl get pods` row of Pod `name`: (READY, STATUS, RESTARTS).
    fn row(&self, name: &str) -> (String, String, String) {
        let out = self.kubectl(&["get", "pods", "-n", NS, "--no-headers", name]);
        let cols: Vec<&str> = out.split_whitespace().collect();
        let col = |i: usize| cols.get(i).copied().unwrap_or_default().to_string();
        (col(1), col(2), col(3))
    }

    fn ready(&self, name: &str) -> bool {
        self.container(name)["ready"] == true
    }
}

#[test]
fn a_crashed_container_is_restarted_then_backs_off() {
    let e = env(1, Value::Null);
    let (pod, key) = ("ferrolb-speaker-node-1", "speaker/node-1");
    eventually("the speaker is Ready", Duration::from_secs(30), || e.ready(pod).then_some(()));
    assert_eq!(e.row(pod), ("1/1".into(), "Running".into(), "0".into()));
    // The first crash: restarted at once.
    let first = e.sb().pid(key).unwrap();
    e.sb().kill_pod(key, "-KILL", false).unwrap();
    let second = eventually("restarted", Duration::from_secs(10), || e.sb().pid(key).filter(|p| *p != first));
    eventually("Ready again", Duration::from_secs(30), || e.ready(pod).then_some(()));
    let c = e.container(pod);
    assert_eq!(c["restartCount"], 1, "{c}");
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 137, "killed by SIGKILL: {c}");
    // The second, soon after: the kubelet waits 10 s, and says so.
    e.sb().kill_pod(key, "-KILL", false).unwrap();
    eventually("CrashLoopBackOff", Duration::from_secs(5), || {
        (e.waiting_reason(pod).as_deref() == Some("CrashLoopBackOff")).then_some(())
    });
    let (ready, status, restarts) = e.row(pod);
    assert_eq!((ready.as_str(), status.as_str()), ("0/1", "CrashLoopBackOff"), "kubectl get pods tells the truth");
    assert!(restarts.starts_with('1'), "{restarts}");
    assert!(e.sb().pid(key).is_none(), "nothing runs while backing off");
    let third = eventually("restarted after the back-off", Duration::from_secs(20), || e.sb().pid(key));
    assert!(third != second);
    eventually("Ready once more", Duration::from_secs(30), || e.ready(pod).then_some(()));
    assert_eq!(e.container(pod)["restartCount"], 2);
}

#[test]
fn refused_arguments_crash_loop_with_the_error_in_kubectl_logs_until_an_upgrade_fixes_them() {
    // Within the chart's schema, outside what the binary accepts.
    let mut e = env(1, json!({"speaker": {"memberlist": {"heartbeatInterval": "5000s"}}}));
    let pod = "ferrolb-speaker-node-1";
    eventually("the speaker crash-loops", Duration::from_secs(30), || {
        (e.waiting_reason(pod).as_deref() == Some("CrashLoopBackOff")).then_some(())
    });
    let c = e.container(pod);
    assert_ne!(c["lastState"]["terminated"]["exitCode"], 0, "{c}");
    assert_eq!(e.row(pod).1, "CrashLoopBackOff");
    let logs = e.kubectl(&["logs", "-n", NS, pod]);
    assert!(logs.contains("--heartbeat-interval"), "the binary's error names the flag: {logs}");
    // The controller is unaffected.
    eventually("the controller is Ready", Duration::from_secs(30), || e.ready("ferrolb-controller-0").then_some(()));
    // helm upgrade with a good value: the speaker's Pod is replaced and becomes Ready.
    let (rt, sb) = e.0.parts();
    let rolled = rt.block_on(sb.upgrade(&json!({"speaker": {"memberlist": {"heartbeatInterval": "100ms"}}})));
    assert_eq!(rolled.expect("upgrade"), [pod]);
    assert_eq!(e.row(pod), ("1/1".into(), "Running".into(), "0".into()));
}

#[test]
fn a_missing_secret_keeps_the_pod_from_starting_until_it_exists() {
    let e = env(1, json!({"speaker": {"memberlist": {"existingSecret": "my-heartbeat-key"}}}));
    let pod = "ferrolb-speaker-node-1";
    eventually("the Pod cannot be configured", Duration::from_secs(10), || {
        (e.waiting_reason(pod).as_deref() == Some("CreateContainerConfigError")).then_some(())
    });
    let c = e.container(pod);
    assert!(c["state"]["waiting"]["message"].as_str().unwrap_or_default().contains("my-heartbeat-key"), "{c}");
    assert_eq!(e.row(pod), ("0/1".into(), "CreateContainerConfigError".into(), "0".into()));
    assert_eq!(e.pod(pod).status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    assert!(e.sb().pid("speaker/node-1").is_none());
    // The operator creates it: the kubelet's next attempt starts the container.
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "my-heartbeat-key"},
        "stringData": {"secretkey": "0123456789abcdef0123456789abcdef"}}))
    .unwrap();
    let api = Api::<Secret>::namespaced(e.sb().client.clone(), NS);
    e.rt.block_on(api.create(&PostParams::default(), &secret)).unwrap();
    eventually("the speaker starts and is Ready", Duration::from_secs(30), || e.ready(pod).then_some(()));
    assert_eq!(e.row(pod), ("1/1".into(), "Running".into(), "0".into()));
}

#[test]
fn a_container_that_stops_answering_its_liveness_probe_is_restarted() {
    let e = env(1, Value::Null);
    let (pod, key) = ("ferrolb-speaker-node-1", "speaker/node-1");
    eventually("the speaker is Ready", Duration::from_secs(30), || e.ready(pod).then_some(()));
    let hung = e.sb().pid(key).unwrap();
    // Hung, not dead: the process is there, its /healthz no longer answers.
    assert!(Command::new("kill").args(["-STOP", &hung.to_string()]).status().unwrap().success());
    // Three failed probes 10 s apart, then SIGTERM, which a stopped process does not act
    // on, then SIGKILL after the Pod's 10 s grace period; then the restart.
    let restarted = eventually("restarted for its liveness probe", Duration::from_secs(90), || {
        e.sb().pid(key).filter(|p| *p != hung)
    });
    assert!(restarted != hung);
    eventually("Ready again", Duration::from_secs(30), || e.ready(pod).then_some(()));
    let c = e.container(pod);
    assert_eq!(c["restartCount"], 1, "{c}");
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 137, "ended by SIGKILL: {c}");
}
