//! The speaker's writes to the API server (Events, `ServiceL2Status` and
//! `ServiceBGPStatus` objects and not-announced reports), on a task of their own. The planning loop only hands them
//! over and never waits for the API server, so an API server that hangs delays a
//! status, never a takeover: a second failure is handled as fast as the first.
//!
//! Events go through a bounded queue (when it is full, as in a long outage, the
//! newest are dropped and counted); the statuses are state, not history: the task
//! writes the latest wanted set, and again every few seconds until the cache agrees,
//! so a write that failed is retried.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ferrolb_common::events::{Event, Events};
use ferrolb_crds::{ServiceBGPStatus, ServiceL2Status};
use ferrolb_model::ServiceKey;
use k8s_openapi::api::core::v1::Service;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::Store;
use tokio::sync::{mpsc, watch};

use crate::api::Health;
use crate::l2status;

/// Events waiting to be written, at most.
const QUEUE: usize = 1024;

/// How often the statuses are compared with the cache and rewritten where they differ.
const RESYNC: Duration = Duration::from_secs(5);

/// The statuses this node wants to exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Services this node announces, with the interfaces.
    pub mine: BTreeMap<ServiceKey, BTreeSet<String>>,
    /// Services this node reports as not announced, with the reason and message.
    pub reports: BTreeMap<ServiceKey, (&'static str, String)>,
    /// Services this node advertises over BGP, with the peers that have them.
    pub bgp: BTreeMap<ServiceKey, BTreeSet<String>>,
}

/// What the writer task needs.
pub struct Ctx {
    /// Publishes Events.
    pub events: Events,
    /// The Services (the objects Events are about).
    pub services: Store<Service>,
    /// The ServiceL2Status API and cache.
    pub api: Api<ServiceL2Status>,
    /// The ServiceL2Status cache.
    pub statuses: Store<ServiceL2Status>,
    /// The ServiceBGPStatus API.
    pub bgp_api: Api<ServiceBGPStatus>,
    /// This node's ServiceBGPStatuses.
    pub bgp_statuses: Store<ServiceBGPStatus>,
    /// Namespace of the statuses.
    pub namespace: String,
    /// This node.
    pub node: String,
    /// Bounds and counts every request.
    pub health: Health,
}

/// The handle the planning loop writes through; cloning it is cheap.
#[derive(Debug, Clone)]
pub struct Writer {
    events: mpsc::Sender<(ServiceKey, Event)>,
    wanted: std::sync::Arc<watch::Sender<Option<Wanted>>>,
    dropped: prometheus::IntCounter,
}

impl Writer {
    /// Start the writer task; it ends once every handle is dropped, after writing the
    /// last wanted statuses.
    pub fn spawn(ctx: Ctx, dropped: prometheus::IntCounter) -> (Writer, tokio::task::JoinHandle<()>) {
        let (events, rx) = mpsc::channel(QUEUE);
        let (wanted, wanted_rx) = watch::channel(None);
        let task = tokio::spawn(run(ctx, rx, wanted_rx));
        (Writer { events, wanted: std::sync::Arc::new(wanted), dropped }, task)
    }

    /// Publish `ev` about Service `key`, without waiting.
    pub fn event(&self, key: &ServiceKey, ev: Event) {
        if self.events.try_send((key.clone(), ev)).is_err() {
            self.dropped.inc();
            tracing::debug!(service = %key, "Event dropped: the writer's queue is full (API server slow or gone)");
        }
    }

    /// The statuses this node wants now.
    pub fn want(&self, w: Wanted) {
        self.wanted.send_if_modified(|cur| {
            let changed = cur.as_ref() != Some(&w);
            if changed {
                *cur = Some(w);
            }
            changed
        });
    }
}

async fn run(ctx: Ctx, mut events: mpsc::Receiver<(ServiceKey, Event)>, mut wanted: watch::Receiver<Option<Wanted>>) {
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut events_open, mut wanted_open) = (true, true);
    // Nothing is synced before the planning loop said what it wants (`None`): an empty
    // set would remove the statuses a restarted speaker still holds.
    while events_open || wanted_open {
        tokio::select! {
            ev = events.recv(), if events_open => match ev {
                Some((key, ev)) => publish(&ctx, &key, &ev).await,
                None => events_open = false,
            },
            r = wanted.changed(), if wanted_open => match r {
                Ok(()) => {
                    let w = wanted.borrow_and_update().clone();
                    sync(&ctx, w.as_ref()).await;
                }
                Err(_) => wanted_open = false,
            },
            _ = resync.tick() => {
                let w = wanted.borrow().clone();
                sync(&ctx, w.as_ref()).await;
            }
        }
    }
    // Every handle gone (the speaker stops): the last word on the statuses.
    let w = wanted.borrow().clone();
    sync(&ctx, w.as_ref()).await;
}

async fn publish(ctx: &Ctx, key: &ServiceKey, ev: &Event) {
    let Some(svc) = ctx.services.get(&key.object_ref()) else { return };
    if let Err(e) = ctx.health.call("publish an Event", ctx.events.publish(ev, &svc.object_ref(&()))).await {
        tracing::debug!(service = %key, error = %e, "could not publish event");
    }
}

async fn sync(ctx: &Ctx, w: Option<&Wanted>) {
    let Some(w) = w else { return };
    l2status::sync(&ctx.api, &ctx.statuses, &ctx.namespace, &ctx.node, &w.mine, &ctx.health).await;
    l2status::sync_reports(&ctx.api, &ctx.statuses, &ctx.namespace, &ctx.node, &w.reports, &ctx.health).await;
    crate::bgpstatus::sync(&ctx.bgp_api, &ctx.bgp_statuses, &ctx.namespace, &ctx.node, &w.bgp, &ctx.health).await;
}
