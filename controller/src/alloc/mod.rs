//! The allocator: which Service holds which IP. Pure and synchronous, no kube
//! types in its API; all state is rebuilt from Service statuses on start.
//!
//! Per pool and family a [`FreeSet`] finds and returns addresses in O(log n)
//! whatever the pool size; per sharing key an index finds the IPs a Service
//! may share without scanning. Every operation is idempotent.

mod free;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub use free::FreeSet;

use ferrolb_crds::conditions::reason;
use ferrolb_model::selector::Labels;
use ferrolb_model::{Config, Family, Pool, from_u128, to_u128};

pub use ferrolb_model::ServiceKey;

/// What decides whether two Services may share an IP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sharing {
    /// The `allow-shared-ip` key, if any.
    pub key: Option<String>,
    /// `(protocol, port)` pairs the Service listens on.
    pub ports: Vec<(String, i32)>,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// The Service's pod selector (compared for `Local`).
    pub selector: Labels,
}

/// Why two Services may not share an IP, or `Ok`.
pub fn compatible(a: &Sharing, b: &Sharing) -> Result<(), String> {
    match (&a.key, &b.key) {
        (Some(x), Some(y)) if x == y => {}
        (Some(x), Some(y)) => return Err(format!("sharing keys differ ({x:?} vs {y:?})")),
        _ => return Err("both Services need the same allow-shared-ip key".into()),
    }
    if a.local != b.local {
        return Err("their externalTrafficPolicy differs".into());
    }
    if a.local && a.selector != b.selector {
        return Err("externalTrafficPolicy is Local and their selectors differ".into());
    }
    if let Some((proto, port)) = a.ports.iter().find(|p| b.ports.contains(p)) {
        return Err(format!("both use port {port}/{proto}"));
    }
    Ok(())
}

/// `spec.ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// One IP, of the first family.
    SingleStack,
    /// Both families when a pool offers both, else the first.
    PreferDualStack,
    /// Both families, or nothing.
    RequireDualStack,
}

/// What a Service asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `namespace/name`.
    pub key: ServiceKey,
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's labels.
    pub labels: Labels,
    /// `spec.ipFamilies`, primary first (never empty).
    pub families: Vec<Family>,
    /// `spec.ipFamilyPolicy`.
    pub policy: Policy,
    /// Requested IPs (annotation or `spec.loadBalancerIP`).
    pub requested: Vec<IpAddr>,
    /// Requested pool (annotation).
    pub pool: Option<String>,
    /// Sharing parameters.
    pub sharing: Sharing,
    /// ferrolb gave the Service its IPs before (its `ferrolb.io/ip-allocated-from-pool`
    /// annotation is there): IPs outside every pool then mean its pool went away, and a
    /// new allocation is due. Without it they were assigned by something else (MetalLB,
    /// before ferrolb took over) and are kept, never silently renumbered.
    pub allocated_before: bool,
}

/// What a Service holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The pool the IPs come from.
    pub pool: String,
    /// The IPs, in the Service's family order.
    pub ips: Vec<IpAddr>,
}

/// Why a Service gets no IP. Messages are shown to operators as they are.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AllocError {
    /// No valid pool admits the Service.
    #[error("no IPAddressPool admits this Service: {0}")]
    NoPoolMatches(String),
    /// Matching pools have no free address.
    #[error("no free {family} address in IPAddressPool(s) {pools}")]
    PoolExhausted {
        /// Pools tried.
        pools: String,
        /// Family that ran out.
        family: &'static str,
    },
    /// A requested IP is in no valid pool (or not in the requested pool).
    #[error("requested IP {ip} is not in {where_}")]
    OutsidePools {
        ip: IpAddr,
        /// `any valid IPAddressPool` or `IPAddressPool x`.
        where_: String,
    },
    /// A requested IP is held by a Service it may not share with.
    #[error("requested IP {ip} is in use by {holder} and cannot be shared: {why}")]
    InUse {
        ip: IpAddr,
        /// Holding Service.
        holder: ServiceKey,
        /// Why sharing is refused.
        why: String,
    },
    /// The requested pool does not exist or is invalid.
    #[error("IPAddressPool {name} {why}")]
    UnknownPool {
        /// Pool name.
        name: String,
        /// `does not exist` or the pool's own error.
        why: String,
    },
    /// `RequireDualStack` but no admitting pool serves both families.
    #[error(
        "ipFamilyPolicy is RequireDualStack but no IPAddressPool admitting this Service has both IPv4 and IPv6 addresses"
    )]
    DualStackUnavailable,
    /// The request contradicts the Service's own spec.
    #[error("{0}")]
    InvalidRequest(String),
    /// The Service holds IPs that something other than ferrolb assigned (MetalLB,
    /// before the switch) and that no pool contains: kept, not announced.
    #[error(
        "{} in no IPAddressPool: assigned before ferrolb managed this Service, kept as it is but not announced; \
         add a pool that contains it, or ask for another IP with the ferrolb.io/loadBalancerIPs annotation",
        crate::reconcile::fmt_ips(.0)
    )]
    OutsidePoolsAdopted(Vec<IpAddr>),
}

impl AllocError {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            AllocError::NoPoolMatches(_) => reason::NO_POOL_MATCHES,
            AllocError::PoolExhausted { .. } => reason::POOL_EXHAUSTED,
            AllocError::OutsidePools { .. } => reason::REQUESTED_IP_OUTSIDE_POOLS,
            AllocError::InUse { .. } => reason::REQUESTED_IP_IN_USE,
            AllocError::UnknownPool { .. } => reason::UNKNOWN_POOL,
            AllocError::DualStackUnavailable => reason::DUAL_STACK_UNAVAILABLE,
            AllocError::InvalidRequest(_) => reason::INVALID_REQUEST,
            AllocError::OutsidePoolsAdopted(_) => reason::IP_OUTSIDE_POOLS,
        }
    }
}

/// Exact address counts of one pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// IPv4 addresses in the pool (buggy ones excluded when avoided).
    pub v4_total: u128,
    /// IPv4 addresses in use.
    pub v4_in_use: u128,
    /// IPv6 addresses in the pool (saturating for `::/0`).
    pub v6_total: u128,
    /// IPv6 addresses in use.
    pub v6_in_use: u128,
}

#[derive(Debug, Clone)]
struct IpUse {
    pool: String,
    holders: Holders,
}

/// The Services holding one IP, sorted by key: one, or a few when shared. A vector
/// sized to fit, because a map's first node costs about a kilobyte per IP (10 MiB at
/// 10,000 Services, measured).
#[derive(Debug, Clone, Default)]
struct Holders(Vec<(ServiceKey, Sharing)>);

impl Holders {
    fn one(key: &str, sharing: &Sharing) -> Self {
        Holders(vec![(ServiceKey::from(key), sharing.clone())])
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    fn insert(&mut self, key: &str, sharing: &Sharing) {
        match self.find(key) {
            Ok(i) => self.0[i].1 = sharing.clone(),
            Err(i) => self.0.insert(i, (ServiceKey::from(key), sharing.clone())),
        }
    }

    fn remove(&mut self, key: &str) -> Option<Sharing> {
        let i = self.find(key).ok()?;
        Some(self.0.remove(i).1)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.0.iter().map(|(k, _)| k)
    }

    fn iter(&self) -> impl Iterator<Item = (&ServiceKey, &Sharing)> {
        self.0.iter().map(|(k, s)| (k, s))
    }
}

/// The allocator state.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    cfg: Config,
    free: BTreeMap<(String, Family), FreeSet>,
    in_use: BTreeMap<(String, Family), u128>,
    ips: BTreeMap<IpAddr, IpUse>,
    shared: BTreeMap<(String, String), BTreeSet<IpAddr>>,
    services: BTreeMap<ServiceKey, Assignment>,
}

impl Allocator {
    /// An allocator with no pools.
    pub fn new() -> Self {
        Self::default()
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Install a new config. Services whose IPs left their pool (pool deleted,
    /// shrunk, invalid, or the IP now in another pool) lose them; their keys are returned.
    pub fn set_config(&mut self, cfg: Config) -> Vec<ServiceKey> {
        let mut free = BTreeMap::new();
        for pool in cfg.pools.values() {
            for fam in [Family::V4, Family::V6] {
                free.insert((pool.name.clone(), fam), FreeSet::new(&pool.ranges, fam, pool.avoid_buggy_ips));
            }
        }
        let mut revoked = BTreeSet::new();
        let mut taken = BTreeSet::new();
        for (ip, u) in &self.ips {
            let still = cfg.pools.get(&u.pool).filter(|p| p.contains(ip)).is_some_and(|p| {
                let ok = !(p.avoid_buggy_ips && ip.is_ipv4() && free::is_buggy_v4(to_u128(ip)));
                ok && free.get_mut(&(p.name.clone(), Family::of(ip))).is_some_and(|f| f.take(to_u128(ip)))
            });
            if still {
                taken.insert(*ip);
            } else {
                revoked.extend(u.holders.keys().cloned());
            }
        }
        // Rebuild usage from the surviving holders.
        let old_ips = std::mem::take(&mut self.ips);
        self.in_use.clear();
        self.shared.clear();
        self.free = free;
        self.cfg = cfg;
        for key in &revoked {
            self.services.remove(key);
        }
        for (ip, u) in old_ips {
            let mut holders = u.holders;
            holders.0.retain(|(k, _)| !revoked.contains(k));
            if holders.is_empty() {
                // Still in its pool but every holder was revoked: give it back.
                if taken.contains(&ip)
                    && let Some(f) = self.free.get_mut(&(u.pool.clone(), Family::of(&ip)))
                {
                    f.put(to_u128(&ip));
                }
                continue;
            }
            *self.in_use.entry((u.pool.clone(), Family::of(&ip))).or_default() += 1;
            if let Some(k) = holders.iter().next().and_then(|(_, s)| s.key.clone()) {
                self.shared.entry((u.pool.clone(), k)).or_default().insert(ip);
            }
            self.ips.insert(ip, IpUse { pool: u.pool, holders });
        }
        // A Service that lost any IP lost all of them above: it is reallocated as a whole.
        revoked.into_iter().collect()
    }

    /// What `key` holds.
    pub fn assignment(&self, key: &str) -> Option<&Assignment> {
        self.services.get(key)
    }

    /// Every Service that holds IPs.
    pub fn assigned(&self) -> impl Iterator<Item = (&ServiceKey, &Assignment)> {
        self.services.iter()
    }

    /// The sharing parameters `key` holds its IPs with (`None` when it holds none).
    pub fn sharing(&self, key: &str) -> Option<&Sharing> {
        let ip = self.services.get(key)?.ips.first()?;
        let holders = &self.ips.get(ip)?.holders;
        holders.find(key).ok().map(|i| &holders.0[i].1)
    }

    /// The Services sharing `ip`.
    pub fn holders(&self, ip: &IpAddr) -> Vec<ServiceKey> {
        self.ips.get(ip).map(|u| u.holders.keys().cloned().collect()).unwrap_or_default()
    }

    /// Exact counts for a pool.
    pub fn stats(&self, pool: &str) -> PoolStats {
        let get = |fam| {
            let used = self.in_use.get(&(pool.to_string(), fam)).copied().unwrap_or(0);
            let free = self.free.get(&(pool.to_string(), fam)).map(|f| f.available()).unwrap_or(0);
            (free.saturating_add(used), used)
        };
        let (v4_total, v4_in_use) = get(Family::V4);
        let (v6_total, v6_in_use) = get(Family::V6);
        PoolStats { v4_total, v4_in_use, v6_total, v6_in_use }
    }

    /// Release everything `key` holds; returns what it held.
    pub fn release(&mut self, key: &str) -> Option<Assignment> {
        let a = self.services.remove(key)?;
        for ip in &a.ips {
            self.unclaim(ip, key);
        }
        Some(a)
    }

    fn unclaim(&mut self, ip: &IpAddr, key: &str) {
        let Some(u) = self.ips.get_mut(ip) else { return };
        let Some(sh) = u.holders.remove(key) else { return };
        if !u.holders.is_empty() {
            return;
        }
        let pool = u.pool.clone();
        self.ips.remove(ip);
        let fam = Family::of(ip);
        if let Some(f) = self.free.get_mut(&(pool.clone(), fam)) {
            f.put(to_u128(ip));
        }
        if let Some(n) = self.in_use.get_mut(&(pool.clone(), fam)) {
            *n = n.saturating_sub(1);
        }
        if let Some(k) = sh.key
            && let Some(set) = self.shared.get_mut(&(pool.clone(), k.clone()))
        {
            set.remove(ip);
            if set.is_empty() {
                self.shared.remove(&(pool, k));
            }
        }
    }

    /// Record `key` as a holder of `ip` in `pool`; the caller checked it is free or shareable.
    fn claim(&mut self, ip: IpAddr, pool: &str, key: &str, sharing: &Sharing) {
        let fam = Family::of(&ip);
        match self.ips.get_mut(&ip) {
            Some(u) => {
                u.holders.insert(key, sharing);
            }
            None => {
                if let Some(f) = self.free.get_mut(&(pool.to_string(), fam)) {
                    f.take(to_u128(&ip));
                }
                *self.in_use.entry((pool.to_string(), fam)).or_default() += 1;
                self.ips.insert(ip, IpUse { pool: pool.to_string(), holders: Holders::one(key, sharing) });
            }
        }
        if let Some(k) = &sharing.key {
            self.shared.entry((pool.to_string(), k.clone())).or_default().insert(ip);
        }
    }

    /// Whether `key` (with `sharing`) may take `ip`: free, or shared compatibly with every holder.
    fn can_take(&self, ip: &IpAddr, key: &str, sharing: &Sharing) -> Result<(), AllocError> {
        let Some(u) = self.ips.get(ip) else { return Ok(()) };
        for (holder, sh) in u.holders.iter().filter(|(h, _)| h.as_str() != key) {
            compatible(sharing, sh).map_err(|why| AllocError::InUse { ip: *ip, holder: holder.clone(), why })?;
        }
        Ok(())
    }

    fn wanted(&self, req: &Request) -> Vec<Family> {
        let mut f = req.families.clone();
        if f.is_empty() {
            f.push(Family::V4);
        }
        match req.policy {
            Policy::SingleStack => f.truncate(1),
            Policy::PreferDualStack | Policy::RequireDualStack => {
                if f.len() == 1 {
                    f.push(if f[0] == Family::V4 { Family::V6 } else { Family::V4 });
                }
                f.truncate(2);
            }
        }
        f
    }

    fn admits(&self, pool: &Pool, req: &Request) -> bool {
        pool.admits(&req.namespace, &self.cfg.namespace_labels(&req.namespace), &req.labels)
    }

    /// Give `req` its IPs: keep what it holds (or held before a restart, `current`) while still
    /// valid, honour requested IPs and pools, else allocate. Idempotent.
    pub fn assign(&mut self, req: &Request, current: &[IpAddr]) -> Result<Assignment, AllocError> {
        if !req.requested.is_empty() {
            return self.assign_requested(req, current);
        }
        let held = self.services.get(&req.key).cloned();
        if held.is_none()
            && !req.allocated_before
            && !current.is_empty()
            && current.iter().all(|ip| self.cfg.pool_of(ip).is_none())
        {
            return Err(AllocError::OutsidePoolsAdopted(current.to_vec()));
        }
        let candidate = held.clone().or_else(|| {
            let pool = current.first().and_then(|ip| self.cfg.pool_of(ip))?.name.clone();
            Some(Assignment { pool, ips: current.to_vec() })
        });
        if let Some(a) = candidate.filter(|a| !a.ips.is_empty())
            && self.still_valid(req, &a).is_ok()
        {
            if held.as_ref() != Some(&a) {
                self.release(&req.key);
                for ip in &a.ips {
                    self.claim(*ip, &a.pool, &req.key, &req.sharing);
                }
                self.services.insert(req.key.clone(), a.clone());
            } else {
                // Sharing parameters may have changed while compatible: keep them current.
                for ip in &a.ips {
                    self.claim(*ip, &a.pool, &req.key, &req.sharing);
                }
            }
            return self.complete_families(req, a);
        }
        self.release(&req.key);
        self.allocate_fresh(req)
    }

    fn still_valid(&self, req: &Request, a: &Assignment) -> Result<(), String> {
        let pool = self.cfg.pools.get(&a.pool).ok_or("pool gone")?;
        if let Some(p) = &req.pool
            && *p != a.pool
        {
            return Err("another pool requested".into());
        }
        // `autoAssign: false` only keeps the pool from being chosen for new IPs (as in
        // MetalLB): what a Service holds from it stays, whether the pool was turned off
        // auto-assignment since or another implementation gave the IP (the switch from
        // MetalLB must not renumber). A stale pool keeps what it serves, whoever holds it.
        if !pool.stale && !self.admits(pool, req) {
            return Err("pool no longer admits the Service".into());
        }
        let wanted = self.wanted(req);
        let mut seen = BTreeSet::new();
        for ip in &a.ips {
            if !pool.contains(ip) || !wanted.contains(&Family::of(ip)) || !seen.insert(Family::of(ip)) {
                return Err(format!("{ip} no longer fits"));
            }
            if self.ips.get(ip).is_none_or(|u| u.pool == a.pool) {
                self.can_take(ip, &req.key, &req.sharing).map_err(|e| e.to_string())?;
            } else {
                return Err(format!("{ip} belongs to another pool"));
            }
            if !self.ips.contains_key(ip)
                && !self.free.get(&(a.pool.clone(), Family::of(ip))).is_some_and(|f| f.is_free(to_u128(ip)))
            {
                return Err(format!("{ip} is not free"));
            }
        }
        if wanted.first().is_some_and(|f| !seen.contains(f)) && req.policy != Policy::PreferDualStack {
            return Err("primary family missing".into());
        }
        if req.policy == Policy::PreferDualStack && !seen.contains(&wanted[0]) && !pool.has_family(wanted[1]) {
            return Err("primary family missing".into());
        }
        Ok(())
    }

    /// A dual-stack Service whose pool gained its other family gets it, from the same pool.
    fn complete_families(&mut self, req: &Request, mut a: Assignment) -> Result<Assignment, AllocError> {
        let pool = self.cfg.pools.get(&a.pool).cloned().expect("validated above");
        if req.policy == Policy::SingleStack || pool.stale {
            self.services.insert(req.key.clone(), a.clone());
            return Ok(a);
        }
        for fam in self.wanted(req) {
            if a.ips.iter().any(|ip| Family::of(ip) == fam) || !pool.has_family(fam) {
                continue;
            }
            match self.pick(&pool, fam, req) {
                Some(ip) => {
                    self.claim(ip, &pool.name, &req.key, &req.sharing);
                    a.ips.push(ip);
                }
                None if req.policy == Policy::RequireDualStack => {
                    self.release(&req.key);
                    return Err(AllocError::PoolExhausted { pools: pool.name.clone(), family: fam.as_str() });
                }
                None => {}
            }
        }
        a.ips.sort_by_key(|ip| req.families.iter().position(|f| *f == Family::of(ip)).unwrap_or(usize::MAX));
        self.services.insert(req.key.clone(), a.clone());
        Ok(a)
    }

    /// An IP of `family` in `pool` for `req`: a compatible shared one first, else the lowest free.
    fn pick(&self, pool: &Pool, family: Family, req: &Request) -> Option<IpAddr> {
        if let Some(k) = &req.sharing.key
            && let Some(set) = self.shared.get(&(pool.name.clone(), k.clone()))
        {
            let found =
                set.iter().find(|ip| Family::of(ip) == family && self.can_take(ip, &req.key, &req.sharing).is_ok());
            if let Some(ip) = found {
                return Some(*ip);
            }
        }
        // Only look: claim() takes it from the free set and counts it.
        let n = self.free.get(&(pool.name.clone(), family))?.first()?;
        Some(from_u128(family, n))
    }

    fn allocate_fresh(&mut self, req: &Request) -> Result<Assignment, AllocError> {
        let candidates: Vec<Pool> = match &req.pool {
            Some(name) => {
                let usable = self.cfg.pools.get(name).filter(|p| !p.stale);
                let pool = usable.cloned().ok_or_else(|| AllocError::UnknownPool {
                    name: name.clone(),
                    why: match self.cfg.invalid_pools.get(name) {
                        Some(e) => format!("is invalid: {e}"),
                        None => "does not exist".into(),
                    },
                })?;
                if !self.admits(&pool, req) {
                    return Err(AllocError::NoPoolMatches(format!(
                        "the requested IPAddressPool {name} does not admit namespace {} with these labels",
                        req.namespace
                    )));
                }
                vec![pool]
            }
            None => {
                self.cfg.ordered_pools().into_iter().filter(|p| p.auto_assign && self.admits(p, req)).cloned().collect()
            }
        };
        if candidates.is_empty() {
            let why = if self.cfg.pools.is_empty() {
                "there are no valid IPAddressPools".to_string()
            } else {
                format!("none of the auto-assigning pools admits namespace {} with these labels", req.namespace)
            };
            return Err(AllocError::NoPoolMatches(why));
        }
        let wanted = self.wanted(req);
        let attempts: Vec<Vec<Family>> = match req.policy {
            Policy::SingleStack | Policy::RequireDualStack => vec![wanted.clone()],
            Policy::PreferDualStack => vec![wanted.clone(), vec![wanted[0]]],
        };
        let mut exhausted: Option<(Vec<String>, &'static str)> = None;
        let mut any_with_families = false;
        for fams in &attempts {
            for pool in candidates.iter().filter(|p| fams.iter().all(|f| p.has_family(*f))) {
                any_with_families = true;
                let mut got = Vec::new();
                for fam in fams {
                    match self.pick(pool, *fam, req) {
                        Some(ip) => {
                            self.claim(ip, &pool.name, &req.key, &req.sharing);
                            got.push(ip);
                        }
                        None => {
                            for ip in &got {
                                self.unclaim(ip, &req.key);
                            }
                            let e = exhausted.get_or_insert((Vec::new(), fam.as_str()));
                            e.0.push(pool.name.clone());
                            got.clear();
                            break;
                        }
                    }
                }
                if !got.is_empty() {
                    let a = Assignment { pool: pool.name.clone(), ips: got };
                    self.services.insert(req.key.clone(), a.clone());
                    return Ok(a);
                }
            }
        }
        if !any_with_families {
            return Err(match req.policy {
                Policy::RequireDualStack => AllocError::DualStackUnavailable,
                _ => AllocError::NoPoolMatches(format!("no admitting pool has {} addresses", wanted[0].as_str())),
            });
        }
        let (pools, family) = exhausted.expect("a pool with the families was tried");
        Err(AllocError::PoolExhausted { pools: pools.join(", "), family })
    }

    fn assign_requested(&mut self, req: &Request, current: &[IpAddr]) -> Result<Assignment, AllocError> {
        let wanted = self.wanted(req);
        let mut fams = BTreeSet::new();
        for ip in &req.requested {
            let f = Family::of(ip);
            if !wanted.contains(&f) {
                let have: Vec<&str> = wanted.iter().map(|f| f.as_str()).collect();
                return Err(AllocError::InvalidRequest(format!(
                    "requested IP {ip} is {} but the Service's IP families are [{}]",
                    f.as_str(),
                    have.join(", ")
                )));
            }
            if !fams.insert(f) {
                return Err(AllocError::InvalidRequest(format!("more than one {} address requested", f.as_str())));
            }
        }
        if req.policy == Policy::RequireDualStack && fams.len() < 2 {
            return Err(AllocError::InvalidRequest(
                "ipFamilyPolicy is RequireDualStack but only one IP was requested".into(),
            ));
        }
        let mut pool_name: Option<String> = None;
        for ip in &req.requested {
            let pool = self
                .cfg
                .pool_of(ip)
                .ok_or_else(|| AllocError::OutsidePools { ip: *ip, where_: "any valid IPAddressPool".into() })?;
            if let Some(p) = &req.pool
                && *p != pool.name
            {
                return Err(AllocError::OutsidePools { ip: *ip, where_: format!("the requested IPAddressPool {p}") });
            }
            let holds = current.contains(ip) || self.services.get(&req.key).is_some_and(|a| a.ips.contains(ip));
            if pool.stale && !holds {
                let why = self.cfg.invalid_pools.get(&pool.name).map(|e| e.to_string()).unwrap_or_default();
                return Err(AllocError::UnknownPool {
                    name: pool.name.clone(),
                    why: format!("is invalid, serving only the IPs it had assigned: {why}"),
                });
            }
            if pool.avoid_buggy_ips && ip.is_ipv4() && free::is_buggy_v4(to_u128(ip)) {
                return Err(AllocError::InvalidRequest(format!(
                    "requested IP {ip} ends in .0 or .255 and pool {} avoids those",
                    pool.name
                )));
            }
            if let Some(prev) = &pool_name
                && *prev != pool.name
            {
                return Err(AllocError::InvalidRequest(format!(
                    "requested IPs come from different pools ({prev} and {})",
                    pool.name
                )));
            }
            if !pool.stale && !self.admits(pool, req) {
                return Err(AllocError::NoPoolMatches(format!(
                    "IPAddressPool {} holding {ip} does not admit namespace {} with these labels",
                    pool.name, req.namespace
                )));
            }
            pool_name = Some(pool.name.clone());
            self.can_take(ip, &req.key, &req.sharing)?;
        }
        let pool = pool_name.expect("at least one requested IP");
        let mut ips = req.requested.clone();
        ips.sort_by_key(|ip| req.families.iter().position(|f| *f == Family::of(ip)).unwrap_or(usize::MAX));
        let a = Assignment { pool: pool.clone(), ips };
        self.release(&req.key);
        for ip in &a.ips {
            self.claim(*ip, &pool, &req.key, &req.sharing);
        }
        self.services.insert(req.key.clone(), a.clone());
        Ok(a)
    }
}

#[cfg(test)]
mod tests;
