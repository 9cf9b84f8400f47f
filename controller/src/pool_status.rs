//! Pool and advertisement status: exact address counts and a `Valid` condition
//! saying why an object is not used. Bursts are coalesced (a thousand
//! allocations make one write per pool), and only changes are written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_common::events::{Event, EventType, Events};
use ferrolb_common::lock;
use ferrolb_crds::conditions::{event, pool as pool_cond, reason, status};
use ferrolb_crds::{
    API_VERSION, BFDProfile, BGPAdvertisement, BGPPeer, IPAddressPool, IPAddressPoolStatus, L2Advertisement,
    saturating_count,
};
use ferrolb_model::conditions::{self, Want, same};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::alloc::Allocator;
use crate::configuration::Readers;
use crate::reconcile::Ctx;

/// The status a pool should have: exact counts and `Valid`, plus the error when invalid.
/// `None` while the pool is not in the allocator's config yet (a change in flight).
pub fn desired(p: &IPAddressPool, alloc: &Allocator, now: &Time) -> Option<(IPAddressPoolStatus, Option<String>)> {
    let cfg = alloc.config();
    let name = p.name_any();
    let (counts, effective, err) = match (cfg.pools.get(&name), cfg.invalid_pools.get(&name)) {
        (None, None) => return None,
        (None, Some(e)) => ((0, 0, 0, 0), Vec::new(), Some(e.to_string())),
        (Some(pool), err) => {
            let s = alloc.stats(&name);
            let counts = (s.v4_in_use, s.v6_in_use, s.v4_total - s.v4_in_use, s.v6_total - s.v6_in_use);
            let err = err.map(|e| {
                format!(
                    "{e}; serving its last valid addresses ({}) for the IPs assigned there, allocating none",
                    pool.effective_addresses().join(", ")
                )
            });
            (counts, pool.effective_addresses(), err)
        }
    };
    let reason_of = |name: &str| cfg.invalid_pools.get(name).map(|e| e.reason()).unwrap_or(reason::POOL_VALID);
    let want = match &err {
        Some(e) => Want::new(pool_cond::VALID, false, reason_of(&name), e.clone()),
        None => Want::new(pool_cond::VALID, true, reason::POOL_VALID, "the pool is valid and in use"),
    };
    let current = p.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let status = IPAddressPoolStatus {
        assigned_ipv4: saturating_count(counts.0),
        assigned_ipv6: saturating_count(counts.1),
        available_ipv4: saturating_count(counts.2),
        available_ipv6: saturating_count(counts.3),
        effective_addresses: effective,
        conditions: vec![want.set(current, p.metadata.generation, now)],
    };
    Some((status, err))
}

/// Equal counts and conditions, transition times aside.
fn same_status(a: &IPAddressPoolStatus, b: &IPAddressPoolStatus) -> bool {
    (a.assigned_ipv4, a.assigned_ipv6, a.available_ipv4, a.available_ipv6)
        == (b.assigned_ipv4, b.assigned_ipv6, b.available_ipv4, b.available_ipv6)
        && a.effective_addresses == b.effective_addresses
        && same(&a.conditions, &b.conditions)
}

/// Write `Valid` on every object of `store` whose condition differs: False with the
/// reason from `invalid` (keyed by name), True with `ok` otherwise.
async fn write_valid<K>(
    ctx: &Ctx,
    pp: &PatchParams,
    api: &Api<K>,
    store: &Store<K>,
    invalid: &std::collections::BTreeMap<String, String>,
    ok: &str,
    now: &Time,
) where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    for obj in store.state() {
        let name = obj.name_any();
        let want = match invalid.get(&name) {
            Some(why) => Want::new(pool_cond::VALID, false, reason::INVALID_SPEC, why.clone()),
            None => Want::new(pool_cond::VALID, true, reason::ADVERTISEMENT_VALID, ok),
        };
        let current: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> = serde_json::to_value(&*obj)
            .ok()
            .and_then(|v| serde_json::from_value(v["status"]["conditions"].clone()).ok())
            .unwrap_or_default();
        if current.iter().any(|c| c.type_ == want.type_ && c.status == want.status() && c.message == want.message) {
            continue;
        }
        let body = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()),
                          "status": {"conditions": [want.set(&current, None, now)]}});
        ctx.metrics.updates.inc();
        if let Err(e) = api.patch_status(&name, pp, &Patch::Apply(&body)).await {
            ctx.metrics.update_errors.inc();
            tracing::warn!(kind = %K::kind(&()), %name, error = %e, "could not write the Valid condition");
        }
    }
}

/// Keep every pool's status (counts and `Valid`) and every advertisement's `Valid`
/// current, writing only changes.
pub async fn pool_status_loop(
    client: Client,
    namespace: String,
    ctx: Arc<Ctx>,
    readers: Arc<Readers>,
    events: Events,
    dirty: Arc<Notify>,
) -> anyhow::Result<()> {
    let pools = readers.pools.clone();
    let api: Api<IPAddressPool> = Api::namespaced(client.clone(), &namespace);
    let adv_api: Api<L2Advertisement> = Api::namespaced(client.clone(), &namespace);
    let pp = PatchParams::apply(&ctx.field_manager).force();
    let mut written: HashMap<String, IPAddressPoolStatus> = HashMap::new();
    loop {
        let now = conditions::now();
        let desired: Vec<(IPAddressPool, IPAddressPoolStatus, Option<String>)> = {
            let alloc = lock(&ctx.alloc);
            pools
                .state()
                .iter()
                .filter_map(|p| desired(p, &alloc, &now).map(|(st, err)| ((**p).clone(), st, err)))
                .collect()
        };
        for (p, st, err) in desired {
            let name = p.name_any();
            let current = p.status.clone().unwrap_or_default();
            if same_status(&current, &st) || written.get(&name).is_some_and(|w| same_status(w, &st)) {
                continue;
            }
            let was_valid =
                current.conditions.iter().find(|c| c.type_ == pool_cond::VALID).map(|c| c.status == status::TRUE);
            let body = json!({"apiVersion": API_VERSION, "kind": "IPAddressPool", "status": st});
            ctx.metrics.updates.inc();
            match api.patch_status(&name, &pp, &Patch::Apply(&body)).await {
                Ok(_) => {
                    written.insert(name.clone(), st);
                }
                Err(e) => {
                    ctx.metrics.update_errors.inc();
                    tracing::warn!(pool = %name, error = %e, "could not write pool status");
                }
            }
            if let Some(e) = err
                && was_valid != Some(false)
            {
                let ev = Event {
                    type_: EventType::Warning,
                    reason: event::INVALID_POOL.into(),
                    note: Some(e),
                    action: "Validate".into(),
                    secondary: None,
                };
                let _ = events.publish(&ev, &p.object_ref(&())).await;
            }
        }
        // Advertisements and peers: a Valid condition saying why one is ignored.
        let cfg = lock(&ctx.alloc).config().clone();
        let invalid_ok = "the advertisement is valid";
        write_valid(&ctx, &pp, &adv_api, &readers.advertisements, &cfg.invalid_advertisements, invalid_ok, &now).await;
        let bgp_adv_api: Api<BGPAdvertisement> = Api::namespaced(client.clone(), &namespace);
        let bgp_invalid = &cfg.invalid_bgp_advertisements;
        write_valid(&ctx, &pp, &bgp_adv_api, &readers.bgp_advertisements, bgp_invalid, invalid_ok, &now).await;
        let peer_api: Api<BGPPeer> = Api::namespaced(client.clone(), &namespace);
        let peer_ok = "the peer is valid; the speakers of the nodes it selects open sessions with it";
        write_valid(&ctx, &pp, &peer_api, &readers.bgp_peers, &cfg.invalid_bgp_peers, peer_ok, &now).await;
        let bfd_api: Api<BFDProfile> = Api::namespaced(client.clone(), &namespace);
        let bfd_ok = "the profile is valid; the peers naming it run BFD with these timers";
        write_valid(&ctx, &pp, &bfd_api, &readers.bfd_profiles, &cfg.invalid_bfd_profiles, bfd_ok, &now).await;
        // Wait for the next change, then let a burst settle briefly before writing.
        dirty.notified().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
