//! Service reconcile: the allocator's answer for one Service turned into its
//! status (server-side apply as `ferrolb-controller`), annotation, conditions
//! and events. Writes happen only when something changed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolb_common::events::{Event, EventType, Events};
use ferrolb_crds::annotations::IP_ALLOCATED_FROM_POOL;
use ferrolb_crds::conditions::{event, reason, service as cond, status};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::alloc::{AllocError, Allocator, Assignment};
use crate::metrics::Metrics;
use crate::service::{self, RequestError};

/// Shared state of the reconcilers.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// The allocator; locked only for short, synchronous work.
    pub alloc: Arc<Mutex<Allocator>>,
    /// `--lb-class`.
    pub lb_class: Option<String>,
    /// Event publisher.
    pub events: Events,
    /// Metrics.
    pub metrics: Metrics,
    /// Poked whenever pool usage may have changed.
    pub pools_dirty: Arc<Notify>,
    /// Services waiting for an address, woken when one is released.
    pub pending: Mutex<BTreeMap<String, ObjectRef<Service>>>,
    /// Feeds `Controller::reconcile_on` to wake pending Services.
    pub wake: mpsc::UnboundedSender<ObjectRef<Service>>,
    /// Consecutive failures per Service, for backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// Field manager for every write (`ferrolb-controller`, or per class).
    pub field_manager: String,
}

/// A reconcile failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or could not be reached.
    #[error("writing {what} of Service {key}: {source}")]
    Write {
        /// Service key.
        key: String,
        /// What was being written.
        what: &'static str,
        /// The client error.
        source: kube::Error,
    },
}

impl Error {
    /// Error kind for the `ferrolb_controller_reconcile_errors_total{kind}` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Write { source: kube::Error::Api(s), .. } if s.code == 409 => "conflict",
            Error::Write { source: kube::Error::Api(s), .. } if s.code == 404 => "not_found",
            Error::Write { source: kube::Error::Api(s), .. } if s.code >= 500 => "server",
            Error::Write { source: kube::Error::Api(_), .. } => "rejected",
            Error::Write { .. } => "transport",
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ctx {
    /// Wake every pending Service (an address may have become free).
    pub fn wake_pending(&self) {
        for r in lock(&self.pending).values() {
            let _ = self.wake.send(r.clone());
        }
    }

    /// Release what `key` holds; wakes pending Services if anything was freed.
    pub fn release(&self, key: &str) -> Option<Assignment> {
        let released = lock(&self.alloc).release(key);
        {
            let mut p = lock(&self.pending);
            p.remove(key);
            self.metrics.pending.set(p.len() as i64);
        }
        if released.is_some() {
            self.pools_dirty.notify_one();
            self.wake_pending();
        }
        released
    }

    async fn publish(&self, svc: &Service, type_: EventType, reason: &str, note: String) {
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: "Allocate".into(), secondary: None };
        if let Err(e) = self.events.publish(&ev, &svc.object_ref(&())).await {
            tracing::warn!(service = %service::key(svc), error = %e, "could not publish event");
        }
    }
}

/// Why a Service has no (new) IP.
enum Failure {
    Request(RequestError),
    Alloc(AllocError),
}

impl Failure {
    fn reason(&self) -> &'static str {
        match self {
            Failure::Request(_) => reason::INVALID_ANNOTATION,
            Failure::Alloc(e) => e.reason(),
        }
    }
    fn message(&self) -> String {
        match self {
            Failure::Request(e) => format!("invalid {e}"),
            Failure::Alloc(e) => e.to_string(),
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// ferrolb's conditions currently on the Service, by type.
fn our_conditions(svc: &Service) -> BTreeMap<String, Value> {
    svc.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.type_.starts_with("ferrolb.io/"))
        .filter_map(|c| Some((c.type_.clone(), serde_json::to_value(c).ok()?)))
        .collect()
}

fn condition(
    old: &BTreeMap<String, Value>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Value {
    let st = if ok { status::TRUE } else { status::FALSE };
    let since = old
        .get(type_)
        .filter(|c| c["status"] == st)
        .and_then(|c| c["lastTransitionTime"].as_str().map(String::from))
        .unwrap_or_else(now);
    let mut c = json!({"type": type_, "status": st, "reason": reason, "message": message, "lastTransitionTime": since});
    if let Some(g) = generation {
        c["observedGeneration"] = json!(g);
    }
    c
}

/// Whether this controller instance has written anything on this Service.
fn written_by_us(svc: &Service, manager: &str) -> bool {
    svc.managed_fields().iter().any(|m| m.manager.as_deref() == Some(manager))
}

fn same_conditions(a: &BTreeMap<String, Value>, b: &[Value]) -> bool {
    let strip = |v: &Value| json!([v["type"], v["status"], v["reason"], v["message"], v["observedGeneration"]]);
    a.len() == b.len()
        && b.iter().all(|c| a.get(c["type"].as_str().unwrap_or("")).is_some_and(|o| strip(o) == strip(c)))
}

/// Reconcile one Service.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = service::key(&svc);
    tracing::debug!(service = %key, "reconcile");
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &svc.namespace().unwrap_or_default());
    if svc.metadata.deletion_timestamp.is_some() || !service::is_ours(&svc, ctx.lb_class.as_deref()) {
        let released = ctx.release(&key);
        if written_by_us(&svc, &ctx.field_manager) && svc.metadata.deletion_timestamp.is_none() {
            // Remove only what ferrolb wrote: applying nothing drops the fields we own.
            write(&ctx, &api, &key, "status", true, json!({"apiVersion": "v1", "kind": "Service", "status": {}}))
                .await?;
            write(
                &ctx,
                &api,
                &key,
                "annotation",
                false,
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc.name_any()}}),
            )
            .await?;
            if let Some(a) = released {
                let why = if svc.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") {
                    "the Service is no longer of type LoadBalancer".to_string()
                } else {
                    "the Service's loadBalancerClass is not ferrolb's".to_string()
                };
                ctx.publish(
                    &svc,
                    EventType::Normal,
                    event::IP_RELEASED,
                    format!("Released {} from pool {}: {why}", fmt_ips(&a.ips), a.pool),
                )
                .await;
            }
        }
        lock(&ctx.failures).remove(&key);
        return Ok(Action::await_change());
    }

    let current = service::current_ips(&svc);
    let started = Instant::now();
    let (result, held, announced) = {
        let mut alloc = lock(&ctx.alloc);
        let result = match service::request(&svc) {
            Ok(req) => alloc.assign(&req, &current).map_err(Failure::Alloc),
            Err(e) => Err(Failure::Request(e)),
        };
        let held = alloc.assignment(&key).cloned();
        let announced = held.as_ref().map(|a| alloc.config().advertised(&a.pool, svc.labels()));
        (result, held, announced)
    };
    ctx.metrics.allocation_duration.observe(started.elapsed().as_secs_f64());

    let ips: Vec<IpAddr> = held.as_ref().map(|a| a.ips.clone()).unwrap_or_default();
    let old_conds = our_conditions(&svc);
    let generation = svc.metadata.generation;
    let mut conds = Vec::new();
    match (&result, &held) {
        (Ok(a), _) => conds.push(condition(
            &old_conds,
            cond::ALLOCATED,
            true,
            reason::IP_ALLOCATED,
            &format!("{} from IPAddressPool {}", fmt_ips(&a.ips), a.pool),
            generation,
        )),
        (Err(f), Some(a)) => conds.push(condition(
            &old_conds,
            cond::ALLOCATED,
            false,
            f.reason(),
            &format!("{}; keeping {} from IPAddressPool {} until this is fixed", f.message(), fmt_ips(&a.ips), a.pool),
            generation,
        )),
        (Err(f), None) => {
            conds.push(condition(&old_conds, cond::ALLOCATED, false, f.reason(), &f.message(), generation))
        }
    }
    if let (Some(a), Some(adv)) = (&held, announced) {
        let (r, m) = if adv {
            (reason::ADVERTISED, format!("IPAddressPool {} is selected by an L2Advertisement", a.pool))
        } else {
            (
                reason::NO_L2_ADVERTISEMENT,
                format!(
                    "no L2Advertisement selects IPAddressPool {} for this Service: the IP is allocated but no node announces it",
                    a.pool
                ),
            )
        };
        conds.push(condition(&old_conds, cond::ANNOUNCED, adv, r, &m, generation));
    }

    // Status: ingress and conditions.
    let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"})).collect();
    let ingress_now: Vec<IpAddr> = current.clone();
    if ingress_now != ips || !same_conditions(&old_conds, &conds) {
        let body = json!({"apiVersion": "v1", "kind": "Service", "status": {"loadBalancer": {"ingress": ingress}, "conditions": conds}});
        write(&ctx, &api, &key, "status", true, body).await?;
    }
    // Annotation naming the pool.
    let want_pool = held.as_ref().map(|a| a.pool.clone());
    if svc.annotations().get(IP_ALLOCATED_FROM_POOL) != want_pool.as_ref() {
        let mut meta = json!({"name": svc.name_any()});
        if let Some(p) = &want_pool {
            meta["annotations"] = json!({IP_ALLOCATED_FROM_POOL: p});
        }
        write(&ctx, &api, &key, "annotation", false, json!({"apiVersion": "v1", "kind": "Service", "metadata": meta}))
            .await?;
    }

    // Events, on transitions only.
    if ips != ingress_now && !ips.is_empty() {
        let pool = want_pool.clone().unwrap_or_default();
        let note = if ingress_now.is_empty() {
            format!("Assigned {} from IPAddressPool {pool}", fmt_ips(&ips))
        } else {
            format!("Assigned {} from IPAddressPool {pool} (was {})", fmt_ips(&ips), fmt_ips(&ingress_now))
        };
        ctx.publish(&svc, EventType::Normal, event::IP_ALLOCATED, note).await;
    }
    if let Err(f) = &result {
        let was = old_conds.get(cond::ALLOCATED);
        let changed = was.is_none_or(|c| {
            c["status"] != status::FALSE || c["reason"] != f.reason() || c["message"] != conds[0]["message"]
        });
        if changed {
            ctx.publish(
                &svc,
                EventType::Warning,
                event::ALLOCATION_FAILED,
                conds[0]["message"].as_str().unwrap_or_default().to_string(),
            )
            .await;
        }
    }
    if announced == Some(false) {
        let was = old_conds.get(cond::ANNOUNCED);
        if was.is_none_or(|c| c["status"] != status::FALSE) {
            let m = conds.last().and_then(|c| c["message"].as_str()).unwrap_or_default().to_string();
            ctx.publish(&svc, EventType::Warning, event::NOT_ANNOUNCED, m).await;
        }
    }

    // Bookkeeping: pending Services are woken when an address frees up.
    {
        let mut pending = lock(&ctx.pending);
        if held.is_none() {
            pending.insert(key.clone(), ObjectRef::from_obj(&*svc));
        } else {
            pending.remove(&key);
        }
        ctx.metrics.pending.set(pending.len() as i64);
    }
    if ingress_now.iter().any(|ip| !ips.contains(ip)) {
        ctx.wake_pending();
    }
    if ingress_now != ips {
        ctx.pools_dirty.notify_one();
    }
    lock(&ctx.failures).remove(&key);
    Ok(Action::await_change())
}

fn fmt_ips(ips: &[IpAddr]) -> String {
    ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

async fn write(
    ctx: &Ctx,
    api: &Api<Service>,
    key: &str,
    what: &'static str,
    status: bool,
    body: Value,
) -> Result<(), Error> {
    let name = key.split_once('/').map(|(_, n)| n).unwrap_or(key);
    let pp = PatchParams::apply(&ctx.field_manager).force();
    ctx.metrics.updates.inc();
    let r = if status {
        api.patch_status(name, &pp, &Patch::Apply(&body)).await
    } else {
        api.patch(name, &pp, &Patch::Apply(&body)).await
    };
    r.map(|_| ()).map_err(|source| {
        ctx.metrics.update_errors.inc();
        Error::Write { key: key.to_string(), what, source }
    })
}

/// Delay before the `n`th consecutive retry: 1 s, 2 s, 4 s, ... at most 60 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1u64 << n.min(7))).min(Duration::from_secs(60))
}

/// Count the error by kind and retry with exponential backoff (0.5 s doubling, at most 60 s).
pub fn error_policy(svc: Arc<Service>, err: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.metrics.reconcile_errors.with_label_values(&[err.kind()]).inc();
    let key = service::key(&svc);
    let n = {
        let mut f = lock(&ctx.failures);
        let n = f.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(n);
    tracing::warn!(service = %key, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let d: Vec<u64> = (1..=9).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(d, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let api = |code: u16| Error::Write {
            key: "ns/s".into(),
            what: "status",
            source: kube::Error::Api(kube::core::Status { code, ..Default::default() }.boxed()),
        };
        assert_eq!(api(409).kind(), "conflict");
        assert_eq!(api(404).kind(), "not_found");
        assert_eq!(api(503).kind(), "server");
        assert_eq!(api(422).kind(), "rejected");
    }
}
