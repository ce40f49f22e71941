//! The embedded DNS server of a user-defined network: one small process per
//! network, started on demand by the first container that joins it,
//! listening on the network's gateway addresses (port 53, UDP and TCP). It answers
//! A and AAAA questions for the names in its configuration file (container
//! names, short IDs, aliases), which berth rewrites whenever a container
//! comes or goes, and forwards every other question unchanged to the host's
//! resolvers, except single-label names, which no resolver outside could
//! answer and which are not leaked: NXDOMAIN. Questions that come over
//! TCP (a resolver retrying a truncated answer, or `use-vc`) are forwarded
//! over TCP, so large answers arrive whole. It exits by itself once the
//! network has no running container.
//!
//! The message handling is the small part of DNS this needs (a question
//! in, answers out), written here and unit-tested; forwarded messages are
//! relayed as bytes.

use crate::{NetError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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

/// What a question gets: an answer from the records, or the upstreams'.
enum Reply {
    Now(Vec<u8>),
    Forward(Question),
}

/// The reply to `query` by `conf`; None for what is not a question.
fn reply_to(conf: &ServerConfig, query: &[u8]) -> Option<Reply> {
    let q = parse_query(query)?;
    if let Some(addrs) = conf.records.get(&q.name) {
        return Some(Reply::Now(answer(query, &q, addrs)));
    }
    if !q.name.contains('.') {
        // A single label that is no container's: no such name outside
        // either; never sent upstream.
        return Some(Reply::Now(nxdomain(query, &q)));
    }
    Some(Reply::Forward(q))
}

/// Ask the upstreams in turn, over UDP or TCP; SERVFAIL when none answers.
fn forward(query: &[u8], q: &Question, upstreams: &[String], tcp: bool) -> Vec<u8> {
    for u in upstreams {
        let Ok(ip) = u.parse::<IpAddr>() else {
            continue;
        };
        let got = if tcp {
            forward_tcp(query, SocketAddr::new(ip, 53))
        } else {
            forward_udp(query, SocketAddr::new(ip, 53))
        };
        if let Some(r) = got {
            return r;
        }
    }
    servfail(query, q)
}

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

fn forward_udp(query: &[u8], to: SocketAddr) -> Option<Vec<u8>> {
    let bind: SocketAddr = if to.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    s.send_to(query, to).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

fn forward_tcp(query: &[u8], to: SocketAddr) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&to, UPSTREAM_TIMEOUT).ok()?;
    s.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    write_framed(&mut s, query).ok()?;
    read_framed(&mut s).ok()
}

/// One DNS message over TCP: a two-byte length, then the message.
fn read_framed(s: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut m)?;
    Ok(m)
}

fn write_framed(s: &mut impl Write, m: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(m.len())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
    let mut out = Vec::with_capacity(m.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(m);
    s.write_all(&out)
}

/// How long a TCP client may stay idle between questions.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// How many TCP connections are served at once (a thread each).
const TCP_MAX: usize = 64;

/// Serve one TCP connection: questions one after another (pipelined or
/// not), each answered in order, until the client closes it, sends
/// something that is not a question, or stays idle for [`TCP_IDLE`]. The
/// records are read at each question.
fn serve_stream(s: &mut (impl Read + Write), config: &Path) {
    while let Ok(query) = read_framed(s) {
        let conf = read_config(config).unwrap_or_default();
        let r = match reply_to(&conf, &query) {
            Some(Reply::Now(r)) => r,
            Some(Reply::Forward(q)) => forward(&query, &q, &conf.upstreams, true),
            None => return,
        };
        if write_framed(s, &r).is_err() {
            return;
        }
    }
}

/// Bind `a`:53 with `bind`, waiting a moment when a server of the same
/// network that is just exiting still holds it.
fn bind_53<T>(a: IpAddr, bind: impl Fn(SocketAddr) -> std::io::Result<T>) -> Result<T> {
    let mut tries = 0;
    loop {
        match bind(SocketAddr::new(a, 53)) {
            Ok(s) => return Ok(s),
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
    }
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
    let mut listeners = Vec::new();
    for a in &conf.listen {
        let udp = bind_53(*a, UdpSocket::bind)?;
        let tcp = bind_53(*a, TcpListener::bind)?;
        for r in [udp.set_nonblocking(true), tcp.set_nonblocking(true)] {
            r.map_err(|source| NetError::Io {
                what: "setting up",
                path: format!("{a}:53"),
                source,
            })?;
        }
        socks.push(udp);
        listeners.push(tcp);
    }
    std::fs::write(pidfile, std::process::id().to_string()).map_err(|source| NetError::Io {
        what: "writing",
        path: pidfile.display().to_string(),
        source,
    })?;
    let mut raw: Vec<u8> = std::fs::read(config).unwrap_or_default();
    let mut last_check = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    let open_tcp = Arc::new(AtomicUsize::new(0));
    loop {
        {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            use std::os::fd::AsFd;
            let mut fds: Vec<PollFd> = socks
                .iter()
                .map(|s| s.as_fd())
                .chain(listeners.iter().map(|l| l.as_fd()))
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            let _ = poll(&mut fds, PollTimeout::from(500u16));
        }
        for l in &listeners {
            while let Ok((mut stream, _)) = l.accept() {
                // Past the limit a connection is closed at once: the
                // client retries or falls back to UDP.
                if open_tcp.load(Ordering::Relaxed) >= TCP_MAX {
                    continue;
                }
                open_tcp.fetch_add(1, Ordering::Relaxed);
                let open = open_tcp.clone();
                let config = config.to_path_buf();
                std::thread::spawn(move || {
                    if stream.set_nonblocking(false).is_ok()
                        && stream.set_read_timeout(Some(TCP_IDLE)).is_ok()
                        && stream.set_write_timeout(Some(TCP_IDLE)).is_ok()
                    {
                        serve_stream(&mut stream, &config);
                    }
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
        for s in &socks {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            let query = buf[..n].to_vec();
            // Records as of now (the file is small; read it for every
            // question): a container removed a moment ago is not answered
            // for.
            reload(config, &mut conf, &mut raw);
            match reply_to(&conf, &query) {
                Some(Reply::Now(r)) => {
                    let _ = s.send_to(&r, from);
                }
                Some(Reply::Forward(q)) => {
                    let ups = conf.upstreams.clone();
                    let reply = s.try_clone();
                    std::thread::spawn(move || {
                        let r = forward(&query, &q, &ups, false);
                        if let Ok(s) = reply {
                            let _ = s.send_to(&r, from);
                        }
                    });
                }
                None => {}
            }
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
    fn tcp_questions_are_answered_in_order_and_forwarded_over_tcp() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("dns.json");
        let mut records = Records::default();
        records.add("web", &["10.80.0.2".parse().unwrap()]);
        let conf = ServerConfig {
            listen: vec![],
            upstreams: vec![],
            records,
        };
        write_config(&config, &conf).unwrap();
        let (mut client, mut server) = std::os::unix::net::UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve_stream(&mut server, &config));
        // Two questions sent before any answer is read.
        let mut both = Vec::new();
        for m in [query("web", TYPE_A), query("nosuch", TYPE_A)] {
            write_framed(&mut both, &m).unwrap();
        }
        client.write_all(&both).unwrap();
        let a = read_framed(&mut client).unwrap();
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1);
        assert_eq!(&a[a.len() - 4..], &[10, 80, 0, 2]);
        let nx = read_framed(&mut client).unwrap();
        assert_eq!(nx[3] & 0x0f, 3);
        // A name for the upstreams, which there are none of: SERVFAIL.
        write_framed(&mut client, &query("example.org", TYPE_A)).unwrap();
        assert_eq!(read_framed(&mut client).unwrap()[3] & 0x0f, 2);
        // Something that is not a question ends the connection.
        write_framed(&mut client, &[0u8; 3]).unwrap();
        t.join().unwrap();
        assert!(read_framed(&mut client).is_err());
        // Forwarding over TCP relays the upstream's answer whole, however
        // large.
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = upstream.local_addr().unwrap();
        let big: Vec<u8> = (0..3000).map(|i| i as u8).collect();
        let sent = big.clone();
        let up = std::thread::spawn(move || {
            let (mut c, _) = upstream.accept().unwrap();
            let q = read_framed(&mut c).unwrap();
            assert_eq!(parse_query(&q).unwrap().name, "example.org");
            write_framed(&mut c, &sent).unwrap();
        });
        let got = forward_tcp(&query("example.org", TYPE_A), addr).unwrap();
        up.join().unwrap();
        assert_eq!(got, big);
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
