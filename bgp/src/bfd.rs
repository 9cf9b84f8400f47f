//! Bidirectional Forwarding Detection, asynchronous mode (RFC 5880), as a single-hop
//! session (RFC 5881) beside each BGP session: the control packet codec and the
//! session state machine. Pure: time is passed in, randomness (the transmit jitter)
//! too, and the caller moves the datagrams (UDP 3784, TTL 255).
//!
//! Not (yet) here: authentication (a packet with the A bit is refused, as RFC 5880
//! §6.8.6 says when none is configured), demand mode and the echo function.

use std::time::{Duration, Instant};

/// UDP port of single-hop control packets (RFC 5881).
pub const PORT: u16 = 3784;
/// Length of a control packet without authentication.
pub const LEN: usize = 24;
/// The slow transmit interval while the session is not Up (RFC 5880 §6.8.3).
pub const SLOW: Duration = Duration::from_secs(1);

/// Session states (RFC 5880 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

/// Diagnostic codes (RFC 5880 §4.1): why the last session went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diag {
    None = 0,
    ControlDetectionTimeExpired = 1,
    EchoFunctionFailed = 2,
    NeighborSignaledSessionDown = 3,
    ForwardingPlaneReset = 4,
    PathDown = 5,
    ConcatenatedPathDown = 6,
    AdministrativelyDown = 7,
    ReverseConcatenatedPathDown = 8,
}

impl Diag {
    fn from_bits(b: u8) -> Option<Diag> {
        Some(match b {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            _ => return None,
        })
    }
}

/// A control packet (RFC 5880 §4.1), without authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub diag: Diag,
    pub state: State,
    /// P: the sender asks for a packet with F in return (timer change).
    pub poll: bool,
    /// F: the answer to a P.
    pub final_: bool,
    /// C: the sender's BFD does not share fate with its control plane.
    pub cpi: bool,
    /// D: demand mode (refused here; never sent).
    pub demand: bool,
    pub detect_mult: u8,
    pub my_disc: u32,
    pub your_disc: u32,
    /// Desired Min TX Interval, µs.
    pub desired_min_tx: u32,
    /// Required Min RX Interval, µs.
    pub required_min_rx: u32,
    /// Required Min Echo RX Interval, µs (0: no echo).
    pub required_min_echo_rx: u32,
}

/// Why a received datagram is not a packet this session takes (RFC 5880 §6.8.6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} bytes: shorter than a control packet (24)")]
    Short(usize),
    #[error("version {0}, not 1")]
    Version(u8),
    #[error("length field {length} for {got} bytes received")]
    Length { length: u8, got: usize },
    #[error("authentication present, none configured")]
    Authenticated,
    #[error("detect multiplier 0")]
    DetectMult,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("my discriminator 0")]
    MyDiscriminator,
    #[error("your discriminator 0 in state {0:?}")]
    YourDiscriminator(State),
    #[error("diagnostic {0} unknown")]
    Diag(u8),
    #[error("your discriminator {0} is not this session's")]
    NotOurs(u32),
    #[error("demand mode is not supported")]
    Demand,
}

impl Packet {
    /// The 24 bytes on the wire.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (1 << 5) | (self.diag as u8 & 0x1f);
        b[1] = ((self.state as u8) << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.final_) << 4)
            | (u8::from(self.cpi) << 3)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        b[4..8].copy_from_slice(&self.my_disc.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_disc.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx.to_be_bytes());
        b
    }

    /// Decode and check a received datagram as RFC 5880 §6.8.6 says (the checks that
    /// need the session, the discriminator lookup, are [`Session::receive`]'s).
    pub fn decode(b: &[u8]) -> Result<Packet, Refused> {
        if b.len() < LEN {
            return Err(Refused::Short(b.len()));
        }
        let version = b[0] >> 5;
        if version != 1 {
            return Err(Refused::Version(version));
        }
        let auth = b[1] & 0x04 != 0;
        let length = b[3];
        if usize::from(length) > b.len() || usize::from(length) < LEN {
            return Err(Refused::Length { length, got: b.len() });
        }
        if auth {
            return Err(Refused::Authenticated);
        }
        if b[1] & 0x01 != 0 {
            return Err(Refused::Multipoint);
        }
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let p = Packet {
            diag: Diag::from_bits(b[0] & 0x1f).ok_or(Refused::Diag(b[0] & 0x1f))?,
            state: State::from_bits(b[1] >> 6),
            poll: b[1] & 0x20 != 0,
            final_: b[1] & 0x10 != 0,
            cpi: b[1] & 0x08 != 0,
            demand: b[1] & 0x02 != 0,
            detect_mult: b[2],
            my_disc: word(4),
            your_disc: word(8),
            desired_min_tx: word(12),
            required_min_rx: word(16),
            required_min_echo_rx: word(20),
        };
        if p.detect_mult == 0 {
            return Err(Refused::DetectMult);
        }
        if p.my_disc == 0 {
            return Err(Refused::MyDiscriminator);
        }
        if p.your_disc == 0 && !matches!(p.state, State::Down | State::AdminDown) {
            return Err(Refused::YourDiscriminator(p.state));
        }
        Ok(p)
    }
}

/// A session's parameters (a BFDProfile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Desired Min TX Interval once Up.
    pub transmit_interval: Duration,
    /// Required Min RX Interval.
    pub receive_interval: Duration,
    /// Detect Mult.
    pub detect_mult: u8,
    /// Passive: send nothing until the peer has sent.
    pub passive: bool,
}

/// What the session tells its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The session is Up: the path works both ways.
    Up,
    /// The session left Up, and why.
    Down(Diag),
}

/// One BFD session (RFC 5880 §6.8).
#[derive(Debug, Clone)]
pub struct Session {
    cfg: Config,
    state: State,
    diag: Diag,
    local_disc: u32,
    remote_disc: u32,
    remote_state: State,
    remote_min_rx: Duration,
    remote_desired_tx: Duration,
    remote_detect_mult: u8,
    /// A Poll sequence is running (timers changed): P on every packet until F comes.
    polling: bool,
    /// The intervals in force: the slow ones until a Poll sequence for the fast ones ended.
    fast: bool,
    /// When the last packet from the peer came (detection).
    last_rx: Option<Instant>,
    next_tx: Instant,
    heard: bool,
}

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Session {
    /// A session in Down with discriminator `local_disc` (non-zero, unique per session).
    pub fn new(cfg: Config, local_disc: u32, now: Instant) -> Session {
        Session {
            cfg,
            state: State::Down,
            diag: Diag::None,
            local_disc: local_disc.max(1),
            remote_disc: 0,
            remote_state: State::Down,
            remote_min_rx: Duration::from_micros(1),
            remote_desired_tx: Duration::ZERO,
            remote_detect_mult: 0,
            polling: false,
            fast: false,
            last_rx: None,
            next_tx: now,
            heard: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The peer's last packet said AdminDown: it stopped the session on purpose.
    pub fn peer_admin_down(&self) -> bool {
        self.remote_state == State::AdminDown
    }

    /// Our Desired Min TX as advertised: at least 1 s unless Up (RFC 5880 §6.8.3).
    fn desired_tx(&self) -> Duration {
        if self.fast { self.cfg.transmit_interval } else { self.cfg.transmit_interval.max(SLOW) }
    }

    /// The interval between our packets (before jitter).
    fn tx_interval(&self) -> Duration {
        self.desired_tx().max(self.remote_min_rx)
    }

    /// The detection time: the peer's multiplier times the agreed receive interval.
    pub fn detection_time(&self) -> Duration {
        let rx = self.cfg.receive_interval.max(self.remote_desired_tx);
        rx * u32::from(self.remote_detect_mult.max(1))
    }

    /// The packet to send now (with F when answering a P).
    fn packet(&self, final_: bool) -> Packet {
        Packet {
            diag: self.diag,
            state: self.state,
            poll: self.polling && !final_,
            final_,
            cpi: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_disc: self.local_disc,
            your_disc: self.remote_disc,
            desired_min_tx: us(self.desired_tx()),
            required_min_rx: us(self.cfg.receive_interval),
            required_min_echo_rx: 0,
        }
    }

    /// When [`Session::tick`] must run next.
    pub fn deadline(&self) -> Instant {
        match (self.state, self.last_rx) {
            (State::Init | State::Up, Some(rx)) => self.next_tx.min(rx + self.detection_time()),
            _ => self.next_tx,
        }
    }

    fn to(&mut self, state: State, diag: Diag, events: &mut Vec<Event>) {
        if state == self.state {
            return;
        }
        let was = self.state;
        self.state = state;
        if state == State::Up {
            self.diag = Diag::None;
            events.push(Event::Up);
            // Up: the fast intervals, through a Poll sequence (RFC 5880 §6.8.3).
            self.polling = true;
            self.fast = true;
        } else {
            if was == State::Up {
                events.push(Event::Down(diag));
            }
            self.diag = diag;
            self.fast = false;
            self.polling = false;
            if state == State::Down {
                self.remote_disc = 0;
            }
        }
    }

    /// Time passed: a packet to send, or the peer silent past the detection time.
    /// `jitter` in 0..1 picks the interval within the 75-100 % RFC 5880 §6.8.7 allows.
    pub fn tick(&mut self, now: Instant, jitter: f64) -> (Vec<Event>, Option<Packet>) {
        let mut events = Vec::new();
        if let (State::Init | State::Up, Some(rx)) = (self.state, self.last_rx)
            && now >= rx + self.detection_time()
        {
            self.to(State::Down, Diag::ControlDetectionTimeExpired, &mut events);
        }
        let mut out = None;
        if now >= self.next_tx {
            if !self.cfg.passive || self.heard {
                out = Some(self.packet(false));
            }
            let max = if self.cfg.detect_mult == 1 { 0.90 } else { 1.0 };
            let f = 0.75 + (max - 0.75) * jitter.clamp(0.0, 1.0);
            self.next_tx = now + self.tx_interval().mul_f64(f);
        }
        (events, out)
    }

    /// A packet from the peer (decoded, and addressed to this session or with your
    /// discriminator 0): the state machine of RFC 5880 §6.8.6, and the Final to send
    /// at once when it polled.
    pub fn receive(&mut self, now: Instant, p: &Packet) -> Result<(Vec<Event>, Option<Packet>), Refused> {
        if p.your_disc != 0 && p.your_disc != self.local_disc {
            return Err(Refused::NotOurs(p.your_disc));
        }
        if p.demand {
            return Err(Refused::Demand);
        }
        let mut events = Vec::new();
        self.heard = true;
        self.remote_disc = p.my_disc;
        self.remote_state = p.state;
        self.remote_min_rx = Duration::from_micros(u64::from(p.required_min_rx));
        self.remote_desired_tx = Duration::from_micros(u64::from(p.desired_min_tx));
        self.remote_detect_mult = p.detect_mult;
        self.last_rx = Some(now);
        if p.final_ {
            self.polling = false;
        }
        if self.state != State::AdminDown {
            match (self.state, p.state) {
                (_, State::AdminDown) => self.to(State::Down, Diag::NeighborSignaledSessionDown, &mut events),
                (State::Down, State::Down) => self.to(State::Init, Diag::None, &mut events),
                (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                    self.to(State::Up, Diag::None, &mut events)
                }
                (State::Up, State::Down) => self.to(State::Down, Diag::NeighborSignaledSessionDown, &mut events),
                _ => {}
            }
        }
        // A remote minimum that shrank lets us send sooner (RFC 5880 §6.8.7).
        self.next_tx = self.next_tx.min(now + self.tx_interval());
        let answer = p.poll.then(|| self.packet(true));
        Ok((events, answer))
    }

    /// Stop (a deleted peer): AdminDown, said to the peer in the returned packet.
    pub fn admin_down(&mut self) -> Packet {
        let mut events = Vec::new();
        self.to(State::AdminDown, Diag::AdministrativelyDown, &mut events);
        self.packet(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            transmit_interval: Duration::from_millis(50),
            receive_interval: Duration::from_millis(50),
            detect_mult: 3,
            passive: false,
        }
    }

    /// Two sessions exchanging every packet instantly, ticked every `step` until `until`.
    fn run(a: &mut Session, b: &mut Session, t: &mut Instant, step: Duration, until: Duration) -> Vec<(char, Event)> {
        let mut events = Vec::new();
        let end = *t + until;
        fn one(name: char, from: &mut Session, to: &mut Session, t: Instant, events: &mut Vec<(char, Event)>) {
            let (ev, out) = from.tick(t, 0.5);
            events.extend(ev.into_iter().map(|e| (name, e)));
            if let Some(p) = out {
                let p = Packet::decode(&p.encode()).unwrap();
                let (ev, fin) = to.receive(t, &p).unwrap();
                let other = if name == 'a' { 'b' } else { 'a' };
                events.extend(ev.into_iter().map(|e| (other, e)));
                if let Some(f) = fin {
                    let (ev, _) = from.receive(t, &Packet::decode(&f.encode()).unwrap()).unwrap();
                    events.extend(ev.into_iter().map(|e| (name, e)));
                }
            }
        }
        while *t < end {
            one('a', a, b, *t, &mut events);
            one('b', b, a, *t, &mut events);
            *t += step;
        }
        events
    }

    #[test]
    fn packets_encode_as_rfc_5880_lays_them_out() {
        let p = Packet {
            diag: Diag::ControlDetectionTimeExpired,
            state: State::Up,
            poll: true,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_disc: 0x0102_0304,
            your_disc: 7,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
        };
        let b = p.encode();
        assert_eq!(&b[..4], &[0x21, 0xe0, 3, 24]);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(&b[12..16], &300_000u32.to_be_bytes());
        assert_eq!(Packet::decode(&b), Ok(p));
    }

    #[test]
    fn bad_packets_are_refused_for_the_rfc_reasons() {
        let good = Packet::decode(&Session::new(cfg(), 9, Instant::now()).packet(false).encode()).unwrap().encode();
        let bad = |f: fn(&mut [u8; 24])| {
            let mut b = good;
            f(&mut b);
            Packet::decode(&b).unwrap_err()
        };
        assert_eq!(Packet::decode(&good[..20]), Err(Refused::Short(20)));
        assert_eq!(bad(|b| b[0] = (2 << 5) | (b[0] & 0x1f)), Refused::Version(2));
        assert_eq!(bad(|b| b[3] = 30), Refused::Length { length: 30, got: 24 });
        assert_eq!(bad(|b| b[1] |= 0x04), Refused::Authenticated);
        assert_eq!(bad(|b| b[1] |= 0x01), Refused::Multipoint);
        assert_eq!(bad(|b| b[2] = 0), Refused::DetectMult);
        assert_eq!(bad(|b| b[4..8].copy_from_slice(&[0; 4])), Refused::MyDiscriminator);
        assert_eq!(bad(|b| b[1] = 3 << 6), Refused::YourDiscriminator(State::Up));
        assert_eq!(bad(|b| b[0] = (1 << 5) | 20), Refused::Diag(20));
    }

    #[test]
    fn two_sessions_come_up_then_speed_up_and_detect_silence_in_the_detection_time() {
        let mut t = Instant::now();
        let mut a = Session::new(cfg(), 1, t);
        let mut b = Session::new(cfg(), 2, t);
        let ev = run(&mut a, &mut b, &mut t, Duration::from_millis(10), Duration::from_secs(3));
        assert!(ev.contains(&('a', Event::Up)) && ev.contains(&('b', Event::Up)), "{ev:?}");
        assert_eq!((a.state(), b.state()), (State::Up, State::Up));
        // After the Poll sequence both send at the fast interval.
        assert_eq!(a.tx_interval(), Duration::from_millis(50));
        assert_eq!(a.detection_time(), Duration::from_millis(150));
        // b falls silent: a declares the session down within detect mult x interval.
        let silent_from = t;
        let mut down_at = None;
        while down_at.is_none() && t < silent_from + Duration::from_secs(1) {
            let (ev, _) = a.tick(t, 0.5);
            if ev.contains(&Event::Down(Diag::ControlDetectionTimeExpired)) {
                down_at = Some(t);
            }
            t += Duration::from_millis(1);
        }
        let took = down_at.expect("detected") - silent_from;
        assert!(took <= Duration::from_millis(151), "{took:?}");
        assert_eq!(a.state(), State::Down);
    }

    #[test]
    fn admin_down_is_heard_as_neighbor_down_and_a_passive_side_waits() {
        let mut t = Instant::now();
        let mut a = Session::new(cfg(), 1, t);
        let mut b = Session::new(Config { passive: true, ..cfg() }, 2, t);
        assert_eq!(b.tick(t, 0.5).1, None, "passive: silent until the peer speaks");
        run(&mut a, &mut b, &mut t, Duration::from_millis(10), Duration::from_secs(3));
        assert_eq!(b.state(), State::Up);
        let bye = a.admin_down();
        let (ev, _) = b.receive(t, &Packet::decode(&bye.encode()).unwrap()).unwrap();
        assert_eq!(ev, vec![Event::Down(Diag::NeighborSignaledSessionDown)]);
        assert_eq!(b.receive(t, &Packet { your_disc: 77, ..bye }), Err(Refused::NotOurs(77)));
    }

    #[test]
    fn jitter_keeps_intervals_within_75_to_100_percent() {
        let t = Instant::now();
        for j in [0.0, 0.3, 1.0] {
            let mut s = Session::new(cfg(), 1, t);
            s.tick(t, j);
            let gap = s.next_tx - t;
            assert!(gap >= SLOW.mul_f64(0.75) && gap <= SLOW, "{gap:?}");
        }
    }

    proptest::proptest! {
        /// Whatever bytes arrive: decode answers or refuses, and a session fed the
        /// decoded packet never panics.
        #[test]
        fn fuzz_any_datagram(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let t = Instant::now();
            let mut s = Session::new(cfg(), 1, t);
            if let Ok(p) = Packet::decode(&bytes) {
                let _ = s.receive(t, &p);
                let _ = s.tick(t + Duration::from_secs(5), 0.5);
                proptest::prop_assert_eq!(Packet::decode(&p.encode()), Ok(p));
            }
        }
    }
}
