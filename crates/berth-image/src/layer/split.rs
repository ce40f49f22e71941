//! Tar split: what it takes to give back the exact bytes of a layer tar
//! from its unpacked files, so a layer that arrived uncompressed is stored
//! once (its files) rather than twice (its files and its tar).
//!
//! While [`apply`](super::apply) reads a tar it records every byte that is
//! not the data of a regular file written to disk as-is — headers, PAX
//! records, long names, padding, sparse data, the end-of-archive blocks and
//! whatever follows them — into `tar-split.zst`, and for each file it wrote
//! a reference (where in that byte stream the data goes, how long, which
//! path) into `tar-split.idx`. A file that a later entry of the same layer
//! replaces or removes is copied to `tar-split.stash` first, so duplicate
//! entries still come back byte for byte.
//!
//! [`reassemble`] streams the tar back from these and the unpacked
//! directory and checks the result against the diff ID it recorded: a layer
//! whose files changed is an error, never a wrong tar.

use super::LayerError;
use crate::digest::{Digest, Hasher};
use berth_sys::fd::open_in_root;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The byte stream without file data (zstd).
pub const RAW_FILE: &str = "tar-split.zst";
/// The references to file data (zstd).
pub const INDEX_FILE: &str = "tar-split.idx";
/// Data of files that were replaced within their own layer.
pub const STASH_FILE: &str = "tar-split.stash";

const MAGIC: &[u8; 8] = b"BSPLIT01";
const KIND_FILE: u8 = 0;
const KIND_STASH: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// A file of the layer, by its path below the layer root.
    File(PathBuf),
    /// Bytes at this offset of the stash file.
    Stash(u64),
}

#[derive(Debug, Clone)]
struct Ref {
    /// Offset in the raw stream where the data goes.
    at: u64,
    size: u64,
    source: Source,
}

/// Records a tar stream as it is read. Errors are kept and reported by
/// [`finish`](Recorder::finish), so that the reader never fails because of
/// the recording.
pub(super) struct Recorder {
    dir: PathBuf,
    raw: Option<zstd::Encoder<'static, BufWriter<File>>>,
    /// Bytes written to the raw stream.
    raw_len: u64,
    /// The stream range (start, end) of the data of the file being written.
    skip: Option<(u64, u64)>,
    refs: Vec<Ref>,
    /// The reference of each path that still holds its data.
    by_path: BTreeMap<PathBuf, usize>,
    stash: Option<File>,
    stash_len: u64,
    error: Option<io::Error>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dir", &self.dir)
            .field("raw_len", &self.raw_len)
            .field("refs", &self.refs.len())
            .finish()
    }
}

fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

impl Recorder {
    /// Start recording into `dir` (which must not hold a split already).
    pub(super) fn new(dir: &Path) -> Result<Recorder, LayerError> {
        let path = dir.join(RAW_FILE);
        let file = create(&path).map_err(|e| LayerError::io("creating", &path, e))?;
        let raw = zstd::Encoder::new(BufWriter::with_capacity(256 << 10, file), 3)
            .map_err(|e| LayerError::io("creating", &path, e))?;
        Ok(Recorder {
            dir: dir.to_path_buf(),
            raw: Some(raw),
            raw_len: 0,
            skip: None,
            refs: Vec::new(),
            by_path: BTreeMap::new(),
            stash: None,
            stash_len: 0,
            error: None,
        })
    }

    fn keep_error(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            if self.error.is_none() {
                self.error = Some(e);
            }
        }
    }

    fn write_raw(&mut self, data: &[u8]) {
        if data.is_empty() || self.error.is_some() {
            return;
        }
        let r = match self.raw.as_mut() {
            Some(w) => w.write_all(data),
            None => Ok(()),
        };
        self.raw_len += data.len() as u64;
        self.keep_error(r);
    }

    /// Bytes `data` of the uncompressed stream, read at stream offset `pos`.
    pub(super) fn feed(&mut self, pos: u64, data: &[u8]) {
        let end = pos + data.len() as u64;
        match self.skip {
            Some((s, e)) if s < end && e > pos => {
                let cut_from = (s.max(pos) - pos) as usize;
                let cut_to = (e.min(end) - pos) as usize;
                self.write_raw(&data[..cut_from]);
                self.write_raw(&data[cut_to..]);
                if e <= end {
                    self.skip = None;
                }
            }
            _ => self.write_raw(data),
        }
    }

    /// The data of the next `size` bytes, starting at stream offset `start`
    /// (where the stream is now, `pos`), is the file `path`'s.
    pub(super) fn mark(&mut self, pos: u64, start: u64, size: u64, path: PathBuf) {
        if size == 0 || pos != start || self.skip.is_some() {
            // Not where we expect to be: the bytes simply go to the raw
            // stream, which is always correct.
            return;
        }
        self.skip = Some((start, start + size));
        let i = self.refs.len();
        self.refs.push(Ref {
            at: self.raw_len,
            size,
            source: Source::File(path.clone()),
        });
        self.by_path.insert(path, i);
    }

    /// The file being written was cut short: its data is not a reference
    /// (the apply fails anyway, this only keeps the state consistent).
    pub(super) fn unmark(&mut self) {
        self.skip = None;
    }

    /// `path` (a file, or a directory and everything below it) is about to
    /// be removed: move the data of the files it holds to the stash.
    pub(super) fn removing(&mut self, root: BorrowedFd<'_>, path: &Path) {
        if self.by_path.is_empty() {
            return;
        }
        let mut doomed: Vec<(PathBuf, usize)> = Vec::new();
        if let Some(&i) = self.by_path.get(path) {
            doomed.push((path.to_path_buf(), i));
        }
        // Everything below `path/`: byte order sorts "a/…" right after "a".
        let mut prefix = path.as_os_str().as_bytes().to_vec();
        prefix.push(b'/');
        for (p, &i) in self
            .by_path
            .range::<Path, _>((std::ops::Bound::Excluded(path), std::ops::Bound::Unbounded))
        {
            if !p.as_os_str().as_bytes().starts_with(&prefix) {
                if p.as_os_str().as_bytes() > prefix.as_slice() {
                    break;
                }
                continue;
            }
            doomed.push((p.clone(), i));
        }
        for (p, i) in doomed {
            self.by_path.remove(&p);
            let r = self.stash_file(root, &p, i);
            self.keep_error(r);
        }
    }

    fn stash_file(&mut self, root: BorrowedFd<'_>, path: &Path, i: usize) -> io::Result<()> {
        if self.stash.is_none() {
            self.stash = Some(create(&self.dir.join(STASH_FILE))?);
        }
        let size = self.refs[i].size;
        let fd = open_in_root(root, path, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
        let mut src = File::from(fd).take(size);
        let stash = self.stash.as_mut().expect("created above");
        let off = self.stash_len;
        let mut w = BufWriter::new(&mut *stash);
        let n = io::copy(&mut src, &mut w)?;
        w.flush()?;
        drop(w);
        if n != size {
            return Err(io::Error::other(format!(
                "{}: {n} bytes where {size} were written",
                path.display()
            )));
        }
        self.stash_len += n;
        self.refs[i].source = Source::Stash(off);
        Ok(())
    }

    /// Write the index, close the files. `total` is the size of the tar.
    pub(super) fn finish(mut self, diff_id: &Digest, total: u64) -> Result<(), LayerError> {
        if let Some(raw) = self.raw.take() {
            let r = raw.finish().and_then(|mut w| w.flush());
            self.keep_error(r);
        }
        if let Some(e) = self.error.take() {
            return Err(LayerError::io("recording the tar split in", &self.dir, e));
        }
        let idx_path = self.dir.join(INDEX_FILE);
        let write = || -> io::Result<()> {
            let file = create(&idx_path)?;
            let mut w = zstd::Encoder::new(BufWriter::new(file), 3)?;
            w.write_all(MAGIC)?;
            w.write_all(&total.to_le_bytes())?;
            w.write_all(&self.raw_len.to_le_bytes())?;
            let d = diff_id.to_string();
            w.write_all(&(d.len() as u16).to_le_bytes())?;
            w.write_all(d.as_bytes())?;
            w.write_all(&(self.refs.len() as u64).to_le_bytes())?;
            for r in &self.refs {
                w.write_all(&r.at.to_le_bytes())?;
                w.write_all(&r.size.to_le_bytes())?;
                match &r.source {
                    Source::File(p) => {
                        let b = p.as_os_str().as_bytes();
                        w.write_all(&[KIND_FILE])?;
                        w.write_all(&(b.len() as u32).to_le_bytes())?;
                        w.write_all(b)?;
                    }
                    Source::Stash(off) => {
                        w.write_all(&[KIND_STASH])?;
                        w.write_all(&off.to_le_bytes())?;
                    }
                }
            }
            w.finish()?.flush()
        };
        write().map_err(|e| LayerError::io("writing", &idx_path, e))
    }
}

/// What a recorded split says of its tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitInfo {
    /// The diff ID of the tar.
    pub diff_id: Digest,
    /// The size of the tar in bytes.
    pub size: u64,
}

struct Index {
    info: SplitInfo,
    raw_len: u64,
    refs: Vec<Ref>,
}

fn bad(dir: &Path, why: impl Into<String>) -> LayerError {
    LayerError::Unsupported {
        path: dir.join(INDEX_FILE),
        why: format!("corrupt tar split: {}", why.into()),
    }
}

fn read_index(dir: &Path, header_only: bool) -> Result<Index, LayerError> {
    let path = dir.join(INDEX_FILE);
    let file = File::open(&path).map_err(|e| LayerError::io("opening", &path, e))?;
    let mut r = zstd::Decoder::new(file).map_err(|e| LayerError::io("reading", &path, e))?;
    let io = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            bad(dir, "the index is truncated")
        } else {
            LayerError::io("reading", &path, e)
        }
    };
    let u64_ = |r: &mut dyn Read| -> Result<u64, LayerError> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).map_err(io)?;
        Ok(u64::from_le_bytes(b))
    };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(io)?;
    if &magic != MAGIC {
        return Err(bad(dir, "unknown format"));
    }
    let size = u64_(&mut r)?;
    let raw_len = u64_(&mut r)?;
    let mut l = [0u8; 2];
    r.read_exact(&mut l).map_err(io)?;
    let mut d = vec![0u8; u16::from_le_bytes(l) as usize];
    r.read_exact(&mut d).map_err(io)?;
    let diff_id: Digest = String::from_utf8_lossy(&d)
        .parse()
        .map_err(|e| bad(dir, format!("diff id: {e}")))?;
    let info = SplitInfo { diff_id, size };
    if header_only {
        return Ok(Index {
            info,
            raw_len,
            refs: Vec::new(),
        });
    }
    let count = u64_(&mut r)?;
    let mut refs = Vec::with_capacity(count.min(1 << 20) as usize);
    let mut last = 0u64;
    for _ in 0..count {
        let at = u64_(&mut r)?;
        let size = u64_(&mut r)?;
        let mut kind = [0u8; 1];
        r.read_exact(&mut kind).map_err(io)?;
        let source = match kind[0] {
            KIND_FILE => {
                let mut l = [0u8; 4];
                r.read_exact(&mut l).map_err(io)?;
                let len = u32::from_le_bytes(l) as usize;
                if len > 1 << 16 {
                    return Err(bad(dir, "path too long"));
                }
                let mut p = vec![0u8; len];
                r.read_exact(&mut p).map_err(io)?;
                Source::File(PathBuf::from(std::ffi::OsStr::from_bytes(&p)))
            }
            KIND_STASH => Source::Stash(u64_(&mut r)?),
            k => return Err(bad(dir, format!("reference kind {k}"))),
        };
        if at < last || at > raw_len {
            return Err(bad(dir, "references out of order"));
        }
        last = at;
        refs.push(Ref { at, size, source });
    }
    Ok(Index {
        info,
        raw_len,
        refs,
    })
}

/// Whether `dir` holds a recorded split.
pub fn exists(dir: &Path) -> bool {
    dir.join(INDEX_FILE).is_file()
}

/// The diff ID and size of the tar that the split in `dir` gives back.
pub fn info(dir: &Path) -> Result<SplitInfo, LayerError> {
    Ok(read_index(dir, true)?.info)
}

/// Write the tar recorded in `dir` (the directory holding the split) to
/// `out`, taking file data from the unpacked layer `diff`. Checks every
/// byte against the recorded diff ID; returns it and the size.
pub fn reassemble(dir: &Path, diff: &Path, out: impl Write) -> Result<SplitInfo, LayerError> {
    let index = read_index(dir, false)?;
    let raw_path = dir.join(RAW_FILE);
    let raw = File::open(&raw_path).map_err(|e| LayerError::io("opening", &raw_path, e))?;
    let mut raw = zstd::Decoder::new(raw).map_err(|e| LayerError::io("reading", &raw_path, e))?;
    let stash = if index
        .refs
        .iter()
        .any(|r| matches!(r.source, Source::Stash(_)))
    {
        let p = dir.join(STASH_FILE);
        Some(File::open(&p).map_err(|e| LayerError::io("opening", &p, e))?)
    } else {
        None
    };
    let root = nix::fcntl::open(
        diff,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| LayerError::io("opening layer directory", diff, e.into()))?;

    let mut out = HashingWriter {
        inner: out,
        hasher: Hasher::new(index.info.diff_id.algorithm()),
        count: 0,
    };
    let mut raw_pos = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for r in &index.refs {
        copy_exact(&mut raw, &mut out, r.at - raw_pos, &mut buf)
            .map_err(|e| raw_error(dir, &raw_path, e))?;
        raw_pos = r.at;
        match &r.source {
            Source::File(p) => {
                let real = diff.join(p);
                let fd = open_in_root(root.as_fd(), p, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
                    .map_err(|e| LayerError::io("opening", &real, e))?;
                let mut f = BufReader::with_capacity(0, File::from(fd));
                let len = f
                    .get_ref()
                    .metadata()
                    .map_err(|e| LayerError::io("inspecting", &real, e))?
                    .len();
                if len != r.size {
                    return Err(changed(diff, &index.info.diff_id));
                }
                copy_exact(&mut f, &mut out, r.size, &mut buf).map_err(|e| match e {
                    CopyError::Short => changed(diff, &index.info.diff_id),
                    CopyError::Read(e) => LayerError::io("reading", &real, e),
                    CopyError::Write(e) => LayerError::Write(e),
                })?;
            }
            Source::Stash(off) => {
                let s = stash.as_ref().expect("opened when a reference needs it");
                let mut left = r.size;
                let mut pos = *off;
                while left > 0 {
                    let n = (left as usize).min(buf.len());
                    s.read_exact_at(&mut buf[..n], pos)
                        .map_err(|e| LayerError::io("reading", dir.join(STASH_FILE), e))?;
                    out.write_all(&buf[..n]).map_err(LayerError::Write)?;
                    left -= n as u64;
                    pos += n as u64;
                }
            }
        }
    }
    copy_exact(&mut raw, &mut out, index.raw_len - raw_pos, &mut buf)
        .map_err(|e| raw_error(dir, &raw_path, e))?;
    let digest = out.hasher.finish();
    if digest != index.info.diff_id || out.count != index.info.size {
        return Err(changed(diff, &index.info.diff_id));
    }
    out.inner.flush().map_err(LayerError::Write)?;
    Ok(index.info)
}

fn changed(diff: &Path, diff_id: &Digest) -> LayerError {
    LayerError::Unsupported {
        path: diff.to_path_buf(),
        why: format!("the files of layer {diff_id} no longer match it"),
    }
}

fn raw_error(dir: &Path, raw_path: &Path, e: CopyError) -> LayerError {
    match e {
        CopyError::Short => bad(dir, "the byte stream is shorter than its index"),
        CopyError::Read(e) => LayerError::io("reading", raw_path, e),
        CopyError::Write(e) => LayerError::Write(e),
    }
}

enum CopyError {
    Short,
    Read(io::Error),
    Write(io::Error),
}

fn copy_exact(
    from: &mut impl Read,
    to: &mut impl Write,
    mut n: u64,
    buf: &mut [u8],
) -> Result<(), CopyError> {
    while n > 0 {
        let want = (n as usize).min(buf.len());
        let got = match from.read(&mut buf[..want]) {
            Ok(0) => return Err(CopyError::Short),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..got]).map_err(CopyError::Write)?;
        n -= got as u64;
    }
    Ok(())
}

struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The tar recorded in a split, as a stream: reassembled on a thread of its
/// own, so it can feed anything that reads (an apply, a tar being written).
/// A failure of the reassembly (files that changed) is the error of the
/// read that reaches the end.
pub struct TarReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    handle: Option<std::thread::JoinHandle<Result<SplitInfo, LayerError>>>,
}

/// Start giving back the tar recorded in `dir` from the layer `diff`;
/// returns what the split says of it (its size first of all) and the stream.
pub fn open(dir: &Path, diff: &Path) -> Result<(SplitInfo, TarReader), LayerError> {
    let info = info(dir)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let (dir, diff) = (dir.to_path_buf(), diff.to_path_buf());
    let handle = std::thread::Builder::new()
        .name("layer-tar".into())
        .spawn(move || {
            let out = ChanWriter {
                tx,
                buf: Vec::with_capacity(CHUNK),
            };
            reassemble(&dir, &diff, out)
        })
        .map_err(|e| LayerError::io("starting a thread for", Path::new("a layer tar"), e))?;
    Ok((
        info,
        TarReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            handle: Some(handle),
        },
    ))
}

const CHUNK: usize = 256 << 10;

struct ChanWriter {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "reader gone"))
    }
}

impl Read for TarReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Err(_) => {
                    // The writer is done: its verdict decides.
                    return match self.handle.take().map(|h| h.join()) {
                        None | Some(Ok(Ok(_))) => Ok(0),
                        Some(Ok(Err(e))) => Err(io::Error::other(e.to_string())),
                        Some(Err(_)) => Err(io::Error::other("layer tar thread panicked")),
                    };
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
