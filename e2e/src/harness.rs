//! A sandbox for a synchronous test: its own tokio runtime and run directory,
//! torn down in the one safe order (the sandbox's tasks run on the runtime, so the
//! sandbox goes first, inside it).

use crate::sandbox::{Options, Sandbox};

/// A running sandbox, its runtime and its run directory.
pub struct Harness {
    sb: Option<Sandbox>,
    /// The runtime the sandbox's tasks run on; `block_on` it for API calls.
    pub rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Build a sandbox as `opts` says; panics (the test fails) when it cannot.
    pub fn up(opts: &Options) -> Harness {
        assert!(crate::topology::privileged(), "the sandbox needs root (CI runs .ci/run as root)");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("run directory");
        let sb = rt.block_on(Sandbox::up_opts(opts, dir.path())).expect("sandbox up");
        Harness { sb: Some(sb), rt, _dir: dir }
    }

    /// The sandbox.
    pub fn sb(&self) -> &Sandbox {
        self.sb.as_ref().expect("running")
    }

    /// The runtime and the sandbox, to run an upgrade or replace a Pod on the runtime.
    pub fn parts(&mut self) -> (&tokio::runtime::Runtime, &mut Sandbox) {
        (&self.rt, self.sb.as_mut().expect("running"))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _g = self.rt.enter();
        self.sb.take();
    }
}
