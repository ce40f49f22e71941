//! The OCI runtime spec (`config.json`) of a container, worked out from its
//! configuration and its image the way Docker works it out: the same
//! command, environment, capabilities, mounts, devices, masked paths,
//! resources and seccomp profile.
//!
//! Plan only: nothing here mounts, creates or starts anything. The reads
//! are the container's `/etc/passwd` and `/etc/group` (resolved inside its
//! rootfs, [`resolve_user`]), the `--device` nodes of the host (`stat`),
//! and the running kernel's version and host name where Docker's rules
//! depend on them.

use crate::config::{ContainerConfig, Mount, MountKind, NetworkMode, Seccomp};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Docker's default capabilities (moby `oci/caps`), in Docker's order.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability berth knows, in the kernel's numbering (0 to 40):
/// what `--privileged` and `--cap-add ALL` give. The runtime leaves out,
/// with a warning, those this host does not have.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The `PATH` a container gets when neither the image nor `-e` sets one.
pub const DEFAULT_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where `--init` puts the init program inside the container.
pub const INIT_PATH: &str = "/sbin/docker-init";

/// Docker's default `/dev/shm` size (64 MiB), in bytes.
const DEFAULT_SHM_SIZE: i64 = 64 << 20;

/// Docker's smallest memory limit (6 MiB).
const MIN_MEMORY: i64 = 6 << 20;

/// The CFS period `--cpus` uses, in microseconds (100 ms).
const CPU_PERIOD: u64 = 100_000;

/// The largest uid or gid Docker accepts.
const MAX_ID: i64 = i32::MAX as i64;

/// How much of the container's `/etc/passwd` or `/etc/group` is read.
const MAX_USER_FILE: u64 = 4 << 20;

/// Why a spec could not be made. Every variant but [`SpecError::Io`] is the
/// user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the image nor the command line gives a program to run.
    #[error("no command specified")]
    NoCommand,
    /// `-u NAME` with no such name in the container's `/etc/passwd`.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// `-u USER:NAME` with no such group in the container's `/etc/group`.
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    /// A numeric uid or gid out of range.
    #[error("invalid user {0:?}: uids and gids must be in range 0-2147483647")]
    IdRange(String),
    /// The container's `/etc/passwd` or `/etc/group` cannot be used.
    #[error("{path} in the container: {reason}")]
    UserFile { path: &'static str, reason: String },
    /// `-w` with a relative path.
    #[error("the working directory '{0}' is invalid, it needs to be an absolute path")]
    WorkingDir(String),
    /// `--cap-add`/`--cap-drop` with a name the kernel does not define.
    #[error("unknown capability: {0:?}")]
    UnknownCapability(String),
    /// A bad `--ulimit`.
    #[error("invalid ulimit {name:?}: {reason}")]
    Ulimit { name: String, reason: String },
    /// A bad `-v`, `--mount` or `--tmpfs`.
    #[error("invalid mount config for type {kind:?}: {reason}")]
    Mount { kind: &'static str, reason: String },
    /// Two mounts at one destination.
    #[error("duplicate mount point: {0}")]
    DuplicateMount(String),
    /// A tmpfs option that is neither a mount flag nor a tmpfs setting.
    #[error("invalid tmpfs option {0:?}")]
    TmpfsOption(String),
    /// A `--device` that cannot be used.
    #[error("error gathering device information while adding custom device {path:?}: {reason}")]
    Device { path: PathBuf, reason: String },
    /// `-m` below 6 MiB (Docker's wording).
    #[error("Minimum memory limit allowed is 6MB")]
    MemoryTooLow,
    /// `--memory-swap` below `-m` (Docker's wording).
    #[error("Minimum memoryswap limit should be larger than memory limit, see usage")]
    SwapBelowMemory,
    /// `--memory-swap` without `-m` (Docker's wording).
    #[error("You should always set the Memory limit when using Memoryswap limit, see usage")]
    SwapWithoutMemory,
    /// `--cpus` out of range for this host.
    #[error("range of CPUs is from 0.01 to {0}.00, as there are only {0} CPUs available")]
    CpuRange(usize),
    /// `--cpuset-cpus` that is not a CPU list.
    #[error("invalid value {0:?} for cpuset cpus")]
    Cpuset(String),
    /// A `--security-opt seccomp=FILE` profile that cannot be used.
    #[error("invalid seccomp profile: {0}")]
    Seccomp(String),
    /// The host failed an operation (opening the rootfs, reading a file).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl SpecError {
    /// Whether the user asked for something wrong (exit 125 / HTTP 400
    /// class) rather than the host failing.
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, SpecError::Io { .. })
    }
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> SpecError {
    let what = what.into();
    move |source| SpecError::Io { what, source }
}

// ---------------------------------------------------------------------------
// The image's part.
// ---------------------------------------------------------------------------

/// What an image's config contributes to its containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    /// `ENTRYPOINT`.
    pub entrypoint: Vec<String>,
    /// `CMD`.
    pub cmd: Vec<String>,
    /// `ENV`, each `KEY=VALUE`.
    pub env: Vec<String>,
    /// `WORKDIR` (empty: none).
    pub workdir: String,
    /// `USER` (empty: root).
    pub user: String,
    /// `LABEL`s.
    pub labels: BTreeMap<String, String>,
    /// `STOPSIGNAL`.
    pub stop_signal: Option<String>,
    /// `VOLUME` destinations.
    pub volumes: Vec<String>,
    /// `EXPOSE`d ports (`80/tcp`), for `-P`.
    pub exposed: Vec<String>,
}

impl ImageDefaults {
    /// The defaults of an image config; a config without its `config`
    /// section gives empty defaults.
    pub fn from_config(cfg: &oci_spec::image::ImageConfiguration) -> ImageDefaults {
        let Some(c) = cfg.config() else {
            return ImageDefaults::default();
        };
        ImageDefaults {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            workdir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
            labels: c
                .labels()
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            stop_signal: c.stop_signal().clone(),
            volumes: c.volumes().clone().unwrap_or_default(),
            exposed: c.exposed_ports().clone().unwrap_or_default(),
        }
    }
}

/// The program and its arguments, Docker's way: `--entrypoint` replaces
/// the image's entrypoint and then the image's CMD is not used (only the
/// arguments given); arguments replace the image's CMD; `--entrypoint ""`
/// clears the entrypoint.
pub fn command(cfg: &ContainerConfig, image: &ImageDefaults) -> Result<Vec<String>, SpecError> {
    let (entrypoint, cmd) = match &cfg.entrypoint {
        Some(ep) => (ep.as_slice(), cfg.cmd.as_slice()),
        None if cfg.cmd.is_empty() => (image.entrypoint.as_slice(), image.cmd.as_slice()),
        None => (image.entrypoint.as_slice(), cfg.cmd.as_slice()),
    };
    let entrypoint = if entrypoint == [""] { &[] } else { entrypoint };
    let args: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// The user the container runs as: `-u`, else the image's `USER`.
pub fn user_spec<'a>(cfg: &'a ContainerConfig, image: &'a ImageDefaults) -> &'a str {
    match cfg.user.as_deref() {
        Some(u) if !u.is_empty() => u,
        _ => &image.user,
    }
}

/// The container's host name: `--hostname`, else (Docker) the host's own
/// name with `--network host`, else the first 12 characters of the ID.
pub fn hostname(cfg: &ContainerConfig, id: &str) -> String {
    if let Some(h) = cfg.hostname.as_deref().filter(|h| !h.is_empty()) {
        return h.to_string();
    }
    if cfg.network == NetworkMode::Host {
        if let Ok(h) = nix::unistd::gethostname() {
            return h.to_string_lossy().into_owned();
        }
    }
    id.chars().take(12).collect()
}

/// The process's environment in Docker's order: `PATH` (the default, unless
/// set), `HOSTNAME`, `TERM=xterm` with a terminal, then `-e` and the
/// image's variables (`-e` wins; a bare `-e NAME` removes NAME), and
/// `HOME` from the user's passwd entry when nothing set it (as runc does).
pub fn environment(
    cfg: &ContainerConfig,
    image: &ImageDefaults,
    hostname: &str,
    home: &str,
) -> Vec<String> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH_ENV}"),
        format!("HOSTNAME={hostname}"),
    ];
    if cfg.tty {
        env.push("TERM=xterm".to_string());
    }
    let mut env = replace_or_append(env, &merge_env(&cfg.env, &image.env));
    if !env.iter().any(|e| env_key(e) == "HOME") {
        env.push(format!("HOME={home}"));
    }
    env
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// The container's variables (Docker's `create`): the user's, then the
/// image's whose name the user did not set.
fn merge_env(user: &[String], image: &[String]) -> Vec<String> {
    let mut out = user.to_vec();
    for e in image {
        if !user.iter().any(|u| env_key(u) == env_key(e)) {
            out.push(e.clone());
        }
    }
    out
}

/// Overrides replace the defaults of the same name in place or are
/// appended; an override without `=` removes the default of that name.
fn replace_or_append(mut defaults: Vec<String>, overrides: &[String]) -> Vec<String> {
    let index: BTreeMap<String, usize> = defaults
        .iter()
        .enumerate()
        .map(|(i, e)| (env_key(e).to_string(), i))
        .collect();
    let mut removed = HashSet::new();
    for o in overrides {
        match (o.contains('='), index.get(env_key(o))) {
            (true, Some(&i)) => defaults[i] = o.clone(),
            (true, None) => defaults.push(o.clone()),
            (false, Some(&i)) => {
                removed.insert(i);
            }
            (false, None) => {}
        }
    }
    defaults
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !removed.contains(i))
        .map(|(_, e)| e)
        .collect()
}

/// The working directory: `-w` (absolute, cleaned), else the image's, else
/// `/`.
pub fn working_dir(cfg: &ContainerConfig, image: &ImageDefaults) -> Result<String, SpecError> {
    if let Some(w) = cfg.workdir.as_deref().filter(|w| !w.is_empty()) {
        if !w.starts_with('/') {
            return Err(SpecError::WorkingDir(w.to_string()));
        }
        return Ok(clean_path(w));
    }
    if image.workdir.is_empty() {
        return Ok("/".to_string());
    }
    Ok(clean_path(&image.workdir))
}

/// A path cleaned lexically as Go's `filepath.Clean` does for absolute
/// paths (`//a/./b/../c/` is `/a/c`); a relative path is made absolute.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

// ---------------------------------------------------------------------------
// The user.
// ---------------------------------------------------------------------------

/// The user the container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// `process.user.uid`.
    pub uid: u32,
    /// `process.user.gid`: the entry's group, or the group `-u` names.
    pub gid: u32,
    /// `process.user.additionalGids` as Docker writes it: the primary gid
    /// first, then the groups of `/etc/group` that list the user (only
    /// when `-u` names no group).
    pub additional_gids: Vec<u32>,
    /// The home directory from `/etc/passwd` (`/` without an entry).
    pub home: String,
}

/// Resolve `user` (`""` for root, `name`, `uid`, `name:group`, `uid:gid`,
/// `name:gid`, `uid:group`) against the container's `/etc/passwd` and
/// `/etc/group`, Docker's way: numeric ids need no entry, a name must have
/// one, and a user named without a group gets the supplementary groups
/// that list it.
///
/// The files are opened inside `rootfs` (openat2 `RESOLVE_IN_ROOT`), so a
/// symlink in the image cannot make berth read a host file; at most 4 MiB
/// of each is read, and anything but a regular file is refused.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ResolvedUser, SpecError> {
    let root = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(rootfs)
        .map_err(io_error(format!("opening {}", rootfs.display())))?;
    let root = OwnedFd::from(root);
    let (user_arg, group_arg) = split_user(user);
    let passwd = read_in_root(root.as_fd(), "/etc/passwd")?;
    let found = find_user(user, user_arg, passwd.as_deref())?;
    let group = if group_arg.is_empty() && found.name.is_none() {
        None
    } else {
        read_in_root(root.as_fd(), "/etc/group")?
    };
    resolve_groups(user, found, group_arg, group.as_deref())
}

/// `user[:group]`; anything after a second `:` is ignored, as in Docker.
fn split_user(spec: &str) -> (&str, &str) {
    let mut parts = spec.split(':');
    (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    )
}

/// Read a file of the container, resolved inside its root. `None` when it
/// does not exist.
fn read_in_root(root: BorrowedFd<'_>, path: &'static str) -> Result<Option<String>, SpecError> {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
    let fd = match berth_sys::fd::open_in_root(root, Path::new(path), flags, 0) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(None)
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(SpecError::UserFile {
                path,
                reason: "too many levels of symbolic links".to_string(),
            })
        }
        Err(e) => return Err(io_error(format!("opening {path} in the container"))(e)),
    };
    let file = File::from(fd);
    let what = || format!("reading {path} in the container");
    let meta = file.metadata().map_err(io_error(what()))?;
    if !meta.is_file() {
        return Err(SpecError::UserFile {
            path,
            reason: "not a regular file".to_string(),
        });
    }
    let mut data = Vec::new();
    file.take(MAX_USER_FILE + 1)
        .read_to_end(&mut data)
        .map_err(io_error(what()))?;
    if data.len() as u64 > MAX_USER_FILE {
        return Err(SpecError::UserFile {
            path,
            reason: format!("larger than {} MiB", MAX_USER_FILE >> 20),
        });
    }
    Ok(Some(String::from_utf8_lossy(&data).into_owned()))
}

/// The fields of a file in `/etc/passwd` or `/etc/group` format, per
/// non-blank line.
fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(':').collect())
}

/// A numeric field as Go's `Atoi` reads it; unreadable numbers are 0 in
/// passwd and group entries, as in Docker.
fn number(field: Option<&&str>) -> i64 {
    field.and_then(|f| f.parse().ok()).unwrap_or(0)
}

/// What the passwd lookup found.
struct FoundUser {
    uid: i64,
    gid: i64,
    home: String,
    /// The entry's name, when an entry matched.
    name: Option<String>,
}

fn find_user(spec: &str, user_arg: &str, passwd: Option<&str>) -> Result<FoundUser, SpecError> {
    let numeric = user_arg.parse::<i64>().ok();
    let entry = passwd.and_then(|text| {
        entries(text).find(|f| {
            let uid = number(f.get(2));
            match numeric {
                _ if user_arg.is_empty() => uid == 0,
                Some(n) => uid == n,
                None => f[0] == user_arg,
            }
        })
    });
    if let Some(f) = entry {
        return Ok(FoundUser {
            uid: number(f.get(2)),
            gid: number(f.get(3)),
            home: f.get(5).copied().unwrap_or_default().to_string(),
            name: Some(f[0].to_string()),
        });
    }
    let uid = match numeric {
        _ if user_arg.is_empty() => 0,
        Some(n) if (0..=MAX_ID).contains(&n) => n,
        Some(_) => return Err(SpecError::IdRange(spec.to_string())),
        None => return Err(SpecError::UnknownUser(user_arg.to_string())),
    };
    Ok(FoundUser {
        uid,
        gid: 0,
        home: String::new(),
        name: None,
    })
}

fn resolve_groups(
    spec: &str,
    found: FoundUser,
    group_arg: &str,
    group: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let groups: Vec<Vec<&str>> = group.map(|t| entries(t).collect()).unwrap_or_default();
    let mut gid = found.gid;
    let mut supplementary = Vec::new();
    if !group_arg.is_empty() {
        let numeric = group_arg.parse::<i64>().ok();
        let entry = groups.iter().find(|f| match numeric {
            Some(n) => number(f.get(2)) == n,
            None => f[0] == group_arg,
        });
        gid = match (entry, numeric) {
            (Some(f), _) => number(f.get(2)),
            (None, Some(n)) if (0..=MAX_ID).contains(&n) => n,
            (None, Some(_)) => return Err(SpecError::IdRange(spec.to_string())),
            (None, None) => return Err(SpecError::UnknownGroup(group_arg.to_string())),
        };
    } else if let Some(name) = &found.name {
        supplementary = groups
            .iter()
            .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|u| u == name)))
            .map(|f| number(f.get(2)))
            .collect();
    }
    let id = |n: i64| u32::try_from(n).map_err(|_| SpecError::IdRange(spec.to_string()));
    let gid = id(gid)?;
    let mut additional_gids = vec![gid];
    for g in supplementary {
        additional_gids.push(id(g)?);
    }
    Ok(ResolvedUser {
        uid: id(found.uid)?,
        gid,
        additional_gids,
        home: if found.home.is_empty() {
            "/".to_string()
        } else {
            found.home
        },
    })
}

// ---------------------------------------------------------------------------
// Capabilities and rlimits.
// ---------------------------------------------------------------------------

/// The capability set (bounding = effective = permitted) Docker gives:
/// its 14 defaults with `--cap-drop` removed and `--cap-add` added, `ALL`
/// in `--cap-add` for every capability but the dropped ones, `ALL` in
/// `--cap-drop` for only the added ones, everything when privileged.
pub fn capabilities(cfg: &ContainerConfig) -> Result<Vec<String>, SpecError> {
    if cfg.privileged {
        return Ok(owned(ALL_CAPABILITIES));
    }
    let drop = normalize_caps(&cfg.cap_drop)?;
    let add = normalize_caps(&cfg.cap_add)?;
    let all = |list: &[String]| list.iter().any(|c| c == "ALL");
    let caps: Vec<String> = if all(&add) {
        owned(ALL_CAPABILITIES)
            .into_iter()
            .filter(|c| !drop.contains(c))
            .collect()
    } else if all(&drop) {
        add
    } else {
        owned(DEFAULT_CAPABILITIES)
            .into_iter()
            .filter(|c| !drop.contains(c))
            .chain(add)
            .collect()
    };
    let mut seen = HashSet::new();
    Ok(caps
        .into_iter()
        .filter(|c| seen.insert(c.clone()))
        .collect())
}

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

/// Upper-case, `CAP_`-prefixed names (`ALL` kept), each checked.
fn normalize_caps(names: &[String]) -> Result<Vec<String>, SpecError> {
    names
        .iter()
        .map(|n| {
            let n = n.to_ascii_uppercase();
            if n == "ALL" {
                return Ok(n);
            }
            let n = if n.starts_with("CAP_") {
                n
            } else {
                format!("CAP_{n}")
            };
            if ALL_CAPABILITIES.contains(&n.as_str()) {
                Ok(n)
            } else {
                Err(SpecError::UnknownCapability(n))
            }
        })
        .collect()
}

/// The `--ulimit` names Docker accepts.
const ULIMITS: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// `process.rlimits` from `--ulimit` (`RLIMIT_<NAME>`; -1 is unlimited).
fn rlimits(cfg: &ContainerConfig) -> Result<Vec<Value>, SpecError> {
    cfg.ulimits
        .iter()
        .map(|u| {
            let bad = |reason: String| SpecError::Ulimit {
                name: u.name.clone(),
                reason,
            };
            let name = u.name.to_ascii_lowercase();
            if !ULIMITS.contains(&name.as_str()) {
                return Err(bad("unknown ulimit type".to_string()));
            }
            let limit = |v: i64| match v {
                -1 => Ok(u64::MAX),
                v => u64::try_from(v).map_err(|_| bad(format!("{v} is negative"))),
            };
            let (soft, hard) = (limit(u.soft)?, limit(u.hard)?);
            if soft > hard {
                return Err(bad(format!(
                    "soft limit must be less than or equal to hard limit: {} > {}",
                    u.soft, u.hard
                )));
            }
            Ok(json!({"type": format!("RLIMIT_{}", name.to_ascii_uppercase()), "soft": soft, "hard": hard}))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Mounts.
// ---------------------------------------------------------------------------

/// One entry of `mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    destination: String,
    kind: &'static str,
    source: String,
    options: Vec<String>,
}

impl MountEntry {
    fn new(destination: &str, kind: &'static str, source: &str, options: &[&str]) -> MountEntry {
        MountEntry {
            destination: destination.to_string(),
            kind,
            source: source.to_string(),
            options: owned(options),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "destination": self.destination,
            "type": self.kind,
            "source": self.source,
            "options": self.options,
        })
    }

    /// Add `ro` unless present (Docker appends it).
    fn make_read_only(&mut self) {
        if !self.options.iter().any(|o| o == "ro") {
            self.options.push("ro".to_string());
        }
    }

    fn make_writable(&mut self) {
        self.options.retain(|o| o != "ro");
    }
}

/// Docker's default mounts, in Docker's order.
fn default_mounts() -> Vec<MountEntry> {
    let shm_size = format!("size={DEFAULT_SHM_SIZE}");
    vec![
        MountEntry::new("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        MountEntry::new(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        MountEntry::new(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        MountEntry::new(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        MountEntry::new(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        MountEntry::new(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        MountEntry::new(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        ),
    ]
}

/// Default mounts that stay writable in a `--read-only` container.
const WRITABLE_WHEN_READ_ONLY: &[&str] = &["/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev"];

const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

fn kind_name(kind: MountKind) -> &'static str {
    match kind {
        MountKind::Bind => "bind",
        MountKind::Volume => "volume",
        MountKind::Tmpfs => "tmpfs",
    }
}

/// A mount destination: absolute, not `/`, cleaned.
fn destination(kind: &'static str, dest: &str) -> Result<String, SpecError> {
    let bad = |reason: String| SpecError::Mount { kind, reason };
    if !dest.starts_with('/') {
        return Err(bad(format!(
            "invalid mount path: '{dest}' mount path must be absolute"
        )));
    }
    let clean = clean_path(dest);
    if clean == "/" {
        return Err(bad(
            "invalid specification: destination can't be '/'".to_string()
        ));
    }
    Ok(clean)
}

/// One `-v`/`--mount`/`--tmpfs` as a spec mount.
fn user_mount(m: &Mount) -> Result<MountEntry, SpecError> {
    let kind = kind_name(m.kind);
    let dest = destination(kind, &m.destination)?;
    let bad = |reason: String| SpecError::Mount { kind, reason };
    if m.kind == MountKind::Tmpfs {
        let mut options = owned(&["noexec", "nosuid", "nodev", "rprivate"]);
        if m.read_only {
            options.push("ro".to_string());
        }
        for o in &m.options {
            options.extend(o.split(',').map(str::to_string));
        }
        let options = merge_tmpfs_options(&options)?;
        return Ok(MountEntry {
            destination: dest,
            kind: "tmpfs",
            source: "tmpfs".to_string(),
            options,
        });
    }
    let source = m.source.to_string_lossy().into_owned();
    if !source.starts_with('/') {
        return Err(bad(format!(
            "invalid mount path: '{source}' mount path must be absolute"
        )));
    }
    let mut options = vec!["rbind".to_string()];
    if m.read_only {
        options.push("ro".to_string());
    }
    // Bind mounts default to rprivate; volumes carry no propagation unless
    // given one (Docker leaves it empty).
    let propagation = match (m.propagation.as_deref(), m.kind) {
        (Some(p), _) if !p.is_empty() => Some(p),
        (_, MountKind::Bind) => Some("rprivate"),
        _ => None,
    };
    if let Some(p) = propagation {
        if !PROPAGATIONS.contains(&p) {
            return Err(bad(format!("invalid propagation mode: {p}")));
        }
        options.push(p.to_string());
    }
    Ok(MountEntry {
        destination: dest,
        kind: "bind",
        source,
        options,
    })
}

/// Which mount flag an option sets or clears; options of one group
/// override each other (the last one wins).
fn mount_flag_group(option: &str) -> Option<&'static str> {
    Some(match option {
        "ro" | "rw" => "rdonly",
        "suid" | "nosuid" => "nosuid",
        "dev" | "nodev" => "nodev",
        "exec" | "noexec" => "noexec",
        "sync" | "async" => "sync",
        "dirsync" => "dirsync",
        "remount" => "remount",
        "mand" | "nomand" => "mand",
        "atime" | "noatime" => "noatime",
        "diratime" | "nodiratime" => "nodiratime",
        "relatime" | "norelatime" => "relatime",
        "strictatime" | "nostrictatime" => "strictatime",
        "bind" | "rbind" | "unbindable" | "runbindable" | "private" | "rprivate" | "shared"
        | "rshared" | "slave" | "rslave" => "propagation",
        _ => return None,
    })
}

/// The tmpfs settings Docker accepts as `key=value`.
const TMPFS_DATA: &[&str] = &[
    "size",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "mpol",
];

/// Docker's merge of tmpfs options: later options override earlier ones of
/// the same flag group or key; `defaults` is dropped; anything else is an
/// error.
fn merge_tmpfs_options(options: &[String]) -> Result<Vec<String>, SpecError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for o in options.iter().rev() {
        if o == "defaults" {
            continue;
        }
        let key = match mount_flag_group(o) {
            Some(group) => group,
            None => match o.split_once('=') {
                Some((k, _)) if k.is_empty() || TMPFS_DATA.contains(&k) => k,
                Some((k, _)) => return Err(SpecError::TmpfsOption(k.to_string())),
                None => return Err(SpecError::TmpfsOption(o.clone())),
            },
        };
        if seen.insert(key) {
            out.push(o.clone());
        }
    }
    out.reverse();
    Ok(out)
}

/// The bind mounts of the files berth writes for the container, in
/// Docker's order; read-only with a read-only rootfs.
fn network_file_mounts(input: &SpecInput<'_>) -> Vec<MountEntry> {
    let files = [
        (input.resolv_conf, "/etc/resolv.conf"),
        (input.hostname_file, "/etc/hostname"),
        (input.hosts_file, "/etc/hosts"),
    ];
    files
        .into_iter()
        .filter_map(|(src, dest)| {
            let src = src?.to_string_lossy();
            let options: &[&str] = if input.cfg.read_only {
                &["rbind", "ro", "rprivate"]
            } else {
                &["rbind", "rprivate"]
            };
            Some(MountEntry::new(dest, "bind", &src, options))
        })
        .collect()
}

/// The number of `/` in a cleaned destination: Docker mounts shallower
/// destinations first.
fn depth(dest: &str) -> usize {
    dest.matches('/').count()
}

/// The user's mounts and the network files (the user's win), sorted by
/// depth.
fn user_mounts(input: &SpecInput<'_>) -> Result<Vec<MountEntry>, SpecError> {
    let mut mounts = Vec::new();
    let mut seen = HashSet::new();
    for m in &input.cfg.mounts {
        let entry = user_mount(m)?;
        if !seen.insert(entry.destination.clone()) {
            return Err(SpecError::DuplicateMount(entry.destination));
        }
        mounts.push(entry);
    }
    mounts.extend(
        network_file_mounts(input)
            .into_iter()
            .filter(|m| !seen.contains(&m.destination)),
    );
    mounts.sort_by_key(|m| depth(&m.destination));
    Ok(mounts)
}

/// `linux.rootfsPropagation` as Docker sets it for shared or slave binds:
/// `shared` when a mount is (r)shared, else `rslave` when one is (r)slave.
fn rootfs_propagation(mounts: &[MountEntry]) -> Option<&'static str> {
    let has = |modes: &[&str]| {
        mounts
            .iter()
            .filter(|m| m.kind == "bind")
            .any(|m| m.options.iter().any(|o| modes.contains(&o.as_str())))
    };
    if has(&["shared", "rshared"]) {
        Some("shared")
    } else if has(&["slave", "rslave"]) {
        Some("rslave")
    } else {
        None
    }
}

/// All mounts: Docker's defaults (minus those a user mount replaces, and
/// everything under `/dev` when the user mounts `/dev`), the init binary,
/// then the user's mounts.
fn mounts(input: &SpecInput<'_>) -> Result<Vec<MountEntry>, SpecError> {
    let cfg = input.cfg;
    let user = user_mounts(input)?;
    let user_dests: HashSet<&str> = user.iter().map(|m| m.destination.as_str()).collect();
    let dev_mounted = user_dests.contains("/dev");
    let mut defaults = default_mounts();
    if let Some(init) = input.init {
        let init = init.to_string_lossy();
        defaults.push(MountEntry::new(INIT_PATH, "bind", &init, &["bind", "ro"]));
    }
    defaults.retain(|m| {
        let replaced = user_dests.contains(m.destination.as_str())
            || (dev_mounted && m.destination.starts_with("/dev/"));
        !replaced
    });
    for m in &mut defaults {
        if cfg.read_only && !WRITABLE_WHEN_READ_ONLY.contains(&m.destination.as_str()) {
            m.make_read_only();
        }
        if cfg.privileged && (m.destination == "/sys" || m.kind == "cgroup") {
            m.make_writable();
        }
    }
    defaults.extend(user);
    Ok(defaults)
}

// ---------------------------------------------------------------------------
// Devices.
// ---------------------------------------------------------------------------

/// A device cgroup rule; `None` numbers are wildcards.
fn device_rule(
    allow: bool,
    kind: &str,
    major: Option<u64>,
    minor: Option<u64>,
    access: &str,
) -> Value {
    let mut rule = json!({"allow": allow, "type": kind, "access": access});
    if let Some(major) = major {
        rule["major"] = json!(major);
    }
    if let Some(minor) = minor {
        rule["minor"] = json!(minor);
    }
    rule
}

/// Docker's device cgroup rules (deny everything; allow zero, null,
/// urandom, random, tty, console; deny fuse), then those runc adds on its
/// own (mknod of any node, full, ptmx, the pty slaves), written out so that
/// the spec says everything.
fn default_device_rules() -> Vec<Value> {
    let chr = |major, minor| device_rule(true, "c", Some(major), Some(minor), "rwm");
    vec![
        json!({"allow": false, "access": "rwm"}),
        chr(1, 5),
        chr(1, 3),
        chr(1, 9),
        chr(1, 8),
        chr(5, 0),
        chr(5, 1),
        device_rule(false, "c", Some(10), Some(229), "rwm"),
        device_rule(true, "c", None, None, "m"),
        device_rule(true, "b", None, None, "m"),
        chr(1, 7),
        chr(5, 2),
        device_rule(true, "c", Some(136), None, "rwm"),
    ]
}

/// `linux.devices` and the device cgroup rules: `--device` nodes (their
/// type and numbers read from the host path), all devices when privileged.
fn devices(cfg: &ContainerConfig) -> Result<(Vec<Value>, Vec<Value>), SpecError> {
    let mut nodes = Vec::new();
    let mut rules = if cfg.privileged {
        vec![json!({"allow": true, "access": "rwm"})]
    } else {
        default_device_rules()
    };
    for d in &cfg.devices {
        let access = if cfg.privileged || d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        let (node, rule) = device(&d.host, &d.container, access)?;
        nodes.push(node);
        if !cfg.privileged {
            rules.push(rule);
        }
    }
    Ok((nodes, rules))
}

/// One `--device`: the node to create and the rule allowing it.
fn device(host: &Path, container: &Path, access: &str) -> Result<(Value, Value), SpecError> {
    let bad = |reason: String| SpecError::Device {
        path: host.to_path_buf(),
        reason,
    };
    if access.is_empty()
        || access.len() > 3
        || !access.chars().all(|c| "rwm".contains(c))
        || access.chars().collect::<HashSet<_>>().len() != access.len()
    {
        return Err(bad(format!("invalid device mode {access:?} (r, w and m)")));
    }
    let target = container.to_string_lossy();
    if !target.starts_with('/') {
        return Err(bad(format!(
            "the path in the container must be absolute: {target}"
        )));
    }
    let meta = std::fs::metadata(host).map_err(|e| bad(e.to_string()))?;
    let kind = if meta.file_type().is_char_device() {
        "c"
    } else if meta.file_type().is_block_device() {
        "b"
    } else {
        return Err(bad("not a device node".to_string()));
    };
    let (major, minor) = (
        nix::sys::stat::major(meta.rdev()),
        nix::sys::stat::minor(meta.rdev()),
    );
    let node = json!({
        "path": clean_path(&target),
        "type": kind,
        "major": major,
        "minor": minor,
        "fileMode": meta.mode() & 0o7777,
        "uid": meta.uid(),
        "gid": meta.gid(),
    });
    Ok((
        node,
        device_rule(true, kind, Some(major), Some(minor), access),
    ))
}

// ---------------------------------------------------------------------------
// Resources.
// ---------------------------------------------------------------------------

/// `linux.resources.memory`: the limit, and swap (memory + swap) as Docker
/// sets it: twice the limit when `--memory-swap` is not given, none when
/// it is -1.
fn memory(r: &crate::config::Resources) -> Result<Option<Value>, SpecError> {
    let limit = r.memory.unwrap_or(0);
    let mut swap = r.memory_swap.unwrap_or(0);
    if limit != 0 && limit < MIN_MEMORY {
        return Err(SpecError::MemoryTooLow);
    }
    if limit > 0 && swap == 0 {
        swap = limit.saturating_mul(2);
    }
    if limit > 0 && swap > 0 && swap < limit {
        return Err(SpecError::SwapBelowMemory);
    }
    if limit == 0 && swap > 0 {
        return Err(SpecError::SwapWithoutMemory);
    }
    if limit <= 0 {
        return Ok(None);
    }
    let mut mem = json!({"limit": limit});
    if swap > 0 {
        mem["swap"] = json!(swap);
    }
    Ok(Some(mem))
}

/// `linux.resources.cpu`: shares, the cpuset, and `--cpus` as a CFS quota
/// over a 100 ms period.
fn cpu(r: &crate::config::Resources) -> Result<Option<Value>, SpecError> {
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = r.cpu_shares.filter(|s| *s != 0) {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(set) = r.cpuset_cpus.as_deref().filter(|s| !s.is_empty()) {
        if !is_cpu_list(set) {
            return Err(SpecError::Cpuset(set.to_string()));
        }
        cpu.insert("cpus".into(), json!(set));
    }
    if let Some(nano) = r.nano_cpus.filter(|n| *n != 0) {
        let available = std::thread::available_parallelism().map_or(usize::MAX, |n| n.get());
        let max = i64::try_from(available)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000_000);
        if nano < 0 || nano > max {
            return Err(SpecError::CpuRange(available));
        }
        let quota = i128::from(nano) * i128::from(CPU_PERIOD) / 1_000_000_000;
        cpu.insert("period".into(), json!(CPU_PERIOD));
        cpu.insert(
            "quota".into(),
            json!(i64::try_from(quota).unwrap_or(i64::MAX)),
        );
    }
    Ok((!cpu.is_empty()).then_some(Value::Object(cpu)))
}

/// A CPU list: `0`, `0-3`, `0,2-4`.
fn is_cpu_list(s: &str) -> bool {
    let number = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    s.split(',').all(|part| match part.split_once('-') {
        Some((a, b)) => number(a) && number(b) && a.parse::<u64>().ok() <= b.parse::<u64>().ok(),
        None => number(part),
    })
}

/// `linux.resources`.
/// The `linux.resources` limits of a container without device rules, for
/// `update` of a live container.
pub fn resource_limits(cfg: &ContainerConfig) -> Result<Value, SpecError> {
    let mut v = resources(cfg, Vec::new())?;
    if let Some(o) = v.as_object_mut() {
        o.remove("devices");
    }
    Ok(v)
}

/// The `linux.resources` of a container's spec, device rules included (as
/// [`build`] writes them).
pub fn linux_resources(cfg: &ContainerConfig) -> Result<Value, SpecError> {
    resources(cfg, devices(cfg)?.1)
}

fn resources(cfg: &ContainerConfig, device_rules: Vec<Value>) -> Result<Value, SpecError> {
    let r = &cfg.resources;
    let mut res = json!({"devices": device_rules});
    if let Some(mem) = memory(r)? {
        res["memory"] = mem;
    }
    if let Some(cpu) = cpu(r)? {
        res["cpu"] = cpu;
    }
    if let Some(pids) = r.pids_limit {
        // Docker: 0 and negative values mean unlimited.
        res["pids"] = json!({"limit": if pids <= 0 { -1 } else { pids }});
    }
    Ok(res)
}

// ---------------------------------------------------------------------------
// The spec.
// ---------------------------------------------------------------------------

/// Docker's masked paths (none when privileged).
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Docker's read-only paths (none when privileged).
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Everything [`build`] needs; the paths are host paths.
#[derive(Debug, Clone, Copy)]
pub struct SpecInput<'a> {
    /// The container's full ID.
    pub id: &'a str,
    /// What the flags asked for.
    pub cfg: &'a ContainerConfig,
    /// What the image contributes.
    pub image: &'a ImageDefaults,
    /// The container's root filesystem (mounted by the caller).
    pub rootfs: &'a Path,
    /// From [`resolve_user`].
    pub user: &'a ResolvedUser,
    /// Bind-mounted at `/etc/hostname` when given.
    pub hostname_file: Option<&'a Path>,
    /// Bind-mounted at `/etc/hosts` when given.
    pub hosts_file: Option<&'a Path>,
    /// Bind-mounted at `/etc/resolv.conf` when given.
    pub resolv_conf: Option<&'a Path>,
    /// The init binary for `--init`, bound at [`INIT_PATH`].
    pub init: Option<&'a Path>,
    /// `linux.cgroupsPath`.
    pub cgroup_path: &'a str,
}

/// The process's arguments, behind `docker-init --` with `--init`.
fn process_args(input: &SpecInput<'_>) -> Result<Vec<String>, SpecError> {
    let args = command(input.cfg, input.image)?;
    if input.init.is_none() {
        return Ok(args);
    }
    Ok([INIT_PATH.to_string(), "--".to_string()]
        .into_iter()
        .chain(args)
        .collect())
}

fn process(input: &SpecInput<'_>, hostname: &str, caps: &[String]) -> Result<Value, SpecError> {
    let cfg = input.cfg;
    let user = input.user;
    let mut process = json!({
        "terminal": cfg.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": process_args(input)?,
        "env": environment(cfg, input.image, hostname, &user.home),
        "cwd": working_dir(cfg, input.image)?,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": cfg.no_new_privileges,
        "oomScoreAdj": 0,
    });
    let rlimits = rlimits(cfg)?;
    if !rlimits.is_empty() {
        process["rlimits"] = Value::Array(rlimits);
    }
    Ok(process)
}

/// Docker's namespaces: mount, network (not with `--network host`), uts,
/// pid, ipc and a private cgroup namespace.
fn namespaces(cfg: &ContainerConfig) -> Value {
    let types = ["mount", "network", "uts", "pid", "ipc", "cgroup"];
    let list: Vec<Value> = types
        .into_iter()
        .filter(|t| *t != "network" || cfg.network != NetworkMode::Host)
        .map(|t| json!({"type": t}))
        .collect();
    Value::Array(list)
}

/// `linux.seccomp`: Docker's default for the container's capabilities, a
/// `seccomp=FILE` profile converted, or none (unconfined, or privileged
/// without a profile of its own).
fn seccomp(cfg: &ContainerConfig, caps: &[String]) -> Result<Option<Value>, SpecError> {
    match &cfg.seccomp {
        Seccomp::Unconfined => Ok(None),
        Seccomp::Default if cfg.privileged => Ok(None),
        Seccomp::Default => Ok(Some(crate::seccomp_default::profile(caps))),
        Seccomp::Custom(text) => {
            let profile = crate::seccomp_default::from_docker_profile(text, caps)
                .map_err(SpecError::Seccomp)?;
            Ok((!profile.is_null()).then_some(profile))
        }
    }
}

fn linux(
    input: &SpecInput<'_>,
    caps: &[String],
    mounts: &[MountEntry],
) -> Result<Value, SpecError> {
    let cfg = input.cfg;
    let (devices, device_rules) = devices(cfg)?;
    let mut linux = json!({
        "resources": resources(cfg, device_rules)?,
        "cgroupsPath": input.cgroup_path,
        "namespaces": namespaces(cfg),
        "devices": devices,
    });
    if !cfg.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
    if let Some(profile) = seccomp(cfg, caps)? {
        linux["seccomp"] = profile;
    }
    if let Some(p) = rootfs_propagation(mounts) {
        linux["rootfsPropagation"] = json!(p);
    }
    Ok(linux)
}

/// The container's `config.json`, as Docker would write it for the same
/// flags and image.
pub fn build(input: &SpecInput<'_>) -> Result<Value, SpecError> {
    let cfg = input.cfg;
    let caps = capabilities(cfg)?;
    let hostname = hostname(cfg, input.id);
    let mounts = mounts(input)?;
    Ok(json!({
        "ociVersion": berth_runtime::state::OCI_VERSION,
        "process": process(input, &hostname, &caps)?,
        "root": {"path": input.rootfs.to_string_lossy(), "readonly": cfg.read_only},
        "hostname": hostname,
        "mounts": mounts.iter().map(MountEntry::to_json).collect::<Vec<_>>(),
        "linux": linux(input, &caps, &mounts)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Device, Resources, Ulimit};

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn strings(list: &[&str]) -> Vec<String> {
        owned(list)
    }

    fn image() -> ImageDefaults {
        ImageDefaults {
            cmd: strings(&["sh"]),
            env: strings(&["PATH=/usr/bin:/bin"]),
            ..ImageDefaults::default()
        }
    }

    fn root_user() -> ResolvedUser {
        ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![0],
            home: "/root".to_string(),
        }
    }

    /// Host files the spec refers to (not read by `build`).
    struct Files {
        hostname: PathBuf,
        hosts: PathBuf,
        resolv: PathBuf,
        init: PathBuf,
    }

    fn files() -> Files {
        let dir = Path::new("/var/lib/berth/containers").join(ID);
        Files {
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv: dir.join("resolv.conf"),
            init: PathBuf::from("/usr/libexec/berth/docker-init"),
        }
    }

    fn build_full(cfg: &ContainerConfig, init: bool) -> Result<Value, SpecError> {
        let f = files();
        let image = image();
        let user = root_user();
        build(&SpecInput {
            id: ID,
            cfg,
            image: &image,
            rootfs: Path::new("/var/lib/berth/containers/x/rootfs"),
            user: &user,
            hostname_file: Some(&f.hostname),
            hosts_file: Some(&f.hosts),
            resolv_conf: Some(&f.resolv),
            init: init.then_some(f.init.as_path()),
            cgroup_path: "/berth/x",
        })
    }

    fn spec(cfg: &ContainerConfig) -> Value {
        build_full(cfg, false).unwrap()
    }

    fn mount<'a>(spec: &'a Value, dest: &str) -> Option<&'a Value> {
        spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == dest)
    }

    fn options(spec: &Value, dest: &str) -> Vec<String> {
        let m = mount(spec, dest).unwrap_or_else(|| panic!("no mount at {dest}"));
        serde_json::from_value(m["options"].clone()).unwrap()
    }

    /// The runtime reads the spec: it parses, and its mount plan accepts
    /// the mounts.
    fn runtime_accepts(spec: &Value) {
        let parsed = berth_runtime::config::parse(&serde_json::to_vec(spec).unwrap()).unwrap();
        let mounts = parsed.mounts().clone().unwrap();
        berth_runtime::mounts::plan(&mounts, Path::new("/bundle")).unwrap();
    }

    // --- command -------------------------------------------------------

    fn cmd_of(
        ep: Option<&[&str]>,
        args: &[&str],
        img_ep: &[&str],
        img_cmd: &[&str],
    ) -> Result<Vec<String>, SpecError> {
        let cfg = ContainerConfig {
            entrypoint: ep.map(strings),
            cmd: strings(args),
            ..ContainerConfig::default()
        };
        let image = ImageDefaults {
            entrypoint: strings(img_ep),
            cmd: strings(img_cmd),
            ..ImageDefaults::default()
        };
        command(&cfg, &image)
    }

    #[test]
    fn command_merges_entrypoint_and_cmd() {
        let ok = |r: Result<Vec<String>, SpecError>| r.unwrap();
        assert_eq!(
            ok(cmd_of(None, &[], &["/ep", "-x"], &["a", "b"])),
            ["/ep", "-x", "a", "b"]
        );
        assert_eq!(
            ok(cmd_of(None, &["c"], &["/ep"], &["a", "b"])),
            ["/ep", "c"]
        );
        assert_eq!(
            ok(cmd_of(None, &[], &[], &["sh", "-c", "x"])),
            ["sh", "-c", "x"]
        );
        assert_eq!(ok(cmd_of(None, &["ls", "/"], &[], &["sh"])), ["ls", "/"]);
        // --entrypoint replaces the image's, and the image's CMD is dropped.
        assert_eq!(ok(cmd_of(Some(&["/new"]), &[], &["/ep"], &["a"])), ["/new"]);
        assert_eq!(
            ok(cmd_of(Some(&["/new"]), &["z"], &["/ep"], &["a"])),
            ["/new", "z"]
        );
        // --entrypoint "" clears it: the arguments alone run.
        assert_eq!(
            ok(cmd_of(Some(&[]), &["echo", "hi"], &["/ep"], &["a"])),
            ["echo", "hi"]
        );
        assert_eq!(
            ok(cmd_of(Some(&[""]), &["echo"], &["/ep"], &["a"])),
            ["echo"]
        );
    }

    #[test]
    fn command_refuses_nothing_to_run() {
        for r in [
            cmd_of(None, &[], &[], &[]),
            cmd_of(Some(&[]), &[], &["/ep"], &["a"]),
            cmd_of(Some(&[""]), &[], &[], &["a"]),
        ] {
            let e = r.unwrap_err();
            assert!(matches!(e, SpecError::NoCommand));
            assert_eq!(e.to_string(), "no command specified");
            assert!(e.is_invalid_input());
        }
    }

    // --- environment, hostname, cwd ------------------------------------

    #[test]
    fn env_follows_docker_order_and_overrides() {
        let cfg = ContainerConfig {
            env: strings(&["FOO=cli", "NEW=1", "GONE"]),
            tty: true,
            ..ContainerConfig::default()
        };
        let image = ImageDefaults {
            env: strings(&["PATH=/img/bin", "FOO=img", "BAR=img", "GONE=img"]),
            ..ImageDefaults::default()
        };
        assert_eq!(
            environment(&cfg, &image, "h1", "/root"),
            [
                "PATH=/img/bin",
                "HOSTNAME=h1",
                "TERM=xterm",
                "FOO=cli",
                "NEW=1",
                "BAR=img",
                "HOME=/root"
            ]
        );
    }

    #[test]
    fn env_defaults_and_user_settings() {
        let cfg = ContainerConfig {
            env: strings(&["HOSTNAME=mine", "HOME=/h", "PATH"]),
            ..ContainerConfig::default()
        };
        // No TERM without a terminal; -e HOSTNAME and HOME win; a bare PATH
        // removes the default.
        assert_eq!(
            environment(&cfg, &ImageDefaults::default(), "h1", "/root"),
            ["HOSTNAME=mine", "HOME=/h"]
        );
        let env = environment(
            &ContainerConfig::default(),
            &ImageDefaults::default(),
            "h",
            "/",
        );
        assert_eq!(
            env,
            [
                format!("PATH={DEFAULT_PATH_ENV}"),
                "HOSTNAME=h".into(),
                "HOME=/".into()
            ]
        );
    }

    #[test]
    fn hostname_defaults_to_short_id() {
        let mut cfg = ContainerConfig::default();
        let s = spec(&cfg);
        assert_eq!(s["hostname"], "0123456789ab");
        assert!(s["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&json!("HOSTNAME=0123456789ab")));
        cfg.hostname = Some("web".to_string());
        assert_eq!(spec(&cfg)["hostname"], "web");
        cfg.hostname = None;
        cfg.network = NetworkMode::Host;
        let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert_eq!(spec(&cfg)["hostname"], json!(host));
    }

    #[test]
    fn working_dir_rules() {
        let mut cfg = ContainerConfig::default();
        let mut image = ImageDefaults::default();
        assert_eq!(working_dir(&cfg, &image).unwrap(), "/");
        image.workdir = "/app/".to_string();
        assert_eq!(working_dir(&cfg, &image).unwrap(), "/app");
        cfg.workdir = Some("/srv//x/./y/..".to_string());
        assert_eq!(working_dir(&cfg, &image).unwrap(), "/srv/x");
        cfg.workdir = Some("rel".to_string());
        let e = working_dir(&cfg, &image).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the working directory 'rel' is invalid, it needs to be an absolute path"
        );
    }

    #[test]
    fn image_defaults_from_config() {
        let cfg: oci_spec::image::ImageConfiguration = serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "config": {
                "Entrypoint": ["/ep"], "Cmd": ["a"], "Env": ["A=1"], "WorkingDir": "/w",
                "User": "bob", "Labels": {"k": "v"}, "StopSignal": "SIGINT",
                "Volumes": {"/data": {}}
            },
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap();
        let d = ImageDefaults::from_config(&cfg);
        assert_eq!(d.entrypoint, ["/ep"]);
        assert_eq!(d.cmd, ["a"]);
        assert_eq!(d.env, ["A=1"]);
        assert_eq!(d.workdir, "/w");
        assert_eq!(d.user, "bob");
        assert_eq!(d.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(d.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(d.volumes, ["/data"]);
        let bare: oci_spec::image::ImageConfiguration = serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap();
        assert_eq!(ImageDefaults::from_config(&bare), ImageDefaults::default());
        let user = ContainerConfig {
            user: Some("1:2".into()),
            ..ContainerConfig::default()
        };
        assert_eq!(user_spec(&user, &d), "1:2");
        assert_eq!(user_spec(&ContainerConfig::default(), &d), "bob");
    }

    // --- users ---------------------------------------------------------

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n\
             bob:x:1000:1000:Bob:/home/bob:/bin/sh\n  \n\
             nohome:x:1002:1002:::/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwheel:x:10:root,bob\nstaff:x:50:bob\nbob:x:1000:\nusers:x:100:alice\n",
        )
        .unwrap();
        dir
    }

    fn user(uid: u32, gid: u32, gids: &[u32], home: &str) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            additional_gids: gids.to_vec(),
            home: home.to_string(),
        }
    }

    #[test]
    fn users_by_name_and_id() {
        let r = rootfs();
        let res = |spec: &str| resolve_user(r.path(), spec).unwrap();
        assert_eq!(res(""), user(0, 0, &[0, 10], "/root"));
        assert_eq!(res("root"), user(0, 0, &[0, 10], "/root"));
        assert_eq!(res("bob"), user(1000, 1000, &[1000, 10, 50], "/home/bob"));
        assert_eq!(res("1000"), user(1000, 1000, &[1000, 10, 50], "/home/bob"));
        assert_eq!(res("nohome"), user(1002, 1002, &[1002], "/"));
        // Numeric ids need no entry.
        assert_eq!(res("4321"), user(4321, 0, &[0], "/"));
        assert_eq!(res("4321:8765"), user(4321, 8765, &[8765], "/"));
    }

    #[test]
    fn users_with_groups() {
        let r = rootfs();
        let res = |spec: &str| resolve_user(r.path(), spec).unwrap();
        // A named group replaces the primary group; no supplementary ones.
        assert_eq!(res("bob:staff"), user(1000, 50, &[50], "/home/bob"));
        assert_eq!(res("bob:100"), user(1000, 100, &[100], "/home/bob"));
        assert_eq!(res("1000:wheel"), user(1000, 10, &[10], "/home/bob"));
        assert_eq!(res("0:4444"), user(0, 4444, &[4444], "/root"));
    }

    #[test]
    fn unknown_users_and_groups() {
        let r = rootfs();
        let e = resolve_user(r.path(), "nobody").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert!(e.is_invalid_input());
        let e = resolve_user(r.path(), "bob:nogroup").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
        for bad in ["-1", "99999999999", "1:-5"] {
            let e = resolve_user(r.path(), bad).unwrap_err();
            assert!(matches!(e, SpecError::IdRange(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn users_without_etc() {
        let r = tempfile::tempdir().unwrap();
        assert_eq!(resolve_user(r.path(), "").unwrap(), user(0, 0, &[0], "/"));
        assert_eq!(
            resolve_user(r.path(), "7:8").unwrap(),
            user(7, 8, &[8], "/")
        );
        assert!(matches!(
            resolve_user(r.path(), "bob").unwrap_err(),
            SpecError::UnknownUser(_)
        ));
        assert!(matches!(
            resolve_user(r.path(), "7:staff").unwrap_err(),
            SpecError::UnknownGroup(_)
        ));
        let e = resolve_user(&r.path().join("missing"), "").unwrap_err();
        assert!(!e.is_invalid_input(), "{e}");
    }

    #[test]
    fn symlinked_passwd_stays_in_the_rootfs() {
        // The host's /etc/passwd has root: reading it would resolve "root".
        let host = std::fs::read_to_string("/etc/passwd").unwrap();
        assert!(host.lines().any(|l| l.starts_with("root:")));
        let r = tempfile::tempdir().unwrap();
        std::fs::create_dir(r.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.path().join("etc/passwd")).unwrap();
        // Inside the rootfs, /etc/passwd -> /etc/passwd is a loop.
        let e = resolve_user(r.path(), "root").unwrap_err();
        assert!(matches!(e, SpecError::UserFile { .. }), "{e}");
    }

    #[test]
    fn passwd_links_to_host_files_do_not_escape() {
        let host = tempfile::tempdir().unwrap();
        let evil = host.path().join("passwd");
        std::fs::write(&evil, "evil:x:4242:4242::/evil:/bin/sh\n").unwrap();
        let escape = format!("../../../../../../../..{}", evil.display());
        for target in [evil.to_string_lossy().into_owned(), escape] {
            let r = tempfile::tempdir().unwrap();
            std::fs::create_dir(r.path().join("etc")).unwrap();
            std::os::unix::fs::symlink(&target, r.path().join("etc/passwd")).unwrap();
            let e = resolve_user(r.path(), "evil").unwrap_err();
            assert!(matches!(e, SpecError::UnknownUser(_)), "{target}: {e}");
            assert_eq!(
                resolve_user(r.path(), "4242").unwrap().home,
                "/",
                "{target}"
            );
        }
        // A link that stays inside the rootfs is followed.
        let r = rootfs();
        std::fs::rename(r.path().join("etc/passwd"), r.path().join("etc/real")).unwrap();
        std::os::unix::fs::symlink("/etc/real", r.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve_user(r.path(), "bob").unwrap().uid, 1000);
    }

    #[test]
    fn odd_passwd_files_are_refused() {
        let r = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(r.path().join("etc/passwd")).unwrap();
        let e = resolve_user(r.path(), "bob").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        // A FIFO must not block.
        let r = tempfile::tempdir().unwrap();
        std::fs::create_dir(r.path().join("etc")).unwrap();
        nix::unistd::mkfifo(&r.path().join("etc/passwd"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = resolve_user(r.path(), "bob").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        // Too large.
        let r = tempfile::tempdir().unwrap();
        std::fs::create_dir(r.path().join("etc")).unwrap();
        let big = "x".repeat((MAX_USER_FILE + 1) as usize);
        std::fs::write(r.path().join("etc/passwd"), big).unwrap();
        let e = resolve_user(r.path(), "bob").unwrap_err();
        assert!(e.to_string().contains("larger than 4 MiB"), "{e}");
        assert!(e.is_invalid_input());
    }

    // --- capabilities --------------------------------------------------

    fn caps_of(add: &[&str], drop: &[&str]) -> Result<Vec<String>, SpecError> {
        capabilities(&ContainerConfig {
            cap_add: strings(add),
            cap_drop: strings(drop),
            ..ContainerConfig::default()
        })
    }

    #[test]
    fn capabilities_add_and_drop() {
        assert_eq!(caps_of(&[], &[]).unwrap(), DEFAULT_CAPABILITIES);
        let c = caps_of(
            &["sys_admin", "CAP_NET_ADMIN", "Chown"],
            &["chown", "CAP_KILL"],
        )
        .unwrap();
        let mut want = strings(DEFAULT_CAPABILITIES);
        want.retain(|c| c != "CAP_CHOWN" && c != "CAP_KILL");
        want.extend(strings(&["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_CHOWN"]));
        assert_eq!(c, want);
        let c = caps_of(&["all"], &["MKNOD"]).unwrap();
        assert_eq!(c.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!c.iter().any(|c| c == "CAP_MKNOD"));
        assert_eq!(caps_of(&["chown"], &["ALL"]).unwrap(), ["CAP_CHOWN"]);
        assert!(caps_of(&[], &["ALL"]).unwrap().is_empty());
    }

    #[test]
    fn unknown_capability_is_named() {
        let e = caps_of(&["foo"], &[]).unwrap_err();
        assert_eq!(e.to_string(), "unknown capability: \"CAP_FOO\"");
        assert!(e.is_invalid_input());
        assert!(caps_of(&[], &["CAP_NOPE"]).is_err());
    }

    #[test]
    fn spec_capability_sets() {
        let s = spec(&ContainerConfig {
            cap_add: strings(&["NET_ADMIN"]),
            ..ContainerConfig::default()
        });
        let caps = &s["process"]["capabilities"];
        let mut want = strings(DEFAULT_CAPABILITIES);
        want.push("CAP_NET_ADMIN".to_string());
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(caps[set], json!(want), "{set}");
        }
        assert!(caps.get("inheritable").is_none() && caps.get("ambient").is_none());
        runtime_accepts(&s);
    }

    // --- privileged and read-only ---------------------------------------

    #[test]
    fn privileged_spec() {
        let s = spec(&ContainerConfig {
            privileged: true,
            ..ContainerConfig::default()
        });
        assert_eq!(
            s["process"]["capabilities"]["bounding"],
            json!(ALL_CAPABILITIES)
        );
        let linux = &s["linux"];
        assert!(linux.get("seccomp").is_none());
        assert!(linux.get("maskedPaths").is_none());
        assert!(linux.get("readonlyPaths").is_none());
        assert_eq!(
            linux["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        assert_eq!(options(&s, "/sys"), ["nosuid", "noexec", "nodev"]);
        assert_eq!(options(&s, "/sys/fs/cgroup"), ["nosuid", "noexec", "nodev"]);
        runtime_accepts(&s);
    }

    #[test]
    fn unprivileged_defaults() {
        let s = spec(&ContainerConfig::default());
        let linux = &s["linux"];
        assert_eq!(linux["maskedPaths"], json!(MASKED_PATHS));
        assert!(MASKED_PATHS.contains(&"/proc/kcore") && MASKED_PATHS.contains(&"/sys/firmware"));
        assert_eq!(
            linux["readonlyPaths"],
            json!([
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger"
            ])
        );
        assert_eq!(linux["cgroupsPath"], "/berth/x");
        assert_eq!(options(&s, "/sys"), ["nosuid", "noexec", "nodev", "ro"]);
        assert_eq!(
            options(&s, "/dev/shm"),
            ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]
        );
        assert_eq!(s["process"]["oomScoreAdj"], 0);
        assert_eq!(s["process"]["noNewPrivileges"], false);
        assert_eq!(
            s["process"]["user"],
            json!({"uid": 0, "gid": 0, "additionalGids": [0]})
        );
        assert_eq!(s["process"]["cwd"], "/");
        assert_eq!(s["process"]["args"], json!(["sh"]));
        assert_eq!(
            s["root"],
            json!({"path": "/var/lib/berth/containers/x/rootfs", "readonly": false})
        );
        let seccomp = &linux["seccomp"];
        assert_eq!(
            *seccomp,
            crate::seccomp_default::profile(&strings(DEFAULT_CAPABILITIES))
        );
        let dests: Vec<&str> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm",
                "/etc/resolv.conf",
                "/etc/hostname",
                "/etc/hosts"
            ]
        );
        assert_eq!(options(&s, "/etc/hosts"), ["rbind", "rprivate"]);
        assert_eq!(
            mount(&s, "/etc/hosts").unwrap()["source"],
            json!(files().hosts)
        );
        runtime_accepts(&s);
    }

    #[test]
    fn read_only_rootfs() {
        let cfg = ContainerConfig {
            read_only: true,
            no_new_privileges: true,
            mounts: vec![Mount {
                source: "/srv/data".into(),
                destination: "/data".into(),
                ..Mount::default()
            }],
            ..ContainerConfig::default()
        };
        let s = spec(&cfg);
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["process"]["noNewPrivileges"], true);
        for f in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"] {
            assert_eq!(options(&s, f), ["rbind", "ro", "rprivate"], "{f}");
        }
        // A writable bind stays writable; /dev and /proc stay as they are.
        assert_eq!(options(&s, "/data"), ["rbind", "rprivate"]);
        assert_eq!(options(&s, "/proc"), ["nosuid", "noexec", "nodev"]);
        assert_eq!(
            options(&s, "/sys/fs/cgroup"),
            ["ro", "nosuid", "noexec", "nodev"]
        );
        runtime_accepts(&s);
    }

    // --- mounts ----------------------------------------------------------

    fn with_mounts(mounts: Vec<Mount>) -> Result<Value, SpecError> {
        build_full(
            &ContainerConfig {
                mounts,
                ..ContainerConfig::default()
            },
            false,
        )
    }

    fn bind(src: &str, dest: &str) -> Mount {
        Mount {
            source: src.into(),
            destination: dest.into(),
            ..Mount::default()
        }
    }

    #[test]
    fn bind_volume_and_tmpfs_mounts() {
        let s = with_mounts(vec![
            Mount {
                read_only: true,
                propagation: Some("rslave".into()),
                ..bind("/srv/a", "/a/")
            },
            bind("/srv/b", "/b"),
            Mount {
                kind: MountKind::Volume,
                name: Some("vol".into()),
                ..bind("/var/lib/berth/volumes/vol/_data", "/data")
            },
            Mount {
                kind: MountKind::Volume,
                read_only: true,
                ..bind("/var/lib/berth/volumes/v2/_data", "/data2")
            },
            Mount {
                kind: MountKind::Tmpfs,
                options: strings(&["size=64m", "exec"]),
                ..bind("", "/tmp")
            },
            Mount {
                kind: MountKind::Tmpfs,
                read_only: true,
                options: strings(&["mode=1777,uid=5"]),
                ..bind("", "/run")
            },
        ])
        .unwrap();
        assert_eq!(options(&s, "/a"), ["rbind", "ro", "rslave"]);
        assert_eq!(mount(&s, "/a").unwrap()["source"], "/srv/a");
        assert_eq!(mount(&s, "/a").unwrap()["type"], "bind");
        assert_eq!(options(&s, "/b"), ["rbind", "rprivate"]);
        assert_eq!(options(&s, "/data"), ["rbind"]);
        assert_eq!(options(&s, "/data2"), ["rbind", "ro"]);
        assert_eq!(
            mount(&s, "/data").unwrap()["source"],
            "/var/lib/berth/volumes/vol/_data"
        );
        assert_eq!(
            options(&s, "/tmp"),
            ["nosuid", "nodev", "rprivate", "size=64m", "exec"]
        );
        assert_eq!(
            options(&s, "/run"),
            [
                "noexec",
                "nosuid",
                "nodev",
                "rprivate",
                "ro",
                "mode=1777",
                "uid=5"
            ]
        );
        assert_eq!(mount(&s, "/tmp").unwrap()["type"], "tmpfs");
        assert_eq!(mount(&s, "/tmp").unwrap()["source"], "tmpfs");
        assert_eq!(s["linux"]["rootfsPropagation"], "rslave");
        runtime_accepts(&s);
    }

    #[test]
    fn shared_binds_make_the_root_shared() {
        let s = with_mounts(vec![
            Mount {
                propagation: Some("rslave".into()),
                ..bind("/x", "/x")
            },
            Mount {
                propagation: Some("shared".into()),
                ..bind("/y", "/y")
            },
        ])
        .unwrap();
        assert_eq!(s["linux"]["rootfsPropagation"], "shared");
        assert!(spec(&ContainerConfig::default())["linux"]
            .get("rootfsPropagation")
            .is_none());
    }

    #[test]
    fn bad_mounts_are_refused() {
        let cases = [
            (
                bind("/x", "rel"),
                "invalid mount path: 'rel' mount path must be absolute",
            ),
            (bind("/x", "/"), "destination can't be '/'"),
            (bind("/x", "/a/.."), "destination can't be '/'"),
            (bind("relsrc", "/a"), "'relsrc' mount path must be absolute"),
            (
                Mount {
                    propagation: Some("sideways".into()),
                    ..bind("/x", "/a")
                },
                "invalid propagation mode: sideways",
            ),
            (
                Mount {
                    kind: MountKind::Tmpfs,
                    ..bind("", "tmp")
                },
                "invalid mount config for type \"tmpfs\"",
            ),
            (
                Mount {
                    kind: MountKind::Tmpfs,
                    options: strings(&["bogus"]),
                    ..bind("", "/tmp")
                },
                "invalid tmpfs option \"bogus\"",
            ),
            (
                Mount {
                    kind: MountKind::Tmpfs,
                    options: strings(&["color=red"]),
                    ..bind("", "/tmp")
                },
                "invalid tmpfs option \"color\"",
            ),
        ];
        for (m, want) in cases {
            let e = with_mounts(vec![m.clone()]).unwrap_err();
            assert!(e.to_string().contains(want), "{m:?}: {e}");
            assert!(e.is_invalid_input());
        }
        let e = with_mounts(vec![bind("/x", "/a"), bind("/y", "/a/")]).unwrap_err();
        assert_eq!(e.to_string(), "duplicate mount point: /a");
    }

    #[test]
    fn user_mounts_replace_defaults_and_sort_by_depth() {
        let s = with_mounts(vec![
            bind("/h/deep", "/a/b/c"),
            bind("/h/hosts", "/etc/hosts"),
            bind("/h/shm", "/dev/shm"),
            bind("/h/x", "/x"),
        ])
        .unwrap();
        let dests: Vec<&str> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/x",
                "/etc/hosts",
                "/dev/shm",
                "/etc/resolv.conf",
                "/etc/hostname",
                "/a/b/c"
            ]
        );
        assert_eq!(mount(&s, "/etc/hosts").unwrap()["source"], "/h/hosts");
        // A user /dev replaces every default mount under it.
        let s = with_mounts(vec![bind("/h/dev", "/dev")]).unwrap();
        assert!(mount(&s, "/dev/pts").is_none() && mount(&s, "/dev/shm").is_none());
        assert_eq!(mount(&s, "/dev").unwrap()["source"], "/h/dev");
    }

    #[test]
    fn tmpfs_option_merge() {
        let merged = merge_tmpfs_options(&strings(&[
            "noexec", "nosuid", "rprivate", "defaults", "size=1m", "exec", "size=2m", "rshared",
            "rw", "ro",
        ]))
        .unwrap();
        assert_eq!(merged, ["nosuid", "exec", "size=2m", "rshared", "ro"]);
    }

    // --- init, namespaces ------------------------------------------------

    #[test]
    fn init_prepends_and_binds() {
        let s = build_full(&ContainerConfig::default(), true).unwrap();
        assert_eq!(s["process"]["args"], json!([INIT_PATH, "--", "sh"]));
        let m = mount(&s, INIT_PATH).unwrap();
        assert_eq!(
            *m,
            json!({"destination": INIT_PATH, "type": "bind", "source": "/usr/libexec/berth/docker-init",
                   "options": ["bind", "ro"]})
        );
        runtime_accepts(&s);
        assert!(mount(&spec(&ContainerConfig::default()), INIT_PATH).is_none());
    }

    fn namespace_types(s: &Value) -> Vec<String> {
        s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn network_host_drops_the_network_namespace() {
        let all = ["mount", "network", "uts", "pid", "ipc", "cgroup"];
        assert_eq!(namespace_types(&spec(&ContainerConfig::default())), all);
        let none = ContainerConfig {
            network: NetworkMode::None,
            ..ContainerConfig::default()
        };
        assert_eq!(namespace_types(&spec(&none)), all);
        let host = ContainerConfig {
            network: NetworkMode::Host,
            ..ContainerConfig::default()
        };
        assert_eq!(
            namespace_types(&spec(&host)),
            ["mount", "uts", "pid", "ipc", "cgroup"]
        );
    }

    // --- devices -----------------------------------------------------------

    fn with_device(host: &Path, container: &str, permissions: &str) -> Result<Value, SpecError> {
        build_full(
            &ContainerConfig {
                devices: vec![Device {
                    host: host.to_path_buf(),
                    container: container.into(),
                    permissions: permissions.into(),
                }],
                ..ContainerConfig::default()
            },
            false,
        )
    }

    #[test]
    fn device_from_the_host() {
        let s = with_device(Path::new("/dev/null"), "/dev/mynull", "rw").unwrap();
        let node = &s["linux"]["devices"][0];
        assert_eq!(node["path"], "/dev/mynull");
        assert_eq!(node["type"], "c");
        assert_eq!(
            (node["major"].clone(), node["minor"].clone()),
            (json!(1), json!(3))
        );
        assert_eq!(node["fileMode"], 0o666);
        let rules = s["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules[0], json!({"allow": false, "access": "rwm"}));
        assert_eq!(
            *rules.last().unwrap(),
            json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"})
        );
        assert_eq!(rules.len(), default_device_rules().len() + 1);
        runtime_accepts(&s);
        // Privileged: the node is created, everything is allowed.
        let s = build_full(
            &ContainerConfig {
                privileged: true,
                devices: vec![Device {
                    host: "/dev/zero".into(),
                    container: "/dev/z".into(),
                    permissions: "r".into(),
                }],
                ..ContainerConfig::default()
            },
            false,
        )
        .unwrap();
        assert_eq!(s["linux"]["devices"][0]["minor"], 5);
        assert_eq!(
            s["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
    }

    #[test]
    fn default_device_rules_follow_docker() {
        let s = spec(&ContainerConfig::default());
        assert_eq!(s["linux"]["devices"], json!([]));
        let rules = s["linux"]["resources"]["devices"].as_array().unwrap();
        let allowed = |major: u64, minor: u64| {
            rules.iter().any(|r| {
                r["allow"] == true && r["type"] == "c" && r["major"] == major && r["minor"] == minor
            })
        };
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
        ] {
            assert!(allowed(major, minor), "{major}:{minor}");
        }
        assert!(rules.contains(
            &json!({"allow": false, "type": "c", "major": 10, "minor": 229, "access": "rwm"})
        ));
        assert!(rules.contains(&json!({"allow": true, "type": "c", "major": 136, "access": "rwm"})));
        assert!(rules.contains(&json!({"allow": true, "type": "b", "access": "m"})));
    }

    #[test]
    fn bad_devices_are_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = with_device(file.path(), "/dev/x", "rwm").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "error gathering device information while adding custom device {:?}: not a device node",
                file.path()
            )
        );
        assert!(e.is_invalid_input());
        let e = with_device(Path::new("/dev/no-such-device-here"), "/dev/x", "rwm").unwrap_err();
        assert!(e.to_string().contains("No such file or directory"), "{e}");
        let e = with_device(Path::new("/dev/null"), "dev/x", "rwm").unwrap_err();
        assert!(e.to_string().contains("must be absolute"), "{e}");
        for mode in ["x", "rr", "rwmr"] {
            assert!(
                with_device(Path::new("/dev/null"), "/dev/x", mode).is_err(),
                "{mode}"
            );
        }
    }

    // --- resources -----------------------------------------------------------

    fn with_resources(r: Resources) -> Result<Value, SpecError> {
        build_full(
            &ContainerConfig {
                resources: r,
                ..ContainerConfig::default()
            },
            false,
        )
    }

    #[test]
    fn memory_and_swap() {
        let mib = 1 << 20;
        let res = |memory, memory_swap| {
            with_resources(Resources {
                memory,
                memory_swap,
                ..Resources::default()
            })
            .map(|s| s["linux"]["resources"].get("memory").cloned())
        };
        assert_eq!(res(None, None).unwrap(), None);
        assert_eq!(
            res(Some(64 * mib), None).unwrap(),
            Some(json!({"limit": 64 * mib, "swap": 128 * mib}))
        );
        assert_eq!(
            res(Some(64 * mib), Some(0)).unwrap(),
            Some(json!({"limit": 64 * mib, "swap": 128 * mib}))
        );
        assert_eq!(
            res(Some(64 * mib), Some(100 * mib)).unwrap(),
            Some(json!({"limit": 64 * mib, "swap": 100 * mib}))
        );
        assert_eq!(
            res(Some(64 * mib), Some(-1)).unwrap(),
            Some(json!({"limit": 64 * mib}))
        );
        assert_eq!(
            res(Some(6 * mib), None).unwrap(),
            Some(json!({"limit": 6 * mib, "swap": 12 * mib}))
        );
        let e = res(Some(6 * mib - 1), None).unwrap_err();
        assert_eq!(e.to_string(), "Minimum memory limit allowed is 6MB");
        assert!(matches!(
            res(Some(64 * mib), Some(32 * mib)).unwrap_err(),
            SpecError::SwapBelowMemory
        ));
        assert!(matches!(
            res(None, Some(32 * mib)).unwrap_err(),
            SpecError::SwapWithoutMemory
        ));
    }

    #[test]
    fn cpus_shares_cpuset_and_pids() {
        let s = with_resources(Resources {
            nano_cpus: Some(500_000_000),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0".into()),
            pids_limit: Some(100),
            ..Resources::default()
        })
        .unwrap();
        let r = &s["linux"]["resources"];
        assert_eq!(
            r["cpu"],
            json!({"shares": 512, "cpus": "0", "period": 100_000, "quota": 50_000})
        );
        assert_eq!(r["pids"], json!({"limit": 100}));
        runtime_accepts(&s);
        let quota = |nano| {
            with_resources(Resources {
                nano_cpus: Some(nano),
                ..Resources::default()
            })
            .map(|s| s["linux"]["resources"]["cpu"]["quota"].clone())
        };
        assert_eq!(quota(1_000_000_000).unwrap(), 100_000);
        assert_eq!(quota(10_000_000).unwrap(), 1_000);
        let e = quota(-1).unwrap_err();
        assert!(
            e.to_string().starts_with("range of CPUs is from 0.01 to "),
            "{e}"
        );
        assert!(quota(1_000_000 * 1_000_000_000).is_err());
        let pids = |p| {
            with_resources(Resources {
                pids_limit: Some(p),
                ..Resources::default()
            })
            .unwrap()["linux"]["resources"]["pids"]
                .clone()
        };
        assert_eq!(pids(0), json!({"limit": -1}));
        assert_eq!(pids(-1), json!({"limit": -1}));
        let none = spec(&ContainerConfig::default());
        assert!(none["linux"]["resources"].get("pids").is_none());
        assert!(none["linux"]["resources"].get("cpu").is_none());
        for set in ["0-3", "0,2-4", "7"] {
            assert!(is_cpu_list(set), "{set}");
        }
        for set in ["", "a", "1-", "-1", "3-1", "1,,2"] {
            assert!(!is_cpu_list(set), "{set}");
        }
        let e = with_resources(Resources {
            cpuset_cpus: Some("x".into()),
            ..Resources::default()
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "invalid value \"x\" for cpuset cpus");
    }

    // --- rlimits and seccomp -----------------------------------------------------

    fn with_ulimits(ulimits: &[(&str, i64, i64)]) -> Result<Value, SpecError> {
        let ulimits = ulimits
            .iter()
            .map(|(name, soft, hard)| Ulimit {
                name: name.to_string(),
                soft: *soft,
                hard: *hard,
            })
            .collect();
        build_full(
            &ContainerConfig {
                ulimits,
                ..ContainerConfig::default()
            },
            false,
        )
    }

    #[test]
    fn ulimits_become_rlimits() {
        let s = with_ulimits(&[("nofile", 1024, 2048), ("core", -1, -1)]).unwrap();
        assert_eq!(
            s["process"]["rlimits"],
            json!([
                {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048},
                {"type": "RLIMIT_CORE", "soft": u64::MAX, "hard": u64::MAX}
            ])
        );
        runtime_accepts(&s);
        assert!(spec(&ContainerConfig::default())["process"]
            .get("rlimits")
            .is_none());
        for (bad, want) in [
            (("nofiles", 1, 1), "unknown ulimit type"),
            (
                ("nofile", 10, 5),
                "soft limit must be less than or equal to hard limit: 10 > 5",
            ),
            (("nproc", -2, 5), "-2 is negative"),
        ] {
            let e = with_ulimits(&[bad]).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    fn with_seccomp(seccomp: Seccomp, privileged: bool) -> Result<Value, SpecError> {
        build_full(
            &ContainerConfig {
                seccomp,
                privileged,
                ..ContainerConfig::default()
            },
            false,
        )
    }

    #[test]
    fn seccomp_choices() {
        let caps = strings(DEFAULT_CAPABILITIES);
        let s = with_seccomp(Seccomp::Default, false).unwrap();
        assert_eq!(
            s["linux"]["seccomp"],
            crate::seccomp_default::profile(&caps)
        );
        assert!(with_seccomp(Seccomp::Unconfined, false).unwrap()["linux"]
            .get("seccomp")
            .is_none());
        let custom = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","excludes":{"caps":["CAP_SYS_ADMIN"]}}]}"#;
        let s = with_seccomp(Seccomp::Custom(custom.into()), false).unwrap();
        assert_eq!(
            s["linux"]["seccomp"],
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]})
        );
        runtime_accepts(&s);
        // Privileged: no default filter, but a profile of its own applies
        // (for its capabilities: here the rule is excluded).
        let s = with_seccomp(Seccomp::Custom(custom.into()), true).unwrap();
        assert_eq!(
            s["linux"]["seccomp"],
            json!({"defaultAction": "SCMP_ACT_ALLOW"})
        );
        assert!(
            with_seccomp(Seccomp::Custom("{}".into()), false).unwrap()["linux"]
                .get("seccomp")
                .is_none()
        );
        let e = with_seccomp(Seccomp::Custom("{".into()), false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid seccomp profile: decoding seccomp profile failed"),
            "{e}"
        );
        assert!(e.is_invalid_input());
    }

    #[test]
    fn full_spec_with_everything_is_accepted_by_the_runtime() {
        let cfg = ContainerConfig {
            tty: true,
            cap_add: strings(&["SYS_ADMIN"]),
            workdir: Some("/work".into()),
            env: strings(&["A=1"]),
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 10,
                hard: 20,
            }],
            mounts: vec![
                bind("/srv", "/srv"),
                Mount {
                    kind: MountKind::Tmpfs,
                    ..bind("", "/tmp")
                },
            ],
            devices: vec![Device {
                host: "/dev/null".into(),
                container: "/dev/n".into(),
                permissions: "rwm".into(),
            }],
            resources: Resources {
                memory: Some(64 << 20),
                nano_cpus: Some(1_000_000_000),
                pids_limit: Some(50),
                ..Resources::default()
            },
            ..ContainerConfig::default()
        };
        let s = build_full(&cfg, true).unwrap();
        assert_eq!(s["process"]["terminal"], true);
        assert_eq!(s["process"]["cwd"], "/work");
        assert_eq!(s["ociVersion"], berth_runtime::state::OCI_VERSION);
        runtime_accepts(&s);
        let parsed = berth_runtime::config::parse(&serde_json::to_vec(&s).unwrap()).unwrap();
        let seccomp = parsed.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        berth_runtime::seccomp::compile(seccomp).unwrap();
    }

    #[test]
    fn host_failures_are_not_invalid_input() {
        let e = SpecError::Io {
            what: "x".into(),
            source: io::Error::from_raw_os_error(libc::EIO),
        };
        assert!(!e.is_invalid_input());
        assert!(SpecError::MemoryTooLow.is_invalid_input());
    }
}
