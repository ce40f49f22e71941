//! Networking through the `berth` binary: the default bridge, published
//! ports, user-defined networks with DNS by name and alias, isolation,
//! IPv6, `container:` mode, the `network` commands, and teardown on every
//! path out (rm, a crash, network rm, prune).
//!
//! Every packet stays on this machine: tests talk to loopback, to the
//! host's own address, to containers of their own, and (for masquerade) to
//! an "outside" host played by a network namespace the test makes itself.
//! Each test has its own store (so its own bridge and nftables table),
//! unique names, and checks that no veth, rule or lease is left.

mod common;

use common::{need_root, text, Store};
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const WEB: &str =
    "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www";

fn store() -> Store {
    Store::new().with_busybox()
}

/// An HTTP GET from the test process; the body's last line.
fn http_get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines().last().map(|l| l.to_string())
}

/// The same from inside a container (busybox nc), on `network`.
fn http_from_container(s: &Store, network: &str, target: &str, port: u16) -> String {
    let script =
        format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {target} {port} | tail -n 1");
    let o = s.run(&[
        "run",
        "--rm",
        "--network",
        network,
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    text(&o.stdout).trim().to_string()
}

fn wait_http(addr: &str) -> Option<String> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if let Some(b) = http_get(addr) {
            return Some(b);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Host links whose name starts with `prefix`.
/// Questions of type A, asked over one TCP connection to `server`;
/// each reply's RCODE and raw bytes.
fn dns_over_tcp(server: IpAddr, names: &[&str]) -> Vec<(u8, Vec<u8>)> {
    let mut c = TcpStream::connect_timeout(&(server, 53).into(), Duration::from_secs(3))
        .expect("the DNS server takes TCP");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for (i, name) in names.iter().enumerate() {
        let mut m = vec![0, i as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        c.write_all(&(m.len() as u16).to_be_bytes()).unwrap();
        c.write_all(&m).unwrap();
    }
    names
        .iter()
        .map(|_| {
            let mut len = [0u8; 2];
            c.read_exact(&mut len).unwrap();
            let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
            c.read_exact(&mut r).unwrap();
            (r[3] & 0x0f, r)
        })
        .collect()
}

fn ip_octets(ip: &str) -> Vec<u8> {
    match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn links(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// The host-side veth names of a container (`vb` + 11 hex digits + n).
fn veths_of(id: &str) -> Vec<String> {
    links(&format!("vb{}", &id[..11]))
}

/// Whether the container's veths are gone, waiting a little: after `rm`
/// the kernel removes them as it destroys the namespace, in the background.
fn veths_gone(id: &str) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if veths_of(id).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn ruleset() -> String {
    text(
        &Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .expect("nft")
            .stdout,
    )
}

fn inspect(s: &Store, fmt: &str, name: &str) -> String {
    s.ok(&["inspect", "-f", fmt, name]).trim().to_string()
}

/// A host address that is not loopback (the machine's own).
fn host_address() -> IpAddr {
    let o = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    for l in text(&o.stdout).lines() {
        let mut w = l.split_whitespace();
        while let Some(x) = w.next() {
            if x == "inet" {
                let a = w.next().unwrap().split('/').next().unwrap();
                let ip: IpAddr = a.parse().unwrap();
                if !a.starts_with("10.8") {
                    return ip;
                }
            }
        }
    }
    panic!("this test needs a host address other than loopback");
}

/// A global IPv6 address of the host (the machine's own).
fn host_address6() -> IpAddr {
    let o = Command::new("ip")
        .args(["-6", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    for l in text(&o.stdout).lines() {
        let mut w = l.split_whitespace();
        while let Some(x) = w.next() {
            if x == "inet6" {
                let a = w.next().unwrap().split('/').next().unwrap();
                if !a.starts_with("fd62:") {
                    return a.parse().unwrap();
                }
            }
        }
    }
    panic!("this test needs a global IPv6 address on the host");
}

/// The bridge device of network `net`.
fn bridge_of(s: &Store, net: &str) -> String {
    let f = "{{index .Options \"com.docker.network.bridge.name\"}}";
    s.ok(&["network", "inspect", "-f", f, net])
        .trim()
        .to_string()
}

/// Wait (10 s at most) until the host-side veths `veths` carry the fast
/// path's program; whether they do.
fn on_fast_path(veths: &[&str]) -> bool {
    let on = |v: &&str| berth_net::fastpath::on_veth(ifindex(v)).unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) && !veths.iter().all(on) {
        std::thread::sleep(Duration::from_millis(50));
    }
    veths.iter().all(on)
}

fn unique(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100000)
}

#[test]
fn two_containers_talk_by_name_and_alias_and_networks_are_isolated() {
    if !need_root() {
        return;
    }
    let s = store();
    let net = unique("app");
    let other = unique("oth");
    s.ok(&["network", "create", &net]);
    s.ok(&["network", "create", &other]);
    let web = s
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            &net,
            "--network-alias",
            "backend",
            "busybox",
            "sh",
            "-c",
            WEB,
        ])
        .trim()
        .to_string();
    let ip = inspect(
        &s,
        &format!("{{{{.NetworkSettings.Networks.{net}.IPAddress}}}}"),
        "web",
    );
    assert!(!ip.is_empty());
    assert_eq!(veths_of(&web).len(), 1);
    // By name and by alias, through the embedded DNS server.
    let t0 = Instant::now();
    let mut body = String::new();
    while t0.elapsed() < Duration::from_secs(5) && body != "hello-from-web" {
        body = http_from_container(&s, &net, "web", 80);
    }
    assert_eq!(body, "hello-from-web");
    assert_eq!(
        http_from_container(&s, &net, "backend", 80),
        "hello-from-web"
    );
    let o = s.ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(o.starts_with("nameserver 10."), "{o}");
    // The same server over TCP (what a resolver falls back to for a
    // truncated answer): two questions on one connection.
    let dns: IpAddr = o
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("the nameserver's address");
    let answers = dns_over_tcp(dns, &["backend", "nosuch"]);
    assert_eq!(answers[0].0, 0, "backend resolves");
    assert!(answers[0].1.ends_with(&ip_octets(&ip)), "{answers:?}");
    assert_eq!(answers[1].0, 3, "NXDOMAIN for an unknown single label");
    // Another network neither resolves nor reaches it.
    let o = s.run(&[
        "run",
        "--rm",
        "--network",
        &other,
        "busybox",
        "nslookup",
        "web",
    ]);
    assert!(!text(&o.stdout).contains(&ip), "{}", text(&o.stdout));
    assert_eq!(http_from_container(&s, &other, &ip, 80), "");
    // The default bridge has no DNS by name (as with Docker), and is
    // isolated too.
    assert_eq!(http_from_container(&s, "bridge", &ip, 80), "");
    // Gone after rm: veth, lease, DNS record.
    s.ok(&["rm", "-f", "web"]);
    assert!(veths_gone(&web));
    let n = s.ok(&["network", "inspect", "-f", "{{len .Containers}}", &net]);
    assert_eq!(n.trim(), "0");
    let o = s.run(&[
        "run",
        "--rm",
        "--network",
        &net,
        "busybox",
        "nslookup",
        "web",
    ]);
    assert!(!text(&o.stdout).contains(&ip));
    let bridge = bridge_of(&s, &net);
    s.ok(&["network", "rm", &net, &other]);
    assert!(
        links(bridge.trim()).is_empty(),
        "the bridge goes with its network"
    );
}

#[test]
fn a_published_port_answers_on_loopback_the_host_address_and_to_containers() {
    if !need_root() {
        return;
    }
    let s = store();
    let id = s
        .ok(&[
            "run",
            "-d",
            "-p",
            "127.0.0.1::80",
            "-p",
            "80",
            "-p",
            "5353:53/udp",
            "busybox",
            "sh",
            "-c",
            WEB,
        ])
        .trim()
        .to_string();
    let ports = s.ok(&["port", &id]);
    let mut lo_port = 0;
    let mut any_port = 0;
    for l in ports.lines() {
        let hp: u16 = l.rsplit(':').next().unwrap().parse().unwrap();
        if l.contains("127.0.0.1") {
            lo_port = hp;
        } else if l.starts_with("80/tcp -> 0.0.0.0:") {
            any_port = hp;
        }
    }
    assert!(ports.contains("53/udp -> 0.0.0.0:5353"), "{ports}");
    assert!(lo_port >= 32768 && any_port >= 32768, "{ports}");
    assert_eq!(s.ok(&["port", &id, "53/udp"]).trim(), "0.0.0.0:5353");
    assert!(s
        .ok(&["ps"])
        .contains(&format!("0.0.0.0:{any_port}->80/tcp")));
    let j = s.ok(&["inspect", "-f", "{{json .NetworkSettings.Ports}}", &id]);
    assert!(j.contains(&format!("\"HostPort\":\"{any_port}\"")), "{j}");
    // From the host: loopback and its own address.
    assert_eq!(
        wait_http(&format!("127.0.0.1:{lo_port}")).as_deref(),
        Some("hello-from-web")
    );
    assert_eq!(
        http_get(&format!("127.0.0.1:{any_port}")).as_deref(),
        Some("hello-from-web")
    );
    let host = host_address();
    assert_eq!(
        http_get(&format!("{host}:{any_port}")).as_deref(),
        Some("hello-from-web")
    );
    // A port bound to 127.0.0.1 does not answer on the host's address.
    assert_eq!(http_get(&format!("{host}:{lo_port}")), None);
    // The published ports are held on the host: no program there, and no
    // other store, can take them while the container runs.
    assert!(std::net::TcpListener::bind(("0.0.0.0", any_port)).is_err());
    assert!(std::net::TcpListener::bind(("127.0.0.1", lo_port)).is_err());
    assert!(std::net::UdpSocket::bind(("0.0.0.0", 5353)).is_err());
    let other = store();
    let o = other.run(&[
        "run",
        "-d",
        "-p",
        &format!("{any_port}:80"),
        "busybox",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(&format!(
            "Bind for 0.0.0.0:{any_port} failed: address already in use"
        )),
        "{}",
        text(&o.stderr)
    );
    // Another container on the default bridge, by address, and (hairpin)
    // through the host's address.
    let ip = inspect(&s, "{{.NetworkSettings.IPAddress}}", &id);
    assert_eq!(http_from_container(&s, "bridge", &ip, 80), "hello-from-web");
    assert_eq!(
        http_from_container(&s, "bridge", &host.to_string(), any_port),
        "hello-from-web"
    );
    // The same port again is refused, and nothing is left of the attempt.
    let o = s.run(&[
        "run",
        "-d",
        "--name",
        "dup",
        "-p",
        "5353:53/udp",
        "busybox",
        "sleep",
        "30",
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("5353"), "{}", text(&o.stderr));
    let dup = inspect(&s, "{{.Id}}", "dup");
    assert!(veths_of(&dup).is_empty());
    assert_eq!(inspect(&s, "{{.NetworkSettings.IPAddress}}", "dup"), "");
    // Freed by rm: no rule, no lease, the port free again.
    s.ok(&["rm", "-f", &id, "dup"]);
    let rules = ruleset();
    assert!(!rules.contains(&format!("dport {any_port} ")), "{rules}");
    assert!(!rules.contains(&format!("to {ip}:")), "{rules}");
    assert_eq!(http_get(&format!("127.0.0.1:{any_port}")), None);
    assert!(veths_gone(&id));
    drop(std::net::TcpListener::bind(("0.0.0.0", any_port)).expect("the port is free again"));
    // A foreground --rm container gives its port back before `run` returns.
    for _ in 0..2 {
        other.ok(&[
            "run",
            "--rm",
            "-p",
            &format!("{any_port}:80"),
            "busybox",
            "true",
        ]);
        drop(std::net::TcpListener::bind(("0.0.0.0", any_port)).expect("given back"));
    }
    // -P: every EXPOSEd port of the image on a random host port.
    let tarball = common::busybox_tarball();
    s.ok(&[
        "import",
        "-c",
        "EXPOSE 80/tcp 8443/tcp",
        tarball.to_str().unwrap(),
        "exposed:1",
    ]);
    let pub_all = s.ok(&["run", "-d", "-P", "exposed:1", "sh", "-c", WEB]);
    let ports = s.ok(&["port", pub_all.trim()]);
    assert!(
        ports.contains("80/tcp -> 0.0.0.0:") && ports.contains("8443/tcp -> 0.0.0.0:"),
        "{ports}"
    );
    let p80 = s.ok(&["port", pub_all.trim(), "80"]);
    let p80 = p80.trim().rsplit(':').next().unwrap();
    assert_eq!(
        wait_http(&format!("127.0.0.1:{p80}")).as_deref(),
        Some("hello-from-web")
    );
    s.ok(&["rm", "-f", pub_all.trim()]);
    let again = s.ok(&["run", "-d", "-p", "5353:53/udp", "busybox", "sleep", "30"]);
    assert_eq!(
        inspect(&s, "{{.NetworkSettings.IPAddress}}", again.trim()),
        ip,
        "the lease was freed"
    );
}

#[test]
fn invalid_input_is_refused_and_leaves_nothing() {
    if !need_root() {
        return;
    }
    let s = store();
    for bad in ["0", "70000", "1-0", "80:0", "x"] {
        let o = s.run(&["run", "--rm", "-p", bad, "busybox", "true"]);
        assert_eq!(o.status.code(), Some(125), "-p {bad}");
        assert!(
            text(&o.stderr).contains("invalid"),
            "-p {bad}: {}",
            text(&o.stderr)
        );
    }
    let o = s.run(&["run", "--rm", "--network", "nosuchnet", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("network nosuchnet not found"),
        "{}",
        text(&o.stderr)
    );
    let a = unique("ov");
    s.ok(&["network", "create", "--subnet", "10.83.250.0/24", &a]);
    let o = s.run(&[
        "network",
        "create",
        "--subnet",
        "10.83.250.128/25",
        &format!("{a}b"),
    ]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("overlaps"), "{}", text(&o.stderr));
    let o = s.run(&["network", "create", &a]);
    assert!(text(&o.stderr).contains("already exists"));
    let o = s.run(&[
        "network",
        "create",
        "--subnet",
        "10.83.251.0/24",
        "--gateway",
        "10.9.9.9",
        &format!("{a}c"),
    ]);
    assert!(!o.status.success());
    // --ip outside the subnet, and a taken one.
    let o = s.run(&[
        "run",
        "--rm",
        "--network",
        &a,
        "--ip",
        "10.1.2.3",
        "busybox",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    s.ok(&[
        "run",
        "-d",
        "--name",
        "fixed",
        "--network",
        &a,
        "--ip",
        "10.83.250.77",
        "busybox",
        "sleep",
        "30",
    ]);
    assert_eq!(
        inspect(&s, "{{.NetworkSettings.IPAddress}}", "fixed"),
        "10.83.250.77"
    );
    let o = s.run(&[
        "run",
        "--rm",
        "--network",
        &a,
        "--ip",
        "10.83.250.77",
        "busybox",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("in use"), "{}", text(&o.stderr));
    // A network in use is not removed.
    let o = s.run(&["network", "rm", &a]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("active endpoints"),
        "{}",
        text(&o.stderr)
    );
    // A host port some host process listens on.
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let o = s.run(&[
        "run",
        "-d",
        "-p",
        &format!("{port}:80"),
        "busybox",
        "sleep",
        "30",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("already in use"),
        "{}",
        text(&o.stderr)
    );
    // A stopped container does not keep its network (as with Docker):
    // the network goes, the container then fails to start until a
    // network of that name exists again.
    s.ok(&["stop", "-t", "0", "fixed"]);
    s.ok(&["network", "rm", &a]);
    let o = s.run(&["start", "fixed"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains(&format!("network {a} not found")),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(inspect(&s, "{{.State.Status}}", "fixed"), "exited");
    s.ok(&["network", "create", "--subnet", "10.83.250.0/24", &a]);
    s.ok(&["start", "fixed"]);
    assert_eq!(
        inspect(&s, "{{.NetworkSettings.IPAddress}}", "fixed"),
        "10.83.250.77",
        "the container's --ip again"
    );
    s.ok(&["rm", "-f", "fixed"]);
    s.ok(&["network", "rm", &a]);
    let o = s.run(&["network", "rm", &a]);
    assert!(!o.status.success());
    s.ok(&["network", "rm", "-f", &a]);
    let o = s.run(&["network", "rm", "bridge"]);
    assert!(!o.status.success());
}

#[test]
fn ipv6_between_containers() {
    if !need_root() {
        return;
    }
    let s = store();
    let net = unique("six");
    s.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "fd62:6572:7400:99::/64",
        &net,
    ]);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "w6",
        "--network",
        &net,
        "-p",
        "80",
        "busybox",
        "sh",
        "-c",
        WEB,
    ]);
    let ip6 = inspect(&s, "{{.NetworkSettings.GlobalIPv6Address}}", "w6");
    assert!(ip6.starts_with("fd62:6572:7400:99::"), "{ip6}");
    let t0 = Instant::now();
    let mut body = String::new();
    while t0.elapsed() < Duration::from_secs(5) && body != "hello-from-web" {
        body = http_from_container(&s, &net, &ip6, 80);
    }
    assert_eq!(body, "hello-from-web");
    let o = s.ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        "busybox",
        "nslookup",
        "-type=aaaa",
        "w6",
    ]);
    assert!(o.contains(&ip6), "{o}");
    // Its published port answers on the host's IPv6 address too.
    let port = s.ok(&["port", "w6", "80"]);
    let port = port.trim().rsplit(':').next().unwrap().to_string();
    let host6 = host_address6();
    assert_eq!(
        wait_http(&format!("[{host6}]:{port}")).as_deref(),
        Some("hello-from-web")
    );
    // The port is held on IPv6 too while the container runs: even an
    // IPv6-only socket (which the IPv4 one would not stop) cannot take it.
    let port: u16 = port.parse().unwrap();
    assert_eq!(bind_v6_only(port), Err(nix::errno::Errno::EADDRINUSE));
    s.ok(&["rm", "-f", "w6"]);
    assert_eq!(bind_v6_only(port), Ok(()), "free again");
    s.ok(&["network", "rm", &net]);
}

/// Bind an IPv6-only TCP socket to [::]:port (and close it).
fn bind_v6_only(port: u16) -> nix::Result<()> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn6,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    let addr = std::net::SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, port, 0, 0);
    bind(fd.as_raw_fd(), &SockaddrIn6::from(addr))
}

/// An "outside" host: a network namespace of the test's own, reached from
/// the host through a veth pair on a /30.
struct Outside {
    name: String,
    host_if: String,
}

impl Outside {
    fn new(third: u8) -> Outside {
        let name = unique("berthout");
        let host_if = format!("bto{}", std::process::id() % 100000);
        let sh = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().unwrap();
            assert!(o.status.success(), "ip {args:?}: {}", text(&o.stderr));
        };
        sh(&["netns", "add", &name]);
        let o = Outside {
            name: name.clone(),
            host_if: host_if.clone(),
        };
        sh(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth9", "netns", &name,
        ]);
        sh(&[
            "addr",
            "add",
            &format!("10.83.{third}.1/30"),
            "dev",
            &host_if,
        ]);
        sh(&["link", "set", &host_if, "up"]);
        sh(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("10.83.{third}.2/30"),
            "dev",
            "eth9",
        ]);
        sh(&["-n", &name, "link", "set", "eth9", "up"]);
        sh(&["-n", &name, "link", "set", "lo", "up"]);
        o
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[test]
fn outbound_traffic_is_masqueraded_to_the_host_address() {
    if !need_root() {
        return;
    }
    let s = store();
    let third = 200 + (std::process::id() % 50) as u8;
    let out = Outside::new(third);
    // A listener inside the outside namespace, on a thread of this test.
    let ns = std::fs::File::open(format!("/run/netns/{}", out.name)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = std::net::TcpListener::bind(format!("10.83.{third}.2:9000")).unwrap();
        tx.send(()).unwrap();
        l.set_nonblocking(false).unwrap();
        let (mut c, peer) = l.accept().unwrap();
        let _ = c.write_all(b"hi\n");
        peer.ip()
    });
    rx.recv().unwrap();
    let o = s.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        &format!("echo x | nc -w 3 10.83.{third}.2 9000"),
    ]);
    assert_eq!(o.trim(), "hi");
    let peer = t.join().unwrap();
    assert_eq!(
        peer.to_string(),
        format!("10.83.{third}.1"),
        "the container's address is masqueraded"
    );
}

#[test]
fn rules_flushed_by_an_admin_come_back_and_a_crash_releases_everything() {
    if !need_root() {
        return;
    }
    let s = store();
    let id = s
        .ok(&["run", "-d", "-p", "80", "busybox", "sh", "-c", WEB])
        .trim()
        .to_string();
    let port: u16 = s
        .ok(&["port", &id, "80"])
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        wait_http(&format!("127.0.0.1:{port}")).as_deref(),
        Some("hello-from-web")
    );
    // An admin deletes berth's table: the next container start restores it.
    let tables = text(
        &Command::new("nft")
            .args(["list", "tables", "inet"])
            .output()
            .unwrap()
            .stdout,
    );
    let table = tables
        .lines()
        .map(|l| l.trim_start_matches("table inet ").to_string())
        .find(|t| {
            text(
                &Command::new("nft")
                    .args(["list", "table", "inet", t])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .contains(&format!("dport {port} dnat"))
        })
        .expect("berth's table");
    assert!(Command::new("nft")
        .args(["delete", "table", "inet", &table])
        .status()
        .unwrap()
        .success());
    // (Through the host's address: its own loopback is served at the
    // socket, without the table; see `loopback`.)
    let host = host_address();
    assert_eq!(http_get(&format!("{host}:{port}")), None);
    s.ok(&["run", "--rm", "busybox", "true"]);
    assert_eq!(
        wait_http(&format!("{host}:{port}")).as_deref(),
        Some("hello-from-web")
    );
    // The container crashes (its init killed from outside): the monitor
    // releases its network.
    let pid: i32 = inspect(&s, "{{.State.Pid}}", &id).parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    s.ok(&["wait", &id]);
    let t0 = Instant::now();
    // The monitor undoes the network right after it records the exit.
    while t0.elapsed() < Duration::from_secs(5)
        && (!veths_of(&id).is_empty() || !s.ok(&["port", &id]).is_empty())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(veths_of(&id).is_empty());
    assert_eq!(s.ok(&["port", &id]), "");
    assert!(!ruleset().contains(&format!("dport {port} dnat")));
    // Started again: a network again.
    s.ok(&["start", &id]);
    assert_eq!(veths_of(&id).len(), 1);
    s.ok(&["rm", "-f", &id]);
    assert!(veths_gone(&id));
}

#[test]
fn network_commands_connect_disconnect_and_several_networks() {
    if !need_root() {
        return;
    }
    let s = store();
    let a = unique("na");
    let b = unique("nb");
    let id_a = s.ok(&[
        "network",
        "create",
        "--subnet",
        "10.83.240.0/24",
        "--ip-range",
        "10.83.240.128/25",
        "--label",
        "k=v",
        &a,
    ]);
    s.ok(&["network", "create", &b]);
    let ls = s.ok(&["network", "ls"]);
    assert!(ls.starts_with("NETWORK ID     NAME"), "{ls}");
    assert!(
        ls.contains(&a) && ls.contains(&b) && ls.contains("bridge"),
        "{ls}"
    );
    assert!(
        s.ok(&["network", "ls", "-q", "--filter", &format!("name={a}")])
            .trim()
            == &id_a.trim()[..12]
    );
    let j: serde_json::Value = serde_json::from_str(&s.ok(&["network", "inspect", &a])).unwrap();
    assert_eq!(j[0]["IPAM"]["Config"][0]["Subnet"], "10.83.240.0/24");
    assert_eq!(j[0]["IPAM"]["Config"][0]["IPRange"], "10.83.240.128/25");
    assert_eq!(j[0]["Labels"]["k"], "v");
    s.ok(&[
        "run",
        "-d",
        "--name",
        "multi",
        "--network",
        &a,
        "--hostname",
        "mhost",
        "--add-host",
        "db.local:10.1.1.1",
        "--dns-search",
        "example.test",
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(
        inspect(
            &s,
            &format!("{{{{.NetworkSettings.Networks.{a}.IPAddress}}}}"),
            "multi"
        ),
        "10.83.240.128"
    );
    s.ok(&["network", "connect", "--alias", "second", &b, "multi"]);
    let addrs = s.ok(&["exec", "multi", "ip", "-4", "-o", "addr"]);
    assert!(addrs.contains("eth0") && addrs.contains("eth1"), "{addrs}");
    let hosts = s.ok(&["exec", "multi", "cat", "/etc/hosts"]);
    assert!(hosts.contains("10.1.1.1\tdb.local"), "{hosts}");
    assert!(hosts.contains("mhost"), "{hosts}");
    let resolv = s.ok(&["exec", "multi", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("search example.test"), "{resolv}");
    // Reached by its alias on the second network.
    let o = s.ok(&[
        "run",
        "--rm",
        "--network",
        &b,
        "busybox",
        "nslookup",
        "second",
    ]);
    assert!(o.contains("Address: 10."), "{o}");
    s.ok(&["network", "disconnect", &b, "multi"]);
    let addrs = s.ok(&["exec", "multi", "ip", "-4", "-o", "addr"]);
    assert!(!addrs.contains("eth1"), "{addrs}");
    // container: mode shares the namespace.
    let o = s.ok(&[
        "run",
        "--rm",
        "--network",
        "container:multi",
        "busybox",
        "ip",
        "-4",
        "-o",
        "addr",
    ]);
    assert!(o.contains("10.83.240.128"), "{o}");
    assert_eq!(inspect(&s, "{{.HostConfig.NetworkMode}}", "multi"), a);
    s.ok(&["rm", "-f", "multi"]);
    let pruned = s.ok(&["network", "prune", "-f"]);
    assert!(pruned.contains(&a) && pruned.contains(&b), "{pruned}");
    assert!(!s.ok(&["network", "ls"]).contains(&a));
}

#[test]
fn parallel_starts_get_distinct_addresses() {
    if !need_root() {
        return;
    }
    let s = store();
    let n = 16;
    let children: Vec<_> = (0..n)
        .map(|_| {
            s.cmd(&["run", "-d", "busybox", "sleep", "60"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let all = s.ok(&["ps", "-q", "--no-trunc"]);
    let mut ips = std::collections::HashSet::new();
    for id in all.split_whitespace() {
        let ip = inspect(&s, "{{.NetworkSettings.IPAddress}}", id);
        assert!(ips.insert(ip.clone()), "{ip} given twice");
    }
    assert_eq!(ips.len(), n);
}

#[test]
fn none_and_host_modes_and_dns_flags() {
    if !need_root() {
        return;
    }
    let s = store();
    let none = |cmd: &[&str]| {
        let mut args = vec!["run", "--rm", "--network", "none", "busybox"];
        args.extend_from_slice(cmd);
        s.ok(&args)
    };
    let o = none(&["ip", "-o", "link"]);
    assert!(!o.contains("eth0"), "{o}");
    // Its loopback is up, as with Docker: a server in the container
    // answers on 127.0.0.1; so it is for a container made, then started.
    assert!(o.contains("lo: <LOOPBACK,UP"), "{o}");
    let o = none(&[
        "sh",
        "-c",
        "httpd -p 127.0.0.1:8080 -h /etc && wget -q -O - http://127.0.0.1:8080/passwd | head -1",
    ]);
    assert!(o.starts_with("root:"), "{o}");
    let id = s.ok(&["create", "--network", "none", "busybox", "ip", "-o", "link"]);
    let o = s.ok(&["start", "-a", id.trim()]);
    assert!(o.contains("lo: <LOOPBACK,UP"), "{o}");
    s.ok(&["rm", id.trim()]);
    // inspect lists the mode as the container's network, as Docker does.
    for mode in ["none", "host"] {
        let id = s.ok(&["create", "--network", mode, "busybox", "true"]);
        let nets = s.ok(&[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
            id.trim(),
        ]);
        assert_eq!(nets.trim(), mode);
        s.ok(&["rm", id.trim()]);
    }
    let o = s.ok(&[
        "run",
        "--rm",
        "--dns",
        "192.0.2.53",
        "--dns-option",
        "ndots:2",
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(
        o.contains("nameserver 192.0.2.53") && o.contains("options ndots:2"),
        "{o}"
    );
    let o = s.ok(&[
        "run",
        "--rm",
        "--mac-address",
        "02:42:ac:11:00:99",
        "busybox",
        "cat",
        "/sys/class/net/eth0/address",
    ]);
    assert_eq!(o.trim(), "02:42:ac:11:00:99");
    let host_links = links("");
    let o = s.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "ls",
        "/sys/class/net",
    ]);
    for l in o.split_whitespace().filter(|l| *l == "lo") {
        assert!(host_links.contains(&l.to_string()));
    }
    let o = s.run(&[
        "run",
        "--rm",
        "--network",
        "container:nosuch",
        "busybox",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
}

#[test]
fn system_prune_leaves_nothing_in_the_kernel() {
    if !need_root() {
        return;
    }
    let s = store();
    let net = unique("pr");
    s.ok(&["network", "create", &net]);
    s.ok(&[
        "run", "-d", "--name", "pa", "-p", "80", "busybox", "sleep", "60",
    ]);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "pb",
        "--network",
        &net,
        "busybox",
        "sleep",
        "60",
    ]);
    let (b0, b1) = (bridge_of(&s, "bridge"), bridge_of(&s, &net));
    assert_eq!(links(&b0).len(), 1);
    assert!(ruleset().contains(&b0));
    s.ok(&["stop", "-t", "1", "pa", "pb"]);
    let out = s.ok(&["system", "prune", "-f"]);
    assert!(out.contains(&net), "{out}");
    assert!(links(&b0).is_empty() && links(&b1).is_empty());
    let rules = ruleset();
    assert!(!rules.contains(&b0) && !rules.contains(&b1), "{rules}");
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

#[test]
fn network_and_port_have_help() {
    for args in [
        &["network", "--help"][..],
        &["network", "create", "--help"],
        &["port", "--help"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stdout).contains("Usage"), "{args:?}");
    }
}

#[test]
fn an_internal_network_has_no_way_out() {
    if !need_root() {
        return;
    }
    let s = store();
    let net = unique("int");
    s.ok(&["network", "create", "--internal", &net]);
    let j = s.ok(&["network", "inspect", "-f", "{{.Internal}}", &net]);
    assert_eq!(j.trim(), "true");
    s.ok(&[
        "run",
        "-d",
        "--name",
        "in1",
        "--network",
        &net,
        "busybox",
        "sh",
        "-c",
        WEB,
    ]);
    // No default route, but the network's own containers are reached.
    let routes = s.ok(&["run", "--rm", "--network", &net, "busybox", "ip", "route"]);
    assert!(!routes.contains("default"), "{routes}");
    let t0 = Instant::now();
    let mut body = String::new();
    while t0.elapsed() < Duration::from_secs(5) && body != "hello-from-web" {
        body = http_from_container(&s, &net, "in1", 80);
    }
    assert_eq!(body, "hello-from-web");
    // Nothing of it is masqueraded.
    let subnet = s.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        &net,
    ]);
    assert!(!ruleset().contains(&format!("ip saddr {} oifname", subnet.trim())));
    s.ok(&["rm", "-f", "in1"]);
    s.ok(&["network", "rm", &net]);
}

/// A counter of a link, from sysfs.
fn link_stat(link: &str, what: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{link}/statistics/{what}"))
        .unwrap_or_else(|e| panic!("{link} {what}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

fn ifindex(link: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{link}/ifindex"))
        .unwrap_or_else(|e| panic!("{link}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn traffic_within_a_network_takes_the_fast_path_beside_the_bridge() {
    if !need_root() {
        return;
    }
    fast_path_beside_the_bridge(store(), berth_net::fastpath::supported());
}

/// The same fast path hung on a `clsact` qdisc's `bpf` filters, as on
/// kernels before TCX (Linux 6.6).
#[test]
fn the_fast_path_works_on_clsact_filters_too() {
    if !need_root() {
        return;
    }
    let mut s = store();
    s.env
        .push((berth_net::fastpath::HOOKS_ENV.into(), "clsact".into()));
    fast_path_beside_the_bridge(s, berth_net::fastpath::Hooks::Clsact.in_kernel());
}

/// Two containers on a network reach each other and the host reaches
/// them; when `fast` (the kernel can), all of it beside the bridge.
fn fast_path_beside_the_bridge(s: Store, fast: bool) {
    let clsact = s.env.iter().any(|(_, v)| v == "clsact");
    let net = unique(if clsact { "fastc" } else { "fast" });
    // Subnets are checked against the host's routes: each test its own.
    let subnet = if clsact {
        "fd62:6572:7400:9c::/64"
    } else {
        "fd62:6572:7400:98::/64"
    };
    s.ok(&["network", "create", "--ipv6", "--subnet", subnet, &net]);
    let web = s
        .ok(&[
            "run",
            "-d",
            "--name",
            "fweb",
            "--network",
            &net,
            "busybox",
            "sh",
            "-c",
            WEB,
        ])
        .trim()
        .to_string();
    // A container that only sleeps, named `name`, on `network`; its ID.
    let sleeper = |name: &str, network: &str| {
        s.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "busybox",
            "sleep",
            "600",
        ])
        .trim()
        .to_string()
    };
    let cli = sleeper("fcli", &net);
    let field = |f: &str, c: &str| {
        inspect(
            &s,
            &format!("{{{{.NetworkSettings.Networks.{net}.{f}}}}}"),
            c,
        )
    };
    let (ip, ip6, cli_ip) = (
        field("IPAddress", "fweb"),
        field("GlobalIPv6Address", "fweb"),
        field("IPAddress", "fcli"),
    );
    let bridge = bridge_of(&s, &net);
    let bridge = bridge.as_str();
    let (web_veth, cli_veth) = (veths_of(&web).remove(0), veths_of(&cli).remove(0));
    // Traffic works whatever the kernel.
    let t0 = Instant::now();
    let mut body = String::new();
    while t0.elapsed() < Duration::from_secs(5) && body != "hello-from-web" {
        body = s
            .ok(&[
                "exec",
                "fcli",
                "sh",
                "-c",
                &format!("wget -q -O- http://{ip}/ || true"),
            ])
            .trim()
            .to_string();
    }
    assert_eq!(body, "hello-from-web");
    if !fast {
        eprintln!("this kernel cannot have the fast path: none to check");
        s.ok(&["rm", "-f", "fweb", "fcli"]);
        s.ok(&["network", "rm", &net]);
        return;
    }
    // A second into each container's run, its monitor puts it on the fast
    // path: each address in the bridge's map, pointing at its veth and MAC,
    // and the program on its veth.
    assert!(
        on_fast_path(&[&web_veth, &cli_veth]),
        "not on the fast path"
    );
    // On the hooks asked for: TCX links, or berth's filter on a clsact
    // qdisc (and then no TCX link).
    let mut nl = berth_net::netlink::Netlink::open().unwrap();
    for dev in [web_veth.as_str(), cli_veth.as_str()] {
        let filters = nl.bpf_filters(ifindex(dev), false).unwrap();
        let links = if berth_net::fastpath::Hooks::Tcx.in_kernel() {
            berth_sys::bpf::tcx_query(ifindex(dev), berth_sys::bpf::BPF_TCX_INGRESS).unwrap()
        } else {
            Vec::new()
        };
        assert_eq!(
            (filters.len(), links.len()),
            if clsact { (1, 0) } else { (0, 1) },
            "{dev}: filters, TCX links"
        );
    }
    let br = ifindex(bridge);
    let mac: Vec<u8> = field("MacAddress", "fweb")
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    for a in [&ip, &ip6] {
        let (idx, m) = berth_net::fastpath::entry(br, a.parse().unwrap())
            .expect("map")
            .unwrap_or_else(|| panic!("{a} is not on the fast path"));
        assert_eq!((idx, m.to_vec()), (ifindex(&web_veth), mac.clone()), "{a}");
    }
    // Container to container, IPv4 and IPv6, both ways: nothing is sent
    // out of a bridge port (the bridge would transmit each frame on the
    // other container's veth). Neighbours are resolved first (through the
    // bridge, as ARP and ND always are); multicast (IPv6's router and
    // listener reports) still goes through it, hence a little slack
    // against the 80 frames each veth would send through the bridge.
    for a in [&ip, &ip6] {
        s.ok(&["exec", "fcli", "ping", "-c", "2", "-i", "0.2", a]);
    }
    let before = (
        link_stat(&web_veth, "tx_packets"),
        link_stat(&cli_veth, "tx_packets"),
    );
    for a in [&ip, &ip6] {
        s.ok(&["exec", "fcli", "ping", "-c", "40", "-i", "0.02", a]);
    }
    let after = (
        link_stat(&web_veth, "tx_packets"),
        link_stat(&cli_veth, "tx_packets"),
    );
    assert!(
        after.0 - before.0 <= 16 && after.1 - before.1 <= 16,
        "bridged, not fast: veth tx {before:?} -> {after:?}"
    );
    // From the host and back: sent on the veth, not through the bridge's
    // transmit; the answers passed up through the bridge device, not by
    // the bridge (which counts what it passes up as received).
    assert_eq!(
        http_get(&format!("{ip}:80")).as_deref(),
        Some("hello-from-web")
    );
    let before = (
        link_stat(bridge, "tx_packets"),
        link_stat(bridge, "rx_packets"),
    );
    // Each GET is 3 or 4 frames each way: some 70 through the bridge.
    for _ in 0..20 {
        assert_eq!(
            http_get(&format!("{ip}:80")).as_deref(),
            Some("hello-from-web")
        );
    }
    let after = (
        link_stat(bridge, "tx_packets"),
        link_stat(bridge, "rx_packets"),
    );
    assert!(
        after.0 - before.0 <= 10 && after.1 - before.1 <= 10,
        "through the bridge: tx, rx {before:?} -> {after:?}"
    );
    // The bridge keeps the MAC it was made with (derived from its
    // gateway), whatever ports come and go, so the containers' neighbour
    // entries for the gateway stay true.
    let gateway = field("Gateway", "fweb");
    let want: Vec<String> = std::iter::once("02:42".to_string())
        .chain(ip_octets(&gateway).iter().map(|b| format!("{b:02x}")))
        .collect();
    let addr = std::fs::read_to_string(format!("/sys/class/net/{bridge}/address")).unwrap();
    assert_eq!(addr.trim(), want.join(":"));
    let assign = std::fs::read_to_string(format!("/sys/class/net/{bridge}/addr_assign_type"));
    assert_eq!(assign.unwrap().trim(), "3", "NET_ADDR_SET");
    // Another network's container, on its own fast path, still cannot
    // reach this one (its frames go to its own bridge, whose host
    // forwarding drops them).
    let other = unique("fast2");
    s.ok(&["network", "create", &other]);
    let far = sleeper("ffar", &other);
    let far_veth = veths_of(&far).remove(0);
    assert!(on_fast_path(&[&far_veth]), "{far_veth}");
    let o = s.run(&[
        "exec",
        "ffar",
        "sh",
        "-c",
        &format!("wget -T 2 -q -O- http://{ip}/"),
    ]);
    assert!(!o.status.success(), "{}", text(&o.stdout));
    s.ok(&["rm", "-f", "ffar"]);
    s.ok(&["network", "rm", &other]);
    // A removed container's addresses leave the map; the others stay.
    s.ok(&["rm", "-f", "fcli"]);
    assert_eq!(
        berth_net::fastpath::entry(br, cli_ip.parse().unwrap()).unwrap(),
        None
    );
    assert!(berth_net::fastpath::entry(br, ip.parse().unwrap())
        .unwrap()
        .is_some());
    // An entry that a failed teardown left for an address goes when the
    // address is leased again, before the new container joins.
    {
        use std::os::fd::AsFd;
        let map = berth_net::fastpath::bridge_map(br)
            .unwrap()
            .expect("the map");
        let stale = berth_net::fastpath::value(999_999, [2, 0x42, 9, 9, 9, 9]);
        let k = berth_net::fastpath::key(cli_ip.parse().unwrap());
        berth_sys::bpf::map_update(map.as_fd(), &k, &stale).unwrap();
    }
    let new = sleeper("fnew", &net);
    assert_eq!(
        field("IPAddress", "fnew"),
        cli_ip,
        "the freed address again"
    );
    let e = berth_net::fastpath::entry(br, cli_ip.parse().unwrap()).unwrap();
    let new_veth = ifindex(&veths_of(&new).remove(0));
    assert!(e.is_none_or(|(idx, _)| idx == new_veth), "{e:?}");
    s.ok(&["rm", "-f", "fnew"]);
    s.ok(&["rm", "-f", "fweb"]);
    assert_eq!(
        berth_net::fastpath::entry(br, ip.parse().unwrap()).unwrap(),
        None
    );
    s.ok(&["network", "rm", &net]);
    assert!(links(bridge).is_empty());
}

/// An HTTP GET over `s`; the body's last line.
fn http_over(mut s: TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines().last().unwrap_or("").to_string()
}

/// A TCP connection to `to` from a socket bound to 127.0.0.1 first.
fn connect_from_loopback(to: std::net::SocketAddrV4) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
    connect(fd.as_raw_fd(), &SockaddrIn::from(to)).unwrap();
    TcpStream::from(fd)
}

#[test]
fn the_hosts_loopback_reaches_a_published_port_at_the_socket() {
    if !need_root() {
        return;
    }
    let s = store();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "lweb",
        "-p",
        "80",
        "-p",
        "127.0.0.1::80",
        "-p",
        "53/udp",
        "busybox",
        "sh",
        "-c",
        WEB,
    ]);
    let ip = inspect(&s, "{{.NetworkSettings.IPAddress}}", "lweb");
    let gateway = inspect(&s, "{{.NetworkSettings.Gateway}}", "lweb");
    let ports = s.ok(&["port", "lweb", "80"]);
    let ports: Vec<u16> = ports
        .lines()
        .filter(|l| l.starts_with("0.0.0.0:") || l.starts_with("127.0.0.1:"))
        .map(|l| l.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert_eq!(
        wait_http(&format!("127.0.0.1:{}", ports[0])).as_deref(),
        Some("hello-from-web")
    );
    let table = format!("berth_{}", &bridge_of(&s, "bridge")[3..]);
    for &port in &ports {
        let to = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port);
        if !berth_net::loopback::supported() {
            assert_eq!(http_over(TcpStream::connect(to).unwrap()), "hello-from-web");
            continue;
        }
        assert_eq!(
            berth_net::loopback::redirection(&table, port, berth_net::ports::Proto::Tcp).unwrap(),
            Some((ip.parse().unwrap(), 80))
        );
        // The socket itself goes to the container (no NAT: its own address
        // is the bridge's), and still names what it asked for as its peer.
        let c = TcpStream::connect(to).unwrap();
        assert_eq!(c.local_addr().unwrap().ip().to_string(), gateway);
        assert_eq!(c.peer_addr().unwrap(), to.into());
        assert_eq!(http_over(c), "hello-from-web");
        // A socket bound to the loopback first is masqueraded on its way.
        assert_eq!(http_over(connect_from_loopback(to)), "hello-from-web");
    }
    // A UDP socket connected to a published port, then elsewhere, names
    // its new peer.
    if berth_net::loopback::supported() {
        let udp: u16 = s
            .ok(&["port", "lweb", "53/udp"])
            .lines()
            .find(|l| l.starts_with("0.0.0.0:"))
            .and_then(|l| l.rsplit(':').next()?.parse().ok())
            .expect("the UDP port");
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        u.connect(("127.0.0.1", udp)).unwrap();
        assert_eq!(
            u.peer_addr().unwrap().to_string(),
            format!("127.0.0.1:{udp}")
        );
        u.connect("127.0.0.2:9").unwrap();
        assert_eq!(u.peer_addr().unwrap().to_string(), "127.0.0.2:9");
    }
    // The container's own loopback is its own: nothing is redirected there.
    let o = s.run(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        &format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 127.0.0.1 {}",
            ports[0]
        ),
    ]);
    assert!(!text(&o.stdout).contains("hello-from-web"));
    // Its host's, in host mode, is the host's.
    let o = s.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "sh",
        "-c",
        &format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 127.0.0.1 {}",
            ports[0]
        ),
    ]);
    assert!(o.contains("hello-from-web"), "{o}");
    // Gone with the container: nothing of the store's is left on the
    // cgroup.
    s.ok(&["rm", "-f", "lweb"]);
    if berth_net::loopback::supported() {
        assert_eq!(
            berth_net::loopback::redirection(&table, ports[0], berth_net::ports::Proto::Tcp)
                .unwrap(),
            None
        );
        assert!(!berth_net::loopback::installed(&table).unwrap());
    }
}
