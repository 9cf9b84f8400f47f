//! Who is alive: the heartbeat failure detector (pure, [`detector`]) and the UDP
//! socket that feeds it and sends this node's heartbeats ([`socket`]).

pub mod detector;
pub mod sim;
pub mod socket;

pub use detector::{HeartbeatTiming, Liveness};
pub use socket::{HeartbeatSettings, Membership};
