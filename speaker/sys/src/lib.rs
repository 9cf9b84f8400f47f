//! ferrolb-speaker-sys: the speaker's system calls, and the only ferrolb code
//! that may use `unsafe`. Every other crate of the workspace forbids it, so
//! this boundary is the compiler's, not a convention; each `unsafe` block here
//! says why it is sound, and clippy refuses one that does not.
//!
//! One `AF_PACKET` socket per interface, bound to it, with a classic BPF filter
//! attached so that only ARP and ICMPv6 Neighbor Solicitations reach userspace:
//! data traffic to the VIP costs the speaker nothing. Solicited-node multicast
//! groups are joined through an IPv6 socket, so the kernel sends the MLD
//! reports that snooping switches need.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A hardware address, as the kernel gives it.
pub type Mac = [u8; 6];

const ETH_P_ALL: u16 = 0x0003;

/// The BPF program: accept ARP, and IPv6 whose next header is ICMPv6 with type 135 (NS)
/// or 136 (NA: another host claiming an announced address is a conflict to defend).
/// Offsets are for untagged frames: AF_PACKET delivers VLAN tags out of band.
fn filter() -> [libc::sock_filter; 10] {
    const LDH_ABS: u16 = 0x28;
    const LDB_ABS: u16 = 0x30;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        ins(LDH_ABS, 0, 0, 12),        // 0: A = ethertype
        ins(JEQ_K, 6, 0, 0x0806),      // 1: ARP -> accept
        ins(JEQ_K, 0, 6, 0x86dd),      // 2: not IPv6 -> drop
        ins(LDB_ABS, 0, 0, 20),        // 3: A = next header
        ins(JEQ_K, 0, 4, 58),          // 4: not ICMPv6 -> drop
        ins(LDB_ABS, 0, 0, 54),        // 5: A = ICMPv6 type
        ins(JEQ_K, 1, 0, 135),         // 6: NS -> accept
        ins(JEQ_K, 0, 1, 136),         // 7: not NA -> drop
        ins(RET_K, 0, 0, 0x0004_0000), // 8: accept (whole frame)
        ins(RET_K, 0, 0, 0),           // 9: drop
    ]
}

/// The kernel index of an interface.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 { Err(io::Error::last_os_error()) } else { Ok(idx) }
}

/// The MAC of an interface, asked of the kernel (SIOCGIFHWADDR) in the calling thread's
/// network namespace. Not from sysfs: /sys shows the namespace it was mounted in.
pub fn if_mac(name: &str) -> io::Result<Mac> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
    }
    // SAFETY: socket(2) with constant arguments; checked below.
    let raw = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a zeroed ifreq is valid; the name is copied in with its NUL terminator kept.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifr_hwaddr within `req`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful SIOCGIFHWADDR the union holds ifru_hwaddr.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok([data[0] as u8, data[1] as u8, data[2] as u8, data[3] as u8, data[4] as u8, data[5] as u8])
}

/// An `AF_PACKET` socket bound to one interface, filtered to ARP and NS, read by a
/// thread of its own (blocking reads with a timeout; sends never wait).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
    name: String,
    /// The receive timeout in force, in microseconds (0: not set yet).
    rcvtimeo: std::sync::atomic::AtomicU64,
}

impl PacketSocket {
    /// Open, filter and bind a socket on `name`. Needs CAP_NET_RAW.
    pub fn open(name: &str) -> io::Result<PacketSocket> {
        let ifindex = if_index(name)?;
        let fd = Self::raw(ifindex)?;
        Ok(PacketSocket { fd, ifindex, name: name.to_string(), rcvtimeo: std::sync::atomic::AtomicU64::new(0) })
    }

    fn raw(ifindex: u32) -> io::Result<OwnedFd> {
        let proto = ETH_P_ALL.to_be();
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let prog = filter();
        let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
        // Attach the filter before binding, so no unfiltered frame is ever queued (the
        // kernel copies the program `fprog` points at).
        setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
        // The kernel strips 802.1Q tags into out-of-band data; ask for it, so a frame
        // that came in tagged is not mistaken for one of the native VLAN.
        setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_AUXDATA, &(1 as libc::c_int))?;
        // SAFETY: zeroed sockaddr_ll is a valid bit pattern; fields are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a properly initialised sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// Receive one frame, waiting at most `timeout`; `Ok(None)` on timeout or a signal.
    /// One blocking `recvmsg` with `SO_RCVTIMEO` (set again only when `timeout` changes),
    /// so a frame costs a single wakeup and system call. A frame that came in with an
    /// 802.1Q tag (which the kernel delivers out of band, `PACKET_AUXDATA`) is returned
    /// with the tag put back after the MAC addresses, as it was on the wire.
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: std::time::Duration) -> io::Result<Option<usize>> {
        let micros = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX).max(1);
        if self.rcvtimeo.swap(micros, std::sync::atomic::Ordering::Relaxed) != micros {
            let tv = libc::timeval {
                tv_sec: (micros / 1_000_000).min(i64::MAX as u64) as libc::time_t,
                tv_usec: (micros % 1_000_000) as libc::suseconds_t,
            };
            if let Err(e) = setsockopt(self.fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv) {
                self.rcvtimeo.store(0, std::sync::atomic::Ordering::Relaxed);
                return Err(e);
            }
        }
        // Room to put a tag back.
        let room = buf.len().saturating_sub(4);
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: room };
        let mut control = [0u64; 8];
        // SAFETY: zeroed msghdr is valid; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: `msg` points at `iov` (into `buf`) and `control`, valid for their lengths.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
        if n >= 0 {
            let n = n as usize;
            return Ok(Some(match vlan_of(&msg) {
                Some(tag) if n >= 12 => {
                    buf.copy_within(12..n, 16);
                    buf[12..16].copy_from_slice(&tag);
                    n + 4
                }
                _ => n,
            }));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        }
    }

    /// Send one frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        send_raw(self.fd.as_raw_fd(), self.ifindex, frame)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `setsockopt(2)` with `value`, a plain C struct or integer, passed by its size.
fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid `T` for the duration of the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Drop received datagrams whose IP TTL (IPv4) or hop limit (IPv6) is below `min`
/// (`IP_MINTTL`, `IPV6_MINHOPCOUNT`): the Generalized TTL Security Mechanism (RFC 5082)
/// that single-hop BFD (RFC 5881 §5) asks for, with 255, done by the kernel.
pub fn set_min_ttl(fd: RawFd, ipv6: bool, min: u8) -> io::Result<()> {
    let v = libc::c_int::from(min);
    if ipv6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &v)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &v)
    }
}

/// `struct tcp_md5sig` of `<linux/tcp.h>` (libc does not define it).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; TCP_MD5SIG_MAXKEYLEN],
}

/// The longest TCP MD5 key the kernel takes.
pub const TCP_MD5SIG_MAXKEYLEN: usize = 80;

/// Sign every TCP segment to and from `peer` on socket `fd` with `key` (RFC 2385,
/// `TCP_MD5SIG`), as BGP sessions with a password do. Set before `connect`.
pub fn set_tcp_md5(fd: RawFd, peer: std::net::SocketAddr, key: &[u8]) -> io::Result<()> {
    if key.is_empty() || key.len() > TCP_MD5SIG_MAXKEYLEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a TCP MD5 key has 1 to {TCP_MD5SIG_MAXKEYLEN} bytes, not {}", key.len()),
        ));
    }
    // SAFETY: sockaddr_storage is plain data for which all zeroes is a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match peer {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut addr as *mut _ as *mut libc::sockaddr_in, sin) };
        }
        std::net::SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut addr as *mut _ as *mut libc::sockaddr_in6, sin6) };
        }
    }
    let mut sig = TcpMd5Sig {
        addr,
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; TCP_MD5SIG_MAXKEYLEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// The 802.1Q tag (TPID, TCI) the kernel reported for a received frame, if it had one.
fn vlan_of(msg: &libc::msghdr) -> Option<[u8; 4]> {
    // SAFETY: `msg` was filled by recvmsg; the CMSG macros walk its control buffer
    // within `msg_controllen`, and the auxdata is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                let aux: libc::tpacket_auxdata = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const _);
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
                    return None;
                }
                let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 { aux.tp_vlan_tpid } else { 0x8100 };
                let [a, b] = tpid.to_be_bytes();
                let [c2, d] = aux.tp_vlan_tci.to_be_bytes();
                return Some([a, b, c2, d]);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
        None
    }
}

fn send_raw(fd: RawFd, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    // SAFETY: zeroed sockaddr_ll is valid; the fields needed for sending are set.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6]
        .copy_from_slice(frame.get(..6).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too short"))?);
    // SAFETY: `frame` and `sll` are valid for the lengths passed.
    let n = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            // Never wait for buffer space: a reply or announcement that does not fit
            // now is reported as not sent, and the responder thread stays responsive.
            libc::MSG_DONTWAIT,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Move the calling thread into the network namespace of `ns` (an open
/// `/run/netns/NAME` or `/proc/PID/ns/net`): sockets it opens afterwards belong
/// there. Only this thread moves. Needs CAP_SYS_ADMIN.
pub fn enter_netns(ns: &std::fs::File) -> io::Result<()> {
    // SAFETY: setns(2) on a descriptor we hold open; it changes only this thread's namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Run `nft -f -` with `script` on standard input (the `nft` binary of the image).
/// Needs CAP_NET_ADMIN.
pub fn nft(script: &str) -> io::Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped").write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_jumps_land_on_accept_and_drop() {
        let p = filter();
        for (i, ins) in p.iter().enumerate() {
            if ins.code == 0x15 {
                assert!(i + 1 + usize::from(ins.jt) < p.len() && i + 1 + usize::from(ins.jf) < p.len());
            }
        }
        // ARP and NS accepted at 8; non-IPv6, non-ICMPv6 and other types dropped at 9.
        let (accept, drop) = (8, 9);
        assert_eq!(1 + 1 + usize::from(p[1].jt), accept);
        assert_eq!(2 + 1 + usize::from(p[2].jf), drop);
        assert_eq!(4 + 1 + usize::from(p[4].jf), drop);
        assert_eq!((6 + 1 + usize::from(p[6].jt), p[6].k), (accept, 135));
        assert_eq!((7 + 1 + usize::from(p[7].jt), 7 + 1 + usize::from(p[7].jf), p[7].k), (accept, drop, 136));
        assert_eq!((p[accept].code, p[accept].k, p[drop].k), (0x06, 0x0004_0000, 0));
    }
}

/// An interface the speaker may announce on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub mac: Mac,
}

/// Up, non-loopback, ARP-capable Ethernet interfaces that are not bond or bridge ports,
/// minus those matching `exclude` (`*` globs), in the calling thread's namespace.
pub fn scan_interfaces(exclude: &[String]) -> io::Result<Vec<LinkInfo>> {
    // SAFETY: if_nameindex returns a heap array terminated by a zero entry, freed below.
    let head = unsafe { libc::if_nameindex() };
    if head.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let mut p = head;
    // SAFETY: walk until the terminating entry; each name is a valid C string.
    unsafe {
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            names.push(std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned());
            p = p.add(1);
        }
        libc::if_freenameindex(head);
    }
    let mut out = Vec::new();
    for name in names {
        if exclude.iter().any(|pat| glob(pat, &name)) {
            continue;
        }
        let Ok(flags) = if_flags(&name) else { continue };
        // Administratively up and with carrier: a link without carrier cannot answer.
        let up = flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0;
        let bad = flags & (libc::IFF_LOOPBACK | libc::IFF_NOARP | libc::IFF_SLAVE) != 0;
        // Bridge ports carry no flag; sysfs has a `brport` directory for them.
        let bridge_port = std::path::Path::new(&format!("/sys/class/net/{name}/brport")).exists();
        if !up || bad || bridge_port {
            continue;
        }
        if let Some(mac) = if_mac(&name).ok().filter(|m| *m != [0; 6]) {
            out.push(LinkInfo { name, mac });
        }
    }
    Ok(out)
}

fn if_flags(name: &str) -> io::Result<i32> {
    // SAFETY: socket(2) with constant arguments; checked below.
    let raw = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: zeroed ifreq is valid; name copied with room for the NUL.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().take(libc::IFNAMSIZ - 1).zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes ifru_flags within `req`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds ifru_flags.
    Ok(i32::from(unsafe { req.ifr_ifru.ifru_flags }))
}

/// `*`-glob match (`eth*`, `*-ext`, `veth*abc`, exact names).
pub fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((pre, rest)) => {
            name.starts_with(pre) && {
                let tail = &name[pre.len()..];
                if rest.is_empty() {
                    true
                } else {
                    (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
                }
            }
        }
    }
}

#[cfg(test)]
mod glob_tests {
    use super::glob;

    #[test]
    fn glob_table() {
        for (p, n, want) in [
            ("eth*", "eth0", true),
            ("eth*", "veth0", false),
            ("*0", "veth0", true),
            ("lxc*x", "lxc12x", true),
            ("br0", "br0", true),
            ("br0", "br01", false),
            ("*", "x", true),
        ] {
            assert_eq!(glob(p, n), want, "{p} {n}");
        }
    }
}

/// rtnetlink multicast group of link changes.
const RTMGRP_LINK: u32 = 1;

/// Poke `changed` whenever the kernel reports a link change (added, removed, up,
/// down, address), so interfaces are rescanned at once rather than on a timer.
pub async fn watch_links(changed: std::sync::Arc<tokio::sync::Notify>) -> io::Result<()> {
    use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};
    let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
    sock.socket_mut().bind(&SocketAddr::new(0, RTMGRP_LINK))?;
    loop {
        // The content does not matter: any link message means "rescan".
        let _ = sock.recv_from_full().await?;
        changed.notify_one();
    }
}

#[cfg(test)]
mod md5_tests {
    use std::os::fd::AsRawFd;

    use super::{TCP_MD5SIG_MAXKEYLEN, set_tcp_md5};

    #[test]
    fn the_kernel_takes_a_key_per_peer_of_either_family_and_long_keys_are_refused() {
        let s4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_tcp_md5(s4.as_raw_fd(), "127.0.0.2:179".parse().unwrap(), b"secret").unwrap();
        if let Ok(s6) = std::net::TcpListener::bind("[::1]:0") {
            set_tcp_md5(s6.as_raw_fd(), "[::1]:179".parse().unwrap(), b"secret").unwrap();
        }
        let long = vec![b'k'; TCP_MD5SIG_MAXKEYLEN + 1];
        let e = set_tcp_md5(s4.as_raw_fd(), "127.0.0.2:179".parse().unwrap(), &long).unwrap_err();
        assert!(e.to_string().contains("1 to 80 bytes, not 81"), "{e}");
        assert!(set_tcp_md5(s4.as_raw_fd(), "127.0.0.2:179".parse().unwrap(), b"").is_err());
    }
}
