//! A graceful stop hands the IPs over before this node stops answering: it tells
//! its peers it is leaving, keeps answering until every IP another member will
//! take has been claimed by it (the new holders send gratuitous ARP/NA as they
//! claim), then lets the caller stop.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferrolb_common::events::{Event, EventType};
use ferrolb_crds::conditions::event;

use crate::membership::Membership;
use crate::plan::Plan;

/// How a leave went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Every IP another member takes was claimed before the deadline.
    pub handed_over: bool,
    /// How long the wait took.
    pub waited: Duration,
    /// IPs whose successor had not claimed them at the deadline.
    pub not_taken: usize,
    /// IPs no other member may hold (no successor to wait for).
    pub without_successor: usize,
}

impl Outcome {
    /// The Event that tells an operator how the stop went (on the Node).
    pub fn event(&self, node: &str) -> Event {
        let (type_, reason, note) = if self.handed_over {
            (
                EventType::Normal,
                event::HANDED_OVER,
                format!("the speaker on {node} handed its IPs over in {:?} before it stopped", self.waited),
            )
        } else {
            (
                EventType::Warning,
                event::HANDOVER_INCOMPLETE,
                format!(
                    "the speaker on {node} stopped after {:?} with {} IPs not yet claimed by their new holders",
                    self.waited, self.not_taken
                ),
            )
        };
        Event { type_, reason: reason.into(), note: Some(note), action: "Leave".into(), secondary: None }
    }
}

/// Announce the leave and wait for the successors. `plan` is computed once, after
/// the leave is announced, so this node's own liveness already says it is leaving:
/// which node takes each IP is settled then, and only the claims are awaited (each
/// accepted heartbeat wakes the wait; nothing polls).
pub async fn hand_over(m: &Membership, node: &str, plan: impl FnOnce() -> Plan) -> Outcome {
    m.leaving.store(true, Ordering::Relaxed);
    m.send_now.notify_one();
    let started = Instant::now();
    let deadline = started + (m.detector_timing().suspect_after * 3).max(Duration::from_millis(500));
    // Members not heard from yet count through their Lease, so a speaker stopped right
    // after it started still hands over; an IP nobody else may hold (local traffic
    // policy) is not waited for.
    let p = plan();
    let taken_over = |ip: &IpAddr| p.ips.get(ip).and_then(|d| d.node.as_deref()).is_some_and(|n| n != node);
    let left = loop {
        // Register for the next heartbeat before looking, so none slips between.
        let heard = m.received.notified();
        tokio::pin!(heard);
        heard.as_mut().enable();
        let mut left = m.unclaimed(node, Instant::now());
        left.retain(|ip| taken_over(ip));
        if left.is_empty() {
            break left;
        }
        tokio::select! {
            _ = heard => {}
            _ = tokio::time::sleep_until(deadline.into()) => break left,
        }
    };
    let unclaimed = m.unclaimed(node, Instant::now()).len();
    let outcome = Outcome {
        handed_over: left.is_empty(),
        waited: started.elapsed(),
        not_taken: left.len(),
        without_successor: unclaimed.saturating_sub(left.len()),
    };
    tracing::info!(
        handed_over = outcome.handed_over,
        waited = ?outcome.waited,
        not_taken = outcome.not_taken,
        without_successor = outcome.without_successor,
        "leaving"
    );
    outcome
}
