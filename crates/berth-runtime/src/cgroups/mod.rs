//! The container's cgroup on cgroup v1, v2 and hybrid hosts.
//!
//! [`Cgroup::resolve`] reads `/proc/self/mountinfo` and `/proc/self/cgroup`
//! and works out the container's directory in every hierarchy:
//!
//! - **v1**: one directory per mounted v1 hierarchy (resource controllers
//!   and named ones such as `name=systemd`).
//! - **hybrid** (v1 controllers plus a cgroup2 tree, usually at
//!   `/sys/fs/cgroup/unified`): the v1 directories plus one in the cgroup2
//!   tree, which tracks the processes and takes any controller that only
//!   cgroup2 has here (hugetlb on some hosts), the device program when v1
//!   has no devices hierarchy, and the freezer when v1 has none.
//! - **v2**: one directory in the cgroup2 tree.
//!
//! The lifecycle is [`create`](Cgroup::create), [`apply`](Cgroup::apply),
//! [`add_process`](Cgroup::add_process), then `freeze`/`thaw`/`stats`/
//! `signal_all` while it runs, and [`destroy`](Cgroup::destroy). The
//! `Cgroup` value is plain data (saved in the container's state.json), so
//! a later command picks up where an earlier one left off.
//!
//! `apply` follows "plan, then apply": [`plan::plan`] turns
//! `linux.resources` into file writes without touching the host.

pub mod devices;
pub mod layout;
pub mod plan;
pub mod stats;

#[cfg(test)]
mod root_tests;

pub use devices::{default_allowed_devices, DeviceKind, DeviceRule};
pub use plan::{Available, Plan, Tree, Write};
pub use stats::{
    BlkioEntry, BlkioStats, CpuStats, HugetlbStats, MemoryStats, PidsStats, Stats, Throttling,
};

use berth_sys::bpf;
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io;
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A value in `linux.resources` that no host could apply.
    #[error("{field}: {msg}")]
    InvalidResource { field: String, msg: String },
    #[error("invalid cgroups path {path:?}: {why}")]
    InvalidPath { path: PathBuf, why: &'static str },
    #[error("invalid signal number {0}")]
    InvalidSignal(i32),
    #[error("no cgroup filesystem is mounted (see /proc/self/mountinfo)")]
    NotMounted,
    #[error("{what} is not available on this host")]
    Unsupported { what: String },
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remove cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: still not {want} after {secs} s")]
    Timeout {
        path: PathBuf,
        want: &'static str,
        secs: u64,
    },
    #[error("device program for {path}: {source}")]
    BpfLoad {
        path: PathBuf,
        #[source]
        source: bpf::ProgLoadError,
    },
    #[error("device program for {path}: {op}: {source}")]
    Bpf {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("signal {signal} to pid {pid}: {source}")]
    Signal {
        pid: i32,
        signal: i32,
        #[source]
        source: nix::Error,
    },
}

impl CgroupError {
    /// True when the caller's input is at fault (resource values, cgroups
    /// path, signal number, unified keys this host cannot take).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            CgroupError::InvalidResource { .. }
                | CgroupError::InvalidPath { .. }
                | CgroupError::InvalidSignal(_)
        )
    }

    pub(crate) fn invalid(field: impl Into<String>, msg: impl Into<String>) -> CgroupError {
        CgroupError::InvalidResource {
            field: field.into(),
            msg: msg.into(),
        }
    }
}

type Result<T, E = CgroupError> = std::result::Result<T, E>;

/// One hierarchy as the container should see it when it mounts `cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupMount {
    /// "unified" for cgroup2, else the v1 hierarchy's controllers joined by
    /// ',' ("memory", "cpu,cpuacct", "name=systemd").
    pub name: String,
    /// The container's cgroup directory on the host.
    pub host_dir: PathBuf,
}

impl CgroupMount {
    /// The directory name under /sys/fs/cgroup: "systemd" for
    /// "name=systemd", else the name.
    pub fn dir_name(&self) -> &str {
        self.name.strip_prefix("name=").unwrap_or(&self.name)
    }
}

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    V1,
    Hybrid,
    V2,
}

/// The container's directory in one v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    /// "memory", "cpu,cpuacct", "name=systemd".
    pub name: String,
    /// Resource controllers on it (empty for a named hierarchy).
    pub controllers: Vec<String>,
    /// Where the hierarchy is mounted.
    pub mount: PathBuf,
    /// The container's directory.
    pub dir: PathBuf,
}

/// The container's directory in the cgroup2 tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnifiedDir {
    pub mount: PathBuf,
    pub dir: PathBuf,
}

/// A container's cgroup on this host; plain data, saved in state.json.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// The cgroups path as given (or the default "/berth/<id>").
    path: PathBuf,
    mode: Mode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    v1: Vec<Hierarchy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unified: Option<UnifiedDir>,
}

const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// A container's cgroup made, with its limits, before the container's
/// `create` (by a monitor that knows the limits before it has the whole
/// config): `create` given a matching one only moves the process in.
#[derive(Debug, Clone, PartialEq)]
pub struct Made {
    cgroup: Cgroup,
    resources: LinuxResources,
}

impl Made {
    /// Resolve, make and limit the cgroup of `cgroups_path` (as in the
    /// spec; `None` for the default) for container `id`. Nothing is left
    /// when it fails.
    pub fn new(cgroups_path: Option<&Path>, id: &str, resources: &LinuxResources) -> Result<Made> {
        let cgroup = Cgroup::resolve(cgroups_path, id)?;
        Cgroup::validate(resources)?;
        let made = cgroup.create().and_then(|()| cgroup.apply(resources));
        if let Err(e) = made {
            let _ = cgroup.destroy();
            return Err(e);
        }
        Ok(Made {
            cgroup,
            resources: resources.clone(),
        })
    }

    /// Whether this is `cgroup`, made with `resources`.
    pub fn is(&self, cgroup: &Cgroup, resources: &LinuxResources) -> bool {
        self.cgroup == *cgroup && self.resources == *resources
    }

    /// The cgroups path it was made for.
    pub fn path(&self) -> &Path {
        self.cgroup.path()
    }

    /// The cgroup.
    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// Remove it (when its container never came).
    pub fn destroy(self) -> Result<()> {
        self.cgroup.destroy()
    }
}

fn read_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write_io(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    write_io(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn is_errno(e: &CgroupError, errno: i32) -> bool {
    match e {
        CgroupError::Write { source, .. } | CgroupError::Read { source, .. } => {
            source.raw_os_error() == Some(errno)
        }
        _ => false,
    }
}

/// Reject paths that climb ("..") or name the root itself.
fn check_cgroups_path(path: &Path) -> Result<()> {
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(CgroupError::InvalidPath {
            path: path.to_path_buf(),
            why: "\"..\" is not allowed",
        });
    }
    if layout::relative_components(path).as_os_str().is_empty() {
        return Err(CgroupError::InvalidPath {
            path: path.to_path_buf(),
            why: "it names no cgroup below the root",
        });
    }
    Ok(())
}

/// Wait (polling) until `done` says yes or the freeze timeout passes.
fn wait_for(path: &Path, want: &'static str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(500);
    loop {
        if done()? {
            return Ok(());
        }
        if start.elapsed() > FREEZE_TIMEOUT {
            return Err(CgroupError::Timeout {
                path: path.to_path_buf(),
                want,
                secs: FREEZE_TIMEOUT.as_secs(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// `frozen` from a cgroup2 `cgroup.events`.
fn events_frozen(dir: &Path) -> Result<bool> {
    let t = read_string(&dir.join("cgroup.events"))?;
    Ok(stats::parse_keyed(&t).get("frozen") == Some(&1))
}

/// rmdir `dir` and every cgroup below it, deepest first. EBUSY (processes
/// still exiting) is retried a few times; a missing directory is fine.
fn remove_tree(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&e.path())?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Remove {
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    let mut pause = Duration::from_millis(10);
    for attempt in 0.. {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 6 => {
                std::thread::sleep(pause);
                pause *= 2;
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Every pid in `cgroup.procs` of `dir` and the cgroups below it.
fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    match std::fs::read_to_string(&procs) {
        Ok(t) => out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
        // A sub-cgroup removed while we walk.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: procs,
                source,
            })
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&e.path(), out)?;
            }
        }
    }
    Ok(())
}

/// Enable every controller `dir` has in its `cgroup.subtree_control`, one
/// at a time, so one refusal (a controller busy with realtime tasks, a
/// cgroup with processes of its own) does not keep the others off.
fn enable_subtree_controllers(dir: &Path) {
    let Ok(avail) = std::fs::read_to_string(dir.join("cgroup.controllers")) else {
        return;
    };
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let enabled: BTreeSet<&str> = enabled.split_whitespace().collect();
    for c in avail.split_whitespace().filter(|c| !enabled.contains(c)) {
        let path = dir.join("cgroup.subtree_control");
        if let Err(e) = write_io(&path, &format!("+{c}")) {
            tracing::warn!(
                "cannot enable the {c} controller in {}: {e}",
                path.display()
            );
        }
    }
}

/// v1 cpuset: a new cgroup starts with no cpus and mems, and refuses tasks
/// until they are set; copy the parent's.
fn copy_cpuset_from_parent(parent: &Path, dir: &Path) -> Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = read_string(&dir.join(file))?;
        if own.trim().is_empty() {
            let from = read_string(&parent.join(file))?;
            write_file(&dir.join(file), from.trim())?;
        }
    }
    Ok(())
}

/// Whether an error says a cgroup directory went away under us (ENOENT for
/// paths, ENODEV for files of a removed cgroup).
fn vanished(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENODEV))
}

/// mkdir every level from `mount` down to `dir`, calling `before(level)`
/// on each existing ancestor before its child is made and `after(parent,
/// child)` on each level below the mount point.
fn make_dirs(
    mount: &Path,
    dir: &Path,
    mut before: impl FnMut(&Path),
    mut after: impl FnMut(&Path, &Path) -> Result<()>,
) -> Result<()> {
    let rel = dir
        .strip_prefix(mount)
        .map_err(|_| CgroupError::InvalidPath {
            path: dir.to_path_buf(),
            why: "it is not below its hierarchy's mount point",
        })?;
    // Another process may remove an empty ancestor (a shared parent such as
    // /berth) between our mkdirs; then the walk starts again from the top.
    // Once our own directory exists, its ancestors cannot be removed.
    let mut attempts = 0;
    'walk: loop {
        let mut cur = mount.to_path_buf();
        for comp in rel.components() {
            let parent = cur.clone();
            cur.push(comp);
            before(&parent);
            match std::fs::create_dir(&cur) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) if vanished(&e) && attempts < 10 => {
                    attempts += 1;
                    continue 'walk;
                }
                Err(source) => return Err(CgroupError::Create { path: cur, source }),
            }
            match after(&parent, &cur) {
                Ok(()) => {}
                Err(CgroupError::Read { source, .. } | CgroupError::Write { source, .. })
                    if vanished(&source) && attempts < 10 =>
                {
                    attempts += 1;
                    continue 'walk;
                }
                Err(e) => return Err(e),
            }
        }
        return Ok(());
    }
}

impl Cgroup {
    /// Where the container's cgroup goes on this host. `path` is
    /// `linux.cgroupsPath`: absolute = from each hierarchy's root; relative
    /// = below this process's own cgroup in each hierarchy; `None` =
    /// "/berth/<id>". Paths with ".." are refused.
    pub fn resolve(path: Option<&Path>, id: &str) -> Result<Cgroup> {
        let mountinfo = read_string(Path::new("/proc/self/mountinfo"))?;
        let own = read_string(Path::new("/proc/self/cgroup"))?;
        Cgroup::resolve_from(&mountinfo, &own, path, id)
    }

    /// [`resolve`](Cgroup::resolve) from given `/proc/self/mountinfo` and
    /// `/proc/self/cgroup` text. Tests use it to build a chosen layout, e.g.
    /// a pure v2 one from a single cgroup2 mountinfo line.
    pub fn resolve_from(
        mountinfo: &str,
        proc_cgroup: &str,
        path: Option<&Path>,
        id: &str,
    ) -> Result<Cgroup> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => Path::new("/berth").join(id),
        };
        check_cgroups_path(&path)?;
        let layout = layout::parse_mountinfo(mountinfo);
        let own = layout::parse_proc_cgroup(proc_cgroup);
        let mode = match (layout.has_v1_controllers(), layout.unified.is_some()) {
            (true, true) => Mode::Hybrid,
            (true, false) => Mode::V1,
            (false, true) => Mode::V2,
            (false, false) => return Err(CgroupError::NotMounted),
        };
        let dir_in = |mount: &Path, root: &Path, own: PathBuf| {
            let cgroup = if path.is_absolute() {
                path.clone()
            } else {
                own.join(&path)
            };
            layout::cgroup_dir(mount, root, &cgroup)
        };
        let v1 = if mode == Mode::V2 {
            Vec::new()
        } else {
            layout
                .v1
                .iter()
                .map(|m| Hierarchy {
                    name: m.hierarchy_name(),
                    controllers: m.controllers.clone(),
                    mount: m.mount_point.clone(),
                    dir: dir_in(&m.mount_point, &m.root, layout::own_v1_path(&own, m)),
                })
                .collect()
        };
        let unified = layout.unified.as_ref().map(|u| UnifiedDir {
            mount: u.mount_point.clone(),
            dir: dir_in(&u.mount_point, &u.root, layout::own_v2_path(&own)),
        });
        Ok(Cgroup {
            path,
            mode,
            v1,
            unified,
        })
    }

    /// Check `linux.resources` before anything is created.
    pub fn validate(res: &LinuxResources) -> Result<()> {
        plan::validate(res)
    }

    /// The cgroups path this cgroup was resolved from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// True when the resource controllers are on cgroup2 (a pure v2 host).
    pub fn is_v2(&self) -> bool {
        self.mode == Mode::V2
    }

    /// The container's v1 hierarchies.
    pub fn hierarchies(&self) -> &[Hierarchy] {
        &self.v1
    }

    /// The container's cgroup2 directory (for CLONE_INTO_CGROUP, or for
    /// reading files directly).
    pub fn unified_dir(&self) -> Option<&Path> {
        self.unified.as_ref().map(|u| u.dir.as_path())
    }

    /// The container's directory in the v1 hierarchy carrying `controller`.
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.dir.as_path())
    }

    /// Every directory of the container, v1 ones first.
    fn all_dirs(&self) -> impl Iterator<Item = &Path> {
        self.v1
            .iter()
            .map(|h| h.dir.as_path())
            .chain(self.unified_dir())
    }

    /// For mounting `cgroup` inside the container: one entry per v1
    /// hierarchy, plus "unified" on a hybrid host (mounted at
    /// /sys/fs/cgroup/unified); a single "unified" on a v2 host.
    pub fn mounts(&self) -> Vec<CgroupMount> {
        let mut out: Vec<CgroupMount> = self
            .v1
            .iter()
            .map(|h| CgroupMount {
                name: h.name.clone(),
                host_dir: h.dir.clone(),
            })
            .collect();
        if let Some(u) = &self.unified {
            out.push(CgroupMount {
                name: "unified".into(),
                host_dir: u.dir.clone(),
            });
        }
        out
    }

    /// Make the container's directory in every hierarchy. v1 cpuset
    /// directories get their parent's cpus and mems; in the cgroup2 tree
    /// each ancestor enables its available controllers for its children.
    pub fn create(&self) -> Result<()> {
        for h in &self.v1 {
            let cpuset = h.controllers.iter().any(|c| c == "cpuset");
            make_dirs(
                &h.mount,
                &h.dir,
                |_| {},
                |parent, dir| {
                    if cpuset {
                        copy_cpuset_from_parent(parent, dir)
                    } else {
                        Ok(())
                    }
                },
            )?;
        }
        if let Some(u) = &self.unified {
            make_dirs(&u.mount, &u.dir, enable_subtree_controllers, |_, _| Ok(()))?;
        }
        Ok(())
    }

    /// What the container's cgroup can use: v1 controllers and the
    /// controllers in its cgroup2 `cgroup.controllers`.
    pub fn available(&self) -> Available {
        Available {
            v1: self
                .v1
                .iter()
                .flat_map(|h| h.controllers.iter().cloned())
                .collect(),
            v2: self.unified.as_ref().map(|u| {
                std::fs::read_to_string(u.dir.join("cgroup.controllers"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            }),
        }
    }

    /// Apply `linux.resources` (also used for updates). Settings the host
    /// cannot apply are logged and skipped. Device rules, when given,
    /// replace the previous ones: deny all, then the spec's rules, then the
    /// default devices (see [`default_allowed_devices`]).
    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        plan::validate(res)?;
        let plan = plan::plan(res, &self.available())?;
        for w in &plan.warnings {
            tracing::warn!(cgroup = %self.path.display(), "{w}");
        }
        self.perform(&plan.writes)?;
        if let Some(rules) = &plan.device_program {
            self.install_device_program(rules)?;
        }
        Ok(())
    }

    /// Perform planned writes in order.
    pub fn perform(&self, writes: &[Write]) -> Result<()> {
        let mut i = 0;
        while i < writes.len() {
            let w = &writes[i];
            match self.write_one(w) {
                Ok(()) => i += 1,
                Err(e)
                    if w.next_first_on_einval
                        && i + 1 < writes.len()
                        && is_errno(&e, libc::EINVAL) =>
                {
                    self.write_one(&writes[i + 1])?;
                    self.write_one(w)?;
                    i += 2;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn tree_dir(&self, tree: &Tree) -> Result<&Path> {
        let dir = match tree {
            Tree::V1(c) => self.v1_dir(c),
            Tree::Unified => self.unified_dir(),
        };
        dir.ok_or_else(|| CgroupError::Unsupported {
            what: match tree {
                Tree::V1(c) => format!("the {c} cgroup v1 controller"),
                Tree::Unified => "cgroup v2".into(),
            },
        })
    }

    fn write_one(&self, w: &Write) -> Result<()> {
        let dir = self.tree_dir(&w.tree)?;
        let path = dir.join(&w.file);
        let missing = match write_io(&path, &w.value) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => e,
            Err(source) => {
                return Err(CgroupError::Write {
                    path,
                    value: w.value.clone(),
                    source,
                })
            }
        };
        let (path, value, missing) = match &w.fallback {
            Some((file, value)) => {
                let alt = dir.join(file);
                match write_io(&alt, value) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => (alt, value, e),
                    Err(source) => {
                        return Err(CgroupError::Write {
                            path: alt,
                            value: value.clone(),
                            source,
                        })
                    }
                }
            }
            None => (path, &w.value, missing),
        };
        if w.optional {
            tracing::warn!(cgroup = %self.path.display(), "{} does not exist on this kernel: {value:?} not applied", path.display());
            return Ok(());
        }
        Err(CgroupError::Write {
            path,
            value: value.clone(),
            source: missing,
        })
    }

    /// Install exactly these device rules (after an implicit deny-all): v1
    /// `devices.deny`/`devices.allow` writes, or an eBPF program on the
    /// cgroup2 directory when there is no v1 devices hierarchy.
    pub fn set_devices(&self, rules: &[DeviceRule]) -> Result<()> {
        if let Some(dir) = self.v1_dir("devices") {
            // Each write is one rule; the two files stay open for all of
            // them (two dozen for Docker's defaults).
            let mut open: Vec<(&str, std::fs::File)> = Vec::with_capacity(2);
            for (file, value) in devices::v1_writes(rules) {
                let path = dir.join(file);
                let err = |source| CgroupError::Write {
                    path: path.clone(),
                    value: value.clone(),
                    source,
                };
                let f = match open.iter_mut().find(|(n, _)| *n == file) {
                    Some((_, f)) => f,
                    None => {
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(err)?;
                        open.push((file, f));
                        &mut open.last_mut().unwrap_or_else(|| unreachable!()).1
                    }
                };
                std::io::Write::write_all(f, value.as_bytes()).map_err(err)?;
            }
            return Ok(());
        }
        self.install_device_program(rules)
    }

    /// Load the device program for `rules`, attach it to the cgroup2
    /// directory, then detach the programs that were there before (ours
    /// from an earlier apply). Between the two steps both programs run,
    /// which can only deny more, never allow more.
    fn install_device_program(&self, rules: &[DeviceRule]) -> Result<()> {
        let dir = self.tree_dir(&Tree::Unified)?;
        let insns = devices::bpf_program(rules);
        let prog = bpf::prog_load(
            bpf::BPF_PROG_TYPE_CGROUP_DEVICE,
            &insns,
            c"Apache-2.0",
            "berth_devices",
        )
        .map_err(|source| CgroupError::BpfLoad {
            path: dir.to_path_buf(),
            source,
        })?;
        let bpf_err = |op, source| CgroupError::Bpf {
            path: dir.to_path_buf(),
            op,
            source,
        };
        let cg = std::fs::File::open(dir).map_err(|source| CgroupError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let old =
            bpf::prog_query(cg.as_fd(), bpf::BPF_CGROUP_DEVICE).map_err(|e| bpf_err("query", e))?;
        bpf::prog_attach(
            cg.as_fd(),
            prog.as_fd(),
            bpf::BPF_CGROUP_DEVICE,
            bpf::BPF_F_ALLOW_MULTI,
        )
        .map_err(|e| bpf_err("attach", e))?;
        for id in old {
            let fd = match bpf::prog_get_fd_by_id(id) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(bpf_err("get program by id", e)),
            };
            match bpf::prog_detach(cg.as_fd(), fd.as_fd(), bpf::BPF_CGROUP_DEVICE) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(bpf_err("detach the previous program", e)),
            }
        }
        Ok(())
    }

    /// Ids of the device programs attached to the cgroup2 directory.
    pub fn device_program_ids(&self) -> Result<Vec<u32>> {
        let dir = self.tree_dir(&Tree::Unified)?;
        let cg = std::fs::File::open(dir).map_err(|source| CgroupError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        bpf::prog_query(cg.as_fd(), bpf::BPF_CGROUP_DEVICE).map_err(|source| CgroupError::Bpf {
            path: dir.to_path_buf(),
            op: "query",
            source,
        })
    }

    /// Move process `pid` into the container's cgroup in every hierarchy.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        for dir in self.all_dirs() {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn freezer(&self) -> Result<Freezer<'_>> {
        if let Some(d) = self.v1_dir("freezer") {
            return Ok(Freezer::V1(d));
        }
        match self.unified_dir() {
            Some(d) if self.is_v2() || d.join("cgroup.freeze").exists() => Ok(Freezer::V2(d)),
            _ => Err(CgroupError::Unsupported {
                what: "a cgroup freezer".into(),
            }),
        }
    }

    /// Freeze every process of the container; returns once the kernel
    /// reports the cgroup frozen.
    pub fn freeze(&self) -> Result<()> {
        match self.freezer()? {
            Freezer::V1(dir) => {
                let state = dir.join("freezer.state");
                write_file(&state, "FROZEN")?;
                let mut last = Instant::now();
                let res = wait_for(&state, "FROZEN", || {
                    if read_string(&state)?.trim() == "FROZEN" {
                        return Ok(true);
                    }
                    // Tasks that were forking can escape one request.
                    if last.elapsed() > Duration::from_millis(100) {
                        write_file(&state, "FROZEN")?;
                        last = Instant::now();
                    }
                    Ok(false)
                });
                if res.is_err() {
                    let _ = write_file(&state, "THAWED");
                }
                res
            }
            Freezer::V2(dir) => {
                write_file(&dir.join("cgroup.freeze"), "1")?;
                let res = wait_for(&dir.join("cgroup.events"), "frozen", || events_frozen(dir));
                if res.is_err() {
                    let _ = write_file(&dir.join("cgroup.freeze"), "0");
                }
                res
            }
        }
    }

    /// Let the container's processes run again.
    pub fn thaw(&self) -> Result<()> {
        match self.freezer()? {
            Freezer::V1(dir) => {
                let state = dir.join("freezer.state");
                write_file(&state, "THAWED")?;
                wait_for(&state, "THAWED", || {
                    Ok(read_string(&state)?.trim() == "THAWED")
                })
            }
            Freezer::V2(dir) => {
                write_file(&dir.join("cgroup.freeze"), "0")?;
                wait_for(&dir.join("cgroup.events"), "thawed", || {
                    Ok(!events_frozen(dir)?)
                })
            }
        }
    }

    /// True when the container's cgroup is frozen.
    pub fn is_frozen(&self) -> Result<bool> {
        match self.freezer()? {
            Freezer::V1(dir) => Ok(read_string(&dir.join("freezer.state"))?.trim() == "FROZEN"),
            Freezer::V2(dir) => events_frozen(dir),
        }
    }

    /// The directory whose `cgroup.procs` tree lists the container's
    /// processes.
    fn procs_dir(&self) -> Option<&Path> {
        if self.is_v2() {
            return self.unified_dir();
        }
        ["freezer", "pids", "memory", "devices", "cpu"]
            .iter()
            .find_map(|c| self.v1_dir(c))
            .or_else(|| self.v1.first().map(|h| h.dir.as_path()))
            .or_else(|| self.unified_dir())
    }

    /// Every process in the container's cgroup, sub-cgroups included.
    /// Empty when the cgroup does not exist (any more).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let mut out = Vec::new();
        if let Some(dir) = self.procs_dir() {
            collect_pids(dir, &mut out)?;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Send `sig` to every process of the container. On cgroup v2, SIGKILL
    /// uses `cgroup.kill` when the kernel has it; otherwise the cgroup is
    /// frozen so that no process can fork away, each pid is signalled, and
    /// the cgroup is thawed.
    pub fn signal_all(&self, sig: i32) -> Result<()> {
        let signal =
            nix::sys::signal::Signal::try_from(sig).map_err(|_| CgroupError::InvalidSignal(sig))?;
        if signal == nix::sys::signal::Signal::SIGKILL && self.is_v2() {
            if let Some(dir) = self.unified_dir() {
                let kill = dir.join("cgroup.kill");
                if kill.exists() {
                    return write_file(&kill, "1");
                }
            }
        }
        let frozen = match self.freeze() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(cgroup = %self.path.display(), "signalling without freezing: {e}");
                false
            }
        };
        let res = self.pids().and_then(|pids| {
            for pid in pids {
                match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                    Err(source) => {
                        return Err(CgroupError::Signal {
                            pid,
                            signal: sig,
                            source,
                        })
                    }
                }
            }
            Ok(())
        });
        if frozen {
            self.thaw()?;
        }
        res
    }

    /// Remove the container's directory (and any below it) in every
    /// hierarchy. Keeps going after a failure and reports the first one.
    pub fn destroy(&self) -> Result<()> {
        let mut first = None;
        for dir in self.all_dirs() {
            if let Err(e) = remove_tree(dir) {
                tracing::warn!(cgroup = %self.path.display(), "{e}");
                first.get_or_insert(e);
            }
            // berth's own parent (/berth) stays, empty, for the next
            // container: making it again (ten hierarchies, cpuset values,
            // cgroup2 controllers) took a tenth of a short `run --rm`.
        }
        first.map_or(Ok(()), Err)
    }

    /// Resource usage, from whichever tree carries each controller.
    pub fn stats(&self) -> Result<Stats> {
        if !self.all_dirs().any(Path::exists) {
            let path = self.all_dirs().next().unwrap_or(&self.path).to_path_buf();
            return Err(CgroupError::Read {
                path,
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        let avail = self.available();
        let v2 = |c: &str| avail.v2.as_ref().is_some_and(|s| s.contains(c));
        let u = self.unified_dir();
        let mut s = Stats::default();
        if self.v1_dir("cpuacct").is_some() || self.v1_dir("cpu").is_some() {
            s.cpu = stats::cpu_v1(self.v1_dir("cpuacct"), self.v1_dir("cpu"));
        } else if let Some(u) = u {
            // cpu.stat's usage fields exist on every cgroup2 directory.
            s.cpu = stats::cpu_v2(u);
        }
        if let Some(d) = self.v1_dir("memory") {
            s.memory = stats::memory_v1(d);
        } else if let Some(u) = u.filter(|_| v2("memory")) {
            s.memory = stats::memory_v2(u);
        }
        if let Some(d) = self.v1_dir("pids") {
            s.pids = stats::pids(d);
        } else if let Some(u) = u.filter(|_| v2("pids")) {
            s.pids = stats::pids(u);
        }
        if let Some(d) = self.v1_dir("blkio") {
            s.blkio = stats::blkio_v1(d);
        } else if let Some(u) = u.filter(|_| v2("io")) {
            s.blkio = stats::io_v2(u);
        }
        let sizes = stats::host_page_sizes();
        if let Some(d) = self.v1_dir("hugetlb") {
            s.hugetlb = stats::hugetlb(d, true, &sizes);
        } else if let Some(u) = u.filter(|_| v2("hugetlb")) {
            s.hugetlb = stats::hugetlb(u, false, &sizes);
        }
        Ok(s)
    }
}

enum Freezer<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

#[cfg(test)]
mod tests {
    use super::layout::fixtures::*;
    use super::*;

    #[test]
    fn resolve_hybrid_default_path() {
        let cg = Cgroup::resolve_from(HYBRID_MOUNTINFO, HYBRID_PROC_CGROUP, None, "abc")
            .expect("resolve");
        assert_eq!(cg.mode(), Mode::Hybrid);
        assert!(!cg.is_v2());
        assert_eq!(cg.path(), Path::new("/berth/abc"));
        assert_eq!(
            cg.v1_dir("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/berth/abc"))
        );
        assert_eq!(
            cg.v1_dir("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct/berth/abc"))
        );
        assert_eq!(cg.v1_dir("hugetlb"), None);
        assert_eq!(
            cg.unified_dir(),
            Some(Path::new("/sys/fs/cgroup/unified/berth/abc"))
        );
        let m = cg.mounts();
        let names: Vec<_> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cpu",
                "cpuacct",
                "cpuset",
                "memory",
                "devices",
                "freezer",
                "blkio",
                "pids",
                "name=systemd",
                "unified"
            ]
        );
        assert_eq!(m[8].dir_name(), "systemd");
        assert_eq!(m[8].host_dir, Path::new("/sys/fs/cgroup/systemd/berth/abc"));
    }

    #[test]
    fn resolve_relative_is_below_own_cgroup() {
        let cg = Cgroup::resolve_from(
            HYBRID_MOUNTINFO,
            HYBRID_PROC_CGROUP,
            Some(Path::new("ctr/x")),
            "x",
        )
        .expect("resolve");
        assert_eq!(
            cg.v1_dir("memory"),
            Some(Path::new(
                "/sys/fs/cgroup/memory/process_api/b34d10cf/ctr/x"
            ))
        );
        assert_eq!(
            cg.v1_dir("pids"),
            Some(Path::new("/sys/fs/cgroup/pids/ctr/x"))
        );
        let cg = Cgroup::resolve_from(V2_MOUNTINFO, V2_PROC_CGROUP, Some(Path::new("ctr")), "x")
            .expect("v2");
        assert_eq!(
            cg.unified_dir(),
            Some(Path::new(
                "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope/ctr"
            ))
        );
    }

    #[test]
    fn resolve_pure_v2() {
        let cg = Cgroup::resolve_from(
            V2_MOUNTINFO,
            V2_PROC_CGROUP,
            Some(Path::new("/machine/c1")),
            "c1",
        )
        .expect("resolve");
        assert!(cg.is_v2());
        assert!(cg.hierarchies().is_empty());
        assert_eq!(
            cg.mounts(),
            vec![CgroupMount {
                name: "unified".into(),
                host_dir: PathBuf::from("/sys/fs/cgroup/machine/c1")
            }]
        );
    }

    #[test]
    fn resolve_comounted() {
        let cg = Cgroup::resolve_from(COMOUNT_MOUNTINFO, COMOUNT_PROC_CGROUP, None, "c")
            .expect("resolve");
        assert_eq!(cg.mode(), Mode::V1);
        assert_eq!(
            cg.v1_dir("cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/berth/c"))
        );
        assert_eq!(cg.v1_dir("cpuacct"), cg.v1_dir("cpu"));
        assert_eq!(
            cg.v1_dir("net_prio"),
            Some(Path::new("/sys/fs/cgroup/net_cls,net_prio/berth/c"))
        );
        assert!(cg.unified_dir().is_none());
        let names: Vec<_> = cg.mounts().into_iter().map(|m| m.name).collect();
        assert!(names.contains(&"cpu,cpuacct".to_string()));
        assert!(!names.contains(&"unified".to_string()));
        let a = cg.available();
        assert!(a.v1.contains("cpuacct") && a.v1.contains("hugetlb") && a.v2.is_none());
    }

    #[test]
    fn resolve_rejects_bad_paths() {
        for p in ["/a/../b", "../x", "/", "", "./."] {
            let e = Cgroup::resolve_from(
                HYBRID_MOUNTINFO,
                HYBRID_PROC_CGROUP,
                Some(Path::new(p)),
                "x",
            )
            .expect_err(p);
            assert!(e.is_invalid_input(), "{p}: {e}");
        }
        let e =
            Cgroup::resolve_from(HYBRID_MOUNTINFO, HYBRID_PROC_CGROUP, None, "..").expect_err("id");
        assert!(e.is_invalid_input());
        let e = Cgroup::resolve_from("", "", None, "x").expect_err("nothing mounted");
        assert!(matches!(e, CgroupError::NotMounted));
    }

    #[test]
    fn state_roundtrip() {
        for (mi, pc) in [
            (HYBRID_MOUNTINFO, HYBRID_PROC_CGROUP),
            (V2_MOUNTINFO, V2_PROC_CGROUP),
            (COMOUNT_MOUNTINFO, COMOUNT_PROC_CGROUP),
        ] {
            let cg = Cgroup::resolve_from(mi, pc, None, "id1").expect("resolve");
            let json = serde_json::to_string(&cg).expect("json");
            let back: Cgroup = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, cg, "{json}");
        }
    }
}
