//! Netlink messages built by hand from the uapi layouts: a header, a fixed
//! part, then attributes (4-byte aligned; nested ones flagged
//! `NLA_F_NESTED` and sized when closed).

pub(crate) const NLA_F_NESTED: u16 = 0x8000;

/// An address in network order (4 or 16 bytes), as attributes carry it.
pub(crate) fn octets(a: std::net::IpAddr) -> Vec<u8> {
    match a {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}
/// The attributes of a netlink payload: (type without flags, data).
pub(crate) fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((kind, &b[4..len]));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

/// Each netlink message of a datagram: (type, payload after the header).
pub(crate) fn messages(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 16 || len > b.len() {
            break;
        }
        out.push((u16::from_ne_bytes([b[4], b[5]]), &b[16..len]));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;

/// A netlink message under construction: header, fixed part, attributes.
pub struct Msg {
    pub buf: Vec<u8>,
    /// Offsets of open nested attributes (their length is patched on close).
    open: Vec<usize>,
}

impl Msg {
    /// A request of type `kind` with `NLM_F_REQUEST | NLM_F_ACK` and `flags`.
    pub fn new(kind: u16, flags: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched in finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
        Msg { buf, open: Vec::new() }
    }

    /// Appends a fixed-size header (`ifinfomsg`, `nfgenmsg`, ...).
    pub fn bytes(mut self, b: &[u8]) -> Msg {
        self.buf.extend_from_slice(b);
        self
    }

    /// An attribute holding a big-endian u32 (netfilter's convention).
    pub fn be32(self, kind: u16, v: u32) -> Msg {
        self.attr(kind, &v.to_be_bytes())
    }

    /// An attribute holding a NUL-terminated string.
    pub fn str(self, kind: u16, s: &str) -> Msg {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    pub fn attr(mut self, kind: u16, data: &[u8]) -> Msg {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// Opens a nested attribute (closed by [`Msg::end`]).
    pub fn begin(mut self, kind: u16) -> Msg {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end(mut self) -> Msg {
        if let Some(at) = self.open.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// The message with its length set.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}
