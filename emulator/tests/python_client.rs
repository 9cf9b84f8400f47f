//! The emulator binary driven by the official Kubernetes Python client
//! (`kubernetes` on PyPI, installed by scripts/install-deps): a second client written
//! elsewhere checks the emulator's fidelity, not only kubectl and kube-rs. The suite
//! is python_client.py beside this file.

mod binary;

use std::path::Path;
use std::process::Command;

#[test]
fn the_official_python_client_works_against_the_emulator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = root.join("target/tools/venv/bin/python");
    assert!(python.is_file(), "{} missing: run scripts/install-deps", python.display());
    let emu = binary::start();
    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_client.py"))
        .arg(&emu.kubeconfig)
        .env("HOME", emu.dir.path())
        .output()
        .unwrap();
    drop(emu);
    let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python client suite failed:\n{o}\n{e}");
    assert!(o.contains("python client suite: ok"), "{o}");
}
