//! Any datagram on the BFD port, through ferrolb's control packet decoder into a
//! session Down and one Up: a packet or a refusal, and never a panic.
#![no_main]

use std::time::{Duration, Instant};

use ferrolb_bgp::bfd::{Config, Packet, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let cfg = Config {
        transmit_interval: Duration::from_millis(50),
        receive_interval: Duration::from_millis(50),
        detect_mult: 3,
        passive: false,
    };
    let Ok(p) = Packet::decode(data) else { return };
    assert_eq!(Packet::decode(&p.encode()), Ok(p));
    let mut down = Session::new(cfg, 1, t0);
    let _ = down.receive(t0, &p);
    let _ = down.tick(t0 + Duration::from_secs(2), 0.5);
    let mut up = Session::new(cfg, 2, t0);
    let mut peer = Session::new(cfg, 3, t0);
    for i in 0..4u64 {
        let t = t0 + Duration::from_millis(i * 1000);
        if let (_, Some(x)) = peer.tick(t, 0.5) {
            let _ = up.receive(t, &x);
        }
        if let (_, Some(x)) = up.tick(t, 0.5) {
            let _ = peer.receive(t, &x);
        }
    }
    let _ = up.receive(t0 + Duration::from_secs(5), &p);
    let _ = up.tick(t0 + Duration::from_secs(6), 0.5);
});
