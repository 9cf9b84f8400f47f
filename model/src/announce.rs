//! Whether a Service's IP is announced, and if not, why: the controller's
//! `ferrolb.io/Announced` condition, from the truth.
//!
//! True only while a speaker reports announcing it (its ServiceL2Status). Otherwise
//! the first cause that holds, checked in the order an operator would fix them: no
//! advertisement covers the pool; no node may announce it (which selector, which
//! exclusion); no speaker runs on a node that may; a live speaker's report of the
//! cause (no ready endpoint for `externalTrafficPolicy: Local`, the elected node
//! lacking the named interfaces); and otherwise a speaker that could announce has not
//! (yet).

use std::collections::BTreeSet;

use ferrolb_crds::annotations::EXCLUDE_FROM_EXTERNAL_LB_LABEL;
use ferrolb_crds::conditions::reason;
use k8s_openapi::api::coordination::v1::Lease;

use crate::Config;
use crate::selector::Labels;

/// A node as announcement eligibility sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: Labels,
    /// The `NetworkUnavailable` condition is True.
    pub network_unavailable: bool,
}

impl NodeView {
    /// A Node as eligibility sees it: name, labels, and whether `NetworkUnavailable` is True.
    pub fn of(node: &k8s_openapi::api::core::v1::Node) -> NodeView {
        use kube::ResourceExt;
        NodeView {
            name: node.name_any(),
            labels: node.labels().clone(),
            network_unavailable: node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")),
        }
    }
}

/// The condition to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `ferrolb.io/Announced` is True.
    pub announced: bool,
    /// The condition's reason.
    pub reason: &'static str,
    /// What a person reads.
    pub message: String,
}

/// Whether a node carrying `labels` is kept from announcing by
/// `node.kubernetes.io/exclude-from-external-load-balancers` (unless the speakers run
/// with `--ignore-exclude-lb`: `ignore`).
pub fn excluded(labels: &Labels, ignore: bool) -> bool {
    !ignore && labels.contains_key(EXCLUDE_FROM_EXTERNAL_LB_LABEL)
}

/// The node a speaker Lease speaks for: its holder, and only when the holder is the
/// node the Lease is named after. A Lease that names one node and is held by another
/// (written by a compromised or misconfigured speaker) vouches for nobody, so no
/// speaker can keep another node alive or make it electable.
pub fn speaker_of(lease: &Lease) -> Option<&str> {
    let holder = lease.spec.as_ref()?.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    (lease.metadata.name.as_deref() == Some(holder)).then_some(holder)
}

/// Whether a speaker's membership Lease is current at `now` (and held by the node it
/// is named after: [`speaker_of`]).
pub fn lease_current(lease: &Lease, now: k8s_openapi::jiff::Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return false };
    if speaker_of(lease).is_none() {
        return false;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else { return false };
    let lasts = k8s_openapi::jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed.0 + lasts > now
}

fn list(names: &BTreeSet<String>) -> String {
    const SHOWN: usize = 5;
    let mut s: Vec<&str> = names.iter().take(SHOWN).map(String::as_str).collect();
    if names.len() > SHOWN {
        s.push("...");
    }
    s.join(", ")
}

/// What the cluster says of the nodes and speakers.
#[derive(Debug, Clone, Copy)]
pub struct Speakers<'a> {
    /// Every node (only consulted when no live speaker announces).
    pub nodes: &'a [NodeView],
    /// The speakers run with `--ignore-exclude-lb`.
    pub ignore_exclude: bool,
    /// Nodes whose speaker holds a current Lease.
    pub live: &'a BTreeSet<String>,
    /// Nodes whose speaker reports announcing this Service (layer 2).
    pub announcers: &'a BTreeSet<String>,
    /// Nodes whose speaker reports advertising it to a BGP peer (ServiceBGPStatus).
    pub bgp_advertisers: &'a BTreeSet<String>,
    /// A speaker's report that it is not announced, and why: (node, reason, message).
    pub report: Option<(&'a str, &'a str, &'a str)>,
}

/// The verdict for an IP of pool `pool` held by a Service with `svc_labels`
/// (`local`: `externalTrafficPolicy: Local`).
pub fn judge(cfg: &Config, pool: &str, svc_labels: &Labels, local: bool, sp: &Speakers) -> Verdict {
    let Speakers { nodes, ignore_exclude, live, announcers, bgp_advertisers, report } = *sp;
    let pool_labels = cfg.pools.get(pool).map(|p| p.labels.clone()).unwrap_or_default();
    let advs: Vec<_> = cfg.l2_advertisements.iter().filter(|a| a.covers(pool, &pool_labels, svc_labels)).collect();
    let bgp = cfg.bgp_advertisements.iter().any(|a| a.covers(pool, &pool_labels));
    if advs.is_empty() && !bgp {
        return Verdict {
            announced: false,
            reason: reason::NO_L2_ADVERTISEMENT,
            message: format!(
                "no L2Advertisement selects IPAddressPool {pool} for this Service, nor does a BGPAdvertisement: the IP is allocated but no node announces it"
            ),
        };
    }
    // A report from a node whose speaker is gone (crashed; nobody removed it) is stale.
    let announcing: BTreeSet<String> = announcers.intersection(live).cloned().collect();
    let advertising: BTreeSet<String> = bgp_advertisers.intersection(live).cloned().collect();
    if !announcing.is_empty() || !advertising.is_empty() {
        let mut said = Vec::new();
        if !announcing.is_empty() {
            said.push(format!("announced by {}", list(&announcing)));
        }
        if !advertising.is_empty() {
            said.push(format!("advertised over BGP by {}", list(&advertising)));
        }
        return Verdict { announced: true, reason: reason::ANNOUNCED, message: said.join("; ") };
    }
    if advs.is_empty() {
        let message = if local {
            "no node advertises it over BGP: only nodes with a ready endpoint of the Service do \
             (externalTrafficPolicy Local), and only to BGPPeers whose session is Established \
             (see the BGPPeers' BGPSessionDown events)"
        } else {
            "no node advertises it over BGP: no node that may has an Established session with a BGPPeer \
             (see the BGPPeers' BGPSessionDown events)"
        };
        return Verdict { announced: false, reason: reason::NOT_ANNOUNCED, message: message.into() };
    }
    let adv_names: BTreeSet<String> = advs.iter().map(|a| a.name.clone()).collect();
    let selected: Vec<&NodeView> = nodes.iter().filter(|n| advs.iter().any(|a| a.selects_node(&n.labels))).collect();
    let eligible: BTreeSet<String> = selected
        .iter()
        .filter(|n| !n.network_unavailable && !excluded(&n.labels, ignore_exclude))
        .map(|n| n.name.clone())
        .collect();
    if eligible.is_empty() {
        let message = if selected.is_empty() {
            format!("no node matches the nodeSelectors of L2Advertisement {}", list(&adv_names))
        } else {
            let names = |f: &dyn Fn(&NodeView) -> bool| -> BTreeSet<String> {
                selected.iter().filter(|n| f(n)).map(|n| n.name.clone()).collect()
            };
            let excl = names(&|n| excluded(&n.labels, ignore_exclude));
            let down = names(&|n| n.network_unavailable);
            let mut why = Vec::new();
            if !excl.is_empty() {
                why.push(format!("{} labelled {EXCLUDE_FROM_EXTERNAL_LB_LABEL}", list(&excl)));
            }
            if !down.is_empty() {
                why.push(format!("{} NetworkUnavailable", list(&down)));
            }
            format!(
                "every node L2Advertisement {} selects is kept from announcing: {}",
                list(&adv_names),
                why.join("; ")
            )
        };
        return Verdict { announced: false, reason: reason::NO_ELIGIBLE_NODE, message };
    }
    let running: BTreeSet<String> = eligible.intersection(live).cloned().collect();
    if running.is_empty() {
        return Verdict {
            announced: false,
            reason: reason::NO_LIVE_SPEAKER,
            message: format!("no speaker is running on the nodes that may announce it ({})", list(&eligible)),
        };
    }
    // A live speaker's report of the cause, if it is one the model knows.
    if let Some((node, why, message)) = report.filter(|(n, _, _)| live.contains(*n)) {
        let reason = match why {
            r if r == reason::NO_READY_ENDPOINT => Some(reason::NO_READY_ENDPOINT),
            r if r == reason::INTERFACE_MISSING => Some(reason::INTERFACE_MISSING),
            _ => None,
        };
        if let Some(reason) = reason {
            return Verdict { announced: false, reason, message: format!("{message} (reported by {node})") };
        }
    }
    let message = if local {
        format!(
            "no speaker announces it: with externalTrafficPolicy Local a speaker announces only from a node with a \
             ready endpoint of the Service (nodes that may: {})",
            list(&running)
        )
    } else {
        format!("no speaker announces it yet (nodes that may: {})", list(&running))
    };
    Verdict { announced: false, reason: reason::NOT_ANNOUNCED, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[allow(clippy::too_many_arguments)]
    fn j(
        cfg: &Config,
        pool: &str,
        svc: &Labels,
        nodes: &[NodeView],
        ignore_exclude: bool,
        live: &BTreeSet<String>,
        announcers: &BTreeSet<String>,
        local: bool,
    ) -> Verdict {
        let none = BTreeSet::new();
        judge(
            cfg,
            pool,
            svc,
            local,
            &Speakers { nodes, ignore_exclude, live, announcers, bgp_advertisers: &none, report: None },
        )
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn node(name: &str, pairs: &[(&str, &str)]) -> NodeView {
        NodeView { name: name.into(), labels: labels(pairs), network_unavailable: false }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn config(node_selector: Option<&[(&str, &str)]>) -> Config {
        let mut adv = testing::l2_advertisement("l2");
        if let Some(sel) = node_selector {
            adv.spec.node_selectors = vec![testing::match_labels(sel)];
        }
        Config::build(&[testing::pool("p", &["198.51.100.0/24"])], &[adv], Default::default())
    }

    #[test]
    fn true_only_when_a_speaker_reports_it_naming_the_node() {
        let cfg = config(None);
        let nodes = [node("n1", &[]), node("n2", &[])];
        let v = j(&cfg, "p", &Labels::new(), &nodes, false, &set(&["n1", "n2"]), &set(&["n2"]), false);
        assert_eq!((v.announced, v.reason, v.message.as_str()), (true, reason::ANNOUNCED, "announced by n2"));
        // The report of a speaker whose Lease ran out (it crashed) is not believed.
        let v = judge(
            &cfg,
            "p",
            &Labels::new(),
            false,
            &Speakers {
                nodes: &nodes,
                ignore_exclude: false,
                live: &set(&["n1"]),
                announcers: &set(&["n2"]),
                bgp_advertisers: &set(&[]),
                report: None,
            },
        );
        assert_eq!((v.announced, v.reason), (false, reason::NOT_ANNOUNCED));
        let v = j(&cfg, "p", &Labels::new(), &nodes, false, &set(&["n1", "n2"]), &set(&[]), true);
        assert_eq!((v.announced, v.reason), (false, reason::NOT_ANNOUNCED));
        assert!(v.message.contains("externalTrafficPolicy Local"), "{}", v.message);
    }

    #[test]
    fn bgp_advertisers_count_and_a_bgp_only_pool_says_why_not() {
        use ferrolb_crds::{BGPAdvertisement, BGPAdvertisementSpec};
        let pools = [testing::pool("p", &["198.51.100.0/24"])];
        let cfg = Config::build(&pools, &[], Default::default()).with_bgp(
            "ns",
            &[],
            &[BGPAdvertisement::new("b", BGPAdvertisementSpec::default())],
            &[],
            &[],
        );
        let nodes = [node("n1", &[]), node("n2", &[])];
        let live = set(&["n1", "n2"]);
        let sp = |bgp: &BTreeSet<String>, local: bool| {
            judge(
                &cfg,
                "p",
                &Labels::new(),
                local,
                &Speakers {
                    nodes: &nodes,
                    ignore_exclude: false,
                    live: &live,
                    announcers: &set(&[]),
                    bgp_advertisers: bgp,
                    report: None,
                },
            )
        };
        let v = sp(&set(&["n1", "n2", "gone"]), false);
        assert_eq!((v.announced, v.message.as_str()), (true, "advertised over BGP by n1, n2"));
        let v = sp(&set(&[]), false);
        assert_eq!((v.announced, v.reason), (false, reason::NOT_ANNOUNCED));
        assert!(v.message.contains("Established session with a BGPPeer"), "{}", v.message);
        assert!(sp(&set(&[]), true).message.contains("externalTrafficPolicy Local"));
    }

    #[test]
    fn each_cause_has_its_reason_and_names_what_to_fix() {
        let none = Config::build(&[testing::pool("p", &["198.51.100.0/24"])], &[], Default::default());
        let nodes = [node("n1", &[("zone", "a")])];
        let live = set(&["n1"]);
        let v = judge(
            &none,
            "p",
            &Labels::new(),
            false,
            &Speakers {
                nodes: &nodes,
                ignore_exclude: false,
                live: &live,
                announcers: &set(&[]),
                bgp_advertisers: &set(&[]),
                report: None,
            },
        );
        assert_eq!(v.reason, reason::NO_L2_ADVERTISEMENT);

        let v = j(&config(Some(&[("zone", "b")])), "p", &Labels::new(), &nodes, false, &live, &set(&[]), false);
        assert_eq!(v.reason, reason::NO_ELIGIBLE_NODE);
        assert_eq!(v.message, "no node matches the nodeSelectors of L2Advertisement l2");

        let excl = [node("n1", &[(EXCLUDE_FROM_EXTERNAL_LB_LABEL, "")])];
        let v = judge(
            &config(None),
            "p",
            &Labels::new(),
            false,
            &Speakers {
                nodes: &excl,
                ignore_exclude: false,
                live: &live,
                announcers: &set(&[]),
                bgp_advertisers: &set(&[]),
                report: None,
            },
        );
        assert_eq!(v.reason, reason::NO_ELIGIBLE_NODE);
        assert!(
            v.message.contains("n1 labelled node.kubernetes.io/exclude-from-external-load-balancers"),
            "{}",
            v.message
        );
        // --ignore-exclude-lb: the node may announce.
        let v = judge(
            &config(None),
            "p",
            &Labels::new(),
            false,
            &Speakers {
                nodes: &excl,
                ignore_exclude: true,
                live: &live,
                announcers: &set(&[]),
                bgp_advertisers: &set(&[]),
                report: None,
            },
        );
        assert_eq!(v.reason, reason::NOT_ANNOUNCED);

        let mut down = node("n1", &[]);
        down.network_unavailable = true;
        let v = judge(
            &config(None),
            "p",
            &Labels::new(),
            false,
            &Speakers {
                nodes: &[down],
                ignore_exclude: false,
                live: &live,
                announcers: &set(&[]),
                bgp_advertisers: &set(&[]),
                report: None,
            },
        );
        assert!(v.message.contains("n1 NetworkUnavailable"), "{}", v.message);

        let v = judge(
            &config(None),
            "p",
            &Labels::new(),
            false,
            &Speakers {
                nodes: &nodes,
                ignore_exclude: false,
                live: &set(&[]),
                announcers: &set(&[]),
                bgp_advertisers: &set(&[]),
                report: None,
            },
        );
        assert_eq!(v.reason, reason::NO_LIVE_SPEAKER);
        assert_eq!(v.message, "no speaker is running on the nodes that may announce it (n1)");
    }

    #[test]
    fn a_live_speakers_report_names_the_cause() {
        let cfg = config(None);
        let nodes = [node("n1", &[]), node("n2", &[])];
        let live = set(&["n1", "n2"]);
        let none = set(&[]);
        let sp = |report| Speakers {
            nodes: &nodes,
            ignore_exclude: false,
            live: &live,
            announcers: &none,
            bgp_advertisers: &none,
            report,
        };
        let v = judge(&cfg, "p", &Labels::new(), true, &sp(Some(("n1", reason::NO_READY_ENDPOINT, "no endpoint"))));
        assert_eq!((v.reason, v.message.as_str()), (reason::NO_READY_ENDPOINT, "no endpoint (reported by n1)"));
        let v = judge(&cfg, "p", &Labels::new(), false, &sp(Some(("n2", reason::INTERFACE_MISSING, "no eth9"))));
        assert_eq!(v.reason, reason::INTERFACE_MISSING);
        // From a speaker that is gone, or with a reason the model does not know: not believed.
        let v = judge(&cfg, "p", &Labels::new(), false, &sp(Some(("n9", reason::INTERFACE_MISSING, "no eth9"))));
        assert_eq!(v.reason, reason::NOT_ANNOUNCED);
        let v = judge(&cfg, "p", &Labels::new(), false, &sp(Some(("n1", "Whatever", "x"))));
        assert_eq!(v.reason, reason::NOT_ANNOUNCED);
    }

    #[test]
    fn a_lease_is_current_until_renewal_plus_duration() {
        use k8s_openapi::api::coordination::v1::LeaseSpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        let t = |s: i64| k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + s).unwrap();
        let lease = Lease {
            metadata: kube::api::ObjectMeta { name: Some("n1".into()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some("n1".into()),
                renew_time: Some(MicroTime(t(0))),
                lease_duration_seconds: Some(10),
                ..Default::default()
            }),
        };
        assert!(lease_current(&lease, t(9)));
        assert!(!lease_current(&lease, t(10)));
        assert_eq!(speaker_of(&lease), Some("n1"));
        // Named after n2, held by n1: vouches for nobody.
        let forged = Lease {
            metadata: kube::api::ObjectMeta { name: Some("n2".into()), ..Default::default() },
            ..lease.clone()
        };
        assert!(!lease_current(&forged, t(0)));
        assert_eq!(speaker_of(&forged), None);
        let released = Lease {
            spec: Some(LeaseSpec { holder_identity: Some(String::new()), ..Default::default() }),
            ..Default::default()
        };
        assert!(!lease_current(&released, t(0)));
    }
}
