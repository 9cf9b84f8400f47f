//! The controller process: leader election, caches, config rebuilds, the
//! Service controller and pool status, as one set of tasks that live and die
//! together.

use ferrolb_common::reflect;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrolb_common::events::{Event, EventType, Events};
use ferrolb_crds::conditions::{event, pool as pool_cond, reason, status};
use ferrolb_crds::{CONTROLLER_FIELD_MANAGER, IPAddressPool, L2Advertisement, saturating_count};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, watch};

use crate::alloc::Allocator;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::reconcile::{Ctx, error_policy, reconcile};
use crate::service;

/// What the process needs to run, from flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace of the pools, advertisements and the leader Lease.
    pub namespace: String,
    /// `--lb-class`.
    pub lb_class: Option<String>,
    /// Identity for leader election and events.
    pub identity: String,
    /// Run leader election (otherwise act as leader at once).
    pub leader_elect: bool,
    /// Lease duration in seconds.
    pub lease_duration: u64,
    /// Metrics and health address.
    pub metrics_addr: SocketAddr,
}

impl Settings {
    /// This instance's name: the field manager, the leader Lease and the event reporter.
    /// Instances serving different classes must not take each other's fields or lease.
    pub fn instance_name(&self) -> String {
        match &self.lb_class {
            None => CONTROLLER_FIELD_MANAGER.to_string(),
            Some(class) => {
                let safe: String = class
                    .to_lowercase()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
                    .collect();
                format!("{CONTROLLER_FIELD_MANAGER}-{}", safe.trim_matches(|c| c == '-' || c == '.'))
            }
        }
    }
}

/// Process-wide state shared by the HTTP endpoints.
#[derive(Clone)]
pub struct Shared {
    /// Metrics.
    pub metrics: Metrics,
    /// The allocator (rebuilt on every leadership term).
    pub alloc: Arc<Mutex<Allocator>>,
    /// True once caches are synced and state replayed (leader) or while standing by.
    pub ready: Arc<AtomicBool>,
}

/// Serve `/metrics`, `/healthz` and `/readyz`.
pub async fn serve_http(addr: SocketAddr, shared: Shared) -> anyhow::Result<()> {
    use axum::routing::get;
    let m = shared.metrics.clone();
    let ready = shared.ready.clone();
    let app = axum::Router::new()
        .route("/metrics", get(move || std::future::ready(m.render())))
        .route("/healthz", get(|| std::future::ready("ok")))
        .route(
            "/readyz",
            get(move || {
                let ok = ready.load(Ordering::SeqCst);
                std::future::ready(if ok {
                    (http::StatusCode::OK, "ok")
                } else {
                    (http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                })
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving metrics and health");
    axum::serve(listener, app).await?;
    Ok(())
}

/// Run until `shutdown` fires; returns an error if a critical task died.
pub async fn run(
    client: Client,
    settings: Settings,
    shared: Shared,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (leader_tx, mut leader_rx) = watch::channel(!settings.leader_elect);
    let lease_task = if settings.leader_elect {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), settings.instance_name())
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.lease_duration.max(2))
            .with_grace((settings.lease_duration / 3).max(1))
            .with_field_manager(format!("{}-lease", settings.instance_name()))
            .build()
            .await?;
        let (mut rx, task) = manager.watch().await;
        // Forward lease state; dropping rx (on shutdown) makes the manager release the lease.
        let mut stop = shutdown.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = rx.changed() => if r.is_err() { break },
                    _ = stop.changed() => break,
                }
                let _ = leader_tx.send(*rx.borrow_and_update());
            }
            drop(rx);
            let _ = task.await;
        }))
    } else {
        None
    };
    shared.ready.store(true, Ordering::SeqCst);
    loop {
        // Stand by until this replica leads.
        while !*leader_rx.borrow_and_update() {
            shared.metrics.leader.set(0);
            shared.ready.store(true, Ordering::SeqCst);
            tokio::select! {
                r = leader_rx.changed() => if r.is_err() { anyhow::bail!("leader election stopped") },
                _ = shutdown.changed() => return finish(lease_task).await,
            }
        }
        tracing::info!(identity = %settings.identity, "leading");
        shared.metrics.leader.set(1);
        shared.ready.store(false, Ordering::SeqCst);
        let term = lead(client.clone(), settings.clone(), shared.clone());
        tokio::select! {
            r = term => { r?; anyhow::bail!("the controller stopped unexpectedly") }
            _ = leader_rx.changed() => {
                tracing::warn!("lost leadership; standing by");
                // A fresh allocator next term: state is rebuilt from the API.
                *shared.alloc.lock().unwrap_or_else(|p| p.into_inner()) = Allocator::new();
            }
            _ = shutdown.changed() => return finish(lease_task).await,
        }
    }
}

/// Give the lease back (so a standby takes over at once) and return.
async fn finish(lease: Option<tokio::task::JoinHandle<()>>) -> anyhow::Result<()> {
    if let Some(task) = lease {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    Ok(())
}

fn build_config(pools: &Store<IPAddressPool>, advs: &Store<L2Advertisement>, nss: &Store<Namespace>) -> Config {
    let pools: Vec<IPAddressPool> = pools.state().iter().map(|p| (**p).clone()).collect();
    let advs: Vec<L2Advertisement> = advs.state().iter().map(|a| (**a).clone()).collect();
    let ns = nss.state().iter().map(|n| (n.name_any(), n.labels().clone())).collect::<BTreeMap<_, _>>();
    Config::build(&pools, &advs, ns)
}

/// One leadership term: caches, replay, then the controller until something fails.
async fn lead(client: Client, settings: Settings, shared: Shared) -> anyhow::Result<()> {
    let config_changed = Arc::new(Notify::new());
    let pools_api: Api<IPAddressPool> = Api::namespaced(client.clone(), &settings.namespace);
    let (pools, t1) = reflect(pools_api.clone(), config_changed.clone());
    let (advs, t2) =
        reflect(Api::<L2Advertisement>::namespaced(client.clone(), &settings.namespace), config_changed.clone());
    let (nss, t3) = reflect(Api::<Namespace>::all(client.clone()), config_changed.clone());
    let _guards = AbortOnDrop(vec![t1, t2, t3]);

    let svc_api: Api<Service> = Api::all(client.clone());
    let (svc_store, svc_writer) = reflector::store();
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    let (all_tx, all_rx) = mpsc::unbounded_channel::<()>();
    let pools_dirty = Arc::new(Notify::new());
    let manager = settings.instance_name();
    let events = Events::new(client.clone(), &manager, &settings.identity);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        alloc: shared.alloc.clone(),
        lb_class: settings.lb_class.clone(),
        events: events.clone(),
        metrics: shared.metrics.clone(),
        pools_dirty: pools_dirty.clone(),
        pending: Mutex::new(BTreeMap::new()),
        wake: wake_tx,
        failures: Mutex::new(HashMap::new()),
        field_manager: manager.clone(),
    });

    // Deleted Services release their IPs; a re-list releases whatever vanished meanwhile.
    let gc_ctx = ctx.clone();
    let gc_store = svc_store.clone();
    let svc_events = reflector::reflector(
        svc_writer,
        watcher(svc_api.clone(), watcher::Config::default()).modify(ferrolb_common::slim),
    )
    .default_backoff()
    .inspect(move |ev| match ev {
        Ok(watcher::Event::Delete(s)) => {
            gc_ctx.release(&service::key(s));
        }
        Ok(watcher::Event::InitDone) => {
            let live: std::collections::BTreeSet<String> = gc_store.state().iter().map(|s| service::key(s)).collect();
            let gone: Vec<String> = gc_ctx
                .alloc
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .assigned()
                .map(|(k, _)| k.clone())
                .filter(|k| !live.contains(k))
                .collect();
            for k in gone {
                gc_ctx.release(&k);
            }
        }
        _ => {}
    })
    .touched_objects();
    // The Service stream must be driven for the store to fill; the Controller drives it.
    let controller = Controller::for_stream(svc_events, svc_store.clone());

    tokio::time::timeout(Duration::from_secs(120), async {
        pools.wait_until_ready().await?;
        advs.wait_until_ready().await?;
        nss.wait_until_ready().await?;
        Ok::<_, anyhow::Error>(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("caches did not sync within 120 s"))??;
    let cfg = build_config(&pools, &advs, &nss);
    log_invalid(&cfg);
    shared.alloc.lock().unwrap_or_else(|p| p.into_inner()).set_config(cfg);

    // Replay: list Services directly so that every IP already handed out is held
    // before the controller allocates anything new.
    let existing = svc_api.list(&Default::default()).await?;
    let mut with_ips: Vec<&Service> = existing
        .items
        .iter()
        .filter(|s| service::is_ours(s, settings.lb_class.as_deref()) && !service::current_ips(s).is_empty())
        .collect();
    with_ips.sort_by_key(|s| (s.metadata.creation_timestamp.clone().map(|t| t.0), service::key(s)));
    {
        let mut alloc = shared.alloc.lock().unwrap_or_else(|p| p.into_inner());
        for s in &with_ips {
            if let Ok(req) = service::request(s)
                && let Err(e) = alloc.assign(&req, &service::current_ips(s))
            {
                tracing::warn!(service = %service::key(s), error = %e, "could not keep the Service's IP across restart");
            }
        }
    }
    tracing::info!(replayed = with_ips.len(), "replayed existing allocations");
    shared.ready.store(true, Ordering::SeqCst);

    let config_task =
        config_loop(ctx.clone(), pools.clone(), advs.clone(), nss.clone(), svc_store.clone(), config_changed, all_tx);
    let status_task = pool_status_loop(
        client.clone(),
        settings.namespace.clone(),
        ctx.clone(),
        pools.clone(),
        advs.clone(),
        events,
        pools_dirty,
    );
    let run = controller
        .reconcile_all_on(tokio_stream_of(all_rx))
        .reconcile_on(tokio_stream_of(wake_rx))
        .run(reconcile, error_policy, ctx)
        .for_each(|_| std::future::ready(()));
    tokio::select! {
        _ = run => anyhow::bail!("service controller ended"),
        r = config_task => r,
        r = status_task => r,
    }
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn log_invalid(cfg: &Config) {
    for e in cfg.invalid_pools.values() {
        tracing::warn!(error = %e, "invalid IPAddressPool skipped");
    }
    for (name, why) in &cfg.invalid_advertisements {
        tracing::warn!(advertisement = %name, error = %why, "invalid L2Advertisement skipped");
    }
}

/// Rebuild the config whenever a pool, advertisement or namespace changes.
async fn config_loop(
    ctx: Arc<Ctx>,
    pools: Store<IPAddressPool>,
    advs: Store<L2Advertisement>,
    nss: Store<Namespace>,
    svcs: Store<Service>,
    changed: Arc<Notify>,
    reconcile_all: mpsc::UnboundedSender<()>,
) -> anyhow::Result<()> {
    loop {
        changed.notified().await;
        let cfg = build_config(&pools, &advs, &nss);
        let revoked = {
            let mut alloc = ctx.alloc.lock().unwrap_or_else(|p| p.into_inner());
            if *alloc.config() == cfg {
                continue;
            }
            log_invalid(&cfg);
            alloc.set_config(cfg)
        };
        for key in &revoked {
            let (ns, name) = key.split_once('/').unwrap_or(("", key));
            if let Some(svc) = svcs.get(&reflector::ObjectRef::new(name).within(ns)) {
                let ev = Event {
                    type_: EventType::Warning,
                    reason: event::IP_REVOKED.into(),
                    note: Some(format!(
                        "{} left its IPAddressPool (deleted, shrunk or invalid); reallocating",
                        service::current_ips(&svc).iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
                    )),
                    action: "Allocate".into(),
                    secondary: None,
                };
                let _ = ctx.events.publish(&ev, &svc.object_ref(&())).await;
            }
        }
        ctx.pools_dirty.notify_one();
        if reconcile_all.send(()).is_err() {
            anyhow::bail!("service controller gone");
        }
    }
}

/// The status a pool should have: exact counts and `Valid`, plus the error when invalid.
/// `None` while the pool is not in the allocator's config yet (a change in flight).
fn desired_pool_status(p: &IPAddressPool, alloc: &Allocator) -> Option<(Value, Option<String>)> {
    let cfg = alloc.config();
    let name = p.name_any();
    let (counts, err) = match cfg.invalid_pools.get(&name) {
        Some(e) => ((0, 0, 0, 0), Some(e)),
        None if cfg.pools.contains_key(&name) => {
            let s = alloc.stats(&name);
            ((s.v4_in_use, s.v6_in_use, s.v4_total - s.v4_in_use, s.v6_total - s.v6_in_use), None)
        }
        None => return None,
    };
    let (st, r, m) = match err {
        Some(e) => (status::FALSE, e.reason(), e.to_string()),
        None => (status::TRUE, reason::POOL_VALID, "the pool is valid and in use".to_string()),
    };
    let old = p.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == pool_cond::VALID));
    let since = old
        .filter(|c| c.status == st)
        .and_then(|c| serde_json::to_value(&c.last_transition_time).ok())
        .unwrap_or_else(|| json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    let status = json!({
        "assignedIPv4": saturating_count(counts.0),
        "assignedIPv6": saturating_count(counts.1),
        "availableIPv4": saturating_count(counts.2),
        "availableIPv6": saturating_count(counts.3),
        "conditions": [{"type": pool_cond::VALID, "status": st, "reason": r, "message": m,
                        "lastTransitionTime": since, "observedGeneration": p.metadata.generation}],
    });
    Some((status, err.map(|e| e.to_string())))
}

/// Keep every pool's status (counts and `Valid`) current, writing only changes.
async fn pool_status_loop(
    client: Client,
    namespace: String,
    ctx: Arc<Ctx>,
    pools: Store<IPAddressPool>,
    advs: Store<L2Advertisement>,
    events: Events,
    dirty: Arc<Notify>,
) -> anyhow::Result<()> {
    let api: Api<IPAddressPool> = Api::namespaced(client.clone(), &namespace);
    let adv_api: Api<L2Advertisement> = Api::namespaced(client, &namespace);
    let mut written: HashMap<String, Value> = HashMap::new();
    loop {
        // Coalesce bursts (a thousand allocations make one write per pool).
        let desired: Vec<(IPAddressPool, Value, Option<String>)> = {
            let alloc = ctx.alloc.lock().unwrap_or_else(|p| p.into_inner());
            pools
                .state()
                .iter()
                .filter_map(|p| desired_pool_status(p, &alloc).map(|(st, err)| ((**p).clone(), st, err)))
                .collect()
        };
        for (p, st, err) in desired {
            let name = p.name_any();
            let current = p.status.as_ref().and_then(|s| serde_json::to_value(s).ok()).unwrap_or(Value::Null);
            let same_as = |v: &Value| {
                let strip = |x: &Value| {
                    let mut x = x.clone();
                    if let Some(c) = x["conditions"].as_array_mut() {
                        for c in c {
                            if let Some(o) = c.as_object_mut() {
                                o.remove("lastTransitionTime");
                            }
                        }
                    }
                    x
                };
                strip(v) == strip(&st)
            };
            if same_as(&current) || written.get(&name).is_some_and(|w| *w == st) {
                continue;
            }
            let was_valid = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == pool_cond::VALID))
                .map(|c| c.status == status::TRUE);
            let body = json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "status": st});
            ctx.metrics.updates.inc();
            match api.patch_status(&name, &PatchParams::apply(&ctx.field_manager).force(), &Patch::Apply(&body)).await {
                Ok(_) => {
                    written.insert(name.clone(), st);
                }
                Err(e) => {
                    ctx.metrics.update_errors.inc();
                    tracing::warn!(pool = %name, error = %e, "could not write pool status");
                }
            }
            if let Some(e) = err
                && was_valid != Some(false)
            {
                let ev = Event {
                    type_: EventType::Warning,
                    reason: event::INVALID_POOL.into(),
                    note: Some(e),
                    action: "Validate".into(),
                    secondary: None,
                };
                let _ = events.publish(&ev, &p.object_ref(&())).await;
            }
        }
        // L2Advertisements: a Valid condition saying why one is ignored.
        let invalid = ctx.alloc.lock().unwrap_or_else(|p| p.into_inner()).config().invalid_advertisements.clone();
        for a in advs.state() {
            let name = a.name_any();
            let (st, r, m) = match invalid.get(&name) {
                Some(why) => (status::FALSE, reason::INVALID_SELECTOR, why.clone()),
                None => (status::TRUE, "Valid", "the advertisement is valid".to_string()),
            };
            let cur = a.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == pool_cond::VALID));
            if cur.is_some_and(|c| c.status == st && c.message == m) {
                continue;
            }
            let body = json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement", "status": {"conditions": [
                {"type": pool_cond::VALID, "status": st, "reason": r, "message": m,
                 "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}]}});
            ctx.metrics.updates.inc();
            if let Err(e) =
                adv_api.patch_status(&name, &PatchParams::apply(&ctx.field_manager).force(), &Patch::Apply(&body)).await
            {
                ctx.metrics.update_errors.inc();
                tracing::warn!(advertisement = %name, error = %e, "could not write advertisement status");
            }
        }
        // Wait for the next change, then let a burst settle briefly before writing.
        dirty.notified().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
