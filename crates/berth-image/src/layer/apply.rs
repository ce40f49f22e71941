//! Apply a layer tar stream to a directory in overlayfs form.
//!
//! See the module documentation of [`super`] for the rules; this file is
//! the one place where a hostile tar meets the file system, so every call
//! that touches `dest` works relative to a descriptor:
//!
//! - a parent directory is opened with `openat2(RESOLVE_IN_ROOT)` from the
//!   descriptor of `dest` (symlinks on the way resolve inside `dest`);
//!   missing parents are created one component at a time, each resolved
//!   the same way;
//! - the last component is looked at with `fstatat(AT_SYMLINK_NOFOLLOW)`,
//!   removed (a directory tree is removed through descriptors opened with
//!   `O_NOFOLLOW`), and created anew relative to the parent descriptor with
//!   `O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`, `mknodat` or
//!   `linkat`; metadata is then set through the new descriptor or with
//!   `AT_SYMLINK_NOFOLLOW`.

use super::compress::{self, Failure, Source, StreamState, Uncompressed};
use super::split::Recorder;
use super::{ApplyOptions, ApplyStats, Compression, LayerError, MAX_ENTRY_METADATA};
use crate::digest::{Algorithm, Digest};
use berth_sys::fd::{open_in_root, proc_path};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";

/// A sparse entry may not carry more than this many bytes of headers and
/// sparse maps: the tar crate walks its chunk list in quadratic time.
const MAX_SPARSE_METADATA: u64 = 128 << 10;

/// Block size for keeping runs of zeros as holes.
const HOLE_BLOCK: usize = 4096;

/// Files at least this big have their writeback started as soon as they
/// are written, when the caller syncs later.
const WRITEBACK_MIN: u64 = 256 << 10;

/// Copy buffer; a multiple of `HOLE_BLOCK`.
const COPY_BUF: usize = 1 << 20;

/// Apply the layer tar read from `reader` below the directory `dest`.
///
/// `dest` should be a fresh, empty directory: on error it is left partly
/// written and the caller removes it (callers unpack into a temporary
/// directory and rename it into place on success, so a partial layer is
/// never visible). The input is read to its end, so that
/// [`ApplyStats::diff_id`] and [`ApplyStats::digest`] cover every byte;
/// a digest that differs from the expected one is an error (reported after
/// the files were written, which is why `dest` must be discarded then).
pub fn apply(
    reader: impl Read,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    let root = nix::fcntl::open(
        dest,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::io("opening layer directory", dest, e.into()))?;

    let raw_algo = opts
        .expected_digest
        .as_ref()
        .map_or(Algorithm::Sha256, Digest::algorithm);
    let diff_algo = opts
        .expected_diff_id
        .as_ref()
        .map_or(Algorithm::Sha256, Digest::algorithm);

    let mut source = Source::new(reader, raw_algo);
    let mut head = [0u8; 4];
    let n = compress::read_full(&mut source, &mut head).map_err(LayerError::Source)?;
    let format = compress::sniff(&head[..n]);
    // An uncompressed stream is the tar stream: hash it once.
    let same_hash = format == Compression::None && raw_algo == diff_algo;
    if same_hash {
        source.digest();
    }

    let state = Rc::new(StreamState::default());
    if let Some(dir) = &opts.split {
        *state.split.borrow_mut() = Some(Recorder::new(dir)?);
    }
    let result = match compress::decoder(format, head[..n].to_vec(), &mut source) {
        Ok(decoder) => {
            let stream =
                Uncompressed::new(decoder, diff_algo, opts.max_uncompressed, state.clone());
            let mut unpacker = Unpacker {
                root,
                dest,
                opts,
                state: state.clone(),
                dir_times: BTreeMap::new(),
                apparent: 0,
                consumed: 0,
                entries: 0,
                buf: Vec::new(),
            };
            unpacker
                .run(stream)
                .map(|diff_id| (diff_id, unpacker.entries, unpacker.apparent))
        }
        Err(e) => Err(Stop::Stream {
            entry: None,
            after: None,
            err: e,
        }),
    };
    let (diff_id, entries, data_size) = match result {
        Ok(r) => r,
        Err(Stop::Layer(e)) => return Err(e),
        Err(Stop::Stream { entry, after, err }) => {
            return Err(stream_error(&state, &mut source, format, entry, after, err))
        }
    };

    // The decompressor stops at the end of its stream; hash whatever the
    // source still holds (normally nothing).
    io::copy(&mut source, &mut io::sink())
        .map_err(|e| LayerError::Source(source.error.take().unwrap_or(e)))?;
    let size = source.count();
    let digest = match source.digest() {
        Some(d) => d,
        None => diff_id.clone(),
    };
    if let Some(expected) = &opts.expected_digest {
        if *expected != digest {
            return Err(LayerError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
    }
    if let Some(expected) = &opts.expected_diff_id {
        if *expected != diff_id {
            return Err(LayerError::DiffIdMismatch {
                expected: expected.clone(),
                actual: diff_id,
            });
        }
    }
    Ok(ApplyStats {
        diff_id,
        uncompressed_size: state.total.get(),
        digest,
        size,
        compression: format,
        entries,
        data_size,
    })
}

/// Turn a failed read of the tar stream into the error that caused it.
fn stream_error<R: Read>(
    state: &StreamState,
    source: &mut Source<R>,
    format: Compression,
    entry: Option<String>,
    after: Option<String>,
    err: io::Error,
) -> LayerError {
    match state.take_failure() {
        Some(Failure::TooLarge(limit)) => LayerError::TooLarge { limit },
        Some(Failure::Metadata) => LayerError::Malformed {
            after,
            msg: format!("more than {MAX_ENTRY_METADATA} bytes of headers before one entry"),
        },
        Some(Failure::Inner(e)) => match source.error.take() {
            Some(se) => LayerError::Source(se),
            None if format == Compression::None => LayerError::Source(e),
            None => LayerError::Decompress { format, source: e },
        },
        None if state.eof.get() => LayerError::Truncated { entry },
        None => match entry {
            Some(e) => LayerError::InvalidEntry {
                entry: e,
                why: err.to_string(),
            },
            None => LayerError::Malformed {
                after,
                msg: err.to_string(),
            },
        },
    }
}

/// Why unpacking stopped: a layer error, or a failed read of the stream
/// whose cause [`stream_error`] works out.
enum Stop {
    Layer(LayerError),
    Stream {
        entry: Option<String>,
        after: Option<String>,
        err: io::Error,
    },
}

impl From<LayerError> for Stop {
    fn from(e: LayerError) -> Self {
        Stop::Layer(e)
    }
}

/// A normalised entry path: components without `.`, `..` or empty ones.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RelPath {
    comps: Vec<OsString>,
}

impl RelPath {
    /// Normalise a tar name. A `..` climbing above the root is clamped at the
    /// root, as Docker does. Fails on a NUL byte.
    fn parse(raw: &[u8]) -> Result<RelPath, &'static str> {
        if raw.contains(&0) {
            return Err("the name holds a NUL byte");
        }
        let mut comps: Vec<OsString> = Vec::new();
        for c in raw.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    comps.pop();
                }
                c => comps.push(OsString::from_vec(c.to_vec())),
            }
        }
        Ok(RelPath { comps })
    }

    fn is_root(&self) -> bool {
        self.comps.is_empty()
    }

    fn to_path(&self) -> PathBuf {
        self.comps.iter().collect()
    }

    fn parent(&self) -> &[OsString] {
        &self.comps[..self.comps.len().saturating_sub(1)]
    }

    fn name(&self) -> Option<&OsStr> {
        self.comps.last().map(OsString::as_os_str)
    }
}

fn join(comps: &[OsString]) -> PathBuf {
    comps.iter().collect()
}

/// Metadata of one entry, ids already mapped to the host.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: TimeSpec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Errors of the resolution that a layer can provoke (a parent that is a
/// file, a symlink loop, a dangling link) are the layer's fault.
fn is_layer_fault(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOTDIR
                | libc::ELOOP
                | libc::EXDEV
                | libc::ENAMETOOLONG
                | libc::EEXIST
                | libc::ENOENT
                | libc::EISDIR
                | libc::ENOTEMPTY
        )
    )
}

struct Unpacker<'a> {
    root: OwnedFd,
    dest: &'a Path,
    opts: &'a ApplyOptions,
    state: Rc<StreamState>,
    /// Directory mtimes, applied at the end (children change them).
    dir_times: BTreeMap<PathBuf, TimeSpec>,
    /// Sum of the apparent sizes of the data read from entries.
    apparent: u64,
    /// Data bytes of the current entry read by its handler.
    consumed: u64,
    entries: u64,
    buf: Vec<u8>,
}

type Entry<'b, R> = tar::Entry<'b, Uncompressed<R>>;

impl Unpacker<'_> {
    /// Unpack every entry, then read the stream to its end; returns the
    /// diff_id.
    fn run<R: Read>(&mut self, stream: Uncompressed<R>) -> Result<Digest, Stop> {
        let mut archive = tar::Archive::new(stream);
        let mut last: Option<String> = None;
        {
            let entries = archive.entries().map_err(|err| Stop::Stream {
                entry: None,
                after: None,
                err,
            })?;
            for item in entries {
                let mut entry = item.map_err(|err| Stop::Stream {
                    entry: None,
                    after: last.clone(),
                    err,
                })?;
                self.state.in_entry.set(true);
                self.consumed = 0;
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                self.entry(&mut entry, &name)?;
                // Read what the entry handler left, so that the tar reader
                // itself only ever reads headers (bounded by the metadata
                // limit of the stream), and so that data cut short is seen
                // in every kind of entry.
                let drained = self.drain(&mut entry, &name)?;
                if self.consumed + drained != entry.size() {
                    return Err(LayerError::Truncated { entry: Some(name) }.into());
                }
                last = Some(name);
                self.state.between_entries();
            }
        }
        // Trailing bytes after the end of the archive (zero padding, or
        // garbage, which Docker accepts too) are hashed and ignored.
        self.state.in_entry.set(true);
        let mut stream = archive.into_inner();
        io::copy(&mut stream, &mut io::sink()).map_err(|err| Stop::Stream {
            entry: None,
            after: last,
            err,
        })?;
        let digest = stream.digest().ok_or_else(|| {
            Stop::Layer(LayerError::Malformed {
                after: None,
                msg: "stream hashed twice".into(),
            })
        })?;
        // Before the syncfs, which then covers the split too.
        let recorder = self.state.split.borrow_mut().take();
        if let Some(rec) = recorder {
            rec.finish(&digest, self.state.total.get())?;
        }
        self.finish()?;
        Ok(digest)
    }

    /// Directory mtimes, then a syncfs when asked.
    fn finish(&mut self) -> Result<(), LayerError> {
        let times = std::mem::take(&mut self.dir_times);
        for (path, mtime) in times {
            let fd = if path.as_os_str().is_empty() {
                openat(
                    &self.root,
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io::Error::from)
            } else {
                open_in_root(
                    self.root.as_fd(),
                    &path,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
            };
            let fd = match fd {
                Ok(fd) => fd,
                // Replaced by a later entry: its time is not ours to set.
                Err(e) if is_layer_fault(&e) => continue,
                Err(e) => return Err(LayerError::io("opening", self.dest.join(&path), e)),
            };
            futimens(&fd, &mtime, &mtime)
                .map_err(|e| LayerError::io("setting times of", self.dest.join(&path), e.into()))?;
        }
        if self.opts.sync {
            // syncfs needs a real descriptor, not an O_PATH one.
            let fd = openat(
                &self.root,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| LayerError::io("opening", self.dest, e.into()))?;
            nix::unistd::syncfs(&fd).map_err(|e| LayerError::io("syncing", self.dest, e.into()))?;
        }
        Ok(())
    }

    /// Read an entry's data up to its end (counted as apparent bytes:
    /// sparse entries expand); returns the bytes read.
    fn drain<R: Read>(&mut self, entry: &mut Entry<'_, R>, name: &str) -> Result<u64, Stop> {
        let mut scratch = [0u8; 8192];
        let mut total = 0u64;
        loop {
            let n = match entry.read(&mut scratch) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    return Err(Stop::Stream {
                        entry: Some(name.to_string()),
                        after: None,
                        err,
                    })
                }
            };
            self.count_apparent(n as u64)?;
            total += n as u64;
        }
    }

    fn count_apparent(&mut self, n: u64) -> Result<(), LayerError> {
        self.apparent += n;
        match self.opts.max_uncompressed {
            Some(limit) if self.apparent > limit => Err(LayerError::TooLarge { limit }),
            _ => Ok(()),
        }
    }

    fn invalid(entry: &str, why: impl Into<String>) -> LayerError {
        LayerError::InvalidEntry {
            entry: entry.to_string(),
            why: why.into(),
        }
    }

    /// Apply one entry.
    fn entry<R: Read>(&mut self, entry: &mut Entry<'_, R>, name: &str) -> Result<(), Stop> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Global PAX records (a comment, a charset): nothing to apply.
            return Ok(());
        }
        let raw_path = entry.path_bytes().into_owned();
        let path = RelPath::parse(&raw_path).map_err(|why| Self::invalid(name, why))?;

        if let Some(base) = path.name() {
            let base = base.as_bytes();
            if base == OPAQUE_WHITEOUT {
                self.entries += 1;
                return Ok(self.opaque(&path, name)?);
            }
            if base.starts_with(WHITEOUT_META_PREFIX) {
                // aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not ours.
                return Ok(());
            }
            if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
                if hidden.is_empty() || hidden == b"." || hidden == b".." {
                    return Err(Self::invalid(name, "whiteout of an invalid name").into());
                }
                let hidden = OsStr::from_bytes(hidden).to_os_string();
                let meta = self.meta(entry, name)?;
                self.entries += 1;
                return Ok(self.whiteout(&path, &hidden, &meta, name)?);
            }
        }

        // Old tars mark directories by a trailing slash on a plain file.
        let v7_dir = entry.header().as_old().linkflag[0] == 0 && raw_path.ends_with(b"/");
        let meta = self.meta(entry, name)?;
        self.entries += 1;
        use tar::EntryType as T;
        match kind {
            _ if v7_dir => Ok(self.directory(&path, &meta, name)?),
            T::Directory => Ok(self.directory(&path, &meta, name)?),
            T::Regular | T::Continuous | T::GNUSparse => self.regular(entry, &path, &meta, name),
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Self::invalid(name, "symlink without a target"))?;
                Ok(self.symlink(&path, &target, &meta, name)?)
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| Self::invalid(name, "hardlink without a target"))?;
                Ok(self.hardlink(&path, &target, name)?)
            }
            T::Char | T::Block | T::Fifo => {
                if kind != T::Fifo && !self.opts.allow_devices {
                    return Err(LayerError::DeviceNotAllowed {
                        entry: name.to_string(),
                    }
                    .into());
                }
                let (major, minor) = if kind == T::Fifo {
                    (0, 0)
                } else {
                    device_numbers(entry.header(), name)?
                };
                let sflag = match kind {
                    T::Char => SFlag::S_IFCHR,
                    T::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
                Ok(self.node(&path, sflag, dev, &meta, name)?)
            }
            other => Err(Self::invalid(
                name,
                format!("unsupported entry type {:?}", other.as_byte() as char),
            )
            .into()),
        }
    }

    fn host_id(&self, id: u64, kind: &'static str, name: &str) -> Result<u32, LayerError> {
        let host = if kind == "uid" {
            self.opts.id_map.host_uid(id)
        } else {
            self.opts.id_map.host_gid(id)
        };
        host.ok_or(LayerError::Unmapped {
            entry: name.to_string(),
            kind,
            id,
        })
    }

    /// Owners, mode, mtime (PAX `mtime` for sub-second precision) and
    /// xattrs (PAX `SCHILY.xattr.*`, overlay's own names dropped).
    fn meta<R: Read>(&self, entry: &mut Entry<'_, R>, name: &str) -> Result<Meta, LayerError> {
        let h = entry.header();
        let old = h.as_old();
        let uid = self.host_id(num(h.uid(), &old.uid, name)?, "uid", name)?;
        let gid = self.host_id(num(h.gid(), &old.gid, name)?, "gid", name)?;
        let mode = num(h.mode(), &old.mode, name)? & 0o7777;
        let secs = num(h.mtime(), &old.mtime, name)?;
        let mut mtime = TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX), 0);
        if h.entry_type().is_gnu_sparse() && self.state_meta_exceeds(MAX_SPARSE_METADATA) {
            return Err(Self::invalid(name, "sparse map too large"));
        }
        let mut xattrs = Vec::new();
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|e| Self::invalid(name, e.to_string()))?
        {
            for ext in pax {
                let ext = ext.map_err(|e| Self::invalid(name, format!("bad PAX record: {e}")))?;
                let key = ext.key_bytes();
                if key == b"mtime" {
                    mtime = parse_pax_time(ext.value_bytes())
                        .ok_or_else(|| Self::invalid(name, "bad PAX mtime"))?;
                } else if let Some(attr) = key.strip_prefix(b"SCHILY.xattr.") {
                    if attr.starts_with(b"trusted.overlay.") || attr.starts_with(b"user.overlay.") {
                        tracing::debug!(entry = name, "dropping overlay xattr from layer");
                        continue;
                    }
                    xattrs.push((attr.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            mtime,
            xattrs,
        })
    }

    fn state_meta_exceeds(&self, limit: u64) -> bool {
        self.state.meta_bytes() > limit
    }

    /// Open (creating missing directories, mode 0755 and owned by the
    /// layer's root) the directory `comps`, resolved inside the root.
    fn open_dir(&self, comps: &[OsString], name: &str) -> Result<OwnedFd, LayerError> {
        if comps.is_empty() {
            return self
                .root
                .try_clone()
                .map_err(|e| LayerError::io("duplicating descriptor of", self.dest, e));
        }
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let path = join(comps);
        match open_in_root(self.root.as_fd(), &path, flags, 0) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(self.resolve_error(e, &path, name)),
        }
        let uid = self.host_id(0, "uid", name)?;
        let gid = self.host_id(0, "gid", name)?;
        let mut parent = self
            .root
            .try_clone()
            .map_err(|e| LayerError::io("duplicating descriptor of", self.dest, e))?;
        for i in 0..comps.len() {
            let prefix = join(&comps[..=i]);
            match open_in_root(self.root.as_fd(), &prefix, flags, 0) {
                Ok(fd) => {
                    parent = fd;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(self.resolve_error(e, &prefix, name)),
            }
            let comp = comps[i].as_os_str();
            // EEXIST here means a dangling symlink: not created through.
            mkdirat(&parent, comp, Mode::from_bits_truncate(0o755))
                .map_err(|e| self.resolve_error(e.into(), &prefix, name))?;
            let fd = openat(
                &parent,
                comp,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.resolve_error(e.into(), &prefix, name))?;
            let real = self.dest.join(&prefix);
            fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| LayerError::io("changing owner of", &real, e.into()))?;
            fchmod(&fd, Mode::from_bits_truncate(0o755))
                .map_err(|e| LayerError::io("changing mode of", &real, e.into()))?;
            parent = fd;
        }
        Ok(parent)
    }

    /// Open the existing directory `comps`, resolved inside the root.
    fn existing_dir(&self, comps: &[OsString]) -> io::Result<OwnedFd> {
        if comps.is_empty() {
            return self.root.try_clone();
        }
        open_in_root(
            self.root.as_fd(),
            &join(comps),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
    }

    fn resolve_error(&self, e: io::Error, path: &Path, name: &str) -> LayerError {
        if is_layer_fault(&e) {
            Self::invalid(name, format!("resolving {path:?} inside the layer: {e}"))
        } else {
            LayerError::io("resolving", self.dest.join(path), e)
        }
    }

    /// The parent directory of a non-root entry and the entry's name.
    fn parent<'p>(
        &self,
        path: &'p RelPath,
        name: &str,
    ) -> Result<(OwnedFd, &'p OsStr), LayerError> {
        let base = path
            .name()
            .ok_or_else(|| Self::invalid(name, "only a directory may name the layer root"))?;
        Ok((self.open_dir(path.parent(), name)?, base))
    }

    /// Remove what `base` names in `dir`. A directory is kept when
    /// `keep_dir` (a directory entry over a directory merges); returns
    /// whether a directory was kept.
    fn clear(
        &self,
        dir: &OwnedFd,
        base: &OsStr,
        keep_dir: bool,
        path: &RelPath,
    ) -> Result<bool, LayerError> {
        let real = || self.dest.join(path.to_path());
        let st = match fstatat(dir, base, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(LayerError::io("inspecting", real(), e.into())),
        };
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir && keep_dir {
            return Ok(true);
        }
        if let Some(rec) = self.state.split.borrow_mut().as_mut() {
            rec.removing(self.root.as_fd(), &path.to_path());
        }
        if is_dir {
            remove_tree(dir.as_fd(), base).map_err(|e| LayerError::io("removing", real(), e))?;
        } else {
            unlinkat(dir, base, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| LayerError::io("removing", real(), e.into()))?;
        }
        Ok(false)
    }

    /// Owner, mode and xattrs through a descriptor of a file or directory.
    fn set_meta_fd(
        &self,
        fd: BorrowedFd<'_>,
        meta: &Meta,
        path: &RelPath,
    ) -> Result<(), LayerError> {
        let real = || self.dest.join(path.to_path());
        fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| LayerError::io("changing owner of", real(), e.into()))?;
        // After chown, which clears set-id bits.
        fchmod(fd, Mode::from_bits_truncate(meta.mode))
            .map_err(|e| LayerError::io("changing mode of", real(), e.into()))?;
        for (k, v) in &meta.xattrs {
            // After chown, which clears security.capability.
            let r = berth_sys::xattr::fset(fd, k, v);
            self.xattr_result(r, k, path)?;
        }
        Ok(())
    }

    /// Owner, xattrs and times of a symlink or node, by name in `dir`
    /// without following it.
    fn set_meta_at(
        &self,
        dir: &OwnedFd,
        base: &OsStr,
        meta: &Meta,
        path: &RelPath,
    ) -> Result<(), LayerError> {
        let real = || self.dest.join(path.to_path());
        fchownat(
            dir,
            base,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| LayerError::io("changing owner of", real(), e.into()))?;
        if !meta.xattrs.is_empty() {
            // The parent's magic link is the resolved directory; l*xattr
            // does not follow the last component.
            let p = proc_path(dir.as_fd()).join(base);
            for (k, v) in &meta.xattrs {
                let r = berth_sys::xattr::lset(&p, k, v);
                self.xattr_result(r, k, path)?;
            }
        }
        utimensat(
            dir,
            base,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| LayerError::io("setting times of", real(), e.into()))
    }

    /// security.capability must stick; other xattrs are best effort (a
    /// file system without user xattrs, an unprivileged trusted.* …).
    fn xattr_result(
        &self,
        r: io::Result<()>,
        key: &[u8],
        path: &RelPath,
    ) -> Result<(), LayerError> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if key == b"security.capability" => Err(LayerError::io(
                "setting security.capability on",
                self.dest.join(path.to_path()),
                e,
            )),
            Err(e) => {
                tracing::debug!(
                    path = %path.to_path().display(),
                    xattr = %String::from_utf8_lossy(key),
                    error = %e,
                    "xattr not set"
                );
                Ok(())
            }
        }
    }

    fn directory(&mut self, path: &RelPath, meta: &Meta, name: &str) -> Result<(), LayerError> {
        let real = || self.dest.join(path.to_path());
        let fd = if path.is_root() {
            openat(
                &self.root,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| LayerError::io("opening", self.dest, e.into()))?
        } else {
            let (dir, base) = self.parent(path, name)?;
            if !self.clear(&dir, base, true, path)? {
                mkdirat(&dir, base, Mode::from_bits_truncate(0o700))
                    .map_err(|e| LayerError::io("creating directory", real(), e.into()))?;
            }
            openat(
                &dir,
                base,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| LayerError::io("opening", real(), e.into()))?
        };
        self.set_meta_fd(fd.as_fd(), meta, path)?;
        self.dir_times.insert(path.to_path(), meta.mtime);
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        path: &RelPath,
        meta: &Meta,
        name: &str,
    ) -> Result<(), Stop> {
        let real = || self.dest.join(path.to_path());
        let (dir, base) = self.parent(path, name)?;
        let create = || {
            openat(
                &dir,
                base,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        };
        // O_EXCL never opens (or follows) what is there: try first, and
        // clear the name only when it is taken.
        let fd = match create() {
            Err(Errno::EEXIST) => {
                self.clear(&dir, base, false, path)?;
                create()
            }
            r => r,
        }
        .map_err(|e| LayerError::io("creating", real(), e.into()))?;
        let file = File::from(fd);
        let size = entry.size();
        if !entry.header().entry_type().is_gnu_sparse() {
            if let Some(rec) = self.state.split.borrow_mut().as_mut() {
                let pos = self.state.total.get();
                rec.mark(pos, entry.raw_file_position(), size, path.to_path());
            }
        }
        let copied = self.copy_data(entry, &file, path, name);
        if copied.is_err() {
            if let Some(rec) = self.state.split.borrow_mut().as_mut() {
                rec.unmark();
            }
        }
        let (written, end_written) = copied?;
        self.consumed = written;
        if written != size {
            return Err(LayerError::Truncated {
                entry: Some(name.to_string()),
            }
            .into());
        }
        if !end_written && size > 0 {
            // Trailing zeros were skipped: set the length (a hole at the end).
            file.set_len(size)
                .map_err(|e| LayerError::io("setting length of", real(), e))?;
        }
        self.set_meta_fd(file.as_fd(), meta, path)?;
        futimens(&file, &meta.mtime, &meta.mtime)
            .map_err(|e| LayerError::io("setting times of", real(), e.into()))?;
        if !self.opts.sync && size >= WRITEBACK_MIN {
            // The caller syncs later: start the disk on this file now, so
            // that the sync overlaps with unpacking (a hint; errors don't
            // matter, the sync reports real ones).
            let _ = berth_sys::fd::start_writeback(file.as_fd());
        }
        Ok(())
    }

    /// Copy an entry's data to `file`, leaving aligned blocks of zeros as
    /// holes; returns the bytes read and whether the last of them were
    /// written (so that the file has its full length already).
    fn copy_data<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        file: &File,
        path: &RelPath,
        name: &str,
    ) -> Result<(u64, bool), Stop> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(COPY_BUF, 0);
        let result = (|| {
            let mut off = 0u64;
            let mut end_written = false;
            loop {
                let n = compress::read_full(entry, &mut buf).map_err(|err| Stop::Stream {
                    entry: Some(name.to_string()),
                    after: None,
                    err,
                })?;
                if n == 0 {
                    return Ok((off, end_written));
                }
                self.count_apparent(n as u64)?;
                // `off` is a multiple of COPY_BUF except after the last
                // read, so blocks line up with the file's blocks.
                end_written = write_skipping_zeros(file, &buf[..n], off)
                    .map_err(|e| LayerError::io("writing", self.dest.join(path.to_path()), e))?;
                off += n as u64;
            }
        })();
        self.buf = buf;
        result
    }

    fn symlink(
        &mut self,
        path: &RelPath,
        target: &[u8],
        meta: &Meta,
        name: &str,
    ) -> Result<(), LayerError> {
        if target.contains(&0) {
            return Err(Self::invalid(name, "symlink target holds a NUL byte"));
        }
        let (dir, base) = self.parent(path, name)?;
        self.clear(&dir, base, false, path)?;
        symlinkat(OsStr::from_bytes(target), &dir, base).map_err(|e| {
            LayerError::io("creating symlink", self.dest.join(path.to_path()), e.into())
        })?;
        self.set_meta_at(&dir, base, meta, path)
    }

    /// A hardlink to an entry that already exists in this layer. Its own
    /// header's metadata is ignored: the inode has its metadata already.
    fn hardlink(&mut self, path: &RelPath, target: &[u8], name: &str) -> Result<(), LayerError> {
        let target = RelPath::parse(target).map_err(|why| Self::invalid(name, why))?;
        if target.is_root() {
            return Err(Self::invalid(name, "hardlink to the layer root"));
        }
        if target == *path {
            return Err(Self::invalid(name, "hardlink to itself"));
        }
        let tpath = target.to_path();
        let missing = || {
            Self::invalid(
                name,
                format!("hardlink target {tpath:?} is not a file of this layer"),
            )
        };
        let tdir = match self.existing_dir(target.parent()) {
            Ok(fd) => fd,
            Err(e) if is_layer_fault(&e) => return Err(missing()),
            Err(e) => return Err(LayerError::io("resolving", self.dest.join(&tpath), e)),
        };
        let tbase = target.name().ok_or_else(missing)?;
        match fstatat(&tdir, tbase, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => {}
            Ok(_) => {
                return Err(Self::invalid(
                    name,
                    format!("hardlink target {tpath:?} is a directory"),
                ))
            }
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Err(missing()),
            Err(e) => {
                return Err(LayerError::io(
                    "inspecting",
                    self.dest.join(&tpath),
                    e.into(),
                ))
            }
        }
        let (dir, base) = self.parent(path, name)?;
        self.clear(&dir, base, false, path)?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
        linkat(&tdir, tbase, &dir, base, nix::fcntl::AtFlags::empty()).map_err(|e| {
            let e = io::Error::from(e);
            if is_layer_fault(&e) {
                missing()
            } else {
                LayerError::io("creating hardlink", self.dest.join(path.to_path()), e)
            }
        })
    }

    fn node(
        &mut self,
        path: &RelPath,
        kind: SFlag,
        dev: libc::dev_t,
        meta: &Meta,
        name: &str,
    ) -> Result<(), LayerError> {
        let real = || self.dest.join(path.to_path());
        let (dir, base) = self.parent(path, name)?;
        self.clear(&dir, base, false, path)?;
        mknodat(&dir, base, kind, Mode::from_bits_truncate(0o600), dev)
            .map_err(|e| LayerError::io("creating node", real(), e.into()))?;
        fchownat(
            &dir,
            base,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| LayerError::io("changing owner of", real(), e.into()))?;
        // The node was just made by us in a directory only we write, so
        // following the (non-symlink) last component is safe.
        fchmodat(
            &dir,
            base,
            Mode::from_bits_truncate(meta.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| LayerError::io("changing mode of", real(), e.into()))?;
        self.set_meta_at(&dir, base, meta, path)
    }

    /// `dir/.wh.name`: remove `name` from this layer and leave an overlay
    /// whiteout (a 0/0 character device) in its place.
    fn whiteout(
        &mut self,
        path: &RelPath,
        hidden: &OsStr,
        meta: &Meta,
        name: &str,
    ) -> Result<(), LayerError> {
        let dir = self.open_dir(path.parent(), name)?;
        let mut target = path.parent().to_vec();
        target.push(hidden.to_os_string());
        let target = RelPath { comps: target };
        let real = || self.dest.join(target.to_path());
        self.clear(&dir, hidden, false, &target)?;
        mknodat(&dir, hidden, SFlag::S_IFCHR, Mode::empty(), 0)
            .map_err(|e| LayerError::io("creating whiteout", real(), e.into()))?;
        // Owner and mtime of the marker entry, so that a diff of this
        // directory writes the same marker back; no xattrs on whiteouts.
        let meta = Meta {
            uid: meta.uid,
            gid: meta.gid,
            mode: 0,
            mtime: meta.mtime,
            xattrs: Vec::new(),
        };
        self.set_meta_at(&dir, hidden, &meta, &target)
    }

    /// `dir/.wh..wh..opq`: mark `dir` opaque.
    fn opaque(&mut self, path: &RelPath, name: &str) -> Result<(), LayerError> {
        let dir = self.open_dir(path.parent(), name)?;
        let real = || self.dest.join(join(path.parent()));
        let fd = openat(
            &dir,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| LayerError::io("opening", real(), e.into()))?;
        let key: &[u8] = if self.opts.userxattr {
            b"user.overlay.opaque"
        } else {
            b"trusted.overlay.opaque"
        };
        berth_sys::xattr::fset(fd.as_fd(), key, b"y")
            .map_err(|e| LayerError::io("marking opaque", real(), e))
    }
}

/// Remove the directory `name` in `dir` and everything below it, never
/// following a symlink.
fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut children = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            children.push(OsString::from_vec(n.to_vec()));
        }
    }
    for child in children {
        match unlinkat(&d, child.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::EISDIR) => remove_tree(d.as_fd(), &child)?,
            Err(e) => return Err(e.into()),
        }
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    Ok(())
}

/// A numeric header field; a blank one (all NUL or spaces, as some writers
/// leave unused fields) is zero, as Go's archive/tar reads it.
fn num<T: Default>(parsed: io::Result<T>, field: &[u8], name: &str) -> Result<T, LayerError> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if field.iter().all(|b| *b == 0 || *b == b' ') => Ok(T::default()),
        Err(e) => Err(LayerError::InvalidEntry {
            entry: name.to_string(),
            why: e.to_string(),
        }),
    }
}

/// Major and minor numbers of a device entry (zero in a header without
/// device fields).
fn device_numbers(h: &tar::Header, name: &str) -> Result<(u32, u32), LayerError> {
    let (fmaj, fmin) = if let Some(u) = h.as_ustar() {
        (u.dev_major, u.dev_minor)
    } else if let Some(g) = h.as_gnu() {
        (g.dev_major, g.dev_minor)
    } else {
        return Ok((0, 0));
    };
    let major = num(h.device_major().map(Option::unwrap_or_default), &fmaj, name)?;
    let minor = num(h.device_minor().map(Option::unwrap_or_default), &fmin, name)?;
    Ok((major, minor))
}

fn is_zero(block: &[u8]) -> bool {
    let mut chunks = block.chunks_exact(64);
    for c in &mut chunks {
        if c.iter().fold(0u8, |a, b| a | b) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|b| *b == 0)
}

/// Write `data` at `off`, skipping blocks of zeros (they stay holes in a
/// freshly created file); returns whether the end of `data` was written.
fn write_skipping_zeros(file: &File, data: &[u8], off: u64) -> io::Result<bool> {
    let mut run: Option<usize> = None;
    for (i, block) in data.chunks(HOLE_BLOCK).enumerate() {
        let at = i * HOLE_BLOCK;
        if is_zero(block) {
            if let Some(start) = run.take() {
                file.write_all_at(&data[start..at], off + start as u64)?;
            }
        } else if run.is_none() {
            run = Some(at);
        }
    }
    match run {
        Some(start) => {
            file.write_all_at(&data[start..], off + start as u64)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// A PAX time: `[-]seconds[.fraction]`.
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(if !neg {
        TimeSpec::new(secs, nanos)
    } else if nanos == 0 {
        TimeSpec::new(-secs, 0)
    } else {
        TimeSpec::new(-secs - 1, 1_000_000_000 - nanos)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(p: &RelPath) -> Vec<&str> {
        p.comps.iter().map(|c| c.to_str().unwrap()).collect()
    }

    #[test]
    fn names_are_normalised_and_clamped() {
        for (raw, want) in [
            ("etc/passwd", vec!["etc", "passwd"]),
            ("/etc/passwd", vec!["etc", "passwd"]),
            ("./etc//passwd/", vec!["etc", "passwd"]),
            ("../../etc/passwd", vec!["etc", "passwd"]),
            ("a/../../b", vec!["b"]),
            ("a/./b/../c", vec!["a", "c"]),
            ("./", vec![]),
            ("..", vec![]),
            ("/", vec![]),
        ] {
            assert_eq!(
                comps(&RelPath::parse(raw.as_bytes()).unwrap()),
                want,
                "{raw}"
            );
        }
        assert!(RelPath::parse(b"a\0b").is_err());
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            parse_pax_time(b"1700000000"),
            Some(TimeSpec::new(1_700_000_000, 0))
        );
        assert_eq!(parse_pax_time(b"1.5"), Some(TimeSpec::new(1, 500_000_000)));
        assert_eq!(
            parse_pax_time(b"1.1234567891"),
            Some(TimeSpec::new(1, 123_456_789))
        );
        assert_eq!(
            parse_pax_time(b"-1.25"),
            Some(TimeSpec::new(-2, 750_000_000))
        );
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"1.x"), None);
        assert_eq!(parse_pax_time(b""), None);
    }

    #[test]
    fn zero_blocks() {
        assert!(is_zero(&[0u8; 4096]));
        let mut b = [0u8; 4096];
        b[4095] = 1;
        assert!(!is_zero(&b));
        b[4095] = 0;
        b[3] = 1;
        assert!(!is_zero(&b));
        assert!(is_zero(&[]));
    }
}
