//! Layer 2: the [`announcer`] turns the desired announcements into the table it
//! publishes ([`table`]) and the gratuitous ARP/NA it sends, through the real
//! [`io`]; the [`responders`] answer requests from that table, one thread per
//! interface.

pub mod announcer;
pub mod io;
pub mod responders;
pub mod table;

pub use announcer::{Announcer, GratuitousTiming, Io, Note};
