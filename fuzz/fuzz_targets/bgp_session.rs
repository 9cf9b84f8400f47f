//! Any bytes a BGP peer can send, through netgauze's codec into ferrolb's session in
//! OpenSent and then Established: a message, or a NOTIFICATION for what does not
//! decode, and never a panic.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferrolb_bgp::session::{Config, Input, Session};
use libfuzzer_sys::fuzz_target;
use netgauze_bgp_pkt::codec::BgpCodec;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let cfg = Config {
        local_asn: 64513,
        peer_asn: 64512,
        router_id: Ipv4Addr::new(203, 0, 113, 2),
        hold_time: Duration::from_secs(9),
        keepalive: None,
        connect_retry: Duration::from_secs(1),
        ipv4: true,
        ipv6: true,
        graceful_restart: Some(Duration::from_secs(120)),
    };
    let mut s = Session::new(cfg);
    s.handle(t0, Input::Start);
    s.handle(t0, Input::Connected);
    let mut codec = BgpCodec::new(true);
    let mut buf = BytesMut::from(data);
    for _ in 0..16 {
        match codec.decode(&mut buf) {
            Ok(Some((m, _))) => {
                let _ = s.handle(t0, Input::Received(m));
            }
            Ok(None) => break,
            Err(e) => {
                let _ = s.handle(t0, Input::Undecodable(e));
                break;
            }
        }
    }
    let _ = s.tick(t0 + Duration::from_secs(30));
});
