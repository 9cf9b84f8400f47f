//! The speakers' shared heartbeat key: the controller creates its Secret when it does
//! not exist, and never changes it afterwards.
//!
//! Why here and not in the chart: a chart can only keep a random key stable with
//! `lookup`, which returns nothing under `helm template` and GitOps renderers, so
//! every render made a new key and the speakers restarted into two groups that could
//! not hear each other. The Secret is made once, in the cluster, by a component that
//! is always there (MetalLB's controller does the same); a Secret that exists, made by
//! an operator or a previous install, is used as it is.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// The key's name in the Secret (the speakers read it as `FERROLB_MEMBERLIST_SECRET`).
pub const KEY: &str = "secretkey";

/// A fresh key: 32 random bytes, base64 (printable, as an environment variable).
pub fn new_key() -> anyhow::Result<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness for the memberlist key: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(raw))
}

/// What [`ensure`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The Secret was created with a new key.
    Created,
    /// It exists with a usable key.
    Exists,
    /// It exists but its `secretkey` is missing or shorter than 16 bytes: the speakers
    /// will refuse it; left for the operator to fix.
    Unusable(String),
}

/// Create Secret `name` with a new key unless it exists.
pub async fn ensure(
    api: &Api<Secret>,
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Outcome> {
    if let Some(s) = api.get_opt(name).await? {
        return Ok(judge(&s));
    }
    let secret = Secret {
        metadata: ObjectMeta { name: Some(name.to_string()), labels: Some(labels.clone()), ..Default::default() },
        type_: Some("Opaque".into()),
        data: Some([(KEY.to_string(), ByteString(new_key()?.into_bytes()))].into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(Outcome::Created),
        // Another replica was first.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(judge(&api.get(name).await?)),
        Err(e) => Err(e.into()),
    }
}

fn judge(s: &Secret) -> Outcome {
    let key = s.data.as_ref().and_then(|d| d.get(KEY)).map(|b| b.0.trim_ascii().len());
    match key {
        Some(n) if n >= 16 => Outcome::Exists,
        Some(n) => Outcome::Unusable(format!("its {KEY} has {n} bytes; the speakers need at least 16")),
        None => Outcome::Unusable(format!("it has no {KEY}")),
    }
}

/// Keep trying until the Secret exists (the speakers cannot start without it), then
/// return.
pub async fn run(client: Client, namespace: String, name: String) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let labels = [("app.kubernetes.io/managed-by".to_string(), "ferrolb-controller".to_string())].into();
    let mut backoff = Duration::from_millis(500);
    loop {
        match ensure(&api, &name, &labels).await {
            Ok(Outcome::Created) => {
                tracing::info!(secret = %name, "memberlist key created");
                return;
            }
            Ok(Outcome::Exists) => return,
            Ok(Outcome::Unusable(why)) => {
                tracing::error!(secret = %name, "the memberlist Secret is unusable: {why}; the speakers will not start until it is fixed");
                return;
            }
            Err(e) => {
                tracing::warn!(secret = %name, error = %e, retry_in = ?backoff, "could not ensure the memberlist Secret")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
