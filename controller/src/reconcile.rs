//! Service reconcile: the allocator's answer for one Service turned into its
//! status (server-side apply as `ferrolb-controller`), annotation, conditions
//! and events. Writes happen only when something changed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolb_common::events::{Event, EventType, Events};
use ferrolb_common::lock;
use ferrolb_crds::annotations::IP_ALLOCATED_FROM_POOL;
use ferrolb_crds::conditions::{event, reason, service as cond, status};
use ferrolb_crds::metallb;
use ferrolb_model::conditions::{self, Want, same};
use ferrolb_model::{ServiceKey, ingress_ips, is_ours};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
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
    /// What the speakers report, for `ferrolb.io/Announced`.
    pub presence: Arc<crate::presence::Presence>,
    /// metallb compat: also write MetalLB's `ip-allocated-from-pool` annotation.
    pub metallb_compat: bool,
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
            Error::Write { source: kube::Error::Api(s), .. } if s.code == 401 || s.code == 403 => "forbidden",
            Error::Write { source: kube::Error::Api(s), .. } if s.code >= 500 => "server",
            Error::Write { source: kube::Error::Api(_), .. } => "rejected",
            Error::Write { .. } => "transport",
        }
    }
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

    async fn publish(&self, svc: &Service, note: Note) {
        let ev = Event {
            type_: note.type_,
            reason: note.reason.into(),
            note: Some(note.text),
            action: "Allocate".into(),
            secondary: None,
        };
        if let Err(e) = self.events.publish(&ev, &svc.object_ref(&())).await {
            tracing::warn!(service = %ServiceKey::of(svc), error = %e, "could not publish event");
        }
    }
}

/// Why a Service has no (new) IP.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// An annotation or field of the Service cannot be understood.
    Request(RequestError),
    /// The allocator found no address.
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

/// What the allocator said about one Service, taken under its lock.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The outcome of this request.
    pub result: Result<Assignment, Failure>,
    /// What the Service holds now (after a failure: what it kept).
    pub held: Option<Assignment>,
    /// Whether the held IPs are announced, and if not why (`None`: nothing held).
    pub announced: Option<ferrolb_model::announce::Verdict>,
    /// Whether the Service's EndpointSlices list a ready endpoint (`None`: not judged).
    pub endpoints_ready: Option<bool>,
}

/// An Event to publish about the Service.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// Normal or Warning.
    pub type_: EventType,
    /// The event reason.
    pub reason: &'static str,
    /// What a person reads.
    pub text: String,
}

/// What reconciling one Service should do: the status and annotation to write (when
/// they differ from what is there), the Events to publish, and the bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The ingress IPs the Service should show.
    pub ips: Vec<IpAddr>,
    /// The status to apply, when ingress or conditions changed.
    pub status: Option<ServiceStatus>,
    /// The pool annotation to apply, when it changed (`None` inside: remove it).
    pub pool_annotation: Option<Option<String>>,
    /// Events, on transitions only.
    pub notes: Vec<Note>,
    /// The Service waits for an address.
    pub pending: bool,
    /// An address the Service held is free now: wake the waiting ones.
    pub freed: bool,
    /// The ingress IPs change: pool usage changes with them.
    pub ips_changed: bool,
}

/// Decide a Service's status, annotation and Events from the allocator's answer. Pure:
/// `now` stamps a condition whose status changed; with `metallb_compat` the pool is
/// also written as MetalLB's annotation.
pub fn decide(svc: &Service, answer: &Answer, now: &Time, metallb_compat: bool) -> Decision {
    let current = ingress_ips(svc);
    let ips: Vec<IpAddr> = match (&answer.held, &answer.result) {
        (Some(a), _) => a.ips.clone(),
        // Assigned by something else, in no pool: kept as it is (and reported).
        (None, Err(Failure::Alloc(crate::alloc::AllocError::OutsidePoolsAdopted(kept)))) => kept.clone(),
        (None, _) => Vec::new(),
    };
    let old: Vec<Condition> = svc
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_.starts_with("ferrolb.io/"))
        .collect();
    let generation = svc.metadata.generation;
    let allocated = match (&answer.result, &answer.held) {
        (Ok(a), _) => Want::new(
            cond::ALLOCATED,
            true,
            reason::IP_ALLOCATED,
            format!("{} from IPAddressPool {}", fmt_ips(&a.ips), a.pool),
        ),
        (Err(f), Some(a)) => Want::new(
            cond::ALLOCATED,
            false,
            f.reason(),
            format!("{}; keeping {} from IPAddressPool {} until this is fixed", f.message(), fmt_ips(&a.ips), a.pool),
        ),
        (Err(f), None) => Want::new(cond::ALLOCATED, false, f.reason(), f.message()),
    };
    let mut wants = vec![allocated];
    if let (Some(_), Some(v)) = (&answer.held, &answer.announced) {
        wants.push(Want::new(cond::ANNOUNCED, v.announced, v.reason, v.message.clone()));
    }
    if let (Some(a), Some(ready)) = (&answer.held, answer.endpoints_ready) {
        wants.push(endpoints_condition(&a.ips, ready));
    }
    let mut notes = Vec::new();
    // Events, on transitions only: compared with the conditions the Service shows now.
    let was = |type_: &str| old.iter().find(|c| c.type_ == type_);
    if ips != current && !ips.is_empty() {
        let pool = answer.held.as_ref().map(|a| a.pool.as_str()).unwrap_or_default();
        let text = if current.is_empty() {
            format!("Assigned {} from IPAddressPool {pool}", fmt_ips(&ips))
        } else {
            format!("Assigned {} from IPAddressPool {pool} (was {})", fmt_ips(&ips), fmt_ips(&current))
        };
        notes.push(Note { type_: EventType::Normal, reason: event::IP_ALLOCATED, text });
    }
    if let Err(f) = &answer.result {
        let w = &wants[0];
        if was(cond::ALLOCATED)
            .is_none_or(|c| c.status != status::FALSE || c.reason != f.reason() || c.message != w.message)
        {
            notes.push(Note { type_: EventType::Warning, reason: event::ALLOCATION_FAILED, text: w.message.clone() });
        }
    }
    // A Warning when an IP stops being (or is never) announced for a cause to fix; not
    // for the moment between allocation and a speaker's report (NotAnnounced).
    if let Some(v) = answer.announced.as_ref().filter(|v| !v.announced && v.reason != reason::NOT_ANNOUNCED)
        && was(cond::ANNOUNCED).is_none_or(|c| c.status != status::FALSE || c.reason != v.reason)
    {
        notes.push(Note { type_: EventType::Warning, reason: event::NOT_ANNOUNCED, text: v.message.clone() });
    }
    let conditions: Vec<Condition> = wants.into_iter().map(|w| w.set(&old, generation, now)).collect();
    let status = (current != ips || !same(&old, &conditions)).then(|| ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(
                ips.iter()
                    .map(|ip| LoadBalancerIngress {
                        ip: Some(ip.to_string()),
                        ip_mode: Some("VIP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }),
        conditions: Some(conditions),
    });
    let want_pool = answer.held.as_ref().map(|a| a.pool.clone());
    let differs = |key: &str| svc.annotations().get(key) != want_pool.as_ref();
    // MetalLB's copy only while there is a pool to name: ferrolb does not remove what MetalLB wrote.
    let metallb_differs = metallb_compat && want_pool.is_some() && differs(metallb::IP_ALLOCATED_FROM_POOL);
    let pool_annotation = (differs(IP_ALLOCATED_FROM_POOL) || metallb_differs).then_some(want_pool);
    Decision {
        freed: current.iter().any(|ip| !ips.contains(ip)),
        ips_changed: current != ips,
        pending: answer.held.is_none(),
        ips,
        status,
        pool_annotation,
        notes,
    }
}

/// `ferrolb.io/EndpointsReady`. Without a ready endpoint the IPs stay announced: a
/// client is refused at once (kube-proxy rejects what has no endpoint) rather than
/// left waiting on an address nobody answers, and the announcement does not move
/// while a Deployment is scaled to zero or recreated.
fn endpoints_condition(ips: &[IpAddr], ready: bool) -> Want {
    if ready {
        Want::new(
            cond::ENDPOINTS_READY,
            true,
            reason::ENDPOINTS_READY,
            "the Service's EndpointSlices list a ready endpoint",
        )
    } else {
        Want::new(
            cond::ENDPOINTS_READY,
            false,
            reason::NO_READY_ENDPOINT,
            format!(
                "the Service's EndpointSlices list no ready endpoint: connections to {} are refused until a Pod of the Service is ready",
                fmt_ips(ips)
            ),
        )
    }
}

/// Whether this controller instance has written anything on this Service.
fn written_by_us(svc: &Service, manager: &str) -> bool {
    svc.managed_fields().iter().any(|m| m.manager.as_deref() == Some(manager))
}

/// Reconcile one Service: ask the allocator, [`decide`], then write and publish what
/// the decision says. `await_change` and not a periodic requeue: every input of the
/// decision (the Service, the config, a freed address) already triggers a reconcile.
#[tracing::instrument(skip_all, fields(service = %ServiceKey::of(&svc)))]
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = ServiceKey::of(&svc);
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), key.namespace());
    if svc.metadata.deletion_timestamp.is_some() || !is_ours(&svc, ctx.lb_class.as_deref()) {
        let released = ctx.release(key.as_str());
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
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": key.name()}}),
            )
            .await?;
            if let Some(a) = released {
                let why = if svc.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") {
                    "the Service is no longer of type LoadBalancer"
                } else {
                    "the Service's loadBalancerClass is not ferrolb's"
                };
                let text = format!("Released {} from pool {}: {why}", fmt_ips(&a.ips), a.pool);
                ctx.publish(&svc, Note { type_: EventType::Normal, reason: event::IP_RELEASED, text }).await;
            }
        }
        lock(&ctx.failures).remove(key.as_str());
        return Ok(Action::await_change());
    }

    let started = Instant::now();
    // Who announces it; the nodes matter only when nobody live does.
    let p = &ctx.presence;
    let announcers = p.announcers(&key);
    let live = p.live(k8s_openapi::jiff::Timestamp::now());
    let bgp_advertisers = p.bgp_advertisers(&key, &live);
    let (nodes, report) = if announcers.is_disjoint(&live) && bgp_advertisers.is_disjoint(&live) {
        (p.nodes(), p.report(&key))
    } else {
        (Vec::new(), None)
    };
    let (answer, sharing_changed) = {
        let mut alloc = lock(&ctx.alloc);
        let before = alloc.sharing(key.as_str()).cloned();
        let result = match service::request(&svc) {
            Ok(req) => alloc.assign(&req, &ingress_ips(&svc)).map_err(Failure::Alloc),
            Err(e) => Err(Failure::Request(e)),
        };
        let held = alloc.assignment(key.as_str()).cloned();
        let local = svc.spec.as_ref().and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
        let announced = held.as_ref().map(|a| {
            let cfg = alloc.config();
            let sp = ferrolb_model::announce::Speakers {
                nodes: &nodes,
                ignore_exclude: p.ignore_exclude_lb,
                live: &live,
                announcers: &announcers,
                bgp_advertisers: &bgp_advertisers,
                report: report.as_ref().map(|(n, r, m)| (n.as_str(), r.as_str(), m.as_str())),
            };
            ferrolb_model::announce::judge(cfg, &a.pool, svc.labels(), local, &sp)
        });
        // A holder's policy, selector, ports or key changed: a Service waiting to share
        // its IP may fit now (or one that lost it may fit again).
        let sharing_changed = before.as_ref() != alloc.sharing(key.as_str());
        let endpoints_ready = held.as_ref().map(|_| p.has_ready_endpoint(&key));
        (Answer { result, held, announced, endpoints_ready }, sharing_changed)
    };
    ctx.metrics.allocation_duration.observe(started.elapsed().as_secs_f64());
    let d = decide(&svc, &answer, &conditions::now(), ctx.metallb_compat);

    if let Some(st) = &d.status {
        let body = json!({"apiVersion": "v1", "kind": "Service", "status": st});
        write(&ctx, &api, &key, "status", true, body).await?;
    }
    if let Some(pool) = &d.pool_annotation {
        let mut meta = json!({"name": key.name()});
        if let Some(p) = pool {
            meta["annotations"] = json!({IP_ALLOCATED_FROM_POOL: p});
            if ctx.metallb_compat {
                meta["annotations"][metallb::IP_ALLOCATED_FROM_POOL] = json!(p);
            }
        }
        write(&ctx, &api, &key, "annotation", false, json!({"apiVersion": "v1", "kind": "Service", "metadata": meta}))
            .await?;
    }
    for note in d.notes {
        ctx.publish(&svc, note).await;
    }
    // Bookkeeping: pending Services are woken when an address frees up.
    {
        let mut pending = lock(&ctx.pending);
        if d.pending {
            pending.insert(key.as_str().to_string(), ObjectRef::from_obj(&*svc));
        } else {
            pending.remove(key.as_str());
        }
        ctx.metrics.pending.set(pending.len() as i64);
    }
    if d.freed || (sharing_changed && answer.held.is_some()) {
        ctx.wake_pending();
    }
    if d.ips_changed {
        ctx.pools_dirty.notify_one();
    }
    lock(&ctx.failures).remove(key.as_str());
    Ok(Action::await_change())
}

pub(crate) fn fmt_ips(ips: &[IpAddr]) -> String {
    ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

async fn write(
    ctx: &Ctx,
    api: &Api<Service>,
    key: &ServiceKey,
    what: &'static str,
    status: bool,
    body: Value,
) -> Result<(), Error> {
    let pp = PatchParams::apply(&ctx.field_manager).force();
    ctx.metrics.updates.inc();
    let r = if status {
        api.patch_status(key.name(), &pp, &Patch::Apply(&body)).await
    } else {
        api.patch(key.name(), &pp, &Patch::Apply(&body)).await
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
    let key = ServiceKey::of(&svc).to_string();
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
    use ferrolb_model::testing::svc;

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn held(pool: &str, ip: &str) -> Assignment {
        Assignment { pool: pool.into(), ips: vec![ip.parse().unwrap()] }
    }

    /// The Service after the decision's status was written.
    fn applied(mut s: Service, d: &Decision) -> Service {
        if let Some(st) = &d.status {
            s.status = Some(st.clone());
        }
        s
    }

    fn announced_by(node: &str) -> ferrolb_model::announce::Verdict {
        ferrolb_model::announce::Verdict {
            announced: true,
            reason: reason::ANNOUNCED,
            message: format!("announced by {node}"),
        }
    }

    fn no_advertisement() -> ferrolb_model::announce::Verdict {
        ferrolb_model::announce::Verdict {
            announced: false,
            reason: reason::NO_L2_ADVERTISEMENT,
            message: "no L2Advertisement selects IPAddressPool dark".into(),
        }
    }

    #[test]
    fn waiting_for_a_speaker_is_a_condition_but_no_warning_and_a_cause_change_warns_again() {
        let a = held("public", "198.51.100.7");
        let web = svc("web").build();
        let pending = ferrolb_model::announce::Verdict {
            announced: false,
            reason: reason::NOT_ANNOUNCED,
            message: "no speaker announces it yet".into(),
        };
        let answer =
            Answer { result: Ok(a.clone()), held: Some(a.clone()), announced: Some(pending), endpoints_ready: None };
        let d = decide(&web, &answer, &at(1), false);
        assert_eq!(d.notes.iter().map(|n| n.reason).collect::<Vec<_>>(), [event::IP_ALLOCATED]);
        let web = applied(web, &d);
        let gone = ferrolb_model::announce::Verdict {
            announced: false,
            reason: reason::NO_LIVE_SPEAKER,
            message: "no speaker is running".into(),
        };
        let answer = Answer { result: Ok(a.clone()), held: Some(a), announced: Some(gone), endpoints_ready: None };
        let d = decide(&web, &answer, &at(2), false);
        assert_eq!(d.notes.iter().map(|n| n.reason).collect::<Vec<_>>(), [event::NOT_ANNOUNCED]);
    }

    #[test]
    fn a_first_allocation_writes_status_and_annotation_and_tells_once() {
        let a = held("public", "198.51.100.7");
        let answer =
            Answer { result: Ok(a.clone()), held: Some(a), announced: Some(announced_by("n1")), endpoints_ready: None };
        let web = svc("web").build();
        let d = decide(&web, &answer, &at(100), false);
        let st = d.status.clone().expect("status written");
        let ingress = st.load_balancer.and_then(|lb| lb.ingress).unwrap();
        assert_eq!(ingress[0].ip.as_deref(), Some("198.51.100.7"));
        let types: Vec<_> = st.conditions.iter().flatten().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
        assert_eq!(types, [(cond::ALLOCATED, "True"), (cond::ANNOUNCED, "True")]);
        assert_eq!(d.pool_annotation, Some(Some("public".into())));
        assert_eq!(d.notes.iter().map(|n| n.reason).collect::<Vec<_>>(), [event::IP_ALLOCATED]);
        assert!(!d.pending && !d.freed && d.ips_changed);
        // The same answer again, once written: nothing to write, nothing to tell.
        let mut again = applied(web, &d);
        again.metadata.annotations = Some([(IP_ALLOCATED_FROM_POOL.to_string(), "public".to_string())].into());
        let d2 = decide(&again, &answer, &at(200), false);
        assert_eq!((d2.status, d2.pool_annotation, d2.notes), (None, None, vec![]));
    }

    #[test]
    fn a_failure_keeps_what_is_held_and_warns_once() {
        let a = held("public", "198.51.100.7");
        let web = svc("web").ingress("198.51.100.7").build();
        let fail = Failure::Alloc(AllocError::NoPoolMatches("no pool admits it".into()));
        let answer =
            Answer { result: Err(fail), held: Some(a), announced: Some(announced_by("n1")), endpoints_ready: None };
        let d = decide(&web, &answer, &at(100), false);
        let c = &d.status.as_ref().unwrap().conditions.as_ref().unwrap()[0];
        assert_eq!(c.status, "False");
        assert!(
            c.message.ends_with("keeping 198.51.100.7 from IPAddressPool public until this is fixed"),
            "{}",
            c.message
        );
        assert_eq!(d.notes.iter().map(|n| n.reason).collect::<Vec<_>>(), [event::ALLOCATION_FAILED]);
        let d2 = decide(&applied(web, &d), &answer, &at(200), false);
        assert!(d2.notes.is_empty() && d2.status.is_none());
    }

    #[test]
    fn no_address_leaves_the_service_pending_and_frees_what_it_showed() {
        let web = svc("web").ingress("198.51.100.7").build();
        let fail = Failure::Alloc(AllocError::NoPoolMatches("x".into()));
        let d = decide(
            &web,
            &Answer { result: Err(fail), held: None, announced: None, endpoints_ready: None },
            &at(1),
            false,
        );
        assert!(d.pending && d.freed && d.ips_changed);
        assert_eq!(d.pool_annotation, None);
        assert!(d.status.unwrap().load_balancer.unwrap().ingress.unwrap().is_empty());
    }

    #[test]
    fn an_unannounced_pool_is_a_condition_and_one_warning() {
        let a = held("dark", "198.51.100.9");
        let answer =
            Answer { result: Ok(a.clone()), held: Some(a), announced: Some(no_advertisement()), endpoints_ready: None };
        let web = svc("web").build();
        let d = decide(&web, &answer, &at(1), false);
        let reasons: Vec<_> = d.notes.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, [event::IP_ALLOCATED, event::NOT_ANNOUNCED]);
        let c = d.status.as_ref().unwrap().conditions.as_ref().unwrap().last().cloned().unwrap();
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            (cond::ANNOUNCED, "False", reason::NO_L2_ADVERTISEMENT)
        );
        let d2 = decide(&applied(web, &d), &answer, &at(2), false);
        assert!(!d2.notes.iter().any(|n| n.reason == event::NOT_ANNOUNCED));
    }

    #[test]
    fn endpoints_ready_follows_the_slices_and_writes_only_on_change() {
        let a = held("public", "198.51.100.7");
        let answer = |ready| Answer {
            result: Ok(a.clone()),
            held: Some(a.clone()),
            announced: Some(announced_by("n1")),
            endpoints_ready: Some(ready),
        };
        let cond_of = |d: &Decision| {
            let c = d.status.as_ref().unwrap().conditions.as_ref().unwrap();
            c.iter().find(|c| c.type_ == cond::ENDPOINTS_READY).cloned().expect("EndpointsReady")
        };
        let web = svc("web").build();
        let d = decide(&web, &answer(true), &at(1), false);
        assert_eq!(cond_of(&d).status, "True");
        let web = applied(web, &d);
        // Scaled to zero: the condition says so and names the IP; no Event.
        let d = decide(&web, &answer(false), &at(2), false);
        let c = cond_of(&d);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", reason::NO_READY_ENDPOINT));
        assert!(c.message.contains("198.51.100.7"), "{}", c.message);
        assert!(d.notes.is_empty(), "{:?}", d.notes);
        let web = applied(web, &d);
        assert_eq!(decide(&web, &answer(false), &at(3), false).status, None);
        assert_eq!(cond_of(&decide(&web, &answer(true), &at(4), false)).status, "True");
        // Nothing held: no condition.
        let fail = Failure::Alloc(AllocError::NoPoolMatches("x".into()));
        let none = Answer { result: Err(fail), held: None, announced: None, endpoints_ready: None };
        let d = decide(&svc("other").build(), &none, &at(5), false);
        let types: Vec<_> = d.status.unwrap().conditions.unwrap().into_iter().map(|c| c.type_).collect();
        assert_eq!(types, [cond::ALLOCATED]);
    }

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
        assert_eq!(api(403).kind(), "forbidden");
        assert_eq!(api(503).kind(), "server");
        assert_eq!(api(422).kind(), "rejected");
    }
}
