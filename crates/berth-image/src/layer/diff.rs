//! Diff: an overlay upper directory → an OCI layer tar with whiteouts.
//!
//! The output is deterministic for a given tree: names sorted bytewise,
//! POSIX ustar headers with PAX records only where needed (long names,
//! large ids, sizes or times, xattrs), mtimes in whole seconds (as Docker
//! writes them), no atime/ctime, empty user and group names, and the PAX
//! header entries themselves carry fixed metadata. The root directory itself
//! is not an entry (as with Docker).
//!
//! The walk opens every directory and file relative to its parent's
//! descriptor with `O_NOFOLLOW`, so a tree that changes while it is read
//! (a running container) cannot make the walk leave it.

use super::compress::{Encoder, HashingWriter};
use super::{pax_record, MAX_OCTAL_12, MAX_OCTAL_8};
use super::{DiffOptions, DiffStats, LayerError};
use berth_sys::fd::proc_path;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

/// Write the changes held in the overlay upper directory `upper` to `out`
/// as a layer tar (compressed as `opts` says).
///
/// Character devices 0/0 (overlay whiteouts) become `.wh.<name>` entries and
/// a directory marked `trusted.overlay.opaque=y` (or `user.overlay.opaque`)
/// gets a `.wh..wh..opq` entry after its own. Overlay's own xattrs
/// (`trusted.overlay.*`, `user.overlay.*`) are not written. Sockets are
/// skipped. An upper that holds metadata-only copies or redirected
/// directories (overlay mounted with `metacopy=on` or `redirect_dir=on`)
/// cannot be diffed this way and is refused.
pub fn diff(upper: &Path, out: impl Write, opts: &DiffOptions) -> Result<DiffStats, LayerError> {
    let root = nix::fcntl::open(
        upper,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::io("opening", upper, e.into()))?;

    let encoder = Encoder::new(opts.compression, opts.level, HashingWriter::new(out))
        .map_err(LayerError::Write)?;
    let tar_out = BufWriter::with_capacity(1 << 20, HashingWriter::new(encoder));
    let mut walker = Walker {
        upper,
        opts,
        builder: tar::Builder::new(tar_out),
        links: HashMap::new(),
        entries: 0,
    };
    walker.walk(root.as_fd(), &mut Vec::new())?;
    let entries = walker.entries;

    let tar_out = walker.builder.into_inner().map_err(LayerError::Write)?;
    let hashing = tar_out
        .into_inner()
        .map_err(|e| LayerError::Write(e.into_error()))?;
    let (encoder, diff_id, uncompressed_size) = hashing.finish();
    let outer = encoder.finish().map_err(LayerError::Write)?;
    let (mut out, digest, size) = outer.finish();
    out.flush().map_err(LayerError::Write)?;
    Ok(DiffStats {
        diff_id,
        uncompressed_size,
        digest,
        size,
        entries,
    })
}

type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

struct Walker<'a, W: Write> {
    upper: &'a Path,
    opts: &'a DiffOptions,
    builder: tar::Builder<W>,
    /// First path written for each (device, inode) with several links.
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
}

fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

fn unsupported_xattr(name: &[u8]) -> bool {
    matches!(
        name,
        b"trusted.overlay.metacopy"
            | b"user.overlay.metacopy"
            | b"trusted.overlay.redirect"
            | b"user.overlay.redirect"
    )
}

/// Xattrs of a file: the names from `list`, each value from `get`; an
/// unsupported or empty xattr namespace is no xattrs.
fn read_xattrs(
    list: impl FnOnce() -> io::Result<Vec<Vec<u8>>>,
    get: impl Fn(&[u8]) -> io::Result<Vec<u8>>,
) -> io::Result<Xattrs> {
    let mut names = match list() {
        Ok(n) => n,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        match get(&n) {
            Ok(v) => out.push((n, v)),
            // Removed meanwhile, or a namespace we may not read.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA) | Some(libc::EPERM)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// What one entry is, besides its stat data.
enum Kind<'k> {
    Dir,
    File,
    Symlink(&'k [u8]),
    Link(&'k [u8]),
    Node(EntryType, u32, u32),
    /// A `.wh.` or `.wh..wh..opq` marker.
    Whiteout,
}

impl<W: Write> Walker<'_, W> {
    fn real(&self, rel: &[u8]) -> PathBuf {
        self.upper.join(OsStr::from_bytes(rel))
    }

    /// Write the entries of the directory `dir` (path `rel`, ending in `/`
    /// unless it is the root) in sorted order.
    fn walk(&mut self, dir: BorrowedFd<'_>, rel: &mut Vec<u8>) -> Result<(), LayerError> {
        let mut names = {
            let dup = dir
                .try_clone_to_owned()
                .map_err(|e| LayerError::io("duplicating descriptor of", self.real(rel), e))?;
            let mut d = nix::dir::Dir::from_fd(dup)
                .map_err(|e| LayerError::io("reading directory", self.real(rel), e.into()))?;
            let mut names = Vec::new();
            for e in d.iter() {
                let e =
                    e.map_err(|e| LayerError::io("reading directory", self.real(rel), e.into()))?;
                let n = e.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
            names
        };
        names.sort();
        let base_len = rel.len();
        for name in names {
            rel.truncate(base_len);
            rel.extend_from_slice(&name);
            self.one(dir, OsStr::from_bytes(&name), rel)?;
        }
        rel.truncate(base_len);
        Ok(())
    }

    fn one(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &mut Vec<u8>,
    ) -> Result<(), LayerError> {
        // A layer path longer than PATH_MAX could not be applied anyway;
        // the bound also bounds the depth of this recursive walk.
        if rel.len() >= libc::PATH_MAX as usize {
            return Err(LayerError::Unsupported {
                path: self.real(&rel[..64]),
                why: format!("a path of {} bytes is too long for a layer", rel.len()),
            });
        }
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()), // removed while we walk
            Err(e) => return Err(LayerError::io("inspecting", self.real(rel), e.into())),
        };
        let fmt = st.st_mode & libc::S_IFMT;
        match fmt {
            libc::S_IFDIR => {
                let fd = self.open(dir, name, rel, OFlag::O_DIRECTORY)?;
                let st = fstat(&fd)
                    .map_err(|e| LayerError::io("inspecting", self.real(rel), e.into()))?;
                let all = read_xattrs(
                    || berth_sys::xattr::flist(fd.as_fd()),
                    |n| berth_sys::xattr::fget(fd.as_fd(), n),
                )
                .map_err(|e| LayerError::io("reading xattrs of", self.real(rel), e))?;
                let opaque = all.iter().any(|(k, v)| {
                    (k == b"trusted.overlay.opaque" || k == b"user.overlay.opaque") && v == b"y"
                });
                let xattrs = self.keep_xattrs(all, rel)?;
                rel.push(b'/');
                self.emit(rel, &st, Kind::Dir, &xattrs, None)?;
                if opaque {
                    let base = rel.len();
                    rel.extend_from_slice(b".wh..wh..opq");
                    self.emit(rel, &st, Kind::Whiteout, &[], None)?;
                    rel.truncate(base);
                }
                self.walk(fd.as_fd(), rel)?;
                rel.pop();
            }
            libc::S_IFCHR if st.st_rdev == 0 => {
                // An overlay whiteout (possibly one of several links to a
                // shared whiteout inode: never a hardlink entry).
                let split = rel.iter().rposition(|b| *b == b'/').map_or(0, |i| i + 1);
                let mut wh = rel[..split].to_vec();
                wh.extend_from_slice(b".wh.");
                wh.extend_from_slice(&rel[split..]);
                self.emit(&wh, &st, Kind::Whiteout, &[], None)?;
            }
            libc::S_IFSOCK => {
                tracing::debug!(path = %self.real(rel).display(), "socket not written to the layer");
            }
            _ => {
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key).cloned() {
                        return self.emit(rel, &st, Kind::Link(&first), &[], None);
                    }
                    self.links.insert(key, rel.clone());
                }
                match fmt {
                    libc::S_IFREG => self.file(dir, name, rel)?,
                    libc::S_IFLNK => {
                        let target = readlinkat(dir, name).map_err(|e| {
                            LayerError::io("reading symlink", self.real(rel), e.into())
                        })?;
                        let xattrs = self.path_xattrs(dir, name, rel)?;
                        self.emit(rel, &st, Kind::Symlink(target.as_bytes()), &xattrs, None)?;
                    }
                    libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                        let kind = match fmt {
                            libc::S_IFCHR => EntryType::Char,
                            libc::S_IFBLK => EntryType::Block,
                            _ => EntryType::Fifo,
                        };
                        let (major, minor) = if fmt == libc::S_IFIFO {
                            (0, 0)
                        } else {
                            (libc::major(st.st_rdev), libc::minor(st.st_rdev))
                        };
                        let xattrs = self.path_xattrs(dir, name, rel)?;
                        self.emit(rel, &st, Kind::Node(kind, major, minor), &xattrs, None)?;
                    }
                    _ => {
                        return Err(LayerError::Unsupported {
                            path: self.real(rel),
                            why: format!("unknown file type {fmt:o}"),
                        })
                    }
                }
            }
        }
        Ok(())
    }

    fn open(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &[u8],
        extra: OFlag,
    ) -> Result<OwnedFd, LayerError> {
        openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | extra,
            Mode::empty(),
        )
        .map_err(|e| LayerError::io("opening", self.real(rel), e.into()))
    }

    /// Xattrs of a symlink or node, read without following it.
    fn path_xattrs(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &[u8],
    ) -> Result<Xattrs, LayerError> {
        let p = proc_path(dir).join(name);
        let all = read_xattrs(
            || berth_sys::xattr::llist(&p),
            |n| berth_sys::xattr::lget(&p, n),
        )
        .map_err(|e| LayerError::io("reading xattrs of", self.real(rel), e))?;
        self.keep_xattrs(all, rel)
    }

    /// Drop overlay's own xattrs; refuse metacopy and redirect ones.
    fn keep_xattrs(&self, all: Xattrs, rel: &[u8]) -> Result<Xattrs, LayerError> {
        if let Some((k, _)) = all.iter().find(|(k, _)| unsupported_xattr(k)) {
            return Err(LayerError::Unsupported {
                path: self.real(rel),
                why: format!(
                    "overlay {} is set (upper dirs of overlays mounted with metacopy or redirect_dir cannot be diffed)",
                    String::from_utf8_lossy(k)
                ),
            });
        }
        Ok(all
            .into_iter()
            .filter(|(k, _)| !is_overlay_xattr(k))
            .collect())
    }

    fn file(&mut self, dir: BorrowedFd<'_>, name: &OsStr, rel: &[u8]) -> Result<(), LayerError> {
        let fd = self.open(dir, name, rel, OFlag::empty())?;
        let st = fstat(&fd).map_err(|e| LayerError::io("inspecting", self.real(rel), e.into()))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(LayerError::Unsupported {
                path: self.real(rel),
                why: "changed while the layer was written".into(),
            });
        }
        let xattrs = read_xattrs(
            || berth_sys::xattr::flist(fd.as_fd()),
            |n| berth_sys::xattr::fget(fd.as_fd(), n),
        )
        .map_err(|e| LayerError::io("reading xattrs of", self.real(rel), e))?;
        let xattrs = self.keep_xattrs(xattrs, rel)?;
        let file = File::from(fd);
        self.emit(rel, &st, Kind::File, &xattrs, Some(file))
    }

    /// Write the header(s) and data of one entry.
    fn emit(
        &mut self,
        rel: &[u8],
        st: &FileStat,
        kind: Kind<'_>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        data: Option<File>,
    ) -> Result<(), LayerError> {
        let mut pax = Vec::new();
        let mut h = Header::new_ustar();
        let (etype, size, mode) = match &kind {
            Kind::Dir => (EntryType::Directory, 0, st.st_mode & 0o7777),
            Kind::File => (EntryType::Regular, st.st_size as u64, st.st_mode & 0o7777),
            Kind::Symlink(_) => (EntryType::Symlink, 0, st.st_mode & 0o7777),
            Kind::Link(_) => (EntryType::Link, 0, st.st_mode & 0o7777),
            Kind::Node(t, _, _) => (*t, 0, st.st_mode & 0o7777),
            Kind::Whiteout => (EntryType::Regular, 0, 0),
        };
        h.set_entry_type(etype);
        h.set_mode(mode);

        if rel.len() <= 100 {
            h.as_old_mut().name[..rel.len()].copy_from_slice(rel);
        } else {
            pax_record(&mut pax, b"path", rel);
            h.as_old_mut().name.copy_from_slice(&rel[..100]);
        }
        if let Kind::Symlink(t) | Kind::Link(t) = kind {
            if t.len() <= 100 {
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
            } else {
                pax_record(&mut pax, b"linkpath", t);
                h.as_old_mut().linkname.copy_from_slice(&t[..100]);
            }
        }

        let unmapped = |kind: &'static str, id: u32| LayerError::Unmapped {
            entry: String::from_utf8_lossy(rel).into_owned(),
            kind,
            id: u64::from(id),
        };
        let uid = self
            .opts
            .id_map
            .container_uid(st.st_uid)
            .ok_or_else(|| unmapped("uid", st.st_uid))?;
        let gid = self
            .opts
            .id_map
            .container_gid(st.st_gid)
            .ok_or_else(|| unmapped("gid", st.st_gid))?;
        for (key, id, field) in [(&b"uid"[..], uid, 0), (&b"gid"[..], gid, 1)] {
            let id = u64::from(id);
            let v = if id > MAX_OCTAL_8 {
                pax_record(&mut pax, key, id.to_string().as_bytes());
                0
            } else {
                id
            };
            if field == 0 {
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
        let mtime = st.st_mtime;
        if mtime < 0 || mtime as u64 > MAX_OCTAL_12 {
            pax_record(&mut pax, b"mtime", mtime.to_string().as_bytes());
            h.set_mtime(0);
        } else {
            h.set_mtime(mtime as u64);
        }
        if let Kind::Node(EntryType::Char | EntryType::Block, major, minor) = kind {
            h.set_device_major(major).map_err(LayerError::Write)?;
            h.set_device_minor(minor).map_err(LayerError::Write)?;
        }
        for (k, v) in xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        h.set_cksum();

        if !pax.is_empty() {
            let mut ph = Header::new_ustar();
            let pname = b"././@PaxHeader";
            ph.as_old_mut().name[..pname.len()].copy_from_slice(pname);
            ph.set_entry_type(EntryType::XHeader);
            ph.set_mode(0o644);
            ph.set_uid(0);
            ph.set_gid(0);
            ph.set_mtime(0);
            ph.set_size(pax.len() as u64);
            ph.set_cksum();
            self.builder
                .append(&ph, &pax[..])
                .map_err(LayerError::Write)?;
        }
        match data {
            Some(file) => {
                let reader = Exact {
                    inner: file.take(size),
                    left: size,
                };
                self.builder.append(&h, reader).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        LayerError::Unsupported {
                            path: self.real(rel),
                            why: "file shrank while the layer was written".into(),
                        }
                    } else {
                        LayerError::Write(e)
                    }
                })?;
            }
            None => self
                .builder
                .append(&h, io::empty())
                .map_err(LayerError::Write)?,
        }
        self.entries += 1;
        Ok(())
    }
}

/// Yields exactly `left` bytes or fails: a file that shrinks under us must
/// not produce a tar whose header lies about the size.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"a");
        assert_eq!(v, b"9 path=a\n");
        let mut v = Vec::new();
        // 4 + 94 + 3 = 101 bytes besides the length: three digits, 104.
        pax_record(&mut v, b"path", &[b'x'; 94]);
        assert!(v.starts_with(b"104 path="));
        assert_eq!(v.len(), 104);
        // 98 besides the length: two digits would make 100, which has
        // three, so the length is 101.
        let mut v = Vec::new();
        pax_record(&mut v, b"path", &[b'x'; 91]);
        assert!(v.starts_with(b"101 path="));
        let len: usize = std::str::from_utf8(&v[..v.iter().position(|b| *b == b' ').unwrap()])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, v.len());
    }
}
