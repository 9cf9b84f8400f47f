//! Running code inside a test network namespace.

use std::io;

/// Run `f` on a new thread inside the network namespace at `path` (e.g. `/run/netns/x`):
/// sockets opened there stay in that namespace. Needs CAP_SYS_ADMIN. The thread
/// returns the error, and never runs `f`, when it cannot enter the namespace.
pub fn in_netns<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<io::Result<T>>> {
    let file = std::fs::File::open(path)?;
    Ok(std::thread::spawn(move || {
        ferrolb_speaker_sys::enter_netns(&file)?;
        Ok(f())
    }))
}
