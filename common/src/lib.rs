//! Runtime helpers shared by the controller, the speaker and the sandbox stand-ins.

pub mod events;
pub mod flags;
pub mod http;
pub mod metallb;
pub mod secure;
pub mod wait;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Resource};
use tokio::sync::Notify;

/// Lock `m`, recovering from poisoning: every critical section in ferrolb leaves its
/// data consistent at each step, so a panic elsewhere is no reason to stop serving.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tasks aborted when this is dropped: the watches of one leadership term, the
/// helpers of one run.
#[derive(Debug, Default)]
pub struct AbortOnDrop(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Spawn a reflector for `api`; the returned store fills as events arrive, `changed` is poked on each.
/// Watch errors are logged and retried with kube-runtime's default backoff.
pub fn reflect<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    reflect_with(api, watcher::Config::default(), changed)
}

/// Every object of a cache, cloned.
pub fn all<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> Vec<K> {
    store.state().iter().map(|x| (**x).clone()).collect()
}

/// [`reflect`] the objects `config` selects (a label selector, say).
pub fn reflect_with<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, relisting(api, config).modify(slim)).default_backoff().touched_objects();
    let task = tokio::spawn(async move {
        stream
            .for_each(|r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "watch error; retrying");
                }
                changed.notify_one();
                std::future::ready(())
            })
            .await;
    });
    (reader, task)
}

/// The API client both binaries use: kube's inferred configuration (in-cluster, or
/// the kubeconfig), without kube's client-level retries. Every caller already retries
/// at its own level (watchers with backoff, reconciles requeued, Leases renewed on the
/// next tick), and kube's default retries a 429/503/504 up to 15 times with growing
/// delays: a speaker's Lease renewal or a watch facing a restored API server would
/// hang inside one request for minutes instead of failing and being handled.
pub async fn client() -> anyhow::Result<kube::Client> {
    client_for(kube::Config::infer().await?)
}

/// [`client`] for a given configuration.
pub fn client_for(mut config: kube::Config) -> anyhow::Result<kube::Client> {
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

/// kube-runtime's watcher, started over (a fresh list, which the reflector takes as
/// the whole state) when the server says the version it resumes at is "too large":
/// the API server came back without the state the cache saw (restored from an older
/// backup). kube-runtime would retry that version forever and the cache would never
/// change again (`common/tests/api_server_restart.rs`).
pub fn relisting<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = watcher::Result<watcher::Event<K>>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    type Watch<K> = futures::stream::BoxStream<'static, watcher::Result<watcher::Event<K>>>;
    futures::stream::unfold((api, config, None::<Watch<K>>), |(api, config, current)| async move {
        let mut stream = current.unwrap_or_else(|| watcher(api.clone(), config.clone()).boxed());
        let item = stream.next().await?;
        let next = match &item {
            Err(e) if too_large_version(e) => {
                tracing::warn!(error = %e, "the API server has not reached this cache's version (restored?); listing again");
                None
            }
            _ => Some(stream),
        };
        Some((item, (api, config, next)))
    })
}

fn too_large_version(e: &watcher::Error) -> bool {
    let status = match e {
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s))
        | watcher::Error::InitialListFailed(kube::Error::Api(s)) => s.as_ref(),
        watcher::Error::WatchError(s) => s.as_ref(),
        _ => return false,
    };
    status.code == 504 && status.message.starts_with("Too large resource version")
}

/// Drop what no ferrolb component reads from a cached object: everything in
/// `managedFields` but the managers' names (the controller checks whether it wrote to
/// a Service) and kubectl's copy of the last applied manifest. With 10,000 Services
/// these are most of a cache's memory.
pub fn slim<K: Resource>(obj: &mut K) {
    if let Some(entries) = obj.meta_mut().managed_fields.as_mut() {
        for m in entries.iter_mut() {
            *m = ManagedFieldsEntry { manager: m.manager.take(), ..Default::default() };
        }
        entries.shrink_to_fit();
    }
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A receiver that turns `true` on SIGTERM or Ctrl-C, after logging `what` (what the
/// binary does next). Must be called inside a tokio runtime.
pub fn shutdown_signal(what: &'static str) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("{what}");
        let _ = tx.send(true);
    });
    rx
}

/// Install the global tracing subscriber: `filter` in EnvFilter syntax, `format` `text` or `json`,
/// written to stderr (colour only on a terminal).
pub fn init_logging(format: &str, filter: &str) -> anyhow::Result<()> {
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("--log-level {filter:?}: {e}"))?;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        fmt.json().init()
    } else {
        fmt.init()
    }
    Ok(())
}

#[cfg(test)]
mod slim_tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    #[test]
    fn slim_keeps_the_managers_and_drops_the_rest() {
        let mut svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"},
              "managedFields": [
                {"manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {}}, "time": "2026-11-24T00:00:00Z"},
                {"manager": "ferrolb-controller", "operation": "Apply", "subresource": "status"}]}
        }))
        .unwrap();
        slim(&mut svc);
        let managers: Vec<_> = svc.metadata.managed_fields.iter().flatten().map(|m| m.manager.clone()).collect();
        assert_eq!(managers, [Some("kubectl".to_string()), Some("ferrolb-controller".to_string())]);
        assert!(svc.metadata.managed_fields.iter().flatten().all(|m| m.fields_v1.is_none() && m.time.is_none()));
        let annotations = svc.metadata.annotations.unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["keep"]);
    }
}
