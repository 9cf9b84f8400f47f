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
    }
}

/// The receiver's wall clock in these tests (ms since the epoch).
const WALL: u64 = 1_800_000_000_000;

/// A detector for `me` among members n1..n9.
fn det(me: &str, t0: Instant) -> Detector {
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
fn many_claims_and_members_split_into_datagrams_that_are_never_fragmented() {
    let small = Heartbeat { heard: vec![("node-001".into(), 12)], ..hb("n1", 7, &[]) };
    assert_eq!(heartbeats(&small), vec![small.clone()], "a small heartbeat is one datagram");
    let base = Heartbeat {
        claims: (0..45u8).map(|i| Claim { ip: IpAddr::from([198, 51, 100, i]), since_ms: u64::MAX }).collect(),
        heard: (0..200).map(|i| (format!("node-{i:03}.rack-17.example.com"), 123_456)).collect(),
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
            p.leaving && p.ready && p.node == base.node && p.incarnation == base.incarnation,
            "flags in every part"
        );
        assert!(!p.heard.is_empty() || !p.claims.is_empty(), "no empty part");
    }
    let heard: Vec<(String, u32)> = parts.iter().flat_map(|p| p.heard.clone()).collect();
    let claims: Vec<Claim> = parts.iter().flat_map(|p| p.claims.clone()).collect();
    assert_eq!((heard, claims), (base.heard.clone(), base.claims.clone()), "nothing lost, nothing repeated");
    // A receiver of every part knows what the whole heartbeat said.
    let t0 = Instant::now();
    let mut d = Detector::new("node-000.rack-17.example.com", HeartbeatTiming::default(), t0);
    d.set_members(base.heard.iter().map(|(n, _)| n.clone()).chain([base.node.clone()]));
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
    d.set_members(["n2".to_string()]);
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
    assert_eq!(d.liveness("n2", now + ms(3_010)), Liveness::Unknown);
    assert_eq!(d.liveness("n2", now + ms(3_011)), Liveness::Dead);
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
        flags in proptest::prelude::any::<[bool; 2]>(),
    ) {
        let body = serde_json::json!({
            "node": node, "incarnation": inc, "seq": seq, "ready": flags[0], "leaving": flags[1],
            "heard": heard, "claims": claims.iter().map(|(ip, s)| serde_json::json!({"ip": IpAddr::from(*ip), "since_ms": s})).collect::<Vec<_>>(),
            "sent_ms": sent,
        });
        let t0 = Instant::now();
        let mut d = det("n1", t0);
        digest(&mut d, &sealed_body(body.to_string().as_bytes()), t0);
        // Twice: the second is a replay.
        digest(&mut d, &sealed_body(body.to_string().as_bytes()), t0 + ms(1));
    }
}
