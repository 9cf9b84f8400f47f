//! The configuration readers: pools, advertisements and namespaces, cached, and
//! the validated [`Config`] rebuilt from them on every change. A Service whose IP
//! left its pool is told why before it is reallocated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_common::events::{Event, EventType};
use ferrolb_common::metallb::{MetalLb, merged};
use ferrolb_common::{AbortOnDrop, all, lock, reflect};
use ferrolb_crds::conditions::event;
use ferrolb_crds::{BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement};
use ferrolb_model::{Config, ingress_ips};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{Notify, mpsc};

use crate::reconcile::Ctx;

/// The caches the config is built from; their watches end when this is dropped.
pub struct Readers {
    /// IPAddressPools of the controller's namespace.
    pub pools: Store<IPAddressPool>,
    /// L2Advertisements of the controller's namespace.
    pub advertisements: Store<L2Advertisement>,
    /// Namespaces, for pools' namespace selectors.
    pub namespaces: Store<Namespace>,
    /// BGPPeers of the controller's namespace.
    pub bgp_peers: Store<BGPPeer>,
    /// BGPAdvertisements of the controller's namespace.
    pub bgp_advertisements: Store<BGPAdvertisement>,
    /// Communities of the controller's namespace.
    pub communities: Store<Community>,
    /// BFDProfiles of the controller's namespace.
    pub bfd_profiles: Store<BFDProfile>,
    /// metallb compat: MetalLB's objects, read with these.
    pub metallb: Option<MetalLb>,
    namespace: String,
    _watches: AbortOnDrop,
}

impl Readers {
    /// Start watching; `changed` is poked on every event.
    pub async fn start(client: &Client, namespace: &str, metallb: Option<&str>, changed: Arc<Notify>) -> Readers {
        let (pools, t1) = reflect(Api::<IPAddressPool>::namespaced(client.clone(), namespace), changed.clone());
        let (advertisements, t2) =
            reflect(Api::<L2Advertisement>::namespaced(client.clone(), namespace), changed.clone());
        let (namespaces, t3) = reflect(Api::<Namespace>::all(client.clone()), changed.clone());
        let (bgp_peers, t4) = reflect(Api::<BGPPeer>::namespaced(client.clone(), namespace), changed.clone());
        let (bgp_advertisements, t5) =
            reflect(Api::<BGPAdvertisement>::namespaced(client.clone(), namespace), changed.clone());
        let (communities, t6) = reflect(Api::<Community>::namespaced(client.clone(), namespace), changed.clone());
        let (bfd_profiles, t7) = reflect(Api::<BFDProfile>::namespaced(client.clone(), namespace), changed.clone());
        let metallb = match metallb {
            Some(from) => Some(MetalLb::start(client, from, namespace, changed, true).await),
            None => None,
        };
        Readers {
            pools,
            advertisements,
            namespaces,
            bgp_peers,
            bgp_advertisements,
            communities,
            bfd_profiles,
            metallb,
            namespace: namespace.to_string(),
            _watches: AbortOnDrop(vec![t1, t2, t3, t4, t5, t6, t7]),
        }
    }

    /// Wait until every cache holds a full list.
    pub async fn synced(&self, within: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(within, async {
            self.pools.wait_until_ready().await?;
            self.advertisements.wait_until_ready().await?;
            self.namespaces.wait_until_ready().await?;
            self.bgp_peers.wait_until_ready().await?;
            self.bgp_advertisements.wait_until_ready().await?;
            self.communities.wait_until_ready().await?;
            self.bfd_profiles.wait_until_ready().await?;
            if let Some(m) = &self.metallb {
                m.synced(within).await?;
            }
            Ok::<_, anyhow::Error>(())
        })
        .await
        .map_err(|_| anyhow::anyhow!("caches did not sync within {within:?}"))?
    }

    /// The config as the caches say now.
    pub fn config(&self) -> Config {
        let ns = self.namespaces.state().iter().map(|n| (n.name_any(), n.labels().clone())).collect::<BTreeMap<_, _>>();
        let cfg = Config::build(
            &merged(self.metallb.as_ref(), all(&self.pools)),
            &merged(self.metallb.as_ref(), all(&self.advertisements)),
            ns,
        )
        .with_bgp(
            &self.namespace,
            &merged(self.metallb.as_ref(), all(&self.bgp_peers)),
            &merged(self.metallb.as_ref(), all(&self.bgp_advertisements)),
            &merged(self.metallb.as_ref(), all(&self.communities)),
            &merged(self.metallb.as_ref(), all(&self.bfd_profiles)),
        );
        if let Some(m) = &self.metallb {
            for (name, e) in &cfg.invalid_pools {
                m.invalid("IPAddressPool", name, &e.to_string());
            }
            let invalid = [
                ("L2Advertisement", &cfg.invalid_advertisements),
                ("BGPAdvertisement", &cfg.invalid_bgp_advertisements),
                ("BGPPeer", &cfg.invalid_bgp_peers),
                ("BFDProfile", &cfg.invalid_bfd_profiles),
                ("Community", &cfg.invalid_communities),
            ];
            for (kind, map) in invalid {
                for (name, why) in map {
                    m.invalid(kind, name, why);
                }
            }
        }
        for e in cfg.invalid_pools.values() {
            tracing::warn!(error = %e, "invalid IPAddressPool skipped");
        }
        for (name, why) in &cfg.invalid_advertisements {
            tracing::warn!(advertisement = %name, error = %why, "invalid L2Advertisement skipped");
        }
        for (name, why) in &cfg.invalid_bgp_advertisements {
            tracing::warn!(advertisement = %name, error = %why, "invalid BGPAdvertisement skipped");
        }
        for (name, why) in &cfg.invalid_bgp_peers {
            tracing::warn!(peer = %name, error = %why, "invalid BGPPeer skipped");
        }
        for (name, why) in &cfg.invalid_bfd_profiles {
            tracing::warn!(profile = %name, error = %why, "invalid BFDProfile: the peers naming it are not used");
        }
        for (name, why) in &cfg.invalid_communities {
            tracing::warn!(community = %name, error = %why, "invalid Community aliases skipped");
        }
        cfg
    }
}

/// Rebuild the config whenever a pool, advertisement or namespace changes; then
/// reconcile every Service.
pub async fn config_loop(
    ctx: Arc<Ctx>,
    readers: Arc<Readers>,
    svcs: Store<Service>,
    changed: Arc<Notify>,
    reconcile_all: mpsc::UnboundedSender<()>,
) -> anyhow::Result<()> {
    loop {
        changed.notified().await;
        let cfg = readers.config();
        for p in readers.metallb.as_ref().map(|m| m.take_problems()).unwrap_or_default() {
            let ev = Event {
                type_: EventType::Warning,
                reason: event::METALLB_NOT_HONOURED.into(),
                note: Some(p.message.clone()),
                action: "Configure".into(),
                secondary: None,
            };
            let _ = ctx.events.publish(&ev, &p.regarding.object_ref()).await;
        }
        let revoked = {
            let mut alloc = lock(&ctx.alloc);
            if *alloc.config() == cfg {
                continue;
            }
            alloc.set_config(cfg)
        };
        for key in &revoked {
            if let Some(svc) = svcs.get(&key.object_ref()) {
                let ev = Event {
                    type_: EventType::Warning,
                    reason: event::IP_REVOKED.into(),
                    note: Some(format!(
                        "{} left its IPAddressPool (deleted or shrunk); reallocating",
                        ingress_ips(&svc).iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
                    )),
                    action: "Allocate".into(),
                    secondary: None,
                };
                let _ = ctx.events.publish(&ev, &svc.object_ref(&())).await;
            }
        }
        ctx.pools_dirty.notify_one();
        if reconcile_all.send(()).is_err() {
            anyhow::bail!("service controller gone");
        }
    }
}
