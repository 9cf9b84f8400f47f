//! A session over TCP: dials the peer (from a source address when given), frames
//! messages with netgauze's codec, runs the [`Session`] on its outputs and timers,
//! and keeps the peer's view of our routes equal to the routes wanted: everything
//! at Established (then End-of-RIB), then only the differences.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::codec::BgpCodec;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use crate::session::{Config, Down, Input, Output, Session, State};
use crate::update::{Peering, Route, announce, end_of_rib, withdraw};

/// Where the peer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The peer's address and port (179).
    pub peer: SocketAddr,
    /// Dial from this local address.
    pub source: Option<IpAddr>,
    /// Sign the session's TCP segments with this key (RFC 2385, TCP MD5).
    pub password: Option<String>,
    /// The IP TTL (hop limit) of our segments: 1 for an external peer on the same
    /// link, 255 with eBGP multihop; `None` keeps the system's default (internal peers).
    pub ttl: Option<u32>,
}

/// What the driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The session's state.
    pub state: State,
    /// Why it last went down, if it did.
    pub last_down: Option<String>,
    /// Prefixes the peer has from us now.
    pub advertised: usize,
    /// UPDATE messages sent over this session's life (announcements, withdrawals,
    /// End-of-RIB).
    pub updates_sent: u64,
}

/// How a running session is to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep running.
    Run,
    /// End with Cease: the peer withdraws our routes (a deleted peer, a node leaving).
    Withdraw,
    /// End without a NOTIFICATION: a peer that agreed to graceful restart keeps our
    /// routes until the next session's End-of-RIB (a speaker restarting).
    Restart,
}

/// Run a session with `endpoint` until `stop` says otherwise than [`Stop::Run`],
/// advertising what `routes` holds; `status` follows the session. With `bfd`, the
/// status of the BFD session beside it: when that leaves Up because the path failed
/// (not because the peer stopped BFD on purpose), the session ends at once.
pub async fn run(
    endpoint: Endpoint,
    cfg: Config,
    mut peering: Peering,
    mut routes: watch::Receiver<Vec<Route>>,
    mut stop: watch::Receiver<Stop>,
    status: watch::Sender<Status>,
    mut bfd: Option<watch::Receiver<crate::bfd_io::Status>>,
) {
    let mut bfd_up = false;
    let connect_timeout = cfg.connect_retry;
    let mut session = Session::new(cfg);
    let mut conn: Option<Framed<TcpStream, BgpCodec>> = None;
    let mut sent: BTreeMap<IpNet, Route> = BTreeMap::new();
    let mut pending = session.handle(Instant::now().into_std(), Input::Start);
    let mut last_down = None;
    let mut routes_open = true;
    let mut updates_sent: u64 = 0;
    loop {
        // Carry out what the session said.
        while !pending.is_empty() {
            let outs = std::mem::take(&mut pending);
            for out in outs {
                match out {
                    Output::Connect => {
                        let input = match tokio::time::timeout(connect_timeout, dial(&endpoint)).await {
                            Ok(Ok(s)) => {
                                conn = Some(Framed::new(s, BgpCodec::new(true)));
                                Input::Connected
                            }
                            Ok(Err(e)) => Input::ConnectFailed(e.to_string()),
                            Err(_) if endpoint.password.is_some() => Input::ConnectFailed(
                                "timed out; with a TCP MD5 password, a peer that has another one (or none) \
                                 drops every segment: check the password on both sides"
                                    .into(),
                            ),
                            Err(_) => Input::ConnectFailed("timed out".into()),
                        };
                        pending.extend(session.handle(Instant::now().into_std(), input));
                    }
                    Output::Send(m) => {
                        // A write that fails (EPIPE, ECONNRESET) is the connection ending, in
                        // whatever state: ConnectFailed would be ignored past Connect, and the
                        // session would wait for its hold timer on a dead connection.
                        if let Some(c) = conn.as_mut()
                            && let Err(e) = c.send(m).await
                        {
                            tracing::debug!(peer = %endpoint.peer, error = %e, "BGP write failed");
                            conn = None;
                            pending.extend(session.handle(Instant::now().into_std(), Input::Closed));
                        }
                    }
                    Output::Close => {
                        if let Some(c) = conn.take() {
                            close(c).await;
                        }
                        sent.clear();
                    }
                    Output::Up(n) => {
                        // `sent` is empty here (every session ends with a Down that clears it).
                        let want = routes.borrow_and_update().clone();
                        // The session's own local address is the next hop of its family:
                        // the address the peer reaches this node at.
                        let local = conn.as_ref().and_then(|c| c.get_ref().local_addr().ok()).map(|a| a.ip());
                        peering = with_next_hop(peering, local);
                        let mut msgs = sync(&peering, &mut sent, &want);
                        msgs.extend(end_of_rib(n.ipv4, n.ipv6));
                        updates_sent += write(&mut conn, msgs).await;
                    }
                    Output::Refresh => {
                        // What changed first, then every route again.
                        let want = routes.borrow_and_update().clone();
                        let mut msgs = sync(&peering, &mut sent, &want);
                        msgs.extend(announce(&peering, &want));
                        tracing::debug!(peer = %endpoint.peer, routes = want.len(), "route refresh answered");
                        updates_sent += write(&mut conn, msgs).await;
                    }
                    Output::Down(d) => {
                        // Whatever the connection was, it is over (a Close before this sent
                        // what had to be sent).
                        conn = None;
                        tracing::info!(peer = %endpoint.peer, why = %d, "BGP session down");
                        last_down = Some(d.to_string());
                        sent.clear();
                        if d == Down::Stopped {
                            status.send_replace(Status {
                                state: State::Idle,
                                last_down: last_down.clone(),
                                advertised: 0,
                                updates_sent,
                            });
                            return;
                        }
                    }
                }
            }
        }
        status.send_if_modified(|s| {
            let now =
                Status { state: session.state(), last_down: last_down.clone(), advertised: sent.len(), updates_sent };
            let changed = *s != now;
            *s = now;
            changed
        });
        let deadline = session.deadline().map(Instant::from_std);
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => pending = session.tick(Instant::now().into_std()),
            r = stop.changed() => {
                // Nobody left to say otherwise: withdraw.
                let now_wanted = if r.is_err() { Stop::Withdraw } else { *stop.borrow() };
                let input = match now_wanted {
                    Stop::Run => None,
                    Stop::Withdraw => Some(Input::Stop),
                    Stop::Restart => Some(Input::Restart),
                };
                if let Some(input) = input {
                    pending = session.handle(Instant::now().into_std(), input);
                }
            }
            m = next(&mut conn) => {
                let now = Instant::now().into_std();
                pending = match m {
                    Some(Ok(msg)) => session.handle(now, Input::Received(msg)),
                    Some(Err(e)) => {
                        tracing::warn!(peer = %endpoint.peer, error = %e, "malformed BGP message");
                        session.handle(now, Input::Undecodable(e))
                    }
                    None => session.handle(now, Input::Closed),
                };
            }
            r = async {
                match bfd.as_mut() {
                    Some(b) => b.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(b) = bfd.as_mut().filter(|_| r.is_ok()) else {
                    bfd = None;
                    continue;
                };
                let now_bfd = b.borrow_and_update().clone();
                let up = now_bfd.state == crate::bfd::State::Up;
                if bfd_up
                    && !up
                    && let Some(d) = now_bfd.last_down.filter(|d| !d.by_peer_admin)
                {
                    pending = session.handle(Instant::now().into_std(), Input::PathDown(d.to_string()));
                }
                bfd_up = up;
            }
            r = routes.changed(), if session.state() == State::Established && routes_open => {
                if r.is_err() {
                    // The routes stay as they are; only `stop` ends the session (a closed
                    // route channel read as a stop would send Cease where a restart was
                    // asked for: found when a stopping speaker's routes were withdrawn
                    // despite graceful restart).
                    routes_open = false;
                    continue;
                }
                let want = routes.borrow_and_update().clone();
                let msgs = sync(&peering, &mut sent, &want);
                updates_sent += write(&mut conn, msgs).await;
            }
        }
    }
}

/// The UPDATEs that turn what the peer has from us (`sent`) into `want`: withdrawals of
/// what is gone, announcements of what is new or changed; `sent` becomes `want`.
fn sync(peering: &Peering, sent: &mut BTreeMap<IpNet, Route>, want: &[Route]) -> Vec<BgpMessage> {
    let want: BTreeMap<IpNet, Route> = want.iter().map(|r| (r.prefix, r.clone())).collect();
    let gone: Vec<IpNet> = sent.keys().filter(|p| !want.contains_key(p)).copied().collect();
    let changed: Vec<Route> = want.values().filter(|r| sent.get(&r.prefix) != Some(r)).cloned().collect();
    let mut msgs = withdraw(&gone);
    msgs.extend(announce(peering, &changed));
    *sent = want;
    msgs
}

/// `peering` with `local` (the connection's local address) as the next hop of its family.
fn with_next_hop(mut peering: Peering, local: Option<IpAddr>) -> Peering {
    match local {
        Some(IpAddr::V4(a)) => peering.next_hop_v4 = Some(a),
        Some(IpAddr::V6(a)) => peering.next_hop_v6 = Some(a),
        None => {}
    }
    peering
}

/// Queue `msgs` and flush them; a write that fails shows as the connection ending.
/// The UPDATEs queued.
async fn write(conn: &mut Option<Framed<TcpStream, BgpCodec>>, msgs: Vec<BgpMessage>) -> u64 {
    let mut updates = 0;
    if let Some(c) = conn.as_mut() {
        for m in msgs {
            updates += u64::from(matches!(m, BgpMessage::Update(_)));
            let _ = c.feed(m).await;
        }
        let _ = c.flush().await;
    }
    updates
}

/// Close so that what was sent last (a NOTIFICATION) reaches the peer: flush, end our
/// side, and read until the peer closes (at most a second). Closing with unread
/// data would send a reset, and the peer's stack would drop our NOTIFICATION with it.
async fn close(mut c: Framed<TcpStream, BgpCodec>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = c.flush().await;
    let mut io = c.into_inner();
    let _ = io.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = io.read(&mut buf).await
            && n > 0
        {}
    })
    .await;
}

async fn next(
    conn: &mut Option<Framed<TcpStream, BgpCodec>>,
) -> Option<Result<BgpMessage, netgauze_bgp_pkt::codec::BgpCodecDecoderError>> {
    match conn {
        Some(c) => c.next().await.map(|r| r.map(|(m, _ignored)| m)),
        None => std::future::pending().await,
    }
}

async fn dial(e: &Endpoint) -> std::io::Result<TcpStream> {
    let socket = if e.peer.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_nodelay(true)?;
    if let Some(pw) = &e.password {
        use std::os::fd::AsRawFd;
        ferrolb_speaker_sys::set_tcp_md5(socket.as_raw_fd(), e.peer, pw.as_bytes())?;
    }
    if let Some(ttl) = e.ttl {
        let s = socket2::SockRef::from(&socket);
        if e.peer.is_ipv4() { s.set_ttl_v4(ttl)? } else { s.set_unicast_hops_v6(ttl)? }
    }
    if let Some(src) = e.source {
        socket.bind(SocketAddr::new(src, 0))?;
    }
    socket.connect(e.peer).await
}
