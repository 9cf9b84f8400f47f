//! The kubelet's container lifecycle for ferrolb's Pods in the sandbox: each Pod's
//! container is started by a runtime, probed (startup, then liveness and
//! readiness, each as its probe says: period, timeout, thresholds), restarted
//! when it ends or fails its liveness probe (`restartPolicy: Always`: at once the
//! first time, then after a back-off of 10 s doubling to 5 min, reset after 10
//! minutes of running), and its Pod's status written as a kubelet writes it
//! (`Ready`, `restartCount`, `CrashLoopBackOff`, `CreateContainerConfigError`,
//! `lastState.terminated` with the exit code), so `kubectl get pods` tells the truth.
//!
//! Runtimes: the image (`FERROLB_SANDBOX_IMAGE`, an OCI layout from
//! `scripts/build-image`) unpacked once and each container run by `runc` with the
//! Pod's user, capabilities, read-only root and memory limit, and in-cluster
//! configuration (`KUBERNETES_SERVICE_HOST`/`PORT`, the ServiceAccount's token and
//! CA mounted where client libraries look); or, on a developer's machine without an
//! image, the workspace binaries with the same args and env and a kubeconfig.
//!
//! A node that loses its kubelet (a crash, a power cut) restarts nothing: a *hold*
//! (`<pods dir>/<pod>.hold`, so `ferrolb-sandbox stop` from another process can set
//! it) keeps a container stopped until released. The container's process ID is in
//! `<pods dir>/<pod>.pid` for the same reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::pods::{Launched, PodPlan};
use crate::sandbox::{NS, State, process_running};

const PROBER: &str = "ferrolb-sandbox-kubelet";
/// Where a kubelet projects a Pod's ServiceAccount token, CA and namespace.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How containers are run.
#[derive(Debug, Clone)]
pub enum Runtime {
    /// The workspace binaries, in the Pod's network namespace (`ip netns exec`).
    Binaries,
    /// The image, unpacked once; every container run by runc.
    Image {
        /// The unpacked root filesystem, shared read-only by every container.
        rootfs: PathBuf,
        /// The runtime config umoci derived from the image, each container's starting point.
        config: Value,
    },
}

impl Runtime {
    /// The image of `FERROLB_SANDBOX_IMAGE` (an OCI layout) unpacked under `dir`, or the
    /// workspace binaries when the variable is unset.
    pub fn from_env(dir: &Path) -> anyhow::Result<Runtime> {
        match std::env::var_os("FERROLB_SANDBOX_IMAGE") {
            Some(layout) if !layout.is_empty() => Runtime::unpack(Path::new(&layout), dir),
            _ => Ok(Runtime::Binaries),
        }
    }

    /// Unpack the OCI layout's first image under `dir` with umoci.
    pub fn unpack(layout: &Path, dir: &Path) -> anyhow::Result<Runtime> {
        let index: Value = serde_json::from_slice(
            &std::fs::read(layout.join("index.json"))
                .with_context(|| format!("no OCI layout at {}", layout.display()))?,
        )?;
        let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .context("the image layout has no tagged manifest")?;
        let bundle = dir.join("image");
        let _ = std::fs::remove_dir_all(&bundle);
        let out = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{tag}", layout.display()))
            .arg(&bundle)
            .output()
            .context("running umoci (scripts/install-deps installs it)")?;
        anyhow::ensure!(out.status.success(), "umoci unpack: {}", String::from_utf8_lossy(&out.stderr).trim());
        let config = serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
        Ok(Runtime::Image { rootfs: bundle.join("rootfs").canonicalize()?, config })
    }

    /// `image` or `binaries`, for people.
    pub fn describe(&self) -> &'static str {
        match self {
            Runtime::Binaries => "the workspace binaries",
            Runtime::Image { .. } => "the image, under runc",
        }
    }
}

/// The OCI runtime config for one container of `pod` running `l` from the image.
fn runc_config(base: &Value, rootfs: &Path, pod: &Pod, l: &Launched, id: &str) -> Value {
    let c = pod.spec.as_ref().and_then(|s| s.containers.first());
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.and_then(|c| c.security_context.as_ref());
    let image_user = base["process"]["user"].clone();
    let uid = sc.and_then(|s| s.run_as_user).or(pod_sc.and_then(|s| s.run_as_user));
    let gid = sc.and_then(|s| s.run_as_group).or(pod_sc.and_then(|s| s.run_as_group));
    let uid = uid.map(Value::from).unwrap_or_else(|| image_user["uid"].clone());
    let gid = gid.map(Value::from).unwrap_or_else(|| image_user["gid"].clone());
    // containerd's default set, then the container's drops and adds.
    let mut caps: Vec<String> = [
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    ]
    .iter()
    .map(|c| format!("CAP_{c}"))
    .collect();
    if let Some(k) = sc.and_then(|s| s.capabilities.as_ref()) {
        let cap = |c: &String| format!("CAP_{}", c.trim_start_matches("CAP_"));
        for d in k.drop.iter().flatten() {
            if d == "ALL" {
                caps.clear();
            }
            caps.retain(|c| *c != cap(d));
        }
        for a in k.add.iter().flatten() {
            if !caps.contains(&cap(a)) {
                caps.push(cap(a));
            }
        }
    }
    // A non-root process keeps capabilities only in its bounding set, as under containerd.
    let root = uid.as_u64() == Some(0);
    let held = if root { caps.clone() } else { Vec::new() };
    let mut cfg = base.clone();
    // In-cluster configuration, as a kubelet gives it: the API server's address in the
    // environment, the ServiceAccount's token and CA where client libraries look.
    let (host, port) = l.api_server.rsplit_once(':').unwrap_or_default();
    let mut env: Vec<String> =
        l.env.iter().filter(|(k, _)| k != "KUBECONFIG").map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("KUBERNETES_SERVICE_HOST={host}"));
    env.push(format!("KUBERNETES_SERVICE_PORT={port}"));
    let mut args = vec![l.command.clone()];
    args.extend(l.args.iter().cloned());
    cfg["process"]["terminal"] = Value::Bool(false);
    cfg["process"]["args"] = json!(args);
    cfg["process"]["env"] = json!(env);
    cfg["process"]["cwd"] = json!("/");
    cfg["process"]["user"] = json!({"uid": uid, "gid": gid});
    cfg["process"]["noNewPrivileges"] =
        json!(sc.and_then(|s| s.allow_privilege_escalation).map(|a| !a).unwrap_or(false));
    cfg["process"]["capabilities"] =
        json!({"bounding": caps, "effective": held, "permitted": held, "inheritable": [], "ambient": []});
    cfg["root"] = json!({"path": rootfs, "readonly": sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false)});
    cfg["hostname"] = json!(
        if l.netns_is_node { pod.spec.as_ref().and_then(|s| s.node_name.clone()) } else { None }
            .unwrap_or_else(|| pod.name_any())
    );
    if let Some(mounts) = cfg["mounts"].as_array_mut() {
        mounts.push(json!({"destination": SERVICE_ACCOUNT_DIR, "type": "bind", "source": l.service_account_dir,
                           "options": ["rbind", "ro"]}));
        mounts.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "nodev", "mode=1777"]}));
    }
    if let Some(nss) = cfg["linux"]["namespaces"].as_array_mut() {
        nss.retain(|n| n["type"] != "network");
        nss.push(json!({"type": "network", "path": format!("/run/netns/{}", l.netns)}));
    }
    // A cgroup of its own at the top, which runc removes with the container.
    cfg["linux"]["cgroupsPath"] = json!(format!("/{id}"));
    if let Some(limit) =
        c.and_then(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory").cloned()).and_then(|q| quantity_bytes(&q.0))
    {
        cfg["linux"]["resources"]["memory"] = json!({"limit": limit});
    }
    cfg
}

/// A memory quantity (`128Mi`, `1G`, `1048576`) in bytes.
fn quantity_bytes(q: &str) -> Option<i64> {
    let split = q.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: f64 = n.parse().ok()?;
    let m = match unit {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        _ => return None,
    };
    Some((n * m) as i64)
}

/// One probe's settings, with the kubelet's defaults.
#[derive(Debug, Clone)]
struct ProbeSpec {
    port: u16,
    path: String,
    /// `httpGet.scheme` is HTTPS: the kubelet speaks TLS and verifies no certificate.
    https: bool,
    period: Duration,
    timeout: Duration,
    failure_threshold: u32,
    initial_delay: Duration,
}

fn probe_spec(c: &Container, p: Option<&Probe>) -> Option<ProbeSpec> {
    let p = p?;
    let get = p.http_get.as_ref()?;
    let port = match &get.port {
        IntOrString::Int(n) => u16::try_from(*n).ok()?,
        IntOrString::String(name) => {
            let p = c.ports.iter().flatten().find(|p| p.name.as_deref() == Some(name.as_str()))?;
            u16::try_from(p.container_port).ok()?
        }
    };
    let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
    Some(ProbeSpec {
        port,
        path: get.path.clone().unwrap_or_else(|| "/".into()),
        https: get.scheme.as_deref() == Some("HTTPS"),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
        initial_delay: secs(p.initial_delay_seconds, 0),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// One probe's schedule and consecutive failures.
#[derive(Debug, Clone)]
struct ProbeState {
    spec: ProbeSpec,
    next: Instant,
    failures: u32,
}

/// A running container.
#[derive(Debug)]
struct Running {
    /// `ip netns exec ...` or `runc run ...`: it ends when the container does, with its status.
    child: Child,
    started: Instant,
    started_at: String,
    /// The container's process (for signals), once known.
    pid: Option<u32>,
    startup: Option<ProbeState>,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
    started_ok: bool,
    ready: bool,
    /// SIGTERM sent (liveness failure or stop): SIGKILL after the grace period.
    killing: Option<Instant>,
}

/// One Pod's container as the kubelet tracks it.
#[derive(Debug)]
struct Managed {
    plan: PodPlan,
    running: Option<Running>,
    restarts: u32,
    backoff: Option<Duration>,
    not_before: Instant,
    /// The container's state and last termination, as the API shows them.
    state: Value,
    last: Value,
    written: Option<Value>,
    config_retry: Instant,
}

struct Inner {
    pods: BTreeMap<String, Managed>,
}

/// The kubelet of the sandbox's nodes, for ferrolb's Pods. Cloning shares it.
#[derive(Clone)]
pub struct Kubelet {
    inner: Arc<Mutex<Inner>>,
    dir: PathBuf,
    runtime: Arc<Runtime>,
    /// The sandbox's suffix, for container IDs.
    suffix: String,
}

fn rfc3339_now() -> String {
    k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second).unwrap_or_default().to_string()
}

impl Kubelet {
    /// A kubelet keeping its pid and hold files in `dir`.
    pub fn new(dir: &Path, runtime: Runtime, suffix: &str) -> anyhow::Result<Kubelet> {
        std::fs::create_dir_all(dir)?;
        Ok(Kubelet {
            inner: Arc::new(Mutex::new(Inner { pods: BTreeMap::new() })),
            dir: dir.to_path_buf(),
            runtime: Arc::new(runtime),
            suffix: suffix.to_string(),
        })
    }

    /// How containers run.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The file holding Pod `pod`'s container process ID.
    pub fn pid_file(dir: &Path, pod: &str) -> PathBuf {
        dir.join(format!("{pod}.pid"))
    }

    /// The file whose existence keeps Pod `pod`'s container stopped.
    pub fn hold_file(dir: &Path, pod: &str) -> PathBuf {
        dir.join(format!("{pod}.hold"))
    }

    /// Run (and keep running) the container of `plan`, whose Pod exists.
    pub fn add(&self, plan: PodPlan) {
        let now = Instant::now();
        let m = Managed {
            plan,
            running: None,
            restarts: 0,
            backoff: None,
            not_before: now,
            state: json!({"waiting": {"reason": "ContainerCreating"}}),
            last: Value::Null,
            written: None,
            config_retry: now,
        };
        let key = m.plan.key.clone();
        let mut inner = ferrolb_common::lock(&self.inner);
        inner.pods.insert(key.clone(), m);
        self.tick_one(&mut inner, &key);
    }

    /// Stop the container of `key` (SIGTERM, SIGKILL after its grace period, at most
    /// `grace`) and forget it: its Pod is being deleted or replaced.
    pub fn remove(&self, key: &str, grace: Duration) {
        let m = ferrolb_common::lock(&self.inner).pods.remove(key);
        if let Some(mut m) = m
            && let Some(r) = m.running.take()
        {
            stop(r, grace);
            self.cleanup(&m.plan);
        }
    }

    /// Stop every container (the sandbox ends): SIGTERM to all, then wait.
    pub fn remove_all(&self, grace: Duration) {
        let all: Vec<Managed> = std::mem::take(&mut ferrolb_common::lock(&self.inner).pods).into_values().collect();
        let mut running = Vec::new();
        for mut m in all {
            if let Some(mut r) = m.running.take() {
                signal(&mut r, "-TERM");
                running.push((m.plan, r));
            }
        }
        let deadline = Instant::now() + grace;
        for (plan, mut r) in running {
            while Instant::now() < deadline && matches!(r.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            signal(&mut r, "-KILL");
            let _ = r.child.kill();
            let _ = r.child.wait();
            self.cleanup(&plan);
        }
    }

    /// Keep Pod `pod`'s container stopped, as when its node loses its kubelet.
    pub fn hold(&self, pod: &str) -> anyhow::Result<()> {
        Self::hold_in(&self.dir, pod)
    }

    /// Let the kubelet start Pod `pod`'s held container again; see [`Kubelet::release_in`].
    pub fn release(&self, pod: &str) -> anyhow::Result<()> {
        Self::release_in(&self.dir, pod)
    }

    /// [`Kubelet::hold`] for the kubelet whose files are in `dir` (from any process).
    pub fn hold_in(dir: &Path, pod: &str) -> anyhow::Result<()> {
        Ok(std::fs::write(Self::hold_file(dir, pod), b"")?)
    }

    /// [`Kubelet::release`] for the kubelet whose files are in `dir` (from any process).
    /// The hold goes only once the kubelet has seen the held container end (it removes
    /// the pid file then), or it would take the end for a crash and back off.
    pub fn release_in(dir: &Path, pod: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(40);
        while Self::pid_file(dir, pod).exists() {
            anyhow::ensure!(Instant::now() < deadline, "Pod {pod}'s container did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        let f = Self::hold_file(dir, pod);
        if f.exists() {
            std::fs::remove_file(&f)?;
        }
        Ok(())
    }

    /// Hold Pod `key`'s container (see [`Kubelet::hold`]) and send its process `sig`
    /// (`-TERM`, `-KILL`), both under the kubelet's lock: the kubelet cannot see the
    /// hold first and stop the container its own way (SIGTERM), which now and then
    /// made a SIGKILL trial a graceful stop. Returns the signalled process's ID.
    pub fn hold_and_signal(&self, key: &str, sig: &str) -> anyhow::Result<u32> {
        let mut inner = ferrolb_common::lock(&self.inner);
        let m = inner.pods.get_mut(key).with_context(|| format!("no Pod {key}"))?;
        let pod = m.plan.pod.name_any();
        Self::hold_in(&self.dir, &pod)?;
        let r = m.running.as_mut().with_context(|| format!("Pod {key} runs no container"))?;
        if r.pid.is_none() {
            r.pid = read_pid(&Self::pid_file(&self.dir, &pod));
        }
        let pid = r.pid.filter(|p| process_running(*p)).with_context(|| format!("Pod {key} runs no process"))?;
        anyhow::ensure!(
            Command::new("kill").args([sig, &pid.to_string()]).status()?.success(),
            "kill {sig} {pid} failed"
        );
        // Stopping already: the kubelet only escalates to SIGKILL after the grace period.
        r.killing = Some(Instant::now());
        Ok(pid)
    }

    /// The process ID of `key`'s running container.
    pub fn pid(&self, key: &str) -> Option<u32> {
        let mut inner = ferrolb_common::lock(&self.inner);
        let m = inner.pods.get_mut(key)?;
        let pod = m.plan.pod.name_any();
        let r = m.running.as_mut()?;
        if r.pid.is_none() {
            r.pid = read_pid(&Self::pid_file(&self.dir, &pod));
        }
        r.pid
    }

    /// The container's restarts so far.
    pub fn restarts(&self, key: &str) -> Option<u32> {
        ferrolb_common::lock(&self.inner).pods.get(key).map(|m| m.restarts)
    }

    fn container_id(&self, pod: &str) -> String {
        format!("flb{}-{pod}", self.suffix)
    }

    fn cleanup(&self, plan: &PodPlan) {
        let pod = plan.pod.name_any();
        let _ = std::fs::remove_file(Self::pid_file(&self.dir, &pod));
        if let Runtime::Image { .. } = *self.runtime {
            let _ = Command::new("runc").args(["delete", "--force", &self.container_id(&pod)]).output();
        }
    }

    fn start(&self, plan: &PodPlan, l: &Launched) -> anyhow::Result<Child> {
        let pod = plan.pod.name_any();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&l.log)?;
        let pid_file = Self::pid_file(&self.dir, &pod);
        let _ = std::fs::remove_file(&pid_file);
        let mut cmd = match &*self.runtime {
            Runtime::Binaries => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &l.netns])
                    .arg(&l.program)
                    .args(&l.args)
                    .env_clear()
                    .envs(l.env.iter().cloned());
                c
            }
            Runtime::Image { rootfs, config } => {
                let bundle = self.dir.join("bundles").join(&pod);
                std::fs::create_dir_all(&bundle)?;
                let id = self.container_id(&pod);
                let cfg = runc_config(config, rootfs, &plan.pod, l, &id);
                std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
                let _ = Command::new("runc").args(["delete", "--force", &id]).output();
                let mut c = Command::new("runc");
                c.args(["run", "--bundle"]).arg(&bundle).arg("--pid-file").arg(&pid_file).arg(&id);
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting Pod {pod}"))?;
        if let Runtime::Binaries = *self.runtime {
            // `ip netns exec` becomes the program: its PID is the container's.
            std::fs::write(&pid_file, child.id().to_string())?;
        }
        Ok(child)
    }

    /// Advance `key`'s lifecycle without waiting: reap, restart, kill after grace.
    fn tick_one(&self, inner: &mut Inner, key: &str) {
        let Some(m) = inner.pods.get_mut(key) else { return };
        let pod = m.plan.pod.name_any();
        let now = Instant::now();
        let held = Self::hold_file(&self.dir, &pod).exists();
        if let Some(r) = m.running.as_mut() {
            if r.pid.is_none() {
                r.pid = read_pid(&Self::pid_file(&self.dir, &pod));
            }
            if held && r.killing.is_none() {
                signal(r, "-TERM");
                r.killing = Some(now);
            }
            if let Some(since) = r.killing
                && now.duration_since(since) > grace_of(&m.plan.pod)
            {
                signal(r, "-KILL");
            }
            match r.child.try_wait() {
                Ok(Some(status)) => {
                    let code = status.code().unwrap_or_else(|| {
                        use std::os::unix::process::ExitStatusExt;
                        128 + status.signal().unwrap_or(0)
                    });
                    let ran = now.duration_since(r.started);
                    m.last = json!({"terminated": {
                        "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                        "startedAt": r.started_at, "finishedAt": rfc3339_now()}});
                    m.running = None;
                    if ran >= 2 * BACKOFF_MAX {
                        m.backoff = None;
                    }
                    if held {
                        // Stopped with its node, not crashed: no back-off when the node returns.
                        m.not_before = now;
                    } else {
                        // The first restart is immediate; then 10 s, doubling to 5 min.
                        let wait = m.backoff.unwrap_or(Duration::ZERO);
                        m.backoff = Some(m.backoff.map_or(BACKOFF_START, |b| (b * 2).min(BACKOFF_MAX)));
                        m.not_before = now + wait;
                    }
                    m.state = m.last.clone();
                    self.cleanup(&m.plan);
                }
                Ok(None) => return,
                Err(_) => return,
            }
        }
        if held {
            return;
        }
        if now < m.not_before {
            let secs = m.not_before.duration_since(now).as_secs().max(1);
            let c = m.plan.pod.spec.as_ref().and_then(|s| s.containers.first()).map(|c| c.name.clone());
            m.state = json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!(
                "back-off {}s restarting failed container={} pod={pod}",
                m.backoff.map_or(0, |b| b.as_secs()).max(secs), c.unwrap_or_default())}});
            return;
        }
        let l = match &m.plan.launch {
            Ok(l) => l.clone(),
            Err(e) => {
                m.state = json!({"waiting": {"reason": "CreateContainerConfigError", "message": e}});
                return;
            }
        };
        match self.start(&m.plan, &l) {
            Ok(child) => {
                if !m.last.is_null() {
                    m.restarts += 1;
                }
                let c = m.plan.pod.spec.as_ref().and_then(|s| s.containers.first()).cloned().unwrap_or_default();
                let probe = |p: Option<&Probe>| {
                    probe_spec(&c, p).map(|spec| ProbeState { next: now + spec.initial_delay, spec, failures: 0 })
                };
                let startup = probe(c.startup_probe.as_ref());
                m.running = Some(Running {
                    child,
                    started: now,
                    started_at: rfc3339_now(),
                    pid: None,
                    started_ok: startup.is_none(),
                    startup,
                    liveness: probe(c.liveness_probe.as_ref()),
                    readiness: probe(c.readiness_probe.as_ref()),
                    ready: false,
                    killing: None,
                });
                m.state = json!({"running": {"startedAt": rfc3339_now()}});
            }
            Err(e) => {
                m.state = json!({"waiting": {"reason": "RunContainerError", "message": format!("{e:#}")}});
                m.not_before = now + BACKOFF_START;
            }
        }
    }

    /// The kubelet's loop, until `stop`: every 100 ms advance every container, run the
    /// probes that are due, write the statuses that changed; every 2 s re-read the
    /// configuration of containers that could not be configured (a Secret created later
    /// lets them start). Runs on a thread inside the control plane's namespace, which
    /// reaches every Pod's address on the bridge.
    pub fn run(
        &self,
        client: Client,
        state: State,
        control_plane_netns: &str,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let me = self.clone();
        let path = format!("/run/netns/{control_plane_netns}");
        crate::netns::in_netns(&path, move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let api: Api<Pod> = Api::namespaced(client.clone(), NS);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.changed() => return,
                    }
                    me.retry_config(&client, &state).await;
                    let due = me.due_probes();
                    let results = futures::future::join_all(due.into_iter().map(|(key, kind, ip, spec)| async move {
                        let ok = probe(&ip, &spec).await;
                        (key, kind, ok)
                    }))
                    .await;
                    let writes = me.apply(results);
                    for (key, name, status) in writes {
                        let pp = PatchParams::apply(PROBER).force();
                        if api.patch_status(&name, &pp, &Patch::Apply(&status)).await.is_ok() {
                            me.written(&key, status);
                        }
                    }
                }
            });
        })?;
        Ok(())
    }

    async fn retry_config(&self, client: &Client, state: &State) {
        let now = Instant::now();
        let waiting: Vec<String> = ferrolb_common::lock(&self.inner)
            .pods
            .iter()
            .filter(|(_, m)| m.plan.launch.is_err() && now >= m.config_retry)
            .map(|(k, _)| k.clone())
            .collect();
        if waiting.is_empty() {
            return;
        }
        let Ok(plans) = crate::pods::plan(client, state).await else { return };
        let mut inner = ferrolb_common::lock(&self.inner);
        for p in plans.into_iter().filter(|p| waiting.contains(&p.key)) {
            if let Some(m) = inner.pods.get_mut(&p.key) {
                m.plan.launch = p.launch;
                m.config_retry = now + Duration::from_secs(2);
            }
        }
    }

    fn due_probes(&self) -> Vec<(String, Kind, String, ProbeSpec)> {
        let mut inner = ferrolb_common::lock(&self.inner);
        let keys: Vec<String> = inner.pods.keys().cloned().collect();
        for k in &keys {
            self.tick_one(&mut inner, k);
        }
        let now = Instant::now();
        let mut due = Vec::new();
        for (key, m) in inner.pods.iter_mut() {
            let ip = m.plan.pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
            let Some(r) = m.running.as_mut().filter(|r| r.killing.is_none()) else { continue };
            let mut take = |kind: Kind, p: &mut Option<ProbeState>| {
                if let Some(p) = p.as_mut()
                    && now >= p.next
                {
                    p.next = now + p.spec.period;
                    due.push((key.clone(), kind, ip.clone(), p.spec.clone()));
                }
            };
            if !r.started_ok {
                take(Kind::Startup, &mut r.startup);
            } else {
                take(Kind::Liveness, &mut r.liveness);
                take(Kind::Readiness, &mut r.readiness);
            }
        }
        due
    }

    /// Apply probe results; the statuses to write.
    fn apply(&self, results: Vec<(String, Kind, bool)>) -> Vec<(String, String, Value)> {
        let mut inner = ferrolb_common::lock(&self.inner);
        let now = Instant::now();
        for (key, kind, ok) in results {
            let Some(r) = inner.pods.get_mut(&key).and_then(|m| m.running.as_mut()) else { continue };
            let p = match kind {
                Kind::Startup => r.startup.as_mut(),
                Kind::Liveness => r.liveness.as_mut(),
                Kind::Readiness => r.readiness.as_mut(),
            };
            let Some(p) = p else { continue };
            let threshold = p.spec.failure_threshold;
            p.failures = if ok { 0 } else { p.failures + 1 };
            let failed = p.failures >= threshold;
            match kind {
                Kind::Startup if ok => {
                    r.started_ok = true;
                    // Liveness and readiness start once the container has started.
                    for q in [r.liveness.as_mut(), r.readiness.as_mut()].into_iter().flatten() {
                        q.next = now;
                    }
                }
                Kind::Startup | Kind::Liveness if failed => {
                    signal(r, "-TERM");
                    r.killing = Some(now);
                }
                Kind::Readiness if ok => r.ready = true,
                Kind::Readiness if failed => r.ready = false,
                _ => {}
            }
        }
        let mut writes = Vec::new();
        for (key, m) in inner.pods.iter() {
            let status = status_of(m);
            if m.written.as_ref() != Some(&status) {
                writes.push((key.clone(), m.plan.pod.name_any(), status));
            }
        }
        writes
    }

    fn written(&self, key: &str, status: Value) {
        if let Some(m) = ferrolb_common::lock(&self.inner).pods.get_mut(key) {
            m.written = Some(status);
        }
    }
}

/// The Pod status the kubelet reports for `m`.
fn status_of(m: &Managed) -> Value {
    let c = m.plan.pod.spec.as_ref().and_then(|s| s.containers.first());
    let ready = m.running.as_ref().is_some_and(|r| r.ready && r.killing.is_none());
    let started = m.running.as_ref().is_some_and(|r| r.started_ok);
    let flag = if ready { "True" } else { "False" };
    let mut cs = json!({
        "name": c.map(|c| c.name.clone()).unwrap_or_default(),
        "image": c.and_then(|c| c.image.clone()).unwrap_or_default(),
        "imageID": "", "ready": ready, "started": started, "restartCount": m.restarts,
        "state": m.state});
    if !m.last.is_null() {
        cs["lastState"] = m.last.clone();
    }
    // Running once a container has started, and while it restarts.
    let phase = if m.running.is_some() || !m.last.is_null() { "Running" } else { "Pending" };
    json!({"apiVersion": "v1", "kind": "Pod", "status": {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": flag}, {"type": "ContainersReady", "status": flag}],
        "containerStatuses": [cs]}})
}

fn grace_of(pod: &Pod) -> Duration {
    let secs = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn signal(r: &mut Running, sig: &str) {
    if let Some(pid) = r.pid.filter(|p| process_running(*p)) {
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
    } else if sig == "-KILL" {
        let _ = r.child.kill();
    } else {
        let _ = Command::new("kill").args([sig, &r.child.id().to_string()]).status();
    }
}

/// SIGTERM, then SIGKILL after `grace`; waits for the end.
fn stop(mut r: Running, grace: Duration) {
    signal(&mut r, "-TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && matches!(r.child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&mut r, "-KILL");
    let _ = r.child.wait();
    if let Some(pid) = r.pid {
        while process_running(pid) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One HTTP GET, as the kubelet's probe: success on a 2xx or 3xx answer within its
/// timeout; over TLS without checking the certificate for `scheme: HTTPS`, as the
/// kubelet does.
async fn probe(ip: &str, spec: &ProbeSpec) -> bool {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    async fn get<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, path: &str, host: &str) -> std::io::Result<[u8; 12]> {
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        Ok(head)
    }
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(format!("{host}:{}", spec.port)).await?;
        if !spec.https {
            return get(tcp, &spec.path, &host).await;
        }
        let name = rustls::pki_types::ServerName::try_from(ip.to_string()).map_err(std::io::Error::other)?;
        let tls = tokio_rustls::TlsConnector::from(any_certificate()).connect(name, tcp).await?;
        get(tls, &spec.path, &host).await
    };
    match tokio::time::timeout(spec.timeout, attempt).await {
        Ok(Ok(head)) => matches!(head.get(9), Some(b'2' | b'3')),
        _ => false,
    }
}

/// A TLS client that accepts any server certificate (the kubelet's probes check none),
/// made once for every probe.
fn any_certificate() -> std::sync::Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG.get_or_init(any_certificate_config).clone()
}

fn any_certificate_config() -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    #[derive(Debug)]
    struct Any(rustls::crypto::WebPkiSupportedAlgorithms);
    impl ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.supported_schemes()
        }
    }
    let provider = rustls::crypto::ring::default_provider();
    let verifier = Any(provider.signature_verification_algorithms);
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        assert_eq!(quantity_bytes("128Mi"), Some(128 * 1024 * 1024));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("4096"), Some(4096));
        assert_eq!(quantity_bytes("1.5Gi"), Some(1_610_612_736));
        assert_eq!(quantity_bytes("12Q"), None);
    }
}
