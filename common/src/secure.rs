//! `/metrics` over HTTPS for authorized scrapers only, as kube-rbac-proxy (and
//! MetalLB 0.16's secure metrics) do it: the bearer token of each request is checked
//! with a TokenReview, and the user it names with a SubjectAccessReview for `get` on
//! the non-resource URL `/metrics`. Health and readiness stay open on the same
//! listener, for the kubelet's probes.
//!
//! Decisions are cached for [`DECISION_TTL`] by a keyed hash of the token (a scraper
//! every 15 s costs two API requests per 10 s at most), in a bounded map; at most
//! [`CONCURRENT_REVIEWS`] reviews run at once, so a flood of made-up tokens costs the
//! API server a bounded rate.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::http::ListenAddr;

/// How long an answer for a token is reused.
pub const DECISION_TTL: Duration = Duration::from_secs(10);
/// Reviews in flight at once.
pub const CONCURRENT_REVIEWS: usize = 4;
/// Tokens remembered at once.
const CACHE_ENTRIES: usize = 256;
/// One review's deadline.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// How the metrics endpoint is protected; the flags both binaries share.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsProtection {
    /// Listen on this address only, with the port of --metrics-addr (the chart passes
    /// the pod IP from the downward API; empty: as --metrics-addr says).
    #[arg(long, env = "FERROLB_METRICS_BIND_ADDRESS", default_value = "")]
    pub metrics_bind_address: String,
    /// Serve over HTTPS and answer /metrics only to bearer tokens the API server
    /// authenticates (TokenReview) and authorizes for `get` on the non-resource URL
    /// /metrics (SubjectAccessReview). /healthz and /readyz stay open.
    #[arg(long, env = "FERROLB_METRICS_SECURE", default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_secure: bool,
    /// With --metrics-secure: a directory holding `tls.crt` and `tls.key` (a mounted
    /// Secret), re-read when they change; empty: a self-signed certificate made at start.
    #[arg(long, env = "FERROLB_METRICS_TLS_DIR", default_value = "")]
    pub metrics_tls_dir: String,
}

impl MetricsProtection {
    /// The bind address, when one is set.
    pub fn bind_address(&self) -> anyhow::Result<Option<IpAddr>> {
        let s = self.metrics_bind_address.trim();
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|_| anyhow::anyhow!("--metrics-bind-address {s:?}: not an IP address"))
    }
}

/// `/metrics` over HTTPS for authorized scrapers.
#[derive(Clone)]
pub struct Secure {
    /// The TLS configuration (certificate).
    pub tls: Arc<rustls::ServerConfig>,
    /// Who may read `/metrics`.
    pub reviewer: Arc<Reviewer>,
}

impl MetricsProtection {
    /// The listen address: `addr`, on the bind address when one is set.
    pub fn listen_addr(&self, addr: ListenAddr) -> anyhow::Result<ListenAddr> {
        Ok(match (self.bind_address()?, addr) {
            (Some(ip), ListenAddr::Any(port)) => ListenAddr::Exact(SocketAddr::new(ip, port)),
            (Some(ip), ListenAddr::Exact(a)) => ListenAddr::Exact(SocketAddr::new(ip, a.port())),
            (None, a) => a,
        })
    }

    /// With --metrics-secure, how to serve: the certificate (from the directory, or
    /// self-signed for `who`, localhost and the address `addr` names) and a reviewer
    /// asking through `client`.
    pub fn secure(&self, client: &kube::Client, who: &str, addr: ListenAddr) -> anyhow::Result<Option<Secure>> {
        if !self.metrics_secure {
            return Ok(None);
        }
        let mut names = vec![who.to_string(), "localhost".to_string()];
        if let ListenAddr::Exact(a) = addr
            && !a.ip().is_unspecified()
        {
            names.push(a.ip().to_string());
        }
        let cert = match self.metrics_tls_dir.trim() {
            "" => Certificate::self_signed(&names)?,
            dir => Certificate::from_dir(std::path::Path::new(dir))
                .map_err(|e| anyhow::anyhow!("--metrics-tls-dir: {e}"))?,
        };
        Ok(Some(Secure { tls: server_config(Arc::new(cert))?, reviewer: Arc::new(Reviewer::new(client.clone())) }))
    }
}

/// What a request may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The token's user may read /metrics.
    Allowed,
    /// No token, or one the API server does not know.
    Unauthenticated,
    /// Known user, not authorized.
    Forbidden(String),
}

/// Asks the API server about tokens, and remembers the answers for a while.
pub struct Reviewer {
    client: kube::Client,
    hasher: std::collections::hash_map::RandomState,
    cache: Mutex<HashMap<u64, (Instant, Decision)>>,
    permits: tokio::sync::Semaphore,
}

impl Reviewer {
    /// Reviews through `client`.
    pub fn new(client: kube::Client) -> Self {
        Reviewer {
            client,
            hasher: Default::default(),
            cache: Mutex::new(HashMap::new()),
            permits: tokio::sync::Semaphore::new(CONCURRENT_REVIEWS),
        }
    }

    /// Whether the bearer token `token` may `get` `path`; an error when the API server
    /// could not answer.
    pub async fn decide(&self, token: &str, path: &str) -> anyhow::Result<Decision> {
        if token.is_empty() {
            return Ok(Decision::Unauthenticated);
        }
        let key = self.hasher.hash_one((token, path));
        if let Some((at, d)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && at.elapsed() < DECISION_TTL
        {
            return Ok(d.clone());
        }
        let _permit = self.permits.acquire().await?;
        let d = tokio::time::timeout(REVIEW_TIMEOUT, self.review(token, path))
            .await
            .map_err(|_| anyhow::anyhow!("the API server did not answer within {REVIEW_TIMEOUT:?}"))??;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < DECISION_TTL);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), d.clone()));
        Ok(d)
    }

    async fn review(&self, token: &str, path: &str) -> anyhow::Result<Decision> {
        let tr = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), ..Default::default() },
            ..Default::default()
        };
        let tr = Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &tr).await?;
        let status = tr.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(Decision::Unauthenticated);
        };
        let name = user.username.clone().unwrap_or_default();
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_string()),
                    verb: Some("get".into()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let sar = Api::<SubjectAccessReview>::all(self.client.clone()).create(&PostParams::default(), &sar).await?;
        Ok(if sar.status.is_some_and(|s| s.allowed) { Decision::Allowed } else { Decision::Forbidden(name) })
    }
}

/// The serving certificate: self-signed at start, or read from a directory and
/// re-read when its files change.
#[derive(Debug)]
pub struct Certificate {
    dir: Option<PathBuf>,
    current: RwLock<(Option<SystemTime>, Instant, Arc<CertifiedKey>)>,
}

/// How often a certificate directory is looked at again.
const RECHECK: Duration = Duration::from_secs(10);

impl Certificate {
    /// A self-signed certificate for `names` (DNS names or IP addresses).
    pub fn self_signed(names: &[String]) -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate()?;
        let params = rcgen::CertificateParams::new(names.to_vec())?;
        let cert = params.self_signed(&key)?;
        let ck = certified(&cert.pem(), &key.serialize_pem())?;
        Ok(Certificate { dir: None, current: RwLock::new((None, Instant::now(), ck)) })
    }

    /// The certificate in `dir` (`tls.crt`, `tls.key`).
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let (mtime, ck) = read_dir(dir)?;
        Ok(Certificate { dir: Some(dir.to_path_buf()), current: RwLock::new((Some(mtime), Instant::now(), ck)) })
    }

    fn refresh(&self) {
        let Some(dir) = &self.dir else { return };
        let (mtime, checked) = {
            let c = self.current.read().unwrap_or_else(|p| p.into_inner());
            (c.0, c.1)
        };
        if checked.elapsed() < RECHECK {
            return;
        }
        let now_mtime = modified(dir).ok();
        let mut c = self.current.write().unwrap_or_else(|p| p.into_inner());
        c.1 = Instant::now();
        if now_mtime.is_some() && now_mtime != mtime {
            match read_dir(dir) {
                Ok((m, ck)) => {
                    tracing::info!(dir = %dir.display(), "metrics certificate reloaded");
                    *c = (Some(m), Instant::now(), ck);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "metrics certificate not reloaded; keeping the previous one")
                }
            }
        }
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).2.clone())
    }
}

fn modified(dir: &Path) -> anyhow::Result<SystemTime> {
    let one = |f: &str| {
        let p = dir.join(f);
        std::fs::metadata(&p).and_then(|m| m.modified()).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    Ok(one("tls.crt")?.max(one("tls.key")?))
}

fn read_dir(dir: &Path) -> anyhow::Result<(SystemTime, Arc<CertifiedKey>)> {
    let mtime = modified(dir)?;
    let read =
        |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(f).display()));
    Ok((mtime, certified(&read("tls.crt")?, &read("tls.key")?)?))
}

/// A certificate chain and key in PEM, ready to serve.
pub fn certified(cert_pem: &str, key_pem: &str) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in the PEM data");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(Arc::new(CertifiedKey::from_der(certs, key, &provider)?))
}

/// A TLS server configuration for HTTP/1.1 with `resolver`'s certificate.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve `app` over TLS on `listener` until the process ends; `what` names the
/// endpoint in logs. A handshake gets 10 s.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
    what: &'static str,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tracing::info!(addr = %listener.local_addr()?, "serving {what} over HTTPS");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a {what} connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "{what}: TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "{what}: TLS handshake timed out"),
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use ferrolb_emulator::auth::{Auth, Mode, User};
    use kube::api::DynamicObject;
    use serde_json::json;

    use super::*;

    async fn apply(client: &kube::Client, obj: serde_json::Value) {
        let obj: DynamicObject = serde_json::from_value(obj).unwrap();
        let plural = match obj.types.as_ref().unwrap().kind.as_str() {
            "ClusterRole" => "clusterroles",
            _ => "clusterrolebindings",
        };
        let ar = kube::discovery::ApiResource {
            group: "rbac.authorization.k8s.io".into(),
            version: "v1".into(),
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind: obj.types.as_ref().unwrap().kind.clone(),
            plural: plural.into(),
        };
        Api::<DynamicObject>::all_with(client.clone(), &ar).create(&PostParams::default(), &obj).await.unwrap();
    }

    #[tokio::test]
    async fn only_a_token_whose_user_may_get_metrics_is_allowed() {
        let auth = Auth::new(Mode::Rbac)
            .with_token("prom-token", User::service_account("mon", "prom"))
            .with_token("other-token", User::service_account("mon", "other"));
        let emu = ferrolb_emulator::Emulator::new(ferrolb_emulator::Config {
            auth: Some(auth),
            ..ferrolb_emulator::Config::default()
        });
        let client = kube::Client::new(emu.router(), "default");
        apply(
            &client,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "reader"},
                   "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}),
        )
        .await;
        apply(
            &client,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "reader"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
                   "subjects": [{"kind": "ServiceAccount", "name": "prom", "namespace": "mon"}]}),
        )
        .await;
        let r = Reviewer::new(client);
        assert_eq!(r.decide("prom-token", "/metrics").await.unwrap(), Decision::Allowed);
        assert_eq!(
            r.decide("other-token", "/metrics").await.unwrap(),
            Decision::Forbidden("system:serviceaccount:mon:other".into())
        );
        assert_eq!(r.decide("made-up", "/metrics").await.unwrap(), Decision::Unauthenticated);
        assert_eq!(r.decide("", "/metrics").await.unwrap(), Decision::Unauthenticated);
        assert_eq!(
            r.decide("prom-token", "/debug").await.unwrap(),
            Decision::Forbidden("system:serviceaccount:mon:prom".into()),
            "the grant is for /metrics only"
        );
    }

    #[test]
    fn a_certificate_directory_is_read_and_bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("ferrolb-metrics-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = Certificate::from_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("tls.crt"), "{e}");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), "not a key").unwrap();
        assert!(Certificate::from_dir(&dir).is_err());
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
        Certificate::from_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
