//! The container image `scripts/build-image` makes, as a container runtime sees it:
//! its OCI config (user, entrypoint, labels), the archive `docker load` and `kind
//! load image-archive` read, and the image run by a real OCI runtime (Debian's
//! runc): both binaries and `nft` start inside it, and `nft` programs a table in the
//! container's own network namespace. CI builds the image before the tests; on a
//! developer's machine without one the test says so and stops.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferrolb_e2e::topology::{privileged, unique_suffix};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A blob of the OCI layout by its digest.
fn blob(layout: &Path, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// Run `args` in a container of the unpacked `bundle` with runc, as `uid` with `caps`;
/// its exit code and output.
fn run(bundle: &Path, args: &[&str], uid: u32, caps: &[&str]) -> (Option<i32>, String) {
    let path = bundle.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["process"]["terminal"] = Value::Bool(false);
    config["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
    config["process"]["user"] = serde_json::json!({"uid": uid, "gid": uid});
    for set in ["bounding", "effective", "inheritable", "permitted", "ambient"] {
        config["process"]["capabilities"][set] = caps.iter().map(|c| Value::from(*c)).collect();
    }
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let id = format!("flb{}img", unique_suffix());
    let out = Command::new("runc").args(["run", "--bundle"]).arg(bundle).arg(&id).output().expect("runc");
    let _ = Command::new("runc").args(["delete", "--force", &id]).output();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_image_is_well_formed_and_runs_under_runc() {
    assert!(privileged(), "runc needs root (CI runs .ci/run as root)");
    let layout = root().join("target/image/oci");
    if !layout.join("index.json").is_file() {
        assert!(std::env::var_os("CI").is_none(), "CI builds the image (scripts/build-image) before the tests");
        eprintln!("no image in {} (run scripts/build-image); nothing to check", layout.display());
        return;
    }
    let index = blob_index(&layout);
    let manifest = blob(&layout, index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(&layout, manifest["config"]["digest"].as_str().unwrap());
    let c = &config["config"];
    assert_eq!(c["User"], "65534:65534", "the image runs as nobody unless a Pod says otherwise");
    assert_eq!(c["Entrypoint"][0], "/usr/local/bin/ferrolb-controller");
    for label in ["title", "source", "licenses", "version", "revision", "created"] {
        assert!(c["Labels"][format!("org.opencontainers.image.{label}")].is_string(), "label {label}: {c}");
    }
    assert_eq!((config["os"].as_str(), config["architecture"].as_str()), (Some("linux"), Some("amd64")));

    // The archive names the image the chart pulls, in the form `docker load` reads.
    let archive = root().join("target/image/ferrolb-image.tar");
    let out = Command::new("tar").arg("-xOf").arg(&archive).arg("manifest.json").output().unwrap();
    let m: Value = serde_json::from_slice(&out.stdout).expect("manifest.json in the archive");
    let version = c["Labels"]["org.opencontainers.image.version"].as_str().unwrap();
    assert_eq!(m[0]["RepoTags"][0], format!("ghcr.io/ferrolb/ferrolb:{version}"));

    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let unpack = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{version}", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(unpack.status.success(), "{}", String::from_utf8_lossy(&unpack.stderr));
    for bin in ["ferrolb-controller", "ferrolb-speaker"] {
        let (code, out) = run(&bundle, &[bin, "--version"], 65534, &[]);
        assert_eq!(code, Some(0), "{bin} in the image: {out}");
        assert_eq!(out.trim(), format!("{bin} {version}"));
    }
    // nodeport forwarding: nft with its libraries, as root with only NET_ADMIN, in the
    // container's own network namespace.
    let script = "add table inet flbimg; add chain inet flbimg c; list table inet flbimg";
    let (code, out) = run(&bundle, &["nft", script], 0, &["CAP_NET_ADMIN"]);
    assert_eq!(code, Some(0), "nft in the image: {out}");
    assert!(out.contains("table inet flbimg"), "{out}");
}

fn blob_index(layout: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap()
}
