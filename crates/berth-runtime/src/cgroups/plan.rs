//! `linux.resources` → the cgroup file writes that apply it.
//!
//! [`validate`] checks values without looking at the host. [`plan`] turns
//! resources into writes, choosing per controller between its cgroup v1
//! hierarchy and the cgroup2 tree from what [`Available`] says is there; it
//! is pure, so the v1, v2 and hybrid translations are tested without root.

use super::devices::{self, DeviceRule};
use super::CgroupError;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources, LinuxThrottleDevice};
use std::collections::BTreeSet;

/// Which tree a write goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tree {
    /// The v1 hierarchy that carries this controller.
    V1(&'static str),
    /// The container's cgroup2 directory.
    Unified,
}

/// One file write in the container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub tree: Tree,
    pub file: String,
    pub value: String,
    /// Tried instead when `file` does not exist (another I/O scheduler's
    /// file, say), with its own value.
    pub fallback: Option<(String, String)>,
    /// A missing file is a warning, not an error: the feature is not built
    /// into this kernel (swap accounting, RT group scheduling, …).
    pub optional: bool,
    /// When this write fails with EINVAL, perform the next write first and
    /// then retry this one. For pairs whose valid order depends on the
    /// current values (memory limit vs memory+swap, RT period vs runtime).
    pub next_first_on_einval: bool,
}

impl Write {
    fn new(tree: Tree, file: impl Into<String>, value: impl ToString) -> Write {
        Write {
            tree,
            file: file.into(),
            value: value.to_string(),
            fallback: None,
            optional: false,
            next_first_on_einval: false,
        }
    }

    fn optional(mut self) -> Write {
        self.optional = true;
        self
    }

    fn or_else(mut self, file: impl Into<String>, value: impl ToString) -> Write {
        self.fallback = Some((file.into(), value.to_string()));
        self
    }
}

/// What `apply` must do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub writes: Vec<Write>,
    /// Device rules to enforce with an eBPF program on the cgroup2
    /// directory (when there is no v1 devices hierarchy).
    pub device_program: Option<Vec<DeviceRule>>,
    /// Settings this host cannot apply; logged, not fatal.
    pub warnings: Vec<String>,
}

/// The controllers usable by the container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Available {
    /// Controllers on mounted v1 hierarchies.
    pub v1: BTreeSet<String>,
    /// Controllers in the container's cgroup2 `cgroup.controllers`; `None`
    /// when there is no cgroup2 tree at all.
    pub v2: Option<BTreeSet<String>>,
}

impl Available {
    /// A v1 host with every controller.
    pub fn all_v1() -> Available {
        let c = [
            "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory",
            "net_cls", "net_prio", "pids", "rdma",
        ];
        Available {
            v1: c.iter().map(|s| s.to_string()).collect(),
            v2: None,
        }
    }

    /// A v2 host with every controller.
    pub fn all_v2() -> Available {
        let c = [
            "cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma",
        ];
        Available {
            v1: BTreeSet::new(),
            v2: Some(c.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn side(&self, v1: &str, v2: &str) -> Option<Side> {
        if self.v1.contains(v1) {
            Some(Side::V1)
        } else if self.v2.as_ref().is_some_and(|s| s.contains(v2)) {
            Some(Side::V2)
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    V1,
    V2,
}

const PREFIX: &str = "linux.resources";

fn invalid(field: &str, msg: impl Into<String>) -> CgroupError {
    CgroupError::invalid(format!("{PREFIX}.{field}"), msg)
}

/// cgroup v1 `cpu.shares` → cgroup v2 `cpu.weight`: maps [2, 262144] onto
/// [1, 10000] linearly (the conversion runc, crun and systemd agree on).
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// blkio weight [10, 1000] → io.weight [1, 10000].
pub fn blkio_weight_to_io_weight(w: u16) -> u64 {
    let w = u64::from(w.clamp(10, 1000));
    1 + ((w - 10) * 9999) / 990
}

/// cgroup v2 `memory.swap.max` from the spec's memory+swap total:
/// swap only = total - memory. `Ok(None)` = leave unchanged.
pub fn v2_swap_max(limit: Option<i64>, swap: Option<i64>) -> Result<Option<String>, String> {
    let limit = limit.unwrap_or(0);
    match swap.unwrap_or(0) {
        // Unlimited memory with no swap setting: unlimited swap too, as on v1.
        0 if limit == -1 => Ok(Some("max".into())),
        0 => Ok(None),
        -1 => Ok(Some("max".into())),
        s if limit <= 0 => Err(format!("{s}: a swap limit needs a memory limit")),
        s if s < limit => Err(format!(
            "{s} is below the memory limit {limit} (swap is the memory+swap total)"
        )),
        s => Ok(Some((s - limit).to_string())),
    }
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// Check a cpuset list ("0-3,8,10-15", "0-7:2/4"). Empty means unset.
pub fn check_cpuset_list(s: &str) -> Result<(), String> {
    let num = |t: &str| -> Result<u32, String> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?}: {t:?} is not a number"));
        }
        t.parse::<u32>()
            .map_err(|_| format!("{s:?}: {t:?} is too large"))
    };
    let s = s.trim();
    if s.is_empty() {
        return Ok(());
    }
    for item in s.split(',') {
        let (range, stride) = match item.split_once(':') {
            Some((r, st)) => (r, Some(st)),
            None => (item, None),
        };
        match range.split_once('-') {
            Some((a, b)) => {
                if num(a)? > num(b)? {
                    return Err(format!("{s:?}: range {range:?} is backwards"));
                }
            }
            None => {
                num(range)?;
            }
        }
        if let Some(st) = stride {
            let (used, group) = st
                .split_once('/')
                .ok_or_else(|| format!("{s:?}: {item:?}: expected range:used/group"))?;
            if num(used)? == 0 || num(group)? == 0 {
                return Err(format!("{s:?}: {item:?}: zero in range:used/group"));
            }
        }
    }
    Ok(())
}

/// "2MB", "64KB", "1GB": the hugetlb page-size names the kernel uses.
pub fn check_page_size(s: &str) -> Result<(), String> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || !["KB", "MB", "GB"].contains(&unit)
    {
        return Err(format!("{s:?} is not a page size like \"2MB\" or \"1GB\""));
    }
    Ok(())
}

/// A file name for linux.resources.unified: "<controller>.<setting>".
fn check_unified_key(k: &str) -> Result<(), String> {
    if k.is_empty()
        || k == "."
        || k == ".."
        || k.contains('/')
        || k.contains(char::is_whitespace)
        || k.contains('\0')
    {
        return Err(format!("{k:?} is not a cgroup file name"));
    }
    if !k.contains('.') {
        return Err(format!(
            "{k:?} is not a cgroup file name (expected controller.setting)"
        ));
    }
    if [
        "cgroup.procs",
        "cgroup.threads",
        "cgroup.subtree_control",
        "cgroup.kill",
        "cgroup.freeze",
    ]
    .contains(&k)
    {
        return Err(format!("{k:?} is managed by the runtime"));
    }
    Ok(())
}

#[allow(deprecated)] // `kernel` is deprecated in the spec; it is still checked.
fn validate_memory(m: &LinuxMemory) -> Result<(), CgroupError> {
    let at_least_minus_one = |field: &str, v: Option<i64>| match v {
        Some(v) if v < -1 => Err(invalid(
            field,
            format!("{v} is negative (use -1 for no limit)"),
        )),
        _ => Ok(()),
    };
    at_least_minus_one("memory.limit", m.limit())?;
    at_least_minus_one("memory.reservation", m.reservation())?;
    at_least_minus_one("memory.swap", m.swap())?;
    at_least_minus_one("memory.kernel", m.kernel())?;
    at_least_minus_one("memory.kernelTCP", m.kernel_tcp())?;
    if let Some(l) = m.limit() {
        if l > 0 && l < 4096 {
            return Err(invalid(
                "memory.limit",
                format!("{l} bytes is below the minimum of 4096"),
            ));
        }
    }
    if m.swap().unwrap_or(0) > 0 {
        v2_swap_max(m.limit(), m.swap()).map_err(|e| invalid("memory.swap", e))?;
    }
    if let Some(s) = m.swappiness() {
        if s > 100 && s != u64::MAX {
            return Err(invalid("memory.swappiness", format!("{s} is above 100")));
        }
    }
    Ok(())
}

fn validate_cpu(c: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(s) = c.shares() {
        if s != 0 && !(2..=262_144).contains(&s) {
            return Err(invalid("cpu.shares", format!("{s} is outside 2-262144")));
        }
    }
    if let Some(p) = c.period() {
        if p != 0 && !(1000..=1_000_000).contains(&p) {
            return Err(invalid(
                "cpu.period",
                format!("{p} µs is outside 1000-1000000"),
            ));
        }
    }
    if let Some(q) = c.quota() {
        if q < -1 {
            return Err(invalid(
                "cpu.quota",
                format!("{q} is negative (use -1 for no limit)"),
            ));
        }
        if q > 0 && q < 1000 {
            return Err(invalid(
                "cpu.quota",
                format!("{q} µs is below the minimum of 1000"),
            ));
        }
    }
    if let Some(r) = c.realtime_runtime() {
        if r < -1 {
            return Err(invalid(
                "cpu.realtimeRuntime",
                format!("{r} is negative (use -1 for no limit)"),
            ));
        }
        if let Some(p) = c.realtime_period() {
            if r > 0 && p > 0 && r as u64 > p {
                return Err(invalid(
                    "cpu.realtimeRuntime",
                    format!("{r} µs is longer than cpu.realtimePeriod {p} µs"),
                ));
            }
        }
    }
    if let Some(i) = c.idle() {
        if i != 0 && i != 1 {
            return Err(invalid("cpu.idle", format!("{i} is neither 0 nor 1")));
        }
    }
    if let Some(s) = c.cpus() {
        check_cpuset_list(s).map_err(|e| invalid("cpu.cpus", e))?;
    }
    if let Some(s) = c.mems() {
        check_cpuset_list(s).map_err(|e| invalid("cpu.mems", e))?;
    }
    Ok(())
}

fn validate_blkio(b: &LinuxBlockIo) -> Result<(), CgroupError> {
    let weight = |field: &str, w: Option<u16>| match w {
        Some(w) if w != 0 && !(10..=1000).contains(&w) => {
            Err(invalid(field, format!("{w} is outside 10-1000")))
        }
        _ => Ok(()),
    };
    weight("blockIO.weight", b.weight())?;
    weight("blockIO.leafWeight", b.leaf_weight())?;
    let dev = |field: String, major: i64, minor: i64| {
        if major < 0 || minor < 0 {
            Err(invalid(
                &field,
                format!("{major}:{minor} is not a device number"),
            ))
        } else {
            Ok(())
        }
    };
    for (i, d) in b.weight_device().iter().flatten().enumerate() {
        dev(format!("blockIO.weightDevice[{i}]"), d.major(), d.minor())?;
        weight(&format!("blockIO.weightDevice[{i}].weight"), d.weight())?;
        weight(
            &format!("blockIO.weightDevice[{i}].leafWeight"),
            d.leaf_weight(),
        )?;
    }
    for (name, list) in throttles(b) {
        for (i, d) in list.iter().enumerate() {
            dev(format!("blockIO.{name}[{i}]"), d.major(), d.minor())?;
        }
    }
    Ok(())
}

fn throttles(b: &LinuxBlockIo) -> [(&'static str, &[LinuxThrottleDevice]); 4] {
    fn l(o: &Option<Vec<LinuxThrottleDevice>>) -> &[LinuxThrottleDevice] {
        o.as_deref().unwrap_or(&[])
    }
    [
        ("throttleReadBpsDevice", l(b.throttle_read_bps_device())),
        ("throttleWriteBpsDevice", l(b.throttle_write_bps_device())),
        ("throttleReadIOPSDevice", l(b.throttle_read_iops_device())),
        ("throttleWriteIOPSDevice", l(b.throttle_write_iops_device())),
    ]
}

/// Check resource values without touching the host.
pub fn validate(res: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(m) = res.memory() {
        validate_memory(m)?;
    }
    if let Some(c) = res.cpu() {
        validate_cpu(c)?;
    }
    if let Some(b) = res.block_io() {
        validate_blkio(b)?;
    }
    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        check_page_size(h.page_size())
            .map_err(|e| invalid(&format!("hugepageLimits[{i}].pageSize"), e))?;
        if h.limit() < -1 {
            return Err(invalid(
                &format!("hugepageLimits[{i}].limit"),
                format!("{} is negative (use -1 for no limit)", h.limit()),
            ));
        }
    }
    if let Some(n) = res.network() {
        for (i, p) in n.priorities().iter().flatten().enumerate() {
            if p.name().is_empty()
                || p.name().contains(char::is_whitespace)
                || p.name().contains('/')
            {
                return Err(invalid(
                    &format!("network.priorities[{i}].name"),
                    format!("{:?} is not an interface name", p.name()),
                ));
            }
        }
    }
    if let Some(d) = res.devices() {
        devices::rules_from_spec(d, &mut Vec::new())?;
    }
    if let Some(u) = res.unified() {
        for (k, v) in u {
            check_unified_key(k).map_err(|e| invalid("unified", e))?;
            if v.contains('\0') {
                return Err(invalid(
                    &format!("unified[{k:?}]"),
                    "the value contains a NUL byte",
                ));
            }
        }
    }
    Ok(())
}

/// Turn resources into writes for the controllers in `avail`. Expects
/// [`validate`]d input (it re-checks what it relies on). Device rules get
/// the default devices appended (see [`devices::default_allowed_devices`]).
pub fn plan(res: &LinuxResources, avail: &Available) -> Result<Plan, CgroupError> {
    let mut p = Plan::default();
    if let Some(c) = res.cpu() {
        plan_cpuset(&mut p, c, avail);
    }
    if let Some(m) = res.memory() {
        plan_memory(&mut p, m, avail)?;
    }
    if let Some(c) = res.cpu() {
        plan_cpu(&mut p, c, avail);
    }
    if let Some(pids) = res.pids() {
        let v = max_or(if pids.limit() == 0 { -1 } else { pids.limit() });
        match avail.side("pids", "pids") {
            Some(Side::V1) => p.writes.push(Write::new(Tree::V1("pids"), "pids.max", v)),
            Some(Side::V2) => p.writes.push(Write::new(Tree::Unified, "pids.max", v)),
            None => p
                .warnings
                .push("no pids controller on this host: linux.resources.pids ignored".into()),
        }
    }
    if let Some(b) = res.block_io() {
        plan_blkio(&mut p, b, avail);
    }
    for h in res.hugepage_limits().iter().flatten() {
        let size = h.page_size();
        match avail.side("hugetlb", "hugetlb") {
            Some(Side::V1) => p.writes.push(Write::new(
                Tree::V1("hugetlb"),
                format!("hugetlb.{size}.limit_in_bytes"),
                h.limit(),
            )),
            Some(Side::V2) => p.writes.push(Write::new(
                Tree::Unified,
                format!("hugetlb.{size}.max"),
                max_or(h.limit()),
            )),
            None => p.warnings.push(format!(
                "no hugetlb controller on this host: hugepage limit for {size} ignored"
            )),
        }
    }
    if let Some(rdma) = res.rdma() {
        let mut devs: Vec<_> = rdma.iter().collect();
        devs.sort_by(|a, b| a.0.cmp(b.0));
        for (dev, r) in devs {
            let n = |v: Option<u32>| v.map_or_else(|| "max".to_string(), |v| v.to_string());
            let v = format!(
                "{dev} hca_handle={} hca_object={}",
                n(r.hca_handles()),
                n(r.hca_objects())
            );
            match avail.side("rdma", "rdma") {
                Some(Side::V1) => p.writes.push(Write::new(Tree::V1("rdma"), "rdma.max", v)),
                Some(Side::V2) => p.writes.push(Write::new(Tree::Unified, "rdma.max", v)),
                None => p.warnings.push(format!(
                    "no rdma controller on this host: limit for {dev} ignored"
                )),
            }
        }
    }
    if let Some(n) = res.network() {
        if let Some(id) = n.class_id() {
            if avail.v1.contains("net_cls") {
                p.writes
                    .push(Write::new(Tree::V1("net_cls"), "net_cls.classid", id));
            } else {
                p.warnings.push(
                    "no net_cls controller on this host: linux.resources.network.classID ignored"
                        .into(),
                );
            }
        }
        for prio in n.priorities().iter().flatten() {
            if avail.v1.contains("net_prio") {
                p.writes.push(Write::new(
                    Tree::V1("net_prio"),
                    "net_prio.ifpriomap",
                    format!("{} {}", prio.name(), prio.priority()),
                ));
            } else {
                p.warnings.push(format!(
                    "no net_prio controller on this host: priority for {} ignored",
                    prio.name()
                ));
            }
        }
    }
    if let Some(spec) = res.devices() {
        let mut rules = devices::rules_from_spec(spec, &mut p.warnings)?;
        rules.extend(devices::default_allowed_devices());
        if avail.v1.contains("devices") {
            for (file, v) in devices::v1_writes(&rules) {
                p.writes.push(Write::new(Tree::V1("devices"), file, v));
            }
        } else if avail.v2.is_some() {
            p.device_program = Some(rules);
        } else {
            p.warnings
                .push("no device controller on this host: linux.resources.devices ignored".into());
        }
    }
    if let Some(u) = res.unified() {
        let mut keys: Vec<_> = u.iter().collect();
        keys.sort();
        for (k, v) in keys {
            let Some(v2) = &avail.v2 else {
                return Err(invalid(
                    "unified",
                    format!("{k:?}: this is a cgroup v1 host (no cgroup2 mounted)"),
                ));
            };
            let controller = k.split('.').next().unwrap_or(k);
            if controller != "cgroup" && !v2.contains(controller) {
                return Err(invalid(
                    "unified",
                    format!("{k:?}: the {controller} controller is not available on cgroup v2 on this host"),
                ));
            }
            p.writes.push(Write::new(Tree::Unified, k.clone(), v));
        }
    }
    Ok(p)
}

fn plan_cpuset(p: &mut Plan, c: &LinuxCpu, avail: &Available) {
    let cpus = c.cpus().as_deref().filter(|s| !s.trim().is_empty());
    let mems = c.mems().as_deref().filter(|s| !s.trim().is_empty());
    if cpus.is_none() && mems.is_none() {
        return;
    }
    let tree = match avail.side("cpuset", "cpuset") {
        Some(Side::V1) => Tree::V1("cpuset"),
        Some(Side::V2) => Tree::Unified,
        None => {
            p.warnings
                .push("no cpuset controller on this host: cpu.cpus and cpu.mems ignored".into());
            return;
        }
    };
    if let Some(s) = cpus {
        p.writes
            .push(Write::new(tree.clone(), "cpuset.cpus", s.trim()));
    }
    if let Some(s) = mems {
        p.writes.push(Write::new(tree, "cpuset.mems", s.trim()));
    }
}

#[allow(deprecated)] // `kernel` is deprecated in the spec; v1 still applies it.
fn plan_memory(p: &mut Plan, m: &LinuxMemory, avail: &Available) -> Result<(), CgroupError> {
    if *m == LinuxMemory::default() {
        return Ok(());
    }
    let limit = m.limit().filter(|&l| l != 0);
    match avail.side("memory", "memory") {
        Some(Side::V1) => {
            let t = || Tree::V1("memory");
            // memory+swap: as given; unlimited memory without a swap setting
            // also lifts memory+swap, or the kernel would refuse the limit.
            let memsw = match (limit, m.swap().filter(|&s| s != 0)) {
                (_, Some(s)) => Some(s),
                (Some(-1), None) => Some(-1),
                _ => None,
            };
            if let Some(l) = limit {
                let mut w = Write::new(t(), "memory.limit_in_bytes", l);
                w.next_first_on_einval = memsw.is_some();
                p.writes.push(w);
            }
            if let Some(s) = memsw {
                p.writes
                    .push(Write::new(t(), "memory.memsw.limit_in_bytes", s).optional());
            }
            if let Some(r) = m.reservation().filter(|&r| r != 0) {
                p.writes
                    .push(Write::new(t(), "memory.soft_limit_in_bytes", r));
            }
            if let Some(k) = m.kernel().filter(|&k| k != 0) {
                p.writes
                    .push(Write::new(t(), "memory.kmem.limit_in_bytes", k).optional());
            }
            if let Some(k) = m.kernel_tcp().filter(|&k| k != 0) {
                p.writes
                    .push(Write::new(t(), "memory.kmem.tcp.limit_in_bytes", k).optional());
            }
            if let Some(s) = m.swappiness().filter(|&s| s <= 100) {
                p.writes
                    .push(Write::new(t(), "memory.swappiness", s).optional());
            }
            if let Some(d) = m.disable_oom_killer() {
                p.writes
                    .push(Write::new(t(), "memory.oom_control", u8::from(d)));
            }
        }
        Some(Side::V2) => {
            if let Some(l) = limit {
                p.writes
                    .push(Write::new(Tree::Unified, "memory.max", max_or(l)));
            }
            if let Some(r) = m.reservation().filter(|&r| r != 0) {
                p.writes
                    .push(Write::new(Tree::Unified, "memory.low", max_or(r)));
            }
            match v2_swap_max(limit, m.swap()) {
                Ok(Some(v)) => p
                    .writes
                    .push(Write::new(Tree::Unified, "memory.swap.max", v).optional()),
                Ok(None) => {}
                Err(e) => return Err(invalid("memory.swap", e)),
            }
            if m.kernel().is_some_and(|k| k != 0) || m.kernel_tcp().is_some_and(|k| k != 0) {
                p.warnings
                    .push("cgroup v2 has no kernel memory limits: memory.kernel and memory.kernelTCP ignored".into());
            }
            if m.swappiness().is_some_and(|s| s <= 100) {
                p.warnings.push(
                    "cgroup v2 has no per-cgroup swappiness: memory.swappiness ignored".into(),
                );
            }
            if m.disable_oom_killer() == Some(true) {
                p.warnings.push(
                    "cgroup v2 cannot disable the OOM killer: memory.disableOOMKiller ignored"
                        .into(),
                );
            }
        }
        None => p
            .warnings
            .push("no memory controller on this host: linux.resources.memory ignored".into()),
    }
    Ok(())
}

fn plan_cpu(p: &mut Plan, c: &LinuxCpu, avail: &Available) {
    let shares = c.shares().filter(|&s| s != 0);
    let quota = c.quota().filter(|&q| q != 0);
    let period = c.period().filter(|&q| q != 0);
    let rt_period = c.realtime_period().filter(|&q| q != 0);
    let rt_runtime = c.realtime_runtime().filter(|&q| q != 0);
    let any = shares.is_some()
        || quota.is_some()
        || period.is_some()
        || c.burst().is_some()
        || rt_period.is_some()
        || rt_runtime.is_some()
        || c.idle().is_some();
    if !any {
        return;
    }
    match avail.side("cpu", "cpu") {
        Some(Side::V1) => {
            let t = || Tree::V1("cpu");
            if let Some(s) = shares {
                p.writes.push(Write::new(t(), "cpu.shares", s));
            }
            if let Some(pd) = period {
                let mut w = Write::new(t(), "cpu.cfs_period_us", pd);
                w.next_first_on_einval = quota.is_some();
                p.writes.push(w);
            }
            if let Some(q) = quota {
                p.writes.push(Write::new(t(), "cpu.cfs_quota_us", q));
            }
            if let Some(b) = c.burst() {
                p.writes
                    .push(Write::new(t(), "cpu.cfs_burst_us", b).optional());
            }
            if let Some(pd) = rt_period {
                let mut w = Write::new(t(), "cpu.rt_period_us", pd).optional();
                w.next_first_on_einval = rt_runtime.is_some();
                p.writes.push(w);
            }
            if let Some(r) = rt_runtime {
                p.writes
                    .push(Write::new(t(), "cpu.rt_runtime_us", r).optional());
            }
            if let Some(i) = c.idle() {
                p.writes.push(Write::new(t(), "cpu.idle", i).optional());
            }
        }
        Some(Side::V2) => {
            if let Some(s) = shares {
                p.writes
                    .push(Write::new(Tree::Unified, "cpu.weight", shares_to_weight(s)));
            }
            if quota.is_some() || period.is_some() {
                let q = quota
                    .filter(|&q| q > 0)
                    .map_or_else(|| "max".to_string(), |q| q.to_string());
                let v = match period {
                    Some(pd) => format!("{q} {pd}"),
                    None => q,
                };
                p.writes.push(Write::new(Tree::Unified, "cpu.max", v));
            }
            if let Some(b) = c.burst() {
                p.writes
                    .push(Write::new(Tree::Unified, "cpu.max.burst", b).optional());
            }
            if rt_period.is_some() || rt_runtime.is_some() {
                p.warnings.push(
                    "cgroup v2 has no realtime group scheduling: cpu.realtimePeriod and cpu.realtimeRuntime ignored"
                        .into(),
                );
            }
            if let Some(i) = c.idle() {
                p.writes
                    .push(Write::new(Tree::Unified, "cpu.idle", i).optional());
            }
        }
        None => p
            .warnings
            .push("no cpu controller on this host: cpu limits ignored".into()),
    }
}

fn plan_blkio(p: &mut Plan, b: &LinuxBlockIo, avail: &Available) {
    if *b == LinuxBlockIo::default() {
        return;
    }
    let weight = b.weight().filter(|&w| w != 0);
    let leaf = b.leaf_weight().filter(|&w| w != 0);
    match avail.side("blkio", "io") {
        Some(Side::V1) => {
            let t = || Tree::V1("blkio");
            if let Some(w) = weight {
                p.writes.push(
                    Write::new(t(), "blkio.weight", w)
                        .or_else("blkio.bfq.weight", w)
                        .optional(),
                );
            }
            if let Some(w) = leaf {
                p.writes
                    .push(Write::new(t(), "blkio.leaf_weight", w).optional());
            }
            for d in b.weight_device().iter().flatten() {
                let dev = format!("{}:{}", d.major(), d.minor());
                if let Some(w) = d.weight().filter(|&w| w != 0) {
                    let v = format!("{dev} {w}");
                    p.writes.push(
                        Write::new(t(), "blkio.weight_device", &v)
                            .or_else("blkio.bfq.weight_device", &v)
                            .optional(),
                    );
                }
                if let Some(w) = d.leaf_weight().filter(|&w| w != 0) {
                    p.writes.push(
                        Write::new(t(), "blkio.leaf_weight_device", format!("{dev} {w}"))
                            .optional(),
                    );
                }
            }
            let files = [
                "blkio.throttle.read_bps_device",
                "blkio.throttle.write_bps_device",
                "blkio.throttle.read_iops_device",
                "blkio.throttle.write_iops_device",
            ];
            for ((_, list), file) in throttles(b).into_iter().zip(files) {
                for d in list {
                    p.writes.push(Write::new(
                        t(),
                        file,
                        format!("{}:{} {}", d.major(), d.minor(), d.rate()),
                    ));
                }
            }
        }
        Some(Side::V2) => {
            let t = || Tree::Unified;
            if let Some(w) = weight {
                p.writes.push(
                    Write::new(t(), "io.bfq.weight", w)
                        .or_else("io.weight", blkio_weight_to_io_weight(w))
                        .optional(),
                );
            }
            if leaf.is_some()
                || b.weight_device()
                    .iter()
                    .flatten()
                    .any(|d| d.leaf_weight().is_some())
            {
                p.warnings
                    .push("cgroup v2 has no leaf weights: blockIO leafWeight ignored".into());
            }
            for d in b.weight_device().iter().flatten() {
                if let Some(w) = d.weight().filter(|&w| w != 0) {
                    let dev = format!("{}:{}", d.major(), d.minor());
                    p.writes.push(
                        Write::new(t(), "io.bfq.weight", format!("{dev} {w}"))
                            .or_else(
                                "io.weight",
                                format!("{dev} {}", blkio_weight_to_io_weight(w)),
                            )
                            .optional(),
                    );
                }
            }
            for ((_, list), key) in throttles(b)
                .into_iter()
                .zip(["rbps", "wbps", "riops", "wiops"])
            {
                for d in list {
                    let rate = if d.rate() == 0 {
                        "max".to_string()
                    } else {
                        d.rate().to_string()
                    };
                    p.writes.push(Write::new(
                        t(),
                        "io.max",
                        format!("{}:{} {key}={rate}", d.major(), d.minor()),
                    ));
                }
            }
        }
        None => p
            .warnings
            .push("no blkio/io controller on this host: linux.resources.blockIO ignored".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
        LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
        LinuxThrottleDeviceBuilder, LinuxWeightDeviceBuilder,
    };

    fn files(p: &Plan) -> Vec<(Tree, &str, &str)> {
        p.writes
            .iter()
            .map(|w| (w.tree.clone(), w.file.as_str(), w.value.as_str()))
            .collect()
    }

    fn res_json(json: &str) -> LinuxResources {
        serde_json::from_str(json).expect("resources json")
    }

    #[test]
    fn weight_conversions() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
    }

    #[test]
    fn swap_semantics_v2() {
        let mb = 1 << 20;
        assert_eq!(
            v2_swap_max(Some(100 * mb), Some(300 * mb)),
            Ok(Some((200 * mb).to_string()))
        );
        assert_eq!(
            v2_swap_max(Some(100 * mb), Some(100 * mb)),
            Ok(Some("0".into()))
        );
        assert_eq!(
            v2_swap_max(Some(100 * mb), Some(-1)),
            Ok(Some("max".into()))
        );
        assert_eq!(v2_swap_max(Some(-1), None), Ok(Some("max".into())));
        assert_eq!(v2_swap_max(Some(100 * mb), None), Ok(None));
        assert!(v2_swap_max(None, Some(mb)).is_err());
        assert!(v2_swap_max(Some(2 * mb), Some(mb)).is_err());
    }

    fn sample() -> LinuxResources {
        LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .swap(128i64 << 20)
                    .reservation(32i64 << 20)
                    .swappiness(10u64)
                    .build()
                    .expect("memory"),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .cpus("0-1")
                    .mems("0")
                    .build()
                    .expect("cpu"),
            )
            .pids(
                LinuxPidsBuilder::default()
                    .limit(42i64)
                    .build()
                    .expect("pids"),
            )
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(500u16)
                    .weight_device(vec![LinuxWeightDeviceBuilder::default()
                        .major(8i64)
                        .minor(0i64)
                        .weight(300u16)
                        .build()
                        .expect("wd")])
                    .throttle_read_bps_device(vec![LinuxThrottleDeviceBuilder::default()
                        .major(8i64)
                        .minor(0i64)
                        .rate(1_048_576u64)
                        .build()
                        .expect("td")])
                    .build()
                    .expect("blkio"),
            )
            .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(4i64 << 20)
                .build()
                .expect("huge")])
            .build()
            .expect("resources")
    }

    #[test]
    fn plan_v1() {
        let p = plan(&sample(), &Available::all_v1()).expect("plan");
        use Tree::V1;
        assert_eq!(
            files(&p),
            vec![
                (V1("cpuset"), "cpuset.cpus", "0-1"),
                (V1("cpuset"), "cpuset.mems", "0"),
                (V1("memory"), "memory.limit_in_bytes", "67108864"),
                (V1("memory"), "memory.memsw.limit_in_bytes", "134217728"),
                (V1("memory"), "memory.soft_limit_in_bytes", "33554432"),
                (V1("memory"), "memory.swappiness", "10"),
                (V1("cpu"), "cpu.shares", "512"),
                (V1("cpu"), "cpu.cfs_period_us", "100000"),
                (V1("cpu"), "cpu.cfs_quota_us", "50000"),
                (V1("pids"), "pids.max", "42"),
                (V1("blkio"), "blkio.weight", "500"),
                (V1("blkio"), "blkio.weight_device", "8:0 300"),
                (V1("blkio"), "blkio.throttle.read_bps_device", "8:0 1048576"),
                (V1("hugetlb"), "hugetlb.2MB.limit_in_bytes", "4194304"),
            ]
        );
        assert!(p.writes[2].next_first_on_einval, "limit/memsw order retry");
        assert!(p.writes[3].optional);
        assert_eq!(
            p.writes[10].fallback,
            Some(("blkio.bfq.weight".into(), "500".into()))
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(p.device_program.is_none());
    }

    #[test]
    fn plan_v2() {
        let p = plan(&sample(), &Available::all_v2()).expect("plan");
        use Tree::Unified as U;
        assert_eq!(
            files(&p),
            vec![
                (U, "cpuset.cpus", "0-1"),
                (U, "cpuset.mems", "0"),
                (U, "memory.max", "67108864"),
                (U, "memory.low", "33554432"),
                (U, "memory.swap.max", "67108864"),
                (U, "cpu.weight", "20"),
                (U, "cpu.max", "50000 100000"),
                (U, "pids.max", "42"),
                (U, "io.bfq.weight", "500"),
                (U, "io.bfq.weight", "8:0 300"),
                (U, "io.max", "8:0 rbps=1048576"),
                (U, "hugetlb.2MB.max", "4194304"),
            ]
        );
        assert_eq!(
            p.writes[8].fallback,
            Some(("io.weight".into(), "4950".into()))
        );
        assert_eq!(
            p.writes[9].fallback,
            Some(("io.weight".into(), "8:0 2930".into()))
        );
        assert_eq!(p.warnings.len(), 1, "swappiness: {:?}", p.warnings);
    }

    #[test]
    fn cpu_max_forms() {
        let v2 = Available::all_v2();
        let one = |json: &str| {
            let p = plan(&res_json(json), &v2).expect("plan");
            p.writes
                .iter()
                .find(|w| w.file == "cpu.max")
                .map(|w| w.value.clone())
        };
        assert_eq!(one(r#"{"cpu":{"quota":-1}}"#).as_deref(), Some("max"));
        assert_eq!(
            one(r#"{"cpu":{"quota":-1,"period":50000}}"#).as_deref(),
            Some("max 50000")
        );
        assert_eq!(one(r#"{"cpu":{"quota":20000}}"#).as_deref(), Some("20000"));
        assert_eq!(one(r#"{"cpu":{"shares":1024}}"#), None);
    }

    #[test]
    fn unlimited_memory_lifts_swap() {
        let r = res_json(r#"{"memory":{"limit":-1}}"#);
        let p = plan(&r, &Available::all_v1()).expect("v1");
        assert_eq!(
            files(&p),
            vec![
                (Tree::V1("memory"), "memory.limit_in_bytes", "-1"),
                (Tree::V1("memory"), "memory.memsw.limit_in_bytes", "-1")
            ]
        );
        let p = plan(&r, &Available::all_v2()).expect("v2");
        assert_eq!(
            files(&p),
            vec![
                (Tree::Unified, "memory.max", "max"),
                (Tree::Unified, "memory.swap.max", "max")
            ]
        );
        let p = plan(&res_json(r#"{"pids":{"limit":-1}}"#), &Available::all_v2()).expect("pids");
        assert_eq!(files(&p), vec![(Tree::Unified, "pids.max", "max")]);
    }

    #[test]
    fn hybrid_puts_hugetlb_on_the_unified_tree() {
        // This machine: v1 controllers but no v1 hugetlb; cgroup2 has hugetlb.
        let mut avail = Available::all_v1();
        avail.v1.remove("hugetlb");
        avail.v2 = Some(["hugetlb".to_string()].into_iter().collect());
        let p = plan(&sample(), &avail).expect("plan");
        let huge: Vec<_> = files(&p)
            .into_iter()
            .filter(|w| w.1.starts_with("hugetlb"))
            .collect();
        assert_eq!(huge, vec![(Tree::Unified, "hugetlb.2MB.max", "4194304")]);
        // Without cgroup2 either: a warning, no write.
        avail.v2 = None;
        let p = plan(&sample(), &avail).expect("plan");
        assert!(p.writes.iter().all(|w| !w.file.starts_with("hugetlb")));
        assert!(
            p.warnings.iter().any(|w| w.contains("hugetlb")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn kernel_memory_is_ignored_on_v2() {
        let r = res_json(
            r#"{"memory":{"limit":1048576,"kernel":1048576,"kernelTCP":1048576,"disableOOMKiller":true}}"#,
        );
        let p = plan(&r, &Available::all_v2()).expect("plan");
        assert_eq!(files(&p), vec![(Tree::Unified, "memory.max", "1048576")]);
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        let p = plan(&r, &Available::all_v1()).expect("plan");
        let f: Vec<_> = p.writes.iter().map(|w| w.file.as_str()).collect();
        assert_eq!(
            f,
            [
                "memory.limit_in_bytes",
                "memory.kmem.limit_in_bytes",
                "memory.kmem.tcp.limit_in_bytes",
                "memory.oom_control"
            ]
        );
    }

    #[test]
    fn devices_v1_writes_and_v2_program() {
        let r = LinuxResourcesBuilder::default()
            .devices(vec![
                LinuxDeviceCgroupBuilder::default()
                    .allow(false)
                    .access("rwm")
                    .build()
                    .expect("d"),
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(LinuxDeviceType::C)
                    .major(10i64)
                    .minor(200i64)
                    .access("rwm")
                    .build()
                    .expect("d"),
            ])
            .build()
            .expect("r");
        let p = plan(&r, &Available::all_v1()).expect("v1");
        let f: Vec<_> = p
            .writes
            .iter()
            .map(|w| format!("{} {}", w.file, w.value))
            .collect();
        assert_eq!(f[0], "devices.deny a");
        assert_eq!(f[1], "devices.deny a");
        assert_eq!(f[2], "devices.allow c 10:200 rwm");
        assert!(
            f.contains(&"devices.allow c 1:3 rwm".to_string()),
            "defaults appended"
        );
        let p = plan(&r, &Available::all_v2()).expect("v2");
        assert!(p.writes.is_empty());
        let rules = p.device_program.expect("program");
        assert_eq!(rules.len(), 2 + devices::default_allowed_devices().len());
    }

    #[test]
    fn network_is_v1_only() {
        let r = res_json(
            r#"{"network":{"classID":1048577,"priorities":[{"name":"eth0","priority":5}]}}"#,
        );
        let mut v1 = Available::all_v1();
        let p = plan(&r, &v1).expect("v1");
        assert_eq!(
            files(&p),
            vec![
                (Tree::V1("net_cls"), "net_cls.classid", "1048577"),
                (Tree::V1("net_prio"), "net_prio.ifpriomap", "eth0 5")
            ]
        );
        v1.v1.remove("net_cls");
        v1.v1.remove("net_prio");
        let p = plan(&r, &v1).expect("v1 without net");
        assert!(p.writes.is_empty());
        assert_eq!(p.warnings.len(), 2);
    }

    #[test]
    fn unified_keys() {
        let r = res_json(
            r#"{"unified":{"memory.high":"1000000","cgroup.max.depth":"3","pids.max":"9"}}"#,
        );
        let p = plan(&r, &Available::all_v2()).expect("v2");
        assert_eq!(
            files(&p),
            vec![
                (Tree::Unified, "cgroup.max.depth", "3"),
                (Tree::Unified, "memory.high", "1000000"),
                (Tree::Unified, "pids.max", "9")
            ]
        );
        let e = plan(&r, &Available::all_v1()).expect_err("v1 host");
        assert!(e.is_invalid_input());
        assert!(e.to_string().contains("linux.resources.unified"), "{e}");
        // Hybrid: only what the cgroup2 tree has.
        let mut hybrid = Available::all_v1();
        hybrid.v2 = Some(["hugetlb".to_string()].into_iter().collect());
        let e = plan(&r, &hybrid).expect_err("memory not on v2");
        assert!(e.to_string().contains("memory controller"), "{e}");
        let ok = res_json(r#"{"unified":{"hugetlb.2MB.max":"0"}}"#);
        assert_eq!(plan(&ok, &hybrid).expect("hugetlb").writes.len(), 1);
    }

    #[test]
    fn validate_errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"cpu":{"shares":1}}"#, "linux.resources.cpu.shares"),
            (r#"{"cpu":{"shares":300000}}"#, "linux.resources.cpu.shares"),
            (r#"{"cpu":{"quota":-5}}"#, "linux.resources.cpu.quota"),
            (r#"{"cpu":{"quota":500}}"#, "linux.resources.cpu.quota"),
            (
                r#"{"cpu":{"quota":50000,"period":10}}"#,
                "linux.resources.cpu.period",
            ),
            (r#"{"cpu":{"idle":2}}"#, "linux.resources.cpu.idle"),
            (r#"{"cpu":{"cpus":"0-"}}"#, "linux.resources.cpu.cpus"),
            (r#"{"cpu":{"cpus":"3-1"}}"#, "linux.resources.cpu.cpus"),
            (r#"{"cpu":{"mems":"a"}}"#, "linux.resources.cpu.mems"),
            (
                r#"{"cpu":{"realtimeRuntime":2000,"realtimePeriod":1000}}"#,
                "linux.resources.cpu.realtimeRuntime",
            ),
            (r#"{"memory":{"limit":-2}}"#, "linux.resources.memory.limit"),
            (
                r#"{"memory":{"limit":100}}"#,
                "linux.resources.memory.limit",
            ),
            (
                r#"{"memory":{"limit":8192,"swap":4096}}"#,
                "linux.resources.memory.swap",
            ),
            (r#"{"memory":{"swap":4096}}"#, "linux.resources.memory.swap"),
            (
                r#"{"memory":{"swappiness":101}}"#,
                "linux.resources.memory.swappiness",
            ),
            (
                r#"{"blockIO":{"weight":5}}"#,
                "linux.resources.blockIO.weight",
            ),
            (
                r#"{"blockIO":{"weightDevice":[{"major":-1,"minor":0,"weight":100}]}}"#,
                "blockIO.weightDevice[0]",
            ),
            (
                r#"{"hugepageLimits":[{"pageSize":"2M","limit":1}]}"#,
                "hugepageLimits[0].pageSize",
            ),
            (
                r#"{"devices":[{"allow":true,"access":"rwz"}]}"#,
                "linux.resources.devices[0].access",
            ),
            (
                r#"{"unified":{"../memory.max":"1"}}"#,
                "linux.resources.unified",
            ),
            (
                r#"{"unified":{"cgroup.procs":"1"}}"#,
                "linux.resources.unified",
            ),
        ];
        for (json, field) in cases {
            let e = validate(&res_json(json)).expect_err(json);
            assert!(e.is_invalid_input(), "{json}: {e}");
            assert!(e.to_string().contains(field), "{json}: {e}");
        }
        let ok = [
            r#"{"cpu":{"shares":0,"quota":-1,"period":100000,"cpus":"0-3,8,10-15","mems":"0-7:2/4"}}"#,
            r#"{"memory":{"limit":-1,"swap":-1,"swappiness":18446744073709551615}}"#,
            r#"{"memory":{"limit":1048576,"swap":1048576}}"#,
            r#"{"hugepageLimits":[{"pageSize":"1GB","limit":-1}]}"#,
            r#"{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3}]}"#,
            r#"{"pids":{"limit":-1},"blockIO":{"weight":0}}"#,
        ];
        for json in ok {
            validate(&res_json(json)).unwrap_or_else(|e| panic!("{json}: {e}"));
        }
    }
}
