//! `ferrolb-emulator`: serve the Kubernetes API-server emulator over HTTP and
//! write a kubeconfig that points at it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ferrolb_emulator::auth::{Auth, Mode};
use ferrolb_emulator::{Config, Emulator, ServiceConfig, ServingCert, write_kubeconfig_full};

/// A Kubernetes API-server emulator for ferrolb's tests and sandbox.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the kubeconfig names the real one).
    #[arg(long, env = "FERROLB_EMULATOR_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write a kubeconfig pointing at the emulator.
    #[arg(long, env = "FERROLB_EMULATOR_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Events kept for watch resumption; older resourceVersions get 410 Gone.
    #[arg(long, env = "FERROLB_EMULATOR_HISTORY", default_value_t = 10_000)]
    history: usize,
    /// Service ClusterIP ranges, comma-separated, primary family first.
    #[arg(
        long,
        env = "FERROLB_EMULATOR_SERVICE_CIDRS",
        default_value = "10.96.0.0/16,fd42:f1b:96::/112",
        value_delimiter = ','
    )]
    service_cidrs: Vec<ipnet::IpNet>,
    /// NodePort range, `LOW-HIGH`.
    #[arg(long, env = "FERROLB_EMULATOR_NODE_PORT_RANGE", default_value = "30000-32767", value_parser = parse_range)]
    node_port_range: (u16, u16),
    /// Seconds between watch bookmarks.
    #[arg(long, env = "FERROLB_EMULATOR_BOOKMARK_SECONDS", default_value_t = 5)]
    bookmark_seconds: u64,
    /// Bearer tokens, in kube-apiserver's `--token-auth-file` CSV format
    /// (`token,user,uid[,"group1,group2"]`). Without it, requests are not authenticated.
    #[arg(long, env = "FERROLB_EMULATOR_TOKEN_AUTH_FILE")]
    token_auth_file: Option<PathBuf>,
    /// How authenticated requests are authorized: `AlwaysAllow` or `RBAC` (from the
    /// stored ClusterRoles, Roles and bindings; `system:masters` may do anything).
    #[arg(long, env = "FERROLB_EMULATOR_AUTHORIZATION_MODE", default_value = "AlwaysAllow", value_parser = ["AlwaysAllow", "RBAC"])]
    authorization_mode: String,
    /// With `--token-auth-file`: requests without a token are `system:anonymous` instead of
    /// a cluster admin. kubectl sends no credentials over plain HTTP, so with this set
    /// only token-sending clients (kube-rs, curl) can do anything.
    #[arg(long, env = "FERROLB_EMULATOR_ANONYMOUS_UNAUTHENTICATED", requires = "token_auth_file")]
    anonymous_unauthenticated: bool,
    /// Serve HTTPS, as kube-apiserver does, with a CA of the emulator's own and a
    /// certificate for the listen address and `localhost`; the kubeconfig trusts the CA.
    #[arg(long, env = "FERROLB_EMULATOR_TLS")]
    tls: bool,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "FERROLB_LOG", default_value = "info")]
    log: String,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or_else(|| format!("{s:?} is not LOW-HIGH"))?;
    let lo: u16 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let hi: u16 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if lo == 0 || lo > hi {
        return Err(format!("{s:?}: need 0 < LOW <= HIGH"));
    }
    Ok((lo, hi))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    if args.service_cidrs.is_empty() || args.service_cidrs.len() > 2 {
        return Err("--service-cidrs takes one or two CIDRs".into());
    }
    let mode = if args.authorization_mode == "RBAC" { Mode::Rbac } else { Mode::AlwaysAllow };
    let auth = match &args.token_auth_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("--token-auth-file {}: {e}", path.display()))?;
            let auth = Auth::parse_token_file(&text, mode)
                .map_err(|e| format!("--token-auth-file {}: {e}", path.display()))?;
            Some(if args.anonymous_unauthenticated { auth } else { auth.anonymous_admin() })
        }
        None if mode == Mode::Rbac => return Err("--authorization-mode RBAC needs --token-auth-file".into()),
        None => None,
    };
    let config = Config {
        auth,
        history_limit: args.history,
        services: ServiceConfig { service_cidrs: args.service_cidrs, node_port_range: args.node_port_range },
        bookmark_interval: Duration::from_secs(args.bookmark_seconds.max(1)),
        ..Config::default()
    };
    let emu = Emulator::new(config);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let ip = addr.ip().to_string();
    let cert = if args.tls { Some(ServingCert::generate(&[ip.as_str(), "localhost"])?) } else { None };
    let server = format!("{}://{addr}", if cert.is_some() { "https" } else { "http" });
    if let Some(path) = &args.kubeconfig {
        // Over HTTPS kubectl wants credentials (it prompts for a password otherwise): a
        // token, which the emulator ignores unless it authenticates (--token-auth-file).
        let token = (cert.is_some() && args.token_auth_file.is_none()).then_some("ferrolb-emulator-admin");
        write_kubeconfig_full(path, &server, cert.as_ref().map(|c| c.ca_pem.as_str()), token)?;
        tracing::info!(kubeconfig = %path.display(), "wrote kubeconfig");
    }
    // The line scripts wait for: the address is real and the kubeconfig is written.
    println!("ferrolb-emulator listening on {server}");
    let serve = async {
        match &cert {
            Some(c) => emu.serve_tls(listener, c).await,
            None => emu.serve(listener).await,
        }
    };
    tokio::select! {
        r = serve => r?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, exiting"),
    }
    Ok(())
}
