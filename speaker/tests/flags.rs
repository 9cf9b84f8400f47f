//! Bad heartbeat flags stop the speaker at start with a message naming the flag,
//! before it contacts the API server.

use std::process::Command;

fn run(args: &[&str], secret: Option<&str>) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrolb-speaker"));
    c.args(["--node-name", "n1"]).args(args).env_remove("FERROLB_MEMBERLIST_SECRET");
    // Nowhere to connect: a run that got past the flags fails on the kubeconfig instead.
    c.env("KUBECONFIG", "/nonexistent/kubeconfig").env_remove("KUBERNETES_SERVICE_HOST");
    if let Some(s) = secret {
        c.env("FERROLB_MEMBERLIST_SECRET", s);
    }
    let out = c.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn heartbeat_flags_are_checked_at_start() {
    let key = Some("0123456789abcdef0123");
    let (ok, err) = run(&[], None);
    assert!(!ok && err.contains("heartbeats need a shared key") && err.contains("--memberlist-port 0"), "{err}");
    let (ok, err) = run(&[], Some("short"));
    assert!(!ok && err.contains("memberlist key has 5 bytes"), "{err}");
    let (ok, err) = run(&["--heartbeat-interval", "100ms", "--suspect-after", "150ms"], key);
    assert!(!ok && err.contains("--suspect-after 150ms must be at least twice --heartbeat-interval"), "{err}");
    let (ok, err) = run(&["--heartbeat-interval", "1ms"], key);
    assert!(!ok && err.contains("--heartbeat-interval 1ms must be between 10ms and 10s"), "{err}");
    let (ok, err) = run(&["--suspect-after", "soon"], key);
    assert!(!ok && err.contains("--suspect-after"), "{err}");
    let (ok, err) = run(&["--memberlist-secret-file", "/nonexistent/key"], None);
    assert!(!ok && err.contains("reading --memberlist-secret-file /nonexistent/key"), "{err}");
    // Valid flags get as far as the (missing) kubeconfig; so does turning heartbeats off.
    for (args, secret) in [(&[][..], key), (&["--memberlist-port", "0"][..], None)] {
        let (ok, err) = run(args, secret);
        assert!(!ok && !err.contains("memberlist") && !err.contains("heartbeat"), "{args:?}: {err}");
    }
}
