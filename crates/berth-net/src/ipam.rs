//! Address management, as pure functions: subnets (IPv4 and IPv6 CIDR),
//! choosing a free subnet that collides with nothing on the host, and the
//! next free address of a subnet. The engine keeps leases in its database
//! and calls these inside a transaction.

use crate::NetError;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A CIDR prefix, normalised (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Subnet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Subnet {
    type Error = NetError;
    fn try_from(s: String) -> Result<Subnet, NetError> {
        s.parse()
    }
}

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

fn width(a: IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn from_bits(v6: bool, b: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::from(b as u32))
    }
}

fn all_ones(w: u8) -> u128 {
    if w == 32 {
        u32::MAX as u128
    } else {
        u128::MAX
    }
}

fn mask(w: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        all_ones(w) & !((1u128 << (w - prefix)) - 1)
    }
}

impl Subnet {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Subnet, NetError> {
        let w = width(addr);
        if prefix > w {
            return Err(NetError::Invalid(format!("invalid subnet {addr}/{prefix}")));
        }
        let b = bits(addr) & mask(w, prefix);
        Ok(Subnet {
            addr: from_bits(w == 128, b),
            prefix,
        })
    }

    pub fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }

    fn w(&self) -> u8 {
        width(self.addr)
    }

    /// How many addresses it spans (saturated for huge IPv6 prefixes).
    pub fn size(&self) -> u128 {
        let host = self.w() - self.prefix;
        if host >= 127 {
            u128::MAX
        } else {
            1u128 << host
        }
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv6() == self.is_v6() && bits(a) & mask(self.w(), self.prefix) == bits(self.addr)
    }

    pub fn overlaps(&self, o: &Subnet) -> bool {
        if self.is_v6() != o.is_v6() {
            return false;
        }
        let p = self.prefix.min(o.prefix);
        let m = mask(self.w(), p);
        bits(self.addr) & m == bits(o.addr) & m
    }

    /// Whether `o` lies wholly inside this subnet.
    pub fn covers(&self, o: &Subnet) -> bool {
        o.prefix >= self.prefix && self.contains(o.addr)
    }

    /// The `n`th address of the subnet (0 is the network address).
    pub fn nth(&self, n: u128) -> Option<IpAddr> {
        (n < self.size()).then(|| from_bits(self.is_v6(), bits(self.addr) + n))
    }

    fn offset(&self, a: IpAddr) -> u128 {
        bits(a) - bits(self.addr)
    }

    /// The last address (IPv4's broadcast).
    pub fn last(&self) -> IpAddr {
        from_bits(
            self.is_v6(),
            bits(self.addr) | (!mask(self.w(), self.prefix) & all_ones(self.w())),
        )
    }

    /// The gateway Docker picks: the first host address.
    pub fn first_host(&self) -> Option<IpAddr> {
        self.nth(1)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Subnet, NetError> {
        let bad = || NetError::Invalid(format!("invalid subnet {s:?}: want an address/prefix"));
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        Subnet::new(addr, prefix)
    }
}

/// The next free address of `subnet` within `range` (the whole subnet when
/// `None`), never the network address, the gateway, the broadcast address
/// (IPv4) or one in `used`. Addresses are taken in order, so that a freed
/// one is given again only after the rest (less surprise for DNS caches
/// would need a cursor; order keeps it deterministic and testable).
pub fn next_free(
    subnet: &Subnet,
    range: Option<&Subnet>,
    gateway: Option<IpAddr>,
    used: &HashSet<IpAddr>,
) -> Option<IpAddr> {
    let pool = range.copied().unwrap_or(*subnet);
    let start = if pool.addr == subnet.addr {
        1
    } else {
        subnet.offset(pool.addr)
    };
    let end = subnet
        .offset(pool.last())
        .min(subnet.size().saturating_sub(1));
    // Bounded walk: a /8 has 16M addresses, but the used set is small, so
    // the first free one is at most used.len() + 3 steps away.
    let mut n = start;
    let limit = used.len() as u128 + 4;
    let mut steps = 0u128;
    while n <= end && steps <= limit {
        let a = subnet.nth(n)?;
        let broadcast = !subnet.is_v6() && a == subnet.last() && subnet.prefix < 31;
        if Some(a) != gateway && !used.contains(&a) && !broadcast && n != 0 {
            return Some(a);
        }
        n += 1;
        steps += 1;
    }
    None
}

/// Check an address asked for with `--ip`: inside the subnet, not the
/// network, broadcast or gateway address, not taken.
pub fn check_static(
    subnet: &Subnet,
    gateway: Option<IpAddr>,
    used: &HashSet<IpAddr>,
    want: IpAddr,
) -> Result<(), NetError> {
    if !subnet.contains(want) {
        return Err(NetError::Invalid(format!(
            "no configured subnet contains IP address {want}"
        )));
    }
    if want == subnet.addr || (!subnet.is_v6() && want == subnet.last() && subnet.prefix < 31) {
        return Err(NetError::Invalid(format!(
            "address {want} is the network or broadcast address of {subnet}"
        )));
    }
    if Some(want) == gateway || used.contains(&want) {
        return Err(NetError::Conflict(format!(
            "Address already in use: {want}"
        )));
    }
    Ok(())
}

/// The first candidate subnet that overlaps none of `taken`.
pub fn choose_subnet(
    candidates: impl IntoIterator<Item = Subnet>,
    taken: &[Subnet],
) -> Option<Subnet> {
    candidates
        .into_iter()
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
}

/// Candidates for the default `bridge` network: /16s from 10.87 down to
/// 10.80 (clear of podman's 10.88 and its 10.89+ pools, and of Docker's
/// 172.17+ pools).
pub fn bridge_candidates() -> impl Iterator<Item = Subnet> {
    (80u8..=87).rev().map(|b| Subnet {
        addr: IpAddr::V4(Ipv4Addr::new(10, b, 0, 0)),
        prefix: 16,
    })
}

/// Candidates for user-defined networks: /24s in 10.80.0.0/14 from the
/// bottom up (the default bridge takes a /16 from the top of 10.80/13).
pub fn user_candidates() -> impl Iterator<Item = Subnet> {
    (0u32..1024).map(|i| Subnet {
        addr: IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(10, 80, 0, 0)) + (i << 8),
        )),
        prefix: 24,
    })
}

/// IPv6 candidates (`--ipv6` without a subnet): unique-local /64s.
pub fn v6_candidates() -> impl Iterator<Item = Subnet> {
    (0u16..4096).map(|i| Subnet {
        addr: IpAddr::V6(Ipv6Addr::new(0xfd62, 0x6572, 0x7468, i, 0, 0, 0, 0)),
        prefix: 64,
    })
}

/// A MAC address derived from an IPv4 address as Docker does
/// (`02:42:` + the four bytes), or from the low bytes of an IPv6 one.
pub fn mac_for(a: IpAddr) -> [u8; 6] {
    let b = bits(a).to_be_bytes();
    [0x02, 0x42, b[12], b[13], b[14], b[15]]
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], NetError> {
    let bad = || NetError::Invalid(format!("invalid MAC address: {s}"));
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if out[0] & 1 == 1 {
        return Err(NetError::Invalid(format!(
            "invalid MAC address {s}: a multicast address"
        )));
    }
    Ok(out)
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Subnet {
        x.parse().unwrap()
    }

    #[test]
    fn parses_and_normalises() {
        assert_eq!(s("10.1.2.3/16").to_string(), "10.1.0.0/16");
        assert_eq!(s("fd00::5/64").to_string(), "fd00::/64");
        assert!("10.0.0.0".parse::<Subnet>().is_err());
        assert!("10.0.0.0/33".parse::<Subnet>().is_err());
        assert!("x/8".parse::<Subnet>().is_err());
        assert_eq!(s("0.0.0.0/0").to_string(), "0.0.0.0/0");
    }

    #[test]
    fn overlaps_and_contains() {
        assert!(s("10.0.0.0/8").overlaps(&s("10.5.0.0/16")));
        assert!(s("10.5.0.0/16").overlaps(&s("10.0.0.0/8")));
        assert!(!s("10.5.0.0/16").overlaps(&s("10.6.0.0/16")));
        assert!(!s("10.5.0.0/16").overlaps(&s("fd00::/8")));
        assert!(s("10.5.0.0/16").contains("10.5.255.255".parse().unwrap()));
        assert!(!s("10.5.0.0/16").contains("10.6.0.0".parse().unwrap()));
        assert!(s("10.5.0.0/16").covers(&s("10.5.3.0/24")));
        assert!(!s("10.5.3.0/24").covers(&s("10.5.0.0/16")));
        assert_eq!(s("10.5.0.0/16").last().to_string(), "10.5.255.255");
        assert_eq!(
            s("fd00::/64").last().to_string(),
            "fd00::ffff:ffff:ffff:ffff"
        );
    }

    #[test]
    fn next_free_skips_network_gateway_broadcast_and_used() {
        let n = s("10.9.0.0/30");
        let gw = n.first_host();
        let mut used = HashSet::new();
        assert_eq!(
            next_free(&n, None, gw, &used).unwrap().to_string(),
            "10.9.0.2"
        );
        used.insert("10.9.0.2".parse().unwrap());
        // .3 is the broadcast address: full.
        assert_eq!(next_free(&n, None, gw, &used), None);
        let n6 = s("fd00:1::/64");
        let gw6 = n6.first_host();
        assert_eq!(
            next_free(&n6, None, gw6, &HashSet::new())
                .unwrap()
                .to_string(),
            "fd00:1::2"
        );
    }

    #[test]
    fn next_free_in_range() {
        let n = s("10.9.0.0/16");
        let r = s("10.9.5.0/24");
        let a = next_free(&n, Some(&r), n.first_host(), &HashSet::new()).unwrap();
        assert_eq!(a.to_string(), "10.9.5.0");
    }

    #[test]
    fn static_addresses_are_checked() {
        let n = s("10.9.0.0/24");
        let gw = n.first_host();
        let used: HashSet<IpAddr> = ["10.9.0.2".parse().unwrap()].into();
        assert!(check_static(&n, gw, &used, "10.9.0.3".parse().unwrap()).is_ok());
        assert!(check_static(&n, gw, &used, "10.9.0.2".parse().unwrap()).is_err());
        assert!(check_static(&n, gw, &used, "10.9.0.1".parse().unwrap()).is_err());
        assert!(check_static(&n, gw, &used, "10.9.0.255".parse().unwrap()).is_err());
        assert!(check_static(&n, gw, &used, "10.8.0.5".parse().unwrap()).is_err());
    }

    #[test]
    fn choose_avoids_taken() {
        let taken = [s("10.87.0.0/16"), s("10.0.0.0/12")];
        assert_eq!(
            choose_subnet(bridge_candidates(), &taken)
                .unwrap()
                .to_string(),
            "10.86.0.0/16"
        );
        let taken = [s("10.80.0.0/24"), s("10.80.1.0/24")];
        assert_eq!(
            choose_subnet(user_candidates(), &taken)
                .unwrap()
                .to_string(),
            "10.80.2.0/24"
        );
        assert_eq!(choose_subnet(bridge_candidates(), &[s("10.0.0.0/8")]), None);
    }

    #[test]
    fn macs() {
        assert_eq!(
            format_mac(&mac_for("10.87.0.2".parse().unwrap())),
            "02:42:0a:57:00:02"
        );
        assert_eq!(
            parse_mac("02:42:0a:57:00:02").unwrap(),
            [2, 0x42, 10, 0x57, 0, 2]
        );
        assert!(parse_mac("01:00:00:00:00:00").is_err());
        assert!(parse_mac("zz:00:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00").is_err());
    }
}
