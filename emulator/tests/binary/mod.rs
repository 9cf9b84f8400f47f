//! The `ferrolb-emulator` binary, started for a test that drives it with a client
//! written elsewhere (kubectl, the Python client), and killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running emulator binary, its kubeconfig and its temporary directory.
pub struct Emulator {
    child: Child,
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the binary on a free loopback port.
pub fn start() -> Emulator {
    start_with(|_| Vec::new())
}

/// Start the binary with extra arguments computed from its temporary directory;
/// returns once it announced its address.
pub fn start_with(extra: impl FnOnce(&Path) -> Vec<String>) -> Emulator {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolb-emulator"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(extra(dir.path()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("emulator announced its address");
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
    Emulator { child, kubeconfig, dir }
}
