//! ferrolb-controller: allocates external IPs for `type: LoadBalancer` Services
//! from IPAddressPools and writes them to the Services' status.
//!
//! ```text
//! leadership ──(a term while leading)──> term: readers ─> Config ─> allocator
//!                                             │                       │
//!                               Service watch ┴─> reconcile: decide() ┴─> status, events
//!                                                  pool_status ─> pool and advertisement status
//! ```
//!
//! The allocator ([`alloc`]) and [`reconcile::decide`] are pure; the modules around
//! them only read caches and write what they decide.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

pub mod alloc;
pub mod configuration;
pub mod leadership;
pub mod memberlist;
pub mod metrics;
pub mod pool_status;
pub mod presence;
pub mod reconcile;
pub mod service;
pub mod settings;
pub mod term;
pub mod webhook;

/// What the HTTP endpoint and every leadership term share for the process's life.
#[derive(Clone)]
pub struct ProcessState {
    pub metrics: metrics::Metrics,
    /// The allocator (emptied when a term ends, rebuilt from the API by the next).
    pub alloc: Arc<Mutex<alloc::Allocator>>,
    /// `/readyz`: caches synced and allocations replayed (leader), or standing by.
    pub ready: Arc<AtomicBool>,
}

impl ProcessState {
    /// A fresh state: empty allocator, not ready.
    pub fn new() -> ProcessState {
        let alloc = Arc::new(Mutex::new(alloc::Allocator::new()));
        ProcessState { metrics: metrics::Metrics::new(alloc.clone()), alloc, ready: Arc::new(AtomicBool::new(false)) }
    }
}

impl Default for ProcessState {
    fn default() -> Self {
        ProcessState::new()
    }
}
