//! Condition types, condition reasons and event reasons.
//!
//! Conditions use the standard `metav1.Condition` shape. Reasons are
//! CamelCase, as the API conventions require, so that tools can match on them.

/// Condition status values (`metav1.ConditionStatus`).
pub mod status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
    /// Not known yet.
    pub const UNKNOWN: &str = "Unknown";
}

/// Condition types ferrolb writes on Services (`status.conditions`).
pub mod service {
    /// Whether the Service holds every IP it asked for.
    pub const ALLOCATED: &str = "ferrolb.io/Allocated";
    /// Whether an IP of the Service is announced (an L2Advertisement covers its pool).
    pub const ANNOUNCED: &str = "ferrolb.io/Announced";
    /// Whether the Service's EndpointSlices list a ready endpoint: when not, its IPs
    /// stay announced and connections to them are refused (kube-proxy rejects them).
    pub const ENDPOINTS_READY: &str = "ferrolb.io/EndpointsReady";
}

/// Condition types ferrolb writes on IPAddressPools.
pub mod pool {
    /// Whether the pool's spec is usable; `False` pools are skipped by the allocator.
    pub const VALID: &str = "Valid";
}

/// Condition reasons.
pub mod reason {
    /// The Service holds its IPs.
    pub const IP_ALLOCATED: &str = "IPAllocated";
    /// No pool selects the Service (namespace, labels, autoAssign).
    pub const NO_POOL_MATCHES: &str = "NoPoolMatches";
    /// Pools match but none has a free address.
    pub const POOL_EXHAUSTED: &str = "PoolExhausted";
    /// A requested IP lies outside every pool.
    pub const REQUESTED_IP_OUTSIDE_POOLS: &str = "RequestedIPOutsidePools";
    /// The Service holds IPs assigned before ferrolb managed it that no pool contains.
    pub const IP_OUTSIDE_POOLS: &str = "IPOutsidePools";
    /// A requested IP is held by a Service it may not share with.
    pub const REQUESTED_IP_IN_USE: &str = "RequestedIPInUse";
    /// A ferrolb annotation on the Service cannot be understood.
    pub const INVALID_ANNOTATION: &str = "InvalidAnnotation";
    /// The Service's own spec makes the request impossible (e.g. families).
    pub const INVALID_REQUEST: &str = "InvalidRequest";
    /// `RequireDualStack` but no pool serves both families for the Service.
    pub const DUAL_STACK_UNAVAILABLE: &str = "DualStackUnavailable";
    /// The named pool does not exist or is invalid.
    pub const UNKNOWN_POOL: &str = "UnknownPool";
    /// A speaker reports announcing the Service's IP (its ServiceL2Status).
    pub const ANNOUNCED: &str = "Announced";
    /// Advertisements cover the pool, but no node may announce it: none matches their
    /// node selectors, or all that do are excluded or NetworkUnavailable.
    pub const NO_ELIGIBLE_NODE: &str = "NoEligibleNode";
    /// No speaker holds a current Lease on a node that may announce the IP.
    pub const NO_LIVE_SPEAKER: &str = "NoLiveSpeaker";
    /// Speakers could announce the IP but none reports doing so (yet; with
    /// `externalTrafficPolicy: Local`, only a node with a ready endpoint does).
    pub const NOT_ANNOUNCED: &str = "NotAnnounced";
    /// `externalTrafficPolicy: Local` and no node that may announce has a ready
    /// endpoint of the Service (a speaker's report); on `ferrolb.io/EndpointsReady`:
    /// no ready endpoint at all.
    pub const NO_READY_ENDPOINT: &str = "NoReadyEndpoint";
    /// The Service's EndpointSlices list a ready endpoint.
    pub const ENDPOINTS_READY: &str = "EndpointsReady";
    /// The elected node lacks every interface the advertisement names (its speaker's
    /// report names them).
    pub const INTERFACE_MISSING: &str = "InterfaceMissing";
    /// No L2Advertisement covers the Service's pool: allocated but never announced.
    pub const NO_L2_ADVERTISEMENT: &str = "NoL2Advertisement";
    /// A field of the object's spec is invalid (the message names it): not used.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The advertisement's selectors parse: it is used.
    pub const ADVERTISEMENT_VALID: &str = "Valid";
    /// The pool spec parses and does not overlap another pool.
    pub const POOL_VALID: &str = "PoolValid";
    /// An entry of `spec.addresses` is not a CIDR or range.
    pub const INVALID_ADDRESS: &str = "InvalidAddress";
    /// The pool overlaps another pool.
    pub const OVERLAP: &str = "Overlap";
    /// The pool has no addresses.
    pub const EMPTY: &str = "Empty";
    /// A selector in the pool's spec is malformed.
    pub const INVALID_SELECTOR: &str = "InvalidSelector";
}

/// Event reasons (the `reason` of a Kubernetes Event).
pub mod event {
    /// An IP was allocated to the Service.
    pub const IP_ALLOCATED: &str = "IPAllocated";
    /// Allocation failed; the note says why.
    pub const ALLOCATION_FAILED: &str = "AllocationFailed";
    /// The Service's IP was released.
    pub const IP_RELEASED: &str = "IPReleased";
    /// The Service lost its IP because its pool changed or sharing no longer fits.
    pub const IP_REVOKED: &str = "IPRevoked";
    /// Allocated, but no L2Advertisement covers the pool.
    pub const NOT_ANNOUNCED: &str = "NotAnnounced";
    /// A node started announcing the Service's IP.
    pub const NODE_ASSIGNED: &str = "nodeAssigned";
    /// Announcement could not be set up (e.g. a named interface does not exist).
    pub const ANNOUNCE_FAILED: &str = "AnnounceFailed";
    /// A pool is invalid and skipped.
    pub const INVALID_POOL: &str = "InvalidPool";
    /// A stopping speaker's IPs were all claimed by their new holders before it
    /// stopped answering (on the Node).
    pub const HANDED_OVER: &str = "HandedOver";
    /// A stopping speaker stopped answering before every IP's new holder claimed it
    /// (on the Node); clients may have seen a gap.
    pub const HANDOVER_INCOMPLETE: &str = "HandoverIncomplete";
    /// Heartbeats from another speaker fail authentication (the memberlist keys differ);
    /// failure detection between the two falls back to Lease expiry (on the Node).
    pub const MEMBERLIST_KEY_MISMATCH: &str = "MemberlistKeyMismatch";
    /// Another host on the segment claimed the Service's IP (gratuitous ARP or an
    /// unsolicited NA from its MAC); the speaker re-announced it (on the Service).
    pub const IP_CONFLICT: &str = "IPConflict";
    /// A speaker's BGP session with the peer is Established (on the BGPPeer; the note
    /// names the node).
    pub const BGP_SESSION_ESTABLISHED: &str = "BGPSessionEstablished";
    /// A speaker's BGP session with the peer is down, or cannot start (on the BGPPeer;
    /// the note names the node and the cause: a NOTIFICATION, a timeout, a refused
    /// connection, a missing password Secret).
    pub const BGP_SESSION_DOWN: &str = "BGPSessionDown";
    /// metallb compat: a MetalLB object, or one of its fields, is not honoured (a field
    /// ferrolb lacks, an unreadable spec, a ferrolb object of the same name); on the
    /// MetalLB object, the note naming the field.
    pub const METALLB_NOT_HONOURED: &str = "MetalLBNotHonoured";
}
