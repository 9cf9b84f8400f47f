//! ferrolb-e2e: the proving ground. Network-namespace topologies built with
//! iproute2 (a bridge as the switch, node and client namespaces on it), shared
//! by the network tests and the sandbox.

pub mod topology;
