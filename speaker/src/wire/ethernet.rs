//! Ethernet II frames, untagged or with one 802.1Q tag.

use super::{Error, Mac, Result, u16_at};

/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType (TPID) of an 802.1Q tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;

mod field {
    use crate::wire::Field;
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    /// The EtherType of an untagged frame, or the TPID of a tagged one.
    pub const ETHERTYPE: Field = 12..14;
    /// 802.1Q: PCP, DEI and the VLAN id.
    pub const TCI: Field = 14..16;
    /// 802.1Q: the EtherType after the tag.
    pub const INNER_ETHERTYPE: Field = 16..18;
}

const UNTAGGED_HEADER: usize = field::ETHERTYPE.end;
const TAGGED_HEADER: usize = field::INNER_ETHERTYPE.end;

/// A view over an Ethernet frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap without checking; accessors may panic on short buffers. Prefer [`Frame::new_checked`].
    pub fn new_unchecked(buf: T) -> Self {
        Frame { buf }
    }

    /// Wrap, checking with [`Frame::check_len`].
    pub fn new_checked(buf: T) -> Result<Self> {
        let f = Frame { buf };
        f.check_len()?;
        Ok(f)
    }

    /// Ensure that no accessor panics: the header, and the VLAN tag when the TPID
    /// says there is one, fit.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buf.as_ref();
        if b.len() < UNTAGGED_HEADER || (self.tagged() && b.len() < TAGGED_HEADER) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Destination address.
    pub fn dst(&self) -> Mac {
        Mac::from_slice(&self.buf.as_ref()[field::DESTINATION])
    }

    /// Source address.
    pub fn src(&self) -> Mac {
        Mac::from_slice(&self.buf.as_ref()[field::SOURCE])
    }

    /// Whether the frame carries an 802.1Q tag (false on a buffer too short to say).
    fn tagged(&self) -> bool {
        let b = self.buf.as_ref();
        b.len() >= UNTAGGED_HEADER && u16_at(b, field::ETHERTYPE) == ETHERTYPE_VLAN
    }

    /// The 802.1Q VLAN id, if tagged.
    pub fn vlan(&self) -> Option<u16> {
        self.tagged().then(|| u16_at(self.buf.as_ref(), field::TCI) & 0x0fff)
    }

    /// The EtherType of the payload (after the tag, if any).
    pub fn ethertype(&self) -> u16 {
        let f = if self.tagged() { field::INNER_ETHERTYPE } else { field::ETHERTYPE };
        u16_at(self.buf.as_ref(), f)
    }

    /// Header length (14, or 18 when tagged).
    pub fn header_len(&self) -> usize {
        if self.tagged() { TAGGED_HEADER } else { UNTAGGED_HEADER }
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Set the destination.
    pub fn set_dst(&mut self, m: Mac) {
        self.buf.as_mut()[field::DESTINATION].copy_from_slice(&m.0);
    }
    /// Set the source.
    pub fn set_src(&mut self, m: Mac) {
        self.buf.as_mut()[field::SOURCE].copy_from_slice(&m.0);
    }
    /// Write the tag (if any) and EtherType; the buffer must be long enough.
    pub fn set_type(&mut self, vlan: Option<u16>, ethertype: u16) {
        let b = self.buf.as_mut();
        match vlan {
            Some(v) => {
                b[field::ETHERTYPE].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
                b[field::TCI].copy_from_slice(&(v & 0x0fff).to_be_bytes());
                b[field::INNER_ETHERTYPE].copy_from_slice(&ethertype.to_be_bytes());
            }
            None => b[field::ETHERTYPE].copy_from_slice(&ethertype.to_be_bytes()),
        }
    }
    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buf.as_mut()[h..]
    }
}

/// An Ethernet header, lifted out of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub dst: Mac,
    pub src: Mac,
    /// VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// EtherType of the payload.
    pub ethertype: u16,
}

impl Repr {
    /// Lift the header out of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(f: &Frame<T>) -> Result<Repr> {
        Ok(Repr { dst: f.dst(), src: f.src(), vlan: f.vlan(), ethertype: f.ethertype() })
    }

    /// Header length this repr emits.
    pub fn header_len(&self) -> usize {
        if self.vlan.is_some() { TAGGED_HEADER } else { UNTAGGED_HEADER }
    }

    /// Write the header into `f` (which must hold at least `header_len()` bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, f: &mut Frame<T>) {
        f.set_dst(self.dst);
        f.set_src(self.src);
        f.set_type(self.vlan, self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTAGGED: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x08, 0x06, // ARP
        0xaa, 0xbb, // payload
    ];
    const TAGGED: [u8; 20] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0x20,
        0x64, // PCP 1, VID 100
        0x86, 0xdd, 0xcc, 0xdd,
    ];

    #[test]
    fn read_untagged_and_tagged() {
        let f = Frame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(
            (f.dst(), f.src().to_string(), f.ethertype(), f.vlan()),
            (Mac::BROADCAST, "02:00:00:00:00:01".into(), ETHERTYPE_ARP, None)
        );
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
        let t = Frame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!((t.vlan(), t.ethertype(), t.payload()), (Some(100), ETHERTYPE_IPV6, &[0xcc, 0xdd][..]));
    }

    #[test]
    fn parse_and_emit_round_trip() {
        for bytes in [&UNTAGGED[..], &TAGGED[..]] {
            let f = Frame::new_checked(bytes).unwrap();
            let r = Repr::parse(&f).unwrap();
            let mut out = vec![0xa5u8; bytes.len()];
            let mut g = Frame::new_unchecked(&mut out[..]);
            r.emit(&mut g);
            g.payload_mut().copy_from_slice(f.payload());
            let mut expect = bytes.to_vec();
            // The PCP bits are not represented; emit writes priority 0.
            if r.vlan.is_some() {
                expect[14] &= 0x0f;
            }
            assert_eq!(out, expect);
        }
    }

    #[test]
    fn short_frames_are_rejected() {
        assert_eq!(Frame::new_checked(&UNTAGGED[..13]).unwrap_err(), Error::Truncated);
        assert_eq!(Frame::new_checked(&TAGGED[..17]).unwrap_err(), Error::Truncated);
    }
}
