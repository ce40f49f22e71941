//! Networks: their records (`networks`), the containers attached to them
//! (`endpoints`, with a lease while the container runs) and published
//! ports (`published_ports`), and the life of a container's network: made
//! by the `berth` process that starts the container, before its monitor
//! starts it ([`setup`]: a network namespace kept under the run root and
//! handed to the runtime by path), undone by whoever sees it stop first
//! ([`teardown`]: the monitor at the last exit, `rm`, or `refresh` of a
//! container whose monitor died). Both are idempotent and run under one
//! lock per run root (`<run-root>/net.lock`); leases are taken in an
//! IMMEDIATE transaction and a unique index makes a double lease
//! impossible.

use crate::config::{ContainerConfig, NetworkMode};
use crate::containers::{ContainerError, Paths, Result};
use crate::db::{ContainerRecord, Db, DbError};
use crate::images::ImageStore;
use berth_net::ipam::{self, Subnet};
use berth_net::netlink::Netlink;
use berth_net::nft::{Firewall, FwNetwork, FwPort};
use berth_net::ports::{self, PortMapping, Proto};
use berth_net::{BridgePlan, EndpointPlan, NetError};
use nix::fcntl::{Flock, FlockArg};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::net::{IpAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The default network's name.
pub const DEFAULT: &str = "bridge";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub gateway: IpAddr,
    pub ip_range: Option<Subnet>,
    pub subnet6: Option<Subnet>,
    pub gateway6: Option<IpAddr>,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    pub created: String,
}

impl NetworkRecord {
    fn fw(&self) -> FwNetwork {
        FwNetwork {
            bridge: self.bridge.clone(),
            subnets: std::iter::once(self.subnet).chain(self.subnet6).collect(),
            internal: self.internal,
        }
    }

    /// User-defined networks have the embedded DNS server; the default one
    /// does not (as with Docker).
    pub fn has_dns(&self) -> bool {
        self.name != DEFAULT
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointRecord {
    pub container_id: String,
    pub network_id: String,
    pub idx: u32,
    pub aliases: Vec<String>,
    pub static_ip: Option<IpAddr>,
    pub static_ip6: Option<IpAddr>,
    pub ip: Option<IpAddr>,
    pub ip6: Option<IpAddr>,
    pub mac: Option<String>,
}

impl EndpointRecord {
    /// The veth's name on the host (at most 15 bytes).
    pub fn host_ifname(&self) -> String {
        format!(
            "vb{}{:x}",
            &self.container_id[..11.min(self.container_id.len())],
            self.idx
        )
    }
}

fn net_err(e: NetError) -> ContainerError {
    match e {
        NetError::Invalid(m) => ContainerError::Invalid(m),
        NetError::Conflict(m) => ContainerError::Conflict(m),
        other => ContainerError::Start {
            code: 125,
            msg: other.to_string(),
        },
    }
}

fn sql(db: &Db) -> impl Fn(rusqlite::Error) -> ContainerError + '_ {
    move |source| {
        ContainerError::Db(DbError::Sqlite {
            path: db.path().to_path_buf(),
            source,
        })
    }
}

/// A subnet for the default bridge that collides with none of `taken`: the
/// default store's from the bridge candidates first, any store's from the
/// user-network ones.
fn default_subnet(paths: &Paths, taken: &[ipam::Subnet]) -> Result<ipam::Subnet> {
    if tag(paths).is_none() {
        ipam::choose_subnet(ipam::bridge_candidates(), taken)
    } else {
        None
    }
    .or_else(|| ipam::choose_subnet(ipam::user_candidates(), taken))
    .ok_or_else(|| {
        ContainerError::Conflict("no free private subnet for the default bridge network".into())
    })
}

/// An IMMEDIATE transaction on `db`, with the error mapping for its
/// statements (which cannot borrow `db` while the transaction does).
fn write_tx(
    db: &mut Db,
) -> Result<(
    rusqlite::Transaction<'_>,
    impl Fn(rusqlite::Error) -> ContainerError,
)> {
    let path = db.path().to_path_buf();
    let e = move |source| {
        ContainerError::Db(DbError::Sqlite {
            path: path.clone(),
            source,
        })
    };
    let tx = db
        .conn()
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&e)?;
    Ok((tx, e))
}

fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// What this run root's host objects are called: the default root's are
/// `berth0` and `table inet berth`; any other root (tests, benchmarks) has
/// its own, so that stores never share a bridge or a table.
fn tag(paths: &Paths) -> Option<String> {
    if paths.run_root == Path::new("/run/berth") {
        return None;
    }
    let name = paths.run_root.file_name()?.to_string_lossy().to_string();
    let h = name.strip_prefix("berth-").unwrap_or(&name);
    // A short, stable tag from the run root's name.
    let mut x: u32 = 2166136261;
    for b in h.bytes() {
        x = (x ^ b as u32).wrapping_mul(16777619);
    }
    Some(format!("{x:08x}"))
}

pub fn table_name(paths: &Paths) -> String {
    match tag(paths) {
        None => "berth".into(),
        Some(t) => format!("berth_{t}"),
    }
}

fn default_bridge_name(paths: &Paths) -> String {
    match tag(paths) {
        None => "berth0".into(),
        Some(t) => format!("bth{t}"),
    }
}

/// Where a container's network namespace is kept (bind-mounted).
pub fn netns_path(paths: &Paths, id: &str) -> PathBuf {
    paths.run_root.join("netns").join(id)
}

fn net_run_dir(paths: &Paths, net_id: &str) -> PathBuf {
    paths.run_root.join("networks").join(net_id)
}

/// The lock every change of kernel network state of this run root takes.
fn lock(paths: &Paths) -> Result<Flock<File>> {
    crate::containers::ensure_run_root(&paths.run_root)?;
    lock_at(&paths.run_root)
}

/// [`lock`] of a run root that exists.
fn lock_at(run_root: &Path) -> Result<Flock<File>> {
    let p = run_root.join("net.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| ContainerError::Io {
            what: "opening",
            path: p.clone(),
            source: e,
        })?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| ContainerError::Io {
        what: "locking",
        path: p,
        source: e.into(),
    })
}

/// A host-wide lock for choosing subnets and creating bridges, so two
/// stores never pick the same free subnet at once.
fn host_lock() -> Result<Flock<File>> {
    let p = Path::new("/run/berth-net.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map_err(|e| ContainerError::Io {
            what: "opening",
            path: p.to_path_buf(),
            source: e,
        })?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| ContainerError::Io {
        what: "locking",
        path: p.to_path_buf(),
        source: e.into(),
    })
}

// --- rows --------------------------------------------------------------

fn parse_opt<T: std::str::FromStr>(s: Option<String>) -> Option<T> {
    s.and_then(|x| x.parse().ok())
}

fn network_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NetworkRecord> {
    let subnet: String = r.get(4)?;
    let gateway: String = r.get(5)?;
    let labels: String = r.get(10)?;
    Ok(NetworkRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        driver: r.get(2)?,
        bridge: r.get(3)?,
        subnet: subnet.parse().unwrap_or(Subnet {
            addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            prefix: 0,
        }),
        gateway: gateway
            .parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        ip_range: parse_opt(r.get(6)?),
        subnet6: parse_opt(r.get(7)?),
        gateway6: parse_opt(r.get(8)?),
        internal: r.get(9)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        created: r.get(11)?,
    })
}

const NET_COLS: &str =
    "id, name, driver, bridge, subnet, gateway, ip_range, subnet6, gateway6, internal, labels, created";

fn endpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EndpointRecord> {
    let aliases: String = r.get(3)?;
    Ok(EndpointRecord {
        container_id: r.get(0)?,
        network_id: r.get(1)?,
        idx: r.get(2)?,
        aliases: serde_json::from_str(&aliases).unwrap_or_default(),
        static_ip: parse_opt(r.get(4)?),
        static_ip6: parse_opt(r.get(5)?),
        ip: parse_opt(r.get(6)?),
        ip6: parse_opt(r.get(7)?),
        mac: r.get(8)?,
    })
}

const EP_COLS: &str = "container_id, network_id, idx, aliases, static_ip, static_ip6, ip, ip6, mac";

pub fn all(db: &mut Db) -> Result<Vec<NetworkRecord>> {
    let e = sql(db);
    let mut st = db
        .conn_ref()
        .prepare(&format!("SELECT {NET_COLS} FROM networks ORDER BY created"))
        .map_err(&e)?;
    let rows = st.query_map([], network_row).map_err(&e)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(&e)
}

fn network_by_id(db: &Db, id: &str) -> Result<Option<NetworkRecord>> {
    db.conn_ref()
        .query_row(
            &format!("SELECT {NET_COLS} FROM networks WHERE id = ?1"),
            [id],
            network_row,
        )
        .optional()
        .map_err(sql(db))
}

/// A network by name, full ID or unique ID prefix.
pub fn find(db: &mut Db, name: &str) -> Result<NetworkRecord> {
    let c = db.conn_ref();
    let by_name = c
        .query_row(
            &format!("SELECT {NET_COLS} FROM networks WHERE name = ?1 OR id = ?1"),
            [name],
            network_row,
        )
        .optional()
        .map_err(sql(db))?;
    if let Some(n) = by_name {
        return Ok(n);
    }
    if name == DEFAULT {
        return Err(ContainerError::NotFound(format!("network {name}")));
    }
    let mut st = c
        .prepare(&format!(
            "SELECT {NET_COLS} FROM networks WHERE id LIKE ?1 || '%'"
        ))
        .map_err(sql(db))?;
    let found: Vec<NetworkRecord> = st
        .query_map([name], network_row)
        .map_err(sql(db))?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql(db))?;
    match found.len() {
        1 if !name.is_empty() => Ok(found.into_iter().next().unwrap_or_else(|| unreachable!())),
        0 | 1 => Err(not_found(name)),
        _ => Err(ContainerError::Invalid(format!(
            "network {name} is ambiguous ({} matches found based on ID prefix)",
            found.len()
        ))),
    }
}

fn not_found(name: &str) -> ContainerError {
    ContainerError::Invalid(format!("network {name} not found"))
}

pub fn endpoints_of(db: &Db, container_id: &str) -> Result<Vec<EndpointRecord>> {
    let mut st = db
        .conn_ref()
        .prepare(&format!(
            "SELECT {EP_COLS} FROM endpoints WHERE container_id = ?1 ORDER BY idx"
        ))
        .map_err(sql(db))?;
    let rows = st
        .query_map([container_id], endpoint_row)
        .map_err(sql(db))?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql(db))
}

pub fn endpoints_on(db: &Db, network_id: &str) -> Result<Vec<EndpointRecord>> {
    let mut st = db
        .conn_ref()
        .prepare(&format!(
            "SELECT {EP_COLS} FROM endpoints WHERE network_id = ?1 ORDER BY idx"
        ))
        .map_err(sql(db))?;
    let rows = st.query_map([network_id], endpoint_row).map_err(sql(db))?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql(db))
}

/// A container's published ports (while it runs).
pub fn ports_of(db: &Db, container_id: &str) -> Result<Vec<PortMapping>> {
    let mut st = db
        .conn_ref()
        .prepare(
            "SELECT host_ip, host_port, proto, container_port FROM published_ports
             WHERE container_id = ?1 ORDER BY container_port, proto, host_ip",
        )
        .map_err(sql(db))?;
    let rows = st
        .query_map([container_id], |r| {
            let ip: String = r.get(0)?;
            let proto: String = r.get(2)?;
            Ok(PortMapping {
                host_ip: ip.parse().ok(),
                host_port: r.get(1)?,
                container_port: r.get(3)?,
                proto: Proto::parse(&proto).unwrap_or(Proto::Tcp),
            })
        })
        .map_err(sql(db))?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql(db))
}

fn all_ports(db: &Db) -> Result<Vec<FwPort>> {
    let mut st = db
        .conn_ref()
        .prepare("SELECT host_ip, host_port, proto, container_port, target, target6 FROM published_ports")
        .map_err(sql(db))?;
    let rows = st
        .query_map([], |r| {
            let ip: String = r.get(0)?;
            let proto: String = r.get(2)?;
            let target: String = r.get(4)?;
            let target6: Option<String> = r.get(5)?;
            Ok((
                ip,
                r.get::<_, u16>(1)?,
                proto,
                r.get::<_, u16>(3)?,
                target,
                target6,
            ))
        })
        .map_err(sql(db))?;
    let mut out = Vec::new();
    for row in rows {
        let (ip, hp, proto, cp, target, target6) = row.map_err(sql(db))?;
        let mapping = PortMapping {
            host_ip: ip.parse().ok(),
            host_port: hp,
            container_port: cp,
            proto: Proto::parse(&proto).unwrap_or(Proto::Tcp),
        };
        // Each address family of the container that the host address
        // (or every address) allows.
        for t in std::iter::once(target).chain(target6) {
            let Ok(t) = t.parse::<IpAddr>() else { continue };
            if mapping.host_ip.is_none_or(|h| h.is_ipv6() == t.is_ipv6()) {
                out.push(FwPort {
                    mapping: mapping.clone(),
                    target: t,
                });
            }
        }
    }
    Ok(out)
}

// --- networks ----------------------------------------------------------

/// What `network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub name: String,
    pub driver: Option<String>,
    pub subnets: Vec<String>,
    pub gateways: Vec<String>,
    pub ip_ranges: Vec<String>,
    pub ipv6: bool,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
}

fn taken_subnets(db: &mut Db) -> Result<Vec<Subnet>> {
    let mut taken: Vec<Subnet> = Vec::new();
    for n in all(db)? {
        taken.push(n.subnet);
        taken.extend(n.subnet6);
    }
    if let Ok(mut nl) = Netlink::open() {
        taken.extend(berth_net::host_subnets(&mut nl).unwrap_or_default());
    }
    Ok(taken)
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| ContainerError::Invalid(format!("invalid {what}: {s}")))
}

fn parse_subnet(s: &str) -> Result<Subnet> {
    s.parse::<Subnet>().map_err(net_err)
}

/// `network create`.
pub fn create(images: &mut ImageStore, paths: &Paths, o: CreateOptions) -> Result<NetworkRecord> {
    let db = &mut images.db;
    crate::containers::validate_name(&o.name)
        .map_err(|_| ContainerError::Invalid(format!("invalid network name {:?}", o.name)))?;
    if matches!(o.name.as_str(), "none" | "host" | "default") {
        return Err(ContainerError::Invalid(format!(
            "network name {} is reserved",
            o.name
        )));
    }
    match o.driver.as_deref() {
        None | Some("bridge") => {}
        Some(d) => {
            return Err(ContainerError::Invalid(format!(
                "network driver {d} is not supported (only bridge)"
            )))
        }
    }
    if all(db)?.iter().any(|n| n.name == o.name) {
        return Err(ContainerError::Conflict(format!(
            "network with name {} already exists",
            o.name
        )));
    }
    let mut v4: Option<Subnet> = None;
    let mut v6: Option<Subnet> = None;
    for s in &o.subnets {
        let sn = parse_subnet(s)?;
        let slot = if sn.is_v6() { &mut v6 } else { &mut v4 };
        if slot.is_some() {
            return Err(ContainerError::Invalid(
                "only one subnet per address family is supported".into(),
            ));
        }
        *slot = Some(sn);
    }
    if v6.is_some() && !o.ipv6 {
        return Err(ContainerError::Invalid(
            "an IPv6 subnet needs --ipv6".into(),
        ));
    }
    let mut gw4 = None;
    let mut gw6 = None;
    for g in &o.gateways {
        let a = parse_ip(g, "gateway")?;
        if a.is_ipv6() {
            gw6 = Some(a)
        } else {
            gw4 = Some(a)
        }
    }
    let mut range4 = None;
    for r in &o.ip_ranges {
        let rs = parse_subnet(r)?;
        if !rs.is_v6() {
            range4 = Some(rs);
        }
    }
    let _host = host_lock()?;
    let taken = taken_subnets(db)?;
    let subnet = match v4 {
        Some(s) => {
            if let Some(t) = taken.iter().find(|t| t.overlaps(&s)) {
                return Err(ContainerError::Conflict(format!(
                    "invalid pool request: Pool overlaps with other one on this address space ({s} overlaps {t})"
                )));
            }
            s
        }
        None => ipam::choose_subnet(ipam::user_candidates(), &taken).ok_or_else(|| {
            ContainerError::Conflict(
                "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network".into(),
            )
        })?,
    };
    let subnet6 = if o.ipv6 {
        Some(match v6 {
            Some(s) => {
                if let Some(t) = taken.iter().find(|t| t.overlaps(&s)) {
                    return Err(ContainerError::Conflict(format!(
                        "invalid pool request: Pool overlaps with other one on this address space ({s} overlaps {t})"
                    )));
                }
                s
            }
            None => ipam::choose_subnet(ipam::v6_candidates(), &taken)
                .ok_or_else(|| ContainerError::Conflict("no free IPv6 subnet".into()))?,
        })
    } else {
        None
    };
    let gateway = match gw4 {
        Some(g) if subnet.contains(g) => g,
        Some(g) => {
            return Err(ContainerError::Invalid(format!(
                "gateway {g} is not in subnet {subnet}"
            )))
        }
        None => subnet
            .first_host()
            .ok_or_else(|| ContainerError::Invalid(format!("subnet {subnet} is too small")))?,
    };
    if let Some(r) = range4 {
        if !subnet.covers(&r) {
            return Err(ContainerError::Invalid(format!(
                "ip-range {r} is not inside subnet {subnet}"
            )));
        }
    }
    let gateway6 = match (subnet6, gw6) {
        (Some(s), Some(g)) if s.contains(g) => Some(g),
        (Some(s), Some(g)) => {
            return Err(ContainerError::Invalid(format!(
                "gateway {g} is not in subnet {s}"
            )))
        }
        (Some(s), None) => s.first_host(),
        (None, _) => None,
    };
    let id = crate::random_hex().map_err(|e| ContainerError::Io {
        what: "reading",
        path: "/dev/urandom".into(),
        source: e,
    })?;
    let rec = NetworkRecord {
        bridge: format!("br-{}", &id[..12]),
        id,
        name: o.name.clone(),
        driver: "bridge".into(),
        subnet,
        gateway,
        ip_range: range4,
        subnet6,
        gateway6,
        internal: o.internal,
        labels: o.labels.clone(),
        created: now(),
    };
    insert_network(db, &rec)?;
    // The bridge and the firewall now, so a bad host fails here.
    let _l = lock(paths)?;
    if let Err(e) = bring_up(paths, db, &rec) {
        let _ = remove_network_kernel(paths, db, &rec);
        let _ = db
            .conn_ref()
            .execute("DELETE FROM networks WHERE id = ?1", [&rec.id]);
        return Err(e);
    }
    Ok(rec)
}

fn insert_network(db: &mut Db, rec: &NetworkRecord) -> Result<()> {
    let e = sql(db);
    db.conn_ref()
        .execute(
            &format!(
                "INSERT INTO networks ({NET_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)"
            ),
            params![
                rec.id,
                rec.name,
                rec.driver,
                rec.bridge,
                rec.subnet.to_string(),
                rec.gateway.to_string(),
                rec.ip_range.map(|s| s.to_string()),
                rec.subnet6.map(|s| s.to_string()),
                rec.gateway6.map(|s| s.to_string()),
                rec.internal,
                serde_json::to_string(&rec.labels).unwrap_or_else(|_| "{}".into()),
                rec.created,
            ],
        )
        .map_err(|err| match err {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                ContainerError::Conflict(format!("network with name {} already exists", rec.name))
            }
            other => e(other),
        })?;
    Ok(())
}

/// The default `bridge` network's record, made on first use with a subnet
/// that collides with nothing on the host.
pub fn ensure_default(db: &mut Db, paths: &Paths) -> Result<NetworkRecord> {
    if let Ok(n) = find(db, DEFAULT) {
        return Ok(n);
    }
    let _host = host_lock()?;
    if let Ok(n) = find(db, DEFAULT) {
        return Ok(n);
    }
    let taken = taken_subnets(db)?;
    let subnet = default_subnet(paths, &taken)?;
    let id = crate::random_hex().map_err(|e| ContainerError::Io {
        what: "reading",
        path: "/dev/urandom".into(),
        source: e,
    })?;
    let rec = NetworkRecord {
        id,
        name: DEFAULT.into(),
        driver: "bridge".into(),
        bridge: default_bridge_name(paths),
        subnet,
        gateway: subnet.first_host().unwrap_or(subnet.addr),
        ip_range: None,
        subnet6: None,
        gateway6: None,
        internal: false,
        labels: BTreeMap::new(),
        created: now(),
    };
    match insert_network(db, &rec) {
        Ok(()) => Ok(rec),
        Err(_) => find(db, DEFAULT),
    }
}

/// The bridge of `net` up with its gateway addresses.
fn bring_up(paths: &Paths, db: &mut Db, net: &NetworkRecord) -> Result<()> {
    let mut nl = Netlink::open().map_err(net_err)?;
    let mtu = berth_net::host_mtu(&mut nl);
    let plan = BridgePlan {
        name: net.bridge.clone(),
        addrs: std::iter::once((net.gateway, net.subnet.prefix))
            .chain(net.gateway6.zip(net.subnet6.map(|s| s.prefix)))
            .collect(),
        mtu,
    };
    berth_net::ensure_bridge(&mut nl, &plan).map_err(net_err)?;
    sync_firewall(paths, db)
}

fn firewall(db: &mut Db) -> Result<Firewall> {
    Ok(Firewall {
        networks: all(db)?.iter().map(|n| n.fw()).collect(),
        ports: all_ports(db)?,
    })
}

/// Replace this run root's nftables table with what the store says, and
/// remember what was applied (`<run-root>/nft.applied`).
pub fn sync_firewall(paths: &Paths, db: &mut Db) -> Result<()> {
    let table = table_name(paths);
    let fw = firewall(db)?;
    let script = berth_net::nft::script(&table, &fw);
    berth_net::nft::run_nft(&script).map_err(net_err)?;
    let _ = std::fs::write(paths.run_root.join("nft.applied"), &script);
    sync_loopback(&table, &fw.ports);
    Ok(())
}

/// The host's loopback connections to published ports, redirected at the
/// socket (`berth_net::loopback`). The table's DNAT serves them without
/// it, so a failure is a warning.
fn sync_loopback(table: &str, ports: &[FwPort]) {
    if !berth_net::loopback::supported() {
        return;
    }
    if let Err(e) = berth_net::loopback::sync(table, ports) {
        tracing::warn!("{e}; the host's loopback reaches published ports through NAT");
    }
}

/// Apply the table only when it differs from what was applied last, or
/// when it is gone from the kernel (flushed by someone): the common start
/// of a container costs no nft process.
fn ensure_firewall(paths: &Paths, db: &mut Db) -> Result<()> {
    let table = table_name(paths);
    let fw = firewall(db)?;
    let script = berth_net::nft::script(&table, &fw);
    let applied = std::fs::read_to_string(paths.run_root.join("nft.applied")).unwrap_or_default();
    if applied == script && berth_net::nft::table_present(&table) {
        return Ok(());
    }
    berth_net::nft::run_nft(&script).map_err(net_err)?;
    let _ = std::fs::write(paths.run_root.join("nft.applied"), &script);
    sync_loopback(&table, &fw.ports);
    Ok(())
}

fn remove_network_kernel(paths: &Paths, db: &mut Db, net: &NetworkRecord) -> Result<()> {
    stop_dns(paths, net);
    let _ = std::fs::remove_dir_all(net_run_dir(paths, &net.id));
    let mut nl = Netlink::open().map_err(net_err)?;
    nl.delete_link(&net.bridge).map_err(net_err)?;
    let _ = db;
    Ok(())
}

/// Containers (ids) that use a network, running or not.
fn users(db: &Db, net_id: &str) -> Result<Vec<String>> {
    Ok(endpoints_on(db, net_id)?
        .into_iter()
        .map(|e| e.container_id)
        .collect())
}

/// The states of a container that does not run and has no monitor.
const STOPPED: [&str; 3] = [
    crate::containers::state::CREATED,
    crate::containers::state::EXITED,
    crate::containers::state::DEAD,
];

/// The first container that is attached to a network and may run (a
/// lease, or a state other than created or exited): what keeps the
/// network from going. Stopped containers do not, as with Docker.
fn active_user(db: &Db, net_id: &str) -> Result<Option<ContainerRecord>> {
    for e in endpoints_on(db, net_id)? {
        let Some(rec) = db.container(&e.container_id)? else {
            continue;
        };
        let leased = e.ip.is_some() || e.ip6.is_some();
        if leased || !STOPPED.contains(&rec.state.as_str()) {
            return Ok(Some(rec));
        }
    }
    Ok(None)
}

/// `network rm`. Stopped containers attached to the network lose their
/// endpoint on it; one that named it as its network then fails to start
/// with "network … not found", as with Docker.
pub fn remove(images: &mut ImageStore, paths: &Paths, name: &str) -> Result<NetworkRecord> {
    let db = &mut images.db;
    let net = find(db, name)?;
    if net.name == DEFAULT {
        return Err(ContainerError::Conflict(
            "bridge is a pre-defined network and cannot be removed".into(),
        ));
    }
    // What the monitors know may not be in the store yet; a container that
    // has stopped gives its network up first (as its monitor would).
    for id in users(db, &net.id)? {
        if let Some(rec) = images.db.container(&id)? {
            let rec = crate::containers::refresh(images, paths, rec)?;
            if STOPPED.contains(&rec.state.as_str()) {
                teardown(&mut images.db, paths, &id)?;
            }
        }
    }
    let db = &mut images.db;
    let _l = lock(paths)?;
    if let Some(c) = active_user(db, &net.id)? {
        return Err(ContainerError::Conflict(format!(
            "error while removing network: network {} id {} has active endpoints (container {})",
            net.name, net.id, c.name
        )));
    }
    {
        let (tx, e) = write_tx(db)?;
        tx.execute("DELETE FROM endpoints WHERE network_id = ?1", [&net.id])
            .map_err(&e)?;
        tx.execute("DELETE FROM networks WHERE id = ?1", [&net.id])
            .map_err(&e)?;
        tx.commit().map_err(&e)?;
    }
    remove_network_kernel(paths, db, &net)?;
    sync_firewall(paths, db)?;
    Ok(net)
}

/// `network prune`: every user network no container uses; and the default
/// bridge's interface when nothing uses it (made again on demand), so a
/// pruned store leaves nothing in the kernel.
pub fn prune(images: &mut ImageStore, paths: &Paths) -> Result<Vec<String>> {
    let mut gone = Vec::new();
    let nets = all(&mut images.db)?;
    for n in nets {
        let unused = if n.name == DEFAULT {
            users(&images.db, &n.id)?.is_empty()
        } else {
            active_user(&images.db, &n.id)?.is_none()
        };
        if !unused {
            continue;
        }
        if n.name == DEFAULT {
            // Its row goes too: the next use picks a subnet that is free
            // then (another store or engine may have taken this one).
            let _l = lock(paths)?;
            let _ = remove_network_kernel(paths, &mut images.db, &n);
            let _ = images
                .db
                .conn_ref()
                .execute("DELETE FROM networks WHERE id = ?1", [&n.id]);
            continue;
        }
        remove(images, paths, &n.id)?;
        gone.push(n.name);
    }
    let _l = lock(paths)?;
    let db = &mut images.db;
    let any_used = all(db)?
        .iter()
        .any(|n| !users(db, &n.id).map(|u| u.is_empty()).unwrap_or(true));
    if any_used {
        sync_firewall(paths, db)?;
    } else {
        berth_net::nft::apply(&table_name(paths), &Firewall::default()).map_err(net_err)?;
        let _ = std::fs::remove_file(paths.run_root.join("nft.applied"));
        sync_loopback(&table_name(paths), &[]);
    }
    Ok(gone)
}

// --- containers ----------------------------------------------------------

/// At `create`: check the network flags and record the container's
/// endpoint on its network.
pub fn on_create(
    images: &mut ImageStore,
    paths: &Paths,
    rec: &ContainerRecord,
    cfg: &ContainerConfig,
) -> Result<()> {
    for p in &cfg.net.publish {
        ports::parse_publish(p).map_err(net_err)?;
    }
    let net_name = match &cfg.network {
        NetworkMode::None | NetworkMode::Host => {
            if !cfg.net.publish.is_empty() && cfg.network == NetworkMode::None {
                // Docker ignores them; so does berth.
            }
            return Ok(());
        }
        NetworkMode::Container(c) => {
            crate::containers::find(images, paths, c)?;
            return Ok(());
        }
        NetworkMode::Default => DEFAULT.to_string(),
        NetworkMode::Network(n) => n.clone(),
    };
    let db = &mut images.db;
    let net = if net_name == DEFAULT {
        ensure_default(db, paths)?
    } else {
        find(db, &net_name)?
    };
    if !cfg.net.aliases.is_empty() && !net.has_dns() {
        return Err(ContainerError::Invalid(
            "network-scoped aliases are only supported for user-defined networks".into(),
        ));
    }
    let static_ip = cfg
        .net
        .ip
        .as_deref()
        .map(|s| parse_ip(s, "IPv4 address"))
        .transpose()?;
    let static_ip6 = cfg
        .net
        .ip6
        .as_deref()
        .map(|s| parse_ip(s, "IPv6 address"))
        .transpose()?;
    if let Some(ip) = static_ip {
        if net.name == DEFAULT {
            return Err(ContainerError::Invalid(
                "user specified IP address is supported on user defined networks only".into(),
            ));
        }
        ipam::check_static(&net.subnet, Some(net.gateway), &HashSet::new(), ip).map_err(net_err)?;
    }
    if let Some(mac) = &cfg.net.mac_address {
        ipam::parse_mac(mac).map_err(net_err)?;
    }
    for h in &cfg.net.extra_hosts {
        parse_extra_host(h)?;
    }
    insert_endpoint(
        db,
        &EndpointRecord {
            container_id: rec.id.clone(),
            network_id: net.id.clone(),
            idx: 0,
            aliases: cfg.net.aliases.clone(),
            static_ip,
            static_ip6,
            mac: cfg.net.mac_address.clone(),
            ..Default::default()
        },
    )
}

fn insert_endpoint(db: &mut Db, ep: &EndpointRecord) -> Result<()> {
    db.conn_ref()
        .execute(
            &format!("INSERT INTO endpoints ({EP_COLS}) VALUES (?1,?2,?3,?4,?5,?6,NULL,NULL,?7)"),
            params![
                ep.container_id,
                ep.network_id,
                ep.idx,
                serde_json::to_string(&ep.aliases).unwrap_or_else(|_| "[]".into()),
                ep.static_ip.map(|a| a.to_string()),
                ep.static_ip6.map(|a| a.to_string()),
                ep.mac,
            ],
        )
        .map_err(sql(db))?;
    Ok(())
}

pub fn parse_extra_host(h: &str) -> Result<(String, IpAddr)> {
    let (name, ip) = h
        .split_once(':')
        .or_else(|| h.split_once('='))
        .ok_or_else(|| {
            ContainerError::Invalid(format!(
                "invalid argument {h:?} for \"--add-host\" flag: want host:ip"
            ))
        })?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if ip == "host-gateway" {
        return Ok((
            name.to_string(),
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        ));
    }
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| ContainerError::Invalid(format!("invalid IP address in add-host: {ip:?}")))?;
    Ok((name.to_string(), ip))
}

/// What [`setup`] made: the namespace's path to give the runtime, and the
/// sockets that hold the published host ports while the container runs
/// (its monitor keeps them).
#[derive(Default)]
pub struct NetSetup {
    pub netns: Option<PathBuf>,
    /// A namespace kept by nothing but this descriptor (`none`), for the
    /// monitor to start the container in.
    pub netns_fd: Option<OwnedFd>,
    pub reserved: Vec<OwnedFd>,
    /// The endpoints for the monitor to put on the fast path once the
    /// container has run a while.
    pub fast_path: Vec<berth_net::fastpath::Endpoint>,
}

/// Make the container's network before it starts. Nothing is left
/// half-made on error.
/// `fresh` is a namespace with `lo` up that the caller began to make
/// early, used for `none` and bridge networks (made here otherwise).
pub fn setup(
    images: &mut ImageStore,
    paths: &Paths,
    rec: &ContainerRecord,
    cfg: &ContainerConfig,
    exposed: &[String],
    fresh: Option<netns::Pending>,
) -> Result<NetSetup> {
    match &cfg.network {
        NetworkMode::Host => {
            write_files(images, paths, rec, cfg)?;
            return Ok(NetSetup::default());
        }
        NetworkMode::None => {
            write_files(images, paths, rec, cfg)?;
            let fd = fresh
                .unwrap_or_else(netns::Pending::spawn)
                .wait()
                .map_err(net_err)?;
            return Ok(NetSetup {
                netns_fd: Some(fd),
                ..Default::default()
            });
        }
        NetworkMode::Container(c) => {
            let target = crate::containers::find(images, paths, c)?;
            if target.state != crate::containers::state::RUNNING || target.pid <= 0 {
                return Err(ContainerError::Conflict(format!(
                    "cannot join network of a non running container: {}",
                    target.name
                )));
            }
            let ns = netns_path(paths, &target.id);
            let ns = if ns.exists() {
                ns
            } else {
                PathBuf::from(format!("/proc/{}/ns/net", target.pid))
            };
            // Its hosts and resolv.conf are the target's.
            write_hostname(paths, rec, cfg)?;
            for f in ["hosts", "resolv.conf"] {
                if let Ok(t) = std::fs::read(paths.etc_file(&target.id, f)) {
                    write_in_place(&paths.etc_file(&rec.id, f), &t)?;
                }
            }
            return Ok(NetSetup {
                netns: Some(ns),
                ..Default::default()
            });
        }
        NetworkMode::Default | NetworkMode::Network(_) => {}
    }
    let _l = lock(paths)?;
    let res = setup_locked(images, paths, rec, cfg, exposed, fresh);
    match res {
        Ok(s) => Ok(s),
        Err(e) => {
            let _ = teardown_locked(&mut images.db, paths, &rec.id);
            Err(e)
        }
    }
}

fn setup_locked(
    images: &mut ImageStore,
    paths: &Paths,
    rec: &ContainerRecord,
    cfg: &ContainerConfig,
    exposed: &[String],
    fresh: Option<netns::Pending>,
) -> Result<NetSetup> {
    let t0 = std::time::Instant::now();
    // No endpoint left: its network was removed while it was stopped (or
    // it was disconnected from every network). It joins the network its
    // configuration names again, which fails "network … not found" when
    // that is gone, as with Docker.
    if endpoints_of(&images.db, &rec.id)?.is_empty() {
        on_create(images, paths, rec, cfg)?;
    }
    let db = &mut images.db;
    check_subnets(db, paths, &rec.id)?;
    // Leases first (in one transaction), then ports.
    let eps = lease(db, &rec.id)?;
    let nets: Vec<NetworkRecord> = eps
        .iter()
        .map(|e| network_by_id(db, &e.network_id)?.ok_or_else(|| not_found(&e.network_id)))
        .collect::<Result<_>>()?;
    let specs = port_specs(cfg, exposed)?;
    let first = eps.first();
    let reserved = match first.and_then(|e| e.ip) {
        Some(target) => allocate_ports(db, &rec.id, &specs, target, first.and_then(|e| e.ip6))?,
        None => Vec::new(),
    };
    // The kernel: bridges, the namespace and its veths, the firewall.
    tracing::debug!(elapsed = ?t0.elapsed(), "leases and ports");
    let mut host = Netlink::open().map_err(net_err)?;
    let mtu = berth_net::host_mtu(&mut host);
    for n in &nets {
        let plan = BridgePlan {
            name: n.bridge.clone(),
            addrs: std::iter::once((n.gateway, n.subnet.prefix))
                .chain(n.gateway6.zip(n.subnet6.map(|s| s.prefix)))
                .collect(),
            mtu,
        };
        berth_net::ensure_bridge(&mut host, &plan).map_err(net_err)?;
    }
    let plans: Vec<EndpointPlan> = eps
        .iter()
        .zip(&nets)
        .enumerate()
        .map(|(i, (e, n))| endpoint_plan(e, n, mtu, i == 0))
        .collect();
    let path = netns_path(paths, &rec.id);
    netns::remove(&path);
    let host_ns = File::open("/proc/self/ns/net").map_err(|e| ContainerError::Io {
        what: "opening",
        path: "/proc/self/ns/net".into(),
        source: e,
    })?;
    let host_fd = host_ns.as_fd();
    let attach = || {
        let mut inside = Netlink::open()?;
        berth_net::attach(&mut host, &mut inside, host_fd, &plans)
    };
    // A namespace made meanwhile by the starting command is kept and
    // entered; else one is made now.
    match fresh.map(netns::Pending::wait) {
        Some(Ok(ns)) => netns::keep(&path, ns.as_fd())
            .and_then(|()| netns::enter(ns.as_fd(), attach))
            .map_err(net_err)?,
        _ => {
            netns::create(&path, attach).map_err(net_err)?;
        }
    }
    tracing::debug!(elapsed = ?t0.elapsed(), "namespace and veths");
    forget_fast_path(&plans);
    ensure_firewall(paths, db)?;
    tracing::debug!(elapsed = ?t0.elapsed(), "firewall");
    for n in nets.iter().filter(|n| n.has_dns()) {
        update_dns(paths, db, n)?;
    }
    write_files(images, paths, rec, cfg)?;
    Ok(NetSetup {
        netns: Some(path),
        netns_fd: None,
        reserved,
        fast_path: plans.iter().map(Into::into).collect(),
    })
}

use berth_net::netns;

/// A network whose bridge is not in the kernel (after a reboot, a prune,
/// or an admin's `ip link del`) must not come back on a subnet that the
/// host now uses for something else (another store, another engine): the
/// default network, while nothing holds a lease on it, moves to a free
/// subnet; a user network is refused with the reason.
fn check_subnets(db: &mut Db, paths: &Paths, container_id: &str) -> Result<()> {
    let mut nl = Netlink::open().map_err(net_err)?;
    for ep in endpoints_of(db, container_id)? {
        let Some(n) = network_by_id(db, &ep.network_id)? else {
            continue;
        };
        if nl.link_index(&n.bridge).map_err(net_err)?.is_some() {
            continue;
        }
        let _host = host_lock()?;
        let host = berth_net::host_subnets(&mut nl).map_err(net_err)?;
        let clash = host
            .iter()
            .find(|h| h.overlaps(&n.subnet) || n.subnet6.is_some_and(|s6| h.overlaps(&s6)));
        let Some(clash) = clash else { continue };
        let leased = endpoints_on(db, &n.id)?
            .iter()
            .any(|e| e.ip.is_some() && e.container_id != container_id);
        if n.name != DEFAULT || leased {
            return Err(ContainerError::Conflict(format!(
                "network {}: its subnet {} is now used on the host ({clash}); remove the network and create it again",
                n.name, n.subnet
            )));
        }
        let mut taken = host.clone();
        for other in all(db)? {
            if other.id != n.id {
                taken.push(other.subnet);
            }
        }
        let subnet = default_subnet(paths, &taken)?;
        let gateway = subnet.first_host().unwrap_or(subnet.addr);
        db.conn_ref()
            .execute(
                "UPDATE networks SET subnet = ?1, gateway = ?2 WHERE id = ?3",
                params![subnet.to_string(), gateway.to_string(), n.id],
            )
            .map_err(sql(db))?;
    }
    Ok(())
}

/// An endpoint of a running container (`network connect`) onto its
/// bridge's eBPF fast path at once. Traffic is correct without it
/// (through the bridge), so a failure is a warning, not a failed connect;
/// kernels without one ([`berth_net::fastpath::hooks`]) are not asked.
fn join_fast_path(plan: &EndpointPlan) {
    if !berth_net::fastpath::supported() {
        return;
    }
    if let Err(e) = berth_net::fastpath::join(&plan.into()) {
        tracing::warn!("{e}; traffic between containers goes through the bridge");
    }
}

/// The monitor's part: put its container's endpoints on their bridges'
/// fast path, under the run root's network lock, so that two containers
/// joining the same new bridge at once do not give it two maps. Failures
/// are dropped: traffic goes through the bridge instead.
pub fn join_fast_path_at(run_root: &Path, eps: &[berth_net::fastpath::Endpoint]) {
    if !berth_net::fastpath::supported() {
        return;
    }
    let Ok(_l) = lock_at(run_root) else {
        return;
    };
    for ep in eps {
        let _ = berth_net::fastpath::join(ep);
    }
}

/// Take endpoints off their bridges' fast path (before or after their
/// veths go; see [`berth_net::fastpath::leave`]).
/// A failure is a warning: the addresses are released all the same, and
/// the next container given one of them replaces its entry
/// ([`forget_fast_path`]).
fn leave_fast_path(db: &Db, nl: &mut Netlink, eps: &[&EndpointRecord]) {
    if !berth_net::fastpath::supported() {
        return;
    }
    for ep in eps {
        let Ok(Some(n)) = network_by_id(db, &ep.network_id) else {
            continue;
        };
        let addrs: Vec<IpAddr> = ep.ip.iter().chain(&ep.ip6).copied().collect();
        if let Err(e) = berth_net::fastpath::leave(nl, &n.bridge, &ep.host_ifname(), &addrs) {
            tracing::warn!("{e}");
        }
    }
}

/// Addresses just leased: whatever entry the fast path still has for them
/// belongs to a container that is gone (its teardown could not remove
/// it), and would take its traffic until the new one joins.
fn forget_fast_path(plans: &[EndpointPlan]) {
    if !berth_net::fastpath::supported() {
        return;
    }
    for p in plans {
        let addrs: Vec<IpAddr> = p.addrs.iter().map(|(a, _)| *a).collect();
        if let Err(e) = berth_net::fastpath::forget(&p.bridge, &addrs) {
            tracing::warn!("{e}");
        }
    }
}

fn endpoint_plan(e: &EndpointRecord, n: &NetworkRecord, mtu: u32, first: bool) -> EndpointPlan {
    let mut addrs = Vec::new();
    let mut gateways = Vec::new();
    if let Some(ip) = e.ip {
        addrs.push((ip, n.subnet.prefix));
        if first && !n.internal {
            gateways.push(n.gateway);
        }
    }
    if let (Some(ip6), Some(s6)) = (e.ip6, n.subnet6) {
        addrs.push((ip6, s6.prefix));
        if let (true, false, Some(g6)) = (first, n.internal, n.gateway6) {
            gateways.push(g6);
        }
    }
    let mac = e
        .mac
        .as_deref()
        .and_then(|m| ipam::parse_mac(m).ok())
        .or_else(|| e.ip.map(ipam::mac_for))
        .unwrap_or([2, 0x42, 0, 0, 0, 1]);
    EndpointPlan {
        bridge: n.bridge.clone(),
        host_ifname: e.host_ifname(),
        ifname: format!("eth{}", e.idx),
        mac,
        mtu,
        addrs,
        gateways,
    }
}

/// The addresses (`column`: `ip` or `ip6`) other containers hold on a
/// network.
fn used_addresses(
    tx: &rusqlite::Transaction<'_>,
    column: &str,
    network_id: &str,
    container_id: &str,
) -> rusqlite::Result<HashSet<IpAddr>> {
    let mut st = tx.prepare(&format!(
        "SELECT {column} FROM endpoints \
         WHERE network_id = ?1 AND {column} IS NOT NULL AND container_id != ?2"
    ))?;
    let rows = st.query_map(params![network_id, container_id], |r| r.get::<_, String>(0))?;
    Ok(rows.filter_map(|r| r.ok()?.parse().ok()).collect())
}

/// Give each endpoint of the container an address (its static one, or the
/// next free one), in one IMMEDIATE transaction.
fn lease(db: &mut Db, container_id: &str) -> Result<Vec<EndpointRecord>> {
    let eps = endpoints_of(db, container_id)?;
    let (tx, e) = write_tx(db)?;
    let mut out = Vec::new();
    for mut ep in eps {
        if ep.ip.is_some() {
            // Already leased (a live `network connect` leases the new
            // endpoint only).
            out.push(ep);
            continue;
        }
        let net = tx
            .query_row(
                &format!("SELECT {NET_COLS} FROM networks WHERE id = ?1"),
                [&ep.network_id],
                network_row,
            )
            .map_err(&e)?;
        let used = used_addresses(&tx, "ip", &ep.network_id, container_id).map_err(&e)?;
        let ip = match ep.static_ip {
            Some(want) => {
                ipam::check_static(&net.subnet, Some(net.gateway), &used, want).map_err(net_err)?;
                want
            }
            None => ipam::next_free(&net.subnet, net.ip_range.as_ref(), Some(net.gateway), &used)
                .ok_or_else(|| {
                ContainerError::Conflict(format!(
                    "no available IPv4 addresses on network {}",
                    net.name
                ))
            })?,
        };
        let ip6 = match net.subnet6 {
            Some(s6) => {
                let used6 = used_addresses(&tx, "ip6", &ep.network_id, container_id).map_err(&e)?;
                Some(match ep.static_ip6 {
                    Some(want) => {
                        ipam::check_static(&s6, net.gateway6, &used6, want).map_err(net_err)?;
                        want
                    }
                    None => ipam::next_free(&s6, None, net.gateway6, &used6).ok_or_else(|| {
                        ContainerError::Conflict(format!(
                            "no available IPv6 addresses on network {}",
                            net.name
                        ))
                    })?,
                })
            }
            None => None,
        };
        tx.execute(
            "UPDATE endpoints SET ip = ?1, ip6 = ?2 WHERE container_id = ?3 AND network_id = ?4",
            params![
                ip.to_string(),
                ip6.map(|a| a.to_string()),
                container_id,
                ep.network_id
            ],
        )
        .map_err(&e)?;
        ep.ip = Some(ip);
        ep.ip6 = ip6;
        out.push(ep);
    }
    tx.commit().map_err(&e)?;
    Ok(out)
}

fn port_specs(cfg: &ContainerConfig, exposed: &[String]) -> Result<Vec<ports::PortSpec>> {
    let mut specs = Vec::new();
    for p in &cfg.net.publish {
        specs.extend(ports::parse_publish(p).map_err(net_err)?);
    }
    if cfg.net.publish_all {
        for x in exposed {
            for (port, proto) in ports::parse_exposed(x).map_err(net_err)? {
                if !specs
                    .iter()
                    .any(|s| s.container_port == port && s.proto == proto)
                {
                    specs.push(ports::PortSpec {
                        host_ip: None,
                        host_start: 0,
                        host_end: 0,
                        container_port: port,
                        proto,
                    });
                }
            }
        }
    }
    Ok(specs)
}

/// Take `port` on the host: a socket bound to it (TCP bound without
/// listening, without `SO_REUSEADDR`, so that nothing else can bind it,
/// not even a server that sets that option), or why not. All addresses
/// (`ip` unset) cover IPv6 too when the container has an IPv6 address.
/// SCTP ports are not held.
fn reserve_host_port(
    ip: Option<IpAddr>,
    port: u16,
    proto: Proto,
    v6: bool,
) -> std::result::Result<Vec<OwnedFd>, nix::errno::Errno> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
        SockaddrIn6,
    };
    let ty = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
        Proto::Sctp => return Ok(Vec::new()),
    };
    let addrs: Vec<IpAddr> = match ip {
        Some(a) => vec![a],
        None if v6 => vec![
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        ],
        None => vec![IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)],
    };
    let mut held = Vec::new();
    for a in addrs {
        let family = match a {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        let fd = match socket(family, ty, SockFlag::SOCK_CLOEXEC, None) {
            Ok(fd) => fd,
            // A host without IPv6 has nothing to hold there.
            Err(nix::errno::Errno::EAFNOSUPPORT) if ip.is_none() => continue,
            Err(e) => return Err(e),
        };
        match a {
            IpAddr::V4(a) => bind(
                fd.as_raw_fd(),
                &SockaddrIn::from(SocketAddrV4::new(a, port)),
            )?,
            IpAddr::V6(a) => {
                setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
                bind(
                    fd.as_raw_fd(),
                    &SockaddrIn6::from(SocketAddrV6::new(a, port, 0, 0)),
                )?
            }
        }
        held.push(fd);
    }
    Ok(held)
}

fn allocate_ports(
    db: &mut Db,
    container_id: &str,
    specs: &[ports::PortSpec],
    target: IpAddr,
    target6: Option<IpAddr>,
) -> Result<Vec<OwnedFd>> {
    let mut held = Vec::new();
    if specs.is_empty() {
        return Ok(held);
    }
    let (tx, e) = write_tx(db)?;
    tx.execute(
        "DELETE FROM published_ports WHERE container_id = ?1",
        [container_id],
    )
    .map_err(&e)?;
    let mut taken: Vec<(String, u16, String)> = {
        let mut st = tx
            .prepare("SELECT host_ip, host_port, proto FROM published_ports")
            .map_err(&e)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(&e)?;
        rows.collect::<rusqlite::Result<_>>().map_err(&e)?
    };
    let clash = |taken: &[(String, u16, String)], ip: Option<IpAddr>, port: u16, proto: Proto| {
        let ip = ip.map(|a| a.to_string()).unwrap_or_default();
        taken.iter().any(|(tip, tp, tpr)| {
            *tp == port && tpr == proto.as_str() && (tip.is_empty() || ip.is_empty() || *tip == ip)
        })
    };
    let v6 = target6.is_some();
    let mut next_random: u16 = 32768 + (std::process::id() % 20000) as u16;
    for s in specs {
        let host_port = if s.host_start == 0 {
            let mut found = None;
            for _ in 0..28232 {
                next_random = if next_random >= 60999 {
                    32768
                } else {
                    next_random + 1
                };
                if clash(&taken, s.host_ip, next_random, s.proto) {
                    continue;
                }
                if let Ok(fds) = reserve_host_port(s.host_ip, next_random, s.proto, v6) {
                    held.extend(fds);
                    found = Some(next_random);
                    break;
                }
            }
            found
                .ok_or_else(|| ContainerError::Conflict("no free host port to publish on".into()))?
        } else {
            let mut found = None;
            let mut why = String::new();
            for p in s.host_start..=s.host_end {
                if clash(&taken, s.host_ip, p, s.proto) {
                    why = "port is already allocated".into();
                    continue;
                }
                match reserve_host_port(s.host_ip, p, s.proto, v6) {
                    Ok(fds) => {
                        held.extend(fds);
                        found = Some(p);
                        break;
                    }
                    Err(e) => why = e.desc().to_lowercase(),
                }
            }
            let ip = s
                .host_ip
                .map(|a| a.to_string())
                .unwrap_or_else(|| "0.0.0.0".into());
            found.ok_or_else(|| {
                ContainerError::Conflict(format!("Bind for {ip}:{} failed: {why}", s.host_start))
            })?
        };
        // A v4 container gets no v6-only host address mapping.
        let ip = s.host_ip.map(|a| a.to_string()).unwrap_or_default();
        tx.execute(
            "INSERT INTO published_ports (container_id, host_ip, host_port, proto, container_port, target, target6)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                container_id,
                ip,
                host_port,
                s.proto.as_str(),
                s.container_port,
                target.to_string(),
                target6.map(|a| a.to_string())
            ],
        )
        .map_err(&e)?;
        taken.push((ip, host_port, s.proto.as_str().to_string()));
    }
    tx.commit().map_err(&e)?;
    Ok(held)
}

/// Undo [`setup`]: veths, namespace, leases, ports, DNS records, firewall.
/// Idempotent; safe from any process (monitor, `rm`, `refresh`).
pub fn teardown(db: &mut Db, paths: &Paths, container_id: &str) -> Result<()> {
    let _l = lock(paths)?;
    teardown_locked(db, paths, container_id)
}

/// The same for `rm` of a container that has stopped: the namespace is
/// let go and the kernel removes its veths as it destroys it, in the
/// background, instead of `rm` waiting for each deletion (a veth's
/// unregistration waits for RCU grace periods, several milliseconds). Its
/// monitor deletes them explicitly.
pub fn release(db: &mut Db, paths: &Paths, container_id: &str) -> Result<()> {
    let _l = lock(paths)?;
    teardown_inner(db, paths, container_id, false)
}

fn teardown_locked(db: &mut Db, paths: &Paths, container_id: &str) -> Result<()> {
    teardown_inner(db, paths, container_id, true)
}

fn teardown_inner(
    db: &mut Db,
    paths: &Paths,
    container_id: &str,
    delete_links: bool,
) -> Result<()> {
    let eps = endpoints_of(db, container_id)?;
    let leased: Vec<&EndpointRecord> = eps
        .iter()
        .filter(|e| e.ip.is_some() || e.ip6.is_some())
        .collect();
    let ns = netns_path(paths, container_id);
    let had_ports = !ports_of(db, container_id)?.is_empty();
    if leased.is_empty() && !ns.exists() && !had_ports {
        return Ok(());
    }
    let t0 = std::time::Instant::now();
    let mut first_err = None;
    match Netlink::open() {
        Ok(mut nl) => {
            leave_fast_path(db, &mut nl, &leased);
            if delete_links {
                let names: Vec<String> = eps.iter().map(|e| e.host_ifname()).collect();
                if let Err(e) = berth_net::detach(&mut nl, &names) {
                    first_err.get_or_insert(net_err(e));
                }
            }
        }
        Err(e) => {
            first_err.get_or_insert(net_err(e));
        }
    }
    tracing::debug!(elapsed = ?t0.elapsed(), "veths deleted");
    netns::remove(&ns);
    tracing::debug!(elapsed = ?t0.elapsed(), "namespace released");
    let conn = db.conn_ref();
    let r1 = conn.execute(
        "UPDATE endpoints SET ip = NULL, ip6 = NULL WHERE container_id = ?1",
        [container_id],
    );
    let r2 = conn.execute(
        "DELETE FROM published_ports WHERE container_id = ?1",
        [container_id],
    );
    for r in [r1, r2] {
        if let Err(e) = r {
            first_err.get_or_insert(sql(db)(e));
        }
    }
    if had_ports {
        if let Err(e) = sync_firewall(paths, db) {
            first_err.get_or_insert(e);
        }
    }
    for ep in &leased {
        if let Ok(Some(n)) = network_by_id(db, &ep.network_id) {
            if n.has_dns() {
                let _ = update_dns(paths, db, &n);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Teardown from the monitor, which knows its store by path only.
pub fn teardown_at(root: &Path, run_root: &Path, container_id: &str) -> Result<()> {
    let mut db = Db::open(root)?;
    let paths = Paths {
        root: root.to_path_buf(),
        run_root: run_root.to_path_buf(),
        monitor: PathBuf::new(),
        berth: Vec::new(),
    };
    teardown(&mut db, &paths, container_id)
}

/// `network connect`.
pub fn connect(
    images: &mut ImageStore,
    paths: &Paths,
    network: &str,
    container: &str,
    aliases: Vec<String>,
    ip: Option<String>,
) -> Result<()> {
    let rec = crate::containers::find(images, paths, container)?;
    let cfg = crate::containers::config_of(&rec)?;
    if matches!(
        cfg.network,
        NetworkMode::Host | NetworkMode::None | NetworkMode::Container(_)
    ) {
        return Err(ContainerError::Conflict(format!(
            "container {} is not on a bridge network (--network {}); it cannot be connected",
            rec.name,
            match cfg.network {
                NetworkMode::Host => "host".to_string(),
                NetworkMode::None => "none".to_string(),
                NetworkMode::Container(c) => format!("container:{c}"),
                _ => String::new(),
            }
        )));
    }
    let db = &mut images.db;
    let net = if network == DEFAULT {
        ensure_default(db, paths)?
    } else {
        find(db, network)?
    };
    let eps = endpoints_of(db, &rec.id)?;
    if eps.iter().any(|e| e.network_id == net.id) {
        return Err(ContainerError::Conflict(format!(
            "endpoint with name {} already exists in network {}",
            rec.name, net.name
        )));
    }
    let static_ip = ip
        .as_deref()
        .map(|s| parse_ip(s, "IP address"))
        .transpose()?;
    let idx = eps.iter().map(|e| e.idx + 1).max().unwrap_or(0);
    let ep = EndpointRecord {
        container_id: rec.id.clone(),
        network_id: net.id.clone(),
        idx,
        aliases,
        static_ip: static_ip.filter(|a| a.is_ipv4()),
        static_ip6: static_ip.filter(|a| a.is_ipv6()),
        ..Default::default()
    };
    insert_endpoint(db, &ep)?;
    if rec.state != crate::containers::state::RUNNING {
        return Ok(());
    }
    // Live: a lease and a veth into its namespace now.
    let _l = lock(paths)?;
    let res = (|| -> Result<()> {
        let leased = lease(db, &rec.id)?;
        let ep = leased
            .into_iter()
            .find(|e| e.network_id == net.id)
            .ok_or_else(|| not_found(&net.name))?;
        let ns_path = netns_path(paths, &rec.id);
        let ns = netns::open(&ns_path).map_err(net_err)?;
        let mut host = Netlink::open().map_err(net_err)?;
        let mtu = berth_net::host_mtu(&mut host);
        berth_net::ensure_bridge(
            &mut host,
            &BridgePlan {
                name: net.bridge.clone(),
                addrs: std::iter::once((net.gateway, net.subnet.prefix))
                    .chain(net.gateway6.zip(net.subnet6.map(|s| s.prefix)))
                    .collect(),
                mtu,
            },
        )
        .map_err(net_err)?;
        let plan = endpoint_plan(&ep, &net, mtu, false);
        let host_ns = File::open("/proc/self/ns/net").map_err(|e| ContainerError::Io {
            what: "opening",
            path: "/proc/self/ns/net".into(),
            source: e,
        })?;
        let hfd = host_ns.as_fd();
        netns::enter(ns.as_fd(), || {
            let mut inside = Netlink::open()?;
            berth_net::attach(&mut host, &mut inside, hfd, std::slice::from_ref(&plan))
        })
        .map_err(net_err)?;
        join_fast_path(&plan);
        sync_firewall(paths, db)?;
        if net.has_dns() {
            update_dns(paths, db, &net)?;
        }
        Ok(())
    })();
    if let Err(e) = res {
        if let Ok(mut nl) = Netlink::open() {
            let _ = nl.delete_link(&ep.host_ifname());
        }
        let _ = db.conn_ref().execute(
            "DELETE FROM endpoints WHERE container_id = ?1 AND network_id = ?2",
            params![rec.id, net.id],
        );
        return Err(e);
    }
    drop(_l);
    write_files(images, paths, &rec, &cfg)
}

/// `network disconnect`.
pub fn disconnect(
    images: &mut ImageStore,
    paths: &Paths,
    network: &str,
    container: &str,
) -> Result<()> {
    let rec = crate::containers::find(images, paths, container)?;
    let cfg = crate::containers::config_of(&rec)?;
    let db = &mut images.db;
    let net = find(db, network)?;
    let eps = endpoints_of(db, &rec.id)?;
    let Some(ep) = eps.into_iter().find(|e| e.network_id == net.id) else {
        return Err(ContainerError::Conflict(format!(
            "container {} is not connected to network {}",
            rec.name, net.name
        )));
    };
    let _l = lock(paths)?;
    if let Ok(mut nl) = Netlink::open() {
        leave_fast_path(db, &mut nl, &[&ep]);
        let _ = nl.delete_link(&ep.host_ifname());
    }
    db.conn_ref()
        .execute(
            "DELETE FROM endpoints WHERE container_id = ?1 AND network_id = ?2",
            params![rec.id, net.id],
        )
        .map_err(sql(db))?;
    sync_firewall(paths, db)?;
    if net.has_dns() {
        update_dns(paths, db, &net)?;
    }
    drop(_l);
    write_files(images, paths, &rec, &cfg)
}

// --- /etc/hosts, /etc/resolv.conf, DNS -------------------------------------

fn write_in_place(path: &Path, data: &[u8]) -> Result<()> {
    // In place: the file is bind-mounted into the running container, and
    // a rename would leave the container with the old one.
    std::fs::write(path, data).map_err(|e| ContainerError::Io {
        what: "writing",
        path: path.to_path_buf(),
        source: e,
    })
}

fn hostname_of(rec: &ContainerRecord, cfg: &ContainerConfig) -> String {
    cfg.hostname
        .clone()
        .unwrap_or_else(|| rec.id[..12.min(rec.id.len())].to_string())
}

/// The container's /etc/hosts and /etc/resolv.conf, from its network,
/// addresses and flags; written in place (kept current on connect and
/// disconnect).
pub fn write_files(
    images: &mut ImageStore,
    paths: &Paths,
    rec: &ContainerRecord,
    cfg: &ContainerConfig,
) -> Result<()> {
    // Not started since the host booted: the next start writes them.
    if !paths.run_dir(&rec.id).exists() {
        return Ok(());
    }
    write_hostname(paths, rec, cfg)?;
    let db = &mut images.db;
    let hostname = hostname_of(rec, cfg);
    let mut hosts = if cfg.network == NetworkMode::Host {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n".to_string()
    };
    let eps = endpoints_of(db, &rec.id)?;
    let mut dns_servers: Vec<IpAddr> = Vec::new();
    let mut gateway = None;
    for ep in &eps {
        let net = network_by_id(db, &ep.network_id)?;
        if let Some(ip) = ep.ip {
            hosts.push_str(&format!("{ip}\t{hostname}\n"));
        }
        if let Some(ip6) = ep.ip6 {
            hosts.push_str(&format!("{ip6}\t{hostname}\n"));
        }
        if let Some(n) = net {
            gateway.get_or_insert(n.gateway);
            if n.has_dns() && !dns_servers.contains(&n.gateway) {
                dns_servers.push(n.gateway);
            }
        }
    }
    for h in &cfg.net.extra_hosts {
        let (name, mut ip) = parse_extra_host(h)?;
        if ip.is_unspecified() {
            ip = gateway.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        }
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    write_in_place(&paths.etc_file(&rec.id, "hosts"), hosts.as_bytes())?;
    let resolv = resolv_conf(cfg, &dns_servers);
    write_in_place(&paths.etc_file(&rec.id, "resolv.conf"), resolv.as_bytes())
}

fn write_hostname(paths: &Paths, rec: &ContainerRecord, cfg: &ContainerConfig) -> Result<()> {
    let name = format!("{}\n", hostname_of(rec, cfg));
    write_in_place(&paths.etc_file(&rec.id, "hostname"), name.as_bytes())
}

fn resolv_conf(cfg: &ContainerConfig, embedded: &[IpAddr]) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if cfg.network == NetworkMode::Host
        && cfg.net.dns.is_empty()
        && cfg.net.dns_search.is_empty()
        && cfg.net.dns_options.is_empty()
    {
        return host;
    }
    let mut servers: Vec<String> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    for line in host.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                if let Some(a) = w.next() {
                    if !(a.starts_with("127.") || a == "::1") || cfg.network == NetworkMode::Host {
                        servers.push(a.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => search = w.map(String::from).collect(),
            Some("options") => options.extend(w.map(String::from)),
            _ => {}
        }
    }
    if !embedded.is_empty() {
        // The embedded DNS server answers, and forwards the rest.
        servers = embedded.iter().map(|a| a.to_string()).collect();
    } else if !cfg.net.dns.is_empty() {
        servers = cfg.net.dns.clone();
    } else if servers.is_empty() && cfg.network != NetworkMode::None {
        servers = vec!["8.8.8.8".into(), "8.8.4.4".into()];
    }
    if !cfg.net.dns_search.is_empty() {
        search = cfg.net.dns_search.clone();
    }
    if !cfg.net.dns_options.is_empty() {
        options = cfg.net.dns_options.clone();
    }
    let mut out = String::new();
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The host's resolvers the embedded DNS server forwards to (--dns of a
/// container on a user network goes there too).
fn upstreams(db: &Db, net_id: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for ep in endpoints_on(db, net_id).unwrap_or_default() {
        if let Ok(Some(c)) = db.container(&ep.container_id) {
            if let Ok(cfg) = crate::containers::config_of(&c) {
                for d in cfg.net.dns {
                    if !out.contains(&d) {
                        out.push(d);
                    }
                }
            }
        }
    }
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for line in host.lines() {
        let mut w = line.split_whitespace();
        if w.next() == Some("nameserver") {
            if let Some(a) = w.next() {
                if !out.iter().any(|x| x == a) {
                    out.push(a.to_string());
                }
            }
        }
    }
    out
}

/// Rewrite the network's DNS records (every running container on it by
/// name, short ID and aliases) and make sure its DNS server runs while
/// any container does.
fn update_dns(paths: &Paths, db: &mut Db, net: &NetworkRecord) -> Result<()> {
    let dir = net_run_dir(paths, &net.id);
    std::fs::create_dir_all(&dir).map_err(|e| ContainerError::Io {
        what: "creating",
        path: dir.clone(),
        source: e,
    })?;
    let mut records = berth_net::dns::Records::default();
    for ep in endpoints_on(db, &net.id)? {
        if ep.ip.is_none() && ep.ip6.is_none() {
            continue;
        }
        let Some(c) = db.container(&ep.container_id)? else {
            continue;
        };
        let addrs: Vec<IpAddr> = ep.ip.into_iter().chain(ep.ip6).collect();
        let mut names = vec![c.name.clone(), c.id[..12].to_string()];
        names.extend(ep.aliases.iter().cloned());
        if let Ok(cfg) = crate::containers::config_of(&c) {
            if let Some(h) = cfg.hostname {
                names.push(h);
            }
        }
        for n in names {
            records.add(&n, &addrs);
        }
    }
    let running = !records.is_empty();
    let conf = berth_net::dns::ServerConfig {
        listen: std::iter::once(net.gateway).chain(net.gateway6).collect(),
        upstreams: upstreams(db, &net.id),
        records,
    };
    berth_net::dns::write_config(&dir.join("dns.json"), &conf).map_err(net_err)?;
    if running {
        start_dns(paths, net, &dir)?;
    }
    Ok(())
}

fn start_dns(paths: &Paths, net: &NetworkRecord, dir: &Path) -> Result<()> {
    let pidfile = dir.join("dns.pid");
    if let Ok(p) = std::fs::read_to_string(&pidfile) {
        if let Ok(pid) = p.trim().parse::<i32>() {
            if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                if String::from_utf8_lossy(&cmd).contains(&net.id) {
                    return Ok(());
                }
            }
        }
    }
    if paths.berth.is_empty() {
        return Ok(());
    }
    let mut cmd = std::process::Command::new(&paths.berth[0]);
    cmd.args(&paths.berth[1..])
        .args(["network", "dns-serve", &net.id])
        .arg(dir.join("dns.json"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| ContainerError::Io {
        what: "starting the DNS server",
        path: PathBuf::from(&paths.berth[0]),
        source: e,
    })?;
    // It says when it listens (a line on stdout would need a pipe; the
    // pid file it writes is the sign).
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(2) {
        if pidfile.exists() {
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::mem::forget(child);
    Ok(())
}

fn stop_dns(paths: &Paths, net: &NetworkRecord) {
    let pidfile = net_run_dir(paths, &net.id).join("dns.pid");
    if let Ok(p) = std::fs::read_to_string(&pidfile) {
        if let Ok(pid) = p.trim().parse::<i32>() {
            if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                if String::from_utf8_lossy(&cmd).contains(&net.id) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
        }
    }
}

/// What `inspect` shows of a container's networks.
pub fn settings(db: &mut Db, container_id: &str) -> Result<Vec<(NetworkRecord, EndpointRecord)>> {
    let mut out = Vec::new();
    for ep in endpoints_of(db, container_id)? {
        if let Some(n) = network_by_id(db, &ep.network_id)? {
            out.push((n, ep));
        }
    }
    Ok(out)
}

/// Containers on a network (for `network inspect`): id, name, endpoint.
pub fn containers_on(db: &mut Db, net_id: &str) -> Result<Vec<(ContainerRecord, EndpointRecord)>> {
    let mut out = Vec::new();
    for ep in endpoints_on(db, net_id)? {
        if let Some(c) = db.container(&ep.container_id)? {
            out.push((c, ep));
        }
    }
    Ok(out)
}

/// Point the spec's network namespace at `path`.
pub fn set_netns(spec: &mut serde_json::Value, path: &Path) {
    if let Some(list) = spec["linux"]["namespaces"].as_array_mut() {
        for ns in list.iter_mut() {
            if ns["type"] == "network" {
                ns["path"] = serde_json::Value::String(path.display().to_string());
                return;
            }
        }
        list.push(serde_json::json!({"type": "network", "path": path.display().to_string()}));
    }
}
