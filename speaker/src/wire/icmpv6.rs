//! ICMPv6 Neighbor Solicitation and Advertisement (RFC 4861) with the
//! source/target link-layer address options and the pseudo-header checksum.

use std::net::Ipv6Addr;

use super::{Error, Mac, Result, checksum, ipv6::NEXT_ICMPV6, u16_at};

/// ICMPv6 type of a Neighbor Solicitation.
pub const NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 type of a Neighbor Advertisement.
pub const NEIGHBOR_ADVERT: u8 = 136;
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;

mod field {
    use crate::wire::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// NA: the R, S and O flags in the top bits; NS: reserved.
    pub const FLAGS: usize = 4;
    /// NS/NA: reserved after the flags byte.
    pub const RESERVED: Field = 5..8;
    /// NS/NA: the target address.
    pub const TARGET: Field = 8..24;
    /// Any message: the header every ICMPv6 message has.
    pub const HEADER_END: usize = 4;
    /// NS/NA: where the options start.
    pub const OPTIONS: usize = 24;
    /// An NDP link-layer address option: type, length (in 8-byte units), address.
    pub const OPT_TYPE: usize = 0;
    pub const OPT_LEN: usize = 1;
    pub const OPT_LLADDR: Field = 2..8;
}

/// NS/NA header length: type, code, checksum, flags/reserved, target.
const BASE_LEN: usize = field::OPTIONS;

/// A view over an ICMPv6 message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
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
    /// Ensure that no accessor panics: the 4-byte ICMPv6 header fits, and for a
    /// neighbor solicitation or advertisement the 24-byte NDP header does too.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buf.as_ref();
        if b.len() < field::HEADER_END || (self.is_ndp() && b.len() < BASE_LEN) {
            return Err(Error::Truncated);
        }
        Ok(())
    }
    fn is_ndp(&self) -> bool {
        matches!(self.buf.as_ref().get(field::TYPE), Some(&NEIGHBOR_SOLICIT | &NEIGHBOR_ADVERT))
    }
    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[field::TYPE]
    }
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[field::CODE]
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        u16_at(self.buf.as_ref(), field::CHECKSUM)
    }
    /// Whether the checksum over the pseudo-header and message is right.
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        pseudo_checksum(src, dst, self.buf.as_ref()) == 0
    }
    /// NA flags byte (R, S, O in the top bits); 0 for other messages.
    pub fn flags(&self) -> u8 {
        if self.is_ndp() { self.buf.as_ref()[field::FLAGS] } else { 0 }
    }
    /// Target address of an NS or NA; `None` for other messages.
    pub fn target(&self) -> Option<Ipv6Addr> {
        let mut o = [0u8; 16];
        o.copy_from_slice(self.buf.as_ref().get(field::TARGET).filter(|_| self.is_ndp())?);
        Some(Ipv6Addr::from(o))
    }
    /// The options area of an NS or NA; empty for other messages.
    pub fn options(&self) -> &[u8] {
        if self.is_ndp() { &self.buf.as_ref()[field::OPTIONS..] } else { &[] }
    }
}

fn pseudo_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let len = (msg.len() as u32).to_be_bytes();
    checksum(&[&src.octets(), &dst.octets(), &len, &[0, 0, 0, NEXT_ICMPV6], msg])
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Compute and store the checksum for the given addresses.
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.buf.as_mut()[field::CHECKSUM].copy_from_slice(&[0, 0]);
        let c = pseudo_checksum(src, dst, self.buf.as_ref());
        self.buf.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}

/// An NS or NA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    /// Who has `target`?
    NeighborSolicit {
        /// Address asked for.
        target: Ipv6Addr,
        /// The asker's link-layer address (absent in DAD probes).
        source_lladdr: Option<Mac>,
    },
    /// `target` is at `target_lladdr`.
    NeighborAdvert {
        /// Router flag.
        router: bool,
        /// Solicited flag (a reply to an NS).
        solicited: bool,
        /// Override flag (replace a cached entry).
        override_: bool,
        /// Address advertised.
        target: Ipv6Addr,
        /// Its link-layer address.
        target_lladdr: Option<Mac>,
    },
}

/// Walk NDP options, returning the first source and target link-layer addresses.
fn lladdr_options(mut opts: &[u8]) -> Result<(Option<Mac>, Option<Mac>)> {
    let (mut source, mut target) = (None, None);
    while !opts.is_empty() {
        if opts.len() < 2 {
            return Err(Error::Truncated);
        }
        let len = usize::from(opts[field::OPT_LEN]) * 8;
        if len == 0 {
            return Err(Error::Malformed("NDP option with length zero"));
        }
        if opts.len() < len {
            return Err(Error::Truncated);
        }
        match opts[field::OPT_TYPE] {
            OPT_SOURCE_LLADDR if len >= 8 => source = source.or(Some(Mac::from_slice(&opts[field::OPT_LLADDR]))),
            OPT_TARGET_LLADDR if len >= 8 => target = target.or(Some(Mac::from_slice(&opts[field::OPT_LLADDR]))),
            _ => {}
        }
        opts = &opts[len..];
    }
    Ok((source, target))
}

impl Repr {
    /// Validate (code, length, checksum, options, target) and lift out of a checked view.
    pub fn parse<T: AsRef<[u8]>>(src: &Ipv6Addr, dst: &Ipv6Addr, p: &Packet<T>) -> Result<Repr> {
        let t = p.msg_type();
        if t != NEIGHBOR_SOLICIT && t != NEIGHBOR_ADVERT {
            return Err(Error::Malformed("not a neighbor solicitation or advertisement"));
        }
        if p.code() != 0 {
            return Err(Error::Malformed("NDP code is not 0"));
        }
        if !p.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        let target = p.target().ok_or(Error::Truncated)?;
        if target.is_multicast() {
            return Err(Error::Malformed("NDP target is multicast"));
        }
        let (source_lladdr, target_lladdr) = lladdr_options(p.options())?;
        if t == NEIGHBOR_SOLICIT {
            if src.is_unspecified() && source_lladdr.is_some() {
                return Err(Error::Malformed("DAD probe with a source link-layer option"));
            }
            return Ok(Repr::NeighborSolicit { target, source_lladdr });
        }
        let f = p.flags();
        Ok(Repr::NeighborAdvert {
            router: f & 0x80 != 0,
            solicited: f & 0x40 != 0,
            override_: f & 0x20 != 0,
            target,
            target_lladdr,
        })
    }

    /// Bytes this message takes.
    pub fn buffer_len(&self) -> usize {
        let has_opt = match self {
            Repr::NeighborSolicit { source_lladdr, .. } => source_lladdr.is_some(),
            Repr::NeighborAdvert { target_lladdr, .. } => target_lladdr.is_some(),
        };
        BASE_LEN + if has_opt { 8 } else { 0 }
    }

    /// Write into a view of exactly `buffer_len()` bytes and fill the checksum.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, src: &Ipv6Addr, dst: &Ipv6Addr, p: &mut Packet<T>) {
        let b = p.buf.as_mut();
        let (t, flags, target, opt) = match *self {
            Repr::NeighborSolicit { target, source_lladdr } => {
                (NEIGHBOR_SOLICIT, 0, target, source_lladdr.map(|m| (OPT_SOURCE_LLADDR, m)))
            }
            Repr::NeighborAdvert { router, solicited, override_, target, target_lladdr } => (
                NEIGHBOR_ADVERT,
                (u8::from(router) << 7) | (u8::from(solicited) << 6) | (u8::from(override_) << 5),
                target,
                target_lladdr.map(|m| (OPT_TARGET_LLADDR, m)),
            ),
        };
        b[field::TYPE] = t;
        b[field::CODE] = 0;
        b[field::FLAGS] = flags;
        b[field::RESERVED].fill(0);
        b[field::TARGET].copy_from_slice(&target.octets());
        if let Some((kind, mac)) = opt {
            let o = &mut b[field::OPTIONS..];
            o[field::OPT_TYPE] = kind;
            o[field::OPT_LEN] = 1;
            o[field::OPT_LLADDR].copy_from_slice(&mac.0);
        }
        p.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// NS from fd42:f1b::1 (02:00:00:00:00:01) for fd42:f1b::7 to its solicited-node group.
    fn ns_bytes() -> Vec<u8> {
        let mut b = vec![135, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&ip("fd42:f1b::7").octets());
        b.extend_from_slice(&[1, 1, 0x02, 0, 0, 0, 0, 0x01]);
        let c = pseudo_checksum(&ip("fd42:f1b::1"), &ip("ff02::1:ff00:7"), &b);
        b[2..4].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn read_fields_and_checksum() {
        let b = ns_bytes();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.msg_type(), p.code()), (135, 0));
        assert_eq!(p.target(), Some(ip("fd42:f1b::7")));
        assert!(p.verify_checksum(&ip("fd42:f1b::1"), &ip("ff02::1:ff00:7")));
        assert!(!p.verify_checksum(&ip("fd42:f1b::2"), &ip("ff02::1:ff00:7")), "pseudo-header covers the source");
    }

    #[test]
    fn parse_and_emit_ns() {
        let b = ns_bytes();
        let (src, dst) = (ip("fd42:f1b::1"), ip("ff02::1:ff00:7"));
        let r = Repr::parse(&src, &dst, &Packet::new_checked(&b[..]).unwrap()).unwrap();
        assert_eq!(
            r,
            Repr::NeighborSolicit {
                target: ip("fd42:f1b::7"),
                source_lladdr: Some("02:00:00:00:00:01".parse().unwrap())
            }
        );
        let mut out = vec![0xa5u8; r.buffer_len()];
        r.emit(&src, &dst, &mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, b);
    }

    #[test]
    fn emit_and_parse_na_with_flags() {
        let na = Repr::NeighborAdvert {
            router: false,
            solicited: true,
            override_: true,
            target: ip("fd42:f1b::7"),
            target_lladdr: Some("02:00:00:00:00:02".parse().unwrap()),
        };
        let (src, dst) = (ip("fd42:f1b::7"), ip("fd42:f1b::1"));
        let mut out = vec![0xa5u8; na.buffer_len()];
        na.emit(&src, &dst, &mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out[0], 136);
        assert_eq!(out[4], 0x60, "S and O set");
        assert_eq!(&out[24..32], &[2, 1, 0x02, 0, 0, 0, 0, 0x02]);
        assert_eq!(Repr::parse(&src, &dst, &Packet::new_checked(&out[..]).unwrap()).unwrap(), na);
    }

    #[test]
    fn bad_messages_are_rejected() {
        let (src, dst) = (ip("fd42:f1b::1"), ip("ff02::1:ff00:7"));
        let parse = |b: &[u8]| Repr::parse(&src, &dst, &Packet::new_checked(b).unwrap());
        let mut bad_sum = ns_bytes();
        bad_sum[3] ^= 1;
        assert_eq!(parse(&bad_sum).unwrap_err(), Error::Checksum);
        let mut zero_opt = ns_bytes();
        zero_opt[25] = 0;
        let c = pseudo_checksum(&src, &dst, &{
            let mut z = zero_opt.clone();
            z[2] = 0;
            z[3] = 0;
            z
        });
        zero_opt[2..4].copy_from_slice(&c.to_be_bytes());
        assert!(matches!(parse(&zero_opt).unwrap_err(), Error::Malformed(_)));
        assert_eq!(Packet::new_checked(&ns_bytes()[..20]).unwrap_err(), Error::Truncated);
        let echo = [128u8, 0, 0, 0];
        assert!(parse(&echo).is_err());
    }

    #[test]
    fn no_accessor_panics_on_any_checked_view() {
        // Every length up to past the NDP header, every type: a checked view answers.
        for t in [0u8, 1, 128, 133, NEIGHBOR_SOLICIT, NEIGHBOR_ADVERT, 255] {
            for len in 0..40 {
                let mut b = vec![0xa5u8; len];
                if let Some(first) = b.first_mut() {
                    *first = t;
                }
                let Ok(p) = Packet::new_checked(&b[..]) else {
                    assert!(len < 4 || (len < BASE_LEN && (t == NEIGHBOR_SOLICIT || t == NEIGHBOR_ADVERT)));
                    continue;
                };
                let _ = (p.msg_type(), p.code(), p.checksum(), p.flags(), p.options().len());
                assert_eq!(p.target().is_some(), t == NEIGHBOR_SOLICIT || t == NEIGHBOR_ADVERT, "type {t} len {len}");
            }
        }
    }
}
