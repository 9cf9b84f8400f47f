//! Desired announcements -> the responder table, solicited-node group
//! membership and gratuitous ARP/NA: a burst on takeover, then a periodic
//! refresh. I/O goes through [`Io`], and time is passed in, so the announcer is
//! tested without privileges or sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::frames;
use crate::l2::table::{TableReader, TableWriter};
use crate::responder::{Iface, Table};
use crate::wire::solicited_node;

/// What the announcer needs from the system.
pub trait Io {
    /// Send a frame out of `iface`.
    fn send(&mut self, iface: &str, frame: &[u8]) -> std::io::Result<()>;
    /// Join an IPv6 multicast group on `iface` (so MLD-snooping switches deliver NS).
    fn join(&mut self, iface: &str, group: Ipv6Addr) -> std::io::Result<()>;
    /// Leave it.
    fn leave(&mut self, iface: &str, group: Ipv6Addr) -> std::io::Result<()>;
}

/// Gratuitous timing: `burst` announcements `burst_gap` apart on takeover, then every `refresh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GratuitousTiming {
    /// Announcements in the takeover burst.
    pub burst: u32,
    /// Gap between them.
    pub burst_gap: Duration,
    /// Refresh interval after the burst.
    pub refresh: Duration,
}

impl Default for GratuitousTiming {
    fn default() -> Self {
        GratuitousTiming { burst: 3, burst_gap: Duration::from_millis(500), refresh: Duration::from_secs(30) }
    }
}

/// Something the announcer did, for logs, metrics and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Started answering for `ip` on `ifaces`.
    Started { ip: IpAddr, ifaces: BTreeSet<String> },
    /// Stopped answering for `ip`.
    Stopped { ip: IpAddr },
    /// Sent gratuitous frames for `ip` (count).
    Gratuitous {
        ip: IpAddr,
        /// Frames sent.
        frames: u32,
    },
    /// An I/O step failed; announcing goes on elsewhere.
    Failed {
        iface: String,
        /// What failed.
        what: String,
    },
}

#[derive(Debug, Clone)]
struct Schedule {
    next: Instant,
    left_in_burst: u32,
}

/// The announcer state for this node.
#[derive(Debug)]
pub struct Announcer<I: Io> {
    io: I,
    timing: GratuitousTiming,
    ifaces: BTreeMap<String, Iface>,
    table: Table,
    published: TableWriter,
    schedule: BTreeMap<IpAddr, Schedule>,
}

impl<I: Io> Announcer<I> {
    /// An announcer over `io` with no IPs.
    pub fn new(io: I, timing: GratuitousTiming) -> Self {
        Announcer {
            io,
            timing,
            ifaces: BTreeMap::new(),
            table: Table::default(),
            published: TableWriter::default(),
            schedule: BTreeMap::new(),
        }
    }

    /// The responder table (what to answer for, where).
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// A handle on the table as last published, for the responder threads: they read
    /// a snapshot and never wait for the announcer, which sends frames while it works.
    pub fn reader(&self) -> TableReader {
        self.published.reader()
    }

    fn publish(&mut self) {
        self.published.publish(&self.table);
    }

    /// The I/O, e.g. to inspect a fake in tests.
    pub fn io(&self) -> &I {
        &self.io
    }

    /// The I/O, to add or remove interfaces' sockets.
    pub fn io_mut(&mut self) -> &mut I {
        &mut self.io
    }

    /// Known interfaces.
    pub fn interfaces(&self) -> impl Iterator<Item = &Iface> {
        self.ifaces.values()
    }

    /// Replace the set of usable interfaces; IPs re-announce on interfaces that appear.
    #[must_use = "the notes report frames sent and steps that failed"]
    pub fn set_interfaces(&mut self, ifaces: Vec<Iface>, now: Instant) -> Vec<Note> {
        self.ifaces = ifaces.into_iter().map(|i| (i.name.clone(), i)).collect();
        let desired: BTreeMap<IpAddr, BTreeSet<String>> =
            self.table.ips().map(|ip| (*ip, self.table.get(ip).cloned().unwrap_or_default())).collect();
        // Interfaces that vanished are dropped by apply(); new ones get a fresh burst.
        let mut notes = Vec::new();
        for (ip, wanted) in desired {
            let present: BTreeSet<String> = wanted.iter().filter(|i| self.ifaces.contains_key(*i)).cloned().collect();
            if present != wanted {
                self.table.insert(ip, present);
                self.schedule.insert(ip, Schedule { next: now, left_in_burst: self.timing.burst });
            }
        }
        self.publish();
        notes.extend(self.tick(now));
        notes
    }

    /// Make the announced set exactly `desired` (IP -> interface names; unknown names are skipped).
    /// New IPs are answered at once and get a gratuitous burst; dropped ones stop at once.
    #[must_use = "the notes report what started and stopped, frames sent and steps that failed"]
    pub fn apply(&mut self, desired: &BTreeMap<IpAddr, BTreeSet<String>>, now: Instant) -> Vec<Note> {
        let mut notes = Vec::new();
        let current: Vec<IpAddr> = self.table.ips().copied().collect();
        for ip in current {
            if !desired.contains_key(&ip) {
                let old = self.table.remove(&ip).unwrap_or_default();
                self.schedule.remove(&ip);
                if let IpAddr::V6(v6) = ip {
                    for i in &old {
                        if let Err(e) = self.io.leave(i, solicited_node(&v6)) {
                            notes.push(Note::Failed {
                                iface: i.clone(),
                                what: format!("leave solicited-node group of {v6}: {e}"),
                            });
                        }
                    }
                }
                notes.push(Note::Stopped { ip });
            }
        }
        for (ip, want) in desired {
            let ifaces: BTreeSet<String> = want.iter().filter(|i| self.ifaces.contains_key(*i)).cloned().collect();
            let old = self.table.get(ip).cloned();
            if old.as_ref() == Some(&ifaces) {
                continue;
            }
            if let IpAddr::V6(v6) = ip {
                let old = old.clone().unwrap_or_default();
                for i in ifaces.difference(&old) {
                    if let Err(e) = self.io.join(i, solicited_node(v6)) {
                        notes.push(Note::Failed {
                            iface: i.clone(),
                            what: format!("join solicited-node group of {v6}: {e}"),
                        });
                    }
                }
                for i in old.difference(&ifaces) {
                    let _ = self.io.leave(i, solicited_node(v6));
                }
            }
            self.table.insert(*ip, ifaces.clone());
            self.schedule.insert(*ip, Schedule { next: now, left_in_burst: self.timing.burst });
            notes.push(Note::Started { ip: *ip, ifaces });
        }
        // Answer for new IPs before their first gratuitous frame goes out.
        self.publish();
        notes.extend(self.tick(now));
        notes
    }

    /// When the next gratuitous announcement is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.schedule.values().map(|s| s.next).min()
    }

    /// Send every gratuitous announcement due at `now`.
    #[must_use = "the notes report frames sent and steps that failed"]
    pub fn tick(&mut self, now: Instant) -> Vec<Note> {
        let mut notes = Vec::new();
        let due: Vec<IpAddr> = self.schedule.iter().filter(|(_, s)| s.next <= now).map(|(ip, _)| *ip).collect();
        for ip in due {
            let ifaces = self.table.get(&ip).cloned().unwrap_or_default();
            let mut sent = 0;
            for name in &ifaces {
                let Some(iface) = self.ifaces.get(name) else { continue };
                let out: Vec<Vec<u8>> = match ip {
                    IpAddr::V4(v4) => frames::gratuitous_arp(iface.mac, v4, None).to_vec(),
                    IpAddr::V6(v6) => vec![frames::unsolicited_advert(iface.mac, v6, None)],
                };
                for f in out {
                    match self.io.send(name, &f) {
                        Ok(()) => sent += 1,
                        Err(e) => {
                            notes.push(Note::Failed { iface: name.clone(), what: format!("gratuitous for {ip}: {e}") })
                        }
                    }
                }
            }
            if sent > 0 {
                notes.push(Note::Gratuitous { ip, frames: sent });
            }
            if let Some(s) = self.schedule.get_mut(&ip) {
                s.left_in_burst = s.left_in_burst.saturating_sub(1);
                s.next = now + if s.left_in_burst > 0 { self.timing.burst_gap } else { self.timing.refresh };
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::Frame;
    use crate::wire::{Mac, arp};

    #[derive(Debug, Default)]
    struct Fake {
        sent: Vec<(String, Vec<u8>)>,
        groups: BTreeSet<(String, Ipv6Addr)>,
        broken: BTreeSet<String>,
    }

    impl Io for Fake {
        fn send(&mut self, iface: &str, frame: &[u8]) -> std::io::Result<()> {
            if self.broken.contains(iface) {
                return Err(std::io::Error::other("link down"));
            }
            self.sent.push((iface.into(), frame.to_vec()));
            Ok(())
        }
        fn join(&mut self, iface: &str, group: Ipv6Addr) -> std::io::Result<()> {
            self.groups.insert((iface.into(), group));
            Ok(())
        }
        fn leave(&mut self, iface: &str, group: Ipv6Addr) -> std::io::Result<()> {
            self.groups.remove(&(iface.into(), group));
            Ok(())
        }
    }

    fn announcer(now: Instant) -> Announcer<Fake> {
        let mut a = Announcer::new(Fake::default(), GratuitousTiming::default());
        let _ = a.set_interfaces(
            vec![
                Iface { name: "eth0".into(), mac: Mac([2, 0, 0, 0, 0, 0xa]) },
                Iface { name: "eth1".into(), mac: Mac([2, 0, 0, 0, 0, 0xb]) },
            ],
            now,
        );
        a
    }

    fn want(pairs: &[(&str, &[&str])]) -> BTreeMap<IpAddr, BTreeSet<String>> {
        pairs.iter().map(|(ip, ifs)| (ip.parse().unwrap(), ifs.iter().map(|s| s.to_string()).collect())).collect()
    }

    #[test]
    fn takeover_answers_at_once_and_bursts_then_refreshes() {
        let t0 = Instant::now();
        let mut a = announcer(t0);
        let notes = a.apply(&want(&[("198.51.100.7", &["eth0"])]), t0);
        assert!(notes.contains(&Note::Started {
            ip: "198.51.100.7".parse().unwrap(),
            ifaces: BTreeSet::from(["eth0".to_string()])
        }));
        assert!(a.table().get(&"198.51.100.7".parse().unwrap()).is_some());
        // Burst frame 1 right away: gratuitous request and reply from eth0's MAC.
        assert_eq!(a.io().sent.len(), 2);
        let f = Frame::new_checked(&a.io().sent[0].1[..]).unwrap();
        assert_eq!(f.src(), Mac([2, 0, 0, 0, 0, 0xa]));
        let g = arp::Repr::parse(&arp::Packet::new_checked(f.payload()).unwrap()).unwrap();
        assert_eq!(g.spa, g.tpa);
        // Then two more 500 ms apart, then the 30 s refresh.
        assert_eq!(a.next_due(), Some(t0 + Duration::from_millis(500)));
        let _ = a.tick(t0 + Duration::from_millis(500));
        let _ = a.tick(t0 + Duration::from_millis(1000));
        assert_eq!(a.io().sent.len(), 6);
        assert_eq!(a.next_due(), Some(t0 + Duration::from_millis(1000) + Duration::from_secs(30)));
        let _ = a.tick(t0 + Duration::from_secs(5));
        assert_eq!(a.io().sent.len(), 6, "nothing due before the refresh");
    }

    #[test]
    fn readers_see_each_change_as_one_published_table() {
        let t0 = Instant::now();
        let mut a = announcer(t0);
        let reader = a.reader();
        let before = reader.load();
        let _ = a.apply(&want(&[("198.51.100.7", &["eth0"]), ("fd42:f1b::7", &["eth1"])]), t0);
        let now = reader.load();
        assert!(before.is_empty(), "a snapshot taken earlier does not change under its reader");
        assert_eq!(**now, *a.table());
        let _ = a.apply(&want(&[("fd42:f1b::7", &["eth1"])]), t0);
        assert_eq!(reader.load().len(), 1);
        let _ = a.set_interfaces(vec![Iface { name: "eth0".into(), mac: Mac([2, 0, 0, 0, 0, 0xa]) }], t0);
        assert!(reader.load().get(&"fd42:f1b::7".parse().unwrap()).unwrap().is_empty(), "eth1 is gone");
    }

    #[test]
    fn release_stops_answering_at_once_and_leaves_the_group() {
        let t0 = Instant::now();
        let mut a = announcer(t0);
        let _ = a.apply(&want(&[("fd42:f1b::7", &["eth0", "eth1"])]), t0);
        let sn = solicited_node(&"fd42:f1b::7".parse().unwrap());
        assert!(a.io().groups.contains(&("eth0".to_string(), sn)) && a.io().groups.contains(&("eth1".to_string(), sn)));
        assert_eq!(a.io().sent.len(), 2, "one unsolicited NA per interface");
        let notes = a.apply(&BTreeMap::new(), t0);
        assert_eq!(notes, vec![Note::Stopped { ip: "fd42:f1b::7".parse().unwrap() }]);
        assert!(a.table().is_empty());
        assert!(a.io().groups.is_empty());
        assert_eq!(a.next_due(), None);
    }

    #[test]
    fn unknown_and_failing_interfaces_do_not_stop_the_others() {
        let t0 = Instant::now();
        let mut a = announcer(t0);
        a.io.broken.insert("eth1".into());
        let notes = a.apply(&want(&[("198.51.100.7", &["eth0", "eth1", "eth9"])]), t0);
        assert_eq!(a.table().get(&"198.51.100.7".parse().unwrap()).unwrap().len(), 2, "eth9 does not exist");
        assert!(notes.iter().any(|n| matches!(n, Note::Failed { iface, .. } if iface == "eth1")));
        assert!(a.io().sent.iter().all(|(i, _)| i == "eth0"));
        assert!(!a.io().sent.is_empty());
    }

    #[test]
    fn an_interface_that_disappears_is_dropped_and_one_that_appears_gets_a_burst() {
        let t0 = Instant::now();
        let mut a = announcer(t0);
        let _ = a.apply(&want(&[("198.51.100.7", &["eth0", "eth1"])]), t0);
        let _ = a.set_interfaces(vec![Iface { name: "eth0".into(), mac: Mac([2, 0, 0, 0, 0, 0xa]) }], t0);
        assert_eq!(a.table().get(&"198.51.100.7".parse().unwrap()).unwrap(), &BTreeSet::from(["eth0".to_string()]));
        // Re-applying the same desired set brings eth1 back once it exists again.
        let _ = a.set_interfaces(
            vec![
                Iface { name: "eth0".into(), mac: Mac([2, 0, 0, 0, 0, 0xa]) },
                Iface { name: "eth1".into(), mac: Mac([2, 0, 0, 0, 0, 0xb]) },
            ],
            t0,
        );
        let before = a.io().sent.len();
        let _ = a.apply(&want(&[("198.51.100.7", &["eth0", "eth1"])]), t0);
        assert!(a.io().sent[before..].iter().any(|(i, _)| i == "eth1"));
    }
}
