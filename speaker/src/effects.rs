//! What the announcer's notes mean outside it: metrics, takeover claims in the
//! heartbeats, Events on the Services, and log lines. The one place a note is
//! turned into side effects, so none is dropped unseen.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_common::events::{Event, EventType};
use ferrolb_crds::conditions::event;
use ferrolb_model::ServiceKey;

use crate::l2::Note;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::plan::Plan;
use crate::responder::Conflict;
use crate::writer::Writer;

/// The effects of announcing, with what they must remember: the metric series of
/// each announced IP (removed when it stops) and the missing interfaces reported.
pub struct Effects {
    node: String,
    writer: Writer,
    metrics: Metrics,
    membership: Option<Arc<Membership>>,
    announced: BTreeMap<IpAddr, Vec<[String; 4]>>,
    reported_missing: BTreeSet<(ServiceKey, String)>,
    conflicts_logged: BTreeMap<IpAddr, std::time::Instant>,
}

/// At most one log line per IP in conflict this often (each defense still counts).
const CONFLICT_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Effects {
    /// Effects for `node`.
    pub fn new(node: &str, writer: Writer, metrics: Metrics, membership: Option<Arc<Membership>>) -> Effects {
        Effects {
            node: node.to_string(),
            writer,
            metrics,
            membership,
            announced: BTreeMap::new(),
            reported_missing: BTreeSet::new(),
            conflicts_logged: BTreeMap::new(),
        }
    }

    /// Carry out `notes`; `plan` names the Services of each IP.
    pub fn apply(&mut self, notes: Vec<Note>, plan: &Plan) {
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
                        self.publish(key, EventType::Normal, event::NODE_ASSIGNED, note);
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
                    self.metrics.forget_ip(&ip.to_string());
                }
                Note::Gratuitous { ip, frames } => {
                    self.metrics.gratuitous.with_label_values(&[&ip.to_string()]).inc_by(u64::from(frames))
                }
                Note::Failed { iface, what } => tracing::warn!(%iface, %what, "announcement step failed"),
            }
        }
    }

    /// Report conflicts the responders defended: a log line (at most one per IP a
    /// minute) and a Warning Event on each Service of the IP naming the other host.
    pub fn conflicts(&mut self, defended: Vec<(String, Conflict)>, plan: &Plan) {
        for (iface, c) in defended {
            let now = std::time::Instant::now();
            let quiet =
                self.conflicts_logged.get(&c.ip).is_some_and(|at| now.duration_since(*at) < CONFLICT_LOG_INTERVAL);
            if !quiet {
                self.conflicts_logged.insert(c.ip, now);
                tracing::warn!(ip = %c.ip, mac = %c.mac, %iface, "another host claimed an announced IP; re-announced it");
            }
            let note = format!(
                "host {} claimed {} on {iface} of node {}; the speaker re-announced it (an IP conflict: \
                 find that host and remove the address from it)",
                c.mac, c.ip, self.node
            );
            for key in plan.ips.get(&c.ip).map(|d| d.services.as_slice()).unwrap_or_default() {
                self.publish(key, EventType::Warning, event::IP_CONFLICT, note.clone());
            }
        }
        self.conflicts_logged.retain(|_, at| at.elapsed() < CONFLICT_LOG_INTERVAL);
    }

    /// Report, once each, interfaces an advertisement names that this node lacks.
    pub fn missing(&mut self, missing: &BTreeSet<(ServiceKey, String)>) {
        for (key, iface) in missing {
            if !self.reported_missing.insert((key.clone(), iface.clone())) {
                continue;
            }
            tracing::warn!(service = %key, %iface, "an L2Advertisement names an interface this node does not have");
            let note = format!("node {} has no interface {iface:?} named by an L2Advertisement", self.node);
            self.publish(key, EventType::Warning, event::ANNOUNCE_FAILED, note);
        }
    }

    /// Hand an Event about `key` to the writer (never waits for the API server).
    fn publish(&self, key: &ServiceKey, type_: EventType, reason: &str, note: String) {
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: "Announce".into(), secondary: None };
        self.writer.event(key, ev);
    }
}
