//! The Helm chart, rendered and linted with Helm's own engine and every manifest
//! validated against the Kubernetes schemas: `charts/ferrolb/tests/check_chart.py`,
//! run with the venv `scripts/install-deps` creates in `target/tools/venv`.

use std::path::Path;
use std::process::Command;

#[test]
fn chart_renders_lints_and_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("target/tools/venv/bin/python");
    assert!(python.is_file(), "{} missing: run scripts/install-deps (as .ci/run does)", python.display());
    let out =
        Command::new(&python).arg(root.join("charts/ferrolb/tests/check_chart.py")).output().expect("python runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "chart checks failed:\n{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
}
