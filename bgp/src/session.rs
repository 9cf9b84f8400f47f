//! The BGP-4 session state machine (RFC 4271 §8) of a speaker that originates
//! routes and accepts none, as a load-balancer speaker is: it dials its peer
//! (Idle → Connect), sends its OPEN (OpenSent), checks the peer's (OpenConfirm), and
//! is Established at the peer's first KEEPALIVE. Pure: every call takes the time, and
//! the caller moves bytes and opens connections as the [`Output`]s say.
//!
//! Errors answer as the RFC says: an OPEN with another version, another AS than
//! configured, an unacceptable hold time or a bad identifier gets the matching OPEN
//! Message Error NOTIFICATION; a message the state does not expect, a Finite State
//! Machine Error; silence past the hold time, Hold Timer Expired; a stop, Cease
//! (Administrative Shutdown). Each ends the session with a [`Down`] naming the cause,
//! and the session dials again after the connect-retry time.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::codec::BgpCodecDecoderError;
use netgauze_bgp_pkt::notification::{
    BgpNotificationMessage, CeaseError, FiniteStateMachineError, HoldTimerExpiredError, MessageHeaderError,
    OpenMessageError, UpdateMessageError,
};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::wire::deserializer::BgpMessageParsingError;
use netgauze_bgp_pkt::wire::deserializer::open::BgpOpenMessageParsingError;
use netgauze_iana::address_family::AddressType;

/// `AS_TRANS` (RFC 6793): the 2-octet AS field of a speaker whose AS needs 4 octets.
pub const AS_TRANS: u16 = 23456;

/// What this side proposes, and whom it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This speaker's AS.
    pub local_asn: u32,
    /// The AS the peer must announce in its OPEN.
    pub peer_asn: u32,
    /// This speaker's BGP identifier.
    pub router_id: Ipv4Addr,
    /// Hold time proposed: 0 (no keepalives) or at least 3 s.
    pub hold_time: Duration,
    /// Keepalive interval; `None`: a third of the negotiated hold time.
    pub keepalive: Option<Duration>,
    /// Wait between a failed or ended session and the next dial.
    pub connect_retry: Duration,
    /// Offer IPv4 unicast.
    pub ipv4: bool,
    /// Offer IPv6 unicast (multiprotocol, RFC 4760).
    pub ipv6: bool,
    /// Offer graceful restart (RFC 4724) with this restart time (at most 4095 s): a
    /// peer that takes it keeps our routes, marked stale, for that long after the
    /// connection ends without a NOTIFICATION (a speaker restarting), until a new
    /// session's End-of-RIB.
    pub graceful_restart: Option<Duration>,
}

/// RFC 4271's states (Active folds into Connect: this side always dials).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not trying; dials at the connect-retry deadline.
    Idle,
    /// Waiting for the TCP connection.
    Connect,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// Up: routes may be sent.
    Established,
}

/// What happened.
#[derive(Debug, PartialEq)]
pub enum Input {
    /// Begin (or resume) dialing.
    Start,
    /// The TCP connection is up.
    Connected,
    /// The TCP connection could not be made; why.
    ConnectFailed(String),
    /// The peer closed the connection.
    Closed,
    /// A message from the peer.
    Received(BgpMessage),
    /// Bytes from the peer that do not decode (netgauze's verdict).
    Undecodable(BgpCodecDecoderError),
    /// BFD found the path to the peer down: the session ends at once, without
    /// waiting for the hold timer (RFC 5882 §4.1), and dials again later.
    PathDown(String),
    /// Stop for good (a deleted peer, a shutdown): Cease, and the peer withdraws our routes.
    Stop,
    /// Stop for a restart: close without a NOTIFICATION, so that a peer that agreed to
    /// graceful restart keeps our routes until we are back.
    Restart,
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a TCP connection to the peer.
    Connect,
    /// Send this message.
    Send(BgpMessage),
    /// Close the TCP connection (after sending what came before).
    Close,
    /// The session is Established with these parameters: advertise.
    Up(Negotiated),
    /// The session ended (it was Established or tried to be), and why.
    Down(Down),
    /// The peer sent ROUTE-REFRESH (RFC 2918): send every route again.
    Refresh,
}

/// What the OPENs agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The smaller of both hold times (zero: none).
    pub hold_time: Duration,
    /// How often to send KEEPALIVE (zero: never).
    pub keepalive: Duration,
    /// The peer's BGP identifier.
    pub peer_router_id: Ipv4Addr,
    /// Both sides speak 4-octet AS numbers.
    pub four_octet_as: bool,
    /// IPv4 unicast may be sent.
    pub ipv4: bool,
    /// IPv6 unicast may be sent.
    pub ipv6: bool,
    /// The peer can ask for our routes again (RFC 2918).
    pub route_refresh: bool,
    /// Both sides offered graceful restart: the peer keeps our routes across a restart.
    pub graceful_restart: bool,
}

/// Why a session is not up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// We sent a NOTIFICATION: (code, subcode) and what was wrong.
    SentNotification { code: u8, subcode: u8, why: String },
    /// The peer sent one.
    ReceivedNotification(String),
    /// The TCP connection failed or was closed.
    Transport(String),
    /// BFD said the path is down.
    PathDown(String),
    /// We were told to stop.
    Stopped,
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Down::SentNotification { code, subcode, why } => {
                write!(f, "sent NOTIFICATION {code}/{subcode}: {why}")
            }
            Down::ReceivedNotification(n) => write!(f, "the peer sent NOTIFICATION {n}"),
            Down::Transport(e) => write!(f, "connection: {e}"),
            Down::PathDown(e) => write!(f, "BFD: {e}"),
            Down::Stopped => f.write_str("stopped"),
        }
    }
}

/// One BGP session.
#[derive(Debug)]
pub struct Session {
    cfg: Config,
    state: State,
    stopped: bool,
    /// When to dial again (Idle), or give up waiting (Connect, OpenSent's large hold).
    connect_retry_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    negotiated: Option<Negotiated>,
}

/// The hold time a peer proposes before its OPEN arrives (RFC 4271 suggests 4 min).
const LARGE_HOLD: Duration = Duration::from_secs(240);

impl Session {
    /// A session in Idle; `Start` begins dialing.
    pub fn new(cfg: Config) -> Session {
        Session {
            cfg,
            state: State::Idle,
            stopped: true,
            connect_retry_at: None,
            hold_at: None,
            keepalive_at: None,
            negotiated: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The next time [`Session::tick`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        [self.connect_retry_at, self.hold_at, self.keepalive_at].into_iter().flatten().min()
    }

    /// Handle `input` at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Output> {
        match (self.state, input) {
            (_, input @ (Input::Stop | Input::Restart)) => {
                let (was, already) = (self.state, self.stopped);
                self.stopped = true;
                let mut out = Vec::new();
                // A stop says goodbye (the peer withdraws our routes); a restart does not
                // (a peer that agreed to graceful restart keeps them).
                if input == Input::Stop && matches!(was, State::OpenSent | State::OpenConfirm | State::Established) {
                    out.push(Output::Send(BgpMessage::Notification(BgpNotificationMessage::CeaseError(
                        CeaseError::AdministrativeShutdown { value: Box::new([]) },
                    ))));
                }
                self.reset(None);
                if was != State::Idle {
                    out.push(Output::Close);
                }
                if !already || was != State::Idle {
                    out.push(Output::Down(Down::Stopped));
                }
                out
            }
            (State::Idle, Input::Start) => {
                self.stopped = false;
                self.dial(now)
            }
            (_, Input::Start) => Vec::new(),
            (State::Connect, Input::Connected) => {
                self.state = State::OpenSent;
                self.connect_retry_at = None;
                self.hold_at = Some(now + LARGE_HOLD);
                vec![Output::Send(BgpMessage::Open(self.open()))]
            }
            (State::Connect, Input::ConnectFailed(e)) => self.fail(now, Down::Transport(e), false),
            (State::Idle, _) => Vec::new(),
            (_, Input::Connected | Input::ConnectFailed(_)) => Vec::new(),
            (_, Input::Closed) => self.fail(now, Down::Transport("closed by the peer".into()), false),
            (_, Input::PathDown(why)) => self.fail(now, Down::PathDown(why), true),
            (_, Input::Undecodable(e)) => {
                let (n, code, subcode) = notification_for(&e);
                self.notify(now, n, code, subcode, format!("malformed message from the peer: {e}"))
            }
            (_, Input::Received(BgpMessage::Notification(n))) => {
                self.fail(now, Down::ReceivedNotification(describe(&n)), false)
            }
            (State::OpenSent, Input::Received(BgpMessage::Open(open))) => match self.check_open(&open) {
                Ok(n) => {
                    self.state = State::OpenConfirm;
                    self.arm(now, &n);
                    self.negotiated = Some(n);
                    vec![Output::Send(BgpMessage::KeepAlive)]
                }
                Err((notification, code, subcode, why)) => self.notify(now, notification, code, subcode, why),
            },
            (State::OpenConfirm, Input::Received(BgpMessage::KeepAlive)) => {
                self.state = State::Established;
                let n = self.negotiated.clone().expect("set in OpenSent");
                self.hold_at = hold_deadline(now, &n);
                vec![Output::Up(n)]
            }
            (State::Established, Input::Received(BgpMessage::KeepAlive | BgpMessage::Update(_))) => {
                // Updates from the peer are accepted and ignored: this speaker takes no routes.
                if let Some(n) = &self.negotiated {
                    self.hold_at = hold_deadline(now, n);
                }
                Vec::new()
            }
            (State::Established, Input::Received(BgpMessage::RouteRefresh(_))) => {
                // The peer asks for our routes again (RFC 2918): all of them.
                if let Some(n) = &self.negotiated {
                    self.hold_at = hold_deadline(now, n);
                }
                vec![Output::Refresh]
            }
            (state, Input::Received(m)) => {
                let (subcode, err) = match state {
                    State::OpenSent => {
                        (1, FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState { value: type_code(&m) })
                    }
                    State::OpenConfirm => (
                        2,
                        FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState { value: type_code(&m) },
                    ),
                    _ => (
                        3,
                        FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState { value: type_code(&m) },
                    ),
                };
                let why = format!("unexpected {:?} in {state:?}", m.get_type());
                self.notify(now, BgpNotificationMessage::FiniteStateMachineError(err), 5, subcode, why)
            }
        }
    }

    /// Timers at `now`: dial again, send a KEEPALIVE, or give up on a silent peer.
    pub fn tick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if self.hold_at.is_some_and(|t| now >= t) {
            let hold = self.negotiated.as_ref().map(|n| n.hold_time).unwrap_or(LARGE_HOLD);
            let why = format!("nothing heard for the hold time ({}s)", hold.as_secs());
            let n = BgpNotificationMessage::HoldTimerExpiredError(HoldTimerExpiredError::Unspecific {
                sub_code: 0,
                value: Box::new([]),
            });
            return self.notify(now, n, 4, 0, why);
        }
        if self.keepalive_at.is_some_and(|t| now >= t) {
            let every = self.negotiated.as_ref().map(|n| n.keepalive).unwrap_or_default();
            self.keepalive_at = Some(now + every);
            out.push(Output::Send(BgpMessage::KeepAlive));
        }
        if self.state == State::Idle && !self.stopped && self.connect_retry_at.is_some_and(|t| now >= t) {
            out.extend(self.dial(now));
        } else if self.state == State::Connect && self.connect_retry_at.is_some_and(|t| now >= t) {
            out.extend(self.fail(now, Down::Transport("no connection within the connect-retry time".into()), true));
        }
        out
    }

    fn dial(&mut self, now: Instant) -> Vec<Output> {
        self.state = State::Connect;
        self.connect_retry_at = Some(now + self.cfg.connect_retry);
        vec![Output::Connect]
    }

    /// Back to Idle, dialing again after the connect-retry time unless stopped.
    fn reset(&mut self, retry_at: Option<Instant>) {
        self.state = State::Idle;
        self.hold_at = None;
        self.keepalive_at = None;
        self.negotiated = None;
        self.connect_retry_at = if self.stopped { None } else { retry_at };
    }

    fn fail(&mut self, now: Instant, why: Down, close: bool) -> Vec<Output> {
        self.reset(Some(now + self.cfg.connect_retry));
        let mut out = Vec::new();
        if close {
            out.push(Output::Close);
        }
        out.push(Output::Down(why));
        out
    }

    fn notify(&mut self, now: Instant, n: BgpNotificationMessage, code: u8, subcode: u8, why: String) -> Vec<Output> {
        let mut out = vec![Output::Send(BgpMessage::Notification(n))];
        out.extend(self.fail(now, Down::SentNotification { code, subcode, why }, true));
        out
    }

    fn arm(&mut self, now: Instant, n: &Negotiated) {
        self.hold_at = hold_deadline(now, n);
        self.keepalive_at = (!n.keepalive.is_zero()).then(|| now + n.keepalive);
    }

    /// This side's OPEN.
    pub fn open(&self) -> BgpOpenMessage {
        let mut caps = vec![BgpCapability::FourOctetAs(FourOctetAsCapability::new(self.cfg.local_asn))];
        if self.cfg.ipv4 {
            caps.push(BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
                AddressType::Ipv4Unicast,
            )));
        }
        if self.cfg.ipv6 {
            caps.push(BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
                AddressType::Ipv6Unicast,
            )));
        }
        caps.push(BgpCapability::RouteRefresh);
        if let Some(t) = self.cfg.graceful_restart {
            let families: Vec<GracefulRestartAddressFamily> =
                [(self.cfg.ipv4, AddressType::Ipv4Unicast), (self.cfg.ipv6, AddressType::Ipv6Unicast)]
                    .into_iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, t)| GracefulRestartAddressFamily::new(true, t))
                    .collect();
            let secs = u16::try_from(t.as_secs()).unwrap_or(u16::MAX).min(4095);
            caps.push(BgpCapability::GracefulRestartCapability(GracefulRestartCapability::new(
                false, false, secs, families,
            )));
        }
        let my_as = u16::try_from(self.cfg.local_asn).unwrap_or(AS_TRANS);
        let hold = u16::try_from(self.cfg.hold_time.as_secs()).unwrap_or(u16::MAX);
        BgpOpenMessage::new(my_as, hold, self.cfg.router_id, vec![BgpOpenMessageParameter::Capabilities(caps.into())])
    }

    /// The peer's OPEN against what we expect (RFC 4271 §6.2, RFC 6793 §4.1).
    #[allow(clippy::type_complexity)]
    fn check_open(&self, open: &BgpOpenMessage) -> Result<Negotiated, (BgpNotificationMessage, u8, u8, String)> {
        let err =
            |e: OpenMessageError, sub: u8, why: String| Err((BgpNotificationMessage::OpenMessageError(e), 2, sub, why));
        if open.version() != 4 {
            let why = format!("the peer speaks BGP version {}, not 4", open.version());
            return err(OpenMessageError::UnsupportedVersionNumber { value: Box::new([0, 4]) }, 1, why);
        }
        let caps = open.capabilities();
        let four = caps.iter().any(|c| matches!(c, BgpCapability::FourOctetAs(_)));
        let peer_as = open.my_asn4();
        if peer_as != self.cfg.peer_asn {
            let why = format!("the peer's AS is {peer_as}, the BGPPeer says {}", self.cfg.peer_asn);
            let value: Box<[u8]> = Box::new(open.my_as().to_be_bytes());
            return err(OpenMessageError::BadPeerAs { value }, 2, why);
        }
        let hold = open.hold_time();
        if hold == 1 || hold == 2 {
            let why = format!("the peer's hold time {hold}s is below 3s");
            return err(OpenMessageError::UnacceptableHoldTime { value: Box::new([]) }, 6, why);
        }
        let id = open.bgp_id();
        if id.is_unspecified() || id.is_broadcast() || (id == self.cfg.router_id && peer_as == self.cfg.local_asn) {
            let why = format!("the peer's BGP identifier {id} is not usable");
            return err(OpenMessageError::BadBgpIdentifier { value: Box::new(id.octets()) }, 3, why);
        }
        let offers = |t: AddressType| {
            caps.iter().any(|c| matches!(c, BgpCapability::MultiProtocolExtensions(m) if m.address_type() == t))
        };
        let no_mp = !caps.iter().any(|c| matches!(c, BgpCapability::MultiProtocolExtensions(_)));
        let hold_time = Duration::from_secs(u64::from(hold)).min(self.cfg.hold_time);
        let keepalive = if hold_time.is_zero() {
            Duration::ZERO
        } else {
            self.cfg.keepalive.unwrap_or(hold_time / 3).min(hold_time / 3).max(Duration::from_secs(1))
        };
        Ok(Negotiated {
            hold_time,
            keepalive,
            peer_router_id: id,
            four_octet_as: four,
            // Without multiprotocol capabilities, a peer takes IPv4 unicast (RFC 4760 §8).
            ipv4: self.cfg.ipv4 && (no_mp || offers(AddressType::Ipv4Unicast)),
            ipv6: self.cfg.ipv6 && offers(AddressType::Ipv6Unicast),
            route_refresh: caps.iter().any(|c| matches!(c, BgpCapability::RouteRefresh)),
            graceful_restart: self.cfg.graceful_restart.is_some()
                && caps.iter().any(|c| matches!(c, BgpCapability::GracefulRestartCapability(_))),
        })
    }
}

/// The NOTIFICATION (and its code and subcode) RFC 4271 §6 prescribes for bytes that
/// do not decode.
pub fn notification_for(e: &BgpCodecDecoderError) -> (BgpNotificationMessage, u8, u8) {
    use BgpNotificationMessage as N;
    let none = || Box::new([]) as Box<[u8]>;
    let BgpCodecDecoderError::BgpMessageParsingError(p) = e else {
        return (N::MessageHeaderError(MessageHeaderError::Unspecific { value: none() }), 1, 0);
    };
    match p {
        BgpMessageParsingError::ConnectionNotSynchronized { .. } => {
            (N::MessageHeaderError(MessageHeaderError::ConnectionNotSynchronized { value: none() }), 1, 1)
        }
        BgpMessageParsingError::BadMessageLength { length, .. } => {
            let value = Box::new(length.to_be_bytes());
            (N::MessageHeaderError(MessageHeaderError::BadMessageLength { value }), 1, 2)
        }
        BgpMessageParsingError::UndefinedBgpMessageType { code, .. } => {
            (N::MessageHeaderError(MessageHeaderError::BadMessageType { value: Box::new([*code]) }), 1, 3)
        }
        BgpMessageParsingError::BgpOpenMessageParsingError(o) => match o {
            BgpOpenMessageParsingError::UnsupportedVersionNumber { .. } => {
                (N::OpenMessageError(OpenMessageError::UnsupportedVersionNumber { value: Box::new([0, 4]) }), 2, 1)
            }
            BgpOpenMessageParsingError::UnacceptableHoldTime { .. } => {
                (N::OpenMessageError(OpenMessageError::UnacceptableHoldTime { value: none() }), 2, 6)
            }
            BgpOpenMessageParsingError::InvalidBgpId { bgp_id, .. } => {
                let value = Box::new(bgp_id.octets());
                (N::OpenMessageError(OpenMessageError::BadBgpIdentifier { value }), 2, 3)
            }
            _ => (N::OpenMessageError(OpenMessageError::Unspecific { value: none() }), 2, 0),
        },
        BgpMessageParsingError::BgpUpdateMessageParsingError(_) => {
            (N::UpdateMessageError(UpdateMessageError::MalformedAttributeList { value: none() }), 3, 1)
        }
        _ => (N::MessageHeaderError(MessageHeaderError::Unspecific { value: none() }), 1, 0),
    }
}

fn hold_deadline(now: Instant, n: &Negotiated) -> Option<Instant> {
    (!n.hold_time.is_zero()).then(|| now + n.hold_time)
}

fn type_code(m: &BgpMessage) -> Box<[u8]> {
    Box::new([m.get_type() as u8])
}

/// A NOTIFICATION, for conditions and logs.
pub fn describe(n: &BgpNotificationMessage) -> String {
    let s = format!("{n:?}");
    // `OpenMessageError(BadPeerAs { value: [..] })` → `OpenMessageError BadPeerAs`.
    s.split([' ', '{']).next().unwrap_or_default().replace('(', " ").trim_end_matches(')').to_string()
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use netgauze_bgp_pkt::codec::BgpCodec;
    use tokio_util::codec::{Decoder, Encoder};

    use super::*;

    fn cfg() -> Config {
        Config {
            local_asn: 4_200_000_001,
            peer_asn: 64512,
            router_id: Ipv4Addr::new(203, 0, 113, 2),
            hold_time: Duration::from_secs(9),
            keepalive: None,
            connect_retry: Duration::from_secs(5),
            ipv4: true,
            ipv6: true,
            graceful_restart: None,
        }
    }

    fn wire(m: BgpMessage) -> Vec<u8> {
        let mut b = BytesMut::new();
        BgpCodec::new(true).encode(m, &mut b).unwrap();
        b.to_vec()
    }

    fn parse(bytes: &[u8]) -> BgpMessage {
        BgpCodec::new(true).decode(&mut BytesMut::from(bytes)).unwrap().unwrap().0
    }

    /// A peer's OPEN as a router sends it: version 4, AS 64512 (2 octets and as a 4-octet
    /// capability), hold 90 s, id 203.0.113.1, IPv4 and IPv6 unicast, route refresh.
    fn peer_open(version: u8, asn: u16, hold: u16, id: [u8; 4]) -> Vec<u8> {
        let caps: Vec<u8> = [
            vec![1, 4, 0, 1, 0, 1],                                        // MP IPv4 unicast
            vec![1, 4, 0, 2, 0, 1],                                        // MP IPv6 unicast
            vec![2, 0],                                                    // route refresh
            [vec![65, 4], u32::from(asn).to_be_bytes().to_vec()].concat(), // 4-octet AS
        ]
        .concat();
        let params = [vec![2, caps.len() as u8], caps].concat();
        let body = [
            vec![version],
            asn.to_be_bytes().to_vec(),
            hold.to_be_bytes().to_vec(),
            id.to_vec(),
            vec![params.len() as u8],
            params,
        ]
        .concat();
        let len = (19 + body.len()) as u16;
        [vec![0xff; 16], len.to_be_bytes().to_vec(), vec![1], body].concat()
    }

    const KEEPALIVE: [u8; 19] =
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 19, 4];

    /// A NOTIFICATION's (code, subcode) from the bytes it goes out as.
    fn notification(out: &[Output]) -> Option<(u8, u8)> {
        out.iter().find_map(|o| match o {
            Output::Send(m @ BgpMessage::Notification(_)) => {
                let b = wire(m.clone());
                (b[18] == 3).then(|| (b[19], b[20]))
            }
            _ => None,
        })
    }

    fn established(s: &mut Session, t0: Instant) {
        assert_eq!(s.handle(t0, Input::Start), [Output::Connect]);
        let out = s.handle(t0, Input::Connected);
        let Output::Send(open) = &out[0] else { panic!("{out:?}") };
        let b = wire(open.clone());
        assert_eq!((b[18], b[19]), (1, 4), "an OPEN, version 4");
        assert_eq!(u16::from_be_bytes([b[20], b[21]]), AS_TRANS, "a 4-octet AS goes as AS_TRANS");
        assert_eq!(u16::from_be_bytes([b[22], b[23]]), 9, "hold time");
        assert!(b.windows(6).any(|w| w == [65, 4, 0xfa, 0x56, 0xea, 0x01]), "4-octet AS capability with 4200000001");
        let out = s.handle(t0, Input::Received(parse(&peer_open(4, 64512, 90, [203, 0, 113, 1]))));
        assert_eq!(out, [Output::Send(BgpMessage::KeepAlive)]);
        assert_eq!(s.state(), State::OpenConfirm);
        let out = s.handle(t0, Input::Received(parse(&KEEPALIVE)));
        let [Output::Up(n)] = out.as_slice() else { panic!("{out:?}") };
        assert_eq!(n.hold_time, Duration::from_secs(9), "the smaller hold time");
        assert_eq!(n.keepalive, Duration::from_secs(3));
        assert!(n.four_octet_as && n.ipv4 && n.ipv6 && n.route_refresh);
        assert_eq!(s.state(), State::Established);
    }

    #[test]
    fn a_session_comes_up_keeps_alive_and_expires_on_silence() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg());
        established(&mut s, t0);
        assert_eq!(s.deadline(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(s.tick(t0 + Duration::from_secs(3)), [Output::Send(BgpMessage::KeepAlive)]);
        // The peer's KEEPALIVE restarts the hold timer.
        assert!(s.handle(t0 + Duration::from_secs(8), Input::Received(BgpMessage::KeepAlive)).is_empty());
        assert!(notification(&s.tick(t0 + Duration::from_secs(10))).is_none());
        // Then silence for the hold time: Hold Timer Expired, and a dial after connect-retry.
        let out = s.tick(t0 + Duration::from_secs(17));
        assert_eq!(notification(&out), Some((4, 0)));
        assert!(matches!(out.last(), Some(Output::Down(Down::SentNotification { code: 4, .. }))));
        assert_eq!(s.state(), State::Idle);
        assert!(s.tick(t0 + Duration::from_secs(21)).is_empty());
        assert_eq!(s.tick(t0 + Duration::from_secs(22)), [Output::Connect]);
    }

    #[test]
    fn bad_opens_get_the_rfcs_notifications() {
        let t0 = Instant::now();
        for (open, want, why) in [
            (peer_open(3, 64512, 90, [203, 0, 113, 1]), (2, 1), "the peer speaks BGP version 3, not 4"),
            (peer_open(4, 64999, 90, [203, 0, 113, 1]), (2, 2), "the peer's AS is 64999, the BGPPeer says 64512"),
            (peer_open(4, 64512, 2, [203, 0, 113, 1]), (2, 6), "the peer's hold time 2s is below 3s"),
            (peer_open(4, 64512, 90, [0, 0, 0, 0]), (2, 3), "the peer's BGP identifier 0.0.0.0 is not usable"),
        ] {
            let mut s = Session::new(cfg());
            s.handle(t0, Input::Start);
            s.handle(t0, Input::Connected);
            // netgauze refuses some at decoding, the session the others: the same answers.
            let input = match BgpCodec::new(true).decode(&mut BytesMut::from(&open[..])) {
                Ok(m) => Input::Received(m.unwrap().0),
                Err(e) => Input::Undecodable(e),
            };
            let out = s.handle(t0, input);
            assert_eq!(notification(&out), Some(want), "{why}");
            assert_eq!(out[1], Output::Close);
            let Output::Down(Down::SentNotification { code, subcode, why: said }) = &out[2] else { panic!("{out:?}") };
            assert_eq!((*code, *subcode), want);
            assert!(said.contains(why) || said.starts_with("malformed message from the peer"), "{said}");
            assert_eq!(s.state(), State::Idle);
        }
    }

    #[test]
    fn unexpected_messages_are_fsm_errors_and_a_stop_is_a_cease() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg());
        s.handle(t0, Input::Start);
        s.handle(t0, Input::Connected);
        let out = s.handle(t0, Input::Received(BgpMessage::KeepAlive));
        assert_eq!(notification(&out), Some((5, 1)), "a KEEPALIVE before the OPEN");
        let mut s = Session::new(cfg());
        established(&mut s, t0);
        let out = s.handle(t0, Input::Received(parse(&peer_open(4, 64512, 90, [203, 0, 113, 1]))));
        assert_eq!(notification(&out), Some((5, 3)), "an OPEN when Established");
        let mut s = Session::new(cfg());
        established(&mut s, t0);
        let out = s.handle(t0, Input::Stop);
        assert_eq!(notification(&out), Some((6, 2)));
        assert_eq!(out[1..], [Output::Close, Output::Down(Down::Stopped)]);
        assert_eq!(s.deadline(), None, "a stopped session never dials again");
        // A stop while Idle still ends the session for whoever waits on it.
        let mut s = Session::new(cfg());
        s.handle(t0, Input::Start);
        s.handle(t0, Input::ConnectFailed("refused".into()));
        assert_eq!(s.handle(t0, Input::Stop), [Output::Down(Down::Stopped)]);
    }

    #[test]
    fn a_route_refresh_asks_for_every_route_again() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg());
        established(&mut s, t0);
        // ROUTE-REFRESH for IPv4 unicast (RFC 2918): type 5, AFI 1, reserved, SAFI 1.
        let rr = [&[0xffu8; 16][..], &[0, 23, 5, 0, 1, 0, 1]].concat();
        assert_eq!(s.handle(t0, Input::Received(parse(&rr))), [Output::Refresh]);
        assert_eq!(s.state(), State::Established);
    }

    #[test]
    fn a_peers_notification_or_close_ends_the_session_and_it_dials_again() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg());
        established(&mut s, t0);
        let cease = [&[0xffu8; 16][..], &[0, 21, 3, 6, 2]].concat();
        let out = s.handle(t0, Input::Received(parse(&cease)));
        assert_eq!(out, [Output::Down(Down::ReceivedNotification("CeaseError AdministrativeShutdown".into()))]);
        assert_eq!(s.tick(t0 + Duration::from_secs(5)), [Output::Connect]);
        s.handle(t0, Input::Connected);
        assert!(matches!(s.handle(t0, Input::Closed)[..], [Output::Down(Down::Transport(_))]));
    }

    #[test]
    fn a_path_down_ends_the_session_at_once_and_dials_again_later() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg());
        established(&mut s, t0);
        let out = s.handle(t0, Input::PathDown("no BFD packet within the detection time".into()));
        assert_eq!(
            out,
            [Output::Close, Output::Down(Down::PathDown("no BFD packet within the detection time".into()))]
        );
        assert_eq!(s.state(), State::Idle);
        assert_eq!(s.deadline(), Some(t0 + cfg().connect_retry), "dials again after connectTime");
        assert_eq!(s.handle(t0, Input::PathDown("again".into())), [], "nothing more while Idle");
    }

    #[test]
    fn graceful_restart_is_offered_and_a_restart_ends_without_a_notification() {
        let t0 = Instant::now();
        let mut s = Session::new(Config { graceful_restart: Some(Duration::from_secs(120)), ..cfg() });
        s.handle(t0, Input::Start);
        let out = s.handle(t0, Input::Connected);
        let Output::Send(open) = &out[0] else { panic!("{out:?}") };
        let b = wire(open.clone());
        // Capability 64, length 2 + 2 families x 4: flags 0, time 120, IPv4 and IPv6
        // unicast with forwarding state kept.
        let gr = [64, 10, 0x00, 120, 0, 1, 1, 0x80, 0, 2, 1, 0x80];
        assert!(b.windows(gr.len()).any(|w| w == gr), "{b:02x?}");
        // A peer that does not offer it: not negotiated.
        s.handle(t0, Input::Received(parse(&peer_open(4, 64512, 90, [203, 0, 113, 1]))));
        let out = s.handle(t0, Input::Received(BgpMessage::KeepAlive));
        let [Output::Up(n)] = out.as_slice() else { panic!("{out:?}") };
        assert!(!n.graceful_restart);
        assert_eq!(s.handle(t0, Input::Restart), [Output::Close, Output::Down(Down::Stopped)], "no Cease");
        assert_eq!(s.deadline(), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]
        /// Whatever bytes a peer sends: the codec answers or refuses, the session never
        /// panics and ends in a known state.
        #[test]
        fn fuzz_anything_a_peer_sends(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), 0..6)) {
            let t0 = Instant::now();
            let mut s = Session::new(cfg());
            s.handle(t0, Input::Start);
            s.handle(t0, Input::Connected);
            let mut codec = BgpCodec::new(true);
            for c in chunks {
                let mut header = vec![0xffu8; 16];
                header.extend(((19 + c.len()) as u16).to_be_bytes());
                header.extend(c);
                if let Ok(Some((m, _))) = codec.decode(&mut BytesMut::from(&header[..])) {
                    let _ = s.handle(t0, Input::Received(m));
                }
            }
            let _ = s.tick(t0 + Duration::from_secs(300));
        }
    }
}
