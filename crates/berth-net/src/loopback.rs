//! Published ports reached from the host's own loopback, at the socket.
//!
//! The nftables table DNATs `127.0.0.1:<host port>` to the container and
//! masquerades the source, which costs conntrack and NAT on every packet
//! of the connection. For the host's own connections berth does better at
//! `connect()`: a cgroup program (`BPF_CGROUP_INET4_CONNECT`, on the root
//! of the cgroup v2 hierarchy, so every process's sockets) sees a TCP or
//! UDP `connect()` to a published port on 127.0.0.0/8, made in the host's
//! network namespace, and points the socket at the container's address
//! and port instead. The connection then runs as one to the container's
//! address, with no NAT at all. A second program
//! (`BPF_CGROUP_INET4_GETPEERNAME`) gives `getpeername()` the address the
//! program was asked for, so the client still sees `127.0.0.1:<host
//! port>` as its peer (its own address, `getsockname()`, is the bridge's).
//!
//! What the programs do not see keeps going through the table: other
//! hosts, the host's other addresses, UDP `sendto()` without `connect()`,
//! IPv6, and containers' own namespaces (the program checks the network
//! namespace). A socket bound to a loopback address before its `connect()`
//! is masqueraded by the table as it leaves on the bridge.
//!
//! Per run root (berth's table name `table`): a hash map
//! `(address, port, protocol) → (container address, port)`, an LRU map
//! `socket cookie → (address asked for, container address)`, and the two programs named
//! `bpl_<table>` that use them; found again through the cgroup's programs,
//! so nothing is pinned or written on the host. [`sync`] with no published
//! port detaches the programs, and the maps go with them.

#[cfg(target_endian = "big")]
compile_error!("the loopback programs read big-endian fields as little-endian words");

use crate::bpfasm::{self, Builder};
use crate::nft::FwPort;
use crate::ports::Proto;
use crate::{NetError, Result};
use berth_sys::bpf::{self, asm, Insn};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

const KEY_SIZE: usize = 12;
const VALUE_SIZE: usize = 8;
const MAX_PORTS: u32 = 65536;
/// Sockets remembered for `getpeername()`; the oldest are forgotten.
const MAX_SOCKETS: u32 = 65536;

// Helper ids.
const GET_SOCKET_COOKIE: i32 = 46;
const GET_NETNS_COOKIE: i32 = 122;

/// The programs' hooks, connect first.
const HOOKS: [u32; 2] = [
    bpf::BPF_CGROUP_INET4_CONNECT,
    bpf::BPF_CGROUP_INET4_GETPEERNAME,
];

// `struct bpf_sock_addr`.
const USER_IP4: i16 = 4;
const USER_PORT: i16 = 24;
const PROTOCOL: i16 = 36;

fn lb_err(what: &str, e: impl std::fmt::Display) -> NetError {
    NetError::FastPath(format!("loopback ports: {what}: {e}"))
}

/// The programs' name for the table `table` of berth in the caller's
/// network namespace (at most 15 bytes): `bpl_` and 11 hex digits of a
/// hash (FNV-1a) of both, so that stores in two namespaces sharing one
/// cgroup hierarchy keep apart.
pub fn prog_name(table: &str) -> String {
    let cookie = bpf::netns_cookie().unwrap_or(0);
    let h = table
        .bytes()
        .chain(cookie.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("bpl_{:011x}", h >> 20)
}

/// The port map's key: address (0 for every address), port, protocol,
/// as the program reads them from the socket address.
fn key(addr: Ipv4Addr, port: u16, proto: u8) -> [u8; KEY_SIZE] {
    let mut k = [0u8; KEY_SIZE];
    k[..4].copy_from_slice(&addr.octets());
    k[4..6].copy_from_slice(&port.to_be_bytes());
    k[8] = proto;
    k
}

fn value(addr: Ipv4Addr, port: u16) -> [u8; VALUE_SIZE] {
    let mut v = [0u8; VALUE_SIZE];
    v[..4].copy_from_slice(&addr.octets());
    v[4..6].copy_from_slice(&port.to_be_bytes());
    v
}

/// The protocol as the socket address gives it to the program; `None` for
/// what `connect()` redirection does not serve.
fn proto_number(p: Proto) -> Option<u8> {
    match p {
        Proto::Tcp => Some(libc::IPPROTO_TCP as u8),
        Proto::Udp => Some(libc::IPPROTO_UDP as u8),
        Proto::Sctp => None,
    }
}

/// What the map should hold for `ports`: the TCP and UDP ports published
/// to an IPv4 container on every address or on a loopback one.
pub fn entries(ports: &[FwPort]) -> BTreeMap<[u8; KEY_SIZE], [u8; VALUE_SIZE]> {
    let mut out = BTreeMap::new();
    for p in ports {
        let IpAddr::V4(target) = p.target else {
            continue;
        };
        let m = &p.mapping;
        let host = match m.host_ip {
            None => Ipv4Addr::UNSPECIFIED,
            Some(IpAddr::V4(a)) if a.is_unspecified() || a.is_loopback() => a,
            Some(_) => continue,
        };
        let Some(proto) = proto_number(m.proto) else {
            continue;
        };
        out.insert(
            key(host, m.host_port, proto),
            value(target, m.container_port),
        );
    }
    out
}

/// The connect program: `ports` and `sockets` are map descriptors,
/// `netns` the host namespace's cookie.
///
/// Stack: fp-16..fp-5 the key; fp-40..fp-25 what the socket map keeps
/// (the address asked for, then the container's); fp-48..fp-41 the
/// socket's cookie.
pub fn connect_program(ports: i32, sockets: i32, netns: u64) -> Vec<Insn> {
    use asm::{DW, FP, JNE, W};
    let mut b = Builder::new();
    let (found, out) = (b.label(), b.label());
    b.push(&[
        asm::mov64_reg(6, 1),
        asm::load(W, 2, 6, USER_IP4),
        asm::and64(2, 0xff),
    ]);
    b.jump(asm::jump_imm(JNE, 2, 127, 0), out);
    b.push(&[asm::mov64_reg(1, 6), asm::call(GET_NETNS_COOKIE)]);
    b.push(&asm::load_imm64(2, netns));
    b.jump(asm::jump_reg(JNE, 0, 2, 0), out);
    b.push(&[
        asm::load(W, 2, 6, USER_IP4),
        asm::store(W, FP, -16, 2),
        asm::load(W, 2, 6, USER_PORT),
        asm::store(W, FP, -12, 2),
        asm::load(W, 2, 6, PROTOCOL),
        asm::store(W, FP, -8, 2),
    ]);
    let any = b.label();
    b.lookup(ports, -16, any);
    b.jump(asm::ja(0), found);
    // Published on every address.
    b.here(any);
    b.push(&[asm::store_imm(W, FP, -16, 0)]);
    b.lookup(ports, -16, out);
    b.here(found);
    b.push(&[
        asm::mov64_reg(7, 0),
        asm::load(W, 2, 6, USER_IP4),
        asm::store(W, FP, -40, 2),
        asm::load(W, 2, 6, USER_PORT),
        asm::store(W, FP, -36, 2),
        asm::load(W, 2, 7, 0),
        asm::store(W, FP, -32, 2),
        asm::load(W, 2, 7, 4),
        asm::store(W, FP, -28, 2),
        asm::mov64_reg(1, 6),
        asm::call(GET_SOCKET_COOKIE),
        asm::store(DW, FP, -48, 0),
    ]);
    b.push(&asm::load_map_fd(1, sockets));
    b.push(&[
        asm::mov64_reg(2, FP),
        asm::add64(2, -48),
        asm::mov64_reg(3, FP),
        asm::add64(3, -40),
        asm::mov64(4, 0),
        asm::call(bpfasm::MAP_UPDATE_ELEM),
    ]);
    set_address(&mut b, 7);
    b.here(out);
    b.push(&[asm::mov64(0, 1), asm::exit()]);
    b.finish()
}

/// The socket address (context in r6) := the map value `reg` points to.
fn set_address(b: &mut Builder, reg: u8) {
    use asm::W;
    b.push(&[
        asm::load(W, 2, reg, 0),
        asm::store(W, 6, USER_IP4, 2),
        asm::load(W, 2, reg, 4),
        asm::store(W, 6, USER_PORT, 2),
    ]);
}

/// The getpeername program: the address a redirected socket asked for,
/// while its peer is still the container it was pointed at (a UDP socket
/// may connect elsewhere later).
pub fn getpeername_program(sockets: i32) -> Vec<Insn> {
    use asm::{DW, FP, JNE, W};
    let mut b = Builder::new();
    let out = b.label();
    b.push(&[
        asm::mov64_reg(6, 1),
        asm::call(GET_SOCKET_COOKIE),
        asm::store(DW, FP, -8, 0),
    ]);
    b.lookup(sockets, -8, out);
    b.push(&[asm::load(W, 1, 0, 8), asm::load(W, 2, 6, USER_IP4)]);
    b.jump(asm::jump_reg(JNE, 1, 2, 0), out);
    b.push(&[asm::load(W, 1, 0, 12), asm::load(W, 2, 6, USER_PORT)]);
    b.jump(asm::jump_reg(JNE, 1, 2, 0), out);
    set_address(&mut b, 0);
    b.here(out);
    b.push(&[asm::mov64(0, 1), asm::exit()]);
    b.finish()
}

/// The root of the cgroup v2 hierarchy, opened.
fn cgroup() -> Result<std::fs::File> {
    let root = berth_sys::mount::cgroup2_root().ok_or_else(|| lb_err("cgroup2", "not mounted"))?;
    std::fs::File::open(&root).map_err(|e| lb_err(&root.to_string_lossy(), e))
}

/// Our programs on `hook` of the cgroup: (descriptor, map ids).
fn ours(cg: BorrowedFd<'_>, hook: u32, name: &str) -> Result<Vec<(OwnedFd, Vec<u32>)>> {
    let ids = bpf::prog_query(cg, hook).map_err(|e| lb_err("query", e))?;
    let progs = bpf::programs_named(&ids, name).map_err(|e| lb_err("program info", e))?;
    Ok(progs
        .into_iter()
        .map(|(fd, info)| (fd, info.map_ids))
        .collect())
}

/// The port map of the connect program already attached, if any.
fn attached_map(cg: BorrowedFd<'_>, name: &str) -> Result<Option<OwnedFd>> {
    for (_, maps) in ours(cg, bpf::BPF_CGROUP_INET4_CONNECT, name)? {
        for id in maps {
            let m = bpf::map_get_fd_by_id(id).map_err(|e| lb_err("map", e))?;
            if bpf::map_type(m.as_fd()).map_err(|e| lb_err("map", e))? == bpf::BPF_MAP_TYPE_HASH {
                return Ok(Some(m));
            }
        }
    }
    Ok(None)
}

fn load(attach: u32, insns: &[Insn], name: &str) -> Result<OwnedFd> {
    bpf::prog_load_for(
        bpf::BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        attach,
        insns,
        c"Apache-2.0",
        name,
    )
    .map_err(|e| lb_err("loading a program", e))
}

/// Make the maps and attach both programs; the port map.
fn install(cg: BorrowedFd<'_>, name: &str) -> Result<OwnedFd> {
    let ports = bpf::map_create(
        bpf::BPF_MAP_TYPE_HASH,
        KEY_SIZE as u32,
        VALUE_SIZE as u32,
        MAX_PORTS,
        bpf::BPF_F_NO_PREALLOC,
        name,
    )
    .map_err(|e| lb_err("making the map", e))?;
    let sockets = bpf::map_create(bpf::BPF_MAP_TYPE_LRU_HASH, 8, 16, MAX_SOCKETS, 0, name)
        .map_err(|e| lb_err("making the map", e))?;
    let netns = bpf::netns_cookie().map_err(|e| lb_err("network namespace cookie", e))?;
    let peer = load(
        bpf::BPF_CGROUP_INET4_GETPEERNAME,
        &getpeername_program(sockets.as_raw_fd()),
        name,
    )?;
    let connect = load(
        bpf::BPF_CGROUP_INET4_CONNECT,
        &connect_program(ports.as_raw_fd(), sockets.as_raw_fd(), netns),
        name,
    )?;
    // getpeername first: a socket redirected is never left without it.
    for (prog, hook) in [
        (&peer, bpf::BPF_CGROUP_INET4_GETPEERNAME),
        (&connect, bpf::BPF_CGROUP_INET4_CONNECT),
    ] {
        bpf::prog_attach(cg, prog.as_fd(), hook, bpf::BPF_F_ALLOW_MULTI)
            .map_err(|e| lb_err("attaching a program", e))?;
    }
    Ok(ports)
}

/// Detach this table's programs (their maps go with the last of them).
fn uninstall(cg: BorrowedFd<'_>, name: &str) -> Result<()> {
    // connect first: nothing is redirected once getpeername goes.
    for hook in HOOKS {
        for (fd, _) in ours(cg, hook, name)? {
            bpf::prog_detach(cg, fd.as_fd(), hook).map_err(|e| lb_err("detaching", e))?;
        }
    }
    Ok(())
}

/// Make the kernel's redirections those of `ports` for berth's table
/// `table`: programs attached (or detached when none is left) and the map
/// holding exactly what [`entries`] says.
pub fn sync(table: &str, ports: &[FwPort]) -> Result<()> {
    let want = entries(ports);
    let name = prog_name(table);
    let cg = cgroup()?;
    if want.is_empty() {
        return uninstall(cg.as_fd(), &name);
    }
    let map = match attached_map(cg.as_fd(), &name)? {
        Some(m) => m,
        None => {
            // A half of the pair left by a failure: start again.
            uninstall(cg.as_fd(), &name)?;
            install(cg.as_fd(), &name)?
        }
    };
    for k in bpf::map_keys(map.as_fd()).map_err(|e| lb_err("map keys", e))? {
        if !want.contains_key(&k[..]) {
            bpf::map_delete(map.as_fd(), &k).map_err(|e| lb_err("map delete", e))?;
        }
    }
    for (k, v) in &want {
        bpf::map_update(map.as_fd(), k, v).map_err(|e| lb_err("map update", e))?;
    }
    Ok(())
}

/// Whether this kernel has what it takes (Linux 5.14: the namespace
/// cookie from a socket; the programs' hooks are older).
pub fn supported() -> bool {
    berth_sys::process::kernel_version().is_some_and(|v| v >= (5, 14))
}

/// Whether `table`'s programs are on the cgroup (for tests).
pub fn installed(table: &str) -> Result<bool> {
    let cg = cgroup()?;
    let name = prog_name(table);
    for hook in HOOKS {
        if !ours(cg.as_fd(), hook, &name)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The redirection of `127.0.0.1:port/proto` by `table`'s map, if any
/// (for tests).
pub fn redirection(table: &str, port: u16, proto: Proto) -> Result<Option<(Ipv4Addr, u16)>> {
    let Some(map) = attached_map(cgroup()?.as_fd(), &prog_name(table))? else {
        return Ok(None);
    };
    let Some(p) = proto_number(proto) else {
        return Ok(None);
    };
    for host in [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED] {
        let mut v = [0u8; VALUE_SIZE];
        if bpf::map_lookup(map.as_fd(), &key(host, port, p), &mut v)
            .map_err(|e| lb_err("map lookup", e))?
        {
            let addr = Ipv4Addr::new(v[0], v[1], v[2], v[3]);
            return Ok(Some((addr, u16::from_be_bytes([v[4], v[5]]))));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortMapping;

    fn port(host_ip: Option<&str>, host: u16, to: u16, proto: Proto, target: &str) -> FwPort {
        FwPort {
            mapping: PortMapping {
                host_ip: host_ip.map(|a| a.parse().unwrap()),
                host_port: host,
                container_port: to,
                proto,
            },
            target: target.parse().unwrap(),
        }
    }

    #[test]
    fn entries_are_the_loopback_reachable_ipv4_ports() {
        let e = entries(&[
            port(None, 8080, 80, Proto::Tcp, "10.80.0.2"),
            port(Some("127.0.0.1"), 5353, 53, Proto::Udp, "10.80.0.3"),
            port(Some("192.0.2.1"), 9000, 90, Proto::Tcp, "10.80.0.4"),
            port(None, 7000, 70, Proto::Sctp, "10.80.0.5"),
            port(None, 6000, 60, Proto::Tcp, "fd00::2"),
        ]);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[&key(Ipv4Addr::UNSPECIFIED, 8080, 6)],
            value("10.80.0.2".parse().unwrap(), 80)
        );
        assert_eq!(
            e[&key(Ipv4Addr::LOCALHOST, 5353, 17)],
            value("10.80.0.3".parse().unwrap(), 53)
        );
        assert_eq!(prog_name("berth").len(), 15);
        assert_ne!(prog_name("berth_6eb531eb"), prog_name("berth_6eb531ec"));
        // The key's port is in network order, as the socket address has it.
        assert_eq!(&key(Ipv4Addr::LOCALHOST, 0x1234, 6)[4..6], &[0x12, 0x34]);
    }

    #[test]
    fn jumps_land_inside_the_programs() {
        assert!(bpfasm::jumps_land_inside(&connect_program(3, 4, 77)));
        assert!(bpfasm::jumps_land_inside(&getpeername_program(4)));
    }

    /// Root: the kernel's verifier takes both programs.
    #[test]
    fn the_kernel_accepts_the_programs() {
        if !crate::need_root() {
            return;
        }
        let ports = bpf::map_create(bpf::BPF_MAP_TYPE_HASH, 12, 8, 4, 1, "t").unwrap();
        let sockets = bpf::map_create(bpf::BPF_MAP_TYPE_LRU_HASH, 8, 16, 4, 0, "t").unwrap();
        let netns = bpf::netns_cookie().unwrap();
        load(
            bpf::BPF_CGROUP_INET4_CONNECT,
            &connect_program(ports.as_raw_fd(), sockets.as_raw_fd(), netns),
            "berth_test",
        )
        .expect("connect program");
        load(
            bpf::BPF_CGROUP_INET4_GETPEERNAME,
            &getpeername_program(sockets.as_raw_fd()),
            "berth_test",
        )
        .expect("getpeername program");
    }
}
