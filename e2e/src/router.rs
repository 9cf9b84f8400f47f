//! The sandbox's BGP router: a namespace between the nodes' segment and an outside
//! client, running a real routing daemon from Debian (FRR's zebra, bgpd and bfdd, or
//! BIRD 2) that peers with every node, takes their routes with ECMP and installs
//! them in its kernel table. The outside client's only way to a VIP is through it.
//! FRR and BIRD run BFD with every node (at most 50 ms x 3 from their side: a
//! node's BFDProfile sets the timers in use); a node whose BGPPeer has no
//! `bfdProfile` never answers, and its BFD session stays Down without effect.
//!
//! ```text
//!  outside client ──203.0.113.0/28── router ──198.51.100.0/24 (br0)── node-1..N
//!   .2, fd42:f1b:1::2           .1 / ::1     .1, fd42:f1b::1
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::topology::{Error, Netns, Topology};

/// The router's AS (the nodes' BGPPeer `peerASN`).
pub const ROUTER_ASN: u32 = 64512;
/// The nodes' AS (their BGPPeer `myASN`).
pub const NODE_ASN: u32 = 64513;
/// The router's addresses on the nodes' segment.
pub const ROUTER_V4: &str = "198.51.100.1";
pub const ROUTER_V6: &str = "fd42:f1b::1";
/// The outside client's addresses.
pub const OUTSIDE_V4: &str = "203.0.113.2";
pub const OUTSIDE_V6: &str = "fd42:f1b:1::2";
/// The router's BFD timers: the fastest it takes (a node's BFDProfile may ask slower).
pub const ROUTER_BFD_MS: u32 = 50;
/// A pool of VIPs that lies on no segment: reachable only by the routes BGP gives.
pub const BGP_POOL_V4: &str = "203.0.113.64/27";
pub const BGP_POOL_V6: &str = "fd42:f1b:2::/120";

/// The routing daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Daemon {
    /// FRR 8.4: zebra and bgpd.
    Frr,
    /// BIRD 2.0.
    Bird,
    /// GoBGP 3.10: routes in its RIB only (`gobgp global rib`), none in a kernel table,
    /// so the outside client cannot reach the VIPs through it.
    Gobgp,
}

impl FromStr for Daemon {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "frr" => Ok(Daemon::Frr),
            "bird" => Ok(Daemon::Bird),
            "gobgp" => Ok(Daemon::Gobgp),
            other => Err(format!("{other:?}: want frr, bird or gobgp")),
        }
    }
}

/// The router, as the state file has it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouterState {
    /// Its network namespace.
    pub netns: String,
    /// The daemon.
    pub daemon: Daemon,
    /// Its AS.
    pub asn: u32,
    /// Its addresses on the nodes' segment (what a BGPPeer's `peerAddress` names).
    pub addresses: Vec<String>,
    /// The outside client behind it.
    pub outside_netns: String,
    /// The outside client's addresses.
    pub outside_addresses: Vec<String>,
    /// The daemon's control sockets and logs.
    pub dir: PathBuf,
}

/// A running router; dropping it stops the daemon and removes both namespaces.
pub struct Router {
    pub state: RouterState,
    _outside: Netns,
    _router: Netns,
}

fn frr_config(nodes: &[(String, String)]) -> String {
    let mut c = format!(
        "frr defaults datacenter\nhostname router\nrouter bgp {ROUTER_ASN}\n bgp router-id {ROUTER_V4}\n \
         no bgp ebgp-requires-policy\n bgp bestpath as-path multipath-relax\n neighbor NODES peer-group\n \
         neighbor NODES remote-as {NODE_ASN}\n neighbor NODES timers connect 1\n"
    );
    for (v4, _) in nodes {
        c.push_str(&format!(" neighbor {v4} peer-group NODES\n"));
    }
    c.push_str(" neighbor NODES bfd\n neighbor NODES bfd profile nodes\n");
    c.push_str(" address-family ipv4 unicast\n  maximum-paths 16\n exit-address-family\n");
    c.push_str(" address-family ipv6 unicast\n  neighbor NODES activate\n  maximum-paths 16\n exit-address-family\n");
    c
}

/// bfdd's profile for the nodes.
fn frr_bfd_config() -> String {
    format!(
        "bfd\n profile nodes\n  transmit-interval {ROUTER_BFD_MS}\n  receive-interval {ROUTER_BFD_MS}\n  \
         detect-multiplier 3\n !\n!\n"
    )
}

fn bird_config(nodes: &[(String, String)]) -> String {
    let mut c = format!(
        "router id {ROUTER_V4};\nprotocol device {{ scan time 1; }}\n\
         protocol kernel k4 {{ ipv4 {{ export all; }}; merge paths on; }}\n\
         protocol kernel k6 {{ ipv6 {{ export all; }}; merge paths on; }}\n\
         protocol bfd {{ interface \"*\" {{ min rx interval {ROUTER_BFD_MS} ms; min tx interval {ROUTER_BFD_MS} ms; \
         multiplier 3; }}; }}\n\
         template bgp nodes {{ local {ROUTER_V4} as {ROUTER_ASN}; connect retry time 1; error wait time 1, 5; bfd on; \
         ipv4 {{ import all; export none; }}; ipv6 {{ import all; export none; }}; }}\n"
    );
    for (i, (v4, _)) in nodes.iter().enumerate() {
        c.push_str(&format!("protocol bgp node{} from nodes {{ neighbor {v4} as {NODE_ASN}; }}\n", i + 1));
    }
    c
}

fn gobgp_config(nodes: &[(String, String)]) -> String {
    let mut c = format!(
        "[global.config]\n  as = {ROUTER_ASN}\n  router-id = \"{ROUTER_V4}\"\n  local-address-list = [\"{ROUTER_V4}\"]\n\
         [global.use-multiple-paths.config]\n  enabled = true\n"
    );
    for (v4, _) in nodes {
        c.push_str(&format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{v4}\"\n    peer-as = {NODE_ASN}\n\
             [neighbors.transport.config]\n    passive-mode = true\n\
             [[neighbors.afi-safis]]\n  [neighbors.afi-safis.config]\n    afi-safi-name = \"ipv4-unicast\"\n\
             [[neighbors.afi-safis]]\n  [neighbors.afi-safis.config]\n    afi-safi-name = \"ipv6-unicast\"\n"
        ));
    }
    c
}

impl Router {
    /// Build the router and the outside client for `topo`'s nodes, start `daemon`
    /// (its files under `dir`), and route the outside network from every node through it.
    pub fn start(topo: &Topology, daemon: Daemon, dir: &Path) -> Result<Router, Error> {
        let io = |e: std::io::Error| Error::Command { cmd: "router files".into(), why: e.to_string() };
        let sfx = &topo.suffix;
        let router = Netns::create(&format!("flb{sfx}r"))?;
        let outside = Netns::create(&format!("flb{sfx}o"))?;
        for ns in [&router, &outside] {
            ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"])?;
        }
        // On the nodes' segment.
        topo.switch.exec(&[
            "ip",
            "link",
            "add",
            "r0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &router.name,
        ])?;
        topo.switch.exec(&["ip", "link", "set", "r0", "master", "br0", "up"])?;
        router.exec(&["ip", "addr", "add", &format!("{ROUTER_V4}/24"), "dev", "eth0"])?;
        router.exec(&["ip", "addr", "add", &format!("{ROUTER_V6}/64"), "dev", "eth0", "nodad"])?;
        router.exec(&["ip", "link", "set", "eth0", "up"])?;
        // To the outside client.
        router.exec(&["ip", "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", &outside.name])?;
        router.exec(&["ip", "addr", "add", "203.0.113.1/28", "dev", "ext0"])?;
        router.exec(&["ip", "addr", "add", "fd42:f1b:1::1/64", "dev", "ext0", "nodad"])?;
        router.exec(&["ip", "link", "set", "ext0", "up"])?;
        outside.exec(&["ip", "addr", "add", &format!("{OUTSIDE_V4}/28"), "dev", "eth0"])?;
        outside.exec(&["ip", "addr", "add", &format!("{OUTSIDE_V6}/64"), "dev", "eth0", "nodad"])?;
        outside.exec(&["ip", "link", "set", "eth0", "up"])?;
        outside.exec(&["ip", "route", "add", "default", "via", "203.0.113.1"])?;
        outside.exec(&["ip", "-6", "route", "add", "default", "via", "fd42:f1b:1::1"])?;
        // Forward, and spread flows over equal next hops by their ports too (ECMP).
        router.exec(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.fib_multipath_hash_policy=1",
            "net.ipv6.fib_multipath_hash_policy=1",
        ])?;
        // The nodes answer the outside through the router.
        for n in &topo.nodes {
            n.netns.exec(&["ip", "route", "add", "203.0.113.0/28", "via", ROUTER_V4])?;
            n.netns.exec(&["ip", "-6", "route", "add", "fd42:f1b:1::/64", "via", ROUTER_V6])?;
        }
        let nodes: Vec<(String, String)> =
            topo.nodes.iter().map(|n| (n.ipv4.to_string(), n.ipv6.to_string())).collect();
        std::fs::create_dir_all(dir).map_err(io)?;
        // FRR's daemons drop to the frr user: they must read and write here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
        let d = dir.display().to_string();
        match daemon {
            Daemon::Frr => {
                std::fs::write(dir.join("zebra.conf"), "hostname router\n").map_err(io)?;
                std::fs::write(dir.join("bgpd.conf"), frr_config(&nodes)).map_err(io)?;
                std::fs::write(dir.join("bfdd.conf"), frr_bfd_config()).map_err(io)?;
                let zserv = format!("{d}/zserv.api");
                router.exec(&[
                    "/usr/lib/frr/zebra",
                    "-d",
                    "-f",
                    &format!("{d}/zebra.conf"),
                    "-i",
                    &format!("{d}/zebra.pid"),
                    "-z",
                    &zserv,
                    "--vty_socket",
                    &d,
                    "--log",
                    &format!("file:{d}/zebra.log"),
                ])?;
                // bfdd before bgpd: bgpd registers its BFD sessions through zebra.
                router.exec(&[
                    "/usr/lib/frr/bfdd",
                    "-d",
                    "-f",
                    &format!("{d}/bfdd.conf"),
                    "-i",
                    &format!("{d}/bfdd.pid"),
                    "-z",
                    &zserv,
                    "--vty_socket",
                    &d,
                    "--log",
                    &format!("file:{d}/bfdd.log"),
                ])?;
                router.exec(&[
                    "/usr/lib/frr/bgpd",
                    "-d",
                    "-S",
                    "-f",
                    &format!("{d}/bgpd.conf"),
                    "-i",
                    &format!("{d}/bgpd.pid"),
                    "-z",
                    &zserv,
                    "--vty_socket",
                    &d,
                    "--log",
                    &format!("file:{d}/bgpd.log"),
                ])?;
            }
            Daemon::Gobgp => {}
            Daemon::Bird => {
                std::fs::write(dir.join("bird.conf"), bird_config(&nodes)).map_err(io)?;
                router.exec(&[
                    "bird",
                    "-c",
                    &format!("{d}/bird.conf"),
                    "-s",
                    &format!("{d}/bird.ctl"),
                    "-P",
                    &format!("{d}/bird.pid"),
                ])?;
            }
        }
        if daemon == Daemon::Gobgp {
            std::fs::write(dir.join("gobgpd.toml"), gobgp_config(&nodes)).map_err(io)?;
            let log = std::fs::File::create(dir.join("gobgpd.log")).map_err(io)?;
            let err = log.try_clone().map_err(io)?;
            router
                .command("gobgpd")
                .args([
                    "-f",
                    &format!("{d}/gobgpd.toml"),
                    "-t",
                    "toml",
                    "--api-hosts",
                    "127.0.0.1:50051",
                    "--log-plain",
                ])
                .stdout(log)
                .stderr(err)
                .spawn()
                .map_err(|e| Error::Command { cmd: "gobgpd (Debian package gobgpd)".into(), why: e.to_string() })?;
        }
        let state = RouterState {
            netns: router.name.clone(),
            daemon,
            asn: ROUTER_ASN,
            addresses: vec![ROUTER_V4.into(), ROUTER_V6.into()],
            outside_netns: outside.name.clone(),
            outside_addresses: vec![OUTSIDE_V4.into(), OUTSIDE_V6.into()],
            dir: dir.to_path_buf(),
        };
        Ok(Router { state, _outside: outside, _router: router })
    }
}

/// Take a node's link (`eth0` of its namespace `netns`) down or up, as a cut or mended
/// cable. Down takes the node's route to the outside network with it; up puts it back
/// (the one [`Router::start`] added), waiting until the kernel takes it.
pub fn set_node_link(netns: &str, up: bool) {
    let state = if up { "up" } else { "down" };
    crate::client::netns_exec(netns, &["ip", "link", "set", "eth0", state])
        .unwrap_or_else(|| panic!("ip link set eth0 {state} in {netns}"));
    if up {
        let v4: &[&str] = &["ip", "route", "replace", "203.0.113.0/28", "via", ROUTER_V4];
        let v6: &[&str] = &["ip", "-6", "route", "replace", "fd42:f1b:1::/64", "via", ROUTER_V6];
        for args in [v4, v6] {
            crate::wait::eventually("the node's route to the outside back", std::time::Duration::from_secs(10), || {
                crate::client::netns_exec(netns, args)
            });
        }
    }
}

impl RouterState {
    fn exec(&self, args: &[&str]) -> Option<String> {
        Netns { name: self.netns.clone() }.exec_keep(args)
    }

    /// The next hops of the kernel route for exactly `prefix` in the router's table
    /// (the routes the daemon installed), sorted.
    pub fn next_hops(&self, prefix: &str) -> Vec<IpAddr> {
        if self.daemon == Daemon::Gobgp {
            return self.rib_next_hops(prefix);
        }
        let family = if prefix.contains(':') { "-6" } else { "-4" };
        let Some(out) = self.exec(&["ip", family, "-j", "route", "show", "exact", prefix]) else { return vec![] };
        let routes: Vec<Value> = serde_json::from_str(&out).unwrap_or_default();
        let mut hops: Vec<IpAddr> = routes
            .iter()
            .flat_map(|r| match r["nexthops"].as_array() {
                Some(many) => many.iter().filter_map(|h| h["gateway"].as_str()).map(String::from).collect::<Vec<_>>(),
                None => r["gateway"].as_str().map(String::from).into_iter().collect(),
            })
            .filter_map(|g| g.parse().ok())
            .collect();
        hops.sort();
        hops
    }

    /// GoBGP: the next hops of every path its RIB has for the host route of `ip`, sorted.
    fn rib_next_hops(&self, ip: &str) -> Vec<IpAddr> {
        let (family, len) = if ip.contains(':') { ("ipv6", 128) } else { ("ipv4", 32) };
        let prefix = if ip.contains('/') { ip.to_string() } else { format!("{ip}/{len}") };
        let Some(v) = self.gobgp(&["global", "rib", "-a", family, &prefix]) else { return vec![] };
        let mut hops: Vec<IpAddr> = v[&prefix]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|path| path["attrs"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| {
                a["nexthop"]
                    .as_str()
                    .or_else(|| a["nexthop"][0].as_str())
                    .or_else(|| a["nexthops"][0].as_str())
                    .map(String::from)
            })
            .filter_map(|g| g.parse().ok())
            .collect();
        hops.sort();
        hops.dedup();
        hops
    }

    /// `gobgp ARGS -j` against the router's gobgpd, as JSON.
    pub fn gobgp(&self, args: &[&str]) -> Option<Value> {
        let mut full = vec!["gobgp", "-u", "127.0.0.1", "-p", "50051"];
        full.extend_from_slice(args);
        full.push("-j");
        serde_json::from_str(&self.exec(&full)?).ok()
    }

    /// How many BGP sessions the daemon has Established.
    pub fn established(&self) -> usize {
        match self.daemon {
            Daemon::Frr => {
                let Some(v) = self.vtysh("show bgp ipv4 unicast summary json") else { return 0 };
                v["peers"].as_object().map_or(0, |p| p.values().filter(|x| x["state"] == "Established").count())
            }
            Daemon::Bird => self
                .birdc("show protocols")
                .map_or(0, |o| o.lines().filter(|l| l.starts_with("node") && l.contains("Established")).count()),
            Daemon::Gobgp => self.gobgp(&["neighbor"]).and_then(|v| v.as_array().cloned()).map_or(0, |ns| {
                ns.iter()
                    .filter(|n| {
                        let s = &n["state"]["session_state"];
                        s == "established" || s == 6
                    })
                    .count()
            }),
        }
    }

    /// The nodes (by address) with which the daemon's BFD session is Up.
    pub fn bfd_up(&self) -> Vec<IpAddr> {
        let mut up: Vec<IpAddr> = match self.daemon {
            Daemon::Frr => self
                .vtysh("show bfd peers json")
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter(|p| p["status"] == "up")
                .filter_map(|p| p["peer"].as_str()?.parse().ok())
                .collect(),
            // `bfd1  198.51.100.11  eth0  Up  ...`
            Daemon::Bird => self
                .birdc("show bfd sessions")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let ip: IpAddr = f.first()?.parse().ok()?;
                    f.contains(&"Up").then_some(ip)
                })
                .collect(),
            Daemon::Gobgp => Vec::new(),
        };
        up.sort();
        up
    }

    /// The attributes the daemon has for `prefix` (`ipv4`/`ipv6`): communities, large
    /// communities and LOCAL_PREF of its best path, as the daemon prints them.
    pub fn attributes(&self, family: &str, prefix: &str) -> Option<(String, String, Option<u64>)> {
        match self.daemon {
            Daemon::Frr => {
                let v = self.vtysh(&format!("show bgp {family} unicast {prefix} json"))?;
                let p = v["paths"].as_array()?.first()?.clone();
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                Some((s(&p["community"]["string"]), s(&p["largeCommunity"]["string"]), p["locPrf"].as_u64()))
            }
            Daemon::Gobgp => {
                let v = self.gobgp(&["global", "rib", "-a", family, prefix])?;
                let attrs = v[prefix].as_array()?.first()?["attrs"].as_array()?.clone();
                let find = |t: u64| attrs.iter().find(|a| a["type"] == t).cloned();
                let communities = find(8)
                    .and_then(|a| a["communities"].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                    .collect::<Vec<_>>()
                    .join(" ");
                let large = find(32)
                    .and_then(|a| a["value"].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .map(|c| {
                        // GoBGP prints its Go field names.
                        let f = |a: &str, b: &str| c[a].as_u64().or_else(|| c[b].as_u64()).unwrap_or_default();
                        format!(
                            "{}:{}:{}",
                            f("ASN", "global_admin"),
                            f("LocalData1", "local_data1"),
                            f("LocalData2", "local_data2")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                Some((communities, large, find(5).and_then(|a| a["value"].as_u64())))
            }
            Daemon::Bird => {
                let out = self.birdc(&format!("show route all for {prefix}"))?;
                out.lines().any(|l| l.starts_with(prefix)).then_some(())?;
                let attr = |name: &str| {
                    out.lines()
                        .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim_start_matches(':').trim().to_string()))
                        .unwrap_or_default()
                };
                Some((attr("BGP.community"), attr("BGP.large_community"), attr("BGP.local_pref").parse().ok()))
            }
        }
    }

    /// Make the router require TCP MD5 `password` from every node (or none), as an
    /// operator reconfigures a running router: FRR through vtysh, BIRD by its
    /// configuration file and `birdc configure`. Sessions restart.
    pub fn set_password(&self, password: Option<&str>) -> Result<(), String> {
        match self.daemon {
            Daemon::Gobgp => Err(format!("the sandbox's GoBGP has no password setting ({password:?} not set)")),
            Daemon::Frr => {
                let d = self.dir.display().to_string();
                let line = match password {
                    Some(p) => format!("neighbor NODES password {p}"),
                    None => "no neighbor NODES password".to_string(),
                };
                let bgp = format!("router bgp {ROUTER_ASN}");
                let args = ["vtysh", "--vty_socket", &d, "-c", "configure terminal", "-c", &bgp, "-c", &line];
                self.exec(&args).map(|_| ()).ok_or_else(|| format!("vtysh {line} failed"))
            }
            Daemon::Bird => {
                let path = self.dir.join("bird.conf");
                let conf = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
                let mut lines: Vec<String> = conf
                    .lines()
                    .map(|l| {
                        if l.starts_with("template bgp nodes") {
                            let base = l.split(" password ").next().unwrap_or(l).trim_end_matches(" }").to_string();
                            match password {
                                Some(p) => format!("{base} password \"{p}\"; }}"),
                                None => format!("{base} }}"),
                            }
                        } else {
                            l.to_string()
                        }
                    })
                    .collect();
                lines.push(String::new());
                std::fs::write(&path, lines.join("\n")).map_err(|e| e.to_string())?;
                let out = self.birdc("configure").ok_or("birdc configure failed")?;
                if out.contains("Reconfigured") || out.contains("Reconfiguration in progress") {
                    Ok(())
                } else {
                    Err(format!("birdc configure: {out}"))
                }
            }
        }
    }

    /// What the daemon says of its sessions and the end of its log, for a failure message.
    pub fn diagnostics(&self) -> String {
        let log = |name: &str| {
            let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        match self.daemon {
            Daemon::Frr => format!(
                "{}\n--- bgpd.log ---\n{}",
                self.vtysh("show bgp neighbors json").map(|v| v.to_string()).unwrap_or_default(),
                log("bgpd.log")
            ),
            Daemon::Bird => self.birdc("show protocols all").unwrap_or_default(),
            Daemon::Gobgp => self.gobgp(&["neighbor"]).map(|v| v.to_string()).unwrap_or_default(),
        }
    }

    /// `vtysh -c command` (FRR), as JSON.
    pub fn vtysh(&self, command: &str) -> Option<Value> {
        let d = self.dir.display().to_string();
        serde_json::from_str(&self.exec(&["vtysh", "--vty_socket", &d, "-c", command])?).ok()
    }

    /// `birdc command` (BIRD).
    pub fn birdc(&self, command: &str) -> Option<String> {
        let sock = self.dir.join("bird.ctl").display().to_string();
        let mut args = vec!["birdc", "-s", &sock];
        args.extend(command.split(' '));
        self.exec(&args)
    }
}

impl Netns {
    /// [`Netns::exec`] for a namespace this value does not own (never deleted by it).
    fn exec_keep(self, args: &[&str]) -> Option<String> {
        let out = self.exec(args).ok();
        std::mem::forget(self);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_peer_with_every_node_and_enable_multipath() {
        let nodes = vec![("198.51.100.11".to_string(), "fd42:f1b::11".to_string()); 1];
        let f = frr_config(&nodes);
        assert!(f.contains("neighbor 198.51.100.11 peer-group NODES") && f.contains("maximum-paths 16"));
        let b = bird_config(&nodes);
        assert!(b.contains("neighbor 198.51.100.11 as 64513") && b.contains("merge paths on"));
        assert!(f.contains("neighbor NODES bfd profile nodes") && frr_bfd_config().contains("transmit-interval 50"));
        assert!(b.contains("bfd on;") && b.contains("protocol bfd"));
        let g = gobgp_config(&nodes);
        assert!(g.contains("neighbor-address = \"198.51.100.11\"") && g.contains("peer-as = 64513"), "{g}");
        assert_eq!("gobgp".parse::<Daemon>(), Ok(Daemon::Gobgp));
        assert!("quagga".parse::<Daemon>().unwrap_err().contains("want frr, bird or gobgp"));
    }
}
