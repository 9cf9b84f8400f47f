//! The state a cluster running MetalLB leaves behind, for the switch to ferrolb: its
//! CRDs and `metallb.io` objects (written from MetalLB's API reference and
//! configuration examples), and Services whose IPs MetalLB's controller assigned
//! (status and `metallb.io/ip-allocated-from-pool` written under its field manager).
//! MetalLB's speakers are not run: they "stop answering" at the moment ferrolb's Pods
//! start, so the gap a client sees is ferrolb's start-up alone.

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ferrolb_common::lock;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sandbox::State;

/// MetalLB's namespace.
pub const NS: &str = "metallb-system";
/// MetalLB's CRDs (`e2e/fixtures/metallb/crds.yaml`).
pub const CRDS: &str = include_str!("../fixtures/metallb/crds.yaml");
/// MetalLB's controller's field manager.
pub const MANAGER: &str = "metallb-controller";

/// A Service as MetalLB left it.
#[derive(Debug, Clone)]
pub struct Assigned {
    /// Name, in `default`.
    pub name: &'static str,
    /// The IPs MetalLB assigned.
    pub ips: Vec<&'static str>,
    /// The MetalLB pool they came from.
    pub pool: &'static str,
}

/// Install MetalLB's CRDs and namespace, then `objects` (YAML documents of
/// `metallb.io` objects in [`NS`]), as MetalLB's chart and its user did.
pub async fn install(client: &Client, objects: &str) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in serde_yaml::Deserializer::from_str(CRDS) {
        let crd = CustomResourceDefinition::deserialize(doc)?;
        crds.create(&PostParams::default(), &crd).await.context("a MetalLB CRD")?;
    }
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    for doc in serde_yaml::Deserializer::from_str(objects) {
        let v = Value::deserialize(doc)?;
        if v.is_null() {
            continue;
        }
        let (group, version) = v["apiVersion"].as_str().unwrap_or_default().split_once('/').context("apiVersion")?;
        let kind = v["kind"].as_str().context("kind")?;
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &ar);
        let obj: DynamicObject = serde_json::from_value(v.clone())?;
        api.create(&PostParams::default(), &obj).await.with_context(|| format!("MetalLB {kind}"))?;
    }
    Ok(())
}

/// Create each Service (selecting `app: web`, port 80 to 8080, both families when it
/// has two IPs) and write what MetalLB's controller wrote on it.
pub async fn assigned_services(client: &Client, services: &[Assigned]) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let pp = PatchParams::apply(MANAGER);
    for s in services {
        let mut spec = json!({"type": "LoadBalancer", "selector": {"app": "web"},
            "ports": [{"port": 80, "targetPort": 8080}]});
        if s.ips.len() == 2 {
            spec["ipFamilyPolicy"] = json!("RequireDualStack");
            spec["ipFamilies"] = json!(["IPv4", "IPv6"]);
        }
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": s.name}, "spec": spec}))?;
        api.create(&PostParams::default(), &svc).await?;
        let meta = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": s.name,
            "annotations": {ferrolb_crds::metallb::IP_ALLOCATED_FROM_POOL: s.pool}}});
        api.patch(s.name, &pp, &Patch::Apply(meta)).await?;
        let ingress: Vec<Value> = s.ips.iter().map(|ip| json!({"ip": ip, "ipMode": "VIP"})).collect();
        let status = json!({"apiVersion": "v1", "kind": "Service",
            "status": {"loadBalancer": {"ingress": ingress}}});
        api.patch_status(s.name, &pp, &Patch::Apply(status)).await?;
    }
    Ok(())
}

/// Service names with the ingress IPs they showed, in order.
type Seen = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// Every set of ingress IPs each Service showed, in order, from now on (a watch).
pub struct IngressLog {
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl IngressLog {
    /// Start watching `default`'s Services. Runs inside a tokio runtime.
    pub fn start(client: &Client) -> IngressLog {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let api: Api<Service> = Api::namespaced(client.clone(), "default");
        let task = tokio::spawn(async move {
            let mut s = Box::pin(watcher(api, watcher::Config::default()).default_backoff().applied_objects());
            while let Some(ev) = s.next().await {
                if let Ok(svc) = ev {
                    let ips = ferrolb_model::ingress_ips(&svc).iter().map(|i| i.to_string()).collect();
                    lock(&log).push((svc.name_any(), ips));
                }
            }
        });
        IngressLog { seen, task }
    }

    /// What was seen so far.
    pub fn seen(&self) -> Vec<(String, Vec<String>)> {
        lock(&self.seen).clone()
    }
}

impl Drop for IngressLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// ARP and NDP as the client sees them: tcpdump on its interface, every line with
/// its capture time (seconds since the epoch).
pub struct Capture {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<(f64, String)>>>,
}

impl Capture {
    /// Start capturing ARP and ICMPv6 neighbor advertisements; returns once tcpdump listens.
    pub fn start(client: &State) -> anyhow::Result<Capture> {
        let mut child = client
            .client_command("tcpdump")
            .args(["-i", &client.client_interface, "-n", "-l", "-tt", "--immediate-mode"])
            .args(["arp or (icmp6 and ip6[40] == 136)"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("tcpdump")?;
        let mut err = BufReader::new(child.stderr.take().context("stderr")?);
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            anyhow::ensure!(err.read_line(&mut line)? > 0, "tcpdump did not start");
        }
        let lines: Arc<Mutex<Vec<(f64, String)>>> = Arc::default();
        let out = BufReader::new(child.stdout.take().context("stdout")?);
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if let Some(t) = l.split_whitespace().next().and_then(|t| t.parse::<f64>().ok()) {
                    lock(&sink).push((t, l));
                }
            }
        });
        Ok(Capture { child, lines })
    }

    /// Every captured line from `since` on, with its time after `since` in ms.
    pub fn since(&self, since: f64) -> Vec<String> {
        lock(&self.lines)
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(t, l)| format!("{:.1} {l}", (t - since) * 1e3))
            .collect()
    }

    /// When the first gratuitous ARP (or unsolicited NA) for `ip` after `since` was seen.
    pub fn first_announcement(&self, ip: &str, since: f64) -> Option<f64> {
        let garp = [format!("who-has {ip} tell {ip},"), format!("Reply {ip} is-at"), format!("tgt is {ip},")];
        lock(&self.lines)
            .iter()
            .find(|(t, l)| *t >= since && garp.iter().any(|g| l.contains(g.as_str())))
            .map(|(t, _)| *t)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds since the epoch, as tcpdump's `-tt` prints them.
pub fn epoch() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs_f64()
}
