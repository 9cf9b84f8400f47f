//! The real [`Io`] of the announcer: a packet socket per interface for sending,
//! and IPv6 sockets whose multicast memberships make the kernel send the MLD
//! reports snooping switches need.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv6Addr;
use std::sync::Arc;

use ferrolb_speaker_sys::{PacketSocket, if_index};

use crate::l2::announcer::Io;

/// Something that sends frames out of one interface.
pub trait SendFrame: Send + Sync + std::fmt::Debug {
    /// The interface name.
    fn iface(&self) -> &str;
    /// Send one frame.
    fn send_frame(&self, frame: &[u8]) -> io::Result<()>;
}

impl SendFrame for PacketSocket {
    fn iface(&self) -> &str {
        self.name()
    }
    fn send_frame(&self, frame: &[u8]) -> io::Result<()> {
        self.send(frame)
    }
}

/// Packet sockets per interface and IPv6 sockets holding multicast memberships.
#[derive(Debug, Default)]
pub struct SysIo {
    sockets: BTreeMap<String, Arc<dyn SendFrame>>,
    groups: BTreeMap<(String, Ipv6Addr), socket2::Socket>,
}

impl SysIo {
    /// Use `sock` for sending on its interface.
    pub fn add(&mut self, sock: Arc<dyn SendFrame>) {
        self.sockets.insert(sock.iface().to_string(), sock);
    }
    /// Forget an interface (its sockets close when the last user drops them).
    pub fn remove(&mut self, name: &str) {
        self.sockets.remove(name);
        self.groups.retain(|(i, _), _| i != name);
    }
}

impl Io for SysIo {
    fn send(&mut self, iface: &str, frame: &[u8]) -> io::Result<()> {
        self.sockets
            .get(iface)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no socket on {iface}")))?
            .send_frame(frame)
    }
    fn join(&mut self, iface: &str, group: Ipv6Addr) -> io::Result<()> {
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)?;
        s.join_multicast_v6(&group, if_index(iface)?)?;
        self.groups.insert((iface.to_string(), group), s);
        Ok(())
    }
    fn leave(&mut self, iface: &str, group: Ipv6Addr) -> io::Result<()> {
        // Closing the socket drops the membership.
        self.groups.remove(&(iface.to_string(), group));
        Ok(())
    }
}
