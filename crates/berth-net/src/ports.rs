//! `-p/--publish` specs, Docker's grammar:
//! `[ip:][hostPort[-end]:]containerPort[-end][/tcp|udp|sctp]`, with IPv6
//! addresses in brackets (`[::1]:8080:80`). Pure parsing; the engine picks
//! random host ports and checks conflicts when the container starts.

use crate::NetError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    pub fn parse(s: &str) -> Result<Proto, NetError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            _ => Err(NetError::Invalid(format!("invalid proto: {s}"))),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One container port to publish, as asked: host ports `host_start..=host_end`
/// (both 0: a random one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub host_ip: Option<IpAddr>,
    pub host_start: u16,
    pub host_end: u16,
    pub container_port: u16,
    pub proto: Proto,
}

/// A published port, decided: what `berth port` shows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    /// `None`: every address of the host.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl PortMapping {
    /// Docker's `port` line: `80/tcp -> 0.0.0.0:8080`.
    pub fn line(&self) -> String {
        let ip = match self.host_ip {
            None => "0.0.0.0".to_string(),
            Some(IpAddr::V6(v)) => format!("[{v}]"),
            Some(IpAddr::V4(v)) => v.to_string(),
        };
        format!(
            "{}/{} -> {ip}:{}",
            self.container_port, self.proto, self.host_port
        )
    }
}

fn port(s: &str, spec: &str) -> Result<u16, NetError> {
    let bad = || NetError::Invalid(format!("invalid port {s:?} in {spec:?}: want 1-65535"));
    let n: u32 = s.parse().map_err(|_| bad())?;
    if n == 0 || n > 65535 {
        return Err(bad());
    }
    Ok(n as u16)
}

fn range(s: &str, spec: &str) -> Result<(u16, u16), NetError> {
    match s.split_once('-') {
        None => {
            let p = port(s, spec)?;
            Ok((p, p))
        }
        Some((a, b)) => {
            let (a, b) = (port(a, spec)?, port(b, spec)?);
            if b < a {
                return Err(NetError::Invalid(format!(
                    "invalid port range {s:?} in {spec:?}: the end is below the start"
                )));
            }
            Ok((a, b))
        }
    }
}

/// Parse one `-p` value into one spec per container port.
pub fn parse_publish(spec: &str) -> Result<Vec<PortSpec>, NetError> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, Proto::parse(p)?),
        None => (spec, Proto::Tcp),
    };
    // An IPv6 address in brackets first.
    let (ip, rest): (Option<&str>, &str) = if let Some(r) = body.strip_prefix('[') {
        let (ip, after) = r
            .split_once(']')
            .ok_or_else(|| NetError::Invalid(format!("invalid publish spec {spec:?}")))?;
        let after = after
            .strip_prefix(':')
            .ok_or_else(|| NetError::Invalid(format!("invalid publish spec {spec:?}")))?;
        (Some(ip), after)
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.len() {
            1 | 2 => (None, body),
            3 => (Some(parts[0]), &body[parts[0].len() + 1..]),
            _ => return Err(NetError::Invalid(format!("invalid publish spec {spec:?}"))),
        }
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(s) => {
            let a: IpAddr = s
                .parse()
                .map_err(|_| NetError::Invalid(format!("invalid IP address {s:?} in {spec:?}")))?;
            if a.is_unspecified() && a.is_ipv4() {
                None
            } else {
                Some(a)
            }
        }
    };
    let (host, ctr) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let (c0, c1) = range(ctr, spec)?;
    let (h0, h1) = if host.is_empty() {
        (0, 0)
    } else {
        range(host, spec)?
    };
    let n = (c1 - c0) as u32 + 1;
    let mut out = Vec::new();
    if h0 != 0 && h0 != h1 && c0 == c1 {
        // A host range for one container port: the first free one of it.
        out.push(PortSpec {
            host_ip,
            host_start: h0,
            host_end: h1,
            container_port: c0,
            proto,
        });
        return Ok(out);
    }
    if h0 != 0 && (h1 - h0) as u32 + 1 != n {
        return Err(NetError::Invalid(format!(
            "invalid ranges in {spec:?}: the host range and the container range differ in size"
        )));
    }
    for i in 0..n {
        let h = if h0 == 0 { 0 } else { h0 + i as u16 };
        out.push(PortSpec {
            host_ip,
            host_start: h,
            host_end: h,
            container_port: c0 + i as u16,
            proto,
        });
    }
    Ok(out)
}

/// An image's EXPOSE entry (`80/tcp`, `53/udp`, `8000-8002/tcp`): the ports.
pub fn parse_exposed(s: &str) -> Result<Vec<(u16, Proto)>, NetError> {
    let (p, proto) = match s.split_once('/') {
        Some((p, x)) => (p, Proto::parse(x)?),
        None => (s, Proto::Tcp),
    };
    let (a, b) = range(p, s)?;
    Ok((a..=b).map(|x| (x, proto)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> PortSpec {
        let v = parse_publish(s).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        v.into_iter().next().unwrap()
    }

    #[test]
    fn forms() {
        let p = one("8080:80");
        assert_eq!(
            (p.host_ip, p.host_start, p.container_port, p.proto),
            (None, 8080, 80, Proto::Tcp)
        );
        let p = one("127.0.0.1:8080:80/udp");
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(p.proto, Proto::Udp);
        let p = one("80");
        assert_eq!((p.host_start, p.host_end, p.container_port), (0, 0, 80));
        let p = one("127.0.0.1::80");
        assert_eq!((p.host_start, p.container_port), (0, 80));
        let p = one("[::1]:8080:80");
        assert_eq!(p.host_ip, Some("::1".parse().unwrap()));
        let p = one("0.0.0.0:8080:80");
        assert_eq!(p.host_ip, None);
        let p = one("8000-8010:80");
        assert_eq!(
            (p.host_start, p.host_end, p.container_port),
            (8000, 8010, 80)
        );
    }

    #[test]
    fn ranges() {
        let v = parse_publish("8000-8002:80-82/udp").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!((v[2].host_start, v[2].container_port), (8002, 82));
        let v = parse_publish("80-81").unwrap();
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|p| p.host_start == 0));
        assert!(parse_publish("8000-8001:80-82").is_err());
    }

    #[test]
    fn invalid() {
        for bad in [
            "0",
            "70000",
            "1-0",
            "8080:0",
            "x:80",
            "80/icmp",
            "1.2.3.4.5:80:80",
            "a:b:c:d",
            "",
            "[::1]8080:80",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines() {
        let m = PortMapping {
            host_ip: None,
            host_port: 8080,
            container_port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(m.line(), "80/tcp -> 0.0.0.0:8080");
        let m = PortMapping {
            host_ip: Some("::1".parse().unwrap()),
            ..m
        };
        assert_eq!(m.line(), "80/tcp -> [::1]:8080");
    }

    #[test]
    fn exposed() {
        assert_eq!(parse_exposed("80/tcp").unwrap(), vec![(80, Proto::Tcp)]);
        assert_eq!(parse_exposed("53/udp").unwrap(), vec![(53, Proto::Udp)]);
        assert_eq!(parse_exposed("8000-8001").unwrap().len(), 2);
    }
}
