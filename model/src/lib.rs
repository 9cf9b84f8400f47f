//! ferrolb's domain model, shared by the controller and the speaker so that a
//! rule is written once: the validated [`Config`] (pools and advertisements,
//! with the field at fault for every invalid object), label [`selector`]s,
//! which Services are ferrolb's ([`is_ours`]), how a Service is named
//! ([`ServiceKey`]), and how a condition is set ([`conditions`]).
//!
//! Pure: no client, no I/O, no clock but the one passed in. It sits between the
//! API types (`ferrolb-crds`, which only describe the wire shapes and their
//! constants) and the binaries, a crate of its own rather than a module of
//! `crds` so that `crdgen` and the API reference depend on the shapes alone.

pub mod announce;
pub mod bgp;
pub mod conditions;
pub mod config;
pub mod endpoints;
pub mod range;
pub mod selector;
pub mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::{Config, L2Advertisement, Pool, PoolError};
pub use range::{Family, IpRange, from_u128, parse_range, to_u128};
pub use service::{ServiceKey, ingress_ips, is_ours};
