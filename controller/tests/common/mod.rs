//! A controller running its real loop against the in-process emulator.
#![allow(dead_code, unused_imports)]

use std::time::Duration;

use ferrolb_common::http::ListenAddr;
use ferrolb_controller::ProcessState;
use ferrolb_controller::leadership::run;
use ferrolb_controller::settings::Settings;
use ferrolb_crds::{IPAddressPool, L2Advertisement};
use ferrolb_emulator::{Config, Emulator};
pub use ferrolb_model::testing::{SvcBuilder, svc};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

pub const NS: &str = "ferrolb-system";

pub struct Cluster {
    pub emu: Emulator,
    pub client: Client,
}

pub struct Controller {
    pub state: ProcessState,
    stop: tokio::sync::watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Controller {
    /// Graceful stop (SIGTERM): releases the lease.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
    /// Crash: the task vanishes without releasing anything.
    pub fn kill(self) {
        self.task.abort();
    }
    pub fn is_leader(&self) -> bool {
        self.state.metrics.leader.get() == 1
    }
}

impl Cluster {
    pub async fn new() -> Cluster {
        // `RUST_LOG=ferrolb_controller=debug cargo test` shows the controller's logs.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let emu = Emulator::new(Config::default());
        let client = Client::new(emu.router(), "default");
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in ferrolb_crds::crds() {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        let c = Cluster { emu, client };
        c.namespace(NS, json!({})).await;
        c
    }

    pub async fn namespace(&self, name: &str, labels: Value) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        api.create(&PostParams::default(), &ns).await.unwrap();
    }

    pub fn start(&self, lb_class: Option<&str>, leader_elect: bool, identity: &str) -> Controller {
        self.start_compat(lb_class, leader_elect, identity, None)
    }

    /// [`Cluster::start`] in metallb compat mode when `metallb` names MetalLB's namespace.
    pub fn start_compat(
        &self,
        lb_class: Option<&str>,
        leader_elect: bool,
        identity: &str,
        metallb: Option<&str>,
    ) -> Controller {
        let state = ProcessState::new();
        let settings = Settings {
            namespace: NS.into(),
            lb_class: lb_class.map(String::from),
            identity: identity.into(),
            leader_elect,
            lease_duration: Duration::from_secs(2),
            metrics_addr: ListenAddr::Exact(([127, 0, 0, 1], 0).into()),
            ignore_exclude_lb: false,
            metallb_namespace: metallb.map(String::from),
        };
        let (stop, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(self.client.clone(), settings, state.clone(), rx));
        Controller { state, stop, task }
    }

    pub async fn pool(&self, name: &str, spec: Value) {
        let api: Api<IPAddressPool> = Api::namespaced(self.client.clone(), NS);
        let p: IPAddressPool =
            serde_json::from_value(json!({"apiVersion": ferrolb_crds::API_VERSION, "kind": "IPAddressPool",
            "metadata": {"name": name}, "spec": spec}))
            .unwrap();
        api.create(&PostParams::default(), &p).await.unwrap();
    }

    pub async fn pool_with_labels(&self, name: &str, labels: Value, spec: Value) {
        let api: Api<IPAddressPool> = Api::namespaced(self.client.clone(), NS);
        let p: IPAddressPool =
            serde_json::from_value(json!({"apiVersion": ferrolb_crds::API_VERSION, "kind": "IPAddressPool",
            "metadata": {"name": name, "labels": labels}, "spec": spec}))
            .unwrap();
        api.create(&PostParams::default(), &p).await.unwrap();
    }

    pub async fn patch_pool(&self, name: &str, patch: Value) {
        let api: Api<IPAddressPool> = Api::namespaced(self.client.clone(), NS);
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    }

    pub async fn delete_pool(&self, name: &str) {
        let api: Api<IPAddressPool> = Api::namespaced(self.client.clone(), NS);
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }

    pub async fn advertise_all(&self) {
        let api: Api<L2Advertisement> = Api::namespaced(self.client.clone(), NS);
        let a: L2Advertisement =
            serde_json::from_value(json!({"apiVersion": ferrolb_crds::API_VERSION, "kind": "L2Advertisement", "metadata": {"name": "all"}, "spec": {}}))
                .unwrap();
        api.create(&PostParams::default(), &a).await.unwrap();
    }

    /// A Node `name` (what a kubelet registers).
    pub async fn node(&self, name: &str) {
        let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let n = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &n).await.unwrap();
    }

    /// The membership Lease a running speaker on `node` holds (renewed now, 30 s).
    pub async fn speaker_lease(&self, node: &str) {
        let api: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(self.client.clone(), NS);
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let l = serde_json::from_value(
            json!({"metadata": {"name": node, "labels": {"app.kubernetes.io/component": "speaker"}},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 30, "renewTime": now, "acquireTime": now}}),
        )
        .unwrap();
        api.create(&PostParams::default(), &l).await.unwrap();
    }

    /// What a speaker on `node` writes when it announces Service `ns/name`.
    pub async fn l2_status(&self, ns: &str, name: &str, node: &str) {
        use ferrolb_crds::annotations::{NODE_LABEL, SERVICE_NAME_LABEL, SERVICE_NAMESPACE_LABEL};
        let api: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(self.client.clone(), NS);
        let st = serde_json::from_value(json!({"apiVersion": ferrolb_crds::API_VERSION, "kind": "ServiceL2Status",
            "metadata": {"name": format!("{ns}.{name}"), "labels": {SERVICE_NAME_LABEL: name, SERVICE_NAMESPACE_LABEL: ns, NODE_LABEL: node}},
            "spec": {}}))
        .unwrap();
        api.create(&PostParams::default(), &st).await.unwrap();
    }

    /// What a speaker on `node` writes when it advertises Service `ns/name` over BGP.
    pub async fn bgp_status(&self, ns: &str, name: &str, node: &str) {
        use ferrolb_crds::annotations::{NODE_LABEL, SERVICE_NAME_LABEL, SERVICE_NAMESPACE_LABEL};
        let api: Api<ferrolb_crds::ServiceBGPStatus> = Api::namespaced(self.client.clone(), NS);
        let st = serde_json::from_value(json!({"apiVersion": ferrolb_crds::API_VERSION, "kind": "ServiceBGPStatus",
            "metadata": {"name": format!("{ns}.{name}.{node}"), "labels": {SERVICE_NAME_LABEL: name, SERVICE_NAMESPACE_LABEL: ns, NODE_LABEL: node}},
            "spec": {}}))
        .unwrap();
        api.create(&PostParams::default(), &st).await.unwrap();
    }

    /// Wait until Service `ns/name`'s Announced condition has `status` and `reason`; its message.
    pub async fn until_announced(&self, ns: &str, name: &str, status: &str, reason: &str) -> String {
        let s = self
            .until(ns, name, &format!("Announced={status} ({reason})"), |s| {
                condition(s, "ferrolb.io/Announced").is_some_and(|c| c.0 == status && c.1 == reason)
            })
            .await;
        condition(&s, "ferrolb.io/Announced").unwrap().2
    }

    /// Create the Service `svc` builds.
    pub async fn service(&self, svc: SvcBuilder) -> Service {
        let s = svc.build();
        let api: Api<Service> =
            Api::namespaced(self.client.clone(), s.metadata.namespace.as_deref().unwrap_or("default"));
        api.create(&PostParams::default(), &s).await.unwrap()
    }

    pub async fn patch_service(&self, ns: &str, name: &str, patch: Value) {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    }

    pub async fn delete_service(&self, ns: &str, name: &str) {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }

    pub async fn get_service(&self, ns: &str, name: &str) -> Service {
        Api::<Service>::namespaced(self.client.clone(), ns).get(name).await.unwrap()
    }

    /// Wait (watching, not polling) until the Service satisfies `cond`.
    pub async fn until(&self, ns: &str, name: &str, what: &str, cond: impl Fn(&Service) -> bool) -> Service {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let fut = await_condition(api, name, move |s: Option<&Service>| s.is_some_and(&cond));
        match tokio::time::timeout(Duration::from_secs(20), fut).await {
            Ok(Ok(Some(s))) => s,
            other => {
                let now = self.get_service(ns, name).await;
                panic!(
                    "{ns}/{name}: {what} did not happen ({other:?}); now: {}",
                    serde_json::to_string(&now.status).unwrap()
                )
            }
        }
    }

    /// Wait until the Service has exactly these ingress IPs.
    pub async fn until_ips(&self, ns: &str, name: &str, want: &[&str]) -> Service {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        let w = want.clone();
        self.until(ns, name, &format!("ingress {want:?}"), move |s| ips(s) == w).await
    }

    /// Wait until `Allocated` is False with `reason`.
    pub async fn until_failed(&self, ns: &str, name: &str, reason: &str) -> Service {
        let r = reason.to_string();
        self.until(ns, name, &format!("Allocated=False/{reason}"), move |s| {
            condition(s, "ferrolb.io/Allocated").is_some_and(|c| c.0 == "False" && c.1 == r)
        })
        .await
    }

    pub async fn pool_status(&self, name: &str, cond: impl Fn(&IPAddressPool) -> bool) -> IPAddressPool {
        let api: Api<IPAddressPool> = Api::namespaced(self.client.clone(), NS);
        let fut = await_condition(api.clone(), name, move |p: Option<&IPAddressPool>| p.is_some_and(&cond));
        match tokio::time::timeout(Duration::from_secs(20), fut).await {
            Ok(Ok(Some(p))) => p,
            _ => panic!("pool {name} status did not converge: {:?}", api.get(name).await.unwrap().status),
        }
    }

    /// Event reasons recorded for an object, oldest first.
    pub async fn events(&self, ns: &str, name: &str) -> Vec<(String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), ns);
        let mut evs: Vec<_> = api
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        evs.sort_by_key(|e| e.metadata.resource_version.clone().and_then(|r| r.parse::<u64>().ok()));
        evs.into_iter().map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default())).collect()
    }

    /// Wait until an event with `reason` exists for the object (events are written after status).
    pub async fn until_event(&self, ns: &str, name: &str, reason: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), ns);
        let mut stream =
            Box::pin(kube::runtime::watcher(api, kube::runtime::watcher::Config::default()).default_backoff());
        use futures::StreamExt;
        use kube::runtime::WatchStreamExt;
        loop {
            if let Some((_, note)) = self.events(ns, name).await.into_iter().find(|(r, _)| r == reason) {
                return note;
            }
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(_)) => {}
                _ => panic!("no {reason} event for {ns}/{name}; have {:?}", self.events(ns, name).await),
            }
        }
    }
}

pub fn ips(s: &Service) -> Vec<String> {
    ferrolb_model::ingress_ips(s).iter().map(|i| i.to_string()).collect()
}

/// (status, reason, message) of a condition.
pub fn condition(s: &Service, type_: &str) -> Option<(String, String, String)> {
    s.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub fn name_of(p: &IPAddressPool) -> String {
    p.name_any()
}
