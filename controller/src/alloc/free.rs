//! The free addresses of one pool and family, as disjoint intervals.
//!
//! Taking the lowest free address, taking a given one and giving one back each
//! cost O(log k) in the number of intervals k, whatever the pool's size: an
//! IPv6 /64 is one interval, never enumerated.

use std::collections::BTreeMap;

use ferrolb_model::{Family, IpRange};

/// Free intervals (start -> inclusive end) and their exact total.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FreeSet {
    free: BTreeMap<u128, u128>,
    available: u128,
}

/// Whether an IPv4 address (as an integer) ends in `.0` or `.255`.
pub fn is_buggy_v4(n: u128) -> bool {
    matches!(n & 0xff, 0 | 0xff)
}

impl FreeSet {
    /// All addresses of `ranges` of `family`, minus `.0`/`.255` for IPv4 when `avoid_buggy`.
    pub fn new(ranges: &[IpRange], family: Family, avoid_buggy: bool) -> FreeSet {
        let mut s = FreeSet::default();
        for r in ranges.iter().filter(|r| r.family == family) {
            if avoid_buggy && family == Family::V4 {
                // Split at every .255/.0 boundary: one interval per /24 block (x.1-x.254).
                let mut start = r.start;
                while start <= r.end {
                    let block_end = (start | 0xff).min(r.end);
                    let (lo, hi) = (
                        if is_buggy_v4(start) { start + 1 } else { start },
                        if is_buggy_v4(block_end) { block_end.saturating_sub(1) } else { block_end },
                    );
                    if lo <= hi && !is_buggy_v4(lo) {
                        s.insert_interval(lo, hi);
                    }
                    if block_end == u128::MAX {
                        break;
                    }
                    start = block_end + 1;
                }
            } else {
                s.insert_interval(r.start, r.end);
            }
        }
        s
    }

    fn insert_interval(&mut self, start: u128, end: u128) {
        self.free.insert(start, end);
        self.available = self.available.saturating_add(end - start).saturating_add(1);
    }

    /// Free addresses left (saturating at u128::MAX for `::/0`).
    pub fn available(&self) -> u128 {
        self.available
    }

    /// Whether `n` is free.
    pub fn is_free(&self, n: u128) -> bool {
        self.free.range(..=n).next_back().is_some_and(|(_, end)| *end >= n)
    }

    /// The lowest free address, without taking it.
    pub fn first(&self) -> Option<u128> {
        self.free.keys().next().copied()
    }

    /// Take the lowest free address.
    pub fn take_first(&mut self) -> Option<u128> {
        let (&start, &end) = self.free.iter().next()?;
        self.free.remove(&start);
        if start < end {
            self.free.insert(start + 1, end);
        }
        self.available -= 1;
        Some(start)
    }

    /// Take `n` if it is free.
    pub fn take(&mut self, n: u128) -> bool {
        let Some((&start, &end)) = self.free.range(..=n).next_back() else { return false };
        if end < n {
            return false;
        }
        self.free.remove(&start);
        if start < n {
            self.free.insert(start, n - 1);
        }
        if n < end {
            self.free.insert(n + 1, end);
        }
        self.available -= 1;
        true
    }

    /// Give `n` back, merging with neighbouring intervals. Giving back a free address is a no-op.
    pub fn put(&mut self, n: u128) {
        if self.is_free(n) {
            return;
        }
        let mut start = n;
        let mut end = n;
        if n > 0
            && let Some((&ps, &pe)) = self.free.range(..n).next_back()
            && pe == n - 1
        {
            self.free.remove(&ps);
            start = ps;
        }
        if n < u128::MAX
            && let Some(&ne) = self.free.get(&(n + 1))
        {
            self.free.remove(&(n + 1));
            end = ne;
        }
        self.free.insert(start, end);
        self.available = self.available.saturating_add(1);
    }

    /// Number of intervals (for tests and the benchmark).
    pub fn intervals(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_model::parse_range;

    fn set(ranges: &[&str], avoid: bool) -> FreeSet {
        let rs: Vec<IpRange> = ranges.iter().map(|r| parse_range(r).unwrap()).collect();
        FreeSet::new(&rs, rs[0].family, avoid)
    }

    #[test]
    fn takes_lowest_first_and_counts_exactly() {
        let mut s = set(&["198.51.100.0/30"], false);
        assert_eq!(s.available(), 4);
        let base = ferrolb_model::to_u128(&"198.51.100.0".parse().unwrap());
        assert_eq!(s.take_first(), Some(base));
        assert_eq!(s.take_first(), Some(base + 1));
        assert_eq!(s.available(), 2);
        s.put(base);
        assert_eq!(s.take_first(), Some(base));
    }

    #[test]
    fn take_specific_splits_and_put_merges() {
        let mut s = set(&["198.51.100.0/24"], false);
        let base = ferrolb_model::to_u128(&"198.51.100.0".parse().unwrap());
        assert!(s.take(base + 10));
        assert!(!s.take(base + 10), "already taken");
        assert_eq!(s.intervals(), 2);
        assert!(!s.is_free(base + 10));
        s.put(base + 10);
        assert_eq!(s.intervals(), 1);
        assert_eq!(s.available(), 256);
        s.put(base + 10);
        assert_eq!(s.available(), 256, "idempotent");
        assert!(!s.take(base + 1000), "outside the pool");
    }

    #[test]
    fn avoid_buggy_ips_excludes_dot_zero_and_dot_255() {
        let mut s = set(&["198.51.100.0/23"], true);
        assert_eq!(s.available(), 512 - 4);
        let base = ferrolb_model::to_u128(&"198.51.100.0".parse().unwrap());
        assert_eq!(s.take_first(), Some(base + 1));
        assert!(!s.is_free(base + 255));
        assert!(!s.is_free(base + 256));
        let mut r = set(&["198.51.100.255-198.51.101.0"], true);
        assert_eq!(r.available(), 0);
        assert_eq!(r.take_first(), None);
    }

    #[test]
    fn ipv6_slash_64_is_one_interval() {
        let mut s = set(&["fd42:f1b::/64"], false);
        assert_eq!(s.available(), 1u128 << 64);
        assert_eq!(s.intervals(), 1);
        for _ in 0..1000 {
            s.take_first().unwrap();
        }
        assert_eq!(s.available(), (1u128 << 64) - 1000);
        assert_eq!(s.intervals(), 1);
    }
}
