//! Which Services have a ready endpoint, for the `ferrolb.io/EndpointsReady`
//! condition: an index kept from EndpointSlice watch events, so that a reconcile asks
//! one hash lookup and a slice event reports only the Services whose answer changed
//! (a rollout's many slice updates wake nothing while a ready endpoint remains). Pure.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::ServiceKey;

/// The label naming an EndpointSlice's Service (set by the EndpointSlice controller,
/// and required on slices users manage themselves).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An endpoint counts unless its `ready` condition is `false` (unset means ready, as
/// the API documents and kube-proxy reads it).
pub fn has_ready_endpoint(slice: &EndpointSlice) -> bool {
    slice.endpoints.iter().any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
}

/// The Service a slice belongs to, and whether it lists a ready endpoint.
fn entry(slice: &EndpointSlice) -> Option<(ServiceKey, bool)> {
    let name = slice.labels().get(SERVICE_NAME_LABEL)?;
    Some((ServiceKey::new(&slice.namespace().unwrap_or_default(), name), has_ready_endpoint(slice)))
}

type SliceId = (String, String);

fn id(slice: &EndpointSlice) -> SliceId {
    (slice.namespace().unwrap_or_default(), slice.name_any())
}

/// Services with a ready endpoint, from the EndpointSlices seen.
#[derive(Debug, Default)]
pub struct ReadyEndpoints {
    slices: HashMap<SliceId, (ServiceKey, bool)>,
    /// Per Service, how many of its slices list a ready endpoint (absent: none).
    ready: HashMap<ServiceKey, usize>,
    /// A re-list in progress: the slices listed so far.
    listing: Option<HashMap<SliceId, (ServiceKey, bool)>>,
    /// Whether a full list has been seen.
    synced: bool,
}

impl ReadyEndpoints {
    /// Whether Service `key` has a ready endpoint.
    pub fn has_ready(&self, key: &ServiceKey) -> bool {
        self.ready.contains_key(key)
    }

    /// Whether a full list has been seen (before that every answer is a guess).
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// A slice was added or changed: the Services whose answer changed.
    pub fn apply(&mut self, slice: &EndpointSlice) -> Vec<ServiceKey> {
        self.set(id(slice), entry(slice))
    }

    /// A slice was deleted: the Services whose answer changed.
    pub fn delete(&mut self, slice: &EndpointSlice) -> Vec<ServiceKey> {
        self.set(id(slice), None)
    }

    /// The watch restarts with a full list: collect it before replacing what is known
    /// (slices deleted while the watch was down are simply not listed).
    pub fn relist_start(&mut self) {
        self.listing = Some(HashMap::new());
    }

    /// A slice of the re-list.
    pub fn relist_apply(&mut self, slice: &EndpointSlice) {
        if let (Some(l), Some(e)) = (self.listing.as_mut(), entry(slice)) {
            l.insert(id(slice), e);
        }
    }

    /// The re-list is complete: the Services whose answer changed.
    pub fn relist_done(&mut self) -> Vec<ServiceKey> {
        let Some(listed) = self.listing.take() else { return Vec::new() };
        let before: BTreeSet<ServiceKey> = self.ready.keys().cloned().collect();
        self.slices = listed;
        self.ready.clear();
        for (key, ready) in self.slices.values() {
            if *ready {
                *self.ready.entry(key.clone()).or_default() += 1;
            }
        }
        self.synced = true;
        let after: BTreeSet<ServiceKey> = self.ready.keys().cloned().collect();
        before.symmetric_difference(&after).cloned().collect()
    }

    fn set(&mut self, id: SliceId, now: Option<(ServiceKey, bool)>) -> Vec<ServiceKey> {
        let old = match &now {
            Some(e) => self.slices.insert(id, e.clone()),
            None => self.slices.remove(&id),
        };
        let mut changed = Vec::new();
        if let Some((key, true)) = old {
            if let Some(n) = self.ready.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.ready.remove(&key);
                    changed.push(key);
                }
            }
        }
        if let Some((key, true)) = now {
            let n = self.ready.entry(key.clone()).or_default();
            *n += 1;
            if *n == 1 {
                // Gone and back in one event (the slice changed hands or stayed ready):
                // no change for that Service.
                match changed.iter().position(|k| *k == key) {
                    Some(i) => {
                        changed.remove(i);
                    }
                    None => changed.push(key),
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(ns: &str, name: &str, svc: Option<&str>, ready: &[Option<bool>]) -> EndpointSlice {
        let mut labels = serde_json::Map::new();
        if let Some(s) = svc {
            labels.insert(SERVICE_NAME_LABEL.into(), json!(s));
        }
        let endpoints: Vec<_> = ready
            .iter()
            .enumerate()
            .map(|(i, r)| match r {
                Some(r) => json!({"addresses": [format!("198.51.100.{}", i + 1)], "conditions": {"ready": r}}),
                None => json!({"addresses": [format!("198.51.100.{}", i + 1)]}),
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn key(s: &str) -> ServiceKey {
        ServiceKey::from(s)
    }

    #[test]
    fn unset_ready_counts_false_does_not() {
        assert!(has_ready_endpoint(&slice("d", "a", Some("web"), &[None])));
        assert!(has_ready_endpoint(&slice("d", "a", Some("web"), &[Some(false), Some(true)])));
        assert!(!has_ready_endpoint(&slice("d", "a", Some("web"), &[Some(false)])));
        assert!(!has_ready_endpoint(&slice("d", "a", Some("web"), &[])));
    }

    #[test]
    fn reports_only_transitions() {
        let mut r = ReadyEndpoints::default();
        assert_eq!(r.apply(&slice("d", "web-1", Some("web"), &[Some(true)])), [key("d/web")]);
        assert!(r.has_ready(&key("d/web")));
        // A second ready slice, an update that stays ready: nothing changes.
        assert!(r.apply(&slice("d", "web-2", Some("web"), &[Some(true)])).is_empty());
        assert!(r.apply(&slice("d", "web-1", Some("web"), &[Some(true), None])).is_empty());
        // One slice goes not-ready, the other still is.
        assert!(r.apply(&slice("d", "web-1", Some("web"), &[Some(false)])).is_empty());
        assert!(r.has_ready(&key("d/web")));
        // The last ready slice is deleted.
        assert_eq!(r.delete(&slice("d", "web-2", Some("web"), &[Some(true)])), [key("d/web")]);
        assert!(!r.has_ready(&key("d/web")));
        // Deleting an unknown slice, or one without the label, is nothing.
        assert!(r.delete(&slice("d", "zzz", Some("web"), &[Some(true)])).is_empty());
        assert!(r.apply(&slice("d", "x", None, &[Some(true)])).is_empty());
        // Same name in another namespace is another Service.
        assert_eq!(r.apply(&slice("e", "web-1", Some("web"), &[None])), [key("e/web")]);
        assert!(!r.has_ready(&key("d/web")));
    }

    #[test]
    fn a_slice_relabelled_moves_its_readiness() {
        let mut r = ReadyEndpoints::default();
        r.apply(&slice("d", "s", Some("a"), &[Some(true)]));
        let mut moved = r.apply(&slice("d", "s", Some("b"), &[Some(true)]));
        moved.sort();
        assert_eq!(moved, [key("d/a"), key("d/b")]);
        assert!(!r.has_ready(&key("d/a")) && r.has_ready(&key("d/b")));
    }

    #[test]
    fn a_relist_replaces_what_was_known() {
        let mut r = ReadyEndpoints::default();
        assert!(!r.synced());
        r.relist_start();
        r.relist_apply(&slice("d", "a-1", Some("a"), &[Some(true)]));
        r.relist_apply(&slice("d", "b-1", Some("b"), &[Some(true)]));
        // Nothing is answered from a half list.
        assert!(!r.has_ready(&key("d/a")));
        let mut first = r.relist_done();
        first.sort();
        assert_eq!(first, [key("d/a"), key("d/b")]);
        assert!(r.synced());
        // The watch was down while b's slice went away and c's came.
        r.relist_start();
        r.relist_apply(&slice("d", "a-1", Some("a"), &[Some(true)]));
        r.relist_apply(&slice("d", "c-1", Some("c"), &[None]));
        let mut second = r.relist_done();
        second.sort();
        assert_eq!(second, [key("d/b"), key("d/c")]);
        assert!(r.has_ready(&key("d/a")) && !r.has_ready(&key("d/b")) && r.has_ready(&key("d/c")));
        // Events after the re-list build on it.
        assert_eq!(r.delete(&slice("d", "a-1", Some("a"), &[])), [key("d/a")]);
        // A stray relist_done without a start changes nothing.
        assert!(r.relist_done().is_empty());
    }
}
