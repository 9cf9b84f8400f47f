//! ferrolb-speaker: answers ARP and NDP for the load-balancer IPs this node
//! announces, and sends gratuitous announcements when it takes one over.

pub mod announce;
pub mod election;
pub mod forward;
pub mod frames;
pub mod memberlist;
pub mod membership;
pub mod metrics;
pub mod plan;
pub mod responder;
pub mod run;
pub mod sys;
pub mod wire;
