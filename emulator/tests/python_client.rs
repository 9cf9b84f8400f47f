//! The emulator binary driven by the official Kubernetes Python client
//! (`kubernetes` on PyPI, installed by scripts/install-deps): a second client written
//! elsewhere checks the emulator's fidelity, not only kubectl and kube-rs. The suite
//! is python_client.py beside this file.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn the_official_python_client_works_against_the_emulator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = root.join("target/tools/venv/bin/python");
    assert!(python.is_file(), "{} missing: run scripts/install-deps", python.display());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut emu = Command::new(env!("CARGO_BIN_EXE_ferrolb-emulator"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = emu.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("emulator announced its address");
    assert!(line.contains("listening on"), "{line}");
    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_client.py"))
        .arg(&kubeconfig)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let _ = emu.kill();
    let _ = emu.wait();
    let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python client suite failed:\n{o}\n{e}");
    assert!(o.contains("python client suite: ok"), "{o}");
}
