//! The IPv6 fixed header (RFC 8200). Extension headers are not followed: NDP
//! messages carry none, and anything else is not for the speaker.

use std::net::Ipv6Addr;

use super::{Error, Result, u16_at};

mod field {
    use crate::wire::Field;
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// Fixed header length.
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// Next-header value of ICMPv6.
pub const NEXT_ICMPV6: u8 = 58;

/// A view over an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(b);
    Ipv6Addr::from(o)
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking; accessors may panic on a short buffer.
    pub fn new_unchecked(buf: T) -> Self {
        Packet { buf }
    }
    /// Wrap, checking with [`Packet::check_len`] and that the version is 6.
    pub fn new_checked(buf: T) -> Result<Self> {
        let p = Packet { buf };
        p.check_len()?;
        if p.version() != 6 {
            return Err(Error::Malformed("IP version is not 6"));
        }
        Ok(p)
    }
    /// Ensure that no accessor panics: the fixed header fits, and so does the payload
    /// its length field announces.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buf.as_ref();
        if b.len() < HEADER_LEN || HEADER_LEN + usize::from(u16_at(b, field::LENGTH)) > b.len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }
    /// Version (6).
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[field::VER_TC_FLOW.start] >> 4
    }
    /// Payload length.
    pub fn payload_len(&self) -> u16 {
        u16_at(self.buf.as_ref(), field::LENGTH)
    }
    /// Next header.
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[field::NXT_HDR]
    }
    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[field::HOP_LIMIT]
    }
    pub fn src(&self) -> Ipv6Addr {
        addr(&self.buf.as_ref()[field::SRC_ADDR])
    }
    pub fn dst(&self) -> Ipv6Addr {
        addr(&self.buf.as_ref()[field::DST_ADDR])
    }
    /// The payload (Ethernet padding beyond the payload length excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Write the whole fixed header (traffic class and flow label zero).
    pub fn set_header(&mut self, payload_len: u16, next_header: u8, hop_limit: u8, src: Ipv6Addr, dst: Ipv6Addr) {
        let b = self.buf.as_mut();
        b[field::VER_TC_FLOW].copy_from_slice(&[0x60, 0, 0, 0]);
        b[field::LENGTH].copy_from_slice(&payload_len.to_be_bytes());
        b[field::NXT_HDR] = next_header;
        b[field::HOP_LIMIT] = hop_limit;
        b[field::SRC_ADDR].copy_from_slice(&src.octets());
        b[field::DST_ADDR].copy_from_slice(&dst.octets());
    }
    /// The payload, writable (sized by the header's payload length).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let n = usize::from(self.payload_len());
        &mut self.buf.as_mut()[HEADER_LEN..HEADER_LEN + n]
    }
}

/// An IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Payload length.
    pub payload_len: u16,
}

impl Repr {
    /// Lift out of a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            payload_len: p.payload_len(),
        })
    }
    /// Write into a view of at least `HEADER_LEN + payload_len` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_header(self.payload_len, self.next_header, self.hop_limit, self.src, self.dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = vec![0x60, 0, 0, 0, 0, 2, 58, 255];
        b.extend_from_slice(&"fd42:f1b::1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"ff02::1:ff00:7".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&[0xab, 0xcd, 0, 0]); // payload + 2 bytes of Ethernet padding
        b
    }

    #[test]
    fn read_fields() {
        let b = sample();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.version(), p.payload_len(), p.next_header(), p.hop_limit()), (6, 2, 58, 255));
        assert_eq!(p.src(), "fd42:f1b::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst(), "ff02::1:ff00:7".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &[0xab, 0xcd], "padding excluded");
    }

    #[test]
    fn emit_round_trip() {
        let b = sample();
        let r = Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap();
        let mut out = vec![0xa5u8; HEADER_LEN + 2];
        let mut p = Packet::new_unchecked(&mut out[..]);
        r.emit(&mut p);
        p.payload_mut().copy_from_slice(&[0xab, 0xcd]);
        assert_eq!(out, b[..HEADER_LEN + 2]);
    }

    #[test]
    fn bad_headers_are_rejected() {
        let b = sample();
        assert_eq!(Packet::new_checked(&b[..39]).unwrap_err(), Error::Truncated);
        let mut v4 = b.clone();
        v4[0] = 0x45;
        assert!(Packet::new_checked(&v4[..]).is_err());
        let mut long = b.clone();
        long[5] = 200;
        assert_eq!(Packet::new_checked(&long[..]).unwrap_err(), Error::Truncated);
    }
}
