//! Who watches whom: every ring member is observed by [`OBSERVERS`] others, its
//! successors on as many rings (each ring orders the members by a different hash of
//! their names, so the observer graph is an expander: Rapid's K rings). Every speaker
//! computes the same rings from the same member set (the speaker Leases), so a node
//! knows whom to send heartbeats to (its observers) and whom it watches (its subjects)
//! without asking anyone.
//!
//! Pure: names in, names out.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

/// How many observers watch each member (fewer when the ring has fewer other members).
/// Each member sends `OBSERVERS` heartbeats per interval and receives about as many,
/// whatever the cluster size.
pub const OBSERVERS: usize = 4;

/// The rings over one member set.
#[derive(Debug, Clone, Default)]
pub struct Rings {
    /// Per ring, the members in ring order.
    order: Vec<Vec<String>>,
    /// Per ring, each member's position in `order`.
    position: Vec<BTreeMap<String, usize>>,
}

/// A member's place on ring `ring`: the first eight bytes of SHA-256 over the ring
/// number and the name (the same on every node and every release).
fn rank(ring: usize, name: &str) -> u64 {
    let mut h = Sha256::new();
    h.update((ring as u64).to_be_bytes());
    h.update(name.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

impl Rings {
    /// The rings over `members`.
    pub fn new<'a>(members: impl IntoIterator<Item = &'a String>) -> Self {
        let members: Vec<&String> = members.into_iter().collect();
        let mut order = Vec::with_capacity(OBSERVERS);
        let mut position = Vec::with_capacity(OBSERVERS);
        for r in 0..OBSERVERS {
            let mut ring: Vec<(u64, &String)> = members.iter().map(|m| (rank(r, m), *m)).collect();
            ring.sort();
            let ring: Vec<String> = ring.into_iter().map(|(_, m)| m.clone()).collect();
            position.push(ring.iter().enumerate().map(|(i, m)| (m.clone(), i)).collect());
            order.push(ring);
        }
        Rings { order, position }
    }

    /// The members of the rings.
    pub fn len(&self) -> usize {
        self.order.first().map_or(0, Vec::len)
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `name` is on the rings.
    pub fn contains(&self, name: &str) -> bool {
        self.position.first().is_some_and(|p| p.contains_key(name))
    }

    /// The observers of `subject`: on each ring in turn, its first successor that is
    /// not skipped (a dead or departed member) and not already chosen. Up to
    /// [`OBSERVERS`] distinct members, fewer only when the rings have fewer others.
    pub fn observers(&self, subject: &str, skip: &BTreeSet<String>) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(OBSERVERS);
        for (ring, pos) in self.order.iter().zip(&self.position) {
            let Some(&at) = pos.get(subject) else { return Vec::new() };
            let n = ring.len();
            for step in 1..n {
                let m = &ring[(at + step) % n];
                if !skip.contains(m) && !out.contains(m) {
                    out.push(m.clone());
                    break;
                }
            }
        }
        out
    }

    /// Every member's observers, skipped members included (a dead member stays
    /// watched, so that its observers' verdicts hold and its return is heard).
    pub fn all_observers(&self, skip: &BTreeSet<String>) -> BTreeMap<String, Vec<String>> {
        self.order
            .first()
            .map_or_else(BTreeMap::new, |ring| ring.iter().map(|m| (m.clone(), self.observers(m, skip))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn every_member_has_distinct_observers_and_watches_about_as_many() {
        for n in [2, 3, 5, 10, 100, 1000] {
            let members = names(n);
            let rings = Rings::new(&members);
            let all = rings.all_observers(&BTreeSet::new());
            let mut watched: BTreeMap<&String, usize> = BTreeMap::new();
            for (subject, obs) in &all {
                assert_eq!(obs.len(), OBSERVERS.min(n - 1), "{subject} of {n}");
                assert!(!obs.contains(subject));
                let distinct: BTreeSet<_> = obs.iter().collect();
                assert_eq!(distinct.len(), obs.len());
                for o in obs {
                    *watched.entry(o).or_default() += 1;
                }
            }
            // Each ring gives every member exactly one subject; distinctness moves a
            // few, so nobody watches many more than OBSERVERS.
            let max = watched.values().copied().max().unwrap_or(0);
            assert!(max <= 2 * OBSERVERS, "{n} members: someone watches {max}");
        }
    }

    #[test]
    fn the_rings_do_not_depend_on_the_order_members_are_given_in() {
        let mut members = names(50);
        let a = Rings::new(&members).all_observers(&BTreeSet::new());
        members.reverse();
        let b = Rings::new(&members).all_observers(&BTreeSet::new());
        assert_eq!(a, b);
    }

    #[test]
    fn a_skipped_observer_is_replaced_by_the_next_on_its_ring() {
        let members = names(20);
        let rings = Rings::new(&members);
        let before = rings.observers("node-3", &BTreeSet::new());
        let gone: BTreeSet<String> = [before[0].clone()].into();
        let after = rings.observers("node-3", &gone);
        assert_eq!(after.len(), OBSERVERS);
        assert!(!after.contains(&before[0]));
        // The others stay: only the dead observer's ring moves on.
        for o in &before[1..] {
            assert!(after.contains(o), "{o} kept");
        }
        assert!(rings.observers("not-a-member", &BTreeSet::new()).is_empty());
    }
}
