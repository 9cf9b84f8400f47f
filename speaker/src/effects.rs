//! What the announcer's notes mean outside it: metrics, takeover claims in the
//! heartbeats, Events on the Services, and log lines. The one place a note is
//! turned into side effects, so none is dropped unseen.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_common::events::{Event, EventType, Events};
use ferrolb_crds::conditions::event;
use ferrolb_model::ServiceKey;
use k8s_openapi::api::core::v1::Service;
use kube::Resource;
use kube::runtime::reflector::Store;

use crate::l2::Note;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::plan::Plan;

/// The effects of announcing, with what they must remember: the metric series of
/// each announced IP (removed when it stops) and the missing interfaces reported.
pub struct Effects {
    node: String,
    events: Events,
    metrics: Metrics,
    membership: Option<Arc<Membership>>,
    announced: BTreeMap<IpAddr, Vec<[String; 4]>>,
    reported_missing: BTreeSet<(ServiceKey, String)>,
}

impl Effects {
    /// Effects for `node`.
    pub fn new(node: &str, events: Events, metrics: Metrics, membership: Option<Arc<Membership>>) -> Effects {
        Effects {
            node: node.to_string(),
            events,
            metrics,
            membership,
            announced: BTreeMap::new(),
            reported_missing: BTreeSet::new(),
        }
    }

    /// Carry out `notes`; `plan` names the Services of each IP.
    pub async fn apply(&mut self, notes: Vec<Note>, plan: &Plan, svcs: &Store<Service>) {
        for note in notes {
            match note {
                Note::Started { ip, ifaces } => {
                    self.metrics.takeovers.inc();
                    if let Some(m) = &self.membership {
                        m.claimed(ip);
                    }
                    tracing::info!(%ip, ?ifaces, "announcing");
                    let proto = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
                    let mut labels = Vec::new();
                    for key in plan.ips.get(&ip).map(|d| d.services.as_slice()).unwrap_or_default() {
                        let l = [key.to_string(), proto.to_string(), self.node.clone(), ip.to_string()];
                        self.metrics.announced.with_label_values(&[&l[0], &l[1], &l[2], &l[3]]).set(1);
                        labels.push(l);
                        let on = ifaces.iter().cloned().collect::<Vec<_>>().join(", ");
                        let note = format!("announcing {ip} from node {} on {on}", self.node);
                        self.publish(svcs, key, EventType::Normal, event::NODE_ASSIGNED, note).await;
                    }
                    self.announced.insert(ip, labels);
                }
                Note::Stopped { ip } => {
                    tracing::info!(%ip, "stopped announcing");
                    if let Some(m) = &self.membership {
                        m.released(ip);
                    }
                    for l in self.announced.remove(&ip).unwrap_or_default() {
                        let _ = self.metrics.announced.remove_label_values(&[&l[0], &l[1], &l[2], &l[3]]);
                    }
                }
                Note::Gratuitous { ip, frames } => {
                    self.metrics.gratuitous.with_label_values(&[&ip.to_string()]).inc_by(u64::from(frames))
                }
                Note::Failed { iface, what } => tracing::warn!(%iface, %what, "announcement step failed"),
            }
        }
    }

    /// Report, once each, interfaces an advertisement names that this node lacks.
    pub async fn missing(&mut self, missing: &BTreeSet<(ServiceKey, String)>, svcs: &Store<Service>) {
        for (key, iface) in missing {
            if !self.reported_missing.insert((key.clone(), iface.clone())) {
                continue;
            }
            tracing::warn!(service = %key, %iface, "an L2Advertisement names an interface this node does not have");
            let note = format!("node {} has no interface {iface:?} named by an L2Advertisement", self.node);
            self.publish(svcs, key, EventType::Warning, event::ANNOUNCE_FAILED, note).await;
        }
    }

    async fn publish(&self, svcs: &Store<Service>, key: &ServiceKey, type_: EventType, reason: &str, note: String) {
        let Some(svc) = svcs.get(&key.object_ref()) else { return };
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: "Announce".into(), secondary: None };
        if let Err(e) = self.events.publish(&ev, &svc.object_ref(&())).await {
            tracing::debug!(service = %key, error = %e, "could not publish event");
        }
    }
}
