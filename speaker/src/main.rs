//! `ferrolb-speaker`: flags and wiring; the work is in the library.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Parser;
use ferrolb_common::flags::duration_between;
use ferrolb_common::http::{ListenAddr, serve};
use ferrolb_common::secure::MetricsProtection;
use ferrolb_speaker::forward::Forwarding;
use ferrolb_speaker::l2::GratuitousTiming;
use ferrolb_speaker::metrics::Metrics;
use ferrolb_speaker::run::run;
use ferrolb_speaker::settings::{HeartbeatFlags, Settings};
use tracing::Instrument;

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
    /// Membership Lease duration (`15s`; a bare number is seconds): a speaker silent
    /// this long is considered dead. Whole seconds are used.
    #[arg(long, env = "FERROLB_LEASE_DURATION", default_value = "15s",
          value_parser = duration_between(Duration::from_secs(3), Duration::from_secs(3600)))]
    lease_duration: Duration,
    /// Move an IP back to its hash winner when that node returns (default: stay put).
    #[arg(long, env = "FERROLB_REVERTIVE")]
    revertive: bool,
    /// Announce from nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers`
    /// too (single-node and kind-style clusters whose only node carries the label).
    #[arg(long, env = "FERROLB_IGNORE_EXCLUDE_LB")]
    ignore_exclude_lb: bool,
    /// Interface name patterns (`*` globs, comma-separated) never announced on.
    #[arg(
        long,
        env = "FERROLB_EXCLUDE_INTERFACES",
        value_delimiter = ',',
        default_value = "lo,docker*,cni*,flannel*,cali*,veth*,lxc*,kube-ipvs*,vxlan*,genev*,tunl*,wg*"
    )]
    exclude_interfaces: Vec<String>,
    /// Time between gratuitous refreshes after the takeover burst (`30s`; a bare
    /// number is seconds).
    #[arg(long, env = "FERROLB_REFRESH_INTERVAL", default_value = "30s",
          value_parser = duration_between(Duration::from_secs(1), Duration::from_secs(3600)))]
    refresh_interval: Duration,
    /// How VIP traffic reaches pods: `kube-proxy` (it handles LoadBalancer IPs) or `nodeport`
    /// (the speaker redirects VIP:port to this node's NodePort with nftables; needs CAP_NET_ADMIN).
    #[arg(long, env = "FERROLB_FORWARDING", default_value = "kube-proxy")]
    forwarding: Forwarding,
    /// UDP port for heartbeats between speakers (fast failure detection); 0 turns them
    /// off and leaves failure detection to the Leases.
    #[arg(long, env = "FERROLB_MEMBERLIST_PORT", default_value_t = 7946)]
    memberlist_port: u16,
    /// Time between heartbeats to this speaker's observers (e.g. `50ms`).
    #[arg(long, env = "FERROLB_HEARTBEAT_INTERVAL", default_value = "50ms", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// An observer that has not heard a speaker for this long suspects it; once every
    /// observer does, it is dead and its IPs move (e.g. `200ms`); at least twice the
    /// heartbeat interval.
    #[arg(long, env = "FERROLB_SUSPECT_AFTER", default_value = "200ms", value_parser = humantime::parse_duration)]
    suspect_after: Duration,
    /// File holding the heartbeats' shared HMAC key (the chart mounts it from a Secret).
    #[arg(long, env = "FERROLB_MEMBERLIST_SECRET_FILE")]
    memberlist_secret_file: Option<std::path::PathBuf>,
    /// The key itself, when not in a file (the chart sets it from a Secret).
    #[arg(long, env = "FERROLB_MEMBERLIST_SECRET", hide_env_values = true)]
    memberlist_secret: Option<String>,
    /// A second key, accepted but never used to sign: set it on every speaker before a
    /// key rotation (the chart sets it from the Secret's `additionalkey`).
    #[arg(long, env = "FERROLB_MEMBERLIST_ADDITIONAL_SECRET", hide_env_values = true)]
    memberlist_additional_secret: Option<String>,
    /// Accept heartbeats in the previous release's format (`FLB1`, without a sending
    /// time), so a rolling upgrade keeps failure detection; turn off once every speaker
    /// runs this release.
    #[arg(long, env = "FERROLB_MEMBERLIST_LEGACY_HEARTBEATS", default_value_t = true, action = clap::ArgAction::Set)]
    memberlist_legacy_heartbeats: bool,
    /// Address for /metrics, /healthz and /readyz: `:7473` (every address) or `IP:PORT`.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = ":7473")]
    metrics_addr: ListenAddr,
    #[command(flatten)]
    metrics: MetricsProtection,
    /// Log format.
    #[arg(long, env = "FERROLB_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "FERROLB_LOG", default_value = "info")]
    log_level: String,
    #[command(flatten)]
    metallb: ferrolb_common::metallb::CompatArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args {
        node_name,
        namespace,
        lb_class,
        lease_duration,
        revertive,
        ignore_exclude_lb,
        exclude_interfaces,
        refresh_interval,
        forwarding,
        memberlist_port,
        heartbeat_interval,
        suspect_after,
        memberlist_secret_file,
        memberlist_secret,
        memberlist_additional_secret,
        memberlist_legacy_heartbeats,
        metrics_addr,
        metrics,
        log_format,
        log_level,
        metallb,
    } = Args::parse();
    ferrolb_common::init_logging(&log_format, &log_level)?;
    if node_name.trim().is_empty() {
        anyhow::bail!("--node-name (NODE_NAME) must not be empty");
    }
    let heartbeats = HeartbeatFlags {
        port: memberlist_port,
        interval: heartbeat_interval,
        suspect_after,
        secret_file: memberlist_secret_file,
        secret: memberlist_secret,
        additional_secret: memberlist_additional_secret,
        legacy: memberlist_legacy_heartbeats,
    }
    .settings()
    .map_err(anyhow::Error::msg)?;
    let metrics_addr = metrics.listen_addr(metrics_addr)?;
    let listener = metrics_addr.bind().await.map_err(|e| anyhow::anyhow!("--metrics-addr {metrics_addr}: {e}"))?;
    let client = ferrolb_common::client().await?;
    let secure = metrics.secure(&client, &node_name, metrics_addr)?;
    let settings = Settings {
        node: node_name,
        namespace,
        lb_class,
        lease_duration,
        revertive,
        ignore_exclude_lb,
        exclude_interfaces,
        gratuitous: GratuitousTiming { refresh: refresh_interval, ..GratuitousTiming::default() },
        forwarding,
        metrics_addr,
        heartbeats,
        metallb_namespace: metallb.namespace(),
    };
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::new();
    let stop_rx = ferrolb_common::shutdown_signal("shutting down: handing over");
    let m = metrics.clone();
    // The HTTP server on a task of its own: a future of this select runs on the main
    // thread with the planner, and a long planning pass (10,000 Services) kept it from
    // accepting the kubelet's probes until the liveness probe failed (found by the BGP
    // bench; now the workers accept while the planner works).
    let ready_fn = {
        let r = ready.clone();
        move || r.load(std::sync::atomic::Ordering::SeqCst)
    };
    let loaded = ready.clone();
    let render = move || match metallb.metallb_metrics {
        true => m.render_with_metallb_names(loaded.load(std::sync::atomic::Ordering::SeqCst)),
        false => m.render(),
    };
    let http = tokio::spawn(serve(listener, render, ready_fn, secure).instrument(tracing::info_span!("http")));
    tokio::select! {
        r = http => r.map_err(|e| anyhow::anyhow!("the HTTP server ended: {e}"))?,
        r = run(client, settings, metrics, ready, stop_rx).instrument(tracing::info_span!("speaker")) => r,
    }
}
