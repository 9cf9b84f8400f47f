//! The validating admission webhook for ferrolb's custom resources, served by every
//! controller replica (leader or not) over HTTPS.
//!
//! - [`review`]: the answers, pure, from the same model the controller runs;
//! - [`cert`]: the certificate, made and renewed here and kept in a Secret;
//! - this module: the caches the answers need, the certificate loop (Secret, then
//!   the `caBundle` of the ValidatingWebhookConfiguration), and the HTTPS server.
//!
//! The replica is ready (`/readyz`) only once it holds a certificate and its caches
//! are synced: a webhook that refuses nothing because it knows nothing yet would let
//! an overlapping pool through.

pub mod cert;
pub mod review;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferrolb_common::http::ListenAddr;
use ferrolb_common::{AbortOnDrop, reflect};
use ferrolb_crds::{BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::Value;
use tokio::sync::Notify;

/// The paths the chart's ValidatingWebhookConfiguration calls.
pub const POOL_PATH: &str = "/validate-ferrolb-io-v1beta1-ipaddresspool";
/// See [`POOL_PATH`].
pub const ADVERTISEMENT_PATH: &str = "/validate-ferrolb-io-v1beta1-l2advertisement";
/// See [`POOL_PATH`].
pub const BGP_PEER_PATH: &str = "/validate-ferrolb-io-v1beta2-bgppeer";
/// See [`POOL_PATH`].
pub const BGP_ADVERTISEMENT_PATH: &str = "/validate-ferrolb-io-v1beta1-bgpadvertisement";

/// Where and as what the webhook serves.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// HTTPS listen address.
    pub addr: ListenAddr,
    /// The Service in front of the webhook (the certificate's names).
    pub service: String,
    /// The ValidatingWebhookConfiguration whose `caBundle` is kept current.
    pub configuration: String,
    /// The Secret holding the certificate.
    pub secret: String,
    /// Make and renew the certificate (false: someone else writes the Secret and the
    /// `caBundle`, cert-manager say).
    pub manage_cert: bool,
}

/// The serving certificate, swapped in place when the Secret changes.
#[derive(Debug, Default)]
struct Resolver(RwLock<Option<(String, Arc<CertifiedKey>)>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(_, k)| k.clone())
    }
}

impl Resolver {
    /// Serve `cert_pem`/`key_pem` from now on (a no-op when they are already served).
    fn load(&self, cert_pem: &str, key_pem: &str) -> anyhow::Result<bool> {
        if self.0.read().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|(c, _)| c == cert_pem) {
            return Ok(false);
        }
        let ck = ferrolb_common::secure::certified(cert_pem, key_pem)?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some((cert_pem.to_string(), ck));
        Ok(true)
    }
}

struct Caches {
    namespace: String,
    pools: Store<IPAddressPool>,
    advertisements: Store<L2Advertisement>,
    communities: Store<Community>,
    bfd_profiles: Store<BFDProfile>,
}

/// Serve the webhook until the process ends; `ready` says when it can answer.
pub async fn run(
    client: Client,
    namespace: String,
    settings: WebhookSettings,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let listener = settings.addr.bind().await.map_err(|e| anyhow::anyhow!("--webhook-addr {}: {e}", settings.addr))?;
    let changed = Arc::new(Notify::new());
    let (pools, t1) = reflect(Api::<IPAddressPool>::namespaced(client.clone(), &namespace), changed.clone());
    let (advertisements, t2) = reflect(Api::<L2Advertisement>::namespaced(client.clone(), &namespace), changed.clone());
    let (communities, t3) = reflect(Api::<Community>::namespaced(client.clone(), &namespace), changed.clone());
    let (bfd_profiles, t4) = reflect(Api::<BFDProfile>::namespaced(client.clone(), &namespace), changed);
    let _watches = AbortOnDrop(vec![t1, t2, t3, t4]);
    let caches = Arc::new(Caches { namespace: namespace.clone(), pools, advertisements, communities, bfd_profiles });
    let resolver = Arc::new(Resolver::default());
    let certs = cert_loop(client, namespace, settings.clone(), resolver.clone(), caches.clone(), ready);
    tokio::select! {
        r = certs => r,
        r = serve(listener, resolver, caches) => r,
    }
}

/// Keep the certificate current and served: at start, then every minute (a renewal
/// by another replica is picked up within that).
async fn cert_loop(
    client: Client,
    namespace: String,
    s: WebhookSettings,
    resolver: Arc<Resolver>,
    caches: Arc<Caches>,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let names = cert::dns_names(&s.service, &namespace);
    loop {
        let outcome = async {
            let secret = if s.manage_cert {
                ensure_secret(&secrets, &s.secret, &names).await?
            } else {
                secrets.get(&s.secret).await?
            };
            let (ca, crt, key) = cert::read(&secret)
                .ok_or_else(|| anyhow::anyhow!("Secret {}/{} lacks ca.crt, tls.crt or tls.key", namespace, s.secret))?;
            if resolver.load(&crt, &key)? {
                tracing::info!(secret = %s.secret, "webhook certificate loaded");
            }
            if s.manage_cert {
                patch_ca_bundle(&configs, &s.configuration, &ca).await?;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "webhook certificate not ready; retrying");
        }
        let synced =
            caches.pools.wait_until_ready().await.is_ok() && caches.advertisements.wait_until_ready().await.is_ok();
        let has_cert = resolver.0.read().unwrap_or_else(|p| p.into_inner()).is_some();
        ready.store(synced && has_cert, Ordering::SeqCst);
        let pause = if has_cert { Duration::from_secs(60) } else { Duration::from_secs(2) };
        tokio::time::sleep(pause).await;
    }
}

/// The Secret with a current certificate: created, or renewed when due. Two replicas
/// may race; the loser's write conflicts and it reads the winner's.
async fn ensure_secret(api: &Api<Secret>, name: &str, names: &[String]) -> anyhow::Result<Secret> {
    let now = chrono::Utc::now();
    let current = api.get_opt(name).await?;
    let why = match &current {
        None => "no certificate yet".to_string(),
        Some(s) => match cert::renewal_due(s, names, now) {
            None => return Ok(current.expect("matched Some")),
            Some(why) => why,
        },
    };
    let previous_ca = current.as_ref().and_then(cert::read).map(|(ca, _, _)| ca);
    let bundle = cert::generate(names, now, previous_ca.as_deref())?;
    let mut secret = cert::secret(&bundle, names);
    secret.metadata.name = Some(name.to_string());
    let written = match current {
        None => api.create(&PostParams::default(), &secret).await,
        Some(old) => {
            secret.metadata.resource_version = old.metadata.resource_version.clone();
            secret.metadata.labels = old.metadata.labels.clone();
            api.replace(name, &PostParams::default(), &secret).await
        }
    };
    match written {
        Ok(s) => {
            tracing::info!(secret = %name, reason = %why, not_after = %bundle.not_after, "webhook certificate issued");
            Ok(s)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(api.get(name).await?),
        Err(e) => Err(e.into()),
    }
}

/// Set every webhook's `caBundle` in `name` to `ca_pem` (a JSON patch per webhook,
/// guarded by a test of its name, so an edit meanwhile fails instead of landing on
/// another webhook).
async fn patch_ca_bundle(api: &Api<ValidatingWebhookConfiguration>, name: &str, ca_pem: &str) -> anyhow::Result<()> {
    let Some(cfg) = api.get_opt(name).await? else {
        anyhow::bail!("ValidatingWebhookConfiguration {name} not found: the API server cannot call the webhook");
    };
    let want = ca_pem.as_bytes();
    let mut ops = Vec::new();
    for (i, w) in cfg.webhooks.iter().flatten().enumerate() {
        if w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(want) {
            ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": w.name}));
            ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": cert::ca_bundle(ca_pem)}));
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))?;
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch)).await?;
    tracing::info!(configuration = %name, "caBundle updated");
    Ok(())
}

async fn serve(listener: tokio::net::TcpListener, resolver: Arc<Resolver>, caches: Arc<Caches>) -> anyhow::Result<()> {
    let app = {
        let route = |kind: Kind| {
            let c = caches.clone();
            axum::routing::post(move |body: axum::body::Bytes| answer(c.clone(), kind, body))
        };
        axum::Router::new()
            .route(POOL_PATH, route(Kind::Pool))
            .route(ADVERTISEMENT_PATH, route(Kind::Advertisement))
            .route(BGP_PEER_PATH, route(Kind::BgpPeer))
            .route(BGP_ADVERTISEMENT_PATH, route(Kind::BgpAdvertisement))
    };
    let config = ferrolb_common::secure::server_config(resolver)?;
    ferrolb_common::secure::serve_tls(listener, config, app, "the validating webhook").await
}

#[derive(Clone, Copy)]
enum Kind {
    Pool,
    Advertisement,
    BgpPeer,
    BgpAdvertisement,
}

async fn answer(caches: Arc<Caches>, kind: Kind, body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let review: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (http::StatusCode::BAD_REQUEST, format!("not an AdmissionReview: {e}")).into_response(),
    };
    let verdict = decide(&caches, kind, &review);
    if let Some(why) = &verdict.denied {
        let req = &review["request"];
        tracing::info!(
            kind = req["kind"]["kind"].as_str().unwrap_or_default(),
            name = req["name"].as_str().unwrap_or_default(),
            operation = req["operation"].as_str().unwrap_or_default(),
            reason = %why,
            "admission refused"
        );
    }
    let out = review::respond(&review, &verdict);
    ([(http::header::CONTENT_TYPE, "application/json")], out.to_string()).into_response()
}

fn decide(caches: &Caches, kind: Kind, review: &Value) -> review::Verdict {
    let object = review["request"]["object"].clone();
    let pools: Vec<IPAddressPool> = caches.pools.state().iter().map(|p| (**p).clone()).collect();
    let now = k8s_openapi::jiff::Timestamp::now();
    let refuse = |e: serde_json::Error| review::Verdict {
        denied: Some(format!("the object does not decode: {e}")),
        warnings: Vec::new(),
    };
    let same_ns = |ns: Option<String>| ns.is_none_or(|n| n == caches.namespace);
    match kind {
        Kind::Pool => match serde_json::from_value::<IPAddressPool>(object) {
            Ok(p) if same_ns(kube::ResourceExt::namespace(&p)) => review::ip_address_pool(&p, &pools, now),
            Ok(p) => foreign(&caches.namespace, kube::ResourceExt::namespace(&p)),
            Err(e) => refuse(e),
        },
        Kind::Advertisement => match serde_json::from_value::<L2Advertisement>(object) {
            Ok(a) if same_ns(kube::ResourceExt::namespace(&a)) => {
                let advs: Vec<L2Advertisement> = caches.advertisements.state().iter().map(|a| (**a).clone()).collect();
                review::l2_advertisement(&a, &advs, &pools, now)
            }
            Ok(a) => foreign(&caches.namespace, kube::ResourceExt::namespace(&a)),
            Err(e) => refuse(e),
        },
        Kind::BgpPeer => match serde_json::from_value::<BGPPeer>(object) {
            Ok(p) if same_ns(kube::ResourceExt::namespace(&p)) => {
                review::bgp_peer(&p, &caches.namespace, &ferrolb_common::all(&caches.bfd_profiles))
            }
            Ok(p) => foreign(&caches.namespace, kube::ResourceExt::namespace(&p)),
            Err(e) => refuse(e),
        },
        Kind::BgpAdvertisement => match serde_json::from_value::<BGPAdvertisement>(object) {
            Ok(a) if same_ns(kube::ResourceExt::namespace(&a)) => {
                review::bgp_advertisement(&a, &pools, &ferrolb_common::all(&caches.communities), &caches.namespace)
            }
            Ok(a) => foreign(&caches.namespace, kube::ResourceExt::namespace(&a)),
            Err(e) => refuse(e),
        },
    }
}

/// An object in another namespace: ferrolb never reads it; say so, admit it.
fn foreign(ours: &str, theirs: Option<String>) -> review::Verdict {
    review::Verdict {
        denied: None,
        warnings: vec![format!(
            "ferrolb reads its configuration from namespace {ours} only; this object in {} is ignored",
            theirs.unwrap_or_default()
        )],
    }
}
