//! The content-addressable blob store: `<root>/blobs/<algorithm>/<hex>`.
//!
//! Lifecycle of a blob: [`BlobStore::put`] streams the content into a private
//! temp file under `<root>/blobs/.tmp/`, hashing it as it goes; only when the
//! content is complete, has the expected digest (and size), and is on disk
//! (fsync) is it renamed to its final name. So a blob that is visible is
//! complete and was verified once; a failed or killed writer leaves at most a
//! temp file, which [`BlobStore::list`] never shows and
//! [`BlobStore::cleanup_temp`] removes.
//!
//! Several writers (threads or processes) may put the same blob at once: each
//! writes its own temp file and the renames replace identical content. A
//! writer holds an exclusive `flock` on its temp file while it works, so
//! `cleanup_temp` in another process leaves live temp files alone.
//!
//! Committed blobs are read-only files (mode 0444). Paths are only built from
//! a [`Digest`], which is validated when it is made.

use crate::digest::{Algorithm, Digest, Hasher, HashingReader};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const TMP_DIR: &str = ".tmp";
const COPY_BUF: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {expected}: content has digest {actual} (expected {expected})")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {blob}: content is {actual} bytes (expected {expected})")]
    TooShort {
        blob: String,
        actual: u64,
        expected: u64,
    },
    #[error("blob {blob}: content is longer than the expected {expected} bytes")]
    TooLong { blob: String, expected: u64 },
    #[error("blob {0} not found")]
    NotFound(Digest),
    #[error("blob {digest} is {size} bytes, more than the {limit} bytes allowed here")]
    TooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error("blob {digest} is corrupt: its content has digest {actual}")]
    Corrupt { digest: Digest, actual: Digest },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    fn io(context: impl Into<String>, source: io::Error) -> StoreError {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// The blob does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound(_))
    }

    /// The content offered or stored is not what it should be (digest or
    /// size mismatch, corruption, over a size cap): bad input rather than a
    /// failure of the host.
    pub fn is_invalid_content(&self) -> bool {
        matches!(
            self,
            StoreError::DigestMismatch { .. }
                | StoreError::TooShort { .. }
                | StoreError::TooLong { .. }
                | StoreError::TooLarge { .. }
                | StoreError::Corrupt { .. }
        )
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

trait Ctx<T> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| StoreError::io(context(), e))
    }
}

/// The content-addressable blob store under `<root>/blobs/`.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// Open (creating if needed) the blob store of the berth root `root`.
    pub fn new(root: &Path) -> Result<BlobStore> {
        let dir = root.join("blobs");
        ensure_dir(&dir)?;
        ensure_dir(&dir.join(TMP_DIR))?;
        ensure_dir(&dir.join(Algorithm::Sha256.name()))?;
        Ok(BlobStore { dir })
    }

    /// `<root>/blobs`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path a blob has (or would have) in the store.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.rel_path())
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join(TMP_DIR)
    }

    /// Store the content of `reader`. With `expected`, the content must have
    /// that digest (and is hashed with its algorithm); without, it is hashed
    /// with sha256. Returns the digest and the size.
    ///
    /// If a blob with the expected digest is stored already, `reader` is not
    /// read at all.
    pub fn put(&self, expected: Option<&Digest>, reader: impl Read) -> Result<(Digest, u64)> {
        self.put_sized(expected, None, reader)
    }

    /// [`put`](Self::put), also checking that the content is exactly
    /// `size` bytes when given. At most `size + 1` bytes are read.
    pub fn put_sized(
        &self,
        expected: Option<&Digest>,
        size: Option<u64>,
        reader: impl Read,
    ) -> Result<(Digest, u64)> {
        if let Some(d) = expected {
            if let Some(have) = self.stored_size(d)? {
                if size.unwrap_or(have) == have {
                    return Ok((d.clone(), have));
                }
            }
        }
        let blob_name = || expected.map_or_else(|| "(new)".to_string(), Digest::to_string);
        let algo = expected.map_or(Algorithm::Sha256, Digest::algorithm);
        let mut tmp = TempFile::create(&self.tmp_dir())?;
        let limit = size.map_or(u64::MAX, |s| s.saturating_add(1));
        let mut reader = HashingReader::new(reader.take(limit), algo);
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(StoreError::io(
                        format!("blob {}: reading content", blob_name()),
                        e,
                    ))
                }
            };
            tmp.file
                .write_all(&buf[..n])
                .ctx(|| format!("blob {}: writing {}", blob_name(), tmp.path.display()))?;
        }
        let count = reader.count();
        if let Some(s) = size {
            if count > s {
                return Err(StoreError::TooLong {
                    blob: blob_name(),
                    expected: s,
                });
            }
        }
        // The hasher is always present: digest() is called once, here.
        let actual = reader
            .digest()
            .unwrap_or_else(|| Hasher::new(algo).finish());
        if let Some(want) = expected {
            if *want != actual {
                return Err(StoreError::DigestMismatch {
                    expected: want.clone(),
                    actual,
                });
            }
        }
        if let Some(s) = size {
            if count < s {
                return Err(StoreError::TooShort {
                    blob: actual.to_string(),
                    actual: count,
                    expected: s,
                });
            }
        }
        let dest = self.path(&actual);
        let dest_dir = self.dir.join(actual.algorithm().name());
        ensure_dir(&dest_dir)?;
        tmp.commit(&dest, &dest_dir)
            .ctx(|| format!("blob {actual}: storing {}", dest.display()))?;
        tracing::debug!(digest = %actual, size = count, "blob stored");
        Ok((actual, count))
    }

    /// A blob being written by the caller (a download teed into a layer
    /// unpack): nothing is visible until [`BlobWriter::commit_verified`],
    /// and a dropped writer leaves nothing behind.
    pub fn writer(&self) -> Result<BlobWriter> {
        Ok(BlobWriter {
            tmp: TempFile::create(&self.tmp_dir())?,
            dir: self.dir.clone(),
            written: 0,
        })
    }

    /// Store `data`; see [`put`](Self::put).
    pub fn put_bytes(&self, expected: Option<&Digest>, data: &[u8]) -> Result<Digest> {
        let size = u64::try_from(data.len()).ok();
        Ok(self.put_sized(expected, size, data)?.0)
    }

    /// Open a stored blob for reading.
    pub fn open(&self, digest: &Digest) -> Result<File> {
        File::open(self.path(digest)).map_err(|e| self.not_found_or(digest, "opening", e))
    }

    /// Read a whole blob into memory, refusing blobs larger than `limit`
    /// bytes (manifests and configs come from untrusted sources). The
    /// content is verified against its digest.
    pub fn read_all(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let f = self.open(digest)?;
        let size = f
            .metadata()
            .ctx(|| format!("blob {digest}: reading its size"))?
            .len();
        if size > limit {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        f.take(limit.saturating_add(1))
            .read_to_end(&mut data)
            .ctx(|| format!("blob {digest}: reading"))?;
        let mut h = Hasher::new(digest.algorithm());
        h.update(&data);
        let actual = h.finish();
        if actual != *digest {
            return Err(StoreError::Corrupt {
                digest: digest.clone(),
                actual,
            });
        }
        Ok(data)
    }

    /// Whether the blob is stored.
    pub fn exists(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.path(digest)).is_ok_and(|m| m.is_file())
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        self.stored_size(digest)?
            .ok_or_else(|| StoreError::NotFound(digest.clone()))
    }

    fn stored_size(&self, digest: &Digest) -> Result<Option<u64>> {
        match fs::symlink_metadata(self.path(digest)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(
                format!("blob {digest}: reading its size"),
                e,
            )),
        }
    }

    /// Remove a blob. Returns whether it was there.
    pub fn delete(&self, digest: &Digest) -> Result<bool> {
        match fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(format!("blob {digest}: removing"), e)),
        }
    }

    /// Every stored blob, sorted. Temp files and entries whose name is not
    /// a valid digest are skipped.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for algo in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.dir.join(algo.name());
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(format!("listing {}", dir.display()), e)),
            };
            for entry in entries {
                let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let Ok(d) = Digest::new(algo, &name) else {
                    continue;
                };
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Re-hash a stored blob and check it still has its digest (detects a
    /// truncated or altered file).
    pub fn verify(&self, digest: &Digest) -> Result<()> {
        let f = self.open(digest)?;
        let mut r = HashingReader::new(
            io::BufReader::with_capacity(COPY_BUF, f),
            digest.algorithm(),
        );
        io::copy(&mut r, &mut io::sink()).ctx(|| format!("blob {digest}: reading"))?;
        let actual = r
            .digest()
            .unwrap_or_else(|| Hasher::new(digest.algorithm()).finish());
        if actual != *digest {
            return Err(StoreError::Corrupt {
                digest: digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Remove temp files left by writers that died. Temp files of live
    /// writers (in this or another process) are kept. Returns how many
    /// entries were removed.
    pub fn cleanup_temp(&self) -> Result<usize> {
        cleanup_locked_dir(&self.tmp_dir())
    }

    fn not_found_or(&self, digest: &Digest, what: &str, e: io::Error) -> StoreError {
        if e.kind() == io::ErrorKind::NotFound {
            StoreError::NotFound(digest.clone())
        } else {
            StoreError::io(format!("blob {digest}: {what}"), e)
        }
    }
}

/// See [`BlobStore::writer`].
pub struct BlobWriter {
    tmp: TempFile,
    dir: PathBuf,
    written: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Make the blob visible as `digest`. The caller must have verified
    /// that what it wrote hashes to `digest` (a layer unpack does, over the
    /// same bytes); `size`, when given, is checked here.
    pub fn commit_verified(self, digest: &Digest, size: Option<u64>) -> Result<u64> {
        if let Some(s) = size {
            if s != self.written {
                return Err(StoreError::TooShort {
                    blob: digest.to_string(),
                    actual: self.written,
                    expected: s,
                });
            }
        }
        let dest = self.dir.join(digest.rel_path());
        let dest_dir = self.dir.join(digest.algorithm().name());
        ensure_dir(&dest_dir)?;
        let written = self.written;
        self.tmp
            .commit(&dest, &dest_dir)
            .ctx(|| format!("blob {digest}: storing {}", dest.display()))?;
        Ok(written)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.tmp.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp.file.flush()
    }
}

/// A private temp file being written, locked against cleanup; removed on
/// drop unless committed.
struct TempFile {
    path: PathBuf,
    file: Flock<File>,
    done: bool,
}

impl TempFile {
    fn create(dir: &Path) -> Result<TempFile> {
        let mut last = None;
        for _ in 0..16 {
            let path = dir.join(random_name());
            let file = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(StoreError::io(
                        format!("creating temp file {}", path.display()),
                        e,
                    ))
                }
            };
            match lock_and_check(file, &path) {
                Ok(Some(file)) => {
                    return Ok(TempFile {
                        path,
                        file,
                        done: false,
                    })
                }
                // A cleaner took it between create and lock: try a new name.
                Ok(None) => continue,
                Err(e) => last = Some(e),
            }
        }
        Err(StoreError::io(
            format!("creating a temp file in {}", dir.display()),
            last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
        ))
    }

    /// fsync, make read-only, rename to `dest` and fsync `dest_dir`.
    fn commit(mut self, dest: &Path, dest_dir: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        self.file
            .set_permissions(fs::Permissions::from_mode(0o444))?;
        fs::rename(&self.path, dest)?;
        self.done = true;
        sync_dir(dest_dir)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "removing temp file");
            }
        }
    }
}

/// Lock `file` (open at `path`) exclusively, without waiting, and check that
/// `path` still names it. `None` when someone else holds the lock or the
/// name was removed meanwhile.
pub(crate) fn lock_and_check(file: File, path: &Path) -> io::Result<Option<Flock<File>>> {
    let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
        Err((_, e)) => return Err(io::Error::from(e)),
    };
    let ours = locked.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => Ok(Some(locked)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Remove every entry of `dir` that nobody holds a lock on. Used for the
/// temp dirs of the stores, whose live entries are locked by their writer.
pub(crate) fn cleanup_locked_dir(dir: &Path) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(format!("listing {}", dir.display()), e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        // Symlinks and special files cannot be locked; nothing of ours makes
        // them, so they are removed outright.
        let lockable = entry.file_type().is_ok_and(|t| t.is_dir() || t.is_file());
        let _lock = if lockable {
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(format!("opening {}", path.display()), e)),
            };
            match lock_and_check(f, &path).ctx(|| format!("locking {}", path.display()))? {
                Some(l) => Some(l),
                None => continue,
            }
        } else {
            None
        };
        let res = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match res {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(format!("removing {}", path.display()), e)),
        }
        tracing::debug!(path = %path.display(), "removed leftover temp entry");
    }
    Ok(removed)
}

/// Create `dir` (and its parents) if missing; when this call created it,
/// fsync its parent so the new entry survives a crash.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent).ctx(|| format!("syncing {}", parent.display()))?;
    }
    Ok(())
}

/// fsync a directory, so that entries renamed into it are on disk.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A name for a temp entry: 16 hex characters from the process's seeded
/// hasher, the pid, a counter and the time. Callers create it exclusively
/// and retry on a clash, so it needs to be unlikely, not unguessable.
pub(crate) fn random_name() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    format!("{:016x}", h.finish())
}

/// The conformance tests every blob store backend must pass.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    /// Set for a child test process that is to die mid-way; names the root.
    pub(crate) const CRASH_ENV: &str = "BERTH_TEST_CRASH_ROOT";

    /// Die the way a killed process does: no destructors, no cleanup.
    pub(crate) fn die() -> ! {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort()
    }

    /// Run the ignored test `name` of this test binary in a child process
    /// with [`CRASH_ENV`] set to `root`, and check that it died.
    pub(crate) fn run_crash_child(name: &str, root: &Path) {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", name, "--test-threads=1"])
            .env(CRASH_ENV, root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(
            !status.success(),
            "{name}: the child was meant to be killed"
        );
    }

    /// Run by `killed_writer_leaves_only_a_temp_file` in a child process,
    /// which is killed in the middle of a put.
    #[test]
    #[ignore = "run in a child process by killed_writer_leaves_only_a_temp_file"]
    fn crash_child_put() {
        struct DieHalfway(usize);
        impl Read for DieHalfway {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 > 1 << 20 {
                    die();
                }
                buf.fill(b'z');
                self.0 += buf.len();
                Ok(buf.len())
            }
        }
        let Some(root) = std::env::var_os(CRASH_ENV) else {
            return;
        };
        let s = BlobStore::new(Path::new(&root)).unwrap();
        let _ = s.put(None, DieHalfway(0));
    }

    #[test]
    fn killed_writer_leaves_only_a_temp_file() {
        let (d, s) = store();
        let kept = s.put_bytes(None, b"kept").unwrap();
        run_crash_child("store::tests::crash_child_put", d.path());
        assert_eq!(tmp_entries(&s), 1, "the killed writer left its temp file");
        assert!(
            fs::metadata(
                fs::read_dir(s.dir().join(TMP_DIR))
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap()
                    .path()
            )
            .unwrap()
            .len()
                >= 1 << 20
        );
        assert_eq!(s.list().unwrap(), vec![kept.clone()]);
        assert_eq!(s.cleanup_temp().unwrap(), 1);
        assert_eq!(tmp_entries(&s), 0);
        assert_eq!(s.list().unwrap(), vec![kept]);
    }

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::new(dir.path()).unwrap();
        (dir, s)
    }

    fn tmp_entries(s: &BlobStore) -> usize {
        fs::read_dir(s.dir().join(TMP_DIR)).unwrap().count()
    }

    #[test]
    fn put_get_round_trip() {
        let (_d, s) = store();
        let data = b"hello, berth".repeat(100_000);
        let want = Digest::sha256_of(&data);
        let (got, size) = s.put(Some(&want), &data[..]).unwrap();
        assert_eq!(got, want);
        assert_eq!(size, data.len() as u64);
        assert!(s.exists(&want));
        assert_eq!(s.size(&want).unwrap(), data.len() as u64);
        let mut back = Vec::new();
        s.open(&want).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(s.read_all(&want, 10 << 20).unwrap(), data);
        assert_eq!(s.list().unwrap(), vec![want.clone()]);
        s.verify(&want).unwrap();
        assert_eq!(tmp_entries(&s), 0);
        let mode = fs::metadata(s.path(&want)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444);
        // No expected digest: sha256 of the content.
        let (d2, _) = s.put(None, &b"other"[..]).unwrap();
        assert_eq!(d2, Digest::sha256_of(b"other"));
        assert_eq!(s.list().unwrap().len(), 2);
    }

    #[test]
    fn empty_blob() {
        let (_d, s) = store();
        let d = s.put_bytes(None, b"").unwrap();
        assert_eq!(d, Digest::sha256_of(b""));
        assert_eq!(s.size(&d).unwrap(), 0);
        s.verify(&d).unwrap();
    }

    #[test]
    fn sha512_blobs() {
        let (_d, s) = store();
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"sha512 content");
        let want = h.finish();
        let got = s.put_bytes(Some(&want), b"sha512 content").unwrap();
        assert_eq!(got, want);
        assert!(s.path(&want).starts_with(s.dir().join("sha512")));
        assert_eq!(s.list().unwrap(), vec![want.clone()]);
        s.verify(&want).unwrap();
    }

    #[test]
    fn wrong_digest_is_refused_and_leaves_nothing() {
        let (_d, s) = store();
        let want = Digest::sha256_of(b"expected");
        let err = s.put(Some(&want), &b"something else"[..]).unwrap_err();
        let msg = err.to_string();
        assert!(err.is_invalid_content());
        assert!(
            msg.starts_with(&format!(
                "blob {want}: content has digest {}",
                Digest::sha256_of(b"something else")
            )),
            "{msg}"
        );
        assert!(msg.ends_with(&format!("(expected {want})")), "{msg}");
        assert!(!s.exists(&want));
        assert!(!s.exists(&Digest::sha256_of(b"something else")));
        assert!(s.list().unwrap().is_empty());
        assert_eq!(tmp_entries(&s), 0);
    }

    #[test]
    fn wrong_size_is_refused_and_leaves_nothing() {
        let (_d, s) = store();
        let data = b"0123456789";
        let want = Digest::sha256_of(data);
        let err = s.put_sized(Some(&want), Some(12), &data[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("blob {want}: content is 10 bytes (expected 12)")
        );
        let err = s.put_sized(Some(&want), Some(4), &data[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("blob {want}: content is longer than the expected 4 bytes")
        );
        let err = s.put_sized(None, Some(4), &data[..]).unwrap_err();
        assert!(err.is_invalid_content(), "{err}");
        assert!(s.list().unwrap().is_empty());
        assert_eq!(tmp_entries(&s), 0);
        // The right size is accepted.
        assert_eq!(
            s.put_sized(Some(&want), Some(10), &data[..]).unwrap(),
            (want, 10)
        );
    }

    #[test]
    fn too_long_stream_is_not_read_to_the_end() {
        let (_d, s) = store();
        // An endless stream with a declared size stops one byte past it.
        let err = s.put_sized(None, Some(1000), io::repeat(7)).unwrap_err();
        assert!(
            matches!(err, StoreError::TooLong { expected: 1000, .. }),
            "{err}"
        );
    }

    #[test]
    fn reader_error_leaves_nothing() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("network went away"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let (_d, s) = store();
        let err = s.put(None, Failing(10)).unwrap_err();
        assert!(err.to_string().contains("network went away"), "{err}");
        assert_eq!(tmp_entries(&s), 0);
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn existing_blob_is_not_read_again() {
        let (_d, s) = store();
        let d = s.put_bytes(None, b"once").unwrap();
        // A reader that would fail proves it is not read.
        struct Boom;
        impl Read for Boom {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("read"))
            }
        }
        assert_eq!(s.put(Some(&d), Boom).unwrap(), (d.clone(), 4));
        // Without an expected digest it must be read and hashed.
        assert!(s.put(None, Boom).is_err());
    }

    #[test]
    fn concurrent_puts_of_the_same_blob() {
        let (_d, s) = store();
        let s = Arc::new(s);
        let data: Arc<Vec<u8>> = Arc::new((0..3_000_000u32).map(|i| (i % 251) as u8).collect());
        let want = Digest::sha256_of(&data);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = Arc::clone(&s);
                let data = Arc::clone(&data);
                let want = want.clone();
                std::thread::spawn(move || {
                    // Half of them know the digest, half do not (these always write).
                    let expected = (i % 2 == 0).then_some(&want);
                    s.put(expected, &data[..]).unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), (want.clone(), data.len() as u64));
        }
        assert_eq!(s.list().unwrap(), vec![want.clone()]);
        s.verify(&want).unwrap();
        assert_eq!(tmp_entries(&s), 0);
    }

    #[test]
    fn leftover_temp_file_is_not_listed_and_is_cleaned() {
        let (_d, s) = store();
        let d = s.put_bytes(None, b"kept").unwrap();
        // A writer killed mid-way leaves an unlocked temp file.
        fs::write(s.dir().join(TMP_DIR).join("0123456789abcdef"), b"half a bl").unwrap();
        // Junk with names that are not digests is ignored, too.
        fs::write(s.dir().join("sha256").join("not-a-digest"), b"junk").unwrap();
        fs::write(s.dir().join("sha256").join(d.hex().to_uppercase()), b"junk").unwrap();
        assert_eq!(s.list().unwrap(), vec![d.clone()]);
        // A live writer's temp file (locked) survives the cleanup.
        let live = TempFile::create(&s.dir().join(TMP_DIR)).unwrap();
        assert_eq!(s.cleanup_temp().unwrap(), 1);
        assert!(live.path.exists());
        drop(live);
        assert_eq!(tmp_entries(&s), 0);
        assert_eq!(s.cleanup_temp().unwrap(), 0);
        assert_eq!(s.list().unwrap(), vec![d]);
    }

    #[test]
    fn truncated_blob_is_detected() {
        let (_d, s) = store();
        let data = vec![42u8; 100_000];
        let d = s.put_bytes(None, &data).unwrap();
        s.verify(&d).unwrap();
        // Simulate corruption on disk: the file loses its tail.
        let path = s.path(&d);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(50_000)
            .unwrap();
        let err = s.verify(&d).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&format!("blob {d} is corrupt")),
            "{err}"
        );
        assert!(matches!(
            s.read_all(&d, 1 << 20),
            Err(StoreError::Corrupt { .. })
        ));
        // A put with the expected digest does not repair a wrong-size file
        // silently when the size is known: it rewrites it.
        s.put_sized(Some(&d), Some(100_000), &data[..]).unwrap();
        s.verify(&d).unwrap();
    }

    #[test]
    fn missing_and_oversized_blobs() {
        let (_d, s) = store();
        let d = Digest::sha256_of(b"absent");
        assert!(!s.exists(&d));
        assert!(s.open(&d).unwrap_err().is_not_found());
        assert!(s.size(&d).unwrap_err().is_not_found());
        assert!(s.read_all(&d, 10).unwrap_err().is_not_found());
        assert!(s.verify(&d).unwrap_err().is_not_found());
        assert!(!s.delete(&d).unwrap());
        let big = s.put_bytes(None, &[0u8; 100]).unwrap();
        let err = s.read_all(&big, 99).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::TooLarge {
                    size: 100,
                    limit: 99,
                    ..
                }
            ),
            "{err}"
        );
        assert!(s.delete(&big).unwrap());
        assert!(!s.exists(&big));
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn reopen_sees_the_same_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let d = BlobStore::new(dir.path())
            .unwrap()
            .put_bytes(None, b"persist")
            .unwrap();
        let s = BlobStore::new(dir.path()).unwrap();
        assert_eq!(s.list().unwrap(), vec![d.clone()]);
        assert_eq!(s.read_all(&d, 100).unwrap(), b"persist");
    }
}
