//! The speaker's membership Lease, named after its node: held while the speaker
//! runs (joining), renewed a third of its duration apart, and released on a
//! graceful stop (leaving). Fail-static: a renewal that fails is logged and the
//! speaker keeps announcing.

use std::time::Duration;

use ferrolb_crds::SPEAKER_FIELD_MANAGER;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::membership::detector::{RING_ANNOTATION, RING_VALUE};

/// The label every speaker Lease carries, and the selector the speakers watch them by
/// (the controller's leader Lease lives in the same namespace and is no member).
pub const SELECTOR: &str = "app.kubernetes.io/component=speaker";

/// How this speaker's Lease reads: its duration, and whether it says the speaker
/// speaks the ring heartbeat protocol (so its peers send it ring heartbeats, not the
/// previous release's all-to-all ones).
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub duration: Duration,
    pub ring: bool,
}

/// Write this node's Lease: held by `holder`, or released with `None`.
pub async fn write(api: &Api<Lease>, node: &str, spec: Spec, holder: Option<&str>) -> kube::Result<()> {
    let duration = spec.duration;
    let annotations = match spec.ring {
        true => json!({RING_ANNOTATION: RING_VALUE}),
        false => json!({}),
    };
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "labels": {"app.kubernetes.io/component": "speaker"}, "annotations": annotations},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration.as_secs().max(1),
                 "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())},
    });
    api.patch(node, &PatchParams::apply(SPEAKER_FIELD_MANAGER).force(), &Patch::Apply(&body)).await.map(|_| ())
}

/// Take this node's Lease, retrying with back-off (1 s doubling to 30 s) while the API
/// server refuses (its namespace does not exist yet, RBAC not there yet) or does not
/// answer; the speaker stays up and not ready meanwhile. `false` when `shutdown` came
/// first.
pub async fn acquire(
    api: &Api<Lease>,
    node: &str,
    spec: Spec,
    health: &crate::api::Health,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    loop {
        match health.call("take the membership Lease", write(api, node, spec, Some(node))).await {
            Ok(()) => return true,
            Err(e) if first => {
                tracing::warn!(error = %e, "could not take the membership Lease; retrying with back-off, not ready until it is held");
            }
            Err(e) => tracing::debug!(error = %e, retry_in = ?backoff, "could not take the membership Lease"),
        }
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return false,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Renew the Lease until the task is aborted; failures are counted in `failures` (and
/// by kind, logged once per outage, by `health`).
pub fn spawn_renewal(
    api: Api<Lease>,
    node: String,
    spec: Spec,
    failures: prometheus::IntCounter,
    health: crate::api::Health,
) -> tokio::task::JoinHandle<()> {
    use tracing::Instrument;
    let span = tracing::info_span!("lease");
    tokio::spawn(
        async move {
            let mut t = tokio::time::interval((spec.duration / 3).max(Duration::from_secs(1)));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                t.tick().await;
                if health.call("renew the membership Lease", write(&api, &node, spec, Some(&node))).await.is_err() {
                    failures.inc();
                }
            }
        }
        .instrument(span),
    )
}
