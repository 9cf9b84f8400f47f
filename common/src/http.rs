//! The HTTP endpoint both binaries serve: `/metrics`, `/healthz` and `/readyz`,
//! and the listen address flag they share.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::secure::{Decision, Secure};

/// Where to listen. `:7472` (as the chart and Go programs write it) means every
/// address of both families; `0.0.0.0:7472` or `[::1]:7472` exactly that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddr {
    /// Every local address on this port.
    Any(u16),
    /// Exactly this address.
    Exact(SocketAddr),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(port) = s.strip_prefix(':') {
            return port
                .parse()
                .map(ListenAddr::Any)
                .map_err(|_| format!("{s:?}: the port after ':' must be a number from 0 to 65535"));
        }
        s.parse().map(ListenAddr::Exact).map_err(|_| format!("{s:?}: want :PORT, IPv4:PORT or [IPv6]:PORT"))
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Any(p) => write!(f, ":{p}"),
            ListenAddr::Exact(a) => write!(f, "{a}"),
        }
    }
}

impl ListenAddr {
    /// Bind a listener: for `Any`, the IPv6 wildcard (which takes IPv4 too), or the IPv4
    /// one on a node without IPv6.
    pub async fn bind(self) -> std::io::Result<tokio::net::TcpListener> {
        match self {
            ListenAddr::Exact(a) => tokio::net::TcpListener::bind(a).await,
            ListenAddr::Any(port) => {
                match tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)).await {
                    Ok(l) => Ok(l),
                    Err(_) => {
                        tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)).await
                    }
                }
            }
        }
    }
}

/// Serve `/metrics` (from `render`), `/healthz` (the process runs) and `/readyz`
/// (`ready()` says so) on `listener` until the process ends: in plain HTTP, or, with
/// `secure`, over HTTPS with `/metrics` for authorized bearer tokens only.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
    ready: impl Fn() -> bool + Clone + Send + Sync + 'static,
    secure: Option<Secure>,
) -> anyhow::Result<()> {
    use axum::response::IntoResponse;
    use axum::routing::get;
    let reviewer = secure.as_ref().map(|s| s.reviewer.clone());
    let metrics = move |headers: http::HeaderMap| {
        let (render, reviewer) = (render.clone(), reviewer.clone());
        async move {
            let Some(reviewer) = reviewer else { return render().into_response() };
            let token = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("")
                .trim();
            match reviewer.decide(token, "/metrics").await {
                Ok(Decision::Allowed) => render().into_response(),
                Ok(Decision::Unauthenticated) => (
                    http::StatusCode::UNAUTHORIZED,
                    [(http::header::WWW_AUTHENTICATE, "Bearer")],
                    "Unauthorized: a bearer token the API server authenticates is required\n",
                )
                    .into_response(),
                Ok(Decision::Forbidden(user)) => (
                    http::StatusCode::FORBIDDEN,
                    format!("Forbidden (user={user}, verb=get, nonResourceURL=/metrics)\n"),
                )
                    .into_response(),
                Err(e) => {
                    tracing::warn!(error = %e, "a metrics request could not be authorized");
                    (http::StatusCode::SERVICE_UNAVAILABLE, "the API server could not review the token\n")
                        .into_response()
                }
            }
        }
    };
    let app =
        axum::Router::new().route("/metrics", get(metrics)).route("/healthz", get(|| std::future::ready("ok"))).route(
            "/readyz",
            get(move || {
                std::future::ready(if ready() {
                    (http::StatusCode::OK, "ok")
                } else {
                    (http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                })
            }),
        );
    if let Some(s) = secure {
        return crate::secure::serve_tls(listener, s.tls, app, "metrics and health").await;
    }
    tracing::info!(addr = %listener.local_addr()?, "serving metrics and health");
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_as_the_chart_writes_them() {
        let ok = |s: &str| s.parse::<ListenAddr>().unwrap();
        assert_eq!(ok(":7472"), ListenAddr::Any(7472));
        assert_eq!(ok("0.0.0.0:7473"), ListenAddr::Exact("0.0.0.0:7473".parse().unwrap()));
        assert_eq!(ok("[::1]:9"), ListenAddr::Exact("[::1]:9".parse().unwrap()));
        for bad in [":", ":http", ":70000", "7472", "localhost:7472", ""] {
            let e = bad.parse::<ListenAddr>().unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert_eq!(ok(":7472").to_string(), ":7472");
    }

    #[tokio::test]
    async fn any_binds_every_family_and_readyz_follows_the_flag() {
        let l = ListenAddr::Any(0).bind().await.unwrap();
        let port = l.local_addr().unwrap().port();
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let ready = Arc::new(AtomicBool::new(false));
        let r = ready.clone();
        tokio::spawn(serve(l, || "m 1\n".to_string(), move || r.load(Ordering::SeqCst), None));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/readyz").await.starts_with("HTTP/1.0 503"));
        ready.store(true, Ordering::SeqCst);
        assert!(get("/readyz").await.starts_with("HTTP/1.0 200"));
        assert!(get("/metrics").await.ends_with("m 1\n"));
    }
}
