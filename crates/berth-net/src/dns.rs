//! The embedded DNS server of a user-defined network: one small process per
//! network, started on demand by the first container that joins it,
//! listening on the network's gateway addresses (UDP port 53). It answers
//! A and AAAA questions for the names in its configuration file (container
//! names, short IDs, aliases), which berth rewrites whenever a container
//! comes or goes, and forwards every other question unchanged to the host's
//! resolvers, except single-label names, which no resolver outside could
//! answer and which are not leaked: NXDOMAIN. It exits by itself once the network has no running container.
//!
//! The message handling is the small part of DNS this needs (a question
//! in, answers out), written here and unit-tested; forwarded messages are
//! relayed as bytes.

use crate::{NetError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

/// Names (lowercase, no trailing dot) and their addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records(pub BTreeMap<String, Vec<IpAddr>>);

impl Records {
    pub fn add(&mut self, name: &str, addrs: &[IpAddr]) {
        let e = self
            .0
            .entry(name.trim_end_matches('.').to_ascii_lowercase())
            .or_default();
        for a in addrs {
            if !e.contains(a) {
                e.push(*a);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Vec<IpAddr>> {
        self.0.get(&name.trim_end_matches('.').to_ascii_lowercase())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerConfig {
    pub listen: Vec<IpAddr>,
    pub upstreams: Vec<String>,
    pub records: Records,
}

/// Write the configuration atomically (the server may read it any time).
pub fn write_config(path: &Path, c: &ServerConfig) -> Result<()> {
    let json = serde_json::to_vec(c).map_err(|e| NetError::Invalid(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| NetError::Io {
            what: "writing",
            path: path.display().to_string(),
            source,
        })
}

fn read_config(path: &Path) -> Option<ServerConfig> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// A parsed question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub id: u16,
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// Where the question section ends (answers are built after it).
    pub end: usize,
    pub rd: bool,
}

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;

/// Parse a query's header and first question (names in queries are not
/// compressed).
pub fn parse_query(m: &[u8]) -> Option<Question> {
    if m.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([m[0], m[1]]);
    let flags = u16::from_be_bytes([m[2], m[3]]);
    if flags & 0x8000 != 0 {
        return None; // a response
    }
    let qd = u16::from_be_bytes([m[4], m[5]]);
    if qd != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = *m.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        let l = m.get(i..i + len)?;
        labels.push(String::from_utf8_lossy(l).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*m.get(i + 2)?, *m.get(i + 3)?]);
    Some(Question {
        id,
        name: labels.join("."),
        qtype,
        qclass,
        end: i + 4,
        rd: flags & 0x0100 != 0,
    })
}

/// The answer to `q` (whose raw message is `query`) from `addrs`: every
/// address of the asked type, TTL 600. An empty `addrs` of the type gives
/// an answer with no records (the name exists).
pub fn answer(query: &[u8], q: &Question, addrs: &[IpAddr]) -> Vec<u8> {
    let picked: Vec<&IpAddr> = addrs
        .iter()
        .filter(|a| match q.qtype {
            TYPE_A => a.is_ipv4(),
            TYPE_AAAA => a.is_ipv6(),
            _ => false,
        })
        .collect();
    let mut out = Vec::with_capacity(q.end + picked.len() * 28);
    out.extend_from_slice(&q.id.to_be_bytes());
    // QR, AA, RD copied, RA.
    let mut flags: u16 = 0x8000 | 0x0400 | 0x0080;
    if q.rd {
        flags |= 0x0100;
    }
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(picked.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&query[12..q.end]);
    for a in picked {
        out.extend_from_slice(&[0xc0, 12]); // the question's name
        let (t, data): (u16, Vec<u8>) = match a {
            IpAddr::V4(v) => (TYPE_A, v.octets().to_vec()),
            IpAddr::V6(v) => (TYPE_AAAA, v.octets().to_vec()),
        };
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&600u32.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// NXDOMAIN for `q`.
pub fn nxdomain(query: &[u8], q: &Question) -> Vec<u8> {
    let mut out = answer(query, q, &[]);
    out[3] = (out[3] & 0xf0) | 3;
    out
}

/// SERVFAIL for `q`.
pub fn servfail(query: &[u8], q: &Question) -> Vec<u8> {
    let mut out = answer(query, q, &[]);
    out[3] = (out[3] & 0xf0) | 2;
    out
}

fn forward(query: &[u8], upstreams: &[String]) -> Option<Vec<u8>> {
    for u in upstreams {
        let Ok(ip) = u.parse::<IpAddr>() else {
            continue;
        };
        let bind: SocketAddr = if ip.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(s) = UdpSocket::bind(bind) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.send_to(query, SocketAddr::new(ip, 53)).is_err() {
            continue;
        }
        let mut buf = [0u8; 4096];
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// Read the configuration again if it changed; false when it is gone.
fn reload(config: &Path, conf: &mut ServerConfig, raw: &mut Vec<u8>) -> bool {
    let Ok(bytes) = std::fs::read(config) else {
        return false;
    };
    if bytes != *raw {
        if let Ok(c) = serde_json::from_slice(&bytes) {
            *conf = c;
        }
        *raw = bytes;
    }
    true
}

/// Run the server of the configuration at `config` until the network has
/// no records left (checked each second) or a signal ends it. `pidfile`
/// is written once it listens and removed when it stops.
/// `lock` is the file berth holds while it changes the records: the
/// server takes it before deciding to exit, so a container that joins
/// meanwhile never finds a server about to go.
pub fn serve(config: &Path, pidfile: &Path, lock: &Path) -> Result<()> {
    let mut conf = read_config(config)
        .ok_or_else(|| NetError::Invalid(format!("cannot read {}", config.display())))?;
    let mut socks = Vec::new();
    for a in &conf.listen {
        // A server of the same network that is just exiting may still hold
        // the port for a moment.
        let mut tries = 0;
        let s = loop {
            match UdpSocket::bind(SocketAddr::new(*a, 53)) {
                Ok(s) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(NetError::Io {
                        what: "listening on",
                        path: format!("{a}:53"),
                        source,
                    })
                }
            }
        };
        s.set_nonblocking(true).map_err(|source| NetError::Io {
            what: "setting up",
            path: format!("{a}:53"),
            source,
        })?;
        socks.push(s);
    }
    std::fs::write(pidfile, std::process::id().to_string()).map_err(|source| NetError::Io {
        what: "writing",
        path: pidfile.display().to_string(),
        source,
    })?;
    let mut raw: Vec<u8> = std::fs::read(config).unwrap_or_default();
    let mut last_check = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            use std::os::fd::AsFd;
            let mut fds: Vec<PollFd> = socks
                .iter()
                .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
                .collect();
            let _ = poll(&mut fds, PollTimeout::from(500u16));
        }
        for s in &socks {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            let query = buf[..n].to_vec();
            let Some(q) = parse_query(&query) else {
                continue;
            };
            // Records as of now (the file is small; read it for every
            // question): a container removed a moment ago is not answered
            // for.
            reload(config, &mut conf, &mut raw);
            if let Some(addrs) = conf.records.get(&q.name) {
                let _ = s.send_to(&answer(&query, &q, addrs), from);
                continue;
            }
            if !q.name.contains('.') {
                // A single label that is no container's: no such name
                // outside either; never sent upstream.
                let _ = s.send_to(&nxdomain(&query, &q), from);
                continue;
            }
            let ups = conf.upstreams.clone();
            let reply = s.try_clone();
            std::thread::spawn(move || {
                let r = forward(&query, &ups).unwrap_or_else(|| servfail(&query, &q));
                if let Ok(s) = reply {
                    let _ = s.send_to(&r, from);
                }
            });
        }
        if last_check.elapsed() >= Duration::from_millis(500) {
            last_check = std::time::Instant::now();
            if !reload(config, &mut conf, &mut raw) {
                break;
            }
            if conf.records.is_empty() {
                let Ok(f) = std::fs::File::options().write(true).open(lock) else {
                    break;
                };
                let Ok(_held) = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
                else {
                    break;
                };
                let _ = reload(config, &mut conf, &mut raw);
                if conf.records.is_empty() {
                    let _ = std::fs::remove_file(pidfile);
                    return Ok(());
                }
            }
        }
    }
    let _ = std::fs::remove_file(pidfile);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    #[test]
    fn parses_a_question() {
        let m = query("Web.Example", TYPE_A);
        let q = parse_query(&m).unwrap();
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.name, "web.example");
        assert_eq!(q.qtype, TYPE_A);
        assert!(q.rd);
        assert_eq!(q.end, m.len());
        assert!(parse_query(&m[..10]).is_none());
    }

    #[test]
    fn answers_a_and_aaaa() {
        let addrs: Vec<IpAddr> = vec!["10.80.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let m = query("web", TYPE_A);
        let q = parse_query(&m).unwrap();
        let a = answer(&m, &q, &addrs);
        assert_eq!(&a[0..2], &[0x12, 0x34]);
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1);
        assert_eq!(&a[a.len() - 4..], &[10, 80, 0, 2]);
        let m = query("web", TYPE_AAAA);
        let q = parse_query(&m).unwrap();
        let a = answer(&m, &q, &addrs);
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1);
        assert_eq!(a[a.len() - 1], 2);
        assert_eq!(a.len(), m.len() + 12 + 16);
        let f = servfail(&m, &q);
        assert_eq!(f[3] & 0x0f, 2);
        assert_eq!(nxdomain(&m, &q)[3] & 0x0f, 3);
    }

    #[test]
    fn records_are_case_insensitive() {
        let mut r = Records::default();
        r.add("Web.", &["10.0.0.2".parse().unwrap()]);
        r.add("web", &["10.0.0.2".parse().unwrap()]);
        assert_eq!(r.get("WEB").unwrap().len(), 1);
        assert!(r.get("api").is_none());
    }
}
