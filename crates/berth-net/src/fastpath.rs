//! A fast path beside each bridge, for unicast between the containers of
//! one network and from the host to them.
//!
//! On this kind of host the kernel's `br_netfilter` runs every bridged
//! frame through the IP firewall hooks, which costs a fifth of a veth
//! pair's throughput. berth's own rules never filter traffic within one
//! bridge, and traffic to or through the host still meets the host's IP
//! hooks on the bridge device, so nothing is lost by skipping the bridge's
//! forwarding:
//!
//! - A hash map per bridge (`berth_fp`): container address (IPv4 as
//!   IPv4-mapped IPv6) → host-side veth index and the container's MAC.
//! - On each container's host-side veth, a TCX ingress program
//!   (`berth_fp_in`): a frame whose destination address and MAC are a
//!   container of the same map goes straight into that container's
//!   namespace (`bpf_redirect_peer`), as the bridge would have delivered
//!   it.
//!   A frame for the bridge's own MAC (to the host, or routed by it) is
//!   passed up the host's stack through the bridge device
//!   (`bpf_redirect` to its ingress), as the bridge would have passed it.
//! - On the bridge, a TCX egress program (`berth_fp_out`): the host's
//!   packets to a container are sent on its veth (`bpf_redirect`) instead
//!   of through the bridge's forwarding.
//!
//! Everything else (ARP, neighbour discovery, broadcast, multicast, a MAC
//! that does not match) goes on through the bridge, untouched. The programs go with their
//! devices; the map with the last program that uses it. The bridge's
//! egress program is how a later command finds the map again, so no file
//! or pinned object is left on the host.
//!
//! The programs hang on TCX links (Linux 6.6) or, on older kernels, as
//! direct-action `bpf` filters on a `clsact` qdisc ([`Hooks`]);
//! `bpf_redirect_peer` needs Linux 5.10, below which the bridge carries
//! everything. Lookups search both kinds of hook, so a map is found
//! whichever way its programs were attached.

#[cfg(target_endian = "big")]
compile_error!("the fast path's programs read big-endian fields as little-endian words");

use crate::bpfasm::{Builder, Label};
use crate::netlink::Netlink;
use crate::{EndpointPlan, NetError, Result};
use berth_sys::bpf::{self, asm, Insn};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The map's name, and the programs' (at most 15 bytes each).
pub const MAP_NAME: &str = "berth_fp";
pub const INGRESS_NAME: &str = "berth_fp_in";
pub const EGRESS_NAME: &str = "berth_fp_out";

const KEY_SIZE: usize = 16;
const VALUE_SIZE: usize = 12;
/// A /16 holds 65 534 containers; elements are allocated as added.
const MAX_ENTRIES: u32 = 65536;

// Helper ids (`enum bpf_func_id`).
const REDIRECT: i32 = 23;
const SKB_LOAD_BYTES: i32 = 26;
const SKB_CHANGE_TYPE: i32 = 32;
const REDIRECT_PEER: i32 = 155;

/// `__sk_buff.protocol`: the EtherType in network byte order, read as a
/// little-endian u32 by the program.
const SKB_PROTOCOL: i16 = 16;
const ETH_P_IP: i32 = 0x0008;
const ETH_P_IPV6: i32 = 0xdd86;
const ETH_HLEN: i32 = 14;
/// `TCX_NEXT`: not ours, on to the next program or the stack.
const TCX_NEXT: i32 = -1;
/// `PACKET_HOST`.
const PACKET_HOST: i32 = 0;
/// `bpf_redirect` flag: into the device's receive path, not out of it.
const BPF_F_INGRESS: i32 = 1;
/// The key of the bridge's own entry (its index and MAC): `::`, never a
/// container's address.
const GATEWAY_KEY: [u8; KEY_SIZE] = [0; KEY_SIZE];

fn fp_err(what: &str, e: impl std::fmt::Display) -> NetError {
    NetError::FastPath(format!("{what}: {e}"))
}

/// The map key of an address.
pub fn key(addr: IpAddr) -> [u8; KEY_SIZE] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The map value: where a container's address is delivered.
pub fn value(ifindex: u32, mac: [u8; 6]) -> [u8; VALUE_SIZE] {
    let mut v = [0u8; VALUE_SIZE];
    v[..4].copy_from_slice(&ifindex.to_ne_bytes());
    v[4..10].copy_from_slice(&mac);
    v
}

fn value_ifindex(v: &[u8; VALUE_SIZE]) -> u32 {
    u32::from_ne_bytes([v[0], v[1], v[2], v[3]])
}

/// r0 = bpf_skb_load_bytes(skb in r6, offset, fp + stack, len), on to
/// `fail` unless it worked.
fn load_bytes(b: &mut Builder, offset: i32, stack: i32, len: i32, fail: Label) {
    b.push(&[
        asm::mov64_reg(1, 6),
        asm::mov64(2, offset),
        asm::mov64_reg(3, asm::FP),
        asm::add64(3, stack),
        asm::mov64(4, len),
        asm::call(SKB_LOAD_BYTES),
    ]);
    b.jump(asm::jump_imm(asm::JNE, 0, 0, 0), fail);
}

/// r7 = the map's value for the key at fp-16, if the frame's destination
/// MAC (at fp-24) is the one it holds; else on to `miss`.
fn lookup_mac(b: &mut Builder, map: i32, miss: Label) {
    use asm::{FP, H, JNE, W};
    b.lookup(map, -16, miss);
    b.push(&[
        asm::mov64_reg(7, 0),
        asm::load(W, 1, 7, 4),
        asm::load(W, 2, FP, -24),
    ]);
    b.jump(asm::jump_reg(JNE, 1, 2, 0), miss);
    b.push(&[asm::load(H, 1, 7, 8), asm::load(H, 2, FP, -20)]);
    b.jump(asm::jump_reg(JNE, 1, 2, 0), miss);
}

/// return helper(r7's ifindex, flags)
fn redirect(b: &mut Builder, helper: i32, flags: i32) {
    b.push(&[
        asm::load(asm::W, 1, 7, 0),
        asm::mov64(2, flags),
        asm::call(helper),
        asm::exit(),
    ]);
}

/// The program for `map` (its descriptor number). `peer`: the veth's
/// ingress program (into the container's namespace, or up to the host's
/// stack through the bridge device); else the bridge's egress program
/// (out through the container's veth).
///
/// Stack: fp-16..fp-1 the key, fp-24..fp-19 the frame's destination MAC.
pub fn program(map: i32, peer: bool) -> Vec<Insn> {
    use asm::{DW, FP, JEQ, JNE, W};
    let mut b = Builder::new();
    let (v4, lookup, gateway, pass) = (b.label(), b.label(), b.label(), b.label());
    let miss = if peer { gateway } else { pass };
    b.push(&[asm::mov64_reg(6, 1), asm::store_imm(DW, FP, -24, 0)]);
    load_bytes(&mut b, 0, -24, 6, pass);
    b.push(&[asm::load(W, 2, 6, SKB_PROTOCOL)]);
    b.jump(asm::jump_imm(JEQ, 2, ETH_P_IP, 0), v4);
    b.jump(asm::jump_imm(JNE, 2, ETH_P_IPV6, 0), pass);
    // IPv6: the destination address is 24 bytes into the header.
    load_bytes(&mut b, ETH_HLEN + 24, -16, 16, pass);
    b.jump(asm::ja(0), lookup);
    // IPv4: ::ffff:a.b.c.d, the address 16 bytes into the header.
    b.here(v4);
    b.push(&[
        asm::store_imm(DW, FP, -16, 0),
        asm::store_imm(W, FP, -8, 0xffff_0000_u32 as i32),
    ]);
    load_bytes(&mut b, ETH_HLEN + 16, -4, 4, pass);
    b.here(lookup);
    lookup_mac(&mut b, map, miss);
    if peer {
        // The bridge port saw another host's MAC (PACKET_OTHERHOST); in
        // the container it is for this host.
        b.push(&[
            asm::mov64_reg(1, 6),
            asm::mov64(2, PACKET_HOST),
            asm::call(SKB_CHANGE_TYPE),
        ]);
        redirect(&mut b, REDIRECT_PEER, 0);
        // For the bridge's own MAC: up the host's stack through the bridge
        // device, as the bridge would pass it up.
        b.here(gateway);
        b.push(&[
            asm::store_imm(DW, FP, -16, 0),
            asm::store_imm(DW, FP, -8, 0),
        ]);
        lookup_mac(&mut b, map, pass);
        redirect(&mut b, REDIRECT, BPF_F_INGRESS);
    } else {
        redirect(&mut b, REDIRECT, 0);
    }
    b.here(pass);
    b.push(&[asm::mov64(0, TCX_NEXT), asm::exit()]);
    b.finish()
}

fn load(map: BorrowedFd<'_>, peer: bool) -> Result<OwnedFd> {
    let insns = program(map.as_raw_fd(), peer);
    let name = if peer { INGRESS_NAME } else { EGRESS_NAME };
    bpf::prog_load(bpf::BPF_PROG_TYPE_SCHED_CLS, &insns, c"Apache-2.0", name)
        .map_err(|e| fp_err("loading the program", e))
}

/// Where the fast path's programs hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hooks {
    /// TCX links (Linux 6.6).
    Tcx,
    /// Direct-action `bpf` filters on a `clsact` qdisc (Linux 5.10).
    Clsact,
}

/// The environment variable that picks the hooks: `clsact` takes the
/// older ones even where TCX exists, `off` turns the fast path off.
/// Unset (or anything else): TCX where the kernel has it, else `clsact`.
pub const HOOKS_ENV: &str = "BERTH_FAST_PATH";

/// The hooks this kernel (and [`HOOKS_ENV`]) give the fast path; `None`:
/// no fast path, the bridge carries everything.
pub fn hooks() -> Option<Hooks> {
    match std::env::var(HOOKS_ENV).as_deref() {
        Ok("off") => None,
        Ok("clsact") => Hooks::Clsact.in_kernel().then_some(Hooks::Clsact),
        _ if Hooks::Tcx.in_kernel() => Some(Hooks::Tcx),
        _ => Hooks::Clsact.in_kernel().then_some(Hooks::Clsact),
    }
}

impl Hooks {
    /// Whether this kernel can carry the fast path on these hooks: TCX
    /// since Linux 6.6; `clsact` filters since 5.10, for
    /// `bpf_redirect_peer`.
    pub fn in_kernel(self) -> bool {
        let since = match self {
            Hooks::Tcx => (6, 6),
            Hooks::Clsact => (5, 10),
        };
        berth_sys::process::kernel_version().is_some_and(|v| v >= since)
    }
}

/// Whether the fast path is used here (see [`hooks`]).
pub fn supported() -> bool {
    hooks().is_some()
}

/// The ingress or egress hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    fn tcx(self) -> u32 {
        match self {
            Dir::Ingress => bpf::BPF_TCX_INGRESS,
            Dir::Egress => bpf::BPF_TCX_EGRESS,
        }
    }
}

/// The programs named `name` on hook `dir` of device `ifindex`, attached
/// either way: the kind of hook in use ([`hooks`]) is searched first, the
/// other only when the first has none.
fn attached(ifindex: u32, dir: Dir, name: &str) -> Result<Vec<(OwnedFd, bpf::ProgInfo)>> {
    let order = if hooks() == Some(Hooks::Clsact) {
        [Hooks::Clsact, Hooks::Tcx]
    } else {
        [Hooks::Tcx, Hooks::Clsact]
    };
    for h in order {
        let ids = match h {
            Hooks::Tcx if !Hooks::Tcx.in_kernel() => continue,
            Hooks::Tcx => bpf::tcx_query(ifindex, dir.tcx()).map_err(|e| fp_err("query", e))?,
            Hooks::Clsact => Netlink::open()?.bpf_filters(ifindex, dir == Dir::Egress)?,
        };
        let found = bpf::programs_named(&ids, name).map_err(|e| fp_err("program info", e))?;
        if !found.is_empty() {
            return Ok(found);
        }
    }
    Ok(Vec::new())
}

/// Put `prog` on hook `dir` of device `ifindex`, the way `hooks` says.
/// Through TCX, `old` (programs of ours already there) are detached
/// first; a `clsact` filter of ours is replaced in place.
fn attach(
    hooks: Hooks,
    ifindex: u32,
    dir: Dir,
    prog: BorrowedFd<'_>,
    name: &str,
    old: &[(OwnedFd, bpf::ProgInfo)],
) -> Result<()> {
    let what = match dir {
        Dir::Ingress => "attaching to the veth",
        Dir::Egress => "attaching to the bridge",
    };
    match hooks {
        Hooks::Tcx => {
            for (o, _) in old {
                match bpf::tcx_detach(ifindex, o.as_fd(), dir.tcx()) {
                    // Found on a clsact filter instead: it stays behind
                    // the TCX one, which decides first.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    r => r.map_err(|e| fp_err("detaching", e))?,
                }
            }
            bpf::tcx_attach(ifindex, prog, dir.tcx()).map_err(|e| fp_err(what, e))
        }
        Hooks::Clsact => {
            let mut nl = Netlink::open()?;
            nl.ensure_clsact(ifindex)?;
            nl.set_bpf_filter(ifindex, dir == Dir::Egress, prog.as_raw_fd(), name)
        }
    }
}

/// The map of the bridge `bridge` (an ifindex), found through its egress
/// program; `None` when it has none.
pub fn bridge_map(bridge: u32) -> Result<Option<OwnedFd>> {
    for (_, info) in attached(bridge, Dir::Egress, EGRESS_NAME)? {
        if let Some(&id) = info.map_ids.first() {
            return bpf::map_get_fd_by_id(id)
                .map(Some)
                .map_err(|e| fp_err("map", e));
        }
    }
    Ok(None)
}

/// The bridge's map, made with its egress program when missing (a new
/// bridge, or programs lost from the host).
fn ensure_bridge_map(hooks: Hooks, bridge: u32) -> Result<OwnedFd> {
    if let Some(map) = bridge_map(bridge)? {
        return Ok(map);
    }
    let map = bpf::map_create(
        bpf::BPF_MAP_TYPE_HASH,
        KEY_SIZE as u32,
        VALUE_SIZE as u32,
        MAX_ENTRIES,
        bpf::BPF_F_NO_PREALLOC,
        MAP_NAME,
    )
    .map_err(|e| fp_err("making the map", e))?;
    let prog = load(map.as_fd(), false)?;
    attach(hooks, bridge, Dir::Egress, prog.as_fd(), EGRESS_NAME, &[])?;
    Ok(map)
}

/// A container's endpoint, as the fast path needs it: its bridge, its
/// host-side veth, its MAC and addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub bridge: String,
    pub veth: String,
    pub mac: [u8; 6],
    pub addrs: Vec<IpAddr>,
}

impl From<&EndpointPlan> for Endpoint {
    fn from(p: &EndpointPlan) -> Endpoint {
        Endpoint {
            bridge: p.bridge.clone(),
            veth: p.host_ifname.clone(),
            mac: p.mac,
            addrs: p.addrs.iter().map(|(a, _)| *a).collect(),
        }
    }
}

/// A link's MAC, from sysfs.
fn mac_of(name: &str) -> Result<[u8; 6]> {
    let path = format!("/sys/class/net/{name}/address");
    let text = std::fs::read_to_string(&path).map_err(|e| fp_err(&path, e))?;
    crate::ipam::parse_mac(text.trim()).map_err(|e| fp_err(&path, e))
}

fn index_of(name: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(|e| fp_err(name, e))
}

/// Put a container's endpoint on its bridge's fast path: its addresses in
/// the map, the ingress program on its host-side veth. Runs in the host's
/// network namespace (devices are looked up in the caller's).
///
/// Each attachment makes the kernel wait for an RCU grace period (tens of
/// milliseconds on an idle machine), with the RTNL lock held, and so does
/// the removal of a device that carries a program: the engine leaves this
/// off the start's path, to the monitor, once the container has run a
/// while.
pub fn join(ep: &Endpoint) -> Result<()> {
    let Some(hooks) = hooks() else {
        return Ok(());
    };
    let (bridge, veth) = (index_of(&ep.bridge)?, index_of(&ep.veth)?);
    let map = ensure_bridge_map(hooks, bridge)?;
    let bridge_mac = mac_of(&ep.bridge)?;
    bpf::map_update(map.as_fd(), &GATEWAY_KEY, &value(bridge, bridge_mac))
        .map_err(|e| fp_err("map update", e))?;
    let v = value(veth, ep.mac);
    for a in &ep.addrs {
        bpf::map_update(map.as_fd(), &key(*a), &v).map_err(|e| fp_err("map update", e))?;
    }
    // A program of ours already there stays if it uses this map; one that
    // uses another (its bridge was made again meanwhile) is replaced.
    let id = bpf::map_id(map.as_fd()).map_err(|e| fp_err("map", e))?;
    let ours = attached(veth, Dir::Ingress, INGRESS_NAME)?;
    if ours.iter().any(|(_, info)| info.map_ids.contains(&id)) {
        return Ok(());
    }
    let prog = load(map.as_fd(), true)?;
    attach(hooks, veth, Dir::Ingress, prog.as_fd(), INGRESS_NAME, &ours)
}

/// Take a container's addresses off its bridge's fast path. An address
/// whose entry now belongs to another endpoint (a later container given
/// the same address) is left alone: only entries of the veth `veth`, or of
/// a device that is gone, are removed. Nothing to do without the bridge or
/// its map.
pub fn leave(nl: &mut Netlink, bridge: &str, veth: &str, addrs: &[IpAddr]) -> Result<()> {
    let Some(bidx) = nl.link_index(bridge)? else {
        return Ok(());
    };
    let Some(map) = bridge_map(bidx)? else {
        return Ok(());
    };
    let ours = nl.link_index(veth)?;
    for a in addrs {
        let k = key(*a);
        let mut v = [0u8; VALUE_SIZE];
        if !bpf::map_lookup(map.as_fd(), &k, &mut v).map_err(|e| fp_err("map lookup", e))? {
            continue;
        }
        let idx = value_ifindex(&v);
        if Some(idx) == ours || nl.link_name(idx)?.is_none() {
            bpf::map_delete(map.as_fd(), &k).map_err(|e| fp_err("map delete", e))?;
        }
    }
    Ok(())
}

/// Remove whatever entries bridge `bridge` (a name) has for `addrs`
/// (nothing without the bridge or its map).
pub fn forget(bridge: &str, addrs: &[IpAddr]) -> Result<()> {
    let Ok(bidx) = index_of(bridge) else {
        return Ok(());
    };
    let Some(map) = bridge_map(bidx)? else {
        return Ok(());
    };
    for a in addrs {
        bpf::map_delete(map.as_fd(), &key(*a)).map_err(|e| fp_err("map delete", e))?;
    }
    Ok(())
}

/// The fast path's entry for `addr` on bridge `bridge` (an ifindex):
/// `(veth index, MAC)`. For `inspect`-like checks and tests.
pub fn entry(bridge: u32, addr: IpAddr) -> Result<Option<(u32, [u8; 6])>> {
    let Some(map) = bridge_map(bridge)? else {
        return Ok(None);
    };
    let mut v = [0u8; VALUE_SIZE];
    if !bpf::map_lookup(map.as_fd(), &key(addr), &mut v).map_err(|e| fp_err("map lookup", e))? {
        return Ok(None);
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&v[4..10]);
    Ok(Some((value_ifindex(&v), mac)))
}

/// Whether the ingress program is on the veth with index `veth`.
pub fn on_veth(veth: u32) -> Result<bool> {
    Ok(!attached(veth, Dir::Ingress, INGRESS_NAME)?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_ipv4_into_ipv6() {
        assert_eq!(
            key("10.1.2.3".parse().unwrap()),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]
        );
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(key(v6)[15], 5);
        let v = value(7, [2, 0x42, 1, 2, 3, 4]);
        assert_eq!(value_ifindex(&v), 7);
        assert_eq!(&v[4..10], &[2, 0x42, 1, 2, 3, 4]);
    }

    /// An Ethernet frame to `dst_mac` carrying an IP header for `dst`.
    fn frame(dst_mac: [u8; 6], dst: IpAddr) -> Vec<u8> {
        let mut f = dst_mac.to_vec();
        f.extend([2, 0x42, 9, 9, 9, 9]);
        match dst {
            IpAddr::V4(a) => {
                f.extend([0x08, 0x00]);
                let mut h = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 9, 9, 9];
                h.extend(a.octets());
                h.resize(40, 0);
                f.extend(h);
            }
            IpAddr::V6(a) => {
                f.extend([0x86, 0xdd]);
                let mut h = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
                h.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
                h.extend(a.octets());
                h.resize(60, 0);
                f.extend(h);
            }
        }
        f
    }

    /// Root: both programs pass the kernel's verifier and decide as they
    /// should, run by the kernel on frames of each kind (a test run does
    /// not carry out the redirects it returns).
    #[test]
    fn the_kernel_runs_the_programs_as_meant() {
        if !crate::need_root() {
            return;
        }
        const REDIRECT: i32 = 7;
        let map = bpf::map_create(
            bpf::BPF_MAP_TYPE_HASH,
            KEY_SIZE as u32,
            VALUE_SIZE as u32,
            16,
            bpf::BPF_F_NO_PREALLOC,
            MAP_NAME,
        )
        .expect("map");
        let (b4, b6): (IpAddr, IpAddr) = ("10.99.0.2".parse().unwrap(), "fd00::2".parse().unwrap());
        let (mac_b, mac_gw) = ([2, 0x42, 10, 99, 0, 2], [2, 0x42, 10, 99, 0, 1]);
        for a in [b4, b6] {
            bpf::map_update(map.as_fd(), &key(a), &value(7, mac_b)).unwrap();
        }
        bpf::map_update(map.as_fd(), &GATEWAY_KEY, &value(5, mac_gw)).unwrap();
        let ingress = load(map.as_fd(), true).expect("ingress program");
        let egress = load(map.as_fd(), false).expect("egress program");
        let run = |p: &OwnedFd, f: Vec<u8>| {
            bpf::prog_test_run(p.as_fd(), &f).unwrap_or_else(|e| panic!("{e}: {f:?}"))
        };
        let other: IpAddr = "10.99.0.3".parse().unwrap();
        for p in [&ingress, &egress] {
            assert_eq!(run(p, frame(mac_b, b4)), REDIRECT);
            assert_eq!(run(p, frame(mac_b, b6)), REDIRECT);
            // A container's address behind another MAC, an address that is
            // nobody's: through the bridge.
            assert_eq!(run(p, frame([2, 0x42, 1, 1, 1, 1], b4)), TCX_NEXT);
            assert_eq!(run(p, frame([2, 0x42, 10, 99, 0, 3], other)), TCX_NEXT);
            // ARP.
            let mut arp = frame(mac_b, b4);
            arp[12..14].copy_from_slice(&[0x08, 0x06]);
            assert_eq!(run(p, arp), TCX_NEXT);
        }
        // To the bridge's own MAC: up the host's stack from a veth; the
        // bridge's own egress never sends to itself.
        assert_eq!(run(&ingress, frame(mac_gw, other)), REDIRECT);
        assert_eq!(run(&egress, frame(mac_gw, other)), TCX_NEXT);
    }

    #[test]
    fn jumps_land_inside_the_program() {
        for peer in [false, true] {
            assert!(crate::bpfasm::jumps_land_inside(&program(3, peer)));
        }
    }
}
