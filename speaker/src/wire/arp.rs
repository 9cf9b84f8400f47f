//! ARP for IPv4 over Ethernet (RFC 826).

use std::net::Ipv4Addr;

use super::{Error, Mac, Result, u16_at};

mod field {
    use crate::wire::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const LEN: usize = field::TPA.end;

/// A view over an ARP packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

fn v4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking; accessors may panic on a short buffer.
    pub fn new_unchecked(buf: T) -> Self {
        Packet { buf }
    }
    /// Wrap, checking with [`Packet::check_len`].
    pub fn new_checked(buf: T) -> Result<Self> {
        let p = Packet { buf };
        p.check_len()?;
        Ok(p)
    }
    /// Ensure that no accessor panics: the buffer holds an Ethernet/IPv4 ARP packet's
    /// [`LEN`] bytes (trailing Ethernet padding is allowed).
    pub fn check_len(&self) -> Result<()> {
        if self.buf.as_ref().len() < LEN { Err(Error::Truncated) } else { Ok(()) }
    }
    /// Hardware type (1 = Ethernet).
    pub fn htype(&self) -> u16 {
        u16_at(self.buf.as_ref(), field::HTYPE)
    }
    /// Protocol type (0x0800 = IPv4).
    pub fn ptype(&self) -> u16 {
        u16_at(self.buf.as_ref(), field::PTYPE)
    }
    /// Hardware address length.
    pub fn hlen(&self) -> u8 {
        self.buf.as_ref()[field::HLEN]
    }
    /// Protocol address length.
    pub fn plen(&self) -> u8 {
        self.buf.as_ref()[field::PLEN]
    }
    /// Operation (1 request, 2 reply).
    pub fn op(&self) -> u16 {
        u16_at(self.buf.as_ref(), field::OPER)
    }
    /// Sender hardware address.
    pub fn sha(&self) -> Mac {
        Mac::from_slice(&self.buf.as_ref()[field::SHA])
    }
    /// Sender protocol address.
    pub fn spa(&self) -> Ipv4Addr {
        v4(&self.buf.as_ref()[field::SPA])
    }
    /// Target hardware address.
    pub fn tha(&self) -> Mac {
        Mac::from_slice(&self.buf.as_ref()[field::THA])
    }
    /// Target protocol address.
    pub fn tpa(&self) -> Ipv4Addr {
        v4(&self.buf.as_ref()[field::TPA])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the fixed Ethernet/IPv4 header fields.
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buf.as_mut();
        b[field::HTYPE].copy_from_slice(&1u16.to_be_bytes());
        b[field::PTYPE].copy_from_slice(&0x0800u16.to_be_bytes());
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }
    /// Set the operation.
    pub fn set_op(&mut self, op: u16) {
        self.buf.as_mut()[field::OPER].copy_from_slice(&op.to_be_bytes());
    }
    /// Set the sender addresses.
    pub fn set_sender(&mut self, mac: Mac, ip: Ipv4Addr) {
        let b = self.buf.as_mut();
        b[field::SHA].copy_from_slice(&mac.0);
        b[field::SPA].copy_from_slice(&ip.octets());
    }
    /// Set the target addresses.
    pub fn set_target(&mut self, mac: Mac, ip: Ipv4Addr) {
        let b = self.buf.as_mut();
        b[field::THA].copy_from_slice(&mac.0);
        b[field::TPA].copy_from_slice(&ip.octets());
    }
}

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Who has `tpa`?
    Request,
    /// `spa` is at `sha`.
    Reply,
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub op: Op,
    /// Sender hardware address.
    pub sha: Mac,
    /// Sender IPv4 address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: Mac,
    /// Target IPv4 address.
    pub tpa: Ipv4Addr,
}

impl Repr {
    /// Validate and lift out of a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        if p.htype() != 1 || p.ptype() != 0x0800 || p.hlen() != 6 || p.plen() != 4 {
            return Err(Error::Malformed("not Ethernet/IPv4 ARP"));
        }
        let op = match p.op() {
            1 => Op::Request,
            2 => Op::Reply,
            _ => return Err(Error::Malformed("unknown ARP operation")),
        };
        Ok(Repr { op, sha: p.sha(), spa: p.spa(), tha: p.tha(), tpa: p.tpa() })
    }

    /// Write into a view of at least [`LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_ethernet_ipv4();
        p.set_op(match self.op {
            Op::Request => 1,
            Op::Reply => 2,
        });
        p.set_sender(self.sha, self.spa);
        p.set_target(self.tha, self.tpa);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Who has 198.51.100.7? Tell 198.51.100.1 (02:00:00:00:00:01).
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype, ptype, hlen, plen, op=1
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 198, 51, 100, 1, // sha, spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 198, 51, 100, 7, // tha, tpa
    ];

    #[test]
    fn read_fields() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!((p.htype(), p.ptype(), p.hlen(), p.plen(), p.op()), (1, 0x0800, 6, 4, 1));
        assert_eq!(p.sha().to_string(), "02:00:00:00:00:01");
        assert_eq!(p.spa(), Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(p.tha(), Mac::ZERO);
        assert_eq!(p.tpa(), Ipv4Addr::new(198, 51, 100, 7));
    }

    #[test]
    fn write_fields() {
        let mut buf = [0xa5u8; 28];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_ethernet_ipv4();
        p.set_op(1);
        p.set_sender("02:00:00:00:00:01".parse().unwrap(), Ipv4Addr::new(198, 51, 100, 1));
        p.set_target(Mac::ZERO, Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn parse_emit_round_trip() {
        let r = Repr::parse(&Packet::new_checked(&REQUEST[..]).unwrap()).unwrap();
        assert_eq!(r.op, Op::Request);
        let mut buf = [0xa5u8; 28];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn bad_packets_are_rejected() {
        assert_eq!(Packet::new_checked(&REQUEST[..27]).unwrap_err(), Error::Truncated);
        let mut bad = REQUEST;
        bad[7] = 9;
        assert!(Repr::parse(&Packet::new_checked(&bad[..]).unwrap()).is_err());
        let mut ipv6ish = REQUEST;
        ipv6ish[5] = 16;
        assert!(Repr::parse(&Packet::new_checked(&ipv6ish[..]).unwrap()).is_err());
    }
}
