//! The lifecycle verbs: create, start, state, kill, delete, exec, pause,
//! resume, list, ps, and `run` (create + start + wait + delete).

use crate::caps;
use crate::cgroups::Cgroup;
use crate::config;
use crate::error::{Context, Error, Result};
use crate::init::{self, DevicePlan, InitPlan, ProcessPlan, RootfsPlan};
use crate::mounts;
use crate::seccomp;
use crate::state::{self, HookState, Root, Saved, StateView, Status};
use crate::sync::{Channel, Tag};
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{Hook, LinuxNamespaceType, PosixRlimitType, Process, Spec};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Options of `create` (and `run`), as runc names them.
#[derive(Debug, Default)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// An already connected console socket (instead of a path).
    pub console: Option<OwnedFd>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// A network namespace the caller made, joined where the config asks
    /// for a new one (a path in the config still wins).
    pub netns: Option<OwnedFd>,
    /// The container's cgroup, made ahead with its limits: used as it is
    /// when it is the config's cgroup with the config's resources.
    pub cgroup_made: Option<crate::cgroups::Made>,
}

/// Options of `exec`.
#[derive(Debug, Default)]
pub struct ExecOptions {
    pub process: Option<Process>,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// An already connected console socket (instead of a path).
    pub console: Option<OwnedFd>,
    pub detach: bool,
    pub preserve_fds: u32,
}

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

fn ns_proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

fn open_ns(path: &Path, field: &str) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        Error::field(
            field,
            format!("{}: {}", path.display(), e.desc().to_lowercase()),
        )
    })
}

/// The namespace part of a plan.
struct NsPlan {
    clone: CloneFlags,
    /// Joined by the runtime process for its children (pid, time).
    parent_join: Vec<(CloneFlags, OwnedFd)>,
    /// Joined by the child (all but user, pid, time).
    child_join: Vec<(CloneFlags, OwnedFd)>,
    join_user: Option<OwnedFd>,
    new_time: bool,
    /// Namespace types present in the config (new or joined).
    present: Vec<LinuxNamespaceType>,
}

impl NsPlan {
    fn has(&self, t: LinuxNamespaceType) -> bool {
        self.present.contains(&t)
    }
    fn is_new(&self, t: LinuxNamespaceType) -> bool {
        if t == LinuxNamespaceType::Time {
            return self.new_time;
        }
        self.clone.contains(ns_flag(t))
    }
}

fn ns_plan(spec: &Spec, netns: Option<&OwnedFd>) -> Result<NsPlan> {
    let mut p = NsPlan {
        clone: CloneFlags::empty(),
        parent_join: Vec::new(),
        child_join: Vec::new(),
        join_user: None,
        new_time: false,
        present: Vec::new(),
    };
    let nss = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for (i, ns) in nss.iter().enumerate() {
        let t = ns.typ();
        if p.present.contains(&t) {
            return Err(Error::field(
                format!("linux.namespaces[{i}]"),
                format!("{} namespace listed twice", ns_proc_name(t)),
            ));
        }
        p.present.push(t);
        let flag = ns_flag(t);
        match ns.path() {
            None if t == LinuxNamespaceType::Time => p.new_time = true,
            None => match netns.filter(|_| t == LinuxNamespaceType::Network) {
                Some(fd) => p
                    .child_join
                    .push((flag, fd.try_clone().ctx(|| "network namespace")?)),
                None => p.clone |= flag,
            },
            Some(path) => {
                let fd = open_ns(path, &format!("linux.namespaces[{i}].path"))?;
                match t {
                    LinuxNamespaceType::User => p.join_user = Some(fd),
                    LinuxNamespaceType::Pid | LinuxNamespaceType::Time => {
                        p.parent_join.push((flag, fd))
                    }
                    _ => p.child_join.push((flag, fd)),
                }
            }
        }
    }
    Ok(p)
}

const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Check a sysctl is namespaced and the config gives it its namespace;
/// returns its /proc/sys path.
pub fn check_sysctl(key: &str, has: impl Fn(LinuxNamespaceType) -> bool) -> Result<PathBuf> {
    let field = format!("linux.sysctl.{key}");
    if key.is_empty()
        || key.starts_with('.')
        || key.contains("..")
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return Err(Error::field(field, "malformed sysctl name"));
    }
    let need = if IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") {
        LinuxNamespaceType::Ipc
    } else if key.starts_with("net.") {
        LinuxNamespaceType::Network
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        LinuxNamespaceType::Uts
    } else {
        return Err(Error::field(
            field,
            "not a namespaced sysctl: it would change the host",
        ));
    };
    if !has(need) {
        return Err(Error::field(
            field,
            format!("needs its own {} namespace", ns_proc_name(need)),
        ));
    }
    // net.ipv4.conf.eth0/1.forwarding: dots separate, slashes were dots.
    let rel: String = key
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    Ok(PathBuf::from("/proc/sys").join(rel))
}

fn rlimit_resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// The rlimits to set, clamped to what this host allows: a hard limit above
/// the runtime's own cannot be set without CAP_SYS_RESOURCE, so it is
/// lowered to the host's (with a warning) instead of failing.
pub fn rlimits_plan(p: &Process, can_raise: bool) -> Result<Vec<(Resource, u64, u64)>> {
    let mut out: Vec<(Resource, u64, u64)> = Vec::new();
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        let res = rlimit_resource(r.typ());
        let name = format!("{:?}", r.typ());
        if out.iter().any(|(x, _, _)| *x == res) {
            return Err(Error::field(
                format!("process.rlimits[{i}]"),
                format!("{name} listed twice"),
            ));
        }
        let (mut soft, mut hard) = (r.soft(), r.hard());
        if soft > hard {
            return Err(Error::field(
                format!("process.rlimits[{i}]"),
                format!("soft limit {soft} is above the hard limit {hard}"),
            ));
        }
        let (_, host_hard) =
            nix::sys::resource::getrlimit(res).ctx(|| format!("getrlimit {name}"))?;
        if hard > host_hard && !can_raise {
            tracing::warn!(
                "process.rlimits: {} hard limit {hard} is above this host's {host_hard}; clamped to {host_hard}",
                rlimit_name(r.typ())
            );
            hard = host_hard;
            soft = soft.min(hard);
        }
        out.push((res, soft, hard));
    }
    Ok(out)
}

fn rlimit_name(t: PosixRlimitType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{t:?}"))
}

fn cstrings(v: &[String], field: &str) -> Result<Vec<CString>> {
    v.iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| Error::field(field, format!("{s:?} contains a NUL byte")))
        })
        .collect()
}

/// personality(2) value of `linux.personality`.
fn personality_plan(l: &oci_spec::runtime::Linux) -> Result<Option<libc::c_ulong>> {
    use oci_spec::runtime::LinuxPersonalityDomain;
    let Some(p) = l.personality() else {
        return Ok(None);
    };
    if let Some(flags) = p.flags().as_ref().filter(|f| !f.is_empty()) {
        return Err(Error::field(
            "linux.personality.flags",
            format!("{flags:?}: no personality flags are supported"),
        ));
    }
    Ok(Some(match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    }))
}

fn io_priority_plan(p: &Process) -> Result<Option<(u32, u32)>> {
    use oci_spec::runtime::IOPriorityClass;
    let Some(io) = p.io_priority() else {
        return Ok(None);
    };
    let class = match io.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    let level = io.priority();
    if !(0..=7).contains(&level) {
        return Err(Error::field(
            "process.ioPriority.priority",
            format!("{level} is not within 0..=7"),
        ));
    }
    Ok(Some((class, level as u32)))
}

fn scheduler_plan(p: &Process) -> Result<Option<berth_sys::process::SchedAttr>> {
    use oci_spec::runtime::{LinuxSchedulerFlag as F, LinuxSchedulerPolicy as P};
    let Some(s) = p.scheduler() else {
        return Ok(None);
    };
    let policy = match s.policy() {
        P::SchedOther => 0,
        P::SchedFifo => 1,
        P::SchedRr => 2,
        P::SchedBatch => 3,
        P::SchedIso => 4,
        P::SchedIdle => 5,
        P::SchedDeadline => 6,
    };
    let mut flags = 0u64;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            F::SchedResetOnFork => 0x01,
            F::SchedFlagReclaim => 0x02,
            F::SchedFlagDLOverrun => 0x04,
            F::SchedFlagKeepPolicy => 0x08,
            F::SchedFlagKeepParams => 0x10,
            F::SchedFlagUtilClampMin => 0x20,
            F::SchedFlagUtilClampMax => 0x40,
        };
    }
    let nice = s.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        return Err(Error::field(
            "process.scheduler.nice",
            format!("{nice} is not within -20..=19"),
        ));
    }
    let priority = s.priority().unwrap_or(0);
    if priority < 0
        || (matches!(s.policy(), P::SchedFifo | P::SchedRr) && !(1..=99).contains(&priority))
    {
        return Err(Error::field(
            "process.scheduler.priority",
            format!("{priority} is out of range for the policy"),
        ));
    }
    Ok(Some(berth_sys::process::SchedAttr {
        policy,
        flags,
        nice,
        priority: priority as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
        ..Default::default()
    }))
}

/// Parse a cpu list such as "0-3,6" into a CpuSet.
pub fn parse_cpu_list(field: &str, list: &str) -> Result<nix::sched::CpuSet> {
    let mut set = nix::sched::CpuSet::new();
    let bad = |why: String| Error::field(field, format!("{list:?}: {why}"));
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: usize = a
            .parse()
            .map_err(|_| bad(format!("{part:?} is not a cpu number or range")))?;
        let b: usize = b
            .parse()
            .map_err(|_| bad(format!("{part:?} is not a cpu number or range")))?;
        if a > b {
            return Err(bad(format!("range {part:?} is reversed")));
        }
        for cpu in a..=b {
            set.set(cpu)
                .map_err(|_| bad(format!("cpu {cpu} is beyond what the kernel supports")))?;
        }
    }
    Ok(set)
}

fn process_plan(p: &Process, seccomp: Option<seccomp::Filter>) -> Result<ProcessPlan> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Error::field("process.args", "must name a program"));
    }
    if !p.cwd().is_absolute() {
        return Err(Error::field(
            "process.cwd",
            format!("{} is not absolute", p.cwd().display()),
        ));
    }
    if let Some(profile) = p.apparmor_profile() {
        if !apparmor_enabled() {
            tracing::warn!("process.apparmorProfile {profile:?}: AppArmor is not enabled on this host; ignored");
        } else {
            tracing::warn!("process.apparmorProfile {profile:?}: not applied by this runtime");
        }
    }
    if p.selinux_label().is_some() {
        tracing::warn!("process.selinuxLabel: SELinux is not supported by this runtime; ignored");
    }
    let env = p.env().clone().unwrap_or_default();
    for (i, kv) in env.iter().enumerate() {
        if !kv.contains('=') {
            return Err(Error::field(
                format!("process.env[{i}]"),
                format!("{kv:?} is not KEY=value"),
            ));
        }
    }
    let can_raise = caps::has_effective(::caps::Capability::CAP_SYS_RESOURCE);
    let available = caps::available()?;
    let user = p.user();
    Ok(ProcessPlan {
        args: cstrings(&args, "process.args")?,
        env: cstrings(&env, "process.env")?,
        cwd: p.cwd().clone(),
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        caps: caps::plan(p.capabilities().as_ref(), &available),
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        rlimits: rlimits_plan(p, can_raise)?,
        oom_score_adj: p.oom_score_adj(),
        terminal: p.terminal().unwrap_or(false),
        console_size: p.console_size().as_ref().map(|b| {
            (
                b.height().min(u16::MAX as u64) as u16,
                b.width().min(u16::MAX as u64) as u16,
            )
        }),
        seccomp,
        personality: None,
        cpu_affinity: p
            .exec_cpu_affinity()
            .as_ref()
            .and_then(|a| {
                a.cpu_affinity_final()
                    .clone()
                    .or_else(|| a.initial().clone())
            })
            .map(|l| parse_cpu_list("process.execCPUAffinity", &l))
            .transpose()?,
        io_priority: io_priority_plan(p)?,
        scheduler: scheduler_plan(p)?,
    })
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false)
}

fn hooks_of(spec: &Spec) -> HookSet {
    let h = spec.hooks().clone().unwrap_or_default();
    HookSet {
        prestart: h.prestart().clone().unwrap_or_default(),
        create_runtime: h.create_runtime().clone().unwrap_or_default(),
        create_container: h.create_container().clone().unwrap_or_default(),
        start_container: h.start_container().clone().unwrap_or_default(),
        poststart: h.poststart().clone().unwrap_or_default(),
        poststop: h.poststop().clone().unwrap_or_default(),
    }
}

#[derive(Default)]
struct HookSet {
    prestart: Vec<Hook>,
    create_runtime: Vec<Hook>,
    create_container: Vec<Hook>,
    start_container: Vec<Hook>,
    poststart: Vec<Hook>,
    poststop: Vec<Hook>,
}

impl HookSet {
    fn check(&self) -> Result<()> {
        for (name, list) in [
            ("prestart", &self.prestart),
            ("createRuntime", &self.create_runtime),
            ("createContainer", &self.create_container),
            ("startContainer", &self.start_container),
            ("poststart", &self.poststart),
            ("poststop", &self.poststop),
        ] {
            for (i, h) in list.iter().enumerate() {
                if !h.path().is_absolute() {
                    return Err(Error::field(
                        format!("hooks.{name}[{i}].path"),
                        format!("{} is not absolute", h.path().display()),
                    ));
                }
                if matches!(h.timeout(), Some(t) if t <= 0) {
                    return Err(Error::field(
                        format!("hooks.{name}[{i}].timeout"),
                        "must be positive",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn hook_state(
    id: &str,
    status: Status,
    pid: i32,
    bundle: &Path,
    ann: &HashMap<String, String>,
) -> Vec<u8> {
    serde_json::to_vec(&HookState {
        oci_version: state::OCI_VERSION,
        id,
        status,
        pid,
        bundle,
        annotations: ann,
    })
    .unwrap_or_default()
}

fn devices_plan(spec: &Spec) -> Result<Vec<DevicePlan>> {
    let mut out: Vec<DevicePlan> = mounts::default_devices()
        .into_iter()
        .map(|(path, kind, major, minor)| DevicePlan {
            path,
            kind,
            major,
            minor,
            mode: 0o666,
            owner: None,
        })
        .collect();
    let devs = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    for (i, d) in devs.iter().enumerate() {
        let field = format!("linux.devices[{i}]");
        if !d.path().is_absolute()
            || d.path()
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(Error::field(
                format!("{field}.path"),
                format!("{} must be absolute, without \"..\"", d.path().display()),
            ));
        }
        let kind = mounts::device_kind(d)?;
        let (major, minor) = if kind == SFlag::S_IFIFO {
            (0, 0)
        } else {
            (d.major() as u64, d.minor() as u64)
        };
        out.retain(|x| x.path != *d.path());
        out.push(DevicePlan {
            path: d.path().clone(),
            kind,
            major,
            minor,
            mode: d.file_mode().unwrap_or(0o666),
            owner: Some((d.uid().unwrap_or(0), d.gid().unwrap_or(0))),
        });
    }
    Ok(out)
}

fn abs_paths(v: Option<&Vec<String>>, field: &str) -> Result<Vec<PathBuf>> {
    v.into_iter()
        .flatten()
        .enumerate()
        .map(|(i, s)| {
            let p = PathBuf::from(s);
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(Error::field(
                    format!("{field}[{i}]"),
                    format!("{s} is not absolute"),
                ))
            }
        })
        .collect()
}

fn id_map_lines(maps: &[oci_spec::runtime::LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Everything create works out before it touches the system.
struct Prepared {
    ns: NsPlan,
    init: InitPlan,
    hooks: HookSet,
    cgroup: Cgroup,
    uid_map: Option<String>,
    gid_map: Option<String>,
    time_offsets: Option<String>,
    annotations: HashMap<String, String>,
    rootfs: PathBuf,
    seccomp_listener: Option<PathBuf>,
    seccomp_metadata: String,
}

fn prepare(
    root: &Root,
    spec: &Spec,
    bundle: &Path,
    id: &str,
    opts: &CreateOptions,
) -> Result<Prepared> {
    let rootfs = config::rootfs(bundle, spec)?;
    let linux = spec.linux().clone().unwrap_or_default();
    let process = spec
        .process()
        .clone()
        .ok_or_else(|| Error::field("process", "missing"))?;
    let ns = ns_plan(spec, opts.netns.as_ref())?;
    if !ns.has(LinuxNamespaceType::Mount) {
        return Err(Error::field(
            "linux.namespaces",
            "a mount namespace is required",
        ));
    }
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !ns.has(LinuxNamespaceType::Uts)
    {
        return Err(Error::field("hostname", "setting it needs a uts namespace"));
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty())
        && !ns.has(LinuxNamespaceType::Uts)
    {
        return Err(Error::field(
            "domainname",
            "setting it needs a uts namespace",
        ));
    }
    let new_userns = ns.is_new(LinuxNamespaceType::User);
    let (uid_map, gid_map) = if new_userns {
        let u = linux.uid_mappings().clone().unwrap_or_default();
        let g = linux.gid_mappings().clone().unwrap_or_default();
        if u.is_empty() || g.is_empty() {
            return Err(Error::field(
                "linux.uidMappings",
                "a new user namespace needs uid and gid mappings",
            ));
        }
        (Some(id_map_lines(&u)), Some(id_map_lines(&g)))
    } else {
        (None, None)
    };
    let time_offsets = match linux.time_offsets() {
        Some(offs) if !offs.is_empty() => {
            if !ns.new_time {
                return Err(Error::field(
                    "linux.timeOffsets",
                    "needs a new time namespace",
                ));
            }
            let mut s = String::new();
            for (clock, o) in offs {
                if clock != "monotonic" && clock != "boottime" {
                    return Err(Error::field(
                        format!("linux.timeOffsets.{clock}"),
                        "unknown clock",
                    ));
                }
                s.push_str(&format!(
                    "{clock} {} {}\n",
                    o.secs().unwrap_or(0),
                    o.nanosecs().unwrap_or(0)
                ));
            }
            Some(s)
        }
        _ => None,
    };
    let mut sysctls = Vec::new();
    let mut keys: Vec<_> = linux
        .sysctl()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    keys.sort();
    for (k, v) in keys {
        let path = check_sysctl(&k, |t| ns.has(t))?;
        sysctls.push((path, v));
    }
    // A relative source of a non-bind mount stays as written (it names the
    // filesystem); bind sources were made absolute by plan().
    let mount_ops = mounts::cgroups_last(mounts::plan(
        spec.mounts().as_deref().unwrap_or(&[]),
        bundle,
    )?);
    let propagation_raw = linux.rootfs_propagation().clone();
    let after_pivot = match propagation_raw.as_deref() {
        Some(
            p @ ("shared" | "rshared" | "private" | "rprivate" | "unbindable" | "runbindable"),
        ) => Some(mounts::root_propagation(Some(p))?),
        _ => None,
    };
    let propagation = match propagation_raw.as_deref() {
        Some("slave") => mounts::root_propagation(Some("slave"))?,
        Some(p) => {
            mounts::root_propagation(Some(p))?;
            mounts::root_propagation(None)?
        }
        None => mounts::root_propagation(None)?,
    };
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(Error::Unsupported(
            "linux.netDevices: moving host network devices into a container is not supported"
                .into(),
        ));
    }
    if linux.memory_policy().is_some() {
        tracing::warn!("linux.memoryPolicy: not supported by this runtime; ignored");
    }
    if linux.intel_rdt().is_some() {
        tracing::warn!("linux.intelRdt: resctrl is not supported by this runtime; ignored");
    }
    let resources = linux.resources().clone().unwrap_or_default();
    Cgroup::validate(&resources)?;
    // A cgroup made ahead for this path was resolved then (the host's
    // mounts, read from /proc/self/mountinfo, are the same).
    let cgroup = match &opts.cgroup_made {
        Some(m) if Some(m.path()) == linux.cgroups_path().as_deref() => m.cgroup().clone(),
        _ => Cgroup::resolve(linux.cgroups_path().as_deref(), id)?,
    };
    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(|s| seccomp::compile_cached(s, &root.seccomp_cache()))
        .transpose()?;
    let seccomp_listener = linux
        .seccomp()
        .as_ref()
        .and_then(|s| s.listener_path().clone());
    let seccomp_metadata = linux
        .seccomp()
        .as_ref()
        .and_then(|s| s.listener_metadata().clone())
        .unwrap_or_default();
    if seccomp.as_ref().is_some_and(|f| f.has_notify()) && seccomp_listener.is_none() {
        return Err(Error::field(
            "linux.seccomp.listenerPath",
            "SCMP_ACT_NOTIFY needs a listener path",
        ));
    }
    let hooks = hooks_of(spec);
    hooks.check()?;
    let mut proc_plan = process_plan(&process, seccomp)?;
    proc_plan.personality = personality_plan(&linux)?;
    if proc_plan.terminal && opts.console_socket.is_none() && opts.console.is_none() {
        return Err(Error::field(
            "process.terminal",
            "a terminal needs --console-socket",
        ));
    }
    let annotations = spec.annotations().clone().unwrap_or_default();
    let rootfs_plan = RootfsPlan {
        rootfs: rootfs.clone(),
        propagation,
        after_pivot_propagation: after_pivot,
        mounts: mount_ops,
        cgroup_mounts: cgroup.mounts(),
        devices: devices_plan(spec)?,
        bind_devices: ns.has(LinuxNamespaceType::User),
        readonly: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        no_pivot: opts.no_pivot,
        masked: abs_paths(linux.masked_paths().as_ref(), "linux.maskedPaths")?,
        readonly_paths: abs_paths(linux.readonly_paths().as_ref(), "linux.readonlyPaths")?,
    };
    let init = InitPlan {
        join: Vec::new(),
        join_user: None,
        new_userns,
        new_cgroupns: ns.is_new(LinuxNamespaceType::Cgroup),
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
        sysctls,
        rootfs: Some(rootfs_plan),
        process: proc_plan,
        create_container_hooks: hooks.create_container.clone(),
        start_container_hooks: hooks.start_container.clone(),
        hooks_sync: [
            &hooks.prestart,
            &hooks.create_runtime,
            &hooks.create_container,
            &hooks.start_container,
        ]
        .iter()
        .any(|h| !h.is_empty()),
        hook_ctx: Some(init::HookCtx {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            annotations: spec.annotations().clone().unwrap_or_default(),
        }),
        fifo: None,
        console: None,
        preserve_fds: opts.preserve_fds,
        keyring: (!opts.no_new_keyring).then(|| format!("_ses.{id}")),
        is_init: true,
        spread: false,
    };
    Ok(Prepared {
        ns,
        init,
        hooks,
        cgroup,
        uid_map,
        gid_map,
        time_offsets,
        annotations,
        rootfs,
        seccomp_listener,
        seccomp_metadata,
    })
}

/// Undo a half-made container when create fails.
struct Cleanup {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    pid: Option<i32>,
}

impl Cleanup {
    fn disarm(&mut self) {
        self.dir = None;
        self.cgroup = None;
        self.pid = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.destroy() {
                tracing::warn!("cleanup: {e}");
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Namespaces the runtime process enters for its children only (pid, time),
/// restored when dropped so hooks it runs stay in the host's.
struct ForChildren {
    restore: Vec<(CloneFlags, OwnedFd)>,
}

impl ForChildren {
    fn enter(joins: &[(CloneFlags, OwnedFd)], new_time: Option<&str>) -> Result<ForChildren> {
        let mut restore = Vec::new();
        let time = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
        let mut save = |flag: CloneFlags, name: &str| -> Result<()> {
            if !restore.iter().any(|(f, _)| *f == flag) {
                let fd = open_ns(Path::new(&format!("/proc/self/ns/{name}")), name)?;
                restore.push((flag, fd));
            }
            Ok(())
        };
        for (flag, _) in joins {
            save(
                *flag,
                if *flag == time {
                    "time_for_children"
                } else {
                    "pid_for_children"
                },
            )?;
        }
        if new_time.is_some() {
            save(time, "time_for_children")?;
        }
        let guard = ForChildren { restore };
        for (flag, fd) in joins {
            nix::sched::setns(fd, *flag).ctx(|| "join namespace for the container")?;
        }
        if let Some(offsets) = new_time {
            nix::sched::unshare(time).ctx(|| "new time namespace")?;
            std::fs::write("/proc/self/timens_offsets", offsets).ctx(|| "linux.timeOffsets")?;
        } else if guard.restore.iter().any(|(f, _)| *f == time)
            && !joins.iter().any(|(f, _)| *f == time)
        {
            // unreachable: time saved only when joined or new
        }
        Ok(guard)
    }
}

impl Drop for ForChildren {
    fn drop(&mut self) {
        for (flag, fd) in &self.restore {
            let _ = nix::sched::setns(fd, *flag);
        }
    }
}

/// A container made by `create`.
#[derive(Debug, Clone, Copy)]
pub struct Created {
    pub pid: i32,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("berth-tmp");
    std::fs::write(&tmp, pid.to_string()).ctx(|| format!("pid file {}", path.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("pid file {}", path.display()))
}

/// Create a container: namespaces, cgroup, rootfs and process, left
/// waiting for `start`.
pub fn create(root: &Root, id: &str, opts: &CreateOptions) -> Result<Created> {
    config::validate_id(id)?;
    let bundle = std::fs::canonicalize(&opts.bundle).map_err(|e| Error::Config {
        path: opts.bundle.clone(),
        msg: e.to_string(),
    })?;
    let raw_path = bundle.join(state::CONFIG_FILE);
    let raw = std::fs::read(&raw_path).map_err(|e| Error::Config {
        path: raw_path.clone(),
        msg: e.to_string(),
    })?;
    let spec = config::parse(&raw).map_err(|msg| Error::Config {
        path: raw_path,
        msg,
    })?;
    let mut prep = prepare(root, &spec, &bundle, id, opts)?;

    std::fs::create_dir_all(&root.dir).ctx(|| format!("state root {}", root.dir.display()))?;
    let dir = root.container_dir(id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Exists(id.into()))
        }
        Err(e) => return Err(Error::io(format!("{}", dir.display()), e)),
    }
    let mut cleanup = Cleanup {
        dir: Some(dir.clone()),
        cgroup: None,
        pid: None,
    };
    std::fs::write(dir.join(state::CONFIG_FILE), &raw).ctx(|| "save config")?;
    // pid 0 marks "creating" until the process is ready.
    let mut saved = Saved {
        id: id.to_string(),
        pid: 0,
        pid_start: 0,
        bundle: bundle.clone(),
        rootfs: prep.rootfs.clone(),
        created: now_rfc3339(),
        owner: "root".into(),
        annotations: prep.annotations.clone(),
        cgroup: prep.cgroup.clone(),
        namespaces: prep
            .ns
            .present
            .iter()
            .map(|t| ns_proc_name(*t).to_string())
            .collect(),
        use_terminal: prep.init.process.terminal,
        poststart_hooks: Some(!prep.hooks.poststart.is_empty()),
        poststop_hooks: Some(!prep.hooks.poststop.is_empty()),
    };
    saved.store(&dir)?;

    let fifo_path = dir.join(state::FIFO_FILE);
    nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o600)).ctx(|| "exec fifo")?;
    let fifo = nix::fcntl::open(
        &fifo_path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "exec fifo")?;
    prep.init.fifo = Some(fifo);

    let resources = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();

    if let Some(sock) = &opts.console_socket {
        let s = std::os::unix::net::UnixStream::connect(sock)
            .ctx(|| format!("console socket {}", sock.display()))?;
        prep.init.console = Some(OwnedFd::from(s));
    } else if let Some(fd) = &opts.console {
        prep.init.console = Some(fd.try_clone().ctx(|| "console")?);
    }
    prep.init.join = std::mem::take(&mut prep.ns.child_join);
    prep.init.join_user = prep.ns.join_user.take();

    let (mut chan, child_chan) = Channel::pair()?;
    let for_children = ForChildren::enter(&prep.ns.parent_join, prep.time_offsets.as_deref())?;
    // The cgroup namespace is unshared by the child once it is in its cgroup.
    let clone_flags = (prep.ns.clone - CloneFlags::CLONE_NEWCGROUP).bits();
    let via_intermediate = prep.init.join_user.is_some();
    let first_flags = if via_intermediate { 0 } else { clone_flags };
    // The child gives its CPU mask back once it has begun.
    prep.init.spread = true;
    let fork =
        berth_sys::process::fork_into(first_flags, None).ctx(|| "clone container process")?;
    let pid = match fork {
        berth_sys::process::Fork::Child if via_intermediate => {
            drop(chan);
            init::intermediate_main(prep.init, child_chan, clone_flags)
        }
        berth_sys::process::Fork::Child => {
            drop(chan);
            init::child_main(prep.init, child_chan)
        }
        berth_sys::process::Fork::Parent(pid) => pid,
    };
    drop(for_children);
    drop(child_chan);
    cleanup.pid = Some(pid);
    let pid = if via_intermediate {
        let payload = chan.expect(Tag::Pid);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        let payload = payload?;
        let b = payload
            .get(..4)
            .ok_or_else(|| Error::Init("short pid message".into()))?;
        let pid = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        cleanup.pid = Some(pid);
        pid
    } else {
        pid
    };
    // The child has its own copies; ours must not keep the fifo's reader
    // or the console connection alive.
    drop(prep.init.fifo.take());
    drop(prep.init.console.take());

    if let Some(m) = &prep.gid_map {
        std::fs::write(format!("/proc/{pid}/gid_map"), m).ctx(|| "linux.gidMappings")?;
    }
    if let Some(m) = &prep.uid_map {
        std::fs::write(format!("/proc/{pid}/uid_map"), m).ctx(|| "linux.uidMappings")?;
    }
    // Off this CPU, which makes the cgroup next (a no-op with one CPU; the
    // child gives its mask back either way).
    init::spread(pid);
    chan.send(Tag::Go, &[])?;
    // The cgroup is made while the child builds its rootfs (it waits for
    // CgroupDone before anything that needs it): on a two-core host that
    // takes the mkdirs and limit writes off the start's critical path.
    cleanup.cgroup = Some(prep.cgroup.clone());
    let made = opts
        .cgroup_made
        .as_ref()
        .is_some_and(|m| m.is(&prep.cgroup, &resources));
    if !made {
        prep.cgroup.create()?;
        prep.cgroup.apply(&resources)?;
    }
    prep.cgroup.add_process(pid)?;
    chan.send(Tag::CgroupDone, &[])?;
    // The child's start time (which tells it from a later process of the
    // same pid) is read while it works, not before it may begin: it stays
    // readable until the child is reaped, which only we do.
    let pid_start = state::proc_start(pid).map(|(s, _)| s).unwrap_or(0);

    loop {
        let (tag, payload, fd) = chan.recv_any()?.ok_or_else(|| init_died(pid))?;
        match tag {
            Tag::Hooks => {
                let st = hook_state(id, Status::Creating, pid, &bundle, &prep.annotations);
                crate::hooks::run_all(&prep.hooks.prestart, &st)?;
                crate::hooks::run_all(&prep.hooks.create_runtime, &st)?;
                chan.send(Tag::HooksDone, &pid.to_le_bytes())?;
            }
            Tag::SeccompFd => {
                let fd = fd.ok_or_else(|| Error::Init("seccomp notify fd missing".into()))?;
                send_seccomp_fd(&prep, id, pid, &bundle, fd)?;
            }
            Tag::Ready => break,
            Tag::Error => return Err(Error::Init(String::from_utf8_lossy(&payload).into_owned())),
            other => return Err(Error::Init(format!("unexpected message {other:?}"))),
        }
    }

    saved.pid = pid;
    saved.pid_start = pid_start;
    saved.store(&dir)?;
    if let Some(p) = &opts.pid_file {
        write_pid_file(p, pid)?;
    }
    cleanup.disarm();
    Ok(Created { pid })
}

fn init_died(pid: i32) -> Error {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let how = match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, c)) => format!(" (exit status {c})"),
        Ok(WaitStatus::Signaled(_, s, _)) => format!(" (killed by {s})"),
        _ => String::new(),
    };
    Error::Init(format!("container process exited before it was ready{how}"))
}

fn send_seccomp_fd(prep: &Prepared, id: &str, pid: i32, bundle: &Path, fd: OwnedFd) -> Result<()> {
    let Some(path) = &prep.seccomp_listener else {
        return Ok(());
    };
    let st = serde_json::json!({
        "ociVersion": state::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": prep.seccomp_metadata,
        "state": {
            "ociVersion": state::OCI_VERSION,
            "id": id,
            "status": "creating",
            "pid": pid,
            "bundle": bundle,
            "annotations": prep.annotations,
        }
    });
    let sock = std::os::unix::net::UnixStream::connect(path)
        .ctx(|| format!("linux.seccomp.listenerPath {}", path.display()))?;
    let data = serde_json::to_vec(&st).unwrap_or_default();
    berth_sys::fd::send_with_fd(sock.as_fd(), &data, fd.as_fd()).ctx(|| "send seccomp fd")
}

fn load(root: &Root, id: &str) -> Result<(PathBuf, Saved)> {
    config::validate_id(id)?;
    let dir = root.container_dir(id);
    match Saved::load(&dir)? {
        Some(s) => Ok((dir, s)),
        None if dir.exists() => Err(Error::WrongState {
            id: id.into(),
            state: "creating".into(),
            why: "it is still being created (or its creation was interrupted)",
        }),
        None => Err(Error::NotFound(id.into())),
    }
}

/// The current status of a saved container.
pub fn status_of(dir: &Path, saved: &Saved) -> Status {
    if saved.pid == 0 {
        return Status::Creating;
    }
    if !state::init_alive(saved) {
        return Status::Stopped;
    }
    if dir.join(state::FIFO_FILE).exists() {
        return Status::Created;
    }
    if saved.cgroup.is_frozen().unwrap_or(false) {
        return Status::Paused;
    }
    Status::Running
}

fn view(saved: &Saved, status: Status) -> StateView {
    StateView {
        oci_version: state::OCI_VERSION.into(),
        id: saved.id.clone(),
        pid: if status == Status::Stopped {
            0
        } else {
            saved.pid
        },
        status,
        bundle: saved.bundle.clone(),
        rootfs: saved.rootfs.clone(),
        created: saved.created.clone(),
        owner: saved.owner.clone(),
        annotations: saved.annotations.clone(),
    }
}

/// `state`: the container's state.
pub fn state(root: &Root, id: &str) -> Result<StateView> {
    let (dir, saved) = load(root, id)?;
    Ok(view(&saved, status_of(&dir, &saved)))
}

/// `list`: the state of every container under the root.
pub fn list(root: &Root) -> Result<Vec<StateView>> {
    let mut out = Vec::new();
    for id in root.ids()? {
        let dir = root.container_dir(&id);
        if let Ok(Some(saved)) = Saved::load(&dir) {
            out.push(view(&saved, status_of(&dir, &saved)));
        }
    }
    Ok(out)
}

fn saved_spec(dir: &Path) -> Result<Spec> {
    let path = dir.join(state::CONFIG_FILE);
    let raw = std::fs::read(&path).ctx(|| format!("{}", path.display()))?;
    config::parse(&raw).map_err(|msg| Error::Config { path, msg })
}

/// Load a container that must be in one of `allowed` states for an
/// operation; `why` says so in the error otherwise.
fn load_in(
    root: &Root,
    id: &str,
    allowed: &[Status],
    why: &'static str,
) -> Result<(PathBuf, Saved, Status)> {
    let (dir, saved) = load(root, id)?;
    let status = status_of(&dir, &saved);
    if !allowed.contains(&status) {
        return Err(Error::WrongState {
            id: id.into(),
            state: status.to_string(),
            why,
        });
    }
    Ok((dir, saved, status))
}

/// `start`: release a created container's process.
pub fn start(root: &Root, id: &str) -> Result<()> {
    let (dir, saved, _) = load_in(
        root,
        id,
        &[Status::Created],
        "only a created container can be started",
    )?;
    let fifo = dir.join(state::FIFO_FILE);
    let f = nix::fcntl::open(
        &fifo,
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ENXIO => Error::WrongState {
            id: id.into(),
            state: "created".into(),
            why: "its process is not waiting for start",
        },
        e => Error::sys("open exec fifo", e),
    })?;
    nix::unistd::write(&f, b"0").ctx(|| "write exec fifo")?;
    let _ = std::fs::remove_file(&fifo);
    wait_exec(&f);
    drop(f);
    let hooks = if saved.poststart_hooks == Some(false) {
        HookSet::default()
    } else {
        hooks_of(&saved_spec(&dir)?)
    };
    if !hooks.poststart.is_empty() {
        let st = hook_state(
            id,
            Status::Running,
            saved.pid,
            &saved.bundle,
            &saved.annotations,
        );
        crate::hooks::run_all_warn(&hooks.poststart, &st);
    }
    Ok(())
}

/// Wait until the container process has exec'd its program: its end of
/// the fifo closes on exec, and with no reader left our end reports POLLERR.
/// (poststart hooks run only after that, as the spec wants.)
fn wait_exec(fifo: &OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(n) if n > 0 => return,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

fn signal_init(saved: &Saved, sig: i32) -> Result<()> {
    let pidfd = berth_sys::process::pidfd_open(saved.pid)
        .ctx(|| format!("container process {}", saved.pid))?;
    // The pidfd pins the process: check it is still ours before signalling.
    if !state::init_alive(saved) {
        return Err(Error::WrongState {
            id: saved.id.clone(),
            state: "stopped".into(),
            why: "container not running",
        });
    }
    berth_sys::process::pidfd_send_signal(pidfd.as_fd(), sig)
        .ctx(|| format!("signal {sig} to {}", saved.pid))
}

/// `kill`: send a signal to the container's process, or with `all` to
/// every process in its cgroup.
pub fn kill(root: &Root, id: &str, sig: i32, all: bool) -> Result<()> {
    let (dir, saved) = load(root, id)?;
    let status = status_of(&dir, &saved);
    if all {
        saved.cgroup.signal_all(sig)?;
        return Ok(());
    }
    if status == Status::Stopped {
        return Err(Error::WrongState {
            id: id.into(),
            state: status.to_string(),
            why: "container not running",
        });
    }
    signal_init(&saved, sig)
}

fn wait_dead(saved: &Saved, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    let mut nap = Duration::from_micros(100);
    while state::init_alive(saved) {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    }
    true
}

/// `delete`: remove a stopped container (with `force`, kill it first).
pub fn delete(root: &Root, id: &str, force: bool) -> Result<()> {
    config::validate_id(id)?;
    let dir = root.container_dir(id);
    let saved = match Saved::load(&dir)? {
        Some(s) => s,
        None if dir.exists() && force => {
            std::fs::remove_dir_all(&dir).ctx(|| format!("{}", dir.display()))?;
            return Ok(());
        }
        None => return load(root, id).map(|_| ()),
    };
    let status = status_of(&dir, &saved);
    match status {
        Status::Stopped => {}
        Status::Created => {
            let _ = signal_init(&saved, libc::SIGKILL);
        }
        Status::Running | Status::Paused | Status::Creating => {
            if !force {
                return Err(Error::WrongState {
                    id: id.into(),
                    state: status.to_string(),
                    why: "cannot delete it without --force; stop it first",
                });
            }
            let _ = saved.cgroup.signal_all(libc::SIGKILL);
            let _ = signal_init(&saved, libc::SIGKILL);
        }
    }
    if !wait_dead(&saved, Duration::from_secs(10)) {
        return Err(Error::WrongState {
            id: id.into(),
            state: "running".into(),
            why: "its process did not die",
        });
    }
    saved.cgroup.destroy()?;
    let hooks = if saved.poststop_hooks == Some(false) {
        HookSet::default()
    } else {
        saved_spec(&dir).map(|s| hooks_of(&s)).unwrap_or_default()
    };
    std::fs::remove_dir_all(&dir).ctx(|| format!("{}", dir.display()))?;
    if !hooks.poststop.is_empty() {
        let st = hook_state(id, Status::Stopped, 0, &saved.bundle, &saved.annotations);
        crate::hooks::run_all_warn(&hooks.poststop, &st);
    }
    Ok(())
}

/// `pause`: freeze every process of the container.
pub fn pause(root: &Root, id: &str) -> Result<()> {
    let (_, saved, _) = load_in(
        root,
        id,
        &[Status::Running, Status::Created],
        "only a running container can be paused",
    )?;
    Ok(saved.cgroup.freeze()?)
}

/// `update`: apply new resource limits to a container's cgroup.
pub fn update(root: &Root, id: &str, res: &oci_spec::runtime::LinuxResources) -> Result<()> {
    let (_, saved, _) = load_in(
        root,
        id,
        &[Status::Running, Status::Created, Status::Paused],
        "only a live container can be updated",
    )?;
    Cgroup::validate(res)?;
    Ok(saved.cgroup.apply(res)?)
}

/// `resume`: thaw a paused container.
pub fn resume(root: &Root, id: &str) -> Result<()> {
    let (_, saved, _) = load_in(
        root,
        id,
        &[Status::Paused],
        "only a paused container can be resumed",
    )?;
    Ok(saved.cgroup.thaw()?)
}

/// `ps`: the pids in the container's cgroup.
pub fn pids(root: &Root, id: &str) -> Result<Vec<i32>> {
    let (_, saved) = load(root, id)?;
    Ok(saved.cgroup.pids()?)
}

/// The cgroup statistics of a container (for `berth stats`).
pub fn stats(root: &Root, id: &str) -> Result<crate::cgroups::Stats> {
    let (_, saved) = load(root, id)?;
    Ok(saved.cgroup.stats()?)
}

/// A process started by `exec`.
#[derive(Debug, Clone, Copy)]
pub struct Execed {
    pub pid: i32,
}

/// `exec`: start another process inside a running container. The caller
/// waits for it (it is our child) unless it detaches.
pub fn exec(root: &Root, id: &str, opts: &ExecOptions) -> Result<Execed> {
    let (dir, saved, _) = load_in(
        root,
        id,
        &[Status::Running, Status::Created],
        "cannot exec in a container that is not running",
    )?;
    let spec = saved_spec(&dir)?;
    let process = match &opts.process {
        Some(p) => p.clone(),
        None => spec
            .process()
            .clone()
            .ok_or_else(|| Error::field("process", "missing"))?,
    };
    let linux = spec.linux().clone().unwrap_or_default();
    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(|s| seccomp::compile_cached(s, &root.seccomp_cache()))
        .transpose()?;
    let mut proc_plan = process_plan(&process, seccomp)?;
    proc_plan.personality = personality_plan(&linux)?;
    if proc_plan.terminal && opts.console_socket.is_none() && opts.console.is_none() {
        return Err(Error::field(
            "process.terminal",
            "a terminal needs --console-socket",
        ));
    }
    let mut parent_join = Vec::new();
    let mut child_join = Vec::new();
    let mut join_user = None;
    for name in &saved.namespaces {
        let t =
            LinuxNamespaceType::try_from(name.as_str()).map_err(|e| Error::Init(e.to_string()))?;
        let fd = open_ns(
            Path::new(&format!("/proc/{}/ns/{name}", saved.pid)),
            "namespace",
        )?;
        match t {
            LinuxNamespaceType::User => join_user = Some(fd),
            LinuxNamespaceType::Pid | LinuxNamespaceType::Time => {
                parent_join.push((ns_flag(t), fd))
            }
            _ => child_join.push((ns_flag(t), fd)),
        }
    }
    // Order matters: mount last among the plain ones keeps /proc paths of
    // the others valid while joining.
    child_join.sort_by_key(|(f, _)| *f == CloneFlags::CLONE_NEWNS);
    let mut plan = InitPlan {
        join: child_join,
        join_user,
        new_userns: false,
        new_cgroupns: false,
        hostname: None,
        domainname: None,
        sysctls: Vec::new(),
        rootfs: None,
        process: proc_plan,
        create_container_hooks: Vec::new(),
        hooks_sync: false,
        start_container_hooks: Vec::new(),
        hook_ctx: None,
        fifo: None,
        console: None,
        preserve_fds: opts.preserve_fds,
        keyring: None,
        is_init: false,
        spread: false,
    };
    if let Some(sock) = &opts.console_socket {
        let s = std::os::unix::net::UnixStream::connect(sock)
            .ctx(|| format!("console socket {}", sock.display()))?;
        plan.console = Some(OwnedFd::from(s));
    } else if let Some(fd) = &opts.console {
        plan.console = Some(fd.try_clone().ctx(|| "console")?);
    }
    let (mut chan, child_chan) = Channel::pair()?;
    let for_children = ForChildren::enter(&parent_join, None)?;
    let fork = berth_sys::process::fork_into(0, None).ctx(|| "fork exec process")?;
    let pid = match fork {
        berth_sys::process::Fork::Child => {
            drop(chan);
            init::child_main(plan, child_chan)
        }
        berth_sys::process::Fork::Parent(pid) => pid,
    };
    drop(for_children);
    drop(child_chan);
    drop(plan);
    let mut cleanup = Cleanup {
        dir: None,
        cgroup: None,
        pid: Some(pid),
    };
    saved.cgroup.add_process(pid)?;
    chan.send(Tag::Go, &[])?;
    chan.send(Tag::CgroupDone, &[])?;
    loop {
        let (tag, payload, _fd) = chan.recv_any()?.ok_or_else(|| init_died(pid))?;
        match tag {
            Tag::Ready => break,
            Tag::SeccompFd => {}
            Tag::Error => return Err(Error::Init(String::from_utf8_lossy(&payload).into_owned())),
            other => return Err(Error::Init(format!("unexpected message {other:?}"))),
        }
    }
    if let Some(p) = &opts.pid_file {
        write_pid_file(p, pid)?;
    }
    cleanup.disarm();
    Ok(Execed { pid })
}

/// The config a container was created with (exec builds on its process).
pub fn saved_config(root: &Root, id: &str) -> Result<Spec> {
    let (dir, _) = load(root, id)?;
    saved_spec(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        let s = parse_cpu_list("f", "0-2, 5").unwrap();
        for cpu in [0, 1, 2, 5] {
            assert!(s.is_set(cpu).unwrap());
        }
        assert!(!s.is_set(3).unwrap());
        for bad in ["a", "3-1", "1-x", "99999"] {
            let e = parse_cpu_list("process.execCPUAffinity", bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("process.execCPUAffinity"), "{e}");
        }
    }

    #[test]
    fn a_network_namespace_given_is_joined_instead_of_made() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "mount"}, {"type": "network"}, {"type": "pid"}]}
        }))
        .unwrap();
        let p = ns_plan(&spec, None).unwrap();
        assert!(p.clone.contains(CloneFlags::CLONE_NEWNET));
        assert!(p.child_join.is_empty());
        let given = OwnedFd::from(std::fs::File::open("/proc/self/ns/net").unwrap());
        let p = ns_plan(&spec, Some(&given)).unwrap();
        assert!(!p.clone.contains(CloneFlags::CLONE_NEWNET));
        assert!(p
            .clone
            .contains(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID));
        assert_eq!(p.child_join.len(), 1);
        assert_eq!(p.child_join[0].0, CloneFlags::CLONE_NEWNET);
        assert!(p.is_new(LinuxNamespaceType::Mount) && p.has(LinuxNamespaceType::Network));
    }

    #[test]
    fn sysctls_need_their_namespace() {
        let all = |_| true;
        let none = |_| false;
        assert_eq!(
            check_sysctl("net.ipv4.ip_forward", all).unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            check_sysctl("net.ipv4.conf.eth0/1.forwarding", all).unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.1/forwarding")
        );
        assert!(check_sysctl("kernel.shmmax", all).is_ok());
        assert!(check_sysctl("fs.mqueue.msg_max", all).is_ok());
        let e = check_sysctl("net.ipv4.ip_forward", none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("net namespace"), "{e}");
        let e = check_sysctl("vm.swappiness", all).unwrap_err().to_string();
        assert!(
            e.contains("linux.sysctl.vm.swappiness") && e.contains("not a namespaced"),
            "{e}"
        );
        for bad in ["", "../x", "net..x", "net.a b"] {
            assert!(check_sysctl(bad, all).is_err(), "{bad}");
        }
    }

    fn process(json: serde_json::Value) -> Process {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn scheduler_and_io_priority() {
        let p = process(serde_json::json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0},
            "scheduler": {"policy": "SCHED_FIFO", "priority": 10, "flags": ["SCHED_RESET_ON_FORK"]},
            "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4}
        }));
        let s = scheduler_plan(&p).unwrap().unwrap();
        assert_eq!((s.policy, s.priority, s.flags), (1, 10, 1));
        assert_eq!(io_priority_plan(&p).unwrap(), Some((2, 4)));
        let bad = process(serde_json::json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0},
            "scheduler": {"policy": "SCHED_RR", "priority": 0},
            "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 9}
        }));
        assert!(scheduler_plan(&bad)
            .unwrap_err()
            .to_string()
            .contains("process.scheduler.priority"));
        assert!(io_priority_plan(&bad)
            .unwrap_err()
            .to_string()
            .contains("process.ioPriority.priority"));
    }

    #[test]
    fn rlimits_are_clamped_not_refused() {
        let (_, host_hard) = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let p = process(serde_json::json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": u64::MAX - 1, "hard": u64::MAX - 1}]
        }));
        let plan = rlimits_plan(&p, false).unwrap();
        assert_eq!(plan, vec![(Resource::RLIMIT_NOFILE, host_hard, host_hard)]);
        let dup = process(serde_json::json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0},
            "rlimits": [{"type": "RLIMIT_CORE", "soft": 1, "hard": 1}, {"type": "RLIMIT_CORE", "soft": 1, "hard": 1}]
        }));
        assert!(rlimits_plan(&dup, false)
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        let inverted = process(serde_json::json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0},
            "rlimits": [{"type": "RLIMIT_CORE", "soft": 2, "hard": 1}]
        }));
        assert!(rlimits_plan(&inverted, false).is_err());
    }
}
