//! Any frame the speaker's packet socket can deliver: answered, dropped with a
//! reason, or recognised as a conflict, and never a panic.
#![no_main]

use std::collections::BTreeSet;
use std::net::IpAddr;

use ferrolb_speaker::responder::{Iface, Table, conflict, requested_ip, respond};
use ferrolb_speaker::wire::Mac;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let mut table = Table::default();
    for ip in ["198.51.100.7", "fd42:f1b::7"] {
        table.insert(ip.parse::<IpAddr>().unwrap(), BTreeSet::from(["eth0".to_string()]));
    }
    let iface = Iface { name: "eth0".into(), mac: Mac([0x02, 0, 0, 0, 0, 0x0a]) };
    let _ = respond(&table, &iface, frame);
    let _ = requested_ip(frame);
    if let Some(c) = conflict(&table, &iface, frame) {
        let _ = c.defense(&iface);
    }
});
