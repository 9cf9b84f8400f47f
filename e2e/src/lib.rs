//! ferrolb-e2e: the proving ground. Network-namespace topologies built with
//! iproute2 (a bridge as the switch, node, client and control-plane namespaces
//! on it), the sandbox (a cluster in a box) and its stand-ins for the kubelet,
//! the endpoints controller and kube-proxy.

pub mod bench;
pub mod chart;
pub mod client;
pub mod containers;
pub mod harness;
pub mod kubelet;
pub mod metallb;
pub mod netns;
pub mod pods;
pub mod prometheus;
pub mod router;
pub mod sandbox;
pub mod standin;
pub mod topology;
pub mod workloads;
pub use ferrolb_common::wait;
