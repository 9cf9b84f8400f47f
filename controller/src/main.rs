//! `ferrolb-controller`: flags, client, signals; the work is in the library.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use clap::Parser;
use ferrolb_controller::alloc::Allocator;
use ferrolb_controller::metrics::Metrics;
use ferrolb_controller::run::{Settings, Shared, run, serve_http};

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
    /// Lease duration in seconds; a standby takes over within this after the leader dies.
    #[arg(long, env = "FERROLB_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    lease_duration: u64,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = "0.0.0.0:7472")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "FERROLB_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log filter (tracing EnvFilter syntax, e.g. `info,ferrolb_controller=debug`).
    #[arg(long, env = "FERROLB_LOG", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ferrolb_common::init_logging(&args.log_format, &args.log_level)?;

    let client = kube::Client::try_default().await?;
    let alloc = Arc::new(Mutex::new(Allocator::new()));
    let shared = Shared { metrics: Metrics::new(alloc.clone()), alloc, ready: Arc::new(AtomicBool::new(false)) };
    let identity = args.identity.unwrap_or_else(|| format!("ferrolb-controller-{}", std::process::id()));
    let settings = Settings {
        namespace: args.namespace,
        lb_class: args.lb_class,
        identity,
        leader_elect: args.leader_elect,
        lease_duration: args.lease_duration,
        metrics_addr: args.metrics_addr,
    };
    let stop_rx = ferrolb_common::shutdown_signal("shutting down");
    tokio::select! {
        r = serve_http(settings.metrics_addr, shared.clone()) => r,
        r = run(client, settings, shared, stop_rx) => r,
    }
}
