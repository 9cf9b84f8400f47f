//! Prometheus metrics. One registry per process, passed down; pool gauges are
//! computed from the allocator at scrape time, so they are never stale.

use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::alloc::Allocator;

/// The controller's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// The registry everything is registered in.
    pub registry: Registry,
    /// Time to compute one Service's allocation.
    pub allocation_duration: Histogram,
    /// Reconcile errors by kind.
    pub reconcile_errors: IntCounterVec,
    /// Writes to the API server.
    pub updates: IntCounter,
    /// Failed writes to the API server.
    pub update_errors: IntCounter,
    /// 1 while this replica is the leader.
    pub leader: IntGauge,
    /// LoadBalancer Services waiting for an address.
    pub pending: IntGauge,
}

const POOL_GAUGES: [(&str, &str); 7] = [
    (
        "ferrolb_config_stale",
        "1 while the pool's spec is invalid and it serves its last valid addresses (no new allocations).",
    ),
    ("ferrolb_allocator_addresses", "Addresses in the pool (both families; IPv6 may exceed float precision)."),
    ("ferrolb_allocator_addresses_in_use", "Addresses of the pool assigned to Services."),
    ("ferrolb_allocator_ipv4_addresses", "IPv4 addresses in the pool."),
    ("ferrolb_allocator_ipv4_addresses_in_use", "IPv4 addresses of the pool assigned to Services."),
    ("ferrolb_allocator_ipv6_addresses", "IPv6 addresses in the pool."),
    ("ferrolb_allocator_ipv6_addresses_in_use", "IPv6 addresses of the pool assigned to Services."),
];

/// Pool gauges, read from the allocator when scraped.
struct PoolCollector {
    alloc: Arc<Mutex<Allocator>>,
    descs: Vec<Desc>,
}

impl PoolCollector {
    fn vecs() -> Vec<GaugeVec> {
        POOL_GAUGES
            .iter()
            .map(|(n, h)| GaugeVec::new(Opts::new(*n, *h), &["pool"]).expect("static metric definition"))
            .collect()
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let vecs = Self::vecs();
        let alloc = ferrolb_common::lock(&self.alloc);
        for name in alloc.config().pools.keys() {
            let s = alloc.stats(name);
            let stale = alloc.config().pools.get(name).is_some_and(|p| p.stale);
            let values = [
                f64::from(u8::from(stale)),
                s.v4_total as f64 + s.v6_total as f64,
                s.v4_in_use as f64 + s.v6_in_use as f64,
                s.v4_total as f64,
                s.v4_in_use as f64,
                s.v6_total as f64,
                s.v6_in_use as f64,
            ];
            for (v, x) in vecs.iter().zip(values) {
                v.with_label_values(&[name]).set(x);
            }
        }
        vecs.iter().flat_map(|v| v.collect()).collect()
    }
}

impl Metrics {
    /// Create and register every metric.
    pub fn new(alloc: Arc<Mutex<Allocator>>) -> Metrics {
        let registry = Registry::new();
        let allocation_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ferrolb_allocator_allocation_duration_seconds",
                "Time to compute one Service's allocation.",
            )
            .buckets(vec![1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2]),
        )
        .expect("static metric definition");
        let reconcile_errors = IntCounterVec::new(
            Opts::new("ferrolb_controller_reconcile_errors_total", "Reconcile errors by kind."),
            &["kind"],
        )
        .expect("static metric definition");
        // Every kind exported from the start, so rates and alerts see zeros, not absence.
        for kind in ["conflict", "not_found", "forbidden", "server", "rejected", "transport"] {
            reconcile_errors.with_label_values(&[kind]);
        }
        let updates = IntCounter::new("ferrolb_k8s_client_updates_total", "Writes to the API server.")
            .expect("static metric definition");
        let update_errors =
            IntCounter::new("ferrolb_k8s_client_update_errors_total", "Failed writes to the API server.")
                .expect("static metric definition");
        let leader = IntGauge::new("ferrolb_controller_leader", "1 while this replica is the leader.")
            .expect("static metric definition");
        let pending = IntGauge::new(
            "ferrolb_controller_services_pending",
            "LoadBalancer Services of ferrolb's waiting for an address.",
        )
        .expect("static metric definition");
        let descs = PoolCollector::vecs().iter().flat_map(|v| v.desc().into_iter().cloned()).collect();
        for c in [
            Box::new(allocation_duration.clone()) as Box<dyn Collector>,
            Box::new(reconcile_errors.clone()),
            Box::new(updates.clone()),
            Box::new(update_errors.clone()),
            Box::new(leader.clone()),
            Box::new(pending.clone()),
            Box::new(PoolCollector { alloc, descs }),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics { registry, allocation_duration, reconcile_errors, updates, update_errors, leader, pending }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        buf
    }

    /// [`Metrics::render`] with MetalLB's names too (`--metallb-metrics`); `loaded`: the
    /// configuration is read.
    pub fn render_with_metallb_names(&self, loaded: bool) -> String {
        let mut buf = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&ferrolb_common::metallb::with_metallb_names(self.registry.gather(), loaded), &mut buf)
            .expect("text encoding cannot fail");
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::{IPAddressPool, IPAddressPoolSpec};
    use ferrolb_model::Config;

    #[test]
    fn pool_gauges_are_read_at_scrape_time() {
        let alloc = Arc::new(Mutex::new(Allocator::new()));
        let m = Metrics::new(alloc.clone());
        assert!(!m.render().contains("pool=\"p\""));
        let pool = IPAddressPool::new(
            "p",
            IPAddressPoolSpec {
                addresses: vec!["198.51.100.0/30".into(), "fd42:f1b::/126".into()],
                auto_assign: true,
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        );
        alloc.lock().unwrap().set_config(Config::build(&[pool], &[], Default::default()));
        let text = m.render();
        assert!(text.contains("ferrolb_allocator_addresses{pool=\"p\"} 8"), "{text}");
        assert!(text.contains("ferrolb_allocator_ipv4_addresses{pool=\"p\"} 4"), "{text}");
        assert!(text.contains("ferrolb_allocator_ipv6_addresses_in_use{pool=\"p\"} 0"), "{text}");
        assert!(text.contains("# TYPE ferrolb_allocator_allocation_duration_seconds histogram"));
    }
}
