//! Which node announces which IP. Pure: every speaker evaluates the same
//! function on the same inputs and reaches the same answer, so no per-Service
//! lock or write is needed.
//!
//! A node is *eligible* for an IP when, for every Service sharing the IP, an
//! L2Advertisement covers the Service's pool and the Service and selects the
//! node; the node is not `NetworkUnavailable`, not labelled
//! `node.kubernetes.io/exclude-from-external-load-balancers`, its speaker is
//! alive, and for `externalTrafficPolicy: Local` it has a ready endpoint.
//! The *winner* is the eligible node with the highest rendezvous score for
//! (IP, node); non-revertive by default: a still-eligible current holder keeps
//! the IP, so a node that comes back does not cause a second move.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_model::L2Advertisement;
use ferrolb_model::selector::Labels;

/// A node as the election sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: Labels,
    /// The `NetworkUnavailable` condition is True.
    pub network_unavailable: bool,
    /// Its speaker is alive (Lease current, heartbeats answered).
    pub alive: bool,
    /// Labelled `node.kubernetes.io/exclude-from-external-load-balancers`, and the
    /// speakers honour the label (no `--ignore-exclude-lb`).
    pub excluded: bool,
}

impl Node {
    /// Whether a node with `labels` is excluded from announcing: labelled
    /// `node.kubernetes.io/exclude-from-external-load-balancers`, unless `ignore` (the
    /// speakers' `--ignore-exclude-lb`, for single-node and kind-style clusters whose only
    /// node carries it).
    pub fn excluded_by(labels: &Labels, ignore: bool) -> bool {
        ferrolb_model::announce::excluded(labels, ignore)
    }

    /// Whether the node may announce at all: alive, network available, not excluded.
    pub fn usable(&self) -> bool {
        self.alive && !self.network_unavailable && !self.excluded
    }
}

/// A Service holding an IP, as the election sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `namespace/name`.
    pub key: ferrolb_model::ServiceKey,
    /// Service labels.
    pub labels: Labels,
    /// Pool the IP comes from (the valid pool that contains it).
    pub pool: String,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// Nodes with at least one ready endpoint of the Service.
    pub ready_nodes: BTreeSet<String>,
}

/// Interfaces a node announces an IP on: all eligible ones, or a named set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interfaces {
    /// Every interface the speaker considers eligible.
    All,
    /// Only these.
    Named(BTreeSet<String>),
}

impl Interfaces {
    fn union(self, other: Interfaces) -> Interfaces {
        match (self, other) {
            (Interfaces::Named(mut a), Interfaces::Named(b)) => {
                a.extend(b);
                Interfaces::Named(a)
            }
            _ => Interfaces::All,
        }
    }
}

/// The nodes eligible to announce an IP shared by `services`, each with its interfaces.
pub fn eligible(
    services: &[&Service],
    pool_labels: &BTreeMap<String, Labels>,
    adverts: &[L2Advertisement],
    nodes: &[Node],
) -> BTreeMap<String, Interfaces> {
    let mut out = BTreeMap::new();
    if services.is_empty() {
        return out;
    }
    let empty = Labels::new();
    'nodes: for node in nodes.iter().filter(|n| n.usable()) {
        let mut ifaces: Option<Interfaces> = None;
        for svc in services {
            if svc.local && !svc.ready_nodes.contains(&node.name) {
                continue 'nodes;
            }
            let plabels = pool_labels.get(&svc.pool).unwrap_or(&empty);
            let matching: Vec<&L2Advertisement> = adverts
                .iter()
                .filter(|a| a.covers(&svc.pool, plabels, &svc.labels) && a.selects_node(&node.labels))
                .collect();
            if matching.is_empty() {
                continue 'nodes;
            }
            let these = matching
                .iter()
                .map(|a| {
                    if a.interfaces.is_empty() {
                        Interfaces::All
                    } else {
                        Interfaces::Named(a.interfaces.iter().cloned().collect())
                    }
                })
                .reduce(Interfaces::union)
                .expect("non-empty");
            ifaces = Some(match ifaces {
                None => these,
                Some(prev) => prev.union(these),
            });
        }
        out.insert(node.name.clone(), ifaces.expect("at least one service"));
    }
    out
}

/// Rendezvous score of (ip, node): FNV-1a over both, then a 64-bit finaliser for spread.
/// Stable across processes and versions, since every speaker must agree.
pub fn score(ip: &IpAddr, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let ip_bytes: Vec<u8> = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    for b in ip_bytes.iter().chain([0xffu8].iter()).chain(node.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The node that announces `ip`, if any is eligible.
pub fn elect<'a>(
    ip: &IpAddr,
    eligible: impl IntoIterator<Item = &'a String>,
    current: Option<&str>,
    revertive: bool,
) -> Option<String> {
    let eligible: Vec<&String> = eligible.into_iter().collect();
    if !revertive
        && let Some(cur) = current
        && eligible.iter().any(|n| n.as_str() == cur)
    {
        return Some(cur.to_string());
    }
    eligible.into_iter().max_by(|a, b| score(ip, a).cmp(&score(ip, b)).then_with(|| b.cmp(a))).cloned()
}

#[cfg(test)]
mod tests;
