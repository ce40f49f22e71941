//! berth's firewall: one nftables table per run root (`inet berth` for the
//! default one), that berth alone owns. The whole table is a pure function of the networks and published
//! ports ([`ruleset`]); [`apply`] replaces it in one atomic transaction
//! (`nft -f -`), so rules lost from the host (a flush by an admin) come
//! back the next time berth touches a network, and nobody else's tables or
//! chains are ever read, flushed or edited.

use crate::ipam::Subnet;
use crate::ports::{PortMapping, Proto};
use crate::{NetError, Result};
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// A bridge network, as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwNetwork {
    pub bridge: String,
    pub subnets: Vec<Subnet>,
    /// `--internal`: no traffic in or out of the bridge but its own.
    pub internal: bool,
}

/// A published port and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwPort {
    pub mapping: PortMapping,
    pub target: IpAddr,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firewall {
    pub networks: Vec<FwNetwork>,
    pub ports: Vec<FwPort>,
}

fn l4(p: Proto) -> &'static str {
    p.as_str()
}

/// The `table inet berth` text for `fw` (empty networks: no table).
pub fn ruleset(table: &str, fw: &Firewall) -> String {
    let mut s = String::new();
    if fw.networks.is_empty() && fw.ports.is_empty() {
        return s;
    }
    let bridges: Vec<String> = fw
        .networks
        .iter()
        .map(|n| format!("\"{}\"", n.bridge))
        .collect();
    let set = bridges.join(", ");
    let _ = writeln!(s, "table inet {table} {{");
    // Forwarding: replies, published ports, then isolation.
    let _ = writeln!(s, "\tchain forward {{");
    let _ = writeln!(
        s,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    for n in fw.networks.iter().filter(|n| n.internal) {
        let _ = writeln!(
            s,
            "\t\tiifname \"{b}\" oifname != \"{b}\" drop",
            b = n.bridge
        );
        let _ = writeln!(
            s,
            "\t\toifname \"{b}\" iifname != \"{b}\" drop",
            b = n.bridge
        );
    }
    let _ = writeln!(s, "\t\tct state established,related accept");
    let _ = writeln!(s, "\t\tct status dnat accept");
    for n in &fw.networks {
        let _ = writeln!(
            s,
            "\t\tiifname \"{b}\" oifname {{ {set} }} oifname != \"{b}\" drop",
            b = n.bridge
        );
    }
    let _ = writeln!(s, "\t}}");
    // Published ports: DNAT of traffic to the host's own addresses, from
    // outside (prerouting) and from the host itself (output).
    let _ = writeln!(s, "\tchain published {{");
    for p in &fw.ports {
        let m = &p.mapping;
        let (fam, nat) = match p.target {
            IpAddr::V4(_) => ("ipv4", "ip"),
            IpAddr::V6(_) => ("ipv6", "ip6"),
        };
        let daddr = match m.host_ip {
            Some(IpAddr::V4(a)) if p.target.is_ipv4() => format!("ip daddr {a} "),
            Some(IpAddr::V6(a)) if p.target.is_ipv6() => format!("ip6 daddr {a} "),
            Some(_) => continue,
            None => String::new(),
        };
        let to = match p.target {
            IpAddr::V4(a) => format!("{a}:{}", m.container_port),
            IpAddr::V6(a) => format!("[{a}]:{}", m.container_port),
        };
        let _ = writeln!(
            s,
            "\t\tmeta nfproto {fam} {daddr}{proto} dport {hp} dnat {nat} to {to}",
            proto = l4(m.proto),
            hp = m.host_port
        );
    }
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "\tchain prerouting {{");
    let _ = writeln!(
        s,
        "\t\ttype nat hook prerouting priority dstnat; policy accept;"
    );
    let _ = writeln!(s, "\t\tfib daddr type local jump published");
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "\tchain output {{");
    let _ = writeln!(s, "\t\ttype nat hook output priority -100; policy accept;");
    let _ = writeln!(s, "\t\tfib daddr type local jump published");
    let _ = writeln!(s, "\t}}");
    // Source NAT: outbound masquerade, and the host's loopback or a
    // container's own bridge (hairpin) reaching a published port. A
    // loopback source is masqueraded whether DNAT brought it here or a
    // socket bound to 127.0.0.1 was pointed at a container by
    // `loopback`'s program.
    let _ = writeln!(s, "\tchain postrouting {{");
    let _ = writeln!(
        s,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    for n in &fw.networks {
        let _ = writeln!(
            s,
            "\t\toifname \"{b}\" ip saddr 127.0.0.0/8 masquerade",
            b = n.bridge
        );
        let _ = writeln!(
            s,
            "\t\tct status dnat iifname \"{b}\" oifname \"{b}\" masquerade",
            b = n.bridge
        );
        if n.internal {
            continue;
        }
        for sub in &n.subnets {
            let fam = if sub.is_v6() { "ip6" } else { "ip" };
            let _ = writeln!(
                s,
                "\t\t{fam} saddr {sub} oifname != \"{b}\" masquerade",
                b = n.bridge
            );
        }
    }
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
    s
}

/// The script that replaces berth's table with `fw`'s, atomically.
pub fn script(table: &str, fw: &Firewall) -> String {
    // `add` makes the delete safe when the table is missing.
    let mut s = format!("add table inet {table}\ndelete table inet {table}\n");
    s.push_str(&ruleset(table, fw));
    s
}

/// Replace berth's table in the kernel.
pub fn apply(table: &str, fw: &Firewall) -> Result<()> {
    run_nft(&script(table, fw))
}

pub fn run_nft(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            NetError::Firewall(format!(
                "running nft: {e} (is the nftables package installed?)"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| NetError::Firewall(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::Firewall(format!("running nft: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or("").to_string();
        return Err(NetError::Firewall(format!("nft failed: {first}")));
    }
    Ok(())
}

/// Whether the table is in the kernel now: one nf_tables netlink request
/// (NFT_MSG_GETTABLE), no process. Any failure to ask counts as missing,
/// so the caller writes the table again.
pub fn table_present(table: &str) -> bool {
    table_query(table).unwrap_or(false)
}

fn table_query(table: &str) -> std::io::Result<bool> {
    use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
    const NFT_MSG_GETTABLE: u16 = (10 << 8) | 1; // NFNL_SUBSYS_NFTABLES
    const NFT_MSG_NEWTABLE: u16 = 10 << 8;
    const NLMSG_ERROR: u16 = 2;
    const NFPROTO_INET: u8 = 1;
    const NFTA_TABLE_NAME: u16 = 1;
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let name = table.as_bytes();
    let attr_len = 4 + name.len() + 1;
    let padded = (attr_len + 3) & !3;
    let len = 16 + 4 + padded;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&NFT_MSG_GETTABLE.to_ne_bytes());
    m.extend_from_slice(&(0x1u16 | 0x4).to_ne_bytes()); // REQUEST | ACK
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]);
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&NFTA_TABLE_NAME.to_ne_bytes());
    m.extend_from_slice(name);
    m.resize(len, 0);
    sock.send(&m, 0)?;
    let mut found = false;
    let mut buf = vec![0u8; 16384];
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        let mut off = 0;
        while off + 16 <= n {
            let mlen =
                u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
            let mtype = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if mtype == NFT_MSG_NEWTABLE {
                found = true;
            } else if mtype == NLMSG_ERROR && off + 20 <= n {
                let err = i32::from_ne_bytes([
                    buf[off + 16],
                    buf[off + 17],
                    buf[off + 18],
                    buf[off + 19],
                ]);
                return Ok(err == 0 && found);
            }
            if mlen == 0 {
                break;
            }
            off += (mlen + 3) & !3;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(super) fn fw() -> Firewall {
        Firewall {
            networks: vec![
                FwNetwork {
                    bridge: "berth0".into(),
                    subnets: vec![
                        "10.87.0.0/16".parse().unwrap(),
                        "fd62::/64".parse().unwrap(),
                    ],
                    internal: false,
                },
                FwNetwork {
                    bridge: "br-abc".into(),
                    subnets: vec!["10.80.0.0/24".parse().unwrap()],
                    internal: true,
                },
            ],
            ports: vec![
                FwPort {
                    mapping: PortMapping {
                        host_ip: None,
                        host_port: 8080,
                        container_port: 80,
                        proto: Proto::Tcp,
                    },
                    target: "10.87.0.2".parse().unwrap(),
                },
                FwPort {
                    mapping: PortMapping {
                        host_ip: Some("127.0.0.1".parse().unwrap()),
                        host_port: 5353,
                        container_port: 53,
                        proto: Proto::Udp,
                    },
                    target: "10.87.0.3".parse().unwrap(),
                },
            ],
        }
    }

    #[test]
    fn ruleset_has_nat_ports_and_isolation() {
        let r = ruleset("berth", &fw());
        assert!(r.contains("meta nfproto ipv4 tcp dport 8080 dnat ip to 10.87.0.2:80"));
        assert!(r.contains(
            "meta nfproto ipv4 ip daddr 127.0.0.1 udp dport 5353 dnat ip to 10.87.0.3:53"
        ));
        assert!(r.contains("ip saddr 10.87.0.0/16 oifname != \"berth0\" masquerade"));
        assert!(r.contains("ip6 saddr fd62::/64 oifname != \"berth0\" masquerade"));
        // An internal network is not masqueraded and is closed both ways.
        assert!(!r.contains("10.80.0.0/24 oifname"));
        assert!(r.contains("iifname \"br-abc\" oifname != \"br-abc\" drop"));
        assert!(r.contains(
            "iifname \"berth0\" oifname { \"berth0\", \"br-abc\" } oifname != \"berth0\" drop"
        ));
        assert!(r.contains("oifname \"berth0\" ip saddr 127.0.0.0/8 masquerade"));
    }

    #[test]
    fn script_replaces_only_berths_table() {
        let s = script("berth", &fw());
        assert!(s.starts_with("add table inet berth\ndelete table inet berth\ntable inet berth {"));
        assert!(!s.contains("flush ruleset"));
        assert_eq!(
            script("berth", &Firewall::default()),
            "add table inet berth\ndelete table inet berth\n"
        );
    }
}
#[cfg(test)]
mod kernel {
    use super::*;

    /// Root: the ruleset is accepted by the kernel, is seen by
    /// [`table_present`], and goes away whole.
    #[test]
    fn ruleset_loads_and_is_seen() {
        if !crate::need_root() {
            return;
        }
        let table = format!("berth_unit{}", std::process::id());
        assert!(!table_present(&table));
        apply(&table, &tests::fw()).unwrap();
        assert!(table_present(&table));
        apply(&table, &Firewall::default()).unwrap();
        assert!(!table_present(&table));
    }
}
