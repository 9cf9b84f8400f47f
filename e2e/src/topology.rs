//! Network namespaces joined by a bridge: N nodes and a client.
//!
//! Names carry the `flb` prefix and a per-run suffix, so concurrent runs never
//! collide; everything is removed on drop, also when a test panics. Addresses
//! come only from 198.51.100.0/24 and fd42:f1b::/64, and only inside the
//! namespaces: the root namespace is never touched.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A failed setup step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command could not run or failed.
    #[error("`{cmd}` failed: {why}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its error output or the spawn error.
        why: String,
    },
}

/// Run a command, failing with its stderr.
pub fn run(args: &[&str]) -> Result<String, Error> {
    let cmd = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| Error::Command { cmd: cmd.clone(), why: e.to_string() })?;
    if !out.status.success() {
        return Err(Error::Command { cmd, why: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name (`ip netns` name).
    pub name: String,
}

impl Netns {
    /// Create it, with loopback up.
    pub fn create(name: &str) -> Result<Netns, Error> {
        run(&["ip", "netns", "add", name])?;
        let ns = Netns { name: name.to_string() };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Path of the namespace file, for `setns`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Run a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Result<String, Error> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// A command to run inside the namespace (for spawning).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_netns(&self.name);
    }
}

/// Delete network namespace `name` and end every process in it first: SIGTERM (a
/// speaker then removes its nftables table and releases its Lease), SIGKILL for what
/// is still there after 2 s. Whoever started a process there (the sandbox, a test,
/// `ferrolb-sandbox start` from another shell), it ends with the namespace.
pub fn delete_netns(name: &str) {
    let pids = || -> Vec<String> {
        Command::new("ip")
            .args(["netns", "pids", name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    };
    let running = pids();
    if !running.is_empty() {
        let _ = Command::new("kill").arg("-TERM").args(&running).output();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !pids().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let left = pids();
        if !left.is_empty() {
            let _ = Command::new("kill").arg("-KILL").args(&left).output();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// A host on the bridge: its namespace, interface and addresses.
#[derive(Debug)]
pub struct Host {
    pub netns: Netns,
    /// Interface on the bridge (inside the namespace).
    pub iface: String,
    /// Its MAC, lowercase.
    pub mac: String,
    /// IPv4 address (/24).
    pub ipv4: Ipv4Addr,
    /// IPv6 address (/64).
    pub ipv6: Ipv6Addr,
}

impl Host {
    /// The MAC of the bridge interface as `ip` prints it.
    fn read_mac(netns: &Netns, iface: &str) -> Result<String, Error> {
        let out = netns.exec(&["cat", &format!("/sys/class/net/{iface}/address")])?;
        Ok(out.trim().to_lowercase())
    }
}

/// The whole topology. Dropping it removes every namespace (hosts first, switch last).
#[derive(Debug)]
pub struct Topology {
    /// Per-run suffix in every name.
    pub suffix: String,
    /// Node hosts, `node-1`.. in order.
    pub nodes: Vec<Host>,
    /// The client ("outside world").
    pub client: Host,
    /// The control plane's host on the bridge (API server listener for node processes).
    pub control_plane: Host,
    /// Hosts for Pods with a network of their own (the controller's replicas), `p0`..
    pub pods: Vec<Host>,
    /// The namespace holding the bridge; dropped last.
    pub switch: Netns,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A suffix unique to this process and call.
pub fn unique_suffix() -> String {
    format!("{:x}{}", std::process::id() & 0xfffff, COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// Above this many nodes, nodes know each other's MACs statically.
///
/// Every namespace on this machine shares the kernel's neighbour tables and their
/// limits (`gc_thresh3`, 1,024 entries by default, for all namespaces together): 40
/// node namespaces that all talk to each other need 1,600 entries, and past the limit
/// the kernel drops packets to neighbours it has no entry for ("neighbor table
/// overflow!"). The speakers' heartbeat broadcasts were lost that way, which looked
/// like slow failure detection. Each real node has a table of its own; permanent
/// entries are exempt from the limit, so a large sandbox gets those (within its own
/// namespaces only) and behaves like separate machines.
pub const STATIC_NEIGHBOURS_ABOVE: usize = 16;

/// Permanent IPv4 and IPv6 neighbour entries for every other node, in each node.
fn static_neighbours(nodes: &[Host]) -> Result<(), Error> {
    for h in nodes {
        let batch: String = nodes
            .iter()
            .filter(|o| o.ipv4 != h.ipv4)
            .flat_map(|o| {
                [o.ipv4.to_string(), o.ipv6.to_string()]
                    .map(|ip| format!("neigh replace {ip} lladdr {} dev {} nud permanent\n", o.mac, h.iface))
            })
            .collect();
        let path = std::env::temp_dir().join(format!("{}-neigh", h.netns.name));
        std::fs::write(&path, batch)
            .map_err(|e| Error::Command { cmd: "write neighbours".into(), why: e.to_string() })?;
        let r = run(&["ip", "-n", &h.netns.name, "-batch", &path.to_string_lossy()]);
        let _ = std::fs::remove_file(&path);
        r?;
    }
    Ok(())
}

impl Topology {
    /// Build a bridge, `nodes` node namespaces and a client namespace.
    pub fn new(nodes: usize) -> Result<Topology, Error> {
        let suffix = unique_suffix();
        let switch = Netns::create(&format!("flb{suffix}sw"))?;
        switch.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
        // No STP delay, no multicast snooping surprises unless a test turns them on.
        switch.exec(&["ip", "link", "set", "br0", "type", "bridge", "forward_delay", "0"])?;
        switch.exec(&["ip", "link", "set", "br0", "up"])?;
        let mut hosts = Vec::new();
        // Client first, nodes 1..=N, the control plane last.
        for i in 0..=nodes + 1 {
            let (ns_name, port, v4, v6): (String, String, Ipv4Addr, Ipv6Addr) = if i == 0 {
                (
                    format!("flb{suffix}c"),
                    "c".into(),
                    Ipv4Addr::new(198, 51, 100, 2),
                    Ipv6Addr::new(0xfd42, 0xf1b, 0, 0, 0, 0, 0, 2),
                )
            } else if i == nodes + 1 {
                (
                    format!("flb{suffix}cp"),
                    "cp".into(),
                    Ipv4Addr::new(198, 51, 100, 3),
                    Ipv6Addr::new(0xfd42, 0xf1b, 0, 0, 0, 0, 0, 3),
                )
            } else {
                (
                    format!("flb{suffix}n{i}"),
                    format!("n{i}"),
                    Ipv4Addr::new(198, 51, 100, 10 + i as u8),
                    Ipv6Addr::new(0xfd42, 0xf1b, 0, 0, 0, 0, 0, 0x10 + i as u16),
                )
            };
            let netns = Netns::create(&ns_name)?;
            // Accept no DAD delay: addresses are usable at once. Keep IPv6 addresses while
            // a link is down (as a host's network configuration would put them back), so a
            // node whose link comes back up has its IPv6 address again.
            netns.exec(&[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.keep_addr_on_down=1",
                "net.ipv6.conf.default.keep_addr_on_down=1",
            ])?;
            switch.exec(&["ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns_name])?;
            switch.exec(&["ip", "link", "set", &port, "master", "br0", "up"])?;
            netns.exec(&["ip", "link", "set", "eth0", "up"])?;
            netns.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
            netns.exec(&["ip", "addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])?;
            let mac = Host::read_mac(&netns, "eth0")?;
            hosts.push(Host { netns, iface: "eth0".into(), mac, ipv4: v4, ipv6: v6 });
        }
        let control_plane = hosts.pop().expect("control plane host");
        let client = hosts.remove(0);
        if hosts.len() > STATIC_NEIGHBOURS_ABOVE {
            static_neighbours(&hosts)?;
        }
        Ok(Topology { suffix, nodes: hosts, client, control_plane, pods: Vec::new(), switch })
    }

    /// One more host on the bridge for a Pod with a network of its own: the `i`th gets
    /// `198.51.100.(4+i)` and `fd42:f1b::(4+i)` (at most 6, below the nodes' addresses).
    pub fn add_pod_host(&mut self) -> Result<&Host, Error> {
        let i = self.pods.len();
        if i >= 6 {
            return Err(Error::Command {
                cmd: "add_pod_host".into(),
                why: "the sandbox has addresses for 6 Pod hosts".into(),
            });
        }
        let (ns_name, port) = (format!("flb{}p{i}", self.suffix), format!("p{i}"));
        let v4 = Ipv4Addr::new(198, 51, 100, 4 + i as u8);
        let v6 = Ipv6Addr::new(0xfd42, 0xf1b, 0, 0, 0, 0, 0, 4 + i as u16);
        let netns = Netns::create(&ns_name)?;
        netns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"])?;
        self.switch.exec(&["ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns_name])?;
        self.switch.exec(&["ip", "link", "set", &port, "master", "br0", "up"])?;
        netns.exec(&["ip", "link", "set", "lo", "up"])?;
        netns.exec(&["ip", "link", "set", "eth0", "up"])?;
        netns.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
        netns.exec(&["ip", "addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])?;
        let mac = Host::read_mac(&netns, "eth0")?;
        self.pods.push(Host { netns, iface: "eth0".into(), mac, ipv4: v4, ipv6: v6 });
        Ok(&self.pods[i])
    }
}

impl Topology {
    /// A second network: bridge `br1`, and an interface `iface` on it for the client and
    /// every node, with addresses from 203.0.113.0/24. Returns each node's `iface` MAC,
    /// in node order.
    pub fn add_second_network(&self, iface: &str) -> Result<Vec<String>, Error> {
        self.switch.exec(&["ip", "link", "add", "br1", "type", "bridge"])?;
        self.switch.exec(&["ip", "link", "set", "br1", "type", "bridge", "forward_delay", "0"])?;
        self.switch.exec(&["ip", "link", "set", "br1", "up"])?;
        let mut macs = Vec::new();
        let hosts = std::iter::once((&self.client, "c1".to_string(), 2u8))
            .chain(self.nodes.iter().enumerate().map(|(i, h)| (h, format!("n{}x", i + 1), 11 + i as u8)));
        for (h, port, last) in hosts {
            self.switch.exec(&[
                "ip",
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                iface,
                "netns",
                &h.netns.name,
            ])?;
            self.switch.exec(&["ip", "link", "set", &port, "master", "br1", "up"])?;
            h.netns.exec(&["ip", "link", "set", iface, "up"])?;
            h.netns.exec(&["ip", "addr", "add", &format!("203.0.113.{last}/24"), "dev", iface])?;
            if port != "c1" {
                macs.push(Host::read_mac(&h.netns, iface)?);
            }
        }
        Ok(macs)
    }
}

/// Whether this process may create namespaces (root).
pub fn privileged() -> bool {
    run(&["id", "-u"]).map(|u| u.trim() == "0").unwrap_or(false)
}
