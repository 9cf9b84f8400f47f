//! The controller manager for ferrolb's own workloads in the sandbox: the
//! Deployment and the DaemonSet the chart installed are read back from the API and
//! turned into Pods (one controller Pod per replica, one speaker Pod per node), and
//! each Pod's container into a process to start, with exactly the arguments and
//! environment a kubelet would give it ([`crate::kubelet`]), in the Pod's network
//! namespace: a speaker (host network) in its node's, the controller in the control
//! plane's. [`crate::containers`] runs them. What a kubelet gets from the Pod's
//! projected ServiceAccount token, the process gets as a kubeconfig carrying that
//! ServiceAccount's token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodTemplateSpec, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::kubelet::{Lookup, PodInfo, launch};
use crate::sandbox::{CONTROLLER_SA, NS, SPEAKER_SA, State};

const MANAGER: &str = "ferrolb-sandbox";

/// The environment the image sets (`scripts/build-image`, `Containerfile`).
const IMAGE_ENV: &[(&str, &str)] =
    &[("PATH", "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), ("MALLOC_ARENA_MAX", "2")];

/// One container of one Pod, ready to start (and to start again, by any process
/// that reads the state file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Launched {
    /// The Pod.
    pub pod: String,
    /// The network namespace it runs in.
    pub netns: String,
    /// Whether that is its node's (host network).
    #[serde(default)]
    pub netns_is_node: bool,
    /// The program as the container names it (in the image).
    #[serde(default)]
    pub command: String,
    /// The workspace binary of that program (run when there is no image).
    pub program: PathBuf,
    /// Its arguments, as rendered and expanded.
    pub args: Vec<String>,
    /// Its environment, as rendered and expanded, then `KUBECONFIG`.
    pub env: Vec<(String, String)>,
    /// Where its output goes (`kubectl logs` reads it).
    pub log: PathBuf,
    /// Its ServiceAccount's projected files (`token`, `ca.crt`, `namespace`), which a
    /// container from the image finds where a kubelet mounts them.
    #[serde(default)]
    pub service_account_dir: PathBuf,
    /// The API server as a Pod finds it (`KUBERNETES_SERVICE_HOST:PORT`).
    #[serde(default)]
    pub api_server: String,
}

/// The Secrets and ConfigMaps of the release namespace, read once.
struct Objects {
    secrets: BTreeMap<String, BTreeMap<String, String>>,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

impl Lookup for Objects {
    fn secret(&self, name: &str, key: &str) -> Option<String> {
        self.secrets.get(name)?.get(key).cloned()
    }
    fn config_map(&self, name: &str, key: &str) -> Option<String> {
        self.config_maps.get(name)?.get(key).cloned()
    }
}

async fn objects(client: &Client) -> anyhow::Result<Objects> {
    let secrets = Api::<Secret>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(|s| {
            let data = s
                .data
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| Some((k, String::from_utf8(v.0).ok()?)))
                .collect();
            (s.metadata.name.unwrap_or_default(), data)
        })
        .collect();
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(|c| (c.metadata.name.unwrap_or_default(), c.data.unwrap_or_default()))
        .collect();
    Ok(Objects { secrets, config_maps })
}

/// One Pod of the chart's workloads, and its container's process.
#[derive(Debug, Clone)]
pub struct PodPlan {
    /// `controller` (the first replica), `controller-N` or `speaker/NODE`.
    pub key: String,
    /// The Pod, as its controller would create it.
    pub pod: Pod,
    /// Its container's process, or why the kubelet cannot configure it
    /// (`CreateContainerConfigError`: a Secret or ConfigMap it references is missing).
    pub launch: Result<Launched, String>,
}

/// The Pods the chart's controller Deployment and speaker DaemonSet want now, read
/// from the API as their controllers would; nothing is written.
pub async fn plan(client: &Client, state: &State) -> anyhow::Result<Vec<PodPlan>> {
    let objects = objects(client).await?;
    let mut out = Vec::new();
    let deployments = Api::<Deployment>::namespaced(client.clone(), NS).list(&Default::default()).await?;
    let deployment = deployments
        .items
        .iter()
        .find(|d| d.labels().get("app.kubernetes.io/component").map(String::as_str) == Some("controller"))
        .context("the chart installed no controller Deployment")?;
    let replicas = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0);
    let template = deployment.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    for i in 0..replicas {
        let name = format!("{}-{i}", deployment.name_any());
        let (netns, ip) = state.controller_pods.get(i as usize).with_context(|| {
            format!("the sandbox has networks for {} controller Pods, not {replicas}", state.controller_pods.len())
        })?;
        let info = PodInfo { pod_ip: ip.clone(), host_ip: "198.51.100.3".into(), ..Default::default() };
        let key = if i == 0 { "controller".to_string() } else { format!("controller-{i}") };
        let (pod, launch) = pod_for(state, &objects, deployment, &template, &name, "", netns, info)?;
        out.push(PodPlan { key, pod, launch });
    }
    let daemonsets = Api::<DaemonSet>::namespaced(client.clone(), NS).list(&Default::default()).await?;
    let ds = daemonsets
        .items
        .iter()
        .find(|d| d.labels().get("app.kubernetes.io/component").map(String::as_str) == Some("speaker"))
        .context("the chart installed no speaker DaemonSet")?;
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    for n in &state.nodes {
        let name = format!("{}-{}", ds.name_any(), n.name);
        let ip = n.interfaces.first().map(|i| i.ipv4.clone()).unwrap_or_default();
        let info = PodInfo { pod_ip: ip.clone(), host_ip: ip, ..Default::default() };
        let (pod, launch) = pod_for(state, &objects, ds, &template, &name, &n.name, &n.netns, info)?;
        out.push(PodPlan { key: format!("speaker/{}", n.name), pod, launch });
    }
    Ok(out)
}

/// Create the planned Pod (replacing one of the same name), scheduled and Pending: the
/// kubelet reports it Running once its container started.
pub async fn create(client: &Client, plan: &PodPlan) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let name = plan.pod.name_any();
    delete(client, &name).await?;
    api.create(&PostParams::default(), &plan.pod).await.with_context(|| format!("creating Pod {name}"))?;
    let ip = plan.pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
    let host = plan.pod.status.as_ref().and_then(|s| s.host_ip.clone()).unwrap_or_default();
    let status = json!({"apiVersion": "v1", "kind": "Pod", "status": {
        "phase": "Pending", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": host}});
    api.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(status)).await?;
    Ok(())
}

/// Delete Pod `name` if it exists, and wait until it is gone.
pub async fn delete(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    match api.delete(name, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    for _ in 0..100 {
        if api.get_opt(name).await?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("Pod {name} was not deleted")
}

/// Pod `name` from `template` (owned by `owner`, on `node`), and its container's process.
#[allow(clippy::too_many_arguments)]
fn pod_for<K: Resource<DynamicType = ()>>(
    state: &State,
    objects: &Objects,
    owner: &K,
    template: &PodTemplateSpec,
    name: &str,
    node: &str,
    netns: &str,
    mut info: PodInfo,
) -> anyhow::Result<(Pod, Result<Launched, String>)> {
    let spec = template.spec.clone().unwrap_or_default();
    let mut pod =
        Pod { metadata: template.metadata.clone().unwrap_or_default(), spec: Some(spec.clone()), status: None };
    pod.metadata.name = Some(name.to_string());
    pod.metadata.namespace = Some(NS.to_string());
    pod.metadata.owner_references = owner.controller_owner_ref(&()).map(|r| vec![r]);
    if let Some(s) = pod.spec.as_mut()
        && !node.is_empty()
    {
        s.node_name = Some(node.to_string());
    }
    pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
        pod_ip: Some(info.pod_ip.clone()),
        host_ip: Some(info.host_ip.clone()),
        ..Default::default()
    });
    info.name = name.to_string();
    info.namespace = NS.to_string();
    info.labels = pod.labels().clone();
    info.annotations = pod.annotations().clone();
    info.node_name = node.to_string();
    let sa = spec.service_account_name.clone().unwrap_or_default();
    info.service_account = sa.clone();
    let container: &Container = spec.containers.first().with_context(|| format!("Pod {name} has no container"))?;
    let l = match launch(container, &info, objects, None) {
        Ok(l) => l,
        Err(e) => return Ok((pod, Err(e.to_string()))),
    };
    let program = match Path::new(&l.program).file_name().and_then(|f| f.to_str()) {
        Some("ferrolb-controller") => state.controller_binary.clone(),
        Some("ferrolb-speaker") => state.speaker_binary.clone(),
        other => anyhow::bail!("Pod {name} runs {other:?}, which is not a ferrolb binary"),
    };
    // A speaker's token is bound to its node (as the kubelet projects it).
    let (kubeconfig, service_account_dir) = match sa.as_str() {
        CONTROLLER_SA => (state.controller_kubeconfig.clone(), state.run_dir.join("serviceaccounts").join(&sa)),
        SPEAKER_SA if !node.is_empty() => (
            state.run_dir.join(format!("kubeconfig-speaker-{node}")),
            state.run_dir.join("serviceaccounts").join(&sa).join(node),
        ),
        SPEAKER_SA => (state.speaker_kubeconfig.clone(), state.run_dir.join("serviceaccounts").join(&sa)),
        other => anyhow::bail!("Pod {name} runs as ServiceAccount {other:?}, which has no token in the sandbox"),
    };
    // The image's environment first (the runtime merges it under the container's), then
    // the container's, then a kubeconfig with the ServiceAccount's token (the workspace
    // binaries' stand-in for the in-cluster config a container from the image gets).
    let mut env: Vec<(String, String)> = IMAGE_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.retain(|(k, _)| !l.env.iter().any(|(c, _)| c == k));
    env.extend(l.env);
    env.push(("KUBECONFIG".to_string(), kubeconfig.display().to_string()));
    let log = if node.is_empty() && name.ends_with("-0") {
        state.run_dir.join("controller.log")
    } else if node.is_empty() {
        state.run_dir.join(format!("{name}.log"))
    } else {
        state.run_dir.join(format!("speaker-{node}.log"))
    };
    let launch = Launched {
        pod: name.to_string(),
        netns: netns.to_string(),
        netns_is_node: !node.is_empty(),
        command: l.program.clone(),
        program,
        args: l.args,
        env,
        log,
        service_account_dir,
        api_server: state.api_server.clone(),
    };
    Ok((pod, Ok(launch)))
}
