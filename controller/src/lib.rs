//! ferrolb-controller: allocates external IPs for `type: LoadBalancer` Services
//! from IPAddressPools and writes them to the Services' status.

pub mod alloc;
pub mod config;
pub mod metrics;
pub mod reconcile;
pub mod run;
pub mod service;
