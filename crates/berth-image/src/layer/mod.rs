//! Layers: applying a layer tar stream to a directory in overlayfs form, and
//! diffing an overlay upper directory back into a layer tar.
//!
//! # Apply
//!
//! [`apply`] reads a layer blob (plain, gzip or zstd tar, told apart by its
//! magic bytes and decompressed in-process) in one streaming pass and
//! unpacks it below `dest`. The layer is hostile input, so:
//!
//! - every path is resolved from a descriptor of `dest` with
//!   `openat2(RESOLVE_IN_ROOT)`: `..` and absolute symlinks met while
//!   resolving a parent stay inside `dest`, and the last component is always
//!   created with `O_EXCL`/`O_NOFOLLOW` (or `mkdirat`, `symlinkat`, …) after
//!   removing whatever was there, so nothing is ever written through a symlink;
//! - entry names are normalised: leading `/`, `.` and empty components are
//!   dropped and a `..` that would climb above the layer root is **clamped**
//!   at the root, as Docker does (`/../../etc/x` is `etc/x`);
//! - a parent that does not exist is created (mode 0755, owned by the
//!   layer's root); a parent that is a symlink whose target does not exist
//!   inside `dest` is an error (nothing is created through a symlink);
//! - hardlink targets are resolved the same way and must already exist in
//!   this layer (not a directory); the link header's own metadata is ignored
//!   (the inode has its own); symlink targets are data and never followed;
//! - a later entry replaces an earlier one of the same name (a directory over
//!   a directory only updates its metadata; anything else removes what was
//!   there first, a whole tree if need be, as Docker does);
//! - owners (through [`ApplyOptions::id_map`]), modes with set-id and sticky
//!   bits, mtimes (PAX sub-second ones too; directories last), xattrs from
//!   PAX `SCHILY.xattr.*` (`security.capability` must be set, others are
//!   best effort), fifos, and devices when [`ApplyOptions::allow_devices`];
//!   runs of zero blocks in files (GNU sparse ones included) stay holes;
//! - whiteouts become overlayfs whiteouts (`.wh.name` → a 0/0 character
//!   device `name`, `.wh..wh..opq` → `trusted.overlay.opaque=y` on the
//!   directory); other `.wh..wh.*` names are skipped, and `trusted.overlay.*`
//!   / `user.overlay.*` xattrs in the tar are dropped so a layer cannot
//!   forge overlay metadata;
//! - sizes are bounded ([`ApplyOptions::max_uncompressed`]) and the metadata
//!   of one entry (PAX records, GNU long names, sparse maps) is bounded
//!   to [`MAX_ENTRY_METADATA`] bytes, so no header makes us allocate much.
//!
//! A truncated stream (end of input inside a header or an entry) is an
//! error. A stream that ends cleanly between entries without the
//! end-of-archive blocks is accepted (Go's archive/tar and Docker accept it).
//! Anything after the end-of-archive block — zero padding or garbage — is
//! read, hashed into the diff_id, and otherwise ignored, as Docker does.
//! The compressed framing is strict: a corrupt gzip/zstd stream, a bad
//! checksum or bytes after the last compressed member are errors.
//!
//! `apply` never cleans up: on error `dest` holds a partial tree. Callers
//! unpack into a fresh temporary directory and rename it into place only on
//! success, so a partial layer is never visible.
//!
//! # Diff
//!
//! [`diff`] walks an overlay upper directory in sorted order and writes a
//! deterministic PAX tar of it, turning overlayfs whiteouts and opaque
//! directories back into `.wh.` entries. As Docker does, mtimes are written
//! in whole seconds and the root directory is not an entry.

mod apply;
mod compress;
mod diff;
pub mod split;

pub use apply::apply;
pub use compress::read_full;
pub use diff::diff;

use crate::digest::Digest;
use std::io;

/// Largest value of a 12-byte octal ustar field (size, mtime).
pub const MAX_OCTAL_12: u64 = 0o777_7777_7777;
/// Largest value of an 8-byte octal ustar field (uid, gid).
pub const MAX_OCTAL_8: u64 = 0o7_777_777;

/// Append one PAX record (`<len> <key>=<value>\n`) to `out`: what a tar
/// writer puts in a PAX header for a field ustar cannot hold.
pub fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}
use std::path::PathBuf;

/// The most bytes of metadata (PAX records, GNU long names and sparse maps,
/// headers) that may precede one entry of a layer tar.
pub const MAX_ENTRY_METADATA: u64 = 4 << 20;

/// The default bound on the uncompressed size of a layer.
pub const DEFAULT_MAX_UNCOMPRESSED: u64 = 64 << 30;

/// How a layer blob is (or is to be) compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One contiguous range of a user namespace id mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id inside the container (as written in the layer tar).
    pub container: u32,
    /// The host id that `container` maps to.
    pub host: u32,
    /// How many ids the range covers.
    pub size: u32,
}

/// Mapping between the ids written in layer tars and the ids on disk.
///
/// An empty list means identity for that kind of id, so the default value
/// maps every id to itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

fn map_to_host(ranges: &[IdRange], id: u64) -> Option<u32> {
    if ranges.is_empty() {
        return u32::try_from(id).ok();
    }
    ranges.iter().find_map(|r| {
        let off = id.checked_sub(u64::from(r.container))?;
        if off < u64::from(r.size) {
            u32::try_from(u64::from(r.host) + off).ok()
        } else {
            None
        }
    })
}

fn map_to_container(ranges: &[IdRange], id: u32) -> Option<u32> {
    if ranges.is_empty() {
        return Some(id);
    }
    ranges.iter().find_map(|r| {
        let off = id.checked_sub(r.host)?;
        if off < r.size {
            r.container.checked_add(off)
        } else {
            None
        }
    })
}

impl IdMap {
    /// True when both lists are empty (every id maps to itself).
    pub fn is_identity(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }

    /// The host uid for a uid written in a layer.
    pub fn host_uid(&self, id: u64) -> Option<u32> {
        map_to_host(&self.uids, id)
    }

    /// The host gid for a gid written in a layer.
    pub fn host_gid(&self, id: u64) -> Option<u32> {
        map_to_host(&self.gids, id)
    }

    /// The uid to write in a layer for a host uid.
    pub fn container_uid(&self, id: u32) -> Option<u32> {
        map_to_container(&self.uids, id)
    }

    /// The gid to write in a layer for a host gid.
    pub fn container_gid(&self, id: u32) -> Option<u32> {
        map_to_container(&self.gids, id)
    }
}

/// How [`apply`] unpacks a layer.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The diff_id the uncompressed stream must hash to (its algorithm is
    /// used; sha256 otherwise). A mismatch is an error once the whole stream
    /// has been read.
    pub expected_diff_id: Option<Digest>,
    /// The digest the raw (possibly compressed) input must hash to.
    pub expected_digest: Option<Digest>,
    /// Bound on the uncompressed stream and, separately, on the sum of the
    /// apparent sizes of its files (a sparse entry can describe a huge file
    /// in few bytes). `None` means no bound.
    pub max_uncompressed: Option<u64>,
    /// Create character and block devices. When false a device entry is an
    /// error (whiteouts and fifos are always created). Off by default (fail
    /// closed); an engine running as root turns it on.
    pub allow_devices: bool,
    /// Map the ids of the tar to ids on disk (identity by default). An id
    /// outside the mapping is an error.
    pub id_map: IdMap,
    /// Mark opaque directories with `user.overlay.opaque` (for overlayfs
    /// mounted with `userxattr`, rootless) instead of `trusted.overlay.opaque`.
    pub userxattr: bool,
    /// syncfs(2) the file system of `dest` once everything is written, so the
    /// caller can rename the layer into place crash-safely. On by default.
    pub sync: bool,
    /// Record a tar split (see [`split`]) into this directory, so that the
    /// exact tar can be given back from the unpacked files later.
    pub split: Option<PathBuf>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            expected_diff_id: None,
            expected_digest: None,
            max_uncompressed: Some(DEFAULT_MAX_UNCOMPRESSED),
            allow_devices: false,
            id_map: IdMap::default(),
            userxattr: false,
            sync: true,
            split: None,
        }
    }
}

/// The uncompressed stream of a layer tar given compressed (gzip, zstd) or
/// not, detected by its first bytes; also returns what it found.
pub fn decompressed<'a, R: std::io::Read + 'a>(
    mut reader: R,
) -> std::io::Result<(Compression, Box<dyn std::io::Read + 'a>)> {
    let mut head = vec![0u8; 4];
    let n = compress::read_full(&mut reader, &mut head)?;
    head.truncate(n);
    let format = compress::sniff(&head);
    Ok((format, compress::decoder(format, head, reader)?))
}

/// What [`apply`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Digest of the uncompressed tar stream (sha256 unless
    /// `expected_diff_id` asked for another algorithm).
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// Digest of the raw input as given (sha256 unless `expected_digest`
    /// asked for another algorithm).
    pub digest: Digest,
    /// Bytes of the raw input.
    pub size: u64,
    /// The compression detected.
    pub compression: Compression,
    /// Tar entries applied (whiteouts included, skipped entries not).
    pub entries: u64,
    /// The apparent size of the file data the entries held (hardlinks
    /// counted once, sparse files at their full length).
    pub data_size: u64,
}

/// How [`diff`] writes a layer.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Compression of the output (`Compression::Gzip` for a Docker/OCI
    /// `tar+gzip` layer).
    pub compression: Compression,
    /// Compression level (gzip 0–9, zstd 1–22); `None` for the default.
    pub level: Option<u32>,
    /// Map ids on disk back to the ids written in the tar.
    pub id_map: IdMap,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            compression: Compression::Gzip,
            level: None,
            id_map: IdMap::default(),
        }
    }
}

/// What [`diff`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffStats {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    /// sha256 of the bytes written to `out` (equal to `diff_id` when
    /// uncompressed).
    pub digest: Digest,
    /// Bytes written to `out`.
    pub size: u64,
    /// Entries written (whiteouts included).
    pub entries: u64,
}

/// Errors of layer apply and diff. Paths of entries are relative to the
/// layer root; paths of I/O failures are real paths.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("reading the layer stream: {0}")]
    Source(#[source] io::Error),
    #[error("decompressing the {format} layer stream: {source}")]
    Decompress {
        format: Compression,
        #[source]
        source: io::Error,
    },
    #[error("layer is larger than the limit of {limit} uncompressed bytes")]
    TooLarge { limit: u64 },
    #[error("layer is truncated{}", in_entry(.entry))]
    Truncated { entry: Option<String> },
    #[error("malformed layer tar{}: {msg}", after_entry(.after))]
    Malformed { after: Option<String>, msg: String },
    #[error("layer entry {entry:?}: {why}")]
    InvalidEntry { entry: String, why: String },
    #[error("layer entry {entry:?} is a device node, which is not allowed here")]
    DeviceNotAllowed { entry: String },
    #[error("layer entry {entry:?}: {kind} {id} is outside the id mapping")]
    Unmapped {
        entry: String,
        kind: &'static str,
        id: u64,
    },
    #[error("layer diff_id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error("layer digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path:?}: {why}")]
    Unsupported { path: PathBuf, why: String },
    #[error("writing the layer tar: {0}")]
    Write(#[source] io::Error),
}

fn in_entry(e: &Option<String>) -> String {
    match e {
        Some(e) => format!(" inside entry {e:?}"),
        None => String::new(),
    }
}

fn after_entry(e: &Option<String>) -> String {
    match e {
        Some(e) => format!(" after entry {e:?}"),
        None => String::new(),
    }
}

impl LayerError {
    /// True when the layer (or the tree to diff) is at fault rather than the
    /// host: bad, hostile or corrupt content.
    pub fn is_invalid_input(&self) -> bool {
        !matches!(
            self,
            LayerError::Source(_) | LayerError::Io { .. } | LayerError::Write(_)
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LayerError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
