//! Links, addresses and routes through rtnetlink, synchronously: one
//! socket per network namespace, one request at a time, each acknowledged.
//! No `ip` process is ever run.

use crate::{NetError, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcMessage, TcOption,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::net::IpAddr;
use std::os::fd::RawFd;

/// An rtnetlink socket, bound to the network namespace of the thread that
/// opened it.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// An address on a link, as a dump reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkAddr {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix: u8,
}

/// A route's destination, as a dump reports it (`0.0.0.0/0` for defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDst {
    pub dst: IpAddr,
    pub prefix: u8,
    pub oif: Option<u32>,
}

fn nl_err(what: &str, e: impl std::fmt::Display) -> NetError {
    NetError::Netlink(format!("{what}: {e}"))
}

impl Netlink {
    pub fn open() -> Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| nl_err("netlink socket", e))?;
        sock.bind_auto().map_err(|e| nl_err("netlink bind", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| nl_err("netlink connect", e))?;
        Ok(Netlink {
            sock,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        m.finalize();
        let mut out = vec![0; m.buffer_len()];
        m.serialize(&mut out);
        self.sock
            .send(&out, 0)
            .map_err(|e| nl_err("netlink send", e))?;
        Ok(self.seq)
    }

    /// Send a request and wait for its acknowledgement; the kernel's error
    /// as an `io::Error`.
    fn request(&mut self, what: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.request_io(msg, flags)
            .map_err(|e| NetError::Netlink(format!("{what}: {e}")))
    }

    fn request_io(&mut self, msg: RouteNetlinkMessage, flags: u16) -> std::io::Result<()> {
        let seq = self
            .send(msg, flags | NLM_F_ACK)
            .map_err(std::io::Error::other)?;
        self.replies(seq, |p| match p {
            NetlinkPayload::Error(e) => Some(match e.code {
                None => Ok(()),
                Some(c) => Err(std::io::Error::from_raw_os_error(-c.get())),
            }),
            _ => None,
        })
    }

    /// Read the kernel's messages answering request `seq`, handing each
    /// payload to `on` until it returns the result.
    fn replies<T>(
        &mut self,
        seq: u32,
        mut on: impl FnMut(NetlinkPayload<RouteNetlinkMessage>) -> Option<std::io::Result<T>>,
    ) -> std::io::Result<T> {
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(std::io::Error::other)?;
                let len = m.header.length as usize;
                if m.header.sequence_number == seq {
                    if let Some(r) = on(m.payload) {
                        return r;
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    fn dump(&mut self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>> {
        self.dump_io(msg).map_err(|e| nl_err("netlink dump", e))
    }

    /// A dump's messages; the kernel's error as an `io::Error`.
    fn dump_io(&mut self, msg: RouteNetlinkMessage) -> std::io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_DUMP).map_err(std::io::Error::other)?;
        let mut out = Vec::new();
        self.replies(seq, |p| match p {
            NetlinkPayload::Done(_) => Some(Ok(())),
            NetlinkPayload::Error(e) => e
                .code
                .map(|c| Err(std::io::Error::from_raw_os_error(-c.get()))),
            NetlinkPayload::InnerMessage(i) => {
                out.push(i);
                None
            }
            _ => None,
        })?;
        Ok(out)
    }

    /// The index of the link named `name`, or `None`.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name)?.map(|l| l.header.index))
    }

    fn link(&mut self, name: &str) -> Result<Option<LinkMessage>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        let seq = self.send(RouteNetlinkMessage::GetLink(m), 0)?;
        self.replies(seq, |p| match p {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => Some(Ok(Some(l))),
            NetlinkPayload::Error(e) => Some(match e.code {
                None => Ok(None),
                Some(c) if -c.get() == libc::ENODEV => Ok(None),
                Some(c) => Err(std::io::Error::from_raw_os_error(-c.get())),
            }),
            _ => None,
        })
        .map_err(|e| nl_err(name, e))
    }

    /// The MTU of link `name`.
    pub fn link_mtu(&mut self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name)?.and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
        }))
    }

    /// Create a bridge `name` with the MAC `mac` (an existing one is fine,
    /// and given that MAC if it has another), up.
    ///
    /// A bridge made without a MAC of its own takes the lowest of its
    /// ports' and changes it as they come and go, so the containers'
    /// neighbour entries for their gateway would go stale: one set
    /// explicitly stays.
    pub fn ensure_bridge(&mut self, name: &str, mtu: u32, mac: [u8; 6]) -> Result<u32> {
        if let Some(l) = self.link(name)? {
            let i = l.header.index;
            let has = l.attributes.iter().any(|a| match a {
                LinkAttribute::Address(a) => a[..] == mac[..],
                _ => false,
            });
            if !has {
                let mut m = LinkMessage::default();
                m.header.index = i;
                m.attributes.push(LinkAttribute::Address(mac.to_vec()));
                self.request(
                    &format!("setting the MAC of bridge {name}"),
                    RouteNetlinkMessage::SetLink(m),
                    0,
                )?;
            }
            self.set_up(i)?;
            return Ok(i);
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        match self.request_io(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(()) => {}
            // Made meanwhile by another berth.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(nl_err(&format!("creating bridge {name}"), e)),
        }
        let i = self
            .link_index(name)?
            .ok_or_else(|| NetError::Netlink(format!("bridge {name} vanished")))?;
        self.set_up(i)?;
        Ok(i)
    }

    /// Create a veth pair: `name` here, `peer` in the namespace `peer_ns`.
    pub fn add_veth(
        &mut self,
        name: &str,
        mac: Option<[u8; 6]>,
        mtu: u32,
        peer: &str,
        peer_ns: RawFd,
    ) -> Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes.push(LinkAttribute::Mtu(mtu));
        p.attributes.push(LinkAttribute::NetNsFd(peer_ns));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::Mtu(mtu));
        if let Some(mac) = mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(
            &format!("creating veth {peer}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Bring link `index` up, optionally enslaving it to `master`.
    pub fn set_up_master(&mut self, index: u32, master: Option<u32>) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        if let Some(master) = master {
            m.attributes.push(LinkAttribute::Controller(master));
        }
        self.request("setting a link up", RouteNetlinkMessage::SetLink(m), 0)
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_up_master(index, None)
    }

    /// Delete link `name`; true if it existed.
    pub fn delete_link(&mut self, name: &str) -> Result<bool> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request_io(RouteNetlinkMessage::DelLink(m), 0) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(nl_err(&format!("deleting {name}"), e)),
        }
    }

    /// Add `addr/prefix` on link `index` (already there is fine).
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = prefix;
        m.header.family = family(addr);
        m.attributes.push(AddressAttribute::Local(addr));
        m.attributes.push(AddressAttribute::Address(addr));
        if addr.is_ipv6() {
            // No duplicate address detection: the address is ours to give,
            // and DAD would leave it unusable for a second.
            m.attributes.push(AddressAttribute::Flags(
                netlink_packet_route::address::AddressFlags::Nodad,
            ));
        }
        match self.request_io(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(nl_err(&format!("adding address {addr}/{prefix}"), e)),
        }
    }

    /// A default route through `gateway` on link `index`.
    pub fn add_default_route(&mut self, index: u32, gateway: IpAddr) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header = RouteHeader {
            address_family: family(gateway),
            table: RouteHeader::RT_TABLE_MAIN,
            protocol: RouteProtocol::Boot,
            scope: RouteScope::Universe,
            kind: RouteType::Unicast,
            ..Default::default()
        };
        m.attributes
            .push(RouteAttribute::Gateway(route_addr(gateway)));
        m.attributes.push(RouteAttribute::Oif(index));
        match self.request_io(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(nl_err(&format!("adding a default route via {gateway}"), e)),
        }
    }

    /// Every address on every link.
    pub fn addresses(&mut self) -> Result<Vec<LinkAddr>> {
        let msgs = self.dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))?;
        let mut out = Vec::new();
        for m in msgs {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                let addr = a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                });
                if let Some(addr) = addr {
                    out.push(LinkAddr {
                        index: a.header.index,
                        addr,
                        prefix: a.header.prefix_len,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Every route of every table (IPv4 and IPv6).
    pub fn routes(&mut self) -> Result<Vec<RouteDst>> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = RouteMessage::default();
            q.header.address_family = fam;
            let msgs = self.dump(RouteNetlinkMessage::GetRoute(q))?;
            for m in msgs {
                if let RouteNetlinkMessage::NewRoute(r) = m {
                    let mut dst = None;
                    let mut oif = None;
                    for a in &r.attributes {
                        match a {
                            RouteAttribute::Destination(RouteAddress::Inet(v)) => {
                                dst = Some(IpAddr::V4(*v))
                            }
                            RouteAttribute::Destination(RouteAddress::Inet6(v)) => {
                                dst = Some(IpAddr::V6(*v))
                            }
                            RouteAttribute::Oif(i) => oif = Some(*i),
                            _ => {}
                        }
                    }
                    let dst = dst.unwrap_or(match fam {
                        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    });
                    out.push(RouteDst {
                        dst,
                        prefix: r.header.destination_prefix_length,
                        oif,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The name of link `index`.
    pub fn link_name(&mut self, index: u32) -> Result<Option<String>> {
        let msgs = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        for m in msgs {
            if let RouteNetlinkMessage::NewLink(l) = m {
                if l.header.index == index {
                    return Ok(l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// A `clsact` qdisc on link `index` (one already there is fine): the
    /// hooks for direct-action `bpf` filters on kernels without TCX.
    pub fn ensure_clsact(&mut self, index: u32) -> Result<()> {
        let mut m = TcMessage::with_index(index as i32);
        m.header.parent = TcHandle::CLSACT;
        m.header.handle = TcHandle {
            major: TcHandle::CLSACT.major,
            minor: 0,
        };
        m.attributes.push(TcAttribute::Kind("clsact".into()));
        match self.request_io(
            RouteNetlinkMessage::NewQueueDiscipline(m),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(nl_err("adding a clsact qdisc", e)),
        }
    }

    /// Put program `prog` (a `SCHED_CLS` fd) on link `index`'s `clsact`
    /// ingress or egress hook, as berth's direct-action `bpf` filter,
    /// replacing berth's filter already there (there is one per hook: a
    /// fixed priority and handle).
    pub fn set_bpf_filter(
        &mut self,
        index: u32,
        egress: bool,
        prog: RawFd,
        name: &str,
    ) -> Result<()> {
        let mut m = bpf_filter_message(index, egress);
        m.header.handle = TcHandle::from(BPF_FILTER_HANDLE);
        m.header.info = (u32::from(BPF_FILTER_PRIO) << 16) | u32::from(ETH_P_ALL.to_be());
        m.attributes.push(TcAttribute::Kind("bpf".into()));
        m.attributes.push(TcAttribute::Options(vec![
            TcOption::Bpf(TcFilterBpfOption::ProgFd(prog as u32)),
            TcOption::Bpf(TcFilterBpfOption::ProgName(name.into())),
            TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
        ]));
        self.request(
            "adding a bpf filter",
            RouteNetlinkMessage::NewTrafficFilter(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// The ids of the programs of every `bpf` filter on link `index`'s
    /// `clsact` ingress or egress hook (none without the qdisc).
    pub fn bpf_filters(&mut self, index: u32, egress: bool) -> Result<Vec<u32>> {
        let msgs = match self.dump_io(RouteNetlinkMessage::GetTrafficFilter(bpf_filter_message(
            index, egress,
        ))) {
            Ok(msgs) => msgs,
            // No clsact qdisc, no filters.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(Vec::new()),
            Err(e) => return Err(nl_err("listing bpf filters", e)),
        };
        let mut ids = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewTrafficFilter(f) = m else {
                continue;
            };
            for a in f.attributes {
                if let TcAttribute::Options(opts) = a {
                    ids.extend(opts.iter().filter_map(|o| match o {
                        TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => Some(*id),
                        _ => None,
                    }));
                }
            }
        }
        Ok(ids)
    }

    /// Names of every link.
    pub fn link_names(&mut self) -> Result<Vec<String>> {
        let msgs = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => l.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n),
                    _ => None,
                }),
                _ => None,
            })
            .collect())
    }
}

/// berth's `bpf` filter on a `clsact` hook: its priority and handle.
const BPF_FILTER_PRIO: u16 = 1;
const BPF_FILTER_HANDLE: u32 = 1;
const ETH_P_ALL: u16 = 0x0003;

/// A filter message for link `index`'s `clsact` ingress or egress hook.
fn bpf_filter_message(index: u32, egress: bool) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle {
        major: TcHandle::CLSACT.major,
        minor: if egress {
            TcHandle::MIN_EGRESS
        } else {
            TcHandle::MIN_INGRESS
        },
    };
    m
}

fn family(a: IpAddr) -> AddressFamily {
    match a {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_addr(a: IpAddr) -> RouteAddress {
    match a {
        IpAddr::V4(v) => RouteAddress::Inet(v),
        IpAddr::V6(v) => RouteAddress::Inet6(v),
    }
}
