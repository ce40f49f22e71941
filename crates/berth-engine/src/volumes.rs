//! Volumes (the local driver): a directory `<root>/volumes/<name>/_data`
//! that outlives containers, named or anonymous, optionally backed by a
//! mount given as `-o type=… -o device=… -o o=…` (tmpfs, bind, a block
//! device), mounted on `_data` when a container first uses it.
//!
//! The row is written after the directory exists; a volume in use by a
//! container (a `container_volumes` row) cannot be removed.

use crate::db::{DbError, VolumeRecord};
use crate::images::ImageStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("remove {name}: volume is in use - [{users}]")]
    InUse { name: String, users: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The directory of a volume.
pub fn dir(root: &Path, name: &str) -> PathBuf {
    root.join("volumes").join(name)
}

/// Where containers see a volume's content.
pub fn data_dir(root: &Path, name: &str) -> PathBuf {
    dir(root, name).join("_data")
}

/// Docker's rule for volume names.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        let shown: String = name
            .chars()
            .take(64)
            .collect::<String>()
            .escape_debug()
            .to_string();
        return Err(VolumeError::Invalid(format!(
            "create {shown}: \"{shown}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        )));
    }
    Ok(())
}

fn random_name() -> Result<String> {
    crate::random_hex().map_err(io("reading", Path::new("/dev/urandom")))
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// `volume create`: a new volume, or the existing one of that name (as
/// Docker: creating an existing name is not an error). `name` None makes
/// an anonymous volume.
pub fn create(
    store: &mut ImageStore,
    name: Option<&str>,
    driver: &str,
    labels: BTreeMap<String, String>,
    options: BTreeMap<String, String>,
) -> Result<VolumeRecord> {
    if driver != "local" {
        return Err(VolumeError::Invalid(format!(
            "create {}: error looking up volume plugin {driver}: plugin \"{driver}\" not found",
            name.unwrap_or("")
        )));
    }
    for k in options.keys() {
        if !matches!(k.as_str(), "type" | "device" | "o" | "size") {
            return Err(VolumeError::Invalid(format!("invalid option key: {k:?}")));
        }
    }
    if options.contains_key("device") != options.contains_key("type") {
        return Err(VolumeError::Invalid(
            "missing required option: \"type\" and \"device\" go together".into(),
        ));
    }
    let (name, anonymous) = match name {
        Some(n) => {
            validate_name(n)?;
            (n.to_string(), false)
        }
        None => (random_name()?, true),
    };
    if let Some(existing) = store.db.volume(&name)? {
        return Ok(existing);
    }
    let data = data_dir(store.root(), &name);
    std::fs::create_dir_all(&data).map_err(io("creating", &data))?;
    let rec = VolumeRecord {
        name: name.clone(),
        driver: driver.into(),
        created: now(),
        labels,
        options,
        anonymous,
    };
    store.db.insert_volume(&rec)?;
    // Another command may have made it meanwhile: theirs stands.
    Ok(store.db.volume(&name)?.unwrap_or(rec))
}

pub fn get(store: &ImageStore, name: &str) -> Result<VolumeRecord> {
    store
        .db
        .volume(name)?
        .ok_or_else(|| VolumeError::NotFound(name.to_string()))
}

/// Mount a volume's backing device on its data dir, if it has one and it
/// is not mounted yet.
pub fn ensure_mounted(root: &Path, v: &VolumeRecord) -> Result<()> {
    let (Some(kind), Some(device)) = (v.options.get("type"), v.options.get("device")) else {
        return Ok(());
    };
    let data = data_dir(root, &v.name);
    if is_mountpoint(&data) {
        return Ok(());
    }
    let opts = v.options.get("o").cloned().unwrap_or_default();
    let (mut flags, mut data_opts) = (nix::mount::MsFlags::empty(), Vec::new());
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "bind" => flags |= nix::mount::MsFlags::MS_BIND,
            "rbind" => flags |= nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
            "ro" => flags |= nix::mount::MsFlags::MS_RDONLY,
            "nosuid" => flags |= nix::mount::MsFlags::MS_NOSUID,
            "nodev" => flags |= nix::mount::MsFlags::MS_NODEV,
            "noexec" => flags |= nix::mount::MsFlags::MS_NOEXEC,
            other => data_opts.push(other),
        }
    }
    let data_opts = data_opts.join(",");
    nix::mount::mount(
        Some(device.as_str()),
        &data,
        Some(kind.as_str()),
        flags,
        (!data_opts.is_empty()).then_some(data_opts.as_str()),
    )
    .map_err(|e| VolumeError::Invalid(format!(
        "error while mounting volume '{}': failed to mount local volume: mount {device}:{}, flags: {:#x}, data: {data_opts}: {e}",
        v.name,
        data.display(),
        flags.bits()
    )))
}

fn is_mountpoint(p: &Path) -> bool {
    let want = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines().any(|l| {
                l.split_whitespace()
                    .nth(4)
                    .is_some_and(|mp| Path::new(&unescape(mp)) == want)
            })
        })
        .unwrap_or(false)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `volume rm`: refused while a container uses it, unless `force` (which
/// Docker also refuses for volumes in use).
pub fn remove(store: &mut ImageStore, name: &str) -> Result<()> {
    let v = get(store, name)?;
    let users = store.db.volume_users(name)?;
    if !users.is_empty() {
        return Err(VolumeError::InUse {
            name: name.to_string(),
            users: users.join(", "),
        });
    }
    let data = data_dir(store.root(), &v.name);
    if is_mountpoint(&data) {
        nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| VolumeError::Invalid(format!("unmounting {}: {e}", data.display())))?;
    }
    // The row first: a crash then leaves a directory no row names.
    store.db.delete_volume(name)?;
    let d = dir(store.root(), name);
    std::fs::remove_dir_all(&d).map_err(io("removing", &d))
}

/// `volume prune`: unused volumes (anonymous ones only unless `all`).
/// Returns the names removed.
pub fn prune(store: &mut ImageStore, all: bool) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for v in store.db.volumes()? {
        if (all || v.anonymous) && store.db.volume_users(&v.name)?.is_empty() {
            remove(store, &v.name)?;
            out.push(v.name);
        }
    }
    Ok(out)
}

/// A volume in Docker's `volume inspect` shape.
pub fn inspect_json(root: &Path, v: &VolumeRecord) -> serde_json::Value {
    serde_json::json!({
        "CreatedAt": v.created,
        "Driver": v.driver,
        "Labels": v.labels,
        "Mountpoint": data_dir(root, &v.name),
        "Name": v.name,
        "Options": v.options,
        "Scope": "local",
    })
}

/// Copy the image's content at `path` (inside the container's rootfs) into
/// an empty volume, as Docker does on a volume's first use. The path is
/// resolved inside the rootfs (a symlink in the image cannot lead the copy
/// out of it), and `cp -a` copies symlinks as symlinks.
pub fn populate(rootfs: &Path, path: &str, data: &Path) -> Result<()> {
    let empty = std::fs::read_dir(data)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if !empty {
        return Ok(());
    }
    let root = match std::fs::File::open(rootfs) {
        Ok(f) => f,
        Err(_) => return Ok(()),
    };
    let rel = Path::new(path.trim_start_matches('/'));
    let src = match berth_sys::fd::open_in_root(
        std::os::fd::AsFd::as_fd(&root),
        rel,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    ) {
        Ok(fd) => fd,
        // Nothing there (or not a directory): nothing to copy.
        Err(_) => return Ok(()),
    };
    let src_path = format!("/proc/self/fd/{}/.", std::os::fd::AsRawFd::as_raw_fd(&src));
    berth_sys::fd::clear_cloexec(std::os::fd::AsRawFd::as_raw_fd(&src))
        .map_err(io("passing", data))?;
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&src_path)
        .arg(data)
        .status()
        .map_err(io("copying into", data))?;
    drop(src);
    if !status.success() {
        return Err(VolumeError::Invalid(format!(
            "copying the image's {path} into the volume {} failed",
            data.display()
        )));
    }
    Ok(())
}
