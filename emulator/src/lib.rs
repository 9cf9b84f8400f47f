//! ferrolb-emulator: a Kubernetes API-server emulator for ferrolb's tests and sandbox.
//!
//! There is no kube-apiserver on the machines ferrolb is developed on, so this
//! crate stands in for one, behaving like the real server wherever a client
//! (kube-runtime, kubectl) can tell: resourceVersions from one counter, watches
//! that resume or answer 410, bookmarks, the `/status` subresource, patches of
//! every kind including server-side apply, finalizers, selectors, discovery,
//! CRDs, Table output, and Service ClusterIP/NodePort allocation.
//!
//! ```no_run
//! # async fn demo() {
//! let emu = ferrolb_emulator::Emulator::new(Default::default());
//! // In-process: kube::Client::new(emu.router(), "default")
//! // Over TCP:
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! emu.serve(listener).await.unwrap();
//! # }
//! ```

pub mod admission;
pub mod auth;
pub mod error;
mod events;
mod http;
pub mod patch;
mod policy;
pub mod protobuf;
pub mod resources;
pub mod reviews;
pub mod selectors;
pub mod services;
pub mod store;
pub mod table;
pub mod tls;
pub mod validation;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use services::ServiceConfig;
use store::{Event, State};
pub use tls::ServingCert;
use tokio::sync::broadcast;

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How many events are kept for watch resumption; older resourceVersions get 410 Gone.
    pub history_limit: usize,
    /// Service networking: ClusterIP ranges and the NodePort range.
    pub services: ServiceConfig,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Largest request body accepted (the real server's limit is 3 MiB).
    pub max_body_bytes: usize,
    /// Bearer tokens and authorization; `None` serves everyone with no authentication.
    /// In-process clients (`router()`) are the server's own loopback client, in
    /// `system:masters`, as kube-apiserver's loopback client is.
    pub auth: Option<auth::Auth>,
    /// Where `pods/log` (`kubectl logs`) reads a container's output: the kubelet's
    /// part, which only whoever runs the containers can play.
    pub pod_logs: Option<PodLogs>,
    /// How admission webhooks are dialed; `None` connects from this process's network.
    pub webhook_dialer: Option<admission::Dialer>,
}

/// `(namespace, pod, container)` to the container's output, or `None` when it has none.
pub type PodLogSource = dyn Fn(&str, &str, Option<&str>) -> Option<String> + Send + Sync;

/// A source of container output for `pods/log`.
#[derive(Clone)]
pub struct PodLogs(pub Arc<PodLogSource>);

impl std::fmt::Debug for PodLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodLogs(..)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            history_limit: 10_000,
            services: ServiceConfig::default(),
            bookmark_interval: Duration::from_secs(5),
            max_body_bytes: 3 * 1024 * 1024,
            auth: None,
            pod_logs: None,
            webhook_dialer: None,
        }
    }
}

/// One request as RBAC would see it: who, which verb on which resource, and the answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    /// The client's address (absent for in-process clients).
    pub peer: Option<std::net::IpAddr>,
    /// The authenticated user (absent when authentication is off).
    pub user: Option<String>,
    /// Whether the request was authorized.
    pub allowed: bool,
    /// RBAC verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Resource, with `/subresource` when one was addressed.
    pub resource: String,
}

pub(crate) struct Inner {
    access: Mutex<Vec<Access>>,
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Event>>,
    close_watches: tokio::sync::watch::Sender<u64>,
    config: Config,
}

/// A running emulated API server; cheap to clone, all clones share state.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").field("resource_version", &self.resource_version()).finish()
    }
}

impl Emulator {
    /// A fresh server with the built-in types and the default namespaces.
    pub fn new(config: Config) -> Self {
        let (events, _) = broadcast::channel(4096);
        let (close_watches, _) = tokio::sync::watch::channel(0);
        let state = State::new(config.history_limit, config.services.clone());
        Emulator {
            inner: Arc::new(Inner {
                access: Mutex::new(Vec::new()),
                state: Mutex::new(state),
                events,
                close_watches,
                config,
            }),
        }
    }

    /// The HTTP service: use with `kube::Client::new(emu.router(), "default")` or serve it.
    pub fn router(&self) -> axum::Router {
        http::router(self.inner.clone())
    }

    /// Serve HTTP on `listener` until the task is dropped. Connections have TCP_NODELAY
    /// set, as kube-apiserver's (Go sets it on every TCP connection): with Nagle's
    /// algorithm on, each small watch event after the first waits for the client's
    /// delayed ACK, about 40 ms.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "could not set TCP_NODELAY on an API connection");
            }
        });
        axum::serve(listener, self.router().into_make_service_with_connect_info::<std::net::SocketAddr>()).await
    }

    /// Serve the API over HTTPS with `cert` (HTTP/1.1, as kube-apiserver's clients here
    /// speak it), until the listener fails.
    pub async fn serve_tls(&self, listener: tokio::net::TcpListener, cert: &ServingCert) -> std::io::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.config.clone());
        let router = self.router();
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an API connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "could not set TCP_NODELAY on an API connection");
            }
            let acceptor = acceptor.clone();
            let svc = router.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            tokio::spawn(async move {
                let stream = match acceptor.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                };
                let io = hyper_util::rt::TokioIo::new(stream);
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).with_upgrades().await;
            });
        }
    }

    /// Every resource request served so far, as RBAC would see it (for least-privilege tests).
    pub fn access_log(&self) -> Vec<Access> {
        self.inner.access.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version()
    }

    /// Drop the whole watch history, so that resuming any earlier watch answers 410 Gone.
    pub fn compact_history(&self) {
        self.lock().compact();
    }

    /// Everything stored now, as an etcd backup takes it.
    pub fn snapshot(&self) -> store::Snapshot {
        self.lock().snapshot()
    }

    /// Come back from `snap` as an API server restarted on an etcd restored from that
    /// backup: objects, types and resourceVersions as they were then, no watch history,
    /// every open watch ended. A client resuming a watch at a version it saw after the
    /// backup is answered 504 "Too large resource version" and must list again.
    pub fn restore(&self, snap: &store::Snapshot) {
        self.lock().restore(snap);
        self.close_watches();
    }

    /// End every open watch stream, as an API server restart or a load balancer would.
    pub fn close_watches(&self) {
        self.inner.close_watches.send_modify(|g| *g += 1);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner)
    }
}

pub(crate) fn lock(inner: &Inner) -> MutexGuard<'_, State> {
    // A panic while holding the lock would be an emulator bug; keep serving with the state as is.
    inner.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Write a kubeconfig pointing at `server` (e.g. `http://127.0.0.1:6443`).
pub fn write_kubeconfig(path: &std::path::Path, server: &str) -> std::io::Result<()> {
    write_kubeconfig_with_token(path, server, None)
}

/// Write a kubeconfig pointing at `server` that authenticates with a bearer `token`.
pub fn write_kubeconfig_with_token(path: &std::path::Path, server: &str, token: Option<&str>) -> std::io::Result<()> {
    write_kubeconfig_full(path, server, None, token)
}

/// Write a kubeconfig pointing at `server`, trusting the CA `ca_pem` (for `https://`),
/// authenticating with a bearer `token`.
pub fn write_kubeconfig_full(
    path: &std::path::Path,
    server: &str,
    ca_pem: Option<&str>,
    token: Option<&str>,
) -> std::io::Result<()> {
    use base64::Engine;
    let user = match token {
        Some(t) => format!("{{token: {}}}", serde_json::Value::from(t)),
        None => "{}".to_string(),
    };
    let ca = ca_pem
        .map(|p| format!("    certificate-authority-data: {}\n", base64::engine::general_purpose::STANDARD.encode(p)))
        .unwrap_or_default();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ferrolb-emulator\n  cluster:\n    server: {server}\n{ca}\
         contexts:\n- name: ferrolb-emulator\n  context:\n    cluster: ferrolb-emulator\n    user: ferrolb\n    namespace: default\n\
         current-context: ferrolb-emulator\nusers:\n- name: ferrolb\n  user: {user}\npreferences: {{}}\n"
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}
