//! BGP for ferrolb's speaker: the session state machine ([`session`], pure, time
//! passed in), the UPDATEs that advertise and withdraw service prefixes
//! ([`update`]), and a driver that runs a session over TCP ([`driver`]). Messages are
//! encoded and decoded by `netgauze-bgp-pkt`; the state machine and the choice of
//! attributes are ferrolb's.

pub mod bfd;
pub mod bfd_io;
pub mod driver;
pub mod session;
pub mod update;
