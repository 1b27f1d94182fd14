//! A small synchronous rtnetlink client: exactly the requests cloche needs
//! (veth pairs, link state, addresses, routes), each sent with `NLM_F_ACK`
//! and answered by the kernel's error code. Messages are built by hand from
//! the uapi layouts (`linux/netlink.h`, `linux/rtnetlink.h`,
//! `linux/if_link.h`, `linux/veth.h`): no async runtime, no `ip` command.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::msg::{attrs, messages, octets, Msg};

// uapi constants not all in libc
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;
const RTA_DST: u16 = 1;
const RTA_GATEWAY: u16 = 5;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_GETADDR: u16 = 22;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    /// The kernel refused a request: which one, and its errno.
    #[error("{op}: {source}")]
    Refused { op: &'static str, source: io::Error },
    #[error("{op}: {why}")]
    Invalid { op: &'static str, why: String },
}

/// `struct ifinfomsg`: family, pad, type, index, flags, change.
fn ifinfo(index: i32, flags: u32, change: u32) -> Vec<u8> {
    let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    b.extend_from_slice(&index.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&change.to_ne_bytes());
    b
}

fn name_attr(name: &str) -> Result<Vec<u8>, RtnlError> {
    if name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || name.bytes().any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(RtnlError::Invalid {
            op: "interface name",
            why: format!("{name:?}: 1 to 15 bytes, no NUL, / or space"),
        });
    }
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    Ok(v)
}

/// An rtnetlink socket, bound to the network namespace it was opened in.
pub struct Rtnl {
    fd: OwnedFd,
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Rtnl, RtnlError> {
        // SAFETY: plain socket(2) call; the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(RtnlError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: fd was just returned by socket(2) and is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed with the family set binds
        // to a kernel-chosen port id.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: bind with a pointer to our sockaddr and its size.
        let r = unsafe {
            libc::bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_nl).cast(), size_of::<libc::sockaddr_nl>() as u32)
        };
        if r != 0 {
            return Err(RtnlError::Socket(io::Error::last_os_error()));
        }
        Ok(Rtnl { fd })
    }

    /// Sends one request and waits for its acknowledgement (anything else
    /// that arrives, a notification, is not ours).
    fn request(&self, op: &'static str, msg: Vec<u8>) -> Result<(), RtnlError> {
        self.ask(op, msg, |_, _| {})
    }

    /// Creates a veth pair: `host` here, `peer` directly inside the network
    /// namespace `peer_ns` (no move between namespaces, which costs tens of
    /// milliseconds; the peer dies with its namespace).
    pub fn add_veth(&self, host: &str, peer: &str, peer_ns: BorrowedFd<'_>) -> Result<(), RtnlError> {
        let ns = peer_ns.as_raw_fd().to_ne_bytes();
        let peer_info =
            Msg::new(0, 0).bytes(&ifinfo(0, 0, 0)).attr(IFLA_IFNAME, &name_attr(peer)?).attr(IFLA_NET_NS_FD, &ns);
        // The peer's ifinfomsg and attributes, without a netlink header.
        let peer_body = peer_info.buf[16..].to_vec();
        let msg = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)
            .bytes(&ifinfo(0, 0, 0))
            .attr(IFLA_IFNAME, &name_attr(host)?)
            .begin(IFLA_LINKINFO)
            .attr(IFLA_INFO_KIND, b"veth")
            .begin(IFLA_INFO_DATA)
            .attr(VETH_INFO_PEER, &peer_body)
            .end()
            .end()
            .finish();
        self.request("create veth pair", msg)
    }

    /// The index of interface `name` in this socket's namespace.
    pub fn index(&self, name: &str) -> Result<i32, RtnlError> {
        // RTM_GETLINK by name would need a reply parser; the sysfs view of
        // this namespace is not ours to trust either. Ask the kernel through
        // an ioctl on a socket of the same namespace.
        let c = name_attr(name)?;
        // SAFETY: ifreq is plain data.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(&c) {
            *d = *s as libc::c_char;
        }
        // SAFETY: SIOCGIFINDEX reads ifr_name and writes ifr_ifindex; netlink
        // sockets answer it in their own namespace.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFINDEX as _, &mut ifr) };
        if r != 0 {
            return Err(RtnlError::Refused { op: "interface index", source: io::Error::last_os_error() });
        }
        // SAFETY: the kernel filled the ifindex member of the union.
        Ok(unsafe { ifr.ifr_ifru.ifru_ifindex })
    }

    /// Brings interface `index` up.
    pub fn set_up(&self, index: i32) -> Result<(), RtnlError> {
        let up = libc::IFF_UP as u32;
        self.request("set link up", Msg::new(RTM_NEWLINK, 0).bytes(&ifinfo(index, up, up)).finish())
    }

    /// Deletes interface `index` (a veth: both ends).
    pub fn delete(&self, index: i32) -> Result<(), RtnlError> {
        self.request("delete link", Msg::new(RTM_DELLINK, 0).bytes(&ifinfo(index, 0, 0)).finish())
    }

    /// Adds `addr/prefix` to interface `index`. An IPv6 address is usable
    /// at once: no duplicate address detection (the link is a veth pair
    /// cloche made, with nobody else on it).
    pub fn add_address(&self, index: i32, addr: impl Into<IpAddr>, prefix: u8) -> Result<(), RtnlError> {
        let addr = addr.into();
        let (family, max, flags) = match addr {
            IpAddr::V4(_) => (libc::AF_INET as u8, 32, 0),
            IpAddr::V6(_) => (libc::AF_INET6 as u8, 128, IFA_F_NODAD),
        };
        if prefix > max {
            return Err(RtnlError::Invalid { op: "add address", why: format!("prefix /{prefix}") });
        }
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        // struct ifaddrmsg: family, prefixlen, flags, scope, index
        m.buf.extend_from_slice(&[family, prefix, flags, 0]);
        m.buf.extend_from_slice(&(index as u32).to_ne_bytes());
        let m = m.attr(IFA_LOCAL, &octets(addr)).attr(IFA_ADDRESS, &octets(addr));
        self.request("add address", m.finish())
    }

    /// Adds a route to `dst/prefix` (prefix 0: the default route) via
    /// `gateway`, of the same family.
    pub fn add_route(&self, dst: impl Into<IpAddr>, prefix: u8, gateway: impl Into<IpAddr>) -> Result<(), RtnlError> {
        let (dst, gateway) = (dst.into(), gateway.into());
        let (family, max) = match (dst, gateway) {
            (IpAddr::V4(_), IpAddr::V4(_)) => (libc::AF_INET as u8, 32),
            (IpAddr::V6(_), IpAddr::V6(_)) => (libc::AF_INET6 as u8, 128),
            _ => return Err(RtnlError::Invalid { op: "add route", why: "mixed address families".into() }),
        };
        if prefix > max {
            return Err(RtnlError::Invalid { op: "add route", why: format!("prefix /{prefix}") });
        }
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
        m.buf.extend_from_slice(&[
            family,
            prefix,
            0,
            0,
            libc::RT_TABLE_MAIN,
            libc::RTPROT_BOOT,
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNICAST,
        ]);
        m.buf.extend_from_slice(&0u32.to_ne_bytes());
        let mut m = m.attr(RTA_GATEWAY, &octets(gateway));
        if prefix > 0 {
            m = m.attr(RTA_DST, &octets(dst));
        }
        self.request("add route", m.finish())
    }
}

/// What the host's routing table makes of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Through an interface (its name with the route).
    Unicast,
    /// One of the host's own addresses.
    Local,
    Broadcast,
    Multicast,
    /// Anything else (unreachable, prohibit, blackhole, anycast, ...).
    Other,
}

impl Rtnl {
    /// Sends `msg`, hands every answer that is neither an error nor the end
    /// of a dump to `each` (type, body after the netlink header), until the
    /// kernel is done (`NLMSG_DONE`, or the acknowledgement).
    fn ask(&self, op: &'static str, msg: Vec<u8>, mut each: impl FnMut(u16, &[u8])) -> Result<(), RtnlError> {
        // SAFETY: send from our buffer.
        if unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
            return Err(RtnlError::Refused { op, source: io::Error::last_os_error() });
        }
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: recv into our buffer.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(RtnlError::Refused { op, source: e });
            }
            for (kind, body) in messages(&buf[..n as usize]) {
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = body.get(..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes).unwrap_or(0);
                        return match code {
                            0 => Ok(()),
                            c => Err(RtnlError::Refused { op, source: io::Error::from_raw_os_error(-c) }),
                        };
                    }
                    k => each(k, body),
                }
            }
        }
    }

    /// Every address on this namespace's interfaces, IPv4 and IPv6, with
    /// the broadcast addresses of their networks.
    pub fn addresses(&self) -> Result<Vec<IpAddr>, RtnlError> {
        // struct ifaddrmsg: family, prefixlen, flags, scope, index
        let req = Msg::new(RTM_GETADDR, NLM_F_DUMP).bytes(&[libc::AF_UNSPEC as u8, 0, 0, 0, 0, 0, 0, 0]).finish();
        let mut out = Vec::new();
        self.ask("list addresses", req, |kind, body| {
            if kind == RTM_NEWADDR {
                let found = attrs(body.get(8..).unwrap_or_default()).into_iter();
                let found = found.filter(|(t, _)| matches!(*t, IFA_ADDRESS | IFA_LOCAL | IFA_BROADCAST));
                out.extend(found.filter_map(|(_, d)| ip(d)));
            }
        })?;
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The networks of the main table's routes whose interface `dev`
    /// accepts (by name).
    pub fn routes_to(&self, dev: impl Fn(&str) -> bool) -> Result<Vec<(IpAddr, u8)>, RtnlError> {
        let req = Msg::new(RTM_GETROUTE, NLM_F_DUMP).bytes(&[libc::AF_UNSPEC as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut out = Vec::new();
        self.ask("list routes", req.finish(), |kind, body| {
            if kind != RTM_NEWROUTE || body.len() < 12 || body[4] != libc::RT_TABLE_MAIN {
                return;
            }
            let a = attrs(&body[12..]);
            let dst = a.iter().find(|(t, _)| *t == RTA_DST).and_then(|(_, d)| ip(d));
            let oif =
                a.iter().find(|(t, _)| *t == RTA_OIF).and_then(|(_, d)| (*d).try_into().ok()).map(u32::from_ne_bytes);
            if let (Some(dst), Some(name)) = (dst, oif.and_then(if_name)) {
                if dev(&name) {
                    out.push((dst, body[1]));
                }
            }
        })?;
        Ok(out)
    }

    /// How this namespace would route a packet to `to`: the kind of route,
    /// and the name of its interface.
    pub fn route_get(&self, to: IpAddr) -> Result<(RouteKind, Option<String>), RtnlError> {
        let (family, len) = match to {
            IpAddr::V4(_) => (libc::AF_INET as u8, 32),
            IpAddr::V6(_) => (libc::AF_INET6 as u8, 128),
        };
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
        let req =
            Msg::new(RTM_GETROUTE, 0).bytes(&[family, len, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).attr(RTA_DST, &octets(to));
        let mut found = None;
        self.ask("route lookup", req.finish(), |kind, body| {
            if kind == RTM_NEWROUTE && body.len() >= 12 {
                let kind = match body[7] {
                    1 => RouteKind::Unicast,
                    2 => RouteKind::Local,
                    3 => RouteKind::Broadcast,
                    5 => RouteKind::Multicast,
                    _ => RouteKind::Other,
                };
                let oif = attrs(&body[12..]).into_iter().find(|(t, _)| *t == RTA_OIF);
                let dev = oif.and_then(|(_, d)| d.try_into().ok()).map(u32::from_ne_bytes).and_then(if_name);
                found = Some((kind, dev));
            }
        })?;
        found.ok_or(RtnlError::Invalid { op: "route lookup", why: "no route in the answer".into() })
    }
}

/// An address attribute (4 or 16 bytes).
fn ip(d: &[u8]) -> Option<IpAddr> {
    match d.len() {
        4 => <[u8; 4]>::try_from(d).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(d).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The name of interface `index` in the calling thread's namespace.
fn if_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into buf.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    Some(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_length_and_padding() {
        let m = Msg::new(RTM_NEWLINK, 0)
            .bytes(&ifinfo(0, 0, 0))
            .begin(IFLA_LINKINFO)
            .attr(IFLA_INFO_KIND, b"veth")
            .end()
            .finish();
        assert_eq!(m.len(), 16 + 16 + 4 + 8);
        assert_eq!(u32::from_ne_bytes(m[..4].try_into().unwrap()) as usize, m.len());
        // the nested attribute: its own header (4) + "veth" attribute (8)
        assert_eq!(u16::from_ne_bytes([m[32], m[33]]), 12);
        assert_eq!(u16::from_ne_bytes([m[34], m[35]]), IFLA_LINKINFO | crate::msg::NLA_F_NESTED);
        assert_eq!(&m[40..44], b"veth");
        assert_eq!(Msg::new(0, 0).attr(IFLA_IFNAME, b"ab\0").finish().len(), 16 + 8);
    }

    #[test]
    fn names_are_checked() {
        assert!(name_attr("cl-0123456789ab").is_ok());
        assert!(name_attr("").is_err() && name_attr("a/b").is_err() && name_attr("sixteen-chars-xx").is_err());
    }
}
