//! The speaker process: the membership Lease, the caches, then one loop that
//! plans, announces and reports whenever anything it depends on changes, and a
//! graceful stop that hands the IPs over.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrolb_common::events::{Event, EventType, Events};
use ferrolb_common::metallb::{MetalLb, merged};
use ferrolb_common::{AbortOnDrop, all, reflect};
use ferrolb_crds::conditions::reason;
use ferrolb_crds::{
    BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement, SPEAKER_FIELD_MANAGER,
    ServiceBGPStatus, ServiceL2Status,
};
use ferrolb_model::{Config, ServiceKey};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{Notify, watch};

use crate::effects::Effects;
use crate::forward::{self, Forwarding};
use crate::l2::Announcer;
use crate::l2::io::SysIo;
use crate::l2::responders::{ConflictSink, Responders};
use crate::membership::{self, Membership};
use crate::metrics::Metrics;
use crate::plan::{Plan, Snapshot, lease_alive, plan};
use crate::settings::Settings;
use crate::writer::{Wanted, Writer};
use crate::{handover, lease};

/// The caches the plan is computed from.
struct Caches {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    pools: Store<IPAddressPool>,
    adverts: Store<L2Advertisement>,
    leases: Store<Lease>,
    statuses: Store<ServiceL2Status>,
    bgp_peers: Store<BGPPeer>,
    bgp_adverts: Store<BGPAdvertisement>,
    communities: Store<Community>,
    bfd_profiles: Store<BFDProfile>,
    /// `kubernetes.io/basic-auth` Secrets of ferrolb's namespace (BGP passwords).
    secrets: Store<Secret>,
    /// This node's ServiceBGPStatuses.
    bgp_statuses: Store<ServiceBGPStatus>,
    /// metallb compat: MetalLB's objects, read with ferrolb's.
    metallb: Option<MetalLb>,
    namespace: String,
    _watches: AbortOnDrop,
}

impl Caches {
    async fn start(
        client: &Client,
        namespace: &str,
        metallb: Option<&str>,
        node: &str,
        changed: &Arc<Notify>,
    ) -> anyhow::Result<Caches> {
        let c = client;
        let (services, t1) = reflect(Api::<Service>::all(c.clone()), changed.clone());
        let (slices, t2) = reflect(Api::<EndpointSlice>::all(c.clone()), changed.clone());
        let (nodes, t3) = reflect(Api::<Node>::all(c.clone()), changed.clone());
        let (pools, t4) = reflect(Api::<IPAddressPool>::namespaced(c.clone(), namespace), changed.clone());
        let (adverts, t5) = reflect(Api::<L2Advertisement>::namespaced(c.clone(), namespace), changed.clone());
        // Only the speakers' Leases: the controller's leader Lease lives in the same namespace.
        let (leases, t6) = ferrolb_common::reflect_with(
            Api::<Lease>::namespaced(c.clone(), namespace),
            kube::runtime::watcher::Config::default().labels(crate::lease::SELECTOR),
            changed.clone(),
        );
        let (statuses, t7) = reflect(Api::<ServiceL2Status>::namespaced(c.clone(), namespace), changed.clone());
        let (bgp_peers, t8) = reflect(Api::<BGPPeer>::namespaced(c.clone(), namespace), changed.clone());
        let (bgp_adverts, t9) = reflect(Api::<BGPAdvertisement>::namespaced(c.clone(), namespace), changed.clone());
        let (communities, t10) = reflect(Api::<Community>::namespaced(c.clone(), namespace), changed.clone());
        let (bfd_profiles, t13) = reflect(Api::<BFDProfile>::namespaced(c.clone(), namespace), changed.clone());
        let (secrets, t11) = ferrolb_common::reflect_with(
            Api::<Secret>::namespaced(c.clone(), namespace),
            kube::runtime::watcher::Config::default().fields("type=kubernetes.io/basic-auth"),
            changed.clone(),
        );
        let (bgp_statuses, t12) = ferrolb_common::reflect_with(
            Api::<ServiceBGPStatus>::namespaced(c.clone(), namespace),
            kube::runtime::watcher::Config::default()
                .labels(&format!("{}={node}", ferrolb_crds::annotations::NODE_LABEL)),
            changed.clone(),
        );
        let c = Caches {
            services,
            slices,
            nodes,
            pools,
            adverts,
            leases,
            statuses,
            bgp_peers,
            bgp_adverts,
            communities,
            bfd_profiles,
            secrets,
            bgp_statuses,
            metallb: match metallb {
                Some(from) => Some(MetalLb::start(client, from, namespace, changed.clone(), false).await),
                None => None,
            },
            namespace: namespace.to_string(),
            _watches: AbortOnDrop(vec![t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13]),
        };
        c.services.wait_until_ready().await?;
        c.slices.wait_until_ready().await?;
        c.nodes.wait_until_ready().await?;
        c.pools.wait_until_ready().await?;
        c.adverts.wait_until_ready().await?;
        c.leases.wait_until_ready().await?;
        c.statuses.wait_until_ready().await?;
        c.bgp_peers.wait_until_ready().await?;
        c.bgp_adverts.wait_until_ready().await?;
        c.communities.wait_until_ready().await?;
        c.bfd_profiles.wait_until_ready().await?;
        c.secrets.wait_until_ready().await?;
        c.bgp_statuses.wait_until_ready().await?;
        if let Some(m) = &c.metallb {
            m.synced(Duration::from_secs(3600)).await?;
        }
        Ok(c)
    }

    fn snapshot(&self, node: &str, membership: Option<&Membership>) -> Snapshot {
        let pools: Vec<IPAddressPool> = merged(self.metallb.as_ref(), all(&self.pools));
        let adverts: Vec<L2Advertisement> = merged(self.metallb.as_ref(), all(&self.adverts));
        Snapshot {
            services: self.services.state(),
            slices: self.slices.state(),
            nodes: self.nodes.state(),
            config: Config::build(&pools, &adverts, Default::default()).with_bgp(
                &self.namespace,
                &merged(self.metallb.as_ref(), all(&self.bgp_peers)),
                &merged(self.metallb.as_ref(), all(&self.bgp_adverts)),
                &merged(self.metallb.as_ref(), all(&self.communities)),
                &merged(self.metallb.as_ref(), all(&self.bfd_profiles)),
            ),
            leases: all(&self.leases),
            statuses: all(&self.statuses),
            liveness: membership.map(|m| m.liveness(node, Instant::now())).unwrap_or_default(),
            claims: membership.map(|m| m.claims(node, Instant::now())).unwrap_or_default(),
        }
    }
}

impl Caches {
    /// The `password` key of each basic-auth Secret (`None`: the Secret lacks it).
    fn passwords(&self) -> BTreeMap<String, Option<String>> {
        self.secrets
            .state()
            .iter()
            .map(|s| {
                let pw = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get("password"))
                    .and_then(|b| String::from_utf8(b.0.clone()).ok())
                    .filter(|p| !p.is_empty());
                (s.name_any(), pw)
            })
            .collect()
    }
}

/// Run the speaker until `shutdown` fires. `ready` turns true once it holds its
/// Lease, has its caches and answers on at least one interface.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let node = settings.node.clone();
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let health = crate::api::Health::new(metrics.api_failures.clone());
    let spec = lease::Spec { duration: settings.lease_duration, ring: settings.heartbeats.is_some() };
    if !lease::acquire(&lease_api, &node, spec, &health, &mut shutdown).await {
        return Ok(());
    }
    let renewal = lease::spawn_renewal(
        lease_api.clone(),
        node.clone(),
        spec,
        metrics.lease_renewal_failures.clone(),
        health.clone(),
    );
    let changed = Arc::new(Notify::new());
    let caches =
        Caches::start(&client, &settings.namespace, settings.metallb_namespace.as_deref(), &node, &changed).await?;
    let status_api: Api<ServiceL2Status> = Api::namespaced(client.clone(), &settings.namespace);

    let mut announcer = Announcer::new(SysIo::default(), settings.gratuitous);
    let (conflict_tx, conflicts) = std::sync::mpsc::channel();
    let mut responders = Responders::new(ConflictSink { tx: conflict_tx, wake: changed.clone() });
    // The interfaces first, so that the first heartbeat already says whether this node
    // can announce.
    let first = responders.refresh(&settings.exclude_interfaces, &mut announcer, &metrics);
    metrics.interfaces.set(responders.names().len() as i64);
    let events = Events::new(client.clone(), SPEAKER_FIELD_MANAGER, &node);
    let (membership, mut heartbeat_task) = match &settings.heartbeats {
        Some(hb) => {
            let m = Arc::new(Membership::new(&node, hb.timing));
            m.ready.store(!responders.is_empty(), Ordering::Relaxed);
            let socket = membership::socket::bind(hb.port)
                .with_context(|| format!("binding the memberlist port {} (UDP)", hb.port))?;
            let task = membership::socket::spawn(
                socket,
                membership::socket::Loop {
                    settings: hb.clone(),
                    membership: m.clone(),
                    peers: Box::new(peer_addrs(node.clone(), hb.port, caches.nodes.clone(), caches.leases.clone())),
                    changed: changed.clone(),
                    metrics: metrics.clone(),
                    on_mismatch: mismatch_event(&node, events.clone(), caches.nodes.clone()),
                },
            )
            .context("starting the heartbeat thread")?;
            tracing::info!(port = hb.port, interval = ?hb.timing.interval, suspect_after = ?hb.timing.suspect_after, "heartbeats on");
            (Some(m), Some(task))
        }
        None => (None, None),
    };
    let (writer, writer_task) = Writer::spawn(
        crate::writer::Ctx {
            events: events.clone(),
            services: caches.services.clone(),
            api: status_api.clone(),
            statuses: caches.statuses.clone(),
            bgp_api: Api::namespaced(client.clone(), &settings.namespace),
            bgp_statuses: caches.bgp_statuses.clone(),
            namespace: settings.namespace.clone(),
            node: node.clone(),
            health: health.clone(),
        },
        metrics.api_failures.with_label_values(&["event_dropped"]),
    );
    let mut sessions = crate::bgp::Sessions::new(metrics.clone(), changed.clone());
    let mut bgp_reported = crate::bgp::Reported::new();
    let mut bgp_advertised: BTreeSet<IpAddr> = BTreeSet::new();
    let mut effects = Effects::new(&node, writer.clone(), metrics.clone(), membership.clone());
    effects.apply(first, &Plan::default());
    let links_changed = Arc::new(Notify::new());
    let link_watch = tokio::spawn({
        let n = links_changed.clone();
        async move {
            if let Err(e) = ferrolb_speaker_sys::watch_links(n).await {
                tracing::warn!(error = %e, "no netlink link notifications; rescanning interfaces every 5 s only");
            }
        }
    });
    let helpers = AbortOnDrop(vec![renewal, link_watch]);
    let mut forwarded: Option<BTreeSet<forward::Rule>> = None;
    let mut rescan = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    let mut last_wanted: BTreeSet<IpAddr> = BTreeSet::new();
    tracing::info!(node = %node, "speaker running");
    loop {
        ready.store(!responders.is_empty(), Ordering::SeqCst);
        // The announcer's next frame, or the end of a rejoin window (new announcements
        // may start then), whichever comes first.
        let rejoin_end = membership.as_deref().and_then(|m| m.rejoin_deadline(Instant::now()));
        let due = announcer.next_due().into_iter().chain(rejoin_end).min();
        let sleep_due = async move {
            match due {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed.notified() => {}
            _ = links_changed.notified() => { rescan = true; }
            _ = tick.tick() => {
                ticks += 1;
                rescan |= ticks % 5 == 0;
            }
            _ = sleep_due => {}
            _ = shutdown.changed() => break,
        }
        // Interfaces: at start, when netlink reports a link change, and every 5 s as a safety net.
        let mut notes = Vec::new();
        let rescanned = rescan || responders.is_empty();
        if rescanned {
            notes.extend(responders.refresh(&settings.exclude_interfaces, &mut announcer, &metrics));
            rescan = false;
            // Set here, before any API call of this pass: a node cut off from the API
            // server would otherwise report its interfaces only once those calls end.
            metrics.interfaces.set(responders.names().len() as i64);
            // Data-path liveness: without a usable interface this node tells its peers it
            // cannot announce, so they take its IPs over now rather than after a timeout.
            if let Some(m) = &membership {
                let can = !responders.is_empty();
                if can != m.ready.swap(can, Ordering::Relaxed) {
                    if can {
                        m.rejoin(Instant::now());
                    }
                    tracing::info!(ready = can, "announcing interfaces changed; telling peers");
                    m.send_now.notify_one();
                }
            }
        }
        let snap = caches.snapshot(&node, membership.as_deref());
        let now = chrono::Utc::now();
        metrics.members.set(snap.leases.iter().filter(|l| lease_alive(l, now)).count() as i64);
        let p = plan(&snap, settings.lb_class.as_deref(), settings.rules(), now);
        let (here, elsewhere, nowhere) = p.counts(&node);
        for (who, n) in [("self", here), ("other", elsewhere), ("none", nowhere)] {
            metrics.planned.with_label_values(&[who]).set(n as i64);
        }
        metrics.usable_nodes.set(p.usable_nodes.len() as i64);
        // BGP: every session this node should have, with its routes.
        let (routes, addrs) =
            crate::bgp::node_routes(&snap, &node, settings.lb_class.as_deref(), settings.ignore_exclude_lb);
        let (want_sessions, refused) =
            crate::bgp::wanted(&node, &addrs, &snap.config.bgp_peers, &routes, &caches.passwords());
        sessions.apply(want_sessions);
        let mut down = sessions.down_reasons();
        down.extend(refused);
        let up = sessions.report();
        for (peer, is_up, why) in crate::bgp::transitions(&mut bgp_reported, &up, &down) {
            publish_session_event(&events, &caches, &node, &peer, is_up, why);
        }
        let advertised: BTreeSet<IpAddr> =
            routes.ips.iter().filter(|(_, peers)| !peers.is_disjoint(&up)).map(|(ip, _)| *ip).collect();
        for ip in bgp_advertised.difference(&advertised) {
            let _ = metrics.bgp_advertised.remove_label_values(&[&ip.to_string()]);
        }
        for ip in advertised.difference(&bgp_advertised) {
            metrics.bgp_advertised.with_label_values(&[&ip.to_string()]).set(1);
        }
        let bgp_mine = crate::bgp::services_advertised(&snap.services, &routes, &up);
        bgp_advertised = advertised;
        let bgp_ips: BTreeSet<IpAddr> = routes.ips.keys().copied().collect();
        let mut desired = p.desired_on(&node, &responders.names());
        if membership.as_deref().is_some_and(|m| m.rejoining(Instant::now())) {
            // Back from a lost link: keep what is announced, start nothing new yet (the
            // loop wakes at the window's end).
            desired.ips.retain(|ip, _| announcer.table().get(ip).is_some());
        }
        let wanted: BTreeSet<IpAddr> = desired.ips.keys().copied().collect();
        if wanted != last_wanted {
            tracing::debug!(
                added = ?wanted.difference(&last_wanted).collect::<Vec<_>>(),
                removed = ?last_wanted.difference(&wanted).collect::<Vec<_>>(),
                liveness = ?snap.liveness,
                claims = ?snap.claims,
                "this node's IPs changed"
            );
            last_wanted = wanted.clone();
        }
        let mut program = |ips: &BTreeSet<IpAddr>| {
            let want = forward::rules(ips, &snap.services);
            if forwarded.as_ref() != Some(&want) {
                match forward::apply(&want) {
                    Ok(()) => forwarded = Some(want),
                    Err(e) => tracing::warn!(error = %e, "could not program nftables forwarding (CAP_NET_ADMIN?)"),
                }
            }
        };
        // Forward a VIP's traffic before its first gratuitous ARP/NA draws clients here,
        // and stop only once it is no longer announced: the rules cover both sets while
        // the announcer switches.
        if settings.forwarding == Forwarding::NodePort {
            program(&wanted.iter().chain(announcer.table().ips()).chain(&bgp_ips).copied().collect());
        }
        notes.extend(announcer.apply(&desired.ips, Instant::now()));
        notes.extend(announcer.tick(Instant::now()));
        if settings.forwarding == Forwarding::NodePort {
            program(&wanted.union(&bgp_ips).copied().collect());
        }
        // Events and statuses go to the writer task: no API call delays this loop.
        effects.apply(notes, &p);
        let defended: Vec<_> = conflicts.try_iter().collect();
        effects.conflicts(defended, &p);
        if rescanned {
            // Per-IP series of IPs no longer announced (a late count can recreate one).
            let table = announcer.table();
            metrics.forget_ips(|ip| ip.parse::<IpAddr>().is_ok_and(|ip| table.get(&ip).is_some()));
        }
        effects.missing(&desired.missing);
        let mut reports: BTreeMap<ServiceKey, (&'static str, String)> = desired
            .interface_missing
            .iter()
            .map(|(k, m)| (k.clone(), (reason::INTERFACE_MISSING, m.clone())))
            .collect();
        for (k, (reporter, m)) in &p.no_endpoint {
            if *reporter == node {
                reports.insert(k.clone(), (reason::NO_READY_ENDPOINT, m.clone()));
            }
        }
        writer.want(Wanted { mine: p.services_on(&desired.ips), reports, bgp: bgp_mine });
    }
    ready.store(false, Ordering::SeqCst);
    // BGP first: the routers withdraw this node's routes (or, with graceful restart,
    // keep them) while it still forwards.
    let kept_for_restart = sessions.shutdown(Duration::from_secs(3)).await;
    // Graceful: hand over, then stop answering, clean up, give the Lease back.
    if let (Some(m), Some(task)) = (&membership, &mut heartbeat_task) {
        let p = || {
            plan(&caches.snapshot(&node, Some(m)), settings.lb_class.as_deref(), settings.rules(), chrono::Utc::now())
        };
        let outcome = handover::hand_over(m, &node, p).await;
        task.stop();
        // Where an operator looks after a rollout: `kubectl get events` on the Node.
        if let Some(n) = caches.nodes.get(&ObjectRef::new(&node))
            && let Err(e) = health
                .call("publish the handover Event", events.publish(&outcome.event(&node), &n.object_ref(&())))
                .await
        {
            tracing::warn!(error = %e, "could not publish the handover event");
        }
    }
    let stopped = announcer.apply(&Default::default(), Instant::now());
    effects.apply(stopped, &Plan::default());
    drop(responders);
    // The writer's last word: no status names this node. Bounded: a gone API server
    // must not keep the speaker from stopping.
    writer.want(Wanted::default());
    drop((effects, writer));
    if tokio::time::timeout(crate::api::TIMEOUT, writer_task).await.is_err() {
        tracing::warn!("the last status writes did not finish in time");
    }
    if settings.forwarding == Forwarding::NodePort && kept_for_restart {
        // Routers that agreed to graceful restart keep sending this node traffic for
        // the advertised IPs until the next speaker is back: its rules stay until that
        // speaker replaces them.
        tracing::info!("BGP routes kept for a graceful restart: the nftables table stays for the next speaker");
    } else if settings.forwarding == Forwarding::NodePort
        && let Err(e) = forward::remove()
    {
        tracing::warn!(error = %e, "could not remove the nftables table");
    }
    drop(helpers);
    if let Err(e) = health.call("release the membership Lease", lease::write(&lease_api, &node, spec, None)).await {
        tracing::warn!(error = %e, "could not release the membership Lease");
    }
    Ok(())
}

/// An Event on the BGPPeer for a session of this node that came up or went down.
fn publish_session_event(events: &Events, caches: &Caches, node: &str, peer: &str, up: bool, why: Option<String>) {
    let Some(obj) = caches.bgp_peers.get(&ObjectRef::new(peer).within(&caches.namespace)) else { return };
    let (type_, reason, note) = if up {
        (
            EventType::Normal,
            ferrolb_crds::conditions::event::BGP_SESSION_ESTABLISHED,
            format!("node {node}: session Established"),
        )
    } else {
        let why = why.unwrap_or_default();
        tracing::warn!(%peer, %why, "BGP session down");
        (EventType::Warning, ferrolb_crds::conditions::event::BGP_SESSION_DOWN, format!("node {node}: {why}"))
    };
    let ev = Event { type_, reason: reason.into(), note: Some(note), action: "Peer".into(), secondary: None };
    let (events, regarding) = (events.clone(), obj.object_ref(&()));
    tokio::spawn(async move {
        if let Err(e) = events.publish(&ev, &regarding).await {
            tracing::warn!(error = %e, "could not publish a BGP session event");
        }
    });
}

/// A Warning Event on this node's Node when another speaker's heartbeats fail
/// authentication (published from the speaker's main runtime; the heartbeat thread
/// does not wait for the API).
fn mismatch_event(me: &str, events: Events, nodes: Store<Node>) -> membership::socket::OnMismatch {
    let me = me.to_string();
    let rt = tokio::runtime::Handle::current();
    Box::new(move |peer: &str, addr: IpAddr| {
        tracing::warn!(%peer, %addr, "heartbeats from this member fail authentication: the memberlist keys differ; both sides judge each other by Lease expiry");
        let Some(n) = nodes.get(&ObjectRef::new(&me)) else { return };
        let ev = Event {
            type_: EventType::Warning,
            reason: ferrolb_crds::conditions::event::MEMBERLIST_KEY_MISMATCH.into(),
            note: Some(format!(
                "heartbeats from {peer} ({addr}) fail authentication: its memberlist key differs from {me}'s; \
                 failure detection between them falls back to Lease expiry. Restart the speakers so that all read the same Secret"
            )),
            action: "Heartbeat".into(),
            secondary: None,
        };
        let events = events.clone();
        rt.spawn(async move {
            if let Err(e) = events.publish(&ev, &n.object_ref(&())).await {
                tracing::warn!(error = %e, "could not publish the key mismatch event");
            }
        });
    })
}

/// Where the other members listen: each Node holding a speaker Lease, at its first
/// InternalIP.
fn peer_addrs(
    me: String,
    port: u16,
    nodes: Store<Node>,
    leases: Store<Lease>,
) -> impl Fn() -> Vec<membership::socket::Target> + Send + 'static {
    use membership::detector::{RING_ANNOTATION, RING_VALUE};
    move || {
        // Member -> whether its Lease says it speaks the ring protocol.
        let members: BTreeMap<String, bool> = leases
            .state()
            .iter()
            .filter_map(|l| {
                let ring = l.annotations().get(RING_ANNOTATION).is_some_and(|v| v == RING_VALUE);
                ferrolb_model::announce::speaker_of(l).map(|n| (n.to_string(), ring))
            })
            .collect();
        nodes
            .state()
            .iter()
            .filter(|n| n.name_any() != me)
            .filter_map(|n| {
                let ring = *members.get(&n.name_any())?;
                let addrs = n.status.as_ref()?.addresses.as_ref()?;
                let ip = addrs.iter().find(|a| a.type_ == "InternalIP")?.address.parse::<IpAddr>().ok()?;
                Some(membership::socket::Target { name: n.name_any(), addr: SocketAddr::new(ip, port), ring })
            })
            .collect()
    }
}
