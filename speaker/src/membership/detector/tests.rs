use super::*;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn hb(node: &str, seq: u64, heard: &[(&str, u32)]) -> Heartbeat {
    Heartbeat {
        node: node.into(),
        incarnation: 1,
        seq,
        ready: true,
        leaving: false,
        heard: heard.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
        claims: vec![],
        sent_ms: None,
        ..Heartbeat::default()
    }
}

/// The receiver's wall clock in these tests (ms since the epoch).
const WALL: u64 = 1_800_000_000_000;

/// A detector for `me` among members n1..n9 that speak the previous release's
/// all-to-all heartbeats (judged on direct and reported silence, as before rings).
fn det(me: &str, t0: Instant) -> Detector {
    let mut d = Detector::new(me, HeartbeatTiming::default(), t0);
    d.set_members_with_legacy(std::iter::empty(), (1..10).map(|i| format!("n{i}")));
    d
}

/// A detector for `me` among ring members n1..n9.
fn ring_det(me: &str, t0: Instant) -> Detector {
    let mut d = Detector::new(me, HeartbeatTiming::default(), t0);
    d.set_members((1..10).map(|i| format!("n{i}")));
    d
}

/// Receive `h` as an FLB2 heartbeat sent just now.
fn rx(d: &mut Detector, h: Heartbeat, at: Instant) -> Result<(), Reject> {
    d.receive(Heartbeat { sent_ms: Some(WALL), ..h }, Format::V2, at, WALL)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn sealed_heartbeats_open_only_with_the_key_and_unchanged() {
    let h = hb("n2", 7, &[("n3", 40)]);
    let d = seal(KEY, &h, Format::V2, WALL);
    assert_eq!(open(&[KEY], &d).unwrap(), (Heartbeat { sent_ms: Some(WALL), ..h.clone() }, Format::V2));
    assert_eq!(open(&[b"another key".as_slice()], &d), Err(Reject::BadTag));
    // During a rotation either key verifies.
    assert!(open(&[b"the next key".as_slice(), KEY], &d).is_ok());
    // The previous release's format: no sending time.
    let v1 = seal(KEY, &h, Format::V1, WALL);
    assert_eq!(&v1[..4], b"FLB1");
    assert_eq!(open(&[KEY], &v1).unwrap(), (h.clone(), Format::V1));
    let mut tampered = d.clone();
    tampered[10] ^= 1;
    assert_eq!(open(&[KEY], &tampered), Err(Reject::BadTag));
    assert!(matches!(open(&[KEY], &d[..20]), Err(Reject::Malformed(_))));
    assert!(matches!(open(&[KEY], b"GET / HTTP/1.1\r\n\r\n-----------------------"), Err(Reject::Malformed(_))));
    // A correctly tagged body that is not a heartbeat.
    let junk = seal_raw(KEY, b"{\"node\": 5}");
    assert!(matches!(open(&[KEY], &junk), Err(Reject::Malformed(_))));
}

#[test]
fn a_silent_member_is_dead_after_suspect_after_and_alive_when_heard_again() {
    let t0 = Instant::now();
    let mut d = det("n1", t0);
    assert_eq!(d.liveness("n2", t0), Liveness::Unknown);
    rx(&mut d, hb("n2", 1, &[]), t0).unwrap();
    assert_eq!(d.liveness("n2", t0 + ms(300)), Liveness::Alive);
    assert_eq!(d.liveness("n2", t0 + ms(301)), Liveness::Dead);
    rx(&mut d, hb("n2", 2, &[]), t0 + ms(900)).unwrap();
    assert_eq!(d.liveness("n2", t0 + ms(900)), Liveness::Alive);
}

#[test]
fn a_lossy_link_is_bridged_by_another_members_report() {
    // n1 stops hearing n2 directly, but n3 keeps reporting that it hears n2.
    let t0 = Instant::now();
    let mut d = det("n1", t0);
    rx(&mut d, hb("n2", 1, &[]), t0).unwrap();
    for i in 1..=20u64 {
        let now = t0 + ms(100 * i);
        rx(&mut d, hb("n3", i, &[("n2", 30)]), now).unwrap();
        assert_eq!(d.liveness("n2", now), Liveness::Alive, "at {i}");
    }
    // Once n3's reports age too, n2 is dead.
    assert_eq!(d.liveness("n2", t0 + ms(2000 + 270)), Liveness::Alive);
    assert_eq!(d.liveness("n2", t0 + ms(2000 + 271)), Liveness::Dead);
    // n1 reports only direct hearing: n2 is not in its own heard list, n3 is.
    let heard = d.heard(t0 + ms(2000));
    assert_eq!(heard, vec![("n2".to_string(), 2000), ("n3".to_string(), 0)]);
}

#[test]
fn replays_self_and_stale_incarnations_are_refused() {
    let t0 = Instant::now();
    let mut d = det("n1", t0);
    assert_eq!(rx(&mut d, hb("n1", 1, &[]), t0), Err(Reject::FromSelf));
    rx(&mut d, hb("n2", 5, &[]), t0).unwrap();
    assert_eq!(rx(&mut d, hb("n2", 5, &[]), t0), Err(Reject::Replay));
    assert_eq!(rx(&mut d, hb("n2", 4, &[]), t0), Err(Reject::Replay));
    // A restarted speaker (new incarnation) starts its sequence again.
    rx(&mut d, Heartbeat { incarnation: 2, ..hb("n2", 0, &[]) }, t0).unwrap();
}

#[test]
fn leaving_or_unready_members_are_dead_at_once() {
    let t0 = Instant::now();
    let mut d = det("n1", t0);
    rx(&mut d, hb("n2", 1, &[]), t0).unwrap();
    rx(&mut d, Heartbeat { leaving: true, ..hb("n2", 2, &[]) }, t0 + ms(10)).unwrap();
    assert_eq!(d.liveness("n2", t0 + ms(10)), Liveness::Dead);
    rx(&mut d, Heartbeat { ready: false, ..hb("n3", 1, &[]) }, t0).unwrap();
    assert_eq!(d.liveness("n3", t0), Liveness::Dead);
}

#[test]
fn after_listening_restarts_nobody_is_judged_dead_for_one_window() {
    let t0 = Instant::now();
    let mut d = det("n1", t0);
    rx(&mut d, hb("n2", 1, &[]), t0).unwrap();
    assert_eq!(d.liveness("n2", t0 + ms(5000)), Liveness::Dead);
    d.restart_listening(t0 + ms(5000));
    assert_eq!(d.liveness("n2", t0 + ms(5200)), Liveness::Alive);
    assert_eq!(d.liveness("n2", t0 + ms(5301)), Liveness::Dead);
}

#[test]
fn the_newest_claim_wins_and_claims_expire_with_the_window_or_the_claimant() {
    let t0 = Instant::now();
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let mut d = det("n1", t0);
    rx(&mut d, Heartbeat { claims: vec![Claim { ip, since_ms: 1000 }], ..hb("n2", 1, &[]) }, t0).unwrap();
    rx(&mut d, Heartbeat { claims: vec![Claim { ip, since_ms: 900 }], ..hb("n3", 1, &[]) }, t0).unwrap();
    assert_eq!(d.claims(t0).get(&ip), Some(&("n2".to_string(), 1000)));
    rx(&mut d, Heartbeat { claims: vec![Claim { ip, since_ms: 1500 }], ..hb("n3", 2, &[]) }, t0 + ms(50)).unwrap();
    assert_eq!(d.claims(t0 + ms(50)).get(&ip), Some(&("n3".to_string(), 1500)));
    // n3 goes silent: its claim no longer counts.
    assert!(d.claims(t0 + ms(400)).is_empty());
    rx(&mut d, hb("n3", 3, &[]), t0 + ms(500)).unwrap();
    assert!(d.claims(t0 + ms(2100)).is_empty(), "older than the claim window");
}

#[test]
fn a_leaving_member_hears_every_recent_claim_each_interval_until_it_is_gone() {
    let t0 = Instant::now();
    let t = HeartbeatTiming::default();
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let mut d = ring_det("n1", t0);
    rx(&mut d, hb("n2", 1, &[]), t0).unwrap();
    let claim = |at: Instant| Local { ready: true, leaving: false, claims: vec![(Claim { ip, since_ms: WALL }, at)] };
    let to_n2_with_claim = |out: &[Outgoing]| {
        out.iter()
            .any(|o| o.to.iter().any(|m| m == "n2") && o.parts.iter().any(|p| p.claims.iter().any(|c| c.ip == ip)))
    };
    // n2 says it is leaving; n1 takes its IP. Past the claim's own broadcasts (which a
    // lossy link may have eaten), every beat still carries the claim to n2.
    rx(&mut d, Heartbeat { leaving: true, ..hb("n2", 2, &[]) }, t0 + ms(10)).unwrap();
    let claimed_at = t0 + ms(20);
    let mut beats_with_claim = 0;
    let mut at = claimed_at;
    while at < claimed_at + ms(1000) {
        if to_n2_with_claim(&d.poll(at, WALL, &claim(claimed_at))) {
            beats_with_claim += 1;
        }
        at += t.poll_every();
    }
    let beats = (ms(1000).as_millis() / t.interval.as_millis()) as usize;
    assert!(beats_with_claim >= beats - 1, "{beats_with_claim} of {beats} beats carried the claim to the leaver");
    // Once it is gone (its Lease released), nothing more goes to it.
    d.set_members((3..10).map(|i| format!("n{i}")).chain(["n1".to_string()]));
    let out = d.poll(at + t.interval, WALL, &claim(claimed_at));
    assert!(!to_n2_with_claim(&out));
    // A member that is not leaving gets claims only in the broadcasts.
    let mut d = ring_det("n1", t0);
    rx(&mut d, hb("n3", 1, &[]), t0).unwrap();
    let (mut with, mut at) = (0, claimed_at);
    while at < claimed_at + ms(1000) {
        let out = d.poll(at, WALL, &claim(claimed_at));
        with += out
            .iter()
            .filter(|o| o.to.iter().any(|m| m == "n3") && o.parts.iter().any(|p| !p.claims.is_empty()))
            .count();
        at += t.poll_every();
    }
    assert!(with < beats / 2, "{with}");
}

#[test]
fn many_claims_and_members_split_into_datagrams_that_are_never_fragmented() {
    let small = Heartbeat { heard: vec![("node-001".into(), 12)], ..hb("n1", 7, &[]) };
    assert_eq!(heartbeats(&small), vec![small.clone()], "a small heartbeat is one datagram");
    let base = Heartbeat {
        claims: (0..45u8).map(|i| Claim { ip: IpAddr::from([198, 51, 100, i]), since_ms: u64::MAX }).collect(),
        heard: (0..200).map(|i| (format!("node-{i:03}.rack-17.example.com"), 123_456)).collect(),
        suspects: (0..60)
            .map(|i| Suspicion {
                node: format!("node-{i:03}.rack-17.example.com"),
                inc: u64::MAX,
                unverifiable: i % 2 == 0,
            })
            .collect(),
        dead: vec![("node-007.rack-17.example.com".into(), u64::MAX)],
        sgen: Some(u64::MAX),
        leaving: true,
        ..hb("a-rather-long-node-name.example.com", 10, &[])
    };
    let parts = heartbeats(&base);
    assert!(parts.len() > 1);
    let seqs: Vec<u64> = parts.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, (10..10 + parts.len() as u64).collect::<Vec<_>>(), "consecutive sequence numbers");
    for p in &parts {
        let len = seal(KEY, p, Format::V2, WALL).len();
        assert!(len <= MAX_DATAGRAM, "{len} bytes");
        assert!(
            p.leaving && p.ready && p.node == base.node && p.incarnation == base.incarnation && p.sgen == base.sgen,
            "flags and the suspicion generation in every part"
        );
        assert!(
            !p.heard.is_empty() || !p.claims.is_empty() || !p.suspects.is_empty() || !p.dead.is_empty(),
            "no empty part"
        );
    }
    let heard: Vec<(String, u32)> = parts.iter().flat_map(|p| p.heard.clone()).collect();
    let claims: Vec<Claim> = parts.iter().flat_map(|p| p.claims.clone()).collect();
    let suspects: Vec<Suspicion> = parts.iter().flat_map(|p| p.suspects.clone()).collect();
    let dead: Vec<(String, u64)> = parts.iter().flat_map(|p| p.dead.clone()).collect();
    assert_eq!(
        (heard, claims, suspects, dead),
        (base.heard.clone(), base.claims.clone(), base.suspects.clone(), base.dead.clone()),
        "nothing lost, nothing repeated"
    );
    // A receiver of every part knows what the whole heartbeat said.
    let t0 = Instant::now();
    let mut d = Detector::new("node-000.rack-17.example.com", HeartbeatTiming::default(), t0);
    d.set_members_with_legacy(std::iter::empty(), base.heard.iter().map(|(n, _)| n.clone()).chain([base.node.clone()]));
    for p in parts {
        rx(&mut d, p, t0).unwrap();
    }
    assert_eq!(d.view(t0).len(), 200, "the sender and every member it heard, but not the receiver itself");
}

#[test]
fn a_heartbeat_sent_outside_the_clock_window_is_stale() {
    let t0 = Instant::now();
    let mut d = det("n1", t0);
    let at = |sent: u64| Heartbeat { sent_ms: Some(sent), ..hb("n2", sent, &[]) };
    assert_eq!(d.receive(at(WALL - 5_001), Format::V2, t0, WALL), Err(Reject::Stale(5_001)));
    assert_eq!(d.receive(at(WALL + 5_001), Format::V2, t0, WALL), Err(Reject::Stale(-5_001)));
    d.receive(at(WALL - 5_000), Format::V2, t0, WALL).unwrap();
    d.receive(at(WALL + 5_000), Format::V2, t0, WALL).unwrap();
}

#[test]
fn a_captured_heartbeat_replayed_after_any_silence_is_refused_while_its_sender_holds_a_lease() {
    let t0 = Instant::now();
    let mut d = det("n1", t0);
    // n3 crashed right after saying it heard n2; n2 is dead too.
    let captured = hb("n3", 40, &[("n2", 8)]);
    rx(&mut d, captured.clone(), t0).unwrap();
    let later = t0 + Duration::from_secs(600);
    d.expire(later);
    // Replayed ten minutes on, with a fresh-looking clock: refused, and nobody revived.
    assert_eq!(rx(&mut d, captured.clone(), later), Err(Reject::Replay));
    assert_eq!(d.liveness("n3", later), Liveness::Dead);
    assert_eq!(d.liveness("n2", later), Liveness::Dead);
    // Once n3 no longer holds a Lease, nothing from it counts at all.
    d.set_members_with_legacy(std::iter::empty(), ["n2".to_string()]);
    assert_eq!(rx(&mut d, Heartbeat { seq: 41, ..captured }, later), Err(Reject::NotMember));
    assert_eq!(d.liveness("n3", later), Liveness::Unknown);
}

#[test]
fn only_lease_holders_are_heard_or_vouched_for() {
    let t0 = Instant::now();
    let mut d = det("n1", t0);
    assert_eq!(rx(&mut d, hb("intruder", 1, &[]), t0), Err(Reject::NotMember));
    rx(&mut d, hb("n2", 1, &[("ghost", 5), ("n3", 5)]), t0).unwrap();
    let view = d.view(t0);
    assert_eq!(
        view.keys().cloned().collect::<Vec<_>>(),
        ["n2", "n3"],
        "a member's report about a non-member is ignored"
    );
}

#[test]
fn a_member_whose_datagrams_fail_authentication_is_judged_by_its_lease_not_dead() {
    let t0 = Instant::now();
    let mut d = det("n1", t0);
    rx(&mut d, hb("n2", 1, &[]), t0).unwrap();
    // n2 restarts with another key: its datagrams keep coming but do not verify.
    for i in 1..=10u64 {
        d.auth_failed("n2", t0 + ms(100 * i));
    }
    let now = t0 + ms(1_050);
    assert_eq!(d.liveness("n2", now), Liveness::Unknown, "not dead: it is sending");
    assert_eq!(d.mismatched(now), ["n2"]);
    // A good heartbeat ends the mismatch.
    rx(&mut d, Heartbeat { incarnation: 2, ..hb("n2", 1, &[]) }, now).unwrap();
    assert_eq!(d.liveness("n2", now), Liveness::Alive);
    assert!(d.mismatched(now).is_empty());
    // Mismatched again: a gap of a few windows in its datagrams (a busy node) does
    // not make it dead; silent for ten windows, it is dead, as any silent member.
    d.auth_failed("n2", now + ms(10));
    assert_eq!(d.liveness("n2", now + ms(1_500)), Liveness::Unknown);
    assert_eq!(d.liveness("n2", now + ms(2_010)), Liveness::Unknown);
    assert_eq!(d.liveness("n2", now + ms(2_011)), Liveness::Dead);
    // Failures attributed to a non-member are ignored.
    d.auth_failed("stranger", now + ms(4_000));
    assert!(d.mismatched(now + ms(4_000)).is_empty());
}

#[test]
fn legacy_heartbeats_are_answered_in_kind_and_can_be_refused() {
    let t0 = Instant::now();
    let mut d = det("n1", t0);
    assert_eq!(d.format_for("n2"), Format::V2, "the new format by default");
    d.receive(hb("n2", 1, &[]), Format::V1, t0, WALL).unwrap();
    assert_eq!(d.format_for("n2"), Format::V1, "a speaker of the previous release is sent what it reads");
    rx(&mut d, hb("n2", 2, &[]), t0).unwrap();
    assert_eq!(d.format_for("n2"), Format::V2);
    d.accept_legacy(false);
    assert_eq!(d.receive(hb("n3", 1, &[]), Format::V1, t0, WALL), Err(Reject::Legacy));
}

/// `body` as an FLB2 datagram with the test key: what a holder of the key (an
/// insider, or a buggy peer) could send; decoding then goes past the tag.
fn sealed_body(body: &[u8]) -> Vec<u8> {
    seal_raw(KEY, body)
}

/// Feed one datagram to a detector among members n1..n9, then ask it everything.
fn digest(d: &mut Detector, datagram: &[u8], now: Instant) {
    if let Ok((hb, format)) = open(&[KEY], datagram) {
        let _ = d.receive(hb, format, now, WALL);
    }
    let later = now + ms(250);
    let _ = d.poll(later, WALL + 250, &Local { ready: true, ..Local::default() });
    let _ = (d.view(later), d.heard(later), d.claims(later), d.mismatched(later));
    d.expire(later + Duration::from_secs(60));
}

proptest::proptest! {
    // `PROPTEST_CASES=1000000 cargo test -p ferrolb-speaker fuzz_` runs these as a
    // fuzzing campaign (scripts/fuzz); CI runs the default budget.
    #[test]
    fn fuzz_any_datagram_is_refused_or_taken_never_a_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1500)) {
        let t0 = Instant::now();
        let mut d = det("n1", t0);
        digest(&mut d, &bytes, t0);
        digest(&mut d, &sealed_body(&bytes), t0);
    }

    #[test]
    fn fuzz_any_json_body_with_the_key_is_refused_or_taken_never_a_panic(
        node in "n[0-9]|[a-z]{0,3}",
        inc in proptest::prelude::any::<u64>(),
        seq in proptest::prelude::any::<u64>(),
        sent in proptest::option::of(proptest::prelude::any::<u64>()),
        heard in proptest::collection::vec(("n[0-9]|x", proptest::prelude::any::<u32>()), 0..20),
        claims in proptest::collection::vec((proptest::prelude::any::<[u8; 4]>(), proptest::prelude::any::<u64>()), 0..20),
        flags in proptest::prelude::any::<[bool; 3]>(),
        suspects in proptest::collection::vec(("n[0-9]|x", proptest::prelude::any::<u64>(), proptest::prelude::any::<bool>()), 0..12),
        sgen in proptest::option::of(proptest::prelude::any::<u64>()),
        dead in proptest::collection::vec(("n[0-9]|x", proptest::prelude::any::<u64>()), 0..4),
    ) {
        let body = serde_json::json!({
            "node": node, "incarnation": inc, "seq": seq, "ready": flags[0], "leaving": flags[1],
            "heard": heard, "claims": claims.iter().map(|(ip, s)| serde_json::json!({"ip": IpAddr::from(*ip), "since_ms": s})).collect::<Vec<_>>(),
            "sent_ms": sent, "sgen": sgen, "dead": dead,
            "suspects": suspects.iter().map(|(n, i, u)| serde_json::json!({"node": n, "inc": i, "unverifiable": u})).collect::<Vec<_>>(),
        });
        let t0 = Instant::now();
        // As a ring member or among previous-release members.
        let mut d = if flags[2] { ring_det("n1", t0) } else { det("n1", t0) };
        digest(&mut d, &sealed_body(body.to_string().as_bytes()), t0);
        // Twice: the second is a replay.
        digest(&mut d, &sealed_body(body.to_string().as_bytes()), t0 + ms(1));
    }
}

// The ring protocol, on the simulated network (`crate::membership::sim`): the same
// detector code, polled as the socket loop polls it.

use crate::membership::sim::{Net, Sim};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Node `i`'s observers, as indexes.
fn observers_of(sim: &Sim, i: usize) -> Vec<usize> {
    sim.detector(i).observers().iter().map(|o| o.trim_start_matches("node-").parse().unwrap()).collect()
}

#[test]
fn a_crashed_member_is_dead_everywhere_within_suspect_after_and_a_few_polls() {
    let t = HeartbeatTiming::default();
    let mut sim = Sim::new(30, t, Net::default(), 1);
    sim.run_until(secs(2));
    assert!(sim.false_deaths.is_empty());
    sim.crash(7);
    // Not before its last heartbeat is `suspect_after` old: at least one interval less.
    sim.run_until(secs(2) + t.suspect_after - t.interval);
    assert!((0..30).filter(|j| *j != 7).all(|j| sim.liveness(j, 7) == Liveness::Alive));
    sim.run_until(secs(3));
    let w = &sim.watches[0];
    let seen = sim.detection(w);
    assert_eq!(seen.len(), 29);
    for d in seen {
        let d = d.expect("every node saw it");
        // Its last heartbeat was up to one interval before the crash; the observers
        // poll every quarter interval; then one broadcast hop.
        assert!(d <= t.suspect_after + t.poll_every() * 2 + ms(2), "{d:?}");
    }
    assert!(sim.false_deaths.is_empty(), "{:?}", sim.false_deaths);
}

#[test]
fn a_member_that_loses_some_observers_links_is_not_dead_while_others_hear_it() {
    let mut sim = Sim::new(30, HeartbeatTiming::default(), Net::default(), 2);
    sim.run_until(secs(2));
    let obs = observers_of(&sim, 5);
    assert_eq!(obs.len(), OBSERVERS);
    // Three of its four observers cannot hear it (its datagrams to them are lost).
    for o in &obs[..3] {
        sim.set_cut(5, *o, true);
    }
    sim.run_until(secs(12));
    assert!(sim.false_deaths.is_empty(), "{:?}", sim.false_deaths);
    assert!((0..30).filter(|j| *j != 5).all(|j| sim.liveness(j, 5) == Liveness::Alive));
    // Its link goes down altogether: nobody hears it, and it is dead everywhere.
    for j in 0..30 {
        sim.set_cut(5, j, true);
    }
    sim.run_until(secs(13));
    let dead = (0..30).filter(|j| *j != 5 && sim.liveness(*j, 5) == Liveness::Dead).count();
    assert_eq!(dead, 29);
}

#[test]
fn a_graceful_leave_is_seen_everywhere_within_one_broadcast() {
    let t = HeartbeatTiming::default();
    let mut sim = Sim::new(20, t, Net::default(), 3);
    sim.run_until(secs(2));
    sim.leave(4);
    sim.run_until(secs(3));
    for d in sim.detection(&sim.watches[0]) {
        let d = d.expect("seen");
        // Its next poll broadcasts it; one hop; the receiver's next poll sees it.
        assert!(d <= t.poll_every() * 2 + ms(2), "{d:?}");
    }
}

#[test]
fn per_node_cost_does_not_grow_with_the_cluster() {
    let t = HeartbeatTiming::default();
    let mut rates = Vec::new();
    for n in [10, 120] {
        let mut sim = Sim::new(n, t, Net::default(), 4);
        sim.run_until(secs(3));
        let before: Vec<_> = (0..n).map(|i| sim.traffic(i)).collect();
        sim.run_until(secs(8));
        let sent: Vec<u64> = (0..n).map(|i| sim.traffic(i).sent - before[i].sent).collect();
        let received: Vec<u64> = (0..n).map(|i| sim.traffic(i).received - before[i].received).collect();
        // Every node sends one heartbeat per interval to each of its observers, and
        // nothing else while nothing changes.
        let per_node = (OBSERVERS as u64) * 5_000 / t.interval.as_millis() as u64;
        assert!(sent.iter().all(|s| s.abs_diff(per_node) <= OBSERVERS as u64), "{n}: {sent:?}");
        let max_received = *received.iter().max().unwrap();
        assert!(max_received <= 2 * per_node + OBSERVERS as u64, "{n}: {received:?}");
        rates.push(sent.iter().sum::<u64>() / n as u64);
    }
    assert_eq!(rates[0], rates[1]);
}

#[test]
fn a_member_declared_dead_while_alive_refutes_it_and_learns_who_holds_what() {
    let mut sim = Sim::new(12, HeartbeatTiming::default(), Net::default(), 5);
    sim.run_until(secs(2));
    let inc = sim.detector(3).incarnation();
    // Node 3's link drops for a second: it is dead everywhere, and node 8 takes over
    // one of its IPs meanwhile (a claim node 3 cannot hear).
    for j in 0..12 {
        sim.set_cut_both(3, j, true);
    }
    sim.run_until(secs(3));
    assert!((0..12).filter(|j| *j != 3).all(|j| sim.liveness(j, 3) == Liveness::Dead));
    let ip: IpAddr = "198.51.100.9".parse().unwrap();
    sim.claim(8, ip);
    sim.run_until(secs(3) + ms(300));
    for j in 0..12 {
        sim.set_cut_both(3, j, false);
    }
    // Back: its observers tell it, it takes a new incarnation, everyone sees it alive,
    // and it hears node 8's claim although the claim's own broadcasts are long past.
    sim.run_until(secs(3) + ms(300) + ms(200));
    assert!(sim.detector(3).incarnation() > inc);
    assert!((0..12).filter(|j| *j != 3).all(|j| sim.liveness(j, 3) == Liveness::Alive));
    assert!(sim.detector(3).claims.contains_key(&ip), "node 3 learnt node 8's claim");
}

#[test]
fn a_member_and_one_of_its_observers_crashing_together_is_still_detected_in_half_a_second() {
    let t = HeartbeatTiming::default();
    let mut sim = Sim::new(30, t, Net::default(), 6);
    sim.run_until(secs(2));
    let obs = observers_of(&sim, 9);
    sim.crash(9);
    sim.crash(obs[0]);
    sim.run_until(secs(3));
    for d in sim.detection(&sim.watches[0]) {
        assert!(d.expect("seen") <= ms(500), "{d:?}");
    }
}

#[test]
fn a_dead_member_stays_dead_when_one_of_its_observers_dies_after_it() {
    // Found on the wire: the observer's death changes the dead member's observers (the
    // next on that ring stands in, and has never heard it), and the consensus on it
    // was lost until the stand-in suspected it too: it was alive again everywhere, for
    // up to seconds, flapping.
    let t = HeartbeatTiming::default();
    let mut sim = Sim::new(30, t, Net::default(), 8);
    sim.run_until(secs(2));
    let obs = observers_of(&sim, 9);
    sim.crash(9);
    sim.run_until(secs(3));
    assert!(sim.detection(&sim.watches[0]).iter().all(Option::is_some));
    sim.crash(obs[0]);
    sim.run_until(secs(6));
    assert!(sim.resurrections.is_empty(), "{:?}", sim.resurrections);
    for d in sim.detection(&sim.watches[1]) {
        assert!(d.expect("the observer's death is seen too") <= ms(500), "{d:?}");
    }
    assert!(sim.false_deaths.is_empty(), "{:?}", sim.false_deaths);
}

#[test]
fn one_percent_loss_and_a_stalling_node_fail_nobody_over() {
    let mut sim = Sim::new(40, HeartbeatTiming::default(), Net { loss: 0.01, ..Net::default() }, 7);
    sim.saturate(2, crate::membership::sim::Stalls { every: ms(500), min: ms(10), max: ms(100) }, secs(30));
    sim.run_until(secs(30));
    assert!(sim.false_deaths.is_empty(), "{:?}", sim.false_deaths);
}

#[test]
fn old_and_new_speakers_side_by_side_fail_nobody_over_and_see_every_crash() {
    // A rolling upgrade half done: nodes 0-4 run the previous release.
    let mut sim = Sim::new(10, HeartbeatTiming::default(), Net::default(), 8);
    sim.speak_legacy(&[0, 1, 2, 3, 4]);
    sim.run_until(secs(5));
    assert!(sim.false_deaths.is_empty(), "{:?}", sim.false_deaths);
    assert!((0..10).all(|i| (0..10).filter(|j| *j != i).all(|j| sim.liveness(i, j) == Liveness::Alive)));
    // An old and a new speaker crash: everyone sees both within the old bound.
    sim.crash(1);
    sim.crash(7);
    sim.run_until(secs(6));
    for w in sim.watches.clone() {
        for d in sim.detection(&w) {
            assert!(d.expect("seen") <= LEGACY_SUSPECT_AFTER + ms(120), "{d:?}");
        }
    }
}

#[test]
fn an_unverifiable_member_is_left_to_its_lease_everywhere_and_one_nobody_heard_is_never_dead() {
    let t0 = Instant::now();
    let mut d = ring_det("n1", t0);
    let all: Vec<String> = (1..10).map(|i| format!("n{i}")).collect();
    let members: Vec<String> = all.iter().filter(|n| *n != "n1").cloned().collect();
    let rings = Rings::new(&all);
    // Everybody hears n2 once (its first broadcast).
    rx(&mut d, hb("n2", 1, &[]), t0).unwrap();
    let report = |d: &mut Detector, from: &str, seq: u64, about: &str, inc: u64, unverifiable: bool| {
        let s = Suspicion { node: about.into(), inc, unverifiable };
        rx(d, Heartbeat { sgen: Some(seq), suspects: vec![s], ..hb(from, seq, &[]) }, t0 + ms(500)).unwrap();
    };
    let obs = rings.observers("n2", &Default::default());
    assert!(!obs.contains(&"n1".to_string()) || obs.len() == OBSERVERS);
    // All observers but one lost it; the last cannot authenticate it (another key).
    for (k, o) in obs.iter().enumerate().filter(|(_, o)| *o != "n1") {
        report(&mut d, o, 10 + k as u64, "n2", 1, k == 0);
    }
    if !obs.contains(&"n1".to_string()) {
        assert_eq!(d.liveness("n2", t0 + ms(500)), Liveness::Unknown, "a mismatch vetoes: its Lease decides");
    }
    // n3: never heard by anyone (its heartbeats never left it): every observer reports
    // incarnation 0, and it is not dead, only unknown.
    let obs3 = rings.observers("n3", &Default::default());
    for (k, o) in obs3.iter().enumerate().filter(|(_, o)| *o != "n1") {
        report(&mut d, o, 20 + k as u64, "n3", 0, false);
    }
    assert_ne!(d.liveness("n3", t0 + ms(500)), Liveness::Dead);
    let _ = members;
}

#[test]
fn a_restarted_member_s_suspicion_lists_count_although_its_sequence_restarted() {
    let t0 = Instant::now();
    let mut d = ring_det("n1", t0);
    let list = |seq: u64, inc: u64, about: &[&str]| Heartbeat {
        incarnation: inc,
        sgen: Some(seq),
        suspects: about.iter().map(|n| Suspicion { node: n.to_string(), inc: 1, unverifiable: false }).collect(),
        ..hb("n2", seq, &[])
    };
    rx(&mut d, list(900, 1, &["n3"]), t0).unwrap();
    assert!(d.reports["n2"].entries.contains_key("n3"));
    // n2 restarts: a plain heartbeat first, then a broadcast that suspects nobody.
    rx(&mut d, Heartbeat { incarnation: 2, ..hb("n2", 1, &[]) }, t0 + ms(10)).unwrap();
    rx(&mut d, list(2, 2, &[]), t0 + ms(20)).unwrap();
    assert!(!d.reports.contains_key("n2"), "the old incarnation's list is gone");
    rx(&mut d, list(3, 2, &["n4"]), t0 + ms(30)).unwrap();
    assert!(d.reports["n2"].entries.contains_key("n4"), "the new incarnation's lists count");
}

#[test]
fn on_an_overloaded_machine_where_every_poll_is_late_a_crash_is_still_seen_within_half_a_second() {
    // Every speaker's heartbeat thread is descheduled for 15-35 ms, often (40
    // speakers on 2 cores): its timers fire late all the time.
    let mut sim = Sim::new(30, HeartbeatTiming::default(), Net::default(), 9);
    let busy = crate::membership::sim::Stalls { every: ms(40), min: ms(15), max: ms(35) };
    for i in 0..30 {
        sim.saturate(i, busy, secs(20));
    }
    sim.run_until(secs(3));
    sim.crash(11);
    sim.run_until(secs(5));
    for d in sim.detection(&sim.watches[0]) {
        assert!(d.expect("seen") <= ms(500), "{d:?}");
    }
    assert!(sim.false_deaths.is_empty(), "{:?}", sim.false_deaths);
}
