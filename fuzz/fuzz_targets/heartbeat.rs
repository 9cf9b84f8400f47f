//! Any datagram on the memberlist port, and any body sealed with the key (what a key
//! holder could send): refused with a reason or taken into the detector, whose every
//! question then still has an answer, and never a panic.
#![no_main]

use std::time::{Duration, Instant};

use ferrolb_speaker::membership::HeartbeatTiming;
use ferrolb_speaker::membership::detector::{Detector, Local, open, seal_raw};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut d = Detector::new("n1", HeartbeatTiming::default(), now);
    d.set_members((2..10).map(|i| format!("n{i}")));
    for datagram in [data.to_vec(), seal_raw(KEY, data)] {
        if let Ok((hb, format)) = open(&[KEY], &datagram) {
            let _ = d.receive(hb, format, now, 1_800_000_000_000);
        }
    }
    let later = now + Duration::from_millis(250);
    let _ = d.poll(later, 1_800_000_000_250, &Local { ready: true, ..Local::default() });
    let _ = (d.view(later), d.heard(later), d.claims(later), d.mismatched(later));
});
