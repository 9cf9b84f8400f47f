//! What the controller runs with, from its flags.

use ferrolb_common::http::ListenAddr;
use ferrolb_crds::CONTROLLER_FIELD_MANAGER;

/// What the process needs to run, from flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace of the pools, advertisements and the leader Lease.
    pub namespace: String,
    /// `--lb-class`.
    pub lb_class: Option<String>,
    /// Identity for leader election and events.
    pub identity: String,
    /// Run leader election (otherwise act as leader at once).
    pub leader_elect: bool,
    /// Lease duration in seconds.
    pub lease_duration: std::time::Duration,
    /// Metrics and health address.
    pub metrics_addr: ListenAddr,
    /// The speakers run with `--ignore-exclude-lb` (for the Announced condition).
    pub ignore_exclude_lb: bool,
    /// metallb compat: MetalLB's namespace, whose `metallb.io` objects are read with
    /// ferrolb's (`None`: compat off).
    pub metallb_namespace: Option<String>,
}

impl Settings {
    /// This instance's name: the field manager, the leader Lease and the event reporter.
    /// Instances serving different classes must not take each other's fields or lease.
    pub fn instance_name(&self) -> String {
        match &self.lb_class {
            None => CONTROLLER_FIELD_MANAGER.to_string(),
            Some(class) => {
                let safe: String = class
                    .to_lowercase()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
                    .collect();
                format!("{CONTROLLER_FIELD_MANAGER}-{}", safe.trim_matches(|c| c == '-' || c == '.'))
            }
        }
    }
}
