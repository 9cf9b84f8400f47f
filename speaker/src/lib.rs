//! ferrolb-speaker: makes each load-balancer IP reachable. In layer 2 exactly
//! one eligible node answers ARP (IPv4) and NDP (IPv6) for it, sends gratuitous
//! announcements when it takes it over, and hands it over before it stops.
//!
//! The data path, each step pure but the last:
//!
//! ```text
//! caches (Services, EndpointSlices, Nodes, pools, advertisements, Leases, statuses)
//!   + heartbeats (membership: who is alive, who claimed which IP)
//!   ─> plan::plan()          every IP: the eligible nodes, the elected one (election)
//!   ─> Plan::desired_on()    what this node answers for, on which interfaces
//!   ─> l2::Announcer         table + gratuitous bursts and refreshes; notes ─> effects
//!   ─> l2::table             the table, published as an immutable snapshot
//!   ─> l2::responders        one thread per interface: frame ─> respond() ─> reply
//! ```
//!
//! [`run`] is the loop around it, [`handover`] the graceful stop, [`l2status`]
//! the ServiceL2Status it writes, [`lease`] its membership Lease. System calls
//! live in `ferrolb-speaker-sys`; this crate has no `unsafe`.

pub mod api;
pub mod bgp;
pub mod bgpstatus;
pub mod effects;
pub mod election;
pub mod forward;
pub mod frames;
pub mod handover;
pub mod l2;
pub mod l2status;
pub mod lease;
pub mod membership;
pub mod metrics;
pub mod plan;
pub mod responder;
pub mod run;
pub mod settings;
pub mod wire;
pub mod writer;
