//! One leadership term: the caches, the replay of every IP already handed out,
//! then the Service controller, the config loop and pool status, until one of
//! them fails or the term ends (everything here is dropped with it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrolb_common::events::Events;
use ferrolb_common::lock;
use ferrolb_model::{ServiceKey, ingress_ips, is_ours};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use crate::ProcessState;
use crate::configuration::{Readers, config_loop};
use crate::pool_status::pool_status_loop;
use crate::presence::{Presence, presence_loop};
use crate::reconcile::{Ctx, error_policy, reconcile};
use crate::service;
use crate::settings::Settings;

/// Run one term until a critical task fails.
pub async fn lead(client: Client, settings: Settings, state: ProcessState) -> anyhow::Result<()> {
    let config_changed = Arc::new(Notify::new());
    let readers = Arc::new(
        Readers::start(&client, &settings.namespace, settings.metallb_namespace.as_deref(), config_changed.clone())
            .await,
    );

    let svc_api: Api<Service> = Api::all(client.clone());
    let (svc_store, svc_writer) = reflector::store();
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    let (all_tx, all_rx) = mpsc::unbounded_channel::<()>();
    let pools_dirty = Arc::new(Notify::new());
    let manager = settings.instance_name();
    let events = Events::new(client.clone(), &manager, &settings.identity);
    let (statuses_tx, statuses_rx) = mpsc::unbounded_channel();
    let presence_changed = Arc::new(Notify::new());
    let presence = Arc::new(Presence::start(
        &client,
        &settings.namespace,
        settings.ignore_exclude_lb,
        statuses_tx,
        presence_changed.clone(),
    ));
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        alloc: state.alloc.clone(),
        lb_class: settings.lb_class.clone(),
        events: events.clone(),
        metrics: state.metrics.clone(),
        pools_dirty: pools_dirty.clone(),
        pending: Mutex::new(BTreeMap::new()),
        wake: wake_tx,
        failures: Mutex::new(HashMap::new()),
        field_manager: manager.clone(),
        presence: presence.clone(),
        metallb_compat: settings.metallb_namespace.is_some(),
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
            gc_ctx.release(ServiceKey::of(s).as_str());
        }
        Ok(watcher::Event::InitDone) => {
            let live: BTreeSet<ServiceKey> = gc_store.state().iter().map(|s| ServiceKey::of(s)).collect();
            let gone: Vec<ServiceKey> =
                lock(&gc_ctx.alloc).assigned().map(|(k, _)| k.clone()).filter(|k| !live.contains(k)).collect();
            for k in gone {
                gc_ctx.release(k.as_str());
            }
        }
        _ => {}
    })
    .touched_objects();
    // The Service stream must be driven for the store to fill; the Controller drives it.
    let controller = Controller::for_stream(svc_events, svc_store.clone());

    readers.synced(Duration::from_secs(120)).await?;
    tokio::time::timeout(Duration::from_secs(120), presence.synced())
        .await
        .map_err(|_| anyhow::anyhow!("speaker status caches did not sync within 120 s"))??;
    lock(&state.alloc).set_config(readers.config());
    replay(&svc_api, &settings, &state).await?;
    state.ready.store(true, Ordering::SeqCst);

    let config_task = config_loop(ctx.clone(), readers.clone(), svc_store.clone(), config_changed, all_tx)
        .instrument(tracing::info_span!("config"));
    let status_task =
        pool_status_loop(client.clone(), settings.namespace.clone(), ctx.clone(), readers.clone(), events, pools_dirty)
            .instrument(tracing::info_span!("pool_status"));
    let presence_task = presence_loop(presence, svc_store.clone(), statuses_rx, presence_changed, ctx.wake.clone())
        .instrument(tracing::info_span!("presence"));
    let run = controller
        .reconcile_all_on(stream_of(all_rx))
        .reconcile_on(stream_of(wake_rx))
        .run(reconcile, error_policy, ctx)
        .for_each(|_| std::future::ready(()))
        .instrument(tracing::info_span!("services"));
    tokio::select! {
        _ = run => anyhow::bail!("service controller ended"),
        r = config_task => r,
        r = status_task => r,
        r = presence_task => r,
    }
}

/// List Services directly so that every IP already handed out is held before the
/// controller allocates anything new; oldest Service first.
async fn replay(svc_api: &Api<Service>, settings: &Settings, state: &ProcessState) -> anyhow::Result<()> {
    let existing = svc_api.list(&Default::default()).await?;
    let mut with_ips: Vec<&Service> = existing
        .items
        .iter()
        .filter(|s| is_ours(s, settings.lb_class.as_deref()) && !ingress_ips(s).is_empty())
        .collect();
    with_ips.sort_by_key(|s| (s.metadata.creation_timestamp.clone().map(|t| t.0), ServiceKey::of(s)));
    let mut alloc = lock(&state.alloc);
    for s in &with_ips {
        if let Ok(req) = service::request(s)
            && let Err(e) = alloc.assign(&req, &ingress_ips(s))
        {
            tracing::warn!(service = %ServiceKey::of(s), error = %e, "could not keep the Service's IP across restart");
        }
    }
    tracing::info!(replayed = with_ips.len(), "replayed existing allocations");
    Ok(())
}

fn stream_of<T: Send + 'static>(mut rx: mpsc::UnboundedReceiver<T>) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
