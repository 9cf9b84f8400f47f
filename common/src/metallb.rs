//! Compat mode's readers: MetalLB's `metallb.io` objects of MetalLB's namespace,
//! watched and read as ferrolb's (`ferrolb_crds::metallb`), merged with ferrolb's own
//! (ferrolb's object wins on a name clash). What cannot be honoured (a field ferrolb
//! lacks, an unreadable spec, a shadowed object) is a problem, logged once and kept
//! for the controller to turn into a Warning Event on the MetalLB object.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrolb_crds::metallb::{self, Kind};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::{AbortOnDrop, lock};

/// metallb compat's flags, the same on both binaries (the chart's `metallbCompat`).
#[derive(Debug, Clone, clap::Args)]
pub struct CompatArgs {
    /// Also read MetalLB's `metallb.io` IPAddressPools, L2Advertisements, BGPPeers,
    /// BGPAdvertisements, Communities and BFDProfiles of this namespace (a ferrolb
    /// object of the same kind and name wins); the controller also writes MetalLB's
    /// `ip-allocated-from-pool` annotation. Empty: off.
    #[arg(long, env = "FERROLB_METALLB_NAMESPACE", default_value = "",
          value_parser = crate::flags::optional_namespace)]
    pub metallb_namespace: String,
    /// Export MetalLB's metric names and labels besides ferrolb's.
    #[arg(long, env = "FERROLB_METALLB_METRICS", default_value_t = false, action = clap::ArgAction::Set)]
    pub metallb_metrics: bool,
}

impl CompatArgs {
    /// MetalLB's namespace, when compat mode reads it.
    pub fn namespace(&self) -> Option<String> {
        Some(self.metallb_namespace.clone()).filter(|n| !n.is_empty())
    }
}

/// A MetalLB object ferrolb cannot (fully) honour.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The MetalLB object.
    pub regarding: Regarding,
    /// What is wrong, naming the field.
    pub message: String,
}

/// A MetalLB object, as an Event names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Regarding {
    /// Its kind.
    pub kind: &'static str,
    /// `metallb.io/<version>`.
    pub api_version: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: Option<String>,
}

impl Regarding {
    /// The reference an Event's `regarding` takes.
    pub fn object_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.to_string()),
            namespace: Some(self.namespace.clone()),
            name: Some(self.name.clone()),
            uid: self.uid.clone(),
            ..Default::default()
        }
    }
}

/// The caches of MetalLB's objects; their watches end when this is dropped.
pub struct MetalLb {
    stores: BTreeMap<&'static str, Store<DynamicObject>>,
    /// MetalLB's namespace.
    from: String,
    /// ferrolb's namespace: converted objects live there, as ferrolb's own do.
    into: String,
    /// Problems seen (logged once each) and those not yet taken.
    seen: Mutex<BTreeSet<Problem>>,
    fresh: Mutex<Vec<Problem>>,
    collect: bool,
    /// The MetalLB objects last merged in, by kind and name.
    used: Mutex<BTreeMap<(&'static str, String), Regarding>>,
    _watches: AbortOnDrop,
}

impl MetalLb {
    /// Watch MetalLB's kinds in namespace `from`; `changed` is poked on every event;
    /// `collect` keeps problems for [`MetalLb::take_problems`]. A kind whose CRD is
    /// not installed (an older MetalLB) is skipped, said once.
    pub async fn start(client: &Client, from: &str, into: &str, changed: Arc<Notify>, collect: bool) -> MetalLb {
        let mut stores = BTreeMap::new();
        let mut tasks = Vec::new();
        for k in metallb::KINDS {
            let ar = resource(k);
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), from, &ar);
            match api.list(&ListParams::default().limit(1)).await {
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    tracing::warn!(
                        kind = k.kind,
                        version = k.version,
                        namespace = from,
                        "metallb compat: MetalLB's CRD for this kind is not installed; its objects are not read"
                    );
                    continue;
                }
                // Anything else (no answer yet, refused): the watch retries and says why.
                _ => {}
            }
            let writer = reflector::store::Writer::new(ar.clone());
            let store = writer.as_reader();
            let stream = reflector::reflector(writer, crate::relisting(api, watcher::Config::default()))
                .default_backoff()
                .touched_objects();
            let changed = changed.clone();
            let kind = k.kind;
            tasks.push(tokio::spawn(async move {
                use futures::StreamExt;
                stream
                    .for_each(|r| {
                        if let Err(e) = r {
                            tracing::warn!(kind, error = %e, "metallb compat: watch error; retrying");
                        }
                        changed.notify_one();
                        std::future::ready(())
                    })
                    .await;
            }));
            stores.insert(k.kind, store);
        }
        MetalLb {
            stores,
            from: from.to_string(),
            into: into.to_string(),
            seen: Mutex::default(),
            fresh: Mutex::default(),
            collect,
            used: Mutex::default(),
            _watches: AbortOnDrop(tasks),
        }
    }

    /// Wait until every cache holds a full list.
    pub async fn synced(&self, within: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(within, async {
            for s in self.stores.values() {
                s.wait_until_ready().await?;
            }
            Ok::<_, anyhow::Error>(())
        })
        .await
        .map_err(|_| anyhow::anyhow!("MetalLB's objects did not sync within {within:?}"))?
    }

    /// `ours` with MetalLB's objects of `K`'s kind added (converted; ours win on names).
    pub fn merged<K>(&self, ours: Vec<K>) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned + Serialize,
    {
        let kind = K::kind(&());
        let Some(k) = metallb::KINDS.iter().find(|k| k.kind == kind) else { return ours };
        let Some(store) = self.stores.get(k.kind) else { return ours };
        let mut theirs = Vec::new();
        let mut problems = Vec::new();
        let mut used = Vec::new();
        let mut objects: Vec<Arc<DynamicObject>> = store.state();
        objects.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        for o in objects {
            let regarding = Regarding {
                kind: k.kind,
                api_version: k.api_version(),
                namespace: self.from.clone(),
                name: o.metadata.name.clone().unwrap_or_default(),
                uid: o.metadata.uid.clone(),
            };
            let value = match serde_json::to_value(&*o) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(Problem { regarding, message: format!("not read: {e}") });
                    continue;
                }
            };
            match metallb::convert::<K>(&value, &self.into) {
                Ok((obj, lost)) => {
                    used.push(regarding.clone());
                    for path in lost {
                        problems.push(Problem {
                            regarding: regarding.clone(),
                            message: format!("{path}: ignored: ferrolb has no such field"),
                        });
                    }
                    theirs.push(obj);
                }
                Err(e) => problems.push(Problem { regarding, message: format!("not used: {e}") }),
            }
        }
        let (all, shadowed) = metallb::merge(ours, theirs);
        {
            let mut u = lock(&self.used);
            u.retain(|(kind, _), _| *kind != k.kind);
            for r in used.into_iter().filter(|r| !shadowed.contains(&r.name)) {
                u.insert((k.kind, r.name.clone()), r);
            }
        }
        for name in shadowed {
            let regarding = Regarding {
                kind: k.kind,
                api_version: k.api_version(),
                namespace: self.from.clone(),
                uid: None,
                name: name.clone(),
            };
            problems.push(Problem {
                regarding,
                message: format!("not used: ferrolb.io {kind} {}/{name} has its name and takes precedence", self.into),
            });
        }
        self.report(problems);
        all
    }

    /// ferrolb's model refused the object `kind`/`name` (`why` names the field): when it
    /// is a MetalLB object, that is a problem of it.
    pub fn invalid(&self, kind: &'static str, name: &str, why: &str) {
        let Some(regarding) = lock(&self.used).get(&(kind, name.to_string())).cloned() else { return };
        self.report(vec![Problem { regarding, message: format!("not used: {why}") }]);
    }

    /// Problems seen since the last call, each once (kept only when started with
    /// `collect`: a reader that never asks, the speaker, only logs them).
    pub fn take_problems(&self) -> Vec<Problem> {
        std::mem::take(&mut *lock(&self.fresh))
    }

    fn report(&self, problems: Vec<Problem>) {
        let mut seen = lock(&self.seen);
        for p in problems {
            if seen.insert(p.clone()) {
                let r = &p.regarding;
                tracing::warn!(object = %format!("{} {}/{}", r.kind, r.namespace, r.name), problem = %p.message,
                    "metallb compat: MetalLB object not fully honoured");
                if self.collect {
                    lock(&self.fresh).push(p);
                }
            }
        }
    }
}

/// `ours`, with MetalLB's objects of the kind when compat mode reads them.
pub fn merged<K>(metallb: Option<&MetalLb>, ours: Vec<K>) -> Vec<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Serialize,
{
    match metallb {
        Some(m) => m.merged(ours),
        None => ours,
    }
}

/// The API resource of a MetalLB kind.
pub fn resource(k: Kind) -> ApiResource {
    ApiResource {
        group: metallb::GROUP.to_string(),
        version: k.version.to_string(),
        api_version: k.api_version(),
        kind: k.kind.to_string(),
        plural: k.plural.to_string(),
    }
}

/// One of MetalLB's metric families, made from one of ferrolb's.
#[derive(Debug, Clone, Copy)]
struct Alias {
    ours: &'static str,
    theirs: &'static str,
    /// A label whose value MetalLB spells differently, and MetalLB's spelling.
    relabel: Option<(&'static str, &'static str)>,
}

const fn alias(ours: &'static str, theirs: &'static str) -> Alias {
    Alias { ours, theirs, relabel: None }
}

/// ferrolb's metrics that have a MetalLB twin, with MetalLB's names and labels.
const ALIASES: &[Alias] = &[
    alias("ferrolb_allocator_addresses_in_use", "metallb_allocator_addresses_in_use_total"),
    alias("ferrolb_allocator_addresses", "metallb_allocator_addresses_total"),
    alias("ferrolb_k8s_client_updates_total", "metallb_k8s_client_updates_total"),
    alias("ferrolb_k8s_client_update_errors_total", "metallb_k8s_client_update_errors_total"),
    // ferrolb's counts layer-2 announcements, labelled by family; MetalLB's labels the protocol.
    Alias {
        ours: "ferrolb_speaker_announced",
        theirs: "metallb_speaker_announced",
        relabel: Some(("protocol", "layer2")),
    },
    alias("ferrolb_layer2_requests_received_total", "metallb_layer2_requests_received"),
    alias("ferrolb_layer2_responses_sent_total", "metallb_layer2_responses_sent"),
    alias("ferrolb_layer2_gratuitous_sent_total", "metallb_layer2_gratuitous_sent"),
    alias("ferrolb_bgp_session_up", "metallb_bgp_session_up"),
    alias("ferrolb_bgp_updates_total", "metallb_bgp_updates_total"),
    alias("ferrolb_bgp_announced_prefixes", "metallb_bgp_announced_prefixes_total"),
    alias("ferrolb_bfd_session_up", "metallb_bfd_session_up"),
    alias("ferrolb_bfd_control_packet_input_total", "metallb_bfd_control_packet_input"),
    alias("ferrolb_bfd_control_packet_output_total", "metallb_bfd_control_packet_output"),
    alias("ferrolb_bfd_session_up_events_total", "metallb_bfd_session_up_events"),
    alias("ferrolb_bfd_session_down_events_total", "metallb_bfd_session_down_events"),
];

/// `families` followed by their MetalLB twins (the same series under MetalLB's names
/// and labels), so that MetalLB's dashboards and alerts keep working; plus
/// `metallb_k8s_client_config_loaded_bool` (`loaded`: the configuration is read) and,
/// where `ferrolb_config_stale` is exported, `metallb_k8s_client_config_stale_bool`
/// (1 while any pool serves its last valid addresses).
pub fn with_metallb_names(
    mut families: Vec<prometheus::proto::MetricFamily>,
    loaded: bool,
) -> Vec<prometheus::proto::MetricFamily> {
    use prometheus::proto::{Gauge, Metric, MetricFamily, MetricType};
    let gauge = |name: &str, help: &str, v: f64| {
        let mut g = Gauge::default();
        g.set_value(v);
        let mut f = MetricFamily::default();
        f.set_name(name.into());
        f.set_help(help.into());
        f.set_field_type(MetricType::GAUGE);
        f.set_metric(vec![Metric::from_gauge(g)]);
        f
    };
    let mut twins = Vec::new();
    for f in &families {
        if let Some(a) = ALIASES.iter().find(|a| a.ours == f.name()) {
            let mut t = f.clone();
            t.set_name(a.theirs.into());
            t.set_help(format!("MetalLB's name for {} (metallb compat).", a.ours));
            if let Some((label, value)) = a.relabel {
                for m in t.mut_metric() {
                    for l in m.mut_label() {
                        if l.name() == label {
                            l.set_value(value.into());
                        }
                    }
                }
            }
            twins.push(t);
        }
        if f.name() == "ferrolb_config_stale" {
            let stale = f.get_metric().iter().any(|m| m.get_gauge().get_value() > 0.0);
            twins.push(gauge(
                "metallb_k8s_client_config_stale_bool",
                "1 while some IPAddressPool serves its last valid addresses (metallb compat).",
                if stale { 1.0 } else { 0.0 },
            ));
        }
    }
    twins.push(gauge(
        "metallb_k8s_client_config_loaded_bool",
        "1 once the configuration is read (metallb compat).",
        if loaded { 1.0 } else { 0.0 },
    ));
    families.extend(twins);
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_carry_the_series_under_metallb_s_names_and_labels() {
        let r = prometheus::Registry::new();
        let announced = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("ferrolb_speaker_announced", "x"),
            &["service", "protocol", "node", "ip"],
        )
        .unwrap();
        announced.with_label_values(&["default/web", "ipv4", "node-1", "198.51.100.100"]).set(1);
        let stale =
            prometheus::IntGaugeVec::new(prometheus::Opts::new("ferrolb_config_stale", "x"), &["pool"]).unwrap();
        stale.with_label_values(&["a"]).set(0);
        stale.with_label_values(&["b"]).set(1);
        r.register(Box::new(announced)).unwrap();
        r.register(Box::new(stale)).unwrap();
        let mut text = String::new();
        prometheus::TextEncoder::new().encode_utf8(&with_metallb_names(r.gather(), false), &mut text).unwrap();
        assert!(text.contains(
            "metallb_speaker_announced{ip=\"198.51.100.100\",node=\"node-1\",protocol=\"layer2\",service=\"default/web\"} 1"
        ), "{text}");
        assert!(
            text.contains("ferrolb_speaker_announced{ip=\"198.51.100.100\",node=\"node-1\",protocol=\"ipv4\""),
            "{text}"
        );
        assert!(text.contains("metallb_k8s_client_config_stale_bool 1"), "{text}");
        assert!(text.contains("metallb_k8s_client_config_loaded_bool 0"), "{text}");
    }
}
