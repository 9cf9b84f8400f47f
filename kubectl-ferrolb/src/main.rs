//! `kubectl-ferrolb`, found by kubectl's plugin discovery on `PATH`:
//!
//! - `kubectl ferrolb status [-n NS | -A] [SERVICE]`: per LoadBalancer Service its
//!   IPs, pool, announcing node(s) and interface(s), and why it is pending or not
//!   announced;
//! - `kubectl ferrolb pools`: validity, usage per family and served ranges per pool;
//! - `kubectl ferrolb migrate -f FILE`: MetalLB's objects (or its legacy ConfigMap)
//!   as ferrolb objects on standard output, what does not carry over on standard error.
//!
//! It reads the same kubeconfig as kubectl (`KUBECONFIG`, `--kubeconfig`, `--context`).

mod migrate;
mod report;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrolb_crds::{IPAddressPool, ServiceL2Status};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Why a LoadBalancer Service has (or lacks) an IP, who announces it, and pool usage.
#[derive(Debug, Parser)]
#[command(name = "kubectl ferrolb", version)]
struct Args {
    /// The kubeconfig to use (default: as kubectl finds it).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace ferrolb runs in (its pools and announcements are there).
    #[arg(long, global = true, env = "FERROLB_NAMESPACE", default_value = "ferrolb-system")]
    ferrolb_namespace: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// LoadBalancer Services: IPs, pool, announcing node and interfaces, and why not.
    Status {
        /// Only this namespace (default: the context's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long, conflicts_with = "namespace")]
        all_namespaces: bool,
        /// ferrolb's `--lb-class`, when it has one.
        #[arg(long)]
        lb_class: Option<String>,
        /// Only this Service.
        service: Option<String>,
    },
    /// IPAddressPools: validity, usage per family, served ranges.
    Pools,
    /// MetalLB's IPAddressPools, L2Advertisements and legacy ConfigMap as ferrolb
    /// objects in --ferrolb-namespace (YAML on standard output, for `kubectl apply -f -`);
    /// every field or object that does not carry over is reported on standard error.
    Migrate {
        /// MetalLB manifests (`kubectl get -n metallb-system ipaddresspools,l2advertisements -o yaml`), or `-`.
        #[arg(short = 'f', long = "filename")]
        filename: String,
    },
}

async fn client(args: &Args) -> anyhow::Result<kube::Client> {
    let options = KubeConfigOptions { context: args.context.clone(), ..Default::default() };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Cmd::Migrate { filename } = &args.cmd {
        return run_migrate(filename, &args.ferrolb_namespace);
    }
    let client = client(&args).await.context("connecting to the cluster")?;
    let ns = &args.ferrolb_namespace;
    match &args.cmd {
        Cmd::Status { namespace, all_namespaces, lb_class, service } => {
            let svcs: Api<Service> = match (namespace, all_namespaces) {
                (_, true) => Api::all(client.clone()),
                (Some(n), _) => Api::namespaced(client.clone(), n),
                (None, false) => Api::default_namespaced(client.clone()),
            };
            let mut services = svcs.list(&ListParams::default()).await.context("listing Services")?.items;
            if let Some(name) = service {
                services.retain(|s| s.metadata.name.as_deref() == Some(name.as_str()));
                anyhow::ensure!(!services.is_empty(), "Service {name:?} not found");
            }
            let statuses = Api::<ServiceL2Status>::namespaced(client, ns)
                .list(&ListParams::default())
                .await
                .with_context(|| format!("listing ServiceL2Statuses in {ns}"))?
                .items;
            let rows = report::service_rows(&services, &statuses, lb_class.as_deref());
            let cells: Vec<Vec<String>> = rows
                .into_iter()
                .map(|r| vec![r.namespace, r.name, r.ips, r.pool, r.announced_by, r.interfaces, r.status])
                .collect();
            print!(
                "{}",
                report::table(&["NAMESPACE", "NAME", "IPS", "POOL", "ANNOUNCED BY", "INTERFACES", "STATUS"], &cells)
            );
        }
        Cmd::Pools => {
            let pools = Api::<IPAddressPool>::namespaced(client, ns)
                .list(&ListParams::default())
                .await
                .with_context(|| format!("listing IPAddressPools in {ns}"))?
                .items;
            let cells: Vec<Vec<String>> = report::pool_rows(&pools)
                .into_iter()
                .map(|r| vec![r.name, r.valid, r.ipv4, r.ipv6, r.addresses, r.message])
                .collect();
            print!(
                "{}",
                report::table(&["NAME", "VALID", "IPV4 USED/TOTAL", "IPV6 USED/TOTAL", "ADDRESSES", "MESSAGE"], &cells)
            );
        }
        Cmd::Migrate { .. } => {} // ran before connecting
    }
    Ok(())
}

fn run_migrate(filename: &str, namespace: &str) -> anyhow::Result<()> {
    use serde::Deserialize;
    let text = if filename == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(filename).with_context(|| format!("reading {filename}"))?
    };
    let mut docs = Vec::new();
    for d in serde_yaml::Deserializer::from_str(&text) {
        docs.push(serde_json::Value::deserialize(d).with_context(|| format!("{filename}: not YAML"))?);
    }
    let m = migrate::migrate(docs, namespace);
    let mut out = String::new();
    for o in &m.objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(o)?);
    }
    print!("{out}");
    for line in &m.report {
        eprintln!("{line}");
    }
    eprintln!("{} object(s) migrated, {} note(s)", m.objects.len(), m.report.len());
    Ok(())
}
