//! A container's file system from the outside: `diff`, `export`, `commit`
//! and `cp`.
//!
//! Everything a container wrote is in its overlay upper dir
//! (`<root>/containers/<id>/upper`); its image's layers are the store's
//! layer diff dirs. `diff` and `commit` read the upper dir directly (never
//! following a symlink, never running anything from the container), and
//! leave out the empty mount points the runtime made (`/etc/hosts`, …),
//! which Docker keeps in a layer of their own. `export` and `cp` need the
//! whole tree: the live overlay mount (`merged`) while the container runs,
//! and otherwise an overlay of upper and layers that this process mounts
//! itself, read-only for reading, writable (upper, work and layers, as
//! `start` mounts them) for `cp` into the container. That mount is made in
//! a private mount namespace of one thread, on
//! `<root>/containers/<id>/<what>-<pid>`, under the container's lock (so
//! `start` waits); it is unmounted when done, and since no other mount
//! namespace ever sees it, a process killed halfway leaves no mount behind.
//! `cp` also sees the container's bind and volume mounts where it sees
//! them (read-only ones read-only): they are bound, in such a private
//! namespace, on the overlay or on that namespace's copy of the live mount.
//!
//! `cp` resolves every path inside the container with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from a descriptor of
//! the root (CVE-2018-15664: a symlink the container swaps in resolves
//! inside the container, never on the host), walks trees through
//! descriptors opened with `O_NOFOLLOW`, and extracts into the container
//! with [`berth_image::layer::apply`] into the resolved directory (as
//! `/proc/self/fd/N`). Host paths follow Docker's client rules.

use crate::containers::{self, state, ContainerError, Paths};
use crate::db::{ContainerRecord, ImageRecord};
use crate::images::{unpack_layer, ImageError, ImageStore, NewImage, NewLayer, Unpacked};
use berth_image::digest::Digest;
use berth_image::layer::{
    self, pax_record, ApplyOptions, Compression, DiffOptions, LayerError, MAX_OCTAL_12, MAX_OCTAL_8,
};
use berth_image::layers::PendingLayer;
use berth_image::manifest;
use berth_image::overlay::{self, OverlayError, OverlayPlan};
use berth_image::reference::Reference;
use berth_sys::fd::{open_in_root, proc_path};
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, Flock, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags,
    FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, symlinkat, unlinkat, UnlinkatFlags};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    /// A path the container does not have (Docker's words).
    #[error("Could not find the file {path} in container {container}")]
    NotFound { path: String, container: String },
    /// An error of the engine's side (Docker's daemon).
    #[error("{0}")]
    Invalid(String),
    /// An error of the client's side (the host paths of `cp`), which
    /// Docker's CLI prints without "Error response from daemon".
    #[error("{0}")]
    Local(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl FsError {
    /// Whether the error is the client's (printed as it is).
    pub fn is_local(&self) -> bool {
        matches!(self, FsError::Local(_))
    }

    /// Whether writing the output failed because its reader went away.
    pub fn is_broken_pipe(&self) -> bool {
        let io_err = match self {
            FsError::Io { source, .. } => Some(source),
            FsError::Layer(LayerError::Write(e)) => Some(e),
            _ => None,
        };
        io_err.is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    }
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;

impl From<crate::db::DbError> for FsError {
    fn from(e: crate::db::DbError) -> FsError {
        FsError::Container(e.into())
    }
}

fn io_err(what: &'static str, path: &dyn std::fmt::Display) -> impl FnOnce(io::Error) -> FsError {
    let path = path.to_string();
    move |source| FsError::Io { what, path, source }
}

fn nix_err(what: &'static str, path: &dyn std::fmt::Display) -> impl FnOnce(Errno) -> FsError {
    let f = io_err(what, path);
    move |e| f(e.into())
}

/// An errno as Go (and so Docker) words it: `no such file or directory`.
fn go_words(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let d = Errno::from_raw(n).desc();
            let mut c = d.chars();
            match c.next() {
                Some(f) => f.to_lowercase().chain(c).collect(),
                None => d.to_string(),
            }
        }
        None => e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Paths as Go's path/filepath and Docker's archive package treat them.
// ---------------------------------------------------------------------------

/// Go's `filepath.Clean` for `/`-separated paths.
fn clean(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !abs {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (abs, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Base`.
fn go_base(p: &str) -> &str {
    if p.is_empty() {
        return ".";
    }
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return "/";
    }
    t.rsplit('/').next().unwrap_or(t)
}

/// Go's `filepath.Dir`.
fn go_dir(p: &str) -> String {
    match p.rfind('/') {
        Some(i) => clean(&p[..=i]),
        None => ".".to_string(),
    }
}

/// Whether a path names the contents of a directory (`dir/.`).
fn specifies_current_dir(p: &str) -> bool {
    go_base(p) == "."
}

/// Whether a path asserts that it is a directory (`dir/` or `dir/.`).
fn asserts_directory(p: &str) -> bool {
    p.ends_with('/') || specifies_current_dir(p)
}

/// Docker's `PreserveTrailingDotOrSeparator`.
fn preserve_trailing(cleaned: String, original: &str) -> String {
    let mut out = cleaned;
    if !specifies_current_dir(&out) && specifies_current_dir(original) {
        if !out.ends_with('/') {
            out.push('/');
        }
        out.push('.');
    }
    if !out.ends_with('/') && original.ends_with('/') {
        out.push('/');
    }
    out
}

/// Docker's `SplitPathDirEntry`: the directory and the base name, where
/// `dir/.` has the base `.`.
fn split_dir_entry(p: &str) -> (String, String) {
    let mut cleaned = clean(p);
    if specifies_current_dir(p) {
        if !cleaned.ends_with('/') {
            cleaned.push('/');
        }
        cleaned.push('.');
    }
    (go_dir(&cleaned), go_base(&cleaned).to_string())
}

/// A path inside a container, absolute, as Docker makes it
/// (`filepath.Join("/", p)` keeping a trailing `/` or `/.`).
pub fn container_path(p: &str) -> String {
    preserve_trailing(clean(&format!("/{p}")), p)
}

/// The name a tree gets in an archive of `abs` (a container or host
/// path): its base name, or `.` for the contents of a directory.
fn archive_base(abs: &str) -> String {
    let (_, base) = split_dir_entry(abs);
    if base == "/" {
        ".".to_string()
    } else {
        base
    }
}

/// `abs` relative to its root, for openat2 (`.` for the root).
fn rel_of(abs: &str) -> String {
    let r = abs.trim_start_matches('/');
    if r.is_empty() {
        ".".to_string()
    } else {
        r.to_string()
    }
}

// ---------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------

fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn is_whiteout(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    [&b"trusted.overlay.opaque"[..], b"user.overlay.opaque"]
        .iter()
        .any(|k| berth_sys::xattr::fget(dir, k).is_ok_and(|v| v == b"y"))
}

/// The names in a directory (without `.` and `..`), sorted bytewise.
fn read_names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let dup = dir.try_clone_to_owned()?;
    let mut d = nix::dir::Dir::from_fd(dup)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n.to_vec()));
        }
    }
    names.sort();
    Ok(names)
}

fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() || rel == b"." {
        return name.to_vec();
    }
    let mut v = rel.to_vec();
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

fn is_up(rec: &ContainerRecord) -> bool {
    matches!(
        rec.state.as_str(),
        state::RUNNING | state::PAUSED | state::RESTARTING
    )
}

/// The container's lock (the one `start`, `stop` and `rm` hold), so that a
/// stopped container is not started while its layers are mounted here.
fn lock(paths: &Paths, id: &str) -> Result<Flock<File>> {
    Ok(crate::containers::lock(paths, id)?)
}

/// The image a container was made from.
fn image_of(images: &ImageStore, rec: &ContainerRecord) -> Result<ImageRecord> {
    let id: Digest = rec
        .image_id
        .parse()
        .map_err(|_| FsError::Invalid(format!("container {}: bad image id", rec.id)))?;
    images.db.image(&id)?.ok_or_else(|| {
        FsError::Invalid(format!(
            "container {}: its image {} is gone",
            rec.id, rec.image_id
        ))
    })
}

/// The image's layer diff dirs, top first (overlay's lowerdir order).
fn lowers(images: &ImageStore, image: &ImageRecord) -> Vec<PathBuf> {
    image
        .layers
        .iter()
        .rev()
        .map(|cid| images.layers.diff_dir(cid))
        .collect()
}

// ---------------------------------------------------------------------------
// A byte pipe between two threads that cannot raise SIGPIPE.
// ---------------------------------------------------------------------------

const CHUNK: usize = 256 << 10;

struct ChanWriter {
    tx: mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
    gone: Arc<AtomicBool>,
}

impl ChanWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.send(chunk).map_err(|_| {
            self.gone.store(true, Ordering::SeqCst);
            io::Error::new(io::ErrorKind::BrokenPipe, "the reader stopped")
        })
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

struct ChanReader {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(v) => {
                    self.cur = v;
                    self.pos = 0;
                }
                // The writer is done (or gave up: its error is reported).
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Run `produce` (writing a stream) on a thread of its own and `consume`
/// (reading it) here. The first real failure is reported: the consumer's
/// when it stopped reading, else the producer's.
fn pipeline<T: Send, U>(
    produce: impl FnOnce(&mut ChanWriter) -> Result<T> + Send,
    consume: impl FnOnce(ChanReader) -> Result<U>,
) -> Result<(T, U)> {
    let (tx, rx) = mpsc::sync_channel(8);
    let gone = Arc::new(AtomicBool::new(false));
    let mut writer = ChanWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
        gone: gone.clone(),
    };
    let reader = ChanReader {
        rx,
        cur: Vec::new(),
        pos: 0,
    };
    std::thread::scope(|s| {
        let handle = s.spawn(move || {
            let r = produce(&mut writer);
            match r {
                Ok(t) => writer
                    .flush()
                    .map(|()| t)
                    .map_err(io_err("writing", &"the stream")),
                Err(e) => Err(e),
            }
        });
        let consumed = consume(reader);
        let produced = handle
            .join()
            .unwrap_or_else(|_| Err(FsError::Invalid("the stream writer panicked".into())));
        match (produced, consumed) {
            (Ok(t), Ok(u)) => Ok((t, u)),
            (Err(_), Err(c)) if gone.load(Ordering::SeqCst) => Err(c),
            (Err(p), _) => Err(p),
            (Ok(_), Err(c)) => Err(c),
        }
    })
}

// ---------------------------------------------------------------------------
// The root file system of a container.
// ---------------------------------------------------------------------------

/// A bind or volume mount of a container, as `cp` sees it.
#[derive(Debug, Clone)]
struct Bind {
    source: PathBuf,
    destination: String,
    read_only: bool,
}

/// The container's bind and volume mounts (volumes with a device mounted
/// first, as `start` does), parents before what is mounted inside them.
fn binds_of(images: &ImageStore, cfg: &crate::config::ContainerConfig) -> Result<Vec<Bind>> {
    use crate::config::MountKind;
    let mut out = Vec::new();
    for m in &cfg.mounts {
        match m.kind {
            MountKind::Bind => {}
            MountKind::Volume => {
                if let Some(name) = &m.name {
                    let v = crate::volumes::get(images, name)
                        .map_err(|e| FsError::Invalid(e.to_string()))?;
                    crate::volumes::ensure_mounted(images.root(), &v)
                        .map_err(|e| FsError::Invalid(e.to_string()))?;
                }
            }
            MountKind::Tmpfs => continue,
        }
        out.push(Bind {
            source: m.source.clone(),
            destination: m.destination.clone(),
            read_only: m.read_only,
        });
    }
    out.sort_by_key(|b| {
        clean(&b.destination)
            .split('/')
            .filter(|c| !c.is_empty())
            .count()
    });
    Ok(out)
}

/// The root of a private view.
enum RootMount {
    /// An overlay of the container's layers, mounted on its target.
    Overlay(OverlayPlan),
    /// The running container's own mount (`merged`), as the private mount
    /// namespace has it.
    Live { merged: PathBuf, upper: PathBuf },
}

/// A container's file system mounted in the private mount namespace of one
/// thread: an overlay of its layers, or its live mount, with its bind and
/// volume mounts; the thread unmounts it and ends when this is dropped.
struct PrivateMount {
    /// The mount point made for it, removed after.
    target: Option<PathBuf>,
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PrivateMount {
    /// Mount `root` and `binds`; an `O_PATH` descriptor of the root.
    fn new(root: RootMount, binds: Vec<Bind>) -> Result<(PrivateMount, OwnedFd)> {
        let target = match &root {
            RootMount::Overlay(plan) => {
                match std::fs::create_dir(&plan.target) {
                    Ok(()) => {}
                    // Left by a process killed earlier (its mount went
                    // with it).
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("creating", &plan.target.display())(e)),
                }
                Some(plan.target.clone())
            }
            RootMount::Live { .. } => None,
        };
        let (res_tx, res_rx) = mpsc::channel::<Result<OwnedFd>>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let mut pm = PrivateMount {
            target: target.clone(),
            done: Some(done_tx),
            thread: None,
        };
        let thread = std::thread::Builder::new()
            .name("berth-fs-mount".into())
            .spawn(move || {
                let r = mount_privately(&root, &binds);
                let mounted = r.is_ok();
                let _ = res_tx.send(r);
                if mounted {
                    // Until dropped (the sender goes away).
                    let _ = done_rx.recv();
                    if let RootMount::Overlay(plan) = &root {
                        if let Err(e) = overlay::unmount(&plan.target) {
                            tracing::warn!(error = %e, "unmounting a private container mount");
                        }
                    }
                }
                // The thread's mount namespace, and whatever is still
                // mounted in it, goes with the thread.
            })
            .map_err(io_err("starting a thread for", &"a private mount"))?;
        pm.thread = Some(thread);
        match res_rx.recv() {
            Ok(Ok(fd)) => Ok((pm, fd)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(FsError::Invalid(
                "mounting the container's file system: the mount thread died".into(),
            )),
        }
    }
}

/// In the calling thread: a mount namespace of its own (every mount in it
/// private), the root, and the binds on it, each destination resolved
/// inside the root.
fn mount_privately(root: &RootMount, binds: &[Bind]) -> Result<OwnedFd> {
    use nix::mount::MsFlags;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(nix_err(
        "unsharing the mount namespace for",
        &"a private mount",
    ))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(nix_err("making mounts private for", &"a private mount"))?;
    let open_dir = |p: &Path| {
        nix::fcntl::open(
            p,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(nix_err("opening", &p.display()))
    };
    let fd = match root {
        RootMount::Overlay(plan) => {
            overlay::apply(plan)?;
            open_dir(&plan.target)?
        }
        RootMount::Live { merged, upper } => {
            let fd = open_dir(merged)?;
            if !is_live(&fd, merged, upper)? {
                return Err(FsError::Invalid(
                    "the container stopped meanwhile; try again".into(),
                ));
            }
            fd
        }
    };
    for b in binds {
        let dest = match open_in_root(
            fd.as_fd(),
            Path::new(&rel_of(&clean(&b.destination))),
            libc::O_PATH,
            0,
        ) {
            Ok(d) => d,
            // Not there (yet): the copy sees the container's own files.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => {
                return Err(FsError::Invalid(format!(
                    "mounting {} in the container: {}",
                    b.destination,
                    go_words(&e)
                )))
            }
        };
        let fail = |what: &str, e: Errno| {
            FsError::Invalid(format!(
                "{what} {} on {} in the container: {}",
                b.source.display(),
                b.destination,
                go_words(&e.into())
            ))
        };
        // mount(2) follows the /proc/self/fd magic link to the directory
        // (or file) resolved inside the root.
        let target = proc_path(dest.as_fd());
        let bind = |from: &Path| {
            nix::mount::mount(
                Some(from),
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
        };
        if b.read_only {
            // The source made read-only here first (a bind of itself, in
            // this mount namespace only), so that its bind is born
            // read-only.
            nix::mount::mount(
                Some(&b.source),
                &b.source,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| fail("mounting", e))?;
            let r = nix::mount::mount(
                None::<&str>,
                &b.source,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| fail("making read-only", e))
            .and_then(|()| bind(&b.source).map_err(|e| fail("mounting", e)));
            let _ = nix::mount::umount2(&b.source, nix::mount::MntFlags::MNT_DETACH);
            r?;
        } else {
            bind(&b.source).map_err(|e| fail("mounting", e))?;
        }
    }
    Ok(fd)
}

impl Drop for PrivateMount {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(t) = &self.target {
            let _ = std::fs::remove_dir(t);
        }
    }
}

/// A container's root file system, open: the live mount of a running
/// container, or a mount of its layers made for the occasion.
pub struct Rootfs {
    // Dropped in this order: the descriptor, the mount, the lock.
    root: OwnedFd,
    _mount: Option<PrivateMount>,
    _lock: Option<Flock<File>>,
}

impl Rootfs {
    /// Open `rec`'s root file system; `purpose` names the temporary mount
    /// point (`export`, `cp`). `writable` mounts the upper dir as overlay's
    /// upper for a stopped container (reads see it as the top layer).
    /// With `volumes` the container's bind and volume mounts are seen
    /// where it sees them (Docker's `cp` does; `export` does not).
    pub fn open(
        images: &mut ImageStore,
        paths: &Paths,
        rec: &ContainerRecord,
        purpose: &str,
        writable: bool,
        volumes: bool,
    ) -> Result<Rootfs> {
        let rec = containers::refresh(images, paths, rec.clone())?;
        let binds = if volumes {
            binds_of(images, &containers::config_of(&rec)?)?
        } else {
            Vec::new()
        };
        let dir = paths.container_dir(&rec.id);
        let id = rec.id.clone();
        let live = |binds: &[Bind]| -> Result<Option<Rootfs>> {
            let Some(root) = live_root(paths, &id)? else {
                return Ok(None);
            };
            if binds.is_empty() {
                return Ok(Some(Rootfs {
                    root,
                    _mount: None,
                    _lock: None,
                }));
            }
            drop(root);
            let (mount, root) = PrivateMount::new(
                RootMount::Live {
                    merged: paths.rootfs(&id),
                    upper: dir.join("upper"),
                },
                binds.to_vec(),
            )?;
            Ok(Some(Rootfs {
                root,
                _mount: Some(mount),
                _lock: None,
            }))
        };
        if is_up(&rec) {
            if let Some(r) = live(&binds)? {
                return Ok(r);
            }
        }
        let lock = lock(paths, &rec.id)?;
        // Started meanwhile: its own mount it is.
        let rec = containers::refresh(images, paths, rec)?;
        if is_up(&rec) {
            if let Some(r) = live(&binds)? {
                return Ok(r);
            }
        }
        let image = image_of(images, &rec)?;
        let lowers = lowers(images, &image);
        let target = dir.join(format!("{purpose}-{}", std::process::id()));
        let plan = if writable {
            overlay::plan(&lowers, &dir.join("upper"), &dir.join("work"), &target)
        } else {
            let mut all = vec![dir.join("upper")];
            all.extend(lowers);
            overlay::plan_readonly(&all, &target)
        };
        let (mount, root) = PrivateMount::new(RootMount::Overlay(plan), binds)?;
        Ok(Rootfs {
            root,
            _mount: Some(mount),
            _lock: Some(lock),
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }
}

/// Whether `fd` (of `merged`) is the container's rootfs mount: an overlay,
/// or the upper dir itself bound there (an image without layers).
fn is_live(fd: &OwnedFd, merged: &Path, upper: &Path) -> Result<bool> {
    let fs = nix::sys::statfs::fstatfs(fd).map_err(nix_err("inspecting", &merged.display()))?;
    if fs.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC {
        return Ok(true);
    }
    let (a, b) = (
        fstat(fd).map_err(nix_err("inspecting", &merged.display()))?,
        nix::sys::stat::stat(upper).map_err(nix_err("inspecting", &upper.display()))?,
    );
    Ok(a.st_dev == b.st_dev && a.st_ino == b.st_ino)
}

/// The ID of the mount a descriptor is on.
fn mount_id(fd: BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The running container's own rootfs mount, when it is mounted.
fn live_root(paths: &Paths, id: &str) -> Result<Option<OwnedFd>> {
    let merged = paths.rootfs(id);
    let fd = match nix::fcntl::open(
        &merged,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(nix_err("opening", &merged.display())(e)),
    };
    let upper = paths.container_dir(id).join("upper");
    Ok(is_live(&fd, &merged, &upper)?.then_some(fd))
}

// ---------------------------------------------------------------------------
// diff
// ---------------------------------------------------------------------------

/// What happened to a path, as `docker diff` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Modified,
    Added,
    Deleted,
}

impl ChangeKind {
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modified => 'C',
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One line of `diff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// Absolute in the container.
    pub path: PathBuf,
}

/// Mount points the runtime makes when the image lacks them; Docker keeps
/// these in a layer of its own below the container's, so they are no
/// change (as long as they are still the empty files or directories made).
const MOUNT_POINTS: &[&str] = &[
    "/.dockerenv",
    "/dev",
    "/dev/console",
    "/dev/pts",
    "/dev/shm",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/mtab",
    "/etc/resolv.conf",
    "/proc",
    "/sys",
];

/// The image's layers, read through descriptors (top first).
struct Layers {
    dirs: Vec<OwnedFd>,
}

/// What one layer says about a path.
enum LayerHit {
    /// There, not a whiteout (a directory opened when asked for); whether
    /// a parent here is opaque.
    Found(FileStat, Option<OwnedFd>, bool),
    /// Deleted here, or hidden by a non-directory parent: not in the image.
    Gone,
    /// Not here; `opaque` when a parent here hides the layers below.
    Absent { opaque: bool },
}

impl Layers {
    fn open(dirs: &[PathBuf]) -> Result<Layers> {
        let mut out = Vec::with_capacity(dirs.len());
        for d in dirs {
            out.push(
                nix::fcntl::open(
                    d,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(nix_err("opening", &d.display()))?,
            );
        }
        Ok(Layers { dirs: out })
    }

    /// Look `comps` up in one layer, component by component, following
    /// nothing. With `want_dir`, a directory found is opened.
    fn in_layer(
        &self,
        layer: &OwnedFd,
        comps: &[OsString],
        want_dir: bool,
    ) -> io::Result<LayerHit> {
        let mut dir = layer.try_clone()?;
        let mut opaque = false;
        for (i, c) in comps.iter().enumerate() {
            let st = match fstatat(&dir, c.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(LayerHit::Absent { opaque }),
                Err(e) => return Err(e.into()),
            };
            if is_whiteout(&st) {
                return Ok(LayerHit::Gone);
            }
            let last = i + 1 == comps.len();
            if last && !(want_dir && is_dir(&st)) {
                return Ok(LayerHit::Found(st, None, opaque));
            }
            if !is_dir(&st) {
                return Ok(LayerHit::Gone);
            }
            dir = openat(
                &dir,
                c.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            if last {
                return Ok(LayerHit::Found(st, Some(dir), opaque));
            }
            opaque |= is_opaque(dir.as_fd());
        }
        // The root of the layer.
        let st = fstat(&dir)?;
        Ok(LayerHit::Found(st, Some(dir), false))
    }

    /// The path in the image (the merged view of the layers), if there.
    fn lookup(&self, comps: &[OsString]) -> io::Result<Option<FileStat>> {
        for layer in &self.dirs {
            match self.in_layer(layer, comps, false)? {
                LayerHit::Found(st, _, _) => return Ok(Some(st)),
                LayerHit::Gone | LayerHit::Absent { opaque: true } => return Ok(None),
                LayerHit::Absent { opaque: false } => {}
            }
        }
        Ok(None)
    }

    /// The names in the image's directory `comps`.
    fn list(&self, comps: &[OsString]) -> io::Result<BTreeSet<OsString>> {
        let mut names = BTreeSet::new();
        let mut hidden = HashSet::new();
        for layer in &self.dirs {
            let (dir, parent_opaque) = match self.in_layer(layer, comps, true)? {
                LayerHit::Found(_, Some(dir), opaque) => (dir, opaque),
                LayerHit::Found(_, None, _)
                | LayerHit::Gone
                | LayerHit::Absent { opaque: true } => break,
                LayerHit::Absent { opaque: false } => continue,
            };
            for n in read_names(dir.as_fd())? {
                if names.contains(&n) || hidden.contains(&n) {
                    continue;
                }
                match fstatat(&dir, n.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if is_whiteout(&st) => {
                        hidden.insert(n);
                    }
                    Ok(_) => {
                        names.insert(n);
                    }
                    Err(Errno::ENOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if parent_opaque || (!comps.is_empty() && is_opaque(dir.as_fd())) {
                break;
            }
        }
        Ok(names)
    }
}

struct Differ {
    layers: Layers,
    upper: PathBuf,
    /// The runtime's mount points left out (paths relative to the root).
    skipped: std::cell::RefCell<HashSet<Vec<u8>>>,
}

fn shown_path(comps: &[OsString]) -> PathBuf {
    let mut p = PathBuf::from("/");
    for c in comps {
        p.push(c);
    }
    p
}

impl Differ {
    fn err(&self, what: &'static str, comps: &[OsString]) -> impl FnOnce(io::Error) -> FsError {
        let mut p = self.upper.clone();
        for c in comps {
            p.push(c);
        }
        io_err(what, &p.display())
    }

    /// The changes below the upper directory `dir` (path `comps`).
    fn walk(
        &self,
        dir: BorrowedFd<'_>,
        comps: &mut Vec<OsString>,
        opaque: bool,
        out: &mut Vec<Change>,
    ) -> Result<()> {
        let names = read_names(dir).map_err(self.err("reading directory", comps))?;
        // Below an opaque directory nothing of the image shows: what the
        // image had there is deleted.
        let mut deleted = BTreeSet::new();
        if opaque {
            deleted = self
                .layers
                .list(comps)
                .map_err(self.err("reading the image's directory", comps))?;
            for n in &names {
                deleted.remove(n);
            }
        }
        let mut all: Vec<&OsString> = names.iter().chain(deleted.iter()).collect();
        all.sort();
        for name in all {
            comps.push(name.clone());
            if deleted.contains(name) {
                out.push(Change {
                    kind: ChangeKind::Deleted,
                    path: shown_path(comps),
                });
            } else {
                self.entry(dir, comps, out)?;
            }
            comps.pop();
        }
        Ok(())
    }

    fn entry(
        &self,
        dir: BorrowedFd<'_>,
        comps: &mut Vec<OsString>,
        out: &mut Vec<Change>,
    ) -> Result<()> {
        let name = comps.last().cloned().unwrap_or_default();
        let path = shown_path(comps);
        if path.as_os_str().len() >= libc::PATH_MAX as usize {
            return Err(FsError::Invalid(format!(
                "a path of {} bytes in the container is too long",
                path.as_os_str().len()
            )));
        }
        let st = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()), // removed while we look
            Err(e) => return Err(self.err("inspecting", comps)(e.into())),
        };
        if is_whiteout(&st) {
            out.push(Change {
                kind: ChangeKind::Deleted,
                path,
            });
            return Ok(());
        }
        let lower = self
            .layers
            .lookup(comps)
            .map_err(self.err("looking up in the image", comps))?;
        if !is_dir(&st) {
            if lower.is_none() && self.mount_point(&path, &st, None) {
                self.skip(&path);
                return Ok(());
            }
            out.push(Change {
                kind: if lower.is_some() {
                    ChangeKind::Modified
                } else {
                    ChangeKind::Added
                },
                path,
            });
            return Ok(());
        }
        let fd = match openat(
            dir,
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(self.err("opening", comps)(e.into())),
        };
        if lower.is_none() && self.mount_point(&path, &st, Some(fd.as_fd())) {
            self.skip(&path);
            return Ok(());
        }
        let opaque = is_opaque(fd.as_fd());
        let own = match lower {
            _ if opaque => Some(ChangeKind::Modified),
            None => Some(ChangeKind::Added),
            Some(l) if !is_dir(&l) => Some(ChangeKind::Modified),
            Some(l) if (l.st_mode, l.st_uid, l.st_gid) != (st.st_mode, st.st_uid, st.st_gid) => {
                Some(ChangeKind::Modified)
            }
            // Only there because something below changed.
            Some(_) => None,
        };
        let mut below = Vec::new();
        self.walk(fd.as_fd(), comps, opaque, &mut below)?;
        if own.is_some() || !below.is_empty() {
            out.push(Change {
                kind: own.unwrap_or(ChangeKind::Modified),
                path,
            });
            out.extend(below);
        }
        Ok(())
    }

    fn skip(&self, path: &Path) {
        let rel = path.as_os_str().as_bytes().trim_ascii_start();
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        self.skipped.borrow_mut().insert(rel.to_vec());
    }

    /// An empty mount point the runtime made (see [`MOUNT_POINTS`]).
    fn mount_point(&self, path: &Path, st: &FileStat, dir: Option<BorrowedFd<'_>>) -> bool {
        if !MOUNT_POINTS.iter().any(|m| Path::new(m) == path) {
            return false;
        }
        match dir {
            Some(d) => read_names(d).is_ok_and(|n| n.is_empty()),
            None => st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size == 0,
        }
    }
}

/// `diff`: what the container changed in its image's file system, in
/// path order: `A` added, `C` changed (a parent of a change, too), `D`
/// deleted. Reads the upper dir and the layers only; works for running and
/// stopped containers.
pub fn changes(images: &ImageStore, paths: &Paths, rec: &ContainerRecord) -> Result<Vec<Change>> {
    let image = image_of(images, rec)?;
    let upper = paths.container_dir(&rec.id).join("upper");
    Ok(diff_upper(images, &image, &upper)?.0)
}

/// The changes in `upper` over `image`, and the runtime's mount points
/// that are no change (paths relative to the root).
fn diff_upper(
    images: &ImageStore,
    image: &ImageRecord,
    upper: &Path,
) -> Result<(Vec<Change>, HashSet<Vec<u8>>)> {
    let differ = Differ {
        layers: Layers::open(&lowers(images, image))?,
        upper: upper.to_path_buf(),
        skipped: Default::default(),
    };
    let root = nix::fcntl::open(
        upper,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(nix_err("opening", &upper.display()))?;
    let mut out = Vec::new();
    differ.walk(root.as_fd(), &mut Vec::new(), false, &mut out)?;
    Ok((out, differ.skipped.into_inner()))
}

/// Leaves some entries out of a layer tar as [`layer::diff`] writes it
/// (ustar headers, each preceded by a PAX header when it needs one), as
/// the tar streams through.
struct TarFilter<W: Write> {
    out: W,
    /// Names to leave out, without a directory's trailing `/`.
    drop: HashSet<Vec<u8>>,
    /// An incomplete header block.
    block: Vec<u8>,
    /// A PAX header and its records, held until the entry they belong to.
    pax: Vec<u8>,
    state: FilterState,
}

#[derive(Clone, Copy)]
enum FilterState {
    Header,
    /// The records of a PAX header (`left` bytes with padding; `size` of them records).
    Pax {
        left: u64,
        size: u64,
    },
    /// An entry's data and padding.
    Data {
        left: u64,
        keep: bool,
    },
    /// After the end-of-archive blocks.
    Trailer,
}

fn pad512(n: u64) -> u64 {
    n.div_ceil(512) * 512
}

/// A ustar octal number field.
fn octal(field: &[u8]) -> io::Result<u64> {
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| b.is_ascii_digit())
        .collect();
    if digits.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(&String::from_utf8_lossy(&digits), 8)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad tar number: {e}")))
}

/// The `path` and `size` records of PAX header data.
fn pax_fields(mut data: &[u8]) -> (Option<Vec<u8>>, Option<u64>) {
    let (mut path, mut size) = (None, None);
    while let Some(sp) = data.iter().position(|b| *b == b' ') {
        let Some(len) = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > sp && *l <= data.len())
        else {
            break;
        };
        let record = &data[sp + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|b| *b == b'=') {
            match &record[..eq] {
                b"path" => path = Some(record[eq + 1..].to_vec()),
                b"size" => {
                    size = std::str::from_utf8(&record[eq + 1..])
                        .ok()
                        .and_then(|v| v.parse().ok())
                }
                _ => {}
            }
        }
        data = &data[len..];
    }
    (path, size)
}

impl<W: Write> TarFilter<W> {
    fn new(out: W, drop: HashSet<Vec<u8>>) -> TarFilter<W> {
        TarFilter {
            out,
            drop,
            block: Vec::with_capacity(512),
            pax: Vec::new(),
            state: FilterState::Header,
        }
    }

    /// A complete header block.
    fn header(&mut self, h: &[u8]) -> io::Result<()> {
        if h.iter().all(|b| *b == 0) {
            self.out.write_all(&self.pax)?;
            self.pax.clear();
            self.state = FilterState::Trailer;
            return self.out.write_all(h);
        }
        let size = octal(&h[124..136])?;
        if h[156] == b'x' {
            self.pax = h.to_vec();
            self.state = FilterState::Pax {
                left: pad512(size),
                size,
            };
            return Ok(());
        }
        let (pax_path, pax_size) = if self.pax.len() > 512 {
            pax_fields(&self.pax[512..])
        } else {
            (None, None)
        };
        let name = pax_path.unwrap_or_else(|| {
            let field = |r: std::ops::Range<usize>| {
                let f = &h[r];
                f[..f.iter().position(|b| *b == 0).unwrap_or(f.len())].to_vec()
            };
            let (name, prefix) = (field(0..100), field(345..500));
            if prefix.is_empty() {
                name
            } else {
                [prefix, name].join(&b'/')
            }
        });
        let size = pax_size.unwrap_or(size);
        let trimmed = name.strip_suffix(b"/").unwrap_or(&name);
        let keep = !self.drop.contains(trimmed);
        if keep {
            self.out.write_all(&self.pax)?;
            self.out.write_all(h)?;
        }
        self.pax.clear();
        let data = match h[156] {
            b'0' | 0 | b'7' => pad512(size),
            _ => 0,
        };
        self.state = if data > 0 {
            FilterState::Data { left: data, keep }
        } else {
            FilterState::Header
        };
        Ok(())
    }
}

impl<W: Write> Write for TarFilter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            match self.state {
                FilterState::Trailer => {
                    self.out.write_all(rest)?;
                    rest = &[];
                }
                FilterState::Data { left, keep } => {
                    let n = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    if keep {
                        self.out.write_all(&rest[..n])?;
                    }
                    rest = &rest[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        FilterState::Header
                    } else {
                        FilterState::Data { left, keep }
                    };
                }
                FilterState::Pax { left, size } => {
                    let n = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    if self.pax.len() as u64 + (n as u64) > 512 + PAX_LIMIT {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "PAX header too large",
                        ));
                    }
                    self.pax.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    let left = left - n as u64;
                    if left == 0 {
                        self.pax.truncate(512 + usize::try_from(size).unwrap_or(0));
                        // Keep whole blocks: the records padded again.
                        let padded = 512 + usize::try_from(pad512(size)).unwrap_or(0);
                        self.pax.resize(padded, 0);
                        self.state = FilterState::Header;
                    } else {
                        self.state = FilterState::Pax { left, size };
                    }
                }
                FilterState::Header => {
                    let n = rest.len().min(512 - self.block.len());
                    self.block.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    if self.block.len() == 512 {
                        let h = std::mem::take(&mut self.block);
                        self.header(&h)?;
                    }
                }
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The most PAX record bytes one header of a layer tar carries here.
const PAX_LIMIT: u64 = layer::MAX_ENTRY_METADATA;

// ---------------------------------------------------------------------------
// Walking a tree through descriptors, into a tar or a directory.
// ---------------------------------------------------------------------------

/// What an object of a walked tree is.
#[derive(Debug, Clone, Copy)]
enum Kind<'a> {
    Dir,
    File,
    Symlink(&'a [u8]),
    /// A hardlink to the first path (in this walk) of the same inode.
    Link(&'a [u8]),
    Node(tar::EntryType, u32, u32),
}

/// One object of a walked tree.
struct Obj<'a> {
    /// Its path relative to the place it goes (the top object's is the
    /// name it is given there; `.` means "into that directory").
    rel: &'a [u8],
    /// Its name in its parent.
    name: &'a OsStr,
    /// 0 for the top object.
    depth: usize,
    st: &'a FileStat,
    kind: Kind<'a>,
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Where a walk goes.
trait Sink {
    /// One object (a directory's before its children), with the data of a
    /// regular file.
    fn entry(&mut self, o: &Obj<'_>, data: Option<&mut dyn Read>) -> Result<()>;
    /// After the children of the directory `st`.
    fn leave_dir(&mut self, st: &FileStat) -> Result<()>;
}

/// Yields exactly `left` bytes or fails: a file that shrinks under us must
/// not make a tar whose header lies about its size.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was copied",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// `security.capability`, the one xattr Docker's archives carry.
fn capability(fd: BorrowedFd<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let key = b"security.capability";
    match berth_sys::xattr::fget(fd, key) {
        Ok(v) => vec![(key.to_vec(), v)],
        Err(_) => Vec::new(),
    }
}

struct Walker<'s> {
    sink: &'s mut dyn Sink,
    links: HashMap<(u64, u64), Vec<u8>>,
    /// How paths are shown in errors (`container:/etc` or a host path).
    shown: String,
}

impl Walker<'_> {
    fn err(&self, what: &'static str, rel: &[u8]) -> impl FnOnce(Errno) -> FsError {
        nix_err(
            what,
            &format!(
                "{}/{}",
                self.shown.trim_end_matches('/'),
                String::from_utf8_lossy(rel)
            ),
        )
    }

    /// Walk the object `obj` (an `O_PATH` descriptor), named `name`.
    fn top(&mut self, obj: OwnedFd, name: &OsStr) -> Result<()> {
        let st = fstat(&obj).map_err(self.err("inspecting", name.as_bytes()))?;
        self.obj(obj, &st, name.as_bytes().to_vec(), name, 0)
    }

    fn obj(
        &mut self,
        obj: OwnedFd,
        st: &FileStat,
        rel: Vec<u8>,
        name: &OsStr,
        depth: usize,
    ) -> Result<()> {
        if rel.len() >= libc::PATH_MAX as usize {
            return Err(FsError::Invalid(format!(
                "{}: a path of {} bytes is too long",
                self.shown,
                rel.len()
            )));
        }
        let fmt = st.st_mode & libc::S_IFMT;
        match fmt {
            libc::S_IFDIR => {
                let dir = openat(
                    &obj,
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(self.err("opening", &rel))?;
                drop(obj);
                let xattrs = capability(dir.as_fd());
                self.sink.entry(
                    &Obj {
                        rel: &rel,
                        name,
                        depth,
                        st,
                        kind: Kind::Dir,
                        xattrs: &xattrs,
                    },
                    None,
                )?;
                self.children(dir.as_fd(), &rel, depth + 1)?;
                self.sink.leave_dir(st)
            }
            libc::S_IFREG => {
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key).cloned() {
                        return self.sink.entry(
                            &Obj {
                                rel: &rel,
                                name,
                                depth,
                                st,
                                kind: Kind::Link(&first),
                                xattrs: &[],
                            },
                            None,
                        );
                    }
                    self.links.insert(key, rel.clone());
                }
                // The inode the O_PATH descriptor holds, opened for reading.
                let fd = nix::fcntl::open(
                    &proc_path(obj.as_fd()),
                    OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(self.err("opening", &rel))?;
                let now = fstat(&fd).map_err(self.err("inspecting", &rel))?;
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                    return Err(FsError::Invalid(format!(
                        "{}/{} changed while it was copied",
                        self.shown,
                        String::from_utf8_lossy(&rel)
                    )));
                }
                let xattrs = capability(fd.as_fd());
                let file = File::from(fd);
                let size = st.st_size as u64;
                let mut data = Exact {
                    inner: &file,
                    left: size,
                };
                self.sink.entry(
                    &Obj {
                        rel: &rel,
                        name,
                        depth,
                        st,
                        kind: Kind::File,
                        xattrs: &xattrs,
                    },
                    Some(&mut data),
                )
            }
            libc::S_IFLNK => {
                let target = readlinkat(&obj, "").map_err(self.err("reading symlink", &rel))?;
                self.sink.entry(
                    &Obj {
                        rel: &rel,
                        name,
                        depth,
                        st,
                        kind: Kind::Symlink(target.as_bytes()),
                        xattrs: &[],
                    },
                    None,
                )
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                let (t, major, minor) = match fmt {
                    libc::S_IFCHR => (
                        tar::EntryType::Char,
                        libc::major(st.st_rdev),
                        libc::minor(st.st_rdev),
                    ),
                    libc::S_IFBLK => (
                        tar::EntryType::Block,
                        libc::major(st.st_rdev),
                        libc::minor(st.st_rdev),
                    ),
                    _ => (tar::EntryType::Fifo, 0, 0),
                };
                self.sink.entry(
                    &Obj {
                        rel: &rel,
                        name,
                        depth,
                        st,
                        kind: Kind::Node(t, major, minor),
                        xattrs: &[],
                    },
                    None,
                )
            }
            // Sockets are not archived (Docker skips them too).
            _ => Ok(()),
        }
    }

    fn children(&mut self, dir: BorrowedFd<'_>, rel: &[u8], depth: usize) -> Result<()> {
        let names = read_names(dir).map_err(|e| FsError::Io {
            what: "reading directory",
            path: format!(
                "{}/{}",
                self.shown.trim_end_matches('/'),
                String::from_utf8_lossy(rel)
            ),
            source: e,
        })?;
        for n in names {
            let crel = join_rel(rel, n.as_bytes());
            let child = match openat(
                dir,
                n.as_os_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => continue, // removed while we walk
                Err(e) => return Err(self.err("opening", &crel)(e)),
            };
            let st = fstat(&child).map_err(self.err("inspecting", &crel))?;
            self.obj(child, &st, crel, &n, depth)?;
        }
        Ok(())
    }
}

/// Counts what goes through.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One tar entry to write.
struct TarEntry<'a> {
    /// The name, without a directory's trailing `/`.
    name: &'a [u8],
    kind: Kind<'a>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Refuses what extraction into `dir` would replace the wrong way (Docker's
/// NoOverwriteDirNonDir).
struct OverwriteCheck {
    dir: OwnedFd,
    shown: String,
}

impl OverwriteCheck {
    fn check(&self, comps: &[&[u8]], entry_is_dir: bool) -> Result<()> {
        if comps.is_empty() {
            return Ok(());
        }
        let rel: PathBuf = comps.iter().map(|c| OsStr::from_bytes(c)).collect();
        let fd = match open_in_root(self.dir.as_fd(), &rel, libc::O_PATH | libc::O_NOFOLLOW, 0) {
            Ok(fd) => fd,
            Err(_) => return Ok(()),
        };
        let Ok(st) = fstat(&fd) else { return Ok(()) };
        let target = format!("{}/{}", self.shown.trim_end_matches('/'), rel.display());
        match (is_dir(&st), entry_is_dir) {
            (true, false) => Err(FsError::Invalid(format!(
                "cannot overwrite directory {target:?} with non-directory {:?}",
                self.shown
            ))),
            (false, true) => Err(FsError::Invalid(format!(
                "cannot overwrite non-directory {target:?} with directory {:?}",
                self.shown
            ))),
            _ => Ok(()),
        }
    }
}

/// Writes what it is given as a tar (ustar, PAX records where needed).
struct TarSink<W: Write> {
    builder: tar::Builder<Counting<W>>,
    /// Every entry owned by this uid/gid (`cp` into a container without
    /// `-a`: the container's root).
    owner: Option<(u64, u64)>,
    /// Leave out entries that name the root itself (extraction into a
    /// directory that exists: Docker leaves its metadata alone).
    skip_root: bool,
    check: Option<OverwriteCheck>,
}

impl<W: Write> TarSink<W> {
    fn new(out: W) -> TarSink<W> {
        TarSink {
            builder: tar::Builder::new(Counting { inner: out, n: 0 }),
            owner: None,
            skip_root: false,
            check: None,
        }
    }

    /// End the archive; the bytes written and the writer.
    fn finish(self) -> Result<(u64, W)> {
        let c = self
            .builder
            .into_inner()
            .map_err(io_err("writing", &"the archive"))?;
        Ok((c.n, c.inner))
    }

    fn emit(&mut self, e: &TarEntry<'_>, data: Option<&mut dyn Read>) -> Result<()> {
        let comps: Vec<&[u8]> = e
            .name
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        if comps.is_empty() && self.skip_root {
            return Ok(());
        }
        if let Some(c) = &self.check {
            c.check(&comps, matches!(e.kind, Kind::Dir))?;
        }
        let mut name = e.name.to_vec();
        if matches!(e.kind, Kind::Dir) && !name.ends_with(b"/") {
            name.push(b'/');
        }
        let (uid, gid) = self.owner.unwrap_or((e.uid, e.gid));
        let mut pax = Vec::new();
        let mut h = tar::Header::new_ustar();
        let etype = match e.kind {
            Kind::Dir => tar::EntryType::Directory,
            Kind::File => tar::EntryType::Regular,
            Kind::Symlink(_) => tar::EntryType::Symlink,
            Kind::Link(_) => tar::EntryType::Link,
            Kind::Node(t, _, _) => t,
        };
        let size = if matches!(e.kind, Kind::File) {
            e.size
        } else {
            0
        };
        h.set_entry_type(etype);
        h.set_mode(e.mode & 0o7777);
        if name.len() <= 100 {
            h.as_old_mut().name[..name.len()].copy_from_slice(&name);
        } else {
            pax_record(&mut pax, b"path", &name);
            h.as_old_mut().name.copy_from_slice(&name[..100]);
        }
        if let Kind::Symlink(t) | Kind::Link(t) = e.kind {
            if t.len() <= 100 {
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
            } else {
                pax_record(&mut pax, b"linkpath", t);
                h.as_old_mut().linkname.copy_from_slice(&t[..100]);
            }
        }
        for (key, id, is_uid) in [(&b"uid"[..], uid, true), (&b"gid"[..], gid, false)] {
            let v = if id > MAX_OCTAL_8 {
                pax_record(&mut pax, key, id.to_string().as_bytes());
                0
            } else {
                id
            };
            if is_uid {
                h.set_uid(v);
            } else {
                h.set_gid(v);
            }
        }
        if size > MAX_OCTAL_12 {
            pax_record(&mut pax, b"size", size.to_string().as_bytes());
            h.set_size(0);
        } else {
            h.set_size(size);
        }
        if e.mtime < 0 || e.mtime as u64 > MAX_OCTAL_12 {
            pax_record(&mut pax, b"mtime", e.mtime.to_string().as_bytes());
            h.set_mtime(0);
        } else {
            h.set_mtime(e.mtime as u64);
        }
        if let Kind::Node(tar::EntryType::Char | tar::EntryType::Block, major, minor) = e.kind {
            h.set_device_major(major)
                .and_then(|()| h.set_device_minor(minor))
                .map_err(io_err("writing", &"the archive"))?;
        }
        for (k, v) in e.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        h.set_cksum();
        let w = |e: io::Error| io_err("writing", &"the archive")(e);
        if !pax.is_empty() {
            let mut ph = tar::Header::new_ustar();
            let pname = b"././@PaxHeader";
            ph.as_old_mut().name[..pname.len()].copy_from_slice(pname);
            ph.set_entry_type(tar::EntryType::XHeader);
            ph.set_mode(0o644);
            ph.set_uid(0);
            ph.set_gid(0);
            ph.set_mtime(0);
            ph.set_size(pax.len() as u64);
            ph.set_cksum();
            self.builder.append(&ph, &pax[..]).map_err(w)?;
        }
        match data {
            Some(d) if size > 0 => self.builder.append(&h, d).map_err(w),
            _ => self.builder.append(&h, io::empty()).map_err(w),
        }
    }
}

impl<W: Write> Sink for TarSink<W> {
    fn entry(&mut self, o: &Obj<'_>, data: Option<&mut dyn Read>) -> Result<()> {
        self.emit(
            &TarEntry {
                name: o.rel,
                kind: o.kind,
                mode: o.st.st_mode,
                uid: u64::from(o.st.st_uid),
                gid: u64::from(o.st.st_gid),
                mtime: o.st.st_mtime,
                size: o.st.st_size as u64,
                xattrs: o.xattrs,
            },
            data,
        )
    }

    fn leave_dir(&mut self, _: &FileStat) -> Result<()> {
        Ok(())
    }
}

/// Creates what it is given in a host directory, as Docker's client
/// extracts `cp` archives: modes and mtimes kept, owners not (the files
/// are the caller's), a directory never replaced by a non-directory or the
/// other way round. Everything is created relative to a descriptor of its
/// parent, never following a symlink.
struct HostDirSink {
    base: OwnedFd,
    shown: PathBuf,
    /// Open directories of the walk, with the mtime to set when left.
    stack: Vec<(OwnedFd, Option<TimeSpec>)>,
    /// What the archive of all this would take (for "Successfully copied").
    bytes: u64,
}

fn local(what: &str, path: &Path) -> impl FnOnce(Errno) -> FsError {
    let msg = format!("{what} {}", path.display());
    move |e| FsError::Local(format!("{msg}: {}", go_words(&e.into())))
}

impl Sink for HostDirSink {
    fn entry(&mut self, o: &Obj<'_>, data: Option<&mut dyn Read>) -> Result<()> {
        let size = if matches!(o.kind, Kind::File) {
            o.st.st_size as u64
        } else {
            0
        };
        self.bytes += 512 + size.div_ceil(512) * 512;
        let parent = if o.depth == 0 {
            self.base.as_fd()
        } else {
            match self.stack.get(o.depth - 1) {
                Some((fd, _)) => fd.as_fd(),
                None => return Err(FsError::Invalid("internal: walk out of order".into())),
            }
        };
        let shown = self.shown.join(OsStr::from_bytes(o.rel));
        if o.depth == 0 && o.name == "." {
            // The contents of a directory into this one.
            let dup = self
                .base
                .try_clone()
                .map_err(|e| FsError::Local(format!("{}: {e}", self.shown.display())))?;
            self.stack.push((dup, None));
            return Ok(());
        }
        let existing = match fstatat(parent, o.name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(local("lstat", &shown)(e)),
        };
        let want_dir = matches!(o.kind, Kind::Dir);
        if let Some(ex) = &existing {
            match (is_dir(ex), want_dir) {
                (true, false) => {
                    return Err(FsError::Local(format!(
                        "cannot overwrite directory {:?} with non-directory {:?}",
                        shown.display().to_string(),
                        self.shown.display().to_string()
                    )))
                }
                (false, true) => {
                    return Err(FsError::Local(format!(
                        "cannot overwrite non-directory {:?} with directory {:?}",
                        shown.display().to_string(),
                        self.shown.display().to_string()
                    )))
                }
                (false, false) => unlinkat(parent, o.name, UnlinkatFlags::NoRemoveDir)
                    .map_err(local("remove", &shown))?,
                (true, true) => {}
            }
        }
        let mode = Mode::from_bits_truncate(o.st.st_mode & 0o7777);
        let mtime = TimeSpec::new(o.st.st_mtime, o.st.st_mtime_nsec);
        match o.kind {
            Kind::Dir => {
                if existing.is_none() {
                    mkdirat(parent, o.name, Mode::from_bits_truncate(0o700))
                        .map_err(local("mkdir", &shown))?;
                }
                let fd = openat(
                    parent,
                    o.name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(local("open", &shown))?;
                fchmod(&fd, mode).map_err(local("chmod", &shown))?;
                self.stack.push((fd, Some(mtime)));
            }
            Kind::File => {
                let fd = openat(
                    parent,
                    o.name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(local("open", &shown))?;
                let mut f = File::from(fd);
                if let Some(d) = data {
                    io::copy(d, &mut f).map_err(|e| match e.raw_os_error() {
                        Some(_) => {
                            FsError::Local(format!("write {}: {}", shown.display(), go_words(&e)))
                        }
                        None => FsError::Invalid(format!(
                            "copying {}: {e}",
                            String::from_utf8_lossy(o.rel)
                        )),
                    })?;
                }
                fchmod(&f, mode).map_err(local("chmod", &shown))?;
                futimens(&f, &mtime, &mtime).map_err(local("chtimes", &shown))?;
            }
            Kind::Symlink(target) => {
                symlinkat(OsStr::from_bytes(target), parent, o.name)
                    .map_err(local("symlink", &shown))?;
                utimensat(
                    parent,
                    o.name,
                    &mtime,
                    &mtime,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(local("lchtimes", &shown))?;
            }
            Kind::Link(first) => {
                let first = Path::new(OsStr::from_bytes(first));
                let (dir, last) = match (first.parent(), first.file_name()) {
                    (Some(p), Some(n)) if !p.as_os_str().is_empty() => (
                        open_in_root(self.base.as_fd(), p, libc::O_PATH | libc::O_DIRECTORY, 0)
                            .map_err(|e| {
                                FsError::Local(format!(
                                    "link {}: {}",
                                    shown.display(),
                                    go_words(&e)
                                ))
                            })?,
                        n,
                    ),
                    (_, Some(n)) => (
                        self.base.try_clone().map_err(|e| {
                            FsError::Local(format!("link {}: {e}", shown.display()))
                        })?,
                        n,
                    ),
                    _ => return Err(FsError::Invalid(format!("bad hardlink target {first:?}"))),
                };
                linkat(&dir, last, parent, o.name, AtFlags::empty())
                    .map_err(local("link", &shown))?;
            }
            Kind::Node(t, major, minor) => {
                let kind = match t {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
                mknodat(parent, o.name, kind, mode, dev).map_err(local("mknod", &shown))?;
                fchmodat(parent, o.name, mode, FchmodatFlags::NoFollowSymlink)
                    .or_else(|e| match e {
                        // Old kernels: fchmodat cannot take the flag; a
                        // node is no symlink.
                        Errno::EOPNOTSUPP | Errno::EINVAL => {
                            fchmodat(parent, o.name, mode, FchmodatFlags::FollowSymlink)
                        }
                        e => Err(e),
                    })
                    .map_err(local("chmod", &shown))?;
                utimensat(
                    parent,
                    o.name,
                    &mtime,
                    &mtime,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(local("chtimes", &shown))?;
            }
        }
        Ok(())
    }

    fn leave_dir(&mut self, _: &FileStat) -> Result<()> {
        if let Some((fd, Some(t))) = self.stack.pop() {
            futimens(&fd, &t, &t).map_err(|e| FsError::Local(format!("chtimes: {e}")))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// export
// ---------------------------------------------------------------------------

/// `export`: the container's whole file system (its image's layers with
/// its changes) as a tar written to `out`; returns the bytes written.
pub fn export(
    images: &mut ImageStore,
    paths: &Paths,
    rec: &ContainerRecord,
    out: &mut dyn Write,
) -> Result<u64> {
    let root = Rootfs::open(images, paths, rec, "export", false, false)?;
    let dir = openat(
        root.fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(nix_err("opening the root of", &rec.name))?;
    let mut sink = TarSink::new(out);
    let mut walker = Walker {
        sink: &mut sink,
        links: HashMap::new(),
        shown: format!("{}:", rec.name),
    };
    walker.children(dir.as_fd(), b"", 0)?;
    drop(dir);
    let (n, out) = sink.finish()?;
    out.flush().map_err(io_err("writing", &"the archive"))?;
    Ok(n)
}

// ---------------------------------------------------------------------------
// commit
// ---------------------------------------------------------------------------

/// What `commit` is asked for.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub author: Option<String>,
    pub message: Option<String>,
    /// Dockerfile instructions (`-c`), applied last.
    pub changes: Vec<String>,
    /// Pause a running container while its changes are read.
    pub pause: bool,
    pub reference: Option<Reference>,
}

/// The sha256 of an empty tar (two zero blocks): a layer without changes.
fn empty_layer_diff_id() -> Digest {
    Digest::sha256_of(&[0u8; 1024])
}

/// Replace variables of the same name, append new ones (Docker's
/// `ReplaceOrAppendEnvValues`); a name without `=` removes the variable.
fn merge_env(env: &mut Vec<serde_json::Value>, overrides: &[String]) {
    let key = |s: &str| s.split_once('=').map_or(s, |(k, _)| k).to_string();
    for o in overrides {
        let k = key(o);
        let pos = env
            .iter()
            .position(|e| e.as_str().is_some_and(|s| key(s) == k));
        match (o.contains('='), pos) {
            (true, Some(i)) => env[i] = serde_json::json!(o),
            (true, None) => env.push(serde_json::json!(o)),
            (false, Some(i)) => {
                env.remove(i);
            }
            (false, None) => {}
        }
    }
}

/// The new image's `config`: the parent's, with what the container was
/// created with (command, entrypoint, env, working dir, user, labels), then
/// the `--change` instructions.
fn commit_config(
    parent: &serde_json::Map<String, serde_json::Value>,
    cfg: &crate::config::ContainerConfig,
    anonymous_volumes: &[String],
    changes: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>> {
    use serde_json::json;
    let mut c = parent.clone();
    if let Some(sig) = cfg.stop_signal.as_deref().filter(|s| !s.is_empty()) {
        c.insert("StopSignal".into(), json!(sig));
    }
    // Volumes asked for without a name (`-v /data`) become the image's
    // VOLUMEs, as the image's own stay.
    if !anonymous_volumes.is_empty() {
        let mut vols = c
            .get("Volumes")
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default();
        for d in anonymous_volumes {
            vols.insert(d.clone(), json!({}));
        }
        c.insert("Volumes".into(), json!(vols));
    }
    if let Some(ep) = &cfg.entrypoint {
        let ep: Vec<&String> = ep.iter().filter(|s| !s.is_empty()).collect();
        c.insert(
            "Entrypoint".into(),
            if ep.is_empty() {
                serde_json::Value::Null
            } else {
                json!(ep)
            },
        );
        c.insert(
            "Cmd".into(),
            if cfg.cmd.is_empty() {
                serde_json::Value::Null
            } else {
                json!(cfg.cmd)
            },
        );
    } else if !cfg.cmd.is_empty() {
        c.insert("Cmd".into(), json!(cfg.cmd));
    }
    if !cfg.env.is_empty() {
        let mut env = c
            .get("Env")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        merge_env(&mut env, &cfg.env);
        c.insert("Env".into(), json!(env));
    }
    if let Some(w) = cfg.workdir.as_deref().filter(|w| !w.is_empty()) {
        c.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = cfg.user.as_deref().filter(|u| !u.is_empty()) {
        c.insert("User".into(), json!(u));
    }
    if !cfg.labels.is_empty() {
        let mut labels = c
            .get("Labels")
            .and_then(|l| l.as_object())
            .cloned()
            .unwrap_or_default();
        for (k, v) in &cfg.labels {
            labels.insert(k.clone(), json!(v));
        }
        c.insert("Labels".into(), json!(labels));
    }
    crate::changes::apply(&mut c, changes).map_err(|e| FsError::Invalid(e.to_string()))?;
    Ok(c)
}

/// `commit`: a new image of the container's image and one layer of its
/// changes (none when it changed nothing), its config taken from the
/// image's with the container's settings and `changes` applied.
pub fn commit(
    images: &mut ImageStore,
    paths: &Paths,
    rec: ContainerRecord,
    opts: &CommitOptions,
) -> Result<ImageRecord> {
    if rec.state == state::DEAD {
        return Err(FsError::Invalid(format!(
            "You cannot commit container {} which is Dead",
            rec.id
        )));
    }
    let image = image_of(images, &rec)?;
    let parent_bytes = images
        .blobs
        .read_all(&image.id, manifest::MAX_CONFIG_SIZE as u64)
        .map_err(ImageError::from)?;
    let mut config: serde_json::Value = serde_json::from_slice(&parent_bytes)
        .map_err(|e| FsError::Invalid(format!("image {}: bad config: {e}", image.id)))?;
    let cfg = containers::config_of(&rec)?;
    let obj = config
        .as_object_mut()
        .ok_or_else(|| FsError::Invalid(format!("image {}: bad config", image.id)))?;
    let parent_cfg = obj
        .get("config")
        .and_then(|c| c.as_object())
        .cloned()
        .unwrap_or_default();
    let anonymous: Vec<String> = cfg
        .mounts
        .iter()
        .filter(|m| m.kind == crate::config::MountKind::Volume)
        .filter(|m| {
            m.name
                .as_deref()
                .is_some_and(|n| containers::is_anonymous_volume(images, n))
        })
        .map(|m| m.destination.clone())
        .collect();
    // Bad changes fail before anything is paused or written.
    let new_cfg = commit_config(&parent_cfg, &cfg, &anonymous, &opts.changes)?;

    let paused = opts.pause && rec.state == state::RUNNING;
    if paused {
        containers::pause(images, paths, rec.clone())?;
    }
    let upper = paths.container_dir(&rec.id).join("upper");
    let read = read_changes(images, &image, &upper);
    if paused {
        let again = containers::find(images, paths, &rec.id)
            .and_then(|r| containers::unpause(images, paths, r));
        if let Err(e) = again {
            // The changes were read; the container is left paused.
            if read.is_ok() {
                return Err(e.into());
            }
        }
    }
    let layer = read?;

    let created = now();
    let empty = layer.is_none();
    obj.insert("config".into(), serde_json::Value::Object(new_cfg));
    obj.insert("created".into(), serde_json::json!(created));
    obj.remove("container");
    obj.remove("container_config");
    match &opts.author {
        Some(a) => {
            obj.insert("author".into(), serde_json::json!(a));
        }
        None => {
            obj.remove("author");
        }
    }
    let mut diff_ids =
        manifest::diff_ids(&manifest::parse_config(&parent_bytes).map_err(ImageError::from)?)
            .map_err(ImageError::from)?;
    let mut unpacked = Unpacked::default();
    if let Some((pending, stats)) = layer {
        diff_ids.push(stats.diff_id.clone());
        unpacked.insert(pending, &stats);
    }
    obj.insert(
        "rootfs".into(),
        serde_json::json!({
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        }),
    );
    let mut entry = serde_json::Map::new();
    entry.insert("created".into(), serde_json::json!(created));
    if let Some(a) = &opts.author {
        entry.insert("author".into(), serde_json::json!(a));
    }
    entry.insert(
        "created_by".into(),
        serde_json::json!(rec.command.join(" ")),
    );
    if let Some(m) = opts.message.as_deref().filter(|m| !m.is_empty()) {
        entry.insert("comment".into(), serde_json::json!(m));
    }
    if empty {
        entry.insert("empty_layer".into(), serde_json::json!(true));
    }
    let history = obj
        .entry("history")
        .or_insert_with(|| serde_json::json!([]));
    match history.as_array_mut() {
        Some(h) => h.push(serde_json::Value::Object(entry)),
        None => *history = serde_json::json!([entry]),
    }
    let bytes = manifest::canonical_json(&config)
        .map_err(|e| FsError::Invalid(format!("encoding the image config: {e}")))?;
    let layers = (0..diff_ids.len()).map(|_| NewLayer::Unpacked).collect();
    Ok(images.add(
        NewImage {
            config: &bytes,
            manifest: None,
            layers,
            tags: opts.reference.iter().cloned().collect(),
        },
        &mut unpacked,
    )?)
}

/// The container's changes as a layer, `None` when it changed nothing:
/// the upper dir as a layer tar, without the runtime's mount points,
/// unpacked into the layer store as it is written (with its tar split, no
/// blob).
fn read_changes(
    images: &ImageStore,
    image: &ImageRecord,
    upper: &Path,
) -> Result<Option<(PendingLayer, layer::ApplyStats)>> {
    let (changes, mount_points) = diff_upper(images, image, upper)?;
    if changes.is_empty() {
        return Ok(None);
    }
    let _content = images.content_lock(false)?;
    let opts = DiffOptions {
        compression: Compression::None,
        ..DiffOptions::default()
    };
    let layers = &images.layers;
    let (_, unpacked) = pipeline(
        |w| {
            let mut filtered = TarFilter::new(w, mount_points);
            let stats = layer::diff(upper, &mut filtered, &opts)?;
            filtered.flush().map_err(io_err("writing", &"the layer"))?;
            Ok(stats)
        },
        |r| Ok(unpack_layer(layers, r, None)?),
    )?;
    if unpacked.1.diff_id == empty_layer_diff_id() {
        return Ok(None);
    }
    Ok(Some(unpacked))
}

// ---------------------------------------------------------------------------
// cp
// ---------------------------------------------------------------------------

/// `cp`'s flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// `-a`: keep the owners of what goes into the container (else it is
    /// the container's root's).
    pub archive: bool,
    /// `-L`: follow a symlink named as the source.
    pub follow_link: bool,
}

/// Where `cp` puts what it reads from a container.
pub enum HostDest<'a> {
    /// A tar stream (`-`).
    Stream(&'a mut dyn Write),
    /// A host path as given.
    Path(&'a str),
}

/// Where `cp` takes what it writes into a container.
pub enum HostSource<'a> {
    /// A tar stream (`-`), plain or compressed.
    Stream(Box<dyn Read + Send + 'a>),
    /// A host path as given.
    Path(&'a str),
}

/// A path of the host made absolute (Docker's `resolveLocalPath`).
fn host_abs(p: &str) -> Result<String> {
    if p.starts_with('/') {
        return Ok(preserve_trailing(clean(p), p));
    }
    let cwd =
        std::env::current_dir().map_err(|e| FsError::Local(format!("getwd: {}", go_words(&e))))?;
    let joined = format!("{}/{p}", cwd.display());
    Ok(preserve_trailing(clean(&joined), p))
}

/// What the destination of a copy is (Docker's `CopyInfo`).
struct DestInfo {
    path: String,
    exists: bool,
    is_dir: bool,
}

/// Where an archive of the source goes: the directory to extract into and
/// the name its top entry takes there (Docker's `PrepareArchiveCopy`).
fn prepare_copy(
    src_is_dir: bool,
    src_base: &str,
    dst: &DestInfo,
    local: bool,
) -> Result<(String, String)> {
    let fail = |m: &str| {
        if local {
            FsError::Local(m.to_string())
        } else {
            FsError::Invalid(m.to_string())
        }
    };
    let (dst_dir, dst_base) = split_dir_entry(&dst.path);
    if dst.exists && dst.is_dir {
        return Ok((dst.path.clone(), src_base.to_string()));
    }
    if dst.exists && src_is_dir {
        return Err(fail("cannot copy directory"));
    }
    if dst.exists || src_is_dir {
        return Ok((dst_dir, dst_base));
    }
    if asserts_directory(&dst.path) {
        return Err(fail("no such directory"));
    }
    Ok((dst_dir, dst_base))
}

/// Open a source path in the container (`abs`, cleaned, absolute): the
/// parents are resolved inside the root, the last component is followed
/// only with `follow` (or a trailing `/`); an `O_PATH` descriptor.
fn open_container_source(
    root: &Rootfs,
    abs: &str,
    given: &str,
    container: &str,
    follow: bool,
) -> Result<OwnedFd> {
    let nofollow = if follow || asserts_directory(abs) {
        0
    } else {
        libc::O_NOFOLLOW
    };
    open_in_root(
        root.fd(),
        Path::new(&rel_of(abs)),
        libc::O_PATH | nofollow,
        0,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => FsError::NotFound {
            path: given.to_string(),
            container: container.to_string(),
        },
        _ => FsError::Invalid(format!("lstat {abs}: {}", go_words(&e))),
    })
}

/// `cp CONTAINER:SRC DEST`: copy out of a container into a host path, or
/// as a tar to a stream. Returns the size of the archive it amounted to.
pub fn copy_from_container(
    images: &mut ImageStore,
    paths: &Paths,
    rec: &ContainerRecord,
    container: &str,
    src: &str,
    dest: HostDest<'_>,
    opts: CopyOptions,
) -> Result<u64> {
    let abs = container_path(src);
    // The host side first, as Docker's client checks it before asking.
    let plan = match &dest {
        HostDest::Stream(_) => None,
        HostDest::Path(d) => Some(host_dest_info(d)?),
    };
    let root = Rootfs::open(images, paths, rec, "cp", false, true)?;
    let obj = open_container_source(&root, &abs, src, container, opts.follow_link)?;
    let st = fstat(&obj).map_err(nix_err("lstat", &abs))?;
    let base = archive_base(&abs);
    let shown = format!("{container}:{}", abs.trim_end_matches("/."));
    match (dest, plan) {
        (HostDest::Stream(out), _) => {
            let mut sink = TarSink::new(out);
            Walker {
                sink: &mut sink,
                links: HashMap::new(),
                shown,
            }
            .top(obj, OsStr::new(&base))?;
            let (n, out) = sink.finish()?;
            out.flush().map_err(io_err("writing", &"the archive"))?;
            Ok(n)
        }
        (HostDest::Path(_), Some(dst)) => {
            let (dir, name) = prepare_copy(is_dir(&st), &base, &dst, true)?;
            let base_fd = nix::fcntl::open(
                Path::new(&dir),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(local("open", Path::new(&dir)))?;
            let mut sink = HostDirSink {
                base: base_fd,
                shown: PathBuf::from(&dir),
                stack: Vec::new(),
                bytes: 0,
            };
            Walker {
                sink: &mut sink,
                links: HashMap::new(),
                shown,
            }
            .top(obj, OsStr::new(&name))?;
            Ok(sink.bytes + 1024)
        }
        (HostDest::Path(_), None) => Err(FsError::Invalid("internal: no destination".into())),
    }
}

/// The host destination of a copy out of a container, checked as
/// Docker's client does (`ValidateOutputPath`, `CopyInfoDestinationPath`).
fn host_dest_info(given: &str) -> Result<DestInfo> {
    let abs = host_abs(given)?;
    let dir = go_dir(&clean(&abs));
    if let Err(e) = std::fs::metadata(&dir) {
        if e.kind() == io::ErrorKind::NotFound {
            return Err(FsError::Local(format!(
                "invalid output path: directory {dir:?} does not exist"
            )));
        }
    }
    if let Ok(m) = std::fs::metadata(&abs) {
        if !m.is_dir() && !m.is_file() {
            return Err(FsError::Local(format!(
                "invalid output path: {abs:?} must be a directory or a regular file"
            )));
        }
    }
    // A symlink is followed: the copy goes where it points.
    let mut path = abs;
    for _ in 0..=10 {
        match std::fs::symlink_metadata(path.trim_end_matches("/.")) {
            Ok(m) if m.file_type().is_symlink() && !asserts_directory(&path) => {
                let target = std::fs::read_link(&path)
                    .map_err(|e| FsError::Local(format!("readlink {path}: {}", go_words(&e))))?;
                let t = target.to_string_lossy();
                path = if t.starts_with('/') {
                    t.into_owned()
                } else {
                    clean(&format!("{}/{t}", go_dir(&path)))
                };
            }
            Ok(_) => {
                let m = std::fs::metadata(&path)
                    .map_err(|e| FsError::Local(format!("stat {path}: {}", go_words(&e))))?;
                return Ok(DestInfo {
                    is_dir: m.is_dir(),
                    path,
                    exists: true,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (parent, _) = split_dir_entry(&path);
                let m = std::fs::metadata(&parent)
                    .map_err(|e| FsError::Local(format!("stat {parent}: {}", go_words(&e))))?;
                if !m.is_dir() {
                    return Err(FsError::Local("not a directory".into()));
                }
                return Ok(DestInfo {
                    path,
                    exists: false,
                    is_dir: false,
                });
            }
            Err(e) => return Err(FsError::Local(format!("lstat {path}: {}", go_words(&e)))),
        }
    }
    Err(FsError::Local(format!("too many symlinks in {given}")))
}

/// The destination of a copy into a container (a symlink followed, inside
/// the container).
fn container_dest_info(root: &Rootfs, abs: &str) -> Result<DestInfo> {
    let mut path = abs.to_string();
    for _ in 0..=10 {
        let nofollow = if asserts_directory(&path) {
            0
        } else {
            libc::O_NOFOLLOW
        };
        let fd = match open_in_root(
            root.fd(),
            Path::new(&rel_of(&path)),
            libc::O_PATH | nofollow,
            0,
        ) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Ok(DestInfo {
                    path,
                    exists: false,
                    is_dir: false,
                })
            }
            Err(e) => return Err(FsError::Invalid(format!("lstat {path}: {}", go_words(&e)))),
        };
        let st = fstat(&fd).map_err(nix_err("lstat", &path))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            return Ok(DestInfo {
                path,
                exists: true,
                is_dir: is_dir(&st),
            });
        }
        let target = readlinkat(&fd, "").map_err(nix_err("readlink", &path))?;
        let t = target.to_string_lossy();
        path = if t.starts_with('/') {
            clean(&t)
        } else {
            clean(&format!("{}/{t}", go_dir(&path)))
        };
    }
    Err(FsError::Invalid(format!("too many symlinks in {abs}")))
}

/// `cp SRC CONTAINER:DEST`: copy a host path (or a tar stream) into a
/// container. Returns the size of the archive.
pub fn copy_to_container(
    images: &mut ImageStore,
    paths: &Paths,
    rec: &ContainerRecord,
    container: &str,
    src: HostSource<'_>,
    dest: &str,
    opts: CopyOptions,
) -> Result<u64> {
    let cfg = containers::config_of(rec)?;
    // The host side first, as Docker's client does.
    let source = match &src {
        HostSource::Stream(_) => None,
        HostSource::Path(p) => {
            let abs = host_abs(p)?;
            let nofollow = if opts.follow_link || asserts_directory(&abs) {
                OFlag::empty()
            } else {
                OFlag::O_NOFOLLOW
            };
            let fd = nix::fcntl::open(
                Path::new(&abs),
                OFlag::O_PATH | OFlag::O_CLOEXEC | nofollow,
                Mode::empty(),
            )
            .map_err(|e| FsError::Local(format!("lstat {abs}: {}", go_words(&e.into()))))?;
            let st = fstat(&fd)
                .map_err(|e| FsError::Local(format!("lstat {abs}: {}", go_words(&e.into()))))?;
            Some((fd, st, archive_base(&abs), abs))
        }
    };
    let abs = container_path(dest);
    let root = Rootfs::open(images, paths, rec, "cp", true, true)?;
    let dst = container_dest_info(&root, &abs)?;
    if dst.exists {
        let fd = open_in_root(root.fd(), Path::new(&rel_of(&dst.path)), libc::O_PATH, 0)
            .map_err(|e| FsError::Invalid(format!("lstat {}: {}", dst.path, go_words(&e))))?;
        let st = fstat(&fd).map_err(nix_err("lstat", &dst.path))?;
        let fmt = st.st_mode & libc::S_IFMT;
        if fmt != libc::S_IFDIR && fmt != libc::S_IFREG {
            return Err(FsError::Local(format!(
                "destination \"{container}:{dest}\" must be a directory or a regular file"
            )));
        }
    }
    let (dir, top) = match &source {
        None => {
            if !dst.is_dir {
                return Err(FsError::Local(format!(
                    "destination \"{container}:{dest}\" must be a directory"
                )));
            }
            (dst.path.clone(), String::new())
        }
        Some((_, st, base, _)) => prepare_copy(is_dir(st), base, &dst, true)?,
    };
    // The extraction point, resolved inside the container.
    let dir_fd =
        open_in_root(root.fd(), Path::new(&rel_of(&dir)), libc::O_PATH, 0).map_err(|e| match e
            .raw_os_error()
        {
            Some(libc::ENOENT) => FsError::NotFound {
                path: dir.clone(),
                container: container.to_string(),
            },
            _ => FsError::Invalid(format!("lstat {dir}: {}", go_words(&e))),
        })?;
    let st = fstat(&dir_fd).map_err(nix_err("lstat", &dir))?;
    if !is_dir(&st) {
        return Err(FsError::Invalid(
            "extraction point is not a directory".into(),
        ));
    }
    // Into a volume, the volume must be writable; else the root file system.
    if mount_id(dir_fd.as_fd()) != mount_id(root.fd()) {
        let ro = nix::sys::statvfs::fstatvfs(&dir_fd)
            .map_err(nix_err("inspecting", &dir))?
            .flags()
            .contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
        if ro {
            return Err(FsError::Invalid(
                "mounted volume is marked read-only".into(),
            ));
        }
    } else if cfg.read_only {
        return Err(FsError::Invalid(
            "container rootfs is marked read-only".into(),
        ));
    }
    let check = OverwriteCheck {
        dir: dir_fd
            .try_clone()
            .map_err(io_err("duplicating a descriptor of", &dir))?,
        shown: dir.clone(),
    };
    let owner = (!opts.archive).then_some((0u64, 0u64));
    let apply_opts = ApplyOptions {
        allow_devices: false,
        sync: false,
        ..ApplyOptions::default()
    };
    let dest_path = proc_path(dir_fd.as_fd());
    let produce = move |w: &mut ChanWriter| -> Result<u64> {
        let mut sink = TarSink::new(w);
        sink.owner = owner;
        sink.skip_root = true;
        sink.check = Some(check);
        match (src, source) {
            (HostSource::Path(_), Some((fd, _, _, abs))) => {
                Walker {
                    sink: &mut sink,
                    links: HashMap::new(),
                    shown: abs,
                }
                .top(fd, OsStr::new(&top))?;
            }
            (HostSource::Stream(r), _) => reencode(r, &mut sink)?,
            (HostSource::Path(_), None) => {
                return Err(FsError::Invalid("internal: no source".into()))
            }
        }
        Ok(sink.finish()?.0)
    };
    let (n, _) = pipeline(produce, |r| Ok(layer::apply(r, &dest_path, &apply_opts)?))?;
    drop(dir_fd);
    drop(root);
    Ok(n)
}

/// Pass a tar stream (plain or compressed) on through `sink`, which sets
/// owners and refuses bad overwrites as for a copied tree.
fn reencode(input: Box<dyn Read + Send + '_>, sink: &mut TarSink<&mut ChanWriter>) -> Result<()> {
    let bad = |e: io::Error| FsError::Invalid(format!("reading the archive: {e}"));
    let (_, plain) = layer::decompressed(input).map_err(bad)?;
    let mut archive = tar::Archive::new(plain);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let h = entry.header().clone();
        let name = entry.path_bytes().into_owned();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let (mut uid, mut gid) = (h.uid().map_err(bad)?, h.gid().map_err(bad)?);
        let mut mtime = h.mtime().map_err(bad)? as i64;
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(bad)? {
            for ext in pax {
                let ext = ext.map_err(bad)?;
                let v = || String::from_utf8_lossy(ext.value_bytes()).into_owned();
                match ext.key_bytes() {
                    b"uid" => uid = v().parse().unwrap_or(uid),
                    b"gid" => gid = v().parse().unwrap_or(gid),
                    b"mtime" => {
                        mtime = v()
                            .split('.')
                            .next()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(mtime)
                    }
                    k => {
                        if let Some(x) = k.strip_prefix(b"SCHILY.xattr.") {
                            xattrs.push((x.to_vec(), ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
        let link = link.unwrap_or_default();
        use tar::EntryType as T;
        let t = h.entry_type();
        let kind = match t {
            T::Directory => Kind::Dir,
            T::Regular | T::Continuous | T::GNUSparse => Kind::File,
            T::Symlink => Kind::Symlink(&link),
            T::Link => Kind::Link(&link),
            T::Char | T::Block => Kind::Node(
                t,
                h.device_major().map_err(bad)?.unwrap_or(0),
                h.device_minor().map_err(bad)?.unwrap_or(0),
            ),
            T::Fifo => Kind::Node(t, 0, 0),
            T::XGlobalHeader => continue,
            other => {
                return Err(FsError::Invalid(format!(
                    "archive entry {:?}: unsupported type {:?}",
                    String::from_utf8_lossy(&name),
                    other.as_byte() as char
                )))
            }
        };
        let size = entry.size();
        let mode = h.mode().map_err(bad)?;
        sink.emit(
            &TarEntry {
                name: &name,
                kind,
                mode,
                uid,
                gid,
                mtime,
                size,
                xattrs: &xattrs,
            },
            Some(&mut Exact {
                inner: &mut entry,
                left: size,
            }),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_as_docker_sees_them() {
        assert_eq!(container_path("etc/passwd"), "/etc/passwd");
        assert_eq!(container_path("/etc/"), "/etc/");
        assert_eq!(container_path("/etc/."), "/etc/.");
        assert_eq!(container_path("/etc/../x/./"), "/x/./");
        assert_eq!(container_path(""), "/.");
        assert_eq!(container_path("/"), "/");
        assert_eq!(container_path("."), "/.");
        assert_eq!(container_path("../../x"), "/x");
        assert_eq!(archive_base("/etc/"), "etc");
        assert_eq!(archive_base("/etc/."), ".");
        assert_eq!(archive_base("/"), ".");
        assert_eq!(archive_base("/etc/passwd"), "passwd");
        assert_eq!(split_dir_entry("/a/b"), ("/a".into(), "b".into()));
        assert_eq!(split_dir_entry("/a/b/"), ("/a".into(), "b".into()));
        assert_eq!(split_dir_entry("/a/b/."), ("/a/b".into(), ".".into()));
        assert_eq!(split_dir_entry("/a"), ("/".into(), "a".into()));
        assert!(asserts_directory("/a/"));
        assert!(asserts_directory("/a/."));
        assert!(!asserts_directory("/a"));
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(go_dir("/a"), "/");
        assert_eq!(go_dir("a"), ".");
    }

    #[test]
    fn where_a_copy_goes() {
        let d = |path: &str, exists, is_dir| DestInfo {
            path: path.into(),
            exists,
            is_dir,
        };
        // Into an existing directory: under the source's name.
        assert_eq!(
            prepare_copy(false, "f", &d("/dst", true, true), true).unwrap(),
            ("/dst".into(), "f".into())
        );
        // Contents of a directory into an existing one.
        assert_eq!(
            prepare_copy(true, ".", &d("/dst", true, true), true).unwrap(),
            ("/dst".into(), ".".into())
        );
        // Over an existing file, or to a new name.
        assert_eq!(
            prepare_copy(false, "f", &d("/dst/g", true, false), true).unwrap(),
            ("/dst".into(), "g".into())
        );
        assert_eq!(
            prepare_copy(true, "d", &d("/dst/new", false, false), true).unwrap(),
            ("/dst".into(), "new".into())
        );
        assert_eq!(
            prepare_copy(false, "f", &d("/dst/new", false, false), true).unwrap(),
            ("/dst".into(), "new".into())
        );
        let e = prepare_copy(true, "d", &d("/dst/g", true, false), true).unwrap_err();
        assert_eq!(e.to_string(), "cannot copy directory");
        let e = prepare_copy(false, "f", &d("/dst/new/", false, false), true).unwrap_err();
        assert_eq!(e.to_string(), "no such directory");
    }

    /// Writes everything it is given in pieces of 7 bytes.
    struct Dribble<W>(W);

    impl<W: Write> Write for Dribble<W> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(7);
            self.0.write_all(&buf[..n])?;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
    }

    #[test]
    fn the_tar_filter_leaves_out_what_it_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::create_dir_all(d.join("dev")).unwrap();
        std::fs::write(d.join("etc/hosts"), "").unwrap();
        std::fs::write(d.join("etc/kept"), "kept data").unwrap();
        let long = "l".repeat(150);
        std::fs::write(d.join(&long), vec![b'x'; 1500]).unwrap();
        std::os::unix::fs::symlink("etc/kept", d.join("link")).unwrap();
        let drop: HashSet<Vec<u8>> = [b"etc/hosts".to_vec(), b"dev".to_vec()].into();
        let mut out = Vec::new();
        {
            let mut f = Dribble(TarFilter::new(&mut out, drop));
            let opts = DiffOptions {
                compression: Compression::None,
                ..DiffOptions::default()
            };
            layer::diff(d, &mut f, &opts).unwrap();
            f.flush().unwrap();
        }
        let mut ar = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            seen.push((name, data.len()));
        }
        assert_eq!(
            seen,
            vec![
                ("etc/".to_string(), 0),
                ("etc/kept".to_string(), 9),
                ("link".to_string(), 0),
                (long, 1500),
            ]
        );
        assert_eq!(out.len() % 512, 0);
    }

    #[test]
    fn env_is_replaced_or_appended() {
        let mut env = vec![serde_json::json!("PATH=/bin"), serde_json::json!("A=1")];
        merge_env(&mut env, &["A=2".into(), "B=3".into(), "PATH".into()]);
        assert_eq!(
            env,
            vec![serde_json::json!("A=2"), serde_json::json!("B=3")]
        );
    }

    #[test]
    fn commit_config_takes_the_container_settings_then_changes() {
        let parent = serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/bin"], "Labels": {"a": "1"}});
        let cfg = crate::config::ContainerConfig {
            cmd: vec!["echo".into(), "hi".into()],
            env: vec!["X=1".into()],
            labels: [("b".to_string(), "2".to_string())].into(),
            stop_signal: Some("SIGINT".into()),
            ..Default::default()
        };
        let c = commit_config(
            parent.as_object().unwrap(),
            &cfg,
            &["/data".into()],
            &["ENV Y=2".into(), "WORKDIR /srv".into()],
        )
        .unwrap();
        let c = serde_json::Value::Object(c);
        assert_eq!(c["StopSignal"], "SIGINT");
        assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
        assert_eq!(c["Cmd"], serde_json::json!(["echo", "hi"]));
        assert_eq!(c["Env"], serde_json::json!(["PATH=/bin", "X=1", "Y=2"]));
        assert_eq!(c["Labels"], serde_json::json!({"a": "1", "b": "2"}));
        assert_eq!(c["WorkingDir"], "/srv");
        // An entrypoint given at create replaces the image's command.
        let cfg = crate::config::ContainerConfig {
            entrypoint: Some(vec!["/init".into()]),
            ..Default::default()
        };
        let c = commit_config(parent.as_object().unwrap(), &cfg, &[], &[]).unwrap();
        assert_eq!(c["Entrypoint"], serde_json::json!(["/init"]));
        assert_eq!(c["Cmd"], serde_json::Value::Null);
        assert!(commit_config(parent.as_object().unwrap(), &cfg, &[], &["FROM x".into()]).is_err());
    }

    #[test]
    fn the_channel_pipe_reports_the_first_failure() {
        // The consumer stops early: its error wins over the writer's.
        let r = pipeline(
            |w| {
                for _ in 0..64 {
                    w.write_all(&[0u8; CHUNK])
                        .map_err(io_err("writing", &"x"))?;
                }
                Ok(())
            },
            |_r| -> Result<()> { Err(FsError::Invalid("consumer".into())) },
        );
        assert_eq!(r.unwrap_err().to_string(), "consumer");
        // The producer fails: its error wins even if the reader succeeded.
        let r = pipeline(
            |w| -> Result<()> {
                w.write_all(b"abc").map_err(io_err("writing", &"x"))?;
                Err(FsError::Invalid("producer".into()))
            },
            |mut r| {
                let mut s = Vec::new();
                r.read_to_end(&mut s).map_err(io_err("reading", &"x"))?;
                Ok(s)
            },
        );
        assert_eq!(r.unwrap_err().to_string(), "producer");
        let (_, got) = pipeline(
            |w| w.write_all(b"hello").map_err(io_err("writing", &"x")),
            |mut r| {
                let mut s = Vec::new();
                r.read_to_end(&mut s).map_err(io_err("reading", &"x"))?;
                Ok(s)
            },
        )
        .unwrap();
        assert_eq!(got, b"hello");
    }
}
