//! What the validating webhook answers, decided purely from the object under review
//! and the other objects of the namespace, with the same model the controller and
//! the speakers run: a write the webhook lets through is one they accept, and one it
//! refuses would be `Valid=False` at run time, for the same reason in the same words.

use std::collections::BTreeMap;

use ferrolb_crds::{BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement};
use ferrolb_model::Config;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde_json::{Value, json};

/// The answer to one review.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Refusal message; `None` admits.
    pub denied: Option<String>,
    /// Warnings kubectl prints either way.
    pub warnings: Vec<String>,
}

/// The namespace's objects as they would be with `candidate` stored: the others, and
/// the candidate as the newest of its kind (a new object has no creation time yet, and
/// the model orders overlapping pools oldest first).
fn with_candidate<K: kube::Resource + Clone>(
    candidate: &K,
    existing: &[K],
    now: k8s_openapi::jiff::Timestamp,
) -> Vec<K> {
    let name = candidate.meta().name.clone();
    let mut all: Vec<K> = existing.iter().filter(|o| o.meta().name != name).cloned().collect();
    let mut obj = candidate.clone();
    if obj.meta().creation_timestamp.is_none() {
        let latest = all.iter().filter_map(|o| o.meta().creation_timestamp.as_ref().map(|t| t.0)).max();
        let at = latest.map_or(now, |l| l.max(now)) + k8s_openapi::jiff::SignedDuration::from_secs(1);
        obj.meta_mut().creation_timestamp = Some(Time(at));
    }
    all.push(obj);
    all
}

/// Review an IPAddressPool about to be stored, against the namespace's other pools:
/// its syntax, its selectors, and overlap with the ranges the others serve or were
/// accepted with (the model's precedence: the pool that holds a range keeps it).
pub fn ip_address_pool(
    candidate: &IPAddressPool,
    existing: &[IPAddressPool],
    now: k8s_openapi::jiff::Timestamp,
) -> Verdict {
    let name = candidate.name_any();
    let cfg = Config::build(&with_candidate(candidate, existing, now), &[], BTreeMap::new());
    Verdict { denied: cfg.invalid_pools.get(&name).map(|e| e.to_string()), warnings: Vec::new() }
}

/// Review an L2Advertisement: its selectors and preferences (refused as the model
/// would refuse them), and, as warnings, pools it names that do not exist.
pub fn l2_advertisement(
    candidate: &L2Advertisement,
    existing: &[L2Advertisement],
    pools: &[IPAddressPool],
    now: k8s_openapi::jiff::Timestamp,
) -> Verdict {
    let name = candidate.name_any();
    let cfg = Config::build(pools, &with_candidate(candidate, existing, now), BTreeMap::new());
    let denied = cfg.invalid_advertisements.get(&name).map(|why| format!("L2Advertisement {name}: {why}"));
    let ns = candidate.namespace().unwrap_or_default();
    let warnings = missing_pools(&candidate.spec.ip_address_pools, pools, &ns, "announced");
    Verdict { denied, warnings }
}

/// A warning for each of an advertisement's `spec.ipAddressPools` that names no pool of
/// `namespace` (nothing is `done` for it until it exists): not a refusal, so that
/// advertisement and pool can be applied in either order.
fn missing_pools(named: &[String], pools: &[IPAddressPool], namespace: &str, done: &str) -> Vec<String> {
    named
        .iter()
        .enumerate()
        .filter(|(_, p)| !pools.iter().any(|x| x.name_any() == **p))
        .map(|(i, p)| {
            format!(
                "spec.ipAddressPools[{i}]: IPAddressPool {p:?} does not exist in namespace {namespace}; nothing is {done} for it until it does"
            )
        })
        .collect()
}

/// Review a BGPPeer: every field as the speakers would read it, with the namespace's
/// BFDProfiles. A profile that does not exist yet is a warning, not a refusal (GitOps
/// tools apply objects in any order): the peer stays unused, Valid False, until it does.
pub fn bgp_peer(candidate: &BGPPeer, namespace: &str, bfd_profiles: &[BFDProfile]) -> Verdict {
    use ferrolb_model::bgp::{BfdProfile, BgpPeer};
    let name = candidate.name_any();
    let mut profiles = BfdProfile::parse_all(bfd_profiles);
    let mut warnings = Vec::new();
    if let Some(b) = &candidate.spec.bfd_profile
        && !profiles.contains_key(b)
    {
        warnings.push(format!(
            "spec.bfdProfile: BFDProfile {b:?} does not exist in {namespace}; the speakers do not use this peer until it does"
        ));
        let stand_in = BfdProfile::parse(&BFDProfile::new(b, Default::default()));
        profiles.insert(b.clone(), stand_in);
    }
    let denied = BgpPeer::parse(candidate, namespace, &profiles).err().map(|why| format!("BGPPeer {name}: {why}"));
    Verdict { denied, warnings }
}

/// Review a BGPAdvertisement: selectors, communities (aliases from the namespace's
/// Communities) and aggregation lengths against the pools it covers; pools it names
/// that do not exist are warnings.
pub fn bgp_advertisement(
    candidate: &BGPAdvertisement,
    pools: &[IPAddressPool],
    communities: &[Community],
    namespace: &str,
) -> Verdict {
    let name = candidate.name_any();
    let cfg = Config::build(pools, &[], BTreeMap::new()).with_bgp(
        namespace,
        &[],
        std::slice::from_ref(candidate),
        communities,
        &[],
    );
    let denied = cfg.invalid_bgp_advertisements.get(&name).map(|why| format!("BGPAdvertisement {name}: {why}"));
    let warnings = missing_pools(&candidate.spec.ip_address_pools, pools, namespace, "advertised");
    Verdict { denied, warnings }
}

/// The `AdmissionReview` answering `review` (its uid echoed) with `verdict`; refusals
/// are 403 Forbidden, as controller-runtime's webhooks (MetalLB's) answer.
pub fn respond(review: &Value, verdict: &Verdict) -> Value {
    let mut response = json!({"uid": review["request"]["uid"], "allowed": verdict.denied.is_none()});
    if let Some(msg) = &verdict.denied {
        response["status"] = json!({"code": 403, "reason": "Forbidden", "message": msg});
    }
    if !verdict.warnings.is_empty() {
        response["warnings"] = json!(verdict.warnings);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_model::testing;

    fn at(secs: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn created(mut p: IPAddressPool, secs: i64) -> IPAddressPool {
        p.metadata.creation_timestamp = Some(Time(at(secs)));
        p
    }

    #[test]
    fn a_new_pool_overlapping_one_in_use_is_refused_whatever_its_name() {
        let prod = created(testing::pool("prod", &["198.51.100.0/24"]), 0);
        let newcomer = testing::pool("aaa", &["198.51.100.128/25"]);
        let v = ip_address_pool(&newcomer, std::slice::from_ref(&prod), at(100));
        let msg = v.denied.expect("refused");
        assert!(msg.contains("spec.addresses[0]") && msg.contains("IPAddressPool prod"), "{msg}");
        let apart = testing::pool("aaa", &["203.0.113.0/24"]);
        assert_eq!(ip_address_pool(&apart, std::slice::from_ref(&prod), at(100)), Verdict::default());
        // An edit of prod itself is checked against the others, not against itself.
        let grown = created(testing::pool("prod", &["198.51.100.0/23"]), 0);
        assert_eq!(ip_address_pool(&grown, &[prod], at(100)).denied, None);
    }

    #[test]
    fn bgp_objects_are_refused_with_the_field_at_fault() {
        use ferrolb_crds::{BGPAdvertisementSpec, BGPPeerSpec, CommunityAlias, CommunitySpec};
        let spec =
            BGPPeerSpec { my_asn: 64513, peer_asn: 64512, peer_address: "198.51.100.1".into(), ..Default::default() };
        assert_eq!(bgp_peer(&BGPPeer::new("r", spec.clone()), "ferrolb-system", &[]), Verdict::default());
        let short = BGPPeerSpec { hold_time: Some("1s".into()), ..spec.clone() };
        let msg = bgp_peer(&BGPPeer::new("r", short), "ferrolb-system", &[]).denied.expect("refused");
        assert!(msg.starts_with("BGPPeer r: spec.holdTime"), "{msg}");
        // A BFD profile: missing is a warning, invalid a refusal naming both objects.
        let with_bfd = BGPPeer::new("r", BGPPeerSpec { bfd_profile: Some("fast".into()), ..spec });
        let v = bgp_peer(&with_bfd, "ferrolb-system", &[]);
        assert_eq!(v.denied, None);
        assert!(v.warnings[0].contains("BFDProfile \"fast\" does not exist"), "{v:?}");
        let echo =
            BFDProfile::new("fast", ferrolb_crds::BFDProfileSpec { echo_mode: Some(true), ..Default::default() });
        let msg = bgp_peer(&with_bfd, "ferrolb-system", &[echo]).denied.expect("refused");
        assert!(msg.contains("spec.bfdProfile \"fast\"") && msg.contains("spec.echoMode"), "{msg}");
        let fine = BFDProfile::new("fast", Default::default());
        assert_eq!(bgp_peer(&with_bfd, "ferrolb-system", &[fine]), Verdict::default());
        let pools = [testing::pool("p", &["198.51.100.64/27"])];
        let alias = Community::new(
            "c",
            CommunitySpec { communities: vec![CommunityAlias { name: "edge".into(), value: "64513:1".into() }] },
        );
        let adv = |spec: BGPAdvertisementSpec| BGPAdvertisement::new("a", spec);
        let ok = adv(BGPAdvertisementSpec { communities: vec!["edge".into()], ..Default::default() });
        assert_eq!(bgp_advertisement(&ok, &pools, std::slice::from_ref(&alias), "ns").denied, None);
        let v = bgp_advertisement(&ok, &pools, &[], "ns");
        assert!(v.denied.expect("refused").contains("spec.communities[0] \"edge\""));
        let wide = adv(BGPAdvertisementSpec { aggregation_length: Some(24), ..Default::default() });
        let msg = bgp_advertisement(&wide, &pools, &[], "ns").denied.expect("refused");
        assert!(msg.contains("spec.aggregationLength 24") && msg.contains("IPAddressPool p"), "{msg}");
        let missing = adv(BGPAdvertisementSpec { ip_address_pools: vec!["q".into()], ..Default::default() });
        assert_eq!(bgp_advertisement(&missing, &pools, &[], "ns").warnings.len(), 1);
    }

    #[test]
    fn syntax_errors_name_the_field() {
        let reversed = testing::pool("r", &["198.51.100.20-198.51.100.10"]);
        let msg = ip_address_pool(&reversed, &[], at(0)).denied.expect("refused");
        assert!(msg.contains("spec.addresses[0]"), "{msg}");
        let empty = testing::pool("e", &[]);
        assert!(ip_address_pool(&empty, &[], at(0)).denied.is_some());
    }

    #[test]
    fn advertisements_with_bad_selectors_are_refused_and_unknown_pools_warned() {
        let mut adv = testing::l2_advertisement("a");
        adv.spec.ip_address_pools = vec!["nope".into()];
        let v = l2_advertisement(&adv, &[], &[testing::pool("p", &["198.51.100.0/24"])], at(0));
        assert_eq!(v.denied, None);
        assert_eq!(v.warnings.len(), 1);
        assert!(v.warnings[0].starts_with("spec.ipAddressPools[0]: IPAddressPool \"nope\" does not exist"), "{v:?}");
        adv.spec.node_selectors = vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_expressions: Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: "zone".into(),
                operator: "Bogus".into(),
                values: None,
            }]),
            ..Default::default()
        }];
        let msg = l2_advertisement(&adv, &[], &[], at(0)).denied.expect("refused");
        assert!(msg.contains("spec.nodeSelectors[0].matchExpressions[0].operator"), "{msg}");
    }

    #[test]
    fn the_response_echoes_the_uid_and_carries_refusal_and_warnings() {
        let review = json!({"request": {"uid": "u-1"}});
        let ok = respond(&review, &Verdict { denied: None, warnings: vec!["w".into()] });
        assert_eq!(ok["response"], json!({"uid": "u-1", "allowed": true, "warnings": ["w"]}));
        let no = respond(&review, &Verdict { denied: Some("why".into()), warnings: vec![] });
        assert_eq!(no["response"]["status"]["message"], "why");
        assert_eq!(no["response"]["allowed"], false);
    }
}
