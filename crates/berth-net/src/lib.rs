//! berth's networks, below the engine: address management ([`ipam`]),
//! published-port specs ([`ports`]), links, addresses and routes through
//! netlink ([`netlink`]), network namespaces ([`netns`]), the nftables
//! table ([`nft`]), the eBPF fast path beside the bridges ([`fastpath`]), the
//! host's loopback connections to published ports redirected at the socket
//! ([`loopback`]) and the embedded DNS server ([`dns`]). It knows nothing
//! of containers or the database: the engine hands it plain plans.

mod bpfasm;
pub mod dns;
pub mod fastpath;
pub mod ipam;
pub mod loopback;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod ports;

use ipam::Subnet;
use netlink::Netlink;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("network namespace: {0}")]
    Netns(String),
    #[error("firewall: {0}")]
    Firewall(String),
    #[error("fast path: {0}")]
    FastPath(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = NetError> = std::result::Result<T, E>;

/// For the crate's root-only tests: true as root; false (the test skipped)
/// without root only when BERTH_SKIP_ROOT_TESTS=1, else the test fails.
#[cfg(test)]
pub(crate) fn need_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert_eq!(
        std::env::var("BERTH_SKIP_ROOT_TESTS").as_deref(),
        Ok("1"),
        "needs root (set BERTH_SKIP_ROOT_TESTS=1 to skip)"
    );
    false
}

/// A bridge and the gateway addresses it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePlan {
    pub name: String,
    /// Gateway address and the subnet's prefix length.
    pub addrs: Vec<(IpAddr, u8)>,
    pub mtu: u32,
}

/// One container interface on one bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPlan {
    pub bridge: String,
    /// The host side of the veth pair.
    pub host_ifname: String,
    /// The name inside the container (`eth0`, `eth1`, …).
    pub ifname: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub addrs: Vec<(IpAddr, u8)>,
    /// Default routes through these gateways (the first network only).
    pub gateways: Vec<IpAddr>,
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == value => return Ok(()),
        _ => {}
    }
    std::fs::write(path, value).map_err(|source| NetError::Io {
        what: "writing",
        path: path.to_string(),
        source,
    })
}

/// Make the bridge exist with its addresses and a fixed MAC (derived from
/// its first gateway address, as a container's is from its own), up; IP forwarding on (only
/// now, when a bridge needs it) and `route_localnet` on the bridge, so
/// that the host's own 127.0.0.1 reaches published ports without a proxy.
pub fn ensure_bridge(nl: &mut Netlink, plan: &BridgePlan) -> Result<u32> {
    let mac = plan
        .addrs
        .first()
        .map(|(a, _)| ipam::mac_for(*a))
        .unwrap_or([0x02, 0x42, 0, 0, 0, 1]);
    let index = nl.ensure_bridge(&plan.name, plan.mtu, mac)?;
    let has6 = plan.addrs.iter().any(|(a, _)| a.is_ipv6());
    if has6 {
        // Before the address: no autoconfiguration nor DAD delay on it.
        let _ = write_sysctl(
            &format!("/proc/sys/net/ipv6/conf/{}/accept_dad", plan.name),
            "0",
        );
        let _ = write_sysctl(
            &format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", plan.name),
            "0",
        );
    }
    for (a, p) in &plan.addrs {
        nl.add_address(index, *a, *p)?;
    }
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    if has6 {
        write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
    }
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", plan.name),
        "1",
    )?;
    Ok(index)
}

/// The MTU of the host's default route's link (1500 without one).
pub fn host_mtu(nl: &mut Netlink) -> u32 {
    let routes = nl.routes().unwrap_or_default();
    let oif = routes
        .iter()
        .find(|r| r.prefix == 0 && r.dst.is_ipv4() && r.oif.is_some())
        .and_then(|r| r.oif);
    oif.and_then(|i| nl.link_name(i).ok().flatten())
        .and_then(|n| nl.link_mtu(&n).ok().flatten())
        .unwrap_or(1500)
}

/// Every subnet in use on the host: its addresses' and routes' prefixes
/// (default routes left out), so berth's picks collide with none.
pub fn host_subnets(nl: &mut Netlink) -> Result<Vec<Subnet>> {
    let mut out = Vec::new();
    for a in nl.addresses()? {
        if let Ok(s) = Subnet::new(a.addr, a.prefix) {
            out.push(s);
        }
    }
    for r in nl.routes()? {
        if r.prefix == 0 {
            continue;
        }
        if let Ok(s) = Subnet::new(r.dst, r.prefix) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Connect a namespace to its bridges: for each endpoint a veth pair made
/// from inside the namespace (its `ifname` there, its `host_ifname` in the
/// host's namespace `host_ns`), addresses, `lo` and the link up, default
/// routes; then, on the host side, each veth enslaved to its bridge and up.
/// `host` is a netlink socket of the host's namespace; `in_ns` one opened
/// inside the container's. On error, the veths made are removed.
pub fn attach(
    host: &mut Netlink,
    in_ns: &mut Netlink,
    host_ns: BorrowedFd<'_>,
    eps: &[EndpointPlan],
) -> Result<()> {
    let res = (|| {
        if let Some(lo) = in_ns.link_index("lo")? {
            in_ns.set_up(lo)?;
        }
        for ep in eps {
            in_ns.add_veth(
                &ep.ifname,
                Some(ep.mac),
                ep.mtu,
                &ep.host_ifname,
                host_ns.as_raw_fd(),
            )?;
            let idx = in_ns
                .link_index(&ep.ifname)?
                .ok_or_else(|| NetError::Netlink(format!("{} vanished", ep.ifname)))?;
            for (a, p) in &ep.addrs {
                in_ns.add_address(idx, *a, *p)?;
            }
            in_ns.set_up(idx)?;
            for gw in &ep.gateways {
                in_ns.add_default_route(idx, *gw)?;
            }
            let master = host
                .link_index(&ep.bridge)?
                .ok_or_else(|| NetError::Netlink(format!("bridge {} is missing", ep.bridge)))?;
            let hidx = host
                .link_index(&ep.host_ifname)?
                .ok_or_else(|| NetError::Netlink(format!("{} vanished", ep.host_ifname)))?;
            host.set_up_master(hidx, Some(master))?;
        }
        Ok(())
    })();
    if res.is_err() {
        for ep in eps {
            let _ = host.delete_link(&ep.host_ifname);
        }
    }
    res
}

/// Remove veths by their host-side names (the peer goes with each); the
/// ones already gone are fine. Every name is tried; the first error is
/// returned.
pub fn detach(host: &mut Netlink, host_ifnames: &[String]) -> Result<()> {
    let mut first = None;
    for n in host_ifnames {
        if let Err(e) = host.delete_link(n) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}
