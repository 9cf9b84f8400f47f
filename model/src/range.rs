//! IP families, address ranges and `spec.addresses` parsing. Pure.

use std::net::IpAddr;

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
    /// `IPv4` / `IPv6`, as in `spec.ipFamilies`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
    /// Parse `IPv4` / `IPv6`.
    pub fn parse(s: &str) -> Option<Family> {
        match s {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }
}

/// An address as an integer, for arithmetic on ranges of either family.
pub fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

/// The address of `family` with integer value `n`.
pub fn from_u128(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(std::net::Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(std::net::Ipv6Addr::from(n)),
    }
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IpRange {
    /// Family of both ends.
    pub family: Family,
    /// First address, as an integer.
    pub start: u128,
    /// Last address, as an integer (inclusive).
    pub end: u128,
}

impl IpRange {
    /// Number of addresses.
    pub fn size(&self) -> u128 {
        self.end - self.start + 1
    }
    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        Family::of(ip) == self.family && (self.start..=self.end).contains(&to_u128(ip))
    }
    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.family == other.family && self.start <= other.end && other.start <= self.end
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", from_u128(self.family, self.start), from_u128(self.family, self.end))
    }
}

/// Parse one `spec.addresses` entry: a CIDR (host bits allowed, as MetalLB does) or `a-b`.
pub fn parse_range(s: &str) -> Result<IpRange, String> {
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let a: IpAddr = a.trim().parse().map_err(|_| format!("{:?} is not an IP address", a.trim()))?;
        let b: IpAddr = b.trim().parse().map_err(|_| format!("{:?} is not an IP address", b.trim()))?;
        if Family::of(&a) != Family::of(&b) {
            return Err("the two ends of a range must be of the same family".into());
        }
        let (start, end) = (to_u128(&a), to_u128(&b));
        if start > end {
            return Err(format!("range start {a} is after its end {b}"));
        }
        return Ok(IpRange { family: Family::of(&a), start, end });
    }
    let (addr, len) = s.split_once('/').ok_or_else(|| format!("{s:?} is neither a CIDR nor a start-end range"))?;
    let ip: IpAddr = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    let len: u32 =
        len.parse().ok().filter(|l| *l <= bits).ok_or_else(|| format!("prefix length {len:?} is not 0-{bits}"))?;
    let host_bits = bits - len;
    let mask: u128 = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    let start = to_u128(&ip) & !mask;
    Ok(IpRange { family: Family::of(&ip), start, end: start | mask })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_metallb() {
        let table = [
            ("198.51.100.0/24", Ok((Family::V4, 256u128))),
            ("198.51.100.7/24", Ok((Family::V4, 256))),
            ("198.51.100.7/32", Ok((Family::V4, 1))),
            ("198.51.100.10-198.51.100.20", Ok((Family::V4, 11))),
            (" 198.51.100.10 - 198.51.100.10 ", Ok((Family::V4, 1))),
            ("fd42:f1b::/64", Ok((Family::V6, 1u128 << 64))),
            ("fd42:f1b::1-fd42:f1b::ff", Ok((Family::V6, 255))),
            ("::/0", Ok((Family::V6, u128::MAX))),
            ("banana", Err("neither a CIDR nor a start-end range")),
            ("198.51.100.0/33", Err("prefix length")),
            ("198.51.100.20-198.51.100.10", Err("is after its end")),
            ("198.51.100.1-fd42::1", Err("same family")),
            ("198.51.100.1-x", Err("not an IP address")),
        ];
        for (input, want) in table {
            match (parse_range(input), want) {
                (Ok(r), Ok((fam, size))) => {
                    assert_eq!(r.family, fam, "{input}");
                    // ::/0 has 2^128 addresses, one more than u128 holds: its size saturates in end-start+1.
                    if size != u128::MAX {
                        assert_eq!(r.size(), size, "{input}");
                    }
                }
                (Err(e), Err(frag)) => assert!(e.contains(frag), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }
}
