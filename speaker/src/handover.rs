//! A graceful stop hands the IPs over before this node stops answering: it tells
//! its peers it is leaving, keeps answering until every IP another member will
//! take has been claimed by it (the new holders send gratuitous ARP/NA as they
//! claim), then lets the caller stop.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::membership::Membership;
use crate::plan::Plan;

/// Announce the leave and wait for the successors. `plan` is computed once, after
/// the leave is announced, so this node's own liveness already says it is leaving:
/// which node takes each IP is settled then, and only the claims are awaited (each
/// accepted heartbeat wakes the wait; nothing polls).
pub async fn hand_over(m: &Membership, node: &str, plan: impl FnOnce() -> Plan) {
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
    tracing::info!(
        handed_over = left.is_empty(),
        waited = ?started.elapsed(),
        not_taken = left.len(),
        without_successor = unclaimed.saturating_sub(left.len()),
        "leaving"
    );
}
