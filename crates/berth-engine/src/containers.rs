//! Containers: records in the store, their directories, and their life
//! (create, start through a monitor, stop, kill, remove), kept consistent
//! with what their monitors report.
//!
//! A container's persistent directory (`<root>/containers/<id>/`) holds its
//! overlay upper and work dirs, the `merged` mount point, the files bound at
//! /etc/hostname, /etc/hosts and /etc/resolv.conf, and the json-file log.
//! Its run directory (`<run-root>/containers/<id>/`) holds what lives only
//! while it runs: the OCI bundle's `config.json` (written at each start:
//! the spec is generated then, as Docker does), the monitor's `state.json`
//! and attach socket. The runtime's own state is under `<run-root>/runtime`.
//!
//! The row is written first (it reserves the name), then the directories;
//! a failure in between removes both. The monitor is the truth while a
//! container runs; [`refresh`] copies its `state.json` into the row, and
//! marks the container exited when its monitor died.

use crate::config::ContainerConfig;
use crate::db::{ContainerRecord, DbError};
use crate::images::{ImageError, ImageStore};
use crate::monitor_proto::{self as proto, Kind, MonitorArgs, MonitorState};
use crate::spec;
use berth_image::overlay;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// The container could not be started; `code` is Docker's exit code
    /// class (125 engine, 126 cannot invoke, 127 not found).
    #[error("{msg}")]
    Start { code: i32, msg: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ContainerError {
    /// The exit code `berth` returns for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ContainerError::Start { code, .. } => *code,
            _ => 125,
        }
    }
}

pub type Result<T, E = ContainerError> = std::result::Result<T, E>;

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where containers live.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `--root`.
    pub root: PathBuf,
    /// `--run-root`.
    pub run_root: PathBuf,
    /// The `berth-monitor` binary.
    pub monitor: PathBuf,
    /// The command that removes a container for the monitor (`--rm`):
    /// the `berth` binary and its global flags.
    pub berth: Vec<String>,
}

impl Paths {
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.run_root.join("containers").join(id)
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.run_root.join("runtime")
    }

    /// The runtime's state root, to call the runtime library with.
    pub fn runtime(&self) -> berth_runtime::state::Root {
        berth_runtime::state::Root::new(self.runtime_root())
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join(format!("{id}-json.log"))
    }

    /// Where the rootfs is mounted while the container runs: in the run
    /// directory (tmpfs), like everything else that lives only as long as
    /// a start. On the store's disk a container is its upper and work dirs
    /// and its log: each file made there and deleted again slows the next
    /// file made on a busy ext4 without a journal, whose inode allocator
    /// steps over every inode freed in the last 60 seconds (see [`ensure_run_root`]).
    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.run_dir(id).join("merged")
    }

    /// Where a removed container's directory is moved to be deleted (its
    /// row is gone by then): deleting it is the slowest part of a removal,
    /// and a `run --rm` leaves it to the monitor after the command has
    /// returned. What is left there is deleted when a store opens.
    pub fn trash_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(TRASH).join(id)
    }

    /// The container's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`
    /// (`name`), written at each start (and kept current while it runs).
    pub fn etc_file(&self, id: &str, name: &str) -> PathBuf {
        self.run_dir(id).join(name)
    }
}

const TRASH: &str = ".trash";

/// Make sure the run root is in memory. It holds what lives only as long
/// as a container runs (bundle, state, sockets, the rootfs mount point,
/// /etc files, namespaces), a dozen files made and deleted per start; on
/// a host whose /run is on disk (this happens: a container or VM image
/// without a tmpfs there) each of those is an inode allocation on the
/// disk, the costliest part of a start on a busy ext4 without a journal.
/// So berth mounts a tmpfs of its own on a run root that is not one, as
/// long as the run root is new or empty: never over the state of
/// containers started before. Called by whatever makes the first thing
/// there (a container's run dir, the network lock). Two commands doing
/// this at once are serialized by a lock on the directory underneath.
pub fn ensure_run_root(run_root: &Path) -> Result<()> {
    use nix::sys::statfs::{fstatfs, statfs, FsType, TMPFS_MAGIC};
    // ramfs has no constant in nix.
    let in_memory = |t: FsType| t == TMPFS_MAGIC || t.0 as u64 == 0x8584_58f6;
    std::fs::create_dir_all(run_root).map_err(io("creating", run_root))?;
    let dir = File::open(run_root).map_err(io("opening", run_root))?;
    if fstatfs(&dir).is_ok_and(|s| in_memory(s.filesystem_type())) {
        return Ok(());
    }
    let _held = nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io("locking", run_root)(e.into()))?;
    // Mounted meanwhile by another command, or not ours to hide.
    if statfs(run_root).is_ok_and(|s| in_memory(s.filesystem_type()))
        || std::fs::read_dir(run_root)
            .map_err(io("reading", run_root))?
            .next()
            .is_some()
    {
        return Ok(());
    }
    nix::mount::mount(
        Some("tmpfs"),
        run_root,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| io("mounting a tmpfs on", run_root)(e.into()))
}

/// Delete whatever removals left in the trash of the store at `root` (a
/// monitor killed before it deleted the directory of its `run --rm`).
pub fn clear_trash(root: &Path) {
    if let Ok(entries) = std::fs::read_dir(root.join("containers").join(TRASH)) {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

const INIT_LAYER: &str = ".init";
const ETC_FILES: [&str; 3] = ["hostname", "hosts", "resolv.conf"];

/// The store's init layer, the top lower layer of every container whose
/// image has a directory (or nothing) at /etc: empty `/etc/hostname`,
/// `/etc/hosts` and `/etc/resolv.conf`, the mount points of the container's
/// own files. Without it each start makes them in the container's upper
/// dir (four inodes made and deleted on the store's disk per container,
/// the costliest thing a start does on a busy ext4 without a journal), and
/// they are no change of the container's for `diff` and `commit`. Made
/// once per store; `None` for an image whose /etc is a symlink or a file,
/// which the layer's directory would hide.
fn init_layer(paths: &Paths, lowers: &[PathBuf]) -> Option<PathBuf> {
    for l in lowers {
        match std::fs::symlink_metadata(l.join("etc")) {
            Ok(m) if m.is_dir() => break,
            // A whiteout: the image deleted /etc.
            Ok(m) if std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()) => break,
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    // Renamed into place whole: there, it is complete.
    let dir = paths.root.join("containers").join(INIT_LAYER);
    if dir.is_dir() {
        return Some(dir);
    }
    // Made aside and renamed into place: a start never sees half of it.
    let tmp = paths
        .root
        .join("containers")
        .join(format!("{INIT_LAYER}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let made = std::fs::create_dir_all(tmp.join("etc")).and_then(|()| {
        for f in ETC_FILES {
            std::fs::write(tmp.join("etc").join(f), b"")?;
        }
        std::fs::rename(&tmp, &dir)
    });
    let _ = std::fs::remove_dir_all(&tmp);
    match made {
        Ok(()) => Some(dir),
        // Made meanwhile by another start.
        Err(_) if dir.is_dir() => Some(dir),
        Err(_) => None,
    }
}

const SPARE: &str = ".spare";

/// How many emptied container directories a store keeps for new
/// containers (a few KiB of disk each).
const SPARES_MAX: usize = 64;

/// The store's pool of spare container directories.
fn spare_pool(containers: &Path) -> PathBuf {
    containers.join(SPARE)
}

/// Delete a container's directory from the trash; or, while the store has
/// fewer than [`SPARES_MAX`], empty it and keep it as a spare for the next
/// `create`. A start then makes one inode on the store's disk (the
/// overlay's work/work) instead of five: on a busy ext4 without a journal,
/// whose inode allocator steps over every inode freed in the last minute,
/// making them was a third of the CPU time of a `run -d`.
pub fn delete_trash(trash: &Path) -> Result<()> {
    if recycle(trash).is_ok() {
        return Ok(());
    }
    match std::fs::remove_dir_all(trash) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", trash)(e)),
        _ => Ok(()),
    }
}

/// Empty a trashed container directory down to what a new container
/// starts with: an empty upper dir that is as `mkdir` makes it (else it
/// goes, and `create` makes one), an empty work dir, an empty log; then
/// move it into the pool.
fn recycle(trash: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (Some(id), Some(containers)) = (
        trash.file_name().and_then(|n| n.to_str()),
        trash.parent().and_then(|t| t.parent()),
    ) else {
        return Err(std::io::ErrorKind::InvalidInput.into());
    };
    let pool = spare_pool(containers);
    if std::fs::read_dir(&pool).map_or(0, |d| d.count()) >= SPARES_MAX {
        return Err(std::io::ErrorKind::StorageFull.into());
    }
    let log = format!("{id}-json.log");
    for e in std::fs::read_dir(trash)? {
        let e = e?;
        let path = e.path();
        let name = e.file_name();
        match name.to_str() {
            Some("upper") => {
                let m = std::fs::symlink_metadata(&path)?;
                let plain =
                    m.is_dir() && m.mode() & 0o7777 == 0o755 && m.uid() == 0 && m.gid() == 0;
                if plain {
                    empty_dir(&path)?;
                    // Overlay's own marks (its uuid, opaque, impure) and
                    // any the container set on its /.
                    for x in berth_sys::xattr::llist(&path)? {
                        berth_sys::xattr::lremove(&path, &x)?;
                    }
                } else {
                    remove_any(&path)?;
                }
            }
            // Overlay's own work dir, and what a volatile mount leaves
            // there (which would fail the next mount).
            Some("work") => empty_dir(&path)?,
            Some(n) if n == log => File::options().write(true).open(&path)?.set_len(0)?,
            _ => remove_any(&path)?,
        }
    }
    std::fs::create_dir_all(&pool)?;
    std::fs::rename(trash, pool.join(id))
}

fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        remove_any(&e?.path())?;
    }
    Ok(())
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path)?.is_dir() {
        true => std::fs::remove_dir_all(path),
        false => std::fs::remove_file(path),
    }
}

/// Take a spare directory from the pool as the directory of container
/// `id` (its upper and work dirs, its log renamed to `id`'s), if there is
/// one. Two creates never get the same: the rename decides.
fn claim_spare(paths: &Paths, id: &str) {
    let containers = paths.root.join("containers");
    let Ok(entries) = std::fs::read_dir(spare_pool(&containers)) else {
        return;
    };
    let dir = paths.container_dir(id);
    for e in entries.flatten() {
        if std::fs::rename(e.path(), &dir).is_err() {
            continue;
        }
        if let Some(old) = e.file_name().to_str() {
            let _ = std::fs::rename(dir.join(format!("{old}-json.log")), paths.log_path(id));
        }
        // The container's / has the time it was made, as a new dir would.
        let _ = nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &dir.join("upper"),
            &nix::sys::time::TimeSpec::UTIME_NOW,
            &nix::sys::time::TimeSpec::UTIME_NOW,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
        return;
    }
}

/// States, as Docker names them.
pub mod state {
    pub const CREATED: &str = "created";
    pub const RUNNING: &str = "running";
    pub const PAUSED: &str = "paused";
    pub const RESTARTING: &str = "restarting";
    pub const EXITED: &str = "exited";
    pub const DEAD: &str = "dead";
}

fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// A new container ID: 64 random hex digits.
pub fn new_id() -> Result<String> {
    crate::random_hex().map_err(io("reading", Path::new("/dev/urandom")))
}

const ADJECTIVES: &[&str] = &[
    "agile", "bold", "brave", "bright", "calm", "clever", "cool", "crisp", "eager", "fair",
    "fancy", "gentle", "happy", "jolly", "keen", "kind", "lively", "lucid", "merry", "modest",
    "nimble", "noble", "patient", "plucky", "proud", "quick", "quiet", "rapid", "serene", "sharp",
    "shiny", "smart", "steady", "sunny", "swift", "tender", "tidy", "vivid", "warm", "wise",
    "witty", "zealous",
];

const NAMES: &[&str] = &[
    "agnesi",
    "archimedes",
    "babbage",
    "bohr",
    "boole",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euclid",
    "euler",
    "faraday",
    "fermat",
    "feynman",
    "gauss",
    "goodall",
    "hopper",
    "hypatia",
    "kepler",
    "knuth",
    "lamarr",
    "lovelace",
    "maxwell",
    "meitner",
    "mendel",
    "newton",
    "noether",
    "pascal",
    "planck",
    "ramanujan",
    "ritchie",
    "shannon",
    "tesla",
    "thompson",
    "turing",
    "volta",
    "wozniak",
    "yalow",
];

/// A Docker-style random name (`adjective_scientist`).
fn random_name(seed: &str) -> String {
    let n = u64::from_str_radix(&seed[..12], 16).unwrap_or(0);
    let a = ADJECTIVES[(n % ADJECTIVES.len() as u64) as usize];
    let b = NAMES[((n >> 20) % NAMES.len() as u64) as usize];
    format!("{a}_{b}")
}

/// Docker's rule for container names.
pub fn validate_name(name: &str) -> Result<()> {
    let name = name.strip_prefix('/').unwrap_or(name);
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok_first || !ok_rest || name.len() < 2 || name.len() > 255 {
        let shown: String = name
            .chars()
            .take(64)
            .collect::<String>()
            .escape_debug()
            .to_string();
        let more = if name.chars().count() > 64 { "…" } else { "" };
        return Err(ContainerError::Invalid(format!(
            "Invalid container name ({shown}{more}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    Ok(())
}

/// A container's configuration as stored.
pub fn config_of(rec: &ContainerRecord) -> Result<ContainerConfig> {
    serde_json::from_str(&rec.config)
        .map_err(|e| ContainerError::Invalid(format!("container {}: bad config: {e}", rec.id)))
}

/// The image defaults of an image by ID.
fn image_defaults(images: &ImageStore, image_id: &str) -> Result<spec::ImageDefaults> {
    let id: berth_image::digest::Digest = image_id
        .parse()
        .map_err(|e| ContainerError::Invalid(format!("image id {image_id}: {e}")))?;
    let bytes = images
        .blobs
        .read_all(&id, berth_image::manifest::MAX_CONFIG_SIZE as u64)
        .map_err(ImageError::from)?;
    let cfg = berth_image::manifest::parse_config(&bytes).map_err(ImageError::from)?;
    Ok(spec::ImageDefaults::from_config(&cfg))
}

/// Hold a container's lock (start, stop, remove one at a time). The lock
/// file is in the run directory, made again for a container that has one
/// on disk (after a reboot).
pub(crate) fn lock(paths: &Paths, id: &str) -> Result<Flock<File>> {
    let p = paths.run_dir(id).join(".lock");
    let open = || {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
    };
    let f = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = paths.container_dir(id);
            if !dir.exists() {
                return Err(io("opening", &dir)(e));
            }
            std::fs::create_dir_all(paths.run_dir(id)).map_err(io("creating", &p))?;
            open()
        }
        r => r,
    }
    .map_err(io("opening", &p))?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| ContainerError::Io {
        what: "locking",
        path: p,
        source: e.into(),
    })
}

/// `create`: the row (reserving the name), then the directories.
pub fn create(
    images: &mut ImageStore,
    paths: &Paths,
    cfg: ContainerConfig,
    name: Option<&str>,
) -> Result<ContainerRecord> {
    create_as(images, paths, cfg, name, new_id()?)
}

/// [`create`] with an ID chosen before (by [`new_id`]).
pub fn create_as(
    images: &mut ImageStore,
    paths: &Paths,
    mut cfg: ContainerConfig,
    name: Option<&str>,
    id: String,
) -> Result<ContainerRecord> {
    if let Some(n) = name {
        validate_name(n)?;
    }
    let image = images.find(&cfg.image)?;
    let defaults = image_defaults(images, &image.id.to_string())?;
    let command = spec::command(&cfg, &defaults)?;
    volumes_from(images, &mut cfg)?;
    resolve_volumes(images, &mut cfg, &defaults)?;
    let name = match name {
        Some(n) => n.strip_prefix('/').unwrap_or(n).to_string(),
        None => random_name(&id),
    };
    let rec = ContainerRecord {
        id: id.clone(),
        name,
        image_id: image.id.to_string(),
        image: cfg.image.clone(),
        config: serde_json::to_string(&cfg).map_err(|e| ContainerError::Invalid(e.to_string()))?,
        command,
        created: now(),
        state: state::CREATED.into(),
        ..Default::default()
    };
    match images.db.insert_container(&rec) {
        Ok(()) => {}
        // A random name that is taken: another one.
        Err(DbError::NameInUse { .. }) if name_was_random(&rec) => {
            let mut again = rec.clone();
            again.name = format!("{}_{}", rec.name, &id[..6]);
            images.db.insert_container(&again)?;
            return finish_create(images, paths, again, &cfg);
        }
        Err(e) => return Err(e.into()),
    }
    finish_create(images, paths, rec, &cfg)
}

/// Volume mounts get their volumes (made when missing: named, or anonymous
/// for `-v /path`), and every VOLUME of the image that no mount covers gets
/// an anonymous one, as Docker does.
fn resolve_volumes(
    images: &mut ImageStore,
    cfg: &mut ContainerConfig,
    defaults: &spec::ImageDefaults,
) -> Result<()> {
    let mut taken: Vec<String> = cfg.mounts.iter().map(|m| m.destination.clone()).collect();
    for dest in &defaults.volumes {
        let clean = format!("/{}", dest.trim_matches('/'));
        if !taken
            .iter()
            .any(|t| t.trim_end_matches('/') == clean.trim_end_matches('/'))
        {
            cfg.mounts.push(crate::config::Mount {
                kind: crate::config::MountKind::Volume,
                destination: clean.clone(),
                ..Default::default()
            });
            taken.push(clean);
        }
    }
    for m in cfg.mounts.iter_mut() {
        if m.kind != crate::config::MountKind::Volume {
            continue;
        }
        let v = crate::volumes::create(
            images,
            m.name.as_deref(),
            "local",
            Default::default(),
            Default::default(),
        )
        .map_err(|e| ContainerError::Invalid(e.to_string()))?;
        m.source = crate::volumes::data_dir(images.root(), &v.name);
        m.name = Some(v.name);
    }
    Ok(())
}

/// `--volumes-from`: the other container's volumes and binds, read-only
/// when asked (`:ro`), at the same places.
fn volumes_from(images: &mut ImageStore, cfg: &mut ContainerConfig) -> Result<()> {
    for spec in cfg.volumes_from.clone() {
        let (name, mode) = match spec.rsplit_once(':') {
            Some((n, m)) if m == "ro" || m == "rw" => (n.to_string(), Some(m == "ro")),
            Some(_) => {
                return Err(ContainerError::Invalid(format!(
                    "invalid mode for volumes-from: {spec}"
                )))
            }
            None => (spec.clone(), None),
        };
        let other = find_record(images, &name)?;
        let theirs = config_of(&other)?;
        for m in theirs.mounts {
            if m.kind == crate::config::MountKind::Tmpfs
                || cfg.mounts.iter().any(|x| x.destination == m.destination)
            {
                continue;
            }
            let mut m = m;
            if let Some(ro) = mode {
                m.read_only = ro;
            }
            cfg.mounts.push(m);
        }
    }
    Ok(())
}

/// A container's row by ID, name or prefix, without refreshing it.
fn find_record(images: &ImageStore, name: &str) -> Result<ContainerRecord> {
    let db = &images.db;
    let key = name.strip_prefix('/').unwrap_or(name);
    if let Some(r) = db.container(key)? {
        return Ok(r);
    }
    if let Some(r) = db.container_by_name(key)? {
        return Ok(r);
    }
    let found = if key.is_empty() {
        Vec::new()
    } else {
        db.containers_by_prefix(key)?
    };
    match found.len() {
        1 => found
            .into_iter()
            .next()
            .ok_or_else(|| ContainerError::NotFound(name.into())),
        0 => Err(ContainerError::NotFound(name.into())),
        _ => Err(ContainerError::Invalid(format!(
            "Multiple IDs found with provided prefix: {name}"
        ))),
    }
}

/// The volumes a container mounts.
fn volume_names(cfg: &ContainerConfig) -> Vec<String> {
    cfg.mounts
        .iter()
        .filter(|m| m.kind == crate::config::MountKind::Volume)
        .filter_map(|m| m.name.clone())
        .collect()
}

fn name_was_random(rec: &ContainerRecord) -> bool {
    rec.name == random_name(&rec.id)
}

fn finish_create(
    images: &mut ImageStore,
    paths: &Paths,
    rec: ContainerRecord,
    cfg: &ContainerConfig,
) -> Result<ContainerRecord> {
    let made = make_dirs(paths, &rec).and_then(|()| {
        for v in volume_names(cfg) {
            images.db.use_volume(&rec.id, &v)?;
        }
        crate::networks::on_create(images, paths, &rec, cfg)
    });
    match made {
        Ok(()) => Ok(rec),
        Err(e) => {
            let _ = std::fs::remove_dir_all(paths.container_dir(&rec.id));
            let _ = std::fs::remove_dir_all(paths.run_dir(&rec.id));
            let _ = images.db.delete_container(&rec.id);
            Err(e)
        }
    }
}

fn make_dirs(paths: &Paths, rec: &ContainerRecord) -> Result<()> {
    let dir = paths.container_dir(&rec.id);
    // A spare has them already (its upper dir may have gone).
    claim_spare(paths, &rec.id);
    for sub in ["upper", "work"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(io("creating", &p))?;
    }
    ensure_run_root(&paths.run_root)?;
    let run = paths.run_dir(&rec.id);
    std::fs::create_dir_all(&run).map_err(io("creating", &run))
}

/// Find a container by full ID, name, or unique ID prefix, as Docker does;
/// its state refreshed.
pub fn find(images: &mut ImageStore, paths: &Paths, name: &str) -> Result<ContainerRecord> {
    let rec = find_record(images, name)?;
    refresh(images, paths, rec)
}

/// Every container, states refreshed, newest first.
pub fn list(images: &mut ImageStore, paths: &Paths) -> Result<Vec<ContainerRecord>> {
    let all = images.db.containers()?;
    all.into_iter().map(|r| refresh(images, paths, r)).collect()
}

fn read_state(paths: &Paths, id: &str) -> Option<MonitorState> {
    let bytes = std::fs::read(paths.run_dir(id).join(proto::STATE_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// How long a start or stop waits for the previous monitor to finish.
const LAST_MONITOR_WAIT: Duration = Duration::from_secs(10);

/// Whether `pid` is a live monitor of container `id`: the very process
/// when its state `st` has the monitor's start time, else one that looks
/// like it (a state file from before the start time was recorded).
fn monitor_alive(pid: i64, id: &str, st: &MonitorState) -> bool {
    if pid <= 0 {
        return false;
    }
    if st.monitor_start > 0 && st.monitor_pid == pid {
        return berth_runtime::state::proc_start(pid as i32) == Some((st.monitor_start, false));
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => {
            let s = String::from_utf8_lossy(&cmd);
            s.contains("berth-monitor") || s.contains(id)
        }
        Err(_) => false,
    }
}

/// Wait, at most `limit`, for the monitor of a container that has
/// recorded its last exit to be gone: after the exit it still unmounts
/// the rootfs and releases the network (veths, namespace, lease), which a
/// new start must not race (the old monitor would take the new
/// container's namespace away) and a `stop` must include. Call it without
/// the container's lock: a `--rm` monitor removes the container through
/// `berth rm`, which takes it.
fn await_last_monitor(paths: &Paths, rec: &ContainerRecord, limit: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let Some(st) = read_state(paths, &rec.id).filter(|s| s.status == "exited" && s.pid == 0) else {
        return;
    };
    let pid = if st.monitor_pid > 0 {
        st.monitor_pid
    } else {
        rec.monitor_pid
    };
    // The pidfd keeps the pid from being reused while we look at it.
    let Ok(fd) = berth_sys::process::pidfd_open(pid as libc::pid_t) else {
        return;
    };
    if !monitor_alive(pid, &rec.id, &st) {
        return;
    }
    // Readable once the process has exited.
    let end = Instant::now() + limit;
    let gone = loop {
        let left = end.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => break true,
            Ok(_) | Err(nix::errno::Errno::EINTR) if !left.is_zero() => {}
            _ => break false,
        }
    };
    if !gone {
        tracing::warn!(id = %rec.id, "the container's last monitor has not exited yet");
    }
}

/// Bring a row up to date with its monitor's state.
pub fn refresh(
    images: &mut ImageStore,
    paths: &Paths,
    mut rec: ContainerRecord,
) -> Result<ContainerRecord> {
    let before = rec.clone();
    if rec.state == state::CREATED {
        // A start whose command died before recording it: the monitor's
        // state file tells.
        let Some(st) = read_state(paths, &rec.id) else {
            return Ok(rec);
        };
        if st.status.is_empty() || st.status == "created" {
            return Ok(rec);
        }
        rec.state = state::RUNNING.into();
        rec.monitor_pid = st.monitor_pid;
        rec.pid = st.pid;
        rec.started_at = st.started_at.clone();
    }
    if !matches!(
        rec.state.as_str(),
        state::RUNNING | state::RESTARTING | state::PAUSED
    ) {
        return Ok(rec);
    }
    let st = read_state(paths, &rec.id).unwrap_or_default();
    let alive = monitor_alive(rec.monitor_pid, &rec.id, &st);
    match st.status.as_str() {
        "exited" if !alive || st.pid == 0 => {
            rec.state = state::EXITED.into();
            rec.pid = 0;
            rec.exit_code = st.exit_code;
            rec.oom_killed = st.oom_killed;
            rec.finished_at = st.finished_at.clone();
            rec.restart_count = st.restart_count;
            if !st.error.is_empty() {
                rec.error = st.error.clone();
            }
        }
        _ if !alive => {
            // The monitor died: nobody holds the container any more. Make
            // sure it is gone too, and say so.
            let root = paths.runtime();
            let _ = berth_runtime::kill(&root, &rec.id, libc::SIGKILL, true);
            let _ = berth_runtime::delete(&root, &rec.id, true);
            let _ = overlay::unmount(&paths.rootfs(&rec.id));
            let _ = crate::networks::teardown(&mut images.db, paths, &rec.id);
            rec.state = state::EXITED.into();
            rec.pid = 0;
            rec.exit_code = if st.status == "exited" {
                st.exit_code
            } else {
                137
            };
            rec.finished_at = if st.finished_at.is_empty() {
                now()
            } else {
                st.finished_at.clone()
            };
            rec.error = "the container's monitor exited unexpectedly".into();
        }
        "restarting" => {
            rec.state = state::RESTARTING.into();
            rec.restart_count = st.restart_count;
            rec.exit_code = st.exit_code;
        }
        "running" => {
            if rec.state == state::RESTARTING {
                rec.state = state::RUNNING.into();
            }
            rec.pid = st.pid;
            rec.started_at = st.started_at.clone();
            rec.restart_count = st.restart_count;
        }
        _ => {}
    }
    if rec != before {
        images.db.update_container(&rec)?;
    }
    Ok(rec)
}

/// What [`start`] hands back: the record, and for a caller that attached
/// from the start, its end of the attach connection.
pub struct Started {
    pub record: ContainerRecord,
    pub attach: Option<UnixStream>,
}

/// `start`: mount the rootfs, write the spec, and start a monitor that
/// starts the container. With `attach`, the caller gets a connection to
/// the monitor made before the container runs (no output is missed).
pub fn start(
    images: &mut ImageStore,
    paths: &Paths,
    rec: ContainerRecord,
    attach: bool,
) -> Result<Started> {
    start_with(images, paths, rec, attach, None)
}

/// [`start`] with a monitor started ahead ([`prestart_monitor`]).
pub fn start_with(
    images: &mut ImageStore,
    paths: &Paths,
    rec: ContainerRecord,
    attach: bool,
    monitor: Option<Monitor>,
) -> Result<Started> {
    await_last_monitor(paths, &rec, LAST_MONITOR_WAIT);
    let _lock = lock(paths, &rec.id)?;
    let rec = refresh(images, paths, rec)?;
    match rec.state.as_str() {
        state::RUNNING | state::RESTARTING => {
            return Ok(Started {
                record: rec,
                attach: None,
            })
        }
        state::PAUSED => {
            return Err(ContainerError::Conflict(
                "cannot start a paused container, try unpause instead".into(),
            ))
        }
        _ => {}
    }
    let cfg = config_of(&rec)?;
    let image =
        images.db.image(&rec.image_id.parse().map_err(|_| {
            ContainerError::Invalid(format!("container {}: bad image id", rec.id))
        })?)?;
    let image = image.ok_or_else(|| {
        ContainerError::Invalid(format!(
            "container {}: its image {} is gone",
            rec.id, rec.image_id
        ))
    })?;
    let dir = paths.container_dir(&rec.id);
    let run_dir = paths.run_dir(&rec.id);
    std::fs::create_dir_all(&run_dir).map_err(io("creating", &run_dir))?;
    let _ = std::fs::remove_file(run_dir.join(proto::STOPPED_FILE));
    let _ = std::fs::remove_file(run_dir.join(proto::STATE_FILE));
    let _ = std::fs::remove_file(run_dir.join(proto::RESTART_FILE));
    // The rootfs: the image's layers (top first) under the upper dir.
    let rootfs = paths.rootfs(&rec.id);
    std::fs::create_dir_all(&rootfs).map_err(io("creating", &rootfs))?;
    let mut lowers: Vec<PathBuf> = image
        .layers
        .iter()
        .rev()
        .map(|cid| images.layers.diff_dir(cid))
        .collect();
    if let Some(init) = init_layer(paths, &lowers) {
        lowers.insert(0, init);
    }
    let _ = overlay::unmount(&rootfs);
    let mut plan = overlay::plan(&lowers, &dir.join("upper"), &dir.join("work"), &rootfs);
    if cfg.auto_remove {
        // Its writable layer goes with it: no need for the sync of the
        // whole upper filesystem that unmounting it would otherwise do.
        plan = plan.volatile();
    }
    overlay::apply(&plan).map_err(|e| ContainerError::Start {
        code: 125,
        msg: e.to_string(),
    })?;
    if let Err(e) = prepare_volumes(images, &rootfs, &cfg) {
        let _ = overlay::unmount(&rootfs);
        return Err(e);
    }
    let started = launch(images, paths, rec, &cfg, attach, monitor);
    if started.is_err() {
        let _ = overlay::unmount(&rootfs);
    }
    started
}

fn launch(
    images: &mut ImageStore,
    paths: &Paths,
    mut rec: ContainerRecord,
    cfg: &ContainerConfig,
    attach: bool,
    mut monitor: Option<Monitor>,
) -> Result<Started> {
    let rootfs = paths.rootfs(&rec.id);
    let defaults = image_defaults(images, &rec.image_id)?;
    let user = spec::resolve_user(
        &rootfs,
        cfg.user.as_deref().unwrap_or(defaults.user.as_str()),
    )
    .map_err(|e| ContainerError::Start {
        code: 125,
        msg: e.to_string(),
    })?;
    make_workdir(&rootfs, &spec::working_dir(cfg, &defaults)?)?;
    let cgroup = cgroup_path(&rec.id);
    let (hostname, hosts, resolv) = (
        paths.etc_file(&rec.id, "hostname"),
        paths.etc_file(&rec.id, "hosts"),
        paths.etc_file(&rec.id, "resolv.conf"),
    );
    let init_path = if cfg.init {
        Some(ensure_init(paths)?)
    } else {
        None
    };
    let input = spec::SpecInput {
        id: &rec.id,
        cfg,
        image: &defaults,
        rootfs: &rootfs,
        user: &user,
        hostname_file: Some(&hostname),
        hosts_file: Some(&hosts),
        resolv_conf: Some(&resolv),
        init: init_path.as_deref(),
        cgroup_path: &cgroup,
    };
    let mut oci = spec::build(&input)?;
    // The network: made now, before the monitor starts the container, and
    // handed to the runtime as a namespace path; undone if the start fails.
    let fresh = monitor.as_mut().and_then(|m| m.netns.take());
    let mut net = crate::networks::setup(images, paths, &rec, cfg, &defaults.exposed, fresh)?;
    let mut net_guard = NetGuard {
        images: Some(&mut *images),
        paths,
        id: rec.id.clone(),
    };
    if let Some(ns) = &net.netns {
        crate::networks::set_netns(&mut oci, ns);
    }
    let oci = oci;
    // The bundle lives in the run directory (tmpfs), as it is made again at
    // each start: no file written and deleted on the store's disk for it.
    let bundle = paths.run_dir(&rec.id);
    let config_path = bundle.join("config.json");
    let bytes = serde_json::to_vec(&oci).map_err(|e| ContainerError::Invalid(e.to_string()))?;
    berth_runtime::state::write_atomic(&config_path, &bytes).map_err(|e| {
        ContainerError::Start {
            code: 125,
            msg: e.to_string(),
        }
    })?;

    let max_size = cfg
        .log_opts
        .get("max-size")
        .map(|s| parse_size(s))
        .transpose()?
        .unwrap_or(0);
    let max_files =
        match cfg.log_opts.get("max-file") {
            Some(s) => s.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                ContainerError::Invalid(format!("invalid value for max-file: {s}"))
            })?,
            None => 1,
        };
    let mut remove_command = paths.berth.clone();
    remove_command.extend([
        "rm".to_string(),
        "-f".to_string(),
        "-v".to_string(),
        rec.id.clone(),
    ]);
    let mut monitor = match monitor {
        Some(m) if m.attach_fd.is_some() == attach => m,
        _ => prestart_monitor(paths, attach)?,
    };
    let args = MonitorArgs {
        id: rec.id.clone(),
        bundle,
        runtime_root: paths.runtime_root(),
        run_dir: paths.run_dir(&rec.id),
        log_path: paths.log_path(&rec.id),
        log_max_size: max_size,
        log_max_files: max_files,
        tty: cfg.tty,
        open_stdin: cfg.open_stdin,
        restart: cfg.restart.name.clone(),
        max_retries: cfg.restart.max_retries,
        restart_count: rec.restart_count,
        auto_remove: cfg.auto_remove,
        remove_command,
        rootfs: rootfs.clone(),
        trash_dir: paths.trash_dir(&rec.id),
        cgroup: cgroup.clone(),
        attach_fd: monitor.attach_fd,
        ready_fd: monitor.ready_fd,
        net_root: net.netns.is_some().then(|| paths.root.clone()),
        netns: net.netns_fd.is_some(),
        fast_path: std::mem::take(&mut net.fast_path),
    };
    let json = serde_json::to_vec(&args).map_err(|e| ContainerError::Invalid(e.to_string()))?;
    let keep: Vec<OwnedFd> = net.netns_fd.into_iter().chain(net.reserved).collect();
    let (monitor_pid, ready_r, client) = monitor.go(&json, &keep, &paths.monitor)?;
    // The monitor holds the namespace and the published ports from here on.
    drop(keep);
    let mut line = String::new();
    BufReader::new(File::from(ready_r))
        .read_line(&mut line)
        .map_err(io("reading from", &paths.monitor))?;
    let line = line.trim_end();
    let images = net_guard.images.take().unwrap_or_else(|| unreachable!());
    if let Some(pid) = line.strip_prefix("OK ") {
        rec.state = state::RUNNING.into();
        rec.pid = pid.parse().unwrap_or(0);
        rec.started_at = now();
        rec.finished_at.clear();
        rec.exit_code = 0;
        rec.oom_killed = false;
        rec.error.clear();
        rec.monitor_pid = monitor_pid;
        rec.generation += 1;
        images.db.update_container(&rec)?;
        return Ok(Started {
            record: rec,
            attach: client,
        });
    }
    let (code, msg) = match line.strip_prefix("ERR ") {
        Some(rest) => {
            let (c, m) = rest.split_once(' ').unwrap_or((rest, ""));
            (c.parse().unwrap_or(125), m.to_string())
        }
        None => (125, format!("the monitor of {} failed to start", rec.id)),
    };
    rec.error = msg.clone();
    rec.exit_code = code as i64;
    let _ = crate::networks::teardown(&mut images.db, paths, &rec.id);
    images.db.update_container(&rec)?;
    Err(ContainerError::Start { code, msg })
}

/// Undoes a container's network when `launch` fails before its monitor
/// took the container over.
struct NetGuard<'a, 'b> {
    images: Option<&'a mut ImageStore>,
    paths: &'b Paths,
    id: String,
}

impl Drop for NetGuard<'_, '_> {
    fn drop(&mut self) {
        if let Some(images) = self.images.take() {
            let _ = crate::networks::teardown(&mut images.db, self.paths, &self.id);
        }
    }
}

/// A `berth-monitor` started before it knows its container: it execs and
/// loads while the caller opens the store, creates the container and
/// mounts its rootfs, then waits for its [`MonitorArgs`] on a socket (the
/// descriptor number is its one argument), which also brings it the
/// sockets that hold the container's published ports. Dropped unused, it
/// reads the end of the stream and exits; it is reaped here.
pub struct Monitor {
    pid: i64,
    args: Option<UnixStream>,
    /// A network namespace being made meanwhile, for a `none` or bridge
    /// container.
    netns: Option<berth_net::netns::Pending>,
    ready_r: Option<OwnedFd>,
    ready_fd: i32,
    attach_fd: Option<i32>,
    client: Option<UnixStream>,
}

impl Monitor {
    /// The network namespace (with `lo` up) being made on a thread, for a
    /// container of the `none` network or of bridge networks (a namespace
    /// made when the container starts costs its start about half a
    /// millisecond).
    pub fn with_netns(mut self, netns: Option<berth_net::netns::Pending>) -> Monitor {
        self.netns = netns;
        self
    }

    /// Have the monitor make container `id`'s cgroup with the limits
    /// `cfg` asks for while the container is made (`create_as` with the
    /// same `id`): the start then only moves the container's process in.
    /// The monitor removes it if the container never comes.
    pub fn prepare(&mut self, id: &str, cfg: &ContainerConfig) {
        let (Some(args), Ok(resources)) = (&self.args, spec::linux_resources(cfg)) else {
            return;
        };
        let line = proto::Prepare {
            id: id.to_string(),
            cgroup: cgroup_path(id),
            resources,
        }
        .encode();
        // The line fits the socket's buffer; a monitor gone makes the
        // arguments fail later, with the error that matters.
        let _ = (&mut &*args).write_all(&line);
    }

    /// Hand the monitor its arguments and the descriptors it keeps; its
    /// pid, the readiness pipe and the caller's end of the attach
    /// connection.
    fn go(
        &mut self,
        json: &[u8],
        keep: &[OwnedFd],
        path: &Path,
    ) -> Result<(i64, OwnedFd, Option<UnixStream>)> {
        use std::os::fd::AsFd;
        let args = self.args.take().unwrap_or_else(|| unreachable!());
        let fds: Vec<_> = keep.iter().map(|f| f.as_fd()).collect();
        let mut batches = fds.chunks(berth_sys::fd::MAX_FDS_PER_MESSAGE);
        berth_sys::fd::send_with_fds(args.as_fd(), json, batches.next().unwrap_or(&[]))
            .map_err(io("writing to", path))?;
        // More descriptors than one message carries come with a blank each
        // (JSON allows trailing white space).
        for batch in batches {
            berth_sys::fd::send_with_fds(args.as_fd(), b" ", batch)
                .map_err(io("writing to", path))?;
        }
        drop(args);
        let ready = self.ready_r.take().unwrap_or_else(|| unreachable!());
        Ok((self.pid, ready, self.client.take()))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if self.args.take().is_some() {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid as i32), None);
        }
    }
}

/// A container's `cgroupsPath`.
fn cgroup_path(id: &str) -> String {
    format!("/berth/{id}")
}

/// Start a monitor ahead of its container (see [`Monitor`]); `attach` makes
/// the socket pair of a caller that streams the container from its start.
pub fn prestart_monitor(paths: &Paths, attach: bool) -> Result<Monitor> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ContainerError::Io {
            what: "creating",
            path: "a pipe".into(),
            source: e.into(),
        })
    };
    let (ready_r, ready_w) = pipe()?;
    let (args_w, args_r) =
        UnixStream::pair().map_err(io("creating", Path::new("a socket pair")))?;
    let (client, monitor_end) = if attach {
        let (a, b) = UnixStream::pair().map_err(io("creating", Path::new("a socket pair")))?;
        (Some(a), Some(OwnedFd::from(b)))
    } else {
        (None, None)
    };
    // The descriptors cross into the monitor by number.
    for fd in [
        Some(ready_w.as_raw_fd()),
        Some(args_r.as_raw_fd()),
        monitor_end.as_ref().map(|m| m.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    {
        berth_sys::fd::clear_cloexec(fd).map_err(io("passing a descriptor to", &paths.monitor))?;
    }
    // Started from a read-only bind of its binary, the monitor is
    // protected (CVE-2019-5736) without re-executing itself.
    let protected = berth_sys::sealed::protected_bind(&paths.monitor)
        .and_then(|fd| berth_sys::fd::clear_cloexec(fd.as_raw_fd()).map(|()| fd))
        .ok();
    let program = match &protected {
        Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        None => paths.monitor.clone(),
    };
    let mut cmd = std::process::Command::new(&program);
    std::os::unix::process::CommandExt::arg0(&mut cmd, "berth-monitor");
    cmd.arg(args_r.as_raw_fd().to_string());
    if let Some(fd) = &protected {
        // The monitor keeps it open while it lives (see its main).
        cmd.arg(fd.as_raw_fd().to_string());
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Its own process group: the terminal's Ctrl-C is not for it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn().map_err(io("starting", &paths.monitor))?;
    let pid = child.id() as i64;
    // It loads on the other CPU while we go on here (it asks for every
    // CPU again once it has its arguments, which we send after this).
    berth_sys::process::keep_elsewhere(child.id() as i32);
    // The monitor outlives us; it is reaped by whoever inherits it.
    std::mem::forget(child);
    Ok(Monitor {
        pid,
        args: Some(args_w),
        netns: None,
        ready_r: Some(ready_r),
        ready_fd: ready_w.as_raw_fd(),
        attach_fd: monitor_end.as_ref().map(|m| m.as_raw_fd()),
        client,
    })
}

/// Create the working directory inside the rootfs when it is missing, as
/// Docker does (0755, root's), each component resolved inside the rootfs so
/// that a symlink in the image can never lead the mkdir out of it.
fn make_workdir(rootfs: &Path, dir: &str) -> Result<()> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    use std::os::fd::AsFd;
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ContainerError::Io {
        what: "opening",
        path: rootfs.to_path_buf(),
        source: e.into(),
    })?;
    let mut prefix = PathBuf::new();
    for comp in Path::new(dir).components() {
        let std::path::Component::Normal(name) = comp else {
            continue;
        };
        let parent = if prefix.as_os_str().is_empty() {
            root.try_clone().map_err(io("opening", rootfs))?
        } else {
            berth_sys::fd::open_in_root(root.as_fd(), &prefix, libc::O_PATH | libc::O_DIRECTORY, 0)
                .map_err(|e| ContainerError::Start {
                    code: 125,
                    msg: format!(
                        "setting up the working directory {dir}: {}: {e}",
                        prefix.display()
                    ),
                })?
        };
        prefix.push(name);
        match nix::sys::stat::mkdirat(&parent, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => {
                return Err(ContainerError::Start {
                    code: 125,
                    msg: format!("creating the working directory {dir}: {e}"),
                })
            }
        }
    }
    Ok(())
}

/// Mount volumes that have a backing device, and fill empty ones from the
/// image (unless `nocopy`).
fn prepare_volumes(images: &ImageStore, rootfs: &Path, cfg: &ContainerConfig) -> Result<()> {
    for m in &cfg.mounts {
        if m.kind != crate::config::MountKind::Volume {
            continue;
        }
        let Some(name) = &m.name else { continue };
        let v = crate::volumes::get(images, name).map_err(|e| ContainerError::Start {
            code: 125,
            msg: e.to_string(),
        })?;
        let fail = |e: crate::volumes::VolumeError| ContainerError::Start {
            code: 125,
            msg: e.to_string(),
        };
        crate::volumes::ensure_mounted(images.root(), &v).map_err(fail)?;
        if !m.no_copy {
            crate::volumes::populate(rootfs, &m.destination, &m.source).map_err(fail)?;
        }
    }
    Ok(())
}

/// Parse Docker's sizes: `10k`, `5m`, `1g`, plain bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| ContainerError::Invalid(format!("invalid size: '{s}'")))?;
    if n < 0.0 {
        return Err(ContainerError::Invalid(format!("invalid size: '{s}'")));
    }
    Ok((n * mult as f64) as u64)
}

/// The `--init` program, written once into the store.
fn ensure_init(paths: &Paths) -> Result<PathBuf> {
    let bytes = berth_init::program().ok_or_else(|| ContainerError::Start {
        code: 125,
        msg: "--init is not available on this architecture".into(),
    })?;
    let dir = paths.root.join("init");
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let hex: String = {
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(bytes);
        d.iter().take(8).map(|b| format!("{b:02x}")).collect()
    };
    let p = dir.join(format!("berth-init-{hex}"));
    if !p.exists() {
        let tmp = dir.join(format!(".berth-init-{hex}.{}", std::process::id()));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o755)
                .open(&tmp)
                .map_err(io("writing", &tmp))?;
            f.write_all(bytes).map_err(io("writing", &tmp))?;
        }
        std::fs::rename(&tmp, &p).map_err(io("renaming", &tmp))?;
    }
    Ok(p)
}

/// Signal a running container (through the runtime).
pub fn kill(paths: &Paths, rec: &ContainerRecord, signal: i32) -> Result<()> {
    if !matches!(
        rec.state.as_str(),
        state::RUNNING | state::PAUSED | state::RESTARTING
    ) {
        return Err(ContainerError::Conflict(format!(
            "Cannot kill container: {}: container {} is not running",
            rec.name, rec.id
        )));
    }
    let root = paths.runtime();
    berth_runtime::kill(&root, &rec.id, signal, false)
        .map_err(|e| ContainerError::Conflict(format!("Cannot kill container: {}: {e}", rec.name)))
}

/// Mark a container as stopped by the user (no restart follows).
pub fn mark_stopped(paths: &Paths, id: &str) {
    let _ = std::fs::write(paths.run_dir(id).join(proto::STOPPED_FILE), b"");
}

/// Wait for a container to stop running, up to `timeout`; its record.
pub fn wait_stopped(
    images: &mut ImageStore,
    paths: &Paths,
    id: &str,
    timeout: Option<Duration>,
) -> Result<ContainerRecord> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        let rec = images
            .db
            .container(id)?
            .ok_or_else(|| ContainerError::NotFound(id.into()))?;
        let rec = refresh(images, paths, rec)?;
        if !matches!(
            rec.state.as_str(),
            state::RUNNING | state::RESTARTING | state::PAUSED
        ) {
            return Ok(rec);
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            return Ok(rec);
        }
        // Wake as soon as the monitor says so: it closes attach clients
        // after the exit. Otherwise poll the state file.
        if let Ok(mut s) = proto::connect(&paths.run_dir(id)) {
            let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
            let _ = s.set_read_timeout(left.filter(|d| !d.is_zero()).or(None));
            while let Ok(Some((kind, _))) = proto::read_frame(&mut s) {
                if kind == Kind::Exit {
                    break;
                }
            }
            // Give the monitor a moment to write its final state.
            std::thread::sleep(Duration::from_millis(1));
        } else {
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }
}

/// `stop`: the stop signal, then SIGKILL after `timeout` seconds.
pub fn stop(
    images: &mut ImageStore,
    paths: &Paths,
    rec: ContainerRecord,
    timeout: Option<i64>,
) -> Result<ContainerRecord> {
    let lock = lock(paths, &rec.id)?;
    let rec = refresh(images, paths, rec)?;
    if !matches!(
        rec.state.as_str(),
        state::RUNNING | state::RESTARTING | state::PAUSED
    ) {
        drop(lock);
        await_last_monitor(paths, &rec, LAST_MONITOR_WAIT);
        return Ok(rec);
    }
    let cfg = config_of(&rec)?;
    mark_stopped(paths, &rec.id);
    let defaults = image_defaults(images, &rec.image_id).unwrap_or_default();
    let sig_name = cfg
        .stop_signal
        .clone()
        .or(defaults.stop_signal.clone())
        .unwrap_or_else(|| "SIGTERM".into());
    let sig = berth_runtime::signal::parse(&sig_name)
        .map_err(|e| ContainerError::Invalid(e.to_string()))?;
    let timeout = timeout.or(cfg.stop_timeout).unwrap_or(10);
    let root = paths.runtime();
    if rec.state == state::PAUSED {
        let _ = berth_runtime::resume(&root, &rec.id);
    }
    let _ = berth_runtime::kill(&root, &rec.id, sig, false);
    let mut after = wait_stopped(
        images,
        paths,
        &rec.id,
        (timeout >= 0).then(|| Duration::from_secs(timeout as u64)),
    )?;
    if matches!(
        after.state.as_str(),
        state::RUNNING | state::RESTARTING | state::PAUSED
    ) {
        let _ = berth_runtime::kill(&root, &rec.id, libc::SIGKILL, true);
        after = wait_stopped(images, paths, &rec.id, Some(Duration::from_secs(30)))?;
    }
    // Stopped means its network and rootfs are released too.
    drop(lock);
    await_last_monitor(paths, &after, LAST_MONITOR_WAIT);
    Ok(after)
}

/// `rm`: a running container needs `force` (which kills it first).
pub fn remove(
    images: &mut ImageStore,
    paths: &Paths,
    rec: ContainerRecord,
    force: bool,
) -> Result<()> {
    remove_with_volumes(images, paths, rec, force, false)
}

/// `rm`, and with `volumes` (`rm -v`, and `--rm`) its anonymous volumes
/// too (named ones stay, as with Docker).
/// Whether `name` is a volume made without a name (`-v /data`, an image's
/// VOLUME).
pub(crate) fn is_anonymous_volume(images: &ImageStore, name: &str) -> bool {
    images
        .db
        .volume(name)
        .ok()
        .flatten()
        .is_some_and(|v| v.anonymous)
}

pub fn remove_with_volumes(
    images: &mut ImageStore,
    paths: &Paths,
    rec: ContainerRecord,
    force: bool,
    volumes: bool,
) -> Result<()> {
    let anon = if volumes {
        anonymous_volumes(images, &rec)
    } else {
        Vec::new()
    };
    remove_container(images, paths, rec, force)?;
    remove_volumes(images, anon);
    Ok(())
}

fn anonymous_volumes(images: &mut ImageStore, rec: &ContainerRecord) -> Vec<String> {
    let cfg = config_of(rec).unwrap_or_default();
    volume_names(&cfg)
        .into_iter()
        .filter(|n| is_anonymous_volume(images, n))
        .collect()
}

fn remove_volumes(images: &mut ImageStore, names: Vec<String>) {
    for v in names {
        // Still used by another container (--volumes-from): kept.
        let _ = crate::volumes::remove(images, &v);
    }
}

/// `run --rm` in the foreground, after the exit its monitor sent: remove
/// the container as `rm -f -v` does, while the monitor removes the
/// runtime's state and cgroups. Network, mount, row and run directory go
/// first and the container's directory into the trash; then
/// `monitor_cleaned` waits for the monitor, which says whether it will
/// delete the directory after we hang up (else it is deleted here); the
/// runtime's state is then only checked.
pub fn remove_exited(
    images: &mut ImageStore,
    paths: &Paths,
    rec: ContainerRecord,
    monitor_cleaned: impl FnOnce() -> bool,
) -> Result<()> {
    let lock = lock(paths, &rec.id)?;
    let rec = refresh(images, paths, rec)?;
    if matches!(
        rec.state.as_str(),
        state::RUNNING | state::RESTARTING | state::PAUSED
    ) {
        drop(lock);
        return remove_with_volumes(images, paths, rec, true, true);
    }
    let anon = anonymous_volumes(images, &rec);
    let trash = detach_stopped(images, paths, &rec)?;
    let monitor_deletes = monitor_cleaned();
    let _ = berth_runtime::delete(&paths.runtime(), &rec.id, true);
    if let (Some(t), false) = (&trash, monitor_deletes) {
        delete_trash(t)?;
    }
    drop(lock);
    remove_volumes(images, anon);
    Ok(())
}

fn remove_container(
    images: &mut ImageStore,
    paths: &Paths,
    rec: ContainerRecord,
    force: bool,
) -> Result<()> {
    let lock = match lock(paths, &rec.id) {
        Ok(l) => l,
        // Its directory is gone: removed meanwhile by another command (a
        // --rm monitor), or a removal that died halfway.
        Err(ContainerError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return match images.db.container(&rec.id)? {
                None => Ok(()),
                Some(r) => remove_stopped(images, paths, &r),
            };
        }
        Err(e) => return Err(e),
    };
    let mut rec = refresh(images, paths, rec)?;
    if matches!(
        rec.state.as_str(),
        state::RUNNING | state::RESTARTING | state::PAUSED
    ) {
        if !force {
            return Err(ContainerError::Conflict(format!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                rec.id
            )));
        }
        mark_stopped(paths, &rec.id);
        let root = paths.runtime();
        if rec.state == state::PAUSED {
            let _ = berth_runtime::resume(&root, &rec.id);
        }
        let _ = berth_runtime::kill(&root, &rec.id, libc::SIGKILL, true);
        drop(lock);
        rec = wait_stopped(images, paths, &rec.id, Some(Duration::from_secs(30)))?;
        let _lock = self::lock(paths, &rec.id)?;
        return remove_stopped(images, paths, &rec);
    }
    remove_stopped(images, paths, &rec)
}

fn remove_stopped(images: &mut ImageStore, paths: &Paths, rec: &ContainerRecord) -> Result<()> {
    let root = paths.runtime();
    let _ = berth_runtime::delete(&root, &rec.id, true);
    match detach_stopped(images, paths, rec)? {
        Some(trash) => delete_trash(&trash),
        None => Ok(()),
    }
}

/// Remove a stopped container but for its runtime state: its network,
/// rootfs mount, row and run directory; its directory is moved to the
/// trash (returned) for the caller to delete.
fn detach_stopped(
    images: &mut ImageStore,
    paths: &Paths,
    rec: &ContainerRecord,
) -> Result<Option<PathBuf>> {
    crate::networks::release(&mut images.db, paths, &rec.id)?;
    let rootfs = paths.rootfs(&rec.id);
    overlay::unmount(&rootfs).map_err(|e| ContainerError::Conflict(e.to_string()))?;
    // The row first: once it is gone the container is gone for everyone;
    // the directories follow.
    images.db.delete_container(&rec.id)?;
    let dir = paths.container_dir(&rec.id);
    let trash = paths.trash_dir(&rec.id);
    let moved = match trash.parent() {
        Some(t) => std::fs::create_dir_all(t).and_then(|()| std::fs::rename(&dir, &trash)),
        None => Ok(()),
    };
    let out = match moved {
        Ok(()) => Some(trash),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // Not movable (a trash entry in the way): deleted in place.
        Err(_) => match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("removing", &dir)(e))
            }
            _ => None,
        },
    };
    let _ = std::fs::remove_dir_all(paths.run_dir(&rec.id));
    Ok(out)
}

/// `pause`: freeze every process of a running container.
pub fn pause(images: &mut ImageStore, paths: &Paths, mut rec: ContainerRecord) -> Result<()> {
    let _lock = lock(paths, &rec.id)?;
    match rec.state.as_str() {
        state::RUNNING => {}
        state::PAUSED => {
            return Err(ContainerError::Conflict(format!(
                "Container {} is already paused",
                rec.id
            )))
        }
        _ => {
            return Err(ContainerError::Conflict(format!(
                "Container {} is not running",
                rec.id
            )))
        }
    }
    berth_runtime::pause(&paths.runtime(), &rec.id)
        .map_err(|e| ContainerError::Conflict(e.to_string()))?;
    rec.state = state::PAUSED.into();
    images.db.update_container(&rec)?;
    Ok(())
}

/// `unpause`.
pub fn unpause(images: &mut ImageStore, paths: &Paths, mut rec: ContainerRecord) -> Result<()> {
    let _lock = lock(paths, &rec.id)?;
    if rec.state != state::PAUSED {
        return Err(ContainerError::Conflict(format!(
            "Container {} is not paused",
            rec.id
        )));
    }
    berth_runtime::resume(&paths.runtime(), &rec.id)
        .map_err(|e| ContainerError::Conflict(e.to_string()))?;
    rec.state = state::RUNNING.into();
    images.db.update_container(&rec)?;
    Ok(())
}

/// `rename`.
pub fn rename(images: &mut ImageStore, rec: ContainerRecord, new_name: &str) -> Result<()> {
    validate_name(new_name)?;
    let new_name = new_name.strip_prefix('/').unwrap_or(new_name);
    if let Some(other) = images.db.container_by_name(new_name)? {
        return Err(DbError::NameInUse {
            name: new_name.to_string(),
            id: other.id,
        }
        .into());
    }
    let mut rec = rec;
    rec.name = new_name.to_string();
    match images.db.update_container(&rec) {
        Ok(()) => Ok(()),
        // Taken meanwhile by another command.
        Err(e) => Err(match images.db.container_by_name(new_name)? {
            Some(other) if other.id != rec.id => DbError::NameInUse {
                name: new_name.to_string(),
                id: other.id,
            }
            .into(),
            _ => e.into(),
        }),
    }
}

/// The host pids of a running container's processes.
pub fn pids(paths: &Paths, rec: &ContainerRecord) -> Result<Vec<i32>> {
    if !matches!(rec.state.as_str(), state::RUNNING | state::PAUSED) {
        return Err(ContainerError::Conflict(format!(
            "Container {} is not running",
            rec.id
        )));
    }
    berth_runtime::pids(&paths.runtime(), &rec.id)
        .map_err(|e| ContainerError::Conflict(e.to_string()))
}

/// `container prune`: remove every container that is not running; their
/// IDs.
pub fn prune(images: &mut ImageStore, paths: &Paths) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for rec in list(images, paths)? {
        if matches!(
            rec.state.as_str(),
            state::CREATED | state::EXITED | state::DEAD
        ) {
            let id = rec.id.clone();
            remove(images, paths, rec, false)?;
            out.push(id);
        }
    }
    Ok(out)
}

/// Connect to a running container's monitor to stream its output.
pub fn attach(paths: &Paths, rec: &ContainerRecord) -> Result<UnixStream> {
    if !matches!(
        rec.state.as_str(),
        state::RUNNING | state::PAUSED | state::RESTARTING
    ) {
        return Err(ContainerError::Conflict(
            "You cannot attach to a stopped container, start it first".into(),
        ));
    }
    proto::connect(&paths.run_dir(&rec.id)).map_err(io("connecting to", &paths.run_dir(&rec.id)))
}

/// `update`: change a container's resource limits (and restart policy),
/// applied at once to a live container's cgroup and kept for its next
/// starts.
pub fn update(
    images: &mut ImageStore,
    paths: &Paths,
    rec: ContainerRecord,
    change: impl FnOnce(&mut ContainerConfig),
) -> Result<()> {
    let _lock = lock(paths, &rec.id)?;
    let rec = refresh(images, paths, rec)?;
    let mut cfg = config_of(&rec)?;
    change(&mut cfg);
    let limits = spec::resource_limits(&cfg)?;
    if matches!(rec.state.as_str(), state::RUNNING | state::PAUSED) {
        let res: oci_spec::runtime::LinuxResources = serde_json::from_value(limits)
            .map_err(|e| ContainerError::Invalid(format!("resources: {e}")))?;
        berth_runtime::update(&paths.runtime(), &rec.id, &res).map_err(|e| {
            ContainerError::Conflict(format!("Cannot update container {}: {e}", rec.id))
        })?;
    }
    let json = serde_json::to_string(&cfg).map_err(|e| ContainerError::Invalid(e.to_string()))?;
    images.db.set_container_config(&rec.id, &json)?;
    // A live monitor takes a new restart policy at the next exit.
    let run_dir = paths.run_dir(&rec.id);
    if run_dir.is_dir() && rec.state != state::EXITED && rec.state != state::CREATED {
        let policy = proto::restart_file_text(&cfg.restart.name, cfg.restart.max_retries);
        let path = run_dir.join(proto::RESTART_FILE);
        berth_runtime::state::write_atomic(&path, policy.as_bytes())
            .map_err(|e| ContainerError::Invalid(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}
