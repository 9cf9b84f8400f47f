//! `ferrolb-speaker`: flags, client, signals; the work is in the library.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ferrolb_speaker::announce::Timing;
use ferrolb_speaker::forward::Forwarding;
use ferrolb_speaker::memberlist;
use ferrolb_speaker::membership;
use ferrolb_speaker::metrics::Metrics;
use ferrolb_speaker::run::{Settings, run, serve_http};

/// Answers ARP and NDP for the LoadBalancer IPs this node announces.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// This node's name (from the downward API).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Namespace of the IPAddressPools, L2Advertisements, Leases and ServiceL2Statuses.
    #[arg(long, env = "FERROLB_NAMESPACE", default_value = "ferrolb-system")]
    namespace: String,
    /// Handle only Services with this spec.loadBalancerClass (default: only those without one).
    #[arg(long, env = "FERROLB_LB_CLASS")]
    lb_class: Option<String>,
    /// Membership Lease duration in seconds: a speaker silent this long is considered dead.
    #[arg(long, env = "FERROLB_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u32).range(3..=3600))]
    lease_duration: u32,
    /// Move an IP back to its hash winner when that node returns (default: stay put).
    #[arg(long, env = "FERROLB_REVERTIVE")]
    revertive: bool,
    /// Interface name patterns (`*` globs, comma-separated) never announced on.
    #[arg(
        long,
        env = "FERROLB_EXCLUDE_INTERFACES",
        value_delimiter = ',',
        default_value = "lo,docker*,cni*,flannel*,cali*,veth*,lxc*,kube-ipvs*,vxlan*,genev*,tunl*,wg*"
    )]
    exclude_interfaces: Vec<String>,
    /// Seconds between gratuitous refreshes after the takeover burst.
    #[arg(long, env = "FERROLB_REFRESH_INTERVAL", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    refresh_interval: u64,
    /// How VIP traffic reaches pods: `kube-proxy` (it handles LoadBalancer IPs) or `nodeport`
    /// (the speaker redirects VIP:port to this node's NodePort with nftables; needs CAP_NET_ADMIN).
    #[arg(long, env = "FERROLB_FORWARDING", default_value = "kube-proxy")]
    forwarding: Forwarding,
    /// UDP port for heartbeats between speakers (fast failure detection); 0 turns them
    /// off and leaves failure detection to the Leases.
    #[arg(long, env = "FERROLB_MEMBERLIST_PORT", default_value_t = 7946)]
    memberlist_port: u16,
    /// Time between heartbeats (e.g. `100ms`).
    #[arg(long, env = "FERROLB_HEARTBEAT_INTERVAL", default_value = "100ms", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// A speaker nobody heard from for this long is dead and its IPs move (e.g. `300ms`);
    /// at least twice the heartbeat interval.
    #[arg(long, env = "FERROLB_SUSPECT_AFTER", default_value = "300ms", value_parser = humantime::parse_duration)]
    suspect_after: Duration,
    /// File holding the heartbeats' shared HMAC key (the chart mounts it from a Secret).
    #[arg(long, env = "FERROLB_MEMBERLIST_SECRET_FILE")]
    memberlist_secret_file: Option<std::path::PathBuf>,
    /// The key itself, when not in a file (the chart sets it from a Secret).
    #[arg(long, env = "FERROLB_MEMBERLIST_SECRET", hide_env_values = true)]
    memberlist_secret: Option<String>,
    /// Address for /metrics and /healthz.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = "0.0.0.0:7473")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "FERROLB_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "FERROLB_LOG", default_value = "info")]
    log_level: String,
}

/// Heartbeat settings from the flags, with a clear error for each bad one.
fn memberlist_settings(args: &Args) -> anyhow::Result<Option<memberlist::Settings>> {
    if args.memberlist_port == 0 {
        return Ok(None);
    }
    let (i, sa) = (args.heartbeat_interval, args.suspect_after);
    if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&i) {
        anyhow::bail!("--heartbeat-interval {i:?} must be between 10ms and 10s");
    }
    if sa < i * 2 {
        anyhow::bail!("--suspect-after {sa:?} must be at least twice --heartbeat-interval ({i:?})");
    }
    let key = match (&args.memberlist_secret_file, &args.memberlist_secret) {
        (Some(path), _) => std::fs::read(path)
            .with_context(|| format!("reading --memberlist-secret-file {}", path.display()))?
            .trim_ascii()
            .to_vec(),
        (None, Some(k)) => k.trim().as_bytes().to_vec(),
        (None, None) => anyhow::bail!(
            "heartbeats need a shared key: --memberlist-secret-file or FERROLB_MEMBERLIST_SECRET \
             (the chart creates one); --memberlist-port 0 turns heartbeats off"
        ),
    };
    if key.len() < 16 {
        anyhow::bail!("the memberlist key has {} bytes; use at least 16", key.len());
    }
    let timing =
        membership::Timing { interval: i, suspect_after: sa, claim_window: (sa * 4).max(Duration::from_secs(2)) };
    Ok(Some(memberlist::Settings { port: args.memberlist_port, key, timing }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ferrolb_common::init_logging(&args.log_format, &args.log_level)?;
    if args.node_name.trim().is_empty() {
        anyhow::bail!("--node-name (NODE_NAME) must not be empty");
    }
    let memberlist = memberlist_settings(&args)?;
    let client = kube::Client::try_default().await?;
    let settings = Settings {
        node: args.node_name,
        namespace: args.namespace,
        lb_class: args.lb_class,
        lease_duration: args.lease_duration,
        revertive: args.revertive,
        exclude_interfaces: args.exclude_interfaces,
        timing: Timing { refresh: Duration::from_secs(args.refresh_interval), ..Timing::default() },
        metrics_addr: args.metrics_addr,
        forwarding: args.forwarding,
        memberlist,
    };
    let metrics = Metrics::new();
    let stop_rx = ferrolb_common::shutdown_signal("shutting down: handing over");
    tokio::select! {
        r = serve_http(settings.metrics_addr, metrics.clone()) => r,
        r = run(client, settings, metrics, stop_rx) => r,
    }
}
