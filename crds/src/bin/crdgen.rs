//! Writes the CRD YAML generated from the Rust types to `charts/ferrolb/files/crds/`.
//!
//! `crdgen [DIR]` writes the files; `crdgen --check [DIR]` exits non-zero when
//! the committed files differ from the types.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/ferrolb/files/crds"));
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [DIR]  (default DIR: charts/ferrolb/files/crds)");
                return ExitCode::SUCCESS;
            }
            other => dir = PathBuf::from(other),
        }
    }
    let mut stale = Vec::new();
    for crd in ferrolb_crds::crds() {
        let path = dir.join(ferrolb_crds::crd_file_name(&crd));
        let want = ferrolb_crds::crd_yaml(&crd);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
                stale.push(path);
            }
        } else if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, want)) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        ExitCode::SUCCESS
    } else {
        for p in stale {
            eprintln!("crdgen: {} is out of date; run `cargo run -p ferrolb-crds --bin crdgen`", p.display());
        }
        ExitCode::FAILURE
    }
}
