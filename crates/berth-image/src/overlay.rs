//! The rootfs of a container: an overlayfs of its image's layers (read-only
//! lowerdirs) plus its own upper dir, or a read-only overlay of the layers
//! alone for exporting or inspecting an image.
//!
//! Plan, then apply: [`plan`] and [`plan_readonly`] work out what to mount
//! as plain data; [`apply`] mounts it and [`unmount`] takes it down.
//!
//! Images may have many layers, more than fit in the one page (4 KiB) of
//! options that mount(2) accepts. [`apply`] therefore prefers the new mount
//! API: `fsopen("overlay")`, one `fsconfig("lowerdir+", …)` per layer
//! (Linux 6.8), then `fsmount` and `move_mount`; a path longer than the
//! 255 bytes fsconfig takes for a string is passed as `/proc/self/fd/N` of an
//! `O_PATH` descriptor. On older kernels it falls back to mount(2): with the
//! absolute paths when they fit, otherwise with a private directory of short
//! symlinks (`0`, `1`, … → the layers) and relative paths, resolved from a
//! thread that has its own working directory (`unshare(CLONE_FS)`), so the
//! rest of the process is not affected. When even that does not fit, it
//! refuses with [`OverlayError::OptionsTooLong`]. Overlayfs itself takes at
//! most [`MAX_LAYERS`] lowerdirs.
//!
//! Edge cases the plan handles: a read-only view of a single layer is a
//! read-only bind mount (overlayfs needs two lowerdirs without an upper);
//! a writable rootfs of an image without layers is the upper dir bound on
//! the target (the container's changes are then simply the upper dir).
//!
//! All paths must be absolute. Whiteouts in lowerdirs are character devices
//! 0/0 and opaque directories carry `trusted.overlay.opaque=y`, as overlayfs
//! expects; an upper dir must be on a filesystem that supports `trusted.*`
//! extended attributes and is not itself overlayfs ([`check_upper_fs`]).

use berth_sys::mountfd::{move_mount_to, FsContext, FSCONFIG_MAX_STRING};
use nix::mount::{MntFlags, MsFlags};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The most lowerdirs overlayfs stacks (OVL_MAX_STACK in the kernel).
pub const MAX_LAYERS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("overlay on {target}: no layers to mount")]
    NoLayers { target: PathBuf },
    #[error("overlay on {target}: {count} layers, more than the {MAX_LAYERS} overlayfs can stack")]
    TooManyLayers { target: PathBuf, count: usize },
    #[error("overlay path {0:?} must be absolute")]
    RelativePath(PathBuf),
    #[error("overlay {what} {path}: {source}")]
    BadDir {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("overlay work dir {work} and upper dir {upper} must not be inside one another")]
    Nested { upper: PathBuf, work: PathBuf },
    #[error("overlay upper dir {upper} and work dir {work} must be on the same filesystem")]
    DifferentFs { upper: PathBuf, work: PathBuf },
    #[error("overlay on {target}: the mount options for {layers} layers take {len} bytes, more than the {max} mount(2) accepts, and this kernel lacks fsconfig lowerdir+ (Linux 6.8)")]
    OptionsTooLong {
        target: PathBuf,
        layers: usize,
        len: usize,
        max: usize,
    },
    #[error("mounting overlay on {target}: {step}: {source}{}", detail(.messages))]
    Mount {
        target: PathBuf,
        step: String,
        #[source]
        source: io::Error,
        messages: Vec<String>,
    },
    #[error("unmounting {target}: {source}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{dir} is on overlayfs: an overlay upper dir cannot be on overlayfs (put berth's root on ext4, xfs, btrfs or tmpfs, or on a volume)")]
    UpperOnOverlay { dir: PathBuf },
    #[error("{dir} ({fstype}) does not support trusted.* extended attributes, which overlayfs needs for whiteouts and opaque dirs{}", xattr_hint(.fstype))]
    NoXattr { dir: PathBuf, fstype: String },
    #[error("{dir}: setting trusted.* extended attributes was refused; overlayfs needs them, which takes root (CAP_SYS_ADMIN)")]
    XattrDenied { dir: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn detail(messages: &[String]) -> String {
    if messages.is_empty() {
        String::new()
    } else {
        format!(" ({})", messages.join("; "))
    }
}

fn xattr_hint(fstype: &str) -> &'static str {
    if fstype == "tmpfs" {
        " (this kernel's tmpfs lacks CONFIG_TMPFS_XATTR)"
    } else {
        ""
    }
}

impl OverlayError {
    fn io(context: impl Into<String>, source: io::Error) -> OverlayError {
        OverlayError::Io {
            context: context.into(),
            source,
        }
    }

    /// The caller asked for something that cannot be mounted as given (or
    /// the store is on a filesystem overlayfs cannot use): not a transient
    /// failure of the host.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            OverlayError::NoLayers { .. }
                | OverlayError::TooManyLayers { .. }
                | OverlayError::RelativePath(_)
                | OverlayError::BadDir { .. }
                | OverlayError::DifferentFs { .. }
                | OverlayError::Nested { .. }
                | OverlayError::OptionsTooLong { .. }
                | OverlayError::UpperOnOverlay { .. }
                | OverlayError::NoXattr { .. }
        )
    }
}

pub type Result<T, E = OverlayError> = std::result::Result<T, E>;

/// Which kernel interface [`apply`] uses for an overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MountApi {
    /// The new mount API when the kernel has `lowerdir+`, else mount(2).
    #[default]
    Auto,
    /// Only the new mount API (fsopen/fsconfig/fsmount).
    New,
    /// Only mount(2) (with short symlinks when the paths do not fit).
    Legacy,
}

/// The writable layer of a container's rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpperDirs {
    pub upper: PathBuf,
    /// overlayfs's scratch dir: empty, on the same filesystem as `upper`.
    pub work: PathBuf,
    /// Mount with `volatile`: overlayfs skips every sync of the upper
    /// filesystem, the one at unmount included (which otherwise syncs the
    /// whole filesystem the upper dir is on). Only for a writable layer
    /// that is thrown away with its container (`--rm`): after a crash its
    /// content may be incomplete.
    pub volatile: bool,
}

/// What to mount on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedMount {
    /// An overlay of `lowers` (top first); read-only when `upper` is none.
    Overlay {
        lowers: Vec<PathBuf>,
        upper: Option<UpperDirs>,
    },
    /// A bind mount of `source`.
    Bind { source: PathBuf, readonly: bool },
}

/// A rootfs mount worked out, not yet done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayPlan {
    pub target: PathBuf,
    pub mount: PlannedMount,
    pub api: MountApi,
}

impl OverlayPlan {
    /// The same plan with a volatile upper dir (see [`UpperDirs::volatile`]).
    pub fn volatile(mut self) -> OverlayPlan {
        if let PlannedMount::Overlay { upper: Some(u), .. } = &mut self.mount {
            u.volatile = true;
        }
        self
    }

    /// The same plan, mounted with the given kernel interface.
    pub fn with_api(mut self, api: MountApi) -> OverlayPlan {
        self.api = api;
        self
    }

    /// Whether the mounted tree is read-only.
    pub fn is_readonly(&self) -> bool {
        match &self.mount {
            PlannedMount::Overlay { upper, .. } => upper.is_none(),
            PlannedMount::Bind { readonly, .. } => *readonly,
        }
    }
}

/// The writable rootfs of a container: `lowers` (the image's layer diff
/// dirs, top first) under `upper`, with overlayfs's `work` dir, on `target`.
pub fn plan(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> OverlayPlan {
    let mount = if lowers.is_empty() {
        PlannedMount::Bind {
            source: upper.to_path_buf(),
            readonly: false,
        }
    } else {
        PlannedMount::Overlay {
            lowers: lowers.to_vec(),
            upper: Some(UpperDirs {
                upper: upper.to_path_buf(),
                work: work.to_path_buf(),
                volatile: false,
            }),
        }
    };
    OverlayPlan {
        target: target.to_path_buf(),
        mount,
        api: MountApi::Auto,
    }
}

/// A read-only view of `lowers` (top first) on `target`, for exporting or
/// inspecting an image.
pub fn plan_readonly(lowers: &[PathBuf], target: &Path) -> OverlayPlan {
    let mount = match lowers {
        [one] => PlannedMount::Bind {
            source: one.clone(),
            readonly: true,
        },
        _ => PlannedMount::Overlay {
            lowers: lowers.to_vec(),
            upper: None,
        },
    };
    OverlayPlan {
        target: target.to_path_buf(),
        mount,
        api: MountApi::Auto,
    }
}

/// Mount a plan on its target, in the calling thread's mount namespace.
///
/// Checks the paths first (absolute, existing directories, upper and work
/// dir on one filesystem and not inside one another, at most
/// [`MAX_LAYERS`] layers) so that errors name the object at fault. It does
/// not probe the upper dir's filesystem: call [`check_upper_fs`] once for
/// the store.
pub fn apply(plan: &OverlayPlan) -> Result<()> {
    let target = &plan.target;
    absolute(target)?;
    match &plan.mount {
        PlannedMount::Bind { source, readonly } => {
            absolute(source)?;
            check_dir("source dir", source)?;
            bind(source, target, *readonly)
        }
        PlannedMount::Overlay { lowers, upper } => {
            check(lowers, upper.as_ref(), target)?;
            if let Some(u) = upper {
                clear_volatile_mark(&u.work)?;
            }
            let new_api = match plan.api {
                MountApi::New => true,
                MountApi::Legacy => false,
                MountApi::Auto => has_lowerdir_add()
                    .map_err(|e| mount_err(target, "probing overlayfs for lowerdir+", e, vec![]))?,
            };
            if new_api {
                return mount_new(lowers, upper.as_ref(), target);
            }
            mount_legacy(lowers, upper.as_ref(), target)
        }
    }
}

/// Unmount `target`. Not an error when nothing is mounted there (or the
/// path is gone), so it can be called again after a failure; a busy mount
/// is detached (it goes away once its last user does).
pub fn unmount(target: &Path) -> Result<()> {
    use nix::errno::Errno;
    let err = |e: Errno| OverlayError::Unmount {
        target: target.to_path_buf(),
        source: e.into(),
    };
    match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => {
            tracing::debug!(target = %target.display(), "mount busy; detaching it");
            nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW | MntFlags::MNT_DETACH)
                .map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

/// Whether this kernel has overlayfs (listed in /proc/filesystems, or a
/// module the kernel loads on first use).
pub fn supports_overlay() -> bool {
    let listed = fs::read_to_string("/proc/filesystems").is_ok_and(|s| {
        s.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    });
    // fsopen loads the module if there is one (and needs CAP_SYS_ADMIN).
    listed || FsContext::open("overlay").is_ok()
}

/// Check that overlayfs can use an upper dir (and work dir) in `dir`: the
/// filesystem must not be overlayfs, and must take `trusted.*` extended
/// attributes (overlayfs records whiteouts and opaque dirs in them; tmpfs
/// does only with CONFIG_TMPFS_XATTR). Creates and removes a probe file.
pub fn check_upper_fs(dir: &Path) -> Result<()> {
    let st = nix::sys::statfs::statfs(dir)
        .map_err(|e| OverlayError::io(format!("statfs {}", dir.display()), e.into()))?;
    let fstype = st.filesystem_type();
    if fstype == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC {
        return Err(OverlayError::UpperOnOverlay {
            dir: dir.to_path_buf(),
        });
    }
    let probe = dir.join(format!(
        ".berth-xattr-probe-{}",
        crate::store::random_name()
    ));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| OverlayError::io(format!("creating {}", probe.display()), e))?;
    let res = berth_sys::xattr::lset(&probe, b"trusted.overlay.berth-probe", b"y");
    let _ = fs::remove_file(&probe);
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Err(OverlayError::NoXattr {
            dir: dir.to_path_buf(),
            fstype: fs_name(fstype.0 as i64),
        }),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(OverlayError::XattrDenied {
            dir: dir.to_path_buf(),
        }),
        Err(e) => Err(OverlayError::io(
            format!("setting a trusted.* xattr on {}", probe.display()),
            e,
        )),
    }
}

fn fs_name(magic: i64) -> String {
    let name = match magic {
        0x794c_7630 => "overlay",
        0x0102_1994 => "tmpfs",
        0x8584_58f6 => "ramfs",
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0x2fc1_2fc1 => "zfs",
        0x7371_7368 => "squashfs",
        0x0102_1997 => "9p",
        0xf2f5_2010 => "f2fs",
        0xca45_1a4e => "bcachefs",
        _ => return format!("filesystem type {magic:#x}"),
    };
    name.to_string()
}

fn absolute(p: &Path) -> Result<()> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(OverlayError::RelativePath(p.to_path_buf()))
    }
}

fn check_dir(what: &'static str, p: &Path) -> Result<fs::Metadata> {
    let bad = |source| OverlayError::BadDir {
        what,
        path: p.to_path_buf(),
        source,
    };
    let m = fs::metadata(p).map_err(bad)?;
    if !m.is_dir() {
        return Err(bad(io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    Ok(m)
}

/// Checks before mounting, so that failures name the object at fault
/// rather than the kernel's bare EINVAL.
fn check(lowers: &[PathBuf], upper: Option<&UpperDirs>, target: &Path) -> Result<()> {
    if lowers.is_empty() {
        return Err(OverlayError::NoLayers {
            target: target.to_path_buf(),
        });
    }
    if lowers.len() > MAX_LAYERS {
        return Err(OverlayError::TooManyLayers {
            target: target.to_path_buf(),
            count: lowers.len(),
        });
    }
    for l in lowers {
        absolute(l)?;
    }
    if let Some(u) = upper {
        absolute(&u.upper)?;
        absolute(&u.work)?;
        if u.work.starts_with(&u.upper) || u.upper.starts_with(&u.work) {
            return Err(OverlayError::Nested {
                upper: u.upper.clone(),
                work: u.work.clone(),
            });
        }
    }
    for l in lowers {
        check_dir("lower dir", l)?;
    }
    if let Some(u) = upper {
        let um = check_dir("upper dir", &u.upper)?;
        let wm = check_dir("work dir", &u.work)?;
        if um.dev() != wm.dev() {
            return Err(OverlayError::DifferentFs {
                upper: u.upper.clone(),
                work: u.work.clone(),
            });
        }
    }
    check_dir("target", target)?;
    Ok(())
}

fn mount_err(
    target: &Path,
    step: impl Into<String>,
    source: io::Error,
    messages: Vec<String>,
) -> OverlayError {
    OverlayError::Mount {
        target: target.to_path_buf(),
        step: step.into(),
        source,
        messages,
    }
}

fn bind(source: &Path, target: &Path, readonly: bool) -> Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        mount_err(
            target,
            format!("bind mount of {}", source.display()),
            e.into(),
            vec![],
        )
    })?;
    if readonly {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = unmount(target);
            return Err(mount_err(
                target,
                "making the bind mount read-only",
                e.into(),
                vec![],
            ));
        }
    }
    Ok(())
}

/// Whether overlayfs takes `lowerdir+` through fsconfig (Linux 6.8): so
/// on any 6.8 or later; on older kernels (a backport may have it) found
/// once per process by probing a throwaway context — not on every start,
/// as freeing an overlay context waits for an expedited RCU grace period
/// (an IPI to every CPU; in a VM whose other CPU sleeps, up to a
/// millisecond):
/// - before 5.2 there is no fsopen;
/// - before 6.5 overlayfs has a "legacy" context that accepts any key
///   (it only builds an option string for mount(2), of at most a page),
///   which a made-up key shows;
/// - 6.5 to 6.7 refuse `lowerdir+` as an unknown parameter.
fn has_lowerdir_add() -> io::Result<bool> {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if let Some(found) = FOUND.get() {
        return Ok(*found);
    }
    let found =
        berth_sys::process::kernel_version().is_some_and(|v| v >= (6, 8)) || probe_lowerdir_add()?;
    tracing::debug!(found, "overlayfs lowerdir+ probe");
    Ok(*FOUND.get_or_init(|| found))
}

fn probe_lowerdir_add() -> io::Result<bool> {
    let ctx = match FsContext::open("overlay") {
        Ok(c) => c,
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => return Ok(false),
        Err(e) => return Err(e),
    };
    match ctx.set_string("lowerdir+", OsStr::new("/")) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
        Err(e) => return Err(e),
    }
    Ok(ctx
        .set_string("berth-no-such-option", OsStr::new("x"))
        .is_err())
}

/// A string for an fsconfig path parameter: the path itself when it fits,
/// else `/proc/self/fd/N` of an O_PATH descriptor kept in `fds`.
fn fsconfig_path(path: &Path, fds: &mut Vec<OwnedFd>) -> io::Result<OsString> {
    if path.as_os_str().len() <= FSCONFIG_MAX_STRING {
        return Ok(path.as_os_str().to_owned());
    }
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let s = OsString::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    fds.push(fd);
    Ok(s)
}

fn mount_new(lowers: &[PathBuf], upper: Option<&UpperDirs>, target: &Path) -> Result<()> {
    let ctx =
        FsContext::open("overlay").map_err(|e| mount_err(target, "fsopen overlay", e, vec![]))?;
    let mut fds = Vec::new();
    let set = |key: &str, path: &Path, fds: &mut Vec<OwnedFd>| -> io::Result<()> {
        let value = fsconfig_path(path, fds)?;
        ctx.set_string(key, &value)
    };
    // lowerdir+ appends below the layers given so far: top first.
    for l in lowers {
        set("lowerdir+", l, &mut fds).map_err(|e| {
            mount_err(
                target,
                format!("lower dir {}", l.display()),
                e,
                ctx.messages(),
            )
        })?;
    }
    if let Some(u) = upper {
        set("upperdir", &u.upper, &mut fds).map_err(|e| {
            mount_err(
                target,
                format!("upper dir {}", u.upper.display()),
                e,
                ctx.messages(),
            )
        })?;
        set("workdir", &u.work, &mut fds).map_err(|e| {
            mount_err(
                target,
                format!("work dir {}", u.work.display()),
                e,
                ctx.messages(),
            )
        })?;
        // The inodes index ties an upper dir to one set of lowers; layers
        // are shared between containers, so it stays off.
        ctx.set_string("index", OsStr::new("off"))
            .map_err(|e| mount_err(target, "option index=off", e, ctx.messages()))?;
        if u.volatile {
            ctx.set_flag("volatile")
                .map_err(|e| mount_err(target, "option volatile", e, ctx.messages()))?;
        }
    }
    ctx.create()
        .map_err(|e| mount_err(target, "creating the overlay", e, ctx.messages()))?;
    drop(fds);
    let attrs = if upper.is_none() {
        berth_sys::mount::MOUNT_ATTR_RDONLY
    } else {
        0
    };
    let mnt = ctx
        .mount(attrs)
        .map_err(|e| mount_err(target, "fsmount", e, ctx.messages()))?;
    move_mount_to(mnt.as_fd(), target).map_err(|e| mount_err(target, "move_mount", e, vec![]))
}

/// The mount(2) data for an overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LegacyData {
    /// Options with the absolute paths.
    Direct(Vec<u8>),
    /// Options naming the symlinks `0`, `1`, … (lowers, top first), `u`
    /// and `w` of a link directory, to be resolved from inside it.
    Links(Vec<u8>),
}

/// Characters overlayfs's option parser treats specially in a path.
fn needs_escape(p: &Path) -> bool {
    p.as_os_str()
        .as_bytes()
        .iter()
        .any(|b| matches!(b, b':' | b',' | b'\\'))
}

fn options(lowers: &[&[u8]], upper: Option<(&[u8], &[u8], bool)>) -> Vec<u8> {
    let mut data = b"lowerdir=".to_vec();
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            data.push(b':');
        }
        data.extend_from_slice(l);
    }
    if let Some((u, w, volatile)) = upper {
        data.extend_from_slice(b",upperdir=");
        data.extend_from_slice(u);
        data.extend_from_slice(b",workdir=");
        data.extend_from_slice(w);
        data.extend_from_slice(b",index=off");
        if volatile {
            data.extend_from_slice(b",volatile");
        }
    }
    data
}

/// Work out the mount(2) options, within `max` bytes (a page less the NUL).
/// Err holds the length of the shortest form.
fn legacy_data(
    lowers: &[PathBuf],
    upper: Option<&UpperDirs>,
    max: usize,
) -> Result<LegacyData, usize> {
    let mut all = lowers.iter().collect::<Vec<_>>();
    if let Some(u) = upper {
        all.push(&u.upper);
        all.push(&u.work);
    }
    if !all.iter().any(|p| needs_escape(p)) {
        let ls: Vec<&[u8]> = lowers.iter().map(|l| l.as_os_str().as_bytes()).collect();
        let data = options(
            &ls,
            upper.map(|u| {
                (
                    u.upper.as_os_str().as_bytes(),
                    u.work.as_os_str().as_bytes(),
                    u.volatile,
                )
            }),
        );
        if data.len() <= max {
            return Ok(LegacyData::Direct(data));
        }
    }
    let names: Vec<String> = (0..lowers.len()).map(|i| i.to_string()).collect();
    let ls: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
    let data = options(&ls, upper.map(|u| (&b"u"[..], &b"w"[..], u.volatile)));
    if data.len() <= max {
        Ok(LegacyData::Links(data))
    } else {
        Err(data.len())
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(4096)
}

fn mount_legacy(lowers: &[PathBuf], upper: Option<&UpperDirs>, target: &Path) -> Result<()> {
    let max = page_size() - 1;
    let data = legacy_data(lowers, upper, max).map_err(|len| OverlayError::OptionsTooLong {
        target: target.to_path_buf(),
        layers: lowers.len(),
        len,
        max,
    })?;
    let flags = if upper.is_none() {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    match data {
        LegacyData::Direct(data) => mount_overlay_data(target, flags, OsStr::from_bytes(&data)),
        LegacyData::Links(data) => {
            let links = LinkDir::create(lowers, upper)?;
            let dir = links.path.clone();
            let target_buf = target.to_path_buf();
            let data = OsString::from_vec(data);
            // The relative names are resolved against the working directory:
            // a thread of its own, with its own (unshared) one, changes it.
            let res = std::thread::Builder::new()
                .name("berth-ovl-mount".into())
                .spawn(move || -> Result<()> {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(|e| {
                        mount_err(&target_buf, "unshare(CLONE_FS)", e.into(), vec![])
                    })?;
                    nix::unistd::chdir(&dir).map_err(|e| {
                        mount_err(
                            &target_buf,
                            format!("chdir {}", dir.display()),
                            e.into(),
                            vec![],
                        )
                    })?;
                    mount_overlay_data(&target_buf, flags, &data)
                })
                .map_err(|e| mount_err(target, "starting the mount thread", e, vec![]))?
                .join();
            drop(links);
            match res {
                Ok(r) => r,
                Err(_) => Err(mount_err(
                    target,
                    "the mount thread",
                    io::Error::other("panicked"),
                    vec![],
                )),
            }
        }
    }
}

/// A volatile mount leaves `work/work/incompat/volatile` behind, and
/// overlayfs refuses every later mount of that upper dir while it exists
/// (its content may be incomplete after a crash). berth mounts upper dirs
/// volatile only when the container is thrown away afterwards, so a mark
/// still there means the same container is mounted again (a crash before
/// its removal, or `cp` into it meanwhile): clear it.
fn clear_volatile_mark(work: &Path) -> Result<()> {
    let mark = work.join("work/incompat/volatile");
    match fs::remove_dir_all(&mark) {
        Ok(()) => {
            tracing::debug!(mark = %mark.display(), "cleared a volatile mark");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(mount_err(&mark, "clearing the volatile mark", e, vec![])),
    }
}

fn mount_overlay_data(target: &Path, flags: MsFlags, data: &OsStr) -> Result<()> {
    nix::mount::mount(Some("overlay"), target, Some("overlay"), flags, Some(data))
        .map_err(|e| mount_err(target, "mount(2)", e.into(), vec![]))
}

/// A private directory of short symlinks to the layers, removed on drop
/// (overlayfs resolves them at mount time and does not need them after).
struct LinkDir {
    path: PathBuf,
}

impl LinkDir {
    fn create(lowers: &[PathBuf], upper: Option<&UpperDirs>) -> Result<LinkDir> {
        let base = std::env::temp_dir();
        let mut tries = 0;
        let path = loop {
            let p = base.join(format!("berth-ovl-{}", crate::store::random_name()));
            match fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => break p,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 16 => tries += 1,
                Err(e) => return Err(OverlayError::io(format!("creating {}", p.display()), e)),
            }
        };
        let dir = LinkDir { path };
        let mut links: Vec<(String, &Path)> = lowers
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), l.as_path()))
            .collect();
        if let Some(u) = upper {
            links.push(("u".into(), &u.upper));
            links.push(("w".into(), &u.work));
        }
        for (name, to) in links {
            let link = dir.path.join(name);
            std::os::unix::fs::symlink(to, &link)
                .map_err(|e| OverlayError::io(format!("creating symlink {}", link.display()), e))?;
        }
        Ok(dir)
    }
}

impl Drop for LinkDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "removing overlay link dir");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use std::os::unix::fs::FileTypeExt;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    // ---- plans: no root needed ----

    #[test]
    fn plan_shapes() {
        let lowers = vec![p("/l/2"), p("/l/1")];
        let rw = plan(&lowers, &p("/c/upper"), &p("/c/work"), &p("/c/rootfs"));
        assert_eq!(
            rw.mount,
            PlannedMount::Overlay {
                lowers: lowers.clone(),
                upper: Some(UpperDirs {
                    upper: p("/c/upper"),
                    work: p("/c/work"),
                    volatile: false,
                }),
            }
        );
        assert!(!rw.is_readonly());
        assert_eq!(rw.api, MountApi::Auto);
        let ro = plan_readonly(&lowers, &p("/t"));
        assert!(ro.is_readonly());
        assert!(matches!(
            ro.mount,
            PlannedMount::Overlay { upper: None, .. }
        ));
        // One layer read-only: a read-only bind (overlayfs wants two lowers).
        assert_eq!(
            plan_readonly(&[p("/l/1")], &p("/t")).mount,
            PlannedMount::Bind {
                source: p("/l/1"),
                readonly: true
            }
        );
        // No layers, writable: the upper dir itself.
        assert_eq!(
            plan(&[], &p("/c/upper"), &p("/c/work"), &p("/t")).mount,
            PlannedMount::Bind {
                source: p("/c/upper"),
                readonly: false
            }
        );
        assert_eq!(ro.with_api(MountApi::Legacy).api, MountApi::Legacy);
    }

    #[test]
    fn legacy_options() {
        let upper = UpperDirs {
            upper: p("/c/u"),
            work: p("/c/w"),
            volatile: false,
        };
        let lowers = vec![p("/l/b"), p("/l/a")];
        assert_eq!(
            legacy_data(&lowers, Some(&upper), 4095),
            Ok(LegacyData::Direct(
                b"lowerdir=/l/b:/l/a,upperdir=/c/u,workdir=/c/w,index=off".to_vec()
            ))
        );
        assert_eq!(
            legacy_data(&lowers, None, 4095),
            Ok(LegacyData::Direct(b"lowerdir=/l/b:/l/a".to_vec()))
        );
        let volatile = UpperDirs {
            volatile: true,
            ..upper.clone()
        };
        assert_eq!(
            legacy_data(&lowers, Some(&volatile), 4095),
            Ok(LegacyData::Direct(
                b"lowerdir=/l/b:/l/a,upperdir=/c/u,workdir=/c/w,index=off,volatile".to_vec()
            ))
        );
        // Too long with absolute paths: short links.
        assert_eq!(
            legacy_data(&lowers, Some(&upper), 45),
            Ok(LegacyData::Links(
                b"lowerdir=0:1,upperdir=u,workdir=w,index=off".to_vec()
            ))
        );
        // Paths overlayfs would split: short links, whatever the length.
        let odd = vec![p("/l/a:b"), p("/l/c,d")];
        assert_eq!(
            legacy_data(&odd, None, 4095),
            Ok(LegacyData::Links(b"lowerdir=0:1".to_vec()))
        );
        // 500 layers of 64-hex chain ids do not fit a page as paths, but do
        // as links.
        let many: Vec<PathBuf> = (0..500)
            .map(|i| p(&format!("/var/lib/berth/layers/{:064x}/diff", i)))
            .collect();
        match legacy_data(&many, Some(&upper), 4095) {
            Ok(LegacyData::Links(d)) => assert!(d.len() < 4095),
            other => panic!("{other:?}"),
        }
        // Too long even so: the length is reported.
        assert_eq!(legacy_data(&many, Some(&upper), 100).unwrap_err(), 1929);
    }

    #[test]
    fn apply_refuses_bad_plans_before_mounting() {
        let t = p("/nonexistent-target");
        let err = apply(&plan_readonly(&[], &t)).unwrap_err();
        assert!(matches!(err, OverlayError::NoLayers { .. }), "{err}");
        let many: Vec<PathBuf> = (0..501).map(|i| p(&format!("/l/{i}"))).collect();
        let err = apply(&plan_readonly(&many, &t)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "overlay on /nonexistent-target: 501 layers, more than the 500 overlayfs can stack"
        );
        let err = apply(&plan_readonly(&[p("/a"), p("b")], &t)).unwrap_err();
        assert_eq!(err.to_string(), "overlay path \"b\" must be absolute");
        let err = apply(&plan(&[p("/a")], &p("/u"), &p("/w"), &p("rel"))).unwrap_err();
        assert!(matches!(err, OverlayError::RelativePath(_)), "{err}");
        let err = apply(&plan(&[p("/a")], &p("/c/u"), &p("/c/u/w"), &t)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "overlay work dir /c/u/w and upper dir /c/u must not be inside one another"
        );
        let err = apply(&plan_readonly(&[p("/nonexistent-lower"), p("/")], &t)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("overlay lower dir /nonexistent-lower: "),
            "{err}"
        );
        assert!(err.is_invalid_input());
    }

    #[test]
    fn overlay_is_supported_here() {
        // The kernels berth targets have overlayfs; a CI without it should
        // say so rather than skip the mount tests silently.
        assert!(supports_overlay());
    }

    #[test]
    fn lowerdir_add_probe_matches_the_kernel() {
        if !root() {
            return;
        }
        let version = berth_sys::process::kernel_version().unwrap();
        assert!(version >= (5, 0), "{version:?}");
        // The probe itself agrees with the version, which decides alone
        // from 6.8 on.
        assert_eq!(
            probe_lowerdir_add().unwrap(),
            version >= (6, 8),
            "{version:?}"
        );
        assert_eq!(has_lowerdir_add().unwrap(), version >= (6, 8));
    }

    // ---- mounts: root ----

    /// True when running as root; fails the test otherwise, unless
    /// BERTH_SKIP_ROOT_TESTS=1 asks to skip root tests.
    fn root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        if std::env::var("BERTH_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
            eprintln!("skipped: needs root");
            return false;
        }
        panic!("this test needs root (set BERTH_SKIP_ROOT_TESTS=1 to skip root tests)");
    }

    /// Unmounts on drop, so a failing test does not leave mounts behind.
    struct Mounted(PathBuf);

    impl Mounted {
        fn apply(plan: &OverlayPlan) -> Mounted {
            apply(plan).unwrap();
            Mounted(plan.target.clone())
        }
    }

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }

    fn mkdirs(base: &Path, names: &[&str]) -> Vec<PathBuf> {
        names
            .iter()
            .map(|n| {
                let d = base.join(n);
                fs::create_dir_all(&d).unwrap();
                d
            })
            .collect()
    }

    fn whiteout(path: &Path) {
        mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).unwrap();
    }

    fn opaque(dir: &Path) {
        berth_sys::xattr::lset(dir, b"trusted.overlay.opaque", b"y").unwrap();
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn is_mountpoint(p: &Path) -> bool {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let want = p.to_str().unwrap();
        info.lines().any(|l| l.split(' ').nth(4) == Some(want))
    }

    /// Three layers, bottom to top: l0 has the base files, l1 changes one,
    /// deletes one (whiteout) and makes a dir opaque, l2 changes and adds.
    fn three_layers(base: &Path) -> Vec<PathBuf> {
        let [l0, l1, l2]: [PathBuf; 3] = mkdirs(base, &["l0", "l1", "l2"]).try_into().unwrap();
        fs::write(l0.join("a"), "l0").unwrap();
        fs::write(l0.join("b"), "l0").unwrap();
        fs::write(l0.join("gone"), "l0").unwrap();
        fs::create_dir_all(l0.join("opq")).unwrap();
        fs::write(l0.join("opq/old"), "l0").unwrap();
        fs::create_dir_all(l0.join("keep")).unwrap();
        fs::write(l0.join("keep/k0"), "l0").unwrap();

        fs::write(l1.join("a"), "l1").unwrap();
        whiteout(&l1.join("gone"));
        fs::create_dir_all(l1.join("opq")).unwrap();
        opaque(&l1.join("opq"));
        fs::write(l1.join("opq/new"), "l1").unwrap();
        fs::create_dir_all(l1.join("keep")).unwrap();
        fs::write(l1.join("keep/k1"), "l1").unwrap();

        fs::write(l2.join("a"), "l2").unwrap();
        fs::write(l2.join("c"), "l2").unwrap();
        // Top first.
        vec![l2, l1, l0]
    }

    fn check_three_layer_view(m: &Path) {
        assert_eq!(read(&m.join("a")), "l2");
        assert_eq!(read(&m.join("b")), "l0");
        assert_eq!(read(&m.join("c")), "l2");
        assert!(!m.join("gone").exists(), "whiteout hides the lower file");
        assert_eq!(
            names(&m.join("opq")),
            ["new"],
            "opaque dir hides the lower dir"
        );
        assert_eq!(names(&m.join("keep")), ["k0", "k1"], "dirs merge");
        assert_eq!(names(m), ["a", "b", "c", "keep", "opq"]);
    }

    fn rw_three_layers(api: MountApi) {
        if !root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        check_upper_fs(t.path()).unwrap();
        let lowers = three_layers(t.path());
        let [upper, work, merged]: [PathBuf; 3] = mkdirs(t.path(), &["upper", "work", "merged"])
            .try_into()
            .unwrap();
        let plan = plan(&lowers, &upper, &work, &merged).with_api(api);
        let guard = Mounted::apply(&plan);
        assert!(is_mountpoint(&merged));
        check_three_layer_view(&merged);

        // Writes land in the upper dir; the layers stay as they were.
        fs::write(merged.join("new"), "container").unwrap();
        fs::write(merged.join("b"), "changed").unwrap();
        fs::remove_file(merged.join("c")).unwrap();
        fs::remove_dir_all(merged.join("keep")).unwrap();
        assert_eq!(read(&merged.join("b")), "changed");
        assert!(!merged.join("c").exists());
        unmount(&merged).unwrap();
        drop(guard);
        assert!(!is_mountpoint(&merged));
        assert!(names(&merged).is_empty());
        assert_eq!(read(&upper.join("new")), "container");
        assert_eq!(read(&upper.join("b")), "changed");
        let c = fs::symlink_metadata(upper.join("c")).unwrap();
        assert!(
            c.file_type().is_char_device() && c.rdev() == 0,
            "deletion is a whiteout"
        );
        assert_eq!(read(&lowers[2].join("b")), "l0");
        assert_eq!(read(&lowers[0].join("c")), "l2");
        // Unmounting again is fine.
        unmount(&merged).unwrap();
    }

    #[test]
    fn three_layers_new_api() {
        rw_three_layers(MountApi::New);
    }

    #[test]
    fn three_layers_auto() {
        rw_three_layers(MountApi::Auto);
    }

    #[test]
    fn three_layers_mount2() {
        rw_three_layers(MountApi::Legacy);
    }

    fn volatile_remount(api: MountApi) {
        if !root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let lowers = three_layers(t.path());
        let [upper, work, merged]: [PathBuf; 3] = mkdirs(t.path(), &["upper", "work", "merged"])
            .try_into()
            .unwrap();
        let plan = plan(&lowers, &upper, &work, &merged).with_api(api);
        let guard = Mounted::apply(&plan.clone().volatile());
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info
            .lines()
            .find(|l| l.split(' ').nth(4) == merged.to_str())
            .unwrap();
        assert!(line.contains("volatile"), "{line}");
        fs::write(merged.join("new"), "container").unwrap();
        unmount(&merged).unwrap();
        drop(guard);
        assert!(
            work.join("work/incompat/volatile").is_dir(),
            "overlayfs marks the work dir"
        );
        // The same upper dir mounts again, volatile or not: the mark goes.
        for again in [plan.clone().volatile(), plan.clone()] {
            let guard = Mounted::apply(&again);
            assert_eq!(read(&merged.join("new")), "container");
            check_three_layer_view_but_new(&merged);
            unmount(&merged).unwrap();
            drop(guard);
        }
    }

    fn check_three_layer_view_but_new(m: &Path) {
        assert_eq!(read(&m.join("a")), "l2");
        assert!(!m.join("gone").exists());
    }

    #[test]
    fn volatile_upper_new_api() {
        volatile_remount(MountApi::New);
    }

    #[test]
    fn volatile_upper_mount2() {
        volatile_remount(MountApi::Legacy);
    }

    fn ro_three_layers(api: MountApi) {
        if !root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let lowers = three_layers(t.path());
        let merged = mkdirs(t.path(), &["merged"]).remove(0);
        let _guard = Mounted::apply(&plan_readonly(&lowers, &merged).with_api(api));
        check_three_layer_view(&merged);
        let err = fs::write(merged.join("x"), "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        unmount(&merged).unwrap();
        assert!(!is_mountpoint(&merged));
    }

    #[test]
    fn readonly_overlay_new_api() {
        ro_three_layers(MountApi::New);
    }

    #[test]
    fn readonly_overlay_mount2() {
        ro_three_layers(MountApi::Legacy);
    }

    #[test]
    fn readonly_single_layer_and_rw_without_layers() {
        if !root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let [l0, upper, work, m1, m2]: [PathBuf; 5] =
            mkdirs(t.path(), &["l0", "upper", "work", "m1", "m2"])
                .try_into()
                .unwrap();
        fs::write(l0.join("f"), "l0").unwrap();
        let _g1 = Mounted::apply(&plan_readonly(std::slice::from_ref(&l0), &m1));
        assert_eq!(read(&m1.join("f")), "l0");
        assert_eq!(
            fs::write(m1.join("x"), "x").unwrap_err().raw_os_error(),
            Some(libc::EROFS)
        );
        let _g2 = Mounted::apply(&plan(&[], &upper, &work, &m2));
        fs::write(m2.join("x"), "x").unwrap();
        assert_eq!(read(&upper.join("x")), "x");
        unmount(&m1).unwrap();
        unmount(&m2).unwrap();
    }

    /// 200 layers whose paths are each longer than fsconfig's 255-byte
    /// string limit, together far more than a 4 KiB page of options.
    fn many_layers(api: MountApi) {
        if !root() {
            return;
        }
        const N: usize = 200;
        let t = tempfile::tempdir().unwrap();
        let deep = (0..5).fold(t.path().to_path_buf(), |d, i| {
            d.join(format!(
                "a-rather-long-directory-name-to-make-the-layer-paths-long-{i}"
            ))
        });
        let lowers: Vec<PathBuf> = (0..N)
            .rev()
            .map(|i| deep.join(format!("layer-{i:03}")).join("diff"))
            .collect();
        assert!(lowers[0].as_os_str().len() > FSCONFIG_MAX_STRING);
        let total: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
        assert!(total > 8 * 4096, "{total}");
        // lowers[0] is the top layer, N-1.
        for (k, l) in lowers.iter().enumerate() {
            let i = N - 1 - k;
            fs::create_dir_all(l).unwrap();
            fs::write(l.join(format!("f{i:03}")), i.to_string()).unwrap();
            fs::write(l.join("common"), i.to_string()).unwrap();
        }
        // The top layer deletes the bottom layer's own file.
        whiteout(&lowers[0].join("f000"));
        let [upper, work, merged]: [PathBuf; 3] = mkdirs(&deep, &["upper", "work", "merged"])
            .try_into()
            .unwrap();
        let plan = plan(&lowers, &upper, &work, &merged).with_api(api);
        let guard = Mounted::apply(&plan);
        assert_eq!(read(&merged.join("common")), (N - 1).to_string());
        let seen = names(&merged);
        assert_eq!(seen.len(), N, "{seen:?}"); // f001..f199 and common
        assert!(!merged.join("f000").exists());
        for i in 1..N {
            assert_eq!(read(&merged.join(format!("f{i:03}"))), i.to_string());
        }
        fs::write(merged.join("common"), "upper").unwrap();
        unmount(&merged).unwrap();
        drop(guard);
        assert_eq!(read(&upper.join("common")), "upper");
        assert_eq!(read(&lowers[0].join("common")), (N - 1).to_string());
    }

    #[test]
    fn many_long_layers_new_api() {
        many_layers(MountApi::New);
    }

    #[test]
    fn many_long_layers_mount2() {
        many_layers(MountApi::Legacy);
    }

    #[test]
    fn paths_with_separators() {
        if !root() {
            return;
        }
        for api in [MountApi::New, MountApi::Legacy] {
            let t = tempfile::tempdir().unwrap();
            let lowers = mkdirs(t.path(), &["top:a,b", "bottom\\c"]);
            fs::write(lowers[0].join("t"), "top").unwrap();
            fs::write(lowers[1].join("b"), "bottom").unwrap();
            let [upper, work, merged]: [PathBuf; 3] =
                mkdirs(t.path(), &["up,per", "wo:rk", "merged"])
                    .try_into()
                    .unwrap();
            let _g = Mounted::apply(&plan(&lowers, &upper, &work, &merged).with_api(api));
            assert_eq!(read(&merged.join("t")), "top");
            assert_eq!(read(&merged.join("b")), "bottom");
            fs::write(merged.join("w"), "w").unwrap();
            assert_eq!(read(&upper.join("w")), "w");
            unmount(&merged).unwrap();
        }
    }

    #[test]
    fn mount_errors_name_the_target() {
        if !root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let [l0, l1, ro, merged]: [PathBuf; 4] = mkdirs(t.path(), &["l0", "l1", "ro", "merged"])
            .try_into()
            .unwrap();
        mkdirs(&l0, &["upper", "work"]);
        // An upper dir on overlayfs: refused by the kernel.
        let _ro = Mounted::apply(&plan_readonly(&[l0, l1.clone()], &ro));
        for api in [MountApi::New, MountApi::Legacy] {
            let p = plan(
                std::slice::from_ref(&l1),
                &ro.join("upper"),
                &ro.join("work"),
                &merged,
            )
            .with_api(api);
            let err = apply(&p).unwrap_err();
            let _g = Mounted(merged.clone());
            assert!(matches!(err, OverlayError::Mount { .. }), "{err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("mounting overlay on {}: ", merged.display())),
                "{err}"
            );
        }
    }

    #[test]
    fn upper_fs_checks() {
        if !root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let [tmpfs, ramfs, lower, lower2, merged]: [PathBuf; 5] =
            mkdirs(t.path(), &["tmpfs", "ramfs", "lower", "lower2", "merged"])
                .try_into()
                .unwrap();
        // The store's own filesystem here hosts an upper dir.
        check_upper_fs(t.path()).unwrap();
        // tmpfs does (with CONFIG_TMPFS_XATTR, as every distro kernel has).
        nix::mount::mount(
            Some("tmpfs"),
            &tmpfs,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let _g1 = Mounted(tmpfs.clone());
        check_upper_fs(&tmpfs).unwrap();
        // ramfs has no xattrs at all: a clear error.
        nix::mount::mount(
            Some("ramfs"),
            &ramfs,
            Some("ramfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let _g2 = Mounted(ramfs.clone());
        let err = check_upper_fs(&ramfs).unwrap_err();
        assert!(matches!(err, OverlayError::NoXattr { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("(ramfs) does not support trusted.* extended attributes"),
            "{err}"
        );
        assert!(names(&ramfs).is_empty(), "the probe file is removed");
        // An overlay cannot host an upper dir.
        let _g3 = Mounted::apply(&plan_readonly(&[lower, lower2], &merged));
        let err = check_upper_fs(&merged).unwrap_err();
        assert!(matches!(err, OverlayError::UpperOnOverlay { .. }), "{err}");
        assert!(err.is_invalid_input());
    }
}
