//! `ferrolb-controller`: flags and wiring; the work is in the library.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use ferrolb_common::flags::duration_between;
use ferrolb_common::http::{ListenAddr, serve};
use ferrolb_common::secure::MetricsProtection;
use ferrolb_controller::ProcessState;
use ferrolb_controller::leadership::run;
use ferrolb_controller::settings::Settings;
use ferrolb_controller::webhook::WebhookSettings;
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
    #[command(flatten)]
    metrics: MetricsProtection,
    /// Log format.
    #[arg(long, env = "FERROLB_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log filter (tracing EnvFilter syntax, e.g. `info,ferrolb_controller=debug`).
    #[arg(long, env = "FERROLB_LOG", default_value = "info")]
    log_level: String,
    /// The speakers run with `--ignore-exclude-lb`: nodes labelled
    /// node.kubernetes.io/exclude-from-external-load-balancers may announce (the
    /// Announced condition judges eligibility as the speakers do).
    #[arg(long, env = "FERROLB_IGNORE_EXCLUDE_LB", default_value_t = false, action = clap::ArgAction::Set)]
    ignore_exclude_lb: bool,
    /// The Secret in --namespace holding the speakers' heartbeat key: created with a
    /// random key when it does not exist, never changed (empty: not managed).
    #[arg(long, env = "FERROLB_MEMBERLIST_SECRET_NAME", default_value = "")]
    memberlist_secret_name: String,
    #[command(flatten)]
    webhook: WebhookArgs,
    #[command(flatten)]
    metallb: ferrolb_common::metallb::CompatArgs,
}

/// The validating admission webhook (the chart turns it on).
#[derive(Debug, clap::Args)]
struct WebhookArgs {
    /// Serve the validating webhook for IPAddressPools and L2Advertisements; the
    /// replica is ready only once it can answer.
    #[arg(long = "webhook", env = "FERROLB_WEBHOOK", default_value_t = false, action = clap::ArgAction::Set)]
    enabled: bool,
    /// HTTPS address of the webhook: `:9443` or `IP:PORT`.
    #[arg(long, env = "FERROLB_WEBHOOK_ADDR", default_value = ":9443")]
    webhook_addr: ListenAddr,
    /// The Service in front of the webhook, in --namespace (names the certificate).
    #[arg(long, env = "FERROLB_WEBHOOK_SERVICE", default_value = "ferrolb-webhook")]
    webhook_service: String,
    /// The ValidatingWebhookConfiguration whose caBundle the controller keeps current.
    #[arg(long, env = "FERROLB_WEBHOOK_CONFIGURATION", default_value = "ferrolb-validating-webhook")]
    webhook_configuration: String,
    /// The Secret in --namespace holding the webhook's certificate.
    #[arg(long, env = "FERROLB_WEBHOOK_SECRET", default_value = "ferrolb-webhook-cert")]
    webhook_secret: String,
    /// Make and renew the certificate and the caBundle (false: cert-manager or you do).
    #[arg(long, env = "FERROLB_WEBHOOK_MANAGE_CERT", default_value_t = true, action = clap::ArgAction::Set)]
    webhook_manage_cert: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args {
        namespace,
        lb_class,
        identity,
        leader_elect,
        lease_duration,
        metrics_addr,
        metrics,
        log_format,
        log_level,
        ignore_exclude_lb,
        memberlist_secret_name,
        webhook,
        metallb,
    } = Args::parse();
    ferrolb_common::init_logging(&log_format, &log_level)?;
    let metrics_addr = metrics.listen_addr(metrics_addr)?;
    let listener = metrics_addr.bind().await.map_err(|e| anyhow::anyhow!("--metrics-addr {metrics_addr}: {e}"))?;
    let client = ferrolb_common::client().await?;
    let state = ProcessState::new();
    let identity = identity.unwrap_or_else(|| format!("ferrolb-controller-{}", std::process::id()));
    let secure = metrics.secure(&client, &identity, metrics_addr)?;
    let webhook_ready = Arc::new(AtomicBool::new(!webhook.enabled));
    let hook = webhook.enabled.then(|| {
        let s = WebhookSettings {
            addr: webhook.webhook_addr,
            service: webhook.webhook_service,
            configuration: webhook.webhook_configuration,
            secret: webhook.webhook_secret,
            manage_cert: webhook.webhook_manage_cert,
        };
        ferrolb_controller::webhook::run(client.clone(), namespace.clone(), s, webhook_ready.clone())
            .instrument(tracing::info_span!("webhook"))
    });
    let hook = async move {
        match hook {
            Some(h) => h.await,
            None => std::future::pending().await,
        }
    };
    let key = {
        let (client, namespace) = (client.clone(), namespace.clone());
        async move {
            if !memberlist_secret_name.is_empty() {
                ferrolb_controller::memberlist::run(client, namespace, memberlist_secret_name)
                    .instrument(tracing::info_span!("memberlist"))
                    .await;
            }
            std::future::pending::<anyhow::Result<()>>().await
        }
    };
    let settings = Settings {
        namespace,
        lb_class,
        identity,
        leader_elect,
        lease_duration,
        metrics_addr,
        ignore_exclude_lb,
        metallb_namespace: metallb.namespace(),
    };
    let stop_rx = ferrolb_common::shutdown_signal("shutting down");
    let rendered = state.metrics.clone();
    let ready = {
        let (r, w) = (state.ready.clone(), webhook_ready);
        move || r.load(Ordering::SeqCst) && w.load(Ordering::SeqCst)
    };
    // The HTTP server on a task of its own, so that probes are accepted on the workers
    // whatever the main thread is doing (see the speaker's main).
    let loaded = state.ready.clone();
    let render = move || match metallb.metallb_metrics {
        true => rendered.render_with_metallb_names(loaded.load(Ordering::SeqCst)),
        false => rendered.render(),
    };
    let http = tokio::spawn(serve(listener, render, ready, secure).instrument(tracing::info_span!("http")));
    tokio::select! {
        r = http => r.map_err(|e| anyhow::anyhow!("the HTTP server ended: {e}"))?,
        r = run(client, settings, state, stop_rx).instrument(tracing::info_span!("controller")) => r,
        r = hook => r,
        r = key => r,
    }
}
