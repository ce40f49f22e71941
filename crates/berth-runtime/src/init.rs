//! The container side of create and exec: everything the new process does
//! between the fork and the exec of the container's program, driven by a
//! plan that the runtime worked out (and checked) before forking.

use crate::caps::{self, CapsPlan};
use crate::cgroups::CgroupMount;
use crate::error::{Context, Error, Result};
use crate::mounts::{self, MountOp};
use crate::seccomp;
use crate::sync::{Channel, Tag};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::Hook;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use crate::mounts::DevicePlan;

/// The process to run: identity, limits and privileges.
pub struct ProcessPlan {
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub umask: Option<u32>,
    pub caps: CapsPlan,
    pub no_new_privileges: bool,
    pub rlimits: Vec<(Resource, u64, u64)>,
    pub oom_score_adj: Option<i32>,
    pub terminal: bool,
    pub console_size: Option<(u16, u16)>,
    pub seccomp: Option<seccomp::Filter>,
    /// CPUs the program runs on (process.execCPUAffinity).
    pub cpu_affinity: Option<nix::sched::CpuSet>,
    /// personality(2) value (linux.personality).
    pub personality: Option<libc::c_ulong>,
    /// I/O priority (class, level).
    pub io_priority: Option<(u32, u32)>,
    pub scheduler: Option<berth_sys::process::SchedAttr>,
}

/// What a new container's init does (create). `None` parts are skipped.
pub struct RootfsPlan {
    pub rootfs: PathBuf,
    pub propagation: MsFlags,
    pub after_pivot_propagation: Option<MsFlags>,
    pub mounts: Vec<MountOp>,
    pub cgroup_mounts: Vec<CgroupMount>,
    pub devices: Vec<DevicePlan>,
    pub bind_devices: bool,
    pub readonly: bool,
    pub no_pivot: bool,
    pub masked: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
}

/// What the state given to a hook needs, besides status and pid.
pub struct HookCtx {
    pub id: String,
    pub bundle: PathBuf,
    pub annotations: std::collections::HashMap<String, String>,
}

impl HookCtx {
    pub fn state(&self, status: crate::state::Status, pid: i32) -> Vec<u8> {
        serde_json::to_vec(&crate::state::HookState {
            oci_version: crate::state::OCI_VERSION,
            id: &self.id,
            status,
            pid,
            bundle: &self.bundle,
            annotations: &self.annotations,
        })
        .unwrap_or_default()
    }
}

pub struct InitPlan {
    /// Namespaces joined by path (not user, pid or time), done in the child.
    pub join: Vec<(CloneFlags, OwnedFd)>,
    pub join_user: Option<OwnedFd>,
    pub new_userns: bool,
    pub new_cgroupns: bool,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub sysctls: Vec<(PathBuf, String)>,
    pub rootfs: Option<RootfsPlan>,
    pub process: ProcessPlan,
    pub create_container_hooks: Vec<Hook>,
    pub start_container_hooks: Vec<Hook>,
    /// Whether the runtime runs prestart or createRuntime hooks once the
    /// rootfs is built, or hooks inside need the host pid it then sends:
    /// without, that round trip is skipped.
    pub hooks_sync: bool,
    /// The container as hooks run inside it see it (the pid is filled in
    /// once the runtime tells it).
    pub hook_ctx: Option<HookCtx>,
    /// Read end of the exec fifo: wait for `start` before exec (create).
    pub fifo: Option<OwnedFd>,
    /// Connected console socket to send the pty master to.
    pub console: Option<OwnedFd>,
    pub preserve_fds: u32,
    /// Join a new session keyring of this name (create without --no-new-keyring).
    pub keyring: Option<String>,
    /// Whether this is a container's first process (setsid, fifo) or exec.
    pub is_init: bool,
    /// Whether the child's CPU mask is to be given back as soon as it may
    /// begin (see [`spread`]).
    pub spread: bool,
}

/// For the parent, right after the fork: keep the child `pid` off this CPU
/// until it has begun, when it gives its mask back
/// ([`berth_sys::process::all_cpus`], every CPU as runc asks, so that the
/// container's CPUs are its cpuset's). Without it the scheduler puts a
/// new child on its parent's CPU, where it waits while the parent makes
/// its cgroup; with it the child builds its rootfs on another CPU
/// meanwhile. Nothing is done with fewer than two CPUs.
pub fn spread(pid: i32) {
    berth_sys::process::keep_elsewhere(pid);
}

/// Run in the forked child. Never returns: execs the container process or
/// reports the failure to the runtime and exits.
pub fn child_main(mut plan: InitPlan, mut chan: Channel) -> ! {
    let err = match run(&mut plan, &mut chan) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let msg = err.to_string();
    if chan.send(Tag::Error, msg.as_bytes()).is_err() {
        // The runtime is gone (we were already started): tell the
        // container's own stderr, as there is no one else to tell.
        let line = format!("berth: {msg}\n");
        let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
    }
    berth_sys::process::exit_now(err.exec_failure_code().unwrap_or(1))
}

enum Never {}

fn init_err(what: impl std::fmt::Display) -> Error {
    Error::Init(what.to_string())
}

fn run(plan: &mut InitPlan, chan: &mut Channel) -> Result<Never> {
    // Keep our descriptors out of the container from the start; the ones
    // we still need are used through OwnedFds that close on exec.
    berth_sys::fd::cloexec_from(3).ctx(|| "close-on-exec sweep")?;
    // If the runtime dies before we exec, die with it.
    berth_sys::process::set_parent_death_signal(libc::SIGKILL).ctx(|| "pdeathsig")?;
    chan.expect(Tag::Go)?;
    if plan.spread {
        berth_sys::process::all_cpus();
    }

    if plan.new_userns {
        become_root_in_userns();
    }
    join_namespaces(plan)?;
    if plan.is_init {
        nix::unistd::setsid().ctx(|| "setsid")?;
    }
    if let Some(name) = &plan.keyring {
        berth_sys::process::join_session_keyring(name).ctx(|| "join a new session keyring")?;
    }
    if let Some(h) = &plan.hostname {
        nix::unistd::sethostname(h).ctx(|| format!("set hostname {h:?}"))?;
    }
    if let Some(d) = &plan.domainname {
        set_domainname(d)?;
    }

    // The runtime moves us into the container's cgroup while we build the
    // rootfs (a cgroup v1 move waits for an RCU grace period); what needs
    // the cgroup waits for its word, once.
    let new_cgroupns = plan.new_cgroupns;
    let mut in_cgroup = false;
    let mut wait_cgroup = |chan: &mut Channel| -> Result<()> {
        if !in_cgroup {
            chan.expect(Tag::CgroupDone)?;
            in_cgroup = true;
            // Made now, so that the container's cgroup is its root.
            if new_cgroupns {
                nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).ctx(|| "new cgroup namespace")?;
            }
        }
        Ok(())
    };
    let mut host_pid = 0;
    if let Some(r) = &plan.rootfs {
        build_rootfs(r, plan.new_cgroupns, &mut || wait_cgroup(chan))?;
        wait_cgroup(chan)?;
        if plan.hooks_sync {
            chan.send(Tag::Hooks, &[])?;
            let p = chan.expect(Tag::HooksDone)?;
            host_pid = p
                .get(..4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0);
        }
        if let Some(h) = &plan.hook_ctx {
            let st = h.state(crate::state::Status::Creating, host_pid);
            crate::hooks::run_all(&plan.create_container_hooks, &st)?;
        }
        mounts::enter_root(&r.rootfs, r.no_pivot)?;
        if let Some(p) = r.after_pivot_propagation {
            nix::mount::mount(None::<&str>, "/", None::<&str>, p, None::<&str>)
                .ctx(|| "rootfs propagation")?;
        }
        for (path, value) in &plan.sysctls {
            std::fs::write(path, value).ctx(|| format!("sysctl {}", path.display()))?;
        }
        for p in &r.readonly_paths {
            mounts::readonly_path(p)?;
        }
        for p in &r.masked {
            mounts::mask_path(p)?;
        }
        if r.readonly {
            mounts::remount_readonly(Path::new("/"), MsFlags::empty())?;
        }
    } else {
        wait_cgroup(chan)?;
        for (path, value) in &plan.sysctls {
            std::fs::write(path, value).ctx(|| format!("sysctl {}", path.display()))?;
        }
    }

    let p = &plan.process;
    if p.terminal {
        setup_terminal(plan.console.take(), p.console_size, plan.is_init)?;
    }
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).ctx(|| "oom_score_adj")?;
    }
    for (res, soft, hard) in &p.rlimits {
        nix::sys::resource::setrlimit(*res, *soft, *hard).ctx(|| format!("rlimit {res:?}"))?;
    }
    if let Some(attr) = &p.scheduler {
        berth_sys::process::set_scheduler(attr).ctx(|| "process.scheduler")?;
    }
    if let Some((class, level)) = p.io_priority {
        berth_sys::process::set_io_priority(class, level).ctx(|| "process.ioPriority")?;
    }
    if let Some(persona) = p.personality {
        berth_sys::process::set_personality(persona).ctx(|| "linux.personality")?;
    }

    // seccomp before dropping privileges unless no_new_privs lets an
    // unprivileged process load it: then as late as possible.
    let early_seccomp = p
        .seccomp
        .as_ref()
        .filter(|f| !p.no_new_privileges || f.has_notify());
    if let Some(f) = early_seccomp {
        if let Some(nfd) = f.load()? {
            chan.send_fd(Tag::SeccompFd, nfd.as_fd())?;
        }
    }

    nix::sys::prctl::set_keepcaps(true).ctx(|| "keep capabilities")?;
    caps::apply_bounding(&p.caps)?;
    let groups: Vec<Gid> = p.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        // In a user namespace with setgroups denied, only an empty list works.
        if !groups.is_empty() || e != nix::errno::Errno::EPERM {
            return Err(Error::sys("setgroups", e));
        }
    }
    let (gid, uid) = (Gid::from_raw(p.gid), Uid::from_raw(p.uid));
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setgid {}", p.gid))?;
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setuid {}", p.uid))?;
    caps::apply_sets(&p.caps)?;
    nix::sys::prctl::set_keepcaps(false).ctx(|| "keep capabilities")?;
    if let Some(m) = p.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m));
    }

    enter_cwd(&p.cwd)?;
    let exe = find_program(&p.args, &p.env)?;
    if p.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().ctx(|| "no_new_privs")?;
    }
    for fd in 3..3 + plan.preserve_fds as i32 {
        berth_sys::fd::clear_cloexec(fd).ctx(|| format!("preserve fd {fd}"))?;
    }
    // The runtime exits after Ready (create): we must outlive it.
    berth_sys::process::set_parent_death_signal(0).ctx(|| "pdeathsig")?;
    chan.send(Tag::Ready, &[])?;

    // The fifo stays open until exec closes it: `start` waits for that.
    if let Some(fifo) = &plan.fifo {
        wait_start(fifo)?;
    }
    if let Some(f) = &p.seccomp {
        if early_seccomp.is_none() {
            f.load()?;
        }
    }
    if let Some(h) = plan
        .hook_ctx
        .as_ref()
        .filter(|_| !plan.start_container_hooks.is_empty())
    {
        let st = h.state(crate::state::Status::Created, host_pid);
        crate::hooks::run_all(&plan.start_container_hooks, &st)?;
    }
    if let Some(set) = &p.cpu_affinity {
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), set)
            .ctx(|| "process.execCPUAffinity")?;
    }
    reset_signals();
    let e = nix::unistd::execve(&exe, &p.args, &p.env).unwrap_err();
    Err(init_err(format!(
        "exec {:?}: {}",
        exe,
        e.desc().to_lowercase()
    )))
}

/// Join the namespaces the plan names by path: the plain ones first, while
/// the host's privileges allow it, the user namespace last. Idempotent: the
/// joined ones are taken out of the plan.
pub fn join_namespaces(plan: &mut InitPlan) -> Result<()> {
    for (flag, fd) in plan.join.drain(..) {
        nix::sched::setns(&fd, flag).ctx(|| format!("join {} namespace", ns_name(flag)))?;
    }
    if let Some(fd) = plan.join_user.take() {
        nix::sched::setns(&fd, CloneFlags::CLONE_NEWUSER).ctx(|| "join user namespace")?;
        become_root_in_userns();
    }
    Ok(())
}

/// Used when the container joins a user namespace by path: this forked
/// process joins the namespaces, then forks the container process with
/// CLONE_PARENT so that the new namespaces belong to the joined user
/// namespace and the runtime stays its parent; it reports that pid and exits.
pub fn intermediate_main(mut plan: InitPlan, mut chan: Channel, clone_flags: libc::c_int) -> ! {
    const CLONE_PARENT: libc::c_int = 0x8000;
    let res = join_namespaces(&mut plan).and_then(|()| {
        berth_sys::process::fork_into(clone_flags | CLONE_PARENT, None)
            .ctx(|| "clone container process")
    });
    match res {
        Ok(berth_sys::process::Fork::Child) => child_main(plan, chan),
        Ok(berth_sys::process::Fork::Parent(pid)) => {
            let code = if chan.send(Tag::Pid, &pid.to_le_bytes()).is_ok() {
                0
            } else {
                1
            };
            berth_sys::process::exit_now(code)
        }
        Err(e) => {
            let _ = chan.send(Tag::Error, e.to_string().as_bytes());
            berth_sys::process::exit_now(1)
        }
    }
}

fn ns_name(f: CloneFlags) -> &'static str {
    match f {
        CloneFlags::CLONE_NEWNS => "mount",
        CloneFlags::CLONE_NEWNET => "network",
        CloneFlags::CLONE_NEWIPC => "ipc",
        CloneFlags::CLONE_NEWUTS => "uts",
        CloneFlags::CLONE_NEWCGROUP => "cgroup",
        CloneFlags::CLONE_NEWPID => "pid",
        CloneFlags::CLONE_NEWUSER => "user",
        _ => "time",
    }
}

/// After entering a user namespace, be root in it when root is mapped.
fn become_root_in_userns() {
    let zero_u = Uid::from_raw(0);
    let zero_g = Gid::from_raw(0);
    let _ = nix::unistd::setresgid(zero_g, zero_g, zero_g);
    let _ = nix::unistd::setresuid(zero_u, zero_u, zero_u);
}

fn set_domainname(d: &str) -> Result<()> {
    std::fs::write("/proc/sys/kernel/domainname", d).ctx(|| format!("set domainname {d:?}"))
}

fn build_rootfs(
    r: &RootfsPlan,
    new_cgroupns: bool,
    wait_cgroup: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    mounts::prepare_root(&r.rootfs, r.propagation)?;
    let root = nix::fcntl::open(
        &r.rootfs,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("open rootfs {}", r.rootfs.display()))?;
    // The cgroup mounts the plan put last wait for the runtime's word; the
    // devices, which do not, are made before them (unless one of those
    // mounts is in /dev).
    let tail = r
        .mounts
        .iter()
        .rposition(|op| !op.is_cgroup())
        .map_or(0, |i| i + 1);
    let devices_early = r.mounts[tail..]
        .iter()
        .all(|op| !op.destination.starts_with("/dev"));
    let has_devpts = r
        .mounts
        .iter()
        .any(|op| op.fstype == "devpts" && op.destination == Path::new("/dev/pts"));
    let make_devices = || -> Result<()> {
        for d in &r.devices {
            mounts::create_device(root.as_fd(), d, r.bind_devices)?;
        }
        mounts::dev_symlinks(root.as_fd(), has_devpts)
    };
    for (i, op) in r.mounts.iter().enumerate() {
        if i == tail && devices_early {
            make_devices()?;
        }
        if op.is_cgroup() {
            wait_cgroup()?;
        }
        mounts::mount_one(root.as_fd(), op, &r.cgroup_mounts, new_cgroupns)?;
    }
    if tail == r.mounts.len() || !devices_early {
        make_devices()?;
    }
    Ok(())
}

/// chdir to the process's cwd and make sure it is inside the root.
fn enter_cwd(cwd: &Path) -> Result<()> {
    nix::unistd::chdir(cwd).map_err(|e| {
        init_err(format!(
            "cwd {}: {}",
            cwd.display(),
            e.desc().to_lowercase()
        ))
    })?;
    let here =
        nix::unistd::getcwd().map_err(|e| init_err(format!("cwd {}: {e}", cwd.display())))?;
    if !here.is_absolute() || here.as_os_str().as_bytes().starts_with(b"(unreachable)") {
        return Err(init_err(format!(
            "cwd {} is outside the container's root",
            cwd.display()
        )));
    }
    Ok(())
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Resolve argv[0] like execvp, but with the container's PATH.
fn find_program(args: &[CString], env: &[CString]) -> Result<CString> {
    let arg0 = args
        .first()
        .ok_or_else(|| init_err("process.args is empty"))?;
    let name = arg0.as_bytes();
    if name.contains(&b'/') {
        return check_exec(Path::new(std::ffi::OsStr::from_bytes(name))).map(|_| arg0.clone());
    }
    let path = env
        .iter()
        .find_map(|kv| kv.as_bytes().strip_prefix(b"PATH="))
        .unwrap_or(DEFAULT_PATH.as_bytes());
    let mut denied = false;
    for dir in path.split(|b| *b == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let mut cand = dir.to_vec();
        cand.push(b'/');
        cand.extend_from_slice(name);
        let p = Path::new(std::ffi::OsStr::from_bytes(&cand));
        match check_exec(p) {
            Ok(()) => return CString::new(cand).map_err(init_err),
            Err(Error::Init(m)) if m.contains("permission denied") => denied = true,
            Err(_) => {}
        }
    }
    let shown = String::from_utf8_lossy(name);
    Err(init_err(if denied {
        format!("exec: {shown:?}: permission denied")
    } else {
        format!("exec: {shown:?}: executable file not found in $PATH")
    }))
}

fn check_exec(p: &Path) -> Result<()> {
    use nix::unistd::{access, AccessFlags};
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Err(init_err(format!(
            "exec: {:?}: is a directory: permission denied",
            p
        ))),
        Ok(_) => access(p, AccessFlags::X_OK)
            .map_err(|_| init_err(format!("exec: {:?}: permission denied", p))),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(init_err(format!("exec: {:?}: permission denied", p)))
        }
        Err(_) => Err(init_err(format!(
            "exec: {:?}: no such file or directory: not found",
            p
        ))),
    }
}

/// Block until `start` writes to the exec fifo.
fn wait_start(fifo: &OwnedFd) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("wait for start", e)),
        }
        let mut b = [0u8; 1];
        match nix::unistd::read(fifo, &mut b) {
            Ok(1) => return Ok(()),
            Ok(_) => continue,
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("wait for start", e)),
        }
    }
}

/// Restore default dispositions and an empty mask for the new program
/// (ignored signals survive exec otherwise; Rust ignores SIGPIPE).
fn reset_signals() {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
    for sig in 1..libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            let _ = berth_sys::process::default_signal(sig);
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Create the pty inside the container, hand its master to the console
/// socket, make the slave our controlling terminal and stdio.
fn setup_terminal(console: Option<OwnedFd>, size: Option<(u16, u16)>, is_init: bool) -> Result<()> {
    use nix::fcntl::OFlag;
    let console = console
        .ok_or_else(|| init_err("process.terminal is set but no console socket was given"))?;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .ctx(|| "open /dev/ptmx")?;
    nix::pty::grantpt(&master).ctx(|| "grantpt")?;
    nix::pty::unlockpt(&master).ctx(|| "unlockpt")?;
    let name = nix::pty::ptsname_r(&master).ctx(|| "ptsname")?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("open {name}"))?;
    if let Some((rows, cols)) = size {
        berth_sys::pty::set_winsize(slave.as_fd(), rows, cols).ctx(|| "set console size")?;
    }
    berth_sys::fd::send_with_fd(console.as_fd(), name.as_bytes(), master.as_fd())
        .ctx(|| "send console to the console socket")?;
    drop(master);
    drop(console);
    if !is_init {
        nix::unistd::setsid().ctx(|| "setsid")?;
    }
    berth_sys::pty::set_controlling(slave.as_fd()).ctx(|| "set controlling terminal")?;
    for target in 0..3 {
        berth_sys::fd::dup_onto(slave.as_fd(), target).ctx(|| "console as stdio")?;
    }
    if slave.as_raw_fd() > 2 {
        drop(slave);
    }
    Ok(())
}
