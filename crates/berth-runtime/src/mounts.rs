//! The container's filesystem: mount options → flags (pure), and the
//! steps that build the rootfs in the container's mount namespace.
//!
//! Every destination is resolved inside the rootfs with openat2
//! (RESOLVE_IN_ROOT), and the mount is made onto the resolved descriptor
//! through /proc/self/fd, so a symlink in the image cannot send a mount, a
//! mkdir or a device node outside the rootfs.

use crate::cgroups::CgroupMount;
use crate::error::{Context, Error, Result};
use berth_sys::fd::{open_in_root, proc_path};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// A mount's options split into what mount(2) and mount_setattr(2) take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub flags: MsFlags,
    /// MS_SHARED/MS_SLAVE/MS_PRIVATE/MS_UNBINDABLE, each applied after
    /// the mount (possibly with MS_REC).
    pub propagation: Vec<MsFlags>,
    /// Recursive attributes (rro, rnosuid, …) for mount_setattr.
    pub rec_set: u64,
    pub rec_clear: u64,
    /// Everything else, passed to the filesystem as data.
    pub data: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            rec_set: 0,
            rec_clear: 0,
            data: Vec::new(),
        }
    }
}

/// Parse mount options the way runc does: known flags set or clear
/// MsFlags, propagation and recursive attributes are kept apart, the rest
/// is filesystem data.
pub fn parse_options(opts: &[String]) -> Options {
    use berth_sys::mount::*;
    let mut o = Options::default();
    for opt in opts {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let (name, rec) = match opt.strip_prefix('r') {
                    Some(n) => (n, true),
                    None => (opt.as_str(), false),
                };
                let base = match name {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                o.propagation
                    .push(if rec { base | MsFlags::MS_REC } else { base });
                continue;
            }
            "rro" => {
                o.rec_set |= MOUNT_ATTR_RDONLY;
                continue;
            }
            "rrw" => {
                o.rec_clear |= MOUNT_ATTR_RDONLY;
                continue;
            }
            "rnosuid" => {
                o.rec_set |= MOUNT_ATTR_NOSUID;
                continue;
            }
            "rsuid" => {
                o.rec_clear |= MOUNT_ATTR_NOSUID;
                continue;
            }
            "rnodev" => {
                o.rec_set |= MOUNT_ATTR_NODEV;
                continue;
            }
            "rdev" => {
                o.rec_clear |= MOUNT_ATTR_NODEV;
                continue;
            }
            "rnoexec" => {
                o.rec_set |= MOUNT_ATTR_NOEXEC;
                continue;
            }
            "rexec" => {
                o.rec_clear |= MOUNT_ATTR_NOEXEC;
                continue;
            }
            // runc-specific hints with no meaning here.
            "tmpcopyup" | "idmap" | "ridmap" => continue,
            _ => {
                o.data.push(opt.clone());
                continue;
            }
        };
        o.flags.insert(set);
        o.flags.remove(clear);
    }
    o
}

/// A spec mount, checked and with its options parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOp {
    pub destination: PathBuf,
    pub source: Option<PathBuf>,
    pub fstype: String,
    pub options: Options,
}

impl MountOp {
    /// A cgroup filesystem (not a bind of one).
    pub fn is_cgroup(&self) -> bool {
        !self.is_bind() && (self.fstype == "cgroup" || self.fstype == "cgroup2")
    }

    pub fn is_bind(&self) -> bool {
        self.options.flags.contains(MsFlags::MS_BIND) || self.fstype == "bind"
    }
}

/// Move the cgroup file system mounts to the end, each where nothing
/// after it is mounted at, above or below its destination (so the result
/// is the same tree). The container's process waits for its cgroup before
/// those mounts; everything before them is done meanwhile, while the
/// runtime makes the cgroup.
pub fn cgroups_last(ops: Vec<MountOp>) -> Vec<MountOp> {
    let related = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
    let movable: Vec<bool> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            op.is_cgroup()
                && ops[i + 1..]
                    .iter()
                    .all(|o| !related(&o.destination, &op.destination))
        })
        .collect();
    let (last, mut out): (Vec<_>, Vec<_>) = ops.into_iter().zip(movable).partition(|(_, m)| *m);
    out.extend(last);
    out.into_iter().map(|(op, _)| op).collect()
}

/// Turn `mounts` into mount operations. Destinations must be absolute and
/// may not contain `..`; bind sources relative to the bundle are made
/// absolute.
pub fn plan(mounts: &[Mount], bundle: &Path) -> Result<Vec<MountOp>> {
    let mut ops = Vec::with_capacity(mounts.len());
    for (i, m) in mounts.iter().enumerate() {
        let dest = m.destination();
        if !dest.is_absolute() {
            return Err(Error::field(
                format!("mounts[{i}].destination"),
                format!("{} is not absolute", dest.display()),
            ));
        }
        if dest.components().any(|c| c == Component::ParentDir) {
            return Err(Error::field(
                format!("mounts[{i}].destination"),
                format!("{} contains \"..\"", dest.display()),
            ));
        }
        let options = parse_options(m.options().as_deref().unwrap_or(&[]));
        let fstype = m.typ().clone().unwrap_or_else(|| {
            if options.flags.contains(MsFlags::MS_BIND) {
                "bind".into()
            } else {
                "none".into()
            }
        });
        let mut op = MountOp {
            destination: dest.clone(),
            source: m.source().clone(),
            fstype,
            options,
        };
        if op.is_bind() {
            let src = op.source.clone().ok_or_else(|| {
                Error::field(format!("mounts[{i}].source"), "a bind mount needs a source")
            })?;
            op.source = Some(if src.is_absolute() {
                src
            } else {
                bundle.join(src)
            });
            op.options.flags.insert(MsFlags::MS_BIND);
        }
        ops.push(op);
    }
    Ok(ops)
}

fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/")
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| p.to_path_buf())
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Resolve `dest` inside the root, creating missing directories (and, when
/// `file`, the final entry as an empty file). Returns an O_PATH descriptor.
pub fn resolve_create(root: BorrowedFd<'_>, dest: &Path, file: bool) -> Result<OwnedFd> {
    let dest = rel(dest);
    let ctx = || format!("mount destination /{}", dest.display());
    let comps: Vec<_> = dest.components().collect();
    let mut prefix = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        let parent = if prefix.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            prefix.clone()
        };
        prefix.push(c);
        let last = i + 1 == comps.len();
        let flags = libc::O_PATH | if last && file { 0 } else { libc::O_DIRECTORY };
        match open_in_root(root, &prefix, flags, 0) {
            Ok(fd) if last => return Ok(fd),
            Ok(_) => continue,
            Err(e) if errno_of(&e) == libc::ENOENT => {
                let pfd =
                    open_in_root(root, &parent, libc::O_PATH | libc::O_DIRECTORY, 0).ctx(ctx)?;
                if last && file {
                    let f = open_in_root(
                        root,
                        &prefix,
                        libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW,
                        0o644,
                    )
                    .ctx(ctx)?;
                    drop(f);
                } else {
                    match nix::sys::stat::mkdirat(
                        &pfd,
                        c.as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                        Err(e) => return Err(Error::sys(ctx(), e)),
                    }
                }
                if last {
                    return open_in_root(root, &prefix, flags, 0).ctx(ctx);
                }
            }
            Err(e) => return Err(Error::io(ctx(), e)),
        }
    }
    // dest was "/" itself.
    open_in_root(root, Path::new("."), libc::O_PATH | libc::O_DIRECTORY, 0).ctx(ctx)
}

fn open_dest(root: BorrowedFd<'_>, dest: &Path) -> Result<OwnedFd> {
    open_in_root(root, &rel(dest), libc::O_PATH, 0)
        .ctx(|| format!("mount destination {}", dest.display()))
}

fn do_mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    what: &Path,
) -> Result<()> {
    mount(src, target, fstype, flags, data).ctx(|| format!("mount {}", what.display()))
}

/// Flags a remount must keep: those the kernel locks for mounts made in a
/// less privileged namespace (and the atime ones).
fn locked_flags(target: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let mut f = MsFlags::empty();
    if let Ok(s) = statvfs(target) {
        let fl = s.flags();
        for (st, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if fl.contains(st) {
                f |= ms;
            }
        }
    }
    f
}

/// Make the mount at `target` read-only (a bind remount keeping the
/// flags the kernel locks).
pub fn remount_readonly(target: &Path, extra: MsFlags) -> Result<()> {
    let flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(target) | extra;
    do_mount(None, target, None, flags, None, target)
}

/// Before any mount: stop propagation back to the host and make the rootfs
/// a mount point of its own.
pub fn prepare_root(rootfs: &Path, propagation: MsFlags) -> Result<()> {
    do_mount(
        None,
        Path::new("/"),
        None,
        propagation,
        None,
        Path::new("/"),
    )?;
    do_mount(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
        rootfs,
    )
}

/// Mount one planned entry under the root open as `root`.
pub fn mount_one(
    root: BorrowedFd<'_>,
    op: &MountOp,
    cgroups: &[CgroupMount],
    new_cgroupns: bool,
) -> Result<()> {
    let dest = &op.destination;
    let o = &op.options;
    let data = if o.data.is_empty() {
        None
    } else {
        Some(o.data.join(","))
    };
    // Flags mount(2) applies at creation; read-only binds need a remount.
    let create_flags = o.flags & !(MsFlags::MS_REMOUNT);
    match op.fstype.as_str() {
        _ if op.is_cgroup() => return mount_cgroup(root, op, cgroups, new_cgroupns),
        _ => {}
    }
    if op.is_bind() {
        let src = op.source.as_deref().unwrap_or(Path::new(""));
        let meta = std::fs::metadata(src).ctx(|| format!("mount source {}", src.display()))?;
        let fd = resolve_create(root, dest, !meta.is_dir())?;
        let target = proc_path(fd.as_fd());
        let bind = MsFlags::MS_BIND | (create_flags & MsFlags::MS_REC);
        do_mount(Some(src), &target, None, bind, None, dest)?;
        // Re-open: the old descriptor points under the new mount.
        let fd = open_dest(root, dest)?;
        let target = proc_path(fd.as_fd());
        let extra = create_flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | locked_flags(&target);
            do_mount(None, &target, None, flags, None, dest)?;
        }
        return finish(&target, o, dest);
    }
    let fd = resolve_create(root, dest, false)?;
    let target = proc_path(fd.as_fd());
    let src = op
        .source
        .clone()
        .unwrap_or_else(|| PathBuf::from(&op.fstype));
    let res = mount(
        Some(&src),
        &target,
        Some(op.fstype.as_str()),
        create_flags,
        data.as_deref(),
    );
    match res {
        Ok(()) => {}
        // Without its own network (or IPC) namespace the kernel may refuse a
        // fresh sysfs/mqueue: show the host's read-only instead, as runc does.
        Err(nix::errno::Errno::EPERM) if op.fstype == "sysfs" || op.fstype == "mqueue" => {
            let host = if op.fstype == "sysfs" {
                "/sys"
            } else {
                "/dev/mqueue"
            };
            do_mount(
                Some(Path::new(host)),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
                dest,
            )?;
            let fd = open_dest(root, dest)?;
            remount_readonly(&proc_path(fd.as_fd()), create_flags & !MsFlags::MS_RDONLY)?;
        }
        Err(e) => {
            return Err(Error::sys(
                format!("mount {} on {}", op.fstype, dest.display()),
                e,
            ))
        }
    }
    let fd = open_dest(root, dest)?;
    finish(&proc_path(fd.as_fd()), o, dest)
}

fn finish(target: &Path, o: &Options, dest: &Path) -> Result<()> {
    for p in &o.propagation {
        do_mount(None, target, None, *p, None, dest)?;
    }
    if o.rec_set != 0 || o.rec_clear != 0 {
        let fd = nix::fcntl::open(
            target,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("mount {}", dest.display()))?;
        berth_sys::mount::set_attr(fd.as_fd(), o.rec_set, o.rec_clear, true)
            .ctx(|| format!("recursive mount attributes on {}", dest.display()))?;
    }
    Ok(())
}

/// A `cgroup` mount: cgroup2 itself with a cgroup namespace on a v2 host,
/// otherwise the container's own cgroup directories bound under a tmpfs.
fn mount_cgroup(
    root: BorrowedFd<'_>,
    op: &MountOp,
    cgroups: &[CgroupMount],
    new_cgroupns: bool,
) -> Result<()> {
    let dest = &op.destination;
    let ro = op.options.flags.contains(MsFlags::MS_RDONLY);
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let [only] = cgroups {
        if only.name == "unified" {
            let fd = resolve_create(root, dest, false)?;
            let target = proc_path(fd.as_fd());
            if new_cgroupns {
                let flags = base
                    | if ro {
                        MsFlags::MS_RDONLY
                    } else {
                        MsFlags::empty()
                    };
                return do_mount(
                    Some(Path::new("cgroup2")),
                    &target,
                    Some("cgroup2"),
                    flags,
                    None,
                    dest,
                );
            }
            do_mount(
                Some(&only.host_dir),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
                dest,
            )?;
            if ro {
                let fd = open_dest(root, dest)?;
                remount_readonly(&proc_path(fd.as_fd()), base)?;
            }
            return Ok(());
        }
    }
    let fd = resolve_create(root, dest, false)?;
    let target = proc_path(fd.as_fd());
    do_mount(
        Some(Path::new("tmpfs")),
        &target,
        Some("tmpfs"),
        base,
        Some("mode=755"),
        dest,
    )?;
    for cg in cgroups {
        let sub = dest.join(cg.name.trim_start_matches("name="));
        let fd = resolve_create(root, &sub, false)?;
        let target = proc_path(fd.as_fd());
        do_mount(
            Some(&cg.host_dir),
            &target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
            &sub,
        )?;
        // Co-mounted controllers ("cpu,cpuacct") get one link per name.
        if cg.name.contains(',') {
            let dfd = open_dest(root, dest)?;
            for part in cg.name.split(',') {
                let _ = nix::unistd::symlinkat(cg.name.as_str(), &dfd, part);
            }
        }
    }
    if ro {
        // The tmpfs and every bind under it read-only in one call (ten
        // hierarchies on a hybrid host: ten remounts fewer); one remount
        // each where the kernel lacks mount_setattr.
        let fd = open_dest(root, dest)?;
        let attrs = berth_sys::mount::MOUNT_ATTR_RDONLY
            | berth_sys::mount::MOUNT_ATTR_NOSUID
            | berth_sys::mount::MOUNT_ATTR_NODEV
            | berth_sys::mount::MOUNT_ATTR_NOEXEC;
        if berth_sys::mount::set_attr(fd.as_fd(), attrs, 0, true).is_err() {
            for cg in cgroups {
                let sub = dest.join(cg.name.trim_start_matches("name="));
                let fd = open_dest(root, &sub)?;
                remount_readonly(&proc_path(fd.as_fd()), base)?;
            }
            remount_readonly(&proc_path(fd.as_fd()), base)?;
        }
    }
    Ok(())
}

/// The devices every container gets (runtime-spec "Default Devices").
pub fn default_devices() -> Vec<(PathBuf, SFlag, u64, u64)> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(n, ma, mi)| (PathBuf::from(format!("/dev/{n}")), SFlag::S_IFCHR, ma, mi))
    .collect()
}

/// A device node to create in the container's /dev.
#[derive(Debug)]
pub struct DevicePlan {
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
}

/// Create a device node inside the root; in a user namespace, where mknod
/// is not allowed, bind the host's node instead.
pub fn create_device(root: BorrowedFd<'_>, d: &DevicePlan, bind: bool) -> Result<()> {
    let path = d.path.as_path();
    let ctx = || format!("device {}", path.display());
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().ok_or_else(|| {
        Error::field("linux.devices", format!("{}: no file name", path.display()))
    })?;
    let pfd = resolve_create(root, parent, false)?;
    if bind {
        let fd = resolve_create(root, path, true)?;
        return do_mount(
            Some(path),
            &proc_path(fd.as_fd()),
            None,
            MsFlags::MS_BIND,
            None,
            path,
        );
    }
    // An existing entry (from the image) is replaced.
    let _ = nix::unistd::unlinkat(&pfd, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    let old = nix::sys::stat::umask(Mode::empty());
    let res = nix::sys::stat::mknodat(
        &pfd,
        name,
        d.kind,
        Mode::from_bits_truncate(d.mode & 0o7777),
        nix::sys::stat::makedev(d.major, d.minor),
    );
    nix::sys::stat::umask(old);
    res.ctx(ctx)?;
    if let Some((uid, gid)) = d.owner {
        nix::unistd::fchownat(
            &pfd,
            name,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ctx(ctx)?;
    }
    Ok(())
}

/// The node type of a spec device.
pub fn device_kind(d: &LinuxDevice) -> Result<SFlag> {
    Ok(match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::field(
                "linux.devices",
                format!(
                    "{}: type \"a\" is not a device node type",
                    d.path().display()
                ),
            ))
        }
    })
}

/// /dev/fd, /dev/std{in,out,err}, /dev/core and /dev/ptmx → pts/ptmx.
pub fn dev_symlinks(root: BorrowedFd<'_>, has_devpts: bool) -> Result<()> {
    let dev = resolve_create(root, Path::new("/dev"), false)?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        match nix::unistd::symlinkat(target, &dev, name) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(Error::sys(format!("symlink /dev/{name}"), e)),
        }
    }
    if has_devpts {
        let _ = nix::unistd::unlinkat(&dev, "ptmx", nix::unistd::UnlinkatFlags::NoRemoveDir);
        nix::unistd::symlinkat("pts/ptmx", &dev, "ptmx").ctx(|| "symlink /dev/ptmx")?;
    }
    Ok(())
}

/// Make `rootfs` the process's `/`: pivot_root, or with `no_pivot` a move
/// mount and chroot (for roots pivot_root cannot take, like a ramfs).
pub fn enter_root(rootfs: &Path, no_pivot: bool) -> Result<()> {
    let new = nix::fcntl::open(
        rootfs,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open rootfs {}", rootfs.display()))?;
    nix::unistd::fchdir(&new).ctx(|| "chdir rootfs")?;
    if no_pivot {
        mount(
            Some(rootfs),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .ctx(|| "move rootfs to /")?;
        nix::unistd::chroot(".").ctx(|| "chroot")?;
    } else {
        let old = nix::fcntl::open(
            "/",
            nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| "open /")?;
        nix::unistd::pivot_root(".", ".").ctx(|| "pivot_root")?;
        // The old root is now stacked under the new one: detach it without
        // letting the unmount propagate anywhere.
        nix::unistd::fchdir(&old).ctx(|| "chdir old root")?;
        mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .ctx(|| "make old root slave")?;
        umount2(".", MntFlags::MNT_DETACH).ctx(|| "unmount old root")?;
    }
    nix::unistd::chdir("/").ctx(|| "chdir /")
}

/// Hide a path: an empty read-only tmpfs over a directory, /dev/null over
/// anything else. Missing paths are fine.
pub fn mask_path(p: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("masked path {}", p.display()), e)),
    };
    if meta.is_dir() {
        do_mount(
            Some(Path::new("tmpfs")),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0k,nr_inodes=1"),
            p,
        )
    } else {
        do_mount(
            Some(Path::new("/dev/null")),
            p,
            None,
            MsFlags::MS_BIND,
            None,
            p,
        )
    }
}

/// Make a path read-only. Missing paths are fine.
pub fn readonly_path(p: &Path) -> Result<()> {
    match mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Ok(()) => remount_readonly(p, MsFlags::MS_REC),
        Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::sys(format!("readonly path {}", p.display()), e)),
    }
}

/// The propagation flag for `linux.rootfsPropagation`.
pub fn root_propagation(s: Option<&str>) -> Result<MsFlags> {
    Ok(match s.unwrap_or("") {
        "" | "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        other => {
            return Err(Error::field(
                "linux.rootfsPropagation",
                format!("unknown value {other:?}"),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    fn opts(v: &[&str]) -> Options {
        parse_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options() {
        let o = opts(&["nosuid", "noexec", "nodev", "mode=755", "size=65536k"]);
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV
        );
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        let o = opts(&["rbind", "ro", "rw"]);
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        let o = opts(&["rprivate", "slave", "rslave", "shared"]);
        assert_eq!(
            o.propagation,
            vec![
                MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                MsFlags::MS_SLAVE,
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                MsFlags::MS_SHARED
            ]
        );
        let o = opts(&["rro", "rnosuid"]);
        assert_eq!(
            o.rec_set,
            berth_sys::mount::MOUNT_ATTR_RDONLY | berth_sys::mount::MOUNT_ATTR_NOSUID
        );
        assert!(o.flags.is_empty());
    }

    #[test]
    fn cgroup_mounts_go_last_where_nothing_else_changes() {
        let op = |d: &str, t: &str| MountOp {
            destination: PathBuf::from(d),
            source: None,
            fstype: t.into(),
            options: opts(&[]),
        };
        let order = |ops: Vec<MountOp>| -> Vec<String> {
            cgroups_last(ops)
                .iter()
                .map(|o| o.destination.display().to_string())
                .collect()
        };
        // Docker's order: the cgroups go after /dev/mqueue, /dev/shm and the
        // /etc files.
        assert_eq!(
            order(vec![
                op("/proc", "proc"),
                op("/sys", "sysfs"),
                op("/sys/fs/cgroup", "cgroup"),
                op("/dev/mqueue", "mqueue"),
                op("/etc/hosts", "bind"),
            ]),
            [
                "/proc",
                "/sys",
                "/dev/mqueue",
                "/etc/hosts",
                "/sys/fs/cgroup"
            ]
        );
        // Not past a mount below it, at it or above it.
        for later in ["/sys/fs/cgroup/x", "/sys/fs/cgroup", "/sys"] {
            assert_eq!(
                order(vec![op("/sys/fs/cgroup", "cgroup2"), op(later, "tmpfs")]),
                ["/sys/fs/cgroup", later]
            );
        }
        // A bind of a cgroup directory is no cgroup mount.
        assert_eq!(
            order(vec![op("/c", "bind"), op("/d", "tmpfs")]),
            ["/c", "/d"]
        );
    }

    #[test]
    fn plan_checks_destinations() {
        let bundle = Path::new("/b");
        let m = |d: &str, t: &str, s: &str, o: &[&str]| {
            MountBuilder::default()
                .destination(d)
                .typ(t)
                .source(s)
                .options(o.iter().map(|x| x.to_string()).collect::<Vec<_>>())
                .build()
                .unwrap()
        };
        let ops = plan(&[m("/data", "bind", "src", &["rbind", "ro"])], bundle).unwrap();
        assert_eq!(ops[0].source.as_deref(), Some(Path::new("/b/src")));
        assert!(ops[0].is_bind());
        let e = plan(&[m("rel", "tmpfs", "tmpfs", &[])], bundle)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mounts[0].destination"), "{e}");
        let e = plan(&[m("/a/../../x", "tmpfs", "tmpfs", &[])], bundle)
            .unwrap_err()
            .to_string();
        assert!(e.contains(".."), "{e}");
    }

    #[test]
    fn propagation_values() {
        assert_eq!(
            root_propagation(None).unwrap(),
            MsFlags::MS_SLAVE | MsFlags::MS_REC
        );
        assert_eq!(
            root_propagation(Some("shared")).unwrap(),
            MsFlags::MS_SHARED
        );
        assert!(root_propagation(Some("weird")).is_err());
    }
}
