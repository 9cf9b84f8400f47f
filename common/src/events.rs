//! Kubernetes Events (`events.k8s.io/v1`) for ferrolb's transitions.
//!
//! The same contract as kube-runtime's `Recorder` (one Event per distinct occurrence,
//! a repeat within six minutes bumps the first one's `series` instead of creating
//! another), with a compact memory of what was sent: a hash and the Event's name per
//! occurrence, about a hundred bytes, where the `Recorder` keeps the whole Event
//! object (over a kilobyte each, so 28 MiB of the controller's memory after 10,000
//! allocations) and scans its whole cache on every publish.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
pub use kube::runtime::events::{Event, EventType};

/// How long a repeat counts as the same series (as kube-runtime and client-go).
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Publishes Events as one reporting controller instance.
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    controller: String,
    instance: String,
    sent: Arc<Mutex<Sent>>,
}

struct Sent {
    by_key: HashMap<u64, Occurrence>,
    swept: Instant,
}

#[derive(Clone)]
struct Occurrence {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

impl Events {
    /// Events reported by `controller` (the field manager name), from `instance` (pod or node).
    pub fn new(client: kube::Client, controller: &str, instance: &str) -> Self {
        Events {
            client,
            controller: controller.into(),
            instance: instance.into(),
            sent: Arc::new(Mutex::new(Sent { by_key: HashMap::new(), swept: Instant::now() })),
        }
    }

    /// How many occurrences are remembered for series (for tests and metrics).
    pub fn remembered(&self) -> usize {
        self.lock().by_key.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sent> {
        crate::lock(&self.sent)
    }

    /// Publish `ev` about `regarding`, in its namespace (`default` for cluster-scoped
    /// objects). A repeat of the same type, action, reason, note and objects within
    /// [`SERIES_WINDOW`] patches the first Event's series; if that Event is gone, a new
    /// one is created.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let key = occurrence_key(ev, regarding);
        let now = Instant::now();
        let previous = {
            let mut sent = self.lock();
            if now.saturating_duration_since(sent.swept) > Duration::from_secs(10) {
                sent.by_key.retain(|_, o| now.saturating_duration_since(o.last) < SERIES_WINDOW);
                sent.swept = now;
            }
            sent.by_key.get(&key).filter(|o| now.saturating_duration_since(o.last) < SERIES_WINDOW).cloned()
        };
        if let Some(o) = previous {
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &o.namespace);
            let count = o.count + 1;
            let series =
                serde_json::json!({"series": {"count": count, "lastObservedTime": MicroTime(Timestamp::now())}});
            match api.patch(&o.name, &PatchParams::default(), &Patch::Merge(&series)).await {
                Ok(_) => {
                    self.lock().by_key.insert(key, Occurrence { count, last: now, ..o });
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.event(ev, regarding);
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let created = api.create(&PostParams::default(), &event).await?;
        let name = created.metadata.name.or(event.metadata.name).unwrap_or_default();
        self.lock().by_key.insert(key, Occurrence { namespace, name, count: 1, last: now });
        Ok(())
    }

    fn event(&self, ev: &Event, regarding: &ObjectReference) -> K8sEvent {
        let now = Timestamp::now();
        let namespace = regarding.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
        let base = regarding.name.clone().unwrap_or_else(|| self.controller.clone());
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{base}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace),
                ..Default::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.as_deref().map(|n| ferrolb_crds::limits::bounded(n, MAX_NOTE_BYTES)),
            type_: Some(type_name(ev.type_).into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        }
    }
}

/// The API server rejects an Event whose note is over 1 KiB (`events.k8s.io/v1`
/// validation), so longer notes are cut, on a character boundary, with a marker.
pub const MAX_NOTE_BYTES: usize = ferrolb_crds::limits::MAX_MESSAGE_BYTES;

fn type_name(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

fn hash_ref(r: &ObjectReference, h: &mut impl Hasher) {
    (&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid, &r.field_path).hash(h);
}

/// What makes two publishes the same occurrence.
fn occurrence_key(ev: &Event, regarding: &ObjectReference) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (type_name(ev.type_), &ev.action, &ev.reason, &ev.note).hash(&mut h);
    hash_ref(regarding, &mut h);
    if let Some(r) = &ev.secondary {
        hash_ref(r, &mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests;
