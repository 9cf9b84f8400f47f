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
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn sealed_heartbeats_open_only_with_the_key_and_unchanged() {
    let h = hb("n2", 7, &[("n3", 40)]);
    let d = seal(KEY, &h);
    assert_eq!(open(KEY, &d).unwrap(), h);
    assert_eq!(open(b"another key", &d), Err(Reject::BadTag));
    let mut tampered = d.clone();
    tampered[10] ^= 1;
    assert_eq!(open(KEY, &tampered), Err(Reject::BadTag));
    assert!(matches!(open(KEY, &d[..20]), Err(Reject::Malformed(_))));
    assert!(matches!(open(KEY, b"GET / HTTP/1.1\r\n\r\n-----------------------"), Err(Reject::Malformed(_))));
    // A correctly tagged body that is not a heartbeat.
    let mut junk = MAGIC.to_vec();
    junk.extend(b"{\"node\": 5}");
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
    mac.update(&junk);
    junk.extend(mac.finalize().into_bytes());
    assert!(matches!(open(KEY, &junk), Err(Reject::Malformed(_))));
}

#[test]
fn a_silent_member_is_dead_after_suspect_after_and_alive_when_heard_again() {
    let t0 = Instant::now();
    let mut d = Detector::new("n1", HeartbeatTiming::default(), t0);
    assert_eq!(d.liveness("n2", t0), Liveness::Unknown);
    d.receive(hb("n2", 1, &[]), t0).unwrap();
    assert_eq!(d.liveness("n2", t0 + ms(300)), Liveness::Alive);
    assert_eq!(d.liveness("n2", t0 + ms(301)), Liveness::Dead);
    d.receive(hb("n2", 2, &[]), t0 + ms(900)).unwrap();
    assert_eq!(d.liveness("n2", t0 + ms(900)), Liveness::Alive);
}

#[test]
fn a_lossy_link_is_bridged_by_another_members_report() {
    // n1 stops hearing n2 directly, but n3 keeps reporting that it hears n2.
    let t0 = Instant::now();
    let mut d = Detector::new("n1", HeartbeatTiming::default(), t0);
    d.receive(hb("n2", 1, &[]), t0).unwrap();
    for i in 1..=20u64 {
        let now = t0 + ms(100 * i);
        d.receive(hb("n3", i, &[("n2", 30)]), now).unwrap();
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
    let mut d = Detector::new("n1", HeartbeatTiming::default(), t0);
    assert_eq!(d.receive(hb("n1", 1, &[]), t0), Err(Reject::FromSelf));
    d.receive(hb("n2", 5, &[]), t0).unwrap();
    assert_eq!(d.receive(hb("n2", 5, &[]), t0), Err(Reject::Replay));
    assert_eq!(d.receive(hb("n2", 4, &[]), t0), Err(Reject::Replay));
    // A restarted speaker (new incarnation) starts its sequence again.
    d.receive(Heartbeat { incarnation: 2, ..hb("n2", 0, &[]) }, t0).unwrap();
}

#[test]
fn leaving_or_unready_members_are_dead_at_once() {
    let t0 = Instant::now();
    let mut d = Detector::new("n1", HeartbeatTiming::default(), t0);
    d.receive(hb("n2", 1, &[]), t0).unwrap();
    d.receive(Heartbeat { leaving: true, ..hb("n2", 2, &[]) }, t0 + ms(10)).unwrap();
    assert_eq!(d.liveness("n2", t0 + ms(10)), Liveness::Dead);
    d.receive(Heartbeat { ready: false, ..hb("n3", 1, &[]) }, t0).unwrap();
    assert_eq!(d.liveness("n3", t0), Liveness::Dead);
}

#[test]
fn after_listening_restarts_nobody_is_judged_dead_for_one_window() {
    let t0 = Instant::now();
    let mut d = Detector::new("n1", HeartbeatTiming::default(), t0);
    d.receive(hb("n2", 1, &[]), t0).unwrap();
    assert_eq!(d.liveness("n2", t0 + ms(5000)), Liveness::Dead);
    d.restart_listening(t0 + ms(5000));
    assert_eq!(d.liveness("n2", t0 + ms(5200)), Liveness::Alive);
    assert_eq!(d.liveness("n2", t0 + ms(5301)), Liveness::Dead);
}

#[test]
fn the_newest_claim_wins_and_claims_expire_with_the_window_or_the_claimant() {
    let t0 = Instant::now();
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let mut d = Detector::new("n1", HeartbeatTiming::default(), t0);
    d.receive(Heartbeat { claims: vec![Claim { ip, since_ms: 1000 }], ..hb("n2", 1, &[]) }, t0).unwrap();
    d.receive(Heartbeat { claims: vec![Claim { ip, since_ms: 900 }], ..hb("n3", 1, &[]) }, t0).unwrap();
    assert_eq!(d.claims(t0).get(&ip), Some(&("n2".to_string(), 1000)));
    d.receive(Heartbeat { claims: vec![Claim { ip, since_ms: 1500 }], ..hb("n3", 2, &[]) }, t0 + ms(50)).unwrap();
    assert_eq!(d.claims(t0 + ms(50)).get(&ip), Some(&("n3".to_string(), 1500)));
    // n3 goes silent: its claim no longer counts.
    assert!(d.claims(t0 + ms(400)).is_empty());
    d.receive(hb("n3", 3, &[]), t0 + ms(500)).unwrap();
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
        let len = seal(KEY, p).len();
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
    for p in parts {
        d.receive(p, t0).unwrap();
    }
    assert_eq!(d.view(t0).len(), 200, "the sender and every member it heard, but not the receiver itself");
}
