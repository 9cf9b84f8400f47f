//! Packet views and representations, in smoltcp's style: a zero-copy view over
//! bytes whose fields are named byte ranges (a `mod field` per packet), a
//! checked constructor (`new_checked`, via `check_len`) after which no accessor
//! can panic, plus a `Repr` with `parse` (validate and lift out of the view) and
//! `emit` (write into a view). Pure: no I/O, nothing that can panic on input
//! from the wire. Emit tests start from buffers filled with 0xa5, so a field
//! that is never written shows.

pub mod arp;
pub mod ethernet;
pub mod icmpv6;
pub mod ipv6;

use std::net::Ipv6Addr;

/// Why bytes are not a valid packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than the header or than a length field says.
    #[error("truncated")]
    Truncated,
    /// A field has a value the protocol does not allow here.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// The checksum does not match.
    #[error("bad checksum")]
    Checksum,
}

/// Result alias for the wire module.
pub type Result<T> = std::result::Result<T, Error>;

/// A field: a range of bytes in a header.
pub type Field = std::ops::Range<usize>;

/// The big-endian `u16` at `f` (two bytes).
fn u16_at(b: &[u8], f: Field) -> u16 {
    u16::from_be_bytes([b[f.start], b[f.start + 1]])
}

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// `00:00:00:00:00:00` (unknown target in an ARP request).
    pub const ZERO: Mac = Mac([0; 6]);

    /// From the first six bytes of `b` (callers check the length).
    pub fn from_slice(b: &[u8]) -> Mac {
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[..6]);
        Mac(m)
    }

    /// Whether the group bit is set (multicast or broadcast).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The Ethernet multicast address an IPv6 multicast address maps to (33:33 + low 32 bits).
    pub fn ipv6_multicast(ip: &Ipv6Addr) -> Mac {
        let o = ip.octets();
        Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl std::str::FromStr for Mac {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mac> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(Error::Malformed("MAC address needs six octets"));
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            m[i] = u8::from_str_radix(p, 16).map_err(|_| Error::Malformed("MAC octet is not hex"))?;
        }
        Ok(Mac(m))
    }
}

/// The solicited-node multicast address of `ip` (ff02::1:ffXX:XXXX), where NS for it are sent.
pub fn solicited_node(ip: &Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]))
}

/// The Internet checksum (RFC 1071) over `chunks`, as the final one's-complement value.
pub fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for c in chunks {
        let mut it = c.chunks_exact(2);
        for w in &mut it {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = it.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_display_and_multicast() {
        let m: Mac = "02:42:ac:11:00:02".parse().unwrap();
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert!(!m.is_multicast());
        assert!(Mac::BROADCAST.is_multicast());
        assert!("02:42".parse::<Mac>().is_err());
        assert!("zz:42:ac:11:00:02".parse::<Mac>().is_err());
    }

    #[test]
    fn solicited_node_address_and_mac() {
        let ip: Ipv6Addr = "fd42:f1b::1:2:3456:789a".parse().unwrap();
        let sn = solicited_node(&ip);
        assert_eq!(sn, "ff02::1:ff56:789a".parse::<Ipv6Addr>().unwrap());
        assert_eq!(Mac::ipv6_multicast(&sn), Mac([0x33, 0x33, 0xff, 0x56, 0x78, 0x9a]));
    }

    #[test]
    fn rfc1071_checksum() {
        // Example from RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2, checksum 220d.
        assert_eq!(checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]), 0x220d);
        // Odd length pads with zero; splitting at even boundaries changes nothing.
        assert_eq!(checksum(&[&[0x00, 0x01, 0xf2, 0x03], &[0xf4, 0xf5, 0xf6, 0xf7]]), 0x220d);
        assert_eq!(checksum(&[&[0xab]]), !0xab00);
    }
}
