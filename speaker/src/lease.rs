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

/// The label every speaker Lease carries, and the selector the speakers watch them by
/// (the controller's leader Lease lives in the same namespace and is no member).
pub const SELECTOR: &str = "app.kubernetes.io/component=speaker";

/// Write this node's Lease: held by `holder`, or released with `None`.
pub async fn write(api: &Api<Lease>, node: &str, duration: Duration, holder: Option<&str>) -> kube::Result<()> {
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "labels": {"app.kubernetes.io/component": "speaker"}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration.as_secs().max(1),
                 "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())},
    });
    api.patch(node, &PatchParams::apply(SPEAKER_FIELD_MANAGER).force(), &Patch::Apply(&body)).await.map(|_| ())
}

/// Renew the Lease until the task is aborted; failures are counted in `failures`.
pub fn spawn_renewal(
    api: Api<Lease>,
    node: String,
    duration: Duration,
    failures: prometheus::IntCounter,
) -> tokio::task::JoinHandle<()> {
    use tracing::Instrument;
    let span = tracing::info_span!("lease");
    tokio::spawn(
        async move {
            let mut t = tokio::time::interval((duration / 3).max(Duration::from_secs(1)));
            loop {
                t.tick().await;
                if let Err(e) = write(&api, &node, duration, Some(&node)).await {
                    failures.inc();
                    tracing::warn!(error = %e, "could not renew the membership Lease");
                }
            }
        }
        .instrument(span),
    )
}
