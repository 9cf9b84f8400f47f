//! `ferrolb-controller`: flags and wiring; the work is in the library.

use std::time::Duration;

use clap::Parser;
use ferrolb_common::flags::duration_between;
use ferrolb_common::http::{ListenAddr, serve};
use ferrolb_controller::ProcessState;
use ferrolb_controller::leadership::run;
use ferrolb_controller::settings::Settings;
use tracing::Instrument;

/// Allocates external IPs for LoadBalancer Services from ferrolb IPAddressPools.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Namespace holding the IPAddressPools, L2Advertisements and the leader Lease.
    #[arg(long, env = "FERROLB_NAMESPACE", default_value = "ferrolb-system")]
    namespace: String,
    /// Handle only Services with this spec.loadBalancerClass (default: only Services without one).
    #[arg(long, env = "FERROLB_LB_CLASS")]
    lb_class: Option<String>,
    /// Identity for leader election (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Elect a leader with a Lease; only the leader writes.
    #[arg(long, env = "FERROLB_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Lease duration (`15s`; a bare number is seconds); a standby takes over within
    /// this after the leader dies. Whole seconds are used.
    #[arg(long, env = "FERROLB_LEASE_DURATION", default_value = "15s",
          value_parser = duration_between(Duration::from_secs(2), Duration::from_secs(3600)))]
    lease_duration: Duration,
    /// Address for /metrics, /healthz and /readyz: `:7472` (every address) or `IP:PORT`.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = ":7472")]
    metrics_addr: ListenAddr,
    /// Log format.
    #[arg(long, env = "FERROLB_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log filter (tracing EnvFilter syntax, e.g. `info,ferrolb_controller=debug`).
    #[arg(long, env = "FERROLB_LOG", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { namespace, lb_class, identity, leader_elect, lease_duration, metrics_addr, log_format, log_level } =
        Args::parse();
    ferrolb_common::init_logging(&log_format, &log_level)?;
    let listener = metrics_addr.bind().await.map_err(|e| anyhow::anyhow!("--metrics-addr {metrics_addr}: {e}"))?;
    let client = kube::Client::try_default().await?;
    let state = ProcessState::new();
    let identity = identity.unwrap_or_else(|| format!("ferrolb-controller-{}", std::process::id()));
    let settings = Settings { namespace, lb_class, identity, leader_elect, lease_duration, metrics_addr };
    let stop_rx = ferrolb_common::shutdown_signal("shutting down");
    let metrics = state.metrics.clone();
    tokio::select! {
        r = serve(listener, move || metrics.render(), state.ready.clone()).instrument(tracing::info_span!("http")) => r,
        r = run(client, settings, state, stop_rx).instrument(tracing::info_span!("controller")) => r,
    }
}
