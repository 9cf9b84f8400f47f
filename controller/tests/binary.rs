//! The `ferrolb-controller` binary's flags, as a unit: bad values are refused with
//! a message naming the flag. Everything else the binary does is tested as the chart
//! installs it, in the sandbox (`e2e/tests/controller.rs` and the other e2e tests).

use std::process::Command;

#[test]
fn bad_flags_are_rejected_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrolb-controller")).args(["--lease-duration", "0"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--lease-duration"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_ferrolb-controller")).args(["--log-format", "xml"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format"));
}
