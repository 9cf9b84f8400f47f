//! Waiting on a condition with a deadline, for tests and the sandbox: poll, never a fixed sleep.

use std::time::{Duration, Instant};

/// Poll `f` until it yields a value, panicking with `what` after `limit`.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll `f` until it holds, panicking with `what` after `limit`.
pub fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    eventually(what, limit, || f().then_some(()))
}
