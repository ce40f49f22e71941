//! `berth network …`, `berth port`, the network flags of `run`/`create`,
//! and the network parts of `inspect` and `ps`.

use berth_engine::config::{NetOptions, NetworkMode};
use berth_engine::containers::{self as ctr, Paths};
use berth_engine::db::ContainerRecord;
use berth_engine::networks::{self as nets, NetworkRecord};
use berth_engine::ImageStore;
use clap::{Args, Subcommand};
use std::collections::BTreeMap;

// The network flags of `run` and `create`.
#[derive(Args, Debug, Clone, Default)]
pub struct NetFlags {
    /// Publish a container's port(s) to the host ([ip:][hostPort:]containerPort[/proto], ranges too)
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Add network-scoped alias for the container
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long)]
    pub ip: Option<String>,
    /// IPv6 address (e.g., 2001:db8::33)
    #[arg(long)]
    pub ip6: Option<String>,
    /// Container MAC address (e.g., 92:d0:c6:0a:29:33)
    #[arg(long = "mac-address")]
    pub mac_address: Option<String>,
    /// Set custom DNS servers
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Set DNS options
    #[arg(long = "dns-option", alias = "dns-opt")]
    pub dns_option: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
}

fn bad(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(berth_engine::containers::ContainerError::Invalid(
        msg.into(),
    ))
}

/// `--network` and the other flags into the container's configuration.
pub fn parse(network: Option<&str>, f: &NetFlags) -> anyhow::Result<(NetworkMode, NetOptions)> {
    let mode = match network {
        None | Some("default") | Some("bridge") => NetworkMode::Default,
        Some("none") => NetworkMode::None,
        Some("host") => NetworkMode::Host,
        Some(c) if c.starts_with("container:") => {
            let target = &c["container:".len()..];
            if target.is_empty() {
                return Err(bad("invalid container format container:<name|id>"));
            }
            NetworkMode::Container(target.to_string())
        }
        Some(n) => NetworkMode::Network(n.to_string()),
    };
    for p in &f.publish {
        berth_net::ports::parse_publish(p).map_err(|e| bad(e.to_string()))?;
    }
    if let Some(ip) = &f.ip {
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(bad(format!("invalid IPv4 address: {ip}")));
        }
    }
    if let Some(ip) = &f.ip6 {
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad(format!("invalid IPv6 address: {ip}")));
        }
    }
    if let Some(m) = &f.mac_address {
        berth_net::ipam::parse_mac(m).map_err(|e| bad(e.to_string()))?;
    }
    for d in &f.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(bad(format!("{d} is not an ip address")));
        }
    }
    for h in &f.add_host {
        nets::parse_extra_host(h).map_err(|e| bad(e.to_string()))?;
    }
    let takes_net = matches!(mode, NetworkMode::Container(_));
    if takes_net && (!f.publish.is_empty() || f.publish_all) {
        return Err(bad(
            "conflicting options: port publishing and the container type network mode",
        ));
    }
    if takes_net && (!f.dns.is_empty() || !f.add_host.is_empty() || f.mac_address.is_some()) {
        return Err(bad(
            "conflicting options: dns, add-host or mac-address and the container type network mode",
        ));
    }
    if mode == NetworkMode::Host && (!f.publish.is_empty() || f.publish_all) {
        eprintln!("WARNING: Published ports are discarded when using host network mode");
    }
    Ok((
        mode,
        NetOptions {
            publish: if mode_is_bridge(network) {
                f.publish.clone()
            } else {
                vec![]
            },
            publish_all: f.publish_all,
            aliases: f.network_alias.clone(),
            ip: f.ip.clone(),
            ip6: f.ip6.clone(),
            mac_address: f.mac_address.clone(),
            dns: f.dns.clone(),
            dns_search: f.dns_search.clone(),
            dns_options: f.dns_option.clone(),
            extra_hosts: f.add_host.clone(),
        },
    ))
}

fn mode_is_bridge(network: Option<&str>) -> bool {
    !matches!(network, Some("host") | Some("none"))
}

/// Docker's name of a container's network mode.
pub fn mode_name(m: &NetworkMode) -> String {
    match m {
        NetworkMode::None => "none".into(),
        NetworkMode::Host => "host".into(),
        NetworkMode::Default => "bridge".into(),
        NetworkMode::Container(c) => format!("container:{c}"),
        NetworkMode::Network(n) => n.clone(),
    }
}

/// The `PORTS` column of `ps`.
pub fn ports_column(store: &ImageStore, c: &ContainerRecord) -> String {
    nets::ports_of(&store.db, &c.id)
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let ip = match m.host_ip {
                None => "0.0.0.0".to_string(),
                Some(a) => a.to_string(),
            };
            format!("{ip}:{}->{}/{}", m.host_port, m.container_port, m.proto)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `NetworkSettings` of `inspect`, Docker's shape.
pub fn add_settings(
    store: &mut ImageStore,
    paths: &Paths,
    j: &mut serde_json::Value,
    c: &ContainerRecord,
) {
    let eps = nets::settings(&mut store.db, &c.id).unwrap_or_default();
    let ports = nets::ports_of(&store.db, &c.id).unwrap_or_default();
    let mut port_map: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for m in &ports {
        port_map
            .entry(format!("{}/{}", m.container_port, m.proto))
            .or_default()
            .push(serde_json::json!({
                "HostIp": m.host_ip.map(|a| a.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
                "HostPort": m.host_port.to_string(),
            }));
    }
    let mut networks = serde_json::Map::new();
    for (n, ep) in &eps {
        networks.insert(
            n.name.clone(),
            serde_json::json!({
                "Aliases": ep.aliases,
                "NetworkID": n.id,
                "EndpointID": if ep.ip.is_some() { format!("{}{}", &c.id[..32], &n.id[..32]) } else { String::new() },
                "Gateway": if ep.ip.is_some() { n.gateway.to_string() } else { String::new() },
                "IPAddress": ep.ip.map(|a| a.to_string()).unwrap_or_default(),
                "IPPrefixLen": if ep.ip.is_some() { n.subnet.prefix } else { 0 },
                "IPv6Gateway": if ep.ip6.is_some() { n.gateway6.map(|a| a.to_string()).unwrap_or_default() } else { String::new() },
                "GlobalIPv6Address": ep.ip6.map(|a| a.to_string()).unwrap_or_default(),
                "GlobalIPv6PrefixLen": if ep.ip6.is_some() { n.subnet6.map(|s| s.prefix).unwrap_or(0) } else { 0 },
                "MacAddress": if ep.ip.is_some() { ep.mac.clone().unwrap_or_else(|| ep.ip.map(|a| berth_net::ipam::format_mac(&berth_net::ipam::mac_for(a))).unwrap_or_default()) } else { String::new() },
                "DNSNames": if n.has_dns() { let mut v = vec![c.name.clone(), c.id[..12].to_string()]; v.extend(ep.aliases.iter().cloned()); v } else { vec![] },
            }),
        );
    }
    // `host` and `none` are modes, not records; Docker lists the container
    // on them all the same.
    if eps.is_empty() {
        let mode = ctr::config_of(c).ok().map(|cfg| cfg.network);
        let name = match mode {
            Some(NetworkMode::Host) => Some("host"),
            Some(NetworkMode::None) => Some("none"),
            _ => None,
        };
        if let Some(name) = name {
            networks.insert(
                name.to_string(),
                serde_json::json!({
                    "Aliases": null,
                    "NetworkID": predefined(name).id,
                    "EndpointID": "",
                    "Gateway": "",
                    "IPAddress": "",
                    "IPPrefixLen": 0,
                    "IPv6Gateway": "",
                    "GlobalIPv6Address": "",
                    "GlobalIPv6PrefixLen": 0,
                    "MacAddress": "",
                    "DNSNames": null,
                }),
            );
        }
    }
    let first = eps.first();
    let sandbox = if first.is_some_and(|(_, e)| e.ip.is_some()) {
        nets::netns_path(paths, &c.id)
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    let settings = serde_json::json!({
        "SandboxID": if sandbox.is_empty() { String::new() } else { c.id.clone() },
        "SandboxKey": sandbox,
        "Ports": port_map,
        "Gateway": first.and_then(|(n, e)| e.ip.map(|_| n.gateway.to_string())).unwrap_or_default(),
        "IPAddress": first.and_then(|(_, e)| e.ip.map(|a| a.to_string())).unwrap_or_default(),
        "IPPrefixLen": first.and_then(|(n, e)| e.ip.map(|_| n.subnet.prefix)).unwrap_or(0),
        "GlobalIPv6Address": first.and_then(|(_, e)| e.ip6.map(|a| a.to_string())).unwrap_or_default(),
        "MacAddress": first.and_then(|(_, e)| e.ip.map(|a| e.mac.clone().unwrap_or_else(|| berth_net::ipam::format_mac(&berth_net::ipam::mac_for(a))))).unwrap_or_default(),
        "Networks": networks,
    });
    j["NetworkSettings"] = settings;
    if let Ok(cfg) = ctr::config_of(c) {
        let mut bindings = serde_json::Map::new();
        for p in &cfg.net.publish {
            if let Ok(specs) = berth_net::ports::parse_publish(p) {
                for s in specs {
                    let key = format!("{}/{}", s.container_port, s.proto);
                    let hp = if s.host_start == 0 {
                        String::new()
                    } else if s.host_start == s.host_end {
                        s.host_start.to_string()
                    } else {
                        format!("{}-{}", s.host_start, s.host_end)
                    };
                    let v = bindings.entry(key).or_insert_with(|| serde_json::json!([]));
                    if let Some(a) = v.as_array_mut() {
                        a.push(serde_json::json!({"HostIp": s.host_ip.map(|a| a.to_string()).unwrap_or_default(), "HostPort": hp}));
                    }
                }
            }
        }
        j["HostConfig"]["NetworkMode"] = serde_json::Value::String(mode_name(&cfg.network));
        j["HostConfig"]["PortBindings"] = serde_json::Value::Object(bindings);
        j["HostConfig"]["PublishAllPorts"] = serde_json::Value::Bool(cfg.net.publish_all);
        j["HostConfig"]["Dns"] = serde_json::json!(cfg.net.dns);
        j["HostConfig"]["DnsSearch"] = serde_json::json!(cfg.net.dns_search);
        j["HostConfig"]["DnsOptions"] = serde_json::json!(cfg.net.dns_options);
        j["HostConfig"]["ExtraHosts"] = serde_json::json!(cfg.net.extra_hosts);
    }
}

/// `berth port CONTAINER [PRIVATE_PORT[/PROTO]]`.
pub fn port(
    store: &mut ImageStore,
    paths: &Paths,
    container: &str,
    private: Option<&str>,
) -> anyhow::Result<i32> {
    let c = ctr::find(store, paths, container)?;
    let maps = nets::ports_of(&store.db, &c.id)?;
    match private {
        None => {
            for m in &maps {
                println!("{}", m.line());
            }
            Ok(0)
        }
        Some(p) => {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            let port: u16 = port
                .parse()
                .map_err(|_| bad(format!("invalid port: {p}")))?;
            let found: Vec<_> = maps
                .iter()
                .filter(|m| m.container_port == port && m.proto.as_str() == proto)
                .collect();
            if found.is_empty() {
                eprintln!(
                    "Error: No public port '{port}/{proto}' published for {}",
                    c.name
                );
                return Ok(1);
            }
            for m in found {
                let ip = match m.host_ip {
                    None => "0.0.0.0".to_string(),
                    Some(std::net::IpAddr::V6(a)) => format!("[{a}]"),
                    Some(a) => a.to_string(),
                };
                println!("{ip}:{}", m.host_port);
            }
            Ok(0)
        }
    }
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum NetworkCmd {
    /// Create a network
    Create {
        /// Driver to manage the Network (bridge)
        #[arg(short, long)]
        driver: Option<String>,
        /// Subnet in CIDR format that represents a network segment
        #[arg(long)]
        subnet: Vec<String>,
        /// IPv4 or IPv6 Gateway for the master subnet
        #[arg(long)]
        gateway: Vec<String>,
        /// Allocate container ip from a sub-range
        #[arg(long = "ip-range")]
        ip_range: Vec<String>,
        /// Enable or disable IPv6 networking
        #[arg(long)]
        ipv6: bool,
        /// Restrict external access to the network
        #[arg(long)]
        internal: bool,
        /// Set metadata on a network
        #[arg(long)]
        label: Vec<String>,
        /// Network name
        name: String,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        /// Only display network IDs
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate the output
        #[arg(long = "no-trunc")]
        no_trunc: bool,
        /// Provide filter values (e.g. "name=mynet", "id=…", "driver=bridge")
        #[arg(short, long)]
        filter: Vec<String>,
        /// Format output using a Go template
        #[arg(long)]
        format: Option<String>,
    },
    /// Display detailed information on one or more networks
    Inspect {
        /// Format output using a Go template
        #[arg(short, long)]
        format: Option<String>,
        /// Networks
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm {
        /// Do not error if the network does not exist
        #[arg(short, long)]
        force: bool,
        /// Networks
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove all unused networks
    Prune {
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
    /// Connect a container to a network
    Connect {
        /// Add network-scoped alias for the container
        #[arg(long)]
        alias: Vec<String>,
        /// IPv4 or IPv6 address
        #[arg(long)]
        ip: Option<String>,
        /// Network
        network: String,
        /// Container
        container: String,
    },
    /// Disconnect a container from a network
    Disconnect {
        /// Force the container to disconnect from a network
        #[arg(short, long)]
        force: bool,
        /// Network
        network: String,
        /// Container
        container: String,
    },
    /// The embedded DNS server of a network (started by berth itself)
    #[command(name = "dns-serve", hide = true)]
    DnsServe {
        network_id: String,
        config: std::path::PathBuf,
    },
}

/// Docker's pre-defined `host` and `none` networks, for `network ls`:
/// they are modes of a container, not records of the store.
fn predefined(name: &str) -> NetworkRecord {
    use sha2::Digest as _;
    let id: String = sha2::Sha256::digest(format!("berth-network-{name}"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    NetworkRecord {
        id,
        name: name.to_string(),
        driver: if name == "host" { "host" } else { "null" }.to_string(),
        bridge: String::new(),
        subnet: berth_net::ipam::Subnet {
            addr: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            prefix: 0,
        },
        gateway: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        ip_range: None,
        subnet6: None,
        gateway6: None,
        internal: false,
        labels: BTreeMap::new(),
        created: String::new(),
    }
}

fn kv(list: &[String]) -> BTreeMap<String, String> {
    list.iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (s.clone(), String::new()),
        })
        .collect()
}

fn daemon_err(e: impl std::fmt::Display) -> i32 {
    eprintln!("Error response from daemon: {e}");
    1
}

/// `network inspect` JSON, Docker's shape.
pub fn network_json(store: &mut ImageStore, n: &NetworkRecord) -> serde_json::Value {
    let mut config = vec![serde_json::json!({
        "Subnet": n.subnet.to_string(),
        "Gateway": n.gateway.to_string(),
    })];
    if let Some(r) = n.ip_range {
        config[0]["IPRange"] = serde_json::Value::String(r.to_string());
    }
    if let (Some(s), Some(g)) = (n.subnet6, n.gateway6) {
        config.push(serde_json::json!({"Subnet": s.to_string(), "Gateway": g.to_string()}));
    }
    let mut containers = serde_json::Map::new();
    for (c, ep) in nets::containers_on(&mut store.db, &n.id).unwrap_or_default() {
        if ep.ip.is_none() {
            continue;
        }
        containers.insert(
            c.id.clone(),
            serde_json::json!({
                "Name": c.name,
                "EndpointID": format!("{}{}", &c.id[..32], &n.id[..32]),
                "MacAddress": ep.mac.clone().unwrap_or_else(|| ep.ip.map(|a| berth_net::ipam::format_mac(&berth_net::ipam::mac_for(a))).unwrap_or_default()),
                "IPv4Address": ep.ip.map(|a| format!("{a}/{}", n.subnet.prefix)).unwrap_or_default(),
                "IPv6Address": ep.ip6.map(|a| format!("{a}/{}", n.subnet6.map(|s| s.prefix).unwrap_or(64))).unwrap_or_default(),
            }),
        );
    }
    serde_json::json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created,
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv6": n.subnet6.is_some(),
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": {"com.docker.network.bridge.name": n.bridge},
        "Labels": n.labels,
    })
}

pub fn network_cmd(store: &mut ImageStore, paths: &Paths, cmd: NetworkCmd) -> anyhow::Result<i32> {
    match cmd {
        NetworkCmd::Create {
            driver,
            subnet,
            gateway,
            ip_range,
            ipv6,
            internal,
            label,
            name,
        } => {
            let o = nets::CreateOptions {
                name,
                driver,
                subnets: subnet,
                gateways: gateway,
                ip_ranges: ip_range,
                ipv6,
                internal,
                labels: kv(&label),
            };
            match nets::create(store, paths, o) {
                Ok(n) => {
                    println!("{}", n.id);
                    Ok(0)
                }
                Err(e) => Ok(daemon_err(e)),
            }
        }
        NetworkCmd::Ls {
            quiet,
            no_trunc,
            filter,
            format,
        } => {
            nets::ensure_default(&mut store.db, paths)?;
            let mut list = nets::all(&mut store.db)?;
            list.extend(["host", "none"].map(predefined));
            for f in &filter {
                let (k, v) = f.split_once('=').ok_or_else(|| {
                    bad(format!("bad format of filter (expected name=value): {f}"))
                })?;
                match k {
                    "name" => list.retain(|n| n.name.contains(v)),
                    "id" => list.retain(|n| n.id.starts_with(v)),
                    "driver" => list.retain(|n| n.driver == v),
                    "label" => list.retain(|n| match v.split_once('=') {
                        Some((lk, lv)) => n.labels.get(lk).is_some_and(|x| x == lv),
                        None => n.labels.contains_key(v),
                    }),
                    "type" => list.retain(|n| (v == "builtin") == (n.name == nets::DEFAULT)),
                    _ => return Err(bad(format!("invalid filter '{k}'"))),
                }
            }
            let id = |n: &NetworkRecord| {
                if no_trunc {
                    n.id.clone()
                } else {
                    n.id[..12].to_string()
                }
            };
            if quiet {
                for n in &list {
                    println!("{}", id(n));
                }
                return Ok(0);
            }
            if let Some(f) = format {
                for n in &list {
                    let v = serde_json::json!({"ID": id(n), "Name": n.name, "Driver": n.driver, "Scope": "local", "IPv6": n.subnet6.is_some(), "Internal": n.internal, "CreatedAt": n.created});
                    if f == "json" {
                        println!("{v}");
                    } else {
                        println!("{}", crate::gotmpl::parse(&f)?.render(&v)?);
                    }
                }
                return Ok(0);
            }
            let w = if no_trunc { 64 } else { 12 };
            println!(
                "{:<w$}   {:<20}{:<10}SCOPE",
                "NETWORK ID",
                "NAME",
                "DRIVER",
                w = w
            );
            for n in &list {
                println!("{:<w$}   {:<20}{:<10}local", id(n), n.name, n.driver, w = w);
            }
            Ok(0)
        }
        NetworkCmd::Inspect { format, names } => {
            let mut out = Vec::new();
            let mut code = 0;
            for n in &names {
                if n == nets::DEFAULT {
                    let _ = nets::ensure_default(&mut store.db, paths);
                }
                match nets::find(&mut store.db, n) {
                    Ok(rec) => out.push(network_json(store, &rec)),
                    Err(_) => {
                        eprintln!("Error response from daemon: network {n} not found");
                        code = 1;
                    }
                }
            }
            match format {
                Some(f) => {
                    for v in &out {
                        println!("{}", crate::gotmpl::parse(&f)?.render(v)?);
                    }
                }
                None => println!("{}", serde_json::to_string_pretty(&out)?),
            }
            Ok(code)
        }
        NetworkCmd::Rm { force, names } => {
            let mut code = 0;
            for n in &names {
                if n == "host" || n == "none" {
                    code = daemon_err(format!(
                        "{n} is a pre-defined network and cannot be removed"
                    ));
                    continue;
                }
                match nets::remove(store, paths, n) {
                    Ok(_) => println!("{n}"),
                    Err(ctr::ContainerError::Invalid(m)) if force && m.ends_with("not found") => {}
                    Err(e) => code = daemon_err(e),
                }
            }
            Ok(code)
        }
        NetworkCmd::Prune { force } => {
            let _ = force;
            let gone = nets::prune(store, paths)?;
            if !gone.is_empty() {
                println!("Deleted Networks:");
                for g in gone {
                    println!("{g}");
                }
            }
            Ok(0)
        }
        NetworkCmd::Connect {
            alias,
            ip,
            network,
            container,
        } => match nets::connect(store, paths, &network, &container, alias, ip) {
            Ok(()) => Ok(0),
            Err(e) => Ok(daemon_err(e)),
        },
        NetworkCmd::Disconnect {
            force,
            network,
            container,
        } => {
            let _ = force;
            match nets::disconnect(store, paths, &network, &container) {
                Ok(()) => Ok(0),
                Err(e) => Ok(daemon_err(e)),
            }
        }
        NetworkCmd::DnsServe { network_id, config } => {
            let _ = network_id;
            let pid = config.with_file_name("dns.pid");
            let lock = paths.run_root.join("net.lock");
            berth_net::dns::serve(&config, &pid, &lock)?;
            Ok(0)
        }
    }
}
